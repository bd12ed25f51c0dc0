//! The API's error type: a status, a machine-readable kind and a sentence that says what to do.

use crate::node::NodeError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cascade_core::api::ErrorBody;
use cascade_core::{CommandError, InvalidValue};

/// An error answer of `/api/v1`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable kind.
    pub error: &'static str,
    /// What was wrong and what to do.
    pub detail: String,
    /// Seconds to wait before retrying (503 only).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with no Retry-After.
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self { status, error, detail: detail.into(), retry_after: None }
    }
    /// 400 for a malformed request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }
    /// 404 for an unknown id.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(ErrorBody { error: self.error.to_string(), detail: self.detail })).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let detail = e.to_string();
        match e {
            NodeError::NoLeader(_) | NodeError::NotInitialized => {
                Self { status: StatusCode::SERVICE_UNAVAILABLE, error: "no_leader", detail, retry_after: Some(1) }
            }
            NodeError::Lagging { .. } => {
                Self { status: StatusCode::SERVICE_UNAVAILABLE, error: "replica_lagging", detail, retry_after: Some(1) }
            }
            // Not 503: clients retry 503 blindly, and this command may already have been applied.
            NodeError::OutcomeUnknown(_) => Self::new(StatusCode::GATEWAY_TIMEOUT, "outcome_unknown", detail),
            NodeError::Membership(_) => Self::new(StatusCode::CONFLICT, "wrong_state", detail),
            NodeError::Fatal(_) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let status = match e.kind() {
            "not_found" => StatusCode::NOT_FOUND,
            "stale_lease" | "wrong_state" => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        let kind = e.kind();
        Self::new(status, kind, e.to_string())
    }
}

impl From<InvalidValue> for ApiError {
    fn from(e: InvalidValue) -> Self {
        Self::bad_request(e.to_string())
    }
}
