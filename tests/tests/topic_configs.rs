//! Topic configs against real processes: set at creation and changed at run time with
//! `insync topic alter`, taking effect on the running brokers without a restart
//! (max.message.bytes, min.insync.replicas, segment.bytes, unclean.leader.election.enable),
//! and refused with INVALID_CONFIG and a clear message when a key is unknown or a value
//! invalid. `--validate-only` checks without changing anything.
use std::time::Duration;

use insync_tests::{text, wait_for, ClusterOptions, TestCluster};
use serde_json::Value;

/// `insync <args>`, which must succeed; its stdout.
fn insync_ok(cluster: &TestCluster, args: &[&str]) -> anyhow::Result<String> {
    let out = cluster.insync(args);
    anyhow::ensure!(out.status.success(), "insync {args:?} failed: {}{}", text(&out.stdout), text(&out.stderr));
    Ok(text(&out.stdout))
}

/// `insync <args>`, which must fail; its stderr.
fn insync_err(cluster: &TestCluster, args: &[&str]) -> String {
    let out = cluster.insync(args);
    assert!(!out.status.success(), "insync {args:?} should fail: {}", text(&out.stdout));
    text(&out.stderr)
}

/// One acks=all record; the producer's answer line.
fn produce_one(cluster: &TestCluster, topic: &str, value: &str) -> String {
    let out = cluster.producer(&["--topic", topic, "--acks", "all", "--delivery-timeout-ms", "5000", value], None);
    text(&out.stdout).trim().to_string()
}

/// Produces `value` until the answer contains `expected` (10 s at most): `alter` answers once
/// the broker it went through applied the change, and the leader may apply it a moment later.
fn produce_until(cluster: &TestCluster, topic: &str, value: &str, expected: &str) -> anyhow::Result<String> {
    wait_for(&format!("a produce answered {expected}"), Duration::from_secs(10), || {
        let answer = produce_one(cluster, topic, value);
        answer.contains(expected).then_some(answer)
    })
}

fn configs_of(cluster: &TestCluster, topic: &str) -> anyhow::Result<Value> {
    Ok(cluster.partition(topic, 0)?["configs"].clone())
}

#[test]
fn config_changes_take_effect_without_a_restart() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions { replica_lag_time_max_ms: 2_000, ..Default::default() })?;
    insync_ok(
        &cluster,
        &["topic", "create", "live", "--replication-factor", "3", "--config", "max.message.bytes=2000"],
    )?;
    assert_eq!(configs_of(&cluster, "live")?["max.message.bytes"], "2000");

    // max.message.bytes: a 3000-byte record is refused, then taken once the limit is raised.
    let big = "x".repeat(3_000);
    assert!(produce_one(&cluster, "live", &big).contains("MESSAGE_TOO_LARGE"), "over the topic's limit");
    insync_ok(&cluster, &["topic", "alter", "live", "--config", "max.message.bytes=100000"])?;
    produce_until(&cluster, "live", &big, "ok partition=")?;

    // segment.bytes: small segments from the next roll on, on the leader and the followers.
    insync_ok(&cluster, &["topic", "alter", "live", "--config", "segment.bytes=4096"])?;
    // One batch per record (one producer run each): a roll happens between batches, never
    // inside one, so 2.5 KB batches against 4 KiB segments roll every other record.
    for i in 0..6 {
        let answer = produce_one(&cluster, "live", &format!("{}-{i}", "y".repeat(2_500)));
        assert!(answer.starts_with("ok "), "{answer}");
    }
    for broker in 1..=3 {
        let dir = cluster.broker_data_dir(broker).join("live-0");
        wait_for(&format!("several segments on broker {broker}"), Duration::from_secs(10), || {
            let logs =
                std::fs::read_dir(&dir).ok()?.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "log"));
            (logs.count() >= 3).then_some(())
        })?;
    }

    // min.insync.replicas: 3 with a follower paused out of the ISR refuses acks=all; 2 takes it.
    insync_ok(&cluster, &["topic", "alter", "live", "--config", "min.insync.replicas=3"])?;
    let leader = cluster.leader_of("live", 0)?;
    let follower = (1..=3).find(|b| *b != leader).unwrap_or(1);
    let mut cluster = cluster;
    cluster.pause_broker(follower);
    wait_for("the paused follower out of the ISR", Duration::from_secs(20), || {
        (cluster.isr_of("live", 0).ok()?.len() == 2).then_some(())
    })?;
    produce_until(&cluster, "live", "refused", "NOT_ENOUGH_REPLICAS")?;
    insync_ok(&cluster, &["topic", "alter", "live", "--config", "min.insync.replicas=2"])?;
    produce_until(&cluster, "live", "taken", "ok partition=")?;
    cluster.resume_broker(follower);
    Ok(())
}

