//! Durable group offsets on real processes: offsets committed by unmodified Kafka clients
//! (confluent-kafka and kafka-python from `scripts/install-kafka-clients.sh`) live in the
//! replicated `__consumer_offsets` topic, so they survive a SIGKILL of the group's
//! coordinator (the new leader of the group's offsets partition loads them: no rewind) and
//! a restart of every broker; the lab's "coordinator SIGKILL loses no committed offset"
//! (`insync lab groups`) finds every acknowledged commit. Also: a transactional producer
//! fails at once.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use insync_lab::groups::{run_on, start_cluster, GroupRunConfig};
use insync_lab::scenario::Verdict;
use insync_tests::{bin_dir, kafka_clients_python, run_bounded, text, wait_for, ClusterOptions, TestCluster};

const TOPIC: &str = "orders";
const GROUP: &str = "durable-offsets";
/// `--offsets-topic-num-partitions` of the test cluster (the broker default).
const OFFSETS_PARTITIONS: i32 = 12;

/// `commit BOOTSTRAP GROUP O0 O1 ...` commits offset Oi of partition i; `fetch BOOTSTRAP
/// GROUP N` prints the committed offsets of partitions 0..N. One line each: `p offset`.
const CONFLUENT: &str = r#"
import sys
from confluent_kafka import Consumer, TopicPartition
mode, bootstrap, group = sys.argv[1:4]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
if mode == "commit":
    offsets = [TopicPartition("orders", p, int(o)) for p, o in enumerate(sys.argv[4:])]
    done = c.commit(offsets=offsets, asynchronous=False)
    for tp in done:
        print(f"{tp.partition} {tp.offset}" if tp.error is None else f"{tp.partition} error {tp.error}")
else:
    for tp in c.committed([TopicPartition("orders", p) for p in range(int(sys.argv[4]))], timeout=60):
        print(f"{tp.partition} {tp.offset}" if tp.error is None else f"{tp.partition} error {tp.error}")
c.close()
"#;

const KAFKA_PYTHON: &str = r#"
import sys
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
mode, bootstrap, group = sys.argv[1:4]
c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
if mode == "commit":
    offsets = {TopicPartition("orders", p): OffsetAndMetadata(int(o), "", -1) for p, o in enumerate(sys.argv[4:])}
    c.commit(offsets)
    for tp, om in sorted(offsets.items()):
        print(f"{tp.partition} {om.offset}")
else:
    for p in range(int(sys.argv[4])):
        print(f"{p} {c.committed(TopicPartition('orders', p))}")
c.close()
"#;

/// Java's `String.hashCode`, and Kafka's `Utils.abs(hash) % partitions` (i32::MIN → 0).
fn offsets_partition(group: &str, partitions: i32) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)));
    (if hash == i32::MIN { 0 } else { hash.abs() }) % partitions
}

fn run_client(python: &Path, script: &str, args: &[&str]) -> (bool, String) {
    let out = run_bounded(Command::new(python).arg("-u").arg("-c").arg(script).args(args), None);
    (out.status.success(), format!("{}{}", text(&out.stdout), text(&out.stderr)))
}

/// `p offset` lines → offsets by partition (None for an error or no offset).
fn parse(output: &str, partitions: usize) -> Vec<Option<i64>> {
    let mut offsets = vec![None; partitions];
    for line in output.lines() {
        let mut words = line.split_whitespace();
        if let (Some(Ok(p)), Some(Ok(offset))) = (words.next().map(str::parse::<usize>), words.next().map(str::parse)) {
            if p < partitions {
                offsets[p] = Some(offset);
            }
        }
    }
    offsets
}

