//! One `insync-broker` process of a throw-away local cluster: free ports, its command line,
//! spawn, SIGKILL, SIGSTOP/SIGCONT, SIGTERM with a deadline, and its log. Shared by `insync
//! lab` and the test harness (`tests/src/lib.rs`) so that both launch nodes the same way.
//! Each node listens on its own loopback address ([`node_ip`]), so that links between nodes
//! can be cut ([`crate::netcut`]).
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `n` distinct free ports, all taken in one go (bound to :0 together, then released):
/// ports released by an earlier call could be handed out again by a later one. Bound on the
/// wildcard address, so each port was free on every address, whichever loopback address
/// ([`node_ip`]) or 127.0.0.1 (Kafka and metrics listeners) it is then used on.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("0.0.0.0:0")).collect::<Result<_, _>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

/// The loopback address node `n` listens on and connects from: broker N on 127.0.1.N,
/// controller N on 127.0.2.N. Every node has its own (a packet filter tells them apart by
/// address, `crate::netcut`), and none is 127.0.0.1, where clients connect from (cutting a
/// node must not cut the clients). Linux answers on all of 127.0.0.0/8 without setup.
pub fn node_ip(role: NodeRole, n: i32) -> Ipv4Addr {
    let group = match role {
        NodeRole::Broker => 1,
        NodeRole::Controller => 2,
    };
    Ipv4Addr::new(127, 0, group, u8::try_from(n).expect("node ids of a local cluster are 1..=255"))
}

/// Sends a signal with the `kill` command: the workspace forbids `unsafe`, which
/// `libc::kill` needs.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// How to build a broker that has the pre-KIP-101 negative control.
pub const UNSAFE_TRUNCATION_BUILD: &str = "cargo build --release -p insync-broker --features unsafe-truncation";

/// Whether the `insync-broker` in `bin_dir` has the negative control's hidden
/// `--unsafe-truncate-to-high-watermark` flag: only a build with the `unsafe-truncation`
/// feature does (a shipped broker cannot lose acknowledged writes on purpose). Asked of the
/// binary itself: it accepts the flag with `--help` and exits 0, else refuses it.
pub fn broker_has_unsafe_truncation(bin_dir: &Path) -> bool {
    Command::new(bin_dir.join("insync-broker"))
        .args(["--unsafe-truncate-to-high-watermark", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `--controller-quorum` for voters 1..=n, voter N listening on `ports[N - 1]` of its own
/// address ([`node_ip`]).
pub fn quorum(ports: &[u16]) -> String {
    (1..).zip(ports).map(|(n, p)| format!("{n}@{}:{p}", node_ip(NodeRole::Controller, n))).collect::<Vec<_>>().join(",")
}

/// The settings a local cluster passes to every node (short timeouts, so that ISR changes
/// and fencing happen within a test or a scenario).
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Kafka replica.lag.time.max.ms.
    pub replica_lag_time_max_ms: u64,
    /// Kafka broker.session.timeout.ms.
    pub broker_session_timeout_ms: u64,
    /// Cluster default min.insync.replicas (the broker's own default when None).
    pub min_insync_replicas: Option<u32>,
    /// Kafka message.max.bytes (the broker's own default when None).
    pub message_max_bytes: Option<usize>,
    /// How long a SIGTERM'd broker waits for its leadership to move (default when None).
    pub controlled_shutdown_timeout_ms: Option<u64>,
    /// How long a broker's AlterPartition call waits for an answer (default when None).
    pub controller_request_timeout_ms: Option<u64>,
    /// Kafka auto.leader.rebalance.enable (the controller's own default when None).
    pub auto_leader_rebalance_enable: Option<bool>,
    /// Kafka leader.imbalance.check.interval.seconds (the controller's default when None).
    pub leader_imbalance_check_interval_seconds: Option<u64>,
    /// The hidden pre-KIP-101 follower (negative controls only).
    pub unsafe_truncate_to_high_watermark: bool,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            replica_lag_time_max_ms: 2_000,
            broker_session_timeout_ms: 3_000,
            min_insync_replicas: None,
            message_max_bytes: None,
            controlled_shutdown_timeout_ms: None,
            controller_request_timeout_ms: None,
            auto_leader_rebalance_enable: None,
            leader_imbalance_check_interval_seconds: None,
            unsafe_truncate_to_high_watermark: false,
        }
    }
}

