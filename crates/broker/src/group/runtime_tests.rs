//! Tests of the async runtime (`runtime.rs`) over an in-memory log: load epochs, append
//! order, and request order.
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use insync_types::ErrorCode;

use super::coordinator::{CoordinatorConfig, JoinRequest, MemberRef};
use super::memory_log::MemoryGroupLog;
use super::records::{GroupRecord, OffsetValue};
use super::runtime::GroupCoordinator;

/// One offsets partition (0) whose storage epoch the test moves: (log, its epoch, coordinator).
fn setup() -> (Arc<MemoryGroupLog>, Arc<AtomicI32>, Arc<GroupCoordinator>) {
    let epoch = Arc::new(AtomicI32::new(0));
    let current = epoch.clone();
    let log =
        Arc::new(MemoryGroupLog::with(Box::new(|_| Ok(0)), Box::new(move |_| Ok(current.load(Ordering::SeqCst)))));
    let config = CoordinatorConfig {
        initial_rebalance_delay_ms: 0,
        offsets_retention_check_interval_ms: 1,
        ..Default::default()
    };
    let groups = GroupCoordinator::new(log.clone(), config);
    (log, epoch, groups)
}

fn simple(group: &str) -> MemberRef {
    MemberRef { group_id: group.into(), member_id: String::new(), group_instance_id: None, generation_id: -1 }
}

fn offset(offset: i64, at: i64) -> OffsetValue {
    OffsetValue { offset, leader_epoch: -1, metadata: String::new(), commit_timestamp_ms: at }
}

fn committed(groups: &GroupCoordinator, group: &str) -> Option<i64> {
    groups.fetch_offsets(group, None).unwrap().first().and_then(|o| o.2.as_ref()).map(|v| v.offset)
}

async fn release_all(log: &MemoryGroupLog) {
    let held: Vec<_> = std::mem::take(&mut *log.held.lock().unwrap());
    for tx in held {
        let _ = tx.send(());
    }
}

#[tokio::test]
async fn requests_wait_until_the_machine_holds_the_current_epochs_load() {
    let (log, epoch, groups) = setup();
    let stored = GroupRecord::Offset { group: "s".into(), topic: "t".into(), partition: 0, value: Some(offset(5, 0)) };
    assert_eq!(groups.fetch_offsets("s", None), Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS), "nothing loaded yet");
    groups.loaded(0, 0, vec![stored.clone()]);
    assert_eq!(committed(&groups, "s"), Some(5));
    // The storage loaded epoch 1; its event has not reached the machine yet.
    epoch.store(1, Ordering::SeqCst);
    assert_eq!(groups.fetch_offsets("s", None), Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS));
    let commit = groups.commit(simple("s"), vec![("t".into(), 0, offset(6, 0))]).await;
    assert_eq!(commit, Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS), "no commit a later load would wipe");
    assert!(log.records.lock().unwrap().is_empty());
    let join = JoinRequest {
        group_id: "s".into(),
        partition: 0,
        member_id: String::new(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::new())],
        require_known_member_id: true,
    };
    assert_eq!(groups.join(join).await.error, ErrorCode::COORDINATOR_LOAD_IN_PROGRESS);
    // Kafka answers a heartbeat blindly while loading.
    assert_eq!(groups.heartbeat(simple("s")), ErrorCode::NONE);
    groups.loaded(0, 1, vec![stored]);
    assert_eq!(committed(&groups, "s"), Some(5));
}

#[tokio::test]
async fn commits_reach_the_log_in_decision_order_and_a_late_ack_does_not_win() {
    let (log, _, groups) = setup();
    groups.loaded(0, 0, Vec::new());
    log.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let first = groups.commit(simple("s"), vec![("t".into(), 0, offset(5, 0))]);
    let second = groups.commit(simple("s"), vec![("t".into(), 0, offset(6, 0))]);
    let written: Vec<i64> = log
        .records
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, r)| match r {
            GroupRecord::Offset { value: Some(v), .. } => Some(v.offset),
            _ => None,
        })
        .collect();
    assert_eq!(written, [5, 6], "appended when decided, before anyone polled");
    // The newer commit is acknowledged first, the older one after it.
    let held: Vec<_> = std::mem::take(&mut *log.held.lock().unwrap());
    let mut held = held.into_iter();
    let (older, newer) = (held.next().unwrap(), held.next().unwrap());
    let _ = newer.send(());
    assert_eq!(second.await.unwrap()[0].2, ErrorCode::NONE);
    let _ = older.send(());
    assert_eq!(first.await.unwrap()[0].2, ErrorCode::NONE);
    assert_eq!(committed(&groups, "s"), Some(6), "memory agrees with the log's last write");
}

#[tokio::test]
async fn an_offset_fetch_after_a_commit_sees_it() {
    let (log, _, groups) = setup();
    groups.loaded(0, 0, Vec::new());
    log.hold.store(true, Ordering::SeqCst);
    let commit = groups.commit(simple("s"), vec![("t".into(), 0, offset(7, 0))]);
    let fetch = groups.fetch_offsets_after_commits("s".into(), None);
    let fetch = tokio::spawn(fetch);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!fetch.is_finished(), "waits for the commit before it");
    release_all(&log).await;
    commit.await.unwrap();
    let fetched = tokio::time::timeout(Duration::from_secs(5), fetch).await.unwrap().unwrap().unwrap();
    assert_eq!(fetched[0].2.as_ref().map(|v| v.offset), Some(7));
}

