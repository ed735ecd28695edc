//! Topic and broker configs as Kafka's admin answers describe them (Kafka `ConfigHelper`,
//! `KafkaConfigSchema`): shared by CreateTopics v5+ (KIP-525: every config of the new topic)
//! and DescribeConfigs. A topic config's value is its override (DYNAMIC_TOPIC_CONFIG) or the
//! default of the broker answering: its flag (`--log-retention-ms` ...,
//! STATIC_BROKER_CONFIG) or, for settings without a flag (cleanup.policy, compression.type,
//! unclean leader election), the built-in default (DEFAULT_CONFIG). The catalogue is
//! `insync_types::topic_config`; broker settings are read-only (no dynamic broker configs).
use std::collections::HashMap;

use insync_types::topic_config::{self, ConfigDef, ConfigType, TOPIC_CONFIGS};

use crate::config::BrokerArgs;

/// Kafka `DescribeConfigsResponse.ConfigSource`.
pub(super) const DYNAMIC_TOPIC_CONFIG: i8 = 1;
pub(super) const STATIC_BROKER_CONFIG: i8 = 4;
pub(super) const DEFAULT_CONFIG: i8 = 5;

/// Kafka `ConfigResource.Type`.
pub(super) const RESOURCE_TOPIC: i8 = 2;
pub(super) const RESOURCE_BROKER: i8 = 4;

/// Kafka `DescribeConfigsResponse.ConfigType`.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

/// The built-in defaults of the topic settings no broker flag sets (Kafka's
/// log.cleanup.policy and unclean.leader.election.enable defaults).
const DEFAULT_CLEANUP_POLICY: &str = "delete";
const DEFAULT_UNCLEAN_LEADER_ELECTION: &str = "false";

/// The broker settings behind the topic defaults, read from this broker's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BrokerDefaults {
    pub broker_id: i32,
    pub min_insync_replicas: i32,
    pub message_max_bytes: i64,
    pub log_segment_bytes: i64,
    pub log_roll_ms: i64,
    pub log_retention_ms: i64,
    pub log_retention_bytes: i64,
}

/// One config as described: name, value, where the value comes from, and the synonyms
/// (the override, then the broker setting behind the default) for `include_synonyms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Described {
    pub name: String,
    pub value: String,
    pub source: i8,
    pub read_only: bool,
    pub config_type: i8,
    pub documentation: &'static str,
    pub synonyms: Vec<(String, String, i8)>,
}

impl BrokerDefaults {
    pub fn of(broker_id: i32, args: &BrokerArgs) -> BrokerDefaults {
        BrokerDefaults {
            broker_id,
            min_insync_replicas: args.min_insync_replicas,
            message_max_bytes: i64::try_from(args.message_max_bytes).unwrap_or(i64::MAX),
            log_segment_bytes: i64::try_from(args.log_segment_bytes).unwrap_or(i64::MAX),
            log_roll_ms: args.log_roll_ms,
            log_retention_ms: args.log_retention_ms,
            log_retention_bytes: args.log_retention_bytes,
        }
    }

    /// The broker setting behind a topic config's default: (value, source). None for a key
    /// the catalogue does not know.
    fn topic_default(&self, key: &str) -> Option<(String, i8)> {
        let flag = |value: i64| Some((value.to_string(), STATIC_BROKER_CONFIG));
        match key {
            topic_config::CLEANUP_POLICY => Some((DEFAULT_CLEANUP_POLICY.to_string(), DEFAULT_CONFIG)),
            topic_config::COMPRESSION_TYPE => {
                Some((topic_config::COMPRESSION_TYPE_PRODUCER.to_string(), DEFAULT_CONFIG))
            }
            topic_config::UNCLEAN_LEADER_ELECTION_ENABLE => {
                Some((DEFAULT_UNCLEAN_LEADER_ELECTION.to_string(), DEFAULT_CONFIG))
            }
            topic_config::MAX_MESSAGE_BYTES => flag(self.message_max_bytes),
            topic_config::MIN_INSYNC_REPLICAS => flag(i64::from(self.min_insync_replicas)),
            topic_config::RETENTION_BYTES => flag(self.log_retention_bytes),
            topic_config::RETENTION_MS => flag(self.log_retention_ms),
            topic_config::SEGMENT_BYTES => flag(self.log_segment_bytes),
            topic_config::SEGMENT_MS => flag(self.log_roll_ms),
            _ => None,
        }
    }