/// Whether a node is a controller voter or a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    Controller,
    Broker,
}

impl NodeRole {
    fn as_str(self) -> &'static str {
        match self {
            NodeRole::Controller => "controller",
            NodeRole::Broker => "broker",
        }
    }
}

/// A node: its command line, and the process while it runs.
#[derive(Debug)]
pub struct LocalNode {
    /// `broker-2`, `controller-1`: also the name of its data directory and log file.
    pub name: String,
    pub role: NodeRole,
    /// Its gRPC address (`listen` as text).
    pub address: String,
    /// Its gRPC listener, on its own loopback address ([`node_ip`]).
    pub listen: SocketAddrV4,
    pub data_dir: PathBuf,
    /// stdout and stderr, appended across restarts.
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// SIGSTOPped and not yet SIGCONTed.
    paused: bool,
}

impl LocalNode {
    /// A node numbered `n` with its data and log under `root`, listening for gRPC on its
    /// own address ([`node_ip`]) at `port`. Brokers serve Kafka clients on `kafka_listen`
    /// (none when None); no node takes the default metrics ports, which a user's
    /// `scripts/cluster.sh` cluster and side-by-side test clusters with the same node ids
    /// would compete for.
    pub fn new(
        root: &Path,
        role: NodeRole,
        n: i32,
        port: u16,
        quorum: &str,
        settings: &NodeSettings,
        kafka_listen: Option<String>,
    ) -> LocalNode {
        let name = format!("{}-{n}", role.as_str());
        let data_dir = root.join(&name);
        let listen = SocketAddrV4::new(node_ip(role, n), port);
        let mut args: Vec<String> = vec![
            "--roles".into(),
            role.as_str().into(),
            "--node-id".into(),
            n.to_string(),
            "--listen".into(),
            listen.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--controller-quorum".into(),
            quorum.into(),
            "--metrics-listen".into(),
            "none".into(),
            "--replica-lag-time-max-ms".into(),
            settings.replica_lag_time_max_ms.to_string(),
            "--broker-session-timeout-ms".into(),
            settings.broker_session_timeout_ms.to_string(),
        ];
        if let Some(m) = settings.min_insync_replicas {
            args.extend(["--min-insync-replicas".into(), m.to_string()]);
        }
        if let Some(m) = settings.message_max_bytes {
            args.extend(["--message-max-bytes".into(), m.to_string()]);
        }
        if let Some(ms) = settings.controlled_shutdown_timeout_ms {
            args.extend(["--controlled-shutdown-timeout-ms".into(), ms.to_string()]);
        }
        if let Some(ms) = settings.controller_request_timeout_ms {
            args.extend(["--controller-request-timeout-ms".into(), ms.to_string()]);
        }
        if let Some(enable) = settings.auto_leader_rebalance_enable {
            args.extend(["--auto-leader-rebalance-enable".into(), enable.to_string()]);
        }
        if let Some(seconds) = settings.leader_imbalance_check_interval_seconds {
            args.extend(["--leader-imbalance-check-interval-seconds".into(), seconds.to_string()]);
        }
        if role == NodeRole::Broker {
            args.extend(["--kafka-listen".into(), kafka_listen.unwrap_or_else(|| "none".into())]);
            if settings.unsafe_truncate_to_high_watermark {
                args.push("--unsafe-truncate-to-high-watermark".into());
            }
        }
        LocalNode {
            log: root.join(format!("{name}.log")),
            name,
            role,
            address: listen.to_string(),
            listen,
            data_dir,
            args,
            child: None,
            paused: false,
        }
    }

