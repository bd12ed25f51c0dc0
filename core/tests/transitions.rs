//! One test per transition of `State::apply`: what an accepted command does, and that a refused one
//! changes nothing.

use cascade_core::state::{ReplicationStatus, RolloutCounts};
use cascade_core::{
    Artifact, ClaimedJob, ClusterName, Command, CommandError, CommandOutput, CommitSha, Digest, HeartbeatAck, JobId,
    JobStatus, Lease, Principal, Region, RepoUrl, Request, ServiceName, StaleReport, State, UnixMillis, WorkerId,
};

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

fn principal(name: &str) -> Principal {
    Principal::parse(name).unwrap()
}

fn worker(name: &str) -> WorkerId {
    WorkerId::parse(name).unwrap()
}

fn service(name: &str) -> ServiceName {
    ServiceName::parse(name).unwrap()
}

fn region(name: &str) -> Region {
    Region::parse(name).unwrap()
}

fn cluster(name: &str) -> ClusterName {
    ClusterName::parse(name).unwrap()
}

fn commit(n: u8) -> CommitSha {
    CommitSha::parse(format!("{n:02x}").repeat(20)).unwrap()
}

fn digest(n: u8) -> Digest {
    Digest::parse(format!("{n:02x}").repeat(32)).unwrap()
}

fn artifact(n: u8) -> Artifact {
    Artifact {
        digest: digest(n),
        size: 1000 + u64::from(n),
        manifest_key: format!("manifests/{n}"),
        deploy: Default::default(),
    }
}

fn ms(t: u64) -> UnixMillis {
    UnixMillis(t)
}

fn request(at: u64, actor: &str, command: Command) -> Request {
    Request { at: ms(at), actor: principal(actor), command }
}

fn submit_command(svc: &str, n: u8) -> Command {
    Command::SubmitBuild {
        repo: RepoUrl::parse("https://git.example.com/org/repo.git").unwrap(),
        commit: commit(n),
        service: service(svc),
        idempotency_key: None,
    }
}

/// Submits a build of `svc` at `at` and returns its id.
fn submit(state: &mut State, at: u64, svc: &str) -> JobId {
    match state.apply(&request(at, "alice", submit_command(svc, 1))) {
        Ok(CommandOutput::Job(job)) => job.id,
        other => panic!("submit refused: {other:?}"),
    }
}

/// Claims the oldest queued job for worker `w` at `at`; panics if nothing was queued.
fn claim(state: &mut State, at: u64, w: &str) -> ClaimedJob {
    match state.apply(&request(at, w, Command::Claim { worker: worker(w) })) {
        Ok(CommandOutput::Claimed(Some(claimed))) => claimed,
        other => panic!("claim did not hand out a job: {other:?}"),
    }
}

fn heartbeat(lease: Lease) -> Command {
    Command::Heartbeat { lease }
}

fn succeed(lease: Lease, n: u8) -> Command {
    Command::Succeed { lease, artifact: artifact(n) }
}

fn fail(lease: Lease, retryable: bool) -> Command {
    Command::Fail { lease, reason: "compiler crashed".into(), retryable }
}

/// Submits, claims and succeeds one build of `svc`; returns its id.
fn succeeded_build(state: &mut State, at: u64, svc: &str, artifact_no: u8) -> JobId {
    let id = submit(state, at, svc);
    let claimed = claim(state, at + 1, "w1");
    assert_eq!(claimed.lease.job, id, "test setup expects an empty queue");
    state.apply(&request(at + 2, "w1", succeed(claimed.lease, artifact_no))).unwrap();
    id
}

fn status(state: &State, id: JobId) -> &JobStatus {
    &state.jobs[&id].status
}

/// Applies `req` and checks it is refused with `expected` and leaves the state exactly as it was.
fn assert_refused_unchanged(state: &mut State, req: Request, expected: impl Fn(&CommandError) -> bool) {
    let before = state.clone();
    let result = state.apply(&req);
    match &result {
        Err(err) => assert!(expected(err), "{:?} refused with an unexpected error: {err:?}", req.command),
        Ok(out) => panic!("{:?} was accepted: {out:?}", req.command),
    }
    assert_eq!(*state, before, "refused {:?} changed the state", req.command);
}

fn is_stale_lease(lease: Lease) -> impl Fn(&CommandError) -> bool {
    move |err| matches!(err, CommandError::StaleLease { lease: l, .. } if *l == lease)
}

// ---------------------------------------------------------------------------------------------------------
// Submit
// ---------------------------------------------------------------------------------------------------------

#[test]
fn submit_queues_builds_with_ids_in_submission_order() {
    let mut state = State::default();
    let first = submit(&mut state, 100, "api");
    let second = submit(&mut state, 200, "web");

    assert_eq!((first, second), (JobId(0), JobId(1)));
    assert_eq!(state.next_job_id, 2);
    assert_eq!(state.queue.iter().copied().collect::<Vec<_>>(), vec![first, second]);
    assert!(state.running.is_empty());
    let job = &state.jobs[&second];
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.attempt, 0);
    assert_eq!(job.max_attempts, 3);
    assert_eq!(job.service, service("web"));
    assert_eq!(job.requested_by, principal("alice"));
    assert_eq!(job.submitted_at, ms(200));
    assert_eq!(job.finished_at, None);
    assert_eq!(job.timeline.len(), 1);
    assert_eq!(job.timeline[0].at, ms(200));
}

#[test]
fn submit_writes_an_audit_entry() {
    let mut state = State::default();
    submit(&mut state, 100, "api");
    submit(&mut state, 150, "api");

    assert_eq!(state.audit.len(), 2);
    let entry = &state.audit[1];
    assert_eq!(entry.seq, 2);
    assert_eq!(entry.at, ms(150));
    assert_eq!(entry.actor, principal("alice"));
    assert_eq!(entry.action, "submit_build");
    assert!(entry.detail.contains("build 1"), "{}", entry.detail);
}

