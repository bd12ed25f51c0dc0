//! One seed, run twice, gives the same trace byte for byte: the simulation is deterministic, so any failing
//! seed can be replayed and debugged. Needs `--cfg tokio_unstable` (tokio's scheduler seeded by turmoil);
//! scripts/simulate.sh builds with it.

#![cfg(tokio_unstable)]

use cascade_simulation::cluster::isolation::RunGuard;
use cascade_simulation::cluster::{run_seed, Options, Outcome};

#[test]
fn a_seed_replays_byte_for_byte() {
    let options = Options::default();
    for seed in [3, 11] {
        let first = run_seed(seed, &options);
        let second = run_seed(seed, &options);
        assert!(first.passed(), "{}", first.report(40));
        assert!(first.trace.len() > 20, "the trace records the run: {}", first.report(40));
        let first_text = first.trace.join("\n");
        let second_text = second.trace.join("\n");
        if first_text != second_text {
            let at = first.trace.iter().zip(&second.trace).position(|(a, b)| a != b).unwrap_or(0);
            panic!(
                "seed {seed} diverged at event {at}:\n  first:  {:?}\n  second: {:?}",
                first.trace.get(at),
                second.trace.get(at)
            );
        }
        assert_eq!(first.steps, second.steps);
    }
}

/// A seed replays the same whatever else ran in the process before it or runs beside it. tokio numbers
/// tasks from one process-wide counter and a task's number picks its shard in the runtime's task list,
/// which orders the drops when a host crashes (see `cluster::isolation`): seed 2006 (without agents)
/// diverged after its crash of n1 at 18.2 s when the process had spawned 2 or 3 tokio tasks before it.
#[test]
fn a_seed_replays_the_same_whatever_else_ran_in_the_process() {
    const SEED: u64 = 2006;
    let options = Options { agents: false, ..Options::default() };
    let first = run_seed(SEED, &options);
    assert!(first.passed(), "{}", first.report(40));
    // What a process that ran other things first has: its next task id at each residue of the shard count.
    for residue in [2, 3, 0, 1] {
        spawn_tokio_tasks_until_the_next_id_is(residue);
        assert_same(&first, &run_seed(SEED, &options), &format!("after tokio tasks (next id ≡ {residue} mod 4)"));
    }
    // Another seed in between, and another run on another thread at the same time (as test threads are).
    let between = run_seed(SEED + 1, &options);
    assert_same(&first, &run_seed(SEED, &options), &format!("after seed {}", between.seed));
    let beside = {
        let options = options.clone();
        std::thread::spawn(move || run_seed(SEED + 1, &options))
    };
    let again = run_seed(SEED, &options);
    let beside = beside.join().expect("the run beside did not panic");
    assert_same(&first, &again, "beside another run");
    assert_same(&between, &beside, "the run beside");
}

/// Spawns no-op tokio tasks (at most 4) until the next task id is `residue` modulo 4. It holds the run guard
/// while it does: tasks spawned on another thread during a run would still shift that run's ids (the
/// other test of this binary runs at the same time).
fn spawn_tokio_tasks_until_the_next_id_is(residue: u64) {
    let _no_run_meanwhile = RunGuard::acquire();
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a scratch runtime");
    for _ in 0..4 {
        let taken: u64 = runtime.spawn(async {}).id().to_string().parse().expect("a task id is a number");
        if (taken + 1) % 4 == residue {
            return;
        }
    }
    panic!("no task id one below {residue} modulo 4 in 4 tries");
}

fn assert_same(first: &Outcome, second: &Outcome, when: &str) {
    if first.trace != second.trace {
        let at = first.trace.iter().zip(&second.trace).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "seed {} diverged {when} at event {at}:\n  first:  {:?}\n  second: {:?}",
            first.seed,
            first.trace.get(at),
            second.trace.get(at)
        );
    }
    assert_eq!(first.steps, second.steps, "seed {} {when}", first.seed);
}
