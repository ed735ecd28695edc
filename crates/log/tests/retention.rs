//! Black-box tests of retention on `PartitionLog`: whole segments deleted from the front by
//! retention.bytes, retention.ms and the log start offset, never past the high watermark and
//! never the last segment; the start offset moving (DeleteRecords) and reads below it out of
//! range; segment.ms rolls; and what survives a reopen.
use insync_log::{BatchBuilder, LogConfig, LogError, PartitionLog, RetentionReason};

fn config() -> LogConfig {
    LogConfig { segment_bytes: 1024, index_interval_bytes: 256, retention_ms: -1, ..LogConfig::default() }
}

/// A ~300-byte batch of 3 records stamped `timestamp`.
fn batch(timestamp: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for i in 0..3 {
        builder.push(Some(b"key"), Some(format!("{i:>90}").as_bytes()), timestamp);
    }
    builder.build().to_vec()
}

/// A log of `batches` batches (3 records each) in ~1 KiB segments.
fn log_with(dir: &std::path::Path, config: LogConfig, batches: usize) -> PartitionLog {
    let mut log = PartitionLog::open(dir, config).unwrap();
    for _ in 0..batches {
        log.append_as_leader(&mut batch(1_700_000_000_000), 0).unwrap();
    }
    log
}

const NOW: i64 = 4_000_000_000_000; // far after every file's mtime

#[test]
fn retention_bytes_deletes_oldest_segments_only_below_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with(dir.path(), LogConfig { retention_bytes: 1500, ..config() }, 12);
    let segments = log.segment_base_offsets();
    assert!(segments.len() >= 4, "{segments:?}");
    // HW at the start of the third segment: only the first two may go.
    let hw = segments[2];
    let info = log.delete_old_segments(hw, NOW).unwrap().expect("something deleted");
    assert_eq!(info.reason, RetentionReason::Size);
    assert_eq!(info.segments_deleted, 2);
    assert_eq!(log.log_start_offset(), hw);
    assert!(matches!(log.read(0, i64::MAX, 1 << 20), Err(LogError::OffsetOutOfRange { .. })));
    // With the HW at the end, deletion continues until the log fits retention.bytes.
    let end = log.log_end_offset();
    log.delete_old_segments(end, NOW).unwrap();
    assert!(log.size_bytes() <= 1500 + 1024, "at most one segment over: {}", log.size_bytes());
    assert!(!log.segment_base_offsets().is_empty());
    assert_eq!(log.log_start_offset(), log.segment_base_offsets()[0]);
}

#[test]
fn retention_ms_deletes_everything_old_and_rolls_instead_of_deleting_the_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with(dir.path(), LogConfig { retention_ms: 1000, ..config() }, 8);
    let end = log.log_end_offset();
    assert_eq!(log.delete_old_segments(end - 1, 0).unwrap(), None, "nothing is older than 1 s at time 0");
    let info = log.delete_old_segments(end, NOW).unwrap().expect("old segments deleted");
    assert_eq!(info.reason, RetentionReason::Time);
    assert_eq!(log.segment_base_offsets(), vec![end], "one empty segment at the log end");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (end, end));
    // The log goes on from there.
    let appended = log.append_as_leader(&mut batch(NOW), 1).unwrap();
    assert_eq!(appended.base_offset, end);
}

#[test]
fn records_above_the_high_watermark_are_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with(dir.path(), LogConfig { retention_ms: 0, retention_bytes: 0, ..config() }, 8);
    assert_eq!(log.delete_old_segments(0, NOW).unwrap(), None, "HW 0: nothing is committed");
    let before = log.segment_base_offsets();
    log.delete_old_segments(before[1], NOW).unwrap();
    assert_eq!(log.segment_base_offsets(), before[1..].to_vec());
}

