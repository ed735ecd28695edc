//! Thin tonic handlers of the `Broker` gRPC service: unpack, call the replica manager or
//! forward to the controller, pack. No replication logic lives here.
//!
//! These are client paths: produce to, and DeleteRecords on, the internal topic
//! `__consumer_offsets` are refused here with INVALID_TOPIC_EXCEPTION, as on the Kafka
//! listener (`insync_controller::internal_topics`; the group coordinator appends through the
//! replica manager directly), and a CreateTopic is forwarded never marked `internal`.
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesOrdered, StreamExt};
use tokio_stream::Stream;

use insync_controller::internal_topics;
use insync_proto as pb;
use insync_proto::broker_server::Broker;
use insync_types::{ErrorCode, TopicPartition};
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

use crate::controller_link::{ControllerLink, ControllerReply};
use crate::grpc_convert::{self, produce_response};
use crate::messages::ProduceOutcome;
use crate::partition::ReplicaState;
use crate::producer_ids::ProducerIdManager;
use crate::replica_manager::{ProduceAppended, ReplicaManager};
use insync_proto::controller_client::ControllerClient;
use tonic::transport::Channel;

/// Requests of one ProduceStream whose answers may be outstanding at once (bounded, as
/// Kafka bounds a connection's in-flight requests).
const MAX_STREAM_IN_FLIGHT: usize = 64;

pub struct BrokerService {
    pub replica_manager: Arc<ReplicaManager>,
    pub link: Arc<ControllerLink>,
    /// Producer ids for InitProducerId, shared with the Kafka listener.
    pub producer_ids: Arc<ProducerIdManager>,
    /// The consumer-group coordinator, shared with the Kafka listener (group RPCs).
    pub groups: Arc<crate::group::GroupCoordinator>,
}

type PendingProduce = Pin<Box<dyn std::future::Future<Output = pb::ProduceResponse> + Send>>;

/// One ProduceStream: the requests still to read and the answers still to give.
struct ProduceStreamState {
    /// None once the client has closed its side (or it broke).
    inbound: Option<Streaming<pb::ProduceRequest>>,
    replica_manager: Arc<ReplicaManager>,
    waiting: FuturesOrdered<PendingProduce>,
}

impl ProduceStreamState {
    /// Reads and appends requests until the oldest one is answerable; None when the client
    /// has closed its side and every request is answered.
    async fn next_response(&mut self) -> Option<pb::ProduceResponse> {
        loop {
            let can_read = self.inbound.is_some() && self.waiting.len() < MAX_STREAM_IN_FLIGHT;
            tokio::select! {
                biased;
                Some(response) = self.waiting.next(), if !self.waiting.is_empty() => return Some(response),
                message = next_message(&mut self.inbound), if can_read => match message {
                    Some(request) => {
                        let correlation_id = request.correlation_id;
                        let timeout_ms = request.timeout_ms;
                        let (acks, started) = (request.acks, Instant::now());
                        let appended = match internal_topic_refusal(&request.topic) {
                            Some(refused) => ProduceAppended::Done(refused),
                            None => self.replica_manager.produce_append(grpc_convert::produce_request(request)),
                        };
                        let replica_manager = self.replica_manager.clone();
                        self.waiting.push_back(Box::pin(async move {
                            let outcome = replica_manager.produce_wait(appended, timeout_ms).await;
                            crate::metrics::record_produce(acks, outcome.error, started.elapsed());
                            produce_response(outcome, correlation_id)
                        }));
                    }
                    None => self.inbound = None,
                },
                else => return None,
            }
        }
    }
}

/// A client's produce to an internal topic, refused before anything is written.
fn internal_topic_refusal(topic: &str) -> Option<ProduceOutcome> {
    internal_topics::check_append(topic).err().map(|r| ProduceOutcome::rejected(r.code, r.message))
}

/// The next request of a stream; None at its end or when it broke (nothing more to read).
async fn next_message(inbound: &mut Option<Streaming<pb::ProduceRequest>>) -> Option<pb::ProduceRequest> {
    match inbound {
        Some(stream) => stream.message().await.ok().flatten(),
        None => None,
    }
}

