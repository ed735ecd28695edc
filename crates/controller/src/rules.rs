//! The controller's rules as pure functions over `ClusterState`: topic validation and replica
//! placement, AlterPartition validation, and the leader/ISR changes caused by fencing,
//! unfencing, controlled shutdown, re-registration and replicas reported offline. No I/O, no
//! clocks: the Raft state machine (`command.rs`) calls these while applying committed
//! entries, so every controller reaches the same state; the returned `PartitionChange`s are
//! what gets logged.
//!
//! Sources: Kafka's `ReplicationControlManager` (createTopics, alterPartition,
//! handleBrokerFenced/Unfenced/InControlledShutdown, handleDirectoriesOffline,
//! generateLeaderAndIsrUpdates), `PartitionChangeBuilder` (election, never-empty ISR),
//! `ClusterControlManager` (registration), `org.apache.kafka.common.internals.Topic` (names),
//! KIP-631, KIP-841, KIP-858.
use crate::metadata::{BrokerRegistration, ClusterState, PartitionState, TopicState};
use insync_types::{BrokerId, ErrorCode, TopicPartition, NO_BROKER};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A request refused by a rule, with the Kafka error code the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RuleRejection {
    pub code: ErrorCode,
    pub message: String,
}

impl RuleRejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Kafka `Topic.MAX_NAME_LENGTH`.
pub const MAX_TOPIC_NAME_LENGTH: usize = 249;
/// A bound on partitions per topic (TigerBeetle style: everything bounded). Kafka has no
/// hard cap, but a laptop cluster gains nothing from more.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

// ---------------------------------------------------------------------------------------
// Topic creation
// ---------------------------------------------------------------------------------------

/// Kafka `Topic.validate`: 1..=249 characters from [a-zA-Z0-9._-], and not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), RuleRejection> {
    let invalid = |message: String| Err(RuleRejection::new(ErrorCode::INVALID_TOPIC_EXCEPTION, message));
    if name.is_empty() {
        return invalid("Topic name is illegal, it can't be empty".to_string());
    }
    if name == "." || name == ".." {
        return invalid("Topic name cannot be \".\" or \"..\"".to_string());
    }
    if name.len() > MAX_TOPIC_NAME_LENGTH {
        return invalid(format!(
            "Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LENGTH} characters, topic name: {name}"
        ));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-') {
        return invalid(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// What a CreateTopic request asks for, after the wire's "0 = default" is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// None: the cluster default applies (resolved by brokers).
    pub min_insync_replicas: Option<i32>,
    pub unclean_leader_election_enable: bool,
}

/// Validates a CreateTopic request against the current state (Kafka
/// `ReplicationControlManager.createTopic`): name, existence, partition count, replication
/// factor against the usable brokers, and min.insync.replicas.
pub fn validate_create_topic(state: &ClusterState, spec: &CreateTopicSpec) -> Result<(), RuleRejection> {
    validate_topic_name(&spec.name)?;
    if state.topics.contains_key(&spec.name) {
        return Err(RuleRejection::new(
            ErrorCode::TOPIC_ALREADY_EXISTS,
            format!("Topic '{}' already exists.", spec.name),
        ));
    }
    if spec.partitions < 1 || spec.partitions > MAX_PARTITIONS_PER_TOPIC {
        return Err(RuleRejection::new(
            ErrorCode::INVALID_PARTITIONS,
            format!(
                "Number of partitions was set to an invalid value {}: it must be between 1 and {MAX_PARTITIONS_PER_TOPIC}.",
                spec.partitions
            ),
        ));
    }
    if spec.replication_factor < 1 {
        return Err(RuleRejection::new(
            ErrorCode::INVALID_REPLICATION_FACTOR,
            format!("Replication factor must be larger than 0, got {}.", spec.replication_factor),
        ));
    }
    let usable_brokers = state.eligible_broker_ids().len();
    if spec.replication_factor as usize > usable_brokers {
        // Kafka StripedReplicaPlacer: "The target replication factor of N cannot be reached
        // because only M broker(s) are registered" (counting usable brokers only).
        return Err(RuleRejection::new(
            ErrorCode::INVALID_REPLICATION_FACTOR,
            format!(
                "Unable to replicate the partition {} time(s): only {} unfenced broker(s) are available (of {} registered).",
                spec.replication_factor,
                usable_brokers,
                state.brokers.len()
            ),
        ));
    }
    if let Some(min_insync_replicas) = spec.min_insync_replicas {
        // Kafka's ConfigDef for min.insync.replicas is atLeast(1); insync also refuses a value
        // above the replication factor, which could never be met by acks=all producers.
        if min_insync_replicas < 1 || min_insync_replicas > spec.replication_factor {
            return Err(RuleRejection::new(
                ErrorCode::INVALID_CONFIG,
                format!(
                    "min.insync.replicas {min_insync_replicas} must be between 1 and the replication factor {}.",
                    spec.replication_factor
                ),
            ));
        }
    }
    Ok(())
}

/// Round-robin placement over the usable brokers sorted by id: replica `i` of partition `p`
/// goes to `brokers[(start + p + i) % n]` with `start = existing_topic_count % n`, so
/// successive topics start on different brokers and leaders (replica 0) spread out. A
/// simplified `StripedReplicaPlacer` without racks.
pub fn assign_replicas(
    usable_brokers_sorted: &[BrokerId],
    existing_topic_count: usize,
    partitions: i32,
    replication_factor: i32,
) -> Vec<Vec<BrokerId>> {
    let broker_count = usable_brokers_sorted.len();
    debug_assert!(broker_count > 0 && replication_factor as usize <= broker_count);
    let start = existing_topic_count % broker_count;
    (0..partitions as usize)
        .map(|partition| {
            (0..replication_factor as usize)
                .map(|replica| usable_brokers_sorted[(start + partition + replica) % broker_count])
                .collect()
        })
        .collect()
}

/// Validation plus placement: what the active controller computes before proposing a
/// CreateTopic command, so that applying it needs no further choices.
pub fn plan_topic(state: &ClusterState, spec: &CreateTopicSpec) -> Result<Vec<Vec<BrokerId>>, RuleRejection> {
    validate_create_topic(state, spec)?;
    Ok(assign_replicas(&state.eligible_broker_ids(), state.topics.len(), spec.partitions, spec.replication_factor))
}

/// A new partition with `replicas` (Kafka `createPartitions` building a
/// `PartitionRegistration`): the replica list must have `replication_factor` distinct
/// registered brokers; the ISR is those usable now, the leader its first; epochs start at 0.
pub fn new_partition(
    state: &ClusterState,
    index: i32,
    replicas: &[BrokerId],
    replication_factor: i32,
) -> Result<PartitionState, RuleRejection> {
    let distinct: BTreeSet<BrokerId> = replicas.iter().copied().collect();
    if replicas.is_empty() || replicas.len() as i32 != replication_factor || distinct.len() != replicas.len() {
        return Err(RuleRejection::new(
            ErrorCode::INVALID_REPLICATION_FACTOR,
            format!("partition {index} has an invalid replica list {}", format_ids(replicas)),
        ));
    }
    if let Some(unknown) = replicas.iter().find(|id| !state.brokers.contains_key(id)) {
        return Err(RuleRejection::new(
            ErrorCode::INVALID_REPLICATION_FACTOR,
            format!("partition {index} is assigned to broker {unknown}, which is not registered"),
        ));
    }
    let isr: Vec<BrokerId> = replicas.iter().copied().filter(|id| state.is_eligible(*id)).collect();
    let Some(&leader) = isr.first() else {
        return Err(RuleRejection::new(
            ErrorCode::INVALID_REPLICATION_FACTOR,
            format!(
                "Unable to replicate partition {index} {replication_factor} time(s): all brokers of {} are fenced or in controlled shutdown.",
                format_ids(replicas)
            ),
        ));
    };
    Ok(PartitionState {
        partition: index,
        replicas: replicas.to_vec(),
        isr,
        leader,
        leader_epoch: 0,
        partition_epoch: 0,
        unclean_elected: false,
    })
}

/// Applies a planned topic. Re-validates what may have changed since planning (another
/// proposal may have created the topic or fenced a broker): the ISR is the assignment
/// filtered by the brokers usable *now*, and the leader its first member, as Kafka's
/// `createPartitions` builds `PartitionRegistration`s. Leader and partition epochs start at 0.
pub fn create_topic(
    state: &mut ClusterState,
    name: &str,
    assignment: &[Vec<BrokerId>],
    min_insync_replicas: Option<i32>,
    unclean_leader_election_enable: bool,
) -> Result<TopicState, RuleRejection> {
    let replication_factor = assignment.first().map_or(0, |replicas| replicas.len() as i32);
    validate_topic_name(name)?;
    if state.topics.contains_key(name) {
        return Err(RuleRejection::new(ErrorCode::TOPIC_ALREADY_EXISTS, format!("Topic '{name}' already exists.")));
    }
    if assignment.is_empty() || assignment.len() > MAX_PARTITIONS_PER_TOPIC as usize {
        return Err(RuleRejection::new(
            ErrorCode::INVALID_PARTITIONS,
            format!("a topic needs 1 to {MAX_PARTITIONS_PER_TOPIC} partitions, got {}", assignment.len()),
        ));
    }
    let partitions = assignment
        .iter()
        .enumerate()
        .map(|(index, replicas)| new_partition(state, index as i32, replicas, replication_factor))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(min_insync_replicas) = min_insync_replicas {
        if min_insync_replicas < 1 || min_insync_replicas > replication_factor {
            return Err(RuleRejection::new(
                ErrorCode::INVALID_CONFIG,
                format!(
                    "min.insync.replicas {min_insync_replicas} must be between 1 and the replication factor {replication_factor}."
                ),
            ));
        }
    }
    let topic = TopicState {
        name: name.to_string(),
        min_insync_replicas,
        unclean_leader_election_enable,
        partitions,
        ..TopicState::default()
    };
    state.topics.insert(name.to_string(), topic.clone());
    Ok(topic)
}

// ---------------------------------------------------------------------------------------
// Partition changes
// ---------------------------------------------------------------------------------------

/// One partition's leader/ISR change, before and after: the unit every log line is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionChange {
    pub topic: String,
    pub before: PartitionState,
    pub after: PartitionState,
}

