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

/// The node's own address, set once at node start (`set_local_address`).
static LOCAL_ADDRESS: std::sync::OnceLock<std::net::IpAddr> = std::sync::OnceLock::new();

/// Makes every later [`endpoint`] of this process bind its connections' source address to
/// `ip`, the node's own listen address, before connecting. On one machine each node of a
/// local cluster listens on its own loopback address (broker N on 127.0.1.N, controller N
/// on 127.0.2.N); without the bind, Linux gives every connection to 127.x.y.z the source
/// 127.0.0.1, and packet filters could not tell which node a packet comes from
/// (`scripts/cluster.sh partition`, `insync_lab::netcut`). The first call wins; false if the
/// address was already set. Clients (CLIs, producers) never call it.
pub fn set_local_address(ip: std::net::IpAddr) -> bool {
    LOCAL_ADDRESS.set(ip).is_ok()
}

/// The node's own address, if [`set_local_address`] set one.
pub fn local_address() -> Option<std::net::IpAddr> {
    LOCAL_ADDRESS.get().copied()
}

/// The source address for a connection to `address` (`host:port`): the node's own address,
/// except that a loopback one is used only towards loopback destinations (an IP literal or
/// `localhost`), the only ones a loopback source can reach.
fn source_address_for(local: Option<std::net::IpAddr>, address: &str) -> Option<std::net::IpAddr> {
    let local = local?;
    if !local.is_loopback() {
        return Some(local);
    }
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback.then_some(local)
}

/// A client endpoint with the settings every insync connection uses: no Nagle delay, a
/// connect timeout, large HTTP/2 windows, and in a node the node's own source address
/// ([`set_local_address`]).
pub fn endpoint(address: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(std::time::Duration::from_millis(1_000))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .local_address(source_address_for(local_address(), address)))
}

/// A server builder with the same transport settings as `endpoint`.
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
}

#[cfg(test)]
mod tests {
    use super::source_address_for;

    #[test]
    fn a_loopback_source_is_used_towards_loopback_destinations_only() {
        let node = Some("127.0.1.2".parse().unwrap());
        assert_eq!(source_address_for(None, "127.0.1.1:9092"), None, "a client binds nothing");
        for local in ["127.0.2.1:9191", "127.0.0.1:9092", "localhost:9092", "[::1]:9092"] {
            assert_eq!(source_address_for(node, local), node, "{local}");
        }
        for remote in ["10.0.0.5:9092", "controller-1:9093", "[2001:db8::1]:9092"] {
            assert_eq!(source_address_for(node, remote), None, "{remote}");
        }
        let specific = Some("10.0.0.7".parse().unwrap());
        assert_eq!(source_address_for(specific, "controller-1:9093"), specific);
    }
}