#[tonic::async_trait]
impl Broker for BrokerService {
    async fn produce(&self, request: Request<pb::ProduceRequest>) -> Result<Response<pb::ProduceResponse>, Status> {
        let request = request.into_inner();
        let acks = request.acks;
        let correlation_id = request.correlation_id;
        let tp = format!("{}-{}", request.topic, request.partition);
        let started = Instant::now();
        let outcome = match internal_topic_refusal(&request.topic) {
            Some(refused) => refused,
            None => self.replica_manager.produce(grpc_convert::produce_request(request)).await,
        };
        crate::metrics::record_produce(acks, outcome.error, started.elapsed());
        if acks == 0 && outcome.error != ErrorCode::NONE {
            // acks=0: the producer will not look at the answer; make the error visible here.
            warn!("{tp}: acks=0 produce failed: {}: {}", outcome.error, outcome.message);
        }
        Ok(Response::new(produce_response(outcome, correlation_id)))
    }

    type ProduceStreamStream = Pin<Box<dyn Stream<Item = Result<pb::ProduceResponse, Status>> + Send>>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        // The answer stream itself does the work, polled by the task that writes the
        // answers: no task of its own, so an acks=all completion reaches the socket with one
        // wake-up fewer. Appends happen in request order as requests arrive (up to
        // MAX_STREAM_IN_FLIGHT unanswered); the acks=all waits run concurrently and are
        // answered in request order.
        let state = ProduceStreamState {
            inbound: Some(request.into_inner()),
            replica_manager: self.replica_manager.clone(),
            waiting: FuturesOrdered::new(),
        };
        let answers = futures::stream::unfold(state, |mut state| async move {
            let response = state.next_response().await?;
            Some((Ok(response), state))
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn init_producer_id(
        &self,
        _request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        let (producer_id, error, message) = match self.producer_ids.next_producer_id().await {
            Ok(id) => (id, ErrorCode::NONE, String::new()),
            Err((error, message)) => (-1, error, message),
        };
        Ok(Response::new(pb::InitProducerIdResponse {
            error_code: error.code(),
            error_message: message,
            producer_id,
            producer_epoch: 0,
        }))
    }

    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        let response = self.replica_manager.fetch(grpc_convert::fetch_request(request.into_inner())).await;
        crate::metrics::record_fetch(&response);
        Ok(Response::new(grpc_convert::fetch_response_to_wire(response)))
    }

    async fn metadata(&self, request: Request<pb::MetadataRequest>) -> Result<Response<pb::MetadataResponse>, Status> {
        let wanted = request.into_inner().topics;
        let mut metadata = (*self.replica_manager.metadata()).clone();
        if !wanted.is_empty() {
            metadata.topics.retain(|t| wanted.contains(&t.name));
        }
        Ok(Response::new(pb::MetadataResponse { metadata: Some(metadata) }))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        // A timestamp lookup reads the log: disk work, off the tokio workers.
        let replica_manager = self.replica_manager.clone();
        let request = request.into_inner();
        let answer = tokio::task::spawn_blocking(move || {
            let tp = TopicPartition::new(request.topic, request.partition);
            replica_manager.list_offsets(&tp, request.timestamp)
        })
        .await
        .map_err(|e| Status::internal(format!("list offsets failed: {e}")))?;
        Ok(Response::new(match answer {
            Ok(offset) => pb::ListOffsetsResponse { error_code: 0, error_message: String::new(), offset },
            Err(refused) => {
                pb::ListOffsetsResponse { error_code: refused.error.code(), error_message: refused.message, offset: -1 }
            }
        }))
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        // Only a broker's own request (group storage, straight to the controller) creates
        // the internal offsets topic.
        let request = pb::CreateTopicRequest { internal: false, ..request.into_inner() };
        let reply = forward(&self.link, &request, |mut c, r| async move { c.create_topic(r).await }).await?;
        if reply.error_code == 0 && !request.validate_only {
            // Answer once this broker's metadata shows the topic with leaders, so a
            // produce right after `topic create` finds it.
            self.until_metadata(|m| {
                m.topics.iter().any(|t| t.name == request.name && t.partitions.iter().all(|p| p.leader >= 0))
            })
            .await;
        }
        Ok(Response::new(reply))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let request = request.into_inner();
        let reply = forward(&self.link, &request, |mut c, r| async move { c.delete_topic(r).await }).await?;
        if reply.error_code == 0 {
            // Answer once this broker's metadata no longer has it (its own replicas are then
            // stopped), so a produce right after `topic delete` through this broker fails.
            self.until_metadata(|m| !m.topics.iter().any(|t| t.topic_id == reply.topic_id)).await;
        }
        Ok(Response::new(reply))
    }

    async fn create_partitions(
        &self,
        request: Request<pb::CreatePartitionsRequest>,
    ) -> Result<Response<pb::CreatePartitionsResponse>, Status> {
        let request = request.into_inner();
        let reply = forward(&self.link, &request, |mut c, r| async move { c.create_partitions(r).await }).await?;
        if let (0, false, Some(after)) = (reply.error_code, request.validate_only, reply.topic.as_ref()) {
            // Answer once this broker's metadata shows the new partitions with leaders.
            let count = after.partitions.len();
            self.until_metadata(|m| {
                m.topics.iter().any(|t| {
                    t.topic_id == after.topic_id
                        && t.partitions.len() == count
                        && t.partitions.iter().all(|p| p.leader >= 0)
                })
            })
            .await;
        }
        Ok(Response::new(reply))
    }

    async fn delete_records(
        &self,
        request: Request<pb::DeleteRecordsRequest>,
    ) -> Result<Response<pb::DeleteRecordsResponse>, Status> {
        let request = request.into_inner();
        if let Err(refusal) = internal_topics::check_delete_records(&request.topic) {
            return Ok(Response::new(pb::DeleteRecordsResponse {
                error_code: refusal.code.code(),
                error_message: refusal.message,
                low_watermark: -1,
            }));
        }
        let replica_manager = self.replica_manager.clone();
        // Deleting segments is disk work: off the tokio workers.
        let answer = tokio::task::spawn_blocking(move || {
            let tp = TopicPartition::new(request.topic, request.partition);
            replica_manager.delete_records(&tp, request.offset)
        })
        .await
        .map_err(|e| Status::internal(format!("delete records failed: {e}")))?;
        Ok(Response::new(match answer {
            Ok(low_watermark) => {
                pb::DeleteRecordsResponse { error_code: 0, error_message: String::new(), low_watermark }
            }
            Err((code, error_message)) => {
                pb::DeleteRecordsResponse { error_code: code.code(), error_message, low_watermark: -1 }
            }
        }))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        Ok(Response::new(crate::group::grpc::list_groups(&self.groups, request.into_inner())))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        Ok(Response::new(crate::group::grpc::describe_group(&self.groups, request.into_inner())))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        Ok(Response::new(crate::group::grpc::delete_group(&self.groups, request.into_inner()).await))
    }

    async fn alter_topic_configs(
        &self,
        request: Request<pb::AlterTopicConfigsRequest>,
    ) -> Result<Response<pb::AlterTopicConfigsResponse>, Status> {
        let request = request.into_inner();
        let reply = forward(&self.link, &request, |mut c, r| async move { c.alter_topic_configs(r).await }).await?;
        if let (0, false, Some(after)) = (reply.error_code, request.validate_only, reply.topic.as_ref()) {
            // Answer once this broker applies the new configs, so what follows through it
            // (a produce against a new max.message.bytes) sees them.
            self.until_metadata(|m| {
                m.topics.iter().any(|t| t.topic_id == after.topic_id && t.configs == after.configs)
            })
            .await;
        }
        Ok(Response::new(reply))
    }

    async fn elect_leaders(
        &self,
        request: Request<pb::ElectLeadersRequest>,
    ) -> Result<Response<pb::ElectLeadersResponse>, Status> {
        let request = request.into_inner();
        let reply = forward(&self.link, &request, |mut c, r| async move { c.elect_leaders(r).await }).await?;
        // Answer once this broker's metadata shows the new leaders, so a `describe` right
        // after `elect-leaders` shows what the election did.
        self.until_metadata(|m| {
            reply.results.iter().filter(|r| r.error_code == 0).all(|r| {
                m.topics
                    .iter()
                    .filter(|t| t.name == r.topic)
                    .flat_map(|t| t.partitions.iter())
                    .any(|p| p.partition == r.partition && p.leader == r.leader)
            })
        })
        .await;
        Ok(Response::new(reply))
    }

    async fn describe_replicas(
        &self,
        request: Request<pb::DescribeReplicasRequest>,
    ) -> Result<Response<pb::DescribeReplicasResponse>, Status> {
        Ok(Response::new(describe_replicas(&self.replica_manager, &request.into_inner().topics)))
    }
}

impl BrokerService {
    /// Waits (5 s at most) until this broker's metadata satisfies `ready`: an admin answer
    /// then agrees with what a request right after it sees through this broker.
    async fn until_metadata(&self, ready: impl Fn(&pb::ClusterMetadata) -> bool) {
        let mut versions = self.replica_manager.subscribe_metadata_version();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !ready(&self.replica_manager.metadata()) {
            if tokio::time::timeout_at(deadline, versions.changed()).await.is_err() {
                return;
            }
        }
    }
}

/// Forwards an admin request to the active controller (Kafka brokers forward CreateTopics,
/// DeleteTopics and ElectLeaders the same way, KIP-590), for 10 s at most.
async fn forward<Q, T, F, Fut>(link: &ControllerLink, request: &Q, call: F) -> Result<T, Status>
where
    Q: Clone,
    T: ControllerReply,
    F: Fn(ControllerClient<Channel>, Q) -> Fut,
    Fut: std::future::Future<Output = Result<Response<T>, Status>>,
{
    link.call(Duration::from_secs(10), |c| call(c, request.clone()))
        .await
        .map_err(|e| Status::unavailable(e.to_string()))
}

/// Every hosted replica of `topics` (all when empty), as `insync describe` shows them.
fn describe_replicas(replica_manager: &ReplicaManager, topics: &[String]) -> pb::DescribeReplicasResponse {
    let now_ms = replica_manager.now_ms();
    let replicas = replica_manager
        .all_partitions()
        .into_iter()
        .filter(|p| topics.is_empty() || topics.contains(&p.topic_partition().topic))
        .map(|p| p.inspect(|state| describe_replica(p.topic_partition(), state, now_ms)))
        .collect();
    pb::DescribeReplicasResponse { broker_id: replica_manager.broker_id, replicas }
}

fn describe_replica(tp: &TopicPartition, state: &ReplicaState, now_ms: u64) -> pb::ReplicaDescription {
    let mut d = pb::ReplicaDescription {
        topic: tp.topic.clone(),
        partition: tp.partition,
        is_leader: state.leader().is_some(),
        leader_epoch: state.leader_epoch(),
        log_start_offset: state.log_start_offset(),
        log_end_offset: state.log_end_offset(),
        high_watermark: state.high_watermark(),
        ..Default::default()
    };
    let Some(leader) = state.leader() else { return d };
    d.isr = leader.isr_state().committed().iter().copied().collect();
    d.maximal_isr = leader.isr_state().maximal().into_iter().collect();
    d.effective_min_isr = leader.effective_min_isr() as i32;
    d.followers = leader
        .followers()
        .map(|(id, f)| pb::FollowerDescription {
            broker_id: id,
            log_end_offset: f.log_end_offset,
            last_caught_up_ms_ago: if f.last_caught_up_ms == 0 {
                -1
            } else {
                now_ms.saturating_sub(f.last_caught_up_ms) as i64
            },
        })
        .collect();
    if leader.is_under_min_isr() {
        d.note = format!(
            "HW held: ISR below min.insync.replicas ({} < {})",
            leader.isr_state().committed().len(),
            leader.effective_min_isr()
        );
    }
    d
}
