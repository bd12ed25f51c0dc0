//! Raft RPC between nodes: bincode over a [`Transport`] (HTTP with the cluster secret in production).

use crate::transport::{Endpoint, SharedTransport, TransportError};
use crate::types::{NodeId, NodeInfo, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Creates one [`PeerClient`] per target; all share one transport.
#[derive(Clone)]
pub struct RaftNetworkOver {
    transport: SharedTransport,
}

impl RaftNetworkOver {
    /// Raft RPC over `transport`.
    pub fn new(transport: SharedTransport) -> Self {
        Self { transport }
    }
}

impl RaftNetworkFactory<TypeConfig> for RaftNetworkOver {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        PeerClient { target, addr: node.addr.clone(), transport: self.transport.clone() }
    }
}

/// Raft RPC to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    transport: SharedTransport,
}

/// Why an RPC did not produce the peer's answer (before mapping to openraft's error shapes).
enum CallError<E> {
    Unreachable(String),
    Network(String),
    Remote(E),
}

impl PeerClient {
    async fn call<Req, Resp, E>(&self, endpoint: Endpoint, req: &Req, option: &RPCOption) -> Result<Resp, CallError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let body = bincode::serialize(req).map_err(|e| CallError::Network(e.to_string()))?;
        let bytes = self.transport.call(&self.addr, endpoint, body, option.hard_ttl()).await.map_err(|e| match e {
            TransportError::Unreachable(m) => CallError::Unreachable(m),
            other => CallError::Network(other.to_string()),
        })?;
        let result: Result<Resp, E> = bincode::deserialize(&bytes)
            .map_err(|e| CallError::Network(format!("bad answer from {}: {e}", self.addr)))?;
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
        self.call(Endpoint::Append, &rpc, &option).await.map_err(|e| self.map_err(e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(Endpoint::Snapshot, &rpc, &option).await.map_err(|e| self.map_err(e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(Endpoint::Vote, &rpc, &option).await.map_err(|e| self.map_err(e))
    }
}
