//! One build attempt, from claim to report: checkout, run, upload, report, with heartbeats throughout.

use crate::git::GitError;
use crate::process::{log_tail, run_build, BuildCommand, BuildExit, StopReason};
use crate::recipe::Recipe;
use crate::Worker;
use cascade_client::blobs::{upload_file, upload_file_multipart, UploadOptions};
use cascade_client::ClientError;
use cascade_core::api::ClaimResponse;
use cascade_core::job::MAX_REASON_BYTES;
use cascade_core::{Artifact, Job, JobStatus, Lease, Manifest};
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutPayload};
use std::future::Future;
use std::path::Path;
use tokio::sync::watch;

/// Bytes of log shown live and quoted in a failure reason.
const LIVE_TAIL_BYTES: usize = 64 * 1024;

/// How an attempt ended, as the worker will report it.
#[derive(Debug)]
pub enum Outcome {
    /// Built and uploaded.
    Succeeded(Box<Artifact>),
    /// Did not produce an artifact. `retryable` is true only for the worker's or the infrastructure's faults.
    Failed {
        /// Why, for the person who asked.
        reason: String,
        /// Worth another attempt on another worker.
        retryable: bool,
    },
    /// Stopped from outside; the worker reports nothing (cancel, lost lease) or a retryable failure (shutdown).
    Stopped(StopReason),
}

impl Outcome {
    fn failed(reason: impl Into<String>, retryable: bool) -> Self {
        Self::Failed { reason: reason.into(), retryable }
    }
}

/// Runs one claimed job to its end and reports the result. `shutdown` resolving stops the build.
pub async fn execute(worker: &Worker, claim: ClaimResponse, shutdown: watch::Receiver<bool>) -> Outcome {
    let ClaimResponse { job, lease } = claim;
    let started = std::time::Instant::now();
    worker.metrics.build_started(queue_wait(&job));
    let outcome = execute_attempt(worker, job, lease, shutdown).await;
    worker.metrics.build_finished(summary_label(&outcome), started.elapsed());
    outcome
}

/// How long `job` (just claimed) waited since its submission, by the leader's clock.
fn queue_wait(job: &Job) -> std::time::Duration {
    match &job.status {
        JobStatus::Running { started_at, .. } => {
            std::time::Duration::from_millis(started_at.saturating_since(job.submitted_at))
        }
        _ => std::time::Duration::ZERO,
    }
}

/// The `outcome` label of `cascade_worker_builds_finished_total`.
fn summary_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded(_) => "succeeded",
        Outcome::Failed { retryable: true, .. } => "retryable_failure",
        Outcome::Failed { .. } => "failed",
        Outcome::Stopped(_) => "stopped",
    }
}

async fn execute_attempt(worker: &Worker, job: Job, lease: Lease, shutdown: watch::Receiver<bool>) -> Outcome {
    let attempt_dir = worker.config.work_dir.join("builds").join(format!("{}-{}", job.id, lease.attempt));
    let _ = std::fs::remove_dir_all(&attempt_dir);
    if let Err(e) = std::fs::create_dir_all(&attempt_dir) {
        let outcome = Outcome::failed(format!("worker {} cannot create its work dir: {e}", worker.config.id), true);
        report(worker, lease, &outcome).await;
        return outcome;
    }
    let log = attempt_dir.join("build.log");
    let (stop_tx, stop_rx) = watch::channel(None);
    let heartbeats = tokio::spawn(heartbeat_loop(worker.clone(), lease, log.clone(), stop_tx, shutdown));
    let outcome = attempt(worker, &job, &attempt_dir, &log, stop_rx).await;
    heartbeats.abort();
    let log_key = Manifest::build_log_key(job.id, lease.attempt);
    if let Err(e) = upload_file_multipart(&worker.store, &log, &log_key).await {
        tracing::warn!(job = %job.id, "could not upload the build log: {e}");
    }
    report(worker, lease, &outcome).await;
    if let Err(e) = std::fs::remove_dir_all(&attempt_dir) {
        tracing::warn!(dir = %attempt_dir.display(), "could not clean the work dir: {e}");
    }
    outcome
}