#[test]
fn a_repeated_idempotency_key_returns_the_first_build_and_queues_nothing() {
    let mut state = State::default();
    let keyed = |n| Command::SubmitBuild {
        repo: RepoUrl::parse("/srv/git/repo").unwrap(),
        commit: commit(n),
        service: service("api"),
        idempotency_key: Some("retry-1".into()),
    };
    let first = state.apply(&request(100, "alice", keyed(1))).unwrap();
    let jobs_before = state.jobs.clone();
    let audit_before = state.audit.len();

    let again = state.apply(&request(200, "alice", keyed(1))).unwrap();

    assert_eq!(again, first);
    assert_eq!(state.jobs, jobs_before);
    assert_eq!(state.queue.len(), 1);
    assert_eq!(state.next_job_id, 1);
    assert_eq!(state.audit.len(), audit_before);
    let other = submit(&mut state, 300, "api");
    assert_eq!(other, JobId(1), "a submission without a key is a new build");
}

// ---------------------------------------------------------------------------------------------------------
// Claim
// ---------------------------------------------------------------------------------------------------------

#[test]
fn claim_takes_the_oldest_queued_build() {
    let mut state = State::default();
    let a = submit(&mut state, 100, "api");
    let b = submit(&mut state, 110, "api");
    let c = submit(&mut state, 120, "api");

    assert_eq!(claim(&mut state, 200, "w1").lease.job, a);
    assert_eq!(claim(&mut state, 210, "w2").lease.job, b);
    assert_eq!(state.queue.iter().copied().collect::<Vec<_>>(), vec![c]);
}

#[test]
fn a_requeued_build_is_claimed_before_newer_ones() {
    let mut state = State::default();
    let old = submit(&mut state, 100, "api");
    let first = claim(&mut state, 200, "w1");
    let newer = submit(&mut state, 250, "api");
    state.apply(&request(300, "w1", fail(first.lease, true))).unwrap();

    assert_eq!(claim(&mut state, 400, "w2").lease.job, old);
    assert_eq!(claim(&mut state, 410, "w3").lease.job, newer);
}

#[test]
fn claim_runs_the_build_under_a_new_lease() {
    let mut state = State::default();
    let id = submit(&mut state, 100, "api");
    let claimed = claim(&mut state, 200, "w1");

    assert_eq!(claimed.lease, Lease { job: id, attempt: 1 });
    assert_eq!(claimed.job, state.jobs[&id]);
    assert_eq!(
        *status(&state, id),
        JobStatus::Running {
            worker: worker("w1"),
            attempt: 1,
            started_at: ms(200),
            last_heartbeat: ms(200),
            cancel_requested_by: None,
        }
    );
    assert_eq!(state.jobs[&id].attempt, 1);
    assert!(state.queue.is_empty());
    assert!(state.running.contains(&(ms(200), id)));
    assert_eq!(state.workers[&worker("w1")], ms(200));
    assert_eq!(state.audit.last().unwrap().action, "claim");
}

#[test]
fn claim_attempt_numbers_grow_1_2_3_across_requeues() {
    let mut state = State::default();
    let id = submit(&mut state, 100, "api");

    let first = claim(&mut state, 200, "w1");
    assert_eq!(first.lease, Lease { job: id, attempt: 1 });
    state.apply(&request(300, "w1", fail(first.lease, true))).unwrap();

    let second = claim(&mut state, 400, "w2");
    assert_eq!(second.lease, Lease { job: id, attempt: 2 });
    // The worker goes silent; the monitor requeues the build.
    state.apply(&request(10_000, "monitor", Command::RequeueStale { timeout_ms: 1000 })).unwrap();

    let third = claim(&mut state, 10_100, "w3");
    assert_eq!(third.lease, Lease { job: id, attempt: 3 });
    assert_eq!(state.jobs[&id].attempt, 3);
}

#[test]
fn claim_on_an_empty_queue_returns_none_and_changes_no_job() {
    let mut state = State::default();
    submit(&mut state, 100, "api");
    let running = claim(&mut state, 200, "w1");
    succeeded_build(&mut state, 300, "api", 7);
    assert!(state.queue.is_empty());
    let jobs_before = state.jobs.clone();
    let running_before = state.running.clone();

    let result = state.apply(&request(400, "w2", Command::Claim { worker: worker("w2") }));

    assert_eq!(result, Ok(CommandOutput::Claimed(None)));
    assert_eq!(state.jobs, jobs_before);
    assert_eq!(state.running, running_before);
    assert!(state.queue.is_empty());
    assert_eq!(state.jobs[&running.lease.job].current_lease(), Some(running.lease));
}

// ---------------------------------------------------------------------------------------------------------
// Heartbeat
// ---------------------------------------------------------------------------------------------------------

#[test]
fn heartbeat_with_the_current_lease_updates_last_heartbeat_and_running_index() {
    let mut state = State::default();
    let id = submit(&mut state, 100, "api");
    let claimed = claim(&mut state, 200, "w1");

    let result = state.apply(&request(500, "w1", heartbeat(claimed.lease)));

    assert_eq!(result, Ok(CommandOutput::Heartbeat(HeartbeatAck { cancelled: false })));
    match status(&state, id) {
        JobStatus::Running { last_heartbeat, started_at, attempt, .. } => {
            assert_eq!(*last_heartbeat, ms(500));
            assert_eq!(*started_at, ms(200));
            assert_eq!(*attempt, 1);
        }
        other => panic!("job is {other:?}"),
    }
    assert_eq!(state.running.iter().copied().collect::<Vec<_>>(), vec![(ms(500), id)]);
    assert_eq!(state.workers[&worker("w1")], ms(500));
}

