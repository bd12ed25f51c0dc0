//! The region manager: follows the desired versions on its region's learner, waits until an artifact is
//! replicated into the regional store, seeds the swarm from that store, runs the fan-out scheduler from
//! `cascade-core`, tells hosts what to fetch from whom and when to activate, and reports counts in batches.
//!
//! [`run`] is production's (HTTP to the cluster, QUIC to the hosts); [`run_with`] takes the cluster
//! ([`ControlPlane`]), the store and the network ([`Transport`]), which is how the simulation runs this
//! same code.

use crate::metrics::ManagerMetrics;
use crate::protocol::{
    read_frame, write_frame, ChunkAnswer, DownloadId, FetchFailure, HostMessage, ManagerMessage, StreamOpen,
};
use crate::tls::TlsFiles;
use crate::transport::{Incoming, QuicTransport, SendHalf, Transport};
use cascade_client::blobs::{open_store, read_manifest, Store, StoreConfig};
use cascade_client::Client;
use cascade_core::api::{DesiredVersions, ManagerLeaseRequest, RolloutReport};
use cascade_core::fanout::{ChunkId, Config as FanoutConfig, FailReason, HostId, Report, Scheduler, Transfer};
use cascade_core::rollout::{RolloutPolicy, RolloutProgress};
use cascade_core::state::{ReplicationStatus, RolloutControl, RolloutCounts};
use cascade_core::{ClusterName, DeploySpec, Digest, HostDeclaration, Manifest, Region, ServiceName};
use object_store::path::Path as Key;
use object_store::ObjectStoreExt as _;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

mod control;
mod events;
mod lease;

pub use control::{ControlPlane, LeaseError};

/// `cascade agent manager --config FILE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerConfig {
    /// The region it serves.
    pub region: Region,
    /// The cluster of machines it manages.
    pub cluster: ClusterName,
    /// Nodes to read desired versions from: the region's learner first.
    pub servers: Vec<String>,
    /// A token with the `worker` role (agents report rollouts with it).
    pub token: String,
    /// The region's blob store.
    pub store: StoreConfig,
    /// UDP address of its QUIC endpoint (hosts register here; it also serves as the swarm's seed).
    pub listen: SocketAddr,
    /// Address hosts use to reach it; `listen` by default.
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// Certificates.
    pub tls: TlsFiles,
    /// How often counts are reported through the state machine, milliseconds.
    #[serde(default = "default_report_ms")]
    pub report_interval_ms: u64,
    /// Where it writes its status (counts, bad senders) as JSON for operators and tests.
    #[serde(default)]
    pub status_file: Option<PathBuf>,
    /// Where to serve Prometheus `/metrics` (e.g. `127.0.0.1:9102`); none by default.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// This manager's id in the cluster's manager lease; must differ between the managers of a cluster.
    /// Host name and process id by default.
    #[serde(default)]
    pub name: Option<String>,
    /// Time to live of the manager lease, milliseconds: a standby takes over at most this long after the
    /// active manager died (it renews every third of it).
    #[serde(default = "default_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
}

fn default_report_ms() -> u64 {
    2000
}

fn default_lease_ttl_ms() -> u64 {
    10_000
}

impl ManagerConfig {
    /// Reads a config file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("manager config {} is invalid: {e}", path.display()))
    }
}

/// What the manager writes to its status file.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct ManagerStatus {
    /// Per service: generation and counts of the current rollout.
    pub rollouts: BTreeMap<String, (u64, RolloutCounts)>,
    /// Hosts reported for sending bad chunks, by name.
    pub bad_senders: Vec<String>,
    /// Chunks the seed served from the regional store.
    pub seed_chunks_served: u64,
    /// This manager's lease holder id.
    #[serde(default)]
    pub holder: String,
    /// `active` while it holds the cluster's manager lease, `standby` otherwise.
    #[serde(default)]
    pub role: String,
    /// The last lease answer, in words (who holds it until when).
    #[serde(default)]
    pub lease: String,
    /// Rollout reports it sent while active.
    #[serde(default)]
    pub reports_sent: u64,
    /// Per service: the failed hosts of the current rollout, with their reasons.
    #[serde(default)]
    pub failures: BTreeMap<String, cascade_core::HostFailures>,
}

enum Event {
    Desired(DesiredVersions),
    Ready {
        service: ServiceName,
        generation: u64,
        manifest: Manifest,
    },
    HostJoined {
        name: String,
        addr: SocketAddr,
        declaration: HostDeclaration,
        tx: mpsc::UnboundedSender<ManagerMessage>,
        /// The host's id and session, or why it is refused (this manager stands by).
        id: oneshot::Sender<Result<(u32, u64), String>>,
    },
    Lease(lease::LeaseAnswer),
    Host {
        id: u32,
        message: HostMessage,
    },
    HostGone {
        id: u32,
        session: u64,
    },
    Tick,
}

