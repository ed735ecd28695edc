//! insync client library: bootstrap, a metadata cache, leader routing, produce with
//! retries of definite failures, fetch, and admin calls. Used by the `insync` and
//! `insync-producer` binaries and by the tests.
pub mod backoff;
pub mod partitioner;
pub mod producer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use insync_proto as pb;
use insync_proto::broker_client::BrokerClient;
use insync_types::{Acks, BrokerId, ErrorCode};
use tonic::transport::Channel;

use crate::backoff::Backoff;

/// The failures Kafka's producer retries after refreshing its metadata: its
/// `InvalidMetadataException`s (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION from a
/// broker whose metadata lags, LEADER_NOT_AVAILABLE, and KAFKA_STORAGE_ERROR from a leader
/// whose replica went offline: `KafkaStorageException` is one too, since the controller
/// moves the leadership away) and a broker that cannot be reached or a connection lost
/// mid-request. NOT_ENOUGH_REPLICAS is retriable in Kafka too, but
/// insync's clients report it: showing it is the point of acks=all with min.insync.replicas.
pub fn retriable_after_metadata_refresh(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NOT_LEADER_OR_FOLLOWER
            | ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
            | ErrorCode::LEADER_NOT_AVAILABLE
            | ErrorCode::KAFKA_STORAGE_ERROR
            | ErrorCode::BROKER_NOT_AVAILABLE
            | ErrorCode::NETWORK_EXCEPTION
    )
}

/// The local cluster's brokers (docs/design.md "Topology: controllers and brokers": broker N on
/// 127.0.1.N:(9091+N), each node on its own loopback address).
pub const DEFAULT_BOOTSTRAP: &str = "127.0.1.1:9092,127.0.1.2:9093,127.0.1.3:9094";

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No broker of the bootstrap list or metadata answered.
    #[error("no broker reachable (tried {tried}): {last}")]
    NoBroker { tried: String, last: String },
    /// A broker answered with a Kafka error.
    #[error("{code}: {message}")]
    Kafka { code: ErrorCode, message: String },
    /// The connection failed; whether the request took effect is unknown.
    #[error("transport error talking to {address}: {message}")]
    Transport { address: String, message: String },
}

impl ClientError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Whether a failed produce's records may be in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Definitely not written: a retry cannot duplicate.
    No,
    /// Written to the leader's log (they may survive, or be truncated later).
    Yes,
    /// The answer was lost (transport error after sending).
    Unknown,
}

impl Appended {
    pub fn as_str(self) -> &'static str {
        match self {
            Appended::No => "false",
            Appended::Yes => "true",
            Appended::Unknown => "unknown",
        }
    }
}

/// A successful produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceAck {
    pub partition: i32,
    /// -1 for acks=0 (the broker's answer is not awaited).
    pub base_offset: i64,
    pub leader_epoch: i32,
}

/// A failed produce: Kafka's error plus whether the records were appended.
#[derive(Debug, Clone)]
pub struct ProduceFailure {
    pub partition: i32,
    pub code: ErrorCode,
    pub message: String,
    pub appended: Appended,
}

impl std::fmt::Display for ProduceFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (appended={}): {}", self.code, self.appended.as_str(), self.message)
    }
}

/// Which records go where: explicit partition, by key (Kafka murmur2), or round robin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionChoice {
    Explicit(i32),
    Auto,
}

/// A connection pool plus metadata cache over a bootstrap list.
pub struct Cluster {
    bootstrap: Vec<String>,
    channels: Mutex<HashMap<String, Channel>>,
    metadata: Mutex<Option<Arc<pb::ClusterMetadata>>>,
    /// When `metadata` was last fetched, for [`Cluster::recent_metadata`].
    refreshed_at: Mutex<Option<Instant>>,
    round_robin: Mutex<u64>,
}

impl Cluster {
    /// `bootstrap`: comma-separated host:port list.
    pub fn new(bootstrap: &str) -> Result<Arc<Cluster>, ClientError> {
        let list: Vec<String> =
            bootstrap.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
        if list.is_empty() {
            return Err(ClientError::NoBroker { tried: String::new(), last: "empty bootstrap list".into() });
        }
        Ok(Arc::new(Cluster {
            bootstrap: list,
            channels: Mutex::new(HashMap::new()),
            metadata: Mutex::new(None),
            refreshed_at: Mutex::new(None),
            round_robin: Mutex::new(0),
        }))
    }

