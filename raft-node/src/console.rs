//! The web console's backend: [`cascade_web::ConsoleBackend`] implemented over this node (its replica, its
//! write path, its token list and the `main` blob store for build logs), and the console router that
//! [`crate::server`] merges beside `/api/v1`.

use crate::api::{local_status, ApiError};
use crate::node::Node;
use crate::replication::Blobs;
use axum::Router;
use cascade_core::api::{BuildLog, ClusterStatus, DeployRequest, Role, SubmitBuildRequest};
use cascade_core::state::{DesiredVersion, RolloutControl};
use cascade_core::{Command, CommandOutput, Job, JobId, JobStatus, Manifest, Principal, ServiceName, State};
use cascade_web::{BackendError, ConsoleBackend};
use constant_time_eq::constant_time_eq;
use object_store::path::Path as ObjectKey;
use object_store::ObjectStoreExt;
use std::sync::Arc;
use std::time::Duration;

/// The console's view of one node.
pub struct NodeConsole {
    node: Arc<Node>,
    blobs: Option<Arc<Blobs>>,
}

/// The console router for this node (pages, live updates, `/api/v1/openapi.json`).
pub fn router(node: Arc<Node>, blobs: Option<Arc<Blobs>>) -> Router {
    cascade_web::router(Arc::new(NodeConsole { node, blobs }))
}

fn api_error(e: ApiError) -> BackendError {
    BackendError::new(e.status.as_u16(), e.detail)
}

fn node_error(e: crate::node::NodeError) -> BackendError {
    api_error(ApiError::from(e))
}

fn command_error(e: cascade_core::CommandError) -> BackendError {
    api_error(ApiError::from(e))
}

fn unexpected(output: CommandOutput) -> BackendError {
    BackendError::new(500, format!("unexpected command output {output:?}"))
}

impl NodeConsole {
    async fn command(&self, actor: Principal, command: Command) -> Result<CommandOutput, BackendError> {
        self.node.write(actor, command).await.map_err(node_error)?.map_err(command_error)
    }
}

impl ConsoleBackend for NodeConsole {
    fn authenticate(&self, token: &str) -> Option<(Principal, Role)> {
        // Constant time over every configured token, as the API's bearer check does.
        let mut found = None;
        for configured in &self.node.config.tokens {
            if constant_time_eq(configured.token.as_bytes(), token.as_bytes()) {
                found = Some(configured);
            }
        }
        let configured = found?;
        Some((Principal::parse(configured.name.clone()).ok()?, configured.role))
    }

    fn read<T>(&self, f: impl FnOnce(&State, u64) -> T) -> T {
        self.node.read(|view| f(&view.state, view.applied_index()))
    }

    async fn cluster(&self) -> ClusterStatus {
        let mut status = local_status(&self.node);
        if !self.node.is_leader() {
            if let Some((_, leader)) = self.node.leader() {
                // Lag is known only to the leader; keep this node's own figures if it does not answer.
                if let Ok(from_leader) = self.node.leader_status(&leader.addr).await {
                    status.members = from_leader.members;
                }
            }
        }
        status
    }

    async fn submit_build(&self, actor: Principal, request: SubmitBuildRequest) -> Result<Job, BackendError> {
        let command = Command::SubmitBuild {
            repo: request.repo,
            commit: request.commit,
            service: request.service,
            idempotency_key: None,
        };
        match self.command(actor, command).await? {
            CommandOutput::Job(job) => Ok(job),
            other => Err(unexpected(other)),
        }
    }

    async fn cancel_build(&self, actor: Principal, build: JobId) -> Result<Job, BackendError> {
        match self.command(actor, Command::Cancel { job: build }).await? {
            CommandOutput::Job(job) => Ok(job),
            other => Err(unexpected(other)),
        }
    }

