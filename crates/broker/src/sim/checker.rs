//! The invariants, checked after every step of a schedule (the end-of-schedule convergence
//! check is `faults.rs`'s `final_check`). The checker keeps a mirror of every replica's log (re-read from the
//! real log whenever its end moves; a log does not change while its broker is down, since a
//! crash loses no written bytes here), the batches leaders acknowledged, and the highest HW
//! each leader epoch reached. Per step:
//!
//! 1. On every leader: HW ≤ its LEO, and HW ≤ the LEO of every member of its maximal ISR
//!    (the committed ISR plus a member being added, KIP-497) — the real LEO of that
//!    replica's log, not what the leader believes (Kafka `Partition.maybeIncrementLeaderHW`).
//! 2. No acknowledged write is lost while an ISR member survives, stated as: every batch a
//!    leader acknowledged (acks=all, NONE) at offset `o` is, at every later step, in the log
//!    of every broker in the controller's committed ISR of its partition, at offset `o` with
//!    the same value (a down member's log counts as it is on disk). The controller elects
//!    only from that ISR, so this is what makes the write survive any clean election. It is
//!    the stronger of the possible statements, and it holds in a correct protocol: the ack
//!    waited for HW > `o`, HW ≤ the LEO of every member of the leader's maximal ISR, the
//!    controller's ISR is within that maximal ISR (KIP-497: a change the leader proposed
//!    counts until the leader knows its fate), a member joins only at LEO ≥ HW, and a
//!    follower truncates only past where it agrees with the leader (KIP-101/KIP-279).
//! 3. A leader's HW never moves back within one leader epoch (of one leader process: see
//!    `Checker::check_leader` for a restarted broker that resumes the epoch it led).
//! 4. Idempotence: no value appears twice in any replica's log (every replica's log is a
//!    copy of some leader's, so this includes the leader's), and a sequence acknowledged
//!    twice (a retry) is acknowledged at the same offset.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use insync_log::{decode_records, iter_batches};
use insync_types::{BrokerId, LeaderEpoch, Offset};

use super::effects::{Ack, Append, Coverage};
use crate::partition::Partition;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    AckedWriteMissing,
    HighWatermarkAboveIsrMember,
    HighWatermarkAboveLeaderLeo,
    HighWatermarkWentBack,
    LeaderResumedEpochAfterRestart,
    DuplicateInLog,
    AckedAtTwoOffsets,
    UnexpectedAnswer,
    NotConverged,
    Diverged,
    Panic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    pub message: String,
}

