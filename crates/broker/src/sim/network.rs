//! The simulated network between the brokers, the controller and the client: every message
//! the real processes exchange over gRPC (follower Fetch, AlterPartition, registration and
//! heartbeats, the metadata feed, Produce), each delivered after a seeded delay, or dropped,
//! duplicated or overtaken by a later one. Cut links and isolated endpoints drop everything.
//! A message to a broker is addressed to one incarnation of it: the connection dies with the
//! process, so nothing sent to a crashed broker reaches its restarted self.
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use insync_proto as pb;
use insync_types::{BrokerId, ErrorCode, TopicPartition};

use super::rng::Rng;
use crate::messages::{FetchPartition, FetchPartitionResponse, ProduceOutcome};

/// Who a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    Controller,
    Broker(BrokerId),
    Client,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Controller => write!(f, "ctl"),
            Endpoint::Broker(id) => write!(f, "b{id}"),
            Endpoint::Client => write!(f, "client"),
        }
    }
}

/// An endpoint and the incarnation of its process (0 for the controller and the client,
/// which never restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Address {
    pub endpoint: Endpoint,
    pub incarnation: u64,
}

/// What travels between the processes: the requests and answers of the real RPCs, in the
/// broker's own types (`messages.rs`) or the controller's protobuf ones.
#[derive(Debug, Clone)]
pub enum Message {
    Register { broker: BrokerId, incarnation: u64 },
    RegisterAnswer { error: ErrorCode, broker_epoch: i64 },
    Heartbeat { broker: BrokerId, incarnation: u64 },
    HeartbeatAnswer { error: ErrorCode, fenced: bool },
    AlterPartition { attempt: u64, request: pb::AlterPartitionRequest },
    AlterPartitionAnswer { attempt: u64, result: Result<pb::PartitionMetadata, (ErrorCode, String)> },
    Metadata(Arc<pb::ClusterMetadata>),
    Fetch { fetch_id: u64, replica_id: BrokerId, broker_epoch: i64, max_bytes: usize, partitions: Vec<FetchPartition> },
    FetchAnswer { fetch_id: u64, partitions: Vec<FetchPartitionResponse> },
    Produce { attempt: u64, topic_partition: TopicPartition, sequence: i32, value: u64, records: Bytes },
    ProduceAnswer { attempt: u64, topic_partition: TopicPartition, sequence: i32, outcome: ProduceOutcome },
}

impl Message {
    /// One short line for the failure trace.
    pub fn describe(&self) -> String {
        match self {
            Message::Register { broker, incarnation } => format!("Register b{broker} inc {incarnation}"),
            Message::RegisterAnswer { error, broker_epoch } => format!("RegisterAnswer {error} epoch {broker_epoch}"),
            Message::Heartbeat { broker, .. } => format!("Heartbeat b{broker}"),
            Message::HeartbeatAnswer { error, fenced } => format!("HeartbeatAnswer {error} fenced={fenced}"),
            Message::AlterPartition { attempt, request: r } => format!(
                "AlterPartition #{attempt} p{} le {} pe {} isr {:?} broker epochs {:?}",
                r.partition,
                r.leader_epoch,
                r.partition_epoch,
                r.new_isr,
                r.new_isr_broker_epochs.iter().map(|m| (m.broker_id, m.broker_epoch)).collect::<Vec<_>>()
            ),
            Message::AlterPartitionAnswer { attempt, result } => match result {
                Ok(p) => format!("AlterPartitionAnswer #{attempt} ok pe {} isr {:?}", p.partition_epoch, p.isr),
                Err((code, _)) => format!("AlterPartitionAnswer #{attempt} {code}"),
            },
            Message::Metadata(m) => describe_metadata(m),
            Message::Fetch { fetch_id, replica_id, partitions, .. } => {
                let parts: Vec<String> = partitions
                    .iter()
                    .map(|p| {
                        format!(
                            "p{}@{} cle {} lfe {}",
                            p.topic_partition.partition, p.fetch_offset, p.current_leader_epoch, p.last_fetched_epoch
                        )
                    })
                    .collect();
                format!("Fetch #{fetch_id} from b{replica_id} [{}]", parts.join(", "))
            }
            Message::FetchAnswer { fetch_id, partitions } => {
                let parts: Vec<String> = partitions.iter().map(describe_fetch_answer).collect();
                format!("FetchAnswer #{fetch_id} [{}]", parts.join(", "))
            }
            Message::Produce { attempt, topic_partition, sequence, .. } => {
                format!("Produce #{attempt} p{} seq {sequence}", topic_partition.partition)
            }
            Message::ProduceAnswer { attempt, topic_partition, sequence, outcome } => format!(
                "ProduceAnswer #{attempt} p{} seq {sequence}: {} offset {}",
                topic_partition.partition, outcome.error, outcome.base_offset
            ),
        }
    }
}

