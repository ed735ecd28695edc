//! One log segment (Kafka `LogSegment`): `<dir>/<20-digit base offset>.log` holding whole
//! RecordBatch v2 batches back to back, plus its sparse [`OffsetIndex`] in `.index`.
//! Appends, positional reads, header scans to find the batch holding an offset, recovery
//! (CRC scan and truncation of a torn tail, Kafka `LogSegment.recover`), and truncation.
//! `PartitionLog` (in `partition_log.rs`) owns the list of segments and decides when to roll.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::batch::{check_batch_integrity, parse_header, BatchHeader, BATCH_HEADER_BYTES};
use crate::error::LogError;
use crate::index::{IndexEntry, OffsetIndex};

/// Suffix of segment data files (Kafka `LogFileUtils.LOG_FILE_SUFFIX`).
pub const LOG_FILE_SUFFIX: &str = ".log";
/// Suffix of offset index files (Kafka `LogFileUtils.INDEX_FILE_SUFFIX`).
pub const INDEX_FILE_SUFFIX: &str = ".index";

/// How much a scan reads at a time: big enough that recovery of a 128 MiB segment is a
/// few hundred reads, small enough to stay out of the way of the page cache.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// `00000000000000000042` — 20 digits, Kafka `LogFileUtils.filenamePrefixFromOffset`, so
/// names sort by offset.
pub fn file_name_prefix(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// The base offset named by a segment file name such as `00000000000000000042.log`.
pub fn parse_base_offset(file_name: &str, suffix: &str) -> Option<i64> {
    let stem = file_name.strip_suffix(suffix)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// What recovery found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryOutcome {
    /// Bytes of whole, valid, contiguous batches from the start of the segment.
    pub valid_bytes: u64,
    /// Bytes cut off after them (a torn write or corruption).
    pub truncated_bytes: u64,
    /// The offset after the last valid batch: the log end offset if this is the last segment.
    pub next_offset: i64,
    /// Why the scan stopped early, if it did.
    pub stop_reason: Option<String>,
}

/// What a full scan of a segment found.
struct ScanResult {
    /// Bytes of whole (and, when verifying, valid) batches from the start.
    valid_bytes: u64,
    /// Offset after the last such batch.
    next_offset: i64,
    /// Index entries for those batches, by the `index_interval_bytes` rule.
    entries: Vec<IndexEntry>,
    /// Why the scan stopped before the end of the file, if it did.
    stop_reason: Option<String>,
}

/// One outcome of [`BatchScanner::next`].
enum Scanned {
    /// A whole batch at `position`.
    Batch { position: u64, header: BatchHeader },
    /// Clean end of the data.
    End,
    /// The bytes at `position` are not a whole valid batch.
    Bad { position: u64, reason: String },
}

/// Reads a segment's batches sequentially through a reusable buffer, so recovery and index
/// rebuilds cost a few large reads instead of two syscalls per batch. The buffer grows only
/// to the size of the largest batch, itself bounded by the file size.
struct BatchScanner<'a> {
    file: &'a File,
    file_bytes: u64,
    position: u64,
    buffer: Vec<u8>,
    /// File position of `buffer[0]`.
    buffer_start: u64,
    verify_crc: bool,
}

