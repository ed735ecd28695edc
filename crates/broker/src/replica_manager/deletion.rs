//! Replica deletion in the replica manager (Kafka `ReplicaManager.stopPartitions` with
//! `deleteLocalLog`, and the stray-log cleanup of a KRaft broker's first metadata image):
//! replicas of deleted topics, of an earlier topic of a re-created name, and directories a
//! broker finds on disk for topics the metadata no longer has.
use std::collections::{BTreeMap, HashSet};
use std::sync::MutexGuard;

use insync_proto as pb;
use insync_types::{Offset, TopicPartition};
use tracing::{info, warn};

use super::{HostedPartition, ReplicaManager};
use crate::log_dirs;

impl ReplicaManager {
    pub(super) fn lock_checkpointed(&self) -> MutexGuard<'_, BTreeMap<TopicPartition, Offset>> {
        self.checkpointed_high_watermarks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the checkpointed HW and log start offset of a replica being deleted.
    pub(super) fn remove_checkpointed_high_watermark(&self, tp: &TopicPartition) {
        self.lock_checkpointed().remove(tp);
        self.checkpointed_log_start_offsets.lock().unwrap_or_else(|p| p.into_inner()).remove(tp);
    }

    /// Whether this broker hosts `tp` for a topic id other than `topic_id` (both known): the
    /// topic was deleted and re-created while this broker did not see the deletion.
    pub(super) fn hosted_for_another_topic_id(&self, tp: &TopicPartition, topic_id: &str) -> bool {
        let ids = self.topic_ids.lock().unwrap_or_else(|p| p.into_inner());
        ids.get(tp).is_some_and(|hosted| !hosted.is_empty() && !topic_id.is_empty() && hosted != topic_id)
    }

    /// Deletes every hosted replica the metadata no longer assigns to this broker: its topic
    /// was deleted (or, in future, the replica moved away).
    pub(super) fn delete_unassigned_replicas(&self, metadata: &pb::ClusterMetadata) {
        // One pass over the metadata, not one per hosted replica: this runs at every apply.
        let assigned: HashSet<TopicPartition> = metadata
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.replicas.contains(&self.broker_id))
                    .map(|p| TopicPartition::new(t.name.clone(), p.partition))
            })
            .collect();
        let unassigned: Vec<TopicPartition> = self
            .partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|tp| !assigned.contains(*tp))
            .cloned()
            .collect();
        for tp in unassigned {
            self.delete_replica(&tp, "its topic was deleted");
        }
    }

    /// Stops serving `tp` and deletes its log: out of the partition map (fetchers drop it
    /// with the next assignment), a leader's waiting acks=all requests answered, then the
    /// directory renamed to `-delete` and removed in the background (`log_dirs`). One INFO
    /// line says why.
    pub(super) fn delete_replica(&self, tp: &TopicPartition, reason: &str) {
        let removed = self.partitions.write().unwrap_or_else(|p| p.into_inner()).remove(tp);
        let Some(hosted) = removed else { return };
        self.topic_ids.lock().unwrap_or_else(|p| p.into_inner()).remove(tp);
        self.remove_checkpointed_high_watermark(tp);
        let dir = match hosted {
            HostedPartition::Online(partition) => {
                let actions = partition.stop_for_deletion();
                self.run_actions(tp, actions);
                partition.dir()
            }
            HostedPartition::Offline(_) => self.log_dir(tp),
        };
        match log_dirs::rename_for_deletion(&dir, tp) {
            Ok(renamed) => {
                info!(
                    "{tp}: deleting replica ({reason}): stopped serving it, renamed its log to {}",
                    renamed.display()
                );
                log_dirs::remove_in_background(renamed);
            }
            Err(e) => {
                warn!("{tp}: deleting replica ({reason}): stopped serving it, but cannot rename {}: {e}", dir.display())
            }
        }
        // Parked fetches of it look again and find it gone.
        self.wake_parked_fetches();
    }

    /// Once, at the first metadata showing this broker's registration: deletes the partition
    /// directories on disk that no hosted replica uses and whose `partition.metadata` names a
    /// topic id (a topic deleted, or deleted and re-created, while this broker was down, or
    /// a crash before a deletion's rename). A directory without a topic id predates ids and
    /// is left alone with a WARN: nothing proves it is not wanted.
    pub(super) fn delete_stray_dirs(&self) {
        let hosted: HashSet<TopicPartition> =
            self.partitions.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        for (tp, dir) in log_dirs::partition_dirs(&self.config.data_dir) {
            if hosted.contains(&tp) {
                continue;
            }
            match log_dirs::read_topic_id(&dir) {
                Ok(Some(topic_id)) => match log_dirs::rename_for_deletion(&dir, &tp) {
                    Ok(renamed) => {
                        info!(
                            topic_id,
                            "{tp}: deleting a stray log (its topic id is not in the metadata: the topic was deleted \
                             while this broker was away); renamed to {}",
                            renamed.display()
                        );
                        log_dirs::remove_in_background(renamed);
                    }
                    Err(e) => warn!("{tp}: cannot rename the stray log {}: {e}", dir.display()),
                },
                Ok(None) => {
                    warn!("{tp}: {} belongs to no topic in the metadata and has no topic id; left alone", dir.display())
                }
                Err(e) => {
                    warn!("{tp}: {} belongs to no topic in the metadata; cannot read its topic id: {e}", dir.display())
                }
            }
            self.remove_checkpointed_high_watermark(&tp);
        }
    }
}
