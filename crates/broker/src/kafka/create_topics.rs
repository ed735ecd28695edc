//! CreateTopics (API 19, v2–7; Kafka `ControllerApis.createTopics` and
//! `ReplicationControlManager.createTopics`): each topic of the request is checked here as
//! far as the request alone allows, then forwarded to the active controller as one gRPC
//! `CreateTopic` (the call `insync topic create` makes) with every config entry in its
//! `configs` map; the controller validates the configs against the catalogue
//! (`insync_types::topic_config`: INVALID_CONFIG naming the key and why), checks the name and
//! the replication factor against the committed state, places the replicas and commits. The
//! answer waits until this broker's metadata shows the new topic with a leader for every
//! partition, so a client producing right after the answer finds it here.
//!
//! Checked here, in Kafka's order, with Kafka's codes:
//! - a name given twice in one request: INVALID_REQUEST "Duplicate topic name." for it, and
//!   none of its entries is created (`ControllerApis.createTopics`);
//! - the internal topic `__consumer_offsets`: INVALID_REQUEST "Creation of internal topic …
//!   is prohibited", as Kafka refuses `__cluster_metadata` (the brokers create it themselves;
//!   the controller refuses it too, `insync_controller::internal_topics`);
//! - the name (`Topic.validate`, the controller's own `validate_topic_name`):
//!   INVALID_TOPIC_EXCEPTION;
//! - a config with a null value: INVALID_CONFIG (`ReplicationControlManager`); a key given
//!   twice keeps its last value, as Kafka's map does;
//! - manual `assignments`: INVALID_REQUEST, not supported (the controller always places);
//! - replication_factor and num_partitions: -1 means the default, 0 or below -1 is
//!   INVALID_REPLICATION_FACTOR / INVALID_PARTITIONS, above 10 000 partitions
//!   INVALID_PARTITIONS.
//!
//! The defaults for -1 are `insync topic create`'s, 1 partition and replication factor 3
//! (Kafka's num.partitions is 1 too; its default.replication.factor is 1, but insync's point
//! is replication). The factor is not capped to the live brokers: as in Kafka, asking for
//! more replicas than there are usable brokers is INVALID_REPLICATION_FACTOR.
//!
//! `validate_only` (KIP-108) goes to the controller too, with its `validate_only`: the same
//! rules on the controller's committed state (existing name, usable brokers, configs,
//! placement), nothing created, no metadata to wait for.
//!
//! v5+ answers carry, as Kafka's (KIP-525), every config of the topic sorted by name: its
//! overrides as the controller answered them, and this broker's default for the others
//! (`configs.rs`).
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use insync_controller::internal_topics;
use insync_controller::rules::{validate_topic_name, MAX_PARTITIONS_PER_TOPIC};
use insync_proto as pb;
use insync_types::ErrorCode;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;
use tracing::{info, warn};

use super::admin::{self, wire_code, Budget, Refusal};
use super::configs::{self, BrokerDefaults};
use super::connection::{respond, PendingReply, RequestMeta};
use super::KafkaContext;

/// `insync topic create`'s defaults, used for -1 (Kafka num.partitions,
/// default.replication.factor).
pub(super) const DEFAULT_NUM_PARTITIONS: i32 = 1;
pub(super) const DEFAULT_REPLICATION_FACTOR: i32 = 3;

/// One topic of the request after the broker's checks.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Planned {
    /// What the controller is asked: every config entry in `configs`.
    pub request: pb::CreateTopicRequest,
    /// The replication factor was -1: a refusal says it meant insync's default.
    pub default_replication_factor: bool,
}

/// The request's topics in request order, each checked by `check` or refused as a name
/// the request gives more than once (listed once, never checked nor created).
pub(super) fn plan_all(
    topics: &[CreatableTopic],
    check: impl Fn(&CreatableTopic) -> Result<Planned, Refusal>,
) -> Vec<(String, Result<Planned, Refusal>)> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(topics.len());
    for topic in topics {
        *seen.entry(&topic.name.0).or_default() += 1;
    }
    let mut answered: HashSet<&str> = HashSet::with_capacity(seen.len());
    let mut out = Vec::with_capacity(seen.len());
    for topic in topics {
        let name: &str = &topic.name.0;
        if !answered.insert(name) {
            continue;
        }
        let outcome = if seen.get(name).copied().unwrap_or(0) > 1 {
            Err(Refusal::new(ErrorCode::INVALID_REQUEST, "Duplicate topic name."))
        } else {
            check(topic)
        };
        out.push((name.to_string(), outcome));
    }
    out
}

