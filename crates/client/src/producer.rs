//! The batching, pipelining, idempotent producer (Kafka `KafkaProducer` +
//! `RecordAccumulator` + `Sender`): per partition, records are accumulated into one
//! RecordBatch until `batch_size` bytes or `linger` (Kafka linger.ms / batch.size); up to
//! `max_in_flight` batches ride one ordered ProduceStream to the leader; failures that a
//! metadata refresh can fix are retried within `delivery_timeout` (KIP-91), and with
//! idempotence (KIP-98) a retried batch keeps its sequence numbers so the leader drops
//! duplicates and the order holds.
//!
//! When a batch leaves the queue unacknowledged, the batches behind it are renumbered only
//! once none of them can be in the log: then, as Kafka's idempotent producer does (KIP-360,
//! `TransactionManager.bumpIdempotentProducerEpoch`), the epoch is bumped and the sequences
//! start again at 0. While the failed batch's fate is unknown, the batches behind it keep
//! their sequence numbers, and the leader's answers to them settle it (Kafka's "unresolved
//! sequence"). The window that stays open is described at `PartitionSender::after_front_left`.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use insync_log::batch::BatchBuilder;
use insync_log::Compression;
use insync_proto as pb;
use insync_types::{Acks, ErrorCode};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::backoff::Backoff;
use crate::{retriable_after_metadata_refresh, Appended, ClientError, Cluster, PartitionChoice, ProduceFailure};

/// Producer settings, Kafka-named.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// linger.ms: how long a partition's batch waits for more records.
    pub linger: Duration,
    /// batch.size: a batch is sent once it holds this many bytes.
    pub batch_size: usize,
    /// max.in.flight.requests.per.connection (per partition here).
    pub max_in_flight: usize,
    /// request.timeout.ms: how long the leader may wait for the ISR.
    pub request_timeout: Duration,
    /// delivery.timeout.ms: the retry window of a record, from `send`.
    pub delivery_timeout: Duration,
    /// enable.idempotence: only with acks=all, as Kafka requires.
    pub enable_idempotence: bool,
    /// Records a partition may queue before `send` waits (Kafka buffer.memory, in records).
    pub buffer_records: usize,
    /// compression.type: the codec of each batch's records (none, gzip, snappy, lz4, zstd).
    /// `batch_size` counts the records before compression.
    pub compression: Compression,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 64 * 1024,
            max_in_flight: 5,
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(120),
            enable_idempotence: true,
            buffer_records: 16 * 1024,
            compression: Compression::None,
        }
    }
}

/// Where a record landed. `offset` is -1 for acks=0 (no answer is awaited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordAck {
    pub partition: i32,
    pub offset: i64,
}

/// The answer to one `send`.
pub type RecordResult = Result<RecordAck, ProduceFailure>;

struct Record {
    key: Option<Bytes>,
    value: Option<Bytes>,
    timestamp_ms: i64,
    ack: oneshot::Sender<RecordResult>,
    enqueued: Instant,
}

/// A producer for any number of topics and partitions.
pub struct Producer {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    partitions: Mutex<HashMap<(String, i32), mpsc::Sender<Record>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Producer {
    pub fn new(cluster: Arc<Cluster>, mut config: ProducerConfig) -> Arc<Producer> {
        // Kafka 3.x turns idempotence off when acks is not all and idempotence was not
        // asked for explicitly; here it is simply off for acks 0 and 1.
        config.enable_idempotence &= config.acks == Acks::All;
        config.max_in_flight = config.max_in_flight.clamp(1, 5);
        Arc::new(Producer { cluster, config, partitions: Mutex::new(HashMap::new()), tasks: Mutex::new(Vec::new()) })
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }

