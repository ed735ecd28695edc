//! `insync-producer perf`: a producer benchmark in the style of Kafka's
//! kafka-producer-perf-test — K producers send N records of B bytes (optionally throttled
//! to R records/s), a progress line every few seconds, and a final line with records/s,
//! MiB/s and latency avg / p50 / p95 / p99 / p99.9 / max from an HdrHistogram. With
//! `--compression-type` the batches are compressed; MiB/s counts the records' bytes before
//! compression, as kafka-producer-perf-test does. Like it, every record carries the same
//! payload, so the records of a batch compress very well.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args as ClapArgs;
use hdrhistogram::Histogram;
use insync_client::producer::Producer;
use insync_client::{Cluster, PartitionChoice};
use insync_types::now_epoch_ms;
use serde_json::json;

use crate::ProducerFlags;

#[derive(Debug, Clone, ClapArgs)]
pub struct PerfArgs {
    #[command(flatten)]
    pub flags: ProducerFlags,
    #[arg(long)]
    pub topic: String,
    /// Records to send in all.
    #[arg(long)]
    pub num_records: u64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records per second across all producers; -1 for as fast as possible.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub throughput: i64,
    /// Concurrent producers, each with its own connections.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    pub report_interval_s: u64,
    /// Final result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Shared counters and the latency histogram (microseconds).
struct Stats {
    histogram: Histogram<u64>,
    acknowledged: u64,
    failed: u64,
    window_count: u64,
    window_latency_us: u64,
    window_max_us: u64,
    first_error: Option<String>,
}

impl Stats {
    fn record(&mut self, latency_us: u64) {
        let _ = self.histogram.record(latency_us.max(1));
        self.acknowledged += 1;
        self.window_count += 1;
        self.window_latency_us += latency_us;
        self.window_max_us = self.window_max_us.max(latency_us);
    }
}

pub async fn run(args: PerfArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.producers >= 1, "--producers must be at least 1");
    let histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let stats = Arc::new(Mutex::new(Stats {
        histogram,
        acknowledged: 0,
        failed: 0,
        window_count: 0,
        window_latency_us: 0,
        window_max_us: 0,
        first_error: None,
    }));
    // Random-looking but cheap payload, as kafka-producer-perf-test uses random bytes.
    let payload = Bytes::from((0..args.record_size).map(|i| b'a' + (i * 7 % 26) as u8).collect::<Vec<u8>>());
    let started = Instant::now();
    let per_producer = args.num_records / u64::from(args.producers);
    let remainder = args.num_records % u64::from(args.producers);
    let mut tasks = Vec::new();
    for p in 0..args.producers {
        let cluster = Cluster::new(&args.flags.bootstrap)?;
        cluster.metadata().await?;
        let share = Share {
            producer: Producer::new(cluster, args.flags.config()),
            topic: args.topic.clone(),
            count: per_producer + u64::from(u64::from(p) < remainder),
            payload: payload.clone(),
            rate: (args.throughput > 0).then(|| args.throughput as f64 / f64::from(args.producers)),
            // --max-in-flight 1 --linger-ms 0 is the one-at-a-time latency mode.
            sync: args.flags.max_in_flight == 1 && args.flags.linger_ms == 0,
        };
        tasks.push(tokio::spawn(produce(share, stats.clone())));
    }
    let interval = Duration::from_secs(args.report_interval_s.max(1));
    let reporter = spawn_reporter(stats.clone(), interval, args.record_size as f64);
    for t in tasks {
        t.await?;
    }
    reporter.abort();
    let elapsed = started.elapsed().as_secs_f64();
    let s = stats.lock().unwrap_or_else(|e| e.into_inner());
    print_summary(&args, &s, elapsed);
    if s.failed > 0 {
        eprintln!("{} records failed; first error: {}", s.failed, s.first_error.as_deref().unwrap_or("?"));
        std::process::exit(1);
    }
    Ok(())
}

/// One producer's part of the benchmark.
struct Share {
    producer: Arc<Producer>,
    topic: String,
    /// Records this producer sends.
    count: u64,
    payload: Bytes,
    /// This producer's records per second; `None` for as fast as possible.
    rate: Option<f64>,
    /// One-at-a-time latency mode: each record waits for the previous one's answer.
    sync: bool,
}

