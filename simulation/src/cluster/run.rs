//! The driver of one seeded run: builds the turmoil world, steps it, injects the scenario's faults on
//! time, checks the invariants after every step, heals everything when the fault window closes, and then
//! (liveness mode) waits a bounded time for the cluster to converge.

use super::actors;
use super::agents;
use super::host;
use super::invariants::{acknowledged_build_never_lost, Checker, Violation};
use super::isolation::RunGuard;
use super::scenario::{Fault, Scenario, VOTERS};
use super::world::{AgentSlot, Blobs, NodeSlot, Shared, WorkerSlot, World};
use super::{Failure, Options, Outcome};
use cascade_core::{ClusterName, HostDeclaration};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// Simulated time per step: every host runs this long, then the invariants are checked.
pub const TICK: Duration = Duration::from_millis(2);

/// Hard cap on steps, whatever the clocks say (the fault window plus the liveness bound is far less).
const MAX_STEPS: u64 = 1_000_000;

/// How often the healed cluster is checked for convergence (it reads every replica).
const CONVERGENCE_CHECK_EVERY: Duration = Duration::from_millis(100);

/// How often every host agent's `current` links are scanned (besides the check of each activation).
const RELEASE_SCAN_EVERY: Duration = Duration::from_millis(250);

/// Runs so far in this process, to give each run's host agents their own directories.
static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Normal link latency.
const MIN_LATENCY: Duration = Duration::from_millis(1);
const MAX_LATENCY: Duration = Duration::from_millis(8);

/// A scheduled change of the world.
#[derive(Debug, Clone)]
enum Action {
    Start(usize),
    End(usize),
    Heal,
}

thread_local! {
    /// The first panic message on this thread since the run started: the one that names the bug (a
    /// host's runtime then panics again with a generic "a spawned task panicked").
    static FIRST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Chains a panic hook (once per process) that remembers each thread's first panic message for its run.
fn remember_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = FIRST_PANIC.try_with(|p| {
                let mut p = p.borrow_mut();
                if p.is_none() {
                    *p = Some(info.to_string());
                }
            });
            previous(info);
        }));
    });
}

