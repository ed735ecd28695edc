//! Request frames encoded by `kafka-protocol` (the decoder the walk guards) with one element
//! in every array of every served API and version: the walk's differential tests and the
//! fuzzing campaign's seeds for versions the captured clients never sent.
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_partitions_request::{CreatePartitionsAssignment, CreatePartitionsTopic};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::schema::REQUESTS;

fn name(s: &'static str) -> StrBytes {
    StrBytes::from_static_str(s)
}

fn topic(s: &'static str) -> TopicName {
    TopicName(name(s))
}

/// A request with one element in every array the version has, and an unknown tagged field
/// in flexible versions.
pub fn populated(api_key: ApiKey, v: i16) -> RequestKind {
    let tagged = || {
        let mut unknown = std::collections::BTreeMap::new();
        if api_key.request_header_version(v) >= 2 {
            unknown.insert(99, Bytes::from_static(b"xyz"));
        }
        unknown
    };
    match api_key {
        ApiKey::Produce => {
            RequestKind::Produce(ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
                TopicProduceData::default().with_name(topic("t")).with_partition_data(vec![
                    PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from_static(&[1; 70]))),
                ]),
            ]))
        }
        ApiKey::Fetch => {
            let mut request = FetchRequest::default()
                .with_max_wait_ms(500)
                .with_topics(vec![FetchTopic::default().with_topic(topic("t")).with_partitions(vec![
                    FetchPartition::default().with_partition(1).with_fetch_offset(5).with_partition_max_bytes(1 << 20),
                ])])
                .with_unknown_tagged_fields(tagged());
            if v >= 7 {
                request = request.with_forgotten_topics_data(vec![ForgottenTopic::default()
                    .with_topic(topic("old"))
                    .with_partitions(vec![1, 2, 3])]);
            }
            if v >= 12 {
                request = request.with_cluster_id(Some(name("cluster")));
            }
            RequestKind::Fetch(request)
        }
        ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic("t"))
                .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-2)]),
        ])),
        ApiKey::Metadata => RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic("t")))]))
                .with_unknown_tagged_fields(tagged()),
        ),
        ApiKey::OffsetCommit => {
            RequestKind::OffsetCommit(OffsetCommitRequest::default().with_group_id(GroupId(name("g"))).with_topics(
                vec![OffsetCommitRequestTopic::default().with_name(topic("t")).with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(42)
                        .with_committed_metadata(Some(name("m"))),
                ])],
            ))
        }
        ApiKey::OffsetFetch => {
            RequestKind::OffsetFetch(OffsetFetchRequest::default().with_group_id(GroupId(name("g"))).with_topics(Some(
                vec![OffsetFetchRequestTopic::default().with_name(topic("t")).with_partition_indexes(vec![0, 1])],
            )))
        }
        ApiKey::FindCoordinator if v >= 4 => {
            RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_coordinator_keys(vec![name("g")]))
        }
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key(name("g"))),
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(name("g")))
                .with_protocol_type(name("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(name("range"))
                    .with_metadata(Bytes::from_static(b"meta"))]),
        ),
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default().with_group_id(GroupId(name("g"))).with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(name("m"))
                    .with_assignment(Bytes::from_static(b"a")),
            ]),
        ),
        ApiKey::LeaveGroup if v >= 3 => RequestKind::LeaveGroup(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(name("g")))
                .with_members(vec![MemberIdentity::default().with_member_id(name("m"))]),
        ),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(
            LeaveGroupRequest::default().with_group_id(GroupId(name("g"))).with_member_id(name("m")),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default().with_group_id(GroupId(name("g")))),
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::InitProducerId => RequestKind::InitProducerId(InitProducerIdRequest::default()),
        ApiKey::ListGroups | ApiKey::DescribeGroups | ApiKey::DeleteGroups => populated_group_admin(api_key, v),
        ApiKey::CreateTopics | ApiKey::DeleteTopics | ApiKey::ElectLeaders | ApiKey::DescribeCluster => {
            populated_admin(api_key, v, tagged())
        }
        ApiKey::DescribeConfigs
        | ApiKey::AlterConfigs
        | ApiKey::IncrementalAlterConfigs
        | ApiKey::CreatePartitions
        | ApiKey::DeleteRecords => populated_configs(api_key, v, tagged()),
        other => panic!("no populated request for {other:?}"),
    }
}

