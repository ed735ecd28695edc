//! Topic deletion against real processes: `insync topic delete` during a produce stream, with a
//! follower down, with a broker that crashed half-way through removing a replica, and a
//! re-created name that must never show the old incarnation's records. What clients see
//! (every record answered, the topic gone from `topic list`, brokers up) and what each
//! broker leaves on disk (no `{topic}-{partition}` and no `*-delete` directory) are both
//! checked, since a deleted topic that leaves its logs behind fills disks silently.
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use insync_tests::{text, wait_for, ClusterOptions, StreamingProducer, TestCluster};
use serde_json::{json, Value};

const ALL_BROKERS: [usize; 3] = [1, 2, 3];

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Sends `values` with acks=all; every one must be acknowledged. Returns their offsets.
fn produce_acked(cluster: &TestCluster, topic: &str, values: &[String], delivery_ms: &str) -> anyhow::Result<Vec<i64>> {
    let input: String = values.iter().map(|v| format!("{v}\n")).collect();
    let args = ["--topic", topic, "--acks", "all", "--delivery-timeout-ms", delivery_ms];
    let out = cluster.producer(&args, Some(&input));
    let stdout = text(&out.stdout);
    let offsets: Vec<i64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .filter_map(|l| l.split("offset=").nth(1)?.trim().parse().ok())
        .collect();
    anyhow::ensure!(
        out.status.success() && offsets.len() == values.len(),
        "{} of {} acks=all records acknowledged on {topic}: {stdout}{}",
        offsets.len(),
        values.len(),
        text(&out.stderr)
    );
    Ok(offsets)
}

/// The values a consumer reads from the beginning (until `expected` or `idle_ms` of quiet).
fn consumed(cluster: &TestCluster, topic: &str, expected: usize, idle_ms: u64) -> Vec<String> {
    cluster
        .consume_all(topic, expected, idle_ms)
        .iter()
        .map(|r| r["value"].as_str().unwrap_or("").to_string())
        .collect()
}

/// `insync topic delete NAME [extra]`, which must succeed; returns its stdout.
fn delete_topic(cluster: &TestCluster, topic: &str, extra: &[&str]) -> anyhow::Result<String> {
    let mut args = vec!["topic", "delete", topic];
    args.extend_from_slice(extra);
    let out = cluster.insync(&args);
    anyhow::ensure!(out.status.success(), "topic delete {topic} failed: {}{}", text(&out.stdout), text(&out.stderr));
    Ok(text(&out.stdout))
}

/// `insync topic delete NAME`'s answer: `deleted topic NAME`, possibly followed by more
/// detail (the topic id), which must then be the id that was deleted.
fn assert_deleted_line(out: &str, topic: &str, id: &str) {
    let line = out.trim();
    let rest = line.strip_prefix(&format!("deleted topic {topic}"));
    assert!(rest.is_some_and(|r| r.is_empty() || r.starts_with(' ')), "delete answered {line:?}");
    assert!(!line.contains("topic id") || line.contains(id), "delete names another topic id than {id}: {line:?}");
}

/// Waits until `insync topic list` answers without `topic`. `describe` of a deleted topic
/// may print nothing or fail; the list is the stable question.
fn wait_unlisted(cluster: &TestCluster, topic: &str) -> anyhow::Result<()> {
    wait_for(&format!("{topic} gone from `insync topic list`"), Duration::from_secs(10), || {
        let out = cluster.insync(&["topic", "list"]);
        (out.status.success() && !text(&out.stdout).lines().any(|l| l.trim() == topic)).then_some(())
    })
}

/// The one topic id every partition row of `describe` carries, if there is exactly one.
fn described_topic_id(cluster: &TestCluster, topic: &str) -> Option<String> {
    let rows = cluster.describe(topic).ok()?;
    let ids: BTreeSet<&str> = rows.iter().map(|r| r["topic_id"].as_str().unwrap_or("")).collect();
    let id = ids.first().filter(|id| ids.len() == 1 && !id.is_empty())?;
    Some(id.to_string())
}

