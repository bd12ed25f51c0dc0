//! Cascade's simulations: the whole cluster under seeded faults ([`cluster`]) and a bandwidth-level model of the
//! fan-out over a fleet of hundreds of thousands of hosts ([`fleet`]).

pub mod cluster;
pub mod fleet;
