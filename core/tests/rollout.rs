//! The rollout gate through `State::apply`: waves open in order only after the previous one baked, a
//! manual wave waits for Promote, a wave over its failure budget halts or rolls back, a wave without
//! progress fails at its deadline naming what it waits for, and every rollout ends in exactly one state.

use cascade_core::api::RolloutReport;
use cascade_core::deploy::{HostFailure, HostFailures};
use cascade_core::rollout::{
    admitted, BudgetText, EndState, RolloutPolicy, RolloutProgress, RolloutSection, WaveSection,
};
use cascade_core::state::{DeployOrigin, DesiredVersion, RolloutControl, RolloutCounts};
use cascade_core::{
    Artifact, ClusterName, Command, CommandError, CommitSha, Digest, JobId, JobStatus, Principal, Region, RepoUrl,
    Request, ServiceName, State, UnixMillis,
};

fn service() -> ServiceName {
    ServiceName::parse("api").unwrap()
}
fn region(name: &str) -> Region {
    Region::parse(name).unwrap()
}
fn cluster(name: &str) -> ClusterName {
    ClusterName::parse(name).unwrap()
}
fn request(at: u64, actor: &str, command: Command) -> Request {
    Request { at: UnixMillis(at), actor: Principal::parse(actor).unwrap(), command }
}

/// A succeeded build of `api` with artifact `n`.
fn build(state: &mut State, at: u64, n: u8) -> JobId {
    let submit = Command::SubmitBuild {
        repo: RepoUrl::parse("https://git.example.com/api.git").unwrap(),
        commit: CommitSha::parse(format!("{n:02x}").repeat(20)).unwrap(),
        service: service(),
        idempotency_key: None,
    };
    let Ok(cascade_core::CommandOutput::Job(job)) = state.apply(&request(at, "bob", submit)) else { panic!("submit") };
    let worker = cascade_core::WorkerId::parse("w1").unwrap();
    let Ok(cascade_core::CommandOutput::Claimed(Some(claimed))) =
        state.apply(&request(at + 1, "w1", Command::Claim { worker }))
    else {
        panic!("claim")
    };
    let artifact = Artifact {
        digest: Digest::parse(format!("{n:02x}").repeat(32)).unwrap(),
        size: 1,
        manifest_key: "m".into(),
        deploy: Default::default(),
    };
    state.apply(&request(at + 2, "w1", Command::Succeed { lease: claimed.lease, artifact })).unwrap();
    assert!(matches!(state.jobs[&job.id].status, JobStatus::Succeeded { .. }));
    job.id
}

/// Two clusters (`eu/c1`, `us/c1`) whose managers hold leases at `at`.
fn with_clusters(state: &mut State, at: u64) {
    for r in ["eu", "us"] {
        let lease = Command::AcquireManagerLease {
            region: region(r),
            cluster: cluster("c1"),
            holder: format!("m-{r}"),
            ttl_ms: 600_000,
        };
        state.apply(&request(at, "mgr", lease)).unwrap();
    }
}

fn policy(waves: &[WaveSection], bake_secs: u64, budget: u64, on_failure: &str) -> RolloutSection {
    RolloutSection {
        waves: Some(waves.to_vec()),
        bake_secs: Some(bake_secs),
        failure_budget: Some(BudgetText::Hosts(budget)),
        on_failure: Some(on_failure.into()),
        progress_deadline_secs: Some(30),
        ..RolloutSection::default()
    }
}
fn hosts(n: u64) -> WaveSection {
    WaveSection { hosts: Some(n), ..WaveSection::default() }
}
fn percent(p: u64) -> WaveSection {
    WaveSection { percent: Some(p), ..WaveSection::default() }
}

fn deploy(state: &mut State, at: u64, build: JobId, rollout: RolloutSection) -> DesiredVersion {
    let rollout = rollout.to_override().expect("a valid override");
    let command = Command::SetDesiredVersion { service: service(), build, rollout: Some(Box::new(rollout)) };
    match state.apply(&request(at, "dora", command)) {
        Ok(cascade_core::CommandOutput::Desired(d)) => d,
        other => panic!("deploy: {other:?}"),
    }
}

