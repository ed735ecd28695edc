//! A replica whose storage fails goes offline alone (Kafka `ReplicaManager.handleLogDirFailure`
//! and `HostedPartition.Offline`, one directory per replica here), on real logs in a temporary
//! directory: a log that cannot be opened, a leader append, a follower append and a read that
//! fail with an I/O error each take that one replica offline, answer KAFKA_STORAGE_ERROR for
//! it from then on, and leave every other partition of the broker served and replicated.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use insync_proto as pb;
use insync_types::{ErrorCode, TopicPartition};

use crate::fetch_tests::{
    batch, broker, broker_in, consumer_fetch, entry, grpc_fetch, metadata, produce, record_bytes, Broker,
};
use crate::fetcher::{apply_response, build_fetch_request, FetchOrder};
use crate::grpc_convert;
use crate::replica_manager::{ProduceAppended, ReplicaManager};

fn tp(partition: i32) -> TopicPartition {
    TopicPartition::new("t", partition)
}

fn replica_dir(b: &Broker, partition: i32) -> PathBuf {
    b.replica_manager.config.data_dir.join(format!("t-{partition}"))
}

/// Where the segment starting at `base_offset` goes (`insync_log` names them so).
fn segment_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

/// Makes the creation of the segment at `base_offset` fail (EISDIR): what a log roll hits on
/// a failing disk, and the only write failure a test running as root can provoke.
fn block_segment(dir: &Path, base_offset: i64) {
    std::fs::create_dir_all(segment_path(dir, base_offset)).expect("a directory where the segment goes");
}

/// One batch on the leader with `acks`, as the service appends it.
fn append(replica_manager: &ReplicaManager, partition: i32, acks: i32) -> ProduceAppended {
    let request = pb::ProduceRequest {
        topic: "t".into(),
        partition,
        acks,
        timeout_ms: 5_000,
        records: batch(100),
        correlation_id: 0,
    };
    replica_manager.produce_append(grpc_convert::produce_request(request))
}

fn appended_error(appended: ProduceAppended) -> (ErrorCode, String) {
    match appended {
        ProduceAppended::Done(outcome) => (outcome.error, outcome.message),
        ProduceAppended::Waiting { .. } => panic!("acks=1 does not wait"),
    }
}

/// A consumer fetch of partitions `partitions` of `t` from offset 0: (error, record bytes) each.
async fn consume(replica_manager: &ReplicaManager, partitions: &[i32]) -> Vec<(ErrorCode, usize)> {
    let entries = partitions.iter().map(|&p| entry("t", p, 0, 0)).collect();
    let response = grpc_fetch(replica_manager, consumer_fetch(0, entries)).await;
    let bytes = record_bytes(&response);
    response.partitions.iter().zip(bytes).map(|(p, b)| (ErrorCode::from_code(p.error_code), b)).collect()
}

fn followed(replica_manager: &ReplicaManager) -> BTreeMap<i32, Vec<TopicPartition>> {
    let assignment = replica_manager.subscribe_follower_assignment().borrow().clone();
    assignment.into_iter().map(|(leader, tps)| (leader, tps.into_keys().collect())).collect()
}

/// Topic `t` with 4 partitions, replicas [1, 2]: broker 1 leads 0 and 1, broker 2 leads 2 and 3.
fn two_leaders(version: u64) -> pb::ClusterMetadata {
    let mut md = metadata(version, "t", 4, &[1, 2]);
    for p in &mut md.topics[0].partitions[2..] {
        p.leader = 2;
    }
    md
}

