//! FindCoordinator v0-4 (Kafka `KafkaApis.handleFindCoordinatorRequest`, KIP-699 batches
//! in v4): the coordinator of a group is the leader of its `__consumer_offsets` partition
//! (`group::storage`), answered with that broker's Kafka endpoint, or
//! COORDINATOR_NOT_AVAILABLE while the topic is being created or the partition has no
//! leader. Every broker answers the same, from its metadata.
//!
//! Transaction coordinators (key type 1) do not exist: insync does not support
//! transactions. The answer is TRANSACTIONAL_ID_AUTHORIZATION_FAILED (53) with the message
//! "insync does not support transactions": of the errors a FindCoordinator may carry, it
//! is the one librdkafka (`rd_kafka_txn_handle_FindCoordinator`), kafka-python
//! (`FindCoordinatorHandler`) and aiokafka (`Sender._find_coordinator`) all treat as fatal
//! at once, so `init_transactions()` fails in milliseconds (librdkafka shows the message);
//! UNSUPPORTED_VERSION (35) is fatal for the Python clients but librdkafka retries it until
//! its timeout.
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, warn};

use super::connection::{respond_now, PendingReply, RequestMeta};
use super::KafkaContext;
use crate::group::storage::GroupStorage;

/// FindCoordinator key types (Kafka `FindCoordinatorRequest.CoordinatorType`).
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// What every refusal of a transactional client says.
pub(super) const NO_TRANSACTIONS: &str = "insync does not support transactions";

/// One key's answer: error code, message, node, host, port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    error_code: i16,
    message: Option<String>,
    node: i32,
    host: String,
    port: i32,
}

impl Found {
    fn error(error_code: i16, message: impl Into<String>) -> Found {
        Found { error_code, message: Some(message.into()), node: -1, host: String::new(), port: -1 }
    }
}

fn find(storage: &GroupStorage, key_type: i8, key: &str) -> Found {
    match key_type {
        KEY_TYPE_GROUP => match storage.coordinator(key) {
            Ok((node, host, port)) => Found { error_code: 0, message: None, node, host, port },
            Err((code, why)) => {
                debug!(group = key, error = %code, "FindCoordinator: no coordinator yet: {why}");
                Found::error(code.code() as i16, why)
            }
        },
        KEY_TYPE_TRANSACTION => {
            warn!(transactional_id = key, "FindCoordinator for a transactional producer refused: {NO_TRANSACTIONS}");
            Found::error(
                ResponseError::TransactionalIdAuthorizationFailed.code(),
                format!("{NO_TRANSACTIONS} (transactional.id must be unset)"),
            )
        }
        // Share groups and the like (KIP-932...): an unknown key type, as Kafka answers it.
        other => Found::error(ResponseError::InvalidRequest.code(), format!("unknown coordinator key type {other}")),
    }
}

pub(super) fn handle(context: &Arc<KafkaContext>, meta: RequestMeta, request: FindCoordinatorRequest) -> PendingReply {
    let storage = &context.group_storage;
    let response = if meta.api_version >= 4 {
        // KIP-699: a batch of keys, each answered on its own.
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let found = find(storage, request.key_type, key);
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(BrokerId(found.node))
                    .with_host(StrBytes::from_string(found.host))
                    .with_port(found.port)
                    .with_error_code(found.error_code)
                    .with_error_message(found.message.map(StrBytes::from_string))
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        // v0 has no key type: a group.
        let key_type = if meta.api_version >= 1 { request.key_type } else { KEY_TYPE_GROUP };
        let found = find(storage, key_type, &request.key);
        let response = FindCoordinatorResponse::default()
            .with_error_code(found.error_code)
            .with_node_id(BrokerId(found.node))
            .with_host(StrBytes::from_string(found.host))
            .with_port(found.port);
        if meta.api_version >= 1 {
            response.with_error_message(found.message.map(StrBytes::from_string))
        } else {
            response
        }
    };
    respond_now(meta, response)
}
