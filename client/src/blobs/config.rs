//! Store configuration as it appears in the node's and the worker's TOML files.

use super::{BlobError, Store};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// One blob store.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// A directory on local disk (created if missing).
    Local {
        /// The directory.
        path: PathBuf,
    },
    /// An S3 bucket, on AWS or any S3-compatible server.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Endpoint URL for S3-compatible servers; AWS's own when absent.
        #[serde(default)]
        endpoint: Option<String>,
        /// Signing region.
        #[serde(default = "default_s3_region")]
        region: String,
        /// Access key id (from the environment's AWS_ACCESS_KEY_ID when absent).
        #[serde(default)]
        access_key_id: Option<String>,
        /// Secret key (from AWS_SECRET_ACCESS_KEY when absent). Never printed.
        #[serde(default)]
        secret_access_key: Option<String>,
        /// Allow a plain-HTTP endpoint (a test server on loopback).
        #[serde(default)]
        allow_http: bool,
    },
}

fn default_s3_region() -> String {
    "us-east-1".into()
}

// Hand-written so that a secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local { path } => write!(f, "local:{}", path.display()),
            Self::S3 { bucket, endpoint, region, .. } => {
                write!(f, "s3://{bucket} ({region}, {})", endpoint.as_deref().unwrap_or("aws"))
            }
        }
    }
}

/// The `main` store the workers upload to and one store per region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoresConfig {
    /// Where workers upload.
    pub main: StoreConfig,
    /// Region name → its store.
    #[serde(default)]
    pub regions: BTreeMap<String, StoreConfig>,
}

/// Opens a configured store.
pub fn open_store(config: &StoreConfig) -> Result<Store, BlobError> {
    match config {
        StoreConfig::Local { path } => {
            std::fs::create_dir_all(path)
                .map_err(|source| BlobError::Io { path: path.display().to_string(), source })?;
            let store = LocalFileSystem::new_with_prefix(path)
                .map_err(|e| BlobError::Config(format!("local store {}: {e}", path.display())))?;
            Ok(Arc::new(store))
        }
        StoreConfig::S3 { bucket, endpoint, region, access_key_id, secret_access_key, allow_http } => {
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket).with_region(region);
            if let Some(endpoint) = endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(key) = access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            let store = builder
                .with_allow_http(*allow_http)
                .build()
                .map_err(|e| BlobError::Config(format!("S3 bucket {bucket}: {e}")))?;
            Ok(Arc::new(store))
        }
    }
}
