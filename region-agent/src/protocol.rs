//! What managers and hosts say to each other: length-prefixed bincode frames on QUIC streams.
//!
//! Control: each host keeps one bidirectional stream open to its manager ([`StreamOpen::Control`], then
//! [`HostMessage`] up and [`ManagerMessage`] down). Data: a receiver opens a stream to the sender the
//! manager named, sends [`StreamOpen::Chunk`], and reads a [`ChunkAnswer`] followed by the chunk's bytes.

use cascade_core::{Digest, Manifest, ServiceName};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest control frame: a manifest of a 64 GiB artifact in 16 MiB chunks is ~300 KB; a frame past this
/// is a broken or hostile peer.
pub const MAX_FRAME: u32 = 16 * 1024 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed or ended.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    /// The peer announced a frame larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(u32),
    /// The bytes are not a message.
    #[error("undecodable frame: {0}")]
    Decode(String),
}

/// Writes one frame.
pub async fn write_frame<T: Serialize>(out: &mut (impl AsyncWrite + Unpin), message: &T) -> Result<(), FrameError> {
    let bytes = bincode::serialize(message).map_err(|e| FrameError::Decode(e.to_string()))?;
    let len = u32::try_from(bytes.len()).map_err(|_| FrameError::TooLarge(u32::MAX))?;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    out.write_u32(len).await?;
    out.write_all(&bytes).await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame<T: DeserializeOwned>(input: &mut (impl AsyncRead + Unpin)) -> Result<Option<T>, FrameError> {
    let len = match input.read_u32().await {
        Ok(len) => len,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut bytes = vec![0u8; len as usize];
    input.read_exact(&mut bytes).await?;
    bincode::deserialize(&bytes).map(Some).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Why a fetch failed, as the receiver saw it (mirrors the scheduler's reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FetchFailure {
    /// Could not connect, or the connection broke.
    Dead,
    /// No complete answer in time, or the sender refused.
    Stalled,
    /// The bytes did not match the manifest.
    BadChunk,
}

impl FetchFailure {
    /// The reason's name in metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            FetchFailure::Dead => "dead",
            FetchFailure::Stalled => "stalled",
            FetchFailure::BadChunk => "bad_chunk",
        }
    }
}

/// First frame of every stream an agent opens: a host's control stream to its manager, or a chunk request
/// (to a peer, or to the manager as the seed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StreamOpen {
    /// A host registers with its manager; the stream then carries [`HostMessage`]s and [`ManagerMessage`]s.
    Control {
        /// The host's name (unique in the cluster).
        name: String,
        /// Its QUIC address for chunk requests.
        data_addr: SocketAddr,
    },
    /// One chunk, answered with [`ChunkAnswer`] and the bytes.
    Chunk(ChunkRequest),
}

/// Host → manager, after [`StreamOpen::Control`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HostMessage {
    /// Answer to [`ManagerMessage::Prepare`]: chunks already held (from a partial download, or copied from
    /// an earlier release that shares them).
    Have {
        /// The artifact.
        digest: Digest,
        /// Chunk indexes held and verified.
        chunks: Vec<u32>,
    },
    /// A chunk arrived and matched the manifest; the host now serves it.
    Verified {
        /// The artifact.
        digest: Digest,
        /// The chunk index.
        chunk: u32,
    },
    /// A fetch failed; blames the sender.
    Failed {
        /// The artifact.
        digest: Digest,
        /// The chunk index.
        chunk: u32,
        /// The sender's host id (0: the seed).
        from: u32,
        /// What went wrong.
        reason: FetchFailure,
    },
    /// The release is active (`current` points at it and the hook succeeded).
    Activated {
        /// The service.
        service: ServiceName,
        /// The generation activated.
        generation: u64,
    },
    /// Activation failed; the previous release stays.
    ActivationFailed {
        /// The service.
        service: ServiceName,
        /// The generation.
        generation: u64,
        /// Why.
        reason: String,
    },
}

/// Manager → host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ManagerMessage {
    /// The host's id in this manager's scheduler.
    Welcome {
        /// Dense id, 1..N.
        host_id: u32,
    },
    /// A new release to receive: preallocate, find held chunks, answer with [`HostMessage::Have`].
    Prepare {
        /// The service.
        service: ServiceName,
        /// Its generation.
        generation: u64,
        /// What to receive.
        manifest: Manifest,
    },
    /// Fetch one chunk from a peer (or the seed).
    Fetch {
        /// The artifact.
        digest: Digest,
        /// The chunk index.
        chunk: u32,
        /// Sender id (0: the seed).
        from: u32,
        /// Sender address.
        addr: SocketAddr,
    },
    /// Every chunk is verified: check the whole digest and switch to the release.
    Activate {
        /// The service.
        service: ServiceName,
        /// Its generation.
        generation: u64,
        /// The artifact.
        digest: Digest,
    },
    /// This manager does not act for the cluster (it is the standby, or just lost its lease): the host
    /// ends the session and registers with another manager.
    Refused {
        /// Why, naming the lease holder when known.
        reason: String,
    },
}

/// Receiver → sender, first frame of a data stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// The artifact.
    pub digest: Digest,
    /// The chunk index.
    pub chunk: u32,
}

/// Sender → receiver: followed by `len` raw bytes when `Ok`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ChunkAnswer {
    /// The chunk follows.
    Ok {
        /// Bytes that follow.
        len: u64,
    },
    /// The sender cannot serve it.
    Refused(String),
}
