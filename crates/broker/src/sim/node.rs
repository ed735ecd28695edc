//! One simulated broker process: the glue `ReplicaManager`, `controller_link` and `server.rs`
//! put around each real `Partition`, rebuilt without tokio or a wall clock. It registers and
//! heartbeats (Kafka `BrokerLifecycleManager`), applies the metadata feed (`apply_metadata`),
//! runs the replication core's actions (`run_actions`: waiters, AlterPartition proposals),
//! sends ISR changes one at a time and re-sends while unanswered (`run_alter_partition`),
//! produces as leader (`produce_append` / `produce_wait`), ticks the ISR shrink check and
//! checkpoints HWs (`run_periodic`). The follower fetcher and the leader's side of Fetch are
//! in `fetch.rs`. A crash drops everything but the log directory and the HW checkpoint.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use insync_log::batch::parse_header;
use insync_log::{LogConfig, PartitionLog};
use insync_proto as pb;
use insync_replication::{
    alter_partition_error_action, Action, AlterPartitionErrorAction, IsrChange, IsrChangeKind, WaiterId,
};
use insync_types::{Acks, BrokerId, ErrorCode, LeaderEpoch, Offset, TopicPartition, NO_BROKER};

use super::effects::{Ack, Append, Io, NodeTimer, Target, Timer};
use super::fetch::Fetcher;
use super::network::{Address, Endpoint, Message};
use super::timing;
use crate::controller_link::alter_partition_request;
use crate::messages::ProduceOutcome;
use crate::partition::{LeadershipContext, Partition};
use crate::replica_manager::{caught_up_with_registration, registration, FollowerAssignment};

/// What a broker is configured with, for the whole schedule.
#[derive(Debug, Clone, Copy)]
pub struct NodeConfig {
    pub unsafe_truncation: bool,
    /// The follower's fetch max_bytes: small values make catching up take many rounds.
    pub fetch_max_bytes: usize,
    pub segment_bytes: u64,
}

/// A broker: its durable state (the log directory, the HW checkpoint) and, while it runs,
/// its process.
#[derive(Debug)]
pub struct Node {
    pub id: BrokerId,
    dir: PathBuf,
    config: NodeConfig,
    pub incarnation: u64,
    /// Kafka's replication-offset-checkpoint: survives a crash, read on reopen.
    pub checkpoint: BTreeMap<TopicPartition, Offset>,
    pub live: Option<Live>,
}

/// An acks=all produce parked until the core completes it (Kafka `DelayedProduce`).
#[derive(Debug, Clone)]
struct Waiter {
    client: Address,
    attempt: u64,
    topic_partition: TopicPartition,
    sequence: i32,
    value: u64,
    base_offset: Offset,
    leader_epoch: LeaderEpoch,
}

/// One ISR proposal for the controller (`AlterPartitionJob`).
#[derive(Debug, Clone)]
struct AlterJob {
    topic_partition: TopicPartition,
    change: IsrChange,
}

/// The proposal being sent; `attempt` names the request whose answer counts (answers to
/// earlier attempts are discarded, as a timed-out gRPC call's late answer is).
#[derive(Debug)]
struct AlterInFlight {
    job: AlterJob,
    attempt: u64,
}

/// A running broker process: everything here dies with it.
#[derive(Debug)]
pub struct Live {
    pub me: Address,
    pub config: NodeConfig,
    dir: PathBuf,
    pub registered: bool,
    /// From the registration answer; fetches carry it (KIP-903). 0 until registered.
    pub broker_epoch: i64,
    pub metadata: Arc<pb::ClusterMetadata>,
    pub partitions: BTreeMap<TopicPartition, Partition>,
    pub assignment: FollowerAssignment,
    pub fetchers: BTreeMap<BrokerId, Fetcher>,
    alter_queue: VecDeque<AlterJob>,
    alter: Option<AlterInFlight>,
    waiters: BTreeMap<WaiterId, Waiter>,
    next_waiter: WaiterId,
}

impl Node {
    pub fn new(id: BrokerId, dir: PathBuf, config: NodeConfig) -> Node {
        Node { id, dir, config, incarnation: 0, checkpoint: BTreeMap::new(), live: None }
    }

