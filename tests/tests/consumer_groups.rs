//! Kafka's classic consumer-group protocol against real processes: confluent-kafka consumers
//! (librdkafka inside, from `target/kafka-clients-venv`) in one group split a topic's
//! partitions, take over a killed member's within its session timeout, and a static member
//! (group.instance.id) that restarts gets its partitions back without a rebalance; `insync
//! group describe` shows the members, committed offsets and lag. A missing client is a
//! failure, never a skip.
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use insync_tests::{kafka_clients_python, run_bounded, text, wait_for, ClusterOptions, TestCluster};

const PARTITIONS: i32 = 6;
const SESSION_TIMEOUT_MS: u64 = 6_000;

/// A consumer printing `assigned P,P,...` / `revoked` as its assignment changes, and
/// `consumed P OFFSET` per record; commits every record synchronously (so lag can reach 0).
const CONSUMER: &str = r#"
import sys, signal
from confluent_kafka import Consumer
bootstrap, topic, group, client_id, instance = sys.argv[1:6]
conf = {"bootstrap.servers": bootstrap, "group.id": group, "client.id": client_id,
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "partition.assignment.strategy": "range",
        "topic.metadata.refresh.interval.ms": 2000}
if instance != "-":
    conf["group.instance.id"] = instance
consumer = Consumer(conf)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
def on_assign(c, parts):
    print("assigned " + ",".join(str(p.partition) for p in parts), flush=True)
def on_revoke(c, parts):
    print("revoked", flush=True)
consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
while not stop:
    msg = consumer.poll(0.2)
    if msg is None or msg.error():
        continue
    consumer.commit(message=msg, asynchronous=False)
    print(f"consumed {msg.partition()} {msg.offset()}", flush=True)
consumer.close()
print("closed", flush=True)
"#;

/// Produces `count` records spread over every partition.
const PRODUCE: &str = r#"
import sys
from confluent_kafka import Producer
bootstrap, topic, partitions, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
for i in range(count):
    p.produce(topic, value=f"v{i}".encode(), partition=i % partitions)
left = p.flush(30)
print(f"unflushed {left}")
"#;

/// confluent-kafka's AdminClient: `describe` lists the groups and describes "readers";
/// `delete` deletes it.
const ADMIN: &str = r#"
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
if sys.argv[2] == "describe":
    listed = admin.list_consumer_groups(request_timeout=15).result()
    for g in listed.valid:
        print(f"listed {g.group_id}")
    d = admin.describe_consumer_groups(["readers"], request_timeout=15)["readers"].result()
    print(f"members {len(d.members)} state {d.state.name}")
else:
    admin.delete_consumer_groups(["readers"], request_timeout=15)["readers"].result()
    print("deleted readers")
"#;

