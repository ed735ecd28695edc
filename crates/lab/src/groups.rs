//! The group-offsets scenario, "coordinator SIGKILL loses no committed offset": a client
//! commits offsets of a consumer group through the group's coordinator over the Kafka
//! protocol (OffsetCommit, the `kafka-protocol` codecs the broker uses), the lab SIGKILLs
//! that coordinator (the leader of the group's `__consumer_offsets` partition) mid-stream,
//! the client carries on through the new coordinator, and OffsetFetch must then show, for
//! every partition, an offset at least the last one acknowledged (Kafka's promise: an
//! acknowledged commit is in the ISR's logs, so the new leader loads it) and no greater
//! than the last one sent. `insync lab groups` runs it; `judge` is the pure checker.
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cluster::{ClusterSpec, LabCluster, NodeId, BROKERS};
use crate::scenario::Verdict;
use crate::LabError;

/// The topic whose offsets are committed (its records are never read: offsets are numbers).
pub const TOPIC: &str = "lab-group-offsets";
/// The group committing.
pub const GROUP: &str = "lab-group";
const PARTITIONS: i32 = 3;
/// Every call to a broker answers within this, or counts as failed (a SIGKILLed peer).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (OffsetFetch of 3 partitions is tiny).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Timing of the scenario.
#[derive(Debug, Clone)]
pub struct GroupRunConfig {
    /// Commits before the coordinator is killed.
    pub before_fault: Duration,
    /// Commits after it (through the failover: the session timeout and the load).
    pub after_fault: Duration,
}

impl Default for GroupRunConfig {
    fn default() -> Self {
        GroupRunConfig { before_fault: Duration::from_secs(2), after_fault: Duration::from_secs(8) }
    }
}

/// What a run found.
#[derive(Debug, Clone, Serialize)]
pub struct GroupOffsetsResult {
    pub verdict: Verdict,
    /// The coordinator SIGKILLed, and the one after it.
    pub killed: i32,
    pub new_coordinator: Option<i32>,
    /// Commits sent, acknowledged, and acknowledged after the kill.
    pub attempted: i64,
    pub acknowledged: i64,
    pub acknowledged_after_kill: i64,
    /// Offsets fetched after the failover, and again once the killed broker is back.
    pub fetched: Vec<Option<i64>>,
    pub fetched_after_heal: Vec<Option<i64>>,
    pub violations: Vec<String>,
    pub duration_ms: u64,
}

/// The checker: every partition shows an offset in [last acknowledged, last sent] (commits
/// send increasing offsets, the same to every partition).
pub fn judge(last_acknowledged: i64, last_sent: i64, fetched: &[Option<i64>]) -> Vec<String> {
    let mut violations = Vec::new();
    for (partition, offset) in fetched.iter().enumerate() {
        match offset {
            None if last_acknowledged > 0 => violations.push(format!(
                "partition {partition}: no committed offset, but {last_acknowledged} was acknowledged (lost)"
            )),
            Some(o) if *o < last_acknowledged => violations.push(format!(
                "partition {partition}: committed offset {o} is behind the acknowledged {last_acknowledged} (rewound)"
            )),
            Some(o) if *o > last_sent => violations
                .push(format!("partition {partition}: offset {o} was never committed (last sent {last_sent})")),
            _ => {}
        }
    }
    violations
}

/// One Kafka connection: requests one at a time, each with `CALL_TIMEOUT`.
struct KafkaConn {
    stream: TcpStream,
    correlation_id: i32,
}

impl KafkaConn {
    async fn connect(address: &str) -> Result<KafkaConn, String> {
        let stream = tokio::time::timeout(CALL_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| format!("connecting to {address} timed out"))?
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(KafkaConn { stream, correlation_id: 0 })
    }

    async fn call<Req, Resp>(&mut self, key: ApiKey, version: i16, request: &Req) -> Result<Resp, String>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("insync-lab")));
        let mut body = BytesMut::new();
        header.encode(&mut body, Req::header_version(version)).map_err(|e| e.to_string())?;
        request.encode(&mut body, version).map_err(|e| e.to_string())?;
        let mut frame = BytesMut::with_capacity(4 + body.len());
        frame.put_u32(u32::try_from(body.len()).map_err(|_| "request too large".to_string())?);
        frame.extend_from_slice(&body);
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let len = self.stream.read_u32().await? as usize;
            if len > MAX_RESPONSE_BYTES {
                return Err(std::io::Error::other(format!("a {len}-byte answer")));
            }
            let mut answer = vec![0u8; len];
            self.stream.read_exact(&mut answer).await?;
            Ok(Bytes::from(answer))
        };
        let mut answer = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{key:?} timed out"))?
            .map_err(|e| format!("{key:?}: {e}"))?;
        let header = ResponseHeader::decode(&mut answer, Resp::header_version(version)).map_err(|e| e.to_string())?;
        if header.correlation_id != self.correlation_id {
            return Err(format!("correlation id {} for {}", header.correlation_id, self.correlation_id));
        }
        let response = Resp::decode(&mut answer, version).map_err(|e| e.to_string())?;
        if answer.has_remaining() {
            return Err(format!("{key:?}: {} bytes after the answer", answer.remaining()));
        }
        Ok(response)
    }
}

