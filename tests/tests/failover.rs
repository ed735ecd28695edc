//! Failover against real processes: SIGKILL / SIGSTOP / SIGTERM of leaders while acks=all
//! records flow, old leaders rejoining and truncating by leader epoch, the KIP-101 case,
//! and a 3-voter controller quorum losing its active controller. The invariant checked
//! every time: every record acknowledged with acks=all (min.insync.replicas=2) is readable
//! afterwards at the offset it was acknowledged with.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use insync_tests::{text, wait_for, ClusterOptions, StreamingProducer, TestCluster};
use serde_json::Value;

/// Feeds `count` values named `{prefix}-{i}` at about one per `every`, calling `during`
/// after `at` values (the fault), then returns (value, answer line, answer time) in order.
fn produce_through(
    producer: &mut StreamingProducer,
    prefix: &str,
    count: usize,
    at: usize,
    every: Duration,
    mut during: impl FnMut(),
) -> anyhow::Result<Vec<String>> {
    let mut values = Vec::with_capacity(count);
    for i in 0..count {
        if i == at {
            // Let the answers before the fault arrive so the fault strikes mid-stream.
            producer.wait_answers(at, Duration::from_secs(20));
            during();
        }
        let v = format!("{prefix}-{i}");
        producer.send(&v)?;
        values.push(v);
        std::thread::sleep(every);
    }
    Ok(values)
}

/// (offset → value) of every `ok` answer, matched to the values sent in order.
fn acknowledged(values: &[String], answers: &[(Instant, String)]) -> BTreeMap<i64, String> {
    let mut acked = BTreeMap::new();
    for (value, (_, line)) in values.iter().zip(answers) {
        if let Some(offset) = line.strip_prefix("ok partition=0 offset=") {
            let offset: i64 = offset.parse().expect("offset");
            assert!(acked.insert(offset, value.clone()).is_none(), "offset {offset} acknowledged twice");
        }
    }
    acked
}

/// Every acknowledged record is readable at its acknowledged offset.
fn assert_all_acknowledged_readable(cluster: &TestCluster, topic: &str, acked: &BTreeMap<i64, String>) {
    let want = acked.keys().max().map(|m| *m as usize + 1).unwrap_or(0);
    let records = wait_for("acknowledged records readable", Duration::from_secs(30), || {
        let r = cluster.consume_all(topic, want, 3_000);
        (r.len() >= want).then_some(r)
    })
    .expect("read back");
    let by_offset: BTreeMap<i64, String> = records
        .iter()
        .map(|r| (r["offset"].as_i64().unwrap(), r["value"].as_str().unwrap_or("").to_string()))
        .collect();
    for (offset, value) in acked {
        assert_eq!(by_offset.get(offset), Some(value), "acknowledged record at offset {offset} lost or changed");
    }
}

fn leos(p: &Value) -> Vec<Option<i64>> {
    p["log_end_offsets"].as_object().map(|m| m.values().map(|v| v.as_i64()).collect()).unwrap_or_default()
}

fn new_leader_within(
    cluster: &TestCluster,
    topic: &str,
    old: usize,
    timeout: Duration,
) -> anyhow::Result<(usize, Duration)> {
    let started = Instant::now();
    let leader = wait_for("a new leader", timeout, || cluster.leader_of(topic, 0).ok().filter(|l| *l != old))?;
    Ok((leader, started.elapsed()))
}

#[test]
fn leader_sigkill_during_acks_all_stream_loses_nothing_and_old_leader_rejoins() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic("fo", 1, 3, Some(2))?;
    let leader = cluster.leader_of("fo", 0)?;
    let mut producer =
        cluster.streaming_producer(&["--topic", "fo", "--acks", "all", "--delivery-timeout-ms", "30000"])?;
    let mut failover = None;
    let values = produce_through(&mut producer, "v", 300, 100, Duration::from_millis(5), || {
        cluster.kill_broker(leader);
        failover = Some(new_leader_within(&cluster, "fo", leader, Duration::from_secs(4)));
    })?;
    let (new_leader, took) = failover.expect("fault ran")?;
    assert!(took <= Duration::from_millis(3_000 + 1_000), "new leader after {took:?}");
    let answers = producer.finish(Duration::from_secs(40));
    assert_eq!(answers.len(), 300, "one answer per record");
    let errors: Vec<_> = answers.iter().filter(|(_, l)| !l.starts_with("ok ")).collect();
    assert!(errors.is_empty(), "the producer carried on across the failover: {errors:?}");
    let acked = acknowledged(&values, &answers);
    assert_all_acknowledged_readable(&cluster, "fo", &acked);

    // The old leader rejoins as a follower; all logs end identical.
    cluster.start_broker(leader)?;
    cluster.wait_isr("fo", 0, &[1, 2, 3], Duration::from_secs(30))?;
    assert_eq!(cluster.leader_of("fo", 0)?, new_leader);
    wait_for("equal LEOs", Duration::from_secs(10), || {
        let p = cluster.partition("fo", 0).ok()?;
        let l = leos(&p);
        (l.iter().all(|x| x.is_some() && *x == l[0])).then_some(())
    })?;
    Ok(())
}

