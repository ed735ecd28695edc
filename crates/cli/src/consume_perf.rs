//! `insync consume --perf`: a consumer benchmark after Kafka's kafka-consumer-perf-test. One
//! fetch loop per partition runs ahead of the counting (as Kafka's consumer prefetches), so
//! partitions led by different brokers are read at once; answers waiting to be counted hold
//! at most `QUEUED_BYTES` between them. Every batch is CRC-checked and its records visited in
//! place (no copy), counting key and value bytes as the Kafka tool does.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use insync_client::Cluster;
use insync_log::batch::{iter_batches, visit_records};
use insync_proto as pb;
use insync_types::ErrorCode;

use crate::positions::reset_position;
use serde_json::json;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Record bytes of the answers fetched but not yet counted, all partitions together.
const QUEUED_BYTES: usize = 64 << 20;
/// Bytes one fetch asks for per partition, at most (Kafka's max.partition.fetch.bytes is
/// 1 MiB; the perf tool's users raise it, and larger answers cost fewer round trips), shrunk
/// with many partitions so that the fetches in flight stay within `QUEUED_BYTES` too.
const FETCH_BYTES: usize = 8 << 20;

/// One answer with data: the offset it was fetched from, and its share of `QUEUED_BYTES`.
type Answer = (i64, pb::FetchPartitionResponse, OwnedSemaphorePermit);

/// What to read and when to stop.
pub struct PerfRun {
    pub topic: String,
    /// Partition → first offset.
    pub starts: BTreeMap<i32, i64>,
    pub max_messages: Option<u64>,
    pub idle_timeout: Option<Duration>,
    /// Kafka auto.offset.reset on OFFSET_OUT_OF_RANGE: earliest, latest or none (fail).
    pub auto_offset_reset: String,
    pub json: bool,
}

/// What was counted (kafka-consumer-perf-test's data.consumed.in.MB and data.consumed.in.nMsg).
struct PerfCount {
    started: Instant,
    last_record: Instant,
    records: u64,
    bytes: u64,
}

impl PerfCount {
    fn report(&self, json: bool) {
        let seconds = self.last_record.duration_since(self.started).as_secs_f64().max(1e-9);
        let mib = self.bytes as f64 / (1024.0 * 1024.0);
        let (mib_per_sec, records_per_sec) = (mib / seconds, self.records as f64 / seconds);
        if json {
            println!(
                "{}",
                json!({"records": self.records, "bytes": self.bytes, "seconds": seconds,
                       "mib_per_sec": mib_per_sec, "records_per_sec": records_per_sec})
            );
        } else {
            println!(
                "consumed {} records, {mib:.1} MiB in {seconds:.3} s: {mib_per_sec:.1} MiB/s, {records_per_sec:.0} records/s",
                self.records
            );
        }
    }
}

pub async fn run(cluster: Arc<Cluster>, run: PerfRun) -> anyhow::Result<()> {
    let partitions = run.starts.len().max(1);
    let (tx, mut rx) = mpsc::channel(partitions * 2);
    let queued = Arc::new(Semaphore::new(QUEUED_BYTES));
    let fetch_bytes = (QUEUED_BYTES / partitions).clamp(1 << 20, FETCH_BYTES);
    let mut loops = Vec::new();
    for (&partition, &start) in &run.starts {
        let reader = Reader {
            cluster: cluster.clone(),
            topic: run.topic.clone(),
            partition,
            fetch_bytes,
            reset: run.auto_offset_reset.clone(),
            queued: queued.clone(),
        };
        loops.push(tokio::spawn(reader.fetch_loop(start, tx.clone())));
    }
    drop(tx);
    let mut count = PerfCount { started: Instant::now(), last_record: Instant::now(), records: 0, bytes: 0 };
    let result = count_until_done(&run, &mut rx, &mut count).await;
    for l in loops {
        l.abort();
    }
    result?;
    count.report(run.json);
    Ok(())
}

/// Counts the records of each answer until `max_messages` or the idle timeout.
async fn count_until_done(
    run: &PerfRun,
    rx: &mut mpsc::Receiver<anyhow::Result<Answer>>,
    count: &mut PerfCount,
) -> anyhow::Result<()> {
    let limit = run.max_messages.unwrap_or(u64::MAX);
    loop {
        let next = match run.idle_timeout {
            Some(idle) => match tokio::time::timeout_at((count.last_record + idle).into(), rx.recv()).await {
                Ok(next) => next,
                Err(_) => return Ok(()),
            },
            None => rx.recv().await,
        };
        let Some(answer) = next else { return Ok(()) };
        let (from, response, _queued) = answer?;
        for batch in iter_batches(&response.records) {
            let (_, bytes) = batch?;
            visit_records(bytes, |record| {
                if record.offset >= from && count.records < limit {
                    count.records += 1;
                    count.bytes +=
                        record.key.map_or(0, |k| k.len() as u64) + record.value.map_or(0, |v| v.len() as u64);
                }
            })?;
        }
        if !response.records.is_empty() && count.records > 0 {
            count.last_record = Instant::now();
        }
        if count.records >= limit {
            return Ok(());
        }
    }
}

/// One partition's fetch loop and what it needs.
struct Reader {
    cluster: Arc<Cluster>,
    topic: String,
    partition: i32,
    fetch_bytes: usize,
    reset: String,
    queued: Arc<Semaphore>,
}

impl Reader {
    /// Fetches from `offset` on, sending each answer with data (and the offset it was
    /// fetched from) to the counter once `QUEUED_BYTES` has room for it. A transport error or
    /// a retriable answer is retried after a metadata refresh; OFFSET_OUT_OF_RANGE follows
    /// auto.offset.reset (`positions::reset_position`); any other error ends the run.
    async fn fetch_loop(self, mut offset: i64, tx: mpsc::Sender<anyhow::Result<Answer>>) {
        let (topic, partition) = (&self.topic, self.partition);
        let max_bytes = u32::try_from(self.fetch_bytes).unwrap_or(u32::MAX);
        loop {
            let response =
                match self.cluster.fetch(topic, partition, offset, Duration::from_millis(500), max_bytes).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!("fetch {topic}-{partition}: {e}");
                        self.pause().await;
                        continue;
                    }
                };
            match ErrorCode::from_code(response.error_code) {
                ErrorCode::NONE => {}
                ErrorCode::OFFSET_OUT_OF_RANGE => {
                    match reset_position(&self.cluster, topic, partition, offset, &response, &self.reset).await {
                        Ok(to) => offset = to,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                    continue;
                }
                code if code.is_retriable() => {
                    self.pause().await;
                    continue;
                }
                code => {
                    let error = anyhow::anyhow!(
                        "fetch {topic}-{partition} at offset {offset}: {code} (log start {}, log end {})",
                        response.log_start_offset,
                        response.log_end_offset
                    );
                    let _ = tx.send(Err(error)).await;
                    return;
                }
            }
            let from = offset;
            for batch in iter_batches(&response.records) {
                match batch {
                    Ok((header, _)) => offset = offset.max(header.next_offset()),
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
            if offset == from {
                continue;
            }
            // At most the whole budget: one answer larger than it still goes through, alone.
            let bytes = u32::try_from(response.records.len().clamp(1, QUEUED_BYTES)).unwrap_or(u32::MAX);
            let Ok(permit) = self.queued.clone().acquire_many_owned(bytes).await else { return };
            if tx.send(Ok((from, response, permit))).await.is_err() {
                return;
            }
        }
    }

    async fn pause(&self) {
        let _ = self.cluster.refresh_metadata().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
