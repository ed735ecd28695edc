//! Fetch v4+ and ListOffsets for consumers (Kafka `KafkaApis.handleFetchRequest`,
//! `handleListOffsetRequest`). Fetch is `ReplicaManager::fetch` with replica id -1, so a
//! Kafka consumer reads exactly what an insync consumer reads: whole batches as they lie in
//! the log, only below the high watermark, with the same leader and leader-epoch checks
//! (NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH 74, UNKNOWN_LEADER_EPOCH 75) and long-poll.
//! There are no transactions, so the last stable offset is the high watermark and
//! read_committed reads the same as read_uncommitted. No fetch sessions (KIP-227): the
//! answer's session id 0 tells clients to send full fetches. Sizing is the replica
//! manager's, as for gRPC: max_bytes clamped to fetch.max.bytes, one oversized batch only
//! for the first partition with data, and a partition listed twice answered
//! INVALID_REQUEST (42) on each entry. A Kafka client is always a consumer here: the
//! request's replica id is not used (followers replicate over gRPC). A consumer older
//! than zstd (Fetch < 10) reading a topic whose compression.type is zstd is answered
//! UNSUPPORTED_COMPRESSION_TYPE (76) for that partition, as Kafka does.
use std::sync::Arc;

use insync_log::batch::{decode_records, iter_batches};
use insync_log::compression::{topic_compression, Compression};
use insync_proto as pb;
use insync_types::topic_config::COMPRESSION_TYPE;
use insync_types::{ErrorCode, TopicPartition, CONSUMER_REPLICA_ID};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse};

use super::connection::{respond, respond_now, PendingReply, RequestMeta};
use super::KafkaContext;
use crate::messages::{self, FetchPartition, FetchPartitionResponse};
use crate::partition::Partition;

/// Fetch's isolation_level for READ_COMMITTED (KIP-98).
const READ_COMMITTED: i8 = 1;

/// ListOffsets timestamps with a meaning (Kafka `ListOffsetsRequest`).
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// The most record bytes one Kafka fetch answer carries, the one-batch exemption included.
const MAX_KAFKA_FETCH_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// The first Fetch version of clients that can read zstd (KIP-110).
const ZSTD_MIN_FETCH_VERSION: i16 = 10;

/// How much of the log one step of a timestamp search reads under the partition lock.
const SEARCH_CHUNK_BYTES: usize = 1024 * 1024;

pub(super) fn handle_fetch(context: &Arc<KafkaContext>, meta: RequestMeta, request: FetchRequest) -> PendingReply {
    if request.session_id != 0 {
        // We never hand out a session id, so a client cannot have one (KIP-227).
        let response = FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code());
        return respond_now(meta, response);
    }
    let read_committed = request.isolation_level == READ_COMMITTED;
    let version = meta.api_version;
    let mut partitions = Vec::new();
    let mut layout: Vec<(kafka_protocol::messages::TopicName, usize)> = Vec::new();
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        layout.push((topic.topic.clone(), topic.partitions.len()));
        for p in topic.partitions {
            partitions.push(FetchPartition {
                topic_partition: TopicPartition::new(name.clone(), p.partition),
                fetch_offset: p.fetch_offset,
                current_leader_epoch: p.current_leader_epoch,
                last_fetched_epoch: -1,
                // As max_bytes: Kafka's 0 is "nothing beyond the first batch", not "unset".
                partition_max_bytes: u32::try_from(p.partition_max_bytes).unwrap_or(0).max(1),
            });
        }
    }
    // Kafka serves min(max_bytes, fetch.max.bytes), so 0 or less still returns one batch
    // (minOneMessage) and nothing more; the replica manager reads 0 as "unset" (proto3's
    // default), so a Kafka client's 0 becomes 1 byte here.
    let max_bytes = u32::try_from(request.max_bytes).unwrap_or(0).max(1);
    // min_bytes 0 asks for an answer at once, data or not (Kafka `DelayedFetch` is not used
    // then); the replica manager's long poll waits for at least one byte otherwise.
    let max_wait_ms = if request.min_bytes <= 0 { 0 } else { u32::try_from(request.max_wait_ms).unwrap_or(0) };
    let fetch = messages::FetchRequest {
        replica_id: CONSUMER_REPLICA_ID,
        // One Kafka frame: kept under the 64 MiB every fetch answer was held to before (the
        // gRPC limit), whatever fetch.max.bytes says; a frame's size is an i32.
        transport_limit: MAX_KAFKA_FETCH_RECORD_BYTES,
        max_wait_ms,
        min_bytes: u32::try_from(request.min_bytes).unwrap_or(0),
        max_bytes,
        partitions,
        // Consumers carry no broker epoch (KIP-903 concerns replica fetches only).
        broker_epoch: 0,
    };
    let context = context.clone();
    respond(meta, async move {
        let fetched = context.replica_manager.fetch(fetch).await;
        crate::metrics::record_fetch(&fetched);
        // Read after the fetch (its long poll included), as Kafka reads the log config in
        // the response callback.
        let metadata = context.replica_manager.metadata();
        let refuse_zstd = |topic: &str| version < ZSTD_MIN_FETCH_VERSION && is_zstd_topic(&metadata, topic);
        answer(layout, fetched.partitions, refuse_zstd, read_committed)
    })
}

