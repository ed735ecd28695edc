//! openraft's transport over the gRPC `Controller` service: each Raft RPC is the
//! serde_json-encoded openraft request in `RaftMessage.payload`, answered with the encoded
//! `Result<response, RaftError>`. Addresses come from the static quorum configuration
//! (`--controller-quorum`), so a changed address takes effect on restart. Every call is
//! bounded by a timeout; an unreachable peer is reported as `Unreachable` so openraft backs
//! off instead of spinning.
use super::{NodeId, TypeConfig};
use insync_proto::controller_client::ControllerClient;
use insync_proto::{RaftMessage, MAX_GRPC_MESSAGE_BYTES};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

/// Upper bound for one Raft RPC whatever openraft asks (openraft already bounds
/// AppendEntries by the heartbeat interval and votes by the election timeout).
const MAX_RAFT_RPC: Duration = Duration::from_secs(10);
/// TCP connect bound: a dead peer must not stall the replication stream.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Creates one `ControllerPeer` per target voter.
#[derive(Debug, Clone)]
pub struct ControllerNetworkFactory {
    node_id: NodeId,
    /// id → advertised address from the quorum configuration.
    voters: Arc<BTreeMap<NodeId, String>>,
}

impl ControllerNetworkFactory {
    pub fn new(node_id: NodeId, voters: BTreeMap<NodeId, String>) -> Self {
        Self { node_id, voters: Arc::new(voters) }
    }
}

impl RaftNetworkFactory<TypeConfig> for ControllerNetworkFactory {
    type Network = ControllerPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> ControllerPeer {
        let address = self.voters.get(&target).cloned().unwrap_or_else(|| node.addr.clone());
        ControllerPeer { source: self.node_id, target, address, client: None }
    }
}

/// The connection to one peer controller; the tonic channel reconnects by itself.
#[derive(Debug)]
pub struct ControllerPeer {
    source: NodeId,
    target: NodeId,
    address: String,
    client: Option<ControllerClient<Channel>>,
}

#[derive(Debug, Clone, Copy)]
enum RaftRpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

/// Why a call produced no decodable answer.
enum TransportFailure {
    TimedOut(Duration),
    Unreachable(Unreachable),
    Network(NetworkError),
}

impl ControllerPeer {
    fn client(&mut self) -> Result<ControllerClient<Channel>, TransportFailure> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let endpoint = insync_proto::endpoint(&self.address)
            .map_err(|e| TransportFailure::Unreachable(Unreachable::new(&e)))?
            .connect_timeout(CONNECT_TIMEOUT);
        let client = ControllerClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Sends one encoded request and returns the decoded `Result` the peer's Raft produced.
    async fn call<Request, Response, E>(
        &mut self,
        rpc: RaftRpc,
        request: &Request,
        option: &RPCOption,
    ) -> Result<Result<Response, E>, TransportFailure>
    where
        Request: Serialize,
        Response: DeserializeOwned,
        E: DeserializeOwned,
    {
        let payload = serde_json::to_vec(request).map_err(|e| TransportFailure::Network(NetworkError::new(&e)))?;
        let mut client = self.client()?;
        let deadline = option.hard_ttl().min(MAX_RAFT_RPC);
        let message = RaftMessage { payload: payload.into() };
        let call = async move {
            match rpc {
                RaftRpc::AppendEntries => client.raft_append_entries(message).await,
                RaftRpc::Vote => client.raft_vote(message).await,
                RaftRpc::InstallSnapshot => client.raft_install_snapshot(message).await,
            }
        };
        let response = match tokio::time::timeout(deadline, call).await {
            Err(_) => return Err(TransportFailure::TimedOut(deadline)),
            Ok(Err(status)) => return Err(classify_status(status)),
            Ok(Ok(response)) => response.into_inner(),
        };
        serde_json::from_slice(&response.payload).map_err(|e| TransportFailure::Network(NetworkError::new(&e)))
    }

    fn to_rpc_error<E: Error>(&self, rpc: RaftRpc, failure: TransportFailure) -> RPCError<NodeId, BasicNode, E> {
        match failure {
            TransportFailure::TimedOut(timeout) => RPCError::Timeout(Timeout {
                action: match rpc {
                    RaftRpc::AppendEntries => RPCTypes::AppendEntries,
                    RaftRpc::Vote => RPCTypes::Vote,
                    RaftRpc::InstallSnapshot => RPCTypes::InstallSnapshot,
                },
                id: self.source,
                target: self.target,
                timeout,
            }),
            TransportFailure::Unreachable(unreachable) => RPCError::Unreachable(unreachable),
            TransportFailure::Network(network) => RPCError::Network(network),
        }
    }
}

/// Connection-level failures (refused, reset, DNS) mean "back off"; anything else is a
/// network error openraft retries at once.
fn classify_status(status: tonic::Status) -> TransportFailure {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            TransportFailure::Unreachable(Unreachable::new(&status))
        }
        _ => TransportFailure::Network(NetworkError::new(&status)),
    }
}

impl RaftNetwork<TypeConfig> for ControllerPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .call::<_, AppendEntriesResponse<NodeId>, RaftError<NodeId>>(RaftRpc::AppendEntries, &rpc, &option)
            .await
        {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(failure) => Err(self.to_rpc_error(RaftRpc::AppendEntries, failure)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        match self
            .call::<_, InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>(
                RaftRpc::InstallSnapshot,
                &rpc,
                &option,
            )
            .await
        {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(failure) => Err(self.to_rpc_error(RaftRpc::InstallSnapshot, failure)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call::<_, VoteResponse<NodeId>, RaftError<NodeId>>(RaftRpc::Vote, &rpc, &option).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(failure) => Err(self.to_rpc_error(RaftRpc::Vote, failure)),
        }
    }
}