/// Waits for `describe` to show a topic id other than `not`: brokers answer from metadata
/// that may still hold the previous incarnation for a moment after a re-creation.
fn wait_topic_id(cluster: &TestCluster, topic: &str, not: Option<&str>) -> anyhow::Result<String> {
    let what = format!("a topic id of {topic} in describe other than {not:?}");
    wait_for(&what, Duration::from_secs(10), || {
        described_topic_id(cluster, topic).filter(|id| Some(id.as_str()) != not)
    })
}

/// The `topic_id: <uuid>` line of a replica directory's `partition.metadata`.
fn metadata_topic_id(replica_dir: &Path) -> Option<String> {
    let content = std::fs::read_to_string(replica_dir.join("partition.metadata")).ok()?;
    content.lines().find_map(|l| l.strip_prefix("topic_id:")).map(|id| id.trim().to_string())
}

/// Waits until every broker of `brokers` holds `{topic}-{p}` for each partition, its
/// `partition.metadata` naming `id`: the state a later deletion has to undo.
fn wait_replica_ids(
    cluster: &TestCluster,
    brokers: &[usize],
    topic: &str,
    partitions: i32,
    id: &str,
) -> anyhow::Result<()> {
    wait_for(
        &format!("partition.metadata of {topic} naming {id} on brokers {brokers:?}"),
        Duration::from_secs(15),
        || {
            let all = brokers.iter().all(|&b| {
                (0..partitions).all(|p| {
                    let dir = cluster.broker_data_dir(b).join(format!("{topic}-{p}"));
                    metadata_topic_id(&dir).as_deref() == Some(id)
                })
            });
            all.then_some(())
        },
    )
}

/// The entries of broker `n`'s data dir that belong to `topic`: `{topic}-{p}` replicas and
/// `{topic}-{p}.{32 hex}-delete` ones awaiting removal.
fn topic_dirs(cluster: &TestCluster, n: usize, topic: &str) -> Vec<String> {
    let prefix = format!("{topic}-");
    let entries = std::fs::read_dir(cluster.broker_data_dir(n)).expect("list a broker's data dir");
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix))
        .collect();
    names.sort();
    names
}

fn leftovers(cluster: &TestCluster, brokers: &[usize], topic: &str) -> Vec<(usize, Vec<String>)> {
    brokers.iter().map(|&b| (b, topic_dirs(cluster, b, topic))).filter(|(_, d)| !d.is_empty()).collect()
}

/// Waits until none of `brokers` has any directory of `topic`, `-delete` ones included
/// (those are removed asynchronously, so they count as leftovers until they are gone).
fn wait_no_topic_dirs(cluster: &TestCluster, brokers: &[usize], topic: &str, timeout: Duration) -> anyhow::Result<()> {
    let what = format!("no {topic}-* directory on brokers {brokers:?}");
    wait_for(&what, timeout, || leftovers(cluster, brokers, topic).is_empty().then_some(()))
        .map_err(|e| anyhow::anyhow!("{e}; still there: {:?}", leftovers(cluster, brokers, topic)))
}

fn assert_brokers_running(cluster: &mut TestCluster) {
    for n in ALL_BROKERS {
        assert!(cluster.broker_running(n), "broker {n} exited after the deletion:\n{}", cluster.log_tails(30));
    }
}

fn send_all(producer: &mut StreamingProducer, values: &[String], every: Duration) -> anyhow::Result<()> {
    for v in values {
        producer.send(v)?;
        std::thread::sleep(every);
    }
    Ok(())
}

/// A topic that lives through the other topic's deletion. Its replica on broker 3 gets a
/// marker file no broker writes: a clean-up that removed the live directory and fetched it
/// back from the leader would look healthy through every client, but lose the marker.
struct Bystander {
    id: String,
    values: Vec<String>,
}

const BYSTANDER: &str = "bystander";

fn marker(cluster: &TestCluster) -> std::path::PathBuf {
    cluster.broker_data_dir(3).join(format!("{BYSTANDER}-0")).join("bystander.marker")
}

