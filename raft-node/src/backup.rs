//! Backup and restore of a node's applied state, in the manner of etcd's `snapshot save` / `restore`.
//!
//! **Save** (`GET /api/v1/admin/backup`, admin only): the node first waits for a linearizable read barrier
//! (the leader's read index, applied locally), so the copy holds every write committed before the request;
//! then it copies its [`StateView`] (domain state, last applied log id, membership) and answers it in the
//! backup format below.
//!
//! **Restore** ([`restore`], offline, `cascade node restore`): into an empty data dir, after checking the
//! magic, the format version and the BLAKE3 checksum. It seeds the node's store as if the node had installed
//! a snapshot at the backup's last applied log id `L`, with the membership replaced by the voters of the new
//! node's config (like etcd's restore, it makes a new cluster):
//! - the state machine's snapshot (data and meta) is at `L`, with membership `{config.id} ∪ peers` logged at
//!   `L` (so it is committed and effective on start);
//! - the log is empty and purged up to `L`, the committed id is `L`;
//! - the vote is `(term of L, this node)`, not committed: the node starts as a follower and its first
//!   election is at a term above `L`'s, so every new entry's log id is greater than `L`.
//!
//! The new node elects itself (or one of its restored peers) after an election timeout; `cascade cluster
//! init` is neither needed nor allowed (openraft refuses to initialize a node that has state).
//!
//! File format (version 1): `MAGIC` (8 bytes), the format version (u32 little-endian), the body's length
//! (u64 LE), the body ([`BackupBody`], bincode), then the BLAKE3 of everything before it as 64 hex characters.

use crate::api::{ApiError, AppState, Caller};
use crate::node::ReadConsistency;
use crate::store::StateView;
use crate::types::NodeId;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cascade_core::api::{Role, APPLIED_INDEX_HEADER};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// First bytes of every backup file, so a wrong file is named as such rather than as "corrupt".
pub const MAGIC: &[u8; 8] = b"CSCDBKUP";
/// The format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8;
const CHECKSUM_LEN: usize = 64;

/// What a backup holds besides its framing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupBody {
    /// The node that wrote it.
    pub source_node: NodeId,
    /// When it was written, milliseconds since the Unix epoch (the source node's clock; informational).
    pub created_unix_ms: u64,
    /// The applied state: domain state, last applied log id, membership of the source cluster.
    pub view: StateView,
}

/// A verified backup's summary, for the CLI to print.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupInfo {
    /// Format version of the file.
    pub format_version: u32,
    /// Size of the file in bytes.
    pub size: u64,
    /// The node that wrote it.
    pub source_node: NodeId,
    /// When it was written (ms since the Unix epoch).
    pub created_unix_ms: u64,
    /// Last log index applied to the state it holds.
    pub applied_index: u64,
    /// Term of that entry.
    pub applied_term: u64,
    /// Builds in the state.
    pub builds: u64,
    /// Voters of the source cluster.
    pub source_voters: Vec<NodeId>,
    /// BLAKE3 of the file's contents (without the checksum itself).
    pub checksum: String,
}

/// Why a backup could not be read or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file does not start with the backup magic.
    #[error("not a Cascade backup (it does not start with the backup header); check the file name")]
    NotABackup,
    /// A format this build does not read.
    #[error("backup format version {found} is not supported (this cascade reads version {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// The file's version.
        found: u32,
    },
    /// The file is shorter or longer than its header says.
    #[error("backup is truncated or has trailing bytes: {0}")]
    Length(String),
    /// The checksum does not match the contents.
    #[error(
        "backup checksum mismatch: the file is corrupted (BLAKE3 {actual}, recorded {recorded}); nothing was written"
    )]
    Checksum {
        /// What the file says.
        recorded: String,
        /// What its contents hash to.
        actual: String,
    },
    /// The body does not decode or its state is inconsistent.
    #[error("backup contents are invalid: {0}")]
    Invalid(String),
    /// The target data dir already holds something.
    #[error(
        "data dir {0} is not empty; restore only into a new, empty data dir (a restore never overwrites a node's data)"
    )]
    NotEmpty(PathBuf),
    /// The config is not one a restore can start from.
    #[error("cannot restore with this config: {0}")]
    Config(String),
    /// Reading or writing files failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Seeding the store failed.
    #[error("cannot seed the node's store: {0}")]
    Storage(String),
}

