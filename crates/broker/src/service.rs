//! Thin tonic handlers of the `Broker` gRPC service: unpack, call the replica manager or
//! forward to the controller, pack. No replication logic lives here.
use std::sync::Arc;
use std::time::Duration;

use insync_proto as pb;
use insync_proto::broker_server::Broker;
use insync_types::ErrorCode;
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::controller_link::ControllerLink;
use crate::replica_manager::ReplicaManager;

pub struct BrokerService {
    pub rm: Arc<ReplicaManager>,
    pub link: Arc<ControllerLink>,
}

#[tonic::async_trait]
impl Broker for BrokerService {
    async fn produce(&self, request: Request<pb::ProduceRequest>) -> Result<Response<pb::ProduceResponse>, Status> {
        let request = request.into_inner();
        let acks = request.acks;
        let tp = format!("{}-{}", request.topic, request.partition);
        let outcome = self.rm.produce(request).await;
        if acks == 0 && outcome.error != ErrorCode::NONE {
            // acks=0: the producer will not look at the answer; make the error visible here.
            warn!("{tp}: acks=0 produce failed: {}: {}", outcome.error, outcome.message);
        }
        Ok(Response::new(pb::ProduceResponse {
            error_code: outcome.error.code(),
            error_message: outcome.message,
            base_offset: outcome.base_offset,
            appended: outcome.appended,
            leader_epoch: outcome.leader_epoch,
        }))
    }

    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        Ok(Response::new(self.rm.fetch(request.into_inner()).await))
    }

    async fn metadata(&self, request: Request<pb::MetadataRequest>) -> Result<Response<pb::MetadataResponse>, Status> {
        let wanted = request.into_inner().topics;
        let mut metadata = (*self.rm.metadata()).clone();
        if !wanted.is_empty() {
            metadata.topics.retain(|t| wanted.contains(&t.name));
        }
        Ok(Response::new(pb::MetadataResponse { metadata: Some(metadata) }))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        Ok(Response::new(self.rm.list_offsets(&request.into_inner())))
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let request = request.into_inner();
        let reply = self
            .link
            .call(Duration::from_secs(10), |mut c| {
                let r = request.clone();
                async move { c.create_topic(r).await }
            })
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if reply.error_code == 0 {
            // Answer once this broker's metadata shows the topic with leaders, so a
            // produce right after `topic create` finds it.
            let mut versions = self.rm.subscribe_metadata_version();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let ready = self
                    .rm
                    .metadata()
                    .topics
                    .iter()
                    .any(|t| t.name == request.name && t.partitions.iter().all(|p| p.leader >= 0));
                if ready || tokio::time::timeout_at(deadline, versions.changed()).await.is_err() {
                    break;
                }
            }
        }
        Ok(Response::new(reply))
    }

    async fn describe_replicas(
        &self,
        request: Request<pb::DescribeReplicasRequest>,
    ) -> Result<Response<pb::DescribeReplicasResponse>, Status> {
        Ok(Response::new(self.rm.describe_replicas(&request.into_inner().topics)))
    }
}