/// `region/c1` reports `total` hosts of which `active` healthy and `failed` failed.
fn report(state: &mut State, at: u64, generation: u64, r: &str, total: u64, active: u64, failed: u64) {
    let failures = HostFailures::bounded(
        (0..failed).map(|i| HostFailure { host: format!("{r}-bad{i}"), reason: "health: 500".into() }).collect(),
    );
    let counts = RolloutCounts { total, active, failed, verified: total - active - failed, ..Default::default() };
    let report = RolloutReport {
        service: service(),
        generation,
        region: region(r),
        cluster: cluster("c1"),
        counts,
        failures,
        holder: Some(format!("m-{r}")),
        pending: Vec::new(),
    };
    state.apply(&request(at, "mgr", Command::ReportRollout(Box::new(report)))).unwrap();
}

fn step(state: &mut State, at: u64, generation: u64) -> Result<DesiredVersion, CommandError> {
    match state.apply(&request(at, "rollout-controller", Command::StepRollout { service: service(), generation })) {
        Ok(cascade_core::CommandOutput::Desired(d)) => Ok(d),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    }
}

fn progress(state: &State) -> &RolloutProgress {
    &state.desired[&service()].progress
}

#[test]
fn waves_open_in_order_after_each_bake_and_the_rollout_completes() {
    let mut state = State::default();
    with_clusters(&mut state, 10);
    let b = build(&mut state, 100, 1);
    let d = deploy(&mut state, 1_000, b, policy(&[hosts(1), percent(50), percent(100)], 2, 0, "rollback"));
    let g = d.generation;
    assert!(progress(&state).opened.is_empty());
    // The first wave waits for both clusters' sizes.
    report(&mut state, 1_100, g, "eu", 4, 0, 0);
    assert!(step(&mut state, 1_200, g).is_err(), "us/c1 has not reported yet");
    report(&mut state, 1_300, g, "us", 4, 0, 0);
    step(&mut state, 1_400, g).unwrap();
    let p = progress(&state);
    assert_eq!(p.opened.len(), 1);
    assert_eq!(p.opened[0].allotment.len(), 1, "one host, in the first cluster by name");
    let d = &state.desired[&service()];
    assert_eq!(admitted(&d.policy, p, &region("eu"), &cluster("c1"), 4), 1);
    assert_eq!(admitted(&d.policy, p, &region("us"), &cluster("c1"), 4), 0);
    // Nothing healthy yet: no step.
    assert!(step(&mut state, 1_500, g).is_err());
    report(&mut state, 2_000, g, "eu", 4, 1, 0);
    step(&mut state, 2_100, g).unwrap();
    assert_eq!(progress(&state).healthy_since, Some(UnixMillis(2_100)), "the bake starts");
    assert!(step(&mut state, 3_000, g).is_err(), "baking: the next wave must wait 2 s");
    step(&mut state, 4_100, g).unwrap();
    assert_eq!(progress(&state).opened.len(), 2, "wave 2 opens once wave 1 baked");
    let d = &state.desired[&service()];
    assert_eq!(admitted(&d.policy, &d.progress, &region("us"), &cluster("c1"), 4), 2, "50 %");
    report(&mut state, 5_000, g, "eu", 4, 2, 0);
    report(&mut state, 5_100, g, "us", 4, 2, 0);
    step(&mut state, 5_200, g).unwrap();
    step(&mut state, 7_300, g).unwrap();
    assert_eq!(progress(&state).opened.len(), 3);
    report(&mut state, 8_000, g, "eu", 4, 4, 0);
    report(&mut state, 8_100, g, "us", 4, 4, 0);
    step(&mut state, 8_200, g).unwrap();
    assert!(progress(&state).end.is_none(), "the last wave bakes too");
    let done = step(&mut state, 10_300, g).unwrap();
    let end = done.progress.end.expect("ended");
    assert_eq!(end.state, EndState::Complete);
    assert!(state.audit.iter().any(|a| a.action == "complete_rollout"));
    // Ended: no more steps, no control.
    assert!(step(&mut state, 11_000, g).is_err());
    let pause = Command::ControlRollout { service: service(), generation: g, control: RolloutControl::Paused };
    let err = state.apply(&request(11_000, "dora", pause)).unwrap_err();
    assert!(err.to_string().contains("it ended (complete"), "{err}");
}

