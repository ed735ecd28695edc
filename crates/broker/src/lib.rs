//! insync broker library: the replica manager, follower fetchers, the controller link, the
//! gRPC service and the Kafka wire-protocol listener, assembled by `server::run` (the `insync-broker` binary is a thin
//! wrapper that parses flags and waits for a signal).
pub mod config;
pub mod connection_slots;
pub mod controller_link;
pub mod fetch_limits;
#[cfg(test)]
mod fetch_tests;
pub mod fetcher;
pub mod grpc_limits;
pub mod kafka;
pub mod metrics;
pub mod partition;
pub mod producer_ids;
pub mod replica_identity;
pub mod replica_manager;
pub mod server;
pub mod service;