#[tokio::test]
async fn a_join_acts_when_called_even_if_never_polled() {
    let (_, _, groups) = setup();
    groups.loaded(0, 0, Vec::new());
    let join = JoinRequest {
        group_id: "g".into(),
        partition: 0,
        member_id: String::new(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::new())],
        require_known_member_id: true,
    };
    drop(groups.join(join));
    assert_eq!(groups.list(&[]).len(), 1, "the join's step ran in request order");
}

#[tokio::test]
async fn a_store_decided_at_an_old_epoch_is_not_written_at_the_new_one() {
    let (log, epoch, groups) = setup();
    let config_retention = CoordinatorConfig::default().offsets_retention_ms;
    // A simple consumer's offset old enough to expire at the first timer run.
    let stale = GroupRecord::Offset {
        group: "s".into(),
        topic: "t".into(),
        partition: 0,
        value: Some(offset(1, groups.now() - config_retention - 1)),
    };
    groups.loaded(0, 0, vec![stale]);
    // Leadership moved to epoch 1 (reloaded by the storage, not yet by the machine): the
    // expiry decided on epoch 0's state must not be appended at epoch 1.
    epoch.store(1, Ordering::SeqCst);
    groups.tick();
    assert!(log.records.lock().unwrap().is_empty(), "{:?}", log.records.lock().unwrap());
    // Once the machine holds epoch 1's load, the expiry is written at epoch 1.
    let stale = GroupRecord::Offset {
        group: "s".into(),
        topic: "t".into(),
        partition: 0,
        value: Some(offset(1, groups.now() - config_retention - 1)),
    };
    groups.loaded(0, 1, vec![stale]);
    tokio::time::sleep(Duration::from_millis(10)).await;
    groups.tick();
    let records = log.records.lock().unwrap().clone();
    assert!(records.iter().any(|(_, r)| matches!(r, GroupRecord::Group { value: None, .. })), "{records:?}");
}

#[tokio::test]
async fn a_group_id_too_long_for_a_record_key_is_invalid() {
    let (_, _, groups) = setup();
    groups.loaded(0, 0, Vec::new());
    let long = "g".repeat(super::records::MAX_STRING_BYTES + 1);
    assert_eq!(groups.locate(&long), Err(ErrorCode::INVALID_GROUP_ID));
    let commit = groups.commit(simple(&long), vec![("t".into(), 0, offset(1, 0))]).await;
    assert_eq!(commit, Err(ErrorCode::INVALID_GROUP_ID));
    assert_eq!(groups.delete(&long).await, ErrorCode::INVALID_GROUP_ID);
    assert!(groups.locate(&"g".repeat(super::records::MAX_STRING_BYTES)).is_ok());
}

fn join_request(member_id: &str) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        partition: 0,
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::new())],
        require_known_member_id: true,
    }
}

/// A member through JoinGroup to generation 1 of a new group "g"; its SyncGroup as leader
/// assigning `assignment` is started (its store held by the log).
async fn first_generation_sync(
    groups: &Arc<GroupCoordinator>,
    assignment: &'static [u8],
) -> tokio::task::JoinHandle<super::coordinator::SyncResult> {
    let first = groups.join(join_request("")).await;
    assert_eq!(first.error, ErrorCode::MEMBER_ID_REQUIRED);
    let joining = tokio::spawn(groups.join(join_request(&first.member_id)));
    tokio::time::sleep(Duration::from_millis(5)).await;
    groups.tick();
    let joined = tokio::time::timeout(Duration::from_secs(5), joining).await.unwrap().unwrap();
    assert_eq!((joined.error, joined.generation_id), (ErrorCode::NONE, 1));
    let sync = super::coordinator::SyncRequest {
        group_id: "g".into(),
        member_id: joined.member_id.clone(),
        group_instance_id: None,
        generation_id: 1,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![(joined.member_id, Bytes::from_static(assignment))],
    };
    tokio::spawn(groups.sync(sync))
}

#[tokio::test]
async fn a_store_completing_after_a_reload_at_the_same_epoch_is_ignored() {
    let (log, _, groups) = setup();
    groups.loaded(0, 0, Vec::new());
    log.hold.store(true, Ordering::SeqCst);
    let old_sync = first_generation_sync(&groups, b"old").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let old_store = log.held.lock().unwrap().pop().expect("the old generation's store is held");
    // The partition is loaded again at the same epoch (the storage reloaded it), before the
    // group record was stored: the new load knows nothing of the group.
    groups.loaded(0, 0, Vec::new());
    let answered = tokio::time::timeout(Duration::from_secs(5), old_sync).await.unwrap().unwrap();
    assert_eq!(answered.error, ErrorCode::NOT_COORDINATOR, "the unload answered the waiting sync");
    // A new incarnation of the group reaches the same generation and stores its own record.
    let new_sync = first_generation_sync(&groups, b"new").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The old store's acknowledgement arrives now: it must not hand out its assignment.
    let _ = old_store.send(());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!new_sync.is_finished(), "answered by the old generation's store");
    release_all(&log).await;
    let answered = tokio::time::timeout(Duration::from_secs(5), new_sync).await.unwrap().unwrap();
    assert_eq!((answered.error, answered.assignment), (ErrorCode::NONE, Bytes::from_static(b"new")));
}
