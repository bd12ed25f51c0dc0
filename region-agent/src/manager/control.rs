//! What the manager asks of the cluster, behind a seam: production's is `cascade_client::Client` over
//! HTTP (the region's learner first, failing over to the other nodes); the simulation's goes over its own
//! simulated network to the same `raft-node` code.

use cascade_client::{Client, ClientError};
use cascade_core::api::{DesiredVersions, ManagerLeaseRequest, RolloutReport};
use cascade_core::state::ArtifactRecord;
use cascade_core::Digest;
use futures::future::BoxFuture;
use std::time::Duration;

/// Why a manager lease request got no grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Another manager holds the lease (HTTP 409); the text names it and its expiry.
    #[error("{0}")]
    Held(String),
    /// No answer, or another error: the lease is unknown this round.
    #[error("{0}")]
    Unreachable(String),
}

/// The manager's calls to the cluster. Errors are texts for the log: the manager retries every call.
pub trait ControlPlane: Send + Sync + 'static {
    /// Every desired version; with `after`, waits up to `wait` for a change later than that log index.
    fn desired(&self, after: Option<u64>, wait: Duration) -> BoxFuture<'_, Result<DesiredVersions, String>>;

    /// An artifact's record, with its replication per region.
    fn artifact<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<ArtifactRecord, String>>;

    /// Reports a rollout's counts.
    fn report_rollout<'a>(&'a self, report: &'a RolloutReport) -> BoxFuture<'a, Result<(), String>>;

    /// Asks for (or renews, or with ttl 0 gives up) the manager lease of the request's cluster.
    fn acquire_manager_lease<'a>(&'a self, request: &'a ManagerLeaseRequest) -> BoxFuture<'a, Result<(), LeaseError>>;
}

impl ControlPlane for Client {
    fn desired(&self, after: Option<u64>, wait: Duration) -> BoxFuture<'_, Result<DesiredVersions, String>> {
        Box::pin(async move { Client::desired(self, after, wait).await.map_err(|e| e.to_string()) })
    }

    fn artifact<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<ArtifactRecord, String>> {
        Box::pin(async move { Client::artifact(self, digest).await.map_err(|e| e.to_string()) })
    }

    fn report_rollout<'a>(&'a self, report: &'a RolloutReport) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { Client::report_rollout(self, report).await.map_err(|e| e.to_string()) })
    }

    fn acquire_manager_lease<'a>(&'a self, request: &'a ManagerLeaseRequest) -> BoxFuture<'a, Result<(), LeaseError>> {
        Box::pin(async move {
            match Client::acquire_manager_lease(self, request).await {
                Ok(_lease) => Ok(()),
                Err(e @ ClientError::Api { .. }) if e.status().is_some_and(|s| s.as_u16() == 409) => {
                    Err(LeaseError::Held(e.to_string()))
                }
                Err(e) => Err(LeaseError::Unreachable(e.to_string())),
            }
        })
    }
}
