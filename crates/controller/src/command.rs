//! The metadata commands replicated through Raft and their deterministic application to
//! `ClusterState` (Kafka's metadata records replayed by every controller, KIP-631). The
//! active controller computes everything that needs a choice (replica placement, the fencing
//! reason and its timing) *before* proposing; applying only validates and calls `rules.rs`,
//! so every controller, and every replay after a restart, reaches the same state. Each
//! applied fencing, election, ISR change and topic creation is logged here in one line.
use crate::leader_balance;
use crate::metadata::{BrokerRegistration, ClusterState, PartitionState, TopicState};
use crate::partition_growth;
use crate::rules::{
    self, describe_changes, format_ids, AlterPartitionSpec, PartitionChange, RegistrationKind, RuleRejection,
};
use crate::topic_configs::{self, ConfigChange};
use insync_types::{BrokerId, ErrorCode, TopicPartition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A metadata change proposed by the active controller (openraft `AppData`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Kafka RegisterBrokerRecord: (re)register, fenced. `kafka_address` is the Kafka
    /// listener's advertised host:port (RegisterBrokerRecord's endpoints); `serde(default)`
    /// keeps log entries and snapshots written before it readable.
    RegisterBroker {
        broker_id: BrokerId,
        address: String,
        incarnation: u64,
        #[serde(default)]
        kafka_address: String,
    },
    /// First heartbeat of a registered incarnation (KIP-631 UNFENCED transition).
    UnfenceBroker { broker_id: BrokerId, incarnation: u64 },
    /// Session expired (Kafka `maybeFenceOneStaleBroker`). `reason` is computed by the active
    /// controller from its clock so that every replica logs the same words.
    FenceBroker { broker_id: BrokerId, incarnation: u64, reason: String },
    /// Heartbeat with want_shutdown (KIP-631 CONTROLLED_SHUTDOWN).
    ControlledShutdown { broker_id: BrokerId, incarnation: u64 },
    /// A topic whose replica assignment the active controller already computed.
    CreateTopic {
        name: String,
        assignment: Vec<Vec<BrokerId>>,
        min_insync_replicas: Option<i32>,
        unclean_leader_election_enable: bool,
        /// Chosen by the active controller (KIP-516); empty in entries written before ids.
        #[serde(default)]
        topic_id: String,
        /// Config overrides, validated by the active controller (`topic_configs`), including
        /// the two typed fields above; empty in entries written before configs.
        #[serde(default)]
        configs: BTreeMap<String, String>,
    },
    /// Topic config overrides changed (Kafka's ConfigRecords for a TOPIC resource), checked
    /// again when applied; `topic_id` as for DeleteTopic.
    AlterTopicConfigs { name: String, topic_id: String, change: ConfigChange },
    /// More partitions for a topic (Kafka CreatePartitions): the replicas of each new
    /// partition as the active controller placed them when the topic had `planned_from`.
    CreatePartitions { name: String, topic_id: String, planned_from: i32, assignment: Vec<Vec<BrokerId>> },
    /// Removes a topic (Kafka `ReplicationControlManager.deleteTopic`, a RemoveTopicRecord).
    /// `topic_id` is the id the active controller saw: a topic deleted and re-created between
    /// the check and the commit is not deleted by mistake.
    DeleteTopic { name: String, topic_id: String },
    /// An ISR change requested by a partition leader.
    AlterPartition {
        broker_id: BrokerId,
        topic: String,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<BrokerId>,
        /// (member, broker epoch) from the request (KIP-903, see `AlterPartitionSpec`).
        /// `serde(default)` keeps log entries and snapshots written before it readable.
        #[serde(default)]
        new_isr_broker_epochs: Vec<(BrokerId, i64)>,
    },
    /// A block of producer ids for a broker's idempotent producers (Kafka
    /// `ProducerIdsRecord`, KIP-730): ids are unique cluster-wide because the block comes
    /// from the replicated counter.
    AllocateProducerIds { broker_id: BrokerId, incarnation: u64 },
    /// Replicas a broker took offline after a storage error, as its heartbeat reported them
    /// (Kafka's BrokerRegistrationChangeRecord with the remaining online directories plus the
    /// PartitionChangeRecords of `handleDirectoriesOffline`). `serde(default)`: an entry
    /// without the list reads as reporting none.
    MarkReplicasOffline {
        broker_id: BrokerId,
        incarnation: u64,
        #[serde(default)]
        replicas: Vec<TopicPartition>,
    },
    /// Preferred leader elections (Kafka's ElectLeaders with `Election.PREFERRED`, and the
    /// automatic `maybeBalancePartitionLeaders`): the partitions the active controller found
    /// electable; each is checked again when applied. `reason` is for the log line.
    ElectPreferredLeaders { partitions: Vec<TopicPartition>, reason: String },
}

/// Producer ids handed out per AllocateProducerIds (Kafka allocates blocks of 1000).
pub const PRODUCER_ID_BLOCK_SIZE: i32 = 1000;

/// The outcome of applying one log entry (openraft `AppDataResponse`), returned to the
/// proposer. Rejections are results, not Raft errors: the entry stays in the log and
/// replays to the same rejection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub error_code: ErrorCode,
    pub error_message: String,
    /// AlterPartition: the partition as committed.
    pub partition: Option<PartitionState>,
    /// CreateTopic: the topic as created.
    pub topic: Option<TopicState>,
    /// Broker commands: the registration afterwards.
    pub broker: Option<BrokerRegistration>,
    /// AllocateProducerIds: (first id, count).
    #[serde(default)]
    pub producer_id_block: Option<(i64, i32)>,
    /// ElectPreferredLeaders: per listed partition, NONE where leadership moved, else why not.
    #[serde(default)]
    pub elections: Vec<(TopicPartition, ErrorCode)>,
}

