//! Core-cluster tests against real processes (one controller + three brokers): acks=all
//! read-back, NOT_ENOUGH_REPLICAS with dead followers, NOT_ENOUGH_REPLICAS_AFTER_APPEND
//! with paused followers, follower catch-up, and bad input of every kind.
use std::time::{Duration, Instant};

use insync_tests::{text, wait_for, ClusterOptions, TestCluster};
use serde_json::Value;

fn lines(out: &std::process::Output) -> Vec<String> {
    text(&out.stdout).lines().map(str::to_string).collect()
}

/// Each replica's LEO from `describe --json`.
fn leos(p: &Value) -> Vec<Option<i64>> {
    p["log_end_offsets"].as_object().map(|m| m.values().map(|v| v.as_i64()).collect()).unwrap_or_default()
}

/// Concatenated `.log` segment bytes of a replica, for byte-for-byte comparison.
fn log_bytes(cluster: &TestCluster, broker: usize, topic_dir: &str) -> Vec<u8> {
    let dir = cluster.broker_data_dir(broker).join(topic_dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect()
        })
        .unwrap_or_default();
    files.sort();
    files.iter().flat_map(|f| std::fs::read(f).unwrap_or_default()).collect()
}

#[test]
fn rf3_min_isr_2_thousand_acks_all_records_read_back_and_replicas_converge() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic("orders", 1, 3, Some(2))?;
    let input: String = (0..1000).map(|i| format!("order-{i}\n")).collect();
    let out = cluster.producer(&["--topic", "orders", "--acks", "all"], Some(&input));
    let acks = lines(&out);
    assert!(out.status.success(), "producer failed: {}", text(&out.stderr));
    assert_eq!(acks.len(), 1000);
    for (i, line) in acks.iter().enumerate() {
        assert_eq!(line, &format!("ok partition=0 offset={i}"));
    }
    let records = cluster.consume_all("orders", 1000, 5_000);
    assert_eq!(records.len(), 1000, "every acknowledged record is read back");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["offset"].as_i64(), Some(i as i64));
        assert_eq!(r["value"].as_str(), Some(format!("order-{i}").as_str()));
    }
    wait_for("all replicas at LEO 1000 with HW 1000", Duration::from_secs(10), || {
        let p = cluster.partition("orders", 0).ok()?;
        (leos(&p) == vec![Some(1000); 3] && p["high_watermark"].as_i64() == Some(1000)).then_some(())
    })?;
    let leader_log = log_bytes(&cluster, 1, "orders-0");
    assert!(!leader_log.is_empty());
    for b in 2..=3 {
        assert_eq!(log_bytes(&cluster, b, "orders-0"), leader_log, "replica {b} log is byte-identical");
    }
    Ok(())
}

