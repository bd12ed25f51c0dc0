//! An automatic rollback restores the previous release: when generation `G` goes over its failure budget
//! with `on_failure = "rollback"`, the generation that rolls it back deploys the last known-good build
//! before `G` (the latest earlier generation with another build whose rollout completed; failing that,
//! one that neither failed nor was rolled back), and once that rollback's rollout has
//! ended complete, every host that had switched to `G`'s release runs the previous release again.
//!
//! The build is checked on every committed entry. The hosts are checked on the 250 ms scan of their
//! `current` links, for a cluster only once its manager's committed report of the rollback counts every
//! host the sim knows the deploy targets as active or failed and none offline: before that a host may
//! simply not have switched back yet. A host the report lists as failed is not held to it (its failed
//! switch put back what it ran). Only while the rollback is the service's current generation in the
//! committed state, which every replica a manager reads from is at or behind, so no newer deploy can have
//! moved the host on.

use super::Violation;
use cascade_core::rollout::{last_known_good, DeployOrigin, EndState};
use cascade_core::{ClusterName, Digest, Region, ServiceName, State};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const NAME: &str = "rollback_restores_previous";

/// After an entry: every current automatic rollback deploys the build the service ran before the
/// generation it rolls back.
pub fn check_build(state: &State, index: u64) -> Result<(), Violation> {
    for (service, rollback) in &state.desired {
        let DeployOrigin::AutoRollback { of } = rollback.origin else { continue };
        let history = state.deploy_history.get(service).map(Vec::as_slice).unwrap_or_default();
        let Some(failed) = history.iter().find(|d| d.generation == of) else {
            return Err(Violation::new(
                NAME,
                format!(
                    "entry {index}: {service} generation {} rolls back generation {of}, which was never deployed",
                    rollback.generation
                ),
            ));
        };
        if of + 1 != rollback.generation {
            return Err(Violation::new(
                NAME,
                format!(
                    "entry {index}: {service} generation {} rolls back generation {of}, not the one just before it",
                    rollback.generation
                ),
            ));
        }
        // Core's rule over the history as it stood before the failed generation.
        let before: Vec<_> = history.iter().filter(|d| d.generation < of).cloned().collect();
        let previous = last_known_good(&before, failed.build);
        if previous.map(|p| p.build) != Some(rollback.build) {
            let expected = previous.map_or_else(|| "none".to_string(), |p| format!("build {}", p.build));
            return Err(Violation::new(
                NAME,
                format!(
                    "entry {index}: {service} generation {} rolls generation {of} (build {}) back to build {}, but the last known-good build was {expected}",
                    rollback.generation, failed.build, rollback.build
                ),
            ));
        }
    }
    Ok(())
}

/// One host agent as the check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its cluster's region.
    pub region: &'a Region,
    /// Its cluster.
    pub cluster: &'a ClusterName,
    /// Its data dir (its `current` links).
    pub data_dir: &'a Path,
    /// Whether deploys of the service in question target it.
    pub targeted: bool,
}

/// The releases each host switched to, from the activations its hook reported.
#[derive(Debug, Default)]
pub struct Tracker {
    switched: BTreeMap<(String, ServiceName), BTreeSet<Digest>>,
}

impl Tracker {
    /// `host` switched `service` to `digest`.
    pub fn activated(&mut self, host: &str, service: &ServiceName, digest: &Digest) {
        self.switched.entry((host.to_string(), service.clone())).or_default().insert(digest.clone());
    }

    /// Every host that switched to a rolled-back generation's release runs the rollback's release, where
    /// the rollback completed and its manager counted every targeted host. `hosts(service)` lists them.
    pub fn check_hosts<'a>(
        &self,
        state: &State,
        hosts: impl Fn(&ServiceName) -> Vec<Host<'a>>,
    ) -> Result<(), Violation> {
        for (service, rollback) in &state.desired {
            let DeployOrigin::AutoRollback { of } = rollback.origin else { continue };
            if rollback.progress.end.as_ref().is_none_or(|e| e.state != EndState::Complete) {
                continue;
            }
            let history = state.deploy_history.get(service).map(Vec::as_slice).unwrap_or_default();
            let Some(failed) = history.iter().find(|d| d.generation == of) else { continue };
            let Some(reports) = state.rollouts.get(&(service.clone(), rollback.generation)) else { continue };
            let hosts = hosts(service);
            for ((region, cluster), report) in reports {
                let targeted: Vec<&Host<'_>> =
                    hosts.iter().filter(|h| h.targeted && h.region == region && h.cluster == cluster).collect();
                let counts = &report.counts;
                if counts.offline > 0 || counts.active + counts.failed != targeted.len() as u64 {
                    continue;
                }
                for host in targeted {
                    let key = (host.name.to_string(), service.clone());
                    if !self.switched.get(&key).is_some_and(|d| d.contains(&failed.artifact.digest)) {
                        continue;
                    }
                    if report.failures.hosts.iter().any(|f| f.host == host.name) {
                        continue;
                    }
                    let current = super::host_activates_only_manifest_bytes::current(host.data_dir, service.as_str());
                    let runs = current.as_ref().and_then(|p| p.file_name()).and_then(|n| n.to_str());
                    if runs != Some(rollback.artifact.digest.as_str()) {
                        return Err(Violation::new(
                            NAME,
                            format!(
                                "{} switched {service} to generation {of} ({}); its rollback, generation {} ({}), completed and {region}/{cluster} reported all {} hosts active or failed, yet it runs {}",
                                host.name,
                                failed.artifact.digest,
                                rollback.generation,
                                rollback.artifact.digest,
                                counts.active + counts.failed,
                                runs.unwrap_or("nothing")
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
