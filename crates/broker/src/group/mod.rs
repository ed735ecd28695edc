//! The consumer-group coordinator (Kafka `GroupCoordinator` / `GroupMetadataManager`,
//! classic protocol): the pure state machine (`classic.rs` one group, `coordinator.rs` every
//! group of this broker: requests and timers in, responses and effects out, no I/O), its
//! async runtime (`runtime.rs`: waiters, the timer task, appends), and the durable side
//! behind the `GroupLog` seam: `records.rs` (the `__consumer_offsets` record layouts) and
//! `storage.rs` (the internal topic and coordinator placement).
//!
//! Protocol adapters live at the edges: `crate::kafka::group*` (Kafka wire) and the gRPC
//! group RPCs in `crate::service`.
pub mod classic;
pub mod consumer_protocol;
pub mod coordinator;
pub mod grpc;
#[cfg(test)]
pub mod memory_log;
pub mod offsets;
pub mod records;
pub mod runtime;
#[cfg(test)]
mod runtime_tests;
pub mod storage;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;

use insync_types::ErrorCode;

pub use records::GroupRecord;
pub use runtime::GroupCoordinator;

/// What the coordinator needs from durable storage (implemented by `storage::GroupStorage`
/// over `__consumer_offsets`, and by `memory_log::MemoryGroupLog` in tests).
pub trait GroupLog: Send + Sync + 'static {
    /// The offsets partition of a group (Kafka `GroupMetadataManager.partitionFor`).
    fn partition_for(&self, group_id: &str) -> Result<i32, ErrorCode>;
    /// Ok(leader epoch) if this broker coordinates `partition` and has loaded it.
    fn check_loaded(&self, partition: i32) -> Result<i32, ErrorCode>;
    /// Appends `records` durably (acks=all): the append itself happens during this call, so
    /// records take their place in the log in call order (the coordinator calls it under its
    /// lock: log order is decision order); the future only waits for the acknowledgement
    /// and resolves with the error to answer the client. Fails with NOT_COORDINATOR unless
    /// `leader_epoch` is the partition's current loaded epoch.
    /// Err: nothing was appended (the error to answer).
    fn append(&self, partition: i32, leader_epoch: i32, records: Vec<GroupRecord>) -> Result<AppendWait, ErrorCode>;
}

/// The acknowledgement of an append started by `GroupLog::append`.
pub type AppendWait = Pin<Box<dyn Future<Output = Result<(), ErrorCode>> + Send>>;

/// Java's `String.hashCode` over UTF-16 units, as Kafka hashes group ids.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(i32::from(unit)))
}
