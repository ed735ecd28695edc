//! Partition directories on disk: the `partition.metadata` file naming a replica's topic id,
//! and deletion by rename-then-remove so that a crash mid-delete leaves nothing that could be
//! opened as a live replica (Kafka `LogManager.asyncDelete` and `PartitionMetadataFile`).
//!
//! Layout of the broker's data directory: `{topic}-{partition}/` for a live replica (its
//! segments, indexes, leader-epoch checkpoint, producer snapshots and `partition.metadata`),
//! and `{topic}-{partition}.{32 hex}-delete/` for one being removed. Every `-delete` directory
//! found at start-up is removed; nothing ever opens one.
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use insync_types::TopicPartition;
use tracing::{info, warn};

/// Kafka's name for the file that ties a partition directory to its topic id (KIP-516).
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";
/// Suffix of a directory being deleted (Kafka `UnifiedLog.DeleteDirSuffix`).
pub const DELETE_DIR_SUFFIX: &str = "-delete";
/// The file is two short lines; anything longer is not ours.
const MAX_PARTITION_METADATA_BYTES: u64 = 1024;

/// The topic id in `dir/partition.metadata`: None when the file does not exist (a replica
/// created before topic ids, or a directory not fully created). The file is untrusted: a
/// malformed one is an error, never a panic.
pub fn read_topic_id(dir: &Path) -> io::Result<Option<String>> {
    let file = match fs::File::open(dir.join(PARTITION_METADATA_FILE)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    file.take(MAX_PARTITION_METADATA_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_PARTITION_METADATA_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "partition.metadata is too long"));
    }
    parse_partition_metadata(&text)
        .map(Some)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "partition.metadata has no valid topic_id line"))
}

/// `version: 0` then `topic_id: ID` (Kafka's `PartitionMetadataFile` format, with the id in
/// UUID text form). Returns the id, if the file is well formed.
fn parse_partition_metadata(text: &str) -> Option<String> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "version: 0" {
        return None;
    }
    let id = lines.next()?.trim().strip_prefix("topic_id:")?.trim();
    let valid =
        !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    valid.then(|| id.to_string())
}

/// Writes `dir/partition.metadata` durably (temp file, fsync, rename), so a crash leaves the
/// old content or the new, never a torn file.
pub fn write_topic_id(dir: &Path, topic_id: &str) -> io::Result<()> {
    let tmp = dir.join(format!("{PARTITION_METADATA_FILE}.tmp"));
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(format!("version: 0\ntopic_id: {topic_id}\n").as_bytes())?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(PARTITION_METADATA_FILE))?;
    fs::File::open(dir)?.sync_all()
}

/// Renames a replica's directory to a unique `-delete` name (durably: the parent directory is
/// fsynced), the first step of a deletion. After it nothing can open the old replica, even
/// if the process dies before the removal. Returns the new path.
pub fn rename_for_deletion(dir: &Path, tp: &TopicPartition) -> io::Result<PathBuf> {
    let parent = dir.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let target = parent.join(format!("{}-{}.{unique}{DELETE_DIR_SUFFIX}", tp.topic, tp.partition));
    fs::rename(dir, &target)?;
    fs::File::open(parent)?.sync_all()?;
    Ok(target)
}

/// Removes a renamed directory on a thread of its own (a big log takes a while, and this may
/// run on an async worker), logging the outcome. A failure leaves it for the next start-up.
pub fn remove_in_background(dir: PathBuf) {
    let spawned = std::thread::Builder::new().name("log-delete".into()).spawn(move || remove_now(&dir));
    if let Err(e) = spawned {
        warn!("cannot start a thread to delete a log directory: {e}; it is removed at the next start-up");
    }
}

fn remove_now(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => info!(dir = %dir.display(), "deleted log directory"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => warn!(dir = %dir.display(), "cannot delete log directory: {e}; it is removed at the next start-up"),
    }
}

