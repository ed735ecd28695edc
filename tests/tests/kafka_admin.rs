//! The Kafka admin APIs on insync's Kafka listener (CreateTopics, DeleteTopics,
//! ElectLeaders, DescribeCluster) driven by unmodified admin clients, as their users drive
//! them: confluent-kafka's `AdminClient` (librdkafka inside) and kafka-python's
//! `KafkaAdminClient`, from the virtualenv `scripts/install-kafka-clients.sh` makes (run
//! here if the clients are missing; a test never passes by skipping). What the clients
//! report is checked against insync's own view (`insync topic describe --json`,
//! `insync topic list`), so a create or delete that only looked fine to the client fails.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Context;
use insync_tests::{kafka_clients_python, run_bounded, text, wait_for, ClusterOptions, TestCluster};
use serde_json::Value;

/// confluent-kafka's AdminClient, one call per run, its outcome as one JSON line:
/// `create|validate NAME PARTITIONS RF [KEY=VALUE...]`, `delete NAME`, `list`,
/// `describe NAME`, `cluster`, `elect preferred|unclean [NAME PARTITION...]`,
/// `configs topic|broker NAME` (describe_configs), `alter|alter-validate NAME KEY=VALUE|KEY...`
/// (incremental_alter_configs: SET, or DELETE for a bare KEY), `grow|grow-validate NAME COUNT`
/// (create_partitions), `delete-records NAME PARTITION OFFSET`.
const CONFLUENT_ADMIN: &str = r#"
import json, sys, uuid
from confluent_kafka import ElectionType, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewPartitions,
                                   NewTopic, ResourceType)

bootstrap, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
admin = AdminClient({"bootstrap.servers": bootstrap})

def failure(e):
    err = e.args[0] if e.args else None
    if hasattr(err, "name"):
        return {"error": err.name(), "code": err.code(), "message": err.str()}
    return {"error": type(e).__name__, "message": str(e)}

def outcome(future):
    try:
        future.result(timeout=60)
        return {"error": None}
    except KafkaException as e:
        return failure(e)

def topic_id(u):
    return str(uuid.UUID(int=((u.get_most_significant_bits() % 2**64) << 64) | (u.get_least_significant_bits() % 2**64)))

if command in ("create", "validate"):
    name, partitions, rf = args[0], int(args[1]), int(args[2])
    config = dict(kv.split("=", 1) for kv in args[3:])
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf, config=config)],
                                  operation_timeout=30, request_timeout=60, validate_only=command == "validate")
    print(json.dumps(outcome(futures[name])))
elif command == "delete":
    print(json.dumps(outcome(admin.delete_topics([args[0]], operation_timeout=30, request_timeout=60)[args[0]])))
elif command == "list":
    md = admin.list_topics(timeout=30)
    print(json.dumps({"topics": {t: len(m.partitions) for t, m in md.topics.items()}}))
elif command == "describe":
    try:
        d = admin.describe_topics(TopicCollection([args[0]]), request_timeout=30)[args[0]].result()
        print(json.dumps({"name": d.name, "topic_id": topic_id(d.topic_id),
                          "partitions": [{"id": p.id, "leader": p.leader.id if p.leader else -1,
                                          "replicas": [r.id for r in p.replicas]} for p in d.partitions]}))
    except KafkaException as e:
        print(json.dumps(failure(e)))
elif command == "cluster":
    d = admin.describe_cluster(request_timeout=30).result()
    print(json.dumps({"cluster_id": d.cluster_id, "controller": d.controller.id if d.controller else None,
                      "nodes": sorted([n.id, n.host, n.port] for n in d.nodes)}))
elif command == "elect":
    kind = ElectionType.PREFERRED if args[0] == "preferred" else ElectionType.UNCLEAN
    # No topic: every partition (a null topic_partitions on the wire).
    partitions = [TopicPartition(args[1], int(p)) for p in args[2:]] if len(args) > 1 else None
    try:
        # No keywords: confluent-kafka 2.16.1's C binding refuses any (its format string is off).
        results = admin.elect_leaders(kind, partitions).result(timeout=60)
        # Each value is a KafkaError (the docstring says KafkaException) or None.
        name = lambda e: None if e is None else e.name() if hasattr(e, "name") else failure(e)["error"]
        print(json.dumps({"partitions": {f"{tp.topic}-{tp.partition}": name(e) for tp, e in results.items()}}))
    except KafkaException as e:
        print(json.dumps(failure(e)))
