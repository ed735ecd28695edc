//! The client matrix (issue 14): five real Kafka clients — kcat, confluent-kafka, kafka-python,
//! aiokafka and sarama (Go) — each drive the same steps against insync's Kafka listener:
//! produce with every codec (acks=all) and read back; a 3-member group sharing 6 partitions
//! with one member SIGKILLed mid-way; commit, seek to the committed offset, and resume from
//! the commit after the group coordinator's broker is SIGKILLed. The client programs live in
//! tests/clients/ (one per client, one command line: MODE BOOTSTRAP TOPIC GROUP ARG, JSON
//! lines out); scripts/install-kafka-clients.sh installs the clients. One test per client, so
//! a failure names the client; every step prints `matrix CLIENT STEP ok|FAIL: why` to stderr
//! and a client that cannot be installed fails its test (never a skip).
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use insync_tests::{run_bounded, text, wait_for, ClusterOptions, TestCluster};
use serde_json::Value;

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
/// Records per codec in the produce step.
const PER_CODEC: usize = 20;
/// The group step: members, partitions, records per partition in each of two batches.
const MEMBERS: [&str; 3] = ["a", "b", "c"];
const GROUP_PARTITIONS: i64 = 6;
const PER_PARTITION: usize = 5;
/// The commit step: records in the topic, and the offset committed half-way.
const COMMIT_TOTAL: usize = 20;
const COMMIT_AT: usize = 10;

#[derive(Clone, Copy, PartialEq)]
enum Client {
    Kcat,
    Confluent,
    KafkaPython,
    Aiokafka,
    Sarama,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Kcat => "kcat",
            Client::Confluent => "confluent-kafka",
            Client::KafkaPython => "kafka-python",
            Client::Aiokafka => "aiokafka",
            Client::Sarama => "sarama",
        }
    }

    /// The client's program and how to run it, once the installer has been run.
    fn command(self) -> Result<Command, String> {
        let clients = workspace_root().join("tests/clients");
        let python = |script: &str, module: &str| -> Result<Command, String> {
            let python = venv_python();
            let probe = format!("import {module}, lz4, zstandard, cramjam");
            if !succeeds(Command::new(&python).args(["-c", &probe])) {
                return Err(format!("{} cannot import {module} and its codecs", python.display()));
            }
            let mut cmd = Command::new(python);
            cmd.arg("-u").arg(clients.join(script));
            Ok(cmd)
        };
        match self {
            Client::Kcat if succeeds(Command::new("kcat").arg("-V")) => {
                let mut cmd = Command::new("bash");
                cmd.arg(clients.join("kcat_matrix.sh"));
                Ok(cmd)
            }
            Client::Kcat => Err("kcat is not installed".into()),
            Client::Confluent => python("confluent_matrix.py", "confluent_kafka"),
            Client::KafkaPython => python("kafka_python_matrix.py", "kafka"),
            Client::Aiokafka => python("aiokafka_matrix.py", "aiokafka"),
            Client::Sarama => {
                let bin = workspace_root().join("target/kafka-clients-go/sarama-matrix");
                if bin.exists() {
                    Ok(Command::new(bin))
                } else {
                    Err(format!("{} was not built", bin.display()))
                }
            }
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn venv_python() -> PathBuf {
    std::env::var("INSYNC_KAFKA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target/kafka-clients-venv"))
        .join("bin/python")
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Runs the installer once per test process (quick when everything is there; it also
/// rebuilds the Go program when its source changed), then finds `client`.
fn client_command(client: Client) -> anyhow::Result<Command> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let script = workspace_root().join("scripts/install-kafka-clients.sh");
        let out = run_bounded(Command::new("bash").arg(&script), None);
        eprintln!("{} said:\n{}{}", script.display(), text(&out.stdout), text(&out.stderr));
    });
    // A test never passes by skipping: a client the installer could not bring is a failure.
    client.command().map_err(|why| anyhow::anyhow!("{why}, and scripts/install-kafka-clients.sh could not install it"))
}

/// One run of a client program in its own process group (so a SIGKILL reaches every
/// process of it, kcat under its bash driver too), its stdout parsed as JSON lines on a
/// thread, its stderr in a file beside the cluster's logs.
struct Run {
    child: Child,
    lines: mpsc::Receiver<Value>,
    stderr: PathBuf,
    seen: Vec<Value>,
}

