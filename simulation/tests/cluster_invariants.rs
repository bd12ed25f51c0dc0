//! Each invariant checker, fed a small hand-made history, flags the break it exists for and passes the
//! correct history: a checker that never fires would make every seed look green.

use cascade_core::state::DesiredVersion;
use cascade_core::{
    Artifact, Command, CommandOutput, CommitSha, Digest, JobId, JobStatus, Lease, Principal, RepoUrl, Request,
    ServiceName, State, UnixMillis, WorkerId,
};
use cascade_simulation::cluster::invariants::{
    acknowledged_build_never_lost, desired_generation_grows, no_stale_lease_result, single_running_attempt,
    terminal_states_final,
};
use cascade_simulation::cluster::world::AckedSubmit;

fn request(at: u64, actor: &str, command: Command) -> Request {
    Request { at: UnixMillis(at), actor: Principal::parse(actor).expect("valid actor"), command }
}

fn submit(key: &str, commit: &str) -> Command {
    Command::SubmitBuild {
        repo: RepoUrl::parse("https://git.example.com/app.git").expect("valid repo"),
        commit: CommitSha::parse(commit).expect("valid commit"),
        service: ServiceName::parse("api").expect("valid service"),
        idempotency_key: Some(key.into()),
    }
}

fn claim(worker: &str) -> Command {
    Command::Claim { worker: WorkerId::parse(worker).expect("valid worker") }
}

/// One build, claimed by w1 (attempt 1), requeued as stale, claimed again by w2 (attempt 2).
fn two_attempts() -> State {
    let mut state = State::default();
    let steps = [
        request(1_000, "client", submit("k1", &"a".repeat(40))),
        request(2_000, "w1", claim("w1")),
        request(60_000, "monitor", Command::RequeueStale { timeout_ms: 3_000 }),
        request(61_000, "w2", claim("w2")),
    ];
    for step in &steps {
        state.apply(step).expect("the setup is accepted");
    }
    state
}

#[test]
fn a_stale_heartbeat_is_flagged_only_if_accepted() {
    let state = two_attempts();
    let stale = request(62_000, "w1", Command::Heartbeat { lease: Lease { job: JobId(0), attempt: 1 } });
    let reason = no_stale_lease_result::stale_reason(&state, &stale);
    assert!(reason.is_some(), "attempt 1 is stale once attempt 2 runs");
    let accepted = Ok(CommandOutput::Heartbeat(cascade_core::HeartbeatAck { cancelled: false }));
    let violation = no_stale_lease_result::check(reason.clone(), &stale, &accepted, 9).expect_err("flagged");
    assert_eq!(violation.invariant, "no_stale_lease_result");
    let mut copy = state.clone();
    let refused = copy.apply(&stale);
    assert!(no_stale_lease_result::check(reason, &stale, &refused, 9).is_ok(), "a refusal is what must happen");
    let current = request(62_000, "w2", Command::Heartbeat { lease: Lease { job: JobId(0), attempt: 2 } });
    assert!(no_stale_lease_result::stale_reason(&state, &current).is_none());
}

#[test]
fn an_older_attempt_making_progress_is_flagged() {
    let state = two_attempts();
    let mut tracker = single_running_attempt::Tracker::default();
    let newer = request(62_000, "w2", Command::Heartbeat { lease: Lease { job: JobId(0), attempt: 2 } });
    let ok = Ok(CommandOutput::Heartbeat(cascade_core::HeartbeatAck { cancelled: false }));
    tracker.check(&state, &newer, &ok, 5).expect("the running attempt may heartbeat");
    let older = request(63_000, "w1", Command::Heartbeat { lease: Lease { job: JobId(0), attempt: 1 } });
    let violation = tracker.check(&state, &older, &ok, 6).expect_err("attempt 1 after attempt 2");
    assert_eq!(violation.invariant, "single_running_attempt");
}

