//! Tests of `Partition` through its outputs, on real logs in a temporary directory and a
//! clock of the test's own: idempotent retries answered with their original offsets after a
//! restart (producer state restored from a snapshot plus the log tail), leadership moves,
//! and a follower's truncation by leader epoch that reloads the producer state.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use insync_log::batch::parse_header;
use insync_log::{BatchBuilder, LogConfig};
use insync_replication::{Action, EpochEndOffset};
use insync_types::{Acks, ErrorCode, TopicPartition};

use crate::messages::{FetchPartitionResponse, ProduceOutcome};
use crate::partition::{LeaderAppend, LeadershipContext, Partition, PartitionRegistration};

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("insync-partition-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        TempDir(std::env::temp_dir().join(name))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(dir: &Path, local_broker: i32) -> Partition {
    let tp = TopicPartition::new("t", 0);
    Partition::open(tp, dir, LogConfig::default(), 0, local_broker, false).expect("open")
}

fn registration(leader: i32, leader_epoch: i32, isr: &[i32]) -> PartitionRegistration {
    PartitionRegistration {
        leader,
        leader_epoch,
        partition_epoch: leader_epoch,
        replicas: vec![1, 2],
        isr: isr.to_vec(),
    }
}

fn apply(partition: &Partition, registration: &PartitionRegistration) -> Vec<Action> {
    apply_with_min_isr(partition, registration, 1)
}

fn apply_with_min_isr(partition: &Partition, registration: &PartitionRegistration, min_isr: usize) -> Vec<Action> {
    let eligible: BTreeSet<i32> = [1, 2].into();
    let context =
        LeadershipContext { min_insync_replicas: min_isr, eligible: &eligible, replica_lag_time_max_ms: 30_000 };
    partition.apply_registration(registration, &context, 0)
}

fn idempotent_batch(sequence: i32, value: &str) -> Bytes {
    let mut builder = BatchBuilder::new().producer(7, 0, sequence);
    builder.push(None, Some(value.as_bytes()), 1_700_000_000_000);
    builder.build()
}

fn append(partition: &Partition, batch: &Bytes) -> Result<LeaderAppend, ProduceOutcome> {
    let header = parse_header(batch).expect("header");
    let mut records = BytesMut::from(&batch[..]);
    partition.append_as_leader(Acks::Leader, &header, &mut records, None, 0)
}

