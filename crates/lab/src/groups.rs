//! The group-offsets scenario, "coordinator SIGKILL loses no committed offset": a client
//! commits offsets of a consumer group through the group's coordinator over the Kafka
//! protocol (OffsetCommit, the `kafka-protocol` codecs the broker uses), and the lab
//! SIGKILLs that coordinator (the leader of the group's `__consumer_offsets` partition)
//! while commits are in flight. Kafka's promise: an acknowledged commit is in the ISR's
//! logs, so the new leader loads it. Checked three times, each by `judge` (every partition
//! shows an offset in [last acknowledged, last sent]):
//!
//! 1. right after the failover, BEFORE any new commit: the first OffsetFetch the new
//!    coordinator answers is judged against the commits sent and acknowledged before the
//!    kill (a later commit would overwrite an old or empty state and hide the loss);
//! 2. after the client has committed through the new coordinator for a while;
//! 3. once the killed broker is back.
//!
//! The run is inconclusive (a failure) unless at least `min_acknowledged_before_kill`
//! commits were acknowledged before the kill and every broker's FindCoordinator and the
//! cluster metadata agree, right before the kill, on the broker killed; it fails unless the
//! new coordinator acknowledges commits. Then a negative control (`loss_control`) destroys
//! the offsets end to end (every broker SIGKILLed, the group's `__consumer_offsets`
//! partition directory deleted on each, the brokers restarted) and the same fetch-and-judge
//! must report the loss. `insync lab groups` runs it all; `judge` is the pure checker.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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

/// The internal topic holding the group's offsets.
const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Timing and checks of the scenario.
#[derive(Debug, Clone)]
pub struct GroupRunConfig {
    /// Commits at least this long before the coordinator is killed...
    pub before_fault: Duration,
    /// ...and until `min_acknowledged_before_kill` are acknowledged, for at most this long
    /// in all (then the run is inconclusive).
    pub before_fault_limit: Duration,
    pub min_acknowledged_before_kill: i64,
    /// Commits after the post-failover check, through the new coordinator.
    pub after_fault: Duration,
    /// End with the negative control (see the module doc).
    pub loss_control: bool,
}

impl Default for GroupRunConfig {
    fn default() -> Self {
        GroupRunConfig {
            before_fault: Duration::from_secs(2),
            before_fault_limit: Duration::from_secs(30),
            min_acknowledged_before_kill: 50,
            after_fault: Duration::from_secs(5),
            loss_control: true,
        }
    }
}

/// A FindCoordinator answer: the broker asked and the coordinator it named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Named {
    pub asked: i32,
    pub named: i32,
}

/// What a run found.
#[derive(Debug, Clone, Serialize)]
pub struct GroupOffsetsResult {
    /// Ok; Violation (an acknowledged commit lost or rewound, an offset never sent, an
    /// unreadable fetch, or no commit through the new coordinator); Error (inconclusive, see
    /// `inconclusive`); or the control's Missed or Error (it did not see the destroyed offsets).
    pub verdict: Verdict,
    /// Why the run proved nothing (too few commits before the kill, no agreed coordinator).
    pub inconclusive: Option<String>,
    /// The group's `__consumer_offsets` partition.
    pub offsets_partition: Option<i32>,
    /// Right before the kill: FindCoordinator as each broker answered it, and the leader of
    /// the group's offsets partition in the cluster metadata.
    pub named_before_kill: Vec<Named>,
    pub offsets_leader_before_kill: Option<i32>,
    /// The broker SIGKILLed (the one all of the above named).
    pub killed: Option<i32>,
    /// Before the kill: commits sent (offsets 1..=sent, the same to every partition),
    /// acknowledged (in all and by coordinator), the last offset acknowledged and by whom.
    pub sent_before_kill: i64,
    pub acknowledged_before_kill: i64,
    pub last_acknowledged_before_kill: i64,
    pub acknowledged_before_kill_by: BTreeMap<i32, i64>,
    pub last_acknowledged_before_kill_by: Option<i32>,
    /// Check 1: the first OffsetFetch answered after the kill, before any new commit: by
    /// whom, how long after the kill, and what.
    pub failover_coordinator: Option<i32>,
    pub failover_fetch_ms: Option<u64>,
    pub fetched_after_failover: Vec<Option<i64>>,
    /// All commits: sent, acknowledged, the last offset acknowledged, acknowledged after the
    /// kill (and by whom).
    pub attempted: i64,
    pub acknowledged: i64,
    pub last_acknowledged: i64,
    pub acknowledged_after_kill: i64,
    pub acknowledged_after_kill_by: BTreeMap<i32, i64>,
    /// Check 2: the coordinator after the new commits and what it fetched.
    pub new_coordinator: Option<i32>,
    pub fetched: Vec<Option<i64>>,
    /// Check 3: once the killed broker is back.
    pub fetched_after_heal: Vec<Option<i64>>,
    pub violations: Vec<String>,
    pub loss_control: Option<LossControl>,
    pub duration_ms: u64,
}

