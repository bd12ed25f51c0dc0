//! Where a rollout stands, and the one rule that moves it on.
//!
//! The gate lives in the replicated state: [`decide`] reads a rollout's policy, its progress and the
//! latest counts each cluster's manager reported, and answers the next [`RolloutStep`] (open a wave,
//! start its bake, wait for approval, complete, halt, roll back) or nothing. The leader's rollout
//! controller asks it to know when to propose `StepRollout`; the state machine asks it again when it
//! applies that command, so the step taken is the one the committed state implies, on every replica.
//!
//! Managers read the progress from their learner and switch only the hosts [`admitted`] allows.

use super::policy::{RolloutPolicy, WaveSize};
use crate::deploy::MAX_REPORTED_FAILURES;
use crate::ids::{ClusterName, Region, UnixMillis};
use crate::state::{ClusterRollout, RolloutControl};
use serde::{Deserialize, Serialize};

/// How long the first wave waits for every known cluster's first report before it opens anyway, ms (its
/// `hosts` and `clusters` sizes are shared out by the clusters' reported sizes).
pub const FIRST_WAVE_GRACE_MS: u64 = 10_000;
/// A cluster whose manager lease lapsed this long ago is no longer expected to report (decommissioned), ms.
pub const CLUSTER_FORGOTTEN_AFTER_MS: u64 = 24 * 3600 * 1000;

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndState {
    /// Every targeted host of every cluster is healthy on the release (within the failure budget).
    Complete,
    /// Halted: over the failure budget with `on_failure = "halt"`, or no progress within the deadline.
    Failed,
    /// Over the failure budget: the previous build was deployed again (a new generation), or a deployer
    /// pressed Roll back.
    RolledBack,
    /// A deployer pressed Abort: nothing switches any more; hosts keep what they run.
    Aborted,
    /// Another deploy of the service started before this one ended.
    Superseded,
}

impl EndState {
    /// Lower-case name, as the API writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::RolledBack => "rolled back",
            Self::Aborted => "aborted",
            Self::Superseded => "superseded",
        }
    }
}

/// The end of a rollout, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutEnd {
    /// Which end.
    pub state: EndState,
    /// When (leader's clock).
    pub at: UnixMillis,
    /// Why, in words: which wave, which hosts, which budget.
    pub reason: String,
    /// Hosts named by the reason (failed or never reported), at most [`MAX_REPORTED_FAILURES`].
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// Hosts a `hosts` or `clusters` wave gave one cluster, fixed when the wave opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allotment {
    /// The cluster's region.
    pub region: Region,
    /// The cluster.
    pub cluster: ClusterName,
    /// Hosts added.
    pub hosts: u64,
}

/// A wave that opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenedWave {
    /// When its opening was committed: none of its hosts may switch before.
    pub at: UnixMillis,
    /// For `hosts` and `clusters` waves: what each cluster got.
    #[serde(default)]
    pub allotment: Vec<Allotment>,
    /// Failed hosts (all clusters) when it opened: the wave's own failures are the ones after.
    pub failed_before: u64,
    /// Hosts admitted (all clusters) before it opened.
    pub admitted_before: u64,
}

impl OpenedWave {
    fn allotted(&self, region: &Region, cluster: &ClusterName) -> u64 {
        self.allotment.iter().filter(|a| &a.region == region && &a.cluster == cluster).map(|a| a.hosts).sum()
    }
}

/// Where a rollout stands: part of its desired version, changed only by commands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutProgress {
    /// The waves opened so far, in order.
    pub opened: Vec<OpenedWave>,
    /// When the newest wave was first found healthy: its bake started then.
    #[serde(default)]
    pub healthy_since: Option<UnixMillis>,
    /// The next wave is manual and waits for Promote.
    #[serde(default)]
    pub awaiting_approval: bool,
    /// The last time a host made progress (or a wave opened, or the rollout resumed).
    pub last_progress_at: UnixMillis,
    /// Set once, when the rollout ends.
    #[serde(default)]
    pub end: Option<RolloutEnd>,
}

impl RolloutProgress {
    /// A rollout that has just been asked for at `now`.
    pub fn new(now: UnixMillis) -> Self {
        Self { last_progress_at: now, ..Self::default() }
    }

