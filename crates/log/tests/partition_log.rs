//! Black-box tests of `PartitionLog` through its public API: appends, reads, segment rolls,
//! sparse-index lookups, crash recovery of torn and corrupt tails, truncation, follower
//! appends and the leader-epoch cache (KIP-101), plus a model-based property test.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use insync_log::{decode_records, iter_batches, validate_batch, BatchBuilder, LogConfig, LogError, PartitionLog};
use proptest::prelude::*;

fn small_config() -> LogConfig {
    LogConfig { segment_bytes: 2048, index_interval_bytes: 256, ..LogConfig::default() }
}

/// A batch of `records` records whose values name their batch and index.
fn batch(tag: &str, records: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for index in 0..records {
        builder.push(
            Some(format!("k{index}").as_bytes()),
            Some(format!("{tag}-{index}").as_bytes()),
            1_700_000_000_000 + index as i64,
        );
    }
    builder.build().to_vec()
}

/// Every record value in `bytes` (concatenated batches), with its offset.
fn values(bytes: &[u8]) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for item in iter_batches(bytes) {
        let (_, batch) = item.unwrap();
        for record in decode_records(batch).unwrap() {
            out.push((record.offset, String::from_utf8(record.value.unwrap().to_vec()).unwrap()));
        }
    }
    out
}

/// Reads the whole log below its end, across segments, one fetch at a time.
fn read_all(log: &PartitionLog) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    // Bounded: every read returns at least one batch while offset < log end.
    for _ in 0..10_000 {
        if offset >= log.log_end_offset() {
            break;
        }
        let bytes = log.read(offset, i64::MAX, 1 << 20).unwrap();
        assert!(!bytes.is_empty(), "read at {offset} returned nothing");
        let chunk = values(&bytes);
        offset = chunk.last().unwrap().0 + 1;
        out.extend(chunk);
    }
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[test]
fn leader_appends_assign_offsets_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert!(log.read(0, i64::MAX, 1000).unwrap().is_empty());

    let mut first = batch("a", 3);
    let info = log.append_as_leader(&mut first, 4).unwrap();
    assert_eq!((info.base_offset, info.last_offset, info.records), (0, 2, 3));
    assert_eq!(info.bytes, first.len());
    let mut second = batch("b", 2);
    let info = log.append_as_leader(&mut second, 4).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (3, 4));
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(log.size_bytes(), (first.len() + second.len()) as u64);

    // The caller's buffer shows the stamped offset and epoch.
    let header = validate_batch(&second).unwrap();
    assert_eq!((header.base_offset, header.partition_leader_epoch), (3, 4));

    let all = log.read(0, i64::MAX, 1 << 20).unwrap();
    let mut expected = first.clone();
    expected.extend_from_slice(&second);
    assert_eq!(&all[..], &expected[..], "the log stores batches untouched");
    assert_eq!(
        values(&all),
        vec![(0, "a-0".into()), (1, "a-1".into()), (2, "a-2".into()), (3, "b-0".into()), (4, "b-1".into())]
    );
    assert_eq!(log.epoch_entries(), vec![(4, 0)]);
    assert_eq!(log.last_batch_epoch(), Some(4));
}

#[test]
fn leader_rejects_invalid_batches_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig { max_batch_bytes: 200, ..LogConfig::default() }).unwrap();
    let mut big = batch(&"x".repeat(300), 1);
    let error = log.append_as_leader(&mut big, 0).unwrap_err();
    assert!(matches!(error, LogError::MessageTooLarge { .. }));
    assert_eq!(error.error_code(), insync_types::ErrorCode::MESSAGE_TOO_LARGE);

    let mut corrupt = batch("c", 1);
    let last = corrupt.len() - 2;
    corrupt[last] ^= 0xff;
    let before = corrupt.clone();
    let error = log.append_as_leader(&mut corrupt, 0).unwrap_err();
    assert_eq!(error.error_code(), insync_types::ErrorCode::CORRUPT_MESSAGE);
    assert_eq!(corrupt, before, "a rejected batch is not stamped");

    let mut ok = batch("ok", 1);
    log.append_as_leader(&mut ok, 3).unwrap();
    let mut stale = batch("stale", 1);
    let error = log.append_as_leader(&mut stale, 2).unwrap_err();
    assert!(matches!(error, LogError::FencedLeaderEpoch { epoch: 2, latest_epoch: 3 }));
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(log.size_bytes(), ok.len() as u64);
}

