//! ElectLeaders (API 43, v0–2; Kafka `ReplicationControlManager.electLeaders`, KIP-183,
//! KIP-460): preferred leader elections on demand, forwarded to the active controller's
//! gRPC `ElectLeaders` (the call `insync topic elect-leaders --preferred` makes): one call per
//! topic named, or one topic-less call when `topic_partitions` is null (every partition). The
//! controller moves a partition's leadership to its preferred replica (the first assigned)
//! when that replica is in the ISR and may lead, and otherwise answers
//! PREFERRED_LEADER_NOT_AVAILABLE (80), or ELECTION_NOT_NEEDED (84) when it leads already;
//! the answer waits until this broker's metadata shows the leaders elected.
//!
//! As Kafka: a topic named with no partitions elects nothing for it; an unknown topic or
//! partition is UNKNOWN_TOPIC_OR_PARTITION per partition; for all partitions (null) the
//! answer leaves out the partitions whose preferred replica leads already. The controller's
//! topic-less election also leaves out those it cannot move now (Kafka lists them with
//! PREFERRED_LEADER_NOT_AVAILABLE); name the topic to see why a partition did not move.
//!
//! Unclean elections (election type 1, KIP-460) are not run on demand: they are answered
//! INVALID_REQUEST with a message (per partition, or top-level from v1 when every partition
//! is asked for). A topic with unclean.leader.election.enable gets an unclean leader from the
//! controller on its own when no in-sync replica is left.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use insync_controller::rules::MAX_PARTITIONS_PER_TOPIC;
use insync_proto as pb;
use insync_types::ErrorCode;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;
use tracing::{info, warn};

use super::admin::{self, wire, wire_code, Budget, Refusal};
use super::connection::{respond, PendingReply, RequestMeta};
use super::KafkaContext;

/// Kafka `ElectionType`.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// What the request asks, after the broker's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Plan {
    /// Preferred elections of every partition: one topic-less controller call.
    All,
    /// Preferred elections per topic (partitions deduplicated, sorted), plus the partitions
    /// that cannot exist (outside 0..10 000), answered UNKNOWN_TOPIC_OR_PARTITION without
    /// being sent.
    Topics(BTreeMap<String, Partitions>),
    /// Refused as a whole: top-level from v1; per named partition as well.
    Refused { refusal: Refusal, named: BTreeMap<String, BTreeSet<i32>> },
}

/// One topic's partitions as asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Partitions {
    pub elect: BTreeSet<i32>,
    pub impossible: BTreeSet<i32>,
}

/// Maps the request onto controller calls. v0 has no election type: it is preferred.
pub(super) fn plan(request: &ElectLeadersRequest) -> Plan {
    let named = request.topic_partitions.as_ref().map(|topics| {
        let mut named: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
        for topic in topics {
            named.entry(topic.topic.0.to_string()).or_default().extend(topic.partitions.iter().copied());
        }
        named
    });
    let refusal = match request.election_type {
        PREFERRED => None,
        UNCLEAN => Some(Refusal::new(
            ErrorCode::INVALID_REQUEST,
            "insync does not run unclean leader elections on demand; a topic with \
             unclean.leader.election.enable=true gets one from the controller when no in-sync replica is left",
        )),
        other => Some(Refusal::new(ErrorCode::INVALID_REQUEST, format!("Unknown election type {other}"))),
    };
    match (refusal, named) {
        (Some(refusal), named) => Plan::Refused { refusal, named: named.unwrap_or_default() },
        (None, None) => Plan::All,
        (None, Some(named)) => Plan::Topics(
            named
                .into_iter()
                .map(|(topic, partitions)| {
                    let (elect, impossible) =
                        partitions.into_iter().partition(|p| (0..MAX_PARTITIONS_PER_TOPIC).contains(p));
                    (topic, Partitions { elect, impossible })
                })
                .collect(),
        ),
    }
}

/// One partition's answer; the message is null on success, as in Kafka.
fn partition_result(partition: i32, code: i16, message: &str) -> PartitionResult {
    PartitionResult::default()
        .with_partition_id(partition)
        .with_error_code(code)
        .with_error_message((code != 0).then(|| StrBytes::from_string(message.to_string())))
}

/// The answer: results grouped by topic; a top-level error only from v1 (v0 has none).
pub(super) fn response(
    version: i16,
    top_level: Option<&Refusal>,
    results: BTreeMap<String, Vec<PartitionResult>>,
) -> ElectLeadersResponse {
    let topics = results
        .into_iter()
        .map(|(topic, partitions)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_string(topic)))
                .with_partition_result(partitions)
        })
        .collect();
    let code = if version >= 1 { top_level.map_or(0, |r| r.code) } else { 0 };
    ElectLeadersResponse::default().with_error_code(code).with_replica_election_results(topics)
}

