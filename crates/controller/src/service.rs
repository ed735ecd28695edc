//! The gRPC `Controller` service: thin handlers that turn requests into Raft proposals
//! (RegisterBroker, BrokerHeartbeat, CreateTopic, AlterPartition — active controller only),
//! serve metadata from the applied state (GetMetadata, WatchMetadata — any controller), and
//! carry openraft's RPCs between controllers.
//!
//! Response convention: `ControllerError` is always present; success is `error_code` 0
//! (NONE) with an empty message and `leader_id` -1. A non-active controller answers
//! NOT_CONTROLLER (41) with the leader it knows (`leader_id` -1 / empty address during an
//! election), as Kafka brokers are redirected to the active controller. When `error_code`
//! is not 0 the other fields carry no information (a heartbeat then says `is_fenced` true,
//! the safe reading).
use crate::command::{Command, CommandResult};
use crate::convert::{
    alter_partition_command, cluster_metadata, partition_to_proto, topic_to_proto, ControllerIdentity,
};
use crate::heartbeat::BrokerHeartbeatManager;
use crate::internal_topics;
use crate::leader_balance;
use crate::metadata::{AppliedMetadata, ClusterState};
use crate::partition_growth;
use crate::raft::{ControllerRaft, NodeId, TypeConfig};
use crate::role::ControllerRole;
use crate::rules::{self, CreateTopicSpec, RuleRejection};
use crate::session::{self, SessionGuard, SessionStream};
use crate::topic_configs::{self, ConfigChange};
use futures::Stream;
use insync_proto::controller_server::Controller;
use insync_proto::{
    AllocateProducerIdsRequest, AllocateProducerIdsResponse, AlterPartitionRequest, AlterPartitionResponse,
    AlterTopicConfigsRequest, AlterTopicConfigsResponse, BrokerHeartbeatRequest, BrokerHeartbeatResponse,
    BrokerSessionRequest, ClusterMetadata, ControllerError, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicRequest, CreateTopicResponse, DeleteTopicRequest, DeleteTopicResponse, ElectLeadersRequest,
    ElectLeadersResponse, ElectionResult, MetadataRequest, MetadataResponse, RaftMessage, RegisterBrokerRequest,
    RegisterBrokerResponse, WatchMetadataRequest,
};
use insync_types::{topic_config, ErrorCode, TopicPartition, NO_BROKER};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tonic::{Request, Response, Status};

/// How long a proposal may take to commit and apply before the caller gets
/// REQUEST_TIMED_OUT (the change may still be applied later).
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a freshly elected leader may take to apply its first entry before requests are
/// answered NOT_CONTROLLER (retriable).
pub const ACTIVATION_WAIT: Duration = Duration::from_secs(2);

/// How long a heartbeat waits for a quorum to confirm we still lead: under the brokers'
/// 2 s heartbeat call timeout, so they try the other voters in time.
const LEADERSHIP_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// A refused request: Kafka error code, message, and for NOT_CONTROLLER the known leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    pub leader: ControllerIdentity,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
            leader: ControllerIdentity { controller_id: NO_BROKER, controller_address: String::new() },
        }
    }

    fn to_proto(&self) -> ControllerError {
        ControllerError {
            error_code: self.code.code(),
            error_message: self.message.clone(),
            leader_id: self.leader.controller_id,
            leader_address: self.leader.controller_address.clone(),
        }
    }
}

impl From<RuleRejection> for Refusal {
    fn from(rejection: RuleRejection) -> Self {
        Refusal::new(rejection.code, rejection.message)
    }
}

/// The success value of `ControllerError` (see the module doc).
pub fn success() -> ControllerError {
    ControllerError {
        error_code: ErrorCode::NONE.code(),
        error_message: String::new(),
        leader_id: NO_BROKER,
        leader_address: String::new(),
    }
}

fn command_refusal(result: &CommandResult) -> Option<Refusal> {
    (!result.is_ok()).then(|| Refusal::new(result.error_code, result.error_message.clone()))
}

/// Everything a handler needs; shared with the liveness task in `node.rs`.
pub(crate) struct ServiceShared {
    pub node_id: NodeId,
    pub voters: BTreeMap<NodeId, String>,
    pub raft: ControllerRaft,
    pub metadata: watch::Receiver<Arc<AppliedMetadata>>,
    pub role: watch::Receiver<ControllerRole>,
    pub heartbeats: Arc<Mutex<BrokerHeartbeatManager>>,
    /// Woken when a broker's session stream closes (see `session`).
    pub session_closed: Arc<Notify>,
    pub default_min_insync_replicas: i32,
    /// Turns true on `ControllerNode::shutdown`; ends metadata streams.
    pub shutdown: watch::Receiver<bool>,
}

