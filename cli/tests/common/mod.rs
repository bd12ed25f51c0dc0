//! Test harness: real `cascade node` processes on loopback, each with its own config and data dir.

#![allow(dead_code)]

pub mod agents;
pub mod builds;
pub mod service;

use cascade_client::Client;
use cascade_core::api::Role;
use cascade_raft_node::config::{MemberRole, MonitorConfig, NodeConfig, PeerConfig, RaftTuning, TokenConfig};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "test-cluster-secret-0123456789";
pub const ADMIN: &str = "admin-token-0123456789abcdef";
pub const BUILDER: &str = "builder-token-0123456789abcdef";
pub const DEPLOYER: &str = "deployer-token-0123456789abcde";
pub const WORKER: &str = "worker-token-0123456789abcdefg";
pub const VIEWER: &str = "viewer-token-0123456789abcdefg";

/// A free loopback port (bound then released; a clash with another process is unlikely and would show as
/// a node that fails to start with a clear error).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// One node's settings.
#[derive(Clone)]
pub struct NodeSpec {
    pub id: u64,
    pub port: u16,
    pub region: String,
    pub voter: bool,
}

impl NodeSpec {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A node process that is killed when dropped.
pub struct NodeProcess {
    pub spec: NodeSpec,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl NodeProcess {
    /// SIGKILL, no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (or restarts) the process from its config and data dir.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.spec.id);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open node log");
        let child = Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args(["node", "--config"])
            .arg(&self.config)
            .env("CASCADE_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cascade node");
        self.child = Some(child);
    }

    pub fn client(&self, token: &str) -> Client {
        Client::new(&[self.spec.url()], token).expect("client").with_retry_budget(Duration::from_secs(20))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes a node config with the standard test tokens and fast Raft timing.
pub fn write_config(dir: &Path, spec: &NodeSpec, voters: &[NodeSpec], stale_after_secs: u64) -> PathBuf {
    write_config_with(dir, spec, voters, stale_after_secs, &|_| {})
}

/// [`write_config`] with a last change to the config (stores, replication, monitor).
pub fn write_config_with(
    dir: &Path,
    spec: &NodeSpec,
    voters: &[NodeSpec],
    stale_after_secs: u64,
    customize: &dyn Fn(&mut NodeConfig),
) -> PathBuf {
    let token = |name: &str, token: &str, role: Role| TokenConfig { name: name.into(), token: token.into(), role };
    let mut config = NodeConfig {
        id: spec.id,
        listen: spec.addr().parse().expect("loopback addr"),
        advertise: None,
        data_dir: dir.join(format!("node{}", spec.id)),
        region: spec.region.clone(),
        role: if spec.voter { MemberRole::Voter } else { MemberRole::Learner },
        peers: voters
            .iter()
            .filter(|v| v.id != spec.id)
            .map(|v| PeerConfig { id: v.id, addr: v.addr(), region: v.region.clone() })
            .collect(),
        cluster_secret: SECRET.into(),
        tokens: vec![
            token("admin", ADMIN, Role::Admin),
            token("alice", BUILDER, Role::Builder),
            token("dora", DEPLOYER, Role::Deployer),
            token("worker", WORKER, Role::Worker),
            token("victor", VIEWER, Role::Viewer),
        ],
        raft: RaftTuning {
            heartbeat_ms: 100,
            election_timeout_min_ms: 600,
            election_timeout_max_ms: 1200,
            snapshot_every: 300,
            keep_after_snapshot: 50,
        },
        monitor: MonitorConfig { interval_secs: 1, stale_after_secs },
        stores: None,
        replication: Default::default(),
    };
    customize(&mut config);
    config.validate().expect("test config is valid");
    let path = dir.join(format!("node{}.toml", spec.id));
    std::fs::write(&path, toml::to_string(&config).expect("config to toml")).expect("write config");
    path
}

/// Starts every node of `specs` (not yet initialized).
pub fn start_nodes(dir: &Path, specs: &[NodeSpec], stale_after_secs: u64) -> Vec<NodeProcess> {
    start_nodes_with(dir, specs, stale_after_secs, &|_| {})
}

/// [`start_nodes`] with a last change to every node's config.
pub fn start_nodes_with(
    dir: &Path,
    specs: &[NodeSpec],
    stale_after_secs: u64,
    customize: &dyn Fn(&mut NodeConfig),
) -> Vec<NodeProcess> {
    let voters: Vec<NodeSpec> = specs.iter().filter(|s| s.voter).cloned().collect();
    specs
        .iter()
        .map(|spec| {
            let config = write_config_with(dir, spec, &voters, stale_after_secs, customize);
            let mut process =
                NodeProcess { spec: spec.clone(), config, child: None, log: dir.join(format!("node{}.log", spec.id)) };
            process.start();
            process
        })
        .collect()
}

/// Waits until `GET /healthz` answers 200 on the node.
pub async fn wait_healthy(url: &str, within: Duration) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    while started.elapsed() < within {
        if let Ok(r) = http.get(format!("{url}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("node at {url} not healthy within {within:?}");
}

/// `/healthz` of a node as JSON, if it answers.
pub async fn health(url: &str) -> Option<serde_json::Value> {
    let r = reqwest::Client::new().get(format!("{url}/healthz")).timeout(Duration::from_secs(2)).send().await.ok()?;
    r.json().await.ok()
}

/// Waits until some node reports a leader; returns its id.
pub async fn wait_leader(urls: &[String], within: Duration) -> u64 {
    let started = Instant::now();
    while started.elapsed() < within {
        for url in urls {
            if let Some(h) = health(url).await {
                if let Some(leader) = h["leader"].as_u64() {
                    return leader;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader within {within:?}");
}

/// Starts a one-voter cluster in region `us` and initializes it.
pub async fn single_node(dir: &Path, stale_after_secs: u64) -> NodeProcess {
    single_node_with(dir, stale_after_secs, &|_| {}).await
}

/// [`single_node`] with a last change to its config.
pub async fn single_node_with(dir: &Path, stale_after_secs: u64, customize: &dyn Fn(&mut NodeConfig)) -> NodeProcess {
    let spec = NodeSpec { id: 1, port: free_port(), region: "us".into(), voter: true };
    let mut nodes = start_nodes_with(dir, &[spec], stale_after_secs, customize);
    let node = nodes.remove(0);
    wait_healthy(&node.spec.url(), Duration::from_secs(30)).await;
    node.client(ADMIN).cluster_init().await.expect("cluster init");
    wait_leader(&[node.spec.url()], Duration::from_secs(15)).await;
    node
}

pub fn sha(n: u64) -> cascade_core::CommitSha {
    cascade_core::CommitSha::parse(format!("{n:040x}")).expect("valid sha")
}
