//! Protects committed entries across elections: a node that wins an election holds every entry committed
//! before it, the same entries (same log ids). This is Raft's leader completeness. openraft's default
//! "advanced" mode may elect two leaders in one term (its leader id is `(term, node)`, totally ordered), so
//! "one leader per term" is not the property to check (seed 1168), but completeness is.
//!
//! Checked when a node is seen turning leader within one incarnation, against what was committed by the
//! step before. Not checked for a node that restarts as leader: openraft restores a node with a committed
//! vote for itself as leader at once, a stale leader that owes nothing committed since (seeds 2676, 2721:
//! an old entry committed later by a newer leader is not owed to an older one). Such a node is told by its
//! vote, the committed one its disk held when it restarted, not by its first metrics: those may show a
//! follower in term 0 for a step before openraft restores it as leader (seed 2429).

use super::log_matching::History;
use super::Violation;
use crate::cluster::disk::SimDisk;
use cascade_raft_node::types::NodeId;
use openraft::Vote;

/// Checks that `leader`, just elected under `vote`, holds on `disk` every committed entry up to `committed`.
pub fn check(
    leader: &str,
    vote: &Vote<NodeId>,
    disk: &SimDisk,
    history: &History,
    committed: u64,
) -> Result<(), Violation> {
    let (purged, last) = disk.bounds();
    for index in purged.saturating_add(1)..=committed {
        let Some(expected) = history.log_id(index) else {
            continue;
        };
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
