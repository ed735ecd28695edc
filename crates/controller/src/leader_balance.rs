//! Preferred leader election as pure rules over `ClusterState`: which partitions lead away
//! from their preferred replica, which brokers are imbalanced enough to act on, and the
//! election that moves leadership back. No I/O, no clock: `command.rs` applies them to
//! committed entries, `node.rs` decides when to propose.
//!
//! Sources: Kafka's `ReplicationControlManager.electLeader` / `maybeBalancePartitionLeaders`
//! (KRaft), `PartitionChangeBuilder` with `Election.PREFERRED`, and the per-broker imbalance
//! ratio of `KafkaController.checkAndTriggerAutoLeaderRebalance`
//! (`leader.imbalance.per.broker.percentage`).
use crate::metadata::{ClusterState, PartitionState};
use crate::rules::PartitionChange;
use insync_types::{BrokerId, ErrorCode, TopicPartition};
use std::collections::BTreeMap;

/// Kafka's `auto.leader.rebalance.enable` default.
pub const DEFAULT_AUTO_LEADER_REBALANCE_ENABLE: bool = true;
/// Kafka's `leader.imbalance.check.interval.seconds` is 300; insync checks every 30 s so that
/// on a laptop leadership visibly comes back after a failover (as the 3 s session timeout).
pub const DEFAULT_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS: u64 = 30;
/// Kafka's `leader.imbalance.per.broker.percentage` default.
pub const DEFAULT_LEADER_IMBALANCE_PER_BROKER_PERCENTAGE: u32 = 10;

/// The preferred replica (the first in assignment order) of a partition.
fn preferred(partition: &PartitionState) -> Option<BrokerId> {
    partition.replicas.first().copied()
}

/// Whether a preferred election of this partition would move its leader, else the error
/// Kafka's ElectLeaders answers for it: ELECTION_NOT_NEEDED when the preferred replica leads
/// already, PREFERRED_LEADER_NOT_AVAILABLE when it is not in the ISR or may not lead (fenced,
/// shutting down, its replica offline). Leadership only ever moves to an ISR member, so a
/// preferred election never loses acknowledged writes.
pub fn preferred_election_check(state: &ClusterState, topic: &str, partition: i32) -> Result<BrokerId, ErrorCode> {
    let Some(current) = state.partition(topic, partition) else {
        return Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
    };
    let Some(target) = preferred(current) else {
        return Err(ErrorCode::PREFERRED_LEADER_NOT_AVAILABLE);
    };
    if current.leader == target {
        return Err(ErrorCode::ELECTION_NOT_NEEDED);
    }
    let may_lead = state.brokers.get(&target).is_some_and(|broker| broker.may_lead(topic, partition));
    if !current.isr.contains(&target) || !may_lead {
        return Err(ErrorCode::PREFERRED_LEADER_NOT_AVAILABLE);
    }
    Ok(target)
}

/// Moves each listed partition's leadership to its preferred replica where
/// `preferred_election_check` allows it (checked again here: the state may have changed since
/// the active controller chose the list). A leader change bumps the leader and partition
/// epochs, as every election does; the ISR is unchanged. Returns the changes and, per listed
/// partition that did not move, why.
pub fn elect_preferred_leaders(
    state: &mut ClusterState,
    partitions: &[TopicPartition],
) -> (Vec<PartitionChange>, Vec<(TopicPartition, ErrorCode)>) {
    let mut changes = Vec::new();
    let mut refused = Vec::new();
    for tp in partitions {
        let target = match preferred_election_check(state, &tp.topic, tp.partition) {
            Ok(target) => target,
            Err(code) => {
                refused.push((tp.clone(), code));
                continue;
            }
        };
        let index = usize::try_from(tp.partition).unwrap_or(usize::MAX);
        let Some(partition) = state.topics.get_mut(&tp.topic).and_then(|t| t.partitions.get_mut(index)) else {
            refused.push((tp.clone(), ErrorCode::UNKNOWN_TOPIC_OR_PARTITION));
            continue;
        };
        let before = partition.clone();
        partition.leader = target;
        partition.leader_epoch += 1;
        partition.partition_epoch += 1;
        partition.unclean_elected = false;
        changes.push(PartitionChange { topic: tp.topic.clone(), before, after: partition.clone() });
    }
    (changes, refused)
}

/// Every partition of `topic` (all topics when None) whose preferred election would move
/// its leader now, in topic/partition order.
pub fn electable_partitions(state: &ClusterState, topic: Option<&str>) -> Vec<TopicPartition> {
    state
        .topics
        .values()
        .filter(|t| topic.is_none_or(|name| name == t.name))
        .flat_map(|t| t.partitions.iter().map(move |p| TopicPartition::new(t.name.clone(), p.partition)))
        .filter(|tp| preferred_election_check(state, &tp.topic, tp.partition).is_ok())
        .collect()
}

