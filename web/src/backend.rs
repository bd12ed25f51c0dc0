//! What the console needs from a node, as a trait: `web` depends on `core` only, and `raft-node` implements
//! this over its replica (so the console can also be driven by a fake backend in tests and benches).

use cascade_core::api::{BuildLog, ClusterStatus, DeployRequest, Role, SubmitBuildRequest};
use cascade_core::state::{DesiredVersion, RolloutControl};
use cascade_core::{Job, JobId, Principal, ServiceName, State};
use std::future::Future;
use std::time::Duration;

/// Why a backend call failed, with the HTTP status the console should answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    /// HTTP status code (400 refused input, 403, 404, 409 wrong state, 503 no leader, 504 outcome unknown).
    pub status: u16,
    /// A sentence the person can act on.
    pub detail: String,
}

impl BackendError {
    /// An error with a status and a sentence.
    pub fn new(status: u16, detail: impl Into<String>) -> Self {
        Self { status, detail: detail.into() }
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// A node as the console sees it: authentication, reads of the replicated state, and the writes a person
/// may make from a browser. Implemented by `raft-node` (`console.rs`).
pub trait ConsoleBackend: Send + Sync + 'static {
    /// The principal and role of a bearer token from the node's config, or `None` for an unknown token.
    /// Implementations must compare in constant time.
    fn authenticate(&self, token: &str) -> Option<(Principal, Role)>;

    /// Runs `f` on the local replica's state and its applied log index. `f` must be short: it may hold a
    /// lock that the state machine needs.
    fn read<T>(&self, f: impl FnOnce(&State, u64) -> T) -> T;

    /// The cluster as the cluster page shows it (members, leader, lag, workers).
    fn cluster(&self) -> impl Future<Output = ClusterStatus> + Send;

    /// Queues a build on behalf of `actor` (the caller has checked the role).
    fn submit_build(
        &self,
        actor: Principal,
        request: SubmitBuildRequest,
    ) -> impl Future<Output = Result<Job, BackendError>> + Send;

    /// Cancels a queued build, or asks a running build's worker to stop.
    fn cancel_build(&self, actor: Principal, build: JobId) -> impl Future<Output = Result<Job, BackendError>> + Send;

    /// Makes a succeeded build its service's desired version.
    fn deploy(
        &self,
        actor: Principal,
        request: DeployRequest,
    ) -> impl Future<Output = Result<DesiredVersion, BackendError>> + Send;

    /// Deploys the service's previous good build again; core's `Command::Rollback` picks which.
    fn rollback(
        &self,
        actor: Principal,
        service: ServiceName,
    ) -> impl Future<Output = Result<DesiredVersion, BackendError>> + Send;

    /// Pauses, resumes or aborts the rollout of `generation` of `service` (core's `Command::ControlRollout`,
    /// which refuses any generation but the current one, so a stale page cannot stop a newer deploy).
    fn control_rollout(
        &self,
        actor: Principal,
        service: ServiceName,
        generation: u64,
        control: RolloutControl,
    ) -> impl Future<Output = Result<DesiredVersion, BackendError>> + Send;

    /// Opens the manual wave the rollout of `generation` of `service` waits at (core's
    /// `Command::PromoteRollout`, which refuses a rollout that is not waiting for approval, has ended, or is
    /// not the current generation).
    fn promote_rollout(
        &self,
        actor: Principal,
        service: ServiceName,
        generation: u64,
    ) -> impl Future<Output = Result<DesiredVersion, BackendError>> + Send;

    /// The end (at most `tail` bytes) of a build's latest attempt log, the source of `/api/v1/builds/{id}/log`.
    fn build_log(&self, build: JobId, tail: u64) -> impl Future<Output = Result<BuildLog, BackendError>> + Send;

    /// Waits until the applied index passes `after` or `timeout` elapses; returns the applied index then.
    /// Drives the console's live updates.
    fn wait_for_change(&self, after: u64, timeout: Duration) -> impl Future<Output = u64> + Send;
}
