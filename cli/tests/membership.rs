//! Growing a cluster with the CLI: `cluster init`, `add-voter`, `add-learner`, `status`, and the build
//! subcommands, run as the real `cascade` binary against real nodes.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

fn cascade(server: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["--server", server, "--token", token, "--output", "json"])
        .args(args)
        .output()
        .expect("run cascade");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_grows_a_cluster_and_submits_builds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let specs = [
        NodeSpec { id: 1, port: free_port(), region: "home".into(), voter: true },
        NodeSpec { id: 2, port: free_port(), region: "home".into(), voter: true },
        NodeSpec { id: 3, port: free_port(), region: "eu".into(), voter: false },
    ];
    // Each node knows no peers: the cluster starts as node 1 alone and grows through the CLI.
    let mut nodes = Vec::new();
    for spec in &specs {
        let config = write_config(dir.path(), spec, &[], 300);
        let mut node =
            NodeProcess { spec: spec.clone(), config, child: None, log: dir.path().join(format!("n{}.log", spec.id)) };
        node.start();
        wait_healthy(&spec.url(), Duration::from_secs(30)).await;
        nodes.push(node);
    }
    let first = specs[0].url();
    let (ok, _, err) = cascade(&first, ADMIN, &["cluster", "init"]);
    assert!(ok, "init failed: {err}");
    wait_leader(std::slice::from_ref(&first), Duration::from_secs(15)).await;

    let (ok, _, err) =
        cascade(&first, ADMIN, &["cluster", "add-voter", "--id", "2", "--addr", &specs[1].addr(), "--region", "home"]);
    assert!(ok, "add-voter failed: {err}");
    // Membership changes are accepted by any node: ask the learner-to-be's future peer, node 2.
    let (ok, _, err) = cascade(
        &specs[1].url(),
        ADMIN,
        &["cluster", "add-learner", "--id", "3", "--addr", &specs[2].addr(), "--region", "eu"],
    );
    assert!(ok, "add-learner through a follower failed: {err}");
    let (ok, _, err) =
        cascade(&first, VIEWER, &["cluster", "add-learner", "--id", "9", "--addr", "127.0.0.1:1", "--region", "eu"]);
    assert!(!ok && err.contains("403"), "a viewer must not change membership: {err}");

    let (ok, out, err) = cascade(&specs[2].url(), VIEWER, &["cluster", "status"]);
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&out).expect("status json");
    let roles: Vec<(u64, String, String)> = status["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["role"].as_str().unwrap().to_string(),
                m["region"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        vec![
            (1, "voter".into(), "home".into()),
            (2, "voter".into(), "home".into()),
            (3, "learner".into(), "eu".into())
        ]
    );

    // A build submitted through the learner is forwarded to the leader and readable everywhere.
    let commit = "c0ffee".repeat(6) + "c0ff";
    let (ok, out, err) = cascade(
        &specs[2].url(),
        BUILDER,
        &["build", "submit", "--repo", "https://git.example.com/x/y.git", "--commit", &commit, "--service", "web"],
    );
    assert!(ok, "{err}");
    let job: Value = serde_json::from_str(&out).expect("job json");
    let id = job["id"].as_u64().expect("id").to_string();
    // Read-your-writes on the learner at once: a linearizable read asks the leader for its read index and
    // waits for the learner to apply it; `min_index` waits for an index the client already saw.
    let http = reqwest::Client::new();
    let get = |url: String| http.get(url).bearer_auth(VIEWER).send();
    let linearizable = get(format!("{}/api/v1/builds/{id}?consistency=linearizable", specs[2].url())).await.unwrap();
    assert_eq!(linearizable.status(), 200, "a linearizable read on the learner must see the acknowledged build");
    let on_leader = get(format!("{first}/api/v1/builds/{id}?consistency=linearizable")).await.unwrap();
    assert_eq!(on_leader.status(), 200);
    let seen: u64 = on_leader.headers()["x-cascade-applied-index"].to_str().unwrap().parse().unwrap();
    let at_least = get(format!("{}/api/v1/builds/{id}?min_index={seen}", specs[2].url())).await.unwrap();
    assert_eq!(at_least.status(), 200);
    let answered: u64 = at_least.headers()["x-cascade-applied-index"].to_str().unwrap().parse().unwrap();
    assert!(answered >= seen, "answered at index {answered}, below the requested {seen}");
    let bogus = get(format!("{first}/api/v1/builds/{id}?consistency=eventual")).await.unwrap();
    assert_eq!(bogus.status(), 400);

    let (ok, _, err) =
        cascade(&first, BUILDER, &["build", "submit", "--repo", "x", "--commit", &commit, "--service", "web"]);
    assert!(!ok && err.contains("repo"), "a bad repo must be refused before sending: {err}");

    let started = Instant::now();
    loop {
        let (ok, out, _) = cascade(&specs[2].url(), VIEWER, &["build", "show", &id]);
        if ok && serde_json::from_str::<Value>(&out).map(|j| j["status"]["state"] == "queued").unwrap_or(false) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the learner never showed build {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out, err) = cascade(&first, BUILDER, &["build", "cancel", &id]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["status"]["state"], "cancelled");
    let (ok, _, err) = cascade(&first, BUILDER, &["build", "cancel", &id]);
    assert!(!ok && err.contains("409"), "cancelling twice must be refused: {err}");
    let (ok, out, err) = cascade(&first, VIEWER, &["status"]);
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((&status["builds_total"], &status["queued"], &status["running"]), (&1.into(), &0.into(), &0.into()));

    // Shrinking: a viewer may not; the learner leaves (asked through a follower, forwarded to the leader); a
    // voter leaves; the last voter is refused; the remaining cluster still takes writes.
    let (ok, _, err) = cascade(&first, VIEWER, &["cluster", "remove", "--id", "3"]);
    assert!(!ok && err.contains("403"), "a viewer must not remove members: {err}");
    let (ok, _, err) = cascade(&specs[1].url(), ADMIN, &["cluster", "remove", "--id", "3"]);
    assert!(ok, "remove learner: {err}");
    let (ok, _, err) = cascade(&first, ADMIN, &["cluster", "remove", "--id", "3"]);
    assert!(!ok && err.contains("not a member"), "removing twice: {err}");
    let (ok, _, err) = cascade(&first, ADMIN, &["cluster", "remove", "--id", "2"]);
    assert!(ok, "remove voter: {err}");
    let (ok, _, err) = cascade(&first, ADMIN, &["cluster", "remove", "--id", "1"]);
    assert!(!ok && err.contains("only voter"), "the last voter must stay: {err}");
    let (ok, out, err) = cascade(&first, VIEWER, &["cluster", "status"]);
    assert!(ok, "{err}");
    let members: Vec<u64> = serde_json::from_str::<Value>(&out).unwrap()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(members, vec![1]);
    let (ok, _, err) = cascade(
        &first,
        BUILDER,
        &["build", "submit", "--repo", "https://git.example.com/x/y.git", "--commit", &commit, "--service", "web"],
    );
    assert!(ok, "the one-voter cluster still commits: {err}");
}
