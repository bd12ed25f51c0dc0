//! The demo's child processes: every part of the installation is a real `cascade` process started from this
//! same binary, with its output in `logs/<name>.log`. Children live in their own process group (a Ctrl-C in
//! the terminal reaches only the demo, which then stops them in order) and get SIGTERM if the demo dies
//! without stopping them. The services the host agents start outlive the agents (each runs in its own
//! process group, as a real host's would), so [`stop_services`] stops them after the agents.

use anyhow::Context;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::layout::ProcessSpec;

/// One running child.
struct Running {
    name: String,
    log: PathBuf,
    child: Child,
    exited: bool,
}

/// Starts children and stops them again.
pub struct Supervisor {
    exe: PathBuf,
    logs: PathBuf,
    children: Vec<Running>,
}

impl Supervisor {
    /// A supervisor that starts `exe` (this binary) with logs under `logs`.
    pub fn new(exe: PathBuf, logs: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(logs).with_context(|| format!("cannot create {}", logs.display()))?;
        Ok(Self { exe, logs: logs.to_path_buf(), children: Vec::new() })
    }

    /// Starts one child.
    pub fn start(&mut self, spec: &ProcessSpec) -> anyhow::Result<()> {
        let log_path = self.logs.join(format!("{}.log", spec.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut command = Command::new(&self.exe);
        command
            .args(&spec.args)
            .env("CASCADE_LOG", std::env::var("CASCADE_LOG").unwrap_or_else(|_| "info,openraft=warn,quinn=warn".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it only asks the kernel to
        // send SIGTERM to this child when the demo's thread that started it goes away.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| format!("cannot start {} ({})", spec.name, self.exe.display()))?;
        self.children.push(Running { name: spec.name.clone(), log: log_path, child, exited: false });
        Ok(())
    }

    /// Children that exited since the last call: (name, how, log path).
    pub fn reap(&mut self) -> Vec<(String, String, PathBuf)> {
        let mut gone = Vec::new();
        for running in self.children.iter_mut().filter(|r| !r.exited) {
            if let Ok(Some(status)) = running.child.try_wait() {
                running.exited = true;
                gone.push((running.name.clone(), status.to_string(), running.log.clone()));
            }
        }
        gone
    }

    /// Process ids of the children still running.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter(|r| !r.exited).map(|r| r.child.id()).collect()
    }

    /// Stops every child: SIGTERM in reverse start order (hosts, managers, workers, then the nodes), then
    /// SIGKILL to whatever has not exited within `grace`. Returns the names of those that had to be killed.
    pub fn stop_all(&mut self, grace: Duration) -> Vec<String> {
        for running in self.children.iter().rev().filter(|r| !r.exited) {
            if let Ok(pid) = i32::try_from(running.child.id()) {
                // SAFETY: kill(2) on our own child's pid; the child is not yet reaped, so the pid is still ours.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.children.iter().any(|r| !r.exited) {
            self.reap();
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut killed = Vec::new();
        for running in self.children.iter_mut().filter(|r| !r.exited) {
            let _ = running.child.kill();
            let _ = running.child.wait();
            running.exited = true;
            killed.push(running.name.clone());
        }
        killed
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(5));
    }
}

/// Stops the services the host agents started under `host_dirs`. A service's `activate` starts it in the
/// background, in its own process group, with its pid in `services/<service>/run/pid`: it outlives the
/// agent, so the demo stops it itself. Only a live process whose program is a release of that host (the
/// path `<host dir>/releases/…/<service>`) is signalled, so a stale pid file never reaches an unrelated
/// process. SIGTERM, then SIGKILL after `grace`; returns the names (`host/service`) of those stopped.
pub fn stop_services(host_dirs: &[PathBuf], grace: Duration) -> Vec<String> {
    let mut running: Vec<(String, i32, PathBuf)> = Vec::new();
    for host_dir in host_dirs {
        let Ok(services) = std::fs::read_dir(host_dir.join("services")) else { continue };
        for service in services.flatten() {
            let name = service.file_name().to_string_lossy().into_owned();
            let pid_file = service.path().join("run").join("pid");
            let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok()) else {
                continue;
            };
            if pid > 1 && runs_release_of(pid, host_dir, &name) {
                let host = host_dir.file_name().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
                running.push((format!("{host}/{name}"), pid, pid_file));
            }
        }
    }
    for (_, pid, _) in &running {
        // SAFETY: kill(2) on a pid just checked to run this host's release of the service.
        unsafe {
            libc::kill(*pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && running.iter().any(|(_, pid, _)| alive(*pid)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, pid, pid_file) in &running {
        if alive(*pid) {
            // SAFETY: as above; it ignored SIGTERM for `grace`.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
            println!("warning: {name} ignored SIGTERM for {grace:?}; killed");
        }
        let _ = std::fs::remove_file(pid_file);
    }
    running.into_iter().map(|(name, _, _)| name).collect()
}

/// Whether `pid` is alive and its program (`argv[0]`) is `<host_dir>/releases/<release>/<service>`.
fn runs_release_of(pid: i32, host_dir: &Path, service: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let program = Path::new(std::ffi::OsStr::from_bytes(argv0));
    alive(pid) && program.starts_with(host_dir.join("releases")) && program.file_name().is_some_and(|f| f == service)
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) state …`: comm may hold anything, so the state is the first field after the last ')'.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}
