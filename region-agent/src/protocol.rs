//! What managers and hosts say to each other: length-prefixed bincode frames on QUIC streams.
//!
//! Control: each host keeps one bidirectional stream open to its manager ([`StreamOpen::Control`], then
//! [`HostMessage`] up and [`ManagerMessage`] down). Data: a receiver opens a stream to the sender the
//! manager named, sends [`StreamOpen::Chunk`], and reads a [`ChunkAnswer`] followed by the chunk's bytes.

use bincode::Options as _;
use cascade_core::{DeploySpec, Digest, HostDeclaration, Manifest, ServiceName};
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
    /// The bytes are not a message, or a message could not be encoded.
    #[error("frame encoding: {0}")]
    Codec(String),
}

/// The frames' encoding: bincode with variable-length integers. The manager's link also seeds the swarm
/// and carries one `Fetch` per transfer; fixed 4- and 8-byte integers made those half padding. The limit
/// stops a length inside a frame from asking for more memory than a frame may hold.
fn codec() -> impl bincode::Options {
    bincode::DefaultOptions::new().with_limit(u64::from(MAX_FRAME))
}

/// Encodes one message as the body of a frame ([`write_frame`] does it behind room for the prefix).
#[cfg(test)]
fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    codec().serialize(message).map_err(|e| FrameError::Codec(e.to_string()))
}

/// Decodes the body of a frame.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    codec().deserialize(bytes).map_err(|e| FrameError::Codec(e.to_string()))
}

/// Writes one frame in one write: a separate write of the length prefix wakes QUIC's connection task
/// twice, and a prefix sent alone costs a whole packet on a link the chunks need.
pub async fn write_frame<T: Serialize>(out: &mut (impl AsyncWrite + Unpin), message: &T) -> Result<(), FrameError> {
    // Serialized once, behind room for the length prefix that is filled in after.
    let mut frame = vec![0u8; 4];
    codec().serialize_into(&mut frame, message).map_err(|e| FrameError::Codec(e.to_string()))?;
    let len = u32::try_from(frame.len() - 4).map_err(|_| FrameError::TooLarge(u32::MAX))?;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    frame[..4].copy_from_slice(&len.to_be_bytes());
    out.write_all(&frame).await?;
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
    decode(&bytes).map(Some)
}

