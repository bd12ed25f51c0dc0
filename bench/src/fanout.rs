//! `fanout`: the Rust half of the fan-out benchmark (`bench/fanout/run.sh` drives it; see docs/BENCHMARKS.md).
//!
//! ```text
//! fanout node-config --out node.toml --listen 127.0.0.1:7400 --dir WORK     # a one-voter cluster, region us
//! fanout prepare --server http://127.0.0.1:7400 --dir WORK --size-mib 64 --chunk-kib 1024
//! fanout deploy --server http://127.0.0.1:7400 --build 1 --hosts-dir WORK/hosts --hosts 32 --pids 1,2,3
//! fanout quic-stream --size-mib 2048                                        # one QUIC stream on loopback
//! ```
//!
//! `prepare` stands in for a worker: it writes a file of random bytes, submits a build, claims it with the
//! worker token, uploads the file into the main store with the chosen chunk size (the worker's upload path,
//! `cascade_client::blobs::upload_file`), reports success and waits until the node's replicator copied it into
//! region `us`. `deploy` makes it the desired version and times, from that request, until every host's
//! `status.json` shows every chunk verified and the release active, sampling the CPU time the agents and the
//! whole machine spent meanwhile.

use cascade_client::blobs::{open_store, upload_file, StoreConfig, StoresConfig, UploadOptions};
use cascade_client::Client;
use cascade_core::api::{Role, SubmitBuildRequest};
use cascade_core::state::ReplicationStatus;
use cascade_core::{Artifact, CommitSha, JobId, Manifest, Region, RepoUrl, ServiceName, WorkerId};
use cascade_raft_node::config::{MemberRole, MonitorConfig, NodeConfig, RaftTuning, ReplicationConfig, TokenConfig};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SECRET: &str = "fanout-bench-cluster-secret";
const ADMIN: &str = "fanout-bench-admin-token-0001";
const DEPLOYER: &str = "fanout-bench-deployer-token-01";
const WORKER: &str = "fanout-bench-worker-token-0001";
const SERVICE: &str = "app";
const REGION: &str = "us";

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes the config of a one-voter cluster in region `us` with local stores `main` and `us` under DIR.
    NodeConfig {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Initializes the cluster and makes a succeeded, replicated build of a random file; prints its JSON.
    Prepare {
        #[arg(long)]
        server: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 64)]
        size_mib: u64,
        #[arg(long, default_value_t = 1024)]
        chunk_kib: u64,
    },
    /// Deploys the build and waits until every host verified and activated it; prints the figures as JSON.
    Deploy {
        #[arg(long)]
        server: String,
        #[arg(long)]
        build: u64,
        /// Directory holding one data dir per host (`h1`, `h2`, …).
        #[arg(long)]
        hosts_dir: PathBuf,
        #[arg(long)]
        hosts: usize,
        /// Agent processes whose CPU time is counted.
        #[arg(long, value_delimiter = ',')]
        pids: Vec<u32>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Throughput of one QUIC stream on loopback through the agents' endpoint (mutual TLS, same transport).
    QuicStream {
        #[arg(long, default_value_t = 2048)]
        size_mib: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::NodeConfig { out, listen, dir } => node_config(&out, listen, &dir),
        Command::Prepare { server, dir, size_mib, chunk_kib } => prepare(&server, &dir, size_mib, chunk_kib).await,
        Command::Deploy { server, build, hosts_dir, hosts, pids, timeout_secs } => {
            deploy(&server, JobId(build), &hosts_dir, hosts, &pids, Duration::from_secs(timeout_secs)).await
        }
        Command::QuicStream { size_mib } => quic_stream(size_mib).await,
    }
}

fn stores(dir: &Path) -> StoresConfig {
    StoresConfig {
        main: StoreConfig::Local { path: dir.join("stores/main") },
        regions: [(REGION.to_string(), StoreConfig::Local { path: dir.join(format!("stores/{REGION}")) })].into(),
    }
}

fn node_config(out: &Path, listen: SocketAddr, dir: &Path) -> anyhow::Result<()> {
    let token = |name: &str, token: &str, role: Role| TokenConfig { name: name.into(), token: token.into(), role };
    let config = NodeConfig {
        id: 1,
        listen,
        advertise: None,
        data_dir: dir.join("node1"),
        region: REGION.into(),
        role: MemberRole::Voter,
        peers: vec![],
        cluster_secret: SECRET.into(),
        tokens: vec![
            token("admin", ADMIN, Role::Admin),
            token("dora", DEPLOYER, Role::Deployer),
            token("worker", WORKER, Role::Worker),
        ],
        raft: RaftTuning::default(),
        monitor: MonitorConfig { interval_secs: 5, stale_after_secs: 3600 },
        stores: Some(stores(dir)),
        replication: ReplicationConfig { poll_interval_ms: 200, ..ReplicationConfig::default() },
    };
    config.validate().map_err(anyhow::Error::msg)?;
    std::fs::write(out, toml::to_string(&config)?)?;
    Ok(())
}