impl Violation {
    pub fn new(kind: ViolationKind, message: impl Into<String>) -> Violation {
        Violation { kind, message: message.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

/// One batch of a replica's log (the harness writes one record per batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBatch {
    pub base: Offset,
    pub epoch: LeaderEpoch,
    pub sequence: i32,
    pub value: u64,
}

/// What the checker knows of one replica's log.
#[derive(Debug, Default, Clone)]
pub struct Mirror {
    pub batches: Vec<LogBatch>,
    pub end: Offset,
    /// Bumped on every truncation: acknowledged batches are then checked again.
    pub generation: u64,
    values: BTreeSet<u64>,
}

impl Mirror {
    pub fn contains_value(&self, value: u64) -> bool {
        self.values.contains(&value)
    }

    pub fn batch_at(&self, offset: Offset) -> Option<&LogBatch> {
        let index = self.batches.binary_search_by_key(&offset, |b| b.base).ok()?;
        self.batches.get(index)
    }

    /// Follows the real log: drops what a truncation removed, reads what was appended.
    /// Returns the number of records truncated.
    fn sync(&mut self, partition: &Partition) -> Result<u64, Violation> {
        let end = partition.log_end_offset();
        if end == self.end {
            return Ok(0);
        }
        let mut truncated = 0;
        if end < self.end {
            truncated = (self.end - end) as u64;
            self.generation += 1;
            while self.batches.last().is_some_and(|b| b.base >= end) {
                if let Some(b) = self.batches.pop() {
                    self.values.remove(&b.value);
                }
            }
            self.end = end;
        }
        while self.end < end {
            let bytes = partition
                .read_range(self.end, end, 1 << 20)
                .map_err(|e| Violation::new(ViolationKind::UnexpectedAnswer, format!("reading the log: {e}")))?;
            let before = self.end;
            self.append(&bytes)?;
            if self.end == before {
                return Err(Violation::new(ViolationKind::UnexpectedAnswer, format!("no batch at offset {before}")));
            }
        }
        Ok(truncated)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        for item in iter_batches(bytes) {
            let (header, raw) = item.map_err(|e| Violation::new(ViolationKind::UnexpectedAnswer, e.to_string()))?;
            let records =
                decode_records(raw).map_err(|e| Violation::new(ViolationKind::UnexpectedAnswer, e.to_string()))?;
            let value = records
                .first()
                .and_then(|r| r.value.as_ref())
                .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
                .map_or(u64::MAX, u64::from_be_bytes);
            if !self.values.insert(value) {
                let first = self.batches.iter().find(|b| b.value == value).map_or(-1, |b| b.base);
                return Err(Violation::new(
                    ViolationKind::DuplicateInLog,
                    format!(
                        "value {value:#x} (seq {}) at offsets {first} and {}",
                        header.base_sequence, header.base_offset
                    ),
                ));
            }
            self.batches.push(LogBatch {
                base: header.base_offset,
                epoch: header.partition_leader_epoch,
                sequence: header.base_sequence,
                value,
            });
            self.end = header.next_offset();
        }
        Ok(())
    }
}

/// A leader's state as the checker reads it.
#[derive(Debug, Clone)]
pub struct LeaderView {
    pub broker: BrokerId,
    pub incarnation: u64,
    pub partition: i32,
    pub leader_epoch: LeaderEpoch,
    pub high_watermark: Offset,
    pub log_end_offset: Offset,
    pub maximal_isr: BTreeSet<BrokerId>,
}

impl LeaderView {
    pub fn of(broker: BrokerId, incarnation: u64, partition_no: i32, partition: &Partition) -> Option<LeaderView> {
        partition.inspect(|s| {
            s.leader().map(|l| LeaderView {
                broker,
                incarnation,
                partition: partition_no,
                leader_epoch: s.leader_epoch(),
                high_watermark: l.high_watermark(),
                log_end_offset: s.log_end_offset(),
                maximal_isr: l.isr_state().maximal(),
            })
        })
    }
}

#[derive(Debug, Default)]
pub struct Checker {
    pub mirrors: BTreeMap<(BrokerId, i32), Mirror>,
    /// Acknowledged batches per partition, first acknowledgement of each sequence, in order.
    acks: BTreeMap<i32, Vec<Ack>>,
    acked_sequences: BTreeMap<(i32, i32), Ack>,
    /// The highest HW per (partition, leader epoch, leader incarnation).
    high_watermarks: BTreeMap<(i32, LeaderEpoch, u64), Offset>,
    /// The first process to lead each (partition, leader epoch).
    epoch_leaders: BTreeMap<(i32, LeaderEpoch), (BrokerId, u64)>,
    /// Per replica: the mirror generation and how many acknowledgements were found in it.
    verified: BTreeMap<(BrokerId, i32), (u64, usize)>,
    first_appender: BTreeMap<(i32, i32), BrokerId>,
    /// Whether a restarted broker leading its old epoch is a violation (else counted).
    strict_restarts: bool,
}

impl Checker {
    pub fn new(strict_restarts: bool) -> Checker {
        Checker { strict_restarts, ..Checker::default() }
    }

    pub fn sync_replica(
        &mut self,
        broker: BrokerId,
        partition_no: i32,
        partition: &Partition,
        coverage: &mut Coverage,
    ) -> Result<(), Violation> {
        let mirror = self.mirrors.entry((broker, partition_no)).or_default();
        let truncated = mirror
            .sync(partition)
            .map_err(|v| Violation { message: format!("broker {broker} p{partition_no}: {}", v.message), ..v })?;
        if truncated > 0 {
            coverage.bump("log_truncated");
            coverage.add("log_truncated_records", truncated);
        }
        Ok(())
    }

    pub fn mirror_end(&self, broker: BrokerId, partition: i32) -> Offset {
        self.mirrors.get(&(broker, partition)).map_or(0, |m| m.end)
    }

    /// Invariants 1 and 3 on one leader.
    ///
    /// A broker that restarts before the controller has fenced it applies the metadata feed
    /// before its new registration is committed (`server.rs` starts the watch and the
    /// registration together), so it can lead, from its checkpointed HW, the very epoch it
    /// led before the crash: its HW then starts below where it was. The controller fences a
    /// restarted broker exactly so that it cannot keep leading, and Kafka's broker waits for
    /// the metadata to include its own registration before it acts on it, so this is a
    /// finding of its own (counted, and tested by `restarted_broker_never_resumes_its_epoch`)
    /// rather than invariant 3's: HW monotonicity is checked per leader process.
    pub fn check_leader(&mut self, leader: &LeaderView, coverage: &mut Coverage) -> Result<(), Violation> {
        let (b, p, le, hw) = (leader.broker, leader.partition, leader.leader_epoch, leader.high_watermark);
        if hw > leader.log_end_offset {
            let message = format!("leader {b} p{p} epoch {le}: HW {hw} > its LEO {}", leader.log_end_offset);
            return Err(Violation::new(ViolationKind::HighWatermarkAboveLeaderLeo, message));
        }
        for &member in &leader.maximal_isr {
            let end = self.mirror_end(member, p);
            if hw > end {
                let message = format!(
                    "leader {b} p{p} epoch {le}: HW {hw} > LEO {end} of broker {member} in its ISR {:?}",
                    leader.maximal_isr
                );
                return Err(Violation::new(ViolationKind::HighWatermarkAboveIsrMember, message));
            }
        }
        let first = *self.epoch_leaders.entry((p, le)).or_insert((b, leader.incarnation));
        if first != (b, leader.incarnation) {
            coverage.bump("leader_resumed_epoch_after_restart");
            if self.strict_restarts {
                let message = format!(
                    "broker {b} (incarnation {}) leads p{p} at epoch {le}, which its incarnation {} led before it crashed; HW {hw} (was {})",
                    leader.incarnation,
                    first.1,
                    self.high_watermarks.get(&(p, le, first.1)).copied().unwrap_or(-1)
                );
                return Err(Violation::new(ViolationKind::LeaderResumedEpochAfterRestart, message));
            }
            if self.high_watermarks.get(&(p, le, first.1)).is_some_and(|&before| before > hw) {
                coverage.bump("leader_resumed_epoch_with_lower_hw");
            }
            self.epoch_leaders.insert((p, le), (b, leader.incarnation));
        }
        let highest = self.high_watermarks.entry((p, le, leader.incarnation)).or_insert(hw);
        if hw < *highest {
            let message = format!("leader {b} p{p} epoch {le}: HW went back from {highest} to {hw}");
            return Err(Violation::new(ViolationKind::HighWatermarkWentBack, message));
        }
        *highest = hw;
        Ok(())
    }

    /// A leader acknowledged a batch: remember it (a repeated acknowledgement of a retry
    /// must name the same offset).
    pub fn record_ack(&mut self, ack: Ack) -> Result<(), Violation> {
        match self.acked_sequences.get(&(ack.partition, ack.sequence)) {
            Some(first) if first.base_offset != ack.base_offset || first.value != ack.value => {
                let message = format!(
                    "p{} seq {} acknowledged at offset {} by broker {} and at offset {} by broker {}",
                    ack.partition, ack.sequence, first.base_offset, first.broker, ack.base_offset, ack.broker
                );
                Err(Violation::new(ViolationKind::AckedAtTwoOffsets, message))
            }
            Some(_) => Ok(()),
            None => {
                self.acked_sequences.insert((ack.partition, ack.sequence), ack);
                self.acks.entry(ack.partition).or_default().push(ack);
                Ok(())
            }
        }
    }

    /// A leader took a batch; counts deduplicated retries, and those on another leader.
    pub fn record_append(&mut self, append: Append, coverage: &mut Coverage) {
        let first = *self.first_appender.entry((append.partition, append.sequence)).or_insert(append.broker);
        if append.duplicate {
            coverage.bump("produce_deduplicated");
            if first != append.broker {
                coverage.bump("produce_deduplicated_on_new_leader");
            }
        }
    }

    /// Invariant 2: every acknowledged batch is in the log of every member of the
    /// controller's ISR, at its offset.
    pub fn check_acked(&mut self, isr_by_partition: &BTreeMap<i32, Vec<BrokerId>>) -> Result<(), Violation> {
        let Checker { mirrors, acks, verified, .. } = self;
        let empty = Mirror::default();
        for (&partition, isr) in isr_by_partition {
            let Some(acks) = acks.get(&partition) else { continue };
            for &member in isr {
                let mirror = mirrors.get(&(member, partition)).unwrap_or(&empty);
                let entry = verified.entry((member, partition)).or_insert((mirror.generation, 0));
                if entry.0 != mirror.generation {
                    *entry = (mirror.generation, 0);
                }
                for ack in &acks[entry.1..] {
                    let found = mirror.batch_at(ack.base_offset);
                    if found.is_none_or(|b| b.value != ack.value) {
                        return Err(missing(ack, member, isr, found));
                    }
                }
                entry.1 = acks.len();
            }
        }
        Ok(())
    }

    pub fn acked(&self, partition: i32) -> &[Ack] {
        self.acks.get(&partition).map_or(&[], Vec::as_slice)
    }
}

fn missing(ack: &Ack, member: BrokerId, isr: &[BrokerId], found: Option<&LogBatch>) -> Violation {
    let there = match found {
        Some(b) => format!("seq {} (epoch {}) is there instead", b.sequence, b.epoch),
        None => "its log has no batch there".to_string(),
    };
    let message = format!(
        "p{} seq {} acknowledged by broker {} at offset {} (epoch {}) is missing from broker {member} in the controller's ISR {isr:?}: {there}",
        ack.partition, ack.sequence, ack.broker, ack.base_offset, ack.leader_epoch
    );
    Violation::new(ViolationKind::AckedWriteMissing, message)
}
