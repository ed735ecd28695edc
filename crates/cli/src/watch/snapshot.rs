//! One observation of the cluster for `insync cluster watch`: the controller's metadata
//! (brokers, leaders, ISR) joined with every broker's own DescribeReplicas report (LEO, HW).
//! Pure data and pure rendering (plain tables, JSON); `collect.rs` does the I/O that fills
//! it, `timeline.rs` diffs successive snapshots, `tui.rs` draws them.
use std::collections::BTreeMap;

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use insync_proto as pb;
use serde::Serialize;
use serde_json::json;

/// A broker counts as silent after two missed heartbeats (docs/design.md "Defaults": one every 500 ms).
/// The controller fences only after the 3000 ms session timeout; this shows the gap.
pub const HEARTBEAT_LOST_AFTER_MS: i64 = 2 * 500;

/// Where the broker and partition metadata of a snapshot came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetadataSource {
    /// The active controller itself: fencing and heartbeat ages are current.
    Controller { address: String },
    /// A broker's cached copy, because the controller did not answer: it may lag behind,
    /// and heartbeat ages are unknown.
    BrokerCache { reason: String },
}

impl MetadataSource {
    pub fn is_controller(&self) -> bool {
        matches!(self, MetadataSource::Controller { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerView {
    pub id: i32,
    pub address: String,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
    /// From the active controller's in-memory tracker; None when unknown (metadata from a
    /// broker cache, or a broker the controller has not heard from since it became active).
    pub last_heartbeat_ms_ago: Option<i64>,
    /// Why this broker did not answer DescribeReplicas this round; None when it did.
    pub describe_error: Option<String>,
}

impl BrokerView {
    /// Silent: past two heartbeat intervals, or not answering at all (a SIGKILLed broker
    /// refuses connections at once, before the controller notices anything).
    pub fn heartbeat_lost(&self) -> bool {
        self.last_heartbeat_ms_ago.is_some_and(|ms| ms > HEARTBEAT_LOST_AFTER_MS) || self.describe_error.is_some()
    }

    pub fn status(&self) -> &'static str {
        if self.fenced {
            "fenced"
        } else if self.in_controlled_shutdown {
            "shutting down"
        } else if self.heartbeat_lost() {
            "heartbeat lost"
        } else {
            "alive"
        }
    }

    pub fn heartbeat_text(&self) -> String {
        match self.last_heartbeat_ms_ago {
            Some(ms) => format!("{ms} ms ago"),
            None => "?".into(),
        }
    }
}

/// One replica of a partition as the snapshot saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    pub broker: i32,
    /// The broker's own report; if it did not answer, the leader's tracking of it (where
    /// it stood when it last fetched), so a dead follower's growing lag stays visible.
    pub log_end_offset: Option<i64>,
    /// Leader LEO − this replica's LEO.
    pub lag: Option<i64>,
    /// From the broker's own report only.
    pub high_watermark: Option<i64>,
    /// The broker's own report says it leads, at `reported_leader_epoch`.
    pub reports_leader: bool,
    pub reported_leader_epoch: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    /// -1: offline.
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The leader's own HW (the one consumers read below); None if it did not answer.
    pub high_watermark: Option<i64>,
    /// In assignment order.
    pub replica_states: Vec<ReplicaView>,
    pub notes: Vec<String>,
}

impl PartitionView {
    /// Joins one partition's metadata with its replicas' own reports (`own`: broker →
    /// report); `min_isr` is the topic's effective min.insync.replicas, for the notes.
    fn build(
        topic: &str,
        p: &pb::PartitionMetadata,
        min_isr: i32,
        own: Option<&BTreeMap<i32, &pb::ReplicaDescription>>,
    ) -> PartitionView {
        let leader_report = own.and_then(|r| r.get(&p.leader)).copied().filter(|r| r.is_leader);
        let leader_leo = leader_report.map(|r| r.log_end_offset);
        let replica_states = p
            .replicas
            .iter()
            .map(|&broker| {
                let report = own.and_then(|r| r.get(&broker));
                let tracked = leader_report
                    .and_then(|l| l.followers.iter().find(|f| f.broker_id == broker))
                    .map(|f| f.log_end_offset)
                    // A new leader knows nothing of a follower until its first fetch: -1.
                    .filter(|leo| *leo >= 0);
                let log_end_offset = report.map(|r| r.log_end_offset).or(tracked);
                ReplicaView {
                    broker,
                    log_end_offset,
                    // Reports are taken a few ms apart, so a follower can look ahead of
                    // the leader under load; that is timing, not lag.
                    lag: leader_leo.zip(log_end_offset).map(|(l, r)| (l - r).max(0)),
                    high_watermark: report.map(|r| r.high_watermark),
                    reports_leader: report.is_some_and(|r| r.is_leader),
                    reported_leader_epoch: report.map(|r| r.leader_epoch),
                }
            })
            .collect();
        PartitionView {
            topic: topic.to_string(),
            partition: p.partition,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            high_watermark: leader_report.map(|r| r.high_watermark),
            replica_states,
            notes: partition_notes(p, leader_report, min_isr),
        }
    }

    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }

    pub fn replica(&self, broker: i32) -> Option<&ReplicaView> {
        self.replica_states.iter().find(|r| r.broker == broker)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Wall-clock milliseconds when the round started.
    pub at_ms: i64,
    pub source: MetadataSource,
    pub metadata_version: u64,
    pub controller_id: i32,
    pub controller_address: String,
    pub brokers: Vec<BrokerView>,
    pub partitions: Vec<PartitionView>,
}

/// The brokers of `metadata`, with whether each answered DescribeReplicas; heartbeat ages
/// only when the metadata came from the controller itself.
fn broker_views(metadata: &pb::ClusterMetadata, reports: &Reports, from_controller: bool) -> Vec<BrokerView> {
    metadata
        .brokers
        .iter()
        .map(|b| BrokerView {
            id: b.id,
            address: b.address.clone(),
            fenced: b.fenced,
            in_controlled_shutdown: b.in_controlled_shutdown,
            // A broker-cached copy carries whatever age the controller stamped when it
            // was sent: stale by an unknown amount, so unknown.
            last_heartbeat_ms_ago: (from_controller && b.last_heartbeat_ms_ago >= 0).then_some(b.last_heartbeat_ms_ago),
            describe_error: match reports.get(&b.id) {
                Some(Ok(_)) => None,
                Some(Err(e)) => Some(e.clone()),
                None => Some("not asked".into()),
            },
        })
        .collect()
}

/// What is wrong with a partition, worst first: offline, a silent leader, an unclean
/// election, the leader's own note (else ISR below min.insync.replicas), under-replication.
fn partition_notes(
    p: &pb::PartitionMetadata,
    leader_report: Option<&pb::ReplicaDescription>,
    min_isr: i32,
) -> Vec<String> {
    let mut notes = Vec::new();
    if p.leader < 0 {
        notes.push("OFFLINE: no leader".to_string());
    }
    if p.leader >= 0 && leader_report.is_none() {
        notes.push(format!("leader {} not answering", p.leader));
    }
    if p.unclean_elected {
        notes.push("UNCLEAN election".to_string());
    }
    if let Some(r) = leader_report.filter(|r| !r.note.is_empty()) {
        notes.push(r.note.clone());
    } else if (p.isr.len() as i32) < min_isr.min(p.replicas.len() as i32) {
        notes.push(format!("ISR below min.insync.replicas {min_isr}"));
    }
    if p.isr.len() < p.replicas.len() && !notes.iter().any(|n| n.contains("under-replicated")) {
        notes.push("under-replicated".into());
    }
    notes
}

/// DescribeReplicas outcome per broker id: its report, or why there is none.
pub type Reports = BTreeMap<i32, Result<pb::DescribeReplicasResponse, String>>;

impl Snapshot {
    /// Joins metadata and reports. `topic`: keep only that topic's partitions.
    pub fn build(
        at_ms: i64,
        source: MetadataSource,
        metadata: &pb::ClusterMetadata,
        reports: &Reports,
        topic: Option<&str>,
    ) -> Snapshot {
        let brokers = broker_views(metadata, reports, source.is_controller());
        // (topic, partition) → broker → that broker's description of its replica.
        let mut by_partition: BTreeMap<(&str, i32), BTreeMap<i32, &pb::ReplicaDescription>> = BTreeMap::new();
        for (broker, report) in reports {
            if let Ok(report) = report {
                for r in &report.replicas {
                    by_partition.entry((r.topic.as_str(), r.partition)).or_default().insert(*broker, r);
                }
            }
        }
        let min_isr_default = metadata.default_min_insync_replicas;
        let mut partitions = Vec::new();
        for t in metadata.topics.iter().filter(|t| topic.is_none_or(|name| name == t.name)) {
            let min_isr = if t.min_insync_replicas > 0 { t.min_insync_replicas } else { min_isr_default };
            for p in &t.partitions {
                let own = by_partition.get(&(t.name.as_str(), p.partition));
                partitions.push(PartitionView::build(&t.name, p, min_isr, own));
            }
        }
        Snapshot {
            at_ms,
            source,
            metadata_version: metadata.version,
            controller_id: metadata.controller_id,
            controller_address: metadata.controller_address.clone(),
            brokers,
            partitions,
        }
    }

    /// "active controller 1 (127.0.0.1:9191), metadata version 42 from the controller".
    pub fn header(&self) -> String {
        let controller = if self.controller_id < 0 {
            "active controller unknown (election in progress?)".to_string()
        } else {
            format!("active controller {} ({})", self.controller_id, self.controller_address)
        };
        let source = match &self.source {
            MetadataSource::Controller { .. } => "from the controller".to_string(),
            MetadataSource::BrokerCache { reason } => format!("from a broker's cache: {reason}"),
        };
        format!("{controller}, metadata version {} {source}", self.metadata_version)
    }

    /// The `--once` text: a header line and two aligned tables.
    pub fn render_plain(&self) -> String {
        let mut brokers = Table::new();
        brokers.load_preset(UTF8_BORDERS_ONLY);
        brokers.set_header(vec!["Broker", "Address", "Status", "Last heartbeat", "DescribeReplicas"]);
        for b in &self.brokers {
            brokers.add_row(vec![
                b.id.to_string(),
                b.address.clone(),
                b.status().to_string(),
                b.heartbeat_text(),
                b.describe_error.clone().unwrap_or_else(|| "ok".into()),
            ]);
        }
        let mut partitions = Table::new();
        partitions.load_preset(UTF8_BORDERS_ONLY);
        partitions.set_header(vec![
            "Partition",
            "Leader",
            "Epoch",
            "Replicas",
            "ISR",
            "HW",
            "LEO (lag) per replica",
            "Note",
        ]);
        for p in &self.partitions {
            partitions.add_row(vec![
                p.name(),
                leader_text(p.leader),
                p.leader_epoch.to_string(),
                ids(&p.replicas),
                ids(&p.isr),
                opt(p.high_watermark),
                p.replica_states.iter().map(replica_text).collect::<Vec<_>>().join(" "),
                p.notes.join("; "),
            ]);
        }
        format!("{}\n{brokers}\n{partitions}\n", self.header())
    }

    /// The `--once --json` lines: the controller, then one object per broker and partition.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        let mut out = vec![json!({
            "controller": {"id": self.controller_id, "address": self.controller_address},
            "metadata_version": self.metadata_version,
            "metadata_source": self.source,
            "time_ms": self.at_ms,
        })];
        for b in &self.brokers {
            out.push(json!({
                "broker": b.id, "address": b.address, "status": b.status(), "fenced": b.fenced,
                "in_controlled_shutdown": b.in_controlled_shutdown,
                "last_heartbeat_ms_ago": b.last_heartbeat_ms_ago, "describe_error": b.describe_error,
            }));
        }
        for p in &self.partitions {
            let replicas: Vec<serde_json::Value> = p
                .replica_states
                .iter()
                .map(|r| json!({"broker": r.broker, "log_end_offset": r.log_end_offset, "lag": r.lag}))
                .collect();
            out.push(json!({
                "topic": p.topic, "partition": p.partition, "leader": p.leader, "leader_epoch": p.leader_epoch,
                "partition_epoch": p.partition_epoch, "replicas": p.replicas, "isr": p.isr,
                "high_watermark": p.high_watermark, "replica_states": replicas, "notes": p.notes,
            }));
        }
        out
    }
}