/// Every named partition answered with `refusal`.
fn refuse_all(named: &BTreeMap<String, BTreeSet<i32>>, refusal: &Refusal) -> BTreeMap<String, Vec<PartitionResult>> {
    named
        .iter()
        .map(|(topic, partitions)| {
            let results = partitions.iter().map(|p| partition_result(*p, refusal.code, &refusal.message)).collect();
            (topic.clone(), results)
        })
        .collect()
}

/// The controller's per-partition results, grouped by topic; for all partitions without
/// those that need no election (Kafka leaves them out).
pub(super) fn controller_results(results: &[pb::ElectionResult], all: bool) -> BTreeMap<String, Vec<PartitionResult>> {
    let mut grouped: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for r in results {
        let code = wire_code(r.error_code);
        if all && code == wire(ErrorCode::ELECTION_NOT_NEEDED) {
            continue;
        }
        grouped.entry(r.topic.clone()).or_default().push(partition_result(r.partition, code, &r.error_message));
    }
    grouped
}

pub(super) fn handle(context: &Arc<KafkaContext>, meta: RequestMeta, request: ElectLeadersRequest) -> PendingReply {
    let budget = Budget::new(request.timeout_ms, Instant::now());
    let plan = plan(&request);
    let context = context.clone();
    let version = meta.api_version;
    respond(meta, async move {
        match plan {
            Plan::Refused { refusal, named } => {
                let top_level = named.is_empty().then_some(&refusal);
                response(version, top_level, refuse_all(&named, &refusal))
            }
            Plan::All => match elect(&context, pb::ElectLeadersRequest::default(), budget).await {
                Ok(results) => response(version, None, controller_results(&results, true)),
                Err(refusal) => {
                    if version == 0 {
                        // v0 has no top-level error to carry it.
                        warn!("ElectLeaders v0 for every partition failed: {}", refusal.message);
                    }
                    response(version, Some(&refusal), BTreeMap::new())
                }
            },
            Plan::Topics(topics) => response(version, None, elect_topics(&context, topics, budget).await),
        }
    })
}

