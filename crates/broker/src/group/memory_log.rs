//! An in-memory `GroupLog` for the coordinator's tests: records are kept (bounded) so a
//! test can replay them, and appends can be made to fail or to wait for the test.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use insync_types::ErrorCode;
use tokio::sync::oneshot;

use super::{java_string_hash, AppendWait, GroupLog, GroupRecord};

type Locate = Box<dyn Fn(&str) -> Result<i32, ErrorCode> + Send + Sync>;
type Loaded = Box<dyn Fn(i32) -> Result<i32, ErrorCode> + Send + Sync>;

/// Records kept at most (older ones are dropped: tests never come near).
const MAX_KEPT: usize = 100_000;

pub struct MemoryGroupLog {
    locate: Locate,
    loaded: Loaded,
    /// Appended records, with their partition.
    pub records: Mutex<Vec<(i32, GroupRecord)>>,
    /// When set, every append fails with it (its acknowledgement; nothing is kept).
    pub fail_with: Mutex<Option<ErrorCode>>,
    /// When set, acknowledgements wait until the test sends on (or drops) `held`'s senders.
    pub hold: AtomicBool,
    pub held: Mutex<Vec<oneshot::Sender<()>>>,
}

impl MemoryGroupLog {
    /// `partitions` offsets partitions, all of them loaded here at epoch 0.
    pub fn all_loaded(partitions: i32) -> MemoryGroupLog {
        let count = partitions.max(1);
        MemoryGroupLog::with(
            Box::new(move |group| Ok((java_string_hash(group) & 0x7fff_ffff) % count)),
            Box::new(|_| Ok(0)),
        )
    }

    pub fn with(locate: Locate, loaded: Loaded) -> MemoryGroupLog {
        MemoryGroupLog {
            locate,
            loaded,
            records: Mutex::new(Vec::new()),
            fail_with: Mutex::new(None),
            hold: AtomicBool::new(false),
            held: Mutex::new(Vec::new()),
        }
    }
}

impl GroupLog for MemoryGroupLog {
    fn partition_for(&self, group_id: &str) -> Result<i32, ErrorCode> {
        (self.locate)(group_id)
    }

    fn check_loaded(&self, partition: i32) -> Result<i32, ErrorCode> {
        (self.loaded)(partition)
    }

    fn append(&self, partition: i32, leader_epoch: i32, records: Vec<GroupRecord>) -> Result<AppendWait, ErrorCode> {
        if (self.loaded)(partition)? != leader_epoch {
            return Err(ErrorCode::NOT_COORDINATOR);
        }
        let failure = *lock(&self.fail_with);
        let result = match failure {
            Some(error) => Err(error),
            None => {
                let mut kept = lock(&self.records);
                if kept.len() + records.len() > MAX_KEPT {
                    kept.clear();
                }
                kept.extend(records.into_iter().map(|r| (partition, r)));
                Ok(())
            }
        };
        if !self.hold.load(Ordering::SeqCst) {
            return Ok(Box::pin(std::future::ready(result)));
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.held).push(tx);
        Ok(Box::pin(async move {
            let _ = rx.await;
            result
        }))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
