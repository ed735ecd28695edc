//! The schedule's faults and its ending. While the schedule runs, a fault now and then (at
//! most two at once): a broker crashes (its `Partition`s are dropped; it restarts later from
//! its log directory and last HW checkpoint, as a new incarnation), is isolated from
//! everyone, is cut from the controller only (its heartbeats stop, so the controller fences
//! it while it may still lead: a zombie leader), or loses its link to one peer or to the
//! client. Then everything heals, the network turns reliable, the producer stops starting
//! batches, and the cluster must converge: every broker up and unfenced, the full ISR, every
//! replica at the leader's log end and HW, every batch acknowledged; then the logs must be
//! identical and hold every acknowledged batch exactly once.
use insync_types::{BrokerId, NO_BROKER};

use super::checker::{LeaderView, Violation, ViolationKind};
use super::controller::BROKERS;
use super::effects::{FaultTimer, Timer};
use super::network::{Endpoint, NetworkFaults};
use super::{timing, Sim};

impl Sim<'_> {
    pub(super) fn on_fault(&mut self, fault: FaultTimer) -> Result<bool, Violation> {
        match fault {
            FaultTimer::Inject => self.inject_fault(),
            FaultTimer::Restart(broker) => self.restart(broker),
            FaultTimer::Rejoin(endpoint) => self.network.rejoin(endpoint),
            FaultTimer::HealLink(a, b) => self.network.heal_link(a, b),
            FaultTimer::HealAll => self.heal_all(),
            FaultTimer::QuietCheck => return self.quiet_check(),
        }
        Ok(false)
    }

    fn inject_fault(&mut self) {
        if self.healing_since.is_some() {
            return;
        }
        let gap = self.params.fault_gap_ms;
        let next = self.rng.range(gap / 2, gap * 3 / 2);
        self.io.after(next, Timer::Fault(FaultTimer::Inject));
        let active = self.nodes.iter().filter(|n| !n.is_up()).count() + self.network.fault_count();
        if active >= 2 {
            return;
        }
        let broker = self.rng.pick(&BROKERS);
        let duration = self.rng.range(50, 800);
        let (a, b) = (Endpoint::Broker(broker), self.rng.pick(&BROKERS));
        match self.rng.below(100) {
            0..=34 => {
                let target = self.crash_target(broker);
                self.crash(target, duration.min(600));
            }
            35..=54 => {
                self.network.isolate(a);
                self.io.coverage.bump("fault_broker_isolated");
                self.io.after(duration, Timer::Fault(FaultTimer::Rejoin(a)));
            }
            55..=69 => self.cut(a, Endpoint::Controller, duration, "fault_cut_from_controller"),
            70..=84 if Endpoint::Broker(b) != a => {
                self.cut(a, Endpoint::Broker(b), duration, "fault_cut_between_brokers")
            }
            85..=92 => self.cut(a, Endpoint::Client, duration, "fault_cut_from_client"),
            _ => {}
        }
    }

    fn cut(&mut self, a: Endpoint, b: Endpoint, duration: u64, what: &str) {
        self.network.cut_link(a, b);
        self.io.coverage.bump(what);
        self.io.after(duration, Timer::Fault(FaultTimer::HealLink(a, b)));
    }

    /// Mostly a partition's current leader (to force elections), else `fallback`.
    fn crash_target(&mut self, fallback: BrokerId) -> BrokerId {
        if self.rng.chance(600) {
            let partition = self.rng.below(self.params.partitions as u64) as i32;
            if let Some(leader) = self.controller.partition(partition).map(|p| p.leader).filter(|&l| l != NO_BROKER) {
                return leader;
            }
        }
        fallback
    }

    pub(super) fn crash(&mut self, broker: BrokerId, down_ms: u64) {
        if !self.node_mut(broker).is_up() {
            return;
        }
        self.node_mut(broker).crash();
        self.io.coverage.bump("fault_broker_crashed");
        let leads =
            (0..self.params.partitions).any(|p| self.controller.partition(p).is_some_and(|s| s.leader == broker));
        if leads {
            self.io.coverage.bump("fault_leader_crashed");
        }
        self.io.note(|| format!("broker {broker} crashes (leader: {leads}) for {down_ms} ms"));
        self.io.after(down_ms, Timer::Fault(FaultTimer::Restart(broker)));
    }

    fn restart(&mut self, broker: BrokerId) {
        if self.node_mut(broker).is_up() {
            return;
        }
        self.io.coverage.bump("broker_restarted");
        self.io.note(|| format!("broker {broker} restarts"));
        let phase = self.rng.below(timing::HEARTBEAT_MS);
        self.nodes[(broker - 1) as usize].start(&mut self.io, phase);
    }

    fn heal_all(&mut self) {
        self.healing_since = Some(self.now);
        self.network.heal_all();
        self.network.faults = NetworkFaults::reliable();
        for broker in BROKERS {
            self.restart(broker);
        }
        self.client.stop_producing();
        self.io.note(|| "everything heals; the producer starts no new batch".to_string());
        self.io.after(timing::QUIET_CHECK_MS, Timer::Fault(FaultTimer::QuietCheck));
    }

    fn quiet_check(&mut self) -> Result<bool, Violation> {
        if self.converged() {
            self.final_check()?;
            return Ok(true);
        }
        let healing_for = self.now - self.healing_since.unwrap_or(self.now);
        if healing_for > timing::HEAL_TIMEOUT_MS {
            let message = format!("not converged {healing_for} ms after healing: {}", self.describe_state());
            return Err(Violation::new(ViolationKind::NotConverged, message));
        }
        self.io.after(timing::QUIET_CHECK_MS, Timer::Fault(FaultTimer::QuietCheck));
        Ok(false)
    }

    /// Every broker up, registered and unfenced; each partition led with the full ISR; every
    /// replica at the leader's LEO and HW, which are equal; nothing left to acknowledge.
    fn converged(&self) -> bool {
        let brokers_ready = self.nodes.iter().all(|n| n.live.as_ref().is_some_and(|l| l.registered))
            && self.controller.state.brokers.len() == BROKERS.len()
            && self.controller.state.brokers.values().all(|b| !b.fenced);
        brokers_ready
            && (0..self.params.partitions).all(|p| self.partition_converged(p))
            && self.client.unacknowledged() == 0
    }

    fn partition_converged(&self, partition: i32) -> bool {
        let Some(state) = self.controller.partition(partition) else { return false };
        if state.leader == NO_BROKER || state.isr.len() != BROKERS.len() {
            return false;
        }
        let node = &self.nodes[(state.leader - 1) as usize];
        let leader_view = node
            .live
            .as_ref()
            .and_then(|l| l.partitions.iter().find(|(tp, _)| tp.partition == partition))
            .and_then(|(_, p)| LeaderView::of(state.leader, node.incarnation, partition, p));
        let Some(view) = leader_view.filter(|v| v.leader_epoch == state.leader_epoch) else { return false };
        if view.high_watermark != view.log_end_offset {
            return false;
        }
        self.nodes.iter().all(|n| {
            let replica = n.live.as_ref().and_then(|l| l.partitions.iter().find(|(tp, _)| tp.partition == partition));
            replica.is_some_and(|(_, p)| {
                p.log_end_offset() == view.log_end_offset && p.high_watermark() == view.high_watermark
            })
        })
    }

    /// The end state: identical logs, only values the producer created, and every batch
    /// acknowledged (to the client, or by any leader) present exactly once at its offset.
    fn final_check(&self) -> Result<(), Violation> {
        for partition in 0..self.params.partitions {
            let reference = self.checker.mirrors.get(&(BROKERS[0], partition)).cloned().unwrap_or_default();
            for broker in BROKERS {
                let mirror = self.checker.mirrors.get(&(broker, partition));
                if mirror.is_none_or(|m| m.batches != reference.batches) {
                    let message = format!("p{partition}: broker {broker}'s log differs from broker {}'s", BROKERS[0]);
                    return Err(Violation::new(ViolationKind::Diverged, message));
                }
            }
            let created = self.client.created(partition);
            if let Some(stray) = reference.batches.iter().find(|b| !created.contains(&b.value)) {
                let message = format!("p{partition}: offset {} holds a value never produced", stray.base);
                return Err(Violation::new(ViolationKind::Diverged, message));
            }
            let client_acks = self.client.partitions[partition as usize].acked.iter().map(|(s, (v, o))| (*s, *v, *o));
            let leader_acks = self.checker.acked(partition).iter().map(|a| (a.sequence, a.value, a.base_offset));
            for (sequence, value, offset) in client_acks.chain(leader_acks) {
                if reference.batch_at(offset).is_none_or(|b| b.value != value) {
                    let message =
                        format!("p{partition}: acknowledged seq {sequence} is not at offset {offset} at the end");
                    return Err(Violation::new(ViolationKind::AckedWriteMissing, message));
                }
            }
            for (sequence, value) in &self.client.partitions[partition as usize].implied {
                if !reference.contains_value(*value) {
                    let message =
                        format!("p{partition}: seq {sequence}, implied by a later acknowledgement, is missing");
                    return Err(Violation::new(ViolationKind::AckedWriteMissing, message));
                }
            }
        }
        Ok(())
    }

    fn describe_state(&self) -> String {
        let mut parts = Vec::new();
        for node in &self.nodes {
            let Some(live) = &node.live else {
                parts.push(format!("b{} down", node.id));
                continue;
            };
            for (tp, p) in &live.partitions {
                let (role, le, hw, leo) =
                    p.inspect(|s| (s.leader_id(node.id), s.leader_epoch(), s.high_watermark(), s.log_end_offset()));
                parts.push(format!(
                    "b{} p{} registered={} follows {role} le {le} hw {hw} leo {leo}",
                    node.id, tp.partition, live.registered
                ));
            }
        }
        for p in 0..self.params.partitions {
            if let Some(s) = self.controller.partition(p) {
                parts.push(format!("controller p{p}: leader {} le {} isr {:?}", s.leader, s.leader_epoch, s.isr));
            }
        }
        let fenced: Vec<BrokerId> = self.controller.state.brokers.values().filter(|b| b.fenced).map(|b| b.id).collect();
        parts.push(format!("fenced {fenced:?}; client unacknowledged {}", self.client.unacknowledged()));
        parts.join("; ")
    }
}
