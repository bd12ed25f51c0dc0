//! The cluster simulation: Cascade's real control plane under seeded faults.
//!
//! Every Raft member is the production `raft-node` (`Node::start_with`, openraft, the state machine store,
//! the stale-job monitor) running as a turmoil host: its own current-thread tokio runtime with paused,
//! simulated time, all hosts stepped in turn on one thread. Node-to-node RPC and the actors' writes travel
//! over turmoil TCP ([`net`]); each host has a simulated disk that loses unsynced writes on a crash
//! ([`disk`]) and a skewable wall clock ([`clock`]); openraft draws its election timeouts from
//! `raft-node`'s seeded runtime. Workers and a client ([`actors`]) use the cluster like production ones.
//!
//! One seed fixes everything: the scenario ([`scenario`]: cluster shape, workload, faults), turmoil's
//! network randomness, tokio's scheduler randomness (under `--cfg tokio_unstable`) and openraft's. The same
//! seed replays the same run, trace and all ([`Outcome::trace`]). After every step the [`invariants`] are
//! checked; when the faults stop the run (in liveness mode) must converge within a bound.
//!
//! Each learner's region also runs production's region manager and 3–4 host agents ([`agents`]) over a
//! simulated agent network ([`agent_net`]); workers upload real artifacts and the leader replicates them
//! into the regional stores, so deploys fan out for real and every activated release is checked.

pub mod actors;
pub mod agent_net;
pub mod agents;
pub mod clock;
pub mod disk;
pub mod host;
pub mod invariants;
pub mod isolation;
pub mod net;
pub mod run;
pub mod scenario;
pub mod self_test;
pub mod world;

pub use invariants::CheckStats;
pub use run::run_seed;
use std::time::Duration;

/// How a run is carried out.
#[derive(Debug, Clone)]
pub struct Options {
    /// Inject the scenario's faults (off: the same workload on a healthy cluster).
    pub faults: bool,
    /// After the faults stop, require convergence within [`Options::liveness_bound`].
    pub liveness: bool,
    /// How long the healed cluster has to converge, in simulated time.
    pub liveness_bound: Duration,
    /// Test-only bug: every disk's `fsync` does nothing, so crashes lose acknowledged writes. The
    /// simulation's self-test turns it on to show the invariants catch a storage bug.
    pub fsync_is_a_no_op: bool,
    /// Test-only bug: a replication read returns whatever entries of its range are still held, even when
    /// its start was purged, as the stores did before seed 3358 was fixed. The regression test turns it on
    /// to show the seed still reaches the situation.
    pub replication_reads_purged_ranges: bool,
    /// Run region managers and host agents in every learner region (and real artifacts, a replicator, and
    /// the agents' faults). Off: the cluster as simulated before them, so old seeds replay as they did.
    pub agents: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            faults: true,
            liveness: true,
            liveness_bound: Duration::from_secs(90),
            fsync_is_a_no_op: false,
            replication_reads_purged_ranges: false,
            agents: true,
        }
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The invariant (module name), `liveness`, or `host_software_ran` for a panic in a host.
    pub invariant: String,
    /// What was seen.
    pub detail: String,
}

/// The result of one seed.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The scenario it drew, in words.
    pub scenario: String,
    /// The first violation, if any.
    pub failure: Option<Failure>,
    /// Every event of the run; the same seed gives the same trace, byte for byte.
    pub trace: Vec<String>,
    /// Simulated time the run covered.
    pub sim_time: Duration,
    /// Simulation steps taken.
    pub steps: u64,
    /// What the checker covered.
    pub stats: CheckStats,
}

impl Outcome {
    /// Whether every invariant held (and, in liveness mode, the cluster converged).
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// The failure report: seed, what broke, how to replay, and the last `tail` events.
    pub fn report(&self, tail: usize) -> String {
        let mut out = String::new();
        match &self.failure {
            None => out.push_str(&format!("seed {} passed\n", self.seed)),
            Some(f) => {
                out.push_str(&format!("seed {} FAILED: {}: {}\n", self.seed, f.invariant, f.detail));
                out.push_str(&format!("replay: cargo run -p cascade-simulation -- --seed {} --trace\n", self.seed));
            }
        }
        out.push_str(&format!("{}\n", self.scenario));
        let from = self.trace.len().saturating_sub(tail);
        out.push_str(&format!("last {} of {} events:\n", self.trace.len() - from, self.trace.len()));
        for line in &self.trace[from..] {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}