#[test]
fn index_lookups_find_every_offset_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    let mut expected = Vec::new();
    for batch_number in 0..200 {
        let records = 1 + batch_number % 4;
        let mut bytes = batch(&format!("b{batch_number}"), records);
        let info = log.append_as_leader(&mut bytes, 0).unwrap();
        for index in 0..records {
            expected.push((info.base_offset + index as i64, format!("b{batch_number}-{index}")));
        }
    }
    let segments = log.segment_base_offsets();
    assert!(segments.len() >= 8, "small segments roll: {segments:?}");
    assert_eq!(segment_files(dir.path()).len(), segments.len());
    for file in segment_files(dir.path()) {
        assert!(std::fs::metadata(file).unwrap().len() <= 2048);
    }

    // Every offset reads the batch holding it, first.
    for (offset, value) in &expected {
        let bytes = log.read(*offset, i64::MAX, 1).unwrap();
        let got = values(&bytes);
        assert!(got.iter().any(|(o, v)| o == offset && v == value), "offset {offset}");
        assert!(got[0].0 <= *offset);
        assert_eq!(iter_batches(&bytes).count(), 1, "max_bytes 1 still returns one batch");
    }
    assert_eq!(read_all(&log), expected);

    // And the same after a reopen, with the indexes loaded from disk.
    log.close().unwrap();
    let log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.segment_base_offsets(), segments);
    assert_eq!(read_all(&log), expected);
}

#[test]
fn read_respects_the_offset_bound_and_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let mut sizes = Vec::new();
    for tag in ["a", "b", "c", "d"] {
        let mut bytes = batch(tag, 2); // offsets 0-1, 2-3, 4-5, 6-7
        sizes.push(bytes.len());
        log.append_as_leader(&mut bytes, 0).unwrap();
    }
    let offsets = |bytes: &Bytes| values(bytes).iter().map(|(o, _)| *o).collect::<Vec<_>>();

    // A consumer bounded by a high watermark of 4 sees only batches ending below 4.
    assert_eq!(offsets(&log.read(0, 4, 1 << 20).unwrap()), vec![0, 1, 2, 3]);
    // A bound inside a batch excludes that batch.
    assert_eq!(offsets(&log.read(0, 5, 1 << 20).unwrap()), vec![0, 1, 2, 3]);
    // Starting at the bound, or inside the batch that crosses it, gives nothing.
    assert!(log.read(4, 4, 1 << 20).unwrap().is_empty());
    assert!(log.read(4, 5, 1 << 20).unwrap().is_empty());
    // Mid-batch start returns the whole batch holding it.
    assert_eq!(offsets(&log.read(3, i64::MAX, 1 << 20).unwrap()), vec![2, 3, 4, 5, 6, 7]);
    // max_bytes: whole batches that fit, but always the first one (KIP-74).
    let two = sizes[0] + sizes[1];
    assert_eq!(log.read(0, i64::MAX, two).unwrap().len(), two);
    assert_eq!(log.read(0, i64::MAX, two + 10).unwrap().len(), two);
    assert_eq!(log.read(0, i64::MAX, two - 1).unwrap().len(), sizes[0]);
    assert_eq!(log.read(0, i64::MAX, 0).unwrap().len(), sizes[0]);
    // At the log end: empty; past it or before the start: out of range.
    assert!(log.read(8, i64::MAX, 100).unwrap().is_empty());
    let error = log.read(9, i64::MAX, 100).unwrap_err();
    assert!(matches!(error, LogError::OffsetOutOfRange { offset: 9, .. }));
    assert_eq!(error.error_code(), insync_types::ErrorCode::OFFSET_OUT_OF_RANGE);
    assert!(log.read(-1, i64::MAX, 100).is_err());
}

