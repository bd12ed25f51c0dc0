//! The leader's wall clock, the only clock Cascade's state ever sees (it stamps commands). Behind a trait
//! so the simulation can give each host its own, skewed, simulated clock.

use cascade_core::UnixMillis;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Reads the current wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now(&self) -> UnixMillis;
}

/// Shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        // A clock before 1970 reads as 0; `apply` never lets the state's clock run backwards anyway.
        UnixMillis(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
    }
}