#[test]
fn restarted_old_leader_truncates_unreplicated_acks_1_records() -> anyhow::Result<()> {
    // Long lag and session: the paused followers stay in the ISR while the leader writes
    // alone, as when a leader is cut off just before it dies.
    let mut cluster = TestCluster::start(ClusterOptions { replica_lag_time_max_ms: 30_000, ..Default::default() })?;
    cluster.create_topic("trunc", 1, 3, Some(2))?;
    let old_leader = cluster.leader_of("trunc", 0)?;
    let input: String = (0..10).map(|i| format!("safe-{i}\n")).collect();
    assert!(cluster.producer(&["--topic", "trunc", "--acks", "all"], Some(&input)).status.success());
    let followers: Vec<usize> = (1..=3).filter(|b| *b != old_leader).collect();
    for &f in &followers {
        cluster.pause_broker(f);
    }
    // Let the followers' parked fetches expire (replica.fetch.wait.max.ms 500): the doomed
    // records must not ride out in an answer already on its way to a paused follower.
    std::thread::sleep(Duration::from_millis(1_000));
    let doomed: String = (0..5).map(|i| format!("doomed-{i}\n")).collect();
    let out = cluster.producer(&["--topic", "trunc", "--acks", "1"], Some(&doomed));
    assert!(out.status.success(), "acks=1 is answered by the leader alone: {}", text(&out.stdout));
    cluster.kill_broker(old_leader);
    for &f in &followers {
        cluster.resume_broker(f);
    }
    new_leader_within(&cluster, "trunc", old_leader, Duration::from_secs(10))?;
    let out = cluster.producer(&["--topic", "trunc", "--acks", "all", "after"], None);
    assert!(out.status.success(), "{}", text(&out.stdout));

    cluster.start_broker(old_leader)?;
    cluster.wait_isr("trunc", 0, &[1, 2, 3], Duration::from_secs(30))?;
    // The doomed records exist only on the old leader, which must cut them off.
    let line = wait_for("truncation log line", Duration::from_secs(10), || {
        cluster.broker_log(old_leader).lines().find(|l| l.contains("truncated log from 15 to")).map(str::to_string)
    })?;
    assert!(line.contains("diverged") && line.contains("records"), "{line}");
    let kept: usize =
        line.split("truncated log from 15 to ").nth(1).and_then(|r| r.split(':').next()).unwrap().parse()?;
    assert_eq!(kept, 10, "{line}");
    let values: Vec<String> = cluster
        .consume_all("trunc", kept + 1, 3_000)
        .iter()
        .map(|r| r["value"].as_str().unwrap_or("").to_string())
        .collect();
    let mut expected: Vec<String> = (0..10).map(|i| format!("safe-{i}")).collect();
    expected.extend((0..kept - 10).map(|i| format!("doomed-{i}")));
    expected.push("after".into());
    assert_eq!(values, expected, "truncated acks=1 records never reappear");
    Ok(())
}

#[test]
fn kip_101_follower_restart_then_leader_kill_loses_nothing() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic("kip101", 1, 3, Some(2))?;
    let leader = cluster.leader_of("kip101", 0)?;
    let follower = (1..=3).find(|b| *b != leader).unwrap();
    let mut values = Vec::new();
    let mut answers = Vec::new();
    let batch = |from: usize, to: usize| -> String { (from..to).map(|i| format!("k-{i}\n")).collect() };
    let out = cluster.producer(&["--topic", "kip101", "--acks", "all"], Some(&batch(0, 200)));
    values.extend((0..200).map(|i| format!("k-{i}")));
    answers.extend(text(&out.stdout).lines().map(|l| (Instant::now(), l.to_string())));
    // Restart the follower (a clean restart: it re-reads its log and HW checkpoint)…
    cluster.stop_broker(follower, Duration::from_secs(20))?;
    let out = cluster.producer(&["--topic", "kip101", "--acks", "all"], Some(&batch(200, 400)));
    values.extend((200..400).map(|i| format!("k-{i}")));
    answers.extend(text(&out.stdout).lines().map(|l| (Instant::now(), l.to_string())));
    cluster.start_broker(follower)?;
    // …and kill the leader before the follower has caught up and rejoined the ISR.
    cluster.kill_broker(leader);
    let (new_leader, _) = new_leader_within(&cluster, "kip101", leader, Duration::from_secs(10))?;
    assert_ne!(new_leader, follower, "a replica outside the ISR must not be elected");
    let acked = acknowledged(&values, &answers);
    assert_eq!(acked.len(), 400);
    cluster.start_broker(leader)?;
    assert_all_acknowledged_readable(&cluster, "kip101", &acked);
    Ok(())
}

