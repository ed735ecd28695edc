//! Metadata (Kafka `KafkaApis.handleTopicMetadataRequest`): the live brokers with their
//! Kafka listener addresses (registered with the controller, so every broker names every
//! other), and per partition the leader, leader epoch, replicas, ISR and offline replicas
//! from this broker's copy of the cluster metadata. Topics are never auto-created
//! (insync has no auto.create.topics.enable): unknown ones answer UNKNOWN_TOPIC_OR_PARTITION.
use std::collections::BTreeMap;
use std::sync::Arc;

use insync_proto as pb;
use insync_types::ErrorCode;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::connection::{respond_now, PendingReply, RequestMeta};
use super::{kafka_endpoint, KafkaContext};

/// The cluster id clients see (Kafka's is a random base64 UUID; clients only compare it).
pub const CLUSTER_ID: &str = "insync";

pub(super) fn handle(context: &Arc<KafkaContext>, meta: RequestMeta, request: MetadataRequest) -> PendingReply {
    let metadata = context.replica_manager.metadata();
    // v0: an empty list means every topic; v1+: null means every topic, empty means none.
    let wanted: Option<Vec<String>> = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && meta.api_version == 0 => None,
        Some(topics) => Some(topics.into_iter().filter_map(|t| t.name.map(|n| n.0.to_string())).collect()),
    };
    respond_now(meta, response(&metadata, context.replica_manager.broker_id, wanted.as_deref()))
}

/// Builds the answer from a metadata snapshot; `wanted` None = every topic.
pub fn response(metadata: &pb::ClusterMetadata, local_broker: i32, wanted: Option<&[String]>) -> MetadataResponse {
    let brokers = live_brokers(metadata);
    let fenced: Vec<i32> = metadata.brokers.iter().filter(|b| b.fenced).map(|b| b.id).collect();
    let topics = match wanted {
        None => metadata.topics.iter().map(|t| topic(t, &brokers, &fenced)).collect(),
        Some(names) => names
            .iter()
            .map(|name| match metadata.topics.iter().find(|t| &t.name == name) {
                Some(t) => topic(t, &brokers, &fenced),
                None => MetadataResponseTopic::default()
                    .with_error_code(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code() as i16)
                    .with_name(Some(TopicName(StrBytes::from_string(name.clone())))),
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(
            brokers
                .iter()
                .map(|(id, (host, port))| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(*id))
                        .with_host(StrBytes::from_string(host.clone()))
                        .with_port(*port)
                })
                .collect(),
        )
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        // KRaft brokers answer with a live broker here (admin clients send controller
        // requests to it, and brokers forward them); this broker is live by definition.
        .with_controller_id(BrokerId(local_broker))
        .with_topics(topics)
}

/// The brokers Kafka clients may dial, by id, with their Kafka listener's host and port.
/// Kafka lists only live brokers (MetadataCache.getAliveBrokerNodes): fenced ones and
/// brokers without a Kafka listener cannot be dialled. Metadata and DescribeCluster share it.
pub(super) fn live_brokers(metadata: &pb::ClusterMetadata) -> BTreeMap<i32, (String, i32)> {
    metadata
        .brokers
        .iter()
        .filter(|b| !b.fenced)
        .filter_map(|b| kafka_endpoint(b).map(|endpoint| (b.id, endpoint)))
        .collect()
}

fn topic(t: &pb::TopicMetadata, brokers: &BTreeMap<i32, (String, i32)>, fenced: &[i32]) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .map(|p| {
            // A leader clients cannot dial is no leader to them (Kafka answers
            // LEADER_NOT_AVAILABLE / LISTENER_NOT_FOUND); they refresh and retry.
            let reachable = p.leader >= 0 && brokers.contains_key(&p.leader);
            MetadataResponsePartition::default()
                .with_error_code(if reachable { 0 } else { ErrorCode::LEADER_NOT_AVAILABLE.code() as i16 })
                .with_partition_index(p.partition)
                .with_leader_id(BrokerId(if reachable { p.leader } else { -1 }))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect())
                .with_offline_replicas(p.replicas.iter().filter(|r| fenced.contains(r)).map(|r| BrokerId(*r)).collect())
        })
        .collect();
    // Kafka clients key topics by id from Metadata v10 (KIP-516); a topic without an id (or
    // an unparsable one) is the nil UUID, which Kafka too sends when it has none.
    let topic_id = uuid::Uuid::parse_str(&t.topic_id).unwrap_or(uuid::Uuid::nil());
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(topic_id)
        // Kafka `Topic.isInternal`: consumers skip internal topics in pattern subscriptions.
        .with_is_internal(t.name == crate::group::storage::OFFSETS_TOPIC)
        .with_partitions(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> pb::ClusterMetadata {
        let broker = |id: i32, fenced: bool, kafka: bool| pb::BrokerMetadata {
            id,
            address: format!("127.0.0.1:{}", 9091 + id),
            kafka_address: if kafka { format!("127.0.0.1:{}", 19091 + id) } else { String::new() },
            fenced,
            ..Default::default()
        };
        pb::ClusterMetadata {
            brokers: vec![broker(1, false, true), broker(2, true, true), broker(3, false, false)],
            topics: vec![pb::TopicMetadata {
                name: "t".into(),
                partitions: vec![
                    pb::PartitionMetadata {
                        partition: 0,
                        leader: 1,
                        leader_epoch: 4,
                        replicas: vec![1, 2, 3],
                        isr: vec![1, 3],
                        ..Default::default()
                    },
                    pb::PartitionMetadata {
                        partition: 1,
                        leader: 3,
                        replicas: vec![3, 1],
                        isr: vec![3],
                        ..Default::default()
                    },
                    pb::PartitionMetadata {
                        partition: 2,
                        leader: -1,
                        replicas: vec![2],
                        isr: vec![2],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn lists_live_brokers_with_kafka_listeners_and_their_partitions() {
        let r = response(&metadata(), 1, None);
        assert_eq!(r.brokers.len(), 1, "broker 2 is fenced, broker 3 has no Kafka listener");
        assert_eq!((r.brokers[0].node_id.0, r.brokers[0].host.as_str(), r.brokers[0].port), (1, "127.0.0.1", 19092));
        let p = &r.topics[0].partitions;
        assert_eq!((p[0].error_code, p[0].leader_id.0, p[0].leader_epoch), (0, 1, 4));
        assert_eq!(p[0].offline_replicas, vec![BrokerId(2)]);
        assert_eq!((p[1].error_code, p[1].leader_id.0), (5, -1), "leader 3 cannot be dialled");
        assert_eq!((p[2].error_code, p[2].leader_id.0), (5, -1), "offline partition");
    }

    #[test]
    fn unknown_topics_answer_unknown_topic_or_partition() {
        let r = response(&metadata(), 1, Some(&["t".to_string(), "nope".to_string()]));
        assert_eq!(r.topics.len(), 2);
        assert_eq!(r.topics[1].error_code, 3);
        assert!(r.topics[1].partitions.is_empty());
        assert!(response(&metadata(), 1, Some(&[])).topics.is_empty());
    }
}
