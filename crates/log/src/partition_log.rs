//! `PartitionLog`: the log of one partition replica in `<data_dir>/<topic>-<partition>/`
//! (Kafka `UnifiedLog` + `LocalLog` + `LogLoader`): ordered segments, leader and follower
//! appends, reads bounded by an offset and a byte budget, truncation, crash recovery of the
//! last two segments, and the leader-epoch cache kept in step with all of them.
//!
//! Durability follows Kafka: no fsync per append (durability comes from replication); fsync
//! every `flush_every_messages` records if set, on `flush()` and `close()`, and of the old
//! segment on a roll — on a thread of its own, as Kafka's `UnifiedLog.roll` schedules that
//! flush instead of making the append wait for it (tens of milliseconds for a full segment,
//! with the partition locked). At most one such flush is in flight (the next roll waits for
//! it), so after a machine crash only the last two segments can have a torn tail, and
//! `open` recovers both (Kafka recovers everything after its recovery point).
//!
//! Not thread-safe by itself: writers take `&mut self`, readers `&self`; the broker puts
//! the log behind a lock. It opens, truncates and searches logs (work that can take longer
//! than a millisecond) from blocking tasks, and appends and reads (page-cache copies of one
//! request's batches) on the async workers.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::{
    check_batch_integrity, iter_batches, parse_header, recompress_batch, stamp_batch, validate_batch_bounded,
    BatchHeader,
};
use crate::checkpoint::sync_dir;
use crate::compression::Compression;
use crate::epoch_cache::LeaderEpochCache;
use crate::error::LogError;
use crate::segment::{parse_base_offset, LogSegment, SegmentSync, INDEX_FILE_SUFFIX, LOG_FILE_SUFFIX};

mod retention;
pub use retention::{RetentionInfo, RetentionReason};

/// Per-log settings, named after their Kafka topic configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment when the active one would grow past this.
    /// Capped at `i32::MAX` (as in Kafka) so file positions fit the index's u32. Kafka's
    /// default is 1 GiB; 128 MiB keeps recovery scans short on a laptop.
    pub segment_bytes: u64,
    /// `index.interval.bytes`: log bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// `flush.messages`: fsync after this many records; `None` = never per append.
    pub flush_every_messages: Option<u64>,
    /// `message.max.bytes`: largest batch a producer may append (Kafka default 1048588 =
    /// 1 MiB + `LOG_OVERHEAD`), and the most its records may decompress to, so a
    /// decompression bomb costs the leader at most this much memory. Not applied to follower
    /// appends, as in Kafka: the leader already accepted those batches.
    pub max_batch_bytes: usize,
    /// `compression.type`: `None` is `producer` (Kafka's default: batches are stored as the
    /// producer compressed them); `Some(codec)` makes the leader re-encode a batch in any
    /// other codec to `codec` (`Some(Compression::None)` is `uncompressed`).
    pub compression: Option<Compression>,
    /// `retention.ms`: segments older than this are deleted; negative = no limit.
    pub retention_ms: i64,
    /// `retention.bytes`: while the log is bigger, its oldest segments are deleted;
    /// negative = no limit.
    pub retention_bytes: i64,
    /// `segment.ms`: the active segment rolls once its first batch is older than this.
    pub segment_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 128 * 1024 * 1024,
            index_interval_bytes: 4096,
            flush_every_messages: None,
            max_batch_bytes: 1024 * 1024 + crate::batch::LOG_OVERHEAD,
            // Kafka's log.retention.hours = 168 and log.roll.hours = 168.
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            segment_ms: 7 * 24 * 3600 * 1000,
            compression: None,
        }
    }
}

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended (the log end offset before, if nothing was).
    pub base_offset: i64,
    /// Offset of the last record appended (`base_offset - 1` if nothing was).
    pub last_offset: i64,
    /// Records appended.
    pub records: u32,
    /// Bytes written: a follower's whole input batches (a partial trailing batch is not
    /// counted); a leader's batch as stored (re-encoded for the topic's `compression.type`,
    /// it differs from the input).
    pub bytes: usize,
}

/// What a truncation removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TruncateInfo {
    pub records_removed: u64,
    pub bytes_removed: u64,
}

