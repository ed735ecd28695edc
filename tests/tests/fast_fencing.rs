//! Fast fencing against real processes: a SIGKILLed broker is fenced as soon as its closed
//! session stream shows it gone (not after `broker.session.timeout.ms`); a broker alive but
//! unreachable (SIGSTOP, a network cut) keeps its connection open and is fenced only by the
//! session timeout; and a live broker whose connections keep being reset costs at most one
//! extra election (the flap guard). The fencing cause is read from the controller's
//! "fenced broker N: <reason>" line, so no assertion depends on how fast the machine is.
use std::time::Duration;

use insync_tests::{wait_for, ClusterOptions, NodeId, TestCluster};

const CLOSED: &str = "its session connection closed";
const SESSION_EXPIRED: &str = "no heartbeat for";

/// The reasons the controller gave for fencing broker `n`, in order.
fn fence_reasons(cluster: &TestCluster, n: usize) -> Vec<String> {
    let prefix = format!("fenced broker {n}: ");
    cluster
        .controller_logs()
        .lines()
        .filter_map(|line| line.split_once(&prefix).map(|(_, reason)| reason.to_string()))
        .collect()
}

fn leader_epoch(cluster: &TestCluster, topic: &str) -> anyhow::Result<i64> {
    cluster.partition(topic, 0)?["leader_epoch"].as_i64().ok_or_else(|| anyhow::anyhow!("no leader_epoch"))
}

fn produce_acks_all(cluster: &TestCluster, topic: &str, value: &str) {
    let out = cluster.producer(&["--topic", topic, "--acks", "all", "--delivery-timeout-ms", "20000", value], None);
    assert!(out.status.success(), "acks=all produce of {value}: {}", insync_tests::text(&out.stderr));
}

#[test]
fn a_killed_leader_is_fenced_by_its_closed_connection_not_the_session_timeout() -> anyhow::Result<()> {
    // A session timeout far longer than the wait below: only the closed connection can fence.
    let options = ClusterOptions { broker_session_timeout_ms: 20_000, ..ClusterOptions::default() };
    let mut cluster = TestCluster::start(options)?;
    cluster.create_topic("fast", 1, 3, Some(2))?;
    produce_acks_all(&cluster, "fast", "before");
    let old = cluster.leader_of("fast", 0)?;
    cluster.kill_broker(old);
    let new = wait_for("a new leader, well inside the 20 s session", Duration::from_secs(10), || {
        cluster.leader_of("fast", 0).ok().filter(|l| *l != old)
    })?;
    let reasons = fence_reasons(&cluster, old);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].starts_with(CLOSED), "{reasons:?}");
    produce_acks_all(&cluster, "fast", "after");
    assert_ne!(new, old);
    Ok(())
}

#[test]
fn a_paused_or_cut_off_broker_is_fenced_only_by_the_session_timeout() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic("slow", 1, 3, Some(2))?;
    let paused = cluster.leader_of("slow", 0)?;
    cluster.pause_broker(paused);
    let cut = wait_for("a new leader after SIGSTOP", Duration::from_secs(15), || {
        cluster.leader_of("slow", 0).ok().filter(|l| *l != paused)
    })?;
    let reasons = fence_reasons(&cluster, paused);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].starts_with(SESSION_EXPIRED), "a stopped process keeps its sockets open: {reasons:?}");
    cluster.resume_broker(paused);
    cluster.wait_isr("slow", 0, &[1, 2, 3], Duration::from_secs(30))?;

    // A network cut drops packets without resetting anything: the same.
    cluster.isolate(NodeId::Broker(cut as i32))?;
    wait_for("a new leader after the cut", Duration::from_secs(15), || {
        cluster.leader_of("slow", 0).ok().filter(|l| *l != cut)
    })?;
    let reasons = fence_reasons(&cluster, cut);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].starts_with(SESSION_EXPIRED), "a cut link closes nothing: {reasons:?}");
    cluster.heal_links()?;
    cluster.wait_isr("slow", 0, &[1, 2, 3], Duration::from_secs(30))?;
    produce_acks_all(&cluster, "slow", "after");
    Ok(())
}

#[test]
fn a_live_broker_whose_connection_keeps_being_reset_costs_at_most_one_election() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    cluster.create_topic("flap", 1, 3, Some(2))?;
    produce_acks_all(&cluster, "flap", "before");
    let leader = cluster.leader_of("flap", 0)?;
    let epoch_before = leader_epoch(&cluster, "flap")?;
    // Three resets, each followed by an outage longer than the controller's 250 ms grace
    // (the broker cannot reconnect) and shorter than the 3 s session timeout.
    for _ in 0..3 {
        cluster.reset_links(NodeId::Broker(leader as i32), NodeId::Controller(1))?;
        std::thread::sleep(Duration::from_millis(700));
        cluster.heal_links()?;
        std::thread::sleep(Duration::from_millis(1_500));
    }
    cluster.wait_isr("flap", 0, &[1, 2, 3], Duration::from_secs(30))?;
    // The reset broker unfenced again.
    cluster.wait_alive_brokers(3, Duration::from_secs(15))?;
    let elections = leader_epoch(&cluster, "flap")? - epoch_before;
    let reasons = fence_reasons(&cluster, leader);
    // The first outage outlasts the grace: one early fencing, one election (the broker led).
    // The next two fall in the hold-off and outlast no session: nothing more.
    assert_eq!(reasons.len(), 1, "fenced once, early: {reasons:?}");
    assert!(reasons[0].starts_with(CLOSED), "{reasons:?}");
    assert_eq!(elections, 1, "one extra election from a flapping broker; fencings: {reasons:?}");
    produce_acks_all(&cluster, "flap", "after");
    Ok(())
}
