//! The replicated state and the one function that changes it.
//!
//! [`State::apply`] is deterministic: the same sequence of [`Request`]s yields the same state on every voter,
//! learner and simulated replica. It never reads a clock, never does I/O and never panics on any input that
//! deserialized. A refused command returns an error and leaves the state untouched: every check happens
//! before the first mutation.

use crate::command::{
    ClaimedJob, Command, CommandError, CommandOutput, CommandResult, HeartbeatAck, Request, StaleReport,
};
use crate::ids::{ClusterName, Digest, JobId, Principal, Region, ServiceName, UnixMillis, WorkerId};
use crate::job::{bounded_reason, validate_idempotency_key, Artifact, Job, JobStatus, Lease, DEFAULT_MAX_ATTEMPTS};
pub use crate::rollout::DeployOrigin;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};

/// Most jobs one stale scan touches, so a single log entry's apply stays bounded; the monitor runs again.
pub const MAX_STALE_PER_SCAN: usize = 1000;

/// Deploy history entries kept per service.
pub const MAX_DEPLOY_HISTORY: usize = 100;

/// How far an artifact's copy into one region's store has come.
///
/// Internally tagged (`{"state": "copying", ...}`) in JSON, externally tagged ([`ReplicationStatusBinary`])
/// in bincode, which cannot read internally tagged enums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "state", rename_all = "snake_case")]
pub enum ReplicationStatus {
    /// Not yet started.
    Pending,
    /// Some chunks present.
    Copying {
        /// Chunks present and verified.
        chunks_done: u64,
        /// Chunks in the manifest.
        chunks_total: u64,
    },
    /// Manifest and every chunk present and verified.
    Replicated,
    /// The last attempt failed; the replicator will try again.
    Error {
        /// What went wrong.
        reason: String,
    },
}

/// [`ReplicationStatus`] as binary formats see it: the same variants, externally tagged.
#[derive(Serialize, Deserialize)]
#[serde(remote = "ReplicationStatus")]
enum ReplicationStatusBinary {
    Pending,
    Copying { chunks_done: u64, chunks_total: u64 },
    Replicated,
    Error { reason: String },
}

impl Serialize for ReplicationStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            ReplicationStatus::serialize(self, serializer)
        } else {
            ReplicationStatusBinary::serialize(self, serializer)
        }
    }
}

impl<'de> Deserialize<'de> for ReplicationStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            ReplicationStatus::deserialize(deserializer)
        } else {
            ReplicationStatusBinary::deserialize(deserializer)
        }
    }
}

/// An artifact and where it has been replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// Digest, size and manifest location.
    pub artifact: Artifact,
    /// The build that produced it.
    pub build: JobId,
    /// Per region, how far replication has come.
    pub replication: BTreeMap<Region, ReplicationStatus>,
    /// Per region, when the artifact was last found complete there (after a change to `Replicated`).
    #[serde(default)]
    pub replicated_at: BTreeMap<Region, UnixMillis>,
    /// When replication status last changed.
    pub updated_at: UnixMillis,
}

/// What the people in charge want a rollout to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutControl {
    /// Hosts fetch and activate.
    #[default]
    Running,
    /// Managers start no new transfer or activation until resumed; hosts keep what they have.
    Paused,
    /// Final for this generation: managers stop; hosts keep the release they run (the rollout ends
    /// `aborted`). Roll back to put the previous release back everywhere.
    Aborted,
}

/// The version every machine of a service should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredVersion {
    /// The service.
    pub service: ServiceName,
    /// The succeeded build to run.
    pub build: JobId,
    /// Its artifact.
    pub artifact: Artifact,
    /// Grows by one with every deploy of the service; agents act on a higher generation.
    pub generation: u64,
    /// Who deployed.
    pub set_by: Principal,
    /// When.
    pub set_at: UnixMillis,
    /// Running, paused or aborted.
    #[serde(default)]
    pub control: RolloutControl,
    /// The effective rollout policy: the build's, with the deploy request's overrides.
    #[serde(default)]
    pub policy: crate::rollout::RolloutPolicy,
    /// Waves opened, bake, approval, and the end once there is one.
    #[serde(default)]
    pub progress: crate::rollout::RolloutProgress,
    /// A deploy, a rollback, or an automatic rollback.
    #[serde(default)]
    pub origin: DeployOrigin,
}

