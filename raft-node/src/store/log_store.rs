//! The Raft log on RocksDB: entries keyed by big-endian index, plus the vote, the committed id and the
//! last purged id in a metadata family.

use super::contiguous_from;
use super::rocks::{blocking, CF_LOGS, CF_META};
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

/// The log store; cheap to clone (the reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

fn io_read(e: impl ToString) -> StorageError {
    StorageIOError::read_logs(&std::io::Error::other(e.to_string())).into()
}
fn io_write(e: impl ToString) -> StorageError {
    StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into()
}

impl LogStore {
    /// Wraps an open database.
    pub fn new(db: Arc<DB>) -> Self {
        Self { db }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(db: &DB, key: &[u8]) -> Result<Option<T>, String> {
        let cf = db.cf_handle(CF_META).ok_or("missing meta column family")?;
        match db.get_cf(&cf, key).map_err(|e| e.to_string())? {
            Some(bytes) => bincode::deserialize(&bytes).map(Some).map_err(|e| format!("corrupt {key:?}: {e}")),
            None => Ok(None),
        }
    }

    async fn put_meta<T: serde::Serialize>(&self, key: &'static [u8], value: &T) -> Result<(), String> {
        let bytes = bincode::serialize(value).map_err(|e| e.to_string())?;
        let db = self.db.clone();
        blocking(move || {
            let cf = db.cf_handle(CF_META).ok_or("missing meta column family")?;
            db.put_cf_opt(&cf, key, bytes, &synced()).map_err(|e| e.to_string())
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        self.read_from(start, end, false).await
    }

    /// The replication read: only the run starting exactly at `start` ([`super::contiguous_from`]).
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.read_from(start, Some(end), true).await
    }
}

impl LogStore {
    /// Entries from `start` up to `end` (exclusive, `None` for all); with `contiguous`, only the run that
    /// begins exactly at `start` (the iterator stops at the first missing index).
    async fn read_from(&self, start: u64, end: Option<u64>, contiguous: bool) -> Result<Vec<Entry>, StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let cf = db.cf_handle(CF_LOGS).ok_or("missing logs column family")?;
            let key = index_key(start);
            let mut entries = Vec::new();
            for item in db.iterator_cf(&cf, IteratorMode::From(&key, Direction::Forward)) {
                let (key, value) = item.map_err(|e| e.to_string())?;
                let index = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| "bad log key")?);
                if end.is_some_and(|end| index >= end) || (contiguous && index != start + entries.len() as u64) {
                    break;
                }
                entries.push(bincode::deserialize::<Entry>(&value).map_err(|e| format!("corrupt entry {index}: {e}"))?);
            }
            Ok(if contiguous { contiguous_from(start, end.unwrap_or(u64::MAX), entries) } else { entries })
        })
        .await
        .map_err(io_read)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let cf = db.cf_handle(CF_LOGS).ok_or("missing logs column family")?;
            let last = match db.iterator_cf(&cf, IteratorMode::End).next() {
                Some(item) => {
                    let (_, value) = item.map_err(|e| e.to_string())?;
                    Some(bincode::deserialize::<Entry>(&value).map_err(|e| e.to_string())?.log_id)
                }
                None => None,
            };
            let last_purged_log_id = Self::get_meta::<Option<LogId>>(&db, KEY_PURGED)?.flatten();
            let last_log_id = last.or(last_purged_log_id);
            Ok(LogState { last_purged_log_id, last_log_id })
        })
        .await
        .map_err(io_read)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote).await.map_err(|e| StorageIOError::write_vote(&std::io::Error::other(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        let db = self.db.clone();
        blocking(move || Self::get_meta(&db, KEY_VOTE))
            .await
            .map_err(|e| StorageIOError::read_vote(&std::io::Error::other(e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(KEY_COMMITTED, &committed).await.map_err(io_write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let db = self.db.clone();
        blocking(move || Self::get_meta::<Option<LogId>>(&db, KEY_COMMITTED).map(Option::flatten))
            .await
            .map_err(io_read)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = Vec::new();
        for entry in entries {
            let bytes = bincode::serialize(&entry).map_err(io_write)?;
            batch.push((entry.log_id.index, bytes));
        }
        let db = self.db.clone();
        // The entries are durable only once the synced write returns; only then is openraft told.
        let result = blocking(move || {
            let cf = db.cf_handle(CF_LOGS).ok_or("missing logs column family")?;
            let mut wb = WriteBatch::default();
            for (index, bytes) in batch {
                wb.put_cf(&cf, index_key(index), bytes);
            }
            db.write_opt(wb, &synced()).map_err(|e| e.to_string())
        })
        .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.clone())));
                Err(io_write(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let cf = db.cf_handle(CF_LOGS).ok_or("missing logs column family")?;
            let mut wb = WriteBatch::default();
            wb.delete_range_cf(&cf, index_key(log_id.index), index_key(u64::MAX));
            // delete_range's end is exclusive; u64::MAX is never a real index.
            db.write_opt(wb, &synced()).map_err(|e| e.to_string())
        })
        .await
        .map_err(io_write)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = bincode::serialize(&Some(log_id)).map_err(io_write)?;
        let db = self.db.clone();
        blocking(move || {
            let logs = db.cf_handle(CF_LOGS).ok_or("missing logs column family")?;
            let meta = db.cf_handle(CF_META).ok_or("missing meta column family")?;
            // Record the purge point first (in the same batch), so a crash never leaves a gap unexplained.
            let mut wb = WriteBatch::default();
            wb.put_cf(&meta, KEY_PURGED, bytes);
            wb.delete_range_cf(&logs, index_key(0), index_key(log_id.index.saturating_add(1)));
            db.write_opt(wb, &synced()).map_err(|e| e.to_string())
        })
        .await
        .map_err(io_write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{blank_ent, log_id};

    /// Seed 3358's read: entries 44..=69 written, purged up to 68, then a replication read of `[44, 70)`.
    #[tokio::test]
    async fn a_replication_read_of_a_purged_start_returns_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = super::super::open_db(dir.path()).expect("open db");
        {
            let cf = db.cf_handle(CF_LOGS).expect("logs family");
            for index in 44..70 {
                let entry: Entry = blank_ent::<TypeConfig>(1, 1, index);
                db.put_cf(&cf, index_key(index), bincode::serialize(&entry).expect("encode")).expect("put");
            }
        }
        let mut store = LogStore::new(db);
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
        drop(store);
        dir.close().expect("remove temp dir");
    }
}
