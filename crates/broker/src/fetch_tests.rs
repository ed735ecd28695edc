//! Tests of the fetch rules through `ReplicaManager::fetch`'s answers, on real logs in a
//! temporary directory: Kafka's sizing (`ReplicaManager.readFromLog`: fetch.max.bytes,
//! minOneMessage for the first partition with data only), duplicate partitions refused,
//! every follower answer inside the gRPC limit while replication progresses, and the
//! KIP-903 replica identity check.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use insync_log::BatchBuilder;
use insync_proto as pb;
use insync_proto::prost::Message;
use insync_types::{ErrorCode, TopicPartition};
use tokio::sync::mpsc;

use crate::config::BrokerArgs;
use crate::fetcher::{apply_response, build_fetch_request, FetchOrder};
use crate::grpc_convert;
use crate::replica_manager::{AlterPartitionJob, ProduceAppended, ReplicaManager};

/// A data directory removed when the test ends.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("insync-fetch-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        TempDir(std::env::temp_dir().join(name))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One in-process broker: its replica manager, and the ISR-proposal queue kept open.
pub(crate) struct Broker {
    pub(crate) replica_manager: Arc<ReplicaManager>,
    pub(crate) _alter: mpsc::Receiver<AlterPartitionJob>,
    pub(crate) _dir: TempDir,
}

pub(crate) fn broker(node_id: i32, extra: &[&str]) -> Broker {
    broker_in(node_id, TempDir::new(), extra)
}

/// A broker on `dir`: a new one, or one restarted on the directory of a stopped one.
pub(crate) fn broker_in(node_id: i32, dir: TempDir, extra: &[&str]) -> Broker {
    let data_dir = dir.0.to_string_lossy().to_string();
    let id = node_id.to_string();
    let mut argv = vec!["insync-broker", "--node-id", &id, "--listen", "127.0.0.1:0", "--data-dir", &data_dir];
    argv.extend_from_slice(extra);
    let args = BrokerArgs::try_parse_from(argv).expect("test flags parse");
    let (tx, rx) = mpsc::channel(1024);
    let replica_manager = ReplicaManager::new(Arc::new(args), tx).expect("replica manager");
    // Registered with the epoch `metadata` gives it (11, 22, 33): a broker leads only once
    // the metadata shows its current registration.
    replica_manager.set_broker_epoch(i64::from(node_id) * 11);
    Broker { replica_manager, _alter: rx, _dir: dir }
}