/// Host counts a region manager reports for one cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutCounts {
    /// Hosts in the cluster.
    pub total: u64,
    /// Receiving chunks.
    pub fetching: u64,
    /// Whole digest verified, not yet switched to.
    pub verified: u64,
    /// Switched to the release; `activate` or the health probe has not finished yet.
    #[serde(default)]
    pub activating: u64,
    /// Running the desired version.
    pub active: u64,
    /// Failed to fetch, verify, activate or pass the health probe (back on their previous release).
    pub failed: u64,
    /// Targeted hosts the manager knows that are not connected now (not part of `total`).
    #[serde(default)]
    pub offline: u64,
    /// Of `offline`, the hosts the open waves admitted that have no verdict yet. They do not hold a wave
    /// (a fleet always has machines down): the wave goes on without them, and they switch when they return.
    #[serde(default)]
    pub admitted_offline: u64,
    /// Live hosts in the cluster, targeted or not: `total == 0` with hosts here means the placement
    /// matches none of them.
    #[serde(default)]
    pub cluster_hosts: u64,
}

impl std::ops::Add for RolloutCounts {
    type Output = Self;

    /// Counts of two clusters together (the console's and the CLI's totals).
    fn add(self, other: Self) -> Self {
        Self {
            total: self.total + other.total,
            fetching: self.fetching + other.fetching,
            verified: self.verified + other.verified,
            activating: self.activating + other.activating,
            active: self.active + other.active,
            failed: self.failed + other.failed,
            offline: self.offline + other.offline,
            admitted_offline: self.admitted_offline + other.admitted_offline,
            cluster_hosts: self.cluster_hosts + other.cluster_hosts,
        }
    }
}

/// Latest counts for one cluster of one rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRollout {
    /// The counts.
    pub counts: RolloutCounts,
    /// When the manager reported them.
    pub reported_at: UnixMillis,
    /// The manager lease holder that reported them (none from a manager without a lease).
    #[serde(default)]
    pub reported_by: Option<String>,
    /// The failed hosts with their reasons (bounded).
    #[serde(default)]
    pub failures: crate::deploy::HostFailures,
    /// Hosts the open waves admitted that are neither healthy nor failed yet (bounded).
    #[serde(default)]
    pub pending: Vec<String>,
    /// The most targeted hosts (live or offline) any report of this generation counted for the cluster:
    /// the gate sizes waves by it, so a standby that does not know every host yet cannot finish a wave.
    #[serde(default)]
    pub hosts_seen: u64,
}

