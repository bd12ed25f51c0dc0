//! Node-to-node endpoints: Raft RPC (`/raft/*`) and the internal API (`/internal/v1/*`) through which
//! followers forward writes, ask for the read index, and change membership. All bincode, all behind the
//! cluster secret.

use crate::api::{check_cluster_secret, ApiError};
use crate::network::BINCODE;
use crate::node::{ForwardedWrite, Node, NodeError};
use crate::types::{NodeId, NodeInfo, TypeConfig};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use cascade_core::{Command, Principal};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

/// Largest node-to-node body: log batches and snapshot chunks.
const MAX_INTERNAL_BODY: usize = 64 * 1024 * 1024;

/// The node-to-node router.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/internal/v1/write", post(write))
        .route("/internal/v1/read-index", post(read_index))
        .route("/internal/v1/add-member", post(add_member))
        .route("/internal/v1/cluster", post(cluster))
        .layer(DefaultBodyLimit::max(MAX_INTERNAL_BODY))
        .with_state(node)
}

fn decode<T: DeserializeOwned>(headers: &HeaderMap, node: &Node, body: &[u8]) -> Result<T, ApiError> {
    check_cluster_secret(headers, &node.config.cluster_secret)
        .map_err(|s| ApiError::new(s, "unauthorized", "wrong or missing cluster secret"))?;
    bincode::deserialize(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", format!("bad bincode body: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Response {
    match bincode::serialize(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, BINCODE)], bytes).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()).into_response(),
    }
}

async fn append(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match decode(&headers, &node, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    encode(&node.raft.append_entries(req).await)
}

async fn vote(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: VoteRequest<NodeId> = match decode(&headers, &node, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    encode(&node.raft.vote(req).await)
}

async fn snapshot(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: InstallSnapshotRequest<TypeConfig> = match decode(&headers, &node, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    encode(&node.raft.install_snapshot(req).await)
}

async fn write(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    let (actor, command): (Principal, Command) = match decode(&headers, &node, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    // Forwarded once only: if this node lost leadership meanwhile, the caller retries from the start.
    let answer: ForwardedWrite = match node.write_as_leader(actor, command).await {
        Ok(result) => result,
        Err(_) => Err(NodeError::NoLeader("leadership moved while the write was forwarded".into())),
    };
    encode(&answer)
}

async fn read_index(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = decode::<()>(&headers, &node, &body) {
        return e.into_response();
    }
    let answer: Result<u64, NodeError> = if node.is_leader() {
        node.read_index().await
    } else {
        Err(NodeError::NoLeader("this node is no longer the leader".into()))
    };
    encode(&answer)
}

async fn add_member(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    let (id, info, voter): (NodeId, NodeInfo, bool) = match decode(&headers, &node, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    encode(&node.add_member(id, info, voter).await)
}

async fn cluster(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = decode::<()>(&headers, &node, &body) {
        return e.into_response();
    }
    encode(&crate::api::local_status(&node))
}
