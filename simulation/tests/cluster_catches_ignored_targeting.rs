//! The simulation catches a manager that ignores targeting: with the region manager's test-only switch on
//! (cargo feature `fault-injection` of cascade-region-agent, `manager::fault_injection::ignore_targeting`),
//! every deploy goes to every host of the region, whatever services it runs. The hosts still refuse to
//! activate a service they do not run, so nothing wrong is ever linked as `current`; what gives the bug
//! away is the download: a host that does not run the service holds its artifact. A seed of the budget
//! must fail `host_runs_only_its_services`, fail the same way with the same trace on replay, and pass
//! without the switch.

#![cfg(tokio_unstable)]

use cascade_region_agent::manager::fault_injection::ignore_targeting;
use cascade_simulation::cluster::self_test::caught_within;

/// Seeds tried at most. Every region has hosts that do not run one of the services, so any seed whose
/// client gets a deploy out should catch it; the budget is for seeds whose builds all fail.
const SEED_BUDGET: u64 = 10;

#[test]
fn a_manager_that_ignores_targeting_is_caught() {
    caught_within(ignore_targeting, SEED_BUDGET, "host_runs_only_its_services", "the manager that ignores targeting");
}
