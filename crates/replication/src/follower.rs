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

impl EpochEndOffset {
    /// Kafka's (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET): the log knows no epoch at or below
    /// the one asked.
    pub const UNDEFINED: EpochEndOffset = EpochEndOffset { epoch: NO_EPOCH, end_offset: -1 };

    /// Whether this answer locates nothing (any negative part, so that a malformed answer
    /// from the wire is never taken for an offset).
    pub fn is_undefined(&self) -> bool {
        self.epoch < 0 || self.end_offset < 0
    }
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
) -> Option<EpochEndOffset> {
    if last_fetched_epoch == NO_EPOCH {
        // The follower's log is empty (or it predates epochs): nothing can have diverged.
        return None;
    }
    if leader_end_for_epoch.is_undefined() {
        // The leader knows no epoch ≤ the follower's. Kafka's leader answers its UNDEFINED
        // lookup as it is and the follower picks the point (`truncation_offset`): the
        // leader's own log start says nothing about where the two logs agree.
        return Some(EpochEndOffset::UNDEFINED);
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
/// An answer that locates the divergence never sends the follower to its high watermark:
/// truncating to the HW lost acknowledged writes before KIP-101. Only an undefined answer
/// does, and never below it.
pub fn truncation_offset(
    diverging: EpochEndOffset,
    local_end_for_epoch: EpochEndOffset,
    local_log_end_offset: Offset,
    local_high_watermark: Offset,
) -> (Offset, bool) {
    if diverging.is_undefined() {
        // Kafka getOffsetTruncationState, UNDEFINED_EPOCH_OFFSET: the leader knows none of
        // our epochs, so its answer locates nothing; truncate to the initial fetch offset,
        // the follower's HW. Below it every record is committed, so the leader holds it too.
        // (Kafka's other undefined-epoch branch is for OffsetsForLeaderEpoch v0 answers,
        // which insync never had: an undefined epoch here always means "none of yours",
        // whatever offset an older insync leader put beside it, its log start.)
        return (local_high_watermark.min(local_log_end_offset).max(0), true);
    }
    if local_end_for_epoch.epoch == NO_EPOCH {
        // Kafka's `case None`: we do not know the leader's epoch; its end offset is the
        // point where the logs agree.
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
        assert_eq!(diverging_epoch(1, 12, eo(1, 10)), Some(eo(1, 10)));
        // Follower is exactly at the end of epoch 1: no divergence.
        assert_eq!(diverging_epoch(1, 10, eo(1, 10)), None);
        // Follower fetched epoch 3 which the leader never had; leader's largest ≤ 3 is 2.
        assert_eq!(diverging_epoch(3, 15, eo(2, 14)), Some(eo(2, 14)));
        // Empty follower log: nothing to check.
        assert_eq!(diverging_epoch(-1, 0, eo(-1, -1)), None);
    }

    #[test]
    fn a_leader_that_knows_no_epoch_of_ours_answers_undefined() {
        // Kafka Partition.fetchRecords answers lastOffsetForLeaderEpoch's UNDEFINED as is;
        // it used to be replaced by the leader's log start.
        assert_eq!(diverging_epoch(0, 5, eo(-1, -1)), Some(EpochEndOffset::UNDEFINED));
        assert_eq!(EpochEndOffset::UNDEFINED, eo(-1, -1));
    }

    #[test]
    fn truncation_uses_epochs_never_the_high_watermark() {
        // Same epoch on both sides: min(leader end, follower end) (KIP-279), even below
        // the follower's HW of 11.
        assert_eq!(truncation_offset(eo(1, 10), eo(1, 12), 12, 11), (10, true));
        // Follower's largest epoch ≤ 2 is 1 ending at 9: truncate there, fetch again.
        assert_eq!(truncation_offset(eo(2, 14), eo(1, 9), 15, 12), (9, false));
        // We do not know the leader's epoch (Kafka `case None`): min(leader end, LEO).
        assert_eq!(truncation_offset(eo(3, 4), eo(-1, -1), 5, 5), (4, true));
    }

    #[test]
    fn an_undefined_answer_truncates_to_the_high_watermark_never_below() {
        // Kafka AbstractFetcherThread.getOffsetTruncationState, UNDEFINED_EPOCH_OFFSET:
        // truncate to the follower's HW (3), not to the leader's log start.
        assert_eq!(truncation_offset(eo(-1, -1), eo(0, 5), 5, 3), (3, true));
        // An older insync leader put its log start (0) beside the undefined epoch.
        assert_eq!(truncation_offset(eo(-1, 0), eo(0, 5), 5, 3), (3, true));
        // A malformed answer locates nothing either.
        assert_eq!(truncation_offset(eo(2, -7), eo(2, 5), 5, 3), (3, true));
        // Nothing above the HW: nothing to cut.
        assert_eq!(truncation_offset(eo(-1, -1), eo(0, 5), 5, 5), (5, true));
    }

    #[test]
    fn follower_high_watermark_is_bounded_by_its_log() {
        assert_eq!(follower_high_watermark(100, 80), 80);
        assert_eq!(follower_high_watermark(50, 80), 50);
    }
}
