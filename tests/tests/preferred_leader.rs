//! Preferred leaders come back, against real processes: after a leader is killed and its
//! broker returns, automatic rebalancing (Kafka's `auto.leader.rebalance.enable`) moves
//! leadership back to each partition's first replica once it is in the ISR, and
//! `insync topic elect-leaders --preferred` (Kafka's ElectLeaders, PREFERRED) does the same on
//! demand, refusing while the preferred replica is out of the ISR. Acknowledged acks=all
//! records survive every move.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use insync_tests::{text, wait_for, ClusterOptions, TestCluster};
use serde_json::Value;

const TOPIC: &str = "pl";

/// partition → (preferred replica, leader, leader epoch).
fn leadership(cluster: &TestCluster) -> anyhow::Result<BTreeMap<i64, (i64, i64, i64)>> {
    Ok(cluster
        .describe(TOPIC)?
        .iter()
        .map(|p| {
            let preferred = p["replicas"][0].as_i64().unwrap_or(-1);
            let leader = p["leader"].as_i64().unwrap_or(-1);
            (p["partition"].as_i64().unwrap_or(-1), (preferred, leader, p["leader_epoch"].as_i64().unwrap_or(-1)))
        })
        .collect())
}

/// Sends `n` values `{prefix}-{i}` with acks=all, spread over the partitions; all must be acked.
fn produce_acked(cluster: &TestCluster, prefix: &str, n: usize) -> anyhow::Result<BTreeSet<String>> {
    let values: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let input: String = values.iter().map(|v| format!("{v}\n")).collect();
    let out = cluster.producer(&["--topic", TOPIC, "--acks", "all", "--delivery-timeout-ms", "30000"], Some(&input));
    anyhow::ensure!(out.status.success(), "acks=all produce failed: {}{}", text(&out.stdout), text(&out.stderr));
    let acked = text(&out.stdout).lines().filter(|l| l.starts_with("ok ")).count();
    anyhow::ensure!(acked == n, "{acked} of {n} acknowledged: {}", text(&out.stdout));
    Ok(values.into_iter().collect())
}

fn assert_all_readable(cluster: &TestCluster, acked: &BTreeSet<String>) {
    let records = wait_for("acknowledged records readable", Duration::from_secs(30), || {
        let r = cluster.consume_all(TOPIC, acked.len(), 3_000);
        (r.len() >= acked.len()).then_some(r)
    })
    .expect("read back");
    let read: BTreeSet<String> = records.iter().filter_map(|r| r["value"].as_str().map(str::to_string)).collect();
    let missing: Vec<&String> = acked.difference(&read).collect();
    assert!(missing.is_empty(), "acknowledged records lost across the elections: {missing:?}");
}

/// The brokers that are preferred leader of some partition, and one of them to kill.
fn victim(cluster: &TestCluster) -> anyhow::Result<usize> {
    let before = leadership(cluster)?;
    assert!(
        before.values().all(|(preferred, leader, _)| preferred == leader),
        "fresh topic led by preferred: {before:?}"
    );
    Ok(before.values().next().map(|(preferred, _, _)| *preferred as usize).unwrap_or(1))
}

fn wait_led_elsewhere(cluster: &TestCluster, broker: usize) -> anyhow::Result<()> {
    wait_for(&format!("no partition led by broker {broker}"), Duration::from_secs(15), || {
        let now = leadership(cluster).ok()?;
        now.values().all(|(_, leader, _)| *leader > 0 && *leader != broker as i64).then_some(())
    })
}

fn wait_full_isr(cluster: &TestCluster, partitions: i64) -> anyhow::Result<()> {
    for p in 0..partitions {
        cluster.wait_isr(TOPIC, p, &[1, 2, 3], Duration::from_secs(30))?;
    }
    Ok(())
}

