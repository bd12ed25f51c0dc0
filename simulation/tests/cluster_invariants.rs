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
    let artifact =
        Artifact { digest: Digest::parse("b".repeat(64)).expect("valid digest"), size: 1, manifest_key: "m".into() };
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
        },
        generation,
        set_by: Principal::parse("client").expect("valid principal"),
        set_at: UnixMillis(0),
        control: Default::default(),
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
    let release = dir.join("releases").join(named.as_str());
    std::fs::create_dir_all(&release).expect("release dir");
    std::fs::write(release.join("artifact"), bytes).expect("artifact");
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
        artifact: Artifact { digest: digest.clone(), size: good.len() as u64, manifest_key: "m".into() },
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
    std::fs::remove_dir_all(&dir).expect("clean up");
}
