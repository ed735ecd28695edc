//! DeleteTopics (API 20, v1–6; Kafka `ControllerApis.deleteTopics`,
//! `ReplicationControlManager.deleteTopic`): each topic is forwarded to the active controller
//! as one gRPC `DeleteTopic` (the call `insync topic delete` makes), and the answer waits until
//! this broker's metadata no longer has it (its replicas here are stopped by then), so a
//! produce through this broker right after the answer fails.
//!
//! As Kafka: v1–5 name topics, v6 names or topic ids (KIP-516). A name or id given twice is
//! INVALID_REQUEST ("Duplicate topic name." / "Duplicate topic id.") and not deleted; an entry
//! with neither or both is INVALID_REQUEST; an unknown name is UNKNOWN_TOPIC_OR_PARTITION
//! (from the controller); an id this broker's metadata does not know is UNKNOWN_TOPIC_ID.
//!
//! An id is turned into a name here, from this broker's metadata, and both go to the
//! controller, which deletes the topic only if it still has that id: a topic deleted and
//! re-created under the name a moment ago, which this broker has not seen yet, is never the
//! one deleted (the answer is then UNKNOWN_TOPIC_ID).
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use insync_proto as pb;
use insync_types::ErrorCode;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;
use tracing::info;
use uuid::Uuid;

use super::admin::{self, wire_code, Budget, Refusal};
use super::connection::{respond, PendingReply, RequestMeta};
use super::KafkaContext;

/// One entry of the request after the broker's checks, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// Ask the controller to delete `name`; `by_id` when the client named it by id.
    Delete { name: String, by_id: Option<Uuid> },
    /// Answered without the controller.
    Answer { name: Option<String>, topic_id: Uuid, refusal: Refusal },
}

/// A topic as the request names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Named<'a> {
    Name(&'a str),
    Id(Uuid),
}

/// The request's entries in request order: names (v1–5 `topic_names`, v6 `topics` with a
/// name), ids (v6), and what is refused before any controller call.
pub(super) fn steps(request: &DeleteTopicsRequest, metadata: &pb::ClusterMetadata) -> Vec<Step> {
    let mut named: Vec<Result<Named, Step>> = Vec::with_capacity(request.topic_names.len() + request.topics.len());
    named.extend(request.topic_names.iter().map(|n| Ok(Named::Name(&n.0))));
    for topic in &request.topics {
        named.push(match (&topic.name, topic.topic_id.is_nil()) {
            (Some(name), true) => Ok(Named::Name(&name.0)),
            (None, false) => Ok(Named::Id(topic.topic_id)),
            (None, true) => Err(invalid(None, Uuid::nil(), "Neither topic name nor id were specified.")),
            (Some(name), false) => Err(invalid(
                Some(name.0.to_string()),
                topic.topic_id,
                "You may not specify both topic name and topic id.",
            )),
        });
    }
    let mut count: HashMap<Named, usize> = HashMap::with_capacity(named.len());
    for entry in named.iter().flatten() {
        *count.entry(*entry).or_default() += 1;
    }
    // Ids → names, from one pass over the metadata.
    let ids: HashMap<Uuid, &str> = metadata
        .topics
        .iter()
        .filter_map(|t| Uuid::parse_str(&t.topic_id).ok().map(|id| (id, t.name.as_str())))
        .collect();
    let mut answered: HashSet<Named> = HashSet::with_capacity(count.len());
    let mut out = Vec::with_capacity(named.len());
    for entry in named {
        let entry = match entry {
            Ok(entry) => entry,
            Err(step) => {
                out.push(step);
                continue;
            }
        };
        if !answered.insert(entry) {
            continue;
        }
        let duplicated = count.get(&entry).copied().unwrap_or(0) > 1;
        out.push(match entry {
            Named::Name(name) if duplicated => invalid(Some(name.to_string()), Uuid::nil(), "Duplicate topic name."),
            Named::Id(id) if duplicated => invalid(None, id, "Duplicate topic id."),
            Named::Name(name) => Step::Delete { name: name.to_string(), by_id: None },
            Named::Id(id) => match ids.get(&id) {
                Some(name) => Step::Delete { name: name.to_string(), by_id: Some(id) },
                None => unknown_id(id),
            },
        });
    }
    out
}

