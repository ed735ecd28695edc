//! A live 3-broker cluster under hostile clients on every listener (Kafka, gRPC, metrics):
//! the 18-byte allocation bomb, thousands of mutated frames, idle and half-sent
//! connections, silent connections, garbage and oversized messages on the gRPC port, junk on
//! the metrics port.
//! Throughout, an honest client keeps being answered; afterwards every broker is alive with
//! a bounded RSS, acks=all still works and every record acknowledged before is intact.
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use insync_tests::{text, ClusterOptions, TestCluster};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Mutated Kafka frames sent to each broker.
const MUTANTS_PER_BROKER: usize = 2_000;
/// Idle and half-sent connections opened to each broker.
const STALLED_PER_BROKER: usize = 60;
/// A broker's resident memory after the attack stays under this.
const MAX_RSS_BYTES: u64 = 512 * 1024 * 1024;

fn cluster() -> anyhow::Result<TestCluster> {
    let args = [("--connections-max-idle-ms", "3000"), ("--request-receive-timeout-ms", "2000")];
    TestCluster::start(ClusterOptions {
        kafka_listeners: true,
        metrics_listeners: true,
        broker_args: args.iter().map(|(f, v)| (f.to_string(), v.to_string())).collect(),
        ..ClusterOptions::default()
    })
}

fn produce_acks_all(cluster: &TestCluster, values: &[String]) -> anyhow::Result<()> {
    let input: String = values.iter().map(|v| format!("{v}\n")).collect();
    let out = cluster.producer(&["--topic", "hostile", "--acks", "all"], Some(&input));
    let oks = text(&out.stdout).lines().filter(|l| l.starts_with("ok ")).count();
    anyhow::ensure!(
        out.status.success() && oks == values.len(),
        "acks=all: {oks} of {} ok: {}",
        values.len(),
        text(&out.stderr)
    );
    Ok(())
}

