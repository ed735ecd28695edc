//! A one-voter controller over real gRPC: broker registration and heartbeats, topic creation
//! seen through WatchMetadata, AlterPartition epoch checks, session-timeout fencing,
//! controlled shutdown, and a restart on the same data directory that keeps every topic.
mod support;

use futures::StreamExt;
use insync_proto::{AlterPartitionRequest, CreateTopicRequest, WatchMetadataRequest};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{eventually, heartbeat, metadata, register, Heartbeater, RunningController};

const SESSION_TIMEOUT_MS: u64 = 1500;
const FENCED_LEADER_EPOCH: i32 = 74;
const INVALID_UPDATE_VERSION: i32 = 108;
const NOT_LEADER_OR_FOLLOWER: i32 = 6;
const STALE_BROKER_EPOCH: i32 = 77;
const TOPIC_ALREADY_EXISTS: i32 = 36;
const INVALID_REPLICATION_FACTOR: i32 = 38;

fn alter(
    broker_id: i32,
    partition: &insync_proto::PartitionMetadata,
    leader_epoch: i32,
    partition_epoch: i32,
    new_isr: Vec<i32>,
) -> AlterPartitionRequest {
    AlterPartitionRequest {
        broker_id,
        topic: "orders".to_string(),
        partition: partition.partition,
        leader_epoch,
        partition_epoch,
        // Shrinks only: no member is added, so none needs its broker epoch named.
        new_isr_broker_epochs: Vec::new(),
        new_isr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_voter_controller_serves_the_broker_lifecycle_and_survives_a_restart() {
    support::init_tracing();
    tokio::time::timeout(Duration::from_secs(90), scenario()).await.expect("scenario finishes within 90 s");
}

async fn scenario() {
    let data_dir = tempfile::tempdir().unwrap();
    let (listener, address) = support::bind().await;
    let voters = BTreeMap::from([(1u64, address.clone())]);
    let mut controller = RunningController::start(1, data_dir.path(), voters, listener, SESSION_TIMEOUT_MS).await;
    let node = controller.node.clone();
    eventually(Duration::from_secs(10), "controller 1 to lead", || async {
        (node.metrics_leader() == Some(1)).then_some(())
    })
    .await;

    let mut client = controller.client().await;
    let mut watch = client.watch_metadata(WatchMetadataRequest { known_version: 0 }).await.unwrap().into_inner();

    // Brokers register fenced (KIP-631) and the first heartbeat unfences them.
    for broker_id in 1..=3 {
        register(&mut client, broker_id, 100 + broker_id as u64).await;
        let registered = metadata(&mut client).await;
        assert!(registered.brokers.iter().any(|b| b.id == broker_id && b.fenced));
        let response = heartbeat(&mut client, broker_id, 100 + broker_id as u64, false).await;
        assert_eq!(response.error.unwrap().error_code, 0);
        assert!(!response.is_fenced);
    }
    let stale = heartbeat(&mut client, 2, 7, false).await;
    assert_eq!(stale.error.unwrap().error_code, STALE_BROKER_EPOCH, "an old incarnation must re-register");

    let beating: Vec<Heartbeater> =
        (1..=3).map(|id| Heartbeater::start(vec![client.clone()], id, 100 + id as u64)).collect();

    // CreateTopic: round-robin over the 3 unfenced brokers, first replica leads.
    let create = CreateTopicRequest {
        name: "orders".to_string(),
        partitions: 3,
        replication_factor: 3,
        min_insync_replicas: 2,
        unclean_leader_election_enable: false,
        ..Default::default()
    };
    let created = client.create_topic(create.clone()).await.unwrap().into_inner();
    assert_eq!(created.error_code, 0, "{}", created.error_message);
    let topic = created.topic.unwrap();
    assert_eq!(topic.min_insync_replicas, 2);
    assert_eq!(topic.partitions.len(), 3);
    for partition in &topic.partitions {
        assert_eq!(partition.isr, partition.replicas);
        assert_eq!(partition.leader, partition.replicas[0]);
    }
    let again = client.create_topic(create.clone()).await.unwrap().into_inner();
    assert_eq!(again.error_code, TOPIC_ALREADY_EXISTS);
    let too_wide = client
        .create_topic(CreateTopicRequest { name: "wide".to_string(), replication_factor: 4, ..create.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(too_wide.error_code, INVALID_REPLICATION_FACTOR, "{}", too_wide.error_message);

    // WatchMetadata delivers the topic.
    let watch_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let watched = loop {
        let snapshot = tokio::time::timeout_at(watch_deadline, watch.next())
            .await
            .expect("the watch shows the topic within 5 s")
            .expect("the stream stays open")
            .expect("a metadata snapshot");
        if snapshot.topics.iter().any(|t| t.name == "orders") {
            break snapshot;
        }
    };
    assert_eq!(watched.controller_id, 1);
    assert_eq!(watched.controller_address, address);
    assert_eq!(watched.default_min_insync_replicas, 1);

    // AlterPartition epoch checks (ReplicationControlManager.validateAlterPartitionData).
    let partition = topic.partitions[0].clone();
    let leader = partition.leader;
    let follower = partition.replicas[1];
    let code = |response: insync_proto::AlterPartitionResponse| response.error.unwrap().error_code;
    let stale_leader_epoch = client.alter_partition(alter(leader, &partition, -1, 0, vec![leader])).await.unwrap();
    assert_eq!(code(stale_leader_epoch.into_inner()), FENCED_LEADER_EPOCH);
    let stale_partition_epoch = client.alter_partition(alter(leader, &partition, 0, 5, vec![leader])).await.unwrap();
    assert_eq!(code(stale_partition_epoch.into_inner()), INVALID_UPDATE_VERSION);
    let not_leader = client.alter_partition(alter(follower, &partition, 0, 0, vec![follower])).await.unwrap();
    assert_eq!(code(not_leader.into_inner()), NOT_LEADER_OR_FOLLOWER);
    let shrink =
        client.alter_partition(alter(leader, &partition, 0, 0, vec![leader, follower])).await.unwrap().into_inner();
    assert_eq!(shrink.error.as_ref().unwrap().error_code, 0);
    let committed = shrink.partition.unwrap();
    assert_eq!((committed.leader_epoch, committed.partition_epoch), (0, 1));
    assert_eq!(committed.isr, vec![leader, follower]);

    // The leader reports its replica offline (a storage error): it leaves the ISR, the
    // follower takes over, and its other partitions stay as they were
    // (ReplicationControlManager.handleDirectoriesOffline). Repeating the report changes nothing.
    let before_offline = metadata(&mut client).await;
    let offline = insync_proto::OfflineReplica { topic: "orders".to_string(), partition: partition.partition };
    let report = insync_proto::BrokerHeartbeatRequest {
        broker_id: leader,
        incarnation: 100 + leader as u64,
        want_shutdown: false,
        offline_replicas: vec![offline],
    };
    for _ in 0..2 {
        let answer = client.broker_heartbeat(report.clone()).await.unwrap().into_inner();
        assert_eq!(answer.error.unwrap().error_code, 0);
        assert!(!answer.is_fenced, "only the replica is offline, not the broker");
    }
    let after_offline = metadata(&mut client).await;
    assert_eq!(after_offline.version, before_offline.version + 1, "one entry for the repeated report");
    let moved = &after_offline.topics[0].partitions[partition.partition as usize];
    assert_eq!((moved.leader, moved.isr.clone()), (follower, vec![follower]));
    assert_eq!(after_offline.topics[0].partitions[1..], before_offline.topics[0].partitions[1..]);

    // Broker 3 stops heartbeating: fenced after the session timeout, out of every ISR.
    let mut beating = beating;
    drop(beating.remove(2));
    let silent_since = Instant::now();
    let fenced_metadata = eventually(
        Duration::from_millis(SESSION_TIMEOUT_MS + 1000),
        "broker 3 to be fenced within session timeout + 1 s",
        || {
            let mut client = client.clone();
            async move {
                let snapshot = metadata(&mut client).await;
                snapshot.brokers.iter().any(|b| b.id == 3 && b.fenced).then_some(snapshot)
            }
        },
    )
    .await;
    let fenced_after = silent_since.elapsed();
    assert!(fenced_after >= Duration::from_millis(SESSION_TIMEOUT_MS - 250), "fenced too early: {fenced_after:?}");
    for partition in &fenced_metadata.topics[0].partitions {
        assert!(!partition.isr.contains(&3), "broker 3 left every ISR: {partition:?}");
        assert_ne!(partition.leader, 3);
        assert_ne!(partition.leader, -1, "another ISR member took over");
    }
    assert!(!fenced_metadata.brokers.iter().any(|b| b.id != 3 && b.fenced), "the others stay unfenced");

    // Controlled shutdown of broker 2 (KIP-631): leadership moves, then it may stop.
    let shutdown = heartbeat(&mut client, 2, 102, true).await;
    assert_eq!(shutdown.error.unwrap().error_code, 0);
    assert!(shutdown.should_shutdown);
    let after_shutdown = metadata(&mut client).await;
    assert!(after_shutdown.brokers.iter().any(|b| b.id == 2 && b.in_controlled_shutdown));
    for partition in &after_shutdown.topics[0].partitions {
        assert_ne!(partition.leader, 2);
    }
    drop(beating);

    // Snapshot, then one more change in the log after it: a restart must rebuild both.
    controller.node.trigger_snapshot().await.unwrap();
    let later = client
        .create_topic(CreateTopicRequest {
            name: "after-snapshot".to_string(),
            replication_factor: 1,
            min_insync_replicas: 0,
            ..create.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(later.error_code, 0, "{}", later.error_message);
    let before_restart = metadata(&mut client).await;
    controller.stop().await;

    let (listener, address) = support::bind().await;
    let voters = BTreeMap::from([(1u64, address)]);
    // A long session so that no fencing changes the state while it is compared.
    let mut restarted = RunningController::start(1, data_dir.path(), voters, listener, 60_000).await;
    let mut client = restarted.client().await;
    let after_restart = eventually(Duration::from_secs(10), "the restarted controller to lead", || {
        let mut client = client.clone();
        async move {
            let snapshot = metadata(&mut client).await;
            (snapshot.controller_id == 1 && snapshot.version >= before_restart.version).then_some(snapshot)
        }
    })
    .await;
    assert_eq!(after_restart.topics, before_restart.topics, "every topic survives the restart");
    assert_eq!(
        after_restart.brokers.iter().map(|b| (b.id, b.incarnation)).collect::<Vec<_>>(),
        before_restart.brokers.iter().map(|b| (b.id, b.incarnation)).collect::<Vec<_>>()
    );
    let mut names: Vec<String> = after_restart.topics.iter().map(|t| t.name.clone()).collect();
    names.sort();
    assert_eq!(names, vec!["after-snapshot".to_string(), "orders".to_string()]);
    let duplicate = client.create_topic(create).await.unwrap().into_inner();
    assert_eq!(duplicate.error_code, TOPIC_ALREADY_EXISTS);
    restarted.stop().await;
}
