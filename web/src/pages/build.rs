//! One build: status, timeline, live log tail, artifact, replication per region, Deploy (with optional
//! rollout overrides) and Cancel.

use super::layout::{csrf_field, page};
use super::overrides::OverrideFields;
use super::{badge, build_duration, bytes, time};
use crate::session::Session;
use crate::{Console, ConsoleBackend, Reject, Shared};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use cascade_core::api::{DeployRequest, Role};
use cascade_core::state::{ArtifactRecord, ReplicationStatus};
use cascade_core::{Job, JobId, JobStatus};
use maud::{html, Markup};
use serde::Deserialize;

/// Bytes of log the page shows (the end of it).
pub const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// Why a build cannot be deployed, or `None` when it can.
pub fn not_deployable_reason(job: &Job) -> Option<String> {
    match &job.status {
        JobStatus::Succeeded { .. } => None,
        JobStatus::Queued => Some("waiting for a worker; only a succeeded build can be deployed".into()),
        JobStatus::Running { .. } => Some("still building; only a succeeded build can be deployed".into()),
        JobStatus::Failed { .. } => Some("the build failed; only a succeeded build can be deployed".into()),
        JobStatus::Cancelled { .. } => Some("the build was cancelled; only a succeeded build can be deployed".into()),
    }
}

fn replication(record: &ArtifactRecord) -> Markup {
    html! {
        table.list #replication {
            thead { tr { th { "region" } th { "replication" } th { "complete since" } } }
            tbody {
                @for (region, status) in &record.replication {
                    tr {
                        td { (region) }
                        td { @match status {
                            ReplicationStatus::Pending => span.badge.queued { "pending" },
                            ReplicationStatus::Copying { chunks_done, chunks_total } =>
                                span.badge.running { "copying " (chunks_done) " / " (chunks_total) " chunks" },
                            ReplicationStatus::Replicated => span.badge.succeeded { "replicated" },
                            ReplicationStatus::Error { reason } => span.badge.failed title=(reason) { "error: " (reason) },
                        } }
                        td { @if let Some(at) = record.replicated_at.get(region) { (time(*at)) } }
                    }
                }
                @if record.replication.is_empty() { tr { td colspan="3" { "No regional stores configured." } } }
            }
        }
    }
}

fn actions(session: &Session, job: &Job) -> Markup {
    let reason = not_deployable_reason(job);
    let cancellable = matches!(job.status, JobStatus::Queued | JobStatus::Running { .. });
    html! {
        div.actions {
            @if session.allows(Role::Deployer) {
                form.inline #deploy-form method="post" action={"/builds/" (job.id) "/deploy"} {
                    (csrf_field(session))
                    @if let Some(reason) = &reason {
                        button #deploy type="submit" disabled title=(reason) { "Deploy to " (job.service) }
                        span.muted #deploy-why { (reason) }
                    } @else {
                        button #deploy type="submit" { "Deploy to " (job.service) }
                    }
                }
            }
            @if cancellable && session.allows(Role::Builder) {
                form.inline method="post" action={"/builds/" (job.id) "/cancel"} {
                    (csrf_field(session))
                    button.danger #cancel type="submit" { "Cancel build" }
                }
            }
        }
    }
}