#[test]
fn heartbeat_from_an_older_attempt_is_refused_and_changes_nothing() {
    let mut state = State::default();
    submit(&mut state, 100, "api");
    let old = claim(&mut state, 200, "w1");
    state.apply(&request(5_000, "monitor", Command::RequeueStale { timeout_ms: 1000 })).unwrap();
    let new = claim(&mut state, 5_100, "w2");
    assert_eq!(new.lease.attempt, 2);

    assert_refused_unchanged(&mut state, request(6_000, "w1", heartbeat(old.lease)), is_stale_lease(old.lease));
}

#[test]
fn succeed_from_an_older_attempt_is_refused_and_changes_nothing() {
    let mut state = State::default();
    submit(&mut state, 100, "api");
    let old = claim(&mut state, 200, "w1");
    state.apply(&request(300, "w1", fail(old.lease, true))).unwrap();
    claim(&mut state, 400, "w2");

    assert_refused_unchanged(&mut state, request(500, "w1", succeed(old.lease, 1)), is_stale_lease(old.lease));
    assert!(state.artifacts.is_empty());
}

#[test]
fn fail_from_an_older_attempt_is_refused_and_changes_nothing() {
    let mut state = State::default();
    submit(&mut state, 100, "api");
    let old = claim(&mut state, 200, "w1");
    state.apply(&request(300, "w1", fail(old.lease, true))).unwrap();
    claim(&mut state, 400, "w2");

    assert_refused_unchanged(&mut state, request(500, "w1", fail(old.lease, false)), is_stale_lease(old.lease));
}

#[test]
fn a_lease_from_the_future_is_refused_and_changes_nothing() {
    let mut state = State::default();
    submit(&mut state, 100, "api");
    let current = claim(&mut state, 200, "w1");
    let future = Lease { job: current.lease.job, attempt: 2 };

    assert_refused_unchanged(&mut state, request(300, "w1", heartbeat(future)), is_stale_lease(future));
}

#[test]
fn worker_commands_for_a_build_no_longer_running_are_refused_and_change_nothing() {
    let mut state = State::default();
    let id = succeeded_build(&mut state, 100, "api", 1);
    let finished = Lease { job: id, attempt: 1 };
    // And a build that was requeued, so its lease's attempt is its latest, but it is not running.
    submit(&mut state, 200, "api");
    let requeued = claim(&mut state, 210, "w2");
    state.apply(&request(220, "w2", fail(requeued.lease, true))).unwrap();
    assert_eq!(*status(&state, requeued.lease.job), JobStatus::Queued);

    for lease in [finished, requeued.lease] {
        for command in [heartbeat(lease), succeed(lease, 2), fail(lease, true)] {
            assert_refused_unchanged(&mut state, request(1_000, "w1", command), is_stale_lease(lease));
        }
    }
}

#[test]
fn worker_commands_for_an_unknown_build_are_refused_with_unknown_job() {
    let mut state = State::default();
    submit(&mut state, 100, "api");
    claim(&mut state, 200, "w1");
    let unknown = Lease { job: JobId(42), attempt: 1 };

    for command in [heartbeat(unknown), succeed(unknown, 1), fail(unknown, false)] {
        assert_refused_unchanged(&mut state, request(300, "w1", command), |err| {
            *err == CommandError::UnknownJob(JobId(42))
        });
    }
}

// ---------------------------------------------------------------------------------------------------------
// Succeed and fail
// ---------------------------------------------------------------------------------------------------------

#[test]
fn succeed_records_the_artifact() {
    let mut state = State::default();
    let id = submit(&mut state, 100, "api");
    let claimed = claim(&mut state, 200, "w1");

    let result = state.apply(&request(300, "w1", succeed(claimed.lease, 9)));

    let Ok(CommandOutput::Job(job)) = result else { panic!("succeed refused: {result:?}") };
    assert_eq!(job, state.jobs[&id]);
    assert_eq!(job.status, JobStatus::Succeeded { artifact: artifact(9) });
    assert_eq!(job.finished_at, Some(ms(300)));
    assert!(state.running.is_empty() && state.queue.is_empty());
    let record = &state.artifacts[&digest(9)];
    assert_eq!(record.artifact, artifact(9));
    assert_eq!(record.build, id);
    assert!(record.replication.is_empty());
    assert_eq!(record.updated_at, ms(300));
    assert_eq!(state.audit.last().unwrap().action, "succeed");
}

#[test]
fn non_retryable_fail_fails_the_build_at_once() {
    let mut state = State::default();
    let id = submit(&mut state, 100, "api");
    let claimed = claim(&mut state, 200, "w1");

    state.apply(&request(300, "w1", fail(claimed.lease, false))).unwrap();

    assert_eq!(*status(&state, id), JobStatus::Failed { reason: "compiler crashed".into() });
    assert_eq!(state.jobs[&id].finished_at, Some(ms(300)));
    assert_eq!(state.jobs[&id].attempt, 1);
    assert!(state.running.is_empty() && state.queue.is_empty());
}

#[test]
fn retryable_fail_requeues_until_the_attempt_limit_then_fails() {
    let mut state = State::default();
    let id = submit(&mut state, 100, "api");

    for attempt in 1..=2u64 {
        let claimed = claim(&mut state, 100 * attempt + 100, "w1");
        state.apply(&request(100 * attempt + 150, "w1", fail(claimed.lease, true))).unwrap();
        assert_eq!(*status(&state, id), JobStatus::Queued, "after attempt {attempt}");
        assert!(state.queue.contains(&id));
        assert_eq!(state.jobs[&id].finished_at, None);
    }
    let last = claim(&mut state, 1_000, "w1");
    assert_eq!(last.lease.attempt, 3);
    state.apply(&request(1_100, "w1", fail(last.lease, true))).unwrap();

    match status(&state, id) {
        JobStatus::Failed { reason } => {
            assert!(reason.contains("gave up after 3 attempts"), "{reason}")
        }
        other => panic!("job is {other:?}"),
    }
    assert_eq!(state.jobs[&id].finished_at, Some(ms(1_100)));
    assert!(state.queue.is_empty() && state.running.is_empty());
}