/// The checks the request alone allows, in Kafka's order, and the controller request
/// (`validate_only` passed on).
pub(super) fn plan(topic: &CreatableTopic, validate_only: bool) -> Result<Planned, Refusal> {
    let name: &str = &topic.name.0;
    internal_topics::check_create(name, false).map_err(|r| Refusal::new(r.code, r.message))?;
    validate_topic_name(name).map_err(|r| Refusal::new(r.code, r.message))?;
    let configs = config_map(topic)?;
    if !topic.assignments.is_empty() {
        return Err(Refusal::new(
            ErrorCode::INVALID_REQUEST,
            "Manual partition assignments are not supported by insync: leave assignments empty and set \
             num_partitions and replication_factor (or -1 for the defaults); the controller places the replicas.",
        ));
    }
    let default_replication_factor = topic.replication_factor == -1;
    let replication_factor = match topic.replication_factor {
        -1 => DEFAULT_REPLICATION_FACTOR,
        rf if rf < 1 => {
            return Err(Refusal::new(
                ErrorCode::INVALID_REPLICATION_FACTOR,
                "Replication factor must be larger than 0, or -1 to use the default value.",
            ))
        }
        rf => i32::from(rf),
    };
    let partitions = match topic.num_partitions {
        -1 => DEFAULT_NUM_PARTITIONS,
        n if n < 1 => {
            return Err(Refusal::new(
                ErrorCode::INVALID_PARTITIONS,
                "Number of partitions was set to an invalid non-positive value.",
            ))
        }
        n if n > MAX_PARTITIONS_PER_TOPIC => {
            return Err(Refusal::new(
                ErrorCode::INVALID_PARTITIONS,
                format!("Number of partitions was set to {n}: insync allows at most {MAX_PARTITIONS_PER_TOPIC}."),
            ))
        }
        n => n,
    };
    Ok(Planned {
        request: pb::CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor,
            // Every setting travels in `configs`; the controller validates them.
            min_insync_replicas: 0,
            unclean_leader_election_enable: false,
            configs,
            validate_only,
            // A client's request: never the brokers' own creation of the offsets topic.
            internal: false,
        },
        default_replication_factor,
    })
}

/// The request's configs as the controller's map (a key given twice: the last value, as
/// Kafka's map keeps it). A null value is INVALID_CONFIG, as in Kafka.
fn config_map(topic: &CreatableTopic) -> Result<HashMap<String, String>, Refusal> {
    let nulls: Vec<&str> = topic.configs.iter().filter(|c| c.value.is_none()).map(|c| &*c.name).collect();
    if !nulls.is_empty() {
        let message = format!("Null value not supported for topic configs: {}", nulls.join(","));
        return Err(Refusal::new(ErrorCode::INVALID_CONFIG, message));
    }
    Ok(topic.configs.iter().map(|c| (c.name.to_string(), c.value.as_deref().unwrap_or_default().to_string())).collect())
}

pub(super) fn handle(context: &Arc<KafkaContext>, meta: RequestMeta, request: CreateTopicsRequest) -> PendingReply {
    let budget = Budget::new(request.timeout_ms, Instant::now());
    let validate_only = request.validate_only;
    let planned = plan_all(&request.topics, |topic| plan(topic, validate_only));
    let context = context.clone();
    respond(meta, async move { CreateTopicsResponse::default().with_topics(create(&context, planned, budget).await) })
}

