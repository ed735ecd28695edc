//! One partition replica hosted by this broker (Kafka `cluster/Partition.scala`): its log,
//! its role (leader, driving the pure replication core, or follower of some leader) and its
//! idempotent-producer state, behind one mutex so that an append, the HW it moves and the
//! waiters it completes are one atomic step. Becoming leader or follower, appending as
//! leader, serving reads, applying a leader's fetch answer and the ISR/AlterPartition
//! bookkeeping live here; `ReplicaManager` maps partitions, completes waiters and fans
//! metadata out. Nothing here does network I/O or reads a clock: the caller passes `now_ms`,
//! so tests drive a `Partition` with a clock of their own.
use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use insync_log::batch::{iter_batches, BatchHeader};
use insync_log::{LogConfig, LogError, PartitionLog, RetentionInfo};
use insync_replication::{
    alter_partition_error_action, check_current_leader_epoch, diverging_epoch, follower_high_watermark,
    truncation_offset, Action, AlterPartitionErrorAction, BatchMetadata, EpochEndOffset, LeaderParams, LeaderPartition,
    ProducerStateTable, SequenceCheck, WaiterId,
};
use insync_types::{
    Acks, BrokerId, ErrorCode, LeaderEpoch, Offset, PartitionEpoch, TopicPartition, NO_BROKER, NO_EPOCH,
};
use tracing::{debug, info, warn};

use crate::fetch_limits::FetchBudget;
use crate::messages::{FetchPartition, FetchPartitionResponse, ProduceOutcome};
use crate::producer_snapshots;
use crate::replica_identity::{check_partition_replica, is_follower_fetch};

/// A partition's registration as the controller last committed it (Kafka
/// `PartitionRegistration`): the input of `make_leader` / `make_follower`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRegistration {
    pub leader: BrokerId,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
}

/// What a registration is applied with, beyond the registration itself.
#[derive(Debug, Clone)]
pub struct LeadershipContext<'a> {
    /// The topic's min.insync.replicas (or the broker default).
    pub min_insync_replicas: usize,
    /// Brokers registered, unfenced and not shutting down: the only ones the ISR may grow to
    /// (KIP-841).
    pub eligible: &'a BTreeSet<BrokerId>,
    pub replica_lag_time_max_ms: u64,
}

/// Leader or follower (Kafka `Partition.makeLeader` / `makeFollower`).
#[derive(Debug)]
enum ReplicaRole {
    Leader(Box<LeaderPartition>),
    /// Following `leader` (NO_BROKER while the partition is offline).
    Follower {
        leader: BrokerId,
    },
}

/// State under the partition lock. Read-only outside this file (`Partition::inspect`).
#[derive(Debug)]
pub struct ReplicaState {
    log: PartitionLog,
    role: ReplicaRole,
    /// The follower's HW (a leader's lives in its `LeaderPartition`).
    follower_high_watermark: Offset,
    leader_epoch: LeaderEpoch,
    partition_epoch: PartitionEpoch,
    replicas: Vec<BrokerId>,
    /// The ISR as last committed by the controller (the leader's core may know newer).
    isr: Vec<BrokerId>,
    /// Idempotent producers' recent sequences, kept on every replica (leader and follower
    /// appends both update it) so a new leader dedupes retries at once.
    producers: ProducerStateTable,
    /// Taken offline after a storage error (`Partition::mark_offline`): for good, until the
    /// broker restarts. Also set, with `deleted`, when the replica is stopped for deletion.
    offline: bool,
    /// Stopped because its topic was deleted (`Partition::stop_for_deletion`): whoever still
    /// holds it is answered UNKNOWN_TOPIC_OR_PARTITION instead of a storage error.
    deleted: bool,
}

impl ReplicaState {
    pub fn high_watermark(&self) -> Offset {
        match &self.role {
            ReplicaRole::Leader(leader) => leader.high_watermark(),
            ReplicaRole::Follower { .. } => self.follower_high_watermark,
        }
    }

    pub fn log_start_offset(&self) -> Offset {
        self.log.log_start_offset()
    }

    /// Bytes of the replica's log, all segments (Kafka's `Size` log metric).
    pub fn log_size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    pub fn log_end_offset(&self) -> Offset {
        self.log.log_end_offset()
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> PartitionEpoch {
        self.partition_epoch
    }

    /// The leader's replication core, when this replica leads.
    pub fn leader(&self) -> Option<&LeaderPartition> {
        match &self.role {
            ReplicaRole::Leader(l) => Some(l),
            ReplicaRole::Follower { .. } => None,
        }
    }

    /// The broker this replica takes as leader (itself when it leads).
    pub fn leader_id(&self, local: BrokerId) -> BrokerId {
        match self.role {
            ReplicaRole::Leader(_) => local,
            ReplicaRole::Follower { leader } => leader,
        }
    }

    pub fn producers(&self) -> &ProducerStateTable {
        &self.producers
    }

    fn leader_mut(&mut self) -> Option<&mut LeaderPartition> {
        match &mut self.role {
            ReplicaRole::Leader(l) => Some(l),
            ReplicaRole::Follower { .. } => None,
        }
    }

    fn is_follower_of(&self, leader: BrokerId, leader_epoch: LeaderEpoch) -> bool {
        matches!(self.role, ReplicaRole::Follower { leader: l } if l == leader && l != NO_BROKER)
            && self.leader_epoch == leader_epoch
    }

    /// Truncates the log to `offset` and reloads what depends on its tail: the producer
    /// state and a follower HW above the new end.
    fn truncate_to(&mut self, offset: Offset) -> Result<insync_log::TruncateInfo, LogError> {
        let truncated = self.log.truncate_to(offset);
        let log_end_offset = self.log.log_end_offset();
        self.follower_high_watermark = self.follower_high_watermark.min(log_end_offset);
        // Kafka `ProducerStateManager.truncateAndReload`: snapshots past the new end describe
        // removed batches; the table is the newest remaining snapshot plus the tail.
        producer_snapshots::truncate(self.log.dir(), log_end_offset);
        self.producers = producer_snapshots::restore(&self.log, self.log.dir());
        truncated
    }

    /// An append that failed after the log took its batches (a failed flush after the write)
    /// left the table behind the log: reload it, so no later snapshot freezes the gap.
    fn reload_producers_if_grown(&mut self, log_end_before: Offset) {
        if self.log.log_end_offset() != log_end_before {
            self.producers = producer_snapshots::restore(&self.log, self.log.dir());
        }
    }

    /// Snapshots the producer table when an append rolled the log (Kafka takes one at every
    /// roll), so a restart or truncation replays at most about a segment.
    fn snapshot_on_roll(&self, segment_before: Offset) {
        if self.log.active_segment_base_offset() == segment_before {
            return;
        }
        self.write_producer_snapshot(false);
    }

    fn write_producer_snapshot(&self, durable: bool) {
        let end = self.log.log_end_offset();
        if let Err(e) = producer_snapshots::write(self.log.dir(), &self.producers, end, durable) {
            // Only costs a longer replay at the next open or truncation.
            warn!(dir = %self.log.dir().display(), offset = end, "cannot write a producer-state snapshot: {e}");
        }
    }
}

/// A leader append's result, for the replica manager to answer and to act on.
#[derive(Debug)]
pub struct LeaderAppend {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub leader_epoch: LeaderEpoch,
    /// The replication core's actions (a HW move, completed waiters) to run after unlocking.
    pub actions: Vec<Action>,
}

/// What applying a leader's fetch answer did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchApplied {
    /// The answer was an error to wait out (metadata catching up): back off before the next
    /// fetch.
    pub back_off: bool,
    /// The follower HW moved: parked consumer fetches may have new data.
    pub high_watermark_changed: bool,
    /// Writing the answer to the log failed with a storage error (an I/O error: Kafka's
    /// `KafkaStorageException`), saying what failed: the replica manager takes the replica
    /// offline (`ReplicaManager::mark_offline`).
    pub storage_error: Option<String>,
}

