//! Bytes between simulated hosts: one request per turmoil TCP connection, length-prefixed bincode frames.
//!
//! Node-to-node calls carry exactly what production sends over HTTP (an [`Endpoint`] and its bincode
//! body) and land in the same [`internal::dispatch`]; workers and clients send `(actor, command)` to any
//! node, which runs it through `Node::write` (forwarding to the leader like the HTTP API does). Partitions,
//! loss and delay are turmoil's: a dropped segment shows up as a call that times out.

use cascade_core::api::DesiredVersions;
use cascade_core::state::ArtifactRecord;
use cascade_core::{Command, CommandOutput, CommandResult, Digest, Principal, WorkerId};
use cascade_raft_node::internal;
use cascade_raft_node::node::{Node, NodeError};
use cascade_raft_node::transport::{Endpoint, Transport, TransportError};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::{TcpListener, TcpStream};

/// The port every node listens on.
pub const PORT: u16 = 7000;

/// Largest frame accepted from a peer; a longer length prefix is refused, not allocated.
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Longest a server waits for a request's bytes before dropping the connection (a partitioned caller).
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Connections one incarnation of a node serves at most (a run makes a few thousand).
const MAX_CONNECTIONS: u64 = 10_000_000;

/// What a caller asks a node.
#[derive(Debug, Serialize, Deserialize)]
pub enum WireRequest {
    /// A node-to-node call: the index of its [`Endpoint`] in [`Endpoint::ALL`] and its bincode body.
    Internal {
        /// Index into [`Endpoint::ALL`].
        endpoint: u8,
        /// The body production would POST.
        body: Vec<u8>,
    },
    /// A command from a worker or a client, as the HTTP API would run it.
    Write {
        /// Who issues it.
        actor: Principal,
        /// What to do.
        command: Command,
    },
    /// A worker's claim, as `POST /api/v1/jobs/claim` runs it: proposed only when this replica's queue
    /// has a job, so idle workers do not fill the log with empty claims.
    Claim {
        /// Who issues it.
        actor: Principal,
        /// The worker to hand a job to.
        worker: WorkerId,
    },
    /// A region manager's long poll of the desired versions, answered from this replica as
    /// `GET /api/v1/desired?after=..&wait=..` is: once a desired version changed after `after`, or when
    /// `wait_ms` ran out.
    Desired {
        /// The last answer's `changed_at_index`, if any.
        after: Option<u64>,
        /// Longest wait, milliseconds.
        wait_ms: u64,
    },
    /// An artifact's record from this replica, as `GET /api/v1/artifacts/{digest}` reads it.
    Artifact {
        /// Which artifact.
        digest: Digest,
    },
}

/// A node's answer: the bincode answer bytes, or an error status and text as HTTP would carry them.
type WireResponse = Result<Vec<u8>, (u16, String)>;

async fn write_frame(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(bytes).await?;
    stream.flush().await
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("frame of {len} bytes exceeds {MAX_FRAME}")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// Sends `request` to `addr` and returns the answer bytes, within `timeout`.
pub async fn call(addr: &str, request: &WireRequest, timeout: Duration) -> Result<Vec<u8>, TransportError> {
    let bytes = bincode::serialize(request).map_err(|e| TransportError::Unreachable(format!("encode: {e}")))?;
    let started = tokio::time::Instant::now();
    let mut stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(TransportError::Unreachable(format!("{addr}: {e}"))),
        Err(_) => return Err(TransportError::Unreachable(format!("{addr}: connect timed out"))),
    };
    let left = timeout.saturating_sub(started.elapsed());
    let exchange = async {
        write_frame(&mut stream, &bytes).await?;
        read_frame(&mut stream).await
    };
    let answer = match tokio::time::timeout(left, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(TransportError::Lost(format!("{addr}: {e}"))),
        Err(_) => return Err(TransportError::Lost(format!("{addr}: no answer within {timeout:?}"))),
    };
    let response: WireResponse =
        bincode::deserialize(&answer).map_err(|e| TransportError::Lost(format!("{addr}: bad answer: {e}")))?;
    response.map_err(|(status, text)| TransportError::Refused { status, text })
}

/// A worker's or client's write through the node at `addr`: the command's result, or why there is none.
pub async fn write(
    addr: &str,
    actor: Principal,
    command: Command,
    timeout: Duration,
) -> Result<Result<CommandResult, NodeError>, TransportError> {
    let bytes = call(addr, &WireRequest::Write { actor, command }, timeout).await?;
    bincode::deserialize(&bytes).map_err(|e| TransportError::Lost(format!("{addr}: bad answer: {e}")))
}