impl CommandResult {
    pub fn ok() -> Self {
        Self {
            error_code: ErrorCode::NONE,
            error_message: String::new(),
            partition: None,
            topic: None,
            broker: None,
            producer_id_block: None,
            elections: Vec::new(),
        }
    }

    fn rejected(rejection: RuleRejection) -> Self {
        Self { error_code: rejection.code, error_message: rejection.message, ..Self::ok() }
    }

    fn with_broker(state: &ClusterState, broker_id: BrokerId) -> Self {
        Self { broker: state.brokers.get(&broker_id).cloned(), ..Self::ok() }
    }

    pub fn is_ok(&self) -> bool {
        self.error_code == ErrorCode::NONE
    }
}

/// Applies one command at Raft log `index` (used in log lines to tie a change to its entry).
pub fn apply_command(state: &mut ClusterState, command: &Command, index: u64) -> CommandResult {
    match command {
        Command::RegisterBroker { broker_id, address, incarnation, kafka_address } => {
            apply_register_broker(state, *broker_id, address, kafka_address, *incarnation, index)
        }
        Command::UnfenceBroker { broker_id, incarnation } => {
            apply_unfence_broker(state, *broker_id, *incarnation, index)
        }
        Command::FenceBroker { broker_id, incarnation, reason } => {
            apply_fence_broker(state, *broker_id, *incarnation, reason, index)
        }
        Command::ControlledShutdown { broker_id, incarnation } => {
            apply_controlled_shutdown(state, *broker_id, *incarnation, index)
        }
        Command::CreateTopic {
            name,
            assignment,
            min_insync_replicas,
            unclean_leader_election_enable,
            topic_id,
            configs,
        } => {
            let spec = TopicSpec {
                name,
                assignment,
                min_insync_replicas: *min_insync_replicas,
                unclean_leader_election_enable: *unclean_leader_election_enable,
                topic_id,
                configs,
            };
            apply_create_topic(state, &spec, index)
        }
        Command::AlterTopicConfigs { name, topic_id, change } => {
            apply_alter_topic_configs(state, name, topic_id, change, index)
        }
        Command::CreatePartitions { name, topic_id, planned_from, assignment } => {
            apply_create_partitions(state, name, topic_id, *planned_from, assignment, index)
        }
        Command::DeleteTopic { name, topic_id } => apply_delete_topic(state, name, topic_id, index),
        Command::AlterPartition {
            broker_id,
            topic,
            partition,
            leader_epoch,
            partition_epoch,
            new_isr,
            new_isr_broker_epochs,
        } => {
            let spec = AlterPartitionSpec {
                broker_id: *broker_id,
                topic: topic.clone(),
                partition: *partition,
                leader_epoch: *leader_epoch,
                partition_epoch: *partition_epoch,
                new_isr: new_isr.clone(),
                new_isr_broker_epochs: new_isr_broker_epochs.clone(),
            };
            apply_alter_partition(state, &spec, index)
        }
        Command::MarkReplicasOffline { broker_id, incarnation, replicas } => {
            apply_mark_replicas_offline(state, *broker_id, *incarnation, replicas, index)
        }
        Command::ElectPreferredLeaders { partitions, reason } => {
            apply_elect_preferred_leaders(state, partitions, reason, index)
        }
        Command::AllocateProducerIds { broker_id, incarnation } => {
            if let Err(rejection) = rules::check_incarnation(state, *broker_id, *incarnation) {
                return CommandResult::rejected(rejection);
            }
            let first = state.next_producer_id;
            state.next_producer_id += i64::from(PRODUCER_ID_BLOCK_SIZE);
            tracing::debug!(index, "producer ids {first}..{} allocated to broker {broker_id}", state.next_producer_id);
            CommandResult { producer_id_block: Some((first, PRODUCER_ID_BLOCK_SIZE)), ..CommandResult::ok() }
        }
    }
}

