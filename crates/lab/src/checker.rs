//! The durability checker: a pure function from one partition's history of sends
//! (`history.rs`) and what was read back (every replica's log with its high watermark, and a
//! consumer's read through the leader) to the anomalies Kafka's rules forbid. No I/O, no
//! clock: `lab`, `chaos` and the test suite feed it; its unit tests feed it by hand.
//!
//! What counts as committed is what a consumer can read: the records below the leader's
//! high watermark (the consumer read when there is one, else the replica with the highest
//! HW). Against that reference it reports, in Jepsen's vocabulary:
//! - an acknowledged write that is not there (lost), or not where it was acknowledged;
//! - two values claimed for one offset (by acknowledgements or reads);
//! - a definitely-failed write that shows up anywhere (it was never appended);
//! - a value at two offsets (duplicate; allowed only when a non-idempotent acks=0/1 producer
//!   retried a send whose answer was lost; the lab's acks=all producers are idempotent,
//!   KIP-98, and never mark a send as retried, so any acks=all duplicate is reported);
//! - replicas that differ below the smaller of their high watermarks: Kafka's replication
//!   invariant is that committed records are identical on every replica (KIP-101 exists
//!   because truncating to the local HW broke it);
//! - values nobody sent, and a high watermark beyond a replica's log end.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use insync_types::ErrorCode;
use serde::Serialize;

use crate::history::{Op, Outcome};

/// Where a record was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The log files of this broker's replica.
    Replica(i32),
    /// A consumer fetch through the partition leader (below its HW).
    Consumer,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Replica(b) => write!(f, "broker {b}"),
            Source::Consumer => write!(f, "consumer"),
        }
    }
}

/// One replica's whole log (offset order) and the HW it had checkpointed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplicaLog {
    pub broker: i32,
    pub high_watermark: i64,
    pub records: Vec<(i64, String)>,
}

/// What a consumer read through the leader: every record below `high_watermark`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConsumerLog {
    pub high_watermark: i64,
    pub records: Vec<(i64, String)>,
}

/// Everything read back for one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reads {
    pub replicas: Vec<ReplicaLog>,
    pub consumer: Option<ConsumerLog>,
}

/// A violation of (or, where the scenario allows it, a departure from) Kafka's guarantees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Anomaly {
    /// Acknowledged, and not in the committed log at all. `acked_offset` is `None` for an
    /// acks=0 send (fire and forget: it was never acknowledged, only assumed done).
    LostAcknowledged { value: String, acked_offset: Option<i64> },
    /// Acknowledged at one offset, committed at another.
    WrongOffset { value: String, acked_offset: i64, found_at: Vec<i64> },
    /// More than one value claimed for one offset: by two acknowledgements, by an
    /// acknowledgement and the committed log, or within one read.
    OffsetConflict { offset: i64, values: Vec<String> },
    /// A send answered with a definite failure (`appended=false`) whose value was read.
    ReadOfFailedWrite { value: String, error: ErrorCode, found: Vec<(Source, i64)> },
    /// A value at more than one offset of the committed log. `retried`: the producer
    /// retried after an indeterminate attempt, so the duplicate is explained by the client.
    Duplicate { value: String, offsets: Vec<i64>, retried: bool },
    /// Two sources differ below the smaller of their high watermarks.
    ReplicaDivergence {
        left: Source,
        right: Source,
        /// Offsets compared: [0, below).
        below: i64,
        first_offset: i64,
        left_value: Option<String>,
        right_value: Option<String>,
        differing_offsets: usize,
    },
    /// A value no producer sent.
    UnknownValue { source: Source, offset: i64, value: String },
    /// A replica's checkpointed HW lies beyond its log end (the HW never passes the LEO).
    HighWatermarkBeyondLog { broker: i32, high_watermark: i64, log_end_offset: i64 },
}

/// Anomaly kinds, for counting and for deciding what a scenario allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    LostAcknowledged,
    WrongOffset,
    OffsetConflict,
    ReadOfFailedWrite,
    Duplicate,
    ReplicaDivergence,
    UnknownValue,
    HighWatermarkBeyondLog,
}

