//! What one seed decides before the run starts: the cluster's shape, the workload and the faults.
//!
//! Drawing the whole plan up front from its own generator keeps a seed's faults the same however the
//! run's inner randomness (elections, message latencies) unfolds, which makes a failing seed easy to read:
//! the plan is printed at the top of the trace.

use cascade_core::ServiceName;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::fmt;

/// Voters in every run (the home region's three).
pub const VOTERS: usize = 3;

/// Faults happen in `[FAULTS_FROM_MS, fault_window_ms)`; afterwards the network heals and liveness is checked.
pub const FAULTS_FROM_MS: u64 = 2_000;

/// One injected fault, with how long it lasts where that applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A Raft host loses power; it restarts after `for_ms` with only what its disk had synced.
    Crash { node: usize, for_ms: u64 },
    /// The hosts in `side` cannot talk to any other host, both ways.
    Partition { side: Vec<String>, for_ms: u64 },
    /// Messages from `from` to `to` are dropped; the other direction works.
    OneWay { from: String, to: String, for_ms: u64 },
    /// Links fail at random with this rate (per message, in thousandths) and repair themselves.
    Loss { permille: u32, for_ms: u64 },
    /// Message latency up to `max_ms`.
    Delay { max_ms: u64, for_ms: u64 },
    /// A Raft host's wall clock runs `ms` ahead (or behind) until the faults end.
    Skew { node: usize, ms: i64 },
    /// Every sync on a Raft host's disk takes `ms`.
    SlowDisk { node: usize, ms: u64, for_ms: u64 },
    /// A worker host dies mid-build and comes back (with no memory of its lease) after `for_ms`.
    WorkerCrash { worker: usize, for_ms: u64 },
    /// A worker goes silent for `for_ms` mid-build, then carries on with the lease it held.
    WorkerStall { worker: usize, for_ms: u64 },
    /// A region agent's host (a manager or a host agent) dies and comes back after `for_ms`; a host agent
    /// keeps its files.
    AgentCrash { agent: String, for_ms: u64 },
}

/// A fault and when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Simulated milliseconds from the start.
    pub at_ms: u64,
    /// What happens.
    pub fault: Fault,
}

/// Everything a seed fixes in advance.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The seed.
    pub seed: u64,
    /// Learners (one per region outside home).
    pub learners: usize,
    /// Build workers.
    pub workers: usize,
    /// Builds the client submits.
    pub builds: usize,
    /// How long every disk sync takes normally (so a crash can land between a write and its sync).
    pub sync_ms: u64,
    /// When the faults stop and the network heals.
    pub fault_window_ms: u64,
    /// The faults, by start time.
    pub faults: Vec<Planned>,
    /// Host agents per learner region (each region also has one manager); empty without region agents.
    pub hosts_per_region: Vec<usize>,
    /// The host agent (region index, host index) that serves corrupt chunks for the whole run, if any.
    pub corrupt_host: Option<(usize, usize)>,
    /// A host agent (region index, host index) whose disk refuses the release of the client's `n`-th
    /// build (the third number): its activation fails, so the rollout that reaches it goes over its failure
    /// budget and halts or rolls back.
    pub broken_release: Option<(usize, usize, usize)>,
}

impl Scenario {
    /// Draws a scenario from `seed`. `faults` false gives the same workload on a healthy network.
    pub fn generate(seed: u64, faults: bool) -> Scenario {
        Self::generate_with(seed, faults, true)
    }

