//! The worker side: claim (long-polled), heartbeat, succeed, fail, each guarded by the worker role and
//! the job's lease.

use super::builds::unexpected;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::{AppState, Caller};
use crate::node::MAX_WAIT;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cascade_core::api::{ClaimRequest, ClaimResponse, FailRequest, HeartbeatRequest, Role, SucceedRequest};
use cascade_core::{Command, CommandOutput, JobId, Lease};
use serde::Deserialize;
use std::time::{Duration, Instant};

/// Query of `POST /api/v1/jobs/claim`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimParams {
    /// Seconds to wait for a job before answering 204 (at most 30).
    pub wait: Option<u64>,
}

/// `POST /api/v1/jobs/claim`: 200 with a job and its lease, or 204 when nothing was queued in time.
pub async fn claim(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ClaimParams>,
    ApiJson(body): ApiJson<ClaimRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Worker)?;
    let wait = Duration::from_secs(params.wait.unwrap_or(0)).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    // Bounded: each round either claims, or waits for the applied index to move, until the deadline.
    for _round in 0..10_000 {
        let mut lost_race = false;
        let (applied, queued) = app.node.read(|v| (v.applied_index(), !v.state.queue.is_empty()));
        // An empty local queue skips the log entry; a replica a little behind only delays the claim.
        if queued {
            let command = Command::Claim { worker: body.worker.clone() };
            match app.node.write(caller.name.clone(), command).await?? {
                CommandOutput::Claimed(Some(claimed)) => {
                    if let cascade_core::JobStatus::Running { started_at, .. } = &claimed.job.status {
                        let waited = started_at.saturating_since(claimed.job.submitted_at);
                        app.node.metrics.observe_claim(Duration::from_millis(waited));
                    }
                    return Ok(Json(ClaimResponse { job: claimed.job, lease: claimed.lease }).into_response());
                }
                CommandOutput::Claimed(None) => lost_race = true,
                other => return Err(unexpected(other)),
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if lost_race {
            // This replica showed a job the leader no longer had (it lags, or another worker won): pause
            // rather than propose another empty claim as soon as anything is applied.
            tokio::time::sleep((deadline - now).min(Duration::from_millis(250))).await;
        } else {
            app.node.wait_for_change(applied, deadline - now).await;
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/jobs/{id}/heartbeat`: `{"cancelled": true}` tells the worker to stop.
pub async fn heartbeat(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
    ApiJson(body): ApiJson<HeartbeatRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Worker)?;
    let lease = Lease { job: JobId(id), attempt: body.attempt };
    match app.node.write(caller.name, Command::Heartbeat { lease }).await?? {
        CommandOutput::Heartbeat(ack) => Ok(Json(ack).into_response()),
        other => Err(unexpected(other)),
    }
}

/// `POST /api/v1/jobs/{id}/succeed`: the artifact is uploaded; record it.
pub async fn succeed(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
    ApiJson(body): ApiJson<SucceedRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Worker)?;
    // Checked here too (the state machine refuses it anyway) so a bad artifact costs no log entry.
    body.artifact.validate()?;
    let lease = Lease { job: JobId(id), attempt: body.attempt };
    match app.node.write(caller.name, Command::Succeed { lease, artifact: body.artifact }).await?? {
        CommandOutput::Job(job) => Ok(Json(job).into_response()),
        other => Err(unexpected(other)),
    }
}

/// `POST /api/v1/jobs/{id}/fail`
pub async fn fail(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
    ApiJson(body): ApiJson<FailRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Worker)?;
    let lease = Lease { job: JobId(id), attempt: body.attempt };
    let command = Command::Fail { lease, reason: body.reason, retryable: body.retryable };
    match app.node.write(caller.name, command).await?? {
        CommandOutput::Job(job) => Ok(Json(job).into_response()),
        other => Err(unexpected(other)),
    }
}
