//! A running Cascade node: the Raft handle, the shared applied state, and the write and read paths that
//! make any node answer any request.
//!
//! Writes: a node that is leader stamps the command with its clock and proposes it; any other node forwards
//! the unstamped command to the leader over the internal API. Reads: local by default (answered with the
//! applied index), "at least index N" by waiting for the local replica, or linearizable by asking the leader
//! for its read index and waiting until the local replica has applied it.

use crate::clock::SharedClock;
use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::network::RaftNetworkOver;
#[cfg(feature = "rocksdb")]
use crate::store::{open_db, LogStore};
use crate::store::{SharedState, SnapshotStore, StateMachineStore, StateView};
use crate::transport::{Endpoint, SharedTransport, TransportError};
use crate::types::{NodeId, NodeInfo, Raft, TypeConfig};
use cascade_core::{Command, CommandResult, Principal, Request};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Longest a request waits for a leader, a replica or a long-poll.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Longest the leader waits for a quorum to commit one write.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a read should be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    /// From this replica's applied state, as it is.
    Local,
    /// From this replica once it has applied at least this index.
    AtLeast(u64),
    /// Reflecting every write acknowledged before the read began.
    Linearizable,
}

/// Why the node could not carry out a request.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum NodeError {
    /// No leader is known right now (election in progress, or no quorum).
    #[error("no Raft leader is known right now ({0}); retry in a few seconds")]
    NoLeader(String),
    /// The replica did not reach the requested index in time.
    #[error("this replica did not reach log index {wanted} within {waited_ms} ms (it is at {applied}); retry or ask another node")]
    Lagging {
        /// Index asked for.
        wanted: u64,
        /// Index reached.
        applied: u64,
        /// How long it waited.
        waited_ms: u64,
    },
    /// The cluster has not been initialized yet.
    #[error("the cluster is not initialized; run `cascade cluster init` against one voter")]
    NotInitialized,
    /// The command was sent but its fate is unknown (it may still be applied); do not blindly retry.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// Membership change refused.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// Raft stopped or storage failed; the node must be restarted.
    #[error("node failure: {0}")]
    Fatal(String),
}

/// The internal answer to a forwarded write.
pub type ForwardedWrite = Result<CommandResult, NodeError>;

/// A running node.
pub struct Node {
    /// This node's id.
    pub id: NodeId,
    /// Its configuration.
    pub config: NodeConfig,
    /// The Raft handle.
    pub raft: Raft,
    /// The applied state.
    pub state: SharedState,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Stamps commands when this node leads.
    pub clock: SharedClock,
    transport: SharedTransport,
}

