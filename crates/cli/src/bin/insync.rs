//! `insync`: the admin and consumer command line — topics (create, list, describe with
//! per-replica LEO and HW), a consumer that reads below the HW, consumer groups
//! (`group.rs` of this crate), and cluster status.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::{Args as ClapArgs, Parser, Subcommand};
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use insync_cli::positions::{reset_position, retry_offset};
use insync_cli::{init_logging, show_bytes, DEFAULT_BOOTSTRAP};
use insync_client::Cluster;
use insync_log::batch::{decode_records, iter_batches};
use insync_proto as pb;
use insync_types::ErrorCode;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "insync", version, about = "insync admin, consumer and cluster tools")]
struct Cli {
    /// Comma-separated broker addresses.
    #[arg(long, global = true, env = "INSYNC_BOOTSTRAP", default_value = DEFAULT_BOOTSTRAP)]
    bootstrap: String,
    /// One JSON object per line.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list and describe topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Read records (only below the high watermark, as Kafka consumers do).
    Consume(ConsumeArgs),
    /// Cluster-wide views.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Consumer groups: list, describe (members, offsets, lag), delete.
    #[command(subcommand)]
    Group(insync_cli::group::GroupCommand),
    /// Durability lab: launches its own cluster and shows what each acks level loses.
    Lab(insync_lab::LabArgs),
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        #[arg(long, default_value_t = 3)]
        replication_factor: i32,
        /// Topic override of min.insync.replicas (default: the cluster's).
        #[arg(long)]
        min_insync_replicas: Option<i32>,
        /// Kafka unclean.leader.election.enable for this topic.
        #[arg(long)]
        unclean_leader_election_enable: bool,
        /// A topic config override KEY=VALUE (repeatable), as kafka-topics --config:
        /// retention.ms, retention.bytes, segment.bytes, segment.ms, max.message.bytes,
        /// min.insync.replicas, unclean.leader.election.enable, cleanup.policy.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// Check everything (name, counts, placement, configs) without creating.
        #[arg(long)]
        validate_only: bool,
    },
    /// Delete the records of a partition before an offset (kafka-delete-records): its log
    /// start offset moves there on every replica; consumers below it get
    /// OFFSET_OUT_OF_RANGE and reset.
    DeleteRecords {
        name: String,
        #[arg(long)]
        partition: i32,
        /// Records before this offset go; -1: everything below the high watermark.
        #[arg(long, allow_negative_numbers = true)]
        before: i64,
    },
    /// Grow a topic to N partitions (kafka-topics --alter --partitions): only growth, the new
    /// partitions placed like creation. Keyed records may map to other partitions afterwards.
    AddPartitions {
        name: String,
        /// The new total number of partitions.
        #[arg(long)]
        partitions: i32,
        /// Check without changing anything.
        #[arg(long)]
        validate_only: bool,
    },
    /// Change a topic's config overrides at run time (kafka-configs --alter): brokers apply
    /// them without a restart. Unknown keys and invalid values are refused (INVALID_CONFIG).
    Alter {
        name: String,
        /// Set KEY=VALUE (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// Remove the override of KEY, back to the broker default (repeatable).
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
        /// Check without changing anything.
        #[arg(long)]
        validate_only: bool,
    },
    List,
    /// Delete a topic and every replica's log (kafka-topics --delete). Producers and
    /// consumers of it then get UNKNOWN_TOPIC_OR_PARTITION; a topic created again under the
    /// name is a new topic (a new topic id) and never sees the old records.
    Delete {
        name: String,
    },
    /// Leader, epochs, replicas, ISR, HW and every replica's LEO per partition.
    Describe {
        name: Option<String>,
        #[command(flatten)]
        filter: DescribeFilter,
    },
    /// Move leadership back to each partition's preferred replica (the first listed) where
    /// it is in the ISR, as kafka-leader-election --election-type PREFERRED. With no NAME,
    /// every partition whose preferred replica does not lead.
    ElectLeaders {
        name: Option<String>,
        /// Only these partitions of NAME (repeatable).
        #[arg(long = "partition", requires = "name")]
        partitions: Vec<i32>,
        /// The election type; only preferred elections are offered (unclean elections
        /// follow the topic's unclean.leader.election.enable).
        #[arg(long, required = true)]
        preferred: bool,
    },
}

