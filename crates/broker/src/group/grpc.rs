//! The gRPC group RPCs (`insync group list|describe|delete`): the coordinator's answers
//! converted to `insync.proto` messages at the edge, as the Kafka adapters do for the wire.
use std::sync::Arc;

use insync_proto as pb;
use insync_types::ErrorCode;

use super::consumer_protocol::assigned_partitions;
use super::GroupCoordinator;

pub fn list_groups(groups: &GroupCoordinator, request: pb::ListGroupsRequest) -> pb::ListGroupsResponse {
    let listed = groups.list(&request.states);
    pb::ListGroupsResponse {
        error_code: 0,
        groups: listed
            .into_iter()
            .map(|(group_id, protocol_type, state)| pb::GroupListing { group_id, protocol_type, state: state.into() })
            .collect(),
    }
}

pub fn describe_group(groups: &GroupCoordinator, request: pb::DescribeGroupRequest) -> pb::DescribeGroupResponse {
    let group_id = request.group_id;
    let described = groups.describe(&group_id);
    let offsets = groups.fetch_offsets(&group_id, None);
    let (description, offsets) = match (described, offsets) {
        (Ok(d), Ok(o)) => (d, o),
        (Err(error), _) | (_, Err(error)) => {
            return pb::DescribeGroupResponse { error_code: error.code(), group_id, ..Default::default() }
        }
    };
    let consumer = description.protocol_type == "consumer";
    let members = description
        .members
        .into_iter()
        .map(|m| pb::GroupMember {
            member_id: m.member_id,
            group_instance_id: m.group_instance_id.unwrap_or_default(),
            client_id: m.client_id,
            client_host: m.client_host,
            assignment: if consumer { assigned_partitions(&m.assignment).unwrap_or_default() } else { Vec::new() }
                .into_iter()
                .flat_map(|(topic, partitions)| {
                    partitions.into_iter().map(move |partition| pb::GroupPartition { topic: topic.clone(), partition })
                })
                .collect(),
        })
        .collect();
    pb::DescribeGroupResponse {
        error_code: ErrorCode::NONE.code(),
        group_id,
        state: description.state.into(),
        protocol_type: description.protocol_type,
        protocol: description.protocol,
        members,
        offsets: offsets
            .into_iter()
            .filter_map(|(topic, partition, value)| {
                value.map(|v| pb::GroupOffset { topic, partition, offset: v.offset, metadata: v.metadata })
            })
            .collect(),
    }
}

pub async fn delete_group(groups: &Arc<GroupCoordinator>, request: pb::DeleteGroupRequest) -> pb::DeleteGroupResponse {
    pb::DeleteGroupResponse { error_code: groups.delete(&request.group_id).await.code() }
}
