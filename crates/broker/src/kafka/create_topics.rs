//! CreateTopics (API 19, v2–7; Kafka `ControllerApis.createTopics` and
//! `ReplicationControlManager.createTopics`): each topic of the request is checked here as
//! far as the request alone allows, then forwarded to the active controller as one gRPC
//! `CreateTopic` (the call `insync topic create` makes), which validates against the
//! committed state, places the replicas and commits. The answer waits until this broker's
//! metadata shows the new topic with a leader for every partition, so a client producing
//! right after the answer finds it here.
//!
//! Checked here, in Kafka's order, with Kafka's codes:
//! - a name given twice in one request: INVALID_REQUEST "Duplicate topic name." for it, and
//!   none of its entries is created (`ControllerApis.createTopics`);
//! - the name (`Topic.validate`, the controller's own `validate_topic_name`):
//!   INVALID_TOPIC_EXCEPTION;
//! - configs (`computeConfigChanges`): a null value or any key other than
//!   `min.insync.replicas` and `unclean.leader.election.enable` (the two settings a topic
//!   has here; topic configs are being built separately) is INVALID_CONFIG, as is a value of
//!   the wrong type;
//! - manual `assignments`: INVALID_REQUEST, not supported (the controller always places);
//! - replication_factor and num_partitions: -1 means the default, 0 or below -1 is
//!   INVALID_REPLICATION_FACTOR / INVALID_PARTITIONS, above 10 000 partitions
//!   INVALID_PARTITIONS; a min.insync.replicas above the replication factor INVALID_CONFIG.
//!
//! The defaults for -1 are `insync topic create`'s, 1 partition and replication factor 3
//! (Kafka's num.partitions is 1 too; its default.replication.factor is 1, but insync's point
//! is replication). The factor is not capped to the live brokers: as in Kafka, asking for
//! more replicas than there are usable brokers is INVALID_REPLICATION_FACTOR.
//!
//! `validate_only` (KIP-108) checks all of the above plus what this broker's metadata shows
//! (an existing name: TOPIC_ALREADY_EXISTS; a replication factor above the unfenced brokers
//! not shutting down: INVALID_REPLICATION_FACTOR) and creates nothing. It cannot see a topic
//! or broker change the controller committed but this broker has not received yet (the
//! metadata feed lags by milliseconds), nor a create racing it, nor the placement.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

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
use super::connection::{respond, PendingReply, RequestMeta};
use super::KafkaContext;

/// `insync topic create`'s defaults, used for -1 (Kafka num.partitions,
/// default.replication.factor).
pub(super) const DEFAULT_NUM_PARTITIONS: i32 = 1;
pub(super) const DEFAULT_REPLICATION_FACTOR: i32 = 3;

const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// Kafka `DescribeConfigsResponse.ConfigSource` values for the configs a v5+ answer lists.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

/// One topic of the request after the broker's checks.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Planned {
    /// What the controller is asked (min_insync_replicas 0 = the cluster default).
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

/// The checks the request alone allows, in Kafka's order, and the controller request.
pub(super) fn plan(topic: &CreatableTopic) -> Result<Planned, Refusal> {
    let name: &str = &topic.name.0;
    validate_topic_name(name).map_err(|r| Refusal::new(r.code, r.message))?;
    let (min_insync_replicas, unclean_leader_election_enable) = configs(topic)?;
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
    if let Some(min) = min_insync_replicas.filter(|min| *min > replication_factor) {
        return Err(Refusal::new(
            ErrorCode::INVALID_CONFIG,
            format!(
                "{MIN_INSYNC_REPLICAS} {min} must be between 1 and the replication factor {replication_factor}{}.",
                if default_replication_factor { " (-1: insync's default)" } else { "" }
            ),
        ));
    }
    Ok(Planned {
        request: pb::CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor,
            min_insync_replicas: min_insync_replicas.unwrap_or(0),
            unclean_leader_election_enable,
            // Fields the controller has beyond these (config overrides, its own
            // validate_only) keep their defaults: nothing else is accepted here yet.
            ..Default::default()
        },
        default_replication_factor,
    })
}

