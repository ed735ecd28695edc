//! Unmodified Kafka clients against insync's Kafka listener, driven as their users drive
//! them: `kcat` (Debian's, librdkafka inside), `confluent-kafka` (PyPI, its own bundled
//! librdkafka) and `kafka-python` (pure Python), all installed by
//! `scripts/install-kafka-clients.sh` (which `scripts/test.sh` runs; these tests run it
//! too when a tool is missing). A test whose tool cannot be had fails and says why: a test
//! never passes by skipping.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use insync_tests::{run_bounded, text, wait_for, ClusterOptions, TestCluster};

/// The clients found (or installed) on this machine.
struct Tools {
    kcat: Result<PathBuf, String>,
    python: Result<PathBuf, String>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn venv_python() -> PathBuf {
    let venv = std::env::var("INSYNC_KAFKA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target/kafka-clients-venv"));
    venv.join("bin/python")
}

fn find_kcat() -> Result<PathBuf, String> {
    let ok = Command::new("kcat").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status();
    match ok {
        Ok(status) if status.success() => Ok(PathBuf::from("kcat")),
        _ => Err("kcat is not installed".into()),
    }
}

fn find_python() -> Result<PathBuf, String> {
    let python = venv_python();
    let ok = Command::new(&python)
        .args(["-c", "import confluent_kafka, kafka"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match ok {
        Ok(status) if status.success() => Ok(python),
        _ => Err(format!("{} cannot import confluent_kafka and kafka", python.display())),
    }
}

/// Finds the clients, running the project's installer once if one is missing.
fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        if find_kcat().is_err() || find_python().is_err() {
            let script = workspace_root().join("scripts/install-kafka-clients.sh");
            let out = run_bounded(Command::new("bash").arg(&script), None);
            eprintln!("{} said:\n{}{}", script.display(), text(&out.stdout), text(&out.stderr));
        }
        Tools { kcat: find_kcat(), python: find_python() }
    })
}

macro_rules! require {
    ($tool:expr) => {
        match &$tool {
            Ok(path) => path.clone(),
            // A test never passes by skipping: a client the installer could not bring is a failure.
            Err(why) => anyhow::bail!("{why}, and scripts/install-kafka-clients.sh could not install it"),
        }
    };
}

fn kafka_cluster() -> anyhow::Result<TestCluster> {
    TestCluster::start(ClusterOptions { kafka_listeners: true, ..ClusterOptions::default() })
}

fn kcat(kcat: &Path, cluster: &TestCluster, args: &[&str], stdin: Option<&str>) -> Output {
    run_bounded(Command::new(kcat).arg("-b").arg(cluster.kafka_bootstrap()).args(args), stdin)
}

fn python(python: &Path, script: &str, args: &[&str]) -> Output {
    run_bounded(Command::new(python).arg("-u").arg("-c").arg(script).args(args), None)
}

fn stdout_lines(out: &Output) -> Vec<String> {
    text(&out.stdout).lines().map(str::to_string).collect()
}

/// confluent-kafka producing one record per argument with the given acks and no retries,
/// so the broker's answer reaches the delivery report as it is (librdkafka would retry
/// NOT_ENOUGH_REPLICAS until message.timeout.ms otherwise). One line per record.
const CONFLUENT_PRODUCE: &str = r#"
import sys
from confluent_kafka import Producer
bootstrap, topic, acks = sys.argv[1:4]
p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "retries": 0, "message.timeout.ms": 20000})
def report(err, msg):
    if err:
        print(f"error {err.name()} ({err.code()}) partition={msg.partition()}")
    else:
        print(f"ok partition={msg.partition()} offset={msg.offset()}")
for value in sys.argv[4:]:
    p.produce(topic, value=value.encode(), on_delivery=report)
left = p.flush(30)
if left:
    print(f"unflushed {left}")
"#;

/// confluent-kafka's AdminClient lists every topic: a Metadata v10+ request with a null
/// topic array and bytes after its last field, which Kafka brokers serve.
const CONFLUENT_LIST_TOPICS: &str = r#"
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=15)
print("topics " + ",".join(sorted(md.topics)))
"#;

/// An idempotent confluent-kafka producer (enable.idempotence: acks=all, retries, ordered)
/// sending v0..v{n-1}; prints "acked N" as acknowledgements arrive and a summary at the end.
const CONFLUENT_IDEMPOTENT: &str = r#"
import sys, time
from confluent_kafka import Producer
bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
              "linger.ms": 5, "message.timeout.ms": 60000})
acked, errors = [], []
def report(err, msg):
    if err:
        errors.append(err.name())
    else:
        acked.append(msg.value().decode())
        if len(acked) % 100 == 0:
            print(f"acked {len(acked)}", flush=True)