impl FetchApplied {
    fn back_off() -> FetchApplied {
        FetchApplied { back_off: true, ..FetchApplied::default() }
    }

    /// A log write that failed: a storage error takes the replica offline, anything else is
    /// waited out like an error answer.
    fn failed_write(what: String, error: &LogError) -> FetchApplied {
        let storage_error = (error.error_code() == ErrorCode::KAFKA_STORAGE_ERROR).then(|| format!("{what}: {error}"));
        FetchApplied { back_off: true, high_watermark_changed: false, storage_error }
    }
}

/// A hosted replica.
#[derive(Debug)]
pub struct Partition {
    topic_partition: TopicPartition,
    local_broker: BrokerId,
    /// The lab's negative control (pre-KIP-101 truncation to the local HW); see
    /// `unsafe_truncate_to_high_watermark`.
    unsafe_truncation: bool,
    state: Mutex<ReplicaState>,
}

impl Partition {
    /// Opens the replica's log in `dir` as a follower of nobody; the first registration
    /// makes it leader or follower. Its HW starts at the checkpointed one, never above the
    /// log end (Kafka `Partition.createLog` with the `replication-offset-checkpoint`).
    pub fn open(
        topic_partition: TopicPartition,
        dir: &std::path::Path,
        log_config: LogConfig,
        checkpointed_high_watermark: Offset,
        local_broker: BrokerId,
        unsafe_truncation: bool,
    ) -> Result<Partition, LogError> {
        let log = PartitionLog::open(dir, log_config)?;
        let high_watermark = checkpointed_high_watermark.min(log.log_end_offset());
        let producers = producer_snapshots::restore(&log, dir);
        info!(
            "{topic_partition}: opened replica (log start offset {}, log end offset {}, high watermark {high_watermark}, {} producers)",
            log.log_start_offset(),
            log.log_end_offset(),
            producers.producer_count()
        );
        let state = ReplicaState {
            log,
            role: ReplicaRole::Follower { leader: NO_BROKER },
            follower_high_watermark: high_watermark,
            leader_epoch: NO_EPOCH,
            partition_epoch: -1,
            replicas: Vec::new(),
            isr: Vec::new(),
            producers,
            offline: false,
            deleted: false,
        };
        Ok(Partition { topic_partition, local_broker, unsafe_truncation, state: Mutex::new(state) })
    }

    pub fn topic_partition(&self) -> &TopicPartition {
        &self.topic_partition
    }

    /// Whether this replica runs the lab's negative control: never in a shipped broker, whose
    /// build has no such code (the `unsafe-truncation` feature).
    fn unsafe_truncation(&self) -> bool {
        cfg!(any(test, feature = "unsafe-truncation")) && self.unsafe_truncation
    }

    fn lock(&self) -> MutexGuard<'_, ReplicaState> {
        // A panic while holding the lock is a bug; keep serving the data rather than
        // cascading panics into every request for this partition.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the replica's state under its lock.
    pub fn inspect<R>(&self, f: impl FnOnce(&ReplicaState) -> R) -> R {
        f(&self.lock())
    }

    pub fn high_watermark(&self) -> Offset {
        self.lock().high_watermark()
    }

    pub fn log_start_offset(&self) -> Offset {
        self.lock().log_start_offset()
    }

    pub fn log_end_offset(&self) -> Offset {
        self.lock().log_end_offset()
    }

    pub fn is_leader(&self) -> bool {
        self.lock().leader().is_some()
    }

    /// Whether this replica leads at `leader_epoch` already.
    pub fn leads_at(&self, leader_epoch: LeaderEpoch) -> bool {
        let state = self.lock();
        state.leader().is_some() && state.leader_epoch == leader_epoch
    }

