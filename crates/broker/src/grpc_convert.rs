//! The gRPC edge: converts between the protobuf messages of `proto/insync.proto` and the
//! core's types in `messages.rs`, for the broker service (server side) and the follower
//! fetcher (client side). Moves record bytes, never copies them.
use insync_proto as pb;
use insync_replication::EpochEndOffset;
use insync_types::{ErrorCode, TopicPartition};

use crate::fetch_limits::grpc_record_budget;
use crate::messages::{
    FetchPartition, FetchPartitionResponse, FetchRequest, FetchResponse, ProduceOutcome, ProduceRequest,
};

pub(crate) fn produce_request(request: pb::ProduceRequest) -> ProduceRequest {
    ProduceRequest {
        topic_partition: TopicPartition::new(request.topic, request.partition),
        acks: request.acks,
        timeout_ms: request.timeout_ms,
        records: request.records,
    }
}

pub(crate) fn produce_response(outcome: ProduceOutcome, correlation_id: u64) -> pb::ProduceResponse {
    pb::ProduceResponse {
        error_code: outcome.error.code(),
        error_message: outcome.message,
        base_offset: outcome.base_offset,
        appended: outcome.appended,
        leader_epoch: outcome.leader_epoch,
        correlation_id,
    }
}

/// A gRPC fetch, with the record bytes its answer can carry inside the gRPC message limit.
pub(crate) fn fetch_request(request: pb::FetchRequest) -> FetchRequest {
    FetchRequest {
        replica_id: request.replica_id,
        broker_epoch: request.broker_epoch,
        max_wait_ms: request.max_wait_ms,
        min_bytes: request.min_bytes,
        max_bytes: request.max_bytes,
        transport_limit: grpc_record_budget(request.partitions.iter().map(|p| p.topic.as_str())),
        partitions: request
            .partitions
            .into_iter()
            .map(|p| FetchPartition {
                topic_partition: TopicPartition::new(p.topic, p.partition),
                fetch_offset: p.fetch_offset,
                current_leader_epoch: p.current_leader_epoch,
                last_fetched_epoch: p.last_fetched_epoch,
                partition_max_bytes: p.partition_max_bytes,
            })
            .collect(),
    }
}

/// What a follower sends (the transport limit is the leader's to compute).
pub(crate) fn fetch_request_to_wire(request: FetchRequest) -> pb::FetchRequest {
    pb::FetchRequest {
        replica_id: request.replica_id,
        max_wait_ms: request.max_wait_ms,
        min_bytes: request.min_bytes,
        max_bytes: request.max_bytes,
        partitions: request
            .partitions
            .into_iter()
            .map(|p| pb::FetchPartition {
                topic: p.topic_partition.topic,
                partition: p.topic_partition.partition,
                fetch_offset: p.fetch_offset,
                current_leader_epoch: p.current_leader_epoch,
                last_fetched_epoch: p.last_fetched_epoch,
                partition_max_bytes: p.partition_max_bytes,
            })
            .collect(),
        broker_epoch: request.broker_epoch,
    }
}

pub(crate) fn fetch_response_to_wire(response: FetchResponse) -> pb::FetchResponse {
    pb::FetchResponse {
        error_code: 0,
        partitions: response
            .partitions
            .into_iter()
            .map(|p| pb::FetchPartitionResponse {
                topic: p.topic_partition.topic,
                partition: p.topic_partition.partition,
                error_code: p.error.code(),
                high_watermark: p.high_watermark,
                log_start_offset: p.log_start_offset,
                log_end_offset: p.log_end_offset,
                records: p.records,
                diverging_epoch: p
                    .diverging_epoch
                    .map(|d| pb::EpochEndOffset { epoch: d.epoch, end_offset: d.end_offset }),
                leader_epoch: p.leader_epoch,
                error_message: p.error_message,
            })
            .collect(),
    }
}

/// A leader's answer as the follower applies it. A top-level error (none is sent today) is
/// carried onto every partition so none is applied as if it had succeeded.
pub(crate) fn fetch_response(response: pb::FetchResponse) -> FetchResponse {
    let top_level = ErrorCode::from_code(response.error_code);
    FetchResponse {
        partitions: response
            .partitions
            .into_iter()
            .map(|p| FetchPartitionResponse {
                topic_partition: TopicPartition::new(p.topic, p.partition),
                error: if top_level != ErrorCode::NONE { top_level } else { ErrorCode::from_code(p.error_code) },
                error_message: p.error_message,
                high_watermark: p.high_watermark,
                log_start_offset: p.log_start_offset,
                log_end_offset: p.log_end_offset,
                leader_epoch: p.leader_epoch,
                records: p.records,
                diverging_epoch: p.diverging_epoch.map(|d| EpochEndOffset { epoch: d.epoch, end_offset: d.end_offset }),
            })
            .collect(),
    }
}