/// Forwards the planned topics one at a time (a request's creations commit in its order, as
/// one Kafka controller event creates a request's topics in order), then waits for them.
async fn create(
    context: &KafkaContext,
    planned: Vec<(String, Result<Planned, Refusal>)>,
    budget: Budget,
) -> Vec<CreatableTopicResult> {
    // Per topic: the controller's topic and whether it was only validated, or the refusal.
    type Outcome = Result<(pb::TopicMetadata, bool), Refusal>;
    let mut outcomes: Vec<(String, Outcome)> = Vec::with_capacity(planned.len());
    for (name, outcome) in planned {
        let created = match outcome {
            Err(refusal) => Err(refusal),
            Ok(_) if !budget.may_call() => Err(admin::out_of_time()),
            Ok(planned) => {
                let validate_only = planned.request.validate_only;
                create_one(context, planned).await.map(|topic| (topic, validate_only))
            }
        };
        outcomes.push((name, created));
    }
    // Answer once this broker's metadata shows each new topic (by id: a delete and re-create
    // racing us is another topic) with a leader for every partition.
    let mut waiting: HashSet<&str> = outcomes
        .iter()
        .filter_map(|(_, o)| o.as_ref().ok())
        .filter(|(_, validate_only)| !validate_only)
        .map(|(t, _)| t.topic_id.as_str())
        .collect();
    let shown = admin::until_metadata(&context.replica_manager, budget.metadata_until, |metadata| {
        for t in &metadata.topics {
            if t.partitions.iter().all(|p| p.leader >= 0) {
                waiting.remove(t.topic_id.as_str());
            }
        }
        waiting.is_empty()
    })
    .await;
    if !shown {
        // Committed all the same: Kafka's KRaft controller answers on commit too.
        info!("CreateTopics from a Kafka client: answering before this broker's metadata shows every new topic");
    }
    let defaults = BrokerDefaults::of(context.replica_manager.broker_id, &context.replica_manager.config);
    outcomes
        .into_iter()
        .map(|(name, outcome)| match outcome {
            Ok((topic, validate_only)) => result(&topic, validate_only, &defaults),
            Err(refusal) => refused(&name, &refusal),
        })
        .collect()
}

async fn create_one(context: &KafkaContext, planned: Planned) -> Result<pb::TopicMetadata, Refusal> {
    let request = planned.request;
    let reply = admin::forward(&context.link, |mut c| {
        let r = request.clone();
        async move { c.create_topic(r).await }
    })
    .await?;
    if reply.error_code != 0 {
        let mut message = reply.error_message;
        if planned.default_replication_factor && reply.error_code == ErrorCode::INVALID_REPLICATION_FACTOR.code() {
            message.push_str(" (replication factor -1 means insync's default of 3)");
        }
        return Err(Refusal { code: wire_code(reply.error_code), message });
    }
    match reply.topic {
        Some(topic) => {
            if !request.validate_only {
                info!("created topic {} for a Kafka client ({} partition(s))", topic.name, topic.partitions.len());
            }
            Ok(topic)
        }
        None => {
            warn!("the controller created topic {} but sent no metadata for it", request.name);
            Err(Refusal::new(ErrorCode::UNKNOWN_SERVER_ERROR, "the controller answered without the topic"))
        }
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub(super) fn refused(name: &str, refusal: &Refusal) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(topic_name(name))
        .with_error_code(refusal.code)
        .with_error_message(refusal.message())
}

/// A created (or, with validate_only, validated) topic's answer: v5+ carry its partitions,
/// replication factor and every config (KIP-525), v7 its id (KIP-516; none for
/// validate_only: the controller chose no id that will exist).
pub(super) fn result(
    topic: &pb::TopicMetadata,
    validate_only: bool,
    defaults: &BrokerDefaults,
) -> CreatableTopicResult {
    let replication_factor = topic.partitions.first().map_or(0, |p| p.replicas.len());
    let topic_id = if validate_only { None } else { uuid::Uuid::parse_str(&topic.topic_id).ok() };
    CreatableTopicResult::default()
        .with_name(topic_name(&topic.name))
        .with_topic_id(topic_id.unwrap_or(uuid::Uuid::nil()))
        .with_error_code(0)
        .with_error_message(None)
        .with_num_partitions(i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX))
        .with_replication_factor(i16::try_from(replication_factor).unwrap_or(i16::MAX))
        .with_configs(Some(topic_configs(&topic.configs, defaults)))
}