    /// Applies the controller's registration of this partition (Kafka
    /// `ReplicaManager.applyDelta` → `Partition.makeLeader` / `makeFollower`). A stale or
    /// already applied registration only refreshes which followers are eligible and the
    /// min.insync.replicas, both of which the HW depends on.
    pub fn apply_registration(
        &self,
        registration: &PartitionRegistration,
        context: &LeadershipContext<'_>,
        now_ms: u64,
    ) -> Vec<Action> {
        let mut state = self.lock();
        if state.offline {
            return Vec::new(); // Kafka applyDelta skips a HostedPartition.Offline
        }
        if registration.leader_epoch < state.leader_epoch
            || (registration.leader_epoch == state.leader_epoch
                && registration.partition_epoch <= state.partition_epoch)
        {
            let Some(leader) = state.leader_mut() else { return Vec::new() };
            // The snapshot is not older than the last (the caller never applies an older
            // one), so its broker states and topic config are current even when this
            // partition's epochs are not: a fence or a lower min.insync.replicas may let the
            // HW advance now, without a new partition epoch.
            let mut actions = leader.set_eligible_followers(context.eligible.iter().copied(), now_ms);
            actions.extend(leader.set_min_insync_replicas(context.min_insync_replicas, now_ms));
            return actions;
        }
        let new_epoch = registration.leader_epoch != state.leader_epoch;
        state.replicas = registration.replicas.clone();
        state.isr = registration.isr.clone();
        let actions = if registration.leader != self.local_broker {
            self.make_follower(&mut state, registration, new_epoch)
        } else if new_epoch || state.leader().is_none() {
            self.make_leader(&mut state, registration, context, now_ms)
        } else {
            self.update_leader(&mut state, registration, context, now_ms)
        };
        state.leader_epoch = registration.leader_epoch;
        state.partition_epoch = registration.partition_epoch;
        actions
    }

    /// Kafka `Partition.makeLeader`: the new epoch starts at our LEO (recorded in the epoch
    /// cache so followers can find where they diverged), and the HW carries over.
    fn make_leader(
        &self,
        state: &mut ReplicaState,
        registration: &PartitionRegistration,
        context: &LeadershipContext<'_>,
        now_ms: u64,
    ) -> Vec<Action> {
        let tp = &self.topic_partition;
        let log_end_offset = state.log.log_end_offset();
        if let Err(e) = state.log.assign_epoch_start_offset(registration.leader_epoch, log_end_offset) {
            warn!("{tp}: cannot record leader epoch {} start: {e}", registration.leader_epoch);
        }
        let high_watermark = state.high_watermark();
        let mut leader = LeaderPartition::new(
            LeaderParams {
                local_broker: self.local_broker,
                replicas: registration.replicas.clone(),
                isr: registration.isr.clone(),
                leader_epoch: registration.leader_epoch,
                partition_epoch: registration.partition_epoch,
                leader_epoch_start_offset: log_end_offset,
                log_end_offset,
                high_watermark,
                min_insync_replicas: context.min_insync_replicas,
                replica_lag_time_max_ms: context.replica_lag_time_max_ms,
            },
            now_ms,
        );
        // Kafka makeLeader ends with maybeIncrementLeaderHW ("ISR could be down to 1"): a
        // leader alone in its ISR holds every committed record, with no fetch to wait for.
        let advanced = leader.set_eligible_followers(context.eligible.iter().copied(), now_ms);
        info!(
            "{tp}: became leader at epoch {} (partition epoch {}), log end offset {log_end_offset}, high watermark {}, replicas {:?}, ISR {:?}",
            registration.leader_epoch,
            registration.partition_epoch,
            leader.high_watermark(),
            registration.replicas,
            registration.isr
        );
        let mut actions = Vec::new();
        if let Some(old) = state.leader_mut() {
            actions.extend(old.resign());
        }
        actions.extend(advanced);
        state.role = ReplicaRole::Leader(Box::new(leader));
        actions
    }

    /// Same leader epoch, newer partition epoch: an ISR the controller committed (from the
    /// metadata feed) and possibly a new min.insync.replicas.
    fn update_leader(
        &self,
        state: &mut ReplicaState,
        registration: &PartitionRegistration,
        context: &LeadershipContext<'_>,
        now_ms: u64,
    ) -> Vec<Action> {
        let Some(leader) = state.leader_mut() else { return Vec::new() };
        let mut actions = leader.set_eligible_followers(context.eligible.iter().copied(), now_ms);
        actions.extend(commit_isr(
            &self.topic_partition,
            leader,
            &registration.isr,
            registration.partition_epoch,
            "the metadata feed",
            now_ms,
        ));
        actions.extend(leader.set_min_insync_replicas(context.min_insync_replicas, now_ms));
        actions
    }

    /// Kafka `Partition.makeFollower`: a leader resigns (its waiting acks=all requests are
    /// answered NOT_LEADER_OR_FOLLOWER) and keeps its log; truncation, if any is needed, is
    /// the fetcher's, by leader epoch (KIP-101), once the new leader answers.
    fn make_follower(
        &self,
        state: &mut ReplicaState,
        registration: &PartitionRegistration,
        new_epoch: bool,
    ) -> Vec<Action> {
        let tp = &self.topic_partition;
        let mut actions = Vec::new();
        if let Some(old) = state.leader_mut() {
            let resigned = old.resign();
            info!(
                "{tp}: resigned leadership at epoch {} -> {} (new leader {}); {} waiting acks=all requests answered NOT_LEADER_OR_FOLLOWER",
                state.leader_epoch,
                registration.leader_epoch,
                registration.leader,
                resigned.len()
            );
            // A follower's HW starts at what the leader had; never above our LEO.
            state.follower_high_watermark = state.high_watermark().min(state.log.log_end_offset());
            actions.extend(resigned);
        } else if new_epoch {
            info!("{tp}: following leader {} at epoch {}", registration.leader, registration.leader_epoch);
        }
        #[cfg(any(test, feature = "unsafe-truncation"))]
        if self.unsafe_truncation && new_epoch && registration.leader != NO_BROKER {
            self.unsafe_truncate_to_high_watermark(state, registration);
        }
        state.role = ReplicaRole::Follower { leader: registration.leader };
        actions
    }

