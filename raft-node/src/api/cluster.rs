//! Cluster membership and status, the audit log, health and metrics.

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::{AppState, Caller};
use crate::metrics::{RolloutFigures, Snapshot, REPLICATION_STATES};
use crate::node::Node;
use crate::types::NodeInfo;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cascade_core::api::{AddMemberRequest, AuditPage, ClusterMember, ClusterStatus, Role};
use serde::Deserialize;
use serde_json::json;

/// This node's view of the cluster; on the leader it includes each member's replication lag.
pub fn local_status(node: &Node) -> ClusterStatus {
    let metrics = node.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let last = metrics.last_log_index.unwrap_or(0);
    let members = membership
        .nodes()
        .map(|(id, info)| {
            let matched = metrics.replication.as_ref().and_then(|r| r.get(id)).map(|m| m.map_or(0, |l| l.index));
            let matched = if *id == node.id { metrics.last_log_index } else { matched };
            ClusterMember {
                id: *id,
                addr: info.addr.clone(),
                region: info.region.clone(),
                role: if voters.contains(id) { "voter" } else { "learner" }.to_string(),
                matched_index: matched,
                lag: matched.map(|m| last.saturating_sub(m)),
            }
        })
        .collect();
    let (workers, builds_total, queued, running) = node.read(|v| {
        let s = &v.state;
        let workers = s.workers.iter().map(|(w, at)| (w.clone(), at.0)).collect();
        (workers, s.jobs.len() as u64, s.queue.len() as u64, s.running.len() as u64)
    });
    ClusterStatus {
        node_id: node.id,
        leader: metrics.current_leader,
        term: metrics.current_term,
        last_log_index: metrics.last_log_index,
        applied_index: metrics.last_applied.map(|l| l.index),
        members,
        workers,
        builds_total,
        queued,
        running,
    }
}

/// `GET /api/v1/cluster`: asks the leader for lag figures when this node is not the leader.
pub async fn status(State(app): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let node = &app.node;
    let mut status = local_status(node);
    if !node.is_leader() {
        if let Some(leader) = node.leader() {
            // Lag is only known to the leader; keep this node's own figures if the leader does not answer.
            if let Ok(from_leader) = node.leader_status(&leader.1.addr).await {
                status.members = from_leader.members;
            }
        }
    }
    Ok(Json(status).into_response())
}

/// `POST /api/v1/cluster/init`: initializes the cluster with this node and the voters in its config.
pub async fn init(State(app): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    if app.node.config.role != crate::config::MemberRole::Voter {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "wrong_state",
            "a learner cannot initialize the cluster; ask a voter",
        ));
    }
    app.node.initialize().await?;
    Ok(Json(json!({"initialized": true, "node_id": app.node.id})).into_response())
}

/// `POST /api/v1/cluster/members`: adds a learner or a voter (through the leader).
pub async fn add_member(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<AddMemberRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    if !valid_host_port(&body.addr) {
        return Err(ApiError::bad_request(format!(
            "addr must be host:port (a hostname or IP and a port 1-65535, no scheme or path), got {:?}",
            body.addr
        )));
    }
    let info = NodeInfo { addr: body.addr.clone(), region: body.region.to_string() };
    app.node.add_member_via_leader(body.id, info, body.voter).await?;
    Ok(Json(json!({"added": body.id, "voter": body.voter})).into_response())
}

/// `DELETE /api/v1/cluster/members/{id}`: admin only.
pub async fn remove_member(
    State(app): State<AppState>,
    caller: Caller,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    app.node.remove_member_via_leader(id).await?;
    Ok(Json(json!({"removed": id})).into_response())
}

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only entries with a smaller sequence number.
    pub before: Option<u64>,
    /// Page size (1 to 500, default 100).
    pub limit: Option<usize>,
}

/// `GET /api/v1/audit`: newest first, paged.
pub async fn audit(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditParams>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 500 {
        return Err(ApiError::bad_request("limit must be 1 to 500"));
    }
    let page = app.node.read(|v| {
        let audit = &v.state.audit;
        // seq n lives at position n - 1.
        let end = q.before.map_or(audit.len(), |b| (b.saturating_sub(1) as usize).min(audit.len()));
        let start = end.saturating_sub(limit);
        let entries: Vec<_> = audit[start..end].iter().rev().cloned().collect();
        let next_before = if start > 0 { entries.last().map(|e| e.seq) } else { None };
        AuditPage { entries, next_before }
    });
    Ok(Json(page).into_response())
}

