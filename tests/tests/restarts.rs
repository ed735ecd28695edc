//! Persistence across restarts with real processes: a controller restart keeps every
//! topic, and brokers restarted together keep every acknowledged record.
use std::time::Duration;

use insync_tests::{text, wait_for, ClusterOptions, TestCluster};

#[test]
fn controller_restart_keeps_topics_and_brokers_keep_their_data() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic("durable", 2, 3, Some(2))?;
    let input: String = (0..200).map(|i| format!("d{i}\n")).collect();
    let out = cluster.producer(&["--topic", "durable", "--acks", "all"], Some(&input));
    assert!(out.status.success(), "{}", text(&out.stdout));

    // The controller's metadata is on disk: a SIGKILLed controller comes back with it.
    cluster.kill_controller(1);
    cluster.start_controller(1)?;
    wait_for("topic listed after controller restart", Duration::from_secs(20), || {
        let out = cluster.insync(&["topic", "list"]);
        text(&out.stdout).lines().any(|l| l == "durable").then_some(())
    })?;

    // Every broker stopped, then started again: the logs and HW checkpoints survive.
    for b in 1..=3 {
        cluster.stop_broker(b, Duration::from_secs(20))?;
    }
    for b in 1..=3 {
        cluster.start_broker(b)?;
    }
    cluster.wait_alive_brokers(3, Duration::from_secs(30))?;
    let records = wait_for("all 200 records readable after the restart", Duration::from_secs(30), || {
        let r = cluster.consume_all("durable", 200, 3_000);
        (r.len() == 200).then_some(r)
    })?;
    let mut values: Vec<String> = records.iter().map(|r| r["value"].as_str().unwrap_or("").to_string()).collect();
    values.sort_by_key(|v| v[1..].parse::<u32>().unwrap_or(0));
    let expected: Vec<String> = (0..200).map(|i| format!("d{i}")).collect();
    assert_eq!(values, expected);
    let out = cluster.producer(&["--topic", "durable", "--acks", "all", "after-restart"], None);
    assert!(out.status.success(), "{}", text(&out.stdout));
    Ok(())
}
