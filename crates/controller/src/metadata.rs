//! The replicated cluster metadata: brokers, topics and partitions, as the Raft state machine
//! holds it (Kafka's `ClusterControlManager` + `ReplicationControlManager` images). Plain serde
//! types; the rules that change them live in `rules.rs`, the protobuf views in `convert.rs`.
use insync_types::{topic_config, BrokerId, LeaderEpoch, PartitionEpoch, TopicPartition, NO_BROKER};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Everything the controller quorum agrees on. Small (brokers × partitions), so it is kept
/// whole in memory and snapshotted as one JSON document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Registered brokers by id (Kafka `ClusterControlManager.brokerRegistrations`).
    pub brokers: BTreeMap<BrokerId, BrokerRegistration>,
    /// Topics by name; a BTreeMap so iteration order (and thus every derived decision) is
    /// the same on every controller.
    pub topics: BTreeMap<String, TopicState>,
    /// The next producer id to hand out (Kafka `ProducerIdControlManager`).
    #[serde(default)]
    pub next_producer_id: i64,
}

/// One broker as the controller knows it (Kafka `BrokerRegistration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub id: BrokerId,
    /// host:port that clients and follower replicas dial.
    pub address: String,
    /// host:port of the broker's Kafka listener for Kafka clients (Kafka's
    /// advertised.listeners); empty when it serves none. Default for registrations
    /// replicated before the field existed.
    #[serde(default)]
    pub kafka_address: String,
    /// Chosen by the broker process at start-up; a new value means the broker restarted
    /// (Kafka's incarnation id / broker epoch).
    pub incarnation: u64,
    /// Fenced brokers lead nothing and join no ISR (KIP-631). Brokers register fenced and
    /// are unfenced by their first heartbeat.
    pub fenced: bool,
    /// Set by a heartbeat with want_shutdown (Kafka `BrokerRegistration.inControlledShutdown`);
    /// cleared when the broker registers again.
    pub in_controlled_shutdown: bool,
    /// Kafka's broker epoch: the Raft log index of the RegisterBroker entry that began this
    /// incarnation's registration (Kafka `ClusterControlManager.registerBroker` takes the
    /// offset of the RegisterBrokerRecord). Leaders serve replica fetches only to the epoch
    /// they hold (KIP-903). 0 for registrations replicated before the field existed; such a
    /// broker gets one when it registers again.
    #[serde(default)]
    pub broker_epoch: i64,
    /// Replicas this incarnation reported offline after a storage error (Kafka's offline log
    /// directories, `BrokerRegistration.directories` minus the online ones, KIP-858): it may
    /// neither lead those partitions nor rejoin their ISRs. Cleared by a new registration,
    /// as Kafka's broker re-registers with its directories online after a restart. Empty for
    /// registrations replicated before the field existed.
    #[serde(default)]
    pub offline_replicas: BTreeSet<TopicPartition>,
}

impl BrokerRegistration {
    /// May lead and may join an ISR: Kafka's `ClusterControlManager.isActive`
    /// (unfenced and not in controlled shutdown; KIP-841).
    pub fn is_eligible(&self) -> bool {
        !self.fenced && !self.in_controlled_shutdown
    }

    /// Whether this broker's replica of `topic`-`partition` is offline (see
    /// `offline_replicas`; Kafka `ClusterControlManager.hasOnlineDir` negated).
    pub fn is_replica_offline(&self, topic: &str, partition: i32) -> bool {
        self.offline_replicas.iter().any(|tp| tp.partition == partition && tp.topic == topic)
    }

    /// May lead `topic`-`partition` (Kafka's `LeaderAcceptor`: `isActive` and the replica's
    /// directory online).
    pub fn may_lead(&self, topic: &str, partition: i32) -> bool {
        self.is_eligible() && !self.is_replica_offline(topic, partition)
    }
}

/// A topic and its per-topic configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    pub name: String,
    /// Kafka's topic id (KIP-516): a UUID the active controller chose at creation. Brokers
    /// write it next to each partition's log, so a log of a deleted topic is never taken for
    /// the log of a new topic of the same name. Empty for topics created before ids.
    #[serde(default)]
    pub topic_id: String,
    /// Topic config overrides by Kafka name (see `insync_types::topic_config`), including
    /// min.insync.replicas and unclean.leader.election.enable, which the two typed fields
    /// mirror for the rules. Empty for topics created before configs; `overrides` then
    /// derives them from the typed fields.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// `min.insync.replicas` override; None means the cluster default (brokers resolve it).
    pub min_insync_replicas: Option<i32>,
    /// `unclean.leader.election.enable` for this topic (Kafka default false).
    pub unclean_leader_election_enable: bool,
    /// Indexed by partition number: `partitions[p].partition == p`.
    pub partitions: Vec<PartitionState>,
}

