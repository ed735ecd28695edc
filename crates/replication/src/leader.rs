//! The partition leader's pure state machine: follower progress, ISR shrink/expand by time
//! lag, the maximal ISR while a change is in flight (KIP-497), the high watermark, and the
//! acks=all purgatory (Kafka `Partition`, `Replica`, `DelayedProduce`).
//!
//! The broker feeds it events (local append, follower fetch, tick, committed ISR from the
//! controller) with the current time and executes the `Action`s it returns.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use insync_types::{Acks, BrokerId, ErrorCode, LeaderEpoch, Offset, PartitionEpoch};

use crate::effective_min_isr;

/// Identifies a parked acks=all produce request (chosen by the broker).
pub type WaiterId = u64;

/// What the leader knows of one follower (Kafka `Replica.ReplicaState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's log end offset = the offset of its last fetch; -1 until it fetches.
    pub log_end_offset: Offset,
    /// The last time the follower was known to be caught up with the leader (ms).
    pub last_caught_up_ms: u64,
    /// The leader's LEO at the follower's previous fetch, for the lag rule below.
    pub last_fetch_leader_log_end_offset: Offset,
    /// When the previous fetch arrived.
    pub last_fetch_ms: u64,
    /// The broker epoch the follower fetched with (KIP-903): the incarnation all of the
    /// above belongs to. None until it fetches under this leadership.
    pub broker_epoch: Option<i64>,
}

impl FollowerProgress {
    fn reset(now_ms: u64, in_isr: bool) -> Self {
        // Kafka Replica.resetReplicaState: a new leader treats ISR members as caught up
        // now, so none is dropped before it had a chance to fetch; others start at 0.
        FollowerProgress {
            log_end_offset: -1,
            last_caught_up_ms: if in_isr { now_ms } else { 0 },
            last_fetch_leader_log_end_offset: -1,
            last_fetch_ms: 0,
            broker_epoch: None,
        }
    }

    /// The first fetch of a new incarnation of the follower (KIP-903): what the leader knew
    /// was the progress of a process that has since restarted, whose log may have lost its
    /// unflushed tail, so none of it counts: LEO unknown, not caught up. Kafka keeps the old
    /// state and only records the new epoch (`Replica.updateFetchStateOrThrow`); starting
    /// over is stricter, and costs a restarted follower one fetch.
    fn new_incarnation(broker_epoch: i64) -> Self {
        FollowerProgress { broker_epoch: Some(broker_epoch), ..FollowerProgress::reset(0, false) }
    }

    /// Kafka `Replica.isCaughtUp`: at the leader's end, or caught up within the lag bound.
    fn is_caught_up(&self, leader_log_end_offset: Offset, now_ms: u64, replica_lag_time_max_ms: u64) -> bool {
        self.log_end_offset == leader_log_end_offset
            || now_ms.saturating_sub(self.last_caught_up_ms) <= replica_lag_time_max_ms
    }
}

/// The ISR with any change in flight (Kafka `PartitionState`: `CommittedPartitionState`,
/// `PendingExpandIsr`, `PendingShrinkIsr`). One change in flight at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrState {
    Committed { isr: BTreeSet<BrokerId> },
    PendingExpand { isr: BTreeSet<BrokerId>, new_member: BrokerId },
    PendingShrink { isr: BTreeSet<BrokerId>, removed: BTreeSet<BrokerId> },
}

impl IsrState {
    /// The ISR last committed by the controller.
    pub fn committed(&self) -> &BTreeSet<BrokerId> {
        match self {
            IsrState::Committed { isr } | IsrState::PendingExpand { isr, .. } | IsrState::PendingShrink { isr, .. } => {
                isr
            }
        }
    }

    /// The largest ISR that may be in effect (KIP-497): a pending expand already counts the
    /// new member, a pending shrink still counts the removed ones. The HW uses this so it
    /// never advances past what a possibly-committed ISR member holds.
    pub fn maximal(&self) -> BTreeSet<BrokerId> {
        match self {
            IsrState::Committed { isr } | IsrState::PendingShrink { isr, .. } => isr.clone(),
            IsrState::PendingExpand { isr, new_member } => {
                let mut m = isr.clone();
                m.insert(*new_member);
                m
            }
        }
    }

    pub fn is_in_flight(&self) -> bool {
        !matches!(self, IsrState::Committed { .. })
    }
}

/// Why the ISR should change: carried in the proposal so the broker can log one line that
/// explains itself (Kafka logs "Shrinking ISR from ... Out of sync replicas: ...").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrChangeKind {
    /// Followers dropped for lagging: (broker, its LEO, ms since last caught up).
    Shrink { dropped: Vec<(BrokerId, Offset, u64)> },
    /// A follower caught up: (broker, its LEO).
    Expand { added: BrokerId, follower_log_end_offset: Offset },
}

/// A proposed ISR change, to be sent to the controller as AlterPartition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub old_isr: Vec<BrokerId>,
    pub new_isr: Vec<BrokerId>,
    /// (follower, the broker epoch it fetched with) for each member of `new_isr` but the
    /// leader whose epoch is known, in broker order: the controller refuses the change if
    /// one is not the member's current registration (Kafka `NewIsrWithEpochs`, KIP-903), so
    /// no replica joins on the progress of an incarnation that has since restarted. An
    /// added member has always fetched, so its epoch is always there.
    pub new_isr_broker_epochs: Vec<(BrokerId, i64)>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub leader_log_end_offset: Offset,
    pub high_watermark: Offset,
    pub replica_lag_time_max_ms: u64,
    pub kind: IsrChangeKind,
}

