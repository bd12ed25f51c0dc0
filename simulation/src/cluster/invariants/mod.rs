//! The safety invariants, checked after every simulation step. One module per invariant, each named for
//! what it protects.
//!
//! The [`Checker`] rebuilds the *committed sequence* independently of any one node: it reads each next
//! entry from the log of a replica that has already applied it (applied implies committed), applies it to
//! its own `cascade_core::State` (the shadow) and checks the entry-level invariants around that apply. Each
//! live replica is then held to the shadow: same entry at its applied index, same state there.

pub mod acknowledged_build_never_lost;
pub mod desired_generation_grows;
pub mod halted_rollout_activates_nothing_new;
pub mod host_activates_only_manifest_bytes;
pub mod host_runs_only_its_services;
pub mod leader_completeness;
pub mod log_matching;
pub mod no_stale_lease_result;
pub mod rollback_restores_previous;
pub mod single_running_attempt;
pub mod terminal_states_final;
pub mod wave_order;

use super::world::World;
use cascade_core::rollout::{DeployOrigin, EndState};
use cascade_core::{ClusterName, Region, State};
use cascade_raft_node::types::{Entry, LogId, NodeId};
use openraft::{EntryPayload, ServerState, Vote};
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};

/// A broken invariant: which one, and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's module name.
    pub invariant: &'static str,
    /// What happened.
    pub detail: String,
}

impl Violation {
    /// A violation of `invariant`.
    pub fn new(invariant: &'static str, detail: impl Into<String>) -> Self {
        Self { invariant, detail: detail.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invariant {} violated: {}", self.invariant, self.detail)
    }
}

/// A digest of a state, to compare replicas without keeping every state.
pub fn digest(state: &State) -> u64 {
    let mut hasher = DefaultHasher::new();
    match bincode::serialize(state) {
        Ok(bytes) => bytes.hash(&mut hasher),
        Err(e) => e.to_string().hash(&mut hasher),
    }
    hasher.finish()
}

/// What was last seen of one replica.
#[derive(Default, Clone, PartialEq, Eq)]
struct Seen {
    applied: Option<LogId>,
    role: Option<ServerState>,
    term: u64,
    snapshot: Option<LogId>,
    /// The vote its disk held when this incarnation was first seen: the one openraft restores it with.
    restored_vote: Option<Vote<NodeId>>,
}

/// Counts for the run's summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CheckStats {
    /// Committed entries applied to the shadow and checked.
    pub entries: u64,
    /// Replica states compared with the shadow.
    pub comparisons: u64,
    /// Snapshots replicas built or installed.
    pub snapshots: u64,
    /// Of those, snapshots a replica installed from the leader (its applied index jumped to the snapshot).
    pub installed: u64,
    /// Times the shadow had to adopt a replica's state because no log held the next entry any more.
    pub resyncs: u64,
    /// Host activations reported (each checked).
    pub activations: u64,
    /// Releases hashed by `host_activates_only_manifest_bytes`.
    pub releases_hashed: u64,
    /// Rollout waves the committed state opened (over every generation).
    pub waves_opened: u64,
    /// Rollouts that ended complete.
    pub rollouts_complete: u64,
    /// Rollouts that ended failed (halted) or aborted.
    pub rollouts_halted: u64,
    /// Automatic rollbacks deployed.
    pub auto_rollbacks: u64,
}

/// Checks every invariant as the run goes.
#[derive(Default)]
pub struct Checker {
    shadow: State,
    shadow_index: u64,
    history: log_matching::History,
    seen: BTreeMap<String, Seen>,
    attempts: single_running_attempt::Tracker,
    terminal: terminal_states_final::Tracker,
    desired: desired_generation_grows::Tracker,
    releases: host_activates_only_manifest_bytes::Tracker,
    bakes: wave_order::Bakes,
    ended: halted_rollout_activates_nothing_new::Tracker,
    switched: rollback_restores_previous::Tracker,
    stats: CheckStats,
}

/// Most committed entries fed to the shadow in one step, so one check is bounded however far replicas ran.
const MAX_FEED_PER_STEP: usize = 100_000;

impl Checker {
    /// A checker that has seen nothing yet.
    pub fn new() -> Self {
        let mut checker = Self::default();
        checker.history.record(0, None, digest(&checker.shadow));
        checker
    }

    /// The committed state as far as it has been checked.
    pub fn shadow(&self) -> &State {
        &self.shadow
    }

    /// Index of the last committed entry checked.
    pub fn shadow_index(&self) -> u64 {
        self.shadow_index
    }