fn invalid(name: Option<String>, topic_id: Uuid, message: &str) -> Step {
    Step::Answer { name, topic_id, refusal: Refusal::new(ErrorCode::INVALID_REQUEST, message) }
}

fn unknown_id(id: Uuid) -> Step {
    let refusal = Refusal::of(ResponseError::UnknownTopicId, format!("Topic id {id} does not exist."));
    Step::Answer { name: None, topic_id: id, refusal }
}

pub(super) fn handle(context: &Arc<KafkaContext>, meta: RequestMeta, request: DeleteTopicsRequest) -> PendingReply {
    let budget = Budget::new(request.timeout_ms, Instant::now());
    let steps = steps(&request, &context.replica_manager.metadata());
    let context = context.clone();
    respond(meta, async move { DeleteTopicsResponse::default().with_responses(delete(&context, steps, budget).await) })
}

/// Forwards the deletions one at a time, then waits until the metadata has none of them.
async fn delete(context: &KafkaContext, steps: Vec<Step>, budget: Budget) -> Vec<DeletableTopicResult> {
    let mut results = Vec::with_capacity(steps.len());
    // Deleted topics by id; by name for a topic created before ids (its id is empty).
    let mut deleted_ids: HashSet<String> = HashSet::new();
    let mut deleted_names: HashSet<String> = HashSet::new();
    for step in steps {
        let (name, topic_id, outcome) = match step {
            Step::Answer { name, topic_id, refusal } => (name, topic_id, Err(refusal)),
            Step::Delete { name, by_id } if !budget.may_call() => {
                (Some(name), by_id.unwrap_or_default(), Err(admin::out_of_time()))
            }
            Step::Delete { name, by_id } => {
                let outcome = delete_one(context, &name, by_id).await;
                let topic_id = match &outcome {
                    Ok(id) if id.is_empty() => {
                        deleted_names.insert(name.clone());
                        Uuid::nil()
                    }
                    Ok(id) => {
                        deleted_ids.insert(id.clone());
                        Uuid::parse_str(id).unwrap_or_default()
                    }
                    Err(_) => by_id.unwrap_or_default(),
                };
                (Some(name), topic_id, outcome.map(|_| ()))
            }
        };
        results.push(result(name, topic_id, outcome.err()));
    }
    let gone = admin::until_metadata(&context.replica_manager, budget.metadata_until, |metadata| {
        !metadata.topics.iter().any(|t| {
            if t.topic_id.is_empty() {
                deleted_names.contains(&t.name)
            } else {
                deleted_ids.contains(&t.topic_id)
            }
        })
    })
    .await;
    if !gone {
        info!("DeleteTopics from a Kafka client: answering before this broker's metadata drops every deleted topic");
    }
    results
}

/// One DeleteTopic call; the id deleted, as the controller saw it.
async fn delete_one(context: &KafkaContext, name: &str, by_id: Option<Uuid>) -> Result<String, Refusal> {
    // By id, the controller deletes only the topic that still has it.
    let topic_id = by_id.map(|id| id.to_string()).unwrap_or_default();
    let request = pb::DeleteTopicRequest { name: name.to_string(), topic_id };
    let reply = admin::forward(&context.link, |mut c| {
        let r = request.clone();
        async move { c.delete_topic(r).await }
    })
    .await?;
    if reply.error_code != 0 {
        // Named by an id that is gone by the time the controller looked: the id is unknown.
        if by_id.is_some() && reply.error_code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code() {
            let id = by_id.unwrap_or_default();
            return Err(Refusal::of(ResponseError::UnknownTopicId, format!("Topic id {id} does not exist.")));
        }
        return Err(Refusal { code: wire_code(reply.error_code), message: reply.error_message });
    }
    info!("deleted topic {name} (topic id {}) for a Kafka client", reply.topic_id);
    Ok(reply.topic_id)
}

