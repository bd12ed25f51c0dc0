//! Protects the client's word: once a submission was acknowledged with a build id, that build exists with
//! that commit and key in the committed state from then on (a leader change must not give its id to
//! another build or drop it).

use super::Violation;
use crate::cluster::world::AckedSubmit;
use cascade_core::{JobId, State};

/// Checks every acknowledged submission that the committed state has reached (ids are allocated in log
/// order, so the state has reached build `j` once it hands out ids above `j`). With `all`, every
/// acknowledged build must be there (the end of a run, after the cluster converged).
pub fn check(state: &State, acked: &[AckedSubmit], all: bool) -> Result<(), Violation> {
    for ack in acked {
        if !all && state.next_job_id <= ack.job.0 {
            continue;
        }
        let lost = |why: String| {
            Violation::new(
                "acknowledged_build_never_lost",
                format!("build {} ({}) acknowledged but {why}", ack.job, ack.key),
            )
        };
        let Some(job) = state.jobs.get(&ack.job) else {
            return Err(lost("it is not in the committed state".into()));
        };
        if job.commit.as_str() != ack.commit {
            return Err(lost(format!("the committed build {} is of commit {}", job.id, job.commit.as_str())));
        }
        if state.submissions.get(&ack.key) != Some(&ack.job) {
            let other = state.submissions.get(&ack.key).map_or("nothing".to_string(), JobId::to_string);
            return Err(lost(format!("its idempotency key maps to {other}")));
        }
    }
    Ok(())
}
