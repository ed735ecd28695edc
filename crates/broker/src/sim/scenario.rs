//! Scripted schedules: the random faults are off, the network is reliable, and a script
//! reacting to the cluster's state cuts links and loses chosen messages, to reach one
//! interleaving on purpose rather than by luck. The invariants are the same.
use insync_types::{BrokerId, TopicPartition};

use super::checker::LeaderView;
use super::controller::TOPIC;
use super::network::{Address, Endpoint, Message};
use super::Sim;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Leader 1 shrinks broker 3 out of the ISR, then proposes to add it back once it has
    /// caught up. The controller commits the expansion, but the answer is lost and broker
    /// 1's metadata feed lags, so the AlterPartition is re-sent (KIP-497: an unanswered
    /// proposal may have been committed) and answered INVALID_UPDATE_VERSION. Meanwhile
    /// broker 3 stops fetching from 1 but keeps heartbeating, so the controller keeps it in
    /// the ISR: the HW must keep waiting for it.
    LostExpandAnswer,
    /// Leader 1 loses its link to the controller only, for longer than its session: the
    /// controller fences it and elects another leader, while 1 still believes it leads and
    /// the client, whose metadata is held back meanwhile, keeps producing to it. 1 appends
    /// batches no follower fetches, proposes ISR shrinks that cannot reach the controller
    /// (re-sent while unanswered), and once the link heals must be refused
    /// (FENCED_LEADER_EPOCH), become a follower and truncate its unreplicated tail (KIP-101),
    /// while the client's retries of those batches land once, on the new leader.
    ZombieLeader,
    /// KIP-903: leader 1 shrinks broker 3 out of the ISR and proposes to add it back once it
    /// caught up, but the AlterPartition is held back. Broker 3 fetches on, so acknowledged
    /// writes count it (KIP-497), then crashes, loses the tail of its log that holds them
    /// (an unflushed tail: modelled by cutting its log while it is down), restarts and
    /// registers again, and is unfenced; only then does the proposal reach the controller.
    /// Broker 3 gets no metadata meanwhile (so it opens its shorter log only once the
    /// proposal's fate is known to the leader). The proposal names the broker epoch of the
    /// incarnation that made the progress, so the controller must refuse it
    /// (INELIGIBLE_REPLICA); accepting it puts into the ISR a replica missing acknowledged
    /// writes.
    RestartedFollowerStaleExpand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    WaitForTraffic,
    WaitForShrink,
    WaitForExpand,
    /// Until the time given: broker 1 gets no metadata and not the commit's answer; or, for
    /// the zombie, broker 1 is cut from the controller and the client gets no metadata.
    Holding(u64),
    /// The stale expand: its AlterPartition was just held back; then, with the number of
    /// acknowledgements at that moment, held while more writes are acknowledged.
    ExpandHeld,
    ExpandHeldSince(usize),
    /// Broker 3 crashed, lost its tail and restarts: the proposal is still held back.
    Restarted,
    /// Broker 3's new incarnation is unfenced: the proposal may go; broker 3's metadata is
    /// held back until the leader knows the proposal's fate.
    Released,
    Done,
}

const LEADER: BrokerId = 1;
const LAGGARD: BrokerId = 3;
const HOLD_MS: u64 = 1_500;
const ZOMBIE_MS: u64 = 1_000;
/// Writes acknowledged with the held-back expand in the leader's maximal ISR, before broker
/// 3 crashes and loses them.
const ACKS_BEFORE_CRASH: usize = 3;
const RESTART_AFTER_MS: u64 = 50;

#[derive(Debug)]
pub struct Script {
    scenario: Scenario,
    phase: Phase,
}

impl Script {
    pub fn new(scenario: Scenario) -> Script {
        Script { scenario, phase: Phase::WaitForTraffic }
    }

