//! Domain ↔ protobuf conversions for the metadata the controller serves (`ClusterMetadata`,
//! `TopicMetadata`, …). Kept apart so the rules and the state machine never see wire types.
use crate::command::Command;
use crate::metadata::{AppliedMetadata, BrokerRegistration, PartitionState, TopicState};
use insync_proto::{AlterPartitionRequest, BrokerMetadata, ClusterMetadata, PartitionMetadata, TopicMetadata};

/// The Raft command an AlterPartition request proposes (`ControllerService::alter`; the
/// broker's in-process harness proposes it too). The broker epochs go as the request lists
/// them, duplicates included, for `rules::alter_partition` to judge.
pub fn alter_partition_command(request: AlterPartitionRequest) -> Command {
    Command::AlterPartition {
        broker_id: request.broker_id,
        topic: request.topic,
        partition: request.partition,
        leader_epoch: request.leader_epoch,
        partition_epoch: request.partition_epoch,
        new_isr: request.new_isr,
        new_isr_broker_epochs: request.new_isr_broker_epochs.iter().map(|m| (m.broker_id, m.broker_epoch)).collect(),
    }
}

pub fn partition_to_proto(partition: &PartitionState) -> PartitionMetadata {
    PartitionMetadata {
        partition: partition.partition,
        leader: partition.leader,
        leader_epoch: partition.leader_epoch,
        partition_epoch: partition.partition_epoch,
        replicas: partition.replicas.clone(),
        isr: partition.isr.clone(),
        unclean_elected: partition.unclean_elected,
    }
}

/// `min_insync_replicas` 0 on the wire means "cluster default" (None here).
pub fn topic_to_proto(topic: &TopicState) -> TopicMetadata {
    TopicMetadata {
        name: topic.name.clone(),
        partitions: topic.partitions.iter().map(partition_to_proto).collect(),
        min_insync_replicas: topic.min_insync_replicas.unwrap_or(0),
        unclean_leader_election_enable: topic.unclean_leader_election_enable,
        topic_id: topic.topic_id.clone(),
        configs: topic.overrides().into_iter().collect(),
    }
}

pub fn broker_to_proto(broker: &BrokerRegistration) -> BrokerMetadata {
    BrokerMetadata {
        id: broker.id,
        address: broker.address.clone(),
        kafka_address: broker.kafka_address.clone(),
        fenced: broker.fenced,
        in_controlled_shutdown: broker.in_controlled_shutdown,
        incarnation: broker.incarnation,
        broker_epoch: broker.broker_epoch,
        // Liveness is not part of the replicated state; only the active controller knows it
        // and fills it in (`ControllerService::metadata_view`).
        last_heartbeat_ms_ago: -1,
    }
}

/// Who the active controller is, as known from Raft metrics at the time of the call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ControllerIdentity {
    /// -1 when unknown (no leader elected / not yet heard from it).
    pub controller_id: i32,
    pub controller_address: String,
}

/// The full metadata view; `topics` filters by name (empty: all topics, unknown names are
/// left out as Kafka's Metadata response leaves them out of the topic list).
pub fn cluster_metadata(
    applied: &AppliedMetadata,
    controller: &ControllerIdentity,
    default_min_insync_replicas: i32,
    topics: &[String],
) -> ClusterMetadata {
    let selected: Vec<TopicMetadata> = if topics.is_empty() {
        applied.state.topics.values().map(topic_to_proto).collect()
    } else {
        applied.state.topics.values().filter(|t| topics.contains(&t.name)).map(topic_to_proto).collect()
    };
    ClusterMetadata {
        version: applied.version,
        controller_id: controller.controller_id,
        controller_address: controller.controller_address.clone(),
        brokers: applied.state.brokers.values().map(broker_to_proto).collect(),
        topics: selected,
        default_min_insync_replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::ClusterState;

    #[test]
    fn default_min_isr_is_zero_on_the_wire_and_filters_apply() {
        let mut state = ClusterState::default();
        for (name, min_isr) in [("a", None), ("b", Some(2))] {
            state.topics.insert(
                name.to_string(),
                TopicState {
                    name: name.to_string(),
                    min_insync_replicas: min_isr,
                    unclean_leader_election_enable: false,
                    partitions: vec![PartitionState {
                        partition: 0,
                        replicas: vec![1],
                        isr: vec![1],
                        leader: 1,
                        leader_epoch: 0,
                        partition_epoch: 0,
                        unclean_elected: false,
                    }],
                    ..TopicState::default()
                },
            );
        }
        let applied = AppliedMetadata { version: 12, state };
        let controller = ControllerIdentity { controller_id: 1, controller_address: "127.0.0.1:9191".to_string() };
        let all = cluster_metadata(&applied, &controller, 1, &[]);
        assert_eq!(all.version, 12);
        assert_eq!(all.topics.iter().map(|t| t.min_insync_replicas).collect::<Vec<_>>(), vec![0, 2]);
        let only_b = cluster_metadata(&applied, &controller, 1, &["b".to_string(), "zz".to_string()]);
        assert_eq!(only_b.topics.len(), 1);
        assert_eq!(only_b.topics[0].name, "b");
    }
}
