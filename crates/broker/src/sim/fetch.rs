//! Replication traffic of a simulated broker, both sides. As a follower: one fetcher per
//! leader (`fetcher::run_fetcher_manager` / `run_fetcher`), one Fetch outstanding at a time,
//! built from `Partition::fetch_position` in the real `FetchOrder`, its answer applied with
//! `Partition::apply_fetch_response`, a lost answer retried after a timeout. As a leader: the
//! KIP-903 identity check and `Partition::read` over one byte budget
//! (`ReplicaManager::read_partitions`). Fetches are answered at once instead of long-polled;
//! a follower whose answer was empty waits `FETCH_IDLE_MS` (the long poll's wait) first.
use std::collections::{BTreeMap, HashSet};

use insync_types::{BrokerId, ErrorCode, TopicPartition};

use super::effects::{Io, NodeTimer, Target};
use super::network::{Address, Endpoint, Message};
use super::node::Live;
use super::timing;
use crate::fetch_limits::FetchBudget;
use crate::fetcher::FetchOrder;
use crate::messages::{FetchPartition, FetchPartitionResponse};
use crate::replica_identity::check_follower_identity;

/// The fetcher of one leader.
#[derive(Debug, Default)]
pub struct Fetcher {
    order: FetchOrder,
    /// The Fetch in flight and the assignment it was built from (its answer is applied with
    /// those leader epochs, as `run_fetcher` applies with the `assigned` it sent).
    outstanding: Option<(u64, BTreeMap<TopicPartition, i32>)>,
    /// The latest scheduled send; older timers are void.
    token: u64,
}

impl Live {
    /// Starts fetchers for new leaders and stops those of leaders we no longer follow (an
    /// aborted fetcher's answer in flight is lost with it).
    pub fn set_assignment(&mut self, assignment: BTreeMap<BrokerId, BTreeMap<TopicPartition, i32>>, io: &mut Io) {
        self.fetchers.retain(|leader, _| assignment.contains_key(leader));
        let new_leaders: Vec<BrokerId> =
            assignment.keys().copied().filter(|leader| !self.fetchers.contains_key(leader)).collect();
        self.assignment = assignment;
        for leader in new_leaders {
            self.fetchers.insert(leader, Fetcher::default());
            self.schedule_fetch(leader, 0, io);
        }
    }

    fn schedule_fetch(&mut self, leader: BrokerId, delay_ms: u64, io: &mut Io) {
        let token = io.next_id();
        if let Some(fetcher) = self.fetchers.get_mut(&leader) {
            fetcher.token = token;
            self.after(io, delay_ms, NodeTimer::Fetch { leader, token });
        }
    }

    /// `fetcher::build_fetch_request` and the send.
    pub fn on_fetch_timer(&mut self, leader: BrokerId, token: u64, io: &mut Io) {
        let Some(fetcher) = self.fetchers.get(&leader) else { return };
        if fetcher.token != token || fetcher.outstanding.is_some() {
            return;
        }
        let Some(assigned) = self.assignment.get(&leader).filter(|a| !a.is_empty()).cloned() else { return };
        if self.broker_epoch <= 0 {
            // Not registered (yet, or any more): a leader serves replica fetches only to a
            // registered broker's current epoch (KIP-903).
            self.schedule_fetch(leader, timing::FETCH_ERROR_BACKOFF_MS, io);
            return;
        }
        let partitions = self.fetch_positions(leader, &assigned);
        if partitions.is_empty() {
            self.schedule_fetch(leader, timing::FETCH_EMPTY_BACKOFF_MS, io);
            return;
        }
        let fetch_id = io.next_id();
        if let Some(fetcher) = self.fetchers.get_mut(&leader) {
            fetcher.outstanding = Some((fetch_id, assigned));
        }
        let message = Message::Fetch {
            fetch_id,
            replica_id: self.id(),
            broker_epoch: self.broker_epoch,
            max_bytes: self.config.fetch_max_bytes,
            partitions,
        };
        io.send(self.me, Target::Current(Endpoint::Broker(leader)), message);
        self.after(io, timing::FETCH_TIMEOUT_MS, NodeTimer::FetchTimeout { leader, fetch_id });
    }

