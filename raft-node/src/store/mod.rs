//! Durable storage: one RocksDB database per node, holding the Raft log and the state machine's snapshots
//! (feature `rocksdb`), and in-memory stores with the same contract for the simulation.
//!
//! Every RocksDB call runs on a blocking thread (`spawn_blocking`), never inside the async runtime, and an
//! append is acknowledged to openraft only after its write batch was synced to disk.

#[cfg(feature = "rocksdb")]
mod log_store;
mod memory;
#[cfg(feature = "rocksdb")]
mod rocks;
mod state_machine;

#[cfg(feature = "rocksdb")]
pub use log_store::LogStore;
pub use memory::MemLogStore;
#[cfg(feature = "rocksdb")]
pub use rocks::{open_db, RocksSnapshots};
pub use state_machine::{MemSnapshots, SharedState, SnapshotStore, StateMachineStore, StateView};

use crate::types::Entry;

/// What a replication read of `[start, end)` may return: the run of consecutive entries that begins
/// exactly at `start`, or nothing when `start` is no longer held.
///
/// openraft 0.9 sends whatever `RaftLogReader::limited_get_log_entries` returns after the `prev_log_id`
/// it computed for `start - 1`, without checking that the first entry is `start`. Its guard against purging
/// a range a replication stream is reading holds only while the node leads: a leader that steps down keeps
/// its replication streams running (0.9's `QuitLeader` does not close them), and as a follower it purges at
/// once. Such a stream then reads a range whose start was purged; returning the entries still held sent
/// `prev_log_id` 43 with entry 69 (simulation seed 3358, docs/SIMULATION.md). An empty answer makes
/// openraft send a heartbeat instead (0.9.25 treats it so, after a 10 ms pause); a leader that still leads
/// moves a follower behind its purge point to a snapshot on its own. `try_get_log_entries` keeps openraft's
/// contract (missing entries are skipped); only the replication read is held to this one.
pub fn contiguous_from(start: u64, end: u64, entries: impl IntoIterator<Item = Entry>) -> Vec<Entry> {
    entries
        .into_iter()
        .zip(start..end)
        .take_while(|(entry, index)| entry.log_id.index == *index)
        .map(|(entry, _)| entry)
        .collect()
}
