//! Unit tests of the group state machine (`coordinator.rs`), driven through its inputs and
//! checked on its outputs only: the answers it sends and the records it asks to store.
use std::collections::HashMap;

use bytes::Bytes;
use insync_types::ErrorCode;

use super::classic::{GroupState, Token};
use super::coordinator::{
    Coordinator, CoordinatorConfig, Effect, JoinRequest, JoinResult, MemberRef, Reply, StoreDone, SyncRequest,
    SyncResult,
};
use super::records::{GroupRecord, OffsetValue};

const DELAY: i64 = 100;
const SESSION: i32 = 10_000;
const REBALANCE: i32 = 20_000;

/// The machine plus a record of everything it answered and asked to store.
struct Harness {
    c: Coordinator,
    now: i64,
    next_token: Token,
    replies: HashMap<Token, Reply>,
    /// Every token answered, with how often (must be once).
    answered: HashMap<Token, usize>,
    stores: Vec<(String, Vec<GroupRecord>, StoreDone)>,
    /// Stores are completed at once (Ok) unless false.
    auto_store: bool,
    /// Assignments the simulated clients received (the random test must reach some).
    assignments_received: usize,
}

fn config() -> CoordinatorConfig {
    CoordinatorConfig { initial_rebalance_delay_ms: DELAY, max_members_per_group: 8, ..Default::default() }
}

fn protocols(names: &[&str], meta: &str) -> Vec<(String, Bytes)> {
    names.iter().map(|n| (n.to_string(), Bytes::from(format!("{n}:{meta}")))).collect()
}

impl Harness {
    fn new() -> Harness {
        Harness {
            c: Coordinator::new(config(), 7),
            now: 1_000_000,
            next_token: 0,
            replies: HashMap::new(),
            answered: HashMap::new(),
            stores: Vec::new(),
            auto_store: true,
            assignments_received: 0,
        }
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        let mut queue = effects;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for effect in queue {
                match effect {
                    Effect::Reply(token, reply) => {
                        *self.answered.entry(token).or_default() += 1;
                        self.replies.insert(token, reply);
                    }
                    Effect::Store { group_id, records, done, .. } if self.auto_store => {
                        self.stores.push((group_id.clone(), records, StoreDone::Nothing));
                        self.c.store_done(&group_id, done, Ok(()), self.now, &mut next);
                    }
                    Effect::Store { group_id, records, done, .. } => self.stores.push((group_id, records, done)),
                }
            }
            queue = next;
        }
    }

    fn join_with(&mut self, member_id: &str, instance: Option<&str>, protocols: Vec<(String, Bytes)>) -> Token {
        self.next_token += 1;
        let token = self.next_token;
        let request = JoinRequest {
            group_id: "g".into(),
            partition: 3,
            member_id: member_id.into(),
            group_instance_id: instance.map(String::from),
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".into(),
            protocols,
            require_known_member_id: true,
        };
        let mut out = Vec::new();
        self.c.join(request, token, self.now, &mut out);
        self.apply(out);
        token
    }

    fn join(&mut self, member_id: &str) -> Token {
        self.join_with(member_id, None, protocols(&["range"], "t"))
    }

    /// A new dynamic member: MEMBER_ID_REQUIRED, then the join with that id (waiting).
    fn new_member(&mut self) -> (String, Token) {
        let first = self.join("");
        let result = self.join_result(first).expect("answered at once");
        assert_eq!(result.error, ErrorCode::MEMBER_ID_REQUIRED);
        let id = result.member_id.clone();
        (id.clone(), self.join(&id))
    }

    fn sync(&mut self, member_id: &str, generation: i32, assignments: &[(&str, &str)]) -> Token {
        self.next_token += 1;
        let token = self.next_token;
        let request = SyncRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: None,
            generation_id: generation,
            protocol_type: Some("consumer".into()),
            protocol_name: None,
            assignments: assignments.iter().map(|(m, a)| (m.to_string(), Bytes::from(a.to_string()))).collect(),
        };
        let mut out = Vec::new();
        self.c.sync(request, token, self.now, &mut out);
        self.apply(out);
        token
    }

    fn heartbeat(&mut self, member_id: &str, generation: i32) -> ErrorCode {
        let request = MemberRef {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: None,
            generation_id: generation,
        };
        self.c.heartbeat(&request, self.now)
    }

    fn advance(&mut self, ms: i64) {
        let end = self.now + ms;
        while self.now < end {
            self.now = (self.now + 100).min(end);
            let mut out = Vec::new();
            self.c.tick(self.now, &mut out);
            self.apply(out);
        }
    }

    fn join_result(&self, token: Token) -> Option<JoinResult> {
        match self.replies.get(&token) {
            Some(Reply::Join(r)) => Some(r.clone()),
            Some(other) => panic!("join answered with {other:?}"),
            None => None,
        }
    }

    fn sync_result(&self, token: Token) -> Option<SyncResult> {
        match self.replies.get(&token) {
            Some(Reply::Sync(r)) => Some(r.clone()),
            Some(other) => panic!("sync answered with {other:?}"),
            None => None,
        }
    }

    fn state(&self) -> GroupState {
        self.c.group("g").map(|g| g.state).unwrap_or(GroupState::Dead)
    }

    fn leave(&mut self, members: &[(&str, Option<&str>)]) -> Result<Vec<ErrorCode>, ErrorCode> {
        let leaving: Vec<(String, Option<String>)> =
            members.iter().map(|(m, i)| (m.to_string(), i.map(String::from))).collect();
        let mut out = Vec::new();
        let result = self.c.leave("g", &leaving, self.now, &mut out);
        self.apply(out);
        result
    }

    /// Two members through a full first rebalance: (leader, follower, generation).
    fn stable_pair(&mut self) -> (String, String, i32) {
        let (a, ja) = self.new_member();
        let (b, jb) = self.new_member();
        // The second member extends the initial delay once (KIP-134).
        self.advance(2 * DELAY);
        let (ra, rb) = (self.join_result(ja).unwrap(), self.join_result(jb).unwrap());
        assert_eq!(ra.leader, rb.leader);
        let (leader, follower) = if ra.leader == a { (a, b) } else { (b, a) };
        let generation = ra.generation_id;
        let fs = self.sync(&follower, generation, &[]);
        assert!(self.sync_result(fs).is_none(), "a follower waits for the leader's assignment");
        let ls = self.sync(&leader, generation, &[(&leader, "L"), (&follower, "F")]);
        assert_eq!(self.sync_result(ls).unwrap().assignment, Bytes::from("L"));
        assert_eq!(self.sync_result(fs).unwrap().assignment, Bytes::from("F"));
        assert_eq!(self.state(), GroupState::Stable);
        (leader, follower, generation)
    }
}

