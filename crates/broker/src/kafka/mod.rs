//! The Kafka wire-protocol listener (Kafka `SocketServer` + `KafkaApis`, trimmed to what
//! producers, consumers and topic admin need): unmodified Kafka clients (kcat, librdkafka,
//! confluent-kafka, kafka-python, the Java client) produce and consume against insync on a
//! second listener per broker. It is a thin adapter like the gRPC service: every produce
//! goes through `ReplicaManager::produce_append`/`produce_wait` and every fetch through
//! `ReplicaManager::fetch`, so acks, min.insync.replicas (NOT_ENOUGH_REPLICAS 19,
//! NOT_ENOUGH_REPLICAS_AFTER_APPEND 20), idempotence and the HW rule are the same rules
//! whichever protocol a record arrived by, and the log holds the client's RecordBatch v2
//! bytes untouched.
//!
//! Files: `codec.rs` frames and headers, `connection.rs` one client connection (ordered,
//! pipelined, bounded), then one file per API group: `api_versions.rs`, `metadata.rs`,
//! `produce.rs`, `fetch.rs` (Fetch, ListOffsets), `producer_id.rs` (InitProducerId),
//! `find_coordinator.rs`, the consumer-group protocol over `crate::group` (`group.rs` Join,
//! Sync, Heartbeat, Leave; `group_offsets.rs` OffsetCommit/Fetch; `group_admin.rs`
//! List/Describe/DeleteGroups), and the admin
//! APIs Kafka brokers forward to the controller (KIP-590), through the same controller calls
//! as `insync topic create|delete|elect-leaders|alter|add-partitions`: `create_topics.rs`,
//! `delete_topics.rs`, `elect_leaders.rs`, `alter_configs.rs` (AlterConfigs and
//! IncrementalAlterConfigs), `create_partitions.rs`, with what they share in `admin.rs`;
//! `describe_cluster.rs` and `describe_configs.rs` answer from the metadata like
//! `metadata.rs` (`configs.rs` describes topic and broker configs); `delete_records.rs` runs
//! on the partition's leader like produce.
//!
//! Not served (not advertised in ApiVersions; a request for them closes the connection as
//! Kafka does for an API version it does not know, after a WARN naming it): transactions,
//! the other admin APIs (ACLs, reassignments...), OffsetForLeaderEpoch, fetch
//! sessions (KIP-227: every fetch is a full one). Compressed batches (gzip, snappy, lz4,
//! zstd) are accepted, stored and fetched as the client compressed them (see `produce.rs`).
mod admin;
mod alter_configs;
mod api_versions;
mod codec;
mod configs;
mod connection;
mod create_partitions;
mod create_topics;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod elect_leaders;
mod fetch;
mod find_coordinator;
mod group;
mod group_admin;
mod group_offsets;
mod metadata;
mod produce;
mod producer_id;

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::connection_slots::ConnectionSlots;
use crate::controller_link::ControllerLink;
use crate::group::storage::GroupStorage;
use crate::group::GroupCoordinator;
use crate::producer_ids::ProducerIdManager;
use crate::replica_manager::ReplicaManager;
use codec::ReceiveLimits;
pub use codec::DISAGREEMENT;

/// The APIs and versions served, as ApiVersions advertises them. Produce ≥ 3 and Fetch ≥ 4
/// are what make librdkafka use RecordBatch v2 (magic 2) instead of v0/v1 message sets,
/// the only format the log stores. Upper bounds stop below versions that need topic ids
/// (KIP-516: Fetch 13, Produce 13, OffsetCommit 10) or semantics insync lacks (ListOffsets 8
/// tiered storage, OffsetFetch 8 batched groups, InitProducerId 5 transactions v2). The admin
/// APIs go as low as `kafka-protocol` decodes (CreateTopics 2, DeleteTopics 1: Kafka 4.0
/// dropped the older ones too, KIP-896) and as high as Kafka's schemas in
/// `crates/kafka-wire` (DescribeCluster 1: v2's fenced brokers, KIP-1073, are not offered;
/// DescribeConfigs from 1, the lowest `kafka-protocol` decodes, as Kafka 4.0 dropped v0).
pub(crate) const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
];

