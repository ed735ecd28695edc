//! One partition replica hosted by this broker: its log plus its role (leader with the
//! pure replication core, or follower of some leader), guarded by one mutex so that an
//! append, the HW it moves and the waiters it completes are one atomic step.
use std::sync::Mutex;

use insync_log::PartitionLog;
use insync_replication::LeaderPartition;
use insync_types::{BrokerId, LeaderEpoch, Offset, PartitionEpoch, TopicPartition, NO_BROKER};

/// Leader or follower (Kafka `Partition.makeLeader` / `makeFollower`).
#[derive(Debug)]
pub enum Role {
    Leader(Box<LeaderPartition>),
    /// Following `leader` (NO_BROKER while the partition is offline).
    Follower {
        leader: BrokerId,
    },
}

/// State under the partition lock.
#[derive(Debug)]
pub struct PartitionState {
    pub log: PartitionLog,
    pub role: Role,
    /// The follower's HW (a leader's lives in its `LeaderPartition`).
    pub follower_high_watermark: Offset,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub replicas: Vec<BrokerId>,
    /// The ISR as last committed by the controller (the leader's core may know newer).
    pub isr: Vec<BrokerId>,
}

impl PartitionState {
    pub fn high_watermark(&self) -> Offset {
        match &self.role {
            Role::Leader(leader) => leader.high_watermark(),
            Role::Follower { .. } => self.follower_high_watermark,
        }
    }

    pub fn leader_id(&self, local: BrokerId) -> BrokerId {
        match self.role {
            Role::Leader(_) => local,
            Role::Follower { leader } => leader,
        }
    }

    pub fn leader_mut(&mut self) -> Option<&mut LeaderPartition> {
        match &mut self.role {
            Role::Leader(l) => Some(l),
            Role::Follower { .. } => None,
        }
    }

    pub fn leader(&self) -> Option<&LeaderPartition> {
        match &self.role {
            Role::Leader(l) => Some(l),
            Role::Follower { .. } => None,
        }
    }

    pub fn is_follower_of(&self, leader: BrokerId, leader_epoch: LeaderEpoch) -> bool {
        matches!(self.role, Role::Follower { leader: l } if l == leader && l != NO_BROKER)
            && self.leader_epoch == leader_epoch
    }
}

/// A hosted replica.
#[derive(Debug)]
pub struct Partition {
    pub topic_partition: TopicPartition,
    pub state: Mutex<PartitionState>,
}

impl Partition {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, PartitionState> {
        // A panic while holding the lock is a bug; keep serving the data rather than
        // cascading panics into every request for this partition.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
