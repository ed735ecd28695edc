//! `insync-producer`: sends records at the acks level you choose and prints, for each one,
//! exactly what the cluster answered: the offset, or Kafka's error name and code and
//! whether the records were appended.
use std::io::BufRead;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use insync_cli::{init_logging, now_epoch_ms, DEFAULT_BOOTSTRAP};
use insync_client::{Cluster, PartitionChoice, ProduceFailure};
use insync_log::batch::BatchBuilder;
use insync_types::Acks;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "insync-producer", version, about = "Produce records to an insync topic with acks=all|1|0")]
struct Args {
    #[arg(long, env = "INSYNC_BOOTSTRAP", default_value = DEFAULT_BOOTSTRAP)]
    bootstrap: String,
    #[arg(long)]
    topic: String,
    /// all (-1), 1 or 0 (Kafka `acks`; default all as in Kafka 3.x).
    #[arg(long, default_value = "all", allow_hyphen_values = true)]
    acks: Acks,
    /// Partition to send to; default: by key (Kafka murmur2) or round robin.
    #[arg(long)]
    partition: Option<i32>,
    /// Record key (also selects the partition when --partition is not given).
    #[arg(long)]
    key: Option<String>,
    /// Kafka request.timeout.ms: how long the leader may wait for the ISR (acks=all).
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u32,
    /// Kafka delivery.timeout.ms: retry window for failures that wrote nothing.
    #[arg(long, default_value_t = 120_000)]
    delivery_timeout_ms: u64,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Values to send; with none, one record per line of stdin.
    values: Vec<String>,
}

fn print_ok(json: bool, partition: i32, offset: i64, acks: Acks) {
    if acks == Acks::None {
        if json {
            println!("{}", json!({"status": "sent", "partition": partition}));
        } else {
            println!("sent partition={partition}");
        }
    } else if json {
        println!("{}", json!({"status": "ok", "partition": partition, "offset": offset}));
    } else {
        println!("ok partition={partition} offset={offset}");
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    let cluster = Cluster::new(&args.bootstrap)?;
    let choice = match args.partition {
        Some(p) => PartitionChoice::Explicit(p),
        None => PartitionChoice::Auto,
    };
    let values: Box<dyn Iterator<Item = std::io::Result<String>>> = if args.values.is_empty() {
        Box::new(std::io::stdin().lock().lines())
    } else {
        Box::new(args.values.clone().into_iter().map(Ok))
    };
    let mut failed = 0u64;
    let mut acks0 = Vec::new();
    for value in values {
        let value = value?;
        let key = args.key.as_deref().map(str::as_bytes);
        let partition = match cluster.choose_partition(&args.topic, choice, key).await {
            Ok(p) => p,
            Err(e) => {
                let code = e.code().unwrap_or(insync_types::ErrorCode::BROKER_NOT_AVAILABLE);
                print_failure(
                    args.json,
                    &ProduceFailure {
                        partition: args.partition.unwrap_or(-1),
                        code,
                        message: e.to_string(),
                        appended: insync_client::Appended::No,
                    },
                );
                failed += 1;
                continue;
            }
        };
        let mut builder = BatchBuilder::new();
        builder.push(key, Some(value.as_bytes()), now_epoch_ms());
        let records: Bytes = builder.build();
        let request_timeout = Duration::from_millis(u64::from(args.timeout_ms));
        let delivery_timeout = Duration::from_millis(args.delivery_timeout_ms);
        if args.acks == Acks::None {
            // acks=0: fire and forget. The request still has to leave this process, so it
            // runs in the background and is awaited only before exit; its answer is ignored.
            let cluster = cluster.clone();
            let topic = args.topic.clone();
            if acks0.len() >= 256 {
                // Bound the sends in flight: wait for the oldest to leave.
                let oldest: tokio::task::JoinHandle<()> = acks0.remove(0);
                let _ = oldest.await;
            }
            acks0.push(tokio::spawn(async move {
                let _ =
                    cluster.produce(&topic, partition, Acks::None, request_timeout, delivery_timeout, records).await;
            }));
            print_ok(args.json, partition, -1, Acks::None);
            continue;
        }
        let send = cluster.produce(&args.topic, partition, args.acks, request_timeout, delivery_timeout, records);
        match send.await {
            Ok(ack) => print_ok(args.json, ack.partition, ack.base_offset, args.acks),
            Err(f) => {
                failed += 1;
                print_failure(args.json, &f);
            }
        }
    }
    for handle in acks0 {
        let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
    }
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