    async fn deploy(&self, actor: Principal, request: DeployRequest) -> Result<DesiredVersion, BackendError> {
        let rollout = match request.rollout.filter(|r| !r.is_empty()).map(|r| r.to_override()).transpose() {
            Ok(rollout) => rollout.map(Box::new),
            Err(e) => return Err(BackendError::new(400, e.to_string())),
        };
        let command = Command::SetDesiredVersion { service: request.service, build: request.build, rollout };
        match self.command(actor, command).await? {
            CommandOutput::Desired(desired) => Ok(desired),
            other => Err(unexpected(other)),
        }
    }

    async fn rollback(&self, actor: Principal, service: ServiceName) -> Result<DesiredVersion, BackendError> {
        match self.command(actor, Command::Rollback { service }).await? {
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
        match self.command(actor, Command::ControlRollout { service, generation, control }).await? {
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
        match self.command(actor, Command::PromoteRollout { service, generation }).await? {
            CommandOutput::Desired(desired) => Ok(desired),
            other => Err(unexpected(other)),
        }
    }

    async fn build_log(&self, build: JobId, tail: u64) -> Result<BuildLog, BackendError> {
        let Some(blobs) = &self.blobs else {
            return Err(BackendError::new(503, "this node has no [stores] configured, so it cannot read build logs"));
        };
        let job = self.node.read(|view| view.state.jobs.get(&build).cloned());
        let job = job.ok_or_else(|| BackendError::new(404, format!("no build with id {build}")))?;
        let running = matches!(job.status, JobStatus::Running { .. });
        let complete = ObjectKey::from(Manifest::build_log_key(job.id, job.attempt));
        let live = ObjectKey::from(Manifest::build_log_tail_key(job.id, job.attempt));
        let candidates = if running { vec![(live, false)] } else { vec![(complete, true), (live, false)] };
        for (key, is_complete) in candidates {
            let size = match blobs.main.head(&key).await {
                Ok(meta) => meta.size,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(BackendError::new(502, format!("cannot read {key} from the main store: {e}"))),
            };
            let offset = size.saturating_sub(tail);
            let bytes = if size == 0 {
                Default::default()
            } else {
                blobs
                    .main
                    .get_range(&key, offset..size)
                    .await
                    .map_err(|e| BackendError::new(502, format!("cannot read {key} from the main store: {e}")))?
            };
            let text = String::from_utf8_lossy(&bytes).into_owned();
            return Ok(BuildLog { job: job.id, attempt: job.attempt, complete: is_complete, offset, text });
        }
        Err(BackendError::new(
            404,
            format!("no log for attempt {} yet: the worker publishes it with its first heartbeat", job.attempt),
        ))
    }

    async fn wait_for_change(&self, after: u64, timeout: Duration) -> u64 {
        self.node.wait_for_change(after, timeout).await;
        self.node.applied_index()
    }
}

#[cfg(test)]
mod tests {
    /// Every route of the `/api/v1` router (read from its source) is in the OpenAPI document.
    #[test]
    fn openapi_documents_every_api_route() {
        let source = include_str!("api/mod.rs");
        let mut checked = 0;
        for line in source.lines().map(str::trim).filter(|l| l.starts_with(".route(\"")) {
            let path = line.trim_start_matches(".route(\"").split('"').next().unwrap_or_default();
            let methods: Vec<&str> = ["get", "post", "put", "patch", "delete"]
                .into_iter()
                .filter(|m| line.contains(&format!("{m}(")) || line.contains(&format!(".{m}(")))
                .collect();
            assert!(!methods.is_empty(), "no method found on route line {line:?}");
            for method in methods {
                assert!(
                    cascade_web::openapi::documents(method, path),
                    "{} {path} is served by raft-node/src/api/mod.rs but missing from web/src/openapi.rs",
                    method.to_uppercase()
                );
                checked += 1;
            }
        }
        assert!(checked >= 15, "found only {checked} routes: has the router's layout changed?");
        assert!(cascade_web::openapi::documents("get", "/api/v1/openapi.json"));
    }
}
