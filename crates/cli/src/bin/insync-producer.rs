//! `insync-producer`: sends records at the acks level you choose and prints, for each one,
//! exactly what the cluster answered: the offset, or Kafka's error name and code and
//! whether the records were appended. `insync-producer perf` is the throughput/latency
//! benchmark in the style of kafka-producer-perf-test.
use std::collections::VecDeque;

use bytes::Bytes;
use clap::{Args as ClapArgs, Parser, Subcommand};
use insync_cli::{init_logging, perf, ProducerFlags};
use insync_client::producer::{Producer, RecordResult};
use insync_client::{Cluster, PartitionChoice, ProduceFailure};
use insync_types::{now_epoch_ms, Acks};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Parser)]
#[command(
    name = "insync-producer",
    version,
    about = "Produce records to an insync topic with acks=all|1|0",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    send: SendArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Throughput and latency benchmark (kafka-producer-perf-test style).
    Perf(perf::PerfArgs),
    /// End-to-end latency, one record at a time: produce, then read it back (Kafka's
    /// EndToEndLatency tool).
    EndToEnd(insync_cli::e2e::EndToEndArgs),
}

#[derive(Debug, ClapArgs)]
struct SendArgs {
    #[command(flatten)]
    flags: ProducerFlags,
    #[arg(long, required = true)]
    topic: Option<String>,
    /// Partition to send to; default: by key (Kafka murmur2) or round robin.
    #[arg(long)]
    partition: Option<i32>,
    /// Record key (also selects the partition when --partition is not given).
    #[arg(long)]
    key: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Values to send; with none, one record per line of stdin.
    values: Vec<String>,
}

fn print_result(json: bool, acks: Acks, result: &RecordResult) -> bool {
    match result {
        Ok(ack) if acks == Acks::None => {
            if json {
                println!("{}", json!({"status": "sent", "partition": ack.partition}));
            } else {
                println!("sent partition={}", ack.partition);
            }
            true
        }
        Ok(ack) => {
            if json {
                println!("{}", json!({"status": "ok", "partition": ack.partition, "offset": ack.offset}));
            } else {
                println!("ok partition={} offset={}", ack.partition, ack.offset);
            }
            true
        }
        Err(f) => {
            print_failure(json, f);
            false
        }
    }
}

fn print_failure(json: bool, f: &ProduceFailure) {
    if json {
        println!(
            "{}",
            json!({"status": "error", "partition": f.partition, "error": f.code.name(), "code": f.code.code(),
                   "appended": f.appended.as_str(), "message": f.message})
        );
    } else {
        println!(
            "error {} ({}) partition={} appended={}: {}",
            f.code.name(),
            f.code.code(),
            f.partition,
            f.appended.as_str(),
            f.message
        );
    }
}

/// An answer still to come, or one known at once (e.g. unknown topic).
enum Outstanding {
    Pending(oneshot::Receiver<RecordResult>),
    Ready(RecordResult),
}

fn stopped() -> ProduceFailure {
    ProduceFailure {
        partition: -1,
        code: insync_types::ErrorCode::UNKNOWN_SERVER_ERROR,
        message: "producer stopped before answering".into(),
        appended: insync_client::Appended::Unknown,
    }
}

fn main() -> anyhow::Result<()> {
    init_logging();
    let cli = Cli::parse();
    let worker_threads = match &cli.command {
        Some(Command::Perf(args)) => args.flags.worker_threads,
        Some(Command::EndToEnd(args)) => args.flags.worker_threads,
        None => cli.send.flags.worker_threads,
    };
    insync_cli::runtime(worker_threads)?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Perf(args)) => return perf::run(args).await,
        Some(Command::EndToEnd(args)) => return insync_cli::e2e::run(args).await,
        None => {}
    }
    let args = cli.send;
    let topic = args.topic.clone().unwrap_or_default();
    let cluster = Cluster::new(&args.flags.bootstrap)?;
    let producer = Producer::new(cluster, args.flags.config());
    let choice = match args.partition {
        Some(p) => PartitionChoice::Explicit(p),
        None => PartitionChoice::Auto,
    };

    // Values come from the arguments or, line by line, from stdin (read on its own thread
    // so answers are printed while input keeps coming).
    let (lines_tx, mut lines) = mpsc::channel::<String>(1024);
    if args.values.is_empty() {
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if lines_tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
    } else {
        let values = args.values.clone();
        tokio::spawn(async move {
            for v in values {
                if lines_tx.send(v).await.is_err() {
                    break;
                }
            }
        });
    }

    // Answers are printed in send order, each as soon as it and all before it are known.
    let mut outstanding: VecDeque<Outstanding> = VecDeque::new();
    let mut failed = 0u64;
    let key = args.key.clone().map(Bytes::from);
    let mut input_open = true;
    loop {
        if !input_open && outstanding.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            result = front_result(&mut outstanding), if !outstanding.is_empty() => {
                outstanding.pop_front();
                if !print_result(args.json, args.flags.acks, &result) {
                    failed += 1;
                }
            }
            line = lines.recv(), if input_open && outstanding.len() < 100_000 => match line {
                Some(value) => {
                    let sent = producer
                        .send(&topic, choice, key.clone(), Some(Bytes::from(value)), now_epoch_ms())
                        .await;
                    outstanding.push_back(match sent {
                        Ok(rx) => Outstanding::Pending(rx),
                        Err(f) => Outstanding::Ready(Err(f)),
                    });
                }
                None => input_open = false,
            },
        }
    }
    producer.close().await;
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Resolves the front answer in place: the receiver stays queued until it answers, so
/// nothing is lost when the select picks the other branch first.
async fn front_result(outstanding: &mut VecDeque<Outstanding>) -> RecordResult {
    match outstanding.front_mut() {
        Some(Outstanding::Pending(rx)) => rx.await.unwrap_or_else(|_| Err(stopped())),
        Some(Outstanding::Ready(r)) => r.clone(),
        None => std::future::pending().await,
    }
}
