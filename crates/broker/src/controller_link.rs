//! The broker's side of the controller protocol (Kafka `BrokerLifecycleManager`,
//! `BrokerToControllerChannelManager`): register, heartbeat, controlled shutdown, the
//! metadata feed, and AlterPartition — always to the active controller, following
//! NOT_CONTROLLER hints and rotating through the quorum on transport errors.
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use insync_proto as pb;
use insync_proto::controller_client::ControllerClient;
use insync_replication::{alter_partition_error_action, AlterPartitionErrorAction, IsrChange};
use insync_types::{BrokerId, ErrorCode, TopicPartition};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::replica_manager::{AlterPartitionJob, ReplicaManager};

/// Replies that carry a `ControllerError`.
pub trait ControllerReply {
    fn controller_error(&self) -> (ErrorCode, String, String);
}

fn split(e: &Option<pb::ControllerError>) -> (ErrorCode, String, String) {
    match e {
        Some(e) => (ErrorCode::from_code(e.error_code), e.error_message.clone(), e.leader_address.clone()),
        None => (ErrorCode::NONE, String::new(), String::new()),
    }
}

impl ControllerReply for pb::RegisterBrokerResponse {
    fn controller_error(&self) -> (ErrorCode, String, String) {
        split(&self.error)
    }
}
impl ControllerReply for pb::BrokerHeartbeatResponse {
    fn controller_error(&self) -> (ErrorCode, String, String) {
        split(&self.error)
    }
}
impl ControllerReply for pb::AlterPartitionResponse {
    fn controller_error(&self) -> (ErrorCode, String, String) {
        split(&self.error)
    }
}
impl ControllerReply for pb::AllocateProducerIdsResponse {
    fn controller_error(&self) -> (ErrorCode, String, String) {
        split(&self.error)
    }
}
impl ControllerReply for pb::CreateTopicResponse {
    fn controller_error(&self) -> (ErrorCode, String, String) {
        (ErrorCode::from_code(self.error_code), self.error_message.clone(), String::new())
    }
}
impl ControllerReply for pb::AlterTopicConfigsResponse {
    fn controller_error(&self) -> (ErrorCode, String, String) {
        (ErrorCode::from_code(self.error_code), self.error_message.clone(), String::new())
    }
}
impl ControllerReply for pb::CreatePartitionsResponse {
    fn controller_error(&self) -> (ErrorCode, String, String) {
        (ErrorCode::from_code(self.error_code), self.error_message.clone(), String::new())
    }
}
impl ControllerReply for pb::DeleteTopicResponse {
    fn controller_error(&self) -> (ErrorCode, String, String) {
        (ErrorCode::from_code(self.error_code), self.error_message.clone(), String::new())
    }
}
impl ControllerReply for pb::ElectLeadersResponse {
    fn controller_error(&self) -> (ErrorCode, String, String) {
        (ErrorCode::from_code(self.error_code), self.error_message.clone(), String::new())
    }
}

/// Error of a controller call that could not reach an active controller in time.
#[derive(Debug, thiserror::Error)]
#[error("no active controller answered within {0:?}: {1}")]
pub struct NoController(pub Duration, pub String);

/// A handle on the controller quorum.
pub struct ControllerLink {
    voters: Vec<String>,
    /// The address believed to be the active controller (from NOT_CONTROLLER hints).
    active: Mutex<Option<String>>,
    channels: Mutex<HashMap<String, Channel>>,
    next_voter: Mutex<usize>,
}