elif command == "configs":
    kind = ResourceType.TOPIC if args[0] == "topic" else ResourceType.BROKER
    resource = ConfigResource(kind, args[1])
    try:
        entries = admin.describe_configs([resource], request_timeout=30)[resource].result(timeout=60)
        print(json.dumps({"configs": {k: {"value": e.value, "source": ConfigSource(e.source).name, "read_only": e.is_read_only,
                                          "synonyms": sorted(e.synonyms)} for k, e in entries.items()}}))
    except KafkaException as e:
        print(json.dumps(failure(e)))
elif command in ("alter", "alter-validate"):
    ops = [ConfigEntry(kv.split("=", 1)[0], kv.split("=", 1)[1], incremental_operation=AlterConfigOpType.SET)
           if "=" in kv else ConfigEntry(kv, None, incremental_operation=AlterConfigOpType.DELETE) for kv in args[1:]]
    resource = ConfigResource(ResourceType.TOPIC, args[0], incremental_configs=ops)
    futures = admin.incremental_alter_configs([resource], validate_only=command == "alter-validate", request_timeout=60)
    print(json.dumps(outcome(futures[resource])))
elif command in ("grow", "grow-validate"):
    futures = admin.create_partitions([NewPartitions(args[0], int(args[1]))], validate_only=command == "grow-validate",
                                      operation_timeout=30, request_timeout=60)
    print(json.dumps(outcome(futures[args[0]])))
elif command == "delete-records":
    tp = TopicPartition(args[0], int(args[1]), int(args[2]))
    try:
        deleted = admin.delete_records([tp], request_timeout=30, operation_timeout=30)[tp].result(timeout=60)
        print(json.dumps({"error": None, "low_watermark": deleted.low_watermark}))
    except KafkaException as e:
        print(json.dumps(failure(e)))
"#;

/// kafka-python's KafkaAdminClient with `raise_errors=False`, so the broker's codes come back
/// as they are: `create|validate NAME PARTITIONS RF [KEY=VALUE...]`, `delete NAME`,
/// `delete-id UUID`, `list`, `describe NAME`, `cluster`, `elect NAME PARTITION...`,
/// `configs topic|broker NAME` (describe_configs), `alter|alter-validate NAME KEY=VALUE...`
/// (legacy alter_configs), `grow|grow-validate NAME COUNT` (create_partitions),
/// `delete-records NAME PARTITION OFFSET`; one JSON line per run.
const KAFKA_PYTHON_ADMIN: &str = r#"
import json, sys, uuid
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

bootstrap, command, args = sys.argv[1].split(","), sys.argv[2], sys.argv[3:]
admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=60000)

def show(value):
    print(json.dumps(value, default=str))

if command in ("create", "validate"):
    name, partitions, rf = args[0], int(args[1]), int(args[2])
    configs = dict(kv.split("=", 1) for kv in args[3:])
    result = admin.create_topics({name: {"num_partitions": partitions, "replication_factor": rf, "configs": configs}},
                                 timeout_ms=30000, validate_only=command == "validate", raise_errors=False)
    show(result["topics"][0])
elif command in ("delete", "delete-id"):
    topic = uuid.UUID(args[0]) if command == "delete-id" else args[0]
    show(admin.delete_topics([topic], timeout_ms=30000, raise_errors=False)["topics"][0])
elif command == "list":
    show(sorted(admin.list_topics()))
elif command == "describe":
    t = admin.describe_topics([args[0]])[0]
    show({"error_code": t["error_code"], "topic_id": t.get("topic_id"),
          "partitions": sorted([p["partition_index"], p["leader_id"], p["replica_nodes"]] for p in t["partitions"])})
elif command == "cluster":
    show(admin.describe_cluster())
elif command == "elect":
    r = admin.elect_leaders(0, {args[0]: [int(p) for p in args[1:]]}, timeout_ms=30000, raise_errors=False)
    show({"error_code": getattr(r, "error_code", 0),
          "partitions": {str(p.partition_id): p.error_code
                         for t in r.replica_election_results for p in t.partition_result}})