impl ClusterRollout {
    /// The cluster's targeted hosts as the gate sizes its waves: live or offline (so a host going offline
    /// does not shift the others' wave positions), and never fewer than any report of the generation
    /// counted.
    pub fn targeted_hosts(&self) -> u64 {
        (self.counts.total + self.counts.offline).max(self.hosts_seen)
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the audit log, from 1.
    pub seq: u64,
    /// When (leader's clock).
    pub at: UnixMillis,
    /// Who.
    pub actor: Principal,
    /// Command kind.
    pub action: String,
    /// What it did, in words.
    pub detail: String,
}

/// The whole replicated state.
///
/// Indexes are kept beside the jobs so that claim and the stale scan never walk every job: the queue is
/// ordered by job id (= submission order), running jobs by last heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Latest time of any accepted command; `apply` never lets time run backwards across leaders.
    pub clock: UnixMillis,
    /// Next job id to hand out.
    pub next_job_id: u64,
    /// Every job ever submitted.
    pub jobs: BTreeMap<JobId, Job>,
    /// Idempotency keys of submissions and the job each created.
    pub submissions: BTreeMap<String, JobId>,
    /// Queued jobs, oldest submission first.
    pub queue: BTreeSet<JobId>,
    /// Running jobs by last heartbeat, oldest first.
    pub running: BTreeSet<(UnixMillis, JobId)>,
    /// Artifacts by digest.
    pub artifacts: BTreeMap<Digest, ArtifactRecord>,
    /// Current desired version per service.
    pub desired: BTreeMap<ServiceName, DesiredVersion>,
    /// Past desired versions per service, oldest first (bounded).
    pub deploy_history: BTreeMap<ServiceName, Vec<DesiredVersion>>,
    /// Rollout counts per (service, generation) and (region, cluster).
    #[serde(with = "rollouts_as_pairs")]
    pub rollouts: BTreeMap<(ServiceName, u64), BTreeMap<(Region, ClusterName), ClusterRollout>>,
    /// Workers and when they were last heard from.
    pub workers: BTreeMap<WorkerId, UnixMillis>,
    /// Who did what.
    pub audit: Vec<AuditEntry>,
    /// Region manager leases per region, then cluster (see [`crate::manager_lease`]).
    #[serde(default)]
    pub manager_leases: BTreeMap<Region, BTreeMap<ClusterName, crate::manager_lease::ManagerLease>>,
}

/// [`State::rollouts`] is keyed by tuples, which JSON objects cannot have, so it is serialized as a list of
/// `[key, [[key, value], ...]]` pairs instead of a map (in bincode the two are the same bytes).
mod rollouts_as_pairs {
    use super::{BTreeMap, ClusterName, ClusterRollout, Region, ServiceName};
    use serde::{Deserialize, Deserializer, Serializer};

    type Rollouts = BTreeMap<(ServiceName, u64), BTreeMap<(Region, ClusterName), ClusterRollout>>;
    type Pairs = Vec<((ServiceName, u64), Vec<((Region, ClusterName), ClusterRollout)>)>;

