//! The classic group protocol as a pure state machine (Kafka `GroupCoordinator` and
//! `GroupMetadataManager`'s classic-group paths): every call takes `now` (ms) and pushes
//! `Effect`s — answers to waiting JoinGroup/SyncGroup requests, and group metadata to store
//! durably before a rebalance counts as done. No I/O and no clock: `runtime.rs` supplies
//! time, channels and the log; the unit tests drive it directly.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use insync_types::ErrorCode;

use super::classic::{ClassicGroup, GroupState, Member, Token};
use super::records::{self, GroupRecord};

/// Limits and timings (Kafka `group.*` broker configs).
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Kafka group.initial.rebalance.delay.ms.
    pub initial_rebalance_delay_ms: i64,
    /// Kafka group.min.session.timeout.ms / group.max.session.timeout.ms.
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// Kafka group.max.size (unbounded in Kafka; bounded here to bound memory).
    pub max_members_per_group: usize,
    /// Groups this broker keeps in memory at most. A new group beyond is refused with a
    /// non-retriable error (GROUP_MAX_SIZE_REACHED / INVALID_COMMIT_OFFSET_SIZE) rather than a
    /// retriable one a client would retry forever; offset retention frees room.
    pub max_groups: usize,
    /// Committed partitions per group at most (beyond: INVALID_COMMIT_OFFSET_SIZE).
    pub max_offsets_per_group: usize,
    /// Protocols one JoinGroup may name (Kafka has no bound; clients send 1-3). Bounds the
    /// protocol selection done under the coordinator's lock.
    pub max_protocols: usize,
    /// Kafka offsets.retention.minutes (KIP-211), in ms: an Empty group's offsets expire this
    /// long after it became Empty; a simple consumer's (no protocol type) this long after
    /// each commit.
    pub offsets_retention_ms: i64,
    /// Kafka offsets.retention.check.interval.ms: how often expired offsets are looked for.
    pub offsets_retention_check_interval_ms: i64,
    /// Kafka offset.metadata.max.bytes.
    pub offset_metadata_max_bytes: usize,
    /// Kafka `NewMemberJoinTimeoutMs`: how long a member new to a rebalance may take to
    /// join before it is dropped.
    pub new_member_join_timeout_ms: i64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            initial_rebalance_delay_ms: 3_000,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            max_members_per_group: 1_000,
            max_groups: 10_000,
            max_offsets_per_group: 100_000,
            max_protocols: 64,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4_096,
            new_member_join_timeout_ms: 300_000,
        }
    }
}

/// A JoinGroup as the state machine sees it (any version).
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    /// The group's offsets partition (from `GroupLog::partition_for`).
    pub partition: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// KIP-394 (JoinGroup v4+): a first join without member id gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: ErrorCode,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// The members and their metadata, for the leader only.
    pub members: Vec<JoinedMember>,
    /// KIP-814: a static leader rejoined without a rebalance; it must not assign again.
    pub skip_assignment: bool,
    /// KIP-345, JoinGroup before v9: the leader id to answer instead of `leader` (the
    /// replaced static member's old id), so that a restarted static leader acts as a
    /// follower and does not run its assignor (Kafka `updateStaticMemberAndRebalance`).
    pub leader_before_v9: Option<String>,
}

