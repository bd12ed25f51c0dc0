//! The simulation can catch a storage bug: with disks whose `fsync` does nothing, a crash loses writes the
//! node had acknowledged (its vote, its log), and within the CI budget some seed must break one of the
//! replication invariants (a leader missing committed entries, replicas disagreeing, a build the client
//! was told about lost), or trip one of openraft's own defensive checks, which panic in the host (for
//! example "follower log reversion is not allowed").

#![cfg(tokio_unstable)]

use cascade_simulation::cluster::{run_seed, Options};

/// Seeds this test may spend.
const BUDGET: u64 = 40;

#[test]
fn a_disk_that_does_not_sync_is_caught_within_the_ci_budget() {
    let options = Options { fsync_is_a_no_op: true, ..Options::default() };
    for seed in 0..BUDGET {
        let outcome = run_seed(seed, &options);
        if let Some(failure) = &outcome.failure {
            println!("caught by seed {seed}:\n{}", outcome.report(20));
            assert!(
                [
                    "leader_completeness",
                    "log_matching",
                    "acknowledged_build_never_lost",
                    "terminal_states_final",
                    "host_software_ran"
                ]
                .contains(&failure.invariant.as_str()),
                "caught by a replication invariant, not by {}: {}",
                failure.invariant,
                failure.detail
            );
            let fixed = run_seed(seed, &Options::default());
            assert!(fixed.passed(), "with syncing disks seed {seed} passes: {}", fixed.report(20));
            return;
        }
    }
    panic!("no seed in 0..{BUDGET} caught disks that never sync");
}
