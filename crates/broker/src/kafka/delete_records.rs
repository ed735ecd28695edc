//! DeleteRecords (API 21, v0–2; Kafka `KafkaApis.handleDeleteRecordsRequest`,
//! `ReplicaManager.deleteRecords`): clients send each partition to its leader; there the
//! leader's log start offset moves to the offset asked (-1: the high watermark) through
//! `ReplicaManager::delete_records`, the call the gRPC DeleteRecords makes, off the async
//! workers (it may delete segment files and writes the checkpoints). The answer carries the
//! leader's new log start offset as the low watermark; Kafka waits until every replica has
//! moved (its low watermark is the smallest start), insync answers once the leader has, and
//! the followers follow through their fetches (docs/design.md, "Retention and the log start
//! offset").
//!
//! Per partition, with Kafka's codes and a low watermark of -1 on error: a topic or partition
//! the metadata does not know is UNKNOWN_TOPIC_OR_PARTITION (answered here, without a call);
//! one this broker does not lead NOT_LEADER_OR_FOLLOWER; an offset below -1 or past the high
//! watermark OFFSET_OUT_OF_RANGE; a replica offline after a storage error
//! KAFKA_STORAGE_ERROR. A partition named twice is answered once, with the last offset asked
//! (Kafka keeps the request's partitions in a map). A partition of the internal topic
//! `__consumer_offsets` is INVALID_TOPIC_EXCEPTION, nothing deleted, as Kafka's
//! `ReplicaManager.deleteRecords` refuses internal topics; the answer has no message field,
//! so the broker logs "Cannot delete records of internal topic …".
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use insync_controller::internal_topics;
use insync_proto as pb;
use insync_types::{ErrorCode, TopicPartition};
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::admin::wire;
use super::connection::{respond, PendingReply, RequestMeta};
use super::KafkaContext;

/// What a failed partition answers as its low watermark (Kafka `INVALID_LOW_WATERMARK`).
const INVALID_LOW_WATERMARK: i64 = -1;

/// The request's partitions, per topic in first-appearance order, each once with the last
/// offset asked: (topic, [(partition, offset, known to the metadata)]).
pub(super) type Planned = Vec<(String, Vec<(i32, i64, bool)>)>;

pub(super) fn plan(request: &DeleteRecordsRequest, metadata: &pb::ClusterMetadata) -> Planned {
    let known: HashMap<&str, HashSet<i32>> =
        metadata.topics.iter().map(|t| (t.name.as_str(), t.partitions.iter().map(|p| p.partition).collect())).collect();
    let mut order: Vec<&str> = Vec::new();
    let mut topics: HashMap<&str, BTreeMap<i32, i64>> = HashMap::new();
    for topic in &request.topics {
        let name: &str = &topic.name.0;
        let partitions = topics.entry(name).or_insert_with(|| {
            order.push(name);
            BTreeMap::new()
        });
        for partition in &topic.partitions {
            partitions.insert(partition.partition_index, partition.offset);
        }
    }
    order
        .into_iter()
        .map(|name| {
            let partitions = topics.remove(name).unwrap_or_default();
            let exists = |p: i32| known.get(name).is_some_and(|ps| ps.contains(&p));
            (name.to_string(), partitions.into_iter().map(|(p, offset)| (p, offset, exists(p))).collect())
        })
        .collect()
}

pub(super) fn handle(context: &Arc<KafkaContext>, meta: RequestMeta, request: DeleteRecordsRequest) -> PendingReply {
    let planned = plan(&request, &context.replica_manager.metadata());
    let context = context.clone();
    respond(meta, async move {
        let fallback = planned.clone();
        let topics = tokio::task::spawn_blocking(move || delete(&context, planned))
            .await
            .unwrap_or_else(|e| failed(fallback, &format!("{e}")));
        DeleteRecordsResponse::default().with_topics(topics)
    })
}