#[test]
fn read_bounded_caps_the_first_batch_exemption() {
    // Kafka LogSegment.read with minOneMessage = false: a first batch larger than the
    // budget is not returned; with a ceiling, it is returned only up to that ceiling.
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let mut sizes = Vec::new();
    for tag in ["a", "b"] {
        let mut bytes = batch(tag, 3);
        sizes.push(bytes.len());
        log.append_as_leader(&mut bytes, 0).unwrap();
    }
    let first = sizes[0];
    assert!(log.read_bounded(0, i64::MAX, first - 1, first - 1).unwrap().is_empty(), "no exemption");
    assert!(log.read_bounded(0, i64::MAX, 0, 0).unwrap().is_empty());
    assert_eq!(log.read_bounded(0, i64::MAX, first, first).unwrap().len(), first, "a batch that fits");
    assert_eq!(log.read_bounded(0, i64::MAX, 0, first).unwrap().len(), first, "exempt up to the ceiling");
    assert!(log.read_bounded(0, i64::MAX, 0, first - 1).unwrap().is_empty(), "above the ceiling");
    assert_eq!(log.read_bounded(0, i64::MAX, first + sizes[1], 0).unwrap().len(), first + sizes[1]);
    assert_eq!(log.read_bounded(0, i64::MAX, 1, usize::MAX).unwrap(), log.read(0, i64::MAX, 1).unwrap());
}

/// Writes 5 batches (offsets 0..10) and closes; returns the byte length of the first 4.
fn write_five_batches(dir: &Path) -> (u64, u64) {
    let mut log = PartitionLog::open(dir, LogConfig::default()).unwrap();
    let mut good_bytes = 0;
    for number in 0..5 {
        let mut bytes = batch(&format!("b{number}"), 2);
        log.append_as_leader(&mut bytes, 1).unwrap();
        if number < 4 {
            good_bytes += bytes.len() as u64;
        }
    }
    let total = log.size_bytes();
    log.close().unwrap();
    (good_bytes, total)
}

fn first_segment(dir: &Path) -> PathBuf {
    dir.join("00000000000000000000.log")
}

#[test]
fn recovery_truncates_garbage_after_the_last_batch() {
    // The log line recovery prints is checked in tests/recovery_logging.rs, a binary of
    // its own: tracing caches callsite interest process-wide, so capturing logs while
    // other tests run in parallel threads is racy.
    let dir = tempfile::tempdir().unwrap();
    let (_, total) = write_five_batches(dir.path());
    let mut file = OpenOptions::new().append(true).open(first_segment(dir.path())).unwrap();
    file.write_all(&[0xde; 100]).unwrap();
    drop(file);

    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(log.size_bytes(), total);
    assert_eq!(std::fs::metadata(first_segment(dir.path())).unwrap().len(), total);
    assert_eq!(read_all(&log).len(), 10);
}

#[test]
fn recovery_truncates_a_torn_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (good, total) = write_five_batches(dir.path());
    let file = OpenOptions::new().write(true).open(first_segment(dir.path())).unwrap();
    file.set_len(good + (total - good) / 2).unwrap();
    drop(file);

    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 8);
    assert_eq!(log.size_bytes(), good);
    assert_eq!(read_all(&log).last().unwrap(), &(7, "b3-1".to_owned()));
    // The log keeps working where recovery left it.
    let mut bytes = batch("after", 1);
    assert_eq!(log.append_as_leader(&mut bytes, 1).unwrap().base_offset, 8);
}

#[test]
fn recovery_truncates_a_corrupt_last_batch_and_its_epoch_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let mut good = 0;
    for (number, epoch) in [(0, 1), (1, 1), (2, 3)] {
        let mut bytes = batch(&format!("b{number}"), 2);
        log.append_as_leader(&mut bytes, epoch).unwrap();
        if number < 2 {
            good += bytes.len() as u64;
        }
    }
    assert_eq!(log.epoch_entries(), vec![(1, 0), (3, 4)]);
    log.close().unwrap();

    // Flip one byte inside the last batch's records: the CRC no longer matches.
    let file = OpenOptions::new().read(true).write(true).open(first_segment(dir.path())).unwrap();
    let at = good + 70;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], at).unwrap();
    drop(file);

    let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(log.size_bytes(), good);
    // Epoch 3 started at offset 4, which is gone (Kafka LogLoader truncateFromEnd).
    assert_eq!(log.epoch_entries(), vec![(1, 0)]);
    assert_eq!(log.latest_epoch(), Some(1));
    assert_eq!(log.last_batch_epoch(), Some(1));
    assert_eq!(values(&log.read(0, i64::MAX, 1 << 20).unwrap()).len(), 4);
}

