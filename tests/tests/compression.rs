//! Compressed batches against real processes: `insync-producer --compression-type` with each
//! of Kafka's codecs, read back with `insync consume`; every replica holds byte-identical
//! segments in which each batch keeps the producer's codec (`compression.type=producer`), and
//! a follower that becomes leader serves them. A topic with `compression.type=zstd` stores
//! whatever the producer sent as zstd, on every replica.
use std::path::Path;
use std::time::Duration;

use insync_log::batch::{decode_records, iter_batches};
use insync_log::Compression;
use insync_tests::{text, wait_for, ClusterOptions, TestCluster};
use serde_json::Value;

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
const RECORDS_PER_CODEC: usize = 300;

/// The values one producer run sends: compressible, and different per codec.
fn values(codec: &str) -> Vec<String> {
    (0..RECORDS_PER_CODEC).map(|i| format!("{codec}-{i:04} {}", "compressible text ".repeat(4))).collect()
}

/// Sends `values` in one `insync-producer` run (several records per batch); every answer
/// must be an offset.
fn produce(cluster: &TestCluster, topic: &str, codec: &str, values: &[String]) -> anyhow::Result<()> {
    let stdin = values.join("\n") + "\n";
    let args = ["--topic", topic, "--acks", "all", "--linger-ms", "20", "--compression-type", codec];
    let out = cluster.producer(&args, Some(&stdin));
    let answers = text(&out.stdout);
    anyhow::ensure!(out.status.success(), "{codec}: producer failed: {answers}{}", text(&out.stderr));
    let ok = answers.lines().filter(|l| l.starts_with("ok partition=0 offset=")).count();
    anyhow::ensure!(ok == values.len(), "{codec}: {ok} of {} acknowledged: {answers}", values.len());
    Ok(())
}

