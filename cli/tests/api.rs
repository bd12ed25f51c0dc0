//! `/api/v1` against a real one-node cluster: stale leases, bad input, tokens and roles.

mod common;

use cascade_core::api::SubmitBuildRequest;
use cascade_core::{Artifact, Digest, JobStatus, Lease, RepoUrl, ServiceName, WorkerId};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn submit_request(n: u64) -> SubmitBuildRequest {
    SubmitBuildRequest {
        repo: RepoUrl::parse("https://git.example.com/a/b.git").expect("repo"),
        commit: sha(n),
        service: ServiceName::parse("api").expect("service"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_workers_lease_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = single_node(dir.path(), 1).await;
    let builder = node.client(BUILDER);
    let worker = node.client(WORKER);
    let job = builder.submit_build(&submit_request(1)).await.expect("submit");

    let first =
        worker.claim(&WorkerId::parse("w-old").unwrap(), Duration::from_secs(5)).await.expect("claim").expect("a job");
    assert_eq!(first.lease, Lease { job: job.id, attempt: 1 });
    // w-old goes silent; the monitor requeues the job after 1 s.
    let started = Instant::now();
    loop {
        let current = builder.get_build(job.id).await.expect("get");
        if matches!(current.status, JobStatus::Queued) {
            assert_eq!(current.attempt, 1);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "job was never requeued: {current:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second =
        worker.claim(&WorkerId::parse("w-new").unwrap(), Duration::from_secs(5)).await.expect("claim").expect("a job");
    assert_eq!(second.lease, Lease { job: job.id, attempt: 2 });

    let artifact = Artifact { digest: Digest::parse("ab".repeat(32)).unwrap(), size: 1, manifest_key: "m".into() };
    let stale_hb = worker.heartbeat(first.lease).await.expect_err("stale heartbeat must fail");
    assert_eq!(stale_hb.status(), Some(reqwest::StatusCode::CONFLICT), "{stale_hb}");
    assert!(stale_hb.to_string().contains("stale"), "{stale_hb}");
    let stale_ok = worker.succeed(first.lease, artifact.clone()).await.expect_err("stale succeed must fail");
    assert_eq!(stale_ok.status(), Some(reqwest::StatusCode::CONFLICT));
    let stale_fail = worker.fail(first.lease, "x", false).await.expect_err("stale fail must fail");
    assert_eq!(stale_fail.status(), Some(reqwest::StatusCode::CONFLICT));

    // The replacement's lease still works, and its result is the one recorded.
    assert!(!worker.heartbeat(second.lease).await.expect("heartbeat").cancelled);
    let done = worker.succeed(second.lease, artifact.clone()).await.expect("succeed");
    assert_eq!(done.status, JobStatus::Succeeded { artifact });
    let late = worker.heartbeat(second.lease).await.expect_err("finished job refuses heartbeats");
    assert_eq!(late.status(), Some(reqwest::StatusCode::CONFLICT));
}

async fn raw(method: reqwest::Method, url: &str, token: Option<&str>, body: Option<String>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let value = response.json().await.unwrap_or(Value::Null);
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = single_node(dir.path(), 300).await;
    let builds = format!("{}/api/v1/builds", node.spec.url());
    let good = json!({"repo": "https://git.example.com/a/b.git", "commit": "a".repeat(40), "service": "api"});
    let post = reqwest::Method::POST;

    let (status, body) = raw(
        post.clone(),
        &builds,
        Some(BUILDER),
        Some(json!({"repo": "https://x/y", "commit": "abc123", "service": "api"}).to_string()),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("commit"), "{body}");
    assert_eq!(body["error"], "invalid_request");

    let mut unknown = good.clone();
    unknown["branch"] = json!("main");
    let (status, body) = raw(post.clone(), &builds, Some(BUILDER), Some(unknown.to_string())).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("unknown field `branch`"), "{body}");

    let (status, body) = raw(post.clone(), &builds, Some(BUILDER), Some("{not json".into())).await;
    assert_eq!(status, 400, "{body}");

    // The server answers 413 without reading the rest of a 10 MB body and closes the connection, so the
    // client can see a reset instead of the answer while it is still sending; a few tries get the answer.
    let huge = format!("{{\"repo\": \"{}\"}}", "x".repeat(10 * 1024 * 1024));
    let mut answered = None;
    for _attempt in 0..5 {
        let sent = reqwest::Client::new()
            .post(&builds)
            .bearer_auth(BUILDER)
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .await;
        if let Ok(response) = sent {
            answered = Some((response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null)));
            break;
        }
    }
    let (status, body) = answered.expect("no answer to a 10 MB body in 5 tries");
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "payload_too_large");

    let (status, body) = raw(reqwest::Method::GET, &format!("{builds}/987654"), Some(VIEWER), None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("987654"));

    let (status, body) = raw(post.clone(), &builds, None, Some(good.to_string())).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = raw(post.clone(), &builds, Some("not-a-real-token-at-all"), Some(good.to_string())).await;
    assert_eq!(status, 401);

    for token in [VIEWER, WORKER] {
        let (status, body) = raw(post.clone(), &builds, Some(token), Some(good.to_string())).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("Builder"), "{body}");
    }
    let (status, _) = raw(
        post.clone(),
        &format!("{}/api/v1/jobs/claim", node.spec.url()),
        Some(BUILDER),
        Some(json!({"worker": "w"}).to_string()),
    )
    .await;
    assert_eq!(status, 403, "a builder may not claim jobs");
    let (status, _) =
        raw(post.clone(), &format!("{}/api/v1/cluster/init", node.spec.url()), Some(DEPLOYER), Some("{}".into())).await;
    assert_eq!(status, 403, "a deployer may not change membership");

    let (status, body) = raw(
        post.clone(),
        &format!("{}/api/v1/deployments", node.spec.url()),
        Some(DEPLOYER),
        Some(json!({"service": "api", "build": 0}).to_string()),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // Nothing above reached the state.
    let (status, body) = raw(reqwest::Method::GET, &builds, Some(VIEWER), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 0, "{body}");

    // And a good request still works, and deploying a build that has not succeeded is refused.
    let (status, body) = raw(post.clone(), &builds, Some(BUILDER), Some(good.to_string())).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_u64().unwrap();
    let (status, body) = raw(
        post,
        &format!("{}/api/v1/deployments", node.spec.url()),
        Some(DEPLOYER),
        Some(json!({"service": "api", "build": id}).to_string()),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("only a succeeded build"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = single_node(dir.path(), 300).await;
    node.client(BUILDER).submit_build(&submit_request(7)).await.expect("submit");
    let text = reqwest::get(format!("{}/metrics", node.spec.url())).await.unwrap().text().await.unwrap();
    for metric in [
        "cascade_raft_term",
        "cascade_raft_applied_index",
        "cascade_queue_depth 1",
        "cascade_writes_total{command=\"submit_build\",outcome=\"accepted\"} 1",
    ] {
        assert!(text.contains(metric), "missing {metric} in:\n{text}");
    }
    let health = health(&node.spec.url()).await.expect("health");
    assert_eq!(health["status"], "ok");
}