/// Runs seed `seed` to the end (or the first violation).
pub fn run_seed(seed: u64, options: &Options) -> Outcome {
    // Before anything of the run spawns a task; held until its hosts are dropped.
    let _isolated = RunGuard::acquire();
    remember_panics();
    FIRST_PANIC.with(|p| p.borrow_mut().take());
    cascade_raft_node::runtime::seed_thread_rng(seed);
    let scenario = Scenario::generate_with(seed, options.faults, options.agents);
    let shared: Shared = Rc::new(RefCell::new(World::default()));
    let run_dir = std::env::temp_dir().join(format!(
        "cascade-sim-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let host_names = register(&shared, &scenario, &run_dir);
    for slot in &shared.borrow().nodes {
        slot.disk.set_fsync_is_a_no_op(options.fsync_is_a_no_op);
        slot.disk.set_replication_reads_purged_ranges(options.replication_reads_purged_ranges);
    }
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(TICK)
        .simulation_duration(Duration::from_secs(24 * 3600))
        .min_message_latency(MIN_LATENCY)
        .max_message_latency(MAX_LATENCY)
        .repair_rate(0.2)
        .build();
    for index in 0..shared.borrow().nodes.len() {
        let name = shared.borrow().nodes[index].name.clone();
        let shared = shared.clone();
        sim.host(name, move || host::run_node(shared.clone(), index));
    }
    for index in 0..scenario.workers {
        let shared = shared.clone();
        sim.host(format!("w{}", index + 1), move || actors::run_worker(shared.clone(), index, seed));
    }
    for index in 0..shared.borrow().agents.len() {
        let (name, manager) = {
            let world = shared.borrow();
            (world.agents[index].name.clone(), world.agents[index].manager)
        };
        let shared = shared.clone();
        if manager {
            sim.host(name, move || agents::run_manager(shared.clone(), index));
        } else {
            sim.host(name, move || agents::run_host(shared.clone(), index));
        }
    }
    {
        let shared = shared.clone();
        let builds = scenario.builds;
        // With region agents the client stops deploying when the faults stop, so the hosts can converge;
        // without them no manager reports, so no rollout could get past its first wave.
        let deploy_until = options.agents.then_some(Duration::from_millis(scenario.fault_window_ms));
        let waves = options.agents;
        sim.host("c1", move || actors::run_client(shared.clone(), seed, builds, deploy_until, waves));
    }
    let mut timeline: BTreeMap<u64, Vec<Action>> = BTreeMap::new();
    for (i, planned) in scenario.faults.iter().enumerate() {
        timeline.entry(planned.at_ms).or_default().push(Action::Start(i));
        if let Some(for_ms) = duration_of(&planned.fault) {
            let end = (planned.at_ms + for_ms).min(scenario.fault_window_ms);
            timeline.entry(end).or_default().push(Action::End(i));
        }
    }
    timeline.entry(scenario.fault_window_ms).or_default().push(Action::Heal);
    shared.borrow_mut().trace.push(Duration::ZERO, "sim", scenario.to_string());

    let mut checker = Checker::new();
    let mut faults = Faults::default();
    let heal_at = Duration::from_millis(scenario.fault_window_ms);
    let deadline = heal_at + options.liveness_bound;
    let mut steps = 0u64;
    let mut converged_at = None;
    let mut next_check = heal_at;
    let mut next_scan = Duration::ZERO;
    let mut broken_planted = scenario.broken_release.is_none();
    let failure = loop {
        let now = sim.elapsed();
        let now_ms = now.as_millis() as u64;
        let due: Vec<u64> = timeline.range(..=now_ms).map(|(at, _)| *at).collect();
        for at in due {
            for action in timeline.remove(&at).unwrap_or_default() {
                act(&mut sim, &shared, &scenario, &host_names, &mut faults, action, now);
            }
        }
        fire_armed_crashes(&mut sim, &shared, &mut faults, now);
        if steps >= MAX_STEPS {
            break Some(Failure { invariant: "liveness".into(), detail: format!("still running after {steps} steps") });
        }
        // A panic in a host's task (openraft's defensive checks panic) stops that host's runtime and
        // unwinds out of `step`; it is a finding of this seed, not the end of the whole run of seeds.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.step())) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                break Some(Failure { invariant: "host_software_ran".into(), detail: format!("a host failed: {e}") })
            }
            Err(panic) => {
                let message = FIRST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| {
                    panic.downcast_ref::<String>().cloned().unwrap_or_else(|| "a host panicked".into())
                });
                break Some(Failure {
                    invariant: "host_software_ran".into(),
                    detail: format!("a host panicked: {message}"),
                });
            }
        }
        steps += 1;
        let now = sim.elapsed();
        if let Err(v) = checker.observe(&mut shared.borrow_mut(), now) {
            break Some(violation(v));
        }
        let scan = now >= next_scan;
        if scan {
            next_scan = now + RELEASE_SCAN_EVERY;
        }
        if let Err(v) = checker.observe_agents(&mut shared.borrow_mut(), now, scan) {
            break Some(violation(v));
        }
        if scan && !broken_planted {
            broken_planted = break_release(&mut shared.borrow_mut(), &scenario, checker.shadow(), now);
        }
        if now >= heal_at && now >= next_check {
            next_check = now + CONVERGENCE_CHECK_EVERY;
            if !options.liveness {
                break None;
            }
            // Bound the borrow to this statement: the arms below borrow `shared` mutably.
            let convergence = converged(&shared.borrow(), &checker);
            match convergence {
                Ok(true) => {
                    converged_at = Some(now);
                    let failed = hosts_reported_failed(&shared.borrow());
                    if !failed.is_empty() {
                        shared.borrow_mut().trace.push(now, "sim", format!("converged with {}", failed.join("; ")));
                    }
                    break None;
                }
                Ok(false) => {}
                Err(v) => break Some(violation(v)),
            }
            if now >= deadline {
                let why = not_converged(&shared.borrow(), now);
                break Some(Failure {
                    invariant: "liveness".into(),
                    detail: format!("not converged {:?} after the faults stopped: {why}", options.liveness_bound),
                });
            }
        }
    };
    let sim_time = sim.elapsed();
    let mut world = shared.borrow_mut();
    let summary = format!(
        "end: {} steps, shadow at index {} (digest {:016x}), {} builds, {:?}, converged at {:?}",
        steps,
        checker.shadow_index(),
        super::invariants::digest(checker.shadow()),
        checker.shadow().jobs.len(),
        checker.stats(),
        converged_at
    );
    world.trace.push(sim_time, "sim", summary);
    let trace = world.trace.take();
    // Drop the hosts (and the nodes' tasks) before the world they point into.
    for slot in &mut world.nodes {
        slot.node = None;
    }
    drop(world);
    drop(sim);
    let _ = std::fs::remove_dir_all(&run_dir);
    Outcome { seed, scenario: scenario.to_string(), failure, trace, sim_time, steps, stats: checker.stats() }
}

