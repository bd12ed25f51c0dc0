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

    let artifact = Artifact {
        digest: Digest::parse("ab".repeat(32)).unwrap(),
        size: 1,
        manifest_key: "m".into(),
        deploy: Default::default(),
    };
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

    let (status, body) = ten_megabyte_post(node.spec.port).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_long_poll_wakes_on_a_deploy_not_on_other_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = single_node(dir.path(), 300).await;
    let builder = node.client(BUILDER);
    let worker = node.client(WORKER);
    let job = builder.submit_build(&submit_request(11)).await.expect("submit");
    let claimed = worker.claim(&WorkerId::parse("w").unwrap(), Duration::from_secs(5)).await.unwrap().expect("job");
    let artifact = Artifact {
        digest: Digest::parse("cd".repeat(32)).unwrap(),
        size: 9,
        manifest_key: "m".into(),
        deploy: Default::default(),
    };
    worker.succeed(claimed.lease, artifact.clone()).await.expect("succeed");

    let viewer = std::sync::Arc::new(node.client(VIEWER));
    let first = viewer.desired(None, Duration::ZERO).await.expect("desired");
    assert_eq!(first.changed_at_index, 0);
    assert!(first.services.is_empty());
    let poll = {
        let viewer = viewer.clone();
        tokio::spawn(async move { viewer.desired(Some(0), Duration::from_secs(25)).await })
    };
    // Other writes are applied meanwhile; the poll must not answer for them.
    for n in 0..5 {
        builder.submit_build(&submit_request(100 + n)).await.expect("submit");
    }
    assert!(!poll.is_finished(), "the long poll answered without a deploy");

    let deployed = node.client(DEPLOYER).deploy(&ServiceName::parse("api").unwrap(), job.id).await.expect("deploy");
    assert_eq!(deployed.generation, 1);
    let woke = tokio::time::timeout(Duration::from_secs(20), poll).await.expect("poll answered").unwrap().unwrap();
    // Had any of the submissions woken it, it would have answered before the deploy, with no service.
    assert_eq!(woke.services[&ServiceName::parse("api").unwrap()].generation, 1);
    assert!(woke.changed_at_index > 0);
    // The rollout controller then steps the rollout (its wave opens, it completes: no manager reports, so
    // nothing to wait for); after that nothing changes: a poll from the latest change times out and
    // answers the same versions.
    let mut latest = woke;
    for _ in 0..5 {
        let again = viewer.desired(Some(latest.changed_at_index), Duration::from_secs(2)).await.expect("desired");
        assert_eq!(again.services[&ServiceName::parse("api").unwrap()].generation, 1, "only steps of generation 1");
        if again.changed_at_index == latest.changed_at_index {
            assert_eq!(again.services, latest.services, "an unchanged index answers the same versions");
            let api = &again.services[&ServiceName::parse("api").unwrap()];
            assert!(api.progress.end.is_some(), "the poll settles once the rollout ended: {:?}", api.progress);
            return;
        }
        latest = again;
    }
    panic!("the desired versions kept changing: {:?}", latest.services);
}

/// POSTs a body declared as 10 MiB over a raw connection and returns the answer's status and JSON body.
///
/// The server answers 413 as soon as it has read past its limit and then closes; bytes still unread in its
/// socket would turn that close into a reset that can destroy the answer before the client reads it. So the
/// client sends the headers, gives the server a moment to answer on the declared length alone, and otherwise
/// sends just one byte more than the limit, all of which the server reads before it answers.
async fn ten_megabyte_post(port: u16) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let head = format!(
        "POST /api/v1/builds HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {BUILDER}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        10 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.expect("send headers");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
    match early {
        Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
        _ => {
            let body = vec![b'x'; cascade_core::api::MAX_BODY_BYTES + 1];
            stream.write_all(&body).await.expect("send the body up to the limit");
        }
    }
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(rest.is_ok(), "no complete answer within 10 s");
    let text = String::from_utf8_lossy(&answer);
    let status: u16 = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("an HTTP status line");
    let json = text.split("\r\n\r\n").nth(1).map(|b| b.trim()).unwrap_or_default();
    // The answer may be chunked: take the JSON object inside.
    let json = json.find('{').and_then(|a| json.rfind('}').map(|b| &json[a..=b])).unwrap_or("null");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uninitialized_node_says_how_to_initialize_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NodeSpec { id: 1, port: free_port(), region: "us".into(), voter: true };
    let nodes = start_nodes(dir.path(), &[spec], 300);
    wait_healthy(&nodes[0].spec.url(), Duration::from_secs(30)).await;
    let good = json!({"repo": "https://git.example.com/a/b.git", "commit": "b".repeat(40), "service": "api"});
    let url = format!("{}/api/v1/builds", nodes[0].spec.url());
    let (status, body) = raw(reqwest::Method::POST, &url, Some(BUILDER), Some(good.to_string())).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("cascade cluster init"), "{body}");
}