impl<'a> BatchScanner<'a> {
    fn new(file: &'a File, file_bytes: u64, start: u64, verify_crc: bool) -> BatchScanner<'a> {
        BatchScanner { file, file_bytes, position: start, buffer: Vec::new(), buffer_start: start, verify_crc }
    }

    /// Makes `len` bytes from `self.position` available in the buffer; false if the file
    /// ends first.
    fn fill(&mut self, len: usize) -> std::io::Result<bool> {
        let end = self.position.saturating_add(len as u64);
        if end > self.file_bytes {
            return Ok(false);
        }
        let buffer_end = self.buffer_start + self.buffer.len() as u64;
        if self.position >= self.buffer_start && end <= buffer_end {
            return Ok(true);
        }
        let want = (self.file_bytes - self.position).min(len.max(SCAN_CHUNK_BYTES) as u64);
        self.buffer.resize(want as usize, 0);
        self.file.read_exact_at(&mut self.buffer, self.position)?;
        self.buffer_start = self.position;
        Ok(true)
    }

    fn slice(&self, len: usize) -> &[u8] {
        let at = (self.position - self.buffer_start) as usize;
        &self.buffer[at..at + len]
    }

    fn next(&mut self) -> std::io::Result<Scanned> {
        let position = self.position;
        if position == self.file_bytes {
            return Ok(Scanned::End);
        }
        let bad = |reason: String| Ok(Scanned::Bad { position, reason });
        if !self.fill(BATCH_HEADER_BYTES)? {
            return bad(format!("{} trailing bytes are shorter than a batch header", self.file_bytes - position));
        }
        let header = match parse_header(self.slice(BATCH_HEADER_BYTES)) {
            Ok(header) => header,
            Err(error) => return bad(error.to_string()),
        };
        let total = header.total_size_bytes();
        if !self.fill(total)? {
            return bad(format!(
                "batch of {total} bytes runs past the end of the file ({} bytes left)",
                self.file_bytes - position
            ));
        }
        if self.verify_crc {
            if let Err(error) = check_batch_integrity(self.slice(total)) {
                return bad(error.to_string());
            }
        }
        self.position += total as u64;
        Ok(Scanned::Batch { position, header })
    }
}

/// The fsyncs of a rolled segment, detached from it (see [`LogSegment::deferred_flush`]).
#[derive(Debug)]
pub struct SegmentSync {
    log_file: File,
    log_path: PathBuf,
    index_file: File,
    index_path: PathBuf,
}

impl SegmentSync {
    /// Fsyncs the log file, then the index.
    pub fn run(self) -> Result<(), LogError> {
        self.log_file.sync_data().map_err(|e| LogError::io(format!("fsyncing {}", self.log_path.display()), e))?;
        self.index_file
            .sync_data()
            .map_err(|e| LogError::io(format!("fsyncing index {}", self.index_path.display()), e))
    }
}

/// One segment; see the module docs.
#[derive(Debug)]
pub struct LogSegment {
    /// Offset of the first batch this segment may hold; names the files.
    base_offset: i64,
    log_path: PathBuf,
    /// Opened read+write: reads use `read_at`, appends `write_at` at `size_bytes`, so
    /// readers and the writer never share a file cursor.
    log_file: File,
    /// Bytes of whole batches in the file; appends go here. Trusted over the file length,
    /// which may briefly be larger after a failed write.
    size_bytes: u64,
    index: OffsetIndex,
    /// Log bytes appended since the last index entry (Kafka `bytesSinceLastIndexEntry`).
    bytes_since_last_index_entry: u64,
    /// Kafka `index.interval.bytes`.
    index_interval_bytes: u32,
}

impl LogSegment {
    /// Creates a new empty segment at `base_offset` (replacing stale files of that name)
    /// and fsyncs the directory so the new file survives a crash.
    pub fn create(dir: &Path, base_offset: i64, index_interval_bytes: u32) -> Result<LogSegment, LogError> {
        debug_assert!(base_offset >= 0);
        let log_path = dir.join(format!("{}{LOG_FILE_SUFFIX}", file_name_prefix(base_offset)));
        let index_path = dir.join(format!("{}{INDEX_FILE_SUFFIX}", file_name_prefix(base_offset)));
        let log_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)
            .map_err(|e| LogError::io(format!("creating segment {}", log_path.display()), e))?;
        let (mut index, _) = OffsetIndex::open(&index_path, base_offset, 0)?;
        index.reset(Vec::new())?;
        crate::checkpoint::sync_dir(dir)?;
        Ok(LogSegment {
            base_offset,
            log_path,
            log_file,
            size_bytes: 0,
            index,
            bytes_since_last_index_entry: 0,
            index_interval_bytes,
        })
    }

    /// Opens an existing older segment. Its index is loaded if sane, else rebuilt by a header
    /// scan (no CRC: older segments were fsynced whole when they rolled).
    pub fn open(dir: &Path, base_offset: i64, index_interval_bytes: u32) -> Result<LogSegment, LogError> {
        let (mut segment, index_valid) = Self::open_files(dir, base_offset, index_interval_bytes)?;
        let last_entry = segment.index.entries().last().copied();
        let index_usable = index_valid
            && last_entry.is_none_or(|last| {
                // A full check would read a header per entry; the last entry is the one most
                // likely to be stale, so check that it still points at its batch.
                matches!(
                    segment.read_header_at(u64::from(last.position)),
                    Ok(Some(header)) if header.base_offset == segment.index.absolute_offset(last)
                )
            });
        if index_usable {
            let last_entry_position = last_entry.map_or(0, |e| u64::from(e.position));
            segment.bytes_since_last_index_entry = segment.size_bytes - last_entry_position;
        } else {
            tracing::info!("rebuilding offset index {} (missing or invalid)", segment.index.path().display());
            segment.rebuild_index()?;
        }
        Ok(segment)
    }

