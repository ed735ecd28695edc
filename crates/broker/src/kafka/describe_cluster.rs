//! DescribeCluster (API 60, v0–1; Kafka `KafkaApis.handleDescribeCluster` and
//! `AuthHelper.computeDescribeClusterResponse`, KIP-700, KIP-919): the cluster id, a
//! controller id and the live brokers with their Kafka listeners, from this broker's copy of
//! the metadata and by the same conventions as Metadata (`metadata.rs`), so admin clients
//! that use either see one cluster.
//!
//! - The cluster id is Metadata's (`CLUSTER_ID`).
//! - The controller id is this broker, as in Metadata: a KRaft broker names a live broker
//!   (Kafka picks a random one) because clients send controller requests to it and brokers
//!   forward them. As Kafka, -1 if that broker is not in the broker list (fenced).
//! - Only broker endpoints are described (KIP-919 endpoint type 1); asking a broker for
//!   controllers (2) is MISMATCHED_ENDPOINT_TYPE, any other type UNSUPPORTED_ENDPOINT_TYPE.
//! - There is no authorization, so the authorized operations are "not provided"
//!   (-2147483648, the schema's default), whatever the request asks.
use std::sync::Arc;

use insync_proto as pb;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::connection::{respond_now, PendingReply, RequestMeta};
use super::metadata::{live_brokers, CLUSTER_ID};
use super::KafkaContext;

/// KIP-919 endpoint types.
const ENDPOINT_BROKERS: i8 = 1;
const ENDPOINT_CONTROLLERS: i8 = 2;

/// Kafka's "authorized operations not provided".
const AUTHORIZED_OPERATIONS_UNKNOWN: i32 = i32::MIN;

pub(super) fn handle(context: &Arc<KafkaContext>, meta: RequestMeta, request: DescribeClusterRequest) -> PendingReply {
    let metadata = context.replica_manager.metadata();
    respond_now(meta, response(&metadata, context.replica_manager.broker_id, request.endpoint_type))
}

/// The answer from a metadata snapshot, for `endpoint_type` (always 1 in v0).
pub(super) fn response(
    metadata: &pb::ClusterMetadata,
    local_broker: i32,
    endpoint_type: i8,
) -> DescribeClusterResponse {
    let refused = |code: ResponseError, message: String| {
        DescribeClusterResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
            .with_endpoint_type(ENDPOINT_BROKERS)
    };
    match endpoint_type {
        ENDPOINT_BROKERS => {}
        ENDPOINT_CONTROLLERS => {
            return refused(
                ResponseError::MismatchedEndpointType,
                "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER"
                    .to_string(),
            )
        }
        other => return refused(ResponseError::UnsupportedEndpointType, format!("Unsupported endpoint type {other}")),
    }
    let brokers = live_brokers(metadata);
    let controller_id = if brokers.contains_key(&local_broker) { local_broker } else { -1 };
    DescribeClusterResponse::default()
        .with_error_code(0)
        .with_error_message(None)
        .with_endpoint_type(ENDPOINT_BROKERS)
        .with_cluster_id(StrBytes::from_static_str(CLUSTER_ID))
        .with_controller_id(BrokerId(controller_id))
        .with_brokers(
            brokers
                .into_iter()
                .map(|(id, (host, port))| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                        .with_rack(None)
                })
                .collect(),
        )
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_UNKNOWN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Encodable;

    fn metadata() -> pb::ClusterMetadata {
        let broker = |id: i32, fenced: bool, kafka: bool| pb::BrokerMetadata {
            id,
            kafka_address: if kafka { format!("127.0.0.1:{}", 19091 + id) } else { String::new() },
            fenced,
            ..Default::default()
        };
        pb::ClusterMetadata {
            brokers: vec![
                broker(1, false, true),
                broker(2, true, true),
                broker(3, false, false),
                broker(4, false, true),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn lists_what_metadata_lists_with_this_broker_as_controller() {
        let r = response(&metadata(), 4, ENDPOINT_BROKERS);
        assert_eq!(r.error_code, 0);
        assert_eq!(r.cluster_id.as_str(), CLUSTER_ID);
        assert_eq!(r.controller_id.0, 4);
        let brokers: Vec<(i32, &str, i32)> =
            r.brokers.iter().map(|b| (b.broker_id.0, b.host.as_str(), b.port)).collect();
        assert_eq!(brokers, [(1, "127.0.0.1", 19092), (4, "127.0.0.1", 19095)], "not fenced 2 nor listener-less 3");
        assert_eq!(r.cluster_authorized_operations, -2147483648);
        let metadata_answer = super::super::metadata::response(&metadata(), 4, Some(&[]));
        assert_eq!(metadata_answer.cluster_id.as_deref(), Some(r.cluster_id.as_str()), "one cluster id for both");
        assert_eq!(response(&metadata(), 2, ENDPOINT_BROKERS).controller_id.0, -1, "a fenced broker is not listed");
    }

    #[test]
    fn kafka_pythons_captured_describe_cluster_v0_is_served() {
        // crates/kafka-wire/corpus: KafkaAdminClient.describe_cluster(), refused before this
        // API was served; decoded here exactly as a connection decodes it.
        let frame = include_bytes!("../../../kafka-wire/corpus/Api60-v0-kafka-python-1.bin");
        let decoded = super::super::connection::decode_frame(bytes::Bytes::from_static(frame)).expect("served");
        let super::super::connection::Decoded::Request { meta, body, .. } = decoded else { panic!("a request") };
        assert_eq!((meta.api_version, meta.api_key), (0, kafka_protocol::messages::ApiKey::DescribeCluster));
        let kafka_protocol::messages::RequestKind::DescribeCluster(request) = *body else { panic!("DescribeCluster") };
        let r = response(&metadata(), 1, request.endpoint_type);
        assert_eq!((r.error_code, r.brokers.len()), (0, 2));
    }

    #[test]
    fn only_broker_endpoints_are_described() {
        assert_eq!(response(&metadata(), 1, ENDPOINT_CONTROLLERS).error_code, 114, "MISMATCHED_ENDPOINT_TYPE");
        let r = response(&metadata(), 1, 9);
        assert_eq!(r.error_code, 115, "UNSUPPORTED_ENDPOINT_TYPE");
        assert_eq!(r.error_message.as_deref(), Some("Unsupported endpoint type 9"));
        for version in 0..=1 {
            let mut buf = bytes::BytesMut::new();
            response(&metadata(), 1, ENDPOINT_BROKERS)
                .encode(&mut buf, version)
                .unwrap_or_else(|e| panic!("v{version}: {e}"));
        }
    }
}
