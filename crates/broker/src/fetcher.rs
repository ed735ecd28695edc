//! Follower replication: one fetcher task per leader broker (Kafka `ReplicaFetcherThread` /
//! `AbstractFetcherThread`), long-polling Fetch for every partition this broker follows
//! from that leader, appending what comes back, adopting the leader's HW, and truncating
//! by leader epoch when the leader reports a diverging epoch (KIP-101/KIP-279/KIP-320).
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use insync_proto as pb;
use insync_proto::broker_client::BrokerClient;
use insync_types::{BrokerId, ErrorCode, TopicPartition};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tracing::{debug, info};

use crate::fetch_limits::replica_fetch_max_bytes;
use crate::grpc_convert;
use crate::messages::{FetchPartition, FetchRequest, FetchResponse};
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
) -> FetchRequest {
    let mut partitions = Vec::with_capacity(assigned.len());
    for tp in order.iter() {
        let (Some(&leader_epoch), Some(partition)) = (assigned.get(tp), replica_manager.partition(tp)) else {
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
            partition_max_bytes: (replica_manager.config.message_max_bytes as u32).max(1024 * 1024),
        });
    }
    FetchRequest {
        replica_id: replica_manager.broker_id,
        broker_epoch,
        max_wait_ms: replica_manager.config.replica_fetch_wait_max_ms as u32,
        min_bytes: 1,
        max_bytes: replica_fetch_max_bytes(&partitions),
        // The leader computes the bound of its answer from the wire request (grpc_convert);
        // this one never reaches a replica manager as it is.
        transport_limit: usize::MAX,
        partitions,
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
fn needs_truncation(response: &FetchResponse) -> bool {
    response.partitions.iter().any(|p| p.diverging_epoch.is_some() || p.error == ErrorCode::OFFSET_OUT_OF_RANGE)
}

/// Applies a fetch answer; returns the partitions that returned data and whether to back off.
pub(crate) fn apply_response(
    replica_manager: &ReplicaManager,
    leader: BrokerId,
    assigned: &BTreeMap<TopicPartition, i32>,
    response: FetchResponse,
) -> (HashSet<TopicPartition>, bool) {
    let mut served = HashSet::new();
    let mut back_off = false;
    let mut high_watermark_changed = false;
    for partition_response in response.partitions {
        let tp = partition_response.topic_partition.clone();
        let (Some(&leader_epoch), Some(partition)) = (assigned.get(&tp), replica_manager.partition(&tp)) else {
            continue;
        };
        let has_data = !partition_response.records.is_empty();
        let applied = partition.apply_fetch_response(leader, leader_epoch, partition_response);
        if let Some(error) = &applied.storage_error {
            // Only this replica stops; the fetcher carries on with the others.
            replica_manager.mark_offline(&tp, error);
        }
        back_off |= applied.back_off;
        high_watermark_changed |= applied.high_watermark_changed;
        if has_data {
            served.insert(tp);
        }
    }
    if high_watermark_changed {
        replica_manager.wake_parked_fetches();
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
        let mut grpc_request = tonic::Request::new(grpc_convert::fetch_request_to_wire(request));
        grpc_request.set_timeout(Duration::from_millis(replica_manager.config.replica_fetch_wait_max_ms + 5_000));
        let response = match c.fetch(grpc_request).await {
            Ok(r) => grpc_convert::fetch_response(r.into_inner()),
            Err(status) => {
                debug!(leader, "fetch failed: {status}");
                client = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (served, back_off) = if needs_truncation(&response) {
            // Truncation cuts segment files and reloads producer state (a snapshot plus the
            // log tail after it, up to a segment): disk work that can take far longer than a
            // millisecond, so off the tokio workers. Plain appends (the acks=all path) stay
            // inline: a page-cache write of one answer's batches.
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
