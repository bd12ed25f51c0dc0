//! The simulation catches a manager that ignores targeting: with the region manager's test-only switch on
//! (cargo feature `fault-injection` of cascade-region-agent, `manager::fault_injection::ignore_targeting`),
//! every deploy goes to every host of the region, whatever services it runs. The hosts still refuse to
//! activate a service they do not run, so nothing wrong is ever linked as `current`; what gives the bug
//! away is the download: a host that does not run the service holds its artifact. A seed of the budget
//! must fail `host_runs_only_its_services`, fail the same way with the same trace on replay, and pass
//! without the switch.

#![cfg(tokio_unstable)]

use cascade_region_agent::manager::fault_injection::ignore_targeting;
use cascade_simulation::cluster::{run_seed, Options};

/// Seeds tried at most. Every region has hosts that do not run one of the services, so any seed whose
/// client gets a deploy out should catch it; the budget is for seeds whose builds all fail.
const SEED_BUDGET: u64 = 10;

#[test]
fn a_manager_that_ignores_targeting_is_caught() {
    ignore_targeting(true);
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
        ignore_targeting(false);
        panic!("no seed in 0..{SEED_BUDGET} caught the manager that ignores targeting");
    };
    println!("caught by seed {seed}:\n{report}");
    assert_eq!(failure.invariant, "host_runs_only_its_services", "{}", failure.detail);
    let replay = run_seed(seed, &options);
    ignore_targeting(false);
    assert_eq!(replay.failure, Some(failure), "replaying seed {seed} fails the same way");
    assert!(replay.trace == trace, "replaying seed {seed} gives the same trace");
    let fixed = run_seed(seed, &options);
    assert!(fixed.passed(), "without the bug seed {seed} passes: {}", fixed.report(20));
}
