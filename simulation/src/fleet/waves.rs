//! Progressive delivery at fleet scale: the fan-out's per-host arrival times ([`super::run`]) fed through
//! the real rollout gate from `cascade_core::rollout` (`decide`, `apply`, `admitted`, `wave_rank`), to
//! show what waves cost when the bytes go to every host first and only the switch is staged, and how far
//! a bad build gets.
//!
//! Each region is one cluster. Time advances in ticks of `gate_s` (the leader's rollout controller runs
//! every 500 ms; a step is committed and seen by the managers within about that): at every tick each
//! cluster reports its counts, the gate decides, and one step is applied. A host starts switching when
//! it holds the verified bytes *and* a manager saw its wave open (one tick after the opening was
//! committed), and has its verdict `switch_s` later (its `activate` and health probe). Hosts that died
//! during the transfer are offline: they do not hold a wave (`admitted_offline`).
//! Not modelled: `max_unavailable` (every admitted host switches at once), hosts that die while switching,
//! the rollback generation's own switch.

use cascade_core::rollout::{
    admitted, apply, decide, wave_rank, ClusterSnapshot, EndState, Gate, RolloutPolicy, RolloutProgress,
};
use cascade_core::state::{ClusterRollout, RolloutControl, RolloutCounts};
use cascade_core::{ClusterName, Region, UnixMillis};

use super::FleetOutcome;

/// How the rollout runs on top of the fan-out.
#[derive(Clone, Debug)]
pub struct WaveParams {
    /// The policy under test.
    pub policy: RolloutPolicy,
    /// Seconds from a host's start of switching to its verdict (its `activate` and health probe).
    pub switch_s: f64,
    /// Seconds per gate tick: a step's commit, and a manager seeing it.
    pub gate_s: f64,
    /// The release fails its health probe on every host.
    pub bad_build: bool,
}

/// What the rollout did.
#[derive(Clone, Debug)]
pub struct WavesOutcome {
    /// Per opened wave: seconds from the build when it opened, and hosts admitted fleet-wide by then.
    pub opened: Vec<(f64, u64)>,
    /// How it ended, its reason, and when (seconds from the build); `None` if it had not ended by the
    /// model's horizon.
    pub end: Option<(EndState, String, f64)>,
    /// Hosts that switched to the release (healthy or not).
    pub switched: u64,
    /// Seconds from the build until the last host that switched had its verdict.
    pub last_verdict_s: f64,
    /// Surviving hosts of the fleet.
    pub hosts: u64,
}

struct Host {
    /// Seconds from the build until it holds the verified bytes.
    arrived_s: f64,
    /// Seconds from the build when it started switching.
    started_s: Option<f64>,
}

struct Cluster {
    region: Region,
    cluster: ClusterName,
    /// Surviving hosts in wave order.
    hosts: Vec<Host>,
    /// Hosts that died during the transfer: offline, ranked among the others.
    offline_positions: Vec<usize>,
    /// Every targeted host, live or not.
    size: u64,
}

/// Longest the model runs, seconds from the build: past the longest progress deadline a policy may have
/// (a day), so every rollout ends within it.
const HORIZON_S: f64 = 2.0 * 24.0 * 3600.0;