/// Every value `insync consume` reads from the beginning, in order.
fn consumed(cluster: &TestCluster, topic: &str, expected: usize) -> Vec<String> {
    cluster
        .consume_all(topic, expected, 3_000)
        .iter()
        .map(|record: &Value| record["value"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until every replica's log end offset is `end`.
fn wait_replicated(cluster: &TestCluster, topic: &str, end: i64) -> anyhow::Result<()> {
    wait_for(&format!("every replica of {topic}-0 at {end}"), Duration::from_secs(20), || {
        let p = cluster.partition(topic, 0).ok()?;
        let ends: Vec<Option<i64>> = p["log_end_offsets"].as_object()?.values().map(|v| v.as_i64()).collect();
        (ends.len() == 3 && ends.iter().all(|e| *e == Some(end)) && p["high_watermark"].as_i64() == Some(end))
            .then_some(())
    })
}

/// The bytes of every segment of `topic`-0 on one broker, concatenated in offset order.
fn segments(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    let mut bytes = Vec::new();
    for file in files {
        bytes.extend(std::fs::read(file)?);
    }
    Ok(bytes)
}

/// (codec, values) of each batch in a replica's segments.
fn stored_batches(bytes: &[u8]) -> anyhow::Result<Vec<(Compression, Vec<String>)>> {
    let mut out = Vec::new();
    for item in iter_batches(bytes) {
        let (header, batch) = item?;
        let values = decode_records(batch)?
            .into_iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
            .collect();
        out.push((header.codec()?, values));
    }
    Ok(out)
}

/// Checks that the three replicas hold byte-identical segments and returns their batches.
fn identical_replicas(cluster: &TestCluster, topic: &str) -> anyhow::Result<Vec<(Compression, Vec<String>)>> {
    let leader_bytes = segments(&cluster.broker_data_dir(1).join(format!("{topic}-0")))?;
    for broker in 2..=3 {
        let bytes = segments(&cluster.broker_data_dir(broker).join(format!("{topic}-0")))?;
        anyhow::ensure!(bytes == leader_bytes, "broker {broker}'s segments differ from broker 1's");
    }
    stored_batches(&leader_bytes)
}

#[test]
fn every_codec_is_stored_as_sent_replicated_and_consumed() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic("codecs", 1, 3, Some(2))?;
    let mut sent = Vec::new();
    for codec in CODECS {
        let values = values(codec);
        produce(&cluster, "codecs", codec, &values)?;
        sent.extend(values);
    }
    assert_eq!(consumed(&cluster, "codecs", sent.len()), sent, "insync consume reads every codec");
    // `consume --perf` (kafka-consumer-perf-test) counts the same records and their bytes.
    let max = sent.len().to_string();
    let out = cluster.insync(&["consume", "codecs", "--from-beginning", "--max-messages", &max, "--perf", "--json"]);
    let summary: Value = serde_json::from_str(text(&out.stdout).trim())
        .map_err(|e| anyhow::anyhow!("consume --perf said {:?}: {e}", text(&out.stdout)))?;
    assert_eq!(summary["records"], sent.len(), "{summary}");
    let value_bytes: usize = sent.iter().map(String::len).sum();
    assert_eq!(summary["bytes"], value_bytes, "key-less records: the value bytes: {summary}");
    assert!(summary["mib_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{summary}");
    // The end-to-end latency tool (Kafka's EndToEndLatency) reads back each record it sends.
    cluster.create_topic("e2e", 1, 3, Some(2))?;
    let out = cluster.producer(&["end-to-end", "--topic", "e2e", "--num-records", "20", "--json"], None);
    let e2e: Value = serde_json::from_str(text(&out.stdout).trim())
        .map_err(|e| anyhow::anyhow!("end-to-end said {:?} {:?}: {e}", text(&out.stdout), text(&out.stderr)))?;
    assert_eq!(e2e["records"], 20, "{e2e}");
    assert!(e2e["p50_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{e2e}");
    let read = cluster.consume_all("e2e", 21, 1_000);
    assert_eq!(read.len(), 21, "the warm-up record and 20 more, each read once: {read:?}");

    wait_replicated(&cluster, "codecs", sent.len() as i64)?;
    let batches = identical_replicas(&cluster, "codecs")?;
    // Each producer run's batches carry its codec, in order: the leader stored them as sent.
    for (codec, values) in &batches {
        let prefix = format!("{}-", codec.name());
        assert!(values.iter().all(|v| v.starts_with(&prefix)), "a {codec} batch holds {:?}", values.first());
    }
    let mut codecs: Vec<Compression> = batches.iter().map(|(c, _)| *c).collect();
    codecs.dedup();
    assert_eq!(codecs, Compression::ALL, "one run of batches per codec");
    assert!(batches.len() < sent.len(), "several records per batch");

    // A former follower, now leader, serves the same records.
    let leader = cluster.leader_of("codecs", 0)?;
    cluster.kill_broker(leader);
    wait_for("a new leader", Duration::from_secs(20), || {
        let now = cluster.leader_of("codecs", 0).ok()?;
        (now != leader).then_some(())
    })?;
    assert_eq!(consumed(&cluster, "codecs", sent.len()), sent, "read from a follower's copy");
    Ok(())
}

#[test]
fn a_topic_compression_type_re_encodes_on_every_replica() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::default())?;
    let out = cluster.insync(&[
        "topic",
        "create",
        "zstd-topic",
        "--replication-factor",
        "3",
        "--config",
        "compression.type=zstd",
    ]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(cluster.partition("zstd-topic", 0)?["configs"]["compression.type"], "zstd");
    let mut sent = Vec::new();
    for codec in ["gzip", "none", "lz4"] {
        let values = values(codec);
        produce(&cluster, "zstd-topic", codec, &values)?;
        sent.extend(values);
    }
    assert_eq!(consumed(&cluster, "zstd-topic", sent.len()), sent);
    wait_replicated(&cluster, "zstd-topic", sent.len() as i64)?;
    let batches = identical_replicas(&cluster, "zstd-topic")?;
    assert!(batches.iter().all(|(codec, _)| *codec == Compression::Zstd), "every batch stored as zstd");
    let stored: Vec<String> = batches.into_iter().flat_map(|(_, values)| values).collect();
    assert_eq!(stored, sent);

    // A value outside the catalogue is refused with Kafka's INVALID_CONFIG.
    let out = cluster.insync(&["topic", "alter", "zstd-topic", "--config", "compression.type=brotli"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("compression.type"), "{}", text(&out.stderr));
    Ok(())
}
