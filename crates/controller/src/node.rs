//! One controller process's lifecycle: opens the durable Raft storage, starts openraft,
//! initializes a fresh quorum (smallest voter id only), and runs the two background tasks —
//! role tracking from Raft metrics, and broker liveness (fencing brokers whose session
//! expired, Kafka `BrokerHeartbeatManager` + `ReplicationControlManager.maybeFenceOneStaleBroker`).
//! The gRPC server itself belongs to the caller (the broker binary, or tests), which adds
//! `ControllerNode::service()` to its tonic `Server`.
use crate::command::Command;
use crate::error::QuorumError;
use crate::heartbeat::{BrokerHeartbeatManager, StaleBroker, StaleCause};
use crate::leader_balance;
use crate::metadata::AppliedMetadata;
use crate::raft::{raft_config, ControllerNetworkFactory, ControllerRaft, LogStore, NodeId, StateMachineStore};
use crate::role::{role_from_metrics, ControllerRole};
use crate::service::{ControllerService, ServiceShared};
use insync_proto::controller_server::ControllerServer;
use insync_proto::MAX_GRPC_MESSAGE_BYTES;
use openraft::error::{InitializeError, RaftError};
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Kafka's `broker.session.timeout.ms` is 9000; insync uses 3000 for a laptop.
pub const DEFAULT_BROKER_SESSION_TIMEOUT_MS: u64 = 3000;
/// How long a broker's closed session stream may stay closed before it is fenced early (see
/// `heartbeat`): long enough for a live broker to reconnect after a reset on a LAN, short
/// against the session timeout.
pub const DEFAULT_BROKER_SESSION_CLOSE_GRACE_MS: u64 = 250;
/// Kafka's `min.insync.replicas` default.
pub const DEFAULT_MIN_INSYNC_REPLICAS: i32 = 1;
/// How often the active controller looks for expired broker sessions.
pub const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Bound on waiting for a triggered snapshot.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);
/// Bound on openraft's own shutdown.
const RAFT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Configuration of one controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This controller's id; must be one of `voters`.
    pub node_id: u64,
    /// Raft files go to `<data_dir>/raft/`.
    pub data_dir: PathBuf,
    /// id → advertised address (host:port) of every voter (Kafka `controller.quorum.voters`,
    /// see `parse_quorum`).
    pub voters: BTreeMap<u64, String>,
    /// A broker silent this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// A broker whose session stream closed and stayed closed this long, with no heartbeat
    /// since, is fenced early; 0: only the session timeout fences.
    pub broker_session_close_grace_ms: u64,
    /// Served in metadata; topics without an override use it.
    pub default_min_insync_replicas: i32,
    /// Automatic preferred leader election.
    pub leader_balance: LeaderBalanceConfig,
}

/// Kafka's `auto.leader.rebalance.enable`, `leader.imbalance.check.interval.seconds` and
/// `leader.imbalance.per.broker.percentage`.
#[derive(Debug, Clone, Copy)]
pub struct LeaderBalanceConfig {
    pub enabled: bool,
    pub check_interval: Duration,
    pub per_broker_percentage: u32,
}

impl Default for LeaderBalanceConfig {
    fn default() -> Self {
        LeaderBalanceConfig {
            enabled: leader_balance::DEFAULT_AUTO_LEADER_REBALANCE_ENABLE,
            check_interval: Duration::from_secs(leader_balance::DEFAULT_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS),
            per_broker_percentage: leader_balance::DEFAULT_LEADER_IMBALANCE_PER_BROKER_PERCENTAGE,
        }
    }
}

impl ControllerConfig {
    /// A configuration with insync's defaults for the session timeout and min ISR.
    pub fn new(node_id: u64, data_dir: impl Into<PathBuf>, voters: BTreeMap<u64, String>) -> Self {
        ControllerConfig {
            node_id,
            data_dir: data_dir.into(),
            voters,
            broker_session_timeout_ms: DEFAULT_BROKER_SESSION_TIMEOUT_MS,
            broker_session_close_grace_ms: DEFAULT_BROKER_SESSION_CLOSE_GRACE_MS,
            default_min_insync_replicas: DEFAULT_MIN_INSYNC_REPLICAS,
            leader_balance: LeaderBalanceConfig::default(),
        }
    }
}

