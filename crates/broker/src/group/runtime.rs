//! The coordinator's async shell around the pure state machine (`coordinator.rs`): it
//! locates a group's offsets partition through the `GroupLog`, keeps the channels of
//! requests that wait (the join barrier, SyncGroup waiting for the leader), appends what the
//! machine asks to store and reports the outcome back, and runs the timers from a task that
//! ticks every 100 ms. Both the Kafka listener and the gRPC group RPCs call it.
//!
//! Ordering (Kafka appends under the group lock too): every request's step on the machine,
//! and the synchronous half of every append it causes, run under one lock when the request
//! is called, so the log holds records in decision order and a connection's pipelined
//! requests act in the order they were read; only the acks=all waits happen later. A
//! partition's groups serve requests only once the machine has loaded them at the epoch the
//! storage reports (`Coordinator::loaded_epoch`).
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use insync_types::ErrorCode;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use super::classic::Token;
use super::coordinator::{
    Coordinator, CoordinatorConfig, Effect, GroupDescription, JoinRequest, JoinResult, LoadedAt, MemberRef, Reply,
    StoreDone, SyncRequest, SyncResult,
};
pub use super::offsets::CommitResults;
use super::offsets::PendingCommit;
use super::records::{self, GroupRecord, OffsetValue};
use super::storage::ShardEvent;
use super::{AppendWait, GroupLog};

/// How often the timers run (session, rebalance, initial-delay and pending-member expiry).
const TICK: Duration = Duration::from_millis(100);

struct Inner {
    machine: Coordinator,
    waiters: HashMap<Token, oneshot::Sender<Reply>>,
    next_token: Token,
}

/// The group coordinator of one broker (shared as `Arc`).
pub struct GroupCoordinator {
    inner: Mutex<Inner>,
    log: Arc<dyn GroupLog>,
    started: Instant,
    started_wall_ms: i64,
    /// Bumped whenever a commit's append finishes (OffsetFetch waits for earlier commits).
    commits_done: watch::Sender<u64>,
}

impl GroupCoordinator {
    pub fn new(log: Arc<dyn GroupLog>, config: CoordinatorConfig) -> Arc<GroupCoordinator> {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let seed = uuid::Uuid::new_v4().as_u64_pair().0;
        Arc::new(GroupCoordinator {
            inner: Mutex::new(Inner {
                machine: Coordinator::new(config, seed),
                waiters: HashMap::new(),
                next_token: 0,
            }),
            log,
            started: Instant::now(),
            started_wall_ms: wall,
            commits_done: watch::channel(0).0,
        })
    }

    /// Wall-clock milliseconds that never go backwards (timers and record timestamps).
    pub fn now(&self) -> i64 {
        self.started_wall_ms.saturating_add(self.started.elapsed().as_millis() as i64)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The group's offsets partition and its leader epoch, if this broker coordinates it
    /// (NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS / COORDINATOR_NOT_AVAILABLE otherwise).
    pub fn locate(&self, group_id: &str) -> Result<(i32, i32), ErrorCode> {
        // A group id is a record key: one longer than a record's int16-framed string cannot
        // be stored (Kafka's request parser refuses it; compact strings are not capped here).
        if group_id.is_empty() || !records::fits(group_id) {
            return Err(ErrorCode::INVALID_GROUP_ID);
        }
        let partition = self.log.partition_for(group_id)?;
        let epoch = self.log.check_loaded(partition)?;
        Ok((partition, epoch))
    }

    /// The machine, locked, for a request on `group_id`, with the group's partition: only if
    /// the machine holds that partition's groups as loaded at the storage's current epoch
    /// (else COORDINATOR_LOAD_IN_PROGRESS: the load is still being applied).
    fn lock_group(&self, group_id: &str) -> Result<(MutexGuard<'_, Inner>, i32, i32), ErrorCode> {
        let (partition, epoch) = self.locate(group_id)?;
        let inner = self.lock();
        if inner.machine.loaded_epoch(partition) != Some(epoch) {
            return Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS);
        }
        Ok((inner, partition, epoch))
    }

    /// Delivers the machine's effects while still holding the lock (stores are appended in
    /// decision order), then lets go of it and waits for the appends in the background.
    fn finish(self: &Arc<Self>, mut inner: MutexGuard<'_, Inner>, effects: Vec<Effect>) {
        let waits = deliver(&mut inner, &*self.log, effects, self.now());
        drop(inner);
        for wait in waits {
            self.spawn_store_wait(wait);
        }
    }