/// Sends one producer's records, recording every answer in `stats`, then closes the producer.
async fn produce(share: Share, stats: Arc<Mutex<Stats>>) {
    let Share { producer, topic, count, payload, rate, sync } = share;
    // Answers are awaited in send order by a collector, so the sender never blocks
    // on an answer and no task is spawned per record.
    let (answers_tx, mut answers) = tokio::sync::mpsc::channel::<(Instant, _)>(1 << 16);
    let collector = {
        let stats = stats.clone();
        tokio::spawn(async move {
            while let Some((sent_at, rx)) = answers.recv().await {
                record_answer(&stats, sent_at, rx.await);
            }
        })
    };
    let begin = Instant::now();
    for i in 0..count {
        if let Some(rate) = rate {
            // Throttle like kafka-producer-perf-test's ThroughputThrottler.
            let due = begin + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let sent_at = Instant::now();
        match producer.send(&topic, PartitionChoice::Auto, None, Some(payload.clone()), now_epoch_ms()).await {
            Ok(rx) if sync => {
                // One-at-a-time latency mode: the next record waits for this one's
                // answer, so the latency is the request's, not the queue's.
                let result = rx.await;
                record_answer(&stats, sent_at, result);
            }
            Ok(rx) => {
                if answers_tx.send((sent_at, rx)).await.is_err() {
                    break;
                }
            }
            Err(f) => {
                let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                s.failed += 1;
                s.first_error.get_or_insert_with(|| f.to_string());
            }
        }
    }
    drop(answers_tx);
    producer.close().await;
    let _ = collector.await;
}

/// Prints a progress line for the answers of each `interval`, until aborted.
fn spawn_reporter(stats: Arc<Mutex<Stats>>, interval: Duration, record_size: f64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = Instant::now();
        loop {
            tokio::time::sleep(interval).await;
            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
            let secs = last.elapsed().as_secs_f64();
            last = Instant::now();
            let rate = s.window_count as f64 / secs;
            let avg_ms =
                if s.window_count > 0 { s.window_latency_us as f64 / s.window_count as f64 / 1000.0 } else { 0.0 };
            eprintln!(
                "{} records sent, {:.1} records/sec ({:.2} MiB/sec), {:.1} ms avg latency, {:.1} ms max latency.",
                s.window_count,
                rate,
                rate * record_size / (1024.0 * 1024.0),
                avg_ms,
                s.window_max_us as f64 / 1000.0
            );
            s.window_count = 0;
            s.window_latency_us = 0;
            s.window_max_us = 0;
        }
    })
}

/// The final line (or JSON object, with --json): throughput and the latency distribution.
fn print_summary(args: &PerfArgs, s: &Stats, elapsed: f64) {
    let h = &s.histogram;
    let rate = s.acknowledged as f64 / elapsed;
    let mib = rate * args.record_size as f64 / (1024.0 * 1024.0);
    let ms = |us: u64| us as f64 / 1000.0;
    if args.json {
        println!(
            "{}",
            json!({"records": s.acknowledged, "failed": s.failed, "records_per_sec": rate, "mib_per_sec": mib,
                   "avg_ms": h.mean() / 1000.0, "p50_ms": ms(h.value_at_quantile(0.5)),
                   "p95_ms": ms(h.value_at_quantile(0.95)), "p99_ms": ms(h.value_at_quantile(0.99)),
                   "p999_ms": ms(h.value_at_quantile(0.999)), "max_ms": ms(h.max()),
                   "acks": args.flags.acks.to_wire(), "record_size": args.record_size, "producers": args.producers,
                   "compression": args.flags.compression_type.name()})
        );
    } else {
        println!(
            "{} records sent, {:.1} records/sec ({:.2} MiB/sec), {:.3} ms avg latency, {:.3} ms p50, {:.3} ms p95, {:.3} ms p99, {:.3} ms p99.9, {:.3} ms max latency.",
            s.acknowledged,
            rate,
            mib,
            h.mean() / 1000.0,
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.95)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max())
        );
    }
}

fn record_answer(
    stats: &Mutex<Stats>,
    sent_at: Instant,
    result: Result<insync_client::producer::RecordResult, tokio::sync::oneshot::error::RecvError>,
) {
    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(Ok(_)) => s.record(sent_at.elapsed().as_micros() as u64),
        Ok(Err(f)) => {
            s.failed += 1;
            s.first_error.get_or_insert_with(|| f.to_string());
        }
        Err(_) => s.failed += 1,
    }
}
