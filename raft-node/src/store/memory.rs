//! An in-memory Raft log with the same contract as the RocksDB one, for the deterministic simulation.
//!
//! Cloning the store shares its contents: the simulation keeps one clone as a host's "disk" and hands a
//! fresh clone to each incarnation of the node, so a simulated crash keeps exactly what was appended.

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
