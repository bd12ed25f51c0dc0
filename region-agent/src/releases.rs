//! A host's releases on disk: downloads into a preallocated file, verified chunk by chunk; activation by
//! an atomic switch of a `current` link; the last few releases kept for instant rollbacks and chunk reuse.
//!
//! Layout under the host's data dir:
//! `incoming/<digest>.part` (a download in progress); `releases/<digest>/` (a complete, verified release):
//! the artifact under the name its deploy spec gives (`install_as`, mode set), `manifest.json`, and
//! `deploy-<service>.json` (the spec it was activated with, so a later rollback can start it again);
//! `services/<service>/current` → `../../releases/<digest>`.

use cascade_core::{DeploySpec, Digest, Manifest, ServiceName};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// One artifact this host is receiving or holds.
#[derive(Debug)]
pub struct Download {
    /// What it must be.
    pub manifest: Manifest,
    /// Where the bytes are (incoming file, then the release's file after activation).
    pub path: PathBuf,
    file: File,
    verified: Vec<bool>,
}

impl Download {
    /// Whether chunk `index` is held and verified.
    pub fn has(&self, index: u32) -> bool {
        self.verified.get(index as usize).copied().unwrap_or(false)
    }

    /// Verified chunk indexes.
    pub fn held(&self) -> Vec<u32> {
        (0..self.verified.len() as u32).filter(|i| self.has(*i)).collect()
    }

    /// Every chunk verified.
    pub fn complete(&self) -> bool {
        self.verified.iter().all(|v| *v)
    }

    /// Reads a verified chunk (for serving it to a peer).
    pub fn read_chunk(&self, index: u32) -> std::io::Result<Vec<u8>> {
        if !self.has(index) {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("chunk {index} not held")));
        }
        let range = self.manifest.chunk_range(index as u64).map_err(std::io::Error::other)?;
        let mut bytes = vec![0u8; (range.end - range.start) as usize];
        self.file.read_exact_at(&mut bytes, range.start)?;
        Ok(bytes)
    }

    /// Checks `bytes` against the manifest and writes them at the chunk's offset.
    pub fn write_chunk(&mut self, index: u32, bytes: &[u8]) -> Result<(), ChunkWriteError> {
        if !fault_injection::trusts_unverified_bytes() {
            self.manifest.verify_chunk(index as u64, bytes).map_err(ChunkWriteError::Bad)?;
        }
        let range = self.manifest.chunk_range(index as u64).map_err(ChunkWriteError::Bad)?;
        self.file.write_all_at(bytes, range.start).map_err(ChunkWriteError::Io)?;
        self.verified[index as usize] = true;
        Ok(())
    }
}

/// Why a received chunk was not kept.
#[derive(Debug, thiserror::Error)]
pub enum ChunkWriteError {
    /// It does not match the manifest (the sender is to blame).
    #[error("{0}")]
    Bad(cascade_core::ManifestError),
    /// The local disk failed (this host is to blame).
    #[error("disk: {0}")]
    Io(std::io::Error),
}

/// All of a host's releases and downloads.
#[derive(Debug)]
pub struct Releases {
    root: PathBuf,
    keep: usize,
    // Ordered: chunk reuse reads kept releases in the same order every run (the simulation replays it).
    downloads: BTreeMap<Digest, Download>,
}

