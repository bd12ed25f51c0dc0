//! An in-memory Raft log with the same contract as the RocksDB one, for the deterministic simulation.
//!
//! Cloning the store shares its contents: the simulation keeps one clone as a host's "disk" and hands a
//! fresh clone to each incarnation of the node, so a simulated crash keeps exactly what was appended.

use super::contiguous_from;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader, StorageIOError, Vote};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Disk {
    logs: BTreeMap<u64, Entry>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

/// The in-memory log store.
#[derive(Clone, Default)]
pub struct MemLogStore {
    disk: Arc<Mutex<Disk>>,
}

impl MemLogStore {
    // openraft's trait methods fix the error type, large as it is.
    #[allow(clippy::result_large_err)]
    fn disk(&self) -> Result<MutexGuard<'_, Disk>, StorageError> {
        self.disk.lock().map_err(|e| StorageIOError::read_logs(&std::io::Error::other(e.to_string())).into())
    }
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.disk()?.logs.range(range).map(|(_, e)| e.clone()).collect())
    }

    /// The replication read: only the run starting exactly at `start` ([`super::contiguous_from`]).
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(contiguous_from(start, end, self.disk()?.logs.range(start..end).map(|(_, e)| e.clone())))
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let disk = self.disk()?;
        let last = disk.logs.values().next_back().map(|e| e.log_id).or(disk.last_purged);
        Ok(LogState { last_purged_log_id: disk.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.disk()?.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.disk()?.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.disk()?.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.disk()?.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        {
            let mut disk = self.disk()?;
            for entry in entries {
                disk.logs.insert(entry.log_id.index, entry);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut disk = self.disk()?;
        let _removed = disk.logs.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut disk = self.disk()?;
        disk.last_purged = Some(log_id);
        let kept = disk.logs.split_off(&(log_id.index + 1));
        disk.logs = kept;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{blank_ent, log_id};

    /// Seed 3358's read: entries 44..=69 held, purged up to 68, then a replication read of `[44, 70)`.
    #[tokio::test]
    async fn a_replication_read_of_a_purged_start_returns_nothing() {
        let mut store = MemLogStore::default();
        {
            let mut disk = store.disk().expect("disk");
            for index in 44..70 {
                disk.logs.insert(index, blank_ent::<TypeConfig>(1, 1, index));
            }
        }
        let read = |entries: Vec<Entry>| entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        assert_eq!(read(store.limited_get_log_entries(44, 70).await.expect("read")), (44..70).collect::<Vec<_>>());

        store.purge(log_id(1, 1, 68)).await.expect("purge");
        assert!(store.limited_get_log_entries(44, 70).await.expect("read").is_empty());
        assert_eq!(read(store.limited_get_log_entries(69, 70).await.expect("read")), vec![69]);
        assert!(store.limited_get_log_entries(70, 70).await.expect("read").is_empty());
        // openraft's own contract for the general read is unchanged: missing entries are skipped.
        assert_eq!(read(store.try_get_log_entries(44..70).await.expect("read")), vec![69]);
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 68)));
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 69)));
    }

    #[test]
    fn a_run_stops_at_the_first_gap() {
        let entries = [3, 4, 6].map(|i| blank_ent::<TypeConfig>(1, 1, i));
        let indexes = |v: Vec<Entry>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        assert_eq!(indexes(contiguous_from(3, 10, entries.clone())), vec![3, 4]);
        assert_eq!(indexes(contiguous_from(3, 4, entries.clone())), vec![3]);
        assert!(contiguous_from(2, 10, entries).is_empty());
    }
}
