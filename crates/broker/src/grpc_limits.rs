//! The gRPC listener's connection limit: at most `--grpc-max-connections` accepted sockets
//! are served at once, like Kafka's `max.connections` on its listeners; further clients
//! wait in the accept backlog until a connection closes. (Streams per connection, header
//! sizes and decoded message sizes are bounded by the server builder in `server.rs`.)
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, warn};

/// An accepted socket holding one of the listener's connection slots until it is dropped.
pub struct LimitedStream {
    inner: TcpStream,
    _slot: OwnedSemaphorePermit,
}

/// Accepted sockets, one connection slot each, with TCP_NODELAY (Nagle plus delayed ACK
/// costs 40 ms a round trip). Accept errors (out of file descriptors) back off instead of
/// ending the stream, which would stop the server.
pub fn incoming(listener: TcpListener, max_connections: usize) -> impl Stream<Item = io::Result<LimitedStream>> {
    let slots = Arc::new(Semaphore::new(max_connections));
    futures::stream::unfold((listener, slots), move |(listener, slots)| async move {
        loop {
            if slots.available_permits() == 0 {
                warn!(max_connections, "gRPC listener at its connection limit: new clients wait until one closes");
            }
            let slot = slots.clone().acquire_owned().await.ok()?;
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((Ok(LimitedStream { inner: stream, _slot: slot }), (listener, slots)));
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
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
        let mut accepted = Box::pin(incoming(listener, 1));
        let _first_client = TcpStream::connect(address).await.unwrap();
        let first = accepted.next().await.unwrap().unwrap();
        let _second_client = TcpStream::connect(address).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(200), accepted.next()).await;
        assert!(waiting.is_err(), "the second connection must wait while the first holds the only slot");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), accepted.next()).await;
        assert!(matches!(second, Ok(Some(Ok(_)))), "served once the first closed");
    }
}