/// kafka-topics' `--describe` report filters: with one, only the matching partitions are
/// listed, in one table across topics (Kafka `TopicCommand.DescribeOptions`).
#[derive(Debug, Clone, Copy, Default, ClapArgs)]
#[group(multiple = false)]
struct DescribeFilter {
    /// Only partitions whose ISR is smaller than their replica set.
    #[arg(long)]
    under_replicated_partitions: bool,
    /// Only partitions whose ISR is below the topic's min.insync.replicas, or without a leader
    /// (acks=all is refused there).
    #[arg(long)]
    under_min_isr_partitions: bool,
    /// Only partitions whose ISR equals the topic's min.insync.replicas (one more failure
    /// stops acks=all).
    #[arg(long)]
    at_min_isr_partitions: bool,
    /// Only partitions without a leader, or whose leader is not a live (unfenced) broker.
    #[arg(long)]
    unavailable_partitions: bool,
}

impl DescribeFilter {
    fn is_set(&self) -> bool {
        self.under_replicated_partitions
            || self.under_min_isr_partitions
            || self.at_min_isr_partitions
            || self.unavailable_partitions
    }

    fn flag(&self) -> &'static str {
        match () {
            _ if self.under_replicated_partitions => "--under-replicated-partitions",
            _ if self.under_min_isr_partitions => "--under-min-isr-partitions",
            _ if self.at_min_isr_partitions => "--at-min-isr-partitions",
            _ if self.unavailable_partitions => "--unavailable-partitions",
            _ => "",
        }
    }

    fn matches(&self, health: &PartitionHealth) -> bool {
        !self.is_set()
            || (self.under_replicated_partitions && health.under_replicated)
            || (self.under_min_isr_partitions && health.under_min_isr)
            || (self.at_min_isr_partitions && health.at_min_isr)
            || (self.unavailable_partitions && health.unavailable)
    }
}

/// A partition's state by kafka-topics' definitions (`TopicCommand.PartitionDescription`):
/// from the controller's metadata and the topic's configured min.insync.replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartitionHealth {
    under_replicated: bool,
    under_min_isr: bool,
    at_min_isr: bool,
    unavailable: bool,
}

impl PartitionHealth {
    fn of(p: &pb::PartitionMetadata, min_insync_replicas: i32, live_brokers: &[i32]) -> Self {
        let has_leader = p.leader >= 0;
        let isr = p.isr.len() as i32;
        PartitionHealth {
            under_replicated: p.isr.len() < p.replicas.len(),
            under_min_isr: !has_leader || isr < min_insync_replicas,
            at_min_isr: isr == min_insync_replicas,
            unavailable: !has_leader || !live_brokers.contains(&p.leader),
        }
    }
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Brokers (alive / fenced) and the active controller.
    Status,
    /// Live view of brokers and partitions (LEO, lag, ISR, HW) with a failover timeline;
    /// without a terminal, prints timeline events one per line.
    Watch {
        /// Print one snapshot and exit.
        #[arg(long)]
        once: bool,
        /// Refresh interval.
        #[arg(long, default_value_t = 250)]
        interval_ms: u64,
        /// Show only this topic's partitions.
        #[arg(long)]
        topic: Option<String>,
    },
}

