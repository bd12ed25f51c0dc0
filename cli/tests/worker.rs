//! Real `cascade node` and `cascade worker` processes building a real git repository on loopback.

mod common;

use cascade_core::api::{BuildDetail, SubmitBuildRequest};
use cascade_core::state::ReplicationStatus;
use cascade_core::{CommitSha, Job, JobId, JobStatus, Lease, RepoUrl, ServiceName};
use common::builds::{artifact_in_local_store, local_stores, wait_terminal, TestRepo, WorkerProcess};
use common::{single_node_with, BUILDER, VIEWER, WORKER};
use std::time::{Duration, Instant};

const HELLO_C: &str = "#include <stdio.h>\nint main(void) { puts(\"hello from cascade\"); return 0; }\n";
const REGIONS: [&str; 3] = ["us", "eu", "ap"];

fn recipe(command: &str, artifact: &str, timeout_secs: Option<u64>) -> String {
    let timeout = timeout_secs.map(|t| format!("timeout_secs = {t}\n")).unwrap_or_default();
    format!("[build]\ncommand = {command:?}\nartifact = {artifact:?}\n{timeout}")
}

fn request(repo: &str, commit: &CommitSha) -> SubmitBuildRequest {
    SubmitBuildRequest {
        repo: RepoUrl::parse(repo).unwrap(),
        commit: commit.clone(),
        service: ServiceName::parse("hello").unwrap(),
    }
}

