//! The JSON types of `/api/v1`, shared by the node that serves them and the client that calls them.
//!
//! Request bodies deny unknown fields: a typo in a field name is an error that names the field, not a
//! silently ignored value.

use crate::ids::{ClusterName, CommitSha, JobId, Region, RepoUrl, ServiceName, WorkerId};
use crate::job::{Artifact, Job, Lease};
use crate::state::{ArtifactRecord, AuditEntry, ClusterRollout, DesiredVersion};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Header that carries the applied log index a read was answered at.
pub const APPLIED_INDEX_HEADER: &str = "x-cascade-applied-index";

/// Request header whose value makes a build submission idempotent (retries return the same build).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

pub use crate::job::MAX_IDEMPOTENCY_KEY_BYTES;

/// Largest request body any endpoint accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What a bearer token may do. Each role includes the ones before it, except `Worker`, which is for build
/// workers only (it may read and run jobs, not submit or deploy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Claim and report jobs.
    Worker,
    /// Submit and cancel builds.
    Builder,
    /// Deploy and roll back.
    Deployer,
    /// Manage the cluster.
    Admin,
}

impl Role {
    /// Whether a token with this role may do what `required` guards.
    pub fn allows(self, required: Role) -> bool {
        match (self, required) {
            (Role::Admin, _) => true,
            (_, Role::Viewer) => true,
            (Role::Worker, Role::Worker) => true,
            (Role::Worker, _) | (_, Role::Worker) => false,
            (have, need) => have >= need,
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable kind: `invalid_request`, `not_found`, `stale_lease`, `wrong_state`, `unauthorized`,
    /// `forbidden`, `payload_too_large`, `no_leader`, `replica_lagging`, `outcome_unknown` (504: the command may
    /// or may not have been applied; check before retrying), `internal`.
    pub error: String,
    /// What was wrong and what to do about it.
    pub detail: String,
}

/// `POST /api/v1/builds`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBuildRequest {
    /// Repository to build from.
    pub repo: RepoUrl,
    /// Exact commit.
    pub commit: CommitSha,
    /// Service the artifact is for.
    pub service: ServiceName,
}

/// `GET /api/v1/builds` answer: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildList {
    /// This page of builds.
    pub builds: Vec<Job>,
    /// Pass as `before` to get the next page; absent on the last page.
    pub next_before: Option<JobId>,
    /// Total number of builds in the state.
    pub total: u64,
}

/// `GET /api/v1/builds/{id}` answer: the job and, once it succeeded, its artifact's replication per region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildDetail {
    /// The job.
    #[serde(flatten)]
    pub job: Job,
    /// The artifact's record (digest, size, per-region replication); absent until the build succeeded.
    pub artifact_record: Option<ArtifactRecord>,
}

/// `GET /api/v1/builds/{id}/log` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildLog {
    /// The build.
    pub job: JobId,
    /// The attempt whose log this is (the latest one).
    pub attempt: u32,
    /// True when this is the complete log of a finished attempt; false for the live tail of a running one.
    pub complete: bool,
    /// Offset of `text` in the whole log (non-zero when only the end was asked for).
    pub offset: u64,
    /// The log text (lossy UTF-8).
    pub text: String,
}

/// `POST /api/v1/jobs/claim`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The claiming worker's id.
    pub worker: WorkerId,
}

/// `200` answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimResponse {
    /// The job, now running.
    pub job: Job,
    /// Lease to present with every later call about it.
    pub lease: Lease,
}

/// `POST /api/v1/jobs/{id}/heartbeat`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// Attempt number from the lease.
    pub attempt: u32,
}

/// `POST /api/v1/jobs/{id}/succeed`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SucceedRequest {
    /// Attempt number from the lease.
    pub attempt: u32,
    /// What was uploaded.
    pub artifact: Artifact,
}

/// `POST /api/v1/jobs/{id}/fail`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    /// Attempt number from the lease.
    pub attempt: u32,
    /// Why.
    pub reason: String,
    /// True for infrastructure failures worth another attempt; false for a failing build.
    pub retryable: bool,
}

/// `POST /api/v1/deployments`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Service to deploy.
    pub service: ServiceName,
    /// Succeeded build to deploy.
    pub build: JobId,
    /// Overrides of the build's rollout policy (waves, bake, failure budget, ...), same fields as
    /// `[deploy]` in `cascade.toml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::RolloutSection>,
}

