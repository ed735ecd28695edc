//! More partitions for an existing topic, as pure rules (Kafka
//! `ReplicationControlManager.createPartitions`): only growth, at most
//! `MAX_PARTITIONS_PER_TOPIC`, the topic's replication factor, placed like creation. The
//! active controller plans the placement (`plan_partitions`); applying a committed command
//! (`add_partitions`) checks again and needs no choices.
use insync_types::{BrokerId, ErrorCode};

use crate::metadata::{ClusterState, TopicState};
use crate::rules::{self, RuleRejection, MAX_PARTITIONS_PER_TOPIC};

fn unknown(name: &str) -> RuleRejection {
    RuleRejection::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, format!("Topic '{name}' does not exist."))
}

/// Kafka's checks of the new count against the topic (INVALID_PARTITIONS, worded as Kafka's).
fn check_count(topic: &TopicState, count: i32) -> Result<(), RuleRejection> {
    let current = topic.partitions.len() as i32;
    let refusal = |message: String| Err(RuleRejection::new(ErrorCode::INVALID_PARTITIONS, message));
    if count == current {
        return refusal(format!("Topic already has {current} partition(s)."));
    }
    if count < current {
        return refusal(format!(
            "The topic {} currently has {current} partition(s); {count} would not be an increase.",
            topic.name
        ));
    }
    if count > MAX_PARTITIONS_PER_TOPIC {
        return refusal(format!("A topic may have at most {MAX_PARTITIONS_PER_TOPIC} partitions, not {count}."));
    }
    Ok(())
}

/// The replicas of partitions `current..count` of `name`, placed like creation
/// (`rules::assign_replicas`): round robin over the usable brokers, continuing from where the
/// topic's partition 0 starts, so leaders keep spreading.
pub fn plan_partitions(state: &ClusterState, name: &str, count: i32) -> Result<Vec<Vec<BrokerId>>, RuleRejection> {
    let topic = state.topics.get(name).ok_or_else(|| unknown(name))?;
    check_count(topic, count)?;
    let replication_factor = topic.replication_factor();
    let usable = state.eligible_broker_ids();
    if replication_factor < 1 || usable.len() < replication_factor as usize {
        return Err(RuleRejection::new(
            ErrorCode::INVALID_REPLICATION_FACTOR,
            format!(
                "Unable to replicate the new partitions {replication_factor} time(s): only {} unfenced broker(s) are available.",
                usable.len()
            ),
        ));
    }
    let first = topic.partitions.first().and_then(|p| p.replicas.first());
    let start = first.and_then(|b| usable.iter().position(|u| u == b)).unwrap_or(0);
    let current = topic.partitions.len() as i32;
    let all = rules::assign_replicas(&usable, start, count, replication_factor);
    Ok(all.into_iter().skip(current as usize).collect())
}

/// Appends the planned partitions to topic `name` if it still has id `topic_id` and the
/// `planned_from` partitions it had when planned (two requests planned on the same state must
/// not both grow it); returns the topic after it.
pub fn add_partitions(
    state: &mut ClusterState,
    name: &str,
    topic_id: &str,
    planned_from: i32,
    assignment: &[Vec<BrokerId>],
) -> Result<TopicState, RuleRejection> {
    let topic = match state.topics.get(name) {
        Some(topic) if topic.topic_id == topic_id => topic,
        _ => return Err(unknown(name)),
    };
    let current = topic.partitions.len() as i32;
    if current != planned_from {
        return Err(RuleRejection::new(
            ErrorCode::INVALID_PARTITIONS,
            format!("Topic '{name}' has {current} partition(s) now, not the {planned_from} this request was planned on; try again."),
        ));
    }
    let count = current.saturating_add(i32::try_from(assignment.len()).unwrap_or(i32::MAX));
    check_count(topic, count)?;
    let replication_factor = topic.replication_factor();
    let added = assignment
        .iter()
        .enumerate()
        .map(|(i, replicas)| rules::new_partition(state, current + i as i32, replicas, replication_factor))
        .collect::<Result<Vec<_>, _>>()?;
    let topic = state.topics.get_mut(name).ok_or_else(|| unknown(name))?;
    topic.partitions.extend(added);
    Ok(topic.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{BrokerRegistration, PartitionState};
    use std::collections::BTreeSet;

    fn state(brokers: &[BrokerId], partitions: i32) -> ClusterState {
        let mut state = ClusterState::default();
        for &id in brokers {
            state.brokers.insert(
                id,
                BrokerRegistration {
                    id,
                    address: String::new(),
                    kafka_address: String::new(),
                    incarnation: 1,
                    fenced: false,
                    in_controlled_shutdown: false,
                    broker_epoch: 1,
                    offline_replicas: BTreeSet::new(),
                },
            );
        }
        let assignment = rules::assign_replicas(brokers, 1, partitions, 3);
        let partitions = assignment
            .iter()
            .enumerate()
            .map(|(p, replicas)| PartitionState {
                partition: p as i32,
                replicas: replicas.clone(),
                isr: replicas.clone(),
                leader: replicas[0],
                leader_epoch: 2,
                partition_epoch: 4,
                unclean_elected: false,
            })
            .collect();
        state.topics.insert(
            "t".into(),
            TopicState { name: "t".into(), topic_id: "id".into(), partitions, ..TopicState::default() },
        );
        state
    }

    #[test]
    fn growth_continues_the_round_robin_and_keeps_existing_partitions() {
        let mut state = state(&[1, 2, 3], 1);
        let plan = plan_partitions(&state, "t", 4).unwrap();
        assert_eq!(plan, vec![vec![3, 1, 2], vec![1, 2, 3], vec![2, 3, 1]], "partition 0 starts at broker 2");
        let before = state.topics["t"].partitions[0].clone();
        let topic = add_partitions(&mut state, "t", "id", 1, &plan).unwrap();
        assert_eq!(topic.partitions.len(), 4);
        assert_eq!(topic.partitions[0], before, "existing partitions are untouched");
        assert_eq!(topic.partitions[1].leader, 3);
        assert_eq!((topic.partitions[3].partition, topic.partitions[3].leader_epoch), (3, 0));
    }

    #[test]
    fn only_growth_is_allowed() {
        let mut state = state(&[1, 2, 3], 2);
        for count in [1, 2, MAX_PARTITIONS_PER_TOPIC + 1] {
            assert_eq!(plan_partitions(&state, "t", count).unwrap_err().code, ErrorCode::INVALID_PARTITIONS, "{count}");
        }
        assert_eq!(plan_partitions(&state, "nope", 3).unwrap_err().code, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
        let plan = plan_partitions(&state, "t", 3).unwrap();
        assert_eq!(
            add_partitions(&mut state, "t", "other", 2, &plan).unwrap_err().code,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        );
        add_partitions(&mut state, "t", "id", 2, &plan).unwrap();
        // A second request planned on the same 2 partitions is refused, not added on top.
        assert_eq!(add_partitions(&mut state, "t", "id", 2, &plan).unwrap_err().code, ErrorCode::INVALID_PARTITIONS);
        assert_eq!(state.topics["t"].partitions.len(), 3);
    }

    #[test]
    fn too_few_usable_brokers_is_an_invalid_replication_factor() {
        let mut state = state(&[1, 2, 3], 1);
        if let Some(broker) = state.brokers.get_mut(&3) {
            broker.fenced = true;
        }
        assert_eq!(plan_partitions(&state, "t", 2).unwrap_err().code, ErrorCode::INVALID_REPLICATION_FACTOR);
    }
}