/// The manager's number for an artifact it rolls out, sent once in [`ManagerMessage::Prepare`] and then
/// carried by every per-chunk message instead of the 32-byte digest: the manager's link, which also seeds
/// the swarm, carries one `Fetch` per transfer. Valid within one control session.
pub type DownloadId = u32;

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
        /// The services it runs and its labels: the manager sends it only the deploys that target it.
        declaration: HostDeclaration,
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
        /// The download, as numbered by [`ManagerMessage::Prepare`].
        download: DownloadId,
        /// Chunk indexes held and verified.
        chunks: Vec<u32>,
    },
    /// A chunk arrived and matched the manifest; the host now serves it.
    Verified {
        /// The download.
        download: DownloadId,
        /// The chunk index.
        chunk: u32,
    },
    /// A fetch failed; blames the sender.
    Failed {
        /// The download.
        download: DownloadId,
        /// The chunk index.
        chunk: u32,
        /// The sender's host id (0: the seed).
        from: u32,
        /// What went wrong.
        reason: FetchFailure,
    },
    /// The release is active: `current` points at it, `activate` succeeded and the health probe passed.
    Activated {
        /// The service.
        service: ServiceName,
        /// The generation activated.
        generation: u64,
    },
    /// Activation failed (install, `activate` or the health probe); the host switched back to its previous
    /// release and started it again.
    ActivationFailed {
        /// The service.
        service: ServiceName,
        /// The generation.
        generation: u64,
        /// Why, bounded (`activate exited 2: <last lines of output>`, `health: GET … answered 503 …`).
        reason: String,
    },
    /// The host cannot receive the download at all (say its disk is full); it stays on its release.
    DownloadFailed {
        /// The download, as numbered by its `Prepare`.
        download: DownloadId,
        /// Why, bounded.
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
        /// The number the messages about this download carry instead of its digest.
        download: DownloadId,
        /// What to receive.
        #[serde(with = "wire_manifest")]
        manifest: Manifest,
    },
    /// Fetch one chunk from a peer (or the seed).
    Fetch {
        /// The download, as numbered by its `Prepare`.
        download: DownloadId,
        /// The chunk index.
        chunk: u32,
        /// Sender id (0: the seed).
        from: u32,
        /// Sender address.
        addr: SocketAddr,
    },
    /// Every chunk is verified: check the whole digest, install the release as `spec` says, switch to it,
    /// run its `activate` and its health probe.
    Activate {
        /// The service.
        service: ServiceName,
        /// Its generation.
        generation: u64,
        /// The artifact.
        #[serde(with = "wire_digest")]
        digest: Digest,
        /// How to install, start and check it (the build's `[deploy]` section).
        spec: Box<DeploySpec>,
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
    #[serde(with = "wire_digest")]
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

/// A digest as 32 raw bytes on the wire, not the 72 of its text form (manifests, chunk requests,
/// activations).
mod wire_digest {
    use cascade_core::manifest::{digest_bytes, digest_of};
    use cascade_core::Digest;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn from_bytes(bytes: [u8; 32]) -> Digest {
        digest_of(blake3::Hash::from_bytes(bytes))
    }

    pub(super) fn serialize<S: Serializer>(digest: &Digest, out: S) -> Result<S::Ok, S::Error> {
        digest_bytes(digest).serialize(out)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Digest, D::Error> {
        <[u8; 32]>::deserialize(input).map(from_bytes)
    }
}

/// A manifest on the wire with raw-byte digests (less than half its size), checked like a stored one
/// when it arrives.
mod wire_manifest {
    use super::wire_digest::from_bytes;
    use cascade_core::manifest::digest_bytes;
    use cascade_core::Manifest;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct WireManifest {
        version: u32,
        chunk_size: u64,
        total_size: u64,
        digest: [u8; 32],
        chunks: Vec<[u8; 32]>,
    }

    pub(super) fn serialize<S: Serializer>(manifest: &Manifest, out: S) -> Result<S::Ok, S::Error> {
        WireManifest {
            version: manifest.version,
            chunk_size: manifest.chunk_size,
            total_size: manifest.total_size,
            digest: digest_bytes(&manifest.digest),
            chunks: manifest.chunks.iter().map(digest_bytes).collect(),
        }
        .serialize(out)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Manifest, D::Error> {
        let wire = WireManifest::deserialize(input)?;
        let manifest = Manifest {
            version: wire.version,
            chunk_size: wire.chunk_size,
            total_size: wire.total_size,
            digest: from_bytes(wire.digest),
            chunks: wire.chunks.into_iter().map(from_bytes).collect(),
        };
        manifest.validate().map_err(serde::de::Error::custom)?;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let mut builder = cascade_core::manifest::ManifestBuilder::new(64 * 1024).expect("chunk size");
        for fill in 0..3u8 {
            builder.push(&vec![fill; 64 * 1024]).expect("chunk");
        }
        builder.push(b"tail").expect("last chunk");
        builder.finish()
    }

    #[test]
    fn messages_round_trip_with_raw_digests() {
        let manifest = manifest();
        let prepare = ManagerMessage::Prepare {
            service: ServiceName::parse("api").expect("service"),
            generation: 7,
            download: 3,
            manifest: manifest.clone(),
        };
        let bytes = encode(&prepare).expect("serialize");
        // 4 chunk hashes and the whole digest at 32 bytes each, not 72.
        assert!(bytes.len() < 5 * 40 + 64, "{} bytes", bytes.len());
        match decode::<ManagerMessage>(&bytes).expect("deserialize") {
            ManagerMessage::Prepare { manifest: back, generation: 7, .. } => assert_eq!(back, manifest),
            other => panic!("{other:?}"),
        }
        let fetch =
            ManagerMessage::Fetch { download: 3, chunk: 3, from: 9, addr: "10.0.0.9:7000".parse().expect("addr") };
        let bytes = encode(&fetch).expect("serialize");
        assert!(bytes.len() <= 13, "a Fetch is {} bytes", bytes.len());
        assert!(matches!(
            decode::<ManagerMessage>(&bytes).expect("deserialize"),
            ManagerMessage::Fetch { download: 3, chunk: 3, from: 9, .. }
        ));
    }

    #[test]
    fn a_manifest_that_does_not_add_up_is_refused() {
        let mut manifest = manifest();
        manifest.total_size += 64 * 1024; // one chunk more than it lists
        let prepare = ManagerMessage::Prepare {
            service: ServiceName::parse("api").expect("service"),
            generation: 1,
            download: 1,
            manifest,
        };
        let bytes = encode(&prepare).expect("serialize");
        let err = decode::<ManagerMessage>(&bytes).expect_err("refused");
        assert!(err.to_string().contains("chunk") || err.to_string().contains("size"), "{err}");
    }
}
