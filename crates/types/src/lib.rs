//! Shared vocabulary of insync: broker ids, topic-partitions, offsets, epochs, Kafka's
//! error codes (same numbers as Kafka's `org.apache.kafka.common.protocol.Errors`) and the
//! wall clock in epoch milliseconds.
use serde::{Deserialize, Serialize};
use std::fmt;

pub mod topic_config;
use std::time::{SystemTime, UNIX_EPOCH};

/// A broker's `node.id`.
pub type BrokerId = i32;
/// A record offset within a partition.
pub type Offset = i64;
/// A partition leader epoch; -1 means "none / unknown" as in Kafka.
pub type LeaderEpoch = i32;
/// A partition epoch (bumped by the controller on every partition change).
pub type PartitionEpoch = i32;

/// Sentinel for "no broker" (Kafka uses -1 for "no leader").
pub const NO_BROKER: BrokerId = -1;
/// Sentinel for "no epoch".
pub const NO_EPOCH: LeaderEpoch = -1;
/// The `replica_id` a consumer sends in Fetch.
pub const CONSUMER_REPLICA_ID: BrokerId = -1;

/// Wall-clock milliseconds since the Unix epoch, as Kafka's `System.currentTimeMillis()`:
/// record timestamps (CreateTime) and times shown to people. A clock set before 1970 gives
/// 0. Code that decides anything by elapsed time takes `now_ms` as an argument or uses a
/// monotonic `Instant` instead (the wall clock can jump).
pub fn now_epoch_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A topic and partition number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self { topic: topic.into(), partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $code:expr, $retriable:expr; )*) => {
        /// Kafka's error codes, by the same names and numbers
        /// (`org.apache.kafka.common.protocol.Errors`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[allow(non_camel_case_types)]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
        }
        impl ErrorCode {
            /// Kafka's numeric code.
            pub fn code(self) -> i32 { match self { $( ErrorCode::$name => $code, )* } }
            /// Kafka's upper-case name, e.g. `NOT_ENOUGH_REPLICAS`.
            pub fn name(self) -> &'static str { match self { $( ErrorCode::$name => stringify!($name), )* } }
            /// Whether Kafka marks it retriable (`RetriableException`).
            pub fn is_retriable(self) -> bool { match self { $( ErrorCode::$name => $retriable, )* } }
            /// The code for a number; unknown numbers map to `UNKNOWN_SERVER_ERROR`.
            pub fn from_code(code: i32) -> ErrorCode {
                match code { $( x if x == $code => ErrorCode::$name, )* _ => ErrorCode::UNKNOWN_SERVER_ERROR }
            }
        }
    };
}