    /// DELIBERATELY WRONG (negative control for `insync lab`, off by default): the
    /// pre-KIP-101 `Partition.makeFollower` truncated to the local HW. A follower's HW lags
    /// the leader's by a fetch round, so records the leader already acknowledged are cut
    /// here; if this replica is elected before it re-fetches them, they are lost. KIP-101
    /// replaced this with leader-epoch truncation (`apply_fetch_response`). Compiled only
    /// into tests and brokers built with the `unsafe-truncation` feature.
    #[cfg(any(test, feature = "unsafe-truncation"))]
    fn unsafe_truncate_to_high_watermark(&self, state: &mut ReplicaState, registration: &PartitionRegistration) {
        let tp = &self.topic_partition;
        let high_watermark = state.follower_high_watermark.min(state.log.log_end_offset());
        let log_end_offset = state.log.log_end_offset();
        if high_watermark >= log_end_offset {
            return;
        }
        match state.truncate_to(high_watermark) {
            Ok(t) => warn!(
                "{tp}: UNSAFE truncation to the local high watermark {high_watermark} on following leader {} at epoch {}: {} records dropped (log end offset was {log_end_offset})",
                registration.leader, registration.leader_epoch, t.records_removed
            ),
            Err(e) => warn!("{tp}: UNSAFE truncation to {high_watermark} failed: {e}"),
        }
    }

    /// Kafka `Partition.appendRecordsToLeader`: checks leadership, min.insync.replicas
    /// (NOT_ENOUGH_REPLICAS before writing anything) and the producer's sequence, then
    /// appends, stamping offsets and our leader epoch into `records` in place. A retry of a
    /// batch already in the log is answered with its original offsets. For acks=all,
    /// `waiter` is registered with the core in the same step, so no HW move can slip
    /// between the append and the wait.
    pub fn append_as_leader(
        &self,
        acks: Acks,
        header: &BatchHeader,
        records: &mut BytesMut,
        waiter: Option<WaiterId>,
        now_ms: u64,
    ) -> Result<LeaderAppend, ProduceOutcome> {
        let tp = &self.topic_partition;
        let mut state = self.lock();
        if state.offline {
            let (code, message) = self.stopped_answer(&state);
            return Err(ProduceOutcome::rejected(code, message));
        }
        let leader_epoch = state.leader_epoch;
        let Some(leader) = state.leader() else {
            return Err(ProduceOutcome::rejected(
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                format!(
                    "broker {} is not the leader of {tp} (leader: {})",
                    self.local_broker,
                    state.leader_id(self.local_broker)
                ),
            ));
        };
        if let Err(code) = leader.check_produce(acks) {
            let isr: Vec<_> = leader.isr_state().committed().iter().copied().collect();
            return Err(ProduceOutcome::rejected(
                code,
                format!(
                    "ISR {isr:?} has {} member(s), below min.insync.replicas {}; nothing was written",
                    isr.len(),
                    leader.effective_min_isr()
                ),
            ));
        }
        let (base_offset, last_offset) = self.append_deduplicated(&mut state, header, records, leader_epoch)?;
        let log_end_offset = state.log.log_end_offset();
        let Some(leader) = state.leader_mut() else {
            // Unreachable (the lock is held since the check above), but never claim a batch
            // that is in the log was not written.
            let outcome =
                ProduceOutcome::rejected(ErrorCode::NOT_LEADER_OR_FOLLOWER, "leadership moved after the append");
            return Err(ProduceOutcome { appended: true, ..outcome });
        };
        let mut actions = leader.on_local_append(log_end_offset, now_ms);
        if let Some(id) = waiter {
            actions.extend(leader.add_waiter(id, last_offset + 1));
        }
        Ok(LeaderAppend { base_offset, last_offset, leader_epoch, actions })
    }

    /// The idempotence check and the append itself (Kafka `ProducerStateManager` +
    /// `UnifiedLog.appendAsLeader`): returns the batch's first and last offsets.
    fn append_deduplicated(
        &self,
        state: &mut ReplicaState,
        header: &BatchHeader,
        records: &mut BytesMut,
        leader_epoch: LeaderEpoch,
    ) -> Result<(Offset, Offset), ProduceOutcome> {
        let first_sequence = header.base_sequence;
        let last_sequence = header.base_sequence.wrapping_add(header.last_offset_delta);
        match state.producers.check(header.producer_id, header.producer_epoch, first_sequence, last_sequence) {
            Err(code) => Err(ProduceOutcome::rejected(
                code,
                format!(
                    "producer {} epoch {} sent sequences {first_sequence}..={last_sequence}, which do not follow its last batch; nothing was written",
                    header.producer_id, header.producer_epoch
                ),
            )),
            Ok(SequenceCheck::Duplicate(original)) => {
                // A retry of a batch already in the log (Kafka answers with the original
                // offsets; acks=all still waits for the HW to pass them).
                debug!(
                    "{}: duplicate batch of producer {} (sequences {first_sequence}..={last_sequence}) at offset {}",
                    self.topic_partition, header.producer_id, original.first_offset
                );
                Ok((original.first_offset, original.last_offset))
            }
            Ok(SequenceCheck::Append) => {
                let segment_before = state.log.active_segment_base_offset();
                let log_end_before = state.log.log_end_offset();
                let append = state.log.append_as_leader(records, leader_epoch).map_err(|e| {
                    state.reload_producers_if_grown(log_end_before);
                    // A failure after the write (the flush) leaves the batch in the log: say
                    // so, or a client would retry it as never written.
                    let grown = state.log.log_end_offset() != log_end_before;
                    let outcome = ProduceOutcome::rejected(e.error_code(), format!("append failed: {e}"));
                    ProduceOutcome { appended: grown, ..outcome }
                })?;
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
                state.snapshot_on_roll(segment_before);
                Ok((append.base_offset, append.last_offset))
            }
        }
    }

    /// Forgets an acks=all waiter that timed out.
    pub fn remove_waiter(&self, waiter: WaiterId) {
        if let Some(leader) = self.lock().leader_mut() {
            leader.remove_waiter(waiter);
        }
    }

