//! Committed offsets in the state machine (Kafka `GroupMetadataManager.storeOffsets`,
//! `GroupMetadata.prepareOffsetCommit` / `onOffsetCommitAppend` / `removeExpiredOffsets`):
//! a commit is decided and its records appended under the coordinator's lock, so log order
//! is decision order; it becomes visible once acknowledged, and only if no newer commit of
//! the same partition was applied meanwhile (Kafka compares the appended batch offsets; the
//! decision sequence here orders the same way).
use insync_types::ErrorCode;

use super::classic::GroupState;
use super::coordinator::{Coordinator, Effect, MemberRef, StoreDone};
use super::records::{self, GroupRecord, OffsetValue};

/// Kafka's longest topic name (`Topic.MAX_NAME_LENGTH`, ASCII only).
pub const MAX_TOPIC_NAME_BYTES: usize = 249;

/// A commit appended and waiting for its acknowledgement (see `Coordinator::finish_commit`).
#[derive(Debug)]
pub struct PendingCommit {
    pub group_id: String,
    pub seq: u64,
    /// The offsets that become visible once stored.
    pub offsets: Vec<(String, i32, OffsetValue)>,
    pub new_offsets: usize,
}

/// Per partition of an OffsetCommit: (topic, partition, error).
pub type CommitResults = Vec<(String, i32, ErrorCode)>;

impl Coordinator {
    /// OffsetCommit's decision: the group checks (`validate_commit`), then per offset whether
    /// it may be stored. Returns the answers and, if any offset was accepted, the commit to
    /// append now and finish with `finish_commit` (the group is kept until then).
    pub fn prepare_commit(
        &mut self,
        request: &MemberRef,
        partition: i32,
        offsets: Vec<(String, i32, OffsetValue)>,
        now: i64,
    ) -> Result<(CommitResults, Option<PendingCommit>), ErrorCode> {
        self.validate_commit(request, partition, now)?;
        let seq = self.bump_seq();
        // Kafka's record field is an int16-framed string, whatever offset.metadata.max.bytes says.
        let max_metadata = self.config.offset_metadata_max_bytes.min(records::MAX_STRING_BYTES);
        let max_offsets = self.config.max_offsets_per_group;
        let group = self.groups.get_mut(&request.group_id).ok_or(ErrorCode::ILLEGAL_GENERATION)?;
        let mut results = Vec::with_capacity(offsets.len());
        let mut accepted = Vec::new();
        let mut new_offsets = 0usize;
        for (topic, p, value) in offsets {
            let key = (topic, p);
            let known = group.offsets.contains_key(&key);
            let error = if key.0.len() > MAX_TOPIC_NAME_BYTES {
                // No such topic can exist (the adapters refuse unknown topics already): never
                // a record key.
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
            } else if value.metadata.len() > max_metadata {
                ErrorCode::OFFSET_METADATA_TOO_LARGE
            } else if !known && group.offsets.len() + group.pending_new_offsets + new_offsets >= max_offsets {
                // Not retriable: retrying cannot make room (offset expiry or DeleteGroups does).
                tracing::warn!(group = %request.group_id, max_offsets, "too many committed partitions in the group");
                ErrorCode::INVALID_COMMIT_OFFSET_SIZE
            } else {
                ErrorCode::NONE
            };
            if error == ErrorCode::NONE {
                new_offsets += usize::from(!known);
                accepted.push((key.0.clone(), key.1, value));
            }
            results.push((key.0, key.1, error));
        }
        if accepted.is_empty() {
            return Ok((results, None));
        }
        group.pending_commits.insert(seq, accepted.iter().map(|(topic, p, _)| (topic.clone(), *p)).collect());
        group.pending_new_offsets += new_offsets;
        let pending = PendingCommit { group_id: request.group_id.clone(), seq, offsets: accepted, new_offsets };
        Ok((results, Some(pending)))
    }

    /// The records of a prepared commit, to append.
    pub fn commit_records(pending: &PendingCommit) -> Vec<GroupRecord> {
        pending
            .offsets
            .iter()
            .map(|(topic, partition, value)| GroupRecord::Offset {
                group: pending.group_id.clone(),
                topic: topic.clone(),
                partition: *partition,
                value: Some(value.clone()),
            })
            .collect()
    }

