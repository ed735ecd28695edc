//! Broker liveness as the active controller sees it (Kafka `BrokerHeartbeatManager`): the
//! instant of each broker's last heartbeat, kept in memory only — heartbeats are not
//! replicated, only the fencing they lead to is. Pure: time is passed in; the periodic task
//! that proposes `FenceBroker` lives in `node.rs`.
//!
//! Beyond Kafka: each registered broker also holds a session stream open on the active
//! controller (`BrokerSession`). A SIGKILLed broker's kernel closes that connection at once,
//! so a broker whose stream closed, with no heartbeat since and no new stream after
//! `close_grace`, is fenced without waiting out the session timeout. A live broker whose
//! connection was merely reset reconnects within the grace; if it does not, it is fenced once
//! and then, for `EARLY_FENCE_HOLD_OFF`, only the session timeout can fence that incarnation
//! again (the flap guard: a flapping connection costs at most one early fencing per hold-off
//! and active controller; the guard lives in the active controller's memory). A broker
//! that is alive but unreachable (SIGSTOP, a network cut) keeps its connection open, so only
//! the session timeout fences it, as in Kafka.
use crate::metadata::ClusterState;
use insync_types::BrokerId;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// After an early fencing, how long that broker's closed connections are ignored.
pub const EARLY_FENCE_HOLD_OFF: Duration = Duration::from_secs(60);

/// Why a broker is due to be fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleCause {
    /// No heartbeat for longer than the session timeout (Kafka's only cause).
    SessionExpired,
    /// Its session stream closed this many ms ago, with no heartbeat or new stream since.
    ConnectionClosed { closed_ms: u64 },
}

/// A broker whose session expired or whose connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleBroker {
    pub broker_id: BrokerId,
    pub incarnation: u64,
    pub silent_ms: u64,
    pub cause: StaleCause,
}

/// The session streams of one broker incarnation.
#[derive(Debug, Clone, Copy)]
struct Connection {
    incarnation: u64,
    /// Streams open now (a reconnect may open the new one before the old one is dropped).
    open: u32,
    /// When the last open stream closed, if none is open.
    closed_at: Option<Instant>,
}

#[derive(Debug)]
pub struct BrokerHeartbeatManager {
    /// `broker.session.timeout.ms` (Kafka 9000; insync 3000 for a laptop).
    session_timeout_ms: u64,
    /// How long a closed session stream may stay closed before an early fencing; None: never.
    close_grace: Option<Duration>,
    /// Last heartbeat (or grace start) per broker id.
    last_contact: BTreeMap<BrokerId, Instant>,
    connections: BTreeMap<BrokerId, Connection>,
    /// When each broker was last fenced early, and which incarnation (the flap guard; a
    /// restarted broker is a new incarnation and starts without it).
    early_fenced_at: BTreeMap<BrokerId, (u64, Instant)>,
}

impl BrokerHeartbeatManager {
    pub fn new(session_timeout_ms: u64) -> Self {
        Self {
            session_timeout_ms,
            close_grace: None,
            last_contact: BTreeMap::new(),
            connections: BTreeMap::new(),
            early_fenced_at: BTreeMap::new(),
        }
    }

    /// Fences brokers whose session stream stayed closed for `grace` (None: only the session
    /// timeout fences).
    pub fn with_close_grace(mut self, grace: Option<Duration>) -> Self {
        self.close_grace = grace;
        self
    }

    pub fn session_timeout_ms(&self) -> u64 {
        self.session_timeout_ms
    }

    pub fn close_grace(&self) -> Option<Duration> {
        self.close_grace
    }

    /// A heartbeat (or registration) arrived (Kafka `BrokerHeartbeatManager.touch`).
    pub fn touch(&mut self, broker_id: BrokerId, now: Instant) {
        self.last_contact.insert(broker_id, now);
    }

    /// A session stream of this broker incarnation opened.
    pub fn stream_opened(&mut self, broker_id: BrokerId, incarnation: u64) {
        let connection =
            self.connections.entry(broker_id).or_insert(Connection { incarnation, open: 0, closed_at: None });
        if connection.incarnation != incarnation {
            *connection = Connection { incarnation, open: 0, closed_at: None };
        }
        connection.open = connection.open.saturating_add(1);
        connection.closed_at = None;
    }

