//! Retention against real processes: whole segments deleted by retention.bytes and
//! retention.ms (checked every log.retention.check.interval.ms, here 300 ms), DeleteRecords
//! moving the log start offset, followers following the leader's start offset, a follower
//! that was down restarting its log at the leader's start, the start offset surviving a
//! restart, and consumers below it answered OFFSET_OUT_OF_RANGE and reset by
//! auto.offset.reset.
use std::time::Duration;

use insync_tests::{text, wait_for, ClusterOptions, TestCluster};
use serde_json::Value;

fn options() -> ClusterOptions {
    let broker_args = vec![("--log-retention-check-interval-ms".to_string(), "300".to_string())];
    ClusterOptions { broker_args, ..Default::default() }
}

/// Creates `topic` (1 partition, RF 3, min ISR 2) with 4 KiB segments and `configs`.
fn create(cluster: &TestCluster, topic: &str, configs: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["topic", "create", topic, "--replication-factor", "3", "--min-insync-replicas", "2"];
    args.extend(["--config", "segment.bytes=4096"]);
    for config in configs {
        args.extend(["--config", config]);
    }
    let out = cluster.insync(&args);
    anyhow::ensure!(out.status.success(), "create: {}", text(&out.stderr));
    Ok(())
}

/// Produces `n` ~900-byte records acks=all in small batches (so segments roll between them);
/// returns how many were acknowledged.
fn produce(cluster: &TestCluster, topic: &str, prefix: &str, n: usize) -> usize {
    let input: String = (0..n).map(|i| format!("{prefix}-{i:04}-{}\n", "z".repeat(900))).collect();
    let args = ["--topic", topic, "--acks", "all", "--batch-size", "2048", "--linger-ms", "0"];
    let out = cluster.producer(&args, Some(&input));
    text(&out.stdout).lines().filter(|l| l.starts_with("ok ")).count()
}

/// Every replica's log start offset, from `describe` (None while one does not report).
fn log_starts(cluster: &TestCluster, topic: &str) -> Option<Vec<i64>> {
    let p = cluster.partition(topic, 0).ok()?;
    p["log_start_offsets"].as_object()?.values().map(Value::as_i64).collect()
}

fn log_ends(cluster: &TestCluster, topic: &str) -> Option<Vec<i64>> {
    let p = cluster.partition(topic, 0).ok()?;
    p["log_end_offsets"].as_object()?.values().map(Value::as_i64).collect()
}

/// Waits until all three replicas report a log start offset satisfying `ok`.
fn wait_starts(cluster: &TestCluster, topic: &str, what: &str, ok: impl Fn(i64) -> bool) -> anyhow::Result<Vec<i64>> {
    wait_for(what, Duration::from_secs(20), || {
        log_starts(cluster, topic).filter(|s| s.len() == 3 && s.iter().all(|o| ok(*o)))
    })
}

/// The offsets a consumer reads from the beginning.
fn consumed_offsets(cluster: &TestCluster, topic: &str, max: usize) -> Vec<i64> {
    cluster.consume_all(topic, max, 2_000).iter().filter_map(|r| r["offset"].as_i64()).collect()
}

