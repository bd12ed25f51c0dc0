//! The RocksDB half of the storage (cargo feature `rocksdb`, on by default): opening the database, and
//! snapshots in its `snapshot` column family. The log lives in [`super::LogStore`].

use super::state_machine::{SnapshotStore, StateMachineStore};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteOptions, DB};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_SNAPSHOT: &str = "snapshot";
const KEY_CURRENT: &[u8] = b"current";

/// Opens (or creates) the node's database with the column families Cascade uses.
pub fn open_db(dir: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let cfs = [CF_LOGS, CF_META, CF_SNAPSHOT].map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?))
}

/// Runs a RocksDB closure on the blocking pool, turning a panicked or cancelled task into an error.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, String>
where
    F: FnOnce() -> Result<T, String> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| format!("storage task failed: {e}"))?
}

/// Snapshots in the node's RocksDB (column family `snapshot`, synced writes).
#[derive(Clone)]
pub struct RocksSnapshots {
    db: Arc<DB>,
}

impl RocksSnapshots {
    /// Wraps an open database.
    pub fn new(db: Arc<DB>) -> Self {
        Self { db }
    }
}

impl SnapshotStore for RocksSnapshots {
    fn load(&self) -> Result<Option<Vec<u8>>, String> {
        let cf = self.db.cf_handle(CF_SNAPSHOT).ok_or("missing snapshot column family")?;
        self.db.get_cf(&cf, KEY_CURRENT).map_err(|e| e.to_string())
    }

    fn save(&self, bytes: &[u8]) -> Result<(), String> {
        let cf = self.db.cf_handle(CF_SNAPSHOT).ok_or("missing snapshot column family")?;
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.put_cf_opt(&cf, KEY_CURRENT, bytes, &opts).map_err(|e| e.to_string())
    }

    fn offload<T, F>(&self, work: F) -> impl Future<Output = Result<T, String>> + Send
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, String> + Send + 'static,
    {
        blocking(work)
    }
}

impl StateMachineStore<RocksSnapshots> {
    /// Opens the state machine on the node's RocksDB, restoring its last snapshot.
    pub async fn open(db: Arc<DB>) -> Result<Self, String> {
        Self::open_with(RocksSnapshots::new(db)).await
    }
}