    /// Whether to lose a message the network would deliver.
    pub fn loses(&mut self, now: u64, to: Address, message: &Message) -> bool {
        match self.scenario {
            Scenario::LostExpandAnswer => self.loses_expand_answer(now, to, message),
            Scenario::ZombieLeader => {
                matches!((self.phase, message), (Phase::Holding(until), Message::Metadata(_)) if now < until)
                    && to.endpoint == Endpoint::Client
            }
            Scenario::RestartedFollowerStaleExpand => self.loses_stale_expand(to, message),
        }
    }

    fn loses_stale_expand(&mut self, to: Address, message: &Message) -> bool {
        match (self.phase, message, to.endpoint) {
            (Phase::WaitForExpand, Message::AlterPartition { request, .. }, Endpoint::Controller)
                if request.new_isr.contains(&LAGGARD) =>
            {
                self.phase = Phase::ExpandHeld;
                true
            }
            (
                Phase::ExpandHeld | Phase::ExpandHeldSince(_) | Phase::Restarted,
                Message::AlterPartition { .. },
                Endpoint::Controller,
            ) => true,
            (Phase::Restarted | Phase::Released, Message::Metadata(_), Endpoint::Broker(LAGGARD)) => true,
            _ => false,
        }
    }

    fn loses_expand_answer(&mut self, now: u64, to: Address, message: &Message) -> bool {
        if to.endpoint != Endpoint::Broker(LEADER) {
            return false;
        }
        match (self.phase, message) {
            (Phase::WaitForExpand, Message::Metadata(m)) if isr_of(m) == [LEADER, 2, LAGGARD] => {
                self.phase = Phase::Holding(now + HOLD_MS);
                true
            }
            (Phase::Holding(until), Message::Metadata(_)) => now < until,
            (Phase::Holding(until), Message::AlterPartitionAnswer { result: Ok(p), .. }) => {
                now < until && p.isr.contains(&LAGGARD)
            }
            _ => false,
        }
    }
}

fn isr_of(metadata: &insync_proto::ClusterMetadata) -> Vec<BrokerId> {
    let partition = metadata.topics.first().and_then(|t| t.partitions.first());
    let mut isr = partition.filter(|p| p.leader == LEADER).map(|p| p.isr.clone()).unwrap_or_default();
    isr.sort_unstable();
    isr
}

