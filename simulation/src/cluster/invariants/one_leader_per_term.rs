//! Protects Raft's election safety, on which everything else rests: at most one leader per term.

use super::Violation;
use cascade_raft_node::types::NodeId;
use std::collections::BTreeMap;

/// The leader seen in each term.
#[derive(Default)]
pub struct Tracker {
    leaders: BTreeMap<u64, NodeId>,
}

impl Tracker {
    /// Records that `node` leads `term`; fails if another node led it.
    pub fn check(&mut self, term: u64, node: NodeId) -> Result<(), Violation> {
        let leader = *self.leaders.entry(term).or_insert(node);
        if leader != node {
            return Err(Violation::new(
                "one_leader_per_term",
                format!("nodes {leader} and {node} both were leader in term {term}"),
            ));
        }
        Ok(())
    }
}