impl Node {
    #[cfg(feature = "rocksdb")]
    /// Opens the data dir and starts Raft. The HTTP server is started separately ([`crate::server`]).
    pub async fn start(config: NodeConfig) -> anyhow::Result<Arc<Node>> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", config.data_dir.display()))?;
        let db_dir = config.data_dir.join("db");
        let db = tokio::task::spawn_blocking(move || open_db(&db_dir))
            .await?
            .map_err(|e| anyhow::anyhow!("cannot open RocksDB in {}: {e}", config.data_dir.display()))?;
        let log_store = LogStore::new(db.clone());
        let sm = StateMachineStore::open(db).await.map_err(|e| anyhow::anyhow!("cannot restore state machine: {e}"))?;
        let transport: SharedTransport = Arc::new(crate::transport::HttpTransport::new(&config.cluster_secret)?);
        Self::start_with(config, log_store, sm, transport, Arc::new(crate::clock::SystemClock)).await
    }

    /// Starts a node on the given storage and node-to-node transport: the seam where the simulation
    /// substitutes its in-memory stores and simulated network for RocksDB and HTTP.
    pub async fn start_with<LS, S>(
        config: NodeConfig,
        log_store: LS,
        sm: StateMachineStore<S>,
        transport: SharedTransport,
        clock: SharedClock,
    ) -> anyhow::Result<Arc<Node>>
    where
        LS: openraft::storage::RaftLogStorage<TypeConfig>,
        S: SnapshotStore,
    {
        let network = RaftNetworkOver::new(transport.clone());
        let state = sm.shared();
        let t = &config.raft;
        let raft_config = openraft::Config {
            cluster_name: "cascade".into(),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_timeout_min_ms,
            election_timeout_max: t.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every),
            max_in_snapshot_log_to_keep: t.keep_after_snapshot,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()?;
        let raft = Raft::new(config.id, Arc::new(raft_config), network, log_store, sm).await?;
        let metrics = Metrics::new();
        Ok(Arc::new(Node { id: config.id, config, raft, state, metrics, clock, transport }))
    }

    /// Runs `f` on the applied state. Keep `f` short: it holds the read lock.
    pub fn read<T>(&self, f: impl FnOnce(&StateView) -> T) -> T {
        let guard = match self.state.read() {
            Ok(guard) => guard,
            // A panic while applying would already have stopped Raft; reads still see the last good state.
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&guard)
    }

    /// Index of the last entry applied here.
    pub fn applied_index(&self) -> u64 {
        self.read(|v| v.applied_index())
    }

    /// The current leader's id and address, if known.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node))
    }

    /// Whether this node has ever seen a membership (from `cluster init` or from a leader).
    pub fn is_initialized(&self) -> bool {
        self.raft.metrics().borrow().membership_config.membership().nodes().next().is_some()
    }

    /// Whether this node is the leader right now (as far as it knows).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Commits `command` on behalf of `actor`, through whichever node leads, and returns its result.
    pub async fn write(&self, actor: Principal, command: Command) -> Result<CommandResult, NodeError> {
        let kind = command.kind();
        let started = std::time::Instant::now();
        let result = match self.write_as_leader(actor.clone(), command.clone()).await {
            Err(NotLeader(Some(leader))) => self.forward_write(&leader, actor, command).await,
            Err(NotLeader(None)) if !self.is_initialized() => Err(NodeError::NotInitialized),
            Err(NotLeader(None)) => Err(NodeError::NoLeader("no leader elected".into())),
            Ok(result) => result,
        };
        self.metrics.observe_write(kind, &result, started.elapsed());
        result
    }

    /// Proposes `command` if this node is leader; the caller forwards otherwise.
    pub async fn write_as_leader(
        &self,
        actor: Principal,
        command: Command,
    ) -> Result<Result<CommandResult, NodeError>, NotLeader> {
        let request = Request { at: self.clock.now(), actor, command };
        // A leader cut off from its quorum cannot commit, and openraft waits until it learns it was deposed;
        // bound the wait so the client can retry elsewhere.
        let written = match tokio::time::timeout(COMMIT_TIMEOUT, self.raft.client_write(request)).await {
            Ok(written) => written,
            Err(_) => {
                return Ok(Err(NodeError::OutcomeUnknown(format!(
                    "the write was not committed within {COMMIT_TIMEOUT:?} (leader lost its quorum?); it may still \
                     be applied later, so check before retrying a non-idempotent command"
                ))))
            }
        };
        match written {
            Ok(response) => {
                Ok(response.data.0.ok_or_else(|| NodeError::Fatal("a normal entry applied without a result".into())))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                if forward.leader_id == Some(self.id) {
                    return Ok(Err(NodeError::NoLeader("leadership is changing".into())));
                }
                Err(NotLeader(forward.leader_node.map(|n| n.addr)))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Ok(Err(NodeError::Membership(e.to_string())))
            }
            Err(RaftError::Fatal(e)) => Ok(Err(NodeError::Fatal(e.to_string()))),
        }
    }

    async fn forward_write(
        &self,
        leader_addr: &str,
        actor: Principal,
        command: Command,
    ) -> Result<CommandResult, NodeError> {
        let body = bincode::serialize(&(actor, command)).map_err(|e| NodeError::Fatal(e.to_string()))?;
        let answer: ForwardedWrite = self.internal_call(leader_addr, Endpoint::Write, body).await?;
        answer
    }

    /// Calls another node's internal API and decodes its bincode answer.
    async fn internal_call<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        endpoint: Endpoint,
        body: Vec<u8>,
    ) -> Result<T, NodeError> {
        let bytes = self.transport.call(addr, endpoint, body, MAX_WAIT).await.map_err(|e| match e {
            TransportError::Unreachable(m) => NodeError::NoLeader(format!("leader unreachable: {m}")),
            TransportError::Lost(m) => {
                NodeError::OutcomeUnknown(format!("call to the leader failed after sending: {m}"))
            }
            TransportError::Refused { status, text } if (400..500).contains(&status) => {
                NodeError::Fatal(format!("the leader at {addr} refused the internal call ({status}): {text}"))
            }
            TransportError::Refused { status, text } => {
                NodeError::NoLeader(format!("leader at {addr} answered {status}: {text}"))
            }
        })?;
        bincode::deserialize(&bytes).map_err(|e| NodeError::Fatal(format!("bad answer from {addr}: {e}")))
    }

    /// Waits until a read at `consistency` may be answered from the local state.
    pub async fn read_barrier(&self, consistency: ReadConsistency) -> Result<(), NodeError> {
        match consistency {
            ReadConsistency::Local => Ok(()),
            ReadConsistency::AtLeast(index) => self.wait_applied(index, MAX_WAIT).await,
            ReadConsistency::Linearizable => {
                let index = self.read_index().await?;
                self.wait_applied(index, MAX_WAIT).await
            }
        }
    }

    /// The leader's read index: applied here ⇒ a local read is linearizable.
    pub async fn read_index(&self) -> Result<u64, NodeError> {
        let confirmed = tokio::time::timeout(MAX_WAIT, self.raft.ensure_linearizable())
            .await
            .map_err(|_| NodeError::NoLeader(format!("the leader did not confirm a read within {MAX_WAIT:?}")))?;
        match confirmed {
            Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(forward))) => {
                match forward.leader_node {
                    Some(node) if forward.leader_id != Some(self.id) => {
                        let answer: Result<u64, NodeError> =
                            self.internal_call(&node.addr, Endpoint::ReadIndex, Vec::new()).await?;
                        answer
                    }
                    _ => Err(NodeError::NoLeader("no leader to confirm a linearizable read".into())),
                }
            }
            Err(RaftError::APIError(e)) => Err(NodeError::NoLeader(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(NodeError::Fatal(e.to_string())),
        }
    }

    /// Waits until this replica has applied `index`, up to `timeout`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), NodeError> {
        if self.applied_index() >= index {
            return Ok(());
        }
        match self.raft.wait(Some(timeout)).applied_index_at_least(Some(index), "read barrier").await {
            Ok(_) => Ok(()),
            Err(_) => Err(NodeError::Lagging {
                wanted: index,
                applied: self.applied_index(),
                waited_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// Waits until the applied index moves past `index` or `timeout` passes; for long-polls.
    pub async fn wait_for_change(&self, index: u64, timeout: Duration) {
        let _ = self.raft.wait(Some(timeout)).applied_index_at_least(Some(index + 1), "long poll").await;
    }

    /// Initializes the cluster with this node and the voters of its config.
    pub async fn initialize(&self) -> Result<(), NodeError> {
        let mut members = BTreeMap::new();
        members.insert(self.id, NodeInfo { addr: self.config.advertised_addr(), region: self.config.region.clone() });
        for peer in &self.config.peers {
            members.insert(peer.id, NodeInfo { addr: peer.addr.clone(), region: peer.region.clone() });
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(e)) => Err(NodeError::Membership(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(NodeError::Fatal(e.to_string())),
        }
    }

    /// Adds a learner (if not already a member) and, if `voter`, promotes it once it has caught up.
    /// Runs on the leader.
    pub async fn add_member(&self, id: NodeId, info: NodeInfo, voter: bool) -> Result<(), NodeError> {
        self.wait_membership_committed(MAX_WAIT).await?;
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let known = membership.membership().get_node(&id).cloned();
        let is_voter = membership.membership().voter_ids().any(|v| v == id);
        // add_learner commits a membership entry on every call; skip it for a member that already exists.
        if known.is_none() {
            self.raft.add_learner(id, info, false).await.map_err(membership_error)?;
        } else if known.as_ref() != Some(&info) {
            return Err(NodeError::Membership(format!(
                "node {id} is already a member at {}",
                known.unwrap_or_default()
            )));
        }
        if voter && !is_voter {
            // Promote only a learner that has caught up: a voter that cannot be reached would stall every
            // write of a small cluster (openraft 0.9 does not check this itself).
            self.wait_caught_up(id, MAX_WAIT).await?;
            let voters: std::collections::BTreeSet<NodeId> = std::iter::once(id).collect();
            let change = self.raft.change_membership(openraft::ChangeMembers::AddVoterIds(voters), false);
            match tokio::time::timeout(MAX_WAIT, change).await {
                Ok(result) => {
                    result.map_err(membership_error)?;
                }
                Err(_) => {
                    return Err(NodeError::OutcomeUnknown(format!(
                        "promoting node {id} was not committed within {MAX_WAIT:?}; check `cascade cluster status`"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Removes a member: a voter leaves the voter set and the cluster in one joint change, a learner just
    /// leaves. Refuses to remove the last voter (the cluster could never commit again). Runs on the leader.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), NodeError> {
        self.wait_membership_committed(MAX_WAIT).await?;
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        if membership.get_node(&id).is_none() {
            return Err(NodeError::Membership(format!(
                "node {id} is not a member; `cascade cluster status` lists them"
            )));
        }
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(NodeError::Membership(format!(
                    "node {id} is the only voter; add another voter first (`cascade cluster add-voter`)"
                )));
            }
            openraft::ChangeMembers::RemoveVoters(std::iter::once(id).collect())
        } else {
            openraft::ChangeMembers::RemoveNodes(std::iter::once(id).collect())
        };
        // retain = false: a removed voter is not kept on as a learner.
        match tokio::time::timeout(MAX_WAIT, self.raft.change_membership(change, false)).await {
            Ok(result) => result.map(|_| ()).map_err(membership_error),
            Err(_) => Err(NodeError::OutcomeUnknown(format!(
                "removing node {id} was not committed within {MAX_WAIT:?}; check `cascade cluster status`"
            ))),
        }
    }

    /// Waits until the membership in effect is committed here. openraft refuses a change while the previous
    /// one is uncommitted, and a newly elected leader (right after `cluster init`, say) has not yet
    /// committed even the initial one: a change asked for in that window is not an error of the caller's.
    async fn wait_membership_committed(&self, within: Duration) -> Result<(), NodeError> {
        let committed = |m: &openraft::RaftMetrics<NodeId, NodeInfo>| {
            let effective = m.membership_config.log_id().map(|l| l.index);
            m.last_applied.is_some_and(|applied| effective.is_none_or(|e| applied.index >= e))
        };
        match self.raft.wait(Some(within)).metrics(committed, "membership committed").await {
            Ok(_) => Ok(()),
            Err(_) => Err(NodeError::Membership(format!(
                "the previous membership change has not committed within {within:?}; check `cascade cluster \
                 status` (is a quorum of voters up?) and retry"
            ))),
        }
    }

    /// Waits until the leader has replicated to `id` all but a few entries of its log.
    async fn wait_caught_up(&self, id: NodeId, within: Duration) -> Result<(), NodeError> {
        const MAX_LAG: u64 = 16;
        let lag = move |m: &openraft::RaftMetrics<NodeId, NodeInfo>| {
            let matched = m.replication.as_ref().and_then(|r| r.get(&id).copied()).flatten()?;
            Some(m.last_log_index.unwrap_or(0).saturating_sub(matched.index))
        };
        // openraft wakes the waiter on every metrics change; no polling.
        let caught_up = self
            .raft
            .wait(Some(within))
            .metrics(move |m| lag(m).is_some_and(|l| l <= MAX_LAG), "learner caught up")
            .await;
        match caught_up {
            Ok(_) => Ok(()),
            Err(_) => Err(NodeError::Membership(format!(
                "node {id} has not caught up with the log within {within:?} (lag: {}); is it running and reachable \
                 at the address given? It stays a learner; retry add-voter once it has caught up",
                lag(&self.raft.metrics().borrow()).map_or("never replicated".to_string(), |l| l.to_string())
            ))),
        }
    }
}

/// This node is not the leader; carries the leader's address when known.
#[derive(Debug)]
pub struct NotLeader(pub Option<String>);

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> NodeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => NodeError::NoLeader(format!(
            "this node is not the leader; send membership changes to node {:?} ({})",
            f.leader_id,
            f.leader_node.map(|n| n.addr).unwrap_or_default()
        )),
        RaftError::APIError(e) => NodeError::Membership(e.to_string()),
        RaftError::Fatal(e) => NodeError::Fatal(e.to_string()),
    }
}

impl Node {
    /// The leader's cluster status (with replication lag), fetched over the internal API.
    pub async fn leader_status(&self, leader_addr: &str) -> Result<cascade_core::api::ClusterStatus, NodeError> {
        self.internal_call(leader_addr, Endpoint::Cluster, Vec::new()).await
    }

    /// Adds a member through whichever node leads.
    pub async fn add_member_via_leader(&self, id: NodeId, info: NodeInfo, voter: bool) -> Result<(), NodeError> {
        if self.is_leader() {
            return self.add_member(id, info, voter).await;
        }
        let (_, leader) = self.leader().ok_or_else(|| NodeError::NoLeader("no leader to change membership".into()))?;
        let body = bincode::serialize(&(id, info, voter)).map_err(|e| NodeError::Fatal(e.to_string()))?;
        let answer: Result<(), NodeError> = self.internal_call(&leader.addr, Endpoint::AddMember, body).await?;
        answer
    }

    /// Removes a member through whichever node leads.
    pub async fn remove_member_via_leader(&self, id: NodeId) -> Result<(), NodeError> {
        if self.is_leader() {
            return self.remove_member(id).await;
        }
        let (_, leader) = self.leader().ok_or_else(|| NodeError::NoLeader("no leader to change membership".into()))?;
        let body = bincode::serialize(&id).map_err(|e| NodeError::Fatal(e.to_string()))?;
        let answer: Result<(), NodeError> = self.internal_call(&leader.addr, Endpoint::RemoveMember, body).await?;
        answer
    }
}
