//! Services: the desired version and generation, the rollout's stage (the sentence the CLI prints), its
//! waves and their states, how it ended and why, progress per region and cluster, a chart of hosts active,
//! promote / pause / resume / abort of the current rollout, the deploy history with each rollout's outcome,
//! and rollback to the previous build.

use super::layout::{csrf_field, page};
use super::time;
use super::waves;
use crate::session::Session;
use crate::{ConsoleBackend, Reject, Shared};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Redirect;
use axum::Form;
use cascade_core::api::Role;
use cascade_core::rollout::{describe_stage, DeployOrigin};
use cascade_core::state::{ClusterRollout, DesiredVersion, RolloutControl, RolloutCounts};
use cascade_core::{ClusterName, JobId, Region, ServiceName, UnixMillis};
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;
use std::collections::BTreeMap;

/// `GET /services`: every deployed service.
pub async fn list<B: ConsoleBackend>(State(console): State<Shared<B>>, headers: HeaderMap) -> Result<Markup, Reject> {
    let session = crate::session_of(&console, &headers)?;
    let desired: Vec<DesiredVersion> = console.backend.read(|state, _| state.desired.values().cloned().collect());
    Ok(page(
        "Services",
        Some(&session),
        html! {
            h1 { "Services" }
            div #live {
                table.list {
                    thead { tr { th { "service" } th { "desired build" } th { "generation" } th { "deployed by" } th { "when" } } }
                    tbody {
                        @for d in &desired {
                            tr {
                                td { a href={"/services/" (d.service)} { (d.service) } }
                                td { a href={"/builds/" (d.build)} { "#" (d.build) } }
                                td { (d.generation) }
                                td { (d.set_by) }
                                td { (time(d.set_at)) }
                            }
                        }
                        @if desired.is_empty() { tr { td colspan="5" { "Nothing deployed yet: deploy a succeeded build from its page." } } }
                    }
                }
            }
        },
    ))
}

struct ServiceView {
    desired: Option<DesiredVersion>,
    /// Newest first, each with its rollout's counts summed over every cluster that reported.
    history: Vec<(DesiredVersion, Option<RolloutCounts>)>,
    rollout: BTreeMap<(Region, ClusterName), ClusterRollout>,
    /// What "Roll back" deploys (core's choice: never a build that was itself rolled back).
    rollback_to: Option<JobId>,
}

/// Lower-case name of a rollout control, as shown and as read by tests (`data-control`).
pub fn control_name(control: RolloutControl) -> &'static str {
    match control {
        RolloutControl::Running => "running",
        RolloutControl::Paused => "paused",
        RolloutControl::Aborted => "aborted",
    }
}

/// The control state as a badge (the build badges' colours: running, waiting, failed).
fn control_badge(control: RolloutControl) -> Markup {
    let class = match control {
        RolloutControl::Running => "running",
        RolloutControl::Paused => "queued",
        RolloutControl::Aborted => "failed",
    };
    html! { span class={"badge " (class)} { (control_name(control)) } }
}

/// Promote / Pause / Resume / Abort for the current generation: one CSRF-protected form whose buttons name
/// the action, each confirmed first. The generation travels with the form, so a page left open cannot act on
/// a newer deploy. A rollout that ended offers none of them.
fn controls(session: &Session, desired: &DesiredVersion) -> Markup {
    let progress = &desired.progress;
    let next = progress.opened.len();
    let promote = desired
        .policy
        .waves
        .get(next)
        .map(|w| format!("wave {} of {} ({})", next + 1, desired.policy.waves.len(), w.describe()));
    html! {
        @if let Some(end) = &progress.end {
            p.muted #controls {
                "This rollout ended (" (end.state.name()) "): nothing to promote, pause or abort. Deploy again to start a new rollout."
            }
        } @else {
            form.inline #controls method="post" action={"/services/" (desired.service) "/control"} {
                (csrf_field(session))
                input type="hidden" name="generation" value=(desired.generation);
                @if let (true, Some(promote)) = (progress.awaiting_approval, &promote) {
                    button #promote type="submit" name="action" value="promote"
                        onclick={"return confirm('Promote: open " (promote) " of generation " (desired.generation) "? Its hosts switch to the new release.')"} { "Promote: open " (promote) }
                    " "
                }
                @if desired.control == RolloutControl::Paused {
                    button #resume type="submit" name="action" value="resume"
                        onclick="return confirm('Resume this rollout? Hosts start switching again.')" { "Resume rollout" }
                } @else {
                    button #pause type="submit" name="action" value="pause"
                        onclick="return confirm('Pause this rollout? No host starts switching until it is resumed.')" { "Pause rollout" }
                }
                " "
                button.danger #abort type="submit" name="action" value="abort"
                    onclick="return confirm('Abort this rollout? Hosts keep their previous release.')" { "Abort rollout" }
            }
        }
    }
}

