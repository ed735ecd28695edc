//! CreatePartitions (API 37, v0–3; Kafka `ControllerApis.createPartitions`,
//! `ReplicationControlManager.createPartitions`, KIP-195): each topic's new total count is
//! forwarded to the active controller as one gRPC `CreatePartitions` (the call `insync topic
//! add-partitions` makes), which places the new partitions like creation and commits; the
//! answer waits until this broker's metadata shows them with leaders, as CreateTopics does.
//!
//! As Kafka: a name given twice is INVALID_REQUEST "Duplicate topic name." (none grown); an
//! unknown topic UNKNOWN_TOPIC_OR_PARTITION; a count that is not an increase, or above 10 000,
//! INVALID_PARTITIONS; too few usable brokers for the topic's replication factor
//! INVALID_REPLICATION_FACTOR (all from the controller); the internal topic
//! `__consumer_offsets` INVALID_REQUEST (from the controller too, `internal_topics`: more
//! partitions would move groups away from their offsets). Manual `assignments` are
//! INVALID_REQUEST here: the controller always places. `validate_only` runs the controller's
//! checks and placement on its committed state and grows nothing.
use std::collections::HashMap;
use std::sync::Arc;

use insync_proto as pb;
use insync_types::ErrorCode;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;
use tracing::{info, warn};

use super::admin::{self, wire_code, Budget, Refusal};
use super::connection::{respond, PendingReply, RequestMeta};
use super::KafkaContext;

/// The request's topics in request order (a duplicated name once, refused), each mapped onto
/// the controller's request or refused here.
pub(super) fn plan(
    topics: &[CreatePartitionsTopic],
    validate_only: bool,
) -> Vec<(String, Result<pb::CreatePartitionsRequest, Refusal>)> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(topics.len());
    for topic in topics {
        *seen.entry(&topic.name.0).or_default() += 1;
    }
    let mut out = Vec::with_capacity(seen.len());
    for topic in topics {
        let name: &str = &topic.name.0;
        let Some(count) = seen.get(name).copied() else { continue };
        let outcome = if count > 1 {
            Err(Refusal::new(ErrorCode::INVALID_REQUEST, "Duplicate topic name."))
        } else if topic.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
            Err(Refusal::new(
                ErrorCode::INVALID_REQUEST,
                "Manual partition assignments are not supported by insync: send assignments as null and only the \
                 new count; the controller places the new partitions.",
            ))
        } else {
            Ok(pb::CreatePartitionsRequest { name: name.to_string(), count: topic.count, validate_only })
        };
        // Answered once: later entries of the same name are skipped.
        seen.remove(name);
        out.push((name.to_string(), outcome));
    }
    out
}

pub(super) fn handle(context: &Arc<KafkaContext>, meta: RequestMeta, request: CreatePartitionsRequest) -> PendingReply {
    let budget = Budget::new(request.timeout_ms, Instant::now());
    let planned = plan(&request.topics, request.validate_only);
    let context = context.clone();
    respond(
        meta,
        async move { CreatePartitionsResponse::default().with_results(grow(&context, planned, budget).await) },
    )
}