fn bystander(cluster: &TestCluster) -> anyhow::Result<Bystander> {
    cluster.create_topic(BYSTANDER, 1, 3, Some(2))?;
    let id = wait_topic_id(cluster, BYSTANDER, None)?;
    let values = values("kept", 20);
    produce_acked(cluster, BYSTANDER, &values, "30000")?;
    wait_replica_ids(cluster, &ALL_BROKERS, BYSTANDER, 1, &id)?;
    std::fs::write(marker(cluster), b"planted by the test")?;
    Ok(Bystander { id, values })
}

/// The bystander's replica on broker 3 is the same directory, with the same topic id, back
/// in the ISR, and every acknowledged record is readable.
fn check_bystander(cluster: &TestCluster, b: &Bystander) -> anyhow::Result<()> {
    assert!(marker(cluster).exists(), "broker 3 removed the live replica {BYSTANDER}-0 while cleaning up");
    let dir = cluster.broker_data_dir(3).join(format!("{BYSTANDER}-0"));
    assert_eq!(metadata_topic_id(&dir).as_deref(), Some(b.id.as_str()));
    cluster.wait_isr(BYSTANDER, 0, &[1, 2, 3], Duration::from_secs(30))?;
    assert_eq!(consumed(cluster, BYSTANDER, b.values.len() + 1, 2_000), b.values);
    Ok(())
}

#[test]
fn delete_during_produce_answers_every_record_and_removes_every_replica() -> anyhow::Result<()> {
    const T: &str = "doomed";
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic(T, 3, 3, Some(2))?;
    let id = wait_topic_id(&cluster, T, None)?;
    // Warm-up with a generous delivery timeout, so the short one of the stream below is
    // never spent on a topic that is still being set up.
    produce_acked(&cluster, T, &values("warm", 30), "30000")?;
    wait_replica_ids(&cluster, &ALL_BROKERS, T, 3, &id)?;
    let args = ["--topic", T, "--acks", "all", "--delivery-timeout-ms", "5000", "--timeout-ms", "2000"];
    let mut producer = cluster.streaming_producer(&args)?;
    send_all(&mut producer, &values("before", 100), Duration::ZERO)?;
    assert_eq!(producer.wait_answers(100, Duration::from_secs(30)), 100, "answers before the delete");
    let refused: Vec<_> = producer.received.iter().filter(|(_, l)| !l.starts_with("ok ")).collect();
    assert!(refused.is_empty(), "a healthy topic acknowledges acks=all: {refused:?}");

    // Records keep coming (from another thread, for about half a second) while the delete is
    // issued and reaches the brokers: each may be acknowledged (it beat the deletion) or
    // refused, but each must be answered.
    let deleted = std::thread::scope(|s| {
        let sender = s.spawn(|| send_all(&mut producer, &values("during", 100), Duration::from_millis(5)));
        std::thread::sleep(Duration::from_millis(100));
        let deleted = delete_topic(&cluster, T, &[]);
        sender.join().expect("sender thread")?;
        deleted
    })?;
    let deleted_at = Instant::now();
    assert_deleted_line(&deleted, T, &id);
    wait_unlisted(&cluster, T)?;
    wait_no_topic_dirs(&cluster, &ALL_BROKERS, T, Duration::from_secs(15).saturating_sub(deleted_at.elapsed()))?;
    // No broker holds a replica any more: these can only be refused.
    send_all(&mut producer, &values("late", 20), Duration::ZERO)?;
    let answers = producer.finish(Duration::from_secs(60));

    assert_eq!(answers.len(), 220, "one answer per record: {:?}", answers.last());
    let during_ok = answers[100..200].iter().filter(|(_, l)| l.starts_with("ok ")).count();
    eprintln!("records sent during the deletion: {during_ok} of 100 acknowledged; last answer {:?}", answers[219].1);
    let odd: Vec<_> = answers.iter().filter(|(_, l)| !l.starts_with("ok ") && !l.starts_with("error ")).collect();
    assert!(odd.is_empty(), "every answer is ok or error: {odd:?}");
    let late_ok: Vec<_> = answers[200..].iter().filter(|(_, l)| !l.starts_with("error ")).collect();
    assert!(late_ok.is_empty(), "records for a deleted topic acknowledged: {late_ok:?}");
    assert_brokers_running(&mut cluster);
    // The refused late records re-created nothing on disk, and nothing is readable.
    assert!(leftovers(&cluster, &ALL_BROKERS, T).is_empty(), "{:?}", leftovers(&cluster, &ALL_BROKERS, T));
    assert!(consumed(&cluster, T, 1, 1_000).is_empty(), "a deleted topic reads as nothing");
    Ok(())
}

