//! A host activates a release only when its wave is open in the committed state, and a wave opens only
//! after the one before it baked.
//!
//! Activation: every activation a host agent's hook reports, of `service` at `digest`, must be admitted
//! by some generation of the service with that digest (a build deployed twice has two generations), by the
//! waves the committed state had opened when the activation was seen: the host is among the first
//! `admitted` of its cluster's targeted hosts in `wave_rank` order, `admitted` being the open waves' sizes
//! added up (every host once the rollout completed). The checker reads the rule from the policy and the
//! progress itself rather than through `cascade_core::rollout::admitted`, so a wrong `admitted` is caught
//! too. Committed state only grows waves, so a state seen just after the activation is no laxer than one
//! seen at it, while an entry the manager cannot have read yet is at most one step (2 ms) younger. Automatic
//! rollbacks have their own policy (one wave of every host) and are held to it like any other generation.
//!
//! Bake: on every committed entry, a wave `k > 0` of a policy with `bake_secs` that opens must open at least
//! `bake_secs` after wave `k - 1` was found healthy (`healthy_since`), both in committed time (the entries'
//! own timestamps, which the gate also decides by, so clock skew between leaders cannot fake a breach).

use super::Violation;
use cascade_core::rollout::{admitted, wave_rank};
use cascade_core::{ClusterName, Digest, Region, ServiceName, State, UnixMillis};
use std::collections::BTreeMap;

const NAME: &str = "wave_order";

/// One cluster's hosts that a deploy of the service targets, by name: the hosts the manager ranks.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'a> {
    /// Its region.
    pub region: &'a Region,
    /// The cluster.
    pub cluster: &'a ClusterName,
    /// Every host of the cluster the deploy targets, online or not.
    pub targeted: &'a [String],
}

/// `host`'s place (from 0) among `targeted` in `generation`'s wave order, as every manager ranks them.
fn rank(host: &str, targeted: &[String], generation: u64) -> Option<usize> {
    let mut ranked: Vec<(u64, &str)> = targeted.iter().map(|h| (wave_rank(h, generation), h.as_str())).collect();
    ranked.sort_unstable();
    ranked.iter().position(|(_, h)| *h == host)
}

/// An activation of `service` at `digest` that `host` of `cluster` reported, against the committed `state`.
pub fn check_activation(
    state: &State,
    host: &str,
    cluster: &Cluster<'_>,
    service: &ServiceName,
    digest: &Digest,
) -> Result<(), Violation> {
    let generations: Vec<_> = state
        .deploy_history
        .get(service)
        .map(|h| h.iter().filter(|d| &d.artifact.digest == digest).collect())
        .unwrap_or_default();
    let mut seen = Vec::new();
    for version in &generations {
        let hosts = cluster.targeted.len() as u64;
        let admitted = admitted(&version.policy, &version.progress, cluster.region, cluster.cluster, hosts) as usize;
        let place = rank(host, cluster.targeted, version.generation);
        if place.is_some_and(|p| p < admitted) {
            return Ok(());
        }
        seen.push(format!(
            "generation {} ({} of {} waves open, {admitted} of {hosts} hosts admitted, {host} ranks {})",
            version.generation,
            version.progress.opened.len(),
            version.policy.waves.len(),
            place.map_or_else(|| "nowhere".to_string(), |p| (p + 1).to_string())
        ));
    }
    if generations.is_empty() {
        seen.push("no generation of the service deploys that digest".into());
    }
    Err(Violation::new(
        NAME,
        format!(
            "{host} in {}/{} activated {service} at {digest}, which no open wave admits it to: {}",
            cluster.region,
            cluster.cluster,
            seen.join("; ")
        ),
    ))
}

/// What the last entry left of each service's current rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    generation: u64,
    opened: usize,
    healthy_since: Option<UnixMillis>,
}

/// Follows every service's current rollout entry by entry, for the bake.
#[derive(Debug, Default)]
pub struct Bakes {
    seen: BTreeMap<ServiceName, Seen>,
    /// Waves seen opening since the last [`Bakes::take_opened`], in words, for the trace.
    opened: Vec<String>,
}

impl Bakes {
    /// After the entry at `index` was applied to `state`: a wave that just opened opened after the one
    /// before it baked.
    pub fn check(&mut self, state: &State, index: u64) -> Result<(), Violation> {
        for (service, version) in &state.desired {
            let progress = &version.progress;
            let now = Seen {
                generation: version.generation,
                opened: progress.opened.len(),
                healthy_since: progress.healthy_since,
            };
            let before = self.seen.insert(service.clone(), now);
            let Some(before) = before.filter(|b| b.generation == now.generation && b.opened < now.opened) else {
                continue;
            };
            self.opened.push(format!(
                "{service} generation {} wave {} of {} opened",
                version.generation,
                now.opened,
                version.policy.waves.len()
            ));
            let bake_ms = version.policy.bake_secs.saturating_mul(1000);
            if before.opened == 0 || bake_ms == 0 {
                continue;
            }
            let waves = format!("{service} generation {}", version.generation);
            if now.opened > before.opened + 1 {
                return Err(Violation::new(
                    NAME,
                    format!("entry {index}: {waves} opened waves {} to {} at once", before.opened + 1, now.opened),
                ));
            }
            let opened_at = progress.opened[now.opened - 1].at;
            let baked = before.healthy_since.map(|since| opened_at.saturating_since(since));
            if baked.is_none_or(|ms| ms < bake_ms) {
                let how = baked.map_or_else(|| "before it was found healthy".to_string(), |ms| format!("{ms} ms"));
                return Err(Violation::new(
                    NAME,
                    format!(
                        "entry {index}: {waves} opened wave {} after wave {} baked {how}, not bake_secs = {}",
                        now.opened, before.opened, version.policy.bake_secs
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The waves seen opening since the last call.
    pub fn take_opened(&mut self) -> Vec<String> {
        std::mem::take(&mut self.opened)
    }

    /// Forgets what was seen: the checker adopted a replica's state, so entries were skipped.
    pub fn forget(&mut self) {
        self.seen.clear();
    }
}