impl Anomaly {
    pub fn kind(&self) -> AnomalyKind {
        match self {
            Anomaly::LostAcknowledged { .. } => AnomalyKind::LostAcknowledged,
            Anomaly::WrongOffset { .. } => AnomalyKind::WrongOffset,
            Anomaly::OffsetConflict { .. } => AnomalyKind::OffsetConflict,
            Anomaly::ReadOfFailedWrite { .. } => AnomalyKind::ReadOfFailedWrite,
            Anomaly::Duplicate { .. } => AnomalyKind::Duplicate,
            Anomaly::ReplicaDivergence { .. } => AnomalyKind::ReplicaDivergence,
            Anomaly::UnknownValue { .. } => AnomalyKind::UnknownValue,
            Anomaly::HighWatermarkBeyondLog { .. } => AnomalyKind::HighWatermarkBeyondLog,
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "nothing".into());
        match self {
            Anomaly::LostAcknowledged { value, acked_offset: Some(o) } => {
                write!(f, "lost: {value} was acknowledged at offset {o} and is not in the committed log")
            }
            Anomaly::LostAcknowledged { value, acked_offset: None } => {
                write!(f, "lost: {value} was sent with acks=0 and is not in the committed log")
            }
            Anomaly::WrongOffset { value, acked_offset, found_at } => {
                write!(f, "{value} was acknowledged at offset {acked_offset} but is committed at {found_at:?}")
            }
            Anomaly::OffsetConflict { offset, values } => write!(f, "offset {offset} is claimed by {values:?}"),
            Anomaly::ReadOfFailedWrite { value, error, found } => {
                let at: Vec<String> = found.iter().map(|(s, o)| format!("{s}@{o}")).collect();
                write!(f, "{value} failed definitely ({error}, appended=false) yet was read at {}", at.join(", "))
            }
            Anomaly::Duplicate { value, offsets, retried } => write!(
                f,
                "{value} is committed at offsets {offsets:?}{}",
                if *retried { " (the producer retried after a lost answer)" } else { "" }
            ),
            Anomaly::ReplicaDivergence {
                left,
                right,
                below,
                first_offset,
                left_value,
                right_value,
                differing_offsets,
            } => write!(
                f,
                "{left} and {right} differ below HW {below}: {differing_offsets} offset(s), first {first_offset} ({left}: {}, {right}: {})",
                opt(left_value),
                opt(right_value)
            ),
            Anomaly::UnknownValue { source, offset, value } => {
                write!(f, "{source} has {value:?} at offset {offset}, which no producer sent")
            }
            Anomaly::HighWatermarkBeyondLog { broker, high_watermark, log_end_offset } => {
                write!(f, "broker {broker} has HW {high_watermark} beyond its log end {log_end_offset}")
            }
        }
    }
}

/// Counts that describe a run, whatever its verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Sends invoked.
    pub sent: usize,
    /// Acknowledged with an offset (acks=1 / acks=all).
    pub acknowledged: usize,
    /// acks=0 sends, counted done by the producer without an answer.
    pub fire_and_forget: usize,
    /// Definite failures (nothing written).
    pub failed: usize,
    /// Indeterminate outcomes, and how many of those values are committed after all.
    pub indeterminate: usize,
    pub indeterminate_committed: usize,
    /// Final errors by Kafka name ("NO_ANSWER" when no answer came).
    pub errors: BTreeMap<String, usize>,
    /// Acknowledged (or, for acks=0, sent) values missing from the committed log.
    pub lost: usize,
    /// Values committed at more than one offset.
    pub duplicates: usize,
    /// Records in the committed log.
    pub committed: usize,
}

/// The checker's verdict material for one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub stats: Stats,
    pub anomalies: Vec<Anomaly>,
}

impl CheckResult {
    pub fn count(&self, kind: AnomalyKind) -> usize {
        self.anomalies.iter().filter(|a| a.kind() == kind).count()
    }