#[test]
fn recovery_only_touches_the_last_two_segments_and_rebuilds_lost_epoch_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    for number in 0..80 {
        let mut bytes = batch(&format!("b{number}"), 3);
        log.append_as_leader(&mut bytes, if number < 60 { 0 } else { 2 }).unwrap();
    }
    let expected = read_all(&log);
    let segments = log.segment_base_offsets();
    assert!(segments.len() >= 4, "{segments:?}");
    let epochs = log.epoch_entries();
    // Dropped without close: the active segment's index never reached the disk.
    drop(log);

    // Lose the epoch checkpoint and an older segment's index: both come back.
    std::fs::remove_file(dir.path().join("leader-epoch-checkpoint")).unwrap();
    let older_index = dir.path().join(format!("{:020}.index", segments[1]));
    std::fs::write(&older_index, [0xff; 12]).unwrap();
    let log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(read_all(&log), expected);
    assert_eq!(log.segment_base_offsets(), segments);
    // Recovery scans the last two segments (the one rolled last may not have been fsynced),
    // so it restores epoch starts from there on — as Kafka's LogSegment.recover would;
    // epoch 2 started at offset 180.
    assert_eq!(epochs, vec![(0, 0), (2, 180)]);
    let first_recovered = segments[segments.len() - 2];
    let restored = log.epoch_entries();
    if first_recovered >= 180 {
        assert_eq!(restored, vec![(2, first_recovered)]);
    } else {
        assert_eq!(restored, vec![(0, first_recovered), (2, 180)]);
    }
}

/// A closed log of 40 three-record batches over several small segments: its directory,
/// every record, and the segment base offsets.
fn closed_log_of_40_batches() -> (tempfile::TempDir, Vec<(i64, String)>, Vec<i64>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    for number in 0..40 {
        let mut bytes = batch(&format!("b{number}"), 3);
        log.append_as_leader(&mut bytes, 0).unwrap();
    }
    let expected = read_all(&log);
    let segments = log.segment_base_offsets();
    log.close().unwrap();
    (dir, expected, segments)
}

/// Reopens the log: the second-to-last segment lost its last batch (3 records), so the
/// log ends 3 records before the last segment began, and the last segment is gone.
fn assert_recovered_without_the_last_segment(dir: &Path, expected: &[(i64, String)], segments: &[i64]) {
    let last = *segments.last().unwrap();
    let log = PartitionLog::open(dir, small_config()).unwrap();
    assert_eq!(log.log_end_offset(), last - 3);
    assert_eq!(read_all(&log), expected[..(last - 3) as usize].to_vec());
    assert_eq!(log.segment_base_offsets(), segments[..segments.len() - 1].to_vec());
    assert!(!dir.join(format!("{last:020}.log")).exists());
    assert!(!dir.join(format!("{last:020}.index")).exists());
}

#[test]
fn a_torn_segment_before_the_last_is_recovered_and_the_segment_after_it_deleted() {
    // A machine crash while the roll flush of the second-to-last segment was in flight: its
    // tail may be torn, and the last segment's records would then follow a hole.
    let (dir, expected, segments) = closed_log_of_40_batches();
    let second_last = segments[segments.len() - 2];

    // Tear the second-to-last segment's last batch: cut 10 bytes off the file.
    let path = dir.path().join(format!("{second_last:020}.log"));
    let len = std::fs::metadata(&path).unwrap().len();
    OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 10).unwrap();

    // The torn batch (3 records) is gone, and so is every record of the last segment.
    assert_recovered_without_the_last_segment(dir.path(), &expected, &segments);
}

#[test]
fn a_segment_short_of_the_next_one_is_a_hole_too() {
    // The crash lost whole batches at the end of the second-to-last segment: what is left
    // is valid, but ends before the last segment begins. The last segment must go.
    let (dir, expected, segments) = closed_log_of_40_batches();
    let second_last = segments[segments.len() - 2];

    // Cut the second-to-last segment's last batch off exactly at its start.
    let path = dir.path().join(format!("{second_last:020}.log"));
    let bytes = std::fs::read(&path).unwrap();
    let last_batch_len = iter_batches(&bytes).map(|b| b.unwrap().1.len()).last().unwrap();
    let last_batch_start = bytes.len() - last_batch_len;
    OpenOptions::new().write(true).open(&path).unwrap().set_len(last_batch_start as u64).unwrap();

    assert_recovered_without_the_last_segment(dir.path(), &expected, &segments);
}