/// KIP-631 UNFENCED transition, on the first heartbeat of the registered incarnation; a
/// broker already unfenced is left as it is (the command replays harmlessly).
fn apply_unfence_broker(state: &mut ClusterState, broker_id: BrokerId, incarnation: u64, index: u64) -> CommandResult {
    if let Err(rejection) = rules::check_incarnation(state, broker_id, incarnation) {
        return CommandResult::rejected(rejection);
    }
    if !state.brokers[&broker_id].fenced {
        return CommandResult::with_broker(state, broker_id);
    }
    let changes = rules::unfence_broker(state, broker_id);
    tracing::info!(
        index,
        "unfenced broker {broker_id} (incarnation {incarnation}): first heartbeat of its session; {}",
        describe_changes(&changes)
    );
    log_unclean_elections(&changes, "an unfencing");
    CommandResult::with_broker(state, broker_id)
}

/// Fences a broker whose session expired (`reason` as the active controller worded it); a
/// broker already fenced is left as it is.
fn apply_fence_broker(
    state: &mut ClusterState,
    broker_id: BrokerId,
    incarnation: u64,
    reason: &str,
    index: u64,
) -> CommandResult {
    if let Err(rejection) = rules::check_incarnation(state, broker_id, incarnation) {
        return CommandResult::rejected(rejection);
    }
    if state.brokers[&broker_id].fenced {
        return CommandResult::with_broker(state, broker_id);
    }
    let changes = rules::fence_broker(state, broker_id);
    tracing::info!(index, "fenced broker {broker_id}: {reason}; {}", describe_changes(&changes));
    log_unclean_elections(&changes, "a fencing");
    CommandResult::with_broker(state, broker_id)
}

/// KIP-631 CONTROLLED_SHUTDOWN: the broker's leadership moves and it leaves every ISR; a
/// broker already shutting down is left as it is.
fn apply_controlled_shutdown(
    state: &mut ClusterState,
    broker_id: BrokerId,
    incarnation: u64,
    index: u64,
) -> CommandResult {
    if let Err(rejection) = rules::check_incarnation(state, broker_id, incarnation) {
        return CommandResult::rejected(rejection);
    }
    if state.brokers[&broker_id].in_controlled_shutdown {
        return CommandResult::with_broker(state, broker_id);
    }
    let changes = rules::begin_controlled_shutdown(state, broker_id);
    tracing::info!(
        index,
        "broker {broker_id} began controlled shutdown: moved its leadership and left every ISR; {}",
        describe_changes(&changes)
    );
    log_unclean_elections(&changes, "a controlled shutdown");
    CommandResult::with_broker(state, broker_id)
}

