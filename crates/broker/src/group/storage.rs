//! Durable group state: the internal topic `__consumer_offsets` (Kafka
//! `GroupMetadataManager` + `CoordinatorLoaderImpl` + the coordinator runtime's writes),
//! the placement of groups on its partitions, loading a partition when this broker becomes
//! its leader, and appending the coordinator's records with acks=all.
//!
//! - The topic is created on first need by asking the active controller, like `insync topic
//!   create` (`--offsets-topic-num-partitions`, `--offsets-topic-replication-factor`,
//!   min.insync.replicas=2). insync has no log compaction yet, so retention is switched off
//!   on it (retention.ms = retention.bytes = -1) and the topic grows with every commit
//!   (docs/operations.md "Consumer offsets"). Offsets leave memory and a reload through the
//!   tombstones the coordinator writes (DeleteGroups, offsets.retention.minutes expiry).
//! - A group lives on partition `abs(javaHash(group)) % partitions`; its coordinator is that
//!   partition's leader (Kafka `GroupMetadataManager.partitionFor`). The partition count is
//!   the one this process first saw the topic with, kept for its lifetime (Kafka fixes
//!   offsets.topic.num.partitions at startup): were partitions added, every group would
//!   move to another partition and its offsets would seem gone.
//! - When this broker becomes leader of a partition it reads the local log from its start to
//!   its end, keeps the last record of every key, and emits `ShardEvent::Loaded`; leadership
//!   lost or a newer epoch emits `Unloaded` (Kafka `onElection` / `onResignation`). A load
//!   that cannot read every record (a corrupt batch, a record of a known type that does not
//!   decode) fails and is retried: the partition stays COORDINATOR_LOAD_IN_PROGRESS rather
//!   than serving state with acknowledged writes missing.
//! - `append` writes one RecordBatch v2 through the produce path (`ReplicaManager::
//!   produce_append` + `produce_wait`), so the offsets topic follows the same acks=all, ISR
//!   and high-watermark rules as every other topic.
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use insync_log::batch::{decode_records, iter_batches, BatchBuilder};
use insync_proto as pb;
use insync_types::{topic_config, ErrorCode, TopicPartition};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, error, info, warn};

use super::records::{self, GroupRecord};
use super::{java_string_hash, AppendWait, GroupLog};
use crate::controller_link::ControllerLink;
use crate::messages::ProduceRequest;
use crate::partition::Partition;
use crate::replica_manager::{ProduceAppended, ReplicaManager};

/// Kafka's name for the topic (`Topic.GROUP_METADATA_TOPIC_NAME`).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Kafka offsets.commit.timeout.ms: how long an append waits for the ISR.
pub const OFFSET_COMMIT_TIMEOUT_MS: u32 = 5_000;
/// min.insync.replicas of the topic (Kafka's recommended setting for it with RF 3).
const OFFSETS_TOPIC_MIN_INSYNC_REPLICAS: i32 = 2;
/// Creation is retried at most this often while it fails (too few brokers alive).
const CREATE_RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long one creation call may look for the active controller.
const CREATE_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Leadership is re-checked this often besides every metadata change (a replica taken
/// offline after a storage error changes no metadata).
const RECHECK_EVERY: Duration = Duration::from_secs(1);
/// Bytes read from the log per step while loading (whole batches, at least one).
const LOAD_READ_BYTES: usize = 1 << 20;
/// A failed load is started again at most this often (it reads the whole partition).
const LOAD_RETRY_EVERY: Duration = Duration::from_secs(5);

/// What the coordinator hears about the partitions this broker leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardEvent {
    /// This broker became leader of offsets partition `partition` at `leader_epoch` and has
    /// read it to its log end: replay `records` in order (last write wins, tombstones delete).
    Loaded { partition: i32, leader_epoch: i32, records: Vec<GroupRecord> },
    /// Leadership of `partition` moved away (or the broker is shutting down): drop its groups.
    Unloaded { partition: i32 },
}

/// One offsets partition this broker leads.
struct Shard {
    leader_epoch: i32,
    /// The replica led: a re-created replica (another `Arc`) is another shard.
    replica: Arc<Partition>,
    loaded: bool,
    /// Which load this is: a load started for a shard since dropped (`reload`) must not
    /// complete the shard that replaced it at the same epoch.
    load_id: u64,
}

/// Topic creation in flight, and when it was last tried.
#[derive(Default)]
struct Creation {
    in_flight: bool,
    last_attempt: Option<Instant>,
    /// The last refusal logged, so a cluster waiting for brokers logs it once.
    last_refusal: String,
}

