//! The controller model: one always-active controller holding a real `ClusterState` and
//! changing it only through the real Raft state machine (`command::apply_command`, which
//! calls `rules.rs`), as `ControllerService` does after a commit: registration (a restarted
//! broker is fenced first), unfencing on the first heartbeat, fencing when heartbeats stop
//! (the real `BrokerHeartbeatManager`, on simulated instants), elections, and AlterPartition
//! validation. Every change is pushed to the brokers and the client as a metadata snapshot
//! (`convert::cluster_metadata`), and the latest is re-pushed periodically, as a watch
//! stream eventually delivers it. Raft itself (replication, controller failover) is not
//! modelled: the quorum is one node that never fails.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use insync_controller::command::{apply_command, Command, CommandResult};
use insync_controller::convert::{alter_partition_command, cluster_metadata, partition_to_proto, ControllerIdentity};
use insync_controller::heartbeat::BrokerHeartbeatManager;
use insync_controller::metadata::{AppliedMetadata, ClusterState, PartitionState};
use insync_controller::rules::{self, CreateTopicSpec};
use insync_proto as pb;
use insync_types::{BrokerId, ErrorCode, LeaderEpoch, NO_BROKER};

use super::effects::{ControllerTimer, Io, Target, Timer};
use super::network::{Address, Endpoint, Message};
use super::timing;

pub const TOPIC: &str = "sim";
pub const BROKERS: [BrokerId; 3] = [1, 2, 3];
pub const MIN_INSYNC_REPLICAS: i32 = 2;

/// An AlterPartition as the controller saw it: who, at which epochs, for which ISR.
type AlterKey = (BrokerId, LeaderEpoch, i32, Vec<BrokerId>);

#[derive(Debug)]
pub struct ControllerModel {
    pub state: ClusterState,
    /// The Raft index of the last applied command: the metadata version.
    index: u64,
    heartbeats: BrokerHeartbeatManager,
    /// Simulated ms are mapped onto instants after this one; only differences are used.
    origin: Instant,
    partitions: i32,
    topic_created: bool,
    pub latest: Arc<pb::ClusterMetadata>,
    me: Address,
    /// AlterPartitions committed so far, to recognise a retry of one (KIP-497's hazard).
    committed_alters: BTreeSet<AlterKey>,
    /// Per (partition, leader epoch): whether the ISR grew, shrank.
    isr_moves: BTreeMap<(i32, LeaderEpoch), (bool, bool)>,
}

impl ControllerModel {
    pub fn new(partitions: i32) -> ControllerModel {
        ControllerModel {
            state: ClusterState::default(),
            index: 0,
            heartbeats: BrokerHeartbeatManager::new(timing::BROKER_SESSION_TIMEOUT_MS),
            origin: Instant::now(),
            partitions,
            topic_created: false,
            latest: Arc::new(pb::ClusterMetadata::default()),
            me: Address { endpoint: Endpoint::Controller, incarnation: 0 },
            committed_alters: BTreeSet::new(),
            isr_moves: BTreeMap::new(),
        }
    }

    pub fn start(&self, io: &mut Io) {
        io.after(timing::LIVENESS_CHECK_MS, Timer::Controller(ControllerTimer::Liveness));
        io.after(timing::METADATA_REPUBLISH_MS, Timer::Controller(ControllerTimer::Republish));
    }

    fn instant(&self, now_ms: u64) -> Instant {
        self.origin + Duration::from_millis(now_ms)
    }

    pub fn partition(&self, partition: i32) -> Option<&PartitionState> {
        self.state.partition(TOPIC, partition)
    }

    pub fn handle(&mut self, from: Address, message: Message, io: &mut Io) {
        match message {
            Message::Register { broker, incarnation } => self.on_register(from, broker, incarnation, io),
            Message::Heartbeat { broker, incarnation } => self.on_heartbeat(from, broker, incarnation, io),
            Message::AlterPartition { attempt, request } => self.on_alter_partition(from, attempt, request, io),
            other => io.anomaly(format!("the controller got a message meant for others: {}", other.describe())),
        }
    }

    pub fn on_timer(&mut self, timer: ControllerTimer, io: &mut Io) {
        match timer {
            ControllerTimer::Liveness => {
                self.fence_expired_sessions(io);
                io.after(timing::LIVENESS_CHECK_MS, Timer::Controller(ControllerTimer::Liveness));
            }
            ControllerTimer::Republish => {
                self.push_latest(io);
                io.after(timing::METADATA_REPUBLISH_MS, Timer::Controller(ControllerTimer::Republish));
            }
        }
    }