    /// A client for one broker (connections are cached and reused).
    pub async fn broker(&self, address: &str) -> Result<BrokerClient<Channel>, ClientError> {
        let cached = self.channels.lock().unwrap_or_else(|p| p.into_inner()).get(address).cloned();
        let channel = match cached {
            Some(c) => c,
            None => {
                let endpoint = pb::endpoint(address)
                    .map_err(|e| ClientError::Transport { address: address.into(), message: e.to_string() })?;
                let c = endpoint
                    .connect()
                    .await
                    .map_err(|e| ClientError::Transport { address: address.into(), message: source_chain(&e) })?;
                self.channels.lock().unwrap_or_else(|p| p.into_inner()).insert(address.to_string(), c.clone());
                c
            }
        };
        Ok(BrokerClient::new(channel)
            .max_decoding_message_size(pb::MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(pb::MAX_GRPC_MESSAGE_BYTES))
    }

    fn forget(&self, address: &str) {
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).remove(address);
    }

    fn transport_error(&self, address: &str, status: &tonic::Status) -> ClientError {
        self.forget(address);
        ClientError::Transport { address: address.into(), message: status.message().to_string() }
    }

    /// Fresh metadata from the first broker that answers (known brokers first, then the
    /// bootstrap list, as Kafka's `NetworkClient` picks the least-loaded known node).
    pub async fn refresh_metadata(&self) -> Result<Arc<pb::ClusterMetadata>, ClientError> {
        let mut candidates: Vec<String> = Vec::new();
        if let Some(m) = self.metadata.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            candidates.extend(m.brokers.iter().filter(|b| !b.fenced).map(|b| b.address.clone()));
        }
        for b in &self.bootstrap {
            if !candidates.contains(b) {
                candidates.push(b.clone());
            }
        }
        let mut last = String::from("no answer");
        for address in &candidates {
            let mut client = match self.broker(address).await {
                Ok(c) => c,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let mut request = tonic::Request::new(pb::MetadataRequest { topics: vec![] });
            request.set_timeout(Duration::from_secs(3));
            match client.metadata(request).await {
                Ok(r) => {
                    let metadata = r.into_inner().metadata.unwrap_or_default();
                    if metadata.brokers.is_empty() {
                        last = format!("{address}: broker has no cluster metadata yet");
                        continue;
                    }
                    let metadata = Arc::new(metadata);
                    *self.metadata.lock().unwrap_or_else(|p| p.into_inner()) = Some(metadata.clone());
                    *self.refreshed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    return Ok(metadata);
                }
                Err(status) => last = self.transport_error(address, &status).to_string(),
            }
        }
        Err(ClientError::NoBroker { tried: candidates.join(","), last })
    }

