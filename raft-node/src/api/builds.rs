//! Builds: submit, list, show, cancel.

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::{consistent_read, AppState, Caller, ReadParams};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cascade_core::api::{BuildDetail, BuildList, BuildLog, Role, SubmitBuildRequest, IDEMPOTENCY_KEY_HEADER};
use cascade_core::job::validate_idempotency_key;
use cascade_core::{Command, CommandOutput, JobId, ServiceName};
use cascade_core::{JobStatus, Manifest};
use object_store::path::Path as ObjectKey;
use object_store::ObjectStoreExt;
use serde::Deserialize;

/// Most jobs one list request looks at.
pub const MAX_SCAN: usize = 10_000;

/// Most builds one page returns.
pub const MAX_PAGE: usize = 500;

/// `POST /api/v1/builds`
pub async fn submit(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SubmitBuildRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Builder)?;
    let idempotency_key = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        None => None,
        Some(value) => {
            let key = value.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key must be printable ASCII"))?;
            // Checked here too (the state machine refuses it anyway) so a bad key costs no log entry.
            validate_idempotency_key(key)?;
            Some(key.to_string())
        }
    };
    let command = Command::SubmitBuild { repo: body.repo, commit: body.commit, service: body.service, idempotency_key };
    match app.node.write(caller.name, command).await?? {
        CommandOutput::Job(job) => Ok((StatusCode::CREATED, Json(job)).into_response()),
        other => Err(unexpected(other)),
    }
}

/// Query of `GET /api/v1/builds`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only builds with a smaller id (the previous page's `next_before`).
    pub before: Option<u64>,
    /// Page size, at most [`MAX_PAGE`] (default 50).
    pub limit: Option<usize>,
    /// Only this service.
    pub service: Option<String>,
    /// Only this status (`queued`, `running`, `succeeded`, `failed`, `cancelled`).
    pub status: Option<String>,
    /// See [`ReadParams`].
    pub consistency: Option<String>,
    /// See [`ReadParams`].
    pub min_index: Option<u64>,
}

/// `GET /api/v1/builds`: newest first, paged.
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_PAGE}")));
    }
    let service = q.service.map(ServiceName::parse).transpose()?;
    const STATUSES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];
    if let Some(status) = &q.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(ApiError::bad_request(format!("status must be one of {STATUSES:?}")));
        }
    }
    let params = ReadParams { consistency: q.consistency, min_index: q.min_index };
    let before = JobId(q.before.unwrap_or(u64::MAX));
    consistent_read(&app.node, &params, |view| {
        let jobs = &view.state.jobs;
        let mut builds = Vec::with_capacity(limit);
        let mut next_before = None;
        // A filter that rarely matches must not walk every job under the state lock: stop after MAX_SCAN
        // jobs and let the caller continue from where the scan stopped.
        for (scanned, job) in jobs.range(..before).rev().map(|(_, job)| job).enumerate() {
            if scanned == MAX_SCAN {
                next_before = Some(JobId(job.id.0 + 1));
                break;
            }
            if service.as_ref().is_some_and(|s| &job.service != s)
                || q.status.as_deref().is_some_and(|s| job.status.name() != s)
            {
                continue;
            }
            if builds.len() == limit {
                next_before = builds.last().map(|j: &cascade_core::Job| j.id);
                break;
            }
            builds.push(job.clone());
        }
        Ok(BuildList { builds, next_before, total: jobs.len() as u64 })
    })
    .await
}

/// `GET /api/v1/builds/{id}`
pub async fn show(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
    ApiQuery(params): ApiQuery<ReadParams>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    consistent_read(&app.node, &params, |view| {
        let job = view
            .state
            .jobs
            .get(&JobId(id))
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no build with id {id}")))?;
        let artifact_record = match &job.status {
            JobStatus::Succeeded { artifact } => view.state.artifacts.get(&artifact.digest).cloned(),
            _ => None,
        };
        Ok(BuildDetail { job, artifact_record })
    })
    .await
}

/// Longest log text one request returns: the end of the log, like `tail -c`.
pub const MAX_LOG_BYTES: u64 = 4 * 1024 * 1024;

/// `GET /api/v1/builds/{id}/log` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// Return at most this many bytes from the end (default and maximum [`MAX_LOG_BYTES`]).
    pub tail: Option<u64>,
}

/// `GET /api/v1/builds/{id}/log`: the latest attempt's log, read from the `main` store: the complete log once
/// the attempt ended, the live tail (refreshed with every heartbeat) while it runs.
pub async fn log(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<u64>,
    ApiQuery(params): ApiQuery<LogParams>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let Some(blobs) = app.blobs.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_store",
            "this node has no [stores] configured, so it cannot read build logs; ask a node that has",
        ));
    };
    let job = app.node.read(|view| view.state.jobs.get(&JobId(id)).cloned());
    let job = job.ok_or_else(|| ApiError::not_found(format!("no build with id {id}")))?;
    if job.attempt == 0 {
        return Err(ApiError::not_found(format!("build {id} has not started yet, so it has no log")));
    }
    let max = params.tail.unwrap_or(MAX_LOG_BYTES).min(MAX_LOG_BYTES);
    let running = matches!(job.status, JobStatus::Running { .. });
    let complete_key = ObjectKey::from(Manifest::build_log_key(job.id, job.attempt));
    let tail_key = ObjectKey::from(Manifest::build_log_tail_key(job.id, job.attempt));
    let candidates = if running { vec![(tail_key, false)] } else { vec![(complete_key, true), (tail_key, false)] };
    for (key, complete) in candidates {
        let size = match blobs.main.head(&key).await {
            Ok(meta) => meta.size,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(store_error(&key, e)),
        };
        let offset = size.saturating_sub(max);
        let bytes = if size == 0 {
            Default::default()
        } else {
            blobs.main.get_range(&key, offset..size).await.map_err(|e| store_error(&key, e))?
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        return Ok(Json(BuildLog { job: job.id, attempt: job.attempt, complete, offset, text }).into_response());
    }
    Err(ApiError::not_found(format!(
        "no log for build {id} attempt {} yet: the worker publishes it with its first heartbeat",
        job.attempt
    )))
}

fn store_error(key: &ObjectKey, error: object_store::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "store_unavailable",
        format!("cannot read {key} from the main store: {error}"),
    )
}

/// `POST /api/v1/builds/{id}/cancel`
pub async fn cancel(State(app): State<AppState>, caller: Caller, Path(id): Path<u64>) -> Result<Response, ApiError> {
    caller.require(Role::Builder)?;
    match app.node.write(caller.name, Command::Cancel { job: JobId(id) }).await?? {
        CommandOutput::Job(job) => Ok(Json(job).into_response()),
        other => Err(unexpected(other)),
    }
}

/// A command answered with an output of another kind: a bug, reported rather than hidden.
pub(super) fn unexpected(output: CommandOutput) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("unexpected command output {output:?}"))
}