    /// Merges another partition's result (counts add up, anomalies concatenate).
    pub fn merge(&mut self, other: CheckResult) {
        let s = &mut self.stats;
        let o = other.stats;
        s.sent += o.sent;
        s.acknowledged += o.acknowledged;
        s.fire_and_forget += o.fire_and_forget;
        s.failed += o.failed;
        s.indeterminate += o.indeterminate;
        s.indeterminate_committed += o.indeterminate_committed;
        for (k, v) in o.errors {
            *s.errors.entry(k).or_default() += v;
        }
        s.lost += o.lost;
        s.duplicates += o.duplicates;
        s.committed += o.committed;
        self.anomalies.extend(other.anomalies);
    }
}

/// One source's records as offset → value, plus the offsets where the source itself held
/// two different values (only possible with a broken log).
fn index(records: &[(i64, String)], anomalies: &mut Vec<Anomaly>) -> BTreeMap<i64, String> {
    let mut map: BTreeMap<i64, String> = BTreeMap::new();
    let mut conflicts: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for (offset, value) in records {
        match map.get(offset) {
            Some(existing) if existing != value => {
                let set = conflicts.entry(*offset).or_default();
                set.insert(existing.clone());
                set.insert(value.clone());
            }
            Some(_) => {}
            None => {
                map.insert(*offset, value.clone());
            }
        }
    }
    for (offset, values) in conflicts {
        anomalies.push(Anomaly::OffsetConflict { offset, values: values.into_iter().collect() });
    }
    map
}

/// Checks one partition: `ops` must be the sends to this partition only.
pub fn check(ops: &[Op], reads: &Reads) -> CheckResult {
    let mut anomalies = Vec::new();
    let logs = index_sources(reads, &mut anomalies);
    let reference = reference_log(&logs.committed);
    let mut committed_at: HashMap<&str, Vec<i64>> = HashMap::new();
    for (offset, value) in &reference {
        committed_at.entry(value.as_str()).or_default().push(*offset);
    }

    let mut stats = Stats { sent: ops.len(), committed: reference.len(), ..Stats::default() };
    let by_value: HashMap<&str, &Op> = ops.iter().map(|op| (op.value.as_str(), op)).collect();
    let claims = check_outcomes(ops, &committed_at, &logs.whole, &mut stats, &mut anomalies);
    offset_conflicts(claims, &reference, &mut anomalies);
    duplicates(&committed_at, &by_value, &mut stats, &mut anomalies);

    // Values nobody sent, wherever they lie.
    for (source, log) in &logs.whole {
        for (offset, value) in log {
            if !by_value.contains_key(value.as_str()) {
                anomalies.push(Anomaly::UnknownValue { source: *source, offset: *offset, value: value.clone() });
            }
        }
    }

    // Committed records are identical on every replica (and in the consumer's read).
    for (i, left) in logs.committed.iter().enumerate() {
        for right in logs.committed.iter().skip(i + 1) {
            anomalies.extend(divergence(left, right));
        }
    }
    CheckResult { stats, anomalies }
}

/// One source's committed part: where it was read, its HW, and its records below the HW.
type CommittedLog = (Source, i64, BTreeMap<i64, String>);

/// Every source's log as offset → value, in the order the sources were read: the replicas,
/// then the consumer.
struct SourceLogs {
    /// The committed part of each log (below the source's HW).
    committed: Vec<CommittedLog>,
    /// Each log whole.
    whole: Vec<(Source, BTreeMap<i64, String>)>,
}

/// Indexes every source's records, reporting a source's own offset conflicts and a replica
/// HW beyond its log end on the way.
fn index_sources(reads: &Reads, anomalies: &mut Vec<Anomaly>) -> SourceLogs {
    let mut logs = SourceLogs { committed: Vec::new(), whole: Vec::new() };
    for replica in &reads.replicas {
        let source = Source::Replica(replica.broker);
        let whole = index(&replica.records, anomalies);
        let log_end_offset = whole.keys().next_back().map(|o| o + 1).unwrap_or(0);
        if replica.high_watermark > log_end_offset {
            anomalies.push(Anomaly::HighWatermarkBeyondLog {
                broker: replica.broker,
                high_watermark: replica.high_watermark,
                log_end_offset,
            });
        }
        let below_hw: BTreeMap<i64, String> =
            whole.range(..replica.high_watermark).map(|(o, v)| (*o, v.clone())).collect();
        logs.committed.push((source, replica.high_watermark, below_hw));
        logs.whole.push((source, whole));
    }
    if let Some(consumer) = &reads.consumer {
        let whole = index(&consumer.records, anomalies);
        let below_hw: BTreeMap<i64, String> =
            whole.range(..consumer.high_watermark).map(|(o, v)| (*o, v.clone())).collect();
        logs.committed.push((Source::Consumer, consumer.high_watermark, below_hw));
        logs.whole.push((Source::Consumer, whole));
    }
    logs
}

