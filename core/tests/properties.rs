//! Property test: random request logs over a small universe, with the state machine's invariants checked
//! after every single step, and replay / serialization checked at the end.

use cascade_core::state::{ReplicationStatus, RolloutCounts};
use cascade_core::{
    Artifact, ClusterName, Command, CommandError, CommitSha, Digest, JobId, JobStatus, Lease, Principal, Region,
    RepoUrl, Request, ServiceName, State, UnixMillis, WorkerId,
};
use proptest::prelude::*;

const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
const ACTORS: [&str; 4] = ["alice", "bob", "monitor", "w1"];
const SERVICES: [&str; 2] = ["api", "web"];
const REGIONS: [&str; 2] = ["us", "eu-west"];
const CLUSTERS: [&str; 2] = ["c1", "c2"];

/// A lease as the generator describes it: either any lease of the universe (mostly stale or unknown), or
/// "the current lease of the n-th running job", resolved against the state when the step is applied, so
/// that worker commands succeed often enough to drive jobs through their whole lifecycle.
#[derive(Debug, Clone)]
enum LeaseChoice {
    Any(Lease),
    Live(usize),
}

/// A command with its lease not yet resolved.
#[derive(Debug, Clone)]
enum Step {
    Ready(Command),
    Heartbeat(LeaseChoice),
    Succeed(LeaseChoice, u8),
    Fail(LeaseChoice, bool),
}

fn commit(n: u8) -> CommitSha {
    CommitSha::parse(format!("{n:02x}").repeat(20)).unwrap()
}

fn artifact(n: u8) -> Artifact {
    Artifact {
        digest: Digest::parse(format!("{n:02x}").repeat(32)).unwrap(),
        size: u64::from(n) * 100,
        manifest_key: format!("manifests/{n}"),
        deploy: Default::default(),
    }
}

fn service(i: usize) -> ServiceName {
    ServiceName::parse(SERVICES[i]).unwrap()
}

fn lease_choice() -> impl Strategy<Value = LeaseChoice> {
    prop_oneof![
        (0u64..20, 0u32..=4).prop_map(|(job, attempt)| LeaseChoice::Any(Lease { job: JobId(job), attempt })),
        (0usize..8).prop_map(LeaseChoice::Live),
    ]
}

fn replication_status() -> impl Strategy<Value = ReplicationStatus> {
    prop_oneof![
        Just(ReplicationStatus::Pending),
        (0u64..4, 0u64..4)
            .prop_map(|(done, total)| ReplicationStatus::Copying { chunks_done: done, chunks_total: total }),
        Just(ReplicationStatus::Replicated),
        Just(ReplicationStatus::Error { reason: "store unreachable".into() }),
    ]
}

