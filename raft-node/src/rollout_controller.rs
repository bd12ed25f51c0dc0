//! The leader-only rollout controller: every half second the leader asks the rollout gate
//! ([`cascade_core::rollout::decide`]) whether any unfinished rollout has a step to take (open a wave,
//! start a bake, complete, halt, roll back), and proposes `StepRollout` for it. The state machine decides
//! again when it applies the entry, so a controller on a deposed leader, or two steps racing, cannot move a
//! rollout further than its committed state allows.

use crate::node::Node;
use cascade_core::{Command, Principal, ServiceName};
use std::sync::Arc;
use std::time::Duration;

/// How often the leader looks: a wave's bake or a budget breach is acted on within this.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// Runs until the node shuts down.
pub async fn run(node: Arc<Node>) {
    let actor = match Principal::parse("rollout-controller") {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("rollout controller cannot start: {e}");
            return;
        }
    };
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !node.is_leader() {
            continue;
        }
        // Look locally first: only a rollout with a step to take costs a log entry.
        let now = node.clock.now();
        let due: Vec<(ServiceName, u64)> = node.read(|view| {
            let state = &view.state;
            state
                .unfinished_rollouts()
                .filter(|service| state.rollout_decision(service, now).is_some())
                .filter_map(|service| state.desired.get(service).map(|d| (service.clone(), d.generation)))
                .collect()
        });
        for (service, generation) in due {
            match node.write(actor.clone(), Command::StepRollout { service: service.clone(), generation }).await {
                Ok(Ok(cascade_core::CommandOutput::Desired(desired))) => {
                    tracing::info!(%service, generation, waves_open = desired.progress.opened.len(), end = ?desired.progress.end.as_ref().map(|e| e.state), "rollout step");
                }
                Ok(Ok(_)) => {}
                // Another step got there first, or the state moved on: the next tick looks again.
                Ok(Err(e)) => tracing::debug!(%service, generation, "rollout step refused: {e}"),
                Err(e) => tracing::warn!(%service, generation, "rollout step not committed: {e}"),
            }
        }
    }
}