/// The log of one partition replica; see the module docs.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Sorted by base offset, never empty; the last one is the active segment. Offsets are
    /// contiguous across segments (no compaction), so segment i ends where i+1 begins.
    segments: Vec<LogSegment>,
    /// Offset the next appended record gets.
    log_end_offset: i64,
    /// The first offset a read may ask for: the first segment's base offset or past it
    /// (Kafka `logStartOffset`, moved by retention, DeleteRecords and a leader's start
    /// offset); never past the log end.
    log_start_offset: i64,
    /// Epoch → start offset, kept consistent with the log on every append and truncation.
    epoch_cache: LeaderEpochCache,
    /// Records appended since the last fsync, for `flush_every_messages`.
    unflushed_messages: u64,
    /// The fsync of the segment rolled last, running on its own thread.
    roll_flush: Option<std::thread::JoinHandle<Result<(), LogError>>>,
    /// Set once a roll flush has failed (see `wait_for_roll_flush`).
    roll_flush_failed: Option<String>,
}

/// What `PartitionLog::recover_segments` found.
struct Recovery {
    /// The end of the last segment kept.
    log_end_offset: i64,
    /// (epoch, start offset) of each batch epoch newer than the epoch cache knew.
    epoch_starts: Vec<(i32, i64)>,
    /// A segment was truncated or short (and those after it deleted): the directory changed.
    torn: bool,
}

impl PartitionLog {
    /// Opens (creating if needed) the log in `dir`: loads every segment, recovers the last
    /// two (CRC scan, torn or corrupt tail truncated, index rebuilt, a segment after a torn
    /// or short one deleted; Kafka
    /// `LogLoader.recoverLog`/`LogSegment.recover`), loads the epoch cache and drops its
    /// entries beyond the recovered log end (Kafka `LogLoader.load` →
    /// `leaderEpochCache.truncateFromEnd(nextOffset)`).
    pub fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, LogError> {
        let config = LogConfig { segment_bytes: config.segment_bytes.clamp(1, i32::MAX as u64), ..config };
        fs::create_dir_all(dir).map_err(|e| LogError::io(format!("creating log directory {}", dir.display()), e))?;
        let base_offsets = Self::scan_directory(dir)?;
        let mut epoch_cache = LeaderEpochCache::load(dir)?;

        if base_offsets.is_empty() {
            let segments = vec![LogSegment::create(dir, 0, config.index_interval_bytes)?];
            epoch_cache.truncate_from_end(0)?;
            return Ok(Self::loaded(dir, config, segments, 0, epoch_cache));
        }
        // The last two segments may not have been fsynced (see the module docs).
        let recover_from = base_offsets.len().saturating_sub(2);
        let mut segments = Vec::with_capacity(base_offsets.len());
        for &base_offset in &base_offsets[..recover_from] {
            segments.push(LogSegment::open(dir, base_offset, config.index_interval_bytes)?);
        }
        let recovery = Self::recover_segments(
            dir,
            &base_offsets[recover_from..],
            config.index_interval_bytes,
            epoch_cache.latest_epoch(),
            &mut segments,
        )?;
        let log_end_offset = recovery.log_end_offset;
        if recovery.torn {
            sync_dir(dir)?;
        } else {
            tracing::debug!(
                "opened log {}: {} segments, log end offset {log_end_offset}",
                dir.display(),
                segments.len()
            );
        }

        for (epoch, start_offset) in recovery.epoch_starts {
            epoch_cache.assign(epoch, start_offset)?;
        }
        epoch_cache.truncate_from_end(log_end_offset)?;
        // "The earliest leader epoch may not be flushed during a hard failure" (Kafka
        // LogLoader): clamp the first entry to the log start.
        let log_start_offset = segments[0].base_offset();
        epoch_cache.truncate_from_start(log_start_offset)?;

        let log = Self::loaded(dir, config, segments, log_end_offset, epoch_cache);
        log.debug_check_invariants();
        Ok(log)
    }

    /// A log just opened: nothing unflushed, no roll flush running.
    fn loaded(
        dir: &Path,
        config: LogConfig,
        segments: Vec<LogSegment>,
        log_end_offset: i64,
        epoch_cache: LeaderEpochCache,
    ) -> PartitionLog {
        let log_start_offset = segments.first().map_or(0, LogSegment::base_offset);
        PartitionLog {
            dir: dir.to_owned(),
            config,
            segments,
            log_end_offset,
            log_start_offset,
            epoch_cache,
            unflushed_messages: 0,
            roll_flush: None,
            roll_flush_failed: None,
        }
    }