/// The answer in the request's topic order; `refuse_zstd` says which topics' partitions are
/// UNSUPPORTED_COMPRESSION_TYPE instead (see [`is_zstd_topic`]).
fn answer(
    layout: Vec<(kafka_protocol::messages::TopicName, usize)>,
    fetched: Vec<FetchPartitionResponse>,
    refuse_zstd: impl Fn(&str) -> bool,
    read_committed: bool,
) -> FetchResponse {
    let mut fetched = fetched.into_iter();
    let responses = layout
        .into_iter()
        .map(|(topic, count)| {
            let refused = refuse_zstd(topic.0.as_str());
            let partitions = fetched
                .by_ref()
                .take(count)
                .map(|p| {
                    if refused {
                        unsupported_compression(p.topic_partition.partition)
                    } else {
                        partition_data(p, read_committed)
                    }
                })
                .collect();
            FetchableTopicResponse::default().with_topic(topic).with_partitions(partitions)
        })
        .collect();
    FetchResponse::default().with_session_id(0).with_responses(responses)
}

/// Kafka `KafkaApis.handleFetchRequest` (`maybeConvertFetchedData`): a partition whose
/// topic has `compression.type=zstd` is refused to Fetch < 10, whose clients predate zstd
/// (KIP-110). Kafka tests the topic config only, not the batches: zstd batches a producer
/// sent to a `producer` topic reach old consumers as they are (Fetch ≥ 4 needs no
/// down-conversion, the one other place Kafka refuses zstd).
fn is_zstd_topic(metadata: &pb::ClusterMetadata, topic: &str) -> bool {
    metadata
        .topics
        .iter()
        .find(|t| t.name == topic)
        .and_then(|t| t.configs.get(COMPRESSION_TYPE))
        .is_some_and(|value| topic_compression(value) == Ok(Some(Compression::Zstd)))
}

/// Kafka `FetchResponse.partitionResponse(tp, UNSUPPORTED_COMPRESSION_TYPE)`: the error, an
/// invalid high watermark and no records.
fn unsupported_compression(partition: i32) -> PartitionData {
    PartitionData::default()
        .with_partition_index(partition)
        .with_error_code(ErrorCode::UNSUPPORTED_COMPRESSION_TYPE.code() as i16)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(Default::default()))
}

fn partition_data(p: FetchPartitionResponse, read_committed: bool) -> PartitionData {
    PartitionData::default()
        .with_partition_index(p.topic_partition.partition)
        .with_error_code(p.error.code() as i16)
        .with_high_watermark(p.high_watermark)
        // No transactions: everything below the HW is stable.
        .with_last_stable_offset(p.high_watermark)
        .with_log_start_offset(p.log_start_offset)
        .with_aborted_transactions(read_committed.then(Vec::new))
        .with_records(Some(p.records))
}

pub(super) fn handle_list_offsets(
    context: &Arc<KafkaContext>,
    meta: RequestMeta,
    request: ListOffsetsRequest,
) -> PendingReply {
    let context = context.clone();
    let version = meta.api_version;
    respond(meta, async move {
        // A timestamp search reads the log: keep file reads off the async workers.
        tokio::task::spawn_blocking(move || list_offsets(&context, request, version)).await.unwrap_or_default()
    })
}

