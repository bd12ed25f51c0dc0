//! The region agents in the simulation: production's manager (`manager::run_with`) and host agent
//! (`host::run_with`) on turmoil hosts, their network ([`super::agent_net`]), the manager's calls to the
//! cluster ([`SimControl`]), and what production's worker and replicator do with blobs: a worker uploads a
//! real (small) artifact as chunks and manifest before it reports success, and the leader copies every
//! succeeded artifact into each region's store, verified, and then commits `RecordReplication` as
//! `raft-node`'s replicator does (its `blobs::replicate` hashes on tokio's blocking pool, which the
//! single-threaded simulation cannot schedule deterministically, so the copy is done inline here).

use super::agent_net::{SimAgentTransport, AGENT_PORT};
use super::net;
use super::world::{Activation, Shared};
use cascade_client::blobs::{read_manifest, Store, StoreConfig};
use cascade_core::api::{DesiredVersions, ManagerLeaseRequest, RolloutReport};
use cascade_core::state::{ArtifactRecord, ReplicationStatus};
use cascade_core::{
    Artifact, ClusterName, Command, CommandError, CommandOutput, Digest, Manifest, ManifestBuilder, Principal, Region,
};
use cascade_raft_node::Node;
use cascade_region_agent::blocking::Blocking;
use cascade_region_agent::host::{self, HostConfig, HostRuntime};
use cascade_region_agent::manager::{self, ControlPlane, LeaseError, ManagerConfig};
use cascade_region_agent::tls::TlsFiles;
use futures::future::BoxFuture;
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt as _, PutPayload};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The simulation's chunk size: the smallest a manifest allows, so every artifact has several chunks.
pub const CHUNK_SIZE: u64 = cascade_core::manifest::MIN_CHUNK_SIZE;

/// The managers' lease time to live (production's default is 10 s).
const LEASE_TTL_MS: u64 = 3_000;

/// Longest long poll of the desired versions in the simulation (production's manager asks for 20 s).
const MAX_DESIRED_WAIT: Duration = Duration::from_secs(5);

/// How long a manager's call waits for an answer beyond its long poll.
const CALL_TIMEOUT: Duration = Duration::from_secs(4);

/// How often the leader's replicator looks for artifacts to copy.
const REPLICATE_EVERY: Duration = Duration::from_millis(300);

/// Upper bound on the replicator's rounds.
const MAX_ROUNDS: usize = 1_000_000;

/// The cluster of machines each region's manager runs.
pub const CLUSTER: &str = "c1";

/// The region a learner serves (the name `host::config` gives it).
pub fn region_of(learner: &str) -> Region {
    Region::parse(format!("region-{learner}")).expect("a valid region name")
}

fn agent_addr(host: &str) -> SocketAddr {
    SocketAddr::new(turmoil::lookup(host), AGENT_PORT)
}

fn unused_tls() -> TlsFiles {
    TlsFiles { ca: "/nonexistent".into(), cert: "/nonexistent".into(), key: "/nonexistent".into() }
}

/// The manager's calls to the cluster over the simulation's network: its region's learner first, then the
/// voters, moving on after any failure, like production's client with `servers = [learner, voters...]`.
/// Reads (desired versions, artifacts) are answered from the replica asked, as production's are; writes
/// (lease, reports) go through `Node::write`, which forwards them to the leader.
pub struct SimControl {
    servers: Vec<String>,
    next: AtomicUsize,
    actor: Principal,
}

impl SimControl {
    fn server(&self) -> String {
        let next = self.next.load(Ordering::Relaxed);
        self.servers.get(next % self.servers.len().max(1)).cloned().unwrap_or_default()
    }

    fn failed(&self) {
        self.next.fetch_add(1, Ordering::Relaxed);
    }

    async fn write(&self, command: Command) -> Result<CommandOutput, String> {
        let server = self.server();
        match net::write(&server, self.actor.clone(), command, CALL_TIMEOUT).await {
            Ok(Ok(Ok(output))) => Ok(output),
            Ok(Ok(Err(refused))) => Err(format!("refused: {refused}")),
            Ok(Err(e)) => {
                self.failed();
                Err(format!("{server}: {e}"))
            }
            Err(e) => {
                self.failed();
                Err(format!("{server}: {e}"))
            }
        }
    }
}

