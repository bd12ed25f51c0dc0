//! A simulated host's disk: the Raft log with the difference between what was written and what was synced.
//!
//! `raft-node`'s `MemLogStore` writes straight into memory that survives a simulated crash whole, so it
//! cannot show what a crash between a write and its `fsync` does. [`SimDisk`] keeps two images: the page
//! cache that reads see and the durable image a crash falls back to. Every write lands in the cache, then
//! the store waits for the disk (the slow-disk fault makes that wait long), then syncs and only then tells
//! openraft the write is done. A crash during the wait loses the write, exactly as a power cut before
//! `fsync` returns would. The simulation holds the `SimDisk` across restarts; each incarnation of the node
//! gets a fresh [`SimLogStore`] on it.

use cascade_raft_node::store::contiguous_from;
use cascade_raft_node::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader, Vote};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The log as one image of the disk holds it.
#[derive(Clone, Default)]
struct Image {
    logs: BTreeMap<u64, Entry>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

/// One write, kept until it is synced.
enum Op {
    Append(Vec<Entry>),
    Truncate(u64),
    Purge(LogId),
    Vote(Vote<NodeId>),
    Committed(Option<LogId>),
}

impl Image {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(entries) => {
                for entry in entries {
                    self.logs.insert(entry.log_id.index, entry.clone());
                }
            }
            Op::Truncate(index) => {
                self.logs.split_off(index);
            }
            Op::Purge(log_id) => {
                self.last_purged = Some(*log_id);
                self.logs = self.logs.split_off(&(log_id.index + 1));
            }
            Op::Vote(vote) => self.vote = Some(*vote),
            Op::Committed(committed) => self.committed = *committed,
        }
    }
}

#[derive(Default)]
struct Platters {
    cache: Image,
    durable: Image,
    unsynced: Vec<Op>,
    sync_delay: Duration,
    fsync_is_a_no_op: bool,
    replication_reads_purged_ranges: bool,
}

/// A host's disk, shared between the simulation (which crashes it) and the node's log store.
#[derive(Clone, Default)]
pub struct SimDisk {
    inner: Arc<Mutex<Platters>>,
}

impl SimDisk {
    fn lock(&self) -> MutexGuard<'_, Platters> {
        // Single-threaded simulation: a poisoned lock only means an earlier panic, which already failed the run.
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The host lost power: everything written but not synced is gone.
    pub fn crash(&self) -> usize {
        let mut p = self.lock();
        let lost = p.unsynced.len();
        p.unsynced.clear();
        p.cache = p.durable.clone();
        lost
    }

    /// The log's bounds as this host holds it now: the last purged index and the last index (0 for none).
    pub fn bounds(&self) -> (u64, u64) {
        let p = self.lock();
        let purged = p.cache.last_purged.map_or(0, |l| l.index);
        let last = p.cache.logs.keys().next_back().copied().unwrap_or(purged);
        (purged, last)
    }

    /// Test-only bug: acknowledge every write without ever syncing it, as a store whose `fsync` does
    /// nothing would; a crash then loses acknowledged writes (votes and log entries alike).
    pub fn set_fsync_is_a_no_op(&self, on: bool) {
        self.lock().fsync_is_a_no_op = on;
    }

    /// Test-only bug: replication reads return what is left of a range whose start was purged, as the
    /// stores did before seed 3358 was fixed.
    pub fn set_replication_reads_purged_ranges(&self, on: bool) {
        self.lock().replication_reads_purged_ranges = on;
    }

    /// Whether a write is waiting for its sync (a crash now would lose it).
    pub fn has_unsynced(&self) -> bool {
        !self.lock().unsynced.is_empty()
    }

    /// How long every sync takes from now on (the slow-disk fault).
    pub fn set_sync_delay(&self, delay: Duration) {
        self.lock().sync_delay = delay;
    }

    /// The vote this host holds now (what a restart restores, once synced), for the checker.
    pub fn vote(&self) -> Option<Vote<NodeId>> {
        self.lock().cache.vote
    }

    /// The entry at `index` as this host's log holds it now, if it still does.
    pub fn entry(&self, index: u64) -> Option<Entry> {
        self.lock().cache.logs.get(&index).cloned()
    }

    fn write(&self, op: Op) -> Duration {
        let mut p = self.lock();
        p.cache.apply(&op);
        p.unsynced.push(op);
        p.sync_delay
    }

    fn sync(&self) {
        let mut p = self.lock();
        if p.fsync_is_a_no_op {
            return;
        }
        let ops = std::mem::take(&mut p.unsynced);
        for op in &ops {
            p.durable.apply(op);
        }
    }

    /// Writes `op`, waits for the disk, syncs. Dropped during the wait (a crash), the write stays unsynced.
    async fn write_synced(&self, op: Op) {
        let delay = self.write(op);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.sync();
    }
}

/// openraft's log storage on a [`SimDisk`]; the same contract as the RocksDB store: a write is acknowledged
/// only once it is synced.
#[derive(Clone)]
pub struct SimLogStore {
    disk: SimDisk,
}

impl SimLogStore {
    /// A store on `disk` (one per incarnation of the node; the disk outlives them).
    pub fn new(disk: SimDisk) -> Self {
        Self { disk }
    }
}

impl RaftLogReader<TypeConfig> for SimLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.disk.lock().cache.logs.range(range).map(|(_, e)| e.clone()).collect())
    }

    /// The replication read, as the production stores do it: only the run starting exactly at `start`,
    /// nothing once `start` is purged (seed 3358; `cascade_raft_node::store::contiguous_from`).
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let p = self.disk.lock();
        let held = p.cache.logs.range(start..end).map(|(_, e)| e.clone());
        if p.replication_reads_purged_ranges {
            return Ok(held.collect());
        }
        Ok(contiguous_from(start, end, held))
    }
}

impl RaftLogStorage<TypeConfig> for SimLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let p = self.disk.lock();
        let last = p.cache.logs.values().next_back().map(|e| e.log_id).or(p.cache.last_purged);
        Ok(LogState { last_purged_log_id: p.cache.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.disk.write_synced(Op::Vote(*vote)).await;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.disk.lock().cache.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.disk.write_synced(Op::Committed(committed)).await;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.disk.lock().cache.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        self.disk.write_synced(Op::Append(entries)).await;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.disk.write_synced(Op::Truncate(log_id.index)).await;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        if self.disk.lock().cache.last_purged >= Some(log_id) {
            return Ok(());
        }
        self.disk.write_synced(Op::Purge(log_id)).await;
        Ok(())
    }
}