    /// A session stream of this broker incarnation closed (the broker went away, the
    /// connection broke, or this controller stopped being active).
    pub fn stream_closed(&mut self, broker_id: BrokerId, incarnation: u64, now: Instant) {
        if let Some(connection) = self.connections.get_mut(&broker_id) {
            if connection.incarnation == incarnation && connection.open > 0 {
                connection.open -= 1;
                if connection.open == 0 {
                    connection.closed_at = Some(now);
                }
            }
        }
    }

    /// A controller that just became active knows nothing of past heartbeats: every broker
    /// gets a full session from now, as Kafka's new active controller starts all sessions
    /// afresh (`BrokerHeartbeatManager` is rebuilt on activation). Closed streams are
    /// forgotten too: they were closed to the previous term.
    pub fn reset_all(&mut self, broker_ids: impl IntoIterator<Item = BrokerId>, now: Instant) {
        self.last_contact = broker_ids.into_iter().map(|id| (id, now)).collect();
        self.connections.retain(|_, c| c.open > 0);
    }

    /// Unfenced brokers silent for longer than the session timeout (Kafka
    /// `findOneStaleBroker`, all at once here; they are fenced one proposal at a time), and
    /// those whose stream closed past the grace (see the module doc). Brokers never seen get
    /// a grace period starting now; departed ones are forgotten.
    pub fn stale_brokers(&mut self, state: &ClusterState, now: Instant) -> Vec<StaleBroker> {
        self.last_contact.retain(|id, _| state.brokers.contains_key(id));
        self.connections.retain(|id, _| state.brokers.contains_key(id));
        self.early_fenced_at.retain(|_, (_, at)| now.saturating_duration_since(*at) < EARLY_FENCE_HOLD_OFF);
        let timeout = Duration::from_millis(self.session_timeout_ms);
        let mut stale = Vec::new();
        for broker in state.brokers.values().filter(|b| !b.fenced) {
            let last = *self.last_contact.entry(broker.id).or_insert(now);
            let silent = now.saturating_duration_since(last);
            let cause = if silent > timeout {
                StaleCause::SessionExpired
            } else if let Some(closed_ms) = self.closed_past_grace(broker.id, broker.incarnation, last, now) {
                StaleCause::ConnectionClosed { closed_ms }
            } else {
                continue;
            };
            stale.push(StaleBroker {
                broker_id: broker.id,
                incarnation: broker.incarnation,
                silent_ms: silent.as_millis() as u64,
                cause,
            });
        }
        stale
    }

    /// Milliseconds since this incarnation's stream closed, when that is past the grace with
    /// no heartbeat since and no early fencing within the hold-off.
    fn closed_past_grace(&self, broker_id: BrokerId, incarnation: u64, last: Instant, now: Instant) -> Option<u64> {
        let grace = self.close_grace?;
        let connection = self.connections.get(&broker_id)?;
        let closed_at = connection.closed_at?;
        let closed_for = now.saturating_duration_since(closed_at);
        let due = connection.incarnation == incarnation
            && connection.open == 0
            && last <= closed_at
            && closed_for >= grace
            && self.early_fenced_at.get(&broker_id).is_none_or(|(fenced, _)| *fenced != incarnation);
        due.then_some(closed_for.as_millis() as u64)
    }

    /// An early fencing of this incarnation was committed: arms the flap guard.
    pub fn fenced_early(&mut self, broker_id: BrokerId, incarnation: u64, now: Instant) {
        self.early_fenced_at.insert(broker_id, (incarnation, now));
    }

    /// Milliseconds since the broker's last heartbeat (or grace start), None if never seen.
    /// Read-only: for the metadata view that operators watch during a failover.
    pub fn last_contact_ms_ago(&self, broker_id: BrokerId, now: Instant) -> Option<u64> {
        self.last_contact.get(&broker_id).map(|last| now.saturating_duration_since(*last).as_millis() as u64)
    }

