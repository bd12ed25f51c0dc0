//! Builds in their bubblewrap sandbox, with real `cascade node` and `cascade worker` processes and a real git
//! repository: what a hostile recipe tries fails inside the sandbox and leaves nothing behind, the network
//! is off unless the recipe asks and the worker allows, C and cargo builds work, and a git server that
//! stalls ends the attempt instead of pinning the worker.
//!
//! Needs Debian's `bubblewrap` (`scripts/setup.sh` installs it).

mod common;

use cascade_core::api::SubmitBuildRequest;
use cascade_core::{CommitSha, Job, JobId, JobStatus, RepoUrl, ServiceName};
use common::builds::{local_stores, wait_terminal, TestRepo, WorkerProcess};
use common::{single_node_with, BUILDER, VIEWER, WORKER};
use std::io::Read as _;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn recipe(command: &str, artifact: &str, network: &str) -> String {
    format!("[build]\ncommand = {command:?}\nartifact = {artifact:?}\nnetwork = {network:?}\ntimeout_secs = 300\n")
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(needle).then_some(cmdline)
        })
        .collect()
}

/// The toolchain the tests were built with: its sysroot (bound read-only into the sandbox).
fn rust_sysroot() -> String {
    let out = std::process::Command::new("rustc").args(["--print", "sysroot"]).output().expect("rustc --print sysroot");
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

/// A loopback listener that counts the connections it accepts (and answers none).
fn counting_listener() -> (u16, Arc<AtomicU32>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicU32::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            // Hold the connection open without answering, as a stalled git server does.
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    (port, accepted)
}

async fn build(builder: &cascade_client::Client, repo: &str, commit: &CommitSha) -> Job {
    let request = SubmitBuildRequest {
        repo: RepoUrl::parse(repo).expect("repo"),
        commit: commit.clone(),
        service: ServiceName::parse("app").expect("service"),
    };
    let id = builder.submit_build(&request).await.expect("submit").id;
    wait_terminal(builder, id, Duration::from_secs(240)).await
}

/// Whether the build printed `marker` as a line of its own (the log's first lines echo the command).
fn printed(log: &str, marker: &str) -> bool {
    log.lines().any(|l| l.trim() == marker)
}

fn succeeded(job: &Job, log: &str) {
    assert!(matches!(job.status, JobStatus::Succeeded { .. }), "build {}: {:?}\nlog:\n{log}", job.id, job.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_build_is_contained_and_real_builds_work_in_the_sandbox() {
    assert!(
        Path::new("/usr/bin/bwrap").is_file(),
        "bubblewrap is missing: apt-get install bubblewrap (scripts/setup.sh)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let repo = TestRepo::new(dir);
    let worker_config = dir.join("sb.toml");
    let mirrors = dir.join("sb-work/mirrors");
    let outside = dir.join("sb-work/escaped");
    let hostile = format!(
        "echo uid=$(id -u); \
         cat {config} && echo READ-CONFIG || echo config-unreadable; \
         ls {mirrors} | wc -l | sed 's/^/mirrors-visible=/'; \
         touch {outside}; touch /usr/escaped && echo WROTE-USR || echo usr-read-only; \
         ls /proc | grep -c '^[0-9]' | sed 's/^/processes-visible=/'; \
         (setsid sleep 97.77 &); sleep 97.78 & \
         kill -9 $PPID; \
         mkdir -p out && echo contained > out/x",
        config = worker_config.display(),
        mirrors = mirrors.display(),
        outside = outside.display(),
    );
    let hostile = repo.commit("hostile", &[("cascade.toml", &recipe(&hostile, "out/x", "none"))]);
    let (port, accepted) = counting_listener();
    let connect = format!(
        "bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' && echo CONNECTED || echo NO-NETWORK; mkdir -p out && echo x > out/x"
    );
    let offline = repo.commit("offline", &[("cascade.toml", &recipe(&connect, "out/x", "none"))]);
    let online = repo.commit("online", &[("cascade.toml", &recipe(&connect, "out/x", "host"))]);
    let hello = "#include <stdio.h>\nint main(void) { puts(\"hello from the sandbox\"); return 0; }\n";
    let c_build = repo.commit(
        "c",
        &[
            ("hello.c", hello),
            (
                "cascade.toml",
                &recipe("mkdir -p out && cc -O2 -o out/hello hello.c && ./out/hello", "out/hello", "none"),
            ),
        ],
    );
    let sysroot = rust_sysroot();
    let cargo = format!(
        "PATH={sysroot}/bin:$PATH CARGO_HOME=$HOME/.cargo cargo build --offline --release && ./target/release/tiny"
    );
    let cargo_build = repo.commit(
        "cargo",
        &[
            ("Cargo.toml", "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
            ("src/main.rs", "fn main() { println!(\"tiny crate built in the sandbox\"); }\n"),
            ("cascade.toml", &recipe(&cargo, "target/release/tiny", "none")),
        ],
    );

    let stores = local_stores(dir, &[]);
    let node = single_node_with(dir, 300, &|config| config.stores = Some(stores.clone())).await;
    let servers = vec![node.spec.addr()];
    let tables = format!("[sandbox]\nallow_host_network = true\nread_only = [{sysroot:?}]\n");
    let mut worker = WorkerProcess::start_configured(dir, "sb", &servers, &stores.main, 300, 1 << 20, "", &tables);
    let builder = node.client(BUILDER);
    let viewer = node.client(VIEWER);
    let url = repo.url();
    let log_of = |id: JobId| {
        let viewer = &viewer;
        async move { viewer.build_log(id, None).await.map(|l| l.text).unwrap_or_default() }
    };

    // Another repository's build first: its mirror is on the worker's disk beside the hostile one's.
    let other_dir = dir.join("other");
    std::fs::create_dir_all(&other_dir).expect("other repo dir");
    let other = TestRepo::new(&other_dir);
    let other_commit =
        other.commit("other", &[("cascade.toml", &recipe("mkdir -p out && echo o > out/x", "out/x", "none"))]);
    let job = build(&builder, &other.url(), &other_commit).await;
    succeeded(&job, &log_of(job.id).await);

    // The hostile recipe: every attempt fails inside the sandbox; the build itself completes.
    let job = build(&builder, &url, &hostile).await;
    let log = log_of(job.id).await;
    succeeded(&job, &log);
    assert!(log.contains("uid=65534"), "runs as nobody: {log}");
    assert!(printed(&log, "config-unreadable") && !printed(&log, "READ-CONFIG"), "{log}");
    assert!(!log.contains(WORKER), "the worker's token reached the log: {log}");
    let figure = |name: &str| -> u32 {
        let prefix = format!("{name}=");
        log.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} line: {log}"))
    };
    assert_eq!(figure("mirrors-visible"), 1, "only its own mirror, not the other repository's: {log}");
    // A write outside the checkout lands in the sandbox's private /tmp, or fails: never on the worker's disk.
    assert!(!outside.exists(), "the build wrote into the worker's work dir: {log}");
    assert!(printed(&log, "usr-read-only") && !Path::new("/usr/escaped").exists(), "{log}");
    let visible = figure("processes-visible");
    assert!(visible < 10, "the build sees only its own processes, saw {visible}: {log}");
    assert_eq!(worker.child.try_wait().expect("worker status"), None, "kill -9 $PPID killed the worker");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with("sleep 97.7").is_empty() {
        assert!(Instant::now() < deadline, "a process of the build outlived it: {:?}", processes_with("sleep 97.7"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Network: none by default, the host's when the recipe asks and the worker allows.
    let job = build(&builder, &url, &offline).await;
    let log = log_of(job.id).await;
    succeeded(&job, &log);
    assert!(printed(&log, "NO-NETWORK") && !printed(&log, "CONNECTED"), "{log}");
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "a build without network reached the listener");
    let job = build(&builder, &url, &online).await;
    let log = log_of(job.id).await;
    succeeded(&job, &log);
    assert!(printed(&log, "CONNECTED"), "{log}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the build with the host's network reached the listener");

    // A C build and a cargo build (offline, the toolchain bound read-only).
    let job = build(&builder, &url, &c_build).await;
    let log = log_of(job.id).await;
    succeeded(&job, &log);
    assert!(printed(&log, "hello from the sandbox"), "{log}");
    let job = build(&builder, &url, &cargo_build).await;
    let log = log_of(job.id).await;
    succeeded(&job, &log);
    assert!(printed(&log, "tiny crate built in the sandbox"), "{log}");
    assert_eq!(worker.child.try_wait().expect("worker status"), None, "the worker kept running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_server_that_stalls_fails_the_build_instead_of_pinning_the_worker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let (port, accepted) = counting_listener();
    let stores = local_stores(dir, &[]);
    let node = single_node_with(dir, 300, &|config| config.stores = Some(stores.clone())).await;
    let servers = vec![node.spec.addr()];
    let _worker =
        WorkerProcess::start_configured(dir, "git", &servers, &stores.main, 300, 1 << 20, "git_timeout_secs = 2", "");
    let builder = node.client(BUILDER);
    let started = Instant::now();
    let job = build(&builder, &format!("http://127.0.0.1:{port}/stalls.git"), &common::sha(0xabc)).await;
    let JobStatus::Failed { reason } = &job.status else { panic!("a stalled clone: {:?}", job.status) };
    assert!(reason.contains("did not finish within 2 s"), "{reason}");
    assert_eq!(job.attempt, cascade_core::job::DEFAULT_MAX_ATTEMPTS, "retried as an infrastructure failure: {job:?}");
    assert!(accepted.load(Ordering::SeqCst) >= job.attempt, "every attempt reached the server");
    println!("stalled git: {} attempts, FAILED after {:.1} s", job.attempt, started.elapsed().as_secs_f64());
}