    /// Recovers the segments at `base_offsets` (the last ones of the log, in order) and
    /// appends them to `segments`: each is CRC-scanned and its torn or corrupt tail
    /// truncated; once one is torn, or short of where the next one starts, the segments
    /// after it are deleted, as their records would follow a hole.
    ///
    /// Kafka LogSegment.recover assigns an epoch entry for each batch whose epoch is newer
    /// than the cache's latest (`latest_epoch`), which restores entries lost with a crash:
    /// those are returned for the caller to assign.
    fn recover_segments(
        dir: &Path,
        base_offsets: &[i64],
        index_interval_bytes: u32,
        mut latest_epoch: Option<i32>,
        segments: &mut Vec<LogSegment>,
    ) -> Result<Recovery, LogError> {
        let mut recovery = Recovery { log_end_offset: 0, epoch_starts: Vec::new(), torn: false };
        for (i, &base_offset) in base_offsets.iter().enumerate() {
            if recovery.torn {
                // Its records would follow a hole: gone, as Kafka's LogLoader deletes the
                // segments after one whose recovery truncated it.
                let (segment, _) = LogSegment::open_files(dir, base_offset, index_interval_bytes)?;
                let path = segment.log_path().to_owned();
                segment.delete()?;
                tracing::info!(
                    "recovered log {}: deleted segment {} that followed a torn segment",
                    dir.display(),
                    file_name(Some(&path))
                );
                continue;
            }
            let epoch_starts = &mut recovery.epoch_starts;
            let (segment, outcome) =
                LogSegment::open_and_recover(dir, base_offset, index_interval_bytes, |header: &BatchHeader| {
                    let epoch = header.partition_leader_epoch;
                    if epoch >= 0 && latest_epoch.is_none_or(|latest| epoch > latest) {
                        epoch_starts.push((epoch, header.base_offset));
                        latest_epoch = Some(epoch);
                    }
                })?;
            segments.push(segment);
            let log_end_offset = outcome.next_offset;
            recovery.log_end_offset = log_end_offset;
            let next_base = base_offsets.get(i + 1).copied();
            if outcome.truncated_bytes == 0 && next_base.is_some_and(|next| next != log_end_offset) {
                // Whole batches lost at its end (a crash before its roll flush finished)
                // leave it valid but short of the next segment: a hole all the same.
                recovery.torn = true;
                tracing::info!(
                    "recovered log {}: segment {} ends at offset {log_end_offset} but the next one starts at {}; \
                     log end offset now {log_end_offset}",
                    dir.display(),
                    file_name(segments.last().map(|s| s.log_path())),
                    next_base.unwrap_or_default(),
                );
            }
            if outcome.truncated_bytes > 0 {
                recovery.torn = true;
                tracing::info!(
                    "recovered log {}: truncated {} torn/corrupt bytes at position {} (offset {}) \
                     of segment {}: {}; log end offset now {log_end_offset}",
                    dir.display(),
                    outcome.truncated_bytes,
                    outcome.valid_bytes,
                    log_end_offset,
                    file_name(segments.last().map(|s| s.log_path())),
                    outcome.stop_reason.as_deref().unwrap_or("unknown"),
                );
            }
        }
        Ok(recovery)
    }