#[tokio::test]
async fn a_replica_whose_log_cannot_be_opened_goes_offline_and_the_others_are_applied() {
    // Kafka applyLocalLeadersDelta/applyLocalFollowersDelta: a KafkaStorageException for one
    // partition marks it offline and the delta goes on with the rest.
    let b = broker(1, &[]);
    for p in [1, 3] {
        std::fs::write(replica_dir(&b, p), b"not a directory").expect("a file where the log goes");
    }
    b.replica_manager.apply_metadata(two_leaders(1));
    let rm = &b.replica_manager;
    assert_eq!(rm.offline_partitions(), vec![tp(1), tp(3)]);
    assert!(rm.partition(&tp(0)).is_some_and(|p| p.is_leader()), "partition 0 became leader");
    assert_eq!(followed(rm), BTreeMap::from([(2, vec![tp(2)])]), "2 is followed, 3 is not");
    assert_eq!(rm.metadata().version, 1, "the snapshot was applied");

    produce(rm, "t", 0, 100);
    let (error, message) = appended_error(append(rm, 1, 1));
    assert_eq!(error, ErrorCode::KAFKA_STORAGE_ERROR);
    assert!(message.contains("offline") && message.contains("cannot open its log"), "{message}");
    let answers = consume(rm, &[0, 1, 3]).await;
    assert_eq!(answers[1..], [(ErrorCode::KAFKA_STORAGE_ERROR, 0), (ErrorCode::KAFKA_STORAGE_ERROR, 0)]);
    assert_eq!(answers[0].0, ErrorCode::NONE);
    let listed = rm.list_offsets(&tp(1), -1).expect_err("offline");
    assert_eq!(listed.error, ErrorCode::KAFKA_STORAGE_ERROR);
    assert_eq!(rm.missing_partition_code(&tp(3)), ErrorCode::KAFKA_STORAGE_ERROR);

    // Not reopened by later snapshots, even once the directory could be opened.
    for p in [1, 3] {
        std::fs::remove_file(replica_dir(&b, p)).expect("remove the file");
    }
    rm.apply_metadata(two_leaders(2));
    assert_eq!(rm.offline_partitions(), vec![tp(1), tp(3)]);
    assert!(rm.partition(&tp(1)).is_none());

    // A restart opens every replica again.
    let Broker { replica_manager, _alter, _dir } = b;
    drop(replica_manager);
    let restarted = broker_in(1, _dir, &[]);
    restarted.replica_manager.apply_metadata(two_leaders(3));
    assert!(restarted.replica_manager.offline_partitions().is_empty());
    assert!(restarted.replica_manager.partition(&tp(1)).is_some_and(|p| p.is_leader()));
}

#[tokio::test]
async fn a_leader_append_failing_with_an_io_error_takes_only_that_replica_offline() {
    // One-byte segments: every append after a segment's first rolls to a new segment file.
    let b = broker(1, &["--log-segment-bytes", "1"]);
    let rm = &b.replica_manager;
    rm.apply_metadata(metadata(1, "t", 2, &[1, 2]));
    produce(rm, "t", 0, 100);
    // acks=all waits for follower 2, which never fetches.
    let waiting = append(rm, 0, -1);
    assert!(matches!(waiting, ProduceAppended::Waiting { .. }));
    block_segment(&replica_dir(&b, 0), 2);

    let (error, message) = appended_error(append(rm, 0, 1));
    assert_eq!(error, ErrorCode::KAFKA_STORAGE_ERROR);
    assert!(message.contains("I/O error"), "{message}");
    assert_eq!(rm.offline_partitions(), vec![tp(0)]);
    let waited = tokio::time::timeout(Duration::from_secs(1), rm.produce_wait(waiting, 5_000)).await;
    let waited = waited.expect("the waiting acks=all produce is answered at once");
    assert_eq!(waited.error, ErrorCode::KAFKA_STORAGE_ERROR, "{}", waited.message);
    // A second storage error (another request that held the partition) changes nothing:
    // the first report stands.
    rm.mark_offline(&tp(0), "a second error");
    assert!(!offline_reason(rm, 0).contains("a second error"), "{}", offline_reason(rm, 0));

    let (error, message) = appended_error(append(rm, 0, 1));
    assert_eq!(error, ErrorCode::KAFKA_STORAGE_ERROR);
    assert!(message.contains("offline"), "{message}");
    // Partition 1, on the same broker, is served as before.
    produce(rm, "t", 1, 100);
    produce(rm, "t", 1, 100);
    let answers = consume(rm, &[0, 1]).await;
    assert_eq!(answers[0], (ErrorCode::KAFKA_STORAGE_ERROR, 0));
    assert_eq!(answers[1].0, ErrorCode::NONE);
    assert_eq!(rm.partition(&tp(1)).map(|p| p.log_end_offset()), Some(2));
}