/// The group's coordinator as a broker names it (FindCoordinator v3): (id, address).
async fn find_coordinator(address: &str) -> Result<(i32, String), String> {
    let mut conn = KafkaConn::connect(address).await?;
    let request = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str(GROUP)).with_key_type(0);
    let response: FindCoordinatorResponse = conn.call(ApiKey::FindCoordinator, 3, &request).await?;
    if response.error_code != 0 {
        return Err(format!("FindCoordinator: error {}", response.error_code));
    }
    Ok((response.node_id.0, format!("{}:{}", response.host.as_str(), response.port)))
}

/// Asks the brokers in turn until one names a coordinator, or `timeout` passes.
async fn wait_coordinator(addresses: &[String], not: Option<i32>, timeout: Duration) -> Result<(i32, String), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no broker asked");
    loop {
        for address in addresses {
            match find_coordinator(address).await {
                Ok((id, coordinator)) if Some(id) != not => return Ok((id, coordinator)),
                Ok((id, _)) => last = format!("{address} still names broker {id}"),
                Err(e) => last = format!("{address}: {e}"),
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("no coordinator within {timeout:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Commits `offset` for every partition (a simple commit: no member, generation -1, as a
/// consumer with `assign()` commits); Ok when every partition is acknowledged.
async fn commit(conn: &mut KafkaConn, offset: i64) -> Result<(), String> {
    let partitions = (0..PARTITIONS)
        .map(|p| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(p)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(StrBytes::from_static_str("")))
        })
        .collect();
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::from_static_str(""))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(partitions)]);
    let response: OffsetCommitResponse = conn.call(ApiKey::OffsetCommit, 8, &request).await?;
    let errors: Vec<i16> =
        response.topics.iter().flat_map(|t| t.partitions.iter()).map(|p| p.error_code).filter(|c| *c != 0).collect();
    let answered: usize = response.topics.iter().map(|t| t.partitions.len()).sum();
    if errors.is_empty() && answered == PARTITIONS as usize {
        Ok(())
    } else {
        Err(format!("OffsetCommit: errors {errors:?}, {answered} partition(s) answered"))
    }
}

/// The committed offsets (OffsetFetch v7) as the coordinator at `address` has them.
async fn fetch(address: &str) -> Result<Vec<Option<i64>>, String> {
    let mut conn = KafkaConn::connect(address).await?;
    let request =
        OffsetFetchRequest::default().with_group_id(GroupId(StrBytes::from_static_str(GROUP))).with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_indexes((0..PARTITIONS).collect()),
        ]));
    let response: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, 7, &request).await?;
    if response.error_code != 0 {
        return Err(format!("OffsetFetch: error {}", response.error_code));
    }
    let mut offsets = vec![None; PARTITIONS as usize];
    for p in response.topics.iter().filter(|t| t.name.as_str() == TOPIC).flat_map(|t| t.partitions.iter()) {
        if p.error_code != 0 {
            return Err(format!("OffsetFetch: partition {} error {}", p.partition_index, p.error_code));
        }
        if let Some(slot) = usize::try_from(p.partition_index).ok().and_then(|i| offsets.get_mut(i)) {
            *slot = (p.committed_offset >= 0).then_some(p.committed_offset);
        }
    }
    Ok(offsets)
}

