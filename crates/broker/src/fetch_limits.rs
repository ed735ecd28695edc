//! How much one fetch answer may carry (Kafka `KafkaApis.handleFetchRequest` and
//! `ReplicaManager.readFromLog`): the request's max_bytes clamped to fetch.max.bytes, the
//! one-batch exemption of the first partition with data only (KIP-74 `minOneMessage`), the
//! refusal of partitions listed twice, and the bound that keeps every answer, exemption
//! included, inside the gRPC message limit of both ends (`pb::MAX_GRPC_MESSAGE_BYTES`, set
//! as max_encoding_message_size on the server and max_decoding_message_size on the
//! fetcher's client).
use std::collections::HashMap;

use insync_proto as pb;
use insync_types::TopicPartition;

use crate::messages::FetchPartition;

/// Bytes of a gRPC answer kept free beyond what `partition_framing_bytes` counts (the
/// FetchResponse's own fields, and a margin for anything added to the message later).
pub const RESPONSE_SLACK_BYTES: usize = 64 * 1024;

/// Longest `FetchPartitionResponse.error_message` (longer ones are cut by `bounded_message`).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 256;

/// Upper bound of one `FetchPartitionResponse`'s encoded size, leaving out its topic name
/// and record bytes: six scalar fields at their widest varint (a negative int32 takes 10
/// bytes) with tags, the diverging epoch, the error message at its longest, and the tag and
/// length prefix of the entry itself and of its topic and records fields. Checked against
/// prost's `encoded_len` by a test.
pub const PARTITION_FRAMING_BYTES: usize = 512;

/// The record bytes a follower asks for in one fetch (Kafka's replica.fetch.response.max.bytes
/// is 10 MiB; insync keeps the 16 MiB it always used), lowered further by `replica_fetch_max_bytes`
/// when many partitions' framing needs room in the gRPC message.
pub const REPLICA_FETCH_RESPONSE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// The encoded size bound of one partition's entry, apart from its records.
pub fn partition_framing_bytes(topic: &str) -> usize {
    PARTITION_FRAMING_BYTES.saturating_add(topic.len())
}

/// Record bytes that fit one gRPC answer to a fetch of `partitions`, after the framing of
/// every entry (answered with data or not) and the slack.
pub fn grpc_record_budget<'a>(topics: impl Iterator<Item = &'a str>) -> usize {
    let framing = topics.map(partition_framing_bytes).fold(RESPONSE_SLACK_BYTES, usize::saturating_add);
    pb::MAX_GRPC_MESSAGE_BYTES.saturating_sub(framing)
}

/// Kafka `KafkaApis.handleFetchRequest`: fetchMaxBytes = min(request maxBytes,
/// fetch.max.bytes). insync's proto3 default 0 means "unset", so it becomes fetch.max.bytes.
pub fn effective_max_bytes(requested: u32, fetch_max_bytes: u32) -> usize {
    let bytes = if requested == 0 { fetch_max_bytes } else { requested.min(fetch_max_bytes) };
    bytes as usize
}

/// The max_bytes a follower sends: its nominal budget, but never more than what fits the
/// gRPC limit (the leader's encode and our decode limit) with this request's framing.
pub fn replica_fetch_max_bytes(partitions: &[FetchPartition]) -> u32 {
    let topics = partitions.iter().map(|p| p.topic_partition.topic.as_str());
    let bytes = REPLICA_FETCH_RESPONSE_MAX_BYTES.min(grpc_record_budget(topics));
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// The record bytes left for the rest of one fetch answer, walked in request order (Kafka
/// `ReplicaManager.readFromLog`: `limitBytes` shrinks by each partition's bytes, and
/// `minOneMessage` turns false once any partition returned bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchBudget {
    /// What the request (clamped to fetch.max.bytes) still allows.
    remaining: usize,
    /// What still fits the gRPC message: the exemption never goes beyond it.
    hard_remaining: usize,
    /// No partition has returned bytes yet: the next one may return one batch larger than
    /// `remaining` (KIP-74), so a consumer always makes progress.
    min_one_batch: bool,
}

impl FetchBudget {
    pub fn new(max_bytes: usize, hard_limit: usize) -> FetchBudget {
        FetchBudget { remaining: max_bytes.min(hard_limit), hard_remaining: hard_limit, min_one_batch: true }
    }

    /// `(max_bytes, first_batch_max_bytes)` for the next partition's `read_bounded`. A
    /// partition_max_bytes of 0 sets no per-partition limit (insync's proto3 default).
    /// Kafka's `read` takes min(partition maxBytes, limitBytes); with minOneMessage the
    /// first batch may exceed both.
    pub fn partition_limits(&self, partition_max_bytes: u32) -> (usize, usize) {
        let soft = match partition_max_bytes {
            0 => self.remaining,
            limit => (limit as usize).min(self.remaining),
        };
        let exempt = if self.min_one_batch { self.hard_remaining } else { soft };
        (soft, exempt)
    }

    /// Accounts for the bytes one partition returned.
    pub fn consume(&mut self, bytes: usize) {
        if bytes > 0 {
            self.min_one_batch = false;
        }
        self.remaining = self.remaining.saturating_sub(bytes);
        self.hard_remaining = self.hard_remaining.saturating_sub(bytes);
    }

    pub fn min_one_batch(&self) -> bool {
        self.min_one_batch
    }
}