impl fmt::Display for IsrChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.kind {
            IsrChangeKind::Shrink { .. } => "shrinking",
            IsrChangeKind::Expand { .. } => "expanding",
        };
        write!(
            f,
            "{verb} ISR {:?} -> {:?} (leader LEO {}, HW {}, leader epoch {}, partition epoch {})",
            self.old_isr,
            self.new_isr,
            self.leader_log_end_offset,
            self.high_watermark,
            self.leader_epoch,
            self.partition_epoch
        )?;
        match &self.kind {
            IsrChangeKind::Shrink { dropped } => {
                for (broker, leo, ago) in dropped {
                    write!(
                        f,
                        "; broker {broker} out of sync: LEO {leo}, last caught up {ago} ms ago > replica.lag.time.max.ms {}",
                        self.replica_lag_time_max_ms
                    )?;
                }
            }
            IsrChangeKind::Expand { added, follower_log_end_offset } => {
                let epoch = self.new_isr_broker_epochs.iter().find(|(b, _)| b == added).map_or(-1, |(_, e)| *e);
                write!(
                    f,
                    "; broker {added} (broker epoch {epoch}) caught up: LEO {follower_log_end_offset} >= HW {}",
                    self.high_watermark
                )?;
            }
        }
        Ok(())
    }
}

/// What the broker must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The HW moved forward: checkpoint it lazily, wake consumers.
    HighWatermarkAdvanced { high_watermark: Offset },
    /// Answer a parked acks=all produce with this code (NONE = success).
    CompleteProduce { waiter: WaiterId, error: ErrorCode },
    /// Send AlterPartition to the controller and log the change.
    ProposeIsr(IsrChange),
}

/// Everything needed to become leader (Kafka `Partition.makeLeader`).
#[derive(Debug, Clone)]
pub struct LeaderParams {
    pub local_broker: BrokerId,
    /// Assignment order (the first is the preferred leader).
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    /// The leader's LEO when it became leader = start offset of its epoch. Followers join
    /// the ISR only past it, so they hold every record of the new epoch's history.
    pub leader_epoch_start_offset: Offset,
    pub log_end_offset: Offset,
    /// From the HW checkpoint / previous role; never above the LEO.
    pub high_watermark: Offset,
    pub min_insync_replicas: usize,
    pub replica_lag_time_max_ms: u64,
}

#[derive(Debug, Clone)]
struct Waiter {
    /// The produce is complete once HW ≥ this (last offset + 1) (Kafka DelayedProduce).
    required_offset: Offset,
}

/// The leader's replication state of one partition.
#[derive(Debug, Clone)]
pub struct LeaderPartition {
    local_broker: BrokerId,
    replicas: Vec<BrokerId>,
    leader_epoch: LeaderEpoch,
    partition_epoch: PartitionEpoch,
    leader_epoch_start_offset: Offset,
    isr: IsrState,
    log_end_offset: Offset,
    high_watermark: Offset,
    followers: BTreeMap<BrokerId, FollowerProgress>,
    /// Followers that may join the ISR: registered, unfenced, not shutting down (KIP-841).
    eligible: BTreeSet<BrokerId>,
    min_insync_replicas: usize,
    replica_lag_time_max_ms: u64,
    waiters: BTreeMap<WaiterId, Waiter>,
}