    /// Runs `f` on the machine (timers, load events), then `finish`.
    fn with_machine<T>(self: &Arc<Self>, f: impl FnOnce(&mut Coordinator, i64, &mut Vec<Effect>) -> T) -> T {
        let now = self.now();
        let mut effects = Vec::new();
        let mut inner = self.lock();
        let result = f(&mut inner.machine, now, &mut effects);
        self.finish(inner, effects);
        result
    }

    fn register(inner: &mut Inner) -> (Token, oneshot::Receiver<Reply>) {
        let (tx, rx) = oneshot::channel();
        inner.next_token = inner.next_token.wrapping_add(1);
        let token = inner.next_token;
        inner.waiters.insert(token, tx);
        (token, rx)
    }

    /// Registers a waiter and runs `step` with its token on the group's machine, now; the
    /// returned channel gets the answer.
    fn start_waiting(
        self: &Arc<Self>,
        group_id: &str,
        step: impl FnOnce(&mut Coordinator, i32, Token, i64, &mut Vec<Effect>),
    ) -> Result<oneshot::Receiver<Reply>, ErrorCode> {
        let now = self.now();
        let (mut inner, partition, _) = self.lock_group(group_id)?;
        let (token, rx) = Self::register(&mut inner);
        let mut effects = Vec::new();
        step(&mut inner.machine, partition, token, now, &mut effects);
        self.finish(inner, effects);
        Ok(rx)
    }