    pub fn serialize<S: Serializer>(rollouts: &Rollouts, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(rollouts.iter().map(|(key, clusters)| (key, clusters.iter().collect::<Vec<_>>())))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Rollouts, D::Error> {
        let pairs = Pairs::deserialize(deserializer)?;
        Ok(pairs.into_iter().map(|(key, clusters)| (key, clusters.into_iter().collect())).collect())
    }
}

impl State {
    /// Applies one log entry. Deterministic; a refused command changes nothing.
    pub fn apply(&mut self, request: &Request) -> CommandResult {
        // Successive leaders' clocks may disagree; the state's clock never goes backwards. It only moves when
        // the command is accepted: a refused command changes nothing, the clock included.
        let now = self.clock.max(request.at);
        let actor = &request.actor;
        let result = match &request.command {
            Command::SubmitBuild { repo, commit, service, idempotency_key } => {
                if let Some(key) = idempotency_key {
                    validate_idempotency_key(key).map_err(CommandError::Invalid)?;
                }
                if let Some(existing) = idempotency_key.as_ref().and_then(|k| self.submissions.get(k)) {
                    if let Some(job) = self.jobs.get(existing) {
                        let job = job.clone();
                        self.clock = now;
                        return Ok(CommandOutput::Job(job));
                    }
                }
                let id = JobId(self.next_job_id);
                self.next_job_id += 1;
                let mut job = Job {
                    id,
                    repo: repo.clone(),
                    commit: commit.clone(),
                    service: service.clone(),
                    requested_by: actor.clone(),
                    status: JobStatus::Queued,
                    attempt: 0,
                    max_attempts: DEFAULT_MAX_ATTEMPTS,
                    submitted_at: now,
                    finished_at: None,
                    timeline: Vec::new(),
                };
                job.record(now, format!("queued by {actor}"));
                self.queue.insert(id);
                if let Some(key) = idempotency_key {
                    self.submissions.insert(key.clone(), id);
                }
                self.audit(now, actor, "submit_build", format!("build {id}: {service} at {commit} from {repo}"));
                self.jobs.insert(id, job.clone());
                Ok(CommandOutput::Job(job))
            }
            Command::Claim { worker } => Ok(CommandOutput::Claimed(self.claim(now, actor, worker))),
            Command::Heartbeat { lease } => self.heartbeat(now, actor, *lease),
            Command::Succeed { lease, artifact } => self.succeed(now, actor, *lease, artifact),
            Command::Fail { lease, reason, retryable } => self.fail(now, actor, *lease, reason, *retryable),
            Command::RequeueStale { timeout_ms } => {
                Ok(CommandOutput::Stale(self.requeue_stale(now, actor, *timeout_ms)))
            }
            Command::Cancel { job } => self.cancel(now, actor, *job),
            Command::RecordReplication { digest, region, status } => {
                self.record_replication(now, actor, digest, region, status)
            }
            Command::SetDesiredVersion { service, build, rollout } => {
                self.set_desired(now, actor, service, *build, rollout.as_deref(), DeployOrigin::Deploy)
            }
            Command::Rollback { service } => self.rollback(now, actor, service),
            Command::ControlRollout { service, generation, control } => {
                self.control_rollout(now, actor, service, *generation, *control)
            }
            Command::PromoteRollout { service, generation } => self.promote_rollout(now, actor, service, *generation),
            Command::StepRollout { service, generation } => self.step_rollout(now, actor, service, *generation),
            Command::ReportRollout(report) => self.report_rollout(now, report),
            Command::AcquireManagerLease { region, cluster, holder, ttl_ms } => {
                self.acquire_manager_lease(now, actor, region, cluster, holder, *ttl_ms)
            }
        };
        if result.is_ok() {
            self.clock = now;
        }
        debug_assert!(self.indexes_consistent().is_ok(), "{:?}", self.indexes_consistent());
        result
    }

    pub(crate) fn audit(&mut self, at: UnixMillis, actor: &Principal, action: &str, detail: String) {
        let seq = self.audit.len() as u64 + 1;
        self.audit.push(AuditEntry { seq, at, actor: actor.clone(), action: action.to_string(), detail });
    }

    fn claim(&mut self, now: UnixMillis, actor: &Principal, worker: &WorkerId) -> Option<ClaimedJob> {
        self.workers.insert(worker.clone(), now);
        let id = self.queue.pop_first()?;
        let job = self.jobs.get_mut(&id)?;
        job.attempt += 1;
        job.status = JobStatus::Running {
            worker: worker.clone(),
            attempt: job.attempt,
            started_at: now,
            last_heartbeat: now,
            cancel_requested_by: None,
        };
        job.record(now, format!("claimed by {worker} (attempt {})", job.attempt));
        let claimed = ClaimedJob { job: job.clone(), lease: Lease { job: id, attempt: job.attempt } };
        self.running.insert((now, id));
        self.audit(now, actor, "claim", format!("build {id} attempt {} to {worker}", claimed.lease.attempt));
        Some(claimed)
    }

    /// Checks that `lease` is the job's running attempt; returns its last heartbeat and who asked to cancel.
    fn check_lease(&self, lease: Lease) -> Result<(UnixMillis, Option<Principal>), CommandError> {
        let job = self.jobs.get(&lease.job).ok_or(CommandError::UnknownJob(lease.job))?;
        match &job.status {
            JobStatus::Running { attempt, last_heartbeat, cancel_requested_by, .. }
                if *attempt == lease.attempt || fault_injection::accepts_stale_leases() =>
            {
                Ok((*last_heartbeat, cancel_requested_by.clone()))
            }
            JobStatus::Running { attempt, worker, .. } => Err(CommandError::StaleLease {
                lease,
                current: format!("the build is running attempt {attempt} on {worker}"),
            }),
            other => Err(CommandError::StaleLease { lease, current: format!("the build is {}", other.name()) }),
        }
    }

