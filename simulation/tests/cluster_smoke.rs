//! A few seeds of the cluster simulation under faults, in every build (also without `tokio_unstable`,
//! where runs are not replayable but every invariant must hold all the same).

use cascade_simulation::cluster::{run_seed, Options};

#[test]
fn a_faulty_cluster_keeps_every_invariant_and_converges() {
    for seed in [1, 2] {
        let outcome = run_seed(seed, &Options::default());
        assert!(outcome.passed(), "{}", outcome.report(40));
        assert!(outcome.stats.entries > 50, "the run committed and checked entries: {:?}", outcome.stats);
    }
}

#[test]
fn a_healthy_cluster_builds_everything() {
    let outcome = run_seed(5, &Options { faults: false, ..Options::default() });
    assert!(outcome.passed(), "{}", outcome.report(40));
}