    /// `ControllerService::register`: commit the registration, then start the session.
    fn on_register(&mut self, from: Address, broker: BrokerId, incarnation: u64, io: &mut Io) {
        let command = Command::RegisterBroker {
            broker_id: broker,
            address: format!("sim-broker-{broker}"),
            incarnation,
            kafka_address: String::new(),
        };
        let result = self.propose(command, io);
        let answer = if result.is_ok() {
            self.heartbeats.touch(broker, self.instant(io.now));
            let broker_epoch = result.broker.map(|b| b.broker_epoch).unwrap_or(0);
            Message::RegisterAnswer { error: ErrorCode::NONE, broker_epoch }
        } else {
            Message::RegisterAnswer { error: result.error_code, broker_epoch: 0 }
        };
        io.send(self.me, Target::Exact(from), answer);
    }

    /// `ControllerService::heartbeat`: stale incarnation → STALE_BROKER_EPOCH; a fenced
    /// broker's heartbeat unfences it (KIP-631). Then the topic, once all brokers are in.
    fn on_heartbeat(&mut self, from: Address, broker: BrokerId, incarnation: u64, io: &mut Io) {
        let registration = match rules::check_incarnation(&self.state, broker, incarnation) {
            Ok(registration) => registration.clone(),
            Err(rejection) => {
                let answer = Message::HeartbeatAnswer { error: rejection.code, fenced: true };
                io.send(self.me, Target::Exact(from), answer);
                return;
            }
        };
        self.heartbeats.touch(broker, self.instant(io.now));
        if registration.fenced && !registration.in_controlled_shutdown {
            self.propose(Command::UnfenceBroker { broker_id: broker, incarnation }, io);
        }
        let fenced = self.state.brokers.get(&broker).is_none_or(|b| b.fenced);
        io.send(self.me, Target::Exact(from), Message::HeartbeatAnswer { error: ErrorCode::NONE, fenced });
        self.maybe_create_topic(io);
    }

    /// Creates the topic once every broker is registered and unfenced, placed by the real
    /// `plan_topic` (replicas [1,2,3] for partition 0, [2,3,1] for partition 1).
    fn maybe_create_topic(&mut self, io: &mut Io) {
        if self.topic_created || self.state.eligible_broker_ids().len() < BROKERS.len() {
            return;
        }
        let spec = CreateTopicSpec {
            name: TOPIC.to_string(),
            partitions: self.partitions,
            replication_factor: BROKERS.len() as i32,
            min_insync_replicas: Some(MIN_INSYNC_REPLICAS),
            unclean_leader_election_enable: false,
        };
        let Ok(assignment) = rules::plan_topic(&self.state, &spec) else { return };
        let command = Command::CreateTopic {
            name: spec.name,
            assignment,
            min_insync_replicas: spec.min_insync_replicas,
            unclean_leader_election_enable: false,
            topic_id: String::new(),
            configs: Default::default(),
        };
        self.topic_created = self.propose(command, io).is_ok();
    }

    /// `node::fence_expired_sessions` (this controller is active from the start, so there
    /// is no first-check-of-a-term reset).
    fn fence_expired_sessions(&mut self, io: &mut Io) {
        let now = self.instant(io.now);
        for stale in self.heartbeats.stale_brokers(&self.state, now) {
            let reason = self.heartbeats.fence_reason(&stale);
            io.coverage.bump("broker_fenced_by_session_timeout");
            let command = Command::FenceBroker { broker_id: stale.broker_id, incarnation: stale.incarnation, reason };
            self.propose(command, io);
        }
    }

    /// `ControllerService::alter`: propose, answer the committed partition or the rejection.
    fn on_alter_partition(&mut self, from: Address, attempt: u64, request: pb::AlterPartitionRequest, io: &mut Io) {
        let key: AlterKey = (request.broker_id, request.leader_epoch, request.partition_epoch, request.new_isr.clone());
        let command = alter_partition_command(request.clone());
        let before = self.partition(request.partition).cloned();
        let result = self.propose(command, io);
        self.count_alter_answer(&key, &result, before.as_ref(), io);
        let answer = match (result.is_ok(), &result.partition) {
            (true, Some(partition)) => Ok(partition_to_proto(partition)),
            (true, None) => Err((ErrorCode::UNKNOWN_SERVER_ERROR, "partition missing from result".to_string())),
            (false, _) => Err((result.error_code, result.error_message.clone())),
        };
        if result.is_ok() {
            self.committed_alters.insert(key);
        }
        io.send(self.me, Target::Exact(from), Message::AlterPartitionAnswer { attempt, result: answer });
    }