#[test]
fn increment_log_start_offset_moves_reads_and_deletes_whole_segments_below() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with(dir.path(), config(), 12);
    let segments = log.segment_base_offsets();
    let target = segments[2] + 1; // inside the third segment
    assert!(log.increment_log_start_offset(target).unwrap());
    assert_eq!(log.log_start_offset(), target);
    assert_eq!(log.segment_base_offsets()[0], segments[2], "the segment holding the new start stays");
    assert!(matches!(log.read(target - 1, i64::MAX, 1 << 20), Err(LogError::OffsetOutOfRange { .. })));
    assert!(log.read(target, i64::MAX, 1 << 20).is_ok());
    assert!(!log.increment_log_start_offset(target - 1).unwrap(), "never backwards");
    assert!(log.increment_log_start_offset(i64::MAX).unwrap());
    assert_eq!(log.log_start_offset(), log.log_end_offset(), "never past the log end");
    // A reopened log starts at its first segment; the broker restores the rest from its
    // log-start-offset checkpoint.
    drop(log);
    let reopened = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(reopened.log_start_offset(), reopened.segment_base_offsets()[0]);
}

#[test]
fn segment_ms_rolls_an_old_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig { segment_ms: 60_000, ..config() }).unwrap();
    assert!(!log.roll_if_older_than_segment_ms(NOW).unwrap(), "an empty segment never rolls");
    log.append_as_leader(&mut batch(1_000_000), 0).unwrap();
    assert!(!log.roll_if_older_than_segment_ms(1_000_000 + 60_000).unwrap());
    assert!(log.roll_if_older_than_segment_ms(1_000_000 + 60_001).unwrap());
    assert_eq!(log.segment_base_offsets(), vec![0, 3]);
}

/// A crash in the middle of a retention pass: segments go oldest first, the `.log` before its
/// `.index`, so the worst a SIGKILL leaves is a prefix already gone and one index without its
/// log. Reopening removes the orphan index and starts at the first whole segment.
#[test]
fn a_crash_mid_retention_reopens_as_a_contiguous_log_without_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), config(), 12);
    let segments = log.segment_base_offsets();
    let end = log.log_end_offset();
    drop(log);
    // The state a kill leaves after deleting segment 0 and the .log of segment 1.
    let name = |base: i64, suffix: &str| dir.path().join(format!("{base:020}.{suffix}"));
    std::fs::remove_file(name(segments[0], "log")).unwrap();
    std::fs::remove_file(name(segments[0], "index")).unwrap();
    std::fs::remove_file(name(segments[1], "log")).unwrap();
    assert!(name(segments[1], "index").exists());

    let reopened = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(reopened.log_start_offset(), segments[2]);
    assert_eq!(reopened.log_end_offset(), end);
    assert!(!name(segments[1], "index").exists(), "the orphan index is removed");
    assert_eq!(reopened.segment_base_offsets(), segments[2..].to_vec());
}

/// A truncation into the batch that holds a mid-batch log start brings the start down with
/// the end (Kafka `truncateTo`), and one at or below the first segment starts over there.
#[test]
fn truncation_below_a_mid_batch_log_start_lowers_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with(dir.path(), config(), 12);
    let segments = log.segment_base_offsets();
    let start = segments[1] + 1; // inside the first batch of the second segment
    log.increment_log_start_offset(start).unwrap();
    log.truncate_to(start + 1).unwrap();
    assert_eq!(log.log_end_offset(), segments[1], "cut at the batch's base");
    assert_eq!(log.log_start_offset(), segments[1], "the start came down with it");
    log.truncate_to(segments[1]).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (segments[1], segments[1]));
}

/// The HW in the middle of a segment: the segments before it may go, that one stays.
#[test]
fn a_high_watermark_inside_a_segment_keeps_that_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with(dir.path(), LogConfig { retention_bytes: 0, ..config() }, 12);
    let segments = log.segment_base_offsets();
    log.delete_old_segments(segments[2] + 1, NOW).unwrap();
    assert_eq!(log.segment_base_offsets()[0], segments[2]);
    assert_eq!(log.log_start_offset(), segments[2]);
}