/// Bytes of `.log` files in `topic-0` on `broker`.
fn bytes_on_disk(cluster: &TestCluster, broker: usize, topic: &str) -> u64 {
    let dir = cluster.broker_data_dir(broker).join(format!("{topic}-0"));
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn retention_by_bytes_then_by_time_deletes_segments_on_every_replica() -> anyhow::Result<()> {
    let cluster = TestCluster::start(options())?;
    create(&cluster, "rb", &["retention.bytes=12000"])?;
    assert_eq!(produce(&cluster, "rb", "v", 60), 60);
    // ~55 KB written; every replica keeps at most retention.bytes plus one segment.
    let starts = wait_starts(&cluster, "rb", "retention.bytes applied on every replica", |o| o > 0)?;
    for broker in 1..=3 {
        wait_for(&format!("broker {broker} within retention.bytes"), Duration::from_secs(10), || {
            (bytes_on_disk(&cluster, broker, "rb") <= 12_000 + 4_096).then_some(())
        })?;
    }
    let offsets = consumed_offsets(&cluster, "rb", 60);
    assert!(offsets.first().is_some_and(|first| *first > 0), "the oldest records are gone: {offsets:?}");
    assert_eq!(offsets.last(), Some(&59), "the newest records stay");

    // A consumer below the log start: out of range, reset to the earliest offset.
    let out = cluster.insync(&[
        "consume",
        "rb",
        "--offset",
        "0",
        "--auto-offset-reset",
        "earliest",
        "--max-messages",
        "1",
        "--idle-timeout-ms",
        "3000",
        "--json",
    ]);
    assert!(text(&out.stderr).contains("OFFSET_OUT_OF_RANGE"), "{}", text(&out.stderr));
    let first: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap_or("{}"))?;
    assert!(first["offset"].as_i64() >= starts.iter().min().copied(), "reset to the log start: {first}");
    let none =
        cluster.insync(&["consume", "rb", "--offset", "0", "--auto-offset-reset", "none", "--idle-timeout-ms", "3000"]);
    assert!(
        !none.status.success() && text(&none.stderr).contains("OFFSET_OUT_OF_RANGE"),
        "auto.offset.reset=none fails"
    );

    // retention.ms set live: everything (the active segment too, rolled first) goes; offsets go on.
    let out =
        cluster.insync(&["topic", "alter", "rb", "--config", "retention.ms=500", "--delete-config", "retention.bytes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_starts(&cluster, "rb", "every record older than retention.ms deleted", |o| o == 60)?;
    assert!(consumed_offsets(&cluster, "rb", 1).is_empty(), "nothing left to read");
    let out = cluster.producer(&["--topic", "rb", "--acks", "all", "after"], None);
    assert!(text(&out.stdout).starts_with("ok partition=0 offset=60"), "{}", text(&out.stdout));
    Ok(())
}

#[test]
fn delete_records_moves_the_start_on_followers_and_survives_a_restart() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(options())?;
    create(&cluster, "dr", &[])?;
    assert_eq!(produce(&cluster, "dr", "v", 30), 30);
    let out = cluster.insync(&["topic", "delete-records", "dr", "--partition", "0", "--before", "10", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_str(text(&out.stdout).trim())?;
    assert_eq!(answer["low_watermark"], 10);
    wait_starts(&cluster, "dr", "followers following the leader's log start offset", |o| o == 10)?;
    assert_eq!(consumed_offsets(&cluster, "dr", 30).first(), Some(&10));

    let beyond = cluster.insync(&["topic", "delete-records", "dr", "--partition", "0", "--before", "31"]);
    assert!(text(&beyond.stderr).contains("OFFSET_OUT_OF_RANGE"), "past the HW: {}", text(&beyond.stderr));

    // Every broker restarted: the start offset (inside the first segment) is not lost. Wait
    // until each broker's checkpoint file holds it (the leader's at once, the followers' at
    // their next periodic checkpoint).
    wait_for("log start offsets checkpointed on every broker", Duration::from_secs(15), || {
        (1..=3)
            .all(|b| {
                let file = cluster.broker_data_dir(b).join("log-start-offset-checkpoint");
                std::fs::read_to_string(file).is_ok_and(|text| text.lines().any(|l| l == "dr 0 10"))
            })
            .then_some(())
    })?;
    for broker in 1..=3 {
        cluster.kill_broker(broker);
    }
    for broker in 1..=3 {
        cluster.start_broker(broker)?;
    }
    cluster.wait_alive_brokers(3, Duration::from_secs(30))?;
    wait_starts(&cluster, "dr", "the start offset restored after a restart", |o| o == 10)?;
    assert_eq!(consumed_offsets(&cluster, "dr", 30).first(), Some(&10));
    Ok(())
}

/// DeleteRecords to an offset inside a batch: a follower that was away restarts its log at
/// the leader's start, takes the whole batch holding it, and rejoins the ISR.
#[test]
fn a_follower_behind_a_log_start_inside_a_batch_catches_up() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(options())?;
    create(&cluster, "mb", &[])?;
    assert_eq!(produce(&cluster, "mb", "a", 3), 3);
    let leader = cluster.leader_of("mb", 0)?;
    let follower = (1..=3).find(|b| *b != leader).unwrap_or(1);
    cluster.kill_broker(follower);
    // One producer run of small records: a few large batches, so offset 17 is inside one.
    let input: String = (0..40).map(|i| format!("b-{i}\n")).collect();
    let out = cluster.producer(&["--topic", "mb", "--acks", "all"], Some(&input));
    assert!(out.status.success(), "{}", text(&out.stdout));
    let out = cluster.insync(&["topic", "delete-records", "mb", "--partition", "0", "--before", "17"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    cluster.start_broker(follower)?;
    cluster.wait_isr("mb", 0, &[1, 2, 3], Duration::from_secs(30))?;
    wait_starts(&cluster, "mb", "every replica starting at 17", |o| o == 17)?;
    wait_for("equal log ends", Duration::from_secs(10), || {
        log_ends(&cluster, "mb").filter(|e| e.len() == 3 && e.iter().all(|x| *x == 43))
    })?;
    assert_eq!(consumed_offsets(&cluster, "mb", 26).first(), Some(&17));
    Ok(())
}

#[test]
fn a_follower_behind_the_leaders_log_start_restarts_its_log_there() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(options())?;
    create(&cluster, "fb", &[])?;
    assert_eq!(produce(&cluster, "fb", "a", 10), 10);
    let leader = cluster.leader_of("fb", 0)?;
    let follower = (1..=3).find(|b| *b != leader).unwrap_or(1);
    cluster.kill_broker(follower);
    assert_eq!(produce(&cluster, "fb", "b", 40), 40);
    let out = cluster.insync(&["topic", "delete-records", "fb", "--partition", "0", "--before", "-1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    cluster.start_broker(follower)?;
    // Its log (ending at 10) is below the leader's start (50): it starts over at 50 and rejoins.
    cluster.wait_isr("fb", 0, &[1, 2, 3], Duration::from_secs(30))?;
    wait_starts(&cluster, "fb", "every replica starting at 50", |o| o == 50)?;
    assert_eq!(log_ends(&cluster, "fb"), Some(vec![50, 50, 50]));
    assert!(cluster.broker_log(follower).contains("restarted it at 50"), "one INFO line says why");
    assert_eq!(produce(&cluster, "fb", "c", 5), 5);
    assert_eq!(consumed_offsets(&cluster, "fb", 5), vec![50, 51, 52, 53, 54]);
    Ok(())
}
