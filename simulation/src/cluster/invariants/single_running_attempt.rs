//! Protects exclusive ownership of a build: a job runs under one attempt at a time, the one its counter
//! names, and once a newer attempt has been accepted no older attempt makes progress again (two workers
//! never both build the same job with the cluster's blessing).

use super::Violation;
use cascade_core::{Command, CommandOutput, CommandResult, JobId, JobStatus, Request, State};
use std::collections::BTreeMap;

/// The newest attempt of each job that the cluster accepted a command from.
#[derive(Default)]
pub struct Tracker {
    newest: BTreeMap<JobId, u32>,
}

impl Tracker {
    /// Checks one applied entry and the state after it.
    pub fn check(
        &mut self,
        state: &State,
        request: &Request,
        result: &CommandResult,
        index: u64,
    ) -> Result<(), Violation> {
        let accepted = match (&request.command, result) {
            (Command::Claim { .. }, Ok(CommandOutput::Claimed(Some(claimed)))) => Some(claimed.lease),
            (Command::Heartbeat { lease }, Ok(_))
            | (Command::Succeed { lease, .. }, Ok(_))
            | (Command::Fail { lease, .. }, Ok(_)) => Some(*lease),
            _ => None,
        };
        if let Some(lease) = accepted {
            let newest = self.newest.entry(lease.job).or_insert(lease.attempt);
            if lease.attempt < *newest {
                return Err(Violation::new(
                    "single_running_attempt",
                    format!(
                        "log index {index}: build {} attempt {} made progress after attempt {} had been accepted",
                        lease.job, lease.attempt, newest
                    ),
                ));
            }
            *newest = lease.attempt;
            if let Some(job) = state.jobs.get(&lease.job) {
                if let JobStatus::Running { attempt, .. } = &job.status {
                    if *attempt != job.attempt {
                        return Err(Violation::new(
                            "single_running_attempt",
                            format!(
                                "log index {index}: build {} runs attempt {attempt} while its counter says {}",
                                job.id, job.attempt
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
