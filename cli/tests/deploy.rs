//! Deploys end to end with real processes on loopback: 3 voters, a learner per region (us, eu), a worker, a
//! region manager per region and 12 host agents per region fanning an artifact out over QUIC (~60 MiB by
//! default, ~256 MiB with `CASCADE_DEPLOY_TEST_SEQ=31000000`).

mod common;

use cascade_client::Client;
use cascade_core::api::{AddMemberRequest, SubmitBuildRequest};
use cascade_core::state::ReplicationStatus;
use cascade_core::{Digest, JobId, JobStatus, Region, RepoUrl, ServiceName};
use common::agents::AgentProcess;
use common::builds::{local_stores, TestRepo, WorkerProcess};
use common::{free_port, start_nodes_with, wait_healthy, wait_leader, NodeSpec, ADMIN, BUILDER, DEPLOYER, WORKER};
use std::time::{Duration, Instant};

const REGIONS: [&str; 2] = ["us", "eu"];
const SERVICE: &str = "app";

fn hosts_per_region() -> usize {
    std::env::var("CASCADE_DEPLOY_TEST_HOSTS").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
}

/// `seq 1 N` makes distinct chunks: 8,000,000 numbers are ~60 MiB (the default, so that 24 hosts holding
/// three releases each fit a CI disk), 31,000,000 are ~256 MiB (`CASCADE_DEPLOY_TEST_SEQ=31000000`, which
/// needs ~25 GB free).
fn seq_count() -> u64 {
    std::env::var("CASCADE_DEPLOY_TEST_SEQ").ok().and_then(|v| v.parse().ok()).unwrap_or(8_000_000)
}

fn recipe(command: &str) -> String {
    format!("[build]\ncommand = {command:?}\nartifact = \"out/app\"\ntimeout_secs = 600\n")
}

async fn build(client: &Client, repo: &TestRepo, commit: &cascade_core::CommitSha) -> JobId {
    let request = SubmitBuildRequest {
        repo: RepoUrl::parse(repo.url()).unwrap(),
        commit: commit.clone(),
        service: ServiceName::parse(SERVICE).unwrap(),
    };
    client.submit_build(&request).await.expect("submit").id
}

