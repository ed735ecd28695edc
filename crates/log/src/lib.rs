//! insync-log: the on-disk log of one partition replica — Kafka RecordBatch v2 codec
//! (`batch`), segment files with a sparse offset index (`segment`, `index`), crash recovery
//! and the partition log itself (`partition_log`), the leader-epoch cache (`epoch_cache`) and the
//! per-broker offset checkpoint file (`checkpoint`), and the four Kafka codecs a batch's
//! records may be compressed with (`compression`).
//!
//! Plain `std::fs` with positional I/O (`FileExt::read_at`/`write_at`), no tokio and no
//! mmap: a truncated mmapped file can SIGBUS, and Kafka itself reads segments with
//! `FileChannel` positional reads. The broker crate wraps a [`PartitionLog`] in a lock; it
//! opens, truncates and searches logs from blocking tasks and appends and reads on the async
//! workers. The replication core never touches files.
//!
//! Fuzzing entry point: [`batch::fuzz_batches`] takes arbitrary bytes and exercises every
//! decoder in this crate (it must never panic).

pub mod batch;
pub mod checkpoint;
pub mod compression;
pub mod epoch_cache;
mod error;
pub mod index;
pub mod partition_log;
pub mod segment;
mod varint;

pub use batch::{
    decode_records, iter_batches, parse_header, recompress_batch, stamp_batch, validate_batch, validate_batch_bounded,
    visit_records, BatchBuilder, BatchError, BatchHeader, BatchIter, Record, RecordView, BATCH_HEADER_BYTES,
    DEFAULT_MAX_DECOMPRESSED_BYTES, LOG_OVERHEAD,
};
pub use checkpoint::OffsetCheckpointFile;
pub use compression::Compression;
pub use epoch_cache::{EpochEntry, LeaderEpochCache};
pub use error::LogError;
pub use partition_log::{AppendInfo, LogConfig, PartitionLog, RetentionInfo, RetentionReason, TruncateInfo};
