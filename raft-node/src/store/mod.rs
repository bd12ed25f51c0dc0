//! Durable storage: one RocksDB database per node, holding the Raft log and the state machine's snapshots.
//!
//! Every RocksDB call runs on a blocking thread (`spawn_blocking`), never inside the async runtime, and an
//! append is acknowledged to openraft only after its write batch was synced to disk.

mod log_store;
mod memory;
mod state_machine;

pub use log_store::LogStore;
pub use memory::MemLogStore;
pub use state_machine::{MemSnapshots, RocksSnapshots, SharedState, SnapshotStore, StateMachineStore, StateView};

use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use std::path::Path;
use std::sync::Arc;

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_SNAPSHOT: &str = "snapshot";

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