#[test]
fn dead_followers_give_not_enough_replicas_but_acks_1_and_min_isr_1_still_write() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic("strict", 1, 3, Some(2))?;
    // Three partitions spread leadership over all brokers; one shares the leader of "strict".
    cluster.create_topic("relaxed", 3, 3, Some(1))?;
    let leader = cluster.leader_of("strict", 0)?;
    let relaxed_partition = (0..3)
        .find(|p| cluster.leader_of("relaxed", *p).ok() == Some(leader))
        .expect("a relaxed partition led by the same broker");
    let out = cluster.producer(&["--topic", "strict", "--acks", "all", "before"], None);
    assert!(out.status.success(), "{}", text(&out.stdout));

    let followers: Vec<usize> = (1..=3).filter(|b| *b != leader).collect();
    for &f in &followers {
        cluster.kill_broker(f);
    }
    cluster.wait_isr("strict", 0, &[leader as i64], Duration::from_secs(15))?;

    let out =
        cluster.producer(&["--topic", "strict", "--acks", "all", "--delivery-timeout-ms", "1000", "refused"], None);
    let line = lines(&out).join("\n");
    assert!(!out.status.success());
    assert!(line.starts_with("error NOT_ENOUGH_REPLICAS (19) partition=0 appended=false"), "got: {line}");

    let out = cluster.producer(&["--topic", "strict", "--acks", "1", "leader-only"], None);
    assert_eq!(lines(&out), vec!["ok partition=0 offset=1".to_string()], "{}", text(&out.stderr));

    let p = relaxed_partition.to_string();
    let out = cluster.producer(&["--topic", "relaxed", "--acks", "all", "--partition", &p, "fine"], None);
    assert!(
        out.status.success(),
        "min.insync.replicas=1 accepts acks=all with ISR [leader]: {}",
        lines(&out).join("\n")
    );

    // NOT_ENOUGH_REPLICAS wrote nothing: the leader's log has exactly two records, and
    // describe explains why the HW is held.
    let desc = cluster.partition("strict", 0)?;
    assert_eq!(desc["log_end_offsets"][leader.to_string()].as_i64(), Some(2));
    assert_eq!(desc["high_watermark"].as_i64(), Some(1), "acks=1 record not exposed while ISR < min.insync");
    assert!(desc["notes"].to_string().contains("HW held"), "{desc}");

    // The followers return: the ISR recovers, the acks=1 record becomes visible.
    for &f in &followers {
        cluster.start_broker(f)?;
    }
    cluster.wait_isr("strict", 0, &[1, 2, 3], Duration::from_secs(30))?;
    let records = cluster.consume_all("strict", 2, 5_000);
    let values: Vec<_> = records.iter().map(|r| r["value"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(values, vec!["before", "leader-only"]);
    Ok(())
}

#[test]
fn paused_followers_give_not_enough_replicas_after_append_before_the_timeout() -> anyhow::Result<()> {
    // A long broker session: the controller does not fence the paused followers, so the
    // ISR shrinks by the leader's own lag rule (replica.lag.time.max.ms) via AlterPartition.
    let mut cluster =
        TestCluster::start(ClusterOptions { broker_session_timeout_ms: 60_000, ..ClusterOptions::default() })?;
    cluster.create_topic("paused", 1, 3, Some(2))?;
    let leader = cluster.leader_of("paused", 0)?;
    let out = cluster.producer(&["--topic", "paused", "--acks", "all", "warm-up"], None);
    assert!(out.status.success());
    let followers: Vec<usize> = (1..=3).filter(|b| *b != leader).collect();
    for &f in &followers {
        cluster.pause_broker(f);
    }
    let started = Instant::now();
    let out = cluster.producer(&["--topic", "paused", "--acks", "all", "--timeout-ms", "60000", "stuck"], None);
    let elapsed = started.elapsed();
    let line = lines(&out).join("\n");
    for &f in &followers {
        cluster.resume_broker(f);
    }
    assert!(
        line.starts_with("error NOT_ENOUGH_REPLICAS_AFTER_APPEND (20) partition=0 appended=true"),
        "got: {line} / {}",
        text(&out.stderr)
    );
    assert!(elapsed < Duration::from_secs(30), "answered when the ISR shrank, not at the 60 s timeout: {elapsed:?}");
    // The leader's log explains the shrink in one line.
    let log = cluster.broker_log(leader);
    assert!(log.contains("out of sync") && log.contains("replica.lag.time.max.ms"), "{log}");
    assert!(log.contains("committed at partition epoch") && log.contains("acks=all refused"), "{log}");
    Ok(())
}

#[test]
fn restarted_follower_catches_up_rejoins_isr_with_identical_log() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic("catchup", 1, 3, Some(2))?;
    let leader = cluster.leader_of("catchup", 0)?;
    let victim = (1..=3).find(|b| *b != leader).unwrap();
    cluster.kill_broker(victim);
    let others: Vec<i64> = (1..=3).filter(|b| *b != victim).map(|b| b as i64).collect();
    cluster.wait_isr("catchup", 0, &others, Duration::from_secs(15))?;
    let input: String = (0..300).map(|i| format!("v{i}\n")).collect();
    let out = cluster.producer(&["--topic", "catchup", "--acks", "all"], Some(&input));
    assert!(out.status.success(), "{}", text(&out.stdout));
    cluster.start_broker(victim)?;
    cluster.wait_isr("catchup", 0, &[1, 2, 3], Duration::from_secs(30))?;
    wait_for("equal LEOs", Duration::from_secs(10), || {
        let p = cluster.partition("catchup", 0).ok()?;
        (leos(&p) == vec![Some(300); 3]).then_some(())
    })?;
    assert_eq!(log_bytes(&cluster, victim, "catchup-0"), log_bytes(&cluster, leader, "catchup-0"));
    Ok(())
}