    /// Reads for a fetch (Kafka `Partition.fetchRecords`). `replica_id` is a follower's only
    /// if the request passed the KIP-903 identity check, and `broker_epoch` is then the
    /// epoch it checked, which the leader records with the follower's progress;
    /// `update_follower` is true only on a request's first pass, so a long-polled fetch moves
    /// the follower's state once. Consumers read below the HW, followers up to the LEO.
    pub fn read(
        &self,
        replica_id: BrokerId,
        broker_epoch: i64,
        wanted: &FetchPartition,
        budget: &FetchBudget,
        update_follower: bool,
        now_ms: u64,
    ) -> (FetchPartitionResponse, Vec<Action>) {
        let tp = &self.topic_partition;
        let mut response = FetchPartitionResponse::empty(tp.clone());
        let mut state = self.lock();
        if state.offline {
            let (code, message) = self.stopped_answer(&state);
            return (FetchPartitionResponse::refused(tp.clone(), code, message), Vec::new());
        }
        response.leader_epoch = state.leader_epoch;
        if state.leader().is_none() {
            response.error = ErrorCode::NOT_LEADER_OR_FOLLOWER;
            return (response, Vec::new());
        }
        if let Err(code) = check_current_leader_epoch(wanted.current_leader_epoch, state.leader_epoch) {
            response.error = code;
            return (response, Vec::new());
        }
        response.log_start_offset = state.log.log_start_offset();
        response.log_end_offset = state.log.log_end_offset();
        response.high_watermark = state.high_watermark();
        let is_follower = is_follower_fetch(replica_id);
        if is_follower {
            if let Err(refusal) =
                check_partition_replica(self.local_broker, &state.replicas, replica_id, wanted.current_leader_epoch)
            {
                debug!(%tp, replica_id, error = %refusal.error, "refused replica fetch: {}", refusal.message);
                return (FetchPartitionResponse::refused(tp.clone(), refusal.error, refusal.message), Vec::new());
            }
            if let Some(d) = fetch_divergence(&state, wanted) {
                response.diverging_epoch = Some(d);
                return (response, Vec::new());
            }
        }
        if wanted.fetch_offset < response.log_start_offset || wanted.fetch_offset > response.log_end_offset {
            response.error = ErrorCode::OFFSET_OUT_OF_RANGE;
            return (response, Vec::new());
        }
        let mut actions = Vec::new();
        if is_follower && update_follower {
            if let Some(leader) = state.leader_mut() {
                actions = leader.on_follower_fetch(replica_id, broker_epoch, wanted.fetch_offset, now_ms);
            }
            response.high_watermark = state.high_watermark();
        }
        let upper = if is_follower { response.log_end_offset } else { state.high_watermark() };
        if wanted.fetch_offset < upper {
            let (max_bytes, first_batch_max_bytes) = budget.partition_limits(wanted.partition_max_bytes);
            match state.log.read_bounded(wanted.fetch_offset, upper, max_bytes, first_batch_max_bytes) {
                Ok(bytes) => response.records = bytes,
                Err(e) => {
                    // A storage error here takes the replica offline (`ReplicaManager::read_partitions`).
                    response.error = e.error_code();
                    response.error_message = format!("cannot read {tp} from offset {}: {e}", wanted.fetch_offset);
                }
            }
        }
        (response, actions)
    }

    /// Where a follower of `leader` at `leader_epoch` fetches from: its LEO and the epoch of
    /// its last batch (KIP-320). None when this replica does not follow that leader at that
    /// epoch (the role changed since the fetcher's assignment was computed).
    pub fn fetch_position(&self, leader: BrokerId, leader_epoch: LeaderEpoch) -> Option<(Offset, LeaderEpoch)> {
        let state = self.lock();
        if !state.is_follower_of(leader, leader_epoch) {
            return None;
        }
        // The unsafe negative-control mode fetches by offset alone, as before KIP-101, so
        // the leader never reports a diverging epoch.
        let last_fetched_epoch =
            if self.unsafe_truncation() { NO_EPOCH } else { state.log.last_batch_epoch().unwrap_or(NO_EPOCH) };
        Some((state.log.log_end_offset(), last_fetched_epoch))
    }

    /// Applies one partition of a leader's fetch answer (Kafka
    /// `AbstractFetcherThread.processFetchRequest`): truncates on a diverging epoch
    /// (KIP-279) or on an offset past the leader's end, else appends the batches and adopts
    /// the leader's HW, never above our LEO.
    pub fn apply_fetch_response(
        &self,
        leader: BrokerId,
        leader_epoch: LeaderEpoch,
        response: FetchPartitionResponse,
    ) -> FetchApplied {
        let tp = &self.topic_partition;
        let mut state = self.lock();
        if !state.is_follower_of(leader, leader_epoch) {
            return FetchApplied::default(); // the role changed while the fetch was in flight
        }
        match response.error {
            ErrorCode::NONE => {}
            ErrorCode::OFFSET_OUT_OF_RANGE
                if response.log_end_offset >= 0 && state.log.log_end_offset() > response.log_end_offset =>
            {
                return self.truncate_to_leader_end(&mut state, leader, response.log_end_offset);
            }
            ErrorCode::OFFSET_OUT_OF_RANGE if response.log_start_offset > state.log.log_end_offset() => {
                return self.restart_at_leader_start(&mut state, leader, response.log_start_offset);
            }
            other => {
                // Retriable while metadata catches up (a leader change, or the leader not yet
                // knowing our registration or unfencing); debug only, as it repeats per fetch.
                debug!(%tp, leader, error = %other, "fetch answered an error: {}", response.error_message);
                return FetchApplied::back_off();
            }
        }
        if let Some(diverging) = response.diverging_epoch.filter(|_| !self.unsafe_truncation()) {
            // (The unsafe negative-control mode ignores diverging epochs: pre-KIP-101.)
            return self.truncate_to_divergence(&mut state, leader, leader_epoch, diverging);
        }
        if !response.records.is_empty() {
            if let Err(e) = append_as_follower(&mut state, &response.records) {
                let what = format!("cannot append {} bytes fetched from leader {leader}", response.records.len());
                warn!("{tp}: {what}: {e}");
                return FetchApplied::failed_write(what, &e);
            }
        }
        let new_hw = follower_high_watermark(response.high_watermark, state.log.log_end_offset());
        let changed = new_hw != state.follower_high_watermark;
        state.follower_high_watermark = new_hw;
        // Follow the leader's log start offset (Kafka `processPartitionData` →
        // `maybeIncrementLogStartOffset(leaderLogStartOffset)`), never past our own HW.
        if response.log_start_offset > state.log.log_start_offset() {
            if let Err(e) = state.log.increment_log_start_offset(response.log_start_offset.min(new_hw)) {
                warn!("{tp}: cannot follow leader {leader}'s log start offset: {e}");
                return FetchApplied::failed_write(format!("cannot move the log start offset of {tp}"), &e);
            }
        }
        FetchApplied { back_off: false, high_watermark_changed: changed, storage_error: None }
    }

