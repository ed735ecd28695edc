//! The lab's process launcher: a controller quorum (1 or 3 voters) and three brokers, each
//! a real `insync-broker` process on a free port of its own loopback address with its data
//! in a temporary directory; SIGKILL / SIGSTOP / SIGCONT / SIGTERM and restarts; network
//! partitions between nodes (iptables, [`crate::netcut`]); admin queries that avoid
//! paused nodes; and the read-only reader of a stopped broker's segment files and HW
//! checkpoint that the checker is fed with. Every process is killed on drop. Each process
//! is a [`LocalNode`], as in the test harness.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use insync_client::Cluster;
use insync_log::batch::{decode_records, iter_batches};
use insync_log::segment::parse_base_offset;
use insync_log::OffsetCheckpointFile;
use insync_proto as pb;
use insync_types::TopicPartition;

use crate::checker::ReplicaLog;
use crate::netcut::{NetCuts, Peer};
use crate::process::{free_ports, quorum, LocalNode, NodeRole, NodeSettings};
use crate::LabError;

/// What to launch.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Where `insync-broker` lives.
    pub bin_dir: PathBuf,
    /// Controller voters: 1 or 3.
    pub controllers: usize,
    /// Kafka replica.lag.time.max.ms: short, so ISR changes happen within a scenario.
    pub replica_lag_time_max_ms: u64,
    /// Kafka broker.session.timeout.ms: how long until a dead or paused broker is fenced.
    pub broker_session_timeout_ms: u64,
    /// Start brokers with the hidden pre-KIP-101 flag (negative control only).
    pub unsafe_truncate_to_high_watermark: bool,
    /// Give each broker a data directory of this many MiB: a tmpfs the lab mounts (as
    /// root), so that a disk-full fault can fill it ([`LabCluster::fill_disk`]).
    pub disk_limit_mib: Option<u64>,
    /// Give each broker a Kafka listener on 127.0.0.1 and a free port
    /// ([`LabCluster::kafka_address`]), for the scenarios that speak the Kafka protocol.
    pub kafka_listeners: bool,
}

impl ClusterSpec {
    pub fn new(bin_dir: PathBuf) -> ClusterSpec {
        ClusterSpec {
            bin_dir,
            controllers: 1,
            replica_lag_time_max_ms: 2_000,
            broker_session_timeout_ms: 3_000,
            unsafe_truncate_to_high_watermark: false,
            disk_limit_mib: None,
            kafka_listeners: false,
        }
    }
}

/// The file a disk-full fault fills a broker's data directory with.
const DISK_FILLER: &str = "lab-disk-filler";

/// In a kept cluster's directory: its mounts are the operator's to unmount.
const KEPT_MARKER: &str = "KEPT";

/// The source name of the lab's tmpfs mounts, followed by the lab process's pid.
const MOUNT_SOURCE_PREFIX: &str = "insync-lab-";

/// Unmounts the lab tmpfs mounts whose lab process is gone (their source names its pid).
fn unmount_stale_disks() {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return };
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(source), Some(target)) = (fields.next(), fields.next()) else { continue };
        let Some(pid) = source.strip_prefix(MOUNT_SOURCE_PREFIX).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let target = std::path::Path::new(target);
        let kept = target.parent().is_some_and(|root| root.join(KEPT_MARKER).exists());
        if pid != std::process::id() && !kept && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::process::Command::new("umount").arg("-l").arg(target).status();
        }
    }
}

/// Brokers in a lab cluster (RF=3 needs three).
pub const BROKERS: i32 = 3;

/// The brokers' AlterPartition call timeout in the lab (`--controller-request-timeout-ms`).
pub const LAB_CONTROLLER_REQUEST_TIMEOUT_MS: u64 = 500;

/// A node of the lab cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeId {
    Broker(i32),
    Controller(i32),
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeId::Broker(n) => write!(f, "broker {n}"),
            NodeId::Controller(n) => write!(f, "controller {n}"),
        }
    }
}

