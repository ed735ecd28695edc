//! Generated gRPC types and services for `proto/insync.proto` (package `insync.v1`).
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("insync.v1");

/// The message trait of the generated types (`encoded_len` bounds answers by the gRPC limit).
pub use prost;

/// gRPC messages may carry record batches up to `message.max.bytes` plus Raft entries;
/// tonic's 4 MiB decode default is too small for a fetch response that batches partitions.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// HTTP/2 flow-control windows. h2's default of 64 KiB per stream would let one 64 KiB
/// record batch fill the window and stall every request for a WINDOW_UPDATE round trip;
/// Kafka's TCP connections have no such cap, so give streams room for several batches.
pub const STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
pub const CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;

/// A client endpoint with the settings every insync connection uses: no Nagle delay, a
/// connect timeout, and large HTTP/2 windows.
pub fn endpoint(address: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(std::time::Duration::from_millis(1_000))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES))
}

/// A server builder with the same transport settings as `endpoint`.
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
}