impl JoinResult {
    pub fn error(error: ErrorCode, member_id: &str) -> JoinResult {
        JoinResult {
            error,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
            leader_before_v9: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ErrorCode) -> SyncResult {
        SyncResult { error, protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// Heartbeat, and the member part of OffsetCommit.
#[derive(Debug, Clone)]
pub struct MemberRef {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
}

/// An answer to a request that waited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(JoinResult),
    Sync(SyncResult),
}

/// What the state machine asks of its runtime.
#[derive(Debug, Clone)]
pub enum Effect {
    Reply(Token, Reply),
    /// Append `records` to the group's offsets partition, then call `store_done` with `done`.
    Store {
        group_id: String,
        partition: i32,
        records: Vec<GroupRecord>,
        done: StoreDone,
    },
}

/// What to do once a group metadata record is stored.
#[derive(Debug, Clone)]
pub enum StoreDone {
    /// The leader's SyncGroup: hand out `assignments` and become Stable.
    Sync {
        generation_id: i32,
        assignments: HashMap<String, Bytes>,
    },
    /// KIP-345: a static member replaced its old member id without a rebalance; answer its
    /// join, or on failure put the old member back (Kafka `updateStaticMemberAndRebalance`).
    StaticRejoin {
        token: Token,
        member_id: String,
        generation_id: i32,
        /// The leader before the replacement (answered to JoinGroup before v9).
        previous_leader: Option<String>,
        /// What to restore if the store fails.
        revert: Box<StaticRevert>,
    },
    Nothing,
}

/// A static member as it was before a rejoin replaced its member id.
#[derive(Debug, Clone)]
pub struct StaticRevert {
    pub old_member_id: String,
    pub protocols: Vec<(String, Bytes)>,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// Kafka `GroupSummary` (DescribeGroups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// Every group this broker coordinates.
#[derive(Debug)]
pub struct Coordinator {
    pub config: CoordinatorConfig,
    pub(super) groups: HashMap<String, ClassicGroup>,
    /// Member ids: `client_id-<seed>-<n>`, unique across brokers by the random seed.
    seed: u64,
    next_member: u64,
    /// Offsets partition -> the leader epoch its groups were loaded at, and which load that
    /// was. A request is served only if the epoch equals the storage's current loaded epoch
    /// (else COORDINATOR_LOAD_IN_PROGRESS: the load event is still on its way; Kafka
    /// `GroupMetadataManager.loadingPartitions`); the load tells apart two loads at one epoch.
    loaded: HashMap<i32, LoadedAt>,
    /// Orders commits and group incarnations (see `ClassicGroup::offset_seq`).
    pub(super) next_seq: u64,
    /// When offsets are next checked for expiry.
    next_retention_check: i64,
}

/// A partition's load (see `Coordinator::loaded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedAt {
    pub epoch: i32,
    /// Unique per load of this coordinator (a sequence number).
    pub load: u64,
}

fn reply_join(out: &mut Vec<Effect>, token: Token, result: JoinResult) {
    out.push(Effect::Reply(token, Reply::Join(result)));
}

fn reply_sync(out: &mut Vec<Effect>, token: Token, result: SyncResult) {
    out.push(Effect::Reply(token, Reply::Sync(result)));
}

impl Coordinator {
    pub fn new(config: CoordinatorConfig, seed: u64) -> Coordinator {
        Coordinator {
            config,
            groups: HashMap::new(),
            seed,
            next_member: 0,
            loaded: HashMap::new(),
            next_seq: 1,
            next_retention_check: 0,
        }
    }

    /// The epoch `partition`'s groups were loaded at, if loaded.
    pub fn loaded_epoch(&self, partition: i32) -> Option<i32> {
        self.loaded.get(&partition).map(|l| l.epoch)
    }

    /// `partition`'s current load, if loaded: a completion started under another load (even
    /// at the same epoch) concerns groups that are gone.
    pub fn loaded_at(&self, partition: i32) -> Option<LoadedAt> {
        self.loaded.get(&partition).copied()
    }

    /// The next sequence number (commits, group incarnations).
    pub(super) fn bump_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// A new, empty group (the caller checked the cap).
    pub(super) fn create_group(&mut self, group_id: &str, partition: i32, now: i64) {
        let mut group = ClassicGroup::new(group_id, partition, now);
        group.created_seq = self.bump_seq();
        self.groups.insert(group_id.to_string(), group);
    }

    #[cfg(test)]
    pub fn group(&self, group_id: &str) -> Option<&ClassicGroup> {
        self.groups.get(group_id)
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member += 1;
        // Kafka: clientId + "-" + UUID; the client id is the client's, bounded by the frame.
        let client: String = client_id.chars().take(200).collect();
        format!("{client}-{:016x}-{}", self.seed, self.next_member)
    }

    /// JoinGroup (Kafka `classicGroupJoin`): answered through `out` under `token`, at once
    /// or when the join barrier completes.
    pub fn join(&mut self, request: JoinRequest, token: Token, now: i64, out: &mut Vec<Effect>) {
        if let Err(error) = self.try_join(&request, token, now, out) {
            reply_join(out, token, JoinResult::error(error, &request.member_id));
        }
    }

    fn try_join(
        &mut self,
        request: &JoinRequest,
        token: Token,
        now: i64,
        out: &mut Vec<Effect>,
    ) -> Result<(), ErrorCode> {
        if request.group_id.is_empty() || !records::fits(&request.group_id) {
            return Err(ErrorCode::INVALID_GROUP_ID);
        }
        if !request.member_id.is_empty() && !records::fits(&request.member_id) {
            // Member ids are this coordinator's, all short: this one is nobody's.
            return Err(ErrorCode::UNKNOWN_MEMBER_ID);
        }
        // What the group record stores must fit its int16-framed strings (Kafka's own request
        // parser refuses longer strings; a flexible request's compact strings are not capped).
        let stored = [Some(&request.client_id), Some(&request.client_host), Some(&request.protocol_type)];
        let too_long =
            stored.into_iter().chain([request.group_instance_id.as_ref()]).flatten().any(|s| !records::fits(s))
                || request.protocols.iter().any(|(name, _)| !records::fits(name));
        if too_long {
            tracing::warn!(group = %request.group_id, "JoinGroup refused: an id or protocol name exceeds {} bytes", records::MAX_STRING_BYTES);
            return Err(ErrorCode::INVALID_REQUEST);
        }
        let timeouts = self.config.min_session_timeout_ms..=self.config.max_session_timeout_ms;
        if !timeouts.contains(&request.session_timeout_ms) {
            return Err(ErrorCode::INVALID_SESSION_TIMEOUT);
        }
        if request.protocols.len() > self.config.max_protocols {
            return Err(ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
        }
        if !self.groups.contains_key(&request.group_id) {
            if !request.member_id.is_empty() {
                return Err(ErrorCode::UNKNOWN_MEMBER_ID);
            }
            if self.groups.len() >= self.config.max_groups {
                tracing::warn!(group = %request.group_id, max_groups = self.config.max_groups, "too many groups on this coordinator");
                return Err(ErrorCode::GROUP_MAX_SIZE_REACHED);
            }
            self.create_group(&request.group_id, request.partition, now);
        }
        let new_member_id =
            if request.member_id.is_empty() { Some(self.new_member_id(&request.client_id)) } else { None };
        let config = self.config.clone();
        let group = self.groups.get_mut(&request.group_id).ok_or(ErrorCode::UNKNOWN_MEMBER_ID)?;
        if group.is(GroupState::Dead) {
            return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
        }
        if !group.supports_protocols(&request.protocol_type, &request.protocols) {
            return Err(ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
        }
        match new_member_id {
            Some(member_id) => unknown_member_join(&config, group, request, member_id, token, now, out),
            None => known_member_join(&config, group, request, token, now, out),
        }
    }

    /// SyncGroup (Kafka `classicGroupSync`).
    pub fn sync(&mut self, request: SyncRequest, token: Token, now: i64, out: &mut Vec<Effect>) {
        if let Err(error) = self.try_sync(&request, token, now, out) {
            reply_sync(out, token, SyncResult::error(error));
        }
    }

    fn try_sync(
        &mut self,
        request: &SyncRequest,
        token: Token,
        now: i64,
        out: &mut Vec<Effect>,
    ) -> Result<(), ErrorCode> {
        let group = self.groups.get_mut(&request.group_id).ok_or(ErrorCode::UNKNOWN_MEMBER_ID)?;
        if group.is(GroupState::Dead) {
            return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
        }
        check_member(group, &request.member_id, request.group_instance_id.as_deref(), request.generation_id)?;
        let type_ok = request.protocol_type.as_ref().is_none_or(|t| group.protocol_type.as_ref() == Some(t));
        let name_ok = request.protocol_name.as_ref().is_none_or(|n| group.protocol_name.as_ref() == Some(n));
        if !type_ok || !name_ok {
            return Err(ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => Err(ErrorCode::UNKNOWN_MEMBER_ID),
            GroupState::PreparingRebalance => Err(ErrorCode::REBALANCE_IN_PROGRESS),
            GroupState::Stable => {
                group.pending_sync.remove(&request.member_id);
                let member = group.members.get_mut(&request.member_id).ok_or(ErrorCode::UNKNOWN_MEMBER_ID)?;
                member.heartbeat_deadline = now.saturating_add(i64::from(member.session_timeout_ms));
                let assignment = member.assignment.clone();
                reply_sync(out, token, sync_ok(group, assignment));
                Ok(())
            }
            GroupState::CompletingRebalance => {
                await_sync(group, request, token, now, out);
                Ok(())
            }
        }
    }

    /// Heartbeat (Kafka `classicGroupHeartbeat`).
    pub fn heartbeat(&mut self, request: &MemberRef, now: i64) -> ErrorCode {
        let Some(group) = self.groups.get_mut(&request.group_id) else { return ErrorCode::UNKNOWN_MEMBER_ID };
        if group.is(GroupState::Dead) {
            return ErrorCode::COORDINATOR_NOT_AVAILABLE;
        }
        let instance = request.group_instance_id.as_deref();
        if let Err(error) = check_member(group, &request.member_id, instance, request.generation_id) {
            return error;
        }
        let state = group.state;
        let Some(member) = group.members.get_mut(&request.member_id) else { return ErrorCode::UNKNOWN_MEMBER_ID };
        match state {
            GroupState::Empty | GroupState::Dead => ErrorCode::UNKNOWN_MEMBER_ID,
            GroupState::PreparingRebalance => {
                member.heartbeat_deadline = now.saturating_add(i64::from(member.session_timeout_ms));
                ErrorCode::REBALANCE_IN_PROGRESS
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                member.heartbeat_deadline = now.saturating_add(i64::from(member.session_timeout_ms));
                ErrorCode::NONE
            }
        }
    }

    /// LeaveGroup (Kafka `classicGroupLeave`): per member (id, instance id), its error; the
    /// group-level error first.
    pub fn leave(
        &mut self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
        now: i64,
        out: &mut Vec<Effect>,
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        let Some(group) = self.groups.get_mut(group_id) else {
            return Ok(leaving.iter().map(|_| ErrorCode::UNKNOWN_MEMBER_ID).collect());
        };
        if group.is(GroupState::Dead) {
            return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
        }
        let mut results = Vec::with_capacity(leaving.len());
        for (member_id, instance_id) in leaving {
            let target = leave_target(group, member_id, instance_id.as_deref());
            results.push(match target {
                Ok(id) => {
                    tracing::info!(group = group_id, member = %id, "member left the group");
                    if group.pending_members.remove(&id).is_some() {
                        try_complete_join(group, now, out);
                    } else {
                        remove_member_and_update_group(&self.config, group, &id, now, out);
                    }
                    ErrorCode::NONE
                }
                Err(error) => error,
            });
        }
        Ok(results)
    }

    /// OffsetCommit's group checks (Kafka `validateOffsetCommit` / `doCommitOffsets`),
    /// before the offsets are stored. Creates the group of a simple commit.
    pub fn validate_commit(&mut self, request: &MemberRef, partition: i32, now: i64) -> Result<(), ErrorCode> {
        if request.group_id.is_empty() || !records::fits(&request.group_id) {
            return Err(ErrorCode::INVALID_GROUP_ID);
        }
        if !self.groups.contains_key(&request.group_id) {
            // Kafka: a group unknown to the coordinator accepts only commits from outside
            // group management (generation < 0); a member's is from a group that is gone.
            if request.generation_id >= 0 {
                return Err(ErrorCode::ILLEGAL_GENERATION);
            }
            if self.groups.len() >= self.config.max_groups {
                tracing::warn!(group = %request.group_id, max_groups = self.config.max_groups, "too many groups on this coordinator");
                return Err(ErrorCode::INVALID_COMMIT_OFFSET_SIZE);
            }
            self.create_group(&request.group_id, partition, now);
        }
        let group = self.groups.get_mut(&request.group_id).ok_or(ErrorCode::ILLEGAL_GENERATION)?;
        if group.is(GroupState::Dead) {
            return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
        }
        if request.generation_id < 0 && group.is(GroupState::Empty) {
            return Ok(()); // a simple commit: the group has no members to fence it
        }
        let instance = request.group_instance_id.as_deref();
        if group.is_fenced(&request.member_id, instance) {
            return Err(ErrorCode::FENCED_INSTANCE_ID);
        }
        let Some(member) = group.members.get_mut(&request.member_id) else {
            return Err(ErrorCode::UNKNOWN_MEMBER_ID);
        };
        if request.generation_id != group.generation_id {
            return Err(ErrorCode::ILLEGAL_GENERATION);
        }
        match group.state {
            // Between the join and the assignment a commit could be for partitions the member
            // is about to lose (Kafka answers REBALANCE_IN_PROGRESS here).
            GroupState::CompletingRebalance => Err(ErrorCode::REBALANCE_IN_PROGRESS),
            GroupState::Stable | GroupState::PreparingRebalance => {
                member.heartbeat_deadline = now.saturating_add(i64::from(member.session_timeout_ms));
                Ok(())
            }
            GroupState::Empty | GroupState::Dead => Err(ErrorCode::UNKNOWN_MEMBER_ID),
        }
    }

    /// ListGroups: (group id, protocol type, state) of every live group, filtered by state
    /// names (case-insensitive, KIP-518) when `states` is not empty.
    pub fn list(&self, states: &[String]) -> Vec<(String, String, &'static str)> {
        let mut listed: Vec<_> = self
            .groups
            .values()
            .filter(|g| !g.is(GroupState::Dead))
            .filter(|g| states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(g.state.name())))
            .map(|g| (g.group_id.clone(), g.protocol_type.clone().unwrap_or_default(), g.state.name()))
            .collect();
        listed.sort();
        listed
    }

    /// DescribeGroups (Kafka `GroupSummary`): members' metadata and assignments only while
    /// Stable; an unknown group is Dead.
    pub fn describe(&self, group_id: &str) -> GroupDescription {
        let Some(group) = self.groups.get(group_id) else {
            return GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Dead.name(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            };
        };
        let stable = group.is(GroupState::Stable);
        let protocol = if stable { group.protocol_name.clone().unwrap_or_default() } else { String::new() };
        let members = group
            .members
            .values()
            .map(|m| MemberDescription {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable { m.metadata(&protocol) } else { Bytes::new() },
                assignment: if stable { m.assignment.clone() } else { Bytes::new() },
            })
            .collect();
        GroupDescription {
            group_id: group_id.to_string(),
            state: group.state.name(),
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol,
            members,
        }
    }

    /// DeleteGroups (Kafka `deleteGroups`): only an Empty group; returns its partition and
    /// the tombstones to write (every offset, committed or in flight, then the group), and
    /// forgets it.
    #[cfg(test)]
    pub fn delete(&mut self, group_id: &str) -> Result<(i32, Vec<GroupRecord>), ErrorCode> {
        let deleted = self.delete_records(group_id)?;
        self.remove_group(group_id);
        Ok(deleted)
    }

    pub fn remove_group(&mut self, group_id: &str) {
        self.groups.remove(group_id);
    }

    /// `delete`'s checks and tombstones, the group left as it is (the runtime removes it
    /// once the tombstones are appended).
    pub fn delete_records(&self, group_id: &str) -> Result<(i32, Vec<GroupRecord>), ErrorCode> {
        let group = match self.groups.get(group_id) {
            None => return Err(ErrorCode::GROUP_ID_NOT_FOUND),
            Some(g) if g.is(GroupState::Dead) => return Err(ErrorCode::GROUP_ID_NOT_FOUND),
            Some(g) if !g.is(GroupState::Empty) || !g.pending_members.is_empty() => {
                return Err(ErrorCode::NON_EMPTY_GROUP)
            }
            Some(g) => g,
        };
        // Kafka (`OffsetMetadataManager.deleteAllOffsets`) deletes the offsets of commits still
        // waiting for their acknowledgement too: their records precede these tombstones in
        // the log, and a reload must not bring them back (a group tombstone deletes no offset).
        let keys: BTreeSet<&(String, i32)> =
            group.offsets.keys().chain(group.pending_commits.values().flatten()).collect();
        let mut tombstones: Vec<GroupRecord> = keys
            .into_iter()
            .map(|(topic, partition)| GroupRecord::Offset {
                group: group_id.to_string(),
                topic: topic.clone(),
                partition: *partition,
                value: None,
            })
            .collect();
        tombstones.push(GroupRecord::Group { group: group_id.to_string(), value: None });
        Ok((group.partition, tombstones))
    }

    /// A stored record's outcome (see `StoreDone`). The runtime calls it only while the
    /// group's partition is still loaded at the epoch the record was appended at.
    pub fn store_done(
        &mut self,
        group_id: &str,
        done: StoreDone,
        result: Result<(), ErrorCode>,
        now: i64,
        out: &mut Vec<Effect>,
    ) {
        let config = self.config.clone();
        // Gone (unloaded, which answered every waiter): nothing to do.
        let Some(group) = self.groups.get_mut(group_id) else { return };
        match done {
            StoreDone::Sync { generation_id, assignments } => {
                let current = group.generation_id == generation_id
                    && group.is(GroupState::CompletingRebalance)
                    && group.storing_generation == Some(generation_id);
                if current {
                    group.storing_generation = None;
                    match result {
                        Ok(()) => propagate_assignment(group, &assignments, now, out),
                        Err(error) => {
                            // Kafka `resetAndPropagateAssignmentError`, then a new rebalance.
                            fail_sync_waiters(group, error, out);
                            maybe_prepare_rebalance(&config, group, now, out);
                        }
                    }
                }
            }
            StoreDone::StaticRejoin { token, member_id, generation_id, previous_leader, revert } => {
                static_rejoin_stored(
                    group,
                    token,
                    &member_id,
                    generation_id,
                    previous_leader,
                    *revert,
                    result,
                    now,
                    out,
                )
            }
            StoreDone::Nothing => {}
        }
    }

    /// The timers (Kafka's DelayedJoin, InitialDelayedJoin, DelayedHeartbeat, pending-sync
    /// and pending-member expiry), run by the runtime every ~100 ms.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Effect>) {
        let config = self.config.clone();
        for group in self.groups.values_mut() {
            tick_group(&config, group, now, out);
        }
        if now >= self.next_retention_check {
            self.next_retention_check = now.saturating_add(self.config.offsets_retention_check_interval_ms.max(1));
            self.expire_offsets(now, out);
        }
        // Forget groups with nothing left (Kafka cleans up Empty groups without offsets); one
        // with a commit in flight stays, or the commit's offsets would have nowhere to go.
        self.groups.retain(|_, g| {
            !(g.is(GroupState::Empty)
                && g.members.is_empty()
                && g.pending_members.is_empty()
                && g.offsets.is_empty()
                && g.pending_commits.is_empty()
                && g.storing_generation.is_none())
        });
    }

    /// This broker now coordinates `partition`: rebuild its groups from the records, in
    /// order (last write wins, tombstones delete; Kafka `GroupMetadataManager.loadGroupsAndOffsets`).
    /// A group tombstone deletes the group's metadata, not its offsets: as in Kafka, only
    /// an offset's own tombstone deletes it (log compaction keeps keys, not their order).
    /// Records of a group `owns` says lives on another partition are skipped with a WARN
    /// (they are not this partition's to serve, and must not replace a live group).
    pub fn load(
        &mut self,
        partition: i32,
        epoch: i32,
        records: Vec<GroupRecord>,
        owns: &dyn Fn(&str) -> bool,
        now: i64,
        out: &mut Vec<Effect>,
    ) {
        self.unload(partition, out);
        let created_seq = self.bump_seq();
        self.loaded.insert(partition, LoadedAt { epoch, load: created_seq });
        let mut loaded: BTreeMap<String, ClassicGroup> = BTreeMap::new();
        let mut foreign: BTreeMap<String, usize> = BTreeMap::new();
        for record in records {
            let group_id = match &record {
                GroupRecord::Offset { group, .. } | GroupRecord::Group { group, .. } => group,
            };
            // Each group is asked about once: known ones are in `loaded` or `foreign`.
            let owned = loaded.contains_key(group_id) || (!foreign.contains_key(group_id) && owns(group_id));
            if !owned {
                *foreign.entry(group_id.clone()).or_default() += 1;
                continue;
            }
            match record {
                GroupRecord::Offset { group, topic, partition: p, value } => {
                    let entry =
                        loaded.entry(group.clone()).or_insert_with(|| ClassicGroup::new(&group, partition, now));
                    match value {
                        Some(value) => {
                            entry.offsets.insert((topic, p), value);
                        }
                        None => {
                            entry.offsets.remove(&(topic, p));
                        }
                    }
                }
                GroupRecord::Group { group, value: Some(value) } => {
                    let entry =
                        loaded.entry(group.clone()).or_insert_with(|| ClassicGroup::new(&group, partition, now));
                    entry.apply_record(&value, now);
                }
                GroupRecord::Group { group, value: None } => {
                    // The group's metadata goes; offsets not tombstoned stay, in a new Empty group.
                    if let Some(old) = loaded.remove(&group) {
                        if !old.offsets.is_empty() {
                            let mut fresh = ClassicGroup::new(&group, partition, now);
                            fresh.offsets = old.offsets;
                            loaded.insert(group, fresh);
                        }
                    }
                }
            }
        }
        for (group, records) in &foreign {
            tracing::warn!(partition, group = %group, records, "skipped records of a group placed on another offsets partition");
        }
        tracing::info!(partition, epoch, groups = loaded.len(), "loaded consumer groups");
        for (group_id, mut group) in loaded {
            group.created_seq = created_seq;
            match self.groups.get(&group_id) {
                // `unload` removed this partition's groups: one still here is another's.
                Some(live) => tracing::warn!(
                    partition, group = %group_id, live_partition = live.partition,
                    "not loading a group that is live on another offsets partition"
                ),
                None => {
                    self.groups.insert(group_id, group);
                }
            }
        }
    }

    /// `partition` moved away: drop its groups, answering whoever waits with NOT_COORDINATOR
    /// (clients then find the new coordinator).
    pub fn unload(&mut self, partition: i32, out: &mut Vec<Effect>) {
        self.loaded.remove(&partition);
        let gone: Vec<String> =
            self.groups.values().filter(|g| g.partition == partition).map(|g| g.group_id.clone()).collect();
        for group_id in gone {
            if let Some(group) = self.groups.remove(&group_id) {
                for member in group.members.values() {
                    if let Some(token) = member.join_waiter {
                        reply_join(out, token, JoinResult::error(ErrorCode::NOT_COORDINATOR, &member.member_id));
                    }
                    if let Some(token) = member.sync_waiter {
                        reply_sync(out, token, SyncResult::error(ErrorCode::NOT_COORDINATOR));
                    }
                }
            }
        }
    }
}

/// The member a LeaveGroup entry names (Kafka `handleLeaveGroup`): by instance id when the
/// member id is empty; a pending member; else the member id, fenced if the instance id now
/// belongs to another member id (an unknown instance id falls through to the member id).
fn leave_target(group: &ClassicGroup, member_id: &str, instance: Option<&str>) -> Result<String, ErrorCode> {
    if member_id.is_empty() {
        return instance.and_then(|i| group.static_members.get(i)).cloned().ok_or(ErrorCode::UNKNOWN_MEMBER_ID);
    }
    if group.pending_members.contains_key(member_id) {
        return Ok(member_id.to_string());
    }
    if group.is_fenced(member_id, instance) {
        return Err(ErrorCode::FENCED_INSTANCE_ID);
    }
    if !group.members.contains_key(member_id) {
        return Err(ErrorCode::UNKNOWN_MEMBER_ID);
    }
    Ok(member_id.to_string())
}

/// Kafka `validateClassicGroupSync`/`Heartbeat` member checks, in Kafka's order.
fn check_member(
    group: &ClassicGroup,
    member_id: &str,
    instance: Option<&str>,
    generation: i32,
) -> Result<(), ErrorCode> {
    if group.is_fenced(member_id, instance) {
        return Err(ErrorCode::FENCED_INSTANCE_ID);
    }
    if !group.members.contains_key(member_id) {
        return Err(ErrorCode::UNKNOWN_MEMBER_ID);
    }
    if generation != group.generation_id {
        return Err(ErrorCode::ILLEGAL_GENERATION);
    }
    Ok(())
}

fn sync_ok(group: &ClassicGroup, assignment: Bytes) -> SyncResult {
    SyncResult {
        error: ErrorCode::NONE,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        assignment,
    }
}

/// The JoinGroup answer of the current generation for `member_id`: the leader gets every
/// member's metadata for the selected protocol, the others none.
fn join_ok(group: &ClassicGroup, member_id: &str) -> JoinResult {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let leader = group.leader_id.clone().unwrap_or_default();
    let members = if leader == member_id {
        group
            .members
            .values()
            .map(|m| JoinedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(&protocol),
            })
            .collect()
    } else {
        Vec::new()
    };
    JoinResult {
        error: ErrorCode::NONE,
        generation_id: group.generation_id,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader,
        member_id: member_id.to_string(),
        members,
        skip_assignment: false,
        leader_before_v9: None,
    }
}

fn unknown_member_join(
    config: &CoordinatorConfig,
    group: &mut ClassicGroup,
    request: &JoinRequest,
    member_id: String,
    token: Token,
    now: i64,
    out: &mut Vec<Effect>,
) -> Result<(), ErrorCode> {
    if let Some(instance) = &request.group_instance_id {
        if let Some(old_id) = group.static_members.get(instance).cloned() {
            static_member_rejoin(config, group, request, &old_id, member_id, token, now, out);
            return Ok(());
        }
    }
    if group.members.len() + group.pending_members.len() >= config.max_members_per_group {
        tracing::warn!(group = %group.group_id, max = config.max_members_per_group, "group is full");
        return Err(ErrorCode::GROUP_MAX_SIZE_REACHED);
    }
    if request.group_instance_id.is_none() && request.require_known_member_id {
        // KIP-394: hand out the id first, so a client that never gets the answer leaves no
        // member behind; the id is forgotten after a session timeout.
        let deadline = now.saturating_add(i64::from(request.session_timeout_ms));
        group.pending_members.insert(member_id.clone(), deadline);
        reply_join(out, token, JoinResult::error(ErrorCode::MEMBER_ID_REQUIRED, &member_id));
        return Ok(());
    }
    add_member_and_rebalance(config, group, request, member_id, token, now, out);
    Ok(())
}

fn known_member_join(
    config: &CoordinatorConfig,
    group: &mut ClassicGroup,
    request: &JoinRequest,
    token: Token,
    now: i64,
    out: &mut Vec<Effect>,
) -> Result<(), ErrorCode> {
    let member_id = request.member_id.clone();
    if group.pending_members.contains_key(&member_id) && request.group_instance_id.is_some() {
        // Kafka refuses this (a pending id is a dynamic member's, never a static one's): it
        // would take over another member's instance id.
        return Err(ErrorCode::UNKNOWN_MEMBER_ID);
    }
    if group.pending_members.remove(&member_id).is_some() {
        add_member_and_rebalance(config, group, request, member_id, token, now, out);
        return Ok(());
    }
    if group.is_fenced(&member_id, request.group_instance_id.as_deref()) {
        return Err(ErrorCode::FENCED_INSTANCE_ID);
    }
    let Some(member) = group.members.get(&member_id) else { return Err(ErrorCode::UNKNOWN_MEMBER_ID) };
    let unchanged = member.same_protocols(&request.protocols);
    let is_leader = group.leader_id.as_deref() == Some(member_id.as_str());
    match group.state {
        GroupState::PreparingRebalance => update_member_and_rebalance(config, group, request, token, now, out),
        // The member lost the answer of this generation's join: send it again.
        GroupState::CompletingRebalance if unchanged => reply_join(out, token, join_ok(group, &member_id)),
        // A follower with nothing new learns the current generation; the leader (whose join
        // means it wants to assign again) or a changed member starts a rebalance.
        GroupState::Stable if unchanged && !is_leader => reply_join(out, token, join_ok(group, &member_id)),
        GroupState::CompletingRebalance | GroupState::Stable => {
            update_member_and_rebalance(config, group, request, token, now, out)
        }
        GroupState::Empty | GroupState::Dead => return Err(ErrorCode::UNKNOWN_MEMBER_ID),
    }
    Ok(())
}

fn new_member(request: &JoinRequest, member_id: &str, token: Token, deadline: i64) -> Member {
    Member {
        member_id: member_id.to_string(),
        group_instance_id: request.group_instance_id.clone(),
        client_id: request.client_id.clone(),
        client_host: request.client_host.clone(),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        session_timeout_ms: request.session_timeout_ms,
        protocols: request.protocols.clone(),
        assignment: Bytes::new(),
        join_waiter: Some(token),
        sync_waiter: None,
        is_new: true,
        heartbeat_deadline: deadline,
    }
}

/// Kafka `addMemberAndRebalance`.
fn add_member_and_rebalance(
    config: &CoordinatorConfig,
    group: &mut ClassicGroup,
    request: &JoinRequest,
    member_id: String,
    token: Token,
    now: i64,
    out: &mut Vec<Effect>,
) {
    let deadline = now.saturating_add(config.new_member_join_timeout_ms);
    if group.members.is_empty() {
        group.protocol_type = Some(request.protocol_type.clone());
    }
    if group.is(GroupState::PreparingRebalance) && group.generation_id == 0 {
        group.new_member_added = true;
    }
    if let Some(instance) = &request.group_instance_id {
        group.static_members.insert(instance.clone(), member_id.clone());
    }
    if group.leader_id.is_none() {
        group.leader_id = Some(member_id.clone());
    }
    tracing::info!(group = %group.group_id, member = %member_id, client = %request.client_id, "member joins");
    group.members.insert(member_id.clone(), new_member(request, &member_id, token, deadline));
    maybe_prepare_rebalance(config, group, now, out);
}

/// Kafka `updateMemberAndRebalance`.
fn update_member_and_rebalance(
    config: &CoordinatorConfig,
    group: &mut ClassicGroup,
    request: &JoinRequest,
    token: Token,
    now: i64,
    out: &mut Vec<Effect>,
) {
    if let Some(member) = group.members.get_mut(&request.member_id) {
        if let Some(old) = member.join_waiter.replace(token) {
            // A second JoinGroup from the same member supersedes the first.
            reply_join(out, old, JoinResult::error(ErrorCode::REBALANCE_IN_PROGRESS, &request.member_id));
        }
        member.protocols = request.protocols.clone();
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.session_timeout_ms = request.session_timeout_ms;
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
    }
    maybe_prepare_rebalance(config, group, now, out);
}

/// KIP-345 (Kafka `updateStaticMemberAndRebalance`): the static member takes a new member id;
/// the old one is fenced. A Stable group whose selected protocol stays the same just stores
/// the change and answers once stored: no rebalance.
#[allow(clippy::too_many_arguments)]
fn static_member_rejoin(
    config: &CoordinatorConfig,
    group: &mut ClassicGroup,
    request: &JoinRequest,
    old_id: &str,
    new_id: String,
    token: Token,
    now: i64,
    out: &mut Vec<Effect>,
) {
    let previous_leader = group.leader_id.clone();
    let Some(old) = group.members.get(old_id) else {
        // The instance maps to a member that is gone (cannot happen: they change together).
        reply_join(out, token, JoinResult::error(ErrorCode::UNKNOWN_MEMBER_ID, &request.member_id));
        return;
    };
    let revert = StaticRevert {
        old_member_id: old_id.to_string(),
        protocols: old.protocols.clone(),
        rebalance_timeout_ms: old.rebalance_timeout_ms,
        session_timeout_ms: old.session_timeout_ms,
    };
    replace_static_member(group, old_id, &new_id, out);
    if let Some(member) = group.members.get_mut(&new_id) {
        member.protocols = request.protocols.clone();
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.session_timeout_ms = request.session_timeout_ms;
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        member.heartbeat_deadline = now.saturating_add(i64::from(request.session_timeout_ms));
        // Kafka `updateMember` sets the join callback in every state: a rebalance starting
        // before the store completes answers it with the others.
        member.join_waiter = Some(token);
    }
    tracing::info!(group = %group.group_id, old = old_id, new = %new_id, "static member rejoined");
    match group.state {
        GroupState::Stable if group.select_protocol() == group.protocol_name => {
            let record = group.to_record(None, now);
            let done = StoreDone::StaticRejoin {
                token,
                member_id: new_id,
                generation_id: group.generation_id,
                previous_leader,
                revert: Box::new(revert),
            };
            out.push(Effect::Store {
                group_id: group.group_id.clone(),
                partition: group.partition,
                records: vec![GroupRecord::Group { group: group.group_id.clone(), value: Some(record) }],
                done,
            });
        }
        // CompletingRebalance: the old id may be in the leader's assignment: rebalance again.
        _ => maybe_prepare_rebalance(config, group, now, out),
    }
}

/// Kafka `replaceStaticMember`: `new_id` takes over `old_id`'s member (waiters of the old
/// id are fenced), its instance mapping, leadership and pending sync.
fn replace_static_member(group: &mut ClassicGroup, old_id: &str, new_id: &str, out: &mut Vec<Effect>) {
    let Some(mut member) = group.members.remove(old_id) else { return };
    if let Some(waiter) = member.join_waiter.take() {
        reply_join(out, waiter, JoinResult::error(ErrorCode::FENCED_INSTANCE_ID, old_id));
    }
    if let Some(waiter) = member.sync_waiter.take() {
        reply_sync(out, waiter, SyncResult::error(ErrorCode::FENCED_INSTANCE_ID));
    }
    member.member_id = new_id.to_string();
    if let Some(instance) = &member.group_instance_id {
        group.static_members.insert(instance.clone(), new_id.to_string());
    }
    if group.leader_id.as_deref() == Some(old_id) {
        group.leader_id = Some(new_id.to_string());
    }
    if group.pending_sync.remove(old_id) {
        group.pending_sync.insert(new_id.to_string());
    }
    group.members.insert(new_id.to_string(), member);
}

/// The store of a Stable static rejoin completed: answer the join if it still waits (a
/// rebalance may have answered it); on failure put the old member id back and answer the
/// error with member id "" (Kafka `updateStaticMemberAndRebalance`'s callback).
#[allow(clippy::too_many_arguments)]
fn static_rejoin_stored(
    group: &mut ClassicGroup,
    token: Token,
    member_id: &str,
    generation_id: i32,
    previous_leader: Option<String>,
    revert: StaticRevert,
    result: Result<(), ErrorCode>,
    now: i64,
    out: &mut Vec<Effect>,
) {
    let waiting = group.members.get(member_id).is_some_and(|m| m.join_waiter == Some(token));
    if !waiting || group.generation_id != generation_id {
        return;
    }
    if let Some(member) = group.members.get_mut(member_id) {
        member.join_waiter = None;
    }
    match result {
        Ok(()) => {
            let mut joined = join_ok(group, member_id);
            joined.skip_assignment = group.leader_id.as_deref() == Some(member_id);
            // Before v9 the old leader id is answered and no member list: the restarted
            // leader sees it is not the leader and does not assign.
            joined.leader_before_v9 = Some(previous_leader.unwrap_or_default());
            reply_join(out, token, joined);
        }
        Err(error) => {
            tracing::warn!(group = %group.group_id, member = member_id, %error, "static member rejoin not stored; reverted");
            replace_static_member(group, member_id, &revert.old_member_id, out);
            if let Some(member) = group.members.get_mut(&revert.old_member_id) {
                member.protocols = revert.protocols;
                member.rebalance_timeout_ms = revert.rebalance_timeout_ms;
                member.session_timeout_ms = revert.session_timeout_ms;
                member.heartbeat_deadline = now.saturating_add(i64::from(member.session_timeout_ms));
            }
            let mut failed = JoinResult::error(error, "");
            failed.generation_id = group.generation_id;
            reply_join(out, token, failed);
        }
    }
}

/// A member's SyncGroup in CompletingRebalance: wait for the leader's assignment; the
/// leader's own starts storing it.
fn await_sync(group: &mut ClassicGroup, request: &SyncRequest, token: Token, now: i64, out: &mut Vec<Effect>) {
    group.pending_sync.remove(&request.member_id);
    if let Some(member) = group.members.get_mut(&request.member_id) {
        if let Some(old) = member.sync_waiter.replace(token) {
            reply_sync(out, old, SyncResult::error(ErrorCode::REBALANCE_IN_PROGRESS));
        }
        member.heartbeat_deadline = now.saturating_add(i64::from(member.session_timeout_ms));
    }
    let is_leader = group.leader_id.as_deref() == Some(request.member_id.as_str());
    if !is_leader || group.storing_generation == Some(group.generation_id) {
        return;
    }
    // Only the group's members' entries count, once each (bounded by the group's size).
    let mut assignments: HashMap<String, Bytes> = HashMap::new();
    for (member_id, assignment) in &request.assignments {
        if group.members.contains_key(member_id) && !assignments.contains_key(member_id) {
            assignments.insert(member_id.clone(), assignment.clone());
        }
    }
    group.storing_generation = Some(group.generation_id);
    let record = group.to_record(Some(&assignments), now);
    out.push(Effect::Store {
        group_id: group.group_id.clone(),
        partition: group.partition,
        records: vec![GroupRecord::Group { group: group.group_id.clone(), value: Some(record) }],
        done: StoreDone::Sync { generation_id: group.generation_id, assignments },
    });
}

/// Kafka `setAndPropagateAssignment`: every member gets its share; the group is Stable.
fn propagate_assignment(
    group: &mut ClassicGroup,
    assignments: &HashMap<String, Bytes>,
    now: i64,
    out: &mut Vec<Effect>,
) {
    for member in group.members.values_mut() {
        member.assignment = assignments.get(&member.member_id).cloned().unwrap_or_default();
    }
    group.transition(GroupState::Stable, now);
    tracing::info!(group = %group.group_id, generation = group.generation_id, members = group.members.len(), "group is stable");
    let replies: Vec<(Token, Bytes)> =
        group.members.values_mut().filter_map(|m| m.sync_waiter.take().map(|t| (t, m.assignment.clone()))).collect();
    for (token, assignment) in replies {
        reply_sync(out, token, sync_ok(group, assignment));
    }
}

fn fail_sync_waiters(group: &mut ClassicGroup, error: ErrorCode, out: &mut Vec<Effect>) {
    for member in group.members.values_mut() {
        member.assignment = Bytes::new();
        if let Some(token) = member.sync_waiter.take() {
            reply_sync(out, token, SyncResult::error(error));
        }
    }
}

/// Kafka `maybePrepareRebalance` + `tryCompleteJoin`.
fn maybe_prepare_rebalance(config: &CoordinatorConfig, group: &mut ClassicGroup, now: i64, out: &mut Vec<Effect>) {
    if matches!(group.state, GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty) {
        prepare_rebalance(config, group, now, out);
    }
    try_complete_join(group, now, out);
}

/// Kafka `prepareRebalance`: the join phase starts; a first rebalance of an Empty group
/// waits group.initial.rebalance.delay.ms for more members (KIP-134).
fn prepare_rebalance(config: &CoordinatorConfig, group: &mut ClassicGroup, now: i64, out: &mut Vec<Effect>) {
    if group.is(GroupState::CompletingRebalance) {
        fail_sync_waiters(group, ErrorCode::REBALANCE_IN_PROGRESS, out);
        group.storing_generation = None;
    }
    group.pending_sync.clear();
    group.sync_deadline = None;
    let rebalance_timeout = group.rebalance_timeout_ms();
    if group.is(GroupState::Empty) {
        let delay = config.initial_rebalance_delay_ms.min(rebalance_timeout.max(0));
        group.join_deadline = Some(now.saturating_add(delay));
        group.initial_delay_remaining_ms = Some((rebalance_timeout - delay).max(0));
        group.new_member_added = false;
    } else {
        group.join_deadline = Some(now.saturating_add(rebalance_timeout));
        group.initial_delay_remaining_ms = None;
    }
    tracing::info!(group = %group.group_id, generation = group.generation_id, "preparing to rebalance");
    group.transition(GroupState::PreparingRebalance, now);
}

/// Completes the join phase early once every member is in (not during the initial delay,
/// which always runs its course: Kafka `InitialDelayedJoin.tryComplete`).
fn try_complete_join(group: &mut ClassicGroup, now: i64, out: &mut Vec<Effect>) {
    if group.is(GroupState::PreparingRebalance)
        && group.initial_delay_remaining_ms.is_none()
        && group.all_members_joined()
    {
        complete_join(group, now, out);
    }
}

/// Kafka `onCompleteJoin`: members that did not rejoin (dynamic ones) are removed, the next
/// generation starts, and every waiting join is answered.
fn complete_join(group: &mut ClassicGroup, now: i64, out: &mut Vec<Effect>) {
    let missing: Vec<String> = group
        .members
        .values()
        .filter(|m| m.join_waiter.is_none() && m.group_instance_id.is_none())
        .map(|m| m.member_id.clone())
        .collect();
    for member_id in missing {
        tracing::info!(group = %group.group_id, member = %member_id, "member did not rejoin in time; removed");
        remove_member(group, &member_id, out);
    }
    if !elect_joined_leader(group) {
        // Kafka: no member rejoined (only static ones that did not come back): wait another
        // rebalance timeout for them, or for their sessions to end, without a new generation.
        tracing::warn!(group = %group.group_id, "could not complete the rebalance: no member rejoined");
        group.initial_delay_remaining_ms = None;
        group.join_deadline = Some(now.saturating_add(group.rebalance_timeout_ms()));
        return;
    }
    group.join_deadline = None;
    group.initial_delay_remaining_ms = None;
    group.generation_id = group.generation_id.wrapping_add(1);
    if group.members.is_empty() {
        group.protocol_name = None;
        group.leader_id = None;
        group.transition(GroupState::Empty, now);
        let record = group.to_record(None, now);
        out.push(Effect::Store {
            group_id: group.group_id.clone(),
            partition: group.partition,
            records: vec![GroupRecord::Group { group: group.group_id.clone(), value: Some(record) }],
            done: StoreDone::Nothing,
        });
        return;
    }
    group.protocol_name = group.select_protocol();
    group.transition(GroupState::CompletingRebalance, now);
    group.pending_sync = group.members.keys().cloned().collect();
    group.sync_deadline = Some(now.saturating_add(group.rebalance_timeout_ms()));
    tracing::info!(
        group = %group.group_id, generation = group.generation_id, members = group.members.len(),
        protocol = group.protocol_name.as_deref().unwrap_or(""), "join phase complete"
    );
    let waiting: Vec<(String, Token)> =
        group.members.values().filter_map(|m| m.join_waiter.map(|t| (m.member_id.clone(), t))).collect();
    for (member_id, token) in waiting {
        reply_join(out, token, join_ok(group, &member_id));
        if let Some(member) = group.members.get_mut(&member_id) {
            member.join_waiter = None;
            member.is_new = false;
            member.heartbeat_deadline = now.saturating_add(i64::from(member.session_timeout_ms));
        }
    }
}

/// Kafka `maybeElectNewJoinedLeader`: the leader stays if it rejoined, else a member that
/// rejoined leads. False if members remain but none rejoined (an empty group is fine).
fn elect_joined_leader(group: &mut ClassicGroup) -> bool {
    if group.members.is_empty() {
        return true;
    }
    let leader_joined =
        group.leader_id.as_ref().and_then(|l| group.members.get(l)).is_some_and(|m| m.join_waiter.is_some());
    if leader_joined {
        return true;
    }
    let Some(joined) = group.members.values().find(|m| m.join_waiter.is_some()) else { return false };
    tracing::info!(group = %group.group_id, old = ?group.leader_id, new = %joined.member_id, "leader did not rejoin; another member leads");
    group.leader_id = Some(joined.member_id.clone());
    true
}

/// Removes a member, answering its waiting requests with UNKNOWN_MEMBER_ID (Kafka `remove`).
fn remove_member(group: &mut ClassicGroup, member_id: &str, out: &mut Vec<Effect>) {
    let Some(member) = group.members.remove(member_id) else { return };
    if let Some(token) = member.join_waiter {
        reply_join(out, token, JoinResult::error(ErrorCode::UNKNOWN_MEMBER_ID, member_id));
    }
    if let Some(token) = member.sync_waiter {
        reply_sync(out, token, SyncResult::error(ErrorCode::UNKNOWN_MEMBER_ID));
    }
    if let Some(instance) = &member.group_instance_id {
        if group.static_members.get(instance).map(String::as_str) == Some(member_id) {
            group.static_members.remove(instance);
        }
    }
    group.pending_sync.remove(member_id);
    if group.leader_id.as_deref() == Some(member_id) {
        let joined = group.members.values().find(|m| m.join_waiter.is_some());
        group.leader_id = joined.or(group.members.values().next()).map(|m| m.member_id.clone());
    }
}

/// Kafka `removeMemberAndUpdateGroup`: a leave or an expiry starts a rebalance.
fn remove_member_and_update_group(
    config: &CoordinatorConfig,
    group: &mut ClassicGroup,
    member_id: &str,
    now: i64,
    out: &mut Vec<Effect>,
) {
    remove_member(group, member_id, out);
    match group.state {
        GroupState::Dead | GroupState::Empty => {}
        GroupState::Stable | GroupState::CompletingRebalance => maybe_prepare_rebalance(config, group, now, out),
        GroupState::PreparingRebalance => try_complete_join(group, now, out),
    }
}

/// One group's timers.
fn tick_group(config: &CoordinatorConfig, group: &mut ClassicGroup, now: i64, out: &mut Vec<Effect>) {
    // KIP-394 ids handed out and never used.
    let before = group.pending_members.len();
    group.pending_members.retain(|_, deadline| *deadline > now);
    if group.pending_members.len() != before {
        try_complete_join(group, now, out);
    }
    // Sessions (Kafka `DelayedHeartbeat`): members waiting in the join barrier or for their
    // assignment are kept alive, except new members past the new-member timeout.
    let expired: Vec<String> = group
        .members
        .values()
        .filter(|m| {
            let waiting = (m.join_waiter.is_some() && !m.is_new) || m.sync_waiter.is_some();
            !waiting && m.heartbeat_deadline <= now
        })
        .map(|m| m.member_id.clone())
        .collect();
    for member_id in expired {
        tracing::info!(group = %group.group_id, member = %member_id, "member session expired");
        remove_member_and_update_group(config, group, &member_id, now, out);
    }
    if group.is(GroupState::PreparingRebalance) && group.join_deadline.is_some_and(|d| d <= now) {
        join_deadline_passed(config, group, now, out);
    }
    // Members that got their JoinGroup answer but never sent SyncGroup (Kafka's pending-sync
    // timeout, one rebalance timeout).
    let sync_late = group.sync_deadline.is_some_and(|d| d <= now)
        && matches!(group.state, GroupState::CompletingRebalance | GroupState::Stable);
    if sync_late {
        group.sync_deadline = None;
        let late: Vec<String> = std::mem::take(&mut group.pending_sync).into_iter().collect();
        for member_id in late {
            tracing::info!(group = %group.group_id, member = %member_id, "member did not sync in time; removed");
            remove_member_and_update_group(config, group, &member_id, now, out);
        }
    }
}

/// The join phase's timer: the initial delay extends itself while members keep arriving
/// (Kafka `InitialDelayedJoin.onComplete`), otherwise the join completes.
fn join_deadline_passed(config: &CoordinatorConfig, group: &mut ClassicGroup, now: i64, out: &mut Vec<Effect>) {
    if let Some(remaining) = group.initial_delay_remaining_ms {
        if group.new_member_added && remaining > 0 {
            let delay = config.initial_rebalance_delay_ms.min(remaining);
            group.new_member_added = false;
            group.initial_delay_remaining_ms = Some((remaining - delay).max(0));
            group.join_deadline = Some(now.saturating_add(delay));
            return;
        }
    }
    complete_join(group, now, out);
}