    pub fn is_up(&self) -> bool {
        self.live.is_some()
    }

    /// Starts a new incarnation: register (fenced until its first heartbeat, KIP-631) and
    /// start the periodic chores, the first after `phase_ms` so brokers do not tick in
    /// lockstep. The metadata feed starts at once too, as in `server.rs`.
    pub fn start(&mut self, io: &mut Io, phase_ms: u64) {
        self.incarnation += 1;
        let me = Address { endpoint: Endpoint::Broker(self.id), incarnation: self.incarnation };
        let live = Live {
            me,
            config: self.config,
            dir: self.dir.clone(),
            registered: false,
            broker_epoch: 0,
            metadata: Arc::new(pb::ClusterMetadata::default()),
            partitions: BTreeMap::new(),
            assignment: FollowerAssignment::new(),
            fetchers: BTreeMap::new(),
            alter_queue: VecDeque::new(),
            alter: None,
            waiters: BTreeMap::new(),
            next_waiter: 1,
        };
        live.register(io);
        live.after(io, phase_ms, NodeTimer::Heartbeat);
        live.after(io, phase_ms + timing::REPLICA_LAG_TIME_MAX_MS / 2, NodeTimer::IsrTick);
        live.after(io, phase_ms + timing::CHECKPOINT_MS, NodeTimer::Checkpoint);
        self.live = Some(live);
    }

    /// A process crash: the partitions, waiters, fetchers and queued proposals are gone; the
    /// log directory and the last HW checkpoint remain.
    pub fn crash(&mut self) {
        self.live = None;
    }

    /// A crash that lost the unflushed tail of `tp`'s log (crashes here lose nothing by
    /// themselves, see `sim/mod.rs`): while the broker is down, cuts the log on disk at the
    /// batch holding `offset`. The HW checkpoint stays as written, possibly above the new
    /// end, as Kafka's would; `Partition::open` caps it. Returns the new log end offset.
    pub fn lose_log_tail(&self, tp: &TopicPartition, offset: Offset) -> Result<Offset, String> {
        if self.is_up() {
            return Err(format!("broker {} is up: its log is open", self.id));
        }
        let dir = self.dir.join(format!("{}-{}", tp.topic, tp.partition));
        let log_config = LogConfig { segment_bytes: self.config.segment_bytes, ..LogConfig::default() };
        let cut = |e: insync_log::LogError| format!("broker {}: cutting {tp} at {offset}: {e}", self.id);
        let mut log = PartitionLog::open(&dir, log_config).map_err(cut)?;
        log.truncate_to(offset).map_err(cut)?;
        let end = log.log_end_offset();
        log.close().map_err(cut)?;
        Ok(end)
    }

    pub fn handle(&mut self, from: Address, message: Message, io: &mut Io) {
        let checkpoint = &self.checkpoint;
        let Some(live) = &mut self.live else { return };
        match message {
            Message::RegisterAnswer { error, broker_epoch } => live.on_register_answer(error, broker_epoch),
            Message::HeartbeatAnswer { error, .. } => live.on_heartbeat_answer(error, io),
            Message::AlterPartitionAnswer { attempt, result } => live.on_alter_answer(attempt, result, io),
            Message::Metadata(metadata) => live.apply_metadata(metadata, checkpoint, io),
            Message::Fetch { fetch_id, replica_id, broker_epoch, max_bytes, partitions } => {
                live.serve_fetch(from, fetch_id, replica_id, broker_epoch, max_bytes, partitions, io)
            }
            Message::FetchAnswer { fetch_id, partitions } => live.on_fetch_answer(from, fetch_id, partitions, io),
            Message::Produce { attempt, topic_partition, sequence, value, records } => {
                live.produce(from, attempt, topic_partition, sequence, value, records, io)
            }
            other => io.anomaly(format!("broker {} got a message meant for others: {}", self.id, other.describe())),
        }
    }