/// Runs the rollout of `w.policy` over the fan-out `fleet` (from [`super::run`]).
pub fn run_waves(fleet: &FleetOutcome, w: &WaveParams) -> WavesOutcome {
    assert!(w.gate_s > 0.0 && w.switch_s >= 0.0, "a tick takes time");
    let mut clusters: Vec<Cluster> = fleet
        .regions
        .iter()
        .enumerate()
        .map(|(r, region)| {
            let generation = 1;
            let died: std::collections::BTreeSet<u32> = region.died_hosts.iter().copied().collect();
            let mut alive = region.active_ns.iter();
            // Host ids are 1-based; the survivors' times are in id order.
            let mut ranked: Vec<(u64, Option<f64>)> = (1..=region.hosts)
                .map(|id| {
                    let rank = wave_rank(&format!("r{r}-host{id}"), generation);
                    let arrived = if died.contains(&id) {
                        None
                    } else {
                        alive.next().map(|ns| fleet.replication_s + *ns as f64 / 1e9)
                    };
                    (rank, arrived)
                })
                .collect();
            ranked.sort_by_key(|(rank, _)| *rank);
            let offline_positions =
                ranked.iter().enumerate().filter(|(_, (_, a))| a.is_none()).map(|(i, _)| i).collect();
            Cluster {
                region: Region::parse(format!("r{r:02}")).expect("a valid region name"),
                cluster: ClusterName::parse("c1").expect("a valid cluster name"),
                hosts: ranked
                    .iter()
                    .filter_map(|(_, a)| a.map(|arrived_s| Host { arrived_s, started_s: None }))
                    .collect(),
                offline_positions,
                size: u64::from(region.hosts),
            }
        })
        .collect();
    let mut progress = RolloutProgress::new(UnixMillis(0));
    let mut opened = Vec::new();
    let mut last_done = 0u64;
    let mut t = 0.0f64;
    let mut reports: Vec<ClusterRollout> = Vec::new();
    while t < HORIZON_S {
        t += w.gate_s;
        let now = UnixMillis((t * 1000.0) as u64);
        // Managers admit the hosts of waves opened before this tick; a host starts once it also holds the bytes.
        reports.clear();
        let mut done = 0u64;
        for c in &mut clusters {
            let admitted_n = admitted(&w.policy, &progress, &c.region, &c.cluster, c.size) as usize;
            let (mut active, mut failed, mut switching) = (0, 0, 0);
            let mut position = 0usize;
            let mut admitted_offline = 0;
            let mut offline = c.offline_positions.iter().peekable();
            for host in &mut c.hosts {
                while offline.peek().is_some_and(|&&o| o == position) {
                    admitted_offline += u64::from(position < admitted_n);
                    offline.next();
                    position += 1;
                }
                if position < admitted_n && host.started_s.is_none() && host.arrived_s <= t {
                    host.started_s = Some(t);
                }
                position += 1;
                if let Some(started) = host.started_s {
                    if started + w.switch_s <= t {
                        if w.bad_build {
                            failed += 1;
                        } else {
                            active += 1;
                        }
                    } else {
                        switching += 1;
                    }
                }
            }
            admitted_offline += offline.filter(|&&o| o < admitted_n).count() as u64;
            done += active + failed;
            let live = c.hosts.len() as u64;
            let counts = RolloutCounts {
                total: live,
                activating: switching,
                active,
                failed,
                offline: c.size - live,
                admitted_offline,
                cluster_hosts: live,
                verified: live - active - failed - switching,
                ..RolloutCounts::default()
            };
            reports.push(ClusterRollout { counts, reported_at: now, ..ClusterRollout::default() });
        }
        if done > last_done {
            progress.last_progress_at = now;
            last_done = done;
        }
        let snapshots: Vec<ClusterSnapshot<'_>> = clusters
            .iter()
            .zip(&reports)
            .map(|(c, report)| ClusterSnapshot { region: &c.region, cluster: &c.cluster, report: Some(report) })
            .collect();
        let gate = Gate {
            policy: &w.policy,
            progress: &progress,
            control: RolloutControl::Running,
            set_at: UnixMillis(0),
            clusters: &snapshots,
        };
        if let Some(step) = decide(&gate, now) {
            let mut next = progress.clone();
            apply(&gate, &mut next, &step, now);
            progress = next;
            if progress.opened.len() > opened.len() {
                let admitted_total: u64 =
                    clusters.iter().map(|c| admitted(&w.policy, &progress, &c.region, &c.cluster, c.size)).sum();
                opened.push((t, admitted_total));
            }
        }
        if let Some(end) = &progress.end {
            let switched: Vec<f64> = clusters.iter().flat_map(|c| c.hosts.iter().filter_map(|h| h.started_s)).collect();
            return WavesOutcome {
                opened,
                end: Some((end.state, end.reason.clone(), t)),
                switched: switched.len() as u64,
                last_verdict_s: switched.iter().fold(0.0f64, |a, s| a.max(s + w.switch_s)),
                hosts: clusters.iter().map(|c| c.hosts.len() as u64).sum(),
            };
        }
    }
    let switched: Vec<f64> = clusters.iter().flat_map(|c| c.hosts.iter().filter_map(|h| h.started_s)).collect();
    WavesOutcome {
        opened,
        end: None,
        switched: switched.len() as u64,
        last_verdict_s: switched.iter().fold(0.0f64, |a, s| a.max(s + w.switch_s)),
        hosts: clusters.iter().map(|c| c.hosts.len() as u64).sum(),
    }
}
