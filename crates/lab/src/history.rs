//! The history of a lab run, Jepsen-style: each send is an *invoke* followed by at most one
//! *completion* (ok with the acknowledged offset, a definite failure, or an indeterminate
//! one). Producer tasks record into a [`Recorder`]; the pure checker (`checker.rs`) reads the
//! folded [`Op`]s. No I/O here.
use std::sync::Mutex;
use std::time::Instant;

use insync_types::ErrorCode;
use serde::Serialize;

/// Identifies one send within a history.
pub type OpId = usize;

/// How a send ended, as the producer saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged. `offset` is where the leader put it (acks=1/all); `None` for acks=0,
    /// where the producer counts a send as done without any answer (fire and forget).
    Ok { offset: Option<i64> },
    /// Definitely not written: every attempt was answered with `appended=false`, so the
    /// value must never be read (Jepsen's `:fail`).
    Failed { error: ErrorCode },
    /// May or may not be in the log: an answer was lost, or the broker said the records
    /// were appended but not acknowledged (NOT_ENOUGH_REPLICAS_AFTER_APPEND, REQUEST_TIMED_OUT,
    /// NOT_LEADER_OR_FOLLOWER after append). `error` is `None` when no answer came at all
    /// (Jepsen's `:info`).
    Indeterminate { error: Option<ErrorCode> },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }

    /// The Kafka error the producer ended with, if any.
    pub fn error(&self) -> Option<ErrorCode> {
        match self {
            Outcome::Ok { .. } => None,
            Outcome::Failed { error } => Some(*error),
            Outcome::Indeterminate { error } => *error,
        }
    }
}

/// One send, folded from its invoke and completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Op {
    pub id: OpId,
    /// Which producer task sent it.
    pub producer: usize,
    pub partition: i32,
    /// Unique within the history: how a read is matched back to its send.
    pub value: String,
    /// Milliseconds since the history started.
    pub invoke_ms: u64,
    pub complete_ms: Option<u64>,
    pub outcome: Outcome,
    /// An earlier attempt of this send may have been written (its answer was lost, or said
    /// `appended=true`) and the send was retried by a non-idempotent (acks=0/1) producer: the
    /// value may then legitimately appear twice, so a duplicate of it is not a broker bug.
    /// Never set for the idempotent acks=all producer (KIP-98), whose retries cannot duplicate.
    pub retried_after_indeterminate: bool,
}

/// A completion recorded for an op.
#[derive(Debug, Clone)]
struct Completion {
    at_ms: u64,
    outcome: Outcome,
    retried_after_indeterminate: bool,
}

#[derive(Debug, Clone)]
struct Invocation {
    producer: usize,
    partition: i32,
    value: String,
    at_ms: u64,
}

/// Thread-safe history recorder shared by the producer tasks.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    inner: Mutex<Vec<(Invocation, Option<Completion>)>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder { started: Instant::now(), inner: Mutex::new(Vec::new()) }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Records that `producer` is about to send `value` to `partition`.
    pub fn invoke(&self, producer: usize, partition: i32, value: String) -> OpId {
        let at_ms = self.now_ms();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.push((Invocation { producer, partition, value, at_ms }, None));
        inner.len() - 1
    }

    /// Records how op `id` ended. A second completion of the same op is ignored (the first
    /// answer is what the producer acted on).
    pub fn complete(&self, id: OpId, outcome: Outcome, retried_after_indeterminate: bool) {
        let at_ms = self.now_ms();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, slot @ None)) = inner.get_mut(id) {
            *slot = Some(Completion { at_ms, outcome, retried_after_indeterminate });
        }
    }

    /// Number of invocations so far (for progress reporting).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The folded history. An op never completed (its producer was stopped while it waited)
    /// is indeterminate with no answer.
    pub fn ops(&self) -> Vec<Op> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .iter()
            .enumerate()
            .map(|(id, (inv, done))| Op {
                id,
                producer: inv.producer,
                partition: inv.partition,
                value: inv.value.clone(),
                invoke_ms: inv.at_ms,
                complete_ms: done.as_ref().map(|d| d.at_ms),
                outcome: done.as_ref().map(|d| d.outcome.clone()).unwrap_or(Outcome::Indeterminate { error: None }),
                retried_after_indeterminate: done.as_ref().is_some_and(|d| d.retried_after_indeterminate),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_without_completion_is_indeterminate() {
        let r = Recorder::new();
        let a = r.invoke(0, 0, "a".into());
        let b = r.invoke(1, 0, "b".into());
        r.complete(a, Outcome::Ok { offset: Some(0) }, false);
        let ops = r.ops();
        assert_eq!(ops[a].outcome, Outcome::Ok { offset: Some(0) });
        assert_eq!(ops[b].outcome, Outcome::Indeterminate { error: None });
        assert_eq!(ops[b].complete_ms, None);
    }

    #[test]
    fn the_first_completion_wins() {
        let r = Recorder::new();
        let a = r.invoke(0, 0, "a".into());
        r.complete(a, Outcome::Failed { error: ErrorCode::NOT_ENOUGH_REPLICAS }, false);
        r.complete(a, Outcome::Ok { offset: Some(3) }, false);
        assert_eq!(r.ops()[a].outcome, Outcome::Failed { error: ErrorCode::NOT_ENOUGH_REPLICAS });
    }
}
