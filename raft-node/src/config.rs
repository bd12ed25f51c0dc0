//! A node's TOML configuration file.

use cascade_core::api::Role;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Whether the node votes or only follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// Votes in elections and counts towards the commit quorum; lives in the home region.
    Voter,
    /// Replicates the log and serves local reads in its region; never votes.
    Learner,
}

/// Another voter of the initial cluster, used by `cascade cluster init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its Raft node id.
    pub id: u64,
    /// Its `host:port`.
    pub addr: String,
    /// Its region.
    pub region: String,
}

/// A bearer token and the role it grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it; recorded in the audit log as the actor.
    pub name: String,
    /// The secret itself.
    pub token: String,
    /// What it may do.
    pub role: Role,
}

/// Raft timing and log compaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTuning {
    /// Leader heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Election timeout lower bound, ms.
    pub election_timeout_min_ms: u64,
    /// Election timeout upper bound, ms.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the snapshot, so slow followers catch up without a snapshot.
    pub keep_after_snapshot: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat_ms: 250,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_every: 10_000,
            keep_after_snapshot: 1000,
        }
    }
}

/// The leader-only stale-job monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// How often the leader scans for stale jobs, seconds.
    pub interval_secs: u64,
    /// A running job whose last heartbeat is older than this is requeued, seconds.
    pub stale_after_secs: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self { interval_secs: 5, stale_after_secs: 300 }
    }
}

/// How artifacts reach the regional stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationMode {
    /// The leader copies manifest and chunks from `main` into every regional store, then checks them.
    #[default]
    Copy,
    /// The stores replicate themselves (e.g. S3 cross-region replication); the leader only checks.
    StoreNative,
}

/// The leader-only replicator and synchronizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Copy, or rely on the stores' own replication.
    pub mode: ReplicationMode,
    /// How often every artifact in every region is checked again in full, seconds (≤ 60 by the product's
    /// promise; larger is allowed for huge histories, with a warning).
    pub sync_interval_secs: u64,
    /// How often the leader looks for artifacts not yet replicated everywhere, milliseconds.
    pub poll_interval_ms: u64,
    /// Chunk requests in flight per copy or check.
    pub concurrency: usize,
    /// `hash` reads every chunk back and checks its BLAKE3; `size` only compares object sizes.
    pub verify: cascade_client::blobs::VerifyMode,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            mode: ReplicationMode::Copy,
            sync_interval_secs: 60,
            poll_interval_ms: 1000,
            concurrency: 8,
            verify: cascade_client::blobs::VerifyMode::Hash,
        }
    }
}

/// Everything `cascade node --config FILE` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Raft node id, unique in the cluster, never reused.
    pub id: u64,
    /// Address to listen on for the API and Raft RPC.
    pub listen: SocketAddr,
    /// Address other nodes and clients use to reach this one; defaults to `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Where RocksDB keeps the log and snapshots.
    pub data_dir: PathBuf,
    /// Region this node serves.
    pub region: String,
    /// Voter or learner.
    pub role: MemberRole,
    /// The other voters of the initial cluster.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Shared secret every node presents on Raft RPC and internal calls.
    pub cluster_secret: String,
    /// API tokens.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Raft timing.
    #[serde(default)]
    pub raft: RaftTuning,
    /// Stale-job monitor.
    #[serde(default)]
    pub monitor: MonitorConfig,
    /// Blob stores (`main` and one per region). Without them the node neither replicates artifacts nor
    /// serves build logs; every node of a cluster should name the same stores.
    #[serde(default)]
    pub stores: Option<cascade_client::blobs::StoresConfig>,
    /// Replicator and synchronizer.
    #[serde(default)]
    pub replication: ReplicationConfig,
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a node config.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("config file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl NodeConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let config: NodeConfig = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        config.validate().map_err(|message| ConfigError::Invalid { path: path.to_path_buf(), message })?;
        Ok(config)
    }

    /// Checks the rules serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        cascade_core::Region::parse(self.region.clone()).map_err(|e| e.to_string())?;
        if let Some(stores) = &self.stores {
            for region in stores.regions.keys() {
                cascade_core::Region::parse(region.clone()).map_err(|e| format!("stores.regions: {e}"))?;
            }
        }
        if self.replication.sync_interval_secs == 0 || self.replication.poll_interval_ms == 0 {
            return Err("replication.sync_interval_secs and poll_interval_ms must be positive".into());
        }
        if !(1..=256).contains(&self.replication.concurrency) {
            return Err("replication.concurrency must be between 1 and 256".into());
        }
        if self.cluster_secret.len() < 16 {
            return Err("cluster_secret must be at least 16 characters".into());
        }
        for token in &self.tokens {
            if token.token.len() < 16 {
                return Err(format!("token of {} must be at least 16 characters", token.name));
            }
            cascade_core::Principal::parse(token.name.clone()).map_err(|e| format!("token name: {e}"))?;
        }
        if self.peers.iter().any(|p| p.id == self.id) {
            return Err(format!("peers must not list this node's own id {}", self.id));
        }
        let t = &self.raft;
        if t.heartbeat_ms == 0
            || t.election_timeout_min_ms <= t.heartbeat_ms
            || t.election_timeout_max_ms <= t.election_timeout_min_ms
        {
            return Err(
                "raft timing must satisfy 0 < heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms".into(),
            );
        }
        if self.monitor.interval_secs == 0 || self.monitor.stale_after_secs == 0 {
            return Err("monitor.interval_secs and monitor.stale_after_secs must be positive".into());
        }
        Ok(())
    }

    /// The address peers and clients should use.
    pub fn advertised_addr(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| self.listen.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/node.toml");

    #[test]
    fn the_shipped_example_config_is_valid() {
        let config: NodeConfig = toml::from_str(EXAMPLE).expect("examples/node.toml parses");
        config.validate().expect("examples/node.toml validates");
        assert_eq!(config.peers.len(), 2);
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let typo = EXAMPLE.replace("cluster_secret", "cluster_secrett");
        let err = toml::from_str::<NodeConfig>(&typo).unwrap_err().to_string();
        assert!(err.contains("cluster_secrett"), "{err}");

        let mut config: NodeConfig = toml::from_str(EXAMPLE).unwrap();
        config.cluster_secret = "short".into();
        assert!(config.validate().unwrap_err().contains("cluster_secret"));

        let mut config: NodeConfig = toml::from_str(EXAMPLE).unwrap();
        config.raft.election_timeout_min_ms = config.raft.heartbeat_ms;
        assert!(config.validate().unwrap_err().contains("heartbeat_ms"));

        let mut config: NodeConfig = toml::from_str(EXAMPLE).unwrap();
        config.peers[0].id = config.id;
        assert!(config.validate().unwrap_err().contains("own id"));

        let mut config: NodeConfig = toml::from_str(EXAMPLE).unwrap();
        config.region = "EU West".into();
        assert!(config.validate().unwrap_err().contains("region"));
    }
}