impl ControlPlane for SimControl {
    fn desired(&self, after: Option<u64>, wait: Duration) -> BoxFuture<'_, Result<DesiredVersions, String>> {
        Box::pin(async move {
            let server = self.server();
            let wait = wait.min(MAX_DESIRED_WAIT);
            net::desired(&server, after, wait, wait + CALL_TIMEOUT).await.map_err(|e| {
                self.failed();
                format!("{server}: {e}")
            })
        })
    }

    fn artifact<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<ArtifactRecord, String>> {
        Box::pin(async move {
            let server = self.server();
            match net::artifact(&server, digest, CALL_TIMEOUT).await {
                Ok(Some(record)) => Ok(record),
                Ok(None) => Err(format!("{server}: no artifact {digest}")),
                Err(e) => {
                    self.failed();
                    Err(format!("{server}: {e}"))
                }
            }
        })
    }

    fn report_rollout<'a>(&'a self, report: &'a RolloutReport) -> BoxFuture<'a, Result<(), String>> {
        let command = Command::ReportRollout(Box::new(report.clone()));
        Box::pin(async move { self.write(command).await.map(|_| ()) })
    }

    fn acquire_manager_lease<'a>(&'a self, request: &'a ManagerLeaseRequest) -> BoxFuture<'a, Result<(), LeaseError>> {
        let command = Command::AcquireManagerLease {
            region: request.region.clone(),
            cluster: request.cluster.clone(),
            holder: request.holder.clone(),
            ttl_ms: request.ttl_ms,
        };
        Box::pin(async move {
            let server = self.server();
            match net::write(&server, self.actor.clone(), command, CALL_TIMEOUT).await {
                Ok(Ok(Ok(_))) => Ok(()),
                Ok(Ok(Err(held @ CommandError::ManagerLeaseHeld { .. }))) => Err(LeaseError::Held(held.to_string())),
                Ok(Ok(Err(other))) => Err(LeaseError::Unreachable(other.to_string())),
                Ok(Err(e)) => {
                    self.failed();
                    Err(LeaseError::Unreachable(format!("{server}: {e}")))
                }
                Err(e) => {
                    self.failed();
                    Err(LeaseError::Unreachable(format!("{server}: {e}")))
                }
            }
        })
    }
}

/// Runs region manager `index` (into `World::agents`) until its host crashes.
pub async fn run_manager(shared: Shared, index: usize) -> turmoil::Result {
    let (name, servers, region, store) = {
        let mut world = shared.borrow_mut();
        let region_index = world.agents[index].region;
        let learner = world.nodes.iter().filter(|n| !n.voter).nth(region_index).map(|n| n.name.clone());
        let learner = learner.ok_or("no learner for this region")?;
        let mut servers = vec![super::world::addr(&learner)];
        servers.extend(world.nodes.iter().filter(|n| n.voter).map(|n| super::world::addr(&n.name)));
        let region = region_of(&learner);
        let store = world.blobs.as_ref().and_then(|b| b.regions.get(&region).cloned()).ok_or("no regional store")?;
        let slot = &mut world.agents[index];
        slot.incarnation += 1;
        let name = slot.name.clone();
        let incarnation = slot.incarnation;
        world.event(&name, format!("manager started (incarnation {incarnation})"));
        (name, servers, region, store)
    };
    let config = ManagerConfig {
        region,
        cluster: ClusterName::parse(CLUSTER)?,
        servers: Vec::new(),
        token: String::new(),
        store: StoreConfig::Local { path: "/nonexistent".into() },
        listen: SocketAddr::from(([0, 0, 0, 0], AGENT_PORT)),
        advertise: Some(agent_addr(&name)),
        tls: unused_tls(),
        report_interval_ms: 1_000,
        status_file: None,
        metrics_listen: None,
        name: Some(name.clone()),
        lease_ttl_ms: LEASE_TTL_MS,
    };
    let control = Arc::new(SimControl { servers, next: AtomicUsize::new(0), actor: Principal::parse(name)? });
    let (_keep, shutdown) = tokio::sync::watch::channel(false);
    manager::run_with(config, control, store, Arc::new(SimAgentTransport), shutdown).await?;
    Ok(())
}

/// Runs host agent `index` (into `World::agents`) until its host crashes.
pub async fn run_host(shared: Shared, index: usize) -> turmoil::Result {
    let (name, manager, data_dir, corrupt, services, activations) = {
        let mut world = shared.borrow_mut();
        let region = world.agents[index].region;
        let manager = world.agents.iter().find(|a| a.manager && a.region == region).map(|a| a.name.clone());
        let manager = manager.ok_or("no manager for this region")?;
        let activations = world.activations.clone();
        let slot = &mut world.agents[index];
        slot.incarnation += 1;
        let (name, dir, corrupt, services, incarnation) =
            (slot.name.clone(), slot.data_dir.clone(), slot.corrupt, slot.services.clone(), slot.incarnation);
        let note = if corrupt { ", serves corrupt chunks" } else { "" };
        let runs: Vec<&str> = services.iter().map(|s| s.as_str()).collect();
        world.event(&name, format!("host agent started (incarnation {incarnation}, runs {runs:?}{note})"));
        (name, manager, dir, corrupt, services, activations)
    };
    let config = HostConfig {
        name: name.clone(),
        listen: SocketAddr::from(([0, 0, 0, 0], AGENT_PORT)),
        advertise: Some(agent_addr(&name)),
        manager: Some(agent_addr(&manager)),
        managers: Vec::new(),
        data_dir,
        keep_releases: 3,
        services,
        labels: Default::default(),
        env: Default::default(),
        fetch_timeout_secs: 10,
        tls: unused_tls(),
        corrupt_uploads: corrupt,
        metrics_listen: None,
    };
    let hook: host::ActivationHook = Arc::new(move |service, digest| {
        if let Ok(mut pending) = activations.lock() {
            pending.push(Activation { agent: index, service: service.clone(), digest: digest.clone() });
        }
    });
    let runtime =
        HostRuntime { transport: Arc::new(SimAgentTransport), blocking: Blocking::Inline, on_activated: Some(hook) };
    let (_keep, shutdown) = tokio::sync::watch::channel(false);
    host::run_with(config, runtime, shutdown).await?;
    Ok(())
}

