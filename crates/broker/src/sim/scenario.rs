//! Scripted schedules: the random faults are off, the network is reliable, and a script
//! reacting to the cluster's state cuts links and loses chosen messages, to reach one
//! interleaving on purpose rather than by luck. The invariants are the same.
use insync_types::BrokerId;

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    WaitForTraffic,
    WaitForShrink,
    WaitForExpand,
    /// Until the time given: broker 1 gets no metadata and not the commit's answer; or, for
    /// the zombie, broker 1 is cut from the controller and the client gets no metadata.
    Holding(u64),
    Done,
}

const LEADER: BrokerId = 1;
const LAGGARD: BrokerId = 3;
const HOLD_MS: u64 = 1_500;
const ZOMBIE_MS: u64 = 1_000;

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
}
