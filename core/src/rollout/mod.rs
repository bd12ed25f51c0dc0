//! Progressive delivery: a rollout's policy (waves, bake, failure budget, what to do on failure, deadline)
//! and the gate that moves it from wave to wave until it ends in exactly one of complete, failed, rolled
//! back, aborted or superseded.
//!
//! The bytes and the switch are separate: managers distribute a release to every targeted host at once and
//! switch only the hosts the open waves admit ([`admitted`], in [`wave_rank`] order), so opening a wave
//! costs seconds, and a halt leaves every host's previous release one `rename` away.

mod commands;
mod policy;
mod progress;
mod stage;

pub use commands::{last_known_good, DeployOrigin};

pub use policy::{
    BudgetText, FailureBudget, OnFailure, RolloutOverride, RolloutPolicy, RolloutSection, Wave, WaveSection, WaveSize,
    DEFAULT_PROGRESS_DEADLINE_SECS, MAX_POLICY_SECS, MAX_WAVES,
};
pub use progress::{
    admitted, apply, decide, open, wave_rank, Allotment, ClusterSnapshot, EndState, Gate, OpenedWave, RolloutEnd,
    RolloutProgress, RolloutStep, CLUSTER_FORGOTTEN_AFTER_MS, FIRST_WAVE_GRACE_MS,
};
pub use stage::{bake_remaining_secs, describe_stage};

/// Deliberate bugs for the simulation's self-test (cargo feature `fault-injection`): the gate opens the
/// next wave without waiting for the bake. Thread-local, like [`crate::state::fault_injection`].
#[cfg(feature = "fault-injection")]
pub mod fault_injection {
    use std::cell::Cell;

    thread_local! {
        static SKIP_BAKE: Cell<bool> = const { Cell::new(false) };
    }

    /// Makes this thread's gate advance as soon as a wave is healthy, ignoring `bake_secs`.
    pub fn skip_bake(on: bool) {
        SKIP_BAKE.with(|flag| flag.set(on));
    }

    pub(crate) fn skips_bake() -> bool {
        SKIP_BAKE.with(|flag| flag.get())
    }
}

#[cfg(feature = "fault-injection")]
pub(crate) use fault_injection::skips_bake;

#[cfg(not(feature = "fault-injection"))]
pub(crate) const fn skips_bake() -> bool {
    false
}
