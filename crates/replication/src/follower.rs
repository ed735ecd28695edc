//! Pure follower-side and fetch-validation rules: epoch checks on Fetch (KIP-320), the
//! leader's diverging-epoch answer (KIP-101/KIP-279/KIP-320), the follower's truncation
//! offset, and the follower high watermark.
use insync_types::{ErrorCode, LeaderEpoch, Offset, NO_EPOCH};

/// An (epoch, end offset) pair as in Kafka's `OffsetsForLeaderEpoch` / `EpochEndOffset`.
/// `epoch == -1` means UNDEFINED (the log knows no epoch at or below the one asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEndOffset {
    pub epoch: LeaderEpoch,
    pub end_offset: Offset,
}

/// Checks the `current_leader_epoch` a fetcher or producer sends against this replica's
/// epoch (Kafka `Partition.checkCurrentLeaderEpoch`): older → FENCED_LEADER_EPOCH (the
/// sender is a zombie or behind), newer → UNKNOWN_LEADER_EPOCH (we are behind on
/// metadata), -1 → no check (old clients and consumers).
pub fn check_current_leader_epoch(requested: LeaderEpoch, local: LeaderEpoch) -> Result<(), ErrorCode> {
    if requested == NO_EPOCH || requested == local {
        Ok(())
    } else if requested < local {
        Err(ErrorCode::FENCED_LEADER_EPOCH)
    } else {
        Err(ErrorCode::UNKNOWN_LEADER_EPOCH)
    }
}

/// The leader's check of a follower fetch (Kafka `Partition.fetchRecords` with
/// `lastFetchedEpoch`, KIP-320): `leader_end_for_epoch` is the leader's
/// `endOffsetFor(last_fetched_epoch)`. The follower diverged when the leader's largest
/// epoch ≤ its last fetched epoch is smaller than that epoch (the leader never had it), or
/// ends before the follower's fetch offset (the follower has records the leader does not).
/// Returns the epoch/end offset to truncate to, or None when the fetch may proceed.
pub fn diverging_epoch(
    last_fetched_epoch: LeaderEpoch,
    fetch_offset: Offset,
    leader_end_for_epoch: EpochEndOffset,
    leader_log_start_offset: Offset,
) -> Option<EpochEndOffset> {
    if last_fetched_epoch == NO_EPOCH {
        // The follower's log is empty (or it predates epochs): nothing can have diverged.
        return None;
    }
    if leader_end_for_epoch.epoch == NO_EPOCH {
        // The leader knows no epoch ≤ the follower's: everything the follower has is from
        // a history the leader does not share. Truncate to the leader's log start.
        return Some(EpochEndOffset { epoch: NO_EPOCH, end_offset: leader_log_start_offset });
    }
    if leader_end_for_epoch.epoch < last_fetched_epoch || leader_end_for_epoch.end_offset < fetch_offset {
        return Some(leader_end_for_epoch);
    }
    None
}

/// Where a follower truncates on a diverging-epoch answer (Kafka
/// `AbstractFetcherThread.getOffsetTruncationState`, KIP-279). `local_end_for_epoch` is
/// the follower's own `endOffsetFor(diverging.epoch)`. Returns (offset, complete): when
/// the follower's largest epoch ≤ the leader's differs from it, it truncates to its own end
/// of that epoch and must fetch again to find the exact point (complete = false).
/// Never the local high watermark: truncating to the HW lost acknowledged writes before
/// KIP-101.
pub fn truncation_offset(
    diverging: EpochEndOffset,
    local_end_for_epoch: EpochEndOffset,
    local_log_end_offset: Offset,
) -> (Offset, bool) {
    if diverging.epoch == NO_EPOCH || local_end_for_epoch.epoch == NO_EPOCH {
        return (diverging.end_offset.min(local_log_end_offset), true);
    }
    if local_end_for_epoch.epoch == diverging.epoch {
        (diverging.end_offset.min(local_end_for_epoch.end_offset).min(local_log_end_offset), true)
    } else {
        (local_end_for_epoch.end_offset.min(local_log_end_offset), false)
    }
}

/// A follower's high watermark: the leader's, but never past what it holds itself
/// (Kafka `ReplicaFetcherThread.processPartitionData`: `log.updateHighWatermark(
/// partitionData.highWatermark)` bounded by the log end offset).
pub fn follower_high_watermark(leader_high_watermark: Offset, local_log_end_offset: Offset) -> Offset {
    leader_high_watermark.min(local_log_end_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eo(epoch: i32, end_offset: i64) -> EpochEndOffset {
        EpochEndOffset { epoch, end_offset }
    }

    #[test]
    fn epoch_check_fences_old_and_flags_unknown_new() {
        // Kafka Partition.checkCurrentLeaderEpoch.
        assert_eq!(check_current_leader_epoch(-1, 5), Ok(()));
        assert_eq!(check_current_leader_epoch(5, 5), Ok(()));
        assert_eq!(check_current_leader_epoch(4, 5), Err(ErrorCode::FENCED_LEADER_EPOCH));
        assert_eq!(check_current_leader_epoch(6, 5), Err(ErrorCode::UNKNOWN_LEADER_EPOCH));
    }

    #[test]
    fn diverging_epoch_when_follower_has_records_the_leader_lacks() {
        // KIP-101 scenario: follower wrote offsets 0..12 in epoch 1, the new leader's
        // epoch 1 ended at 10 (epoch 2 started there). Follower must truncate to 10.
        assert_eq!(diverging_epoch(1, 12, eo(1, 10), 0), Some(eo(1, 10)));
        // Follower is exactly at the end of epoch 1: no divergence.
        assert_eq!(diverging_epoch(1, 10, eo(1, 10), 0), None);
        // Follower fetched epoch 3 which the leader never had; leader's largest ≤ 3 is 2.
        assert_eq!(diverging_epoch(3, 15, eo(2, 14), 0), Some(eo(2, 14)));
        // Empty follower log: nothing to check.
        assert_eq!(diverging_epoch(-1, 0, eo(-1, -1), 0), None);
        // Leader knows no epoch at or below the follower's: truncate to its start.
        assert_eq!(diverging_epoch(0, 5, eo(-1, -1), 0), Some(eo(-1, 0)));
    }

    #[test]
    fn truncation_uses_epochs_never_the_high_watermark() {
        // Same epoch on both sides: min(leader end, follower end) (KIP-279).
        assert_eq!(truncation_offset(eo(1, 10), eo(1, 12), 12), (10, true));
        // Follower's largest epoch ≤ 2 is 1 ending at 9: truncate there, fetch again.
        assert_eq!(truncation_offset(eo(2, 14), eo(1, 9), 15), (9, false));
        // Undefined leader epoch: min(leader end, LEO).
        assert_eq!(truncation_offset(eo(-1, 0), eo(0, 5), 5), (0, true));
    }

    #[test]
    fn follower_high_watermark_is_bounded_by_its_log() {
        assert_eq!(follower_high_watermark(100, 80), 80);
        assert_eq!(follower_high_watermark(50, 80), 50);
    }
}
