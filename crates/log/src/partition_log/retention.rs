//! Retention and the log start offset (Kafka `UnifiedLog.deleteOldSegments`,
//! `maybeIncrementLogStartOffset`, `LogSegment.shouldRoll` for segment.ms): whole segments
//! are deleted from the front, only below the high watermark; the log start offset moves
//! with them, or ahead of them (DeleteRecords, a leader's start offset on a follower), and
//! reads below it are out of range.
//!
//! Time here is the wall clock, passed in by the caller (`now_ms`), as Kafka compares record
//! timestamps and file times with `System.currentTimeMillis()`. A segment's age for
//! retention.ms is its file's modification time (Kafka's fallback when a segment has no
//! time index); its age for segment.ms is its first batch's timestamp (Kafka's
//! `rollingBasedTimestamp`).
use std::time::UNIX_EPOCH;

use super::PartitionLog;
use crate::error::LogError;
use crate::segment::LogSegment;

/// Why segments went (for the caller's one INFO line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionReason {
    /// Older than retention.ms.
    Time,
    /// The log was bigger than retention.bytes.
    Size,
    /// Wholly below the log start offset (DeleteRecords, or a leader's start offset).
    LogStartOffset,
}

impl std::fmt::Display for RetentionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RetentionReason::Time => "older than retention.ms",
            RetentionReason::Size => "log over retention.bytes",
            RetentionReason::LogStartOffset => "below the log start offset",
        })
    }
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionInfo {
    /// Segments deleted from the front.
    pub segments_deleted: usize,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// The log start offset after the pass.
    pub log_start_offset: i64,
    /// The rule that deleted the most segments.
    pub reason: RetentionReason,
}

/// A segment file's modification time in epoch milliseconds (0 if unknown: old enough).
fn modified_ms(segment: &LogSegment) -> i64 {
    std::fs::metadata(segment.log_path())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl PartitionLog {
    /// Moves the log start offset up to `offset` (never down, never past the log end) and
    /// deletes the segments wholly below it (Kafka `maybeIncrementLogStartOffset` then
    /// `deleteLogStartOffsetBreachedSegments`). The caller bounds `offset` by the high
    /// watermark. Returns whether it moved.
    pub fn increment_log_start_offset(&mut self, offset: i64) -> Result<bool, LogError> {
        let offset = offset.min(self.log_end_offset);
        if offset <= self.log_start_offset {
            return Ok(false);
        }
        self.log_start_offset = offset;
        self.epoch_cache.truncate_from_start(offset)?;
        let below = self.segments.windows(2).take_while(|w| w[1].base_offset() <= offset).count();
        self.delete_front_segments(below)?;
        self.debug_check_invariants();
        Ok(true)
    }

    /// Rolls the active segment if its first batch is older than segment.ms (Kafka checks at
    /// each append; insync at each retention pass, which is when it matters).
    pub fn roll_if_older_than_segment_ms(&mut self, now_ms: i64) -> Result<bool, LogError> {
        if self.active().is_empty() || self.config.segment_ms <= 0 {
            return Ok(false);
        }
        let Some(first) = self.active().read_header_at(0)? else { return Ok(false) };
        if now_ms.saturating_sub(first.base_timestamp) <= self.config.segment_ms {
            return Ok(false);
        }
        self.roll()?;
        Ok(true)
    }

    /// One retention pass (Kafka `UnifiedLog.deleteOldSegments`): deletes the oldest
    /// segments that breach retention.ms, then retention.bytes, then the log start offset,
    /// only those wholly below `high_watermark`. The active segment goes too when it
    /// qualifies and everything in it is below the HW: the log rolls first, so it is never
    /// without a segment. The log start offset moves to the first segment kept.
    pub fn delete_old_segments(&mut self, high_watermark: i64, now_ms: i64) -> Result<Option<RetentionInfo>, LogError> {
        let retention_ms = self.config.retention_ms;
        let by_time = self.deletable(high_watermark, |segment, _| {
            retention_ms >= 0 && now_ms.saturating_sub(modified_ms(segment)) > retention_ms
        });
        let mut excess = if self.config.retention_bytes >= 0 {
            i64::try_from(self.size_bytes()).unwrap_or(i64::MAX) - self.config.retention_bytes
        } else {
            -1
        };
        let by_size = self.deletable(high_watermark, |segment, _| {
            let size = i64::try_from(segment.size_bytes()).unwrap_or(i64::MAX);
            let breached = excess - size >= 0;
            if breached {
                excess -= size;
            }
            breached
        });
        let log_start_offset = self.log_start_offset;
        let by_start = self.deletable(high_watermark, |_, next| next <= log_start_offset);
        let (count, reason) = [
            (by_time, RetentionReason::Time),
            (by_size, RetentionReason::Size),
            (by_start, RetentionReason::LogStartOffset),
        ]
        .into_iter()
        .max_by_key(|(count, _)| *count)
        .unwrap_or((0, RetentionReason::Time));
        if count == 0 {
            return Ok(None);
        }
        if count == self.segments.len() {
            // Never delete the last segment: start an empty one at the end, durably, before
            // the old ones go (else a crash could leave an empty directory: offsets from 0).
            self.roll()?;
            super::sync_dir(&self.dir)?;
        }
        let bytes_deleted = self.segments.iter().take(count).map(LogSegment::size_bytes).sum();
        self.delete_front_segments(count)?;
        self.debug_check_invariants();
        Ok(Some(RetentionInfo {
            segments_deleted: count,
            bytes_deleted,
            log_start_offset: self.log_start_offset,
            reason,
        }))
    }

    /// How many segments from the front satisfy `predicate(segment, next base offset)` and
    /// lie wholly below `high_watermark` (the active one: non-empty and ending at or below
    /// it), stopping at the first that does not (Kafka `deletableSegments`).
    fn deletable(&self, high_watermark: i64, mut predicate: impl FnMut(&LogSegment, i64) -> bool) -> usize {
        let mut count = 0;
        for (i, segment) in self.segments.iter().enumerate() {
            let next = self.segments.get(i + 1).map_or(self.log_end_offset, LogSegment::base_offset);
            let is_active = i + 1 == self.segments.len();
            if next > high_watermark || (is_active && segment.is_empty()) || !predicate(segment, next) {
                break;
            }
            count += 1;
        }
        count
    }

    /// Deletes the first `count` segments (never all of them) and moves the log start
    /// offset to the first one kept, if that is past it.
    fn delete_front_segments(&mut self, count: usize) -> Result<(), LogError> {
        let count = count.min(self.segments.len().saturating_sub(1));
        if count == 0 {
            return Ok(());
        }
        // The start moves first, so that a failure part-way never leaves it below the first
        // segment kept in memory; then the segments go one at a time, oldest first, so a
        // crash part-way leaves a contiguous log.
        let first = self.segments[count].base_offset();
        if first > self.log_start_offset {
            self.log_start_offset = first;
            self.epoch_cache.truncate_from_start(first)?;
        }
        for _ in 0..count {
            let segment = self.segments.remove(0);
            segment.delete()?;
        }
        super::sync_dir(&self.dir)
    }
}
