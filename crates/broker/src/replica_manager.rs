//! The broker's replica manager (Kafka `ReplicaManager`): hosts partitions, applies
//! controller metadata (become leader / follower), serves produce and fetch on the leader,
//! and turns the replication core's actions into I/O (answer waiters, propose ISR changes,
//! wake long-polling fetches).
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use insync_log::batch::parse_header;
use insync_log::{LogConfig, LogError, OffsetCheckpointFile, PartitionLog};
use insync_proto as pb;
use insync_replication::{
    check_current_leader_epoch, diverging_epoch, Action, BatchMetadata, EpochEndOffset, IsrChange, LeaderParams,
    LeaderPartition, SequenceCheck, WaiterId,
};
use insync_types::{Acks, BrokerId, ErrorCode, Offset, TopicPartition, NO_BROKER, NO_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::config::BrokerArgs;
use crate::fetch_limits::{duplicate_entries, effective_max_bytes, grpc_record_budget, FetchBudget};
use crate::partition::{Partition, ReplicaRole, ReplicaState};
use crate::replica_identity::{check_follower_identity, check_partition_replica, is_follower_fetch, ReplicaRefusal};

/// An ISR change for the controller, produced by the leader core.
#[derive(Debug)]
pub struct AlterPartitionJob {
    pub topic_partition: TopicPartition,
    pub change: IsrChange,
}

/// Which partitions this broker follows, grouped by leader: the fetcher manager's input.
pub type FollowerAssignment = BTreeMap<BrokerId, BTreeMap<TopicPartition, i32>>;

/// A produce after its synchronous half.
pub enum ProduceAppended {
    /// Answered already: an error before or at the append, or acks=0/1 after it.
    Done(ProduceOutcome),
    /// acks=all: parked until the waiter completes.
    Waiting { partition: Arc<Partition>, outcome: ProduceOutcome, waiter: WaiterId, rx: oneshot::Receiver<ErrorCode> },
}

/// Outcome of a produce, as the service answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceOutcome {
    pub error: ErrorCode,
    pub message: String,
    pub base_offset: Offset,
    pub appended: bool,
    pub leader_epoch: i32,
}

impl ProduceOutcome {
    fn rejected(error: ErrorCode, message: impl Into<String>) -> Self {
        ProduceOutcome { error, message: message.into(), base_offset: -1, appended: false, leader_epoch: NO_EPOCH }
    }
}

pub struct ReplicaManager {
    pub config: Arc<BrokerArgs>,
    pub broker_id: BrokerId,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    waiters: Mutex<HashMap<WaiterId, oneshot::Sender<ErrorCode>>>,
    next_waiter: AtomicU64,
    /// Wakes the parked long-polling fetches (Kafka's `DelayedFetch` purgatory) to look
    /// again: bumped on every append and HW change. The number carries nothing.
    fetch_wakeups: watch::Sender<u64>,
    metadata: RwLock<Arc<pb::ClusterMetadata>>,
    /// Metadata versions as they are applied (for CreateTopic to wait on).
    metadata_version: watch::Sender<u64>,
    follower_assignment: watch::Sender<FollowerAssignment>,
    alter_partition_tx: mpsc::Sender<AlterPartitionJob>,
    hw_checkpoint: Mutex<OffsetCheckpointFile>,
    checkpointed_high_watermarks: BTreeMap<TopicPartition, Offset>,
    started: Instant,
    /// This broker's epoch from its current registration (0: not registered): what its
    /// fetchers send so leaders serve them as followers (KIP-903).
    broker_epoch: AtomicI64,
}

impl ReplicaManager {
    pub fn new(
        config: Arc<BrokerArgs>,
        alter_partition_tx: mpsc::Sender<AlterPartitionJob>,
    ) -> anyhow::Result<Arc<ReplicaManager>> {
        std::fs::create_dir_all(&config.data_dir)?;
        let hw_checkpoint = OffsetCheckpointFile::new(config.data_dir.join("replication-offset-checkpoint"));
        let checkpointed_high_watermarks = hw_checkpoint.read()?;
        if config.unsafe_truncate_to_high_watermark {
            warn!(
                "UNSAFE: --unsafe-truncate-to-high-watermark is set: this broker truncates to its local high \
                 watermark when it follows a leader and ignores leader epochs (the pre-KIP-101 bug). It WILL lose \
                 acknowledged acks=all writes. It exists only as a negative control for `insync lab`."
            );
        }
        Ok(Arc::new(ReplicaManager {
            broker_id: config.node_id,
            config,
            partitions: RwLock::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(1),
            fetch_wakeups: watch::channel(0).0,
            metadata: RwLock::new(Arc::new(pb::ClusterMetadata::default())),
            metadata_version: watch::channel(0).0,
            follower_assignment: watch::channel(FollowerAssignment::new()).0,
            alter_partition_tx,
            hw_checkpoint: Mutex::new(hw_checkpoint),
            checkpointed_high_watermarks,
            started: Instant::now(),
            broker_epoch: AtomicI64::new(0),
        }))
    }