#[test]
fn delete_while_a_follower_is_down_cleans_it_up_when_it_returns() -> anyhow::Result<()> {
    const T: &str = "orphan";
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    let kept = bystander(&cluster)?;
    cluster.create_topic(T, 3, 3, Some(2))?;
    let id = wait_topic_id(&cluster, T, None)?;
    produce_acked(&cluster, T, &values("v", 30), "30000")?;
    wait_replica_ids(&cluster, &ALL_BROKERS, T, 3, &id)?;

    cluster.kill_broker(3);
    let answer: Value = serde_json::from_str(delete_topic(&cluster, T, &["--json"])?.trim())?;
    // `{"deleted": NAME}`; a reader of JSON lines takes added fields, but a topic id given
    // must be the one deleted.
    assert_eq!(answer["deleted"], json!(T), "{answer}");
    assert!(answer.get("topic_id").is_none_or(|t| *t == json!(id)), "{answer}");
    wait_unlisted(&cluster, T)?;
    wait_no_topic_dirs(&cluster, &[1, 2], T, Duration::from_secs(15))?;
    // Broker 3 missed the deletion: its replicas are as it left them, strays now. (A broker
    // SIGKILLed after seeing the deletion but before renaming leaves exactly this too.)
    assert_eq!(topic_dirs(&cluster, 3, T), ["orphan-0", "orphan-1", "orphan-2"]);

    cluster.start_broker(3)?;
    cluster.wait_alive_brokers(3, Duration::from_secs(30))?;
    // Their partition.metadata names a topic id the metadata no longer has: removed.
    wait_no_topic_dirs(&cluster, &[3], T, Duration::from_secs(30))?;
    check_bystander(&cluster, &kept)?;
    assert!(leftovers(&cluster, &ALL_BROKERS, T).is_empty(), "{:?}", leftovers(&cluster, &ALL_BROKERS, T));
    wait_unlisted(&cluster, T)?;
    assert_brokers_running(&mut cluster);
    Ok(())
}

/// Creates `topic` again right after its deletion. Kafka (KRaft) allows that at once; the
/// retry only rides out a controller that needs a moment, within a deadline.
fn recreate(cluster: &TestCluster, topic: &str, old_id: &str) -> anyhow::Result<String> {
    wait_for(&format!("{topic} re-created"), Duration::from_secs(10), || {
        cluster.create_topic(topic, 1, 3, Some(2)).ok()
    })?;
    let new_id = wait_topic_id(cluster, topic, Some(old_id))?;
    assert_ne!(new_id, old_id, "a re-created topic gets a new topic id");
    Ok(new_id)
}

#[test]
fn recreated_topic_gets_a_new_id_and_never_sees_old_data() -> anyhow::Result<()> {
    const T: &str = "reborn";
    let cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic(T, 1, 3, Some(2))?;
    let old_id = wait_topic_id(&cluster, T, None)?;
    let old = values("old", 20);
    produce_acked(&cluster, T, &old, "30000")?;
    wait_replica_ids(&cluster, &ALL_BROKERS, T, 1, &old_id)?;
    assert_eq!(consumed(&cluster, T, old.len(), 3_000), old, "the consumer reads the first incarnation");

    assert_deleted_line(&delete_topic(&cluster, T, &[])?, T, &old_id);
    let again = cluster.insync(&["topic", "delete", T]);
    assert!(!again.status.success(), "deleting a deleted topic fails: {}", text(&again.stdout));
    assert!(text(&again.stderr).contains("UNKNOWN_TOPIC_OR_PARTITION"), "{}", text(&again.stderr));

    let new_id = recreate(&cluster, T, &old_id)?;
    // Every broker has the new replica before anyone reads: a broker whose metadata still
    // lagged behind the deletion could otherwise answer from the old log by name.
    wait_replica_ids(&cluster, &ALL_BROKERS, T, 1, &new_id)?;
    let stale: Vec<String> = consumed(&cluster, T, 1, 2_000);
    assert!(stale.is_empty(), "the new incarnation starts empty: {stale:?}");
    let new = values("new", 10);
    let offsets = produce_acked(&cluster, T, &new, "30000")?;
    assert_eq!(offsets, (0..10).collect::<Vec<i64>>(), "the new log starts at offset 0");
    // One more than expected, so old records after the new ones would show up too.
    assert_eq!(consumed(&cluster, T, new.len() + 1, 2_000), new);
    wait_for("only the new replica directory on every broker", Duration::from_secs(15), || {
        ALL_BROKERS.iter().all(|&b| topic_dirs(&cluster, b, T) == ["reborn-0"]).then_some(())
    })?;
    Ok(())
}