/// The `Controller` gRPC service of one controller node. Cheap to clone.
#[derive(Clone)]
pub struct ControllerService {
    shared: Arc<ServiceShared>,
}

impl ControllerService {
    pub(crate) fn new(shared: ServiceShared) -> Self {
        ControllerService { shared: Arc::new(shared) }
    }

    pub(crate) fn shared(&self) -> &ServiceShared {
        &self.shared
    }

    fn identity(&self, leader_id: Option<NodeId>) -> ControllerIdentity {
        match leader_id {
            Some(id) => ControllerIdentity {
                controller_id: i32::try_from(id).unwrap_or(NO_BROKER),
                controller_address: self.shared.voters.get(&id).cloned().unwrap_or_default(),
            },
            None => ControllerIdentity { controller_id: NO_BROKER, controller_address: String::new() },
        }
    }

    fn not_controller(&self, leader_id: Option<NodeId>) -> Refusal {
        let leader = self.identity(leader_id);
        let message = match leader_id {
            Some(id) if id == self.shared.node_id => {
                format!("controller {id} was just elected and is still catching up; retry")
            }
            Some(id) => format!(
                "controller {} is not the active controller; the active controller is {id} at {}",
                self.shared.node_id, leader.controller_address
            ),
            None => format!(
                "controller {} knows no active controller yet (election in progress); retry",
                self.shared.node_id
            ),
        };
        Refusal { code: ErrorCode::NOT_CONTROLLER, message, leader }
    }

    /// Waits (bounded) until this node is the active controller, or says who is.
    async fn await_active(&self) -> Result<(), Refusal> {
        let mut role = self.shared.role.clone();
        let deadline = tokio::time::Instant::now() + ACTIVATION_WAIT;
        loop {
            let current = role.borrow_and_update().clone();
            if current.is_active {
                return Ok(());
            }
            if current.leader_id != Some(self.shared.node_id) {
                return Err(self.not_controller(current.leader_id));
            }
            match tokio::time::timeout_at(deadline, role.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Err(self.not_controller(current.leader_id)),
            }
        }
    }

    /// Confirms with a quorum that we still lead (openraft `ensure_linearizable`) before a
    /// heartbeat is answered, as Kafka's controller answers one only once its write commits.
    /// A controller cut off from the other voters thinks it leads until told otherwise; were
    /// it to answer heartbeats, brokers would stay with it while the new active controller,
    /// hearing nothing, fenced them all and moved their leaderships. NOT_CONTROLLER sends
    /// them on to the other voters.
    async fn confirm_still_active(&self) -> Result<(), Refusal> {
        match tokio::time::timeout(LEADERSHIP_CHECK_TIMEOUT, self.shared.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(self.not_controller(None)),
        }
    }