/// One entry of the answer: v6 carries the id and a nullable name, v5+ the message.
pub(super) fn result(name: Option<String>, topic_id: Uuid, refusal: Option<Refusal>) -> DeletableTopicResult {
    let mut result = DeletableTopicResult::default()
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
        .with_topic_id(topic_id)
        .with_error_code(0)
        .with_error_message(None);
    if let Some(refusal) = refusal {
        result = result.with_error_code(refusal.code).with_error_message(refusal.message());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::protocol::Encodable;

    const ORDERS_ID: &str = "6a1d2c3e-0000-4000-8000-000000000001";

    fn metadata() -> pb::ClusterMetadata {
        pb::ClusterMetadata {
            topics: vec![
                pb::TopicMetadata { name: "orders".into(), topic_id: ORDERS_ID.into(), ..Default::default() },
                pb::TopicMetadata { name: "legacy".into(), ..Default::default() },
            ],
            ..Default::default()
        }
    }

    fn name(n: &str) -> TopicName {
        TopicName(StrBytes::from_string(n.into()))
    }

    fn code(step: &Step) -> i16 {
        match step {
            Step::Answer { refusal, .. } => refusal.code,
            Step::Delete { .. } => 0,
        }
    }

    #[test]
    fn names_are_forwarded_and_duplicates_refused_once() {
        let request =
            DeleteTopicsRequest::default().with_topic_names(vec![name("a"), name("dup"), name("b"), name("dup")]);
        let steps = steps(&request, &metadata());
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0], Step::Delete { name: "a".into(), by_id: None });
        assert_eq!(code(&steps[1]), 42);
        assert_eq!(steps[2], Step::Delete { name: "b".into(), by_id: None });
    }

    #[test]
    fn ids_are_looked_up_in_the_metadata() {
        let orders = Uuid::parse_str(ORDERS_ID).unwrap();
        let unknown = Uuid::from_u128(7);
        let request = DeleteTopicsRequest::default().with_topics(vec![
            DeleteTopicState::default().with_topic_id(orders),
            DeleteTopicState::default().with_topic_id(unknown),
            DeleteTopicState::default().with_name(Some(name("by-name"))),
            DeleteTopicState::default(),
            DeleteTopicState::default().with_name(Some(name("both"))).with_topic_id(orders),
        ]);
        let steps = steps(&request, &metadata());
        assert_eq!(steps[0], Step::Delete { name: "orders".into(), by_id: Some(orders) });
        assert_eq!(code(&steps[1]), 100, "UNKNOWN_TOPIC_ID");
        assert_eq!(steps[2], Step::Delete { name: "by-name".into(), by_id: None });
        assert_eq!(
            steps[3],
            Step::Answer {
                name: None,
                topic_id: Uuid::nil(),
                refusal: Refusal::new(ErrorCode::INVALID_REQUEST, "Neither topic name nor id were specified.")
            }
        );
        assert!(matches!(&steps[4], Step::Answer { name: Some(n), refusal, .. } if n == "both" && refusal.code == 42));
        let twice = DeleteTopicsRequest::default().with_topics(vec![
            DeleteTopicState::default().with_topic_id(orders),
            DeleteTopicState::default().with_topic_id(orders),
        ]);
        let steps = super::steps(&twice, &metadata());
        assert_eq!(steps.len(), 1);
        assert!(matches!(&steps[0], Step::Answer { refusal, .. } if refusal.message == "Duplicate topic id."));
    }

    #[test]
    fn answers_encode_at_every_served_version() {
        let ok = result(Some("orders".into()), Uuid::parse_str(ORDERS_ID).unwrap(), None);
        assert_eq!((ok.error_code, ok.error_message.clone()), (0, None));
        let unknown = result(
            Some("nope".into()),
            Uuid::nil(),
            Some(Refusal::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, "Topic 'nope' does not exist.")),
        );
        assert_eq!(unknown.error_code, 3);
        for version in 1..=6 {
            let mut buf = bytes::BytesMut::new();
            DeleteTopicsResponse::default()
                .with_responses(vec![ok.clone(), unknown.clone()])
                .encode(&mut buf, version)
                .unwrap_or_else(|e| panic!("v{version}: {e}"));
        }
        // v6 answers an unknown id with a null name.
        let by_id = result(None, Uuid::from_u128(7), Some(Refusal::of(ResponseError::UnknownTopicId, "gone")));
        let mut buf = bytes::BytesMut::new();
        DeleteTopicsResponse::default().with_responses(vec![by_id]).encode(&mut buf, 6).unwrap();
    }
}