/// Runs on a blocking thread: one `delete_records` per known partition.
fn delete(context: &KafkaContext, planned: Planned) -> Vec<DeleteRecordsTopicResult> {
    planned
        .into_iter()
        .map(|(name, partitions)| {
            let internal = internal_topics::check_delete_records(&name).err();
            if let Some(refusal) = &internal {
                tracing::warn!("DeleteRecords from a Kafka client refused: {}", refusal.message);
            }
            let results = partitions
                .into_iter()
                .map(|(partition, offset, known)| {
                    let outcome = match (&internal, known) {
                        (_, false) => Err((ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, String::new())),
                        (Some(refusal), true) => Err((refusal.code, String::new())),
                        (None, true) => {
                            let tp = TopicPartition::new(name.clone(), partition);
                            context.replica_manager.delete_records(&tp, offset)
                        }
                    };
                    partition_result(partition, outcome.map_err(|(code, _)| code))
                })
                .collect();
            topic_result(&name, results)
        })
        .collect()
}

/// Every partition UNKNOWN_SERVER_ERROR: the blocking task failed.
fn failed(planned: Planned, why: &str) -> Vec<DeleteRecordsTopicResult> {
    tracing::warn!("DeleteRecords from a Kafka client failed: {why}");
    planned
        .into_iter()
        .map(|(name, partitions)| {
            let results = partitions
                .into_iter()
                .map(|(partition, _, _)| partition_result(partition, Err(ErrorCode::UNKNOWN_SERVER_ERROR)))
                .collect();
            topic_result(&name, results)
        })
        .collect()
}

fn topic_result(name: &str, partitions: Vec<DeleteRecordsPartitionResult>) -> DeleteRecordsTopicResult {
    DeleteRecordsTopicResult::default()
        .with_name(TopicName(StrBytes::from_string(name.to_string())))
        .with_partitions(partitions)
}

pub(super) fn partition_result(partition: i32, outcome: Result<i64, ErrorCode>) -> DeleteRecordsPartitionResult {
    let (low_watermark, code) = match outcome {
        Ok(low_watermark) => (low_watermark, 0),
        Err(code) => (INVALID_LOW_WATERMARK, wire(code)),
    };
    DeleteRecordsPartitionResult::default()
        .with_partition_index(partition)
        .with_low_watermark(low_watermark)
        .with_error_code(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
    use kafka_protocol::protocol::Encodable;

    fn topic(name: &str, partitions: &[(i32, i64)]) -> DeleteRecordsTopic {
        DeleteRecordsTopic::default().with_name(TopicName(StrBytes::from_string(name.into()))).with_partitions(
            partitions
                .iter()
                .map(|(p, o)| DeleteRecordsPartition::default().with_partition_index(*p).with_offset(*o))
                .collect(),
        )
    }

    #[test]
    fn partitions_are_merged_deduplicated_and_checked_against_the_metadata() {
        let metadata = pb::ClusterMetadata {
            topics: vec![pb::TopicMetadata {
                name: "t".into(),
                partitions: vec![
                    pb::PartitionMetadata { partition: 0, ..Default::default() },
                    pb::PartitionMetadata { partition: 1, ..Default::default() },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let request = DeleteRecordsRequest::default().with_topics(vec![
            topic("t", &[(1, 5), (0, -1)]),
            topic("gone", &[(0, 3)]),
            topic("t", &[(1, 7), (9, 1)]),
        ]);
        let planned = plan(&request, &metadata);
        assert_eq!(
            planned,
            vec![
                ("t".to_string(), vec![(0, -1, true), (1, 7, true), (9, 1, false)]),
                ("gone".to_string(), vec![(0, 3, false)]),
            ]
        );
    }

    #[test]
    fn answers_carry_the_low_watermark_or_minus_one() {
        let ok = partition_result(0, Ok(42));
        assert_eq!((ok.low_watermark, ok.error_code), (42, 0));
        let no = partition_result(1, Err(ErrorCode::OFFSET_OUT_OF_RANGE));
        assert_eq!((no.low_watermark, no.error_code), (-1, 1));
        let response = DeleteRecordsResponse::default().with_topics(vec![topic_result("t", vec![ok, no])]);
        for version in 0..=2 {
            let mut buf = bytes::BytesMut::new();
            response.encode(&mut buf, version).unwrap_or_else(|e| panic!("v{version}: {e}"));
        }
    }
}
