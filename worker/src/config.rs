//! The worker's TOML configuration.

use cascade_client::blobs::StoreConfig;
use cascade_core::WorkerId;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest build timeout any recipe may ask for, unless the worker's config says otherwise: 15 minutes,
/// the product's promise.
pub const DEFAULT_MAX_BUILD_TIMEOUT_SECS: u64 = 15 * 60;

/// Everything a worker needs to run.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// The id it claims jobs under; unique per worker process.
    pub id: WorkerId,
    /// Node addresses (`host:port`); any of them will do, the client fails over.
    pub servers: Vec<String>,
    /// A token with the `worker` role.
    pub token: String,
    /// Scratch space: git mirrors, work trees, logs. Created if missing.
    pub work_dir: PathBuf,
    /// Where artifacts and logs are uploaded.
    pub store: StoreConfig,
    /// Upper bound on a recipe's timeout, and the timeout of a recipe that names none.
    #[serde(default = "default_max_timeout")]
    pub max_build_timeout_secs: u64,
    /// Upper bound on every timeout and deadline of a recipe's `[deploy]` section (activate, stop, health), so
    /// every host's activation ends; a recipe over it fails its build.
    #[serde(default = "default_max_deploy_timeout")]
    pub max_deploy_timeout_secs: u64,
    /// Heartbeat period; must be well under the node's stale timeout.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_interval_ms: u64,
    /// How long one claim request waits for a job on the server.
    #[serde(default = "default_claim_wait")]
    pub claim_wait_secs: u64,
    /// Artifact chunk size in bytes.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: u64,
    /// Chunk uploads in flight.
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: usize,
    /// Longest any one git command (clone, fetch, checkout) may take; a stalled server ends the attempt as a
    /// retryable failure. The checkout's time also counts toward `max_build_timeout_secs`: the recipe gets
    /// what is left of it.
    #[serde(default = "default_git_timeout")]
    pub git_timeout_secs: u64,
    /// Credentials for private repositories, matched by URL prefix.
    #[serde(default)]
    pub git_credentials: Vec<GitCredential>,
    /// Where to serve Prometheus `/metrics` (e.g. `127.0.0.1:9101`); none by default.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// How builds are isolated: a bubblewrap sandbox by default.
    #[serde(default)]
    pub sandbox: crate::sandbox::SandboxConfig,
}

/// A username and password (or token) for repositories whose URL starts with `url_prefix`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitCredential {
    /// e.g. `https://git.example.com/`
    pub url_prefix: String,
    /// User name.
    pub username: String,
    /// Password or token; never logged.
    pub password: String,
}

// Hand-written so the token and git passwords never reach a log line.
impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("id", &self.id)
            .field("servers", &self.servers)
            .field("work_dir", &self.work_dir)
            .field("store", &self.store)
            .field("max_build_timeout_secs", &self.max_build_timeout_secs)
            .field("metrics_listen", &self.metrics_listen)
            .field("sandbox", &self.sandbox)
            .field("git_credentials", &self.git_credentials.iter().map(|c| &c.url_prefix).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn default_max_timeout() -> u64 {
    DEFAULT_MAX_BUILD_TIMEOUT_SECS
}
fn default_max_deploy_timeout() -> u64 {
    600
}
fn default_git_timeout() -> u64 {
    300
}
fn default_heartbeat_ms() -> u64 {
    3000
}
fn default_claim_wait() -> u64 {
    20
}
fn default_chunk_size() -> u64 {
    cascade_core::manifest::DEFAULT_CHUNK_SIZE
}
fn default_upload_concurrency() -> usize {
    4
}

impl WorkerConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read worker config {}: {e}", path.display()))?;
        let config: Self =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("worker config {} is invalid: {e}", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.servers.is_empty(), "servers: name at least one node address");
        anyhow::ensure!(self.max_build_timeout_secs >= 1, "max_build_timeout_secs must be at least 1");
        anyhow::ensure!(self.max_deploy_timeout_secs >= 1, "max_deploy_timeout_secs must be at least 1");
        anyhow::ensure!(self.git_timeout_secs >= 1, "git_timeout_secs must be at least 1");
        anyhow::ensure!(
            (100..=60_000).contains(&self.heartbeat_interval_ms),
            "heartbeat_interval_ms must be between 100 and 60000"
        );
        anyhow::ensure!((1..=64).contains(&self.upload_concurrency), "upload_concurrency must be between 1 and 64");
        cascade_core::ManifestBuilder::new(self.chunk_size).map_err(|e| anyhow::anyhow!("chunk_size: {e}"))?;
        Ok(())
    }

    /// Heartbeat period.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// The credential whose prefix matches `url`, longest prefix first.
    pub fn credential_for(&self, url: &str) -> Option<&GitCredential> {
        self.git_credentials.iter().filter(|c| url.starts_with(&c.url_prefix)).max_by_key(|c| c.url_prefix.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_validates() {
        let config: WorkerConfig = toml::from_str(include_str!("../../examples/worker.toml")).expect("parses");
        config.validate().expect("validates");
        assert_eq!(config.chunk_size, cascade_core::manifest::DEFAULT_CHUNK_SIZE);
        assert!(!format!("{config:?}").contains("change-me-worker-token"), "Debug must not print the token");
        assert_eq!(config.metrics_listen, Some("127.0.0.1:9101".parse().unwrap()));
    }

    #[test]
    fn credentials_match_the_longest_prefix() {
        let mut config: WorkerConfig = toml::from_str(include_str!("../../examples/worker.toml")).unwrap();
        let credential =
            |prefix: &str| GitCredential { url_prefix: prefix.into(), username: prefix.into(), password: "p".into() };
        config.git_credentials =
            vec![credential("https://git.example.com/"), credential("https://git.example.com/team/")];
        assert_eq!(
            config.credential_for("https://git.example.com/team/app.git").unwrap().username,
            "https://git.example.com/team/"
        );
        assert!(config.credential_for("https://other.example.com/x.git").is_none());
    }
}