for i in range(n):
    while True:
        try:
            p.produce(topic, value=f"v{i}".encode(), on_delivery=report)
            break
        except BufferError:
            p.poll(0.05)
    p.poll(0)
    time.sleep(0.002)
left = p.flush(90)
print(f"done sent={n} acked={len(acked)} distinct={len(set(acked))} errors={len(errors)} {sorted(set(errors))} unflushed={left}", flush=True)
"#;

/// kafka-python: produce the arguments with acks=all, then read the topic with a consumer
/// group from the earliest offset, commit, and print what it read.
const KAFKA_PYTHON_PRODUCE_CONSUME: &str = r#"
import sys
from kafka import KafkaProducer, KafkaConsumer
bootstrap, topic, group = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
values = sys.argv[4:]
if values:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in values:
        md = producer.send(topic, value.encode()).get(timeout=30)
        print(f"sent offset={md.offset}")
    producer.close()
consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                         enable_auto_commit=False, consumer_timeout_ms=6000)
for m in consumer:
    print(f"got offset={m.offset} value={m.value.decode()}")
consumer.commit()
consumer.close()
"#;

#[test]
fn kcat_produces_with_acks_all_1_and_0_and_reads_what_grpc_wrote() -> anyhow::Result<()> {
    let kcat_bin = require!(tools().kcat);
    let started = Instant::now();
    let cluster = kafka_cluster()?;
    cluster.create_topic("kcat-demo", 1, 3, Some(2))?;

    let listing = kcat(&kcat_bin, &cluster, &["-L"], None);
    let listing = text(&listing.stdout);
    for port in &cluster.kafka_ports {
        assert!(
            listing.contains(&format!("127.0.0.1:{port}")),
            "kcat -L names every broker's Kafka address:\n{listing}"
        );
    }
    assert!(listing.contains("topic \"kcat-demo\" with 1 partitions"), "{listing}");

    let out = cluster.producer(&["--topic", "kcat-demo", "--acks", "all"], Some("grpc-0\ngrpc-1\n"));
    assert!(out.status.success(), "insync-producer: {}", text(&out.stderr));
    for acks in ["all", "1", "0"] {
        let input = format!("kcat-acks{acks}-0\nkcat-acks{acks}-1\n");
        let out = kcat(&kcat_bin, &cluster, &["-P", "-t", "kcat-demo", "-X", &format!("acks={acks}")], Some(&input));
        assert!(out.status.success(), "kcat -P -X acks={acks}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("ERROR"), "kcat -P -X acks={acks}: {}", text(&out.stderr));
    }

    let expected: Vec<String> = ["grpc-0", "grpc-1"]
        .into_iter()
        .map(String::from)
        .chain(["all", "1", "0"].iter().flat_map(|a| (0..2).map(move |i| format!("kcat-acks{a}-{i}"))))
        .collect();
    // acks=0 records may still be on their way when kcat exits: poll until all are in.
    let consumed = wait_for("kcat to read all 8 records", Duration::from_secs(20), || {
        let out =
            kcat(&kcat_bin, &cluster, &["-C", "-t", "kcat-demo", "-o", "beginning", "-e", "-q", "-f", "%o %s\n"], None);
        let lines = stdout_lines(&out);
        (lines.len() >= expected.len()).then_some(lines)
    })?;
    let want: Vec<String> = expected.iter().enumerate().map(|(i, v)| format!("{i} {v}")).collect();
    assert_eq!(consumed, want, "kcat reads gRPC and Kafka records from one log, in offset order");

    let records = cluster.consume_all("kcat-demo", expected.len(), 3_000);
    let values: Vec<&str> = records.iter().filter_map(|r| r["value"].as_str()).collect();
    assert_eq!(values, expected, "insync consume (gRPC) reads what kcat wrote");
    eprintln!("kcat test took {:?}", started.elapsed());
    Ok(())
}

#[test]
fn confluent_kafka_gets_not_enough_replicas_19_and_20_when_the_isr_shrinks() -> anyhow::Result<()> {
    let python_bin = require!(tools().python);
    let started = Instant::now();
    let mut cluster = kafka_cluster()?;
    cluster.create_topic("payments", 1, 3, Some(2))?;
    let bootstrap = cluster.kafka_bootstrap();
    let produce = |acks: &str, values: &[&str]| {
        let mut args = vec![bootstrap.as_str(), "payments", acks];
        args.extend_from_slice(values);
        let out = python(&python_bin, CONFLUENT_PRODUCE, &args);
        assert!(out.status.success(), "confluent-kafka script failed: {}", text(&out.stderr));
        stdout_lines(&out)
    };
    assert_eq!(produce("all", &["a", "b"]), vec!["ok partition=0 offset=0", "ok partition=0 offset=1"]);
    let listed = python(&python_bin, CONFLUENT_LIST_TOPICS, &[bootstrap.as_str()]);
    assert_eq!(stdout_lines(&listed), vec!["topics payments"], "AdminClient.list_topics: {}", text(&listed.stderr));

    let leader = cluster.leader_of("payments", 0)?;
    let followers: Vec<usize> = (1..=3).filter(|b| *b != leader).collect();
    for f in &followers {
        cluster.kill_broker(*f);
    }
    cluster.wait_isr("payments", 0, &[leader as i64], Duration::from_secs(20))?;
    assert_eq!(
        produce("all", &["refused"]),
        vec!["error NOT_ENOUGH_REPLICAS (19) partition=0"],
        "acks=all with ISR 1 < min.insync.replicas 2"
    );
    assert_eq!(produce("1", &["leader-only"]), vec!["ok partition=0 offset=2"], "acks=1 still writes");

    for f in &followers {
        cluster.start_broker(*f)?;
    }
    cluster.wait_isr("payments", 0, &[1, 2, 3], Duration::from_secs(30))?;
    for f in &followers {
        cluster.pause_broker(*f);
    }
    let answer = produce("all", &["stranded"]);
    for f in &followers {
        cluster.resume_broker(*f);
    }
    assert_eq!(
        answer,
        vec!["error NOT_ENOUGH_REPLICAS_AFTER_APPEND (20) partition=0"],
        "acks=all appended, then the ISR shrank below min.insync.replicas"
    );
    eprintln!("NOT_ENOUGH_REPLICAS test took {:?}", started.elapsed());
    Ok(())
}

#[test]
fn kafka_python_produces_and_a_consumer_group_resumes_from_its_commit() -> anyhow::Result<()> {
    let python_bin = require!(tools().python);
    let started = Instant::now();
    let cluster = kafka_cluster()?;
    cluster.create_topic("events", 1, 3, None)?;
    let bootstrap = cluster.kafka_bootstrap();
    let out = python(&python_bin, KAFKA_PYTHON_PRODUCE_CONSUME, &[&bootstrap, "events", "readers", "e0", "e1", "e2"]);
    assert!(out.status.success(), "kafka-python script failed: {}", text(&out.stderr));
    assert_eq!(
        stdout_lines(&out),
        vec![
            "sent offset=0",
            "sent offset=1",
            "sent offset=2",
            "got offset=0 value=e0",
            "got offset=1 value=e1",
            "got offset=2 value=e2",
        ]
    );
    // Two more through gRPC; the group resumes after its committed offset 3.
    let out = cluster.producer(&["--topic", "events", "--acks", "all"], Some("g3\ng4\n"));
    assert!(out.status.success(), "insync-producer: {}", text(&out.stderr));
    let out = python(&python_bin, KAFKA_PYTHON_PRODUCE_CONSUME, &[&bootstrap, "events", "readers"]);
    assert!(out.status.success(), "kafka-python script failed: {}", text(&out.stderr));
    assert_eq!(stdout_lines(&out), vec!["got offset=3 value=g3", "got offset=4 value=g4"]);
    eprintln!("kafka-python test took {:?}", started.elapsed());
    Ok(())
}

/// The idempotent producer child, with its stdout read line by line on a thread.
struct Streaming {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Streaming {
    fn start(python: &Path, script: &str, args: &[&str]) -> anyhow::Result<Streaming> {
        let mut child = Command::new(python)
            .arg("-u")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the confluent-kafka producer")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Streaming { child, lines })
    }

    /// The first line that `matches`, within `timeout`.
    fn wait_line(&self, what: &str, timeout: Duration, matches: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return Ok(line),
                Ok(_) => {}
                Err(_) => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
    }
}

#[test]
fn leader_kill_during_an_idempotent_confluent_kafka_run_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let python_bin = require!(tools().python);
    let started = Instant::now();
    let mut cluster = kafka_cluster()?;
    cluster.create_topic("ledger", 1, 3, Some(2))?;
    let leader = cluster.leader_of("ledger", 0)?;
    const N: usize = 3000;
    let bootstrap = cluster.kafka_bootstrap();
    let producer = Streaming::start(&python_bin, CONFLUENT_IDEMPOTENT, &[&bootstrap, "ledger", &N.to_string()])?;
    producer.wait_line("600 acknowledgements", Duration::from_secs(60), |l| {
        l.strip_prefix("acked ").and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| n >= 600)
    })?;
    cluster.kill_broker(leader);
    let killed_at = Instant::now();
    let summary = producer.wait_line("the producer's summary", Duration::from_secs(120), |l| l.starts_with("done "))?;
    eprintln!("leader {leader} SIGKILLed; producer finished {:?} later: {summary}", killed_at.elapsed());
    assert_eq!(
        summary,
        format!("done sent={N} acked={N} distinct={N} errors=0 [] unflushed=0"),
        "every record acknowledged exactly once"
    );
    assert_ne!(cluster.leader_of("ledger", 0)?, leader, "leadership moved");

    cluster.start_broker(leader)?;
    cluster.wait_isr("ledger", 0, &[1, 2, 3], Duration::from_secs(30))?;
    let records = cluster.consume_all("ledger", N + 10, 5_000);
    let values: Vec<&str> = records.iter().filter_map(|r| r["value"].as_str()).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("v{i}")).collect();
    assert_eq!(values.len(), N, "no record lost and none duplicated (read back over gRPC)");
    assert!(values.iter().zip(&expected).all(|(a, b)| a == b), "in order, each once");
    eprintln!("idempotent leader-kill test took {:?}", started.elapsed());
    Ok(())
}

