//! Cascade's replicated node.
//!
//! openraft 0.9 with a RocksDB log and a snapshotting state machine ([`store`]), Raft RPC and the internal
//! API over a node-to-node [`transport`] ([`network`], [`internal`]), the write and read paths that let any node answer any request ([`node`]),
//! the leader-only monitor ([`monitor`]) and replicator ([`replication`]), and `/api/v1` ([`api`]).

pub mod api;
pub mod backup;
pub mod clock;
pub mod config;
pub mod console;
pub mod internal;
pub mod metrics;
pub mod monitor;
pub mod network;
pub mod node;
pub mod replication;
pub mod rollout_controller;
pub mod runtime;
pub mod server;
pub mod store;
pub mod transport;
pub mod types;

pub use config::NodeConfig;
pub use node::Node;