    /// Proposes a command and waits (bounded) until it is committed and applied.
    pub(crate) async fn propose(&self, command: Command) -> Result<CommandResult, Refusal> {
        match tokio::time::timeout(PROPOSAL_TIMEOUT, self.shared.raft.client_write(command)).await {
            Err(_) => Err(Refusal::new(
                ErrorCode::REQUEST_TIMED_OUT,
                format!(
                    "the metadata change was not committed within {} ms (no quorum?); it may still be applied",
                    PROPOSAL_TIMEOUT.as_millis()
                ),
            )),
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                Err(self.not_controller(forward.leader_id))
            }
            Ok(Err(error)) => {
                tracing::warn!("controller {}: proposal failed: {error}", self.shared.node_id);
                Err(self.not_controller(None))
            }
        }
    }

    fn applied(&self) -> Arc<AppliedMetadata> {
        Arc::clone(&self.shared.metadata.borrow())
    }

    /// Registers a broker and returns its broker epoch (Kafka `RegisterBrokerResponse.BrokerEpoch`).
    async fn register(&self, request: RegisterBrokerRequest) -> Result<i64, Refusal> {
        self.await_active().await?;
        let result = self
            .propose(Command::RegisterBroker {
                broker_id: request.broker_id,
                address: request.address,
                incarnation: request.incarnation,
                kafka_address: request.kafka_address,
            })
            .await?;
        if let Some(refusal) = command_refusal(&result) {
            return Err(refusal);
        }
        // A registration starts the session (Kafka ClusterControlManager.registerBroker
        // touches the heartbeat manager).
        self.lock_heartbeats().touch(request.broker_id, Instant::now());
        Ok(result.broker.map(|b| b.broker_epoch).unwrap_or(0))
    }

    fn lock_heartbeats(&self) -> std::sync::MutexGuard<'_, BrokerHeartbeatManager> {
        self.shared.heartbeats.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Kafka `ReplicationControlManager.processBrokerHeartbeat` +
    /// `BrokerHeartbeatManager.calculateNextBrokerState`, reduced to: stale incarnation →
    /// STALE_BROKER_EPOCH; replicas newly reported offline → recorded (`handleDirectoriesOffline`);
    /// want_shutdown → controlled shutdown; fenced → unfence.
    async fn heartbeat(&self, request: BrokerHeartbeatRequest) -> Result<(bool, bool), Refusal> {
        // Stamped on arrival: a heartbeat sent just before its broker died must not count as
        // a sign of life after the death (the early fencing compares it with the close).
        let arrived = Instant::now();
        self.await_active().await?;
        self.confirm_still_active().await?;
        let broker_id = request.broker_id;
        rules::check_incarnation(&self.applied().state, broker_id, request.incarnation)?;
        self.lock_heartbeats().touch(broker_id, arrived);
        // Before a possible unfencing, so that the unfencing's elections already pass over the
        // offline replicas.
        self.record_offline_replicas(&request).await?;
        let registration = rules::check_incarnation(&self.applied().state, broker_id, request.incarnation)?.clone();

        if request.want_shutdown && !registration.in_controlled_shutdown {
            let result =
                self.propose(Command::ControlledShutdown { broker_id, incarnation: request.incarnation }).await?;
            if let Some(refusal) = command_refusal(&result) {
                return Err(refusal);
            }
        } else if !request.want_shutdown && registration.fenced && !registration.in_controlled_shutdown {
            let result = self.propose(Command::UnfenceBroker { broker_id, incarnation: request.incarnation }).await?;
            if let Some(refusal) = command_refusal(&result) {
                return Err(refusal);
            }
        }
        // The state machine publishes before the proposal returns: this includes our change.
        let applied = self.applied();
        let registration = rules::check_incarnation(&applied.state, broker_id, request.incarnation)?;
        let should_shutdown = registration.in_controlled_shutdown && rules::should_shutdown(&applied.state, broker_id);
        Ok((registration.fenced, should_shutdown))
    }

    /// Only the active controller holds session streams — confirmed with a quorum, as for a
    /// heartbeat, so a deposed controller cut off from the others holds none — and only of a
    /// registered incarnation.
    async fn accept_session(&self, request: &BrokerSessionRequest) -> Result<(), Refusal> {
        let role = self.shared.role.borrow().clone();
        if !role.is_active {
            return Err(self.not_controller(role.leader_id));
        }
        self.confirm_still_active().await?;
        rules::check_incarnation(&self.applied().state, request.broker_id, request.incarnation)?;
        Ok(())
    }

    /// Proposes `MarkReplicasOffline` when the heartbeat's offline set names replicas the
    /// registration does not yet record (Kafka compares `OfflineLogDirs` with the registered
    /// directories), so a broker repeating its set every heartbeat writes one entry only.
    async fn record_offline_replicas(&self, request: &BrokerHeartbeatRequest) -> Result<(), Refusal> {
        if request.offline_replicas.is_empty() {
            return Ok(());
        }
        // No broker hosts more replicas than the cluster has partitions: a longer list is a
        // broken or hostile peer, refused before it is copied (let alone into the Raft log).
        let partitions: usize = self.applied().state.topics.values().map(|t| t.partitions.len()).sum();
        if request.offline_replicas.len() > partitions {
            return Err(Refusal::new(
                ErrorCode::INVALID_REQUEST,
                format!(
                    "{} offline replicas reported, more than the cluster's {partitions} partitions",
                    request.offline_replicas.len()
                ),
            ));
        }
        let reported: Vec<TopicPartition> =
            request.offline_replicas.iter().map(|r| TopicPartition::new(r.topic.clone(), r.partition)).collect();
        // Only what is new and hosted there goes into the log entry.
        let added = rules::new_offline_replicas(&self.applied().state, request.broker_id, &reported);
        if added.is_empty() {
            return Ok(());
        }
        let command = Command::MarkReplicasOffline {
            broker_id: request.broker_id,
            incarnation: request.incarnation,
            replicas: added,
        };
        let result = self.propose(command).await?;
        command_refusal(&result).map_or(Ok(()), Err)
    }

    async fn create(&self, request: CreateTopicRequest) -> Result<insync_proto::TopicMetadata, Refusal> {
        // Before anything else, as Kafka refuses `__cluster_metadata`: only a broker creates
        // the offsets topic (`internal_topics`).
        internal_topics::check_create(&request.name, request.internal)?;
        self.await_active().await?;
        // Kafka's order: the name and its existence before the configs.
        rules::validate_topic_name(&request.name)?;
        if self.applied().state.topics.contains_key(&request.name) {
            let message = format!("Topic '{}' already exists.", request.name);
            return Err(Refusal::new(ErrorCode::TOPIC_ALREADY_EXISTS, message));
        }
        let min_field = (request.min_insync_replicas != 0).then_some(request.min_insync_replicas);
        let configs: BTreeMap<String, String> = request.configs.into_iter().collect();
        let overrides = topic_configs::creation_configs(
            &configs,
            min_field,
            request.unclean_leader_election_enable,
            request.replication_factor,
        )?;
        let spec = CreateTopicSpec {
            name: request.name,
            partitions: request.partitions,
            replication_factor: request.replication_factor,
            min_insync_replicas: topic_config::int_value(&overrides, topic_config::MIN_INSYNC_REPLICAS)
                .and_then(|m| i32::try_from(m).ok()),
            unclean_leader_election_enable: topic_config::bool_value(
                &overrides,
                topic_config::UNCLEAN_LEADER_ELECTION_ENABLE,
            )
            .unwrap_or(false),
        };
        // Placement is decided here, from the applied state, so applying is deterministic;
        // the state machine re-validates against the state at commit time.
        let applied = self.applied();
        let assignment = rules::plan_topic(&applied.state, &spec)?;
        let command = Command::CreateTopic {
            name: spec.name,
            assignment,
            min_insync_replicas: spec.min_insync_replicas,
            unclean_leader_election_enable: spec.unclean_leader_election_enable,
            // Random, as Kafka's Uuid.randomUuid: a re-created name gets a new id.
            topic_id: uuid::Uuid::new_v4().to_string(),
            configs: overrides,
        };
        if request.validate_only {
            return preview(&applied.state, &command);
        }
        let result = self.propose(command).await?;
        if let Some(refusal) = command_refusal(&result) {
            return Err(refusal);
        }
        let topic =
            result.topic.ok_or_else(|| Refusal::new(ErrorCode::UNKNOWN_SERVER_ERROR, "topic missing from result"))?;
        Ok(topic_to_proto(&topic))
    }

    /// Kafka `ConfigurationControlManager.incrementalAlterConfigs` for a topic: checked on the
    /// applied state (and, with validate_only, only there), proposed with the topic id seen.
    async fn alter_configs(&self, request: AlterTopicConfigsRequest) -> Result<insync_proto::TopicMetadata, Refusal> {
        internal_topics::check_alter_configs(&request.name)?;
        self.await_active().await?;
        let applied = self.applied();
        let Some(topic) = applied.state.topics.get(&request.name) else {
            return Err(Refusal::new(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("Topic '{}' does not exist.", request.name),
            ));
        };
        let change = ConfigChange {
            set: request.set.into_iter().collect(),
            delete: request.delete.into_iter().collect(),
            replace: request.replace,
        };
        let command = Command::AlterTopicConfigs { name: request.name, topic_id: topic.topic_id.clone(), change };
        // Checked before anything reaches the Raft log: a refused change is never replicated.
        let previewed = preview(&applied.state, &command)?;
        if request.validate_only {
            return Ok(previewed);
        }
        let result = self.propose(command).await?;
        if let Some(refusal) = command_refusal(&result) {
            return Err(refusal);
        }
        let topic =
            result.topic.ok_or_else(|| Refusal::new(ErrorCode::UNKNOWN_SERVER_ERROR, "topic missing from result"))?;
        Ok(topic_to_proto(&topic))
    }

    /// Kafka `ReplicationControlManager.createPartitions`: placed on the applied state,
    /// proposed with the topic id and count it was planned on.
    async fn grow(&self, request: CreatePartitionsRequest) -> Result<insync_proto::TopicMetadata, Refusal> {
        internal_topics::check_add_partitions(&request.name)?;
        self.await_active().await?;
        let applied = self.applied();
        let assignment = partition_growth::plan_partitions(&applied.state, &request.name, request.count)?;
        let topic = applied.state.topics.get(&request.name);
        let command = Command::CreatePartitions {
            name: request.name.clone(),
            topic_id: topic.map(|t| t.topic_id.clone()).unwrap_or_default(),
            planned_from: topic.map_or(0, |t| t.partitions.len() as i32),
            assignment,
        };
        if request.validate_only {
            return preview(&applied.state, &command);
        }
        let result = self.propose(command).await?;
        if let Some(refusal) = command_refusal(&result) {
            return Err(refusal);
        }
        let topic =
            result.topic.ok_or_else(|| Refusal::new(ErrorCode::UNKNOWN_SERVER_ERROR, "topic missing from result"))?;
        Ok(topic_to_proto(&topic))
    }

    /// Kafka `ReplicationControlManager.deleteTopics`: the topic is looked up on the applied
    /// state and removed by id, so a concurrent delete and re-create never removes the new one.
    async fn delete(&self, request: DeleteTopicRequest) -> Result<String, Refusal> {
        // The brokers' durable group offsets live there; deleting it would lose every
        // committed offset (Kafka's tools refuse it as "a kafka internal topic").
        internal_topics::check_delete(&request.name)?;
        self.await_active().await?;
        let topic_id = match self.applied().state.topics.get(&request.name) {
            Some(topic) if request.topic_id.is_empty() || request.topic_id == topic.topic_id => topic.topic_id.clone(),
            _ => {
                return Err(Refusal::new(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("Topic '{}' does not exist.", request.name),
                ))
            }
        };
        let result = self.propose(Command::DeleteTopic { name: request.name, topic_id: topic_id.clone() }).await?;
        command_refusal(&result).map_or(Ok(topic_id), Err)
    }

    /// Preferred leader election (Kafka `ReplicationControlManager.electLeaders`, PREFERRED):
    /// partitions whose preferred replica can lead are proposed in one command; the others
    /// are answered from the check, without a write.
    async fn elect(&self, request: ElectLeadersRequest) -> Result<Vec<ElectionResult>, Refusal> {
        self.await_active().await?;
        let applied = self.applied();
        let state = &applied.state;
        let scope = election_scope(state, &request)?;
        let mut outcomes: Vec<(TopicPartition, ErrorCode)> = Vec::new();
        let mut electable = Vec::new();
        for tp in scope {
            match leader_balance::preferred_election_check(state, &tp.topic, tp.partition) {
                Ok(_) => electable.push(tp),
                Err(code) => outcomes.push((tp, code)),
            }
        }
        if !electable.is_empty() {
            let command =
                Command::ElectPreferredLeaders { partitions: electable, reason: "requested (ElectLeaders)".into() };
            let result = self.propose(command).await?;
            if let Some(refusal) = command_refusal(&result) {
                return Err(refusal);
            }
            outcomes.extend(result.elections);
        }
        outcomes.sort_by(|a, b| a.0.cmp(&b.0));
        let after = self.applied();
        Ok(outcomes.into_iter().map(|(tp, code)| election_result(&after.state, tp, code)).collect())
    }

    async fn alter(&self, request: AlterPartitionRequest) -> Result<insync_proto::PartitionMetadata, Refusal> {
        self.await_active().await?;
        let result = self.propose(alter_partition_command(request)).await?;
        if let Some(refusal) = command_refusal(&result) {
            return Err(refusal);
        }
        result
            .partition
            .as_ref()
            .map(partition_to_proto)
            .ok_or_else(|| Refusal::new(ErrorCode::UNKNOWN_SERVER_ERROR, "partition missing from result"))
    }

    async fn allocate(&self, request: AllocateProducerIdsRequest) -> Result<(i64, i32), Refusal> {
        self.await_active().await?;
        let result = self
            .propose(Command::AllocateProducerIds { broker_id: request.broker_id, incarnation: request.incarnation })
            .await?;
        if let Some(refusal) = command_refusal(&result) {
            return Err(refusal);
        }
        result
            .producer_id_block
            .ok_or_else(|| Refusal::new(ErrorCode::UNKNOWN_SERVER_ERROR, "producer id block missing from result"))
    }

    fn metadata_view(
        &self,
        applied: &AppliedMetadata,
        leader_id: Option<NodeId>,
        topics: &[String],
    ) -> ClusterMetadata {
        let mut view =
            cluster_metadata(applied, &self.identity(leader_id), self.shared.default_min_insync_replicas, topics);
        // Heartbeat ages live only in the active controller's memory; elsewhere they stay -1
        // (unknown) rather than report a tracker nobody updates.
        if self.shared.role.borrow().is_active {
            let now = Instant::now();
            let heartbeats = self.lock_heartbeats();
            for broker in &mut view.brokers {
                if let Some(ms) = heartbeats.last_contact_ms_ago(broker.id, now) {
                    broker.last_heartbeat_ms_ago = i64::try_from(ms).unwrap_or(i64::MAX);
                }
            }
        }
        view
    }
}

