//! The artifact format: fixed-size chunks plus a manifest of their BLAKE3 hashes.
//!
//! Every copy of an artifact (main store → regional store → host → host) is checked chunk by chunk against
//! the manifest, so a corrupt byte is caught at the first hop that sees it and fetched again from elsewhere.
//! Chunks are content-addressed (`chunks/<hash>`): two builds that share most bytes share most objects, a
//! regional copy is resumable by asking which keys exist, and a host that holds a chunk from an earlier
//! release need not fetch it again. The manifest is written last, so its presence means "every chunk is in".
//!
//! Pure code: hashing is computation, the I/O lives in `cascade-client`'s blob layer.

use crate::ids::Digest;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Format version written into every manifest; a reader refuses versions it does not know.
pub const MANIFEST_VERSION: u32 = 1;

/// Default chunk size: 16 MiB. Large enough that per-object overhead (an S3 request, a QUIC stream, a
/// hash lookup) is amortised, small enough that a host starts forwarding after 16 MiB and that the
/// pipelined fan-out adds only a few chunk-times per tree level. See docs/BENCHMARKS.md for the measurement.
pub const DEFAULT_CHUNK_SIZE: u64 = 16 * 1024 * 1024;

/// Smallest chunk size a manifest may declare.
pub const MIN_CHUNK_SIZE: u64 = 64 * 1024;

/// Largest chunk size a manifest may declare: a reader holds one chunk in memory per transfer slot.
pub const MAX_CHUNK_SIZE: u64 = 256 * 1024 * 1024;

/// Largest artifact Cascade accepts: 64 GiB, well above the 10 GB the product promises.
pub const MAX_ARTIFACT_SIZE: u64 = 64 * 1024 * 1024 * 1024;

/// Why a manifest or a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The manifest's own fields disagree or are out of range.
    #[error("invalid manifest: {0}")]
    Invalid(String),
    /// The manifest bytes are not a manifest.
    #[error("manifest is not valid JSON of format version {MANIFEST_VERSION}: {0}")]
    Malformed(String),
    /// A chunk index past the end.
    #[error("chunk {index} does not exist: the artifact has {count} chunks")]
    NoSuchChunk {
        /// The index asked for.
        index: u64,
        /// Chunks in the manifest.
        count: u64,
    },
    /// A chunk with the wrong length.
    #[error("chunk {index} has {actual} bytes, the manifest says {expected}")]
    ChunkLength {
        /// Which chunk.
        index: u64,
        /// Length the manifest implies.
        expected: u64,
        /// Length received.
        actual: u64,
    },
    /// A chunk whose bytes do not hash to the manifest's entry.
    #[error("chunk {index} is corrupt: BLAKE3 {actual}, the manifest says {expected}")]
    ChunkHash {
        /// Which chunk.
        index: u64,
        /// Hash in the manifest.
        expected: Digest,
        /// Hash of the bytes received.
        actual: Digest,
    },
}

/// The list of an artifact's chunks and what each must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// Bytes per chunk; every chunk but the last has exactly this many.
    pub chunk_size: u64,
    /// Bytes in the whole artifact.
    pub total_size: u64,
    /// BLAKE3 of the whole artifact: what a host checks before it activates the file.
    pub digest: Digest,
    /// BLAKE3 of each chunk, in order.
    pub chunks: Vec<Digest>,
}

/// BLAKE3 of some bytes as a [`Digest`].
pub fn hash_bytes(bytes: &[u8]) -> Digest {
    digest_of(blake3::hash(bytes))
}

/// A finished BLAKE3 hash as a [`Digest`].
pub fn digest_of(hash: blake3::Hash) -> Digest {
    // A BLAKE3 hash always prints as 64 lower-case hex characters, which is exactly what a Digest accepts.
    Digest::parse(hash.to_hex().to_string()).expect("BLAKE3 hex is a valid digest")
}

/// The 32 bytes a [`Digest`] spells in hex (its compact form, for wire formats).
pub fn digest_bytes(digest: &Digest) -> [u8; 32] {
    // A Digest is validated as exactly 64 hex characters, which is exactly what BLAKE3 parses.
    *blake3::Hash::from_hex(digest.as_str()).expect("a Digest is 64 hex characters").as_bytes()
}