/// The reference: what a consumer reads; without a consumer read, the replica that has
/// committed the most.
fn reference_log(committed: &[CommittedLog]) -> BTreeMap<i64, String> {
    committed
        .iter()
        .find(|(s, _, _)| *s == Source::Consumer)
        .or_else(|| committed.iter().max_by_key(|(_, hw, _)| *hw))
        .map(|(_, _, m)| m.clone())
        .unwrap_or_default()
}

/// Checks each send's outcome against the committed log (`committed_at`: value → offsets):
/// acknowledged writes are present, and where they were acknowledged; definitely failed ones
/// appear nowhere. Counts outcomes and errors into `stats`, and returns the values each
/// acknowledgement claimed for its offset.
fn check_outcomes(
    ops: &[Op],
    committed_at: &HashMap<&str, Vec<i64>>,
    whole_by_source: &[(Source, BTreeMap<i64, String>)],
    stats: &mut Stats,
    anomalies: &mut Vec<Anomaly>,
) -> BTreeMap<i64, BTreeSet<String>> {
    let mut claims: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for op in ops {
        if let Some(error) = op.outcome.error() {
            *stats.errors.entry(error.name().to_string()).or_default() += 1;
        } else if matches!(op.outcome, Outcome::Indeterminate { error: None }) {
            *stats.errors.entry("NO_ANSWER".to_string()).or_default() += 1;
        }
        let found = committed_at.get(op.value.as_str());
        match &op.outcome {
            Outcome::Ok { offset: Some(offset) } => {
                stats.acknowledged += 1;
                claims.entry(*offset).or_default().insert(op.value.clone());
                match found {
                    None => {
                        stats.lost += 1;
                        anomalies
                            .push(Anomaly::LostAcknowledged { value: op.value.clone(), acked_offset: Some(*offset) });
                    }
                    Some(offsets) if !offsets.contains(offset) => anomalies.push(Anomaly::WrongOffset {
                        value: op.value.clone(),
                        acked_offset: *offset,
                        found_at: offsets.clone(),
                    }),
                    Some(_) => {}
                }
            }
            Outcome::Ok { offset: None } => {
                stats.fire_and_forget += 1;
                if found.is_none() {
                    stats.lost += 1;
                    anomalies.push(Anomaly::LostAcknowledged { value: op.value.clone(), acked_offset: None });
                }
            }
            Outcome::Failed { error } => {
                stats.failed += 1;
                let seen = read_anywhere(whole_by_source, &op.value);
                if !seen.is_empty() {
                    anomalies.push(Anomaly::ReadOfFailedWrite { value: op.value.clone(), error: *error, found: seen });
                }
            }
            Outcome::Indeterminate { .. } => {
                stats.indeterminate += 1;
                if found.is_some() {
                    stats.indeterminate_committed += 1;
                }
            }
        }
    }
    claims
}

/// Every place `value` was read, committed or not.
fn read_anywhere(whole_by_source: &[(Source, BTreeMap<i64, String>)], value: &str) -> Vec<(Source, i64)> {
    whole_by_source
        .iter()
        .flat_map(|(source, log)| log.iter().filter(|(_, v)| *v == value).map(move |(o, _)| (*source, *o)))
        .collect()
}