    /// Spawns `binary` with this node's arguments; an error if it is already running.
    pub fn spawn(&mut self, binary: &Path) -> std::io::Result<()> {
        if self.is_running() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} is already running", self.name),
            ));
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let stderr = log.try_clone()?;
        let child = Command::new(binary).args(&self.args).stdin(Stdio::null()).stdout(log).stderr(stderr).spawn()?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// Running (possibly paused): spawned and not exited. An exited process is reaped and
    /// forgotten, so no signal can reach whatever process reuses its pid.
    pub fn is_running(&mut self) -> bool {
        let Some(child) = &mut self.child else { return false };
        if matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        self.child = None;
        self.paused = false;
        false
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Sets `flag`, a flag that takes a value given as a separate argument (`--flag
    /// VALUE`, as every flag here is written), to `value` on the command line, replacing
    /// its value if it is there, for the next start.
    pub fn set_arg(&mut self, flag: &str, value: &str) {
        match self.args.iter().position(|a| a == flag) {
            Some(at) if at + 1 < self.args.len() => self.args[at + 1] = value.to_string(),
            _ => self.args.extend([flag.to_string(), value.to_string()]),
        }
    }

    /// This node as [`crate::netcut`] cuts it off.
    pub fn peer(&self) -> crate::netcut::Peer {
        crate::netcut::Peer { name: self.name.clone(), address: self.listen }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL (works on a stopped process too), and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing (a "zombie" once resumed).
    pub fn pause(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, "STOP");
            self.paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, "CONT");
        }
        self.paused = false;
    }

    /// SIGTERM (a paused process is resumed first: it could not act on it). Pair with
    /// [`LocalNode::reap`].
    pub fn terminate(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, "CONT");
            signal(pid, "TERM");
        }
        self.paused = false;
    }

    /// One check after [`LocalNode::terminate`]: true once the process is gone; at or after
    /// `deadline` it is SIGKILLed (and `Err` says so).
    pub fn reap(&mut self, deadline: Instant) -> Result<bool, String> {
        let Some(child) = self.child.as_mut() else { return Ok(true) };
        if !matches!(child.try_wait(), Ok(None)) {
            self.child = None;
            return Ok(true);
        }
        if Instant::now() >= deadline {
            self.kill();
            return Err(format!("{} did not exit in time after SIGTERM and was killed", self.name));
        }
        Ok(false)
    }

    /// SIGTERM, then wait (blocking, polling every 25 ms) until it exits or `timeout` passes.
    pub fn stop_blocking(&mut self, timeout: Duration) -> Result<(), String> {
        self.terminate();
        let deadline = Instant::now() + timeout;
        while !self.reap(deadline)? {
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(())
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for LocalNode {
    /// No process outlives its cluster: a paused one dies by SIGKILL too.
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(8).unwrap();
        let mut sorted = ports.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 8);
    }

    #[test]
    fn a_broker_command_line_names_every_setting() {
        let settings = NodeSettings {
            min_insync_replicas: Some(2),
            message_max_bytes: Some(4096),
            controlled_shutdown_timeout_ms: Some(1500),
            unsafe_truncate_to_high_watermark: true,
            ..NodeSettings::default()
        };
        let node = LocalNode::new(Path::new("/tmp/x"), NodeRole::Broker, 2, 7000, &quorum(&[7001]), &settings, None);
        assert_eq!(node.name, "broker-2");
        assert_eq!(node.address, "127.0.1.2:7000");
        assert_eq!(node.log, Path::new("/tmp/x/broker-2.log"));
        let line = node.args.join(" ");
        for expected in [
            "--roles broker",
            "--node-id 2",
            "--listen 127.0.1.2:7000",
            "--data-dir /tmp/x/broker-2",
            "--controller-quorum 1@127.0.2.1:7001",
            "--metrics-listen none",
            "--min-insync-replicas 2",
            "--message-max-bytes 4096",
            "--controlled-shutdown-timeout-ms 1500",
            "--kafka-listen none",
            "--unsafe-truncate-to-high-watermark",
        ] {
            assert!(line.contains(expected), "{expected:?} missing from {line}");
        }
        let controller = LocalNode::new(Path::new("/tmp/x"), NodeRole::Controller, 1, 7001, "", &settings, None);
        let line = controller.args.join(" ");
        assert!(!line.contains("--kafka-listen") && !line.contains("--unsafe"), "{line}");
        assert!(line.contains("--listen 127.0.2.1:7001"), "{line}");
        assert_eq!(controller.peer().address, "127.0.2.1:7001".parse().unwrap());
    }

    #[test]
    fn every_node_has_its_own_loopback_address_and_none_is_the_clients() {
        let mut seen = std::collections::BTreeSet::new();
        for role in [NodeRole::Broker, NodeRole::Controller] {
            for n in 1..=3 {
                let ip = node_ip(role, n);
                assert!(ip.is_loopback() && ip != Ipv4Addr::LOCALHOST, "{ip}");
                assert!(seen.insert(ip), "{ip} twice");
            }
        }
        assert_eq!(quorum(&[7001, 7002, 7003]), "1@127.0.2.1:7001,2@127.0.2.2:7002,3@127.0.2.3:7003");
    }
}
