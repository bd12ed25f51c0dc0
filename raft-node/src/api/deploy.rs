//! Deployments: set a service's desired version, show it, and the long-polled desired versions that region
//! agents read from their region's learner.

use super::builds::unexpected;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::{consistent_read, AppState, Caller, ReadParams};
use crate::node::MAX_WAIT;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cascade_core::api::{
    DeployRequest, DeploymentStatus, DesiredVersions, ManagerLeaseRequest, Role, RolloutControlRequest, RolloutReport,
};
use cascade_core::state::RolloutControl;
use cascade_core::{Command, CommandOutput, ServiceName};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `POST /api/v1/deployments`: 201 with the new desired version (generation + 1).
pub async fn deploy(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<DeployRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Deployer)?;
    let rollout = body.rollout.filter(|r| !r.is_empty()).map(|r| r.to_override()).transpose()?.map(Box::new);
    let command = Command::SetDesiredVersion { service: body.service, build: body.build, rollout };
    match app.node.write(caller.name, command).await?? {
        CommandOutput::Desired(desired) => Ok((StatusCode::CREATED, Json(desired)).into_response()),
        other => Err(unexpected(other)),
    }
}

/// `POST /api/v1/deployments/{service}/rollback`: deploys the previous good build as a new generation.
pub async fn rollback(
    State(app): State<AppState>,
    caller: Caller,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Deployer)?;
    let service = ServiceName::parse(service)?;
    match app.node.write(caller.name, Command::Rollback { service }).await?? {
        CommandOutput::Desired(desired) => Ok((StatusCode::CREATED, Json(desired)).into_response()),
        other => Err(unexpected(other)),
    }
}

/// `POST /api/v1/deployments/{service}/{pause|resume|abort}`
pub async fn control(
    State(app): State<AppState>,
    caller: Caller,
    Path((service, action)): Path<(String, String)>,
    ApiJson(body): ApiJson<RolloutControlRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Deployer)?;
    let service = ServiceName::parse(service)?;
    let generation = body.generation;
    let command = match action.as_str() {
        "pause" => Command::ControlRollout { service, generation, control: RolloutControl::Paused },
        "resume" => Command::ControlRollout { service, generation, control: RolloutControl::Running },
        "abort" => Command::ControlRollout { service, generation, control: RolloutControl::Aborted },
        "promote" => Command::PromoteRollout { service, generation },
        other => {
            return Err(ApiError::not_found(format!(
                "no rollout action {other:?}: use pause, resume, abort or promote"
            )));
        }
    };
    match app.node.write(caller.name, command).await?? {
        CommandOutput::Desired(desired) => Ok(Json(desired).into_response()),
        other => Err(unexpected(other)),
    }
}

/// `POST /api/v1/rollouts/report`: a region manager's counts for one cluster (agents use worker tokens).
pub async fn report(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RolloutReport>,
) -> Result<Response, ApiError> {
    caller.require(Role::Worker)?;
    app.node.write(caller.name, Command::ReportRollout(Box::new(body))).await??;
    Ok(Json(serde_json::json!({ "recorded": true })).into_response())
}

/// `POST /api/v1/managers/lease`: grants or renews a region manager's lease of its cluster (409 while
/// another manager holds it).
pub async fn manager_lease(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ManagerLeaseRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Worker)?;
    let ManagerLeaseRequest { region, cluster, holder, ttl_ms } = body;
    match app.node.write(caller.name, Command::AcquireManagerLease { region, cluster, holder, ttl_ms }).await?? {
        CommandOutput::ManagerLease(lease) => Ok(Json(lease).into_response()),
        other => Err(unexpected(other)),
    }
}

/// `GET /api/v1/artifacts/{digest}`: an artifact's record with its replication per region.
pub async fn artifact(
    State(app): State<AppState>,
    caller: Caller,
    Path(digest): Path<String>,
    ApiQuery(params): ApiQuery<ReadParams>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let digest = cascade_core::Digest::parse(digest)?;
    consistent_read(&app.node, &params, |view| {
        view.state.artifacts.get(&digest).cloned().ok_or_else(|| ApiError::not_found(format!("no artifact {digest}")))
    })
    .await
}

/// `GET /api/v1/deployments/{service}`
pub async fn show(
    State(app): State<AppState>,
    caller: Caller,
    Path(service): Path<String>,
    ApiQuery(params): ApiQuery<ReadParams>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let service = ServiceName::parse(service)?;
    consistent_read(&app.node, &params, |view| {
        let state = &view.state;
        let desired = state.desired.get(&service).cloned();
        let history: Vec<_> =
            state.deploy_history.get(&service).map(|h| h.iter().rev().cloned().collect()).unwrap_or_default();
        if desired.is_none() {
            return Err(ApiError::not_found(format!("service {service} has never been deployed")));
        }
        let mut rollout: BTreeMap<_, BTreeMap<_, _>> = BTreeMap::new();
        if let Some(d) = &desired {
            if let Some(clusters) = state.rollouts.get(&(service.clone(), d.generation)) {
                for ((region, cluster), counts) in clusters {
                    rollout.entry(region.clone()).or_default().insert(cluster.clone(), counts.clone());
                }
            }
        }
        let replication = desired
            .as_ref()
            .and_then(|d| state.artifacts.get(&d.artifact.digest))
            .map(|record| record.replication.clone())
            .unwrap_or_default();
        Ok(DeploymentStatus { desired, history, rollout, replication })
    })
    .await
}

/// Query of `GET /api/v1/desired`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredParams {
    /// Wait until this replica has applied at least this index…
    pub min_index: Option<u64>,
    /// …and/or until a desired version changed after this log index (the last answer's `changed_at_index`)…
    pub after: Option<u64>,
    /// …for at most this many seconds (at most 30), then answer with what it has.
    pub wait: Option<u64>,
}

/// `GET /api/v1/desired`: every service's desired version from the local replica, long-polled.
pub async fn desired(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<DesiredParams>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let deadline = Instant::now() + Duration::from_secs(q.wait.unwrap_or(0)).min(MAX_WAIT);
    // A timeout is not an error here: the agent gets the current versions and polls again.
    if let Some(index) = q.min_index {
        let _ = app.node.wait_applied(index, deadline.saturating_duration_since(Instant::now())).await;
    }
    if let Some(after) = q.after {
        // Bounded by the deadline; each round waits for the applied index to move.
        for _round in 0..100_000 {
            let (applied, changed) = app.node.read(|v| (v.applied_index(), v.desired_changed_at));
            let left = deadline.saturating_duration_since(Instant::now());
            if changed > after || left.is_zero() {
                break;
            }
            app.node.wait_for_change(applied, left).await;
        }
    }
    consistent_read(&app.node, &ReadParams::default(), |view| {
        Ok(DesiredVersions {
            applied_index: view.applied_index(),
            changed_at_index: view.desired_changed_at,
            services: view.state.desired.clone(),
        })
    })
    .await
}
