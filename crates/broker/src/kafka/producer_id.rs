//! InitProducerId for idempotent producers (Kafka `KafkaApis.handleInitProducerIdRequest`
//! without a transactional id, KIP-98): a fresh producer id from the broker's block (the
//! same `ProducerIdManager` the gRPC InitProducerId uses) at epoch 0. Kafka does the same
//! for a non-transactional producer that asks again with its old id and epoch (KIP-360):
//! it gets a new id. The leaders' producer state then dedupes retried batches and refuses
//! sequence gaps, whichever protocol the batches came by.
//!
//! Transactional ids are refused with TRANSACTIONAL_ID_AUTHORIZATION_FAILED (53): insync has
//! no transaction coordinator, and 53 is the InitProducerId error librdkafka
//! (`rd_kafka_idemp_check_error`), kafka-python and aiokafka all treat as fatal at once
//! (UNSUPPORTED_VERSION is retried by librdkafka). Clients normally stop earlier, at
//! FindCoordinator (`find_coordinator.rs`); this catches one that asks any broker. An empty
//! (not null) transactional id is INVALID_REQUEST, as Kafka's `TransactionCoordinator.
//! handleInitProducerId` answers it.
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use tracing::warn;

use super::connection::{respond, respond_now, PendingReply, RequestMeta};
use super::KafkaContext;

/// The refusal of a request naming a transactional id (None: an idempotent producer, served).
fn refusal(transactional_id: Option<&str>) -> Option<ResponseError> {
    match transactional_id {
        None => None,
        Some("") => Some(ResponseError::InvalidRequest),
        Some(_) => Some(ResponseError::TransactionalIdAuthorizationFailed),
    }
}

pub(super) fn handle(context: &Arc<KafkaContext>, meta: RequestMeta, request: InitProducerIdRequest) -> PendingReply {
    let transactional_id = request.transactional_id.as_ref().map(|id| &*id.0);
    if let Some(error) = refusal(transactional_id) {
        warn!(
            transactional_id = transactional_id.unwrap_or_default(),
            "InitProducerId for a transactional producer refused ({error:?}): {}",
            super::find_coordinator::NO_TRANSACTIONS
        );
        let response = InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        return respond_now(meta, response);
    }
    let context = context.clone();
    respond(meta, async move {
        match context.producer_ids.next_producer_id().await {
            Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
            Err((code, message)) => {
                warn!("InitProducerId from a Kafka client failed: {code}: {message}");
                InitProducerIdResponse::default()
                    .with_error_code(code.code() as i16)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_ids_are_refused_and_an_empty_one_is_an_invalid_request() {
        assert_eq!(refusal(None), None);
        assert_eq!(refusal(Some("")), Some(ResponseError::InvalidRequest));
        assert_eq!(refusal(Some("tx-1")), Some(ResponseError::TransactionalIdAuthorizationFailed));
    }
}