    /// Our log ends below the leader's log start offset (retention or DeleteRecords removed
    /// what we would fetch next, Kafka `AbstractFetcherThread.handleOutOfRangeError` →
    /// `truncateFullyAndStartAt(leaderLogStartOffset)`): start over, empty, at the leader's
    /// start. Safe: an ISR member is never this far behind (the leader's start ≤ its HW ≤
    /// every ISR member's log end).
    fn restart_at_leader_start(
        &self,
        state: &mut ReplicaState,
        leader: BrokerId,
        leader_log_start: Offset,
    ) -> FetchApplied {
        let tp = &self.topic_partition;
        let leo = state.log.log_end_offset();
        match state.log.truncate_fully_and_start_at(leader_log_start) {
            Ok(t) => info!(
                "{tp}: log end offset {leo} is below leader {leader}'s log start offset {leader_log_start}: \
                 dropped our whole log ({} records, {} bytes) and restarted it at {leader_log_start}",
                t.records_removed, t.bytes_removed
            ),
            Err(e) => {
                warn!("{tp}: restarting the log at {leader_log_start} failed: {e}");
                return FetchApplied::failed_write(format!("cannot restart the log at {leader_log_start}"), &e);
            }
        }
        state.follower_high_watermark = leader_log_start;
        // Every snapshot describes the old log (one at the new start too): drop them all.
        producer_snapshots::truncate(state.log.dir(), leader_log_start - 1);
        state.producers = producer_snapshots::restore(&state.log, state.log.dir());
        FetchApplied::default()
    }

    /// We are ahead of the leader with no epoch to locate the divergence (Kafka
    /// `AbstractFetcherThread.handleOutOfRangeError`): the leader's log is the truth.
    fn truncate_to_leader_end(
        &self,
        state: &mut ReplicaState,
        leader: BrokerId,
        leader_log_end_offset: Offset,
    ) -> FetchApplied {
        let tp = &self.topic_partition;
        let leo = state.log.log_end_offset();
        match state.truncate_to(leader_log_end_offset) {
            Ok(t) => info!(
                "{tp}: truncated log from {leo} to leader {leader}'s log end offset {leader_log_end_offset}: {} records ({} bytes) dropped (fetch offset out of range)",
                t.records_removed, t.bytes_removed
            ),
            Err(e) => {
                warn!("{tp}: truncation failed: {e}");
                return FetchApplied::failed_write(format!("cannot truncate to {leader_log_end_offset}"), &e);
            }
        }
        FetchApplied::default()
    }

    /// KIP-279: truncate to where our log and the leader's agree, as far as the leader's
    /// answer tells; an incomplete answer is refined by the next fetch. An undefined answer
    /// (the leader knows none of our epochs) cuts only what is above our HW.
    fn truncate_to_divergence(
        &self,
        state: &mut ReplicaState,
        leader: BrokerId,
        leader_epoch: LeaderEpoch,
        diverging: EpochEndOffset,
    ) -> FetchApplied {
        let tp = &self.topic_partition;
        let leo = state.log.log_end_offset();
        let high_watermark = state.follower_high_watermark;
        let our_last_epoch = state.log.last_batch_epoch().unwrap_or(NO_EPOCH);
        let (epoch, end_offset) = state.log.end_offset_for_epoch(diverging.epoch);
        let (offset, complete) =
            truncation_offset(diverging, EpochEndOffset { epoch, end_offset }, leo, high_watermark);
        let why = if diverging.is_undefined() {
            format!("leader {leader} (epoch {leader_epoch}) knows none of our epochs up to {our_last_epoch}; what is below our high watermark {high_watermark} stays")
        } else {
            format!(
                "leader {leader} (epoch {leader_epoch}) says our epoch {our_last_epoch} diverged, its epoch {} ends at {}{}",
                diverging.epoch,
                diverging.end_offset,
                if complete { "" } else { " (will look further back on the next fetch)" }
            )
        };
        if offset >= leo {
            if diverging.is_undefined() {
                // Nothing above the HW is left to cut and the leader will answer the same
                // again: wait rather than spin (Kafka would fetch on by offset; we keep
                // sending our last epoch, so only a leader or metadata change ends this).
                warn!("{tp}: not truncating below the high watermark {high_watermark}: {why}");
                return FetchApplied::back_off();
            }
            return FetchApplied::default();
        }
        match state.truncate_to(offset) {
            Ok(t) => info!(
                "{tp}: truncated log from {leo} to {offset}: {} records ({} bytes) dropped; {why}",
                t.records_removed, t.bytes_removed
            ),
            Err(e) => {
                warn!("{tp}: truncation to {offset} failed: {e}");
                return FetchApplied::failed_write(format!("cannot truncate to {offset}"), &e);
            }
        }
        FetchApplied::default()
    }

    /// The controller answered an AlterPartition proposed at these epochs (Kafka
    /// `Partition.handleAlterPartitionError` / `sendAlterPartitionRequest`'s callback).
    pub fn on_alter_partition_result(
        &self,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
        result: Result<PartitionRegistration, (ErrorCode, String)>,
        now_ms: u64,
    ) -> Vec<Action> {
        let tp = &self.topic_partition;
        let mut state = self.lock();
        if state.leader_epoch != leader_epoch {
            return Vec::new(); // leadership moved on while the request was in flight
        }
        match result {
            Ok(registration) => {
                let Some(leader) = state.leader_mut() else { return Vec::new() };
                let actions =
                    commit_isr(tp, leader, &registration.isr, registration.partition_epoch, "AlterPartition", now_ms);
                if registration.partition_epoch > state.partition_epoch {
                    state.partition_epoch = registration.partition_epoch;
                    state.isr = registration.isr;
                }
                actions
            }
            Err((code, message)) => {
                // Only the proposal this answer is about may be dropped, and only when the
                // controller says it was not applied: any other error may hide a commit (a
                // resend of an applied change gets INVALID_UPDATE_VERSION), and dropping it
                // would let the HW pass a member the controller has in the ISR (KIP-497).
                let action = alter_partition_error_action(code);
                let Some(leader) = state.leader_mut() else { return Vec::new() };
                let about_this = leader.partition_epoch() == partition_epoch;
                if action == AlterPartitionErrorAction::ResetToCommitted && about_this {
                    leader.on_isr_change_rejected();
                    info!("{tp}: AlterPartition not applied by the controller: {code}: {message}; back to the committed ISR {:?}", state.isr);
                } else {
                    warn!("{tp}: AlterPartition answered {code}: {message}; keeping the proposed ISR until the metadata shows the outcome");
                }
                Vec::new()
            }
        }
    }

