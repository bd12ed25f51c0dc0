//! The simulation catches a host agent that trusts bytes it did not check: with the host's test-only
//! switch on (cargo feature `fault-injection` of cascade-region-agent), a host keeps received chunks
//! without verifying them against the manifest and activates without checking the whole file. A seed of
//! the CI budget whose corrupt-serving host hands such a host a bad chunk must fail
//! `host_activates_only_manifest_bytes`, fail the same way on replay, and pass without the switch.

#![cfg(tokio_unstable)]

use cascade_region_agent::releases::fault_injection::trust_unverified_bytes;
use cascade_simulation::cluster::{run_seed, Options};

/// Seeds scripts/simulate.sh runs in CI at the least; the bug must show within them.
const CI_SEED_BUDGET: u64 = 40;

#[test]
fn a_host_that_keeps_unverified_chunks_is_caught_within_the_ci_budget() {
    trust_unverified_bytes(true);
    let options = Options::default();
    let mut caught = None;
    for seed in 0..CI_SEED_BUDGET {
        let outcome = run_seed(seed, &options);
        if let Some(failure) = &outcome.failure {
            caught = Some((seed, failure.clone(), outcome.trace.clone(), outcome.report(20)));
            break;
        }
    }
    let Some((seed, failure, trace, report)) = caught else {
        trust_unverified_bytes(false);
        panic!("no seed in 0..{CI_SEED_BUDGET} caught the host that keeps unverified chunks");
    };
    println!("caught by seed {seed}:\n{report}");
    assert_eq!(failure.invariant, "host_activates_only_manifest_bytes", "{}", failure.detail);
    let replay = run_seed(seed, &options);
    trust_unverified_bytes(false);
    assert_eq!(replay.failure, Some(failure), "replaying seed {seed} fails the same way");
    assert!(replay.trace == trace, "replaying seed {seed} gives the same trace");
    let fixed = run_seed(seed, &options);
    assert!(fixed.passed(), "without the bug seed {seed} passes: {}", fixed.report(20));
}
