//! How one node's bytes reach another: the single seam under both Raft RPC ([`crate::network`]) and the
//! internal API (forwarded writes, read index, membership). Production sends bincode over HTTP with the
//! cluster secret ([`HttpTransport`]); the simulation delivers the same bytes to
//! [`crate::internal::dispatch`] of the target node over its simulated network.

use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// Header that carries the cluster secret on node-to-node calls.
pub const CLUSTER_SECRET_HEADER: &str = "x-cascade-cluster-secret";

/// Content type of bincode bodies.
pub const BINCODE: &str = "application/x-bincode";

/// The node-to-node calls, by path under the node's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Raft AppendEntries.
    Append,
    /// Raft RequestVote.
    Vote,
    /// Raft InstallSnapshot (one chunk).
    Snapshot,
    /// A write forwarded to the leader.
    Write,
    /// The leader's read index.
    ReadIndex,
    /// A membership change forwarded to the leader.
    AddMember,
    /// The leader's cluster status.
    Cluster,
    /// A member's removal forwarded to the leader.
    RemoveMember,
}

impl Endpoint {
    /// Every endpoint, for routing.
    pub const ALL: [Endpoint; 8] = [
        Endpoint::Append,
        Endpoint::Vote,
        Endpoint::Snapshot,
        Endpoint::Write,
        Endpoint::ReadIndex,
        Endpoint::AddMember,
        Endpoint::Cluster,
        Endpoint::RemoveMember,
    ];

    /// The HTTP path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Append => "/raft/append",
            Endpoint::Vote => "/raft/vote",
            Endpoint::Snapshot => "/raft/snapshot",
            Endpoint::Write => "/internal/v1/write",
            Endpoint::ReadIndex => "/internal/v1/read-index",
            Endpoint::AddMember => "/internal/v1/add-member",
            Endpoint::Cluster => "/internal/v1/cluster",
            Endpoint::RemoveMember => "/internal/v1/remove-member",
        }
    }
}

/// Why a call produced no answer. The distinction matters for writes: only `Unreachable` guarantees the
/// peer never saw the request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The request never reached the peer (connection refused, no route).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The request may have reached the peer, but no answer came back.
    #[error("no answer: {0}")]
    Lost(String),
    /// The peer answered with an error status.
    #[error("refused with {status}: {text}")]
    Refused {
        /// HTTP status code.
        status: u16,
        /// The error body.
        text: String,
    },
}

/// Sends bincode bodies to a peer's endpoint and returns its bincode answer.
pub trait Transport: Send + Sync + 'static {
    /// Calls `endpoint` on the node at `addr` with `body`, giving up after `timeout`.
    fn call(
        &self,
        addr: &str,
        endpoint: Endpoint,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;
}

/// Shared transport handle.
pub type SharedTransport = Arc<dyn Transport>;

/// The production transport: HTTP/1.1 with a pooled client and the cluster secret header.
pub struct HttpTransport {
    client: reqwest::Client,
    secret: Arc<str>,
}

impl HttpTransport {
    /// A transport that authenticates with `secret`.
    pub fn new(secret: &str) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
        Ok(Self { client, secret: secret.into() })
    }
}

impl Transport for HttpTransport {
    fn call(
        &self,
        addr: &str,
        endpoint: Endpoint,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let request = self
            .client
            .post(format!("http://{addr}{}", endpoint.path()))
            .timeout(timeout)
            .header(CLUSTER_SECRET_HEADER, &*self.secret)
            .header(reqwest::header::CONTENT_TYPE, BINCODE)
            .body(body);
        let addr = addr.to_string();
        Box::pin(async move {
            let response = request.send().await.map_err(|e| {
                if e.is_connect() {
                    TransportError::Unreachable(format!("{addr}: {e}"))
                } else {
                    TransportError::Lost(format!("{addr}: {e}"))
                }
            })?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| TransportError::Lost(format!("{addr}: {e}")))?;
            if !status.is_success() {
                return Err(TransportError::Refused {
                    status: status.as_u16(),
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                });
            }
            Ok(bytes.to_vec())
        })
    }
}
