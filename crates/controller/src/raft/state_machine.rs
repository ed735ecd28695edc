//! The Raft state machine (openraft `RaftStateMachine`): the in-memory `ClusterState`, the
//! last applied log id and membership, and snapshots. Applying a committed entry runs
//! `command::apply_command`; after each batch the new state is published on a
//! `tokio::sync::watch` so metadata readers never lock the state machine. Snapshots are
//! JSON, written atomically to `<data_dir>/raft/snapshot.json`; on start-up the state is
//! loaded from it and openraft re-applies the committed log after it.
use super::durable::{read_if_exists, write_atomically};
use super::{NodeId, TypeConfig};
use crate::command::{apply_command, CommandResult};
use crate::error::StorageError as ControllerStorageError;
use crate::metadata::{AppliedMetadata, ClusterState};
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

const SNAPSHOT_FILE: &str = "snapshot.json";

/// `snapshot.json`: the snapshot's metadata and the state it captures.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    /// The snapshot data exactly as sent to followers (JSON of `ClusterState`).
    data: Vec<u8>,
}

#[derive(Debug)]
struct StateMachineInner {
    state: ClusterState,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    current_snapshot: Option<StoredSnapshot>,
    /// Makes snapshot ids unique within this process (openraft compares ids on transfer).
    snapshots_built: u64,
}

/// openraft's state machine for the controller quorum. Cheap to clone (shared inner), which
/// is how it doubles as its own snapshot builder.
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    directory: PathBuf,
    inner: Arc<Mutex<StateMachineInner>>,
    published: Arc<watch::Sender<Arc<AppliedMetadata>>>,
}

fn lock(mutex: &Mutex<StateMachineInner>) -> std::sync::MutexGuard<'_, StateMachineInner> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn storage_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    error: ControllerStorageError,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&error)).into()
}

impl StateMachineStore {
    /// Loads the last snapshot from `directory` (if any).
    pub async fn open(directory: &Path) -> Result<StateMachineStore, ControllerStorageError> {
        let path = directory.join(SNAPSHOT_FILE);
        let read_path = path.clone();
        let bytes = tokio::task::spawn_blocking(move || read_if_exists(&read_path))
            .await
            .map_err(|e| ControllerStorageError::Task(e.to_string()))??;
        let mut inner = StateMachineInner {
            state: ClusterState::default(),
            last_applied: None,
            last_membership: StoredMembership::default(),
            current_snapshot: None,
            snapshots_built: 0,
        };
        if let Some(bytes) = bytes {
            let stored: StoredSnapshot = serde_json::from_slice(&bytes)
                .map_err(|e| ControllerStorageError::Decode { path: path.clone(), source: e })?;
            inner.state = serde_json::from_slice(&stored.data)
                .map_err(|e| ControllerStorageError::Decode { path: path.clone(), source: e })?;
            inner.last_applied = stored.meta.last_log_id;
            inner.last_membership = stored.meta.last_membership.clone();
            tracing::info!(
                "loaded metadata snapshot {} up to log index {}: {} broker(s), {} topic(s)",
                stored.meta.snapshot_id,
                stored.meta.last_log_id.map_or(0, |l| l.index),
                inner.state.brokers.len(),
                inner.state.topics.len()
            );
            inner.current_snapshot = Some(stored);
        }
        let applied =
            AppliedMetadata { version: inner.last_applied.map_or(0, |l| l.index), state: inner.state.clone() };
        let (published, _) = watch::channel(Arc::new(applied));
        Ok(StateMachineStore {
            directory: directory.to_path_buf(),
            inner: Arc::new(Mutex::new(inner)),
            published: Arc::new(published),
        })
    }

    /// The applied metadata, updated after every apply batch and snapshot install.
    pub fn subscribe(&self) -> watch::Receiver<Arc<AppliedMetadata>> {
        self.published.subscribe()
    }

    fn publish(&self, inner: &StateMachineInner) {
        let applied =
            AppliedMetadata { version: inner.last_applied.map_or(0, |l| l.index), state: inner.state.clone() };
        self.published.send_replace(Arc::new(applied));
    }

