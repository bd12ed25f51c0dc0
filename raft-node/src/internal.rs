//! Node-to-node endpoints: Raft RPC (`/raft/*`) and the internal API (`/internal/v1/*`) through which
//! followers forward writes, ask for the read index, and change membership. All bincode.
//!
//! [`dispatch`] is the whole protocol; the axum router only checks the cluster secret and hands it the
//! body, so the simulation can deliver the same bytes to the same code without HTTP.

use crate::api::{check_cluster_secret, ApiError};
use crate::node::{ForwardedWrite, Node, NodeError};
use crate::transport::{Endpoint, BINCODE};
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
    let mut router = Router::new();
    for endpoint in Endpoint::ALL {
        let handler = move |State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes| async move {
            serve(node, endpoint, headers, body).await
        };
        router = router.route(endpoint.path(), post(handler));
    }
    router.layer(DefaultBodyLimit::max(MAX_INTERNAL_BODY)).with_state(node)
}

async fn serve(node: Arc<Node>, endpoint: Endpoint, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(status) = check_cluster_secret(&headers, &node.config.cluster_secret) {
        return ApiError::new(status, "unauthorized", "wrong or missing cluster secret").into_response();
    }
    match dispatch(&node, endpoint, &body).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, BINCODE)], bytes).into_response(),
        Err(e) => e.into_response(),
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    bincode::deserialize(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", format!("bad bincode body: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    bincode::serialize(value).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// Handles one authenticated node-to-node call: decodes `body`, acts, encodes the answer.
pub async fn dispatch(node: &Node, endpoint: Endpoint, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    match endpoint {
        Endpoint::Append => {
            let req: AppendEntriesRequest<TypeConfig> = decode(body)?;
            encode(&node.raft.append_entries(req).await)
        }
        Endpoint::Vote => {
            let req: VoteRequest<NodeId> = decode(body)?;
            encode(&node.raft.vote(req).await)
        }
        Endpoint::Snapshot => {
            let req: InstallSnapshotRequest<TypeConfig> = decode(body)?;
            encode(&node.raft.install_snapshot(req).await)
        }
        Endpoint::Write => {
            let (actor, command): (Principal, Command) = decode(body)?;
            // Forwarded once only: if this node lost leadership meanwhile, the caller retries from the start.
            let answer: ForwardedWrite = match node.write_as_leader(actor, command).await {
                Ok(result) => result,
                Err(_) => Err(NodeError::NoLeader("leadership moved while the write was forwarded".into())),
            };
            encode(&answer)
        }
        Endpoint::ReadIndex => {
            let answer: Result<u64, NodeError> = if node.is_leader() {
                node.read_index().await
            } else {
                Err(NodeError::NoLeader("this node is no longer the leader".into()))
            };
            encode(&answer)
        }
        Endpoint::AddMember => {
            let (id, info, voter): (NodeId, NodeInfo, bool) = decode(body)?;
            encode(&node.add_member(id, info, voter).await)
        }
        Endpoint::Cluster => encode(&crate::api::local_status(node)),
        Endpoint::RemoveMember => {
            let id: NodeId = decode(body)?;
            encode(&node.remove_member(id).await)
        }
    }
}