/// Why this generation exists when it is a roll back, with the end of the rollout it rolled back.
fn origin(desired: &DesiredVersion, history: &[(DesiredVersion, Option<RolloutCounts>)]) -> Markup {
    let (of, automatic) = match desired.origin {
        DeployOrigin::Deploy => return html! {},
        DeployOrigin::Rollback { of } => (of, false),
        DeployOrigin::AutoRollback { of } => (of, true),
    };
    let rolled_back = history.iter().map(|(h, _)| h).find(|h| h.generation == of);
    html! {
        p #origin data-origin=(if automatic { "auto rollback" } else { "rollback" }) {
            @if automatic { "Generation " (desired.generation) " is an automatic roll back of generation " (of) " to build #" (desired.build) "." }
            @else { "Generation " (desired.generation) " rolls generation " (of) " back to build #" (desired.build) "." }
        }
        @if let Some(end) = rolled_back.and_then(|h| h.progress.end.as_ref()) { (waves::end_box("origin-end", of, end)) }
    }
}

/// How one deploy's rollout went: its recorded end, or (not ended) whether it is under way, with the counts
/// its clusters last reported.
fn outcome(entry: &DesiredVersion, counts: Option<&RolloutCounts>, current: bool) -> Markup {
    let figures = |c: &RolloutCounts| {
        let failed = if c.failed > 0 { format!(", {} failed", c.failed) } else { String::new() };
        format!("{} / {} active{failed}", c.active, c.total)
    };
    let (class, word) = match (&entry.progress.end, entry.control, current) {
        (Some(end), _, _) => (waves::end_class(end.state), end.state.name()),
        (None, RolloutControl::Aborted, _) => ("failed", "aborted"),
        (None, RolloutControl::Paused, true) => ("queued", "paused"),
        (None, _, true) => ("running", "in progress"),
        (None, _, false) => ("cancelled", "superseded"),
    };
    let reason = entry.progress.end.as_ref().map(|e| e.reason.as_str()).unwrap_or_default();
    html! {
        span class={"badge " (class)} data-outcome=(word) title=(reason) { (word) }
        " "
        span.muted { @match counts { Some(c) => (figures(c)), None => "no host reported" } }
    }
}

fn percent(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (part as f64 * 100.0 / total as f64).min(100.0)
    }
}

/// A stacked bar: healthy, activating, verified, fetching, failed, out of the targeted hosts.
fn bar(label: &str, c: &RolloutCounts) -> Markup {
    let segments = [
        ("active", c.active),
        ("verified", c.activating),
        ("verified", c.verified),
        ("fetching", c.fetching),
        ("failed", c.failed),
    ];
    if c.total == 0 {
        return html! {
            div.progress data-label=(label) data-active="0" data-total="0" {
                div.label { strong { (label) } " " span.muted data-unmatched="true" {
                    @if c.cluster_hosts > 0 { "the placement matches none of its " (c.cluster_hosts) " hosts" }
                    @else { "no host runs this service" }
                } }
            }
        };
    }
    html! {
        div.progress data-label=(label) data-active=(c.active) data-total=(c.total) {
            div.label {
                strong { (label) } " "
                span.muted { (c.active) " / " (c.total) " healthy (" (format!("{:.0}", percent(c.active, c.total))) " %), "
                    (c.activating) " activating, " (c.verified) " verified, " (c.fetching) " fetching, " (c.failed) " failed" }
            }
            div.track {
                @for (class, n) in segments {
                    @if n > 0 { div class={"seg " (class)} style={"width:" (format!("{:.2}", percent(n, c.total))) "%"} {} }
                }
            }
        }
    }
}

fn sum(counts: impl Iterator<Item = RolloutCounts>) -> RolloutCounts {
    counts.fold(RolloutCounts::default(), |a, c| a + c)
}

/// The failed hosts of the current rollout with their reasons, per cluster (the managers report the first
/// few by name and count the rest).
fn failed_hosts(rollout: &BTreeMap<(Region, ClusterName), ClusterRollout>) -> Markup {
    let any = rollout.values().any(|r| r.failures.total() > 0);
    html! {
        @if any {
            h3 { "Failed hosts" }
            p.muted { "Each is back on its previous release, started again." }
            table.list #failed-hosts {
                thead { tr { th { "region / cluster" } th { "host" } th { "reason" } } }
                tbody {
                    @for ((region, cluster), r) in rollout {
                        @for f in &r.failures.hosts {
                            tr { td { (region) " / " (cluster) } td.mono { (f.host) } td { pre.reason { (f.reason) } } }
                        }
                        @if r.failures.more > 0 {
                            tr { td { (region) " / " (cluster) } td colspan="2" { "and " (r.failures.more) " more" } }
                        }
                    }
                }
            }
        }
    }
}