    /// Base offsets of the segments in `dir`, sorted; deletes leftovers that would confuse
    /// a later open: index files without a log file and checkpoint temp files (Kafka
    /// `LogLoader` likewise deletes stray and temporary files).
    fn scan_directory(dir: &Path) -> Result<Vec<i64>, LogError> {
        let entries = fs::read_dir(dir).map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
        let mut base_offsets = Vec::new();
        let mut index_files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(base_offset) = parse_base_offset(name, LOG_FILE_SUFFIX) {
                base_offsets.push(base_offset);
            } else if let Some(base_offset) = parse_base_offset(name, INDEX_FILE_SUFFIX) {
                index_files.push((base_offset, entry.path()));
            } else if name.ends_with(".tmp") {
                remove_file_logged(&entry.path())?;
            }
        }
        base_offsets.sort_unstable();
        for (base_offset, path) in index_files {
            if base_offsets.binary_search(&base_offset).is_err() {
                remove_file_logged(&path)?;
            }
        }
        Ok(base_offsets)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Takes a changed topic config (Kafka `UnifiedLog.updateConfig`): the next roll and the
    /// next append follow it; existing segments stay as they are. The index interval stays
    /// the one the segments were opened with.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = LogConfig {
            segment_bytes: config.segment_bytes.clamp(1, i32::MAX as u64),
            index_interval_bytes: self.config.index_interval_bytes,
            ..config
        };
    }

    /// First offset a read may ask for (see the field).
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    /// Bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(LogSegment::size_bytes).sum()
    }

    /// Base offsets of the segments, oldest first (for tools and tests).
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.iter().map(LogSegment::base_offset).collect()
    }

    /// The base offset of the active segment: it changes when the log rolls (for callers
    /// that act on a roll, as Kafka snapshots producer state then).
    pub fn active_segment_base_offset(&self) -> i64 {
        self.active().base_offset()
    }

    /// The leader-epoch cache, read-only.
    pub fn epoch_cache(&self) -> &LeaderEpochCache {
        &self.epoch_cache
    }

    fn active(&self) -> &LogSegment {
        self.segments.last().expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut LogSegment {
        self.segments.last_mut().expect("a log always has a segment")
    }

    /// Leader append (Kafka `UnifiedLog.appendAsLeader`): checks the size against
    /// `max_batch_bytes`, validates the batch fully (a compressed one's records
    /// decompressed to at most `max_batch_bytes`: more is `MESSAGE_TOO_LARGE`), assigns
    /// offsets from the log end offset and stamps `leader_epoch` into it (in place, so the
    /// caller's buffer shows what was stored), records the epoch's start offset if it is new
    /// (Kafka `maybeAssignEpochStartOffset`), and appends. A `leader_epoch` older than the
    /// newest one in the cache means a stale leader: `FencedLeaderEpoch`, nothing written.
    ///
    /// The batch is stored byte for byte as sent, compressed or not, unless the topic's
    /// `compression.type` names another codec: then the stored batch is re-encoded with it
    /// (same header fields and records, new length, attributes and CRC; Kafka
    /// `LogValidator.validateMessagesAndAssignOffsetsCompressed`), and the caller's buffer
    /// gets the offsets and epoch but keeps the producer's encoding.
    pub fn append_as_leader(&mut self, batch: &mut [u8], leader_epoch: i32) -> Result<AppendInfo, LogError> {
        let max_bytes = self.config.max_batch_bytes;
        if batch.len() > max_bytes {
            return Err(LogError::MessageTooLarge { size_bytes: batch.len(), max_bytes });
        }
        if leader_epoch < 0 {
            return Err(LogError::InvalidArgument(format!("leader epoch {leader_epoch} is negative")));
        }
        if let Some(latest_epoch) = self.epoch_cache.latest_epoch() {
            if leader_epoch < latest_epoch {
                return Err(LogError::FencedLeaderEpoch { epoch: leader_epoch, latest_epoch });
            }
        }
        let (header, mut recompressed) = self.validate_or_recompress(batch)?;
        let base_offset = self.log_end_offset;
        base_offset
            .checked_add(i64::from(header.last_offset_delta) + 1)
            .ok_or_else(|| LogError::InvalidArgument("offsets would overflow i64".to_owned()))?;
        stamp_batch(batch, base_offset, leader_epoch);
        let stored: &[u8] = match recompressed.as_mut() {
            Some(recompressed) => {
                stamp_batch(recompressed, base_offset, leader_epoch);
                recompressed
            }
            None => batch,
        };
        let header = BatchHeader { base_offset, partition_leader_epoch: leader_epoch, ..header };
        debug_assert_eq!(parse_header(stored).ok(), Some(header));

        self.maybe_roll(stored.len(), header.last_offset())?;
        self.epoch_cache.assign(leader_epoch, base_offset)?;
        self.active_mut().append(stored, &[(header, 0)])?;
        self.finish_append(header.next_offset(), header.records_count as u32)?;
        Ok(AppendInfo {
            base_offset,
            last_offset: header.last_offset(),
            records: header.records_count as u32,
            bytes: stored.len(),
        })
    }

    /// Validates a produced batch, decompressing to at most `max_batch_bytes`; re-encodes it
    /// when the topic's `compression.type` names a codec other than the batch's, and
    /// returns the re-encoded batch, its header, which must fit `max_batch_bytes` too
    /// (Kafka's RecordTooLargeException after recompression).
    fn validate_or_recompress(&self, batch: &[u8]) -> Result<(BatchHeader, Option<Vec<u8>>), LogError> {
        let max_bytes = self.config.max_batch_bytes;
        let target = match self.config.compression {
            Some(target) if parse_header(batch)?.codec() != Ok(target) => target,
            _ => return Ok((validate_batch_bounded(batch, max_bytes)?, None)),
        };
        let recompressed = recompress_batch(batch, target, max_bytes)?;
        if recompressed.len() > max_bytes {
            return Err(LogError::MessageTooLarge { size_bytes: recompressed.len(), max_bytes });
        }
        Ok((parse_header(&recompressed)?, Some(recompressed)))
    }

    /// Follower append (Kafka `UnifiedLog.appendAsFollower`): `batches` are whole batches
    /// as fetched from the leader, offsets and epochs kept. The first must start at the log
    /// end offset and the rest follow contiguously (`OffsetMismatch` otherwise); each CRC is
    /// checked; a partial trailing batch (a fetch may cut one) is ignored and not counted in
    /// `AppendInfo::bytes`. Everything is checked before anything is written. Each batch's
    /// epoch goes through the epoch cache's `assign`, as in Kafka. Compressed batches are
    /// stored as the leader stored them: only their CRC is checked, nothing decompressed.
    pub fn append_as_follower(&mut self, batches: &[u8]) -> Result<AppendInfo, LogError> {
        let mut iter = iter_batches(batches);
        let mut headers: Vec<(BatchHeader, usize)> = Vec::new();
        let mut expected_offset = self.log_end_offset;
        let mut records: u64 = 0;
        let mut start = 0;
        // Bounded by the input: each item consumes at least one batch header.
        for item in iter.by_ref() {
            let (header, bytes) = item?;
            check_batch_integrity(bytes)?;
            if header.base_offset != expected_offset {
                return Err(LogError::OffsetMismatch { expected: expected_offset, actual: header.base_offset });
            }
            expected_offset = header.next_offset();
            records += header.records_count as u64;
            headers.push((header, start));
            start += bytes.len();
        }
        let consumed = iter.position();
        debug_assert_eq!(consumed, start);
        let base_offset = self.log_end_offset;
        let Some((last_header, _)) = headers.last().copied() else {
            return Ok(AppendInfo { base_offset, last_offset: base_offset - 1, records: 0, bytes: 0 });
        };
        let records = u32::try_from(records)
            .map_err(|_| LogError::InvalidArgument(format!("{records} records in one append")))?;

        // One roll check for the whole append, as Kafka `UnifiedLog.maybeRoll` does.
        self.maybe_roll(consumed, last_header.last_offset())?;
        for (header, _) in &headers {
            if header.partition_leader_epoch >= 0 {
                self.epoch_cache.assign(header.partition_leader_epoch, header.base_offset)?;
            }
        }
        self.active_mut().append(&batches[..consumed], &headers)?;
        self.finish_append(last_header.next_offset(), records)?;
        Ok(AppendInfo { base_offset, last_offset: last_header.last_offset(), records, bytes: consumed })
    }

    fn finish_append(&mut self, next_offset: i64, records: u32) -> Result<(), LogError> {
        debug_assert!(next_offset > self.log_end_offset, "the log end offset only grows on append");
        self.log_end_offset = next_offset;
        self.unflushed_messages += u64::from(records);
        if let Some(every) = self.config.flush_every_messages {
            if self.unflushed_messages >= every {
                self.flush()?;
            }
        }
        // O(1) checks only on this hot path; the full set runs on open and truncation.
        debug_assert!(self.active().base_offset() <= self.log_end_offset);
        debug_assert!(self.epoch_cache.latest_entry().is_none_or(|e| e.start_offset < self.log_end_offset));
        Ok(())
    }

    /// Rolls to a new segment at the log end offset when the active segment is non-empty
    /// and the append would push it past `segment_bytes`, or its offsets past what a
    /// relative index offset can hold (Kafka `LogSegment.shouldRoll`, `UnifiedLog.roll`).
    /// The old segment is fsynced on a thread of its own once the previous roll's fsync has
    /// finished, so only the last two segments can have a torn tail.
    fn maybe_roll(&mut self, incoming_bytes: usize, last_offset: i64) -> Result<(), LogError> {
        let active = self.active();
        let too_big = active.size_bytes() + incoming_bytes as u64 > self.config.segment_bytes;
        let offsets_overflow = last_offset - active.base_offset() > i64::from(i32::MAX);
        if !active.is_empty() && (too_big || offsets_overflow) {
            self.roll()?;
        }
        if self.active().size_bytes() + incoming_bytes as u64 > u64::from(u32::MAX) {
            return Err(LogError::InvalidArgument(format!(
                "an append of {incoming_bytes} bytes cannot fit one segment"
            )));
        }
        Ok(())
    }

    /// Starts a new active segment at the log end offset; the old one is fsynced on a
    /// thread of its own once the previous roll's fsync has finished, so only the last two
    /// segments can have a torn tail.
    fn roll(&mut self) -> Result<(), LogError> {
        {
            self.wait_for_roll_flush()?;
            let sync = self.active_mut().deferred_flush()?;
            self.unflushed_messages = 0;
            let segment = LogSegment::create(&self.dir, self.log_end_offset, self.config.index_interval_bytes)?;
            tracing::debug!("rolled log {} to a new segment at offset {}", self.dir.display(), self.log_end_offset);
            self.segments.push(segment);
            // The segment reaches the thread through a channel so that, if no thread can be
            // started, it is still here to be flushed inline.
            let (tx, rx) = std::sync::mpsc::channel::<SegmentSync>();
            let spawned = std::thread::Builder::new().name("insync-roll-flush".into()).spawn(move || match rx.recv() {
                Ok(sync) => sync.run(),
                Err(_) => Ok(()),
            });
            match spawned {
                Ok(flush) => {
                    let _ = tx.send(sync);
                    self.roll_flush = Some(flush);
                }
                Err(e) => {
                    tracing::warn!("{}: no thread for the roll flush ({e}); flushing inline", self.dir.display());
                    self.record_roll_flush(sync.run())?;
                }
            }
        }
        Ok(())
    }

    /// Reads whole batches from the one holding `start_offset`, leaving out any batch whose
    /// last offset is ≥ `max_offset_exclusive` (a consumer passes the high watermark, a
    /// follower the log end offset). Stops before `max_bytes`, but always returns the first
    /// batch if it is below the bound, however large (Kafka KIP-74). Like Kafka, one read
    /// never crosses a segment boundary; the next fetch continues in the next segment.
    /// `start_offset == log_end_offset` → empty; outside `[log_start_offset,
    /// log_end_offset]` → `OffsetOutOfRange`. One allocation, one positional read (plus
    /// header reads to find the start from the sparse index).
    pub fn read(&self, start_offset: i64, max_offset_exclusive: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        self.read_bounded(start_offset, max_offset_exclusive, max_bytes, usize::MAX)
    }

    /// `read` with a ceiling on the first-batch exemption: the first batch is returned when
    /// it fits `max_bytes`, or, larger, when it fits `first_batch_max_bytes`; otherwise the
    /// answer is empty and nothing is read. `first_batch_max_bytes == max_bytes` is Kafka's
    /// `minOneMessage = false` (`LogSegment.read`: no exemption once an earlier partition of
    /// the same fetch returned data); `usize::MAX` is `minOneMessage = true`.
    pub fn read_bounded(
        &self,
        start_offset: i64,
        max_offset_exclusive: i64,
        max_bytes: usize,
        first_batch_max_bytes: usize,
    ) -> Result<Bytes, LogError> {
        let log_start_offset = self.log_start_offset();
        if start_offset < log_start_offset || start_offset > self.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset: start_offset,
                log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        let bound = max_offset_exclusive.min(self.log_end_offset);
        if start_offset >= bound {
            return Ok(Bytes::new());
        }
        let segment = self.segment_for(start_offset);
        let Some((position, first)) = segment.find_batch(start_offset)? else {
            debug_assert!(false, "offset {start_offset} below the log end has no batch");
            return Ok(Bytes::new());
        };
        if first.last_offset() >= bound {
            return Ok(Bytes::new());
        }
        let first_bytes = first.total_size_bytes() as u64;
        if first_bytes > max_bytes.max(first_batch_max_bytes) as u64 {
            return Ok(Bytes::new());
        }
        let available = segment.size_bytes() - position;
        let read_bytes = (max_bytes as u64).min(available).max(first_bytes);
        let mut buffer = vec![0u8; read_bytes as usize];
        segment.read_exact_at(&mut buffer, position)?;

        let mut end = 0;
        // Bounded by `buffer`: each item is a whole batch inside it.
        for item in iter_batches(&buffer) {
            let (header, bytes) = item?;
            if header.last_offset() >= bound {
                break;
            }
            end += bytes.len();
        }
        debug_assert!(end as u64 >= first_bytes, "the first batch is always returned");
        buffer.truncate(end);
        Ok(Bytes::from(buffer))
    }

    /// The segment whose offsets include `offset` (greatest base offset ≤ `offset`).
    fn segment_for(&self, offset: i64) -> &LogSegment {
        let count = self.segments.partition_point(|s| s.base_offset() <= offset);
        &self.segments[count.saturating_sub(1)]
    }

    /// Removes everything at or after `offset` (Kafka `UnifiedLog.truncateTo`): later
    /// segments are deleted, the segment holding `offset` is cut at the start of the batch
    /// holding it (so a mid-batch offset removes that whole batch), and epoch cache entries
    /// starting at or after the new end go (Kafka `LeaderEpochFileCache.truncateFromEnd`).
    /// An `offset` at or past the log end changes no data but still truncates the epoch
    /// cache at the log end, as Kafka does: a leader may have assigned an epoch start and
    /// lost leadership before writing. An `offset` before the log start empties the log
    /// and restarts it there (Kafka `truncateFullyAndStartAt`).
    pub fn truncate_to(&mut self, offset: i64) -> Result<TruncateInfo, LogError> {
        if offset < 0 {
            return Err(LogError::InvalidArgument(format!("cannot truncate to negative offset {offset}")));
        }
        if offset >= self.log_end_offset {
            self.epoch_cache.truncate_from_end(self.log_end_offset)?;
            return Ok(TruncateInfo::default());
        }
        // Kafka `UnifiedLog.truncateTo`: at or below the first segment's base, start over.
        if offset <= self.segments[0].base_offset() {
            return self.truncate_fully_and_start_at(offset);
        }
        let old_log_end_offset = self.log_end_offset;
        let old_size_bytes = self.size_bytes();

        // Newest first, so a crash part-way leaves a contiguous prefix of segments.
        let mut deleted_any = false;
        while self.segments.len() > 1 && self.active().base_offset() > offset {
            let segment = self.segments.pop().expect("more than one segment");
            segment.delete()?;
            deleted_any = true;
        }
        if deleted_any {
            sync_dir(&self.dir)?;
        }
        let active = self.active_mut();
        let Some((position, header)) = active.find_batch(offset)? else {
            return Err(LogError::InvalidArgument(format!(
                "no batch holds offset {offset} below the log end {old_log_end_offset}"
            )));
        };
        let new_log_end_offset = header.base_offset;
        active.truncate_to(position, new_log_end_offset)?;
        self.log_end_offset = new_log_end_offset;
        // A start inside the batch cut away comes down with the end (Kafka: logStartOffset =
        // min(targetOffset, logStartOffset)).
        self.log_start_offset = self.log_start_offset.min(new_log_end_offset);
        self.epoch_cache.truncate_from_end(new_log_end_offset)?;
        self.debug_check_invariants();
        // The caller logs the one INFO line that says why (the replica's divergence).
        tracing::debug!(
            "truncated log {} to offset {new_log_end_offset} (requested {offset}), removing {} records",
            self.dir.display(),
            old_log_end_offset - new_log_end_offset
        );
        Ok(TruncateInfo {
            records_removed: (old_log_end_offset - new_log_end_offset) as u64,
            bytes_removed: old_size_bytes - self.size_bytes(),
        })
    }

    /// Deletes every segment and restarts the log empty at `offset`, clearing the epoch
    /// cache (Kafka `UnifiedLog.truncateFullyAndStartAt`). A follower uses this when the
    /// leader's log starts after the follower's log end.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<TruncateInfo, LogError> {
        if offset < 0 {
            return Err(LogError::InvalidArgument(format!("cannot restart the log at negative offset {offset}")));
        }
        let info = TruncateInfo {
            records_removed: (self.log_end_offset - self.log_start_offset()) as u64,
            bytes_removed: self.size_bytes(),
        };
        // Bounded by the number of segments.
        while let Some(segment) = self.segments.pop() {
            segment.delete()?;
        }
        let segment = LogSegment::create(&self.dir, offset, self.config.index_interval_bytes)?;
        self.segments.push(segment);
        self.log_end_offset = offset;
        self.log_start_offset = offset;
        self.unflushed_messages = 0;
        self.epoch_cache.clear()?;
        tracing::info!("truncated log {} fully and restarted it at offset {offset}", self.dir.display());
        self.debug_check_invariants();
        Ok(info)
    }

    /// Fsyncs the active segment and its index, after the flush of the segment rolled last
    /// (older ones were fsynced before it).
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.wait_for_roll_flush()?;
        self.active_mut().flush()?;
        self.unflushed_messages = 0;
        Ok(())
    }

    /// Waits for the flush of the segment rolled last, if one is running. A failed roll
    /// flush fails this and every later roll and flush: after a failed fsync the kernel may
    /// have dropped the dirty pages, so retrying it proves nothing (Kafka takes the log
    /// directory offline on an I/O error).
    fn wait_for_roll_flush(&mut self) -> Result<(), LogError> {
        if let Some(flush) = self.roll_flush.take() {
            let result = flush.join().unwrap_or_else(|_| {
                Err(LogError::io("flushing a rolled segment", std::io::Error::other("the flush thread panicked")))
            });
            self.record_roll_flush(result)?;
        }
        match &self.roll_flush_failed {
            Some(message) => Err(LogError::io(
                format!("flushing a rolled segment of {} failed earlier", self.dir.display()),
                std::io::Error::other(message.clone()),
            )),
            None => Ok(()),
        }
    }

    fn record_roll_flush(&mut self, result: Result<(), LogError>) -> Result<(), LogError> {
        if let Err(e) = &result {
            tracing::error!("{}: {e}; this log takes no more rolls or flushes", self.dir.display());
            self.roll_flush_failed = Some(e.to_string());
        }
        result
    }

    /// Flushes and closes the log (a clean shutdown).
    pub fn close(mut self) -> Result<(), LogError> {
        self.flush()
    }

    /// The newest epoch in the epoch cache (Kafka `UnifiedLog.latestEpoch`).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epoch_cache.latest_epoch()
    }

    /// Records that `epoch` starts at `start_offset` — a new leader does this with its log
    /// end offset before it appends anything (Kafka `Partition.makeLeader` →
    /// `UnifiedLog.maybeAssignEpochStartOffset`), so OffsetsForLeaderEpoch answers for
    /// the new epoch at once.
    pub fn assign_epoch_start_offset(&mut self, epoch: i32, start_offset: i64) -> Result<(), LogError> {
        if start_offset > self.log_end_offset {
            return Err(LogError::InvalidArgument(format!(
                "epoch {epoch} cannot start at {start_offset}, past the log end {}",
                self.log_end_offset
            )));
        }
        self.epoch_cache.assign(epoch, start_offset)?;
        Ok(())
    }

    /// KIP-101 OffsetsForLeaderEpoch for `epoch` with this log's end offset; see
    /// [`LeaderEpochCache::end_offset_for`] (Kafka `LeaderEpochFileCache.endOffsetFor`).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epoch_cache.end_offset_for(epoch, self.log_end_offset)
    }

    /// The epoch cache as (epoch, start offset) pairs, oldest first.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.epoch_cache.entries().iter().map(|e| (e.epoch, e.start_offset)).collect()
    }

    /// Epoch of the last batch in the log, for Fetch's `last_fetched_epoch`: the cache
    /// entry covering `log_end_offset - 1` (Kafka `epochForOffset`). Unlike the cache's
    /// latest epoch it ignores an epoch a leader assigned without writing to it. `None` for
    /// an empty log.
    pub fn last_batch_epoch(&self) -> Option<i32> {
        if self.log_end_offset <= self.log_start_offset() {
            return None;
        }
        self.epoch_cache.epoch_for_offset(self.log_end_offset - 1)
    }

    fn debug_check_invariants(&self) {
        debug_assert!(!self.segments.is_empty());
        debug_assert!(
            self.segments.windows(2).all(|w| w[0].base_offset() < w[1].base_offset()),
            "segments sorted by base offset"
        );
        debug_assert!(self.log_start_offset() <= self.log_end_offset);
        debug_assert!(self.segments[0].base_offset() <= self.log_start_offset, "the start offset is in the log");
        debug_assert!(self.active().base_offset() <= self.log_end_offset);
        debug_assert!(
            !self.active().is_empty() || self.active().base_offset() == self.log_end_offset,
            "an empty active segment starts at the log end offset"
        );
        debug_assert!(
            self.epoch_cache.latest_entry().is_none_or(|e| e.start_offset <= self.log_end_offset),
            "no epoch starts past the log end"
        );
    }
}

fn file_name(path: Option<&Path>) -> String {
    path.and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn remove_file_logged(path: &Path) -> Result<(), LogError> {
    tracing::info!("deleting stray file {}", path.display());
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io(format!("deleting {}", path.display()), e)),
    }
}