#[tokio::test]
async fn a_read_failing_with_an_io_error_takes_only_that_replica_offline() {
    let b = broker(1, &[]);
    let rm = &b.replica_manager;
    rm.apply_metadata(metadata(1, "t", 2, &[1]));
    produce(rm, "t", 0, 100);
    let size = produce(rm, "t", 1, 100);
    // The segment file loses its content behind the log's back (a failing disk).
    let segment = std::fs::OpenOptions::new().write(true).open(segment_path(&replica_dir(&b, 0), 0));
    segment.and_then(|file| file.set_len(0)).expect("cut the segment file");

    let answers = consume(rm, &[0, 1]).await;
    assert_eq!(answers, vec![(ErrorCode::KAFKA_STORAGE_ERROR, 0), (ErrorCode::NONE, size)]);
    assert_eq!(rm.offline_partitions(), vec![tp(0)]);
    let (error, _) = appended_error(append(rm, 0, 1));
    assert_eq!(error, ErrorCode::KAFKA_STORAGE_ERROR);
    produce(rm, "t", 1, 100);
    assert!(offline_reason(rm, 0).contains("cannot read t-0 from offset 0: I/O error"), "{}", offline_reason(rm, 0));
}

/// What the answers for an offline replica say.
fn offline_reason(replica_manager: &ReplicaManager, partition: i32) -> String {
    let refused = replica_manager.list_offsets(&tp(partition), -1).expect_err("offline");
    assert_eq!(refused.error, ErrorCode::KAFKA_STORAGE_ERROR);
    refused.message
}

/// One fetch round of `follower` from broker 1 for everything it follows there.
async fn fetch_round(leader: &ReplicaManager, follower: &ReplicaManager) {
    let assigned = follower.subscribe_follower_assignment().borrow().get(&1).cloned().unwrap_or_default();
    let mut order = FetchOrder::default();
    order.sync(&assigned);
    let request = build_fetch_request(follower, 1, follower.broker_epoch(), &assigned, &order);
    let response = grpc_fetch(leader, grpc_convert::fetch_request_to_wire(request)).await;
    apply_response(follower, 1, &assigned, grpc_convert::fetch_response(response));
}

#[tokio::test]
async fn a_follower_append_failing_with_an_io_error_takes_only_that_replica_offline() {
    let leader = broker(1, &[]);
    let follower = broker(2, &["--log-segment-bytes", "1"]);
    let md = metadata(1, "t", 2, &[1, 2]);
    leader.replica_manager.apply_metadata(md.clone());
    follower.replica_manager.apply_metadata(md);
    for p in 0..2 {
        produce(&leader.replica_manager, "t", p, 100);
    }
    fetch_round(&leader.replica_manager, &follower.replica_manager).await;
    // The next append to partition 0 rolls to a segment at offset 1, which cannot be created.
    block_segment(&replica_dir(&follower, 0), 1);
    for p in 0..2 {
        produce(&leader.replica_manager, "t", p, 100);
    }
    fetch_round(&leader.replica_manager, &follower.replica_manager).await;

    let rm = &follower.replica_manager;
    assert_eq!(rm.offline_partitions(), vec![tp(0)]);
    let reason = offline_reason(rm, 0);
    assert!(reason.contains("cannot append") && reason.contains("I/O error"), "{reason}");
    assert_eq!(followed(rm), BTreeMap::from([(1, vec![tp(1)])]), "partition 0 is no longer followed");
    assert_eq!(rm.partition(&tp(1)).map(|p| p.log_end_offset()), Some(2), "partition 1 replicated on");
    // Metadata applied later does not follow it again.
    let mut later = metadata(2, "t", 2, &[1, 2]);
    later.topics[0].partitions[0].leader_epoch = 1;
    rm.apply_metadata(later);
    assert_eq!(followed(rm), BTreeMap::from([(1, vec![tp(1)])]));
}