#[test]
fn bad_input_gets_clear_errors_and_loses_nothing() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions { message_max_bytes: Some(10_000), ..Default::default() })?;
    cluster.create_topic("safe", 1, 3, Some(2))?;
    let out = cluster.producer(&["--topic", "safe", "--acks", "all", "kept-1", "kept-2"], None);
    assert!(out.status.success());

    // acks=2: the CLI refuses it, and so does the broker when a client sends it anyway.
    let out = cluster.producer(&["--topic", "safe", "--acks", "2", "x"], None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("invalid acks '2'"), "{}", text(&out.stderr));
    let rt = tokio::runtime::Runtime::new()?;
    let reply = rt.block_on(async {
        let mut client = insync_proto::broker_client::BrokerClient::connect(format!(
            "http://{}",
            cluster.broker_address(cluster.leader_of("safe", 0).unwrap())
        ))
        .await?;
        let mut b = insync_log::batch::BatchBuilder::new();
        b.push(None, Some(b"x"), 0);
        let r = client
            .produce(insync_proto::ProduceRequest {
                topic: "safe".into(),
                partition: 0,
                acks: 2,
                timeout_ms: 1000,
                records: b.build(),
                correlation_id: 0,
            })
            .await?;
        anyhow::Ok(r.into_inner())
    })?;
    assert_eq!(reply.error_code, 21, "INVALID_REQUIRED_ACKS");
    assert!(!reply.appended);

    // Unknown topic.
    let out = cluster.producer(&["--topic", "nope", "x"], None);
    assert!(!out.status.success());
    assert!(lines(&out).join("").contains("UNKNOWN_TOPIC_OR_PARTITION (3)"), "{}", lines(&out).join(""));

    // A record over message.max.bytes.
    let big = "x".repeat(20_000);
    let out = cluster.producer(&["--topic", "safe", "--acks", "all", &big], None);
    assert!(
        lines(&out).join("").contains("error MESSAGE_TOO_LARGE (10) partition=0 appended=false"),
        "{}",
        lines(&out).join("")
    );

    // Random bytes at a broker port: the broker shrugs and keeps serving.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(cluster.broker_address(1))?;
        let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let _ = s.write_all(&junk);
    }
    assert!(cluster.broker_running(1));
    let out = cluster.producer(&["--topic", "safe", "--acks", "all", "kept-3"], None);
    assert!(out.status.success(), "{}", lines(&out).join(""));

    // A corrupt segment tail on a stopped follower: truncated on restart, re-fetched.
    let leader = cluster.leader_of("safe", 0)?;
    let follower = (1..=3).find(|b| *b != leader).unwrap();
    cluster.stop_broker(follower, Duration::from_secs(20))?;
    let segment = cluster.broker_data_dir(follower).join("safe-0").join("00000000000000000000.log");
    let mut bytes = std::fs::read(&segment)?;
    assert!(bytes.len() > 40);
    let n = bytes.len();
    bytes[n - 3] ^= 0xff; // flip a byte inside the last batch's records: CRC mismatch
    bytes.extend_from_slice(b"torn-tail-garbage");
    std::fs::write(&segment, &bytes)?;
    cluster.start_broker(follower)?;
    wait_for("recovery log line", Duration::from_secs(15), || {
        cluster.broker_log(follower).contains("truncated").then_some(())
    })?;
    cluster.wait_isr("safe", 0, &[1, 2, 3], Duration::from_secs(30))?;
    wait_for("equal LEOs after re-fetch", Duration::from_secs(10), || {
        let p = cluster.partition("safe", 0).ok()?;
        (leos(&p) == vec![Some(3); 3]).then_some(())
    })?;
    let values: Vec<String> =
        cluster.consume_all("safe", 3, 5_000).iter().map(|r| r["value"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(values, vec!["kept-1", "kept-2", "kept-3"], "nothing acknowledged was lost");
    Ok(())
}
