//! Backup and restore with the real binary: a 3-voter cluster takes builds, `cascade cluster backup` saves
//! its state through a follower, the cluster is killed, and `cascade node restore` seeds a brand-new node
//! (new id, port and data dir) that starts as a one-voter cluster with the old builds and takes new writes,
//! then three new nodes that form a 3-voter cluster from the same file.
//! A backup with one flipped byte is refused and writes nothing.

mod common;

use cascade_core::api::SubmitBuildRequest;
use cascade_core::{Artifact, Digest, JobId, RepoUrl, ServiceName, WorkerId};
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn cascade(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cascade")).args(args).output().expect("run cascade");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn restore(config: &Path, from: &Path) -> (bool, String, String) {
    cascade(&[
        "--output",
        "json",
        "node",
        "restore",
        "--config",
        &config.to_string_lossy(),
        "--from",
        &from.to_string_lossy(),
    ])
}

fn request(n: u64) -> SubmitBuildRequest {
    SubmitBuildRequest {
        repo: RepoUrl::parse("https://example.com/app.git".to_string()).expect("repo"),
        commit: sha(n),
        service: ServiceName::parse("app".to_string()).expect("service"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_new_node_and_a_corrupt_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source_dir = dir.path().join("source");
    std::fs::create_dir_all(&source_dir).expect("source dir");
    let specs: Vec<NodeSpec> =
        (1..=3).map(|id| NodeSpec { id, port: free_port(), region: "home".into(), voter: true }).collect();
    let mut nodes = start_nodes(&source_dir, &specs, 300);
    for spec in &specs {
        wait_healthy(&spec.url(), Duration::from_secs(30)).await;
    }
    nodes[0].client(ADMIN).cluster_init().await.expect("cluster init");
    let urls: Vec<String> = specs.iter().map(NodeSpec::url).collect();
    let leader = wait_leader(&urls, Duration::from_secs(15)).await;

    // State: three builds, one succeeded with an artifact, one cancelled, one queued.
    let builder = nodes[0].client(BUILDER);
    for n in 1..=3 {
        let job = builder.submit_build(&request(n)).await.expect("submit");
        assert_eq!(job.id, JobId(n - 1));
    }
    let worker = nodes[0].client(WORKER);
    let claimed = worker
        .claim(&WorkerId::parse("w1".to_string()).expect("worker id"), Duration::from_secs(1))
        .await
        .expect("claim")
        .expect("a queued job");
    let artifact = Artifact {
        digest: Digest::parse(format!("{:064x}", 7)).expect("digest"),
        size: 1234,
        manifest_key: "manifests/x.json".into(),
        deploy: Default::default(),
    };
    worker.succeed(claimed.lease, artifact).await.expect("succeed");
    builder.cancel_build(JobId(1)).await.expect("cancel");

    // Only an admin may take a backup.
    let mut sink = Vec::new();
    let refused = nodes[0].client(VIEWER).backup(&mut sink).await.expect_err("a viewer cannot back up");
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(403), "{refused}");

    // Back up through a follower: it waits for the leader's read index, so it holds all three builds.
    let follower = specs.iter().find(|s| s.id != leader).expect("a follower");
    let file = dir.path().join("cascade.backup");
    let file_arg = file.to_string_lossy().into_owned();
    let (ok, out, err) =
        cascade(&["--server", &follower.url(), "--token", ADMIN, "cluster", "backup", "--out", &file_arg]);
    assert!(ok, "backup failed: {err}");
    assert!(out.contains("applied index") && out.contains("3 builds"), "{out}");
    assert!(!dir.path().join(".cascade.backup.partial").exists(), "the temp file is renamed away");
    for node in &mut nodes {
        node.kill();
    }
    drop(nodes);
    std::fs::remove_dir_all(&source_dir).expect("remove the old cluster's data");

    // The new node: another id, port and data dir, no peers.
    let spec = NodeSpec { id: 7, port: free_port(), region: "home".into(), voter: true };
    let config = write_config(dir.path(), &spec, std::slice::from_ref(&spec), 300);
    let data_dir = dir.path().join("node7");

    // A flipped byte is refused before anything is written.
    let bytes = std::fs::read(&file).expect("read backup");
    let mut corrupt = bytes.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x01;
    let corrupt_file = dir.path().join("corrupt.backup");
    std::fs::write(&corrupt_file, &corrupt).expect("write corrupt copy");
    let (ok, _, err) = restore(&config, &corrupt_file);
    assert!(!ok && err.contains("checksum mismatch"), "a corrupt backup must be refused: {err}");
    assert!(!data_dir.exists(), "a refused restore writes nothing");

    let (ok, out, err) = restore(&config, &file);
    assert!(ok, "restore failed: {err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("restore report is JSON");
    assert_eq!(report["voters"], serde_json::json!([7]), "{out}");
    assert_eq!(report["backup"]["builds"], 3, "{out}");
    let (ok, _, err) = restore(&config, &file);
    assert!(!ok && err.contains("not empty"), "a second restore into the same dir must be refused: {err}");

    let mut node = NodeProcess { spec: spec.clone(), config, child: None, log: dir.path().join("node7.log") };
    node.start();
    wait_healthy(&spec.url(), Duration::from_secs(30)).await;
    assert_eq!(wait_leader(&[spec.url()], Duration::from_secs(30)).await, 7, "the restored node elects itself");

    let admin = node.client(ADMIN);
    let builds = admin.list_builds(None, 10, None, None).await.expect("list builds");
    assert_eq!(builds.total, 3);
    let status = |id| builds.builds.iter().find(|j| j.id == JobId(id)).map(|j| j.status.name().to_string());
    assert_eq!(status(0).as_deref(), Some("succeeded"));
    assert_eq!(status(1).as_deref(), Some("cancelled"));
    assert_eq!(status(2).as_deref(), Some("queued"));
    let cluster = admin.cluster_status().await.expect("cluster status");
    assert_eq!(cluster.members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![7]);
    assert_eq!(cluster.members[0].addr, spec.addr());

    // New writes continue the old numbering.
    let job = node.client(BUILDER).submit_build(&request(4)).await.expect("submit after restore");
    assert_eq!(job.id, JobId(3));
    // `cluster init` is not needed, and refused: the node already has state.
    let (ok, _, err) = cascade(&["--server", &spec.url(), "--token", ADMIN, "cluster", "init"]);
    assert!(!ok, "init on a restored node must be refused: {err}");

    node.kill();
    drop(node);

    // The same backup makes a new 3-voter cluster: each restored node names the others as peers.
    let new_dir = dir.path().join("three");
    std::fs::create_dir_all(&new_dir).expect("dir");
    let specs: Vec<NodeSpec> =
        (11..=13).map(|id| NodeSpec { id, port: free_port(), region: "home".into(), voter: true }).collect();
    let mut nodes = Vec::new();
    for spec in &specs {
        let config = write_config(&new_dir, spec, &specs, 300);
        let (ok, _, err) = restore(&config, &file);
        assert!(ok, "restore of node {} failed: {err}", spec.id);
        let log = new_dir.join(format!("node{}.log", spec.id));
        let mut node = NodeProcess { spec: spec.clone(), config, child: None, log };
        node.start();
        nodes.push(node);
    }
    let urls: Vec<String> = specs.iter().map(NodeSpec::url).collect();
    let leader = wait_leader(&urls, Duration::from_secs(30)).await;
    assert!((11..=13).contains(&leader), "leader {leader}");
    let job = nodes[0].client(BUILDER).submit_build(&request(5)).await.expect("submit to the restored cluster");
    assert_eq!(job.id, JobId(3));
    for node in &nodes {
        let builds = node.client(VIEWER).list_builds(None, 10, None, None).await.expect("list");
        assert!(builds.total >= 3, "node {} lost the restored builds", node.spec.id);
    }
    let members = nodes[2].client(VIEWER).cluster_status().await.expect("status").members;
    assert_eq!(members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![11, 12, 13]);
    drop(nodes);
    dir.close().expect("remove temp dir");
}