    /// Opens the last segment of a log and recovers it; see [`recover`](Self::recover).
    pub fn open_and_recover(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        on_batch: impl FnMut(&BatchHeader),
    ) -> Result<(LogSegment, RecoveryOutcome), LogError> {
        let (mut segment, _) = Self::open_files(dir, base_offset, index_interval_bytes)?;
        let outcome = segment.recover(on_batch)?;
        Ok((segment, outcome))
    }

    pub(crate) fn open_files(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
    ) -> Result<(LogSegment, bool), LogError> {
        let log_path = dir.join(format!("{}{LOG_FILE_SUFFIX}", file_name_prefix(base_offset)));
        let index_path = dir.join(format!("{}{INDEX_FILE_SUFFIX}", file_name_prefix(base_offset)));
        let log_file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(|e| LogError::io(format!("opening segment {}", log_path.display()), e))?;
        let size_bytes =
            log_file.metadata().map_err(|e| LogError::io(format!("stat of segment {}", log_path.display()), e))?.len();
        let (index, index_valid) = OffsetIndex::open(&index_path, base_offset, size_bytes)?;
        let segment = LogSegment {
            base_offset,
            log_path,
            log_file,
            size_bytes,
            index,
            bytes_since_last_index_entry: 0,
            index_interval_bytes,
        };
        Ok((segment, index_valid))
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn index(&self) -> &OffsetIndex {
        &self.index
    }

    /// Scans the whole segment checking each batch's CRC and that offsets are contiguous
    /// from the base offset, truncates the file at the first bad batch, and rebuilds the
    /// index (Kafka `LogSegment.recover`). `on_batch` sees every valid batch, in order, so
    /// the caller can rebuild the leader-epoch cache as Kafka does.
    pub fn recover(&mut self, mut on_batch: impl FnMut(&BatchHeader)) -> Result<RecoveryOutcome, LogError> {
        let ScanResult { valid_bytes, next_offset, entries, stop_reason } = self.scan(true, &mut on_batch)?;
        let truncated_bytes = self.size_bytes - valid_bytes;
        if truncated_bytes > 0 {
            self.log_file
                .set_len(valid_bytes)
                .map_err(|e| LogError::io(format!("truncating torn tail of {}", self.log_path.display()), e))?;
            self.log_file.sync_data().map_err(|e| LogError::io(format!("fsyncing {}", self.log_path.display()), e))?;
            self.size_bytes = valid_bytes;
        }
        self.install_index(entries)?;
        self.index.flush()?;
        Ok(RecoveryOutcome { valid_bytes, truncated_bytes, next_offset, stop_reason })
    }

    fn rebuild_index(&mut self) -> Result<(), LogError> {
        let ScanResult { valid_bytes, entries, stop_reason, .. } = self.scan(false, &mut |_| {})?;
        if let Some(reason) = stop_reason {
            // An older segment should be whole; index what is readable and say so loudly
            // rather than refusing to start.
            tracing::warn!("segment {} is unreadable after byte {valid_bytes}: {reason}", self.log_path.display());
        }
        self.install_index(entries)?;
        self.index.flush()
    }

    fn install_index(&mut self, entries: Vec<IndexEntry>) -> Result<(), LogError> {
        let last_entry_position = entries.last().map_or(0, |e| u64::from(e.position));
        self.bytes_since_last_index_entry = self.size_bytes.saturating_sub(last_entry_position);
        self.index.reset(entries)
    }

    /// Scans batches from the start of the segment, stopping at the first one that is not
    /// whole or not contiguous in offsets; with `verify` also at the first bad CRC.
    fn scan(&self, verify: bool, on_batch: &mut dyn FnMut(&BatchHeader)) -> Result<ScanResult, LogError> {
        let mut scanner = BatchScanner::new(&self.log_file, self.size_bytes, 0, verify);
        let mut result =
            ScanResult { valid_bytes: 0, next_offset: self.base_offset, entries: Vec::new(), stop_reason: None };
        let mut bytes_since_entry: u64 = 0;
        // Bounded: every iteration advances by at least one batch header or stops.
        loop {
            let scanned =
                scanner.next().map_err(|e| LogError::io(format!("reading {}", self.log_path.display()), e))?;
            let (position, header) = match scanned {
                Scanned::End => {
                    result.valid_bytes = scanner.position;
                    return Ok(result);
                }
                Scanned::Bad { position, reason } => {
                    result.valid_bytes = position;
                    result.stop_reason = Some(reason);
                    return Ok(result);
                }
                Scanned::Batch { position, header } => (position, header),
            };
            let misplaced = if header.base_offset != result.next_offset {
                Some(format!("batch at offset {} where {} was expected", header.base_offset, result.next_offset))
            } else if header.last_offset() - self.base_offset > i64::from(u32::MAX) {
                Some(format!("offset {} does not fit this segment", header.last_offset()))
            } else {
                None
            };
            // Checked even without `verify`: index entries must stay monotonic.
            if misplaced.is_some() {
                result.valid_bytes = position;
                result.stop_reason = misplaced;
                return Ok(result);
            }
            // Same rule as `append`, so a rebuilt index equals the original.
            if bytes_since_entry > u64::from(self.index_interval_bytes) {
                result.entries.push(IndexEntry {
                    relative_offset: (header.base_offset - self.base_offset) as u32,
                    position: position as u32,
                });
                bytes_since_entry = 0;
            }
            bytes_since_entry += header.total_size_bytes() as u64;
            result.next_offset = header.next_offset();
            on_batch(&header);
        }
    }

    /// Appends whole batches (`bytes` = their concatenation; `batches` = each header with
    /// its start within `bytes`) at the end of the file with one write, and indexes them
    /// (Kafka `LogSegment.append`: an entry when more than `index_interval_bytes` were
    /// written since the last one). On a write error the file is cut back to its old size
    /// and nothing in memory changes.
    pub fn append(&mut self, bytes: &[u8], batches: &[(BatchHeader, usize)]) -> Result<(), LogError> {
        debug_assert!(!batches.is_empty());
        debug_assert_eq!(batches.iter().map(|(h, _)| h.total_size_bytes()).sum::<usize>(), bytes.len());
        debug_assert!(self.size_bytes + bytes.len() as u64 <= u64::from(u32::MAX));
        if let Err(error) = self.log_file.write_all_at(bytes, self.size_bytes) {
            // Best effort: leave no partial batch behind for the next append to follow.
            let _ = self.log_file.set_len(self.size_bytes);
            return Err(LogError::io(format!("appending to {}", self.log_path.display()), error));
        }
        for (header, relative_position) in batches {
            debug_assert!(header.base_offset >= self.base_offset);
            if self.bytes_since_last_index_entry > u64::from(self.index_interval_bytes) {
                let position = self.size_bytes + *relative_position as u64;
                self.index.append(header.base_offset, position as u32);
                self.bytes_since_last_index_entry = 0;
            }
            self.bytes_since_last_index_entry += header.total_size_bytes() as u64;
        }
        self.size_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Reads the header of the batch at `position`; `None` at the end of the segment.
    pub fn read_header_at(&self, position: u64) -> Result<Option<BatchHeader>, LogError> {
        if position >= self.size_bytes {
            return Ok(None);
        }
        let mut raw = [0u8; BATCH_HEADER_BYTES];
        let available = (self.size_bytes - position).min(BATCH_HEADER_BYTES as u64) as usize;
        self.log_file
            .read_exact_at(&mut raw[..available], position)
            .map_err(|e| LogError::io(format!("reading {}", self.log_path.display()), e))?;
        let header = parse_header(&raw[..available])?;
        if position + header.total_size_bytes() as u64 > self.size_bytes {
            return Err(LogError::CorruptBatch(crate::batch::BatchError::BadLength {
                batch_length: header.batch_length,
                buffer_bytes: (self.size_bytes - position) as usize,
            }));
        }
        Ok(Some(header))
    }

    /// The first batch whose last offset is ≥ `target_offset`, with its position (Kafka
    /// `LogSegment.translateOffset`): index lookup, then header reads forward. The scan is
    /// bounded by the index interval, as entries are at most that far apart.
    pub fn find_batch(&self, target_offset: i64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let mut position = u64::from(self.index.lookup(target_offset));
        while let Some(header) = self.read_header_at(position)? {
            if header.last_offset() >= target_offset {
                return Ok(Some((position, header)));
            }
            position += header.total_size_bytes() as u64;
        }
        Ok(None)
    }

    /// Reads `len` bytes at `position` into `out` (one positional read).
    pub fn read_exact_at(&self, out: &mut [u8], position: u64) -> Result<(), LogError> {
        debug_assert!(position + out.len() as u64 <= self.size_bytes);
        self.log_file
            .read_exact_at(out, position)
            .map_err(|e| LogError::io(format!("reading {}", self.log_path.display()), e))
    }

    /// Cuts the segment at `position` (a batch boundary holding `offset`, the new end) and
    /// drops index entries at or after `offset` (Kafka `LogSegment.truncateTo`).
    pub fn truncate_to(&mut self, position: u64, offset: i64) -> Result<(), LogError> {
        debug_assert!(position <= self.size_bytes);
        self.log_file
            .set_len(position)
            .map_err(|e| LogError::io(format!("truncating {}", self.log_path.display()), e))?;
        self.size_bytes = position;
        self.index.truncate_to_offset(offset)?;
        let last_entry_position = self.index.entries().last().map_or(0, |e| u64::from(e.position));
        self.bytes_since_last_index_entry = position.saturating_sub(last_entry_position);
        Ok(())
    }

    /// Fsyncs the log file, then writes and fsyncs the index (Kafka `LogSegment.flush`).
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.log_file.sync_data().map_err(|e| LogError::io(format!("fsyncing {}", self.log_path.display()), e))?;
        self.index.flush()
    }

    /// The same flush, to run later on another thread: the index entries are written now
    /// (cheap), the two fsyncs (tens of milliseconds for a full segment) when the returned
    /// [`SegmentSync`] runs. For a segment that takes no more appends (rolled).
    pub fn deferred_flush(&mut self) -> Result<SegmentSync, LogError> {
        self.index.write_pending()?;
        let log_file = self
            .log_file
            .try_clone()
            .map_err(|e| LogError::io(format!("duplicating {}", self.log_path.display()), e))?;
        let (index_file, index_path) = self.index.sync_handle()?;
        Ok(SegmentSync { log_file, log_path: self.log_path.clone(), index_file, index_path })
    }

    /// Deletes both files. The caller fsyncs the directory once for a group of deletions.
    pub fn delete(self) -> Result<(), LogError> {
        let index_path = self.index.path().to_owned();
        let log_path = self.log_path.clone();
        drop(self);
        for path in [&log_path, &index_path] {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io(format!("deleting {}", path.display()), e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{stamp_batch, BatchBuilder};

    fn batch_at(offset: i64, records: usize) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for i in 0..records {
            builder.push(None, Some(format!("value-{offset}-{i}").as_bytes()), 1000);
        }
        let mut batch = builder.build().to_vec();
        stamp_batch(&mut batch, offset, 0);
        batch
    }

    #[test]
    fn file_names_are_twenty_digit_base_offsets() {
        assert_eq!(file_name_prefix(42), "00000000000000000042");
        assert_eq!(parse_base_offset("00000000000000000042.log", LOG_FILE_SUFFIX), Some(42));
        assert_eq!(parse_base_offset("42.log", LOG_FILE_SUFFIX), None);
        assert_eq!(parse_base_offset("0000000000000000004x.log", LOG_FILE_SUFFIX), None);
        assert_eq!(parse_base_offset("00000000000000000042.index", LOG_FILE_SUFFIX), None);
    }

    #[test]
    fn append_index_find_and_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = LogSegment::create(dir.path(), 100, 256).unwrap();
        let mut offset = 100;
        let mut positions = Vec::new();
        for _ in 0..50 {
            let batch = batch_at(offset, 3);
            let header = parse_header(&batch).unwrap();
            positions.push((offset, segment.size_bytes()));
            segment.append(&batch, &[(header, 0)]).unwrap();
            offset += 3;
        }
        assert!(segment.index().entries().len() > 5, "sparse index has entries");
        for (base, position) in &positions {
            for target in *base..*base + 3 {
                let (found_position, header) = segment.find_batch(target).unwrap().unwrap();
                assert_eq!((found_position, header.base_offset), (*position, *base));
            }
        }
        assert!(segment.find_batch(offset).unwrap().is_none());
        let entries = segment.index().entries().to_vec();
        segment.flush().unwrap();
        drop(segment);

        std::fs::remove_file(dir.path().join("00000000000000000100.index")).unwrap();
        let reopened = LogSegment::open(dir.path(), 100, 256).unwrap();
        assert_eq!(reopened.index().entries(), &entries[..], "rebuilt index equals original");
    }
}
