//! The builds page: the submit form (validated as you type), and the list, newest first, paged, filtered.

use super::layout::{csrf_field, page};
use super::{badge, build_duration, time};
use crate::session::Session;
use crate::{ConsoleBackend, Reject, Shared};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use cascade_core::api::{Role, SubmitBuildRequest};
use cascade_core::{CommitSha, Job, JobId, RepoUrl, ServiceName, State as CoreState};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

/// Builds per page.
pub const PAGE: usize = 50;

/// Most jobs one page render walks when a filter rarely matches (the list continues from where it stopped).
pub const MAX_SCAN: usize = 10_000;

/// The statuses a filter may name.
pub const STATUSES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

/// Query of `GET /builds`.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Only builds with a smaller id.
    pub before: Option<u64>,
    /// Only this service (empty: all).
    #[serde(default)]
    pub service: String,
    /// Only this status (empty: all).
    #[serde(default)]
    pub status: String,
}

/// One page of the build list.
pub struct ListPage {
    /// The builds, newest first.
    pub builds: Vec<Job>,
    /// Where the next page starts.
    pub next_before: Option<u64>,
    /// Builds in the state.
    pub total: usize,
}

/// Picks one page of builds from the state; bounded by [`MAX_SCAN`] jobs whatever the filter.
pub fn select(state: &CoreState, query: &ListQuery) -> ListPage {
    let before = JobId(query.before.unwrap_or(u64::MAX));
    let mut builds = Vec::with_capacity(PAGE);
    let mut next_before = None;
    for (scanned, job) in state.jobs.range(..before).rev().map(|(_, j)| j).enumerate() {
        if scanned == MAX_SCAN {
            next_before = Some(job.id.0 + 1);
            break;
        }
        if (!query.service.is_empty() && job.service.as_str() != query.service)
            || (!query.status.is_empty() && job.status.name() != query.status)
        {
            continue;
        }
        if builds.len() == PAGE {
            next_before = builds.last().map(|j: &Job| j.id.0);
            break;
        }
        builds.push(job.clone());
    }
    ListPage { builds, next_before, total: state.jobs.len() }
}

