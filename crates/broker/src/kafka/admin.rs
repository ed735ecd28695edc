//! What the Kafka admin APIs share (`create_topics.rs`, `delete_topics.rs`,
//! `elect_leaders.rs`): forwarding one call to the active controller (Kafka brokers forward
//! CreateTopics, DeleteTopics and ElectLeaders to the controller, KIP-590; insync's
//! `ControllerLink` follows NOT_CONTROLLER hints as the gRPC service's `forward` does), the
//! request's time budget, and waiting until this broker's own metadata shows the outcome, so
//! that the client's next request through this broker sees what its admin call did.
use std::future::Future;
use std::time::Duration;

use insync_proto as pb;
use insync_proto::controller_client::ControllerClient;
use insync_types::ErrorCode;
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::controller_link::{ControllerLink, ControllerReply};
use crate::replica_manager::ReplicaManager;

/// How long one forwarded call may look for an active controller, as the gRPC admin calls
/// (`service.rs` `forward`): NOT_CONTROLLER during an election is retried within it.
pub(super) const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a client's `timeout_ms` may make an answer wait for this broker's metadata
/// (Kafka clients send 30 000 to 60 000; the metadata feed normally takes milliseconds).
const MAX_METADATA_WAIT: Duration = Duration::from_secs(60);

/// A refusal with Kafka's code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub code: i16,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal { code: wire(code), message: message.into() }
    }

    /// A code `ErrorCode` does not name (UNKNOWN_TOPIC_ID, the endpoint-type errors), as
    /// `kafka-protocol` numbers it.
    pub fn of(code: kafka_protocol::error::ResponseError, message: impl Into<String>) -> Refusal {
        Refusal { code: code.code(), message: message.into() }
    }

    pub fn message(&self) -> Option<StrBytes> {
        Some(StrBytes::from_string(self.message.clone()))
    }
}

/// An error code as Kafka's responses carry it (int16). Every code insync answers fits; one
/// that does not (a controller newer than this broker) becomes UNKNOWN_SERVER_ERROR.
pub(super) fn wire(code: ErrorCode) -> i16 {
    wire_code(code.code())
}

/// The same for a code carried as the controller's int32.
pub(super) fn wire_code(code: i32) -> i16 {
    i16::try_from(code).unwrap_or(-1)
}

/// The time budget of one admin request: until when calls to the controller may start, and
/// until when the answer waits for this broker's metadata (the request's `timeout_ms`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    /// No controller call starts after this: the topics left are answered REQUEST_TIMED_OUT,
    /// so a request naming thousands of topics ends in bounded time.
    pub calls_until: Instant,
    /// The answer waits for the metadata until then at most. A `timeout_ms` of 0 or less
    /// (an `operation_timeout` of 0 in confluent-kafka) answers as soon as the controller
    /// committed: the clients document 0 as "returns immediately".
    pub metadata_until: Instant,
}

impl Budget {
    pub fn new(timeout_ms: i32, now: Instant) -> Budget {
        let wait = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0)).min(MAX_METADATA_WAIT);
        Budget { calls_until: now + wait.max(FORWARD_TIMEOUT), metadata_until: now + wait }
    }

    /// Whether a controller call may still start.
    pub fn may_call(&self) -> bool {
        Instant::now() < self.calls_until
    }
}

/// What a topic gets when the request's time ran out before its controller call started.
pub(super) fn out_of_time() -> Refusal {
    Refusal::new(
        ErrorCode::REQUEST_TIMED_OUT,
        "not sent to the controller: the request's time ran out while earlier topics of it were handled",
    )
}

/// One call to the active controller. No controller within `FORWARD_TIMEOUT` is
/// REQUEST_TIMED_OUT, as for a controller proposal not applied in time.
pub(super) async fn forward<T, F, Fut>(link: &ControllerLink, mut call: F) -> Result<T, Refusal>
where
    T: ControllerReply,
    F: FnMut(ControllerClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    link.call(FORWARD_TIMEOUT, &mut call).await.map_err(|e| Refusal::new(ErrorCode::REQUEST_TIMED_OUT, e.to_string()))
}

/// Waits until this broker's metadata satisfies `ready` or `until` passes; true if it did.
/// `ready` runs once per metadata change, so its cost is paid per change, not per poll.
pub(super) async fn until_metadata(
    replica_manager: &ReplicaManager,
    until: Instant,
    mut ready: impl FnMut(&pb::ClusterMetadata) -> bool,
) -> bool {
    let mut versions = replica_manager.subscribe_metadata_version();
    loop {
        versions.borrow_and_update();
        if ready(&replica_manager.metadata()) {
            return true;
        }
        if tokio::time::timeout_at(until, versions.changed()).await.map_or(true, |changed| changed.is_err()) {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_follows_timeout_ms_within_bounds() {
        let now = Instant::now();
        let zero = Budget::new(0, now);
        assert_eq!(zero.metadata_until, now, "0: answer once committed");
        assert_eq!(zero.calls_until, now + FORWARD_TIMEOUT, "but the controller still gets its call");
        let negative = Budget::new(-5, now);
        assert_eq!(negative.metadata_until, now);
        let usual = Budget::new(30_000, now);
        assert_eq!(usual.metadata_until, now + Duration::from_secs(30));
        assert_eq!(usual.calls_until, now + Duration::from_secs(30));
        let huge = Budget::new(i32::MAX, now);
        assert_eq!(huge.metadata_until, now + MAX_METADATA_WAIT);
    }

    #[test]
    fn codes_fit_the_wire() {
        assert_eq!(wire(ErrorCode::TOPIC_ALREADY_EXISTS), 36);
        assert_eq!(wire_code(84), 84);
        assert_eq!(wire_code(70_000), -1);
        let unknown_id = Refusal::of(kafka_protocol::error::ResponseError::UnknownTopicId, "x");
        assert_eq!(unknown_id.code, 100);
    }
}
