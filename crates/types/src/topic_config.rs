//! The topic configurations insync knows, with Kafka's names, types, bounds and defaults
//! (Kafka `LogConfig` / `TopicConfig` `ConfigDef`s): one catalogue that the controller
//! validates against, brokers resolve against their own defaults, and the CLI and the Kafka
//! listener describe. Pure: no I/O.
use std::collections::BTreeMap;

/// What a configuration's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    /// A 32-bit integer in `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    /// A 64-bit integer in `min..=max`.
    Long {
        min: i64,
        max: i64,
    },
    Boolean,
    /// One of these words (case-insensitive, stored lower-case).
    Choice(&'static [&'static str]),
}

/// One topic configuration (Kafka `ConfigDef.ConfigKey`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    /// The broker setting whose value is the default (Kafka's `synonym`), if any.
    pub broker_synonym: Option<&'static str>,
    pub doc: &'static str,
}

pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";
pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const SEGMENT_MS: &str = "segment.ms";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const CLEANUP_POLICY: &str = "cleanup.policy";
pub const COMPRESSION_TYPE: &str = "compression.type";
/// `compression.type`'s default: keep the producer's codec (Kafka's default too).
pub const COMPRESSION_TYPE_PRODUCER: &str = "producer";

/// The largest batch any topic may take: half the 64 MiB gRPC message limit, so that a batch
/// always fits a follower's fetch answer (as the broker's `--message-max-bytes` ceiling).
pub const MAX_MESSAGE_BYTES_CEILING: i64 = 32 * 1024 * 1024;
/// The smallest segment. Kafka's ConfigDef allows 14 bytes (1 MiB since Kafka 4.0, KIP-1030);
/// insync allows small segments so that retention can be watched on a laptop.
pub const MIN_SEGMENT_BYTES: i64 = 1024;

/// Every topic configuration insync accepts, in Kafka's names.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: CLEANUP_POLICY,
        kind: ConfigType::Choice(&["delete"]),
        broker_synonym: Some("log.cleanup.policy"),
        doc: "delete: old segments are deleted by retention (compaction is not supported)",
    },
    ConfigDef {
        name: COMPRESSION_TYPE,
        kind: ConfigType::Choice(&["uncompressed", "zstd", "lz4", "snappy", "gzip", COMPRESSION_TYPE_PRODUCER]),
        broker_synonym: Some("compression.type"),
        doc: "codec the leader stores batches in; producer (default): as the producer compressed them",
    },
    ConfigDef {
        name: MAX_MESSAGE_BYTES,
        kind: ConfigType::Int { min: 0, max: MAX_MESSAGE_BYTES_CEILING },
        broker_synonym: Some("message.max.bytes"),
        doc: "largest record batch a producer may append",
    },
    ConfigDef {
        name: MIN_INSYNC_REPLICAS,
        kind: ConfigType::Int { min: 1, max: i32::MAX as i64 },
        broker_synonym: Some("min.insync.replicas"),
        doc: "in-sync replicas an acks=all produce needs (at most the replication factor)",
    },
    ConfigDef {
        name: RETENTION_BYTES,
        kind: ConfigType::Long { min: -1, max: i64::MAX },
        broker_synonym: Some("log.retention.bytes"),
        doc: "per partition, whole segments are deleted while the log is bigger than this; -1: no limit",
    },
    ConfigDef {
        name: RETENTION_MS,
        kind: ConfigType::Long { min: -1, max: i64::MAX },
        broker_synonym: Some("log.retention.ms"),
        doc: "segments last written longer ago than this are deleted; -1: no limit",
    },
    ConfigDef {
        name: SEGMENT_BYTES,
        kind: ConfigType::Int { min: MIN_SEGMENT_BYTES, max: i32::MAX as i64 },
        broker_synonym: Some("log.segment.bytes"),
        doc: "the log rolls to a new segment when the active one would grow past this",
    },
    ConfigDef {
        name: SEGMENT_MS,
        kind: ConfigType::Long { min: 1, max: i64::MAX },
        broker_synonym: Some("log.roll.ms"),
        doc: "the log rolls to a new segment when the active one is older than this",
    },
    ConfigDef {
        name: UNCLEAN_LEADER_ELECTION_ENABLE,
        kind: ConfigType::Boolean,
        broker_synonym: Some("unclean.leader.election.enable"),
        doc: "elect an out-of-sync replica when no in-sync one can lead (loses acknowledged records)",
    },
];

