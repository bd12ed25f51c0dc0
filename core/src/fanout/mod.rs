//! The fan-out scheduler: who sends which chunk to whom inside one region.
//!
//! One seed (the regional manager, which reads the artifact from the regional store) and up to hundreds of
//! thousands of hosts share an artifact of `C` chunks. The physical bound on the time until every host holds
//! it is `S/B + log2(N)·p/B`: every byte must cross every host's download link once, and the last chunk
//! needs `log2(N)` doublings to reach everyone. Reaching it needs every upload link busy all the time, so
//! the design is a **centrally scheduled swarm** with per-host upload and download slots, not a tree:
//!
//! - a tree makes interior nodes upload `k` copies (rate `B/k`) while leaves upload nothing, and a slow or
//!   dead interior node throttles or cuts its whole subtree; striped trees fix the first but not the second;
//! - the manager already learns every verified chunk (hosts report it), so it can match a free upload slot
//!   with a free download slot and a chunk the receiver lacks without any gossip or collisions; a random
//!   useful chunk (the rarer of two random candidates) spreads within `O(log N)` chunk-times of optimal.
//!
//! Pipelining: a host becomes a sender of a chunk the moment it reports the chunk verified. The seed
//! injects every chunk once, rarest (never-sent) first, and afterwards serves like any other sender.
//!
//! The module is pure: no I/O, no clock, no threads; the only randomness is a PRNG seeded by the caller.
//! Both the region manager (over QUIC) and the fleet model in `cascade-simulation` drive it through the
//! same events ([`Scheduler::host_joined`], [`Scheduler::chunk_verified`], [`Scheduler::transfer_failed`],
//! [`Scheduler::host_left`], [`Scheduler::seed_has`]) and the same poll ([`Scheduler::next_assignments`]).

mod invariants;
mod matching;
mod rng;
mod scheduler;
mod sets;

pub use rng::SplitMix64;
pub use scheduler::Scheduler;

/// A host of the region, numbered densely by the manager: memory is indexed by the id, so ids should be
/// `1..=N`. [`HostId::SEED`] (0) is the seed itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub u32);

impl HostId {
    /// The seed: the regional manager that reads chunks from the regional store and serves them.
    pub const SEED: HostId = HostId(0);

    /// Whether this is the seed.
    pub fn is_seed(self) -> bool {
        self == Self::SEED
    }
}

/// The index of a chunk in the artifact's manifest, `0..chunks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkId(pub u32);

/// One decision: `from` sends `chunk` to `to`. It occupies one upload slot of `from` and one download slot
/// of `to` until the manager reports it verified or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transfer {
    /// The sender (possibly the seed).
    pub from: HostId,
    /// The receiver (never the seed).
    pub to: HostId,
    /// The chunk sent.
    pub chunk: ChunkId,
}

/// Why a transfer failed, as the receiver (or the manager) saw it. It always blames the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// The sender is gone (connection refused or reset, missed heartbeats): it is removed like `host_left`.
    Dead,
    /// The transfer made no progress in time: the sender gets a strike and after
    /// [`Config::max_stalls`] strikes it sends no more.
    Stalled,
    /// The chunk failed its BLAKE3 check: counted, reported, and after [`Config::max_bad_chunks`] the
    /// sender sends no more.
    BadChunk,
}

/// Something the manager should know and act on (log it, alert, report it through the state machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Report {
    /// `from` sent a chunk that failed verification at `to`.
    BadChunk {
        /// The sender of the bad bytes.
        from: HostId,
        /// The receiver that caught them.
        to: HostId,
        /// The chunk concerned.
        chunk: ChunkId,
    },
    /// `host` will not be used as a sender any more (it still receives).
    Excluded {
        /// The host excluded.
        host: HostId,
        /// The failure that reached its limit.
        reason: FailReason,
    },
}

/// The scheduler's tuning, fixed for one rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Chunks in the artifact.
    pub chunks: u32,
    /// Concurrent uploads per host: enough to fill the link over the path's bandwidth-delay product, few
    /// enough that each transfer still runs near `B/upload_slots` and the hop latency stays small.
    pub upload_slots: u8,
    /// Concurrent downloads per host.
    pub download_slots: u8,
    /// Concurrent uploads of the seed.
    pub seed_upload_slots: u16,
    /// Stalls after which a sender is no longer used.
    pub max_stalls: u8,
    /// Bad chunks after which a sender is no longer used (1: trust is lost at the first one).
    pub max_bad_chunks: u8,
    /// Random candidates tried per matching attempt before giving up until the next event.
    pub samples: u8,
    /// Seed of the scheduler's PRNG: the same seed and events give the same decisions.
    pub rng_seed: u64,
}

impl Config {
    /// Defaults for `chunks` chunks: 2 upload and 2 download slots, seed with 2, 8 samples. The fleet
    /// model chose 2 (docs/FANOUT.md): 1 slot lets one dead sender idle a receiver's whole link until
    /// the death is noticed, 4 slots make every hop 4 chunk-times long.
    pub fn new(chunks: u32) -> Self {
        Config {
            chunks,
            upload_slots: 2,
            download_slots: 2,
            seed_upload_slots: 2,
            max_stalls: 3,
            max_bad_chunks: 1,
            samples: 8,
            rng_seed: 0,
        }
    }
}

/// An event the scheduler refused; it changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FanoutError {
    /// The configuration is unusable (no chunks, no slots, too many slots).
    #[error("invalid fan-out config: {0}")]
    InvalidConfig(&'static str),
    /// The host never joined or has left.
    #[error("host {0:?} is not live in this rollout")]
    UnknownHost(HostId),
    /// The host is already live.
    #[error("host {0:?} already joined")]
    AlreadyJoined(HostId),
    /// The chunk index is outside the manifest.
    #[error("chunk {0:?} is not in the manifest")]
    NoSuchChunk(ChunkId),
    /// No such transfer is in flight (a late or duplicate report).
    #[error("no transfer of {chunk:?} from {from:?} to {to:?} is in flight")]
    NotInFlight {
        /// Sender named in the report.
        from: HostId,
        /// Receiver named in the report.
        to: HostId,
        /// Chunk named in the report.
        chunk: ChunkId,
    },
    /// The seed cannot join, leave or receive.
    #[error("the seed cannot do that")]
    Seed,
}
