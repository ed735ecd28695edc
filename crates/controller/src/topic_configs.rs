//! Topic configuration changes as pure rules over `ClusterState` (Kafka
//! `ConfigurationControlManager.incrementalAlterConfigs` / `legacyAlterConfigs` for the
//! TOPIC resource, with `ControllerConfigurationValidator`): which overrides a topic ends up
//! with, validated against the catalogue in `insync_types::topic_config`, and the elections
//! a change makes possible. No I/O: `command.rs` applies them to committed entries and the
//! service runs them on a copy for `validate_only`.
use std::collections::{BTreeMap, BTreeSet};

use insync_types::topic_config::{self, MIN_INSYNC_REPLICAS, UNCLEAN_LEADER_ELECTION_ENABLE};
use insync_types::{ErrorCode, NO_BROKER};
use serde::{Deserialize, Serialize};

use crate::metadata::{ClusterState, TopicState};
use crate::rules::{self, PartitionChange, RuleRejection};

/// One AlterTopicConfigs request: `set` these keys and remove `delete`, or, with `replace`,
/// make `set` the whole override set (Kafka's legacy AlterConfigs replaces every config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    pub set: BTreeMap<String, String>,
    pub delete: BTreeSet<String>,
    pub replace: bool,
}

fn invalid(message: String) -> RuleRejection {
    RuleRejection::new(ErrorCode::INVALID_CONFIG, message)
}

/// The override set a topic is created with: `configs` validated, plus the dedicated
/// min.insync.replicas / unclean.leader.election.enable fields, which must agree with
/// `configs` when both name a key.
pub fn creation_configs(
    configs: &BTreeMap<String, String>,
    min_insync_replicas: Option<i32>,
    unclean_leader_election_enable: bool,
    replication_factor: i32,
) -> Result<BTreeMap<String, String>, RuleRejection> {
    let mut overrides = topic_config::validate_all(configs).map_err(invalid)?;
    if let Some(min) = min_insync_replicas {
        merge_field(&mut overrides, MIN_INSYNC_REPLICAS, min.to_string())?;
    }
    if unclean_leader_election_enable {
        merge_field(&mut overrides, UNCLEAN_LEADER_ELECTION_ENABLE, "true".to_string())?;
    }
    check_against_topic(&overrides, replication_factor)?;
    Ok(overrides)
}

fn merge_field(overrides: &mut BTreeMap<String, String>, key: &str, value: String) -> Result<(), RuleRejection> {
    let stored = topic_config::validate(key, &value).map_err(invalid)?;
    match overrides.get(key) {
        Some(existing) if *existing != stored => {
            Err(invalid(format!("{key} is given twice with different values ({existing} and {stored})")))
        }
        _ => {
            overrides.insert(key.to_string(), stored);
            Ok(())
        }
    }
}

/// Checks that need the topic: min.insync.replicas at most the replication factor (Kafka only
/// requires ≥ 1; above RF acks=all could never succeed).
fn check_against_topic(overrides: &BTreeMap<String, String>, replication_factor: i32) -> Result<(), RuleRejection> {
    if let Some(min) = topic_config::int_value(overrides, MIN_INSYNC_REPLICAS) {
        if min > i64::from(replication_factor) {
            return Err(invalid(format!(
                "Invalid value {min} for configuration {MIN_INSYNC_REPLICAS}: it must be between 1 and the replication factor {replication_factor}"
            )));
        }
    }
    Ok(())
}

/// The overrides `topic` has after `change`, validated.
pub fn changed_overrides(topic: &TopicState, change: &ConfigChange) -> Result<BTreeMap<String, String>, RuleRejection> {
    if let Some(both) = change.set.keys().find(|k| change.delete.contains(*k)) {
        return Err(RuleRejection::new(ErrorCode::INVALID_REQUEST, format!("{both} is both set and deleted")));
    }
    for key in &change.delete {
        if topic_config::config_def(key).is_none() {
            return Err(invalid(format!("Unknown topic config name: {key}")));
        }
    }
    let mut overrides = if change.replace { BTreeMap::new() } else { topic.overrides() };
    for key in &change.delete {
        overrides.remove(key);
    }
    overrides.extend(topic_config::validate_all(&change.set).map_err(invalid)?);
    check_against_topic(&overrides, topic.replication_factor())?;
    Ok(overrides)
}

/// Applies `change` to the topic `name` with id `topic_id` and returns the topic after it and
/// the partition changes it caused: turning unclean.leader.election.enable on elects a leader
/// for each leaderless partition with a live replica, as Kafka's controller does when the
/// config changes (`maybeTriggerUncleanLeaderElectionForLeaderlessPartitions`).
pub fn alter_topic_configs(
    state: &mut ClusterState,
    name: &str,
    topic_id: &str,
    change: &ConfigChange,
) -> Result<(TopicState, Vec<PartitionChange>), RuleRejection> {
    let topic = match state.topics.get(name) {
        Some(topic) if topic.topic_id == topic_id => topic,
        _ => {
            return Err(RuleRejection::new(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("Topic '{name}' does not exist."),
            ))
        }
    };
    let overrides = changed_overrides(topic, change)?;
    let was_unclean = topic.unclean_leader_election_enable;
    let Some(topic) = state.topics.get_mut(name) else {
        return Err(RuleRejection::new(
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            format!("Topic '{name}' does not exist."),
        ));
    };
    topic.set_overrides(overrides);
    let changes = if topic.unclean_leader_election_enable && !was_unclean {
        rules::elect_leaderless(state, name)
    } else {
        Vec::new()
    };
    let after = state.topics.get(name).cloned().unwrap_or_default();
    Ok((after, changes))
}