impl PartitionChange {
    pub fn leader_changed(&self) -> bool {
        self.before.leader != self.after.leader
    }
    pub fn isr_changed(&self) -> bool {
        self.before.isr != self.after.isr
    }
    /// The new leader was elected from outside the ISR (Kafka logs these at INFO even
    /// when it logs clean elections at TRACE: they can lose data).
    pub fn is_unclean_election(&self) -> bool {
        self.leader_changed() && self.after.unclean_elected
    }
}

/// "foo-0 leader 2 -> 3 (epoch 4 -> 5), isr [2,3] -> [3]" or
/// "foo-1 isr [1,2] -> [1] (partition epoch 7 -> 8)".
impl fmt::Display for PartitionChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.before.partition)?;
        if self.leader_changed() {
            write!(
                f,
                " leader {} -> {} (epoch {} -> {})",
                format_leader(self.before.leader),
                format_leader(self.after.leader),
                self.before.leader_epoch,
                self.after.leader_epoch
            )?;
            if self.isr_changed() {
                write!(f, ", isr {} -> {}", format_ids(&self.before.isr), format_ids(&self.after.isr))?;
            }
            if self.after.unclean_elected {
                write!(f, ", UNCLEAN: elected outside the ISR")?;
            }
        } else {
            write!(
                f,
                " isr {} -> {} (partition epoch {} -> {})",
                format_ids(&self.before.isr),
                format_ids(&self.after.isr),
                self.before.partition_epoch,
                self.after.partition_epoch
            )?;
        }
        Ok(())
    }
}

/// "[2,3]".
pub fn format_ids(ids: &[BrokerId]) -> String {
    let inner: Vec<String> = ids.iter().map(ToString::to_string).collect();
    format!("[{}]", inner.join(","))
}

fn format_leader(leader: BrokerId) -> String {
    if leader == NO_BROKER {
        "none".to_string()
    } else {
        leader.to_string()
    }
}

