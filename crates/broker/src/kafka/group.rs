//! FindCoordinator and a minimal consumer-group coordinator, as far as a plain consumer
//! with a `group.id` needs (Kafka `GroupCoordinator`/`GroupMetadataManager`, classic
//! protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch).
//!
//! Deliberate limits, documented in docs/operations.md ("Use your Kafka tools"):
//! - One member per group (Kafka's `group.max.size` = 1, KIP-389): a second live member
//!   gets GROUP_MAX_SIZE_REACHED (81). A member that left (LeaveGroup) or whose session
//!   timed out frees the group at once, so consumers that take turns work; consumers that
//!   share partitions of one group at the same time do not. There are no rebalances to
//!   wait for: a JoinGroup completes at once with the joiner as leader.
//! - State (members, committed offsets) lives in the coordinator broker's memory, not in a
//!   replicated `__consumer_offsets`: it is lost when that broker restarts or when the
//!   coordinator moves to another broker (it moves only while the chosen broker is fenced).
//!   Consumers then start from `auto.offset.reset`.
//!
//! The coordinator of a group is one broker chosen deterministically from the registered
//! brokers (Kafka `Utils.abs(groupId.hashCode) % offsets.topic.num.partitions`, with brokers
//! in place of partitions), skipping fenced ones, so every broker names the same one.
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use insync_proto as pb;
use insync_types::ErrorCode;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tracing::{info, warn};

use super::connection::{respond_now, PendingReply, RequestMeta};
use super::{kafka_endpoint, KafkaContext};

/// Kafka group.min.session.timeout.ms / group.max.session.timeout.ms.
const GROUP_MIN_SESSION_TIMEOUT_MS: i32 = 6_000;
const GROUP_MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;
/// Bounds on the coordinator's memory.
const MAX_GROUPS: usize = 10_000;
const MAX_OFFSETS_PER_GROUP: usize = 100_000;
/// Kafka offset.metadata.max.bytes.
const OFFSET_METADATA_MAX_BYTES: usize = 4096;
/// FindCoordinator key types (Kafka `FindCoordinatorRequest.CoordinatorType`).
const KEY_TYPE_GROUP: i8 = 0;

/// An error code as the group responses carry it: Kafka's codes are int16 on the wire, and
/// every `ErrorCode` number fits.
fn wire(error: ErrorCode) -> i16 {
    error.code() as i16
}

/// The one member of a group.
#[derive(Debug, Clone)]
struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    session_timeout: Duration,
    last_seen: Instant,
    /// The assignment the member (as leader) gave itself in SyncGroup.
    assignment: Bytes,
}

#[derive(Debug, Clone)]
struct CommittedOffset {
    offset: i64,
    leader_epoch: i32,
    metadata: Option<String>,
}

#[derive(Debug, Default)]
struct Group {
    generation_id: i32,
    protocol_type: String,
    protocol_name: String,
    member: Option<Member>,
    offsets: BTreeMap<(String, i32), CommittedOffset>,
}

impl Group {
    /// Drops the member whose session expired (Kafka's heartbeat expiration, checked
    /// lazily: nothing else depends on noticing it sooner with a single member).
    fn expire(&mut self, group_id: &str, now: Instant) {
        if let Some(member) = &self.member {
            if now.duration_since(member.last_seen) > member.session_timeout {
                info!(
                    "group {group_id}: member {} expired after {} ms without a heartbeat",
                    member.member_id,
                    member.session_timeout.as_millis()
                );
                self.member = None;
            }
        }
    }

    /// Kafka `GroupCoordinator.validateCurrentMember`-style check for Sync/Heartbeat/Commit.
    fn check_member(
        &mut self,
        group_id: &str,
        member_id: &str,
        generation_id: i32,
        now: Instant,
    ) -> Result<(), ErrorCode> {
        self.expire(group_id, now);
        match &mut self.member {
            Some(member) if member.member_id == member_id => {
                if generation_id != self.generation_id {
                    return Err(ErrorCode::ILLEGAL_GENERATION);
                }
                member.last_seen = now;
                Ok(())
            }
            _ => Err(ErrorCode::UNKNOWN_MEMBER_ID),
        }
    }
}

/// Groups coordinated by this broker.
#[derive(Debug, Default)]
pub struct GroupCoordinator {
    groups: Mutex<HashMap<String, Group>>,
    next_member: AtomicU64,
}

