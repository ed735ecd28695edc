//! The internal topic `__consumer_offsets` (the brokers' durable consumer-group offsets,
//! `insync_broker::group::storage`) and what clients may not do to it, with Kafka's codes and
//! wording where Kafka has a rule (`org.apache.kafka.common.internals.Topic.isInternal`):
//!
//! - produce to it: INVALID_TOPIC_EXCEPTION "Cannot append to internal topic …"
//!   (`ReplicaManager.appendRecords` without `internalTopicsAllowed`, which only the group
//!   coordinator's own appends have); checked by the broker's client-facing produce paths;
//! - DeleteRecords on it: INVALID_TOPIC_EXCEPTION "Cannot delete records of internal topic …"
//!   (`ReplicaManager.deleteRecords`); checked by the broker's DeleteRecords paths;
//! - create it: INVALID_REQUEST, worded as Kafka refuses `__cluster_metadata`
//!   (`ControllerApis.createTopics`); only a broker's own request, marked `internal`, creates it;
//! - delete it, add partitions to it, change its configs: INVALID_REQUEST. Kafka's controller
//!   allows these (its tools refuse some: `TopicCommand` "The number of partitions for the
//!   offsets topic cannot be changed."); insync refuses them because each loses offsets here:
//!   a group lives on partition `hash % partitions`, so more partitions move groups away from
//!   their commits, and insync has no log compaction, so retention (which the brokers switch
//!   off on the topic) would delete committed offsets.
//!
//! The controller checks creation, partitions, configs and deletion before planning (never
//! when applying a committed command, so entries committed before these rules replay as they
//! did).
use insync_types::ErrorCode;

use crate::rules::RuleRejection;

/// Kafka's name for the group offsets topic (`Topic.GROUP_METADATA_TOPIC_NAME`).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Whether `topic` is internal (Kafka `Topic.isInternal`; insync has only the offsets topic).
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC
}

fn refused(code: ErrorCode, message: String) -> Result<(), RuleRejection> {
    Err(RuleRejection::new(code, message))
}

/// A client's produce to `topic`.
pub fn check_append(topic: &str) -> Result<(), RuleRejection> {
    if !is_internal(topic) {
        return Ok(());
    }
    refused(
        ErrorCode::INVALID_TOPIC_EXCEPTION,
        format!(
            "Cannot append to internal topic {topic}: only the group coordinators write it (commit offsets with \
             OffsetCommit)"
        ),
    )
}

/// A client's DeleteRecords on `topic`.
pub fn check_delete_records(topic: &str) -> Result<(), RuleRejection> {
    if !is_internal(topic) {
        return Ok(());
    }
    refused(
        ErrorCode::INVALID_TOPIC_EXCEPTION,
        format!("Cannot delete records of internal topic {topic}: they are the committed offsets of consumer groups"),
    )
}

/// A CreateTopic of `topic`; `internal` is the request's mark that a broker creates its own
/// offsets topic.
pub fn check_create(topic: &str, internal: bool) -> Result<(), RuleRejection> {
    match (is_internal(topic), internal) {
        (false, false) | (true, true) => Ok(()),
        (true, false) => refused(
            ErrorCode::INVALID_REQUEST,
            format!(
                "Creation of internal topic {topic} is prohibited: the brokers create it on the first group request \
                 (--offsets-topic-num-partitions, --offsets-topic-replication-factor)."
            ),
        ),
        (false, true) => refused(
            ErrorCode::INVALID_REQUEST,
            format!("Topic '{topic}' cannot be created as internal: the only internal topic is {OFFSETS_TOPIC}."),
        ),
    }
}

/// A CreatePartitions of `topic`.
pub fn check_add_partitions(topic: &str) -> Result<(), RuleRejection> {
    if !is_internal(topic) {
        return Ok(());
    }
    refused(
        ErrorCode::INVALID_REQUEST,
        format!(
            "The number of partitions of internal topic {topic} cannot be changed: a group's offsets live on \
             partition abs(hash(group)) % partitions, so more partitions would move groups away from their \
             committed offsets."
        ),
    )
}

/// An AlterTopicConfigs of `topic` (any change, validate_only too).
pub fn check_alter_configs(topic: &str) -> Result<(), RuleRejection> {
    if !is_internal(topic) {
        return Ok(());
    }
    refused(
        ErrorCode::INVALID_REQUEST,
        format!(
            "The configs of internal topic {topic} cannot be changed: the brokers set them (retention.ms and \
             retention.bytes -1, as insync has no log compaction: retention would delete committed offsets)."
        ),
    )
}

/// A DeleteTopic of `topic`.
pub fn check_delete(topic: &str) -> Result<(), RuleRejection> {
    if !is_internal(topic) {
        return Ok(());
    }
    refused(
        ErrorCode::INVALID_REQUEST,
        format!("Topic {topic} is an internal topic (the committed offsets of consumer groups) and cannot be deleted."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: Result<(), RuleRejection>) -> ErrorCode {
        result.err().map_or(ErrorCode::NONE, |r| r.code)
    }

    #[test]
    fn clients_may_neither_write_nor_trim_the_offsets_topic() {
        for check in [check_append, check_delete_records] {
            let refusal = check(OFFSETS_TOPIC).unwrap_err();
            assert_eq!(refusal.code, ErrorCode::INVALID_TOPIC_EXCEPTION);
            assert!(refusal.message.contains("internal topic __consumer_offsets"), "{}", refusal.message);
            assert_eq!(code(check("orders")), ErrorCode::NONE);
            // Names are exact, as Kafka's: a look-alike is an ordinary topic.
            assert_eq!(code(check("__consumer_offsets_2")), ErrorCode::NONE);
        }
        assert!(check_append(OFFSETS_TOPIC).unwrap_err().message.starts_with("Cannot append to internal topic"));
        assert!(check_delete_records(OFFSETS_TOPIC)
            .unwrap_err()
            .message
            .starts_with("Cannot delete records of internal topic"));
    }

    #[test]
    fn only_a_brokers_internal_request_creates_the_offsets_topic() {
        let user = check_create(OFFSETS_TOPIC, false).unwrap_err();
        assert_eq!(user.code, ErrorCode::INVALID_REQUEST);
        assert!(
            user.message.contains("Creation of internal topic __consumer_offsets is prohibited"),
            "{}",
            user.message
        );
        assert_eq!(code(check_create(OFFSETS_TOPIC, true)), ErrorCode::NONE);
        assert_eq!(code(check_create("orders", false)), ErrorCode::NONE);
        // The mark makes no other topic internal.
        assert_eq!(code(check_create("orders", true)), ErrorCode::INVALID_REQUEST);
    }

    #[test]
    fn its_partitions_configs_and_existence_are_fixed() {
        for (check, words) in [
            (check_add_partitions as fn(&str) -> Result<(), RuleRejection>, "number of partitions"),
            (check_alter_configs, "configs"),
            (check_delete, "cannot be deleted"),
        ] {
            let refusal = check(OFFSETS_TOPIC).unwrap_err();
            assert_eq!(refusal.code, ErrorCode::INVALID_REQUEST, "{words}");
            assert!(refusal.message.contains(words) && refusal.message.contains(OFFSETS_TOPIC), "{}", refusal.message);
            assert_eq!(code(check("orders")), ErrorCode::NONE, "{words}");
        }
    }
}