/// Plants the scenario's broken release once its build succeeded: a file where the host would install the
/// release, so its activation fails as on a disk that refuses it (the host puts its previous release back
/// and reports the failure). Whether it is planted now.
fn break_release(world: &mut World, scenario: &Scenario, committed: &cascade_core::State, now: Duration) -> bool {
    let Some((region, host, build)) = scenario.broken_release else { return true };
    let key = format!("sim-{}-{build}", scenario.seed);
    let Some(job) = world.acked_submits.iter().find(|a| a.key == key).map(|a| a.job) else { return false };
    let Some(job) = committed.jobs.get(&job) else { return false };
    let cascade_core::JobStatus::Succeeded { artifact } = &job.status else { return job.status.is_terminal() };
    let name = scenario.agents().into_iter().filter(|(_, r, manager)| *r == region && !manager).nth(host);
    let Some(slot) = name.and_then(|(name, _, _)| world.agents.iter().find(|a| a.name == name)) else { return true };
    // A release of a service the host does not run is never sent to it (and would be a finding if held).
    if !slot.services.contains(&job.service) {
        return true;
    }
    let releases = slot.data_dir.join("releases");
    let blocker = releases.join(artifact.digest.as_str());
    let planted = std::fs::create_dir_all(&releases).and_then(|()| std::fs::write(&blocker, b"refused"));
    let what = match planted {
        Ok(()) => format!("disk refuses the release of build {} ({})", job.id, agents::short(&artifact.digest)),
        Err(e) => format!("cannot plant the broken release of build {}: {e}", job.id),
    };
    let host = slot.name.clone();
    world.trace.push(now, &host, what);
    true
}

fn violation(v: Violation) -> Failure {
    Failure { invariant: v.invariant.to_string(), detail: v.detail }
}

/// Fills the world with the scenario's hosts; returns every host name (for partitions).
fn register(shared: &Shared, scenario: &Scenario, run_dir: &std::path::Path) -> Vec<String> {
    let mut world = shared.borrow_mut();
    if !scenario.hosts_per_region.is_empty() {
        let memory = || -> cascade_client::blobs::Store { std::sync::Arc::new(object_store::memory::InMemory::new()) };
        let regions =
            (0..scenario.learners).map(|l| (agents::region_of(&scenario.node_name(VOTERS + l)), memory())).collect();
        world.blobs = Some(Blobs { main: memory(), regions });
    }
    for (name, region, manager) in scenario.agents() {
        // A host agent's index in its region is its name's last letter (`h1a` is 0).
        let host = usize::from(name.as_bytes().last().copied().unwrap_or(b'a').saturating_sub(b'a'));
        let corrupt = !manager && scenario.corrupt_host == Some((region, host));
        let services = if manager { Default::default() } else { super::scenario::host_services(host) };
        let data_dir = run_dir.join(&name);
        world.agents.push(AgentSlot { name, region, manager, incarnation: 0, data_dir, corrupt, services });
    }
    for index in 0..VOTERS + scenario.learners {
        let voter = index < VOTERS;
        let disk = super::disk::SimDisk::default();
        disk.set_sync_delay(Duration::from_millis(scenario.sync_ms));
        world.nodes.push(NodeSlot {
            name: scenario.node_name(index),
            id: if voter { index as u64 + 1 } else { 10 + index as u64 },
            voter,
            disk,
            snapshots: Default::default(),
            clock: Default::default(),
            node: None,
            incarnation: 0,
        });
    }
    for index in 0..scenario.workers {
        world.workers.push(WorkerSlot { name: format!("w{}", index + 1), incarnation: 0, stall: None });
    }
    let mut names: Vec<String> = world.nodes.iter().map(|n| n.name.clone()).collect();
    names.extend(world.workers.iter().map(|w| w.name.clone()));
    names.extend(world.agents.iter().map(|a| a.name.clone()));
    names.push("c1".into());
    names
}

