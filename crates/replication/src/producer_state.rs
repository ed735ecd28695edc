//! Idempotent-producer state of one partition (Kafka `ProducerStateManager` /
//! `ProducerAppendInfo`, KIP-98): per producer id the epoch and the last five batches'
//! sequence ranges and offsets, so a retried batch is recognised as a duplicate and
//! answered with its original offset, and a gap in sequences is refused. Pure: the broker
//! feeds it batch headers from appends (leader and follower) and from log scans, and
//! persists it as snapshot bytes (`encode_snapshot` / `decode_snapshot`) so a restart or a
//! truncation replays only the log tail (Kafka `ProducerStateManager` snapshots).
use std::collections::{HashMap, VecDeque};
use std::fmt;

use insync_types::{ErrorCode, Offset};

/// Kafka keeps the metadata of the last 5 batches per producer
/// (`ProducerStateEntry.NUM_BATCHES_TO_RETAIN`), which is why max.in.flight ≤ 5 keeps
/// ordering and exactly-once with retries.
pub const BATCHES_TO_RETAIN: usize = 5;

/// The sequence/offset range of one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: Offset,
    pub last_offset: Offset,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Next in sequence (or not idempotent): append it.
    Append,
    /// Already in the log: answer with the original offsets, write nothing
    /// (Kafka `ProducerStateEntry.findDuplicateBatch`).
    Duplicate(BatchMetadata),
}

/// Producer ids, epochs and recent sequences of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
}

/// Kafka's sequence arithmetic wraps at i32::MAX (`DefaultRecordBatch.incrementSequence`).
fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