/// What a successful simulated build produced: a real artifact of 2–5 chunks, uploaded to `store` chunks
/// first and manifest last, as `blobs::upload_file` does. Its first chunk is the same in every build of a
/// run (a shared base layer), so hosts also reuse chunks from kept releases.
pub async fn upload_artifact(store: &Store, run_seed: u64, content_seed: u64) -> Result<Artifact, String> {
    let mut base = vec![0u8; CHUNK_SIZE as usize];
    StdRng::seed_from_u64(run_seed ^ 0xba5e).fill_bytes(&mut base);
    let mut rng = StdRng::seed_from_u64(content_seed);
    let size = rng.gen_range(CHUNK_SIZE + 1..=5 * CHUNK_SIZE) as usize;
    let mut content = vec![0u8; size];
    content[..CHUNK_SIZE as usize].copy_from_slice(&base);
    rng.fill_bytes(&mut content[CHUNK_SIZE as usize..]);
    let mut builder = ManifestBuilder::new(CHUNK_SIZE).map_err(|e| e.to_string())?;
    for chunk in content.chunks(CHUNK_SIZE as usize) {
        let hash = builder.push(chunk).map_err(|e| e.to_string())?;
        let key = Key::from(Manifest::chunk_key(&hash));
        store.put(&key, PutPayload::from(chunk.to_vec())).await.map_err(|e| e.to_string())?;
    }
    let manifest = builder.finish();
    let key = Manifest::key(&manifest.digest);
    store.put(&Key::from(key.clone()), PutPayload::from(manifest.to_json())).await.map_err(|e| e.to_string())?;
    Ok(Artifact {
        digest: manifest.digest.clone(),
        size: manifest.total_size,
        manifest_key: key,
        deploy: Default::default(),
    })
}

/// Copies `digest` from `main` into `target`, every chunk verified against the manifest, the manifest last.
async fn copy_artifact(main: &Store, target: &Store, digest: &Digest) -> Result<(), String> {
    let manifest = read_manifest(main, digest).await.map_err(|e| e.to_string())?.ok_or("no manifest")?;
    for index in 0..manifest.chunk_count() {
        let hash = manifest.chunk_hash(index).map_err(|e| e.to_string())?;
        let key = Key::from(Manifest::chunk_key(hash));
        let bytes = main.get(&key).await.map_err(|e| e.to_string())?.bytes().await.map_err(|e| e.to_string())?;
        manifest.verify_chunk(index, &bytes).map_err(|e| e.to_string())?;
        target.put(&key, PutPayload::from_bytes(bytes)).await.map_err(|e| e.to_string())?;
    }
    let key = Key::from(Manifest::key(digest));
    target.put(&key, PutPayload::from(manifest.to_json())).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// The replicator on a voter: while its node leads, copies every succeeded artifact into each region's
/// store and commits `RecordReplication` (only when the status changes, like production's).
pub async fn replicate(shared: Shared, node: Arc<Node>, host: String) {
    let Some((main, regions)) = shared.borrow().blobs.as_ref().map(|b| (b.main.clone(), b.regions.clone())) else {
        return;
    };
    let Ok(actor) = Principal::parse("replicator") else { return };
    for _round in 0..MAX_ROUNDS {
        tokio::time::sleep(REPLICATE_EVERY).await;
        if !node.is_leader() {
            continue;
        }
        for (region, store) in &regions {
            let todo: Vec<Digest> = node.read(|v| {
                v.state
                    .artifacts
                    .values()
                    .filter(|r| r.replication.get(region) != Some(&ReplicationStatus::Replicated))
                    .map(|r| r.artifact.digest.clone())
                    .take(8)
                    .collect()
            });
            for digest in todo {
                if let Err(e) = copy_artifact(&main, store, &digest).await {
                    shared.borrow_mut().event(&host, format!("cannot replicate {} to {region}: {e}", short(&digest)));
                    continue;
                }
                let command = Command::RecordReplication {
                    digest: digest.clone(),
                    region: region.clone(),
                    status: ReplicationStatus::Replicated,
                };
                if let Ok(Ok(_)) = node.write(actor.clone(), command).await {
                    shared.borrow_mut().event(&host, format!("replicated {} to {region}", short(&digest)));
                }
            }
        }
    }
}

/// The first 12 hex digits of a digest, for the trace.
pub fn short(digest: &Digest) -> String {
    digest.as_str().rsplit(':').next().unwrap_or_default().chars().take(12).collect()
}