#[test]
fn a_long_failure_reason_is_cut_to_the_bound() {
    let mut state = State::default();
    let id = submit(&mut state, 100, "api");
    let claimed = claim(&mut state, 200, "w1");
    let long = "é".repeat(10_000);

    state.apply(&request(300, "w1", Command::Fail { lease: claimed.lease, reason: long, retryable: false })).unwrap();

    let JobStatus::Failed { reason } = status(&state, id) else { panic!("not failed") };
    assert!(reason.len() <= cascade_core::job::MAX_REASON_BYTES + '…'.len_utf8(), "{} bytes", reason.len());
}

// ---------------------------------------------------------------------------------------------------------
// Stale scan
// ---------------------------------------------------------------------------------------------------------

#[test]
fn requeue_stale_requeues_silent_builds_and_leaves_fresh_ones_alone() {
    let mut state = State::default();
    let silent = submit(&mut state, 100, "api");
    let fresh = submit(&mut state, 100, "api");
    claim(&mut state, 1_000, "w1");
    let fresh_claim = claim(&mut state, 1_000, "w2");
    state.apply(&request(4_500, "w2", heartbeat(fresh_claim.lease))).unwrap();

    let result = state.apply(&request(5_000, "monitor", Command::RequeueStale { timeout_ms: 3_000 }));

    assert_eq!(result, Ok(CommandOutput::Stale(StaleReport { requeued: vec![silent], ..Default::default() })));
    assert_eq!(*status(&state, silent), JobStatus::Queued);
    assert!(state.queue.contains(&silent));
    assert_eq!(state.jobs[&fresh].current_lease(), Some(fresh_claim.lease));
    assert_eq!(state.running.iter().copied().collect::<Vec<_>>(), vec![(ms(4_500), fresh)]);
    assert_eq!(state.audit.last().unwrap().action, "requeue_stale");
}

#[test]
fn a_build_silent_for_exactly_the_timeout_is_not_stale() {
    let mut state = State::default();
    submit(&mut state, 100, "api");
    claim(&mut state, 1_000, "w1");
    let audit_len = state.audit.len();

    let result = state.apply(&request(4_000, "monitor", Command::RequeueStale { timeout_ms: 3_000 }));

    assert_eq!(result, Ok(CommandOutput::Stale(StaleReport::default())));
    assert_eq!(state.running.len(), 1);
    assert_eq!(state.audit.len(), audit_len, "a scan that did nothing is not audited");
}

#[test]
fn requeue_stale_fails_a_build_whose_worker_was_lost_at_the_attempt_limit() {
    let mut state = State::default();
    let id = submit(&mut state, 0, "api");
    let mut now = 0;
    for (attempt, w) in [(1, "w1"), (2, "w2"), (3, "w3")] {
        now += 10_000;
        assert_eq!(claim(&mut state, now, w).lease.attempt, attempt);
        now += 10_000;
        let report = match state.apply(&request(now, "monitor", Command::RequeueStale { timeout_ms: 1_000 })) {
            Ok(CommandOutput::Stale(report)) => report,
            other => panic!("{other:?}"),
        };
        if attempt < 3 {
            assert_eq!(report.requeued, vec![id]);
            assert_eq!(*status(&state, id), JobStatus::Queued);
        } else {
            assert_eq!(report, StaleReport { failed: vec![id], ..Default::default() });
        }
    }

    match status(&state, id) {
        JobStatus::Failed { reason } => {
            assert!(reason.contains("worker lost 3 times"), "{reason}");
            assert!(reason.contains("w3"), "{reason}");
        }
        other => panic!("job is {other:?}"),
    }
    assert_eq!(state.jobs[&id].finished_at, Some(ms(now)));
    assert!(state.queue.is_empty() && state.running.is_empty());
}

#[test]
fn requeue_stale_cancels_a_silent_build_whose_cancel_was_pending() {
    let mut state = State::default();
    let id = submit(&mut state, 100, "api");
    claim(&mut state, 200, "w1");
    state.apply(&request(300, "bob", Command::Cancel { job: id })).unwrap();

    let result = state.apply(&request(10_000, "monitor", Command::RequeueStale { timeout_ms: 1_000 }));

    assert_eq!(result, Ok(CommandOutput::Stale(StaleReport { cancelled: vec![id], ..Default::default() })));
    assert!(matches!(status(&state, id), JobStatus::Cancelled { .. }));
    assert!(state.queue.is_empty() && state.running.is_empty());
}

// ---------------------------------------------------------------------------------------------------------
// Cancel
// ---------------------------------------------------------------------------------------------------------

#[test]
fn cancel_of_a_queued_build_cancels_it_at_once() {
    let mut state = State::default();
    let id = submit(&mut state, 100, "api");

    let result = state.apply(&request(200, "bob", Command::Cancel { job: id }));

    let Ok(CommandOutput::Job(job)) = result else { panic!("cancel refused: {result:?}") };
    assert_eq!(job.status, JobStatus::Cancelled { by: principal("bob") });
    assert_eq!(job.finished_at, Some(ms(200)));
    assert_eq!(state.jobs[&id], job);
    assert!(state.queue.is_empty());
    assert_eq!(
        state.apply(&request(300, "w1", Command::Claim { worker: worker("w1") })),
        Ok(CommandOutput::Claimed(None))
    );
}

#[test]
fn cancel_of_a_running_build_only_requests_the_cancel() {
    let mut state = State::default();
    let id = submit(&mut state, 100, "api");
    let claimed = claim(&mut state, 200, "w1");

    state.apply(&request(300, "bob", Command::Cancel { job: id })).unwrap();

    match status(&state, id) {
        JobStatus::Running { cancel_requested_by, attempt, .. } => {
            assert_eq!(cancel_requested_by, &Some(principal("bob")));
            assert_eq!(*attempt, claimed.lease.attempt);
        }
        other => panic!("job is {other:?}"),
    }
    assert_eq!(state.jobs[&id].finished_at, None);
    assert_eq!(state.running.len(), 1);
}

