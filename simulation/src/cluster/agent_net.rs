//! The region agents' network in the simulation: `cascade_region_agent::transport::Transport` over turmoil
//! TCP, one connection per stream.
//!
//! Production's QUIC gives the agents reliable ordered streams, keep-alives and an idle timeout that
//! closes a connection to a dead or partitioned peer. turmoil's TCP drops segments in a partition and
//! never retransmits them, so a stream would hang for good; a small pump per connection restores QUIC's
//! behaviour: it frames the stream's bytes, sends a ping after [`PING_EVERY`] of silence, and drops the
//! connection after [`IDLE_TIMEOUT`] without a frame from the peer (the agent then reads the end of the
//! stream, as it would after quinn's idle timeout).

use cascade_region_agent::transport::{Incoming, SendHalf, Transport};
use futures::future::BoxFuture;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use turmoil::net::{TcpListener, TcpStream};

/// The port every agent listens on.
pub const AGENT_PORT: u16 = 7100;

/// A connection with nothing to send pings this often (quinn's keep-alive in production is 2 s).
const PING_EVERY: Duration = Duration::from_secs(1);

/// A connection that heard nothing for this long is dropped (quinn's idle timeout in production is 10 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opening a chunk stream gives up after this long (production: 5 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes buffered between an agent and its connection's pump, each way.
const PIPE: usize = 64 * 1024;

/// Largest data frame (a chunk of the simulation's artifacts is 64 KiB).
const MAX_FRAME: usize = 1024 * 1024;

const DATA: u8 = 0;
const PING: u8 = 1;
const FIN: u8 = 2;

/// Streams accepted at most per agent incarnation (a run opens a few thousand).
const MAX_ACCEPTS: u64 = 10_000_000;

/// The sending half of a simulated stream.
pub struct SimSend(WriteHalf<DuplexStream>);

impl AsyncWrite for SimSend {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl SendHalf for SimSend {
    fn finish(&mut self) {
        // Nothing to do: a peer reads one request frame and never waits for the end of a request.
    }

    fn finish_and_wait(&mut self) -> BoxFuture<'_, ()> {
        // The pump sends everything written, then the end, even after the agent dropped the stream.
        Box::pin(async move {
            let _ = self.0.shutdown().await;
        })
    }
}

/// The receiving half of a simulated stream.
pub type SimRecv = ReadHalf<DuplexStream>;

/// The agents' transport on one turmoil host.
pub struct SimAgentTransport;

fn attach(tcp: TcpStream) -> (SimSend, SimRecv) {
    let (agent, pump_end) = tokio::io::duplex(PIPE);
    tokio::spawn(pump(tcp, pump_end));
    let (recv, send) = tokio::io::split(agent);
    (SimSend(send), recv)
}

async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<(SimSend, SimRecv)> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => Ok(attach(tcp)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("{addr}: no answer within {timeout:?}"))),
    }
}

impl Transport for SimAgentTransport {
    type Send = SimSend;
    type Recv = SimRecv;

    fn open(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<(SimSend, SimRecv)>> {
        Box::pin(connect(addr, CONNECT_TIMEOUT))
    }

    fn open_session(&self, addr: SocketAddr, timeout: Duration) -> BoxFuture<'_, io::Result<(SimSend, SimRecv)>> {
        Box::pin(connect(addr, timeout))
    }

    fn forget(&self, _addr: SocketAddr) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn incoming(&self) -> mpsc::UnboundedReceiver<Incoming<SimSend, SimRecv>> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let Ok(listener) = TcpListener::bind(("0.0.0.0", AGENT_PORT)).await else { return };
            for _ in 0..MAX_ACCEPTS {
                let Ok((tcp, peer)) = listener.accept().await else { return };
                let (send, recv) = attach(tcp);
                if tx.send(Incoming { peer, send, recv }).is_err() {
                    return;
                }
            }
        });
        rx
    }

    fn close(&self, _reason: &'static [u8]) {}
}

async fn write_frame(out: &mut (impl AsyncWrite + Unpin), kind: u8, body: &[u8]) -> io::Result<()> {
    // One write per frame: turmoil sends each write as one segment.
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(kind);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    out.write_all(&frame).await
}

async fn read_frame(input: &mut (impl AsyncRead + Unpin)) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    input.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!("frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body).await?;
    Ok((head[0], body))
}

/// Carries one connection both ways until both sides ended it, or the peer went silent.
async fn pump(tcp: TcpStream, local: DuplexStream) {
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let (mut from_agent, mut to_agent) = tokio::io::split(local);
    let outbound = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match tokio::time::timeout(PING_EVERY, from_agent.read(&mut buf)).await {
                Err(_) => write_frame(&mut tcp_write, PING, &[]).await?,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    write_frame(&mut tcp_write, FIN, &[]).await?;
                    return io::Result::Ok(tcp_write);
                }
                Ok(Ok(n)) => write_frame(&mut tcp_write, DATA, &buf[..n]).await?,
            }
        }
    };
    let inbound = async move {
        loop {
            match tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut tcp_read)).await {
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "peer silent")),
                Ok(Err(e)) => return Err(e),
                Ok(Ok((FIN, _))) => {
                    let _ = to_agent.shutdown().await;
                    return Ok(());
                }
                Ok(Ok((DATA, bytes))) => {
                    if to_agent.write_all(&bytes).await.is_err() {
                        // The agent dropped its end: nothing more to deliver, but keep reading until the end.
                        continue;
                    }
                }
                Ok(Ok(_)) => {}
            }
        }
    };
    tokio::pin!(outbound);
    tokio::pin!(inbound);
    tokio::select! {
        sent = &mut outbound => {
            if sent.is_ok() {
                let _ = inbound.await;
            }
        }
        received = &mut inbound => {
            if received.is_ok() {
                let _ = outbound.await;
            }
        }
    }
}