    /// Draws a scenario; `agents` false leaves out the region agents (the cluster as it was simulated
    /// before them: the same draws, so old seeds replay as they did).
    pub fn generate_with(seed: u64, faults: bool, agents: bool) -> Scenario {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5ce4_a710);
        let learners = rng.gen_range(1..=2);
        let workers = rng.gen_range(2..=3);
        let builds = rng.gen_range(4..=9);
        let sync_ms = rng.gen_range(1..=4);
        let fault_window_ms = 24_000;
        let mut plan = Vec::new();
        if faults {
            let nodes = VOTERS + learners;
            let count = rng.gen_range(3..=8);
            for _ in 0..count {
                let at_ms = rng.gen_range(FAULTS_FROM_MS..fault_window_ms - 2_000);
                let for_ms = rng.gen_range(500..6_000);
                let fault = match rng.gen_range(0..100) {
                    0..=17 => Fault::Crash { node: rng.gen_range(0..nodes), for_ms },
                    18..=29 => {
                        let mut side = vec![node_name(rng.gen_range(0..nodes))];
                        if rng.gen_bool(0.3) {
                            side.push(format!("w{}", rng.gen_range(1..=workers)));
                        }
                        Fault::Partition { side, for_ms }
                    }
                    30..=39 => {
                        let from = rng.gen_range(0..nodes);
                        let to = (from + rng.gen_range(1..nodes)) % nodes;
                        Fault::OneWay { from: node_name(from), to: node_name(to), for_ms }
                    }
                    40..=47 => Fault::Loss { permille: rng.gen_range(5..60), for_ms },
                    48..=55 => Fault::Delay { max_ms: rng.gen_range(20..400), for_ms },
                    56..=63 => Fault::Skew { node: rng.gen_range(0..nodes), ms: rng.gen_range(-20_000..20_000) },
                    64..=71 => Fault::SlowDisk { node: rng.gen_range(0..nodes), ms: rng.gen_range(5..300), for_ms },
                    72..=83 => Fault::WorkerCrash { worker: rng.gen_range(0..workers), for_ms },
                    _ => Fault::WorkerStall { worker: rng.gen_range(0..workers), for_ms: rng.gen_range(4_000..9_000) },
                };
                plan.push(Planned { at_ms, fault });
            }
            // Every faulty run has a worker that comes back after its lease was given away: the one fault
            // that needs the rest of the cluster healthy to happen at all.
            if !plan.iter().any(|p| matches!(p.fault, Fault::WorkerStall { .. })) && rng.gen_bool(0.7) {
                let at_ms = rng.gen_range(FAULTS_FROM_MS..fault_window_ms / 2);
                plan.push(Planned {
                    at_ms,
                    fault: Fault::WorkerStall {
                        worker: rng.gen_range(0..workers),
                        for_ms: rng.gen_range(5_000..9_000),
                    },
                });
            }
            plan.sort_by_key(|p| p.at_ms);
        }
        let mut scenario = Scenario {
            seed,
            learners,
            workers,
            builds,
            sync_ms,
            fault_window_ms,
            faults: plan,
            hosts_per_region: Vec::new(),
            corrupt_host: None,
            broken_release: None,
        };
        if agents {
            scenario.add_agents(faults);
        }
        scenario
    }

    /// Region agents and their faults, from a generator of their own so the rest of the plan is the same
    /// with or without them.
    fn add_agents(&mut self, faults: bool) {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0xa6e7_7500);
        self.hosts_per_region = (0..self.learners).map(|_| rng.gen_range(3..=4)).collect();
        if rng.gen_bool(0.6) {
            let region = rng.gen_range(0..self.learners);
            self.corrupt_host = Some((region, rng.gen_range(0..self.hosts_per_region[region])));
        }
        if !faults {
            return;
        }
        // A generator of its own, so the draws below stay those of before it.
        let mut broken = StdRng::seed_from_u64(self.seed ^ 0xb20c_e2ed);
        if broken.gen_bool(0.5) {
            let region = broken.gen_range(0..self.learners);
            // Hosts 0-2 run a service each deploy can target; a fourth runs none.
            let host = broken.gen_range(0..self.hosts_per_region[region].min(3));
            self.broken_release = Some((region, host, broken.gen_range(0..self.builds)));
        }
        for _ in 0..rng.gen_range(1..=4) {
            let region = rng.gen_range(0..self.learners);
            let agent = if rng.gen_bool(0.25) {
                manager_name(region)
            } else {
                host_name(region, rng.gen_range(0..self.hosts_per_region[region]))
            };
            let at_ms = rng.gen_range(FAULTS_FROM_MS..self.fault_window_ms - 2_000);
            let for_ms = rng.gen_range(500..6_000);
            let fault = if rng.gen_bool(0.5) {
                Fault::AgentCrash { agent, for_ms }
            } else {
                Fault::Partition { side: vec![agent], for_ms }
            };
            self.faults.push(Planned { at_ms, fault });
        }
        self.faults.sort_by_key(|p| p.at_ms);
    }

    /// Every region agent's host name with (region, manager?), managers first in each region.
    pub fn agents(&self) -> Vec<(String, usize, bool)> {
        let mut agents = Vec::new();
        for (region, hosts) in self.hosts_per_region.iter().enumerate() {
            agents.push((manager_name(region), region, true));
            agents.extend((0..*hosts).map(|h| (host_name(region, h), region, false)));
        }
        agents
    }

    /// Host name of Raft member `index` (voters first, then learners).
    pub fn node_name(&self, index: usize) -> String {
        node_name(index)
    }
}