elif command == "configs":
    kind = ConfigResourceType.TOPIC if args[0] == "topic" else ConfigResourceType.BROKER
    try:
        result = admin.describe_configs([ConfigResource(kind, args[1])], include_synonyms=True, config_filter="all")
        show({"configs": {k: {"value": c["value"], "source": c["config_source"], "read_only": c["read_only"],
                              "synonyms": sorted(s["name"] for s in c.get("synonyms", []))}
                          for k, c in result[args[0]][args[1]].items()}})
    except KafkaError as e:
        show({"error": type(e).__name__, "code": getattr(e, "errno", None), "message": str(e)})
elif command in ("alter", "alter-validate"):
    configs = dict(kv.split("=", 1) for kv in args[1:])
    # Legacy AlterConfigs (the client adds the topic's other overrides, since it replaces all);
    # raise_on_unknown=False so that the broker, not the client, judges the keys.
    result = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, args[0], configs)],
                                 validate_only=command == "alter-validate", raise_on_unknown=False, incremental=False)
    show({"result": result["topic"][args[0]]})
elif command in ("grow", "grow-validate"):
    r = admin.create_partitions({args[0]: int(args[1])}, timeout_ms=30000, validate_only=command == "grow-validate",
                                raise_errors=False)
    show({"error_code": r.results[0].error_code, "error_message": r.results[0].error_message})
elif command == "delete-records":
    tp = TopicPartition(args[0], int(args[1]))
    try:
        result = admin.delete_records({tp: int(args[2])}, timeout_ms=30000)
        show({"error_code": result[tp]["error_code"], "low_watermark": result[tp]["low_watermark"]})
    except KafkaError as e:
        show({"error": type(e).__name__, "code": getattr(e, "errno", None)})
"#;

fn kafka_cluster() -> anyhow::Result<TestCluster> {
    TestCluster::start(ClusterOptions { kafka_listeners: true, ..ClusterOptions::default() })
}

