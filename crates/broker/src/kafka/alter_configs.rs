//! AlterConfigs (API 33, v0–2, legacy: the entries replace every override of the resource)
//! and IncrementalAlterConfigs (API 44, v0–1, KIP-339: SET and DELETE per entry), Kafka
//! `ConfigAdminManager.preprocess` on the broker then `ConfigurationControlManager` on the
//! controller. A TOPIC resource becomes one gRPC `AlterTopicConfigs` to the active controller
//! (the call `insync topic alter` makes; legacy AlterConfigs with `replace`), which validates
//! against the catalogue (`insync_types::topic_config`): an unknown key or a bad value is
//! INVALID_CONFIG naming it, an unknown topic UNKNOWN_TOPIC_OR_PARTITION, the internal topic
//! `__consumer_offsets` INVALID_REQUEST (its configs are the brokers', `internal_topics` in
//! the controller: retention there would delete committed offsets). `validate_only`
//! runs the same checks on the controller and changes nothing. The answer waits until this
//! broker's metadata shows the new overrides, as the other admin APIs do (`admin.rs`).
//!
//! Checked here first, in Kafka's order, per resource:
//! - a resource (type and name) given twice: INVALID_REQUEST "Each resource must appear at
//!   most once." for each, none changed;
//! - a key given twice in one resource: INVALID_REQUEST "Error due to duplicate config keys";
//! - a null value (legacy: any; incremental: other than DELETE): INVALID_REQUEST;
//! - BROKER (4): a name other than this broker's id or empty is INVALID_REQUEST, worded as
//!   Kafka; otherwise INVALID_REQUEST too, as Kafka refuses a config that cannot change at run
//!   time: insync has no dynamic broker configs (its settings are flags);
//! - any type other than TOPIC and BROKER: INVALID_REQUEST "Unknown resource type";
//! - incremental operations: SET (0) and DELETE (1) map onto set and delete; APPEND (2) and
//!   SUBTRACT (3) only apply to LIST configs, and no insync topic config is one:
//!   INVALID_CONFIG "Can't APPEND to key K because its type is not LIST." as Kafka's
//!   controller; another number INVALID_REQUEST.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use insync_proto as pb;
use insync_types::ErrorCode;
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest, AlterConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;
use tracing::{info, warn};

use super::admin::{self, wire_code, Budget, Refusal};
use super::configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::connection::{respond, PendingReply, RequestMeta};
use super::describe_configs::{check_broker_id, resource_counts, DUPLICATE_RESOURCE};
use super::KafkaContext;

/// Kafka `AlterConfigOp.OpType`.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// The alter APIs carry no timeout: the answer waits for this broker's metadata this long
/// at most (Kafka clients' default request timeout).
const ALTER_TIMEOUT_MS: i32 = 30_000;

/// One config entry of a resource: name, operation (legacy: SET), value.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry<'a> {
    pub name: &'a str,
    pub op: i8,
    pub value: Option<&'a str>,
}

/// One resource of the request.
#[derive(Debug, Clone)]
pub(super) struct Resource<'a> {
    pub resource_type: i8,
    pub name: &'a str,
    pub entries: Vec<Entry<'a>>,
}

/// A resource after the broker's checks: a controller call, or the answer.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    Alter(pb::AlterTopicConfigsRequest),
    Answer(Refusal),
}

/// Maps every resource (in request order) onto a step. `legacy`: AlterConfigs, whose entries
/// replace all overrides.
pub(super) fn plan(resources: &[Resource], legacy: bool, validate_only: bool, broker_id: i32) -> Vec<Step> {
    let counts = resource_counts(resources.iter().map(|r| (r.resource_type, r.name)));
    resources
        .iter()
        .map(|resource| {
            if counts.get(&(resource.resource_type, resource.name)).copied().unwrap_or(0) > 1 {
                return Step::Answer(Refusal::new(ErrorCode::INVALID_REQUEST, DUPLICATE_RESOURCE));
            }
            match plan_one(resource, legacy, validate_only, broker_id) {
                Ok(request) => Step::Alter(request),
                Err(refusal) => Step::Answer(refusal),
            }
        })
        .collect()
}