/// Joins changes for one log line: "foo-0 …; foo-1 …", or "no partition changed".
pub fn describe_changes(changes: &[PartitionChange]) -> String {
    if changes.is_empty() {
        return "no partition changed".to_string();
    }
    changes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Recomputes one partition's leader and ISR (Kafka
/// `ReplicationControlManager.generateLeaderAndIsrUpdates` + `PartitionChangeBuilder`):
///
/// 1. the target ISR is the ISR without `broker_to_remove`;
/// 2. election (`PartitionChangeBuilder.electAnyLeader`): keep the current leader if it is
///    still in the target ISR and acceptable; else the first replica in assignment order that
///    is in the target ISR and acceptable; else, if unclean election is enabled for the topic,
///    the first acceptable replica (ISR reset to just it); else no leader (-1, offline);
/// 3. the ISR never becomes empty: without ELR (KIP-966) Kafka's `PartitionChangeBuilder.build`
///    only sets the ISR when `!targetIsr.isEmpty() || eligibleLeaderReplicasEnabled`, and the
///    pre-ELR `generateLeaderAndIsrUpdates` says "We never want to shrink the ISR to size 0"
///    (`newIsr = partition.isr`). The last member stays so that it, and only it, can be
///    elected cleanly when it returns;
/// 4. epochs: a leader change bumps leader_epoch and partition_epoch, an ISR-only change
///    bumps partition_epoch.
///
/// `is_acceptable_leader` is Kafka's `isAcceptableLeader` (`LeaderAcceptor`) for this
/// partition: registered, unfenced, not in controlled shutdown, its replica here not offline
/// (Kafka: on an online directory), and not the broker being removed.
pub fn recompute_partition(
    partition: &PartitionState,
    broker_to_remove: Option<BrokerId>,
    is_acceptable_leader: &dyn Fn(BrokerId) -> bool,
    unclean_leader_election_enable: bool,
) -> PartitionState {
    let acceptable = |id: BrokerId| Some(id) != broker_to_remove && is_acceptable_leader(id);
    let target_isr: Vec<BrokerId> = partition.isr.iter().copied().filter(|id| Some(*id) != broker_to_remove).collect();

    let (leader, unclean) =
        if partition.leader != NO_BROKER && target_isr.contains(&partition.leader) && acceptable(partition.leader) {
            (partition.leader, false)
        } else if let Some(&clean) = partition.replicas.iter().find(|id| target_isr.contains(id) && acceptable(**id)) {
            (clean, false)
        } else if let Some(&unclean) =
            partition.replicas.iter().find(|id| unclean_leader_election_enable && acceptable(**id))
        {
            (unclean, true)
        } else {
            (NO_BROKER, false)
        };

    let isr = if unclean {
        // PartitionChangeBuilder.tryElection: "If the election was unclean, we have to
        // forcibly set the ISR to just the new leader. This can result in data loss!"
        vec![leader]
    } else if target_isr.is_empty() {
        partition.isr.clone()
    } else {
        target_isr
    };

    let mut next = partition.clone();
    if leader != partition.leader {
        next.leader = leader;
        next.leader_epoch += 1;
        next.partition_epoch += 1;
        next.unclean_elected = unclean;
        next.isr = isr;
    } else if isr != partition.isr {
        next.partition_epoch += 1;
        next.isr = isr;
    }
    debug_assert!(!next.isr.is_empty(), "the ISR is never empty");
    debug_assert!(next.leader == NO_BROKER || next.isr.contains(&next.leader), "the leader is in the ISR");
    next
}

/// Runs `recompute_partition` over every partition selected by `affected` (given the topic
/// name and the partition), writes the results back and returns what changed, in
/// topic/partition order.
fn recompute_partitions(
    state: &mut ClusterState,
    broker_to_remove: Option<BrokerId>,
    affected: &dyn Fn(&str, &PartitionState) -> bool,
) -> Vec<PartitionChange> {
    let brokers: &BTreeMap<BrokerId, BrokerRegistration> = &state.brokers;
    let mut changes = Vec::new();
    for topic in state.topics.values_mut() {
        for partition in topic.partitions.iter_mut() {
            if !affected(&topic.name, partition) {
                continue;
            }
            // Per partition: a broker may be active yet have this replica offline.
            let (name, index) = (topic.name.as_str(), partition.partition);
            let is_acceptable_leader =
                |id: BrokerId| brokers.get(&id).is_some_and(|broker| broker.may_lead(name, index));
            let next = recompute_partition(
                partition,
                broker_to_remove,
                &is_acceptable_leader,
                topic.unclean_leader_election_enable,
            );
            if next != *partition {
                changes.push(PartitionChange {
                    topic: topic.name.clone(),
                    before: partition.clone(),
                    after: next.clone(),
                });
                *partition = next;
            }
        }
    }
    changes
}

/// Elects a leader for every leaderless partition of `topic` that now can have one (after
/// unclean.leader.election.enable was turned on: Kafka's controller then elects an
/// out-of-sync replica for leaderless partitions, which may lose acknowledged records).
pub fn elect_leaderless(state: &mut ClusterState, topic: &str) -> Vec<PartitionChange> {
    recompute_partitions(state, None, &|name, partition| name == topic && partition.leader == NO_BROKER)
}

/// Checks that `broker_id` is registered with this `incarnation` (Kafka
/// `ClusterControlManager.checkBrokerEpoch` → STALE_BROKER_EPOCH): requests from a previous
/// life of a broker must not change the current one.
pub fn check_incarnation(
    state: &ClusterState,
    broker_id: BrokerId,
    incarnation: u64,
) -> Result<&BrokerRegistration, RuleRejection> {
    match state.brokers.get(&broker_id) {
        None => Err(RuleRejection::new(
            ErrorCode::STALE_BROKER_EPOCH,
            format!("broker {broker_id} is not registered; register first"),
        )),
        Some(registration) if registration.incarnation != incarnation => Err(RuleRejection::new(
            ErrorCode::STALE_BROKER_EPOCH,
            format!(
                "broker {broker_id} incarnation {incarnation} is stale: the registered incarnation is {}; register again",
                registration.incarnation
            ),
        )),
        Some(registration) => Ok(registration),
    }
}

/// Fences a broker (Kafka `ReplicationControlManager.handleBrokerFenced`): marks it fenced,
/// removes it from every ISR (never emptying one) and re-elects the partitions it led.
pub fn fence_broker(state: &mut ClusterState, broker_id: BrokerId) -> Vec<PartitionChange> {
    let Some(registration) = state.brokers.get_mut(&broker_id) else {
        return Vec::new();
    };
    registration.fenced = true;
    recompute_partitions(state, Some(broker_id), &|_, p| p.isr.contains(&broker_id) || p.leader == broker_id)
}

/// Unfences a broker (Kafka `handleBrokerUnfenced`): marks it unfenced, then elects a leader
/// for every leaderless partition that now has an acceptable candidate
/// (`brokersToIsrs.partitionsWithNoLeader()`).
pub fn unfence_broker(state: &mut ClusterState, broker_id: BrokerId) -> Vec<PartitionChange> {
    let Some(registration) = state.brokers.get_mut(&broker_id) else {
        return Vec::new();
    };
    registration.fenced = false;
    recompute_partitions(state, None, &|_, p| !p.has_leader())
}

/// Starts a controlled shutdown (KIP-631; Kafka `handleBrokerInControlledShutdown`): marks
/// the broker, moves leadership of its partitions to another acceptable ISR member and
/// removes it from every ISR, by the same rules as fencing (a partition whose only ISR member
/// is this broker goes offline, keeping the ISR [it], exactly as in Kafka).
pub fn begin_controlled_shutdown(state: &mut ClusterState, broker_id: BrokerId) -> Vec<PartitionChange> {
    let Some(registration) = state.brokers.get_mut(&broker_id) else {
        return Vec::new();
    };
    registration.in_controlled_shutdown = true;
    recompute_partitions(state, Some(broker_id), &|_, p| p.isr.contains(&broker_id) || p.leader == broker_id)
}

/// Whether a broker in controlled shutdown may stop (Kafka `BrokerHeartbeatManager`:
/// CONTROLLED_SHUTDOWN → SHUTDOWN_NOW once `!hasLeaderships`).
pub fn should_shutdown(state: &ClusterState, broker_id: BrokerId) -> bool {
    state.leadership_count(broker_id) == 0
}

/// How a RegisterBroker command changed the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationKind {
    /// First registration of this broker id.
    New,
    /// Same incarnation again (a retried request): nothing but the address may change.
    Repeated,
    /// A new incarnation of a known broker: the process restarted.
    Restarted { previous_incarnation: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationOutcome {
    pub kind: RegistrationKind,
    /// Partition changes from ending the previous incarnation (see `register_broker`).
    pub changes: Vec<PartitionChange>,
}

/// Registers a broker, fenced (KIP-631: brokers start fenced and are unfenced by a
/// heartbeat). A new incarnation of a broker that was still unfenced is first fenced with the
/// usual partition changes: Kafka's `ClusterControlManager.registerBroker` refuses a new
/// incarnation (DUPLICATE_BROKER_REGISTRATION) until the old session expired, by which time
/// the old incarnation has been fenced — and a restarted leader must not keep leading with
/// a log that may have lost its unflushed tail. Controlled shutdown ends with the new
/// registration. `broker_epoch` is the epoch a new incarnation gets (the Raft index of this
/// entry); a repeated registration keeps the epoch it has, so a retried request whose first
/// answer was lost learns the same epoch.
pub fn register_broker(
    state: &mut ClusterState,
    broker_id: BrokerId,
    address: &str,
    kafka_address: &str,
    incarnation: u64,
    broker_epoch: i64,
) -> Result<RegistrationOutcome, RuleRejection> {
    if broker_id < 0 {
        return Err(RuleRejection::new(ErrorCode::INVALID_REQUEST, format!("invalid broker id {broker_id}")));
    }
    if address.is_empty() {
        return Err(RuleRejection::new(
            ErrorCode::INVALID_REQUEST,
            format!("broker {broker_id} registered without an address"),
        ));
    }
    let previous = state.brokers.get(&broker_id).cloned();
    let (kind, changes) = match previous {
        None => (RegistrationKind::New, Vec::new()),
        Some(previous) if previous.incarnation == incarnation => {
            if let Some(registration) = state.brokers.get_mut(&broker_id) {
                registration.address = address.to_string();
                registration.kafka_address = kafka_address.to_string();
                if registration.broker_epoch <= 0 {
                    // Registered before broker epochs existed: give it one now.
                    registration.broker_epoch = broker_epoch;
                }
            }
            return Ok(RegistrationOutcome { kind: RegistrationKind::Repeated, changes: Vec::new() });
        }
        Some(previous) => {
            let changes = if previous.fenced { Vec::new() } else { fence_broker(state, broker_id) };
            (RegistrationKind::Restarted { previous_incarnation: previous.incarnation }, changes)
        }
    };
    state.brokers.insert(
        broker_id,
        BrokerRegistration {
            id: broker_id,
            address: address.to_string(),
            kafka_address: kafka_address.to_string(),
            incarnation,
            fenced: true,
            in_controlled_shutdown: false,
            broker_epoch,
            // A new incarnation opens its logs afresh (Kafka: a restarted broker registers
            // with its log directories online).
            offline_replicas: BTreeSet::new(),
        },
    );
    Ok(RegistrationOutcome { kind, changes })
}

/// The replicas in `reported` that `broker_id` hosts (the partition exists and lists it as a
/// replica) and that its registration does not yet record offline: what a heartbeat's
/// offline set adds (Kafka `BrokerRegistration.directoryIntersection`). The active controller
/// proposes `MarkReplicasOffline` only when this is not empty, so a heartbeat repeating the
/// same set, or naming a replica the broker does not host, writes nothing to the log.
pub fn new_offline_replicas(
    state: &ClusterState,
    broker_id: BrokerId,
    reported: &[TopicPartition],
) -> Vec<TopicPartition> {
    let Some(registration) = state.brokers.get(&broker_id) else {
        return Vec::new();
    };
    let hosted =
        |tp: &TopicPartition| state.partition(&tp.topic, tp.partition).is_some_and(|p| p.replicas.contains(&broker_id));
    let mut added: Vec<TopicPartition> =
        reported.iter().filter(|tp| hosted(tp) && !registration.offline_replicas.contains(*tp)).cloned().collect();
    added.sort();
    added.dedup();
    added
}

/// What `mark_replicas_offline` recorded and changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OfflineOutcome {
    /// The replicas newly recorded offline (see `new_offline_replicas`).
    pub recorded: Vec<TopicPartition>,
    pub changes: Vec<PartitionChange>,
}

/// A broker's replicas went offline after a storage error (Kafka
/// `ReplicationControlManager.handleDirectoriesOffline`): records them in its registration,
/// then for each of those partitions removes the broker from the ISR (never emptying it) and
/// elects another leader where it led, by the rules of fencing (`recompute_partition`). From
/// then on the broker is no acceptable leader for them and may not rejoin their ISRs
/// (`alter_partition`) until it registers anew. The broker's other partitions are untouched.
pub fn mark_replicas_offline(
    state: &mut ClusterState,
    broker_id: BrokerId,
    reported: &[TopicPartition],
) -> OfflineOutcome {
    let recorded = new_offline_replicas(state, broker_id, reported);
    let Some(registration) = state.brokers.get_mut(&broker_id) else {
        return OfflineOutcome::default();
    };
    if recorded.is_empty() {
        return OfflineOutcome::default();
    }
    registration.offline_replicas.extend(recorded.iter().cloned());
    let changes = recompute_partitions(state, Some(broker_id), &|topic, p| {
        recorded.iter().any(|tp| tp.partition == p.partition && tp.topic == topic)
    });
    OfflineOutcome { recorded, changes }
}

// ---------------------------------------------------------------------------------------
// AlterPartition
// ---------------------------------------------------------------------------------------

/// An ISR change requested by a partition leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionSpec {
    pub broker_id: BrokerId,
    pub topic: String,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<BrokerId>,
    /// (member, broker epoch) as the leader saw each fetch (Kafka `NewIsrWithEpochs`,
    /// KIP-903): every member being added, and any other member of `new_isr`.
    pub new_isr_broker_epochs: Vec<(BrokerId, i64)>,
}