/// OffsetFetch from whichever broker is the coordinator, until one answers.
async fn fetch_from_coordinator(addresses: &[String], timeout: Duration) -> Result<(i32, Vec<Option<i64>>), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = async {
            let (id, coordinator) = wait_coordinator(addresses, None, CALL_TIMEOUT).await?;
            fetch(&coordinator).await.map(|offsets| (id, offsets))
        };
        match attempt.await {
            Ok(found) => return Ok(found),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The commit history: offsets sent and acknowledged (1, 2, 3, ...).
#[derive(Debug, Default)]
struct Commits {
    sent: i64,
    acknowledged: i64,
}

/// Commits increasing offsets until `until`, finding the coordinator again after any error.
async fn commit_until(addresses: &[String], commits: &mut Commits, until: Instant) {
    let mut conn: Option<KafkaConn> = None;
    while Instant::now() < until {
        if conn.is_none() {
            let found = match wait_coordinator(addresses, None, CALL_TIMEOUT).await {
                Ok((_, coordinator)) => KafkaConn::connect(&coordinator).await,
                Err(e) => Err(e),
            };
            match found {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        commits.sent += 1;
        match commit(c, commits.sent).await {
            Ok(()) => commits.acknowledged = commits.sent,
            Err(_) => {
                conn = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// OffsetFetch through the coordinator, judged; a fetch that never answers is a violation
/// too (the offsets are unreadable).
async fn checked_fetch(
    addresses: &[String],
    commits: &Commits,
    when: &str,
    violations: &mut Vec<String>,
) -> (Option<i32>, Vec<Option<i64>>) {
    match fetch_from_coordinator(addresses, Duration::from_secs(30)).await {
        Ok((id, offsets)) => {
            let found = judge(commits.acknowledged, commits.sent, &offsets);
            violations.extend(found.into_iter().map(|v| format!("{when}: {v}")));
            (Some(id), offsets)
        }
        Err(e) => {
            violations.push(format!("{when}: no OffsetFetch answer: {e}"));
            (None, vec![None; PARTITIONS as usize])
        }
    }
}

/// Runs the scenario on a lab cluster of its own (1 controller, 3 brokers with Kafka
/// listeners), launched from `bin_dir`.
pub async fn run_group_offsets(
    bin_dir: &std::path::Path,
    config: &GroupRunConfig,
) -> Result<GroupOffsetsResult, LabError> {
    let mut spec = ClusterSpec::new(bin_dir.to_path_buf());
    spec.kafka_listeners = true;
    let mut lab = LabCluster::start(spec).await?;
    lab.create_topic(TOPIC, PARTITIONS, 2, Duration::from_secs(30)).await?;
    run_on(&mut lab, config).await
}

/// The scenario on a running cluster (its brokers need Kafka listeners).
pub async fn run_on(lab: &mut LabCluster, config: &GroupRunConfig) -> Result<GroupOffsetsResult, LabError> {
    let started = Instant::now();
    let addresses: Vec<String> = (1..=BROKERS).filter_map(|b| lab.kafka_address(b)).collect();
    if addresses.len() != BROKERS as usize {
        return Err(LabError::Setup("the group-offsets scenario needs brokers with Kafka listeners".into()));
    }
    // The first request creates __consumer_offsets; the coordinator exists once it has a leader.
    let (killed, _) = wait_coordinator(&addresses, None, Duration::from_secs(60)).await.map_err(LabError::Setup)?;
    let mut commits = Commits::default();
    commit_until(&addresses, &mut commits, Instant::now() + config.before_fault).await;
    let before_kill = commits.acknowledged;
    lab.kill(NodeId::Broker(killed));
    let alive: Vec<String> = (1..=BROKERS).filter(|b| *b != killed).filter_map(|b| lab.kafka_address(b)).collect();
    commit_until(&alive, &mut commits, Instant::now() + config.after_fault).await;
    let mut violations = Vec::new();
    let (new_coordinator, fetched) = checked_fetch(&alive, &commits, "after the kill", &mut violations).await;
    if commits.acknowledged == before_kill {
        violations.push(format!("no commit was acknowledged after broker {killed} (the coordinator) was killed"));
    }
    lab.heal()?;
    lab.wait_brokers_alive(Duration::from_secs(30)).await?;
    let (_, fetched_after_heal) = checked_fetch(&addresses, &commits, "after healing", &mut violations).await;
    Ok(GroupOffsetsResult {
        verdict: if violations.is_empty() { Verdict::Ok } else { Verdict::Violation },
        killed,
        new_coordinator,
        attempted: commits.sent,
        acknowledged: commits.acknowledged,
        acknowledged_after_kill: commits.acknowledged - before_kill,
        fetched,
        fetched_after_heal,
        violations,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_wants_every_acknowledged_commit_and_nothing_invented() {
        assert!(judge(5, 6, &[Some(5), Some(6), Some(5)]).is_empty(), "the unacknowledged 6 may have landed");
        assert!(judge(0, 0, &[None, None, None]).is_empty(), "nothing acknowledged, nothing owed");
        let rewound = judge(5, 6, &[Some(5), Some(4), Some(5)]);
        assert_eq!(rewound.len(), 1);
        assert!(rewound[0].contains("partition 1") && rewound[0].contains("rewound"), "{rewound:?}");
        let lost = judge(5, 5, &[None, Some(5), Some(5)]);
        assert!(lost[0].contains("lost"), "{lost:?}");
        let invented = judge(5, 5, &[Some(5), Some(5), Some(9)]);
        assert!(invented[0].contains("never committed"), "{invented:?}");
    }
}