#[test]
fn truncate_to_across_segment_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    let mut bases = Vec::new();
    for number in 0..60 {
        let mut bytes = batch(&format!("b{number}"), 2);
        let epoch = number / 20; // epochs 0, 1, 2 starting at 0, 40, 80
        bases.push(log.append_as_leader(&mut bytes, epoch).unwrap().base_offset);
    }
    assert_eq!(log.log_end_offset(), 120);
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 40), (2, 80)]);
    let segments_before = log.segment_base_offsets();
    let expected = read_all(&log);

    // Past the end: no change.
    assert_eq!(log.truncate_to(500).unwrap(), Default::default());
    assert_eq!(log.log_end_offset(), 120);

    // Mid-batch offset 61 truncates to the batch start 60.
    let size_before = log.size_bytes();
    let info = log.truncate_to(61).unwrap();
    assert_eq!(log.log_end_offset(), 60);
    assert_eq!(info.records_removed, 60);
    assert_eq!(info.bytes_removed, size_before - log.size_bytes());
    assert_eq!(read_all(&log), expected[..60].to_vec());
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 40)]);
    assert_eq!(log.last_batch_epoch(), Some(1));
    let segments_after = log.segment_base_offsets();
    assert!(segments_after.len() < segments_before.len());
    assert_eq!(segment_files(dir.path()).len(), segments_after.len());

    // Exactly at a segment's base offset: that segment stays, empty.
    let boundary = segments_after[segments_after.len() - 1];
    log.truncate_to(boundary).unwrap();
    assert_eq!(log.log_end_offset(), boundary);
    assert_eq!(*log.segment_base_offsets().last().unwrap(), boundary);
    assert!(log.read(boundary, i64::MAX, 100).unwrap().is_empty());

    // Appends continue at the new end, and survive a reopen.
    let mut bytes = batch("new", 2);
    log.append_as_leader(&mut bytes, 5).unwrap();
    log.close().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.log_end_offset(), boundary + 2);
    let all = read_all(&log);
    assert_eq!(all[..boundary as usize], expected[..boundary as usize]);
    assert_eq!(all.last().unwrap(), &(boundary + 1, "new-1".to_owned()));
    assert_eq!(log.epoch_entries().last(), Some(&(5, boundary)));

    log.truncate_to(0).unwrap();
    assert_eq!((log.log_end_offset(), log.size_bytes()), (0, 0));
    assert!(log.epoch_entries().is_empty());
}

#[test]
fn truncate_past_the_end_still_drops_an_unused_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    let mut bytes = batch("a", 2);
    log.append_as_leader(&mut bytes, 3).unwrap();
    // Became leader for epoch 4 at offset 2, then lost leadership before writing.
    log.assign_epoch_start_offset(4, 2).unwrap();
    assert_eq!(log.latest_epoch(), Some(4));
    assert_eq!(log.last_batch_epoch(), Some(3), "epoch 4 holds no batch");
    assert_eq!(log.end_offset_for_epoch(4), (4, 2));
    log.truncate_to(2).unwrap();
    assert_eq!(log.epoch_entries(), vec![(3, 0)]);
    assert!(log.assign_epoch_start_offset(5, 3).is_err(), "past the log end");
}

