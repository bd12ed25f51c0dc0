//! An in-memory [`ConsoleBackend`]: core's state machine behind a lock, with fixed tokens. It lets the
//! console's own tests and the render benchmark run the real router without a Raft node.

use crate::backend::{BackendError, ConsoleBackend};
use cascade_core::api::{BuildLog, ClusterStatus, DeployRequest, Role, SubmitBuildRequest};
use cascade_core::state::{DesiredVersion, RolloutControl};
use cascade_core::{
    Command, CommandError, CommandOutput, CommandResult, Job, JobId, Principal, Request, ServiceName, State, UnixMillis,
};
use std::sync::RwLock;
use std::time::Duration;
use tokio::sync::Notify;

/// Core's state machine in memory, applying commands at the wall clock.
pub struct MemoryBackend {
    state: RwLock<(State, u64)>,
    tokens: Vec<(String, Principal, Role)>,
    changed: Notify,
}

impl MemoryBackend {
    /// An empty state; `tokens` are `(token, name, role)`.
    pub fn new(tokens: &[(&str, &str, Role)]) -> Self {
        let tokens = tokens
            .iter()
            .filter_map(|(token, name, role)| Some((token.to_string(), Principal::parse(*name).ok()?, *role)))
            .collect();
        Self { state: RwLock::new((State::default(), 0)), tokens, changed: Notify::new() }
    }

    /// Applies one command as `actor`, as the leader would (one log index per command).
    pub fn apply(&self, actor: &str, command: Command) -> CommandResult {
        let actor = Principal::parse(actor).map_err(CommandError::Invalid)?;
        let request = Request { at: UnixMillis(crate::pages::now_ms()), actor, command };
        let result = {
            let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
            guard.1 += 1;
            guard.0.apply(&request)
        };
        self.changed.notify_waiters();
        result
    }

    fn run(&self, actor: Principal, command: Command) -> Result<CommandOutput, BackendError> {
        self.apply(actor.as_str(), command).map_err(|e| {
            let status = match e {
                CommandError::UnknownJob(_) => 404,
                CommandError::WrongState { .. } | CommandError::RolloutControl { .. } => 409,
                _ => 400,
            };
            BackendError::new(status, e.to_string())
        })
    }
}

fn unexpected(output: CommandOutput) -> BackendError {
    BackendError::new(500, format!("unexpected command output {output:?}"))
}

impl ConsoleBackend for MemoryBackend {
    fn authenticate(&self, token: &str) -> Option<(Principal, Role)> {
        self.tokens.iter().find(|(t, _, _)| t == token).map(|(_, name, role)| (name.clone(), *role))
    }

    fn read<T>(&self, f: impl FnOnce(&State, u64) -> T) -> T {
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&guard.0, guard.1)
    }

    async fn cluster(&self) -> ClusterStatus {
        self.read(|state, applied| ClusterStatus {
            node_id: 1,
            leader: Some(1),
            term: 1,
            last_log_index: Some(applied),
            applied_index: Some(applied),
            members: Vec::new(),
            workers: state.workers.iter().map(|(w, at)| (w.clone(), at.0)).collect(),
            builds_total: state.jobs.len() as u64,
            queued: state.queue.len() as u64,
            running: state.running.len() as u64,
        })
    }

    async fn submit_build(&self, actor: Principal, r: SubmitBuildRequest) -> Result<Job, BackendError> {
        let command =
            Command::SubmitBuild { repo: r.repo, commit: r.commit, service: r.service, idempotency_key: None };
        match self.run(actor, command)? {
            CommandOutput::Job(job) => Ok(job),
            other => Err(unexpected(other)),
        }
    }

    async fn cancel_build(&self, actor: Principal, build: JobId) -> Result<Job, BackendError> {
        match self.run(actor, Command::Cancel { job: build })? {
            CommandOutput::Job(job) => Ok(job),
            other => Err(unexpected(other)),
        }
    }

    async fn deploy(&self, actor: Principal, r: DeployRequest) -> Result<DesiredVersion, BackendError> {
        let rollout = match r.rollout.map(|r| r.to_override()).transpose() {
            Ok(rollout) => rollout.map(Box::new),
            Err(e) => return Err(BackendError::new(400, e.to_string())),
        };
        match self.run(actor, Command::SetDesiredVersion { service: r.service, build: r.build, rollout })? {
            CommandOutput::Desired(desired) => Ok(desired),
            other => Err(unexpected(other)),
        }
    }

    async fn rollback(&self, actor: Principal, service: ServiceName) -> Result<DesiredVersion, BackendError> {
        match self.run(actor, Command::Rollback { service })? {
            CommandOutput::Desired(desired) => Ok(desired),
            other => Err(unexpected(other)),
        }
    }

    async fn control_rollout(
        &self,
        actor: Principal,
        service: ServiceName,
        generation: u64,
        control: RolloutControl,
    ) -> Result<DesiredVersion, BackendError> {
        match self.run(actor, Command::ControlRollout { service, generation, control })? {
            CommandOutput::Desired(desired) => Ok(desired),
            other => Err(unexpected(other)),
        }
    }

    async fn promote_rollout(
        &self,
        actor: Principal,
        service: ServiceName,
        generation: u64,
    ) -> Result<DesiredVersion, BackendError> {
        match self.run(actor, Command::PromoteRollout { service, generation })? {
            CommandOutput::Desired(desired) => Ok(desired),
            other => Err(unexpected(other)),
        }
    }

    async fn build_log(&self, build: JobId, _tail: u64) -> Result<BuildLog, BackendError> {
        Err(BackendError::new(404, format!("build {build}: this in-memory backend keeps no logs")))
    }

    async fn wait_for_change(&self, after: u64, timeout: Duration) -> u64 {
        let _ = tokio::time::timeout(timeout, async {
            loop {
                let notified = self.changed.notified();
                if self.read(|_, applied| applied) > after {
                    return;
                }
                notified.await;
            }
        })
        .await;
        self.read(|_, applied| applied)
    }
}