struct Node {
    id: NodeId,
    process: LocalNode,
}

/// A running lab cluster.
pub struct LabCluster {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    nodes: Vec<Node>,
    spec: ClusterSpec,
    /// Links cut between nodes; made at the first cut (a lab that cuts nothing never needs
    /// iptables), its rules removed on heal and on drop.
    cuts: Option<NetCuts>,
    /// Size-limited data directories mounted for the brokers, unmounted on drop.
    mounts: Vec<PathBuf>,
    /// Kafka listener addresses of brokers 1..=3 (empty without `kafka_listeners`).
    kafka_addresses: Vec<String>,
}

impl LabCluster {
    /// Launches the controllers and the three brokers, and waits until all brokers are
    /// registered and unfenced.
    pub async fn start(spec: ClusterSpec) -> Result<LabCluster, LabError> {
        let binary = spec.bin_dir.join("insync-broker");
        if !binary.exists() {
            return Err(LabError::MissingBinary { path: binary });
        }
        let dir = tempfile::Builder::new().prefix("insync-lab-").tempdir().map_err(|e| LabError::io("tempdir", e))?;
        let root = dir.path().to_path_buf();
        let kafka_count = if spec.kafka_listeners { BROKERS as usize } else { 0 };
        let ports = free_ports(BROKERS as usize + spec.controllers + kafka_count)
            .map_err(|e| LabError::io("binding 0.0.0.0:0", e))?;
        let (ports, kafka_ports) = ports.split_at(BROKERS as usize + spec.controllers);
        let kafka_addresses: Vec<String> = kafka_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let (broker_ports, controller_ports) = ports.split_at(BROKERS as usize);
        let quorum = quorum(controller_ports);
        let settings = NodeSettings {
            replica_lag_time_max_ms: spec.replica_lag_time_max_ms,
            broker_session_timeout_ms: spec.broker_session_timeout_ms,
            // A SIGTERM'd broker that is the last replica standing waits this long for a
            // leadership move that cannot come; keep scenario turnover fast.
            controlled_shutdown_timeout_ms: Some(1_500),
            // Shorter than the session timeout, so a controller slower than this (and not
            // yet fencing anyone) makes AlterPartition time out and be retried.
            controller_request_timeout_ms: Some(LAB_CONTROLLER_REQUEST_TIMEOUT_MS),
            unsafe_truncate_to_high_watermark: spec.unsafe_truncate_to_high_watermark,
            // A preferred election moves leadership on its own timer; the lab's verdicts are
            // about what each fault does, so only the faults move leadership here.
            auto_leader_rebalance_enable: Some(false),
            ..NodeSettings::default()
        };
        // gRPC only unless a scenario asks for Kafka listeners, and then on free ports (none
        // takes 19092-19094 from a user's cluster).
        let node = |id: NodeId, port: u16| {
            let (role, n) = match id {
                NodeId::Broker(n) => (NodeRole::Broker, n),
                NodeId::Controller(n) => (NodeRole::Controller, n),
            };
            let kafka = match id {
                NodeId::Broker(n) => usize::try_from(n - 1).ok().and_then(|i| kafka_addresses.get(i)).cloned(),
                NodeId::Controller(_) => None,
            };
            Node { id, process: LocalNode::new(&root, role, n, port, &quorum, &settings, kafka) }
        };
        let mut nodes: Vec<Node> =
            controller_ports.iter().enumerate().map(|(i, p)| node(NodeId::Controller(i as i32 + 1), *p)).collect();
        nodes.extend(broker_ports.iter().enumerate().map(|(i, p)| node(NodeId::Broker(i as i32 + 1), *p)));
        let mut cluster =
            LabCluster { dir: Some(dir), root, nodes, spec, cuts: None, mounts: Vec::new(), kafka_addresses };
        if let Some(mib) = cluster.spec.disk_limit_mib {
            cluster.mount_small_disks(mib)?;
        }
        let ids: Vec<NodeId> = cluster.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            cluster.start_node(id)?;
        }
        cluster.wait_brokers_alive(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Where data and logs live.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Keeps the data directory after the cluster is dropped (to diagnose a violation).
    pub fn keep_data(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
            // Its tmpfs mounts stay too: the marker keeps later labs from unmounting them.
            let _ = std::fs::write(self.root.join(KEPT_MARKER), b"");
        }
        self.root.clone()
    }