    /// Moves a running job out of the running index into `status`.
    fn finish_running(&mut self, id: JobId, last_heartbeat: UnixMillis, now: UnixMillis, status: JobStatus) {
        self.running.remove(&(last_heartbeat, id));
        if let Some(job) = self.jobs.get_mut(&id) {
            if status.is_terminal() {
                job.finished_at = Some(now);
            } else {
                self.queue.insert(id);
            }
            job.status = status;
        }
    }

    fn heartbeat(&mut self, now: UnixMillis, actor: &Principal, lease: Lease) -> CommandResult {
        let (last, cancel_requested_by) = self.check_lease(lease)?;
        if let Some(by) = cancel_requested_by {
            self.finish_running(lease.job, last, now, JobStatus::Cancelled { by });
            if let Some(job) = self.jobs.get_mut(&lease.job) {
                job.record(now, "cancelled: worker acknowledged".to_string());
            }
            self.audit(now, actor, "cancel", format!("build {} cancelled; worker stopped", lease.job));
            return Ok(CommandOutput::Heartbeat(HeartbeatAck { cancelled: true }));
        }
        self.running.remove(&(last, lease.job));
        self.running.insert((now, lease.job));
        if let Some(job) = self.jobs.get_mut(&lease.job) {
            if let JobStatus::Running { worker, last_heartbeat, .. } = &mut job.status {
                *last_heartbeat = now;
                self.workers.insert(worker.clone(), now);
            }
        }
        Ok(CommandOutput::Heartbeat(HeartbeatAck { cancelled: false }))
    }

    fn succeed(&mut self, now: UnixMillis, actor: &Principal, lease: Lease, artifact: &Artifact) -> CommandResult {
        artifact.validate().map_err(CommandError::Invalid)?;
        let (last, cancel_requested_by) = self.check_lease(lease)?;
        if let Some(by) = cancel_requested_by {
            // The cancel wins: the person who asked for it must not find the build deployable afterwards.
            // This refusal does change the state, so it moves the clock like an accepted command.
            self.clock = now;
            self.finish_running(lease.job, last, now, JobStatus::Cancelled { by });
            self.audit(now, actor, "cancel", format!("build {} cancelled before its result was recorded", lease.job));
            return Err(CommandError::WrongState {
                job: lease.job,
                status: "cancelled".into(),
                what: "a cancel was requested, so the result was discarded".into(),
            });
        }
        self.finish_running(lease.job, last, now, JobStatus::Succeeded { artifact: artifact.clone() });
        self.artifacts.entry(artifact.digest.clone()).or_insert_with(|| ArtifactRecord {
            artifact: artifact.clone(),
            build: lease.job,
            replication: BTreeMap::new(),
            replicated_at: BTreeMap::new(),
            updated_at: now,
        });
        self.audit(
            now,
            actor,
            "succeed",
            format!("build {} succeeded: {} ({} bytes)", lease.job, artifact.digest, artifact.size),
        );
        let job = self.jobs.get_mut(&lease.job).ok_or(CommandError::UnknownJob(lease.job))?;
        job.record(now, format!("succeeded (attempt {})", lease.attempt));
        Ok(CommandOutput::Job(job.clone()))
    }