    /// "no heartbeat for 3012 ms (session timeout 3000 ms)": the reason carried by FenceBroker.
    pub fn fence_reason(&self, stale: &StaleBroker) -> String {
        match stale.cause {
            StaleCause::SessionExpired => {
                format!("no heartbeat for {} ms (session timeout {} ms)", stale.silent_ms, self.session_timeout_ms)
            }
            StaleCause::ConnectionClosed { closed_ms } => format!(
                "its session connection closed {closed_ms} ms ago and was not reopened, no heartbeat for {} ms \
                 (process gone or connection reset; grace {} ms)",
                stale.silent_ms,
                self.close_grace.map_or(0, |g| g.as_millis())
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::BrokerRegistration;

    fn state(fenced: &[(BrokerId, bool)]) -> ClusterState {
        let mut state = ClusterState::default();
        for &(id, is_fenced) in fenced {
            state.brokers.insert(
                id,
                BrokerRegistration {
                    id,
                    address: String::new(),
                    kafka_address: String::new(),
                    incarnation: 3,
                    fenced: is_fenced,
                    in_controlled_shutdown: false,
                    broker_epoch: 1,
                    offline_replicas: Default::default(),
                },
            );
        }
        state
    }

    #[test]
    fn only_unfenced_brokers_silent_past_the_session_timeout_are_stale() {
        // Kafka BrokerHeartbeatManager: a session lasts broker.session.timeout.ms after the
        // last contact; fenced brokers have no session to expire.
        let start = Instant::now();
        let state = state(&[(1, false), (2, false), (3, true)]);
        let mut manager = BrokerHeartbeatManager::new(3000);
        manager.touch(1, start);
        manager.touch(2, start);
        assert!(manager.stale_brokers(&state, start + Duration::from_millis(3000)).is_empty());

        manager.touch(2, start + Duration::from_millis(2000));
        let stale = manager.stale_brokers(&state, start + Duration::from_millis(3012));
        assert_eq!(
            stale,
            vec![StaleBroker { broker_id: 1, incarnation: 3, silent_ms: 3012, cause: StaleCause::SessionExpired }]
        );
        assert_eq!(manager.fence_reason(&stale[0]), "no heartbeat for 3012 ms (session timeout 3000 ms)");
        assert_eq!(manager.last_contact_ms_ago(1, start + Duration::from_millis(3012)), Some(3012));
        assert_eq!(manager.last_contact_ms_ago(2, start + Duration::from_millis(3012)), Some(1012));
        assert_eq!(manager.last_contact_ms_ago(9, start), None);
    }

    #[test]
    fn a_new_active_controller_grants_a_fresh_session() {
        let start = Instant::now();
        let state = state(&[(1, false)]);
        let mut manager = BrokerHeartbeatManager::new(3000);
        manager.touch(1, start);
        let activation = start + Duration::from_millis(10_000);
        manager.reset_all(state.brokers.keys().copied(), activation);
        assert!(manager.stale_brokers(&state, activation + Duration::from_millis(2999)).is_empty());
        // Never-seen brokers also get a grace period from the first check.
        let mut fresh = BrokerHeartbeatManager::new(3000);
        assert!(fresh.stale_brokers(&state, start).is_empty());
        assert_eq!(fresh.stale_brokers(&state, start + Duration::from_millis(3001)).len(), 1);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_closed_stream_with_no_heartbeat_since_is_stale_after_the_grace() {
        let start = Instant::now();
        let state = state(&[(1, false), (2, false)]);
        let mut manager = BrokerHeartbeatManager::new(3000).with_close_grace(Some(ms(250)));
        manager.touch(1, start);
        manager.touch(2, start);
        manager.stream_opened(1, 3);
        manager.stream_opened(2, 3);
        manager.stream_closed(1, 3, start + ms(100));
        assert!(manager.stale_brokers(&state, start + ms(349)).is_empty(), "within the grace");
        let stale = manager.stale_brokers(&state, start + ms(350));
        let cause = StaleCause::ConnectionClosed { closed_ms: 250 };
        assert_eq!(stale, vec![StaleBroker { broker_id: 1, incarnation: 3, silent_ms: 350, cause }]);
        assert_eq!(
            manager.fence_reason(&stale[0]),
            "its session connection closed 250 ms ago and was not reopened, no heartbeat for 350 ms \
             (process gone or connection reset; grace 250 ms)"
        );
    }

    #[test]
    fn a_reopened_stream_or_a_heartbeat_after_the_close_keeps_the_broker() {
        let start = Instant::now();
        let state = state(&[(1, false), (2, false)]);
        let mut manager = BrokerHeartbeatManager::new(3000).with_close_grace(Some(ms(250)));
        for id in [1, 2] {
            manager.touch(id, start);
            manager.stream_opened(id, 3);
            manager.stream_closed(id, 3, start + ms(10));
        }
        manager.stream_opened(1, 3); // reconnected
        manager.touch(2, start + ms(20)); // heartbeat got through on a new connection
        assert!(manager.stale_brokers(&state, start + ms(1000)).is_empty());
        // Two streams open at once (the new one before the old one's close): one close keeps it.
        manager.stream_opened(1, 3);
        manager.stream_closed(1, 3, start + ms(1000));
        assert!(manager.stale_brokers(&state, start + ms(2000)).is_empty());
    }

    #[test]
    fn an_early_fencing_holds_off_the_next_one_but_not_the_session_timeout() {
        let start = Instant::now();
        let mut state = state(&[(1, false)]);
        let mut manager = BrokerHeartbeatManager::new(3000).with_close_grace(Some(ms(250)));
        manager.touch(1, start);
        manager.stream_opened(1, 3);
        manager.stream_closed(1, 3, start);
        assert_eq!(manager.stale_brokers(&state, start + ms(300)).len(), 1);
        manager.fenced_early(1, 3, start + ms(300));
        // Fenced, unfenced by its next heartbeat, reconnected: then the connection flaps again.
        let back = start + ms(1000);
        manager.touch(1, back);
        manager.stream_opened(1, 3);
        manager.stream_closed(1, 3, back + ms(10));
        assert!(manager.stale_brokers(&state, back + ms(2000)).is_empty(), "held off");
        let stale = manager.stale_brokers(&state, back + ms(3001));
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].cause, StaleCause::SessionExpired, "the session timeout still fences");
        // After the hold-off, a close fences early again.
        let later = back + EARLY_FENCE_HOLD_OFF + ms(1);
        manager.touch(1, later);
        manager.stream_opened(1, 3);
        manager.stream_closed(1, 3, later);
        assert_eq!(
            manager.stale_brokers(&state, later + ms(250))[0].cause,
            StaleCause::ConnectionClosed { closed_ms: 250 }
        );
        // A restarted broker (a new incarnation) is not held off by its predecessor's fencing.
        manager.fenced_early(1, 3, later + ms(250));
        let mut restarted = state.clone();
        restarted.brokers.get_mut(&1).unwrap().incarnation = 4;
        manager.touch(1, later + ms(300));
        manager.stream_opened(1, 4);
        manager.stream_closed(1, 4, later + ms(400));
        let stale = manager.stale_brokers(&restarted, later + ms(650));
        assert_eq!(stale[0].cause, StaleCause::ConnectionClosed { closed_ms: 250 });
        // A fenced broker is never stale, whatever its connection.
        state.brokers.get_mut(&1).unwrap().fenced = true;
        assert!(manager.stale_brokers(&state, later + ms(10_000)).is_empty());
    }

    #[test]
    fn closes_of_another_incarnation_or_without_a_grace_fence_nothing_early() {
        let start = Instant::now();
        let state = state(&[(1, false)]);
        let mut manager = BrokerHeartbeatManager::new(3000).with_close_grace(Some(ms(250)));
        manager.touch(1, start);
        manager.stream_opened(1, 2); // the previous incarnation, before a restart
        manager.stream_closed(1, 2, start);
        assert!(manager.stale_brokers(&state, start + ms(1000)).is_empty());
        let mut off = BrokerHeartbeatManager::new(3000);
        off.touch(1, start);
        off.stream_opened(1, 3);
        off.stream_closed(1, 3, start);
        assert!(off.stale_brokers(&state, start + ms(1000)).is_empty());
        // A new active controller forgets streams closed to its predecessor.
        manager.stream_opened(1, 3);
        manager.stream_closed(1, 3, start);
        manager.reset_all([1], start + ms(1));
        assert!(manager.stale_brokers(&state, start + ms(1000)).is_empty());
    }
}
