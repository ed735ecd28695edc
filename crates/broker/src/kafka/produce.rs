//! Produce v3+ (Kafka `KafkaApis.handleProduceRequest`, `ReplicaManager.appendRecords`,
//! `DelayedProduce`), with exactly the gRPC path's rules because it is the gRPC path's code:
//! each partition's batch goes through `ReplicaManager::produce_append` (leader check, acks
//! validation, the min.insync.replicas check before appending → NOT_ENOUGH_REPLICAS 19,
//! idempotent sequence checks, the append) in request order, then
//! `ReplicaManager::produce_wait` (acks=all: HW passes the batch, or the ISR shrinks below
//! min.insync.replicas → NOT_ENOUGH_REPLICAS_AFTER_APPEND 20, or leadership moves, or
//! the timeout). The client's RecordBatch v2 bytes are stored as they came, compressed or
//! not (gzip, snappy, lz4, zstd; the leader decompresses to validate, at most the topic's
//! max.message.bytes, and re-encodes only for a topic `compression.type` other than
//! producer): corrupt compressed data is CORRUPT_MESSAGE (2), records decompressing past
//! max.message.bytes MESSAGE_TOO_LARGE (10), codec ids 5-7 UNSUPPORTED_COMPRESSION_TYPE (76).
//!
//! The internal topic `__consumer_offsets` is the group coordinators' to write: a client's
//! batch for it is INVALID_TOPIC_EXCEPTION (17) "Cannot append to internal topic …", nothing
//! written, as Kafka's `appendRecords` answers a client (the coordinator appends through
//! `ReplicaManager::produce_append` directly, `group/storage.rs`).
//!
//! acks=0 as Kafka: no answer at all; if any partition failed, the connection is closed
//! (the only signal a client that reads no answers gets) and the error is logged.
use std::sync::Arc;
use std::time::Instant;

use insync_controller::internal_topics;
use insync_types::{ErrorCode, TopicPartition};
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use tracing::warn;

use super::connection::{respond, PendingReply, Reply, RequestMeta};
use super::KafkaContext;
use crate::messages::{self, ProduceOutcome};
use crate::replica_manager::{ProduceAppended, ReplicaManager};

/// Kafka `ProduceRequest.validateRecords`: clients that may send zstd (KIP-110) speak
/// Produce v7+, so an older request carrying a zstd batch is UNSUPPORTED_COMPRESSION_TYPE.
const ZSTD_MIN_PRODUCE_VERSION: i16 = 7;

/// Whether any batch in a partition's records is zstd-compressed (headers only; the append
/// validates the rest).
fn uses_zstd(records: &[u8]) -> bool {
    insync_log::batch::iter_batches(records)
        .take(records.len())
        .filter_map(Result::ok)
        .any(|(header, _)| header.compression() == insync_log::compression::Compression::Zstd as i16)
}

/// One partition's batch through the replica manager (the gRPC path's code), after the
/// checks only the Kafka protocol has: zstd needs Produce v7.
fn append_partition(
    replica_manager: &ReplicaManager,
    meta: &RequestMeta,
    topic: &str,
    partition: PartitionProduceData,
    acks: i32,
    timeout_ms: u32,
) -> ProduceAppended {
    match partition.records {
        Some(records) if meta.api_version < ZSTD_MIN_PRODUCE_VERSION && uses_zstd(&records) => ProduceAppended::Done(
            rejected(ErrorCode::UNSUPPORTED_COMPRESSION_TYPE, "zstd batches need Produce v7 or later (KIP-110)"),
        ),
        Some(records) => replica_manager.produce_append(messages::ProduceRequest {
            topic_partition: TopicPartition::new(topic.to_owned(), partition.index),
            acks,
            timeout_ms,
            records,
        }),
        None => ProduceAppended::Done(rejected(ErrorCode::CORRUPT_MESSAGE, "no records")),
    }
}

/// What the connection does with a produce request.
pub(super) enum Dispatched {
    Reply(PendingReply),
    /// acks=0 and some partition failed: close after the answers before it.
    Close(String),
}