#[test]
fn the_heartbeat_after_a_cancel_request_tells_the_worker_and_cancels_the_build() {
    let mut state = State::default();
    let id = submit(&mut state, 100, "api");
    let claimed = claim(&mut state, 200, "w1");
    state.apply(&request(300, "bob", Command::Cancel { job: id })).unwrap();

    let result = state.apply(&request(400, "w1", heartbeat(claimed.lease)));

    assert_eq!(result, Ok(CommandOutput::Heartbeat(HeartbeatAck { cancelled: true })));
    // Recorded as cancelled by the person who asked, not by the worker that carried it out.
    assert_eq!(status(&state, id), &JobStatus::Cancelled { by: principal("bob") });
    assert_eq!(state.jobs[&id].finished_at, Some(ms(400)));
    assert!(state.running.is_empty() && state.queue.is_empty());
    // The worker's lease is now dead.
    assert_refused_unchanged(&mut state, request(500, "w1", heartbeat(claimed.lease)), is_stale_lease(claimed.lease));
}

#[test]
fn succeed_after_a_cancel_request_is_refused_and_the_build_is_cancelled() {
    let mut state = State::default();
    let id = submit(&mut state, 100, "api");
    let claimed = claim(&mut state, 200, "w1");
    state.apply(&request(300, "bob", Command::Cancel { job: id })).unwrap();

    let result = state.apply(&request(400, "w1", succeed(claimed.lease, 3)));

    assert!(
        matches!(&result, Err(CommandError::WrongState { job, status, .. }) if *job == id && status == "cancelled"),
        "{result:?}"
    );
    // Recorded as cancelled by the person who asked, not by the worker that carried it out.
    assert_eq!(status(&state, id), &JobStatus::Cancelled { by: principal("bob") });
    assert_eq!(state.jobs[&id].finished_at, Some(ms(400)));
    assert_eq!(state.clock, ms(400), "the refusal changed the state, so it moves the clock");
    assert!(state.artifacts.is_empty(), "a discarded result must not become an artifact");
    assert!(state.running.is_empty() && state.queue.is_empty());
    assert_eq!(
        state.apply(&request(
            500,
            "carol",
            Command::SetDesiredVersion { service: service("api"), build: id, rollout: None }
        )),
        Err(CommandError::NotDeployable { job: id, status: "cancelled".into() })
    );
}

#[test]
fn a_job_timeline_keeps_the_submission_and_the_latest_events() {
    let mut state = State::default();
    let id = submit(&mut state, 100, "api");
    claim(&mut state, 200, "w1");
    for at in 300..340 {
        state.apply(&request(at, "bob", Command::Cancel { job: id })).unwrap();
    }

    let timeline = &state.jobs[&id].timeline;
    assert_eq!(timeline.len(), cascade_core::job::MAX_TIMELINE_EVENTS);
    assert_eq!(timeline[0].at, ms(100), "the submission event is kept");
    assert_eq!(timeline.last().unwrap().at, ms(339));
    assert!(timeline.windows(2).all(|w| w[0].at <= w[1].at));
}

#[test]
fn cancel_of_a_finished_build_is_refused_with_wrong_state() {
    let mut state = State::default();
    let succeeded = succeeded_build(&mut state, 100, "api", 1);
    let failed = submit(&mut state, 200, "api");
    let lease = claim(&mut state, 210, "w1").lease;
    state.apply(&request(220, "w1", fail(lease, false))).unwrap();
    let cancelled = submit(&mut state, 300, "api");
    state.apply(&request(310, "bob", Command::Cancel { job: cancelled })).unwrap();

    for (id, name) in [(succeeded, "succeeded"), (failed, "failed"), (cancelled, "cancelled")] {
        assert_refused_unchanged(
            &mut state,
            request(1_000, "bob", Command::Cancel { job: id }),
            |err| matches!(err, CommandError::WrongState { job, status, .. } if *job == id && status == name),
        );
    }
}

#[test]
fn cancel_of_an_unknown_build_is_refused_with_unknown_job() {
    let mut state = State::default();
    submit(&mut state, 100, "api");

    assert_refused_unchanged(&mut state, request(200, "bob", Command::Cancel { job: JobId(5) }), |err| {
        *err == CommandError::UnknownJob(JobId(5))
    });
}

// ---------------------------------------------------------------------------------------------------------
// Deploy and rollout
// ---------------------------------------------------------------------------------------------------------

#[test]
fn set_desired_version_deploys_succeeded_builds_with_generations_1_2_3() {
    let mut state = State::default();
    let builds = [
        succeeded_build(&mut state, 100, "api", 1),
        succeeded_build(&mut state, 200, "api", 2),
        succeeded_build(&mut state, 300, "api", 3),
    ];

    for (i, build) in builds.iter().enumerate() {
        let at = 1_000 + i as u64;
        let result = state.apply(&request(
            at,
            "carol",
            Command::SetDesiredVersion { service: service("api"), build: *build, rollout: None },
        ));
        let Ok(CommandOutput::Desired(desired)) = result else { panic!("deploy refused: {result:?}") };
        assert_eq!(desired.generation, i as u64 + 1);
        assert_eq!(desired.build, *build);
        assert_eq!(desired.artifact, artifact(i as u8 + 1));
        assert_eq!(desired.set_by, principal("carol"));
        assert_eq!(desired.set_at, ms(at));
        assert_eq!(state.desired[&service("api")], desired);
    }
    let history: Vec<u64> = state.deploy_history[&service("api")].iter().map(|d| d.generation).collect();
    assert_eq!(history, vec![1, 2, 3]);
}

