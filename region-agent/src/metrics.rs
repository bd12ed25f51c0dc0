//! Prometheus metrics of the region agents, served on `metrics_listen` when their config names one (by
//! `cascade_client::metrics_http`, the same small server the worker uses).
//!
//! Everything is counted where the agent acts (a chunk read from a peer, a chunk served, a rollout count
//! computed), so a scrape costs only the encoding. See docs/METRICS.md for the list.

use crate::protocol::FetchFailure;
use cascade_core::state::RolloutCounts;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReleaseLabel {
    service: String,
    digest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabel {
    service: String,
    state: &'static str,
}

/// A host agent's metric handles.
pub struct HostMetrics {
    registry: Registry,
    received: Family<PeerLabel, Counter>,
    sent: Family<PeerLabel, Counter>,
    chunks_verified: Counter,
    chunks_sent: Counter,
    bad_chunks: Family<PeerLabel, Counter>,
    fetch_failures: Family<ReasonLabel, Counter>,
    activations: Family<OutcomeLabel, Counter>,
    releases_active: Gauge,
    release: Family<ReleaseLabel, Gauge>,
}

impl Default for HostMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HostMetrics {
    /// Registers every metric under the `cascade_host` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cascade_host");
        let received = Family::<PeerLabel, Counter>::default();
        registry.register("received_bytes", "Chunk bytes received, by sending peer (host or seed)", received.clone());
        let sent = Family::<PeerLabel, Counter>::default();
        registry.register("sent_bytes", "Chunk bytes served to other hosts, by receiving peer", sent.clone());
        let chunks_verified = Counter::default();
        registry.register(
            "chunks_verified",
            "Chunks received whose BLAKE3 matched the manifest and were kept",
            chunks_verified.clone(),
        );
        let chunks_sent = Counter::default();
        registry.register("chunks_sent", "Chunks served to other hosts", chunks_sent.clone());
        let bad_chunks = Family::<PeerLabel, Counter>::default();
        registry.register(
            "chunk_verification_failures",
            "Chunks received that failed verification (wrong hash or length), by sending peer",
            bad_chunks.clone(),
        );
        let fetch_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "fetch_failures",
            "Chunk fetches that failed, by reason (dead, stalled, bad_chunk)",
            fetch_failures.clone(),
        );
        let activations = Family::<OutcomeLabel, Counter>::default();
        registry.register("activations", "Release activations, by outcome (ok, failed)", activations.clone());
        let releases_active = Gauge::default();
        registry.register("releases_active", "Services with a release active on this host", releases_active.clone());
        let release = Family::<ReleaseLabel, Gauge>::default();
        registry.register("release_info", "1 for the release active for each service", release.clone());
        Self {
            registry,
            received,
            sent,
            chunks_verified,
            chunks_sent,
            bad_chunks,
            fetch_failures,
            activations,
            releases_active,
            release,
        }
    }

    /// `bytes` of a chunk were read from `peer`.
    pub fn received(&self, peer: SocketAddr, bytes: u64) {
        self.received.get_or_create(&PeerLabel { peer: peer.to_string() }).inc_by(bytes);
    }

    /// `bytes` of a chunk were served to `peer`.
    pub fn sent(&self, peer: SocketAddr, bytes: u64) {
        self.chunks_sent.inc();
        self.sent.get_or_create(&PeerLabel { peer: peer.to_string() }).inc_by(bytes);
    }

    /// A received chunk was verified and written.
    pub fn chunk_verified(&self) {
        self.chunks_verified.inc();
    }

    /// A fetch failed for `reason`; a bad chunk also counts against `peer`.
    pub fn fetch_failed(&self, peer: SocketAddr, reason: FetchFailure) {
        self.fetch_failures.get_or_create(&ReasonLabel { reason: reason.label() }).inc();
        if reason == FetchFailure::BadChunk {
            self.bad_chunks.get_or_create(&PeerLabel { peer: peer.to_string() }).inc();
        }
    }

    /// An activation ended; on success `active` is every service's active digest now.
    pub fn activation(&self, ok: bool, active: &std::collections::HashMap<String, String>) {
        self.activations.get_or_create(&OutcomeLabel { outcome: if ok { "ok" } else { "failed" } }).inc();
        self.releases_active.set(i64::try_from(active.len()).unwrap_or(i64::MAX));
        self.release.clear();
        for (service, digest) in active {
            self.release.get_or_create(&ReleaseLabel { service: service.clone(), digest: digest.clone() }).set(1);
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        cascade_client::metrics_http::encode(&self.registry)
    }
}

