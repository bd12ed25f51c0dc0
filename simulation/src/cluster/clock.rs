//! Each simulated host's wall clock: the simulation's virtual time plus a skew that faults move, so leaders
//! in one run stamp commands with clocks that disagree the way real machines' do.

use cascade_core::UnixMillis;
use cascade_raft_node::clock::Clock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Virtual epoch of every run: 2024-01-01T00:00:00Z, so stamps read like real dates in traces.
pub const EPOCH_MS: u64 = 1_704_067_200_000;

/// A host's wall clock. Clones share the skew, so the driver can move it while the node runs.
#[derive(Clone, Default)]
pub struct SimClock {
    skew_ms: Arc<AtomicI64>,
}

impl SimClock {
    /// Sets how far this host's clock is ahead (positive) or behind (negative) the simulation's time.
    pub fn set_skew_ms(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::Relaxed);
    }

    /// The current skew.
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::Relaxed)
    }
}

impl Clock for SimClock {
    fn now(&self) -> UnixMillis {
        // Outside a host's turn there is no simulated time; the node only reads its clock inside its turn.
        let elapsed = turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as i64);
        let ms = (EPOCH_MS as i64).saturating_add(elapsed).saturating_add(self.skew_ms());
        UnixMillis(ms.max(0) as u64)
    }
}
