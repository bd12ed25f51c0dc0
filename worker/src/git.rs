//! Git: a bare mirror per repository, kept between builds, and a clean checkout of exactly one commit.
//!
//! The `git` CLI does the work: it is what every CI system trusts with credentials, submodules, LFS hooks and
//! odd servers. Credentials reach it through a credential helper that reads them from its environment, so
//! they appear in no command line and no log.

use crate::config::GitCredential;
use cascade_core::{CommitSha, RepoUrl};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Why the source of a build could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The repository has no such commit, even after a fetch. The build's fault: not retried.
    #[error("commit {sha} not found in {repo}")]
    CommitNotFound {
        /// The commit asked for.
        sha: CommitSha,
        /// The repository.
        repo: RepoUrl,
    },
    /// git failed (unreachable server, bad credentials, full disk). Worth another attempt.
    #[error("git {what} failed for {repo}: {detail}")]
    Failed {
        /// The step.
        what: &'static str,
        /// The repository.
        repo: RepoUrl,
        /// git's stderr, trimmed.
        detail: String,
    },
}

/// Mirrors of repositories under one directory.
#[derive(Debug, Clone)]
pub struct MirrorCache {
    root: PathBuf,
    /// Longest any one git command may take; a server that stalls ends the attempt, never pins the worker.
    timeout: Duration,
}

/// Below this many bytes per second for [`LOW_SPEED_SECS`], git gives up on an HTTP transfer by itself.
const LOW_SPEED_BYTES: &str = "1000";
/// See [`LOW_SPEED_BYTES`].
const LOW_SPEED_SECS: &str = "30";

impl MirrorCache {
    /// A cache rooted at `root` (created on first use) whose git commands each end within `timeout`.
    pub fn new(root: PathBuf, timeout: Duration) -> Self {
        Self { root, timeout }
    }

    /// The mirror directory of `repo`: named by a hash of the URL, so any URL is a safe directory name.
    pub fn mirror_path(&self, repo: &RepoUrl) -> PathBuf {
        let name = blake3::hash(repo.as_str().as_bytes()).to_hex();
        self.root.join(format!("{}.git", &name[..24]))
    }

    /// Makes sure the mirror of `repo` holds `sha`, cloning or fetching as needed; returns the mirror path.
    pub async fn ensure_commit(
        &self,
        repo: &RepoUrl,
        sha: &CommitSha,
        credential: Option<&GitCredential>,
    ) -> Result<PathBuf, GitError> {
        let mirror = self.mirror_path(repo);
        let failed = |what, detail: String| GitError::Failed { what, repo: repo.clone(), detail };
        if !mirror.join("HEAD").exists() {
            std::fs::create_dir_all(&self.root).map_err(|e| failed("mkdir", e.to_string()))?;
            // Clone into a temporary name and rename, so a worker killed mid-clone leaves no half mirror.
            let partial = PathBuf::from(format!("{}.partial", mirror.display()));
            let _ = std::fs::remove_dir_all(&partial);
            let mut clone = git(credential);
            clone.args(["clone", "--mirror", "--quiet", "--", repo.as_str()]).arg(&partial);
            run(clone, self.timeout).await.map_err(|e| failed("clone", e))?;
            std::fs::rename(&partial, &mirror).map_err(|e| failed("rename", e.to_string()))?;
        } else if !has_commit(&mirror, sha, self.timeout).await {
            let mut fetch = git(credential);
            fetch.arg("--git-dir").arg(&mirror).args(["fetch", "--prune", "--quiet", "origin"]);
            run(fetch, self.timeout).await.map_err(|e| failed("fetch", e))?;
        }
        if !has_commit(&mirror, sha, self.timeout).await {
            return Err(GitError::CommitNotFound { sha: sha.clone(), repo: repo.clone() });
        }
        Ok(mirror)
    }

    /// Checks out exactly `sha` into `dir`, which must not exist yet. The checkout shares the mirror's
    /// objects (no copy) but has its own `.git`, so a build can run `git describe`.
    pub async fn checkout(&self, repo: &RepoUrl, mirror: &Path, sha: &CommitSha, dir: &Path) -> Result<(), GitError> {
        let failed = |what, detail: String| GitError::Failed { what, repo: repo.clone(), detail };
        let mut clone = git(None);
        clone.args(["clone", "--shared", "--no-checkout", "--quiet"]).arg(mirror).arg(dir);
        run(clone, self.timeout).await.map_err(|e| failed("clone --shared", e))?;
        let mut checkout = git(None);
        checkout.arg("-C").arg(dir).args(["checkout", "--quiet", "--detach", sha.as_str()]);
        run(checkout, self.timeout).await.map_err(|e| failed("checkout", e))?;
        Ok(())
    }
}

/// A `git` command that never prompts and, for a private repository, answers with the credential.
fn git(credential: Option<&GitCredential>) -> Command {
    let mut command = Command::new("git");
    command
        .args([
            "-c",
            &format!("http.lowSpeedLimit={LOW_SPEED_BYTES}"),
            "-c",
            &format!("http.lowSpeedTime={LOW_SPEED_SECS}"),
        ])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(credential) = credential {
        command
            .args(["-c", "credential.helper=", "-c"])
            .arg("credential.helper=!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' \"$CASCADE_GIT_USERNAME\" \"$CASCADE_GIT_PASSWORD\"; }; f")
            .env("CASCADE_GIT_USERNAME", &credential.username)
            .env("CASCADE_GIT_PASSWORD", &credential.password);
    }
    command
}

async fn has_commit(mirror: &Path, sha: &CommitSha, timeout: Duration) -> bool {
    let mut check = git(None);
    check.arg("--git-dir").arg(mirror).args(["cat-file", "-e", &format!("{sha}^{{commit}}")]);
    run(check, timeout).await.is_ok()
}

/// Runs a git command for at most `timeout` (then kills it); on failure returns its stderr (last 2 KB).
async fn run(mut command: Command, timeout: Duration) -> Result<(), String> {
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Ok(output) => output.map_err(|e| format!("cannot run git: {e}"))?,
        // `kill_on_drop`: the dropped future kills git.
        Err(_) => {
            return Err(format!(
                "git did not finish within {} s (the worker's git_timeout_secs): the server accepted the \
                 connection but stalled; the attempt is retried",
                timeout.as_secs()
            ))
        }
    };
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    let start = stderr.len().saturating_sub(2048);
    let start = (start..=stderr.len()).find(|&i| stderr.is_char_boundary(i)).unwrap_or(stderr.len());
    Err(format!("{} ({})", &stderr[start..], output.status))
}