fn describe_metadata(m: &pb::ClusterMetadata) -> String {
    let brokers: Vec<String> =
        m.brokers.iter().map(|b| format!("b{}{}", b.id, if b.fenced { "(fenced)" } else { "" })).collect();
    let partitions: Vec<String> = m
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            format!(
                "p{} leader {} le {} pe {} isr {:?}",
                p.partition, p.leader, p.leader_epoch, p.partition_epoch, p.isr
            )
        })
        .collect();
    format!("Metadata v{} [{}] [{}]", m.version, brokers.join(" "), partitions.join("; "))
}

fn describe_fetch_answer(p: &FetchPartitionResponse) -> String {
    let divergence = p.diverging_epoch.map(|d| format!(" diverging {}@{}", d.epoch, d.end_offset)).unwrap_or_default();
    format!(
        "p{} {} hw {} leo {} {}B{divergence}",
        p.topic_partition.partition,
        p.error,
        p.high_watermark,
        p.log_end_offset,
        p.records.len()
    )
}

/// A message on the wire.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub from: Address,
    pub to: Address,
    pub message: Message,
}

/// How unreliable the network is in one schedule (chosen from its seed).
#[derive(Debug, Clone, Copy)]
pub struct NetworkFaults {
    pub drop_permille: u64,
    pub duplicate_permille: u64,
    /// A delivery this much slower than usual overtakes nothing but is overtaken: reordering.
    pub long_delay_permille: u64,
    pub max_delay_ms: u64,
    pub max_long_delay_ms: u64,
}

impl NetworkFaults {
    pub fn from_rng(rng: &mut Rng) -> NetworkFaults {
        NetworkFaults {
            drop_permille: rng.pick(&[0, 10, 30, 60, 100]),
            duplicate_permille: rng.pick(&[0, 10, 40]),
            long_delay_permille: rng.pick(&[0, 20, 80]),
            max_delay_ms: rng.range(2, 15),
            max_long_delay_ms: rng.range(50, 400),
        }
    }

    /// The network once the schedule heals: slow is fine, lossy is not.
    pub fn reliable() -> NetworkFaults {
        NetworkFaults {
            drop_permille: 0,
            duplicate_permille: 0,
            long_delay_permille: 0,
            max_delay_ms: 5,
            max_long_delay_ms: 5,
        }
    }
}

/// Links and endpoints that are cut, and the loss model.
#[derive(Debug)]
pub struct Network {
    rng: Rng,
    pub faults: NetworkFaults,
    /// Endpoints that reach nobody (a network partition around one broker).
    isolated: BTreeSet<Endpoint>,
    /// Cut links, each stored with its smaller endpoint first.
    cut: BTreeSet<(Endpoint, Endpoint)>,
}

/// What `Network::send` did with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum SendFate {
    Dropped,
    /// Delivery delays: one, or two for a duplicate.
    Deliver(Vec<u64>),
}

impl Network {
    pub fn new(rng: Rng, faults: NetworkFaults) -> Network {
        Network { rng, faults, isolated: BTreeSet::new(), cut: BTreeSet::new() }
    }

    /// Whether `a` and `b` can talk now.
    pub fn connected(&self, a: Endpoint, b: Endpoint) -> bool {
        !self.isolated.contains(&a) && !self.isolated.contains(&b) && !self.cut.contains(&ordered(a, b))
    }

    pub fn isolate(&mut self, endpoint: Endpoint) {
        self.isolated.insert(endpoint);
    }

    pub fn rejoin(&mut self, endpoint: Endpoint) {
        self.isolated.remove(&endpoint);
    }

    pub fn cut_link(&mut self, a: Endpoint, b: Endpoint) {
        self.cut.insert(ordered(a, b));
    }

    pub fn heal_link(&mut self, a: Endpoint, b: Endpoint) {
        self.cut.remove(&ordered(a, b));
    }

    pub fn heal_all(&mut self) {
        self.isolated.clear();
        self.cut.clear();
    }

    /// Isolated endpoints and cut links in force.
    pub fn fault_count(&self) -> usize {
        self.isolated.len() + self.cut.len()
    }

    /// Decides a message's fate: dropped (by loss or a cut), or delivered after a delay,
    /// possibly twice (a retransmission whose first copy was not lost after all).
    pub fn send(&mut self, from: Endpoint, to: Endpoint) -> SendFate {
        if !self.connected(from, to) || self.rng.chance(self.faults.drop_permille) {
            return SendFate::Dropped;
        }
        let mut delays = vec![self.delay()];
        if self.rng.chance(self.faults.duplicate_permille) {
            delays.push(self.delay());
        }
        SendFate::Deliver(delays)
    }

    fn delay(&mut self) -> u64 {
        if self.rng.chance(self.faults.long_delay_permille) {
            self.rng.range(self.faults.max_delay_ms, self.faults.max_long_delay_ms.max(self.faults.max_delay_ms))
        } else {
            self.rng.range(1, self.faults.max_delay_ms)
        }
    }
}

fn ordered(a: Endpoint, b: Endpoint) -> (Endpoint, Endpoint) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}