/// Encodes a backup of `view` written by `source_node`.
pub fn encode(view: &StateView, source_node: NodeId, created_unix_ms: u64) -> Result<Vec<u8>, BackupError> {
    let body = BackupBody { source_node, created_unix_ms, view: view.clone() };
    encode_body(&body)
}

fn encode_body(body: &BackupBody) -> Result<Vec<u8>, BackupError> {
    let encoded = bincode::serialize(body).map_err(|e| BackupError::Invalid(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + encoded.len() + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(encoded.len() as u64).to_le_bytes());
    out.extend_from_slice(&encoded);
    let checksum = cascade_core::manifest::hash_bytes(&out);
    out.extend_from_slice(checksum.as_str().as_bytes());
    Ok(out)
}

/// Checks the framing, version and checksum of `bytes` and decodes them; nothing is trusted before that.
pub fn decode(bytes: &[u8]) -> Result<(BackupBody, BackupInfo), BackupError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotABackup);
    }
    if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(BackupError::Length(format!("{} bytes is shorter than any backup", bytes.len())));
    }
    let word = |range: std::ops::Range<usize>| bytes[range].iter().rev().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    let version = word(8..12) as u32;
    if version != FORMAT_VERSION {
        return Err(BackupError::UnsupportedVersion { found: version });
    }
    let body_len = word(12..20);
    let expected = (HEADER_LEN as u64).checked_add(body_len).and_then(|n| n.checked_add(CHECKSUM_LEN as u64));
    if expected != Some(bytes.len() as u64) {
        return Err(BackupError::Length(format!(
            "the header announces a {body_len}-byte body, the file has {} bytes",
            bytes.len()
        )));
    }
    let (content, recorded) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    let actual = cascade_core::manifest::hash_bytes(content);
    let recorded = String::from_utf8_lossy(recorded).into_owned();
    if actual.as_str() != recorded {
        return Err(BackupError::Checksum { recorded, actual: actual.as_str().to_string() });
    }
    let body: BackupBody =
        bincode::deserialize(&content[HEADER_LEN..]).map_err(|e| BackupError::Invalid(e.to_string()))?;
    body.view.state.indexes_consistent().map_err(|e| BackupError::Invalid(format!("state inconsistent: {e}")))?;
    let last = body.view.last_applied.ok_or_else(|| {
        BackupError::Invalid("the backup holds no applied entry (taken from an uninitialized node?)".into())
    })?;
    let info = BackupInfo {
        format_version: version,
        size: bytes.len() as u64,
        source_node: body.source_node,
        created_unix_ms: body.created_unix_ms,
        applied_index: last.index,
        applied_term: last.leader_id.term,
        builds: body.view.state.jobs.len() as u64,
        source_voters: body.view.membership.membership().voter_ids().collect(),
        checksum: actual.as_str().to_string(),
    };
    Ok((body, info))
}

/// `GET /api/v1/admin/backup`: a consistent backup of the applied state (admin only).
pub async fn handler(State(app): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let node = app.node.clone();
    // Everything committed before the request is applied here before the copy is taken.
    node.read_barrier(ReadConsistency::Linearizable).await?;
    let view = node.read(|v| v.clone());
    let applied = view.applied_index();
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let id = node.id;
    let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e);
    let bytes = tokio::task::spawn_blocking(move || encode(&view, id, created as u64))
        .await
        .map_err(|e| internal(format!("backup task failed: {e}")))?
        .map_err(|e| internal(e.to_string()))?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(APPLIED_INDEX_HEADER, HeaderValue::from(applied));
    Ok(response)
}

/// What [`restore`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The backup's summary.
    pub backup: BackupInfo,
    /// The data dir written.
    pub data_dir: PathBuf,
    /// The voters of the restored cluster.
    pub voters: Vec<NodeId>,
}

/// The vote a restored node starts with: at the term of the backup's last entry, so its first election is
/// at a higher term and every new log id is greater than `last`.
#[cfg(feature = "rocksdb")]
fn seed_vote(last: crate::types::LogId, id: NodeId) -> openraft::Vote<NodeId> {
    openraft::Vote::new(last.leader_id.term, id)
}