/// Runs one admin client call and parses its JSON line.
fn admin(python: &Path, script: &str, bootstrap: &str, args: &[&str]) -> anyhow::Result<Value> {
    let out = run_bounded(Command::new(python).arg("-u").arg("-c").arg(script).arg(bootstrap).args(args), None);
    anyhow::ensure!(out.status.success(), "admin client {args:?} failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    let line = text(&out.stdout).lines().last().map(str::to_string).unwrap_or_default();
    serde_json::from_str(&line).with_context(|| format!("admin client {args:?} printed {line:?}"))
}

/// `insync topic list`: the topic names the controller's metadata has.
fn insync_topics(cluster: &TestCluster) -> anyhow::Result<Vec<String>> {
    let out: Output = cluster.insync(&["topic", "list"]);
    anyhow::ensure!(out.status.success(), "insync topic list: {}", text(&out.stderr));
    Ok(text(&out.stdout).lines().map(str::to_string).collect())
}

/// `insync topic describe NAME --json` as (partition count, replication factor, min ISR, id).
fn insync_topic(cluster: &TestCluster, name: &str) -> anyhow::Result<(usize, usize, i64, String)> {
    let partitions = cluster.describe(name)?;
    let first = partitions.first().context("no partitions")?;
    let rf = first["replicas"].as_array().map_or(0, Vec::len);
    let min_isr = first["min_insync_replicas"].as_i64().unwrap_or(-1);
    let id = first["topic_id"].as_str().unwrap_or_default().to_string();
    Ok((partitions.len(), rf, min_isr, id))
}

#[test]
fn confluent_kafka_admin_client_creates_validates_elects_and_deletes_topics() -> anyhow::Result<()> {
    let python = kafka_clients_python().map_err(anyhow::Error::msg)?;
    let cluster = kafka_cluster()?;
    let bootstrap = cluster.kafka_bootstrap();
    let call = |args: &[&str]| admin(&python, CONFLUENT_ADMIN, &bootstrap, args);

    let created = call(&["create", "ck-orders", "3", "3", "min.insync.replicas=2"])?;
    assert_eq!(created["error"], Value::Null, "{created}");
    let (partitions, rf, min_isr, id) = insync_topic(&cluster, "ck-orders")?;
    assert_eq!((partitions, rf, min_isr), (3, 3, 2), "as insync describes it");
    let listed = call(&["list"])?;
    assert_eq!(listed["topics"]["ck-orders"], 3, "list_topics: {listed}");
    let described = call(&["describe", "ck-orders"])?;
    assert_eq!(described["topic_id"].as_str(), Some(id.as_str()), "the client sees insync's topic id: {described}");
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(3), "{described}");

    let again = call(&["create", "ck-orders", "3", "3"])?;
    assert_eq!(again["error"], "TOPIC_ALREADY_EXISTS", "{again}");
    let bad_name = call(&["create", "bad name", "1", "1"])?;
    assert_eq!(bad_name["code"], 17, "INVALID_TOPIC_EXCEPTION (librdkafka calls it TOPIC_EXCEPTION): {bad_name}");
    let bad_config = call(&["create", "ck-compacted", "1", "1", "cleanup.policy=compact"])?;
    assert_eq!(bad_config["error"], "INVALID_CONFIG", "{bad_config}");
    let too_many = call(&["create", "ck-wide", "1", "4"])?;
    assert_eq!(too_many["error"], "INVALID_REPLICATION_FACTOR", "three brokers: {too_many}");

    // validate_only: answered as a create would be, and nothing is created.
    let dry = call(&["validate", "ck-dry", "2", "3", "min.insync.replicas=2"])?;
    assert_eq!(dry["error"], Value::Null, "{dry}");
    let dry_taken = call(&["validate", "ck-orders", "1", "1"])?;
    assert_eq!(dry_taken["error"], "TOPIC_ALREADY_EXISTS", "{dry_taken}");
    let dry_wide = call(&["validate", "ck-dry", "1", "5"])?;
    assert_eq!(dry_wide["error"], "INVALID_REPLICATION_FACTOR", "{dry_wide}");
    assert!(!insync_topics(&cluster)?.contains(&"ck-dry".to_string()), "validate_only created nothing");
    assert!(call(&["list"])?["topics"].get("ck-dry").is_none());

    // -1 for both: insync topic create's defaults, 1 partition and replication factor 3.
    let defaults = call(&["create", "ck-defaults", "-1", "-1"])?;
    assert_eq!(defaults["error"], Value::Null, "{defaults}");
    let (partitions, rf, _, _) = insync_topic(&cluster, "ck-defaults")?;
    assert_eq!((partitions, rf), (1, 3), "insync's defaults");

    let described = call(&["cluster"])?;
    let want_nodes: Vec<Value> =
        cluster.kafka_ports.iter().enumerate().map(|(i, port)| serde_json::json!([i + 1, "127.0.0.1", port])).collect();
    assert_eq!(described["cluster_id"], "insync", "Metadata's cluster id: {described}");
    assert_eq!(described["nodes"], Value::Array(want_nodes), "every broker's Kafka listener: {described}");
    assert!(described["controller"].as_i64().is_some_and(|id| (1..=3).contains(&id)), "{described}");

    // Preferred leaders lead already (no broker was stopped): nothing to elect. Unclean
    // elections on demand are refused.
    let elect = call(&["elect", "preferred", "ck-orders", "0", "1", "2"])?;
    let not_needed: BTreeMap<String, Value> =
        (0..3).map(|p| (format!("ck-orders-{p}"), "ELECTION_NOT_NEEDED".into())).collect();
    assert_eq!(elect["partitions"], serde_json::to_value(not_needed)?, "{elect}");
    let unclean = call(&["elect", "unclean", "ck-orders", "0"])?;
    assert_eq!(unclean["partitions"]["ck-orders-0"], "INVALID_REQUEST", "{unclean}");

    let deleted = call(&["delete", "ck-orders"])?;
    assert_eq!(deleted["error"], Value::Null, "{deleted}");
    assert!(!insync_topics(&cluster)?.contains(&"ck-orders".to_string()), "gone from insync topic list");
    assert!(call(&["list"])?["topics"].get("ck-orders").is_none(), "and from the client's list");
    let unknown = call(&["delete", "ck-orders"])?;
    assert_eq!(unknown["code"], 3, "UNKNOWN_TOPIC_OR_PARTITION (librdkafka: UNKNOWN_TOPIC_OR_PART): {unknown}");
    Ok(())
}

