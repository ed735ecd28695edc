//! Generated gRPC types and services for `proto/insync.proto` (package `insync.v1`).
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("insync.v1");

/// gRPC messages may carry record batches up to `message.max.bytes` plus Raft entries;
/// tonic's 4 MiB decode default is too small for a fetch response that batches partitions.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