    pub fn on_timer(&mut self, incarnation: u64, timer: NodeTimer, io: &mut Io) {
        if incarnation != self.incarnation {
            return; // a timer of a previous life
        }
        let Some(live) = &mut self.live else { return };
        match timer {
            NodeTimer::RegisterRetry => live.on_register_retry(io),
            NodeTimer::Heartbeat => live.on_heartbeat_timer(io),
            NodeTimer::IsrTick => live.on_isr_tick(io),
            NodeTimer::Checkpoint => {
                // Kafka ReplicaManager.checkpointHighWatermarks: every hosted partition.
                for (tp, partition) in &live.partitions {
                    self.checkpoint.insert(tp.clone(), partition.high_watermark());
                }
                live.after(io, timing::CHECKPOINT_MS, NodeTimer::Checkpoint);
            }
            NodeTimer::Fetch { leader, token } => live.on_fetch_timer(leader, token, io),
            NodeTimer::FetchTimeout { leader, fetch_id } => live.on_fetch_timeout(leader, fetch_id, io),
            NodeTimer::AlterTimeout { attempt } => live.on_alter_timeout(attempt, io),
            NodeTimer::AlterResend { attempt } => live.on_alter_resend(attempt, io),
            NodeTimer::ProduceTimeout { waiter } => live.on_produce_timeout(waiter, io),
        }
    }
}

impl Live {
    pub fn id(&self) -> BrokerId {
        match self.me.endpoint {
            Endpoint::Broker(id) => id,
            _ => NO_BROKER,
        }
    }

    pub fn after(&self, io: &mut Io, delay_ms: u64, timer: NodeTimer) {
        io.after(delay_ms, Timer::Node { broker: self.id(), incarnation: self.me.incarnation, timer });
    }

    // ----- lifecycle (controller_link::run_lifecycle) -----

    fn register(&self, io: &mut Io) {
        let message = Message::Register { broker: self.id(), incarnation: self.me.incarnation };
        io.send(self.me, Target::Current(Endpoint::Controller), message);
        self.after(io, timing::REGISTER_RETRY_MS, NodeTimer::RegisterRetry);
    }

    fn on_register_retry(&self, io: &mut Io) {
        if !self.registered {
            self.register(io);
        }
    }

    fn on_register_answer(&mut self, error: ErrorCode, broker_epoch: i64) {
        // Without an epoch no leader serves our fetches (KIP-903): keep registering.
        if self.registered || error != ErrorCode::NONE || broker_epoch <= 0 {
            return;
        }
        self.registered = true;
        self.broker_epoch = broker_epoch;
    }

    fn on_heartbeat_timer(&self, io: &mut Io) {
        if self.registered {
            let message = Message::Heartbeat { broker: self.id(), incarnation: self.me.incarnation };
            io.send(self.me, Target::Current(Endpoint::Controller), message);
        }
        self.after(io, timing::HEARTBEAT_MS, NodeTimer::Heartbeat);
    }

    fn on_heartbeat_answer(&mut self, error: ErrorCode, io: &mut Io) {
        if error == ErrorCode::STALE_BROKER_EPOCH && self.registered {
            // The controller no longer knows this incarnation: register again; leaders would
            // refuse our old epoch meanwhile.
            io.coverage.bump("broker_reregistered");
            self.registered = false;
            self.broker_epoch = 0;
            self.register(io);
        }
    }

    // ----- metadata (ReplicaManager::apply_metadata) -----

    /// Applies a metadata snapshot: never an older one (`run_metadata_watch`), then every
    /// partition gets its registration, which ignores stale epochs by itself.
    fn apply_metadata(
        &mut self,
        metadata: Arc<pb::ClusterMetadata>,
        checkpoint: &BTreeMap<TopicPartition, Offset>,
        io: &mut Io,
    ) {
        if metadata.version < self.metadata.version {
            io.coverage.bump("metadata_older_ignored");
            return;
        }
        let eligible: BTreeSet<BrokerId> =
            metadata.brokers.iter().filter(|b| !b.fenced && !b.in_controlled_shutdown).map(|b| b.id).collect();
        let mut assignment = FollowerAssignment::new();
        let me = self.id();
        let caught_up = caught_up_with_registration(&metadata, me, self.broker_epoch);
        for topic in &metadata.topics {
            let min_insync_replicas = if topic.min_insync_replicas > 0 {
                topic.min_insync_replicas
            } else {
                metadata.default_min_insync_replicas
            };
            let context = LeadershipContext {
                min_insync_replicas: min_insync_replicas.max(1) as usize,
                eligible: &eligible,
                replica_lag_time_max_ms: timing::REPLICA_LAG_TIME_MAX_MS,
            };
            for partition_metadata in topic.partitions.iter().filter(|p| p.replicas.contains(&me)) {
                let tp = TopicPartition::new(topic.name.clone(), partition_metadata.partition);
                self.apply_registration(&tp, partition_metadata, &context, caught_up, checkpoint, io);
                if partition_metadata.leader != me && partition_metadata.leader != NO_BROKER {
                    assignment
                        .entry(partition_metadata.leader)
                        .or_default()
                        .insert(tp, partition_metadata.leader_epoch);
                }
            }
        }
        self.metadata = metadata;
        self.set_assignment(assignment, io);
    }

