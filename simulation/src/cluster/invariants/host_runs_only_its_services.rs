//! A host runs only its services: no host agent ever holds or activates a release of a service its config
//! does not list. The manager sends a deploy's `Prepare` (so every chunk) and `Activate` only to the hosts
//! the deploy targets (`HostDeclaration::runs`); a host the manager sends another service's deploy to
//! downloads it into `incoming/` even though it then refuses the `Activate`, so holding is checked too.
//!
//! Holds: a download (`incoming/<digest>.part`) or a release (`releases/<digest>/`) whose digest only builds
//! of other services produced. Two services may build identical bytes, so a digest that a build of one of
//! the host's services also produced is the host's to hold. A digest no committed build produced is not
//! attributed to any service (whether its bytes were built at all is `host_activates_only_manifest_bytes`'
//! check when it is activated). Activates: every activation the host's hook reports is of one of its
//! services, and it has no `services/<service>/current` link of any other service.
//!
//! Only directory and link names are read, never file contents, so it runs on every scan of the links.

use super::Violation;
use cascade_core::{Digest, JobStatus, ServiceName, State};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const NAME: &str = "host_runs_only_its_services";

/// Which services' builds produced each digest, from the committed jobs that succeeded.
pub fn services_by_digest(state: &State) -> BTreeMap<Digest, BTreeSet<ServiceName>> {
    let mut built: BTreeMap<Digest, BTreeSet<ServiceName>> = BTreeMap::new();
    for job in state.jobs.values() {
        if let JobStatus::Succeeded { artifact } = &job.status {
            built.entry(artifact.digest.clone()).or_default().insert(job.service.clone());
        }
    }
    built
}

fn names(runs: &BTreeSet<ServiceName>) -> Vec<&str> {
    runs.iter().map(|s| s.as_str()).collect()
}

/// An activation `host` reported: `service` must be one it runs.
pub fn check_activation(
    host: &str,
    runs: &BTreeSet<ServiceName>,
    service: &ServiceName,
    digest: &Digest,
) -> Result<(), Violation> {
    if runs.contains(service) {
        return Ok(());
    }
    Err(Violation::new(NAME, format!("{host} activated {service} at {digest}, but it runs only {:?}", names(runs))))
}

/// Everything `host` holds and links under `data_dir`: every digest it holds was built for one of the
/// services it runs (or for none known), and every `current` link is of a service it runs.
pub fn check_files(
    host: &str,
    data_dir: &Path,
    runs: &BTreeSet<ServiceName>,
    built: &BTreeMap<Digest, BTreeSet<ServiceName>>,
) -> Result<(), Violation> {
    for (dir, suffix) in [("incoming", ".part"), ("releases", "")] {
        for name in entry_names(&data_dir.join(dir)) {
            let Some(digest) = name.strip_suffix(suffix).and_then(|d| Digest::parse(d).ok()) else { continue };
            let Some(services) = built.get(&digest) else { continue };
            if services.is_disjoint(runs) {
                let of: Vec<&str> = services.iter().map(|s| s.as_str()).collect();
                return Err(Violation::new(
                    NAME,
                    format!("{host} holds {dir}/{name}, the artifact of {of:?}, but it runs only {:?}", names(runs)),
                ));
            }
        }
    }
    for service in entry_names(&data_dir.join("services")) {
        let linked = std::fs::symlink_metadata(data_dir.join("services").join(&service).join("current")).is_ok();
        if linked && !runs.iter().any(|s| s.as_str() == service) {
            return Err(Violation::new(
                NAME,
                format!("{host} has services/{service}/current, but it runs only {:?}", names(runs)),
            ));
        }
    }
    Ok(())
}

/// The names in `dir`, sorted (none if it does not exist yet: a host that has not started).
fn entry_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}