fn duration_of(fault: &Fault) -> Option<u64> {
    match fault {
        Fault::Crash { for_ms, .. }
        | Fault::Partition { for_ms, .. }
        | Fault::OneWay { for_ms, .. }
        | Fault::Loss { for_ms, .. }
        | Fault::Delay { for_ms, .. }
        | Fault::SlowDisk { for_ms, .. }
        | Fault::WorkerCrash { for_ms, .. }
        | Fault::AgentCrash { for_ms, .. } => Some(*for_ms),
        Fault::Skew { .. } | Fault::WorkerStall { .. } => None,
    }
}

/// Hosts that are down, and Raft hosts about to lose power.
#[derive(Default)]
struct Faults {
    down: BTreeMap<String, bool>,
    /// A Raft host's crash waits (until the deadline at most) for a moment when a write is not yet synced,
    /// so crashes test what the disk keeps, not only clean stops.
    armed: BTreeMap<String, Duration>,
}

/// How long an armed crash waits for an unsynced write before it cuts the power anyway.
const ARMED_CRASH_WAIT: Duration = Duration::from_millis(1_000);

fn fire_armed_crashes(sim: &mut turmoil::Sim<'_>, shared: &Shared, faults: &mut Faults, now: Duration) {
    let due: Vec<String> = faults
        .armed
        .iter()
        .filter(|(host, deadline)| {
            now >= **deadline || shared.borrow().nodes.iter().any(|n| &n.name == *host && n.disk.has_unsynced())
        })
        .map(|(host, _)| host.clone())
        .collect();
    for host in due {
        faults.armed.remove(&host);
        crash(sim, shared, faults, &host);
    }
}

fn crash(sim: &mut turmoil::Sim<'_>, shared: &Shared, faults: &mut Faults, host: &str) -> bool {
    if faults.down.get(host).copied().unwrap_or(false) {
        return false;
    }
    sim.crash(host.to_string());
    faults.down.insert(host.to_string(), true);
    let mut world = shared.borrow_mut();
    if let Some(slot) = world.nodes.iter_mut().find(|n| n.name == host) {
        slot.node = None;
        let lost = slot.disk.crash();
        let at = sim.elapsed();
        world.trace.push(at, host, format!("crashes ({lost} unsynced writes lost)"));
    } else {
        let at = sim.elapsed();
        world.trace.push(at, host, "crashes");
    }
    true
}

fn restart(sim: &mut turmoil::Sim<'_>, shared: &Shared, faults: &mut Faults, host: &str) {
    faults.armed.remove(host);
    if faults.down.insert(host.to_string(), false).unwrap_or(false) {
        let at = sim.elapsed();
        shared.borrow_mut().trace.push(at, host, "restarts");
        sim.bounce(host.to_string());
    }
}

