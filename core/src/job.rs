//! Build jobs: what was asked for, and where in its lifecycle it is.
//!
//! ```text
//!  submit ──► Queued ──claim──► Running{attempt} ──succeed──► Succeeded   (final)
//!               ▲                  │  │  │
//!               └── stale / retryable fail (attempt < limit)
//!                                  │  │  └─ fail / stale at limit ─────► Failed      (final)
//!                                  │  └─ cancel requested, next heartbeat ► Cancelled (final)
//!  Queued ──cancel────────────────────────────────────────────────────► Cancelled
//! ```

use crate::ids::{CommitSha, Digest, InvalidValue, JobId, Principal, RepoUrl, ServiceName, UnixMillis, WorkerId};
use serde::{Deserialize, Serialize};

/// Attempts a job gets before a lost worker makes it fail for good.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Longest failure reason kept in the state; longer ones are cut (logs live in the blob store).
pub const MAX_REASON_BYTES: usize = 4096;

/// Most timeline events kept per job, so a job that is requeued many times cannot grow without bound.
pub const MAX_TIMELINE_EVENTS: usize = 32;

/// Proof that a worker holds a job: the job and the attempt it was handed.
///
/// Every worker command carries one; a lease whose attempt is not the job's running attempt is stale and is
/// refused, so a worker presumed dead can never overwrite the result of its replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The job the lease is for.
    pub job: JobId,
    /// The attempt number the claim handed out (1 for the first claim).
    pub attempt: u32,
}

/// What a successful build produced: where its chunk manifest lives and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// BLAKE3 digest of the whole artifact.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Object-store key of the chunk manifest.
    pub manifest_key: String,
    /// How hosts install, start and check it: the build's `[deploy]` section, validated by the worker.
    /// Boxed: it is most of an artifact's size, and commands carry artifacts.
    #[serde(default)]
    pub deploy: Box<crate::deploy::DeploySpec>,
}

/// Longest object-store key of an artifact's manifest.
pub const MAX_MANIFEST_KEY_BYTES: usize = 1024;

/// Longest idempotency key a submission may carry.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

impl Artifact {
    /// Checks what a worker reports: the digest is validated by its type; the manifest key must be a
    /// non-empty, bounded object-store key.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let key = &self.manifest_key;
        if key.is_empty() || key.len() > MAX_MANIFEST_KEY_BYTES || key.chars().any(char::is_control) {
            return Err(InvalidValue::new(
                "artifact.manifest_key",
                format!("must be 1 to {MAX_MANIFEST_KEY_BYTES} bytes with no control characters"),
            ));
        }
        self.deploy.validate()
    }
}

/// Checks a submission's idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY_BYTES`] printable ASCII characters.
pub fn validate_idempotency_key(key: &str) -> Result<(), InvalidValue> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(InvalidValue::new(
            "idempotency_key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

/// Where a job is in its lifecycle. Exactly one status per job; the last three are final.
///
/// Human-readable formats (JSON) get the internally tagged form `{"state": "running", ...}`; binary formats
/// (bincode, for the log and snapshots) get the externally tagged form of [`JobStatusBinary`], because
/// bincode cannot read internally tagged enums (they need `deserialize_any`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "state", rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// Held by one worker under one attempt.
    Running {
        /// The worker that claimed it.
        worker: WorkerId,
        /// The attempt number its lease carries.
        attempt: u32,
        /// When this attempt was claimed.
        started_at: UnixMillis,
        /// Last sign of life from the worker.
        last_heartbeat: UnixMillis,
        /// Who asked to cancel, if anyone; the worker learns it on its next heartbeat, and the job is then
        /// recorded as cancelled by this principal (not by the worker or monitor that carried it out).
        cancel_requested_by: Option<Principal>,
    },
    /// Built and uploaded.
    Succeeded {
        /// What the build produced.
        artifact: Artifact,
    },
    /// Will never be built (build error, or workers lost too many times).
    Failed {
        /// Why, in words a person can act on.
        reason: String,
    },
    /// Stopped on request.
    Cancelled {
        /// Who cancelled it.
        by: Principal,
    },
}

/// [`JobStatus`] as binary formats see it: the same variants, externally tagged.
#[derive(Serialize, Deserialize)]
#[serde(remote = "JobStatus")]
enum JobStatusBinary {
    Queued,
    Running {
        worker: WorkerId,
        attempt: u32,
        started_at: UnixMillis,
        last_heartbeat: UnixMillis,
        cancel_requested_by: Option<Principal>,
    },
    Succeeded {
        artifact: Artifact,
    },
    Failed {
        reason: String,
    },
    Cancelled {
        by: Principal,
    },
}

impl Serialize for JobStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            JobStatus::serialize(self, serializer)
        } else {
            JobStatusBinary::serialize(self, serializer)
        }
    }
}

impl<'de> Deserialize<'de> for JobStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            JobStatus::deserialize(deserializer)
        } else {
            JobStatusBinary::deserialize(deserializer)
        }
    }
}

impl JobStatus {
    /// Succeeded, failed and cancelled never change again.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Succeeded { .. } | Self::Failed { .. } | Self::Cancelled { .. })
    }

    /// Short lower-case name, as used in filters, metrics and badges.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running { .. } => "running",
            Self::Succeeded { .. } => "succeeded",
            Self::Failed { .. } => "failed",
            Self::Cancelled { .. } => "cancelled",
        }
    }
}

/// One moment in a job's life, for the build page's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    /// When it happened (leader's clock).
    pub at: UnixMillis,
    /// What happened, e.g. "claimed by w1 (attempt 2)".
    pub what: String,
}

/// A build job as the replicated state holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Allocated in log order.
    pub id: JobId,
    /// Repository to fetch.
    pub repo: RepoUrl,
    /// Exact commit to build.
    pub commit: CommitSha,
    /// Service the artifact belongs to.
    pub service: ServiceName,
    /// Who submitted it.
    pub requested_by: Principal,
    /// Current lifecycle status.
    pub status: JobStatus,
    /// Number of the latest attempt handed out (0 until first claimed). Only grows.
    pub attempt: u32,
    /// Attempts allowed before lost workers make the job fail.
    pub max_attempts: u32,
    /// When it was submitted.
    pub submitted_at: UnixMillis,
    /// When it reached a final status.
    pub finished_at: Option<UnixMillis>,
    /// Notable events, oldest first, at most [`MAX_TIMELINE_EVENTS`].
    pub timeline: Vec<JobEvent>,
}

impl Job {
    /// The lease a running job's worker must present, if it is running.
    pub fn current_lease(&self) -> Option<Lease> {
        match &self.status {
            JobStatus::Running { attempt, .. } => Some(Lease { job: self.id, attempt: *attempt }),
            _ => None,
        }
    }

    pub(crate) fn record(&mut self, at: UnixMillis, what: String) {
        if self.timeline.len() >= MAX_TIMELINE_EVENTS {
            // Keep the submission event and the most recent history.
            self.timeline.remove(1);
        }
        self.timeline.push(JobEvent { at, what });
    }
}

/// Cuts `reason` to [`MAX_REASON_BYTES`] on a character boundary.
pub fn bounded_reason(reason: &str) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_string();
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}