/// The versions of `api_key` served, if any.
pub(crate) fn supported_versions(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS.iter().find(|(key, _, _)| *key == api_key).map(|(_, min, max)| (*min, *max))
}

/// Room for the request header, topic names and several partitions' framing around the
/// largest batch (Kafka bounds requests by socket.request.max.bytes; a produce request
/// carries at most max.request.size, 1 MiB by default, so message.max.bytes plus this
/// headroom admits every request a default client sends).
const FRAME_HEADROOM_BYTES: usize = 64 * 1024;

/// What every connection needs: the replica manager (produce, fetch, metadata), the
/// producer-id blocks, the controller link (admin APIs), the group coordinator, and the
/// receive limits.
pub struct KafkaContext {
    pub replica_manager: Arc<ReplicaManager>,
    pub producer_ids: Arc<ProducerIdManager>,
    /// The active controller, for the admin APIs Kafka brokers forward to it (KIP-590).
    pub link: Arc<ControllerLink>,
    /// The consumer-group coordinator (`crate::group`), shared with the gRPC group RPCs.
    pub groups: Arc<GroupCoordinator>,
    /// `__consumer_offsets` and the coordinator placement (FindCoordinator).
    pub group_storage: Arc<GroupStorage>,
    /// Frame size, idle and partial-request timeouts, and the listener-wide receive budget.
    pub limits: ReceiveLimits,
}

impl KafkaContext {
    pub fn new(
        replica_manager: Arc<ReplicaManager>,
        producer_ids: Arc<ProducerIdManager>,
        link: Arc<ControllerLink>,
        groups: Arc<GroupCoordinator>,
        group_storage: Arc<GroupStorage>,
    ) -> Arc<KafkaContext> {
        let config = &replica_manager.config;
        // Frames larger than this close the connection (Kafka `InvalidReceiveException`).
        let max_frame_bytes = config.message_max_bytes.saturating_add(FRAME_HEADROOM_BYTES);
        // Kafka requires queued.max.request.bytes >= socket.request.max.bytes: a smaller
        // budget could never admit the largest request.
        let configured = usize::try_from(config.queued_max_request_bytes).unwrap_or(usize::MAX >> 4);
        let budget_bytes = configured.clamp(max_frame_bytes, Semaphore::MAX_PERMITS);
        if budget_bytes != configured {
            warn!(configured, budget_bytes, "queued.max.request.bytes raised to the largest request a client may send");
        }
        let limits = ReceiveLimits {
            max_frame_bytes,
            idle: Duration::from_millis(config.connections_max_idle_ms),
            partial: Duration::from_millis(config.request_receive_timeout_ms),
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
        };
        Arc::new(KafkaContext { replica_manager, producer_ids, link, groups, group_storage, limits })
    }
}

/// Binds the Kafka listener where `--kafka-listen` says. A taken default port (derived from
/// the node id) is a warning and no listener, as for metrics: several test clusters on one
/// machine share node ids. Returns the listener and the address to advertise.
pub async fn bind(args: &crate::config::BrokerArgs) -> anyhow::Result<Option<(TcpListener, String)>> {
    let Some((address, chosen)) = args.kafka_listen_address() else {
        return Ok(None);
    };
    match TcpListener::bind(address).await {
        Ok(listener) => {
            let bound = listener.local_addr()?;
            Ok(Some((listener, args.kafka_advertised_address(bound))))
        }
        Err(e) if !chosen => {
            warn!(
                "node {}: cannot listen for Kafka clients on {address}: {e}; serving no Kafka listener \
                 (set --kafka-listen ADDR, or none)",
                args.node_id
            );
            Ok(None)
        }
        Err(e) => Err(anyhow::anyhow!("cannot listen for Kafka clients on {address}: {e}")),
    }
}