/// Waits until the build ended; returns its digest if it succeeded and is replicated in every region.
async fn wait_built(client: &Client, id: JobId) -> Option<Digest> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        assert!(Instant::now() < deadline, "build {id} not done in time");
        let detail = client.get_build_detail(id).await.expect("build");
        match &detail.job.status {
            JobStatus::Failed { .. } | JobStatus::Cancelled { .. } => return None,
            JobStatus::Succeeded { artifact } => {
                let replicated = detail.artifact_record.as_ref().is_some_and(|r| {
                    REGIONS.iter().all(|region| {
                        r.replication.get(&Region::parse(*region).unwrap()) == Some(&ReplicationStatus::Replicated)
                    })
                });
                if replicated {
                    return Some(artifact.digest.clone());
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until the deployment state shows `expected` hosts active in every region for `generation`.
async fn wait_rollout(client: &Client, generation: u64, expected: &[(usize, &str)], within: Duration) {
    let service = ServiceName::parse(SERVICE).unwrap();
    let deadline = Instant::now() + within;
    loop {
        let status = client.deployment(&service).await.expect("deployment");
        let done = status.desired.as_ref().is_some_and(|d| d.generation == generation)
            && expected.iter().all(|(count, region)| {
                status
                    .rollout
                    .get(&Region::parse(*region).unwrap())
                    .and_then(|clusters| clusters.values().next())
                    .is_some_and(|c| c.counts.active == *count as u64 && c.counts.total == *count as u64)
            });
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "rollout of generation {generation} not complete: {:?}", status.rollout);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn fetched(host: &AgentProcess, digest: &Digest) -> u64 {
    host.host_status().and_then(|s| s["fetched"][digest.as_str()].as_u64()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploy_fans_out_verifies_reuses_rolls_back_and_survives_faults() {
    let dir = tempfile::tempdir().unwrap();
    let specs = vec![
        NodeSpec { id: 1, port: free_port(), region: "home".into(), voter: true },
        NodeSpec { id: 2, port: free_port(), region: "home".into(), voter: true },
        NodeSpec { id: 3, port: free_port(), region: "home".into(), voter: true },
        NodeSpec { id: 4, port: free_port(), region: "us".into(), voter: false },
        NodeSpec { id: 5, port: free_port(), region: "eu".into(), voter: false },
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
    wait_leader(&urls[..3], Duration::from_secs(20)).await;
    let admin = Client::new(&urls[..3], ADMIN).unwrap();
    for learner in &specs[3..] {
        let request = AddMemberRequest {
            id: learner.id,
            addr: learner.addr(),
            region: Region::parse(learner.region.clone()).unwrap(),
            voter: false,
        };
        admin.add_member(&request).await.expect("add learner");
    }

    let repo = TestRepo::new(dir.path());
    let n = seq_count();
    let a = repo.commit("v1", &[("cascade.toml", &recipe(&format!("mkdir -p out && seq 1 {n} > out/app")))]);
    let b = repo.commit(
        "v2",
        &[("cascade.toml", &recipe(&format!("mkdir -p out && seq 1 {n} > out/app && echo v2 >> out/app")))],
    );
    let d = repo.commit("v3", &[("cascade.toml", &recipe(&format!("mkdir -p out && seq 2 {} > out/app", n + 1)))]);
    let broken = repo.commit("broken", &[("cascade.toml", &recipe("exit 1"))]);
    let servers: Vec<String> = specs.iter().map(|s| s.addr()).collect();
    let _worker = WorkerProcess::start(dir.path(), "w1", &servers, &stores.main, 500);

    // One manager per region reading its learner first; hosts per region, one of them corrupting what it serves.
    let per_region = hosts_per_region();
    let mut managers = Vec::new();
    let mut hosts: Vec<Vec<AgentProcess>> = Vec::new();
    for (i, region) in REGIONS.iter().enumerate() {
        let learner = specs[3 + i].addr();
        let mut order = vec![learner];
        order.extend(specs[..3].iter().map(|s| s.addr()));
        let store = stores.regions[*region].clone();
        let manager = AgentProcess::manager(dir.path(), region, &order, WORKER, &store);
        let region_hosts = (0..per_region)
            .map(|h| {
                AgentProcess::host(dir.path(), &format!("{region}-host{h}"), manager.addr, *region == "us" && h == 3)
            })
            .collect();
        managers.push(manager);
        hosts.push(region_hosts);
    }

    let builder = Client::new(&urls[..3], BUILDER).unwrap();
    let ids = [build(&builder, &repo, &a).await, build(&builder, &repo, &b).await, build(&builder, &repo, &d).await];
    let failed_build = build(&builder, &repo, &broken).await;
    let mut digests = Vec::new();
    for id in ids {
        digests.push(wait_built(&builder, id).await.expect("build succeeded and replicated"));
    }
    assert!(wait_built(&builder, failed_build).await.is_none());

    let deployer = Client::new(&urls[..3], DEPLOYER).unwrap();
    let service = ServiceName::parse(SERVICE).unwrap();
    let err = deployer.deploy(&service, failed_build).await.expect_err("a failed build is not deployable");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(409), "{err}");
    assert!(err.to_string().contains("failed"), "{err}");

    // Deploy A: every host activates bytes that hash to A's digest.
    let all: Vec<(usize, &str)> = REGIONS.iter().map(|r| (per_region, *r)).collect();
    let started = Instant::now();
    let g1 = deployer.deploy(&service, ids[0]).await.expect("deploy A").generation;
    wait_rollout(&deployer, g1, &all, Duration::from_secs(600)).await;
    println!("deploy A to {} hosts: {:.1} s", 2 * per_region, started.elapsed().as_secs_f64());
    for host in hosts.iter().flatten() {
        assert_eq!(host.current_digest(SERVICE).as_ref(), Some(&digests[0]), "{}", host.name);
    }
    let manager_status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(managers[0].data_dir.join("status.json")).unwrap()).unwrap();
    assert!(
        manager_status["bad_senders"].as_array().unwrap().iter().any(|s| s == "us-host3"),
        "the corrupting host is reported: {manager_status}"
    );

    // Deploy B, which shares all chunks but the last: hosts fetch only the changed ones.
    let g2 = deployer.deploy(&service, ids[1]).await.expect("deploy B").generation;
    wait_rollout(&deployer, g2, &all, Duration::from_secs(600)).await;
    for host in hosts.iter().flatten() {
        assert_eq!(host.current_digest(SERVICE).as_ref(), Some(&digests[1]), "{}", host.name);
        let fetched_b = fetched(host, &digests[1]);
        assert!(fetched_b <= 2, "{} fetched {fetched_b} chunks of B; only the last one changed", host.name);
    }

    // Roll back to A: no transfer at all.
    let before: Vec<u64> = hosts.iter().flatten().map(|h| fetched(h, &digests[0])).collect();
    let g3 = deployer.rollback(&service).await.expect("rollback").generation;
    wait_rollout(&deployer, g3, &all, Duration::from_secs(300)).await;
    for (host, before) in hosts.iter().flatten().zip(before) {
        assert_eq!(host.current_digest(SERVICE).as_ref(), Some(&digests[0]), "{}", host.name);
        assert_eq!(fetched(host, &digests[0]), before, "{} fetched chunks for a rollback", host.name);
    }

    // Deploy D (all chunks new); kill 2 eu hosts mid-transfer and restart one of them.
    let g4 = deployer.deploy(&service, ids[2]).await.expect("deploy D").generation;
    let deadline = Instant::now() + Duration::from_secs(300);
    while fetched(&hosts[1][0], &digests[2]) < 5 {
        assert!(Instant::now() < deadline, "eu-host0 never started fetching D");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hosts[1][0].kill();
    hosts[1][1].kill();
    let had = fetched(&hosts[1][0], &digests[2]);
    hosts[1][0].restart();
    let survivors = [(per_region, "us"), (per_region - 1, "eu")];
    wait_rollout(&deployer, g4, &survivors, Duration::from_secs(600)).await;
    for (r, region_hosts) in hosts.iter().enumerate() {
        for (h, host) in region_hosts.iter().enumerate() {
            if r == 1 && h == 1 {
                continue;
            }
            assert_eq!(host.current_digest(SERVICE).as_ref(), Some(&digests[2]), "{}", host.name);
        }
    }
    let resumed = hosts[1][0].host_status().unwrap();
    let local = resumed["local"][digests[2].as_str()].as_u64().unwrap_or(0);
    assert!(had > 0 && local > 0, "the restarted host resumed from its {had} chunks: {resumed}");
}
