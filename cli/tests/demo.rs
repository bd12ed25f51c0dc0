//! `cascade demo --deploy` as a user runs it: a child process that starts a whole installation (26 processes),
//! builds the example, deploys it to every host; then SIGINT, and every process it started must be gone
//! and its exit code 0.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HOSTS_PER_REGION: u16 = 5;

/// A base port whose whole range (nodes, metrics, managers, hosts) is free on loopback.
fn free_base_port() -> u16 {
    let span = 400 + 3 * HOSTS_PER_REGION;
    for attempt in 0..200u16 {
        let base = 20_000 + ((std::process::id() as u16).wrapping_mul(7).wrapping_add(attempt * 331)) % 30_000;
        let free = (0..=span).all(|offset| {
            std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", base + offset)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free port range for the demo");
}

/// Pids whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid …`: comm may hold spaces, so parse after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        if rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            pids.push(pid);
        }
    }
    pids
}

/// Whether `pid` is still a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// A plain HTTP/1.0 GET of `http://host:port/path`, so the test needs no async runtime.
fn http_get(url: &str) -> String {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(authority).unwrap_or_else(|e| panic!("{url}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"), "{url}: {text}");
    text
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn demo_builds_deploys_to_every_host_and_stops_cleanly_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = dir.path().join("demo.out");
    let base = free_base_port();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["demo", "--deploy", "--deadline", "900", "--base-port", &base.to_string()])
        .args(["--hosts-per-region", &HOSTS_PER_REGION.to_string()])
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.path().join("demo.err")).unwrap())
        .spawn()
        .expect("start cascade demo");

    let started = Instant::now();
    let mut done = false;
    while started.elapsed() < Duration::from_secs(600) {
        let text = read(&out);
        if text.contains("rollout complete") {
            done = true;
            break;
        }
        if let Ok(Some(status)) = demo.try_wait() {
            panic!("demo exited early ({status}):\n{text}\n{}", read(&dir.path().join("demo.err")));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = read(&out);
    assert!(done, "the demo's first rollout did not complete:\n{text}\n{}", read(&dir.path().join("demo.err")));
    assert!(text.contains("console   http://127.0.0.1:"), "prints the console URL:\n{text}");
    assert!(text.contains(": succeeded: artifact"), "{text}");
    assert!(text.contains(&format!("rollout: {n}/{n} hosts active", n = 3 * HOSTS_PER_REGION)), "{text}");

    // The summary names the tokens; the API agrees with what the demo printed.
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(data.join("demo.json")).unwrap()).unwrap();
    let viewer = summary["tokens"]["viewer"].as_str().unwrap();
    let server = summary["servers"][0].as_str().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["--server", server, "--token", viewer, "--output", "json", "status", "--service", "hello"])
        .output()
        .unwrap();
    let deployment: serde_json::Value = serde_json::from_slice(&status.stdout)
        .unwrap_or_else(|e| panic!("deploy-status output: {e}: {}", String::from_utf8_lossy(&status.stderr)));
    assert_eq!(deployment["desired"]["generation"], 1, "{deployment}");
    let build = deployment["desired"]["build"].as_u64().unwrap();
    assert!(text.contains(&format!("deployed build {build} as generation 1")), "{text}");
    // Every host activated the example service: its hook ran the artifact, which names the commit.
    for region in ["us-east", "eu-west", "ap-south"] {
        for h in 0..HOSTS_PER_REGION {
            let current = data.join("hosts").join(format!("{region}-host{h}")).join("services/hello/current/artifact");
            let script = std::fs::read_to_string(&current).unwrap_or_else(|e| panic!("{}: {e}", current.display()));
            assert!(script.starts_with("#!/bin/sh"), "{script}");
            assert!(!script.contains("@COMMIT@"), "the build stamped the commit: {script}");
        }
    }

    // `deploy --follow` as a script uses it: the same build again as generation 2, followed to 100 %, exit 0.
    let deployer = summary["tokens"]["deployer"].as_str().unwrap();
    let follow = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["--server", server, "--token", deployer, "--output", "json", "deploy", "--service", "hello"])
        .args(["--build", &build.to_string(), "--follow", "--follow-timeout", "300"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&follow.stderr);
    assert!(follow.status.success(), "deploy --follow: {stderr}");
    let desired: serde_json::Value = serde_json::from_slice(&follow.stdout).unwrap();
    assert_eq!(desired["generation"], 2, "{desired}");
    assert!(stderr.contains(&format!("all {} hosts active", 3 * HOSTS_PER_REGION)), "{stderr}");
    let refused = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["--server", server, "--token", viewer, "deploy", "--service", "hello", "--build", "0", "--follow"])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "a viewer cannot deploy");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403"), "{}", String::from_utf8_lossy(&refused.stderr));

    // Every kind of process serves Prometheus metrics.
    for kind in ["node", "worker", "manager", "host"] {
        let url = summary["metrics"][kind].as_str().unwrap();
        let text = http_get(url);
        assert!(text.contains("# TYPE"), "{kind} at {url}: {text}");
    }

    let children = children_of(demo.id());
    assert!(children.len() >= 26, "the demo runs every part as a process: {children:?}");
    // SAFETY: signalling our own child, which has not been reaped.
    unsafe {
        libc::kill(demo.id() as i32, libc::SIGINT);
    }
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        assert!(stopping.elapsed() < Duration::from_secs(60), "the demo did not stop within 60 s of SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit status after SIGINT: {status}\n{}", read(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    while children.iter().any(|pid| alive(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let survivors: Vec<u32> = children.iter().copied().filter(|pid| alive(*pid)).collect();
    assert!(survivors.is_empty(), "processes left running after the demo stopped: {survivors:?}");
    assert!(read(&out).contains("stopped;"), "{}", read(&out));
}
