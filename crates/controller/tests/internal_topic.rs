//! The internal topic `__consumer_offsets` over a one-voter controller's real gRPC: only a
//! request marked `internal` (a broker's own) creates it, and nobody adds partitions to it,
//! changes its configs or deletes it, validate_only included; other topics are unaffected.
mod support;

use insync_proto::{AlterTopicConfigsRequest, CreatePartitionsRequest, CreateTopicRequest, DeleteTopicRequest};
use std::collections::BTreeMap;
use std::time::Duration;
use support::{eventually, heartbeat, metadata, register, Heartbeater, RunningController};

const OFFSETS_TOPIC: &str = "__consumer_offsets";
const TOPIC_ALREADY_EXISTS: i32 = 36;
const INVALID_REQUEST: i32 = 42;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_brokers_create_the_offsets_topic_and_nobody_reshapes_it() {
    support::init_tracing();
    tokio::time::timeout(Duration::from_secs(60), scenario()).await.expect("scenario finishes within 60 s");
}

fn offsets_topic(internal: bool, validate_only: bool) -> CreateTopicRequest {
    CreateTopicRequest {
        name: OFFSETS_TOPIC.to_string(),
        partitions: 3,
        replication_factor: 3,
        configs: [("retention.ms".to_string(), "-1".to_string()), ("retention.bytes".to_string(), "-1".to_string())]
            .into(),
        validate_only,
        internal,
        ..Default::default()
    }
}

async fn scenario() {
    let data_dir = tempfile::tempdir().unwrap();
    let (listener, address) = support::bind().await;
    let voters = BTreeMap::from([(1u64, address)]);
    let mut controller = RunningController::start(1, data_dir.path(), voters, listener, 10_000).await;
    let node = controller.node.clone();
    eventually(Duration::from_secs(10), "controller 1 to lead", || async {
        (node.metrics_leader() == Some(1)).then_some(())
    })
    .await;
    let mut client = controller.client().await;
    for broker_id in 1..=3 {
        register(&mut client, broker_id, 100 + broker_id as u64).await;
        assert_eq!(heartbeat(&mut client, broker_id, 100 + broker_id as u64, false).await.error.unwrap().error_code, 0);
    }
    let _beating: Vec<Heartbeater> =
        (1..=3).map(|id| Heartbeater::start(vec![client.clone()], id, 100 + id as u64)).collect();

    // A user's creation (kafka-topics, `insync topic create`) is refused, validate_only too.
    for validate_only in [false, true] {
        let user = client.create_topic(offsets_topic(false, validate_only)).await.unwrap().into_inner();
        assert_eq!(user.error_code, INVALID_REQUEST, "{}", user.error_message);
        assert!(user.error_message.contains("Creation of internal topic __consumer_offsets is prohibited"));
    }
    // The mark makes no other topic internal.
    let marked = CreateTopicRequest { name: "orders".into(), ..offsets_topic(true, false) };
    let marked = client.create_topic(marked).await.unwrap().into_inner();
    assert_eq!(marked.error_code, INVALID_REQUEST, "{}", marked.error_message);

    // A broker's creation (group storage) works, and a second broker's answers "exists".
    let created = client.create_topic(offsets_topic(true, false)).await.unwrap().into_inner();
    assert_eq!(created.error_code, 0, "{}", created.error_message);
    let again = client.create_topic(offsets_topic(true, false)).await.unwrap().into_inner();
    assert_eq!(again.error_code, TOPIC_ALREADY_EXISTS, "{}", again.error_message);
    // A user asking for it now is still refused as a creation, not told it exists.
    let late = client.create_topic(offsets_topic(false, false)).await.unwrap().into_inner();
    assert_eq!(late.error_code, INVALID_REQUEST, "{}", late.error_message);

    for validate_only in [false, true] {
        let grow = CreatePartitionsRequest { name: OFFSETS_TOPIC.into(), count: 4, validate_only };
        let grown = client.create_partitions(grow).await.unwrap().into_inner();
        assert_eq!(grown.error_code, INVALID_REQUEST, "{}", grown.error_message);
        assert!(grown.error_message.contains("number of partitions"), "{}", grown.error_message);

        let alter = AlterTopicConfigsRequest {
            name: OFFSETS_TOPIC.into(),
            set: [("retention.ms".to_string(), "1000".to_string())].into(),
            validate_only,
            ..Default::default()
        };
        let altered = client.alter_topic_configs(alter).await.unwrap().into_inner();
        assert_eq!(altered.error_code, INVALID_REQUEST, "{}", altered.error_message);
        assert!(
            altered.error_message.contains("retention would delete committed offsets"),
            "{}",
            altered.error_message
        );
        let reset = AlterTopicConfigsRequest {
            name: OFFSETS_TOPIC.into(),
            delete: vec!["retention.ms".into()],
            validate_only,
            ..Default::default()
        };
        assert_eq!(client.alter_topic_configs(reset).await.unwrap().into_inner().error_code, INVALID_REQUEST);
    }
    let deleted = client
        .delete_topic(DeleteTopicRequest { name: OFFSETS_TOPIC.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.error_code, INVALID_REQUEST, "{}", deleted.error_message);

    // Nothing changed it.
    let md = metadata(&mut client).await;
    let topic = md.topics.iter().find(|t| t.name == OFFSETS_TOPIC).expect("the offsets topic");
    assert_eq!(topic.partitions.len(), 3);
    assert_eq!(topic.configs.get("retention.ms").map(String::as_str), Some("-1"));

    // An ordinary topic still grows and changes.
    let orders = CreateTopicRequest { name: "orders".into(), ..offsets_topic(false, false) };
    assert_eq!(client.create_topic(orders).await.unwrap().into_inner().error_code, 0);
    let grow = CreatePartitionsRequest { name: "orders".into(), count: 4, validate_only: false };
    assert_eq!(client.create_partitions(grow).await.unwrap().into_inner().error_code, 0);
    let alter = AlterTopicConfigsRequest {
        name: "orders".into(),
        set: [("retention.ms".to_string(), "1000".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(client.alter_topic_configs(alter).await.unwrap().into_inner().error_code, 0);
    controller.stop().await;
}