/// The group admin APIs' populated requests (ListGroups, DescribeGroups, DeleteGroups).
fn populated_group_admin(api_key: ApiKey, v: i16) -> RequestKind {
    match api_key {
        ApiKey::ListGroups if v >= 4 => {
            RequestKind::ListGroups(ListGroupsRequest::default().with_states_filter(vec![name("Stable")]))
        }
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::DescribeGroups => {
            RequestKind::DescribeGroups(DescribeGroupsRequest::default().with_groups(vec![GroupId(name("g"))]))
        }
        _ => RequestKind::DeleteGroups(DeleteGroupsRequest::default().with_groups_names(vec![GroupId(name("g"))])),
    }
}

/// The admin APIs' populated requests (CreateTopics, DeleteTopics, ElectLeaders,
/// DescribeCluster), `tagged` being the unknown tagged fields of a flexible version.
fn populated_admin(api_key: ApiKey, v: i16, tagged: std::collections::BTreeMap<i32, Bytes>) -> RequestKind {
    match api_key {
        ApiKey::CreateTopics => RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_topics(vec![CreatableTopic::default()
                    .with_name(topic("t"))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_assignments(vec![CreatableReplicaAssignment::default()
                        .with_partition_index(0)
                        .with_broker_ids(vec![BrokerId(1), BrokerId(2)])])
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(name("min.insync.replicas"))
                        .with_value(Some(name("2")))])])
                .with_timeout_ms(30_000)
                .with_validate_only(true)
                .with_unknown_tagged_fields(tagged.clone()),
        ),
        ApiKey::DeleteTopics if v >= 6 => RequestKind::DeleteTopics(
            DeleteTopicsRequest::default()
                .with_topics(vec![DeleteTopicState::default().with_name(Some(topic("t")))])
                .with_timeout_ms(30_000)
                .with_unknown_tagged_fields(tagged.clone()),
        ),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(
            DeleteTopicsRequest::default()
                .with_topic_names(vec![topic("t")])
                .with_timeout_ms(30_000)
                .with_unknown_tagged_fields(tagged.clone()),
        ),
        ApiKey::ElectLeaders => RequestKind::ElectLeaders(
            ElectLeadersRequest::default()
                .with_election_type(if v >= 1 { 1 } else { 0 })
                .with_topic_partitions(Some(vec![TopicPartitions::default()
                    .with_topic(topic("t"))
                    .with_partitions(vec![0, 1])]))
                .with_timeout_ms(30_000)
                .with_unknown_tagged_fields(tagged.clone()),
        ),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(
            DescribeClusterRequest::default()
                .with_include_cluster_authorized_operations(true)
                .with_unknown_tagged_fields(tagged.clone()),
        ),
        other => panic!("{other:?} is not an admin API"),
    }
}