#[test]
fn two_failovers_back_to_back_lose_nothing() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic("twice", 1, 3, Some(2))?;
    let first = cluster.leader_of("twice", 0)?;
    let mut producer =
        cluster.streaming_producer(&["--topic", "twice", "--acks", "all", "--delivery-timeout-ms", "2000"])?;
    let mut second = 0;
    let values = produce_through(&mut producer, "t", 200, 60, Duration::from_millis(5), || {
        cluster.kill_broker(first);
        second = new_leader_within(&cluster, "twice", first, Duration::from_secs(10)).expect("second leader").0;
        cluster.kill_broker(second);
    })?;
    let answers = producer.finish(Duration::from_secs(60));
    let acked = acknowledged(&values, &answers);
    assert!(acked.len() >= 60);
    // One broker left: acks=all is refused (min.insync 2), nothing acknowledged is lost.
    cluster.start_broker(first)?;
    cluster.start_broker(second)?;
    assert_all_acknowledged_readable(&cluster, "twice", &acked);
    Ok(())
}

#[test]
fn zombie_leader_after_sigstop_does_not_acknowledge_lost_acks_all_writes() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic("zombie", 1, 3, Some(2))?;
    let old = cluster.leader_of("zombie", 0)?;
    assert!(cluster.producer(&["--topic", "zombie", "--acks", "all", "z-0"], None).status.success());
    cluster.pause_broker(old);
    let (new_leader, _) = new_leader_within(&cluster, "zombie", old, Duration::from_secs(10))?;
    assert!(cluster.producer(&["--topic", "zombie", "--acks", "all", "z-1"], None).status.success());
    cluster.resume_broker(old);
    // Straight to the zombie, as a client with stale metadata would: it must not
    // acknowledge an acks=all write it cannot replicate.
    let rt = tokio::runtime::Runtime::new()?;
    let address = cluster.broker_address(old);
    let mut acked_by_zombie = Vec::new();
    for i in 0..20 {
        let reply = rt.block_on(async {
            let mut client = insync_proto::broker_client::BrokerClient::connect(format!("http://{address}")).await?;
            let mut b = insync_log::batch::BatchBuilder::new();
            b.push(None, Some(format!("zombie-{i}").as_bytes()), 0);
            let r = client
                .produce(insync_proto::ProduceRequest {
                    topic: "zombie".into(),
                    partition: 0,
                    acks: -1,
                    timeout_ms: 2_000,
                    records: b.build(),
                    correlation_id: 0,
                })
                .await?;
            anyhow::Ok(r.into_inner())
        });
        if let Ok(r) = reply {
            if r.error_code == 0 {
                acked_by_zombie.push((r.base_offset, format!("zombie-{i}")));
            }
        }
    }
    cluster.wait_isr("zombie", 0, &[1, 2, 3], Duration::from_secs(30))?;
    assert_eq!(cluster.leader_of("zombie", 0)?, new_leader);
    let acked: BTreeMap<i64, String> = acked_by_zombie.into_iter().collect();
    assert_all_acknowledged_readable(&cluster, "zombie", &acked);
    Ok(())
}

#[test]
fn sigterm_of_a_leader_causes_no_produce_error() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic("planned", 1, 3, Some(2))?;
    let leader = cluster.leader_of("planned", 0)?;
    let mut producer = cluster.streaming_producer(&["--topic", "planned", "--acks", "all"])?;
    let mut stopped = Ok(());
    let values = produce_through(&mut producer, "p", 300, 100, Duration::from_millis(5), || {
        stopped = cluster.stop_broker(leader, Duration::from_secs(20));
    })?;
    stopped?;
    let answers = producer.finish(Duration::from_secs(40));
    let errors: Vec<_> = answers.iter().filter(|(_, l)| !l.starts_with("ok ")).collect();
    assert!(errors.is_empty(), "a planned stop causes no produce error: {errors:?}");
    assert_eq!(answers.len(), 300);
    assert!(cluster.broker_log(leader).contains("controlled shutdown complete"));
    assert_all_acknowledged_readable(&cluster, "planned", &acknowledged(&values, &answers));
    Ok(())
}