impl Run {
    fn start(client: Client, dir: &Path, args: [&str; 5]) -> anyhow::Result<Run> {
        let stderr = dir.join(format!("{}-{}-{}.stderr", client.name(), args[0], args[4]));
        let mut child = client_command(client)?
            .args(args)
            .current_dir(workspace_root().join("tests/clients"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr)?)
            .spawn()
            .with_context(|| format!("spawning {} {}", client.name(), args[0]))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or_else(|_| serde_json::json!({"text": line}));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        Ok(Run { child, lines, stderr, seen: Vec::new() })
    }

    /// Collects the lines printed so far, waiting up to `wait` for the first new one.
    fn poll(&mut self, wait: Duration) {
        if let Ok(v) = self.lines.recv_timeout(wait) {
            self.seen.push(v);
            self.seen.extend(self.lines.try_iter());
        }
    }

    /// Every line until the program exits (EOF on stdout) or `timeout` (dropping the run kills it).
    fn finish(&mut self, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        while let Ok(v) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.seen.push(v);
        }
        std::mem::take(&mut self.seen)
    }

    fn stderr_tail(&self) -> String {
        let all = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// SIGKILL to the whole process group.
    fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The result table of one client: each step's line goes to stderr as it is decided.
struct Matrix {
    client: Client,
    failed: Vec<String>,
}

impl Matrix {
    fn record(&mut self, step: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => eprintln!("matrix {} {step} ok {detail}", self.client.name()),
            Err(why) => {
                // A client may repeat one error per record: the first 300 characters tell it.
                let why: String = why.chars().take(300).collect();
                eprintln!("matrix {} {step} FAIL: {why}", self.client.name());
                self.failed.push(format!("{step}: {why}"));
            }
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        if self.failed.is_empty() {
            return Ok(());
        }
        bail!("{} failed {} step(s):\n{}", self.client.name(), self.failed.len(), self.failed.join("\n"))
    }
}

fn events<'a>(lines: &'a [Value], event: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    lines.iter().filter(move |v| v["event"] == event)
}

/// What a client said besides records: its errors and warnings, for a failure's reason.
fn complaints(lines: &[Value]) -> String {
    let mut said: Vec<String> = lines
        .iter()
        .filter(|v| v["event"] == "error" || v["event"] == "warning" || v.get("text").is_some())
        .map(|v| v.get("error").or(v.get("text")).map(Value::to_string).unwrap_or_default())
        .collect();
    said.dedup();
    said.truncate(3);
    said.join("; ")
}

fn produce_step(matrix: &mut Matrix, cluster: &TestCluster, prefix: &str) -> anyhow::Result<()> {
    for codec in CODECS {
        cluster.create_topic(&format!("{prefix}-{codec}"), 1, 3, None)?;
    }
    let bootstrap = cluster.kafka_bootstrap();
    let mut run =
        Run::start(matrix.client, cluster.dir.path(), ["produce", &bootstrap, prefix, "-", &PER_CODEC.to_string()])?;
    let lines = run.finish(Duration::from_secs(180));
    let tail = run.stderr_tail();
    for codec in CODECS {
        for step in [format!("produce-{codec}"), format!("consume-{codec}")] {
            let result = match lines.iter().find(|v| v["step"] == step.as_str()) {
                Some(v) if v["ok"] == true => Ok(String::new()),
                Some(v) if v["na"].is_string() => {
                    // A step this client cannot do (said by its program): shown, not counted.
                    eprintln!("matrix {} {step} n/a: {}", matrix.client.name(), v["na"].as_str().unwrap_or_default());
                    continue;
                }
                Some(v) => Err(v["error"].as_str().unwrap_or("no reason given").to_string()),
                None => Err(format!("no result from the client ({}; stderr: {tail})", complaints(&lines))),
            };
            matrix.record(&step, result);
        }
    }
    Ok(())
}

fn main_test(client: Client) -> anyhow::Result<()> {
    let started = Instant::now();
    client_command(client)?;
    let mut cluster = TestCluster::start(ClusterOptions { kafka_listeners: true, ..ClusterOptions::default() })?;
    let mut matrix = Matrix { client, failed: Vec::new() };
    let prefix = client.name().replace('-', "_");
    produce_step(&mut matrix, &cluster, &prefix)?;
    group_step(&mut matrix, &cluster, &prefix)?;
    commit_steps(&mut matrix, &mut cluster, &prefix)?;
    eprintln!("matrix {} took {:?}", client.name(), started.elapsed());
    matrix.finish()
}

#[test]
fn kcat_matrix() -> anyhow::Result<()> {
    main_test(Client::Kcat)
}