/// One controller call per topic, in name order.
async fn elect_topics(
    context: &KafkaContext,
    topics: BTreeMap<String, Partitions>,
    budget: Budget,
) -> BTreeMap<String, Vec<PartitionResult>> {
    let mut answers: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (topic, partitions) in topics {
        let mut results: Vec<PartitionResult> =
            Vec::with_capacity(partitions.elect.len() + partitions.impossible.len());
        let unknown = wire(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
        results.extend(
            partitions.impossible.iter().map(|p| partition_result(*p, unknown, &format!("{topic}-{p} does not exist"))),
        );
        if !partitions.elect.is_empty() {
            let request = pb::ElectLeadersRequest {
                topic: topic.clone(),
                partitions: partitions.elect.iter().copied().collect(),
            };
            let outcome =
                if budget.may_call() { elect(context, request, budget).await } else { Err(admin::out_of_time()) };
            match outcome {
                Ok(elected) => results.extend(controller_results(&elected, false).into_values().flatten()),
                Err(refusal) => results
                    .extend(partitions.elect.iter().map(|p| partition_result(*p, refusal.code, &refusal.message))),
            }
        }
        results.sort_by_key(|r| r.partition_id);
        answers.insert(topic, results);
    }
    answers
}

/// One ElectLeaders call; its per-partition results once this broker's metadata shows the
/// leaders it elected (or the budget's wait ran out).
async fn elect(
    context: &KafkaContext,
    request: pb::ElectLeadersRequest,
    budget: Budget,
) -> Result<Vec<pb::ElectionResult>, Refusal> {
    let reply = admin::forward(&context.link, |mut c| {
        let r = request.clone();
        async move { c.elect_leaders(r).await }
    })
    .await?;
    if reply.error_code != 0 {
        return Err(Refusal { code: wire_code(reply.error_code), message: reply.error_message });
    }
    let elected: Vec<&pb::ElectionResult> = reply.results.iter().filter(|r| r.error_code == 0).collect();
    let topics: BTreeSet<&str> = elected.iter().map(|r| r.topic.as_str()).collect();
    if !elected.is_empty() {
        info!("ElectLeaders from a Kafka client moved {} partition leader(s)", elected.len());
    }
    admin::until_metadata(&context.replica_manager, budget.metadata_until, |metadata| {
        let leaders: BTreeMap<(&str, i32), i32> = metadata
            .topics
            .iter()
            .filter(|t| topics.contains(t.name.as_str()))
            .flat_map(|t| t.partitions.iter().map(move |p| ((t.name.as_str(), p.partition), p.leader)))
            .collect();
        elected.iter().all(|r| leaders.get(&(r.topic.as_str(), r.partition)) == Some(&r.leader))
    })
    .await;
    Ok(reply.results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::protocol::Encodable;

    fn named(entries: &[(&str, &[i32])]) -> Option<Vec<TopicPartitions>> {
        Some(
            entries
                .iter()
                .map(|(t, ps)| {
                    TopicPartitions::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps.to_vec())
                })
                .collect(),
        )
    }

    #[test]
    fn preferred_elections_map_to_one_call_per_topic_or_one_for_all() {
        let all = ElectLeadersRequest::default().with_election_type(PREFERRED).with_topic_partitions(None);
        assert_eq!(plan(&all), Plan::All);
        let request = ElectLeadersRequest::default().with_topic_partitions(named(&[
            ("b", &[2, 0, 2]),
            ("a", &[1]),
            ("b", &[1, -1, 10_000]),
            ("c", &[]),
        ]));
        let Plan::Topics(topics) = plan(&request) else { panic!("per topic") };
        assert_eq!(topics.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(topics["b"].elect.iter().copied().collect::<Vec<_>>(), [0, 1, 2], "merged, deduplicated, sorted");
        assert_eq!(topics["b"].impossible.iter().copied().collect::<Vec<_>>(), [-1, 10_000], "never sent");
        assert!(topics["c"].elect.is_empty(), "a topic with no partitions elects nothing, as in Kafka");
    }

    #[test]
    fn unclean_and_unknown_election_types_are_invalid_requests() {
        let unclean =
            ElectLeadersRequest::default().with_election_type(UNCLEAN).with_topic_partitions(named(&[("t", &[0, 1])]));
        let Plan::Refused { refusal, named: partitions } = plan(&unclean) else { panic!("refused") };
        assert_eq!(refusal.code, 42);
        assert!(refusal.message.contains("unclean"), "{}", refusal.message);
        let answer = response(2, None, refuse_all(&partitions, &refusal));
        let results = &answer.replica_election_results[0].partition_result;
        assert_eq!(results.iter().map(|r| (r.partition_id, r.error_code)).collect::<Vec<_>>(), [(0, 42), (1, 42)]);
        assert!(results[0].error_message.as_deref().unwrap().contains("unclean"));
        let all = ElectLeadersRequest::default().with_election_type(UNCLEAN);
        let Plan::Refused { named: none, .. } = plan(&all) else { panic!("refused") };
        assert!(none.is_empty(), "answered top-level");
        let weird = ElectLeadersRequest::default().with_election_type(7).with_topic_partitions(named(&[("t", &[0])]));
        assert!(matches!(plan(&weird), Plan::Refused { refusal, .. } if refusal.message == "Unknown election type 7"));
    }

    #[test]
    fn controller_results_keep_kafkas_codes_and_drop_unneeded_for_all() {
        let result = |topic: &str, partition: i32, code: ErrorCode, message: &str| pb::ElectionResult {
            topic: topic.into(),
            partition,
            error_code: code.code(),
            error_message: message.into(),
            leader: 1,
        };
        let results = vec![
            result("t", 0, ErrorCode::NONE, ""),
            result("t", 1, ErrorCode::ELECTION_NOT_NEEDED, "the preferred replica 2 leads already"),
            result("u", 0, ErrorCode::PREFERRED_LEADER_NOT_AVAILABLE, "the preferred replica 3 is not in the ISR"),
        ];
        let named = controller_results(&results, false);
        let codes = |m: &BTreeMap<String, Vec<PartitionResult>>| -> Vec<(String, i32, i16)> {
            m.iter().flat_map(|(t, rs)| rs.iter().map(move |r| (t.clone(), r.partition_id, r.error_code))).collect()
        };
        assert_eq!(codes(&named), [("t".into(), 0, 0), ("t".into(), 1, 84), ("u".into(), 0, 80)]);
        assert_eq!(named["t"][0].error_message, None);
        assert!(named["u"][0].error_message.as_deref().unwrap().contains("not in the ISR"));
        assert_eq!(codes(&controller_results(&results, true)), [("t".into(), 0, 0), ("u".into(), 0, 80)]);
    }

    #[test]
    fn the_top_level_error_exists_from_v1_and_every_version_encodes() {
        let refusal = Refusal::new(ErrorCode::REQUEST_TIMED_OUT, "no controller");
        assert_eq!(response(1, Some(&refusal), BTreeMap::new()).error_code, 7);
        assert_eq!(response(0, Some(&refusal), BTreeMap::new()).error_code, 0, "v0 has no top-level error");
        let mut results = BTreeMap::new();
        results.insert("t".to_string(), vec![partition_result(0, 0, ""), partition_result(1, 80, "why")]);
        for version in 0..=2 {
            let mut buf = bytes::BytesMut::new();
            response(version, Some(&refusal), results.clone())
                .encode(&mut buf, version)
                .unwrap_or_else(|e| panic!("v{version}: {e}"));
        }
    }
}