#[test]
fn three_controllers_survive_losing_the_active_one_and_failover_still_works() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions { controllers: 3, ..Default::default() })?;
    cluster.create_topic("quorum", 1, 3, Some(2))?;
    let active = wait_for("an active controller", Duration::from_secs(10), || cluster.active_controller())?;
    cluster.kill_controller(active);
    let next = wait_for("another active controller", Duration::from_secs(10), || {
        cluster.active_controller().filter(|c| *c != active)
    })?;
    assert_ne!(next, active);
    // Brokers follow the new controller: metadata changes still reach them.
    cluster.create_topic("after-quorum-change", 1, 3, Some(2))?;
    let leader = cluster.leader_of("quorum", 0)?;
    let mut producer = cluster.streaming_producer(&["--topic", "quorum", "--acks", "all"])?;
    let values = produce_through(&mut producer, "q", 150, 50, Duration::from_millis(5), || {
        cluster.kill_broker(leader);
    })?;
    new_leader_within(&cluster, "quorum", leader, Duration::from_secs(10))?;
    let answers = producer.finish(Duration::from_secs(40));
    let errors: Vec<_> = answers.iter().filter(|(_, l)| !l.starts_with("ok ")).collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_all_acknowledged_readable(&cluster, "quorum", &acknowledged(&values, &answers));
    Ok(())
}

#[test]
fn idempotent_producer_retries_across_a_leader_kill_without_duplicates() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic("exactly-once", 1, 3, Some(2))?;
    let leader = cluster.leader_of("exactly-once", 0)?;
    // Batches in flight when the leader dies are retried on the new leader; sequence
    // numbers let it drop the copies it already has (KIP-98).
    let mut producer =
        cluster.streaming_producer(&["--topic", "exactly-once", "--acks", "all", "--linger-ms", "20"])?;
    let values = produce_through(&mut producer, "e", 2_000, 1_000, Duration::from_micros(200), || {
        cluster.kill_broker(leader);
    })?;
    let answers = producer.finish(Duration::from_secs(60));
    let errors: Vec<_> = answers.iter().filter(|(_, l)| !l.starts_with("ok ")).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let acked = acknowledged(&values, &answers);
    assert_eq!(acked.len(), 2_000);
    cluster.start_broker(leader)?;
    let records = wait_for("everything readable", Duration::from_secs(30), || {
        let r = cluster.consume_all("exactly-once", 2_000, 3_000);
        (r.len() >= 2_000).then_some(r)
    })?;
    let mut seen = std::collections::HashMap::new();
    for r in &records {
        *seen.entry(r["value"].as_str().unwrap_or("").to_string()).or_insert(0) += 1;
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
    assert_eq!(seen.len(), 2_000);
    assert_all_acknowledged_readable(&cluster, "exactly-once", &acked);
    Ok(())
}

#[test]
fn leader_answers_a_retried_batch_with_its_original_offset() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic("dedupe", 1, 3, Some(2))?;
    let address = cluster.broker_address(cluster.leader_of("dedupe", 0)?);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut client = insync_proto::broker_client::BrokerClient::connect(format!("http://{address}")).await?;
        let producer_id = client.init_producer_id(insync_proto::InitProducerIdRequest {}).await?.into_inner();
        assert_eq!(producer_id.error_code, 0);
        let batch = |sequence: i32, value: &str| {
            let mut b = insync_log::batch::BatchBuilder::new().producer(producer_id.producer_id, 0, sequence);
            b.push(None, Some(value.as_bytes()), 0);
            b.build()
        };
        let send = |records: bytes::Bytes| insync_proto::ProduceRequest {
            topic: "dedupe".into(),
            partition: 0,
            acks: -1,
            timeout_ms: 5_000,
            records,
            correlation_id: 0,
        };
        let first = client.produce(send(batch(0, "a"))).await?.into_inner();
        let second = client.produce(send(batch(1, "b"))).await?.into_inner();
        let retry = client.produce(send(batch(0, "a"))).await?.into_inner();
        assert_eq!((first.error_code, second.error_code, retry.error_code), (0, 0, 0));
        assert_eq!(retry.base_offset, first.base_offset, "a duplicate is answered with the original offset");
        let gap = client.produce(send(batch(5, "c"))).await?.into_inner();
        assert_eq!(gap.error_code, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
        assert!(!gap.appended);
        anyhow::Ok(())
    })?;
    let values: Vec<String> =
        cluster.consume_all("dedupe", 2, 3_000).iter().map(|r| r["value"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(values, vec!["a", "b"], "the retry wrote nothing");
    Ok(())
}
