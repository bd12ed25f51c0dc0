//! The commands of the replicated log, what they return, and why they can be refused.

use crate::ids::{
    ClusterName, CommitSha, Digest, JobId, Principal, Region, RepoUrl, ServiceName, UnixMillis, WorkerId,
};
use crate::job::{Artifact, Job, Lease};
use crate::state::{ArtifactRecord, DesiredVersion, ReplicationStatus, RolloutControl};
use serde::{Deserialize, Serialize};

/// One entry of the replicated log: a command, who issued it, and the leader's clock when it was accepted.
///
/// `at` is stamped by the leader before the entry is proposed, so `apply` never reads a clock and every
/// replica computes the same state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Leader's wall clock when the command was proposed.
    pub at: UnixMillis,
    /// Who issued it (token name or worker id).
    pub actor: Principal,
    /// What to do.
    pub command: Command,
}

/// Everything that changes the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Queue a build of one commit. A repeated `idempotency_key` returns the job it first created, so a
    /// client may retry a submission whose answer it never saw without queueing the build twice.
    SubmitBuild { repo: RepoUrl, commit: CommitSha, service: ServiceName, idempotency_key: Option<String> },
    /// Hand the oldest queued job to `worker`.
    Claim { worker: WorkerId },
    /// A worker is still alive and still holds the lease.
    Heartbeat { lease: Lease },
    /// The build succeeded and its artifact is uploaded.
    Succeed { lease: Lease, artifact: Artifact },
    /// The build failed; `retryable` failures (infrastructure) are requeued while attempts remain.
    Fail { lease: Lease, reason: String, retryable: bool },
    /// Requeue (or fail) running jobs whose last heartbeat is older than `timeout_ms` before `at`.
    RequeueStale { timeout_ms: u64 },
    /// Cancel a queued job now, or ask a running job's worker to stop.
    Cancel { job: JobId },
    /// Record how far an artifact's copy into a region's store has come.
    RecordReplication { digest: Digest, region: Region, status: ReplicationStatus },
    /// Make a succeeded build the version every machine of `service` should run, rolled out by the build's
    /// policy with `rollout`'s fields overriding it.
    SetDesiredVersion {
        service: ServiceName,
        build: JobId,
        #[serde(default)]
        rollout: Option<Box<crate::rollout::RolloutOverride>>,
    },
    /// Deploy the service's previous good build again (the latest history entry with another build).
    Rollback { service: ServiceName },
    /// Pause, resume or abort the rollout of the service's current generation.
    ControlRollout { service: ServiceName, generation: u64, control: RolloutControl },
    /// A region manager's batched host counts for one cluster; once the cluster has a manager lease, only
    /// from the `holder` of a live one.
    ReportRollout(Box<crate::api::RolloutReport>),
    /// Open the manual wave the current rollout waits at (a deployer pressed Promote).
    PromoteRollout { service: ServiceName, generation: u64 },
    /// Take the step the rollout gate finds in the committed state (the leader's rollout controller
    /// proposes it; see [`crate::rollout::decide`]): open a wave, start a bake, complete, halt, roll back.
    StepRollout { service: ServiceName, generation: u64 },
    /// Grant or renew the manager lease of (region, cluster) to `holder` for `ttl_ms` when it is free,
    /// expired or already its own; refused while another manager holds it (see [`crate::manager_lease`]).
    AcquireManagerLease { region: Region, cluster: ClusterName, holder: String, ttl_ms: u64 },
}

impl Command {
    /// Whether an accepted command of this kind changes what managers act on (a desired version, its
    /// control or its open waves): the node wakes the managers' long polls after it. A report only moves a
    /// rollout's progress deadline, which managers do not read, so it does not wake them.
    pub fn changes_desired(&self) -> bool {
        matches!(
            self,
            Self::SetDesiredVersion { .. }
                | Self::Rollback { .. }
                | Self::ControlRollout { .. }
                | Self::PromoteRollout { .. }
                | Self::StepRollout { .. }
        )
    }

    /// Short name for logs, metrics and the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SubmitBuild { .. } => "submit_build",
            Self::Claim { .. } => "claim",
            Self::Heartbeat { .. } => "heartbeat",
            Self::Succeed { .. } => "succeed",
            Self::Fail { .. } => "fail",
            Self::RequeueStale { .. } => "requeue_stale",
            Self::Cancel { .. } => "cancel",
            Self::RecordReplication { .. } => "record_replication",
            Self::SetDesiredVersion { .. } => "set_desired_version",
            Self::ReportRollout(_) => "report_rollout",
            Self::PromoteRollout { .. } => "promote_rollout",
            Self::StepRollout { .. } => "step_rollout",
            Self::AcquireManagerLease { .. } => "acquire_manager_lease",
            Self::Rollback { .. } => "rollback",
            Self::ControlRollout { .. } => "control_rollout",
        }
    }
}

/// A job handed to a worker together with the lease it must present from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedJob {
    /// The job, now running.
    pub job: Job,
    /// The lease for this attempt.
    pub lease: Lease,
}

/// What a heartbeat tells the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// The job was cancelled: stop the build now and report nothing else.
    pub cancelled: bool,
}

/// What one stale-job scan did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleReport {
    /// Jobs put back in the queue for another attempt.
    pub requeued: Vec<JobId>,
    /// Jobs that ran out of attempts.
    pub failed: Vec<JobId>,
    /// Jobs whose cancel was pending and whose worker went silent.
    pub cancelled: Vec<JobId>,
}

