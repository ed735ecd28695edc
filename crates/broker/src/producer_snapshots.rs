//! Producer-state snapshots of one partition, after Kafka's `ProducerStateManager`:
//! `<offset>.snapshot` files in the log directory hold the idempotent-producer table as of
//! that offset, so opening or truncating a log replays only the batches after the newest
//! usable snapshot instead of the whole log. A snapshot is written to a temp file and
//! renamed, and carries a CRC, so a torn or corrupt one is skipped, never believed.
//!
//! Snapshots taken at a segment roll are not fsynced: on ext4 (data=ordered) an fsync there
//! can wait for the write-back of the segment just rolled, under the partition lock of the
//! produce path. Such a snapshot lost to a machine crash only means a longer replay; its CRC
//! keeps a torn one from being believed. The snapshot of a clean shutdown is fsynced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use insync_log::batch::iter_batches;
use insync_log::segment::parse_base_offset;
use insync_log::PartitionLog;
use insync_replication::{BatchMetadata, ProducerStateTable};
use insync_types::Offset;

/// Kafka's snapshot file suffix (`LogFileUtils.PRODUCER_SNAPSHOT_FILE_SUFFIX`).
const SNAPSHOT_SUFFIX: &str = ".snapshot";
/// Ends in `.tmp` so `PartitionLog::open` deletes one a crash left behind.
const TEMP_SUFFIX: &str = ".snapshot.tmp";
/// Older snapshots only help if the newest ones are corrupt or truncated away; three
/// bound the disk use while still surviving one bad file.
const SNAPSHOTS_TO_KEEP: usize = 3;
/// Bytes read per log chunk while replaying; one read never crosses a segment.
const REPLAY_CHUNK_BYTES: usize = 4 << 20;

/// `<20-digit zero-padded offset>.snapshot`, like segment file names.
fn snapshot_path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))
}

/// The producer table for `log`: the newest snapshot inside `[log start, log end]` that
/// decodes, plus the batches after it; without one, every batch from the log start.
/// Deletes snapshots outside that range first: below the start they describe deleted data
/// (Kafka drops them when the log start moves), above the end they describe data a crash
/// or truncation removed, and would be wrong once the log grows past them again.
pub(crate) fn restore(log: &PartitionLog, dir: &Path) -> ProducerStateTable {
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    let mut snapshots = list_snapshots(dir);
    snapshots.retain(|(offset, path)| {
        let inside = (start..=end).contains(offset);
        if !inside {
            remove_logged(path, "outside the log");
        }
        inside
    });
    let (from, mut table) = newest_valid(&snapshots).unwrap_or_else(|| (start, ProducerStateTable::new()));
    replay(log, &mut table, from);
    table
}

/// Writes `table`, which must cover exactly the batches below `end_offset`, as the snapshot
/// for `end_offset` (replacing one at the same offset), then deletes all but the newest
/// [`SNAPSHOTS_TO_KEEP`]. With `durable`, the file and the directory are fsynced before it
/// returns.
pub(crate) fn write(dir: &Path, table: &ProducerStateTable, end_offset: Offset, durable: bool) -> io::Result<()> {
    if end_offset < 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("snapshot at negative offset {end_offset}")));
    }
    let bytes = table.encode_snapshot(end_offset);
    let path = snapshot_path(dir, end_offset);
    let temp = dir.join(format!("{end_offset:020}{TEMP_SUFFIX}"));
    let written = write_file(&temp, &bytes, durable).and_then(|()| fs::rename(&temp, &path));
    if let Err(e) = written {
        // Best effort: a leftover temp file is also deleted by the next log open.
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    if durable {
        File::open(dir)?.sync_all()?;
    }
    let snapshots = list_snapshots(dir);
    let excess = snapshots.len().saturating_sub(SNAPSHOTS_TO_KEEP);
    for (_, old) in &snapshots[..excess] {
        remove_logged(old, "older than the newest snapshots");
    }
    Ok(())
}

/// Deletes the snapshots above `offset`, whose data a log truncation to `offset` removed
/// (Kafka `ProducerStateManager.truncateAndReload`); call `restore` afterwards to rebuild
/// the table. The directory is fsynced after, so a deletion is not lost to a crash and the
/// snapshot believed once the log grows past its offset again with other batches.
pub(crate) fn truncate(dir: &Path, offset: Offset) {
    let above: Vec<_> = list_snapshots(dir).into_iter().filter(|(o, _)| *o > offset).collect();
    for (_, path) in &above {
        remove_logged(path, "above the truncation offset");
    }
    if !above.is_empty() {
        if let Err(error) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %dir.display(), %error, "cannot fsync the log directory after deleting snapshots");
        }
    }
}

fn write_file(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    file.write_all(bytes)?;
    if durable {
        file.sync_all()?;
    }
    Ok(())
}