fn rollout_counts() -> impl Strategy<Value = RolloutCounts> {
    (0u64..8, 0u64..4, 0u64..4, 0u64..4, 0u64..4).prop_map(|(total, fetching, verified, active, failed)| {
        RolloutCounts { total, fetching, verified, active, failed, ..RolloutCounts::default() }
    })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..SERVICES.len(), 0u8..4, proptest::option::of(0u8..3)).prop_map(|(s, c, key)| {
            Step::Ready(Command::SubmitBuild {
                repo: RepoUrl::parse("https://git.example.com/org/repo.git").unwrap(),
                commit: commit(c),
                service: service(s),
                idempotency_key: key.map(|k| format!("key-{k}")),
            })
        }),
        4 => (0..WORKERS.len())
            .prop_map(|w| Step::Ready(Command::Claim { worker: WorkerId::parse(WORKERS[w]).unwrap() })),
        4 => lease_choice().prop_map(Step::Heartbeat),
        2 => (lease_choice(), 0u8..4).prop_map(|(l, a)| Step::Succeed(l, a)),
        2 => (lease_choice(), any::<bool>()).prop_map(|(l, r)| Step::Fail(l, r)),
        2 => (0u64..300).prop_map(|timeout_ms| Step::Ready(Command::RequeueStale { timeout_ms })),
        2 => (0u64..20).prop_map(|job| Step::Ready(Command::Cancel { job: JobId(job) })),
        1 => (0u8..5, 0..REGIONS.len(), replication_status()).prop_map(|(a, r, status)| {
            Step::Ready(Command::RecordReplication {
                digest: artifact(a).digest,
                region: Region::parse(REGIONS[r]).unwrap(),
                status,
            })
        }),
        2 => (0..SERVICES.len(), 0u64..12)
            .prop_map(|(s, b)| Step::Ready(Command::SetDesiredVersion { service: service(s), build: JobId(b), rollout: None })),
        2 => (0..SERVICES.len(), 0u64..3, 0..REGIONS.len(), 0..CLUSTERS.len(), rollout_counts()).prop_map(
            |(s, generation, r, c, counts)| {
                Step::Ready(Command::ReportRollout(Box::new(cascade_core::api::RolloutReport {
                    service: service(s),
                    generation,
                    region: Region::parse(REGIONS[r]).unwrap(),
                    cluster: ClusterName::parse(CLUSTERS[c]).unwrap(),
                    counts,
                    failures: Default::default(),
                    holder: None,
                    pending: Vec::new(),
                })))
            }
        ),
    ]
}

/// How far the leader's clock moves between two entries: mostly forward, sometimes back (a new leader
/// whose clock is behind).
fn time_delta() -> impl Strategy<Value = i64> {
    prop_oneof![9 => 0i64..120, 1 => -600i64..0]
}

fn log() -> impl Strategy<Value = Vec<(i64, usize, Step)>> {
    proptest::collection::vec((time_delta(), 0..ACTORS.len(), step()), 0..200)
}

fn resolve(state: &State, choice: &LeaseChoice) -> Lease {
    match choice {
        LeaseChoice::Any(lease) => *lease,
        LeaseChoice::Live(n) => {
            let live: Vec<Lease> = state.jobs.values().filter_map(|job| job.current_lease()).collect();
            if live.is_empty() {
                Lease { job: JobId(*n as u64), attempt: 1 }
            } else {
                live[n % live.len()]
            }
        }
    }
}

fn to_command(state: &State, step: &Step) -> Command {
    match step {
        Step::Ready(command) => command.clone(),
        Step::Heartbeat(l) => Command::Heartbeat { lease: resolve(state, l) },
        Step::Succeed(l, a) => Command::Succeed { lease: resolve(state, l), artifact: artifact(*a) },
        Step::Fail(l, retryable) => {
            Command::Fail { lease: resolve(state, l), reason: "build broke".into(), retryable: *retryable }
        }
    }
}

/// The one refusal that is allowed to change the state: a worker reports success for a job whose cancel was
/// requested. The cancel wins, the job becomes cancelled, and the worker is told its result was discarded.
fn is_cancel_winning_over_success(before: &State, req: &Request, err: &CommandError) -> bool {
    let Command::Succeed { lease, .. } = &req.command else {
        return false;
    };
    matches!(err, CommandError::WrongState { .. })
        && before.jobs.get(&lease.job).is_some_and(|job| {
            job.current_lease() == Some(*lease)
                && matches!(job.status, JobStatus::Running { cancel_requested_by: Some(_), .. })
        })
}

