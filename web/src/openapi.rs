//! The OpenAPI 3.1 document of `/api/v1`, built by hand with `serde_json` (the handlers live in `raft-node`
//! and are not annotated). A test in `raft-node` checks that every route of the API router appears here,
//! so the document cannot silently fall behind the API.

use serde_json::{json, Map, Value};

/// One operation: method, path, the role it needs, a summary, and the request body schema (if any).
struct Op {
    method: &'static str,
    path: &'static str,
    role: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
}

const fn op(
    method: &'static str,
    path: &'static str,
    role: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
) -> Op {
    Op { method, path, role, summary, body }
}

const OPS: &[Op] = &[
    op(
        "post",
        "/api/v1/builds",
        "builder",
        "Queue a build of one commit (optional Idempotency-Key header).",
        Some("SubmitBuildRequest"),
    ),
    op("get", "/api/v1/builds", "viewer", "Builds, newest first, paged (before, limit, service, status).", None),
    op("get", "/api/v1/builds/{id}", "viewer", "One build with its artifact's replication per region.", None),
    op(
        "get",
        "/api/v1/builds/{id}/log",
        "viewer",
        "The latest attempt's log (complete, or the live tail while running).",
        None,
    ),
    op("post", "/api/v1/builds/{id}/cancel", "builder", "Cancel a queued build or ask a running one to stop.", None),
    op(
        "post",
        "/api/v1/jobs/claim",
        "worker",
        "Claim the oldest queued job (long-polled with ?wait=S).",
        Some("ClaimRequest"),
    ),
    op("post", "/api/v1/jobs/{id}/heartbeat", "worker", "The worker still holds the lease.", Some("HeartbeatRequest")),
    op(
        "post",
        "/api/v1/jobs/{id}/succeed",
        "worker",
        "The build succeeded and its artifact is uploaded.",
        Some("SucceedRequest"),
    ),
    op("post", "/api/v1/jobs/{id}/fail", "worker", "The build failed (retryable or final).", Some("FailRequest")),
    op(
        "post",
        "/api/v1/deployments",
        "deployer",
        "Make a succeeded build its service's desired version.",
        Some("DeployRequest"),
    ),
    op(
        "get",
        "/api/v1/deployments/{service}",
        "viewer",
        "Desired version, history and rollout counts of a service.",
        None,
    ),
    op(
        "post",
        "/api/v1/deployments/{service}/rollback",
        "deployer",
        "Deploy the previous good build again, as a new generation.",
        None,
    ),
    op(
        "post",
        "/api/v1/deployments/{service}/{action}",
        "deployer",
        "Pause, resume or abort (action) the current generation's rollout.",
        Some("RolloutControlRequest"),
    ),
    op(
        "post",
        "/api/v1/rollouts/report",
        "worker",
        "A region manager's host counts for one cluster of a rollout.",
        Some("RolloutReport"),
    ),
    op(
        "post",
        "/api/v1/managers/lease",
        "worker",
        "Grant or renew a region manager's lease of its cluster; 409 names the holder while another holds it.",
        Some("ManagerLeaseRequest"),
    ),
    op("get", "/api/v1/artifacts/{digest}", "viewer", "An artifact's record with its replication per region.", None),
    op("get", "/api/v1/desired", "viewer", "Every desired version; long-polled with ?after=I&wait=S.", None),
    op("get", "/api/v1/audit", "viewer", "The audit log, newest first, paged.", None),
    op("get", "/api/v1/cluster", "viewer", "Members, leader, applied index, lag and workers.", None),
    op(
        "post",
        "/api/v1/cluster/init",
        "admin",
        "Initialize the cluster with this voter and its configured peers.",
        None,
    ),
    op("post", "/api/v1/cluster/members", "admin", "Add a learner or a voter.", Some("AddMemberRequest")),
    op("delete", "/api/v1/cluster/members/{id}", "admin", "Remove a voter or a learner (never the last voter).", None),
    op(
        "get",
        "/api/v1/admin/backup",
        "admin",
        "A consistent backup of the applied state (binary, BLAKE3-checked); `cascade node restore` reads it.",
        None,
    ),
    op("get", "/api/v1/openapi.json", "none", "This document.", None),
    op("get", "/healthz", "none", "200 while Raft runs, with the leader and applied index.", None),
    op("get", "/metrics", "none", "Prometheus metrics in text format.", None),
];