/// A region manager's metric handles.
pub struct ManagerMetrics {
    registry: Registry,
    rollout_hosts: Family<RolloutLabel, Gauge>,
    generation: Family<ServiceLabel, Gauge>,
    /// Chunks the seed served from the regional store (also in the status file).
    pub seed_chunks: Counter,
    seed_bytes: Counter,
    bad_senders: Gauge,
    bad_chunk_reports: Counter,
    hosts_connected: Gauge,
}

impl Default for ManagerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ManagerMetrics {
    /// Registers every metric under the `cascade_manager` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cascade_manager");
        let rollout_hosts = Family::<RolloutLabel, Gauge>::default();
        registry.register(
            "rollout_hosts",
            "Hosts of this cluster per service's current rollout, by state (total, fetching, verified, active, failed)",
            rollout_hosts.clone(),
        );
        let generation = Family::<ServiceLabel, Gauge>::default();
        registry.register("rollout_generation", "Generation of the rollout each service follows", generation.clone());
        let seed_chunks = Counter::default();
        registry.register("seed_chunks_served", "Chunks the seed served from the regional store", seed_chunks.clone());
        let seed_bytes = Counter::default();
        registry.register("seed_sent_bytes", "Chunk bytes the seed served from the regional store", seed_bytes.clone());
        let bad_senders = Gauge::default();
        registry.register("bad_senders", "Hosts reported for sending a bad chunk", bad_senders.clone());
        let bad_chunk_reports = Counter::default();
        registry.register("bad_chunk_reports", "Bad chunks the scheduler was told about", bad_chunk_reports.clone());
        let hosts_connected = Gauge::default();
        registry.register("hosts_connected", "Hosts with a live control session", hosts_connected.clone());
        Self {
            registry,
            rollout_hosts,
            generation,
            seed_chunks,
            seed_bytes,
            bad_senders,
            bad_chunk_reports,
            hosts_connected,
        }
    }

    /// The seed served one chunk of `bytes`.
    pub fn seed_served(&self, bytes: u64) {
        self.seed_chunks.inc();
        self.seed_bytes.inc_by(bytes);
    }

    /// A bad chunk was reported; `senders` hosts have been blamed so far.
    pub fn bad_chunk(&self, senders: usize) {
        self.bad_chunk_reports.inc();
        self.bad_senders.set(i64::try_from(senders).unwrap_or(i64::MAX));
    }

    /// `hosts` have a live control session.
    pub fn hosts_connected(&self, hosts: usize) {
        self.hosts_connected.set(i64::try_from(hosts).unwrap_or(i64::MAX));
    }

    /// The counts of `service`'s rollout `generation` in this cluster.
    pub fn rollout(&self, service: &str, generation: u64, counts: &RolloutCounts) {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.generation.get_or_create(&ServiceLabel { service: service.to_string() }).set(as_i64(generation));
        for (state, value) in [
            ("total", counts.total),
            ("fetching", counts.fetching),
            ("verified", counts.verified),
            ("active", counts.active),
            ("failed", counts.failed),
        ] {
            self.rollout_hosts.get_or_create(&RolloutLabel { service: service.to_string(), state }).set(as_i64(value));
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        cascade_client::metrics_http::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_metrics_render_per_peer_counters() {
        let metrics = HostMetrics::new();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        metrics.received(peer, 100);
        metrics.sent(peer, 50);
        metrics.chunk_verified();
        metrics.fetch_failed(peer, FetchFailure::BadChunk);
        metrics.activation(true, &[("app".to_string(), "d1".to_string())].into_iter().collect());
        let text = metrics.render();
        for line in [
            "cascade_host_received_bytes_total{peer=\"127.0.0.1:4000\"} 100",
            "cascade_host_sent_bytes_total{peer=\"127.0.0.1:4000\"} 50",
            "cascade_host_chunks_verified_total 1",
            "cascade_host_chunk_verification_failures_total{peer=\"127.0.0.1:4000\"} 1",
            "cascade_host_releases_active 1",
            "cascade_host_release_info{service=\"app\",digest=\"d1\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn manager_metrics_render_rollout_counts() {
        let metrics = ManagerMetrics::new();
        let counts =
            RolloutCounts { total: 5, fetching: 1, verified: 1, active: 3, failed: 0, ..RolloutCounts::default() };
        metrics.rollout("app", 2, &counts);
        metrics.seed_served(10);
        metrics.hosts_connected(5);
        let text = metrics.render();
        for line in [
            "cascade_manager_rollout_hosts{service=\"app\",state=\"active\"} 3",
            "cascade_manager_rollout_hosts{service=\"app\",state=\"total\"} 5",
            "cascade_manager_rollout_generation{service=\"app\"} 2",
            "cascade_manager_seed_chunks_served_total 1",
            "cascade_manager_seed_sent_bytes_total 10",
            "cascade_manager_hosts_connected 5",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