/// Which entries name a partition that the request lists more than once. Kafka's Fetch
/// folds such entries into one map entry (`FetchRequest.fetchData`, a LinkedHashMap), which
/// a positional answer cannot express; insync refuses them all with INVALID_REQUEST, the rule
/// Kafka applies to ListOffsets (`KafkaApis.handleListOffsetRequest`,
/// `ListOffsetsRequest.duplicatePartitions`), so no partition is read twice into one answer.
pub fn duplicate_entries(partitions: &[FetchPartition]) -> Vec<bool> {
    let mut counts: HashMap<&TopicPartition, usize> = HashMap::with_capacity(partitions.len());
    for p in partitions {
        *counts.entry(&p.topic_partition).or_default() += 1;
    }
    partitions.iter().map(|p| counts.get(&p.topic_partition).is_some_and(|&n| n > 1)).collect()
}

/// Cuts a message to `MAX_ERROR_MESSAGE_BYTES` on a character boundary, so the framing
/// bound holds whatever a message interpolates.
pub fn bounded_message(mut message: String) -> String {
    if message.len() > MAX_ERROR_MESSAGE_BYTES {
        let mut end = MAX_ERROR_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use insync_proto::prost::Message;

    fn entry(topic: &str, partition: i32) -> FetchPartition {
        FetchPartition {
            topic_partition: TopicPartition::new(topic, partition),
            fetch_offset: 0,
            current_leader_epoch: -1,
            last_fetched_epoch: -1,
            partition_max_bytes: 0,
        }
    }

    fn budget_of(entries: &[FetchPartition]) -> usize {
        grpc_record_budget(entries.iter().map(|p| p.topic_partition.topic.as_str()))
    }

    #[test]
    fn max_bytes_is_clamped_to_fetch_max_bytes_and_zero_means_it() {
        // KafkaApis.handleFetchRequest: min(request maxBytes, fetch.max.bytes).
        assert_eq!(effective_max_bytes(0, 57_671_680), 57_671_680);
        assert_eq!(effective_max_bytes(u32::MAX, 57_671_680), 57_671_680);
        assert_eq!(effective_max_bytes(1000, 57_671_680), 1000);
    }

    #[test]
    fn only_the_first_partition_with_data_gets_the_exemption() {
        // ReplicaManager.readFromLog: minOneMessage = false once a partition returned bytes.
        let mut budget = FetchBudget::new(100, 1_000);
        assert_eq!(budget.partition_limits(0), (100, 1_000));
        assert_eq!(budget.partition_limits(30), (30, 1_000), "per-partition limit, exemption still on");
        budget.consume(0);
        assert!(budget.min_one_batch(), "an empty partition does not use up the exemption");
        budget.consume(400);
        assert!(!budget.min_one_batch());
        assert_eq!(budget.partition_limits(0), (0, 0), "nothing left, no exemption");
        let mut budget = FetchBudget::new(100, 1_000);
        budget.consume(60);
        assert_eq!(budget.partition_limits(0), (40, 40));
        assert_eq!(budget.partition_limits(10), (10, 10));
    }

    #[test]
    fn the_grpc_bound_caps_both_the_budget_and_the_exemption() {
        let budget = FetchBudget::new(usize::MAX, 500);
        assert_eq!(budget.partition_limits(0), (500, 500));
        let many: Vec<_> = (0..1000).map(|p| entry("orders", p)).collect();
        let expected = pb::MAX_GRPC_MESSAGE_BYTES - RESPONSE_SLACK_BYTES - 1000 * (PARTITION_FRAMING_BYTES + 6);
        assert_eq!(budget_of(&many), expected);
        assert_eq!(replica_fetch_max_bytes(&many) as usize, REPLICA_FETCH_RESPONSE_MAX_BYTES);
        let huge: Vec<_> = (0..120_000).map(|p| entry("orders", p)).collect();
        assert_eq!(replica_fetch_max_bytes(&huge) as usize, budget_of(&huge));
        assert!(replica_fetch_max_bytes(&huge) as usize + 120_000 * 518 < pb::MAX_GRPC_MESSAGE_BYTES);
    }

    #[test]
    fn duplicates_are_flagged_on_every_entry() {
        let entries = [entry("a", 0), entry("a", 1), entry("b", 0), entry("a", 0), entry("a", 0)];
        assert_eq!(duplicate_entries(&entries), vec![true, false, false, true, true]);
        assert!(duplicate_entries(&[]).is_empty());
    }

    #[test]
    fn the_framing_bound_covers_the_widest_partition_entry() {
        let topic = "t".repeat(249); // Kafka's longest topic name
        let widest = pb::FetchPartitionResponse {
            topic: topic.clone(),
            partition: i32::MIN,
            error_code: i32::MIN,
            high_watermark: i64::MIN,
            log_start_offset: i64::MIN,
            log_end_offset: i64::MIN,
            records: bytes::Bytes::new(),
            diverging_epoch: Some(pb::EpochEndOffset { epoch: i32::MIN, end_offset: i64::MIN }),
            leader_epoch: i32::MIN,
            error_message: bounded_message("é".repeat(1000)),
        };
        let response = pb::FetchResponse { error_code: i32::MIN, partitions: vec![widest.clone(), widest] };
        assert!(response.encoded_len() <= 2 * partition_framing_bytes(&topic) + 11);
    }

    #[test]
    fn messages_are_cut_on_a_character_boundary() {
        assert_eq!(bounded_message("short".into()), "short");
        let cut = bounded_message("é".repeat(200)); // 400 bytes of 2-byte characters
        assert_eq!(cut.len(), MAX_ERROR_MESSAGE_BYTES);
        let cut = bounded_message(format!("x{}", "é".repeat(200)));
        assert_eq!(cut.len(), MAX_ERROR_MESSAGE_BYTES - 1);
    }
}