#[test]
fn first_join_needs_a_member_id_and_waits_the_initial_delay() {
    let mut h = Harness::new();
    let (id, token) = h.new_member();
    assert!(id.starts_with("client-"));
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    h.advance(DELAY - 100);
    assert!(h.join_result(token).is_none(), "the initial delay waits for more members");
    h.advance(200);
    let result = h.join_result(token).unwrap();
    assert_eq!(result.error, ErrorCode::NONE);
    assert_eq!((result.generation_id, result.leader.as_str()), (1, id.as_str()));
    assert_eq!(result.protocol_name.as_deref(), Some("range"));
    assert_eq!(result.members.len(), 1);
    assert_eq!(h.state(), GroupState::CompletingRebalance);
}

#[test]
fn two_members_split_the_assignment_and_only_the_leader_sees_the_members() {
    let mut h = Harness::new();
    let (a, ja) = h.new_member();
    let (_b, jb) = h.new_member();
    h.advance(DELAY);
    assert!(h.join_result(ja).is_none(), "a member joining during the initial delay extends it");
    h.advance(DELAY);
    let (ra, rb) = (h.join_result(ja).unwrap(), h.join_result(jb).unwrap());
    assert_eq!(ra.generation_id, rb.generation_id);
    assert_eq!(ra.leader, rb.leader);
    assert_eq!(ra.leader, a, "the first member is the leader");
    assert_eq!(ra.members.len(), 2);
    assert!(rb.members.is_empty(), "followers get no member list");
    let mut h = Harness::new();
    let (leader, follower, generation) = h.stable_pair();
    assert_eq!(h.heartbeat(&leader, generation), ErrorCode::NONE);
    assert_eq!(h.heartbeat(&follower, generation), ErrorCode::NONE);
    let record = h.stores.iter().rev().find_map(|(_, r, _)| r.first().cloned()).unwrap();
    let GroupRecord::Group { value: Some(value), .. } = record else { panic!("{record:?}") };
    assert_eq!(value.generation_id, generation);
    assert_eq!(value.members.len(), 2, "the completed rebalance is stored");
}

#[test]
fn sync_is_answered_only_after_the_group_is_stored() {
    let mut h = Harness::new();
    h.auto_store = false;
    let (a, ja) = h.new_member();
    h.advance(DELAY);
    let generation = h.join_result(ja).unwrap().generation_id;
    let token = h.sync(&a, generation, &[(&a, "A")]);
    assert!(h.sync_result(token).is_none());
    let (group, _, done) = h.stores.pop().unwrap();
    let mut out = Vec::new();
    h.c.store_done(&group, done, Err(ErrorCode::NOT_COORDINATOR), h.now, &mut out);
    h.apply(out);
    assert_eq!(h.sync_result(token).unwrap().error, ErrorCode::NOT_COORDINATOR);
    assert_eq!(h.state(), GroupState::PreparingRebalance, "a failed store rebalances again");
}

#[test]
fn a_new_member_rebalances_a_stable_group() {
    let mut h = Harness::new();
    let (leader, follower, generation) = h.stable_pair();
    let (c, jc) = h.new_member();
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat(&leader, generation), ErrorCode::REBALANCE_IN_PROGRESS);
    let s = h.sync(&follower, generation, &[]);
    assert_eq!(h.sync_result(s).unwrap().error, ErrorCode::REBALANCE_IN_PROGRESS);
    let jl = h.join(&leader);
    assert!(h.join_result(jc).is_none(), "waits for every known member");
    let jf = h.join(&follower);
    let results = [h.join_result(jl).unwrap(), h.join_result(jf).unwrap(), h.join_result(jc).unwrap()];
    assert!(results.iter().all(|r| r.error == ErrorCode::NONE && r.generation_id == generation + 1));
    assert_eq!(results.iter().filter(|r| !r.members.is_empty()).count(), 1, "one leader");
    assert_eq!(h.c.group("g").unwrap().members.len(), 3);
    let _ = c;
}