/// One per broker, shared as `Arc` (see the module doc).
pub struct GroupStorage {
    replica_manager: Arc<ReplicaManager>,
    link: Arc<ControllerLink>,
    num_partitions: i32,
    replication_factor: i32,
    shards: Mutex<BTreeMap<i32, Shard>>,
    creation: Arc<Mutex<Creation>>,
    events: Mutex<mpsc::UnboundedSender<ShardEvent>>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<ShardEvent>>>,
    /// Wakes the leadership watcher (a request found a leadership it has not seen yet).
    recheck: Notify,
    /// The topic's partition count as first seen by this process (see the module doc), and
    /// the other count last logged, so a changed topic is reported once per change.
    partition_count: Mutex<PartitionCount>,
    /// Partitions whose last load failed, and when: not started again before `LOAD_RETRY_EVERY`.
    failed_loads: Mutex<HashMap<i32, Instant>>,
    next_load_id: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct PartitionCount {
    fixed: Option<i32>,
    reported: Option<i32>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Kafka `Utils.abs`: like `Math.abs`, except that `i32::MIN` (whose absolute value does not
/// fit) is 0 rather than itself.
fn kafka_abs(n: i32) -> i32 {
    if n == i32::MIN {
        0
    } else {
        n.abs()
    }
}

/// The offsets partition of `group_id` among `partitions` (Kafka `partitionFor`).
pub fn partition_of(group_id: &str, partitions: i32) -> i32 {
    kafka_abs(java_string_hash(group_id)) % partitions.max(1)
}

/// Kafka maps an append's failure to the coordinator error a client acts on
/// (`GroupMetadataManager.storeOffsets` / `CoordinatorRuntime`): retriable "find it again"
/// or "try later" codes, or INVALID_COMMIT_OFFSET_SIZE for a batch too large.
pub fn map_append_error(error: ErrorCode) -> ErrorCode {
    match error {
        ErrorCode::NONE => ErrorCode::NONE,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        | ErrorCode::NOT_ENOUGH_REPLICAS
        | ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND
        | ErrorCode::REQUEST_TIMED_OUT => ErrorCode::COORDINATOR_NOT_AVAILABLE,
        ErrorCode::NOT_LEADER_OR_FOLLOWER
        | ErrorCode::KAFKA_STORAGE_ERROR
        | ErrorCode::FENCED_LEADER_EPOCH
        | ErrorCode::UNKNOWN_LEADER_EPOCH => ErrorCode::NOT_COORDINATOR,
        ErrorCode::MESSAGE_TOO_LARGE | ErrorCode::CORRUPT_MESSAGE => ErrorCode::INVALID_COMMIT_OFFSET_SIZE,
        _ => ErrorCode::UNKNOWN_SERVER_ERROR,
    }
}

impl GroupStorage {
    /// The storage of this broker, and its leadership watcher running until `stop`.
    pub fn start(
        replica_manager: Arc<ReplicaManager>,
        link: Arc<ControllerLink>,
        stop: watch::Receiver<bool>,
    ) -> Arc<GroupStorage> {
        let storage = Arc::new(GroupStorage::new(replica_manager, link));
        tokio::spawn(watch_leadership(storage.clone(), stop));
        storage
    }

    fn new(replica_manager: Arc<ReplicaManager>, link: Arc<ControllerLink>) -> GroupStorage {
        let config = &replica_manager.config;
        let (num_partitions, replication_factor) =
            (config.offsets_topic_num_partitions, config.offsets_topic_replication_factor);
        let (tx, rx) = mpsc::unbounded_channel();
        GroupStorage {
            replica_manager,
            link,
            num_partitions,
            replication_factor,
            shards: Mutex::new(BTreeMap::new()),
            creation: Arc::new(Mutex::new(Creation::default())),
            events: Mutex::new(tx),
            receiver: Mutex::new(Some(rx)),
            recheck: Notify::new(),
            partition_count: Mutex::new(PartitionCount::default()),
            failed_loads: Mutex::new(HashMap::new()),
            next_load_id: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The offsets topic as this broker's metadata shows it.
    fn topic(&self) -> Option<(Arc<pb::ClusterMetadata>, usize)> {
        let metadata = self.replica_manager.metadata();
        let index = metadata.topics.iter().position(|t| t.name == OFFSETS_TOPIC)?;
        Some((metadata, index))
    }

    /// Offsets partition of a group: abs(java String.hashCode(group)) % partition count
    /// (Kafka `GroupMetadataManager.partitionFor`; the count is fixed the first time the
    /// topic is seen: `partition_count`). Err(COORDINATOR_NOT_AVAILABLE) while the topic
    /// does not exist yet (and starts its creation).
    pub fn partition_for(&self, group_id: &str) -> Result<i32, ErrorCode> {
        match self.topic().and_then(|(metadata, index)| self.partition_count(&metadata.topics[index])) {
            Some(count) => Ok(partition_of(group_id, count)),
            None => {
                self.ensure_created();
                Err(ErrorCode::COORDINATOR_NOT_AVAILABLE)
            }
        }
    }

    /// The partition count groups are placed by: the topic's count the first time this
    /// process saw it with partitions, for the life of the process. A different count later
    /// (partitions added behind the controller's back) is logged as an ERROR, once per
    /// change, and ignored: the groups stay where their offsets are.
    fn partition_count(&self, topic: &pb::TopicMetadata) -> Option<i32> {
        if topic.partitions.is_empty() {
            return None;
        }
        let seen = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        let mut count = lock(&self.partition_count);
        let fixed = *count.fixed.get_or_insert(seen);
        if seen == fixed {
            count.reported = None;
        } else if count.reported != Some(seen) {
            count.reported = Some(seen);
            error!(
                topic = OFFSETS_TOPIC,
                partitions = seen,
                placing_by = fixed,
                "the offsets topic's partition count changed; groups keep being placed by the count first seen (partitions must never be added to {OFFSETS_TOPIC})"
            );
        }
        Some(fixed)
    }

    /// The Kafka endpoint of `group_id`'s coordinator (the leader of its partition):
    /// (broker id, host, port). COORDINATOR_NOT_AVAILABLE while the topic is created or the
    /// partition has no leader with a Kafka listener (Kafka `KafkaApis.getCoordinator`),
    /// with the reason in words.
    pub fn coordinator(&self, group_id: &str) -> Result<(i32, String, i32), (ErrorCode, String)> {
        let unavailable = |why: String| (ErrorCode::COORDINATOR_NOT_AVAILABLE, why);
        let partition = self
            .partition_for(group_id)
            .map_err(|code| (code, format!("the {OFFSETS_TOPIC} topic does not exist yet (it is being created)")))?;
        let (metadata, index) =
            self.topic().ok_or_else(|| unavailable(format!("the {OFFSETS_TOPIC} topic is gone")))?;
        let leader = metadata.topics[index]
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.leader)
            .filter(|leader| *leader >= 0)
            .ok_or_else(|| unavailable(format!("{OFFSETS_TOPIC}-{partition} has no leader yet")))?;
        let broker = metadata.brokers.iter().find(|b| b.id == leader).ok_or_else(|| {
            unavailable(format!("the leader of {OFFSETS_TOPIC}-{partition}, broker {leader}, is unknown"))
        })?;
        let (host, port) = crate::kafka::kafka_endpoint(broker).ok_or_else(|| {
            unavailable(format!("the leader of {OFFSETS_TOPIC}-{partition}, broker {leader}, has no Kafka listener"))
        })?;
        if leader == self.replica_manager.broker_id {
            // Our own leadership: make sure the watcher loads it without waiting for a tick.
            self.recheck.notify_one();
        }
        Ok((leader, host, port))
    }

    /// Ok(leader_epoch) if this broker leads `partition` and has loaded it;
    /// Err(COORDINATOR_LOAD_IN_PROGRESS) while loading; Err(NOT_COORDINATOR) otherwise.
    pub fn check_loaded(&self, partition: i32) -> Result<i32, ErrorCode> {
        if let Some(shard) = lock(&self.shards).get(&partition) {
            if !shard.replica.leads_at(shard.leader_epoch) {
                // Leadership moved this instant; the watcher unloads it next.
                self.recheck.notify_one();
                return Err(ErrorCode::NOT_COORDINATOR);
            }
            return if shard.loaded { Ok(shard.leader_epoch) } else { Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS) };
        }
        match self.led_replica(partition) {
            Some(_) => {
                self.recheck.notify_one();
                Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS)
            }
            None => Err(ErrorCode::NOT_COORDINATOR),
        }
    }

    /// Load/unload events, in order per partition. One subscriber: a second call gets a
    /// fresh channel, and every partition is loaded again for it.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<ShardEvent> {
        if let Some(rx) = lock(&self.receiver).take() {
            return rx;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        *lock(&self.events) = tx;
        lock(&self.shards).clear();
        self.recheck.notify_one();
        rx
    }

    fn emit(&self, event: ShardEvent) {
        // No subscriber (the coordinator is gone): nothing to tell.
        let _ = lock(&self.events).send(event);
    }

    /// This broker's replica of offsets partition `partition` and its epoch, if it leads it.
    fn led_replica(&self, partition: i32) -> Option<(Arc<Partition>, i32)> {
        let replica = self.replica_manager.partition(&TopicPartition::new(OFFSETS_TOPIC, partition))?;
        let epoch = replica.inspect(|state| state.leader().is_some().then(|| state.leader_epoch()))?;
        Some((replica, epoch))
    }

    /// Asks the active controller to create the topic, unless a creation is in flight or
    /// was tried within the last second (all brokers may ask: the loser gets
    /// TOPIC_ALREADY_EXISTS, which is success here).
    fn ensure_created(&self) {
        {
            let mut creation = lock(&self.creation);
            let recent = creation.last_attempt.is_some_and(|at| at.elapsed() < CREATE_RETRY_EVERY);
            if creation.in_flight || recent {
                return;
            }
            creation.in_flight = true;
            creation.last_attempt = Some(Instant::now());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            lock(&self.creation).in_flight = false;
            return;
        };
        let request = self.create_request();
        let (link, creation) = (self.link.clone(), self.creation.clone());
        runtime.spawn(async move {
            let outcome = create_topic(&link, request).await;
            let mut creation = lock(&creation);
            creation.in_flight = false;
            match outcome {
                Ok(()) => creation.last_refusal.clear(),
                Err(refusal) if refusal != creation.last_refusal => {
                    warn!(topic = OFFSETS_TOPIC, "cannot create the offsets topic yet (retrying): {refusal}");
                    creation.last_refusal = refusal;
                }
                Err(refusal) => debug!(topic = OFFSETS_TOPIC, "cannot create the offsets topic yet: {refusal}"),
            }
        });
    }

    /// The topic as Kafka creates it (`GroupCoordinator.groupMetadataTopicConfigs`) less
    /// compaction, which insync lacks: so no retention may delete an offset.
    fn create_request(&self) -> pb::CreateTopicRequest {
        let min_insync = OFFSETS_TOPIC_MIN_INSYNC_REPLICAS.min(self.replication_factor);
        let configs = [
            (topic_config::RETENTION_MS, "-1".to_string()),
            (topic_config::RETENTION_BYTES, "-1".to_string()),
            ("min.insync.replicas", min_insync.to_string()),
        ];
        pb::CreateTopicRequest {
            name: OFFSETS_TOPIC.to_string(),
            partitions: self.num_partitions,
            replication_factor: self.replication_factor,
            min_insync_replicas: 0,
            unclean_leader_election_enable: false,
            configs: configs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            validate_only: false,
            internal: true,
        }
    }
}

/// One creation call; Ok when the topic exists afterwards.
async fn create_topic(link: &ControllerLink, request: pb::CreateTopicRequest) -> Result<(), String> {
    let reply = link
        .call(CREATE_CALL_TIMEOUT, |mut client| {
            let request = request.clone();
            async move { client.create_topic(request).await }
        })
        .await
        .map_err(|e| e.to_string())?;
    match ErrorCode::from_code(reply.error_code) {
        ErrorCode::NONE => {
            info!(
                topic = OFFSETS_TOPIC,
                partitions = request.partitions,
                replication_factor = request.replication_factor,
                "created the offsets topic"
            );
            Ok(())
        }
        ErrorCode::TOPIC_ALREADY_EXISTS => Ok(()),
        code => Err(format!("{code}: {}", reply.error_message)),
    }
}

impl GroupStorage {
    /// Appends records to the offsets partition with acks=all through the ReplicaManager
    /// produce path and waits (see `map_append_error`). Fails with NOT_COORDINATOR if
    /// `leader_epoch` is no longer current.
    pub async fn append(&self, partition: i32, leader_epoch: i32, records: Vec<GroupRecord>) -> Result<(), ErrorCode> {
        self.start_append(partition, leader_epoch, records).await
    }

    /// The synchronous half of `append` runs now, the wait in the returned future: records
    /// take their place in the log in the order `start_append` is called, as produce does.
    pub fn start_append(
        &self,
        partition: i32,
        leader_epoch: i32,
        records: Vec<GroupRecord>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ErrorCode>> + Send + 'static>> {
        match self.try_start_append(partition, leader_epoch, records) {
            Ok(wait) => wait,
            Err(code) => Box::pin(std::future::ready(Err(code))),
        }
    }

    /// `start_append`, with a failure to append at all told apart (Err: nothing written).
    pub fn try_start_append(
        &self,
        partition: i32,
        leader_epoch: i32,
        records: Vec<GroupRecord>,
    ) -> Result<AppendWait, ErrorCode> {
        let appended = match self.append_now(partition, leader_epoch, &records)? {
            Some(appended) => appended,
            None => return Ok(Box::pin(std::future::ready(Ok(())))),
        };
        let replica_manager = self.replica_manager.clone();
        Ok(Box::pin(async move {
            let outcome = replica_manager.produce_wait(appended, OFFSET_COMMIT_TIMEOUT_MS).await;
            if outcome.error == ErrorCode::NONE {
                return Ok(());
            }
            let mapped = map_append_error(outcome.error);
            warn!(
                topic = OFFSETS_TOPIC,
                partition,
                leader_epoch,
                error = %outcome.error,
                answered = %mapped,
                "group records not acknowledged: {}",
                outcome.message
            );
            Err(mapped)
        }))
    }

    /// Checks the epoch, builds the batch and appends it (Ok(None): nothing to write).
    fn append_now(
        &self,
        partition: i32,
        leader_epoch: i32,
        records: &[GroupRecord],
    ) -> Result<Option<ProduceAppended>, ErrorCode> {
        if self.check_loaded(partition)? != leader_epoch {
            return Err(ErrorCode::NOT_COORDINATOR);
        }
        if records.is_empty() {
            return Ok(None);
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let mut batch = BatchBuilder::new();
        for record in records {
            // The coordinator refuses over-long ids and names where requests come in; one
            // reaching here is a bug, answered as one rather than written cut.
            let (key, value) = records::encode(record).map_err(|e| {
                error!(topic = OFFSETS_TOPIC, partition, "group record not encodable, nothing appended: {e}");
                ErrorCode::UNKNOWN_SERVER_ERROR
            })?;
            batch.push(Some(&key), value.as_deref(), now_ms);
        }
        let appended = self.replica_manager.produce_append(ProduceRequest {
            topic_partition: TopicPartition::new(OFFSETS_TOPIC, partition),
            acks: -1,
            timeout_ms: OFFSET_COMMIT_TIMEOUT_MS,
            records: batch.build(),
        });
        let outcome = match &appended {
            ProduceAppended::Done(outcome) => outcome,
            ProduceAppended::Waiting { outcome, .. } => outcome,
        };
        if outcome.appended && outcome.leader_epoch != leader_epoch {
            // Leadership changed between the check and the append: the records are in the
            // log of another epoch, whose load may have read the log end before they landed.
            // Drop that load so the partition is read again with them; this coordinator's
            // epoch must not go on.
            self.reload(partition, "records of an older epoch were appended during its load");
            return Err(ErrorCode::NOT_COORDINATOR);
        }
        if outcome.error != ErrorCode::NONE {
            warn!(topic = OFFSETS_TOPIC, partition, error = %outcome.error, "group records refused: {}", outcome.message);
            return Err(map_append_error(outcome.error));
        }
        if outcome.leader_epoch != leader_epoch {
            return Err(ErrorCode::NOT_COORDINATOR);
        }
        Ok(Some(appended))
    }

    /// Forgets `partition`'s shard, loaded or loading (its in-flight load is then ignored),
    /// so the watcher loads it again from the log: the coordinator hears `Unloaded`, then
    /// `Loaded` with everything the log holds by then.
    fn reload(&self, partition: i32, why: &str) {
        let mut shards = lock(&self.shards);
        if let Some(shard) = shards.remove(&partition) {
            warn!(topic = OFFSETS_TOPIC, partition, leader_epoch = shard.leader_epoch, "reloading: {why}");
            if shard.loaded {
                self.emit(ShardEvent::Unloaded { partition });
            }
        }
        drop(shards);
        self.recheck.notify_one();
    }
}

impl GroupLog for GroupStorage {
    fn partition_for(&self, group_id: &str) -> Result<i32, ErrorCode> {
        GroupStorage::partition_for(self, group_id)
    }

    fn check_loaded(&self, partition: i32) -> Result<i32, ErrorCode> {
        GroupStorage::check_loaded(self, partition)
    }

    fn append(&self, partition: i32, leader_epoch: i32, records: Vec<GroupRecord>) -> Result<AppendWait, ErrorCode> {
        self.try_start_append(partition, leader_epoch, records)
    }
}

/// Keeps `shards` equal to the offsets partitions this broker leads: loads new leaderships,
/// unloads lost ones. Runs on every metadata change, every `RECHECK_EVERY`, and when a
/// request saw a leadership first.
async fn watch_leadership(storage: Arc<GroupStorage>, mut stop: watch::Receiver<bool>) {
    let mut versions = storage.replica_manager.subscribe_metadata_version();
    let mut ticker = tokio::time::interval(RECHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        reconcile(&storage);
        tokio::select! {
            changed = versions.changed() => if changed.is_err() { break },
            _ = ticker.tick() => {}
            _ = storage.recheck.notified() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    // Shutting down: the coordinator drops every group.
    let mut shards = lock(&storage.shards);
    for (partition, shard) in std::mem::take(&mut *shards) {
        if shard.loaded {
            storage.emit(ShardEvent::Unloaded { partition });
        }
    }
}

/// One pass of the watcher (see `watch_leadership`).
fn reconcile(storage: &Arc<GroupStorage>) {
    let Some((metadata, index)) = storage.topic() else { return };
    let Some(count) = storage.partition_count(&metadata.topics[index]) else { return };
    // Partitions beyond the fixed count hold no group: not loaded.
    let led: HashMap<i32, (Arc<Partition>, i32)> = metadata.topics[index]
        .partitions
        .iter()
        .filter(|p| (0..count).contains(&p.partition))
        .filter_map(|p| storage.led_replica(p.partition).map(|led| (p.partition, led)))
        .collect();
    let mut shards = lock(&storage.shards);
    shards.retain(|partition, shard| {
        let kept = led
            .get(partition)
            .is_some_and(|(replica, epoch)| *epoch == shard.leader_epoch && Arc::ptr_eq(replica, &shard.replica));
        if !kept {
            info!(topic = OFFSETS_TOPIC, partition, leader_epoch = shard.leader_epoch, "unloading: no longer leader");
            if shard.loaded {
                storage.emit(ShardEvent::Unloaded { partition: *partition });
            }
        }
        kept
    });
    let mut failed = lock(&storage.failed_loads);
    failed.retain(|partition, at| led.contains_key(partition) && at.elapsed() < LOAD_RETRY_EVERY);
    for (partition, (replica, leader_epoch)) in led {
        if shards.contains_key(&partition) || failed.contains_key(&partition) {
            continue;
        }
        info!(topic = OFFSETS_TOPIC, partition, leader_epoch, "became leader: loading group state");
        let load_id = storage.next_load_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        shards.insert(partition, Shard { leader_epoch, replica: replica.clone(), loaded: false, load_id });
        let storage = storage.clone();
        tokio::spawn(async move {
            let read_replica = replica.clone();
            let loaded = tokio::task::spawn_blocking(move || load(&read_replica, partition)).await;
            finish_load(&storage, partition, load_id, loaded);
        });
    }
}

/// Publishes a finished load, unless its shard is gone or replaced meanwhile (leadership
/// lost, or `reload`). A failed load is started again after `LOAD_RETRY_EVERY`; until then
/// the partition answers COORDINATOR_LOAD_IN_PROGRESS.
fn finish_load(
    storage: &GroupStorage,
    partition: i32,
    load_id: u64,
    loaded: Result<Result<Vec<GroupRecord>, String>, tokio::task::JoinError>,
) {
    let mut shards = lock(&storage.shards);
    let Some(shard) = shards.get_mut(&partition) else { return };
    if shard.load_id != load_id || shard.loaded {
        return;
    }
    let leader_epoch = shard.leader_epoch;
    match loaded {
        Ok(Ok(records)) => {
            info!(topic = OFFSETS_TOPIC, partition, leader_epoch, records = records.len(), "group state loaded");
            shard.loaded = true;
            storage.emit(ShardEvent::Loaded { partition, leader_epoch, records });
        }
        failed => {
            let error = match failed {
                Ok(Err(e)) => e,
                Err(e) => e.to_string(),
                Ok(Ok(_)) => String::new(),
            };
            error!(
                topic = OFFSETS_TOPIC,
                partition,
                leader_epoch,
                retry_in_s = LOAD_RETRY_EVERY.as_secs(),
                "loading group state failed; its groups answer COORDINATOR_LOAD_IN_PROGRESS until a load succeeds: {error}"
            );
            shards.remove(&partition);
            lock(&storage.failed_loads).insert(partition, Instant::now());
        }
    }
}

/// Reads the replica's log from its start to its end (as of now); see `load_from`.
fn load(replica: &Partition, partition: i32) -> Result<Vec<GroupRecord>, String> {
    let (start, end) = (replica.log_start_offset(), replica.log_end_offset());
    load_from(partition, start, end, |offset| {
        replica.read_range(offset, end, LOAD_READ_BYTES).map_err(|e| format!("read at offset {offset}: {e}"))
    })
}

/// Decodes every record of `[start, end)` (read by `read`: whole batches from an offset)
/// and returns the last record of each key in log order (what replaying the whole log
/// leaves, in memory bounded by the live keys rather than by the log). As Kafka's
/// `CoordinatorLoaderImpl`: a record of an unknown type is skipped with a WARN (a newer
/// Kafka's); anything else that cannot be read — a batch failing its CRC or
/// decompression, a record without key or not decoding as its type, a read that stops
/// short of `end` — fails the load, naming the offset: acknowledged state must not
/// silently go missing.
fn load_from(
    partition: i32,
    start: i64,
    end: i64,
    mut read: impl FnMut(i64) -> Result<Bytes, String>,
) -> Result<Vec<GroupRecord>, String> {
    let mut offset = start;
    let mut latest: HashMap<Bytes, (i64, GroupRecord)> = HashMap::new();
    while offset < end {
        let chunk = read(offset)?;
        let mut next = offset;
        for batch in iter_batches(&chunk) {
            let (header, bytes) = batch.map_err(|e| format!("batch at offset {next}: {e}"))?;
            next = header.next_offset();
            if header.is_control() {
                continue;
            }
            let decoded = decode_records(bytes).map_err(|e| format!("batch at offset {}: {e}", header.base_offset))?;
            for record in decoded {
                let Some(key) = record.key else {
                    return Err(format!("record at offset {} has no key", record.offset));
                };
                match records::decode(&key, record.value.as_deref()) {
                    Ok(group_record) => {
                        latest.insert(key, (record.offset, group_record));
                    }
                    Err(records::DecodeError::UnknownType(record_type)) => warn!(
                        topic = OFFSETS_TOPIC,
                        partition,
                        offset = record.offset,
                        record_type,
                        "skipping a record of an unknown type (a newer Kafka's?)"
                    ),
                    Err(e) => return Err(format!("record at offset {}: {e}", record.offset)),
                }
            }
        }
        if next <= offset {
            return Err(format!("no whole batch could be read at offset {offset} (log end {end})"));
        }
        offset = next;
    }
    let mut records: Vec<(i64, GroupRecord)> = latest.into_values().collect();
    records.sort_by_key(|(offset, _)| *offset);
    Ok(records.into_iter().map(|(_, record)| record).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch_tests::{broker, metadata};
    use crate::group::records::OffsetValue;

    fn offset(group: &str, partition: i32, offset: Option<i64>) -> GroupRecord {
        GroupRecord::Offset {
            group: group.into(),
            topic: "orders".into(),
            partition,
            value: offset.map(|offset| OffsetValue {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 1,
            }),
        }
    }

    /// The offsets topic, 2 partitions led by broker 1 at `epochs[p]` (leader 2 if negative).
    fn offsets_metadata(version: u64, epochs: [i32; 2]) -> pb::ClusterMetadata {
        let mut md = metadata(version, OFFSETS_TOPIC, 2, &[1]);
        for (p, epoch) in md.topics[0].partitions.iter_mut().zip(epochs) {
            p.leader_epoch = epoch.abs();
            if epoch < 0 {
                p.leader = 2;
            }
        }
        md
    }

    async fn next(events: &mut mpsc::UnboundedReceiver<ShardEvent>) -> ShardEvent {
        tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("an event in time").expect("open")
    }

    #[tokio::test]
    async fn loads_on_leadership_appends_and_reloads_the_last_write_per_key() {
        let b = broker(1, &[]);
        let rm = b.replica_manager.clone();
        rm.apply_metadata(offsets_metadata(1, [0, 0]));
        let link = Arc::new(ControllerLink::new("1@127.0.0.1:1").unwrap());
        let (stop_tx, stop) = watch::channel(false);
        let storage = GroupStorage::start(rm.clone(), link, stop);
        let mut events = storage.subscribe();
        let mut loaded = [next(&mut events).await, next(&mut events).await];
        loaded.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(loaded[0], ShardEvent::Loaded { partition: 0, leader_epoch: 0, records: vec![] });
        assert_eq!(storage.check_loaded(1), Ok(0));
        assert_eq!(storage.append(0, 7, vec![offset("g", 0, Some(1))]).await, Err(ErrorCode::NOT_COORDINATOR));
        storage.append(0, 0, vec![offset("g", 0, Some(5)), offset("g", 1, Some(9))]).await.unwrap();
        storage.append(0, 0, vec![offset("g", 0, Some(6)), offset("g", 1, None)]).await.unwrap();
        // A record no decoder knows (a newer Kafka's record type) is skipped, not fatal.
        let mut junk = BatchBuilder::new();
        junk.push(Some(b"\x00\x09junk"), Some(b"x"), 1);
        let request = ProduceRequest {
            topic_partition: TopicPartition::new(OFFSETS_TOPIC, 0),
            acks: 1,
            timeout_ms: 1000,
            records: junk.build(),
        };
        assert!(matches!(rm.produce_append(request), ProduceAppended::Done(o) if o.error == ErrorCode::NONE));
        // Leadership of partition 0 moves away: unloaded, and no longer ours.
        rm.apply_metadata(offsets_metadata(2, [-1, 0]));
        assert_eq!(next(&mut events).await, ShardEvent::Unloaded { partition: 0 });
        assert_eq!(storage.check_loaded(0), Err(ErrorCode::NOT_COORDINATOR));
        assert_eq!(storage.append(0, 0, vec![offset("g", 0, Some(7))]).await, Err(ErrorCode::NOT_COORDINATOR));
        // It comes back at a newer epoch: the log is read again, last write per key wins.
        rm.apply_metadata(offsets_metadata(3, [2, 0]));
        let want = vec![offset("g", 0, Some(6)), offset("g", 1, None)];
        assert_eq!(next(&mut events).await, ShardEvent::Loaded { partition: 0, leader_epoch: 2, records: want });
        assert_eq!(storage.check_loaded(0), Ok(2));
        let _ = stop_tx.send(true);
        let mut unloaded = vec![next(&mut events).await, next(&mut events).await];
        unloaded.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(unloaded, [ShardEvent::Unloaded { partition: 0 }, ShardEvent::Unloaded { partition: 1 }]);
    }

    #[tokio::test]
    async fn too_few_in_sync_replicas_is_coordinator_not_available() {
        let b = broker(1, &[]);
        let rm = b.replica_manager.clone();
        let mut md = offsets_metadata(1, [0, 0]);
        md.topics[0].min_insync_replicas = 2;
        rm.apply_metadata(md);
        let link = Arc::new(ControllerLink::new("1@127.0.0.1:1").unwrap());
        let (_stop_tx, stop) = watch::channel(false);
        let storage = GroupStorage::start(rm, link, stop);
        let mut events = storage.subscribe();
        // Both partitions load in either order; wait for both so partition 1 is ours.
        next(&mut events).await;
        next(&mut events).await;
        assert_eq!(storage.check_loaded(1), Ok(0));
        let result = storage.append(1, 0, vec![offset("g", 0, Some(1))]).await;
        assert_eq!(result, Err(ErrorCode::COORDINATOR_NOT_AVAILABLE));
        assert_eq!(storage.partition_for("polygenelubricants"), Ok(0));
    }

    #[test]
    fn placement_follows_kafka_partition_for() {
        // Java: "".hashCode() == 0, "hello".hashCode() == 99162322,
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE (Utils.abs → 0).
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_of("polygenelubricants", 50), 0);
        assert_eq!(partition_of("hello", 50), 99_162_322 % 50);
        // A negative hash: abs, not a mask ("Aa" is 2112; a long id overflows negative).
        let negative = "consumer-group-with-a-rather-long-name";
        let hash = java_string_hash(negative);
        assert!(hash < 0, "{hash}");
        assert_eq!(partition_of(negative, 12), (-hash) % 12);
        // Non-BMP characters hash as two UTF-16 units, as in Java.
        assert_eq!(java_string_hash("😀"), 0xD83D * 31 + 0xDE00);
    }

    #[test]
    fn append_errors_map_as_kafkas_coordinator() {
        assert_eq!(map_append_error(ErrorCode::NOT_ENOUGH_REPLICAS), ErrorCode::COORDINATOR_NOT_AVAILABLE);
        assert_eq!(map_append_error(ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND), ErrorCode::COORDINATOR_NOT_AVAILABLE);
        assert_eq!(map_append_error(ErrorCode::REQUEST_TIMED_OUT), ErrorCode::COORDINATOR_NOT_AVAILABLE);
        assert_eq!(map_append_error(ErrorCode::NOT_LEADER_OR_FOLLOWER), ErrorCode::NOT_COORDINATOR);
        assert_eq!(map_append_error(ErrorCode::KAFKA_STORAGE_ERROR), ErrorCode::NOT_COORDINATOR);
        assert_eq!(map_append_error(ErrorCode::MESSAGE_TOO_LARGE), ErrorCode::INVALID_COMMIT_OFFSET_SIZE);
        assert_eq!(map_append_error(ErrorCode::INVALID_REQUIRED_ACKS), ErrorCode::UNKNOWN_SERVER_ERROR);
    }

    /// A record's key and value, as raw bytes.
    type RawRecord = (Option<Vec<u8>>, Option<Vec<u8>>);

    /// One batch at `base` of (key, value) records.
    fn batch_at(base: i64, records: &[RawRecord]) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for (key, value) in records {
            builder.push(key.as_deref(), value.as_deref(), 1);
        }
        let mut bytes = builder.build().to_vec();
        insync_log::batch::stamp_batch(&mut bytes, base, 0);
        bytes
    }

    fn encoded(record: &GroupRecord) -> RawRecord {
        let (key, value) = records::encode(record).unwrap();
        (Some(key.to_vec()), value.map(|v| v.to_vec()))
    }

    /// `load_from` over `log` (batches), reading whole batches from an offset as a log does.
    fn load_log(log: &[Vec<u8>]) -> Result<Vec<GroupRecord>, String> {
        let end = log
            .iter()
            .filter_map(|b| iter_batches(b).next().and_then(Result::ok).map(|(h, _)| h.next_offset()))
            .max()
            .unwrap_or(0);
        load_from(0, 0, end, |offset| {
            let from = log.iter().position(|b| {
                iter_batches(b).next().and_then(Result::ok).is_some_and(|(h, _)| h.next_offset() > offset)
            });
            Ok(Bytes::from(from.map(|i| log[i..].concat()).unwrap_or_default()))
        })
    }

    #[test]
    fn a_load_fails_rather_than_lose_records_and_skips_only_unknown_types() {
        let first = batch_at(0, &[encoded(&offset("g", 0, Some(5))), encoded(&offset("g", 1, Some(9)))]);
        // A record type no decoder knows (a newer Kafka's): skipped, as Kafka skips it.
        let unknown = batch_at(2, &[(Some(b"\x00\x09junk".to_vec()), Some(b"x".to_vec()))]);
        let last = batch_at(3, &[encoded(&offset("g", 0, Some(6)))]);
        let loaded = load_log(&[first.clone(), unknown.clone(), last.clone()]).unwrap();
        assert_eq!(loaded, vec![offset("g", 1, Some(9)), offset("g", 0, Some(6))]);
        // A batch failing its CRC (or decompression) fails the load, naming its offset.
        let mut corrupt = last.clone();
        let n = corrupt.len();
        corrupt[n - 1] ^= 0xff;
        let error = load_log(&[first.clone(), unknown.clone(), corrupt]).unwrap_err();
        assert!(error.contains("batch at offset 3"), "{error}");
        // A record of a known type that does not decode, and a record without key, too.
        let bad = batch_at(2, &[(Some(b"\x00\x01\x00".to_vec()), None)]);
        let error = load_log(&[first.clone(), bad]).unwrap_err();
        assert!(error.contains("record at offset 2"), "{error}");
        let keyless = batch_at(2, &[(None, Some(b"x".to_vec()))]);
        let error = load_log(&[first.clone(), keyless]).unwrap_err();
        assert!(error.contains("offset 2 has no key"), "{error}");
        // A read that stops short of the end fails rather than returning part of the log.
        let error =
            load_from(0, 0, 10, |offset| Ok(if offset == 0 { Bytes::from(first.clone()) } else { Bytes::new() }))
                .unwrap_err();
        assert!(error.contains("offset 2"), "{error}");
    }

    #[tokio::test]
    async fn a_failed_load_stays_in_progress_and_is_retried_later() {
        let b = broker(1, &[]);
        let rm = b.replica_manager.clone();
        rm.apply_metadata(offsets_metadata(1, [0, 0]));
        let link = Arc::new(ControllerLink::new("1@127.0.0.1:1").unwrap());
        let storage = Arc::new(GroupStorage::new(rm, link));
        let (replica, epoch) = storage.led_replica(0).unwrap();
        lock(&storage.shards).insert(0, Shard { leader_epoch: epoch, replica, loaded: false, load_id: 7 });
        finish_load(&storage, 0, 7, Ok(Err("batch at offset 3: CRC mismatch".into())));
        assert!(lock(&storage.shards).is_empty());
        assert_eq!(storage.check_loaded(0), Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS));
        // The watcher does not start it again at once (it reads the whole partition)...
        reconcile(&storage);
        assert!(!lock(&storage.shards).contains_key(&0));
        assert!(lock(&storage.shards).contains_key(&1), "other partitions load");
        assert_eq!(storage.check_loaded(0), Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS));
        // ...but once the retry interval has passed.
        lock(&storage.failed_loads).insert(0, Instant::now() - LOAD_RETRY_EVERY);
        reconcile(&storage);
        assert!(lock(&storage.shards).contains_key(&0));
    }

    #[tokio::test]
    async fn the_partition_count_is_the_one_first_seen() {
        let b = broker(1, &[]);
        let rm = b.replica_manager.clone();
        rm.apply_metadata(offsets_metadata(1, [0, 0]));
        let link = Arc::new(ControllerLink::new("1@127.0.0.1:1").unwrap());
        let storage = Arc::new(GroupStorage::new(rm.clone(), link));
        let group = (0..100).map(|i| format!("g{i}")).find(|g| partition_of(g, 3) != partition_of(g, 2)).unwrap();
        assert_eq!(storage.partition_for(&group), Ok(partition_of(&group, 2)));
        // Partitions added behind the coordinator's back: groups stay where their offsets are.
        rm.apply_metadata(metadata(2, OFFSETS_TOPIC, 3, &[1]));
        assert_eq!(storage.partition_for(&group), Ok(partition_of(&group, 2)));
        reconcile(&storage);
        assert!(!lock(&storage.shards).contains_key(&2), "a partition beyond the count is not loaded");
    }

    #[tokio::test]
    async fn an_append_that_lands_in_another_epoch_reloads_the_partition() {
        let b = broker(1, &[]);
        let rm = b.replica_manager.clone();
        rm.apply_metadata(offsets_metadata(1, [0, -1]));
        let link = Arc::new(ControllerLink::new("1@127.0.0.1:1").unwrap());
        let (_stop_tx, stop) = watch::channel(false);
        let storage = GroupStorage::start(rm.clone(), link, stop);
        let mut events = storage.subscribe();
        assert_eq!(next(&mut events).await, ShardEvent::Loaded { partition: 0, leader_epoch: 0, records: vec![] });
        let stale_load = lock(&storage.shards)[&0].load_id;
        // A record that landed after the load read the log end (an append of an older epoch).
        let mut batch = BatchBuilder::new();
        let (key, value) = records::encode(&offset("g", 0, Some(3))).unwrap();
        batch.push(Some(&key), value.as_deref(), 1);
        let request = ProduceRequest {
            topic_partition: TopicPartition::new(OFFSETS_TOPIC, 0),
            acks: 1,
            timeout_ms: 1000,
            records: batch.build(),
        };
        assert!(matches!(rm.produce_append(request), ProduceAppended::Done(o) if o.error == ErrorCode::NONE));
        storage.reload(0, "test");
        assert_eq!(next(&mut events).await, ShardEvent::Unloaded { partition: 0 });
        let want = vec![offset("g", 0, Some(3))];
        assert_eq!(next(&mut events).await, ShardEvent::Loaded { partition: 0, leader_epoch: 0, records: want });
        // A load started before the reload finishing late is ignored, even at the same epoch.
        lock(&storage.shards).get_mut(&0).unwrap().loaded = false;
        finish_load(&storage, 0, stale_load, Ok(Ok(vec![])));
        assert!(!lock(&storage.shards)[&0].loaded);
    }

    #[tokio::test]
    async fn find_coordinator_errors_say_why() {
        let b = broker(1, &[]);
        let rm = b.replica_manager.clone();
        let link = Arc::new(ControllerLink::new("1@127.0.0.1:1").unwrap());
        let storage = Arc::new(GroupStorage::new(rm.clone(), link));
        let (code, why) = storage.coordinator("g").unwrap_err();
        assert_eq!(code, ErrorCode::COORDINATOR_NOT_AVAILABLE);
        assert!(why.contains("does not exist yet"), "{why}");
        let mut md = offsets_metadata(1, [0, 0]);
        for p in &mut md.topics[0].partitions {
            p.leader = -1;
        }
        rm.apply_metadata(md);
        let (_, why) = storage.coordinator("g").unwrap_err();
        assert!(why.contains("has no leader yet"), "{why}");
        let mut md = offsets_metadata(2, [0, 0]);
        for p in &mut md.topics[0].partitions {
            p.leader = 7;
        }
        rm.apply_metadata(md);
        let (_, why) = storage.coordinator("g").unwrap_err();
        assert!(why.contains("broker 7, is unknown"), "{why}");
    }
}