    async fn persist_snapshot(&self, stored: &StoredSnapshot) -> Result<(), ControllerStorageError> {
        let path = self.directory.join(SNAPSHOT_FILE);
        let bytes =
            serde_json::to_vec(stored).map_err(|e| ControllerStorageError::Encode { path: path.clone(), source: e })?;
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| ControllerStorageError::Task(e.to_string()))?
    }

    /// Keeps `candidate` as the current snapshot unless a newer one arrived meanwhile.
    fn set_current_snapshot(inner: &mut StateMachineInner, candidate: StoredSnapshot) {
        let newer = inner
            .current_snapshot
            .as_ref()
            .is_none_or(|current| current.meta.last_log_id <= candidate.meta.last_log_id);
        if newer {
            inner.current_snapshot = Some(candidate);
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (meta, state) = {
            let mut inner = lock(&self.inner);
            inner.snapshots_built += 1;
            let last = inner.last_applied;
            let snapshot_id = format!(
                "{}-{}-{}",
                last.map_or(0, |l| l.leader_id.term),
                last.map_or(0, |l| l.index),
                inner.snapshots_built
            );
            let meta = SnapshotMeta { last_log_id: last, last_membership: inner.last_membership.clone(), snapshot_id };
            (meta, inner.state.clone())
        };
        let data = serde_json::to_vec(&state).map_err(|e| {
            storage_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                ControllerStorageError::Encode { path: self.directory.join(SNAPSHOT_FILE), source: e },
            )
        })?;
        let stored = StoredSnapshot { meta: meta.clone(), data: data.clone() };
        self.persist_snapshot(&stored)
            .await
            .map_err(|e| storage_error(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, e))?;
        tracing::info!(
            "built metadata snapshot {} up to log index {}",
            meta.snapshot_id,
            meta.last_log_id.map_or(0, |l| l.index)
        );
        Self::set_current_snapshot(&mut lock(&self.inner), stored);
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>> {
        let inner = lock(&self.inner);
        Ok((inner.last_applied, inner.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = lock(&self.inner);
        let mut results = Vec::new();
        for entry in entries {
            debug_assert!(inner.last_applied < Some(entry.log_id), "entries apply in log order, once");
            inner.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::ok(),
                EntryPayload::Normal(command) => apply_command(&mut inner.state, &command, entry.log_id.index),
                EntryPayload::Membership(membership) => {
                    tracing::info!("controller quorum membership at log index {}: {membership}", entry.log_id.index);
                    inner.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    CommandResult::ok()
                }
            };
            results.push(result);
        }
        // Published before openraft answers the proposer, so a caller reading the watch
        // after `client_write` returns sees its own change.
        self.publish(&inner);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let state: ClusterState = serde_json::from_slice(&data).map_err(|e| {
            storage_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                ControllerStorageError::Decode { path: self.directory.join(SNAPSHOT_FILE), source: e },
            )
        })?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.persist_snapshot(&stored)
            .await
            .map_err(|e| storage_error(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, e))?;
        tracing::info!(
            "installed metadata snapshot {} from the leader, up to log index {}: {} broker(s), {} topic(s)",
            meta.snapshot_id,
            meta.last_log_id.map_or(0, |l| l.index),
            state.brokers.len(),
            state.topics.len()
        );
        let mut inner = lock(&self.inner);
        inner.state = state;
        inner.last_applied = meta.last_log_id;
        inner.last_membership = meta.last_membership.clone();
        inner.current_snapshot = Some(stored);
        self.publish(&inner);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let inner = lock(&self.inner);
        Ok(inner
            .current_snapshot
            .as_ref()
            .map(|stored| Snapshot { meta: stored.meta.clone(), snapshot: Box::new(Cursor::new(stored.data.clone())) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use openraft::testing::log_id;

    #[tokio::test]
    async fn a_snapshot_survives_reopening_and_is_published() {
        let directory = tempfile::tempdir().unwrap();
        let mut machine = StateMachineStore::open(directory.path()).await.unwrap();
        let watcher = machine.subscribe();
        let register = Command::RegisterBroker {
            broker_id: 1,
            address: "127.0.0.1:9092".to_string(),
            incarnation: 5,
            kafka_address: String::new(),
        };
        let results = machine
            .apply(vec![Entry { log_id: log_id(1, 1, 1), payload: EntryPayload::Normal(register) }])
            .await
            .unwrap();
        assert!(results[0].is_ok());
        assert_eq!(watcher.borrow().version, 1);
        assert!(watcher.borrow().state.brokers.contains_key(&1));
        machine.build_snapshot().await.unwrap();

        let mut reopened = StateMachineStore::open(directory.path()).await.unwrap();
        assert_eq!(reopened.applied_state().await.unwrap().0, Some(log_id(1, 1, 1)));
        assert_eq!(reopened.subscribe().borrow().state.brokers[&1].incarnation, 5);
        assert!(reopened.get_current_snapshot().await.unwrap().is_some());
    }
}