/// A running controller.
pub struct ControllerNode {
    node_id: NodeId,
    raft: ControllerRaft,
    service: ControllerService,
    shutdown_sender: watch::Sender<bool>,
    is_shut_down: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl ControllerNode {
    /// Opens storage, starts Raft and the background tasks. Returns once the node runs; it
    /// may not be the active controller yet (see `metrics_leader`).
    pub async fn start(config: ControllerConfig) -> anyhow::Result<ControllerNode> {
        if !config.voters.contains_key(&config.node_id) {
            return Err(QuorumError::NotAVoter {
                node_id: config.node_id,
                voters: config.voters.keys().copied().collect(),
            }
            .into());
        }
        anyhow::ensure!(config.broker_session_timeout_ms > 0, "broker session timeout must be positive");
        anyhow::ensure!(config.default_min_insync_replicas >= 1, "default min.insync.replicas must be at least 1");

        let raft_directory = config.data_dir.join("raft");
        let log_store = LogStore::open(&raft_directory).await?;
        let state_machine = StateMachineStore::open(&raft_directory).await?;
        let metadata = state_machine.subscribe();
        let network = ControllerNetworkFactory::new(config.node_id, config.voters.clone());
        let raft =
            ControllerRaft::new(config.node_id, Arc::new(raft_config()?), network, log_store, state_machine).await?;

        // KRaft bootstraps the quorum once (`kafka-storage format`); here the smallest voter id
        // initializes a fresh store with every voter and the others wait to be contacted.
        let smallest_voter = config.voters.keys().next().copied();
        if smallest_voter == Some(config.node_id) && !raft.is_initialized().await? {
            let members: BTreeMap<NodeId, BasicNode> =
                config.voters.iter().map(|(id, address)| (*id, BasicNode { addr: address.clone() })).collect();
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(
                    "controller {} initialized the quorum with voters {:?}",
                    config.node_id,
                    config.voters
                ),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                    tracing::info!("controller {}: quorum already initialized", config.node_id)
                }
                Err(error) => return Err(error.into()),
            }
        }