    /// Whether hosts may still switch to this release: it has not ended, or it ended complete (hosts that
    /// join later get it too).
    pub fn switching(&self) -> bool {
        self.end.as_ref().is_none_or(|e| e.state == EndState::Complete)
    }
}

/// One cluster as the gate sees it: known from its manager lease or its report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSnapshot<'a> {
    /// Its region.
    pub region: &'a Region,
    /// The cluster.
    pub cluster: &'a ClusterName,
    /// Its manager's latest report for this generation; none while it never reported one.
    pub report: Option<&'a ClusterRollout>,
}

impl ClusterSnapshot<'_> {
    /// Targeted hosts ([`ClusterRollout::targeted_hosts`]); none before its first report.
    fn hosts(&self) -> u64 {
        self.report.map_or(0, ClusterRollout::targeted_hosts)
    }
}

/// The next thing a rollout does, as [`decide`] finds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStep {
    /// `AdvanceWave`: the wave (from 0) opens; its hosts may switch.
    OpenWave {
        /// Its index.
        wave: u32,
        /// What `hosts` and `clusters` waves gave each cluster.
        allotment: Vec<Allotment>,
    },
    /// Every admitted host finished, within the budget: the wave bakes from now.
    StartBake {
        /// Its index.
        wave: u32,
    },
    /// The wave baked; the next is manual and waits for Promote.
    AwaitApproval {
        /// The waiting wave's index.
        wave: u32,
    },
    /// `CompleteRollout`: the last wave baked.
    Complete,
    /// `HaltRollout`: over the budget with `on_failure = "halt"`, or past the progress deadline.
    Halt {
        /// Why.
        reason: String,
        /// Hosts it names.
        hosts: Vec<String>,
    },
    /// `RollbackRollout`: over the budget with `on_failure = "rollback"`.
    RollBack {
        /// Why.
        reason: String,
        /// Hosts it names.
        hosts: Vec<String>,
    },
}

impl RolloutStep {
    /// The command's name in the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            Self::OpenWave { .. } => "advance_wave",
            Self::StartBake { .. } => "start_bake",
            Self::AwaitApproval { .. } => "await_approval",
            Self::Complete => "complete_rollout",
            Self::Halt { .. } => "halt_rollout",
            Self::RollBack { .. } => "rollback_rollout",
        }
    }
}

/// Hosts of cluster `(region, cluster)`, which has `hosts` targeted hosts, that may run the release: the
/// open waves' sizes added up, every host once the rollout completed. A manager switches the first this
/// many of its hosts in [`wave_rank`] order.
pub fn admitted(
    policy: &RolloutPolicy,
    progress: &RolloutProgress,
    region: &Region,
    cluster: &ClusterName,
    hosts: u64,
) -> u64 {
    if progress.end.as_ref().is_some_and(|e| e.state == EndState::Complete) {
        return hosts;
    }
    let mut admitted = 0u64;
    for (wave, opened) in policy.waves.iter().zip(&progress.opened) {
        if !wave.selects(region, cluster) {
            continue;
        }
        admitted = match wave.size {
            WaveSize::Percent(p) => admitted.max((hosts.saturating_mul(p)).div_ceil(100)),
            WaveSize::Hosts(_) | WaveSize::Clusters(_) => admitted.saturating_add(opened.allotted(region, cluster)),
        };
    }
    admitted.min(hosts)
}

/// The order in which a cluster's hosts enter the waves: a hash of the host's name and the generation, so
/// every manager (and a standby taking over) computes the same order without talking, and each deploy
/// picks different canaries. FNV-1a, 64 bits.
pub fn wave_rank(host: &str, generation: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in host.as_bytes().iter().chain(&generation.to_le_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// What the gate reads of one rollout.
#[derive(Debug, Clone, Copy)]
pub struct Gate<'a> {
    /// Its policy.
    pub policy: &'a RolloutPolicy,
    /// Its progress.
    pub progress: &'a RolloutProgress,
    /// Running or paused (aborted rollouts have ended).
    pub control: RolloutControl,
    /// When it was asked for.
    pub set_at: UnixMillis,
    /// Every cluster expected to report, with its report, in (region, cluster) order.
    pub clusters: &'a [ClusterSnapshot<'a>],
}