    /// Counts so far.
    pub fn stats(&self) -> CheckStats {
        let mut stats = self.stats;
        for version in self.shadow.deploy_history.values().flatten() {
            stats.waves_opened += version.progress.opened.len() as u64;
            match version.progress.end.as_ref().map(|e| e.state) {
                Some(EndState::Complete) => stats.rollouts_complete += 1,
                Some(EndState::Failed | EndState::Aborted) => stats.rollouts_halted += 1,
                _ => {}
            }
            if matches!(version.origin, DeployOrigin::AutoRollback { .. }) {
                stats.auto_rollbacks += 1;
            }
        }
        stats
    }

    /// Looks at every live replica after a step: records role changes in the trace and checks everything.
    pub fn observe(&mut self, world: &mut World, now: std::time::Duration) -> Result<(), Violation> {
        let mut events = Vec::new();
        let mut replicas = Vec::new();
        for slot in &world.nodes {
            let Some(node) = &slot.node else {
                // Down: whatever it was, the next incarnation starts unseen.
                self.seen.remove(&slot.name);
                continue;
            };
            let (role, term, leader_id, snapshot, vote) = {
                let m = node.raft.metrics();
                let m = m.borrow();
                (m.state, m.current_term, m.current_leader, m.snapshot, m.vote)
            };
            let applied = node.read(|v| v.last_applied);
            let seen = self.seen.entry(slot.name.clone()).or_default();
            if seen.role != Some(role) || seen.term != term {
                events.push((slot.name.clone(), format!("{role:?} in term {term} (leader {leader_id:?})")));
            }
            if seen.role.is_none() {
                seen.restored_vote = slot.disk.vote();
            }
            // Elected since the last step: seen as another role (or in another term) in this incarnation. A
            // node that leads under the committed vote it restarted with was restored as a stale leader, not
            // elected, even when its first metrics showed a follower in term 0 (seed 2429).
            let restored_leader = vote.is_committed() && seen.restored_vote == Some(vote);
            let elected = role == ServerState::Leader
                && seen.role.is_some()
                && (seen.role != Some(role) || seen.term != term)
                && !restored_leader;
            if elected {
                leader_completeness::check(&slot.name, &vote, &slot.disk, &self.history, self.shadow_index)?;
            }
            let changed = seen.applied != applied || seen.role.is_none();
            if seen.role.is_some() && snapshot.is_some() && snapshot != seen.snapshot {
                self.stats.snapshots += 1;
                let index = |l: Option<LogId>| l.map_or(0, |l| l.index);
                if role != ServerState::Leader && snapshot == applied && index(applied) > index(seen.applied) + 1 {
                    self.stats.installed += 1;
                    events.push((slot.name.clone(), format!("installed a snapshot at index {}", index(snapshot))));
                }
            }
            *seen = Seen { applied, role: Some(role), term, snapshot, restored_vote: seen.restored_vote };
            replicas.push((slot.name.clone(), node.clone(), slot.disk.clone(), applied, changed));
        }
        for (host, event) in events {
            world.trace.push(now, &host, event);
        }
        // Feed the shadow up to the furthest replica, entry by entry, from any log that still holds it.
        let fed_from = self.shadow_index;
        let target = replicas.iter().map(|r| r.3.map_or(0, |l| l.index)).max().unwrap_or(0);
        for _ in 0..MAX_FEED_PER_STEP {
            if self.shadow_index >= target {
                break;
            }
            let next = self.shadow_index + 1;
            let entry = replicas.iter().filter(|r| r.3.is_some_and(|l| l.index >= next)).find_map(|r| r.2.entry(next));
            match entry {
                Some(entry) => self.apply(entry)?,
                None => {
                    // Purged behind a snapshot everywhere: adopt the least advanced replica that is past it.
                    let Some((name, node, _, applied, _)) = replicas
                        .iter()
                        .filter(|r| r.3.is_some_and(|l| l.index >= next))
                        .min_by_key(|r| r.3.map_or(0, |l| l.index))
                    else {
                        break;
                    };
                    self.shadow = node.read(|v| v.state.clone());
                    self.shadow_index = applied.map_or(0, |l| l.index);
                    self.history.record(self.shadow_index, *applied, digest(&self.shadow));
                    self.stats.resyncs += 1;
                    self.bakes.forget();
                    world.trace.push(now, "sim", format!("shadow adopted {name}'s state at {}", self.shadow_index));
                }
            }
        }
        if self.shadow_index != fed_from {
            for event in self.bakes.take_opened().into_iter().chain(self.ended.note(&self.shadow, now)) {
                world.trace.push(now, "sim", event);
            }
        }
        for (name, node, _, applied, changed) in &replicas {
            if !changed {
                continue;
            }
            let replica_digest = node.read(|v| digest(&v.state));
            if self.history.check(name, *applied, replica_digest)? {
                self.stats.comparisons += 1;
            }
        }
        acknowledged_build_never_lost::check(&self.shadow, &world.acked_submits, false)?;
        self.desired.check_acked(&world.acked_deploys)?;
        Ok(())
    }