/// Sends one size-prefixed frame on a fresh connection, then reads for at most `wait`.
/// Returns whether the broker answered anything or closed (never whether it crashed:
/// that is checked separately).
fn send_frame(address: &str, frame: &[u8], wait: Duration) {
    let Ok(mut stream) = TcpStream::connect(address) else { return };
    let _ = stream.set_read_timeout(Some(wait));
    let mut bytes = (frame.len() as i32).to_be_bytes().to_vec();
    bytes.extend_from_slice(frame);
    let _ = stream.write_all(&bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Whether the broker closes the connection within `wait` (EOF or reset).
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let _ = stream.set_read_timeout(Some(wait));
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}

/// Mutants of real client frames and of every served API and version.
fn mutants(seed: u64, count: usize) -> Vec<Vec<u8>> {
    let mut seeds = insync_fuzz::targets::kafka_corpus();
    for (key, version) in insync_kafka_wire::samples::every_version() {
        if insync_kafka_wire::samples::served(key, version) {
            seeds.push(insync_kafka_wire::samples::frame(key, version));
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let base = &seeds[rng.gen_range(0..seeds.len())];
            let other = &seeds[rng.gen_range(0..seeds.len())];
            insync_fuzz::mutate::mutate(base, other, &mut rng)
        })
        .collect()
}

/// An honest Kafka client: ApiVersions every 50 ms on one connection; the slowest answer.
fn honest_client(address: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<anyhow::Result<Duration>> {
    std::thread::spawn(move || {
        let mut stream = TcpStream::connect(&address)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut slowest = Duration::ZERO;
        let mut correlation = 0i32;
        while !stop.load(Ordering::Relaxed) {
            correlation += 1;
            // ApiVersions v0, client id null.
            let mut frame = vec![0, 0, 0, 10, 0, 18, 0, 0];
            frame.extend_from_slice(&correlation.to_be_bytes());
            frame.extend_from_slice(&[0xff, 0xff]);
            let started = Instant::now();
            stream.write_all(&frame)?;
            let mut size = [0u8; 4];
            stream.read_exact(&mut size)?;
            let mut body = vec![0u8; i32::from_be_bytes(size).clamp(0, 1 << 20) as usize];
            stream.read_exact(&mut body)?;
            anyhow::ensure!(body[..4] == correlation.to_be_bytes(), "answer to request {correlation}");
            slowest = slowest.max(started.elapsed());
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(slowest)
    })
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Thousands of mutated frames, from 8 threads, spread over the brokers.
fn mutant_storm(kafka: &[String]) {
    let sent = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let kafka = kafka.to_vec();
            let sent = sent.clone();
            std::thread::spawn(move || {
                let per_thread = MUTANTS_PER_BROKER * kafka.len() / 8;
                for (i, frame) in mutants(1000 + t, per_thread).into_iter().enumerate() {
                    send_frame(&kafka[i % kafka.len()], &frame, Duration::from_millis(300));
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    eprintln!("sent {} mutated Kafka frames", sent.load(Ordering::Relaxed));
}

/// Idle connections and connections whose request stops arriving: all closed by the broker
/// (connections.max.idle.ms 3 s, request receive timeout 2 s here).
fn stalled_connections_are_closed(kafka: &[String]) -> anyhow::Result<()> {
    let mut stalled = Vec::new();
    for address in kafka {
        for i in 0..STALLED_PER_BROKER {
            let mut stream = TcpStream::connect(address)?;
            if i % 2 == 1 {
                // Declares a 1 MiB request, sends 1000 bytes of it, then nothing.
                stream.write_all(&(1i32 << 20).to_be_bytes())?;
                stream.write_all(&[7u8; 1000])?;
            }
            stalled.push(stream);
        }
    }
    all_closed_within(&mut stalled, Instant::now(), Duration::from_secs(15), "idle and half-sent Kafka")
}

/// Every stream is closed by the broker within `limit` of `since`.
fn all_closed_within(streams: &mut [TcpStream], since: Instant, limit: Duration, what: &str) -> anyhow::Result<()> {
    for stream in streams.iter_mut() {
        let left = limit.saturating_sub(since.elapsed()).max(Duration::from_millis(10));
        anyhow::ensure!(closed_within(stream, left), "a {what} connection is still open after {:?}", since.elapsed());
    }
    eprintln!("{} {what} connections closed after {:?}", streams.len(), since.elapsed());
    Ok(())
}

/// Random bytes, and an HTTP/2 preface followed by random frames, on gRPC and metrics ports.
fn garbage_on(addresses: &[String], seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..300 {
        let address = &addresses[i % addresses.len()];
        let Ok(mut stream) = TcpStream::connect(address) else { continue };
        let mut junk: Vec<u8> = if i % 3 == 0 { b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec() } else { Vec::new() };
        if i % 3 == 1 {
            junk.extend_from_slice(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n");
        }
        let size = rng.gen_range(1..4096);
        junk.extend((0..size).map(|_| rng.gen::<u8>()));
        let _ = stream.write_all(&junk);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
        let _ = stream.read(&mut [0u8; 256]);
    }
}

/// A gRPC produce whose message is larger than any a broker decodes: refused by its length
/// prefix with an error status, before the broker buffers it.
fn oversized_grpc_message(address: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let channel = insync_proto::endpoint(address)?.connect().await?;
        let mut client = insync_proto::broker_client::BrokerClient::new(channel)
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(64 << 20);
        let request = insync_proto::ProduceRequest {
            topic: "hostile".into(),
            partition: 0,
            acks: -1,
            timeout_ms: 1000,
            records: bytes::Bytes::from(vec![0u8; 16 << 20]),
            correlation_id: 0,
        };
        let status = client.produce(request).await.expect_err("a 16 MiB gRPC message is refused");
        eprintln!("16 MiB gRPC produce: {:?} {}", status.code(), status.message());
        anyhow::Ok(())
    })
}

#[test]
fn hostile_bytes_on_every_listener_take_no_broker_down_and_lose_nothing() -> anyhow::Result<()> {
    let cluster = cluster()?;
    cluster.create_topic("hostile", 1, 3, Some(2))?;
    let before: Vec<String> = (0..200).map(|i| format!("before-{i}")).collect();
    produce_acks_all(&cluster, &before)?;
    let kafka: Vec<String> = cluster.kafka_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let grpc: Vec<String> = (1..=3).map(|n| cluster.broker_address(n)).collect();
    let metrics: Vec<String> = cluster.metrics_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();

    // The 18-byte Metadata request with a topic count of 0x7fffffff: a clean close.
    for address in &kafka {
        let mut stream = TcpStream::connect(address)?;
        stream.write_all(&[0, 0, 0, 0x0e, 0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff])?;
        anyhow::ensure!(
            closed_within(&mut stream, Duration::from_secs(5)),
            "{address}: the bomb is answered by a close"
        );
    }

    // Silent gRPC connections: closed once they have sent nothing for 10 s, so they cannot
    // sit on the slots other brokers' fetchers and heartbeats need.
    let mut silent_grpc: Vec<TcpStream> =
        grpc.iter().flat_map(|a| (0..20).filter_map(move |_| TcpStream::connect(a).ok())).collect();
    let silent_since = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let honest = honest_client(kafka[0].clone(), stop.clone());
    mutant_storm(&kafka);
    stalled_connections_are_closed(&kafka)?;
    garbage_on(&grpc, 1);
    garbage_on(&metrics, 2);
    oversized_grpc_message(&grpc[0])?;
    stop.store(true, Ordering::Relaxed);
    let slowest = honest.join().map_err(|_| anyhow::anyhow!("honest client panicked"))??;
    eprintln!("the honest client's slowest answer during the attack: {slowest:?}");
    anyhow::ensure!(slowest < Duration::from_secs(2), "an honest client waited {slowest:?}");

    all_closed_within(&mut silent_grpc, silent_since, Duration::from_secs(20), "silent gRPC")?;

    for n in 1..=3 {
        let pid = cluster.broker_pid(n).ok_or_else(|| anyhow::anyhow!("broker {n} is not running"))?;
        anyhow::ensure!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "broker {n} died");
        let rss = rss_bytes(pid).ok_or_else(|| anyhow::anyhow!("cannot read broker {n}'s RSS"))?;
        eprintln!("broker {n}: RSS {} MiB after the attack", rss >> 20);
        anyhow::ensure!(rss < MAX_RSS_BYTES, "broker {n} RSS {rss} bytes");
    }
    let after: Vec<String> = (0..200).map(|i| format!("after-{i}")).collect();
    produce_acks_all(&cluster, &after)?;
    let records = cluster.consume_all("hostile", 400, 5_000);
    let values: Vec<&str> = records.iter().filter_map(|r| r["value"].as_str()).collect();
    let expected: Vec<&str> = before.iter().chain(&after).map(String::as_str).collect();
    assert_eq!(values, expected, "every acknowledged record, once, in order");
    let log = cluster.broker_log(1);
    assert!(log.contains("Kafka client: closing the connection"), "bad frames are logged");
    assert!(log.contains("MetadataRequest.Topics: array count 2147483647"), "the bomb is named in the log");
    Ok(())
}