/// Checkout, build, upload.
async fn attempt(
    worker: &Worker,
    job: &Job,
    attempt_dir: &Path,
    log: &Path,
    mut stop: watch::Receiver<Option<StopReason>>,
) -> Outcome {
    note(log, &format!("cascade: building {} at {} for {}", job.repo, job.commit, job.service));
    // The checkout counts toward the build's time: git and the recipe together stay within the maximum.
    let started = std::time::Instant::now();
    let credential = worker.config.credential_for(job.repo.as_str());
    let mirror = match interruptible(&mut stop, worker.mirrors.ensure_commit(&job.repo, &job.commit, credential)).await
    {
        Err(reason) => return Outcome::Stopped(reason),
        Ok(Err(e @ GitError::CommitNotFound { .. })) => return Outcome::failed(e.to_string(), false),
        Ok(Err(e)) => return Outcome::failed(e.to_string(), true),
        Ok(Ok(mirror)) => mirror,
    };
    let checkout = attempt_dir.join("src");
    match interruptible(&mut stop, worker.mirrors.checkout(&job.repo, &mirror, &job.commit, &checkout)).await {
        Err(reason) => return Outcome::Stopped(reason),
        Ok(Err(e)) => return Outcome::failed(e.to_string(), true),
        Ok(Ok(())) => {}
    }
    let recipe = match Recipe::load(&checkout, worker.config.max_deploy_timeout_secs) {
        Ok(recipe) => recipe,
        Err(e) => return Outcome::failed(e.to_string(), false),
    };
    if let Err(refused) = worker.config.sandbox.allows(recipe.network) {
        return Outcome::failed(refused, false);
    }
    let budget = std::time::Duration::from_secs(worker.config.max_build_timeout_secs);
    let left = budget.saturating_sub(started.elapsed()).max(std::time::Duration::from_secs(1));
    let timeout = recipe.timeout(worker.config.max_build_timeout_secs).min(left);
    note(log, &format!("cascade: $ {} (timeout {}s)", recipe.command, timeout.as_secs()));
    let command = BuildCommand {
        script: recipe.command.clone(),
        dir: checkout.clone(),
        scratch: attempt_dir.join("home"),
        env: vec![
            ("CASCADE_BUILD_ID".into(), job.id.to_string()),
            ("CASCADE_COMMIT".into(), job.commit.to_string()),
            ("CASCADE_SERVICE".into(), job.service.to_string()),
        ],
        timeout,
        network: recipe.network,
        read_only: vec![mirror.clone()],
    };
    let exit = match run_build(&command, &worker.config.sandbox, log, stop.clone()).await {
        Ok(exit) => exit,
        Err(e) => return Outcome::failed(format!("worker could not start the build command: {e}"), true),
    };
    match exit {
        BuildExit::Success => {}
        BuildExit::Failed(what) => return Outcome::failed(with_tail(&what, log), false),
        BuildExit::TimedOut(after) => {
            let what = format!("timed out after {}s; every process of the build was killed", after.as_secs());
            note(log, &format!("cascade: {what}"));
            return Outcome::failed(with_tail(&what, log), false);
        }
        BuildExit::Stopped(reason) => return Outcome::Stopped(reason),
    }
    let artifact_path = checkout.join(&recipe.artifact);
    match std::fs::metadata(&artifact_path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return Outcome::failed(format!("artifact {} is not a regular file", recipe.artifact.display()), false)
        }
        Err(_) => {
            let what = format!("the build command succeeded but did not produce {}", recipe.artifact.display());
            return Outcome::failed(with_tail(&what, log), false);
        }
    }
    note(log, &format!("cascade: uploading {}", recipe.artifact.display()));
    let options = UploadOptions { chunk_size: worker.config.chunk_size, concurrency: worker.config.upload_concurrency };
    match interruptible(&mut stop, upload_file(&worker.store, &artifact_path, options)).await {
        Err(reason) => Outcome::Stopped(reason),
        Ok(Err(e)) => Outcome::failed(format!("upload failed: {e}"), true),
        Ok(Ok(manifest)) => {
            note(log, &format!("cascade: uploaded {} bytes, digest {}", manifest.total_size, manifest.digest));
            worker.metrics.uploaded(manifest.total_size);
            Outcome::Succeeded(Box::new(Artifact {
                manifest_key: Manifest::key(&manifest.digest),
                deploy: Box::new(recipe.deploy.clone()),
                digest: manifest.digest,
                size: manifest.total_size,
            }))
        }
    }
}