    /// Checks the host agents' activations since the last step, and with `scan` every host's `current`
    /// links (a release is hashed only when its link moved).
    pub fn observe_agents(&mut self, world: &mut World, now: std::time::Duration, scan: bool) -> Result<(), Violation> {
        let pending = match world.activations.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => Vec::new(),
        };
        // Most steps have neither: skip the lookups below, which every step would otherwise pay.
        if pending.is_empty() && !scan {
            return Ok(());
        }
        let regions: Vec<Region> =
            world.nodes.iter().filter(|n| !n.voter).map(|n| super::agents::region_of(&n.name)).collect();
        let cluster = ClusterName::parse(super::agents::CLUSTER).map_err(|e| Violation::new("sim", e.to_string()))?;
        for activation in pending {
            let Some(slot) = world.agents.get(activation.agent) else { continue };
            let (name, dir, runs) = (slot.name.clone(), slot.data_dir.clone(), slot.services.clone());
            let region_index = slot.region;
            self.stats.activations += 1;
            let short = super::agents::short(&activation.digest);
            world.trace.push(now, &name, format!("activated {} at {short}", activation.service));
            host_runs_only_its_services::check_activation(&name, &runs, &activation.service, &activation.digest)?;
            self.releases.check(&name, &dir, &activation.service, &self.shadow.artifacts)?;
            if let Some(region) = regions.get(region_index) {
                // Every deploy has the default spec (no placement), so the hosts that run the service are
                // the ones it targets.
                let targeted: Vec<String> = world
                    .agents
                    .iter()
                    .filter(|a| !a.manager && a.region == region_index && a.services.contains(&activation.service))
                    .map(|a| a.name.clone())
                    .collect();
                let place = wave_order::Cluster { region, cluster: &cluster, targeted: &targeted };
                wave_order::check_activation(&self.shadow, &name, &place, &activation.service, &activation.digest)?;
            }
            self.ended.check_activation(&self.shadow, &name, &activation.service, &activation.digest, now)?;
            self.switched.activated(&name, &activation.service, &activation.digest);
        }
        if scan {
            let hosts = |service: &cascade_core::ServiceName| {
                world
                    .agents
                    .iter()
                    .filter(|a| !a.manager)
                    .filter_map(|a| {
                        Some(rollback_restores_previous::Host {
                            name: &a.name,
                            region: regions.get(a.region)?,
                            cluster: &cluster,
                            data_dir: &a.data_dir,
                            targeted: a.services.contains(service),
                        })
                    })
                    .collect()
            };
            self.switched.check_hosts(&self.shadow, hosts)?;
            let built = host_runs_only_its_services::services_by_digest(&self.shadow);
            for slot in world.agents.iter().filter(|a| !a.manager) {
                host_runs_only_its_services::check_files(&slot.name, &slot.data_dir, &slot.services, &built)?;
                for service in self.shadow.desired.keys() {
                    self.releases.check(&slot.name, &slot.data_dir, service, &self.shadow.artifacts)?;
                }
            }
        }
        self.stats.releases_hashed = self.releases.hashed;
        Ok(())
    }

    fn apply(&mut self, entry: Entry) -> Result<(), Violation> {
        let index = entry.log_id.index;
        if let EntryPayload::Normal(request) = &entry.payload {
            let stale = no_stale_lease_result::stale_reason(&self.shadow, request);
            let result = self.shadow.apply(request);
            no_stale_lease_result::check(stale, request, &result, index)?;
            self.attempts.check(&self.shadow, request, &result, index)?;
            self.terminal.check(&self.shadow, index)?;
            self.desired.check(&self.shadow, index)?;
            self.bakes.check(&self.shadow, index)?;
            rollback_restores_previous::check_build(&self.shadow, index)?;
        }
        self.shadow_index = index;
        self.history.record(index, Some(entry.log_id), digest(&self.shadow));
        self.stats.entries += 1;
        Ok(())
    }
}
