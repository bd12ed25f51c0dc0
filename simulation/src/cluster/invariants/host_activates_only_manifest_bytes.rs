//! A host activates only bytes whose digest matches the manifest: whenever a host agent's
//! `services/<service>/current` points at a release, the release's artifact (under whatever name the
//! build's spec installs it as) hashes (BLAKE3, the manifest's own digest function) to the digest the
//! release is named for, and that digest is an artifact the cluster built (a committed success).
//!
//! Checked on every activation a host reports (its hook), and on a scan of every host's links at a bounded
//! cadence that hashes a release only when a link moved, so a switch that bypassed the hook is caught too.

use super::Violation;
use cascade_core::state::ArtifactRecord;
use cascade_core::{Digest, ServiceName};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const NAME: &str = "host_activates_only_manifest_bytes";

/// The release a host's `current` link of `service` points at, if any.
pub fn current(data_dir: &Path, service: &str) -> Option<PathBuf> {
    std::fs::read_link(data_dir.join("services").join(service).join("current")).ok()
}

/// The artifact in a release directory, whatever name its deploy spec installed it as (`install_as`): the
/// regular files besides `manifest.json` and the `deploy-<service>.json` specs (names a spec cannot take).
/// Usually one; a release two services' specs name differently holds one file under both names.
pub fn artifact_files(release: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(release) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_str().unwrap_or_default();
            name != "manifest.json" && !name.starts_with("deploy-") && !name.starts_with('.')
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// Links already checked: (host, service) → the release it pointed at.
#[derive(Default)]
pub struct Tracker {
    checked: BTreeMap<(String, String), PathBuf>,
    /// Releases hashed so far.
    pub hashed: u64,
}

impl Tracker {
    /// Checks `host`'s `current` link of `service` unless it still points where it did at the last check.
    pub fn check(
        &mut self,
        host: &str,
        data_dir: &Path,
        service: &ServiceName,
        built: &BTreeMap<Digest, ArtifactRecord>,
    ) -> Result<(), Violation> {
        let Some(release) = current(data_dir, service.as_str()) else { return Ok(()) };
        let key = (host.to_string(), service.to_string());
        if self.checked.get(&key) == Some(&release) {
            return Ok(());
        }
        let named = release.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let digest = Digest::parse(named).map_err(|e| {
            Violation::new(NAME, format!("{host}: {service} is current at {named:?}, not a digest: {e}"))
        })?;
        let files = artifact_files(&release);
        if files.is_empty() {
            return Err(Violation::new(
                NAME,
                format!("{host}: {service} is current at {digest}, which has no artifact"),
            ));
        }
        for file in files {
            let bytes = std::fs::read(&file).map_err(|e| {
                Violation::new(
                    NAME,
                    format!("{host}: {service} is current at {digest} but {} cannot be read: {e}", file.display()),
                )
            })?;
            self.hashed += 1;
            let actual = cascade_core::manifest::hash_bytes(&bytes);
            if actual != digest {
                return Err(Violation::new(
                    NAME,
                    format!(
                        "{host} activated {service} at {digest}, but the {} bytes it activated hash to {actual}",
                        bytes.len()
                    ),
                ));
            }
        }
        if !built.contains_key(&digest) {
            return Err(Violation::new(
                NAME,
                format!("{host} activated {service} at {digest}, which no build produced"),
            ));
        }
        self.checked.insert(key, release);
        Ok(())
    }
}