struct HostEntry {
    name: String,
    addr: SocketAddr,
    /// What it runs: only deploys it targets reach it.
    declaration: HostDeclaration,
    tx: Option<mpsc::UnboundedSender<ManagerMessage>>,
    session: u64,
}

enum Phase {
    WaitingForReplication,
    /// `download` numbers the artifact in this manager's messages to hosts.
    Running {
        manifest: Manifest,
        scheduler: Box<Scheduler>,
        download: DownloadId,
    },
}

struct Rollout {
    generation: u64,
    digest: Digest,
    /// The build's deploy spec: how hosts install and check it, and its placement.
    spec: DeploySpec,
    control: RolloutControl,
    /// How its hosts switch in waves, and how far the committed state has opened them.
    policy: RolloutPolicy,
    progress: RolloutProgress,
    phase: Phase,
    // Ordered sets: the manager's messages go out in the same order every run (the simulation replays it).
    joined: BTreeSet<u32>,
    activated: BTreeSet<u32>,
    activating: BTreeSet<u32>,
    /// Failed hosts and why, as they reported it (bounded by the host).
    failed: BTreeMap<u32, String>,
}

struct Manager<C: ControlPlane> {
    config: ManagerConfig,
    client: Arc<C>,
    store: Store,
    seed_addr: SocketAddr,
    hosts: BTreeMap<u32, HostEntry>,
    ids: HashMap<String, u32>,
    rollouts: BTreeMap<ServiceName, Rollout>,
    events: mpsc::UnboundedSender<Event>,
    manifests: Arc<RwLock<HashMap<Digest, Manifest>>>,
    status: ManagerStatus,
    metrics: Arc<ManagerMetrics>,
    last_reported: HashMap<ServiceName, (u64, RolloutCounts, cascade_core::HostFailures, Vec<String>)>,
    next_session: u64,
    /// The number each artifact goes by in per-chunk messages, for the manager's life (one digest, one
    /// number, as hosts keep one download per digest).
    ///
    /// Per service as well as digest: two services may deploy identical bytes to different hosts at once,
    /// and each rollout's per-chunk messages must reach its own scheduler. A host keeps one download per
    /// digest whatever number it goes by.
    downloads: BTreeMap<(ServiceName, Digest), DownloadId>,
    /// Lease holder id.
    holder: String,
    /// Acts until this local instant (the manager lease); `None` while standing by.
    lease_until: Option<tokio::time::Instant>,
    /// Whether it acts, for the seed (which runs outside the event loop).
    active_flag: Arc<AtomicBool>,
}

/// A scheduler for `manifest` whose seed (the regional store) holds every chunk.
fn fresh_scheduler(manifest: &Manifest, generation: u64) -> Result<Box<Scheduler>, String> {
    let chunks = u32::try_from(manifest.chunk_count()).unwrap_or(u32::MAX);
    let mut config = FanoutConfig::new(chunks.max(1));
    config.rng_seed = generation;
    let mut scheduler = Box::new(Scheduler::new(config).map_err(|e| e.to_string())?);
    for chunk in 0..chunks {
        let _ = scheduler.seed_has(ChunkId(chunk));
    }
    Ok(scheduler)
}

/// Runs the manager (HTTP to the cluster, QUIC to the hosts) until `shutdown` becomes true.
pub async fn run(config: ManagerConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let client = Arc::new(Client::new(&config.servers, &config.token)?);
    let store = open_store(&config.store)?;
    let transport = Arc::new(QuicTransport::new(crate::tls::endpoint(&config.tls, config.listen)?));
    run_with(config, client, store, transport, shutdown).await
}