/// The services the client builds and deploys.
pub const SERVICES: [&str; 2] = ["api", "web"];

/// The services host agent `host` (its index in its region) runs, the same mix in every region: the first
/// runs both, the second only `api`, the third only `web`, a fourth (in regions of 4) none. So each
/// service's swarm is two hosts of the region, every deploy leaves at least one host of the region out,
/// and a host that runs nothing must receive nothing. Not drawn: a seed's draws stay those of before.
pub fn host_services(host: usize) -> BTreeSet<ServiceName> {
    let runs: &[&str] = match host {
        0 => &SERVICES,
        1 => &SERVICES[..1],
        2 => &SERVICES[1..],
        _ => &[],
    };
    runs.iter().filter_map(|s| ServiceName::parse(*s).ok()).collect()
}

/// Host name of region `region`'s manager (`m1` serves the first learner's region).
fn manager_name(region: usize) -> String {
    format!("m{}", region + 1)
}

/// Host name of host agent `host` of region `region` (`h1a`, `h1b`, ...).
fn host_name(region: usize, host: usize) -> String {
    format!("h{}{}", region + 1, char::from(b'a' + host as u8))
}

fn node_name(index: usize) -> String {
    if index < VOTERS {
        format!("n{}", index + 1)
    } else {
        format!("l{}", index - VOTERS + 1)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} voters, {} learners, {} workers, {} builds, {} ms syncs, faults until {} ms: ",
            self.seed, VOTERS, self.learners, self.workers, self.builds, self.sync_ms, self.fault_window_ms
        )?;
        if !self.hosts_per_region.is_empty() {
            write!(
                f,
                "hosts per region {:?}, corrupt host {:?}, broken release {:?}, ",
                self.hosts_per_region, self.corrupt_host, self.broken_release
            )?;
        }
        let faults: Vec<String> = self.faults.iter().map(|p| format!("{}ms {:?}", p.at_ms, p.fault)).collect();
        write!(f, "[{}]", faults.join(", "))
    }
}

/// Seconds each wave of a simulated deploy bakes: above the rollout controller's half-second tick, so a
/// gate that skips the bake opens the next wave visibly early, and short, so the last deploy of a seed
/// still completes soon after the faults stop.
pub const BAKE_SECS: u64 = 1;

/// Seconds a wave of a simulated deploy may go without progress before the rollout halts: longer than
/// the longest single fault (6 s), so halts stay the exception, and well within the liveness bound.
pub const PROGRESS_DEADLINE_SECS: u64 = 30;

/// The rollout policy the client's `round`-th deploy asks for: one canary host, half of every cluster,
/// then all of it, a short bake after each. No failure is tolerated; every other deploy rolls back on a
/// failure and the others halt, so both ends are exercised. Not drawn: the client's draws stay as they were.
pub fn rollout(round: usize) -> cascade_core::rollout::RolloutOverride {
    use cascade_core::rollout::{FailureBudget, OnFailure, RolloutOverride, Wave, WaveSize};
    let wave = |size| Wave { size, region: None, cluster: None, manual: false };
    RolloutOverride {
        waves: Some(vec![wave(WaveSize::Hosts(1)), wave(WaveSize::Percent(50)), wave(WaveSize::Percent(100))]),
        max_unavailable: Some(0),
        bake_secs: Some(BAKE_SECS),
        failure_budget: Some(FailureBudget::Hosts(0)),
        on_failure: Some(if round.is_multiple_of(2) { OnFailure::Rollback } else { OnFailure::Halt }),
        progress_deadline_secs: Some(PROGRESS_DEADLINE_SECS),
    }
}