/// The snapshots in `dir`, oldest first. A directory that cannot be listed has none: the
/// caller then rebuilds from the log, which is slower but correct.
fn list_snapshots(dir: &Path) -> Vec<(Offset, PathBuf)> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot list producer snapshots");
            return Vec::new();
        }
    };
    let mut snapshots: Vec<(Offset, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let offset = parse_base_offset(entry.file_name().to_str()?, SNAPSHOT_SUFFIX)?;
            Some((offset, entry.path()))
        })
        .collect();
    snapshots.sort_unstable_by_key(|(offset, _)| *offset);
    snapshots
}

/// The newest snapshot of `snapshots` (oldest first) that reads and decodes, and whose
/// content is for the offset its name says (a renamed file is as wrong as a corrupt one).
fn newest_valid(snapshots: &[(Offset, PathBuf)]) -> Option<(Offset, ProducerStateTable)> {
    for (offset, path) in snapshots.iter().rev() {
        let decoded = read_bounded(path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| ProducerStateTable::decode_snapshot(&bytes).map_err(|e| e.to_string()));
        match decoded {
            Ok((end_offset, table)) if end_offset == *offset => return Some((end_offset, table)),
            Ok((end_offset, _)) => tracing::warn!(
                path = %path.display(),
                end_offset,
                "skipping producer snapshot whose content is for another offset"
            ),
            Err(error) => tracing::warn!(path = %path.display(), %error, "skipping unreadable producer snapshot"),
        }
    }
    None
}

/// Records every batch of `log` from `from` to the log end into `table`. A batch wholly
/// below `from` is already in the snapshot, so it is skipped if a read returns it.
fn replay(log: &PartitionLog, table: &mut ProducerStateTable, from: Offset) {
    let end = log.log_end_offset();
    let mut offset = from;
    while offset < end {
        let chunk = match log.read(offset, end, REPLAY_CHUNK_BYTES) {
            Ok(chunk) => chunk,
            Err(error) => {
                tracing::warn!(dir = %log.dir().display(), offset, %error, "producer state replay stopped early");
                break;
            }
        };
        let mut next = offset;
        for (header, _) in iter_batches(&chunk).map_while(Result::ok) {
            if header.producer_id >= 0 && header.last_offset() >= from {
                let batch = BatchMetadata {
                    first_sequence: header.base_sequence,
                    last_sequence: header.base_sequence.wrapping_add(header.last_offset_delta),
                    first_offset: header.base_offset,
                    last_offset: header.last_offset(),
                };
                table.record(header.producer_id, header.producer_epoch, batch);
            }
            next = header.next_offset();
        }
        if next <= offset {
            break; // no progress: never loop forever on a log we cannot parse
        }
        offset = next;
    }
}

/// Snapshots are an optimisation: failing to delete one is logged, not fatal. A stale one
/// left behind is deleted by the next `restore` (outside the log) or `write` (too old).
/// The largest snapshot file read (a file on disk is untrusted input): 64 MiB holds about
/// half a million producers with their 5 batches each.
const MAX_SNAPSHOT_BYTES: u64 = 64 << 20;

/// A snapshot file's bytes, refusing one larger than `MAX_SNAPSHOT_BYTES` before reading it.
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let size = fs::metadata(path)?.len();
    if size > MAX_SNAPSHOT_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{size} bytes, more than the {MAX_SNAPSHOT_BYTES} a snapshot may have"),
        ));
    }
    fs::read(path)
}

