//! `/api/v1`: the JSON API every node serves, plus `/healthz` and `/metrics`.
//!
//! Every endpoint checks a bearer token's role (except the health check and metrics). Reads answer from the
//! local replica unless asked otherwise (`consistency=linearizable` or `min_index=N`) and carry the applied
//! index in the `x-cascade-applied-index` header.

mod auth;
mod builds;
mod cluster;
mod deploy;
mod error;
mod extract;
mod jobs;

pub use auth::{check_cluster_secret, Caller};
pub use cluster::local_status;
pub use error::ApiError;

use crate::node::{Node, ReadConsistency};
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cascade_core::api::{APPLIED_INDEX_HEADER, MAX_BODY_BYTES};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The node.
    pub node: Arc<Node>,
    /// The blob stores, when configured (build logs are read from `main`).
    pub blobs: Option<Arc<crate::replication::Blobs>>,
}

/// The `/api/v1` router (with `/healthz` and `/metrics`).
pub fn router(node: Arc<Node>, blobs: Option<Arc<crate::replication::Blobs>>) -> Router {
    Router::new()
        .route("/api/v1/builds", post(builds::submit).get(builds::list))
        .route("/api/v1/builds/{id}", get(builds::show))
        .route("/api/v1/builds/{id}/log", get(builds::log))
        .route("/api/v1/builds/{id}/cancel", post(builds::cancel))
        .route("/api/v1/jobs/claim", post(jobs::claim))
        .route("/api/v1/jobs/{id}/heartbeat", post(jobs::heartbeat))
        .route("/api/v1/jobs/{id}/succeed", post(jobs::succeed))
        .route("/api/v1/jobs/{id}/fail", post(jobs::fail))
        .route("/api/v1/deployments", post(deploy::deploy))
        .route("/api/v1/deployments/{service}", get(deploy::show))
        .route("/api/v1/deployments/{service}/rollback", post(deploy::rollback))
        .route("/api/v1/deployments/{service}/{action}", post(deploy::control))
        .route("/api/v1/rollouts/report", post(deploy::report))
        .route("/api/v1/managers/lease", post(deploy::manager_lease))
        .route("/api/v1/artifacts/{digest}", get(deploy::artifact))
        .route("/api/v1/desired", get(deploy::desired))
        .route("/api/v1/audit", get(cluster::audit))
        .route("/api/v1/cluster", get(cluster::status))
        .route("/api/v1/cluster/init", post(cluster::init))
        .route("/api/v1/cluster/members", post(cluster::add_member))
        .route("/api/v1/cluster/members/{id}", axum::routing::delete(cluster::remove_member))
        .route("/api/v1/admin/backup", get(crate::backup::handler))
        .route("/healthz", get(cluster::healthz))
        .route("/metrics", get(cluster::metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint; the API lives under /api/v1") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(AppState { node, blobs })
}

/// Read-consistency query parameters shared by the read endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// `local` (default) or `linearizable`.
    pub consistency: Option<String>,
    /// Answer only once this replica has applied at least this index.
    pub min_index: Option<u64>,
}

impl ReadParams {
    fn consistency(&self) -> Result<ReadConsistency, ApiError> {
        match (self.consistency.as_deref(), self.min_index) {
            (Some("linearizable"), _) => Ok(ReadConsistency::Linearizable),
            (Some("local") | None, Some(index)) => Ok(ReadConsistency::AtLeast(index)),
            (Some("local") | None, None) => Ok(ReadConsistency::Local),
            (Some(other), _) => {
                Err(ApiError::bad_request(format!("consistency must be `local` or `linearizable`, not {other:?}")))
            }
        }
    }
}

/// Waits for the requested consistency, then reads the local state; the answer carries the applied index.
async fn consistent_read<T: Serialize>(
    node: &Node,
    params: &ReadParams,
    read: impl FnOnce(&crate::store::StateView) -> Result<T, ApiError>,
) -> Result<Response, ApiError> {
    node.read_barrier(params.consistency()?).await?;
    let (applied, value) = node.read(|view| read(view).map(|v| (view.applied_index(), v)))?;
    Ok(with_applied_index(Json(value).into_response(), applied))
}

fn with_applied_index(mut response: Response, applied: u64) -> Response {
    response.headers_mut().insert(HeaderName::from_static(APPLIED_INDEX_HEADER), HeaderValue::from(applied));
    response
}
