//! The durable Raft log (openraft `RaftLogStorage`, storage-v2) in `<data_dir>/raft/`:
//! `log` is an append-only file of CRC-framed JSON records (appended entries, truncations,
//! purges) fsynced before openraft is told an append is durable; `vote.json` and
//! `committed.json` are replaced atomically. Every entry also stays in memory (metadata is
//! small), which is what readers and replication read. On open the records are replayed;
//! a torn last record (crash mid-append) is cut off and logged.
use super::durable::{decode_frames, encode_frame, is_torn_tail, read_if_exists, sync_directory, write_atomically};
use super::{NodeId, TypeConfig};
use crate::error::StorageError as ControllerStorageError;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, ErrorSubject, ErrorVerb, LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const LOG_FILE: &str = "log";
const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";
/// Rewrite the log file once this many records' worth of entries were purged or truncated,
/// so it does not grow without bound while the live log stays ~`max_in_snapshot_log_to_keep`.
const REWRITE_AFTER_DEAD_ENTRIES: usize = 2000;
/// Entries per record when the file is rewritten (bounds one record's size).
const ENTRIES_PER_REWRITE_RECORD: usize = 256;

/// One record of the log file.
#[derive(Debug, Serialize, Deserialize)]
enum LogRecord {
    /// Entries appended, consecutive.
    Append(Vec<Entry<TypeConfig>>),
    /// Conflicting entries removed from this index on (Raft §5.3).
    TruncateFrom(u64),
    /// Entries up to and including this id removed after a snapshot.
    PurgeUpTo(LogId<NodeId>),
}

/// The log as kept in memory, shared with readers.
#[derive(Debug, Default)]
struct LogMemory {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
}

impl LogMemory {
    fn replay(&mut self, record: LogRecord) -> usize {
        match record {
            LogRecord::Append(entries) => {
                for entry in entries {
                    self.entries.insert(entry.log_id.index, entry);
                }
                0
            }
            LogRecord::TruncateFrom(index) => self.entries.split_off(&index).len(),
            LogRecord::PurgeUpTo(log_id) => {
                let kept = self.entries.split_off(&(log_id.index + 1));
                let purged = std::mem::replace(&mut self.entries, kept).len();
                if self.last_purged.as_ref().is_none_or(|p| p.index < log_id.index) {
                    self.last_purged = Some(log_id);
                }
                purged
            }
        }
    }
}

/// The append handle of the log file.
#[derive(Debug)]
struct LogFile {
    directory: PathBuf,
    file: File,
    /// Entries removed by truncate/purge since the file was last rewritten.
    dead_entries: usize,
}

impl LogFile {
    fn path(&self) -> PathBuf {
        self.directory.join(LOG_FILE)
    }

    fn append_record(&mut self, record: &LogRecord) -> Result<(), ControllerStorageError> {
        let path = self.path();
        let payload =
            serde_json::to_vec(record).map_err(|e| ControllerStorageError::Encode { path: path.clone(), source: e })?;
        self.file.write_all(&encode_frame(&payload)).map_err(|e| ControllerStorageError::io(&path, e))?;
        // fdatasync: the data and the file length, which is all an append changes.
        self.file.sync_data().map_err(|e| ControllerStorageError::io(&path, e))
    }

    /// Replaces the file with the live log only (atomic, like a snapshot).
    fn rewrite(&mut self, memory: &LogMemory) -> Result<(), ControllerStorageError> {
        let path = self.path();
        let mut bytes = Vec::new();
        if let Some(last_purged) = memory.last_purged {
            let payload = serde_json::to_vec(&LogRecord::PurgeUpTo(last_purged))
                .map_err(|e| ControllerStorageError::Encode { path: path.clone(), source: e })?;
            bytes.extend(encode_frame(&payload));
        }
        let entries: Vec<&Entry<TypeConfig>> = memory.entries.values().collect();
        for chunk in entries.chunks(ENTRIES_PER_REWRITE_RECORD) {
            let record = LogRecord::Append(chunk.iter().map(|e| (*e).clone()).collect());
            let payload = serde_json::to_vec(&record)
                .map_err(|e| ControllerStorageError::Encode { path: path.clone(), source: e })?;
            bytes.extend(encode_frame(&payload));
        }
        write_atomically(&path, &bytes)?;
        self.file = OpenOptions::new().append(true).open(&path).map_err(|e| ControllerStorageError::io(&path, e))?;
        self.dead_entries = 0;
        Ok(())
    }
}