/// Forwards the topics one at a time, then waits until this broker's metadata shows every
/// grown topic (by id) with its new partitions led.
async fn grow(
    context: &KafkaContext,
    planned: Vec<(String, Result<pb::CreatePartitionsRequest, Refusal>)>,
    budget: Budget,
) -> Vec<CreatePartitionsTopicResult> {
    let mut outcomes: Vec<(String, Result<(), Refusal>)> = Vec::with_capacity(planned.len());
    let mut waiting: HashMap<String, usize> = HashMap::new();
    for (name, outcome) in planned {
        let grown = match outcome {
            Err(refusal) => Err(refusal),
            Ok(_) if !budget.may_call() => Err(admin::out_of_time()),
            Ok(request) => {
                let validate_only = request.validate_only;
                grow_one(context, request).await.map(|topic| {
                    if !validate_only {
                        waiting.insert(topic.topic_id, topic.partitions.len());
                    }
                })
            }
        };
        outcomes.push((name, grown));
    }
    let shown = admin::until_metadata(&context.replica_manager, budget.metadata_until, |metadata| {
        for t in &metadata.topics {
            let done = waiting
                .get(t.topic_id.as_str())
                .is_some_and(|count| t.partitions.len() >= *count && t.partitions.iter().all(|p| p.leader >= 0));
            if done {
                waiting.remove(t.topic_id.as_str());
            }
        }
        waiting.is_empty()
    })
    .await;
    if !shown {
        info!("CreatePartitions from a Kafka client: answering before this broker's metadata shows every partition");
    }
    outcomes.into_iter().map(|(name, outcome)| result(&name, outcome.err())).collect()
}

async fn grow_one(context: &KafkaContext, request: pb::CreatePartitionsRequest) -> Result<pb::TopicMetadata, Refusal> {
    let reply = admin::forward(&context.link, |mut c| {
        let r = request.clone();
        async move { c.create_partitions(r).await }
    })
    .await?;
    if reply.error_code != 0 {
        return Err(Refusal { code: wire_code(reply.error_code), message: reply.error_message });
    }
    match reply.topic {
        Some(topic) => {
            if !request.validate_only {
                info!("topic {} grown to {} partition(s) for a Kafka client", topic.name, topic.partitions.len());
            }
            Ok(topic)
        }
        None => {
            warn!("the controller grew topic {} but sent no metadata for it", request.name);
            Err(Refusal::new(ErrorCode::UNKNOWN_SERVER_ERROR, "the controller answered without the topic"))
        }
    }
}

pub(super) fn result(name: &str, refusal: Option<Refusal>) -> CreatePartitionsTopicResult {
    CreatePartitionsTopicResult::default()
        .with_name(TopicName(StrBytes::from_string(name.to_string())))
        .with_error_code(refusal.as_ref().map_or(0, |r| r.code))
        .with_error_message(refusal.as_ref().and_then(Refusal::message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment;
    use kafka_protocol::messages::BrokerId;
    use kafka_protocol::protocol::Encodable;

    fn topic(name: &str, count: i32) -> CreatePartitionsTopic {
        CreatePartitionsTopic::default().with_name(TopicName(StrBytes::from_string(name.into()))).with_count(count)
    }

    #[test]
    fn counts_go_to_the_controller_and_duplicates_and_assignments_are_refused() {
        let manual = topic("m", 3)
            .with_assignments(Some(vec![CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(1)])]));
        let planned = plan(&[topic("a", 4), topic("dup", 2), manual, topic("dup", 3)], true);
        let names: Vec<&str> = planned.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "dup", "m"]);
        assert_eq!(planned[0].1, Ok(pb::CreatePartitionsRequest { name: "a".into(), count: 4, validate_only: true }));
        assert_eq!(planned[1].1, Err(Refusal::new(ErrorCode::INVALID_REQUEST, "Duplicate topic name.")));
        let manual = planned[2].1.clone().unwrap_err();
        assert_eq!(manual.code, 42);
        assert!(manual.message.contains("not supported"), "{}", manual.message);
    }

    #[test]
    fn answers_encode_in_every_version() {
        let ok = result("a", None);
        assert_eq!((ok.error_code, ok.error_message.clone()), (0, None));
        let no = result("b", Some(Refusal::new(ErrorCode::INVALID_PARTITIONS, "Topic already has 3 partition(s).")));
        assert_eq!(no.error_code, 37);
        for version in 0..=3 {
            let response = CreatePartitionsResponse::default().with_results(vec![ok.clone(), no.clone()]);
            let mut buf = bytes::BytesMut::new();
            response.encode(&mut buf, version).unwrap_or_else(|e| panic!("v{version}: {e}"));
        }
    }
}