#[test]
fn members_that_do_not_rejoin_are_removed_after_the_rebalance_timeout() {
    let mut h = Harness::new();
    let (leader, follower, generation) = h.stable_pair();
    let jl = h.join(&leader); // the leader asks for a rebalance
    h.advance(i64::from(SESSION) / 2);
    assert_eq!(h.heartbeat(&follower, generation), ErrorCode::REBALANCE_IN_PROGRESS);
    assert!(h.join_result(jl).is_none());
    h.advance(i64::from(REBALANCE));
    let result = h.join_result(jl).unwrap();
    assert_eq!(result.error, ErrorCode::NONE);
    assert_eq!(result.members.len(), 1, "the follower was removed");
    assert_eq!(h.heartbeat(&follower, generation), ErrorCode::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_silent_member_expires_by_the_timer_and_the_group_rebalances() {
    let mut h = Harness::new();
    let (leader, follower, generation) = h.stable_pair();
    for _ in 0..2 {
        h.advance(4_000);
        assert_eq!(h.heartbeat(&leader, generation), ErrorCode::NONE);
    }
    h.advance(3_000);
    // The follower never heartbeat: gone after its session, with no request from it.
    assert!(!h.c.group("g").unwrap().members.contains_key(&follower));
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat(&leader, generation), ErrorCode::REBALANCE_IN_PROGRESS);
    let jl = h.join(&leader);
    let result = h.join_result(jl).unwrap();
    assert_eq!((result.generation_id, result.members.len()), (generation + 1, 1));
}

#[test]
fn member_checks_answer_like_kafka() {
    let mut h = Harness::new();
    let (leader, _follower, generation) = h.stable_pair();
    assert_eq!(h.heartbeat(&leader, generation + 1), ErrorCode::ILLEGAL_GENERATION);
    assert_eq!(h.heartbeat("nobody", generation), ErrorCode::UNKNOWN_MEMBER_ID);
    let t = h.sync(&leader, generation - 1, &[]);
    assert_eq!(h.sync_result(t).unwrap().error, ErrorCode::ILLEGAL_GENERATION);
    let t = h.join_with("", None, protocols(&["roundrobin"], "x"));
    assert_eq!(h.join_result(t).unwrap().error, ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
    let t = h.join("unknown-id");
    assert_eq!(h.join_result(t).unwrap().error, ErrorCode::UNKNOWN_MEMBER_ID);
    // A stable follower rejoining unchanged learns the current generation, no rebalance.
    let follower = h.c.group("g").unwrap().members.keys().find(|m| **m != leader).cloned().unwrap();
    let t = h.join(&follower);
    assert_eq!(h.join_result(t).unwrap().generation_id, generation);
    assert_eq!(h.state(), GroupState::Stable);
}

#[test]
fn the_protocol_is_the_one_every_member_supports_that_most_prefer() {
    let mut h = Harness::new();
    let first = h.join_with("", None, protocols(&["cooperative-sticky", "range"], "t"));
    let a = h.join_result(first).unwrap().member_id;
    let ja = h.join_with(&a, None, protocols(&["cooperative-sticky", "range"], "t"));
    let second = h.join_with("", None, protocols(&["range", "roundrobin"], "t"));
    let b = h.join_result(second).unwrap().member_id;
    let jb = h.join_with(&b, None, protocols(&["range", "roundrobin"], "t"));
    h.advance(2 * DELAY);
    let result = h.join_result(ja).unwrap();
    assert_eq!(result.protocol_name.as_deref(), Some("range"));
    assert_eq!(h.join_result(jb).unwrap().protocol_name.as_deref(), Some("range"));
    assert!(result.members.iter().all(|m| m.metadata.starts_with(b"range:")), "metadata of the chosen protocol");
}

#[test]
fn leave_group_removes_by_member_id_or_instance_and_rebalances() {
    let mut h = Harness::new();
    let (leader, follower, _) = h.stable_pair();
    let results = h.leave(&[(&follower, None), ("ghost", None), ("", Some("no-such-instance"))]).unwrap();
    assert_eq!(results, vec![ErrorCode::NONE, ErrorCode::UNKNOWN_MEMBER_ID, ErrorCode::UNKNOWN_MEMBER_ID]);
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    let results = h.leave(&[(&leader, None)]).unwrap();
    assert_eq!(results, vec![ErrorCode::NONE]);
    assert_eq!(h.state(), GroupState::Empty, "the last member leaving empties the group");
}

/// A static member (group.instance.id) through a first rebalance: (member id, generation).
fn stable_static(h: &mut Harness, instance: &str) -> (String, i32) {
    let t = h.join_with("", Some(instance), protocols(&["range"], "t"));
    h.advance(DELAY);
    let result = h.join_result(t).unwrap();
    assert_eq!(result.error, ErrorCode::NONE, "static members skip MEMBER_ID_REQUIRED");
    let s = h.sync(&result.member_id, result.generation_id, &[(&result.member_id, "mine")]);
    assert_eq!(h.sync_result(s).unwrap().assignment, Bytes::from("mine"));
    (result.member_id, result.generation_id)
}

#[test]
fn a_static_member_restarting_unchanged_keeps_its_assignment_without_a_rebalance() {
    let mut h = Harness::new();
    let (old_id, generation) = stable_static(&mut h, "consumer-1");
    let t = h.join_with("", Some("consumer-1"), protocols(&["range"], "t"));
    let result = h.join_result(t).unwrap();
    assert_eq!(result.error, ErrorCode::NONE);
    assert_eq!(result.generation_id, generation, "no new generation");
    assert_ne!(result.member_id, old_id);
    assert!(result.skip_assignment, "the static leader must not assign again (KIP-814)");
    assert_eq!(h.state(), GroupState::Stable);
    let s = h.sync(&result.member_id, generation, &[]);
    assert_eq!(h.sync_result(s).unwrap().assignment, Bytes::from("mine"), "assignment kept");
    let fenced = MemberRef {
        group_id: "g".into(),
        member_id: old_id.clone(),
        group_instance_id: Some("consumer-1".into()),
        generation_id: generation,
    };
    assert_eq!(h.c.heartbeat(&fenced, h.now), ErrorCode::FENCED_INSTANCE_ID);
    // Leaving by instance id with the old member id is fenced too.
    assert_eq!(h.leave(&[(&old_id, Some("consumer-1"))]).unwrap(), vec![ErrorCode::FENCED_INSTANCE_ID]);
}

#[test]
fn a_static_member_changing_protocol_rebalances() {
    let mut h = Harness::new();
    let (_, generation) = stable_static(&mut h, "consumer-1");
    let t = h.join_with("", Some("consumer-1"), protocols(&["roundrobin", "range"], "t"));
    // A rebalance, complete at once: its only member has joined.
    let result = h.join_result(t).unwrap();
    assert_eq!((result.generation_id, result.protocol_name.as_deref()), (generation + 1, Some("roundrobin")));
}

fn commit(h: &mut Harness, member_id: &str, generation: i32) -> Result<(), ErrorCode> {
    let request = MemberRef {
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: None,
        generation_id: generation,
    };
    h.c.validate_commit(&request, 3, h.now)
}

fn offset(offset: i64) -> OffsetValue {
    OffsetValue { offset, leader_epoch: -1, metadata: String::new(), commit_timestamp_ms: 0 }
}

#[test]
fn commits_are_checked_against_member_and_generation() {
    let mut h = Harness::new();
    assert_eq!(commit(&mut h, "", -1), Ok(()), "a simple commit to a group without members");
    h.c.apply_offsets("g", vec![("t".into(), 0, offset(5))]);
    let (leader, follower, generation) = h.stable_pair();
    assert_eq!(commit(&mut h, "", -1), Err(ErrorCode::UNKNOWN_MEMBER_ID));
    assert_eq!(commit(&mut h, &leader, generation - 1), Err(ErrorCode::ILLEGAL_GENERATION));
    assert_eq!(commit(&mut h, "stranger", generation), Err(ErrorCode::UNKNOWN_MEMBER_ID));
    assert_eq!(commit(&mut h, &follower, generation), Ok(()));
    h.c.apply_offsets("g", vec![("t".into(), 1, offset(9))]);
    // Committed offsets survive rebalances.
    let _ = h.join(&leader);
    assert_eq!(commit(&mut h, &follower, generation), Ok(()), "commits continue while rebalancing");
    let fetched = h.c.fetch_offsets("g", None);
    assert_eq!(fetched.len(), 2);
    assert_eq!(fetched[0].2.as_ref().map(|v| v.offset), Some(5));
    let mut h = Harness::new();
    assert_eq!(commit(&mut h, "m", 3), Err(ErrorCode::ILLEGAL_GENERATION), "unknown group, member commit");
}

#[test]
fn commits_between_join_and_sync_are_refused_with_rebalance_in_progress() {
    let mut h = Harness::new();
    let (a, ja) = h.new_member();
    h.advance(DELAY);
    let generation = h.join_result(ja).unwrap().generation_id;
    assert_eq!(commit(&mut h, &a, generation), Err(ErrorCode::REBALANCE_IN_PROGRESS));
}

#[test]
fn a_group_loaded_from_records_keeps_its_generation() {
    let mut h = Harness::new();
    let (leader, follower, generation) = h.stable_pair();
    h.c.apply_offsets("g", vec![("t".into(), 0, offset(42))]);
    let mut records: Vec<GroupRecord> = h.stores.iter().flat_map(|(_, r, _)| r.clone()).collect();
    records.push(GroupRecord::Offset { group: "g".into(), topic: "t".into(), partition: 0, value: Some(offset(42)) });
    records.push(GroupRecord::Offset { group: "gone".into(), topic: "t".into(), partition: 0, value: Some(offset(1)) });
    records.push(GroupRecord::Offset { group: "gone".into(), topic: "t".into(), partition: 0, value: None });
    records.push(GroupRecord::Group { group: "gone".into(), value: None });
    // Another broker takes over the partition.
    let mut other = Harness::new();
    let mut out = Vec::new();
    other.c.load(3, 0, records, &|_| true, other.now, &mut out);
    assert!(out.is_empty());
    assert_eq!(other.state(), GroupState::Stable);
    assert_eq!(other.heartbeat(&leader, generation), ErrorCode::NONE);
    assert_eq!(commit(&mut other, &follower, generation), Ok(()));
    let s = other.sync(&follower, generation, &[]);
    assert_eq!(other.sync_result(s).unwrap().assignment, Bytes::from("F"));
    assert_eq!(other.c.fetch_offsets("g", Some(&[("t".to_string(), vec![0])]))[0].2.as_ref().unwrap().offset, 42);
    assert!(other.c.group("gone").is_none(), "tombstones delete the offsets and the group");
    let mut out = Vec::new();
    other.c.unload(3, &mut out);
    assert!(other.c.group("g").is_none());
}

#[test]
fn only_empty_groups_are_deleted_with_tombstones() {
    let mut h = Harness::new();
    let (leader, follower, _) = h.stable_pair();
    h.c.apply_offsets("g", vec![("t".into(), 0, offset(1))]);
    assert_eq!(h.c.delete("g").unwrap_err(), ErrorCode::NON_EMPTY_GROUP);
    assert_eq!(h.c.delete("nope").unwrap_err(), ErrorCode::GROUP_ID_NOT_FOUND);
    h.leave(&[(&leader, None), (&follower, None)]).unwrap();
    let (partition, tombstones) = h.c.delete("g").unwrap();
    assert_eq!(partition, 3);
    assert_eq!(tombstones.len(), 2);
    assert!(matches!(&tombstones[0], GroupRecord::Offset { value: None, .. }));
    assert!(matches!(&tombstones[1], GroupRecord::Group { value: None, .. }));
    assert!(h.c.list(&[]).is_empty());
}

#[test]
fn list_and_describe_show_state_members_and_assignments() {
    let mut h = Harness::new();
    let (leader, _, _) = h.stable_pair();
    assert_eq!(h.c.list(&[]), vec![("g".to_string(), "consumer".to_string(), "Stable")]);
    assert!(h.c.list(&["empty".to_string()]).is_empty());
    assert_eq!(h.c.list(&["STABLE".to_string()]).len(), 1);
    let description = h.c.describe("g");
    assert_eq!((description.state, description.protocol.as_str()), ("Stable", "range"));
    assert_eq!(description.members.len(), 2);
    let l = description.members.iter().find(|m| m.member_id == leader).unwrap();
    assert_eq!((l.assignment.as_ref(), l.client_host.as_str()), (&b"L"[..], "/127.0.0.1"));
    assert_eq!(h.c.describe("other").state, "Dead");
}

#[test]
fn the_group_size_is_bounded() {
    let mut h = Harness::new();
    for _ in 0..8 {
        h.new_member();
    }
    let t = h.join("");
    assert_eq!(h.join_result(t).unwrap().error, ErrorCode::GROUP_MAX_SIZE_REACHED);
}

#[test]
fn unused_member_ids_are_forgotten_after_a_session() {
    let mut h = Harness::new();
    let t = h.join("");
    let id = h.join_result(t).unwrap().member_id;
    h.advance(i64::from(SESSION) + 100);
    let t = h.join(&id);
    assert_eq!(h.join_result(t).unwrap().error, ErrorCode::UNKNOWN_MEMBER_ID);
}

// ---- Randomized interleavings -------------------------------------------------------

/// A tiny deterministic generator (xorshift64*), so a failure replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Idle,
    Joining(Token),
    Syncing(Token, i32),
    Stable(i32),
    Dead,
}

/// A simulated consumer following the client side of the protocol.
#[derive(Debug, Clone)]
struct Client {
    member_id: String,
    phase: Phase,
}

/// What a leader assigns `member` in `generation`: checkable by whoever receives it.
fn assignment_for(member: &str, generation: i32) -> String {
    format!("{member}@{generation}")
}

impl Harness {
    fn client_join(&mut self, client: &mut Client) {
        let token = self.join(&client.member_id.clone());
        client.phase = Phase::Joining(token);
    }

    /// Moves a client on from an answer it got.
    fn client_step(&mut self, client: &mut Client) {
        match client.phase.clone() {
            Phase::Joining(token) => {
                let Some(result) = self.join_result(token) else { return };
                match result.error {
                    ErrorCode::NONE => {
                        let assignments: Vec<(String, String)> = result
                            .members
                            .iter()
                            .map(|m| (m.member_id.clone(), assignment_for(&m.member_id, result.generation_id)))
                            .collect();
                        let pairs: Vec<(&str, &str)> =
                            assignments.iter().map(|(m, a)| (m.as_str(), a.as_str())).collect();
                        let t = self.sync(&client.member_id.clone(), result.generation_id, &pairs);
                        client.phase = Phase::Syncing(t, result.generation_id);
                    }
                    ErrorCode::MEMBER_ID_REQUIRED => {
                        client.member_id = result.member_id;
                        self.client_join(client);
                    }
                    ErrorCode::UNKNOWN_MEMBER_ID => {
                        client.member_id.clear();
                        client.phase = Phase::Idle;
                    }
                    _ => client.phase = Phase::Idle,
                }
            }
            Phase::Syncing(token, generation) => {
                let Some(result) = self.sync_result(token) else { return };
                match result.error {
                    ErrorCode::NONE => {
                        // Invariant: a member gets exactly what the leader of its generation
                        // assigned to it.
                        assert_eq!(result.assignment, Bytes::from(assignment_for(&client.member_id, generation)));
                        client.phase = Phase::Stable(generation);
                        self.assignments_received += 1;
                    }
                    ErrorCode::UNKNOWN_MEMBER_ID => {
                        client.member_id.clear();
                        client.phase = Phase::Idle;
                    }
                    _ => client.phase = Phase::Idle,
                }
            }
            Phase::Stable(generation) => match self.heartbeat(&client.member_id.clone(), generation) {
                ErrorCode::NONE => {}
                ErrorCode::REBALANCE_IN_PROGRESS => self.client_join(client),
                _ => {
                    client.member_id.clear();
                    client.phase = Phase::Idle;
                }
            },
            Phase::Idle => self.client_join(client),
            Phase::Dead => {}
        }
    }

    fn check_invariants(&self, last_generation: &mut i32) {
        let Some(group) = self.c.group("g") else {
            // An empty group without offsets is forgotten; a new one starts over.
            *last_generation = 0;
            return;
        };
        assert!(group.generation_id >= *last_generation, "generations never go back");
        *last_generation = group.generation_id;
        match group.state {
            GroupState::Empty => assert!(group.members.is_empty()),
            GroupState::CompletingRebalance | GroupState::Stable => {
                assert!(!group.members.is_empty());
                let leader = group.leader_id.as_ref().expect("a leader");
                assert!(group.members.contains_key(leader), "the leader is a member");
            }
            _ => {}
        }
        if group.state == GroupState::Stable {
            // Every member of a stable generation holds the leader's assignment for it.
            for member in group.members.values() {
                let expected = assignment_for(&member.member_id, group.generation_id);
                assert_eq!(member.assignment, Bytes::from(expected), "member {}", member.member_id);
            }
        }
        assert!(self.answered.values().all(|n| *n == 1), "every request is answered at most once");
    }
}

fn random_run(seed: u64) -> usize {
    let mut h = Harness::new();
    h.auto_store = false;
    let mut rng = Rng(seed | 1);
    let mut clients: Vec<Client> = (0..5).map(|_| Client { member_id: String::new(), phase: Phase::Idle }).collect();
    let mut last_generation = 0;
    for _ in 0..3_000 {
        let i = rng.below(clients.len() as u64) as usize;
        let mut client = clients[i].clone();
        match rng.below(20) {
            0 if client.phase != Phase::Dead => {
                // Crash: no LeaveGroup; the session timeout must remove it.
                client.phase = Phase::Dead;
            }
            1 if !client.member_id.is_empty() => {
                let _ = h.leave(&[(&client.member_id.clone(), None)]);
                client = Client { member_id: String::new(), phase: Phase::Idle };
            }
            2 if client.phase == Phase::Dead => client = Client { member_id: String::new(), phase: Phase::Idle },
            3..=5 => h.advance(100 * (1 + rng.below(30) as i64)),
            6..=8 if !h.stores.is_empty() => {
                let (group, _, done) = h.stores.remove(0);
                let result = if rng.below(8) == 0 { Err(ErrorCode::COORDINATOR_NOT_AVAILABLE) } else { Ok(()) };
                let mut out = Vec::new();
                h.c.store_done(&group, done, result, h.now, &mut out);
                h.apply(out);
            }
            _ => h.client_step(&mut client),
        }
        clients[i] = client;
        h.check_invariants(&mut last_generation);
    }
    // Quiesce: stop every client, complete the stores, let the timers run out.
    for _ in 0..50 {
        while !h.stores.is_empty() {
            let (group, _, done) = h.stores.remove(0);
            let mut out = Vec::new();
            h.c.store_done(&group, done, Ok(()), h.now, &mut out);
            h.apply(out);
        }
        h.advance(2_000);
    }
    h.check_invariants(&mut last_generation);
    let outstanding: Vec<Token> = (1..=h.next_token).filter(|t| !h.answered.contains_key(t)).collect();
    assert!(outstanding.is_empty(), "seed {seed}: requests never answered: {outstanding:?}");
    let members = h.c.group("g").map(|g| g.members.len()).unwrap_or(0);
    assert_eq!(members, 0, "seed {seed}: silent members expire");
    h.assignments_received
}

#[test]
fn random_interleavings_keep_the_invariants() {
    for seed in 1..=40u64 {
        let received = random_run(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        assert!(received >= 5, "seed {seed}: the run reached only {received} assignments");
    }
}

#[test]
fn group_ids_hash_like_java_strings() {
    // Values of "...".hashCode() in Java.
    assert_eq!(super::java_string_hash(""), 0);
    assert_eq!(super::java_string_hash("a"), 97);
    assert_eq!(super::java_string_hash("my-group"), -1_906_497_762);
}

// ---- The async runtime over an in-memory log ----------------------------------------

fn runtime_join(member_id: &str) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        partition: 0,
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        protocol_type: "consumer".into(),
        protocols: protocols(&["range"], "t"),
        require_known_member_id: true,
    }
}