/// Runs the manager on the given cluster, store and network until `shutdown` becomes true. The config's
/// `servers`, `token`, `store` and `tls` are not used: the arguments stand for them.
pub async fn run_with<C: ControlPlane, T: Transport>(
    config: ManagerConfig,
    client: Arc<C>,
    store: Store,
    transport: Arc<T>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (events, mut inbox) = mpsc::unbounded_channel();
    let manifests = Arc::new(RwLock::new(HashMap::new()));
    let metrics = Arc::new(ManagerMetrics::new());
    let holder = config.name.clone().unwrap_or_else(lease::default_holder);
    cascade_core::manager_lease::validate_holder(&holder)?;
    let lease_request = ManagerLeaseRequest {
        region: config.region.clone(),
        cluster: config.cluster.clone(),
        holder: holder.clone(),
        ttl_ms: config.lease_ttl_ms.clamp(300, cascade_core::manager_lease::MAX_MANAGER_LEASE_TTL_MS),
    };
    let active_flag = Arc::new(AtomicBool::new(false));
    // Held until the manager stops: dropping it stops the server.
    let _metrics_server = match config.metrics_listen {
        Some(listen) => {
            let metrics = metrics.clone();
            Some(cascade_client::metrics_http::serve(listen, move || metrics.render()).await?)
        }
        None => None,
    };
    let seed = Seed {
        store: store.clone(),
        manifests: manifests.clone(),
        metrics: metrics.clone(),
        active: active_flag.clone(),
    };
    tokio::spawn(accept(transport.incoming(), events.clone(), seed));
    tokio::spawn(follow_desired(client.clone(), events.clone()));
    let lease_task = tokio::spawn(lease::keep_lease(client.clone(), lease_request.clone(), events.clone()));
    let ticker_events = events.clone();
    let interval = Duration::from_millis(config.report_interval_ms.max(100));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            if ticker_events.send(Event::Tick).is_err() {
                return;
            }
        }
    });
    let seed_addr = config.advertise.unwrap_or(config.listen);
    tracing::info!(region = %config.region, cluster = %config.cluster, %seed_addr, %holder, "manager started (standing by until it holds the lease)");
    let mut manager = Manager {
        config,
        client,
        store,
        seed_addr,
        hosts: BTreeMap::new(),
        ids: HashMap::new(),
        rollouts: BTreeMap::new(),
        events,
        manifests,
        metrics,
        last_reported: HashMap::new(),
        next_session: 0,
        downloads: BTreeMap::new(),
        status: ManagerStatus { holder: holder.clone(), role: "standby".into(), ..ManagerStatus::default() },
        holder,
        lease_until: None,
        active_flag,
    };
    loop {
        // Far in the future while standing by: only a grant makes the manager act.
        let deadline = manager.lease_until.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        let event = tokio::select! {
            event = inbox.recv() => event,
            _ = shutdown.changed() => None,
            () = tokio::time::sleep_until(deadline) => Some(Event::Tick),
        };
        let Some(event) = event else { break };
        // A lease that ran out stops the manager before it handles anything else.
        manager.check_lease();
        manager.handle(event);
        manager.schedule();
    }
    lease_task.abort();
    if manager.is_active() {
        manager.active_flag.store(false, Ordering::Relaxed);
        lease::release(manager.client.as_ref(), lease_request).await;
    }
    transport.close(b"manager shutting down");
    Ok(())
}