/// The result of an accepted command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOutput {
    /// The job after the command.
    Job(Job),
    /// The claimed job, or `None` when nothing was queued.
    Claimed(Option<ClaimedJob>),
    /// Heartbeat accepted.
    Heartbeat(HeartbeatAck),
    /// What the stale scan did.
    Stale(StaleReport),
    /// The artifact's record after the replication update.
    Replication(ArtifactRecord),
    /// The new desired version.
    Desired(DesiredVersion),
    /// Rollout counts recorded.
    RolloutRecorded,
    /// The manager lease as granted or renewed.
    ManagerLease(crate::manager_lease::ManagerLease),
}

/// Why a command was refused. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    /// No job has that id.
    #[error("no build with id {0}")]
    UnknownJob(JobId),
    /// The lease is not the job's running attempt.
    #[error("lease for build {} attempt {} is stale: {current}; stop working on it", lease.job, lease.attempt)]
    StaleLease {
        /// The lease that was presented.
        lease: Lease,
        /// What the job is doing now.
        current: String,
    },
    /// The job's status does not allow this command.
    #[error("build {job} is {status}; {what}")]
    WrongState {
        /// The job.
        job: JobId,
        /// Its status name.
        status: String,
        /// What was refused and why.
        what: String,
    },
    /// Only succeeded builds can be deployed.
    #[error("build {job} cannot be deployed: it is {status}, and only a succeeded build can be deployed")]
    NotDeployable {
        /// The build.
        job: JobId,
        /// Its status name.
        status: String,
    },
    /// The build belongs to a different service.
    #[error("build {job} belongs to service {actual}, not {requested}")]
    ServiceMismatch {
        /// The build.
        job: JobId,
        /// Service asked for.
        requested: ServiceName,
        /// Service the build is of.
        actual: ServiceName,
    },
    /// No artifact with that digest was ever produced.
    #[error("no artifact with digest {0}")]
    UnknownArtifact(Digest),
    /// A rollout report names a generation that was never set.
    #[error("service {service} has no generation {generation} (latest is {latest})")]
    UnknownGeneration {
        /// The service.
        service: ServiceName,
        /// Generation reported.
        generation: u64,
        /// Latest generation, 0 if never deployed.
        latest: u64,
    },
    /// Nothing to roll back to: the service was never deployed with another build.
    #[error("service {0} has no earlier build to roll back to (deploy a build first, then another)")]
    NothingToRollBack(ServiceName),
    /// A rollout control for a generation that is not the current one, or a change an aborted rollout
    /// cannot take.
    #[error("rollout of {service} generation {generation}: {what}")]
    RolloutControl {
        /// The service.
        service: ServiceName,
        /// Generation named.
        generation: u64,
        /// Why it was refused.
        what: String,
    },
    /// Counts that cannot be true (parts larger than the total).
    #[error("invalid rollout counts: {0}")]
    InvalidCounts(String),
    /// Another manager holds the cluster's manager lease: stand by and ask again after it expires.
    #[error("the manager lease of {region}/{cluster} is held by {holder} until {} (Unix ms); standing by", expires_at.0)]
    ManagerLeaseHeld {
        /// The region.
        region: Region,
        /// The cluster.
        cluster: ClusterName,
        /// Who holds it.
        holder: String,
        /// When it expires unless renewed.
        expires_at: UnixMillis,
    },
    /// A rollout report from a manager that does not hold the cluster's lease (any more): its counts are
    /// stale and must not overwrite the holder's.
    #[error("rollout report from {reporter} refused: {region}/{cluster}'s manager lease was last granted to {holder}, {}; only the manager holding a live lease reports (one whose lease lapsed stands by until it is granted again)", if *expired { format!("and expired at {} Unix ms", expires_at.0) } else { format!("until {} Unix ms", expires_at.0) })]
    NotManagerLeaseHolder {
        /// The manager that sent the report (`(unnamed)` when it named none).
        reporter: String,
        /// Whether the lease had expired when the report was applied (the reporter may be its last holder).
        expired: bool,
        /// The region.
        region: Region,
        /// The cluster.
        cluster: ClusterName,
        /// Who holds (or last held) it.
        holder: String,
        /// When it expires (or expired).
        expires_at: UnixMillis,
    },
    /// A value in the command breaks a domain rule (see [`crate::InvalidValue`]).
    #[error("{0}")]
    Invalid(crate::InvalidValue),
}

impl CommandError {
    /// Machine-readable kind for the API's `error` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownJob(_) | Self::UnknownArtifact(_) => "not_found",
            Self::StaleLease { .. } => "stale_lease",
            Self::WrongState { .. } | Self::NotDeployable { .. } => "wrong_state",
            Self::ServiceMismatch { .. } | Self::InvalidCounts(_) | Self::Invalid(_) => "invalid_request",
            Self::UnknownGeneration { .. } | Self::NothingToRollBack(_) => "not_found",
            Self::RolloutControl { .. } => "wrong_state",
            Self::ManagerLeaseHeld { .. } | Self::NotManagerLeaseHolder { .. } => "wrong_state",
        }
    }
}

/// The state machine's answer to one log entry.
pub type CommandResult = Result<CommandOutput, CommandError>;