/// Start-up: removes every `-delete` directory a previous run left (a crash between the
/// rename and the removal). Returns how many were removed.
pub fn remove_leftover_deletions(data_dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(data_dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && name.to_string_lossy().ends_with(DELETE_DIR_SUFFIX) {
            info!(dir = %entry.path().display(), "removing a log directory whose deletion a previous run began");
            remove_now(&entry.path());
            removed += 1;
        }
    }
    removed
}

/// The live partition directories under `data_dir`: `{topic}-{partition}` names whose
/// partition is a non-negative number (topic names may contain '-', so the last one splits).
pub fn partition_dirs(data_dir: &Path) -> Vec<(TopicPartition, PathBuf)> {
    let Ok(entries) = fs::read_dir(data_dir) else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(tp) = parse_partition_dir(&name) {
            found.push((tp, entry.path()));
        }
    }
    found.sort();
    found
}

fn parse_partition_dir(name: &str) -> Option<TopicPartition> {
    if name.ends_with(DELETE_DIR_SUFFIX) {
        return None;
    }
    let (topic, partition) = name.rsplit_once('-')?;
    let partition: i32 = partition.parse().ok().filter(|p| *p >= 0)?;
    (!topic.is_empty() && partition.to_string() == name[topic.len() + 1..])
        .then(|| TopicPartition::new(topic, partition))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch_tests::TempDir;

    fn tempdir() -> TempDir {
        let dir = TempDir::new();
        fs::create_dir_all(&dir.0).unwrap();
        dir
    }

    #[test]
    fn partition_metadata_round_trips_and_rejects_garbage() {
        let dir = tempdir();
        assert_eq!(read_topic_id(dir.0.as_path()).unwrap(), None);
        write_topic_id(dir.0.as_path(), "0b8a44b4-7d55-4f5e-9d0c-3c8a1f2e9a10").unwrap();
        assert_eq!(read_topic_id(dir.0.as_path()).unwrap().as_deref(), Some("0b8a44b4-7d55-4f5e-9d0c-3c8a1f2e9a10"));
        for bad in ["", "version: 1\ntopic_id: x\n", "version: 0\n", "version: 0\ntopic_id: a b\n", "\u{0}\u{1}"] {
            fs::write(dir.0.as_path().join(PARTITION_METADATA_FILE), bad).unwrap();
            assert!(read_topic_id(dir.0.as_path()).is_err(), "{bad:?}");
        }
        fs::write(dir.0.as_path().join(PARTITION_METADATA_FILE), "x".repeat(1 << 20)).unwrap();
        assert!(read_topic_id(dir.0.as_path()).is_err());
    }

    #[test]
    fn partition_dir_names_parse_strictly() {
        assert_eq!(parse_partition_dir("orders-3"), Some(TopicPartition::new("orders", 3)));
        assert_eq!(parse_partition_dir("my-topic-0"), Some(TopicPartition::new("my-topic", 0)));
        // Topic names may end in '-': "orders--1" is partition 1 of "orders-", never -1.
        assert_eq!(parse_partition_dir("orders--1"), Some(TopicPartition::new("orders-", 1)));
        for name in ["orders", "orders-", "-3", "orders-03", "orders-x", "orders-0.abc-delete"] {
            assert_eq!(parse_partition_dir(name), None, "{name}");
        }
    }

    #[test]
    fn a_renamed_directory_is_gone_after_the_next_start() {
        let data = tempdir();
        let tp = TopicPartition::new("t", 0);
        let live = data.0.as_path().join("t-0");
        fs::create_dir(&live).unwrap();
        fs::write(live.join("00000000000000000000.log"), b"records").unwrap();
        let renamed = rename_for_deletion(&live, &tp).unwrap();
        assert!(!live.exists());
        assert!(renamed.file_name().unwrap().to_string_lossy().ends_with(DELETE_DIR_SUFFIX));
        assert!(partition_dirs(data.0.as_path()).is_empty(), "a -delete directory is never a live replica");
        // The process died here; the next start-up removes it.
        assert_eq!(remove_leftover_deletions(data.0.as_path()), 1);
        assert_eq!(fs::read_dir(data.0.as_path()).unwrap().count(), 0);
    }
}