#[test]
fn a_rewritten_terminal_state_is_flagged() {
    let mut state = two_attempts();
    let artifact = Artifact {
        digest: Digest::parse("b".repeat(64)).expect("valid digest"),
        size: 1,
        manifest_key: "m".into(),
        deploy: Default::default(),
    };
    let succeed = request(63_000, "w2", Command::Succeed { lease: Lease { job: JobId(0), attempt: 2 }, artifact });
    state.apply(&succeed).expect("the running attempt may succeed");
    let mut tracker = terminal_states_final::Tracker::default();
    tracker.check(&state, 6).expect("first sight of a terminal state");
    tracker.check(&state, 7).expect("unchanged");
    if let Some(job) = state.jobs.get_mut(&JobId(0)) {
        job.status = JobStatus::Failed { reason: "rewritten".into() };
    }
    assert_eq!(tracker.check(&state, 8).expect_err("flagged").invariant, "terminal_states_final");
}

#[test]
fn a_generation_that_skips_or_goes_back_is_flagged() {
    let mut state = State::default();
    let service = ServiceName::parse("api").expect("valid service");
    let desired = |generation| DesiredVersion {
        service: service.clone(),
        build: JobId(0),
        artifact: Artifact {
            digest: Digest::parse("c".repeat(64)).expect("valid digest"),
            size: 1,
            manifest_key: "m".into(),
            deploy: Default::default(),
        },
        generation,
        set_by: Principal::parse("client").expect("valid principal"),
        set_at: UnixMillis(0),
        control: Default::default(),
        policy: Default::default(),
        progress: Default::default(),
        origin: Default::default(),
    };
    let mut tracker = desired_generation_grows::Tracker::default();
    state.desired.insert(service.clone(), desired(1));
    tracker.check(&state, 1).expect("0 -> 1");
    state.desired.insert(service.clone(), desired(3));
    assert_eq!(tracker.check(&state, 2).expect_err("1 -> 3").invariant, "desired_generation_grows");
}

#[test]
fn a_lost_or_reassigned_acknowledged_build_is_flagged() {
    let state = two_attempts();
    let acked = |job, key: &str, commit: String| AckedSubmit { job: JobId(job), key: key.into(), commit };
    assert!(acknowledged_build_never_lost::check(&state, &[acked(0, "k1", "a".repeat(40))], true).is_ok());
    let other_commit = [acked(0, "k1", "b".repeat(40))];
    assert!(acknowledged_build_never_lost::check(&state, &other_commit, false).is_err());
    let missing = [acked(5, "k9", "a".repeat(40))];
    assert!(acknowledged_build_never_lost::check(&state, &missing, false).is_ok(), "not reached yet");
    assert!(acknowledged_build_never_lost::check(&state, &missing, true).is_err(), "must exist at the end");
}

/// A host's data dir with `services/api/current` pointing at a release named `named` holding `bytes`.
fn host_with_release(dir: &std::path::Path, named: &Digest, bytes: &[u8]) {
    host_with_release_as(dir, named, "artifact", bytes);
}

/// The same with the artifact installed as `install_as`, beside the manifest and the spec as a host keeps
/// them (neither is the artifact).
fn host_with_release_as(dir: &std::path::Path, named: &Digest, install_as: &str, bytes: &[u8]) {
    let release = dir.join("releases").join(named.as_str());
    std::fs::create_dir_all(&release).expect("release dir");
    std::fs::write(release.join(install_as), bytes).expect("artifact");
    std::fs::write(release.join("manifest.json"), b"{}").expect("manifest");
    std::fs::write(release.join("deploy-api.json"), b"{}").expect("spec");
    let service = dir.join("services").join("api");
    std::fs::create_dir_all(&service).expect("service dir");
    let _ = std::fs::remove_file(service.join("current"));
    std::os::unix::fs::symlink(&release, service.join("current")).expect("current link");
}