#[test]
fn turning_unclean_election_on_elects_a_leader_for_an_offline_partition() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions { replica_lag_time_max_ms: 2_000, ..Default::default() })?;
    insync_ok(&cluster, &["topic", "create", "u", "--replication-factor", "3", "--min-insync-replicas", "1"])?;
    let leader = cluster.leader_of("u", 0)?;
    let followers: Vec<usize> = (1..=3).filter(|b| *b != leader).collect();
    // The followers fall out of the ISR, then the last ISR member dies: no clean candidate.
    for &f in &followers {
        cluster.pause_broker(f);
    }
    cluster.wait_isr("u", 0, &[leader as i64], Duration::from_secs(20))?;
    cluster.kill_broker(leader);
    for &f in &followers {
        cluster.resume_broker(f);
    }
    wait_for("the partition offline", Duration::from_secs(20), || {
        (cluster.partition("u", 0).ok()?["leader"].as_i64() == Some(-1)).then_some(())
    })?;
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(cluster.partition("u", 0)?["leader"].as_i64(), Some(-1), "no clean election without the ISR member");

    insync_ok(&cluster, &["topic", "alter", "u", "--config", "unclean.leader.election.enable=true"])?;
    let elected = wait_for("an unclean leader", Duration::from_secs(10), || {
        let p = cluster.partition("u", 0).ok()?;
        p["leader"].as_i64().filter(|l| *l > 0).map(|l| (l, p["unclean_elected"].as_bool()))
    })?;
    assert!(followers.contains(&(elected.0 as usize)), "an out-of-sync live replica leads: {elected:?}");
    assert_eq!(elected.1, Some(true), "describe marks the election unclean");
    produce_until(&cluster, "u", "after", "ok partition=")?;
    Ok(())
}

#[test]
fn unknown_keys_and_invalid_values_are_refused_and_validate_only_changes_nothing() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::default())?;
    let unknown = insync_err(&cluster, &["topic", "create", "c", "--config", "retention.hours=1"]);
    assert!(
        unknown.contains("INVALID_CONFIG") && unknown.contains("Unknown topic config name: retention.hours"),
        "{unknown}"
    );
    let bad = insync_err(&cluster, &["topic", "create", "c", "--config", "retention.ms=soon"]);
    assert!(bad.contains("INVALID_CONFIG") && bad.contains("retention.ms"), "{bad}");
    let listed = insync_ok(&cluster, &["topic", "list"])?;
    assert!(!listed.lines().any(|l| l == "c"), "a refused create creates nothing");

    let preview = insync_ok(&cluster, &["topic", "create", "c", "--config", "retention.ms=60000", "--validate-only"])?;
    assert!(preview.contains("valid: would create topic c"), "{preview}");
    assert!(!insync_ok(&cluster, &["topic", "list"])?.lines().any(|l| l == "c"), "validate-only creates nothing");

    insync_ok(&cluster, &["topic", "create", "c", "--replication-factor", "3", "--config", "retention.ms=60000"])?;
    for (args, words) in [
        (vec!["--config", "segment.bytes=10"], "segment.bytes"),
        (vec!["--config", "min.insync.replicas=4"], "replication factor 3"),
        (vec!["--config", "unclean.leader.election.enable=maybe"], "unclean.leader.election.enable"),
        (vec!["--delete-config", "no.such.key"], "Unknown topic config name"),
    ] {
        let mut all = vec!["topic", "alter", "c"];
        all.extend(args);
        let error = insync_err(&cluster, &all);
        assert!(error.contains("INVALID_CONFIG") && error.contains(words), "{all:?}: {error}");
    }
    let unknown_topic = insync_err(&cluster, &["topic", "alter", "nosuch", "--config", "retention.ms=1"]);
    assert!(unknown_topic.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{unknown_topic}");

    insync_ok(&cluster, &["topic", "alter", "c", "--config", "retention.bytes=1000000", "--validate-only"])?;
    assert!(configs_of(&cluster, "c")?.get("retention.bytes").is_none(), "validate-only alters nothing");
    insync_ok(
        &cluster,
        &["topic", "alter", "c", "--config", "retention.bytes=1000000", "--delete-config", "retention.ms"],
    )?;
    let configs = configs_of(&cluster, "c")?;
    assert_eq!(configs["retention.bytes"], "1000000");
    assert!(configs.get("retention.ms").is_none(), "deleted back to the broker default: {configs}");
    let described = insync_ok(&cluster, &["topic", "describe", "c"])?;
    assert!(described.contains("Configs: retention.bytes=1000000"), "{described}");
    Ok(())
}