    /// This broker's settings as a BROKER resource describes them, sorted by name: the
    /// synonyms of every topic config plus the node id; all read-only.
    pub fn broker_configs(&self) -> Vec<Described> {
        let mut out: Vec<Described> = TOPIC_CONFIGS
            .iter()
            .filter_map(|def| {
                let synonym = def.broker_synonym?;
                let (value, source) = self.topic_default(def.name)?;
                Some(Described {
                    name: synonym.to_string(),
                    value: value.clone(),
                    source,
                    read_only: true,
                    config_type: config_type(def),
                    documentation: def.doc,
                    synonyms: vec![(synonym.to_string(), value, source)],
                })
            })
            .collect();
        let node_id = self.broker_id.to_string();
        out.push(Described {
            name: "node.id".to_string(),
            value: node_id.clone(),
            source: STATIC_BROKER_CONFIG,
            read_only: true,
            config_type: TYPE_INT,
            documentation: "the id of this node (--node-id)",
            synonyms: vec![("node.id".to_string(), node_id, STATIC_BROKER_CONFIG)],
        });
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

fn config_type(def: &ConfigDef) -> i8 {
    match def.kind {
        ConfigType::Int { .. } => TYPE_INT,
        ConfigType::Long { .. } => TYPE_LONG,
        ConfigType::Boolean => TYPE_BOOLEAN,
        // One word here (Kafka's cleanup.policy is a list; insync takes only `delete`).
        ConfigType::Choice(_) => TYPE_STRING,
    }
}

/// Every catalogue config of a topic with `overrides`, sorted by name (as Kafka lists them).
pub(super) fn topic_configs(overrides: &HashMap<String, String>, defaults: &BrokerDefaults) -> Vec<Described> {
    TOPIC_CONFIGS
        .iter()
        .filter_map(|def| {
            let (default_value, default_source) = defaults.topic_default(def.name)?;
            let broker_synonym =
                (def.broker_synonym.unwrap_or(def.name).to_string(), default_value.clone(), default_source);
            let (value, source, synonyms) = match overrides.get(def.name) {
                Some(value) => (
                    value.clone(),
                    DYNAMIC_TOPIC_CONFIG,
                    vec![(def.name.to_string(), value.clone(), DYNAMIC_TOPIC_CONFIG), broker_synonym],
                ),
                None => (default_value, default_source, vec![broker_synonym]),
            };
            Some(Described {
                name: def.name.to_string(),
                value,
                source,
                read_only: false,
                config_type: config_type(def),
                documentation: def.doc,
                synonyms,
            })
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub fn defaults() -> BrokerDefaults {
        BrokerDefaults {
            broker_id: 2,
            min_insync_replicas: 1,
            message_max_bytes: 1_048_576,
            log_segment_bytes: 134_217_728,
            log_roll_ms: 604_800_000,
            log_retention_ms: 604_800_000,
            log_retention_bytes: -1,
        }
    }

    #[test]
    fn every_catalogue_key_has_a_broker_default() {
        for def in TOPIC_CONFIGS {
            let (value, _) =
                defaults().topic_default(def.name).unwrap_or_else(|| panic!("{} has no default", def.name));
            assert_eq!(topic_config::validate(def.name, &value).as_deref(), Ok(value.as_str()), "{}", def.name);
        }
        assert_eq!(topic_configs(&HashMap::new(), &defaults()).len(), TOPIC_CONFIGS.len());
    }

    #[test]
    fn an_override_is_a_topic_config_and_the_rest_come_from_the_broker() {
        let overrides: HashMap<String, String> = [("retention.ms".to_string(), "60000".to_string())].into();
        let described = topic_configs(&overrides, &defaults());
        let names: Vec<&str> = described.iter().map(|d| d.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "sorted by name");
        let find = |name: &str| described.iter().find(|d| d.name == name).unwrap().clone();
        let retention = find("retention.ms");
        assert_eq!((retention.value.as_str(), retention.source, retention.read_only), ("60000", 1, false));
        assert_eq!(
            retention.synonyms,
            [
                ("retention.ms".to_string(), "60000".to_string(), 1),
                ("log.retention.ms".to_string(), "604800000".to_string(), 4)
            ]
        );
        let segment = find("segment.bytes");
        assert_eq!((segment.value.as_str(), segment.source, segment.config_type), ("134217728", 4, 3));
        let unclean = find("unclean.leader.election.enable");
        assert_eq!((unclean.value.as_str(), unclean.source, unclean.config_type), ("false", 5, 1));
        assert_eq!(find("cleanup.policy").value, "delete");
        let compression = find("compression.type");
        assert_eq!((compression.value.as_str(), compression.source, compression.config_type), ("producer", 5, 2));
    }

    #[test]
    fn broker_configs_are_read_only_flags() {
        let configs = defaults().broker_configs();
        let find = |name: &str| configs.iter().find(|d| d.name == name).unwrap().clone();
        for (name, value) in [
            ("log.retention.ms", "604800000"),
            ("log.retention.bytes", "-1"),
            ("log.segment.bytes", "134217728"),
            ("log.roll.ms", "604800000"),
            ("message.max.bytes", "1048576"),
            ("min.insync.replicas", "1"),
            ("node.id", "2"),
        ] {
            let d = find(name);
            assert_eq!((d.value.as_str(), d.source, d.read_only), (value, 4, true), "{name}");
        }
        assert_eq!(find("unclean.leader.election.enable").source, 5);
        assert_eq!(find("log.cleanup.policy").value, "delete");
    }
}
