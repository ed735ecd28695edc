//! `insync consume --perf`: a consumer benchmark after Kafka's kafka-consumer-perf-test. One
//! fetch loop per partition runs ahead of the counting (as Kafka's consumer prefetches),
//! each holding at most `PREFETCH` answers, so partitions led by different brokers are read
//! at once; every batch is CRC-checked and its records visited in place (no copy), counting
//! key and value bytes as the Kafka tool does.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use insync_client::Cluster;
use insync_log::batch::{iter_batches, visit_records};
use insync_proto as pb;
use insync_types::ErrorCode;
use serde_json::json;
use tokio::sync::mpsc;

/// Answers a partition's fetch loop may hold before the counter takes them.
const PREFETCH: usize = 2;
/// Bytes one fetch asks for per partition (Kafka's max.partition.fetch.bytes is 1 MiB; the
/// perf tool's users raise it, and larger answers cost fewer round trips).
const FETCH_BYTES: u32 = 8 << 20;

/// What to read and when to stop.
pub struct PerfRun {
    pub topic: String,
    /// Partition → first offset.
    pub starts: BTreeMap<i32, i64>,
    pub max_messages: Option<u64>,
    pub idle_timeout: Option<Duration>,
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
    let (tx, mut rx) = mpsc::channel(PREFETCH * run.starts.len().max(1));
    let mut loops = Vec::new();
    for (&partition, &start) in &run.starts {
        loops.push(tokio::spawn(fetch_loop(cluster.clone(), run.topic.clone(), partition, start, tx.clone())));
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
    rx: &mut mpsc::Receiver<anyhow::Result<(i64, pb::FetchPartitionResponse)>>,
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
        let (from, response) = answer?;
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

/// Fetches one partition from `offset` on, sending each answer with data (and the offset
/// it was fetched from) to the counter; a fetch error is retried after a metadata refresh,
/// an answer error other than a retriable one ends the run.
async fn fetch_loop(
    cluster: Arc<Cluster>,
    topic: String,
    partition: i32,
    mut offset: i64,
    tx: mpsc::Sender<anyhow::Result<(i64, pb::FetchPartitionResponse)>>,
) {
    loop {
        let response = match cluster.fetch(&topic, partition, offset, Duration::from_millis(500), FETCH_BYTES).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("fetch {topic}-{partition}: {e}");
                let _ = cluster.refresh_metadata().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let code = ErrorCode::from_code(response.error_code);
        if code != ErrorCode::NONE {
            if code.is_retriable() {
                let _ = cluster.refresh_metadata().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let error = anyhow::anyhow!(
                "fetch {topic}-{partition} at offset {offset}: {code} (log start {}, log end {})",
                response.log_start_offset,
                response.log_end_offset
            );
            let _ = tx.send(Err(error)).await;
            return;
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
        if offset > from && tx.send(Ok((from, response))).await.is_err() {
            return;
        }
    }
}