#[test]
fn confluent_kafka_matrix() -> anyhow::Result<()> {
    main_test(Client::Confluent)
}

#[test]
fn kafka_python_matrix() -> anyhow::Result<()> {
    main_test(Client::KafkaPython)
}

#[test]
fn aiokafka_matrix() -> anyhow::Result<()> {
    main_test(Client::Aiokafka)
}

#[test]
fn sarama_matrix() -> anyhow::Result<()> {
    main_test(Client::Sarama)
}

// ---- the group step ---------------------------------------------------------------------

/// What the members printed: each one's latest assignment and every value consumed.
#[derive(Default)]
struct GroupView {
    assigned: BTreeMap<String, BTreeSet<i64>>,
    consumed: BTreeSet<String>,
    complaints: Vec<String>,
}

impl GroupView {
    fn update(&mut self, runs: &mut [(String, Run)]) {
        for (_, run) in runs.iter_mut() {
            run.poll(Duration::from_millis(20));
            for v in run.seen.drain(..) {
                let member = v["member"].as_str().unwrap_or("?").to_string();
                match v["event"].as_str() {
                    Some("assigned") => {
                        let parts = v["partitions"].as_array().map(|a| a.iter().filter_map(Value::as_i64).collect());
                        self.assigned.insert(member, parts.unwrap_or_default());
                    }
                    Some("record") => {
                        self.consumed.insert(v["value"].as_str().unwrap_or_default().to_string());
                    }
                    Some("warning") | Some("error") => {
                        let said = format!("{member}: {}", v["error"]);
                        if !self.complaints.contains(&said) && self.complaints.len() < 5 {
                            self.complaints.push(said);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The members in `alive` hold every partition, each partition once.
    fn covers_all(&self, alive: &[&str]) -> bool {
        let mut all: Vec<i64> =
            alive.iter().flat_map(|m| self.assigned.get(*m).into_iter().flatten().copied()).collect();
        all.sort_unstable();
        all == (0..GROUP_PARTITIONS).collect::<Vec<_>>()
    }

    fn describe(&self) -> String {
        format!(
            "assignments {:?}, {} values consumed, clients said: {:?}",
            self.assigned,
            self.consumed.len(),
            self.complaints
        )
    }
}

/// Waits until `done(view)`, updating the view from the members' lines.
fn wait_view(
    runs: &mut [(String, Run)],
    view: &mut GroupView,
    since: Instant,
    timeout: Duration,
    done: impl Fn(&GroupView) -> bool,
) -> Result<Duration, String> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        view.update(runs);
        if done(view) {
            return Ok(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("not within {timeout:?}: {}", view.describe()))
}

/// Writes `PER_PARTITION` records "<batch>-p<partition>-<i>" to every partition over gRPC.
fn fill(cluster: &TestCluster, topic: &str, batch: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut values = BTreeSet::new();
    for p in 0..GROUP_PARTITIONS {
        let batch: Vec<String> = (0..PER_PARTITION).map(|i| format!("{batch}-p{p}-{i}")).collect();
        let mut args = vec!["--topic", topic, "--acks", "all"];
        let partition = p.to_string();
        args.extend(["--partition", &partition]);
        args.extend(batch.iter().map(String::as_str));
        let out = cluster.producer(&args, None);
        if !out.status.success() {
            bail!("insync-producer to {topic}/{p}: {}", text(&out.stderr));
        }
        values.extend(batch);
    }
    Ok(values)
}

fn group_step(matrix: &mut Matrix, cluster: &TestCluster, prefix: &str) -> anyhow::Result<()> {
    let topic = format!("{prefix}-group");
    cluster.create_topic(&topic, GROUP_PARTITIONS as u32, 3, None)?;
    let bootstrap = cluster.kafka_bootstrap();
    let mut runs = Vec::new();
    for m in MEMBERS {
        runs.push((
            m.to_string(),
            Run::start(matrix.client, cluster.dir.path(), ["member", &bootstrap, &topic, &topic, m])?,
        ));
    }
    let mut view = GroupView::default();
    let split = wait_view(&mut runs, &mut view, Instant::now(), Duration::from_secs(40), |v| {
        v.covers_all(&MEMBERS) && MEMBERS.iter().all(|m| v.assigned.get(*m).is_some_and(|p| p.len() == 2))
    });
    matrix.record("group-split", split.map(|t| format!("{:?} after {t:?}", view.assigned)));

    let filled = Instant::now();
    let first = fill(cluster, &topic, "b1")?;
    let consumed = wait_view(&mut runs, &mut view, filled, Duration::from_secs(30), |v| first.is_subset(&v.consumed));
    matrix.record("group-consume", consumed.map(|t| format!("{} records in {t:?}", first.len())));

    // SIGKILL the member holding partition 0 (or "b"): it cannot leave the group, so the
    // coordinator notices only when its session (6 s) expires, then the rest rebalance.
    let victim = view.assigned.iter().find(|(_, p)| p.contains(&0)).map(|(m, _)| m.clone());
    let victim = victim.unwrap_or_else(|| "b".to_string());
    if let Some((_, run)) = runs.iter_mut().find(|(m, _)| *m == victim) {
        run.kill();
    }
    let killed = Instant::now();
    let survivors: Vec<&str> = MEMBERS.into_iter().filter(|m| *m != victim).collect();
    for m in &survivors {
        view.assigned.remove(*m);
    }
    let second = fill(cluster, &topic, "b2")?;
    let all: BTreeSet<String> = first.union(&second).cloned().collect();
    let takeover = wait_view(&mut runs, &mut view, killed, Duration::from_secs(45), |v| {
        v.covers_all(&survivors) && all.is_subset(&v.consumed)
    });
    let detail = takeover
        .map(|t| format!("member {victim} killed; {survivors:?} hold all 6 and every record {t:?} after the kill"));
    matrix.record("group-takeover", detail);
    Ok(())
}

// ---- commit, seek, coordinator kill -----------------------------------------------------

/// Runs a one-shot mode to its end (bounded); its lines, or why it printed nothing useful.
fn one_shot(client: Client, cluster: &TestCluster, mode: &str, topic: &str, group: &str, arg: usize) -> Vec<Value> {
    let bootstrap = cluster.kafka_bootstrap();
    match Run::start(client, cluster.dir.path(), [mode, &bootstrap, topic, group, &arg.to_string()]) {
        Ok(mut run) => {
            let mut lines = run.finish(Duration::from_secs(90));
            let tail = run.stderr_tail();
            if !tail.is_empty() {
                lines.push(serde_json::json!({"event": "warning", "error": format!("stderr: {tail}")}));
            }
            lines
        }
        Err(e) => vec![serde_json::json!({"event": "error", "error": e.to_string()})],
    }
}

/// The offsets of partition 0's records in `lines`, in the order printed.
fn offsets(lines: &[Value]) -> Vec<i64> {
    events(lines, "record").filter(|v| v["partition"] == 0).filter_map(|v| v["offset"].as_i64()).collect()
}

fn check_reads_from(lines: &[Value], from: usize, what: &str) -> Result<String, String> {
    let got = offsets(lines);
    let want: Vec<i64> = (from as i64..COMMIT_TOTAL as i64).collect();
    if got.first() == Some(&0) && from != 0 {
        return Err(format!("{what} started at offset 0: rewound to auto.offset.reset (the commit was lost)"));
    }
    // A client may read a record twice across a reconnect; every offset from `from` on, once or more.
    let distinct: BTreeSet<i64> = got.iter().copied().collect();
    if got.first() == want.first() && distinct.into_iter().collect::<Vec<_>>() == want {
        Ok(format!("{what} read offsets {from}..{}", COMMIT_TOTAL - 1))
    } else {
        Err(format!(
            "{what} read offsets {got:?}, want {from}..{}; client said: {}",
            COMMIT_TOTAL - 1,
            complaints(lines)
        ))
    }
}

fn commit_steps(matrix: &mut Matrix, cluster: &mut TestCluster, prefix: &str) -> anyhow::Result<()> {
    let topic = format!("{prefix}-commits");
    let group = format!("{prefix}-committers");
    cluster.create_topic(&topic, 1, 3, None)?;
    let values: Vec<String> = (0..COMMIT_TOTAL).map(|i| format!("c{i}")).collect();
    let mut args = vec!["--topic", topic.as_str(), "--acks", "all"];
    args.extend(values.iter().map(String::as_str));
    let out = cluster.producer(&args, None);
    anyhow::ensure!(out.status.success(), "insync-producer: {}", text(&out.stderr));

    let lines = one_shot(matrix.client, cluster, "commit", &topic, &group, COMMIT_AT);
    let committed = events(&lines, "committed").any(|v| v["offset"] == COMMIT_AT as i64);
    let reported = events(&lines, "coordinator").find_map(|v| v["id"].as_i64());
    matrix.record(
        "commit",
        if committed { Ok(format!("offset {COMMIT_AT}")) } else { Err(format!("no commit: {}", complaints(&lines))) },
    );

    let lines = one_shot(matrix.client, cluster, "seek", &topic, &group, COMMIT_TOTAL - COMMIT_AT);
    let seen = events(&lines, "committed").find_map(|v| v["offset"].as_i64());
    let seek = match seen {
        Some(c) if c == COMMIT_AT as i64 => check_reads_from(&lines, COMMIT_AT, "seek to committed"),
        Some(c) => Err(format!("committed() said {c}, want {COMMIT_AT}; client said: {}", complaints(&lines))),
        None => Err(format!("no committed offset read: {}", complaints(&lines))),
    };
    matrix.record("seek-committed", seek);

    match kill_coordinator(cluster, &group, reported) {
        Ok(detail) => {
            matrix.record("coordinator-kill", Ok(detail));
            let lines = one_shot(matrix.client, cluster, "resume", &topic, &group, COMMIT_TOTAL);
            matrix.record("resume-after-kill", check_reads_from(&lines, COMMIT_AT, "resume"));
        }
        Err(why) => {
            matrix.record("coordinator-kill", Err(why));
            matrix.record("resume-after-kill", Err("not run: no coordinator was killed".into()));
        }
    }
    Ok(())
}

/// FindCoordinator v0 (Kafka `FindCoordinatorRequest`, key type group) sent by hand to
/// `address`: the coordinator's node id. Reads at most 64 KiB of answer.
fn find_coordinator(address: &str, group: &str) -> anyhow::Result<i32> {
    let key = group.as_bytes();
    let mut message = Vec::new();
    message.extend_from_slice(&10i16.to_be_bytes()); // api key FindCoordinator
    message.extend_from_slice(&0i16.to_be_bytes()); // version 0
    message.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    message.extend_from_slice(&(-1i16).to_be_bytes()); // client id: null
    message.extend_from_slice(&i16::try_from(key.len())?.to_be_bytes());
    message.extend_from_slice(key);
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(&(i32::try_from(message.len())?).to_be_bytes())?;
    stream.write_all(&message)?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size =
        usize::try_from(i32::from_be_bytes(size)).ok().filter(|s| (10..65_536).contains(s)).context("answer size")?;
    let mut body = vec![0u8; size];
    stream.read_exact(&mut body)?;
    // correlation id (4), error code (2), node id (4), host, port
    let error = i16::from_be_bytes([body[4], body[5]]);
    anyhow::ensure!(error == 0, "FindCoordinator error code {error}");
    Ok(i32::from_be_bytes([body[6], body[7], body[8], body[9]]))
}

/// The coordinator as the brokers other than `except` name it.
fn coordinator_now(cluster: &TestCluster, group: &str, except: Option<usize>) -> anyhow::Result<usize> {
    let mut last = None;
    for (n, port) in (1..).zip(&cluster.kafka_ports) {
        if Some(n) == except {
            continue;
        }
        match find_coordinator(&format!("127.0.0.1:{port}"), group) {
            Ok(id) => return usize::try_from(id).context("negative coordinator id"),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no broker to ask")))
}

/// SIGKILLs the broker that coordinates `group` (FindCoordinator, cross-checked with what
/// the client reported) and waits until another broker has taken the group over.
fn kill_coordinator(cluster: &mut TestCluster, group: &str, reported: Option<i64>) -> Result<String, String> {
    let coordinator = coordinator_now(cluster, group, None).map_err(|e| format!("FindCoordinator: {e:#}"))?;
    if let Some(r) = reported.filter(|r| *r != coordinator as i64) {
        return Err(format!("the client committed through broker {r}, FindCoordinator names {coordinator}"));
    }
    if !(1..=3).contains(&coordinator) {
        return Err(format!("FindCoordinator named node {coordinator}, not a broker of this cluster"));
    }
    cluster.kill_broker(coordinator);
    let killed = Instant::now();
    let moved = wait_for("another coordinator", Duration::from_secs(30), || {
        coordinator_now(cluster, group, Some(coordinator)).ok().filter(|c| *c != coordinator)
    });
    match moved {
        Ok(next) => {
            Ok(format!("broker {coordinator} SIGKILLed; broker {next} coordinates after {:?}", killed.elapsed()))
        }
        Err(e) => Err(format!("broker {coordinator} SIGKILLed; {e}")),
    }
}
