//! Cascade's pure domain.
//!
//! Ids and their validation, the build/deploy state machine, the commands of the replicated log, and the
//! JSON types of `/api/v1` that server and client share. No I/O, no async, no clock: time arrives inside
//! commands, stamped by the Raft leader, so every replica and the simulation compute the same state.

pub mod api;
pub mod command;
pub mod deploy;
pub mod fanout;
pub mod ids;
pub mod job;
pub mod manager_lease;
pub mod manifest;
pub mod rollout;
pub mod state;

pub use command::{
    ClaimedJob, Command, CommandError, CommandOutput, CommandResult, HeartbeatAck, Request, StaleReport,
};
pub use deploy::{DeploySpec, HostDeclaration, HostFailure, HostFailures};
pub use ids::{
    ClusterName, CommitSha, Digest, InvalidValue, JobId, Principal, Region, RepoUrl, ServiceName, UnixMillis, WorkerId,
};
pub use job::{Artifact, Job, JobStatus, Lease};
pub use manifest::{Manifest, ManifestBuilder, ManifestError};
pub use state::State;
