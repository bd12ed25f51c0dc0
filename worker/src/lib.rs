//! Cascade's build worker.
//!
//! A long-running process that claims one job at a time from any node ([`run`]), fetches exactly the
//! requested commit from a mirror cache ([`git`]), reads the recipe from the commit itself ([`recipe`]), runs
//! it in a sandbox ([`sandbox`]) with a hard timeout ([`process`]), uploads the artifact as verified chunks,
//! and reports ([`build`]). Start as many as the queue needs; they coordinate only through the leases that
//! the replicated state hands out.

pub mod build;
pub mod config;
pub mod git;
pub mod metrics;
pub mod process;
pub mod recipe;
pub mod sandbox;

pub use config::WorkerConfig;

use cascade_client::blobs::{open_store, Store};
use cascade_client::Client;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What every build attempt of this worker shares.
#[derive(Clone)]
pub struct Worker {
    /// The configuration.
    pub config: Arc<WorkerConfig>,
    /// The control plane.
    pub client: Arc<Client>,
    /// The `main` blob store.
    pub store: Store,
    /// Git mirrors.
    pub mirrors: git::MirrorCache,
    /// What it counts for `/metrics`.
    pub metrics: Arc<metrics::WorkerMetrics>,
}

impl Worker {
    /// Opens the store and the client.
    pub fn new(mut config: WorkerConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.work_dir)
            .map_err(|e| anyhow::anyhow!("cannot create work_dir {}: {e}", config.work_dir.display()))?;
        // The sandbox binds paths at the same place: they must be absolute.
        config.work_dir = std::fs::canonicalize(&config.work_dir)
            .map_err(|e| anyhow::anyhow!("cannot resolve work_dir {}: {e}", config.work_dir.display()))?;
        config.sandbox.check(&config.work_dir).map_err(|e| anyhow::anyhow!("worker {}: {e}", config.id))?;
        if config.sandbox.kind == sandbox::SandboxKind::None {
            tracing::warn!(worker = %config.id, "[sandbox] kind = \"none\": builds run with this worker's own rights and see its config and credentials");
        }
        let client = Arc::new(Client::new(&config.servers, &config.token)?);
        let store = open_store(&config.store)?;
        let mirrors =
            git::MirrorCache::new(config.work_dir.join("mirrors"), Duration::from_secs(config.git_timeout_secs));
        let metrics = Arc::new(metrics::WorkerMetrics::new());
        Ok(Self { config: Arc::new(config), client, store, mirrors, metrics })
    }
}

/// Longest pause between claim attempts when the cluster is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Claims and runs jobs until `shutdown` becomes true. A build in progress at shutdown is stopped and
/// reported as a retryable failure, so another worker picks it up at once instead of after the stale timeout.
pub async fn run(worker: Worker, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let wait = Duration::from_secs(worker.config.claim_wait_secs);
    let mut backoff = Duration::from_millis(200);
    tracing::info!(worker = %worker.config.id, servers = ?worker.config.servers, "worker started");
    // Held until the loop ends: dropping it stops the server.
    let _metrics_server = match worker.config.metrics_listen {
        Some(listen) => {
            let metrics = worker.metrics.clone();
            Some(cascade_client::metrics_http::serve(listen, move || metrics.render()).await?)
        }
        None => None,
    };
    loop {
        if *shutdown.borrow() {
            break;
        }
        let claimed = tokio::select! {
            claimed = worker.client.claim(&worker.config.id, wait) => claimed,
            _ = shutdown.changed() => break,
        };
        match claimed {
            Ok(Some(claim)) => {
                backoff = Duration::from_millis(200);
                let job = claim.job.id;
                tracing::info!(%job, attempt = claim.lease.attempt, commit = %claim.job.commit, "claimed");
                let outcome = build::execute(&worker, claim, shutdown.clone()).await;
                tracing::info!(%job, ?outcome, "attempt ended");
            }
            Ok(None) => backoff = Duration::from_millis(200),
            Err(e) => {
                tracing::warn!("claim failed, retrying in {backoff:?}: {e}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::info!(worker = %worker.config.id, "worker stopped");
    Ok(())
}