fn plan_one(
    resource: &Resource,
    legacy: bool,
    validate_only: bool,
    broker_id: i32,
) -> Result<pb::AlterTopicConfigsRequest, Refusal> {
    let mut names: HashSet<&str> = HashSet::with_capacity(resource.entries.len());
    if !resource.entries.iter().all(|e| names.insert(e.name)) {
        return Err(Refusal::new(ErrorCode::INVALID_REQUEST, "Error due to duplicate config keys"));
    }
    let nulls: Vec<&str> = resource
        .entries
        .iter()
        .filter(|e| e.value.is_none() && (legacy || e.op != OP_DELETE))
        .map(|e| e.name)
        .collect();
    if !nulls.is_empty() {
        return Err(Refusal::new(
            ErrorCode::INVALID_REQUEST,
            format!("Null value not supported for : {}", nulls.join(", ")),
        ));
    }
    match resource.resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => {
            if !resource.name.is_empty() {
                check_broker_id(resource.name, broker_id, "")?;
            }
            return Err(Refusal::new(
                ErrorCode::INVALID_REQUEST,
                "insync has no dynamic broker configs: broker settings are flags (--log-retention-ms, \
                 --message-max-bytes, ...) read at start-up; change them and restart the broker, or alter the \
                 topic's configs instead",
            ));
        }
        other => return Err(Refusal::new(ErrorCode::INVALID_REQUEST, format!("Unknown resource type {other}"))),
    }
    let mut request = pb::AlterTopicConfigsRequest {
        name: resource.name.to_string(),
        replace: legacy,
        validate_only,
        ..Default::default()
    };
    for entry in &resource.entries {
        match entry.op {
            OP_SET => {
                request.set.insert(entry.name.to_string(), entry.value.unwrap_or_default().to_string());
            }
            OP_DELETE => request.delete.push(entry.name.to_string()),
            op @ (OP_APPEND | OP_SUBTRACT) => {
                let verb = if op == OP_APPEND { "APPEND" } else { "SUBTRACT" };
                return Err(Refusal::new(
                    ErrorCode::INVALID_CONFIG,
                    format!("Can't {verb} to key {} because its type is not LIST.", entry.name),
                ));
            }
            other => return Err(Refusal::new(ErrorCode::INVALID_REQUEST, format!("Unknown operations type {other}"))),
        }
    }
    Ok(request)
}

/// The outcome of each resource, in request order: (type, name, outcome).
type Outcomes = Vec<(i8, StrBytes, Result<(), Refusal>)>;

pub(super) fn handle_legacy(
    context: &Arc<KafkaContext>,
    meta: RequestMeta,
    request: AlterConfigsRequest,
) -> PendingReply {
    let resources: Vec<Resource> = request
        .resources
        .iter()
        .map(|r| Resource {
            resource_type: r.resource_type,
            name: &r.resource_name,
            entries: r.configs.iter().map(|c| Entry { name: &c.name, op: OP_SET, value: c.value.as_deref() }).collect(),
        })
        .collect();
    let steps = plan(&resources, true, request.validate_only, context.replica_manager.broker_id);
    let keys: Vec<(i8, StrBytes)> =
        request.resources.iter().map(|r| (r.resource_type, r.resource_name.clone())).collect();
    let context = context.clone();
    respond(meta, async move {
        let responses = run(&context, keys, steps)
            .await
            .into_iter()
            .map(|(resource_type, name, outcome)| {
                let refusal = outcome.err();
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(name)
                    .with_error_code(refusal.as_ref().map_or(0, |r| r.code))
                    .with_error_message(refusal.as_ref().and_then(Refusal::message))
            })
            .collect();
        AlterConfigsResponse::default().with_responses(responses)
    })
}

pub(super) fn handle_incremental(
    context: &Arc<KafkaContext>,
    meta: RequestMeta,
    request: IncrementalAlterConfigsRequest,
) -> PendingReply {
    let resources: Vec<Resource> = request
        .resources
        .iter()
        .map(|r| Resource {
            resource_type: r.resource_type,
            name: &r.resource_name,
            entries: r
                .configs
                .iter()
                .map(|c| Entry { name: &c.name, op: c.config_operation, value: c.value.as_deref() })
                .collect(),
        })
        .collect();
    let steps = plan(&resources, false, request.validate_only, context.replica_manager.broker_id);
    let keys: Vec<(i8, StrBytes)> =
        request.resources.iter().map(|r| (r.resource_type, r.resource_name.clone())).collect();
    let context = context.clone();
    respond(meta, async move {
        let responses = run(&context, keys, steps)
            .await
            .into_iter()
            .map(|(resource_type, name, outcome)| {
                let refusal = outcome.err();
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(name)
                    .with_error_code(refusal.as_ref().map_or(0, |r| r.code))
                    .with_error_message(refusal.as_ref().and_then(Refusal::message))
            })
            .collect();
        IncrementalAlterConfigsResponse::default().with_responses(responses)
    })
}

/// Forwards the alters one at a time, then waits until this broker's metadata shows each
/// topic's new overrides (by id; a topic deleted meanwhile ends the wait for it).
async fn run(context: &KafkaContext, keys: Vec<(i8, StrBytes)>, steps: Vec<Step>) -> Outcomes {
    let budget = Budget::new(ALTER_TIMEOUT_MS, Instant::now());
    let mut outcomes: Outcomes = Vec::with_capacity(steps.len());
    let mut waiting: HashMap<String, HashMap<String, String>> = HashMap::new();
    for ((resource_type, name), step) in keys.into_iter().zip(steps) {
        let outcome = match step {
            Step::Answer(refusal) => Err(refusal),
            Step::Alter(_) if !budget.may_call() => Err(admin::out_of_time()),
            Step::Alter(request) => {
                let validate_only = request.validate_only;
                alter_one(context, request).await.map(|topic| {
                    if !validate_only {
                        waiting.insert(topic.topic_id, topic.configs);
                    }
                })
            }
        };
        outcomes.push((resource_type, name, outcome));
    }
    let shown = admin::until_metadata(&context.replica_manager, budget.metadata_until, |metadata| {
        let present: HashMap<&str, &pb::TopicMetadata> =
            metadata.topics.iter().map(|t| (t.topic_id.as_str(), t)).collect();
        waiting.retain(|id, configs| present.get(id.as_str()).is_some_and(|t| t.configs != *configs));
        waiting.is_empty()
    })
    .await;
    if !shown {
        info!("alter configs from a Kafka client: answering before this broker's metadata shows every change");
    }
    outcomes
}

