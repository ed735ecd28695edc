//! insync broker library: the replica manager, follower fetchers, the controller link, the
//! gRPC service and the Kafka wire-protocol listener, assembled by `server::run` (the
//! `insync-broker` binary is a thin wrapper that parses flags and waits for a signal).
//!
//! Only `config`, `server` and the Kafka listener's fuzzing entry are public: everything else
//! is the broker's inside, `pub(crate)` at the module, so a `pub` item in it is visible to the
//! broker alone.
pub mod config;
pub(crate) mod connection_slots;
pub(crate) mod controller_link;
pub(crate) mod fetch_limits;
#[cfg(test)]
mod fetch_tests;
pub(crate) mod fetcher;
pub(crate) mod group;
pub(crate) mod grpc_convert;
pub(crate) mod grpc_limits;
pub mod kafka;
pub(crate) mod log_dirs;
pub(crate) mod messages;
pub(crate) mod metrics;
#[cfg(test)]
mod offline_tests;
pub(crate) mod partition;
#[cfg(test)]
mod partition_tests;
pub(crate) mod producer_ids;
pub(crate) mod producer_snapshots;
pub(crate) mod replica_identity;
pub(crate) mod replica_manager;
pub mod server;
pub(crate) mod service;
#[cfg(test)]
mod sim;
