//! Browser sessions: a random session id in an HttpOnly, SameSite=Strict cookie, and a per-session token
//! that every form carries and every POST must present (cross-site request forgery protection).
//!
//! Sessions live in this node's memory: signing in again is the cost of a node restart, and no bearer token
//! is ever stored in the browser.

use axum::http::{header, HeaderMap};
use cascade_core::api::Role;
use cascade_core::Principal;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Name of the session cookie.
pub const COOKIE: &str = "cascade_session";

/// How long a session lasts after sign-in.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Most sessions kept at once; past it the oldest is dropped, so sign-ins cannot exhaust memory.
pub const MAX_SESSIONS: usize = 10_000;

/// A signed-in person.
#[derive(Debug)]
pub struct Session {
    /// The token's name, recorded as the actor of every command.
    pub principal: Principal,
    /// What the token may do; decides what pages offer and what POSTs are accepted.
    pub role: Role,
    /// The token forms must echo back in their `csrf` field.
    pub csrf: String,
    created: Instant,
}

impl Session {
    /// Whether this session's role allows what `needed` guards.
    pub fn allows(&self, needed: Role) -> bool {
        self.role.allows(needed)
    }

    /// Whether `presented` is this session's CSRF token (constant-time comparison).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        constant_time_eq::constant_time_eq(self.csrf.as_bytes(), presented.as_bytes())
    }
}

/// The sessions of this node.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// Starts a session; returns its id (the cookie's value).
    pub fn create(&self, principal: Principal, role: Role) -> String {
        let id = random_hex(32);
        let session = Arc::new(Session { principal, role, csrf: random_hex(32), created: Instant::now() });
        let mut map = self.lock();
        map.retain(|_, s| s.created.elapsed() < LIFETIME);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), session);
        id
    }

    /// The live session named by the request's cookie, if any.
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<Arc<Session>> {
        let id = cookie_value(headers, COOKIE)?;
        let map = self.lock();
        map.get(id).filter(|s| s.created.elapsed() < LIFETIME).cloned()
    }

    /// Ends the session named by the request's cookie.
    pub fn remove(&self, headers: &HeaderMap) {
        if let Some(id) = cookie_value(headers, COOKIE) {
            self.lock().remove(id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` value that stores a session id.
pub fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}", LIFETIME.as_secs())
}

/// `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn sessions_are_found_by_cookie_and_csrf_is_checked() {
        let sessions = Sessions::default();
        let id = sessions.create(Principal::parse("alice").unwrap(), Role::Builder);
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(&format!("a=b; {COOKIE}={id}")).unwrap());
        let session = sessions.from_headers(&headers).expect("session");
        assert_eq!(session.principal.as_str(), "alice");
        assert!(session.csrf_matches(&session.csrf.clone()));
        assert!(!session.csrf_matches("forged"));
        assert!(!session.csrf_matches(""));
        sessions.remove(&headers);
        assert!(sessions.from_headers(&headers).is_none());
    }

    #[test]
    fn cookie_is_http_only_and_strict() {
        let cookie = set_cookie("x");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    }
}