/// Waits until broker 3's log end offset equals the leader's, and returns it.
fn wait_broker_3_caught_up(cluster: &TestCluster, topic: &str) -> anyhow::Result<i64> {
    wait_for("broker 3's LEO equal to the leader's", Duration::from_secs(30), || {
        let p = cluster.partition(topic, 0).ok()?;
        let leos = p["log_end_offsets"].as_object()?;
        let leader = leos.get(&p["leader"].as_i64()?.to_string())?.as_i64()?;
        (leos.get("3")?.as_i64()? == leader).then_some(leader)
    })
}

#[test]
fn recreated_topic_replaces_the_old_log_of_a_broker_that_was_down() -> anyhow::Result<()> {
    const T: &str = "phoenix";
    // Kafka creates RF=3 only with 3 unfenced brokers: a long session keeps the killed
    // broker 3 unfenced while the topic is deleted and re-created, so it is a replica of
    // the new incarnation while its disk still holds the old one.
    let options = ClusterOptions { broker_session_timeout_ms: 20_000, ..Default::default() };
    let mut cluster = TestCluster::start(options)?;
    cluster.create_topic(T, 1, 3, Some(2))?;
    let old_id = wait_topic_id(&cluster, T, None)?;
    // More old records than new: a broker 3 that kept its old log would show a longer one.
    produce_acked(&cluster, T, &values("old", 30), "30000")?;
    wait_replica_ids(&cluster, &ALL_BROKERS, T, 1, &old_id)?;
    wait_broker_3_caught_up(&cluster, T)?;

    cluster.kill_broker(3);
    delete_topic(&cluster, T, &[])?;
    let new_id = recreate(&cluster, T, &old_id)?;
    let replicas = cluster.partition(T, 0)?["replicas"].clone();
    assert!(replicas.as_array().is_some_and(|r| r.contains(&json!(3))), "broker 3 hosts the new one: {replicas}");
    // The leader waits out broker 3 (ISR shrink after the lag time, or a failover once it is
    // fenced, if it leads): a delivery timeout beyond the session timeout.
    let new = values("new", 10);
    assert_eq!(produce_acked(&cluster, T, &new, "60000")?, (0..10).collect::<Vec<i64>>());

    cluster.start_broker(3)?;
    cluster.wait_isr(T, 0, &[1, 2, 3], Duration::from_secs(40))?;
    assert_eq!(wait_broker_3_caught_up(&cluster, T)?, 10, "broker 3 holds the new log, not the old one");
    wait_replica_ids(&cluster, &[3], T, 1, &new_id)?;
    wait_for("broker 3 left with phoenix-0 only", Duration::from_secs(15), || {
        (topic_dirs(&cluster, 3, T) == ["phoenix-0"]).then_some(())
    })?;
    // Broker 3's own files, read directly: exactly the new records at offsets 0..10.
    let on_disk = wait_for("broker 3's log readable", Duration::from_secs(10), || {
        insync_lab::cluster::read_replica_dir(&cluster.broker_data_dir(3), 3, T, 0).ok()
    })?;
    let expected: Vec<(i64, String)> = (0..).zip(new.iter().cloned()).collect();
    assert_eq!(on_disk.records, expected);
    assert_eq!(consumed(&cluster, T, new.len() + 1, 2_000), new);
    Ok(())
}

