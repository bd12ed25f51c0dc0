//! Requests and sign-in shared by the console's router tests.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use tower::ServiceExt;

/// Sends a request; returns the status and the body.
pub async fn send_body(app: &Router, request: Request<Body>) -> (StatusCode, String) {
    let response = app.clone().oneshot(request).await.expect("router answers");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 24).await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Signs in; returns the session cookie (`name=value`), its CSRF token, and the `Set-Cookie` header.
pub async fn sign_in(app: &Router, token: &str) -> (String, String, String) {
    let request = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={token}")))
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("login");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set = response.headers().get(header::SET_COOKIE).expect("cookie").to_str().expect("ascii").to_string();
    let cookie = set.split(';').next().expect("name=value").to_string();
    let (_, page) = send_body(app, get("/builds", &cookie)).await;
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).expect("csrf field");
    (cookie, csrf.to_string(), set)
}

/// A GET with the session cookie.
pub fn get(path: &str, cookie: &str) -> Request<Body> {
    Request::get(path).header(header::COOKIE, cookie).body(Body::empty()).expect("request")
}

/// A form POST with the session cookie.
pub fn post(path: &str, cookie: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_string()))
        .expect("request")
}