    fn apply_registration(
        &mut self,
        tp: &TopicPartition,
        partition_metadata: &pb::PartitionMetadata,
        context: &LeadershipContext<'_>,
        caught_up: bool,
        checkpoint: &BTreeMap<TopicPartition, Offset>,
        io: &mut Io,
    ) {
        if !self.partitions.contains_key(tp) && !self.open_partition(tp, checkpoint, io) {
            return;
        }
        let partition = &self.partitions[tp];
        // As ReplicaManager::apply_topic: no new leadership before the metadata shows this
        // incarnation's registration (the partition is open all the same).
        let me = self.id();
        if partition_metadata.leader == me && !caught_up && !partition.leads_at(partition_metadata.leader_epoch) {
            io.coverage.bump("leadership_held_until_registered");
            return;
        }
        let seen = partition.inspect(|s| (s.leader_epoch(), s.partition_epoch()));
        let offered = (partition_metadata.leader_epoch, partition_metadata.partition_epoch);
        if offered <= seen {
            io.coverage.bump("registration_not_newer");
        } else if offered.0 > seen.0 && seen.0 >= 0 {
            io.coverage.bump("leader_epoch_change_applied");
        }
        let actions = partition.apply_registration(&registration(partition_metadata), context, io.now);
        self.run_actions(tp, actions, io);
    }

    /// Opens the replica's log with its checkpointed HW (`ReplicaManager::open_partition`).
    fn open_partition(
        &mut self,
        tp: &TopicPartition,
        checkpoint: &BTreeMap<TopicPartition, Offset>,
        io: &mut Io,
    ) -> bool {
        let dir = self.dir.join(format!("{}-{}", tp.topic, tp.partition));
        let log_config = LogConfig { segment_bytes: self.config.segment_bytes, ..LogConfig::default() };
        let high_watermark = checkpoint.get(tp).copied().unwrap_or(0);
        match Partition::open(tp.clone(), &dir, log_config, high_watermark, self.id(), self.config.unsafe_truncation) {
            Ok(partition) => {
                self.partitions.insert(tp.clone(), partition);
                true
            }
            Err(e) => {
                io.anomaly(format!("broker {} cannot open {tp}: {e}", self.id()));
                false
            }
        }
    }

    // ----- the core's actions (ReplicaManager::run_actions) -----

    pub fn run_actions(&mut self, tp: &TopicPartition, actions: Vec<Action>, io: &mut Io) {
        for action in actions {
            match action {
                Action::HighWatermarkAdvanced { .. } => {}
                Action::CompleteProduce { waiter, error } => self.complete_waiter(waiter, error, io),
                Action::ProposeIsr(change) => {
                    let kind = match change.kind {
                        IsrChangeKind::Shrink { .. } => "isr_shrink_proposed",
                        IsrChangeKind::Expand { .. } => "isr_expand_proposed",
                    };
                    io.coverage.bump(kind);
                    let id = self.id();
                    io.note(|| format!("b{id} proposes {change}"));
                    self.alter_queue.push_back(AlterJob { topic_partition: tp.clone(), change });
                    self.maybe_start_alter(io);
                }
            }
        }
    }