/// Validates and applies an ISR change (Kafka `ReplicationControlManager.alterPartition` /
/// `validateAlterPartitionData`), in Kafka's order:
/// - unknown topic or partition → UNKNOWN_TOPIC_OR_PARTITION;
/// - leader epoch ≠ current → FENCED_LEADER_EPOCH (Kafka answers NOT_CONTROLLER for a
///   *higher* epoch because its controller may be stale; here validation runs on the
///   committed Raft state, so a higher epoch is simply not current);
/// - requester is not the leader → NOT_LEADER_OR_FOLLOWER (Kafka: INVALID_REQUEST);
/// - partition epoch ≠ current → INVALID_UPDATE_VERSION;
/// - the new ISR must contain the leader, be a subset of the replicas and have no
///   duplicates (`Replicas.validateIsr`) → INVALID_REQUEST;
/// - each named broker epoch must be for a member of the new ISR, named once, and every
///   member being added must be named → INVALID_REQUEST;
/// - members being added must be registered, unfenced and not in controlled shutdown
///   (KIP-841 `ineligibleReplicasForIsr`), must not have this replica offline (Kafka: a
///   replica on an offline directory never fetches, so it is never proposed; here the
///   controller refuses it outright), and every named epoch must be the member's current
///   registration's (KIP-903) → INELIGIBLE_REPLICA. Kafka checks every member; members
///   already in the ISR pass by construction, since fencing and controlled shutdown remove
///   them (except a lone last member, which a leader may keep while shrinking), and a
///   restart's registration fences the previous incarnation, so only their named epochs
///   are checked.
///
/// On success the ISR is replaced and partition_epoch bumped; an unchanged ISR is no change
/// (PartitionChangeBuilder returns no record). Returns the partition as committed and the
/// change, if any.
pub fn alter_partition(
    state: &mut ClusterState,
    spec: &AlterPartitionSpec,
) -> Result<(PartitionState, Option<PartitionChange>), RuleRejection> {
    let unknown = || {
        RuleRejection::new(
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            format!("unknown partition {}-{}", spec.topic, spec.partition),
        )
    };
    let current = state.partition(&spec.topic, spec.partition).ok_or_else(unknown)?.clone();
    let name = format!("{}-{}", spec.topic, spec.partition);

    if spec.leader_epoch != current.leader_epoch {
        return Err(RuleRejection::new(
            ErrorCode::FENCED_LEADER_EPOCH,
            format!(
                "{name}: request has leader epoch {} but the current leader epoch is {}",
                spec.leader_epoch, current.leader_epoch
            ),
        ));
    }
    if spec.broker_id != current.leader {
        return Err(RuleRejection::new(
            ErrorCode::NOT_LEADER_OR_FOLLOWER,
            format!(
                "{name}: broker {} is not the leader (leader is {})",
                spec.broker_id,
                format_leader(current.leader)
            ),
        ));
    }
    if spec.partition_epoch != current.partition_epoch {
        return Err(RuleRejection::new(
            ErrorCode::INVALID_UPDATE_VERSION,
            format!(
                "{name}: request has partition epoch {} but the current partition epoch is {}",
                spec.partition_epoch, current.partition_epoch
            ),
        ));
    }
    check_new_isr_shape(&current, spec, &name)?;
    check_isr_eligibility(state, &current, spec, &name)?;
    if spec.new_isr == current.isr {
        return Ok((current, None));
    }
    let mut next = current.clone();
    next.isr = spec.new_isr.clone();
    next.partition_epoch += 1;
    if let Some(slot) =
        state.topics.get_mut(&spec.topic).and_then(|topic| topic.partitions.get_mut(spec.partition as usize))
    {
        *slot = next.clone();
    }
    let change = PartitionChange { topic: spec.topic.clone(), before: current, after: next.clone() };
    Ok((next, Some(change)))
}