/// `GET /healthz`: 200 while Raft runs, with the leader and applied index; no token needed.
pub async fn healthz(State(app): State<AppState>) -> Response {
    let metrics = app.node.raft.metrics().borrow().clone();
    let running = metrics.running_state.is_ok();
    let body = json!({
        "status": if running { "ok" } else { "failed" },
        "node_id": app.node.id,
        "leader": metrics.current_leader,
        "state": format!("{:?}", metrics.state),
        "applied_index": metrics.last_applied.map(|l| l.index),
    });
    let status = if running { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<AppState>) -> Response {
    let node = &app.node;
    let status = local_status(node);
    let raft = node.raft.metrics().borrow().clone();
    let (jobs, queue_depth, workers, running_builds, replication, rollouts) = node.read(|v| {
        let s = &v.state;
        let counts = s.status_counts().into_iter().collect();
        (
            counts,
            s.queue.len() as u64,
            s.workers.len() as u64,
            s.running.len() as u64,
            replication_counts(s),
            rollouts(s),
        )
    });
    let lag = status
        .members
        .iter()
        .filter(|m| m.id != node.id)
        .filter_map(|m| m.lag.map(|lag| (m.id, m.region.clone(), lag)))
        .collect();
    let text = node.metrics.render(Snapshot {
        term: raft.current_term,
        last_log_index: raft.last_log_index.unwrap_or(0),
        applied_index: raft.last_applied.map_or(0, |l| l.index),
        is_leader: node.is_leader(),
        lag,
        jobs,
        queue_depth,
        workers,
        running_builds,
        replication,
        rollouts,
    });
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

/// Artifacts per (region, replication state), every state of every region named.
fn replication_counts(state: &cascade_core::State) -> Vec<(String, &'static str, u64)> {
    use cascade_core::state::ReplicationStatus;
    let mut counts: std::collections::BTreeMap<(String, &'static str), u64> = Default::default();
    for record in state.artifacts.values() {
        for (region, status) in &record.replication {
            let name = match status {
                ReplicationStatus::Pending => "pending",
                ReplicationStatus::Copying { .. } => "copying",
                ReplicationStatus::Replicated => "replicated",
                ReplicationStatus::Error { .. } => "error",
            };
            for state in REPLICATION_STATES {
                counts.entry((region.to_string(), state)).or_insert(0);
            }
            *counts.entry((region.to_string(), name)).or_insert(0) += 1;
        }
    }
    counts.into_iter().map(|((region, state), n)| (region, state, n)).collect()
}

/// Host counts of every desired service's current generation, per region (clusters summed).
fn rollouts(state: &cascade_core::State) -> Vec<RolloutFigures> {
    let mut figures = Vec::new();
    for (service, desired) in &state.desired {
        let Some(clusters) = state.rollouts.get(&(service.clone(), desired.generation)) else { continue };
        let mut regions: std::collections::BTreeMap<String, cascade_core::state::RolloutCounts> = Default::default();
        for ((region, _cluster), rollout) in clusters {
            let sum = regions.entry(region.to_string()).or_default();
            let c = rollout.counts;
            sum.total += c.total;
            sum.fetching += c.fetching;
            sum.verified += c.verified;
            sum.active += c.active;
            sum.failed += c.failed;
        }
        figures.extend(regions.into_iter().map(|(region, counts)| RolloutFigures {
            service: service.to_string(),
            generation: desired.generation,
            region,
            counts,
        }));
    }
    figures
}

/// `host:port` with a DNS name or IP address and a non-zero port; IPv6 in brackets.
fn valid_host_port(addr: &str) -> bool {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = addr.rsplit_once(':') else { return false };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty() && label.len() <= 63 && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    port_ok && host_ok
}

#[cfg(test)]
mod tests {
    use super::valid_host_port;

    #[test]
    fn member_addresses_are_host_port() {
        for good in ["127.0.0.1:7001", "[::1]:7001", "node-1.internal:7001", "localhost:1"] {
            assert!(valid_host_port(good), "{good}");
        }
        for bad in ["http://x:1/", "x:0", "x", ":80", "a b:1", "x:99999", "evil.com:80/path"] {
            assert!(!valid_host_port(bad), "{bad}");
        }
    }
}
