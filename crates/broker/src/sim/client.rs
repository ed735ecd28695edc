//! The client: one idempotent producer (KIP-98; one producer id, epoch 0) writing acks=all
//! batches of one record with a distinct value to each partition, to whichever broker the
//! latest metadata it has seen names as leader (possibly stale). Like Kafka's
//! `Sender`/`RecordAccumulator` with `enable.idempotence`, it keeps up to
//! `max.in.flight.requests.per.connection` batches in flight per partition and retries a
//! batch with the same sequence on every retriable error or timeout, across leader changes,
//! until it is acknowledged; it never gives a sequence up, so the broker's deduplication is
//! what keeps a retried batch from being written twice.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use insync_log::BatchBuilder;
use insync_proto as pb;
use insync_types::{BrokerId, ErrorCode, Offset, TopicPartition, NO_BROKER};

use super::controller::TOPIC;
use super::effects::{ClientTimer, Io, Target, Timer};
use super::network::{Address, Endpoint, Message};
use super::timing;
use crate::messages::ProduceOutcome;

pub const PRODUCER_ID: i64 = 4242;
const PRODUCER_EPOCH: i16 = 0;

/// A batch not yet acknowledged.
#[derive(Debug)]
struct Pending {
    value: u64,
    records: Bytes,
    /// The attempt whose answer counts (None: waiting to be sent again).
    attempt: Option<u64>,
    /// Every broker an attempt went to.
    brokers: BTreeSet<BrokerId>,
    last_broker: Option<BrokerId>,
}

#[derive(Debug)]
pub struct PartitionProducer {
    pub topic_partition: TopicPartition,
    next_sequence: i32,
    pending: BTreeMap<i32, Pending>,
    /// Acknowledged sequences: their value and offset.
    pub acked: BTreeMap<i32, (u64, Offset)>,
    /// Sequences whose own answer never came but a later sequence was acknowledged: the
    /// leader appends a sequence only right after the previous one, so they are below the
    /// HW too (Kafka's producer learns the same from its in-order answers).
    pub implied: BTreeMap<i32, u64>,
}

#[derive(Debug)]
pub struct Producer {
    me: Address,
    metadata: Arc<pb::ClusterMetadata>,
    pub partitions: Vec<PartitionProducer>,
    producing: bool,
    max_in_flight: usize,
    produce_every_ms: u64,
}

/// The distinct value of a batch: its partition and sequence.
pub fn batch_value(partition: i32, sequence: i32) -> u64 {
    (u64::from(partition as u32) << 32) | u64::from(sequence as u32)
}

impl Producer {
    pub fn new(partitions: i32, max_in_flight: usize, produce_every_ms: u64) -> Producer {
        let partitions = (0..partitions)
            .map(|p| PartitionProducer {
                topic_partition: TopicPartition::new(TOPIC, p),
                next_sequence: 0,
                pending: BTreeMap::new(),
                acked: BTreeMap::new(),
                implied: BTreeMap::new(),
            })
            .collect();
        Producer {
            me: Address { endpoint: Endpoint::Client, incarnation: 0 },
            metadata: Arc::new(pb::ClusterMetadata::default()),
            partitions,
            producing: true,
            max_in_flight,
            produce_every_ms,
        }
    }

    pub fn start(&self, io: &mut Io) {
        io.after(self.produce_every_ms, Timer::Client(ClientTimer::Produce));
    }

    /// No new batches from now on; the unacknowledged ones are still retried.
    pub fn stop_producing(&mut self) {
        self.producing = false;
    }

    pub fn unacknowledged(&self) -> usize {
        self.partitions.iter().map(|p| p.pending.len()).sum()
    }

    /// Every value the producer ever created, by partition.
    pub fn created(&self, partition: i32) -> BTreeSet<u64> {
        let p = &self.partitions[partition as usize];
        (0..p.next_sequence).map(|s| batch_value(partition, s)).collect()
    }

    pub fn handle(&mut self, message: Message, io: &mut Io) {
        match message {
            Message::Metadata(metadata) if metadata.version >= self.metadata.version => self.metadata = metadata,
            Message::Metadata(_) => {}
            Message::ProduceAnswer { attempt, topic_partition, sequence, outcome } => {
                self.on_answer(attempt, topic_partition.partition, sequence, outcome, io)
            }
            other => io.anomaly(format!("the client got a message meant for others: {}", other.describe())),
        }
    }

    pub fn on_timer(&mut self, timer: ClientTimer, io: &mut Io) {
        match timer {
            ClientTimer::Produce => {
                if self.producing {
                    for partition in 0..self.partitions.len() as i32 {
                        self.fill_in_flight(partition, io);
                    }
                    io.after(self.produce_every_ms, Timer::Client(ClientTimer::Produce));
                }
            }
            ClientTimer::RequestTimeout { partition, sequence, attempt } => {
                let Some(pending) = self.pending_mut(partition, sequence) else { return };
                if pending.attempt == Some(attempt) {
                    // request.timeout.ms: the connection is dropped with the answer.
                    pending.attempt = None;
                    io.coverage.bump("produce_client_timeout");
                    self.send(partition, sequence, io);
                }
            }
            ClientTimer::Retry { partition, sequence } => {
                if self.pending_mut(partition, sequence).is_some_and(|p| p.attempt.is_none()) {
                    self.send(partition, sequence, io);
                }
            }
        }
    }