/// The two topic settings insync has, from the request's configs (a key given twice: the
/// last value, as Kafka's map keeps it).
fn configs(topic: &CreatableTopic) -> Result<(Option<i32>, bool), Refusal> {
    let nulls: Vec<&str> = topic.configs.iter().filter(|c| c.value.is_none()).map(|c| &*c.name).collect();
    if !nulls.is_empty() {
        let message = format!("Null value not supported for topic configs: {}", nulls.join(","));
        return Err(Refusal::new(ErrorCode::INVALID_CONFIG, message));
    }
    let (mut min_insync_replicas, mut unclean) = (None, false);
    for config in &topic.configs {
        let value = config.value.as_deref().unwrap_or_default().trim();
        match &*config.name {
            MIN_INSYNC_REPLICAS => match value.parse::<i32>() {
                Ok(min) if min >= 1 => min_insync_replicas = Some(min),
                Ok(_) => return Err(invalid_value(MIN_INSYNC_REPLICAS, value, "Value must be at least 1")),
                Err(_) => return Err(invalid_value(MIN_INSYNC_REPLICAS, value, "Not a number of type INT")),
            },
            // Kafka's ConfigDef BOOLEAN: "true" or "false", any case.
            UNCLEAN_LEADER_ELECTION_ENABLE => match value.to_ascii_lowercase().as_str() {
                "true" => unclean = true,
                "false" => unclean = false,
                _ => {
                    return Err(invalid_value(
                        UNCLEAN_LEADER_ELECTION_ENABLE,
                        value,
                        "Expected value to be either true or false",
                    ))
                }
            },
            other => {
                return Err(Refusal::new(
                    ErrorCode::INVALID_CONFIG,
                    format!(
                        "Unsupported topic config {other:?}: insync's Kafka listener accepts only \
                         {MIN_INSYNC_REPLICAS} and {UNCLEAN_LEADER_ELECTION_ENABLE} at creation."
                    ),
                ))
            }
        }
    }
    Ok((min_insync_replicas, unclean))
}

fn invalid_value(key: &str, value: &str, why: &str) -> Refusal {
    Refusal::new(ErrorCode::INVALID_CONFIG, format!("Invalid value {value} for configuration {key}: {why}"))
}

/// What `validate_only` checks against this broker's metadata, built once per request.
pub(super) struct MetadataView {
    topics: HashSet<String>,
    usable_brokers: usize,
    registered_brokers: usize,
}

impl MetadataView {
    pub fn new(metadata: &pb::ClusterMetadata) -> MetadataView {
        MetadataView {
            topics: metadata.topics.iter().map(|t| t.name.clone()).collect(),
            // The controller places replicas on unfenced brokers not shutting down.
            usable_brokers: metadata.brokers.iter().filter(|b| !b.fenced && !b.in_controlled_shutdown).count(),
            registered_brokers: metadata.brokers.len(),
        }
    }

    /// `plan` plus what this broker's metadata shows, in Kafka's order: an existing name
    /// before anything about configs or counts.
    pub fn check(&self, topic: &CreatableTopic) -> Result<Planned, Refusal> {
        let name: &str = &topic.name.0;
        validate_topic_name(name).map_err(|r| Refusal::new(r.code, r.message))?;
        if self.topics.contains(name) {
            return Err(Refusal::new(ErrorCode::TOPIC_ALREADY_EXISTS, format!("Topic '{name}' already exists.")));
        }
        let planned = plan(topic)?;
        let rf = planned.request.replication_factor;
        if usize::try_from(rf).unwrap_or(0) > self.usable_brokers {
            let message = format!(
                "Unable to replicate the partition {rf} time(s): only {} unfenced broker(s) are available (of {} \
                 registered){}.",
                self.usable_brokers,
                self.registered_brokers,
                if planned.default_replication_factor {
                    "; replication factor -1 means insync's default of 3"
                } else {
                    ""
                }
            );
            return Err(Refusal::new(ErrorCode::INVALID_REPLICATION_FACTOR, message));
        }
        Ok(planned)
    }
}