/// Long-polls the desired versions and forwards every answer.
async fn follow_desired<C: ControlPlane>(client: Arc<C>, events: mpsc::UnboundedSender<Event>) {
    let mut after = None;
    loop {
        match client.desired(after, Duration::from_secs(20)).await {
            Ok(desired) => {
                after = Some(desired.changed_at_index);
                if events.send(Event::Desired(desired)).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!("cannot read desired versions: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Waits until `digest` is replicated in the region's store, then loads its manifest from there.
async fn wait_for_replication<C: ControlPlane>(
    client: Arc<C>,
    store: Store,
    region: Region,
    digest: Digest,
    service: ServiceName,
    generation: u64,
    events: mpsc::UnboundedSender<Event>,
) {
    for _attempt in 0..100_000u32 {
        let replicated = match client.artifact(&digest).await {
            Ok(record) => record.replication.get(&region) == Some(&ReplicationStatus::Replicated),
            Err(e) => {
                tracing::warn!(%digest, "cannot read the artifact's replication: {e}");
                false
            }
        };
        if replicated {
            match read_manifest(&store, &digest).await {
                Ok(Some(manifest)) => {
                    let _ = events.send(Event::Ready { service, generation, manifest });
                    return;
                }
                Ok(None) => tracing::warn!(%digest, "replicated but the regional store has no manifest yet"),
                Err(e) => tracing::warn!(%digest, "cannot read the manifest from the regional store: {e}"),
            }
        }
        if events.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the seed needs outside the event loop.
#[derive(Clone)]
struct Seed {
    store: Store,
    manifests: Arc<RwLock<HashMap<Digest, Manifest>>>,
    metrics: Arc<ManagerMetrics>,
    /// Only the lease holder seeds.
    active: Arc<AtomicBool>,
}

/// Accepts host control sessions and seed chunk requests.
async fn accept<S: SendHalf, R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    mut incoming: mpsc::UnboundedReceiver<Incoming<S, R>>,
    events: mpsc::UnboundedSender<Event>,
    seed: Seed,
) {
    while let Some(Incoming { send, mut recv, .. }) = incoming.recv().await {
        let (events, seed) = (events.clone(), seed.clone());
        tokio::spawn(async move {
            match read_frame::<StreamOpen>(&mut recv).await {
                Ok(Some(StreamOpen::Control { name, data_addr, declaration })) => {
                    control_stream(events, name, data_addr, declaration, send, recv).await
                }
                Ok(Some(StreamOpen::Chunk(request))) => serve_seed_chunk(&seed, request, send).await,
                _ => {}
            }
        });
    }
}

async fn control_stream<S: SendHalf, R: tokio::io::AsyncRead + Unpin>(
    events: mpsc::UnboundedSender<Event>,
    name: String,
    addr: SocketAddr,
    declaration: HostDeclaration,
    mut send: S,
    mut recv: R,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (id_tx, id_rx) = oneshot::channel();
    if let Err(e) = declaration.validate() {
        tracing::warn!(host = %name, "host refused: {e}");
        let _ = write_frame(&mut send, &ManagerMessage::Refused { reason: format!("bad declaration: {e}") }).await;
        send.finish_and_wait().await;
        return;
    }
    if events.send(Event::HostJoined { name: name.clone(), addr, declaration, tx, id: id_tx }).is_err() {
        return;
    }
    let (id, session) = match id_rx.await {
        Ok(Ok(joined)) => joined,
        Ok(Err(reason)) => {
            tracing::info!(host = %name, "host refused: {reason}");
            let _ = write_frame(&mut send, &ManagerMessage::Refused { reason }).await;
            send.finish_and_wait().await;
            return;
        }
        Err(_) => return,
    };
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if write_frame(&mut send, &message).await.is_err() {
                break;
            }
        }
    });
    while let Ok(Some(message)) = read_frame::<HostMessage>(&mut recv).await {
        if events.send(Event::Host { id, message }).is_err() {
            break;
        }
    }
    writer.abort();
    let _ = events.send(Event::HostGone { id, session });
    tracing::info!(host = %name, id, "host disconnected");
}

async fn serve_seed_chunk<S: SendHalf>(seed: &Seed, request: crate::protocol::ChunkRequest, mut send: S) {
    let (store, metrics) = (&seed.store, &seed.metrics);
    let hash = seed
        .manifests
        .read()
        .expect("manifests lock")
        .get(&request.digest)
        .and_then(|m| m.chunk_hash(request.chunk as u64).ok().cloned());
    let answer = match hash {
        _ if !seed.active.load(Ordering::Relaxed) => Err("this manager stands by; it does not seed".to_string()),
        None => Err("unknown artifact or chunk".to_string()),
        Some(hash) => {
            let key = Key::from(Manifest::chunk_key(&hash));
            match store.get(&key).await {
                Ok(result) => result.bytes().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    match answer {
        Ok(bytes) => {
            let len = bytes.len() as u64;
            if write_frame(&mut send, &ChunkAnswer::Ok { len }).await.is_ok() {
                let _ = send.write_bytes(bytes).await;
            }
            metrics.seed_served(len);
        }
        Err(reason) => {
            tracing::warn!(digest = %request.digest, chunk = request.chunk, "seed cannot serve: {reason}");
            let _ = write_frame(&mut send, &ChunkAnswer::Refused(reason)).await;
        }
    }
    send.finish_and_wait().await;
}

/// Test-only bugs for the simulation's self-test; off unless the `fault-injection` feature is on.
pub mod fault_injection {
    #[cfg(feature = "fault-injection")]
    thread_local! {
        static IGNORE_TARGETING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        static IGNORE_WAVES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    /// Turns on (for this thread) a manager that sends every deploy to every host, whatever it runs, and
    /// hosts that skip their own check of it: the bug the simulation's `host_runs_only_its_services` must
    /// catch.
    #[cfg(feature = "fault-injection")]
    pub fn ignore_targeting(on: bool) {
        IGNORE_TARGETING.with(|t| t.set(on));
    }
    /// Whether the bug is on; always false without the feature.
    pub fn ignores_targeting() -> bool {
        #[cfg(feature = "fault-injection")]
        {
            IGNORE_TARGETING.with(|t| t.get())
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            false
        }
    }
    /// Turns on (for this thread) a manager that switches every targeted host as soon as it holds the
    /// bytes, whatever waves are open: the bug the simulation's `wave_order` must catch.
    #[cfg(feature = "fault-injection")]
    pub fn ignore_waves(on: bool) {
        IGNORE_WAVES.with(|t| t.set(on));
    }
    /// Whether the bug is on; always false without the feature.
    pub fn ignores_waves() -> bool {
        #[cfg(feature = "fault-injection")]
        {
            IGNORE_WAVES.with(|t| t.get())
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            false
        }
    }
}