    /// JoinGroup: acted on now (request order), answered when the future resolves.
    pub fn join(self: &Arc<Self>, mut request: JoinRequest) -> impl Future<Output = JoinResult> + Send + 'static {
        let member_id = request.member_id.clone();
        let group_id = request.group_id.clone();
        let started = self.start_waiting(&group_id, move |m, partition, token, now, out| {
            request.partition = partition;
            m.join(request, token, now, out)
        });
        async move {
            match started {
                Err(error) => JoinResult::error(error, &member_id),
                Ok(rx) => match rx.await {
                    Ok(Reply::Join(result)) => result,
                    _ => JoinResult::error(ErrorCode::COORDINATOR_NOT_AVAILABLE, &member_id),
                },
            }
        }
    }

    /// SyncGroup: acted on now, answered when the future resolves.
    pub fn sync(self: &Arc<Self>, request: SyncRequest) -> impl Future<Output = SyncResult> + Send + 'static {
        let group_id = request.group_id.clone();
        let started = self.start_waiting(&group_id, move |m, _, token, now, out| m.sync(request, token, now, out));
        async move {
            match started {
                // Kafka `handleSyncGroup`: the rebalance state was lost with the load; older
                // clients do not expect COORDINATOR_LOAD_IN_PROGRESS here, they rejoin.
                Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS) => SyncResult::error(ErrorCode::REBALANCE_IN_PROGRESS),
                Err(error) => SyncResult::error(error),
                Ok(rx) => match rx.await {
                    Ok(Reply::Sync(result)) => result,
                    _ => SyncResult::error(ErrorCode::COORDINATOR_NOT_AVAILABLE),
                },
            }
        }
    }

    pub fn heartbeat(self: &Arc<Self>, request: MemberRef) -> ErrorCode {
        let now = self.now();
        match self.lock_group(&request.group_id) {
            Ok((mut inner, _, _)) => inner.machine.heartbeat(&request, now),
            // Kafka `handleHeartbeat`: while the group loads, answer blindly NONE.
            Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS) => ErrorCode::NONE,
            Err(error) => error,
        }
    }

    /// LeaveGroup: the group-level error, or one error per (member id, instance id).
    pub fn leave(
        self: &Arc<Self>,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        let now = self.now();
        let (mut inner, _, _) = self.lock_group(group_id)?;
        let mut effects = Vec::new();
        let result = inner.machine.leave(group_id, leaving, now, &mut effects);
        self.finish(inner, effects);
        result
    }

    /// OffsetCommit: decided and appended now, answered once stored; the offsets become
    /// visible then (the completion runs as its own task, even if the client goes away).
    pub fn commit(
        self: &Arc<Self>,
        request: MemberRef,
        offsets: Vec<(String, i32, OffsetValue)>,
    ) -> impl Future<Output = Result<CommitResults, ErrorCode>> + Send + 'static {
        let started = self.start_commit(&request, offsets).map(|(results, pending)| {
            let finished = pending.map(|(pending, wait)| {
                let this = self.clone();
                tokio::spawn(async move {
                    let outcome = wait.await;
                    this.lock().machine.finish_commit(pending, outcome.is_ok());
                    this.commits_done.send_modify(|n| *n = n.wrapping_add(1));
                    outcome
                })
            });
            (results, finished)
        });
        let group_id = request.group_id;
        async move {
            let (mut results, finished) = started?;
            let Some(finished) = finished else { return Ok(results) };
            let outcome = finished.await.unwrap_or(Err(ErrorCode::UNKNOWN_SERVER_ERROR));
            if let Err(error) = outcome {
                warn!(group = %group_id, %error, "offset commit not stored");
                for result in results.iter_mut().filter(|r| r.2 == ErrorCode::NONE) {
                    result.2 = error;
                }
            }
            Ok(results)
        }
    }

    /// The decision and the append of a commit, under the lock.
    #[allow(clippy::type_complexity)]
    fn start_commit(
        &self,
        request: &MemberRef,
        offsets: Vec<(String, i32, OffsetValue)>,
    ) -> Result<(CommitResults, Option<(PendingCommit, AppendWait)>), ErrorCode> {
        let now = self.now();
        let (mut inner, partition, epoch) = self.lock_group(&request.group_id)?;
        let (mut results, pending) = inner.machine.prepare_commit(request, partition, offsets, now)?;
        let Some(pending) = pending else { return Ok((results, None)) };
        match self.log.append(partition, epoch, Coordinator::commit_records(&pending)) {
            Ok(wait) => Ok((results, Some((pending, wait)))),
            Err(error) => {
                warn!(group = %request.group_id, %error, "offset commit not appended");
                inner.machine.finish_commit(pending, false);
                for result in results.iter_mut().filter(|r| r.2 == ErrorCode::NONE) {
                    result.2 = error;
                }
                Ok((results, None))
            }
        }
    }

    /// OffsetFetch: (topic, partition, committed) for the named partitions, or all.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<(String, i32, Option<OffsetValue>)>, ErrorCode> {
        let (inner, _, _) = self.lock_group(group_id)?;
        Ok(inner.machine.fetch_offsets(group_id, topics))
    }

    /// OffsetFetch in request order: answered once every commit of the group decided before
    /// it is acknowledged or failed, so a pipelined commit then fetch sees the commit (Kafka
    /// gets this by handling a connection's requests one at a time).
    pub fn fetch_offsets_after_commits(
        self: &Arc<Self>,
        group_id: String,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> impl Future<Output = Result<Vec<(String, i32, Option<OffsetValue>)>, ErrorCode>> + Send + 'static {
        let mut commits = self.commits_done.subscribe();
        let barrier = self.lock_group(&group_id).map(|(inner, _, _)| inner.machine.next_seq.wrapping_add(1));
        let this = self.clone();
        async move {
            let barrier = barrier?;
            loop {
                {
                    let (inner, _, _) = this.lock_group(&group_id)?;
                    if !inner.machine.commit_pending_before(&group_id, barrier) {
                        return Ok(inner.machine.fetch_offsets(&group_id, topics.as_deref()));
                    }
                }
                if commits.changed().await.is_err() {
                    return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
                }
            }
        }
    }

    /// ListGroups: the groups this broker coordinates (Kafka: clients ask every broker).
    pub fn list(&self, states: &[String]) -> Vec<(String, String, &'static str)> {
        self.lock().machine.list(states)
    }

    pub fn describe(&self, group_id: &str) -> Result<GroupDescription, ErrorCode> {
        let (inner, _, _) = self.lock_group(group_id)?;
        Ok(inner.machine.describe(group_id))
    }

    /// DeleteGroups for one group: tombstones for its offsets and metadata, appended now;
    /// the group leaves memory only if the append started (else it would come back on reload).
    pub fn delete(self: &Arc<Self>, group_id: &str) -> impl Future<Output = ErrorCode> + Send + 'static {
        let started = self.start_delete(group_id);
        async move {
            match started {
                Ok(wait) => wait.await.err().unwrap_or(ErrorCode::NONE),
                Err(error) => error,
            }
        }
    }

    fn start_delete(&self, group_id: &str) -> Result<AppendWait, ErrorCode> {
        let (mut inner, partition, epoch) = self.lock_group(group_id)?;
        let (p, tombstones) = inner.machine.delete_records(group_id)?;
        debug_assert_eq!(p, partition);
        let wait = self.log.append(partition, epoch, tombstones)?;
        inner.machine.remove_group(group_id);
        info!(group = group_id, "group deleted");
        Ok(wait)
    }

    /// This broker now coordinates `partition` at `epoch` (see `ShardEvent::Loaded`). Records
    /// of groups the log places on another partition are not loaded (a placement it cannot
    /// tell right now keeps the record: the storage just loaded this partition).
    pub fn loaded(self: &Arc<Self>, partition: i32, epoch: i32, records: Vec<GroupRecord>) {
        let log = self.log.clone();
        let owns = move |group: &str| log.partition_for(group).map_or(true, |p| p == partition);
        self.with_machine(|m, now, out| m.load(partition, epoch, records, &owns, now, out));
    }

    /// `partition` moved away (see `ShardEvent::Unloaded`).
    pub fn unloaded(self: &Arc<Self>, partition: i32) {
        self.with_machine(|m, _, out| m.unload(partition, out));
    }

    /// Applies the storage's load/unload events until it stops sending them.
    pub async fn run_events(self: Arc<Self>, mut events: tokio::sync::mpsc::UnboundedReceiver<ShardEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                ShardEvent::Loaded { partition, leader_epoch, records } => {
                    debug!(partition, leader_epoch, records = records.len(), "loading consumer groups");
                    self.loaded(partition, leader_epoch, records);
                }
                ShardEvent::Unloaded { partition } => self.unloaded(partition),
            }
        }
    }

    /// One run of the timers (see `Coordinator::tick`).
    pub fn tick(self: &Arc<Self>) {
        self.with_machine(|m, now, out| m.tick(now, out));
    }

    /// Runs the timers until `stop` turns true.
    pub async fn run_timers(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => self.tick(),
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Waits for a group metadata append, then tells the machine how it went, unless the
    /// partition was unloaded or reloaded meanwhile, even at the same epoch (its groups are
    /// other objects then).
    fn spawn_store_wait(self: &Arc<Self>, wait: StoreWait) {
        let this = self.clone();
        tokio::spawn(async move {
            let StoreWait { group_id, partition, loaded_at, wait, done } = wait;
            let result = wait.await;
            match &result {
                Err(error) => warn!(group = %group_id, %error, "group metadata not stored"),
                Ok(()) => debug!(group = %group_id, "group metadata stored"),
            }
            let now = this.now();
            let mut inner = this.lock();
            if inner.machine.loaded_at(partition) != Some(loaded_at) {
                return;
            }
            let mut effects = Vec::new();
            inner.machine.store_done(&group_id, done, result, now, &mut effects);
            this.finish(inner, effects);
        });
    }
}