impl ProducerStateTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Validates a leader append (Kafka `ProducerAppendInfo.checkProducerEpoch` and
    /// `checkSequence`): an older epoch is fenced, a known batch is a duplicate, the next
    /// batch must start right after the last one (a new producer or epoch at 0).
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        last_sequence: i32,
    ) -> Result<SequenceCheck, ErrorCode> {
        if producer_id < 0 {
            return Ok(SequenceCheck::Append); // not an idempotent batch
        }
        let Some(entry) = self.producers.get(&producer_id) else {
            return if first_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        };
        if epoch < entry.epoch {
            return Err(ErrorCode::INVALID_PRODUCER_EPOCH);
        }
        if epoch > entry.epoch {
            // A bumped epoch restarts its sequences at 0.
            return if first_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        }
        if let Some(b) =
            entry.batches.iter().find(|b| b.first_sequence == first_sequence && b.last_sequence == last_sequence)
        {
            return Ok(SequenceCheck::Duplicate(*b));
        }
        match entry.batches.back() {
            Some(last) if first_sequence == next_sequence(last.last_sequence) => Ok(SequenceCheck::Append),
            None if first_sequence == 0 => Ok(SequenceCheck::Append),
            _ => Err(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER),
        }
    }

    /// Records an appended batch (leader or follower; Kafka `ProducerStateManager.update`).
    /// Followers and log scans call this without `check`: the leader already validated.
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchMetadata) {
        if producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(producer_id).or_default();
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(batch);
        while entry.batches.len() > BATCHES_TO_RETAIN {
            entry.batches.pop_front();
        }
    }

    /// Forgets everything (before a rebuild from the log after truncation).
    pub fn clear(&mut self) {
        self.producers.clear();
    }

    /// Encodes the table as a snapshot covering the log below `end_offset` (exclusive):
    /// every batch recorded so far must end below it. Producers are written in id order so
    /// the same table always gives the same bytes. Format in [`SNAPSHOT_MAGIC`]'s docs.
    pub fn encode_snapshot(&self, end_offset: Offset) -> Vec<u8> {
        let mut entries: Vec<(&i64, &ProducerEntry)> = self.producers.iter().collect();
        entries.sort_unstable_by_key(|(id, _)| **id);
        // More than 2^32 producers cannot fit in memory anyway; the clamp keeps this total.
        let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(
            SNAPSHOT_HEADER_BYTES
                + entries.len() * (PRODUCER_HEADER_BYTES + BATCHES_TO_RETAIN * BATCH_BYTES)
                + SNAPSHOT_CRC_BYTES,
        );
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&end_offset.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        for (id, entry) in entries.into_iter().take(count as usize) {
            // `record` keeps at most BATCHES_TO_RETAIN, so the u8 count never saturates.
            let batches = entry.batches.len().min(BATCHES_TO_RETAIN);
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.push(batches as u8);
            for b in entry.batches.iter().take(batches) {
                out.extend_from_slice(&b.first_sequence.to_be_bytes());
                out.extend_from_slice(&b.last_sequence.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes snapshot bytes into the offset they cover up to (exclusive) and the table.
    /// The bytes are untrusted (a torn write, a flipped bit, a stray file): the CRC is
    /// checked before any count is believed, every count is bounded by the bytes present
    /// before anything is allocated, and anything malformed is an error, never a panic.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<(Offset, ProducerStateTable), SnapshotError> {
        if bytes.len() < SNAPSHOT_HEADER_BYTES + SNAPSHOT_CRC_BYTES {
            return Err(SnapshotError::Truncated);
        }
        let (body, stored) = bytes.split_at(bytes.len() - SNAPSHOT_CRC_BYTES);
        let mut reader = Reader(body);
        if reader.take::<4>()? != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = u16::from_be_bytes(reader.take()?);
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let stored = u32::from_be_bytes(Reader(stored).take()?);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(SnapshotError::CrcMismatch { stored, computed });
        }
        let end_offset = i64::from_be_bytes(reader.take()?);
        if end_offset < 0 {
            return Err(SnapshotError::Invalid("negative end offset"));
        }
        let count = u32::from_be_bytes(reader.take()?) as usize;
        // Each producer takes at least PRODUCER_HEADER_BYTES: a larger count is a lie, and
        // refusing it here keeps a forged count from reserving gigabytes below.
        if count > reader.0.len() / PRODUCER_HEADER_BYTES {
            return Err(SnapshotError::CountTooLarge);
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            let (id, entry) = decode_producer(&mut reader, end_offset)?;
            if producers.insert(id, entry).is_some() {
                return Err(SnapshotError::Invalid("duplicate producer id"));
            }
        }
        if !reader.0.is_empty() {
            return Err(SnapshotError::TrailingBytes);
        }
        Ok((end_offset, ProducerStateTable { producers }))
    }
}

/// Snapshot format, version 1, all integers big-endian (Kafka's byte order):
///
/// ```text
/// magic "ISPS" (4) | version u16 = 1 | end_offset i64 (exclusive) | producer_count u32
/// producer_count × { producer_id i64 | epoch i16 | batch_count u8 (≤ 5)
///                    batch_count × { first_sequence i32 | last_sequence i32
///                                    first_offset i64 | last_offset i64 } }
/// crc32c u32 over every byte before it
/// ```
///
/// Batches are oldest first with increasing offsets, all below `end_offset`; producer ids
/// are non-negative and unique (encoded in increasing order, any order accepted).
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"ISPS";
/// Bumped on any format change; older readers refuse newer files rather than misread them.
pub const SNAPSHOT_VERSION: u16 = 1;
/// Magic, version, end offset, producer count.
const SNAPSHOT_HEADER_BYTES: usize = 4 + 2 + 8 + 4;
const SNAPSHOT_CRC_BYTES: usize = 4;
/// Producer id, epoch, batch count.
const PRODUCER_HEADER_BYTES: usize = 8 + 2 + 1;
/// First and last sequence, first and last offset.
const BATCH_BYTES: usize = 4 + 4 + 8 + 8;

/// Why snapshot bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// The bytes end inside a field.
    Truncated,
    BadMagic,
    UnsupportedVersion(u16),
    CrcMismatch {
        stored: u32,
        computed: u32,
    },
    /// A count larger than the remaining bytes could hold.
    CountTooLarge,
    /// Bytes after the last producer.
    TrailingBytes,
    /// CRC-valid but inconsistent content.
    Invalid(&'static str),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Truncated => f.write_str("producer snapshot truncated"),
            SnapshotError::BadMagic => f.write_str("not a producer snapshot (bad magic)"),
            SnapshotError::UnsupportedVersion(v) => write!(f, "unsupported producer snapshot version {v}"),
            SnapshotError::CrcMismatch { stored, computed } => {
                write!(f, "producer snapshot CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")
            }
            SnapshotError::CountTooLarge => f.write_str("producer snapshot count exceeds its size"),
            SnapshotError::TrailingBytes => f.write_str("producer snapshot has trailing bytes"),
            SnapshotError::Invalid(why) => write!(f, "invalid producer snapshot: {why}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(SnapshotError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }
}

/// One producer entry; its batches must be ordered and end below `end_offset`, which is
/// what `record` builds from a log read below that offset.
fn decode_producer(reader: &mut Reader<'_>, end_offset: Offset) -> Result<(i64, ProducerEntry), SnapshotError> {
    let id = i64::from_be_bytes(reader.take()?);
    if id < 0 {
        return Err(SnapshotError::Invalid("negative producer id"));
    }
    let epoch = i16::from_be_bytes(reader.take()?);
    let [batch_count] = reader.take::<1>()?;
    let batch_count = usize::from(batch_count);
    if batch_count > BATCHES_TO_RETAIN {
        return Err(SnapshotError::Invalid("more batches than are retained"));
    }
    let mut batches = VecDeque::with_capacity(batch_count);
    let mut previous_last: Offset = -1;
    for _ in 0..batch_count {
        let batch = BatchMetadata {
            first_sequence: i32::from_be_bytes(reader.take()?),
            last_sequence: i32::from_be_bytes(reader.take()?),
            first_offset: i64::from_be_bytes(reader.take()?),
            last_offset: i64::from_be_bytes(reader.take()?),
        };
        if batch.first_offset <= previous_last || batch.last_offset < batch.first_offset {
            return Err(SnapshotError::Invalid("batch offsets out of order"));
        }
        if batch.last_offset >= end_offset {
            return Err(SnapshotError::Invalid("batch beyond the snapshot's end offset"));
        }
        previous_last = batch.last_offset;
        batches.push_back(batch);
    }
    Ok((id, ProducerEntry { epoch, batches }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first_sequence: i32, last_sequence: i32, first_offset: i64) -> BatchMetadata {
        BatchMetadata {
            first_sequence,
            last_sequence,
            first_offset,
            last_offset: first_offset + i64::from(last_sequence - first_sequence),
        }
    }

    #[test]
    fn new_producer_must_start_at_sequence_zero() {
        // Kafka ProducerAppendInfo.checkSequence: no state and seq ≠ 0 is out of order.
        let t = ProducerStateTable::new();
        assert_eq!(t.check(7, 0, 0, 9), Ok(SequenceCheck::Append));
        assert_eq!(t.check(7, 0, 10, 19), Err(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER));
        assert_eq!(t.check(-1, -1, -1, -1), Ok(SequenceCheck::Append), "non-idempotent batches pass");
    }

    #[test]
    fn retried_batch_is_a_duplicate_with_its_original_offsets() {
        // Kafka ProducerStateEntry.findDuplicateBatch over the last 5 batches.
        let mut t = ProducerStateTable::new();
        t.record(7, 0, batch(0, 9, 100));
        t.record(7, 0, batch(10, 19, 110));
        assert_eq!(t.check(7, 0, 0, 9), Ok(SequenceCheck::Duplicate(batch(0, 9, 100))));
        assert_eq!(t.check(7, 0, 10, 19), Ok(SequenceCheck::Duplicate(batch(10, 19, 110))));
        assert_eq!(t.check(7, 0, 20, 29), Ok(SequenceCheck::Append));
    }

    #[test]
    fn a_gap_in_sequences_is_out_of_order() {
        let mut t = ProducerStateTable::new();
        t.record(7, 0, batch(0, 9, 0));
        assert_eq!(t.check(7, 0, 15, 20), Err(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER));
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let mut t = ProducerStateTable::new();
        for i in 0..6 {
            t.record(7, 0, batch(i * 10, i * 10 + 9, i64::from(i) * 10));
        }
        assert_eq!(t.check(7, 0, 0, 9), Err(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER), "evicted");
        assert!(matches!(t.check(7, 0, 10, 19), Ok(SequenceCheck::Duplicate(_))));
    }

    #[test]
    fn older_epoch_is_fenced_and_newer_epoch_restarts_at_zero() {
        // Kafka ProducerAppendInfo.checkProducerEpoch.
        let mut t = ProducerStateTable::new();
        t.record(7, 1, batch(0, 4, 0));
        assert_eq!(t.check(7, 0, 5, 9), Err(ErrorCode::INVALID_PRODUCER_EPOCH));
        assert_eq!(t.check(7, 2, 0, 4), Ok(SequenceCheck::Append));
        assert_eq!(t.check(7, 2, 5, 9), Err(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER));
    }

    /// Three producers: one with the full five batches, one at a bumped epoch, one whose
    /// sequences wrapped; the next offset is 100.
    fn sample_table() -> ProducerStateTable {
        let mut t = ProducerStateTable::new();
        for i in 0..7 {
            t.record(7, 0, batch(i * 10, i * 10 + 9, i64::from(i) * 10));
        }
        t.record(3, 0, batch(0, 1, 70));
        t.record(3, 2, batch(0, 4, 72));
        t.record(
            i64::MAX,
            i16::MAX,
            BatchMetadata { first_sequence: i32::MAX, last_sequence: 1, first_offset: 77, last_offset: 79 },
        );
        t
    }

    /// Appends the CRC to a hand-made body, so a test reaches the checks behind the CRC.
    fn sealed(mut body: Vec<u8>) -> Vec<u8> {
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        body
    }

    fn header(end_offset: i64, count: u32) -> Vec<u8> {
        let mut body = SNAPSHOT_MAGIC.to_vec();
        body.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        body.extend_from_slice(&end_offset.to_be_bytes());
        body.extend_from_slice(&count.to_be_bytes());
        body
    }

    #[test]
    fn snapshot_round_trips() {
        let t = sample_table();
        let bytes = t.encode_snapshot(100);
        assert_eq!(ProducerStateTable::decode_snapshot(&bytes), Ok((100, t.clone())));
        assert_eq!(bytes, t.clone().encode_snapshot(100), "deterministic: producers in id order");
        let empty = ProducerStateTable::new().encode_snapshot(0);
        assert_eq!(empty.len(), SNAPSHOT_HEADER_BYTES + SNAPSHOT_CRC_BYTES);
        assert_eq!(ProducerStateTable::decode_snapshot(&empty), Ok((0, ProducerStateTable::new())));
    }

    #[test]
    fn every_truncation_of_a_snapshot_is_refused() {
        let bytes = sample_table().encode_snapshot(100);
        for len in 0..bytes.len() {
            assert!(ProducerStateTable::decode_snapshot(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
    }

    #[test]
    fn a_flipped_byte_fails_the_crc() {
        let bytes = sample_table().encode_snapshot(100);
        for i in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0x40;
            let err = ProducerStateTable::decode_snapshot(&corrupt).expect_err("corruption detected");
            match i {
                0..4 => assert_eq!(err, SnapshotError::BadMagic),
                4..6 => assert!(matches!(err, SnapshotError::UnsupportedVersion(_))),
                _ => assert!(matches!(err, SnapshotError::CrcMismatch { .. }), "byte {i}: {err}"),
            }
        }
    }

    #[test]
    fn a_huge_count_is_refused_before_allocating() {
        // u32::MAX producers would reserve ~100 GB if believed; it must fail on the size check.
        let bytes = sealed(header(100, u32::MAX));
        assert_eq!(ProducerStateTable::decode_snapshot(&bytes), Err(SnapshotError::CountTooLarge));
        let mut body = header(100, 1);
        body.extend_from_slice(&7i64.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.push(u8::MAX);
        let err = ProducerStateTable::decode_snapshot(&sealed(body)).expect_err("batch count over 5");
        assert!(matches!(err, SnapshotError::Invalid(_)), "{err}");
    }

    #[test]
    fn crc_valid_but_inconsistent_snapshots_are_refused() {
        let producer = |id: i64, first_offset: i64, last_offset: i64| {
            let mut p = id.to_be_bytes().to_vec();
            p.extend_from_slice(&0i16.to_be_bytes());
            p.push(1);
            for field in [0i32, 0] {
                p.extend_from_slice(&field.to_be_bytes());
            }
            p.extend_from_slice(&first_offset.to_be_bytes());
            p.extend_from_slice(&last_offset.to_be_bytes());
            p
        };
        let cases: [(i64, Vec<Vec<u8>>, &str); 5] = [
            (10, vec![producer(1, 0, 0), producer(1, 1, 1)], "duplicate producer"),
            (10, vec![producer(-1, 0, 0)], "negative producer id"),
            (10, vec![producer(1, 5, 10)], "batch at the end offset"),
            (10, vec![producer(1, 5, 4)], "last offset before first"),
            (-1, vec![], "negative end offset"),
        ];
        for (end_offset, producers, why) in cases {
            let mut body = header(end_offset, producers.len() as u32);
            body.extend(producers.concat());
            assert!(ProducerStateTable::decode_snapshot(&sealed(body)).is_err(), "{why}");
        }
        let mut body = header(10, 0);
        body.push(0);
        assert_eq!(ProducerStateTable::decode_snapshot(&sealed(body)), Err(SnapshotError::TrailingBytes));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut t = ProducerStateTable::new();
        t.record(
            7,
            0,
            BatchMetadata { first_sequence: i32::MAX - 1, last_sequence: i32::MAX, first_offset: 0, last_offset: 1 },
        );
        assert_eq!(t.check(7, 0, 0, 3), Ok(SequenceCheck::Append));
    }
}