#[test]
fn deploy_history_keeps_the_latest_deploys() {
    let mut state = State::default();
    let build = succeeded_build(&mut state, 100, "api", 1);
    let limit = cascade_core::state::MAX_DEPLOY_HISTORY as u64;
    for at in 0..limit + 5 {
        state
            .apply(&request(
                1_000 + at,
                "carol",
                Command::SetDesiredVersion { service: service("api"), build, rollout: None },
            ))
            .unwrap();
    }

    let history = &state.deploy_history[&service("api")];
    assert_eq!(history.len() as u64, limit);
    assert_eq!(history[0].generation, 6);
    assert_eq!(history.last().unwrap().generation, limit + 5);
    assert_eq!(state.desired[&service("api")].generation, limit + 5);
}

#[test]
fn generations_are_counted_per_service() {
    let mut state = State::default();
    let api = succeeded_build(&mut state, 100, "api", 1);
    let web = succeeded_build(&mut state, 200, "web", 2);
    for _ in 0..2 {
        state
            .apply(&request(
                300,
                "carol",
                Command::SetDesiredVersion { service: service("api"), build: api, rollout: None },
            ))
            .unwrap();
    }

    let result = state.apply(&request(
        400,
        "carol",
        Command::SetDesiredVersion { service: service("web"), build: web, rollout: None },
    ));

    let Ok(CommandOutput::Desired(desired)) = result else { panic!("deploy refused: {result:?}") };
    assert_eq!(desired.generation, 1);
    assert_eq!(state.desired[&service("api")].generation, 2);
}

#[test]
fn set_desired_version_refuses_a_build_that_has_not_succeeded() {
    let mut state = State::default();
    let cancelled = submit(&mut state, 100, "api");
    let running = submit(&mut state, 100, "api");
    let failed = submit(&mut state, 100, "api");
    state.apply(&request(200, "alice", Command::Cancel { job: cancelled })).unwrap();
    assert_eq!(claim(&mut state, 210, "w1").lease.job, running);
    let lease = claim(&mut state, 220, "w2").lease;
    state.apply(&request(230, "w2", fail(lease, false))).unwrap();
    let queued = submit(&mut state, 240, "api");

    for (id, name) in [(cancelled, "cancelled"), (running, "running"), (failed, "failed"), (queued, "queued")] {
        let req =
            request(1_000, "carol", Command::SetDesiredVersion { service: service("api"), build: id, rollout: None });
        assert_refused_unchanged(&mut state, req, |err| {
            *err == CommandError::NotDeployable { job: id, status: name.into() }
        });
    }
}

#[test]
fn set_desired_version_refuses_a_build_of_another_service() {
    let mut state = State::default();
    let web = succeeded_build(&mut state, 100, "web", 1);

    let req =
        request(1_000, "carol", Command::SetDesiredVersion { service: service("api"), build: web, rollout: None });
    assert_refused_unchanged(&mut state, req, |err| {
        *err == CommandError::ServiceMismatch { job: web, requested: service("api"), actual: service("web") }
    });
    assert!(state.desired.is_empty());
}

#[test]
fn set_desired_version_refuses_an_unknown_build() {
    let mut state = State::default();
    let req =
        request(1_000, "carol", Command::SetDesiredVersion { service: service("api"), build: JobId(0), rollout: None });
    assert_refused_unchanged(&mut state, req, |err| *err == CommandError::UnknownJob(JobId(0)));
}

fn counts(total: u64, fetching: u64, verified: u64, active: u64, failed: u64) -> RolloutCounts {
    RolloutCounts { total, fetching, verified, active, failed, ..RolloutCounts::default() }
}

fn report(generation: u64, c: RolloutCounts) -> Command {
    Command::ReportRollout(Box::new(cascade_core::api::RolloutReport {
        service: service("api"),
        generation,
        region: region("eu-west"),
        cluster: cluster("c1"),
        counts: c,
        failures: Default::default(),
        holder: None,
        pending: Vec::new(),
    }))
}

/// A state where `api` has been deployed twice (generations 1 and 2).
fn deployed_twice() -> State {
    let mut state = State::default();
    let build = succeeded_build(&mut state, 100, "api", 1);
    for at in [200, 300] {
        state
            .apply(&request(at, "carol", Command::SetDesiredVersion { service: service("api"), build, rollout: None }))
            .unwrap();
    }
    state
}

#[test]
fn report_rollout_records_counts_for_a_known_generation() {
    let mut state = deployed_twice();

    let result = state.apply(&request(1_000, "mgr", report(2, counts(10, 1, 2, 3, 4))));

    assert_eq!(result, Ok(CommandOutput::RolloutRecorded));
    let rollout = &state.rollouts[&(service("api"), 2)][&(region("eu-west"), cluster("c1"))];
    assert_eq!(rollout.counts, counts(10, 1, 2, 3, 4));
    assert_eq!(rollout.reported_at, ms(1_000));
}

#[test]
fn report_rollout_for_an_unknown_generation_is_refused() {
    let mut state = deployed_twice();

    for generation in [0, 3, 100] {
        assert_refused_unchanged(&mut state, request(1_000, "mgr", report(generation, counts(1, 0, 0, 1, 0))), |err| {
            *err == CommandError::UnknownGeneration { service: service("api"), generation, latest: 2 }
        });
    }
    let mut never_deployed = State::default();
    assert_refused_unchanged(&mut never_deployed, request(1_000, "mgr", report(1, counts(1, 0, 0, 1, 0))), |err| {
        matches!(err, CommandError::UnknownGeneration { latest: 0, .. })
    });
}

#[test]
fn report_rollout_with_counts_exceeding_the_total_is_refused() {
    let mut state = deployed_twice();

    for bad in [counts(3, 1, 1, 1, 1), counts(0, 0, 0, 0, 1), counts(u64::MAX, u64::MAX, 1, 0, 0)] {
        assert_refused_unchanged(&mut state, request(1_000, "mgr", report(1, bad)), |err| {
            matches!(err, CommandError::InvalidCounts(_))
        });
    }
}