/// Records a broker's replicas offline and moves their leadership and ISR membership away
/// (`rules::mark_replicas_offline`); replicas already recorded, or not the broker's, change
/// nothing (two heartbeats racing with the same report both succeed).
fn apply_mark_replicas_offline(
    state: &mut ClusterState,
    broker_id: BrokerId,
    incarnation: u64,
    replicas: &[TopicPartition],
    index: u64,
) -> CommandResult {
    if let Err(rejection) = rules::check_incarnation(state, broker_id, incarnation) {
        return CommandResult::rejected(rejection);
    }
    let outcome = rules::mark_replicas_offline(state, broker_id, replicas);
    if outcome.recorded.is_empty() {
        return CommandResult::with_broker(state, broker_id);
    }
    let names: Vec<String> = outcome.recorded.iter().map(ToString::to_string).collect();
    tracing::warn!(
        index,
        broker_id,
        "broker {broker_id} took replica(s) {} offline after a storage error: it leaves their ISRs, their \
         leadership moves, and it is not elected for them until it registers again; {}",
        names.join(", "),
        describe_changes(&outcome.changes)
    );
    log_unclean_elections(&outcome.changes, "a replica going offline");
    CommandResult::with_broker(state, broker_id)
}

/// Moves leadership back to preferred replicas that are in the ISR; one INFO line for all
/// partitions moved.
fn apply_elect_preferred_leaders(
    state: &mut ClusterState,
    partitions: &[TopicPartition],
    reason: &str,
    index: u64,
) -> CommandResult {
    let (changes, refused) = leader_balance::elect_preferred_leaders(state, partitions);
    if !changes.is_empty() {
        tracing::info!(
            index,
            elected = changes.len(),
            "preferred leader election ({reason}): leadership returns to the preferred in-sync replica; {}",
            describe_changes(&changes)
        );
    }
    let mut elections: Vec<(TopicPartition, ErrorCode)> =
        changes.iter().map(|c| (TopicPartition::new(c.topic.clone(), c.after.partition), ErrorCode::NONE)).collect();
    elections.extend(refused);
    CommandResult { elections, ..CommandResult::ok() }
}

/// Creates a topic with the assignment the active controller computed, logging its layout.
/// Removes the topic if it still has the id the active controller saw. Brokers learn it from
/// the metadata and delete their replicas; offline-replica records of it go too, so a topic
/// re-created under the name starts with every replica online.
fn apply_delete_topic(state: &mut ClusterState, name: &str, topic_id: &str, index: u64) -> CommandResult {
    match state.topics.get(name) {
        Some(topic) if topic.topic_id == topic_id => {}
        _ => {
            return CommandResult::rejected(RuleRejection::new(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("Topic '{name}' (id {topic_id}) does not exist."),
            ))
        }
    }
    let removed = state.topics.remove(name);
    for broker in state.brokers.values_mut() {
        broker.offline_replicas.retain(|tp| tp.topic != name);
    }
    let partitions = removed.as_ref().map_or(0, |t| t.partitions.len());
    tracing::info!(
        index,
        topic_id,
        "deleted topic {name} ({partitions} partition(s)): brokers stop serving it and delete its logs"
    );
    CommandResult { topic: removed, ..CommandResult::ok() }
}

/// A CreateTopic command's fields.
struct TopicSpec<'a> {
    name: &'a str,
    assignment: &'a [Vec<BrokerId>],
    min_insync_replicas: Option<i32>,
    unclean_leader_election_enable: bool,
    topic_id: &'a str,
    configs: &'a BTreeMap<String, String>,
}

fn apply_create_topic(state: &mut ClusterState, spec: &TopicSpec<'_>, index: u64) -> CommandResult {
    let TopicSpec { name, assignment, min_insync_replicas, unclean_leader_election_enable, topic_id, configs } = *spec;
    match rules::create_topic(state, name, assignment, min_insync_replicas, unclean_leader_election_enable) {
        Err(rejection) => {
            tracing::info!(index, "rejected creation of topic {name}: {rejection}");
            CommandResult::rejected(rejection)
        }
        Ok(mut topic) => {
            topic.topic_id = topic_id.to_string();
            if !configs.is_empty() {
                topic.set_overrides(configs.clone());
            }
            if let Some(stored) = state.topics.get_mut(name) {
                *stored = topic.clone();
            }
            let layout: Vec<String> = topic
                .partitions
                .iter()
                .map(|p| format!("{}: replicas {} leader {}", p.partition, format_ids(&p.replicas), p.leader))
                .collect();
            tracing::info!(
                index,
                topic_id,
                "created topic {name}: {} partition(s), replication factor {}, configs {}; {}",
                topic.partitions.len(),
                topic.replication_factor(),
                format_configs(&topic.overrides()),
                layout.join(", ")
            );
            CommandResult { topic: Some(topic), ..CommandResult::ok() }
        }
    }
}

