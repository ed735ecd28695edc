//! Who may fetch as a follower (KIP-903). A fetch with replica_id >= 0 reads past the high
//! watermark and moves the leader's view of that follower (its LEO, hence the HW and the
//! ISR), so the leader serves it as a follower fetch only when, by the leader's current
//! metadata, the named broker is registered and unfenced, the request carries that broker's
//! current broker epoch (the Raft index of its registration, assigned by the controller),
//! and it is a replica of the partition other than the leader itself.
//!
//! Every refusal is retriable for a real follower: it is what a follower sees while the
//! leader's metadata lags its (re-)registration or its unfencing, and its fetcher backs off
//! and asks again (fetcher.rs). This is fencing of stale incarnations, not authentication:
//! broker epochs are part of the metadata any client can read.
use insync_proto as pb;
use insync_types::{BrokerId, ErrorCode};

use crate::fetch_limits::bounded_message;

/// Why a replica fetch is not served, as answered on each refused partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRefusal {
    pub error: ErrorCode,
    pub message: String,
}

impl ReplicaRefusal {
    fn new(error: ErrorCode, message: String) -> ReplicaRefusal {
        ReplicaRefusal { error, message: bounded_message(message) }
    }
}

/// Kafka `FetchRequest.isFromFollower`: replica ids >= 0 are brokers; -1 (and any other
/// negative id) is a consumer, which reads only below the high watermark.
pub fn is_follower_fetch(replica_id: BrokerId) -> bool {
    replica_id >= 0
}

/// The request-level check of a follower fetch: the broker `replica_id` is registered and
/// unfenced in `metadata`, and `broker_epoch` is the epoch `metadata` holds for it.
///
/// Kafka answers NOT_LEADER_OR_FOLLOWER to a fetch whose broker epoch is older than the
/// registered one (`Replica.updateFetchStateOrThrow`, KIP-903); insync answers it to every
/// identity mismatch, also a newer epoch (Kafka accepts those; here a leader whose metadata
/// has not caught up with a re-registration asks the follower to retry instead of taking an
/// epoch it cannot check), a fenced broker (Kafka only keeps those out of the ISR, KIP-841),
/// and an unregistered one. A missing epoch is a malformed replica fetch: INVALID_REQUEST.
pub fn check_follower_identity(
    metadata: &pb::ClusterMetadata,
    replica_id: BrokerId,
    broker_epoch: i64,
) -> Result<(), ReplicaRefusal> {
    let refuse = |message: String| Err(ReplicaRefusal::new(ErrorCode::NOT_LEADER_OR_FOLLOWER, message));
    if broker_epoch <= 0 {
        return Err(ReplicaRefusal::new(
            ErrorCode::INVALID_REQUEST,
            format!("replica fetch from broker {replica_id} carries no broker epoch (KIP-903)"),
        ));
    }
    let version = metadata.version;
    let Some(broker) = metadata.brokers.iter().find(|b| b.id == replica_id) else {
        return refuse(format!("broker {replica_id} is not registered in this leader's metadata (version {version})"));
    };
    if broker.broker_epoch <= 0 || broker_epoch > broker.broker_epoch {
        return refuse(format!(
            "broker {replica_id} epoch {broker_epoch} is newer than this leader's metadata (version {version}) knows \
             ({}); retry once it catches up",
            broker.broker_epoch
        ));
    }
    if broker_epoch < broker.broker_epoch {
        return refuse(format!(
            "stale broker epoch {broker_epoch} for broker {replica_id}: its current registration has epoch {}",
            broker.broker_epoch
        ));
    }
    if broker.fenced {
        return refuse(format!("broker {replica_id} is fenced in this leader's metadata (version {version})"));
    }
    Ok(())
}