    fn fail(
        &mut self,
        now: UnixMillis,
        actor: &Principal,
        lease: Lease,
        reason: &str,
        retryable: bool,
    ) -> CommandResult {
        let (last, _) = self.check_lease(lease)?;
        let reason = bounded_reason(reason);
        let (attempt, max) = self.jobs.get(&lease.job).map(|j| (j.attempt, j.max_attempts)).unwrap_or_default();
        let status = if retryable && attempt < max {
            JobStatus::Queued
        } else if retryable {
            JobStatus::Failed { reason: format!("{reason} (gave up after {attempt} attempts)") }
        } else {
            JobStatus::Failed { reason: reason.clone() }
        };
        let event = match &status {
            JobStatus::Queued => format!("attempt {attempt} failed, requeued: {reason}"),
            _ => format!("failed: {reason}"),
        };
        self.finish_running(lease.job, last, now, status);
        self.audit(now, actor, "fail", format!("build {} attempt {attempt}: {event}", lease.job));
        let job = self.jobs.get_mut(&lease.job).ok_or(CommandError::UnknownJob(lease.job))?;
        job.record(now, event);
        Ok(CommandOutput::Job(job.clone()))
    }

    fn requeue_stale(&mut self, now: UnixMillis, actor: &Principal, timeout_ms: u64) -> StaleReport {
        let mut report = StaleReport::default();
        let stale: Vec<(UnixMillis, JobId)> = self
            .running
            .iter()
            .take_while(|(heartbeat, _)| is_stale(now, *heartbeat, timeout_ms))
            .take(MAX_STALE_PER_SCAN)
            .copied()
            .collect();
        for (last, id) in stale {
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            let JobStatus::Running { worker, cancel_requested_by, .. } = &job.status else {
                continue;
            };
            let worker = worker.clone();
            let (status, event) = if let Some(by) = cancel_requested_by {
                report.cancelled.push(id);
                (JobStatus::Cancelled { by: by.clone() }, format!("cancelled: worker {worker} went silent"))
            } else if job.attempt >= job.max_attempts {
                report.failed.push(id);
                let reason = format!("worker lost {} times (last: {worker})", job.attempt);
                (JobStatus::Failed { reason: reason.clone() }, format!("failed: {reason}"))
            } else {
                report.requeued.push(id);
                (JobStatus::Queued, format!("worker {worker} lost on attempt {}, requeued", job.attempt))
            };
            self.finish_running(id, last, now, status);
            if let Some(job) = self.jobs.get_mut(&id) {
                job.record(now, event);
            }
        }
        let touched = report.requeued.len() + report.failed.len() + report.cancelled.len();
        if touched > 0 {
            self.audit(
                now,
                actor,
                "requeue_stale",
                format!("requeued {:?}, failed {:?}, cancelled {:?}", report.requeued, report.failed, report.cancelled),
            );
        }
        report
    }

    fn cancel(&mut self, now: UnixMillis, actor: &Principal, id: JobId) -> CommandResult {
        let job = self.jobs.get_mut(&id).ok_or(CommandError::UnknownJob(id))?;
        match &mut job.status {
            JobStatus::Queued => {
                self.queue.remove(&id);
                job.status = JobStatus::Cancelled { by: actor.clone() };
                job.finished_at = Some(now);
                job.record(now, format!("cancelled by {actor}"));
            }
            JobStatus::Running { cancel_requested_by, .. } => {
                // The first request is the one recorded; a repeated cancel changes nothing but the timeline.
                if cancel_requested_by.is_none() {
                    *cancel_requested_by = Some(actor.clone());
                }
                job.record(now, format!("cancel requested by {actor}"));
            }
            other => {
                return Err(CommandError::WrongState {
                    job: id,
                    status: other.name().into(),
                    what: "only a queued or running build can be cancelled".into(),
                })
            }
        }
        let job = job.clone();
        self.audit(now, actor, "cancel", format!("build {id}: {}", job.status.name()));
        Ok(CommandOutput::Job(job))
    }

