//! Retention and DeleteRecords in the replica manager (Kafka `LogManager`'s retention task,
//! `ReplicaManager.deleteRecords`) and the log start offset checkpoint: every hosted log is
//! checked every log.retention.check.interval.ms; a storage error takes that replica
//! offline alone, as any other.
use std::collections::BTreeMap;

use insync_types::{now_epoch_ms, ErrorCode, Offset, TopicPartition};
use tracing::{info, warn};

use super::ReplicaManager;

impl ReplicaManager {
    /// One retention pass over every online replica: a segment.ms roll, then whole segments
    /// deleted by retention.ms / retention.bytes below the HW (`Partition::enforce_retention`).
    /// One INFO line per replica that deleted anything.
    pub fn enforce_retention(&self) {
        let now_ms = now_epoch_ms();
        for partition in self.all_partitions() {
            let tp = partition.topic_partition();
            match partition.enforce_retention(now_ms) {
                Ok(None) => {}
                Ok(Some(done)) => info!(
                    segments = done.segments_deleted,
                    bytes = done.bytes_deleted,
                    "{tp}: retention deleted {} segment(s), {} bytes ({}); log start offset now {}",
                    done.segments_deleted,
                    done.bytes_deleted,
                    done.reason,
                    done.log_start_offset
                ),
                Err(e) => self.mark_offline(tp, &format!("retention failed: {e}")),
            }
        }
    }

    /// DeleteRecords for one partition (Kafka API 21) on its leader: the log start offset
    /// moves to `offset` (-1: the high watermark). Returns the new log start offset (Kafka's
    /// low watermark; Kafka waits for every replica to reach it, insync answers once the
    /// leader has, and followers follow through their fetches).
    pub fn delete_records(&self, tp: &TopicPartition, offset: Offset) -> Result<Offset, (ErrorCode, String)> {
        let Some(partition) = self.partition(tp) else {
            let outcome = self.missing_partition_outcome(tp);
            return Err((outcome.error, outcome.message));
        };
        let result = partition.delete_records(offset);
        match &result {
            // Both checkpoints, the HW first: a restart then never finds the start above it.
            Ok(_) => self.checkpoint_high_watermarks(),
            Err((ErrorCode::KAFKA_STORAGE_ERROR, message)) => self.mark_offline(tp, message),
            Err(_) => {}
        }
        result
    }

    /// Writes every hosted replica's log start offset (and the start-up entries of replicas
    /// not open yet) to `log-start-offset-checkpoint`.
    pub(super) fn checkpoint_log_start_offsets(&self) {
        // Built under the file's lock: a write never replaces a newer one (DeleteRecords
        // racing the periodic checkpoint).
        let file = self.lso_checkpoint.lock().unwrap_or_else(|p| p.into_inner());
        let mut map: BTreeMap<TopicPartition, Offset> =
            self.checkpointed_log_start_offsets.lock().unwrap_or_else(|p| p.into_inner()).clone();
        map.extend(self.all_partitions().into_iter().map(|p| (p.topic_partition().clone(), p.log_start_offset())));
        if let Err(e) = file.write(&map) {
            warn!("log start offset checkpoint failed: {e}");
        }
    }
}
