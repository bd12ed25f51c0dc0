//! Protects finality: a build that ended SUCCEEDED, FAILED or CANCELLED stays exactly that, so a deploy
//! never points at a build whose result was rewritten.

use super::Violation;
use cascade_core::{JobId, JobStatus, State};
use std::collections::BTreeMap;

/// Every terminal status seen so far on the committed sequence.
#[derive(Default)]
pub struct Tracker {
    terminal: BTreeMap<JobId, JobStatus>,
}

impl Tracker {
    /// Checks the state after one applied entry.
    pub fn check(&mut self, state: &State, index: u64) -> Result<(), Violation> {
        for (id, seen) in &self.terminal {
            let now = state.jobs.get(id).map(|j| &j.status);
            if now != Some(seen) {
                return Err(Violation::new(
                    "terminal_states_final",
                    format!(
                        "log index {index}: build {id} was {} and is now {}",
                        seen.name(),
                        now.map_or("gone", |s| s.name())
                    ),
                ));
            }
        }
        for (id, job) in &state.jobs {
            if job.status.is_terminal() && !self.terminal.contains_key(id) {
                self.terminal.insert(*id, job.status.clone());
            }
        }
        Ok(())
    }
}
