//! Assembles a node from its roles (Kafka `KafkaRaftServer`: `BrokerServer` and/or
//! `ControllerServer`) on one gRPC listener (plus, for brokers, the Kafka wire-protocol
//! listener of `kafka/`), and shuts it down in order: controlled
//! shutdown first (leadership moves away while we still serve), then fetchers, then the
//! listener, then HW checkpoint and log flush.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use insync_controller::{ControllerConfig, ControllerNode, LeaderBalanceConfig};
use insync_proto as pb;
use insync_proto::broker_server::BrokerServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::BrokerArgs;
use crate::controller_link::{run_alter_partition, run_lifecycle, run_metadata_watch, run_session, ControllerLink};
use crate::fetcher::run_fetcher_manager;
use crate::producer_ids::ProducerIdManager;
use crate::replica_manager::ReplicaManager;
use crate::service::BrokerService;

/// HTTP/2 header block a gRPC request may carry (metadata is a few hundred bytes).
const MAX_GRPC_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// The largest gRPC request a broker service decodes: a ProduceRequest carries one batch of
/// at most message.max.bytes plus its framing, and a follower's fetch lists its partitions
/// (4 MiB is room for about 80,000 of them).
fn max_broker_request_bytes(args: &BrokerArgs) -> usize {
    args.message_max_bytes.saturating_add(64 * 1024).clamp(4 * 1024 * 1024, pb::MAX_GRPC_MESSAGE_BYTES)
}

/// The broker role's running parts, for the ordered shutdown.
struct BrokerParts {
    replica_manager: Arc<ReplicaManager>,
    lifecycle: JoinHandle<()>,
    fetchers: JoinHandle<()>,
    kafka: Option<JoinHandle<()>>,
}

/// The node's shutdown signals: `shutdown` starts controlled shutdown, `stop_serving` stops
/// the listeners, fetchers and periodic chores once leaderships have moved.
struct Signals {
    shutdown_tx: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
    stop_serving_tx: watch::Sender<bool>,
    stop_serving_rx: watch::Receiver<bool>,
}

