//! The leader-only replicator and synchronizer: every succeeded artifact reaches every regional store, and
//! the replicated state says, per region, whether it is there.
//!
//! One loop does both. Every `poll_interval` it looks at artifacts not yet `replicated` everywhere (new
//! builds, regions that failed before); every `sync_interval` it checks every artifact in every region again
//! (the synchronizer: a deleted or corrupted chunk turns the region back to `copying` and, in copy mode, is
//! repaired at once). Status changes go through the log like any other command, and only when they change,
//! so an idle cluster writes nothing.

use crate::config::ReplicationMode;
use crate::node::Node;
use cascade_client::blobs::{check_chunks, open_store, read_manifest, replicate, BlobError, Store, StoresConfig};
use cascade_core::state::{ArtifactRecord, ReplicationStatus};
use cascade_core::{Command, Principal, Region};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most artifacts one pass looks at, so a huge history cannot stall the loop; the rest wait for the next pass.
const MAX_ARTIFACTS_PER_PASS: usize = 1000;

/// The opened stores.
pub struct Blobs {
    /// Where workers upload.
    pub main: Store,
    /// One store per region.
    pub regions: BTreeMap<Region, Store>,
}

impl Blobs {
    /// Opens every configured store (no request is made yet: a store that is down shows up per region later).
    pub fn open(config: &StoresConfig) -> Result<Self, BlobError> {
        let main = open_store(&config.main)?;
        let mut regions = BTreeMap::new();
        for (name, store) in &config.regions {
            let region = Region::parse(name.clone()).map_err(|e| BlobError::Config(format!("region {name}: {e}")))?;
            regions.insert(region, open_store(store)?);
        }
        Ok(Self { main, regions })
    }
}

/// Runs until the task is aborted. Does nothing while this node is not the leader.
///
/// One loop per region, so a slow or unreachable regional store delays only its own region.
pub async fn run(node: Arc<Node>, blobs: Arc<Blobs>) {
    let config = &node.config.replication;
    if config.sync_interval_secs > 60 {
        tracing::warn!(secs = config.sync_interval_secs, "synchronizer runs less often than once a minute");
    }
    let loops = blobs.regions.keys().map(|region| region_loop(node.clone(), blobs.clone(), region.clone()));
    futures::future::join_all(loops).await;
}

/// The replicator and synchronizer of one region.
async fn region_loop(node: Arc<Node>, blobs: Arc<Blobs>, region: Region) {
    let config = node.config.replication.clone();
    let sync_interval = Duration::from_secs(config.sync_interval_secs);
    let actor = Principal::parse("replicator").expect("a valid principal");
    let Some(store) = blobs.regions.get(&region).cloned() else { return };
    let mut ticker = tokio::time::interval(Duration::from_millis(config.poll_interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_full_pass: Option<Instant> = None;
    loop {
        ticker.tick().await;
        if !node.is_leader() {
            last_full_pass = None;
            continue;
        }
        let full = last_full_pass.is_none_or(|at| at.elapsed() >= sync_interval);
        let work: Vec<ArtifactRecord> = node.read(|view| {
            view.state
                .artifacts
                .values()
                .filter(|record| full || record.replication.get(&region) != Some(&ReplicationStatus::Replicated))
                .take(MAX_ARTIFACTS_PER_PASS)
                .cloned()
                .collect()
        });
        if full {
            last_full_pass = Some(Instant::now());
        }
        for record in work {
            let status = sync_region(&node, &blobs, &store, &region, &record, &actor).await;
            record_status(&node, &actor, &record, &region, status).await;
        }
    }
}

/// Brings one artifact in one region up to date and returns its status there.
async fn sync_region(
    node: &Arc<Node>,
    blobs: &Blobs,
    target: &Store,
    region: &Region,
    record: &ArtifactRecord,
    actor: &Principal,
) -> ReplicationStatus {
    let config = &node.config.replication;
    let digest = &record.artifact.digest;
    let manifest = match read_manifest(&blobs.main, digest).await {
        Ok(Some(manifest)) => manifest,
        Ok(None) => return error(format!("the main store has no manifest for {digest}")),
        Err(e) => return error(format!("main store: {e}")),
    };
    let check = match check_chunks(target, &manifest, config.verify, config.concurrency).await {
        Ok(check) => check,
        Err(e) => return error(format!("store of {region}: {e}")),
    };
    if check.complete() {
        return ReplicationStatus::Replicated;
    }
    if !check.corrupt.is_empty() {
        tracing::warn!(%digest, %region, chunks = ?check.corrupt, "corrupt chunks in the regional store");
    }
    let progress = ReplicationStatus::Copying { chunks_done: check.chunks_ok, chunks_total: check.chunks_total };
    if config.mode == ReplicationMode::StoreNative {
        return if check.chunks_ok == 0 && !check.manifest_ok { ReplicationStatus::Pending } else { progress };
    }
    record_status(node, actor, record, region, progress).await;
    let started = Instant::now();
    match replicate(&blobs.main, target, &manifest, config.verify, config.concurrency).await {
        Ok(report) => {
            tracing::info!(
                %digest, %region, copied = report.copied, skipped = report.skipped, bytes = report.bytes_copied,
                secs = started.elapsed().as_secs_f64(), "replicated"
            );
            ReplicationStatus::Replicated
        }
        Err(e) => error(format!("copy into {region}: {e}")),
    }
}

fn error(reason: String) -> ReplicationStatus {
    ReplicationStatus::Error { reason: cascade_core::job::bounded_reason(&reason) }
}

/// Records a region's status if it differs from what the state already says.
async fn record_status(
    node: &Arc<Node>,
    actor: &Principal,
    record: &ArtifactRecord,
    region: &Region,
    status: ReplicationStatus,
) {
    let digest = &record.artifact.digest;
    let current = node.read(|view| view.state.artifacts.get(digest).and_then(|r| r.replication.get(region).cloned()));
    if current.as_ref() == Some(&status) {
        return;
    }
    if let ReplicationStatus::Error { reason } = &status {
        tracing::warn!(%digest, %region, "replication: {reason}");
    }
    let command = Command::RecordReplication { digest: digest.clone(), region: region.clone(), status };
    match node.write(actor.clone(), command).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(%digest, %region, "replication status refused: {e}"),
        Err(e) => tracing::warn!(%digest, %region, "replication status not committed: {e}"),
    }
}
