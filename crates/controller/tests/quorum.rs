//! A three-voter controller quorum over real gRPC: one leader is elected, followers redirect
//! with NOT_CONTROLLER, and when the active controller stops another takes over within a few
//! seconds and keeps serving (CreateTopic) with all the metadata committed before.
mod support;

use insync_proto::CreateTopicRequest;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{eventually, heartbeat, metadata, register, Heartbeater, RunningController, NOT_CONTROLLER};

fn topic(name: &str) -> CreateTopicRequest {
    CreateTopicRequest {
        name: name.to_string(),
        partitions: 2,
        replication_factor: 1,
        min_insync_replicas: 0,
        unclean_leader_election_enable: false,
        ..Default::default()
    }
}

/// The leader every running controller agrees on.
async fn agreed_leader(controllers: &[&RunningController], within: Duration) -> u64 {
    eventually(within, "the controllers to agree on a leader", || async {
        let leaders: Vec<Option<u64>> = controllers.iter().map(|c| c.node.metrics_leader()).collect();
        let first = leaders[0]?;
        let ids: Vec<u64> = controllers.iter().map(|c| c.node.node_id()).collect();
        (ids.contains(&first) && leaders.iter().all(|l| *l == Some(first))).then_some(first)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_a_leader_and_fail_over() {
    support::init_tracing();
    tokio::time::timeout(Duration::from_secs(90), scenario()).await.expect("scenario finishes within 90 s");
}

async fn scenario() {
    let directories: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut listeners = Vec::new();
    let mut voters = BTreeMap::new();
    for id in 1..=3u64 {
        let (listener, address) = support::bind().await;
        listeners.push(listener);
        voters.insert(id, address);
    }
    let mut controllers = Vec::new();
    for (index, listener) in listeners.into_iter().enumerate() {
        let id = index as u64 + 1;
        controllers.push(RunningController::start(id, directories[index].path(), voters.clone(), listener, 3000).await);
    }
    let leader = agreed_leader(&controllers.iter().collect::<Vec<_>>(), Duration::from_secs(15)).await;
    let leader_index = (leader - 1) as usize;
    let follower_index = (leader_index + 1) % 3;

    // A follower redirects state changes to the active controller.
    let mut follower = controllers[follower_index].client().await;
    let redirected = follower.create_topic(topic("nowhere")).await.unwrap().into_inner();
    assert_eq!(redirected.error_code, NOT_CONTROLLER, "{}", redirected.error_message);
    assert!(redirected.error_message.contains(&voters[&leader]), "{}", redirected.error_message);
    let heartbeat_redirect = heartbeat(&mut follower, 1, 1, false).await.error.unwrap();
    assert_eq!(heartbeat_redirect.error_code, NOT_CONTROLLER);
    assert_eq!(heartbeat_redirect.leader_id, leader as i32);
    assert_eq!(heartbeat_redirect.leader_address, voters[&leader]);

    let mut active = controllers[leader_index].client().await;
    register(&mut active, 1, 11).await;
    let clients = {
        let mut clients = Vec::new();
        for controller in &controllers {
            clients.push(controller.client().await);
        }
        clients
    };
    let _broker = Heartbeater::start(clients, 1, 11);
    eventually(Duration::from_secs(5), "broker 1 to be unfenced", || {
        let mut active = active.clone();
        async move { metadata(&mut active).await.brokers.iter().any(|b| b.id == 1 && !b.fenced).then_some(()) }
    })
    .await;
    let created = active.create_topic(topic("before-failover")).await.unwrap().into_inner();
    assert_eq!(created.error_code, 0, "{}", created.error_message);

    // Stop the active controller; the two others elect a new one.
    let stopped_at = Instant::now();
    controllers[leader_index].stop().await;
    let survivors: Vec<&RunningController> =
        controllers.iter().enumerate().filter(|(i, _)| *i != leader_index).map(|(_, c)| c).collect();
    let new_leader = agreed_leader(&survivors, Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    let failover = stopped_at.elapsed();
    tracing::info!("failover from controller {leader} to {new_leader} took {failover:?}");
    assert!(failover < Duration::from_secs(10), "failover took {failover:?}");

    let new_active = controllers[(new_leader - 1) as usize].client().await;
    let after = eventually(Duration::from_secs(5), "CreateTopic on the new active controller", || {
        let mut new_active = new_active.clone();
        async move {
            let response = new_active.create_topic(topic("after-failover")).await.ok()?.into_inner();
            assert!(response.error_code == 0 || response.error_code == NOT_CONTROLLER, "{}", response.error_message);
            (response.error_code == 0).then_some(response)
        }
    })
    .await;
    assert_eq!(after.topic.unwrap().partitions.len(), 2);

    // Every surviving controller serves the same metadata, with the new leader in it.
    for survivor in &survivors {
        let client = survivor.client().await;
        let seen = eventually(Duration::from_secs(5), "the metadata to reach every survivor", || {
            let mut client = client.clone();
            async move {
                let snapshot = metadata(&mut client).await;
                (snapshot.topics.len() == 2).then_some(snapshot)
            }
        })
        .await;
        assert_eq!(seen.controller_id, new_leader as i32);
        assert_eq!(seen.controller_address, voters[&new_leader]);
        let names: Vec<&str> = seen.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["after-failover", "before-failover"]);
    }

    for controller in controllers.iter_mut() {
        controller.stop().await;
    }
}