/// The negative control: the offsets destroyed on every replica, then fetched and judged.
#[derive(Debug, Clone, Serialize)]
pub struct LossControl {
    /// Caught: the checker reported the destroyed offsets; Missed: it did not; Error: the
    /// control could not run.
    pub verdict: Verdict,
    /// The partition directories deleted.
    pub wiped: Vec<String>,
    pub coordinator: Option<i32>,
    pub fetched: Vec<Option<i64>>,
    /// What `judge` said (or why the control could not run).
    pub found: Vec<String>,
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

/// The commit history: offsets sent (1, 2, 3, ...), the last acknowledged, and how many
/// each coordinator acknowledged.
#[derive(Debug, Default, Clone)]
struct Commits {
    sent: i64,
    acknowledged: i64,
    acknowledged_by: BTreeMap<i32, i64>,
    last_acknowledged_by: Option<i32>,
}

impl Commits {
    /// Commits acknowledged.
    fn count(&self) -> i64 {
        self.acknowledged_by.values().sum()
    }
}

type SharedCommits = Arc<Mutex<Commits>>;

fn snapshot(commits: &SharedCommits) -> Commits {
    commits.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Commits increasing offsets through the coordinator FindCoordinator names (again after
/// any error) until `stop` is set or `until` passes. `stop` is checked right before each
/// commit is sent, so once it is set (before the kill) no commit can reach a new
/// coordinator; the commit in flight then ends (acknowledged or failed) and the loop stops.
async fn commit_loop(addresses: Vec<String>, commits: SharedCommits, stop: Arc<AtomicBool>, until: Option<Instant>) {
    let mut conn: Option<(i32, KafkaConn)> = None;
    let running = || !stop.load(Ordering::SeqCst) && until.is_none_or(|u| Instant::now() < u);
    while running() {
        if conn.is_none() {
            let found = match wait_coordinator(&addresses, None, CALL_TIMEOUT).await {
                Ok((id, coordinator)) => KafkaConn::connect(&coordinator).await.map(|c| (id, c)),
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
        if !running() {
            break;
        }
        let Some((coordinator, c)) = conn.as_mut() else { continue };
        let offset = {
            let mut state = commits.lock().unwrap_or_else(PoisonError::into_inner);
            state.sent += 1;
            state.sent
        };
        match commit(c, offset).await {
            Ok(()) => {
                let mut state = commits.lock().unwrap_or_else(PoisonError::into_inner);
                state.acknowledged = offset;
                *state.acknowledged_by.entry(*coordinator).or_default() += 1;
                state.last_acknowledged_by = Some(*coordinator);
            }
            Err(_) => {
                conn = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// OffsetFetch through the coordinator, judged against `commits`; a fetch that never
/// answers is a violation too (the offsets are unreadable).
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

/// Kafka `GroupMetadataManager.partitionFor`: `abs(javaHash(group)) % partitions`.
pub fn offsets_partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)));
    (if hash == i32::MIN { 0 } else { hash.abs() }) % partitions.max(1)
}

/// Who is the coordinator right before the kill: every broker's FindCoordinator answer and
/// the leader of the group's offsets partition in the cluster metadata must agree (asked
/// again until they do, or `timeout`). Returns the partition, the answers, the leader.
async fn agreed_coordinator(
    lab: &mut LabCluster,
    brokers: &[(i32, String)],
    timeout: Duration,
) -> Result<(i32, Vec<Named>, i32), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut last = String::from("no cluster metadata");
        if let Some(metadata) = lab.metadata().await {
            if let Some(topic) = metadata.topics.iter().find(|t| t.name == OFFSETS_TOPIC) {
                let partition = offsets_partition_for(GROUP, topic.partitions.len() as i32);
                let leader = topic.partitions.iter().find(|p| p.partition == partition).map_or(-1, |p| p.leader);
                let mut named = Vec::new();
                for (broker, address) in brokers {
                    match find_coordinator(address).await {
                        Ok((id, _)) => named.push(Named { asked: *broker, named: id }),
                        Err(e) => last = format!("broker {broker}: {e}"),
                    }
                }
                if named.len() == brokers.len() && leader >= 0 && named.iter().all(|n| n.named == leader) {
                    return Ok((partition, named, leader));
                }
                if named.len() == brokers.len() {
                    last = format!("FindCoordinator answers {named:?}, offsets partition {partition} leader {leader}");
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("no agreed coordinator within {timeout:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The scenario's cluster, launched from `bin_dir`: 1 controller, 3 brokers with Kafka
/// listeners, and the committed-to topic.
pub async fn start_cluster(bin_dir: &std::path::Path) -> Result<LabCluster, LabError> {
    let mut spec = ClusterSpec::new(bin_dir.to_path_buf());
    spec.kafka_listeners = true;
    let mut lab = LabCluster::start(spec).await?;
    lab.create_topic(TOPIC, PARTITIONS, 2, Duration::from_secs(30)).await?;
    Ok(lab)
}

/// Runs the scenario on a cluster of its own (`start_cluster`).
pub async fn run_group_offsets(
    bin_dir: &std::path::Path,
    config: &GroupRunConfig,
) -> Result<GroupOffsetsResult, LabError> {
    let mut lab = start_cluster(bin_dir).await?;
    run_on(&mut lab, config).await
}

fn empty_result() -> GroupOffsetsResult {
    GroupOffsetsResult {
        verdict: Verdict::Error,
        inconclusive: None,
        offsets_partition: None,
        named_before_kill: Vec::new(),
        offsets_leader_before_kill: None,
        killed: None,
        sent_before_kill: 0,
        acknowledged_before_kill: 0,
        last_acknowledged_before_kill: 0,
        acknowledged_before_kill_by: BTreeMap::new(),
        last_acknowledged_before_kill_by: None,
        failover_coordinator: None,
        failover_fetch_ms: None,
        fetched_after_failover: Vec::new(),
        attempted: 0,
        acknowledged: 0,
        last_acknowledged: 0,
        acknowledged_after_kill: 0,
        acknowledged_after_kill_by: BTreeMap::new(),
        new_coordinator: None,
        fetched: Vec::new(),
        fetched_after_heal: Vec::new(),
        violations: Vec::new(),
        loss_control: None,
        duration_ms: 0,
    }
}

/// The scenario on a running cluster (its brokers need Kafka listeners). The cluster is
/// left healed, except after the loss control, which destroys the group's offsets.
pub async fn run_on(lab: &mut LabCluster, config: &GroupRunConfig) -> Result<GroupOffsetsResult, LabError> {
    let started = Instant::now();
    let brokers: Vec<(i32, String)> = (1..=BROKERS).filter_map(|b| lab.kafka_address(b).map(|a| (b, a))).collect();
    if brokers.len() != BROKERS as usize {
        return Err(LabError::Setup("the group-offsets scenario needs brokers with Kafka listeners".into()));
    }
    let addresses: Vec<String> = brokers.iter().map(|(_, a)| a.clone()).collect();
    let mut result = empty_result();
    let finish = |mut result: GroupOffsetsResult, commits: &Commits| {
        result.attempted = commits.sent;
        result.acknowledged = commits.count();
        result.last_acknowledged = commits.acknowledged;
        result.duration_ms = started.elapsed().as_millis() as u64;
        result
    };
    // The first request creates __consumer_offsets; the coordinator exists once it has a leader.
    wait_coordinator(&addresses, None, Duration::from_secs(60)).await.map_err(LabError::Setup)?;

    // Commits flow (in a task) while the lab picks and kills the coordinator.
    let commits: SharedCommits = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let committing = tokio::spawn(commit_loop(addresses.clone(), commits.clone(), stop.clone(), None));
    tokio::time::sleep(config.before_fault).await;
    let limit = Instant::now() + config.before_fault_limit.saturating_sub(config.before_fault);
    while snapshot(&commits).count() < config.min_acknowledged_before_kill && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let picked = if snapshot(&commits).count() < config.min_acknowledged_before_kill {
        Err(format!(
            "only {} commit(s) acknowledged in {:?} before the kill, {} needed: the kill would test nothing",
            snapshot(&commits).count(),
            config.before_fault_limit,
            config.min_acknowledged_before_kill
        ))
    } else {
        agreed_coordinator(lab, &brokers, Duration::from_secs(10)).await
    };
    let killed = match picked {
        Ok((partition, named, leader)) => {
            // Stop before the kill: nothing is sent after it; the commit in flight ends.
            stop.store(true, Ordering::SeqCst);
            lab.kill(NodeId::Broker(leader));
            result.offsets_partition = Some(partition);
            result.named_before_kill = named;
            result.offsets_leader_before_kill = Some(leader);
            result.killed = Some(leader);
            leader
        }
        Err(reason) => {
            stop.store(true, Ordering::SeqCst);
            let _ = committing.await;
            result.inconclusive = Some(reason);
            return Ok(finish(result, &snapshot(&commits)));
        }
    };
    let killed_at = Instant::now();
    let _ = committing.await;
    let before = snapshot(&commits);
    result.sent_before_kill = before.sent;
    result.acknowledged_before_kill = before.count();
    result.last_acknowledged_before_kill = before.acknowledged;
    result.acknowledged_before_kill_by = before.acknowledged_by.clone();
    result.last_acknowledged_before_kill_by = before.last_acknowledged_by;

    // Check 1: the new coordinator's state as it loaded it, before any commit can overwrite it.
    let alive: Vec<String> = brokers.iter().filter(|(b, _)| *b != killed).map(|(_, a)| a.clone()).collect();
    let (coordinator, fetched) =
        checked_fetch(&alive, &before, "right after the failover (no commit since the kill)", &mut result.violations)
            .await;
    result.failover_coordinator = coordinator;
    result.failover_fetch_ms = coordinator.map(|_| killed_at.elapsed().as_millis() as u64);
    result.fetched_after_failover = fetched;

    // Check 2: commits go on through the new coordinator.
    let after = commit_through_new_coordinator(&alive, &commits, &before, killed, config, &mut result).await;

    // Check 3: the killed broker back.
    lab.heal()?;
    lab.wait_brokers_alive(Duration::from_secs(30)).await?;
    let (_, fetched_after_heal) = checked_fetch(&addresses, &after, "after healing", &mut result.violations).await;
    result.fetched_after_heal = fetched_after_heal;

    if config.loss_control {
        if let Some(partition) = result.offsets_partition {
            result.loss_control = Some(loss_control(lab, &addresses, &after, partition).await);
        }
    }
    result.verdict = final_verdict(&result);
    Ok(finish(result, &after))
}

/// Check 2: commits go on through the new coordinator for `config.after_fault`; some must be
/// acknowledged, and the fetched offsets must hold the last acknowledged ones.
async fn commit_through_new_coordinator(
    alive: &[String],
    commits: &SharedCommits,
    before: &Commits,
    killed: i32,
    config: &GroupRunConfig,
    result: &mut GroupOffsetsResult,
) -> Commits {
    let no_stop = Arc::new(AtomicBool::new(false));
    commit_loop(alive.to_vec(), commits.clone(), no_stop, Some(Instant::now() + config.after_fault)).await;
    let after = snapshot(commits);
    result.acknowledged_after_kill = after.count() - before.count();
    result.acknowledged_after_kill_by = after
        .acknowledged_by
        .iter()
        .map(|(b, n)| (*b, n - before.acknowledged_by.get(b).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    if result.acknowledged_after_kill == 0 {
        result
            .violations
            .push(format!("no commit was acknowledged after broker {killed} (the coordinator) was killed"));
    }
    let (new_coordinator, fetched) =
        checked_fetch(alive, &after, "after committing through the new coordinator", &mut result.violations).await;
    result.new_coordinator = new_coordinator;
    result.fetched = fetched;
    after
}

/// A violation anywhere fails the run; otherwise the loss control must have caught its loss.
fn final_verdict(result: &GroupOffsetsResult) -> Verdict {
    if !result.violations.is_empty() {
        return Verdict::Violation;
    }
    match result.loss_control.as_ref().map(|c| c.verdict) {
        Some(Verdict::Caught) | None => Verdict::Ok,
        Some(other) => other,
    }
}

/// The negative control, end to end: every broker SIGKILLed, the group's offsets partition
/// directory deleted on each, the brokers restarted; the coordinator then loads an empty
/// state and the same OffsetFetch-and-`judge` must report every partition's offset lost.
async fn loss_control(lab: &mut LabCluster, addresses: &[String], commits: &Commits, partition: i32) -> LossControl {
    let mut control = LossControl {
        verdict: Verdict::Error,
        wiped: Vec::new(),
        coordinator: None,
        fetched: Vec::new(),
        found: Vec::new(),
    };
    for broker in 1..=BROKERS {
        lab.kill(NodeId::Broker(broker));
    }
    for broker in 1..=BROKERS {
        let Some(dir) = lab.broker_data_dir(broker).map(|d| d.join(format!("{OFFSETS_TOPIC}-{partition}"))) else {
            continue;
        };
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => control.wiped.push(dir.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => control.found.push(format!("deleting {}: {e}", dir.display())),
        }
    }
    if control.wiped.is_empty() {
        control.found.push(format!("no {OFFSETS_TOPIC}-{partition} directory to delete"));
        return control;
    }
    let restarted = match lab.heal() {
        Ok(_) => lab.wait_brokers_alive(Duration::from_secs(60)).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = restarted {
        control.found.push(format!("restarting the brokers: {e}"));
        return control;
    }
    match fetch_from_coordinator(addresses, Duration::from_secs(60)).await {
        Ok((id, offsets)) => {
            control.found = judge(commits.acknowledged, commits.sent, &offsets);
            control.verdict = if control.found.is_empty() { Verdict::Missed } else { Verdict::Caught };
            control.coordinator = Some(id);
            control.fetched = offsets;
        }
        Err(e) => control.found.push(format!("no OffsetFetch answer: {e}")),
    }
    control
}

/// The human report of a run (`insync lab groups` without `--json`).
pub fn summary(r: &GroupOffsetsResult) -> String {
    use std::fmt::Write as _;
    let broker = |b: Option<i32>| b.map_or_else(|| "none".to_string(), |b| format!("broker {b}"));
    let mut out = format!("coordinator SIGKILL loses no committed offset: {:?}\n", r.verdict);
    if let Some(reason) = &r.inconclusive {
        let _ = writeln!(out, "  inconclusive: {reason}");
    }
    if let Some(killed) = r.killed {
        let named: Vec<String> = r.named_before_kill.iter().map(|n| format!("{}->{}", n.asked, n.named)).collect();
        let _ = writeln!(
            out,
            "  right before the kill: FindCoordinator {} (asked->named), leader of {OFFSETS_TOPIC} partition {} = {}; \
             killed broker {killed}",
            named.join(" "),
            r.offsets_partition.unwrap_or(-1),
            r.offsets_leader_before_kill.unwrap_or(-1),
        );
        let _ = writeln!(
            out,
            "  before the kill: {} commit(s) sent, {} acknowledged (by broker: {:?}), the last acknowledged offset {} \
             (by {})",
            r.sent_before_kill,
            r.acknowledged_before_kill,
            r.acknowledged_before_kill_by,
            r.last_acknowledged_before_kill,
            broker(r.last_acknowledged_before_kill_by)
        );
        let _ = writeln!(
            out,
            "  1. right after the failover, no commit since the kill: {} answered {} ms after the kill: {:?}",
            broker(r.failover_coordinator),
            r.failover_fetch_ms.unwrap_or(0),
            r.fetched_after_failover
        );
        let _ = writeln!(
            out,
            "  2. after {} more acknowledged commit(s) (by broker: {:?}): {} answered {:?} ({} sent, {} acknowledged in all)",
            r.acknowledged_after_kill,
            r.acknowledged_after_kill_by,
            broker(r.new_coordinator),
            r.fetched,
            r.attempted,
            r.acknowledged
        );
        let _ = writeln!(out, "  3. after healing: {:?}", r.fetched_after_heal);
    }
    for violation in &r.violations {
        let _ = writeln!(out, "  violation: {violation}");
    }
    if let Some(c) = &r.loss_control {
        let _ = writeln!(
            out,
            "  negative control (offsets partition deleted on {} broker(s), brokers restarted): {:?}; {} answered {:?}",
            c.wiped.len(),
            c.verdict,
            broker(c.coordinator),
            c.fetched
        );
        for found in &c.found {
            let _ = writeln!(out, "    control: {found}");
        }
    }
    out
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

    #[test]
    fn the_group_lives_where_kafka_puts_it() {
        // Java: "lab-group".hashCode() == 2080280127; "durable-offsets" hashes negative.
        assert_eq!(offsets_partition_for(GROUP, 12), 2_080_280_127 % 12);
        assert_eq!(offsets_partition_for("durable-offsets", 12), 393_397_938 % 12);
    }
}