impl ControllerLink {
    /// `quorum` in Kafka's controller.quorum.voters form: `1@host:port,2@host:port`.
    pub fn new(quorum: &str) -> anyhow::Result<ControllerLink> {
        let mut voters = Vec::new();
        for entry in quorum.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (id, address) = entry
                .split_once('@')
                .ok_or_else(|| anyhow::anyhow!("bad --controller-quorum entry '{entry}': expected ID@HOST:PORT"))?;
            id.parse::<u64>()
                .map_err(|_| anyhow::anyhow!("bad --controller-quorum entry '{entry}': '{id}' is not a node id"))?;
            voters.push(address.to_string());
        }
        anyhow::ensure!(!voters.is_empty(), "--controller-quorum names no controller");
        Ok(ControllerLink {
            voters,
            active: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
            next_voter: Mutex::new(0),
        })
    }

    fn candidate(&self) -> String {
        if let Some(active) = self.active.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return active;
        }
        let mut next = self.next_voter.lock().unwrap_or_else(|p| p.into_inner());
        let address = self.voters[*next % self.voters.len()].clone();
        *next = next.wrapping_add(1);
        address
    }

    fn forget(&self, address: &str) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.as_deref() == Some(address) {
            *active = None;
        }
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).remove(address);
    }

    async fn client(&self, address: &str) -> Result<ControllerClient<Channel>, tonic::transport::Error> {
        let cached = self.channels.lock().unwrap_or_else(|p| p.into_inner()).get(address).cloned();
        let channel = match cached {
            Some(c) => c,
            None => {
                let c = pb::endpoint(address)?.connect().await?;
                self.channels.lock().unwrap_or_else(|p| p.into_inner()).insert(address.to_string(), c.clone());
                c
            }
        };
        Ok(ControllerClient::new(channel)
            .max_decoding_message_size(pb::MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(pb::MAX_GRPC_MESSAGE_BYTES))
    }

    /// Calls the active controller until it answers something other than NOT_CONTROLLER,
    /// or `timeout` passes.
    pub async fn call<T, F, Fut>(&self, timeout: Duration, mut f: F) -> Result<T, NoController>
    where
        T: ControllerReply,
        F: FnMut(ControllerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + timeout;
        let mut last_error = String::from("no attempt");
        let mut attempts = 0usize;
        while Instant::now() < deadline {
            attempts += 1;
            if attempts > 1 && attempts % self.voters.len().max(1) == 1 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let address = self.candidate();
            let client = match self.client(&address).await {
                Ok(c) => c,
                Err(e) => {
                    last_error = format!("{address}: {e}");
                    self.forget(&address);
                    continue;
                }
            };
            let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
            match tokio::time::timeout(remaining.min(Duration::from_secs(5)), f(client)).await {
                Ok(Ok(response)) => {
                    let reply = response.into_inner();
                    let (code, message, leader_address) = reply.controller_error();
                    if code == ErrorCode::NOT_CONTROLLER {
                        last_error = format!("{address}: not the active controller ({message})");
                        self.forget(&address);
                        if !leader_address.is_empty() && leader_address != address {
                            *self.active.lock().unwrap_or_else(|p| p.into_inner()) = Some(leader_address);
                        } else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        continue;
                    }
                    *self.active.lock().unwrap_or_else(|p| p.into_inner()) = Some(address);
                    return Ok(reply);
                }
                Ok(Err(status)) => {
                    last_error = format!("{address}: {status}");
                    self.forget(&address);
                }
                Err(_) => {
                    last_error = format!("{address}: timed out");
                    self.forget(&address);
                }
            }
        }
        Err(NoController(timeout, last_error))
    }

    /// Some controller to read metadata from (the active one if known).
    pub async fn any_client(&self) -> Option<(String, ControllerClient<Channel>)> {
        let address = self.candidate();
        match self.client(&address).await {
            Ok(c) => Some((address, c)),
            Err(e) => {
                debug!("controller {address} unreachable: {e}");
                self.forget(&address);
                None
            }
        }
    }

    /// The address believed to be the active controller's, if any.
    pub fn active_address(&self) -> Option<String> {
        self.active.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn forget_address(&self, address: &str) {
        self.forget(address);
    }
}

/// One BrokerHeartbeat to the active controller (Kafka `BrokerHeartbeatRequest`), with every
/// replica taken offline so far (Kafka's `OfflineLogDirs`, sent on every heartbeat too).
async fn heartbeat(
    link: &ControllerLink,
    replica_manager: &ReplicaManager,
    incarnation: u64,
    want_shutdown: bool,
) -> Result<pb::BrokerHeartbeatResponse, NoController> {
    let offline_replicas = replica_manager
        .offline_partitions()
        .into_iter()
        .map(|tp| pb::OfflineReplica { topic: tp.topic, partition: tp.partition })
        .collect();
    let request = pb::BrokerHeartbeatRequest {
        broker_id: replica_manager.broker_id,
        incarnation,
        want_shutdown,
        offline_replicas,
    };
    link.call(Duration::from_secs(2), |mut c| {
        let r = request.clone();
        async move { c.broker_heartbeat(r).await }
    })
    .await
}

/// One RegisterBroker (Kafka `BrokerLifecycleManager.sendBrokerRegistration`); true once
/// registered. The broker epoch the controller assigns is kept for the fetchers: leaders
/// serve them as followers only while their metadata holds it for us (KIP-903).
async fn register(
    link: &ControllerLink,
    replica_manager: &Arc<ReplicaManager>,
    request: &pb::RegisterBrokerRequest,
) -> bool {
    let reply = link
        .call(Duration::from_secs(3), |mut c| {
            let r = request.clone();
            async move { c.register_broker(r).await }
        })
        .await;
    match reply {
        Ok(reply) => {
            let (code, message, _) = reply.controller_error();
            if code != ErrorCode::NONE {
                warn!("broker registration refused: {code}: {message}");
                return false;
            }
            if reply.broker_epoch <= 0 {
                // Without an epoch no leader serves our fetchers (KIP-903): register again
                // rather than run as a broker that can never replicate.
                warn!(broker_epoch = reply.broker_epoch, "registration answered without a broker epoch; retrying");
                return false;
            }
            replica_manager.set_broker_epoch(reply.broker_epoch);
            // Leaderships held back until now (`caught_up_with_registration`) are taken up as
            // soon as the metadata we already have shows this registration.
            let reapply = replica_manager.clone();
            tokio::task::spawn_blocking(move || {
                let metadata = (*reapply.metadata()).clone();
                reapply.apply_metadata(metadata);
            });
            info!(
                broker_epoch = reply.broker_epoch,
                "registered broker {} at {} (incarnation {}) with the controller",
                request.broker_id,
                request.address,
                request.incarnation
            );
            true
        }
        Err(e) => {
            debug!("registration: {e}");
            false
        }
    }
}

/// Registers, heartbeats every interval, and on shutdown performs a controlled shutdown
/// (Kafka `BrokerLifecycleManager`). Returns when the controlled shutdown completes or
/// times out. `kafka_address` is the Kafka listener's advertised address ("" for none),
/// registered so every broker can name every other in Kafka Metadata answers.
pub async fn run_lifecycle(
    link: Arc<ControllerLink>,
    replica_manager: Arc<ReplicaManager>,
    address: String,
    kafka_address: String,
    incarnation: u64,
    mut shutdown: watch::Receiver<bool>,
    registered: watch::Sender<bool>,
) {
    let broker_id = replica_manager.broker_id;
    let interval = Duration::from_millis(replica_manager.config.broker_heartbeat_interval_ms);
    let request = pb::RegisterBrokerRequest { broker_id, address, incarnation, kafka_address };
    let mut is_registered = false;
    let mut fenced = true;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if !is_registered {
            is_registered = register(&link, &replica_manager, &request).await;
            if is_registered {
                let _ = registered.send(true);
            }
        } else {
            match heartbeat(&link, &replica_manager, incarnation, false).await {
                Ok(reply) => {
                    let (code, message, _) = reply.controller_error();
                    match code {
                        ErrorCode::NONE => {
                            if fenced != reply.is_fenced {
                                info!(
                                    "broker {broker_id} is now {}",
                                    if reply.is_fenced { "fenced" } else { "unfenced (active)" }
                                );
                                fenced = reply.is_fenced;
                            }
                        }
                        ErrorCode::STALE_BROKER_EPOCH => {
                            warn!("controller does not know this incarnation ({message}); registering again");
                            // Leaders would refuse our old epoch: fetchers wait for the new one.
                            replica_manager.set_broker_epoch(0);
                            is_registered = false;
                            continue;
                        }
                        other => warn!("heartbeat answered {other}: {message}"),
                    }
                }
                Err(e) => warn!("heartbeat failed: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => {}
        }
    }
    if is_registered {
        controlled_shutdown(&link, &replica_manager, incarnation).await;
    }
}

/// Asks the controller to move leadership away and take us out of the ISRs before we stop
/// serving (Kafka BrokerHeartbeat WantShutDown, KIP-631), until done or timed out.
async fn controlled_shutdown(link: &ControllerLink, replica_manager: &ReplicaManager, incarnation: u64) {
    let broker_id = replica_manager.broker_id;
    let deadline = Instant::now() + Duration::from_millis(replica_manager.config.controlled_shutdown_timeout_ms);
    info!("broker {broker_id}: controlled shutdown: asking the controller to move leadership away");
    while Instant::now() < deadline {
        if let Ok(reply) = heartbeat(link, replica_manager, incarnation, true).await {
            if reply.should_shutdown {
                info!("broker {broker_id}: controlled shutdown complete: the controller moved every leadership away");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    warn!("broker {broker_id}: controlled shutdown timed out; stopping anyway");
}

/// Once registered, holds a `BrokerSession` stream open on the active controller, reopening
/// it when it ends or when the active controller moves (the controller's side of the rule is
/// in `insync_controller::heartbeat`): when this process dies, its kernel closes the
/// connection and the controller fences us without waiting out the session timeout. After a
/// reset the stream is reopened at once, well within the controller's grace if the
/// controller is reachable. Ends when the broker stops serving (after a controlled shutdown).
pub async fn run_session(
    link: Arc<ControllerLink>,
    broker_id: BrokerId,
    incarnation: u64,
    mut registered: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let request = pb::BrokerSessionRequest { broker_id, incarnation };
    loop {
        tokio::select! {
            ready = registered.wait_for(|r| *r) => if ready.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let outcome = tokio::select! {
            outcome = hold_session(&link, &request) => outcome,
            _ = stop.wait_for(|s| *s) => return,
        };
        let pause = match outcome {
            SessionOutcome::Held => Duration::from_millis(10),
            SessionOutcome::Refused => Duration::from_millis(100),
            // A controller too old to know the stream: only the session timeout fences us.
            SessionOutcome::Unsupported => Duration::from_secs(10),
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// How one attempt at holding the session stream ended.
enum SessionOutcome {
    /// Accepted, then ended (the connection broke, the controller stepped down, or another
    /// controller became active).
    Held,
    /// Refused or unreachable (not the active controller, an incarnation not yet registered).
    Refused,
    /// The controller does not implement `BrokerSession`.
    Unsupported,
}

/// Opens one session stream and holds it until it ends or the active controller moves.
/// Refusals do not drop the shared connection: heartbeats find the active controller.
async fn hold_session(link: &ControllerLink, request: &pb::BrokerSessionRequest) -> SessionOutcome {
    let Some((address, mut client)) = link.any_client().await else {
        return SessionOutcome::Refused;
    };
    let mut stream = match client.broker_session(*request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::Unimplemented => return SessionOutcome::Unsupported,
        Err(status) => {
            debug!("session stream to {address} failed: {status}");
            return SessionOutcome::Refused;
        }
    };
    match stream.message().await {
        Ok(Some(event)) => {
            let (code, message, _) = split(&event.error);
            if code != ErrorCode::NONE {
                debug!("session stream refused by {address}: {code} {message}");
                return SessionOutcome::Refused;
            }
        }
        Ok(None) => return SessionOutcome::Refused,
        Err(status) => {
            debug!("session stream to {address} broke: {status}");
            return SessionOutcome::Refused;
        }
    }
    debug!("session stream held open on controller {address}");
    let mut check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(_)) => {}
                Ok(None) => return SessionOutcome::Held,
                Err(status) => {
                    debug!("session stream to {address} ended: {status}");
                    return SessionOutcome::Held;
                }
            },
            // Heartbeats follow the active controller; a stream left on a deposed (possibly
            // stopped or cut off) one would protect nothing.
            _ = check.tick() => {
                if link.active_address().is_some_and(|active| active != address) {
                    return SessionOutcome::Held;
                }
            }
        }
    }
}

/// Follows the metadata feed of the quorum and applies every snapshot.
pub async fn run_metadata_watch(
    link: Arc<ControllerLink>,
    replica_manager: Arc<ReplicaManager>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let Some((address, mut client)) = link.any_client().await else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                _ = shutdown.changed() => return,
            }
        };
        let known_version = replica_manager.metadata().version;
        let stream = match client.watch_metadata(pb::WatchMetadataRequest { known_version }).await {
            Ok(s) => s.into_inner(),
            Err(status) => {
                debug!("metadata watch on {address} failed: {status}");
                link.forget_address(&address);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut stream = stream;
        loop {
            let next = tokio::select! {
                m = stream.message() => m,
                _ = shutdown.changed() => return,
            };
            match next {
                Ok(Some(metadata)) => {
                    if metadata.version < replica_manager.metadata().version {
                        continue; // a lagging controller: never go back
                    }
                    // Opening a partition's log recovers it and rebuilds producer state from
                    // it: disk work that must not hold up a tokio worker.
                    let replica_manager = replica_manager.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || replica_manager.apply_metadata(metadata)).await
                    {
                        warn!("applying metadata failed: {e}");
                    }
                }
                Ok(None) | Err(_) => {
                    link.forget_address(&address);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            }
        }
    }
}

/// How many error answers of the retried kind one AlterPartition gets before the partition
/// is told (see `run_alter_partition`).
const MAX_ANSWERED_ALTER_PARTITION_RETRIES: usize = 25;

/// The controller's answer to an AlterPartition (or why there is none) as the partition
/// takes it.
fn alter_partition_outcome(
    result: Result<pb::AlterPartitionResponse, NoController>,
) -> Result<pb::PartitionMetadata, (ErrorCode, String)> {
    match result {
        Ok(reply) => {
            let (code, message, _) = reply.controller_error();
            match (code, reply.partition) {
                (ErrorCode::NONE, Some(partition_metadata)) => Ok(partition_metadata),
                (ErrorCode::NONE, None) => Err((ErrorCode::UNKNOWN_SERVER_ERROR, "no partition in reply".into())),
                (code, _) => Err((code, message)),
            }
        }
        Err(e) => Err((ErrorCode::REQUEST_TIMED_OUT, e.to_string())),
    }
}

/// The AlterPartition request for a leader core's ISR proposal, with the broker epoch each
/// member fetched with (Kafka `NewIsrWithEpochs`, KIP-903).
pub fn alter_partition_request(
    broker_id: BrokerId,
    topic_partition: &TopicPartition,
    change: &IsrChange,
) -> pb::AlterPartitionRequest {
    pb::AlterPartitionRequest {
        broker_id,
        topic: topic_partition.topic.clone(),
        partition: topic_partition.partition,
        leader_epoch: change.leader_epoch,
        partition_epoch: change.partition_epoch,
        new_isr: change.new_isr.clone(),
        new_isr_broker_epochs: change
            .new_isr_broker_epochs
            .iter()
            .map(|&(broker_id, broker_epoch)| pb::IsrMemberEpoch { broker_id, broker_epoch })
            .collect(),
    }
}

/// Sends the leader cores' ISR proposals to the controller, one at a time.
pub async fn run_alter_partition(
    link: Arc<ControllerLink>,
    replica_manager: Arc<ReplicaManager>,
    mut jobs: mpsc::Receiver<AlterPartitionJob>,
) {
    while let Some(job) = jobs.recv().await {
        let AlterPartitionJob { topic_partition, change } = job;
        let request = alter_partition_request(replica_manager.broker_id, &topic_partition, &change);
        // An unanswered AlterPartition may still have been committed, so the pending state
        // must stay (KIP-497): retry until the controller answers or the proposal is overtaken.
        // Errors Kafka retries (`Partition.handleAlterPartitionError`'s default: a timeout,
        // NOT_CONTROLLER) are retried the same way; the others go to the partition.
        let mut answered_retries = 0;
        let outcome = loop {
            let result = link
                .call(Duration::from_millis(replica_manager.config.controller_request_timeout_ms), |mut c| {
                    let r = request.clone();
                    async move { c.alter_partition(r).await }
                })
                .await;
            // An error the controller keeps answering (a bug on its side) must not hold this
            // queue, and every other partition's ISR changes, forever: after about 5 s of such
            // answers the partition gets the error and keeps its proposal pending until the
            // metadata settles it. Unanswered requests are retried as long as they are pending.
            answered_retries += usize::from(result.is_ok());
            let outcome = alter_partition_outcome(result);
            let retry = matches!(&outcome, Err((code, _)) if alter_partition_error_action(*code) == AlterPartitionErrorAction::Retry);
            if retry
                && answered_retries < MAX_ANSWERED_ALTER_PARTITION_RETRIES
                && replica_manager.isr_change_pending(&topic_partition, change.leader_epoch, change.partition_epoch)
            {
                if let Err((code, message)) = &outcome {
                    warn!("{topic_partition}: AlterPartition answered {code} ({message}); retrying");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            break outcome;
        };
        replica_manager.on_alter_partition_result(
            &topic_partition,
            change.leader_epoch,
            change.partition_epoch,
            outcome,
        );
    }
}
