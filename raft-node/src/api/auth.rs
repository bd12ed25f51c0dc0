//! Bearer tokens with roles for `/api/v1`, and the cluster secret for node-to-node calls.

use super::error::ApiError;
use super::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use cascade_core::api::Role;
use cascade_core::Principal;
use constant_time_eq::constant_time_eq;

/// Who is calling, proven by a bearer token from the node's config.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name.
    pub name: Principal,
    /// Its role.
    pub role: Role,
}

impl Caller {
    /// Refuses with 403 unless the caller's role allows `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("token {} has role {:?}; this needs a token with role {needed:?}", self.name, self.role),
            ))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let unauthorized = |detail: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing Authorization header; send `Authorization: Bearer TOKEN`"))?;
        let value = value.to_str().map_err(|_| unauthorized("Authorization header is not ASCII"))?;
        let token =
            value.strip_prefix("Bearer ").ok_or_else(|| unauthorized("Authorization header must be `Bearer TOKEN`"))?;
        // Compare against every token in constant time, so timing reveals neither which nor how much matched.
        let mut found = None;
        for configured in &state.node.config.tokens {
            if constant_time_eq(configured.token.as_bytes(), token.as_bytes()) {
                found = Some(configured);
            }
        }
        let configured = found.ok_or_else(|| unauthorized("unknown token"))?;
        let name = Principal::parse(configured.name.clone())
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
        Ok(Caller { name, role: configured.role })
    }
}

/// Checks the cluster secret header of a node-to-node call.
pub fn check_cluster_secret(headers: &HeaderMap, secret: &str) -> Result<(), StatusCode> {
    let presented = headers.get(crate::transport::CLUSTER_SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if constant_time_eq(presented, secret.as_bytes()) {
        Ok(())
    } else {
        Err(StatusCode::UNAUTHORIZED)
    }
}