/// The topic's configs as Kafka's CreatableTopicConfigs (KIP-525): all of them, sorted by
/// name, not read-only, not sensitive.
fn topic_configs(overrides: &HashMap<String, String>, defaults: &BrokerDefaults) -> Vec<CreatableTopicConfigs> {
    configs::topic_configs(overrides, defaults)
        .into_iter()
        .map(|d| {
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_string(d.name))
                .with_value(Some(StrBytes::from_string(d.value)))
                .with_read_only(d.read_only)
                .with_config_source(d.source)
                .with_is_sensitive(false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopicConfig};
    use kafka_protocol::messages::BrokerId;
    use kafka_protocol::protocol::Encodable;
    use std::collections::BTreeMap;

    fn code(outcome: &Result<Planned, Refusal>) -> i16 {
        outcome.as_ref().map_or_else(|r| r.code, |_| 0)
    }

    fn topic(name: &str, partitions: i32, rf: i16) -> CreatableTopic {
        CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)
    }

    fn with_config(topic: CreatableTopic, key: &str, value: Option<&str>) -> CreatableTopic {
        let mut configs = topic.configs.clone();
        configs.push(
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(key.into()))
                .with_value(value.map(|v| StrBytes::from_string(v.into()))),
        );
        topic.with_configs(configs)
    }

    fn plan_it(t: &CreatableTopic) -> Result<Planned, Refusal> {
        plan(t, false)
    }

    #[test]
    fn maps_onto_the_controllers_create_topic_with_insyncs_defaults() {
        let planned = plan_it(&topic("orders", -1, -1)).unwrap();
        assert_eq!(
            planned.request,
            pb::CreateTopicRequest {
                name: "orders".into(),
                partitions: 1,
                replication_factor: 3,
                ..Default::default()
            }
        );
        assert!(planned.default_replication_factor);
        let t =
            with_config(with_config(topic("p", 6, 2), "min.insync.replicas", Some("2")), "retention.ms", Some("60000"));
        let planned = plan(&t, true).unwrap();
        assert_eq!((planned.request.partitions, planned.request.replication_factor), (6, 2));
        let want: HashMap<String, String> =
            [("min.insync.replicas".into(), "2".into()), ("retention.ms".into(), "60000".into())].into();
        assert_eq!(planned.request.configs, want, "every entry goes to the controller, which validates it");
        assert!(planned.request.validate_only);
        assert!(!planned.default_replication_factor);
    }

    #[test]
    fn refuses_with_kafkas_codes_in_kafkas_order() {
        assert_eq!(code(&plan_it(&topic("bad name", 1, 1))), 17, "INVALID_TOPIC_EXCEPTION");
        assert_eq!(code(&plan_it(&topic("..", 1, 1))), 17);
        assert_eq!(code(&plan_it(&topic(&"x".repeat(250), 1, 1))), 17);
        assert_eq!(code(&plan_it(&topic("t", 0, 1))), 37, "INVALID_PARTITIONS");
        assert_eq!(code(&plan_it(&topic("t", -2, 1))), 37);
        assert_eq!(code(&plan_it(&topic("t", MAX_PARTITIONS_PER_TOPIC + 1, 1))), 37);
        assert_eq!(code(&plan_it(&topic("t", 1, 0))), 38, "INVALID_REPLICATION_FACTOR");
        assert_eq!(code(&plan_it(&topic("t", 1, -3))), 38);
        // The name comes first, then configs, then the counts.
        assert_eq!(code(&plan_it(&with_config(topic("bad name", 0, 0), "x", None))), 17);
        assert_eq!(code(&plan_it(&with_config(topic("t", 0, 0), "retention.ms", None))), 40);
    }

    #[test]
    fn the_offsets_topic_is_the_brokers_to_create() {
        // Before the name's other checks and the configs, as Kafka refuses __cluster_metadata.
        let refusal = plan_it(&with_config(topic("__consumer_offsets", 0, 0), "x", None)).unwrap_err();
        assert_eq!(refusal.code, 42, "INVALID_REQUEST");
        assert!(refusal.message.contains("Creation of internal topic __consumer_offsets is prohibited"));
        assert!(!plan_it(&topic("orders", 1, 1)).unwrap().request.internal, "a client's request is never internal");
    }

    #[test]
    fn null_config_values_are_invalid_and_the_last_value_of_a_key_counts() {
        let null = plan_it(&with_config(topic("t", 1, 1), "min.insync.replicas", None)).unwrap_err();
        assert_eq!(
            (null.code, null.message.as_str()),
            (40, "Null value not supported for topic configs: min.insync.replicas")
        );
        // Unknown keys and bad values are the controller's to refuse (INVALID_CONFIG).
        let unknown = plan_it(&with_config(topic("t", 1, 1), "retention.hours", Some("1"))).unwrap();
        assert_eq!(unknown.request.configs.get("retention.hours").map(String::as_str), Some("1"));
        let twice = with_config(
            with_config(topic("t", 1, 3), "min.insync.replicas", Some("1")),
            "min.insync.replicas",
            Some("2"),
        );
        assert_eq!(plan_it(&twice).unwrap().request.configs.get("min.insync.replicas").map(String::as_str), Some("2"));
    }

    #[test]
    fn manual_assignments_are_an_invalid_request() {
        let t = topic("t", -1, -1).with_assignments(vec![CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(vec![BrokerId(1)])]);
        let refusal = plan_it(&t).unwrap_err();
        assert_eq!(refusal.code, 42, "INVALID_REQUEST");
        assert!(refusal.message.contains("not supported"), "{}", refusal.message);
    }

    #[test]
    fn a_duplicated_name_is_refused_once_and_never_created() {
        let topics =
            vec![topic("a", 1, 1), topic("dup", 1, 1), topic("b", 1, 1), topic("dup", 2, 1), topic("dup", 3, 1)];
        let planned = plan_all(&topics, plan_it);
        let names: Vec<&str> = planned.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "dup", "b"]);
        assert_eq!(planned[1].1, Err(Refusal::new(ErrorCode::INVALID_REQUEST, "Duplicate topic name.")));
        assert!(planned[0].1.is_ok() && planned[2].1.is_ok());
    }

    #[test]
    fn answers_carry_id_counts_and_every_config() {
        let created = pb::TopicMetadata {
            name: "orders".into(),
            topic_id: "0b7c2a1e-6f0e-4a53-9a52-8ef4d1a0c001".into(),
            partitions: vec![
                pb::PartitionMetadata { partition: 0, replicas: vec![1, 2, 3], ..Default::default() },
                pb::PartitionMetadata { partition: 1, replicas: vec![2, 3, 1], ..Default::default() },
            ],
            min_insync_replicas: 2,
            configs: [("min.insync.replicas".to_string(), "2".to_string())].into(),
            ..Default::default()
        };
        let defaults = super::configs::tests::defaults();
        let r = result(&created, false, &defaults);
        assert_eq!((r.error_code, r.num_partitions, r.replication_factor), (0, 2, 3));
        assert_eq!(r.topic_id.to_string(), "0b7c2a1e-6f0e-4a53-9a52-8ef4d1a0c001");
        assert_eq!(r.error_message, None);
        let configs = r.configs.clone().unwrap();
        let shown: BTreeMap<String, (String, i8)> = configs
            .iter()
            .map(|c| (c.name.to_string(), (c.value.as_deref().unwrap_or_default().to_string(), c.config_source)))
            .collect();
        assert_eq!(shown.len(), insync_types::topic_config::TOPIC_CONFIGS.len(), "every catalogue key: {shown:?}");
        assert_eq!(shown["min.insync.replicas"], ("2".into(), 1), "an override: DYNAMIC_TOPIC_CONFIG");
        assert_eq!(shown["retention.ms"], ("604800000".into(), 4), "a broker flag: STATIC_BROKER_CONFIG");
        assert_eq!(shown["unclean.leader.election.enable"], ("false".into(), 5), "built in: DEFAULT_CONFIG");
        let v = result(&created, true, &defaults);
        assert_eq!((v.num_partitions, v.topic_id), (2, uuid::Uuid::nil()), "validate_only: no id");
        let no = refused("x", &Refusal::new(ErrorCode::TOPIC_ALREADY_EXISTS, "Topic 'x' already exists."));
        assert_eq!((no.error_code, no.num_partitions), (36, -1));
        for version in 2..=7 {
            for answer in [&r, &no] {
                let response = CreateTopicsResponse::default().with_topics(vec![answer.clone()]);
                let mut buf = bytes::BytesMut::new();
                response.encode(&mut buf, version).unwrap_or_else(|e| panic!("v{version}: {e}"));
            }
        }
    }
}