    /// Queues one record; the receiver answers once the batch is acknowledged or failed.
    /// Waits when the partition's buffer is full (back-pressure).
    pub async fn send(
        &self,
        topic: &str,
        choice: PartitionChoice,
        key: Option<Bytes>,
        value: Option<Bytes>,
        timestamp_ms: i64,
    ) -> Result<oneshot::Receiver<RecordResult>, ProduceFailure> {
        let partition =
            self.cluster.choose_partition(topic, choice, key.as_deref()).await.map_err(|e| ProduceFailure {
                partition: match choice {
                    PartitionChoice::Explicit(p) => p,
                    PartitionChoice::Auto => -1,
                },
                code: e.code().unwrap_or(ErrorCode::BROKER_NOT_AVAILABLE),
                message: e.to_string(),
                appended: Appended::No,
            })?;
        let sender = self.partition_sender(topic, partition);
        let (ack, rx) = oneshot::channel();
        let record = Record { key, value, timestamp_ms, ack, enqueued: Instant::now() };
        if sender.send(record).await.is_err() {
            return Err(ProduceFailure {
                partition,
                code: ErrorCode::UNKNOWN_SERVER_ERROR,
                message: "producer is closed".into(),
                appended: Appended::No,
            });
        }
        Ok(rx)
    }