pub(super) fn handle(context: &Arc<KafkaContext>, meta: RequestMeta, request: ProduceRequest) -> Dispatched {
    let acks = i32::from(request.acks);
    let timeout_ms = u32::try_from(request.timeout_ms).unwrap_or(0);
    let started = Instant::now();
    let replica_manager = &context.replica_manager;
    let transactional = request.transactional_id.as_ref().is_some_and(|id| !id.0.is_empty());
    // Appends happen here, synchronously and in request order (see connection.rs).
    let mut appended: Vec<(String, Vec<(i32, ProduceAppended)>)> = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let internal = internal_topics::check_append(&name).err();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for partition in topic.partition_data {
            let refusal = match (&internal, transactional) {
                (Some(refusal), _) => Some((refusal.code, refusal.message.as_str())),
                // No transaction coordinator: InitProducerId refuses transactional ids, so
                // only a client that skipped it gets here.
                (None, true) => Some((
                    ErrorCode::INVALID_REQUEST,
                    "insync does not support transactions (transactional.id must be unset)",
                )),
                (None, false) => None,
            };
            let index = partition.index;
            let outcome = match refusal {
                Some((code, message)) => ProduceAppended::Done(rejected(code, message)),
                None => append_partition(replica_manager, &meta, &name, partition, acks, timeout_ms),
            };
            partitions.push((index, outcome));
        }
        appended.push((name, partitions));
    }

    if acks == 0 {
        // Kafka: "no response is expected, but if there was an error, close the connection
        // to let the client know" (KafkaApis.handleProduceRequest, closeConnection).
        let mut errors = Vec::new();
        for (topic, partitions) in &appended {
            for (partition, outcome) in partitions {
                let outcome = match outcome {
                    ProduceAppended::Done(outcome) => outcome,
                    ProduceAppended::Waiting { outcome, .. } => outcome, // not for acks=0
                };
                crate::metrics::record_produce(acks, outcome.error, started.elapsed());
                if outcome.error != ErrorCode::NONE {
                    let tp = TopicPartition::new(topic.clone(), *partition);
                    warn!("{tp}: acks=0 produce from a Kafka client failed: {}: {}", outcome.error, outcome.message);
                    errors.push(format!("{tp}: {}", outcome.error));
                }
            }
        }
        return if errors.is_empty() {
            Dispatched::Reply(Box::pin(std::future::ready(Reply::Nothing)))
        } else {
            Dispatched::Close(format!("acks=0 produce failed ({})", errors.join(", ")))
        };
    }

    let context = context.clone();
    let version = meta.api_version;
    Dispatched::Reply(respond(meta, async move {
        let replica_manager = &context.replica_manager;
        // acks=all waits of all partitions run at once: the request answers when the last
        // one is done, as one DelayedProduce watches every partition of a request.
        let mut waits = Vec::new();
        for (topic, partitions) in appended {
            let waits_of_topic = partitions.into_iter().map(|(partition, appended)| async move {
                (partition, replica_manager.produce_wait(appended, timeout_ms).await)
            });
            waits.push(async move { (topic, futures::future::join_all(waits_of_topic).await) });
        }
        let results = futures::future::join_all(waits).await;
        let responses = results
            .into_iter()
            .map(|(topic, partitions)| {
                let partition_responses = partitions
                    .into_iter()
                    .map(|(partition, outcome)| {
                        crate::metrics::record_produce(acks, outcome.error, started.elapsed());
                        let log_start_offset = log_start_offset(&context, &topic, partition);
                        partition_response(partition, outcome, log_start_offset, version)
                    })
                    .collect();
                TopicProduceResponse::default()
                    .with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(topic)))
                    .with_partition_responses(partition_responses)
            })
            .collect();
        ProduceResponse::default().with_responses(responses)
    }))
}

fn rejected(error: ErrorCode, message: &str) -> ProduceOutcome {
    ProduceOutcome::rejected(error, message)
}

fn log_start_offset(context: &KafkaContext, topic: &str, partition: i32) -> i64 {
    context
        .replica_manager
        .partition(&TopicPartition::new(topic.to_string(), partition))
        .map(|p| p.log_start_offset())
        .unwrap_or(-1)
}

/// One partition's answer. Errors carry Kafka's code; from v8 also the gRPC path's message
/// (which says whether the records were written: "nothing was written" for 19, "written to
/// the leader's log, but ..." for 20), which librdkafka and the Java client show.
pub fn partition_response(
    partition: i32,
    outcome: ProduceOutcome,
    log_start_offset: i64,
    version: i16,
) -> PartitionProduceResponse {
    let ok = outcome.error == ErrorCode::NONE;
    let mut response = PartitionProduceResponse::default()
        .with_index(partition)
        .with_error_code(outcome.error.code() as i16)
        .with_base_offset(if ok { outcome.base_offset } else { -1 })
        .with_log_start_offset(log_start_offset);
    if !ok && version >= 8 && !outcome.message.is_empty() {
        let appended = if outcome.appended { " [appended=true]" } else { " [appended=false]" };
        response = response.with_error_message(Some(StrBytes::from_string(format!("{}{appended}", outcome.message))));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_batch_for_the_offsets_topic_is_invalid_topic_with_kafkas_words() {
        // The name the coordinator writes is the name the check refuses.
        assert_eq!(internal_topics::OFFSETS_TOPIC, crate::group::storage::OFFSETS_TOPIC);
        let refusal = internal_topics::check_append(crate::group::storage::OFFSETS_TOPIC).unwrap_err();
        let r = partition_response(3, rejected(refusal.code, &refusal.message), 0, 9);
        assert_eq!((r.index, r.error_code, r.base_offset), (3, 17, -1), "INVALID_TOPIC_EXCEPTION");
        let message = r.error_message.as_deref().unwrap();
        assert!(message.starts_with("Cannot append to internal topic __consumer_offsets"), "{message}");
        assert!(message.ends_with("[appended=false]"), "{message}");
        assert!(internal_topics::check_append("orders").is_ok());
    }

    #[test]
    fn errors_19_and_20_are_kafkas_codes_with_the_reason() {
        let not_enough = ProduceOutcome {
            error: ErrorCode::NOT_ENOUGH_REPLICAS,
            message: "ISR [1] has 1 member(s), below min.insync.replicas 2; nothing was written".into(),
            base_offset: -1,
            appended: false,
            leader_epoch: -1,
        };
        let r = partition_response(0, not_enough.clone(), 0, 9);
        assert_eq!((r.error_code, r.base_offset), (19, -1));
        assert!(r.error_message.as_deref().unwrap().contains("nothing was written"));
        assert_eq!(partition_response(0, not_enough, 0, 7).error_message, None, "no message field before v8");
        let after_append = ProduceOutcome {
            error: ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            message: "written to the leader's log, but the ISR shrank".into(),
            base_offset: 12,
            appended: true,
            leader_epoch: 3,
        };
        let r = partition_response(2, after_append, 0, 9);
        assert_eq!((r.index, r.error_code, r.base_offset), (2, 20, -1));
        assert!(r.error_message.as_deref().unwrap().ends_with("[appended=true]"));
        let ok = ProduceOutcome {
            error: ErrorCode::NONE,
            message: String::new(),
            base_offset: 40,
            appended: true,
            leader_epoch: 3,
        };
        assert_eq!(partition_response(0, ok, 5, 9).base_offset, 40);
    }
}