    /// Metadata no older than `max_age`: the cached copy if it is that fresh, else fetched
    /// anew. Many partition senders polling for a new leader then cost one request per
    /// `max_age`, not one each.
    pub async fn recent_metadata(&self, max_age: Duration) -> Result<Arc<pb::ClusterMetadata>, ClientError> {
        let fresh = self.refreshed_at.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t.elapsed() < max_age);
        if fresh {
            if let Some(m) = self.metadata.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                return Ok(m);
            }
        }
        self.refresh_metadata().await
    }

    /// Cached metadata, fetched on first use.
    pub async fn metadata(&self) -> Result<Arc<pb::ClusterMetadata>, ClientError> {
        if let Some(m) = self.metadata.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(m);
        }
        self.refresh_metadata().await
    }

    /// The partition's leader id and address, or LEADER_NOT_AVAILABLE /
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub fn leader_of(
        metadata: &pb::ClusterMetadata,
        topic: &str,
        partition: i32,
    ) -> Result<(BrokerId, String), ClientError> {
        let Some(t) = metadata.topics.iter().find(|t| t.name == topic) else {
            return Err(ClientError::Kafka {
                code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                message: format!("unknown topic '{topic}'"),
            });
        };
        let Some(p) = t.partitions.iter().find(|p| p.partition == partition) else {
            return Err(ClientError::Kafka {
                code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                message: format!("topic '{topic}' has no partition {partition} (it has {})", t.partitions.len()),
            });
        };
        let address = metadata.brokers.iter().find(|b| b.id == p.leader).map(|b| b.address.clone());
        match (p.leader, address) {
            (leader, Some(address)) if leader >= 0 => Ok((leader, address)),
            _ => Err(ClientError::Kafka {
                code: ErrorCode::LEADER_NOT_AVAILABLE,
                message: format!("{topic}-{partition} has no leader (offline)"),
            }),
        }
    }

    /// Number of partitions of a topic.
    pub async fn partition_count(&self, topic: &str) -> Result<i32, ClientError> {
        let metadata = self.metadata().await?;
        match metadata.topics.iter().find(|t| t.name == topic) {
            Some(t) => Ok(t.partitions.len() as i32),
            None => {
                let metadata = self.refresh_metadata().await?;
                metadata.topics.iter().find(|t| t.name == topic).map(|t| t.partitions.len() as i32).ok_or_else(|| {
                    ClientError::Kafka {
                        code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        message: format!("unknown topic '{topic}'"),
                    }
                })
            }
        }
    }

    /// Picks the partition for a record (Kafka `DefaultPartitioner` semantics for keys).
    pub async fn choose_partition(
        &self,
        topic: &str,
        choice: PartitionChoice,
        key: Option<&[u8]>,
    ) -> Result<i32, ClientError> {
        let count = self.partition_count(topic).await?;
        match choice {
            PartitionChoice::Explicit(p) if p >= 0 && p < count => Ok(p),
            PartitionChoice::Explicit(p) => Err(ClientError::Kafka {
                code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                message: format!("topic '{topic}' has no partition {p} (it has {count})"),
            }),
            PartitionChoice::Auto => match key {
                Some(k) => Ok(partitioner::partition_for_key(k, count)),
                None => {
                    let mut rr = self.round_robin.lock().unwrap_or_else(|p| p.into_inner());
                    *rr = rr.wrapping_add(1);
                    Ok((*rr % count as u64) as i32)
                }
            },
        }
    }

    /// Sends one record batch to the partition leader, following leadership: failures a
    /// metadata refresh can fix ([`retriable_after_metadata_refresh`]) are retried with exponential
    /// backoff until `delivery_timeout` (Kafka `delivery.timeout.ms`, KIP-91; backoff as
    /// KIP-580). Everything else is reported with whether the records were appended.
    ///
    /// Like Kafka's producer without idempotence, a retry of a request whose answer was
    /// lost may write the records twice; the answer is the offset of the copy acknowledged.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        acks: Acks,
        request_timeout: Duration,
        delivery_timeout: Duration,
        records: Bytes,
    ) -> Result<ProduceAck, ProduceFailure> {
        // UNKNOWN_TOPIC_OR_PARTITION is retried too: from a broker whose metadata lags (just
        // restarted) it passes; a topic that really does not exist fails at the deadline, as
        // Kafka's producer waits max.block.ms for a topic's metadata. (`insync-producer`
        // checks the topic up front and fails at once.)
        let deadline = Instant::now() + delivery_timeout;
        let mut backoff = Backoff::new();
        let mut refresh = false;
        loop {
            let outcome = self.produce_once(topic, partition, acks, request_timeout, records.clone(), refresh).await;
            let failure = match outcome {
                Ok(ack) => return Ok(ack),
                Err(f) => f,
            };
            if !retriable_after_metadata_refresh(failure.code) || Instant::now() + backoff.current() >= deadline {
                return Err(failure);
            }
            let delay = backoff.next_delay();
            tracing::debug!("produce to {topic}-{partition}: {failure}; retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            refresh = true;
        }
    }

    async fn produce_once(
        &self,
        topic: &str,
        partition: i32,
        acks: Acks,
        request_timeout: Duration,
        records: Bytes,
        refresh: bool,
    ) -> Result<ProduceAck, ProduceFailure> {
        let fail = |code: ErrorCode, message: String, appended: Appended| ProduceFailure {
            partition,
            code,
            message,
            appended,
        };
        let metadata = if refresh { self.refresh_metadata().await } else { self.metadata().await };
        let metadata = metadata.map_err(|e| fail(ErrorCode::BROKER_NOT_AVAILABLE, e.to_string(), Appended::No))?;
        let (_, address) = match Self::leader_of(&metadata, topic, partition) {
            Ok(l) => l,
            Err(ClientError::Kafka { code, message }) => return Err(fail(code, message, Appended::No)),
            Err(e) => return Err(fail(ErrorCode::BROKER_NOT_AVAILABLE, e.to_string(), Appended::No)),
        };
        let mut client = self
            .broker(&address)
            .await
            .map_err(|e| fail(ErrorCode::BROKER_NOT_AVAILABLE, e.to_string(), Appended::No))?;
        let timeout_ms = request_timeout.as_millis().min(u128::from(u32::MAX)) as u32;
        let mut request = tonic::Request::new(pb::ProduceRequest {
            topic: topic.to_string(),
            partition,
            acks: acks.to_wire(),
            timeout_ms,
            records,
            correlation_id: 0,
        });
        // The broker answers by timeout_ms at the latest; allow for the network.
        request.set_timeout(request_timeout + Duration::from_secs(5));
        let response = match client.produce(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let e = self.transport_error(&address, &status);
                return Err(fail(ErrorCode::NETWORK_EXCEPTION, e.to_string(), Appended::Unknown));
            }
        };
        let code = ErrorCode::from_code(response.error_code);
        if code == ErrorCode::NONE {
            Ok(ProduceAck { partition, base_offset: response.base_offset, leader_epoch: response.leader_epoch })
        } else {
            let appended = if response.appended { Appended::Yes } else { Appended::No };
            Err(fail(code, response.error_message, appended))
        }
    }

    /// One consumer fetch from the partition leader (reads only below the HW).
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait: Duration,
        max_bytes: u32,
    ) -> Result<pb::FetchPartitionResponse, ClientError> {
        let metadata = self.metadata().await?;
        let (_, address) = Self::leader_of(&metadata, topic, partition)?;
        let mut client = self.broker(&address).await?;
        let mut request = tonic::Request::new(pb::FetchRequest {
            replica_id: insync_types::CONSUMER_REPLICA_ID,
            max_wait_ms: max_wait.as_millis() as u32,
            min_bytes: 1,
            max_bytes,
            partitions: vec![pb::FetchPartition {
                topic: topic.to_string(),
                partition,
                fetch_offset: offset,
                current_leader_epoch: -1,
                last_fetched_epoch: -1,
                partition_max_bytes: max_bytes,
            }],
            // A consumer: no broker epoch (KIP-903 concerns replica fetches only).
            broker_epoch: 0,
        });
        request.set_timeout(max_wait + Duration::from_secs(5));
        let response = client.fetch(request).await.map_err(|s| self.transport_error(&address, &s))?.into_inner();
        response.partitions.into_iter().next().ok_or_else(|| ClientError::Kafka {
            code: ErrorCode::UNKNOWN_SERVER_ERROR,
            message: "empty fetch response".into(),
        })
    }

    /// Kafka ListOffsets: -2 earliest, -1 latest (the HW), asked of the leader.
    pub async fn list_offset(&self, topic: &str, partition: i32, timestamp: i64) -> Result<i64, ClientError> {
        let metadata = self.metadata().await?;
        let (_, address) = Self::leader_of(&metadata, topic, partition)?;
        let mut client = self.broker(&address).await?;
        let response = client
            .list_offsets(pb::ListOffsetsRequest { topic: topic.into(), partition, timestamp })
            .await
            .map_err(|s| self.transport_error(&address, &s))?
            .into_inner();
        match ErrorCode::from_code(response.error_code) {
            ErrorCode::NONE => Ok(response.offset),
            code => Err(ClientError::Kafka { code, message: response.error_message }),
        }
    }

    /// Kafka DeleteRecords, asked of the leader: records of the partition before `offset`
    /// (-1: the high watermark) are deleted. Returns the new log start offset.
    pub async fn delete_records(&self, topic: &str, partition: i32, offset: i64) -> Result<i64, ClientError> {
        let metadata = self.metadata().await?;
        let (_, address) = Self::leader_of(&metadata, topic, partition)?;
        let mut client = self.broker(&address).await?;
        let response = client
            .delete_records(pb::DeleteRecordsRequest { topic: topic.into(), partition, offset })
            .await
            .map_err(|s| self.transport_error(&address, &s))?
            .into_inner();
        match ErrorCode::from_code(response.error_code) {
            ErrorCode::NONE => Ok(response.low_watermark),
            code => Err(ClientError::Kafka { code, message: response.error_message }),
        }
    }

    /// Creates a topic through any broker (forwarded to the active controller).
    pub async fn create_topic(&self, request: pb::CreateTopicRequest) -> Result<pb::TopicMetadata, ClientError> {
        let r = self
            .admin_call(|mut client| {
                let request = request.clone();
                async move { client.create_topic(request).await }
            })
            .await?;
        match ErrorCode::from_code(r.error_code) {
            ErrorCode::NONE => Ok(r.topic.unwrap_or_default()),
            code => Err(ClientError::Kafka { code, message: r.error_message }),
        }
    }

    /// Changes a topic's config overrides through any broker (forwarded to the active
    /// controller; Kafka `Admin.incrementalAlterConfigs`). Returns the topic as changed.
    pub async fn alter_topic_configs(
        &self,
        request: pb::AlterTopicConfigsRequest,
    ) -> Result<pb::TopicMetadata, ClientError> {
        let r = self
            .admin_call(|mut client| {
                let request = request.clone();
                async move { client.alter_topic_configs(request).await }
            })
            .await?;
        match ErrorCode::from_code(r.error_code) {
            ErrorCode::NONE => Ok(r.topic.unwrap_or_default()),
            code => Err(ClientError::Kafka { code, message: r.error_message }),
        }
    }

    /// Grows a topic to `request.count` partitions through any broker (forwarded to the
    /// active controller; Kafka `Admin.createPartitions`). Returns the topic as changed.
    pub async fn create_partitions(
        &self,
        request: pb::CreatePartitionsRequest,
    ) -> Result<pb::TopicMetadata, ClientError> {
        let r = self
            .admin_call(|mut client| {
                let request = request.clone();
                async move { client.create_partitions(request).await }
            })
            .await?;
        match ErrorCode::from_code(r.error_code) {
            ErrorCode::NONE => Ok(r.topic.unwrap_or_default()),
            code => Err(ClientError::Kafka { code, message: r.error_message }),
        }
    }

    /// Deletes a topic through any broker (forwarded to the active controller; Kafka
    /// `Admin.deleteTopics`). Returns the deleted topic's id.
    pub async fn delete_topic(&self, name: &str) -> Result<String, ClientError> {
        let request = pb::DeleteTopicRequest { name: name.to_string(), topic_id: String::new() };
        let r = self
            .admin_call(|mut client| {
                let request = request.clone();
                async move { client.delete_topic(request).await }
            })
            .await?;
        match ErrorCode::from_code(r.error_code) {
            ErrorCode::NONE => Ok(r.topic_id),
            code => Err(ClientError::Kafka { code, message: r.error_message }),
        }
    }

    /// Preferred leader election (Kafka `Admin.electLeaders(PREFERRED, ...)`): one result per
    /// partition in scope. A request-level refusal (unknown topic, no controller) is an error.
    pub async fn elect_leaders(
        &self,
        request: pb::ElectLeadersRequest,
    ) -> Result<Vec<pb::ElectionResult>, ClientError> {
        let r = self
            .admin_call(|mut client| {
                let request = request.clone();
                async move { client.elect_leaders(request).await }
            })
            .await?;
        match ErrorCode::from_code(r.error_code) {
            ErrorCode::NONE => Ok(r.results),
            code => Err(ClientError::Kafka { code, message: r.error_message }),
        }
    }

    /// Sends an admin request to the first broker that answers (any broker forwards admin
    /// calls to the active controller), known unfenced brokers first, then the bootstrap
    /// list; metadata is refreshed after an answer, since admin calls change it.
    async fn admin_call<R, F, Fut>(&self, call: F) -> Result<R, ClientError>
    where
        F: Fn(BrokerClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut last = ClientError::NoBroker { tried: self.bootstrap.join(","), last: "no answer".into() };
        let mut candidates = self.bootstrap.clone();
        if let Ok(m) = self.metadata().await {
            for b in m.brokers.iter().filter(|b| !b.fenced) {
                if !candidates.contains(&b.address) {
                    candidates.insert(0, b.address.clone());
                }
            }
        }
        for address in candidates {
            let client = match self.broker(&address).await {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match call(client).await {
                Ok(r) => {
                    let _ = self.refresh_metadata().await;
                    return Ok(r.into_inner());
                }
                Err(status) => last = self.transport_error(&address, &status),
            }
        }
        Err(last)
    }

    /// Every reachable broker's view of the replicas it hosts.
    pub async fn describe_replicas(&self, topics: &[String]) -> Vec<pb::DescribeReplicasResponse> {
        let Ok(metadata) = self.metadata().await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for broker in &metadata.brokers {
            let Ok(mut client) = self.broker(&broker.address).await else {
                continue;
            };
            let mut request = tonic::Request::new(pb::DescribeReplicasRequest { topics: topics.to_vec() });
            request.set_timeout(Duration::from_secs(2));
            match client.describe_replicas(request).await {
                Ok(r) => out.push(r.into_inner()),
                Err(status) => {
                    self.transport_error(&broker.address, &status);
                }
            }
        }
        out
    }
}

/// tonic's transport errors hide the cause (e.g. "connection refused") in the source chain.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
