//! The procedure every self-test of the simulation follows: plant a bug, find the first seed of a budget
//! that an invariant catches it on, and show that the catch is real: the seed replays the same failure and
//! trace with the bug, and passes without it.
//!
//! Shared so that each `tests/cluster_catches_*.rs` says only which bug, which budget and which invariant.

use super::Failure;
use super::{run_seed, Options};

/// How a planted bug was caught.
#[derive(Debug)]
pub struct Caught {
    /// The first seed of the budget that failed.
    pub seed: u64,
    /// The invariant it failed and how.
    pub failure: Failure,
}

/// Runs seeds `0..budget` with the bug planted (`plant(true)`) until one fails; asserts that the failure is
/// `invariant`'s, that replaying the seed with the bug fails the same way with the same trace, and that
/// the seed passes once the bug is removed (`plant(false)`, also on every way out). `bug` names it in the
/// messages.
pub fn caught_within(plant: fn(bool), budget: u64, invariant: &str, bug: &str) -> Caught {
    /// Removes the bug however the test ends, so a failed assertion does not leave it planted.
    struct Unplant(fn(bool));
    impl Drop for Unplant {
        fn drop(&mut self) {
            (self.0)(false);
        }
    }
    let unplant = Unplant(plant);
    plant(true);
    let options = Options::default();
    let caught = (0..budget).find_map(|seed| {
        let outcome = run_seed(seed, &options);
        outcome.failure.clone().map(|failure| (seed, failure, outcome.trace.clone(), outcome.report(20)))
    });
    let Some((seed, failure, trace, report)) = caught else {
        panic!("no seed in 0..{budget} caught {bug}");
    };
    println!("caught by seed {seed}:\n{report}");
    assert_eq!(failure.invariant, invariant, "{}", failure.detail);
    let replay = run_seed(seed, &options);
    drop(unplant);
    assert_eq!(replay.failure.as_ref(), Some(&failure), "replaying seed {seed} fails the same way");
    assert!(replay.trace == trace, "replaying seed {seed} gives the same trace");
    let fixed = run_seed(seed, &options);
    assert!(fixed.passed(), "without the bug seed {seed} passes: {}", fixed.report(20));
    Caught { seed, failure }
}