#[test]
fn kafka_python_admin_client_creates_validates_elects_and_deletes_topics() -> anyhow::Result<()> {
    let python = kafka_clients_python().map_err(anyhow::Error::msg)?;
    let cluster = kafka_cluster()?;
    let bootstrap = cluster.kafka_bootstrap();
    let call = |args: &[&str]| admin(&python, KAFKA_PYTHON_ADMIN, &bootstrap, args);

    let created = call(&["create", "kp-events", "2", "2"])?;
    assert_eq!(created["error_code"], 0, "{created}");
    assert_eq!((created["num_partitions"].as_i64(), created["replication_factor"].as_i64()), (Some(2), Some(2)));
    let (partitions, rf, _, id) = insync_topic(&cluster, "kp-events")?;
    assert_eq!((partitions, rf), (2, 2), "as insync describes it");
    assert_eq!(created["topic_id"].as_str(), Some(id.as_str()), "CreateTopics v7 carries the topic id: {created}");
    assert!(call(&["list"])?.as_array().is_some_and(|t| t.contains(&"kp-events".into())));
    let described = call(&["describe", "kp-events"])?;
    assert_eq!((described["error_code"].as_i64(), described["topic_id"].as_str()), (Some(0), Some(id.as_str())));
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(2), "{described}");

    let again = call(&["create", "kp-events", "2", "2"])?;
    assert_eq!(again["error_code"], 36, "TOPIC_ALREADY_EXISTS: {again}");
    assert!(again["error_message"].as_str().is_some_and(|m| m.contains("already exists")), "{again}");
    let dry = call(&["validate", "kp-dry", "4", "3"])?;
    assert_eq!((dry["error_code"].as_i64(), dry["num_partitions"].as_i64()), (Some(0), Some(4)), "{dry}");
    assert!(!insync_topics(&cluster)?.contains(&"kp-dry".to_string()), "validate_only created nothing");
    let dry_bad = call(&["validate", "kp-dry", "0", "1"])?;
    assert_eq!(dry_bad["error_code"], 37, "INVALID_PARTITIONS: {dry_bad}");

    let described = call(&["cluster"])?;
    assert_eq!(described["cluster_id"], "insync", "{described}");
    let brokers: Vec<(i64, i64)> = described["brokers"]
        .as_array()
        .context("brokers")?
        .iter()
        .map(|b| (b["broker_id"].as_i64().unwrap_or(-1), b["port"].as_i64().unwrap_or(-1)))
        .collect();
    let want: Vec<(i64, i64)> =
        cluster.kafka_ports.iter().enumerate().map(|(i, p)| (i as i64 + 1, i64::from(*p))).collect();
    assert_eq!(brokers, want, "{described}");

    let elect = call(&["elect", "kp-events", "0", "1", "7"])?;
    assert_eq!(elect["partitions"]["0"], 84, "ELECTION_NOT_NEEDED: {elect}");
    assert_eq!(elect["partitions"]["7"], 3, "UNKNOWN_TOPIC_OR_PARTITION: {elect}");

    let deleted = call(&["delete", "kp-events"])?;
    assert_eq!(deleted["error_code"], 0, "{deleted}");
    assert!(!insync_topics(&cluster)?.contains(&"kp-events".to_string()), "gone from insync topic list");
    let unknown = call(&["delete", "kp-events"])?;
    assert_eq!(unknown["error_code"], 3, "UNKNOWN_TOPIC_OR_PARTITION: {unknown}");
    let unknown_id = call(&["delete-id", &id])?;
    assert_eq!(unknown_id["error_code"], 100, "UNKNOWN_TOPIC_ID (DeleteTopics v6): {unknown_id}");
    Ok(())
}

#[test]
fn confluent_kafka_elect_leaders_moves_leadership_back_to_the_preferred_replica() -> anyhow::Result<()> {
    let python = kafka_clients_python().map_err(anyhow::Error::msg)?;
    let mut cluster = kafka_cluster()?;
    let bootstrap = cluster.kafka_bootstrap();
    let call = |args: &[&str]| admin(&python, CONFLUENT_ADMIN, &bootstrap, args);
    let created = call(&["create", "ck-lead", "1", "3"])?;
    assert_eq!(created["error"], Value::Null, "{created}");
    let preferred = cluster.leader_of("ck-lead", 0)?;
    let replicas = cluster.partition("ck-lead", 0)?["replicas"].clone();
    assert_eq!(replicas[0].as_u64(), Some(preferred as u64), "a new partition is led by its first replica");

    // The preferred replica down: leadership moves away and cannot come back yet.
    cluster.kill_broker(preferred);
    wait_for("a new leader", Duration::from_secs(20), || {
        cluster.leader_of("ck-lead", 0).ok().filter(|l| *l != preferred)
    })?;
    let early = call(&["elect", "preferred", "ck-lead", "0"])?;
    assert_eq!(early["partitions"]["ck-lead-0"], "PREFERRED_LEADER_NOT_AVAILABLE", "{early}");

    // Back in the ISR: an election for every partition (null topic_partitions) moves it back,
    // and the answer lists just that partition, elected.
    cluster.start_broker(preferred)?;
    cluster.wait_isr("ck-lead", 0, &[1, 2, 3], Duration::from_secs(30))?;
    let elected = call(&["elect", "preferred"])?;
    assert_eq!(elected["partitions"], serde_json::json!({"ck-lead-0": null}), "{elected}");
    assert_eq!(cluster.leader_of("ck-lead", 0)?, preferred, "insync describe shows the preferred leader");
    let again = call(&["elect", "preferred"])?;
    assert_eq!(again["partitions"], serde_json::json!({}), "nothing left to elect: {again}");
    Ok(())
}

