//! Running a build command: in its sandbox ([`crate::sandbox`]), its own process group, a scrubbed
//! environment, output into a log file, and a hard stop (the whole group, and with the sandbox its whole
//! PID namespace) on timeout or cancel.

use crate::sandbox::{Mounts, Network, SandboxConfig, SandboxKind, BWRAP};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::watch;

/// Why a build must stop before its command exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Someone cancelled the build.
    Cancelled,
    /// The lease was given to another attempt: this one's result would be refused.
    LeaseLost,
    /// The worker is shutting down (SIGTERM/SIGINT): another worker should take the job.
    Shutdown,
}

/// How a build command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildExit {
    /// The command exited with status 0.
    Success,
    /// It exited non-zero or was killed by a signal; the text says which.
    Failed(String),
    /// It ran past its timeout and was killed.
    TimedOut(Duration),
    /// It was stopped from outside.
    Stopped(StopReason),
}

/// What a build command gets to see.
#[derive(Debug, Clone)]
pub struct BuildCommand {
    /// Shell command (`/bin/sh -c`).
    pub script: String,
    /// Working directory: the checkout.
    pub dir: PathBuf,
    /// A private HOME and TMPDIR for the build.
    pub scratch: PathBuf,
    /// Extra variables (`CASCADE_*`).
    pub env: Vec<(String, String)>,
    /// Hard timeout.
    pub timeout: Duration,
    /// The recipe's network (checked against the worker's config before).
    pub network: Network,
    /// Paths the build reads at the same place (its mirror).
    pub read_only: Vec<PathBuf>,
}

/// The only variables a build inherits from nowhere: a fixed PATH and locale. Everything else the worker
/// knows (its token, its store credentials) stays out of the build.
const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the command with stdout and stderr appended to `log`, until it exits, times out, or `stop` says so.
pub async fn run_build(
    command: &BuildCommand,
    sandbox: &SandboxConfig,
    log: &Path,
    mut stop: watch::Receiver<Option<StopReason>>,
) -> std::io::Result<BuildExit> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    std::fs::create_dir_all(&command.scratch)?;
    let (mut child, tmp) = match sandbox.kind {
        SandboxKind::Bwrap => {
            let mounts = Mounts {
                checkout: &command.dir,
                home: &command.scratch,
                read_only: command.read_only.iter().map(PathBuf::as_path).collect(),
                network: command.network,
            };
            let mut child = Command::new(BWRAP);
            child.args(sandbox.args(&mounts)).arg("/bin/sh");
            // The sandbox's own /tmp is empty and private.
            (child, PathBuf::from("/tmp"))
        }
        SandboxKind::None => {
            let tmp = command.scratch.join("tmp");
            std::fs::create_dir_all(&tmp)?;
            (Command::new("/bin/sh"), tmp)
        }
    };
    child
        .arg("-c")
        .arg(&command.script)
        .current_dir(&command.dir)
        .env_clear()
        .env("PATH", BASE_PATH)
        .env("LANG", "C.UTF-8")
        .env("HOME", &command.scratch)
        .env("TMPDIR", tmp)
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group, so a timeout kills the compiler it started too, not only the shell.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = child.spawn()?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let deadline = tokio::time::sleep(command.timeout);
    tokio::pin!(deadline);
    let exit = loop {
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                break if status.success() { BuildExit::Success } else { BuildExit::Failed(describe(status)) };
            }
            () = &mut deadline => break BuildExit::TimedOut(command.timeout),
            changed = stop.changed() => {
                match (changed, *stop.borrow()) {
                    (_, Some(reason)) => break BuildExit::Stopped(reason),
                    (Ok(()), None) => continue,
                    // The supervisor is gone: nobody can report this build; stop it.
                    (Err(_), None) => break BuildExit::Stopped(StopReason::LeaseLost),
                }
            }
        }
    };
    // Kill the whole group whatever happened: a build may leave background processes behind even when its
    // shell exits, and none of them may outlive the build.
    if let Some(pgid) = pgid {
        kill_group(pgid);
    }
    let _ = child.wait().await;
    Ok(exit)
}

/// SIGKILL to every process of the group.
fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; it has no memory-safety preconditions.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("build command exited with status {code}"),
        (None, Some(signal)) => format!("build command was killed by signal {signal}"),
        (None, None) => "build command ended abnormally".into(),
    }
}

/// The last `max` bytes of a log file as text (lossy), starting at a line boundary where possible.
pub fn log_tail(log: &Path, max: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(log) else { return String::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max as u64);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::with_capacity(max);
    let _ = file.take(max as u64).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if start > 0 {
        if let Some(newline) = text.find('\n') {
            return text[newline + 1..].to_string();
        }
    }
    text
}