#[derive(Debug, ClapArgs)]
struct ConsumeArgs {
    topic: String,
    #[arg(long)]
    partition: Option<i32>,
    /// Start at the earliest offset (default: the end, as Kafka's console consumer).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset.
    #[arg(long)]
    offset: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop after this long without a new record (default: run until interrupted).
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Kafka auto.offset.reset: where to go when the position is out of range (below the
    /// log start after retention or DeleteRecords, or past the end): earliest, latest, or
    /// none (fail). Default: earliest with --from-beginning, else latest (as the console
    /// consumer).
    #[arg(long, value_parser = ["earliest", "latest", "none"])]
    auto_offset_reset: Option<String>,
    /// Count records instead of printing them and end with one summary line, as Kafka's
    /// kafka-consumer-perf-test: MiB and records read, and their rates from the first fetch
    /// to the last record (give --max-messages or --idle-timeout-ms to end).
    #[arg(long)]
    perf: bool,
}

/// Prints one consumed record: its value, or a JSON object with `--json`.
fn print_record(cli: &Cli, partition: i32, leader_epoch: i32, record: &insync_log::batch::Record) {
    let value = record.value.as_deref().map(show_bytes);
    if cli.json {
        println!(
            "{}",
            json!({"partition": partition, "offset": record.offset, "key": record.key.as_deref().map(show_bytes),
                   "value": value, "leader_epoch": leader_epoch, "timestamp_ms": record.timestamp_ms})
        );
    } else {
        println!("{}", value.unwrap_or_default());
    }
}

#[tokio::main]
async fn main() {
    init_logging();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Topic(t) => topic(&cli, t).await,
        Command::Lab(lab) => insync_lab::run(lab.clone().with_json(cli.json)).await.and_then(|exit| exit.into_result()),
        Command::Consume(c) => consume(&cli, c).await,
        Command::Group(g) => insync_cli::group::run(&cli.bootstrap, cli.json, g).await,
        Command::Cluster(ClusterCommand::Status) => cluster_status(&cli).await,
        Command::Cluster(ClusterCommand::Watch { once, interval_ms, topic }) => {
            insync_cli::watch::run(insync_cli::watch::WatchOptions {
                bootstrap: cli.bootstrap.clone(),
                once: *once,
                interval: Duration::from_millis(*interval_ms),
                topic: topic.clone(),
                json: cli.json,
            })
            .await
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn topic(cli: &Cli, command: &TopicCommand) -> anyhow::Result<()> {
    let cluster = Cluster::new(&cli.bootstrap)?;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            min_insync_replicas,
            unclean_leader_election_enable,
            configs,
            validate_only,
        } => {
            let topic = cluster
                .create_topic(pb::CreateTopicRequest {
                    name: name.clone(),
                    partitions: *partitions,
                    replication_factor: *replication_factor,
                    min_insync_replicas: min_insync_replicas.unwrap_or(0),
                    unclean_leader_election_enable: *unclean_leader_election_enable,
                    configs: configs.iter().cloned().collect(),
                    validate_only: *validate_only,
                    internal: false,
                })
                .await?;
            print_created(cli, &topic, *validate_only);
        }
        TopicCommand::DeleteRecords { name, partition, before } => {
            let low_watermark = cluster.delete_records(name, *partition, *before).await?;
            if cli.json {
                println!("{}", json!({"topic": name, "partition": partition, "low_watermark": low_watermark}));
            } else {
                println!("{name}-{partition}: records before offset {low_watermark} deleted (log start offset {low_watermark})");
            }
        }
        TopicCommand::AddPartitions { name, partitions, validate_only } => {
            let request =
                pb::CreatePartitionsRequest { name: name.clone(), count: *partitions, validate_only: *validate_only };
            print_grown(cli, &cluster.create_partitions(request).await?, *validate_only);
        }
        TopicCommand::Alter { name, configs, delete_configs, validate_only } => {
            let request = pb::AlterTopicConfigsRequest {
                name: name.clone(),
                set: configs.iter().cloned().collect(),
                delete: delete_configs.clone(),
                replace: false,
                validate_only: *validate_only,
            };
            print_altered(cli, &cluster.alter_topic_configs(request).await?, *validate_only);
        }
        TopicCommand::List => {
            let metadata = cluster.refresh_metadata().await?;
            for t in &metadata.topics {
                if cli.json {
                    println!("{}", json!({"topic": t.name, "partitions": t.partitions.len()}));
                } else {
                    println!("{}", t.name);
                }
            }
        }
        TopicCommand::Describe { name, filter } => describe(cli, &cluster, name.as_deref(), filter).await?,
        TopicCommand::Delete { name } => {
            let topic_id = cluster.delete_topic(name).await?;
            if cli.json {
                println!("{}", json!({"deleted": name, "topic_id": topic_id}));
            } else {
                println!("deleted topic {name} (topic id {topic_id})");
            }
        }
        TopicCommand::ElectLeaders { name, partitions, preferred: _ } => {
            elect_leaders(cli, &cluster, name.as_deref(), partitions).await?
        }
    }
    Ok(())
}

async fn elect_leaders(cli: &Cli, cluster: &Cluster, name: Option<&str>, partitions: &[i32]) -> anyhow::Result<()> {
    let request =
        pb::ElectLeadersRequest { topic: name.unwrap_or_default().to_string(), partitions: partitions.to_vec() };
    let results = cluster.elect_leaders(request).await?;
    if results.is_empty() && !cli.json {
        println!("every partition is led by its preferred replica; no election needed");
    }
    for r in &results {
        let code = ErrorCode::from_code(r.error_code);
        if cli.json {
            println!(
                "{}",
                json!({"topic": r.topic, "partition": r.partition, "error": code.name(),
                       "message": r.error_message, "leader": r.leader})
            );
        } else if code == ErrorCode::NONE {
            println!("{}-{}: elected preferred leader {}", r.topic, r.partition, r.leader);
        } else {
            println!("{}-{}: {} ({}); leader stays {}", r.topic, r.partition, code.name(), r.error_message, r.leader);
        }
    }
    Ok(())
}

fn print_grown(cli: &Cli, topic: &pb::TopicMetadata, validate_only: bool) {
    if cli.json {
        println!(
            "{}",
            json!({"topic": topic.name, "partitions": topic.partitions.len(), "validate_only": validate_only})
        );
        return;
    }
    let verb = if validate_only { "valid: topic would have" } else { "topic now has" };
    println!("{verb} {} partition(s): {}", topic.partitions.len(), topic.name);
    for p in &topic.partitions {
        println!("  partition {}: leader {} replicas {:?}", p.partition, p.leader, p.replicas);
    }
}

fn print_altered(cli: &Cli, topic: &pb::TopicMetadata, validate_only: bool) {
    let shown = format_configs(&topic.configs);
    if cli.json {
        println!("{}", json!({"topic": topic.name, "configs": topic.configs, "validate_only": validate_only}));
    } else if validate_only {
        println!("valid: topic {} would have configs {shown}", topic.name);
    } else {
        println!("altered topic {}: configs now {shown}", topic.name);
    }
}

fn print_created(cli: &Cli, topic: &pb::TopicMetadata, validate_only: bool) {
    if cli.json {
        println!(
            "{}",
            json!({"created": topic.name, "topic_id": topic.topic_id, "partitions": topic.partitions.len(),
                   "configs": topic.configs, "validate_only": validate_only})
        );
        return;
    }
    let verb = if validate_only { "valid: would create" } else { "created" };
    println!(
        "{verb} topic {} with {} partition(s), configs {}",
        topic.name,
        topic.partitions.len(),
        format_configs(&topic.configs)
    );
    for p in &topic.partitions {
        println!("  partition {}: leader {} replicas {:?}", p.partition, p.leader, p.replicas);
    }
}

/// `k=v,k=v` in key order, or "(broker defaults)".
fn format_configs(configs: &std::collections::HashMap<String, String>) -> String {
    let sorted: BTreeMap<&String, &String> = configs.iter().collect();
    if sorted.is_empty() {
        return "(broker defaults)".to_string();
    }
    sorted.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// A `KEY=VALUE` argument.
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.trim().to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn list(ids: &[i32]) -> String {
    ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// Each broker's own report of the replicas it hosts: (topic, partition) → broker → description.
type ReplicaReports = BTreeMap<(String, i32), BTreeMap<i32, pb::ReplicaDescription>>;

const DESCRIBE_COLUMNS: [&str; 8] =
    ["Partition", "Leader", "Epoch", "Replicas", "ISR", "HW", "LEO per replica", "Note"];

async fn describe(cli: &Cli, cluster: &Cluster, name: Option<&str>, filter: &DescribeFilter) -> anyhow::Result<()> {
    let metadata = cluster.refresh_metadata().await?;
    let topics: Vec<&pb::TopicMetadata> = metadata.topics.iter().filter(|t| name.is_none_or(|n| n == t.name)).collect();
    if let Some(n) = name {
        anyhow::ensure!(!topics.is_empty(), "{}: unknown topic '{n}'", ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
    }
    let wanted: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    let mut replicas: ReplicaReports = BTreeMap::new();
    for report in cluster.describe_replicas(&wanted).await {
        for r in report.replicas {
            replicas.entry((r.topic.clone(), r.partition)).or_default().insert(report.broker_id, r);
        }
    }
    let live_brokers: Vec<i32> = metadata.brokers.iter().filter(|b| !b.fenced).map(|b| b.id).collect();
    // With a filter, the matches of every topic go in one table (kafka-topics likewise prints
    // only partition lines then, each naming its topic).
    let mut matches = new_table(std::iter::once("Topic").chain(DESCRIBE_COLUMNS));
    let mut matched = 0usize;
    for t in topics {
        let min_isr =
            if t.min_insync_replicas > 0 { t.min_insync_replicas } else { metadata.default_min_insync_replicas };
        let rf = t.partitions.first().map(|p| p.replicas.len()).unwrap_or(0);
        if !cli.json && !filter.is_set() {
            println!(
                "Topic: {}  TopicId: {}  Partitions: {}  ReplicationFactor: {}  min.insync.replicas: {}{}",
                t.name,
                if t.topic_id.is_empty() { "-" } else { &t.topic_id },
                t.partitions.len(),
                rf,
                min_isr,
                if t.unclean_leader_election_enable { "  unclean.leader.election.enable: true" } else { "" }
            );
            println!("Configs: {}", format_configs(&t.configs));
        }
        let mut table = new_table(DESCRIBE_COLUMNS);
        for p in &t.partitions {
            let health = PartitionHealth::of(p, min_isr, &live_brokers);
            if !filter.matches(&health) {
                continue;
            }
            matched += 1;
            let row = DescribeRow::new(t, p, min_isr, health, replicas.get(&(t.name.clone(), p.partition)));
            if cli.json {
                println!("{}", row.json());
            } else if filter.is_set() {
                matches.add_row(std::iter::once(t.name.clone()).chain(row.cells()));
            } else {
                table.add_row(row.cells());
            }
        }
        if !cli.json && !filter.is_set() {
            println!("{table}");
        }
    }
    if filter.is_set() && !cli.json {
        if matched == 0 {
            // On stderr, so scripts that count stdout lines count nothing, as with kafka-topics.
            eprintln!("no partition matches {}", filter.flag());
        } else {
            println!("{matches}");
        }
    }
    Ok(())
}

/// One partition as `topic describe` shows it: the controller's metadata joined with what
/// the brokers report of their replicas (the leader's HW, every replica's LEO).
struct DescribeRow<'a> {
    topic: &'a pb::TopicMetadata,
    partition: &'a pb::PartitionMetadata,
    min_isr: i32,
    health: PartitionHealth,
    /// The leader's HW; `None` when the leader did not report.
    high_watermark: Option<i64>,
    /// Each replica's LEO, in assignment order; `None` for a replica that did not report.
    log_end_offsets: Vec<(i32, Option<i64>)>,
    /// Each replica's log start offset, likewise (retention and DeleteRecords move it).
    log_start_offsets: Vec<(i32, Option<i64>)>,
    notes: Vec<String>,
}

impl<'a> DescribeRow<'a> {
    fn new(
        topic: &'a pb::TopicMetadata,
        p: &'a pb::PartitionMetadata,
        min_isr: i32,
        health: PartitionHealth,
        reports: Option<&BTreeMap<i32, pb::ReplicaDescription>>,
    ) -> Self {
        let leader_report = reports.and_then(|r| r.get(&p.leader));
        let log_end_offsets =
            p.replicas.iter().map(|b| (*b, reports.and_then(|r| r.get(b)).map(|r| r.log_end_offset))).collect();
        let log_start_offsets =
            p.replicas.iter().map(|b| (*b, reports.and_then(|r| r.get(b)).map(|r| r.log_start_offset))).collect();
        let mut notes = Vec::new();
        if p.leader < 0 {
            notes.push("OFFLINE: no leader".to_string());
        }
        if p.unclean_elected {
            notes.push("UNCLEAN leader election: acknowledged records may be lost".to_string());
        }
        if let Some(r) = leader_report {
            if !r.note.is_empty() {
                notes.push(r.note.clone());
            }
        }
        if p.isr.len() < p.replicas.len() {
            notes.push("under-replicated".into());
        }
        let high_watermark = leader_report.map(|r| r.high_watermark);
        DescribeRow { topic, partition: p, min_isr, health, high_watermark, log_end_offsets, log_start_offsets, notes }
    }

    fn json(&self) -> serde_json::Value {
        let (t, p, health) = (self.topic, self.partition, &self.health);
        let leo_map: serde_json::Map<String, serde_json::Value> =
            self.log_end_offsets.iter().map(|(b, l)| (b.to_string(), json!(l))).collect();
        let lso_map: serde_json::Map<String, serde_json::Value> =
            self.log_start_offsets.iter().map(|(b, l)| (b.to_string(), json!(l))).collect();
        json!({"topic": t.name, "topic_id": t.topic_id, "configs": t.configs, "partition": p.partition, "leader": p.leader, "leader_epoch": p.leader_epoch,
               "partition_epoch": p.partition_epoch, "replicas": p.replicas, "isr": p.isr,
               "high_watermark": self.high_watermark, "log_end_offsets": leo_map, "log_start_offsets": lso_map, "min_insync_replicas": self.min_isr,
               "unclean_elected": p.unclean_elected, "notes": self.notes,
               "under_replicated": health.under_replicated, "under_min_isr": health.under_min_isr,
               "at_min_isr": health.at_min_isr, "unavailable": health.unavailable})
    }

    /// The table cells, in `DESCRIBE_COLUMNS` order.
    fn cells(&self) -> Vec<String> {
        let p = self.partition;
        let leo_text = self
            .log_end_offsets
            .iter()
            .map(|(b, l)| format!("{b}:{}", l.map(|v| v.to_string()).unwrap_or_else(|| "?".into())))
            .collect::<Vec<_>>()
            .join(" ");
        vec![
            p.partition.to_string(),
            if p.leader < 0 { "none".into() } else { p.leader.to_string() },
            p.leader_epoch.to_string(),
            list(&p.replicas),
            list(&p.isr),
            self.high_watermark.map(|h| h.to_string()).unwrap_or_else(|| "?".into()),
            leo_text,
            self.notes.join("; "),
        ]
    }
}

fn new_table<'a>(header: impl IntoIterator<Item = &'a str>) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header(header);
    table
}

async fn cluster_status(cli: &Cli) -> anyhow::Result<()> {
    let cluster = Cluster::new(&cli.bootstrap)?;
    let metadata = cluster.refresh_metadata().await?;
    if cli.json {
        println!(
            "{}",
            json!({"controller": {"id": metadata.controller_id, "address": metadata.controller_address},
                   "metadata_version": metadata.version})
        );
        for b in &metadata.brokers {
            println!(
                "{}",
                json!({"broker": b.id, "address": b.address, "status": broker_status(b), "fenced": b.fenced,
                       "in_controlled_shutdown": b.in_controlled_shutdown})
            );
        }
        return Ok(());
    }
    println!(
        "active controller: {} ({})  metadata version {}",
        metadata.controller_id,
        if metadata.controller_address.is_empty() { "unknown" } else { &metadata.controller_address },
        metadata.version
    );
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header(vec!["Broker", "Address", "Status"]);
    for b in &metadata.brokers {
        table.add_row(vec![b.id.to_string(), b.address.clone(), broker_status(b).to_string()]);
    }
    println!("{table}");
    Ok(())
}

fn broker_status(b: &pb::BrokerMetadata) -> &'static str {
    if b.fenced {
        "fenced"
    } else if b.in_controlled_shutdown {
        "shutting down"
    } else {
        "alive"
    }
}

