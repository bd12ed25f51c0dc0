//! The state machine: [`cascade_core::State`] in memory, made durable by snapshots in a [`SnapshotStore`]
//! (RocksDB in production, `store::rocks`; memory in the simulation, [`MemSnapshots`]).
//!
//! Durability comes from the log: after a restart the node loads its last snapshot and openraft re-applies
//! the committed entries after it (openraft purges the log only up to a snapshot that is already synced).
//! Readers (the API) share the state through [`SharedState`] and never wait on Raft.

use crate::types::{Applied, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use cascade_core::State;
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The applied state with the position it was applied to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateView {
    /// The domain state.
    pub state: State,
    /// Last log id applied to it.
    pub last_applied: Option<LogId>,
    /// Membership as of `last_applied`.
    pub membership: StoredMembership,
    /// Log index of the last accepted change to a desired version; long polls of `/api/v1/desired` wait
    /// on it, so agents wake for deploys, not for every heartbeat.
    pub desired_changed_at: u64,
}

impl StateView {
    /// Index of the last applied entry, 0 before any.
    pub fn applied_index(&self) -> u64 {
        self.last_applied.map_or(0, |id| id.index)
    }
}

/// The applied state, shared between the state machine (writer) and the API (readers).
pub type SharedState = Arc<RwLock<StateView>>;

/// A snapshot as persisted: its metadata and the serialized [`StateView`].
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Where the current snapshot is kept durably. `load` and `save` may block; callers run them through
/// `offload`, which the RocksDB store sends to the blocking pool and the in-memory store runs inline (so the
/// simulation stays on one thread and deterministic).
pub trait SnapshotStore: Clone + Send + Sync + 'static {
    /// The current snapshot's bytes, if any.
    fn load(&self) -> Result<Option<Vec<u8>>, String>;
    /// Replaces the current snapshot; durable when it returns.
    fn save(&self, bytes: &[u8]) -> Result<(), String>;
    /// Runs blocking work (I/O, serializing a large state) where it cannot stall the async runtime.
    fn offload<T, F>(&self, work: F) -> impl Future<Output = Result<T, String>> + Send
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, String> + Send + 'static;
}

/// Snapshots in memory, for the simulation: clone it to keep the "disk" across a simulated restart.
#[derive(Clone, Default)]
pub struct MemSnapshots {
    slot: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

impl SnapshotStore for MemSnapshots {
    fn load(&self) -> Result<Option<Vec<u8>>, String> {
        Ok(self.slot.lock().map_err(|e| e.to_string())?.clone())
    }

    fn save(&self, bytes: &[u8]) -> Result<(), String> {
        *self.slot.lock().map_err(|e| e.to_string())? = Some(bytes.to_vec());
        Ok(())
    }

    fn offload<T, F>(&self, work: F) -> impl Future<Output = Result<T, String>> + Send
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, String> + Send + 'static,
    {
        std::future::ready(work())
    }
}

/// openraft's state machine over the shared state and a snapshot store.
pub struct StateMachineStore<S: SnapshotStore> {
    store: S,
    shared: SharedState,
    snapshot_seq: Arc<AtomicU64>,
    persisted: Persisted,
}

fn sm_err(e: impl ToString) -> StorageError {
    StorageIOError::read_state_machine(&std::io::Error::other(e.to_string())).into()
}
fn snap_err(e: impl ToString) -> StorageError {
    StorageIOError::write_snapshot(None, &std::io::Error::other(e.to_string())).into()
}

fn read_stored<S: SnapshotStore>(store: &S) -> Result<Option<StoredSnapshot>, String> {
    match store.load()? {
        Some(bytes) => bincode::deserialize(&bytes).map(Some).map_err(|e| format!("corrupt snapshot: {e}")),
        None => Ok(None),
    }
}

/// The last log id covered by the persisted snapshot; its lock serializes snapshot writes.
type Persisted = Arc<std::sync::Mutex<Option<LogId>>>;

/// Persists `stored` unless (for a built snapshot) a newer one is already persisted: openraft builds
/// snapshots in a background task, so a slow build may finish after a newer snapshot was installed, and the
/// log behind that newer snapshot may already be purged.
fn write_stored<S: SnapshotStore>(
    store: &S,
    stored: &StoredSnapshot,
    persisted: &Persisted,
    only_if_newer: bool,
) -> Result<(), String> {
    let mut last = persisted.lock().map_err(|e| e.to_string())?;
    if only_if_newer && *last > stored.meta.last_log_id {
        return Ok(());
    }
    let bytes = bincode::serialize(stored).map_err(|e| e.to_string())?;
    store.save(&bytes)?;
    *last = stored.meta.last_log_id;
    Ok(())
}

impl<S: SnapshotStore> StateMachineStore<S> {
    /// Opens the state machine on `store`, restoring the last persisted snapshot if there is one.
    pub async fn open_with(store: S) -> Result<Self, String> {
        let from = store.clone();
        let restored = store
            .offload(move || {
                let Some(stored) = read_stored(&from)? else {
                    return Ok(StateView::default());
                };
                let view: StateView =
                    bincode::deserialize(&stored.data).map_err(|e| format!("corrupt snapshot data: {e}"))?;
                view.state.indexes_consistent().map_err(|e| format!("snapshot state inconsistent: {e}"))?;
                Ok(view)
            })
            .await?;
        let persisted = Arc::new(std::sync::Mutex::new(restored.last_applied));
        Ok(Self {
            store,
            shared: Arc::new(RwLock::new(restored)),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            persisted,
        })
    }