impl GroupCoordinator {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_member_id(&self, client_id: &str) -> String {
        // Kafka: clientId + "-" + a random UUID. Unique per broker process is enough here:
        // the group lives on this broker only.
        let n = self.next_member.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let client = if client_id.is_empty() { "consumer" } else { client_id };
        format!("{client}-{nanos:016x}-{n}")
    }
}

/// Java's `String.hashCode` over UTF-16 units, as Kafka hashes group ids.
fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(i32::from(unit)))
}

/// The broker coordinating `group_id`, if any broker can (see the module doc).
pub fn coordinator_for<'a>(metadata: &'a pb::ClusterMetadata, group_id: &str) -> Option<&'a pb::BrokerMetadata> {
    let mut brokers: Vec<&pb::BrokerMetadata> = metadata.brokers.iter().collect();
    brokers.sort_by_key(|b| b.id);
    if brokers.is_empty() {
        return None;
    }
    let start = (java_string_hash(group_id) & 0x7fff_ffff) as usize % brokers.len();
    (0..brokers.len())
        .map(|i| brokers[(start + i) % brokers.len()])
        .find(|b| !b.fenced && !b.in_controlled_shutdown && kafka_endpoint(b).is_some())
}

/// NOT_COORDINATOR unless this broker coordinates `group_id` (clients then ask
/// FindCoordinator again).
fn check_coordinator(context: &KafkaContext, group_id: &str) -> Result<(), ErrorCode> {
    if group_id.is_empty() {
        return Err(ErrorCode::INVALID_GROUP_ID);
    }
    match coordinator_for(&context.replica_manager.metadata(), group_id) {
        Some(b) if b.id == context.replica_manager.broker_id => Ok(()),
        Some(_) => Err(ErrorCode::NOT_COORDINATOR),
        None => Err(ErrorCode::COORDINATOR_NOT_AVAILABLE),
    }
}

fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub(super) fn handle_find_coordinator(
    context: &Arc<KafkaContext>,
    meta: RequestMeta,
    request: FindCoordinatorRequest,
) -> PendingReply {
    let metadata = context.replica_manager.metadata();
    let find = |key: &str| -> (ErrorCode, String, i32, String, i32) {
        if request.key_type != KEY_TYPE_GROUP {
            return (
                ErrorCode::UNSUPPORTED_VERSION,
                "insync has no transaction coordinator: transactions are not supported".into(),
                -1,
                String::new(),
                -1,
            );
        }
        match coordinator_for(&metadata, key).and_then(|b| kafka_endpoint(b).map(|(host, port)| (b.id, host, port))) {
            Some((id, host, port)) => (ErrorCode::NONE, String::new(), id, host, port),
            None => (
                ErrorCode::COORDINATOR_NOT_AVAILABLE,
                "no live broker with a Kafka listener".into(),
                -1,
                String::new(),
                -1,
            ),
        }
    };
    let response = if meta.api_version >= 4 {
        // KIP-699: a batch of keys.
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let (error_code, message, node, host, port) = find(key);
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(BrokerId(node))
                    .with_host(str_bytes(host))
                    .with_port(port)
                    .with_error_code(wire(error_code))
                    .with_error_message((error_code != ErrorCode::NONE).then(|| str_bytes(message)))
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let (error_code, message, node, host, port) = find(&request.key);
        let response = FindCoordinatorResponse::default()
            .with_error_code(wire(error_code))
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(host))
            .with_port(port);
        if meta.api_version >= 1 {
            response.with_error_message((error_code != ErrorCode::NONE).then(|| str_bytes(message)))
        } else {
            response
        }
    };
    respond_now(meta, response)
}

pub(super) fn handle_join(
    context: &Arc<KafkaContext>,
    meta: RequestMeta,
    client_id: Option<StrBytes>,
    request: JoinGroupRequest,
) -> PendingReply {
    let response = join(context, meta.api_version, client_id.as_deref().unwrap_or(""), request)
        .unwrap_or_else(|error_code| JoinGroupResponse::default().with_error_code(wire(error_code)));
    respond_now(meta, response)
}

