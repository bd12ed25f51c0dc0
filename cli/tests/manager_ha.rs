//! Two region managers for one cluster: the lease holder acts, the standby refuses hosts and reports
//! nothing; after the active manager is SIGKILLed, the standby takes the lease over and completes the next
//! deploy. One node with a regional store, one worker, two managers, three hosts, a small artifact.

mod common;

use cascade_client::Client;
use cascade_core::api::{RolloutReport, SubmitBuildRequest};
use cascade_core::state::{ClusterRollout, ReplicationStatus, RolloutCounts};
use cascade_core::{ClusterName, Digest, JobId, JobStatus, Region, RepoUrl, ServiceName};
use common::agents::AgentProcess;
use common::builds::{local_stores, TestRepo, WorkerProcess};
use common::{single_node_with, BUILDER, DEPLOYER, WORKER};
use std::time::{Duration, Instant};

const SERVICE: &str = "app";
const HOSTS: usize = 3;
/// Short, so the takeover is quick; hosts also need the QUIC idle timeout (10 s) to notice the dead manager.
const LEASE_TTL_MS: u64 = 3_000;

fn recipe(command: &str) -> String {
    format!("[build]\ncommand = {command:?}\nartifact = \"out/app\"\ntimeout_secs = 120\n")
}

/// Waits until the build succeeded and its artifact is replicated in region `us`.
async fn wait_built(client: &Client, id: JobId) -> Digest {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(Instant::now() < deadline, "build {id} not done in time");
        let detail = client.get_build_detail(id).await.expect("build");
        match &detail.job.status {
            JobStatus::Failed { reason } => panic!("build {id} failed: {reason}"),
            JobStatus::Succeeded { artifact } => {
                let us = Region::parse("us").unwrap();
                if detail
                    .artifact_record
                    .as_ref()
                    .is_some_and(|r| r.replication.get(&us) == Some(&ReplicationStatus::Replicated))
                {
                    return artifact.digest.clone();
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every host is active on `generation`; returns the cluster's latest report.
async fn wait_rollout(client: &Client, generation: u64, within: Duration) -> ClusterRollout {
    let service = ServiceName::parse(SERVICE).unwrap();
    let deadline = Instant::now() + within;
    loop {
        let status = client.deployment(&service).await.expect("deployment");
        let cluster = status.rollout.get(&Region::parse("us").unwrap()).and_then(|c| c.values().next()).cloned();
        let current = status.desired.as_ref().is_some_and(|d| d.generation == generation);
        if let Some(cluster) =
            cluster.filter(|c| current && c.counts.active == HOSTS as u64 && c.counts.total == HOSTS as u64)
        {
            return cluster;
        }
        assert!(Instant::now() < deadline, "rollout of generation {generation} not complete: {:?}", status.rollout);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the manager's status file says `role`.
async fn wait_role(manager: &AgentProcess, role: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = manager.manager_status().filter(|s| s["role"] == role) {
            return status;
        }
        assert!(Instant::now() < deadline, "{} not {role}: {:?}", manager.name, manager.manager_status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standby_manager_takes_over_after_the_active_one_dies() {
    let dir = tempfile::tempdir().unwrap();
    let stores = local_stores(dir.path(), &["us"]);
    let node = single_node_with(dir.path(), 300, &|config| {
        config.stores = Some(stores.clone());
        config.replication.poll_interval_ms = 200;
    })
    .await;
    let servers = vec![node.spec.addr()];
    let _worker = WorkerProcess::start(dir.path(), "w1", &servers, &stores.main, 500);
    let repo = TestRepo::new(dir.path());
    let a = repo.commit("v1", &[("cascade.toml", &recipe("mkdir -p out && seq 1 300000 > out/app"))]);
    let b = repo.commit("v2", &[("cascade.toml", &recipe("mkdir -p out && seq 2 300001 > out/app"))]);

    // The first manager takes the lease; the second stands by. Hosts list the standby first.
    let store = stores.regions["us"].clone();
    let mut active = AgentProcess::manager_ha(dir.path(), "us", "ha-a", &servers, WORKER, &store, LEASE_TTL_MS);
    wait_role(&active, "active", Duration::from_secs(30)).await;
    let standby = AgentProcess::manager_ha(dir.path(), "us", "ha-b", &servers, WORKER, &store, LEASE_TTL_MS);
    wait_role(&standby, "standby", Duration::from_secs(30)).await;
    let hosts: Vec<AgentProcess> = (0..HOSTS)
        .map(|h| AgentProcess::host_with_managers(dir.path(), &format!("host{h}"), &[standby.addr, active.addr]))
        .collect();

    let builder = Client::new(&servers, BUILDER).unwrap();
    let mut digests = Vec::new();
    for commit in [a, b] {
        let request = SubmitBuildRequest {
            repo: RepoUrl::parse(repo.url()).unwrap(),
            commit,
            service: ServiceName::parse(SERVICE).unwrap(),
        };
        let id = builder.submit_build(&request).await.expect("submit").id;
        digests.push((id, wait_built(&builder, id).await));
    }

    // Deploy A through the active manager.
    let deployer = Client::new(&servers, DEPLOYER).unwrap();
    let service = ServiceName::parse(SERVICE).unwrap();
    let g1 = deployer.deploy(&service, digests[0].0).await.expect("deploy A").generation;
    let first = wait_rollout(&deployer, g1, Duration::from_secs(120)).await;
    assert_eq!(first.reported_by.as_deref(), Some("ha-a"), "{first:?}");
    for host in &hosts {
        assert_eq!(host.current_digest(SERVICE).as_ref(), Some(&digests[0].1), "{}", host.name);
    }
    let idle = standby.manager_status().unwrap();
    assert_eq!(idle["role"], "standby", "{idle}");
    assert_eq!(idle["reports_sent"], 0, "the standby never reports: {idle}");
    assert!(idle["lease"].as_str().unwrap_or_default().contains("ha-a"), "the refusal names the holder: {idle}");

    // SIGKILL the active manager and deploy B: the standby takes the lease over and completes it.
    active.kill();
    let killed = Instant::now();
    let g2 = deployer.deploy(&service, digests[1].0).await.expect("deploy B").generation;
    let second = wait_rollout(&deployer, g2, Duration::from_secs(120)).await;
    println!(
        "takeover: rollout of B complete {:.1} s after the active manager was killed",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(second.reported_by.as_deref(), Some("ha-b"), "{second:?}");
    for host in &hosts {
        assert_eq!(host.current_digest(SERVICE).as_ref(), Some(&digests[1].1), "{}", host.name);
    }
    let took_over = standby.manager_status().unwrap();
    assert_eq!(took_over["role"], "active", "{took_over}");

    // The dead manager's counts can no longer land: a report in its name is refused.
    let stale = RolloutReport {
        service: service.clone(),
        generation: g2,
        region: Region::parse("us").unwrap(),
        cluster: ClusterName::parse("c1").unwrap(),
        counts: RolloutCounts { total: 3, fetching: 3, ..RolloutCounts::default() },
        failures: Default::default(),
        holder: Some("ha-a".into()),
        pending: Vec::new(),
    };
    let err = Client::new(&servers, WORKER).unwrap().report_rollout(&stale).await.expect_err("stale report refused");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(409), "{err}");
    assert!(err.to_string().contains("ha-b"), "{err}");
    drop(hosts);
}