/// The list table (also the live-updated region).
pub fn list_markup(list: &ListPage, query: &ListQuery) -> Markup {
    let next = list.next_before.map(|before| {
        let mut url = format!("/builds?before={before}");
        if !query.service.is_empty() {
            url.push_str(&format!("&service={}", query.service));
        }
        if !query.status.is_empty() {
            url.push_str(&format!("&status={}", query.status));
        }
        url
    });
    html! {
        p.muted { (list.total) " builds in all" }
        table.list #builds {
            thead { tr { th { "#" } th { "service" } th { "status" } th { "commit" } th { "asked by" }
                th { "submitted" } th { "duration" } th { "attempts" } } }
            tbody {
                @for job in &list.builds {
                    tr data-build=(job.id) {
                        td { a href={"/builds/" (job.id)} { (job.id) } }
                        td { a href={"/services/" (job.service)} { (job.service) } }
                        td { (badge(&job.status)) }
                        td.mono { (&job.commit.as_str()[..12]) }
                        td { (job.requested_by) }
                        td { (time(job.submitted_at)) }
                        td { (build_duration(job)) }
                        td { (job.attempt) " / " (job.max_attempts) }
                    }
                }
                @if list.builds.is_empty() { tr { td colspan="8" { "No builds match." } } }
            }
        }
        @if let Some(next) = next { p { a #next-page href=(next) { "Older builds →" } } }
    }
}

fn form_markup(session: &Session, values: &SubmitForm, error: Option<&str>) -> Markup {
    html! {
        form.card #build-form method="post" action="/builds" {
            h2 { "Build a commit" }
            @if let Some(error) = error { p.error #error { (error) } }
            (csrf_field(session))
            (field("repo", "Repository", &values.repo, "https://git.example.com/team/app.git"))
            (field("commit", "Commit SHA", &values.commit, "40 hexadecimal characters"))
            (field("service", "Service", &values.service, "app"))
            button #build type="submit" { "Build" }
        }
    }
}

fn field(name: &str, label: &str, value: &str, placeholder: &str) -> Markup {
    html! {
        div.field {
            label for=(name) { (label) }
            input id=(name) name=(name) value=(value) placeholder=(placeholder) data-validate=(name)
                autocomplete="off" required;
            span.msg id={(name) "-msg"} {}
        }
    }
}

fn render(session: &Session, list: &ListPage, query: &ListQuery, form: &SubmitForm, error: Option<&str>) -> Markup {
    page(
        "Builds",
        Some(session),
        html! {
            h1 { "Builds" }
            @if session.allows(Role::Builder) { (form_markup(session, form, error)) }
            form.filters method="get" action="/builds" {
                label { "service " input name="service" value=(query.service) size="14"; }
                label { "status "
                    select name="status" {
                        option value="" { "any" }
                        @for s in STATUSES { option value=(s) selected[query.status == s] { (s) } }
                    }
                }
                button type="submit" { "Filter" }
            }
            div #live { (list_markup(list, query)) }
        },
    )
}

/// `GET /builds`
pub async fn list<B: ConsoleBackend>(
    State(console): State<Shared<B>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Markup, Reject> {
    let session = crate::session_of(&console, &headers)?;
    let list = console.backend.read(|state, _| select(state, &query));
    Ok(render(&session, &list, &query, &SubmitForm::default(), None))
}

/// The build form's fields.
#[derive(Debug, Default, Deserialize)]
pub struct SubmitForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    repo: String,
    #[serde(default)]
    commit: String,
    #[serde(default)]
    service: String,
}

fn parse_form(form: &SubmitForm) -> Result<SubmitBuildRequest, String> {
    let repo = RepoUrl::parse(form.repo.trim()).map_err(|e| e.to_string())?;
    let commit = CommitSha::parse(form.commit.trim()).map_err(|e| e.to_string())?;
    let service = ServiceName::parse(form.service.trim()).map_err(|e| e.to_string())?;
    Ok(SubmitBuildRequest { repo, commit, service })
}

/// `POST /builds`: queues the build and shows its page; invalid input comes back with the exact reason.
pub async fn submit<B: ConsoleBackend>(
    State(console): State<Shared<B>>,
    headers: HeaderMap,
    Form(form): Form<SubmitForm>,
) -> Result<Response, Reject> {
    let session = crate::authorize_post(&console, &headers, &form.csrf, Role::Builder)?;
    let request = match parse_form(&form) {
        Ok(request) => request,
        Err(error) => {
            let query = ListQuery::default();
            let list = console.backend.read(|state, _| select(state, &query));
            let body = render(&session, &list, &query, &form, Some(&error));
            return Ok((StatusCode::BAD_REQUEST, body).into_response());
        }
    };
    let job = console.backend.submit_build(session.principal.clone(), request).await?;
    Ok(Redirect::to(&format!("/builds/{}", job.id)).into_response())
}

/// Query of `GET /validate`.
#[derive(Debug, Deserialize)]
pub struct ValidateQuery {
    field: String,
    #[serde(default)]
    value: String,
}

/// `GET /validate?field=commit&value=…`: `{"ok": bool, "message": "…"}` with core's own validation text, so
/// the form says exactly what the server would refuse.
pub async fn validate<B: ConsoleBackend>(
    State(console): State<Shared<B>>,
    headers: HeaderMap,
    Query(q): Query<ValidateQuery>,
) -> Result<Json<serde_json::Value>, Reject> {
    crate::session_of(&console, &headers)?;
    let value = q.value.trim();
    let result = match q.field.as_str() {
        "repo" => RepoUrl::parse(value).map(|_| ()),
        "commit" => CommitSha::parse(value).map(|_| ()),
        "service" => ServiceName::parse(value).map(|_| ()),
        other => return Err(Reject::Status(StatusCode::BAD_REQUEST, format!("no field {other:?} to validate"))),
    };
    Ok(Json(match result {
        Ok(()) => json!({"ok": true, "message": ""}),
        Err(e) => json!({"ok": false, "message": e.to_string()}),
    }))
}