fn join(
    context: &KafkaContext,
    version: i16,
    client_id: &str,
    request: JoinGroupRequest,
) -> Result<JoinGroupResponse, ErrorCode> {
    let group_id = request.group_id.0.to_string();
    check_coordinator(context, &group_id)?;
    if !(GROUP_MIN_SESSION_TIMEOUT_MS..=GROUP_MAX_SESSION_TIMEOUT_MS).contains(&request.session_timeout_ms) {
        return Err(ErrorCode::INVALID_SESSION_TIMEOUT);
    }
    if request.protocol_type.is_empty() || request.protocols.is_empty() {
        return Err(ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
    }
    let now = Instant::now();
    let coordinator = &context.groups;
    let mut groups = coordinator.lock();
    if !groups.contains_key(&group_id) && groups.len() >= MAX_GROUPS {
        warn!("group {group_id}: refused, this broker already coordinates {MAX_GROUPS} groups");
        return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
    }
    let group = groups.entry(group_id.clone()).or_default();
    group.expire(&group_id, now);
    let member_id = request.member_id.to_string();
    let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());
    let member_id = match &group.member {
        // A known member rejoining (after a metadata change, or to refresh its assignment).
        Some(m) if !member_id.is_empty() && m.member_id == member_id => member_id,
        // KIP-345: a restarted static member takes its own place back.
        Some(m) if instance_id.is_some() && m.group_instance_id == instance_id => m.member_id.clone(),
        Some(m) => {
            if !member_id.is_empty() {
                return Err(ErrorCode::UNKNOWN_MEMBER_ID);
            }
            warn!(
                "group {group_id}: refused a second member (client {client_id:?}) while {} is live: insync's Kafka \
                 listener coordinates one member per group (GROUP_MAX_SIZE_REACHED)",
                m.member_id
            );
            return Err(ErrorCode::GROUP_MAX_SIZE_REACHED);
        }
        None if !member_id.is_empty() => return Err(ErrorCode::UNKNOWN_MEMBER_ID),
        None => coordinator.new_member_id(client_id),
    };
    if group.member.is_none()
        && !group.protocol_type.is_empty()
        && group.protocol_type != request.protocol_type.as_str()
    {
        // A different kind of group under the same id is fine once it is empty (Kafka too).
        group.protocol_type.clear();
    }
    let protocol = &request.protocols[0];
    group.generation_id = group.generation_id.wrapping_add(1).max(1);
    group.protocol_type = request.protocol_type.to_string();
    group.protocol_name = protocol.name.to_string();
    // JoinGroup v0 has no rebalance timeout; the session timeout bounds the member alone.
    group.member = Some(Member {
        member_id: member_id.clone(),
        group_instance_id: instance_id.clone(),
        session_timeout: Duration::from_millis(request.session_timeout_ms as u64),
        last_seen: now,
        assignment: Bytes::new(),
    });
    info!(
        "group {group_id}: member {member_id} (client {client_id:?}) joined, generation {}, protocol {}",
        group.generation_id, group.protocol_name
    );
    let mut response = JoinGroupResponse::default()
        .with_generation_id(group.generation_id)
        .with_protocol_name(Some(str_bytes(group.protocol_name.clone())))
        .with_leader(str_bytes(member_id.clone()))
        .with_member_id(str_bytes(member_id.clone()))
        .with_members(vec![JoinGroupResponseMember::default()
            .with_member_id(str_bytes(member_id))
            .with_group_instance_id(if version >= 5 { instance_id.map(str_bytes) } else { None })
            .with_metadata(protocol.metadata.clone())]);
    if version >= 7 {
        response = response.with_protocol_type(Some(str_bytes(group.protocol_type.clone())));
    }
    Ok(response)
}

pub(super) fn handle_sync(context: &Arc<KafkaContext>, meta: RequestMeta, request: SyncGroupRequest) -> PendingReply {
    let group_id = request.group_id.0.to_string();
    let result = check_coordinator(context, &group_id).and_then(|()| {
        let mut groups = context.groups.lock();
        let group = groups.get_mut(&group_id).ok_or(ErrorCode::UNKNOWN_MEMBER_ID)?;
        group.check_member(&group_id, &request.member_id, request.generation_id, Instant::now())?;
        // The only member is the leader: its own entry of the assignments is its share.
        let assignment = request
            .assignments
            .iter()
            .find(|a| a.member_id == request.member_id)
            .map(|a| a.assignment.clone())
            .unwrap_or_default();
        if let Some(member) = &mut group.member {
            member.assignment = assignment.clone();
        }
        Ok((assignment, group.protocol_type.clone(), group.protocol_name.clone()))
    });
    let response = match result {
        Ok((assignment, protocol_type, protocol_name)) => {
            let response = SyncGroupResponse::default().with_assignment(assignment);
            if meta.api_version >= 5 {
                response
                    .with_protocol_type(Some(str_bytes(protocol_type)))
                    .with_protocol_name(Some(str_bytes(protocol_name)))
            } else {
                response
            }
        }
        Err(error_code) => SyncGroupResponse::default().with_error_code(wire(error_code)),
    };
    respond_now(meta, response)
}

