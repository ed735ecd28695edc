//! `insync cluster watch`: a live view of brokers and partitions and a failover timeline.
//! Three ways to run, by where the output goes:
//! - `--once`: one snapshot as aligned tables (or JSON lines), for scripts;
//! - stdout not a terminal: timeline events, one line each, flushed as they happen (how
//!   scripts and tests follow a failover);
//! - a terminal: the ratatui view (`tui.rs`).
//!
//! Layout: `collect.rs` does the I/O, `snapshot.rs` is the joined view, `timeline.rs` the
//! pure event detector, `highlight.rs` the pure changed-cell tracker.
pub mod collect;
pub mod highlight;
pub mod snapshot;
pub mod timeline;
mod tui;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use insync_client::Cluster;
use insync_types::ErrorCode;

use collect::Collector;
use timeline::Timeline;

#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub bootstrap: String,
    pub once: bool,
    pub interval: Duration,
    pub topic: Option<String>,
    pub json: bool,
}

/// Rounds that fail in a row before the non-interactive stream gives up (the TUI keeps
/// trying and shows the error instead: someone is looking at it).
const STREAM_MAX_FAILED_ROUNDS: u32 = 120;

pub async fn run(options: WatchOptions) -> anyhow::Result<()> {
    let cluster = Cluster::new(&options.bootstrap)?;
    let mut collector = Collector::new(cluster, options.topic.clone());
    // A refresh faster than a round trip only queues work; slower than a second misses steps.
    let interval = options.interval.clamp(Duration::from_millis(50), Duration::from_secs(10));
    if options.once {
        return once(&mut collector, &options).await;
    }
    if std::io::stdout().is_terminal() {
        return tui::run(collector, interval).await;
    }
    stream(&mut collector, &options, interval).await
}

async fn once(collector: &mut Collector, options: &WatchOptions) -> anyhow::Result<()> {
    let snapshot = collector.collect().await?;
    if let Some(topic) = &options.topic {
        anyhow::ensure!(
            !snapshot.partitions.is_empty(),
            "{}: unknown topic '{topic}'",
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        );
    }
    let mut out = std::io::stdout().lock();
    if options.json {
        for line in snapshot.json_lines() {
            writeln!(out, "{line}")?;
        }
    } else {
        write!(out, "{}", snapshot.render_plain())?;
    }
    out.flush()?;
    Ok(())
}

async fn stream(collector: &mut Collector, options: &WatchOptions, interval: Duration) -> anyhow::Result<()> {
    let mut timeline = Timeline::new();
    let mut failed_rounds = 0u32;
    let mut announced = false;
    loop {
        let started = Instant::now();
        let round = tokio::select! {
            round = collector.collect() => round,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match round {
            Ok(snapshot) => {
                failed_rounds = 0;
                if !announced {
                    // On stderr: stdout carries only events, so scripts can parse every line.
                    eprintln!(
                        "watching {} broker(s), {} partition(s); {}",
                        snapshot.brokers.len(),
                        snapshot.partitions.len(),
                        snapshot.header()
                    );
                    announced = true;
                }
                let events = timeline.observe(&snapshot);
                let mut out = std::io::stdout().lock();
                for event in events {
                    if options.json {
                        writeln!(out, "{}", event.json())?;
                    } else {
                        writeln!(out, "{}", event.line())?;
                    }
                }
                out.flush()?;
            }
            Err(e) => {
                failed_rounds += 1;
                tracing::warn!("watch round failed ({failed_rounds} in a row): {e:#}");
                anyhow::ensure!(
                    failed_rounds < STREAM_MAX_FAILED_ROUNDS,
                    "no metadata for {failed_rounds} rounds: {e:#}"
                );
            }
        }
        let pause = interval.saturating_sub(started.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