/// Every invariant that must hold between the state before a step and the state after it.
fn check_step(before: &State, req: &Request, result: &Outcome, after: &State) {
    after.indexes_consistent().unwrap_or_else(|e| panic!("indexes inconsistent after {req:?}: {e}"));

    // Time never runs backwards, and an accepted command brings the clock up to its own time.
    assert!(after.clock >= before.clock, "clock went back after {req:?}");
    if result.is_ok() {
        assert!(after.clock >= req.at, "accepted {req:?} left the clock at {:?}", after.clock);
    }

    // Every job is in exactly one status, and the indexes point only at jobs in that status.
    for id in &after.queue {
        assert!(!after.running.iter().any(|(_, r)| r == id), "job {id} is both queued and running");
        assert_eq!(after.jobs.get(id).map(|j| &j.status), Some(&JobStatus::Queued), "queue holds {id}");
    }
    for (heartbeat, id) in &after.running {
        assert_eq!(after.running.iter().filter(|(_, r)| r == id).count(), 1, "job {id} has two running entries");
        match after.jobs.get(id).map(|j| &j.status) {
            Some(JobStatus::Running { last_heartbeat, .. }) => {
                assert_eq!(last_heartbeat, heartbeat)
            }
            other => panic!("running index holds {id}, which is {other:?}"),
        }
    }

    // Jobs never disappear; attempts never decrease; a running job runs its latest attempt; final is final.
    assert!(after.next_job_id >= before.next_job_id);
    for (id, old) in &before.jobs {
        let new = after.jobs.get(id).unwrap_or_else(|| panic!("job {id} disappeared after {req:?}"));
        assert!(new.attempt >= old.attempt, "job {id} attempt went from {} to {}", old.attempt, new.attempt);
        if old.status.is_terminal() {
            assert_eq!(new, old, "terminal job {id} changed after {req:?}");
        }
    }
    for (id, job) in &after.jobs {
        if let JobStatus::Running { attempt, .. } = &job.status {
            assert_eq!(*attempt, job.attempt, "job {id} runs an attempt that is not its latest");
            assert!((1..=job.max_attempts).contains(attempt), "job {id} runs attempt {attempt}");
        }
    }

    // A refused command changes nothing, except that a cancel beats a late success.
    if let Err(err) = result {
        if is_cancel_winning_over_success(before, req, err) {
            let Command::Succeed { lease, .. } = &req.command else { unreachable!() };
            assert!(matches!(after.jobs[&lease.job].status, JobStatus::Cancelled { .. }));
            assert_eq!(after.artifacts, before.artifacts, "a discarded result became an artifact");
        } else {
            assert_eq!(after, before, "refused {req:?} ({err}) changed the state");
        }
    }
}

type Outcome = Result<cascade_core::CommandOutput, CommandError>;

/// Applies the generated log step by step, checking the invariants after each; returns the final state, the
/// concrete requests applied and what each returned.
fn run(log: &[(i64, usize, Step)]) -> (State, Vec<Request>, Vec<Outcome>) {
    let mut state = State::default();
    let mut requests = Vec::with_capacity(log.len());
    let mut outcomes = Vec::with_capacity(log.len());
    let mut at: i64 = 10_000;
    for (delta, actor, step) in log {
        at = (at + delta).max(0);
        let req = Request {
            at: UnixMillis(at as u64),
            actor: Principal::parse(ACTORS[*actor]).unwrap(),
            command: to_command(&state, step),
        };
        let before = state.clone();
        let result = state.apply(&req);
        check_step(&before, &req, &result, &state);
        requests.push(req);
        outcomes.push(result);
    }
    (state, requests, outcomes)
}

// 256 cases unless PROPTEST_CASES says otherwise; failures are reported with their shrunk log, not saved.
proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_step_keeps_the_invariants_and_the_log_replays_to_the_same_state(log in log()) {
        let (state, requests, outcomes) = run(&log);

        let mut replica = State::default();
        let replayed: Vec<Outcome> = requests.iter().map(|req| replica.apply(req)).collect();
        prop_assert_eq!(&replayed, &outcomes, "replaying the log gave different answers");
        prop_assert_eq!(&replica, &state, "replaying the log gave a different state");

        let bytes = bincode::serialize(&state).expect("bincode serialize");
        let from_bincode: State = bincode::deserialize(&bytes).expect("bincode deserialize");
        prop_assert_eq!(&from_bincode, &state);

        let json = serde_json::to_string(&state).expect("json serialize");
        let from_json: State = serde_json::from_str(&json).expect("json deserialize");
        prop_assert_eq!(&from_json, &state);
    }
}