    fn record_replication(
        &mut self,
        now: UnixMillis,
        actor: &Principal,
        digest: &Digest,
        region: &Region,
        status: &ReplicationStatus,
    ) -> CommandResult {
        let record = self.artifacts.get_mut(digest).ok_or_else(|| CommandError::UnknownArtifact(digest.clone()))?;
        let changed = record.replication.get(region) != Some(status);
        record.replication.insert(region.clone(), status.clone());
        if changed {
            if *status == ReplicationStatus::Replicated {
                record.replicated_at.insert(region.clone(), now);
            } else {
                record.replicated_at.remove(region);
            }
        }
        let record = record.clone();
        if changed {
            self.artifacts.entry(digest.clone()).and_modify(|r| r.updated_at = now);
            self.audit(now, actor, "record_replication", format!("{digest} in {region}: {status:?}"));
        }
        Ok(CommandOutput::Replication(record))
    }

    /// Checks that the indexes agree with the jobs: every job is in exactly one status, the queue holds
    /// exactly the queued jobs, the running index exactly the running ones at their last heartbeat.
    pub fn indexes_consistent(&self) -> Result<(), String> {
        let mut queued = 0usize;
        let mut running = 0usize;
        for (id, job) in &self.jobs {
            if job.id != *id {
                return Err(format!("job stored under {id} says it is {}", job.id));
            }
            match &job.status {
                JobStatus::Queued => {
                    queued += 1;
                    if !self.queue.contains(id) {
                        return Err(format!("queued job {id} missing from the queue"));
                    }
                }
                JobStatus::Running { last_heartbeat, attempt, .. } => {
                    running += 1;
                    if !self.running.contains(&(*last_heartbeat, *id)) {
                        return Err(format!("running job {id} missing from the running index"));
                    }
                    if *attempt != job.attempt || *attempt == 0 {
                        return Err(format!("job {id} runs attempt {attempt} but its counter says {}", job.attempt));
                    }
                }
                _ => {}
            }
        }
        if queued != self.queue.len() || running != self.running.len() {
            return Err(format!(
                "index sizes differ: {queued} queued vs queue {}, {running} running vs index {}",
                self.queue.len(),
                self.running.len()
            ));
        }
        Ok(())
    }

    /// Whether a `RequeueStale { timeout_ms }` at `now` would find anything to do; lets the leader skip
    /// proposing an empty scan.
    pub fn has_stale(&self, now: UnixMillis, timeout_ms: u64) -> bool {
        self.running.first().is_some_and(|(heartbeat, _)| is_stale(now, *heartbeat, timeout_ms))
    }

    /// Number of jobs in each status, for metrics and the console.
    pub fn status_counts(&self) -> BTreeMap<&'static str, u64> {
        let mut counts = BTreeMap::new();
        for job in self.jobs.values() {
            *counts.entry(job.status.name()).or_insert(0) += 1;
        }
        counts
    }
}

/// Deliberate bugs for the simulation's self-test (cargo feature `fault-injection`, off by default): the
/// simulation turns one on and must report the invariant it breaks. Thread-local, so a switch flipped by one
/// test thread never leaks into another.
#[cfg(feature = "fault-injection")]
pub mod fault_injection {
    use std::cell::Cell;

    thread_local! {
        static ACCEPT_STALE_LEASES: Cell<bool> = const { Cell::new(false) };
    }

    /// Makes this thread's `apply` accept any attempt of a running job as if it held the current lease.
    pub fn accept_stale_leases(on: bool) {
        ACCEPT_STALE_LEASES.with(|flag| flag.set(on));
    }

    pub(crate) fn accepts_stale_leases() -> bool {
        ACCEPT_STALE_LEASES.with(|flag| flag.get())
    }
}

#[cfg(not(feature = "fault-injection"))]
mod fault_injection {
    pub(crate) const fn accepts_stale_leases() -> bool {
        false
    }
}

/// A running job is stale when its last heartbeat is more than `timeout_ms` before `now`.
fn is_stale(now: UnixMillis, last_heartbeat: UnixMillis, timeout_ms: u64) -> bool {
    now.saturating_since(last_heartbeat) > timeout_ms
}
