//! DescribeConfigs (API 32, v1–4; Kafka `ConfigHelper.describeConfigs`): answered from this
//! broker's copy of the metadata and its own flags, as a Kafka broker answers it from its
//! metadata cache and `KafkaConfig` (`configs.rs` describes the values).
//!
//! - TOPIC (2): every catalogue config, its override (DYNAMIC_TOPIC_CONFIG) or this broker's
//!   default (STATIC_BROKER_CONFIG for a flag, DEFAULT_CONFIG otherwise), with synonyms when
//!   asked (the override, then the broker setting) and documentation from v3. An illegal name
//!   is INVALID_TOPIC_EXCEPTION, an unknown topic UNKNOWN_TOPIC_OR_PARTITION.
//! - BROKER (4): this broker's id gives its settings, read-only; the empty name (the
//!   cluster-wide dynamic defaults) gives none, since insync has no dynamic broker configs;
//!   another id or a name that is not a number is INVALID_REQUEST, worded as Kafka.
//! - Any other type (BROKER_LOGGER, CLIENT_METRICS, GROUP...): INVALID_REQUEST.
//!
//! `configuration_keys` null or empty means every config, as in Kafka. A resource (type and
//! name) given twice is INVALID_REQUEST for each (Kafka answers both): the answer is then
//! bounded by the cluster's topics, not by how often a request repeats a name.
use std::collections::HashMap;
use std::sync::Arc;

use insync_controller::rules::validate_topic_name;
use insync_proto as pb;
use insync_types::ErrorCode;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::admin::Refusal;
use super::configs::{self, BrokerDefaults, Described, RESOURCE_BROKER, RESOURCE_TOPIC};
use super::connection::{respond_now, PendingReply, RequestMeta};
use super::KafkaContext;

/// The message of a resource named twice (Kafka's, for the alter APIs).
pub(super) const DUPLICATE_RESOURCE: &str = "Each resource must appear at most once.";

pub(super) fn handle(context: &Arc<KafkaContext>, meta: RequestMeta, request: DescribeConfigsRequest) -> PendingReply {
    let metadata = context.replica_manager.metadata();
    let defaults = BrokerDefaults::of(context.replica_manager.broker_id, &context.replica_manager.config);
    respond_now(meta, response(&request, &metadata, &defaults))
}