/// Runs `script` until it prints `want` for every partition (a coordinator that is moving
/// answers retriable errors the client may surface), or fails after `timeout`.
fn until_offsets(python: &Path, script: &str, args: &[&str], want: &[i64], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let want: Vec<Option<i64>> = want.iter().copied().map(Some).collect();
    loop {
        let (ok, output) = run_client(python, script, args);
        if ok && parse(&output, want.len()) == want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{args:?}: wanted {want:?}, the client said:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn coordinator(cluster: &TestCluster) -> anyhow::Result<usize> {
    let partition = offsets_partition(GROUP, OFFSETS_PARTITIONS);
    wait_for("a leader of the group's offsets partition", Duration::from_secs(30), || {
        cluster.leader_of("__consumer_offsets", i64::from(partition)).ok()
    })
}

#[test]
fn committed_offsets_survive_a_coordinator_sigkill_and_a_full_restart() -> anyhow::Result<()> {
    let python = kafka_clients_python().map_err(anyhow::Error::msg)?;
    let mut cluster = TestCluster::start(ClusterOptions { kafka_listeners: true, ..ClusterOptions::default() })?;
    cluster.create_topic(TOPIC, 3, 3, None)?;
    let bootstrap = cluster.kafka_bootstrap();
    let minute = Duration::from_secs(60);
    // The first commit creates __consumer_offsets (COORDINATOR_NOT_AVAILABLE meanwhile).
    until_offsets(&python, CONFLUENT, &["commit", &bootstrap, GROUP, "11", "22", "33"], &[11, 22, 33], minute)?;
    let topics = text(&cluster.insync(&["topic", "list"]).stdout);
    ensure!(topics.contains("__consumer_offsets"), "the offsets topic is listed: {topics}");
    let delete = cluster.insync(&["topic", "delete", "__consumer_offsets"]);
    let said = format!("{}{}", text(&delete.stdout), text(&delete.stderr));
    ensure!(!delete.status.success() && said.contains("internal topic"), "deleting it is refused: {said}");
    refuses_client_writes_to_the_offsets_topic(&cluster, &python, &bootstrap)?;

    // SIGKILL the coordinator: the next leader of the partition loads the offsets.
    let first = coordinator(&cluster)?;
    cluster.kill_broker(first);
    let alive: Vec<String> = cluster
        .kafka_ports
        .iter()
        .enumerate()
        .filter(|(i, _)| i + 1 != first)
        .map(|(_, p)| format!("127.0.0.1:{p}"))
        .collect();
    let alive = alive.join(",");
    until_offsets(&python, CONFLUENT, &["fetch", &alive, GROUP, "3"], &[11, 22, 33], minute)
        .context("after the coordinator's SIGKILL")?;
    let second = coordinator(&cluster)?;
    ensure!(second != first, "the coordinator moved off the killed broker {first}");
    // Another client commits through the new coordinator.
    until_offsets(&python, KAFKA_PYTHON, &["commit", &alive, GROUP, "12", "23", "34"], &[12, 23, 34], minute)?;

    // Every broker restarts (SIGKILL, then start): the offsets come back from the logs.
    cluster.start_broker(first)?;
    cluster.wait_alive_brokers(3, minute)?;
    for n in 1..=3 {
        cluster.kill_broker(n);
    }
    for n in 1..=3 {
        cluster.start_broker(n)?;
    }
    cluster.wait_alive_brokers(3, minute)?;
    until_offsets(&python, KAFKA_PYTHON, &["fetch", &bootstrap, GROUP, "3"], &[12, 23, 34], minute)
        .context("after restarting every broker")?;
    until_offsets(&python, CONFLUENT, &["fetch", &bootstrap, GROUP, "3"], &[12, 23, 34], minute)
        .with_context(|| cluster.log_tails(20))?;

    /// What clients may not do to the offsets topic, through confluent-kafka: produce,
    /// delete_records, create_partitions, incremental_alter_configs, create_topics; one JSON
    /// object of outcomes. (kafka-python's producer never sends to a topic Metadata marks
    /// internal: it fails in the client, "Partitioner did not assign a partition".)
    const FORBIDDEN: &str = r#"
import json, sys
from confluent_kafka import KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic,
                                   ResourceType)
bootstrap, T = sys.argv[1], "__consumer_offsets"
def failure(e):
    return {"error": e.name(), "code": e.code(), "message": e.str()}
def outcome(future):
    try:
        future.result(timeout=60)
        return {"error": None}
    except KafkaException as e:
        return failure(e.args[0])
out, delivered = {}, []
p = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 30000})
p.produce(T, b"forged", partition=0, on_delivery=lambda err, msg: delivered.append(err))
p.flush(60)
out["produce"] = failure(delivered[0]) if delivered and delivered[0] else {"error": None, "delivered": len(delivered)}
admin = AdminClient({"bootstrap.servers": bootstrap})
tp = TopicPartition(T, 0, 0)
out["delete_records"] = outcome(admin.delete_records([tp], request_timeout=30, operation_timeout=30)[tp])
out["create_partitions"] = outcome(admin.create_partitions([NewPartitions(T, 13)], request_timeout=60)[T])
r = ConfigResource(ResourceType.TOPIC, T,
                   incremental_configs=[ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
out["alter_configs"] = outcome(admin.incremental_alter_configs([r], request_timeout=60)[r])
out["create_topics"] = outcome(admin.create_topics([NewTopic(T, num_partitions=1, replication_factor=3)],
                                                   request_timeout=60)[T])
print(json.dumps(out))
"#;

    /// Produce, DeleteRecords, CreatePartitions, config changes and CreateTopics of
    /// `__consumer_offsets` are refused to Kafka clients and to the `insync` tools (gRPC),
    /// with Kafka's codes, and the topic is left as the brokers made it.
    fn refuses_client_writes_to_the_offsets_topic(
        cluster: &TestCluster,
        python: &Path,
        bootstrap: &str,
    ) -> anyhow::Result<()> {
        let (ok, output) = run_client(python, FORBIDDEN, &[bootstrap]);
        let line = output.lines().last().unwrap_or_default();
        let said: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("the clients said (ok={ok}):\n{output}"))?;
        let code = |what: &str| said[what]["code"].as_i64();
        ensure!(code("produce") == Some(17), "produce: INVALID_TOPIC_EXCEPTION: {said}");
        ensure!(code("delete_records") == Some(17), "delete_records: INVALID_TOPIC_EXCEPTION: {said}");
        for (what, words) in [
            ("create_partitions", "number of partitions"),
            ("alter_configs", "cannot be changed"),
            ("create_topics", "Creation of internal topic __consumer_offsets is prohibited"),
        ] {
            let message = said[what]["message"].as_str().unwrap_or_default();
            ensure!(code(what) == Some(42) && message.contains(words), "{what}: INVALID_REQUEST \"{words}\": {said}");
        }
        for (args, words) in [
            (
                &["topic", "delete-records", "__consumer_offsets", "--partition", "0", "--before", "0"][..],
                "Cannot delete records",
            ),
            (&["topic", "add-partitions", "__consumer_offsets", "--partitions", "13"], "number of partitions"),
            (&["topic", "alter", "__consumer_offsets", "--config", "retention.ms=1000"], "cannot be changed"),
            (&["topic", "create", "__consumer_offsets"], "is prohibited"),
        ] {
            let out = cluster.insync(args);
            let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
            ensure!(!out.status.success() && said.contains(words), "insync {args:?} is refused ({words}): {said}");
        }
        let out = cluster.producer(&["--topic", "__consumer_offsets", "--partition", "0", "forged"], None);
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        ensure!(said.contains("Cannot append to internal topic"), "insync-producer is refused: {said}");
        let partitions = cluster.describe("__consumer_offsets")?;
        ensure!(partitions.len() as i32 == OFFSETS_PARTITIONS, "still {OFFSETS_PARTITIONS} partitions: {partitions:?}");
        let starts_at_zero = |p: &serde_json::Value| {
            p["log_start_offsets"].as_object().is_some_and(|m| m.values().all(|v| v.as_i64().unwrap_or(0) == 0))
        };
        ensure!(partitions.iter().all(starts_at_zero), "no record was deleted: {partitions:?}");
        ensure!(partitions.iter().all(|p| p["configs"]["retention.ms"] == "-1"), "its configs stand: {partitions:?}");
        Ok(())
    }
    Ok(())
}

