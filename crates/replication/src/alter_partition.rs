//! What a leader does with an AlterPartition error (Kafka `Partition.handleAlterPartitionError`):
//! an unanswered or failed proposal may still have been committed (a resend of a request the
//! controller already applied is answered INVALID_UPDATE_VERSION; a controller that timed out
//! committing may commit later), so the pending ISR stays until metadata shows the outcome.
//! Dropping it early would let the HW pass a member the controller has in the ISR (KIP-497).
use insync_types::ErrorCode;

/// The leader's response to one AlterPartition error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlterPartitionErrorAction {
    /// The controller says the current partition epoch is right and the change was not
    /// applied, by any controller past or future: go back to the last committed ISR.
    ResetToCommitted,
    /// Not retriable, but the outcome is unknown or decided elsewhere: keep the pending ISR
    /// until fresh metadata replaces it.
    AwaitMetadata,
    /// Send the same request again while it is still pending.
    Retry,
}

/// Kafka `Partition.handleAlterPartitionError`, error by error.
pub fn alter_partition_error_action(error: ErrorCode) -> AlterPartitionErrorAction {
    match error {
        ErrorCode::OPERATION_NOT_ATTEMPTED | ErrorCode::INELIGIBLE_REPLICA => AlterPartitionErrorAction::ResetToCommitted,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        | ErrorCode::FENCED_LEADER_EPOCH
        | ErrorCode::INVALID_UPDATE_VERSION
        | ErrorCode::INVALID_REQUEST
        // insync's answer to a request from a broker that is no longer the leader (Kafka:
        // INVALID_REQUEST): new metadata will make it a follower.
        | ErrorCode::NOT_LEADER_OR_FOLLOWER => AlterPartitionErrorAction::AwaitMetadata,
        // REQUEST_TIMED_OUT (unanswered, or the controller could not commit in time),
        // NOT_CONTROLLER and anything unexpected: try again (Kafka's `case _`).
        _ => AlterPartitionErrorAction::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_definite_not_applied_resets_the_pending_isr() {
        use AlterPartitionErrorAction::*;
        assert_eq!(alter_partition_error_action(ErrorCode::INELIGIBLE_REPLICA), ResetToCommitted);
        assert_eq!(alter_partition_error_action(ErrorCode::OPERATION_NOT_ATTEMPTED), ResetToCommitted);
        // A resend of a committed change, a leader change, a deleted topic: the metadata says.
        for code in [
            ErrorCode::INVALID_UPDATE_VERSION,
            ErrorCode::FENCED_LEADER_EPOCH,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            ErrorCode::INVALID_REQUEST,
            ErrorCode::NOT_LEADER_OR_FOLLOWER,
        ] {
            assert_eq!(alter_partition_error_action(code), AwaitMetadata, "{code}");
        }
        for code in [ErrorCode::REQUEST_TIMED_OUT, ErrorCode::NOT_CONTROLLER, ErrorCode::UNKNOWN_SERVER_ERROR] {
            assert_eq!(alter_partition_error_action(code), Retry, "{code}");
        }
    }
}
