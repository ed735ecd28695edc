//! `LogError`: everything the log can fail with, and how each maps to the Kafka error code
//! a broker puts in a Produce or Fetch response.

use std::path::PathBuf;

use insync_types::ErrorCode;

use crate::batch::BatchError;

/// Errors of the partition log, its index and its checkpoint files.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed. Kafka turns any `IOException` in the log layer into
    /// `KafkaStorageException` and takes the log directory offline; the broker decides
    /// that here, we only keep the context and the source.
    #[error("I/O error: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A batch failed validation (CRC, layout, records) or uses an unsupported compression.
    #[error("invalid record batch: {0}")]
    CorruptBatch(#[from] BatchError),

    /// A produced batch is larger than `max_batch_bytes` (Kafka `message.max.bytes`,
    /// `RecordTooLargeException`).
    #[error("record batch of {size_bytes} bytes exceeds the maximum of {max_bytes} bytes")]
    MessageTooLarge { size_bytes: usize, max_bytes: usize },

    /// A read asked for an offset outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}] of this log")]
    OffsetOutOfRange { offset: i64, log_start_offset: i64, log_end_offset: i64 },

    /// A follower append did not start at the log end offset, or its batches were not
    /// contiguous (Kafka `UnexpectedAppendOffsetException` / `OffsetsOutOfOrderException`).
    #[error("follower append expected a batch at offset {expected} but got one at {actual}")]
    OffsetMismatch { expected: i64, actual: i64 },

    /// A leader append carried an epoch older than the newest one this log has seen: the
    /// caller is a stale leader and must not write (Kafka `FencedLeaderEpochException`).
    #[error("leader epoch {epoch} is older than the latest epoch {latest_epoch} in this log")]
    FencedLeaderEpoch { epoch: i32, latest_epoch: i32 },

    /// A checkpoint file (leader epochs, offsets) exists but cannot be parsed. Kafka throws
    /// an `IOException` ("Malformed line in checkpoint file") and fails the log directory.
    #[error("corrupt checkpoint file {}: {reason}", path.display())]
    CorruptCheckpoint { path: PathBuf, reason: String },

    /// The caller broke a precondition (negative offset or epoch, topic name with spaces).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl LogError {
    /// Wraps an `io::Error` with what we were doing, so the log line says which file.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> LogError {
        LogError::Io { context: context.into(), source }
    }

    /// The Kafka error code a broker answers with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            LogError::Io { .. } | LogError::CorruptCheckpoint { .. } => ErrorCode::KAFKA_STORAGE_ERROR,
            LogError::CorruptBatch(batch_error) => batch_error.error_code(),
            LogError::MessageTooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
            LogError::OffsetOutOfRange { .. } => ErrorCode::OFFSET_OUT_OF_RANGE,
            LogError::FencedLeaderEpoch { .. } => ErrorCode::FENCED_LEADER_EPOCH,
            // Kafka has no wire code for these: UnexpectedAppendOffsetException and
            // IllegalArgumentException surface as UNKNOWN_SERVER_ERROR.
            LogError::OffsetMismatch { .. } | LogError::InvalidArgument(_) => ErrorCode::UNKNOWN_SERVER_ERROR,
        }
    }
}