/// validate_only: the topic as `command` (a CreateTopic, AlterTopicConfigs or CreatePartitions) would leave it,
/// computed by the same rules on a copy of the state; nothing is proposed or logged.
fn preview(state: &ClusterState, command: &Command) -> Result<insync_proto::TopicMetadata, Refusal> {
    let mut copy = state.clone();
    let topic = match command {
        Command::CreateTopic {
            name, assignment, min_insync_replicas, unclean_leader_election_enable, configs, ..
        } => {
            let mut topic = rules::create_topic(
                &mut copy,
                name,
                assignment,
                *min_insync_replicas,
                *unclean_leader_election_enable,
            )?;
            topic.set_overrides(configs.clone());
            topic
        }
        Command::AlterTopicConfigs { name, topic_id, change } => {
            topic_configs::alter_topic_configs(&mut copy, name, topic_id, change)?.0
        }
        Command::CreatePartitions { name, topic_id, planned_from, assignment } => {
            partition_growth::add_partitions(&mut copy, name, topic_id, *planned_from, assignment)?
        }
        _ => return Err(Refusal::new(ErrorCode::UNKNOWN_SERVER_ERROR, "nothing to preview")),
    };
    Ok(topic_to_proto(&topic))
}

/// The partitions an ElectLeaders request asks about: the named partitions of the named
/// topic (each once; ones the topic lacks are answered UNKNOWN_TOPIC_OR_PARTITION later),
/// all its partitions, or, with no topic named, every partition that would move.
fn election_scope(state: &ClusterState, request: &ElectLeadersRequest) -> Result<Vec<TopicPartition>, Refusal> {
    if request.topic.is_empty() {
        if !request.partitions.is_empty() {
            return Err(Refusal::new(ErrorCode::INVALID_REQUEST, "partitions were named without a topic"));
        }
        return Ok(leader_balance::electable_partitions(state, None));
    }
    let Some(topic) = state.topics.get(&request.topic) else {
        return Err(Refusal::new(
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            format!("topic {} does not exist", request.topic),
        ));
    };
    if request.partitions.is_empty() {
        return Ok(topic.partitions.iter().map(|p| TopicPartition::new(topic.name.clone(), p.partition)).collect());
    }
    let named: BTreeSet<i32> = request.partitions.iter().copied().collect();
    Ok(named.into_iter().map(|p| TopicPartition::new(topic.name.clone(), p)).collect())
}