    /// Whether the leader still waits on the ISR change proposed at these epochs.
    pub fn isr_change_pending(&self, leader_epoch: LeaderEpoch, partition_epoch: PartitionEpoch) -> bool {
        let state = self.lock();
        state.leader_epoch == leader_epoch
            && state.leader().is_some_and(|l| l.partition_epoch() == partition_epoch && l.isr_state().is_in_flight())
    }

    /// A proposal that never left this broker (its queue was full): forget it so the next
    /// check proposes again.
    pub fn on_isr_change_not_sent(&self) {
        if let Some(leader) = self.lock().leader_mut() {
            leader.on_isr_change_rejected();
        }
    }

    /// The periodic ISR shrink check (Kafka `Partition.maybeShrinkIsr`).
    pub fn tick(&self, now_ms: u64) -> Vec<Action> {
        self.lock().leader_mut().map(|leader| leader.on_tick(now_ms)).unwrap_or_default()
    }

    /// Stops leading (broker shutdown): waiting acks=all requests are answered.
    pub fn resign(&self) -> Vec<Action> {
        self.lock().leader_mut().map(|leader| leader.resign()).unwrap_or_default()
    }

    /// Takes the replica offline after a storage error, for good (Kafka
    /// `ReplicaManager.handleLogDirFailure` → `markPartitionOffline`): a leader resigns,
    /// answering its waiting acks=all requests, and from then on the replica follows nobody
    /// and answers every append, read and offsets lookup KAFKA_STORAGE_ERROR. Whoever still
    /// holds it (a parked produce, a fetch in flight) sees that; the replica manager then
    /// marks it offline in its map. Its log stays on disk untouched for the operator.
    ///
    /// Returns the resignation's actions and the HW it had, or None when another caller
    /// already took it offline: the partition's lock picks the one caller that reports it.
    pub fn mark_offline(&self) -> Option<(Vec<Action>, Offset)> {
        let mut state = self.lock();
        if state.offline {
            return None;
        }
        state.offline = true;
        // Keep the HW a leader had, as `make_follower` does, so checkpoints stay current.
        let high_watermark = state.high_watermark().min(state.log.log_end_offset());
        let actions = state.leader_mut().map(|leader| leader.resign()).unwrap_or_default();
        state.follower_high_watermark = high_watermark;
        state.role = ReplicaRole::Follower { leader: NO_BROKER };
        Some((actions, high_watermark))
    }

    /// Stops the replica for good because its topic was deleted (Kafka
    /// `ReplicaManager.stopPartitions` with deletion): a leader resigns, answering its waiting
    /// acks=all requests, and whoever still holds the replica is answered
    /// UNKNOWN_TOPIC_OR_PARTITION from then on. The caller removes its directory.
    pub fn stop_for_deletion(&self) -> Vec<Action> {
        let mut state = self.lock();
        state.offline = true;
        state.deleted = true;
        let actions = state.leader_mut().map(|leader| leader.resign()).unwrap_or_default();
        state.role = ReplicaRole::Follower { leader: NO_BROKER };
        actions
    }

    /// Restores the log start offset from the broker's checkpoint after `open` (Kafka loads
    /// `log-start-offset-checkpoint` with the logs): a start moved inside the first segment
    /// (DeleteRecords) is not lost with a restart. Clamped to the log end.
    pub fn restore_log_start_offset(&self, checkpointed: Offset) -> Result<(), LogError> {
        let mut state = self.lock();
        state.log.increment_log_start_offset(checkpointed)?;
        // The HW checkpoint may lag the start's (Kafka `updateHighWatermark` keeps the HW in
        // [log start, log end]): nothing below the start is readable, so it is committed.
        let start = state.log.log_start_offset();
        state.follower_high_watermark = state.follower_high_watermark.max(start);
        Ok(())
    }

    /// One retention pass (Kafka `UnifiedLog.deleteOldSegments`, with a segment.ms roll first):
    /// whole segments older than retention.ms or beyond retention.bytes go, only below the
    /// HW. Returns what was deleted; an I/O error is the caller's storage error.
    pub fn enforce_retention(&self, now_wall_ms: i64) -> Result<Option<RetentionInfo>, LogError> {
        let mut state = self.lock();
        if state.offline {
            return Ok(None);
        }
        let segment_before = state.log.active_segment_base_offset();
        state.log.roll_if_older_than_segment_ms(now_wall_ms)?;
        let high_watermark = state.high_watermark();
        let deleted = state.log.delete_old_segments(high_watermark, now_wall_ms)?;
        // A roll here snapshots the producer table as an append's roll does, so a restart
        // after everything older was deleted still knows the producers' last batches.
        state.snapshot_on_roll(segment_before);
        Ok(deleted)
    }

    /// DeleteRecords on the leader (Kafka `Partition.deleteRecordsOnLeader`): moves the log
    /// start offset to `offset` (-1: the HW), which must not pass the HW; returns the new log
    /// start offset. Followers follow it through their fetches.
    pub fn delete_records(&self, offset: Offset) -> Result<Offset, (ErrorCode, String)> {
        let tp = &self.topic_partition;
        let mut state = self.lock();
        if state.offline {
            return Err(self.stopped_answer(&state));
        }
        if state.leader().is_none() {
            return Err((
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                format!("broker {} does not lead {tp}", self.local_broker),
            ));
        }
        let high_watermark = state.high_watermark();
        let target = if offset == -1 { high_watermark } else { offset };
        if target < 0 || target > high_watermark {
            let message =
                format!("cannot delete records of {tp} before {offset}: the high watermark is {high_watermark}");
            return Err((ErrorCode::OFFSET_OUT_OF_RANGE, message));
        }
        let before = state.log.log_start_offset();
        match state.log.increment_log_start_offset(target) {
            Ok(true) => info!(
                "{tp}: records before offset {target} deleted (DeleteRecords); log start offset {before} -> {target}"
            ),
            Ok(false) => {}
            Err(e) => return Err((e.error_code(), format!("cannot move the log start offset of {tp}: {e}"))),
        }
        Ok(state.log.log_start_offset())
    }