fn act(
    sim: &mut turmoil::Sim<'_>,
    shared: &Shared,
    scenario: &Scenario,
    hosts: &[String],
    faults: &mut Faults,
    action: Action,
    now: Duration,
) {
    let note = |text: String| shared.borrow_mut().trace.push(now, "sim", text);
    match action {
        Action::Start(i) => {
            let fault = scenario.faults[i].fault.clone();
            note(format!("fault starts: {fault:?}"));
            match fault {
                Fault::Crash { node, .. } => {
                    faults.armed.insert(scenario.node_name(node), now + ARMED_CRASH_WAIT);
                }
                Fault::Partition { side, .. } => {
                    for a in &side {
                        for b in hosts.iter().filter(|h| !side.contains(h)) {
                            sim.partition(a.as_str(), b.as_str());
                        }
                    }
                }
                Fault::OneWay { from, to, .. } => sim.partition_oneway(from.as_str(), to.as_str()),
                Fault::Loss { permille, .. } => sim.set_fail_rate(f64::from(permille) / 1000.0),
                Fault::Delay { max_ms, .. } => sim.set_max_message_latency(Duration::from_millis(max_ms)),
                Fault::Skew { node, ms } => shared.borrow().nodes[node].clock.set_skew_ms(ms),
                Fault::SlowDisk { node, ms, .. } => {
                    shared.borrow().nodes[node].disk.set_sync_delay(Duration::from_millis(ms))
                }
                Fault::WorkerCrash { worker, .. } => {
                    crash(sim, shared, faults, &format!("w{}", worker + 1));
                }
                Fault::WorkerStall { worker, for_ms } => {
                    shared.borrow_mut().workers[worker].stall = Some(Duration::from_millis(for_ms));
                }
                Fault::AgentCrash { agent, .. } => {
                    crash(sim, shared, faults, &agent);
                }
            }
        }
        Action::End(i) => {
            let fault = scenario.faults[i].fault.clone();
            note(format!("fault ends: {fault:?}"));
            match fault {
                Fault::Crash { node, .. } => restart(sim, shared, faults, &scenario.node_name(node)),
                Fault::Partition { side, .. } => {
                    for a in &side {
                        for b in hosts.iter().filter(|h| !side.contains(h)) {
                            sim.repair(a.as_str(), b.as_str());
                        }
                    }
                }
                Fault::OneWay { from, to, .. } => sim.repair_oneway(from.as_str(), to.as_str()),
                Fault::Loss { .. } => sim.set_fail_rate(0.0),
                Fault::Delay { .. } => sim.set_max_message_latency(MAX_LATENCY),
                Fault::SlowDisk { node, .. } => {
                    shared.borrow().nodes[node].disk.set_sync_delay(Duration::from_millis(scenario.sync_ms))
                }
                Fault::WorkerCrash { worker, .. } => restart(sim, shared, faults, &format!("w{}", worker + 1)),
                Fault::AgentCrash { agent, .. } => restart(sim, shared, faults, &agent),
                Fault::Skew { .. } | Fault::WorkerStall { .. } => {}
            }
        }
        Action::Heal => {
            note("faults stop: network, disks and clocks healed, crashed hosts restarted".into());
            for (i, a) in hosts.iter().enumerate() {
                for b in &hosts[i + 1..] {
                    sim.repair(a.as_str(), b.as_str());
                }
            }
            sim.set_fail_rate(0.0);
            sim.set_max_message_latency(MAX_LATENCY);
            for slot in &shared.borrow().nodes {
                slot.clock.set_skew_ms(0);
                slot.disk.set_sync_delay(Duration::from_millis(scenario.sync_ms));
            }
            for host in hosts {
                restart(sim, shared, faults, host);
            }
        }
    }
}

/// Whether the healed cluster has converged: a leader, every build terminal, every rollout ended (complete,
/// failed, rolled back, aborted or superseded: its deadline bounds how long a wave may wait), every
/// acknowledged build present, every replica (voters and learners) applied as far as the leader, and with
/// region agents every host agent on the desired versions that target it. Violations of the final checks
/// are errors.
fn converged(world: &World, checker: &Checker) -> Result<bool, Violation> {
    if !world.client_done {
        return Ok(false);
    }
    let Some(leader) = world.nodes.iter().filter_map(|n| n.node.as_ref()).find(|n| n.is_leader()) else {
        return Ok(false);
    };
    let leader_applied = leader.applied_index();
    let all_terminal = leader.read(|v| v.state.jobs.values().all(|j| j.status.is_terminal()));
    if !all_terminal {
        return Ok(false);
    }
    // Without region agents the client never stops deploying and no manager reports: rollouts are left
    // to the runs with agents.
    if !world.agents.is_empty() && leader.read(|v| v.state.unfinished_rollouts().next().is_some()) {
        return Ok(false);
    }
    for slot in &world.nodes {
        match &slot.node {
            Some(node) if node.applied_index() >= leader_applied => {}
            _ => return Ok(false),
        }
    }
    if checker.shadow_index() < leader_applied {
        return Ok(false);
    }
    if !world.agents.is_empty() && (!world.deploys_done || !hosts_run_desired(world)) {
        return Ok(false);
    }
    acknowledged_build_never_lost::check(checker.shadow(), &world.acked_submits, true)?;
    Ok(true)
}

/// Every host agent a desired version targets runs it (or was reported failed for it), as its region's
/// learner holds them.
fn hosts_run_desired(world: &World) -> bool {
    hosts_behind(world).is_empty()
}

/// What one host agent's region says of it for one desired version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Its `current` link is the desired version's release.
    Runs,
    /// The region's manager reported it failed for this generation (fetch, verify, install or activate):
    /// final for the generation, the manager does not send it the deploy again.
    ReportedFailed,
    /// Neither yet.
    Behind,
}

