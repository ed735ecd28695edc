//! Test harness for cluster tests against real processes: starts a controller and three
//! brokers from the built binaries on free ports in a temporary directory (each node on its
//! own loopback address: broker N on 127.0.1.N, controller N on 127.0.2.N), runs the CLIs
//! the way a user does, kills / stops / pauses nodes with real signals, cuts and heals the
//! links between nodes (iptables, `insync_lab::netcut`), and tears everything down
//! (SIGKILL, every rule removed) on drop. Every wait has a deadline. Each process is an
//! `insync_lab::process::LocalNode`, launched exactly as `insync lab` launches its own.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use insync_lab::netcut::{NetCuts, Peer};
use insync_lab::process::{quorum, LocalNode, NodeRole, NodeSettings};
use serde_json::Value;

/// A node of a test cluster, for cutting links: `NodeId::Broker(2)`, `NodeId::Controller(1)`.
pub use insync_lab::cluster::NodeId;
pub use insync_lab::process::signal;

/// Where `cargo build --bins` put the binaries (next to this test executable's deps dir).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("INSYNC_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test-binary>
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (scripts/test.sh does `cargo build --bins`)",
        path.display()
    );
    path
}

/// `n` distinct free ports (bound to 0.0.0.0:0 together, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    insync_lab::process::free_ports(n).expect("bind 0.0.0.0:0")
}

/// Polls `f` every 100 ms until it returns Some, or fails after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Settings of a test cluster (short timeouts so tests run fast).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub replica_lag_time_max_ms: u64,
    pub broker_session_timeout_ms: u64,
    pub min_insync_replicas: u32,
    pub message_max_bytes: Option<usize>,
    /// Controller voters: 1 or 3.
    pub controllers: usize,
    /// Give each broker a Kafka wire-protocol listener on a free port (`kafka_bootstrap`);
    /// otherwise `--kafka-listen none`, so side-by-side test clusters never compete for
    /// the default ports 19092-19094.
    pub kafka_listeners: bool,
    /// Give each broker a Prometheus listener on a free port (`metrics_ports`).
    pub metrics_listeners: bool,
    /// `(flag, value)` pairs for every broker's command line.
    pub broker_args: Vec<(String, String)>,
    /// Automatic preferred leader election every this many seconds; None turns it off, so
    /// that leadership moves only when a test makes it move.
    pub leader_rebalance_interval_seconds: Option<u64>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            replica_lag_time_max_ms: 2_000,
            broker_session_timeout_ms: 3_000,
            min_insync_replicas: 1,
            message_max_bytes: None,
            controllers: 1,
            kafka_listeners: false,
            metrics_listeners: false,
            broker_args: Vec::new(),
            leader_rebalance_interval_seconds: None,
        }
    }
}

/// Controllers plus brokers 1..=3, each a real `insync-broker` process.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    controllers: Vec<LocalNode>,
    brokers: Vec<LocalNode>,
    pub broker_ports: Vec<u16>,
    /// Kafka listener ports of brokers 1..=3 (empty without `kafka_listeners`).
    pub kafka_ports: Vec<u16>,
    /// Metrics listener ports of brokers 1..=3 (empty without `metrics_listeners`).
    pub metrics_ports: Vec<u16>,
    /// Links cut between nodes: made at the first cut (a test that cuts nothing never needs
    /// iptables); every rule is removed on heal and when the cluster is dropped.
    cuts: Option<NetCuts>,
}