impl Releases {
    /// Opens (creating) the layout under `root`, keeping `keep` releases per host.
    pub fn open(root: &Path, keep: usize) -> std::io::Result<Self> {
        for dir in ["incoming", "releases", "services"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(Self { root: root.to_path_buf(), keep: keep.max(2), downloads: BTreeMap::new() })
    }

    fn release_dir(&self, digest: &Digest) -> PathBuf {
        self.root.join("releases").join(digest.as_str())
    }

    /// The artifact file of an installed release: its one regular file besides `manifest.json` and the
    /// `deploy-*.json` specs (several names of one service-shared release are hard links of one file).
    fn release_file(dir: &Path) -> Option<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name != "manifest.json" && !name.starts_with("deploy-") && !name.starts_with('.')
            })
            .collect();
        files.sort();
        files.into_iter().next()
    }

    /// The spec `service` was last activated with from the release `dir` (none for a release installed
    /// before specs were recorded).
    pub fn recorded_spec(dir: &Path, service: &ServiceName) -> Option<DeploySpec> {
        let bytes = std::fs::read(dir.join(format!("deploy-{service}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The download or release of `digest`, if this host has started or finished it.
    pub fn get(&self, digest: &Digest) -> Option<&Download> {
        self.downloads.get(digest)
    }

    /// Mutable access for writing chunks.
    pub fn get_mut(&mut self, digest: &Digest) -> Option<&mut Download> {
        self.downloads.get_mut(digest)
    }

    /// Gets ready to receive `manifest`: a kept release is complete at once; otherwise the incoming file is
    /// preallocated, chunks already in it are re-verified (a restarted host resumes), and chunks that an
    /// earlier release shares are copied locally. Returns `(held chunks, chunks reused from other releases)`.
    pub fn prepare(&mut self, manifest: &Manifest) -> std::io::Result<(Vec<u32>, u32)> {
        let digest = manifest.digest.clone();
        if let Some(existing) = self.downloads.get(&digest) {
            return Ok((existing.held(), 0));
        }
        let chunks = manifest.chunk_count() as usize;
        if let Some(release_file) = Self::release_file(&self.release_dir(&digest)) {
            let file = File::open(&release_file)?;
            let download =
                Download { manifest: manifest.clone(), path: release_file, file, verified: vec![true; chunks] };
            let held = download.held();
            self.downloads.insert(digest, download);
            return Ok((held, 0));
        }
        let path = self.root.join("incoming").join(format!("{digest}.part"));
        // Only a file an earlier run left behind can hold chunks: scanning a fresh one would read and hash
        // the whole artifact's worth of zeros before the first fetch (seconds for a large artifact).
        let resuming = std::fs::metadata(&path).is_ok_and(|m| m.len() > 0);
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        file.set_len(manifest.total_size)?;
        let mut download = Download { manifest: manifest.clone(), path, file, verified: vec![false; chunks] };
        // Resume: whatever a previous run of this host wrote and still verifies is kept.
        if resuming {
            for index in 0..chunks as u32 {
                let range = manifest.chunk_range(index as u64).map_err(std::io::Error::other)?;
                let mut bytes = vec![0u8; (range.end - range.start) as usize];
                if download.file.read_exact_at(&mut bytes, range.start).is_ok()
                    && manifest.verify_chunk(index as u64, &bytes).is_ok()
                {
                    download.verified[index as usize] = true;
                }
            }
        }
        // Reuse: chunks with the same hash in a kept release are copied, not fetched.
        let mut reused = 0;
        let wanted: BTreeMap<&Digest, Vec<u32>> =
            manifest.chunks.iter().enumerate().fold(BTreeMap::new(), |mut m, (i, h)| {
                if !download.verified[i] {
                    m.entry(h).or_default().push(i as u32);
                }
                m
            });
        for other in self.downloads.values().filter(|d| d.complete()) {
            for (index, hash) in other.manifest.chunks.iter().enumerate() {
                let Some(targets) = wanted.get(hash) else { continue };
                let Ok(bytes) = other.read_chunk(index as u32) else { continue };
                for target in targets {
                    if !download.has(*target) && download.write_chunk(*target, &bytes).is_ok() {
                        reused += 1;
                    }
                }
            }
        }
        let held = download.held();
        self.downloads.insert(digest, download);
        Ok((held, reused))
    }

    /// Loads the kept releases' manifests at start, so they serve as rollback targets and chunk sources.
    pub fn load_kept(&mut self) -> std::io::Result<()> {
        let mut dirs = Vec::new();
        for entry in std::fs::read_dir(self.root.join("releases"))? {
            dirs.push(entry?.path());
        }
        // In name order, not the directory's: the same on every run.
        dirs.sort();
        for dir in dirs {
            let Ok(bytes) = std::fs::read(dir.join("manifest.json")) else { continue };
            let Ok(manifest) = Manifest::from_json(&bytes) else { continue };
            let _ = self.prepare(&manifest)?;
        }
        Ok(())
    }

    /// Verifies the whole digest, installs the release as `spec` says (file name and mode), records the
    /// spec, and switches `services/<service>/current` to it atomically. Returns the release directory. The
    /// previous release stays until pruned.
    pub fn install(&mut self, service: &ServiceName, digest: &Digest, spec: &DeploySpec) -> Result<PathBuf, String> {
        let download = self.downloads.get(digest).ok_or_else(|| format!("no download of {digest}"))?;
        if !download.complete() {
            return Err(format!("{digest} is not complete"));
        }
        let mut hasher = blake3::Hasher::new();
        let file = File::open(&download.path).map_err(|e| format!("cannot read {}: {e}", download.path.display()))?;
        hasher.update_reader(file).map_err(|e| format!("cannot read {}: {e}", download.path.display()))?;
        let actual = cascade_core::manifest::digest_of(hasher.finalize());
        if &actual != digest && !fault_injection::trusts_unverified_bytes() {
            return Err(format!("whole-file digest {actual} does not match {digest}; not activated"));
        }
        let release = self.release_dir(digest);
        let artifact = release.join(&spec.install_as);
        let disk = |what: &str, e: std::io::Error| format!("cannot {what} in {}: {e}", release.display());
        if download.path != artifact {
            std::fs::create_dir_all(&release).map_err(|e| disk("create the release", e))?;
            if download.path.parent() == Some(release.as_path()) {
                // Installed before under another name (another service's spec): one more name, same bytes.
                let _ = std::fs::remove_file(&artifact);
                std::fs::hard_link(&download.path, &artifact).map_err(|e| disk("link the artifact", e))?;
            } else {
                std::fs::write(release.join("manifest.json"), download.manifest.to_json())
                    .map_err(|e| disk("write the manifest", e))?;
                std::fs::rename(&download.path, &artifact).map_err(|e| disk("move the artifact", e))?;
                // Reopened read-only: while this process holds it open for writing, executing the installed
                // file fails with ETXTBSY ("Text file busy"). A complete download is never written again.
                let read_only = File::open(&artifact).map_err(|e| disk("reopen the artifact", e))?;
                if let Some(d) = self.downloads.get_mut(digest) {
                    d.path = artifact.clone();
                    d.file = read_only;
                }
            }
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&artifact, std::fs::Permissions::from_mode(spec.mode))
            .map_err(|e| disk("set the artifact's mode", e))?;
        let spec_json = serde_json::to_vec_pretty(spec).map_err(|e| e.to_string())?;
        std::fs::write(release.join(format!("deploy-{service}.json")), spec_json)
            .map_err(|e| disk("record the deploy spec", e))?;
        Ok(release)
    }

    /// The release `services/<service>/current` points at, if any.
    pub fn current(&self, service: &ServiceName) -> Option<PathBuf> {
        std::fs::read_link(self.root.join("services").join(service.as_str()).join("current")).ok()
    }

    /// Points `services/<service>/current` at `release` (an installed release directory) atomically, or
    /// removes the link when `release` is none (a first deploy that failed leaves no `current`).
    pub fn switch(&self, service: &ServiceName, release: Option<&Path>) -> Result<(), String> {
        let service_dir = self.root.join("services").join(service.as_str());
        let link = service_dir.join("current");
        let Some(release) = release else {
            return match std::fs::remove_file(&link) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("cannot remove {}: {e}", link.display())),
            };
        };
        let digest = release.file_name().and_then(|n| n.to_str()).unwrap_or("release");
        std::fs::create_dir_all(&service_dir).map_err(|e| e.to_string())?;
        let staged = service_dir.join(format!(".current-{digest}"));
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(release, &staged).map_err(|e| e.to_string())?;
        // rename(2) over the old link is atomic: a reader sees the old release or the new one, never neither.
        std::fs::rename(&staged, &link).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Deletes releases beyond the newest `keep` (never one a `current` link points at).
    pub fn prune(&mut self) {
        let mut in_use = Vec::new();
        if let Ok(services) = std::fs::read_dir(self.root.join("services")) {
            for service in services.flatten() {
                if let Ok(target) = std::fs::read_link(service.path().join("current")) {
                    in_use.push(target);
                }
            }
        }
        let Ok(entries) = std::fs::read_dir(self.root.join("releases")) else { return };
        let mut releases: Vec<(std::time::SystemTime, PathBuf)> =
            entries.flatten().filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path()))).collect();
        releases.sort();
        let excess = releases.len().saturating_sub(self.keep);
        for (_, path) in releases.into_iter().take(excess) {
            if in_use.contains(&path) {
                continue;
            }
            if let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| Digest::parse(n).ok()) {
                self.downloads.remove(&name);
            }
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Test-only bugs for the simulation's self-test; off unless the `fault-injection` feature is on.
pub mod fault_injection {
    #[cfg(feature = "fault-injection")]
    thread_local! {
        static TRUST_UNVERIFIED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Turns on (for this thread) a host that keeps received chunks without checking them against the
    /// manifest and activates without checking the whole file: the bug the simulation must catch.
    #[cfg(feature = "fault-injection")]
    pub fn trust_unverified_bytes(on: bool) {
        TRUST_UNVERIFIED.with(|t| t.set(on));
    }

    /// Whether the bug is on; always false without the feature.
    pub fn trusts_unverified_bytes() -> bool {
        #[cfg(feature = "fault-injection")]
        {
            TRUST_UNVERIFIED.with(|t| t.get())
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact() -> (Manifest, Vec<Vec<u8>>) {
        // No chunk of zeros: a hole in the preallocated file would verify as one.
        let chunks: Vec<Vec<u8>> = (1..=4u8).map(|fill| vec![fill; 64 * 1024]).collect();
        let mut builder = cascade_core::ManifestBuilder::new(64 * 1024).expect("chunk size");
        for chunk in &chunks {
            builder.push(chunk).expect("chunk");
        }
        (builder.finish(), chunks)
    }

    #[test]
    fn a_fresh_download_holds_nothing_and_a_restarted_one_resumes_its_verified_chunks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (manifest, chunks) = artifact();
        let mut releases = Releases::open(dir.path(), 3).expect("open");
        let (held, reused) = releases.prepare(&manifest).expect("prepare");
        assert!(held.is_empty() && reused == 0, "a new download starts empty: {held:?}");
        let download = releases.get_mut(&manifest.digest).expect("download");
        download.write_chunk(1, &chunks[1]).expect("chunk 1");
        download.write_chunk(3, &chunks[3]).expect("chunk 3");
        drop(releases);

        // A new process on the same data dir: the .part file is re-verified, chunk by chunk.
        let mut restarted = Releases::open(dir.path(), 3).expect("reopen");
        let (held, _) = restarted.prepare(&manifest).expect("prepare again");
        assert_eq!(held, vec![1, 3], "exactly the chunks written before the restart are kept");
    }

    #[test]
    fn a_release_is_installed_under_its_name_and_mode_and_runs_while_the_agent_holds_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let script = b"#!/bin/sh\necho installed and running\n".to_vec();
        let mut builder = cascade_core::ManifestBuilder::new(64 * 1024).expect("chunk size");
        builder.push(&script).expect("chunk");
        let manifest = builder.finish();
        let mut releases = Releases::open(dir.path(), 3).expect("open");
        releases.prepare(&manifest).expect("prepare");
        releases.get_mut(&manifest.digest).expect("download").write_chunk(0, &script).expect("chunk");
        let service = ServiceName::parse("hello").unwrap();
        let spec = DeploySpec { install_as: "hello".into(), mode: 0o750, ..DeploySpec::default() };
        let release = releases.install(&service, &manifest.digest, &spec).expect("install");
        releases.switch(&service, Some(&release)).expect("switch");
        let installed = dir.path().join("services/hello/current/hello");
        let mode = std::fs::metadata(&installed).expect("installed").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o750);
        assert_eq!(Releases::recorded_spec(&release, &service), Some(spec));
        // The agent still holds the file (to serve its chunks): executing it must not fail with ETXTBSY.
        let out = std::process::Command::new(&installed).output().expect("the installed file runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "installed and running\n");
        // A restarted agent finds the release under its name and serves it again.
        drop(releases);
        let mut again = Releases::open(dir.path(), 3).expect("reopen");
        again.load_kept().expect("load kept");
        assert!(again.get(&manifest.digest).is_some_and(Download::complete));
        releases_switch_back_and_forth(&again, &service, &release);
    }

    fn releases_switch_back_and_forth(releases: &Releases, service: &ServiceName, release: &Path) {
        releases.switch(service, None).expect("remove current");
        assert_eq!(releases.current(service), None);
        releases.switch(service, Some(release)).expect("switch back");
        assert_eq!(releases.current(service).as_deref(), Some(release));
    }
}