    /// A prepared commit's append finished (Kafka `onOffsetCommitAppend` / `failPendingOffsetWrite`):
    /// stored offsets become visible unless a newer commit of the partition is already there.
    /// A group deleted (or reloaded) since the decision is another incarnation: untouched.
    pub fn finish_commit(&mut self, pending: PendingCommit, stored: bool) {
        let Some(group) = self.groups.get_mut(&pending.group_id) else { return };
        if group.created_seq > pending.seq {
            return;
        }
        group.pending_commits.remove(&pending.seq);
        group.pending_new_offsets = group.pending_new_offsets.saturating_sub(pending.new_offsets);
        if !stored {
            return;
        }
        for (topic, partition, value) in pending.offsets {
            let key = (topic, partition);
            if group.offset_seq.get(&key).copied().unwrap_or(0) < pending.seq {
                group.offset_seq.insert(key.clone(), pending.seq);
                group.offsets.insert(key, value);
            }
        }
    }

    /// Tests: commits `offsets` as if appended and acknowledged at once.
    #[cfg(test)]
    pub fn apply_offsets(&mut self, group_id: &str, offsets: Vec<(String, i32, OffsetValue)>) {
        if !self.groups.contains_key(group_id) {
            self.create_group(group_id, 3, 0);
        }
        let seq = self.bump_seq();
        if let Some(group) = self.groups.get_mut(group_id) {
            group.pending_commits.insert(seq, offsets.iter().map(|(topic, p, _)| (topic.clone(), *p)).collect());
        }
        self.finish_commit(PendingCommit { group_id: group_id.to_string(), seq, offsets, new_offsets: 0 }, true);
    }

    /// Is a commit decided before `seq` still waiting for its acknowledgement?
    pub fn commit_pending_before(&self, group_id: &str, seq: u64) -> bool {
        self.groups.get(group_id).and_then(|g| g.pending_commits.keys().next()).is_some_and(|first| *first < seq)
    }

    /// OffsetFetch: the named partitions (None: every committed offset of the group).
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<(String, i32, Option<OffsetValue>)> {
        let offsets = self.groups.get(group_id).map(|g| &g.offsets);
        match topics {
            Some(topics) => topics
                .iter()
                .flat_map(|(topic, partitions)| {
                    partitions.iter().map(move |p| {
                        let value = offsets.and_then(|o| o.get(&(topic.clone(), *p))).cloned();
                        (topic.clone(), *p, value)
                    })
                })
                .collect(),
            None => offsets
                .into_iter()
                .flatten()
                .map(|((topic, partition), value)| (topic.clone(), *partition, Some(value.clone())))
                .collect(),
        }
    }

    /// Offset retention (KIP-211, Kafka `GroupMetadata.removeExpiredOffsets` +
    /// `GroupMetadataManager.cleanupGroupMetadata`): an Empty group's offsets expire
    /// `offsets_retention_ms` after it became Empty; a simple consumer's (no protocol type)
    /// each `offsets_retention_ms` after its commit. Tombstones are written for them, and
    /// for the group once nothing is left. Groups with a commit in flight wait. Kafka also
    /// expires a Stable consumer group's offsets of topics it no longer subscribes to; not
    /// done here (they go once the group is Empty).
    pub fn expire_offsets(&mut self, now: i64, out: &mut Vec<Effect>) {
        let retention = self.config.offsets_retention_ms;
        let mut emptied = Vec::new();
        for group in self.groups.values_mut() {
            if !group.pending_commits.is_empty() || !group.is(GroupState::Empty) || group.offsets.is_empty() {
                continue;
            }
            let since_empty = group.protocol_type.is_some().then_some(group.state_timestamp_ms);
            let expired: Vec<(String, i32)> = group
                .offsets
                .iter()
                .filter(|(_, v)| now.saturating_sub(since_empty.unwrap_or(v.commit_timestamp_ms)) >= retention)
                .map(|(key, _)| key.clone())
                .collect();
            if expired.is_empty() {
                continue;
            }
            let mut records: Vec<GroupRecord> = Vec::with_capacity(expired.len() + 1);
            for key in expired {
                group.offsets.remove(&key);
                group.offset_seq.remove(&key);
                let (topic, partition) = key;
                records.push(GroupRecord::Offset { group: group.group_id.clone(), topic, partition, value: None });
            }
            let removed = records.len();
            let dead = group.offsets.is_empty() && group.members.is_empty() && group.pending_members.is_empty();
            if dead {
                records.push(GroupRecord::Group { group: group.group_id.clone(), value: None });
                emptied.push(group.group_id.clone());
            }
            tracing::info!(group = %group.group_id, removed, dead, "expired committed offsets (offsets.retention.minutes)");
            out.push(Effect::Store {
                group_id: group.group_id.clone(),
                partition: group.partition,
                records,
                done: StoreDone::Nothing,
            });
        }
        for group_id in emptied {
            self.groups.remove(&group_id);
        }
    }
}
