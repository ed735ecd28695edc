//! Idempotent-producer state of one partition (Kafka `ProducerStateManager` /
//! `ProducerAppendInfo`, KIP-98): per producer id the epoch and the last five batches'
//! sequence ranges and offsets, so a retried batch is recognised as a duplicate and
//! answered with its original offset, and a gap in sequences is refused. Pure: the broker
//! feeds it batch headers from appends (leader and follower) and from log scans.
use std::collections::{HashMap, VecDeque};

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
#[derive(Debug, Clone, Default)]
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
