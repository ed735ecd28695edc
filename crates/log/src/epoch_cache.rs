//! The leader-epoch cache of one partition replica: epoch → start offset, persisted in
//! `<dir>/leader-epoch-checkpoint` (Kafka `LeaderEpochFileCache` +
//! `LeaderEpochCheckpointFile`). It answers KIP-101 OffsetsForLeaderEpoch questions
//! ([`LeaderEpochCache::end_offset_for`]) so followers truncate to where their log
//! diverged from the leader's, never to their high watermark.
//!
//! Invariant (checked with `debug_assert!`): epochs and start offsets are both strictly
//! increasing along the entries. `assign` keeps it the way Kafka does, by dropping the
//! conflicting tail rather than refusing the new entry.

use std::path::{Path, PathBuf};

use crate::checkpoint::{corrupt, read_checkpoint, write_checkpoint};
use crate::error::LogError;

/// The checkpoint's file name inside the partition directory (Kafka
/// `LeaderEpochCheckpointFile.LEADER_EPOCH_CHECKPOINT_FILENAME`).
pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// Kafka `OffsetsForLeaderEpochResponse.UNDEFINED_EPOCH`.
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka `OffsetsForLeaderEpochResponse.UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// One epoch and the offset of its first batch (Kafka `EpochEntry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Epoch → start-offset map with a durable checkpoint; see the module docs.
#[derive(Debug)]
pub struct LeaderEpochCache {
    /// `<dir>/leader-epoch-checkpoint`; rewritten (temp + fsync + rename) on every change,
    /// so after a crash it never lacks an entry the log relies on. It may hold entries
    /// beyond the recovered log end; `PartitionLog::open` truncates those, as Kafka
    /// `LogLoader` does.
    path: PathBuf,
    /// Sorted by epoch; see the invariant in the module docs.
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Loads `<dir>/leader-epoch-checkpoint` (missing → empty). Entries go through
    /// [`assign`](Self::assign)'s rules, as Kafka's constructor does
    /// (`checkpoint.read().forEach(this::assign)`), so a hand-edited file cannot break the
    /// invariant.
    pub fn load(dir: &Path) -> Result<LeaderEpochCache, LogError> {
        let path = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
        let mut cache = LeaderEpochCache { path, entries: Vec::new() };
        let Some(lines) = read_checkpoint(&cache.path)? else {
            return Ok(cache);
        };
        for line in lines {
            let malformed = || corrupt(&cache.path, format!("malformed line {line:?}"));
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [epoch, start_offset] = fields[..] else {
                return Err(malformed());
            };
            let epoch: i32 = epoch.parse().map_err(|_| malformed())?;
            let start_offset: i64 = start_offset.parse().map_err(|_| malformed())?;
            if epoch < 0 || start_offset < 0 {
                return Err(malformed());
            }
            cache.assign_in_memory(EpochEntry { epoch, start_offset });
        }
        Ok(cache)
    }