    fn fetch_positions(&mut self, leader: BrokerId, assigned: &BTreeMap<TopicPartition, i32>) -> Vec<FetchPartition> {
        let Some(fetcher) = self.fetchers.get_mut(&leader) else { return Vec::new() };
        fetcher.order.sync(assigned);
        let mut partitions = Vec::new();
        for tp in fetcher.order.iter() {
            let (Some(&leader_epoch), Some(partition)) = (assigned.get(tp), self.partitions.get(tp)) else {
                continue;
            };
            let Some((fetch_offset, last_fetched_epoch)) = partition.fetch_position(leader, leader_epoch) else {
                continue;
            };
            partitions.push(FetchPartition {
                topic_partition: tp.clone(),
                fetch_offset,
                current_leader_epoch: leader_epoch,
                last_fetched_epoch,
                partition_max_bytes: 1024 * 1024,
            });
        }
        partitions
    }

    /// `fetcher::apply_response`, then the next fetch: at once after data, after a back-off
    /// on an error, after the long poll's wait on an empty answer.
    pub fn on_fetch_answer(
        &mut self,
        from: Address,
        fetch_id: u64,
        responses: Vec<FetchPartitionResponse>,
        io: &mut Io,
    ) {
        let Endpoint::Broker(leader) = from.endpoint else { return };
        let Some(fetcher) = self.fetchers.get_mut(&leader) else { return };
        let Some((_, assigned)) = fetcher.outstanding.take_if(|(id, _)| *id == fetch_id) else {
            io.coverage.bump("fetch_answer_discarded");
            return;
        };
        let mut served = HashSet::new();
        let mut back_off = false;
        for response in responses {
            let tp = response.topic_partition.clone();
            let (Some(&leader_epoch), Some(partition)) = (assigned.get(&tp), self.partitions.get(&tp)) else {
                continue;
            };
            if response.diverging_epoch.is_some() {
                io.coverage.bump("fetch_diverging_epoch");
            }
            let has_data = !response.records.is_empty();
            back_off |= partition.apply_fetch_response(leader, leader_epoch, response).back_off;
            if has_data {
                served.insert(tp);
            }
        }
        if let Some(fetcher) = self.fetchers.get_mut(&leader) {
            fetcher.order.move_to_end(&served);
        }
        let delay = if back_off {
            timing::FETCH_BACKOFF_MS
        } else if served.is_empty() {
            timing::FETCH_IDLE_MS
        } else {
            0
        };
        self.schedule_fetch(leader, delay, io);
    }

    /// The gRPC call timed out: its answer, if it ever comes, is dropped.
    pub fn on_fetch_timeout(&mut self, leader: BrokerId, fetch_id: u64, io: &mut Io) {
        let Some(fetcher) = self.fetchers.get_mut(&leader) else { return };
        if fetcher.outstanding.take_if(|(id, _)| *id == fetch_id).is_some() {
            io.coverage.bump("fetch_timed_out");
            self.schedule_fetch(leader, timing::FETCH_ERROR_BACKOFF_MS, io);
        }
    }

    /// The leader's side (`ReplicaManager::read_partitions`, one pass: answered at once).
    #[allow(clippy::too_many_arguments)]
    pub fn serve_fetch(
        &mut self,
        from: Address,
        fetch_id: u64,
        replica_id: BrokerId,
        broker_epoch: i64,
        max_bytes: usize,
        wanted: Vec<FetchPartition>,
        io: &mut Io,
    ) {
        let identity = check_follower_identity(&self.metadata, replica_id, broker_epoch);
        if identity.is_err() {
            io.coverage.bump("fetch_refused_identity");
        }
        let mut budget = FetchBudget::new(max_bytes, usize::MAX);
        let mut responses = Vec::with_capacity(wanted.len());
        for entry in &wanted {
            let tp = &entry.topic_partition;
            let response = match (&identity, self.partitions.get(tp)) {
                (Err(refusal), _) => {
                    FetchPartitionResponse::refused(tp.clone(), refusal.error, refusal.message.clone())
                }
                (Ok(()), None) => FetchPartitionResponse::refused(tp.clone(), ErrorCode::NOT_LEADER_OR_FOLLOWER, ""),
                (Ok(()), Some(partition)) => {
                    let (response, actions) = partition.read(replica_id, broker_epoch, entry, &budget, true, io.now);
                    self.run_actions(tp, actions, io);
                    response
                }
            };
            budget.consume(response.records.len());
            responses.push(response);
        }
        io.send(self.me, Target::Exact(from), Message::FetchAnswer { fetch_id, partitions: responses });
    }
}