impl TestCluster {
    /// Starts the cluster and waits until three brokers are registered. A free port can be
    /// taken by someone else between our release and the node's bind (another test's
    /// cluster, an outgoing connection's ephemeral port): when a node says it cannot listen,
    /// the whole cluster is started again on fresh ports, at most three times. Any other
    /// failure is an error carrying the tail of every node's log.
    pub fn start(options: ClusterOptions) -> anyhow::Result<TestCluster> {
        let mut attempt = 1;
        loop {
            let mut cluster = TestCluster::start_once(&options)?;
            match cluster.wait_started(Duration::from_secs(30)) {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    let logs = cluster.log_tails(15);
                    let port_taken = logs.contains("cannot listen");
                    drop(cluster);
                    if port_taken && attempt < 3 {
                        eprintln!("test cluster attempt {attempt}: a port was taken, starting again on fresh ports");
                        attempt += 1;
                        continue;
                    }
                    bail!("{e}\n{logs}");
                }
            }
        }
    }

    /// Waits until three brokers are registered and alive; fails at once if a node exits
    /// (a port it could not bind, a bad flag) rather than at the deadline.
    fn wait_started(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.alive_brokers() >= 3 {
                return Ok(());
            }
            let nodes = self.controllers.iter_mut().chain(self.brokers.iter_mut());
            if let Some(node) = nodes.into_iter().find_map(|n| (!n.is_running()).then(|| n.name.clone())) {
                bail!("{node} exited during start-up");
            }
            if Instant::now() >= deadline {
                bail!("timed out after {timeout:?} waiting for 3 alive brokers");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Brokers that `insync cluster status` reports alive.
    fn alive_brokers(&self) -> usize {
        let out = self.insync(&["cluster", "status", "--json"]);
        text(&out.stdout).lines().filter(|l| l.contains("\"status\":\"alive\"")).count()
    }

    /// The last `lines` lines of every node's log, headed by the node's name.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in self.controllers.iter().chain(self.brokers.iter()) {
            out.push_str(&format!("--- {} (last {lines} lines of {}) ---\n", node.name, node.log.display()));
            out.push_str(&node.log_tail(lines));
            out.push('\n');
        }
        out
    }

    fn start_once(options: &ClusterOptions) -> anyhow::Result<TestCluster> {
        let dir = tempfile::Builder::new().prefix("insync-test-").tempdir()?;
        // One call for every port: ports released by an earlier call could be handed out again.
        let kafka_count = if options.kafka_listeners { 3 } else { 0 };
        let metrics_count = if options.metrics_listeners { 3 } else { 0 };
        let ports = free_ports(3 + options.controllers + kafka_count + metrics_count);
        let (broker_ports, rest) = ports.split_at(3);
        let (controller_ports, rest) = rest.split_at(options.controllers);
        let (kafka_ports, metrics_ports) = rest.split_at(kafka_count);
        let (kafka_ports, metrics_ports) = (kafka_ports.to_vec(), metrics_ports.to_vec());
        let quorum = quorum(controller_ports);
        let settings = NodeSettings {
            replica_lag_time_max_ms: options.replica_lag_time_max_ms,
            broker_session_timeout_ms: options.broker_session_timeout_ms,
            min_insync_replicas: Some(options.min_insync_replicas),
            message_max_bytes: options.message_max_bytes,
            auto_leader_rebalance_enable: Some(options.leader_rebalance_interval_seconds.is_some()),
            leader_imbalance_check_interval_seconds: options.leader_rebalance_interval_seconds,
            ..NodeSettings::default()
        };
        let root = dir.path();
        let controllers: Vec<LocalNode> = (1..)
            .zip(controller_ports)
            .map(|(n, port)| LocalNode::new(root, NodeRole::Controller, n, *port, &quorum, &settings, None))
            .collect();
        // Without `kafka_listeners`, `--kafka-listen none`: side-by-side test clusters must
        // not compete for the default ports 19092-19094.
        let brokers: Vec<LocalNode> = (1..)
            .zip(broker_ports)
            .map(|(n, port)| {
                let kafka = kafka_ports.get(n as usize - 1).map(|p| format!("127.0.0.1:{p}"));
                let mut node = LocalNode::new(root, NodeRole::Broker, n, *port, &quorum, &settings, kafka);
                if let Some(metrics) = metrics_ports.get(n as usize - 1) {
                    node.set_arg("--metrics-listen", &format!("127.0.0.1:{metrics}"));
                }
                for (flag, value) in &options.broker_args {
                    node.set_arg(flag, value);
                }
                node
            })
            .collect();
        let broker_ports = broker_ports.to_vec();
        let mut cluster =
            TestCluster { dir, controllers, brokers, broker_ports, kafka_ports, metrics_ports, cuts: None };
        for n in 1..=cluster.controllers.len() {
            cluster.start_controller(n)?;
        }
        for n in 1..=3 {
            cluster.start_broker(n)?;
        }
        Ok(cluster)
    }

    pub fn bootstrap(&self) -> String {
        self.brokers.iter().map(|b| b.address.clone()).collect::<Vec<_>>().join(",")
    }

    /// The Kafka clients' `bootstrap.servers` (needs `ClusterOptions::kafka_listeners`).
    pub fn kafka_bootstrap(&self) -> String {
        self.kafka_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// Broker `n`'s gRPC address, on its own loopback address: 127.0.1.`n`:port.
    pub fn broker_address(&self, n: usize) -> String {
        self.brokers[n - 1].address.clone()
    }

    pub fn broker_data_dir(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("broker-{n}"))
    }

    /// The broker's process id while it runs.
    pub fn broker_pid(&self, n: usize) -> Option<u32> {
        self.brokers[n - 1].pid()
    }

    pub fn broker_log(&self, n: usize) -> String {
        self.brokers[n - 1].log_text()
    }

    /// Every controller's log, concatenated (the active controller moves).
    pub fn controller_logs(&self) -> String {
        self.controllers.iter().map(|c| c.log_text()).collect::<Vec<_>>().join("\n")
    }

    fn node(&mut self, n: usize) -> &mut LocalNode {
        &mut self.brokers[n - 1]
    }

    pub fn start_broker(&mut self, n: usize) -> anyhow::Result<()> {
        let node = self.node(n);
        node.spawn(&bin("insync-broker")).with_context(|| format!("spawning {}", node.name))
    }

    /// SIGKILL, and reap.
    pub fn kill_broker(&mut self, n: usize) {
        self.node(n).kill();
    }

    /// SIGTERM (controlled shutdown), waiting up to `timeout` for the exit.
    pub fn stop_broker(&mut self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        self.node(n).stop_blocking(timeout).map_err(anyhow::Error::msg)
    }

    /// SIGKILL controller `n` (1-based), and reap.
    pub fn kill_controller(&mut self, n: usize) {
        self.controllers[n - 1].kill();
    }

    pub fn start_controller(&mut self, n: usize) -> anyhow::Result<()> {
        let node = &mut self.controllers[n - 1];
        node.spawn(&bin("insync-broker")).with_context(|| format!("spawning {}", node.name))
    }

    /// The active controller's id, as `insync cluster status --json` names it.
    pub fn active_controller(&self) -> Option<usize> {
        let out = self.insync(&["cluster", "status", "--json"]);
        text(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|v| v.get("controller").and_then(|c| c["id"].as_i64()).filter(|id| *id > 0).map(|id| id as usize))
    }

    fn peer(&self, id: NodeId) -> anyhow::Result<Peer> {
        let node = match id {
            NodeId::Broker(n) => usize::try_from(n).ok().and_then(|n| self.brokers.get(n.checked_sub(1)?)),
            NodeId::Controller(n) => usize::try_from(n).ok().and_then(|n| self.controllers.get(n.checked_sub(1)?)),
        };
        node.map(LocalNode::peer).with_context(|| format!("no {id} in this cluster"))
    }

    fn net_cuts(&mut self) -> anyhow::Result<&mut NetCuts> {
        if self.cuts.is_none() {
            self.cuts = Some(NetCuts::new()?);
        }
        Ok(self.cuts.as_mut().expect("just made"))
    }

    /// Resets `from`'s connections to `to` (both ends see the reset) and refuses new ones
    /// until `heal_links`: a live process's links broken, as by a crash of a middlebox.
    pub fn reset_links(&mut self, from: NodeId, to: NodeId) -> anyhow::Result<()> {
        let (from, to) = (self.peer(from)?, self.peer(to)?);
        Ok(self.net_cuts()?.reset(&from, &to)?)
    }

    /// Cuts the link `from → to` one way: every call `from` makes to `to` times out, calls
    /// from `to` to `from` still work. Both keep running; clients still reach both. Fails
    /// (never skips) where iptables cannot be used.
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) -> anyhow::Result<()> {
        let (from, to) = (self.peer(from)?, self.peer(to)?);
        Ok(self.net_cuts()?.cut(&from, &to)?)
    }

    /// Cuts the link between `a` and `b` both ways.
    pub fn cut(&mut self, a: NodeId, b: NodeId) -> anyhow::Result<()> {
        let (a, b) = (self.peer(a)?, self.peer(b)?);
        Ok(self.net_cuts()?.cut_both(&a, &b)?)
    }

    /// Cuts `id` off from every other node, controllers included, both ways; clients (the
    /// CLIs, producers, the test itself) still reach it.
    pub fn isolate(&mut self, id: NodeId) -> anyhow::Result<()> {
        let node = self.peer(id)?;
        let others: Vec<Peer> =
            self.controllers.iter().chain(self.brokers.iter()).map(LocalNode::peer).filter(|p| *p != node).collect();
        Ok(self.net_cuts()?.isolate(&node, &others)?)
    }

    /// Restores every link cut.
    pub fn heal_links(&mut self) -> anyhow::Result<()> {
        if let Some(cuts) = self.cuts.as_mut() {
            cuts.heal()?;
        }
        Ok(())
    }

    /// The links cut now, as (from, to) node names.
    pub fn cut_links(&self) -> Vec<(String, String)> {
        self.cuts.as_ref().map(NetCuts::cuts).unwrap_or_default()
    }

    /// Starts `insync-producer <args>` reading values from a pipe, for continuous production.
    pub fn streaming_producer(&self, args: &[&str]) -> anyhow::Result<StreamingProducer> {
        let mut child = Command::new(bin("insync-producer"))
            .env("INSYNC_BOOTSTRAP", self.bootstrap())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(StreamingProducer { stdin: child.stdin.take(), child, lines: rx, received: Vec::new() })
    }

    pub fn pause_broker(&mut self, n: usize) {
        self.node(n).pause();
    }

    pub fn resume_broker(&mut self, n: usize) {
        self.node(n).resume();
    }

    pub fn broker_running(&mut self, n: usize) -> bool {
        self.node(n).is_running()
    }

    /// Runs `insync <args>` against this cluster.
    pub fn insync(&self, args: &[&str]) -> Output {
        self.insync_at(&self.bootstrap(), args)
    }

    /// The gRPC bootstrap list of just `brokers` (1-based): what a client that knows only
    /// those sees (a cut-off broker's view, or everyone's but its).
    pub fn bootstrap_of(&self, brokers: &[usize]) -> String {
        brokers.iter().map(|n| self.broker_address(*n)).collect::<Vec<_>>().join(",")
    }

    /// Runs `insync <args>` with `bootstrap` (see [`TestCluster::bootstrap_of`]).
    pub fn insync_at(&self, bootstrap: &str, args: &[&str]) -> Output {
        run_bounded(Command::new(bin("insync")).env("INSYNC_BOOTSTRAP", bootstrap).args(args), None)
    }

    /// Runs `insync-producer <args>`, feeding `stdin` if given.
    pub fn producer(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.producer_at(&self.bootstrap(), args, stdin)
    }

    /// Runs `insync-producer <args>` with `bootstrap`, feeding `stdin` if given.
    pub fn producer_at(&self, bootstrap: &str, args: &[&str], stdin: Option<&str>) -> Output {
        run_bounded(Command::new(bin("insync-producer")).env("INSYNC_BOOTSTRAP", bootstrap).args(args), stdin)
    }

    pub fn create_topic(&self, name: &str, partitions: u32, rf: u32, min_isr: Option<u32>) -> anyhow::Result<()> {
        let partitions = partitions.to_string();
        let rf = rf.to_string();
        let mut args = vec!["topic", "create", name, "--partitions", &partitions, "--replication-factor", &rf];
        let min;
        if let Some(m) = min_isr {
            min = m.to_string();
            args.extend(["--min-insync-replicas", &min]);
        }
        let out = self.insync(&args);
        if !out.status.success() {
            bail!("topic create failed: {}{}", text(&out.stdout), text(&out.stderr));
        }
        Ok(())
    }

    /// `insync topic describe NAME --json`, one object per partition.
    pub fn describe(&self, topic: &str) -> anyhow::Result<Vec<Value>> {
        self.describe_at(&self.bootstrap(), topic)
    }

    /// `describe` with `bootstrap`: the metadata of the first of those brokers that answers.
    pub fn describe_at(&self, bootstrap: &str, topic: &str) -> anyhow::Result<Vec<Value>> {
        let out = self.insync_at(bootstrap, &["topic", "describe", topic, "--json"]);
        if !out.status.success() {
            bail!("describe failed: {}", text(&out.stderr));
        }
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).context("describe json")).collect()
    }

    pub fn partition(&self, topic: &str, partition: i64) -> anyhow::Result<Value> {
        self.describe(topic)?
            .into_iter()
            .find(|p| p["partition"].as_i64() == Some(partition))
            .context("partition not in describe output")
    }

    pub fn leader_of(&self, topic: &str, partition: i64) -> anyhow::Result<usize> {
        let p = self.partition(topic, partition)?;
        p["leader"].as_i64().filter(|l| *l > 0).map(|l| l as usize).context("no leader")
    }

    pub fn isr_of(&self, topic: &str, partition: i64) -> anyhow::Result<Vec<i64>> {
        let p = self.partition(topic, partition)?;
        Ok(p["isr"].as_array().context("isr")?.iter().filter_map(|v| v.as_i64()).collect())
    }

    /// Waits until the ISR of the partition is exactly `isr` (sorted).
    pub fn wait_isr(&self, topic: &str, partition: i64, isr: &[i64], timeout: Duration) -> anyhow::Result<()> {
        wait_for(&format!("ISR of {topic}-{partition} to be {isr:?}"), timeout, || {
            let mut got = self.isr_of(topic, partition).ok()?;
            got.sort_unstable();
            (got == isr).then_some(())
        })
    }

    pub fn wait_alive_brokers(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        wait_for(&format!("{n} alive brokers"), timeout, || (self.alive_brokers() >= n).then_some(()))
    }

    /// Consumes from the beginning until `expected` records or `idle_ms` without one.
    pub fn consume_all(&self, topic: &str, expected: usize, idle_ms: u64) -> Vec<Value> {
        let max = expected.to_string();
        let idle = idle_ms.to_string();
        let out = self.insync(&[
            "consume",
            topic,
            "--from-beginning",
            "--max-messages",
            &max,
            "--idle-timeout-ms",
            &idle,
            "--json",
        ]);
        text(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

impl Drop for TestCluster {
    /// Kills every process, then removes every cut (dropping the `NetCuts`).
    fn drop(&mut self) {
        for node in self.brokers.iter_mut().chain(self.controllers.iter_mut()) {
            node.kill();
        }
        self.cuts.take();
        if std::thread::panicking() || std::env::var_os("INSYNC_TEST_LOGS").is_some() {
            // Leave the logs where a failing test can be diagnosed.
            eprintln!("{}", self.log_tails(40));
        }
    }
}

/// A producer process fed line by line; its answers are collected with arrival times.
pub struct StreamingProducer {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<(Instant, String)>,
    /// Answers received so far, in order (the producer answers records in order).
    pub received: Vec<(Instant, String)>,
}

impl StreamingProducer {
    /// Sends one value (one line).
    pub fn send(&mut self, value: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(value.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Collects answers that have arrived, waiting until there are `n` or `timeout` passes.
    pub fn wait_answers(&mut self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.received.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.received.push(line),
                Err(_) => break,
            }
        }
        self.received.len()
    }

    /// Closes stdin and waits (bounded) for the remaining answers and the exit.
    pub fn finish(mut self, timeout: Duration) -> Vec<(Instant, String)> {
        self.stdin.take();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.received.push(line),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::take(&mut self.received)
    }
}

impl Drop for StreamingProducer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to completion, killing it after 120 s (no test waits forever).
pub fn run_bounded(cmd: &mut Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn CLI");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        let input = input.to_string();
        std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            signal(pid, "KILL");
        }
    });
    let out = child.wait_with_output().expect("wait CLI");
    let _ = tx.send(());
    out
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The Python of the Kafka clients' virtualenv (`target/kafka-clients-venv`, or
/// `INSYNC_KAFKA_VENV`) once it imports confluent_kafka and kafka; if it does not,
/// `scripts/install-kafka-clients.sh` runs first (once per test process). Err says why the
/// clients are missing: a test that needs them fails with it, it never skips.
pub fn kafka_clients_python() -> Result<PathBuf, String> {
    static INSTALLED: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    let python = std::env::var("INSYNC_KAFKA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target/kafka-clients-venv"))
        .join("bin/python");
    let imports = |python: &Path| {
        Command::new(python)
            .args(["-c", "import confluent_kafka, kafka"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    INSTALLED
        .get_or_init(|| {
            if !imports(&python) {
                let script = root.join("scripts/install-kafka-clients.sh");
                let out = run_bounded(Command::new("bash").arg(&script), None);
                eprintln!("{} said:\n{}{}", script.display(), text(&out.stdout), text(&out.stderr));
            }
            if imports(&python) {
                Ok(python.clone())
            } else {
                Err(format!(
                    "{} cannot import confluent_kafka and kafka, and scripts/install-kafka-clients.sh could not install them",
                    python.display()
                ))
            }
        })
        .clone()
}