    fn complete_waiter(&mut self, waiter: WaiterId, error: ErrorCode, io: &mut Io) {
        let Some(w) = self.waiters.remove(&waiter) else { return };
        if error == ErrorCode::NONE {
            io.acks.push(Ack {
                broker: self.id(),
                partition: w.topic_partition.partition,
                sequence: w.sequence,
                value: w.value,
                base_offset: w.base_offset,
                leader_epoch: w.leader_epoch,
            });
        } else {
            io.coverage.bump(&format!("produce_waiter_{}", error.name()));
        }
        let outcome = ProduceOutcome {
            error,
            message: String::new(),
            base_offset: w.base_offset,
            appended: true,
            leader_epoch: w.leader_epoch,
        };
        let answer = Message::ProduceAnswer {
            attempt: w.attempt,
            topic_partition: w.topic_partition,
            sequence: w.sequence,
            outcome,
        };
        io.send(self.me, Target::Exact(w.client), answer);
    }

    // ----- produce (ReplicaManager::produce_append / produce_wait) -----

    #[allow(clippy::too_many_arguments)]
    fn produce(
        &mut self,
        client: Address,
        attempt: u64,
        tp: TopicPartition,
        sequence: i32,
        value: u64,
        records: Bytes,
        io: &mut Io,
    ) {
        let reply = |io: &mut Io, me: Address, outcome: ProduceOutcome| {
            let answer = Message::ProduceAnswer { attempt, topic_partition: tp.clone(), sequence, outcome };
            io.send(me, Target::Exact(client), answer);
        };
        let Ok(header) = parse_header(&records) else {
            io.anomaly(format!("the client sent a batch the broker cannot parse (seq {sequence})"));
            return;
        };
        let Some(partition) = self.partitions.get(&tp) else {
            reply(io, self.me, ProduceOutcome::rejected(self.missing_partition_code(&tp), "not hosted here"));
            return;
        };
        let waiter = self.next_waiter;
        self.next_waiter += 1;
        let parked =
            Waiter { client, attempt, topic_partition: tp.clone(), sequence, value, base_offset: -1, leader_epoch: -1 };
        self.waiters.insert(waiter, parked);
        let end_before = partition.log_end_offset();
        let mut buffer = BytesMut::from(&records[..]);
        match partition.append_as_leader(Acks::All, &header, &mut buffer, Some(waiter), io.now) {
            Err(outcome) => {
                self.waiters.remove(&waiter);
                io.coverage.bump(&format!("produce_refused_{}", outcome.error.name()));
                reply(io, self.me, outcome);
            }
            Ok(append) => {
                let duplicate = partition.log_end_offset() == end_before;
                io.appends.push(Append { broker: self.id(), partition: tp.partition, sequence, duplicate });
                if let Some(w) = self.waiters.get_mut(&waiter) {
                    w.base_offset = append.base_offset;
                    w.leader_epoch = append.leader_epoch;
                }
                self.run_actions(&tp, append.actions, io);
                if self.waiters.contains_key(&waiter) {
                    self.after(io, timing::PRODUCE_TIMEOUT_MS, NodeTimer::ProduceTimeout { waiter });
                }
            }
        }
    }

    /// `ReplicaManager::missing_partition_code`: another broker hosts it, or nobody does.
    fn missing_partition_code(&self, tp: &TopicPartition) -> ErrorCode {
        let known = self
            .metadata
            .topics
            .iter()
            .any(|t| t.name == tp.topic && t.partitions.iter().any(|p| p.partition == tp.partition));
        if known {
            ErrorCode::NOT_LEADER_OR_FOLLOWER
        } else {
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        }
    }

    /// The request's timeout passed: forget the waiter and answer REQUEST_TIMED_OUT.
    fn on_produce_timeout(&mut self, waiter: WaiterId, io: &mut Io) {
        let Some(w) = self.waiters.get(&waiter) else { return };
        if let Some(partition) = self.partitions.get(&w.topic_partition) {
            partition.remove_waiter(waiter);
        }
        self.complete_waiter(waiter, ErrorCode::REQUEST_TIMED_OUT, io);
    }

    fn on_isr_tick(&mut self, io: &mut Io) {
        let tps: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        for tp in tps {
            let actions = self.partitions[&tp].tick(io.now);
            self.run_actions(&tp, actions, io);
        }
        self.after(io, timing::REPLICA_LAG_TIME_MAX_MS / 2, NodeTimer::IsrTick);
    }