impl LeaderPartition {
    /// Becomes leader (Kafka `Partition.makeLeader`).
    pub fn new(params: LeaderParams, now_ms: u64) -> Self {
        let isr: BTreeSet<BrokerId> = params.isr.iter().copied().collect();
        let followers = params
            .replicas
            .iter()
            .filter(|&&b| b != params.local_broker)
            .map(|&b| (b, FollowerProgress::reset(now_ms, isr.contains(&b))))
            .collect();
        let mut state = LeaderPartition {
            local_broker: params.local_broker,
            eligible: params.replicas.iter().copied().filter(|&b| b != params.local_broker).collect(),
            replicas: params.replicas,
            leader_epoch: params.leader_epoch,
            partition_epoch: params.partition_epoch,
            leader_epoch_start_offset: params.leader_epoch_start_offset,
            isr: IsrState::Committed { isr },
            log_end_offset: params.log_end_offset,
            high_watermark: params.high_watermark.min(params.log_end_offset).max(0),
            followers,
            min_insync_replicas: params.min_insync_replicas,
            replica_lag_time_max_ms: params.replica_lag_time_max_ms,
            waiters: BTreeMap::new(),
        };
        // The leader is always in the ISR (Kafka asserts it; the controller guarantees it).
        debug_assert!(state.isr.committed().contains(&state.local_broker), "leader not in its ISR");
        if let IsrState::Committed { isr } = &mut state.isr {
            isr.insert(state.local_broker);
        }
        state
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }
    pub fn partition_epoch(&self) -> PartitionEpoch {
        self.partition_epoch
    }
    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }
    pub fn log_end_offset(&self) -> Offset {
        self.log_end_offset
    }
    pub fn isr_state(&self) -> &IsrState {
        &self.isr
    }
    pub fn replicas(&self) -> &[BrokerId] {
        &self.replicas
    }
    pub fn follower(&self, broker: BrokerId) -> Option<&FollowerProgress> {
        self.followers.get(&broker)
    }
    pub fn followers(&self) -> impl Iterator<Item = (BrokerId, &FollowerProgress)> {
        self.followers.iter().map(|(b, p)| (*b, p))
    }
    pub fn pending_waiters(&self) -> usize {
        self.waiters.len()
    }

    /// min(min.insync.replicas, RF).
    pub fn effective_min_isr(&self) -> usize {
        effective_min_isr(self.min_insync_replicas, self.replicas.len())
    }

    /// Strict min ISR (KAFKA-15583): the HW is held while the committed ISR is smaller
    /// than the effective min ISR, so acks=1 records are not exposed to consumers until
    /// enough replicas hold them.
    pub fn is_under_min_isr(&self) -> bool {
        self.isr.committed().len() < self.effective_min_isr()
    }

    /// Changes min.insync.replicas (topic config change).
    pub fn set_min_insync_replicas(&mut self, min_insync_replicas: usize, now_ms: u64) -> Vec<Action> {
        self.min_insync_replicas = min_insync_replicas;
        let mut actions = Vec::new();
        self.fail_waiters_if_under_min(&mut actions);
        self.maybe_increment_high_watermark(now_ms, &mut actions);
        actions
    }

    /// Updates which followers may join the ISR (from broker registrations in metadata).
    /// The HW waits for caught-up followers only while they are eligible (Kafka
    /// `maybeIncrementLeaderHW`'s `isReplicaIsrEligible`), so a fenced or shutting-down one
    /// may release it now: recompute it here rather than at the next fetch or append, which
    /// may never come while acks=all requests wait for it.
    pub fn set_eligible_followers(&mut self, eligible: impl IntoIterator<Item = BrokerId>, now_ms: u64) -> Vec<Action> {
        self.eligible = eligible.into_iter().filter(|&b| b != self.local_broker).collect();
        let mut actions = Vec::new();
        self.maybe_increment_high_watermark(now_ms, &mut actions);
        actions
    }

    /// Pre-append check (Kafka `Partition.appendRecordsToLeader`): acks=all with a
    /// committed ISR below the effective min ISR is rejected before anything is written.
    pub fn check_produce(&self, acks: Acks) -> Result<(), ErrorCode> {
        if acks == Acks::All && self.is_under_min_isr() {
            return Err(ErrorCode::NOT_ENOUGH_REPLICAS);
        }
        Ok(())
    }

    /// The local log grew to `log_end_offset` (after a leader append).
    pub fn on_local_append(&mut self, log_end_offset: Offset, now_ms: u64) -> Vec<Action> {
        debug_assert!(log_end_offset >= self.log_end_offset, "leader LEO went back");
        self.log_end_offset = log_end_offset;
        let mut actions = Vec::new();
        self.maybe_increment_high_watermark(now_ms, &mut actions);
        actions
    }

    /// Parks an acks=all request until HW ≥ `required_offset`; it may complete at once.
    pub fn add_waiter(&mut self, waiter: WaiterId, required_offset: Offset) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.waiter_outcome(required_offset) {
            Some(error) => actions.push(Action::CompleteProduce { waiter, error }),
            None => {
                self.waiters.insert(waiter, Waiter { required_offset });
            }
        }
        actions
    }

    /// Drops a parked request (its deadline passed; the broker answers REQUEST_TIMED_OUT).
    pub fn remove_waiter(&mut self, waiter: WaiterId) -> bool {
        self.waiters.remove(&waiter).is_some()
    }

    /// Leadership lost: every parked request fails with NOT_LEADER_OR_FOLLOWER (Kafka
    /// `DelayedProduce` completes with the partition error when the leader changes).
    pub fn resign(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.waiters)
            .into_keys()
            .map(|waiter| Action::CompleteProduce { waiter, error: ErrorCode::NOT_LEADER_OR_FOLLOWER })
            .collect()
    }

    /// A follower fetched from `fetch_offset` (its LEO). `leader_log_end_offset_at_fetch`
    /// is the leader's LEO when the fetch was served (Kafka `Partition.updateFollowerFetchState`
    /// → `Replica.updateFetchStateOrThrow`, then `maybeExpandIsr`, `maybeIncrementLeaderHW`).
    ///
    /// `broker_epoch` is the follower's broker epoch from the fetch, which the broker has
    /// checked against the metadata (KIP-903, `replica_identity.rs`): a new one means a new
    /// incarnation, whose progress starts over (`FollowerProgress::new_incarnation`).
    pub fn on_follower_fetch(
        &mut self,
        follower: BrokerId,
        broker_epoch: i64,
        fetch_offset: Offset,
        now_ms: u64,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let leader_log_end_offset = self.log_end_offset;
        let Some(progress) = self.followers.get_mut(&follower) else {
            return actions; // not a replica of this partition: the broker answers the error
        };
        match progress.broker_epoch {
            Some(known) if known != broker_epoch => *progress = FollowerProgress::new_incarnation(broker_epoch),
            Some(_) => {}
            // The first fetch under this leadership keeps what `reset` gave ISR members.
            None => progress.broker_epoch = Some(broker_epoch),
        }
        // Kafka Replica.updateFetchStateOrThrow: caught up now if the fetch reached the
        // leader's end; else caught up as of the previous fetch if this one reached the
        // leader's end as it was then. Time-based, not message-count based (KIP-16 era).
        if fetch_offset >= leader_log_end_offset {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= progress.last_fetch_leader_log_end_offset {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.last_fetch_leader_log_end_offset = leader_log_end_offset;
        progress.last_fetch_ms = now_ms;
        progress.log_end_offset = fetch_offset;

        self.maybe_expand_isr(follower, &mut actions);
        self.maybe_increment_high_watermark(now_ms, &mut actions);
        actions
    }

    /// Periodic ISR shrink check, every replica.lag.time.max.ms / 2 (Kafka
    /// `ReplicaManager.maybeShrinkIsr` → `Partition.maybeShrinkIsr`). It first recomputes
    /// the HW: a caught-up follower outside the ISR holds it only until
    /// replica.lag.time.max.ms passes (Kafka `Replica.isCaughtUp` is time-based), and no
    /// fetch or append need come to notice that, even while an ISR change is in flight.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        self.maybe_increment_high_watermark(now_ms, &mut actions);
        if self.isr.is_in_flight() {
            return actions; // one change in flight at a time (KIP-497)
        }
        let committed = self.isr.committed().clone();
        let dropped: Vec<(BrokerId, Offset, u64)> = committed
            .iter()
            .filter(|&&b| b != self.local_broker)
            .filter_map(|&b| {
                let p = self.followers.get(&b)?;
                (!p.is_caught_up(self.log_end_offset, now_ms, self.replica_lag_time_max_ms))
                    .then(|| (b, p.log_end_offset, now_ms.saturating_sub(p.last_caught_up_ms)))
            })
            .collect();
        if dropped.is_empty() {
            return actions;
        }
        let removed: BTreeSet<BrokerId> = dropped.iter().map(|d| d.0).collect();
        let new_isr: Vec<BrokerId> = committed.difference(&removed).copied().collect();
        actions.push(Action::ProposeIsr(self.isr_change(new_isr, IsrChangeKind::Shrink { dropped })));
        self.isr = IsrState::PendingShrink { isr: committed, removed };
        actions
    }

    /// The controller committed a partition state with this leader epoch: our own
    /// AlterPartition, or its own change (fencing a broker removes it from the ISR).
    /// Replaces the ISR, clears any in-flight change, and re-evaluates waiters and HW.
    pub fn on_isr_committed(&mut self, isr: &[BrokerId], partition_epoch: PartitionEpoch, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        if partition_epoch <= self.partition_epoch {
            // Stale or already applied (the AlterPartition answer and the metadata feed
            // both carry a commit): never go back, and never clobber a change in flight
            // with the commit that preceded it (Kafka Partition.makeLeader ignores
            // partition epochs it has seen).
            return actions;
        }
        let mut isr: BTreeSet<BrokerId> = isr.iter().copied().collect();
        isr.insert(self.local_broker);
        self.partition_epoch = partition_epoch;
        self.isr = IsrState::Committed { isr };
        self.fail_waiters_if_under_min(&mut actions);
        self.maybe_increment_high_watermark(now_ms, &mut actions);
        actions
    }

    /// The controller said the proposal was not applied (INELIGIBLE_REPLICA,
    /// OPERATION_NOT_ATTEMPTED), or it never left this broker: drop the pending state (Kafka
    /// `Partition.handleAlterPartitionError`; see `alter_partition_error_action` for the
    /// errors that must not).
    pub fn on_isr_change_rejected(&mut self) {
        self.isr = IsrState::Committed { isr: self.isr.committed().clone() };
    }

    fn isr_change(&self, new_isr: Vec<BrokerId>, kind: IsrChangeKind) -> IsrChange {
        IsrChange {
            old_isr: self.isr.committed().iter().copied().collect(),
            new_isr_broker_epochs: new_isr
                .iter()
                .filter_map(|b| Some((*b, self.followers.get(b)?.broker_epoch?)))
                .collect(),
            new_isr,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            leader_log_end_offset: self.log_end_offset,
            high_watermark: self.high_watermark,
            replica_lag_time_max_ms: self.replica_lag_time_max_ms,
            kind,
        }
    }

    /// Kafka `Partition.maybeExpandIsr` / `isFollowerInSync` / `canAddReplicaToIsr`: a
    /// follower outside the ISR joins once its LEO ≥ HW and ≥ the start offset of the
    /// current leader epoch, if it is eligible and no other change is in flight.
    fn maybe_expand_isr(&mut self, follower: BrokerId, actions: &mut Vec<Action>) {
        if self.isr.is_in_flight() || self.isr.committed().contains(&follower) || !self.eligible.contains(&follower) {
            return;
        }
        let Some(progress) = self.followers.get(&follower) else {
            return;
        };
        let follower_leo = progress.log_end_offset;
        if follower_leo < self.high_watermark || follower_leo < self.leader_epoch_start_offset {
            return;
        }
        let committed = self.isr.committed().clone();
        let mut new_isr: Vec<BrokerId> = committed.iter().copied().collect();
        new_isr.push(follower);
        new_isr.sort_unstable();
        actions.push(Action::ProposeIsr(
            self.isr_change(new_isr, IsrChangeKind::Expand { added: follower, follower_log_end_offset: follower_leo }),
        ));
        self.isr = IsrState::PendingExpand { isr: committed, new_member: follower };
    }

    /// Kafka `Partition.maybeIncrementLeaderHW`: HW = min LEO over the maximal ISR, also
    /// waiting for followers that are caught up and eligible (about to join), never moving
    /// back, and held while under min ISR (strict min ISR, KAFKA-15583).
    fn maybe_increment_high_watermark(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
        if self.is_under_min_isr() {
            return;
        }
        let maximal = self.isr.maximal();
        let mut new_high_watermark = self.log_end_offset;
        for (broker, progress) in &self.followers {
            let waits_to_join = self.eligible.contains(broker)
                && progress.log_end_offset >= 0
                && progress.is_caught_up(self.log_end_offset, now_ms, self.replica_lag_time_max_ms);
            if maximal.contains(broker) || waits_to_join {
                new_high_watermark = new_high_watermark.min(progress.log_end_offset.max(0));
            }
        }
        if new_high_watermark > self.high_watermark {
            self.high_watermark = new_high_watermark;
            debug_assert!(self.high_watermark <= self.log_end_offset, "HW past leader LEO");
            actions.push(Action::HighWatermarkAdvanced { high_watermark: self.high_watermark });
            self.complete_waiters(actions);
        }
    }

    /// Kafka `Partition.checkEnoughReplicasReachOffset`: once HW ≥ required, NONE if the
    /// maximal ISR is at least min ISR, else NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    fn waiter_outcome(&self, required_offset: Offset) -> Option<ErrorCode> {
        if self.high_watermark >= required_offset {
            if self.isr.maximal().len() < self.effective_min_isr() {
                Some(ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND)
            } else {
                Some(ErrorCode::NONE)
            }
        } else if self.isr.maximal().len() < self.effective_min_isr() {
            // Answer at once rather than at the request timeout: the records are in the
            // leader's log, but the ISR they must reach is now below min.insync.replicas.
            Some(ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND)
        } else {
            None
        }
    }

    fn complete_waiters(&mut self, actions: &mut Vec<Action>) {
        let done: Vec<(WaiterId, ErrorCode)> = self
            .waiters
            .iter()
            .filter_map(|(id, w)| self.waiter_outcome(w.required_offset).map(|e| (*id, e)))
            .collect();
        for (waiter, error) in done {
            self.waiters.remove(&waiter);
            actions.push(Action::CompleteProduce { waiter, error });
        }
    }

    /// While acks=all requests wait, the ISR shrank below min.insync.replicas: answer them
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND now, not after the request timeout.
    fn fail_waiters_if_under_min(&mut self, actions: &mut Vec<Action>) {
        if self.isr.maximal().len() < self.effective_min_isr() {
            self.complete_waiters(actions);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: u64 = 10_000;
    /// The broker epoch followers fetch with, unless a test restarts one.
    const EPOCH: i64 = 5;

    fn leader(isr: &[BrokerId], min_isr: usize, leo: Offset) -> LeaderPartition {
        LeaderPartition::new(
            LeaderParams {
                local_broker: 1,
                replicas: vec![1, 2, 3],
                isr: isr.to_vec(),
                leader_epoch: 0,
                partition_epoch: 0,
                leader_epoch_start_offset: 0,
                log_end_offset: leo,
                high_watermark: 0,
                min_insync_replicas: min_isr,
                replica_lag_time_max_ms: LAG,
            },
            1_000,
        )
    }

    fn proposals(actions: &[Action]) -> Vec<IsrChange> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ProposeIsr(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    fn completions(actions: &[Action]) -> Vec<(WaiterId, ErrorCode)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CompleteProduce { waiter, error } => Some((*waiter, *error)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn high_watermark_is_min_leo_over_isr_and_never_moves_back() {
        // Kafka Partition.maybeIncrementLeaderHW.
        let mut l = leader(&[1, 2, 3], 1, 0);
        l.on_local_append(10, 1_000);
        assert_eq!(l.high_watermark(), 0);
        l.on_follower_fetch(2, EPOCH, 10, 1_001);
        assert_eq!(l.high_watermark(), 0, "follower 3 has nothing yet");
        let actions = l.on_follower_fetch(3, EPOCH, 7, 1_002);
        assert_eq!(l.high_watermark(), 7);
        assert!(actions.contains(&Action::HighWatermarkAdvanced { high_watermark: 7 }));
        // A follower that truncates (fetches from lower) never moves the HW back.
        l.on_follower_fetch(3, EPOCH, 5, 1_003);
        assert_eq!(l.high_watermark(), 7);
    }

    #[test]
    fn follower_lagging_longer_than_lag_time_is_shrunk_out() {
        // Kafka Replica.isCaughtUp / Partition.getOutOfSyncReplicas: out of sync when
        // !(LEO == leader LEO || now - lastCaughtUp <= replica.lag.time.max.ms).
        let mut l = leader(&[1, 2, 3], 1, 0);
        l.on_local_append(5, 1_000);
        l.on_follower_fetch(2, EPOCH, 5, 1_100);
        l.on_follower_fetch(3, EPOCH, 0, 1_100); // behind, but was caught up at become-leader (1_000)
        assert!(proposals(&l.on_tick(1_000 + LAG)).is_empty(), "exactly at the bound is in sync");
        l.on_follower_fetch(2, EPOCH, 5, 1_000 + LAG + 1);
        let p = proposals(&l.on_tick(1_000 + LAG + 1));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].old_isr, vec![1, 2, 3]);
        assert_eq!(p[0].new_isr, vec![1, 2]);
        assert!(matches!(&p[0].kind, IsrChangeKind::Shrink { dropped } if dropped[0].0 == 3));
        assert!(p[0].to_string().contains("broker 3 out of sync"));
    }

    #[test]
    fn follower_at_leader_end_is_in_sync_however_old_its_catch_up_time() {
        // Kafka Replica.isCaughtUp: LEO == leader LEO counts as caught up.
        let mut l = leader(&[1, 2, 3], 1, 0);
        l.on_follower_fetch(2, EPOCH, 0, 1_000);
        l.on_follower_fetch(3, EPOCH, 0, 1_000);
        assert!(proposals(&l.on_tick(1_000_000)).is_empty(), "idle partition never shrinks");
    }

    #[test]
    fn last_caught_up_uses_previous_fetch_time_when_follower_reached_old_end() {
        // Kafka Replica.updateFetchStateOrThrow: fetch_offset >= leader LEO at the previous
        // fetch → caught up as of that previous fetch's time.
        let mut l = leader(&[1, 2, 3], 1, 0);
        l.on_local_append(10, 1_000);
        l.on_follower_fetch(2, EPOCH, 0, 2_000); // leader LEO 10 at this fetch
        l.on_local_append(20, 2_500);
        l.on_follower_fetch(2, EPOCH, 10, 3_000); // reached 10 = leader LEO at previous fetch
        assert_eq!(l.follower(2).unwrap().last_caught_up_ms, 2_000);
        l.on_follower_fetch(2, EPOCH, 20, 3_500);
        assert_eq!(l.follower(2).unwrap().last_caught_up_ms, 3_500);
    }

    #[test]
    fn new_leader_treats_isr_followers_as_caught_up_now() {
        // Kafka Replica.resetReplicaState on makeLeader.
        let l = leader(&[1, 2], 1, 50);
        assert_eq!(l.follower(2).unwrap().last_caught_up_ms, 1_000);
        assert_eq!(l.follower(3).unwrap().last_caught_up_ms, 0);
    }

    #[test]
    fn a_new_broker_epoch_starts_the_followers_progress_over() {
        // KIP-903: a restarted follower (new broker epoch) may have lost its log's tail;
        // what its previous incarnation reached must not count.
        let mut l = leader(&[1, 2], 1, 0);
        l.on_local_append(10, 20_000);
        l.on_follower_fetch(2, EPOCH, 10, 20_001);
        l.on_follower_fetch(3, EPOCH, 10, 20_002); // caught up: expand proposed
        l.on_isr_change_rejected();
        assert_eq!(l.follower(3).unwrap().last_caught_up_ms, 20_002);

        // 3 restarts with a shorter log: its LEO is the new fetch's, and it is not caught up.
        assert!(proposals(&l.on_follower_fetch(3, 9, 7, 20_100)).is_empty(), "below the HW");
        let restarted = *l.follower(3).unwrap();
        assert_eq!((restarted.log_end_offset, restarted.last_caught_up_ms), (7, 0));
        assert_eq!((restarted.last_fetch_leader_log_end_offset, restarted.broker_epoch), (10, Some(9)));
        // Without the reset 3 would count as caught up (as of 20_002) and hold the HW back
        // as a follower about to join; a reset one at LEO 7 does not.
        l.on_local_append(12, 20_101);
        l.on_follower_fetch(2, EPOCH, 12, 20_102);
        assert_eq!(l.high_watermark(), 12);

        // An ISR member's restart likewise: 2 is out of sync at once, not after the lag time.
        l.on_follower_fetch(2, 8, 4, 20_200);
        let p = proposals(&l.on_tick(20_200));
        assert_eq!(p.len(), 1);
        assert!(matches!(&p[0].kind, IsrChangeKind::Shrink { dropped } if dropped[0].0 == 2), "{p:?}");

        // The same epoch again is the same incarnation: progress goes on.
        l.on_isr_change_rejected();
        l.on_follower_fetch(3, 9, 12, 20_300);
        assert_eq!(l.follower(3).unwrap().last_caught_up_ms, 20_300);
    }

    #[test]
    fn isr_change_names_the_broker_epoch_each_member_fetched_with() {
        // Kafka AlterPartition NewIsrWithEpochs (KIP-903): every member but the leader whose
        // epoch is known, the added one always.
        let mut l = leader(&[1, 2], 1, 0);
        l.on_follower_fetch(2, 5, 0, 1_000);
        let p = proposals(&l.on_follower_fetch(3, 9, 0, 1_001));
        assert_eq!(p[0].new_isr, vec![1, 2, 3]);
        assert_eq!(p[0].new_isr_broker_epochs, vec![(2, 5), (3, 9)]);
        assert!(p[0].to_string().contains("broker 3 (broker epoch 9) caught up"), "{}", p[0]);

        // A member that has not fetched under this leadership is not named.
        let mut l = leader(&[1, 2, 3], 1, 0);
        l.on_local_append(5, 1_000);
        l.on_follower_fetch(3, 7, 5, 1_000 + LAG + 1);
        let p = proposals(&l.on_tick(1_000 + LAG + 1));
        assert_eq!(p[0].new_isr, vec![1, 3]);
        assert_eq!(p[0].new_isr_broker_epochs, vec![(3, 7)]);
        let mut l = leader(&[1, 2, 3], 1, 0);
        l.on_local_append(5, 1_000);
        let p = proposals(&l.on_tick(1_000 + LAG + 1));
        assert_eq!((p[0].new_isr.clone(), p[0].new_isr_broker_epochs.clone()), (vec![1], vec![]));
    }

    #[test]
    fn expand_needs_leo_at_hw_and_epoch_start_and_eligibility() {
        // Kafka Partition.isFollowerInSync + canAddReplicaToIsr (KIP-841).
        let mut l = leader(&[1, 2], 1, 0);
        l.on_local_append(10, 1_000);
        l.on_follower_fetch(2, EPOCH, 10, 1_001);
        assert_eq!(l.high_watermark(), 10);
        assert!(proposals(&l.on_follower_fetch(3, EPOCH, 9, 1_002)).is_empty(), "below HW");
        l.set_eligible_followers([2], 1_002);
        assert!(proposals(&l.on_follower_fetch(3, EPOCH, 10, 1_003)).is_empty(), "fenced broker is not eligible");
        l.set_eligible_followers([2, 3], 1_003);
        let p = proposals(&l.on_follower_fetch(3, EPOCH, 10, 1_004));
        assert_eq!(p[0].new_isr, vec![1, 2, 3]);
        assert!(matches!(l.isr_state(), IsrState::PendingExpand { new_member: 3, .. }));
    }

    #[test]
    fn expand_waits_for_leader_epoch_start_offset() {
        // Kafka Partition.isFollowerInSync: followerEndOffset >= leaderEpochStartOffset.
        let mut l = LeaderPartition::new(
            LeaderParams {
                local_broker: 1,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2],
                leader_epoch: 3,
                partition_epoch: 5,
                leader_epoch_start_offset: 20,
                log_end_offset: 20,
                high_watermark: 10,
                min_insync_replicas: 1,
                replica_lag_time_max_ms: LAG,
            },
            1_000,
        );
        assert!(proposals(&l.on_follower_fetch(3, EPOCH, 15, 1_001)).is_empty(), "LEO ≥ HW but < epoch start");
        assert_eq!(proposals(&l.on_follower_fetch(3, EPOCH, 20, 1_002)).len(), 1);
    }

    #[test]
    fn one_isr_change_in_flight_and_maximal_isr_holds_hw() {
        // KIP-497: while a shrink is pending the HW still counts the removed member;
        // no second change is proposed until the first is committed or rejected.
        let mut l = leader(&[1, 2, 3], 1, 0);
        l.on_local_append(10, 1_000);
        l.on_follower_fetch(2, EPOCH, 10, 20_000);
        assert_eq!(proposals(&l.on_tick(20_000)).len(), 1); // 3 is dropped
        assert!(l.isr_state().is_in_flight());
        assert!(proposals(&l.on_tick(40_000)).is_empty());
        assert_eq!(l.high_watermark(), 0, "removed member 3 (LEO -1) still holds the HW");
        let actions = l.on_isr_committed(&[1, 2], 1, 20_001);
        assert!(actions.contains(&Action::HighWatermarkAdvanced { high_watermark: 10 }));
        // A pending expand counts the new member at once.
        l.on_follower_fetch(3, EPOCH, 10, 20_002);
        assert_eq!(l.isr_state().maximal().len(), 3);
        assert_eq!(l.isr_state().committed().len(), 2);
    }

    #[test]
    fn rejected_isr_change_returns_to_committed_state() {
        // Kafka Partition.handleAlterPartitionError: clear pending, wait for metadata.
        let mut l = leader(&[1, 2, 3], 1, 0);
        l.on_local_append(1, 1_000);
        l.on_tick(50_000);
        l.on_isr_change_rejected();
        assert!(!l.isr_state().is_in_flight());
        assert_eq!(l.isr_state().committed().len(), 3);
    }

    #[test]
    fn stale_partition_epoch_is_ignored() {
        let mut l = leader(&[1, 2, 3], 1, 0);
        l.on_isr_committed(&[1, 2], 4, 1_000);
        l.on_isr_committed(&[1, 2, 3], 3, 1_001);
        assert_eq!(l.isr_state().committed().len(), 2);
        assert_eq!(l.partition_epoch(), 4);
    }

    #[test]
    fn acks_all_below_min_isr_is_rejected_before_append() {
        // Kafka Partition.appendRecordsToLeader: inSyncSize < minIsr && acks == -1 →
        // NotEnoughReplicasException, nothing written; acks=1 and acks=0 pass.
        let l = leader(&[1], 2, 0);
        assert_eq!(l.check_produce(Acks::All), Err(ErrorCode::NOT_ENOUGH_REPLICAS));
        assert_eq!(l.check_produce(Acks::Leader), Ok(()));
        assert_eq!(l.check_produce(Acks::None), Ok(()));
        let l = leader(&[1, 2], 2, 0);
        assert_eq!(l.check_produce(Acks::All), Ok(()));
        // min.insync=1 with ISR=[leader] still accepts acks=all.
        let l = leader(&[1], 1, 0);
        assert_eq!(l.check_produce(Acks::All), Ok(()));
    }

    #[test]
    fn min_isr_above_replication_factor_is_capped() {
        // Kafka Partition.effectiveMinIsr = min(min.insync.replicas, RF).
        let l = leader(&[1, 2, 3], 5, 0);
        assert_eq!(l.effective_min_isr(), 3);
        assert_eq!(l.check_produce(Acks::All), Ok(()));
    }

    #[test]
    fn acks_all_completes_when_hw_passes_last_offset() {
        // Kafka DelayedProduce.tryComplete → checkEnoughReplicasReachOffset(requiredOffset).
        let mut l = leader(&[1, 2, 3], 2, 0);
        l.on_local_append(3, 1_000);
        assert!(completions(&l.add_waiter(7, 3)).is_empty());
        assert!(completions(&l.on_follower_fetch(2, EPOCH, 3, 1_001)).is_empty(), "3 not there yet");
        assert_eq!(completions(&l.on_follower_fetch(3, EPOCH, 3, 1_002)), vec![(7, ErrorCode::NONE)]);
        assert_eq!(l.pending_waiters(), 0);
    }

    #[test]
    fn isr_shrinking_below_min_fails_waiters_at_once_with_after_append() {
        // The records are in the leader's log but the ISR fell below min.insync.replicas:
        // NOT_ENOUGH_REPLICAS_AFTER_APPEND now, not at the request timeout.
        let mut l = leader(&[1, 2, 3], 2, 0);
        l.on_local_append(3, 1_000);
        l.add_waiter(1, 3);
        l.on_isr_committed(&[1, 2], 1, 1_500); // still ≥ 2: keep waiting
        assert_eq!(l.pending_waiters(), 1);
        let actions = l.on_isr_committed(&[1], 2, 2_000);
        assert_eq!(completions(&actions), vec![(1, ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND)]);
        // And the HW stays held (strict min ISR), so consumers do not see the records.
        assert_eq!(l.high_watermark(), 0);
        assert_eq!(l.check_produce(Acks::All), Err(ErrorCode::NOT_ENOUGH_REPLICAS));
    }

    #[test]
    fn hw_is_held_while_isr_below_min_then_advances_when_it_recovers() {
        // KAFKA-15583 strict min ISR.
        let mut l = leader(&[1], 2, 0);
        l.on_local_append(5, 1_000);
        assert_eq!(l.high_watermark(), 0, "acks=1 record not exposed with ISR [leader], min 2");
        assert!(l.is_under_min_isr());
        let p = proposals(&l.on_follower_fetch(2, EPOCH, 5, 1_100));
        assert_eq!(p[0].new_isr, vec![1, 2], "caught-up follower rejoins");
        assert_eq!(l.high_watermark(), 0, "still held until the expand is committed");
        let actions = l.on_isr_committed(&[1, 2], 1, 1_200);
        assert!(actions.contains(&Action::HighWatermarkAdvanced { high_watermark: 5 }));
    }

    #[test]
    fn follower_joining_the_isr_holds_the_hw() {
        // Kafka maybeIncrementLeaderHW uses the maximal ISR (pending expand included) and
        // also waits for a caught-up, ISR-eligible replica about to join.
        let mut l = leader(&[1, 2], 1, 0);
        l.on_follower_fetch(3, EPOCH, 0, 1_000); // caught up at LEO 0: expand to [1,2,3] proposed
        assert!(matches!(l.isr_state(), IsrState::PendingExpand { new_member: 3, .. }));
        l.on_local_append(4, 1_001);
        l.on_follower_fetch(2, EPOCH, 4, 1_002);
        assert_eq!(l.high_watermark(), 0, "3 may already be in the committed ISR");
        // The expand is rejected and 3 is fenced: the HW no longer waits for it.
        l.on_isr_change_rejected();
        l.set_eligible_followers([2], 1_003);
        assert_eq!(l.high_watermark(), 4);
    }

    #[test]
    fn resigning_fails_waiters_with_not_leader() {
        let mut l = leader(&[1, 2, 3], 1, 0);
        l.on_local_append(1, 1_000);
        l.add_waiter(9, 1);
        assert_eq!(completions(&l.resign()), vec![(9, ErrorCode::NOT_LEADER_OR_FOLLOWER)]);
    }

    #[test]
    fn timed_out_waiter_is_removed() {
        let mut l = leader(&[1, 2, 3], 1, 0);
        l.on_local_append(1, 1_000);
        l.add_waiter(9, 1);
        assert!(l.remove_waiter(9));
        assert!(!l.remove_waiter(9));
        assert!(completions(&l.on_follower_fetch(2, EPOCH, 1, 1_001)).is_empty());
    }

    /// ISR [1,2] at LEO 4, both caught up, with waiter 7 parked for offset 4; broker 3 is
    /// outside the ISR (its expand was not applied) but caught up and eligible, so the HW
    /// waits at 0 for it (Kafka `maybeIncrementLeaderHW`'s `shouldWaitForReplicaToJoinIsr`).
    fn leader_with_hw_held_by_a_joining_follower() -> LeaderPartition {
        let mut l = leader(&[1, 2], 2, 0);
        l.on_follower_fetch(3, EPOCH, 0, 1_000); // caught up at LEO 0: an expand is proposed
        l.on_isr_change_rejected();
        l.on_local_append(4, 1_001);
        assert!(completions(&l.add_waiter(7, 4)).is_empty());
        l.on_follower_fetch(2, EPOCH, 4, 1_002);
        assert_eq!(l.high_watermark(), 0, "3 may join the ISR: the HW waits for it");
        l
    }

    #[test]
    fn fencing_a_joining_follower_advances_the_hw_without_waiting_for_a_fetch() {
        let mut l = leader_with_hw_held_by_a_joining_follower();
        let actions = l.set_eligible_followers([2], 1_003);
        assert!(actions.contains(&Action::HighWatermarkAdvanced { high_watermark: 4 }), "{actions:?}");
        assert_eq!(completions(&actions), vec![(7, ErrorCode::NONE)]);
        assert!(proposals(&actions).is_empty());
    }

    #[test]
    fn the_tick_advances_the_hw_once_a_joining_follower_falls_behind() {
        // Kafka Replica.isCaughtUp is time-based: 3 stops holding the HW when
        // replica.lag.time.max.ms passes without it catching up, fetch or no fetch.
        let mut l = leader_with_hw_held_by_a_joining_follower();
        assert!(l.on_tick(1_000 + LAG).is_empty(), "3 is still caught up at the bound");
        let actions = l.on_tick(1_000 + LAG + 1);
        assert!(actions.contains(&Action::HighWatermarkAdvanced { high_watermark: 4 }), "{actions:?}");
        assert_eq!(completions(&actions), vec![(7, ErrorCode::NONE)]);
        assert!(proposals(&actions).is_empty(), "2 is in sync and 3 is not in the ISR");
    }

    #[test]
    fn the_tick_advances_the_hw_while_an_isr_change_is_in_flight() {
        // The in-flight change stops a second proposal (KIP-497), not the HW.
        let mut l = leader(&[1, 2], 1, 0);
        let t = 1_000 + LAG + 1;
        assert_eq!(proposals(&l.on_tick(t)).len(), 1, "2 never fetched: its shrink is proposed");
        l.on_follower_fetch(3, EPOCH, 0, t + 1); // caught up; its expand waits for the shrink
        l.on_follower_fetch(2, EPOCH, 0, t + 2);
        l.on_local_append(4, t + 3);
        assert!(completions(&l.add_waiter(7, 4)).is_empty());
        l.on_follower_fetch(2, EPOCH, 4, t + 4);
        assert_eq!(l.high_watermark(), 0, "3 is caught up and eligible: the HW waits for it");
        assert!(l.isr_state().is_in_flight(), "the shrink's answer has not come");
        let actions = l.on_tick(t + 1 + LAG + 1);
        assert!(actions.contains(&Action::HighWatermarkAdvanced { high_watermark: 4 }), "{actions:?}");
        assert_eq!(completions(&actions), vec![(7, ErrorCode::NONE)]);
        assert!(proposals(&actions).is_empty());
    }

    #[test]
    fn lowering_min_insync_replicas_advances_the_held_hw() {
        // Strict min ISR (KAFKA-15583) holds the HW; a lower min releases it at once.
        let mut l = leader(&[1], 2, 0);
        l.on_local_append(3, 1_000);
        assert_eq!(l.high_watermark(), 0);
        let actions = l.set_min_insync_replicas(1, 1_001);
        assert_eq!(actions, vec![Action::HighWatermarkAdvanced { high_watermark: 3 }]);
    }
}