/// Runs the node until `shutdown_signal` resolves, then shuts down cleanly.
pub async fn run(args: BrokerArgs, shutdown_signal: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let args = Arc::new(args);
    if let Some(ip) = args.outgoing_address() {
        pb::set_local_address(ip); // every connection this node opens starts from its own address
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let listener =
        TcpListener::bind(args.listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let metrics_enabled = crate::metrics::serve(&args)?;
    // Bound before anything starts, so an address the operator chose that is taken fails
    // the start like --listen does.
    let kafka_listener = if args.roles.broker { crate::kafka::bind(&args).await? } else { None };
    let controller = if args.roles.controller { Some(start_controller(&args).await?) } else { None };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (stop_serving_tx, stop_serving_rx) = watch::channel(false);
    let signals = Signals { shutdown_tx, shutdown_rx, stop_serving_tx, stop_serving_rx };
    let (broker, broker_service) = if args.roles.broker {
        let (parts, service) = start_broker(&args, kafka_listener, &signals)?;
        (Some(parts), Some(service))
    } else {
        (None, None)
    };
    if metrics_enabled {
        tokio::spawn(crate::metrics::run_gauges(
            broker.as_ref().map(|b| b.replica_manager.clone()),
            controller.as_ref().map(|c| c.observer()),
            signals.shutdown_rx.clone(),
        ));
    }
    info!(
        "node {} listening on {} (roles:{}{})",
        args.node_id,
        args.listen,
        if args.roles.broker { " broker" } else { "" },
        if args.roles.controller { " controller" } else { "" }
    );
    let controller_service = controller.as_ref().map(|c| c.service());
    let mut stop_serving = signals.stop_serving_rx.clone();
    let server = pb::server_builder()
        .max_concurrent_streams(Some(args.grpc_max_concurrent_streams))
        // Dead peers (a killed host, a cut network) are noticed and their slots freed.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .http2_max_header_list_size(Some(MAX_GRPC_HEADER_LIST_BYTES))
        .add_optional_service(broker_service)
        .add_optional_service(controller_service)
        .serve_with_incoming_shutdown(
            crate::grpc_limits::incoming(
                listener,
                args.grpc_max_connections as usize,
                args.grpc_max_connections_per_ip as usize,
            ),
            async move {
                let _ = stop_serving.wait_for(|stop| *stop).await;
            },
        );
    let server = tokio::spawn(server);
    shutdown_signal.await;
    shut_down(&args, signals, broker, controller, server).await;
    Ok(())
}

/// Starts the controller role (Kafka `ControllerServer`).
async fn start_controller(args: &BrokerArgs) -> anyhow::Result<ControllerNode> {
    let voters = insync_controller::parse_quorum(&args.controller_quorum)?;
    let node_id = u64::try_from(args.node_id).map_err(|_| anyhow::anyhow!("--node-id must be ≥ 0 for a controller"))?;
    anyhow::ensure!(
        voters.contains_key(&node_id),
        "controller {node_id} is not among the voters of --controller-quorum {}",
        args.controller_quorum
    );
    ControllerNode::start(ControllerConfig {
        node_id,
        data_dir: args.data_dir.clone(),
        voters,
        broker_session_timeout_ms: args.broker_session_timeout_ms,
        broker_session_close_grace_ms: args.broker_session_close_grace_ms,
        default_min_insync_replicas: args.min_insync_replicas,
        leader_balance: LeaderBalanceConfig {
            enabled: args.auto_leader_rebalance_enable,
            check_interval: Duration::from_secs(args.leader_imbalance_check_interval_seconds),
            per_broker_percentage: args.leader_imbalance_per_broker_percentage,
        },
    })
    .await
}

/// Starts the broker role (Kafka `BrokerServer`): the replica manager, its tasks (lifecycle,
/// metadata watch, AlterPartition, fetchers, periodic chores), the Kafka listener, and the
/// gRPC service to add to the server.
fn start_broker(
    args: &Arc<BrokerArgs>,
    kafka_listener: Option<(TcpListener, String)>,
    signals: &Signals,
) -> anyhow::Result<(BrokerParts, BrokerServer<BrokerService>)> {
    let (alter_tx, alter_rx) = mpsc::channel(1024);
    let replica_manager = ReplicaManager::new(args.clone(), alter_tx)?;
    let link = Arc::new(ControllerLink::new(&args.controller_quorum)?);
    let incarnation = incarnation_id();
    let (registered_tx, registered_rx) = watch::channel(false);
    let kafka_address = kafka_listener.as_ref().map(|(_, address)| address.clone()).unwrap_or_default();
    let lifecycle = tokio::spawn(run_lifecycle(
        link.clone(),
        replica_manager.clone(),
        args.advertised_address(),
        kafka_address,
        incarnation,
        signals.shutdown_rx.clone(),
        registered_tx,
    ));
    let stop_serving = &signals.stop_serving_rx;
    let broker_id = replica_manager.broker_id;
    tokio::spawn(run_session(link.clone(), broker_id, incarnation, registered_rx, stop_serving.clone()));
    tokio::spawn(run_metadata_watch(link.clone(), replica_manager.clone(), stop_serving.clone()));
    tokio::spawn(run_alter_partition(link.clone(), replica_manager.clone(), alter_rx));
    let fetchers = tokio::spawn(run_fetcher_manager(replica_manager.clone(), stop_serving.clone()));
    tokio::spawn(run_periodic(replica_manager.clone(), stop_serving.clone()));
    tokio::spawn(run_retention(replica_manager.clone(), stop_serving.clone()));
    let producer_ids = Arc::new(ProducerIdManager::new(link.clone(), replica_manager.broker_id, incarnation));
    let (group_storage, groups) = start_group_coordinator(args, &replica_manager, &link, stop_serving);
    let kafka = kafka_listener.map(|(listener, _)| {
        let context = crate::kafka::KafkaContext::new(
            replica_manager.clone(),
            producer_ids.clone(),
            link.clone(),
            groups.clone(),
            group_storage.clone(),
        );
        tokio::spawn(crate::kafka::serve(listener, context, stop_serving.clone()))
    });
    let service =
        BrokerServer::new(BrokerService { replica_manager: replica_manager.clone(), link, producer_ids, groups })
            // Checked against the length prefix before a request is buffered: nothing a broker
            // is sent is larger than one batch of message.max.bytes plus framing.
            .max_decoding_message_size(max_broker_request_bytes(args))
            .max_encoding_message_size(pb::MAX_GRPC_MESSAGE_BYTES);
    Ok((BrokerParts { replica_manager, lifecycle, fetchers, kafka }, service))
}

/// The consumer-group coordinator (`crate::group`) over `__consumer_offsets`, its timer
/// task, and the task loading/unloading its partitions' groups.
fn start_group_coordinator(
    args: &BrokerArgs,
    replica_manager: &Arc<ReplicaManager>,
    link: &Arc<ControllerLink>,
    stop: &watch::Receiver<bool>,
) -> (Arc<crate::group::storage::GroupStorage>, Arc<crate::group::GroupCoordinator>) {
    let config = crate::group::coordinator::CoordinatorConfig {
        initial_rebalance_delay_ms: i64::try_from(args.group_initial_rebalance_delay_ms).unwrap_or(i64::MAX),
        offsets_retention_ms: i64::try_from(args.offsets_retention_minutes.saturating_mul(60_000)).unwrap_or(i64::MAX),
        offsets_retention_check_interval_ms: i64::try_from(args.offsets_retention_check_interval_ms)
            .unwrap_or(i64::MAX),
        ..Default::default()
    };
    let storage = crate::group::storage::GroupStorage::start(replica_manager.clone(), link.clone(), stop.clone());
    let events = storage.subscribe();
    let groups = crate::group::GroupCoordinator::new(storage.clone(), config);
    tokio::spawn(groups.clone().run_timers(stop.clone()));
    tokio::spawn(groups.clone().run_events(events));
    (storage, groups)
}

/// The ordered shutdown: controlled shutdown first (leadership moves away while we still
/// serve), the controller, then the listeners and fetchers, then HW checkpoint and flush.
async fn shut_down(
    args: &BrokerArgs,
    signals: Signals,
    broker: Option<BrokerParts>,
    controller: Option<ControllerNode>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
) {
    info!("node {}: shutting down", args.node_id);
    let _ = signals.shutdown_tx.send(true);
    let mut broker = broker;
    if let Some(parts) = &mut broker {
        // Controlled shutdown runs inside the lifecycle task; bounded by its own timeout.
        let timeout = Duration::from_millis(args.controlled_shutdown_timeout_ms + 2_000);
        let _ = tokio::time::timeout(timeout, &mut parts.lifecycle).await;
    }
    // The controller goes first: it ends its WatchMetadata streams, which a graceful
    // server stop would otherwise wait on.
    if let Some(controller) = &controller {
        controller.shutdown().await;
    }
    let _ = signals.stop_serving_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    if let Some(parts) = broker {
        if let Some(kafka) = parts.kafka {
            let _ = tokio::time::timeout(Duration::from_secs(5), kafka).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), parts.fetchers).await;
        // Checkpoint, fsync every log and write producer snapshots: disk work, off the workers.
        let replica_manager = parts.replica_manager;
        let _ = tokio::task::spawn_blocking(move || replica_manager.shutdown()).await;
    }
    info!("node {}: stopped", args.node_id);
}

/// Periodic broker chores: the ISR shrink check every replica.lag.time.max.ms / 2 (Kafka
/// `ReplicaManager.startup` schedules "isr-expiration" so) and the HW and log start offset
/// checkpoints. Retention runs in a task of its own (`run_retention`), so a long pass never
/// delays an ISR shrink.
async fn run_periodic(replica_manager: Arc<ReplicaManager>, mut stop: watch::Receiver<bool>) {
    let config = &replica_manager.config;
    let shrink_every = Duration::from_millis((config.replica_lag_time_max_ms / 2).max(10));
    let checkpoint_every = Duration::from_millis(config.high_watermark_checkpoint_interval_ms.max(100));
    let mut shrink = tokio::time::interval(shrink_every);
    let mut checkpoint = tokio::time::interval(checkpoint_every);
    shrink.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shrink.tick() => replica_manager.shrink_isr_tick(),
            _ = checkpoint.tick() => {
                let replica_manager = replica_manager.clone();
                let _ = tokio::task::spawn_blocking(move || replica_manager.checkpoint_high_watermarks()).await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// Retention over every hosted log every log.retention.check.interval.ms (Kafka
/// `LogManager`'s "kafka-log-retention" task), off the async workers.
async fn run_retention(replica_manager: Arc<ReplicaManager>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_millis(replica_manager.config.log_retention_check_interval_ms);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let replica_manager = replica_manager.clone();
                let _ = tokio::task::spawn_blocking(move || replica_manager.enforce_retention()).await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// A number unique to this process start (Kafka's broker epoch / incarnation id).
fn incarnation_id() -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}