/// How many chunks an artifact of `total_size` bytes has at `chunk_size` (an empty artifact has none).
pub fn chunk_count(total_size: u64, chunk_size: u64) -> u64 {
    assert!(chunk_size > 0, "chunk size must be positive");
    total_size.div_ceil(chunk_size)
}

impl Manifest {
    /// Object-store key of the manifest of the artifact with this digest.
    pub fn key(digest: &Digest) -> String {
        format!("manifests/{digest}.json")
    }

    /// Object-store key of the chunk with this hash (content-addressed, shared across artifacts).
    pub fn chunk_key(hash: &Digest) -> String {
        format!("chunks/{hash}")
    }

    /// Object-store key of a build attempt's complete log, uploaded when the attempt ends.
    pub fn build_log_key(job: crate::JobId, attempt: u32) -> String {
        format!("logs/{job}/attempt-{attempt}.log")
    }

    /// Object-store key of a running attempt's log tail, rewritten with every heartbeat.
    pub fn build_log_tail_key(job: crate::JobId, attempt: u32) -> String {
        format!("logs/{job}/attempt-{attempt}.tail")
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u64 {
        self.chunks.len() as u64
    }

    /// Byte range of chunk `index` inside the artifact.
    pub fn chunk_range(&self, index: u64) -> Result<Range<u64>, ManifestError> {
        let count = self.chunk_count();
        if index >= count {
            return Err(ManifestError::NoSuchChunk { index, count });
        }
        let start = index * self.chunk_size;
        Ok(start..(start + self.chunk_size).min(self.total_size))
    }

    /// Length of chunk `index`.
    pub fn chunk_len(&self, index: u64) -> Result<u64, ManifestError> {
        self.chunk_range(index).map(|r| r.end - r.start)
    }

    /// Hash of chunk `index`.
    pub fn chunk_hash(&self, index: u64) -> Result<&Digest, ManifestError> {
        let count = self.chunk_count();
        usize::try_from(index).ok().and_then(|i| self.chunks.get(i)).ok_or(ManifestError::NoSuchChunk { index, count })
    }

    /// Checks received bytes against chunk `index`: length first (cheap), then the hash.
    pub fn verify_chunk(&self, index: u64, bytes: &[u8]) -> Result<(), ManifestError> {
        let expected_len = self.chunk_len(index)?;
        if bytes.len() as u64 != expected_len {
            return Err(ManifestError::ChunkLength { index, expected: expected_len, actual: bytes.len() as u64 });
        }
        let expected = self.chunk_hash(index)?;
        let actual = hash_bytes(bytes);
        if &actual != expected {
            return Err(ManifestError::ChunkHash { index, expected: expected.clone(), actual });
        }
        Ok(())
    }

    /// Checks that the fields agree with each other and stay within the limits.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let invalid = |what: String| Err(ManifestError::Invalid(what));
        if self.version != MANIFEST_VERSION {
            return invalid(format!("format version {} is not {MANIFEST_VERSION}", self.version));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return invalid(format!(
                "chunk size {} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE} bytes",
                self.chunk_size
            ));
        }
        if self.total_size > MAX_ARTIFACT_SIZE {
            return invalid(format!("size {} exceeds the limit of {MAX_ARTIFACT_SIZE} bytes", self.total_size));
        }
        let expected = chunk_count(self.total_size, self.chunk_size);
        if self.chunk_count() != expected {
            return invalid(format!(
                "{} bytes in chunks of {} make {expected} chunks, the manifest lists {}",
                self.total_size,
                self.chunk_size,
                self.chunk_count()
            ));
        }
        Ok(())
    }

    /// The manifest as stored: pretty JSON, so an operator can read it with `cat`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest always serialises")
    }

    /// Parses and validates stored manifest bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }
}

/// Builds a manifest from an artifact's bytes, fed in order one chunk at a time, so the artifact never
/// has to be in memory at once.
#[derive(Debug)]
pub struct ManifestBuilder {
    chunk_size: u64,
    total_size: u64,
    whole: blake3::Hasher,
    chunks: Vec<Digest>,
    saw_short_chunk: bool,
}

