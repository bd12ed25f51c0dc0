//! Where an agent runs its blocking work (hashing, file writes): on tokio's blocking pool in production,
//! inline in the deterministic simulation, whose hosts all share one thread and must not hand work to
//! threads it does not schedule.

/// How blocking work runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Blocking {
    /// `tokio::task::spawn_blocking`: the async threads stay free while a chunk is hashed and written.
    #[default]
    ThreadPool,
    /// On the calling task: deterministic, for the simulation (its chunks are small).
    Inline,
}

impl Blocking {
    /// Runs `work`; `None` only when the blocking task panicked or was cancelled.
    pub async fn run<T: Send + 'static>(self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        match self {
            Blocking::ThreadPool => tokio::task::spawn_blocking(work).await.ok(),
            Blocking::Inline => Some(work()),
        }
    }
}
