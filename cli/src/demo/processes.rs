//! The demo's child processes: every part of the installation is a real `cascade` process started from this
//! same binary, with its output in `logs/<name>.log`. Children live in their own process group (a Ctrl-C in
//! the terminal reaches only the demo, which then stops them in order) and get SIGTERM if the demo dies
//! without stopping them.

use anyhow::Context;
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
