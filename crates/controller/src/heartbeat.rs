//! Broker liveness as the active controller sees it (Kafka `BrokerHeartbeatManager`): the
//! instant of each broker's last heartbeat, kept in memory only — heartbeats are not
//! replicated, only the fencing they lead to is. Pure: time is passed in; the periodic task
//! that proposes `FenceBroker` lives in `node.rs`.
use crate::metadata::ClusterState;
use insync_types::BrokerId;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A broker whose session expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleBroker {
    pub broker_id: BrokerId,
    pub incarnation: u64,
    pub silent_ms: u64,
}

#[derive(Debug)]
pub struct BrokerHeartbeatManager {
    /// `broker.session.timeout.ms` (Kafka 9000; insync 3000 for a laptop).
    session_timeout_ms: u64,
    /// Last heartbeat (or grace start) per broker id.
    last_contact: BTreeMap<BrokerId, Instant>,
}

impl BrokerHeartbeatManager {
    pub fn new(session_timeout_ms: u64) -> Self {
        Self { session_timeout_ms, last_contact: BTreeMap::new() }
    }

    pub fn session_timeout_ms(&self) -> u64 {
        self.session_timeout_ms
    }

    /// A heartbeat (or registration) arrived (Kafka `BrokerHeartbeatManager.touch`).
    pub fn touch(&mut self, broker_id: BrokerId, now: Instant) {
        self.last_contact.insert(broker_id, now);
    }

    /// A controller that just became active knows nothing of past heartbeats: every broker
    /// gets a full session from now, as Kafka's new active controller starts all sessions
    /// afresh (`BrokerHeartbeatManager` is rebuilt on activation).
    pub fn reset_all(&mut self, broker_ids: impl IntoIterator<Item = BrokerId>, now: Instant) {
        self.last_contact = broker_ids.into_iter().map(|id| (id, now)).collect();
    }

    /// Unfenced brokers silent for longer than the session timeout (Kafka
    /// `findOneStaleBroker`, all at once here; they are fenced one proposal at a time).
    /// Brokers never seen get a grace period starting now; departed ones are forgotten.
    pub fn stale_brokers(&mut self, state: &ClusterState, now: Instant) -> Vec<StaleBroker> {
        self.last_contact.retain(|id, _| state.brokers.contains_key(id));
        let timeout = Duration::from_millis(self.session_timeout_ms);
        let mut stale = Vec::new();
        for broker in state.brokers.values().filter(|b| !b.fenced) {
            let last = *self.last_contact.entry(broker.id).or_insert(now);
            let silent = now.saturating_duration_since(last);
            if silent > timeout {
                stale.push(StaleBroker {
                    broker_id: broker.id,
                    incarnation: broker.incarnation,
                    silent_ms: silent.as_millis() as u64,
                });
            }
        }
        stale
    }

    /// Milliseconds since the broker's last heartbeat (or grace start), None if never seen.
    /// Read-only: for the metadata view that operators watch during a failover.
    pub fn last_contact_ms_ago(&self, broker_id: BrokerId, now: Instant) -> Option<u64> {
        self.last_contact.get(&broker_id).map(|last| now.saturating_duration_since(*last).as_millis() as u64)
    }

    /// "no heartbeat for 3012 ms (session timeout 3000 ms)": the reason carried by FenceBroker.
    pub fn fence_reason(&self, stale: &StaleBroker) -> String {
        format!("no heartbeat for {} ms (session timeout {} ms)", stale.silent_ms, self.session_timeout_ms)
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
        assert_eq!(stale, vec![StaleBroker { broker_id: 1, incarnation: 3, silent_ms: 3012 }]);
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
}