impl Sim<'_> {
    /// Moves the script on from what the cluster did in the last step.
    pub(super) fn drive_script(&mut self) {
        match self.script.as_ref().map(|s| s.scenario) {
            Some(Scenario::LostExpandAnswer) => self.drive_lost_expand_answer(),
            Some(Scenario::ZombieLeader) => self.drive_zombie_leader(),
            Some(Scenario::RestartedFollowerStaleExpand) => self.drive_stale_expand(),
            None => {}
        }
    }

    fn drive_zombie_leader(&mut self) {
        let leader = self.controller.partition(0).map_or(-1, |p| p.leader);
        let acked = self.checker.acked(0).len();
        let (now, a) = (self.now, Endpoint::Broker(LEADER));
        let Some(script) = &mut self.script else { return };
        match script.phase {
            Phase::WaitForTraffic if leader == LEADER && acked >= 3 => {
                self.network.cut_link(a, Endpoint::Controller);
                script.phase = Phase::Holding(now + ZOMBIE_MS);
            }
            Phase::Holding(until) if now >= until => {
                self.network.heal_link(a, Endpoint::Controller);
                script.phase = Phase::Done;
            }
            _ => {}
        }
    }

    fn drive_lost_expand_answer(&mut self) {
        let Some(script) = &mut self.script else { return };
        let (a, b) = (Endpoint::Broker(LEADER), Endpoint::Broker(LAGGARD));
        let state = self.controller.partition(0).map(|p| (p.leader, p.isr.clone()));
        let mut isr = state.as_ref().map(|s| s.1.clone()).unwrap_or_default();
        isr.sort_unstable();
        let leader = state.map_or(-1, |s| s.0);
        match script.phase {
            Phase::WaitForTraffic if leader == LEADER && isr.len() == 3 && self.checker.acked(0).len() >= 3 => {
                self.network.cut_link(a, b);
                script.phase = Phase::WaitForShrink;
            }
            Phase::WaitForShrink if isr == [LEADER, 2] => {
                self.network.heal_link(a, b);
                script.phase = Phase::WaitForExpand;
            }
            Phase::Holding(until) if self.now < until && self.network.connected(a, b) => {
                self.io.coverage.bump("scenario_expand_answer_lost");
                self.network.cut_link(a, b);
            }
            Phase::Holding(until) if self.now >= until => {
                self.network.heal_link(a, b);
                script.phase = Phase::Done;
            }
            _ => {}
        }
    }

    fn drive_stale_expand(&mut self) {
        let Some(phase) = self.script.as_ref().map(|s| s.phase) else { return };
        let (a, b) = (Endpoint::Broker(LEADER), Endpoint::Broker(LAGGARD));
        let (leader, isr) = self.controller_isr();
        let acked = self.checker.acked(0).len();
        let next = match phase {
            Phase::WaitForTraffic if leader == LEADER && isr.len() == 3 && acked >= 3 => {
                self.network.cut_link(a, b);
                Phase::WaitForShrink
            }
            Phase::WaitForShrink if isr == [LEADER, 2] => {
                self.network.heal_link(a, b);
                Phase::WaitForExpand
            }
            Phase::ExpandHeld => Phase::ExpandHeldSince(acked),
            Phase::ExpandHeldSince(mark) if acked >= mark + ACKS_BEFORE_CRASH => {
                self.crash_losing_acknowledged_tail(mark);
                Phase::Restarted
            }
            Phase::Restarted if self.laggard_reregistered() => {
                self.io.coverage.bump("scenario_stale_expand_released");
                Phase::Released
            }
            Phase::Released if isr.contains(&LAGGARD) || !self.leader_counts_laggard() => Phase::Done,
            other => other,
        };
        if let Some(script) = &mut self.script {
            script.phase = next;
        }
    }

    /// Broker 3 crashes and loses its log from the first write acknowledged since the
    /// expand was held back (`mark`: the acknowledgements before it), which the HW could only
    /// pass because the leader counted broker 3 in its maximal ISR.
    fn crash_losing_acknowledged_tail(&mut self, mark: usize) {
        let Some(lost_from) = self.checker.acked(0)[mark..].iter().map(|ack| ack.base_offset).min() else { return };
        self.crash(LAGGARD, RESTART_AFTER_MS);
        let tp = TopicPartition::new(TOPIC, 0);
        match self.node_mut(LAGGARD).lose_log_tail(&tp, lost_from) {
            Ok(end) => {
                self.io.coverage.bump("scenario_log_tail_lost");
                self.io.note(|| format!("broker {LAGGARD} lost its log from offset {lost_from}: it ends at {end}"));
            }
            Err(e) => self.io.anomaly(e),
        }
    }

    /// The controller's leader and sorted ISR of partition 0.
    fn controller_isr(&self) -> (BrokerId, Vec<BrokerId>) {
        let Some(p) = self.controller.partition(0) else { return (-1, Vec::new()) };
        let mut isr = p.isr.clone();
        isr.sort_unstable();
        (p.leader, isr)
    }

    /// Broker 3's new incarnation is registered and unfenced.
    fn laggard_reregistered(&self) -> bool {
        let node = &self.nodes[(LAGGARD - 1) as usize];
        let registration = self.controller.state.brokers.get(&LAGGARD);
        node.is_up() && registration.is_some_and(|r| r.incarnation == node.incarnation && !r.fenced)
    }

    /// Leader 1's maximal ISR still holds broker 3 (the held-back expand is pending).
    fn leader_counts_laggard(&self) -> bool {
        let node = &self.nodes[(LEADER - 1) as usize];
        let tp = TopicPartition::new(TOPIC, 0);
        let partition = node.live.as_ref().and_then(|live| live.partitions.get(&tp));
        partition
            .and_then(|p| LeaderView::of(LEADER, node.incarnation, 0, p))
            .is_some_and(|view| view.maximal_isr.contains(&LAGGARD))
    }
}