impl TopicState {
    /// Every config override of the topic, by Kafka name.
    pub fn overrides(&self) -> BTreeMap<String, String> {
        let mut overrides = self.configs.clone();
        if let Some(min) = self.min_insync_replicas {
            overrides.entry(topic_config::MIN_INSYNC_REPLICAS.to_string()).or_insert_with(|| min.to_string());
        }
        if self.unclean_leader_election_enable {
            overrides.entry(topic_config::UNCLEAN_LEADER_ELECTION_ENABLE.to_string()).or_insert_with(|| "true".into());
        }
        overrides
    }

    /// Replaces the overrides (already validated) and the typed fields that mirror them.
    pub fn set_overrides(&mut self, overrides: BTreeMap<String, String>) {
        self.min_insync_replicas =
            topic_config::int_value(&overrides, topic_config::MIN_INSYNC_REPLICAS).and_then(|m| i32::try_from(m).ok());
        self.unclean_leader_election_enable =
            topic_config::bool_value(&overrides, topic_config::UNCLEAN_LEADER_ELECTION_ENABLE).unwrap_or(false);
        self.configs = overrides;
    }

    /// The replication factor (every partition has as many replicas as the first).
    pub fn replication_factor(&self) -> i32 {
        self.partitions.first().map_or(0, |p| p.replicas.len() as i32)
    }
}

/// One partition's replica assignment, leadership and ISR (Kafka `PartitionRegistration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub partition: i32,
    /// Assignment order; the first replica is the preferred leader.
    pub replicas: Vec<BrokerId>,
    /// In-sync replicas. Never empty: the last member stays even when it dies
    /// (see `rules::recompute_partition`).
    pub isr: Vec<BrokerId>,
    /// `NO_BROKER` (-1) when offline.
    pub leader: BrokerId,
    /// Bumped on every leader change.
    pub leader_epoch: LeaderEpoch,
    /// Bumped on every change of this partition (leader or ISR).
    pub partition_epoch: PartitionEpoch,
    /// The current leader was elected from outside the ISR (data may have been lost).
    pub unclean_elected: bool,
}

impl PartitionState {
    pub fn has_leader(&self) -> bool {
        self.leader != NO_BROKER
    }
}

impl ClusterState {
    /// Brokers that may host new replicas and lead, sorted by id (BTreeMap order).
    pub fn eligible_broker_ids(&self) -> Vec<BrokerId> {
        self.brokers.values().filter(|b| b.is_eligible()).map(|b| b.id).collect()
    }

    pub fn is_eligible(&self, broker_id: BrokerId) -> bool {
        self.brokers.get(&broker_id).is_some_and(BrokerRegistration::is_eligible)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        let index = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(index)
    }

    /// Partitions without a leader (Kafka's `OfflinePartitionsCount`): unwritable and
    /// unreadable until a replica of their ISR returns.
    pub fn offline_partition_count(&self) -> usize {
        self.topics.values().flat_map(|t| t.partitions.iter()).filter(|p| !p.has_leader()).count()
    }

    /// Number of partitions this broker leads (Kafka `BrokersToIsrs.hasLeaderships`).
    pub fn leadership_count(&self, broker_id: BrokerId) -> usize {
        self.topics.values().flat_map(|t| t.partitions.iter()).filter(|p| p.leader == broker_id).count()
    }
}

/// The applied metadata with the Raft log index it reflects; published to watchers after
/// every apply so readers never lock the state machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedMetadata {
    /// Raft log index of the last applied entry (0 before anything was applied).
    pub version: u64,
    pub state: ClusterState,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(partition: i32, leader: BrokerId) -> PartitionState {
        PartitionState {
            partition,
            replicas: vec![1, 2, 3],
            isr: vec![1],
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            unclean_elected: false,
        }
    }

    #[test]
    fn offline_partitions_are_those_without_a_leader() {
        let mut state = ClusterState::default();
        assert_eq!(state.offline_partition_count(), 0);
        state.topics.insert(
            "t".into(),
            TopicState {
                name: "t".into(),
                min_insync_replicas: None,
                unclean_leader_election_enable: false,
                partitions: vec![partition(0, 1), partition(1, NO_BROKER), partition(2, NO_BROKER)],
                ..TopicState::default()
            },
        );
        assert_eq!(state.offline_partition_count(), 2);
    }
}
