//! Deploying services, not files, end to end with real processes on loopback: a voter, a learner per
//! region (us, eu), a worker, a manager and 4 hosts per region that declare different `services` and
//! `labels`. Service `svc-a` is a C HTTP server built by the worker from a test repository (it only runs
//! with its mode set); `svc-b` is the same program on other hosts, selected by a placement.
//!
//! Shown: only the targeted hosts hold and run each release (its health endpoint answers on each, no file
//! of it anywhere else); a build whose `activate` exits non-zero and one whose health endpoint answers 500
//! each end with every targeted host back on the previous release and the previous process answering, and
//! the API and `cascade status --service` listing the failed hosts with those reasons; a placement that
//! matches no host is reported as such.

mod common;

use cascade_client::Client;
use cascade_core::api::{AddMemberRequest, DeploymentStatus, SubmitBuildRequest};
use cascade_core::state::ReplicationStatus;
use cascade_core::{CommitSha, Digest, JobId, JobStatus, Region, RepoUrl, ServiceName};
use common::agents::AgentProcess;
use common::builds::{local_stores, TestRepo, WorkerProcess};
use common::service::{http, service_logs, Reaper, ACTIVATE, SERVER_C};
use common::{free_port, start_nodes_with, wait_healthy, wait_leader, NodeSpec, ADMIN, BUILDER, DEPLOYER, WORKER};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const REGIONS: [&str; 2] = ["us", "eu"];

fn recipe(version: &str, health: u16, activate: &str, placement: &str) -> String {
    // Every targeted host is tried: this test is about each host's outcome, not a rollout's gate.
    common::service::recipe(version, health, activate, &format!("failure_budget = \"100%\"\n{placement}"))
}

struct Host {
    agent: AgentProcess,
    port: u16,
    runs_a: bool,
    runs_b: bool,
}

/// Every path under `dir` whose name contains `digest` (releases, downloads, staged links).
fn files_naming(dir: &Path, digest: &Digest) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(digest.as_str())) {
                found.push(p.clone());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    found
}

async fn build(client: &Client, repo: &TestRepo, commit: &CommitSha, service: &str) -> JobId {
    let request = SubmitBuildRequest {
        repo: RepoUrl::parse(repo.url()).unwrap(),
        commit: commit.clone(),
        service: ServiceName::parse(service).unwrap(),
    };
    client.submit_build(&request).await.expect("submit").id
}