/// Accepts Kafka clients until `stop` turns true, then drops every connection.
pub async fn serve(listener: TcpListener, context: Arc<KafkaContext>, mut stop: watch::Receiver<bool>) {
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    info!("broker {}: Kafka listener on {local}", context.replica_manager.broker_id);
    // Kafka max.connections (at the limit, stop accepting: clients wait in the backlog) and
    // max.connections.per.ip (beyond it, close the new connection at once).
    let config = &context.replica_manager.config;
    let slots = ConnectionSlots::new("Kafka", config.max_connections as usize, config.max_connections_per_ip as usize);
    let mut connections = JoinSet::new();
    loop {
        let reserved = tokio::select! {
            reserved = slots.reserve() => match reserved {
                Some(reserved) => reserved,
                None => break,
            },
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        // Reap finished connections so the set stays as small as the live ones.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let Some(slot) = slots.admit(reserved, peer.ip()) else { continue };
                let _ = stream.set_nodelay(true);
                let context = context.clone();
                connections.spawn(async move {
                    connection::serve(context, stream, peer).await;
                    drop(slot);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                debug!(error = %e, "Kafka listener accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    connections.shutdown().await;
    info!("broker {}: Kafka listener on {local} stopped", context.replica_manager.broker_id);
}

/// Decodes a request frame exactly as a connection does before dispatching it — schema
/// walk, header, body — and validates a Produce request's record batches as the append
/// path does; for the fuzzing campaign (`crates/fuzz`), which must find no input that
/// panics here or allocates beyond a constant times the frame.
pub fn decode_request_for_fuzzing(frame: bytes::Bytes) -> Result<(), String> {
    let decoded = connection::decode_frame(frame).map_err(|e| e.to_string())?;
    let connection::Decoded::Request { body, .. } = decoded else { return Ok(()) };
    if let kafka_protocol::messages::RequestKind::Produce(produce) = *body {
        let batches =
            produce.topic_data.iter().flat_map(|t| t.partition_data.iter()).filter_map(|p| p.records.as_ref());
        for records in batches {
            // The fuzz bound, not the 64 MiB default: the target's allocation budget is a
            // constant times the frame (as `fuzz_batches` and the gRPC target use).
            let bound = insync_log::batch::fuzz_decompression_bound(records.len());
            let _ = insync_log::batch::validate_batch_bounded(records, bound);
        }
    }
    Ok(())
}

/// `host:port` → (host, port) for Metadata and FindCoordinator answers; IPv6 hosts may be
/// bracketed (`[::1]:19092`).
pub(crate) fn split_host_port(address: &str) -> Option<(String, i32)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), i32::from(port)))
}

/// Where a broker's Kafka clients connect, from the metadata (None: no Kafka listener).
pub(crate) fn kafka_endpoint(broker: &insync_proto::BrokerMetadata) -> Option<(String, i32)> {
    split_host_port(&broker.kafka_address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_split_like_advertised_listeners() {
        assert_eq!(split_host_port("127.0.0.1:19092"), Some(("127.0.0.1".into(), 19092)));
        assert_eq!(split_host_port("broker-2:9092"), Some(("broker-2".into(), 9092)));
        assert_eq!(split_host_port("[::1]:19092"), Some(("::1".into(), 19092)));
        assert_eq!(split_host_port(""), None);
        assert_eq!(split_host_port("nohost"), None);
        assert_eq!(split_host_port(":1"), None);
    }

    #[test]
    fn produce_and_fetch_versions_select_record_batch_v2() {
        // librdkafka uses magic 2 only when the broker offers Produce ≥ 3 and Fetch ≥ 4.
        assert_eq!(supported_versions(ApiKey::Produce).map(|v| v.0), Some(3));
        assert_eq!(supported_versions(ApiKey::Fetch).map(|v| v.0), Some(4));
        for (key, min, max) in SUPPORTED_APIS {
            let codec = key.valid_versions();
            assert!(codec.min <= *min && *max <= codec.max, "{key:?} {min}..={max} outside the codec's {codec}");
        }
    }

    #[test]
    fn every_served_api_and_version_has_a_schema_to_validate_it() {
        // codec::decode_request refuses a frame without a schema; this keeps an API added
        // to SUPPORTED_APIS from going out without its schemas/*.json.
        for (key, min, max) in SUPPORTED_APIS {
            let schema = insync_kafka_wire::request_schema(*key as i16)
                .unwrap_or_else(|| panic!("{key:?} has no schema in crates/kafka-wire/schemas"));
            assert!(schema.valid.contains(*min) && schema.valid.contains(*max), "{key:?} {min}..={max}");
        }
    }
}
