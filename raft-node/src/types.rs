//! The openraft type configuration: what the log carries and what a member is.

use cascade_core::{CommandResult, Request};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Cursor;

/// A cluster member as the Raft membership records it: where to reach it and which region it serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` of its HTTP server (API and Raft RPC).
    pub addr: String,
    /// The region it runs in.
    pub region: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.addr, self.region)
    }
}

/// What applying one log entry yields: a command's result, or nothing for blank and membership entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied(pub Option<CommandResult>);

openraft::declare_raft_types!(
    /// Cascade's Raft: log entries are stamped commands, members are [`NodeInfo`].
    pub TypeConfig:
        D = Request,
        R = Applied,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = crate::runtime::SeededRuntime,
);

/// The Raft handle with Cascade's types.
pub type Raft = openraft::Raft<TypeConfig>;
/// Raft node id.
pub type NodeId = u64;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// Storage error with our node id.
pub type StorageError = openraft::StorageError<NodeId>;
/// Membership as stored.
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
