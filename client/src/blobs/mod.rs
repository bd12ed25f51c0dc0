//! Cascade's blob stores: where artifacts (chunks + manifest) and build logs live.
//!
//! The worker uploads into the `main` store, the node's replicator copies from `main` into one store per
//! region, and the region managers read their region's store. All of them go through `object_store`, so a
//! laptop uses directories and production any S3-compatible service, with the same code.
//!
//! This lives in `cascade-client` because the worker and the region agents must not link the node; the node
//! uses it too.

mod config;
mod copy;
mod upload;

pub use config::{open_store, StoreConfig, StoresConfig};
pub use copy::{check_chunks, read_manifest, replicate, ChunkCheck, ReplicaReport, VerifyMode};
pub use upload::{upload_file, upload_file_multipart, UploadOptions};

use cascade_core::ManifestError;
use object_store::ObjectStore;
use std::sync::Arc;

/// A blob store as every part of Cascade holds it.
pub type Store = Arc<dyn ObjectStore>;

/// Why a blob operation failed. The message names the store's key so an operator can look at it.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The store refused or could not be reached.
    #[error("blob store error at {key}: {source}")]
    Store {
        /// The object key.
        key: String,
        /// What the store said.
        #[source]
        source: object_store::Error,
    },
    /// The store configuration cannot be used.
    #[error("blob store configuration: {0}")]
    Config(String),
    /// A local file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// What the store holds does not match the manifest.
    #[error("{key}: {source}")]
    Manifest {
        /// The object key.
        key: String,
        /// The mismatch.
        #[source]
        source: ManifestError,
    },
    /// The source store has no manifest for this artifact.
    #[error("no manifest at {0}: the artifact was never uploaded to this store, or was deleted")]
    NoManifest(String),
}

impl BlobError {
    pub(crate) fn store(key: &object_store::path::Path, source: object_store::Error) -> Self {
        Self::Store { key: key.to_string(), source }
    }
}