/// Restores `bytes` into the empty data dir of `config`: see the module docs.
///
/// Verifies the backup before touching the disk, builds the database under `db.restoring` and renames it
/// to `db` only when complete, so an interrupted restore never leaves a `db` a node would start from.
#[cfg(feature = "rocksdb")]
pub async fn restore(config: &crate::NodeConfig, bytes: &[u8]) -> Result<RestoreReport, BackupError> {
    use crate::store::{open_db, LogStore, StateMachineStore};
    use crate::types::{NodeInfo, SnapshotMeta, StoredMembership};
    use openraft::storage::{RaftLogStorage, RaftStateMachine};
    use std::collections::{BTreeMap, BTreeSet};

    if config.role != crate::config::MemberRole::Voter {
        return Err(BackupError::Config("restore into a voter (role = \"voter\"); add learners afterwards".into()));
    }
    let dir = &config.data_dir;
    let io = |what: String| move |source| BackupError::Io { what, source };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::NotEmpty(dir.clone()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("cannot read data dir {}", dir.display()))(e)),
    }
    let (body, info) = decode(bytes)?;
    let last = body.view.last_applied.ok_or_else(|| BackupError::Invalid("no applied entry".into()))?;

    let mut nodes = BTreeMap::new();
    nodes.insert(config.id, NodeInfo { addr: config.advertised_addr(), region: config.region.clone() });
    for peer in &config.peers {
        nodes.insert(peer.id, NodeInfo { addr: peer.addr.clone(), region: peer.region.clone() });
    }
    let voters: BTreeSet<NodeId> = nodes.keys().copied().collect();
    let membership = StoredMembership::new(Some(last), openraft::Membership::new(vec![voters.clone()], nodes));
    let view = StateView { membership: membership.clone(), ..body.view };
    let data = bincode::serialize(&view).map_err(|e| BackupError::Invalid(e.to_string()))?;
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: membership,
        snapshot_id: format!("restored-{}-{}", last.leader_id, last.index),
    };

    std::fs::create_dir_all(dir).map_err(io(format!("cannot create data dir {}", dir.display())))?;
    let staging = dir.join("db.restoring");
    let db_dir = staging.clone();
    let db = tokio::task::spawn_blocking(move || open_db(&db_dir))
        .await
        .map_err(|e| BackupError::Storage(e.to_string()))?
        .map_err(|e| BackupError::Storage(format!("cannot create RocksDB in {}: {e}", staging.display())))?;
    let storage = |e: openraft::StorageError<NodeId>| BackupError::Storage(e.to_string());
    {
        let mut sm = StateMachineStore::open(db.clone()).await.map_err(BackupError::Storage)?;
        sm.install_snapshot(&meta, Box::new(std::io::Cursor::new(data))).await.map_err(storage)?;
        let mut log = LogStore::new(db.clone());
        log.save_vote(&seed_vote(last, config.id)).await.map_err(storage)?;
        log.purge(last).await.map_err(storage)?;
        log.save_committed(Some(last)).await.map_err(storage)?;
        db.flush().map_err(|e| BackupError::Storage(e.to_string()))?;
    }
    // Every handle is dropped here, so RocksDB is closed before its directory is renamed.
    drop(db);
    std::fs::rename(&staging, dir.join("db")).map_err(io(format!("cannot move {} into place", staging.display())))?;
    if let Ok(handle) = std::fs::File::open(dir) {
        // Make the rename durable; a failure here only risks redoing the restore after a power cut.
        let _ = handle.sync_all();
    }
    Ok(RestoreReport { backup: info, data_dir: dir.clone(), voters: voters.into_iter().collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let view = StateView { last_applied: Some(openraft::testing::log_id(3, 1, 42)), ..StateView::default() };
        encode(&view, 1, 7).expect("encode")
    }

    #[test]
    fn a_backup_round_trips_and_any_flipped_byte_is_refused() {
        let bytes = sample();
        let (body, info) = decode(&bytes).expect("decode");
        assert_eq!((info.applied_index, info.applied_term, info.source_node), (42, 3, 1));
        assert_eq!(body.created_unix_ms, 7);
        for at in [0, 9, 15, HEADER_LEN + 1, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad).is_err(), "flipped byte {at} accepted");
        }
        assert!(matches!(decode(&bytes[..bytes.len() - 1]), Err(BackupError::Length(_))));
        let mut bad = bytes.clone();
        bad[HEADER_LEN + 2] ^= 1;
        assert!(matches!(decode(&bad), Err(BackupError::Checksum { .. })));
        let mut future = bytes;
        future[8] = 2;
        assert!(matches!(decode(&future), Err(BackupError::UnsupportedVersion { found: 2 })));
    }
}
