//! `insync group list | describe GROUP | delete GROUP`: consumer groups, as
//! `kafka-consumer-groups --list / --describe / --delete` show them, over the brokers' gRPC
//! group RPCs. A group's coordinator is found by asking the brokers in turn and following
//! NOT_COORDINATOR; ListGroups asks every broker (each lists the groups it coordinates).
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Subcommand;
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use insync_client::Cluster;
use insync_proto as pb;
use insync_types::ErrorCode;
use serde_json::json;

/// How long to look for a group's coordinator while it is being chosen or loaded.
const FIND_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Subcommand)]
pub enum GroupCommand {
    /// Every consumer group of the cluster, with its state.
    List {
        /// Only groups in this state (Empty, Stable, PreparingRebalance, ...); repeatable.
        #[arg(long = "state")]
        states: Vec<String>,
    },
    /// Members (id, instance id, client id, host, partitions) and, per partition, the
    /// committed offset, log end offset and lag.
    Describe { group: String },
    /// Deletes an Empty group and its committed offsets.
    Delete { group: String },
}

pub async fn run(bootstrap: &str, json: bool, command: &GroupCommand) -> anyhow::Result<()> {
    let cluster = Cluster::new(bootstrap)?;
    match command {
        GroupCommand::List { states } => list(&cluster, json, states).await,
        GroupCommand::Describe { group } => describe(&cluster, json, group).await,
        GroupCommand::Delete { group } => {
            let (_, broker) = ask_coordinator(&cluster, group).await?;
            let mut client = cluster.broker(&broker).await?;
            let answer = client.delete_group(pb::DeleteGroupRequest { group_id: group.clone() }).await?.into_inner();
            match ErrorCode::from_code(answer.error_code) {
                ErrorCode::NONE if json => println!("{}", json!({"group": group, "deleted": true})),
                ErrorCode::NONE => println!("deleted group {group}"),
                ErrorCode::NON_EMPTY_GROUP => bail!("group {group} has members: only an Empty group can be deleted"),
                code => bail!("deleting group {group}: {code}"),
            }
            Ok(())
        }
    }
}

/// The brokers that may coordinate groups (registered and not fenced).
async fn live_brokers(cluster: &Cluster) -> anyhow::Result<Vec<pb::BrokerMetadata>> {
    let metadata = cluster.refresh_metadata().await?;
    let brokers: Vec<_> = metadata.brokers.iter().filter(|b| !b.fenced).cloned().collect();
    if brokers.is_empty() {
        bail!("no live broker");
    }
    Ok(brokers)
}