    /// Monotonic milliseconds since start: the clock the replication core runs on.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// This broker's epoch as the controller assigned it at registration (0: not registered).
    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(Ordering::Acquire)
    }

    /// Records the epoch of a registration (or 0 once the controller no longer knows it).
    pub fn set_broker_epoch(&self, broker_epoch: i64) {
        self.broker_epoch.store(broker_epoch, Ordering::Release);
    }

    pub fn metadata(&self) -> Arc<pb::ClusterMetadata> {
        self.metadata.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn subscribe_metadata_version(&self) -> watch::Receiver<u64> {
        self.metadata_version.subscribe()
    }

    pub fn subscribe_follower_assignment(&self) -> watch::Receiver<FollowerAssignment> {
        self.follower_assignment.subscribe()
    }

    /// A receiver that sees every `wake_parked_fetches`.
    pub fn subscribe_fetch_wakeups(&self) -> watch::Receiver<u64> {
        self.fetch_wakeups.subscribe()
    }

    pub fn broker_address(&self, broker: BrokerId) -> Option<String> {
        self.metadata().brokers.iter().find(|b| b.id == broker).map(|b| b.address.clone())
    }

    pub fn partition(&self, tp: &TopicPartition) -> Option<Arc<Partition>> {
        self.partitions.read().unwrap_or_else(|p| p.into_inner()).get(tp).cloned()
    }

    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        let mut all: Vec<_> = self.partitions.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        all.sort_by(|a, b| a.topic_partition.cmp(&b.topic_partition));
        all
    }

    fn log_dir(&self, tp: &TopicPartition) -> PathBuf {
        self.config.data_dir.join(format!("{}-{}", tp.topic, tp.partition))
    }

    fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.config.log_segment_bytes,
            flush_every_messages: self.config.flush_every_messages,
            max_batch_bytes: self.config.message_max_bytes,
            ..LogConfig::default()
        }
    }

    fn min_insync_replicas(&self, topic: &pb::TopicMetadata) -> usize {
        if topic.min_insync_replicas > 0 {
            topic.min_insync_replicas as usize
        } else {
            self.config.min_insync_replicas as usize
        }
    }

    /// Applies a metadata snapshot from the controller (Kafka `ReplicaManager.applyDelta`):
    /// opens logs for new replicas, makes this broker leader or follower as assigned, feeds
    /// committed ISR changes to the leader core, and updates the fetchers' assignment.
    pub fn apply_metadata(&self, metadata: pb::ClusterMetadata) -> anyhow::Result<()> {
        let now_ms = self.now_ms();
        let eligible: BTreeSet<BrokerId> =
            metadata.brokers.iter().filter(|b| !b.fenced && !b.in_controlled_shutdown).map(|b| b.id).collect();
        let mut assignment = FollowerAssignment::new();
        for topic in &metadata.topics {
            let min_isr = self.min_insync_replicas(topic);
            for partition_metadata in &topic.partitions {
                if !partition_metadata.replicas.contains(&self.broker_id) {
                    continue;
                }
                let tp = TopicPartition::new(topic.name.clone(), partition_metadata.partition);
                let partition = match self.partition(&tp) {
                    Some(p) => p,
                    None => self.open_partition(&tp, partition_metadata)?,
                };
                let actions = self.apply_partition_metadata(&partition, partition_metadata, min_isr, &eligible, now_ms);
                self.run_actions(&tp, actions);
                if partition_metadata.leader != self.broker_id && partition_metadata.leader != NO_BROKER {
                    assignment
                        .entry(partition_metadata.leader)
                        .or_default()
                        .insert(tp, partition_metadata.leader_epoch);
                }
            }
        }
        let version = metadata.version;
        *self.metadata.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(metadata);
        self.follower_assignment.send_if_modified(|current| {
            let changed = *current != assignment;
            *current = assignment;
            changed
        });
        self.metadata_version.send_replace(version);
        Ok(())
    }

    fn open_partition(
        &self,
        tp: &TopicPartition,
        partition_metadata: &pb::PartitionMetadata,
    ) -> anyhow::Result<Arc<Partition>> {
        let log = PartitionLog::open(&self.log_dir(tp), self.log_config())?;
        let checkpointed = self.checkpointed_high_watermarks.get(tp).copied().unwrap_or(0);
        let high_watermark = checkpointed.min(log.log_end_offset());
        info!(
            "{tp}: opened replica (log end offset {}, high watermark {high_watermark}, replicas {:?})",
            log.log_end_offset(),
            partition_metadata.replicas
        );
        let partition = Arc::new(Partition {
            topic_partition: tp.clone(),
            state: Mutex::new(ReplicaState {
                log,
                role: ReplicaRole::Follower { leader: NO_BROKER },
                follower_high_watermark: high_watermark,
                leader_epoch: NO_EPOCH,
                partition_epoch: -1,
                replicas: partition_metadata.replicas.clone(),
                isr: partition_metadata.isr.clone(),
                producers: Default::default(),
            }),
        });
        partition.lock().rebuild_producer_state();
        self.partitions.write().unwrap_or_else(|p| p.into_inner()).insert(tp.clone(), partition.clone());
        Ok(partition)
    }

    fn apply_partition_metadata(
        &self,
        partition: &Partition,
        partition_metadata: &pb::PartitionMetadata,
        min_isr: usize,
        eligible: &BTreeSet<BrokerId>,
        now_ms: u64,
    ) -> Vec<Action> {
        let tp = &partition.topic_partition;
        let mut state = partition.lock();
        let mut actions = Vec::new();
        if partition_metadata.leader_epoch < state.leader_epoch
            || (partition_metadata.leader_epoch == state.leader_epoch
                && partition_metadata.partition_epoch <= state.partition_epoch)
        {
            // Stale or already applied; still refresh eligibility (fencing changes it).
            if let Some(leader) = state.leader_mut() {
                leader.set_eligible_followers(eligible.iter().copied());
            }
            return actions;
        }
        let new_epoch = partition_metadata.leader_epoch != state.leader_epoch;
        state.replicas = partition_metadata.replicas.clone();
        state.isr = partition_metadata.isr.clone();
        if partition_metadata.leader == self.broker_id {
            if new_epoch || state.leader().is_none() {
                // Kafka Partition.makeLeader: the new epoch starts at our LEO (recorded in
                // the epoch cache so followers can find where they diverged).
                let log_end_offset = state.log.log_end_offset();
                if let Err(e) = state.log.assign_epoch_start_offset(partition_metadata.leader_epoch, log_end_offset) {
                    warn!("{tp}: cannot record leader epoch {} start: {e}", partition_metadata.leader_epoch);
                }
                let high_watermark = state.high_watermark();
                let mut leader = LeaderPartition::new(
                    LeaderParams {
                        local_broker: self.broker_id,
                        replicas: partition_metadata.replicas.clone(),
                        isr: partition_metadata.isr.clone(),
                        leader_epoch: partition_metadata.leader_epoch,
                        partition_epoch: partition_metadata.partition_epoch,
                        leader_epoch_start_offset: log_end_offset,
                        log_end_offset,
                        high_watermark,
                        min_insync_replicas: min_isr,
                        replica_lag_time_max_ms: self.config.replica_lag_time_max_ms,
                    },
                    now_ms,
                );
                leader.set_eligible_followers(eligible.iter().copied());
                info!(
                    "{tp}: became leader at epoch {} (partition epoch {}), log end offset {log_end_offset}, high watermark {high_watermark}, replicas {:?}, ISR {:?}",
                    partition_metadata.leader_epoch, partition_metadata.partition_epoch, partition_metadata.replicas, partition_metadata.isr
                );
                if let Some(old) = state.leader_mut() {
                    actions.extend(old.resign());
                }
                state.role = ReplicaRole::Leader(Box::new(leader));
            } else if let Some(leader) = state.leader_mut() {
                leader.set_eligible_followers(eligible.iter().copied());
                actions.extend(commit_isr(
                    tp,
                    leader,
                    &partition_metadata.isr,
                    partition_metadata.partition_epoch,
                    "the metadata feed",
                    now_ms,
                ));
                actions.extend(leader.set_min_insync_replicas(min_isr, now_ms));
            }
        } else {
            if let Some(old) = state.leader_mut() {
                let resigned = old.resign();
                info!(
                    "{tp}: resigned leadership at epoch {} -> {} (new leader {}); {} waiting acks=all requests answered NOT_LEADER_OR_FOLLOWER",
                    state.leader_epoch,
                    partition_metadata.leader_epoch,
                    partition_metadata.leader,
                    resigned.len()
                );
                // A follower's HW starts at what the leader had; never above our LEO.
                let high_watermark = state.high_watermark().min(state.log.log_end_offset());
                state.follower_high_watermark = high_watermark;
                actions.extend(resigned);
            } else if new_epoch {
                info!(
                    "{tp}: following leader {} at epoch {}",
                    partition_metadata.leader, partition_metadata.leader_epoch
                );
            }
            if self.config.unsafe_truncate_to_high_watermark && new_epoch && partition_metadata.leader != NO_BROKER {
                // DELIBERATELY WRONG (negative control for `insync lab`, off by default): the
                // pre-KIP-101 `Partition.makeFollower` truncated to the local HW. A follower's HW
                // lags the leader's by a fetch round, so records the leader already acknowledged
                // are cut here; if this replica is elected before it re-fetches them, they are
                // lost. KIP-101 replaced this with leader-epoch truncation (fetcher.rs).
                let high_watermark = state.follower_high_watermark.min(state.log.log_end_offset());
                let log_end_offset = state.log.log_end_offset();
                if high_watermark < log_end_offset {
                    match state.log.truncate_to(high_watermark) {
                        Ok(t) => warn!(
                            "{tp}: UNSAFE truncation to the local high watermark {high_watermark} on following leader {} at epoch {}: {} records dropped (log end offset was {log_end_offset})",
                            partition_metadata.leader, partition_metadata.leader_epoch, t.records_removed
                        ),
                        Err(e) => warn!("{tp}: UNSAFE truncation to {high_watermark} failed: {e}"),
                    }
                }
            }
            state.role = ReplicaRole::Follower { leader: partition_metadata.leader };
        }
        state.leader_epoch = partition_metadata.leader_epoch;
        state.partition_epoch = partition_metadata.partition_epoch;
        actions
    }

    /// Executes the replication core's actions for one partition (outside its lock).
    pub fn run_actions(&self, tp: &TopicPartition, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::HighWatermarkAdvanced { .. } => self.wake_parked_fetches(),
                Action::CompleteProduce { waiter, error } => {
                    let sender = self.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&waiter);
                    if let Some(sender) = sender {
                        let _ = sender.send(error);
                    }
                }
                Action::ProposeIsr(change) => {
                    info!("{tp}: {change}");
                    let job = AlterPartitionJob { topic_partition: tp.clone(), change };
                    if let Err(e) = self.alter_partition_tx.try_send(job) {
                        // Bounded queue full or closed: drop the proposal and reset the
                        // pending state so the next check proposes again.
                        warn!("{tp}: could not queue AlterPartition ({e}); will retry");
                        if let Some(p) = self.partition(tp) {
                            if let Some(l) = p.lock().leader_mut() {
                                l.on_isr_change_rejected();
                            }
                        }
                    }
                }
            }
        }
    }

    /// The controller answered an AlterPartition.
    pub fn on_alter_partition_result(
        &self,
        tp: &TopicPartition,
        leader_epoch: i32,
        partition_epoch: i32,
        result: Result<pb::PartitionMetadata, (ErrorCode, String)>,
    ) {
        let Some(partition) = self.partition(tp) else {
            return;
        };
        let now_ms = self.now_ms();
        let mut state = partition.lock();
        if state.leader_epoch != leader_epoch {
            return; // leadership moved on while the request was in flight
        }
        let actions = match result {
            Ok(partition_metadata) => {
                let Some(leader) = state.leader_mut() else {
                    return;
                };
                let actions = commit_isr(
                    tp,
                    leader,
                    &partition_metadata.isr,
                    partition_metadata.partition_epoch,
                    "AlterPartition",
                    now_ms,
                );
                if partition_metadata.partition_epoch > state.partition_epoch {
                    state.partition_epoch = partition_metadata.partition_epoch;
                    state.isr = partition_metadata.isr.clone();
                }
                actions
            }
            Err((code, message)) => {
                warn!("{tp}: AlterPartition rejected by the controller: {code}: {message}; waiting for fresh metadata");
                // Only the proposal this answer is about may be dropped: if the metadata
                // feed already moved the partition epoch on, a newer proposal may be in
                // flight, and forgetting it would let the HW pass a member the controller
                // may yet commit (the KIP-497 hazard).
                if let Some(leader) = state.leader_mut() {
                    if leader.partition_epoch() == partition_epoch {
                        leader.on_isr_change_rejected();
                    }
                }
                Vec::new()
            }
        };
        drop(state);
        self.run_actions(tp, actions);
    }

    /// Whether the leader still waits on the ISR change proposed at these epochs.
    pub fn isr_change_pending(&self, tp: &TopicPartition, leader_epoch: i32, partition_epoch: i32) -> bool {
        let Some(partition) = self.partition(tp) else { return false };
        let state = partition.lock();
        state.leader_epoch == leader_epoch
            && state.leader().is_some_and(|l| l.partition_epoch() == partition_epoch && l.isr_state().is_in_flight())
    }

    /// Periodic ISR shrink check (Kafka runs it every replica.lag.time.max.ms / 2).
    pub fn shrink_isr_tick(&self) {
        let now_ms = self.now_ms();
        for partition in self.all_partitions() {
            let actions = match partition.lock().leader_mut() {
                Some(leader) => leader.on_tick(now_ms),
                None => continue,
            };
            self.run_actions(&partition.topic_partition, actions);
        }
    }

    /// Produce on the leader (Kafka `ReplicaManager.appendRecords` + `DelayedProduce`).
    pub async fn produce(&self, request: pb::ProduceRequest) -> ProduceOutcome {
        let timeout_ms = request.timeout_ms;
        let appended = self.produce_append(request);
        self.produce_wait(appended, timeout_ms).await
    }

    /// The synchronous half of a produce: validate, dedupe, append, and park an acks=all
    /// request. Requests of one stream call this in order, so their appends keep order
    /// while their acks=all waits overlap (Kafka pipelines up to max.in.flight so).
    pub fn produce_append(&self, request: pb::ProduceRequest) -> ProduceAppended {
        let acks = match Acks::from_wire(request.acks) {
            Ok(acks) => acks,
            Err(code) => {
                return ProduceAppended::Done(ProduceOutcome::rejected(
                    code,
                    format!("acks must be -1 (all), 0 or 1, got {}", request.acks),
                ))
            }
        };
        let tp = TopicPartition::new(request.topic.clone(), request.partition);
        if request.records.len() > self.config.message_max_bytes {
            return ProduceAppended::Done(ProduceOutcome::rejected(
                ErrorCode::MESSAGE_TOO_LARGE,
                format!(
                    "record batch of {} bytes exceeds message.max.bytes {}",
                    request.records.len(),
                    self.config.message_max_bytes
                ),
            ));
        }
        let header = match parse_header(&request.records) {
            Ok(h) => h,
            Err(e) => {
                return ProduceAppended::Done(ProduceOutcome::rejected(
                    e.error_code(),
                    format!("bad record batch: {e}"),
                ))
            }
        };
        let Some(partition) = self.partition(&tp) else {
            return ProduceAppended::Done(self.missing_partition_outcome(&tp));
        };
        let now_ms = self.now_ms();
        // The request buffer is usually ours alone: stamp offsets in place, no copy.
        let mut records = request.records.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        let first_sequence = header.base_sequence;
        let last_sequence = header.base_sequence.wrapping_add(header.last_offset_delta);
        let (outcome, waiter, actions) = {
            let mut state = partition.lock();
            let leader_epoch = state.leader_epoch;
            let ReplicaRole::Leader(leader) = &mut state.role else {
                let leader_id = state.leader_id(self.broker_id);
                return ProduceAppended::Done(ProduceOutcome::rejected(
                    ErrorCode::NOT_LEADER_OR_FOLLOWER,
                    format!("broker {} is not the leader of {tp} (leader: {leader_id})", self.broker_id),
                ));
            };
            if let Err(code) = leader.check_produce(acks) {
                let isr: Vec<_> = leader.isr_state().committed().iter().copied().collect();
                return ProduceAppended::Done(ProduceOutcome::rejected(
                    code,
                    format!(
                        "ISR {isr:?} has {} member(s), below min.insync.replicas {}; nothing was written",
                        isr.len(),
                        leader.effective_min_isr()
                    ),
                ));
            }
            let check = state.producers.check(header.producer_id, header.producer_epoch, first_sequence, last_sequence);
            let (base_offset, last_offset) = match check {
                Err(code) => {
                    return ProduceAppended::Done(ProduceOutcome::rejected(
                        code,
                        format!(
                            "producer {} epoch {} sent sequences {first_sequence}..={last_sequence}, which do not follow its last batch; nothing was written",
                            header.producer_id, header.producer_epoch
                        ),
                    ))
                }
                Ok(SequenceCheck::Duplicate(original)) => {
                    // A retry of a batch already in the log (Kafka answers with the
                    // original offsets; acks=all still waits for the HW to pass them).
                    debug!("{tp}: duplicate batch of producer {} (sequences {first_sequence}..={last_sequence}) at offset {}", header.producer_id, original.first_offset);
                    (original.first_offset, original.last_offset)
                }
                Ok(SequenceCheck::Append) => {
                    let append = match state.log.append_as_leader(&mut records, leader_epoch) {
                        Ok(info) => info,
                        Err(e) => {
                            return ProduceAppended::Done(ProduceOutcome::rejected(
                                log_error_code(&e),
                                format!("append rejected: {e}"),
                            ))
                        }
                    };
                    state.producers.record(
                        header.producer_id,
                        header.producer_epoch,
                        BatchMetadata {
                            first_sequence,
                            last_sequence,
                            first_offset: append.base_offset,
                            last_offset: append.last_offset,
                        },
                    );
                    (append.base_offset, append.last_offset)
                }
            };
            let log_end_offset = state.log.log_end_offset();
            let leader = state.leader_mut().expect("checked above");
            let mut actions = leader.on_local_append(log_end_offset, now_ms);
            let outcome = ProduceOutcome {
                error: ErrorCode::NONE,
                message: String::new(),
                base_offset,
                appended: true,
                leader_epoch,
            };
            let mut waiter = None;
            if acks == Acks::All {
                let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = oneshot::channel();
                self.waiters.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
                actions.extend(leader.add_waiter(id, last_offset + 1));
                waiter = Some((id, rx));
            }
            (outcome, waiter, actions)
        };
        // Wake fetchers: new data for followers (and HW, if it moved, for consumers).
        self.wake_parked_fetches();
        self.run_actions(&tp, actions);
        match waiter {
            None => {
                if acks == Acks::None {
                    debug!("{tp}: acks=0 append at {}", outcome.base_offset);
                }
                ProduceAppended::Done(outcome)
            }
            Some((id, rx)) => ProduceAppended::Waiting { partition, outcome, waiter: id, rx },
        }
    }

    /// The asynchronous half: for acks=all, wait until the HW passes the records, the ISR
    /// falls below min.insync.replicas, leadership moves, or `timeout_ms` passes.
    pub async fn produce_wait(&self, appended: ProduceAppended, timeout_ms: u32) -> ProduceOutcome {
        let (partition, outcome, id, mut rx) = match appended {
            ProduceAppended::Done(outcome) => return outcome,
            ProduceAppended::Waiting { partition, outcome, waiter, rx } => (partition, outcome, waiter, rx),
        };
        let timeout = Duration::from_millis(u64::from(timeout_ms.max(1)));
        let error = match tokio::time::timeout(timeout, &mut rx).await {
            Ok(Ok(error)) => error,
            Ok(Err(_)) => ErrorCode::NOT_LEADER_OR_FOLLOWER, // sender dropped: partition gone
            Err(_) => {
                if let Some(l) = partition.lock().leader_mut() {
                    l.remove_waiter(id);
                }
                self.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                // It may have completed in the instant between the deadline and the lock.
                rx.try_recv().unwrap_or(ErrorCode::REQUEST_TIMED_OUT)
            }
        };
        let message = match error {
            ErrorCode::NONE => String::new(),
            ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND => {
                "written to the leader's log, but the ISR shrank below min.insync.replicas before enough replicas had it".into()
            }
            ErrorCode::REQUEST_TIMED_OUT => {
                format!("written to the leader's log, but not replicated to the ISR within {timeout_ms} ms")
            }
            ErrorCode::NOT_LEADER_OR_FOLLOWER => {
                "written to the leader's log, but leadership moved before the ISR had it".into()
            }
            other => format!("{other}"),
        };
        ProduceOutcome { error, message, ..outcome }
    }

    fn missing_partition_outcome(&self, tp: &TopicPartition) -> ProduceOutcome {
        let metadata = self.metadata();
        let known = metadata
            .topics
            .iter()
            .find(|t| t.name == tp.topic)
            .and_then(|t| t.partitions.iter().find(|p| p.partition == tp.partition));
        match known {
            Some(partition_metadata) => ProduceOutcome::rejected(
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                format!("broker {} does not host {tp} (leader: {})", self.broker_id, partition_metadata.leader),
            ),
            None => ProduceOutcome::rejected(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("unknown topic or partition {tp}"),
            ),
        }
    }

    /// Reads one partition for a fetch (Kafka `Partition.fetchRecords`). `update_follower`
    /// is true only on the first pass of a request, so a long-polled fetch counts once.
    /// `replica_id` is a follower's only if the request passed `check_follower_identity`.
    fn fetch_partition(
        &self,
        replica_id: BrokerId,
        wanted: &pb::FetchPartition,
        budget: &FetchBudget,
        update_follower: bool,
    ) -> (pb::FetchPartitionResponse, Vec<Action>) {
        let tp = TopicPartition::new(wanted.topic.clone(), wanted.partition);
        let mut response = empty_partition_response(wanted);
        let Some(partition) = self.partition(&tp) else {
            response.error_code = self.missing_partition_code(&tp).code();
            return (response, Vec::new());
        };
        let mut state = partition.lock();
        response.leader_epoch = state.leader_epoch;
        if state.leader().is_none() {
            response.error_code = ErrorCode::NOT_LEADER_OR_FOLLOWER.code();
            return (response, Vec::new());
        }
        if let Err(code) = check_current_leader_epoch(wanted.current_leader_epoch, state.leader_epoch) {
            response.error_code = code.code();
            return (response, Vec::new());
        }
        response.log_start_offset = state.log.log_start_offset();
        response.log_end_offset = state.log.log_end_offset();
        response.high_watermark = state.high_watermark();
        let is_follower = is_follower_fetch(replica_id);
        if is_follower {
            if let Err(refusal) =
                check_partition_replica(self.broker_id, &state.replicas, replica_id, wanted.current_leader_epoch)
            {
                debug!(%tp, replica_id, error = %refusal.error, "refused replica fetch: {}", refusal.message);
                return (refused_partition_response(wanted, &refusal), Vec::new());
            }
            if let Some(d) = fetch_divergence(&state, wanted) {
                response.diverging_epoch = Some(d);
                return (response, Vec::new());
            }
        }
        if wanted.fetch_offset < response.log_start_offset || wanted.fetch_offset > response.log_end_offset {
            response.error_code = ErrorCode::OFFSET_OUT_OF_RANGE.code();
            return (response, Vec::new());
        }
        let mut actions = Vec::new();
        if is_follower && update_follower {
            if let Some(leader) = state.leader_mut() {
                actions = leader.on_follower_fetch(replica_id, wanted.fetch_offset, self.now_ms());
            }
            response.high_watermark = state.high_watermark();
        }
        // Consumers read only below the HW; followers up to the LEO.
        let upper = if is_follower { response.log_end_offset } else { state.high_watermark() };
        if wanted.fetch_offset < upper {
            let (max_bytes, first_batch_max_bytes) = budget.partition_limits(wanted.partition_max_bytes);
            match state.log.read_bounded(wanted.fetch_offset, upper, max_bytes, first_batch_max_bytes) {
                Ok(bytes) => response.records = bytes,
                Err(e) => response.error_code = log_error_code(&e).code(),
            }
        }
        (response, actions)
    }

    /// A partition we do not host: NOT_LEADER_OR_FOLLOWER when the metadata knows it (another
    /// broker hosts it), else UNKNOWN_TOPIC_OR_PARTITION.
    fn missing_partition_code(&self, tp: &TopicPartition) -> ErrorCode {
        let known = self
            .metadata()
            .topics
            .iter()
            .any(|t| t.name == tp.topic && t.partitions.iter().any(|p| p.partition == tp.partition));
        if known {
            ErrorCode::NOT_LEADER_OR_FOLLOWER
        } else {
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        }
    }

    /// A fetch request's byte limits and the entries refused for naming a partition twice.
    fn plan_fetch(&self, request: &pb::FetchRequest) -> FetchPlan {
        let max_bytes = effective_max_bytes(request.max_bytes, self.config.fetch_max_bytes);
        FetchPlan {
            max_bytes,
            hard_limit: grpc_record_budget(&request.partitions),
            // KafkaApis.handleFetchRequest: fetchMinBytes = min(request minBytes, fetchMaxBytes).
            min_bytes: (request.min_bytes as usize).min(max_bytes).max(1),
            listed_twice: duplicate_entries(&request.partitions),
        }
    }

    /// Whether a fetch may be served as a follower fetch, by the metadata of now: checked on
    /// every pass of a long poll, so a follower fenced while it waits is not served on.
    fn check_identity(&self, request: &pb::FetchRequest) -> Result<(), ReplicaRefusal> {
        if !is_follower_fetch(request.replica_id) {
            return Ok(());
        }
        let checked = check_follower_identity(&self.metadata(), request.replica_id, request.broker_epoch);
        if let Err(refusal) = &checked {
            // Debug only: a follower sees this while the metadata catches up, and anyone may
            // send it, so it must not flood the log.
            debug!(
                replica_id = request.replica_id,
                broker_epoch = request.broker_epoch,
                error = %refusal.error,
                "refused replica fetch: {}",
                refusal.message
            );
        }
        checked
    }

    /// One pass over a fetch's partitions in request order, sharing one byte budget
    /// (Kafka `ReplicaManager.readFromLog`). Returns the answers and their record bytes.
    fn read_partitions(
        &self,
        request: &pb::FetchRequest,
        plan: &FetchPlan,
        update_follower: bool,
    ) -> (Vec<pb::FetchPartitionResponse>, usize) {
        let identity = self.check_identity(request);
        let duplicate = ReplicaRefusal {
            error: ErrorCode::INVALID_REQUEST,
            message: "the partition is listed more than once in this fetch".into(),
        };
        let mut budget = FetchBudget::new(plan.max_bytes, plan.hard_limit);
        let mut responses = Vec::with_capacity(request.partitions.len());
        let mut total = 0usize;
        for (wanted, &listed_twice) in request.partitions.iter().zip(&plan.listed_twice) {
            let response = match (&identity, listed_twice) {
                (_, true) => refused_partition_response(wanted, &duplicate),
                (Err(refusal), false) => refused_partition_response(wanted, refusal),
                (Ok(()), false) => {
                    let (response, actions) =
                        self.fetch_partition(request.replica_id, wanted, &budget, update_follower);
                    if !actions.is_empty() {
                        self.run_actions(&TopicPartition::new(wanted.topic.clone(), wanted.partition), actions);
                    }
                    response
                }
            };
            budget.consume(response.records.len());
            total += response.records.len();
            responses.push(response);
        }
        (responses, total)
    }

    /// Serves a Fetch, long-polling up to max_wait_ms until some partition has data, or
    /// (for followers) a HW change to pass on (Kafka `DelayedFetch`).
    pub async fn fetch(&self, request: pb::FetchRequest) -> pb::FetchResponse {
        let mut wakeups = self.fetch_wakeups.subscribe();
        wakeups.borrow_and_update();
        let plan = self.plan_fetch(&request);
        let deadline = Instant::now() + Duration::from_millis(u64::from(request.max_wait_ms.min(30_000)));
        let mut first = true;
        let mut initial_hw: Vec<i64> = Vec::new();
        loop {
            let (responses, total) = self.read_partitions(&request, &plan, first);
            // A consumer reads below the HW, so a HW move is new data for it. A follower's
            // fetch is not completed by a HW move alone (as in Kafka's `DelayedFetch`, which
            // counts follower bytes up to the LEO): it learns the HW with the next data or at
            // max_wait_ms, and completing it early would cost every follower an extra round
            // trip per acks=all produce, on the CPU the produce's answer needs.
            let hw_moved = !first
                && !is_follower_fetch(request.replica_id)
                && responses.iter().zip(initial_hw.iter()).any(|(r, hw)| r.high_watermark != *hw);
            let has_error_or_divergence = responses.iter().any(|r| r.error_code != 0 || r.diverging_epoch.is_some());
            if first {
                initial_hw = responses.iter().map(|r| r.high_watermark).collect();
            }
            first = false;
            if total >= plan.min_bytes || hw_moved || has_error_or_divergence || Instant::now() >= deadline {
                return pb::FetchResponse { error_code: 0, partitions: responses };
            }
            if tokio::time::timeout_at(deadline.into(), wakeups.changed()).await.is_err() {
                // Deadline: answer with what there is (nothing).
                return pb::FetchResponse { error_code: 0, partitions: responses };
            }
        }
    }

    pub fn list_offsets(&self, request: &pb::ListOffsetsRequest) -> pb::ListOffsetsResponse {
        let tp = TopicPartition::new(request.topic.clone(), request.partition);
        let Some(partition) = self.partition(&tp) else {
            let outcome = self.missing_partition_outcome(&tp);
            return pb::ListOffsetsResponse {
                error_code: outcome.error.code(),
                error_message: outcome.message,
                offset: -1,
            };
        };
        let state = partition.lock();
        if state.leader().is_none() {
            return pb::ListOffsetsResponse {
                error_code: ErrorCode::NOT_LEADER_OR_FOLLOWER.code(),
                error_message: format!("broker {} is not the leader of {tp}", self.broker_id),
                offset: -1,
            };
        }
        let offset = match request.timestamp {
            -2 => state.log.log_start_offset(),
            -1 => state.high_watermark(),
            other => {
                return pb::ListOffsetsResponse {
                    error_code: ErrorCode::INVALID_REQUEST.code(),
                    error_message: format!("timestamp {other}: only -2 (earliest) and -1 (latest) are supported"),
                    offset: -1,
                }
            }
        };
        pb::ListOffsetsResponse { error_code: 0, error_message: String::new(), offset }
    }

    pub fn describe_replicas(&self, topics: &[String]) -> pb::DescribeReplicasResponse {
        let now_ms = self.now_ms();
        let replicas = self
            .all_partitions()
            .into_iter()
            .filter(|p| topics.is_empty() || topics.contains(&p.topic_partition.topic))
            .map(|p| {
                let state = p.lock();
                let mut d = pb::ReplicaDescription {
                    topic: p.topic_partition.topic.clone(),
                    partition: p.topic_partition.partition,
                    is_leader: state.leader().is_some(),
                    leader_epoch: state.leader_epoch,
                    log_start_offset: state.log.log_start_offset(),
                    log_end_offset: state.log.log_end_offset(),
                    high_watermark: state.high_watermark(),
                    ..Default::default()
                };
                if let Some(leader) = state.leader() {
                    d.isr = leader.isr_state().committed().iter().copied().collect();
                    d.maximal_isr = leader.isr_state().maximal().into_iter().collect();
                    d.effective_min_isr = leader.effective_min_isr() as i32;
                    d.followers = leader
                        .followers()
                        .map(|(id, f)| pb::FollowerDescription {
                            broker_id: id,
                            log_end_offset: f.log_end_offset,
                            last_caught_up_ms_ago: if f.last_caught_up_ms == 0 {
                                -1
                            } else {
                                now_ms.saturating_sub(f.last_caught_up_ms) as i64
                            },
                        })
                        .collect();
                    if leader.is_under_min_isr() {
                        d.note = format!(
                            "HW held: ISR below min.insync.replicas ({} < {})",
                            leader.isr_state().committed().len(),
                            leader.effective_min_isr()
                        );
                    }
                }
                d
            })
            .collect();
        pb::DescribeReplicasResponse { broker_id: self.broker_id, replicas }
    }

    /// Writes every hosted partition's HW to the checkpoint (Kafka
    /// `ReplicaManager.checkpointHighWatermarks`).
    pub fn checkpoint_high_watermarks(&self) {
        let map: BTreeMap<TopicPartition, Offset> = self
            .all_partitions()
            .into_iter()
            .map(|p| {
                let hw = p.lock().high_watermark();
                (p.topic_partition.clone(), hw)
            })
            .collect();
        if map.is_empty() {
            return;
        }
        if let Err(e) = self.hw_checkpoint.lock().unwrap_or_else(|p| p.into_inner()).write(&map) {
            warn!("high watermark checkpoint failed: {e}");
        }
    }

    /// Clean shutdown: checkpoint HWs and flush every log (fsync).
    pub fn shutdown(&self) {
        self.checkpoint_high_watermarks();
        for partition in self.all_partitions() {
            let mut state = partition.lock();
            if let Err(e) = state.log.flush() {
                warn!("{}: flush on shutdown failed: {e}", partition.topic_partition);
            }
            if let Some(leader) = state.leader_mut() {
                let actions = leader.resign();
                drop(state);
                self.run_actions(&partition.topic_partition, actions);
            }
        }
    }

    /// Wakes every parked long-polling fetch to look again (new data or a new HW), as Kafka
    /// `ReplicaManager` completes `DelayedFetch`es on appends and HW moves.
    pub fn wake_parked_fetches(&self) {
        self.fetch_wakeups.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// A fetch request's limits (see `ReplicaManager::plan_fetch`).
struct FetchPlan {
    /// Record bytes: the request's max_bytes clamped to fetch.max.bytes.
    max_bytes: usize,
    /// Record bytes that fit a gRPC answer with this request's framing.
    hard_limit: usize,
    min_bytes: usize,
    /// Per request entry: the partition is listed more than once (answered INVALID_REQUEST).
    listed_twice: Vec<bool>,
}

/// A partition's answer before anything is known about it.
fn empty_partition_response(wanted: &pb::FetchPartition) -> pb::FetchPartitionResponse {
    pb::FetchPartitionResponse {
        topic: wanted.topic.clone(),
        partition: wanted.partition,
        high_watermark: -1,
        log_start_offset: -1,
        log_end_offset: -1,
        ..Default::default()
    }
}

fn refused_partition_response(wanted: &pb::FetchPartition, refusal: &ReplicaRefusal) -> pb::FetchPartitionResponse {
    pb::FetchPartitionResponse {
        error_code: refusal.error.code(),
        error_message: refusal.message.clone(),
        ..empty_partition_response(wanted)
    }
}

/// Where a follower's log diverged from ours, if it did (KIP-320: the follower's last
/// fetched epoch ends before its fetch offset here).
fn fetch_divergence(state: &ReplicaState, wanted: &pb::FetchPartition) -> Option<pb::EpochEndOffset> {
    if wanted.last_fetched_epoch == NO_EPOCH {
        return None;
    }
    let (epoch, end_offset) = state.log.end_offset_for_epoch(wanted.last_fetched_epoch);
    diverging_epoch(
        wanted.last_fetched_epoch,
        wanted.fetch_offset,
        EpochEndOffset { epoch, end_offset },
        state.log.log_start_offset(),
    )
    .map(|d| pb::EpochEndOffset { epoch: d.epoch, end_offset: d.end_offset })
}

/// Applies an ISR committed by the controller to the leader core, logging the change once
/// (the AlterPartition answer and the metadata feed both carry it; whichever arrives first
/// applies it, the other finds the partition epoch already seen).
fn commit_isr(
    tp: &TopicPartition,
    leader: &mut LeaderPartition,
    isr: &[BrokerId],
    partition_epoch: i32,
    source: &str,
    now_ms: u64,
) -> Vec<Action> {
    if partition_epoch <= leader.partition_epoch() {
        return Vec::new();
    }
    let old_isr: Vec<BrokerId> = leader.isr_state().committed().iter().copied().collect();
    let actions = leader.on_isr_committed(isr, partition_epoch, now_ms);
    crate::metrics::record_isr_change(&old_isr, isr);
    info!(
        "{tp}: ISR {:?} -> {:?} committed at partition epoch {partition_epoch} (seen via {source}); leader LEO {}, HW {}{}",
        old_isr,
        isr,
        leader.log_end_offset(),
        leader.high_watermark(),
        if leader.is_under_min_isr() {
            format!(", below min.insync.replicas {}: acks=all refused, HW held", leader.effective_min_isr())
        } else {
            String::new()
        }
    );
    actions
}

/// Maps a log error to Kafka's code.
pub fn log_error_code(e: &LogError) -> ErrorCode {
    e.error_code()
}