    pub fn bootstrap(&self) -> String {
        self.brokers().map(|n| n.process.address.clone()).collect::<Vec<_>>().join(",")
    }

    fn brokers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| matches!(n.id, NodeId::Broker(_)))
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn broker_address(&self, broker: i32) -> Option<String> {
        self.node(NodeId::Broker(broker)).map(|n| n.process.address.clone())
    }

    /// Broker `broker`'s Kafka listener (`ClusterSpec::kafka_listeners`).
    pub fn kafka_address(&self, broker: i32) -> Option<String> {
        usize::try_from(broker - 1).ok().and_then(|i| self.kafka_addresses.get(i)).cloned()
    }

    pub fn broker_data_dir(&self, broker: i32) -> Option<PathBuf> {
        self.node(NodeId::Broker(broker)).map(|n| n.process.data_dir.clone())
    }

    /// The last `lines` lines of a node's log.
    pub fn log_tail(&self, id: NodeId, lines: usize) -> String {
        self.node(id).map(|n| n.process.log_tail(lines)).unwrap_or_default()
    }

    /// Whether a node's log contains `needle` (e.g. the unsafe truncation warning).
    pub fn log_contains(&self, id: NodeId, needle: &str) -> bool {
        self.node(id).is_some_and(|n| n.process.log_text().contains(needle))
    }

    /// Spawns a node that is not running (its log is appended to); a running one is left be.
    pub fn start_node(&mut self, id: NodeId) -> Result<(), LabError> {
        let binary = self.spec.bin_dir.join("insync-broker");
        let Some(node) = self.node_mut(id) else {
            return Err(LabError::Setup(format!("no {id} in this cluster")));
        };
        if node.process.is_running() {
            return Ok(()); // healing and chaos restart what is down; a running node stays
        }
        node.process.spawn(&binary).map_err(|e| LabError::Spawn { node: id.to_string(), source: e })
    }

    /// SIGKILL (works on a stopped process too), and reap.
    pub fn kill(&mut self, id: NodeId) {
        if let Some(node) = self.node_mut(id) {
            node.process.kill();
        }
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing (a "zombie" once resumed).
    pub fn pause(&mut self, id: NodeId) {
        if let Some(node) = self.node_mut(id) {
            node.process.pause();
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: NodeId) {
        if let Some(node) = self.node_mut(id) {
            node.process.resume();
        }
    }

    pub fn is_running(&mut self, id: NodeId) -> bool {
        self.node_mut(id).is_some_and(|n| n.process.is_running())
    }

    pub fn is_paused(&self, id: NodeId) -> bool {
        self.node(id).is_some_and(|n| n.process.is_paused())
    }

    /// Running and not paused: the nodes an admin query may ask.
    fn answering_brokers(&mut self) -> Vec<(i32, String)> {
        let ids: Vec<NodeId> = self.brokers().map(|n| n.id).collect();
        let mut out = Vec::new();
        for id in ids {
            if self.is_running(id) && !self.is_paused(id) {
                if let (NodeId::Broker(b), Some(node)) = (id, self.node(id)) {
                    out.push((b, node.process.address.clone()));
                }
            }
        }
        out
    }

    /// SIGTERM (controlled shutdown, HW checkpoint, log flush) to every node in `ids` at
    /// once; SIGKILL whatever has not exited by `timeout`. Returns the nodes that had to be
    /// killed.
    pub async fn stop(&mut self, ids: &[NodeId], timeout: Duration) -> Vec<NodeId> {
        for id in ids {
            if let Some(node) = self.node_mut(*id) {
                node.process.terminate();
            }
        }
        let deadline = Instant::now() + timeout;
        let mut killed = Vec::new();
        for id in ids {
            while let Some(node) = self.node_mut(*id) {
                match node.process.reap(deadline) {
                    Ok(true) => break,
                    Ok(false) => tokio::time::sleep(Duration::from_millis(25)).await,
                    Err(_) => {
                        killed.push(*id);
                        break;
                    }
                }
            }
        }
        killed
    }

    /// Mounts a tmpfs of `mib` MiB on each broker's data directory, after unmounting those
    /// a lab process that died without unwinding (SIGKILL) left behind.
    fn mount_small_disks(&mut self, mib: u64) -> Result<(), LabError> {
        unmount_stale_disks();
        let dirs: Vec<PathBuf> = (1..=BROKERS).filter_map(|b| self.broker_data_dir(b)).collect();
        for dir in dirs {
            std::fs::create_dir_all(&dir).map_err(|e| LabError::io("creating a data directory", e))?;
            let out = std::process::Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={mib}m"),
                    &format!("{MOUNT_SOURCE_PREFIX}{}", std::process::id()),
                ])
                .arg(&dir)
                .output()
                .map_err(|e| LabError::io("running mount", e))?;
            if !out.status.success() {
                return Err(LabError::Setup(format!(
                    "the disk-full scenarios need a size-limited data directory: `mount -t tmpfs` on {} failed                      (run as root): {}",
                    dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            self.mounts.push(dir);
        }
        Ok(())
    }

    /// Fills broker `broker`'s (size-limited) data directory until the disk is full, so its
    /// next write fails with ENOSPC; returns the bytes written. Undone by [`Self::free_disk`].
    pub async fn fill_disk(&self, broker: i32) -> Result<u64, LabError> {
        let dir = self.broker_data_dir(broker).ok_or_else(|| LabError::Setup(format!("no broker {broker}")))?;
        if !self.mounts.contains(&dir) {
            return Err(LabError::Setup(format!(
                "broker {broker}'s data directory is not size-limited (ClusterSpec::disk_limit_mib)"
            )));
        }
        let path = dir.join(DISK_FILLER);
        let fill = move || -> std::io::Result<u64> {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            let chunk = vec![0u8; 1 << 20];
            let mut written = 0u64;
            // Whole chunks, then smaller ones, so that not even a page is left free.
            for size in [1 << 20, 4096, 1] {
                loop {
                    match file.write(&chunk[..size]) {
                        Ok(0) => break,
                        Ok(n) => written += n as u64,
                        Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(written)
        };
        tokio::task::spawn_blocking(fill)
            .await
            .map_err(|e| LabError::Setup(format!("filling the disk: {e}")))?
            .map_err(|e| LabError::io("filling a broker's disk", e))
    }

    /// Frees what [`Self::fill_disk`] took.
    pub fn free_disk(&self, broker: i32) -> Result<(), LabError> {
        let Some(dir) = self.broker_data_dir(broker) else { return Ok(()) };
        match std::fs::remove_file(dir.join(DISK_FILLER)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LabError::io("freeing a broker's disk", e)),
            _ => Ok(()),
        }
    }

    /// The controllers' ids.
    pub fn controller_ids(&self) -> Vec<i32> {
        self.nodes
            .iter()
            .filter_map(|n| match n.id {
                NodeId::Controller(c) => Some(c),
                NodeId::Broker(_) => None,
            })
            .collect()
    }

    /// This node as the packet filter sees it.
    pub fn peer(&self, id: NodeId) -> Result<Peer, LabError> {
        self.node(id).map(|n| n.process.peer()).ok_or_else(|| LabError::Setup(format!("no {id} in this cluster")))
    }

    fn net_cuts(&mut self) -> Result<&mut NetCuts, LabError> {
        if self.cuts.is_none() {
            self.cuts = Some(NetCuts::new()?);
        }
        Ok(self.cuts.as_mut().expect("just made"))
    }

    /// Cuts the link `from → to` one way: every call `from` makes to `to` times out, calls
    /// from `to` to `from` still work. Both keep running; clients still reach both.
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) -> Result<(), LabError> {
        let (from, to) = (self.peer(from)?, self.peer(to)?);
        Ok(self.net_cuts()?.cut(&from, &to)?)
    }

    /// Cuts the link between `a` and `b` both ways.
    pub fn cut(&mut self, a: NodeId, b: NodeId) -> Result<(), LabError> {
        let (a, b) = (self.peer(a)?, self.peer(b)?);
        Ok(self.net_cuts()?.cut_both(&a, &b)?)
    }

    /// Cuts `id` off from every other node, controllers included, both ways; clients
    /// still reach it (a zombie, if it led something).
    pub fn isolate(&mut self, id: NodeId) -> Result<(), LabError> {
        let node = self.peer(id)?;
        let others: Vec<Peer> = self.nodes.iter().filter(|n| n.id != id).map(|n| n.process.peer()).collect();
        Ok(self.net_cuts()?.isolate(&node, &others)?)
    }

    /// Restores every link cut (nothing to do when none was).
    pub fn heal_links(&mut self) -> Result<(), LabError> {
        if let Some(cuts) = self.cuts.as_mut() {
            cuts.heal()?;
        }
        Ok(())
    }

    /// The links cut now, as (from, to) node names.
    pub fn cut_links(&self) -> Vec<(String, String)> {
        self.cuts.as_ref().map(NetCuts::cuts).unwrap_or_default()
    }

    /// Restores cut links, resumes paused nodes and starts stopped ones (controllers first).
    pub fn heal(&mut self) -> Result<Vec<NodeId>, LabError> {
        self.heal_links()?;
        let mut acted = Vec::new();
        // A disk a fault filled and nobody freed (the fault's scenario failed midway): free
        // it and restart its broker, whose replicas went offline (they come back with a
        // restart), so that no later scenario meets a full disk.
        for broker in 1..=BROKERS {
            if self.broker_data_dir(broker).is_some_and(|d| d.join(DISK_FILLER).exists()) {
                self.free_disk(broker)?;
                self.kill(NodeId::Broker(broker));
                acted.push(NodeId::Broker(broker));
            }
        }
        let mut ids = self.node_ids();
        ids.sort_by_key(|id| matches!(id, NodeId::Broker(_)));
        for id in ids {
            if self.is_paused(id) {
                self.resume(id);
                acted.push(id);
            }
            if !self.is_running(id) {
                self.start_node(id)?;
                acted.push(id);
            }
        }
        Ok(acted)
    }

    /// Cluster metadata as fresh as any answering broker has it (the highest metadata
    /// version wins), asking each with a short deadline so a paused node cannot stall us.
    pub async fn metadata(&mut self) -> Option<pb::ClusterMetadata> {
        let mut best: Option<pb::ClusterMetadata> = None;
        for (_, address) in self.answering_brokers() {
            let Ok(cluster) = Cluster::new(&address) else { continue };
            let Ok(mut client) = cluster.broker(&address).await else { continue };
            let mut request = tonic_request(pb::MetadataRequest { topics: vec![] });
            request.set_timeout(Duration::from_millis(1_000));
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_millis(1_500), client.metadata(request)).await {
                if let Some(m) = r.into_inner().metadata {
                    if best.as_ref().is_none_or(|b| m.version > b.version) {
                        best = Some(m);
                    }
                }
            }
        }
        best
    }

    /// The partition as the freshest metadata shows it.
    pub async fn partition(&mut self, topic: &str, partition: i32) -> Option<pb::PartitionMetadata> {
        let metadata = self.metadata().await?;
        metadata
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .and_then(|t| t.partitions.into_iter().find(|p| p.partition == partition))
    }

    /// Waits until all brokers are registered, unfenced and answering.
    pub async fn wait_brokers_alive(&mut self, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.metadata().await {
                let alive = m.brokers.iter().filter(|b| !b.fenced && !b.in_controlled_shutdown).count();
                if alive >= BROKERS as usize && self.answering_brokers().len() == BROKERS as usize {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: "all brokers alive".into(),
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a topic (RF 3) through an answering broker and waits until every partition
    /// has a leader, a full ISR, and every replica hosts it.
    pub async fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        min_insync_replicas: i32,
        timeout: Duration,
    ) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        let request = pb::CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor: BROKERS,
            min_insync_replicas,
            unclean_leader_election_enable: false,
            ..Default::default()
        };
        let mut last = String::from("no broker answered");
        let mut created = false;
        while !created {
            for (_, address) in self.answering_brokers() {
                let Ok(cluster) = Cluster::new(&address) else { continue };
                // The broker forwards to the controller (10 s) and waits for its metadata (5 s).
                match tokio::time::timeout(Duration::from_secs(20), cluster.create_topic(request.clone())).await {
                    Ok(Ok(_)) => {
                        created = true;
                        break;
                    }
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = format!("{address} did not answer CreateTopic within 20 s"),
                }
            }
            if !created {
                if Instant::now() >= deadline {
                    return Err(LabError::Setup(format!("cannot create topic {name}: {last}")));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let topics = vec![name.to_string()];
        loop {
            let ready = match self.metadata().await {
                Some(m) => m.topics.iter().any(|t| {
                    t.name == name
                        && t.partitions.len() == partitions as usize
                        && t.partitions.iter().all(|p| p.leader >= 0 && p.isr.len() == BROKERS as usize)
                }),
                None => false,
            };
            if ready {
                let described = self.describe_replicas(&topics).await;
                let hosted = described.iter().filter(|d| d.replicas.len() == partitions as usize).count();
                if hosted == BROKERS as usize {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("topic {name} ready on all brokers"),
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every answering broker's view of its replicas of `topics`.
    pub async fn describe_replicas(&mut self, topics: &[String]) -> Vec<pb::DescribeReplicasResponse> {
        let mut out = Vec::new();
        for (_, address) in self.answering_brokers() {
            let Ok(cluster) = Cluster::new(&address) else { continue };
            let Ok(mut client) = cluster.broker(&address).await else { continue };
            let mut request = tonic_request(pb::DescribeReplicasRequest { topics: topics.to_vec() });
            request.set_timeout(Duration::from_millis(1_500));
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_millis(2_000), client.describe_replicas(request)).await
            {
                out.push(r.into_inner());
            }
        }
        out
    }

    /// Waits until the topic is whole again: every broker alive, each partition led with
    /// the full ISR, every replica at the same log end, and the leader's HW at that end
    /// (so everything written is committed and readable).
    pub async fn wait_healed(&mut self, topic: &str, partitions: i32, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        let topics = vec![topic.to_string()];
        loop {
            let last = match self.healed_now(topic, partitions, &topics).await {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("{topic} to heal (last: {last})"),
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn healed_now(&mut self, topic: &str, partitions: i32, topics: &[String]) -> Result<(), String> {
        let m = self.metadata().await.ok_or("no metadata")?;
        let alive = m.brokers.iter().filter(|b| !b.fenced && !b.in_controlled_shutdown).count();
        if alive < BROKERS as usize {
            return Err(format!("{alive} of {BROKERS} brokers alive"));
        }
        let t = m.topics.iter().find(|t| t.name == topic).ok_or("topic missing from metadata")?;
        for p in &t.partitions {
            if p.leader < 0 || p.isr.len() < p.replicas.len() {
                return Err(format!("partition {}: leader {} ISR {:?}", p.partition, p.leader, p.isr));
            }
        }
        let described = self.describe_replicas(topics).await;
        for partition in 0..partitions {
            let replicas: Vec<&pb::ReplicaDescription> =
                described.iter().flat_map(|d| d.replicas.iter()).filter(|r| r.partition == partition).collect();
            if replicas.len() < BROKERS as usize {
                return Err(format!("partition {partition}: {} replicas answered", replicas.len()));
            }
            let leo = replicas[0].log_end_offset;
            if replicas.iter().any(|r| r.log_end_offset != leo) {
                let leos: Vec<i64> = replicas.iter().map(|r| r.log_end_offset).collect();
                return Err(format!("partition {partition}: log end offsets {leos:?}"));
            }
            let leader = replicas.iter().find(|r| r.is_leader).ok_or("no replica says it leads")?;
            if leader.high_watermark != leo {
                return Err(format!("partition {partition}: HW {} < LEO {leo}", leader.high_watermark));
            }
        }
        Ok(())
    }

    /// Reads a stopped broker's replica READ-ONLY: its segment files in offset order and the
    /// HW in its `replication-offset-checkpoint`. Never `PartitionLog::open`, which recovers
    /// (and may truncate or rewrite) what it opens.
    pub fn read_replica(&self, broker: i32, topic: &str, partition: i32) -> Result<ReplicaLog, LabError> {
        let data_dir = self
            .broker_data_dir(broker)
            .ok_or_else(|| LabError::Setup(format!("no broker {broker} in this cluster")))?;
        read_replica_dir(&data_dir, broker, topic, partition)
    }
}

/// See [`LabCluster::read_replica`]: `data_dir` is the broker's `--data-dir`.
pub fn read_replica_dir(data_dir: &Path, broker: i32, topic: &str, partition: i32) -> Result<ReplicaLog, LabError> {
    let checkpoints = OffsetCheckpointFile::new(data_dir.join("replication-offset-checkpoint")).read()?;
    let high_watermark = checkpoints.get(&TopicPartition::new(topic, partition)).copied().unwrap_or(0);
    let dir = data_dir.join(format!("{topic}-{partition}"));
    let mut segments: BTreeMap<i64, PathBuf> = BTreeMap::new();
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|e| LabError::io(format!("listing {}", dir.display()), e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(base) = parse_base_offset(&name, ".log") {
                    segments.insert(base, entry.path());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(LabError::io(format!("listing {}", dir.display()), e)),
    }
    let mut records = Vec::new();
    for path in segments.values() {
        let bytes = std::fs::read(path).map_err(|e| LabError::io(format!("reading {}", path.display()), e))?;
        for batch in iter_batches(&bytes) {
            let (_, batch) = batch.map_err(|e| LabError::Batch { path: path.clone(), source: e })?;
            for record in decode_records(batch).map_err(|e| LabError::Batch { path: path.clone(), source: e })? {
                records.push((record.offset, value_text(record.value.as_deref())));
            }
        }
    }
    Ok(ReplicaLog { broker, high_watermark, records })
}

/// A record value as the checker compares it (the lab writes UTF-8; a null shows as such).
pub fn value_text(value: Option<&[u8]>) -> String {
    match value {
        Some(v) => String::from_utf8_lossy(v).into_owned(),
        None => "<null>".to_string(),
    }
}

fn tonic_request<T>(message: T) -> tonic::Request<T> {
    tonic::Request::new(message)
}

impl Drop for LabCluster {
    /// Kill every process before the temporary directory is removed under it.
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.process.kill();
        }
        // Kept data stays mounted (its files live only there); otherwise unmount, lazily in
        // case a killed process has not quite let go.
        if self.dir.is_some() {
            for dir in &self.mounts {
                let _ = std::process::Command::new("umount").arg("-l").arg(dir).status();
            }
        }
    }
}