async fn prepare(server: &str, dir: &Path, size_mib: u64, chunk_kib: u64) -> anyhow::Result<()> {
    let servers = [server.to_string()];
    let admin = Client::new(&servers, ADMIN)?.with_retry_budget(Duration::from_secs(30));
    admin.cluster_init().await?;
    let worker = Client::new(&servers, WORKER)?.with_retry_budget(Duration::from_secs(30));
    let file = dir.join("artifact.bin");
    write_random(&file, size_mib * 1024 * 1024)?;
    let request = SubmitBuildRequest {
        repo: RepoUrl::parse("https://example.invalid/fanout-bench.git")?,
        commit: CommitSha::parse(format!("{:040x}", 1))?,
        service: ServiceName::parse(SERVICE)?,
    };
    // The first write needs a leader; the client's retry budget covers the election.
    let job = admin.submit_build(&request).await?;
    let claim = worker
        .claim(&WorkerId::parse("fanout-bench")?, Duration::from_secs(5))
        .await?
        .ok_or_else(|| anyhow::anyhow!("the submitted build could not be claimed"))?;
    let store = open_store(&stores(dir).main)?;
    let options = UploadOptions { chunk_size: chunk_kib * 1024, concurrency: 4 };
    let manifest: Manifest = upload_file(&store, &file, options).await?;
    let artifact = Artifact {
        digest: manifest.digest.clone(),
        size: manifest.total_size,
        manifest_key: Manifest::key(&manifest.digest),
        deploy: Default::default(),
    };
    worker.succeed(claim.lease, artifact).await?;
    let region = Region::parse(REGION)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let record = admin.artifact(&manifest.digest).await;
        if record.is_ok_and(|r| r.replication.get(&region) == Some(&ReplicationStatus::Replicated)) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "artifact not replicated into region {REGION} in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = serde_json::json!({
        "build": job.id.0,
        "digest": manifest.digest.to_string(),
        "size": manifest.total_size,
        "chunk_size": manifest.chunk_size,
        "chunks": manifest.chunk_count(),
    });
    println!("{out}");
    Ok(())
}

/// Random bytes (a BLAKE3 XOF stream), so that no chunk repeats and nothing compresses.
fn write_random(path: &Path, size: u64) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut reader = blake3::Hasher::new().update(b"fanout-bench").finalize_xof();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block = vec![0u8; 1024 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        reader.fill(&mut block[..n]);
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(())
}

/// CPU seconds (user + system) a process has used so far, from `/proc/PID/stat`.
fn process_cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// (busy, total) jiffies of the whole machine, from `/proc/stat`.
fn machine_jiffies() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: f64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

fn host_state(dir: &Path, digest: &str, chunks: u64) -> (bool, bool) {
    let Ok(bytes) = std::fs::read(dir.join("status.json")) else { return (false, false) };
    let Ok(status) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return (false, false) };
    let count = |field: &str| status[field][digest].as_u64().unwrap_or(0);
    let verified = count("fetched") + count("local") >= chunks;
    let active = status["active"][SERVICE].as_str() == Some(digest);
    (verified, active)
}