    fn pending_mut(&mut self, partition: i32, sequence: i32) -> Option<&mut Pending> {
        self.partitions.get_mut(partition as usize)?.pending.get_mut(&sequence)
    }

    /// New batches, up to max.in.flight per partition.
    fn fill_in_flight(&mut self, partition: i32, io: &mut Io) {
        loop {
            let p = &mut self.partitions[partition as usize];
            if p.pending.len() >= self.max_in_flight {
                return;
            }
            let sequence = p.next_sequence;
            p.next_sequence += 1;
            let value = batch_value(partition, sequence);
            let mut builder = BatchBuilder::with_capacity(128).producer(PRODUCER_ID, PRODUCER_EPOCH, sequence);
            builder.push(None, Some(&value.to_be_bytes()), 1_700_000_000_000 + i64::from(sequence));
            let pending =
                Pending { value, records: builder.build(), attempt: None, brokers: BTreeSet::new(), last_broker: None };
            p.pending.insert(sequence, pending);
            self.send(partition, sequence, io);
        }
    }

    /// Sends (or re-sends) a batch to the believed leader, or waits for metadata.
    fn send(&mut self, partition: i32, sequence: i32, io: &mut Io) {
        let leader = self.leader_of(partition);
        let me = self.me;
        let p = &mut self.partitions[partition as usize];
        let tp = p.topic_partition.clone();
        let Some(pending) = p.pending.get_mut(&sequence) else { return };
        if leader == NO_BROKER {
            io.after(timing::CLIENT_RETRY_BACKOFF_MS, Timer::Client(ClientTimer::Retry { partition, sequence }));
            return;
        }
        if let Some(previous) = pending.last_broker {
            io.coverage.bump(if previous == leader { "produce_retry_same_broker" } else { "produce_retry_new_broker" });
        }
        let attempt = io.next_id();
        pending.attempt = Some(attempt);
        pending.brokers.insert(leader);
        pending.last_broker = Some(leader);
        let message = Message::Produce {
            attempt,
            topic_partition: tp,
            sequence,
            value: pending.value,
            records: pending.records.clone(),
        };
        io.send(me, Target::Current(Endpoint::Broker(leader)), message);
        let timeout = ClientTimer::RequestTimeout { partition, sequence, attempt };
        io.after(timing::CLIENT_REQUEST_TIMEOUT_MS, Timer::Client(timeout));
    }

    fn leader_of(&self, partition: i32) -> BrokerId {
        let topic = self.metadata.topics.iter().find(|t| t.name == TOPIC);
        let p = topic.and_then(|t| t.partitions.iter().find(|p| p.partition == partition));
        p.map_or(NO_BROKER, |p| p.leader)
    }

    fn on_answer(&mut self, attempt: u64, partition: i32, sequence: i32, outcome: ProduceOutcome, io: &mut Io) {
        let earlier_pending = self.partitions[partition as usize].pending.range(..sequence).next().is_some();
        let Some(pending) = self.pending_mut(partition, sequence).filter(|p| p.attempt == Some(attempt)) else {
            io.coverage.bump("produce_answer_discarded");
            return;
        };
        match outcome.error {
            ErrorCode::NONE => {
                if pending.brokers.len() > 1 {
                    io.coverage.bump("produce_acked_after_leader_change");
                }
                let p = &mut self.partitions[partition as usize];
                let value = p.pending.remove(&sequence).map_or(0, |p| p.value);
                p.acked.insert(sequence, (value, outcome.base_offset));
                io.coverage.bump("produce_acked");
                let earlier: Vec<i32> = p.pending.range(..sequence).map(|(s, _)| *s).collect();
                for s in earlier {
                    if let Some(pending) = p.pending.remove(&s) {
                        io.coverage.bump("produce_implied_by_later_ack");
                        p.implied.insert(s, pending.value);
                    }
                }
            }
            ErrorCode::NOT_LEADER_OR_FOLLOWER
            | ErrorCode::REQUEST_TIMED_OUT
            | ErrorCode::NOT_ENOUGH_REPLICAS
            | ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND
            | ErrorCode::UNKNOWN_TOPIC_OR_PARTITION => self.retry_later(partition, sequence, outcome.error, io),
            // The leader had not got an earlier batch when it checked this one: the network
            // reordered them, one is being retried, or the broker asked is a deposed leader
            // that never got it. Kafka's producer retries when the batch is not the next
            // after the last acknowledged one (`TransactionManager.canRetry`); its answers come
            // in order, ours may not, so this one retries always. A leader that lacked an
            // acknowledged batch for good would make the run fail to converge.
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER => {
                if !earlier_pending {
                    io.coverage.bump("produce_out_of_order_after_earlier_acked");
                }
                self.retry_later(partition, sequence, outcome.error, io)
            }
            other => io.anomaly(format!(
                "produce of p{partition} seq {sequence} answered {other} ({}), which no correct run gives",
                outcome.message
            )),
        }
    }

    fn retry_later(&mut self, partition: i32, sequence: i32, error: ErrorCode, io: &mut Io) {
        io.coverage.bump(&format!("produce_answer_{}", error.name()));
        if let Some(pending) = self.pending_mut(partition, sequence) {
            pending.attempt = None;
        }
        io.after(timing::CLIENT_RETRY_BACKOFF_MS, Timer::Client(ClientTimer::Retry { partition, sequence }));
    }
}
