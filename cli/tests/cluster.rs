//! A 3-voter, 2-learner cluster of real `cascade node` processes on loopback, under concurrent builders
//! and workers, with the leader SIGKILLed and restarted mid-run.

mod common;

use cascade_client::{Client, ClientError};
use cascade_core::api::{AddMemberRequest, SubmitBuildRequest};
use cascade_core::{Artifact, Digest, JobId, JobStatus, Region, RepoUrl, ServiceName, WorkerId};
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BUILDS: u64 = 200;
const SUBMITTERS: u64 = 8;
const WORKERS: usize = 8;

fn artifact_for(job: JobId) -> Artifact {
    let digest = Digest::parse(format!("{:064x}", job.0 + 1)).expect("digest");
    Artifact {
        digest,
        size: 1000 + job.0,
        manifest_key: format!("artifacts/{}/manifest", job.0),
        deploy: Default::default(),
    }
}

/// A worker loop: claim, heartbeat, succeed; records every success the cluster acknowledged.
async fn worker_loop(
    client: Arc<Client>,
    name: String,
    done: Arc<Mutex<Vec<(JobId, u32)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let worker = WorkerId::parse(name).expect("worker id");
    let started = Instant::now();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && started.elapsed() < Duration::from_secs(240) {
        let claimed = match client.claim(&worker, Duration::from_secs(1)).await {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let lease = claimed.lease;
        // Lost heartbeats and successes (leader killed) are fine: the monitor requeues the job.
        if client.heartbeat(lease).await.is_err() {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if let Ok(job) = client.succeed(lease, artifact_for(lease.job)).await {
            assert!(matches!(job.status, JobStatus::Succeeded { .. }));
            done.lock().expect("lock").push((lease.job, lease.attempt));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_voters_two_learners_survive_leader_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let specs: Vec<NodeSpec> = vec![
        NodeSpec { id: 1, port: free_port(), region: "home".into(), voter: true },
        NodeSpec { id: 2, port: free_port(), region: "home".into(), voter: true },
        NodeSpec { id: 3, port: free_port(), region: "home".into(), voter: true },
        NodeSpec { id: 4, port: free_port(), region: "us".into(), voter: false },
        NodeSpec { id: 5, port: free_port(), region: "eu".into(), voter: false },
    ];
    let mut nodes = start_nodes(dir.path(), &specs, 3);
    let urls: Vec<String> = specs.iter().map(|s| s.url()).collect();
    for url in &urls {
        wait_healthy(url, Duration::from_secs(30)).await;
    }
    nodes[0].client(ADMIN).cluster_init().await.expect("init");
    wait_leader(&urls[..3], Duration::from_secs(20)).await;
    let admin = Client::new(&urls[..3], ADMIN).expect("client");
    for learner in &specs[3..] {
        let request = AddMemberRequest {
            id: learner.id,
            addr: learner.addr(),
            region: Region::parse(learner.region.clone()).expect("region"),
            voter: false,
        };
        admin.add_member(&request).await.expect("add learner");
    }
    let status = admin.cluster_status().await.expect("status");
    assert_eq!(status.members.len(), 5, "{status:?}");
    assert_eq!(status.members.iter().filter(|m| m.role == "learner").count(), 2);

    // Builders submit through the voters; workers claim through every node, learners included
    // (their writes are forwarded to the leader).
    let acked: Arc<Mutex<Vec<JobId>>> = Arc::default();
    let done: Arc<Mutex<Vec<(JobId, u32)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let mut order = urls.clone();
        order.rotate_left(w % urls.len());
        let client = Arc::new(Client::new(&order, WORKER).expect("client").with_retry_budget(Duration::from_secs(30)));
        workers.push(tokio::spawn(worker_loop(client, format!("w{w}"), done.clone(), stop.clone())));
    }
    let mut submitters = Vec::new();
    for s in 0..SUBMITTERS {
        let client = Client::new(&urls[..3], BUILDER).expect("client").with_retry_budget(Duration::from_secs(60));
        let acked = acked.clone();
        submitters.push(tokio::spawn(async move {
            for i in 0..BUILDS / SUBMITTERS {
                let n = s * 1000 + i;
                let request = SubmitBuildRequest {
                    repo: RepoUrl::parse("https://git.example.com/cascade/app.git").expect("repo"),
                    commit: sha(n),
                    service: ServiceName::parse("app").expect("service"),
                };
                // Same key on every retry: a submission whose answer was lost is not queued twice.
                let key = format!("submit-{n}");
                let job = client.submit_build_with_key(&request, &key).await.expect("submit acknowledged");
                acked.lock().expect("lock").push(job.id);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    // Kill the leader once a quarter of the builds are acknowledged.
    let kill_started = Instant::now();
    while acked.lock().expect("lock").len() < (BUILDS / 4) as usize {
        assert!(kill_started.elapsed() < Duration::from_secs(60), "submissions stalled before the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader = wait_leader(&urls[..3], Duration::from_secs(10)).await;
    let term_before = admin.cluster_status().await.expect("status").term;
    let leader_index = nodes.iter().position(|n| n.spec.id == leader).expect("leader is a node");
    nodes[leader_index].kill();
    // Restart the old leader only once the others have elected a new one, so the run really fails over.
    let others: Vec<String> = specs[..3].iter().filter(|s| s.id != leader).map(|s| s.url()).collect();
    let failover = Instant::now();
    'elected: loop {
        for url in &others {
            if health(url).await.and_then(|h| h["leader"].as_u64()).is_some_and(|l| l != leader) {
                break 'elected;
            }
        }
        assert!(failover.elapsed() < Duration::from_secs(30), "no new leader within 30 s of killing node {leader}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nodes[leader_index].start();

    for s in submitters {
        s.await.expect("submitter");
    }
    // Every acknowledged build must end; workers keep going until then.
    let all_done = Instant::now();
    let viewer = Client::new(&urls[..3], VIEWER).expect("client");
    loop {
        let list = viewer.list_builds(None, 500, None, None).await.expect("list");
        if list.builds.iter().all(|j| j.status.is_terminal()) && list.total == BUILDS {
            break;
        }
        assert!(
            all_done.elapsed() < Duration::from_secs(120),
            "builds did not all finish: {:?}",
            list.builds.iter().filter(|j| !j.status.is_terminal()).map(|j| (j.id, j.status.name())).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }

    // Every acknowledged build exists exactly once, and nothing else was created.
    let acked: BTreeSet<JobId> = acked.lock().expect("lock").iter().copied().collect();
    assert_eq!(acked.len() as u64, BUILDS, "acknowledged ids must be distinct");
    let final_list = viewer.list_builds(None, 500, None, None).await.expect("list");
    assert_eq!(final_list.total, BUILDS);
    let ids: BTreeSet<JobId> = final_list.builds.iter().map(|j| j.id).collect();
    assert_eq!(ids, acked, "the state holds exactly the acknowledged builds");
    let commits: BTreeSet<_> = final_list.builds.iter().map(|j| j.commit.clone()).collect();
    assert_eq!(commits.len() as u64, BUILDS, "no submission was queued twice");

    // No job was completed by two leases, and each recorded result is that lease's.
    let mut successes: BTreeMap<JobId, Vec<u32>> = BTreeMap::new();
    for (job, attempt) in done.lock().expect("lock").iter() {
        successes.entry(*job).or_default().push(*attempt);
    }
    for (job, attempts) in &successes {
        assert_eq!(attempts.len(), 1, "build {job} acknowledged as succeeded by leases {attempts:?}");
    }
    for job in &final_list.builds {
        if let JobStatus::Succeeded { artifact } = &job.status {
            assert_eq!(artifact, &artifact_for(job.id));
        }
    }

    // All five replicas converge to the same applied index and the same state.
    let converged = Instant::now();
    let states = loop {
        let mut applied = BTreeSet::new();
        for url in &urls {
            applied.insert(health(url).await.and_then(|h| h["applied_index"].as_u64()));
        }
        if applied.len() == 1 && !applied.contains(&None) {
            let mut states = Vec::new();
            for url in &urls {
                let local = Client::new(std::slice::from_ref(url), VIEWER).expect("client");
                states.push(local.list_builds(None, 500, None, None).await.expect("local list"));
            }
            break states;
        }
        assert!(converged.elapsed() < Duration::from_secs(30), "replicas did not converge: {applied:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (url, state) in urls.iter().zip(&states) {
        assert_eq!(state, &states[0], "replica {url} differs from node 1");
    }
    let status = viewer.cluster_status().await.expect("status");
    assert!(status.term > term_before, "killing the leader must have forced an election: {status:?}");
    let restarted = nodes[leader_index].spec.id;
    assert!(states.iter().all(|s| s.total == BUILDS), "restarted node {restarted} recovered all builds");

    // A voter stopped by SIGKILL and restarted with no quorum reachable still has its state from RocksDB.
    for node in nodes.iter_mut() {
        node.kill();
    }
    let lone = &mut nodes[0];
    lone.start();
    wait_healthy(&lone.spec.url(), Duration::from_secs(30)).await;
    let local = Client::new(&[lone.spec.url()], VIEWER).expect("client");
    let recovered = Instant::now();
    loop {
        match local.list_builds(None, 500, None, None).await {
            Ok(list) if list == states[0] => break,
            Ok(_) | Err(ClientError::Api { .. }) | Err(_) => {}
        }
        assert!(recovered.elapsed() < Duration::from_secs(20), "restarted node did not recover its state from disk");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