error_codes! {
    UNKNOWN_SERVER_ERROR = -1, false;
    NONE = 0, false;
    OFFSET_OUT_OF_RANGE = 1, false;
    CORRUPT_MESSAGE = 2, true;
    UNKNOWN_TOPIC_OR_PARTITION = 3, true;
    LEADER_NOT_AVAILABLE = 5, true;
    NOT_LEADER_OR_FOLLOWER = 6, true;
    REQUEST_TIMED_OUT = 7, true;
    BROKER_NOT_AVAILABLE = 8, false;
    REPLICA_NOT_AVAILABLE = 9, true;
    MESSAGE_TOO_LARGE = 10, false;
    OFFSET_METADATA_TOO_LARGE = 12, false;
    NETWORK_EXCEPTION = 13, true;
    COORDINATOR_LOAD_IN_PROGRESS = 14, true;
    COORDINATOR_NOT_AVAILABLE = 15, true;
    NOT_COORDINATOR = 16, true;
    INVALID_TOPIC_EXCEPTION = 17, false;
    NOT_ENOUGH_REPLICAS = 19, true;
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20, true;
    INVALID_REQUIRED_ACKS = 21, false;
    ILLEGAL_GENERATION = 22, false;
    INCONSISTENT_GROUP_PROTOCOL = 23, false;
    INVALID_GROUP_ID = 24, false;
    UNKNOWN_MEMBER_ID = 25, false;
    INVALID_SESSION_TIMEOUT = 26, false;
    REBALANCE_IN_PROGRESS = 27, false;
    INVALID_COMMIT_OFFSET_SIZE = 28, false;
    UNSUPPORTED_VERSION = 35, false;
    TOPIC_ALREADY_EXISTS = 36, false;
    INVALID_PARTITIONS = 37, false;
    INVALID_REPLICATION_FACTOR = 38, false;
    INVALID_REQUEST = 42, false;
    NOT_CONTROLLER = 41, true;
    INVALID_CONFIG = 40, false;
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45, false;
    DUPLICATE_SEQUENCE_NUMBER = 46, false;
    INVALID_PRODUCER_EPOCH = 47, false;
    OPERATION_NOT_ATTEMPTED = 55, false;
    KAFKA_STORAGE_ERROR = 56, true;
    NON_EMPTY_GROUP = 68, false;
    GROUP_ID_NOT_FOUND = 69, false;
    FENCED_LEADER_EPOCH = 74, true;
    UNKNOWN_LEADER_EPOCH = 75, true;
    UNSUPPORTED_COMPRESSION_TYPE = 76, false;
    STALE_BROKER_EPOCH = 77, false;
    MEMBER_ID_REQUIRED = 79, false;
    PREFERRED_LEADER_NOT_AVAILABLE = 80, true;
    GROUP_MAX_SIZE_REACHED = 81, false;
    FENCED_INSTANCE_ID = 82, false;
    ELECTION_NOT_NEEDED = 84, false;
    UNSTABLE_OFFSET_COMMIT = 88, true;
    INELIGIBLE_REPLICA = 107, false;
    INVALID_UPDATE_VERSION = 108, false;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

/// Kafka's `acks` producer setting, validated (Kafka `ReplicaManager.isValidRequiredAcks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acks {
    /// acks=0: the producer does not wait for any answer.
    None,
    /// acks=1: the leader answers after its local append.
    Leader,
    /// acks=all (-1): the leader answers once the high watermark passes the records.
    All,
}

impl Acks {
    /// Parses the wire number; anything but -1, 0, 1 is `INVALID_REQUIRED_ACKS`.
    pub fn from_wire(acks: i32) -> Result<Acks, ErrorCode> {
        match acks {
            -1 => Ok(Acks::All),
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            _ => Err(ErrorCode::INVALID_REQUIRED_ACKS),
        }
    }
    pub fn to_wire(self) -> i32 {
        match self {
            Acks::All => -1,
            Acks::None => 0,
            Acks::Leader => 1,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" | "-1" => Ok(Acks::All),
            "1" => Ok(Acks::Leader),
            "0" => Ok(Acks::None),
            other => Err(format!("invalid acks '{other}': expected all, -1, 1 or 0")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_with_kafka_numbers() {
        assert_eq!(ErrorCode::NOT_ENOUGH_REPLICAS.code(), 19);
        assert_eq!(ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND.code(), 20);
        assert_eq!(ErrorCode::from_code(74), ErrorCode::FENCED_LEADER_EPOCH);
        assert_eq!(ErrorCode::from_code(9999), ErrorCode::UNKNOWN_SERVER_ERROR);
        // Codes the Kafka listener's group coordinator answers with.
        assert_eq!(ErrorCode::NOT_COORDINATOR.code(), 16);
        assert_eq!(ErrorCode::from_code(25), ErrorCode::UNKNOWN_MEMBER_ID);
        assert_eq!(ErrorCode::GROUP_MAX_SIZE_REACHED.code(), 81);
        assert_eq!(ErrorCode::INVALID_REQUIRED_ACKS.to_string(), "INVALID_REQUIRED_ACKS (21)");
    }

    #[test]
    fn epoch_ms_counts_milliseconds_not_seconds_or_nanos() {
        // Between 2020-01-01 and 2200-01-01 (UTC) in epoch ms: a wrong unit lands far outside.
        let now = now_epoch_ms();
        assert!((1_577_836_800_000..7_258_118_400_000).contains(&now), "{now}");
    }

    #[test]
    fn acks_accepts_only_kafka_values() {
        // Kafka ReplicaManager.isValidRequiredAcks: -1, 0, 1.
        assert_eq!(Acks::from_wire(-1), Ok(Acks::All));
        assert_eq!(Acks::from_wire(2), Err(ErrorCode::INVALID_REQUIRED_ACKS));
        assert_eq!("all".parse::<Acks>(), Ok(Acks::All));
        assert!("2".parse::<Acks>().is_err());
    }
}