pub fn ids(list: &[i32]) -> String {
    list.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

pub fn leader_text(leader: i32) -> String {
    if leader < 0 {
        "none".into()
    } else {
        leader.to_string()
    }
}

pub fn opt(value: Option<i64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
}

/// "2:1500(12)": broker 2 at LEO 1500, 12 behind the leader; "3:?" when unknown.
pub fn replica_text(r: &ReplicaView) -> String {
    match (r.log_end_offset, r.lag) {
        (Some(leo), Some(lag)) => format!("{}:{leo}({lag})", r.broker),
        (Some(leo), None) => format!("{}:{leo}", r.broker),
        (None, _) => format!("{}:?", r.broker),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn metadata(leader: i32, epoch: i32, isr: &[i32], fenced: &[i32]) -> pb::ClusterMetadata {
        pb::ClusterMetadata {
            version: 7,
            controller_id: 1,
            controller_address: "127.0.0.1:9191".into(),
            brokers: (1..=3)
                .map(|id| pb::BrokerMetadata {
                    id,
                    address: format!("127.0.0.1:{}", 9091 + id),
                    fenced: fenced.contains(&id),
                    in_controlled_shutdown: false,
                    incarnation: 1,
                    last_heartbeat_ms_ago: 100,
                    kafka_address: String::new(),
                    broker_epoch: 1,
                })
                .collect(),
            topics: vec![pb::TopicMetadata {
                name: "demo".into(),
                partitions: vec![pb::PartitionMetadata {
                    partition: 0,
                    leader,
                    leader_epoch: epoch,
                    partition_epoch: epoch,
                    replicas: vec![1, 2, 3],
                    isr: isr.to_vec(),
                    unclean_elected: false,
                }],
                min_insync_replicas: 2,
                unclean_leader_election_enable: false,
                ..Default::default()
            }],
            default_min_insync_replicas: 1,
        }
    }

    pub fn report(broker: i32, leader: bool, epoch: i32, leo: i64, hw: i64) -> pb::DescribeReplicasResponse {
        pb::DescribeReplicasResponse {
            broker_id: broker,
            replicas: vec![pb::ReplicaDescription {
                topic: "demo".into(),
                partition: 0,
                is_leader: leader,
                leader_epoch: epoch,
                log_start_offset: 0,
                log_end_offset: leo,
                high_watermark: hw,
                followers: if leader {
                    vec![
                        pb::FollowerDescription { broker_id: 2, log_end_offset: -1, last_caught_up_ms_ago: 5 },
                        pb::FollowerDescription { broker_id: 3, log_end_offset: 90, last_caught_up_ms_ago: 5 },
                    ]
                } else {
                    vec![]
                },
                isr: vec![],
                maximal_isr: vec![],
                effective_min_isr: 2,
                note: String::new(),
            }],
        }
    }

    #[test]
    fn joins_metadata_with_each_brokers_own_report_and_computes_lag() {
        let mut reports = Reports::new();
        reports.insert(1, Ok(report(1, true, 0, 100, 95)));
        reports.insert(2, Ok(report(2, false, 0, 97, 95)));
        reports.insert(3, Err("connection refused".into()));
        let unknown = Snapshot::build(
            1_000,
            MetadataSource::Controller { address: String::new() },
            &metadata(1, 0, &[1, 2, 3], &[]),
            &[(1, Ok(report(1, true, 0, 100, 95)))].into_iter().collect(),
            None,
        );
        assert_eq!(unknown.partitions[0].replica_states[1].log_end_offset, None, "-1 from the leader is unknown");
        let source = MetadataSource::Controller { address: "127.0.0.1:9191".into() };
        let s = Snapshot::build(1_000, source, &metadata(1, 0, &[1, 2, 3], &[]), &reports, None);
        let p = &s.partitions[0];
        assert_eq!(p.high_watermark, Some(95));
        let leos: Vec<_> = p.replica_states.iter().map(|r| (r.broker, r.log_end_offset, r.lag)).collect();
        // Broker 3 did not answer: the leader's tracking of it stands in.
        assert_eq!(leos, vec![(1, Some(100), Some(0)), (2, Some(97), Some(3)), (3, Some(90), Some(10))]);
        assert_eq!(p.replica_states.iter().map(replica_text).collect::<Vec<_>>(), ["1:100(0)", "2:97(3)", "3:90(10)"]);
        assert_eq!(s.brokers[2].status(), "heartbeat lost");
        assert_eq!(s.brokers[0].last_heartbeat_ms_ago, Some(100));
        let text = s.render_plain();
        assert!(text.starts_with("active controller 1 (127.0.0.1:9191), metadata version 7 from the controller"));
        assert!(text.contains("demo-0"), "{text}");
        assert_eq!(s.json_lines().len(), 1 + 3 + 1);
    }

    #[test]
    fn a_broker_cache_hides_heartbeat_ages_and_the_topic_filter_applies() {
        let source = MetadataSource::BrokerCache { reason: "controller unreachable".into() };
        let s = Snapshot::build(1_000, source, &metadata(-1, 1, &[1], &[1]), &Reports::new(), Some("other"));
        assert!(s.partitions.is_empty());
        assert!(s.brokers.iter().all(|b| b.last_heartbeat_ms_ago.is_none()));
        assert_eq!(s.brokers[0].status(), "fenced");
        let s = Snapshot::build(
            1_000,
            MetadataSource::BrokerCache { reason: String::new() },
            &metadata(-1, 1, &[1], &[1]),
            &Reports::new(),
            Some("demo"),
        );
        assert_eq!(s.partitions[0].notes[0], "OFFLINE: no leader");
        let s = Snapshot::build(
            1_000,
            MetadataSource::Controller { address: String::new() },
            &metadata(2, 1, &[1, 2], &[]),
            &Reports::new(),
            None,
        );
        assert_eq!(s.partitions[0].notes[0], "leader 2 not answering");
        assert_eq!(s.partitions[0].high_watermark, None);
    }
}