#[test]
fn a_canary_over_budget_rolls_back_to_the_previous_build_as_a_new_generation() {
    let mut state = State::default();
    with_clusters(&mut state, 10);
    let good = build(&mut state, 100, 1);
    let bad = build(&mut state, 200, 2);
    let first = deploy(&mut state, 300, good, RolloutSection::default());
    let d = deploy(&mut state, 1_000, bad, policy(&[hosts(1), percent(100)], 0, 0, "rollback"));
    assert_eq!(state.deploy_history[&service()][0].progress.end.as_ref().unwrap().state, EndState::Superseded);
    assert_eq!(first.generation + 1, d.generation);
    report(&mut state, 1_100, d.generation, "eu", 4, 0, 0);
    report(&mut state, 1_100, d.generation, "us", 4, 0, 0);
    step(&mut state, 1_200, d.generation).unwrap();
    report(&mut state, 2_000, d.generation, "eu", 4, 0, 1);
    let after = step(&mut state, 2_100, d.generation).unwrap();
    assert_eq!(after.build, good, "the previous build is desired again");
    assert_eq!(after.origin, DeployOrigin::AutoRollback { of: d.generation });
    assert_eq!(after.policy, RolloutPolicy::rollback_of(&d.policy), "one wave, every host at once");
    let history = &state.deploy_history[&service()];
    let rolled = history.iter().find(|h| h.generation == d.generation).unwrap();
    let end = rolled.progress.end.as_ref().unwrap();
    assert_eq!(end.state, EndState::RolledBack);
    assert!(end.reason.contains("wave 1 of 2") && end.reason.contains("1 of 1 hosts failed"), "{}", end.reason);
    assert!(end.hosts.iter().any(|h| h.starts_with("eu-bad0")), "{:?}", end.hosts);
    // A roll back never returns to the build just rolled back: with only the two, there is nothing to.
    assert_eq!(state.rollback_target(&service()), None);
    let err = state.apply(&request(2_200, "dora", Command::Rollback { service: service() })).unwrap_err();
    assert!(matches!(err, CommandError::NothingToRollBack(_)), "{err}");
    // With an earlier build that completed, that one is the target.
    let older = build(&mut state, 2_300, 3);
    let third = deploy(&mut state, 2_400, older, policy(&[percent(100)], 0, 0, "halt"));
    report(&mut state, 2_500, third.generation, "eu", 4, 0, 0);
    report(&mut state, 2_500, third.generation, "us", 4, 0, 0);
    step(&mut state, 2_600, third.generation).unwrap();
    report(&mut state, 2_700, third.generation, "eu", 4, 4, 0);
    report(&mut state, 2_700, third.generation, "us", 4, 4, 0);
    let done = step(&mut state, 2_800, third.generation).unwrap();
    assert_eq!(done.progress.end.as_ref().map(|e| e.state), Some(EndState::Complete));
    deploy(&mut state, 2_900, good, RolloutSection::default());
    assert_eq!(state.rollback_target(&service()).map(|(b, _)| b), Some(older), "the completed one, not {bad}");
}

