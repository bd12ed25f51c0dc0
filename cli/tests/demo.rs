//! `cascade demo --deploy` as a user runs it: a child process that starts a whole installation (26 processes),
//! builds the two example services, deploys each to the hosts that run it, where it must answer HTTP; then
//! SIGINT, and every process it started (the hosts' services too) must be gone and its exit code 0.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HOSTS_PER_REGION: u16 = 5;
/// The example services and how many hosts run each (hosts 0-2 of each region, and 3-4).
const SERVICES: [(&str, usize); 2] = [("hello", 9), ("greeter", 6)];

/// A base port whose whole range (nodes, metrics, managers, hosts, the hosts' services) is free on loopback.
fn free_base_port() -> u16 {
    let span = 600 + 3 * HOSTS_PER_REGION;
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

/// A plain HTTP/1.0 GET of `http://host:port/path`, so the test needs no async runtime: the answer, or
/// why there is none.
fn try_http_get(url: &str) -> Result<String, String> {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let addr: std::net::SocketAddr = authority.parse().unwrap();
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("{url}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").map_err(|e| format!("{url}: {e}"))?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(|e| format!("{url}: {e}"))?;
    Ok(text)
}

/// A GET that must answer 200.
fn http_get(url: &str) -> String {
    let text = try_http_get(url).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"), "{url}: {text}");
    text
}

/// Every file and directory under `dir`, recursively (not following links).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(entry.path());
            }
            all.push(entry.path());
        }
    }
    all
}

