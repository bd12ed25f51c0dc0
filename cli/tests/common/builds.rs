//! Test fixtures for builds: a real git repository with recipes, worker processes, store inspection.

use cascade_client::blobs::{StoreConfig, StoresConfig};
use cascade_core::{CommitSha, Manifest};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs git in `dir`, panicking with its stderr on failure; returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A repository under construction: a work tree that pushes to a bare "central" repo.
pub struct TestRepo {
    pub bare: PathBuf,
    work: PathBuf,
}

impl TestRepo {
    pub fn new(dir: &Path) -> Self {
        let bare = dir.join("central.git");
        let work = dir.join("work");
        std::fs::create_dir_all(&bare).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        git(&bare, &["init", "--bare", "--quiet"]);
        git(&work, &["init", "--quiet"]);
        Self { bare, work }
    }

    /// The URL workers clone.
    pub fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// Replaces the tree with `files`, commits, pushes, and returns the commit.
    pub fn commit(&self, message: &str, files: &[(&str, &str)]) -> CommitSha {
        for entry in std::fs::read_dir(&self.work).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != ".git" {
                let path = entry.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(path).unwrap();
                } else {
                    std::fs::remove_file(path).unwrap();
                }
            }
        }
        for (name, content) in files {
            let path = self.work.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "--quiet", "--allow-empty", "-m", message]);
        git(&self.work, &["push", "--quiet", "--force", self.bare.to_str().unwrap(), "HEAD:refs/heads/main"]);
        CommitSha::parse(git(&self.work, &["rev-parse", "HEAD"])).unwrap()
    }
}

/// Local stores: main and one per region, under `dir/stores`.
pub fn local_stores(dir: &Path, regions: &[&str]) -> StoresConfig {
    StoresConfig {
        main: StoreConfig::Local { path: dir.join("stores/main") },
        regions: regions
            .iter()
            .map(|r| (r.to_string(), StoreConfig::Local { path: dir.join(format!("stores/{r}")) }))
            .collect(),
    }
}

/// A `cascade worker` process, killed when dropped.
pub struct WorkerProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl WorkerProcess {
    pub fn start(dir: &Path, name: &str, servers: &[String], store: &StoreConfig, heartbeat_ms: u64) -> Self {
        Self::start_with_chunks(dir, name, servers, store, heartbeat_ms, 1024 * 1024)
    }

    /// [`Self::start`] with a chunk size.
    pub fn start_with_chunks(
        dir: &Path,
        name: &str,
        servers: &[String],
        store: &StoreConfig,
        heartbeat_ms: u64,
        chunk_size: u64,
    ) -> Self {
        Self::start_configured(dir, name, servers, store, heartbeat_ms, chunk_size, "", "")
    }

    /// [`Self::start_with_chunks`] with extra top-level keys (`top`) and extra tables (`tables`, e.g. a
    /// `[sandbox]` section) in the worker's config.
    #[allow(clippy::too_many_arguments)]
    pub fn start_configured(
        dir: &Path,
        name: &str,
        servers: &[String],
        store: &StoreConfig,
        heartbeat_ms: u64,
        chunk_size: u64,
        top: &str,
        tables: &str,
    ) -> Self {
        let work_dir = dir.join(format!("{name}-work"));
        #[derive(serde::Serialize)]
        struct Section<'a> {
            store: &'a StoreConfig,
        }
        let store = toml::to_string(&Section { store }).unwrap();
        let config = format!(
            "id = \"{name}\"\nservers = {servers:?}\ntoken = \"{}\"\nwork_dir = {:?}\nheartbeat_interval_ms = {heartbeat_ms}\nclaim_wait_secs = 2\nchunk_size = {chunk_size}\n{top}\n{store}\n{tables}",
            super::WORKER,
            work_dir.display().to_string(),
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args(["worker", "--config"])
            .arg(&path)
            .env("CASCADE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(format!("{name}.out"))).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start worker");
        Self { child, log }
    }

    /// Peak resident memory of the process so far, in bytes (VmHWM).
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reassembles the artifact `digest` from a local store and returns its bytes' BLAKE3 and size.
pub fn artifact_in_local_store(store: &Path, digest: &cascade_core::Digest) -> (cascade_core::Digest, u64) {
    let manifest = Manifest::from_json(&std::fs::read(store.join(Manifest::key(digest))).expect("manifest")).unwrap();
    let mut hasher = blake3::Hasher::new();
    let mut size = 0;
    for hash in &manifest.chunks {
        let bytes = std::fs::read(store.join(Manifest::chunk_key(hash))).expect("chunk");
        size += bytes.len() as u64;
        hasher.update(&bytes);
    }
    (cascade_core::manifest::digest_of(hasher.finalize()), size)
}

/// Polls until build `id` is terminal; bounded by `within`.
pub async fn wait_terminal(
    client: &cascade_client::Client,
    id: cascade_core::JobId,
    within: Duration,
) -> cascade_core::Job {
    let deadline = Instant::now() + within;
    loop {
        let job = client.get_build(id).await.expect("get build");
        if job.status.is_terminal() {
            return job;
        }
        assert!(Instant::now() < deadline, "build {id} still {:?} after {within:?}", job.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
