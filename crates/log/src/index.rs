//! The sparse offset index of one segment (Kafka `OffsetIndex`): 8-byte big-endian entries
//! `(relative offset u32, file position u32)`, one every `index_interval_bytes` of log data.
//! A lookup gives the greatest entry at or below the target; the segment then scans batch
//! headers forward from that position.
//!
//! Entries live in memory (32 Ki entries, 256 KiB, for a full 128 MiB segment at the
//! default interval) and reach the file on roll (written at once, fsynced on the roll
//! flush thread), `flush()` and `close()`. The last two segments' indexes are always
//! rebuilt by recovery, so entries that never reached the disk are not a correctness
//! problem; an older segment's index was fsynced before the next roll finished.
//!
//! Unlike Kafka, entries record the batch's *base* offset rather than its last offset:
//! Kafka needed the last offset for compressed v0/v1 wrapper messages; with v2 the base
//! offset lets a lookup land on the batch that holds the target, one header read sooner.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::LogError;

/// Bytes per index entry (Kafka `OffsetIndex.ENTRY_SIZE`).
pub const INDEX_ENTRY_BYTES: usize = 8;

/// One index entry: the batch starting at `base_offset + relative_offset` begins at byte
/// `position` of the segment's log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// The offset index of one segment; see the module docs.
#[derive(Debug)]
pub struct OffsetIndex {
    path: PathBuf,
    file: File,
    /// The segment's base offset; entries are relative to it.
    base_offset: i64,
    /// Strictly increasing in both fields.
    entries: Vec<IndexEntry>,
    /// How many leading entries are already in the file, so a flush writes only the rest.
    persisted_entries: usize,
}