/// Polls until `check` accepts the build's detail; bounded by `within`.
async fn wait_detail(
    client: &cascade_client::Client,
    id: JobId,
    within: Duration,
    what: &str,
    check: impl Fn(&BuildDetail) -> bool,
) -> BuildDetail {
    let deadline = Instant::now() + within;
    loop {
        let detail = client.get_build_detail(id).await.expect("get build detail");
        if check(&detail) {
            return detail;
        }
        assert!(Instant::now() < deadline, "build {id}: not {what} after {within:?}: {detail:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn replicated_everywhere(detail: &BuildDetail) -> bool {
    detail.artifact_record.as_ref().is_some_and(|record| {
        REGIONS.iter().all(|r| {
            record.replication.get(&cascade_core::Region::parse(*r).unwrap()) == Some(&ReplicationStatus::Replicated)
        })
    })
}

fn failure_reason(job: &Job) -> &str {
    match &job.status {
        JobStatus::Failed { reason } => reason,
        other => panic!("build {} should have failed, is {other:?}", job.id),
    }
}

/// A process whose command line contains `needle`, if any is still running.
fn process_with(needle: &str) -> Option<String> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        cmdline.contains(needle).then_some(cmdline)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_build_exact_commits_fail_clearly_and_replicate_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let repo = TestRepo::new(dir.path());
    let good = repo.commit(
        "good",
        &[
            ("hello.c", HELLO_C),
            ("cascade.toml", &recipe("mkdir -p out && cc -O2 -o out/hello hello.c && ./out/hello", "out/hello", None)),
        ],
    );
    let failing = repo.commit(
        "failing",
        &[("cascade.toml", &recipe("echo compiling; echo 'error: expected ; before }' >&2; exit 3", "out/x", None))],
    );
    // A unique sleep length marks the build's processes, so the test can look for survivors.
    let slow = repo.commit(
        "slow",
        &[("cascade.toml", &recipe("echo starting; sleep 97.31 & sleep 97.31; echo never", "out/x", Some(2)))],
    );
    let no_recipe = repo.commit("no recipe", &[("README", "nothing to build here")]);
    let unknown = common::sha(0xdead_beef);

    let stores = local_stores(dir.path(), &REGIONS);
    // One more region whose store (S3 on a port where nothing listens) is down.
    let mut with_down_region = stores.clone();
    let dead_port = common::free_port();
    with_down_region.regions.insert(
        "down".into(),
        cascade_client::blobs::StoreConfig::S3 {
            bucket: "cascade-down".into(),
            endpoint: Some(format!("http://127.0.0.1:{dead_port}")),
            region: "us-east-1".into(),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            allow_http: true,
        },
    );
    let node = single_node_with(dir.path(), 300, &|config| {
        config.stores = Some(with_down_region.clone());
        config.replication.poll_interval_ms = 200;
        config.replication.sync_interval_secs = 1;
    })
    .await;
    let servers = vec![node.spec.addr()];
    let _w1 = WorkerProcess::start(dir.path(), "w1", &servers, &stores.main, 300);
    let _w2 = WorkerProcess::start(dir.path(), "w2", &servers, &stores.main, 300);

    let builder = node.client(BUILDER);
    let url = repo.url();
    let ids: Vec<JobId> = {
        let mut ids = Vec::new();
        for commit in [&good, &failing, &slow, &no_recipe, &unknown] {
            ids.push(builder.submit_build(&request(&url, commit)).await.expect("submit").id);
        }
        ids
    };
    let mut jobs = Vec::new();
    for id in &ids {
        jobs.push(wait_terminal(&builder, *id, Duration::from_secs(120)).await);
    }

    // The good commit: succeeded, and its bytes are in every regional store.
    let JobStatus::Succeeded { artifact } = &jobs[0].status else { panic!("good build: {:?}", jobs[0].status) };
    let detail = wait_detail(&builder, ids[0], Duration::from_secs(60), "replicated", replicated_everywhere).await;
    assert_eq!(detail.artifact_record.as_ref().unwrap().replicated_at.len(), REGIONS.len());
    for region in ["main"].iter().chain(REGIONS.iter()) {
        let (digest, size) = artifact_in_local_store(&dir.path().join(format!("stores/{region}")), &artifact.digest);
        assert_eq!(digest, artifact.digest, "bytes in the {region} store hash to the reported digest");
        assert_eq!(size, artifact.size);
    }
    // The region whose store is down shows the error and stays pending; the others are unaffected.
    // Regions proceed independently: the dead store's error arrives after its client gives up retrying.
    let down = cascade_core::Region::parse("down").unwrap();
    let is_error = |d: &BuildDetail| {
        matches!(
            d.artifact_record.as_ref().and_then(|r| r.replication.get(&down)),
            Some(ReplicationStatus::Error { .. })
        )
    };
    let detail = wait_detail(&builder, ids[0], Duration::from_secs(120), "error in the dead region", is_error).await;
    match detail.artifact_record.as_ref().unwrap().replication.get(&down) {
        Some(ReplicationStatus::Error { reason }) => assert!(reason.contains("store of down"), "{reason}"),
        other => panic!("region with a dead store: {other:?}"),
    }
    let viewer = node.client(VIEWER);
    let log = viewer.build_log(ids[0], None).await.expect("log of the good build");
    assert!(log.complete && log.text.contains("hello from cascade"), "log: {}", log.text);

    // The failing commit: failed with its exit status and the log's end, not retried.
    let reason = failure_reason(&jobs[1]);
    assert!(reason.contains("exited with status 3") && reason.contains("expected ; before }"), "{reason}");
    assert_eq!(jobs[1].attempt, 1, "a failing build is not retried");
    let log = viewer.build_log(ids[1], Some(100)).await.expect("log of the failing build");
    assert!(log.text.contains("expected ; before }") && log.text.len() <= 100, "{log:?}");

    // The slow commit: killed at its timeout, with nothing of it left running.
    let reason = failure_reason(&jobs[2]);
    assert!(reason.contains("timed out after 2s"), "{reason}");
    assert_eq!(process_with("sleep 97.31"), None, "a process of the timed-out build survived");

    let reason = failure_reason(&jobs[3]);
    assert!(reason.contains("no cascade.toml"), "{reason}");
    let reason = failure_reason(&jobs[4]);
    assert!(reason.contains(&format!("commit {unknown} not found in {url}")), "{reason}");
    assert_eq!(jobs[4].attempt, 1, "an unknown commit is not retried");

    // Corrupt one chunk in one regional store: the synchronizer notices and the replicator repairs it.
    let manifest = cascade_core::Manifest::from_json(
        &std::fs::read(dir.path().join("stores/eu").join(cascade_core::Manifest::key(&artifact.digest))).unwrap(),
    )
    .unwrap();
    let chunk = dir.path().join("stores/eu").join(cascade_core::Manifest::chunk_key(&manifest.chunks[0]));
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&chunk, &bytes).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let repaired = std::fs::read(&chunk).map(|b| cascade_core::manifest::hash_bytes(&b) == manifest.chunks[0]);
        let audit = node.client(common::ADMIN).audit(None, 200).await.expect("audit");
        let noticed =
            audit.entries.iter().any(|e| e.action == "record_replication" && e.detail.contains("eu: Copying"));
        if repaired.unwrap_or(false) && noticed {
            break;
        }
        assert!(Instant::now() < deadline, "corrupt chunk not repaired (noticed: {noticed})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_detail(&builder, ids[0], Duration::from_secs(30), "replicated again", replicated_everywhere).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_requeued_and_its_old_lease_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = TestRepo::new(dir.path());
    let commit = repo.commit(
        "takes a while",
        &[("cascade.toml", &recipe("sleep 4; mkdir -p out; echo built > out/app", "out/app", Some(60)))],
    );
    let stores = local_stores(dir.path(), &["us"]);
    // Stale after 3 s: the monitor requeues a silent worker's job quickly.
    let node = single_node_with(dir.path(), 3, &|config| {
        config.stores = Some(stores.clone());
        config.replication.poll_interval_ms = 200;
    })
    .await;
    let servers = vec![node.spec.addr()];
    let builder = node.client(BUILDER);
    let mut first = WorkerProcess::start(dir.path(), "first", &servers, &stores.main, 300);
    let id = builder.submit_build(&request(&repo.url(), &commit)).await.expect("submit").id;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = builder.get_build(id).await.unwrap();
        if matches!(job.status, JobStatus::Running { .. }) {
            break;
        }
        assert!(Instant::now() < deadline, "build never started: {:?}", job.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // While it runs, the log's live tail is readable through the API (published with each heartbeat).
    let viewer = node.client(VIEWER);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match viewer.build_log(id, None).await {
            Ok(log) if !log.complete && log.text.contains("sleep 4") => break,
            other => assert!(Instant::now() < deadline, "no live log tail: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.child.kill().expect("SIGKILL the first worker");
    first.child.wait().unwrap();
    let _second = WorkerProcess::start(dir.path(), "second", &servers, &stores.main, 300);

    let job = wait_terminal(&builder, id, Duration::from_secs(90)).await;
    assert!(matches!(job.status, JobStatus::Succeeded { .. }), "{:?}", job.status);
    assert_eq!(job.attempt, 2, "the second worker completed attempt 2");

    // The dead attempt comes back: its lease is refused.
    let worker = node.client(WORKER);
    let stale = Lease { job: id, attempt: 1 };
    let err = worker.heartbeat(stale).await.expect_err("old lease must be refused");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(409), "{err}");
    let JobStatus::Succeeded { artifact } = job.status else { unreachable!() };
    let err = worker.succeed(stale, artifact).await.expect_err("old lease must be refused");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(409), "{err}");
}

/// A large artifact streams through the worker with bounded memory and reaches three regional stores.
/// 1 GiB by default (the test holds five copies on disk); the 2 GiB figure in docs/BENCHMARKS.md is
/// `CASCADE_BIG_ARTIFACT_MIB=2048`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_artifact_uploads_in_bounded_memory_and_replicates() {
    let mib: u64 = std::env::var("CASCADE_BIG_ARTIFACT_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let repo = TestRepo::new(dir.path());
    let command = format!("mkdir -p out && head -c {} /dev/urandom > out/big.bin", mib * 1024 * 1024);
    let commit = repo.commit("big", &[("cascade.toml", &recipe(&command, "out/big.bin", Some(600)))]);
    let stores = local_stores(dir.path(), &REGIONS);
    let node = single_node_with(dir.path(), 300, &|config| {
        config.stores = Some(stores.clone());
        config.replication.poll_interval_ms = 200;
        config.replication.sync_interval_secs = 60;
    })
    .await;
    let servers = vec![node.spec.addr()];
    let worker = WorkerProcess::start_with_chunks(
        dir.path(),
        "big",
        &servers,
        &stores.main,
        1000,
        cascade_core::manifest::DEFAULT_CHUNK_SIZE,
    );
    let builder = node.client(BUILDER);
    let id = builder.submit_build(&request(&repo.url(), &commit)).await.expect("submit").id;
    let job = wait_terminal(&builder, id, Duration::from_secs(900)).await;
    let JobStatus::Succeeded { artifact } = &job.status else { panic!("big build: {:?}", job.status) };
    assert_eq!(artifact.size, mib * 1024 * 1024);
    let peak = worker.peak_rss();
    println!("worker peak RSS for a {mib} MiB artifact: {:.1} MiB", peak as f64 / (1024.0 * 1024.0));
    assert!(peak < 256 * 1024 * 1024, "worker peak RSS {peak} bytes is over 256 MiB");
    wait_detail(&builder, id, Duration::from_secs(900), "replicated", replicated_everywhere).await;
    for region in REGIONS {
        let (digest, size) = artifact_in_local_store(&dir.path().join(format!("stores/{region}")), &artifact.digest);
        assert_eq!((digest, size), (artifact.digest.clone(), artifact.size), "{region}");
    }
}