#[test]
fn truncate_fully_restarts_the_log_at_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    for _ in 0..30 {
        let mut bytes = batch("x", 2);
        log.append_as_leader(&mut bytes, 1).unwrap();
    }
    let info = log.truncate_fully_and_start_at(1000).unwrap();
    assert_eq!(info.records_removed, 60);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (1000, 1000));
    assert!(matches!(log.read(0, i64::MAX, 10), Err(LogError::OffsetOutOfRange { .. })));
    assert!(log.epoch_entries().is_empty());
    let mut bytes = batch("y", 1);
    assert_eq!(log.append_as_leader(&mut bytes, 2).unwrap().base_offset, 1000);
    log.close().unwrap();
    let log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (1000, 1001));
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn follower_appends_keep_offsets_and_learn_epochs() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = PartitionLog::open(leader_dir.path(), LogConfig::default()).unwrap();
    let mut follower = PartitionLog::open(follower_dir.path(), small_config()).unwrap();
    for (number, epoch) in [(0, 0), (1, 0), (2, 2), (3, 2), (4, 5)] {
        let mut bytes = batch(&format!("b{number}"), 3);
        leader.append_as_leader(&mut bytes, epoch).unwrap();
    }

    // A fetch that cut the last batch in half: the partial batch is ignored.
    let fetched = leader.read(0, leader.log_end_offset(), 1 << 20).unwrap();
    let partial = &fetched[..fetched.len() - 20];
    let info = follower.append_as_follower(partial).unwrap();
    assert_eq!((info.base_offset, info.last_offset, info.records), (0, 11, 12));
    let whole_batches = iter_batches(partial).map(|b| b.unwrap().1.len()).sum::<usize>();
    assert_eq!(info.bytes, whole_batches);
    assert_eq!(follower.epoch_entries(), vec![(0, 0), (2, 6)]);

    // Wrong start offset: nothing appended.
    let error = follower.append_as_follower(&fetched).unwrap_err();
    assert!(matches!(error, LogError::OffsetMismatch { expected: 12, actual: 0 }));
    assert_eq!(follower.log_end_offset(), 12);

    let rest = leader.read(12, leader.log_end_offset(), 1 << 20).unwrap();
    let info = follower.append_as_follower(&rest).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (12, 14));
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert_eq!(read_all(&follower), read_all(&leader));
    assert_eq!(follower.end_offset_for_epoch(2), (2, 12));
    assert_eq!(follower.last_batch_epoch(), Some(5));

    // Empty input or only a partial batch: nothing happens.
    let info = follower.append_as_follower(&rest[..10]).unwrap();
    assert_eq!((info.records, info.bytes, info.base_offset), (0, 0, 15));

    // A corrupt batch from the wire is refused whole.
    let mut leader_more = batch("m", 1);
    leader.append_as_leader(&mut leader_more, 5).unwrap();
    let mut damaged = leader.read(15, i64::MAX, 1 << 20).unwrap().to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x10;
    let error = follower.append_as_follower(&damaged).unwrap_err();
    assert_eq!(error.error_code(), insync_types::ErrorCode::CORRUPT_MESSAGE);
    assert_eq!(follower.log_end_offset(), 15);
}

#[test]
fn diverged_follower_truncates_by_leader_epoch_not_high_watermark() {
    // KIP-101 scenario: the follower has epoch-1 records the new leader (epoch 2) lacks.
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = PartitionLog::open(leader_dir.path(), LogConfig::default()).unwrap();
    let mut follower = PartitionLog::open(follower_dir.path(), LogConfig::default()).unwrap();
    let mut shared = batch("shared", 4);
    leader.append_as_leader(&mut shared, 1).unwrap();
    follower.append_as_follower(&shared).unwrap();
    let mut lost = batch("lost", 2); // only the old leader (now follower) had these
    follower.append_as_leader(&mut lost, 1).unwrap();
    leader.assign_epoch_start_offset(2, 4).unwrap();
    let mut new = batch("new", 3);
    leader.append_as_leader(&mut new, 2).unwrap();

    let last_fetched_epoch = follower.last_batch_epoch().unwrap();
    let (epoch, end_offset) = leader.end_offset_for_epoch(last_fetched_epoch);
    assert_eq!((epoch, end_offset), (1, 4));
    follower.truncate_to(end_offset.min(follower.log_end_offset())).unwrap();
    assert_eq!(follower.log_end_offset(), 4);
    let missing = leader.read(4, leader.log_end_offset(), 1 << 20).unwrap();
    follower.append_as_follower(&missing).unwrap();
    assert_eq!(read_all(&follower), read_all(&leader));
    assert_eq!(follower.epoch_entries(), vec![(1, 0), (2, 4)]);
}

#[test]
fn flush_every_messages_and_stray_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000000000000099.index"), [0u8; 8]).unwrap();
    std::fs::write(dir.path().join("leader-epoch-checkpoint.tmp"), "junk").unwrap();
    let config = LogConfig { flush_every_messages: Some(2), ..LogConfig::default() };
    let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    assert!(!dir.path().join("00000000000000000099.index").exists());
    assert!(!dir.path().join("leader-epoch-checkpoint.tmp").exists());
    for _ in 0..5 {
        let mut bytes = batch("f", 1);
        log.append_as_leader(&mut bytes, 0).unwrap();
    }
    drop(log);
    let log = PartitionLog::open(dir.path(), config).unwrap();
    assert_eq!(log.log_end_offset(), 5);
}