#[test]
fn a_failure_within_budget_completes_and_halt_keeps_the_generation() {
    let mut state = State::default();
    with_clusters(&mut state, 10);
    let b = build(&mut state, 100, 1);
    let d = deploy(&mut state, 1_000, b, policy(&[percent(100)], 0, 2, "halt"));
    report(&mut state, 1_100, d.generation, "eu", 4, 0, 0);
    report(&mut state, 1_100, d.generation, "us", 4, 0, 0);
    step(&mut state, 1_200, d.generation).unwrap();
    report(&mut state, 2_000, d.generation, "eu", 4, 3, 1);
    report(&mut state, 2_000, d.generation, "us", 4, 4, 0);
    let end = step(&mut state, 2_100, d.generation).unwrap().progress.end.unwrap();
    assert_eq!(end.state, EndState::Complete);

    let again = build(&mut state, 3_000, 2);
    let d = deploy(&mut state, 4_000, again, policy(&[percent(100)], 0, 0, "halt"));
    report(&mut state, 4_100, d.generation, "eu", 4, 0, 0);
    report(&mut state, 4_100, d.generation, "us", 4, 0, 0);
    step(&mut state, 4_200, d.generation).unwrap();
    report(&mut state, 5_000, d.generation, "us", 4, 0, 1);
    let halted = step(&mut state, 5_100, d.generation).unwrap();
    assert_eq!(halted.generation, d.generation, "a halt deploys nothing");
    assert_eq!(halted.progress.end.unwrap().state, EndState::Failed);
}

#[test]
fn a_manual_wave_waits_for_promote() {
    let mut state = State::default();
    with_clusters(&mut state, 10);
    let b = build(&mut state, 100, 1);
    let manual = WaveSection { percent: Some(100), approval: Some("manual".into()), ..WaveSection::default() };
    let d = deploy(&mut state, 1_000, b, policy(&[hosts(1), manual], 0, 0, "halt"));
    let g = d.generation;
    let promote = || Command::PromoteRollout { service: service(), generation: g };
    report(&mut state, 1_100, g, "eu", 2, 0, 0);
    report(&mut state, 1_100, g, "us", 2, 0, 0);
    step(&mut state, 1_200, g).unwrap();
    let err = state.apply(&request(1_300, "dora", promote())).unwrap_err();
    assert!(err.to_string().contains("not waiting for approval"), "{err}");
    report(&mut state, 2_000, g, "eu", 2, 1, 0);
    step(&mut state, 2_100, g).unwrap();
    assert!(progress(&state).awaiting_approval);
    assert!(step(&mut state, 60_000, g).is_err(), "waits, and no deadline runs while it waits");
    state.apply(&request(60_100, "dora", promote())).unwrap();
    assert_eq!(progress(&state).opened.len(), 2);
    assert!(!progress(&state).awaiting_approval);
}

#[test]
fn a_wave_without_progress_fails_at_its_deadline_naming_the_silent_cluster() {
    let mut state = State::default();
    with_clusters(&mut state, 10);
    let b = build(&mut state, 100, 1);
    let d = deploy(&mut state, 1_000, b, policy(&[percent(100)], 0, 0, "rollback"));
    let g = d.generation;
    report(&mut state, 1_100, g, "eu", 2, 0, 0);
    // us/c1's manager never reports: the first wave opens after the grace period anyway.
    assert!(step(&mut state, 5_000, g).is_err());
    step(&mut state, 11_100, g).unwrap();
    report(&mut state, 12_000, g, "eu", 2, 2, 0);
    assert!(step(&mut state, 30_000, g).is_err(), "within the 30 s deadline");
    let end = step(&mut state, 42_100, g).unwrap().progress.end.unwrap();
    assert_eq!(end.state, EndState::Failed, "a deadline halts, it does not roll back");
    assert!(end.reason.contains("us/c1 (its manager has not reported)"), "{}", end.reason);
}

#[test]
fn abort_ends_the_rollout_and_pause_stops_the_gate() {
    let mut state = State::default();
    with_clusters(&mut state, 10);
    let b = build(&mut state, 100, 1);
    let d = deploy(&mut state, 1_000, b, policy(&[percent(100)], 0, 0, "halt"));
    let g = d.generation;
    let control = |c| Command::ControlRollout { service: service(), generation: g, control: c };
    report(&mut state, 1_100, g, "eu", 2, 0, 0);
    report(&mut state, 1_100, g, "us", 2, 0, 0);
    state.apply(&request(1_150, "dora", control(RolloutControl::Paused))).unwrap();
    assert!(step(&mut state, 1_200, g).is_err(), "paused: the gate does nothing");
    assert!(step(&mut state, 100_000, g).is_err(), "nor does the deadline run");
    state.apply(&request(100_100, "dora", control(RolloutControl::Running))).unwrap();
    step(&mut state, 100_200, g).unwrap();
    let aborted = state.apply(&request(100_300, "dora", control(RolloutControl::Aborted))).unwrap();
    let cascade_core::CommandOutput::Desired(aborted) = aborted else { panic!() };
    assert_eq!(aborted.progress.end.unwrap().state, EndState::Aborted);
}

