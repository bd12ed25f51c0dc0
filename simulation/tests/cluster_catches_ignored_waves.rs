//! The simulation catches a manager that ignores the waves: with the region manager's test-only switch on
//! (cargo feature `fault-injection` of cascade-region-agent, `manager::fault_injection::ignore_waves`),
//! the manager switches every targeted host as soon as it holds the bytes, whatever waves are open. The
//! committed rollout is as correct as ever; the hosts' activations give it away. A seed of the budget must
//! fail `wave_order`, fail the same way with the same trace on replay, and pass without the switch.

#![cfg(tokio_unstable)]

use cascade_region_agent::manager::fault_injection::ignore_waves;
use cascade_simulation::cluster::{run_seed, Options};

/// Seeds tried at most. The first wave admits one host of one region, so any deploy that reaches a
/// region's hosts switches a host no wave admitted; the budget is for seeds whose builds all fail.
const SEED_BUDGET: u64 = 5;

#[test]
fn a_manager_that_ignores_the_waves_is_caught() {
    ignore_waves(true);
    let options = Options::default();
    let mut caught = None;
    for seed in 0..SEED_BUDGET {
        let outcome = run_seed(seed, &options);
        if let Some(failure) = &outcome.failure {
            caught = Some((seed, failure.clone(), outcome.trace.clone(), outcome.report(20)));
            break;
        }
    }
    let Some((seed, failure, trace, report)) = caught else {
        ignore_waves(false);
        panic!("no seed in 0..{SEED_BUDGET} caught the manager that ignores the waves");
    };
    println!("caught by seed {seed}:\n{report}");
    assert_eq!(failure.invariant, "wave_order", "{}", failure.detail);
    assert!(failure.detail.contains("no open wave admits"), "an activation is what is flagged: {}", failure.detail);
    let replay = run_seed(seed, &options);
    ignore_waves(false);
    assert_eq!(replay.failure, Some(failure), "replaying seed {seed} fails the same way");
    assert!(replay.trace == trace, "replaying seed {seed} gives the same trace");
    let fixed = run_seed(seed, &options);
    assert!(fixed.passed(), "without the bug seed {seed} passes: {}", fixed.report(20));
}