/// The pid in a host's `services/<service>/run/pid`.
fn service_pid(host_dir: &Path, service: &str) -> Option<u32> {
    read(&host_dir.join("services").join(service).join("run/pid")).trim().parse().ok()
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
        if text.contains("all services healthy") {
            done = true;
            break;
        }
        if text.contains("walkthrough stopped") {
            break;
        }
        if let Ok(Some(status)) = demo.try_wait() {
            panic!("demo exited early ({status}):\n{text}\n{}", read(&dir.path().join("demo.err")));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = read(&out);
    assert!(done, "the demo's first rollouts did not complete:\n{text}\n{}", read(&dir.path().join("demo.err")));
    // As the demo names it in its configs and the services' command lines.
    let data = data.canonicalize().unwrap();
    assert!(text.contains("console   http://127.0.0.1:"), "prints the console URL:\n{text}");
    for (service, hosts) in SERVICES {
        assert!(text.contains(&format!("of {service}: succeeded: artifact")), "{text}");
        assert!(text.contains(&format!("rollout of {service}: {hosts}/{hosts} hosts healthy")), "{text}");
        assert!(
            text.contains(&format!("rollout complete: {service} generation 1 is healthy on all {hosts} hosts")),
            "{text}"
        );
    }
    assert!(text.contains("all services healthy: hello on 9 hosts, greeter on 6 hosts"), "{text}");

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
    assert!(text.contains(&format!("deployed build {build} of hello as generation 1")), "{text}");
    let digest_of = |service: &str| -> String {
        let status = Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args(["--server", server, "--token", viewer, "--output", "json", "status", "--service", service])
            .output()
            .unwrap();
        let deployment: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        deployment["desired"]["artifact"]["digest"].as_str().unwrap().to_string()
    };

    // Every host that runs a service has it installed, running and answering on its own port; the
    // other hosts never received a byte of it.
    // (host dir, service, URL, pid) of every service running.
    let mut running: Vec<(PathBuf, &str, String, u32)> = Vec::new();
    for (service, count) in SERVICES {
        let info = &summary["services"][service];
        let commit = info["commit"].as_str().unwrap();
        let hosts = info["hosts"].as_object().unwrap();
        assert_eq!(hosts.len(), count, "{info}");
        let digest = digest_of(service);
        let mut asked = None;
        for region in ["us-east", "eu-west", "ap-south"] {
            for h in 0..HOSTS_PER_REGION {
                let name = format!("{region}-host{h}");
                let host_dir = data.join("hosts").join(&name);
                let config: toml::Table =
                    toml::from_str(&read(&data.join("config").join(format!("{name}.toml")))).unwrap();
                let runs = config["services"].as_array().unwrap().iter().any(|s| s.as_str() == Some(service));
                assert_eq!(runs, hosts.contains_key(&name), "{name}: its config and demo.json agree on {service}");
                if !runs {
                    assert!(!host_dir.join("services").join(service).exists(), "{name} does not run {service}");
                    let strays: Vec<PathBuf> = walk(&host_dir)
                        .into_iter()
                        .filter(|p| {
                            let file = p.file_name().unwrap().to_string_lossy();
                            file.contains(digest.as_str())
                                || file == format!("deploy-{service}.json")
                                || file == service
                        })
                        .collect();
                    assert!(strays.is_empty(), "{name} does not run {service} but holds {strays:?}");
                    continue;
                }
                let installed = host_dir.join("services").join(service).join("current").join(service);
                let meta = std::fs::metadata(&installed).unwrap_or_else(|e| panic!("{}: {e}", installed.display()));
                use std::os::unix::fs::PermissionsExt as _;
                assert_eq!(meta.permissions().mode() & 0o7777, 0o755, "{}", installed.display());
                let port = config["env"]["PORT"].as_str().unwrap();
                let url = format!("http://127.0.0.1:{port}/");
                assert_eq!(hosts[&name].as_str(), Some(url.as_str()), "{name}");
                let health = try_http_get(&format!("{url}healthz")).unwrap();
                assert!(health.starts_with("HTTP/1.0 200") && health.ends_with("ok\n"), "{name} /healthz: {health}");
                let answer = http_get(&url);
                assert!(answer.contains(&format!("commit {commit}")), "{name} /: {answer}");
                assert!(answer.contains(&format!("on host {name}")), "{name} /: {answer}");
                let missing = try_http_get(&format!("{url}nothing-here")).unwrap();
                assert!(missing.starts_with("HTTP/1.0 404"), "{name}: {missing}");
                let pid =
                    service_pid(&host_dir, service).unwrap_or_else(|| panic!("{name}: no pid file for {service}"));
                assert!(alive(pid), "{name}: {service} pid {pid} is not running");
                asked.get_or_insert(url.clone());
                running.push((host_dir, service, url, pid));
            }
        }
        // The walkthrough asked one host itself and printed its answer.
        let asked = asked.unwrap();
        assert!(text.contains(&format!("curl {asked}")), "{text}");
        let answer_line = http_get(&asked);
        let body = answer_line.rsplit("\r\n\r\n").next().unwrap().trim_end();
        assert!(text.contains(body), "the walkthrough printed {body:?}:\n{text}");
    }
    assert_eq!(running.len(), 3 * HOSTS_PER_REGION as usize, "every host runs one service");

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
    let hello_hosts = SERVICES[0].1;
    assert!(
        stderr.contains("complete: all 2 waves healthy")
            && stderr.contains(&format!("{hello_hosts}/{hello_hosts} hosts active, 0 failed"))
            && stderr.contains("wave 1 of 2 (1 host)"),
        "{stderr}"
    );
    // Generation 2 is the build every hello host already runs, healthy: nothing is restarted (the same
    // pids answer), as a rollback restarts nothing on the hosts it did not touch.
    for (host_dir, service, url, pid) in &running {
        let now = service_pid(host_dir, service).unwrap();
        assert!(alive(now), "{}: {service} pid {now} after hello's generation 2", host_dir.display());
        assert_eq!(now, *pid, "{}: {service} was restarted", host_dir.display());
        assert!(http_get(url).contains("from cascade"), "{url}");
    }
    // What must be gone after SIGINT: the service processes running now, each a release of its host.
    let mut service_pids = Vec::new();
    for (host_dir, service, _, _) in &running {
        let pid = service_pid(host_dir, service).unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let program = String::from_utf8_lossy(cmdline.split(|b| *b == 0).next().unwrap_or_default()).into_owned();
        assert!(program.starts_with(&host_dir.join("releases").display().to_string()), "{pid}: {program}");
        assert!(program.ends_with(&format!("/{service}")), "{pid}: {program}");
        service_pids.push(pid);
    }
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
    // The services live in their own process groups and outlive the agents: the demo stops them too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while service_pids.iter().any(|pid| alive(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let survivors: Vec<u32> = service_pids.iter().copied().filter(|pid| alive(*pid)).collect();
    assert!(survivors.is_empty(), "services left running after the demo stopped: {survivors:?}");
    let text = read(&out);
    assert!(text.contains("stopped 15 services the hosts had started"), "{text}");
    assert!(text.contains("stopped;"), "{text}");
}