/// Hosts active against time, from each cluster's latest report (the state keeps the latest per cluster): a
/// step line that rises as clusters report, drawn as inline SVG by the server.
pub fn chart(rollout: &BTreeMap<(Region, ClusterName), ClusterRollout>, since: u64) -> Markup {
    let (w, h, pad) = (600.0_f64, 160.0_f64, 30.0_f64);
    let mut reports: Vec<&ClusterRollout> = rollout.values().collect();
    reports.sort_by_key(|r| r.reported_at);
    let total: u64 = reports.iter().map(|r| r.counts.total).sum::<u64>().max(1);
    let end = reports.last().map_or(since + 1, |r| r.reported_at.0.max(since + 1));
    let x = |t: u64| pad + (t.saturating_sub(since) as f64 / (end - since) as f64) * (w - 2.0 * pad);
    let y = |n: u64| h - pad - (n as f64 / total as f64) * (h - 2.0 * pad);
    let mut points = format!("{:.1},{:.1}", x(since), y(0));
    let mut active = 0;
    for r in &reports {
        points.push_str(&format!(" {:.1},{:.1}", x(r.reported_at.0), y(active)));
        active += r.counts.active;
        points.push_str(&format!(" {:.1},{:.1}", x(r.reported_at.0), y(active)));
    }
    let svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"hosts active over time\">\
         <line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" class=\"axis\"/>\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" class=\"axis\"/>\
         <text x=\"2\" y=\"{t}\" class=\"tick\">{total}</text><text x=\"2\" y=\"{b}\" class=\"tick\">0</text>\
         <text x=\"{r}\" y=\"{h}\" class=\"tick\" text-anchor=\"end\">+{secs} s</text>\
         <polyline points=\"{points}\" class=\"line\"/></svg>",
        b = h - pad,
        r = w - pad,
        t = pad + 4.0,
        // Tenths for a rollout of seconds (a small artifact on a few hosts), whole seconds beyond.
        secs = match (end - since) as f64 / 1000.0 {
            s if s < 10.0 => format!("{s:.1}"),
            s => format!("{s:.0}"),
        },
    );
    PreEscaped(svg)
}