/// For every host agent and every desired version in its region's learner state that targets it
/// ([`HostDeclaration::runs`], as the manager decides) and still switches hosts (its rollout has not
/// ended, or ended complete): where it is, in words, with its progress. A host the version does not target
/// is not expected to run it (`host_runs_only_its_services` holds it to not); nor is one of a rollout that
/// halted before its wave opened (`halted_rollout_activates_nothing_new` holds it to not switch).
fn host_progress(world: &World) -> Vec<(Progress, String)> {
    let learners: Vec<_> = world.nodes.iter().filter(|n| !n.voter).collect();
    let cluster = ClusterName::parse(agents::CLUSTER).ok();
    let mut progress = Vec::new();
    for agent in world.agents.iter().filter(|a| !a.manager) {
        let Some((learner, node)) = learners.get(agent.region).and_then(|l| Some((l, l.node.as_ref()?))) else {
            progress.push((Progress::Behind, format!("{}: its learner is down", agent.name)));
            continue;
        };
        let region = agents::region_of(&learner.name);
        let declaration = HostDeclaration { services: agent.services.clone(), labels: BTreeMap::new() };
        node.read(|v| {
            for (service, version) in &v.state.desired {
                if !declaration.runs(service, &version.artifact.deploy) || !version.progress.switching() {
                    continue;
                }
                let current =
                    super::invariants::host_activates_only_manifest_bytes::current(&agent.data_dir, service.as_str());
                let at = current.as_ref().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("nothing");
                let want = agents::short(&version.artifact.digest);
                let generation = version.generation;
                if at == version.artifact.digest.as_str() {
                    progress.push((Progress::Runs, format!("{} runs {service} at {want}", agent.name)));
                    continue;
                }
                let reported = cluster.as_ref().and_then(|c| {
                    let rollout = v.state.rollouts.get(&(service.clone(), generation))?;
                    let failures = &rollout.get(&(region.clone(), c.clone()))?.failures;
                    failures.hosts.iter().find(|f| f.host == agent.name).map(|f| f.reason.clone())
                });
                let at = at.rsplit(':').next().unwrap_or(at);
                match reported {
                    Some(reason) => progress.push((
                        Progress::ReportedFailed,
                        format!("{} failed {service} generation {generation} ({reason}), runs {at}", agent.name),
                    )),
                    None => {
                        progress.push((Progress::Behind, format!("{} runs {service} at {at} not {want}", agent.name)))
                    }
                }
            }
        });
    }
    progress
}

/// Host agents that neither run the desired version that targets them nor were reported failed, in words.
fn hosts_behind(world: &World) -> Vec<String> {
    host_progress(world).into_iter().filter(|(p, _)| *p == Progress::Behind).map(|(_, what)| what).collect()
}

/// Host agents the convergence accepted as reported failed, in words (for the trace: in the simulation a
/// host fails only under a bug or a fault that outlasted its deploy).
fn hosts_reported_failed(world: &World) -> Vec<String> {
    host_progress(world).into_iter().filter(|(p, _)| *p == Progress::ReportedFailed).map(|(_, what)| what).collect()
}

/// Why the cluster has not converged at `now` (after the heal, so every clock is unskewed), for the
/// failure report.
fn not_converged(world: &World, now: Duration) -> String {
    let mut parts = vec![format!("client done: {}, deploys done: {}", world.client_done, world.deploys_done)];
    parts.extend(hosts_behind(world));
    if let Some(leader) = world.nodes.iter().filter_map(|n| n.node.as_ref()).find(|n| n.is_leader()) {
        // Not the node's clock: outside a host's turn it has no simulated time to read.
        let now = cascade_core::UnixMillis(super::clock::EPOCH_MS + now.as_millis() as u64);
        parts.extend(leader.read(|v| {
            let state = &v.state;
            state
                .unfinished_rollouts()
                .filter_map(|service| state.desired.get(service))
                .map(|d| {
                    let stage = cascade_core::rollout::describe_stage(&d.policy, &d.progress, d.control, now);
                    format!("{} generation {} rollout unfinished: {stage}", d.service, d.generation)
                })
                .collect::<Vec<_>>()
        }));
    }
    for slot in &world.nodes {
        match &slot.node {
            None => parts.push(format!("{} down", slot.name)),
            Some(node) => {
                let (role, unfinished) = (
                    node.raft.metrics().borrow().state,
                    node.read(|v| v.state.jobs.values().filter(|j| !j.status.is_terminal()).count()),
                );
                parts.push(format!(
                    "{} {role:?} applied {} with {unfinished} unfinished builds",
                    slot.name,
                    node.applied_index()
                ));
            }
        }
    }
    parts.join("; ")
}