        let (shutdown_sender, shutdown) = watch::channel(false);
        let close_grace = (config.broker_session_close_grace_ms > 0)
            .then(|| Duration::from_millis(config.broker_session_close_grace_ms));
        let (role_sender, role) = watch::channel(ControllerRole::default());
        let service = ControllerService::new(ServiceShared {
            node_id: config.node_id,
            voters: config.voters.clone(),
            raft: raft.clone(),
            metadata,
            role,
            heartbeats: Arc::new(Mutex::new(
                BrokerHeartbeatManager::new(config.broker_session_timeout_ms).with_close_grace(close_grace),
            )),
            session_closed: Arc::new(Notify::new()),
            default_min_insync_replicas: config.default_min_insync_replicas,
            shutdown: shutdown.clone(),
        });
        let mut tasks = vec![
            tokio::spawn(track_role(config.node_id, raft.clone(), role_sender, shutdown.clone())),
            tokio::spawn(fence_expired_sessions(service.clone(), shutdown.clone())),
        ];
        if config.leader_balance.enabled {
            tasks.push(tokio::spawn(balance_leaders(service.clone(), config.leader_balance, shutdown)));
        }
        tracing::info!(
            "controller {} started (data in {}, voters {:?}, broker session timeout {} ms, close grace {} ms)",
            config.node_id,
            raft_directory.display(),
            config.voters,
            config.broker_session_timeout_ms,
            config.broker_session_close_grace_ms
        );
        Ok(ControllerNode {
            node_id: config.node_id,
            raft,
            service,
            shutdown_sender,
            is_shut_down: AtomicBool::new(false),
            tasks: Mutex::new(tasks),
        })
    }

    /// The gRPC service to add to a tonic `Server` on this controller's listen address.
    pub fn service(&self) -> ControllerServer<ControllerService> {
        ControllerServer::new(self.service.clone())
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
    }

    /// The Raft leader (active controller) this node knows of, if any.
    pub fn metrics_leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// Builds a metadata snapshot of everything applied so far and waits (bounded) until it
    /// is on disk. Raft does this by itself every `SNAPSHOT_EVERY_LOGS` entries; this is for
    /// operators and tests (a restart then loads the snapshot and replays only the log after it).
    pub async fn trigger_snapshot(&self) -> anyhow::Result<()> {
        let applied = self.raft.metrics().borrow().last_applied;
        self.raft.trigger().snapshot().await?;
        self.raft
            .wait(Some(SNAPSHOT_WAIT))
            .metrics(move |metrics| metrics.snapshot >= applied, "snapshot covers the applied log")
            .await?;
        Ok(())
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// A clonable read-only view of this controller's role and metadata (for the metrics task).
    pub fn observer(&self) -> ControllerObserver {
        let shared = self.service.shared();
        ControllerObserver { metadata: shared.metadata.clone(), role: shared.role.clone() }
    }

    /// Stops the background tasks, ends WatchMetadata streams (so a tonic graceful shutdown
    /// can complete: call this before awaiting the server), and stops Raft. Idempotent.
    pub async fn shutdown(&self) {
        if self.is_shut_down.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shutdown_sender.send_replace(true);
        match tokio::time::timeout(RAFT_SHUTDOWN_TIMEOUT, self.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!("controller {}: raft shutdown: {error}", self.node_id),
            Err(_) => tracing::warn!(
                "controller {}: raft did not stop within {} ms",
                self.node_id,
                RAFT_SHUTDOWN_TIMEOUT.as_millis()
            ),
        }
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            // The tasks watch the shutdown flag; a proposal in flight is bounded by
            // PROPOSAL_TIMEOUT, but Raft is already down so it fails at once.
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), task).await.is_err() {
                tracing::warn!("controller {}: a background task did not stop within 1 s; aborting it", self.node_id);
                abort.abort();
            }
        }
        tracing::info!("controller {} stopped", self.node_id);
    }
}

/// What a periodic reader needs of a controller, read from its watch channels (never Raft),
/// so a metrics scrape cannot slow the quorum down.
#[derive(Clone)]
pub struct ControllerObserver {
    metadata: watch::Receiver<Arc<AppliedMetadata>>,
    role: watch::Receiver<ControllerRole>,
}

impl ControllerObserver {
    /// Whether this node is the active controller (Kafka's `ActiveControllerCount`).
    pub fn is_active(&self) -> bool {
        self.role.borrow().is_active
    }

    /// Partitions with no leader, as the active controller sees them; None on a standby
    /// controller (Kafka reports `OfflinePartitionsCount` from the active controller only,
    /// so summing over controllers never counts a partition twice).
    pub fn offline_partitions(&self) -> Option<usize> {
        if !self.is_active() {
            return None;
        }
        Some(self.metadata.borrow().state.offline_partition_count())
    }
}

impl Drop for ControllerNode {
    /// Without `shutdown()`, still stop the background tasks and end metadata streams (Raft
    /// itself stops when its last handle, held by the gRPC service, is gone).
    fn drop(&mut self) {
        self.shutdown_sender.send_replace(true);
        for task in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
    }
}