/// A group metadata append started, and what to do once it is acknowledged.
struct StoreWait {
    group_id: String,
    partition: i32,
    /// The load of the partition the append was decided under.
    loaded_at: LoadedAt,
    wait: AppendWait,
    done: StoreDone,
}

/// Answers waiting requests and starts the appends the machine asked for, in order, at the
/// epoch the group's partition is loaded at; an append that cannot start fails its store
/// at once (which may cause more effects). Returns the appends to wait for.
fn deliver(inner: &mut Inner, log: &dyn GroupLog, effects: Vec<Effect>, now: i64) -> Vec<StoreWait> {
    let mut waits = Vec::new();
    let mut queue = std::collections::VecDeque::from(effects);
    while let Some(effect) = queue.pop_front() {
        match effect {
            Effect::Reply(token, reply) => {
                if let Some(tx) = inner.waiters.remove(&token) {
                    // The client may be gone (connection closed): nothing to answer then.
                    let _ = tx.send(reply);
                }
            }
            Effect::Store { group_id, partition, records, done } => {
                let started = match inner.machine.loaded_at(partition) {
                    Some(at) => log.append(partition, at.epoch, records).map(|wait| (at, wait)),
                    None => Err(ErrorCode::NOT_COORDINATOR),
                };
                match started {
                    Ok((loaded_at, wait)) => waits.push(StoreWait { group_id, partition, loaded_at, wait, done }),
                    Err(error) => {
                        warn!(group = %group_id, %error, "group metadata not appended");
                        let mut more = Vec::new();
                        inner.machine.store_done(&group_id, done, Err(error), now, &mut more);
                        queue.extend(more);
                    }
                }
            }
        }
    }
    waits
}