pub(super) fn handle_heartbeat(
    context: &Arc<KafkaContext>,
    meta: RequestMeta,
    request: HeartbeatRequest,
) -> PendingReply {
    let group_id = request.group_id.0.to_string();
    let result = check_coordinator(context, &group_id).and_then(|()| {
        let mut groups = context.groups.lock();
        let group = groups.get_mut(&group_id).ok_or(ErrorCode::UNKNOWN_MEMBER_ID)?;
        group.check_member(&group_id, &request.member_id, request.generation_id, Instant::now())
    });
    respond_now(meta, HeartbeatResponse::default().with_error_code(wire(result.err().unwrap_or(ErrorCode::NONE))))
}

pub(super) fn handle_leave(context: &Arc<KafkaContext>, meta: RequestMeta, request: LeaveGroupRequest) -> PendingReply {
    let group_id = request.group_id.0.to_string();
    // v0-2 name one member; v3+ a batch (KIP-345).
    let leaving: Vec<(String, Option<String>)> = if meta.api_version >= 3 {
        request
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|s| s.to_string())))
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let response = match check_coordinator(context, &group_id) {
        Err(error_code) => LeaveGroupResponse::default().with_error_code(wire(error_code)),
        Ok(()) => {
            let mut groups = context.groups.lock();
            let mut results = Vec::with_capacity(leaving.len());
            for (member_id, instance_id) in &leaving {
                let group = groups.get_mut(&group_id);
                let found = group.as_ref().and_then(|g| g.member.as_ref()).is_some_and(|m| {
                    (!member_id.is_empty() && &m.member_id == member_id)
                        || (instance_id.is_some() && &m.group_instance_id == instance_id)
                });
                if found {
                    if let Some(group) = group {
                        info!("group {group_id}: member {member_id} left");
                        group.member = None;
                    }
                }
                results.push(if found { ErrorCode::NONE } else { ErrorCode::UNKNOWN_MEMBER_ID });
            }
            if meta.api_version >= 3 {
                let members = leaving
                    .into_iter()
                    .zip(results)
                    .map(|((member_id, instance_id), error_code)| {
                        MemberResponse::default()
                            .with_member_id(str_bytes(member_id))
                            .with_group_instance_id(instance_id.map(str_bytes))
                            .with_error_code(wire(error_code))
                    })
                    .collect();
                LeaveGroupResponse::default().with_members(members)
            } else {
                LeaveGroupResponse::default().with_error_code(wire(results.first().copied().unwrap_or(ErrorCode::NONE)))
            }
        }
    };
    respond_now(meta, response)
}

pub(super) fn handle_offset_commit(
    context: &Arc<KafkaContext>,
    meta: RequestMeta,
    request: OffsetCommitRequest,
) -> PendingReply {
    let group_id = request.group_id.0.to_string();
    let now = Instant::now();
    let generation_id = request.generation_id_or_member_epoch;
    // Kafka GroupCoordinator.handleCommitOffsets: a commit with generation < 0 and no member
    // id is a "simple" commit (standalone consumers, admin tools), accepted while the group
    // has no member; otherwise the member and generation must be current.
    let verdict = check_coordinator(context, &group_id).and_then(|()| {
        let mut groups = context.groups.lock();
        if !groups.contains_key(&group_id) && groups.len() >= MAX_GROUPS {
            return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
        }
        let group = groups.entry(group_id.clone()).or_default();
        group.expire(&group_id, now);
        if generation_id < 0 && request.member_id.is_empty() {
            return match group.member {
                None => Ok(()),
                Some(_) => Err(ErrorCode::UNKNOWN_MEMBER_ID),
            };
        }
        group.check_member(&group_id, &request.member_id, generation_id, now)
    });
    let mut groups = context.groups.lock();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let error_code = match verdict {
                        Err(e) => e,
                        Ok(()) => {
                            let metadata = p.committed_metadata.as_ref().map(|m| m.to_string());
                            let group = groups.entry(group_id.clone()).or_default();
                            let key = (name.clone(), p.partition_index);
                            if metadata.as_ref().is_some_and(|m| m.len() > OFFSET_METADATA_MAX_BYTES) {
                                ErrorCode::OFFSET_METADATA_TOO_LARGE
                            } else if !group.offsets.contains_key(&key) && group.offsets.len() >= MAX_OFFSETS_PER_GROUP
                            {
                                ErrorCode::COORDINATOR_NOT_AVAILABLE
                            } else {
                                group.offsets.insert(
                                    key,
                                    CommittedOffset {
                                        offset: p.committed_offset,
                                        leader_epoch: p.committed_leader_epoch,
                                        metadata,
                                    },
                                );
                                ErrorCode::NONE
                            }
                        }
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(wire(error_code))
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(topic.name).with_partitions(partitions)
        })
        .collect();
    drop(groups);
    respond_now(meta, OffsetCommitResponse::default().with_topics(topics))
}

