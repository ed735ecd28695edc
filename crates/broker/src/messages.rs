//! The replica manager's own request and answer types (Kafka's `FetchParams`,
//! `FetchPartitionData`, `LogAppendResult` play this part). The gRPC service, the follower
//! fetcher and the Kafka listener convert to and from these at the edge (`grpc_convert.rs`,
//! `kafka/`), so neither wire format is the core's model.
use bytes::Bytes;
use insync_replication::EpochEndOffset;
use insync_types::{BrokerId, ErrorCode, LeaderEpoch, Offset, TopicPartition, NO_EPOCH};

/// One partition's batch to append on its leader.
#[derive(Debug, Clone)]
pub struct ProduceRequest {
    pub topic_partition: TopicPartition,
    /// As sent (-1, 0 or 1); anything else is answered INVALID_REQUIRED_ACKS by the core, so
    /// both listeners refuse it alike.
    pub acks: i32,
    pub timeout_ms: u32,
    /// One RecordBatch v2, as the client sent it.
    pub records: Bytes,
}

/// What a produce answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceOutcome {
    pub error: ErrorCode,
    /// Why, in words (empty on success); says whether anything was written.
    pub message: String,
    pub base_offset: Offset,
    /// Whether the batch is in the leader's log (true for NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    pub appended: bool,
    pub leader_epoch: LeaderEpoch,
}

impl ProduceOutcome {
    /// Refused before anything was written.
    pub fn rejected(error: ErrorCode, message: impl Into<String>) -> Self {
        ProduceOutcome { error, message: message.into(), base_offset: -1, appended: false, leader_epoch: NO_EPOCH }
    }
}

/// A fetch from a consumer (replica id -1) or a follower (its broker id).
#[derive(Debug, Clone, Default)]
pub struct FetchRequest {
    pub replica_id: BrokerId,
    /// The follower's broker epoch (KIP-903); 0 for consumers.
    pub broker_epoch: i64,
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    /// 0: unset (fetch.max.bytes).
    pub max_bytes: u32,
    /// The most record bytes the transport can carry back (the gRPC message limit less
    /// this request's framing); the core never answers more.
    pub transport_limit: usize,
    pub partitions: Vec<FetchPartition>,
}

/// One partition of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    pub topic_partition: TopicPartition,
    pub fetch_offset: Offset,
    /// The fetcher's view of the leader epoch (KIP-320); -1: not checked.
    pub current_leader_epoch: LeaderEpoch,
    /// The epoch of the follower's last batch (KIP-320 divergence check); -1: none.
    pub last_fetched_epoch: LeaderEpoch,
    pub partition_max_bytes: u32,
}

/// One partition's fetch answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionResponse {
    pub topic_partition: TopicPartition,
    pub error: ErrorCode,
    pub error_message: String,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
    pub leader_epoch: LeaderEpoch,
    pub records: Bytes,
    /// Where the follower's log diverged from the leader's (KIP-320), if it did.
    pub diverging_epoch: Option<EpochEndOffset>,
}

impl FetchPartitionResponse {
    /// An answer before anything is known about the partition.
    pub fn empty(topic_partition: TopicPartition) -> Self {
        FetchPartitionResponse {
            topic_partition,
            error: ErrorCode::NONE,
            error_message: String::new(),
            high_watermark: -1,
            log_start_offset: -1,
            log_end_offset: -1,
            leader_epoch: NO_EPOCH,
            records: Bytes::new(),
            diverging_epoch: None,
        }
    }

    /// An answer that is only an error.
    pub fn refused(topic_partition: TopicPartition, error: ErrorCode, message: impl Into<String>) -> Self {
        FetchPartitionResponse { error, error_message: message.into(), ..Self::empty(topic_partition) }
    }
}

/// A fetch's answer: one entry per requested partition, in request order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchResponse {
    pub partitions: Vec<FetchPartitionResponse>,
}