#[test]
fn report_rollout_keeps_the_failed_hosts_and_refuses_more_than_failed() {
    use cascade_core::deploy::{HostFailure, MAX_REPORTED_FAILURES};
    use cascade_core::HostFailures;
    let mut state = deployed_twice();
    let failure = |i: usize| HostFailure { host: format!("h{i}"), reason: "activate exited 2: boom".into() };
    let with = |failures: HostFailures, c: RolloutCounts| match report(2, c) {
        Command::ReportRollout(mut r) => {
            r.failures = failures;
            Command::ReportRollout(r)
        }
        other => other,
    };
    let two = HostFailures::bounded(vec![failure(1), failure(0)]);
    let result = state.apply(&request(1_000, "mgr", with(two.clone(), counts(10, 0, 0, 8, 2))));
    assert_eq!(result, Ok(CommandOutput::RolloutRecorded));
    let rollout = &state.rollouts[&(service("api"), 2)][&(region("eu-west"), cluster("c1"))];
    assert_eq!(rollout.failures, two);
    assert_eq!(rollout.failures.hosts[0].host, "h0", "listed by host name");
    // More failures listed than hosts counted failed, or a list past the bound: refused, nothing changes.
    assert_refused_unchanged(&mut state, request(2_000, "mgr", with(two, counts(10, 0, 0, 9, 1))), |err| {
        matches!(err, CommandError::InvalidCounts(_))
    });
    let too_many = HostFailures { hosts: (0..MAX_REPORTED_FAILURES + 1).map(failure).collect(), more: 0 };
    assert_refused_unchanged(&mut state, request(2_000, "mgr", with(too_many, counts(100, 0, 0, 0, 100))), |err| {
        matches!(err, CommandError::InvalidCounts(_))
    });
}

// ---------------------------------------------------------------------------------------------------------
// Replication
// ---------------------------------------------------------------------------------------------------------

#[test]
fn record_replication_updates_the_artifact_record() {
    let mut state = State::default();
    succeeded_build(&mut state, 100, "api", 4);
    let status = ReplicationStatus::Copying { chunks_done: 3, chunks_total: 8 };

    let result = state.apply(&request(
        1_000,
        "replicator",
        Command::RecordReplication { digest: digest(4), region: region("us"), status: status.clone() },
    ));

    let Ok(CommandOutput::Replication(record)) = result else { panic!("refused: {result:?}") };
    assert_eq!(record.replication[&region("us")], status);
    assert_eq!(state.artifacts[&digest(4)].replication[&region("us")], status);
    assert_eq!(state.artifacts[&digest(4)].updated_at, ms(1_000));
}

#[test]
fn recording_the_same_replication_status_again_changes_nothing_but_the_clock() {
    let mut state = State::default();
    succeeded_build(&mut state, 100, "api", 4);
    let record = |at| {
        request(
            at,
            "replicator",
            Command::RecordReplication {
                digest: digest(4),
                region: region("us"),
                status: ReplicationStatus::Replicated,
            },
        )
    };
    state.apply(&record(1_000)).unwrap();
    let before = state.clone();

    state.apply(&record(2_000)).unwrap();

    assert_eq!(state.artifacts, before.artifacts, "updated_at stays at the last real change");
    assert_eq!(state.audit, before.audit);
    assert_eq!(state.clock, ms(2_000));
}

#[test]
fn record_replication_for_an_unknown_digest_is_refused() {
    let mut state = State::default();
    succeeded_build(&mut state, 100, "api", 4);

    let req = request(
        1_000,
        "replicator",
        Command::RecordReplication { digest: digest(5), region: region("us"), status: ReplicationStatus::Replicated },
    );
    assert_refused_unchanged(&mut state, req, |err| *err == CommandError::UnknownArtifact(digest(5)));
}

// ---------------------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------------------

#[test]
fn a_request_stamped_earlier_than_the_state_clock_is_applied_at_the_state_clock() {
    let mut state = State::default();
    submit(&mut state, 5_000, "api");
    assert_eq!(state.clock, ms(5_000));

    let id = submit(&mut state, 1_000, "api");

    assert_eq!(state.clock, ms(5_000));
    assert_eq!(state.jobs[&id].submitted_at, ms(5_000));
    assert_eq!(state.audit.last().unwrap().at, ms(5_000));
}

#[test]
fn a_heartbeat_stamped_in_the_past_does_not_move_last_heartbeat_back() {
    let mut state = State::default();
    let id = submit(&mut state, 100, "api");
    let claimed = claim(&mut state, 2_000, "w1");

    state.apply(&request(1_000, "w1", heartbeat(claimed.lease))).unwrap();

    assert!(matches!(status(&state, id), JobStatus::Running { last_heartbeat, .. } if *last_heartbeat == ms(2_000)));
    assert!(state.running.contains(&(ms(2_000), id)));
}

#[test]
fn a_refused_command_does_not_advance_the_clock() {
    let mut state = State::default();
    submit(&mut state, 100, "api");

    assert_refused_unchanged(&mut state, request(9_000, "bob", Command::Cancel { job: JobId(7) }), |err| {
        *err == CommandError::UnknownJob(JobId(7))
    });
    assert_eq!(state.clock, ms(100));
}

// ---------------------------------------------------------------------------------------------------------
// Validation of ids
// ---------------------------------------------------------------------------------------------------------

#[test]
fn invalid_ids_are_refused_naming_the_field() {
    let refusals = [
        CommitSha::parse("abc123").unwrap_err(),
        CommitSha::parse("z".repeat(40)).unwrap_err(),
        ServiceName::parse("Api").unwrap_err(),
        ServiceName::parse("api-").unwrap_err(),
        Region::parse("").unwrap_err(),
        ClusterName::parse("c_1").unwrap_err(),
        RepoUrl::parse("--upload-pack=touch /tmp/x").unwrap_err(),
        RepoUrl::parse("relative/path").unwrap_err(),
        WorkerId::parse("w 1").unwrap_err(),
        WorkerId::parse("x".repeat(129)).unwrap_err(),
        Principal::parse("").unwrap_err(),
        Principal::parse("bob;rm").unwrap_err(),
        Digest::parse("ab".repeat(31)).unwrap_err(),
    ];
    let fields: Vec<&str> = refusals.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "commit",
            "commit",
            "service",
            "service",
            "region",
            "cluster",
            "repo",
            "repo",
            "worker",
            "worker",
            "principal",
            "principal",
            "digest"
        ]
    );
    for err in &refusals {
        assert!(!err.reason.is_empty());
        assert!(err.to_string().starts_with(&format!("invalid {}", err.field)), "{err}");
    }
}

