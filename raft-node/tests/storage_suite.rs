//! openraft's own storage conformance suite, run against the RocksDB log store and state machine.

#[cfg(feature = "rocksdb")]
use cascade_raft_node::store::{open_db, LogStore, RocksSnapshots};
use cascade_raft_node::store::{MemLogStore, MemSnapshots, StateMachineStore};
use cascade_raft_node::types::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageIOError;

/// Builds a fresh store in a temporary directory; the directory lives as long as the store.
#[cfg(feature = "rocksdb")]
struct RocksBuilder;

#[cfg(feature = "rocksdb")]
impl StoreBuilder<TypeConfig, LogStore, StateMachineStore<RocksSnapshots>, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore<RocksSnapshots>), StorageError> {
        let io = |e: String| StorageError::from(StorageIOError::write(&std::io::Error::other(e)));
        let dir = tempfile::tempdir().map_err(|e| io(e.to_string()))?;
        let db = open_db(dir.path()).map_err(|e| io(e.to_string()))?;
        let sm = StateMachineStore::open(db.clone()).await.map_err(io)?;
        Ok((dir, LogStore::new(db), sm))
    }
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_store_passes_openraft_suite() {
    if let Err(e) = Suite::test_all(RocksBuilder) {
        panic!("RocksDB store breaks openraft's storage contract: {e}");
    }
}

/// The simulation's in-memory stores must honour the same contract.
struct MemBuilder;

impl StoreBuilder<TypeConfig, MemLogStore, StateMachineStore<MemSnapshots>, ()> for MemBuilder {
    async fn build(&self) -> Result<((), MemLogStore, StateMachineStore<MemSnapshots>), StorageError> {
        let io = |e: String| StorageError::from(StorageIOError::write(&std::io::Error::other(e)));
        let sm = StateMachineStore::open_with(MemSnapshots::default()).await.map_err(io)?;
        Ok(((), MemLogStore::default(), sm))
    }
}

#[test]
fn memory_store_passes_openraft_suite() {
    if let Err(e) = Suite::test_all(MemBuilder) {
        panic!("in-memory store breaks openraft's storage contract: {e}");
    }
}