#[test]
fn policies_that_cannot_work_are_refused_naming_the_field() {
    let base = RolloutPolicy::default();
    let bad = [
        (policy(&[percent(50), percent(25), percent(100)], 0, 0, "halt"), "must grow"),
        (policy(&[percent(50)], 0, 0, "halt"), "last wave"),
        (policy(&[hosts(1), percent(100)], 0, 3, "halt"), "over the size of a wave of 1"),
        (policy(&[percent(100)], 0, 0, "explode"), "deploy.on_failure"),
        (
            policy(
                &[WaveSection { cluster: Some("c1".into()), percent: Some(5), ..Default::default() }, percent(100)],
                0,
                0,
                "halt",
            ),
            "set `region` too",
        ),
        (
            policy(
                &[WaveSection { hosts: Some(1), percent: Some(5), ..Default::default() }, percent(100)],
                0,
                0,
                "halt",
            ),
            "exactly one of",
        ),
        (
            RolloutSection { failure_budget: Some(BudgetText::Text("lots".into())), ..Default::default() },
            "deploy.failure_budget",
        ),
        (RolloutSection { progress_deadline_secs: Some(0), ..Default::default() }, "deploy.progress_deadline_secs"),
    ];
    for (section, expected) in bad {
        let err = section.apply_to(&base).expect_err(expected);
        assert!(err.to_string().contains(expected), "{err} should mention {expected}");
    }
    let ok = RolloutSection { failure_budget: Some(BudgetText::Text("5%".into())), ..Default::default() };
    assert_eq!(ok.apply_to(&base).unwrap().failure_budget, cascade_core::rollout::FailureBudget::Percent(5));

    // A wave naming a region no manager serves is refused at deploy time, changing nothing.
    let mut state = State::default();
    with_clusters(&mut state, 10);
    let b = build(&mut state, 100, 1);
    let in_mars = WaveSection { hosts: Some(1), region: Some("mars".into()), ..Default::default() };
    let before = state.clone();
    let command = Command::SetDesiredVersion {
        service: service(),
        build: b,
        rollout: Some(Box::new(policy(&[in_mars, percent(100)], 0, 0, "halt").to_override().unwrap())),
    };
    let err = state.apply(&request(1_000, "dora", command)).unwrap_err();
    assert!(err.to_string().contains("no region mars is known (known regions: eu, us)"), "{err}");
    assert_eq!(state, before);
}

#[test]
fn percentages_round_up_and_regions_select() {
    let section = RolloutSection {
        waves: Some(vec![
            WaveSection { percent: Some(5), region: Some("us".into()), ..Default::default() },
            percent(25),
            percent(100),
        ]),
        ..Default::default()
    };
    let policy = section.apply_to(&RolloutPolicy::default()).unwrap();
    let mut progress = RolloutProgress::new(UnixMillis(0));
    let open = |p: &mut RolloutProgress| {
        p.opened.push(cascade_core::rollout::OpenedWave {
            at: UnixMillis(1),
            allotment: vec![],
            failed_before: 0,
            admitted_before: 0,
        })
    };
    open(&mut progress);
    assert_eq!(admitted(&policy, &progress, &region("us"), &cluster("c1"), 10), 1, "5 % of 10 rounds up to 1");
    assert_eq!(admitted(&policy, &progress, &region("eu"), &cluster("c1"), 10), 0, "only us in wave 1");
    open(&mut progress);
    assert_eq!(admitted(&policy, &progress, &region("eu"), &cluster("c1"), 10), 3);
    open(&mut progress);
    assert_eq!(admitted(&policy, &progress, &region("eu"), &cluster("c1"), 10), 10);
}