/// One partition's answer, worded for the CLI.
fn election_result(state: &ClusterState, tp: TopicPartition, code: ErrorCode) -> ElectionResult {
    let partition = state.partition(&tp.topic, tp.partition);
    let leader = partition.map_or(NO_BROKER, |p| p.leader);
    let preferred = partition.and_then(|p| p.replicas.first().copied()).unwrap_or(NO_BROKER);
    let error_message = match code {
        ErrorCode::NONE => String::new(),
        ErrorCode::ELECTION_NOT_NEEDED => format!("the preferred replica {preferred} leads already"),
        ErrorCode::PREFERRED_LEADER_NOT_AVAILABLE => {
            format!("the preferred replica {preferred} is not in the ISR or cannot lead now")
        }
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION => format!("{tp} does not exist"),
        other => other.name().to_string(),
    };
    ElectionResult { topic: tp.topic, partition: tp.partition, error_code: code.code(), error_message, leader }
}

fn decode<T: DeserializeOwned>(message: RaftMessage) -> Result<T, Status> {
    serde_json::from_slice(&message.payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    serde_json::to_vec(value)
        .map(|payload| Response::new(RaftMessage { payload: payload.into() }))
        .map_err(|e| Status::internal(format!("cannot encode raft response: {e}")))
}

/// What a metadata watcher has been sent so far.
struct WatchProgress {
    service: ControllerService,
    metadata: watch::Receiver<Arc<AppliedMetadata>>,
    role: watch::Receiver<ControllerRole>,
    shutdown: watch::Receiver<bool>,
    known_version: u64,
    /// (version, leader) of the last snapshot sent, or the baseline when none was due.
    last_sent: Option<(u64, Option<NodeId>)>,
}

impl WatchProgress {
    /// The next snapshot to send: at once if newer than `known_version`, then one per
    /// change of version or leader. None when the controller shuts down.
    async fn next(mut self) -> Option<(Result<ClusterMetadata, Status>, WatchProgress)> {
        loop {
            if *self.shutdown.borrow_and_update() {
                return None;
            }
            let applied = Arc::clone(&self.metadata.borrow_and_update());
            let leader_id = self.role.borrow_and_update().leader_id;
            let due = match self.last_sent {
                None => applied.version > self.known_version,
                Some((version, leader)) => applied.version != version || leader != leader_id,
            };
            self.last_sent = Some((applied.version, leader_id));
            if due {
                let snapshot = self.service.metadata_view(&applied, leader_id, &[]);
                return Some((Ok(snapshot), self));
            }
            tokio::select! {
                changed = self.metadata.changed() => if changed.is_err() { return None },
                changed = self.role.changed() => if changed.is_err() { return None },
                _ = self.shutdown.changed() => return None,
            }
        }
    }
}

type MetadataStream = Pin<Box<dyn Stream<Item = Result<ClusterMetadata, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn register_broker(
        &self,
        request: Request<RegisterBrokerRequest>,
    ) -> Result<Response<RegisterBrokerResponse>, Status> {
        let (error, broker_epoch) = match self.register(request.into_inner()).await {
            Ok(broker_epoch) => (success(), broker_epoch),
            Err(refusal) => (refusal.to_proto(), 0),
        };
        Ok(Response::new(RegisterBrokerResponse { error: Some(error), broker_epoch }))
    }

    async fn broker_heartbeat(
        &self,
        request: Request<BrokerHeartbeatRequest>,
    ) -> Result<Response<BrokerHeartbeatResponse>, Status> {
        let response = match self.heartbeat(request.into_inner()).await {
            Ok((is_fenced, should_shutdown)) => {
                BrokerHeartbeatResponse { error: Some(success()), is_fenced, should_shutdown }
            }
            Err(refusal) => {
                BrokerHeartbeatResponse { error: Some(refusal.to_proto()), is_fenced: true, should_shutdown: false }
            }
        };
        Ok(Response::new(response))
    }

    type BrokerSessionStream = SessionStream;

    async fn broker_session(
        &self,
        request: Request<BrokerSessionRequest>,
    ) -> Result<Response<Self::BrokerSessionStream>, Status> {
        let request = request.into_inner();
        let (first, guard) = match self.accept_session(&request).await {
            Ok(()) => {
                let guard = SessionGuard::open(
                    self.shared.heartbeats.clone(),
                    self.shared.session_closed.clone(),
                    (self.shared.role.clone(), self.shared.shutdown.clone()),
                    request.broker_id,
                    request.incarnation,
                );
                (success(), Some(guard))
            }
            Err(refusal) => (refusal.to_proto(), None),
        };
        let stream = session::stream(first, guard, self.shared.role.clone(), self.shared.shutdown.clone());
        Ok(Response::new(stream))
    }

    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        let response = match self.create(request.into_inner()).await {
            Ok(topic) => CreateTopicResponse {
                error_code: ErrorCode::NONE.code(),
                error_message: String::new(),
                topic: Some(topic),
            },
            Err(refusal) => {
                CreateTopicResponse { error_code: refusal.code.code(), error_message: refusal.message, topic: None }
            }
        };
        Ok(Response::new(response))
    }

    async fn create_partitions(
        &self,
        request: Request<CreatePartitionsRequest>,
    ) -> Result<Response<CreatePartitionsResponse>, Status> {
        let response = match self.grow(request.into_inner()).await {
            Ok(topic) => CreatePartitionsResponse {
                error_code: ErrorCode::NONE.code(),
                error_message: String::new(),
                topic: Some(topic),
            },
            Err(refusal) => CreatePartitionsResponse {
                error_code: refusal.code.code(),
                error_message: refusal.message,
                topic: None,
            },
        };
        Ok(Response::new(response))
    }

    async fn alter_topic_configs(
        &self,
        request: Request<AlterTopicConfigsRequest>,
    ) -> Result<Response<AlterTopicConfigsResponse>, Status> {
        let response = match self.alter_configs(request.into_inner()).await {
            Ok(topic) => AlterTopicConfigsResponse {
                error_code: ErrorCode::NONE.code(),
                error_message: String::new(),
                topic: Some(topic),
            },
            Err(refusal) => AlterTopicConfigsResponse {
                error_code: refusal.code.code(),
                error_message: refusal.message,
                topic: None,
            },
        };
        Ok(Response::new(response))
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        let response = match self.delete(request.into_inner()).await {
            Ok(topic_id) => {
                DeleteTopicResponse { error_code: ErrorCode::NONE.code(), error_message: String::new(), topic_id }
            }
            Err(refusal) => DeleteTopicResponse {
                error_code: refusal.code.code(),
                error_message: refusal.message,
                topic_id: String::new(),
            },
        };
        Ok(Response::new(response))
    }

    async fn elect_leaders(
        &self,
        request: Request<ElectLeadersRequest>,
    ) -> Result<Response<ElectLeadersResponse>, Status> {
        let response = match self.elect(request.into_inner()).await {
            Ok(results) => {
                ElectLeadersResponse { error_code: ErrorCode::NONE.code(), error_message: String::new(), results }
            }
            Err(refusal) => ElectLeadersResponse {
                error_code: refusal.code.code(),
                error_message: refusal.message,
                results: Vec::new(),
            },
        };
        Ok(Response::new(response))
    }

    async fn alter_partition(
        &self,
        request: Request<AlterPartitionRequest>,
    ) -> Result<Response<AlterPartitionResponse>, Status> {
        let response = match self.alter(request.into_inner()).await {
            Ok(partition) => AlterPartitionResponse { error: Some(success()), partition: Some(partition) },
            Err(refusal) => AlterPartitionResponse { error: Some(refusal.to_proto()), partition: None },
        };
        Ok(Response::new(response))
    }

    async fn allocate_producer_ids(
        &self,
        request: Request<AllocateProducerIdsRequest>,
    ) -> Result<Response<AllocateProducerIdsResponse>, Status> {
        let response = match self.allocate(request.into_inner()).await {
            Ok((first_producer_id, count)) => {
                AllocateProducerIdsResponse { error: Some(success()), first_producer_id, count }
            }
            Err(refusal) => {
                AllocateProducerIdsResponse { error: Some(refusal.to_proto()), first_producer_id: -1, count: 0 }
            }
        };
        Ok(Response::new(response))
    }

    async fn get_metadata(&self, request: Request<MetadataRequest>) -> Result<Response<MetadataResponse>, Status> {
        let applied = self.applied();
        let leader_id = self.shared.role.borrow().leader_id;
        let metadata = self.metadata_view(&applied, leader_id, &request.into_inner().topics);
        Ok(Response::new(MetadataResponse { metadata: Some(metadata) }))
    }

    type WatchMetadataStream = MetadataStream;

    async fn watch_metadata(
        &self,
        request: Request<WatchMetadataRequest>,
    ) -> Result<Response<Self::WatchMetadataStream>, Status> {
        let progress = WatchProgress {
            service: self.clone(),
            metadata: self.shared.metadata.clone(),
            role: self.shared.role.clone(),
            shutdown: self.shared.shutdown.clone(),
            known_version: request.into_inner().known_version,
            last_sent: None,
        };
        // Pull-based: a snapshot is built only when the client asks for the next item, and
        // the watch channels keep only the latest value, so a slow watcher costs no memory.
        let stream = futures::stream::unfold(progress, WatchProgress::next);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn raft_append_entries(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request.into_inner())?;
        encode(&self.shared.raft.append_entries(rpc).await)
    }

    async fn raft_vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<NodeId> = decode(request.into_inner())?;
        encode(&self.shared.raft.vote(rpc).await)
    }

    async fn raft_install_snapshot(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request.into_inner())?;
        encode(&self.shared.raft.install_snapshot(rpc).await)
    }
}