    // ----- AlterPartition (controller_link::run_alter_partition) -----

    fn maybe_start_alter(&mut self, io: &mut Io) {
        if self.alter.is_some() {
            return;
        }
        let Some(job) = self.alter_queue.pop_front() else { return };
        let attempt = io.next_id();
        self.alter = Some(AlterInFlight { job, attempt });
        self.send_alter(io);
    }

    fn send_alter(&self, io: &mut Io) {
        let Some(in_flight) = &self.alter else { return };
        let request = alter_partition_request(self.id(), &in_flight.job.topic_partition, &in_flight.job.change);
        let message = Message::AlterPartition { attempt: in_flight.attempt, request };
        io.send(self.me, Target::Current(Endpoint::Controller), message);
        self.after(io, timing::ALTER_PARTITION_TIMEOUT_MS, NodeTimer::AlterTimeout { attempt: in_flight.attempt });
    }

    fn on_alter_answer(
        &mut self,
        attempt: u64,
        result: Result<pb::PartitionMetadata, (ErrorCode, String)>,
        io: &mut Io,
    ) {
        let Some(in_flight) = &mut self.alter else { return };
        if in_flight.attempt != attempt {
            io.coverage.bump("alter_answer_discarded");
            return;
        }
        // As run_alter_partition: an error Kafka retries is sent again while still pending.
        let retry = matches!(&result, Err((code, _)) if alter_partition_error_action(*code) == AlterPartitionErrorAction::Retry);
        let (tp, change) = (&in_flight.job.topic_partition, &in_flight.job.change);
        let pending =
            self.partitions.get(tp).is_some_and(|p| p.isr_change_pending(change.leader_epoch, change.partition_epoch));
        if retry && pending {
            io.coverage.bump("alter_answer_retried");
            in_flight.attempt = io.next_id();
            let attempt = in_flight.attempt;
            self.after(io, timing::ALTER_PARTITION_RETRY_MS, NodeTimer::AlterResend { attempt });
            return;
        }
        self.finish_alter(result, io);
    }

    /// Unanswered: an unanswered AlterPartition may have been committed, so while the core
    /// still waits on it, send it again (KIP-497); else give up with REQUEST_TIMED_OUT.
    fn on_alter_timeout(&mut self, attempt: u64, io: &mut Io) {
        let Some(in_flight) = &mut self.alter else { return };
        if in_flight.attempt != attempt {
            return;
        }
        let tp = &in_flight.job.topic_partition;
        let change = &in_flight.job.change;
        let pending =
            self.partitions.get(tp).is_some_and(|p| p.isr_change_pending(change.leader_epoch, change.partition_epoch));
        if pending {
            io.coverage.bump("alter_unanswered_resent");
            // A new attempt id: the answer to the timed-out call is discarded from now on.
            in_flight.attempt = io.next_id();
            let attempt = in_flight.attempt;
            self.after(io, timing::ALTER_PARTITION_RETRY_MS, NodeTimer::AlterResend { attempt });
        } else {
            io.coverage.bump("alter_unanswered_given_up");
            self.finish_alter(Err((ErrorCode::REQUEST_TIMED_OUT, "no answer".into())), io);
        }
    }

    fn on_alter_resend(&mut self, attempt: u64, io: &mut Io) {
        if self.alter.as_ref().is_some_and(|a| a.attempt == attempt) {
            self.send_alter(io);
        }
    }

    fn finish_alter(&mut self, result: Result<pb::PartitionMetadata, (ErrorCode, String)>, io: &mut Io) {
        let Some(AlterInFlight { job, .. }) = self.alter.take() else { return };
        let tp = job.topic_partition;
        if let Some(partition) = self.partitions.get(&tp) {
            let result = result.map(|p| registration(&p));
            let (le, pe) = (job.change.leader_epoch, job.change.partition_epoch);
            let actions = partition.on_alter_partition_result(le, pe, result, io.now);
            self.run_actions(&tp, actions, io);
        }
        self.maybe_start_alter(io);
    }
}
