//! Raft RPC between nodes: bincode over HTTP, every request carrying the cluster secret.

use crate::types::{NodeId, NodeInfo, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

/// Header that carries the cluster secret on node-to-node calls.
pub const CLUSTER_SECRET_HEADER: &str = "x-cascade-cluster-secret";

/// Content type of bincode bodies.
pub const BINCODE: &str = "application/x-bincode";

/// Creates one [`PeerClient`] per target; all share one connection pool.
#[derive(Clone)]
pub struct HttpNetwork {
    client: reqwest::Client,
    secret: Arc<str>,
}

impl HttpNetwork {
    /// A network that authenticates with `secret`.
    pub fn new(client: reqwest::Client, secret: &str) -> Self {
        Self { client, secret: secret.into() }
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        PeerClient { target, addr: node.addr.clone(), client: self.client.clone(), secret: self.secret.clone() }
    }
}

/// Raft RPC to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    client: reqwest::Client,
    secret: Arc<str>,
}

/// Why an RPC did not produce the peer's answer (before mapping to openraft's error shapes).
enum CallError<E> {
    Unreachable(String),
    Network(String),
    Remote(E),
}

impl PeerClient {
    async fn call<Req, Resp, E>(&self, path: &str, req: &Req, option: &RPCOption) -> Result<Resp, CallError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let body = bincode::serialize(req).map_err(|e| CallError::Network(e.to_string()))?;
        let url = format!("http://{}/raft/{path}", self.addr);
        let response = self
            .client
            .post(&url)
            .timeout(option.hard_ttl())
            .header(CLUSTER_SECRET_HEADER, &*self.secret)
            .header(reqwest::header::CONTENT_TYPE, BINCODE)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    CallError::Unreachable(e.to_string())
                } else {
                    CallError::Network(e.to_string())
                }
            })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| CallError::Network(e.to_string()))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            return Err(CallError::Network(format!("{url} answered {status}: {text}")));
        }
        let result: Result<Resp, E> =
            bincode::deserialize(&bytes).map_err(|e| CallError::Network(format!("bad answer from {url}: {e}")))?;
        result.map_err(CallError::Remote)
    }

    fn map_err<E: std::error::Error>(
        &self,
        e: CallError<RaftError<NodeId, E>>,
    ) -> RPCError<NodeId, NodeInfo, RaftError<NodeId, E>> {
        let io = |m: String| std::io::Error::other(m);
        match e {
            CallError::Unreachable(m) => RPCError::Unreachable(Unreachable::new(&io(m))),
            CallError::Network(m) => RPCError::Network(NetworkError::new(&io(m))),
            CallError::Remote(r) => RPCError::RemoteError(RemoteError::new(self.target, r)),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call("append", &rpc, &option).await.map_err(|e| self.map_err(e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call("snapshot", &rpc, &option).await.map_err(|e| self.map_err(e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await.map_err(|e| self.map_err(e))
    }
}