#[test]
fn an_activated_release_whose_bytes_or_origin_are_wrong_is_flagged() {
    use cascade_core::state::ArtifactRecord;
    use cascade_simulation::cluster::invariants::host_activates_only_manifest_bytes::Tracker;
    use std::collections::BTreeMap;
    let dir = std::env::temp_dir().join(format!("cascade-sim-invariant-{}", std::process::id()));
    let api = ServiceName::parse("api").expect("valid service");
    let good = b"the bytes the build produced".to_vec();
    let digest = cascade_core::manifest::hash_bytes(&good);
    let record = ArtifactRecord {
        artifact: Artifact {
            digest: digest.clone(),
            size: good.len() as u64,
            manifest_key: "m".into(),
            deploy: Default::default(),
        },
        build: JobId(0),
        replication: BTreeMap::new(),
        replicated_at: BTreeMap::new(),
        updated_at: UnixMillis(0),
    };
    let built = BTreeMap::from([(digest.clone(), record)]);

    host_with_release(&dir.join("h1"), &digest, &good);
    let mut tracker = Tracker::default();
    assert!(tracker.check("h1", &dir.join("h1"), &api, &built).is_ok(), "the right bytes of a built artifact pass");

    let mut corrupt = good.clone();
    corrupt[0] ^= 0xff;
    host_with_release(&dir.join("h2"), &digest, &corrupt);
    let flagged = tracker.check("h2", &dir.join("h2"), &api, &built).expect_err("corrupt bytes are flagged");
    assert_eq!(flagged.invariant, "host_activates_only_manifest_bytes");

    let stranger = b"bytes no build produced".to_vec();
    host_with_release(&dir.join("h3"), &cascade_core::manifest::hash_bytes(&stranger), &stranger);
    let flagged = tracker.check("h3", &dir.join("h3"), &api, &built).expect_err("an unbuilt artifact is flagged");
    assert!(flagged.detail.contains("no build produced"), "{}", flagged.detail);

    // The artifact under the name its spec gives it (`install_as`) is found and hashed all the same.
    host_with_release_as(&dir.join("h4"), &digest, "api-server", &good);
    assert!(tracker.check("h4", &dir.join("h4"), &api, &built).is_ok(), "the right bytes under another name pass");
    host_with_release_as(&dir.join("h5"), &digest, "api-server", &corrupt);
    let flagged = tracker.check("h5", &dir.join("h5"), &api, &built).expect_err("corrupt bytes under another name");
    assert_eq!(flagged.invariant, "host_activates_only_manifest_bytes");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// Builds of `services` in order, each claimed and succeeded with the artifact of the digest beside it.
fn built(builds: &[(&str, &Digest)]) -> State {
    let mut state = State::default();
    for (i, (service, digest)) in builds.iter().enumerate() {
        let at = 1_000 * (i as u64 + 1);
        let submit = Command::SubmitBuild {
            repo: RepoUrl::parse("https://git.example.com/app.git").expect("valid repo"),
            commit: CommitSha::parse(format!("{i:040}")).expect("valid commit"),
            service: ServiceName::parse(*service).expect("valid service"),
            idempotency_key: Some(format!("k{i}")),
        };
        state.apply(&request(at, "client", submit)).expect("submitted");
        state.apply(&request(at + 1, "w1", claim("w1"))).expect("claimed");
        let artifact =
            Artifact { digest: (*digest).clone(), size: 1, manifest_key: "m".into(), deploy: Default::default() };
        let lease = Lease { job: JobId(i as u64), attempt: 1 };
        state.apply(&request(at + 2, "w1", Command::Succeed { lease, artifact })).expect("succeeded");
    }
    state
}

#[test]
fn a_host_holding_or_running_a_service_it_does_not_run_is_flagged() {
    use cascade_simulation::cluster::invariants::host_runs_only_its_services::{
        check_activation, check_files, services_by_digest,
    };
    use std::collections::BTreeSet;
    let dir = std::env::temp_dir().join(format!("cascade-sim-services-{}", std::process::id()));
    let digest = |c: &str| Digest::parse(c.repeat(64)).expect("valid digest");
    let (api_only, web_only, shared, unknown) = (digest("a"), digest("b"), digest("c"), digest("d"));
    // Builds of api and web; the third, of web, produced the same bytes as the second, of api.
    let state = built(&[("api", &api_only), ("api", &shared), ("web", &shared), ("web", &web_only)]);
    let by_digest = services_by_digest(&state);
    let api = ServiceName::parse("api").expect("valid service");
    let web = ServiceName::parse("web").expect("valid service");
    let runs_api = BTreeSet::from([api.clone()]);
    let host = |name: &str| {
        let host = dir.join(name);
        for sub in ["incoming", "releases", "services"] {
            std::fs::create_dir_all(host.join(sub)).expect("layout");
        }
        host
    };

    let h1 = host("h1");
    std::fs::write(h1.join("incoming").join(format!("{api_only}.part")), b"").expect("download");
    std::fs::create_dir_all(h1.join("releases").join(shared.as_str())).expect("release");
    std::fs::write(h1.join("incoming").join(format!("{unknown}.part")), b"").expect("download");
    std::fs::create_dir_all(h1.join("services").join("web")).expect("a log dir, no link");
    assert!(check_files("h1", &h1, &runs_api, &by_digest).is_ok(), "its own, shared and unknown digests pass");
    assert!(check_activation("h1", &runs_api, &api, &api_only).is_ok());
    let flagged = check_activation("h1", &runs_api, &web, &web_only).expect_err("an activation of web");
    assert_eq!(flagged.invariant, "host_runs_only_its_services");

    let h2 = host("h2");
    std::fs::write(h2.join("incoming").join(format!("{web_only}.part")), b"").expect("download");
    let flagged = check_files("h2", &h2, &runs_api, &by_digest).expect_err("a download of web");
    assert!(flagged.detail.contains("incoming/"), "{}", flagged.detail);

    let h3 = host("h3");
    std::fs::create_dir_all(h3.join("releases").join(web_only.as_str())).expect("release");
    let flagged = check_files("h3", &h3, &runs_api, &by_digest).expect_err("a release of web");
    assert!(flagged.detail.contains("releases/"), "{}", flagged.detail);
    assert!(check_files("h3", &h3, &BTreeSet::new(), &by_digest).is_err(), "a host that runs nothing holds nothing");

    let h4 = host("h4");
    std::fs::create_dir_all(h4.join("services").join("web")).expect("service dir");
    std::os::unix::fs::symlink(h4.join("releases").join(shared.as_str()), h4.join("services/web/current"))
        .expect("link");
    let flagged = check_files("h4", &h4, &runs_api, &by_digest).expect_err("a current link of web");
    assert!(flagged.detail.contains("services/web/current"), "{}", flagged.detail);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// Generation `generation` of `service` deploying build `build` (of `digest`) under the simulation's
/// rollout policy, with `progress`.
fn waved(service: &ServiceName, build: u64, digest: &Digest, generation: u64) -> DesiredVersion {
    let policy = cascade_simulation::cluster::scenario::rollout(0)
        .apply_to(&Default::default())
        .expect("the simulation's policy is valid");
    DesiredVersion {
        service: service.clone(),
        build: JobId(build),
        artifact: Artifact { digest: digest.clone(), size: 1, manifest_key: "m".into(), deploy: Default::default() },
        generation,
        set_by: Principal::parse("client").expect("valid principal"),
        set_at: UnixMillis(0),
        control: Default::default(),
        policy,
        progress: Default::default(),
        origin: Default::default(),
    }
}

/// Makes `version` the current one of its service, in the desired versions and the history.
fn make_current(state: &mut State, version: &DesiredVersion) {
    state.desired.insert(version.service.clone(), version.clone());
    let history = state.deploy_history.entry(version.service.clone()).or_default();
    history.retain(|d| d.generation != version.generation);
    history.push(version.clone());
}

fn opened(at: u64, allotment: Vec<cascade_core::rollout::Allotment>) -> cascade_core::rollout::OpenedWave {
    cascade_core::rollout::OpenedWave { at: UnixMillis(at), allotment, failed_before: 0, admitted_before: 0 }
}

fn ended(state: cascade_core::rollout::EndState) -> Option<cascade_core::rollout::RolloutEnd> {
    Some(cascade_core::rollout::RolloutEnd { state, at: UnixMillis(9_000), reason: "test".into(), hosts: vec![] })
}

#[test]
fn a_wave_opened_before_the_last_one_baked_is_flagged() {
    use cascade_simulation::cluster::invariants::wave_order::Bakes;
    let api = ServiceName::parse("api").expect("valid service");
    let mut version = waved(&api, 0, &Digest::parse("a".repeat(64)).expect("valid digest"), 1);
    let mut state = State::default();
    let mut bakes = Bakes::default();
    make_current(&mut state, &version);
    bakes.check(&state, 1).expect("nothing opened");
    version.progress.opened.push(opened(1_000, vec![]));
    make_current(&mut state, &version);
    bakes.check(&state, 2).expect("the first wave has nothing to bake");
    version.progress.healthy_since = Some(UnixMillis(2_000));
    make_current(&mut state, &version);
    bakes.check(&state, 3).expect("healthy");

    // The policy bakes 1 s: a wave 999 ms after the last one was found healthy is early, 1 s is not.
    let (mut early, mut on_time) = (version.clone(), version.clone());
    early.progress.opened.push(opened(2_999, vec![]));
    early.progress.healthy_since = None;
    on_time.progress.opened.push(opened(3_000, vec![]));
    on_time.progress.healthy_since = None;
    let (mut early_state, mut early_bakes) = (state.clone(), Bakes::default());
    early_bakes.check(&state, 3).expect("seen healthy");
    make_current(&mut early_state, &early);
    let flagged = early_bakes.check(&early_state, 4).expect_err("opened before the bake");
    assert_eq!(flagged.invariant, "wave_order");
    assert!(flagged.detail.contains("baked 999 ms"), "{}", flagged.detail);
    make_current(&mut state, &on_time);
    bakes.check(&state, 4).expect("opened after the bake");

    // A wave opened without the last one ever found healthy skipped the bake altogether.
    let mut unbaked = waved(&api, 0, &Digest::parse("a".repeat(64)).expect("valid digest"), 2);
    unbaked.progress.opened.push(opened(5_000, vec![]));
    make_current(&mut state, &unbaked);
    bakes.check(&state, 5).expect("a new generation's first wave");
    unbaked.progress.opened.push(opened(9_000, vec![]));
    make_current(&mut state, &unbaked);
    let flagged = bakes.check(&state, 6).expect_err("never healthy");
    assert!(flagged.detail.contains("before it was found healthy"), "{}", flagged.detail);
}

#[test]
fn an_activation_no_open_wave_admits_is_flagged() {
    use cascade_core::rollout::{wave_rank, Allotment, EndState};
    use cascade_core::{ClusterName, Region};
    use cascade_simulation::cluster::invariants::wave_order::{check_activation, Cluster};
    let api = ServiceName::parse("api").expect("valid service");
    let digest = Digest::parse("a".repeat(64)).expect("valid digest");
    let region = Region::parse("region-l1").expect("valid region");
    let cluster = ClusterName::parse("c1").expect("valid cluster");
    let targeted = vec!["h1a".to_string(), "h1b".to_string()];
    let place = Cluster { region: &region, cluster: &cluster, targeted: &targeted };
    let mut version = waved(&api, 0, &digest, 1);
    let (first, second) = if wave_rank("h1a", 1) < wave_rank("h1b", 1) { ("h1a", "h1b") } else { ("h1b", "h1a") };
    let mut state = State::default();
    make_current(&mut state, &version);
    let flagged = check_activation(&state, first, &place, &api, &digest).expect_err("no wave open");
    assert_eq!(flagged.invariant, "wave_order");

    // The canary wave gives this cluster one host: the first in wave order.
    let canary = Allotment { region: region.clone(), cluster: cluster.clone(), hosts: 1 };
    version.progress.opened.push(opened(1_000, vec![canary]));
    make_current(&mut state, &version);
    check_activation(&state, first, &place, &api, &digest).expect("the canary");
    let flagged = check_activation(&state, second, &place, &api, &digest).expect_err("not the canary");
    assert!(flagged.detail.contains("1 of 2 hosts admitted"), "{}", flagged.detail);
    let other = Digest::parse("b".repeat(64)).expect("valid digest");
    assert!(check_activation(&state, first, &place, &api, &other).is_err(), "no generation deploys it");

    // Half of two hosts is still the canary; the whole cluster, or a completed rollout, admits both.
    version.progress.opened.push(opened(3_000, vec![]));
    make_current(&mut state, &version);
    assert!(check_activation(&state, second, &place, &api, &digest).is_err(), "50 % of 2 is 1");
    let mut complete = version.clone();
    complete.progress.end = ended(EndState::Complete);
    make_current(&mut state, &complete);
    check_activation(&state, second, &place, &api, &digest).expect("a completed rollout admits every host");
}

#[test]
fn an_activation_long_after_its_rollout_ended_is_flagged() {
    use cascade_core::rollout::EndState;
    use cascade_simulation::cluster::invariants::halted_rollout_activates_nothing_new::{Tracker, GRACE};
    use std::time::Duration;
    let api = ServiceName::parse("api").expect("valid service");
    let digest = Digest::parse("a".repeat(64)).expect("valid digest");
    let mut version = waved(&api, 0, &digest, 1);
    let mut state = State::default();
    let mut tracker = Tracker::default();
    make_current(&mut state, &version);
    assert!(tracker.note(&state, Duration::from_secs(1)).is_empty(), "nothing ended");
    version.progress.end = ended(EndState::Failed);
    make_current(&mut state, &version);
    assert_eq!(tracker.note(&state, Duration::from_secs(10)).len(), 1, "the halt is noted");
    let at = |secs| Duration::from_secs(10) + Duration::from_secs(secs);
    tracker.check_activation(&state, "h1a", &api, &digest, at(1)).expect("an activation on its way");
    let flagged = tracker.check_activation(&state, "h1a", &api, &digest, at(GRACE.as_secs() + 1));
    assert_eq!(flagged.expect_err("long after the halt").invariant, "halted_rollout_activates_nothing_new");

    // The same build deployed again by a rollout that still switches may be activated.
    let again = waved(&api, 0, &digest, 2);
    make_current(&mut state, &again);
    tracker.note(&state, at(20));
    tracker.check_activation(&state, "h1a", &api, &digest, at(60)).expect("the new generation switches");
}

#[test]
fn a_rollback_to_the_wrong_build_or_a_host_left_on_the_failed_release_is_flagged() {
    use cascade_core::rollout::{DeployOrigin, EndState};
    use cascade_core::state::{ClusterRollout, RolloutCounts};
    use cascade_core::{ClusterName, Region};
    use cascade_simulation::cluster::invariants::rollback_restores_previous::{check_build, Host, Tracker};
    let api = ServiceName::parse("api").expect("valid service");
    let (good, bad) = (Digest::parse("a".repeat(64)).expect("digest"), Digest::parse("b".repeat(64)).expect("digest"));
    let mut state = State::default();
    let mut first = waved(&api, 0, &good, 1);
    first.progress.end = ended(EndState::Superseded);
    make_current(&mut state, &first);
    let mut failed = waved(&api, 1, &bad, 2);
    failed.progress.end = ended(EndState::RolledBack);
    make_current(&mut state, &failed);
    let mut rollback = waved(&api, 0, &good, 3);
    rollback.origin = DeployOrigin::AutoRollback { of: 2 };
    make_current(&mut state, &rollback);
    check_build(&state, 7).expect("back to build 0");
    let mut wrong = rollback.clone();
    wrong.build = JobId(1);
    let mut wrong_state = state.clone();
    make_current(&mut wrong_state, &wrong);
    assert_eq!(check_build(&wrong_state, 7).expect_err("build 1 failed").invariant, "rollback_restores_previous");

    // h1a switched to the failed release; the rollback completed and its report counts both hosts active.
    let dir = std::env::temp_dir().join(format!("cascade-sim-rollback-{}", std::process::id()));
    let (h1a, h1b) = (dir.join("h1a"), dir.join("h1b"));
    host_with_release(&h1a, &bad, b"bad");
    host_with_release(&h1b, &good, b"good");
    let region = Region::parse("region-l1").expect("valid region");
    let cluster = ClusterName::parse("c1").expect("valid cluster");
    rollback.progress.end = ended(EndState::Complete);
    make_current(&mut state, &rollback);
    let counts = RolloutCounts { total: 2, active: 2, ..Default::default() };
    let report = ClusterRollout {
        counts,
        reported_at: UnixMillis(9_000),
        reported_by: None,
        failures: Default::default(),
        pending: vec![],
        hosts_seen: 2,
    };
    state.rollouts.insert((api.clone(), 3), [((region.clone(), cluster.clone()), report)].into());
    let hosts = |_: &ServiceName| {
        [("h1a", &h1a), ("h1b", &h1b)]
            .into_iter()
            .map(|(name, data_dir)| Host { name, region: &region, cluster: &cluster, data_dir, targeted: true })
            .collect()
    };
    let mut tracker = Tracker::default();
    tracker.activated("h1a", &api, &bad);
    let flagged = tracker.check_hosts(&state, hosts).expect_err("h1a still runs the failed release");
    assert_eq!(flagged.invariant, "rollback_restores_previous");
    host_with_release(&h1a, &good, b"good");
    tracker.check_hosts(&state, hosts).expect("h1a runs the previous release again");
    std::fs::remove_dir_all(&dir).expect("clean up");
}
