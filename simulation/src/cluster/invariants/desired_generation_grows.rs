//! Protects deploy ordering: a service's desired generation only grows, by one per deploy, so agents that
//! act on "a higher generation" never go back to an older version or skip one unseen; and the client's
//! acknowledged deploys of a service carry strictly growing generations.

use super::Violation;
use crate::cluster::world::AckedDeploy;
use cascade_core::{ServiceName, State};
use std::collections::BTreeMap;

/// Last generation seen per service, on the committed sequence and in the client's acknowledgements.
#[derive(Default)]
pub struct Tracker {
    committed: BTreeMap<ServiceName, u64>,
    acked_checked: usize,
    acked: BTreeMap<ServiceName, u64>,
}

impl Tracker {
    /// Checks the state after one applied entry.
    pub fn check(&mut self, state: &State, index: u64) -> Result<(), Violation> {
        for (service, desired) in &state.desired {
            let last = self.committed.get(service).copied().unwrap_or(0);
            if desired.generation != last && desired.generation != last + 1 {
                return Err(Violation::new(
                    "desired_generation_grows",
                    format!("log index {index}: {service} went from generation {last} to {}", desired.generation),
                ));
            }
            self.committed.insert(service.clone(), desired.generation);
        }
        Ok(())
    }

    /// Checks deploys acknowledged to the client since the last call.
    pub fn check_acked(&mut self, acked: &[AckedDeploy]) -> Result<(), Violation> {
        for deploy in acked.iter().skip(self.acked_checked) {
            let last = self.acked.get(&deploy.service).copied().unwrap_or(0);
            if deploy.generation <= last {
                return Err(Violation::new(
                    "desired_generation_grows",
                    format!(
                        "the client was told {} generation {} after generation {last}",
                        deploy.service, deploy.generation
                    ),
                ));
            }
            self.acked.insert(deploy.service.clone(), deploy.generation);
        }
        self.acked_checked = acked.len();
        Ok(())
    }
}
