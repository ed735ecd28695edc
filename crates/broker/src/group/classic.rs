//! One classic consumer group (Kafka `ClassicGroup` / the old `GroupMetadata`): its state,
//! members, generation, selected protocol and committed offsets, with the queries the
//! coordinator's rules need. Pure data: `coordinator.rs` drives the transitions.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bytes::Bytes;

use super::records::{GroupValue, MemberValue, OffsetValue};

/// A request waiting for the state machine to answer it (a JoinGroup in the join barrier, a
/// SyncGroup waiting for the leader's assignment); the runtime maps it to a channel.
pub type Token = u64;

/// Kafka `ClassicGroupState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The names Kafka's DescribeGroups and ListGroups use.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Kafka `ClassicGroupMember`.
#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// Its JoinGroup waiting in the join barrier.
    pub join_waiter: Option<Token>,
    /// Its SyncGroup waiting for the leader's assignment.
    pub sync_waiter: Option<Token>,
    /// Kafka `isNew`: joined during this rebalance; expires on the new-member timeout
    /// rather than waiting for the whole rebalance timeout.
    pub is_new: bool,
    /// When the session ends without a heartbeat (ms on the coordinator's clock).
    pub heartbeat_deadline: i64,
}

impl Member {
    /// Kafka `ClassicGroupMember.matches`: same protocols with the same metadata, in order.
    pub fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// The metadata the member sent for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(name, _)| name == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }

    /// Kafka `vote`: the member's first preference among `candidates`.
    fn vote<'a>(&'a self, candidates: &HashSet<&str>) -> Option<&'a str> {
        self.protocols.iter().map(|(name, _)| name.as_str()).find(|name| candidates.contains(name))
    }
}

/// Kafka `ClassicGroup`.
#[derive(Debug, Clone)]
pub struct ClassicGroup {
    pub group_id: String,
    /// The `__consumer_offsets` partition holding the group.
    pub partition: i32,
    pub state: GroupState,
    pub state_timestamp_ms: i64,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation_id: i32,
    pub leader_id: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// KIP-345: group.instance.id → its current member id.
    pub static_members: HashMap<String, String>,
    /// KIP-394: member ids handed out with MEMBER_ID_REQUIRED, awaiting their JoinGroup,
    /// with the deadline (session timeout) after which they are forgotten.
    pub pending_members: BTreeMap<String, i64>,
    /// Members of the current generation that have not sent SyncGroup yet (Kafka
    /// `pendingSyncMembers`), removed when `sync_deadline` passes.
    pub pending_sync: BTreeSet<String>,
    pub sync_deadline: Option<i64>,
    /// The join phase's deadline while PreparingRebalance (Kafka's DelayedJoin /
    /// InitialDelayedJoin).
    pub join_deadline: Option<i64>,
    /// The initial delayed join: rebalance time left to extend into (`group.initial.rebalance.delay.ms`).
    pub initial_delay_remaining_ms: Option<i64>,
    /// A member joined since the initial delay was last (re)armed (Kafka `newMemberAdded`).
    pub new_member_added: bool,
    /// A leader's SyncGroup of this generation is being stored.
    pub storing_generation: Option<i32>,
    pub offsets: BTreeMap<(String, i32), OffsetValue>,
    /// The coordinator's sequence when this incarnation of the group was created: a commit
    /// decided before it belongs to an earlier (deleted or unloaded) incarnation.
    pub created_seq: u64,
    /// Offset commits appended but not yet acknowledged (Kafka `pendingOffsetCommits`), by
    /// sequence, with the keys each wrote: the group is not forgotten nor expired while any
    /// is in flight, and DeleteGroups tombstones their keys too.
    pub pending_commits: BTreeMap<u64, Vec<(String, i32)>>,
    /// Offsets new to the group among those in flight: they count against the offset cap.
    pub pending_new_offsets: usize,
    /// Per offset, the sequence of the commit that set it (Kafka's `appendedBatchOffset`):
    /// a commit acknowledged late never overwrites a newer one. Absent: loaded (0).
    pub offset_seq: HashMap<(String, i32), u64>,
}

impl ClassicGroup {
    pub fn new(group_id: &str, partition: i32, now: i64) -> ClassicGroup {
        ClassicGroup {
            group_id: group_id.to_string(),
            partition,
            state: GroupState::Empty,
            state_timestamp_ms: now,
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            sync_deadline: None,
            join_deadline: None,
            initial_delay_remaining_ms: None,
            new_member_added: false,
            storing_generation: None,
            offsets: BTreeMap::new(),
            created_seq: 0,
            pending_commits: BTreeMap::new(),
            pending_new_offsets: 0,
            offset_seq: HashMap::new(),
        }
    }