/// A transactional producer of each client fails `init_transactions` at once, saying why
/// where the client shows the broker's message (librdkafka).
const TRANSACTIONAL: &str = r#"
import sys, time, asyncio
bootstrap, client = sys.argv[1:3]
t = time.monotonic()
try:
    if client == "confluent":
        from confluent_kafka import Producer
        Producer({"bootstrap.servers": bootstrap, "transactional.id": "tx"}).init_transactions(30)
    elif client == "kafka-python":
        from kafka import KafkaProducer
        KafkaProducer(bootstrap_servers=bootstrap, transactional_id="tx").init_transactions()
    else:
        from aiokafka import AIOKafkaProducer
        async def main():
            p = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="tx")
            try:
                await p.start()
            finally:
                await p.stop()
        asyncio.run(main())
    print("initialized")
except Exception as e:
    print(f"failed {time.monotonic() - t:.3f} {type(e).__name__}: {e}")
"#;

#[test]
fn transactional_producers_fail_at_once() -> anyhow::Result<()> {
    let python = kafka_clients_python().map_err(anyhow::Error::msg)?;
    let cluster = TestCluster::start(ClusterOptions { kafka_listeners: true, ..ClusterOptions::default() })?;
    let bootstrap = cluster.kafka_bootstrap();
    for client in ["confluent", "kafka-python", "aiokafka"] {
        let (_, output) = run_client(&python, TRANSACTIONAL, &[&bootstrap, client]);
        let line = output.lines().find(|l| l.starts_with("failed ")).with_context(|| format!("{client}: {output}"))?;
        let seconds: f64 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("a time")?;
        ensure!(seconds < 2.0, "{client} took {seconds} s to fail: {line}");
        ensure!(
            line.contains("TransactionalIdAuthorizationFailed") || line.contains("TRANSACTIONAL_ID"),
            "{client}: {line}"
        );
        if client == "confluent" {
            ensure!(line.contains("insync does not support transactions"), "{line}");
        }
    }
    Ok(())
}