/// `insync topic describe NAME --json`'s "configs": the topic's overrides as the controller
/// holds them.
fn insync_configs(cluster: &TestCluster, name: &str) -> anyhow::Result<Value> {
    let partitions = cluster.describe(name)?;
    Ok(partitions.first().context("no partitions")?["configs"].clone())
}

/// Produces `n` records to partition 0 of a one-partition topic through insync's producer.
fn produce(cluster: &TestCluster, topic: &str, n: usize) -> anyhow::Result<()> {
    let input: String = (0..n).map(|i| format!("record-{i}\n")).collect();
    let out = cluster.producer(&["--topic", topic, "--acks", "all"], Some(&input));
    anyhow::ensure!(out.status.success(), "producer failed: {}", text(&out.stderr));
    Ok(())
}

/// The offset of the first record `insync consume --from-beginning` reads (the log start).
fn first_offset(cluster: &TestCluster, topic: &str, expected: usize) -> Option<i64> {
    cluster.consume_all(topic, expected, 3000).first().and_then(|r| r["offset"].as_i64())
}

#[test]
fn confluent_kafka_admin_client_describes_and_alters_configs_grows_topics_and_deletes_records() -> anyhow::Result<()> {
    let python = kafka_clients_python().map_err(anyhow::Error::msg)?;
    let cluster = kafka_cluster()?;
    let bootstrap = cluster.kafka_bootstrap();
    let call = |args: &[&str]| admin(&python, CONFLUENT_ADMIN, &bootstrap, args);

    // CreateTopics with a config: the controller stores it as an override.
    let created = call(&["create", "ck-conf", "1", "3", "retention.ms=3600000"])?;
    assert_eq!(created["error"], Value::Null, "{created}");
    assert_eq!(insync_configs(&cluster, "ck-conf")?, serde_json::json!({"retention.ms": "3600000"}));
    let unknown_key = call(&["create", "ck-unknown", "1", "1", "retention.hours=1"])?;
    assert_eq!(unknown_key["error"], "INVALID_CONFIG", "{unknown_key}");
    assert!(unknown_key["message"].as_str().is_some_and(|m| m.contains("retention.hours")), "{unknown_key}");

    // DescribeConfigs: the override as a topic config, the rest as the broker's defaults.
    let described = call(&["configs", "topic", "ck-conf"])?;
    let configs = &described["configs"];
    assert_eq!(configs["retention.ms"]["value"], "3600000", "{described}");
    assert_eq!(configs["retention.ms"]["source"], "DYNAMIC_TOPIC_CONFIG", "{described}");
    assert_eq!(configs["segment.bytes"]["value"], "134217728", "the broker's --log-segment-bytes: {described}");
    assert_eq!(configs["segment.bytes"]["source"], "STATIC_BROKER_CONFIG", "{described}");
    assert_eq!(configs["cleanup.policy"]["source"], "DEFAULT_CONFIG", "{described}");
    let catalogue = insync_types::topic_config::TOPIC_CONFIGS.len();
    assert_eq!(configs.as_object().map(|c| c.len()), Some(catalogue), "every catalogue key: {described}");
    let broker = call(&["configs", "broker", "1"])?;
    assert_eq!(broker["configs"]["log.retention.ms"]["read_only"], true, "{broker}");
    assert_eq!(broker["configs"]["log.retention.ms"]["source"], "STATIC_BROKER_CONFIG", "{broker}");
    let missing = call(&["configs", "topic", "ck-missing"])?;
    assert_eq!(missing["code"], 3, "UNKNOWN_TOPIC_OR_PARTITION: {missing}");

    // IncrementalAlterConfigs: SET and DELETE, validate_only changes nothing, unknown keys
    // are INVALID_CONFIG.
    let dry = call(&["alter-validate", "ck-conf", "retention.ms=1000"])?;
    assert_eq!(dry["error"], Value::Null, "{dry}");
    assert_eq!(insync_configs(&cluster, "ck-conf")?["retention.ms"], "3600000", "validate_only changed nothing");
    let altered = call(&["alter", "ck-conf", "segment.ms=60000", "retention.ms"])?;
    assert_eq!(altered["error"], Value::Null, "{altered}");
    assert_eq!(insync_configs(&cluster, "ck-conf")?, serde_json::json!({"segment.ms": "60000"}), "SET and DELETE");
    let shown = call(&["configs", "topic", "ck-conf"])?;
    assert_eq!(shown["configs"]["segment.ms"]["source"], "DYNAMIC_TOPIC_CONFIG", "{shown}");
    assert_eq!(shown["configs"]["retention.ms"]["value"], "604800000", "back to the broker default: {shown}");
    let bad = call(&["alter", "ck-conf", "retention.hours=1"])?;
    assert_eq!(bad["error"], "INVALID_CONFIG", "{bad}");
    let bad_value = call(&["alter", "ck-conf", "segment.bytes=10"])?;
    assert_eq!(bad_value["error"], "INVALID_CONFIG", "{bad_value}");

    // CreatePartitions: growth only.
    let dry_grow = call(&["grow-validate", "ck-conf", "3"])?;
    assert_eq!(dry_grow["error"], Value::Null, "{dry_grow}");
    assert_eq!(cluster.describe("ck-conf")?.len(), 1, "validate_only grew nothing");
    let grown = call(&["grow", "ck-conf", "3"])?;
    assert_eq!(grown["error"], Value::Null, "{grown}");
    assert_eq!(cluster.describe("ck-conf")?.len(), 3, "insync describe shows 3 partitions");
    let shrink = call(&["grow", "ck-conf", "2"])?;
    assert_eq!(shrink["error"], "INVALID_PARTITIONS", "{shrink}");
    let unknown_topic = call(&["grow", "ck-missing", "2"])?;
    assert_eq!(unknown_topic["code"], 3, "UNKNOWN_TOPIC_OR_PARTITION: {unknown_topic}");

    // DeleteRecords: the low watermark moves, and consumers start there.
    let created = call(&["create", "ck-records", "1", "3"])?;
    assert_eq!(created["error"], Value::Null, "{created}");
    produce(&cluster, "ck-records", 10)?;
    assert_eq!(first_offset(&cluster, "ck-records", 10), Some(0));
    let deleted = call(&["delete-records", "ck-records", "0", "4"])?;
    assert_eq!(deleted, serde_json::json!({"error": null, "low_watermark": 4}), "{deleted}");
    assert_eq!(first_offset(&cluster, "ck-records", 6), Some(4), "consume --from-beginning starts at 4");
    let past = call(&["delete-records", "ck-records", "0", "99"])?;
    assert_eq!(past["code"], 1, "OFFSET_OUT_OF_RANGE past the high watermark: {past}");
    let all = call(&["delete-records", "ck-records", "0", "-1"])?;
    assert_eq!(all["low_watermark"], 10, "-1: the high watermark: {all}");
    Ok(())
}

