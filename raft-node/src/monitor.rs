//! The leader-only stale-job monitor: every few seconds the leader requeues (or fails) running jobs whose
//! worker has gone silent. It is a plain command through the log, so the decision replicates like any other.

use crate::node::Node;
use cascade_core::{Command, Principal};
use std::sync::Arc;
use std::time::Duration;

/// Runs until the node shuts down.
pub async fn run(node: Arc<Node>) {
    let interval = Duration::from_secs(node.config.monitor.interval_secs);
    let timeout_ms = node.config.monitor.stale_after_secs.saturating_mul(1000);
    let actor = match Principal::parse("monitor") {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("monitor cannot start: {e}");
            return;
        }
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !node.is_leader() {
            continue;
        }
        // Look locally first so an idle cluster does not fill its log with empty scans.
        let now = node.clock.now();
        let any_stale = node.read(|v| v.state.has_stale(now, timeout_ms));
        if !any_stale {
            continue;
        }
        match node.write(actor.clone(), Command::RequeueStale { timeout_ms }).await {
            Ok(Ok(output)) => tracing::info!(?output, "stale-job scan"),
            Ok(Err(e)) => tracing::warn!("stale-job scan refused: {e}"),
            Err(e) => tracing::warn!("stale-job scan not committed: {e}"),
        }
    }
}
