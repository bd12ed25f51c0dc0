//! The simulation catches a rollout gate that skips the bake: with the core's test-only switch on (cargo
//! feature `fault-injection` of cascade-core, `rollout::fault_injection::skip_bake`), the gate opens the
//! next wave as soon as the newest one is healthy, ignoring `bake_secs`. Every replica (and the checker's
//! own state) applies the same committed entries with the same gate, so the state stays consistent; what
//! gives the bug away is the committed time between a wave's `healthy_since` and the next wave's opening.
//! A seed of the budget must fail `wave_order`, fail the same way with the same trace on replay, and pass
//! without the switch.

#![cfg(tokio_unstable)]

use cascade_core::rollout::fault_injection::skip_bake;
use cascade_simulation::cluster::self_test::caught_within;

/// Seeds tried at most. Any seed whose last deploy of a service reaches its second wave catches it (the
/// controller's next half-second tick opens it, under the simulation's one-second bake); the budget is for
/// seeds whose builds all fail.
const SEED_BUDGET: u64 = 5;

#[test]
fn a_gate_that_skips_the_bake_is_caught() {
    let caught = caught_within(skip_bake, SEED_BUDGET, "wave_order", "the gate that skips the bake");
    assert!(caught.failure.detail.contains("baked"), "the bake is what is flagged: {}", caught.failure.detail);
}
