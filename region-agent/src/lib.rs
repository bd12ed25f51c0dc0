//! Cascade's region agents.
//!
//! Two roles in one crate: the [`manager`] of a cluster of machines in a region (follows the desired
//! versions on the region's learner, seeds the swarm from the regional store, schedules the fan-out with
//! `cascade_core::fanout`, reports counts), and the [`host`] agent on every machine (receives, verifies,
//! forwards, activates). They talk QUIC with mutual TLS ([`tls`]) in length-prefixed frames ([`protocol`]);
//! a host's releases live on disk as [`releases`] describes. The network is behind [`transport`] and the
//! manager's calls to the cluster behind [`manager::ControlPlane`], so `cascade-simulation` runs this same
//! code on a simulated network.

pub mod blocking;
pub mod host;
pub mod manager;
pub mod metrics;
pub mod protocol;
pub mod releases;
pub mod tls;
pub mod transport;