fn schemas() -> Value {
    let string = json!({"type": "string"});
    let sha = json!({"type": "string", "pattern": "^[0-9a-fA-F]{40}$"});
    let label = json!({"type": "string", "pattern": "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"});
    let uint = json!({"type": "integer", "minimum": 0});
    let object = |props: Value, required: &[&str]| json!({"type": "object", "additionalProperties": false, "properties": props, "required": required});
    json!({
        "SubmitBuildRequest": object(json!({"repo": string, "commit": sha, "service": label}), &["repo", "commit", "service"]),
        "ClaimRequest": object(json!({"worker": string}), &["worker"]),
        "HeartbeatRequest": object(json!({"attempt": uint}), &["attempt"]),
        "Artifact": object(json!({"digest": string, "size": uint, "manifest_key": string}), &["digest", "size", "manifest_key"]),
        "SucceedRequest": object(json!({"attempt": uint, "artifact": {"$ref": "#/components/schemas/Artifact"}}), &["attempt", "artifact"]),
        "FailRequest": object(json!({"attempt": uint, "reason": string, "retryable": {"type": "boolean"}}), &["attempt", "reason", "retryable"]),
        "DeployRequest": object(json!({"service": label, "build": uint}), &["service", "build"]),
        "RolloutControlRequest": object(json!({"generation": uint}), &["generation"]),
        "RolloutCounts": object(json!({"total": uint, "fetching": uint, "verified": uint, "active": uint, "failed": uint}), &["total", "fetching", "verified", "active", "failed"]),
        "RolloutReport": object(json!({"service": label, "generation": uint, "region": label, "cluster": label, "counts": {"$ref": "#/components/schemas/RolloutCounts"}, "holder": string}), &["service", "generation", "region", "cluster", "counts"]),
        "ManagerLeaseRequest": object(json!({"region": label, "cluster": label, "holder": string, "ttl_ms": uint}), &["region", "cluster", "holder", "ttl_ms"]),
        "AddMemberRequest": object(json!({"id": uint, "addr": string, "region": label, "voter": {"type": "boolean"}}), &["id", "addr", "region", "voter"]),
        "ErrorBody": {"type": "object", "properties": {"error": string, "detail": string}, "required": ["error", "detail"]},
    })
}

fn operation(op: &Op) -> Value {
    let mut value = json!({
        "summary": op.summary,
        "description": format!("Needs a bearer token with role `{}` (roles nest: viewer < builder < deployer < admin; worker is separate).", op.role),
        "responses": {
            "200": {"description": "OK (JSON; reads carry the x-cascade-applied-index header)"},
            "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}},
        },
    });
    if op.role == "none" {
        value["security"] = json!([]);
        value["description"] = json!("No token needed.");
    }
    let params: Vec<Value> = op
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if !params.is_empty() {
        value["parameters"] = Value::Array(params);
    }
    if let Some(body) = op.body {
        value["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}});
    }
    value
}

/// The document served at `/api/v1/openapi.json`.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPS {
        let entry = paths.entry(op.path).or_insert_with(|| json!({}));
        entry[op.method] = operation(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Cascade API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Build and deploy. Errors are {\"error\": kind, \"detail\": sentence}."},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    })
}

/// Whether the document describes `method` on `path` (as written in the router, e.g. `/api/v1/builds/{id}`).
pub fn documents(method: &str, path: &str) -> bool {
    document()["paths"].get(path).and_then(|p| p.get(method.to_ascii_lowercase())).is_some()
}
