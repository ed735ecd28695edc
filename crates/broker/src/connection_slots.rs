//! Connection slots of one listener (Kafka `SocketServer.ConnectionQuotas`): at most
//! `max.connections` at once — further clients wait in the accept backlog — and at most
//! `max.connections.per.ip` from one address, beyond which a new connection is closed at
//! once, so that one host cannot take every slot from the others (on the gRPC listener,
//! the other brokers' fetchers and heartbeats).
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

pub struct ConnectionSlots {
    listener: &'static str,
    total: Arc<Semaphore>,
    max_total: usize,
    max_per_ip: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One accepted connection's slot, released when dropped.
pub struct Slot {
    slots: Arc<ConnectionSlots>,
    ip: IpAddr,
    _total: OwnedSemaphorePermit,
}

impl ConnectionSlots {
    pub fn new(listener: &'static str, max_total: usize, max_per_ip: usize) -> Arc<ConnectionSlots> {
        Arc::new(ConnectionSlots {
            listener,
            total: Arc::new(Semaphore::new(max_total.max(1))),
            max_total,
            max_per_ip: max_per_ip.max(1),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for a free slot in the listener (call before accepting).
    pub async fn reserve(self: &Arc<Self>) -> Option<OwnedSemaphorePermit> {
        if self.total.available_permits() == 0 {
            warn!(
                listener = self.listener,
                max_connections = self.max_total,
                "listener full: new clients wait until one closes"
            );
        }
        self.total.clone().acquire_owned().await.ok()
    }

    /// Takes the reserved slot for a connection from `ip`, or refuses it (the caller closes
    /// the connection) when that address already has `max.connections.per.ip`.
    pub fn admit(self: &Arc<Self>, reserved: OwnedSemaphorePermit, ip: IpAddr) -> Option<Slot> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            warn!(
                listener = self.listener,
                peer = %ip,
                max_connections_per_ip = self.max_per_ip,
                "refusing a connection: its address has max.connections.per.ip open"
            );
            return None;
        }
        *count += 1;
        Some(Slot { slots: self.clone(), ip, _total: reserved })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_ip = self.slots.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_address_gets_at_most_its_share_and_slots_come_back() {
        let slots = ConnectionSlots::new("test", 10, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = slots.admit(slots.reserve().await.unwrap(), a).expect("first");
        let _second = slots.admit(slots.reserve().await.unwrap(), a).expect("second");
        assert!(slots.admit(slots.reserve().await.unwrap(), a).is_none(), "a third from the same address");
        let _other = slots.admit(slots.reserve().await.unwrap(), b).expect("another address is served");
        drop(first);
        let _again = slots.admit(slots.reserve().await.unwrap(), a).expect("a slot came back");
        assert_eq!(slots.total.available_permits(), 10 - 3, "refused connections hold no slot");
    }
}
