//! The group admin APIs on the Kafka listener — ListGroups v0-4 (KIP-518 states filter in
//! v4), DescribeGroups v0-5, DeleteGroups v0-2 — as `kafka-consumer-groups` and
//! AdminClient use them (Kafka `KafkaApis.handleListGroupsRequest` & co.). ListGroups lists
//! the groups this broker coordinates (clients ask every broker); DescribeGroups and
//! DeleteGroups answer per group, NOT_COORDINATOR for a group coordinated elsewhere.
use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId,
    ListGroupsRequest, ListGroupsResponse,
};

use super::connection::{respond, respond_now, PendingReply, RequestMeta};
use super::group::{str_bytes, wire};
use super::KafkaContext;

/// DescribeGroups' authorized_operations when not asked for (Kafka `Integer.MIN_VALUE`).
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub(super) fn handle_list(context: &Arc<KafkaContext>, meta: RequestMeta, request: ListGroupsRequest) -> PendingReply {
    let states: Vec<String> = request.states_filter.iter().map(|s| s.to_string()).collect();
    let groups = context
        .groups
        .list(&states)
        .into_iter()
        .map(|(group_id, protocol_type, state)| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(group_id)))
                .with_protocol_type(str_bytes(protocol_type));
            if meta.api_version >= 4 {
                listed.with_group_state(str_bytes(state))
            } else {
                listed
            }
        })
        .collect();
    respond_now(meta, ListGroupsResponse::default().with_groups(groups))
}

pub(super) fn handle_describe(
    context: &Arc<KafkaContext>,
    meta: RequestMeta,
    request: DescribeGroupsRequest,
) -> PendingReply {
    let version = meta.api_version;
    let groups = request
        .groups
        .iter()
        .map(|group_id| {
            let described = DescribedGroup::default()
                .with_group_id(group_id.clone())
                .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
            match context.groups.describe(group_id) {
                Err(error) => described.with_error_code(wire(error)),
                Ok(d) => {
                    let members = d
                        .members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_group_instance_id(if version >= 4 {
                                    m.group_instance_id.map(str_bytes)
                                } else {
                                    None
                                })
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect();
                    described
                        .with_group_state(str_bytes(d.state))
                        .with_protocol_type(str_bytes(d.protocol_type))
                        .with_protocol_data(str_bytes(d.protocol))
                        .with_members(members)
                }
            }
        })
        .collect();
    respond_now(meta, DescribeGroupsResponse::default().with_groups(groups))
}

pub(super) fn handle_delete(
    context: &Arc<KafkaContext>,
    meta: RequestMeta,
    request: DeleteGroupsRequest,
) -> PendingReply {
    // Every deletion starts now (request order); the answer waits for their appends.
    let deletions: Vec<_> =
        request.groups_names.into_iter().map(|group_id| (context.groups.delete(&group_id), group_id)).collect();
    respond(meta, async move {
        let mut results = Vec::with_capacity(deletions.len());
        for (deleted, group_id) in deletions {
            let error = deleted.await;
            results.push(DeletableGroupResult::default().with_group_id(group_id).with_error_code(wire(error)));
        }
        DeleteGroupsResponse::default().with_results(results)
    })
}