/// Whether any partition of the topic has no leader (for the log line of an unclean switch).
pub fn has_leaderless_partitions(topic: &TopicState) -> bool {
    topic.partitions.iter().any(|p| p.leader == NO_BROKER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{BrokerRegistration, PartitionState};

    fn state(leader: i32, unclean: bool) -> ClusterState {
        let mut state = ClusterState::default();
        for id in 1..=3 {
            let fenced = id == 1;
            state.brokers.insert(
                id,
                BrokerRegistration {
                    id,
                    address: String::new(),
                    kafka_address: String::new(),
                    incarnation: 1,
                    fenced,
                    in_controlled_shutdown: false,
                    broker_epoch: 1,
                    offline_replicas: BTreeSet::new(),
                },
            );
        }
        let mut topic = TopicState {
            name: "t".into(),
            topic_id: "id".into(),
            partitions: vec![PartitionState {
                partition: 0,
                replicas: vec![1, 2, 3],
                isr: vec![1],
                leader,
                leader_epoch: 3,
                partition_epoch: 5,
                unclean_elected: false,
            }],
            ..TopicState::default()
        };
        let mut overrides = BTreeMap::new();
        if unclean {
            overrides.insert(UNCLEAN_LEADER_ELECTION_ENABLE.to_string(), "true".to_string());
        }
        topic.set_overrides(overrides);
        state.topics.insert("t".into(), topic);
        state
    }

    fn set(pairs: &[(&str, &str)]) -> ConfigChange {
        ConfigChange {
            set: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..ConfigChange::default()
        }
    }

    #[test]
    fn set_delete_and_replace_change_the_overrides() {
        let mut state = state(1, false);
        let (topic, _) =
            alter_topic_configs(&mut state, "t", "id", &set(&[("retention.ms", "1000"), ("min.insync.replicas", "2")]))
                .unwrap();
        assert_eq!(topic.min_insync_replicas, Some(2), "the typed field follows the override");
        assert_eq!(topic.overrides().get("retention.ms").map(String::as_str), Some("1000"));
        let delete = ConfigChange { delete: ["min.insync.replicas".to_string()].into(), ..ConfigChange::default() };
        let (topic, _) = alter_topic_configs(&mut state, "t", "id", &delete).unwrap();
        assert_eq!(topic.min_insync_replicas, None);
        assert_eq!(topic.overrides().len(), 1);
        let replace = ConfigChange { replace: true, ..set(&[("segment.bytes", "4096")]) };
        let (topic, _) = alter_topic_configs(&mut state, "t", "id", &replace).unwrap();
        assert_eq!(topic.overrides().keys().collect::<Vec<_>>(), vec!["segment.bytes"]);
    }

    #[test]
    fn invalid_changes_are_refused_and_change_nothing() {
        let mut state = state(1, false);
        let before = state.clone();
        for (change, code) in [
            (set(&[("retention.hours", "1")]), ErrorCode::INVALID_CONFIG),
            (set(&[("retention.ms", "-5")]), ErrorCode::INVALID_CONFIG),
            (set(&[("min.insync.replicas", "4")]), ErrorCode::INVALID_CONFIG),
            (
                ConfigChange { delete: ["nope".to_string()].into(), ..ConfigChange::default() },
                ErrorCode::INVALID_CONFIG,
            ),
        ] {
            assert_eq!(alter_topic_configs(&mut state, "t", "id", &change).unwrap_err().code, code, "{change:?}");
        }
        assert_eq!(
            alter_topic_configs(&mut state, "t", "other-id", &set(&[])).unwrap_err().code,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(state, before);
    }

    #[test]
    fn enabling_unclean_election_elects_a_leader_for_a_leaderless_partition() {
        // ISR [1] with broker 1 fenced: offline. Brokers 2 and 3 are live but out of sync.
        let mut state = state(NO_BROKER, false);
        let (topic, changes) =
            alter_topic_configs(&mut state, "t", "id", &set(&[("unclean.leader.election.enable", "true")])).unwrap();
        assert_eq!(changes.len(), 1);
        assert!(changes[0].is_unclean_election());
        assert_eq!(topic.partitions[0].leader, 2);
        assert_eq!(topic.partitions[0].isr, vec![2]);
        assert_eq!(topic.partitions[0].leader_epoch, 4);
    }

    #[test]
    fn creation_merges_fields_and_configs() {
        let configs: BTreeMap<String, String> = [("retention.ms".to_string(), "5".to_string())].into();
        let merged = creation_configs(&configs, Some(2), true, 3).unwrap();
        assert_eq!(merged.len(), 3);
        let clash: BTreeMap<String, String> = [("min.insync.replicas".to_string(), "1".to_string())].into();
        assert_eq!(creation_configs(&clash, Some(2), false, 3).unwrap_err().code, ErrorCode::INVALID_CONFIG);
        assert_eq!(creation_configs(&BTreeMap::new(), Some(4), false, 3).unwrap_err().code, ErrorCode::INVALID_CONFIG);
    }
}
