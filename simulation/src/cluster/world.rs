//! What the driver and the simulated hosts share: each host's durable parts (disk, snapshots, clock), the
//! running node if any, the actors' records of what was acknowledged to them, and the trace.
//!
//! Everything runs on one thread (turmoil ticks every host in turn), so this is an `Rc<RefCell<_>>`; no
//! borrow is ever held across an `.await`.

use super::clock::SimClock;
use super::disk::SimDisk;
use cascade_client::blobs::Store;
use cascade_core::{Digest, JobId, Region, ServiceName};
use cascade_raft_node::store::MemSnapshots;
use cascade_raft_node::types::NodeId;
use cascade_raft_node::Node;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// The world as the driver and the hosts see it.
pub type Shared = Rc<RefCell<World>>;

/// One Raft member's host: what survives its crashes, and the node while it runs.
pub struct NodeSlot {
    /// turmoil host name (`n1`, `l1`, ...).
    pub name: String,
    /// Raft node id.
    pub id: NodeId,
    /// Voter or learner.
    pub voter: bool,
    /// The log's disk; survives crashes minus what was not synced.
    pub disk: SimDisk,
    /// The state machine's snapshots; `save` is durable when it returns.
    pub snapshots: MemSnapshots,
    /// The host's wall clock, skewed by faults.
    pub clock: SimClock,
    /// The running node, `None` while the host is down.
    pub node: Option<Arc<Node>>,
    /// How many times the node has started.
    pub incarnation: u32,
}

/// A simulated build worker's host.
pub struct WorkerSlot {
    /// turmoil host name (`w1`, ...).
    pub name: String,
    /// How many times its software has started (it forgets its lease on a restart).
    pub incarnation: u32,
    /// A pending stall: at its next heartbeat the worker goes silent this long, then carries on with the
    /// lease it held, which by then may have been given to another worker.
    pub stall: Option<Duration>,
}

/// A region agent's host: a region manager or a host agent.
pub struct AgentSlot {
    /// turmoil host name (`m1` manages region 1; `h1a`, `h1b`, ... are its hosts).
    pub name: String,
    /// The learner whose region it serves (index among the learners).
    pub region: usize,
    /// A manager (else a host agent).
    pub manager: bool,
    /// How many times its software has started.
    pub incarnation: u32,
    /// A host agent's data dir (releases, `current` links); kept across its crashes, deleted after the run.
    pub data_dir: PathBuf,
    /// A host agent that flips a byte of every chunk it serves.
    pub corrupt: bool,
    /// The services a host agent runs (its config's `services`; empty for a manager): deploys of other
    /// services must never reach it ([`super::scenario::host_services`] assigns them).
    pub services: BTreeSet<ServiceName>,
}

/// The blob stores: where workers upload, and one store per learner region.
pub struct Blobs {
    /// The main store.
    pub main: Store,
    /// Per region.
    pub regions: BTreeMap<Region, Store>,
}

/// A host agent's report that `current` of a service now points at a release.
#[derive(Debug, Clone)]
pub struct Activation {
    /// Index into [`World::agents`].
    pub agent: usize,
    /// The service.
    pub service: ServiceName,
    /// The digest it activated.
    pub digest: Digest,
}

/// A submission whose answer reached the client: this build must never be lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedSubmit {
    /// The id the cluster answered with.
    pub job: JobId,
    /// The idempotency key the client sent.
    pub key: String,
    /// The commit it asked to build.
    pub commit: String,
}

/// A deploy whose answer reached the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedDeploy {
    /// The service.
    pub service: ServiceName,
    /// The generation the cluster answered with.
    pub generation: u64,
}

/// The trace: every event of a run in order, each stamped with simulated time and host.
#[derive(Default)]
pub struct Trace {
    lines: Vec<String>,
}

impl Trace {
    /// Appends one event.
    pub fn push(&mut self, at: Duration, host: &str, event: impl AsRef<str>) {
        self.lines.push(format!("{:>9.3}s {host:<3} {}", at.as_secs_f64(), event.as_ref()));
    }

    /// Every line so far.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Takes the lines out.
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines)
    }
}

/// Shared state of one run.
#[derive(Default)]
pub struct World {
    /// Raft members.
    pub nodes: Vec<NodeSlot>,
    /// Workers.
    pub workers: Vec<WorkerSlot>,
    /// Submissions acknowledged to the client.
    pub acked_submits: Vec<AckedSubmit>,
    /// Deploys acknowledged to the client.
    pub acked_deploys: Vec<AckedDeploy>,
    /// Whether the client has made all its submissions.
    pub client_done: bool,
    /// Whether the client has made its last deploy (with region agents it stops when the faults stop).
    pub deploys_done: bool,
    /// Region managers and host agents.
    pub agents: Vec<AgentSlot>,
    /// The blob stores, when the run has region agents (workers then upload real artifacts).
    pub blobs: Option<Blobs>,
    /// Activations reported by host agents, not yet checked. Host agents need `Send` hooks, hence the mutex.
    pub activations: std::sync::Arc<std::sync::Mutex<Vec<Activation>>>,
    /// The run's events.
    pub trace: Trace,
}

impl World {
    /// Records an event from inside a host's turn (stamped with the simulation's time).
    pub fn event(&mut self, host: &str, event: impl AsRef<str>) {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        self.trace.push(at, host, event);
    }

    /// The addresses of every Raft member, in id order, as workers and clients dial them.
    pub fn node_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| addr(&n.name)).collect()
    }
}

/// `host:port` of a node.
pub fn addr(host: &str) -> String {
    format!("{host}:{}", super::net::PORT)
}
