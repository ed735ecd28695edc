//! Network partitions against real processes: every node listens on, and connects from,
//! its own loopback address (broker N on 127.0.1.N, controller N on 127.0.2.N), and
//! iptables rules (`insync_lab::netcut`) cut the links between nodes while every process
//! keeps running and clients, connecting from 127.0.0.1, still reach every node.
//!
//! Needs root and iptables (scripts/test.sh installs it): where they are missing, these
//! tests FAIL and say so; they never skip. Every rule is removed when the test ends, also
//! on a panic (the cuts are dropped with the cluster).
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use insync_lab::netcut::{NetCuts, Peer};
use insync_tests::{text, wait_for, ClusterOptions, NodeId, TestCluster};
use serde_json::Value;

const TOPIC: &str = "split";

/// Connects from `from` (bound before connecting, as a node does) to `to`; whether the
/// connection was made within 1 s. A made connection must carry `from` as its source.
async fn reaches(from: Ipv4Addr, to: SocketAddrV4) -> anyhow::Result<bool> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    match tokio::time::timeout(Duration::from_secs(1), socket.connect(to.into())).await {
        Ok(Ok(stream)) => {
            assert_eq!(stream.local_addr()?.ip(), from, "the source address is the bound one");
            Ok(true)
        }
        Ok(Err(e)) => anyhow::bail!("connecting {from} -> {to} failed at once ({e}), not by the cut"),
        Err(_) => Ok(false),
    }
}

fn v4(address: SocketAddr) -> SocketAddrV4 {
    match address {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => panic!("{a} is not IPv4"),
    }
}

/// The mechanism itself, on two listeners of otherwise unused loopback addresses: a cut
/// `a → b` makes `a`'s connections to `b` time out, leaves `b → a` and a client on
/// 127.0.0.1 alone; cutting both ways stops `b → a` too; healing restores both; dropping the
/// `NetCuts` removes its chain.
#[test]
fn a_cut_times_out_exactly_the_cut_connections_and_heal_restores_them() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let (a_ip, b_ip) = (Ipv4Addr::new(127, 0, 3, 1), Ipv4Addr::new(127, 0, 3, 2));
        // Listeners are never accepted from: the kernel completes handshakes into the backlog.
        let a_listener = tokio::net::TcpListener::bind((a_ip, 0)).await?;
        let b_listener = tokio::net::TcpListener::bind((b_ip, 0)).await?;
        let a = Peer { name: "a".into(), address: v4(a_listener.local_addr()?) };
        let b = Peer { name: "b".into(), address: v4(b_listener.local_addr()?) };
        let client = Ipv4Addr::LOCALHOST;
        assert!(reaches(a_ip, b.address).await? && reaches(b_ip, a.address).await?, "before any cut");

        let mut cuts = NetCuts::new()?;
        cuts.cut(&a, &b)?;
        assert!(!reaches(a_ip, b.address).await?, "a -> b is cut");
        assert!(reaches(b_ip, a.address).await?, "one way: b -> a still works");
        assert!(reaches(client, b.address).await?, "a client still reaches b");
        cuts.cut_both(&a, &b)?;
        assert!(!reaches(b_ip, a.address).await?, "both ways: b -> a is cut too");
        assert_eq!(cuts.cuts(), [("a".to_string(), "b".to_string()), ("b".to_string(), "a".to_string())]);
        cuts.heal()?;
        assert!(reaches(a_ip, b.address).await? && reaches(b_ip, a.address).await?, "healed");
        assert!(cuts.cuts().is_empty());

        cuts.cut(&a, &b)?;
        let chain = cuts.chain().to_string();
        drop(cuts);
        let listing = std::process::Command::new("iptables").args(["-w", "10", "-S"]).output()?;
        assert!(!text(&listing.stdout).contains(&chain), "dropping the cuts removes chain {chain}");
        assert!(reaches(a_ip, b.address).await?, "no rule outlives its NetCuts");
        anyhow::Ok(())
    })
}