pub(super) fn handle(context: &Arc<KafkaContext>, meta: RequestMeta, request: CreateTopicsRequest) -> PendingReply {
    let budget = Budget::new(request.timeout_ms, Instant::now());
    if request.validate_only {
        let metadata = context.replica_manager.metadata();
        let view = MetadataView::new(&metadata);
        let topics = plan_all(&request.topics, |topic| view.check(topic))
            .into_iter()
            .map(|(name, outcome)| match outcome {
                Ok(planned) => validated(&planned, metadata.default_min_insync_replicas),
                Err(refusal) => refused(&name, &refusal),
            })
            .collect();
        return respond(meta, std::future::ready(CreateTopicsResponse::default().with_topics(topics)));
    }
    let planned = plan_all(&request.topics, plan);
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
    let mut outcomes: Vec<(String, Result<pb::TopicMetadata, Refusal>)> = Vec::with_capacity(planned.len());
    for (name, outcome) in planned {
        let created = match outcome {
            Err(refusal) => Err(refusal),
            Ok(_) if !budget.may_call() => Err(admin::out_of_time()),
            Ok(planned) => create_one(context, planned).await,
        };
        outcomes.push((name, created));
    }
    // Answer once this broker's metadata shows each new topic (by id: a delete and re-create
    // racing us is another topic) with a leader for every partition.
    let mut waiting: HashSet<&str> =
        outcomes.iter().filter_map(|(_, o)| o.as_ref().ok()).map(|t| t.topic_id.as_str()).collect();
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
    let default_min_isr = context.replica_manager.metadata().default_min_insync_replicas;
    outcomes
        .into_iter()
        .map(|(name, outcome)| match outcome {
            Ok(topic) => result(&topic, default_min_isr),
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
            info!("created topic {} for a Kafka client ({} partition(s))", topic.name, topic.partitions.len());
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

/// A created topic's answer: v5+ carry its partitions, replication factor and configs, v7
/// its id (KIP-516).
pub(super) fn result(topic: &pb::TopicMetadata, default_min_isr: i32) -> CreatableTopicResult {
    let replication_factor = topic.partitions.first().map_or(0, |p| p.replicas.len());
    CreatableTopicResult::default()
        .with_name(topic_name(&topic.name))
        .with_topic_id(uuid::Uuid::parse_str(&topic.topic_id).unwrap_or(uuid::Uuid::nil()))
        .with_error_code(0)
        .with_error_message(None)
        .with_num_partitions(i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX))
        .with_replication_factor(i16::try_from(replication_factor).unwrap_or(i16::MAX))
        .with_configs(Some(topic_configs(
            topic.min_insync_replicas,
            topic.unclean_leader_election_enable,
            default_min_isr,
        )))
}

/// A validate_only success: what would be created, without an id (none is chosen).
pub(super) fn validated(planned: &Planned, default_min_isr: i32) -> CreatableTopicResult {
    let request = &planned.request;
    CreatableTopicResult::default()
        .with_name(topic_name(&request.name))
        .with_error_code(0)
        .with_error_message(None)
        .with_num_partitions(request.partitions)
        .with_replication_factor(i16::try_from(request.replication_factor).unwrap_or(i16::MAX))
        .with_configs(Some(topic_configs(
            request.min_insync_replicas,
            request.unclean_leader_election_enable,
            default_min_isr,
        )))
}

/// The topic's two settings as Kafka's config entries (KIP-525), sorted by name as Kafka
/// sorts them: an override is DYNAMIC_TOPIC_CONFIG, the cluster's min.insync.replicas
/// (a node flag) STATIC_BROKER_CONFIG, unclean election's built-in false DEFAULT_CONFIG.
fn topic_configs(min_insync_replicas: i32, unclean: bool, default_min_isr: i32) -> Vec<CreatableTopicConfigs> {
    let entry = |name: &'static str, value: String, source: i8| {
        CreatableTopicConfigs::default()
            .with_name(StrBytes::from_static_str(name))
            .with_value(Some(StrBytes::from_string(value)))
            .with_read_only(false)
            .with_config_source(source)
            .with_is_sensitive(false)
    };
    let (min, min_source) = if min_insync_replicas > 0 {
        (min_insync_replicas, DYNAMIC_TOPIC_CONFIG)
    } else {
        (default_min_isr.max(1), STATIC_BROKER_CONFIG)
    };
    vec![
        entry(MIN_INSYNC_REPLICAS, min.to_string(), min_source),
        entry(
            UNCLEAN_LEADER_ELECTION_ENABLE,
            unclean.to_string(),
            if unclean { DYNAMIC_TOPIC_CONFIG } else { DEFAULT_CONFIG },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopicConfig};
    use kafka_protocol::messages::BrokerId;
    use kafka_protocol::protocol::Encodable;

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

    #[test]
    fn maps_onto_the_controllers_create_topic_with_insyncs_defaults() {
        let planned = plan(&topic("orders", -1, -1)).unwrap();
        assert_eq!(
            planned.request,
            pb::CreateTopicRequest {
                name: "orders".into(),
                partitions: 1,
                replication_factor: 3,
                min_insync_replicas: 0,
                unclean_leader_election_enable: false,
                ..Default::default()
            }
        );
        assert!(planned.default_replication_factor);
        let t = with_config(
            with_config(topic("p", 6, 2), "min.insync.replicas", Some("2")),
            "unclean.leader.election.enable",
            Some("TRUE"),
        );
        let planned = plan(&t).unwrap();
        assert_eq!((planned.request.partitions, planned.request.replication_factor), (6, 2));
        assert_eq!((planned.request.min_insync_replicas, planned.request.unclean_leader_election_enable), (2, true));
        assert!(!planned.default_replication_factor);
    }

    #[test]
    fn refuses_with_kafkas_codes_in_kafkas_order() {
        assert_eq!(code(&plan(&topic("bad name", 1, 1))), 17, "INVALID_TOPIC_EXCEPTION");
        assert_eq!(code(&plan(&topic("..", 1, 1))), 17);
        assert_eq!(code(&plan(&topic(&"x".repeat(250), 1, 1))), 17);
        assert_eq!(code(&plan(&topic("t", 0, 1))), 37, "INVALID_PARTITIONS");
        assert_eq!(code(&plan(&topic("t", -2, 1))), 37);
        assert_eq!(code(&plan(&topic("t", MAX_PARTITIONS_PER_TOPIC + 1, 1))), 37);
        assert_eq!(code(&plan(&topic("t", 1, 0))), 38, "INVALID_REPLICATION_FACTOR");
        assert_eq!(code(&plan(&topic("t", 1, -3))), 38);
        // The name comes first, then configs, then the counts.
        assert_eq!(code(&plan(&with_config(topic("bad name", 0, 0), "x", Some("1")))), 17);
        assert_eq!(code(&plan(&with_config(topic("t", 0, 0), "retention.ms", Some("1")))), 40);
    }

    #[test]
    fn only_the_two_topic_settings_are_accepted_as_configs() {
        let unknown = plan(&with_config(topic("t", 1, 1), "cleanup.policy", Some("compact"))).unwrap_err();
        assert_eq!(unknown.code, 40, "INVALID_CONFIG");
        assert!(unknown.message.contains("cleanup.policy") && unknown.message.contains("min.insync.replicas"));
        let null = plan(&with_config(topic("t", 1, 1), "min.insync.replicas", None)).unwrap_err();
        assert_eq!(
            (null.code, null.message.as_str()),
            (40, "Null value not supported for topic configs: min.insync.replicas")
        );
        for bad in ["zero", "0", "-1", ""] {
            let refusal = plan(&with_config(topic("t", 1, 3), "min.insync.replicas", Some(bad))).unwrap_err();
            assert_eq!(refusal.code, 40, "{bad:?}");
        }
        let above_rf = plan(&with_config(topic("t", 1, 2), "min.insync.replicas", Some("3"))).unwrap_err();
        assert_eq!(above_rf.code, 40);
        assert!(above_rf.message.contains("replication factor 2"), "{}", above_rf.message);
        let bad_bool = plan(&with_config(topic("t", 1, 1), "unclean.leader.election.enable", Some("yes"))).unwrap_err();
        assert_eq!(bad_bool.code, 40);
        // A key given twice: the last value counts, as in Kafka's map.
        let twice = with_config(
            with_config(topic("t", 1, 3), "min.insync.replicas", Some("1")),
            "min.insync.replicas",
            Some("2"),
        );
        assert_eq!(plan(&twice).unwrap().request.min_insync_replicas, 2);
    }

    #[test]
    fn manual_assignments_are_an_invalid_request() {
        let t = topic("t", -1, -1).with_assignments(vec![CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(vec![BrokerId(1)])]);
        let refusal = plan(&t).unwrap_err();
        assert_eq!(refusal.code, 42, "INVALID_REQUEST");
        assert!(refusal.message.contains("not supported"), "{}", refusal.message);
    }

    #[test]
    fn a_duplicated_name_is_refused_once_and_never_created() {
        let topics =
            vec![topic("a", 1, 1), topic("dup", 1, 1), topic("b", 1, 1), topic("dup", 2, 1), topic("dup", 3, 1)];
        let planned = plan_all(&topics, plan);
        let names: Vec<&str> = planned.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "dup", "b"]);
        assert_eq!(planned[1].1, Err(Refusal::new(ErrorCode::INVALID_REQUEST, "Duplicate topic name.")));
        assert!(planned[0].1.is_ok() && planned[2].1.is_ok());
    }

    fn metadata() -> pb::ClusterMetadata {
        let broker = |id: i32, fenced: bool, in_controlled_shutdown: bool| pb::BrokerMetadata {
            id,
            fenced,
            in_controlled_shutdown,
            ..Default::default()
        };
        pb::ClusterMetadata {
            brokers: vec![
                broker(1, false, false),
                broker(2, false, false),
                broker(3, true, false),
                broker(4, false, true),
            ],
            topics: vec![pb::TopicMetadata { name: "taken".into(), ..Default::default() }],
            default_min_insync_replicas: 1,
            ..Default::default()
        }
    }

    #[test]
    fn validate_only_checks_existing_names_and_usable_brokers() {
        let view = MetadataView::new(&metadata());
        let check = |t: CreatableTopic| view.check(&t);
        assert_eq!(check(topic("taken", 0, 0)).unwrap_err().code, 36, "TOPIC_ALREADY_EXISTS before the counts");
        assert_eq!(check(topic("new", 3, 2)).unwrap().request.replication_factor, 2);
        let too_many = check(topic("new", 1, 3)).unwrap_err();
        assert_eq!(too_many.code, 38, "brokers 3 (fenced) and 4 (shutting down) cannot take replicas");
        assert!(too_many.message.contains("only 2 unfenced broker(s)"), "{}", too_many.message);
        let default_rf = check(topic("new", -1, -1)).unwrap_err();
        assert!(default_rf.message.contains("insync's default of 3"), "{}", default_rf.message);
        assert_eq!(check(topic("bad name", 1, 1)).unwrap_err().code, 17);
    }

    #[test]
    fn answers_carry_id_counts_and_configs() {
        let created = pb::TopicMetadata {
            name: "orders".into(),
            topic_id: "0b7c2a1e-6f0e-4a53-9a52-8ef4d1a0c001".into(),
            partitions: vec![
                pb::PartitionMetadata { partition: 0, replicas: vec![1, 2, 3], ..Default::default() },
                pb::PartitionMetadata { partition: 1, replicas: vec![2, 3, 1], ..Default::default() },
            ],
            min_insync_replicas: 2,
            ..Default::default()
        };
        let r = result(&created, 1);
        assert_eq!((r.error_code, r.num_partitions, r.replication_factor), (0, 2, 3));
        assert_eq!(r.topic_id.to_string(), "0b7c2a1e-6f0e-4a53-9a52-8ef4d1a0c001");
        assert_eq!(r.error_message, None);
        let configs = r.configs.clone().unwrap();
        let shown: Vec<(String, String, i8)> = configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_deref().unwrap_or_default().to_string(), c.config_source))
            .collect();
        assert_eq!(
            shown,
            [
                ("min.insync.replicas".into(), "2".into(), 1),
                ("unclean.leader.election.enable".into(), "false".into(), 5)
            ]
        );
        let planned = plan(&topic("x", -1, -1)).unwrap();
        let v = validated(&planned, 2);
        assert_eq!((v.num_partitions, v.replication_factor, v.topic_id), (1, 3, uuid::Uuid::nil()));
        assert_eq!(v.configs.unwrap()[0].value.as_deref(), Some("2"), "the cluster default, as a broker config");
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