/// Runs `work` unless a stop arrives first.
async fn interruptible<T>(
    stop: &mut watch::Receiver<Option<StopReason>>,
    work: impl Future<Output = T>,
) -> Result<T, StopReason> {
    if let Some(reason) = *stop.borrow() {
        return Err(reason);
    }
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return Ok(done),
            changed = stop.changed() => match (changed, *stop.borrow()) {
                (_, Some(reason)) => return Err(reason),
                (Ok(()), None) => continue,
                (Err(_), None) => return Err(StopReason::LeaseLost),
            },
        }
    }
}

/// Heartbeats every interval and publishes the live log tail; turns a cancel, a lost lease or a shutdown
/// into a stop.
async fn heartbeat_loop(
    worker: Worker,
    lease: Lease,
    log: std::path::PathBuf,
    stop: watch::Sender<Option<StopReason>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let tail_key = Key::from(Manifest::build_log_tail_key(lease.job, lease.attempt));
    let mut ticker = tokio::time::interval(worker.config.heartbeat_interval());
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => {
                let _ = stop.send(Some(StopReason::Shutdown));
                return;
            }
        }
        if *shutdown.borrow() {
            let _ = stop.send(Some(StopReason::Shutdown));
            return;
        }
        let answer = worker.client.heartbeat(lease).await;
        worker.metrics.heartbeat(answer.is_ok());
        match answer {
            Ok(ack) if ack.cancelled => {
                tracing::info!(job = %lease.job, "build cancelled: stopping it");
                let _ = stop.send(Some(StopReason::Cancelled));
                return;
            }
            Ok(_) => {}
            Err(e) if lease_is_gone(&e) => {
                tracing::warn!(job = %lease.job, attempt = lease.attempt, "lease lost, stopping the build: {e}");
                let _ = stop.send(Some(StopReason::LeaseLost));
                return;
            }
            // The cluster may be electing a leader: keep building, the next beat will tell.
            Err(e) => tracing::warn!(job = %lease.job, "heartbeat failed: {e}"),
        }
        let tail = log_tail(&log, LIVE_TAIL_BYTES);
        if let Err(e) = worker.store.put(&tail_key, PutPayload::from(tail.into_bytes())).await {
            tracing::debug!(job = %lease.job, "could not publish the log tail: {e}");
        }
    }
}

/// The server refused the lease: another attempt owns the job, or the job ended.
fn lease_is_gone(error: &ClientError) -> bool {
    matches!(error, ClientError::Api { error, .. } if error == "stale_lease" || error == "wrong_state" || error == "not_found")
}

/// Reports the outcome; a refusal means another attempt owns the job, which is logged and dropped.
async fn report(worker: &Worker, lease: Lease, outcome: &Outcome) {
    let result = match outcome {
        Outcome::Succeeded(artifact) => worker.client.succeed(lease, (**artifact).clone()).await.map(|_| ()),
        Outcome::Failed { reason, retryable } => worker.client.fail(lease, reason, *retryable).await.map(|_| ()),
        Outcome::Stopped(StopReason::Shutdown) => {
            let reason = format!("worker {} shut down during the build", worker.config.id);
            worker.client.fail(lease, &reason, true).await.map(|_| ())
        }
        Outcome::Stopped(_) => return,
    };
    match result {
        Ok(()) => tracing::info!(job = %lease.job, attempt = lease.attempt, "reported {}", summary(outcome)),
        Err(e) => tracing::warn!(job = %lease.job, attempt = lease.attempt, "report refused or lost: {e}"),
    }
}

fn summary(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded(_) => "success",
        Outcome::Failed { retryable: true, .. } => "retryable failure",
        Outcome::Failed { .. } => "failure",
        Outcome::Stopped(_) => "stop",
    }
}

/// `what` followed by as much of the log's end as fits in a reason.
fn with_tail(what: &str, log: &Path) -> String {
    let room = MAX_REASON_BYTES.saturating_sub(what.len() + 32).min(3000);
    let tail = log_tail(log, room);
    if tail.trim().is_empty() {
        what.to_string()
    } else {
        format!("{what}; log tail:\n{}", tail.trim_end())
    }
}

/// Appends a worker line to the build log, so the log tells the whole story.
fn note(log: &Path, line: &str) {
    use std::io::Write as _;
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(file, "{line}");
    }
}