async fn wait_built(client: &Client, id: JobId) -> Digest {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < deadline, "build {id} not done in time");
        let detail = client.get_build_detail(id).await.expect("build");
        match &detail.job.status {
            JobStatus::Failed { reason } => panic!("build {id} failed: {reason}"),
            JobStatus::Succeeded { artifact } => {
                let replicated = detail.artifact_record.as_ref().is_some_and(|r| {
                    REGIONS.iter().all(|region| {
                        r.replication.get(&Region::parse(*region).unwrap()) == Some(&ReplicationStatus::Replicated)
                    })
                });
                if replicated {
                    return artifact.digest.clone();
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until every region reports generation `generation` of `service` with `healthy` and `failed` hosts
/// out of `total`; returns the deployment status.
async fn wait_counts(
    dir: &Path,
    client: &Client,
    service: &str,
    generation: u64,
    (total, healthy, failed): (u64, u64, u64),
) -> DeploymentStatus {
    let service = ServiceName::parse(service).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = client.deployment(&service).await.expect("deployment");
        let done =
            status.desired.as_ref().is_some_and(|d| d.generation == generation)
                && REGIONS.iter().all(|region| {
                    status.rollout.get(&Region::parse(*region).unwrap()).and_then(|c| c.values().next()).is_some_and(
                        |c| c.counts.total == total && c.counts.active == healthy && c.counts.failed == failed,
                    )
                });
        if done {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{service} generation {generation}: {:?}\n{}",
            status.rollout,
            service_logs(dir)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn cascade_status(server: &str, service: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["--server", server, "--token", ADMIN, "status", "--service", service])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every host that runs `svc-a` is on `digest` and its server answers `hello VERSION`.
fn assert_a_runs(dir: &Path, hosts: &[Host], digest: &Digest, version: &str) {
    for host in hosts.iter().filter(|h| h.runs_a) {
        assert_eq!(host.agent.current_digest("svc-a").as_ref(), Some(digest), "{}", host.agent.name);
        let answer = http(host.port, "/");
        let expected = Some((200, format!("hello {version}")));
        assert_eq!(answer, expected, "{} on port {}\n{}", host.agent.name, host.port, service_logs(dir));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_reach_only_their_hosts_start_check_and_fall_back() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let specs = vec![
        NodeSpec { id: 1, port: free_port(), region: "home".into(), voter: true },
        NodeSpec { id: 2, port: free_port(), region: "us".into(), voter: false },
        NodeSpec { id: 3, port: free_port(), region: "eu".into(), voter: false },
    ];
    let stores = local_stores(dir.path(), &REGIONS);
    let _nodes = start_nodes_with(dir.path(), &specs, 300, &|config| {
        config.stores = Some(stores.clone());
        config.replication.poll_interval_ms = 200;
    });
    let urls: Vec<String> = specs.iter().map(|s| s.url()).collect();
    for url in &urls {
        wait_healthy(url, Duration::from_secs(30)).await;
    }
    Client::new(&urls[..1], ADMIN).unwrap().cluster_init().await.expect("init");
    wait_leader(&urls[..1], Duration::from_secs(20)).await;
    let admin = Client::new(&urls[..1], ADMIN).unwrap();
    for learner in &specs[1..] {
        let request = AddMemberRequest {
            id: learner.id,
            addr: learner.addr(),
            region: Region::parse(learner.region.clone()).unwrap(),
            voter: false,
        };
        admin.add_member(&request).await.expect("add learner");
    }
    let servers: Vec<String> = specs.iter().map(|s| s.addr()).collect();
    let _worker = WorkerProcess::start(dir.path(), "w1", &servers, &stores.main, 500);

    // Per region: h0, h1 run svc-a; h2 runs svc-b in pool batch; h3 runs svc-b but in pool web, which
    // svc-b's placement leaves out.
    let mut managers = Vec::new();
    let mut hosts: Vec<Host> = Vec::new();
    for (i, region) in REGIONS.iter().enumerate() {
        let mut order = vec![specs[1 + i].addr()];
        order.push(specs[0].addr());
        let manager = AgentProcess::manager(dir.path(), region, &order, WORKER, &stores.regions[*region]);
        for (h, (services, pool)) in
            [("[\"svc-a\"]", "web"), ("[\"svc-a\"]", "web"), ("[\"svc-b\"]", "batch"), ("[\"svc-b\"]", "web")]
                .into_iter()
                .enumerate()
        {
            let port = free_port();
            let declaration = format!(
                "services = {services}\n[labels]\npool = \"{pool}\"\nregion = \"{region}\"\n[env]\nPORT = \"{port}\"\n"
            );
            let agent = AgentProcess::host_running(dir.path(), &format!("{region}-h{h}"), manager.addr, &declaration);
            hosts.push(Host { agent, port, runs_a: h < 2, runs_b: h == 2 });
        }
        managers.push(manager);
    }

    let repo = TestRepo::new(dir.path());
    let with = |recipe: String| vec![("server.c", SERVER_C.to_string()), ("cascade.toml", recipe)];
    let commit = |message: &str, files: Vec<(&str, String)>| {
        let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        repo.commit(message, &files)
    };
    let batch = "placement = { pool = \"batch\" }";
    let a1 = commit("a v1", with(recipe("a1", 200, ACTIVATE, "")));
    let b1 = commit("b v1", with(recipe("b1", 200, ACTIVATE, batch)));
    let a_broken =
        commit("a v2 activate fails", with(recipe("a2", 200, "echo starting a2 is impossible >&2; exit 2", "")));
    let a_sick = commit("a v3 health 500", with(recipe("a3", 500, ACTIVATE, "")));
    let b_nowhere = commit("b v2 nowhere", with(recipe("b2", 200, ACTIVATE, "placement = { pool = \"gpu\" }")));

    let builder = Client::new(&urls[..1], BUILDER).unwrap();
    let deployer = Client::new(&urls[..1], DEPLOYER).unwrap();
    let (svc_a, svc_b) = (ServiceName::parse("svc-a").unwrap(), ServiceName::parse("svc-b").unwrap());
    let ids = [
        build(&builder, &repo, &a1, "svc-a").await,
        build(&builder, &repo, &b1, "svc-b").await,
        build(&builder, &repo, &a_broken, "svc-a").await,
        build(&builder, &repo, &a_sick, "svc-a").await,
        build(&builder, &repo, &b_nowhere, "svc-b").await,
    ];
    let mut digests = Vec::new();
    for id in ids {
        digests.push(wait_built(&builder, id).await);
    }
    let detail = builder.get_build_detail(ids[0]).await.unwrap();
    let JobStatus::Succeeded { artifact } = &detail.job.status else { panic!("a1 succeeded") };
    assert_eq!(artifact.deploy.install_as, "server", "the artifact's own file name");
    assert_eq!(artifact.deploy.mode, 0o755);

    // svc-a reaches its 2 hosts per region, runs there with its mode set, and nowhere else.
    deployer.deploy(&svc_a, ids[0]).await.expect("deploy a1");
    let status = wait_counts(dir.path(), &deployer, "svc-a", 1, (2, 2, 0)).await;
    let cluster = status.rollout.values().next().and_then(|c| c.values().next()).unwrap();
    assert_eq!(cluster.counts.cluster_hosts, 4, "{:?}", cluster.counts);
    assert_a_runs(dir.path(), &hosts, &digests[0], "a1");
    for host in &hosts {
        if host.runs_a {
            let file = host.agent.current_file("svc-a").expect("installed");
            assert_eq!(file.file_name().unwrap(), "server");
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o755, "{}", file.display());
            assert_eq!(http(host.port, "/healthz").map(|a| a.0), Some(200));
        } else {
            assert!(files_naming(&host.agent.data_dir, &digests[0]).is_empty(), "{} holds svc-a", host.agent.name);
            assert!(!host.agent.data_dir.join("services/svc-a").exists(), "{}", host.agent.name);
        }
    }

    // svc-b reaches only the host of each region that runs it and is in pool batch.
    deployer.deploy(&svc_b, ids[1]).await.expect("deploy b1");
    wait_counts(dir.path(), &deployer, "svc-b", 1, (1, 1, 0)).await;
    for host in &hosts {
        if host.runs_b {
            assert_eq!(host.agent.current_digest("svc-b").as_ref(), Some(&digests[1]), "{}", host.agent.name);
            assert_eq!(http(host.port, "/"), Some((200, "hello b1".to_string())), "{}", host.agent.name);
        } else {
            assert!(files_naming(&host.agent.data_dir, &digests[1]).is_empty(), "{} holds svc-b", host.agent.name);
        }
    }

    // A build whose activate exits 2: every targeted host goes back to a1, and a1 answers again.
    let g2 = deployer.deploy(&svc_a, ids[2]).await.expect("deploy a2").generation;
    let status = wait_counts(dir.path(), &deployer, "svc-a", g2, (2, 0, 2)).await;
    assert_a_runs(dir.path(), &hosts, &digests[0], "a1");
    for clusters in status.rollout.values() {
        let failures = &clusters.values().next().unwrap().failures;
        assert_eq!(failures.hosts.len(), 2, "{failures:?}");
        for f in &failures.hosts {
            assert!(f.reason.starts_with("activate exited 2"), "{}: {}", f.host, f.reason);
            assert!(f.reason.contains("starting a2 is impossible"), "the output's last lines: {}", f.reason);
            assert!(f.reason.contains("started again"), "{}", f.reason);
        }
    }
    let text = cascade_status(&servers[0], "svc-a");
    assert!(text.contains("us-h0") && text.contains("eu-h1") && text.contains("activate exited 2"), "{text}");

    // A build whose health endpoint answers 500: back to a1 as well, with the probe's answer as the reason.
    let g3 = deployer.deploy(&svc_a, ids[3]).await.expect("deploy a3").generation;
    let status = wait_counts(dir.path(), &deployer, "svc-a", g3, (2, 0, 2)).await;
    assert_a_runs(dir.path(), &hosts, &digests[0], "a1");
    for clusters in status.rollout.values() {
        for f in &clusters.values().next().unwrap().failures.hosts {
            assert!(f.reason.contains("health: GET http://127.0.0.1:"), "{}: {}", f.host, f.reason);
            assert!(f.reason.contains("/healthz answered 500"), "{}: {}", f.host, f.reason);
        }
    }
    let text = cascade_status(&servers[0], "svc-a");
    assert!(text.contains("answered 500") && text.contains("2 failed"), "{text}");

    // A placement that matches no host: reported as such, nothing moves, b1 keeps running.
    let g4 = deployer.deploy(&svc_b, ids[4]).await.expect("deploy b2").generation;
    wait_counts(dir.path(), &deployer, "svc-b", g4, (0, 0, 0)).await;
    let text = cascade_status(&servers[0], "svc-b");
    assert!(text.contains("placement matches none of its 4 hosts"), "{text}");
    for host in &hosts {
        assert!(files_naming(&host.agent.data_dir, &digests[4]).is_empty(), "{} holds b2", host.agent.name);
    }
    for host in hosts.iter().filter(|h| h.runs_b) {
        assert_eq!(http(host.port, "/"), Some((200, "hello b1".to_string())), "{}", host.agent.name);
    }
    drop(managers);
}