/// `GET /api/v1/deployments/{service}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentStatus {
    /// Current desired version, if ever deployed.
    pub desired: Option<DesiredVersion>,
    /// Past deploys, newest first.
    pub history: Vec<DesiredVersion>,
    /// Rollout counts of the current generation per region, then cluster.
    pub rollout: BTreeMap<Region, BTreeMap<ClusterName, ClusterRollout>>,
    /// The desired artifact's replication per region: a region's rollout waits until it is `replicated`.
    #[serde(default)]
    pub replication: BTreeMap<Region, crate::state::ReplicationStatus>,
}

/// `POST /api/v1/deployments/{service}/pause|resume|abort|promote`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutControlRequest {
    /// The generation to control; must be the current one (so a late click cannot pause the next deploy).
    pub generation: u64,
}

/// `POST /api/v1/rollouts/report`: a region manager's batched counts for one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutReport {
    /// The service.
    pub service: ServiceName,
    /// The generation the counts are for.
    pub generation: u64,
    /// The manager's region.
    pub region: Region,
    /// The manager's cluster.
    pub cluster: ClusterName,
    /// Host counts.
    pub counts: crate::state::RolloutCounts,
    /// The failed hosts with their reasons: the first [`crate::deploy::MAX_REPORTED_FAILURES`] by name.
    #[serde(default)]
    pub failures: crate::deploy::HostFailures,
    /// The reporting manager's lease holder id; required once the cluster has a manager lease.
    #[serde(default)]
    pub holder: Option<String>,
    /// Hosts the open waves admitted that are neither healthy nor failed (the first 20 by name).
    #[serde(default)]
    pub pending: Vec<String>,
}

/// `POST /api/v1/managers/lease`: a region manager asks to become (or stay) the one that acts for its
/// cluster. 200 with the [`crate::manager_lease::ManagerLease`] when granted or renewed; 409 naming the
/// holder and its expiry while another manager holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerLeaseRequest {
    /// The manager's region.
    pub region: Region,
    /// The manager's cluster.
    pub cluster: ClusterName,
    /// The manager's unique id.
    pub holder: String,
    /// How long the lease lasts unless renewed, milliseconds (0 gives it up).
    pub ttl_ms: u64,
}

/// `GET /api/v1/desired`: every service's desired version, as of `applied_index`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredVersions {
    /// Log index the answering replica had applied.
    pub applied_index: u64,
    /// Log index of the last change to any desired version (0 if none): pass it as `after` to wait for the
    /// next change.
    pub changed_at_index: u64,
    /// Per service.
    pub services: BTreeMap<ServiceName, DesiredVersion>,
}

/// One member of the Raft cluster as `GET /api/v1/cluster` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// Raft node id.
    pub id: u64,
    /// HTTP address.
    pub addr: String,
    /// Region it runs in.
    pub region: String,
    /// `voter` or `learner`.
    pub role: String,
    /// Last log index known replicated to it (from the leader's view), if known.
    pub matched_index: Option<u64>,
    /// How many entries it trails the leader's last log index, if known.
    pub lag: Option<u64>,
}

/// `GET /api/v1/cluster`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: u64,
    /// Leader's id, if one is known.
    pub leader: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Last log index the answering node has.
    pub last_log_index: Option<u64>,
    /// Last index it applied.
    pub applied_index: Option<u64>,
    /// All members.
    pub members: Vec<ClusterMember>,
    /// Workers and when (Unix ms) they were last heard from.
    pub workers: BTreeMap<WorkerId, u64>,
    /// Builds ever submitted.
    pub builds_total: u64,
    /// Builds waiting for a worker.
    pub queued: u64,
    /// Builds running now.
    pub running: u64,
}

/// `POST /api/v1/cluster/members`: add a learner or a voter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    /// Raft node id of the new member.
    pub id: u64,
    /// Its HTTP address (host:port).
    pub addr: String,
    /// Its region.
    pub region: Region,
    /// True to make it a voter (it is added as a learner first and caught up).
    pub voter: bool,
}

/// `GET /api/v1/audit`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// Entries, newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next page.
    pub next_before: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest_except_worker() {
        assert!(Role::Admin.allows(Role::Worker));
        assert!(Role::Deployer.allows(Role::Builder));
        assert!(!Role::Builder.allows(Role::Deployer));
        assert!(!Role::Viewer.allows(Role::Builder));
        assert!(Role::Worker.allows(Role::Viewer));
        assert!(!Role::Worker.allows(Role::Builder));
        assert!(!Role::Deployer.allows(Role::Worker));
    }

    #[test]
    fn unknown_fields_are_named() {
        let body = r#"{"repo":"/r","commit":"0000000000000000000000000000000000000000","service":"a","sha":"x"}"#;
        let err = serde_json::from_str::<SubmitBuildRequest>(body).unwrap_err();
        assert!(err.to_string().contains("unknown field `sha`"), "{err}");
    }
}