/// The lab scenario (`insync lab groups`), on one cluster: first a run that cannot get its
/// minimum of commits acknowledged before the kill must come out inconclusive (a failure,
/// nothing killed); then the real run must kill the broker every FindCoordinator and the
/// metadata named right before the kill, through which the commits before it went, find
/// every acknowledged commit right after the failover (before any new commit) and later,
/// and its negative control (the offsets destroyed on every replica) must be caught.
#[test]
fn lab_coordinator_sigkill_loses_no_committed_offset() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let (starved, result) = runtime.block_on(async {
        let mut lab = start_cluster(&bin_dir()).await?;
        let starved = GroupRunConfig {
            before_fault: Duration::from_secs(1),
            before_fault_limit: Duration::from_secs(1),
            min_acknowledged_before_kill: i64::MAX,
            ..GroupRunConfig::default()
        };
        let starved = run_on(&mut lab, &starved).await?;
        anyhow::Ok((starved, run_on(&mut lab, &GroupRunConfig::default()).await?))
    })?;
    eprintln!("{}", serde_json::to_string(&starved)?);
    eprintln!("{}", serde_json::to_string(&result)?);
    ensure!(starved.verdict.is_failure() && starved.killed.is_none(), "too few commits is no pass: {starved:?}");
    ensure!(starved.inconclusive.as_deref().is_some_and(|r| r.contains("needed")), "{starved:?}");

    ensure!(result.verdict == Verdict::Ok, "{}", insync_lab::groups::summary(&result));
    let killed = result.killed.context("a broker was killed")?;
    ensure!(result.named_before_kill.len() == 3, "every broker was asked: {result:?}");
    ensure!(result.named_before_kill.iter().all(|n| n.named == killed), "FindCoordinator named {killed}: {result:?}");
    ensure!(result.offsets_leader_before_kill == Some(killed), "the offsets partition's leader: {result:?}");
    ensure!(result.last_acknowledged_before_kill_by == Some(killed), "commits went through it: {result:?}");
    ensure!(result.acknowledged_before_kill >= 50, "commits acknowledged before the kill: {result:?}");
    ensure!(result.acknowledged_after_kill > 0, "commits acknowledged after it: {result:?}");
    ensure!(
        result.acknowledged_after_kill_by.keys().all(|b| *b != killed),
        "the commits after the kill went elsewhere: {result:?}"
    );
    // Check 1 saw the pre-kill state itself: the last acknowledged offset or the one in flight.
    let (low, high) = (result.last_acknowledged_before_kill, result.sent_before_kill);
    ensure!(
        result.fetched_after_failover.len() == 3
            && result.fetched_after_failover.iter().all(|o| o.is_some_and(|o| low <= o && o <= high)),
        "right after the failover: {:?} not in [{low}, {high}]",
        result.fetched_after_failover
    );
    ensure!(result.failover_coordinator.is_some_and(|c| c != killed), "{result:?}");
    let control = result.loss_control.as_ref().context("the negative control ran")?;
    ensure!(control.verdict == Verdict::Caught && control.wiped.len() == 3, "{control:?}");
    ensure!(control.found.iter().filter(|f| f.contains("(lost)")).count() == 3, "{control:?}");
    Ok(())
}