/// Republishes the controller role whenever Raft metrics change it. The metrics are cloned
/// and the borrow released at once (never held across an await).
async fn track_role(
    node_id: NodeId,
    raft: ControllerRaft,
    role_sender: watch::Sender<ControllerRole>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut metrics = raft.metrics();
    loop {
        let snapshot = metrics.borrow_and_update().clone();
        let role = role_from_metrics(node_id, &snapshot);
        role_sender.send_if_modified(|current| {
            if *current == role {
                return false;
            }
            if role.leader_id != current.leader_id {
                match role.leader_id {
                    Some(leader) => tracing::info!(
                        "controller {node_id}: controller {leader} is the active controller (term {})",
                        role.term
                    ),
                    None => tracing::info!("controller {node_id}: no active controller (term {})", role.term),
                }
            }
            *current = role;
            true
        });
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// On the active controller only: every `LIVENESS_CHECK_INTERVAL`, fence each unfenced
/// broker whose last heartbeat is older than the session timeout, one proposal at a time
/// (Kafka fences one stale broker per event so each fencing is visible before the next).
/// A closed session stream wakes it too, to look again once the close grace has passed.
async fn fence_expired_sessions(service: ControllerService, mut shutdown: watch::Receiver<bool>) {
    let shared = service.shared();
    let close_grace = shared.heartbeats.lock().unwrap_or_else(|p| p.into_inner()).close_grace();
    let mut ticker = tokio::time::interval(LIVENESS_CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut active_term: Option<u64> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shared.session_closed.notified(), if close_grace.is_some() => {
                tokio::select! {
                    _ = tokio::time::sleep(close_grace.unwrap_or_default()) => {}
                    _ = shutdown.changed() => return,
                }
            }
            _ = shutdown.changed() => return,
        }
        let role = shared.role.borrow().clone();
        if !role.is_active {
            active_term = None;
            continue;
        }
        let applied = Arc::clone(&shared.metadata.borrow());
        let fencings = {
            let mut heartbeats = shared.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
            expired_sessions(
                &mut heartbeats,
                shared.node_id,
                &mut active_term,
                role.term,
                &applied.state,
                Instant::now(),
            )
        };
        for (broker, reason) in fencings {
            let command = Command::FenceBroker { broker_id: broker.broker_id, incarnation: broker.incarnation, reason };
            match service.propose(command).await {
                Ok(result) if !result.is_ok() => tracing::debug!(
                    "fencing broker {} was refused: {} {}",
                    broker.broker_id,
                    result.error_code,
                    result.error_message
                ),
                Ok(_) => {
                    if matches!(broker.cause, StaleCause::ConnectionClosed { .. }) {
                        let mut heartbeats = shared.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
                        heartbeats.fenced_early(broker.broker_id, broker.incarnation, Instant::now());
                    }
                }
                Err(refusal) => {
                    tracing::warn!("could not fence broker {}: {} {}", broker.broker_id, refusal.code, refusal.message);
                    break;
                }
            }
        }
    }
}

/// On the active controller only: every `check_interval`, move leadership back to the
/// preferred replicas of the brokers whose imbalance is over the percentage (Kafka's
/// `QuorumController` schedules `maybeBalancePartitionLeaders` the same way). Each pass is one
/// proposal; the state machine checks every partition again when it applies it.
async fn balance_leaders(service: ControllerService, config: LeaderBalanceConfig, mut shutdown: watch::Receiver<bool>) {
    let shared = service.shared();
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + config.check_interval, config.check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !shared.role.borrow().is_active {
            continue;
        }
        let applied = Arc::clone(&shared.metadata.borrow());
        let partitions = leader_balance::imbalanced_partitions(&applied.state, config.per_broker_percentage);
        if partitions.is_empty() {
            continue;
        }
        let reason = format!(
            "automatic: leader imbalance over {}% (leader.imbalance.per.broker.percentage)",
            config.per_broker_percentage
        );
        if let Err(refusal) = service.propose(Command::ElectPreferredLeaders { partitions, reason }).await {
            tracing::warn!("could not propose preferred leader elections: {} {}", refusal.code, refusal.message);
        }
    }
}

/// The fencings due now, with their reasons; on the first check of a new term, none: every
/// session restarts instead (heartbeats went to the previous active controller).
fn expired_sessions(
    heartbeats: &mut BrokerHeartbeatManager,
    node_id: NodeId,
    active_term: &mut Option<u64>,
    term: u64,
    state: &crate::metadata::ClusterState,
    now: Instant,
) -> Vec<(StaleBroker, String)> {
    if *active_term != Some(term) {
        heartbeats.reset_all(state.brokers.keys().copied(), now);
        *active_term = Some(term);
        tracing::info!(
            "controller {node_id} is active (term {term}): every broker gets a fresh session of {} ms",
            heartbeats.session_timeout_ms()
        );
        return Vec::new();
    }
    let stale = heartbeats.stale_brokers(state, now);
    stale
        .into_iter()
        .map(|broker| {
            let reason = heartbeats.fence_reason(&broker);
            (broker, reason)
        })
        .collect()
}