    fn partition_sender(&self, topic: &str, partition: i32) -> mpsc::Sender<Record> {
        let mut partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        partitions
            .entry((topic.to_string(), partition))
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(self.config.buffer_records.max(1));
                let sender = PartitionSender::new(self.cluster.clone(), self.config.clone(), topic, partition, rx);
                self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(tokio::spawn(sender.run()));
                tx
            })
            .clone()
    }

    /// Sends everything queued and waits for every answer (Kafka `close()`).
    pub async fn close(&self) {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// One built batch, kept until acknowledged so it can be resent (or rebuilt with new
/// sequence numbers).
struct Batch {
    records: Vec<(Option<Bytes>, Option<Bytes>, i64)>,
    acks: Vec<oneshot::Sender<RecordResult>>,
    first_sequence: i32,
    bytes: Bytes,
    /// When its oldest record was handed to `send` (delivery.timeout.ms counts from there).
    created: Instant,
    /// When it went out on the current stream, if it did.
    sent_at: Option<Instant>,
    /// The correlation id of its latest request: an answer must name it (as Kafka's
    /// `NetworkClient` checks), or it is about some other request.
    correlation_id: u64,
    /// An earlier attempt may have been written (its answer was lost or said appended):
    /// a later definite failure is then reported as appended=unknown, not as "nothing
    /// written".
    maybe_written: bool,
}

struct Connection {
    requests: mpsc::Sender<pb::ProduceRequest>,
    responses: tonic::Streaming<pb::ProduceResponse>,
}

/// How often a sender backing off from a failed leader looks for a new one.
const LEADER_POLL_INTERVAL: Duration = Duration::from_millis(100);

struct PartitionSender {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    topic: String,
    partition: i32,
    input: mpsc::Receiver<Record>,
    input_closed: bool,
    /// Records waiting for the current batch to fill or linger out.
    pending: Vec<Record>,
    pending_bytes: usize,
    linger_deadline: Option<tokio::time::Instant>,
    /// Built, unacknowledged batches in order; the first `sent` are on the current stream.
    queue: VecDeque<Batch>,
    sent: usize,
    connection: Option<Connection>,
    /// Idempotence: producer id (-1 when off), its epoch (bumped instead of reusing
    /// sequence numbers, KIP-360) and the next sequence number.
    producer_id: i64,
    producer_epoch: i16,
    next_sequence: i32,
    backoff: Backoff,
    retry_at: Option<Instant>,
    last_error: Option<ProduceFailure>,
    correlation_id: u64,
    /// The broker the current stream goes to, and the one the last failed stream went to:
    /// while backing off from a failure, metadata is polled, and a new leader cuts the
    /// backoff short.
    connected_leader: Option<i32>,
    failed_leader: Option<i32>,
    /// When to look for a new leader next (a deadline, so that records arriving meanwhile
    /// do not keep postponing it).
    leader_poll_at: Option<tokio::time::Instant>,
}

impl PartitionSender {
    fn new(
        cluster: Arc<Cluster>,
        config: ProducerConfig,
        topic: &str,
        partition: i32,
        input: mpsc::Receiver<Record>,
    ) -> Self {
        PartitionSender {
            cluster,
            config,
            topic: topic.to_string(),
            partition,
            input,
            input_closed: false,
            pending: Vec::new(),
            pending_bytes: 0,
            linger_deadline: None,
            queue: VecDeque::new(),
            sent: 0,
            connection: None,
            producer_id: -1,
            producer_epoch: 0,
            next_sequence: 0,
            backoff: Backoff::new(),
            retry_at: None,
            last_error: None,
            correlation_id: 0,
            connected_leader: None,
            failed_leader: None,
            leader_poll_at: None,
        }
    }

    fn failure(&self, code: ErrorCode, message: String, appended: Appended) -> ProduceFailure {
        ProduceFailure { partition: self.partition, code, message, appended }
    }

    async fn run(mut self) {
        loop {
            if self.input_closed && self.pending.is_empty() && self.queue.is_empty() {
                return;
            }
            self.expire_batches();
            if self.queue.len() > self.sent && self.connection.is_none() {
                if let Err(f) = self.connect().await {
                    self.note_retriable(f);
                }
            }
            self.send_ready().await;
            let can_accept = !self.input_closed && self.queue.len() <= self.config.max_in_flight;
            let linger = self.linger_deadline;
            let waiting_response = self.sent > 0 && self.connection.is_some();
            let response_deadline = self.response_deadline();
            let retry_at = self.retry_at.map(tokio::time::Instant::from_std);
            tokio::select! {
                record = self.input.recv(), if can_accept => match record {
                    Some(record) => self.add(record),
                    None => {
                        self.input_closed = true;
                        self.seal();
                    }
                },
                _ = sleep_until_opt(linger), if linger.is_some() => self.seal(),
                response = next_response(&mut self.connection), if waiting_response => self.on_response(response).await,
                _ = sleep_until_opt(response_deadline), if waiting_response => {
                    let f = self.failure(
                        ErrorCode::NETWORK_EXCEPTION,
                        "no answer within request.timeout.ms".into(),
                        Appended::Unknown,
                    );
                    self.note_retriable(f);
                }
                _ = sleep_until_opt(retry_at), if retry_at.is_some() && self.connection.is_none() => {
                    self.retry_at = None;
                }
                _ = sleep_until_opt(self.leader_poll_at),
                    if retry_at.is_some() && self.connection.is_none() && self.failed_leader.is_some() =>
                {
                    if self.leader_moved().await {
                        self.retry_at = None;
                        self.leader_poll_at = None;
                    } else {
                        self.leader_poll_at = Some(tokio::time::Instant::now() + LEADER_POLL_INTERVAL);
                    }
                }
            }
        }
    }

    fn response_deadline(&self) -> Option<tokio::time::Instant> {
        let front = self.queue.front()?.sent_at?;
        Some(tokio::time::Instant::from_std(front + self.config.request_timeout + Duration::from_secs(5)))
    }

    fn add(&mut self, record: Record) {
        let size = record.key.as_ref().map_or(0, |k| k.len()) + record.value.as_ref().map_or(0, |v| v.len()) + 24;
        if self.pending.is_empty() {
            self.linger_deadline = Some(tokio::time::Instant::now() + self.config.linger);
        }
        self.pending_bytes += size;
        self.pending.push(record);
        if self.pending_bytes >= self.config.batch_size || self.config.linger.is_zero() {
            self.seal();
        }
    }

    /// Turns the pending records into a batch (Kafka `RecordAccumulator.drain`).
    fn seal(&mut self) {
        self.linger_deadline = None;
        if self.pending.is_empty() {
            return;
        }
        let created = self.pending.iter().map(|r| r.enqueued).min().unwrap_or_else(Instant::now);
        let mut records = Vec::with_capacity(self.pending.len());
        let mut acks = Vec::with_capacity(self.pending.len());
        for r in self.pending.drain(..) {
            records.push((r.key, r.value, r.timestamp_ms));
            acks.push(r.ack);
        }
        self.pending_bytes = 0;
        let first_sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(records.len() as i32);
        let bytes = build(&records, self.producer_id, self.producer_epoch, first_sequence, self.config.compression);
        self.queue.push_back(Batch {
            records,
            acks,
            first_sequence,
            bytes,
            created,
            sent_at: None,
            correlation_id: 0,
            maybe_written: false,
        });
    }

    async fn connect(&mut self) -> Result<(), ProduceFailure> {
        if let Some(at) = self.retry_at {
            if Instant::now() < at {
                return Ok(()); // backing off; the select waits for retry_at
            }
        }
        if self.config.enable_idempotence && self.producer_id < 0 {
            let (id, epoch) = self.init_producer_id().await?;
            self.producer_id = id;
            self.producer_epoch = epoch;
            self.resequence_from(0);
        }
        let refresh = self.last_error.is_some();
        let metadata = if refresh { self.cluster.refresh_metadata().await } else { self.cluster.metadata().await };
        let metadata =
            metadata.map_err(|e| self.failure(ErrorCode::BROKER_NOT_AVAILABLE, e.to_string(), Appended::No))?;
        let (leader, address) = match Cluster::leader_of(&metadata, &self.topic, self.partition) {
            Ok(l) => l,
            Err(ClientError::Kafka { code, message }) => return Err(self.failure(code, message, Appended::No)),
            Err(e) => return Err(self.failure(ErrorCode::BROKER_NOT_AVAILABLE, e.to_string(), Appended::No)),
        };
        // A leader that cannot be reached is a failed leader too: look for its successor.
        let mut client = self.cluster.broker(&address).await.map_err(|e| {
            self.failed_leader = Some(leader);
            self.failure(ErrorCode::BROKER_NOT_AVAILABLE, e.to_string(), Appended::No)
        })?;
        let (requests, rx) = mpsc::channel(self.config.max_in_flight + 1);
        let responses = match client.produce_stream(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                self.failed_leader = Some(leader);
                return Err(self.failure(ErrorCode::NETWORK_EXCEPTION, s.to_string(), Appended::No));
            }
        };
        self.connection = Some(Connection { requests, responses });
        self.connected_leader = Some(leader);
        self.sent = 0;
        for batch in &mut self.queue {
            batch.sent_at = None;
        }
        Ok(())
    }

    /// A new producer id and its epoch (Kafka InitProducerId).
    async fn init_producer_id(&self) -> Result<(i64, i16), ProduceFailure> {
        let metadata = self
            .cluster
            .metadata()
            .await
            .map_err(|e| self.failure(ErrorCode::BROKER_NOT_AVAILABLE, e.to_string(), Appended::No))?;
        let mut last = String::from("no broker");
        for broker in metadata.brokers.iter().filter(|b| !b.fenced) {
            let Ok(mut client) = self.cluster.broker(&broker.address).await else { continue };
            match client.init_producer_id(pb::InitProducerIdRequest {}).await {
                Ok(r) => {
                    let r = r.into_inner();
                    // A negative id is "no producer id": batches built with it would not be
                    // deduplicated, so it is an error, not idempotence quietly off.
                    if r.error_code == 0 && r.producer_id >= 0 {
                        // An epoch out of i16's range is no epoch a batch can carry; start at 0.
                        let epoch = i16::try_from(r.producer_epoch).ok().filter(|e| *e >= 0).unwrap_or(0);
                        return Ok((r.producer_id, epoch));
                    }
                    last = if r.error_code == 0 {
                        format!("producer id {} from broker {}", r.producer_id, broker.id)
                    } else {
                        format!("{}: {}", ErrorCode::from_code(r.error_code), r.error_message)
                    };
                }
                Err(s) => last = s.to_string(),
            }
        }
        Err(self.failure(ErrorCode::BROKER_NOT_AVAILABLE, format!("no producer id: {last}"), Appended::No))
    }

    /// Puts batches on the stream, at most `max_in_flight` unanswered.
    async fn send_ready(&mut self) {
        while self.connection.is_some() && self.sent < self.queue.len().min(self.config.max_in_flight) {
            let batch = &mut self.queue[self.sent];
            self.correlation_id += 1;
            let request = pb::ProduceRequest {
                topic: self.topic.clone(),
                partition: self.partition,
                acks: self.config.acks.to_wire(),
                timeout_ms: self.config.request_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
                records: batch.bytes.clone(),
                correlation_id: self.correlation_id,
            };
            batch.sent_at = Some(Instant::now());
            batch.correlation_id = self.correlation_id;
            let connection = self.connection.as_ref().expect("checked");
            if connection.requests.send(request).await.is_err() {
                let f = self.failure(ErrorCode::NETWORK_EXCEPTION, "stream closed".into(), Appended::Unknown);
                self.note_retriable(f);
                return;
            }
            self.sent += 1;
            if self.config.acks == Acks::None {
                // acks=0: done once sent (the answer, if any, is only drained).
                let batch = &mut self.queue[self.sent - 1];
                for ack in batch.acks.drain(..) {
                    let _ = ack.send(Ok(RecordAck { partition: self.partition, offset: -1 }));
                }
            }
        }
    }

    async fn on_response(&mut self, response: Result<Option<pb::ProduceResponse>, tonic::Status>) {
        let response = match response {
            Ok(Some(r)) => r,
            Ok(None) => {
                let f = self.failure(ErrorCode::NETWORK_EXCEPTION, "stream ended".into(), Appended::Unknown);
                return self.note_retriable(f);
            }
            Err(status) => {
                let f = self.failure(ErrorCode::NETWORK_EXCEPTION, status.to_string(), Appended::Unknown);
                return self.note_retriable(f);
            }
        };
        let code = ErrorCode::from_code(response.error_code);
        let appended = if response.appended { Appended::Yes } else { Appended::No };
        // Answers come in request order; one naming another request is a broker fault, and
        // crediting it to the front batch could acknowledge records never written.
        let expected = self.queue.front().filter(|_| self.sent > 0).map(|b| b.correlation_id);
        if expected != Some(response.correlation_id) {
            let message = format!("an answer to request {} where {expected:?} was due", response.correlation_id);
            let f = self.failure(ErrorCode::NETWORK_EXCEPTION, message, Appended::Unknown);
            return self.note_retriable(f);
        }
        match code {
            ErrorCode::NONE => {
                let Some(batch) = self.take_front() else { return };
                self.backoff.reset();
                self.last_error = None;
                for (i, ack) in batch.acks.into_iter().enumerate() {
                    // A base offset this close to i64::MAX is no real log's: -1, as for acks=0.
                    let offset = response.base_offset.checked_add(i as i64).unwrap_or(-1);
                    let _ = ack.send(Ok(RecordAck { partition: self.partition, offset }));
                }
            }
            // Kafka's InvalidMetadataExceptions: this broker does not lead the partition (or,
            // just restarted, does not know it yet). Nothing was appended; refresh and retry.
            code if retriable_after_metadata_refresh(code) => {
                let f = self.failure(code, response.error_message, appended);
                self.note_retriable(f);
            }
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER if self.config.enable_idempotence => {
                self.on_out_of_order(response.error_message);
            }
            _ => self.on_front_failed(code, response.error_message, appended),
        }
    }

    /// The sent front batch, taken off the queue as answered.
    fn take_front(&mut self) -> Option<Batch> {
        let batch = self.queue.pop_front()?;
        self.sent = self.sent.saturating_sub(1);
        Some(batch)
    }

    /// A definite or indeterminate failure of the front batch: report it to the caller.
    fn on_front_failed(&mut self, code: ErrorCode, message: String, appended: Appended) {
        let Some(batch) = self.take_front() else { return };
        let fate = fate(appended, batch.maybe_written);
        let message = match fate {
            Appended::Unknown => format!("{message} (an earlier attempt may have been written: {FATE_UNKNOWN})"),
            _ => message,
        };
        let f = self.failure(code, message, fate);
        for ack in batch.acks {
            let _ = ack.send(Err(f.clone()));
        }
        self.after_front_left(fate);
    }

    /// The leader refused the front batch as OUT_OF_ORDER_SEQUENCE_NUMBER: its sequence does
    /// not follow the last batch of ours the leader holds. So it is not in the leader's log
    /// (a copy would be answered as a duplicate: the front batch is always among the 5 newest
    /// the leader remembers), and neither is any batch behind it, whose sequences come after
    /// its own. Either a batch before it whose fate was unknown was not written after all
    /// (the unresolved sequence resolves this way) or the leader lost an acknowledged batch.
    /// Kafka's idempotent producer then bumps the epoch and retries (KIP-360,
    /// `TransactionManager.canRetry` / `handleFailedBatch`); so does this one.
    fn on_out_of_order(&mut self, message: String) {
        tracing::warn!(
            "{}-{}: leader answered OUT_OF_ORDER_SEQUENCE_NUMBER; bumping the epoch of producer {}",
            self.topic,
            self.partition,
            self.producer_id
        );
        let f = self.failure(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER, message, Appended::No);
        self.note_retriable(f);
        self.bump_epoch();
    }

    /// After the front batch left the queue unacknowledged (failed to the caller, or
    /// expired), with `fate` saying whether it may be in the log: what the batches behind
    /// it do with their sequence numbers (Kafka `TransactionManager.handleFailedBatch`,
    /// `markSequenceUnresolved`, `maybeResolveSequences`, KIP-360).
    ///
    /// - Not written: the leader takes a producer's sequences only in order, so no batch
    ///   behind it can be in the log either. Its sequence numbers are not reused (a late
    ///   copy of an old attempt could match them); the epoch is bumped and everything
    ///   queued renumbered from 0, on a fresh stream.
    /// - Written or unknown: the batches behind it keep producer id, epoch, sequence numbers
    ///   and stream. They may already be in the log (sent before, answers lost), so they
    ///   must not go out under a new id or epoch until that is known; their answers tell:
    ///   an acknowledgement (or duplicate) means the failed batch was written, and
    ///   OUT_OF_ORDER_SEQUENCE_NUMBER that it was not ([`Self::on_out_of_order`] then
    ///   bumps the epoch, every batch queued being provably unwritten).
    ///
    /// The window that remains: a batch failed with appended=unknown may or may not be in
    /// the log, and may still land later from an attempt the producer has given up on; the
    /// caller decides (Kafka's TimeoutException is as vague). The resolution trusts
    /// OUT_OF_ORDER_SEQUENCE_NUMBER to mean "not in the log": a deposed leader that has
    /// not yet learned of its successor, or an old attempt still queued inside a broker
    /// and appended after that answer, could make a renumbered batch a duplicate. Once a
    /// batch of the new epoch is in the leader's log, the broker refuses older epochs
    /// (INVALID_PRODUCER_EPOCH), which a new producer id would not.
    fn after_front_left(&mut self, fate: Appended) {
        if !self.config.enable_idempotence {
            return;
        }
        match fate {
            Appended::No => self.bump_epoch(),
            Appended::Yes | Appended::Unknown => tracing::debug!(
                "{}-{}: a failed batch may be in the log; the batches behind it keep their sequence numbers",
                self.topic,
                self.partition
            ),
        }
    }

    /// Starts the sequences again at 0 under the next epoch of the same producer id (Kafka
    /// `TransactionManager.bumpIdempotentProducerEpoch`, KIP-360), or under a new producer
    /// id when the epoch would overflow, as Kafka does. Only for when no queued batch can
    /// be in the log: all are renumbered, count as never sent, and go out on a new stream.
    fn bump_epoch(&mut self) {
        if self.producer_epoch == i16::MAX {
            self.producer_id = -1; // `connect` asks for a new id and renumbers
            self.producer_epoch = 0;
        } else {
            self.producer_epoch += 1;
        }
        for batch in &mut self.queue {
            batch.maybe_written = false;
        }
        self.resequence_from(0);
        self.connection = None;
        self.sent = 0;
    }

    /// Renumbers every queued batch from `first_sequence` (rebuilding its bytes).
    fn resequence_from(&mut self, first_sequence: i32) {
        let mut sequence = first_sequence;
        for batch in &mut self.queue {
            batch.first_sequence = sequence;
            batch.bytes =
                build(&batch.records, self.producer_id, self.producer_epoch, sequence, self.config.compression);
            sequence = sequence.wrapping_add(batch.records.len() as i32);
        }
        self.next_sequence = sequence;
    }

    /// While backing off: whether fresh metadata names a leader other than the one that
    /// failed (the controller has elected one), so the retry need not wait out the backoff.
    /// Kafka's producer waits the backoff out; after a leader's session timeout that wait
    /// (up to retry.backoff.max.ms) was most of the time between a new leader and the first
    /// acknowledged write.
    async fn leader_moved(&mut self) -> bool {
        let refreshed =
            tokio::time::timeout(LEADER_POLL_INTERVAL * 3, self.cluster.recent_metadata(LEADER_POLL_INTERVAL / 2))
                .await;
        let Ok(Ok(metadata)) = refreshed else { return false };
        match Cluster::leader_of(&metadata, &self.topic, self.partition) {
            Ok((leader, _)) if Some(leader) != self.failed_leader => {
                tracing::debug!(
                    "{}-{}: leader moved from {:?} to {leader}; retrying now",
                    self.topic,
                    self.partition,
                    self.failed_leader
                );
                self.failed_leader = None;
                true
            }
            _ => false,
        }
    }

    /// Drops the stream and schedules a retry with exponential backoff (KIP-580).
    fn note_retriable(&mut self, failure: ProduceFailure) {
        tracing::debug!("{}-{}: {failure}; retrying in {:?}", self.topic, self.partition, self.backoff.current());
        if self.config.acks == Acks::None {
            // acks=0 never retries what it sent: the user was told "sent" already.
            self.queue.drain(..self.sent.min(self.queue.len()));
        } else {
            // The answer was about the front batch; the others on the dropped stream have
            // unknown fates.
            let sent = self.sent.min(self.queue.len());
            let front_written = failure.appended != Appended::No;
            for (i, batch) in self.queue.iter_mut().take(sent).enumerate() {
                batch.maybe_written |= i > 0 || front_written;
            }
        }
        self.connection = None;
        if let Some(leader) = self.connected_leader.take() {
            self.failed_leader = Some(leader);
        }
        self.leader_poll_at = Some(tokio::time::Instant::now() + LEADER_POLL_INTERVAL);
        self.sent = 0;
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
        self.last_error = Some(failure);
    }

    /// Fails batches whose delivery.timeout.ms has passed while they waited to be retried.
    /// One that may have been written is failed as appended=unknown and leaves the sequences
    /// behind it as they are ([`Self::after_front_left`]; Kafka `Sender` marks such a batch's
    /// sequence unresolved rather than renumbering what follows it).
    fn expire_batches(&mut self) {
        if self.connection.is_some() {
            return;
        }
        while self.queue.front().is_some_and(|b| b.created.elapsed() >= self.config.delivery_timeout) {
            let Some(batch) = self.queue.pop_front() else { break };
            let last = self.last_error.clone().unwrap_or_else(|| {
                self.failure(ErrorCode::REQUEST_TIMED_OUT, "delivery.timeout.ms expired".into(), Appended::No)
            });
            // Only an attempt whose answer was lost or said appended can have written it
            // (`maybe_written`); `last` may be about another batch, so it cannot say more.
            let fate = if batch.maybe_written { Appended::Unknown } else { Appended::No };
            let unknown = if fate == Appended::Unknown { format!("; {FATE_UNKNOWN}") } else { String::new() };
            let f = ProduceFailure {
                message: format!("delivery.timeout.ms expired after retries{unknown}; last error: {}", last.message),
                appended: fate,
                ..last
            };
            for ack in batch.acks {
                let _ = ack.send(Err(f.clone()));
            }
            self.after_front_left(fate);
        }
    }
}

/// Said of a batch failed while an attempt of it may be in the log.
const FATE_UNKNOWN: &str =
    "an attempt may have been written, so whether these records are in the log is unknown; they are not sent again";

/// Whether a batch that leaves the queue unacknowledged may be in the log: what its last
/// attempt's answer said, unless that was "not written" and an earlier attempt's answer
/// was lost.
fn fate(last_attempt: Appended, maybe_written: bool) -> Appended {
    if maybe_written && last_attempt == Appended::No {
        Appended::Unknown
    } else {
        last_attempt
    }
}

fn build(
    records: &[(Option<Bytes>, Option<Bytes>, i64)],
    producer_id: i64,
    producer_epoch: i16,
    first_sequence: i32,
    compression: Compression,
) -> Bytes {
    let mut builder = BatchBuilder::new().compression(compression);
    if producer_id >= 0 {
        builder = builder.producer(producer_id, producer_epoch, first_sequence);
    }
    for (key, value, timestamp_ms) in records {
        builder.push(key.as_deref(), value.as_deref(), *timestamp_ms);
    }
    builder.build()
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn next_response(connection: &mut Option<Connection>) -> Result<Option<pb::ProduceResponse>, tonic::Status> {
    match connection {
        Some(c) => c.responses.message().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
