//! Protects the lease: a worker that was presumed dead, and whose job was given to another attempt, must
//! never get a heartbeat or a result accepted. Checked on the committed sequence, before each entry is
//! applied, with its own reading of the job's status (not `check_lease`, which is what it guards).

use super::Violation;
use cascade_core::{Command, CommandResult, JobStatus, Lease, Request, State};

/// Why `request` carries a stale lease in `state`, or `None` when its lease is the running attempt (or the
/// command carries no lease).
pub fn stale_reason(state: &State, request: &Request) -> Option<(Lease, String)> {
    let lease = match &request.command {
        Command::Heartbeat { lease } | Command::Succeed { lease, .. } | Command::Fail { lease, .. } => *lease,
        _ => return None,
    };
    let job = state.jobs.get(&lease.job)?;
    match &job.status {
        JobStatus::Running { attempt, .. } if *attempt == lease.attempt => None,
        JobStatus::Running { attempt, worker, .. } => {
            Some((lease, format!("the job runs attempt {attempt} on {worker}")))
        }
        other => Some((lease, format!("the job is {}", other.name()))),
    }
}

/// Fails when a command whose lease was stale was accepted.
pub fn check(
    stale: Option<(Lease, String)>,
    request: &Request,
    result: &CommandResult,
    index: u64,
) -> Result<(), Violation> {
    match (stale, result) {
        (Some((lease, why)), Ok(_)) => Err(Violation::new(
            "no_stale_lease_result",
            format!(
                "log index {index}: {} from {} with lease build {} attempt {} was accepted, but {why}",
                request.command.kind(),
                request.actor,
                lease.job,
                lease.attempt
            ),
        )),
        _ => Ok(()),
    }
}