/// A worker's claim through the node at `addr` (see [`WireRequest::Claim`]).
pub async fn claim(
    addr: &str,
    actor: Principal,
    worker: WorkerId,
    timeout: Duration,
) -> Result<Result<CommandResult, NodeError>, TransportError> {
    let bytes = call(addr, &WireRequest::Claim { actor, worker }, timeout).await?;
    bincode::deserialize(&bytes).map_err(|e| TransportError::Lost(format!("{addr}: bad answer: {e}")))
}

/// A region manager's long poll of the desired versions through the node at `addr`.
pub async fn desired(
    addr: &str,
    after: Option<u64>,
    wait: Duration,
    timeout: Duration,
) -> Result<DesiredVersions, TransportError> {
    let request = WireRequest::Desired { after, wait_ms: wait.as_millis() as u64 };
    let bytes = call(addr, &request, timeout).await?;
    bincode::deserialize(&bytes).map_err(|e| TransportError::Lost(format!("{addr}: bad answer: {e}")))
}

/// An artifact's record as the node at `addr` holds it (`None`: not there).
pub async fn artifact(
    addr: &str,
    digest: &Digest,
    timeout: Duration,
) -> Result<Option<ArtifactRecord>, TransportError> {
    let bytes = call(addr, &WireRequest::Artifact { digest: digest.clone() }, timeout).await?;
    bincode::deserialize(&bytes).map_err(|e| TransportError::Lost(format!("{addr}: bad answer: {e}")))
}

/// The node-to-node [`Transport`] over turmoil TCP.
pub struct SimTransport;

impl Transport for SimTransport {
    fn call(
        &self,
        addr: &str,
        endpoint: Endpoint,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let addr = addr.to_string();
        let index = Endpoint::ALL.iter().position(|e| *e == endpoint).unwrap_or(0) as u8;
        Box::pin(async move { call(&addr, &WireRequest::Internal { endpoint: index, body }, timeout).await })
    }
}

/// Accepts connections on [`PORT`] and answers each request until the host crashes.
pub async fn serve(node: Arc<Node>) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", PORT)).await?;
    for _ in 0..MAX_CONNECTIONS {
        let (stream, _) = listener.accept().await?;
        tokio::task::spawn_local(answer(node.clone(), stream));
    }
    Err(std::io::Error::other(format!("served {MAX_CONNECTIONS} connections; a run never needs that many")))
}

async fn answer(node: Arc<Node>, mut stream: TcpStream) {
    let request = match tokio::time::timeout(READ_TIMEOUT, read_frame(&mut stream)).await {
        Ok(Ok(bytes)) => bytes,
        _ => return,
    };
    let response: WireResponse = match bincode::deserialize::<WireRequest>(&request) {
        Err(e) => Err((400, format!("bad request: {e}"))),
        Ok(WireRequest::Internal { endpoint, body }) => match Endpoint::ALL.get(endpoint as usize) {
            None => Err((404, format!("no endpoint {endpoint}"))),
            Some(endpoint) => internal::dispatch(&node, *endpoint, &body)
                .await
                .map_err(|e| (e.status.as_u16(), format!("{}: {}", e.error, e.detail))),
        },
        Ok(WireRequest::Write { actor, command }) => {
            let result = node.write(actor, command).await;
            bincode::serialize(&result).map_err(|e| (500, e.to_string()))
        }
        Ok(WireRequest::Claim { actor, worker }) => {
            let result = if node.read(|v| v.state.queue.is_empty()) {
                Ok(Ok(CommandOutput::Claimed(None)))
            } else {
                node.write(actor, Command::Claim { worker }).await
            };
            bincode::serialize(&result).map_err(|e| (500, e.to_string()))
        }
        Ok(WireRequest::Desired { after, wait_ms }) => {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms.min(30_000));
            if let Some(after) = after {
                for _round in 0..100_000 {
                    let (applied, changed) = node.read(|v| (v.applied_index(), v.desired_changed_at));
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if changed > after || left.is_zero() {
                        break;
                    }
                    node.wait_for_change(applied, left).await;
                }
            }
            let answer = node.read(|v| DesiredVersions {
                applied_index: v.applied_index(),
                changed_at_index: v.desired_changed_at,
                services: v.state.desired.clone(),
            });
            bincode::serialize(&answer).map_err(|e| (500, e.to_string()))
        }
        Ok(WireRequest::Artifact { digest }) => {
            let record = node.read(|v| v.state.artifacts.get(&digest).cloned());
            bincode::serialize(&record).map_err(|e| (500, e.to_string()))
        }
    };
    if let Ok(bytes) = bincode::serialize(&response) {
        let _ = write_frame(&mut stream, &bytes).await;
    }
}
