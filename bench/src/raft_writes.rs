//! Durable commands per second through `/api/v1` on a 3-voter loopback cluster of real `cascade node`
//! processes (fsync on: every append is synced before it is acknowledged).
//!
//! `cargo build --release -p cascade-cli -p cascade-bench && target/release/raft-writes --cascade target/release/cascade`

use cascade_client::Client;
use cascade_core::api::{Role, SubmitBuildRequest};
use cascade_core::{CommitSha, RepoUrl, ServiceName};
use cascade_raft_node::config::{MemberRole, MonitorConfig, NodeConfig, PeerConfig, RaftTuning, TokenConfig};
use clap::Parser;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// The `cascade` binary to start nodes with (build it with --release).
    #[arg(long)]
    cascade: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Total commands.
    #[arg(long, default_value_t = 20_000)]
    total: usize,
    /// Send every command to the leader (no forwarding hop), instead of spreading clients over all nodes.
    #[arg(long)]
    leader_only: bool,
    /// First port of the three nodes.
    #[arg(long, default_value_t = 27101)]
    base_port: u16,
}

const TOKEN: &str = "bench-admin-token-0123456789";

struct Nodes(Vec<Child>);
impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let ports: Vec<u16> = (0..3).map(|i| args.base_port + i).collect();
    let peers: Vec<PeerConfig> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| PeerConfig { id: i as u64 + 1, addr: format!("127.0.0.1:{p}"), region: "home".into() })
        .collect();
    let mut children = Nodes(Vec::new());
    for (i, port) in ports.iter().enumerate() {
        let id = i as u64 + 1;
        let config = NodeConfig {
            id,
            listen: format!("127.0.0.1:{port}").parse()?,
            advertise: None,
            data_dir: dir.path().join(format!("node{id}")),
            region: "home".into(),
            role: MemberRole::Voter,
            peers: peers.iter().filter(|p| p.id != id).cloned().collect(),
            cluster_secret: "bench-cluster-secret-0123456789".into(),
            tokens: vec![TokenConfig { name: "bench".into(), token: TOKEN.into(), role: Role::Admin }],
            raft: RaftTuning::default(),
            monitor: MonitorConfig::default(),
            stores: None,
            replication: Default::default(),
        };
        let path = dir.path().join(format!("node{id}.toml"));
        std::fs::write(&path, toml::to_string(&config)?)?;
        let log = std::fs::File::create(dir.path().join(format!("node{id}.log")))?;
        children.0.push(
            Command::new(&args.cascade)
                .args(["node", "--config"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?,
        );
    }
    let urls: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let http = reqwest::Client::new();
    for url in &urls {
        let started = Instant::now();
        while http.get(format!("{url}/healthz")).send().await.is_err() {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "node {url} did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Client::new(&urls[..1], TOKEN)?.cluster_init().await?;
    let targets = if args.leader_only { vec![leader_url(&http, &urls).await?] } else { urls.clone() };
    let client = Arc::new(Client::new(&targets, TOKEN)?);
    // Warm up: elects the leader and opens connections.
    for i in 0..200 {
        client.submit_build(&request(u64::MAX - i)).await?;
    }
    let per_client = args.total / args.clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let t = Instant::now();
                client.submit_build(&request((c * per_client + i) as u64)).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct =
        |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "cascade 3-voter loopback fsync: commands={} clients={} target={} seconds={:.2} commands_per_sec={:.0} p50_ms={:.2} p99_ms={:.2}",
        latencies.len(),
        args.clients,
        if args.leader_only { "leader" } else { "all-nodes" },
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}

/// The URL of the node that reports itself leader, waiting up to 30 s for an election.
async fn leader_url(http: &reqwest::Client, urls: &[String]) -> anyhow::Result<String> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        for url in urls {
            let health: serde_json::Value = match http.get(format!("{url}/healthz")).send().await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => continue,
            };
            if health["state"] == "Leader" {
                return Ok(url.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no leader elected within 30 s")
}

fn request(n: u64) -> SubmitBuildRequest {
    SubmitBuildRequest {
        repo: RepoUrl::parse("https://git.example.com/bench/app.git").expect("static repo url"),
        commit: CommitSha::parse(format!("{n:040x}")).expect("40 hex"),
        service: ServiceName::parse("bench").expect("static service"),
    }
}
