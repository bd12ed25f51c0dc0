//! Protects committed entries across elections: a node that leads under leader id `V` holds every entry
//! committed under a lower leader id, the same entries (same log ids). This is Raft's leader completeness;
//! openraft's default "advanced" mode may elect two leaders in one term (its leader id is `(term, node)`,
//! totally ordered), so "one leader per term" is not the property to check, but completeness is.
//!
//! Entries committed under a *higher* leader id are not owed: openraft restores a node that restarts with a
//! committed vote for itself as leader at once, a stale leader (found by seed 2676) that cannot commit
//! anything because every quorum has moved past its vote.

use super::log_matching::History;
use super::Violation;
use crate::cluster::disk::SimDisk;
use cascade_raft_node::types::NodeId;
use openraft::Vote;

/// Checks that `leader`, leading under `vote`, holds on `disk` every entry up to `committed` that was
/// committed under a lower leader id.
pub fn check(
    leader: &str,
    vote: &Vote<NodeId>,
    disk: &SimDisk,
    history: &History,
    committed: u64,
) -> Result<(), Violation> {
    let (purged, last) = disk.bounds();
    let own = (vote.leader_id.term, vote.leader_id.node_id);
    for index in purged.saturating_add(1)..=committed {
        let Some(expected) = history.log_id(index) else {
            continue;
        };
        if (expected.leader_id.term, expected.leader_id.node_id) > own {
            // Log ids grow along the log: everything from here on was committed by a newer leader.
            break;
        }
        if index > last {
            return Err(Violation::new(
                "leader_completeness",
                format!("{leader} leads under {vote} with its log ending at {last}, without committed {expected}"),
            ));
        }
        match disk.entry(index) {
            Some(entry) if entry.log_id == expected => {}
            Some(entry) => {
                return Err(Violation::new(
                    "leader_completeness",
                    format!(
                        "{leader} leads under {vote} with {} at index {index}, where {expected} is committed",
                        entry.log_id
                    ),
                ))
            }
            None => {
                return Err(Violation::new(
                    "leader_completeness",
                    format!("{leader} leads under {vote} without committed entry {expected}"),
                ))
            }
        }
    }
    Ok(())
}