pub(super) fn handle_offset_fetch(
    context: &Arc<KafkaContext>,
    meta: RequestMeta,
    request: OffsetFetchRequest,
) -> PendingReply {
    let group_id = request.group_id.0.to_string();
    let partition_answer = |partition: i32, committed: Option<&CommittedOffset>, error_code: ErrorCode| {
        let answer =
            OffsetFetchResponsePartition::default().with_partition_index(partition).with_error_code(wire(error_code));
        match committed {
            Some(c) => answer
                .with_committed_offset(c.offset)
                .with_committed_leader_epoch(c.leader_epoch)
                .with_metadata(Some(str_bytes(c.metadata.clone().unwrap_or_default()))),
            // Kafka's OffsetFetchResponse.INVALID_OFFSET and NO_METADATA.
            None => answer.with_committed_offset(-1).with_metadata(Some(StrBytes::default())),
        }
    };
    let response = match check_coordinator(context, &group_id) {
        Err(error_code) => {
            // v2+ carry a top-level error; v1 only per partition.
            let topics = request
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    let partitions =
                        t.partition_indexes.iter().map(|p| partition_answer(*p, None, error_code)).collect();
                    OffsetFetchResponseTopic::default().with_name(t.name).with_partitions(partitions)
                })
                .collect();
            let response = OffsetFetchResponse::default().with_topics(topics);
            if meta.api_version >= 2 {
                response.with_error_code(wire(error_code))
            } else {
                response
            }
        }
        Ok(()) => {
            let groups = context.groups.lock();
            let offsets = groups.get(&group_id).map(|g| &g.offsets);
            let topics: Vec<OffsetFetchResponseTopic> = match request.topics {
                Some(topics) => topics
                    .into_iter()
                    .map(|t| {
                        let name = t.name.0.to_string();
                        let partitions = t
                            .partition_indexes
                            .iter()
                            .map(|p| {
                                partition_answer(*p, offsets.and_then(|o| o.get(&(name.clone(), *p))), ErrorCode::NONE)
                            })
                            .collect();
                        OffsetFetchResponseTopic::default().with_name(t.name).with_partitions(partitions)
                    })
                    .collect(),
                // v2+: null topics = every committed offset of the group.
                None => {
                    let mut by_topic: BTreeMap<&str, Vec<OffsetFetchResponsePartition>> = BTreeMap::new();
                    for ((topic, partition), committed) in offsets.into_iter().flatten() {
                        by_topic.entry(topic).or_default().push(partition_answer(
                            *partition,
                            Some(committed),
                            ErrorCode::NONE,
                        ));
                    }
                    by_topic
                        .into_iter()
                        .map(|(topic, partitions)| {
                            OffsetFetchResponseTopic::default()
                                .with_name(TopicName(str_bytes(topic)))
                                .with_partitions(partitions)
                        })
                        .collect()
                }
            };
            OffsetFetchResponse::default().with_topics(topics)
        }
    };
    respond_now(meta, response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(fenced: &[i32]) -> pb::ClusterMetadata {
        pb::ClusterMetadata {
            brokers: (1..=3)
                .map(|id| pb::BrokerMetadata {
                    id,
                    kafka_address: format!("127.0.0.1:{}", 19091 + id),
                    fenced: fenced.contains(&id),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn group_ids_hash_like_java_strings() {
        // Values of "...".hashCode() in Java.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("my-group"), -1_906_497_762);
    }

    #[test]
    fn every_broker_names_the_same_coordinator_and_skips_fenced_ones() {
        let all = metadata(&[]);
        let chosen = coordinator_for(&all, "my-group").unwrap().id;
        let mut shuffled = all.clone();
        shuffled.brokers.reverse();
        assert_eq!(coordinator_for(&shuffled, "my-group").unwrap().id, chosen, "order of the list is irrelevant");
        let without = metadata(&[chosen]);
        let next = coordinator_for(&without, "my-group").unwrap().id;
        assert_ne!(next, chosen);
        assert!(coordinator_for(&metadata(&[1, 2, 3]), "my-group").is_none());
    }
}