fn list_offsets(context: &KafkaContext, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let tp = TopicPartition::new(name.clone(), p.partition_index);
                    let response = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                    match list_offset(context, &tp, p.timestamp, p.current_leader_epoch) {
                        Ok((timestamp, offset, leader_epoch)) => {
                            let response = response.with_timestamp(timestamp).with_offset(offset);
                            // The leader epoch field exists from v4 (KIP-320).
                            if version >= 4 {
                                response.with_leader_epoch(leader_epoch)
                            } else {
                                response
                            }
                        }
                        Err(code) => response.with_error_code(code.code() as i16),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(topic.name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// (timestamp, offset, leader epoch) for one partition (Kafka `Partition.fetchOffsetForTimestamp`):
/// earliest → log start; latest → the high watermark (what a consumer can read); a
/// timestamp → the first offset below the HW whose record timestamp is ≥ it, or -1;
/// max timestamp (KIP-734) → the record with the largest timestamp below the HW.
fn list_offset(
    context: &KafkaContext,
    tp: &TopicPartition,
    timestamp: i64,
    current_leader_epoch: i32,
) -> Result<(i64, i64, i32), ErrorCode> {
    let Some(partition) = context.replica_manager.partition(tp) else {
        return Err(context.replica_manager.missing_partition_code(tp));
    };
    let (log_start_offset, high_watermark) = partition.leader_offsets(current_leader_epoch)?;
    let searched = |how| {
        search(&partition, log_start_offset, high_watermark, how).inspect_err(|code| {
            // A storage error reading the log takes the replica offline, as on a fetch.
            if *code == ErrorCode::KAFKA_STORAGE_ERROR {
                context.replica_manager.mark_offline(tp, "a ListOffsets timestamp search could not read its log");
            }
        })
    };
    let found = match timestamp {
        EARLIEST_TIMESTAMP => Some((-1, log_start_offset)),
        LATEST_TIMESTAMP => Some((-1, high_watermark)),
        MAX_TIMESTAMP => searched(Search::MaxTimestamp)?,
        t if t >= 0 => searched(Search::AtOrAfter(t))?,
        _ => return Err(ErrorCode::INVALID_REQUEST),
    };
    Ok(match found {
        Some((timestamp, offset)) => (timestamp, offset, partition.epoch_at(offset)),
        None => (-1, -1, -1),
    })
}

#[derive(Debug, Clone, Copy)]
enum Search {
    AtOrAfter(i64),
    MaxTimestamp,
}

/// Scans the batches in [start, high_watermark) a chunk at a time (the partition lock is
/// held only per chunk, so produces proceed), reading record timestamps where the batch's
/// max timestamp says the answer may be inside.
fn search(
    partition: &Partition,
    start: i64,
    high_watermark: i64,
    search: Search,
) -> Result<Option<(i64, i64)>, ErrorCode> {
    let mut offset = start;
    let mut best: Option<(i64, i64)> = None;
    while offset < high_watermark {
        let chunk = partition.read_range(offset, high_watermark, SEARCH_CHUNK_BYTES).map_err(|e| e.error_code())?;
        if chunk.is_empty() {
            break;
        }
        let mut next = offset;
        for (header, bytes) in iter_batches(&chunk).map_while(Result::ok) {
            next = header.next_offset();
            let interesting = match search {
                Search::AtOrAfter(target) => header.max_timestamp >= target,
                Search::MaxTimestamp => best.is_none_or(|(max, _)| header.max_timestamp > max),
            };
            if !interesting {
                continue;
            }
            let records = decode_records(bytes).map_err(|e| e.error_code())?;
            for record in records.iter().filter(|r| r.offset >= start && r.offset < high_watermark) {
                // LogAppendTime batches stamp every record with the batch's max timestamp.
                let ts = if header.is_log_append_time() { header.max_timestamp } else { record.timestamp_ms };
                match search {
                    Search::AtOrAfter(target) if ts >= target => return Ok(Some((ts, record.offset))),
                    Search::MaxTimestamp if best.is_none_or(|(max, _)| ts > max) => best = Some((ts, record.offset)),
                    _ => {}
                }
            }
        }
        if next <= offset {
            break; // no progress: never loop on a log we cannot parse
        }
        offset = next;
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(compression: &str) -> pb::ClusterMetadata {
        pb::ClusterMetadata {
            topics: vec![pb::TopicMetadata {
                name: "orders".into(),
                configs: [(COMPRESSION_TYPE.to_string(), compression.to_string())].into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn only_a_zstd_topic_config_refuses_old_consumers() {
        assert!(is_zstd_topic(&metadata("zstd"), "orders"));
        for other in ["producer", "lz4", "uncompressed", "gzip"] {
            assert!(!is_zstd_topic(&metadata(other), "orders"), "{other}");
        }
        assert!(!is_zstd_topic(&metadata("zstd"), "payments"), "unknown topic");
    }

    #[test]
    fn an_old_consumer_gets_unsupported_compression_for_the_zstd_topic_only() {
        let served = |topic: &str, partition| {
            let mut p = FetchPartitionResponse::empty(TopicPartition::new(topic, partition));
            (p.high_watermark, p.records) = (10, bytes::Bytes::from_static(b"batch"));
            p
        };
        let layout = ["zstd-topic", "other"].map(|t| (kafka_protocol::messages::TopicName(t.into()), 2)).to_vec();
        let fetched = vec![served("zstd-topic", 0), served("zstd-topic", 1), served("other", 0), served("other", 1)];
        let response = answer(layout, fetched, |topic| topic == "zstd-topic", false);
        let [zstd, other] = &response.responses[..] else { panic!("two topics: {response:?}") };
        for (index, p) in zstd.partitions.iter().enumerate() {
            assert_eq!((p.partition_index, p.error_code, p.high_watermark), (index as i32, 76, -1));
            assert_eq!(p.records.as_ref().map(|r| r.len()), Some(0));
        }
        for p in &other.partitions {
            assert_eq!((p.error_code, p.high_watermark, p.records.as_deref()), (0, 10, Some(&b"batch"[..])));
        }
    }
}
