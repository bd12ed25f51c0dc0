//! The demo's example git repository: a small service (a shell program that prints its version) and the
//! `cascade.toml` recipe that builds it. Built with the `git` CLI, so the workers clone a real repository.

use anyhow::Context;
use std::path::Path;
use std::process::Command;

/// The service's source; the build stamps the commit into it.
const HELLO_SH: &str = r#"#!/bin/sh
# The Cascade demo's service. Hosts run it once when they activate a release.
echo "hello from cascade: build of commit @COMMIT@ on $(hostname)"
"#;

/// How the workers build it: no compiler needed, so the demo runs on a machine with only git and sh.
const RECIPE: &str = r#"[build]
command = "mkdir -p out && sed \"s/@COMMIT@/$CASCADE_COMMIT/\" hello.sh > out/hello && chmod +x out/hello"
artifact = "out/hello"
timeout_secs = 120
"#;

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Cascade demo", "-c", "user.email=demo@localhost", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .context("cannot run git: install it (Debian: `apt-get install git`) and run the demo again")?;
    anyhow::ensure!(
        output.status.success(),
        "git {} in {} failed: {}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Creates the repository at `dir` unless it exists; returns the commit to build (the tip of `main`).
pub fn ensure_repo(dir: &Path) -> anyhow::Result<String> {
    if !dir.join(".git").exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        git(dir, &["init", "-q"])?;
        std::fs::write(dir.join("hello.sh"), HELLO_SH)?;
        std::fs::write(dir.join("cascade.toml"), RECIPE)?;
        git(dir, &["add", "hello.sh", "cascade.toml"])?;
        git(dir, &["commit", "-q", "-m", "hello: the demo service"])?;
    }
    git(dir, &["rev-parse", "HEAD"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_is_created_once_and_its_commit_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("example.git");
        let first = ensure_repo(&repo).unwrap();
        assert_eq!(first.len(), 40, "a full SHA: {first}");
        assert_eq!(ensure_repo(&repo).unwrap(), first);
        let recipe = std::fs::read_to_string(repo.join("cascade.toml")).unwrap();
        assert!(recipe.contains("artifact = \"out/hello\""));
    }
}