/// The new ISR has no duplicates, only replicas, and the leader (Kafka
/// `Replicas.validateIsr`) → INVALID_REQUEST; see `alter_partition`.
fn check_new_isr_shape(current: &PartitionState, spec: &AlterPartitionSpec, name: &str) -> Result<(), RuleRejection> {
    let distinct: BTreeSet<BrokerId> = spec.new_isr.iter().copied().collect();
    if distinct.len() != spec.new_isr.len() {
        return Err(RuleRejection::new(
            ErrorCode::INVALID_REQUEST,
            format!("{name}: new ISR {} has duplicates", format_ids(&spec.new_isr)),
        ));
    }
    if let Some(outsider) = spec.new_isr.iter().find(|id| !current.replicas.contains(id)) {
        return Err(RuleRejection::new(
            ErrorCode::INVALID_REQUEST,
            format!(
                "{name}: new ISR {} contains {outsider}, which is not a replica {}",
                format_ids(&spec.new_isr),
                format_ids(&current.replicas)
            ),
        ));
    }
    if !spec.new_isr.contains(&current.leader) {
        return Err(RuleRejection::new(
            ErrorCode::INVALID_REQUEST,
            format!("{name}: new ISR {} does not include the leader {}", format_ids(&spec.new_isr), current.leader),
        ));
    }
    Ok(())
}

/// The members of an AlterPartition's new ISR against the registrations (Kafka
/// `ReplicationControlManager.ineligibleReplicasForIsr`, KIP-841 and KIP-903); see
/// `alter_partition`.
fn check_isr_eligibility(
    state: &ClusterState,
    current: &PartitionState,
    spec: &AlterPartitionSpec,
    name: &str,
) -> Result<(), RuleRejection> {
    let invalid = |message: String| Err(RuleRejection::new(ErrorCode::INVALID_REQUEST, format!("{name}: {message}")));
    let mut named: BTreeMap<BrokerId, i64> = BTreeMap::new();
    for &(member, broker_epoch) in &spec.new_isr_broker_epochs {
        if !spec.new_isr.contains(&member) || named.insert(member, broker_epoch).is_some() {
            return invalid(format!(
                "broker epochs {:?} must name members of the new ISR {} at most once",
                spec.new_isr_broker_epochs,
                format_ids(&spec.new_isr)
            ));
        }
    }
    for &member in &spec.new_isr {
        let added = !current.isr.contains(&member);
        if added && !named.contains_key(&member) {
            return invalid(format!("no broker epoch for replica {member}, which the new ISR adds (KIP-903)"));
        }
        let registration = state.brokers.get(&member);
        if added && registration.is_some_and(|r| r.is_replica_offline(&spec.topic, spec.partition)) {
            return Err(RuleRejection::new(
                ErrorCode::INELIGIBLE_REPLICA,
                format!(
                    "{name}: cannot add replica {member} in the ISR: its broker took this replica offline after a \
                     storage error (until it registers again)"
                ),
            ));
        }
        if let Some(reason) = ineligibility(registration, added, named.get(&member).copied()) {
            let verb = if added { "cannot add replica" } else { "cannot keep replica" };
            return Err(RuleRejection::new(
                ErrorCode::INELIGIBLE_REPLICA,
                format!("{name}: {verb} {member} in the ISR: {reason}"),
            ));
        }
    }
    Ok(())
}