#[test]
fn kafka_python_admin_client_describes_and_alters_configs_grows_topics_and_deletes_records() -> anyhow::Result<()> {
    let python = kafka_clients_python().map_err(anyhow::Error::msg)?;
    let cluster = kafka_cluster()?;
    let bootstrap = cluster.kafka_bootstrap();
    let call = |args: &[&str]| admin(&python, KAFKA_PYTHON_ADMIN, &bootstrap, args);

    let created = call(&["create", "kp-conf", "1", "2", "retention.ms=3600000", "max.message.bytes=500000"])?;
    assert_eq!(created["error_code"], 0, "{created}");
    // kafka-python turns the CreatableTopicConfigs into a map by name with the source's name.
    let returned = created["configs"].as_object().with_context(|| format!("CreateTopics v5+ configs: {created}"))?;
    let catalogue = insync_types::topic_config::TOPIC_CONFIGS.len();
    assert_eq!(returned.len(), catalogue, "every config of the new topic (KIP-525): {created}");
    let shown = |name: &str| (returned[name]["value"].clone(), returned[name]["config_source"].clone());
    assert_eq!(shown("retention.ms"), ("3600000".into(), "DYNAMIC_TOPIC_CONFIG".into()), "an override");
    assert_eq!(shown("segment.ms"), ("604800000".into(), "STATIC_BROKER_CONFIG".into()), "the broker's flag");
    assert_eq!(shown("cleanup.policy"), ("delete".into(), "DEFAULT_CONFIG".into()), "built in");
    assert_eq!(
        insync_configs(&cluster, "kp-conf")?,
        serde_json::json!({"retention.ms": "3600000", "max.message.bytes": "500000"})
    );
    let bad = call(&["create", "kp-bad", "1", "1", "segment.bytes=10"])?;
    assert_eq!(bad["error_code"], 40, "INVALID_CONFIG: {bad}");
    assert!(!insync_topics(&cluster)?.contains(&"kp-bad".to_string()));

    let described = call(&["configs", "topic", "kp-conf"])?;
    let configs = &described["configs"];
    assert_eq!(configs["retention.ms"]["value"], "3600000", "{described}");
    assert_eq!(configs["retention.ms"]["source"], "DYNAMIC_TOPIC_CONFIG", "{described}");
    assert_eq!(configs["retention.ms"]["synonyms"], serde_json::json!(["log.retention.ms", "retention.ms"]));
    assert_eq!(configs["retention.bytes"]["value"], "-1", "{described}");
    assert_eq!(configs["retention.bytes"]["source"], "STATIC_BROKER_CONFIG", "{described}");
    assert_eq!(configs["unclean.leader.election.enable"]["source"], "DEFAULT_CONFIG", "{described}");
    let broker = call(&["configs", "broker", "2"])?;
    assert_eq!(broker["configs"]["message.max.bytes"]["value"], "1048576", "{broker}");
    assert_eq!(broker["configs"]["message.max.bytes"]["read_only"], true, "{broker}");

    // Legacy AlterConfigs replaces every override; kafka-python sends the others along.
    let dry = call(&["alter-validate", "kp-conf", "retention.ms=1000"])?;
    assert_eq!(dry["result"], "OK", "{dry}");
    assert_eq!(insync_configs(&cluster, "kp-conf")?["retention.ms"], "3600000", "validate_only changed nothing");
    let altered = call(&["alter", "kp-conf", "retention.ms=7200000"])?;
    assert_eq!(altered["result"], "OK", "{altered}");
    assert_eq!(
        insync_configs(&cluster, "kp-conf")?,
        serde_json::json!({"retention.ms": "7200000", "max.message.bytes": "500000"}),
        "the new value, the other override kept"
    );
    let unknown = call(&["alter", "kp-conf", "retention.hours=1"])?;
    assert!(unknown["result"].as_str().is_some_and(|r| r.contains("InvalidConfiguration")), "{unknown}");

    let dry_grow = call(&["grow-validate", "kp-conf", "4"])?;
    assert_eq!(dry_grow["error_code"], 0, "{dry_grow}");
    assert_eq!(cluster.describe("kp-conf")?.len(), 1, "validate_only grew nothing");
    let grown = call(&["grow", "kp-conf", "4"])?;
    assert_eq!(grown["error_code"], 0, "{grown}");
    assert_eq!(cluster.describe("kp-conf")?.len(), 4, "insync describe shows 4 partitions");
    let same = call(&["grow", "kp-conf", "4"])?;
    assert_eq!(same["error_code"], 37, "INVALID_PARTITIONS: {same}");
    let shrink = call(&["grow", "kp-conf", "1"])?;
    assert_eq!(shrink["error_code"], 37, "INVALID_PARTITIONS: {shrink}");

    let created = call(&["create", "kp-records", "1", "2"])?;
    assert_eq!(created["error_code"], 0, "{created}");
    produce(&cluster, "kp-records", 8)?;
    let deleted = call(&["delete-records", "kp-records", "0", "5"])?;
    assert_eq!(deleted, serde_json::json!({"error_code": 0, "low_watermark": 5}), "{deleted}");
    assert_eq!(first_offset(&cluster, "kp-records", 3), Some(5), "consume --from-beginning starts at 5");
    let past = call(&["delete-records", "kp-records", "0", "100"])?;
    assert_eq!(past["code"], 1, "OFFSET_OUT_OF_RANGE: {past}");
    Ok(())
}