/// The partition-level check (Kafka `Partition.followerReplicaOrThrow`): the follower must
/// be one of the partition's replicas, and never the leader itself (Kafka looks it up among
/// the remote replicas only). Kafka answers UNKNOWN_LEADER_EPOCH when the request names a
/// leader epoch (the replica set may just have grown, as in a reassignment: retry), else
/// NOT_LEADER_OR_FOLLOWER.
pub fn check_partition_replica(
    local_broker: BrokerId,
    replicas: &[BrokerId],
    replica_id: BrokerId,
    current_leader_epoch: i32,
) -> Result<(), ReplicaRefusal> {
    if replica_id != local_broker && replicas.contains(&replica_id) {
        return Ok(());
    }
    let error =
        if current_leader_epoch >= 0 { ErrorCode::UNKNOWN_LEADER_EPOCH } else { ErrorCode::NOT_LEADER_OR_FOLLOWER };
    Err(ReplicaRefusal::new(
        error,
        format!("broker {replica_id} is not a follower replica of this partition (replicas {replicas:?})"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> pb::ClusterMetadata {
        let broker = |id: i32, broker_epoch: i64, fenced: bool| pb::BrokerMetadata {
            id,
            broker_epoch,
            fenced,
            address: format!("127.0.0.1:{}", 9091 + id),
            ..Default::default()
        };
        pb::ClusterMetadata {
            version: 40,
            brokers: vec![broker(1, 10, false), broker(2, 25, false), broker(3, 31, true), broker(4, 0, false)],
            ..Default::default()
        }
    }

    fn code(result: Result<(), ReplicaRefusal>) -> Option<ErrorCode> {
        result.err().map(|r| r.error)
    }

    #[test]
    fn consumers_are_the_negative_replica_ids() {
        assert!(!is_follower_fetch(-1));
        assert!(!is_follower_fetch(-2));
        assert!(is_follower_fetch(0));
        assert!(is_follower_fetch(3));
    }

    #[test]
    fn the_current_epoch_of_a_registered_unfenced_broker_is_accepted() {
        assert_eq!(check_follower_identity(&metadata(), 2, 25), Ok(()));
        assert_eq!(check_follower_identity(&metadata(), 1, 10), Ok(()));
    }

    #[test]
    fn stale_newer_missing_and_unknown_epochs_are_refused() {
        let m = metadata();
        // Kafka Replica.updateFetchStateOrThrow: an older broker epoch is NOT_LEADER_OR_FOLLOWER.
        assert_eq!(code(check_follower_identity(&m, 2, 24)), Some(ErrorCode::NOT_LEADER_OR_FOLLOWER));
        let stale = check_follower_identity(&m, 2, 24).unwrap_err();
        assert!(stale.message.contains("stale broker epoch 24"), "{}", stale.message);
        // Newer than the leader knows: its metadata lags a re-registration; retriable.
        let newer = check_follower_identity(&m, 2, 26).unwrap_err();
        assert_eq!(newer.error, ErrorCode::NOT_LEADER_OR_FOLLOWER);
        assert!(newer.error.is_retriable());
        assert!(newer.message.contains("retry once it catches up"), "{}", newer.message);
        assert_eq!(code(check_follower_identity(&m, 2, i64::MAX)), Some(ErrorCode::NOT_LEADER_OR_FOLLOWER));
        // No epoch at all (proto3 default 0, or negative): a malformed replica fetch.
        assert_eq!(code(check_follower_identity(&m, 2, 0)), Some(ErrorCode::INVALID_REQUEST));
        assert_eq!(code(check_follower_identity(&m, 2, -1)), Some(ErrorCode::INVALID_REQUEST));
        // A registration without an epoch (replicated before epochs existed) matches nothing.
        assert_eq!(code(check_follower_identity(&m, 4, 1)), Some(ErrorCode::NOT_LEADER_OR_FOLLOWER));
    }

    #[test]
    fn fenced_and_unregistered_brokers_are_refused() {
        let m = metadata();
        let fenced = check_follower_identity(&m, 3, 31).unwrap_err();
        assert_eq!(fenced.error, ErrorCode::NOT_LEADER_OR_FOLLOWER);
        assert!(fenced.message.contains("fenced"), "{}", fenced.message);
        let unknown = check_follower_identity(&m, 9, 31).unwrap_err();
        assert_eq!(unknown.error, ErrorCode::NOT_LEADER_OR_FOLLOWER);
        assert!(unknown.message.contains("not registered"), "{}", unknown.message);
    }

    #[test]
    fn only_follower_replicas_of_the_partition_pass() {
        // Kafka Partition.followerReplicaOrThrow.
        assert_eq!(check_partition_replica(1, &[1, 2, 3], 2, 4), Ok(()));
        assert_eq!(code(check_partition_replica(1, &[1, 2, 3], 5, 4)), Some(ErrorCode::UNKNOWN_LEADER_EPOCH));
        assert_eq!(code(check_partition_replica(1, &[1, 2, 3], 5, -1)), Some(ErrorCode::NOT_LEADER_OR_FOLLOWER));
        assert_eq!(
            code(check_partition_replica(1, &[1, 2, 3], 1, 4)),
            Some(ErrorCode::UNKNOWN_LEADER_EPOCH),
            "the leader never fetches from itself"
        );
    }
}
