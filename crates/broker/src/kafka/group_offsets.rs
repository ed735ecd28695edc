//! OffsetCommit and OffsetFetch on the Kafka listener (Kafka `KafkaApis.handleOffsetCommitRequest`
//! / `handleOffsetFetchRequest`, classic groups, one group per request): converted to the
//! coordinator's calls, which check the member and generation and store commits durably
//! before they are answered.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use insync_types::ErrorCode;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::connection::{respond, PendingReply, RequestMeta};
use super::group::{str_bytes, wire};
use super::KafkaContext;
use crate::group::coordinator::MemberRef;
use crate::group::records::OffsetValue;
use crate::group::runtime::CommitResults;

/// An OffsetCommit's partitions per topic, in request order: Some(error) answered without
/// the coordinator, or None: the coordinator's answer, in the order passed to it.
type CommitOrder = Vec<(TopicName, Vec<(i32, Option<ErrorCode>)>)>;

pub(super) fn handle_offset_commit(
    context: &Arc<KafkaContext>,
    meta: RequestMeta,
    request: OffsetCommitRequest,
) -> PendingReply {
    let member = MemberRef {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        generation_id: request.generation_id_or_member_epoch,
    };
    let now = context.groups.now();
    let metadata = context.replica_manager.metadata();
    let known = known_partitions(&metadata);
    // Per request partition, in order: Some(error) answered here, or None: the coordinator's.
    let mut order: CommitOrder = Vec::with_capacity(request.topics.len());
    let mut offsets = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            if !known(&name, p.partition_index) {
                partitions.push((p.partition_index, Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)));
                continue;
            }
            partitions.push((p.partition_index, None));
            let value = OffsetValue {
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                commit_timestamp_ms: now,
            };
            offsets.push((name.clone(), p.partition_index, value));
        }
        order.push((topic.name, partitions));
    }
    // Decided and appended now, in the connection's request order; the answer waits.
    let committed = (!offsets.is_empty()).then(|| context.groups.commit(member, offsets));
    respond(meta, async move {
        let results = match committed {
            Some(committed) => committed.await,
            None => Ok(Vec::new()),
        };
        commit_response(order, results)
    })
}

/// Kafka `handleOffsetCommitRequest`: a partition the metadata does not know is answered
/// UNKNOWN_TOPIC_OR_PARTITION and not stored; the rest go to the coordinator.
fn known_partitions(metadata: &insync_proto::ClusterMetadata) -> impl Fn(&str, i32) -> bool + '_ {
    let partitions_of: HashMap<&str, usize> =
        metadata.topics.iter().map(|t| (t.name.as_str(), t.partitions.len())).collect();
    move |topic: &str, partition: i32| {
        partitions_of.get(topic).is_some_and(|count| usize::try_from(partition).is_ok_and(|p| p < *count))
    }
}

/// The OffsetCommit answer in request order: partitions refused up front keep their error,
/// the others take the coordinator's (in the order they were passed to it).
fn commit_response(order: CommitOrder, results: Result<CommitResults, ErrorCode>) -> OffsetCommitResponse {
    let mut index = 0;
    let mut coordinator_error = || {
        let error = match &results {
            Err(error) => *error,
            Ok(r) => r.get(index).map(|r| r.2).unwrap_or(ErrorCode::UNKNOWN_SERVER_ERROR),
        };
        index += 1;
        error
    };
    let topics = order
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(p, refused)| {
                    let error = refused.unwrap_or_else(&mut coordinator_error);
                    OffsetCommitResponsePartition::default().with_partition_index(p).with_error_code(wire(error))
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(name).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

fn partition_answer(partition: i32, committed: Option<&OffsetValue>, error: ErrorCode) -> OffsetFetchResponsePartition {
    let answer = OffsetFetchResponsePartition::default().with_partition_index(partition).with_error_code(wire(error));
    match committed {
        Some(c) => answer
            .with_committed_offset(c.offset)
            .with_committed_leader_epoch(c.leader_epoch)
            .with_metadata(Some(str_bytes(c.metadata.clone()))),
        // Kafka's OffsetFetchResponse.INVALID_OFFSET and NO_METADATA.
        None => answer.with_committed_offset(-1).with_metadata(Some(StrBytes::default())),
    }
}

pub(super) fn handle_offset_fetch(
    context: &Arc<KafkaContext>,
    meta: RequestMeta,
    request: OffsetFetchRequest,
) -> PendingReply {
    let group_id = request.group_id.0.to_string();
    let wanted: Option<Vec<(String, Vec<i32>)>> = request
        .topics
        .as_ref()
        .map(|topics| topics.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
    // Acted on in request order: after the group's commits decided before it.
    let fetched = context.groups.fetch_offsets_after_commits(group_id, wanted);
    let version = meta.api_version;
    let requested = request.topics;
    respond(meta, async move { fetch_response(version, requested, fetched.await) })
}

fn fetch_response(
    version: i16,
    requested: Option<Vec<OffsetFetchRequestTopic>>,
    fetched: Result<Vec<(String, i32, Option<OffsetValue>)>, ErrorCode>,
) -> OffsetFetchResponse {
    match fetched {
        Err(error) => {
            // v2+ carry a top-level error; v1 only per partition.
            let topics = requested
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    let partitions = t.partition_indexes.iter().map(|p| partition_answer(*p, None, error)).collect();
                    OffsetFetchResponseTopic::default().with_name(t.name).with_partitions(partitions)
                })
                .collect();
            let response = OffsetFetchResponse::default().with_topics(topics);
            if version >= 2 {
                response.with_error_code(wire(error))
            } else {
                response
            }
        }
        Ok(found) => {
            let mut by_topic: BTreeMap<String, Vec<OffsetFetchResponsePartition>> = BTreeMap::new();
            let mut order: Vec<String> = Vec::new();
            for (topic, partition, committed) in found {
                if !by_topic.contains_key(&topic) {
                    order.push(topic.clone());
                }
                by_topic.entry(topic).or_default().push(partition_answer(
                    partition,
                    committed.as_ref(),
                    ErrorCode::NONE,
                ));
            }
            let topics = order
                .into_iter()
                .map(|topic| {
                    let partitions = by_topic.remove(&topic).unwrap_or_default();
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(str_bytes(topic)))
                        .with_partitions(partitions)
                })
                .collect();
            OffsetFetchResponse::default().with_topics(topics)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_name_only_partitions_the_metadata_knows() {
        let metadata = crate::fetch_tests::metadata(1, "orders", 2, &[1]);
        let known = known_partitions(&metadata);
        assert!(known("orders", 0) && known("orders", 1));
        assert!(!known("orders", 2) && !known("orders", -1) && !known("nope", 0));
        let order = vec![(TopicName(str_bytes("nope")), vec![(0, Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION))])];
        let response = commit_response(order, Ok(Vec::new()));
        assert_eq!(response.topics[0].partitions[0].error_code, wire(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION));
    }
}
