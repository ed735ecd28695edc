//! Test harness for in-process controllers: binds 127.0.0.1:0, serves `ControllerNode::service()`
//! with tonic, and offers bounded polling helpers and gRPC clients.
#![allow(dead_code)]

use insync_controller::{ControllerConfig, ControllerNode};
use insync_proto::controller_client::ControllerClient;
use insync_proto::{
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, ClusterMetadata, MetadataRequest, RegisterBrokerRequest,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};

pub const NOT_CONTROLLER: i32 = 41;

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

pub async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let address = listener.local_addr().expect("local address").to_string();
    (listener, address)
}

/// A controller node with its gRPC server.
pub struct RunningController {
    pub node: Arc<ControllerNode>,
    pub address: String,
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl RunningController {
    pub async fn start(
        node_id: u64,
        data_dir: &Path,
        voters: BTreeMap<u64, String>,
        listener: TcpListener,
        broker_session_timeout_ms: u64,
    ) -> RunningController {
        let address = listener.local_addr().unwrap().to_string();
        let mut config = ControllerConfig::new(node_id, data_dir, voters);
        config.broker_session_timeout_ms = broker_session_timeout_ms;
        let node = Arc::new(ControllerNode::start(config).await.expect("controller starts"));
        let service = node.service();
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
                .await
            {
                tracing::error!("controller server failed: {error}");
            }
        });
        RunningController { node, address, stop_server: Some(stop_server), server: Some(server) }
    }

    /// Stops the node (ending metadata streams) then its server.
    pub async fn stop(&mut self) {
        self.node.shutdown().await;
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), server).await.is_err() {
                abort.abort();
            }
        }
    }

    pub async fn client(&self) -> ControllerClient<Channel> {
        client(&self.address).await
    }
}

pub async fn client(address: &str) -> ControllerClient<Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10));
    ControllerClient::new(endpoint.connect_lazy())
}

/// Polls `probe` every 50 ms until it yields Some, panicking with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn metadata(client: &mut ControllerClient<Channel>) -> ClusterMetadata {
    client
        .get_metadata(MetadataRequest { topics: vec![] })
        .await
        .expect("GetMetadata")
        .into_inner()
        .metadata
        .expect("metadata")
}

/// Registers a broker, retrying while the controller is not yet active.
pub async fn register(client: &mut ControllerClient<Channel>, broker_id: i32, incarnation: u64) {
    let request = RegisterBrokerRequest {
        broker_id,
        address: format!("127.0.0.1:{}", 9091 + broker_id),
        incarnation,
        kafka_address: String::new(),
    };
    eventually(Duration::from_secs(10), "broker registration", || {
        let mut client = client.clone();
        let request = request.clone();
        async move {
            let error = client.register_broker(request).await.ok()?.into_inner().error?;
            assert!(error.error_code == 0 || error.error_code == NOT_CONTROLLER, "register: {error:?}");
            (error.error_code == 0).then_some(())
        }
    })
    .await
}

pub async fn heartbeat(
    client: &mut ControllerClient<Channel>,
    broker_id: i32,
    incarnation: u64,
    want_shutdown: bool,
) -> BrokerHeartbeatResponse {
    client
        .broker_heartbeat(BrokerHeartbeatRequest {
            broker_id,
            incarnation,
            want_shutdown,
            offline_replicas: Vec::new(),
        })
        .await
        .expect("BrokerHeartbeat")
        .into_inner()
}

/// Heartbeats like a broker (every 200 ms) until dropped.
pub struct Heartbeater {
    task: JoinHandle<()>,
}

impl Heartbeater {
    /// `clients`: every controller; each round stops at the first that accepts (the active one).
    pub fn start(clients: Vec<ControllerClient<Channel>>, broker_id: i32, incarnation: u64) -> Heartbeater {
        let task = tokio::spawn(async move {
            let mut clients = clients;
            loop {
                for client in clients.iter_mut() {
                    let request = BrokerHeartbeatRequest {
                        broker_id,
                        incarnation,
                        want_shutdown: false,
                        offline_replicas: Vec::new(),
                    };
                    let answer = tokio::time::timeout(Duration::from_secs(1), client.broker_heartbeat(request)).await;
                    let accepted = matches!(
                        answer,
                        Ok(Ok(ref response)) if response.get_ref().error.as_ref().is_some_and(|e| e.error_code == 0)
                    );
                    if accepted {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Heartbeater { task }
    }
}

impl Drop for Heartbeater {
    fn drop(&mut self) {
        self.task.abort();
    }
}