impl OffsetIndex {
    /// Opens (creating if needed) the index file and loads its entries if they pass
    /// [`sanity_check`](Self::sanity_check) against `log_size_bytes`; otherwise returns the
    /// index empty with `false`, and the caller rebuilds it from the log (Kafka
    /// `LogLoader` rebuilds an index whose `sanityCheck` fails).
    pub fn open(path: &Path, base_offset: i64, log_size_bytes: u64) -> Result<(OffsetIndex, bool), LogError> {
        // A missing index is not "valid and empty": its segment may be large.
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| LogError::io(format!("opening index {}", path.display()), e))?;
        let file_bytes =
            file.metadata().map_err(|e| LogError::io(format!("stat of index {}", path.display()), e))?.len();
        let mut index =
            OffsetIndex { path: path.to_owned(), file, base_offset, entries: Vec::new(), persisted_entries: 0 };
        // An index larger than the log it indexes cannot be right (at most one entry per
        // batch, and a batch is at least 61 bytes), so never allocate more than that.
        if !existed || file_bytes % INDEX_ENTRY_BYTES as u64 != 0 || file_bytes > log_size_bytes {
            return Ok((index, false));
        }
        let mut raw = vec![0u8; file_bytes as usize];
        index
            .file
            .read_exact_at(&mut raw, 0)
            .map_err(|e| LogError::io(format!("reading index {}", path.display()), e))?;
        let entries: Vec<IndexEntry> = raw
            .chunks_exact(INDEX_ENTRY_BYTES)
            .map(|chunk| IndexEntry {
                relative_offset: u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                position: u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
            })
            .collect();
        if !Self::sanity_check(&entries, log_size_bytes) {
            return Ok((index, false));
        }
        index.persisted_entries = entries.len();
        index.entries = entries;
        Ok((index, true))
    }

    /// Kafka `OffsetIndex.sanityCheck`, a bit stricter: offsets and positions strictly
    /// increasing, every position inside the log.
    pub fn sanity_check(entries: &[IndexEntry], log_size_bytes: u64) -> bool {
        entries.windows(2).all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position)
            && entries.last().is_none_or(|last| u64::from(last.position) < log_size_bytes)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Absolute offset of an entry.
    pub fn absolute_offset(&self, entry: IndexEntry) -> i64 {
        self.base_offset + i64::from(entry.relative_offset)
    }

    /// Adds an entry for the batch starting at `offset`, at `position`. Callers append in
    /// increasing order; the segment guarantees `offset - base_offset` fits in a u32.
    pub fn append(&mut self, offset: i64, position: u32) {
        let relative = offset - self.base_offset;
        debug_assert!(
            (0..=i64::from(u32::MAX)).contains(&relative),
            "offset {offset} not relative to {}",
            self.base_offset
        );
        let entry = IndexEntry { relative_offset: relative as u32, position };
        debug_assert!(
            self.entries
                .last()
                .is_none_or(|last| { last.relative_offset < entry.relative_offset && last.position < entry.position }),
            "index entries must increase: {:?} then {entry:?}",
            self.entries.last()
        );
        self.entries.push(entry);
    }

    /// Position of the greatest entry with offset ≤ `target_offset`, or 0 (the segment
    /// start) when there is none (Kafka `OffsetIndex.lookup`).
    pub fn lookup(&self, target_offset: i64) -> u32 {
        let count = self.entries.partition_point(|entry| self.absolute_offset(*entry) <= target_offset);
        count.checked_sub(1).map_or(0, |index| self.entries[index].position)
    }

    /// Drops entries at or after `offset` (Kafka `OffsetIndex.truncateTo`), in memory and
    /// in the file.
    pub fn truncate_to_offset(&mut self, offset: i64) -> Result<(), LogError> {
        let keep = self.entries.partition_point(|entry| self.absolute_offset(*entry) < offset);
        self.truncate_entries(keep)
    }

    /// Replaces all entries (after a rebuild) and clears the file; a flush writes them.
    pub fn reset(&mut self, entries: Vec<IndexEntry>) -> Result<(), LogError> {
        self.truncate_entries(0)?;
        self.entries = entries;
        Ok(())
    }

    fn truncate_entries(&mut self, keep: usize) -> Result<(), LogError> {
        self.entries.truncate(keep);
        if self.persisted_entries > keep {
            self.persisted_entries = keep;
            self.file
                .set_len((keep * INDEX_ENTRY_BYTES) as u64)
                .map_err(|e| LogError::io(format!("truncating index {}", self.path.display()), e))?;
        }
        Ok(())
    }

    /// Writes entries not yet in the file, then fsyncs it.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.write_pending()?;
        self.file.sync_data().map_err(|e| LogError::io(format!("fsyncing index {}", self.path.display()), e))
    }

    /// A handle to fsync the file later, from another thread (after [`Self::write_pending`]).
    pub(crate) fn sync_handle(&self) -> Result<(File, PathBuf), LogError> {
        let file =
            self.file.try_clone().map_err(|e| LogError::io(format!("duplicating {}", self.path.display()), e))?;
        Ok((file, self.path.clone()))
    }

    /// Writes entries not yet in the file (no fsync).
    pub(crate) fn write_pending(&mut self) -> Result<(), LogError> {
        let pending = &self.entries[self.persisted_entries..];
        if !pending.is_empty() {
            let mut raw = Vec::with_capacity(pending.len() * INDEX_ENTRY_BYTES);
            for entry in pending {
                raw.extend_from_slice(&entry.relative_offset.to_be_bytes());
                raw.extend_from_slice(&entry.position.to_be_bytes());
            }
            let at = (self.persisted_entries * INDEX_ENTRY_BYTES) as u64;
            self.file
                .write_all_at(&raw, at)
                .map_err(|e| LogError::io(format!("writing index {}", self.path.display()), e))?;
            self.persisted_entries = self.entries.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_greatest_entry_at_or_below_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000100.index");
        let (mut index, valid) = OffsetIndex::open(&path, 100, 0).unwrap();
        assert!(!valid, "a missing index needs a rebuild");
        assert_eq!(index.lookup(150), 0);
        index.append(110, 4200);
        index.append(130, 8400);
        assert_eq!(index.lookup(100), 0);
        assert_eq!(index.lookup(109), 0);
        assert_eq!(index.lookup(110), 4200);
        assert_eq!(index.lookup(129), 4200);
        assert_eq!(index.lookup(10_000), 8400);
        index.flush().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16);

        let (reloaded, valid) = OffsetIndex::open(&path, 100, 9000).unwrap();
        assert!(valid);
        assert_eq!(reloaded.entries(), index.entries());
        // Log shorter than the last position: the index is stale and must be rebuilt.
        let (_, valid) = OffsetIndex::open(&path, 100, 8400).unwrap();
        assert!(!valid);

        index.truncate_to_offset(130).unwrap();
        assert_eq!(index.entries().len(), 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8);
        std::fs::write(&path, [1, 2, 3]).unwrap();
        let (_, valid) = OffsetIndex::open(&path, 100, 9000).unwrap();
        assert!(!valid);
    }
}
