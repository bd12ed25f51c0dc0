//! Checking a store against a manifest and copying an artifact between stores, verified and resumable.

use super::{BlobError, Store};
use cascade_core::{Digest, Manifest};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutPayload};
use std::collections::BTreeMap;

/// How hard a check looks at a chunk that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// Compare the object's size with the manifest's: one metadata request per chunk.
    Size,
    /// Read the chunk and compare its BLAKE3 with the manifest's: catches same-size corruption, costs a full
    /// read of the artifact.
    #[default]
    Hash,
}

/// What a check of one store found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkCheck {
    /// Distinct chunks in the manifest.
    pub chunks_total: u64,
    /// Distinct chunks present and correct.
    pub chunks_ok: u64,
    /// Chunk indexes whose object is missing.
    pub missing: Vec<u64>,
    /// Chunk indexes whose object has the wrong size or hash.
    pub corrupt: Vec<u64>,
    /// The manifest object is present and equal to the expected one.
    pub manifest_ok: bool,
}

impl ChunkCheck {
    /// Everything present and correct.
    pub fn complete(&self) -> bool {
        self.manifest_ok && self.chunks_ok == self.chunks_total
    }
}

/// What one replication did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaReport {
    /// Chunks copied now.
    pub copied: u64,
    /// Chunks already there and correct.
    pub skipped: u64,
    /// Bytes copied now.
    pub bytes_copied: u64,
}

/// Reads and validates the manifest of `digest` from `store`; `None` if it is not there.
pub async fn read_manifest(store: &Store, digest: &Digest) -> Result<Option<Manifest>, BlobError> {
    let key = Key::from(Manifest::key(digest));
    let bytes = match store.get(&key).await {
        Ok(result) => result.bytes().await.map_err(|e| BlobError::store(&key, e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(BlobError::store(&key, e)),
    };
    let manifest =
        Manifest::from_json(&bytes).map_err(|source| BlobError::Manifest { key: key.to_string(), source })?;
    if &manifest.digest != digest {
        return Err(BlobError::Config(format!("{key} describes artifact {}, not {digest}", manifest.digest)));
    }
    Ok(Some(manifest))
}

/// The distinct chunks of a manifest, each with the first index that uses it.
fn distinct_chunks(manifest: &Manifest) -> BTreeMap<&Digest, u64> {
    let mut distinct = BTreeMap::new();
    for (index, hash) in manifest.chunks.iter().enumerate() {
        distinct.entry(hash).or_insert(index as u64);
    }
    distinct
}

/// Whether the chunk at `index` is in `store` and correct.
async fn chunk_state(
    store: &Store,
    manifest: &Manifest,
    index: u64,
    mode: VerifyMode,
) -> Result<ChunkState, BlobError> {
    let hash = manifest.chunk_hash(index).map_err(|source| BlobError::Manifest { key: "manifest".into(), source })?;
    let key = Key::from(Manifest::chunk_key(hash));
    let expected_len =
        manifest.chunk_len(index).map_err(|source| BlobError::Manifest { key: key.to_string(), source })?;
    match mode {
        VerifyMode::Size => match store.head(&key).await {
            Ok(meta) if meta.size == expected_len => Ok(ChunkState::Ok),
            Ok(_) => Ok(ChunkState::Corrupt),
            Err(object_store::Error::NotFound { .. }) => Ok(ChunkState::Missing),
            Err(e) => Err(BlobError::store(&key, e)),
        },
        VerifyMode::Hash => {
            let bytes = match store.get(&key).await {
                Ok(result) => result.bytes().await.map_err(|e| BlobError::store(&key, e))?,
                Err(object_store::Error::NotFound { .. }) => return Ok(ChunkState::Missing),
                Err(e) => return Err(BlobError::store(&key, e)),
            };
            let verdict = tokio::task::spawn_blocking({
                let manifest_hash = hash.clone();
                move || {
                    cascade_core::manifest::hash_bytes(&bytes) == manifest_hash && bytes.len() as u64 == expected_len
                }
            })
            .await
            .map_err(|e| BlobError::Config(format!("hashing task failed: {e}")))?;
            Ok(if verdict { ChunkState::Ok } else { ChunkState::Corrupt })
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Ok,
    Missing,
    Corrupt,
}

/// Checks `store` for the manifest and every chunk of `manifest`, with `concurrency` requests in flight.
pub async fn check_chunks(
    store: &Store,
    manifest: &Manifest,
    mode: VerifyMode,
    concurrency: usize,
) -> Result<ChunkCheck, BlobError> {
    let distinct = distinct_chunks(manifest);
    let states: Vec<(u64, ChunkState)> = futures::stream::iter(distinct.values().copied())
        .map(|index| async move { chunk_state(store, manifest, index, mode).await.map(|s| (index, s)) })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let mut check = ChunkCheck { chunks_total: distinct.len() as u64, ..ChunkCheck::default() };
    for (index, state) in states {
        match state {
            ChunkState::Ok => check.chunks_ok += 1,
            ChunkState::Missing => check.missing.push(index),
            ChunkState::Corrupt => check.corrupt.push(index),
        }
    }
    check.missing.sort_unstable();
    check.corrupt.sort_unstable();
    check.manifest_ok = read_manifest(store, &manifest.digest).await?.as_ref() == Some(manifest);
    Ok(check)
}

/// Copies the artifact of `manifest` from `source` into `target`: every chunk that is missing or wrong in the
/// target is read from the source, verified against the manifest, and written; the manifest goes last.
///
/// Resumable by construction: a second run skips what the first finished. A chunk that is corrupt in the
/// source is an error (the copy would spread it), never written.
pub async fn replicate(
    source: &Store,
    target: &Store,
    manifest: &Manifest,
    mode: VerifyMode,
    concurrency: usize,
) -> Result<ReplicaReport, BlobError> {
    let distinct = distinct_chunks(manifest);
    let copied: Vec<Option<u64>> = futures::stream::iter(distinct.values().copied())
        .map(|index| async move {
            if chunk_state(target, manifest, index, mode).await? == ChunkState::Ok {
                return Ok::<_, BlobError>(None);
            }
            let hash =
                manifest.chunk_hash(index).map_err(|source| BlobError::Manifest { key: "manifest".into(), source })?;
            let key = Key::from(Manifest::chunk_key(hash));
            let bytes = source
                .get(&key)
                .await
                .map_err(|e| BlobError::store(&key, e))?
                .bytes()
                .await
                .map_err(|e| BlobError::store(&key, e))?;
            let verified = tokio::task::spawn_blocking({
                let manifest = manifest.clone();
                let bytes = bytes.clone();
                move || manifest.verify_chunk(index, &bytes)
            })
            .await
            .map_err(|e| BlobError::Config(format!("hashing task failed: {e}")))?;
            verified.map_err(|source| BlobError::Manifest { key: format!("source {key}"), source })?;
            let len = bytes.len() as u64;
            target.put(&key, PutPayload::from_bytes(bytes)).await.map_err(|e| BlobError::store(&key, e))?;
            Ok(Some(len))
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let mut report = ReplicaReport::default();
    for outcome in copied {
        match outcome {
            Some(len) => {
                report.copied += 1;
                report.bytes_copied += len;
            }
            None => report.skipped += 1,
        }
    }
    let key = Key::from(Manifest::key(&manifest.digest));
    target.put(&key, PutPayload::from(manifest.to_json())).await.map_err(|e| BlobError::store(&key, e))?;
    Ok(report)
}