/// How many times each (type, name) appears in `resources`.
pub(super) fn resource_counts<'a>(resources: impl Iterator<Item = (i8, &'a str)>) -> HashMap<(i8, &'a str), usize> {
    let mut counts: HashMap<(i8, &str), usize> = HashMap::new();
    for key in resources {
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// The answer from a metadata snapshot and this broker's defaults, one result per resource
/// in request order.
pub(super) fn response(
    request: &DescribeConfigsRequest,
    metadata: &pb::ClusterMetadata,
    defaults: &BrokerDefaults,
) -> DescribeConfigsResponse {
    let counts = resource_counts(request.resources.iter().map(|r| (r.resource_type, &*r.resource_name)));
    let topics: HashMap<&str, &pb::TopicMetadata> = metadata.topics.iter().map(|t| (t.name.as_str(), t)).collect();
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let duplicated = counts.get(&(resource.resource_type, &*resource.resource_name)).copied().unwrap_or(0) > 1;
            let outcome = if duplicated {
                Err(Refusal::new(ErrorCode::INVALID_REQUEST, DUPLICATE_RESOURCE))
            } else {
                describe(resource, &topics, defaults)
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match outcome {
                Ok(described) => result.with_error_code(0).with_error_message(None).with_configs(
                    described
                        .into_iter()
                        .filter(|d| wanted(resource, &d.name))
                        .map(|d| entry(d, request.include_synonyms, request.include_documentation))
                        .collect(),
                ),
                Err(refusal) => result.with_error_code(refusal.code).with_error_message(refusal.message()),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Whether the resource's `configuration_keys` (null or empty: all) ask for `name`.
fn wanted(resource: &DescribeConfigsResource, name: &str) -> bool {
    match &resource.configuration_keys {
        Some(keys) if !keys.is_empty() => keys.iter().any(|k| &**k == name),
        _ => true,
    }
}

/// One resource's configs, or Kafka's refusal.
fn describe(
    resource: &DescribeConfigsResource,
    topics: &HashMap<&str, &pb::TopicMetadata>,
    defaults: &BrokerDefaults,
) -> Result<Vec<Described>, Refusal> {
    let name: &str = &resource.resource_name;
    match resource.resource_type {
        RESOURCE_TOPIC => {
            validate_topic_name(name).map_err(|r| Refusal::new(r.code, r.message))?;
            match topics.get(name) {
                Some(topic) => Ok(configs::topic_configs(&topic.configs, defaults)),
                None => Err(Refusal::new(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("The topic '{name}' does not exist."),
                )),
            }
        }
        RESOURCE_BROKER => {
            // The empty name: the cluster-wide dynamic defaults, of which insync has none.
            if name.is_empty() {
                return Ok(Vec::new());
            }
            check_broker_id(name, defaults.broker_id, " or empty string")?;
            Ok(defaults.broker_configs())
        }
        other => Err(Refusal::new(
            ErrorCode::INVALID_REQUEST,
            format!("Unsupported resource type: {other} (insync describes TOPIC (2) and BROKER (4) configs)"),
        )),
    }
}

/// A BROKER resource must name this broker (Kafka `resourceNameToBrokerId`).
pub(super) fn check_broker_id(name: &str, broker_id: i32, or_empty: &str) -> Result<(), Refusal> {
    let Ok(id) = name.parse::<i32>() else {
        return Err(Refusal::new(
            ErrorCode::INVALID_REQUEST,
            format!("Broker id must be an integer, but it is: {name}"),
        ));
    };
    if id != broker_id {
        return Err(Refusal::new(
            ErrorCode::INVALID_REQUEST,
            format!("Unexpected broker id, expected {broker_id}{or_empty}, but received {name}"),
        ));
    }
    Ok(())
}

fn entry(d: Described, include_synonyms: bool, include_documentation: bool) -> DescribeConfigsResourceResult {
    let synonyms = if include_synonyms {
        d.synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(name))
                    .with_value(Some(StrBytes::from_string(value)))
                    .with_source(source)
            })
            .collect()
    } else {
        Vec::new()
    };
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(d.name))
        .with_value(Some(StrBytes::from_string(d.value)))
        .with_read_only(d.read_only)
        .with_config_source(d.source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms)
        .with_config_type(d.config_type)
        .with_documentation(include_documentation.then(|| StrBytes::from_static_str(d.documentation)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::configs::tests::defaults;
    use kafka_protocol::protocol::Encodable;

    fn resource(kind: i8, name: &str, keys: Option<&[&str]>) -> DescribeConfigsResource {
        DescribeConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(StrBytes::from_string(name.into()))
            .with_configuration_keys(keys.map(|k| k.iter().map(|k| StrBytes::from_string(k.to_string())).collect()))
    }

    fn metadata() -> pb::ClusterMetadata {
        pb::ClusterMetadata {
            topics: vec![pb::TopicMetadata {
                name: "orders".into(),
                configs: [("retention.ms".to_string(), "60000".to_string())].into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn answer(resources: Vec<DescribeConfigsResource>, synonyms: bool) -> DescribeConfigsResponse {
        let request = DescribeConfigsRequest::default().with_resources(resources).with_include_synonyms(synonyms);
        response(&request, &metadata(), &defaults())
    }

    #[test]
    fn a_topic_shows_overrides_and_broker_defaults() {
        let r = answer(vec![resource(2, "orders", None)], true);
        let result = &r.results[0];
        assert_eq!((result.error_code, result.resource_type, &*result.resource_name), (0, 2, "orders"));
        let find = |n: &str| result.configs.iter().find(|c| &*c.name == n).unwrap();
        let retention = find("retention.ms");
        assert_eq!((retention.value.as_deref(), retention.config_source), (Some("60000"), 1));
        assert_eq!(retention.synonyms.len(), 2);
        assert_eq!(&*retention.synonyms[1].name, "log.retention.ms");
        assert_eq!((find("segment.bytes").config_source, find("cleanup.policy").config_source), (4, 5));
        let filtered = answer(vec![resource(2, "orders", Some(&["segment.ms", "nope"]))], false);
        let names: Vec<&str> = filtered.results[0].configs.iter().map(|c| &*c.name).collect();
        assert_eq!(names, ["segment.ms"]);
        assert!(filtered.results[0].configs[0].synonyms.is_empty(), "no synonyms unless asked");
        let all = answer(vec![resource(2, "orders", Some(&[]))], false);
        assert_eq!(all.results[0].configs.len(), insync_types::topic_config::TOPIC_CONFIGS.len(), "empty: all");
    }

    #[test]
    fn refusals_per_resource_with_kafkas_codes() {
        let r = answer(
            vec![
                resource(2, "missing", None),
                resource(2, "bad name", None),
                resource(4, "2", Some(&["log.retention.ms"])),
                resource(4, "", None),
                resource(4, "7", None),
                resource(4, "x", None),
                resource(8, "2", None),
                resource(2, "orders", None),
                resource(2, "orders", Some(&["retention.ms"])),
            ],
            false,
        );
        let codes: Vec<i16> = r.results.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, [3, 17, 0, 0, 42, 42, 42, 42, 42]);
        assert_eq!(r.results[2].configs.len(), 1);
        let broker = &r.results[2].configs[0];
        assert_eq!((broker.value.as_deref(), broker.read_only, broker.config_source), (Some("604800000"), true, 4));
        assert!(r.results[3].configs.is_empty(), "no dynamic cluster defaults");
        assert_eq!(
            r.results[4].error_message.as_deref(),
            Some("Unexpected broker id, expected 2 or empty string, but received 7")
        );
        assert_eq!(r.results[7].error_message.as_deref(), Some(DUPLICATE_RESOURCE));
        for version in 1..=4 {
            let mut buf = bytes::BytesMut::new();
            r.encode(&mut buf, version).unwrap_or_else(|e| panic!("v{version}: {e}"));
        }
    }
}