/// The consumer's auto.offset.reset: as given, else earliest with --from-beginning and
/// latest otherwise (as the console consumer).
fn reset_policy(args: &ConsumeArgs) -> &str {
    let default = if args.from_beginning { "earliest" } else { "latest" };
    args.auto_offset_reset.as_deref().unwrap_or(default)
}

async fn consume(cli: &Cli, args: &ConsumeArgs) -> anyhow::Result<()> {
    let cluster = Cluster::new(&cli.bootstrap)?;
    let count = cluster.partition_count(&args.topic).await?;
    let partitions: Vec<i32> = match args.partition {
        Some(p) => {
            anyhow::ensure!(
                p >= 0 && p < count,
                "{}: topic '{}' has no partition {p} (it has {count})",
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                args.topic
            );
            vec![p]
        }
        None => (0..count).collect(),
    };
    let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
    for &p in &partitions {
        let start = match (args.offset, args.from_beginning) {
            (Some(o), _) => o,
            (None, true) => retry_offset(&cluster, &args.topic, p, -2).await?,
            (None, false) => retry_offset(&cluster, &args.topic, p, -1).await?,
        };
        offsets.insert(p, start);
    }
    if args.perf {
        let run = insync_cli::consume_perf::PerfRun {
            topic: args.topic.clone(),
            starts: offsets,
            max_messages: args.max_messages,
            idle_timeout: args.idle_timeout_ms.map(Duration::from_millis),
            auto_offset_reset: reset_policy(args).to_string(),
            json: cli.json,
        };
        return insync_cli::consume_perf::run(cluster, run).await;
    }
    let mut printed = 0u64;
    let mut last_progress = Instant::now();
    let idle = args.idle_timeout_ms.map(Duration::from_millis);
    let max_wait = Duration::from_millis(idle.map(|d| d.as_millis() as u64).unwrap_or(500).clamp(10, 500));
    loop {
        let mut got_any = false;
        for &p in &partitions {
            let offset = offsets[&p];
            let response =
                match cluster.fetch(&args.topic, p, offset, max_wait / partitions.len().max(1) as u32, 1 << 20).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!("fetch {}-{p}: {e}", args.topic);
                        let _ = cluster.refresh_metadata().await;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
            match ErrorCode::from_code(response.error_code) {
                ErrorCode::NONE => {}
                ErrorCode::OFFSET_OUT_OF_RANGE => {
                    offsets.insert(
                        p,
                        reset_position(&cluster, &args.topic, p, offset, &response, reset_policy(args)).await?,
                    );
                    continue;
                }
                other => {
                    tracing::debug!("fetch {}-{p}: {other}", args.topic);
                    let _ = cluster.refresh_metadata().await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            for batch in iter_batches(&response.records) {
                let (header, bytes) = batch?;
                for record in decode_records(bytes)? {
                    if record.offset < offset {
                        continue; // the batch began before the requested offset
                    }
                    got_any = true;
                    offsets.insert(p, record.offset + 1);
                    print_record(cli, p, header.partition_leader_epoch, &record);
                    printed += 1;
                    if args.max_messages.is_some_and(|m| printed >= m) {
                        return Ok(());
                    }
                }
            }
        }
        if got_any {
            last_progress = Instant::now();
        } else if idle.is_some_and(|d| last_progress.elapsed() >= d) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(leader: i32, replicas: &[i32], isr: &[i32]) -> pb::PartitionMetadata {
        pb::PartitionMetadata { leader, replicas: replicas.to_vec(), isr: isr.to_vec(), ..Default::default() }
    }

    #[test]
    fn partition_health_uses_kafka_topics_definitions() {
        let live = [1, 2, 3];
        let healthy = PartitionHealth::of(&partition(1, &[1, 2, 3], &[1, 2, 3]), 2, &live);
        assert_eq!(
            healthy,
            PartitionHealth { under_replicated: false, under_min_isr: false, at_min_isr: false, unavailable: false }
        );
        let at_min = PartitionHealth::of(&partition(1, &[1, 2, 3], &[1, 3]), 2, &live);
        assert!(at_min.under_replicated && at_min.at_min_isr && !at_min.under_min_isr);
        let under_min = PartitionHealth::of(&partition(1, &[1, 2, 3], &[1]), 2, &live);
        assert!(under_min.under_min_isr && !under_min.at_min_isr && !under_min.unavailable);
        // No leader: under min ISR and unavailable whatever the ISR says (TopicCommand).
        let offline = PartitionHealth::of(&partition(-1, &[1, 2, 3], &[2, 3]), 2, &live);
        assert!(offline.under_min_isr && offline.unavailable && offline.at_min_isr);
        // A leader that is not a live broker (fenced, metadata not yet moved on) is unavailable.
        let fenced_leader = PartitionHealth::of(&partition(3, &[1, 2, 3], &[1, 2, 3]), 2, &[1, 2]);
        assert!(fenced_leader.unavailable && !fenced_leader.under_replicated);
    }

    #[test]
    fn describe_filters_are_exclusive_and_select_matching_partitions() {
        let parse = |args: &[&str]| Cli::try_parse_from(["insync", "topic", "describe"].iter().chain(args));
        let filter_of = |cli: Cli| match cli.command {
            Command::Topic(TopicCommand::Describe { filter, .. }) => filter,
            _ => unreachable!(),
        };
        let at_min =
            PartitionHealth { under_replicated: true, under_min_isr: false, at_min_isr: true, unavailable: false };
        let none = filter_of(parse(&[]).unwrap());
        assert!(!none.is_set() && none.matches(&at_min));
        let urp = filter_of(parse(&["t", "--under-replicated-partitions"]).unwrap());
        assert!(urp.matches(&at_min) && urp.flag() == "--under-replicated-partitions");
        assert!(!filter_of(parse(&["--under-min-isr-partitions"]).unwrap()).matches(&at_min));
        assert!(filter_of(parse(&["--at-min-isr-partitions"]).unwrap()).matches(&at_min));
        assert!(!filter_of(parse(&["--unavailable-partitions"]).unwrap()).matches(&at_min));
        assert!(parse(&["--under-replicated-partitions", "--unavailable-partitions"]).is_err());
    }
}