/// Two values for one offset: acknowledgements (`claims`) against each other and the reference.
fn offset_conflicts(
    claims: BTreeMap<i64, BTreeSet<String>>,
    reference: &BTreeMap<i64, String>,
    anomalies: &mut Vec<Anomaly>,
) {
    for (offset, mut values) in claims {
        if let Some(v) = reference.get(&offset) {
            values.insert(v.clone());
        }
        if values.len() > 1 {
            anomalies.push(Anomaly::OffsetConflict { offset, values: values.into_iter().collect() });
        }
    }
}

/// Duplicates in the committed log, in the order of their first offset.
fn duplicates(
    committed_at: &HashMap<&str, Vec<i64>>,
    by_value: &HashMap<&str, &Op>,
    stats: &mut Stats,
    anomalies: &mut Vec<Anomaly>,
) {
    let mut duplicated: Vec<(&str, &Vec<i64>)> =
        committed_at.iter().filter(|(_, offsets)| offsets.len() > 1).map(|(v, o)| (*v, o)).collect();
    duplicated.sort_by_key(|(_, offsets)| offsets[0]);
    for (value, offsets) in duplicated {
        stats.duplicates += 1;
        let retried = by_value.get(value).is_some_and(|op| op.retried_after_indeterminate);
        anomalies.push(Anomaly::Duplicate { value: value.to_string(), offsets: offsets.clone(), retried });
    }
}

