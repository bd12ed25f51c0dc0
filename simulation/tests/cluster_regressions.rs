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

/// With the stores' old replication read, seed 3358 fails again as it did: the regression test above
/// still drives the run into a read of a purged range.
#[cfg(tokio_unstable)]
#[test]
fn seed_3358_fails_with_the_old_replication_read() {
    let options = Options { replication_reads_purged_ranges: true, agents: false, ..Options::default() };
    let outcome = run_seed(3358, &options);
    let failure = outcome.failure.as_ref().unwrap_or_else(|| panic!("seed 3358 passed: {}", outcome.report(20)));
    assert_eq!(failure.invariant, "host_software_ran", "{}", outcome.report(20));
    assert!(failure.detail.contains("prev_log_id.next_index()"), "{}", failure.detail);
}
