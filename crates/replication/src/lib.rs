//! Sans-I/O replication core: the leader's ISR / high-watermark / acks=all purgatory rules
//! and the follower's fetch-and-truncate rules, as pure state machines (events in, actions
//! out, time passed in as `now_ms`). The broker crate turns the actions into I/O.
//!
//! Every rule cites the Kafka class it follows (mostly `kafka.cluster.Partition`,
//! `kafka.cluster.Replica`, `kafka.server.DelayedProduce`, `AbstractFetcherThread`).

pub mod alter_partition;
pub mod follower;
pub mod leader;
pub mod producer_state;

pub use alter_partition::{alter_partition_error_action, AlterPartitionErrorAction};
pub use follower::{
    check_current_leader_epoch, diverging_epoch, follower_high_watermark, truncation_offset, EpochEndOffset,
};
pub use leader::{
    Action, FollowerProgress, IsrChange, IsrChangeKind, IsrState, LeaderParams, LeaderPartition, WaiterId,
};
pub use producer_state::{BatchMetadata, ProducerStateTable, SequenceCheck};

/// Kafka's "effective" min ISR: min(min.insync.replicas, replication factor), so a topic
/// whose min.insync.replicas exceeds its RF is not unwritable forever (Kafka 3.x
/// `Partition.effectiveMinIsr`, from KAFKA-15583 / KIP-966 work).
pub fn effective_min_isr(min_insync_replicas: usize, replication_factor: usize) -> usize {
    min_insync_replicas.min(replication_factor).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_min_isr_is_capped_by_replication_factor() {
        // Kafka Partition.effectiveMinIsr: min(minInSyncReplicas, replicas.size).
        assert_eq!(effective_min_isr(2, 3), 2);
        assert_eq!(effective_min_isr(3, 1), 1);
        assert_eq!(effective_min_isr(0, 3), 1);
    }
}