async fn deploy(
    server: &str,
    build: JobId,
    hosts_dir: &Path,
    hosts: usize,
    pids: &[u32],
    timeout: Duration,
) -> anyhow::Result<()> {
    let servers = [server.to_string()];
    let deployer = Client::new(&servers, DEPLOYER)?;
    let detail = deployer.get_build_detail(build).await?;
    let artifact = match &detail.job.status {
        cascade_core::JobStatus::Succeeded { artifact } => artifact.clone(),
        other => anyhow::bail!("build {build} has not succeeded: {other:?}"),
    };
    let digest = artifact.digest.to_string();
    let dirs: Vec<PathBuf> = (1..=hosts).map(|i| hosts_dir.join(format!("h{i}"))).collect();
    let chunks = chunks_of(hosts_dir, &artifact.digest)?;
    let cpu_before: f64 = pids.iter().map(|&p| process_cpu_secs(p)).sum();
    let machine_before = machine_jiffies();
    let started = Instant::now();
    deployer.deploy(&ServiceName::parse(SERVICE)?, build).await?;
    let deploy_call = started.elapsed();
    let mut verified_at: Vec<Option<Duration>> = vec![None; hosts];
    let mut active_at: Vec<Option<Duration>> = vec![None; hosts];
    while active_at.iter().any(Option::is_none) {
        anyhow::ensure!(
            started.elapsed() < timeout,
            "not every host active after {timeout:?}: {} verified, {} active",
            verified_at.iter().flatten().count(),
            active_at.iter().flatten().count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = started.elapsed();
        for (i, dir) in dirs.iter().enumerate() {
            if active_at[i].is_some() {
                continue;
            }
            let (verified, active) = host_state(dir, &digest, chunks);
            if (verified || active) && verified_at[i].is_none() {
                verified_at[i] = Some(now);
            }
            if active {
                active_at[i] = Some(now);
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = pids.iter().map(|&p| process_cpu_secs(p)).sum::<f64>() - cpu_before;
    let machine_after = machine_jiffies();
    let busy = (machine_after.0 - machine_before.0) / (machine_after.1 - machine_before.1).max(1.0);
    let mut verified: Vec<f64> = verified_at.iter().flatten().map(Duration::as_secs_f64).collect();
    verified.sort_by(f64::total_cmp);
    let last_active = active_at.iter().flatten().map(Duration::as_secs_f64).fold(0.0, f64::max);
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let out = serde_json::json!({
        "size": artifact.size,
        "chunks": chunks,
        "deploy_call_s": deploy_call.as_secs_f64(),
        "first_verified_s": verified.first(),
        "median_verified_s": verified.get(verified.len() / 2),
        "last_verified_s": verified.last(),
        "last_active_s": last_active,
        "agents_cpu_s": cpu,
        "wall_s": wall,
        "machine_busy": busy,
        "loadavg": loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    });
    println!("{out}");
    Ok(())
}

/// The chunk count of `digest`, from the manifest in the regional store next to the hosts' directory.
fn chunks_of(hosts_dir: &Path, digest: &cascade_core::Digest) -> anyhow::Result<u64> {
    let work = hosts_dir.parent().unwrap_or(hosts_dir);
    let path = work.join(format!("stores/{REGION}")).join(Manifest::key(digest));
    let manifest = Manifest::from_json(&std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)?;
    Ok(manifest.chunk_count())
}

/// CPU seconds (user + system) this process has used, from getrusage.
fn own_cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

async fn quic_stream(size_mib: u64) -> anyhow::Result<()> {
    use cascade_region_agent::tls::{create_ca, endpoint, issue, TlsFiles, AGENT_SERVER_NAME};
    let dir = tempfile::tempdir()?;
    create_ca(&dir.path().join("ca"))?;
    let files = |name: &str| -> anyhow::Result<TlsFiles> {
        issue(&dir.path().join("ca"), name, &dir.path().join("certs"))?;
        Ok(TlsFiles {
            ca: dir.path().join("ca/ca.pem"),
            cert: dir.path().join(format!("certs/{name}.pem")),
            key: dir.path().join(format!("certs/{name}.key")),
        })
    };
    let server = endpoint(&files("server")?, "127.0.0.1:0".parse()?)?;
    let client = endpoint(&files("client")?, "127.0.0.1:0".parse()?)?;
    let server_addr = server.local_addr()?;
    let total = size_mib * 1024 * 1024;
    let receiver = tokio::spawn(async move {
        let connection = server.accept().await.ok_or_else(|| anyhow::anyhow!("no connection"))?.await?;
        let mut stream = connection.accept_uni().await?;
        let mut received = 0u64;
        while let Some(chunk) = stream.read_chunk(1024 * 1024, true).await? {
            received += chunk.bytes.len() as u64;
        }
        anyhow::Ok(received)
    });
    let connection = client.connect(server_addr, AGENT_SERVER_NAME)?.await?;
    let block = bytes::Bytes::from(vec![0x5au8; 1024 * 1024]);
    let cpu_before = own_cpu_secs();
    let started = Instant::now();
    let mut stream = connection.open_uni().await?;
    let mut sent = 0u64;
    while sent < total {
        stream.write_chunk(block.clone()).await?;
        sent += block.len() as u64;
    }
    stream.finish()?;
    let received = receiver.await??;
    let wall = started.elapsed().as_secs_f64();
    let cpu = own_cpu_secs() - cpu_before;
    anyhow::ensure!(received == sent, "received {received} of {sent} bytes");
    let mb = received as f64 / 1e6;
    let out = serde_json::json!({
        "bytes": received,
        "wall_s": wall,
        "cpu_s": cpu,
        "mb_per_s": mb / wall,
        "mb_per_cpu_s": mb / cpu,
        "cores_used": cpu / wall,
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    println!("{out}");
    connection.close(0u32.into(), b"done");
    client.wait_idle().await;
    Ok(())
}
