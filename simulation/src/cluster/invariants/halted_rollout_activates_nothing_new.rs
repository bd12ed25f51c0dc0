//! A rollout that ended without completing (halted over its failure budget or its progress deadline,
//! rolled back, aborted, or superseded by a newer deploy) activates nothing new: once its end is
//! committed, no host switches to its release any more, unless another generation that still switches
//! deploys the same digest.
//!
//! A manager can only stop once it has read the end, and under faults that takes time: it reads from its
//! learner (which may lag) and fails over only after a call times out, and an `Activate` already on its
//! way still lands. It switches hosts only while it holds its lease, which it renews through the same
//! servers. So an activation of an ended generation's release is flagged only when it is seen
//! [`GRACE`] after the end was first seen committed, a bound above the lease's time to live, a call's
//! timeout, a long poll and a delayed message added up. Checked on every activation a host's hook reports.

use super::Violation;
use cascade_core::rollout::EndState;
use cascade_core::{Digest, ServiceName, State};
use std::collections::BTreeMap;
use std::time::Duration;

const NAME: &str = "halted_rollout_activates_nothing_new";

/// How long after an end is committed a host may still switch to the ended generation's release: the
/// manager's lease (3 s) + a call's timeout (4 s) + a long poll (5 s) + a delayed message, with room.
pub const GRACE: Duration = Duration::from_secs(15);

/// When each generation's end was first seen committed (simulated time).
#[derive(Debug, Default)]
pub struct Tracker {
    ended: BTreeMap<(ServiceName, u64), Duration>,
}

impl Tracker {
    /// Notes the ends the committed `state` shows at `now` that were not seen before; returns them in
    /// words, for the trace.
    pub fn note(&mut self, state: &State, now: Duration) -> Vec<String> {
        let mut noted = Vec::new();
        for (service, history) in &state.deploy_history {
            for version in history.iter().rev() {
                if version.progress.end.is_none() {
                    continue;
                }
                let key = (service.clone(), version.generation);
                if self.ended.contains_key(&key) {
                    // Ends are final and come in generation order: the older ones were noted already.
                    break;
                }
                self.ended.insert(key, now);
                if let Some(end) = &version.progress.end {
                    noted.push(format!(
                        "{service} generation {} rollout {}: {}",
                        version.generation,
                        end.state.name(),
                        end.reason
                    ));
                }
            }
        }
        noted
    }

    /// An activation of `service` at `digest` that `host` reported at `now`, against the committed `state`.
    pub fn check_activation(
        &self,
        state: &State,
        host: &str,
        service: &ServiceName,
        digest: &Digest,
        now: Duration,
    ) -> Result<(), Violation> {
        let Some(history) = state.deploy_history.get(service) else { return Ok(()) };
        let mut ended = Vec::new();
        for version in history.iter().filter(|d| &d.artifact.digest == digest) {
            let end = match &version.progress.end {
                None => return Ok(()),
                Some(end) if end.state == EndState::Complete => return Ok(()),
                Some(end) => end,
            };
            let Some(seen) = self.ended.get(&(service.clone(), version.generation)) else { return Ok(()) };
            if now < *seen + GRACE {
                return Ok(());
            }
            ended.push(format!(
                "generation {} ended {} {:.1} s before ({})",
                version.generation,
                end.state.name(),
                (now - *seen).as_secs_f64(),
                end.reason
            ));
        }
        if ended.is_empty() {
            return Ok(());
        }
        Err(Violation::new(NAME, format!("{host} activated {service} at {digest}: {}", ended.join("; "))))
    }
}