    /// The shared applied state, for readers.
    pub fn shared(&self) -> SharedState {
        self.shared.clone()
    }

    fn builder(&self) -> SnapshotBuilder<S> {
        SnapshotBuilder {
            store: self.store.clone(),
            shared: self.shared.clone(),
            seq: self.snapshot_seq.clone(),
            persisted: self.persisted.clone(),
        }
    }
}

/// Builds snapshots from a copy of the shared state, off the apply path.
pub struct SnapshotBuilder<S: SnapshotStore> {
    store: S,
    shared: SharedState,
    seq: Arc<AtomicU64>,
    persisted: Persisted,
}

impl<S: SnapshotStore> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<S> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Copy under the lock, serialize and write without it, so applies are held up only for the copy.
        let view = self.shared.read().map_err(snap_err)?.clone();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let store = self.store.clone();
        let persisted = self.persisted.clone();
        let stored = self
            .store
            .offload(move || {
                let data = bincode::serialize(&view).map_err(|e| e.to_string())?;
                let snapshot_id = match view.last_applied {
                    Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
                    None => format!("empty-{seq}"),
                };
                let meta = SnapshotMeta {
                    last_log_id: view.last_applied,
                    last_membership: view.membership.clone(),
                    snapshot_id,
                };
                let stored = StoredSnapshot { meta, data };
                write_stored(&store, &stored, &persisted, true)?;
                Ok(stored)
            })
            .await
            .map_err(snap_err)?;
        Ok(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl<S: SnapshotStore> RaftStateMachine<TypeConfig> for StateMachineStore<S> {
    type SnapshotBuilder = SnapshotBuilder<S>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let view = self.shared.read().map_err(sm_err)?;
        Ok((view.last_applied, view.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut view = self.shared.write().map_err(sm_err)?;
        let mut results = Vec::new();
        for entry in entries {
            view.last_applied = Some(entry.log_id);
            let applied = match entry.payload {
                EntryPayload::Blank => Applied(None),
                EntryPayload::Normal(request) => {
                    let result = view.state.apply(&request);
                    if request.command.changes_desired() && result.is_ok() {
                        view.desired_changed_at = entry.log_id.index;
                    }
                    Applied(Some(result))
                }
                EntryPayload::Membership(membership) => {
                    view.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Applied(None)
                }
            };
            results.push(applied);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.builder()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let view: StateView = bincode::deserialize(&data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::other(e.to_string()),
            ))
        })?;
        if let Err(e) = view.state.indexes_consistent() {
            return Err(snap_err(format!("received snapshot is inconsistent: {e}")));
        }
        let stored = StoredSnapshot { meta: meta.clone(), data };
        let store = self.store.clone();
        // Persist first: if the node dies now, it restarts from the installed snapshot, not from a gap.
        let persisted = self.persisted.clone();
        self.store.offload(move || write_stored(&store, &stored, &persisted, false)).await.map_err(snap_err)?;
        let mut shared = self.shared.write().map_err(sm_err)?;
        *shared = StateView {
            state: view.state,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            desired_changed_at: view.desired_changed_at,
        };
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let store = self.store.clone();
        let stored = self.store.offload(move || read_stored(&store)).await.map_err(sm_err)?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