/// The partitions automatic rebalancing moves now: for each preferred broker, the share of
/// the partitions it prefers that another broker leads is its imbalance; above
/// `percentage` %, its electable partitions are moved back (Kafka
/// `checkAndTriggerAutoLeaderRebalance`). A partition without a leader counts as
/// imbalanced, but only an electable one moves.
pub fn imbalanced_partitions(state: &ClusterState, percentage: u32) -> Vec<TopicPartition> {
    // preferred broker -> (partitions it prefers, of those led elsewhere)
    let mut counts: BTreeMap<BrokerId, (u64, u64)> = BTreeMap::new();
    for partition in state.topics.values().flat_map(|t| t.partitions.iter()) {
        if let Some(target) = preferred(partition) {
            let entry = counts.entry(target).or_default();
            entry.0 += 1;
            if partition.leader != target {
                entry.1 += 1;
            }
        }
    }
    let over =
        |broker: BrokerId| counts.get(&broker).is_some_and(|&(total, away)| away * 100 > u64::from(percentage) * total);
    electable_partitions(state, None)
        .into_iter()
        .filter(|tp| state.partition(&tp.topic, tp.partition).and_then(preferred).is_some_and(over))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{BrokerRegistration, TopicState};
    use insync_types::NO_BROKER;
    use std::collections::BTreeSet;

    fn broker(id: BrokerId) -> BrokerRegistration {
        BrokerRegistration {
            id,
            address: String::new(),
            kafka_address: String::new(),
            incarnation: 1,
            fenced: false,
            in_controlled_shutdown: false,
            broker_epoch: 1,
            offline_replicas: BTreeSet::new(),
        }
    }

    /// Brokers 1..=3 and topic `t` with one partition per (replicas, isr, leader).
    fn state(partitions: &[(&[BrokerId], &[BrokerId], BrokerId)]) -> ClusterState {
        let mut state = ClusterState::default();
        for id in 1..=3 {
            state.brokers.insert(id, broker(id));
        }
        let partitions = partitions
            .iter()
            .enumerate()
            .map(|(index, (replicas, isr, leader))| PartitionState {
                partition: index as i32,
                replicas: replicas.to_vec(),
                isr: isr.to_vec(),
                leader: *leader,
                leader_epoch: 4,
                partition_epoch: 7,
                unclean_elected: false,
            })
            .collect();
        let topic = TopicState {
            name: "t".into(),
            min_insync_replicas: None,
            unclean_leader_election_enable: false,
            partitions,
            ..TopicState::default()
        };
        state.topics.insert("t".into(), topic);
        state
    }

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("t", partition)
    }

    #[test]
    fn election_moves_leadership_to_the_preferred_isr_member_with_epoch_bumps() {
        let mut state = state(&[(&[1, 2, 3], &[1, 2, 3], 2)]);
        let (changes, refused) = elect_preferred_leaders(&mut state, &[tp(0)]);
        assert!(refused.is_empty());
        assert_eq!(changes.len(), 1);
        let after = state.partition("t", 0).cloned().expect("partition");
        assert_eq!((after.leader, after.leader_epoch, after.partition_epoch), (1, 5, 8));
        assert_eq!(after.isr, vec![1, 2, 3], "a preferred election leaves the ISR alone");
        assert_eq!(changes[0].to_string(), "t-0 leader 2 -> 1 (epoch 4 -> 5)");
    }

    #[test]
    fn election_refuses_what_kafka_refuses() {
        let mut state = state(&[
            (&[1, 2, 3], &[1, 2, 3], 1), // already preferred
            (&[1, 2, 3], &[2, 3], 2),    // preferred not in the ISR
            (&[3, 1, 2], &[1, 2, 3], 1), // preferred fenced
            (&[2, 1, 3], &[1, 2, 3], 1), // preferred's replica offline
        ]);
        state.brokers.get_mut(&3).expect("broker 3").fenced = true;
        state.brokers.get_mut(&2).expect("broker 2").offline_replicas.insert(tp(3));
        let before = state.clone();
        let (changes, refused) = elect_preferred_leaders(&mut state, &[tp(0), tp(1), tp(2), tp(3), tp(9)]);
        assert!(changes.is_empty());
        assert_eq!(state, before, "nothing moved");
        let codes: Vec<ErrorCode> = refused.iter().map(|(_, code)| *code).collect();
        assert_eq!(
            codes,
            vec![
                ErrorCode::ELECTION_NOT_NEEDED,
                ErrorCode::PREFERRED_LEADER_NOT_AVAILABLE,
                ErrorCode::PREFERRED_LEADER_NOT_AVAILABLE,
                ErrorCode::PREFERRED_LEADER_NOT_AVAILABLE,
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            ]
        );
    }

    #[test]
    fn rebalancing_acts_only_on_brokers_past_the_imbalance_percentage() {
        // Broker 1 prefers 10 partitions and leads 8 (20% away); broker 2 prefers 10 and
        // leads all but one (10%: not over 10%).
        let mut layout: Vec<(&[BrokerId], &[BrokerId], BrokerId)> = Vec::new();
        for i in 0..10 {
            layout.push((&[1, 2, 3], &[1, 2, 3], if i < 2 { 3 } else { 1 }));
        }
        for i in 0..10 {
            layout.push((&[2, 3, 1], &[1, 2, 3], if i < 1 { 3 } else { 2 }));
        }
        let state = state(&layout);
        assert_eq!(imbalanced_partitions(&state, 10), vec![tp(0), tp(1)]);
        assert_eq!(imbalanced_partitions(&state, 25), Vec::<TopicPartition>::new());
        assert_eq!(imbalanced_partitions(&state, 0), vec![tp(0), tp(1), tp(10)]);
        assert_eq!(electable_partitions(&state, Some("other")), Vec::<TopicPartition>::new());
    }

    #[test]
    fn leaderless_partitions_count_but_move_only_when_electable() {
        // The preferred replica is back in the ISR of an offline partition: it is elected.
        let state = state(&[(&[1, 2, 3], &[1], NO_BROKER), (&[1, 2, 3], &[2], NO_BROKER)]);
        assert_eq!(imbalanced_partitions(&state, 10), vec![tp(0)]);
    }
}
