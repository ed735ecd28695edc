//! `insync-producer end-to-end`: end-to-end latency after Kafka's `EndToEndLatency` tool —
//! one record at a time is produced (acks as given, all by default) to one partition and
//! read back by a consumer fetch, and the time from send to read is recorded (p50 / p99 /
//! p99.9 / max from an HdrHistogram): the time from the send until the record has been both
//! acknowledged and read, as in Kafka's tool, which waits for the acknowledgement before it
//! polls. Unlike Kafka's tool, the consumer's fetch for the next offset is sent just before
//! the record (it is usually parked at the leader when the record arrives, as a live
//! consumer's would be), so the figure includes replication, the high watermark's advance
//! and the parked fetch's completion rather than a poll's round trip after the ack. A first
//! record warms up the connections, the producer id and the metadata; it is not counted.
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args as ClapArgs;
use hdrhistogram::Histogram;
use insync_client::producer::Producer;
use insync_client::{Cluster, PartitionChoice};
use insync_log::batch::{iter_batches, visit_records};
use insync_types::{now_epoch_ms, ErrorCode};
use serde_json::json;

use crate::ProducerFlags;

#[derive(Debug, Clone, ClapArgs)]
pub struct EndToEndArgs {
    #[command(flatten)]
    pub flags: ProducerFlags,
    #[arg(long)]
    pub topic: String,
    #[arg(long, default_value_t = 0)]
    pub partition: i32,
    /// Records to send, one at a time.
    #[arg(long, default_value_t = 10_000)]
    pub num_records: u64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Final result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// How long a parked fetch waits at the leader before it is sent again.
const FETCH_MAX_WAIT: Duration = Duration::from_millis(500);
/// How long one record may take end to end before the run fails.
const RECORD_DEADLINE: Duration = Duration::from_secs(30);

pub async fn run(args: EndToEndArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.num_records >= 1, "--num-records must be at least 1");
    let cluster = Cluster::new(&args.flags.bootstrap)?;
    cluster.metadata().await?;
    let mut config = args.flags.config();
    // One record at a time, sent at once: the latency of a record, not of a queue.
    config.linger = Duration::ZERO;
    config.max_in_flight = 1;
    let producer = Producer::new(cluster.clone(), config);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut next = cluster.list_offset(&args.topic, args.partition, -1).await?;
    let mut started = Instant::now();
    // Record 0 warms up (connections, the producer id, metadata) and is not counted.
    for i in 0..=args.num_records {
        // A distinct value per record, so the reader knows it read this one.
        let mut value = format!("e2e-{i}-").into_bytes();
        value.resize(args.record_size.max(value.len()), b'x');
        let value = Bytes::from(value);
        let sent_at = Instant::now();
        let reader = tokio::spawn(read_until(cluster.clone(), args.topic.clone(), args.partition, next, value.clone()));
        let answer = producer
            .send(&args.topic, PartitionChoice::Explicit(args.partition), None, Some(value), now_epoch_ms())
            .await
            .map_err(|f| anyhow::anyhow!("record {i}: {f}"))?
            .await
            .map_err(|_| anyhow::anyhow!("record {i}: the producer stopped"))?
            .map_err(|f| anyhow::anyhow!("record {i}: {f}"))?;
        let read_offset = reader.await??;
        let latency = sent_at.elapsed();
        if args.flags.acks != insync_types::Acks::None {
            anyhow::ensure!(
                read_offset == answer.offset,
                "record {i} was acknowledged at offset {} but read at {read_offset}",
                answer.offset
            );
        }
        if i == 0 {
            started = Instant::now();
        } else {
            let _ = histogram.record((latency.as_micros() as u64).max(1));
        }
        next = read_offset + 1;
    }
    producer.close().await;
    report(&args, &histogram, started.elapsed());
    Ok(())
}

/// Fetches from `offset` on until the record whose value is `value` is read; its offset.
async fn read_until(
    cluster: Arc<Cluster>,
    topic: String,
    partition: i32,
    mut offset: i64,
    value: Bytes,
) -> anyhow::Result<i64> {
    let deadline = Instant::now() + RECORD_DEADLINE;
    while Instant::now() < deadline {
        let response = match cluster.fetch(&topic, partition, offset, FETCH_MAX_WAIT, 1 << 20).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("fetch {topic}-{partition}: {e}");
                let _ = cluster.refresh_metadata().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let code = ErrorCode::from_code(response.error_code);
        if code != ErrorCode::NONE {
            anyhow::ensure!(code.is_retriable(), "fetch {topic}-{partition}: {code}");
            // A leader change: find the new leader rather than asking the old one again.
            let _ = cluster.refresh_metadata().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let mut found = None;
        for batch in iter_batches(&response.records) {
            let (_, bytes) = batch?;
            visit_records(bytes, |record| {
                if record.offset >= offset {
                    offset = record.offset + 1;
                    if found.is_none() && record.value == Some(&value[..]) {
                        found = Some(record.offset);
                    }
                }
            })?;
        }
        if let Some(at) = found {
            return Ok(at);
        }
    }
    anyhow::bail!("the record was not read within {RECORD_DEADLINE:?}")
}

fn report(args: &EndToEndArgs, h: &Histogram<u64>, elapsed: Duration) {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let (p50, p99, p999, max) = (ms(0.50), ms(0.99), ms(0.999), h.max() as f64 / 1000.0);
    let avg = h.mean() / 1000.0;
    if args.json {
        println!(
            "{}",
            json!({"records": h.len(), "record_size": args.record_size, "seconds": elapsed.as_secs_f64(),
                   "avg_ms": avg, "p50_ms": p50, "p99_ms": p99, "p999_ms": p999, "max_ms": max})
        );
    } else {
        println!(
            "{} records of {} B end to end: avg {avg:.3} ms, p50 {p50:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms, max {max:.3} ms",
            h.len(),
            args.record_size
        );
    }
}