fn remove_logged(path: &Path, why: &'static str) {
    match fs::remove_file(path) {
        Ok(()) => tracing::debug!(path = %path.display(), why, "deleted producer snapshot"),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(path = %path.display(), why, %error, "cannot delete producer snapshot"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use insync_log::{BatchBuilder, LogConfig};

    use super::*;

    /// A log directory removed when the test ends (the broker has no `tempfile` dependency).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let name =
                format!("insync-producer-snapshots-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
            let dir = std::env::temp_dir().join(name);
            fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A log plus every idempotent batch appended to it, the oracle the tests compare with:
    /// the table built from the appends themselves, as the leader records them.
    struct TestLog {
        log: PartitionLog,
        appended: Vec<(i64, i16, BatchMetadata)>,
        sequences: std::collections::HashMap<(i64, i16), i32>,
        dir: TempDir,
    }

    impl TestLog {
        fn new(config: LogConfig) -> TestLog {
            let dir = TempDir::new();
            let log = PartitionLog::open(&dir.0, config).expect("open log");
            TestLog { log, appended: Vec::new(), sequences: Default::default(), dir }
        }

        fn dir(&self) -> &Path {
            &self.dir.0
        }

        /// Appends one batch of `records` records, idempotent unless `producer_id` < 0.
        fn append(&mut self, producer_id: i64, epoch: i16, records: i32) {
            let sequence = self.sequences.entry((producer_id, epoch)).or_insert(0);
            let first_sequence = if producer_id < 0 { -1 } else { *sequence };
            let mut builder = BatchBuilder::new().producer(producer_id, epoch, first_sequence);
            for _ in 0..records {
                builder.push(None, Some(&[b'x'; 100]), 1_700_000_000_000);
            }
            let mut bytes = builder.build().to_vec();
            let info = self.log.append_as_leader(&mut bytes, 0).expect("append");
            *sequence += records;
            if producer_id >= 0 {
                let last_sequence = first_sequence + records - 1;
                let batch = BatchMetadata {
                    first_sequence,
                    last_sequence,
                    first_offset: info.base_offset,
                    last_offset: info.last_offset,
                };
                self.appended.push((producer_id, epoch, batch));
            }
        }

        /// Appends `batches` batches round-robin over producers 1..=3 plus a
        /// non-idempotent one, with producer 2 bumping its epoch halfway.
        fn append_mixed(&mut self, batches: usize) {
            for i in 0..batches {
                match i % 4 {
                    0 => self.append(1, 0, 3),
                    1 => self.append(2, if i < batches / 2 { 0 } else { 1 }, 2),
                    2 => self.append(3, 5, 1),
                    _ => self.append(-1, -1, 2),
                }
            }
        }

        /// What a whole-log scan must give: every appended batch still in the log.
        fn expected(&self) -> ProducerStateTable {
            let mut table = ProducerStateTable::new();
            let end = self.log.log_end_offset();
            for (producer_id, epoch, batch) in self.appended.iter().filter(|(_, _, b)| b.last_offset < end) {
                table.record(*producer_id, *epoch, *batch);
            }
            table
        }

        fn truncate_to(&mut self, offset: Offset) {
            self.log.truncate_to(offset).expect("truncate");
            let end = self.log.log_end_offset();
            self.appended.retain(|(_, _, b)| b.last_offset < end);
        }
    }

    fn snapshot_offsets(dir: &Path) -> Vec<Offset> {
        list_snapshots(dir).into_iter().map(|(offset, _)| offset).collect()
    }

    /// A table equal to `table` plus a producer no log batch has: seeing it after `restore`
    /// proves the snapshot was used rather than a scan from the log start.
    fn marked(table: &ProducerStateTable) -> ProducerStateTable {
        let mut marked = table.clone();
        marked.record(999, 0, BatchMetadata { first_sequence: 0, last_sequence: 0, first_offset: 0, last_offset: 0 });
        marked
    }

    #[test]
    fn restore_without_snapshots_scans_the_whole_log() {
        // Small segments so the replay crosses segment boundaries (one read never does).
        let mut t = TestLog::new(LogConfig { segment_bytes: 2048, ..LogConfig::default() });
        t.append_mixed(40);
        assert!(t.log.segment_base_offsets().len() > 3, "several segments");
        let restored = restore(&t.log, t.dir());
        assert_eq!(restored, t.expected());
        assert_eq!(restored.producer_count(), 3);
        assert_eq!(restore(&t.log, t.dir()), t.expected(), "restore leaves nothing behind");
    }

    #[test]
    fn restore_replays_the_tail_after_the_snapshot() {
        let mut t = TestLog::new(LogConfig { segment_bytes: 2048, ..LogConfig::default() });
        t.append_mixed(20);
        let at = t.log.log_end_offset();
        write(t.dir(), &marked(&t.expected()), at, true).expect("write snapshot");
        assert_eq!(snapshot_offsets(t.dir()), vec![at]);
        t.append_mixed(23);
        assert_eq!(restore(&t.log, t.dir()), marked(&t.expected()), "snapshot plus tail");
        let end = t.log.log_end_offset();
        write(t.dir(), &t.expected(), end, true).expect("snapshot at the log end");
        assert_eq!(restore(&t.log, t.dir()), t.expected(), "nothing to replay");
    }

    #[test]
    fn truncation_below_a_snapshot_removes_it() {
        let mut t = TestLog::new(LogConfig::default());
        t.append_mixed(10);
        let early = t.log.log_end_offset();
        write(t.dir(), &marked(&t.expected()), early, true).expect("write");
        t.append_mixed(10);
        let late = t.log.log_end_offset();
        write(t.dir(), &marked(&t.expected()), late, true).expect("write");
        t.truncate_to(late - 7); // mid-batch: the log keeps whole batches only
        let end = t.log.log_end_offset();
        assert!(early < end && end < late);
        truncate(t.dir(), end);
        assert_eq!(snapshot_offsets(t.dir()), vec![early]);
        assert_eq!(restore(&t.log, t.dir()), marked(&t.expected()), "older snapshot plus tail");
        t.truncate_to(early - 1);
        truncate(t.dir(), t.log.log_end_offset());
        assert!(snapshot_offsets(t.dir()).is_empty());
        assert_eq!(restore(&t.log, t.dir()), t.expected(), "full scan of the truncated log");
    }

    #[test]
    fn restore_deletes_snapshots_above_the_log_end() {
        // A crash after the snapshot but before the log was flushed: the recovered log is
        // shorter, and the snapshot must not be used when the log grows past it again.
        let mut t = TestLog::new(LogConfig::default());
        t.append_mixed(8);
        let end = t.log.log_end_offset();
        write(t.dir(), &marked(&t.expected()), end + 50, true).expect("write");
        assert_eq!(restore(&t.log, t.dir()), t.expected());
        assert!(snapshot_offsets(t.dir()).is_empty());
    }

    #[test]
    fn restore_deletes_snapshots_below_the_log_start() {
        let mut t = TestLog::new(LogConfig::default());
        t.append_mixed(8);
        write(t.dir(), &t.expected(), 10, true).expect("write");
        write(t.dir(), &t.expected(), t.log.log_end_offset(), true).expect("write");
        let restart = t.log.log_end_offset() + 100;
        t.log.truncate_fully_and_start_at(restart).expect("restart log");
        t.appended.clear();
        t.append(1, 3, 2);
        assert_eq!(restore(&t.log, t.dir()), t.expected());
        assert!(snapshot_offsets(t.dir()).is_empty());
    }

    #[test]
    fn corrupt_snapshots_fall_back_to_older_ones_then_to_a_scan() {
        let mut t = TestLog::new(LogConfig::default());
        t.append_mixed(10);
        let older = t.log.log_end_offset();
        write(t.dir(), &marked(&t.expected()), older, true).expect("write");
        t.append_mixed(10);
        let newer = t.log.log_end_offset();
        write(t.dir(), &t.expected(), newer, true).expect("write");
        t.append_mixed(5);

        let newest = snapshot_path(t.dir(), newer);
        let mut bytes = fs::read(&newest).expect("read snapshot");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        fs::write(&newest, &bytes).expect("corrupt newest");
        assert_eq!(restore(&t.log, t.dir()), marked(&t.expected()), "older snapshot used");

        // A torn write: only the first half of the older snapshot reached the disk.
        let oldest = snapshot_path(t.dir(), older);
        let bytes = fs::read(&oldest).expect("read snapshot");
        fs::write(&oldest, &bytes[..bytes.len() / 2]).expect("tear older");
        assert_eq!(restore(&t.log, t.dir()), t.expected(), "full scan");
    }

    #[test]
    fn a_snapshot_renamed_to_another_offset_is_not_used() {
        let mut t = TestLog::new(LogConfig::default());
        t.append_mixed(10);
        let at = t.log.log_end_offset();
        write(t.dir(), &marked(&t.expected()), at - 4, true).expect("write");
        fs::rename(snapshot_path(t.dir(), at - 4), snapshot_path(t.dir(), at)).expect("rename");
        assert_eq!(restore(&t.log, t.dir()), t.expected());
    }

    #[test]
    fn write_keeps_the_newest_three_and_no_temp_files() {
        let t = TestLog::new(LogConfig::default());
        for offset in [5, 1, 9, 3, 7] {
            write(t.dir(), &ProducerStateTable::new(), offset, true).expect("write");
        }
        assert_eq!(snapshot_offsets(t.dir()), vec![5, 7, 9]);
        let names: Vec<String> =
            fs::read_dir(t.dir()).expect("list").filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        assert!(names.contains(&"00000000000000000009.snapshot".to_owned()), "{names:?}");
        assert!(!names.iter().any(|name| name.ends_with(".tmp")), "{names:?}");
        assert!(write(t.dir(), &ProducerStateTable::new(), -1, false).is_err());
    }

    #[test]
    fn the_log_opens_with_snapshot_files_in_its_directory() {
        let mut t = TestLog::new(LogConfig { segment_bytes: 2048, ..LogConfig::default() });
        t.append_mixed(12);
        let end = t.log.log_end_offset();
        write(t.dir(), &t.expected(), end, true).expect("write");
        fs::write(t.dir().join(format!("{end:020}{TEMP_SUFFIX}")), b"torn").expect("stray temp file");
        let segments = t.log.segment_base_offsets();
        let reopened = PartitionLog::open(t.dir(), LogConfig::default()).expect("reopen");
        assert_eq!((reopened.log_end_offset(), reopened.segment_base_offsets()), (end, segments));
        assert_eq!(snapshot_offsets(t.dir()), vec![end], "snapshots kept");
        assert!(!t.dir().join(format!("{end:020}{TEMP_SUFFIX}")).exists(), "open deletes stray temp files");
        assert_eq!(restore(&reopened, t.dir()), t.expected());
    }
}