#[test]
fn leadership_returns_to_preferred_replicas_after_a_broker_comes_back() -> anyhow::Result<()> {
    let mut cluster =
        TestCluster::start(ClusterOptions { leader_rebalance_interval_seconds: Some(1), ..Default::default() })?;
    cluster.create_topic(TOPIC, 3, 3, Some(2))?;
    let mut acked = produce_acked(&cluster, "before", 30)?;
    let killed = victim(&cluster)?;
    let epochs_before = leadership(&cluster)?;

    cluster.kill_broker(killed);
    wait_led_elsewhere(&cluster, killed)?;
    acked.extend(produce_acked(&cluster, "during", 30)?);

    cluster.start_broker(killed)?;
    wait_full_isr(&cluster, 3)?;
    let back = wait_for("every partition led by its preferred replica", Duration::from_secs(30), || {
        let now = leadership(&cluster).ok()?;
        now.values().all(|(preferred, leader, _)| preferred == leader).then_some(now)
    })?;
    // The partitions that moved twice carry two more leader epochs; none went backwards.
    for (p, (preferred, _, epoch)) in &back {
        let before = epochs_before[p].2;
        if *preferred == killed as i64 {
            assert!(
                *epoch >= before + 2,
                "partition {p}: failover and return bump the epoch twice ({before} → {epoch})"
            );
        } else {
            assert!(*epoch >= before, "partition {p}: epoch went back ({before} → {epoch})");
        }
    }
    let log = cluster.controller_logs();
    assert!(log.contains("preferred leader election (automatic"), "the election was logged");
    acked.extend(produce_acked(&cluster, "after", 30)?);
    assert_all_readable(&cluster, &acked);
    Ok(())
}

/// `insync topic elect-leaders ... --json`, one object per line.
fn elect(cluster: &TestCluster, args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut all = vec!["topic", "elect-leaders"];
    all.extend_from_slice(args);
    all.extend(["--preferred", "--json"]);
    let out = cluster.insync(&all);
    anyhow::ensure!(out.status.success(), "elect-leaders failed: {}{}", text(&out.stdout), text(&out.stderr));
    Ok(text(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

fn error_of(results: &[Value], partition: i64) -> String {
    results
        .iter()
        .find(|r| r["partition"].as_i64() == Some(partition))
        .and_then(|r| r["error"].as_str())
        .unwrap_or("absent")
        .to_string()
}

#[test]
fn elect_leaders_moves_leadership_only_to_an_in_sync_preferred_replica() -> anyhow::Result<()> {
    // Automatic rebalancing off: leadership moves only when the command asks.
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic(TOPIC, 3, 3, Some(2))?;
    let mut acked = produce_acked(&cluster, "before", 30)?;
    let killed = victim(&cluster)?;
    cluster.kill_broker(killed);
    wait_led_elsewhere(&cluster, killed)?;
    let away: Vec<i64> =
        leadership(&cluster)?.iter().filter(|(_, (pref, _, _))| *pref == killed as i64).map(|(p, _)| *p).collect();
    assert!(!away.is_empty());

    // The preferred replica is down, hence out of the ISR: refused, nothing moves.
    let during = elect(&cluster, &[TOPIC])?;
    for p in &away {
        assert_eq!(error_of(&during, *p), "PREFERRED_LEADER_NOT_AVAILABLE", "{during:?}");
    }
    assert!(during.iter().all(|r| r["error"] != "NONE"), "{during:?}");
    acked.extend(produce_acked(&cluster, "during", 30)?);

    cluster.start_broker(killed)?;
    wait_full_isr(&cluster, 3)?;
    std::thread::sleep(Duration::from_secs(2));
    let still = leadership(&cluster)?;
    for p in &away {
        assert_ne!(still[p].1, killed as i64, "with auto rebalance off leadership stays away until asked");
    }

    // Back in the ISR: the named partition moves, the others need no election.
    let result = elect(&cluster, &[TOPIC, "--partition", &away[0].to_string()])?;
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(error_of(&result, away[0]), "NONE", "{result:?}");
    assert_eq!(result[0]["leader"].as_i64(), Some(killed as i64));
    let rest = elect(&cluster, &[])?;
    for p in &away[1..] {
        assert_eq!(error_of(&rest, *p), "NONE", "{rest:?}");
    }
    let after = leadership(&cluster)?;
    assert!(after.values().all(|(preferred, leader, _)| preferred == leader), "{after:?}");
    assert!(elect(&cluster, &[])?.is_empty(), "nothing left to elect");
    let again = elect(&cluster, &[TOPIC])?;
    assert!(again.iter().all(|r| r["error"] == "ELECTION_NOT_NEEDED"), "{again:?}");

    let unknown = cluster.insync(&["topic", "elect-leaders", "nosuch", "--preferred"]);
    assert!(!unknown.status.success());
    assert!(text(&unknown.stderr).contains("UNKNOWN_TOPIC_OR_PARTITION"), "{}", text(&unknown.stderr));

    acked.extend(produce_acked(&cluster, "after", 30)?);
    assert_all_readable(&cluster, &acked);
    Ok(())
}