/// Where two sources' committed logs differ below the smaller of their HWs, if they do.
fn divergence(left: &CommittedLog, right: &CommittedLog) -> Option<Anomaly> {
    let ((left, left_hw, left_log), (right, right_hw, right_log)) = (left, right);
    let below = (*left_hw).min(*right_hw);
    let mut first = None;
    let mut differing = 0usize;
    let offsets: BTreeSet<i64> = left_log.range(..below).chain(right_log.range(..below)).map(|(o, _)| *o).collect();
    // Offsets neither side has (a gap in both) are not a divergence between them.
    for offset in offsets {
        let l = left_log.get(&offset);
        let r = right_log.get(&offset);
        if l != r {
            differing += 1;
            if first.is_none() {
                first = Some((offset, l.cloned(), r.cloned()));
            }
        }
    }
    let (first_offset, left_value, right_value) = first?;
    Some(Anomaly::ReplicaDivergence {
        left: *left,
        right: *right,
        below,
        first_offset,
        left_value,
        right_value,
        differing_offsets: differing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op(id: usize, value: &str, outcome: Outcome) -> Op {
        Op {
            id,
            producer: 0,
            partition: 0,
            value: value.to_string(),
            invoke_ms: id as u64,
            complete_ms: Some(id as u64 + 1),
            outcome,
            retried_after_indeterminate: false,
        }
    }

    fn ok(id: usize, value: &str, offset: i64) -> Op {
        op(id, value, Outcome::Ok { offset: Some(offset) })
    }

    fn log(values: &[&str]) -> Vec<(i64, String)> {
        values.iter().enumerate().map(|(i, v)| (i as i64, v.to_string())).collect()
    }

    /// Three identical replicas with HW = len and a consumer read of the same.
    fn reads_of(values: &[&str]) -> Reads {
        let records = log(values);
        let hw = values.len() as i64;
        Reads {
            replicas: (1..=3).map(|b| ReplicaLog { broker: b, high_watermark: hw, records: records.clone() }).collect(),
            consumer: Some(ConsumerLog { high_watermark: hw, records }),
        }
    }

    fn kinds(result: &CheckResult) -> Vec<AnomalyKind> {
        result.anomalies.iter().map(Anomaly::kind).collect()
    }

    #[test]
    fn a_clean_history_has_no_anomaly() {
        let ops =
            vec![ok(0, "a", 0), ok(1, "b", 1), op(2, "c", Outcome::Failed { error: ErrorCode::NOT_ENOUGH_REPLICAS })];
        let result = check(&ops, &reads_of(&["a", "b"]));
        assert!(result.anomalies.is_empty(), "{:?}", result.anomalies);
        assert_eq!(result.stats.acknowledged, 2);
        assert_eq!(result.stats.failed, 1);
        assert_eq!(result.stats.errors.get("NOT_ENOUGH_REPLICAS"), Some(&1));
    }

    #[test]
    fn lost_acknowledged_write() {
        let ops = vec![ok(0, "a", 0), ok(1, "b", 1)];
        let result = check(&ops, &reads_of(&["a"]));
        assert_eq!(kinds(&result), vec![AnomalyKind::LostAcknowledged]);
        assert_eq!(result.stats.lost, 1);
        assert_eq!(result.anomalies[0], Anomaly::LostAcknowledged { value: "b".into(), acked_offset: Some(1) });
    }

    #[test]
    fn lost_fire_and_forget_write_has_no_offset() {
        let ops = vec![op(0, "a", Outcome::Ok { offset: None }), op(1, "b", Outcome::Ok { offset: None })];
        let result = check(&ops, &reads_of(&["b"]));
        assert_eq!(result.anomalies, vec![Anomaly::LostAcknowledged { value: "a".into(), acked_offset: None }]);
        assert_eq!(result.stats.fire_and_forget, 2);
    }

    #[test]
    fn value_at_a_different_offset_than_acknowledged() {
        // "b" acknowledged at 1, committed at 2; offset 1 holds an indeterminate "x".
        let ops = vec![ok(0, "a", 0), ok(1, "b", 1), op(2, "x", Outcome::Indeterminate { error: None })];
        let result = check(&ops, &reads_of(&["a", "x", "b"]));
        assert!(result.anomalies.contains(&Anomaly::WrongOffset {
            value: "b".into(),
            acked_offset: 1,
            found_at: vec![2]
        }));
        assert!(result
            .anomalies
            .contains(&Anomaly::OffsetConflict { offset: 1, values: vec!["b".into(), "x".into()] }));
        assert_eq!(result.stats.lost, 0);
    }

    #[test]
    fn two_values_acknowledged_at_one_offset() {
        // acks=1 and a leader failover: both "a" and "b" were acknowledged at offset 0.
        let ops = vec![ok(0, "a", 0), ok(1, "b", 0)];
        let result = check(&ops, &reads_of(&["b"]));
        assert!(result
            .anomalies
            .contains(&Anomaly::OffsetConflict { offset: 0, values: vec!["a".into(), "b".into()] }));
        assert!(result.anomalies.contains(&Anomaly::LostAcknowledged { value: "a".into(), acked_offset: Some(0) }));
    }

    #[test]
    fn two_values_at_one_offset_within_one_read() {
        let ops = vec![ok(0, "a", 0), op(1, "b", Outcome::Indeterminate { error: None })];
        let mut reads = reads_of(&["a"]);
        reads.consumer.as_mut().unwrap().records.push((0, "b".into()));
        let result = check(&ops, &reads);
        assert!(result
            .anomalies
            .contains(&Anomaly::OffsetConflict { offset: 0, values: vec!["a".into(), "b".into()] }));
    }

    #[test]
    fn read_of_a_definitely_failed_write_even_above_the_hw() {
        let ops = vec![ok(0, "a", 0), op(1, "f", Outcome::Failed { error: ErrorCode::NOT_ENOUGH_REPLICAS })];
        let mut reads = reads_of(&["a"]);
        // Broker 2 holds "f" above its HW: still impossible for a write that was never appended.
        reads.replicas[1].records.push((1, "f".into()));
        let result = check(&ops, &reads);
        assert_eq!(
            result.anomalies,
            vec![Anomaly::ReadOfFailedWrite {
                value: "f".into(),
                error: ErrorCode::NOT_ENOUGH_REPLICAS,
                found: vec![(Source::Replica(2), 1)]
            }]
        );
    }

    #[test]
    fn indeterminate_writes_may_or_may_not_survive() {
        let ops = vec![
            ok(0, "a", 0),
            op(1, "i1", Outcome::Indeterminate { error: Some(ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND) }),
            op(2, "i2", Outcome::Indeterminate { error: Some(ErrorCode::REQUEST_TIMED_OUT) }),
        ];
        let result = check(&ops, &reads_of(&["a", "i1"]));
        assert!(result.anomalies.is_empty(), "{:?}", result.anomalies);
        assert_eq!(result.stats.indeterminate, 2);
        assert_eq!(result.stats.indeterminate_committed, 1);
    }

    #[test]
    fn duplicate_without_a_retry_is_flagged_as_such() {
        let ops = vec![ok(0, "a", 0), ok(1, "b", 1)];
        let result = check(&ops, &reads_of(&["a", "b", "a"]));
        assert_eq!(
            result.anomalies,
            vec![Anomaly::Duplicate { value: "a".into(), offsets: vec![0, 2], retried: false }]
        );
        assert_eq!(result.stats.duplicates, 1);
    }

    #[test]
    fn duplicate_after_a_retried_lost_answer_is_marked_retried() {
        let mut a = ok(0, "a", 2);
        a.retried_after_indeterminate = true;
        let ops = vec![a, ok(1, "b", 1)];
        let result = check(&ops, &reads_of(&["a", "b", "a"]));
        assert_eq!(
            result.anomalies,
            vec![Anomaly::Duplicate { value: "a".into(), offsets: vec![0, 2], retried: true }]
        );
    }

    #[test]
    fn replica_divergence_below_the_high_watermark() {
        let ops = vec![ok(0, "a", 0), ok(1, "b", 1), op(2, "x", Outcome::Indeterminate { error: None })];
        let mut reads = reads_of(&["a", "b"]);
        reads.replicas[2].records = log(&["a", "x"]);
        let result = check(&ops, &reads);
        let divergences: Vec<&Anomaly> =
            result.anomalies.iter().filter(|a| a.kind() == AnomalyKind::ReplicaDivergence).collect();
        // Broker 3 differs from brokers 1, 2 and the consumer.
        assert_eq!(divergences.len(), 3);
        assert!(divergences.contains(&&Anomaly::ReplicaDivergence {
            left: Source::Replica(1),
            right: Source::Replica(3),
            below: 2,
            first_offset: 1,
            left_value: Some("b".into()),
            right_value: Some("x".into()),
            differing_offsets: 1,
        }));
    }

    #[test]
    fn replicas_may_differ_above_the_smaller_high_watermark() {
        let ops = vec![
            ok(0, "a", 0),
            op(1, "x", Outcome::Indeterminate { error: None }),
            op(2, "y", Outcome::Indeterminate { error: None }),
        ];
        let mut reads = reads_of(&["a"]);
        // An old leader's unreplicated suffix above its HW, not yet truncated.
        reads.replicas[0].records.push((1, "x".into()));
        reads.replicas[1].records.push((1, "y".into()));
        let result = check(&ops, &reads);
        assert!(result.anomalies.is_empty(), "{:?}", result.anomalies);
    }

    #[test]
    fn a_missing_record_below_the_hw_is_a_divergence() {
        let ops = vec![ok(0, "a", 0), ok(1, "b", 1)];
        let mut reads = reads_of(&["a", "b"]);
        reads.replicas[1] = ReplicaLog { broker: 2, high_watermark: 2, records: log(&["a"]) };
        let result = check(&ops, &reads);
        assert!(result.anomalies.contains(&Anomaly::HighWatermarkBeyondLog {
            broker: 2,
            high_watermark: 2,
            log_end_offset: 1
        }));
        assert!(result.anomalies.iter().any(|a| matches!(
            a,
            Anomaly::ReplicaDivergence { right: Source::Replica(2), first_offset: 1, right_value: None, .. }
        )));
    }

    #[test]
    fn a_value_nobody_sent() {
        let ops = vec![ok(0, "a", 0)];
        let result = check(&ops, &reads_of(&["a", "zz"]));
        // The consumer and all three replicas hold it.
        assert_eq!(result.count(AnomalyKind::UnknownValue), 4);
        assert!(result.anomalies.contains(&Anomaly::UnknownValue {
            source: Source::Consumer,
            offset: 1,
            value: "zz".into()
        }));
    }

    #[test]
    fn without_a_consumer_read_the_replica_with_the_highest_hw_is_the_reference() {
        let ops = vec![ok(0, "a", 0), ok(1, "b", 1)];
        let records = log(&["a", "b"]);
        let reads = Reads {
            replicas: vec![
                ReplicaLog { broker: 1, high_watermark: 1, records: records.clone() },
                ReplicaLog { broker: 2, high_watermark: 2, records },
            ],
            consumer: None,
        };
        let result = check(&ops, &reads);
        assert!(result.anomalies.is_empty(), "{:?}", result.anomalies);
        assert_eq!(result.stats.committed, 2);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = check(&[ok(0, "a", 0)], &reads_of(&[]));
        let b = check(&[ok(0, "b", 0)], &reads_of(&["b"]));
        a.merge(b);
        assert_eq!(a.stats.sent, 2);
        assert_eq!(a.stats.lost, 1);
        assert_eq!(a.anomalies.len(), 1);
    }

    /// What one generated send does: acknowledged at its offset, acks=0, indeterminate
    /// but written, indeterminate and not written, or a definite failure.
    #[derive(Debug, Clone, Copy)]
    enum Gen {
        Acked,
        FireAndForget,
        IndeterminateWritten,
        IndeterminateNotWritten,
        Failed,
    }

    fn gen() -> impl Strategy<Value = Gen> {
        prop_oneof![
            4 => Just(Gen::Acked),
            1 => Just(Gen::FireAndForget),
            1 => Just(Gen::IndeterminateWritten),
            1 => Just(Gen::IndeterminateNotWritten),
            1 => Just(Gen::Failed),
        ]
    }

    proptest! {
        /// A history that is consistent by construction — every acknowledged value at its
        /// offset, failed values nowhere, replicas identical below their (random) HWs, with
        /// random unreplicated suffixes above — yields no anomaly.
        #[test]
        fn a_consistent_history_yields_no_anomaly(
            sends in proptest::collection::vec(gen(), 0..200),
            hw_fractions in proptest::collection::vec(0.0f64..=1.0, 3),
            suffix_lengths in proptest::collection::vec(0usize..5, 3),
        ) {
            let mut ops = Vec::new();
            let mut committed: Vec<String> = Vec::new();
            for (id, g) in sends.iter().enumerate() {
                let value = format!("v{id}");
                let next = committed.len() as i64;
                let outcome = match g {
                    Gen::Acked => { committed.push(value.clone()); Outcome::Ok { offset: Some(next) } }
                    Gen::FireAndForget => { committed.push(value.clone()); Outcome::Ok { offset: None } }
                    Gen::IndeterminateWritten => {
                        committed.push(value.clone());
                        Outcome::Indeterminate { error: Some(ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND) }
                    }
                    Gen::IndeterminateNotWritten => Outcome::Indeterminate { error: None },
                    Gen::Failed => Outcome::Failed { error: ErrorCode::NOT_ENOUGH_REPLICAS },
                };
                ops.push(op(id, &value, outcome));
            }
            // Unreplicated suffixes use values of sends that were indeterminate and not written.
            let spare: Vec<String> = ops
                .iter()
                .filter(|o| matches!(o.outcome, Outcome::Indeterminate { error: None }))
                .map(|o| o.value.clone())
                .collect();
            let len = committed.len() as i64;
            let full: Vec<(i64, String)> = committed.iter().cloned().enumerate().map(|(i, v)| (i as i64, v)).collect();
            let replicas = (0..3)
                .map(|i| {
                    let mut records = full.clone();
                    for (k, v) in spare.iter().take(suffix_lengths[i]).enumerate() {
                        records.push((len + k as i64, v.clone()));
                    }
                    ReplicaLog {
                        broker: i as i32 + 1,
                        high_watermark: (hw_fractions[i] * len as f64).floor() as i64,
                        records,
                    }
                })
                .collect();
            let reads = Reads { replicas, consumer: Some(ConsumerLog { high_watermark: len, records: full }) };
            let result = check(&ops, &reads);
            prop_assert!(result.anomalies.is_empty(), "{:?}", result.anomalies);
            prop_assert_eq!(result.stats.lost, 0);
            prop_assert_eq!(result.stats.sent, ops.len());
            prop_assert_eq!(result.stats.committed, committed.len());
        }
    }
}