#[derive(Debug, Clone)]
enum Operation {
    Append { records: usize, value_bytes: usize, epoch_bump: bool },
    Truncate { fraction: f64 },
    Reopen { clean: bool },
    Read { fraction: f64, max_bytes: usize },
    TearTail { cut: usize },
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        6 => (1usize..6, 0usize..300, proptest::bool::weighted(0.1))
            .prop_map(|(records, value_bytes, epoch_bump)| Operation::Append { records, value_bytes, epoch_bump }),
        1 => (0.0f64..1.0).prop_map(|fraction| Operation::Truncate { fraction }),
        1 => any::<bool>().prop_map(|clean| Operation::Reopen { clean }),
        2 => (0.0f64..1.0, 0usize..3000).prop_map(|(fraction, max_bytes)| Operation::Read { fraction, max_bytes }),
        1 => (1usize..80).prop_map(|cut| Operation::TearTail { cut }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The log agrees with a plain Vec of records through appends, truncations, reads,
    /// reopens and torn tails.
    #[test]
    fn log_matches_a_simple_model(operations in proptest::collection::vec(operation(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 1500, index_interval_bytes: 200, ..LogConfig::default() };
        let mut log = Some(PartitionLog::open(dir.path(), config.clone()).unwrap());
        let mut model: Vec<(String, usize)> = Vec::new(); // (value, batch length in records)
        let mut batch_sizes: Vec<(i64, u64)> = Vec::new(); // (base offset, bytes) of each batch
        let mut epoch = 0;
        let mut counter = 0;
        for operation in operations {
            let current = log.as_mut().unwrap();
            match operation {
                Operation::Append { records, value_bytes, epoch_bump } => {
                    epoch += i32::from(epoch_bump);
                    let mut builder = BatchBuilder::new();
                    let base = model.len();
                    for index in 0..records {
                        counter += 1;
                        let value = format!("{counter}-{}", "v".repeat(value_bytes / records));
                        builder.push(None, Some(value.as_bytes()), index as i64);
                        model.push((value, records));
                    }
                    let mut bytes = builder.build().to_vec();
                    let info = current.append_as_leader(&mut bytes, epoch).unwrap();
                    prop_assert_eq!(info.base_offset, base as i64);
                    batch_sizes.push((base as i64, bytes.len() as u64));
                }
                Operation::Truncate { fraction } => {
                    let target = (model.len() as f64 * fraction) as i64;
                    current.truncate_to(target).unwrap();
                    // Truncation lands on the start of the batch holding `target`.
                    if target < model.len() as i64 {
                        let holder = batch_sizes.iter().rposition(|(base, _)| *base <= target).unwrap();
                        let new_end = batch_sizes[holder].0;
                        batch_sizes.truncate(holder);
                        model.truncate(new_end as usize);
                    }
                }
                Operation::Reopen { clean } => {
                    let old = log.take().unwrap();
                    if clean { old.close().unwrap() } else { drop(old) }
                    log = Some(PartitionLog::open(dir.path(), config.clone()).unwrap());
                }
                Operation::Read { fraction, max_bytes } => {
                    let start = (model.len() as f64 * fraction) as i64;
                    let bytes = current.read(start, i64::MAX, max_bytes).unwrap();
                    let got = values(&bytes);
                    if start < model.len() as i64 {
                        prop_assert!(!got.is_empty());
                        prop_assert!(got[0].0 <= start);
                        prop_assert!(got.iter().any(|(o, _)| *o == start));
                    }
                    for (offset, value) in got {
                        prop_assert_eq!(&model[offset as usize].0, &value);
                    }
                }
                Operation::TearTail { cut } => {
                    // Simulate a crash mid-write of the last batch: cut bytes off the last
                    // segment file, then reopen uncleanly.
                    let Some(&(last_base, last_bytes)) = batch_sizes.last() else { continue };
                    let old = log.take().unwrap();
                    drop(old);
                    let last_file = segment_files(dir.path()).pop().unwrap();
                    let length = std::fs::metadata(&last_file).unwrap().len();
                    let cut = (cut as u64).min(last_bytes);
                    if length >= last_bytes {
                        let file = OpenOptions::new().write(true).open(&last_file).unwrap();
                        file.set_len(length - cut).unwrap();
                        batch_sizes.pop();
                        model.truncate(last_base as usize);
                    }
                    log = Some(PartitionLog::open(dir.path(), config.clone()).unwrap());
                }
            }
            let current = log.as_ref().unwrap();
            prop_assert_eq!(current.log_end_offset(), model.len() as i64);
            prop_assert_eq!(current.size_bytes(), batch_sizes.iter().map(|(_, b)| b).sum::<u64>());
        }
        let current = log.as_ref().unwrap();
        let all = read_all(current);
        prop_assert_eq!(all.len(), model.len());
        for (offset, value) in all {
            prop_assert_eq!(&model[offset as usize].0, &value);
        }
    }
}