    /// Applies a changed topic config to the log if it differs (segment size, batch limit).
    pub fn update_log_config(&self, config: &LogConfig) {
        let mut state = self.lock();
        if state.log.config() != config {
            state.log.set_config(config.clone());
        }
    }

    /// The directory of the replica's log.
    pub fn dir(&self) -> std::path::PathBuf {
        self.lock().log.dir().to_path_buf()
    }

    /// What a stopped replica answers: deleted, or offline after a storage error.
    fn stopped_answer(&self, state: &ReplicaState) -> (ErrorCode, String) {
        if state.deleted {
            let message = format!("{} was deleted", self.topic_partition);
            return (ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, message);
        }
        (ErrorCode::KAFKA_STORAGE_ERROR, self.offline_message())
    }

    /// What an offline replica answers.
    fn offline_message(&self) -> String {
        format!(
            "broker {} took its replica of {} offline after a storage error; it serves it again only after a \
             restart (the controller elects another leader)",
            self.local_broker, self.topic_partition
        )
    }

    /// Clean shutdown: fsyncs the log and writes a durable producer-state snapshot at its
    /// end, so the next open replays nothing (Kafka takes one on close).
    pub fn close(&self) -> Result<(), LogError> {
        let mut state = self.lock();
        state.log.flush()?;
        state.write_producer_snapshot(true);
        Ok(())
    }

    /// The log start offset and HW a consumer may list, if this replica leads at
    /// `current_leader_epoch` (-1: unchecked) (Kafka `Partition.fetchOffsetForTimestamp`).
    pub fn leader_offsets(&self, current_leader_epoch: LeaderEpoch) -> Result<(Offset, Offset), ErrorCode> {
        let state = self.lock();
        if state.offline {
            return Err(self.stopped_answer(&state).0);
        }
        if state.leader().is_none() {
            return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        }
        check_current_leader_epoch(current_leader_epoch, state.leader_epoch)?;
        Ok((state.log.log_start_offset(), state.high_watermark()))
    }

    /// The leader epoch of the batch holding `offset` (or of the next one written there).
    pub fn epoch_at(&self, offset: Offset) -> LeaderEpoch {
        let state = self.lock();
        let entries = state.log.epoch_entries();
        entries.iter().rev().find(|(_, start)| *start <= offset).map(|(epoch, _)| *epoch).unwrap_or(NO_EPOCH)
    }

    /// Whole batches from `offset` below `end`, at most `max_bytes` (the lock is held for
    /// this one read only, so a long scan lets produces in between).
    pub fn read_range(&self, offset: Offset, end: Offset, max_bytes: usize) -> Result<Bytes, LogError> {
        self.lock().log.read(offset, end, max_bytes)
    }
}

/// A follower's append of fetched batches, with their producer metadata.
fn append_as_follower(state: &mut ReplicaState, records: &Bytes) -> Result<(), LogError> {
    realign_empty_log(state, records)?;
    let segment_before = state.log.active_segment_base_offset();
    let log_end_before = state.log.log_end_offset();
    let info =
        state.log.append_as_follower(records).inspect_err(|_| state.reload_producers_if_grown(log_end_before))?;
    record_batches(&mut state.producers, &records[..info.bytes.min(records.len())]);
    state.snapshot_on_roll(segment_before);
    Ok(())
}

/// An empty log restarted at a leader's log start that falls inside a batch (DeleteRecords
/// to a mid-batch offset): the leader sends the whole batch, which starts below our end.
/// As Kafka's `Partition.appendRecordsToFollowerOrFutureReplica` does on an
/// UnexpectedAppendOffsetException for an empty log, restart the log at the batch's base so
/// it can be appended; the next fetch moves the log start back up to the leader's.
fn realign_empty_log(state: &mut ReplicaState, records: &Bytes) -> Result<(), LogError> {
    let end = state.log.log_end_offset();
    if end != state.log.log_start_offset() {
        return Ok(());
    }
    let Some(Ok((first, _))) = iter_batches(records).next() else { return Ok(()) };
    if first.base_offset < end && first.last_offset() >= end && first.base_offset >= 0 {
        state.log.truncate_fully_and_start_at(first.base_offset)?;
        state.follower_high_watermark = state.follower_high_watermark.min(first.base_offset);
        state.producers = producer_snapshots::restore(&state.log, state.log.dir());
    }
    Ok(())
}

/// Where a follower's log diverged from ours, if it did (KIP-320: the follower's last
/// fetched epoch ends before its fetch offset here).
fn fetch_divergence(state: &ReplicaState, wanted: &FetchPartition) -> Option<EpochEndOffset> {
    if wanted.last_fetched_epoch == NO_EPOCH {
        return None;
    }
    let (epoch, end_offset) = state.log.end_offset_for_epoch(wanted.last_fetched_epoch);
    diverging_epoch(wanted.last_fetched_epoch, wanted.fetch_offset, EpochEndOffset { epoch, end_offset })
}

/// Applies an ISR committed by the controller to the leader core, logging the change once
/// (the AlterPartition answer and the metadata feed both carry it; whichever arrives first
/// applies it, the other finds the partition epoch already seen).
fn commit_isr(
    tp: &TopicPartition,
    leader: &mut LeaderPartition,
    isr: &[BrokerId],
    partition_epoch: PartitionEpoch,
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

fn record_batches(table: &mut ProducerStateTable, batches: &[u8]) {
    for (header, _) in iter_batches(batches).map_while(Result::ok) {
        if header.producer_id >= 0 {
            table.record(
                header.producer_id,
                header.producer_epoch,
                BatchMetadata {
                    first_sequence: header.base_sequence,
                    last_sequence: header.base_sequence.wrapping_add(header.last_offset_delta),
                    first_offset: header.base_offset,
                    last_offset: header.last_offset(),
                },
            );
        }
    }
}
