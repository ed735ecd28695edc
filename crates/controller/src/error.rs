//! Error types of the controller library (thiserror): quorum configuration, durable storage
//! and start-up. Request-level refusals are Kafka error codes (`rules::RuleRejection`), not
//! Rust errors.
use std::path::PathBuf;

/// A bad `--controller-quorum` value (Kafka `controller.quorum.voters`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    #[error("the controller quorum is empty: expected id@host:port[,id@host:port...], e.g. 1@127.0.0.1:9191")]
    Empty,
    #[error(
        "invalid voter '{entry}' in the controller quorum: {reason}; expected id@host:port, e.g. 1@127.0.0.1:9191"
    )]
    InvalidVoter { entry: String, reason: String },
    #[error("voter id {id} appears more than once in the controller quorum")]
    DuplicateVoter { id: u64 },
    #[error("this controller's id {node_id} is not one of the quorum voters {voters:?}")]
    NotAVoter { node_id: u64, voters: Vec<u64> },
}

/// Failures of the Raft log / snapshot files under `<data_dir>/raft/`. Fatal for the
/// controller: openraft stops the node on a storage error rather than risk divergence.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt record in {path} at byte {offset}: {reason} (not a torn tail: valid data follows)")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    #[error("cannot decode {path}: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode a record for {path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("storage task failed: {0}")]
    Task(String),
}

impl StorageError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io { path: path.into(), source }
    }
}
