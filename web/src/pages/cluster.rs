//! The cluster page (members, roles, leader, applied index and lag, workers) and the audit log.

use super::layout::page;
use super::{now_ms, time};
use crate::{ConsoleBackend, Reject, Shared};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use cascade_core::state::AuditEntry;
use cascade_core::UnixMillis;
use maud::{html, Markup};
use serde::Deserialize;

/// `GET /cluster`
pub async fn show<B: ConsoleBackend>(State(console): State<Shared<B>>, headers: HeaderMap) -> Result<Markup, Reject> {
    let session = crate::session_of(&console, &headers)?;
    let status = console.backend.cluster().await;
    let now = now_ms();
    Ok(page(
        "Cluster",
        Some(&session),
        html! {
            h1 { "Cluster" }
            div #live {
                dl.facts {
                    dt { "answered by" } dd { "node " (status.node_id) }
                    dt { "leader" } dd #leader { @match status.leader { Some(l) => { "node " (l) }, None => "none known" } }
                    dt { "term" } dd { (status.term) }
                    dt { "applied index" } dd #applied { (status.applied_index.unwrap_or(0)) }
                    dt { "builds" } dd { (status.builds_total) " in all, " (status.queued) " queued, " (status.running) " running" }
                }
                h2 { "Nodes" }
                table.list #nodes {
                    thead { tr { th { "id" } th { "address" } th { "region" } th { "role" } th { "matched index" } th { "lag" } } }
                    tbody {
                        @for m in &status.members {
                            tr {
                                td { (m.id) @if status.leader == Some(m.id) { " " span.badge.succeeded { "leader" } } }
                                td.mono { (m.addr) }
                                td { (m.region) }
                                td { (m.role) }
                                td { @if let Some(i) = m.matched_index { (i) } @else { "?" } }
                                td { @if let Some(l) = m.lag { (l) " entries" } @else { "?" } }
                            }
                        }
                    }
                }
                h2 { "Workers" }
                table.list #workers {
                    thead { tr { th { "worker" } th { "last heard from" } th { "ago" } } }
                    tbody {
                        @for (worker, at) in &status.workers {
                            tr { td { (worker) } td { (time(UnixMillis(*at))) } td { (super::duration(now.saturating_sub(*at))) } }
                        }
                        @if status.workers.is_empty() { tr { td colspan="3" { "No worker has been heard from." } } }
                    }
                }
            }
        },
    ))
}

/// Audit entries per page.
pub const AUDIT_PAGE: usize = 100;

/// Query of `GET /audit`.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Only entries with a smaller sequence number.
    before: Option<u64>,
}

/// `GET /audit`: newest first, paged.
pub async fn audit<B: ConsoleBackend>(
    State(console): State<Shared<B>>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Markup, Reject> {
    let session = crate::session_of(&console, &headers)?;
    let (entries, next): (Vec<AuditEntry>, Option<u64>) = console.backend.read(|state, _| {
        let audit = &state.audit;
        let end = q.before.map_or(audit.len(), |b| (b.saturating_sub(1) as usize).min(audit.len()));
        let start = end.saturating_sub(AUDIT_PAGE);
        let entries: Vec<_> = audit[start..end].iter().rev().cloned().collect();
        let next = if start > 0 { entries.last().map(|e| e.seq) } else { None };
        (entries, next)
    });
    Ok(page(
        "Audit",
        Some(&session),
        html! {
            h1 { "Audit log" }
            div #live {
                table.list #audit {
                    thead { tr { th { "#" } th { "when" } th { "who" } th { "action" } th { "what" } } }
                    tbody {
                        @for e in &entries {
                            tr { td { (e.seq) } td { (time(e.at)) } td { (e.actor) } td.mono { (e.action) } td { (e.detail) } }
                        }
                    }
                }
                @if let Some(before) = next { p { a #next-page href={"/audit?before=" (before)} { "Older entries →" } } }
            }
        },
    ))
}