/// `GET /services/{name}`
pub async fn show<B: ConsoleBackend>(
    State(console): State<Shared<B>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Markup, Reject> {
    let session = crate::session_of(&console, &headers)?;
    let service = ServiceName::parse(name).map_err(|e| Reject::not_found(e.to_string()))?;
    let view = console.backend.read(|state, _| {
        let desired = state.desired.get(&service).cloned();
        let history = state
            .deploy_history
            .get(&service)
            .map(|h| {
                h.iter()
                    .rev()
                    .map(|d| {
                        let counts = state
                            .rollouts
                            .get(&(service.clone(), d.generation))
                            .map(|clusters| sum(clusters.values().map(|r| r.counts)));
                        (d.clone(), counts)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rollout = desired
            .as_ref()
            .and_then(|d| state.rollouts.get(&(service.clone(), d.generation)).cloned())
            .unwrap_or_default();
        let rollback_to = state.rollback_target(&service).map(|(build, _)| build);
        ServiceView { desired, history, rollout, rollback_to }
    });
    let previous = view.rollback_to;
    let current = view.desired.as_ref().map(|d| d.generation);
    let mut regions: BTreeMap<&Region, Vec<(&ClusterName, &ClusterRollout)>> = BTreeMap::new();
    for ((region, cluster), r) in &view.rollout {
        regions.entry(region).or_default().push((cluster, r));
    }
    let title = format!("Service {service}");
    let now = UnixMillis(super::now_ms());
    Ok(page(
        &title,
        Some(&session),
        html! {
            h1 { (title) }
            div #live {
                @match &view.desired {
                    None => p #desired { "Never deployed. Deploy a succeeded build of " (service) " from its build page." },
                    Some(d) => {
                        dl.facts #desired {
                            dt { "desired build" } dd { a #desired-build href={"/builds/" (d.build)} { "#" (d.build) } }
                            dt { "generation" } dd #generation { (d.generation) }
                            dt { "artifact" } dd.mono { (d.artifact.digest) }
                            dt { "installed as" } dd.mono { (d.artifact.deploy.install_as) " (mode " (format!("{:04o}", d.artifact.deploy.mode)) ")" }
                            @if !d.artifact.deploy.placement.is_empty() {
                                dt { "placement" } dd.mono {
                                    (d.artifact.deploy.placement.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "))
                                }
                            }
                            dt { "deployed by" } dd { (d.set_by) " at " (time(d.set_at)) }
                            dt { "rollout" } dd #control data-control=(control_name(d.control)) {
                                @match &d.progress.end {
                                    Some(end) => span class={"badge " (waves::end_class(end.state))} { "ended " (end.state.name()) },
                                    None => (control_badge(d.control)),
                                }
                            }
                        }
                        @if let Some(end) = &d.progress.end { (waves::end_box("rollout-end", d.generation, end)) }
                        (origin(d, &view.history))
                        @if session.allows(Role::Deployer) { (controls(&session, d)) }
                        @if let (Some(p), true) = (previous, session.allows(Role::Deployer)) {
                            form.inline method="post" action={"/services/" (service) "/rollback"} {
                                (csrf_field(&session))
                                button #rollback type="submit"
                                    onclick={"return confirm('Roll back to build #" (p) "? Every host switches to it at once (a new generation).')"} { "Roll back to build #" (p) }
                            }
                        }
                        h2 { "Rollout of generation " (d.generation) }
                        p #stage { (describe_stage(&d.policy, &d.progress, d.control, now)) }
                        (waves::table(d, &view.rollout, now))
                        @if regions.is_empty() {
                            p.muted #rollout { "No region has reported yet: region agents report host counts here as they fan the artifact out." }
                        } @else {
                            div #rollout {
                                (bar("all regions", &sum(view.rollout.values().map(|r| r.counts))))
                                @for (region, clusters) in &regions {
                                    h3 { (region) }
                                    (bar(region.as_str(), &sum(clusters.iter().map(|(_, r)| r.counts))))
                                    @for (cluster, r) in clusters { div.indent { (bar(cluster.as_str(), &r.counts)) } }
                                }
                            }
                            (failed_hosts(&view.rollout))
                            h3 { "Hosts active" }
                            (chart(&view.rollout, d.set_at.0))
                        }
                    }
                }
                h2 { "History" }
                table.list #history {
                    thead { tr { th { "generation" } th { "build" } th { "deployed by" } th { "when" } th { "outcome" } } }
                    tbody {
                        @for (h, counts) in &view.history {
                            tr data-generation=(h.generation) {
                                td { (h.generation) }
                                td { a href={"/builds/" (h.build)} { "#" (h.build) } }
                                td { (h.set_by) }
                                td { (time(h.set_at)) }
                                td { (outcome(h, counts.as_ref(), Some(h.generation) == current)) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// Fields of the rollback form.
#[derive(Deserialize)]
pub struct RollbackForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /services/{name}/rollback`: deploys an earlier build again (a new generation).
pub async fn rollback<B: ConsoleBackend>(
    State(console): State<Shared<B>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<RollbackForm>,
) -> Result<Redirect, Reject> {
    let session = crate::authorize_post(&console, &headers, &form.csrf, Role::Deployer)?;
    let service = ServiceName::parse(name).map_err(|e| Reject::not_found(e.to_string()))?;
    console.backend.rollback(session.principal.clone(), service.clone()).await?;
    Ok(Redirect::to(&format!("/services/{service}")))
}

/// Fields of the rollout control form.
#[derive(Deserialize)]
pub struct ControlForm {
    #[serde(default)]
    csrf: String,
    /// The generation the page showed; core refuses any other than the current one.
    #[serde(default)]
    generation: String,
    /// `promote`, `pause`, `resume` or `abort` (the pressed button's value).
    #[serde(default)]
    action: String,
}

/// `POST /services/{name}/control`: promotes, pauses, resumes or aborts the current rollout, then shows the
/// service.
pub async fn control<B: ConsoleBackend>(
    State(console): State<Shared<B>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<ControlForm>,
) -> Result<Redirect, Reject> {
    let session = crate::authorize_post(&console, &headers, &form.csrf, Role::Deployer)?;
    let service = ServiceName::parse(name).map_err(|e| Reject::not_found(e.to_string()))?;
    let bad = |detail: String| Reject::Status(axum::http::StatusCode::BAD_REQUEST, detail);
    let generation: u64 =
        form.generation.parse().map_err(|_| bad(format!("generation {:?} is not a number", form.generation)))?;
    let actor = session.principal.clone();
    let control = match form.action.as_str() {
        "promote" => {
            console.backend.promote_rollout(actor, service.clone(), generation).await?;
            return Ok(Redirect::to(&format!("/services/{service}")));
        }
        "pause" => RolloutControl::Paused,
        "resume" => RolloutControl::Running,
        "abort" => RolloutControl::Aborted,
        other => return Err(bad(format!("no rollout action {other:?}: use promote, pause, resume or abort"))),
    };
    console.backend.control_rollout(actor, service.clone(), generation, control).await?;
    Ok(Redirect::to(&format!("/services/{service}")))
}
