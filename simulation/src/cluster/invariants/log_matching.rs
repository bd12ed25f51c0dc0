//! Protects replication itself: every replica applies the same sequence of entries. A replica that has
//! applied up to index `i` must have applied the same entry at `i` (same log id) as the committed sequence,
//! and its state must be the very state the committed sequence yields at `i` (so `apply` was deterministic
//! and no replica skipped, reordered or invented an entry).

use super::Violation;
use cascade_raft_node::types::LogId;
use std::collections::BTreeMap;

/// The committed sequence's log id and state digest at each index.
#[derive(Default)]
pub struct History {
    at: BTreeMap<u64, (Option<LogId>, u64)>,
}

impl History {
    /// Records the committed sequence at `index`.
    pub fn record(&mut self, index: u64, log_id: Option<LogId>, digest: u64) {
        self.at.insert(index, (log_id, digest));
    }

    /// The committed entry's log id at `index`, if recorded.
    pub fn log_id(&self, index: u64) -> Option<LogId> {
        self.at.get(&index).and_then(|(log_id, _)| *log_id)
    }

    /// Checks that `replica`, having applied up to `applied` with state digest `digest`, matches.
    pub fn check(&self, replica: &str, applied: Option<LogId>, digest: u64) -> Result<bool, Violation> {
        let index = applied.map_or(0, |l| l.index);
        let Some((log_id, expected)) = self.at.get(&index) else {
            return Ok(false);
        };
        if index > 0 && *log_id != applied {
            return Err(Violation::new(
                "log_matching",
                format!("{replica} applied {applied:?} at index {index}, the committed entry there is {log_id:?}"),
            ));
        }
        if *expected != digest {
            return Err(Violation::new(
                "log_matching",
                format!("{replica}'s state after index {index} differs from the committed sequence's state there"),
            ));
        }
        Ok(true)
    }
}