/// The config and partition admin APIs' populated requests (DescribeConfigs, AlterConfigs,
/// IncrementalAlterConfigs, CreatePartitions, DeleteRecords).
fn populated_configs(api_key: ApiKey, v: i16, tagged: std::collections::BTreeMap<i32, Bytes>) -> RequestKind {
    match api_key {
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(
            DescribeConfigsRequest::default()
                .with_resources(vec![DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(name("t"))
                    .with_configuration_keys(Some(vec![name("retention.ms")]))])
                .with_include_synonyms(true)
                .with_include_documentation(v >= 3)
                .with_unknown_tagged_fields(tagged),
        ),
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(
            AlterConfigsRequest::default()
                .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(name("t"))
                    .with_configs(vec![alter_configs_request::AlterableConfig::default()
                        .with_name(name("retention.ms"))
                        .with_value(Some(name("60000")))])])
                .with_validate_only(true)
                .with_unknown_tagged_fields(tagged),
        ),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default()
                .with_resources(vec![incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(name("t"))
                    .with_configs(vec![incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(name("retention.ms"))
                        .with_config_operation(0)
                        .with_value(Some(name("60000")))])])
                .with_validate_only(true)
                .with_unknown_tagged_fields(tagged),
        ),
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(
            CreatePartitionsRequest::default()
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(topic("t"))
                    .with_count(3)
                    .with_assignments(Some(vec![
                        CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(1), BrokerId(2)])
                    ]))])
                .with_timeout_ms(30_000)
                .with_validate_only(true)
                .with_unknown_tagged_fields(tagged),
        ),
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(
            DeleteRecordsRequest::default()
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(topic("t"))
                    .with_partitions(vec![DeleteRecordsPartition::default().with_partition_index(0).with_offset(-1)])])
                .with_timeout_ms(30_000)
                .with_unknown_tagged_fields(tagged),
        ),
        other => panic!("{other:?} is not a config or partition admin API"),
    }
}

/// Header and body as a client puts them after the size prefix.
pub fn frame(api_key: ApiKey, version: i16) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(name("client")));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, api_key.request_header_version(version)).expect("header encodes");
    let header_len = buf.len();
    if populated(api_key, version).encode(&mut buf, version).is_err() {
        // Versions above those the broker serves rename fields (topic ids for names, group
        // batches): those get the default request of their version.
        assert!(
            !served(api_key, version),
            "{api_key:?} v{version} is served but its populated request does not encode"
        );
        buf.truncate(header_len);
        default_request(api_key).encode(&mut buf, version).expect("default body encodes");
    }
    buf.to_vec()
}

/// The versions the broker's Kafka listener serves (its `SUPPORTED_APIS`).
pub fn served(api_key: ApiKey, v: i16) -> bool {
    let (low, high) = match api_key {
        ApiKey::Produce => (3, 9),
        ApiKey::Fetch => (4, 12),
        ApiKey::ListOffsets => (1, 7),
        ApiKey::Metadata => (0, 12),
        ApiKey::OffsetCommit => (2, 8),
        ApiKey::OffsetFetch => (1, 7),
        ApiKey::FindCoordinator | ApiKey::Heartbeat | ApiKey::ApiVersions | ApiKey::InitProducerId => (0, 4),
        ApiKey::JoinGroup => (0, 9),
        ApiKey::LeaveGroup | ApiKey::SyncGroup => (0, 5),
        ApiKey::CreateTopics => (2, 7),
        ApiKey::DeleteTopics => (1, 6),
        ApiKey::ElectLeaders => (0, 2),
        ApiKey::DescribeCluster => (0, 1),
        ApiKey::DeleteRecords => (0, 2),
        ApiKey::DescribeConfigs => (1, 4),
        ApiKey::AlterConfigs => (0, 2),
        ApiKey::CreatePartitions => (0, 3),
        ApiKey::IncrementalAlterConfigs => (0, 1),
        ApiKey::ListGroups => (0, 4),
        ApiKey::DescribeGroups => (0, 5),
        ApiKey::DeleteGroups => (0, 2),
        _ => return false,
    };
    low <= v && v <= high
}

fn default_request(api_key: ApiKey) -> RequestKind {
    match api_key {
        ApiKey::Produce => RequestKind::Produce(Default::default()),
        ApiKey::Fetch => RequestKind::Fetch(Default::default()),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(Default::default()),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(Default::default()),
        other => populated(other, 0),
    }
}

/// Every (API, version) with a schema here that kafka-protocol also knows.
pub fn every_version() -> Vec<(ApiKey, i16)> {
    let mut out = Vec::new();
    for schema in REQUESTS {
        let api_key = ApiKey::try_from(schema.api_key).expect("kafka-protocol knows every schema's API key");
        let codec = api_key.valid_versions();
        for v in schema.valid.low.max(codec.min)..=schema.valid.high.min(codec.max) {
            out.push((api_key, v));
        }
    }
    out
}
