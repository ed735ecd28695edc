//! What a simulated process may do in one step, collected rather than performed: messages
//! to send, timers to set, acknowledgements and appends the checker must hear of, and
//! answers no correct run can give. The driver (`mod.rs`) routes them after the step, so a
//! process never touches the network, the clock or another process directly.
use std::collections::BTreeMap;
use std::fmt;

use insync_types::{BrokerId, LeaderEpoch, Offset};

use super::network::{Address, Endpoint, Message};

/// Where a message goes: an exact incarnation (an answer goes back to the process that
/// asked), or whichever incarnation of the endpoint runs now (a new request or push).
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Exact(Address),
    Current(Endpoint),
}

/// A broker process's timers; stale ones (of a previous incarnation) are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeTimer {
    RegisterRetry,
    Heartbeat,
    /// Kafka's "isr-expiration" task, every replica.lag.time.max.ms / 2.
    IsrTick,
    /// The replication-offset-checkpoint writer.
    Checkpoint,
    /// The fetcher for `leader` sends its next Fetch (`token` names the latest schedule).
    Fetch {
        leader: BrokerId,
        token: u64,
    },
    FetchTimeout {
        leader: BrokerId,
        fetch_id: u64,
    },
    AlterTimeout {
        attempt: u64,
    },
    AlterResend {
        attempt: u64,
    },
    /// An acks=all request's timeout_ms passed.
    ProduceTimeout {
        waiter: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerTimer {
    /// `fence_expired_sessions`: fence brokers whose heartbeats stopped.
    Liveness,
    /// Re-send the latest metadata to everyone (a watch stream eventually delivers it).
    Republish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTimer {
    Produce,
    RequestTimeout { partition: i32, sequence: i32, attempt: u64 },
    Retry { partition: i32, sequence: i32 },
}

/// The schedule's own timers (faults and the end of the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTimer {
    Inject,
    Restart(BrokerId),
    Rejoin(Endpoint),
    HealLink(Endpoint, Endpoint),
    HealAll,
    QuietCheck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    Node { broker: BrokerId, incarnation: u64, timer: NodeTimer },
    Controller(ControllerTimer),
    Client(ClientTimer),
    Fault(FaultTimer),
}

/// A leader answered an acks=all produce with NONE: the write is committed (Kafka's promise
/// to the producer), so the checker holds every later state to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub broker: BrokerId,
    pub partition: i32,
    pub sequence: i32,
    pub value: u64,
    pub base_offset: Offset,
    pub leader_epoch: LeaderEpoch,
}

/// A leader took a produce: appended it, or found it already in its log (a retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Append {
    pub broker: BrokerId,
    pub partition: i32,
    pub sequence: i32,
    pub duplicate: bool,
}

/// Event counters, to show which corners the schedules reached (printed per run; the CI
/// test requires the ones the issue asks for).
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    pub counts: BTreeMap<String, u64>,
}

impl Coverage {
    pub fn bump(&mut self, key: &str) {
        self.add(key, 1);
    }

    pub fn add(&mut self, key: &str, n: u64) {
        if let Some(count) = self.counts.get_mut(key) {
            *count += n;
        } else {
            self.counts.insert(key.to_string(), n);
        }
    }

    pub fn get(&self, key: &str) -> u64 {
        self.counts.get(key).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, other: &Coverage) {
        for (key, n) in &other.counts {
            self.add(key, *n);
        }
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        write!(f, "{{{}}}", parts.join(", "))
    }
}

/// The step's collected effects, and the clock and id source the processes read.
#[derive(Debug, Default)]
pub struct Io {
    pub now: u64,
    next_id: u64,
    pub sends: Vec<(Address, Target, Message)>,
    pub timers: Vec<(u64, Timer)>,
    pub acks: Vec<Ack>,
    pub appends: Vec<Append>,
    /// Answers no correct run gives (e.g. an unexpected produce error): the schedule fails.
    pub anomalies: Vec<String>,
    /// Lines for the failure trace (only collected on a traced re-run).
    pub notes: Option<Vec<String>>,
    pub coverage: Coverage,
}

impl Io {
    /// A number never used before in this schedule (fetch ids, attempts, timer tokens), so a
    /// restarted process never mistakes an answer meant for its previous life.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn send(&mut self, from: Address, to: Target, message: Message) {
        self.sends.push((from, to, message));
    }

    pub fn after(&mut self, delay_ms: u64, timer: Timer) {
        self.timers.push((self.now + delay_ms, timer));
    }

    pub fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(notes) = &mut self.notes {
            notes.push(line());
        }
    }

    pub fn anomaly(&mut self, message: String) {
        self.anomalies.push(message);
    }
}