/// `values` as producer input, one per line.
fn lines(values: &[String]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

fn named(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// (offset → value) of every `ok` answer, matched to the values sent in order (the
/// producer answers every record, in order).
fn acknowledged(values: &[String], answers: &[String], acked: &mut BTreeMap<i64, String>) {
    for (value, line) in values.iter().zip(answers) {
        if let Some(offset) = line.strip_prefix("ok partition=0 offset=") {
            let offset: i64 = offset.parse().expect("offset");
            let before = acked.insert(offset, value.clone());
            assert!(before.is_none(), "offset {offset} acknowledged for {before:?} and for {value}");
        }
    }
}

/// Partition 0 of TOPIC as the first answering broker of `bootstrap` sees it.
fn seen_by(cluster: &TestCluster, bootstrap: &str) -> Option<Value> {
    cluster.describe_at(bootstrap, TOPIC).ok()?.into_iter().find(|p| p["partition"].as_i64() == Some(0))
}

fn sorted_isr(p: &Value) -> Vec<i64> {
    let mut isr: Vec<i64> =
        p["isr"].as_array().map(|a| a.iter().filter_map(Value::as_i64).collect()).unwrap_or_default();
    isr.sort_unstable();
    isr
}

/// One acks=all record straight to `address`, as a client with stale metadata sends it: the
/// answer's error code, or None when no answer came within 6 s (the leader waits 2 s).
fn produce_directly(rt: &tokio::runtime::Runtime, address: &str, value: &str) -> Option<i32> {
    rt.block_on(async {
        let call = async {
            let mut client = insync_proto::broker_client::BrokerClient::connect(format!("http://{address}")).await?;
            let mut batch = insync_log::batch::BatchBuilder::new();
            batch.push(None, Some(value.as_bytes()), 0);
            let request = insync_proto::ProduceRequest {
                topic: TOPIC.into(),
                partition: 0,
                acks: -1,
                timeout_ms: 2_000,
                records: batch.build(),
                correlation_id: 0,
            };
            anyhow::Ok(client.produce(request).await?.into_inner().error_code)
        };
        tokio::time::timeout(Duration::from_secs(6), call).await.ok()?.ok()
    })
}

/// The leader of an RF=3, min.insync.replicas=2 topic is cut off from the controller and
/// both followers (clients still reach it): the controller fences it and elects a follower;
/// the old leader, a zombie that still believes it leads, appends what it is sent but
/// acknowledges no acks=all write; writes through the new leader go on; after the heal the
/// old leader follows the new one, truncates what it alone appended, and rejoins the ISR;
/// every acknowledged acks=all write is readable at its offset and no zombie write is.
#[test]
fn isolated_leader_is_replaced_acknowledges_nothing_and_rejoins_truncated() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut cluster = TestCluster::start(ClusterOptions { min_insync_replicas: 2, ..Default::default() })?;
    cluster.create_topic(TOPIC, 1, 3, Some(2))?;
    let old = cluster.leader_of(TOPIC, 0)?;
    let followers: Vec<usize> = (1..=3).filter(|b| *b != old).collect();
    // The cluster as a client that cannot reach the zombie sees it, and as the zombie sees it.
    let (via_followers, via_zombie) = (cluster.bootstrap_of(&followers), cluster.bootstrap_of(&[old]));
    let all_acks = ["--topic", TOPIC, "--acks", "all"];
    let mut acked = BTreeMap::new();

    let before = named("before", 50);
    let out = cluster.producer(&all_acks, Some(&lines(&before)));
    anyhow::ensure!(out.status.success(), "writing before the cut: {}{}", text(&out.stdout), text(&out.stderr));
    acknowledged(&before, &text(&out.stdout).lines().map(str::to_string).collect::<Vec<_>>(), &mut acked);
    anyhow::ensure!(acked.len() == before.len(), "every write before the cut is acknowledged");

    // A producer that knows every broker streams acks=all records across the whole partition.
    let mut stream = cluster.streaming_producer(&[
        "--topic",
        TOPIC,
        "--acks",
        "all",
        "--timeout-ms",
        "2000",
        "--delivery-timeout-ms",
        "60000",
    ])?;
    let mut streamed = Vec::new();
    let mut stream_some = |stream: &mut insync_tests::StreamingProducer, prefix: &str| -> anyhow::Result<()> {
        for value in named(prefix, 20) {
            stream.send(&value)?;
            streamed.push(value);
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    };
    stream_some(&mut stream, "stream-before")?;
    stream.wait_answers(20, Duration::from_secs(20));

    cluster.isolate(NodeId::Broker(old as i32))?;
    let cut_at = Instant::now();
    assert_eq!(cluster.cut_links().len(), 6, "cut both ways from controller-1 and the two followers");
    let rt = tokio::runtime::Runtime::new()?;
    let old_address = cluster.broker_address(old);
    let mut zombie_answers = vec![produce_directly(&rt, &old_address, "zombie-0")];
    stream_some(&mut stream, "stream-during")?;

    let new = wait_for("a new leader elected among the followers", Duration::from_secs(20), || {
        let p = seen_by(&cluster, &via_followers)?;
        let leader = p["leader"].as_i64()? as usize;
        (leader != old && leader > 0).then_some(leader)
    })?;
    let elected_after = cut_at.elapsed();
    assert!(followers.contains(&new), "broker {new} leads, not a follower of {followers:?}");
    let zombie_view = seen_by(&cluster, &via_zombie).expect("the cut-off broker still answers clients");
    assert_eq!(zombie_view["leader"].as_i64(), Some(old as i64), "the cut-off broker still believes it leads");

    // Straight to the zombie: it must not acknowledge an acks=all write it cannot replicate.
    for i in 1..=2 {
        zombie_answers.push(produce_directly(&rt, &old_address, &format!("zombie-{i}")));
    }
    let during = named("during", 30);
    let out = cluster.producer_at(&via_followers, &all_acks, Some(&lines(&during)));
    anyhow::ensure!(out.status.success(), "writing through the new leader: {}{}", text(&out.stdout), text(&out.stderr));
    let during_answers: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    acknowledged(&during, &during_answers, &mut acked);
    anyhow::ensure!(
        during_answers.iter().all(|l| l.starts_with("ok ")),
        "the new leader takes writes: {during_answers:?}"
    );
    eprintln!("zombie broker {old}: answers to acks=all writes {zombie_answers:?} (error codes; None: no answer)");
    assert!(
        zombie_answers.iter().all(|code| *code != Some(0)),
        "the zombie acknowledged an acks=all write: {zombie_answers:?}"
    );
    assert!(zombie_answers.iter().any(Option::is_some), "the zombie stays reachable by clients and answers");

    cluster.heal_links()?;
    let healed_at = Instant::now();
    assert!(cluster.cut_links().is_empty());
    wait_for("the old leader back in the ISR behind the new leader", Duration::from_secs(30), || {
        let p = seen_by(&cluster, &via_followers)?;
        (p["leader"].as_i64() == Some(new as i64) && sorted_isr(&p) == [1, 2, 3]).then_some(())
    })?;
    let rejoined_after = healed_at.elapsed();
    let truncation = wait_for("the old leader truncating what it alone appended", Duration::from_secs(10), || {
        cluster.broker_log(old).lines().find(|l| l.contains("truncated log from")).map(str::to_string)
    })?;
    stream_some(&mut stream, "stream-after")?;
    let stream_answers: Vec<String> = stream.finish(Duration::from_secs(70)).into_iter().map(|(_, l)| l).collect();
    assert_eq!(stream_answers.len(), streamed.len(), "one answer per streamed record: {stream_answers:?}");
    acknowledged(&streamed, &stream_answers, &mut acked);
    let stream_errors: Vec<&String> = stream_answers.iter().filter(|l| !l.starts_with("ok ")).collect();
    let after = named("after", 20);
    let out = cluster.producer(&all_acks, Some(&lines(&after)));
    anyhow::ensure!(out.status.success(), "writing after the heal: {}{}", text(&out.stdout), text(&out.stderr));
    acknowledged(&after, &text(&out.stdout).lines().map(str::to_string).collect::<Vec<_>>(), &mut acked);

    // Every replica ends identical, and holds every acknowledged write at its offset.
    let end = *acked.keys().max().expect("acknowledged writes") + 1;
    wait_for("identical log end offsets", Duration::from_secs(20), || {
        let p = seen_by(&cluster, &cluster.bootstrap())?;
        let leos: Vec<Option<i64>> = p["log_end_offsets"].as_object()?.values().map(Value::as_i64).collect();
        (leos.len() == 3 && leos.iter().all(|l| *l == leos[0]) && leos[0] >= Some(end)).then_some(())
    })?;
    let max = end.to_string();
    let consume = ["consume", TOPIC, "--from-beginning", "--max-messages", &max, "--idle-timeout-ms", "3000", "--json"];
    let out = cluster.insync_at(&via_followers, &consume);
    let read: BTreeMap<i64, String> = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|r| (r["offset"].as_i64().unwrap_or(-1), r["value"].as_str().unwrap_or("").to_string()))
        .collect();
    for (offset, value) in &acked {
        assert_eq!(read.get(offset), Some(value), "acknowledged acks=all write at offset {offset} lost or changed");
    }
    let zombie_writes: Vec<&String> = read.values().filter(|v| v.starts_with("zombie-")).collect();
    assert!(zombie_writes.is_empty(), "writes only the zombie appended survived: {zombie_writes:?}");
    eprintln!(
        "isolated leader {old}: broker {new} elected after {elected_after:?}; rejoined {rejoined_after:?} after the \
         heal; {} acknowledged writes all read back; the streaming producer's failures: {stream_errors:?}; \
         {truncation}; test took {:?}",
        acked.len(),
        started.elapsed()
    );
    Ok(())
}