/// openraft's log storage for the controller quorum.
#[derive(Debug)]
pub struct LogStore {
    directory: PathBuf,
    memory: Arc<Mutex<LogMemory>>,
    file: Arc<Mutex<LogFile>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

/// Reads entries from memory; cloned for each replication stream.
#[derive(Debug, Clone)]
pub struct LogReader {
    memory: Arc<Mutex<LogMemory>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic mid-update elsewhere; the in-memory log is still the
    // replay of what was written, so continuing is no worse than the panic itself.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn io_error(subject: ErrorSubject<NodeId>, verb: ErrorVerb, error: ControllerStorageError) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&error)).into()
}

/// Runs blocking file I/O on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ControllerStorageError> + Send + 'static,
) -> Result<T, ControllerStorageError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ControllerStorageError::Task(e.to_string()))?
}

impl LogStore {
    /// Opens (or creates) the log in `directory`, replaying it and cutting a torn tail.
    pub async fn open(directory: &Path) -> Result<LogStore, ControllerStorageError> {
        let directory = directory.to_path_buf();
        blocking(move || Self::open_blocking(directory)).await
    }

    fn open_blocking(directory: PathBuf) -> Result<LogStore, ControllerStorageError> {
        std::fs::create_dir_all(&directory).map_err(|e| ControllerStorageError::io(&directory, e))?;
        let vote = read_json::<Vote<NodeId>>(&directory.join(VOTE_FILE))?;
        let committed = read_json::<Option<LogId<NodeId>>>(&directory.join(COMMITTED_FILE))?.flatten();

        let path = directory.join(LOG_FILE);
        let mut memory = LogMemory::default();
        let mut dead_entries = 0;
        if let Some(bytes) = read_if_exists(&path)? {
            let decoded = decode_frames(&bytes);
            for payload in &decoded.payloads {
                let record: LogRecord = serde_json::from_slice(payload)
                    .map_err(|e| ControllerStorageError::Decode { path: path.clone(), source: e })?;
                dead_entries += memory.replay(record);
            }
            if let Some(reason) = decoded.invalid_tail {
                if !is_torn_tail(&bytes, decoded.valid_bytes) {
                    return Err(ControllerStorageError::Corrupt { path, offset: decoded.valid_bytes as u64, reason });
                }
                let cut = bytes.len() - decoded.valid_bytes;
                tracing::warn!(
                    "raft log {}: truncating a torn last record ({reason}): {cut} byte(s) after byte {} were never acknowledged",
                    path.display(),
                    decoded.valid_bytes
                );
                let file =
                    OpenOptions::new().write(true).open(&path).map_err(|e| ControllerStorageError::io(&path, e))?;
                file.set_len(decoded.valid_bytes as u64).map_err(|e| ControllerStorageError::io(&path, e))?;
                file.sync_all().map_err(|e| ControllerStorageError::io(&path, e))?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| ControllerStorageError::io(&path, e))?;
        sync_directory(&directory)?;
        tracing::debug!(
            "raft log {} opened: {} entries, last purged {:?}, vote {:?}, committed {:?}",
            path.display(),
            memory.entries.len(),
            memory.last_purged,
            vote,
            committed
        );
        Ok(LogStore {
            directory: directory.clone(),
            memory: Arc::new(Mutex::new(memory)),
            file: Arc::new(Mutex::new(LogFile { directory, file, dead_entries })),
            vote,
            committed,
        })
    }

    /// Appends a record durably; rewrites the file when enough of it is dead.
    async fn persist(&self, record: LogRecord, removed_entries: usize) -> Result<(), ControllerStorageError> {
        let file = Arc::clone(&self.file);
        let memory = Arc::clone(&self.memory);
        blocking(move || {
            let mut file = lock(&file);
            file.append_record(&record)?;
            file.dead_entries += removed_entries;
            if file.dead_entries >= REWRITE_AFTER_DEAD_ENTRIES {
                let memory = lock(&memory);
                file.rewrite(&memory)?;
            }
            Ok(())
        })
        .await
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, ControllerStorageError> {
    match read_if_exists(path)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ControllerStorageError::Decode { path: path.to_path_buf(), source: e }),
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let memory = lock(&self.memory);
        Ok(memory.entries.range(range).map(|(_, entry)| entry.clone()).collect())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let memory = lock(&self.memory);
        Ok(memory.entries.range(range).map(|(_, entry)| entry.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let memory = lock(&self.memory);
        let last_purged_log_id = memory.last_purged;
        let last_log_id = memory.entries.values().next_back().map(|e| e.log_id).or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader { memory: Arc::clone(&self.memory) }
    }

    /// Durable before returning (openraft: "The vote must be persisted on disk before
    /// returning"): a node must never vote twice in a term, even across a crash.
    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let path = self.directory.join(VOTE_FILE);
        let bytes = serde_json::to_vec(vote).map_err(|e| {
            io_error(
                ErrorSubject::Vote,
                ErrorVerb::Write,
                ControllerStorageError::Encode { path: path.clone(), source: e },
            )
        })?;
        blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.vote)
    }

    /// Saved so that a restart re-applies committed entries past the last snapshot at once
    /// (openraft re-applies up to `read_committed()` on start-up).
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        if committed == self.committed {
            return Ok(());
        }
        let path = self.directory.join(COMMITTED_FILE);
        let bytes = serde_json::to_vec(&committed).map_err(|e| {
            io_error(
                ErrorSubject::Store,
                ErrorVerb::Write,
                ControllerStorageError::Encode { path: path.clone(), source: e },
            )
        })?;
        blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.committed)
    }

    /// Readable in memory at once; the callback fires only after the record is fsynced.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        if entries.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        {
            let mut memory = lock(&self.memory);
            if let (Some(last), Some(first)) = (memory.entries.values().next_back(), entries.first()) {
                debug_assert_eq!(last.log_id.index + 1, first.log_id.index, "the log has no holes");
            }
            for entry in &entries {
                memory.entries.insert(entry.log_id.index, entry.clone());
            }
        }
        match self.persist(LogRecord::Append(entries), 0).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(io_error(ErrorSubject::Logs, ErrorVerb::Write, error))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let removed = {
            let mut memory = lock(&self.memory);
            memory.replay(LogRecord::TruncateFrom(log_id.index))
        };
        self.persist(LogRecord::TruncateFrom(log_id.index), removed)
            .await
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let removed = {
            let mut memory = lock(&self.memory);
            memory.replay(LogRecord::PurgeUpTo(log_id))
        };
        self.persist(LogRecord::PurgeUpTo(log_id), removed)
            .await
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::log_id;
    use openraft::{EntryPayload, RaftLogReader};

    fn blank(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry { log_id: log_id(term, 1, index), payload: EntryPayload::Blank }
    }

    async fn append_all(store: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
        // Through the public path: persist directly (LogFlushed cannot be built outside
        // openraft; its use is covered by the openraft Suite test).
        {
            let mut memory = lock(&store.memory);
            for entry in &entries {
                memory.entries.insert(entry.log_id.index, entry.clone());
            }
        }
        store.persist(LogRecord::Append(entries), 0).await.unwrap();
    }

    #[tokio::test]
    async fn recovery_replays_truncate_and_purge_and_cuts_a_torn_tail() {
        let directory = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(directory.path()).await.unwrap();
            append_all(&mut store, (1..=5).map(|i| blank(1, i)).collect()).await;
            store.truncate(log_id(1, 1, 4)).await.unwrap();
            append_all(&mut store, vec![blank(2, 4)]).await;
            store.purge(log_id(1, 1, 2)).await.unwrap();
            store.save_vote(&Vote::new(2, 1)).await.unwrap();
        }
        // A crash in the middle of an append leaves half a record.
        let path = directory.path().join(LOG_FILE);
        let mut torn = encode_frame(b"{\"Append\":[]}");
        torn.truncate(torn.len() - 4);
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&torn).unwrap();
        let length_with_tail = std::fs::metadata(&path).unwrap().len();

        let mut store = LogStore::open(directory.path()).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), length_with_tail - torn.len() as u64);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 2)));
        assert_eq!(state.last_log_id, Some(log_id(2, 1, 4)));
        let indexes: Vec<u64> =
            store.try_get_log_entries(0..100).await.unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![3, 4]);
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
    }

    #[tokio::test]
    async fn corruption_in_the_middle_refuses_to_open() {
        let directory = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(directory.path()).await.unwrap();
            append_all(&mut store, vec![blank(1, 1)]).await;
            append_all(&mut store, vec![blank(1, 2)]).await;
        }
        let path = directory.path().join(LOG_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let error = LogStore::open(directory.path()).await.unwrap_err();
        assert!(matches!(error, ControllerStorageError::Corrupt { offset: 0, .. }), "{error}");
    }

    #[tokio::test]
    async fn the_file_is_rewritten_once_mostly_dead() {
        let directory = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(directory.path()).await.unwrap();
        let count = REWRITE_AFTER_DEAD_ENTRIES as u64 + 10;
        append_all(&mut store, (1..=count).map(|i| blank(1, i)).collect()).await;
        let before = std::fs::metadata(directory.path().join(LOG_FILE)).unwrap().len();
        store.purge(log_id(1, 1, count - 5)).await.unwrap();
        let after = std::fs::metadata(directory.path().join(LOG_FILE)).unwrap().len();
        assert!(after < before / 10, "rewritten: {before} -> {after} bytes");
        drop(store);
        let mut reopened = LogStore::open(directory.path()).await.unwrap();
        let state = reopened.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, count - 5)));
        assert_eq!(state.last_log_id, Some(log_id(1, 1, count)));
    }
}
