//! The simulation catches a manager that ignores the waves: with the region manager's test-only switch on
//! (cargo feature `fault-injection` of cascade-region-agent, `manager::fault_injection::ignore_waves`),
//! the manager switches every targeted host as soon as it holds the bytes, whatever waves are open. The
//! committed rollout is as correct as ever; the hosts' activations give it away. A seed of the budget must
//! fail `wave_order`, fail the same way with the same trace on replay, and pass without the switch.

#![cfg(tokio_unstable)]

use cascade_region_agent::manager::fault_injection::ignore_waves;
use cascade_simulation::cluster::self_test::caught_within;

/// Seeds tried at most. The first wave admits one host of one region, so any deploy that reaches a
/// region's hosts switches a host no wave admitted; the budget is for seeds whose builds all fail.
const SEED_BUDGET: u64 = 5;

#[test]
fn a_manager_that_ignores_the_waves_is_caught() {
    let caught = caught_within(ignore_waves, SEED_BUDGET, "wave_order", "the manager that ignores the waves");
    let detail = &caught.failure.detail;
    assert!(detail.contains("no open wave admits"), "an activation is what is flagged: {detail}");
}