/// Brokers 1, 2 and 3 with broker epochs 11, 22 and 33; topic `topic` with `partitions`
/// partitions led by broker 1 at leader epoch 0, replicas [1, 2], ISR `isr`.
pub(crate) fn metadata(version: u64, topic: &str, partitions: i32, isr: &[i32]) -> pb::ClusterMetadata {
    let broker = |id: i32| pb::BrokerMetadata {
        id,
        address: format!("127.0.0.1:{}", 9091 + id),
        broker_epoch: i64::from(id) * 11,
        ..Default::default()
    };
    let partition = |p: i32| pb::PartitionMetadata {
        partition: p,
        leader: 1,
        replicas: vec![1, 2],
        isr: isr.to_vec(),
        ..Default::default()
    };
    pb::ClusterMetadata {
        version,
        brokers: (1..=3).map(broker).collect(),
        topics: vec![pb::TopicMetadata {
            name: topic.into(),
            partitions: (0..partitions).map(partition).collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One RecordBatch v2 with one record of `value_bytes` bytes.
pub(crate) fn batch(value_bytes: usize) -> Bytes {
    let mut builder = BatchBuilder::with_capacity(value_bytes + 128);
    builder.push(None, Some(&vec![b'x'; value_bytes]), 1_700_000_000_000);
    builder.build()
}

/// Appends one batch on the leader (acks=1); returns its size in bytes.
pub(crate) fn produce(replica_manager: &ReplicaManager, topic: &str, partition: i32, value_bytes: usize) -> usize {
    let records = batch(value_bytes);
    let size = records.len();
    let request =
        pb::ProduceRequest { topic: topic.into(), partition, acks: 1, timeout_ms: 1000, records, correlation_id: 0 };
    match replica_manager.produce_append(grpc_convert::produce_request(request)) {
        ProduceAppended::Done(outcome) => assert_eq!(outcome.error, ErrorCode::NONE, "{}", outcome.message),
        ProduceAppended::Waiting { .. } => panic!("acks=1 does not wait"),
    }
    size
}

pub(crate) fn entry(topic: &str, partition: i32, fetch_offset: i64, partition_max_bytes: u32) -> pb::FetchPartition {
    pb::FetchPartition {
        topic: topic.into(),
        partition,
        fetch_offset,
        current_leader_epoch: -1,
        last_fetched_epoch: -1,
        partition_max_bytes,
    }
}

pub(crate) fn consumer_fetch(max_bytes: u32, partitions: Vec<pb::FetchPartition>) -> pb::FetchRequest {
    pb::FetchRequest { replica_id: -1, max_wait_ms: 0, min_bytes: 1, max_bytes, partitions, broker_epoch: 0 }
}

/// A fetch through the gRPC edge, as the service serves it.
pub(crate) async fn grpc_fetch(replica_manager: &ReplicaManager, request: pb::FetchRequest) -> pb::FetchResponse {
    grpc_convert::fetch_response_to_wire(replica_manager.fetch(grpc_convert::fetch_request(request)).await)
}

pub(crate) fn record_bytes(response: &pb::FetchResponse) -> Vec<usize> {
    response.partitions.iter().map(|p| p.records.len()).collect()
}

#[tokio::test]
async fn only_the_first_partition_with_data_may_exceed_max_bytes() {
    // Kafka ReplicaManager.readFromLog: minOneMessage until a partition returned bytes.
    let b = broker(1, &[]);
    b.replica_manager.apply_metadata(metadata(1, "t", 4, &[1]));
    let big1 = produce(&b.replica_manager, "t", 1, 5_000);
    let big2 = produce(&b.replica_manager, "t", 2, 5_000);
    let small = produce(&b.replica_manager, "t", 3, 100);
    produce(&b.replica_manager, "t", 3, 100);

    // p0 has nothing; p1's batch exceeds max_bytes but is the first data: served alone.
    let order = (0..4).map(|p| entry("t", p, 0, 0)).collect();
    let response = grpc_fetch(&b.replica_manager, consumer_fetch(1_000, order)).await;
    assert_eq!(record_bytes(&response), vec![0, big1, 0, 0]);

    // Small batches first: they fit, and the exemption is gone for p1's large batch.
    let order = vec![entry("t", 3, 0, 0), entry("t", 1, 0, 0)];
    let response = grpc_fetch(&b.replica_manager, consumer_fetch(1_000, order)).await;
    assert_eq!(record_bytes(&response), vec![2 * small, 0]);
    assert!(response.partitions.iter().all(|p| p.error_code == 0));

    // The exemption also beats partition_max_bytes, for the first partition with data only.
    let order = vec![entry("t", 1, 0, 100), entry("t", 2, 0, 100_000)];
    let response = grpc_fetch(&b.replica_manager, consumer_fetch(100_000, order)).await;
    assert_eq!(record_bytes(&response), vec![big1, big2]);
    let order = vec![entry("t", 3, 0, 0), entry("t", 1, 0, 100)];
    let response = grpc_fetch(&b.replica_manager, consumer_fetch(100_000, order)).await;
    assert_eq!(record_bytes(&response), vec![2 * small, 0], "partition_max_bytes applies after the first");
}

#[tokio::test]
async fn max_bytes_is_clamped_to_fetch_max_bytes() {
    // KafkaApis.handleFetchRequest: fetchMaxBytes = min(request maxBytes, fetch.max.bytes).
    let b = broker(1, &["--fetch-max-bytes", "2048"]);
    b.replica_manager.apply_metadata(metadata(1, "t", 2, &[1]));
    let sizes: Vec<u32> = (0..4).map(|_| produce(&b.replica_manager, "t", 0, 600) as u32).collect();
    let other = produce(&b.replica_manager, "t", 1, 600);
    let three = (sizes[0] + sizes[1] + sizes[2]) as usize;
    assert!(three <= 2048 && three + sizes[3] as usize > 2048);
    for max_bytes in [0, 2049, 1_000_000, u32::MAX] {
        let response =
            grpc_fetch(&b.replica_manager, consumer_fetch(max_bytes, vec![entry("t", 0, 0, 0), entry("t", 1, 0, 0)]))
                .await;
        assert_eq!(record_bytes(&response), vec![three, 0], "max_bytes {max_bytes} is fetch.max.bytes");
    }
    let response =
        grpc_fetch(&b.replica_manager, consumer_fetch(sizes[0] + 1, vec![entry("t", 0, 0, 0), entry("t", 1, 0, 0)]))
            .await;
    assert_eq!(record_bytes(&response), vec![sizes[0] as usize, 0], "a smaller request max_bytes holds");
    let request = consumer_fetch(0, vec![entry("t", 0, 0, sizes[0] + sizes[1]), entry("t", 1, 0, 0)]);
    let response = grpc_fetch(&b.replica_manager, request).await;
    let first_two = (sizes[0] + sizes[1]) as usize;
    assert!(first_two + other <= 2048);
    assert_eq!(record_bytes(&response), vec![first_two, other], "partition_max_bytes, then the rest");
}

#[tokio::test]
async fn a_partition_listed_twice_is_refused_on_every_entry() {
    // Kafka refuses duplicates with INVALID_REQUEST (KafkaApis.handleListOffsetRequest).
    let b = broker(1, &[]);
    b.replica_manager.apply_metadata(metadata(1, "t", 2, &[1]));
    produce(&b.replica_manager, "t", 0, 100);
    let two = produce(&b.replica_manager, "t", 1, 100);
    let entries = vec![entry("t", 0, 0, 0), entry("t", 1, 0, 0), entry("t", 0, 0, 0)];
    let mut request = consumer_fetch(0, entries);
    request.max_wait_ms = 10_000;
    let response = grpc_fetch(&b.replica_manager, request.clone()).await;
    let codes: Vec<i32> = response.partitions.iter().map(|p| p.error_code).collect();
    assert_eq!(codes, vec![42, 0, 42]);
    assert_eq!(record_bytes(&response), vec![0, two, 0]);
    assert!(response.partitions[0].error_message.contains("more than once"), "{:?}", response.partitions[0]);
    // Followers are refused the same way, before any identity or offset bookkeeping.
    request.replica_id = 2;
    request.broker_epoch = 22;
    let response = grpc_fetch(&b.replica_manager, request).await;
    assert_eq!(response.partitions.iter().map(|p| p.error_code).collect::<Vec<_>>(), vec![42, 0, 42]);
    assert_eq!(record_bytes(&response), vec![0, two, 0]);
}

/// The leader's and the follower's log end offsets of every partition of `topic`.
fn log_end_offsets(leader: &ReplicaManager, follower: &ReplicaManager, topic: &str, n: i32) -> Vec<(i64, i64)> {
    (0..n)
        .map(|p| {
            let tp = TopicPartition::new(topic, p);
            let leo = |replica_manager: &ReplicaManager| {
                replica_manager.partition(&tp).map(|x| x.log_end_offset()).unwrap_or(-1)
            };
            (leo(leader), leo(follower))
        })
        .collect()
}

#[tokio::test]
async fn follower_answers_stay_inside_the_grpc_limit_while_replication_progresses() {
    // 80 lagging partitions of one ~1 MB batch each: 80 MB, more than one gRPC message of
    // 64 MiB. Before, every partition got its first batch (minOneMessage per partition), so
    // one answer carried all 80 MB and could never be sent.
    const PARTITIONS: i32 = 80;
    let leader = broker(1, &[]);
    let follower = broker(2, &[]);
    let md = metadata(1, "big", PARTITIONS, &[1]);
    leader.replica_manager.apply_metadata(md.clone());
    follower.replica_manager.apply_metadata(md);
    follower.replica_manager.set_broker_epoch(22);
    for p in 0..PARTITIONS {
        produce(&leader.replica_manager, "big", p, 1_000_000);
    }
    let assigned: BTreeMap<TopicPartition, i32> =
        follower.replica_manager.subscribe_follower_assignment().borrow().get(&1).cloned().expect("follows broker 1");
    let mut order = FetchOrder::default();
    let mut rounds = 0;
    while log_end_offsets(&leader.replica_manager, &follower.replica_manager, "big", PARTITIONS)
        .iter()
        .any(|(l, f)| l != f)
    {
        rounds += 1;
        assert!(rounds <= 20, "replication does not progress");
        order.sync(&assigned);
        let request = build_fetch_request(
            &follower.replica_manager,
            1,
            follower.replica_manager.broker_epoch(),
            &assigned,
            &order,
        );
        assert_eq!(request.broker_epoch, 22);
        // Over the wire and back, as the fetcher sends and reads it.
        let response = grpc_fetch(&leader.replica_manager, grpc_convert::fetch_request_to_wire(request)).await;
        assert!(response.encoded_len() < pb::MAX_GRPC_MESSAGE_BYTES, "answer of {} bytes", response.encoded_len());
        assert!(response.partitions.iter().all(|p| p.error_code == 0));
        assert!(record_bytes(&response).iter().sum::<usize>() > 0, "every round moves data");
        let response = grpc_convert::fetch_response(response);
        let (served, back_off) = apply_response(&follower.replica_manager, 1, &assigned, response);
        assert!(!back_off);
        order.move_to_end(&served);
    }
    assert!(rounds >= 5, "16 MiB per fetch needs at least 5 rounds for 80 MB, took {rounds}");
}

#[tokio::test]
async fn the_leader_holds_any_answer_inside_the_grpc_limit() {
    // Even with fetch.max.bytes above the gRPC limit and a request asking for everything,
    // the answer (records plus every partition's framing) fits one gRPC message.
    const PARTITIONS: i32 = 80;
    let leader = broker(1, &["--fetch-max-bytes", "4294967295"]);
    leader.replica_manager.apply_metadata(metadata(1, "big", PARTITIONS, &[1]));
    for p in 0..PARTITIONS {
        produce(&leader.replica_manager, "big", p, 1_000_000);
    }
    let entries: Vec<_> = (0..PARTITIONS).map(|p| entry("big", p, 0, 0)).collect();
    let follower = pb::FetchRequest { replica_id: 2, broker_epoch: 22, ..consumer_fetch(0, entries.clone()) };
    for request in [consumer_fetch(u32::MAX, entries), follower] {
        let response = grpc_fetch(&leader.replica_manager, request).await;
        let bytes: usize = record_bytes(&response).iter().sum();
        assert!(bytes > 60_000_000, "the budget is used: {bytes}");
        assert!(response.encoded_len() < pb::MAX_GRPC_MESSAGE_BYTES, "answer of {} bytes", response.encoded_len());
    }
}

fn follower_fetch(replica_id: i32, broker_epoch: i64, current_leader_epoch: i32) -> pb::FetchRequest {
    let mut partition = entry("t", 0, 0, 0);
    partition.current_leader_epoch = current_leader_epoch;
    pb::FetchRequest { replica_id, broker_epoch, ..consumer_fetch(0, vec![partition]) }
}

fn high_watermark(replica_manager: &ReplicaManager) -> i64 {
    replica_manager.partition(&TopicPartition::new("t", 0)).map(|p| p.high_watermark()).unwrap_or(-1)
}

#[tokio::test]
async fn only_a_registered_unfenced_replica_with_its_current_epoch_fetches_as_a_follower() {
    let b = broker(1, &[]);
    // ISR [1, 2]: the HW moves only when follower 2 fetches.
    b.replica_manager.apply_metadata(metadata(1, "t", 1, &[1, 2]));
    let size = produce(&b.replica_manager, "t", 0, 100);
    assert_eq!(high_watermark(&b.replica_manager), 0);
    let code = |r: &pb::FetchResponse| ErrorCode::from_code(r.partitions[0].error_code);

    // A consumer reads below the HW only: nothing yet.
    let consumer = grpc_fetch(&b.replica_manager, consumer_fetch(0, vec![entry("t", 0, 0, 0)])).await;
    assert_eq!((code(&consumer), record_bytes(&consumer)), (ErrorCode::NONE, vec![0]));

    // Impostors: wrong, missing or newer epochs; a non-replica; the leader's own id.
    for (replica_id, epoch, leader_epoch, expected) in [
        (2, 21, 0, ErrorCode::NOT_LEADER_OR_FOLLOWER),
        (2, 23, 0, ErrorCode::NOT_LEADER_OR_FOLLOWER),
        (2, 0, 0, ErrorCode::INVALID_REQUEST),
        (9, 99, 0, ErrorCode::NOT_LEADER_OR_FOLLOWER),
        (3, 33, 0, ErrorCode::UNKNOWN_LEADER_EPOCH),
        (3, 33, -1, ErrorCode::NOT_LEADER_OR_FOLLOWER),
        (1, 11, 0, ErrorCode::UNKNOWN_LEADER_EPOCH),
    ] {
        let response = grpc_fetch(&b.replica_manager, follower_fetch(replica_id, epoch, leader_epoch)).await;
        assert_eq!(code(&response), expected, "replica {replica_id} epoch {epoch}");
        assert_eq!(record_bytes(&response), vec![0], "nothing past the HW for replica {replica_id}");
        assert_eq!(response.partitions[0].high_watermark, -1);
        assert!(!response.partitions[0].error_message.is_empty());
    }
    assert_eq!(high_watermark(&b.replica_manager), 0, "refused fetches move nothing");

    // The real follower: data up to the LEO, and its next fetch at the LEO moves the HW.
    let response = grpc_fetch(&b.replica_manager, follower_fetch(2, 22, 0)).await;
    assert_eq!((code(&response), record_bytes(&response)), (ErrorCode::NONE, vec![size]));
    let mut at_leo = follower_fetch(2, 22, 0);
    at_leo.partitions[0].fetch_offset = 1;
    let response = grpc_fetch(&b.replica_manager, at_leo).await;
    assert_eq!(code(&response), ErrorCode::NONE);
    assert_eq!(high_watermark(&b.replica_manager), 1);
}

#[tokio::test]
async fn a_follower_proceeds_once_the_leaders_metadata_catches_up() {
    // Right after a follower re-registers, the leader may still hold its old epoch, or hold
    // the new one with the broker fenced until its first heartbeat: refused, retriably, until
    // the leader's metadata shows the new epoch unfenced.
    let b = broker(1, &[]);
    b.replica_manager.apply_metadata(metadata(1, "t", 1, &[1]));
    let size = produce(&b.replica_manager, "t", 0, 100);
    let refused = |r: &pb::FetchResponse| ErrorCode::from_code(r.partitions[0].error_code);

    let response = grpc_fetch(&b.replica_manager, follower_fetch(2, 40, 0)).await;
    assert_eq!(refused(&response), ErrorCode::NOT_LEADER_OR_FOLLOWER);
    assert!(refused(&response).is_retriable());

    let mut registered = metadata(2, "t", 1, &[1]);
    for broker in registered.brokers.iter_mut().filter(|b| b.id == 2) {
        broker.broker_epoch = 40;
        broker.fenced = true;
    }
    b.replica_manager.apply_metadata(registered.clone());
    let response = grpc_fetch(&b.replica_manager, follower_fetch(2, 40, 0)).await;
    assert_eq!(refused(&response), ErrorCode::NOT_LEADER_OR_FOLLOWER);
    assert!(response.partitions[0].error_message.contains("fenced"));
    let response = grpc_fetch(&b.replica_manager, follower_fetch(2, 22, 0)).await;
    assert!(response.partitions[0].error_message.contains("stale broker epoch"), "the old incarnation is out");

    registered.version = 3;
    for broker in registered.brokers.iter_mut() {
        broker.fenced = false;
    }
    b.replica_manager.apply_metadata(registered);
    let response = grpc_fetch(&b.replica_manager, follower_fetch(2, 40, 0)).await;
    assert_eq!((refused(&response), record_bytes(&response)), (ErrorCode::NONE, vec![size]));
}

#[tokio::test]
async fn a_follower_fenced_during_its_long_poll_is_not_served() {
    // Identity is checked on every pass of a long poll, not only when the fetch arrived.
    let b = broker(1, &[]);
    b.replica_manager.apply_metadata(metadata(1, "t", 1, &[1]));
    let mut request = follower_fetch(2, 22, 0);
    request.max_wait_ms = 10_000;
    let replica_manager = b.replica_manager.clone();
    let poll = tokio::spawn(async move { grpc_fetch(&replica_manager, request).await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await; // parked: nothing to read yet
    let mut fenced = metadata(2, "t", 1, &[1]);
    for broker in fenced.brokers.iter_mut().filter(|b| b.id == 2) {
        broker.fenced = true;
    }
    b.replica_manager.apply_metadata(fenced);
    produce(&b.replica_manager, "t", 0, 100); // wakes the poll
    let response = poll.await.expect("the fetch task");
    assert_eq!(ErrorCode::from_code(response.partitions[0].error_code), ErrorCode::NOT_LEADER_OR_FOLLOWER);
    assert_eq!(record_bytes(&response), vec![0]);
}

#[test]
fn fetch_order_moves_served_partitions_to_the_end() {
    // Kafka AbstractFetcherThread: PartitionStates.updateAndMoveToEnd.
    let tp = |p: i32| TopicPartition::new("t", p);
    let names = |order: &FetchOrder| order.iter().map(|t| t.partition).collect::<Vec<_>>();
    let mut assigned: BTreeMap<TopicPartition, i32> = (0..4).map(|p| (tp(p), 0)).collect();
    let mut order = FetchOrder::default();
    order.sync(&assigned);
    assert_eq!(names(&order), vec![0, 1, 2, 3]);
    order.move_to_end(&[tp(0), tp(2)].into_iter().collect());
    assert_eq!(names(&order), vec![1, 3, 0, 2]);
    assigned.remove(&tp(3));
    assigned.insert(tp(7), 0);
    order.sync(&assigned);
    assert_eq!(names(&order), vec![1, 0, 2, 7]);
}
