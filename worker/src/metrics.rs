//! The worker's Prometheus metrics, served on `metrics_listen` when the config names one.
//!
//! Counted where the worker acts (claim, attempt end, upload, heartbeat) so a scrape costs nothing but the
//! encoding; see docs/METRICS.md for the list.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The worker's metric handles and their registry; cheap to update from any task.
pub struct WorkerMetrics {
    registry: Registry,
    builds_started: Counter,
    builds_finished: Family<OutcomeLabel, Counter>,
    running: Gauge,
    claim_wait: Histogram,
    build_seconds: Histogram,
    bytes_uploaded: Counter,
    heartbeats: Family<OutcomeLabel, Counter>,
    last_heartbeat: Gauge<f64, AtomicU64>,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    /// Registers every metric under the `cascade_worker` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cascade_worker");
        let builds_started = Counter::default();
        registry.register("builds_started", "Build attempts this worker claimed and started", builds_started.clone());
        let builds_finished = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "builds_finished",
            "Build attempts ended, by outcome (succeeded, failed, retryable_failure, stopped)",
            builds_finished.clone(),
        );
        let running = Gauge::default();
        registry.register("running_builds", "Builds running on this worker now (0 or 1)", running.clone());
        let claim_wait = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "claim_wait_seconds",
            "Time a job this worker claimed had waited since its submission (leader's clock)",
            claim_wait.clone(),
        );
        let build_seconds = Histogram::new(exponential_buckets(0.5, 2.0, 14));
        registry.register("build_seconds", "Time from claim to report of one attempt", build_seconds.clone());
        let bytes_uploaded = Counter::default();
        registry.register(
            "artifact_uploaded_bytes",
            "Bytes of artifacts uploaded to the main store (chunks the store already held included)",
            bytes_uploaded.clone(),
        );
        let heartbeats = Family::<OutcomeLabel, Counter>::default();
        registry.register("heartbeats", "Heartbeats sent, by outcome (ok, error)", heartbeats.clone());
        let last_heartbeat = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_heartbeat_timestamp_seconds",
            "Unix time of the last heartbeat the cluster accepted (0 before the first)",
            last_heartbeat.clone(),
        );
        Self {
            registry,
            builds_started,
            builds_finished,
            running,
            claim_wait,
            build_seconds,
            bytes_uploaded,
            heartbeats,
            last_heartbeat,
        }
    }

    /// A claimed attempt starts; `waited` is how long its job had been waiting.
    pub fn build_started(&self, waited: Duration) {
        self.builds_started.inc();
        self.running.set(1);
        self.claim_wait.observe(waited.as_secs_f64());
    }

    /// An attempt ended with `outcome` after `took`.
    pub fn build_finished(&self, outcome: &'static str, took: Duration) {
        self.builds_finished.get_or_create(&OutcomeLabel { outcome }).inc();
        self.running.set(0);
        self.build_seconds.observe(took.as_secs_f64());
    }

    /// An artifact of `bytes` was uploaded.
    pub fn uploaded(&self, bytes: u64) {
        self.bytes_uploaded.inc_by(bytes);
    }

    /// A heartbeat was answered (`ok`) or not.
    pub fn heartbeat(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.heartbeats.get_or_create(&OutcomeLabel { outcome }).inc();
        if ok {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            self.last_heartbeat.set(now.as_secs_f64());
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
    fn renders_every_metric_with_its_values() {
        let metrics = WorkerMetrics::new();
        metrics.build_started(Duration::from_millis(250));
        metrics.uploaded(1234);
        metrics.heartbeat(true);
        metrics.build_finished("succeeded", Duration::from_secs(2));
        let text = metrics.render();
        for line in [
            "cascade_worker_builds_started_total 1",
            "cascade_worker_builds_finished_total{outcome=\"succeeded\"} 1",
            "cascade_worker_running_builds 0",
            "cascade_worker_claim_wait_seconds_count 1",
            "cascade_worker_artifact_uploaded_bytes_total 1234",
            "cascade_worker_heartbeats_total{outcome=\"ok\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("cascade_worker_last_heartbeat_timestamp_seconds "), "{text}");
    }
}
