//! The classic consumer-group protocol on the Kafka listener: JoinGroup, SyncGroup,
//! Heartbeat and LeaveGroup requests converted to the coordinator's own types
//! (`crate::group`) and its answers back to every served version (Kafka
//! `KafkaApis.handleJoinGroupRequest` & co.). The rules live in `crate::group::coordinator`;
//! offsets are in `group_offsets.rs`, the admin APIs in `group_admin.rs`.
use std::net::SocketAddr;
use std::sync::Arc;

use insync_types::ErrorCode;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::connection::{respond, respond_now, PendingReply, RequestMeta};
use super::KafkaContext;
use crate::group::coordinator::{JoinRequest, JoinResult, MemberRef, SyncRequest, SyncResult};

/// An error code as the group responses carry it (Kafka's codes are int16 on the wire).
pub(super) fn wire(error: ErrorCode) -> i16 {
    error.code() as i16
}

pub(super) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Kafka's client host as DescribeGroups shows it: `/address`.
pub(super) fn client_host(peer: SocketAddr) -> String {
    format!("/{}", peer.ip())
}

pub(super) fn handle_join(
    context: &Arc<KafkaContext>,
    meta: RequestMeta,
    client_id: Option<StrBytes>,
    peer: SocketAddr,
    request: JoinGroupRequest,
) -> PendingReply {
    let version = meta.api_version;
    let join = JoinRequest {
        group_id: request.group_id.0.to_string(),
        partition: 0,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: client_id.as_deref().unwrap_or("").to_string(),
        client_host: client_host(peer),
        session_timeout_ms: request.session_timeout_ms,
        // JoinGroup v0 has no rebalance timeout: the session timeout bounds the rebalance.
        rebalance_timeout_ms: if version >= 1 { request.rebalance_timeout_ms } else { request.session_timeout_ms },
        protocol_type: request.protocol_type.to_string(),
        protocols: request.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        require_known_member_id: version >= 4,
    };
    // Acted on now, in the connection's request order; only the answer waits.
    let joined = context.groups.join(join);
    respond(meta, async move { join_response(version, joined.await) })
}

fn join_response(version: i16, result: JoinResult) -> JoinGroupResponse {
    // KIP-814: before v9 a static member that rejoined a Stable group gets the leader id
    // from before its rejoin and no member list, so a restarted leader (whose new id differs)
    // acts as a follower and does not assign (Kafka `updateStaticMemberAndRebalance`).
    let (leader, members) = match result.leader_before_v9 {
        Some(previous) if version < 9 => (previous, Vec::new()),
        _ => (result.leader, result.members),
    };
    let members = members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(m.member_id))
                .with_group_instance_id(if version >= 5 { m.group_instance_id.map(str_bytes) } else { None })
                .with_metadata(m.metadata)
        })
        .collect();
    let mut response = JoinGroupResponse::default()
        .with_error_code(wire(result.error))
        .with_generation_id(result.generation_id)
        .with_leader(str_bytes(leader))
        .with_member_id(str_bytes(result.member_id))
        .with_members(members);
    // protocol_name is nullable from v7 only; older versions carry "" for none.
    response = if version >= 7 {
        response
            .with_protocol_name(result.protocol_name.map(str_bytes))
            .with_protocol_type(result.protocol_type.map(str_bytes))
    } else {
        response.with_protocol_name(Some(str_bytes(result.protocol_name.unwrap_or_default())))
    };
    if version >= 9 {
        response = response.with_skip_assignment(result.skip_assignment);
    }
    response
}

pub(super) fn handle_sync(context: &Arc<KafkaContext>, meta: RequestMeta, request: SyncGroupRequest) -> PendingReply {
    let version = meta.api_version;
    let sync = SyncRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        generation_id: request.generation_id,
        protocol_type: request.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: request.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: request.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect(),
    };
    // Kafka `SyncGroupRequest.areMandatoryProtocolTypeAndNamePresent`: v5+ must name both.
    if version >= 5 && (sync.protocol_type.is_none() || sync.protocol_name.is_none()) {
        return respond_now(meta, sync_response(version, SyncResult::error(ErrorCode::INCONSISTENT_GROUP_PROTOCOL)));
    }
    let synced = context.groups.sync(sync);
    respond(meta, async move { sync_response(version, synced.await) })
}

fn sync_response(version: i16, result: SyncResult) -> SyncGroupResponse {
    let response = SyncGroupResponse::default().with_error_code(wire(result.error)).with_assignment(result.assignment);
    if version >= 5 {
        response
            .with_protocol_type(result.protocol_type.map(str_bytes))
            .with_protocol_name(result.protocol_name.map(str_bytes))
    } else {
        response
    }
}

pub(super) fn handle_heartbeat(
    context: &Arc<KafkaContext>,
    meta: RequestMeta,
    request: HeartbeatRequest,
) -> PendingReply {
    let error = context.groups.heartbeat(MemberRef {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        generation_id: request.generation_id,
    });
    respond_now(meta, HeartbeatResponse::default().with_error_code(wire(error)))
}

pub(super) fn handle_leave(context: &Arc<KafkaContext>, meta: RequestMeta, request: LeaveGroupRequest) -> PendingReply {
    let group_id = request.group_id.0.to_string();
    // v0-2 name one member; v3+ a batch, by member id or group.instance.id (KIP-345).
    let leaving: Vec<(String, Option<String>)> = if meta.api_version >= 3 {
        request
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|s| s.to_string())))
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let response = match context.groups.leave(&group_id, &leaving) {
        Err(error) => LeaveGroupResponse::default().with_error_code(wire(error)),
        Ok(results) if meta.api_version >= 3 => {
            let members = leaving
                .into_iter()
                .zip(results)
                .map(|((member_id, instance_id), error)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(member_id))
                        .with_group_instance_id(instance_id.map(str_bytes))
                        .with_error_code(wire(error))
                })
                .collect();
            LeaveGroupResponse::default().with_members(members)
        }
        Ok(results) => {
            LeaveGroupResponse::default().with_error_code(wire(results.first().copied().unwrap_or(ErrorCode::NONE)))
        }
    };
    respond_now(meta, response)
}