/// The definition of `name`, if insync knows it.
pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks one `key=value` and returns the value as stored (trimmed; booleans and choices
/// lower-case), or the message of Kafka's INVALID_CONFIG (40).
pub fn validate(key: &str, value: &str) -> Result<String, String> {
    let Some(def) = config_def(key) else {
        let known: Vec<&str> = TOPIC_CONFIGS.iter().map(|d| d.name).collect();
        return Err(format!("Unknown topic config name: {key} (insync knows {})", known.join(", ")));
    };
    let value = value.trim();
    let invalid = |why: String| format!("Invalid value {value} for configuration {key}: {why}");
    match def.kind {
        ConfigType::Int { min, max } | ConfigType::Long { min, max } => {
            let n: i64 = value.parse().map_err(|_| invalid("not a number".to_string()))?;
            if n < min || n > max {
                return Err(invalid(format!("value must be between {min} and {max}")));
            }
            Ok(n.to_string())
        }
        ConfigType::Boolean => match value.to_ascii_lowercase().as_str() {
            v @ ("true" | "false") => Ok(v.to_string()),
            _ => Err(invalid("expected true or false".to_string())),
        },
        ConfigType::Choice(words) => {
            let lower = value.to_ascii_lowercase();
            if words.contains(&lower.as_str()) {
                Ok(lower)
            } else {
                Err(invalid(format!("must be one of {}", words.join(", "))))
            }
        }
    }
}

/// Checks every entry of `configs`, returning them as stored or the first error.
pub fn validate_all(configs: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    configs.iter().map(|(k, v)| validate(k, v).map(|v| (k.clone(), v))).collect()
}

/// A stored value as a number (the catalogue guarantees numeric keys hold numbers).
pub fn int_value(configs: &BTreeMap<String, String>, key: &str) -> Option<i64> {
    configs.get(key).and_then(|v| v.parse().ok())
}

/// A stored value as a boolean.
pub fn bool_value(configs: &BTreeMap<String, String>, key: &str) -> Option<bool> {
    configs.get(key).and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_are_checked_by_type_and_bounds() {
        assert_eq!(validate("retention.ms", " 60000 "), Ok("60000".to_string()));
        assert_eq!(validate("retention.bytes", "-1"), Ok("-1".to_string()));
        assert_eq!(validate("unclean.leader.election.enable", "TRUE"), Ok("true".to_string()));
        assert_eq!(validate("cleanup.policy", "Delete"), Ok("delete".to_string()));
        assert_eq!(validate("compression.type", "ZSTD"), Ok("zstd".to_string()));
        assert_eq!(validate("compression.type", "producer"), Ok("producer".to_string()));
        for (key, value) in [
            ("retention.ms", "-2"),
            ("retention.ms", "soon"),
            ("segment.bytes", "100"),
            ("segment.bytes", "4294967296"),
            ("min.insync.replicas", "0"),
            ("max.message.bytes", "999999999"),
            ("unclean.leader.election.enable", "yes"),
            ("cleanup.policy", "compact"),
            ("compression.type", "none"),
            ("compression.type", "brotli"),
        ] {
            let error = validate(key, value).unwrap_err();
            assert!(error.contains(key) && error.contains("Invalid value"), "{key}={value}: {error}");
        }
        let unknown = validate("retention.hours", "1").unwrap_err();
        assert!(unknown.contains("Unknown topic config name: retention.hours"), "{unknown}");
    }

    #[test]
    fn validate_all_stops_at_the_first_bad_entry() {
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "1000".to_string());
        assert_eq!(int_value(&validate_all(&configs).unwrap(), "retention.ms"), Some(1000));
        configs.insert("segment.ms".to_string(), "0".to_string());
        assert!(validate_all(&configs).is_err());
    }
}
