//! The gRPC listener's connection limits: at most `--grpc-max-connections` accepted sockets
//! at once (further clients wait in the accept backlog), at most
//! `--grpc-max-connections-per-ip` from one address, and a connection that sends nothing
//! within `FIRST_BYTES_TIMEOUT` of being accepted (not even the HTTP/2 preface) is closed,
//! so silent sockets cannot sit on slots. (Streams per connection, header sizes and
//! decoded message sizes are bounded by the server builder in `server.rs`.)
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

use crate::connection_slots::{ConnectionSlots, Slot};

/// How long an accepted gRPC connection may take to send its first bytes.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// An accepted socket holding one of the listener's connection slots until it is dropped.
pub struct LimitedStream {
    inner: TcpStream,
    /// Armed until the first bytes arrive.
    first_bytes: Option<Pin<Box<Sleep>>>,
    _slot: Slot,
}

/// Accepted sockets, one connection slot each, with TCP_NODELAY (Nagle plus delayed ACK
/// costs 40 ms a round trip). Accept errors (out of file descriptors) back off instead of
/// ending the stream, which would stop the server.
pub fn incoming(
    listener: TcpListener,
    max_connections: usize,
    max_per_ip: usize,
) -> impl Stream<Item = io::Result<LimitedStream>> {
    let slots = ConnectionSlots::new("gRPC", max_connections, max_per_ip);
    futures::stream::unfold((listener, slots), move |(listener, slots)| async move {
        loop {
            let reserved = slots.reserve().await?;
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let Some(slot) = slots.admit(reserved, peer.ip()) else { continue };
                    let _ = stream.set_nodelay(true);
                    let first_bytes = Some(Box::pin(tokio::time::sleep(FIRST_BYTES_TIMEOUT)));
                    let stream = LimitedStream { inner: stream, first_bytes, _slot: slot };
                    return Some((Ok(stream), (listener, slots)));
                }
                Err(e) => {
                    debug!(error = %e, "gRPC accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

impl Connected for LimitedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => self.first_bytes = None,
            Poll::Pending => {
                if let Some(timer) = self.first_bytes.as_mut() {
                    if timer.as_mut().poll(cx).is_ready() {
                        let peer = self.inner.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                        warn!(%peer, seconds = FIRST_BYTES_TIMEOUT.as_secs(), "gRPC client sent nothing; closing");
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no bytes from the client")));
                    }
                }
            }
            _ => {}
        }
        polled
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_connection_beyond_the_limit_waits_for_a_slot() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut accepted = Box::pin(incoming(listener, 1, 10));
        let _first_client = TcpStream::connect(address).await.unwrap();
        let first = accepted.next().await.unwrap().unwrap();
        let _second_client = TcpStream::connect(address).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(200), accepted.next()).await;
        assert!(waiting.is_err(), "the second connection must wait while the first holds the only slot");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), accepted.next()).await;
        assert!(matches!(second, Ok(Some(Ok(_)))), "served once the first closed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_is_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut accepted = Box::pin(incoming(listener, 4, 4));
        let mut talker = TcpStream::connect(address).await.unwrap();
        let mut talking = accepted.next().await.unwrap().unwrap();
        let _silent_client = TcpStream::connect(address).await.unwrap();
        let mut silent = accepted.next().await.unwrap().unwrap();
        talker.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(talking.read(&mut byte).await.unwrap(), 1);
        let error = silent.read(&mut byte).await.expect_err("closed after the first-bytes timeout");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        // The one that spoke has no timer any more.
        let still = tokio::time::timeout(FIRST_BYTES_TIMEOUT * 2, talking.read(&mut byte)).await;
        assert!(still.is_err(), "a connection that spoke is not timed out");
    }
}
