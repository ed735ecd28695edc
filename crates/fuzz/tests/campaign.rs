//! CI's bounded fuzzing campaign: every target over a fixed number of mutants of its seeds
//! (seeded, so a failure replays), plus every earlier finding under `regressions/`. One test
//! function, so each input's allocation is measured with nothing else running.
use insync_fuzz::runner::{run, Budget};
use insync_fuzz::targets::TARGETS;

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, 4 << 30);

/// Iterations per target in CI (debug build); `scripts/fuzz.sh` runs long campaigns.
fn iterations(name: &str) -> u64 {
    let scale = std::env::var("INSYNC_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    scale * if name == "segment-recovery" || name == "checkpoint" { 1_500 } else { 20_000 }
}

#[test]
fn every_target_survives_a_bounded_campaign_and_every_regression() {
    // One test function: each input's allocation is measured with nothing else running.
    let before = ALLOCATOR.total_allocated();
    std::hint::black_box(vec![0u8; 4096]);
    assert!(ALLOCATOR.total_allocated() >= before + 4096, "the allocator counts allocations");
    let mut failures = Vec::new();
    for target in TARGETS {
        let seeds = (target.seeds)();
        assert!(!seeds.is_empty(), "{}: no seeds", target.name);
        let report =
            run(target, Budget::Iterations(iterations(target.name)), 20261201, &|| ALLOCATOR.total_allocated());
        println!(
            "{}: {} iterations, {} seeds, most allocated by one input: {} bytes (a {}-byte input), {} findings",
            target.name,
            report.iterations,
            seeds.len(),
            report.max_alloc_bytes,
            report.max_alloc_input_len,
            report.findings.len()
        );
        for finding in report.findings.iter().take(3) {
            failures.push(format!(
                "{}: {} on {:02x?}",
                target.name,
                finding.what,
                &finding.input[..finding.input.len().min(256)]
            ));
        }
    }
    assert!(failures.is_empty(), "findings:\n{}", failures.join("\n"));
    worst_case_allocation_stays_within_a_constant_of_the_frame();
    the_kafka_corpus_holds_real_frames_of_every_served_api();
}

/// The real client frames are present: every served API as a client sends it.
fn the_kafka_corpus_holds_real_frames_of_every_served_api() {
    let corpus = insync_fuzz::targets::kafka_corpus();
    let mut keys: Vec<i16> = corpus.iter().filter(|f| f.len() >= 2).map(|f| i16::from_be_bytes([f[0], f[1]])).collect();
    keys.sort();
    keys.dedup();
    for key in [0i16, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18, 22] {
        assert!(keys.contains(&key), "no captured frame of API key {key} in crates/kafka-wire/corpus");
    }
}

/// A request frame: header (v1 or v2 by `flexible`, client id null) then `body`.
fn request(api_key: i16, version: i16, flexible: bool, body: &[u8]) -> Vec<u8> {
    let mut frame = [api_key.to_be_bytes(), version.to_be_bytes()].concat();
    frame.extend_from_slice(&7i32.to_be_bytes());
    frame.extend_from_slice(&[0xff, 0xff]);
    if flexible {
        frame.push(0); // header tagged fields
    }
    frame.extend_from_slice(body);
    frame
}

fn uvarint(mut value: u32, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Valid frames of about 1 MiB packed with the most elements per byte the listener
/// accepts: what a decoder allocates per byte received, at its worst.
fn worst_case_frames() -> Vec<(&'static str, Vec<u8>)> {
    const N: u32 = 400_000;
    // Metadata v1: N topics with empty names (2 bytes each).
    let mut metadata_v1 = N.to_be_bytes().to_vec();
    metadata_v1.extend((0..N).flat_map(|_| [0u8, 0]));
    // Metadata v9 (flexible): N topics of an empty compact name and no tags (2 bytes each),
    // then the flags and the message's tagged fields.
    let mut metadata_v9 = Vec::new();
    uvarint(N + 1, &mut metadata_v9);
    metadata_v9.extend((0..N).flat_map(|_| [1u8, 0]));
    metadata_v9.extend_from_slice(&[1, 0, 0, 0]);
    // FindCoordinator v4: key type, then N empty compact keys (1 byte each).
    let mut find_coordinator = vec![0u8];
    uvarint(N + 1, &mut find_coordinator);
    find_coordinator.extend((0..N).map(|_| 1u8));
    find_coordinator.push(0);
    // Metadata v9: no topics, the flags, then N distinct empty unknown tagged fields.
    let mut tagged = vec![1u8, 1, 0, 0];
    uvarint(N, &mut tagged);
    for tag in 0..N {
        uvarint(tag + 100, &mut tagged);
        tagged.push(0);
    }
    // DeleteTopics v4: N empty compact names (1 byte each), the timeout, no tags.
    let mut delete_topics = Vec::new();
    uvarint(N + 1, &mut delete_topics);
    delete_topics.extend((0..N).map(|_| 1u8));
    delete_topics.extend_from_slice(&[0, 0, 0, 0, 0]);
    // ElectLeaders v2: preferred, N topics of an empty name, no partitions and no tags
    // (3 bytes each), the timeout, no tags.
    let mut elect_leaders = vec![0u8];
    uvarint(N + 1, &mut elect_leaders);
    elect_leaders.extend((0..N).flat_map(|_| [1u8, 1, 0]));
    elect_leaders.extend_from_slice(&[0, 0, 0, 0, 0]);
    // CreateTopics v5: N topics of an empty name, counts, no assignments, configs or tags
    // (10 bytes each), then the timeout, validate_only and no tags.
    let mut create_topics = Vec::new();
    uvarint(N / 4 + 1, &mut create_topics);
    create_topics.extend((0..N / 4).flat_map(|_| [1u8, 0, 0, 0, 1, 0, 1, 1, 1, 0]));
    create_topics.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let config_admin = config_admin_frames(N);
    let mut frames = vec![
        ("DeleteTopics v4, 400000 names", request(20, 4, true, &delete_topics)),
        ("ElectLeaders v2, 400000 topics", request(43, 2, true, &elect_leaders)),
        ("CreateTopics v5, 100000 topics", request(19, 5, true, &create_topics)),
        ("Metadata v1, 400000 topics", request(3, 1, false, &metadata_v1)),
        ("Metadata v9, 400000 topics", request(3, 9, true, &metadata_v9)),
        ("FindCoordinator v4, 400000 keys", request(10, 4, true, &find_coordinator)),
        ("Metadata v9, 400000 unknown tagged fields", request(3, 9, true, &tagged)),
    ];
    frames.extend(config_admin);
    frames
}

/// The config and partition admin APIs' densest frames: `n` resources or topics of an empty
/// name with nothing inside.
fn config_admin_frames(n: u32) -> Vec<(&'static str, Vec<u8>)> {
    // DescribeConfigs v4: N resources (type, empty name, null keys, no tags: 4 bytes each),
    // include_synonyms, include_documentation, no tags.
    let mut describe_configs = Vec::new();
    uvarint(n + 1, &mut describe_configs);
    describe_configs.extend((0..n).flat_map(|_| [2u8, 1, 0, 0]));
    describe_configs.extend_from_slice(&[1, 1, 0]);
    // AlterConfigs v2 / IncrementalAlterConfigs v1: N resources (type, empty name, no
    // configs, no tags: 4 bytes each), validate_only, no tags.
    let mut alter_configs = Vec::new();
    uvarint(n + 1, &mut alter_configs);
    alter_configs.extend((0..n).flat_map(|_| [2u8, 1, 1, 0]));
    alter_configs.extend_from_slice(&[1, 0]);
    // CreatePartitions v3: N topics (empty name, count, null assignments, no tags: 7 bytes
    // each), the timeout, validate_only, no tags.
    let mut create_partitions = Vec::new();
    uvarint(n / 2 + 1, &mut create_partitions);
    create_partitions.extend((0..n / 2).flat_map(|_| [1u8, 0, 0, 0, 2, 0, 0]));
    create_partitions.extend_from_slice(&[0, 0, 0, 0, 1, 0]);
    // DeleteRecords v2: N topics (empty name, no partitions, no tags: 3 bytes each), the
    // timeout, no tags.
    let mut delete_records = Vec::new();
    uvarint(n + 1, &mut delete_records);
    delete_records.extend((0..n).flat_map(|_| [1u8, 1, 0]));
    delete_records.extend_from_slice(&[0, 0, 0, 0, 0]);
    vec![
        ("DescribeConfigs v4, 400000 resources", request(32, 4, true, &describe_configs)),
        ("AlterConfigs v2, 400000 resources", request(33, 2, true, &alter_configs)),
        ("IncrementalAlterConfigs v1, 400000 resources", request(44, 1, true, &alter_configs)),
        ("CreatePartitions v3, 200000 topics", request(37, 3, true, &create_partitions)),
        ("DeleteRecords v2, 400000 topics", request(21, 2, true, &delete_records)),
    ]
}

/// The most one request may make the listener allocate per byte of it (Kafka's readers
/// allocate in proportion too: a collection never has more elements than bytes left).
const MAX_ALLOCATION_PER_BYTE: usize = 64;

fn worst_case_allocation_stays_within_a_constant_of_the_frame() {
    for (what, frame) in worst_case_frames() {
        assert!(insync_kafka_wire::validate_request(&frame).is_ok(), "{what}: a valid frame");
        let frame = bytes::Bytes::from(frame);
        let len = frame.len();
        let before = ALLOCATOR.total_allocated();
        let decoded = insync_broker::kafka::decode_request_for_fuzzing(frame);
        let allocated = ALLOCATOR.total_allocated() - before;
        println!(
            "{what}: {len}-byte frame, {allocated} bytes allocated to decode it ({:.1} per byte)",
            allocated as f64 / len as f64
        );
        assert!(decoded.is_ok(), "{what}: {decoded:?}");
        assert!(allocated <= MAX_ALLOCATION_PER_BYTE * len, "{what}: {allocated} bytes for {len}");
    }
}