/// One request frame: size, api_key, api_version, correlation_id, null client_id, body.
fn raw_request(api_key: i16, api_version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::new();
    message.extend_from_slice(&api_key.to_be_bytes());
    message.extend_from_slice(&api_version.to_be_bytes());
    message.extend_from_slice(&correlation_id.to_be_bytes());
    message.extend_from_slice(&(-1i16).to_be_bytes()); // client_id: null
    message.extend_from_slice(body);
    let mut frame = (message.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&message);
    frame
}

fn read_response(stream: &mut std::net::TcpStream) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body)?;
    Ok(body)
}

/// Whether the broker closed the connection (EOF or reset) within the read timeout.
fn closed_by_broker(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 16];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn raw_socket_api_versions_fallback_and_bad_frames_close_the_connection() -> anyhow::Result<()> {
    use std::io::Write;
    use std::net::TcpStream;
    let cluster = kafka_cluster()?;
    let address = format!("127.0.0.1:{}", cluster.kafka_ports[0]);
    let connect = || -> anyhow::Result<TcpStream> {
        let stream = TcpStream::connect(&address)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(stream)
    };
    let i16_at = |b: &[u8], at: usize| i16::from_be_bytes([b[at], b[at + 1]]);
    let i32_at = |b: &[u8], at: usize| i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);

    // ApiVersions v0: the served APIs; Produce advertised from v0 (librdkafka <= 2.11 compresses
    // only then) though served from v3, and Fetch from v4 (RecordBatch v2).
    let mut stream = connect()?;
    stream.write_all(&raw_request(18, 0, 41, &[]))?;
    let response = read_response(&mut stream)?;
    assert_eq!((i32_at(&response, 0), i16_at(&response, 4)), (41, 0), "correlation id, error NONE");
    let count = i32_at(&response, 6) as usize;
    let apis: Vec<(i16, i16, i16)> = (0..count)
        .map(|i| 10 + i * 6)
        .map(|at| (i16_at(&response, at), i16_at(&response, at + 2), i16_at(&response, at + 4)))
        .collect();
    assert!(apis.iter().any(|&(key, min, max)| key == 0 && min == 0 && max >= 7), "Produce v0+: {apis:?}");
    assert!(apis.iter().any(|&(key, min, max)| key == 1 && min <= 4 && max >= 4), "Fetch v4+: {apis:?}");

    // ApiVersions from the future: UNSUPPORTED_VERSION (35) in the v0 format, naming the
    // ApiVersions versions to retry with (KIP-511); the connection stays usable.
    stream.write_all(&raw_request(18, 99, 42, &[0]))?;
    let response = read_response(&mut stream)?;
    assert_eq!((i32_at(&response, 0), i16_at(&response, 4), i32_at(&response, 6)), (42, 35, 1));
    assert_eq!((i16_at(&response, 10), i16_at(&response, 12), i16_at(&response, 14)), (18, 0, 4));
    assert_eq!(response.len(), 16, "nothing after the v0 api_keys array");
    stream.write_all(&raw_request(18, 0, 43, &[]))?;
    assert_eq!(i32_at(&read_response(&mut stream)?, 0), 43);

    // A frame above message.max.bytes + headroom: closed before it is read (Kafka
    // InvalidReceiveException); so is an API key nobody knows.
    let mut stream = connect()?;
    stream.write_all(&(100 * 1024 * 1024i32).to_be_bytes())?;
    assert!(closed_by_broker(&mut stream), "an oversized frame closes the connection");
    let mut stream = connect()?;
    stream.write_all(&raw_request(999, 0, 44, &[]))?;
    assert!(closed_by_broker(&mut stream), "an unknown API key closes the connection");
    assert!(cluster.broker_log(1).contains("closing the connection"), "and the broker says why");
    Ok(())
}