fn detail(session: &Session, job: &Job, record: Option<&ArtifactRecord>, log: &Result<String, String>) -> Markup {
    html! {
        p { "Status " span #status { (badge(&job.status)) } }
        (actions(session, job))
        dl.facts {
            dt { "service" } dd { a href={"/services/" (job.service)} { (job.service) } }
            dt { "repository" } dd.mono { (job.repo) }
            dt { "commit" } dd.mono { (job.commit) }
            dt { "asked by" } dd { (job.requested_by) }
            dt { "submitted" } dd { (time(job.submitted_at)) }
            dt { "duration" } dd { (build_duration(job)) }
            dt { "attempts" } dd { (job.attempt) " of " (job.max_attempts) }
            @match &job.status {
                JobStatus::Running { worker, last_heartbeat, .. } => {
                    dt { "worker" } dd { (worker) ", last heartbeat " (time(*last_heartbeat)) }
                }
                JobStatus::Failed { reason } => { dt { "reason" } dd.error { (reason) } }
                JobStatus::Cancelled { by } => { dt { "cancelled by" } dd { (by) } }
                JobStatus::Succeeded { artifact } => {
                    dt { "artifact digest" } dd.mono #digest { (artifact.digest) }
                    dt { "artifact size" } dd #size { (bytes(artifact.size)) }
                }
                JobStatus::Queued => {}
            }
        }
        h2 { "Timeline" }
        ol.timeline {
            @for event in &job.timeline { li { (time(event.at)) " — " (event.what) } }
        }
        @if let Some(record) = record { h2 { "Replication" } (replication(record)) }
        h2 { "Log" }
        @match log {
            Ok(text) => pre.log #log { (text) },
            Err(why) => p.muted #log { (why) },
        }
    }
}

/// `GET /builds/{id}`
pub async fn show<B: ConsoleBackend>(
    State(console): State<Shared<B>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Markup, Reject> {
    let session = crate::session_of(&console, &headers)?;
    render(&console, &session, id, &OverrideFields::default(), None).await
}

/// The build page; `overrides` refills the deploy form's rollout overrides, `error` says why a deploy was
/// refused. Both sit outside the live region, so a live update never resets what is being typed.
async fn render<B: ConsoleBackend>(
    console: &Console<B>,
    session: &Session,
    id: u64,
    overrides: &OverrideFields,
    error: Option<&str>,
) -> Result<Markup, Reject> {
    let found = console.backend.read(|state, _| {
        let job = state.jobs.get(&JobId(id))?.clone();
        let record = match &job.status {
            JobStatus::Succeeded { artifact } => state.artifacts.get(&artifact.digest).cloned(),
            _ => None,
        };
        Some((job, record))
    });
    let (job, record) = found.ok_or_else(|| Reject::not_found(format!("no build with id {id}")))?;
    let log = if job.attempt == 0 {
        Err("No log yet: the build has not started.".to_string())
    } else {
        match console.backend.build_log(job.id, LOG_TAIL_BYTES).await {
            Ok(log) => Ok(log.text),
            Err(e) => Err(e.detail),
        }
    };
    let may_deploy = matches!(job.status, JobStatus::Queued | JobStatus::Running { .. } | JobStatus::Succeeded { .. });
    let title = format!("Build {id}");
    Ok(page(
        &title,
        Some(session),
        html! {
            h1 { (title) " · " (job.service) }
            @if let Some(error) = error {
                p.error #deploy-error role="alert" { "Not deployed: " (error) }
            }
            @if may_deploy && session.allows(Role::Deployer) { (overrides.fields("deploy-form")) }
            div #live { (detail(session, &job, record.as_ref(), &log)) }
        },
    ))
}

/// Fields of the cancel form.
#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /builds/{id}/cancel`
pub async fn cancel<B: ConsoleBackend>(
    State(console): State<Shared<B>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Form(form): Form<ActionForm>,
) -> Result<Redirect, Reject> {
    let session = crate::authorize_post(&console, &headers, &form.csrf, Role::Builder)?;
    console.backend.cancel_build(session.principal.clone(), JobId(id)).await?;
    Ok(Redirect::to(&format!("/builds/{id}")))
}

/// Fields of the deploy form: the anti-forgery token and the optional rollout overrides.
#[derive(Deserialize)]
pub struct DeployForm {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    overrides: OverrideFields,
}

/// `POST /builds/{id}/deploy`: makes the build its service's desired version (with the form's rollout
/// overrides), then shows the service. A refused deploy shows the build page again with the reason and the
/// values typed.
pub async fn deploy<B: ConsoleBackend>(
    State(console): State<Shared<B>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Form(form): Form<DeployForm>,
) -> Result<Response, Reject> {
    let session = crate::authorize_post(&console, &headers, &form.csrf, Role::Deployer)?;
    let service = console.backend.read(|state, _| state.jobs.get(&JobId(id)).map(|j| j.service.clone()));
    let service = service.ok_or_else(|| Reject::not_found(format!("no build with id {id}")))?;
    let outcome =
        match form.overrides.section() {
            Ok(rollout) => {
                let request = DeployRequest { service: service.clone(), build: JobId(id), rollout };
                console.backend.deploy(session.principal.clone(), request).await.map_err(|e| {
                    (StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), e.detail)
                })
            }
            Err(detail) => Err((StatusCode::BAD_REQUEST, detail)),
        };
    match outcome {
        Ok(_) => Ok(Redirect::to(&format!("/services/{service}")).into_response()),
        Err((status, detail)) => {
            let page = render(&console, &session, id, &form.overrides, Some(&detail)).await?;
            Ok((status, page).into_response())
        }
    }
}
