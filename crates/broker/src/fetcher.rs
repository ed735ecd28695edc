//! Follower replication: one fetcher task per leader broker (Kafka `ReplicaFetcherThread` /
//! `AbstractFetcherThread`), long-polling Fetch for every partition this broker follows
//! from that leader, appending what comes back, adopting the leader's HW, and truncating
//! by leader epoch when the leader reports a diverging epoch (KIP-101/KIP-279/KIP-320).
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use insync_proto as pb;
use insync_proto::broker_client::BrokerClient;
use insync_replication::{follower_high_watermark, truncation_offset, EpochEndOffset};
use insync_types::{BrokerId, ErrorCode, TopicPartition};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::fetch_limits::replica_fetch_max_bytes;
use crate::replica_manager::{FollowerAssignment, ReplicaManager};

/// Starts and stops fetchers as the follower assignment changes; ends with `shutdown`.
pub async fn run_fetcher_manager(
    replica_manager: Arc<ReplicaManager>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut assignment = replica_manager.subscribe_follower_assignment();
    let mut fetchers: HashMap<BrokerId, JoinHandle<()>> = HashMap::new();
    loop {
        let leaders: Vec<BrokerId> = assignment.borrow_and_update().keys().copied().collect();
        fetchers.retain(|leader, handle| {
            let keep = leaders.contains(leader) && !handle.is_finished();
            if !keep {
                handle.abort();
            }
            keep
        });
        for leader in leaders {
            fetchers.entry(leader).or_insert_with(|| {
                info!("starting fetcher for leader broker {leader}");
                tokio::spawn(run_fetcher(
                    replica_manager.clone(),
                    leader,
                    replica_manager.subscribe_follower_assignment(),
                ))
            });
        }
        tokio::select! {
            changed = assignment.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    for (_, handle) in fetchers {
        handle.abort();
    }
}

async fn connect(address: &str) -> Result<BrokerClient<Channel>, tonic::transport::Error> {
    let channel = pb::endpoint(address)?.connect().await?;
    Ok(BrokerClient::new(channel)
        .max_decoding_message_size(pb::MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(pb::MAX_GRPC_MESSAGE_BYTES))
}

/// The order in which a fetcher lists its partitions. A partition that returned data moves to
/// the end (Kafka `AbstractFetcherThread.processFetchRequest` →
/// `PartitionStates.updateAndMoveToEnd`): only the first partition with data may exceed the
/// fetch's byte limit (KIP-74), so without rotation busy early partitions could take every
/// answer's budget and starve the rest.
#[derive(Debug, Default)]
pub(crate) struct FetchOrder {
    order: VecDeque<TopicPartition>,
}

impl FetchOrder {
    /// Drops partitions no longer assigned and appends new ones (in key order).
    pub(crate) fn sync(&mut self, assigned: &BTreeMap<TopicPartition, i32>) {
        // Runs before every fetch: the usual case, an unchanged assignment, allocates nothing.
        if self.order.len() == assigned.len() && self.order.iter().all(|tp| assigned.contains_key(tp)) {
            return;
        }
        self.order.retain(|tp| assigned.contains_key(tp));
        let present: HashSet<TopicPartition> = self.order.iter().cloned().collect();
        self.order.extend(assigned.keys().filter(|tp| !present.contains(*tp)).cloned());
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &TopicPartition> {
        self.order.iter()
    }

    /// Moves `served` to the end, keeping the relative order of both groups.
    pub(crate) fn move_to_end(&mut self, served: &HashSet<TopicPartition>) {
        if served.is_empty() {
            return;
        }
        let (moved, kept): (VecDeque<_>, VecDeque<_>) = self.order.drain(..).partition(|tp| served.contains(tp));
        self.order = kept;
        self.order.extend(moved);
    }
}

/// The fetch a follower sends `leader` for the partitions it follows there, in `order`:
/// with its broker epoch (KIP-903) and a max_bytes whose answer, with every partition's
/// framing, stays below the gRPC message limit (the leader enforces the same bound).
pub(crate) fn build_fetch_request(
    replica_manager: &ReplicaManager,
    leader: BrokerId,
    broker_epoch: i64,
    assigned: &BTreeMap<TopicPartition, i32>,
    order: &FetchOrder,
) -> pb::FetchRequest {
    let mut partitions = Vec::with_capacity(assigned.len());
    for tp in order.iter() {
        let (Some(leader_epoch), Some(partition)) = (assigned.get(tp), replica_manager.partition(tp)) else {
            continue;
        };
        let state = partition.lock();
        if !state.is_follower_of(leader, *leader_epoch) {
            continue;
        }
        partitions.push(pb::FetchPartition {
            topic: tp.topic.clone(),
            partition: tp.partition,
            fetch_offset: state.log.log_end_offset(),
            current_leader_epoch: *leader_epoch,
            // The unsafe negative-control mode fetches by offset alone, as before KIP-101,
            // so the leader never reports a diverging epoch (see replica_manager.rs).
            last_fetched_epoch: if replica_manager.config.unsafe_truncate_to_high_watermark {
                -1
            } else {
                state.log.last_batch_epoch().unwrap_or(-1)
            },
            partition_max_bytes: (replica_manager.config.message_max_bytes as u32).max(1024 * 1024),
        });
    }
    pb::FetchRequest {
        replica_id: replica_manager.broker_id,
        max_wait_ms: replica_manager.config.replica_fetch_wait_max_ms as u32,
        min_bytes: 1,
        max_bytes: replica_fetch_max_bytes(&partitions),
        partitions,
        broker_epoch,
    }
}

/// A client for `address`, reusing `client` when it is for that address.
async fn ensure_client<'a>(
    client: &'a mut Option<(String, BrokerClient<Channel>)>,
    leader: BrokerId,
    address: &str,
) -> Option<&'a mut BrokerClient<Channel>> {
    if client.as_ref().is_none_or(|(a, _)| a != address) {
        *client = None;
        match connect(address).await {
            Ok(c) => *client = Some((address.to_string(), c)),
            Err(e) => debug!(leader, address, "fetcher cannot connect: {e}"),
        }
    }
    client.as_mut().map(|(_, c)| c)
}

/// Whether applying `response` may truncate a log: a diverging epoch (KIP-101/279) or an
/// offset past the leader's end.
fn needs_truncation(response: &pb::FetchResponse) -> bool {
    response
        .partitions
        .iter()
        .any(|p| p.diverging_epoch.is_some() || p.error_code == ErrorCode::OFFSET_OUT_OF_RANGE.code())
}

/// Applies a fetch answer; returns the partitions that returned data and whether to back off.
pub(crate) fn apply_response(
    replica_manager: &ReplicaManager,
    leader: BrokerId,
    assigned: &BTreeMap<TopicPartition, i32>,
    response: pb::FetchResponse,
) -> (HashSet<TopicPartition>, bool) {
    let mut served = HashSet::new();
    let mut back_off = false;
    for partition_response in response.partitions {
        let tp = TopicPartition::new(partition_response.topic.clone(), partition_response.partition);
        let Some(&leader_epoch) = assigned.get(&tp) else {
            continue;
        };
        if !partition_response.records.is_empty() {
            served.insert(tp.clone());
        }
        back_off |= apply_fetched(replica_manager, leader, leader_epoch, &tp, partition_response);
    }
    (served, back_off)
}

/// Fetches from one leader until it leads nothing this broker follows.
async fn run_fetcher(
    replica_manager: Arc<ReplicaManager>,
    leader: BrokerId,
    assignment: tokio::sync::watch::Receiver<FollowerAssignment>,
) {
    let mut client: Option<(String, BrokerClient<Channel>)> = None;
    let mut order = FetchOrder::default();
    loop {
        let assigned = match assignment.borrow().get(&leader) {
            Some(p) if !p.is_empty() => p.clone(),
            _ => return,
        };
        let broker_epoch = replica_manager.broker_epoch();
        let Some(address) = replica_manager.broker_address(leader).filter(|_| broker_epoch > 0) else {
            // Leader unknown, or not registered (yet, or any more): a leader serves replica
            // fetches only to a registered broker's current epoch (KIP-903).
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Some(c) = ensure_client(&mut client, leader, &address).await else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        order.sync(&assigned);
        let request = build_fetch_request(&replica_manager, leader, broker_epoch, &assigned, &order);
        if request.partitions.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let mut grpc_request = tonic::Request::new(request);
        grpc_request.set_timeout(Duration::from_millis(replica_manager.config.replica_fetch_wait_max_ms + 5_000));
        let response = match c.fetch(grpc_request).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                debug!(leader, "fetch failed: {status}");
                client = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (served, back_off) = if needs_truncation(&response) {
            // Truncation rescans the log to rebuild producer state: disk work that can take
            // far longer than a millisecond, so off the tokio workers. Plain appends (the
            // acks=all path) stay inline: a page-cache write of one answer's batches.
            let (replica_manager, assigned) = (replica_manager.clone(), assigned.clone());
            let applied =
                tokio::task::spawn_blocking(move || apply_response(&replica_manager, leader, &assigned, response))
                    .await;
            applied.unwrap_or_else(|_| (HashSet::new(), true))
        } else {
            apply_response(&replica_manager, leader, &assigned, response)
        };
        order.move_to_end(&served);
        if back_off {
            // Epoch, leadership or replica-identity disagreement: wait for metadata (ours or
            // the leader's) to catch up; every such answer is retriable.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Applies one partition's fetch response. Returns true when the fetcher should back off.
pub(crate) fn apply_fetched(
    replica_manager: &ReplicaManager,
    leader: BrokerId,
    leader_epoch: i32,
    tp: &TopicPartition,
    partition_response: pb::FetchPartitionResponse,
) -> bool {
    let Some(partition) = replica_manager.partition(tp) else {
        return false;
    };
    let mut state = partition.lock();
    if !state.is_follower_of(leader, leader_epoch) {
        return false; // the role changed while the fetch was in flight
    }
    let error = ErrorCode::from_code(partition_response.error_code);
    match error {
        ErrorCode::NONE => {}
        ErrorCode::OFFSET_OUT_OF_RANGE
            if partition_response.log_end_offset >= 0
                && state.log.log_end_offset() > partition_response.log_end_offset =>
        {
            // We are ahead of the leader with no epoch to locate the divergence (Kafka
            // `AbstractFetcherThread.handleOutOfRangeError`): the leader's log is the truth.
            let leo = state.log.log_end_offset();
            let truncated = state.log.truncate_to(partition_response.log_end_offset);
            state.rebuild_producer_state();
            match truncated {
                Ok(t) => info!(
                    "{tp}: truncated log from {leo} to leader {leader}'s log end offset {}: {} records ({} bytes) dropped (fetch offset out of range)",
                    partition_response.log_end_offset, t.records_removed, t.bytes_removed
                ),
                Err(e) => warn!("{tp}: truncation failed: {e}"),
            }
            return false;
        }
        other => {
            // Retriable while metadata catches up (a leader change, or the leader not yet
            // knowing our registration or unfencing); debug only, as it repeats per fetch.
            debug!(%tp, leader, error = %other, "fetch answered an error: {}", partition_response.error_message);
            return true;
        }
    }
    if let Some(d) =
        partition_response.diverging_epoch.filter(|_| !replica_manager.config.unsafe_truncate_to_high_watermark)
    {
        // (The unsafe negative-control mode ignores diverging-epoch answers: pre-KIP-101.)
        let diverging = EpochEndOffset { epoch: d.epoch, end_offset: d.end_offset };
        let leo = state.log.log_end_offset();
        let our_last_epoch = state.log.last_batch_epoch().unwrap_or(-1);
        let (epoch, end_offset) = state.log.end_offset_for_epoch(d.epoch);
        let (offset, complete) = truncation_offset(diverging, EpochEndOffset { epoch, end_offset }, leo);
        if offset < leo {
            match state.log.truncate_to(offset) {
                Ok(t) => info!(
                    "{tp}: truncated log from {leo} to {offset}: {} records ({} bytes) dropped; leader {leader} (epoch {leader_epoch}) says our epoch {} diverged, its epoch {} ends at {}{}",
                    t.records_removed,
                    t.bytes_removed,
                    our_last_epoch,
                    d.epoch,
                    d.end_offset,
                    if complete { "" } else { " (will look further back on the next fetch)" }
                ),
                Err(e) => warn!("{tp}: truncation to {offset} failed: {e}"),
            }
            let hw = state.follower_high_watermark.min(state.log.log_end_offset());
            state.follower_high_watermark = hw;
            state.rebuild_producer_state();
        }
        return false;
    }
    if !partition_response.records.is_empty() {
        match state.log.append_as_follower(&partition_response.records) {
            Ok(info) => state.record_producer_batches(
                &partition_response.records[..info.bytes.min(partition_response.records.len())],
            ),
            Err(e) => {
                warn!(
                    "{tp}: cannot append {} fetched bytes from leader {leader}: {e}",
                    partition_response.records.len()
                );
                return true;
            }
        }
    }
    let new_hw = follower_high_watermark(partition_response.high_watermark, state.log.log_end_offset());
    let changed = new_hw != state.follower_high_watermark;
    state.follower_high_watermark = new_hw;
    drop(state);
    if changed {
        replica_manager.wake_parked_fetches();
    }
    false
}
