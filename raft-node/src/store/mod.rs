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
