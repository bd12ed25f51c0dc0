//! What makes a run independent of whatever else ran in the same process.
//!
//! tokio numbers its tasks from one process-wide counter (`tokio::task::Id`), and the id of a task decides
//! which of the 4 shards of its runtime's task list holds it (`id % 4` for a current-thread runtime). When
//! turmoil crashes or bounces a host it drops that host's runtime, which shuts its tasks down shard by
//! shard; the order in which their futures are dropped decides the order of what the drops do (a dropped
//! turmoil TCP stream tells its peer, over a link whose latency is drawn from the seeded RNG). So a run's
//! schedule after the first crash depended on how many tasks the process had spawned before it: seed
//! 2006 diverged after its crash at 18.2 s when 2 or 3 tasks had been spawned first, and runs in a test
//! binary, where other tests spawn tasks on other threads at the same time, were not replayable at all.
//!
//! [`RunGuard`] removes that dependence: one run at a time per process, and each starts with the counter
//! at the same residue, that of a fresh process, so `--seed N` from the command line, the N-th seed of a
//! `--seeds` run and a seed inside a test binary replay alike.
//!
//! What it cannot stop: tokio tasks spawned on another thread of the process while a run is going on, outside
//! any run, still take ids from the run's sequence. The simulation's binaries spawn none; a test that
//! spawns tokio tasks of its own holds a [`RunGuard`] while it does.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Task ids at the start of every run are congruent to that of a fresh process (1) modulo this. A
/// multiple of tokio's shard count (4 for a current-thread runtime, at most 2^16 for any runtime); a
/// larger modulus costs only a few microseconds per run.
pub const TASK_ID_MODULUS: u64 = 1 << 10;

/// Held for the whole of a run: runs in one process do not overlap, so no other thread spawns tokio tasks
/// (and so takes task ids) while a run does.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Proof that this thread's run has the process to itself, with tokio's task ids where a fresh process
/// has them. Keep it until the run's hosts are dropped.
pub struct RunGuard {
    _exclusive: MutexGuard<'static, ()>,
}

impl RunGuard {
    /// Waits for any other run in this process to finish, then advances tokio's task-id counter so the
    /// next task spawned gets an id congruent to 1 modulo [`TASK_ID_MODULUS`].
    pub fn acquire() -> Self {
        // A run that panicked (a failed assertion in a test) poisons the lock; the state it guards is
        // tokio's counter, which the alignment below resets anyway.
        let exclusive = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        align_task_ids();
        Self { _exclusive: exclusive }
    }
}

/// Spawns no-op tasks on a scratch runtime until the last one took an id `≡ 0 (mod TASK_ID_MODULUS)`, so
/// the run's first task gets one `≡ 1`. The tasks never run; the runtime drops them.
fn align_task_ids() {
    let Ok(scratch) = tokio::runtime::Builder::new_current_thread().build() else {
        // Without a runtime no ids can be taken; the run still works, only its replay may differ.
        return;
    };
    for _ in 0..TASK_ID_MODULUS {
        if next_task_id(&scratch) % TASK_ID_MODULUS == 1 {
            break;
        }
    }
}

/// The id the next task will get (taking the one before it).
fn next_task_id(scratch: &tokio::runtime::Runtime) -> u64 {
    let taken = scratch.spawn(async {}).id();
    // `tokio::task::Id` shows its number; it has no public accessor.
    taken.to_string().parse::<u64>().map_or(1, |id| id.wrapping_add(1))
}