async fn list(cluster: &Cluster, json: bool, states: &[String]) -> anyhow::Result<()> {
    let mut groups: BTreeMap<String, (String, String, i32)> = BTreeMap::new();
    for broker in live_brokers(cluster).await? {
        let mut client = cluster.broker(&broker.address).await?;
        let answer = client
            .list_groups(pb::ListGroupsRequest { states: states.to_vec() })
            .await
            .with_context(|| format!("listing the groups of broker {}", broker.id))?
            .into_inner();
        for g in answer.groups {
            groups.insert(g.group_id, (g.state, g.protocol_type, broker.id));
        }
    }
    if json {
        for (group, (state, protocol_type, coordinator)) in &groups {
            println!(
                "{}",
                json!({"group": group, "state": state, "protocol_type": protocol_type, "coordinator": coordinator})
            );
        }
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header(vec!["GROUP", "STATE", "PROTOCOL TYPE", "COORDINATOR"]);
    for (group, (state, protocol_type, coordinator)) in groups {
        table.add_row(vec![group, state, protocol_type, coordinator.to_string()]);
    }
    println!("{table}");
    Ok(())
}

/// Asks the brokers in turn for `group` until its coordinator answers (NOT_COORDINATOR: the
/// next one; still loading or being chosen: again a little later). Returns the coordinator's
/// description of the group and its address.
async fn ask_coordinator(cluster: &Cluster, group: &str) -> anyhow::Result<(pb::DescribeGroupResponse, String)> {
    let deadline = Instant::now() + FIND_TIMEOUT;
    loop {
        let mut last = ErrorCode::NOT_COORDINATOR;
        for broker in live_brokers(cluster).await? {
            let Ok(mut client) = cluster.broker(&broker.address).await else { continue };
            let request = pb::DescribeGroupRequest { group_id: group.to_string() };
            let Ok(answer) = client.describe_group(request).await else { continue };
            let answer = answer.into_inner();
            match ErrorCode::from_code(answer.error_code) {
                ErrorCode::NONE => return Ok((answer, broker.address)),
                ErrorCode::NOT_COORDINATOR => {}
                code if code.is_retriable() => last = code,
                code => bail!("group {group}: {code}"),
            }
        }
        if Instant::now() >= deadline {
            bail!("no broker coordinates group {group} yet (last answer {last}); try again");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One row of the partition table.
struct PartitionRow {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    log_end: Option<i64>,
    owner: Option<pb::GroupMember>,
}

async fn describe(cluster: &Cluster, json: bool, group: &str) -> anyhow::Result<()> {
    let (description, _) = ask_coordinator(cluster, group).await?;
    let committed: BTreeMap<(String, i32), i64> =
        description.offsets.iter().map(|o| ((o.topic.clone(), o.partition), o.offset)).collect();
    let mut partitions: BTreeSet<(String, i32)> = committed.keys().cloned().collect();
    let mut owners: BTreeMap<(String, i32), pb::GroupMember> = BTreeMap::new();
    for member in &description.members {
        for p in &member.assignment {
            partitions.insert((p.topic.clone(), p.partition));
            owners.insert((p.topic.clone(), p.partition), member.clone());
        }
    }
    let mut rows = Vec::with_capacity(partitions.len());
    for (topic, partition) in partitions {
        // The log end offset consumers can reach: the high watermark (Kafka's tool asks
        // ListOffsets for the latest offset too).
        let log_end = cluster.list_offset(&topic, partition, -1).await.ok();
        let key = (topic.clone(), partition);
        rows.push(PartitionRow {
            committed: committed.get(&key).copied(),
            owner: owners.get(&key).cloned(),
            topic,
            partition,
            log_end,
        });
    }
    if json {
        print_json(&description, &rows);
    } else {
        print_tables(&description, &rows);
    }
    Ok(())
}

fn lag(row: &PartitionRow) -> Option<i64> {
    match (row.committed, row.log_end) {
        (Some(c), Some(end)) if c >= 0 => Some((end - c).max(0)),
        _ => None,
    }
}

fn member_partitions(member: &pb::GroupMember) -> String {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for p in &member.assignment {
        by_topic.entry(&p.topic).or_default().push(p.partition);
    }
    by_topic
        .into_iter()
        .map(|(topic, mut ps)| {
            ps.sort_unstable();
            format!("{topic}:{}", ps.iter().map(i32::to_string).collect::<Vec<_>>().join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_json(d: &pb::DescribeGroupResponse, rows: &[PartitionRow]) {
    let members: Vec<_> = d
        .members
        .iter()
        .map(|m| {
            json!({"member_id": m.member_id, "group_instance_id": m.group_instance_id, "client_id": m.client_id,
                   "host": m.client_host,
                   "partitions": m.assignment.iter().map(|p| json!({"topic": p.topic, "partition": p.partition})).collect::<Vec<_>>()})
        })
        .collect();
    let partitions: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({"topic": r.topic, "partition": r.partition, "committed_offset": r.committed,
                   "log_end_offset": r.log_end, "lag": lag(r),
                   "member_id": r.owner.as_ref().map(|m| m.member_id.clone())})
        })
        .collect();
    println!(
        "{}",
        json!({"group": d.group_id, "state": d.state, "protocol_type": d.protocol_type, "protocol": d.protocol,
               "members": members, "partitions": partitions})
    );
}

fn print_tables(d: &pb::DescribeGroupResponse, rows: &[PartitionRow]) {
    println!("GROUP {}  STATE {}  PROTOCOL {}  MEMBERS {}", d.group_id, d.state, d.protocol, d.members.len());
    let mut members = Table::new();
    members.load_preset(UTF8_BORDERS_ONLY);
    members.set_header(vec!["MEMBER-ID", "INSTANCE-ID", "CLIENT-ID", "HOST", "PARTITIONS"]);
    for m in &d.members {
        let instance = if m.group_instance_id.is_empty() { "-".to_string() } else { m.group_instance_id.clone() };
        members.add_row(vec![
            m.member_id.clone(),
            instance,
            m.client_id.clone(),
            m.client_host.clone(),
            member_partitions(m),
        ]);
    }
    println!("{members}");
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header(vec!["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "CLIENT-ID"]);
    let show = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    for r in rows {
        table.add_row(vec![
            r.topic.clone(),
            r.partition.to_string(),
            show(r.committed),
            show(r.log_end),
            show(lag(r)),
            r.owner.as_ref().map(|m| m.member_id.clone()).unwrap_or_else(|| "-".into()),
            r.owner.as_ref().map(|m| m.client_id.clone()).unwrap_or_else(|| "-".into()),
        ]);
    }
    println!("{table}");
}