#[tokio::test]
async fn the_runtime_waits_in_the_barrier_stores_the_group_and_commits_durably() {
    use std::sync::Arc;

    use super::memory_log::MemoryGroupLog;
    use super::runtime::GroupCoordinator;

    let log = Arc::new(MemoryGroupLog::all_loaded(4));
    let groups = GroupCoordinator::new(log.clone(), config());
    for partition in 0..4 {
        groups.loaded(partition, 0, Vec::new());
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let timers = tokio::spawn(groups.clone().run_timers(stop_rx));
    let deadline = std::time::Duration::from_secs(10);
    let first = groups.join(runtime_join("")).await;
    assert_eq!(first.error, ErrorCode::MEMBER_ID_REQUIRED);
    // Answered by the timer task once the initial delay passes.
    let joined = tokio::time::timeout(deadline, groups.join(runtime_join(&first.member_id))).await.unwrap();
    assert_eq!((joined.error, joined.generation_id), (ErrorCode::NONE, 1));
    let sync = SyncRequest {
        group_id: "g".into(),
        member_id: joined.member_id.clone(),
        group_instance_id: None,
        generation_id: 1,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![(joined.member_id.clone(), Bytes::from_static(b"all"))],
    };
    let synced = tokio::time::timeout(deadline, groups.sync(sync)).await.unwrap();
    assert_eq!(synced.assignment, Bytes::from_static(b"all"));
    let member = MemberRef {
        group_id: "g".into(),
        member_id: joined.member_id.clone(),
        group_instance_id: None,
        generation_id: 1,
    };
    let results = groups.commit(member.clone(), vec![("t".into(), 0, offset(7))]).await.unwrap();
    assert_eq!(results, vec![("t".to_string(), 0, ErrorCode::NONE)]);
    let stored = log.records.lock().unwrap().clone();
    assert!(stored.iter().any(|(_, r)| matches!(r, GroupRecord::Group { value: Some(v), .. } if v.generation_id == 1)));
    assert!(stored.iter().any(|(_, r)| matches!(r, GroupRecord::Offset { value: Some(v), .. } if v.offset == 7)));
    // A failed append is the commit's answer, and the offset stays as it was.
    *log.fail_with.lock().unwrap() = Some(ErrorCode::NOT_COORDINATOR);
    let results = groups.commit(member, vec![("t".into(), 0, offset(8))]).await.unwrap();
    assert_eq!(results[0].2, ErrorCode::NOT_COORDINATOR);
    assert_eq!(groups.fetch_offsets("g", None).unwrap()[0].2.as_ref().map(|v| v.offset), Some(7));
    let _ = stop_tx.send(true);
    timers.await.unwrap();
}

// ---- Review fixes: the machine -------------------------------------------------------

fn simple_commit(h: &mut Harness, group: &str, p: i32, value: OffsetValue) -> super::offsets::PendingCommit {
    let request =
        MemberRef { group_id: group.into(), member_id: String::new(), group_instance_id: None, generation_id: -1 };
    let (results, pending) = h.c.prepare_commit(&request, 3, vec![("t".into(), p, value)], h.now).unwrap();
    assert_eq!(results[0].2, ErrorCode::NONE);
    pending.expect("accepted")
}

#[test]
fn a_simple_commit_keeps_its_new_group_while_its_append_is_in_flight() {
    let mut h = Harness::new();
    let pending = simple_commit(&mut h, "s", 0, offset(11));
    // The append takes longer than a tick: the Empty group without offsets must stay.
    h.advance(500);
    assert!(h.c.group("s").is_some(), "kept while a commit is in flight");
    h.c.finish_commit(pending, true);
    assert_eq!(h.c.fetch_offsets("s", None)[0].2.as_ref().map(|v| v.offset), Some(11));
}

#[test]
fn a_commit_acknowledged_late_does_not_overwrite_a_newer_one() {
    let mut h = Harness::new();
    let older = simple_commit(&mut h, "s", 0, offset(5));
    let newer = simple_commit(&mut h, "s", 0, offset(6));
    h.c.finish_commit(newer, true);
    h.c.finish_commit(older, true);
    assert_eq!(h.c.fetch_offsets("s", None)[0].2.as_ref().map(|v| v.offset), Some(6));
}

#[test]
fn a_commit_to_a_deleted_group_does_not_come_back() {
    let mut h = Harness::new();
    h.c.apply_offsets("s", vec![("t".into(), 0, offset(1))]);
    let pending = simple_commit(&mut h, "s", 0, offset(2));
    h.c.delete("s").unwrap();
    let again = simple_commit(&mut h, "s", 1, offset(3));
    h.c.finish_commit(pending, true);
    h.c.finish_commit(again, true);
    let offsets = h.c.fetch_offsets("s", None);
    assert_eq!(offsets.len(), 1, "only the new incarnation's commit: {offsets:?}");
    assert_eq!(offsets[0].1, 1);
}

#[test]
fn exceeding_the_caps_is_a_non_retriable_error() {
    let mut h = Harness::new();
    h.c.config.max_offsets_per_group = 2;
    h.c.config.max_groups = 1;
    let request =
        MemberRef { group_id: "s".into(), member_id: String::new(), group_instance_id: None, generation_id: -1 };
    let offsets = (0..3).map(|p| ("t".to_string(), p, offset(1))).collect();
    let (results, pending) = h.c.prepare_commit(&request, 3, offsets, h.now).unwrap();
    let errors: Vec<ErrorCode> = results.iter().map(|r| r.2).collect();
    assert_eq!(errors, [ErrorCode::NONE, ErrorCode::NONE, ErrorCode::INVALID_COMMIT_OFFSET_SIZE]);
    h.c.finish_commit(pending.unwrap(), true);
    let other = MemberRef { group_id: "o".into(), ..request };
    let refused = h.c.prepare_commit(&other, 3, vec![("t".into(), 0, offset(1))], h.now).unwrap_err();
    assert_eq!(refused, ErrorCode::INVALID_COMMIT_OFFSET_SIZE);
    assert!(!refused.is_retriable());
    let t = h.join("");
    assert_eq!(h.join_result(t).unwrap().error, ErrorCode::GROUP_MAX_SIZE_REACHED);
}

#[test]
fn an_empty_groups_offsets_expire_after_the_retention_with_tombstones() {
    let mut h = Harness::new();
    h.c.config.offsets_retention_ms = 60_000;
    h.c.config.offsets_retention_check_interval_ms = 1_000;
    let (leader, follower, generation) = h.stable_pair();
    let request = MemberRef {
        group_id: "g".into(),
        member_id: leader.clone(),
        group_instance_id: None,
        generation_id: generation,
    };
    let (_, pending) = h.c.prepare_commit(&request, 3, vec![("t".into(), 0, offset(9))], h.now).unwrap();
    h.c.finish_commit(pending.unwrap(), true);
    // Offsets of a group with members never expire.
    for _ in 0..14 {
        h.advance(5_000);
        for member in [&leader, &follower] {
            assert_eq!(h.heartbeat(member, generation), ErrorCode::NONE);
        }
    }
    assert_eq!(h.c.fetch_offsets("g", None).len(), 1);
    h.leave(&[(&leader, None), (&follower, None)]).unwrap();
    assert_eq!(h.state(), GroupState::Empty);
    h.advance(50_000);
    assert_eq!(h.c.fetch_offsets("g", None).len(), 1, "retention counts from when it became Empty");
    h.advance(12_000);
    assert!(h.c.group("g").is_none(), "expired and forgotten");
    let (_, records, _) = h.stores.last().unwrap();
    assert!(matches!(&records[0], GroupRecord::Offset { value: None, partition: 0, .. }));
    assert!(matches!(records.last(), Some(GroupRecord::Group { value: None, .. })));
}

#[test]
fn a_simple_consumers_offsets_expire_per_commit() {
    let mut h = Harness::new();
    h.c.config.offsets_retention_ms = 10_000;
    h.c.config.offsets_retention_check_interval_ms = 1_000;
    let mut old = offset(1);
    old.commit_timestamp_ms = h.now;
    h.c.apply_offsets("s", vec![("t".into(), 0, old)]);
    h.advance(6_000);
    let mut recent = offset(2);
    recent.commit_timestamp_ms = h.now;
    h.c.apply_offsets("s", vec![("t".into(), 1, recent)]);
    h.advance(6_000);
    let left: Vec<i32> = h.c.fetch_offsets("s", None).iter().map(|o| o.1).collect();
    assert_eq!(left, [1], "only the older commit expired");
    h.advance(6_000);
    assert!(h.c.group("s").is_none());
}

#[test]
fn a_leader_that_did_not_rejoin_is_replaced_by_one_that_did() {
    let mut h = Harness::new();
    let (static_leader, generation) = stable_static(&mut h, "consumer-1");
    // A new member starts a rebalance; the static leader never rejoins (it is down).
    let (b, jb) = h.new_member();
    for _ in 0..=i64::from(REBALANCE) / 2_000 {
        // Its session is still alive (a heartbeat thread), only its rejoin is missing.
        h.heartbeat(&static_leader, generation);
        h.advance(2_000);
    }
    let result = h.join_result(jb).expect("answered at the rebalance timeout");
    assert_eq!(result.error, ErrorCode::NONE);
    assert_eq!(result.generation_id, generation + 1);
    assert_eq!(result.leader, b, "a member that rejoined leads, not the absent static leader");
    assert_eq!(result.members.len(), 2, "the new leader assigns for every member");
    assert_ne!(b, static_leader);
}

#[test]
fn a_rebalance_nobody_rejoined_waits_again_without_a_new_generation() {
    let mut h = Harness::new();
    let (static_member, generation) = stable_static(&mut h, "consumer-1");
    // A new member starts a rebalance, then leaves before it completes.
    let (b, _) = h.new_member();
    h.leave(&[(&b, None)]).unwrap();
    for _ in 0..=i64::from(REBALANCE) / 2_000 {
        assert_eq!(h.heartbeat(&static_member, generation), ErrorCode::REBALANCE_IN_PROGRESS);
        h.advance(2_000);
    }
    let group = h.c.group("g").unwrap();
    assert_eq!((group.state, group.generation_id), (GroupState::PreparingRebalance, generation));
    // Once it rejoins, the rebalance completes with it as the leader.
    let t = h.join_with(&static_member, Some("consumer-1"), protocols(&["range"], "t"));
    let result = h.join_result(t).unwrap();
    assert_eq!((result.generation_id, result.leader.as_str()), (generation + 1, static_member.as_str()));
}

#[test]
fn a_static_leader_rejoining_answers_the_old_leader_to_old_clients() {
    let mut h = Harness::new();
    let (old_id, _) = stable_static(&mut h, "consumer-1");
    let t = h.join_with("", Some("consumer-1"), protocols(&["range"], "t"));
    let result = h.join_result(t).unwrap();
    assert_eq!(result.leader, result.member_id, "v9+: the new id leads, with skip_assignment");
    assert_eq!(result.leader_before_v9.as_deref(), Some(old_id.as_str()), "before v9: the old leader id");
}

#[test]
fn a_failed_static_rejoin_store_restores_the_old_member() {
    let mut h = Harness::new();
    let (old_id, generation) = stable_static(&mut h, "consumer-1");
    h.auto_store = false;
    let t = h.join_with("", Some("consumer-1"), protocols(&["range"], "t"));
    assert!(h.join_result(t).is_none(), "answered once stored");
    let (group, _, done) = h.stores.pop().unwrap();
    let mut out = Vec::new();
    h.c.store_done(&group, done, Err(ErrorCode::COORDINATOR_NOT_AVAILABLE), h.now, &mut out);
    h.apply(out);
    let result = h.join_result(t).unwrap();
    assert_eq!((result.error, result.member_id.as_str()), (ErrorCode::COORDINATOR_NOT_AVAILABLE, ""));
    assert_eq!(h.c.group("g").unwrap().static_members.get("consumer-1"), Some(&old_id));
    assert_eq!(h.heartbeat(&old_id, generation), ErrorCode::NONE, "the old member id is current again");
}

#[test]
fn a_static_rejoin_waiting_for_its_store_joins_a_rebalance_that_starts_meanwhile() {
    let mut h = Harness::new();
    let (_, generation) = stable_static(&mut h, "consumer-1");
    h.auto_store = false;
    let t = h.join_with("", Some("consumer-1"), protocols(&["range"], "t"));
    let (b, jb) = h.new_member();
    // Every member is in the barrier: the rebalance completes at once, answering both.
    let result = h.join_result(t).expect("answered by the rebalance");
    assert_eq!((result.error, result.generation_id), (ErrorCode::NONE, generation + 1));
    assert_eq!(h.join_result(jb).unwrap().generation_id, generation + 1);
    let (group, _, done) = h.stores.remove(0);
    let mut out = Vec::new();
    h.c.store_done(&group, done, Ok(()), h.now, &mut out);
    h.apply(out);
    assert!(h.answered.values().all(|n| *n == 1), "answered once");
    let _ = b;
}

#[test]
fn leave_with_an_unknown_instance_id_falls_back_to_the_member_id() {
    let mut h = Harness::new();
    let (_, follower, _) = h.stable_pair();
    assert_eq!(h.leave(&[(&follower, Some("not-an-instance"))]).unwrap(), vec![ErrorCode::NONE]);
}

#[test]
fn a_pending_member_id_cannot_join_as_a_static_member() {
    let mut h = Harness::new();
    let t = h.join("");
    let pending = h.join_result(t).unwrap().member_id;
    let t = h.join_with(&pending, Some("consumer-1"), protocols(&["range"], "t"));
    assert_eq!(h.join_result(t).unwrap().error, ErrorCode::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_join_naming_too_many_protocols_is_refused() {
    let mut h = Harness::new();
    let names: Vec<String> = (0..65).map(|i| format!("p{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let t = h.join_with("", None, protocols(&refs, "t"));
    assert_eq!(h.join_result(t).unwrap().error, ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
}

// ---- Review fixes: loads, deletes and string limits ----------------------------------

#[test]
fn a_load_skips_records_of_groups_placed_on_another_partition() {
    let mut h = Harness::new();
    // "live" is coordinated here on partition 5, with an offset.
    h.c.apply_offsets("live", vec![("t".into(), 0, offset(7))]);
    h.c.groups.get_mut("live").unwrap().partition = 5;
    let records = vec![
        GroupRecord::Offset { group: "mine".into(), topic: "t".into(), partition: 0, value: Some(offset(1)) },
        GroupRecord::Offset { group: "live".into(), topic: "t".into(), partition: 0, value: Some(offset(99)) },
        GroupRecord::Offset { group: "stray".into(), topic: "t".into(), partition: 0, value: Some(offset(2)) },
    ];
    let mut out = Vec::new();
    h.c.load(3, 0, records, &|group| group == "mine", h.now, &mut out);
    assert_eq!(h.c.fetch_offsets("mine", None)[0].2.as_ref().map(|v| v.offset), Some(1));
    assert!(h.c.group("stray").is_none(), "another partition's group is not loaded here");
    let live = h.c.group("live").unwrap();
    assert_eq!(live.partition, 5, "the live group of another partition is not replaced");
    assert_eq!(h.c.fetch_offsets("live", None)[0].2.as_ref().map(|v| v.offset), Some(7));
    // Even a record this partition would own does not replace a live group of another one.
    let records =
        vec![GroupRecord::Offset { group: "live".into(), topic: "t".into(), partition: 0, value: Some(offset(98)) }];
    h.c.load(3, 1, records, &|_| true, h.now, &mut out);
    assert_eq!(h.c.fetch_offsets("live", None)[0].2.as_ref().map(|v| v.offset), Some(7));
}

#[test]
fn a_group_tombstone_deletes_no_offset_on_load() {
    let mut h = Harness::new();
    let records = vec![
        GroupRecord::Offset { group: "s".into(), topic: "t".into(), partition: 0, value: Some(offset(1)) },
        GroupRecord::Offset { group: "s".into(), topic: "t".into(), partition: 1, value: Some(offset(2)) },
        GroupRecord::Offset { group: "s".into(), topic: "t".into(), partition: 0, value: None },
        GroupRecord::Group { group: "s".into(), value: None },
        GroupRecord::Offset { group: "d".into(), topic: "t".into(), partition: 0, value: Some(offset(3)) },
        GroupRecord::Offset { group: "d".into(), topic: "t".into(), partition: 0, value: None },
        GroupRecord::Group { group: "d".into(), value: None },
    ];
    let mut out = Vec::new();
    h.c.load(3, 0, records, &|_| true, h.now, &mut out);
    // As in Kafka: only an offset's own tombstone deletes it (compaction keeps keys, not order).
    let left: Vec<(i32, i64)> =
        h.c.fetch_offsets("s", None).iter().map(|(_, p, v)| (*p, v.as_ref().unwrap().offset)).collect();
    assert_eq!(left, [(1, 2)]);
    assert_eq!(h.c.group("s").unwrap().state, GroupState::Empty);
    assert!(h.c.group("d").is_none(), "nothing left of a group whose offsets were all tombstoned");
}

#[test]
fn delete_tombstones_the_offsets_of_commits_in_flight_too() {
    let mut h = Harness::new();
    h.c.apply_offsets("s", vec![("t".into(), 0, offset(1))]);
    // A commit of a partition the group has no offset for yet is appended, not yet acknowledged.
    let pending = simple_commit(&mut h, "s", 4, offset(2));
    let (_, tombstones) = h.c.delete("s").unwrap();
    let deleted: Vec<i32> = tombstones
        .iter()
        .filter_map(|r| match r {
            GroupRecord::Offset { partition, value: None, .. } => Some(*partition),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, [0, 4], "the in-flight commit's key is tombstoned too");
    assert!(matches!(tombstones.last(), Some(GroupRecord::Group { value: None, .. })));
    h.c.finish_commit(pending, true);
    assert!(h.c.group("s").is_none(), "the late acknowledgement does not bring it back");
    // Replaying the log (the commit, then the tombstones) leaves nothing either.
    let mut log =
        vec![GroupRecord::Offset { group: "s".into(), topic: "t".into(), partition: 4, value: Some(offset(2)) }];
    log.extend(tombstones);
    let mut out = Vec::new();
    h.c.load(3, 1, log, &|_| true, h.now, &mut out);
    assert!(h.c.group("s").is_none());
}

#[test]
fn ids_and_names_too_long_for_a_record_are_refused_where_they_come_in() {
    let long = "x".repeat(super::records::MAX_STRING_BYTES + 1);
    let mut h = Harness::new();
    let t = h.join_with("", Some(&long), protocols(&["range"], "t"));
    assert_eq!(h.join_result(t).unwrap().error, ErrorCode::INVALID_REQUEST, "instance id");
    let t = h.join_with("", None, protocols(&[&long], "t"));
    assert_eq!(h.join_result(t).unwrap().error, ErrorCode::INVALID_REQUEST, "protocol name");
    let t = h.join_with(&long, None, protocols(&["range"], "t"));
    assert_eq!(h.join_result(t).unwrap().error, ErrorCode::UNKNOWN_MEMBER_ID, "member id");
    assert!(h.c.group("g").is_none(), "nothing was created");
    // The longest that fits is fine.
    let longest = "i".repeat(super::records::MAX_STRING_BYTES);
    let t = h.join_with("", Some(&longest), protocols(&["range"], "t"));
    h.advance(DELAY);
    assert_eq!(h.join_result(t).unwrap().error, ErrorCode::NONE);
    // Commits: the group id, topic names beyond Kafka's 249, metadata beyond the frame.
    let mut too_long =
        MemberRef { group_id: long.clone(), member_id: String::new(), group_instance_id: None, generation_id: -1 };
    assert_eq!(
        h.c.prepare_commit(&too_long, 3, vec![("t".into(), 0, offset(1))], h.now).unwrap_err(),
        ErrorCode::INVALID_GROUP_ID
    );
    too_long.group_id = "s".into();
    h.c.config.offset_metadata_max_bytes = usize::MAX;
    let mut big = offset(1);
    big.metadata = long.clone();
    let offsets = vec![("t".repeat(250), 0, offset(1)), ("t".repeat(249), 0, offset(1)), ("t".into(), 1, big)];
    let (results, _) = h.c.prepare_commit(&too_long, 3, offsets, h.now).unwrap();
    let errors: Vec<ErrorCode> = results.iter().map(|r| r.2).collect();
    assert_eq!(errors, [ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, ErrorCode::NONE, ErrorCode::OFFSET_METADATA_TOO_LARGE]);
}
