//! The simulation can catch a real bug: with the state machine's test-only switch that accepts stale leases
//! turned on (cargo feature `fault-injection` of cascade-core), some seed of the CI budget must fail on the
//! lease invariants, and replaying it must fail the same way.

#![cfg(tokio_unstable)]

use cascade_core::state::fault_injection::accept_stale_leases;
use cascade_simulation::cluster::{run_seed, Options};

/// Seeds scripts/simulate.sh runs in CI at the least; the bug must show within them.
const CI_SEED_BUDGET: u64 = 40;

#[test]
fn accepting_a_stale_lease_is_caught_within_the_ci_budget() {
    accept_stale_leases(true);
    let options = Options::default();
    let mut caught = None;
    for seed in 0..CI_SEED_BUDGET {
        let outcome = run_seed(seed, &options);
        if let Some(failure) = &outcome.failure {
            caught = Some((seed, failure.clone(), outcome.report(20)));
            break;
        }
    }
    let Some((seed, failure, report)) = caught else {
        accept_stale_leases(false);
        panic!("no seed in 0..{CI_SEED_BUDGET} caught the stale-lease bug");
    };
    println!("caught by seed {seed}:\n{report}");
    assert!(
        ["no_stale_lease_result", "single_running_attempt"].contains(&failure.invariant.as_str()),
        "the bug was caught by the lease invariants, not by {}: {}",
        failure.invariant,
        failure.detail
    );
    let replay = run_seed(seed, &options);
    accept_stale_leases(false);
    assert_eq!(replay.failure, Some(failure), "replaying seed {seed} fails the same way");
    let fixed = run_seed(seed, &options);
    assert!(fixed.passed(), "without the bug seed {seed} passes: {}", fixed.report(20));
}