    pub fn transition(&mut self, state: GroupState, now: i64) {
        self.state = state;
        self.state_timestamp_ms = now;
    }

    pub fn is(&self, state: GroupState) -> bool {
        self.state == state
    }

    /// How many members support each protocol name (each member counted once): one pass
    /// over the members, so the checks below cost members x protocols, not its square.
    fn support_counts(&self) -> HashMap<&str, usize> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for member in self.members.values() {
            let names: HashSet<&str> = member.protocols.iter().map(|(n, _)| n.as_str()).collect();
            for name in names {
                *counts.entry(name).or_default() += 1;
            }
        }
        counts
    }

    /// Kafka `supportsProtocols`: an empty group takes any non-empty protocol list; otherwise
    /// the type must match and one protocol must be supported by every member.
    pub fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let counts = self.support_counts();
        let everyone = self.members.len();
        protocols.iter().any(|(name, _)| counts.get(name.as_str()) == Some(&everyone))
    }

    /// Kafka `selectProtocol`: among the protocols every member supports, the one most
    /// members prefer (ties: the lowest name, so that every run picks the same).
    pub fn select_protocol(&self) -> Option<String> {
        let counts = self.support_counts();
        let everyone = self.members.len();
        let candidates: HashSet<&str> = counts.iter().filter(|(_, n)| **n == everyone).map(|(name, _)| *name).collect();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some(choice) = member.vote(&candidates) {
                *votes.entry(choice).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        votes.into_iter().find(|(_, n)| *n == best).map(|(name, _)| name.to_string())
    }

    /// Kafka `hasAllMembersJoined`: every member is waiting in the barrier and no member id
    /// handed out is still to come.
    pub fn all_members_joined(&self) -> bool {
        self.members.values().all(|m| m.join_waiter.is_some()) && self.pending_members.is_empty()
    }

    /// The longest rebalance timeout of the members (Kafka `rebalanceTimeoutMs`).
    pub fn rebalance_timeout_ms(&self) -> i64 {
        self.members.values().map(|m| i64::from(m.rebalance_timeout_ms)).max().unwrap_or(0)
    }

    /// KIP-345: is `member_id` an old id of the static member `instance_id`?
    pub fn is_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        match instance_id.and_then(|i| self.static_members.get(i)) {
            Some(current) => current != member_id,
            None => false,
        }
    }

    /// The group metadata record as of now (Kafka `GroupMetadataManager.storeGroup`), with
    /// `assignments` in place of the members' current ones when given.
    pub fn to_record(&self, assignments: Option<&HashMap<String, Bytes>>, now: i64) -> GroupValue {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader_id.clone(),
            state_timestamp_ms: now,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&protocol),
                    assignment: match assignments {
                        Some(a) => a.get(&m.member_id).cloned().unwrap_or_default(),
                        None => m.assignment.clone(),
                    },
                })
                .collect(),
        }
    }

    /// Rebuilds a group from its last metadata record (Kafka `GroupMetadataManager.loadGroup`):
    /// members keep their generation and assignment, so they carry on after a coordinator move.
    pub fn apply_record(&mut self, value: &GroupValue, now: i64) {
        self.protocol_type = (!value.protocol_type.is_empty()).then(|| value.protocol_type.clone());
        self.protocol_name = value.protocol_name.clone();
        self.generation_id = value.generation_id;
        self.leader_id = value.leader.clone();
        self.members.clear();
        self.static_members.clear();
        let protocol = value.protocol_name.clone().unwrap_or_default();
        for m in &value.members {
            if let Some(instance) = &m.group_instance_id {
                self.static_members.insert(instance.clone(), m.member_id.clone());
            }
            let member = Member {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                protocols: vec![(protocol.clone(), m.subscription.clone())],
                assignment: m.assignment.clone(),
                join_waiter: None,
                sync_waiter: None,
                is_new: false,
                heartbeat_deadline: now.saturating_add(i64::from(m.session_timeout_ms)),
            };
            self.members.insert(m.member_id.clone(), member);
        }
        let state = if self.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
        self.transition(state, now);
        // KIP-211: an Empty group's offsets expire counting from when it became Empty, as
        // the record says (Kafka `currentStateTimestamp`); an old record has none (-1).
        if state == GroupState::Empty && value.state_timestamp_ms >= 0 {
            self.state_timestamp_ms = value.state_timestamp_ms.min(now);
        }
    }
}
