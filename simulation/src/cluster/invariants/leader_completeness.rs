//! Protects committed entries across elections: a node that becomes leader holds every entry committed
//! before it, the same entries (same log ids). This is Raft's leader completeness; openraft's default
//! "advanced" mode may elect two leaders in one term (its leader id is `(term, node)`, totally ordered), so
//! "one leader per term" is not the property to check, but completeness is.

use super::log_matching::History;
use super::Violation;
use crate::cluster::disk::SimDisk;

/// Checks that `leader`'s log, on `disk`, holds the committed sequence up to `committed`.
pub fn check(leader: &str, disk: &SimDisk, history: &History, committed: u64) -> Result<(), Violation> {
    let (purged, last) = disk.bounds();
    if last < committed {
        return Err(Violation::new(
            "leader_completeness",
            format!("{leader} became leader with its log ending at {last}, but {committed} entries are committed"),
        ));
    }
    for index in purged.saturating_add(1)..=committed {
        let Some(expected) = history.log_id(index) else {
            continue;
        };
        match disk.entry(index) {
            Some(entry) if entry.log_id == expected => {}
            Some(entry) => {
                return Err(Violation::new(
                    "leader_completeness",
                    format!(
                        "{leader} became leader with {} at index {index}, where {expected} is committed",
                        entry.log_id
                    ),
                ))
            }
            None => {
                return Err(Violation::new(
                    "leader_completeness",
                    format!("{leader} became leader without committed entry {expected}"),
                ))
            }
        }
    }
    Ok(())
}
