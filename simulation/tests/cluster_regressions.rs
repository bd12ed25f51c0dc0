//! Seeds that once failed, replayed in every CI run; each must pass now. Replays are exact only under
//! `--cfg tokio_unstable` (scripts/simulate.sh); without it these are simply more seeds that must pass.
//! They run without region agents (`Options::agents` false): the cluster as it was simulated when they
//! failed, so each seed still reaches its situation.
//!
//! - 1168: openraft elects two leaders in one term; the checker holds leader completeness instead.
//! - 2676, 2721: a node restarting with a committed vote for itself is restored as a stale leader.
//! - 3358: a replication stream of a stepped-down leader read a range whose start its node had since purged
//!   as a follower; the stores returned the entries still held, and openraft sent entry 69 after
//!   `prev_log_id` 43 (a follower's debug assertion panicked). Fixed in `raft-node`'s stores
//!   (`store::contiguous_from`); see docs/SIMULATION.md.

use cascade_simulation::cluster::{run_seed, Options};

#[test]
fn seeds_that_once_failed_pass() {
    for seed in [1168, 2676, 2721, 3358] {
        let outcome = run_seed(seed, &Options { agents: false, ..Options::default() });
        assert!(outcome.passed(), "{}", outcome.report(40));
    }
}

/// With the stores' old replication read planted, a seed that passes now must fail again: the checker
/// catches that bug. Seed 3358 found it first, but the membership wait added to `raft-node` later changed
/// that seed's schedule, and it now passes even with the bug planted. Seed 2429 (found with
/// `cascade-simulation --seeds 2000 --without-agents --old-replication-read --keep-going`) passes clean and
/// fails planted when run alone from the command line, but not inside this test binary, where it fails
/// even clean: runs in one process are not yet independent of each other (some process-wide state
/// carries over between seeds). Ignored until a seed replays the same in both; run it with `--ignored`.
#[cfg(tokio_unstable)]
#[test]
#[ignore = "needs a seed that replays the same inside the test binary as from the command line"]
fn the_old_replication_read_is_caught() {
    const SEED: u64 = 2429;
    let clean = run_seed(SEED, &Options { agents: false, ..Options::default() });
    assert!(clean.passed(), "seed {SEED} must pass with today's stores: {}", clean.report(20));
    let options = Options { replication_reads_purged_ranges: true, agents: false, ..Options::default() };
    let outcome = run_seed(SEED, &options);
    let failure = outcome.failure.as_ref().unwrap_or_else(|| panic!("seed {SEED} passed: {}", outcome.report(20)));
    let caught = failure.invariant == "leader_completeness"
        || (failure.invariant == "host_software_ran" && failure.detail.contains("prev_log_id"));
    assert!(caught, "seed {SEED} failed, but not as the old read fails: {}", outcome.report(20));
}