/// One consumer process and what it said.
struct Consumer {
    name: String,
    child: Child,
    /// Its latest assignment (None: none yet or revoked), and how many assignment events.
    state: Arc<Mutex<(Option<BTreeSet<i32>>, usize)>>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Consumer {
    fn start(python: &Path, bootstrap: &str, name: &str, instance: Option<&str>) -> anyhow::Result<Consumer> {
        let args = [bootstrap, "orders", "readers", name, instance.unwrap_or("-")];
        let mut child = Command::new(python)
            .arg("-u")
            .arg("-c")
            .arg(CONSUMER)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning consumer {name}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let state = Arc::new(Mutex::new((None, 0)));
        let shared = state.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(list) = line.strip_prefix("assigned ") {
                    s.0 = Some(list.split(',').filter_map(|p| p.trim().parse().ok()).collect());
                    s.1 += 1;
                } else if line == "assigned" {
                    s.0 = Some(BTreeSet::new());
                    s.1 += 1;
                } else if line == "revoked" {
                    s.0 = None;
                    s.1 += 1;
                }
            }
        });
        Ok(Consumer { name: name.to_string(), child, state })
    }

    fn assignment(&self) -> Option<BTreeSet<i32>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    fn events(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Some(assignments) once the consumers hold disjoint, non-empty sets covering every partition.
fn split(consumers: &[&Consumer]) -> Option<Vec<BTreeSet<i32>>> {
    let sets: Vec<BTreeSet<i32>> = consumers.iter().map(|c| c.assignment()).collect::<Option<_>>()?;
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    (sets.iter().all(|s| !s.is_empty()) && total == PARTITIONS as usize && union == all).then_some(sets)
}

fn wait_split(what: &str, consumers: &[&Consumer], timeout: Duration) -> anyhow::Result<Vec<BTreeSet<i32>>> {
    wait_for(what, timeout, || split(consumers)).with_context(|| {
        let states: Vec<String> = consumers.iter().map(|c| format!("{}: {:?}", c.name, c.assignment())).collect();
        states.join("; ")
    })
}

fn produce(python: &Path, bootstrap: &str, count: usize) -> anyhow::Result<()> {
    let out = run_bounded(
        Command::new(python).arg("-c").arg(PRODUCE).args([
            bootstrap,
            "orders",
            &PARTITIONS.to_string(),
            &count.to_string(),
        ]),
        None,
    );
    if !out.status.success() || !text(&out.stdout).contains("unflushed 0") {
        bail!("producing failed: {}{}", text(&out.stdout), text(&out.stderr));
    }
    Ok(())
}

#[test]
fn consumers_split_partitions_take_over_and_static_members_rejoin_without_rebalance() -> anyhow::Result<()> {
    let python = match kafka_clients_python() {
        Ok(python) => python,
        Err(why) => bail!("{why}"),
    };
    let started = Instant::now();
    let cluster = TestCluster::start(ClusterOptions {
        kafka_listeners: true,
        broker_args: vec![("--group-initial-rebalance-delay-ms".into(), "300".into())],
        ..ClusterOptions::default()
    })?;
    cluster.create_topic("orders", PARTITIONS as u32, 3, None)?;
    let bootstrap = cluster.kafka_bootstrap();
    produce(&python, &bootstrap, 60)?;

    // Two dynamic members and a static one split the six partitions.
    let a = Consumer::start(&python, &bootstrap, "consumer-a", None)?;
    let b = Consumer::start(&python, &bootstrap, "consumer-b", None)?;
    wait_split("two consumers to split the partitions", &[&a, &b], Duration::from_secs(30))?;
    let mut s = Consumer::start(&python, &bootstrap, "consumer-s", Some("static-s"))?;
    let sets = wait_split("three consumers to split the partitions", &[&a, &b, &s], Duration::from_secs(20))?;
    eprintln!("split: {sets:?} after {:?}", started.elapsed());

    // The static member restarts within its session: same partitions, nobody rebalances.
    let s_before = s.assignment();
    std::thread::sleep(Duration::from_secs(1)); // let the last commits and heartbeats settle
    let (a_events, b_events) = (a.events(), b.events());
    s.kill();
    let s2 = Consumer::start(&python, &bootstrap, "consumer-s", Some("static-s"))?;
    wait_for("the static member to get its partitions back", Duration::from_secs(15), || s2.assignment())?;
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s2.assignment(), s_before, "a static member keeps its assignment");
    assert_eq!((a.events(), b.events()), (a_events, b_events), "no rebalance for a static member's restart");

    // `insync group describe` shows every member and, once consumed, zero lag.
    let describe = wait_for("describe to show three members and no lag", Duration::from_secs(20), || {
        let out = cluster.insync(&["group", "describe", "readers", "--json"]);
        let line = text(&out.stdout);
        let value: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        let members = value["members"].as_array()?.len();
        let partitions = value["partitions"].as_array()?;
        let caught_up = partitions.len() == PARTITIONS as usize && partitions.iter().all(|p| p["lag"] == 0);
        (members == 3 && caught_up && value["state"] == "Stable").then_some(value)
    })?;
    let members = describe["members"].as_array().context("members")?;
    assert!(members.iter().any(|m| m["group_instance_id"] == "static-s" && m["client_id"] == "consumer-s"));
    assert!(members.iter().all(|m| !m["partitions"].as_array().is_some_and(Vec::is_empty)), "{describe}");
    let table = text(&cluster.insync(&["group", "describe", "readers"]).stdout);
    assert!(table.contains("LAG") && table.contains("consumer-a") && table.contains("static-s"), "{table}");
    let listed = text(&cluster.insync(&["group", "list"]).stdout);
    assert!(listed.contains("readers") && listed.contains("Stable"), "{listed}");
    let refused = cluster.insync(&["group", "delete", "readers"]);
    assert!(!refused.status.success(), "a group with members is not deleted");

    // A dynamic member is killed: the others take its partitions within the session timeout.
    let mut b = b;
    let killed = Instant::now();
    b.kill();
    let limit = Duration::from_millis(SESSION_TIMEOUT_MS) + Duration::from_secs(8);
    let sets = wait_split("the survivors to take over", &[&a, &s2], limit)?;
    eprintln!("take-over after {:?}: {sets:?}", killed.elapsed());

    // Kafka's own admin APIs: ListGroups (every broker), DescribeGroups, DeleteGroups.
    let out = run_bounded(Command::new(&python).arg("-c").arg(ADMIN).args([bootstrap.as_str(), "describe"]), None);
    let said = text(&out.stdout);
    assert!(said.contains("listed readers") && said.contains("members 2 state STABLE"), "{said}{}", text(&out.stderr));
    // Everyone stops (the static member does not leave: its session expires), then the
    // Empty group is deleted with its offsets.
    for consumer in [&a, &s2] {
        let _ = Command::new("kill").arg("-TERM").arg(consumer.child.id().to_string()).status();
    }
    wait_for("the group to be empty", Duration::from_secs(20), || {
        text(&cluster.insync(&["group", "list", "--state", "Empty"]).stdout).contains("readers").then_some(())
    })?;
    let out = run_bounded(Command::new(&python).arg("-c").arg(ADMIN).args([bootstrap.as_str(), "delete"]), None);
    assert!(text(&out.stdout).contains("deleted readers"), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!text(&cluster.insync(&["group", "list"]).stdout).contains("readers"));
    eprintln!("consumer groups test took {:?}", started.elapsed());
    Ok(())
}