/// The log and the snapshots are bincode: a deploy with overrides, the desired version it makes (policy,
/// progress, end) and a report with pending hosts must come back as they went in.
#[test]
fn rollout_commands_and_state_round_trip_through_bincode() {
    let mut state = State::default();
    with_clusters(&mut state, 4);
    let b = build(&mut state, 100, 1);
    let section = RolloutSection {
        waves: Some(vec![
            WaveSection { hosts: Some(1), region: Some("us".into()), ..Default::default() },
            percent(100),
        ]),
        failure_budget: Some(BudgetText::Text("25%".into())),
        on_failure: Some("rollback".into()),
        ..Default::default()
    };
    let command = Command::SetDesiredVersion {
        service: service(),
        build: b,
        rollout: Some(Box::new(section.to_override().unwrap())),
    };
    let bytes = bincode::serialize(&command).unwrap();
    assert_eq!(bincode::deserialize::<Command>(&bytes).unwrap(), command);
    state.apply(&request(200, "dora", command)).unwrap();
    let mut report = RolloutReport {
        service: service(),
        generation: 1,
        region: region("us"),
        cluster: ClusterName::parse("c1").unwrap(),
        counts: RolloutCounts { total: 4, verified: 4, ..Default::default() },
        failures: HostFailures::default(),
        holder: None,
        pending: vec!["us-h1".into()],
    };
    let as_command = Command::ReportRollout(Box::new(report.clone()));
    let bytes = bincode::serialize(&as_command).unwrap();
    assert_eq!(bincode::deserialize::<Command>(&bytes).unwrap(), as_command);
    report.pending.clear();
    let bytes = bincode::serialize(&state).unwrap();
    assert_eq!(bincode::deserialize::<State>(&bytes).unwrap(), state);
}

/// A standby that took over knows only the hosts that reconnected to it: its smaller report does not
/// finish the wave, and the deadline names the hosts it does not know; offline admitted hosts, which the
/// manager does know, do not hold the wave.
#[test]
fn a_report_with_fewer_hosts_does_not_finish_a_wave_but_offline_hosts_do_not_hold_it() {
    let mut state = State::default();
    with_clusters(&mut state, 10);
    let b = build(&mut state, 100, 1);
    let g = deploy(&mut state, 1_000, b, policy(&[percent(100)], 0, 0, "halt")).generation;
    report(&mut state, 1_100, g, "eu", 4, 4, 0);
    report(&mut state, 1_200, g, "us", 4, 0, 0);
    step(&mut state, 1_300, g).unwrap();
    // us/c1's new manager knows 2 of its 4 hosts, both healthy.
    report(&mut state, 2_000, g, "us", 2, 2, 0);
    assert!(step(&mut state, 2_100, g).is_err(), "2 of us/c1's 4 hosts are unknown: the wave is not done");
    let d = step(&mut state, 700_000, g).unwrap();
    let end = d.progress.end.unwrap();
    assert_eq!(end.state, EndState::Failed);
    assert!(end.reason.contains("us/c1: 2 of its 4 hosts not connected to its manager"), "{}", end.reason);

    // Offline hosts the manager knows (admitted, no verdict) do not hold the wave.
    with_clusters(&mut state, 799_000);
    let g = deploy(&mut state, 800_000, b, policy(&[percent(100)], 0, 0, "halt")).generation;
    report(&mut state, 800_100, g, "eu", 4, 4, 0);
    let counts = RolloutCounts { total: 3, active: 3, offline: 1, admitted_offline: 1, ..Default::default() };
    let report = RolloutReport {
        service: service(),
        generation: g,
        region: region("us"),
        cluster: cluster("c1"),
        counts,
        failures: HostFailures::default(),
        holder: Some("m-us".into()),
        pending: vec!["us-h3 (offline)".into()],
    };
    state.apply(&request(800_200, "mgr", Command::ReportRollout(Box::new(report)))).unwrap();
    step(&mut state, 800_300, g).unwrap();
    let d = step(&mut state, 800_400, g).unwrap();
    let end = d.progress.end.unwrap();
    assert_eq!(end.state, EndState::Complete, "{end:?}");
    assert!(end.reason.contains("1 offline hosts switch when they return"), "{}", end.reason);
}
