//! The simulation catches a host agent that trusts bytes it did not check: with the host's test-only
//! switch on (cargo feature `fault-injection` of cascade-region-agent), a host keeps received chunks
//! without verifying them against the manifest and activates without checking the whole file. A seed of
//! the CI budget whose corrupt-serving host hands such a host a bad chunk must fail
//! `host_activates_only_manifest_bytes`, fail the same way on replay, and pass without the switch.

#![cfg(tokio_unstable)]

use cascade_region_agent::releases::fault_injection::trust_unverified_bytes;
use cascade_simulation::cluster::self_test::caught_within;

/// Seeds scripts/simulate.sh runs in CI at the least; the bug must show within them.
const CI_SEED_BUDGET: u64 = 40;

#[test]
fn a_host_that_keeps_unverified_chunks_is_caught_within_the_ci_budget() {
    caught_within(
        trust_unverified_bytes,
        CI_SEED_BUDGET,
        "host_activates_only_manifest_bytes",
        "the host that keeps unverified chunks",
    );
}