/// Adds the planned partitions; one INFO line with their layout.
fn apply_create_partitions(
    state: &mut ClusterState,
    name: &str,
    topic_id: &str,
    planned_from: i32,
    assignment: &[Vec<BrokerId>],
    index: u64,
) -> CommandResult {
    match partition_growth::add_partitions(state, name, topic_id, planned_from, assignment) {
        Err(rejection) => {
            tracing::info!(index, "rejected new partitions for topic {name}: {rejection}");
            CommandResult::rejected(rejection)
        }
        Ok(topic) => {
            let layout: Vec<String> = topic
                .partitions
                .iter()
                .skip(usize::try_from(planned_from).unwrap_or(0))
                .map(|p| format!("{}: replicas {} leader {}", p.partition, format_ids(&p.replicas), p.leader))
                .collect();
            tracing::info!(
                index,
                topic_id,
                "topic {name} grew from {planned_from} to {} partitions; {}",
                topic.partitions.len(),
                layout.join(", ")
            );
            CommandResult { topic: Some(topic), ..CommandResult::ok() }
        }
    }
}

/// `k=v, ...`, or "cluster defaults" for none.
fn format_configs(configs: &BTreeMap<String, String>) -> String {
    if configs.is_empty() {
        return "cluster defaults".to_string();
    }
    configs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// Changes a topic's config overrides; one INFO line, plus the WARN of any unclean election
/// that turning unclean.leader.election.enable on made.
fn apply_alter_topic_configs(
    state: &mut ClusterState,
    name: &str,
    topic_id: &str,
    change: &ConfigChange,
    index: u64,
) -> CommandResult {
    let before = state.topics.get(name).map(|t| t.overrides()).unwrap_or_default();
    match topic_configs::alter_topic_configs(state, name, topic_id, change) {
        Err(rejection) => {
            tracing::info!(index, "rejected config change of topic {name}: {rejection}");
            CommandResult::rejected(rejection)
        }
        Ok((topic, changes)) => {
            tracing::info!(
                index,
                topic_id,
                "topic {name} configs changed: {} -> {}; brokers apply them without a restart",
                format_configs(&before),
                format_configs(&topic.overrides())
            );
            log_unclean_elections(&changes, "unclean.leader.election.enable was turned on");
            CommandResult { topic: Some(topic), ..CommandResult::ok() }
        }
    }
}

/// An ISR change requested by a partition leader: committed, or rejected with the reason.
fn apply_alter_partition(state: &mut ClusterState, spec: &AlterPartitionSpec, index: u64) -> CommandResult {
    match rules::alter_partition(state, spec) {
        Err(rejection) => {
            tracing::info!(
                index,
                "rejected AlterPartition from broker {} for {}-{} (isr -> {}): {rejection}",
                spec.broker_id,
                spec.topic,
                spec.partition,
                format_ids(&spec.new_isr)
            );
            CommandResult::rejected(rejection)
        }
        Ok((committed, change)) => {
            if let Some(change) = change {
                tracing::info!(index, "ISR change requested by leader {}: {change}", spec.broker_id);
            }
            CommandResult { partition: Some(committed), ..CommandResult::ok() }
        }
    }
}

/// Unclean elections can lose acknowledged records: each gets its own WARN line on top of
/// the INFO line of the event (Kafka logs unclean elections at INFO while clean ones are at
/// TRACE, for the same reason).
fn log_unclean_elections(changes: &[PartitionChange], event: &str) {
    for change in changes.iter().filter(|c| c.is_unclean_election()) {
        tracing::warn!(
            "UNCLEAN LEADER ELECTION after {event}: {}-{} has no live in-sync replica; elected out-of-sync replica {} (epoch {} -> {}), isr {} -> {}. Records acknowledged by the old ISR may be LOST (unclean.leader.election.enable=true for topic {}).",
            change.topic,
            change.after.partition,
            change.after.leader,
            change.before.leader_epoch,
            change.after.leader_epoch,
            format_ids(&change.before.isr),
            format_ids(&change.after.isr),
            change.topic
        );
    }
}

/// Kafka RegisterBrokerRecord replay: (re)registers a broker, fenced, at broker epoch `index`.
fn apply_register_broker(
    state: &mut ClusterState,
    broker_id: BrokerId,
    address: &str,
    kafka_address: &str,
    incarnation: u64,
    index: u64,
) -> CommandResult {
    // Kafka's broker epoch is the offset of the registration record; the Raft index
    // is ours, the same on every controller and on every replay. Never 0 (unknown).
    let broker_epoch = i64::try_from(index).unwrap_or(i64::MAX).max(1);
    match rules::register_broker(state, broker_id, address, kafka_address, incarnation, broker_epoch) {
        Err(rejection) => {
            tracing::info!(index, "rejected registration of broker {broker_id}: {rejection}");
            CommandResult::rejected(rejection)
        }
        Ok(outcome) => {
            match outcome.kind {
                RegistrationKind::New => tracing::info!(
                    index,
                    broker_epoch,
                    "registered broker {broker_id} at {address} (incarnation {incarnation}), fenced until its first heartbeat"
                ),
                RegistrationKind::Repeated => tracing::debug!(
                    index,
                    "broker {broker_id} registered again with the same incarnation {incarnation}"
                ),
                RegistrationKind::Restarted { previous_incarnation } => tracing::info!(
                    index,
                    broker_epoch,
                    "registered broker {broker_id} at {address}: restarted (incarnation {previous_incarnation} -> {incarnation}), fenced until its first heartbeat; {}",
                    describe_changes(&outcome.changes)
                ),
            }
            log_unclean_elections(&outcome.changes, "a restart");
            CommandResult::with_broker(state, broker_id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(state: &mut ClusterState, broker_id: BrokerId, incarnation: u64) -> CommandResult {
        let command = Command::RegisterBroker {
            broker_id,
            address: format!("127.0.0.1:{}", 9091 + broker_id),
            incarnation,
            kafka_address: format!("127.0.0.1:{}", 19091 + broker_id),
        };
        apply_command(state, &command, 1)
    }

    #[test]
    fn registrations_replicated_before_kafka_addresses_still_apply() {
        // Raft log entries and snapshots written before `kafka_address` existed must replay.
        let old = r#"{"RegisterBroker":{"broker_id":1,"address":"127.0.0.1:9092","incarnation":5}}"#;
        let command: Command = serde_json::from_str(old).expect("old RegisterBroker entry");
        let mut state = ClusterState::default();
        assert!(apply_command(&mut state, &command, 1).is_ok());
        assert_eq!(state.brokers[&1].kafka_address, "");
        let old_registration =
            r#"{"id":1,"address":"127.0.0.1:9092","incarnation":5,"fenced":true,"in_controlled_shutdown":false}"#;
        let registration: BrokerRegistration = serde_json::from_str(old_registration).expect("old snapshot");
        assert_eq!(registration.kafka_address, "");
        assert_eq!(registration.broker_epoch, 0, "old snapshots have no broker epoch");
        assert!(register(&mut state, 2, 1).is_ok());
        assert_eq!(state.brokers[&2].kafka_address, "127.0.0.1:19093", "new registrations carry it");
    }

    #[test]
    fn the_broker_epoch_is_the_index_of_the_registration_entry() {
        // Kafka ClusterControlManager.registerBroker: the epoch is the registration record's
        // offset, so a restart gets a larger one and a retried request gets the same one.
        let register_at = |state: &mut ClusterState, incarnation: u64, index: u64| {
            let command = Command::RegisterBroker {
                broker_id: 1,
                address: "127.0.0.1:9092".to_string(),
                incarnation,
                kafka_address: String::new(),
            };
            apply_command(state, &command, index).broker.map(|b| b.broker_epoch)
        };
        let mut state = ClusterState::default();
        assert_eq!(register_at(&mut state, 5, 12), Some(12));
        assert_eq!(register_at(&mut state, 5, 13), Some(12), "same incarnation: same epoch");
        assert_eq!(register_at(&mut state, 6, 20), Some(20), "restart: a new epoch");
        assert_eq!(crate::convert::broker_to_proto(&state.brokers[&1]).broker_epoch, 20);
        // A registration replicated before epochs existed gets one when it registers again.
        if let Some(registration) = state.brokers.get_mut(&1) {
            registration.broker_epoch = 0;
        }
        assert_eq!(register_at(&mut state, 6, 30), Some(30));
        assert_eq!(register_at(&mut state, 7, 0), Some(1), "never 0, which means unknown");
    }

    #[test]
    fn broker_lifecycle_commands_check_the_incarnation() {
        // ClusterControlManager.checkBrokerEpoch: a stale incarnation changes nothing.
        let mut state = ClusterState::default();
        assert!(register(&mut state, 1, 7).is_ok());
        assert!(state.brokers[&1].fenced, "KIP-631: brokers register fenced");

        let stale = apply_command(&mut state, &Command::UnfenceBroker { broker_id: 1, incarnation: 6 }, 2);
        assert_eq!(stale.error_code, ErrorCode::STALE_BROKER_EPOCH);
        assert!(state.brokers[&1].fenced);

        let unfenced = apply_command(&mut state, &Command::UnfenceBroker { broker_id: 1, incarnation: 7 }, 3);
        assert!(unfenced.is_ok());
        assert!(!unfenced.broker.unwrap().fenced);

        let fence = Command::FenceBroker { broker_id: 1, incarnation: 7, reason: "test".to_string() };
        assert!(apply_command(&mut state, &fence, 4).is_ok());
        assert!(state.brokers[&1].fenced);
        // Fencing again is a no-op success: two racing proposals both end fenced.
        assert!(apply_command(&mut state, &fence, 5).is_ok());
    }

    #[test]
    fn create_topic_is_deterministic_and_rejects_the_second_racer() {
        let mut state = ClusterState::default();
        for id in 1..=3 {
            register(&mut state, id, 1);
            apply_command(&mut state, &Command::UnfenceBroker { broker_id: id, incarnation: 1 }, 2);
        }
        let create = Command::CreateTopic {
            name: "foo".to_string(),
            assignment: vec![vec![1, 2, 3], vec![2, 3, 1]],
            min_insync_replicas: Some(2),
            unclean_leader_election_enable: false,
            topic_id: "id-1".to_string(),
            configs: BTreeMap::new(),
        };
        let mut replica = state.clone();
        let first = apply_command(&mut state, &create, 3);
        assert_eq!(first, apply_command(&mut replica, &create, 3), "same entry, same result on every controller");
        assert_eq!(state, replica);
        assert_eq!(first.topic.unwrap().partitions[1].leader, 2);
        let second = apply_command(&mut state, &create, 4);
        assert_eq!(second.error_code, ErrorCode::TOPIC_ALREADY_EXISTS);
    }

    #[test]
    fn delete_topic_removes_only_the_topic_with_the_id_seen() {
        let mut state = ClusterState::default();
        for id in 1..=2 {
            register(&mut state, id, 1);
            apply_command(&mut state, &Command::UnfenceBroker { broker_id: id, incarnation: 1 }, 2);
        }
        let create = |topic_id: &str| Command::CreateTopic {
            name: "foo".to_string(),
            assignment: vec![vec![1, 2]],
            min_insync_replicas: None,
            unclean_leader_election_enable: false,
            topic_id: topic_id.to_string(),
            configs: BTreeMap::new(),
        };
        apply_command(&mut state, &create("old"), 3);
        let offline = Command::MarkReplicasOffline {
            broker_id: 2,
            incarnation: 1,
            replicas: vec![TopicPartition::new("foo", 0)],
        };
        apply_command(&mut state, &offline, 4);
        let stale = Command::DeleteTopic { name: "foo".into(), topic_id: "other".into() };
        assert_eq!(apply_command(&mut state, &stale, 5).error_code, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
        assert!(state.topics.contains_key("foo"), "a delete for another incarnation of the name deletes nothing");

        let delete = Command::DeleteTopic { name: "foo".into(), topic_id: "old".into() };
        let result = apply_command(&mut state, &delete, 6);
        assert!(result.is_ok());
        assert_eq!(result.topic.map(|t| t.topic_id), Some("old".to_string()));
        assert!(!state.topics.contains_key("foo"));
        assert!(state.brokers[&2].offline_replicas.is_empty(), "offline records of the topic go with it");
        assert_eq!(apply_command(&mut state, &delete, 7).error_code, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);

        let again = apply_command(&mut state, &create("new"), 8);
        assert_eq!(again.topic.map(|t| t.topic_id), Some("new".to_string()));
        assert_eq!(state.topics["foo"].topic_id, "new");
    }

    #[test]
    fn commands_round_trip_through_json() {
        let command = Command::AlterPartition {
            broker_id: 1,
            topic: "foo".to_string(),
            partition: 0,
            leader_epoch: 3,
            partition_epoch: 9,
            new_isr: vec![1, 2],
            new_isr_broker_epochs: vec![(2, 17)],
        };
        let json = serde_json::to_string(&command).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), command);
        // An entry written before broker epochs were sent still reads, naming none.
        let old = r#"{"AlterPartition":{"broker_id":1,"topic":"foo","partition":0,"leader_epoch":3,"partition_epoch":9,"new_isr":[1,2]}}"#;
        let Command::AlterPartition { new_isr_broker_epochs, .. } = serde_json::from_str::<Command>(old).unwrap()
        else {
            panic!("not an AlterPartition");
        };
        assert!(new_isr_broker_epochs.is_empty());
    }

    #[test]
    fn replicas_reported_offline_are_recorded_and_survive_a_round_trip() {
        let mut state = ClusterState::default();
        for id in 1..=2 {
            register(&mut state, id, 1);
            apply_command(&mut state, &Command::UnfenceBroker { broker_id: id, incarnation: 1 }, 2);
        }
        let create = Command::CreateTopic {
            name: "foo".to_string(),
            assignment: vec![vec![1, 2], vec![1, 2]],
            min_insync_replicas: None,
            unclean_leader_election_enable: false,
            topic_id: String::new(),
            configs: BTreeMap::new(),
        };
        apply_command(&mut state, &create, 3);
        let offline = Command::MarkReplicasOffline {
            broker_id: 1,
            incarnation: 1,
            replicas: vec![TopicPartition::new("foo", 1)],
        };
        let json = serde_json::to_string(&offline).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), offline);
        let old = r#"{"MarkReplicasOffline":{"broker_id":1,"incarnation":1}}"#;
        assert!(matches!(
            serde_json::from_str::<Command>(old).unwrap(),
            Command::MarkReplicasOffline { replicas, .. } if replicas.is_empty()
        ));

        let stale = Command::MarkReplicasOffline { broker_id: 1, incarnation: 0, replicas: vec![] };
        assert_eq!(apply_command(&mut state, &stale, 4).error_code, ErrorCode::STALE_BROKER_EPOCH);
        let result = apply_command(&mut state, &offline, 5);
        assert!(result.is_ok());
        let recorded = result.broker.map(|b| b.offline_replicas.into_iter().collect::<Vec<_>>());
        assert_eq!(recorded, Some(vec![TopicPartition::new("foo", 1)]));
        let leaders: Vec<BrokerId> = state.topics["foo"].partitions.iter().map(|p| p.leader).collect();
        assert_eq!(leaders, vec![1, 2], "only foo-1's leadership moved");

        // The registration with its offline replicas survives a snapshot; an old snapshot
        // without the field reads as none offline.
        let snapshot = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<ClusterState>(&snapshot).unwrap(), state);
        let old_registration =
            r#"{"id":1,"address":"a","incarnation":5,"fenced":false,"in_controlled_shutdown":false}"#;
        let registration: BrokerRegistration = serde_json::from_str(old_registration).expect("old snapshot");
        assert!(registration.offline_replicas.is_empty());
    }
}