#[test]
fn a_retry_after_a_restart_gets_its_original_offset_from_the_snapshot() {
    let dir = TempDir::new();
    let partition = open(&dir.0, 1);
    apply(&partition, &registration(1, 0, &[1]));
    for sequence in 0..5 {
        let appended = append(&partition, &idempotent_batch(sequence, "v")).expect("append");
        assert_eq!(appended.base_offset, i64::from(sequence));
    }
    partition.close().expect("close");
    drop(partition);
    let snapshots = std::fs::read_dir(&dir.0)
        .expect("dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".snapshot")))
        .count();
    assert_eq!(snapshots, 1, "a clean close writes one producer snapshot");

    let reopened = open(&dir.0, 1);
    apply(&reopened, &registration(1, 1, &[1]));
    let retry = append(&reopened, &idempotent_batch(4, "v")).expect("a retry is not an error");
    assert_eq!((retry.base_offset, reopened.log_end_offset()), (4, 5), "answered with its offset, not written");
    let gap = append(&reopened, &idempotent_batch(9, "v")).expect_err("a sequence gap");
    assert_eq!(gap.error, ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert!(!gap.appended);
}

#[test]
fn a_follower_never_appends_as_leader_and_a_new_leader_dedupes_at_once() {
    let (leader_dir, follower_dir) = (TempDir::new(), TempDir::new());
    let (leader, follower) = (open(&leader_dir.0, 1), open(&follower_dir.0, 2));
    apply(&leader, &registration(1, 0, &[1, 2]));
    apply(&follower, &registration(1, 0, &[1, 2]));
    let refused = append(&follower, &idempotent_batch(0, "a")).expect_err("not the leader");
    assert_eq!(refused.error, ErrorCode::NOT_LEADER_OR_FOLLOWER);
    append(&leader, &idempotent_batch(0, "a")).expect("append");
    // Replicate by hand: what the leader's read gives, the follower applies.
    let records = leader.read_range(0, leader.log_end_offset(), 1 << 20).expect("read");
    let answer = FetchPartitionResponse {
        records,
        high_watermark: 1,
        log_end_offset: 1,
        log_start_offset: 0,
        leader_epoch: 0,
        ..FetchPartitionResponse::empty(TopicPartition::new("t", 0))
    };
    let applied = follower.apply_fetch_response(1, 0, answer);
    assert!(!applied.back_off && applied.high_watermark_changed);
    // Broker 2 takes over: the producer's retry of batch 0 is a duplicate there too.
    apply(&follower, &registration(2, 1, &[2]));
    let retry = append(&follower, &idempotent_batch(0, "a")).expect("retry");
    assert_eq!((retry.base_offset, follower.log_end_offset()), (0, 1));
}

#[test]
fn truncation_by_leader_epoch_reloads_the_producer_state() {
    let dir = TempDir::new();
    let partition = open(&dir.0, 2);
    // As leader at epoch 0 it took batches 0..3 of producer 7 that nobody else has.
    apply(&partition, &registration(2, 0, &[2]));
    for sequence in 0..3 {
        append(&partition, &idempotent_batch(sequence, "lost")).expect("append");
    }
    partition.close().expect("snapshot at offset 3");
    // Broker 1 leads epoch 1 and never had them: its epoch 0 ended at offset 0.
    apply(&partition, &registration(1, 1, &[1, 2]));
    let divergence = FetchPartitionResponse {
        diverging_epoch: Some(EpochEndOffset { epoch: 0, end_offset: 0 }),
        leader_epoch: 1,
        ..FetchPartitionResponse::empty(TopicPartition::new("t", 0))
    };
    partition.apply_fetch_response(1, 1, divergence);
    assert_eq!(partition.log_end_offset(), 0, "truncated to where the logs agree");
    // The producer's batches are gone, so is its state: the snapshot past the truncation
    // point must not bring it back, and sequence 0 is a fresh append once we lead again.
    apply(&partition, &registration(2, 2, &[2]));
    let fresh = append(&partition, &idempotent_batch(0, "again")).expect("append");
    assert_eq!((fresh.base_offset, partition.log_end_offset()), (0, 1));
}

/// A follower of leader 1 at epoch 0 holding offsets 0..3 of leader 1's log, with HW 2.
fn follower_with_high_watermark_2(leader_dir: &Path, follower_dir: &Path) -> Partition {
    let (leader, follower) = (open(leader_dir, 1), open(follower_dir, 2));
    apply(&leader, &registration(1, 0, &[1, 2]));
    apply(&follower, &registration(1, 0, &[1, 2]));
    for sequence in 0..3 {
        append(&leader, &idempotent_batch(sequence, "v")).expect("append");
    }
    let answer = FetchPartitionResponse {
        records: leader.read_range(0, 3, 1 << 20).expect("read"),
        high_watermark: 2,
        log_end_offset: 3,
        leader_epoch: 0,
        ..FetchPartitionResponse::empty(TopicPartition::new("t", 0))
    };
    follower.apply_fetch_response(1, 0, answer);
    assert_eq!((follower.log_end_offset(), follower.high_watermark()), (3, 2));
    follower
}

#[test]
fn a_leader_that_knows_none_of_our_epochs_truncates_us_to_our_hw_never_below() {
    // Kafka AbstractFetcherThread.getOffsetTruncationState: an UNDEFINED_EPOCH_OFFSET answer
    // locates no divergence, so the follower truncates to its HW, not to the leader's start.
    let (leader_dir, follower_dir) = (TempDir::new(), TempDir::new());
    let follower = follower_with_high_watermark_2(&leader_dir.0, &follower_dir.0);
    let undefined = |end_offset| FetchPartitionResponse {
        diverging_epoch: Some(EpochEndOffset { epoch: -1, end_offset }),
        leader_epoch: 0,
        ..FetchPartitionResponse::empty(TopicPartition::new("t", 0))
    };
    follower.apply_fetch_response(1, 0, undefined(-1));
    assert_eq!((follower.log_end_offset(), follower.high_watermark()), (2, 2), "only the tail above the HW goes");
    let kept = follower.read_range(0, 2, 1 << 20).expect("read below the HW");
    assert_eq!(insync_log::batch::iter_batches(&kept).count(), 2, "offsets 0 and 1 are kept");
    // The answer an older leader gave (its log start as the end offset) cuts nothing more,
    // and the fetcher backs off rather than asking again at once.
    let applied = follower.apply_fetch_response(1, 0, undefined(0));
    assert_eq!(follower.log_end_offset(), 2);
    assert!(applied.back_off);
}

#[test]
fn a_leader_alone_in_its_isr_advances_the_hw_when_it_takes_over() {
    // Kafka Partition.makeLeader ends with maybeIncrementLeaderHW ("ISR could be down to 1").
    let (leader_dir, follower_dir) = (TempDir::new(), TempDir::new());
    let follower = follower_with_high_watermark_2(&leader_dir.0, &follower_dir.0);
    let actions = apply(&follower, &registration(2, 1, &[2]));
    assert!(actions.contains(&Action::HighWatermarkAdvanced { high_watermark: 3 }), "{actions:?}");
    assert_eq!(follower.high_watermark(), 3);
}

#[test]
fn a_lower_min_insync_replicas_releases_the_hw_without_a_new_partition_epoch() {
    // Strict min ISR (KAFKA-15583) holds the HW; a metadata snapshot that only lowers
    // min.insync.replicas (same epochs) must release it, not wait for the next append.
    let dir = TempDir::new();
    let partition = open(&dir.0, 1);
    apply_with_min_isr(&partition, &registration(1, 0, &[1]), 2);
    append(&partition, &idempotent_batch(0, "v")).expect("acks=1 append under min ISR");
    assert_eq!(partition.high_watermark(), 0, "held: ISR [1] is below min.insync.replicas 2");
    let actions = apply_with_min_isr(&partition, &registration(1, 0, &[1]), 1);
    assert_eq!(actions, vec![Action::HighWatermarkAdvanced { high_watermark: 1 }]);
    assert_eq!(partition.high_watermark(), 1);
}
