//! The partition sender's sequencing after a batch leaves the queue unacknowledged, driven
//! through its own methods without a broker: which batches are failed, which keep their
//! producer id, epoch and sequence numbers, which are renumbered under a bumped epoch.
use insync_log::batch::parse_header;
use tokio::sync::oneshot::error::TryRecvError;

use super::*;

const PRODUCER_ID: i64 = 7;

/// An idempotent sender that already has producer id 7, epoch 0; every record is a batch.
fn sender() -> PartitionSender {
    let cluster = Cluster::new("127.0.0.1:1").expect("a bootstrap list");
    let (_tx, rx) = mpsc::channel(16);
    let config =
        ProducerConfig { linger: Duration::ZERO, delivery_timeout: Duration::from_secs(1), ..Default::default() };
    let mut sender = PartitionSender::new(cluster, config, "t", 0, rx);
    sender.producer_id = PRODUCER_ID;
    sender
}

fn push(sender: &mut PartitionSender, value: &'static str) -> oneshot::Receiver<RecordResult> {
    let (ack, rx) = oneshot::channel();
    let value = Some(Bytes::from_static(value.as_bytes()));
    sender.add(Record { key: None, value, timestamp_ms: 0, ack, enqueued: Instant::now() });
    rx
}

/// The first `n` queued batches went out on a stream that was then lost: their fates are
/// unknown. Then they went out again on a new stream.
fn lose_stream(sender: &mut PartitionSender, n: usize) {
    sender.sent = n;
    let f = sender.failure(ErrorCode::NETWORK_EXCEPTION, "stream ended".into(), Appended::Unknown);
    sender.note_retriable(f);
    sender.sent = n;
}

fn answer(code: ErrorCode, appended: bool, base_offset: i64) -> Result<Option<pb::ProduceResponse>, tonic::Status> {
    Ok(Some(pb::ProduceResponse {
        error_code: code.code(),
        error_message: format!("fake {code}"),
        base_offset,
        appended,
        leader_epoch: 0,
        correlation_id: 0,
    }))
}

/// (producer id, epoch, first sequence) of each queued batch, as its bytes carry them.
fn stamps(sender: &PartitionSender) -> Vec<(i64, i16, i32)> {
    sender
        .queue
        .iter()
        .map(|b| {
            let h = parse_header(&b.bytes).expect("a batch the sender built");
            assert_eq!(h.base_sequence, b.first_sequence);
            (h.producer_id, h.producer_epoch, h.base_sequence)
        })
        .collect()
}

fn expire_front(sender: &mut PartitionSender) {
    sender.queue[0].created = Instant::now() - Duration::from_secs(2);
    sender.expire_batches();
}

