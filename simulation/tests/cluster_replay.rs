//! One seed, run twice, gives the same trace byte for byte: the simulation is deterministic, so any failing
//! seed can be replayed and debugged. Needs `--cfg tokio_unstable` (tokio's scheduler seeded by turmoil);
//! scripts/simulate.sh builds with it.

#![cfg(tokio_unstable)]

use cascade_simulation::cluster::{run_seed, Options};

#[test]
fn a_seed_replays_byte_for_byte() {
    let options = Options::default();
    for seed in [3, 11] {
        let first = run_seed(seed, &options);
        let second = run_seed(seed, &options);
        assert!(first.passed(), "{}", first.report(40));
        assert!(first.trace.len() > 20, "the trace records the run: {}", first.report(40));
        let first_text = first.trace.join("\n");
        let second_text = second.trace.join("\n");
        if first_text != second_text {
            let at = first.trace.iter().zip(&second.trace).position(|(a, b)| a != b).unwrap_or(0);
            panic!(
                "seed {seed} diverged at event {at}:\n  first:  {:?}\n  second: {:?}",
                first.trace.get(at),
                second.trace.get(at)
            );
        }
        assert_eq!(first.steps, second.steps);
    }
}
