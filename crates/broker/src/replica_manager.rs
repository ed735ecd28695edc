//! The broker's replica manager (Kafka `server/ReplicaManager.scala`): the map of hosted
//! partitions, the metadata fan-out (each partition gets its registration and becomes leader
//! or follower itself, `partition.rs`), produce and fetch across partitions (byte budgets,
//! the KIP-903 identity check, the long poll), and the waiters: it turns the replication
//! core's actions into I/O (answer acks=all waiters, queue AlterPartition proposals, wake
//! parked fetches). Requests and answers are the core's own types (`messages.rs`).
//!
//! A replica whose storage fails (its log cannot be opened, or an append or read fails with
//! an I/O error) is taken offline alone (`mark_offline`, Kafka `handleLogDirFailure` with one
//! directory per replica): every other partition carries on, and the controller hears of it
//! with the next heartbeat (`controller_link.rs`).
mod deletion;
mod retention;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use insync_log::batch::parse_header;
use insync_log::{LogConfig, OffsetCheckpointFile};
use insync_proto as pb;
use insync_replication::{Action, IsrChange, WaiterId};
use insync_types::{topic_config, Acks, BrokerId, ErrorCode, Offset, TopicPartition, NO_BROKER, NO_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::config::BrokerArgs;
use crate::fetch_limits::{duplicate_entries, effective_max_bytes, FetchBudget};
use crate::log_dirs;
pub use crate::messages::ProduceOutcome;
use crate::messages::{FetchPartitionResponse, FetchRequest, FetchResponse, ProduceRequest};
use crate::partition::{LeadershipContext, Partition, PartitionRegistration};
use crate::replica_identity::{check_follower_identity, is_follower_fetch, ReplicaRefusal};

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

/// A partition replica in this broker's map (Kafka `HostedPartition`): served, or offline
/// after a storage error until the broker restarts.
#[derive(Debug, Clone)]
enum HostedPartition {
    Online(Arc<Partition>),
    Offline(OfflineReplica),
}

/// A replica taken offline (`ReplicaManager::mark_offline`).
#[derive(Debug, Clone)]
struct OfflineReplica {
    /// What failed, for the answers of every later request for it.
    error: String,
    /// Its HW when it went offline, kept in the checkpoint file so that the replica reopens
    /// after a restart with the HW it had.
    high_watermark: Option<Offset>,
}

pub struct ReplicaManager {
    pub config: Arc<BrokerArgs>,
    pub broker_id: BrokerId,
    partitions: RwLock<HashMap<TopicPartition, HostedPartition>>,
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
    /// HWs read from the checkpoint file at start-up, for replicas not opened yet; an entry
    /// goes when its replica is deleted, so a re-created topic never starts from it.
    checkpointed_high_watermarks: Mutex<BTreeMap<TopicPartition, Offset>>,
    /// Log start offsets moved past a replica's first segment (DeleteRecords, a leader's
    /// start offset), in `log-start-offset-checkpoint` (Kafka's file of that name).
    lso_checkpoint: Mutex<OffsetCheckpointFile>,
    /// Start offsets read from that file at start-up, restored when each replica opens.
    checkpointed_log_start_offsets: Mutex<BTreeMap<TopicPartition, Offset>>,
    /// The topic id each hosted replica was opened for (empty: a topic without an id).
    topic_ids: Mutex<HashMap<TopicPartition, String>>,
    /// Whether the data directory was searched for replicas of deleted topics (once, at the
    /// first metadata that shows this broker's registration).
    strays_removed: AtomicBool,
    started: Instant,
    /// This broker's epoch from its current registration (0: not registered): what its
    /// fetchers send so leaders serve them as followers (KIP-903).
    broker_epoch: AtomicI64,
    /// Serializes `apply_metadata`.
    apply_lock: Mutex<()>,
}

impl ReplicaManager {
    pub fn new(
        config: Arc<BrokerArgs>,
        alter_partition_tx: mpsc::Sender<AlterPartitionJob>,
    ) -> anyhow::Result<Arc<ReplicaManager>> {
        std::fs::create_dir_all(&config.data_dir)?;
        let hw_checkpoint = OffsetCheckpointFile::new(config.data_dir.join("replication-offset-checkpoint"));
        let checkpointed_high_watermarks = hw_checkpoint.read()?;
        let lso_checkpoint = OffsetCheckpointFile::new(config.data_dir.join("log-start-offset-checkpoint"));
        let checkpointed_log_start_offsets = lso_checkpoint.read()?;
        // A crash between a deletion's rename and its removal left these (log_dirs.rs).
        log_dirs::remove_leftover_deletions(&config.data_dir);
        if config.unsafe_truncation() {
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
            checkpointed_high_watermarks: Mutex::new(checkpointed_high_watermarks),
            lso_checkpoint: Mutex::new(lso_checkpoint),
            checkpointed_log_start_offsets: Mutex::new(checkpointed_log_start_offsets),
            topic_ids: Mutex::new(HashMap::new()),
            strays_removed: AtomicBool::new(false),
            started: Instant::now(),
            broker_epoch: AtomicI64::new(0),
            apply_lock: Mutex::new(()),
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

    /// The replica of `tp` this broker serves (None when it hosts none, or has it offline).
    pub fn partition(&self, tp: &TopicPartition) -> Option<Arc<Partition>> {
        match self.hosted(tp)? {
            HostedPartition::Online(partition) => Some(partition),
            HostedPartition::Offline(_) => None,
        }
    }

    fn hosted(&self, tp: &TopicPartition) -> Option<HostedPartition> {
        self.partitions.read().unwrap_or_else(|p| p.into_inner()).get(tp).cloned()
    }

    /// Every replica served here (offline ones left out), by topic and partition.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = partitions
            .values()
            .filter_map(|hosted| match hosted {
                HostedPartition::Online(partition) => Some(partition.clone()),
                HostedPartition::Offline(_) => None,
            })
            .collect();
        drop(partitions);
        all.sort_by(|a, b| a.topic_partition().cmp(b.topic_partition()));
        all
    }

    /// The replicas taken offline since start (`mark_offline`), sorted: what the heartbeat
    /// reports to the controller.
    pub fn offline_partitions(&self) -> Vec<TopicPartition> {
        let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        let mut offline: Vec<TopicPartition> = partitions
            .iter()
            .filter(|(_, hosted)| matches!(hosted, HostedPartition::Offline(_)))
            .map(|(tp, _)| tp.clone())
            .collect();
        drop(partitions);
        offline.sort();
        offline
    }

    /// Why the replica of `tp` is offline, if it is.
    fn offline_error(&self, tp: &TopicPartition) -> Option<String> {
        match self.hosted(tp)? {
            HostedPartition::Offline(offline) => Some(offline.error),
            HostedPartition::Online(_) => None,
        }
    }

    /// Takes the replica of `tp` offline after a storage error (Kafka
    /// `ReplicaManager.handleLogDirFailure` / `markPartitionOffline`, per replica here): it
    /// leaves the map, and with it the fetchers' assignment; a leader resigns, its waiting
    /// acks=all requests answered KAFKA_STORAGE_ERROR as Kafka's `DelayedProduce` answers
    /// them once `getPartitionOrError` says so; every later produce, fetch and offsets lookup
    /// for it is answered KAFKA_STORAGE_ERROR; the next heartbeat tells the controller, which
    /// moves its leadership and ISR membership away. It is never reopened nor followed until
    /// the broker restarts; nothing else on this broker changes. A second call is a no-op.
    pub fn mark_offline(&self, tp: &TopicPartition, error: &str) {
        let online = match self.hosted(tp) {
            Some(HostedPartition::Offline(_)) => return,
            Some(HostedPartition::Online(partition)) => Some(partition),
            None => None,
        };
        // The partition first (its own lock only: the map's is never held while waiting for a
        // partition's), so that whoever still holds it is refused from now on. Its lock also
        // picks one caller of several: the others leave the report and the answers to it.
        let (actions, high_watermark) = match online.map(|partition| partition.mark_offline()) {
            Some(None) => return,
            Some(Some((actions, high_watermark))) => (actions, Some(high_watermark)),
            None => (Vec::new(), None),
        };
        let reported = {
            let mut partitions = self.partitions.write().unwrap_or_else(|p| p.into_inner());
            // A concurrent call for a replica that was never opened may have got here first.
            let first = !matches!(partitions.get(tp), Some(HostedPartition::Offline(_)));
            if first {
                let offline = OfflineReplica { error: error.to_string(), high_watermark };
                partitions.insert(tp.clone(), HostedPartition::Offline(offline));
                // Under the map's lock, as `apply_metadata` stores the assignment, so that
                // neither undoes the other.
                self.follower_assignment.send_if_modified(|assignment| unassign(assignment, tp));
            }
            !first
        };
        if !reported {
            self.log_offline(tp, error);
        }
        self.answer_offline_waiters(tp, actions);
    }

    /// The one ERROR line of a replica taken offline.
    fn log_offline(&self, tp: &TopicPartition, error: &str) {
        error!(
            topic = %tp.topic,
            partition = tp.partition,
            error = %error,
            dir = %self.log_dir(tp).display(),
            "replica of {tp} taken OFFLINE on broker {} after a storage error: it is no longer served or followed \
             here (requests for it are answered KAFKA_STORAGE_ERROR), the controller hears of it with the next \
             heartbeat and moves its leadership and ISR membership away, and it comes back only after a restart; \
             every other partition carries on, and the log directory is left as it is for inspection",
            self.broker_id
        );
    }

    /// Answers the resigned leader's waiting acks=all requests KAFKA_STORAGE_ERROR, as
    /// Kafka's `DelayedProduce` does once `getPartitionOrError` says the replica is offline.
    fn answer_offline_waiters(&self, tp: &TopicPartition, actions: Vec<Action>) {
        let actions = actions
            .into_iter()
            .map(|action| match action {
                Action::CompleteProduce { waiter, .. } => {
                    Action::CompleteProduce { waiter, error: ErrorCode::KAFKA_STORAGE_ERROR }
                }
                other => other,
            })
            .collect();
        self.run_actions(tp, actions);
        // Parked fetches of this replica look again and find it offline.
        self.wake_parked_fetches();
    }

    fn log_dir(&self, tp: &TopicPartition) -> PathBuf {
        self.config.data_dir.join(format!("{}-{}", tp.topic, tp.partition))
    }

    /// The log settings of a topic's replicas: its overrides (segment.bytes,
    /// max.message.bytes, compression.type), else this broker's defaults (Kafka `LogConfig`
    /// over the broker's `KafkaConfig` synonyms; compression.type has no flag: producer).
    fn log_config(&self, topic: &pb::TopicMetadata) -> LogConfig {
        let configs: BTreeMap<String, String> = topic.configs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let int = |key: &str| topic_config::int_value(&configs, key);
        LogConfig {
            segment_bytes: int(topic_config::SEGMENT_BYTES)
                .and_then(|b| u64::try_from(b).ok())
                .unwrap_or(self.config.log_segment_bytes),
            flush_every_messages: self.config.flush_every_messages,
            max_batch_bytes: int(topic_config::MAX_MESSAGE_BYTES)
                .and_then(|b| usize::try_from(b).ok())
                .unwrap_or(self.config.message_max_bytes),
            retention_ms: int(topic_config::RETENTION_MS).unwrap_or(self.config.log_retention_ms),
            retention_bytes: int(topic_config::RETENTION_BYTES).unwrap_or(self.config.log_retention_bytes),
            segment_ms: int(topic_config::SEGMENT_MS).unwrap_or(self.config.log_roll_ms),
            // The catalogue admits only codec names here; anything else reads as producer.
            compression: configs
                .get(topic_config::COMPRESSION_TYPE)
                .and_then(|value| insync_log::compression::topic_compression(value).ok())
                .flatten(),
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
    /// opens logs for new replicas, hands each hosted partition its registration (it
    /// becomes leader or follower), and updates the fetchers' assignment.
    ///
    /// Until the metadata shows this broker's current registration it never becomes leader
    /// (see `caught_up_with_registration`); `controller_link::register` applies the metadata again
    /// once registered.
    ///
    /// A replica whose log cannot be opened is taken offline alone (`mark_offline`) and the
    /// rest is applied all the same; an offline replica is skipped, as Kafka's `applyDelta`
    /// skips a `HostedPartition.Offline`.
    pub fn apply_metadata(&self, metadata: pb::ClusterMetadata) {
        // One at a time: the metadata watch and the re-apply after registering both call this,
        // and the version guard, the partitions' transitions and the store must not interleave
        // (an older snapshot stored over a newer one would move fetchers back).
        let _one_at_a_time = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        if metadata.version < self.metadata().version {
            return; // never go back
        }
        let caught_up = caught_up_with_registration(&metadata, self.broker_id, self.broker_epoch());
        let eligible: BTreeSet<BrokerId> =
            metadata.brokers.iter().filter(|b| !b.fenced && !b.in_controlled_shutdown).map(|b| b.id).collect();
        let mut assignment = FollowerAssignment::new();
        let mut held = 0;
        for topic in &metadata.topics {
            held += self.apply_topic(topic, &eligible, caught_up, &mut assignment);
        }
        self.delete_unassigned_replicas(&metadata);
        if caught_up && !self.strays_removed.swap(true, Ordering::SeqCst) {
            self.delete_stray_dirs();
        }
        if held > 0 {
            info!(
                broker_epoch = self.broker_epoch(),
                metadata_version = metadata.version,
                "not taking the leadership of {held} partition(s) until the metadata shows this broker's current registration"
            );
        }
        let version = metadata.version;
        *self.metadata.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(metadata);
        {
            // A replica taken offline while this ran is not followed (see `mark_offline`).
            let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
            for followed in assignment.values_mut() {
                followed.retain(|tp, _| !matches!(partitions.get(tp), Some(HostedPartition::Offline(_))));
            }
            assignment.retain(|_, followed| !followed.is_empty());
            self.follower_assignment.send_if_modified(|current| {
                let changed = *current != assignment;
                *current = assignment;
                changed
            });
        }
        self.metadata_version.send_replace(version);
    }

    /// Hands each hosted partition of `topic` its registration and notes the ones followed;
    /// returns how many leaderships were held back (`caught_up_with_registration`). A held
    /// partition is opened all the same, so its HW stays in the checkpoint file. Offline
    /// replicas are skipped, and one that cannot be opened goes offline.
    fn apply_topic(
        &self,
        topic: &pb::TopicMetadata,
        eligible: &BTreeSet<BrokerId>,
        caught_up: bool,
        assignment: &mut FollowerAssignment,
    ) -> usize {
        let context = LeadershipContext {
            min_insync_replicas: self.min_insync_replicas(topic),
            eligible,
            replica_lag_time_max_ms: self.config.replica_lag_time_max_ms,
        };
        let now_ms = self.now_ms();
        let log_config = self.log_config(topic);
        let mut held = 0;
        for partition_metadata in topic.partitions.iter().filter(|p| p.replicas.contains(&self.broker_id)) {
            let tp = TopicPartition::new(topic.name.clone(), partition_metadata.partition);
            if self.hosted_for_another_topic_id(&tp, &topic.topic_id) {
                self.delete_replica(&tp, "its topic was deleted and re-created under the same name");
            }
            let partition = match self.hosted(&tp) {
                Some(HostedPartition::Online(partition)) => {
                    // Config changes take effect without a restart (segment.bytes, max.message.bytes).
                    partition.update_log_config(&log_config);
                    partition
                }
                Some(HostedPartition::Offline(_)) => continue,
                None => match self.open_partition(&tp, &topic.topic_id, &log_config) {
                    Ok(partition) => partition,
                    Err(e) => {
                        self.mark_offline(&tp, &format!("cannot open its log: {e}"));
                        continue;
                    }
                },
            };
            let registration = registration(partition_metadata);
            // Only a leadership this broker does not hold already waits: a leader at that epoch
            // keeps taking ISR and eligibility updates.
            if registration.leader == self.broker_id && !caught_up && !partition.leads_at(registration.leader_epoch) {
                held += 1;
                continue;
            }
            let actions = partition.apply_registration(&registration, &context, now_ms);
            self.run_actions(&tp, actions);
            if registration.leader != self.broker_id && registration.leader != NO_BROKER {
                assignment.entry(registration.leader).or_default().insert(tp, registration.leader_epoch);
            }
        }
        held
    }

    /// Opens (creating if need be) the replica's log for topic id `topic_id`. A directory
    /// left by an earlier topic of the same name (another id in its `partition.metadata`) is
    /// deleted first, with its checkpointed HW: the new topic never sees its data.
    fn open_partition(
        &self,
        tp: &TopicPartition,
        topic_id: &str,
        log_config: &LogConfig,
    ) -> anyhow::Result<Arc<Partition>> {
        let dir = self.log_dir(tp);
        let on_disk = if dir.exists() { log_dirs::read_topic_id(&dir)? } else { None };
        if let Some(old) = on_disk.as_deref().filter(|old| !topic_id.is_empty() && *old != topic_id) {
            self.remove_checkpointed_high_watermark(tp);
            let renamed = log_dirs::rename_for_deletion(&dir, tp)?;
            info!(
                old_topic_id = old,
                topic_id,
                "{tp}: deleting the log of an earlier topic of this name (renamed to {}) before creating the new one",
                renamed.display()
            );
            log_dirs::remove_in_background(renamed);
        }
        let checkpointed = self.lock_checkpointed().get(tp).copied().unwrap_or(0);
        let partition = Arc::new(Partition::open(
            tp.clone(),
            &dir,
            log_config.clone(),
            checkpointed,
            self.broker_id,
            self.config.unsafe_truncation(),
        )?);
        if !topic_id.is_empty() && on_disk.as_deref() != Some(topic_id) {
            log_dirs::write_topic_id(&dir, topic_id)?;
        }
        let checkpointed_start =
            self.checkpointed_log_start_offsets.lock().unwrap_or_else(|p| p.into_inner()).get(tp).copied();
        if let Some(start) = checkpointed_start {
            partition.restore_log_start_offset(start)?;
        }
        self.topic_ids.lock().unwrap_or_else(|p| p.into_inner()).insert(tp.clone(), topic_id.to_string());
        let mut partitions = self.partitions.write().unwrap_or_else(|p| p.into_inner());
        match partitions.entry(tp.clone()) {
            // Never over an offline replica: it stays offline until a restart.
            Entry::Occupied(hosted) => match hosted.get() {
                HostedPartition::Online(opened) => Ok(opened.clone()),
                HostedPartition::Offline(offline) => anyhow::bail!("offline: {}", offline.error),
            },
            Entry::Vacant(slot) => {
                slot.insert(HostedPartition::Online(partition.clone()));
                Ok(partition)
            }
        }
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
                            p.on_isr_change_not_sent();
                        }
                    }
                }
            }
        }
    }

    /// The controller answered an AlterPartition proposed at these epochs.
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
        let result = result.map(|partition_metadata| registration(&partition_metadata));
        let actions = partition.on_alter_partition_result(leader_epoch, partition_epoch, result, self.now_ms());
        self.run_actions(tp, actions);
    }

    /// Whether the leader still waits on the ISR change proposed at these epochs.
    pub fn isr_change_pending(&self, tp: &TopicPartition, leader_epoch: i32, partition_epoch: i32) -> bool {
        self.partition(tp).is_some_and(|p| p.isr_change_pending(leader_epoch, partition_epoch))
    }

    /// Periodic ISR shrink check (Kafka runs it every replica.lag.time.max.ms / 2).
    pub fn shrink_isr_tick(&self) {
        let now_ms = self.now_ms();
        for partition in self.all_partitions() {
            let actions = partition.tick(now_ms);
            self.run_actions(partition.topic_partition(), actions);
        }
    }

    /// Produce on the leader (Kafka `ReplicaManager.appendRecords` + `DelayedProduce`).
    pub async fn produce(&self, request: ProduceRequest) -> ProduceOutcome {
        let timeout_ms = request.timeout_ms;
        let appended = self.produce_append(request);
        self.produce_wait(appended, timeout_ms).await
    }

    /// The synchronous half of a produce: validate, then the partition's leader append (which
    /// dedupes and parks an acks=all request). Requests of one stream call this in order, so
    /// their appends keep order while their acks=all waits overlap (Kafka pipelines up to
    /// max.in.flight so).
    pub fn produce_append(&self, request: ProduceRequest) -> ProduceAppended {
        let acks = match Acks::from_wire(request.acks) {
            Ok(acks) => acks,
            Err(code) => {
                let message = format!("acks must be -1 (all), 0 or 1, got {}", request.acks);
                return ProduceAppended::Done(ProduceOutcome::rejected(code, message));
            }
        };
        let tp = request.topic_partition;
        // The topic's max.message.bytes is checked by the log at the append; this bounds what
        // any topic may take before the batch is even parsed.
        if request.records.len() as i64 > topic_config::MAX_MESSAGE_BYTES_CEILING {
            let message = format!(
                "record batch of {} bytes exceeds the largest max.message.bytes {}",
                request.records.len(),
                topic_config::MAX_MESSAGE_BYTES_CEILING
            );
            return ProduceAppended::Done(ProduceOutcome::rejected(ErrorCode::MESSAGE_TOO_LARGE, message));
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
        // The request buffer is usually ours alone: stamp offsets in place, no copy.
        let mut records = request.records.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        let waiter = (acks == Acks::All).then(|| self.new_waiter());
        let appended =
            partition.append_as_leader(acks, &header, &mut records, waiter.as_ref().map(|w| w.0), self.now_ms());
        let append = match appended {
            Ok(append) => append,
            Err(outcome) => {
                if let Some((id, _)) = waiter {
                    self.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                }
                if outcome.error == ErrorCode::KAFKA_STORAGE_ERROR {
                    self.mark_offline(&tp, &outcome.message);
                }
                return ProduceAppended::Done(outcome);
            }
        };
        let outcome = ProduceOutcome {
            error: ErrorCode::NONE,
            message: String::new(),
            base_offset: append.base_offset,
            appended: true,
            leader_epoch: append.leader_epoch,
        };
        // Wake fetchers: new data for followers (and HW, if it moved, for consumers).
        self.wake_parked_fetches();
        self.run_actions(&tp, append.actions);
        match waiter {
            None => ProduceAppended::Done(outcome),
            Some((id, rx)) => ProduceAppended::Waiting { partition, outcome, waiter: id, rx },
        }
    }

    /// A registered acks=all waiter: the core completes it by id (`run_actions`).
    fn new_waiter(&self) -> (WaiterId, oneshot::Receiver<ErrorCode>) {
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        (id, rx)
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
                partition.remove_waiter(id);
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
            ErrorCode::KAFKA_STORAGE_ERROR => "written to the leader's log, but the leader took its replica offline \
                 after a storage error before the ISR had it; another replica will be elected"
                .into(),
            other => format!("{other}"),
        };
        ProduceOutcome { error, message, ..outcome }
    }

    /// Kafka `getPartitionOrError`: an offline replica → KAFKA_STORAGE_ERROR; else see
    /// `missing_partition_code`.
    fn missing_partition_outcome(&self, tp: &TopicPartition) -> ProduceOutcome {
        if let Some(error) = self.offline_error(tp) {
            return ProduceOutcome::rejected(
                ErrorCode::KAFKA_STORAGE_ERROR,
                offline_message(self.broker_id, tp, &error),
            );
        }
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

    /// A partition we do not serve: KAFKA_STORAGE_ERROR when our replica is offline (Kafka
    /// `HostedPartition.Offline`), NOT_LEADER_OR_FOLLOWER when the metadata knows it (another
    /// broker hosts it), else UNKNOWN_TOPIC_OR_PARTITION.
    pub fn missing_partition_code(&self, tp: &TopicPartition) -> ErrorCode {
        if self.offline_error(tp).is_some() {
            return ErrorCode::KAFKA_STORAGE_ERROR;
        }
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
    fn plan_fetch(&self, request: &FetchRequest) -> FetchPlan {
        let max_bytes = effective_max_bytes(request.max_bytes, self.config.fetch_max_bytes);
        FetchPlan {
            max_bytes,
            hard_limit: request.transport_limit,
            // KafkaApis.handleFetchRequest: fetchMinBytes = min(request minBytes, fetchMaxBytes).
            min_bytes: (request.min_bytes as usize).min(max_bytes).max(1),
            listed_twice: duplicate_entries(&request.partitions),
        }
    }

    /// Whether a fetch may be served as a follower fetch, by the metadata of now: checked on
    /// every pass of a long poll, so a follower fenced while it waits is not served on.
    fn check_identity(&self, request: &FetchRequest) -> Result<(), ReplicaRefusal> {
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
        request: &FetchRequest,
        plan: &FetchPlan,
        update_follower: bool,
    ) -> (Vec<FetchPartitionResponse>, usize) {
        let identity = self.check_identity(request);
        let mut budget = FetchBudget::new(plan.max_bytes, plan.hard_limit);
        let mut responses = Vec::with_capacity(request.partitions.len());
        let mut total = 0usize;
        let now_ms = self.now_ms();
        for (wanted, &listed_twice) in request.partitions.iter().zip(&plan.listed_twice) {
            let tp = &wanted.topic_partition;
            let response = match (&identity, listed_twice, self.partition(tp)) {
                (_, true, _) => FetchPartitionResponse::refused(
                    tp.clone(),
                    ErrorCode::INVALID_REQUEST,
                    "the partition is listed more than once in this fetch",
                ),
                (Err(refusal), false, _) => {
                    FetchPartitionResponse::refused(tp.clone(), refusal.error, refusal.message.clone())
                }
                (Ok(()), false, None) => {
                    let refused = self.missing_partition_outcome(tp);
                    FetchPartitionResponse::refused(tp.clone(), refused.error, refused.message)
                }
                (Ok(()), false, Some(partition)) => {
                    let (response, actions) = partition.read(
                        request.replica_id,
                        request.broker_epoch,
                        wanted,
                        &budget,
                        update_follower,
                        now_ms,
                    );
                    if !actions.is_empty() {
                        self.run_actions(tp, actions);
                    }
                    if response.error == ErrorCode::KAFKA_STORAGE_ERROR {
                        self.mark_offline(tp, &response.error_message);
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
    /// (for consumers) a HW change to pass on (Kafka `DelayedFetch`).
    pub async fn fetch(&self, request: FetchRequest) -> FetchResponse {
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
            let has_error_or_divergence =
                responses.iter().any(|r| r.error != ErrorCode::NONE || r.diverging_epoch.is_some());
            if first {
                initial_hw = responses.iter().map(|r| r.high_watermark).collect();
            }
            first = false;
            if total >= plan.min_bytes || hw_moved || has_error_or_divergence || Instant::now() >= deadline {
                return FetchResponse { partitions: responses };
            }
            if tokio::time::timeout_at(deadline.into(), wakeups.changed()).await.is_err() {
                // Deadline: answer with what there is (nothing).
                return FetchResponse { partitions: responses };
            }
        }
    }

    /// ListOffsets for the earliest (-2) or latest (-1) offset, on the leader.
    pub fn list_offsets(&self, tp: &TopicPartition, timestamp: i64) -> Result<Offset, ProduceOutcome> {
        let Some(partition) = self.partition(tp) else {
            return Err(self.missing_partition_outcome(tp));
        };
        let (log_start_offset, high_watermark) = partition.leader_offsets(NO_EPOCH).map_err(|code| match code {
            // Taken offline since it was looked up.
            ErrorCode::KAFKA_STORAGE_ERROR => self.missing_partition_outcome(tp),
            code => ProduceOutcome::rejected(code, format!("broker {} is not the leader of {tp}", self.broker_id)),
        })?;
        match timestamp {
            -2 => Ok(log_start_offset),
            -1 => Ok(high_watermark),
            other => Err(ProduceOutcome::rejected(
                ErrorCode::INVALID_REQUEST,
                format!("timestamp {other}: only -2 (earliest) and -1 (latest) are supported"),
            )),
        }
    }

    /// Writes every hosted partition's HW to the checkpoint (Kafka
    /// `ReplicaManager.checkpointHighWatermarks`).
    pub fn checkpoint_high_watermarks(&self) {
        // Entries read at startup for partitions not open (yet) are kept: rewriting the file
        // without them would reopen those partitions at HW 0.
        let mut map: BTreeMap<TopicPartition, Offset> = self.lock_checkpointed().clone();
        map.extend(self.all_partitions().into_iter().map(|p| (p.topic_partition().clone(), p.high_watermark())));
        // An offline replica keeps the HW it had, so that it reopens with it after a restart.
        let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        for (tp, hosted) in partitions.iter() {
            if let HostedPartition::Offline(OfflineReplica { high_watermark: Some(high_watermark), .. }) = hosted {
                map.insert(tp.clone(), *high_watermark);
            }
        }
        drop(partitions);
        // Written even when empty: the entries of deleted replicas must go from the file.
        if let Err(e) = self.hw_checkpoint.lock().unwrap_or_else(|p| p.into_inner()).write(&map) {
            warn!("high watermark checkpoint failed: {e}");
        }
        self.checkpoint_log_start_offsets();
    }

    /// Clean shutdown: checkpoint HWs and flush every log (fsync).
    pub fn shutdown(&self) {
        self.checkpoint_high_watermarks();
        for partition in self.all_partitions() {
            if let Err(e) = partition.close() {
                warn!("{}: flush on shutdown failed: {e}", partition.topic_partition());
            }
            let actions = partition.resign();
            self.run_actions(partition.topic_partition(), actions);
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
    /// Record bytes the transport can carry back.
    hard_limit: usize,
    min_bytes: usize,
    /// Per request entry: the partition is listed more than once (answered INVALID_REQUEST).
    listed_twice: Vec<bool>,
}

/// Whether `metadata` shows `broker_id` registered with `broker_epoch`, its current
/// registration. A broker restarted within its session still finds itself leader in the
/// metadata, at the epoch it led before the crash; taking that leadership up again, from a
/// checkpointed HW and a log that may have lost its tail, would move the HW back within the
/// epoch, or write new records where followers hold others under the same epoch, which
/// KIP-101 truncation cannot see. Kafka's broker acts on metadata only once it has caught up
/// past its own registration (`BrokerServer`'s initial catch-up, `BrokerLifecycleManager`),
/// by which time the controller has moved that leadership away (`rules::register_broker`).
pub fn caught_up_with_registration(metadata: &pb::ClusterMetadata, broker_id: BrokerId, broker_epoch: i64) -> bool {
    broker_epoch > 0 && metadata.brokers.iter().any(|b| b.id == broker_id && b.broker_epoch == broker_epoch)
}

/// Drops `tp` from the fetchers' assignment; whether it was there.
fn unassign(assignment: &mut FollowerAssignment, tp: &TopicPartition) -> bool {
    let removed = assignment.values_mut().any(|followed| followed.remove(tp).is_some());
    assignment.retain(|_, followed| !followed.is_empty());
    removed
}

/// What requests for an offline replica are answered.
fn offline_message(broker_id: BrokerId, tp: &TopicPartition, error: &str) -> String {
    format!(
        "broker {broker_id} took its replica of {tp} offline after a storage error ({error}); it serves it again \
         only after a restart (the controller elects another leader)"
    )
}

/// The controller's metadata of a partition as the core's registration.
pub fn registration(partition_metadata: &pb::PartitionMetadata) -> PartitionRegistration {
    PartitionRegistration {
        leader: partition_metadata.leader,
        leader_epoch: partition_metadata.leader_epoch,
        partition_epoch: partition_metadata.partition_epoch,
        replicas: partition_metadata.replicas.clone(),
        isr: partition_metadata.isr.clone(),
    }
}
