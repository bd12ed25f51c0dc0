//! The agents' byte streams behind a seam, so the same manager and host code runs over QUIC in production
//! and over a simulated network in `cascade-simulation`.
//!
//! An agent needs three things of its network: open a bidirectional stream to an address, accept the
//! streams peers open (with their addresses), and end a stream so that the peer still reads all of it. The
//! wire protocol ([`crate::protocol`]: length-prefixed frames, `StreamOpen`, `ChunkAnswer`, ...) runs
//! unchanged over any such stream. [`QuicTransport`] is production's: quinn with mutual TLS, one cached
//! connection per peer for chunk fetches, a connection of its own for each control session.

use crate::tls::AGENT_SERVER_NAME;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// How long opening a stream over a new chunk connection may take before the peer counts as dead.
const CHUNK_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The sending half of a stream: bytes, plus the two ways to end it.
pub trait SendHalf: AsyncWrite + Unpin + Send + 'static {
    /// Writes a whole buffer. QUIC takes the buffer as it is; the default copies it through `write_all`.
    fn write_bytes(&mut self, bytes: Bytes) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move { self.write_all(&bytes).await })
    }

    /// Ends the stream (no more bytes follow) without waiting for the peer.
    fn finish(&mut self);

    /// Ends the stream and waits until the peer has read everything or gone, so dropping the stream right
    /// after does not cut an answer short.
    fn finish_and_wait(&mut self) -> BoxFuture<'_, ()>;
}

/// A stream a peer opened, with the peer's address.
pub struct Incoming<S, R> {
    /// Where the peer's connection comes from.
    pub peer: SocketAddr,
    /// Bytes to the peer.
    pub send: S,
    /// Bytes from the peer.
    pub recv: R,
}

/// What the agents ask of their network.
pub trait Transport: Send + Sync + 'static {
    /// The sending half of a stream.
    type Send: SendHalf;
    /// The receiving half of a stream.
    type Recv: AsyncRead + Unpin + Send + 'static;

    /// Opens a stream to `addr` over a connection kept for later streams to the same peer (chunk fetches).
    fn open(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<(Self::Send, Self::Recv)>>;

    /// Opens a stream to `addr` over a connection of its own that lives as long as the stream (a control
    /// session), giving up after `timeout`.
    fn open_session(&self, addr: SocketAddr, timeout: Duration) -> BoxFuture<'_, io::Result<(Self::Send, Self::Recv)>>;

    /// Drops the kept connection to `addr`: the peer may have restarted on the same address.
    fn forget(&self, addr: SocketAddr) -> BoxFuture<'_, ()>;

    /// The streams peers open, as they arrive. Call it once; the channel ends when the transport closes.
    fn incoming(&self) -> mpsc::UnboundedReceiver<Incoming<Self::Send, Self::Recv>>;

    /// Closes every connection; `reason` tells the peers why.
    fn close(&self, reason: &'static [u8]);
}

impl SendHalf for quinn::SendStream {
    fn write_bytes(&mut self, bytes: Bytes) -> BoxFuture<'_, io::Result<()>> {
        // Hand the buffer to quinn as it is: `write_all` would copy the chunk once more.
        Box::pin(async move { self.write_chunk(bytes).await.map_err(io::Error::other) })
    }

    fn finish(&mut self) {
        let _ = quinn::SendStream::finish(self);
    }

    fn finish_and_wait(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = quinn::SendStream::finish(self);
            let _ = self.stopped().await;
        })
    }
}

/// One peer's connection, made once and shared by every fetch from that peer.
type PeerCell = Arc<tokio::sync::OnceCell<quinn::Connection>>;

/// Production's transport: a quinn endpoint with mutual TLS.
pub struct QuicTransport {
    endpoint: quinn::Endpoint,
    /// Held only to find or insert a peer's cell, never across a handshake: one slow or unreachable peer
    /// must not hold up fetches from every other peer (it did, for up to the connect timeout).
    peers: std::sync::Mutex<HashMap<SocketAddr, PeerCell>>,
}

impl QuicTransport {
    /// Wraps an endpoint made by [`crate::tls::endpoint`].
    pub fn new(endpoint: quinn::Endpoint) -> Self {
        Self { endpoint, peers: std::sync::Mutex::new(HashMap::new()) }
    }

    async fn connect(&self, addr: SocketAddr, timeout: Duration) -> io::Result<quinn::Connection> {
        let connecting = self.endpoint.connect(addr, AGENT_SERVER_NAME).map_err(io::Error::other)?;
        tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))?
            .map_err(io::Error::other)
    }

    /// The open connection to `addr`, connecting once however many fetches ask at the same time (a failed
    /// handshake leaves the cell empty, so the next fetch tries again).
    async fn cached(&self, addr: SocketAddr) -> io::Result<quinn::Connection> {
        let cell = {
            let mut peers = self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match peers.get(&addr) {
                Some(cell) if cell.get().is_none_or(|c| c.close_reason().is_none()) => cell.clone(),
                _ => {
                    let cell = PeerCell::default();
                    peers.insert(addr, cell.clone());
                    cell
                }
            }
        };
        let connection = cell.get_or_try_init(|| self.connect(addr, CHUNK_CONNECT_TIMEOUT)).await?;
        Ok(connection.clone())
    }
}

impl Transport for QuicTransport {
    type Send = quinn::SendStream;
    type Recv = quinn::RecvStream;

    fn open(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<(Self::Send, Self::Recv)>> {
        Box::pin(async move { self.cached(addr).await?.open_bi().await.map_err(io::Error::other) })
    }

    fn open_session(&self, addr: SocketAddr, timeout: Duration) -> BoxFuture<'_, io::Result<(Self::Send, Self::Recv)>> {
        Box::pin(async move { self.connect(addr, timeout).await?.open_bi().await.map_err(io::Error::other) })
    }

    fn forget(&self, addr: SocketAddr) -> BoxFuture<'_, ()> {
        self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&addr);
        Box::pin(async {})
    }

    fn incoming(&self) -> mpsc::UnboundedReceiver<Incoming<Self::Send, Self::Recv>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let endpoint = self.endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let streams = tx.clone();
                tokio::spawn(async move {
                    let Ok(connection) = incoming.await else { return };
                    let peer = connection.remote_address();
                    while let Ok((send, recv)) = connection.accept_bi().await {
                        if streams.send(Incoming { peer, send, recv }).is_err() {
                            return;
                        }
                    }
                    // What the peer's link carried for us: datagrams, losses and congestion events.
                    tracing::debug!(%peer, stats = ?connection.stats(), "peer connection ended");
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        rx
    }

    fn close(&self, reason: &'static [u8]) {
        self.endpoint.close(0u32.into(), reason);
    }
}