    /// Where the checkpoint lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn latest_entry(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The newest epoch with an entry (Kafka `latestEpoch`).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|entry| entry.epoch)
    }

    pub fn earliest_entry(&self) -> Option<EpochEntry> {
        self.entries.first().copied()
    }

    /// Records that `epoch` starts at `start_offset` and persists the change. Returns
    /// whether anything changed. Kafka `LeaderEpochFileCache.assign`: a no-op when `epoch`
    /// is the latest epoch at an equal or later offset; otherwise entries at the end with
    /// `epoch >= new epoch` or `start_offset >= new start_offset` are removed first
    /// (`maybeTruncateNonMonotonicEntries`), which keeps both columns strictly increasing.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<bool, LogError> {
        if epoch < 0 || start_offset < 0 {
            return Err(LogError::InvalidArgument(format!(
                "invalid leader epoch entry (epoch {epoch}, start offset {start_offset})"
            )));
        }
        let entry = EpochEntry { epoch, start_offset };
        if !self.assign_in_memory(entry) {
            return Ok(false);
        }
        self.write()?;
        Ok(true)
    }

    fn assign_in_memory(&mut self, entry: EpochEntry) -> bool {
        let update_needed = match self.entries.last() {
            None => true,
            Some(latest) => entry.epoch != latest.epoch || entry.start_offset < latest.start_offset,
        };
        if !update_needed {
            return false;
        }
        let keep = self
            .entries
            .iter()
            .rposition(|e| e.epoch < entry.epoch && e.start_offset < entry.start_offset)
            .map_or(0, |index| index + 1);
        let removed = self.entries.split_off(keep);
        // Like Kafka, warn only for non-trivial removals: replacing an entry that started
        // at the same offset just means that epoch never wrote anything.
        if removed.len() > 1 || removed.first().is_some_and(|r| r.start_offset != entry.start_offset) {
            tracing::warn!(
                path = %self.path.display(),
                "new epoch entry {entry:?} caused truncation of conflicting entries {removed:?}"
            );
        }
        self.entries.push(entry);
        self.debug_check_invariant();
        true
    }

    /// Removes entries with `start_offset >= end_offset` (Kafka `truncateFromEnd`), after
    /// the log was truncated to `end_offset` or recovered to it.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<(), LogError> {
        let keep = self.entries.iter().position(|e| e.start_offset >= end_offset).unwrap_or(self.entries.len());
        if end_offset < 0 || keep == self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(keep);
        self.write()
    }

    /// Drops entries wholly before `start_offset`, moving the last of them to start at
    /// `start_offset` (Kafka `truncateFromStart`; exclusive: an entry at `start_offset`
    /// stays). Used when the log start offset moves forward.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> Result<(), LogError> {
        let removed = self.entries.iter().take_while(|e| e.start_offset <= start_offset).count();
        // Nothing to do when no entry starts before `start_offset` (an entry exactly at it
        // would be replaced by itself; skip the rewrite and its fsync on every open).
        if removed == 0 || (removed == 1 && self.entries[0].start_offset == start_offset) {
            return Ok(());
        }
        let moved = EpochEntry { epoch: self.entries[removed - 1].epoch, start_offset };
        self.entries.drain(..removed);
        self.entries.insert(0, moved);
        self.debug_check_invariant();
        self.write()
    }

    /// Removes every entry and persists the empty cache (Kafka `clearAndFlush`).
    pub fn clear(&mut self) -> Result<(), LogError> {
        self.entries.clear();
        self.write()
    }

    /// KIP-101 OffsetsForLeaderEpoch, exactly Kafka `LeaderEpochFileCache.endOffsetFor`:
    /// returns (largest epoch ≤ `requested_epoch`, end offset of that epoch), where the end
    /// offset is the start offset of the next higher epoch, or `log_end_offset` when the
    /// latest epoch is requested. Edge cases, as in Kafka:
    /// - `requested_epoch == -1`, or greater than the latest epoch, or an empty cache →
    ///   `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)` = `(-1, -1)`;
    /// - `requested_epoch` below the first cached epoch → `(requested_epoch, start offset of
    ///   the first entry)`: the data before it is gone, so the follower truncates to where
    ///   the leader's knowledge begins.
    pub fn end_offset_for(&self, requested_epoch: i32, log_end_offset: i64) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested_epoch == UNDEFINED_EPOCH {
            return UNDEFINED;
        }
        if self.latest_epoch() == Some(requested_epoch) {
            return (requested_epoch, log_end_offset);
        }
        // First entry with a higher epoch ("higherEntry").
        let higher_index = self.entries.partition_point(|e| e.epoch <= requested_epoch);
        let Some(higher) = self.entries.get(higher_index) else {
            return UNDEFINED;
        };
        match higher_index.checked_sub(1).map(|i| self.entries[i]) {
            None => (requested_epoch, higher.start_offset),
            Some(floor) => (floor.epoch, higher.start_offset),
        }
    }

    /// The epoch of the batch holding `offset` (Kafka `epochForOffset`), if the cache
    /// covers it.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let index = self.entries.partition_point(|e| e.start_offset <= offset);
        index.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    fn write(&self) -> Result<(), LogError> {
        let lines: Vec<String> = self.entries.iter().map(|e| format!("{} {}", e.epoch, e.start_offset)).collect();
        write_checkpoint(&self.path, &lines)
    }

    fn debug_check_invariant(&self) {
        debug_assert!(
            self.entries.windows(2).all(|w| w[0].epoch < w[1].epoch && w[0].start_offset < w[1].start_offset),
            "leader epoch entries must strictly increase: {:?}",
            self.entries
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(dir: &Path, entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::load(dir).unwrap();
        for (epoch, start_offset) in entries {
            cache.assign(*epoch, *start_offset).unwrap();
        }
        cache
    }

    fn pairs(cache: &LeaderEpochCache) -> Vec<(i32, i64)> {
        cache.entries().iter().map(|e| (e.epoch, e.start_offset)).collect()
    }

    #[test]
    fn end_offset_for_follows_kafka_leader_epoch_file_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_with(dir.path(), &[(0, 0), (2, 10), (5, 20)]);
        let log_end_offset = 30;
        assert_eq!(cache.end_offset_for(0, log_end_offset), (0, 10));
        // Epoch 1 never led: answer with the largest epoch below it and its end.
        assert_eq!(cache.end_offset_for(1, log_end_offset), (0, 10));
        assert_eq!(cache.end_offset_for(2, log_end_offset), (2, 20));
        assert_eq!(cache.end_offset_for(3, log_end_offset), (2, 20));
        assert_eq!(cache.end_offset_for(5, log_end_offset), (5, 30));
        // Larger than the latest epoch: Kafka returns UNDEFINED ("should never be hit").
        assert_eq!(cache.end_offset_for(6, log_end_offset), (-1, -1));
        assert_eq!(cache.end_offset_for(-1, log_end_offset), (-1, -1));

        let dir = tempfile::tempdir().unwrap();
        let cache = cache_with(dir.path(), &[(3, 100), (4, 150)]);
        // Below the first epoch: the requested epoch with the first start offset.
        assert_eq!(cache.end_offset_for(1, 200), (1, 100));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cache_with(dir.path(), &[]).end_offset_for(0, 0), (-1, -1));
    }

    #[test]
    fn assign_keeps_epochs_and_offsets_strictly_increasing_like_kafka() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = cache_with(dir.path(), &[(0, 0), (2, 10), (5, 20)]);
        // Same epoch, later offset: no-op.
        assert!(!cache.assign(5, 25).unwrap());
        // Same epoch, earlier offset: replaces it.
        assert!(cache.assign(5, 18).unwrap());
        assert_eq!(pairs(&cache), vec![(0, 0), (2, 10), (5, 18)]);
        // Older epoch after a newer one: the newer conflicting entry goes.
        assert!(cache.assign(3, 25).unwrap());
        assert_eq!(pairs(&cache), vec![(0, 0), (2, 10), (3, 25)]);
        // Newer epoch at an offset below existing entries: those entries go.
        assert!(cache.assign(7, 5).unwrap());
        assert_eq!(pairs(&cache), vec![(0, 0), (7, 5)]);
        // Two epochs at the same offset: the later epoch wins (the earlier wrote nothing).
        assert!(cache.assign(8, 5).unwrap());
        assert_eq!(pairs(&cache), vec![(0, 0), (8, 5)]);
        assert!(cache.assign(-1, 0).is_err());
    }

    #[test]
    fn truncation_from_both_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = cache_with(dir.path(), &[(0, 0), (2, 10), (5, 20)]);
        cache.truncate_from_end(20).unwrap();
        assert_eq!(pairs(&cache), vec![(0, 0), (2, 10)]);
        cache.truncate_from_end(11).unwrap();
        assert_eq!(pairs(&cache), vec![(0, 0), (2, 10)]);
        cache.truncate_from_start(12).unwrap();
        assert_eq!(pairs(&cache), vec![(2, 12)]);
        cache.truncate_from_start(12).unwrap();
        assert_eq!(pairs(&cache), vec![(2, 12)]);
        assert_eq!(cache.epoch_for_offset(11), None);
        assert_eq!(cache.epoch_for_offset(12), Some(2));
        cache.truncate_from_end(0).unwrap();
        assert!(cache.is_empty());
    }

    #[test]
    fn checkpoint_survives_reload_in_kafka_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = cache_with(dir.path(), &[(0, 0), (2, 10)]);
        cache.assign(5, 20).unwrap();
        let text = std::fs::read_to_string(cache.path()).unwrap();
        assert_eq!(text, "0\n3\n0 0\n2 10\n5 20\n");
        let reloaded = LeaderEpochCache::load(dir.path()).unwrap();
        assert_eq!(pairs(&reloaded), vec![(0, 0), (2, 10), (5, 20)]);
        assert_eq!(reloaded.epoch_for_offset(19), Some(2));
        assert_eq!(reloaded.epoch_for_offset(25), Some(5));

        std::fs::write(cache.path(), "0\n1\n5 x\n").unwrap();
        assert!(matches!(LeaderEpochCache::load(dir.path()), Err(LogError::CorruptCheckpoint { .. })));
    }
}