fn failure(rx: &mut oneshot::Receiver<RecordResult>) -> ProduceFailure {
    match rx.try_recv() {
        Ok(Err(f)) => f,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_batch_behind_an_expired_one_of_unknown_fate_keeps_its_id_and_sequence() {
    let mut s = sender();
    let mut a = push(&mut s, "a");
    let mut b = push(&mut s, "b");
    let mut c = push(&mut s, "c");
    lose_stream(&mut s, 2); // a and b may be in the log
    expire_front(&mut s);

    // b may be in the log under (7, 0, 1): resent under those it is deduplicated; under a
    // new id or epoch it would be written twice. Its answer tells whether a was written.
    assert_eq!(s.producer_id, PRODUCER_ID, "no new producer id");
    assert_eq!(stamps(&s), vec![(PRODUCER_ID, 0, 1), (PRODUCER_ID, 0, 2)]);
    let f = failure(&mut a);
    assert_eq!(f.appended, Appended::Unknown);
    assert!(f.message.contains("unknown"), "{}", f.message);
    assert!(s.queue[0].maybe_written);
    assert_eq!(b.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(c.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[tokio::test]
async fn an_expired_batch_never_written_bumps_the_epoch_for_the_rest() {
    let mut s = sender();
    let mut a = push(&mut s, "a");
    let mut b = push(&mut s, "b");
    expire_front(&mut s); // a never went out

    assert_eq!(failure(&mut a).appended, Appended::No);
    // Nothing queued can be in the log: renumber from 0 under epoch 1 of the same id
    // rather than reuse a's sequence numbers (KIP-360).
    assert_eq!(s.producer_id, PRODUCER_ID, "no new producer id");
    assert_eq!(stamps(&s), vec![(PRODUCER_ID, 1, 0)]);
    assert_eq!(b.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[tokio::test]
async fn of_two_expired_batches_only_the_one_sent_is_of_unknown_fate() {
    let mut s = sender();
    let mut a = push(&mut s, "a");
    let mut b = push(&mut s, "b");
    let _c = push(&mut s, "c");
    lose_stream(&mut s, 1); // a went out, b did not
    s.queue[1].created = Instant::now() - Duration::from_secs(2);
    expire_front(&mut s);

    assert_eq!(failure(&mut a).appended, Appended::Unknown);
    // b never went out, so it is not in the log and neither is c: c is renumbered under a
    // new epoch, whatever a's fate.
    assert_eq!(failure(&mut b).appended, Appended::No);
    assert_eq!(stamps(&s), vec![(PRODUCER_ID, 1, 0)]);
}

#[tokio::test]
async fn a_definite_failure_after_a_lost_answer_keeps_the_stream_and_the_next_answer_settles_it() {
    let mut s = sender();
    let mut a = push(&mut s, "a");
    let mut b = push(&mut s, "b");
    lose_stream(&mut s, 2);
    // a's retry is refused (min.insync.replicas is checked before the duplicate check, so
    // an earlier copy of a may be in the log all the same).
    s.on_response(answer(ErrorCode::NOT_ENOUGH_REPLICAS, false, -1)).await;

    assert_eq!(s.producer_id, PRODUCER_ID, "no new producer id");
    assert_eq!(s.sent, 1, "b stays on the stream, waiting for its answer");
    assert_eq!(stamps(&s), vec![(PRODUCER_ID, 0, 1)]);
    let f = failure(&mut a);
    assert_eq!(f.appended, Appended::Unknown);
    assert!(f.message.contains("unknown"), "{}", f.message);

    // The leader had a: b's retry is a duplicate, answered with its original offset.
    s.on_response(answer(ErrorCode::NONE, true, 1)).await;
    assert_eq!(b.try_recv().expect("answered").expect("acknowledged"), RecordAck { partition: 0, offset: 1 });
    assert!(s.queue.is_empty());
}

#[tokio::test]
async fn a_definite_failure_of_a_batch_never_written_bumps_the_epoch() {
    let mut s = sender();
    let mut a = push(&mut s, "a");
    let _b = push(&mut s, "b");
    let _c = push(&mut s, "c");
    s.sent = 3;
    s.on_response(answer(ErrorCode::NOT_ENOUGH_REPLICAS, false, -1)).await;

    assert_eq!(failure(&mut a).appended, Appended::No);
    assert_eq!(s.producer_id, PRODUCER_ID);
    assert_eq!(stamps(&s), vec![(PRODUCER_ID, 1, 0), (PRODUCER_ID, 1, 1)]);
    assert_eq!(s.sent, 0, "b and c go out again, renumbered, on a new stream");
}

#[tokio::test]
async fn a_failure_after_the_append_keeps_the_sequences() {
    let mut s = sender();
    let mut a = push(&mut s, "a");
    let _b = push(&mut s, "b");
    s.sent = 2;
    s.on_response(answer(ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND, true, 0)).await;

    assert_eq!(failure(&mut a).appended, Appended::Yes);
    assert_eq!(stamps(&s), vec![(PRODUCER_ID, 0, 1)]);
    assert_eq!(s.sent, 1);
}

#[tokio::test]
async fn out_of_order_bumps_the_epoch_and_retries_every_queued_batch() {
    let mut s = sender();
    let mut a = push(&mut s, "a");
    let _b = push(&mut s, "b");
    let _c = push(&mut s, "c");
    lose_stream(&mut s, 2);
    // The leader does not have the batch before a (say one that expired with its fate
    // unknown): a, and everything after it, is not in the log.
    s.on_response(answer(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER, false, -1)).await;

    assert_eq!(a.try_recv().unwrap_err(), TryRecvError::Empty, "a is retried, not failed");
    assert_eq!(s.producer_id, PRODUCER_ID, "no new producer id");
    assert_eq!(stamps(&s), vec![(PRODUCER_ID, 1, 0), (PRODUCER_ID, 1, 1), (PRODUCER_ID, 1, 2)]);
    assert!(s.queue.iter().all(|b| !b.maybe_written), "none was written under the old epoch");
    assert_eq!(s.sent, 0);
}

#[tokio::test]
async fn the_epoch_after_the_last_one_is_a_new_producer_id() {
    let mut s = sender();
    s.producer_epoch = i16::MAX;
    let _a = push(&mut s, "a");
    let _b = push(&mut s, "b");
    expire_front(&mut s);
    // As Kafka does when the epoch would overflow: `connect` asks for a new id, then
    // renumbers from 0.
    assert_eq!(s.producer_id, -1);
    assert_eq!(s.producer_epoch, 0);
}

#[test]
fn fate_is_unknown_when_an_earlier_answer_was_lost() {
    assert_eq!(fate(Appended::No, false), Appended::No);
    assert_eq!(fate(Appended::No, true), Appended::Unknown);
    assert_eq!(fate(Appended::Yes, true), Appended::Yes);
    assert_eq!(fate(Appended::Unknown, false), Appended::Unknown);
}

#[tokio::test]
async fn an_answer_naming_another_request_acknowledges_nothing() {
    let mut s = sender();
    let mut a = push(&mut s, "a");
    s.sent = 1;
    s.queue[0].correlation_id = 5;
    // A broker fault: the answer names request 4. Crediting it to a would acknowledge
    // records that may never have been written.
    let mut wrong = answer(ErrorCode::NONE, true, 0).expect("an answer").expect("some");
    wrong.correlation_id = 4;
    s.on_response(Ok(Some(wrong))).await;
    assert!(matches!(a.try_recv(), Err(TryRecvError::Empty)), "a is neither acknowledged nor failed");
    assert_eq!(s.sent, 0, "the stream is dropped");
    assert!(s.queue[0].maybe_written, "a went out, so its retry's fate is tied to this attempt");
}

#[tokio::test]
async fn batches_carry_the_configured_compression_and_keep_it_when_renumbered() {
    let cluster = Cluster::new("127.0.0.1:1").expect("a bootstrap list");
    let (_tx, rx) = mpsc::channel(16);
    let config = ProducerConfig {
        linger: Duration::ZERO,
        delivery_timeout: Duration::from_secs(1),
        compression: Compression::Zstd,
        ..Default::default()
    };
    let mut s = PartitionSender::new(cluster, config, "t", 0, rx);
    s.producer_id = PRODUCER_ID;
    let _a = push(&mut s, "a");
    let _b = push(&mut s, "b");
    for batch in &s.queue {
        let header = insync_log::validate_batch(&batch.bytes).expect("a valid batch");
        assert_eq!(header.codec(), Ok(Compression::Zstd));
    }
    let records = insync_log::decode_records(&s.queue[1].bytes).unwrap();
    assert_eq!(records[0].value.as_deref(), Some(&b"b"[..]));
    // A batch renumbered under a bumped epoch is rebuilt with the same codec.
    expire_front(&mut s); // a never went out
    assert_eq!(stamps(&s), vec![(PRODUCER_ID, 1, 0)]);
    assert_eq!(parse_header(&s.queue[0].bytes).unwrap().codec(), Ok(Compression::Zstd));
}