/// Why a member may not be in a new ISR, if it may not. A member being added must be
/// registered, unfenced and not shutting down (KIP-841); a named broker epoch must be the
/// registration's (KIP-903): an older one is the epoch of an incarnation that has restarted
/// since the leader saw it fetch, whose progress proves nothing about the log the broker
/// has now (it may have lost its unflushed tail).
fn ineligibility(registration: Option<&BrokerRegistration>, added: bool, named_epoch: Option<i64>) -> Option<String> {
    let Some(registration) = registration else {
        return (added || named_epoch.is_some()).then(|| "not registered".to_string());
    };
    if added && registration.in_controlled_shutdown {
        return Some("shutting down".to_string());
    }
    if added && registration.fenced {
        return Some("fenced".to_string());
    }
    match named_epoch {
        Some(epoch) if epoch != registration.broker_epoch => Some(format!(
            "its fetch carried broker epoch {epoch}, but its current registration has broker epoch {} (it \
             registered again since: KIP-903)",
            registration.broker_epoch
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: BrokerId) -> BrokerRegistration {
        BrokerRegistration {
            id,
            address: format!("127.0.0.1:{}", 9091 + id),
            kafka_address: String::new(),
            incarnation: 1,
            fenced: false,
            in_controlled_shutdown: false,
            broker_epoch: 1,
            offline_replicas: BTreeSet::new(),
        }
    }

    fn state_with_brokers(ids: &[BrokerId]) -> ClusterState {
        let mut state = ClusterState::default();
        for &id in ids {
            state.brokers.insert(id, broker(id));
        }
        state
    }

    fn spec(name: &str, partitions: i32, replication_factor: i32) -> CreateTopicSpec {
        CreateTopicSpec {
            name: name.to_string(),
            partitions,
            replication_factor,
            min_insync_replicas: None,
            unclean_leader_election_enable: false,
        }
    }

    fn create(state: &mut ClusterState, name: &str, partitions: i32, replication_factor: i32) -> TopicState {
        let assignment = plan_topic(state, &spec(name, partitions, replication_factor)).expect("valid topic");
        create_topic(state, name, &assignment, None, false).expect("created")
    }

    fn partition_with(replicas: &[BrokerId], isr: &[BrokerId], leader: BrokerId) -> PartitionState {
        PartitionState {
            partition: 0,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 4,
            partition_epoch: 7,
            unclean_elected: false,
        }
    }

    /// A state with brokers 1..=3 and topic `foo` (1 partition) with the given layout.
    fn state_with_partition(replicas: &[BrokerId], isr: &[BrokerId], leader: BrokerId, unclean: bool) -> ClusterState {
        let mut state = state_with_brokers(&[1, 2, 3]);
        state.topics.insert(
            "foo".to_string(),
            TopicState {
                name: "foo".to_string(),
                min_insync_replicas: None,
                unclean_leader_election_enable: unclean,
                partitions: vec![partition_with(replicas, isr, leader)],
                ..TopicState::default()
            },
        );
        state
    }

    fn foo0(state: &ClusterState) -> &PartitionState {
        state.partition("foo", 0).expect("foo-0")
    }

    #[test]
    fn topic_names_follow_kafka_topic_validate() {
        // org.apache.kafka.common.internals.Topic.validate
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        for bad in ["", ".", "..", "with space", "slash/", "ünïcode"] {
            let rejection = validate_topic_name(bad).expect_err(bad);
            assert_eq!(rejection.code, ErrorCode::INVALID_TOPIC_EXCEPTION, "{bad:?}");
        }
        let too_long = validate_topic_name(&"a".repeat(250)).expect_err("250 chars");
        assert_eq!(too_long.code, ErrorCode::INVALID_TOPIC_EXCEPTION);
        assert!(too_long.message.contains("249"));
    }

    #[test]
    fn create_topic_validation_uses_kafka_error_codes() {
        // ReplicationControlManager.createTopic: INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR,
        // TOPIC_ALREADY_EXISTS; min.insync.replicas ConfigDef atLeast(1) → INVALID_CONFIG.
        let mut state = state_with_brokers(&[1, 2, 3]);
        state.brokers.get_mut(&3).unwrap().fenced = true;

        let code = |state: &ClusterState, s: CreateTopicSpec| validate_create_topic(state, &s).unwrap_err().code;
        assert_eq!(code(&state, spec("foo", 0, 1)), ErrorCode::INVALID_PARTITIONS);
        assert_eq!(code(&state, spec("foo", 1, 0)), ErrorCode::INVALID_REPLICATION_FACTOR);

        let too_many = validate_create_topic(&state, &spec("foo", 1, 3)).unwrap_err();
        assert_eq!(too_many.code, ErrorCode::INVALID_REPLICATION_FACTOR);
        assert!(too_many.message.contains("3 time(s)") && too_many.message.contains("only 2 unfenced"), "{too_many}");

        let mut min_isr_zero = spec("foo", 1, 2);
        min_isr_zero.min_insync_replicas = Some(0);
        assert_eq!(code(&state, min_isr_zero), ErrorCode::INVALID_CONFIG);
        let mut min_isr_above_rf = spec("foo", 1, 2);
        min_isr_above_rf.min_insync_replicas = Some(3);
        assert_eq!(code(&state, min_isr_above_rf), ErrorCode::INVALID_CONFIG);
        let mut min_isr_ok = spec("foo", 1, 2);
        min_isr_ok.min_insync_replicas = Some(2);
        assert!(validate_create_topic(&state, &min_isr_ok).is_ok());

        create(&mut state, "foo", 1, 2);
        assert_eq!(code(&state, spec("foo", 1, 1)), ErrorCode::TOPIC_ALREADY_EXISTS);
        assert_eq!(code(&state, spec("bad name", 1, 1)), ErrorCode::INVALID_TOPIC_EXCEPTION);
    }

    #[test]
    fn assignment_is_round_robin_over_usable_brokers_sorted_by_id() {
        // A rackless StripedReplicaPlacer: partition p, replica i → brokers[(start+p+i) % n].
        assert_eq!(assign_replicas(&[1, 2, 3], 0, 3, 3), vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]]);
        // The second topic starts one broker later, so leaders spread across topics.
        assert_eq!(assign_replicas(&[1, 2, 3], 1, 2, 2), vec![vec![2, 3], vec![3, 1]]);

        // Fenced brokers get no replicas; the leader is replica 0, ISR = replicas, epochs 0.
        let mut state = state_with_brokers(&[3, 1, 2, 4]);
        state.brokers.get_mut(&2).unwrap().fenced = true;
        let topic = create(&mut state, "foo", 2, 2);
        assert_eq!(topic.partitions[0].replicas, vec![1, 3]);
        assert_eq!(topic.partitions[1].replicas, vec![3, 4]);
        for p in &topic.partitions {
            assert_eq!(p.leader, p.replicas[0]);
            assert_eq!(p.isr, p.replicas);
            assert_eq!((p.leader_epoch, p.partition_epoch), (0, 0));
        }
    }

    #[test]
    fn create_topic_apply_revalidates_against_current_state() {
        // Planned on one state, applied on a later one (Raft): a broker fenced meanwhile is
        // left out of the ISR, as Kafka's createPartitions filters the ISR by isActive.
        let mut state = state_with_brokers(&[1, 2, 3]);
        let assignment = plan_topic(&state, &spec("foo", 1, 3)).unwrap();
        fence_broker(&mut state, 1);
        let topic = create_topic(&mut state, "foo", &assignment, Some(2), false).unwrap();
        assert_eq!(topic.partitions[0].replicas, vec![1, 2, 3]);
        assert_eq!(topic.partitions[0].isr, vec![2, 3]);
        assert_eq!(topic.partitions[0].leader, 2);
        assert_eq!(topic.min_insync_replicas, Some(2));
        // A racing second proposal of the same topic loses deterministically.
        let again = create_topic(&mut state, "foo", &assignment, None, false).unwrap_err();
        assert_eq!(again.code, ErrorCode::TOPIC_ALREADY_EXISTS);
    }

    /// As a leader sends it: every other member named with its broker epoch (1 in `broker`).
    fn alter(leader: BrokerId, leader_epoch: i32, partition_epoch: i32, new_isr: &[BrokerId]) -> AlterPartitionSpec {
        AlterPartitionSpec {
            broker_id: leader,
            topic: "foo".to_string(),
            partition: 0,
            leader_epoch,
            partition_epoch,
            new_isr: new_isr.to_vec(),
            new_isr_broker_epochs: new_isr.iter().filter(|&&b| b != leader).map(|&b| (b, 1)).collect(),
        }
    }

    fn with_epochs(spec: AlterPartitionSpec, epochs: &[(BrokerId, i64)]) -> AlterPartitionSpec {
        AlterPartitionSpec { new_isr_broker_epochs: epochs.to_vec(), ..spec }
    }

    #[test]
    fn adding_a_replica_needs_its_current_broker_epoch() {
        // KIP-903 (ReplicationControlManager.ineligibleReplicasForIsr): 3 registered again
        // (epoch 40) after the leader saw its previous incarnation (epoch 12) catch up.
        let mut state = state_with_partition(&[1, 2, 3], &[1, 2], 1, false);
        state.brokers.get_mut(&3).unwrap().broker_epoch = 40;
        let expand = alter(1, 4, 7, &[1, 2, 3]);

        let stale = alter_partition(&mut state, &with_epochs(expand.clone(), &[(2, 1), (3, 12)])).unwrap_err();
        assert_eq!(stale.code, ErrorCode::INELIGIBLE_REPLICA);
        assert!(stale.message.contains("cannot add replica 3"), "{}", stale.message);
        assert!(stale.message.contains("broker epoch 12") && stale.message.contains("broker epoch 40"), "{stale}");
        assert_eq!(*foo0(&state), partition_with(&[1, 2, 3], &[1, 2], 1), "rejections change nothing");

        // The member being added must be named, each name once, and only members.
        let code = |state: &mut ClusterState, epochs: &[(BrokerId, i64)]| {
            alter_partition(state, &with_epochs(expand.clone(), epochs)).unwrap_err().code
        };
        assert_eq!(code(&mut state, &[(2, 1)]), ErrorCode::INVALID_REQUEST, "3 not named");
        assert_eq!(code(&mut state, &[(3, 40), (3, 40)]), ErrorCode::INVALID_REQUEST, "named twice");
        assert_eq!(code(&mut state, &[(3, 40), (9, 1)]), ErrorCode::INVALID_REQUEST, "not in the new ISR");

        // The current epoch: applied.
        let (committed, change) = alter_partition(&mut state, &with_epochs(expand, &[(3, 40)])).unwrap();
        assert_eq!((committed.isr.clone(), committed.partition_epoch), (vec![1, 2, 3], 8));
        assert!(change.is_some());
    }

    #[test]
    fn members_already_in_the_isr_are_checked_only_when_named() {
        // Kafka checks the epoch of every member the request names; a member the leader has
        // not seen fetch (epoch unknown) is not named and, being in the ISR, not checked.
        let mut state = state_with_partition(&[1, 2, 3], &[1, 2, 3], 1, false);
        state.brokers.get_mut(&2).unwrap().broker_epoch = 40;
        let (shrunk, _) = alter_partition(&mut state, &with_epochs(alter(1, 4, 7, &[1, 2]), &[])).unwrap();
        assert_eq!((shrunk.isr.clone(), shrunk.partition_epoch), (vec![1, 2], 8));

        let stale = alter_partition(&mut state, &with_epochs(alter(1, 4, 8, &[1, 2]), &[(2, 39)])).unwrap_err();
        assert_eq!(stale.code, ErrorCode::INELIGIBLE_REPLICA);
        assert!(stale.message.contains("cannot keep replica 2"), "{}", stale.message);
        let (same, no_change) = alter_partition(&mut state, &with_epochs(alter(1, 4, 8, &[1, 2]), &[(2, 40)])).unwrap();
        assert_eq!((same.partition_epoch, no_change), (8, None));
    }

    #[test]
    fn alter_partition_rejections_follow_validate_alter_partition_data() {
        // ReplicationControlManager.validateAlterPartitionData + KIP-841.
        let mut state = state_with_partition(&[1, 2, 3], &[1, 2], 1, false);
        let code = |state: &mut ClusterState, s: AlterPartitionSpec| alter_partition(state, &s).unwrap_err().code;

        let mut unknown = alter(1, 4, 7, &[1]);
        unknown.partition = 5;
        assert_eq!(code(&mut state, unknown), ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
        assert_eq!(code(&mut state, alter(1, 3, 7, &[1])), ErrorCode::FENCED_LEADER_EPOCH);
        assert_eq!(code(&mut state, alter(1, 5, 7, &[1])), ErrorCode::FENCED_LEADER_EPOCH);
        assert_eq!(code(&mut state, alter(2, 4, 7, &[2])), ErrorCode::NOT_LEADER_OR_FOLLOWER);
        assert_eq!(code(&mut state, alter(1, 4, 6, &[1])), ErrorCode::INVALID_UPDATE_VERSION);
        assert_eq!(code(&mut state, alter(1, 4, 7, &[2])), ErrorCode::INVALID_REQUEST, "leader missing");
        assert_eq!(code(&mut state, alter(1, 4, 7, &[1, 1])), ErrorCode::INVALID_REQUEST, "duplicate");
        assert_eq!(code(&mut state, alter(1, 4, 7, &[1, 9])), ErrorCode::INVALID_REQUEST, "not a replica");
        assert_eq!(code(&mut state, alter(1, 4, 7, &[])), ErrorCode::INVALID_REQUEST, "empty");

        state.brokers.get_mut(&3).unwrap().fenced = true;
        assert_eq!(code(&mut state, alter(1, 4, 7, &[1, 2, 3])), ErrorCode::INELIGIBLE_REPLICA);
        state.brokers.get_mut(&3).unwrap().fenced = false;
        state.brokers.get_mut(&3).unwrap().in_controlled_shutdown = true;
        assert_eq!(code(&mut state, alter(1, 4, 7, &[1, 2, 3])), ErrorCode::INELIGIBLE_REPLICA);
        state.brokers.remove(&3);
        assert_eq!(code(&mut state, alter(1, 4, 7, &[1, 2, 3])), ErrorCode::INELIGIBLE_REPLICA);

        assert_eq!(*foo0(&state), partition_with(&[1, 2, 3], &[1, 2], 1), "rejections change nothing");
    }

    #[test]
    fn alter_partition_success_bumps_only_the_partition_epoch() {
        let mut state = state_with_partition(&[1, 2, 3], &[1, 2], 1, false);
        let (committed, change) = alter_partition(&mut state, &alter(1, 4, 7, &[1, 2, 3])).unwrap();
        assert_eq!(committed.isr, vec![1, 2, 3]);
        assert_eq!((committed.leader_epoch, committed.partition_epoch), (4, 8));
        assert_eq!(change.unwrap().to_string(), "foo-0 isr [1,2] -> [1,2,3] (partition epoch 7 -> 8)");
        assert_eq!(*foo0(&state), committed);

        // Unchanged ISR: PartitionChangeBuilder produces no record, so no bump.
        let (same, no_change) = alter_partition(&mut state, &alter(1, 4, 8, &[1, 2, 3])).unwrap();
        assert_eq!(same.partition_epoch, 8);
        assert!(no_change.is_none());

        // Shrinking to the leader alone is allowed.
        let (shrunk, _) = alter_partition(&mut state, &alter(1, 4, 8, &[1])).unwrap();
        assert_eq!((shrunk.isr.clone(), shrunk.partition_epoch), (vec![1], 9));
    }

    #[test]
    fn fencing_removes_from_isr_and_elects_first_live_isr_replica() {
        // ReplicationControlManager.handleBrokerFenced → generateLeaderAndIsrUpdates.
        let mut state = state_with_partition(&[2, 1, 3], &[2, 3, 1], 2, false);
        let changes = fence_broker(&mut state, 2);
        let p = foo0(&state);
        assert_eq!(p.leader, 1, "first replica in assignment order that is in the ISR");
        assert_eq!(p.isr, vec![3, 1]);
        assert_eq!((p.leader_epoch, p.partition_epoch), (5, 8));
        assert!(state.brokers[&2].fenced);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].to_string(), "foo-0 leader 2 -> 1 (epoch 4 -> 5), isr [2,3,1] -> [3,1]");

        // A follower's fencing is an ISR-only change: partition epoch only.
        let changes = fence_broker(&mut state, 3);
        let p = foo0(&state);
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (5, 9));
        assert_eq!(changes[0].to_string(), "foo-0 isr [3,1] -> [1] (partition epoch 8 -> 9)");
    }

    #[test]
    fn fencing_the_last_isr_member_keeps_it_in_the_isr_and_goes_offline() {
        // PartitionChangeBuilder.build sets the ISR only if `!targetIsr.isEmpty() ||
        // eligibleLeaderReplicasEnabled`; pre-ELR generateLeaderAndIsrUpdates: "We never want
        // to shrink the ISR to size 0".
        let mut state = state_with_partition(&[1, 2, 3], &[1], 1, false);
        let changes = fence_broker(&mut state, 1);
        let p = foo0(&state);
        assert_eq!(p.leader, NO_BROKER);
        assert_eq!(p.isr, vec![1]);
        assert_eq!((p.leader_epoch, p.partition_epoch), (5, 8));
        assert_eq!(changes[0].to_string(), "foo-0 leader 1 -> none (epoch 4 -> 5)");
    }

    #[test]
    fn unfencing_restores_a_leader_to_offline_partitions() {
        // ReplicationControlManager.handleBrokerUnfenced: partitionsWithNoLeader get elected.
        let mut state = state_with_partition(&[1, 2, 3], &[1], 1, false);
        fence_broker(&mut state, 1);
        fence_broker(&mut state, 2);
        // Unfencing a non-ISR replica does not elect it (clean election only).
        assert!(unfence_broker(&mut state, 2).is_empty());
        assert_eq!(foo0(&state).leader, NO_BROKER);

        let changes = unfence_broker(&mut state, 1);
        let p = foo0(&state);
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (6, 9));
        assert!(!p.unclean_elected);
        assert_eq!(changes[0].to_string(), "foo-0 leader none -> 1 (epoch 5 -> 6)");
    }

    #[test]
    fn controlled_shutdown_moves_leadership_and_leaves_the_isr() {
        // KIP-631 / handleBrokerInControlledShutdown; BrokerHeartbeatManager: shut down once
        // the broker leads nothing.
        let mut state = state_with_partition(&[1, 2, 3], &[1, 2, 3], 1, false);
        assert!(!should_shutdown(&state, 1));
        let changes = begin_controlled_shutdown(&mut state, 1);
        let p = foo0(&state);
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2, 3]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (5, 8));
        assert_eq!(changes.len(), 1);
        assert!(state.brokers[&1].in_controlled_shutdown);
        assert!(should_shutdown(&state, 1));

        // While shutting down it may not rejoin an ISR (KIP-841).
        let rejoin = alter_partition(&mut state, &alter(2, 5, 8, &[2, 3, 1])).unwrap_err();
        assert_eq!(rejoin.code, ErrorCode::INELIGIBLE_REPLICA);

        // Registering again (new incarnation) clears controlled shutdown; it starts fenced.
        let outcome = register_broker(&mut state, 1, "127.0.0.1:9092", "", 2, 40).unwrap();
        assert_eq!(outcome.kind, RegistrationKind::Restarted { previous_incarnation: 1 });
        assert!(!state.brokers[&1].in_controlled_shutdown);
        assert!(state.brokers[&1].fenced);
    }

    #[test]
    fn controlled_shutdown_of_the_only_isr_member_takes_the_partition_offline() {
        // Kafka passes the shutting-down broker as brokerToRemove, so it is no acceptable
        // leader: with no other ISR member the partition has no leader, ISR stays [it].
        let mut state = state_with_partition(&[1, 2], &[1], 1, false);
        begin_controlled_shutdown(&mut state, 1);
        assert_eq!((foo0(&state).leader, foo0(&state).isr.clone()), (NO_BROKER, vec![1]));
        assert!(should_shutdown(&state, 1));
    }

    #[test]
    fn unclean_election_picks_first_live_replica_and_resets_the_isr() {
        // PartitionChangeBuilder.electAnyLeader with Election.UNCLEAN + tryElection.
        let mut state = state_with_partition(&[1, 2, 3], &[1], 1, true);
        state.brokers.get_mut(&2).unwrap().fenced = true;
        let changes = fence_broker(&mut state, 1);
        let p = foo0(&state);
        assert_eq!((p.leader, p.isr.clone()), (3, vec![3]));
        assert!(p.unclean_elected);
        assert!(changes[0].is_unclean_election());
        assert_eq!(
            changes[0].to_string(),
            "foo-0 leader 1 -> 3 (epoch 4 -> 5), isr [1] -> [3], UNCLEAN: elected outside the ISR"
        );

        // Without the topic setting the same situation leaves the partition offline.
        let mut clean = state_with_partition(&[1, 2, 3], &[1], 1, false);
        clean.brokers.get_mut(&2).unwrap().fenced = true;
        fence_broker(&mut clean, 1);
        assert_eq!(foo0(&clean).leader, NO_BROKER);
    }

    #[test]
    fn restarted_broker_is_fenced_before_its_new_registration() {
        // ClusterControlManager.registerBroker: a new incarnation replaces a session that has
        // ended, i.e. a fenced broker; a restarted leader must not keep its leadership.
        let mut state = state_with_partition(&[1, 2, 3], &[1, 2, 3], 1, false);
        let outcome = register_broker(&mut state, 1, "127.0.0.1:9092", "", 9, 50).unwrap();
        assert_eq!(outcome.changes.len(), 1);
        assert_eq!(foo0(&state).leader, 2);
        assert_eq!(foo0(&state).isr, vec![2, 3]);
        assert_eq!(state.brokers[&1].incarnation, 9);

        // The same incarnation again is idempotent.
        assert_eq!(state.brokers[&1].broker_epoch, 50, "a new incarnation takes the entry's epoch");
        let repeated = register_broker(&mut state, 1, "127.0.0.1:9092", "", 9, 51).unwrap();
        assert_eq!(repeated.kind, RegistrationKind::Repeated);
        assert!(repeated.changes.is_empty());
        assert_eq!(state.brokers[&1].broker_epoch, 50, "a retried registration keeps its epoch");

        assert_eq!(check_incarnation(&state, 1, 8).unwrap_err().code, ErrorCode::STALE_BROKER_EPOCH);
        assert_eq!(check_incarnation(&state, 7, 1).unwrap_err().code, ErrorCode::STALE_BROKER_EPOCH);
        assert!(check_incarnation(&state, 1, 9).is_ok());
    }

    fn tps(replicas: &[(&str, i32)]) -> Vec<TopicPartition> {
        replicas.iter().map(|&(topic, partition)| TopicPartition::new(topic, partition)).collect()
    }

    /// Brokers 1..=3 and topic `foo` with two partitions, both led by 1 with the full ISR.
    fn state_with_two_partitions() -> ClusterState {
        let mut state = state_with_partition(&[1, 2, 3], &[1, 2, 3], 1, false);
        let mut second = partition_with(&[1, 3, 2], &[1, 3, 2], 1);
        second.partition = 1;
        state.topics.get_mut("foo").unwrap().partitions.push(second);
        state
    }

    #[test]
    fn an_offline_replica_leaves_its_isr_and_its_leadership_moves() {
        // ReplicationControlManager.handleDirectoriesOffline → generateLeaderAndIsrUpdates for
        // the partitions of the failed directory only; the broker stays registered and active.
        let mut state = state_with_two_partitions();
        let outcome = mark_replicas_offline(&mut state, 1, &tps(&[("foo", 0)]));
        assert_eq!(outcome.recorded, tps(&[("foo", 0)]));
        assert_eq!(outcome.changes.len(), 1, "foo-1 is untouched: {:?}", outcome.changes);
        assert_eq!(outcome.changes[0].to_string(), "foo-0 leader 1 -> 2 (epoch 4 -> 5), isr [1,2,3] -> [2,3]");
        assert_eq!(state.partition("foo", 1).map(|p| (p.leader, p.isr.clone())), Some((1, vec![1, 3, 2])));
        assert!(state.brokers[&1].is_eligible(), "only the replica is offline, not the broker");
        assert!(state.brokers[&1].is_replica_offline("foo", 0));

        // The same set again, an unknown partition, or a replica of another broker: nothing.
        assert_eq!(mark_replicas_offline(&mut state, 1, &tps(&[("foo", 0)])), OfflineOutcome::default());
        assert!(new_offline_replicas(&state, 1, &tps(&[("foo", 0), ("foo", 9), ("bar", 0)])).is_empty());
        let mut elsewhere = state_with_partition(&[2, 3], &[2, 3], 2, false);
        assert!(mark_replicas_offline(&mut elsewhere, 1, &tps(&[("foo", 0)])).recorded.is_empty());
    }

    #[test]
    fn an_offline_replica_is_never_elected_for_its_partition_until_the_broker_registers_again() {
        // Kafka's LeaderAcceptor: isActive(replica) && hasOnlineDir(replica, its directory).
        // The last ISR member stays listed (never an empty ISR) but is not elected.
        let mut state = state_with_partition(&[1, 2, 3], &[1], 1, false);
        let outcome = mark_replicas_offline(&mut state, 1, &tps(&[("foo", 0)]));
        assert_eq!(outcome.changes[0].to_string(), "foo-0 leader 1 -> none (epoch 4 -> 5)");
        assert_eq!(foo0(&state).isr, vec![1]);
        // An unfencing elects leaders where there are none: broker 1 is active, yet not acceptable here.
        fence_broker(&mut state, 3);
        assert!(unfence_broker(&mut state, 3).is_empty());
        assert_eq!(foo0(&state).leader, NO_BROKER);

        // Unclean election skips it too.
        let mut unclean = state_with_partition(&[1, 2, 3], &[2], 2, true);
        mark_replicas_offline(&mut unclean, 1, &tps(&[("foo", 0)]));
        fence_broker(&mut unclean, 2);
        assert_eq!((foo0(&unclean).leader, foo0(&unclean).isr.clone()), (3, vec![3]));

        // A restart registers anew, with every replica online: elected once unfenced.
        register_broker(&mut state, 1, "127.0.0.1:9092", "", 2, 40).unwrap();
        assert!(state.brokers[&1].offline_replicas.is_empty());
        let changes = unfence_broker(&mut state, 1);
        assert_eq!(changes[0].to_string(), "foo-0 leader none -> 1 (epoch 5 -> 6)");
    }

    #[test]
    fn an_offline_replica_may_not_rejoin_the_isr() {
        let mut state = state_with_two_partitions();
        mark_replicas_offline(&mut state, 3, &tps(&[("foo", 0)]));
        assert_eq!(foo0(&state).isr, vec![1, 2]);
        let rejoin = alter_partition(&mut state, &alter(1, 4, 8, &[1, 2, 3])).unwrap_err();
        assert_eq!(rejoin.code, ErrorCode::INELIGIBLE_REPLICA);
        assert!(rejoin.message.contains("offline"), "{rejoin}");
        // Its other replicas are not affected: foo-1 may shrink and grow with broker 3.
        let mut foo1 = alter(1, 4, 7, &[1, 2]);
        foo1.partition = 1;
        alter_partition(&mut state, &foo1).unwrap();
        let grow = AlterPartitionSpec { partition: 1, ..alter(1, 4, 8, &[1, 2, 3]) };
        assert!(alter_partition(&mut state, &grow).is_ok());
    }
}
