//! Prometheus metrics of a node: write outcomes and latency, counted where writes enter; claim latency,
//! counted where claims are answered; and Raft, queue, replication and rollout gauges read from the node's
//! replica at scrape time. docs/METRICS.md lists them all.

use cascade_core::CommandResult;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

use crate::node::NodeError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    command: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabel {
    command: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicationLabel {
    region: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabel {
    service: String,
    region: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabel {
    node: String,
    region: String,
}

type HistogramFamily = Family<CommandLabel, Histogram, fn() -> Histogram>;

/// The node's metric handles and their registry.
pub struct Metrics {
    registry: Registry,
    writes: Family<WriteLabels, Counter>,
    write_seconds: HistogramFamily,
    term: Gauge,
    last_log_index: Gauge,
    applied_index: Gauge,
    is_leader: Gauge,
    member_lag: Family<MemberLabel, Gauge>,
    jobs: Family<StatusLabel, Gauge>,
    queue_depth: Gauge,
    workers: Gauge,
    running_builds: Gauge,
    claim_wait: Histogram,
    replication: Family<ReplicationLabel, Gauge>,
    rollout_hosts: Family<RolloutLabel, Gauge>,
    rollout_generation: Family<ServiceLabel, Gauge>,
}

/// Host counts of one service's current rollout in one region (summed over its clusters).
pub struct RolloutFigures {
    /// The service.
    pub service: String,
    /// Its current generation.
    pub generation: u64,
    /// The region.
    pub region: String,
    /// Counts summed over the region's clusters.
    pub counts: cascade_core::state::RolloutCounts,
}

/// Raft and state figures read at scrape time.
pub struct Snapshot {
    /// Current term.
    pub term: u64,
    /// Last log index.
    pub last_log_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Whether this node leads.
    pub is_leader: bool,
    /// Per member (leader only): (id, region, entries behind).
    pub lag: Vec<(u64, String, u64)>,
    /// Jobs per status.
    pub jobs: Vec<(&'static str, u64)>,
    /// Queued jobs.
    pub queue_depth: u64,
    /// Workers ever seen.
    pub workers: u64,
    /// Jobs running now.
    pub running_builds: u64,
    /// Artifacts per (region, replication state: pending, copying, replicated, error).
    pub replication: Vec<(String, &'static str, u64)>,
    /// Current rollout of every desired service, per region.
    pub rollouts: Vec<RolloutFigures>,
}

/// The replication states, as metric label values, in the order they are reported.
pub const REPLICATION_STATES: [&str; 4] = ["pending", "copying", "replicated", "error"];

fn write_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cascade");
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register("writes", "Commands submitted through this node, by outcome", writes.clone());
        let write_seconds: HistogramFamily = Family::new_with_constructor(write_histogram);
        registry.register(
            "write_seconds",
            "Time from receiving a command to its applied result",
            write_seconds.clone(),
        );
        let term = Gauge::default();
        registry.register("raft_term", "Current Raft term", term.clone());
        let last_log_index = Gauge::default();
        registry.register("raft_last_log_index", "Last Raft log index on this node", last_log_index.clone());
        let applied_index = Gauge::default();
        registry.register("raft_applied_index", "Last Raft log index applied on this node", applied_index.clone());
        let is_leader = Gauge::default();
        registry.register("raft_is_leader", "1 if this node is the Raft leader", is_leader.clone());
        let member_lag = Family::<MemberLabel, Gauge>::default();
        registry.register(
            "raft_member_lag_entries",
            "Entries each member trails the leader (leader only)",
            member_lag.clone(),
        );
        let jobs = Family::<StatusLabel, Gauge>::default();
        registry.register("jobs", "Build jobs by status", jobs.clone());
        let queue_depth = Gauge::default();
        registry.register("queue_depth", "Build jobs waiting for a worker", queue_depth.clone());
        let workers = Gauge::default();
        registry.register("workers_seen", "Workers that ever claimed or heartbeated", workers.clone());
        let running_builds = Gauge::default();
        registry.register("running_builds", "Build jobs running on a worker now", running_builds.clone());
        let claim_wait = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "claim_wait_seconds",
            "Time from a job's submission to its claim, for claims answered by this node (leader's clock)",
            claim_wait.clone(),
        );
        let replication = Family::<ReplicationLabel, Gauge>::default();
        registry.register(
            "artifacts_replication",
            "Artifacts per region and replication state (pending, copying, replicated, error)",
            replication.clone(),
        );
        let rollout_hosts = Family::<RolloutLabel, Gauge>::default();
        registry.register(
            "rollout_hosts",
            "Hosts of each service's current rollout per region, by state (total, fetching, verified, active, failed)",
            rollout_hosts.clone(),
        );
        let rollout_generation = Family::<ServiceLabel, Gauge>::default();
        registry.register(
            "rollout_generation",
            "Current desired generation of each service",
            rollout_generation.clone(),
        );
        Self {
            registry,
            writes,
            write_seconds,
            term,
            last_log_index,
            applied_index,
            is_leader,
            member_lag,
            jobs,
            queue_depth,
            workers,
            running_builds,
            claim_wait,
            replication,
            rollout_hosts,
            rollout_generation,
        }
    }

    /// Counts one claim of a job that had waited `waited` since its submission.
    pub fn observe_claim(&self, waited: Duration) {
        self.claim_wait.observe(waited.as_secs_f64());
    }

    /// Counts one write and its latency.
    pub fn observe_write(&self, command: &'static str, result: &Result<CommandResult, NodeError>, took: Duration) {
        let outcome = match result {
            Ok(Ok(_)) => "accepted",
            Ok(Err(_)) => "refused",
            Err(_) => "unavailable",
        };
        self.writes.get_or_create(&WriteLabels { command, outcome }).inc();
        self.write_seconds.get_or_create(&CommandLabel { command }).observe(took.as_secs_f64());
    }

    /// Renders the text exposition format after refreshing the gauges from `snapshot`.
    pub fn render(&self, snapshot: Snapshot) -> String {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.term.set(as_i64(snapshot.term));
        self.last_log_index.set(as_i64(snapshot.last_log_index));
        self.applied_index.set(as_i64(snapshot.applied_index));
        self.is_leader.set(i64::from(snapshot.is_leader));
        self.member_lag.clear();
        for (node, region, lag) in snapshot.lag {
            self.member_lag.get_or_create(&MemberLabel { node: node.to_string(), region }).set(as_i64(lag));
        }
        for status in ["queued", "running", "succeeded", "failed", "cancelled"] {
            let n = snapshot.jobs.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
            self.jobs.get_or_create(&StatusLabel { status }).set(as_i64(n));
        }
        self.queue_depth.set(as_i64(snapshot.queue_depth));
        self.workers.set(as_i64(snapshot.workers));
        self.running_builds.set(as_i64(snapshot.running_builds));
        self.replication.clear();
        for (region, state, n) in snapshot.replication {
            self.replication.get_or_create(&ReplicationLabel { region, state }).set(as_i64(n));
        }
        self.rollout_hosts.clear();
        self.rollout_generation.clear();
        for rollout in snapshot.rollouts {
            let counts = rollout.counts;
            self.rollout_generation
                .get_or_create(&ServiceLabel { service: rollout.service.clone() })
                .set(as_i64(rollout.generation));
            for (state, n) in [
                ("total", counts.total),
                ("fetching", counts.fetching),
                ("verified", counts.verified),
                ("active", counts.active),
                ("failed", counts.failed),
            ] {
                let label = RolloutLabel { service: rollout.service.clone(), region: rollout.region.clone(), state };
                self.rollout_hosts.get_or_create(&label).set(as_i64(n));
            }
        }
        cascade_client::metrics_http::encode(&self.registry)
    }
}
