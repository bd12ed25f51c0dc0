//! A host's side of the swarm: fetching a chunk from a peer (or the seed), verifying and keeping it, and
//! serving verified chunks to peers.

use super::Host;
use crate::protocol::{
    read_frame, write_frame, ChunkAnswer, ChunkRequest, DownloadId, FetchFailure, HostMessage, StreamOpen,
};
use crate::releases::ChunkWriteError;
use crate::transport::{Incoming, SendHalf as _, Transport};
use cascade_core::Digest;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;

/// One assignment from the manager: fetch `chunk` of `digest` (numbered `download` in this session) from
/// host `from` at `addr`.
pub(super) struct Fetch {
    pub(super) download: DownloadId,
    pub(super) digest: Digest,
    pub(super) chunk: u32,
    pub(super) from: u32,
    pub(super) addr: SocketAddr,
}

/// Fetches one chunk from `addr`, verifies it, writes it, and tells the manager.
pub(super) async fn fetch<T: Transport>(host: Arc<Host<T>>, tx: mpsc::UnboundedSender<HostMessage>, fetch: Fetch) {
    let Fetch { download, digest, chunk, from, addr } = fetch;
    let expected = {
        let releases = host.releases.lock().expect("releases lock");
        match releases.get(&digest).map(|d| d.manifest.chunk_len(chunk as u64)) {
            Some(Ok(len)) => len,
            _ => {
                // Never drop an assignment silently: the manager holds a sender's slot for it until it hears.
                tracing::warn!(%digest, chunk, "fetch for a download this host does not hold");
                let _ = tx.send(HostMessage::Failed { download, chunk, from, reason: FetchFailure::Stalled });
                return;
            }
        }
    };
    let timeout = Duration::from_secs(host.config.fetch_timeout_secs);
    let received = tokio::time::timeout(timeout, request_chunk(&host, addr, &digest, chunk, expected)).await;
    let outcome = match received {
        Err(_) => Err(FetchFailure::Stalled),
        Ok(Err(reason)) => Err(reason),
        Ok(Ok(bytes)) => {
            host.metrics.received(addr, bytes.len() as u64);
            let writer = host.clone();
            let digest = digest.clone();
            host.blocking
                .run(move || {
                    let mut releases = writer.releases.lock().expect("releases lock");
                    let Some(download) = releases.get_mut(&digest) else { return Err(FetchFailure::Stalled) };
                    match download.write_chunk(chunk, &bytes) {
                        Ok(()) => Ok(()),
                        Err(ChunkWriteError::Bad(e)) => {
                            tracing::warn!(%digest, chunk, %addr, "bad chunk: {e}");
                            Err(FetchFailure::BadChunk)
                        }
                        Err(ChunkWriteError::Io(e)) => {
                            tracing::error!(%digest, chunk, "cannot write chunk: {e}");
                            Err(FetchFailure::Stalled)
                        }
                    }
                })
                .await
                .unwrap_or(Err(FetchFailure::Stalled))
        }
    };
    if matches!(outcome, Err(FetchFailure::Dead | FetchFailure::Stalled)) {
        // The cached connection may be to a process that has since restarted on the same address.
        host.transport.forget(addr).await;
    }
    let message = match outcome {
        Ok(()) => {
            host.metrics.chunk_verified();
            *host.status.lock().expect("status lock").fetched.entry(digest.to_string()).or_default() += 1;
            host.save_status();
            HostMessage::Verified { download, chunk }
        }
        Err(reason) => {
            host.metrics.fetch_failed(addr, reason);
            if reason == FetchFailure::BadChunk {
                *host.status.lock().expect("status lock").bad_chunks_from.entry(addr.to_string()).or_default() += 1;
                host.save_status();
            }
            HostMessage::Failed { download, chunk, from, reason }
        }
    };
    let _ = tx.send(message);
}

async fn request_chunk<T: Transport>(
    host: &Host<T>,
    addr: SocketAddr,
    digest: &Digest,
    chunk: u32,
    expected: u64,
) -> Result<Vec<u8>, FetchFailure> {
    let (mut send, mut recv) = host.transport.open(addr).await.map_err(|_| FetchFailure::Dead)?;
    let request = StreamOpen::Chunk(ChunkRequest { digest: digest.clone(), chunk });
    write_frame(&mut send, &request).await.map_err(|_| FetchFailure::Dead)?;
    send.finish();
    match read_frame::<ChunkAnswer>(&mut recv).await {
        Ok(Some(ChunkAnswer::Ok { len })) if len == expected => {}
        Ok(Some(ChunkAnswer::Ok { .. })) => return Err(FetchFailure::BadChunk),
        Ok(Some(ChunkAnswer::Refused(_))) | Ok(None) => return Err(FetchFailure::Stalled),
        Err(_) => return Err(FetchFailure::Dead),
    }
    let mut bytes = vec![0u8; expected as usize];
    recv.read_exact(&mut bytes).await.map_err(|_| FetchFailure::Dead)?;
    Ok(bytes)
}

/// Accepts peers' chunk requests and answers from verified chunks only.
pub(super) async fn serve_chunks<T: Transport>(host: Arc<Host<T>>) {
    let mut incoming = host.transport.incoming();
    while let Some(Incoming { peer, mut send, mut recv }) = incoming.recv().await {
        let host = host.clone();
        tokio::spawn(async move {
            let Ok(Some(StreamOpen::Chunk(request))) = read_frame::<StreamOpen>(&mut recv).await else {
                return;
            };
            // A chunk is read from disk like it is written: off the async threads (`host.blocking`).
            let reader = host.clone();
            let read = host
                .blocking
                .run(move || {
                    let releases = reader.releases.lock().expect("releases lock");
                    releases.get(&request.digest).map(|d| d.read_chunk(request.chunk))
                })
                .await
                .flatten();
            match read {
                Some(Ok(mut bytes)) => {
                    if host.config.corrupt_uploads && !bytes.is_empty() {
                        bytes[0] ^= 0xff;
                    }
                    let answer = ChunkAnswer::Ok { len: bytes.len() as u64 };
                    let len = bytes.len() as u64;
                    if write_frame(&mut send, &answer).await.is_ok()
                        && send.write_bytes(bytes::Bytes::from(bytes)).await.is_ok()
                    {
                        host.metrics.sent(peer, len);
                    }
                }
                _ => {
                    let _ = write_frame(&mut send, &ChunkAnswer::Refused("chunk not held".into())).await;
                }
            }
            // Wait for the receiver to read everything before the stream is dropped.
            send.finish_and_wait().await;
        });
    }
}
