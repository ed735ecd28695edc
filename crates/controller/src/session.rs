//! The `BrokerSession` stream (not in Kafka; see `heartbeat` for the rule): the active
//! controller holds one open per registered broker incarnation and notes when it closes.
//! A killed broker's kernel closes its sockets at once, so the close is the earliest sign of
//! its death; the liveness task in `node.rs` is woken to fence it after the grace.
use crate::heartbeat::BrokerHeartbeatManager;
use crate::role::ControllerRole;
use futures::Stream;
use insync_proto::{BrokerSessionEvent, ControllerError};
use insync_types::BrokerId;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{watch, Notify};
use tonic::Status;

pub type SessionStream = Pin<Box<dyn Stream<Item = Result<BrokerSessionEvent, Status>> + Send + 'static>>;

/// Counts the stream as open while it lives; its drop (the broker's connection closed, or
/// this stream ended) records the close and wakes the liveness task.
pub(crate) struct SessionGuard {
    heartbeats: Arc<Mutex<BrokerHeartbeatManager>>,
    closed: Arc<Notify>,
    /// This controller's role and shutdown flag: a close is news only while it is active.
    role: watch::Receiver<ControllerRole>,
    shutdown: watch::Receiver<bool>,
    broker_id: BrokerId,
    incarnation: u64,
}

impl SessionGuard {
    pub(crate) fn open(
        heartbeats: Arc<Mutex<BrokerHeartbeatManager>>,
        closed: Arc<Notify>,
        (role, shutdown): (watch::Receiver<ControllerRole>, watch::Receiver<bool>),
        broker_id: BrokerId,
        incarnation: u64,
    ) -> SessionGuard {
        heartbeats.lock().unwrap_or_else(|p| p.into_inner()).stream_opened(broker_id, incarnation);
        tracing::debug!(broker_id, incarnation, "broker session stream opened");
        SessionGuard { heartbeats, closed, role, shutdown, broker_id, incarnation }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let now = Instant::now();
        let grace = {
            let mut heartbeats = self.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
            heartbeats.stream_closed(self.broker_id, self.incarnation, now);
            heartbeats.close_grace()
        };
        // The first sign of a killed broker: the start of a failover timeline. A stream ended
        // because this controller steps down or stops is no news about the broker.
        let news = self.role.borrow().is_active && !*self.shutdown.borrow();
        if let (Some(grace), true) = (grace, news) {
            tracing::info!(
                broker_id = self.broker_id,
                incarnation = self.incarnation,
                "broker {}'s session stream closed: fenced in {} ms unless it reconnects or heartbeats first \
                 (or this incarnation was fenced early in the last 60 s)",
                self.broker_id,
                grace.as_millis()
            );
        }
        self.closed.notify_one();
    }
}

/// What the stream holds between items.
struct Progress {
    first: Option<ControllerError>,
    role: watch::Receiver<ControllerRole>,
    shutdown: watch::Receiver<bool>,
    guard: Option<SessionGuard>,
}

/// The stream answered to an accepted broker: `accepted` at once, then nothing until this
/// controller stops being active or shuts down. Without a guard (a refused request) it ends
/// after the first event.
pub(crate) fn stream(
    first: ControllerError,
    guard: Option<SessionGuard>,
    role: watch::Receiver<ControllerRole>,
    shutdown: watch::Receiver<bool>,
) -> SessionStream {
    let progress = Progress { first: Some(first), role, shutdown, guard };
    Box::pin(futures::stream::unfold(progress, |mut progress| async move {
        if let Some(error) = progress.first.take() {
            return Some((Ok(BrokerSessionEvent { error: Some(error) }), progress));
        }
        progress.guard.as_ref()?;
        loop {
            if *progress.shutdown.borrow_and_update() || !progress.role.borrow_and_update().is_active {
                return None;
            }
            tokio::select! {
                changed = progress.role.changed() => if changed.is_err() { return None },
                changed = progress.shutdown.changed() => if changed.is_err() { return None },
            }
        }
    }))
}