#[test]
fn valid_ids_are_accepted_and_hex_is_lower_cased() {
    assert_eq!(CommitSha::parse("AB".repeat(20)).unwrap().as_str(), "ab".repeat(20));
    assert_eq!(Digest::parse("CD".repeat(32)).unwrap().as_str(), "cd".repeat(32));
    assert!(ServiceName::parse("a".repeat(63)).is_ok());
    assert!(Region::parse("eu-west-1").is_ok());
    assert!(WorkerId::parse("build-7.eu:9000").is_ok());
    assert!(Principal::parse("ci@example.com").is_ok());
    assert!(RepoUrl::parse("git@github.com:org/repo.git").is_ok());
}

#[test]
fn a_log_entry_with_an_invalid_id_does_not_deserialize() {
    let good = request(1, "alice", submit_command("api", 1));
    let json = serde_json::to_string(&good).unwrap();
    assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), good);

    let bad = json.replace(commit(1).as_str(), "not-a-sha");
    let err = serde_json::from_str::<Request>(&bad).unwrap_err();
    assert!(err.to_string().contains("commit"), "{err}");

    let bad_actor = json.replace("\"alice\"", "\"alice smith\"");
    assert!(serde_json::from_str::<Request>(&bad_actor).is_err());
}

// ---------------------------------------------------------------------------------------------------------
// Serialized forms
// ---------------------------------------------------------------------------------------------------------

#[test]
fn statuses_are_tagged_by_state_in_json() {
    let running = JobStatus::Running {
        worker: worker("w1"),
        attempt: 2,
        started_at: ms(1),
        last_heartbeat: ms(2),
        cancel_requested_by: None,
    };
    let json = serde_json::to_value(&running).unwrap();
    assert_eq!(json["state"], "running");
    assert_eq!(json["attempt"], 2);
    assert_eq!(serde_json::from_value::<JobStatus>(json).unwrap(), running);

    let copying = ReplicationStatus::Copying { chunks_done: 1, chunks_total: 2 };
    let json = serde_json::to_value(&copying).unwrap();
    assert_eq!(json, serde_json::json!({"state": "copying", "chunks_done": 1, "chunks_total": 2}));
}

#[test]
fn a_state_with_every_kind_of_entry_round_trips_through_bincode_and_json() {
    let mut state = deployed_twice();
    state.apply(&request(1_000, "mgr", report(2, counts(5, 1, 1, 1, 1)))).unwrap();
    state
        .apply(&request(
            1_001,
            "replicator",
            Command::RecordReplication {
                digest: digest(1),
                region: region("us"),
                status: ReplicationStatus::Error { reason: "timeout".into() },
            },
        ))
        .unwrap();
    submit(&mut state, 1_002, "api");
    let running = submit(&mut state, 1_003, "web");
    claim(&mut state, 1_004, "w1");
    assert_eq!(claim(&mut state, 1_005, "w2").lease.job, running);
    submit(&mut state, 1_006, "web");

    let from_bincode: State = bincode::deserialize(&bincode::serialize(&state).unwrap()).unwrap();
    assert_eq!(from_bincode, state);
    let from_json: State = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!(from_json, state);
}

#[test]
fn a_request_round_trips_through_bincode() {
    let req = request(
        7,
        "replicator",
        Command::RecordReplication { digest: digest(2), region: region("us"), status: ReplicationStatus::Pending },
    );
    let back: Request = bincode::deserialize(&bincode::serialize(&req).unwrap()).unwrap();
    assert_eq!(back, req);
}

#[test]
fn succeed_with_an_invalid_manifest_key_is_refused_and_changes_nothing() {
    let mut state = State::default();
    submit(&mut state, 100, "api");
    let claimed = claim(&mut state, 200, "w1");
    for bad in [String::new(), "k".repeat(1025), "a\nb".to_string()] {
        let artifact = Artifact { manifest_key: bad, ..artifact(1) };
        let req = request(300, "w1", Command::Succeed { lease: claimed.lease, artifact });
        assert_refused_unchanged(
            &mut state,
            req,
            |e| matches!(e, CommandError::Invalid(v) if v.field == "artifact.manifest_key"),
        );
    }
}

#[test]
fn submit_with_an_invalid_idempotency_key_is_refused_and_changes_nothing() {
    let mut state = State::default();
    for bad in ["", "has space", &"k".repeat(129)] {
        let mut command = submit_command("api", 1);
        if let Command::SubmitBuild { idempotency_key, .. } = &mut command {
            *idempotency_key = Some(bad.to_string());
        }
        assert_refused_unchanged(
            &mut state,
            request(100, "bob", command),
            |e| matches!(e, CommandError::Invalid(v) if v.field == "idempotency_key"),
        );
    }
}

#[test]
fn has_stale_agrees_with_what_the_stale_scan_does() {
    let mut state = State::default();
    let id = submit(&mut state, 100, "api");
    claim(&mut state, 1_000, "w1");
    assert!(!state.has_stale(ms(1_500), 500), "exactly at the timeout is not stale");
    assert!(state.has_stale(ms(1_501), 500));
    let scan = state.apply(&request(1_501, "monitor", Command::RequeueStale { timeout_ms: 500 }));
    assert_eq!(scan, Ok(CommandOutput::Stale(StaleReport { requeued: vec![id], ..StaleReport::default() })));
    assert!(!state.has_stale(ms(1_000_000), 500), "nothing is running any more");
}