async fn alter_one(
    context: &KafkaContext,
    request: pb::AlterTopicConfigsRequest,
) -> Result<pb::TopicMetadata, Refusal> {
    let reply = admin::forward(&context.link, |mut c| {
        let r = request.clone();
        async move { c.alter_topic_configs(r).await }
    })
    .await?;
    if reply.error_code != 0 {
        return Err(Refusal { code: wire_code(reply.error_code), message: reply.error_message });
    }
    match reply.topic {
        Some(topic) => {
            if !request.validate_only {
                info!("altered the configs of topic {} for a Kafka client", topic.name);
            }
            Ok(topic)
        }
        None => {
            warn!("the controller altered topic {} but sent no metadata for it", request.name);
            Err(Refusal::new(ErrorCode::UNKNOWN_SERVER_ERROR, "the controller answered without the topic"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &'static str, op: i8, value: Option<&'static str>) -> Entry<'static> {
        Entry { name, op, value }
    }

    fn resource(resource_type: i8, name: &'static str, entries: Vec<Entry<'static>>) -> Resource<'static> {
        Resource { resource_type, name, entries }
    }

    fn refusal(step: &Step) -> Option<(i16, String)> {
        match step {
            Step::Answer(r) => Some((r.code, r.message.clone())),
            Step::Alter(_) => None,
        }
    }

    #[test]
    fn set_and_delete_map_onto_the_controllers_change() {
        let steps = plan(
            &[resource(
                2,
                "orders",
                vec![entry("retention.ms", OP_SET, Some("60000")), entry("segment.bytes", OP_DELETE, None)],
            )],
            false,
            true,
            1,
        );
        let Step::Alter(request) = &steps[0] else { panic!("{steps:?}") };
        assert_eq!(request.name, "orders");
        assert_eq!(request.set.get("retention.ms").map(String::as_str), Some("60000"));
        assert_eq!(request.delete, ["segment.bytes"]);
        assert!(request.validate_only && !request.replace);
        let legacy = plan(&[resource(2, "orders", vec![entry("retention.ms", OP_SET, Some("1"))])], true, false, 1);
        let Step::Alter(request) = &legacy[0] else { panic!("{legacy:?}") };
        assert!(request.replace, "legacy AlterConfigs replaces every override");
    }

    #[test]
    fn refusals_follow_kafkas_order_and_codes() {
        let steps = plan(
            &[
                resource(2, "dup", vec![]),
                resource(2, "dup", vec![]),
                resource(2, "keys", vec![entry("a", OP_SET, Some("1")), entry("a", OP_DELETE, None)]),
                resource(2, "null", vec![entry("retention.ms", OP_SET, None)]),
                resource(2, "append", vec![entry("cleanup.policy", OP_APPEND, Some("delete"))]),
                resource(2, "odd", vec![entry("retention.ms", 9, Some("1"))]),
                resource(4, "1", vec![entry("log.retention.ms", OP_SET, Some("1"))]),
                resource(4, "5", vec![]),
                resource(8, "1", vec![]),
            ],
            false,
            false,
            1,
        );
        let codes: Vec<i16> = steps.iter().map(|s| refusal(s).map_or(0, |r| r.0)).collect();
        assert_eq!(codes, [42, 42, 42, 42, 40, 42, 42, 42, 42]);
        assert_eq!(refusal(&steps[0]).unwrap().1, DUPLICATE_RESOURCE);
        assert_eq!(refusal(&steps[2]).unwrap().1, "Error due to duplicate config keys");
        assert_eq!(refusal(&steps[3]).unwrap().1, "Null value not supported for : retention.ms");
        assert_eq!(refusal(&steps[4]).unwrap().1, "Can't APPEND to key cleanup.policy because its type is not LIST.");
        assert!(refusal(&steps[6]).unwrap().1.contains("no dynamic broker configs"));
        assert_eq!(refusal(&steps[7]).unwrap().1, "Unexpected broker id, expected 1, but received 5");
        // Legacy: a null value is refused whatever the operation.
        let legacy = plan(&[resource(2, "t", vec![entry("retention.ms", OP_SET, None)])], true, false, 1);
        assert_eq!(refusal(&legacy[0]).map(|r| r.0), Some(42));
        // The same name as TOPIC and BROKER is two resources.
        let both = plan(&[resource(2, "1", vec![]), resource(4, "1", vec![])], false, false, 1);
        assert!(matches!(both[0], Step::Alter(_)));
    }
}