impl ManifestBuilder {
    /// Starts a manifest with chunks of `chunk_size` bytes.
    pub fn new(chunk_size: u64) -> Result<Self, ManifestError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(ManifestError::Invalid(format!(
                "chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE} bytes"
            )));
        }
        Ok(Self { chunk_size, total_size: 0, whole: blake3::Hasher::new(), chunks: Vec::new(), saw_short_chunk: false })
    }

    /// Adds the next chunk and returns its hash (the key it is stored under). Every chunk but the last must
    /// be exactly `chunk_size` bytes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Digest, ManifestError> {
        let len = chunk.len() as u64;
        if self.saw_short_chunk || len == 0 || len > self.chunk_size {
            return Err(ManifestError::Invalid(format!(
                "chunk {} has {len} bytes: only the last chunk may be shorter than {} and none may be empty",
                self.chunks.len(),
                self.chunk_size
            )));
        }
        if self.total_size + len > MAX_ARTIFACT_SIZE {
            return Err(ManifestError::Invalid(format!("artifact exceeds the limit of {MAX_ARTIFACT_SIZE} bytes")));
        }
        self.saw_short_chunk = len < self.chunk_size;
        self.whole.update(chunk);
        self.total_size += len;
        let hash = hash_bytes(chunk);
        self.chunks.push(hash.clone());
        Ok(hash)
    }

    /// Bytes fed so far.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    /// The finished manifest.
    pub fn finish(self) -> Manifest {
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            chunk_size: self.chunk_size,
            total_size: self.total_size,
            digest: digest_of(self.whole.finalize()),
            chunks: self.chunks,
        };
        debug_assert!(manifest.validate().is_ok(), "a built manifest is valid");
        manifest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(bytes: &[u8], chunk_size: u64) -> Manifest {
        let mut builder = ManifestBuilder::new(chunk_size).unwrap();
        for chunk in bytes.chunks(chunk_size as usize) {
            builder.push(chunk).unwrap();
        }
        builder.finish()
    }

    #[test]
    fn chunks_cover_the_artifact_and_verify() {
        let bytes: Vec<u8> = (0..(3 * MIN_CHUNK_SIZE + 17)).map(|i| (i % 251) as u8).collect();
        let manifest = build(&bytes, MIN_CHUNK_SIZE);
        assert_eq!(manifest.chunk_count(), 4);
        assert_eq!(manifest.digest, hash_bytes(&bytes));
        assert_eq!(manifest.chunk_len(3).unwrap(), 17);
        for i in 0..manifest.chunk_count() {
            let range = manifest.chunk_range(i).unwrap();
            manifest.verify_chunk(i, &bytes[range.start as usize..range.end as usize]).unwrap();
        }
        assert!(matches!(manifest.chunk_range(4), Err(ManifestError::NoSuchChunk { index: 4, count: 4 })));
        let round = Manifest::from_json(&manifest.to_json()).unwrap();
        assert_eq!(round, manifest);
    }

    #[test]
    fn corrupt_or_short_chunks_are_refused() {
        let bytes = vec![7u8; 2 * MIN_CHUNK_SIZE as usize];
        let manifest = build(&bytes, MIN_CHUNK_SIZE);
        let mut bad = bytes[..MIN_CHUNK_SIZE as usize].to_vec();
        bad[100] ^= 1;
        assert!(matches!(manifest.verify_chunk(0, &bad), Err(ManifestError::ChunkHash { index: 0, .. })));
        assert!(matches!(manifest.verify_chunk(1, &bad[..10]), Err(ManifestError::ChunkLength { index: 1, .. })));
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let mut manifest = build(&[1u8; 1000], MIN_CHUNK_SIZE);
        manifest.total_size = 2 * MIN_CHUNK_SIZE;
        assert!(matches!(manifest.validate(), Err(ManifestError::Invalid(_))));
        assert!(matches!(Manifest::from_json(b"{\"version\":1}"), Err(ManifestError::Malformed(_))));
        let mut builder = ManifestBuilder::new(MIN_CHUNK_SIZE).unwrap();
        builder.push(&[1u8; 10]).unwrap();
        assert!(builder.push(&[1u8; 10]).is_err(), "a short chunk must be the last");
        assert!(ManifestBuilder::new(10).is_err());
    }

    #[test]
    fn empty_artifact_has_no_chunks() {
        let manifest = ManifestBuilder::new(MIN_CHUNK_SIZE).unwrap().finish();
        assert_eq!(manifest.chunk_count(), 0);
        assert_eq!(manifest.digest, hash_bytes(&[]));
        manifest.validate().unwrap();
    }
}
