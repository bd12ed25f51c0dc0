//! Uploading an artifact as chunks + manifest, and a log as one multipart object, without ever holding the
//! whole file in memory.

use super::{BlobError, Store};
use bytes::BytesMut;
use cascade_core::{Manifest, ManifestBuilder};
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use std::path::Path;
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

/// How an upload is cut and how many requests it keeps in flight.
#[derive(Debug, Clone, Copy)]
pub struct UploadOptions {
    /// Chunk size in bytes.
    pub chunk_size: u64,
    /// Chunk uploads in flight at once. Peak memory is about `(concurrency + 1) × chunk_size`.
    pub concurrency: usize,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self { chunk_size: cascade_core::manifest::DEFAULT_CHUNK_SIZE, concurrency: 4 }
    }
}

/// Uploads the file at `path` as chunks, then its manifest, and returns the manifest.
///
/// The manifest is written last: its presence in a store means every chunk is there. A chunk already in the
/// store with the right size (from an earlier attempt or another build) is not sent again.
pub async fn upload_file(store: &Store, path: &Path, options: UploadOptions) -> Result<Manifest, BlobError> {
    let io_error = |source| BlobError::Io { path: path.display().to_string(), source };
    let mut file = tokio::fs::File::open(path).await.map_err(io_error)?;
    let chunk_size =
        usize::try_from(options.chunk_size).map_err(|_| BlobError::Config("chunk size too large".into()))?;
    let concurrency = options.concurrency.max(1);
    let mut builder = ManifestBuilder::new(options.chunk_size)
        .map_err(|source| BlobError::Manifest { key: path.display().to_string(), source })?;
    let mut uploads: JoinSet<Result<(), BlobError>> = JoinSet::new();
    loop {
        let mut buffer = BytesMut::zeroed(chunk_size);
        let filled = read_full(&mut file, &mut buffer).await.map_err(io_error)?;
        if filled == 0 {
            break;
        }
        buffer.truncate(filled);
        let chunk = buffer.freeze();
        // Hashing 16 MiB takes milliseconds of CPU: keep it off the async threads.
        let hashed = chunk.clone();
        let (returned, hash) = tokio::task::spawn_blocking(move || {
            let hash = builder.push(&hashed);
            (builder, hash)
        })
        .await
        .map_err(|e| BlobError::Config(format!("hashing task failed: {e}")))?;
        builder = returned;
        let hash = hash.map_err(|source| BlobError::Manifest { key: path.display().to_string(), source })?;
        while uploads.len() >= concurrency {
            join_one(&mut uploads).await?;
        }
        let store = store.clone();
        uploads.spawn(async move {
            let key = Key::from(Manifest::chunk_key(&hash));
            if let Ok(meta) = store.head(&key).await {
                if meta.size == chunk.len() as u64 {
                    return Ok(());
                }
            }
            store.put(&key, PutPayload::from_bytes(chunk)).await.map_err(|e| BlobError::store(&key, e))?;
            Ok(())
        });
        if filled < chunk_size {
            break;
        }
    }
    while !uploads.is_empty() {
        join_one(&mut uploads).await?;
    }
    let manifest = builder.finish();
    let key = Key::from(Manifest::key(&manifest.digest));
    store.put(&key, PutPayload::from(manifest.to_json())).await.map_err(|e| BlobError::store(&key, e))?;
    Ok(manifest)
}

async fn join_one(uploads: &mut JoinSet<Result<(), BlobError>>) -> Result<(), BlobError> {
    match uploads.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(BlobError::Config(format!("upload task failed: {e}"))),
        None => Ok(()),
    }
}

/// Reads until `buffer` is full or the file ends; returns the bytes read.
async fn read_full(file: &mut tokio::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let n = file.read(&mut buffer[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Uploads a file of any size to one key as a multipart upload, streaming (used for build logs).
pub async fn upload_file_multipart(store: &Store, path: &Path, key: &str) -> Result<u64, BlobError> {
    let io_error = |source| BlobError::Io { path: path.display().to_string(), source };
    let key = Key::from(key);
    let mut file = tokio::fs::File::open(path).await.map_err(io_error)?;
    let upload = store.put_multipart(&key).await.map_err(|e| BlobError::store(&key, e))?;
    let mut writer = WriteMultipart::new(upload);
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer).await.map_err(io_error)?;
        if n == 0 {
            break;
        }
        writer.wait_for_capacity(4).await.map_err(|e| BlobError::store(&key, e))?;
        writer.write(&buffer[..n]);
        total += n as u64;
    }
    writer.finish().await.map_err(|e| BlobError::store(&key, e))?;
    Ok(total)
}
