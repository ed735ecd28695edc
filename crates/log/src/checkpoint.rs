//! Checkpoint files in Kafka's text format (Kafka `CheckpointFile`): a version line, an entry
//! count line, then one entry per line. Holds the shared durable read/write helpers (also
//! used by `epoch_cache` for `leader-epoch-checkpoint`) and [`OffsetCheckpointFile`], the
//! per-broker high-watermark file `replication-offset-checkpoint`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use insync_types::TopicPartition;

use crate::error::LogError;

/// The only version Kafka writes for offset and leader-epoch checkpoints.
const CHECKPOINT_VERSION: u32 = 0;

/// Writes `entries` as a checkpoint durably and atomically, as Kafka `CheckpointFile.write`
/// does: write `<path>.tmp`, fsync it, rename over `path`, fsync the directory. A crash
/// leaves either the old file or the new one, never a torn one.
pub(crate) fn write_checkpoint(path: &Path, entries: &[String]) -> Result<(), LogError> {
    let mut body = String::with_capacity(16 + entries.iter().map(|e| e.len() + 1).sum::<usize>());
    body.push_str(&format!("{CHECKPOINT_VERSION}\n{}\n", entries.len()));
    for entry in entries {
        body.push_str(entry);
        body.push('\n');
    }
    let temp_path = temp_path_for(path);
    let write_temp = || -> std::io::Result<()> {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&temp_path)?;
        file.write_all(body.as_bytes())?;
        file.sync_all()
    };
    write_temp().map_err(|e| LogError::io(format!("writing {}", temp_path.display()), e))?;
    fs::rename(&temp_path, path)
        .map_err(|e| LogError::io(format!("renaming {} to {}", temp_path.display(), path.display()), e))?;
    sync_parent_dir(path)
}

/// `<path>.tmp`, Kafka's temp-file name for checkpoints.
pub(crate) fn temp_path_for(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Fsyncs the directory holding `path`, so a rename or a new file survives a crash.
pub(crate) fn sync_parent_dir(path: &Path) -> Result<(), LogError> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    sync_dir(parent)
}

/// Fsyncs a directory (its entries: creations, renames, deletions).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(format!("fsyncing directory {}", dir.display()), e))
}

/// Reads a checkpoint's entry lines; `None` when the file does not exist. Checks the
/// version and that the count line matches the entries, as Kafka
/// `CheckpointFile.CheckpointReadBuffer.read` does ("Expected N entries ... but found only M").
pub(crate) fn read_checkpoint(path: &Path) -> Result<Option<Vec<String>>, LogError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == ErrorKind::InvalidData => return Err(corrupt(path, "not UTF-8 text".to_owned())),
        Err(e) => return Err(LogError::io(format!("reading {}", path.display()), e)),
    };
    let mut lines = text.lines();
    let version = lines.next().ok_or_else(|| corrupt(path, "empty file".to_owned()))?;
    if version.trim().parse::<u32>().ok() != Some(CHECKPOINT_VERSION) {
        return Err(corrupt(path, format!("unrecognised version {version:?}")));
    }
    let count_line = lines.next().ok_or_else(|| corrupt(path, "missing entry count".to_owned()))?;
    let expected: usize =
        count_line.trim().parse().map_err(|_| corrupt(path, format!("bad entry count {count_line:?}")))?;
    let entries: Vec<String> = lines.filter(|line| !line.trim().is_empty()).map(str::to_owned).collect();
    if entries.len() != expected {
        return Err(corrupt(path, format!("expected {expected} entries but found {}", entries.len())));
    }
    Ok(Some(entries))
}

pub(crate) fn corrupt(path: &Path, reason: String) -> LogError {
    LogError::CorruptCheckpoint { path: path.to_owned(), reason }
}

/// A per-broker map of partition → offset (Kafka `OffsetCheckpointFile`), used for the
/// high-watermark checkpoint `replication-offset-checkpoint`. Lines are
/// `"<topic> <partition> <offset>"`; topics may contain '-' and '.', never whitespace
/// (Kafka topic names are `[a-zA-Z0-9._-]`).
#[derive(Debug, Clone)]
pub struct OffsetCheckpointFile {
    /// Where the checkpoint lives; `<path>.tmp` is used while writing.
    path: PathBuf,
}

impl OffsetCheckpointFile {
    pub fn new(path: impl Into<PathBuf>) -> OffsetCheckpointFile {
        OffsetCheckpointFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the checkpoint; a missing file is an empty map (first start of a broker).
    pub fn read(&self) -> Result<BTreeMap<TopicPartition, i64>, LogError> {
        let Some(lines) = read_checkpoint(&self.path)? else {
            return Ok(BTreeMap::new());
        };
        let mut offsets = BTreeMap::new();
        for line in lines {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let malformed = || corrupt(&self.path, format!("malformed line {line:?}"));
            let [topic, partition, offset] = fields[..] else {
                return Err(malformed());
            };
            let partition: i32 = partition.parse().map_err(|_| malformed())?;
            let offset: i64 = offset.parse().map_err(|_| malformed())?;
            offsets.insert(TopicPartition::new(topic, partition), offset);
        }
        Ok(offsets)
    }

    /// Replaces the checkpoint with `offsets`, durably and atomically.
    pub fn write(&self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<(), LogError> {
        let mut lines = Vec::with_capacity(offsets.len());
        for (topic_partition, offset) in offsets {
            let topic = &topic_partition.topic;
            if topic.is_empty() || topic.chars().any(char::is_whitespace) {
                return Err(LogError::InvalidArgument(format!(
                    "topic name {topic:?} cannot be written to an offset checkpoint"
                )));
            }
            lines.push(format!("{topic} {} {offset}", topic_partition.partition));
        }
        write_checkpoint(&self.path, &lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_in_kafka_text_format() {
        let dir = tempfile::tempdir().unwrap();
        let file = OffsetCheckpointFile::new(dir.path().join("replication-offset-checkpoint"));
        assert!(file.read().unwrap().is_empty(), "missing file reads as empty");

        let mut offsets = BTreeMap::new();
        offsets.insert(TopicPartition::new("orders.v2-eu", 0), 1234);
        offsets.insert(TopicPartition::new("orders.v2-eu", 11), 0);
        offsets.insert(TopicPartition::new("a", 3), 99);
        file.write(&offsets).unwrap();
        assert_eq!(file.read().unwrap(), offsets);
        let text = fs::read_to_string(file.path()).unwrap();
        assert_eq!(text, "0\n3\na 3 99\norders.v2-eu 0 1234\norders.v2-eu 11 0\n");
        assert!(!temp_path_for(file.path()).exists());

        offsets.clear();
        file.write(&offsets).unwrap();
        assert!(file.read().unwrap().is_empty());
    }

    #[test]
    fn malformed_checkpoints_are_reported_not_guessed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        let file = OffsetCheckpointFile::new(&path);
        for bad in ["1\n0\n", "0\n2\nt 0 5\n", "0\n1\nt x 5\n", "0\n1\nt 0\n", ""] {
            fs::write(&path, bad).unwrap();
            let error = file.read().unwrap_err();
            assert!(matches!(error, LogError::CorruptCheckpoint { .. }), "{bad:?}: {error}");
            assert_eq!(error.error_code(), insync_types::ErrorCode::KAFKA_STORAGE_ERROR);
        }
        let mut offsets = BTreeMap::new();
        offsets.insert(TopicPartition::new("has space", 0), 1);
        assert!(matches!(file.write(&offsets), Err(LogError::InvalidArgument(_))));
    }
}