#[test]
fn crash_between_rename_and_delete_leaves_no_trace() -> anyhow::Result<()> {
    const T: &str = "halfgone";
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    let kept = bystander(&cluster)?;
    cluster.create_topic(T, 1, 3, Some(2))?;
    let id = wait_topic_id(&cluster, T, None)?;
    produce_acked(&cluster, T, &values("v", 20), "30000")?;
    wait_replica_ids(&cluster, &ALL_BROKERS, T, 1, &id)?;

    cluster.kill_broker(3);
    // The exact on-disk state of a broker SIGKILLed between renaming a deleted replica to
    // `{topic}-{partition}.{32 hex}-delete` and removing it: the rename is atomic, so the
    // directory is whole under its new name. (A kill *before* the rename leaves `halfgone-0`
    // as it was, the stray that the follower-down test sees removed.)
    let data = cluster.broker_data_dir(3);
    let renamed = format!("{T}-0.{:032x}-delete", rand::random::<u128>());
    std::fs::rename(data.join(format!("{T}-0")), data.join(&renamed))?;
    // The controller's side of that deletion, which the broker had seen before it died.
    delete_topic(&cluster, T, &[])?;
    wait_unlisted(&cluster, T)?;
    wait_no_topic_dirs(&cluster, &[1, 2], T, Duration::from_secs(15))?;
    assert_eq!(topic_dirs(&cluster, 3, T), [renamed]);

    cluster.start_broker(3)?;
    cluster.wait_alive_brokers(3, Duration::from_secs(30))?;
    // Start-up removes every `*-delete` directory, whatever the metadata says.
    wait_no_topic_dirs(&cluster, &[3], T, Duration::from_secs(30))?;
    check_bystander(&cluster, &kept)?;
    assert!(leftovers(&cluster, &ALL_BROKERS, T).is_empty(), "{:?}", leftovers(&cluster, &ALL_BROKERS, T));
    assert_brokers_running(&mut cluster);
    Ok(())
}

/// `insync topic add-partitions`: Kafka's CreatePartitions, only growth, the new partitions
/// placed like creation (leaders spread), served at once, the old partition untouched.
#[test]
fn add_partitions_grows_the_topic_and_the_new_partitions_serve() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic("grow", 1, 3, Some(2))?;
    let old = values("old", 10);
    produce_acked(&cluster, "grow", &old, "30000")?;

    let preview = cluster.insync(&["topic", "add-partitions", "grow", "--partitions", "3", "--validate-only"]);
    assert!(preview.status.success(), "{}", text(&preview.stderr));
    assert_eq!(cluster.describe("grow")?.len(), 1, "validate-only adds nothing");

    let out = cluster.insync(&["topic", "add-partitions", "grow", "--partitions", "3", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows = cluster.describe("grow")?;
    assert_eq!(rows.len(), 3);
    let leaders: BTreeSet<i64> = rows.iter().filter_map(|r| r["leader"].as_i64()).collect();
    assert_eq!(leaders.len(), 3, "one leader per broker, as creation places them: {rows:?}");
    assert_eq!(rows[0]["leader_epoch"].as_i64(), Some(0), "partition 0 untouched");
    for partition in ["1", "2"] {
        let out = cluster.producer(&["--topic", "grow", "--acks", "all", "--partition", partition, "new"], None);
        assert!(text(&out.stdout).starts_with(&format!("ok partition={partition} offset=0")), "{}", text(&out.stdout));
    }
    assert_eq!(consumed(&cluster, "grow", 12, 3_000).len(), 12, "old and new records all readable");

    for (count, words) in [("3", "already has 3"), ("2", "would not be an increase")] {
        let out = cluster.insync(&["topic", "add-partitions", "grow", "--partitions", count]);
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(stderr.contains("INVALID_PARTITIONS") && stderr.contains(words), "{count}: {stderr}");
    }
    let unknown = cluster.insync(&["topic", "add-partitions", "nosuch", "--partitions", "2"]);
    assert!(text(&unknown.stderr).contains("UNKNOWN_TOPIC_OR_PARTITION"), "{}", text(&unknown.stderr));
    Ok(())
}