/// Sums over the clusters for the newest open wave.
struct Tally {
    admitted: u64,
    failed: u64,
    offline: u64,
    done: bool,
    failed_hosts: Vec<String>,
    waiting: Vec<String>,
}

fn tally(gate: &Gate<'_>) -> Tally {
    let mut t = Tally { admitted: 0, failed: 0, offline: 0, done: true, failed_hosts: Vec::new(), waiting: Vec::new() };
    for c in gate.clusters {
        let Some(report) = c.report else {
            t.done = false;
            t.waiting.push(format!("{}/{} (its manager has not reported)", c.region, c.cluster));
            continue;
        };
        let admitted = admitted(gate.policy, gate.progress, c.region, c.cluster, c.hosts());
        let counts = &report.counts;
        t.admitted += admitted;
        t.failed += counts.failed;
        t.offline += counts.admitted_offline;
        t.failed_hosts.extend(report.failures.hosts.iter().map(|f| format!("{} ({})", f.host, first_line(&f.reason))));
        if counts.active + counts.failed + counts.admitted_offline < admitted {
            t.done = false;
            let missing = admitted - counts.active - counts.failed - counts.admitted_offline;
            let unknown = c.hosts().saturating_sub(counts.total + counts.offline);
            if unknown > 0 {
                t.waiting.push(format!(
                    "{}/{}: {unknown} of its {} hosts not connected to its manager",
                    c.region,
                    c.cluster,
                    c.hosts()
                ));
            }
            if report.pending.is_empty() {
                t.waiting
                    .push(format!("{}/{}: {missing} admitted hosts neither healthy nor failed", c.region, c.cluster));
            } else {
                t.waiting.extend(report.pending.iter().map(|h| format!("{h} in {}/{}", c.region, c.cluster)));
            }
        }
    }
    t.failed_hosts.truncate(MAX_REPORTED_FAILURES);
    t.waiting.truncate(MAX_REPORTED_FAILURES);
    t
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// The next step of a rollout at `now`, or none (nothing to do yet, paused, waiting for approval, ended).
pub fn decide(gate: &Gate<'_>, now: UnixMillis) -> Option<RolloutStep> {
    let (policy, progress) = (gate.policy, gate.progress);
    if progress.end.is_some() || gate.control != RolloutControl::Running {
        return None;
    }
    let Some(newest) = progress.opened.len().checked_sub(1) else {
        // The first wave opens once every known cluster reported its size (or after a grace period).
        let all_reported = gate.clusters.iter().all(|c| c.report.is_some());
        if !all_reported && now.saturating_since(gate.set_at) < FIRST_WAVE_GRACE_MS {
            return None;
        }
        return open_or_wait(gate, 0);
    };
    let tally = tally(gate);
    let wave_failed = tally.failed.saturating_sub(progress.opened[newest].failed_before);
    let wave_admitted = tally.admitted.saturating_sub(progress.opened[newest].admitted_before);
    if policy.failure_budget.exceeded(wave_failed, wave_admitted) {
        let reason = format!(
            "wave {} of {} ({}): {wave_failed} of {wave_admitted} hosts failed, over the failure budget of {}",
            newest + 1,
            policy.waves.len(),
            policy.waves[newest].describe(),
            policy.failure_budget.describe()
        );
        let hosts = tally.failed_hosts;
        return Some(match policy.on_failure {
            super::policy::OnFailure::Halt => RolloutStep::Halt { reason, hosts },
            super::policy::OnFailure::Rollback => RolloutStep::RollBack { reason, hosts },
        });
    }
    if !tally.done {
        let idle_ms = now.saturating_since(progress.last_progress_at);
        if idle_ms > policy.progress_deadline_secs.saturating_mul(1000) {
            let reason = format!(
                "wave {} of {} ({}) made no progress for {} s (progress_deadline_secs = {}); still waiting for: {}",
                newest + 1,
                policy.waves.len(),
                policy.waves[newest].describe(),
                idle_ms / 1000,
                policy.progress_deadline_secs,
                tally.waiting.join(", ")
            );
            return Some(RolloutStep::Halt { reason, hosts: tally.waiting });
        }
        return None;
    }
    if progress.awaiting_approval {
        return None;
    }
    if policy.bake_secs > 0 {
        let Some(since) = progress.healthy_since else {
            return Some(RolloutStep::StartBake { wave: newest as u32 });
        };
        if now.saturating_since(since) < policy.bake_secs.saturating_mul(1000) && !super::skips_bake() {
            return None;
        }
    }
    if newest + 1 == policy.waves.len() {
        return Some(RolloutStep::Complete);
    }
    open_or_wait(gate, newest + 1)
}

fn open_or_wait(gate: &Gate<'_>, wave: usize) -> Option<RolloutStep> {
    if gate.policy.waves[wave].manual {
        return (!gate.progress.awaiting_approval).then_some(RolloutStep::AwaitApproval { wave: wave as u32 });
    }
    Some(open(gate, wave))
}

/// Opens wave `wave` now: a `hosts` or `clusters` wave is shared out over the selected clusters, in
/// (region, cluster) order, by the room each has left. Also what Promote does.
pub fn open(gate: &Gate<'_>, wave: usize) -> RolloutStep {
    let spec = &gate.policy.waves[wave];
    let mut allotment = Vec::new();
    let mut left = match spec.size {
        WaveSize::Hosts(n) | WaveSize::Clusters(n) => n,
        WaveSize::Percent(_) => 0,
    };
    for c in gate.clusters.iter().filter(|c| spec.selects(c.region, c.cluster)) {
        if left == 0 {
            break;
        }
        let hosts = c.hosts();
        let room = hosts.saturating_sub(admitted(gate.policy, gate.progress, c.region, c.cluster, hosts));
        if room == 0 {
            continue;
        }
        let given = match spec.size {
            WaveSize::Hosts(_) => room.min(left),
            _ => room,
        };
        left -= match spec.size {
            WaveSize::Hosts(_) => given,
            _ => 1,
        };
        allotment.push(Allotment { region: c.region.clone(), cluster: c.cluster.clone(), hosts: given });
    }
    RolloutStep::OpenWave { wave: wave as u32, allotment }
}

/// Applies a step to the progress at `now` (the state machine's part; ending in a rollback also deploys
/// the previous build, which the state does).
pub fn apply(gate: &Gate<'_>, progress: &mut RolloutProgress, step: &RolloutStep, now: UnixMillis) {
    match step {
        RolloutStep::OpenWave { allotment, .. } => {
            let before = tally(gate);
            progress.opened.push(OpenedWave {
                at: now,
                allotment: allotment.clone(),
                failed_before: before.failed,
                admitted_before: before.admitted,
            });
            progress.healthy_since = None;
            progress.awaiting_approval = false;
            progress.last_progress_at = now;
        }
        RolloutStep::StartBake { .. } => progress.healthy_since = Some(now),
        RolloutStep::AwaitApproval { .. } => progress.awaiting_approval = true,
        RolloutStep::Complete => {
            let t = tally(gate);
            let waves = gate.policy.waves.len();
            let healthy =
                if waves == 1 { "its one wave healthy".to_string() } else { format!("all {waves} waves healthy") };
            let mut reason = match t.failed {
                0 => healthy,
                failed => format!(
                    "{healthy} within the failure budget of {}; {failed} failed hosts run their previous release",
                    gate.policy.failure_budget.describe()
                ),
            };
            if t.offline > 0 {
                reason.push_str(&format!("; {} offline hosts switch when they return", t.offline));
            }
            progress.end = Some(RolloutEnd { state: EndState::Complete, at: now, reason, hosts: t.failed_hosts });
        }
        RolloutStep::Halt { reason, hosts } => {
            progress.end =
                Some(RolloutEnd { state: EndState::Failed, at: now, reason: reason.clone(), hosts: hosts.clone() });
        }
        RolloutStep::RollBack { reason, hosts } => {
            progress.end =
                Some(RolloutEnd { state: EndState::RolledBack, at: now, reason: reason.clone(), hosts: hosts.clone() });
        }
    }
}
