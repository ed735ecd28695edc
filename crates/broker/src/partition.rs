//! One partition replica hosted by this broker: its log plus its role (leader with the
//! pure replication core, or follower of some leader), guarded by one mutex so that an
//! append, the HW it moves and the waiters it completes are one atomic step.
use std::sync::Mutex;

use insync_log::batch::iter_batches;
use insync_log::PartitionLog;
use insync_replication::{BatchMetadata, LeaderPartition, ProducerStateTable};
use insync_types::{BrokerId, LeaderEpoch, Offset, PartitionEpoch, TopicPartition, NO_BROKER};

/// Leader or follower (Kafka `Partition.makeLeader` / `makeFollower`).
#[derive(Debug)]
pub enum ReplicaRole {
    Leader(Box<LeaderPartition>),
    /// Following `leader` (NO_BROKER while the partition is offline).
    Follower {
        leader: BrokerId,
    },
}

/// State under the partition lock.
#[derive(Debug)]
pub struct ReplicaState {
    pub log: PartitionLog,
    pub role: ReplicaRole,
    /// The follower's HW (a leader's lives in its `LeaderPartition`).
    pub follower_high_watermark: Offset,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub replicas: Vec<BrokerId>,
    /// The ISR as last committed by the controller (the leader's core may know newer).
    pub isr: Vec<BrokerId>,
    /// Idempotent producers' recent sequences, kept on every replica (leader and
    /// follower appends both update it) so a new leader dedupes retries at once.
    pub producers: ProducerStateTable,
}

impl ReplicaState {
    pub fn high_watermark(&self) -> Offset {
        match &self.role {
            ReplicaRole::Leader(leader) => leader.high_watermark(),
            ReplicaRole::Follower { .. } => self.follower_high_watermark,
        }
    }

    pub fn leader_id(&self, local: BrokerId) -> BrokerId {
        match self.role {
            ReplicaRole::Leader(_) => local,
            ReplicaRole::Follower { leader } => leader,
        }
    }

    pub fn leader_mut(&mut self) -> Option<&mut LeaderPartition> {
        match &mut self.role {
            ReplicaRole::Leader(l) => Some(l),
            ReplicaRole::Follower { .. } => None,
        }
    }

    pub fn leader(&self) -> Option<&LeaderPartition> {
        match &self.role {
            ReplicaRole::Leader(l) => Some(l),
            ReplicaRole::Follower { .. } => None,
        }
    }

    /// Rebuilds the producer state from the log (at open and after truncation; Kafka
    /// rebuilds from its producer snapshots plus the log tail, we scan the whole log).
    pub fn rebuild_producer_state(&mut self) {
        self.producers = scan_producer_state(&self.log);
    }

    /// Records the producer metadata of whole batches just appended.
    pub fn record_producer_batches(&mut self, batches: &[u8]) {
        record_batches(&mut self.producers, batches);
    }

    pub fn is_follower_of(&self, leader: BrokerId, leader_epoch: LeaderEpoch) -> bool {
        matches!(self.role, ReplicaRole::Follower { leader: l } if l == leader && l != NO_BROKER)
            && self.leader_epoch == leader_epoch
    }
}

/// A hosted replica.
#[derive(Debug)]
pub struct Partition {
    pub topic_partition: TopicPartition,
    pub state: Mutex<ReplicaState>,
}

impl Partition {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, ReplicaState> {
        // A panic while holding the lock is a bug; keep serving the data rather than
        // cascading panics into every request for this partition.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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

/// Producer state of a whole log, read batch by batch.
pub fn scan_producer_state(log: &PartitionLog) -> ProducerStateTable {
    let mut table = ProducerStateTable::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let Ok(chunk) = log.read(offset, end, 4 << 20) else { break };
        let mut next = offset;
        for (header, _) in iter_batches(&chunk).map_while(Result::ok) {
            next = header.next_offset();
        }
        record_batches(&mut table, &chunk);
        if next <= offset {
            break; // no progress: never loop forever on a log we cannot parse
        }
        offset = next;
    }
    table
}