    /// Counts which answer the rules gave. Reachable: committed (with or without a change),
    /// INVALID_UPDATE_VERSION (a retry after a commit, or a proposal overtaken by a fencing),
    /// FENCED_LEADER_EPOCH (a deposed leader), INELIGIBLE_REPLICA (a leader with stale
    /// metadata adding a fenced broker, or naming the broker epoch of an incarnation that has
    /// restarted since, KIP-903). NOT_LEADER_OR_FOLLOWER needs two leaders at one
    /// leader epoch and INVALID_REQUEST a malformed ISR, which the core never proposes;
    /// UNKNOWN_TOPIC_OR_PARTITION needs a deleted topic.
    fn count_alter_answer(
        &mut self,
        key: &AlterKey,
        result: &CommandResult,
        before: Option<&PartitionState>,
        io: &mut Io,
    ) {
        let retry_of_commit = self.committed_alters.contains(key);
        if retry_of_commit {
            io.coverage.bump("alter_retry_after_commit");
        }
        match (result.is_ok(), &result.partition, before) {
            (true, Some(after), Some(before)) if after.isr != before.isr => {
                io.coverage.bump("alter_answer_ok_changed");
                self.count_isr_move(after, before, io);
            }
            (true, _, _) => io.coverage.bump("alter_answer_ok_unchanged"),
            (false, _, _) => {
                io.coverage.bump(&format!("alter_answer_{}", result.error_code.name()));
                if result.error_code == ErrorCode::INVALID_UPDATE_VERSION && !retry_of_commit {
                    io.coverage.bump("alter_overtaken_by_controller_change");
                }
            }
        }
    }

    fn count_isr_move(&mut self, after: &PartitionState, before: &PartitionState, io: &mut Io) {
        let grew = after.isr.len() > before.isr.len();
        io.coverage.bump(if grew { "isr_expand_committed" } else { "isr_shrink_committed" });
        let moves = self.isr_moves.entry((after.partition, after.leader_epoch)).or_insert((false, false));
        let had_both = moves.0 && moves.1;
        if grew {
            moves.0 = true;
        } else {
            moves.1 = true;
        }
        if !had_both && moves.0 && moves.1 {
            io.coverage.bump("isr_expand_and_shrink_in_one_leader_epoch");
        }
    }

    /// Applies a command at the next Raft index; publishes the metadata if it changed.
    fn propose(&mut self, command: Command, io: &mut Io) -> CommandResult {
        let before = self.state.clone();
        let by_leader = matches!(command, Command::AlterPartition { .. });
        self.index += 1;
        let result = apply_command(&mut self.state, &command, self.index);
        if self.state != before {
            self.count_partition_changes(&before, by_leader, io);
            self.publish(io);
        }
        result
    }

    /// Elections and controller-side ISR changes (fencing, re-registration).
    fn count_partition_changes(&mut self, before: &ClusterState, by_leader: bool, io: &mut Io) {
        for partition in 0..self.partitions {
            let (Some(old), Some(new)) = (before.partition(TOPIC, partition), self.partition(partition)) else {
                continue;
            };
            if old.leader != new.leader {
                io.coverage.bump(if new.leader == NO_BROKER { "partition_offline" } else { "leader_elected" });
                let (old_leader, new_leader, epoch) = (old.leader, new.leader, new.leader_epoch);
                io.note(|| format!("controller: p{partition} leader {old_leader} -> {new_leader} (epoch {epoch})"));
            } else if old.isr.len() > new.isr.len() && !by_leader {
                io.coverage.bump("isr_shrink_by_controller");
                self.isr_moves.entry((partition, new.leader_epoch)).or_insert((false, false)).1 = true;
            }
        }
    }

    fn publish(&mut self, io: &mut Io) {
        let applied = AppliedMetadata { version: self.index, state: self.state.clone() };
        let identity = ControllerIdentity { controller_id: 0, controller_address: "sim-controller".to_string() };
        self.latest = Arc::new(cluster_metadata(&applied, &identity, MIN_INSYNC_REPLICAS, &[]));
        let version = self.index;
        io.note(|| format!("controller publishes metadata v{version}"));
        self.push_latest(io);
    }

    fn push_latest(&self, io: &mut Io) {
        if self.index == 0 {
            return;
        }
        let targets = BROKERS.iter().map(|&b| Endpoint::Broker(b)).chain([Endpoint::Client]);
        for endpoint in targets {
            io.send(self.me, Target::Current(endpoint), Message::Metadata(self.latest.clone()));
        }
    }
}
