//! The fuzz targets: one per decoder that reads bytes insync did not write itself, each with
//! its seeds (real frames and files) and a run that must neither panic nor allocate beyond
//! a constant times its input.
use std::path::{Path, PathBuf};

use bytes::Bytes;
use insync_log::batch::BatchBuilder;
use insync_log::Compression;
use insync_log::{LeaderEpochCache, LogConfig, OffsetCheckpointFile, PartitionLog};
use insync_proto as pb;
use prost::Message;

/// One decoder under fuzzing.
pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    /// Seeds to mutate.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Runs the decoder on one input; any panic is a finding.
    pub run: fn(&[u8]),
    /// Bytes the run may allocate per byte of input, beyond a fixed allowance.
    pub alloc_per_byte: usize,
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "kafka-request",
        about: "Kafka request frames of every served API and version, as the listener decodes them",
        seeds: kafka_request_seeds,
        run: kafka_request,
        alloc_per_byte: 64,
    },
    Target {
        name: "record-batch",
        about: "RecordBatch v2 (header, CRC, records, headers; gzip, snappy, lz4, zstd records) as produce and fetch read them",
        seeds: record_batch_seeds,
        run: insync_log::batch::fuzz_batches,
        alloc_per_byte: 64,
    },
    Target {
        name: "segment-recovery",
        about: "a partition directory's segment, index and leader-epoch files, recovered at open",
        seeds: segment_seeds,
        run: segment_recovery,
        alloc_per_byte: 64,
    },
    Target {
        name: "checkpoint",
        about: "high-watermark and leader-epoch checkpoint files",
        seeds: checkpoint_seeds,
        run: checkpoint,
        alloc_per_byte: 64,
    },
    Target {
        name: "grpc-message",
        about: "gRPC ProduceRequest / FetchRequest / FetchResponse bytes and the record batches inside",
        seeds: grpc_seeds,
        run: grpc_message,
        alloc_per_byte: 64,
    },
];

pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The workspace root (for the corpus and regression folders).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file of a folder, sorted by name (missing folder: none).
pub fn files_in(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    paths.sort();
    paths.into_iter().filter_map(|p| std::fs::read(&p).ok().map(|bytes| (p, bytes))).collect()
}

/// Real client frames captured from kcat, librdkafka and kafka-python sessions.
pub fn kafka_corpus() -> Vec<Vec<u8>> {
    files_in(&workspace_root().join("crates/kafka-wire/corpus"))
        .into_iter()
        .filter(|(path, _)| path.extension().is_some_and(|e| e == "bin"))
        .map(|(_, bytes)| bytes)
        .collect()
}

/// The captured frames, plus one frame of every API and version the listener serves as
/// `kafka-protocol` encodes it (versions no captured client sent).
fn kafka_request_seeds() -> Vec<Vec<u8>> {
    let mut seeds = kafka_corpus();
    let samples = insync_kafka_wire::samples::every_version().into_iter();
    seeds.extend(
        samples
            .filter(|(key, v)| insync_kafka_wire::samples::served(*key, *v))
            .map(|(key, v)| insync_kafka_wire::samples::frame(key, v)),
    );
    seeds
}

/// A frame the schema walk accepts must decode to the same last byte.
fn kafka_request(data: &[u8]) {
    if let Err(e) = insync_broker::kafka::decode_request_for_fuzzing(Bytes::copy_from_slice(data)) {
        assert!(!e.contains(insync_broker::kafka::DISAGREEMENT), "{e}");
    }
}

/// Batches built here (keys, nulls, headers, producer ids, every codec) and the ones inside
/// the captured Produce requests (as librdkafka and kafka-python build them).
fn record_batch_seeds() -> Vec<Vec<u8>> {
    let mut seeds = built_batches();
    for frame in kafka_corpus() {
        seeds.extend(produce_records(&frame));
    }
    seeds
}

fn built_batches() -> Vec<Vec<u8>> {
    let mut one = BatchBuilder::new();
    one.push(None, Some(b"hello"), 1_700_000_000_000);
    let mut batches = vec![one.build().to_vec(), many_records().build().to_vec()];
    for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
        batches.push(many_records().compression(codec).build().to_vec());
    }
    batches
}

/// Five records with keys, a null value and headers, from an idempotent producer.
fn many_records() -> BatchBuilder {
    let mut many = BatchBuilder::new().producer(7, 0, 0);
    for i in 0..5u8 {
        let value = [i; 20];
        let headers: &[(&str, Option<&[u8]>)] = &[("h", Some(b"v")), ("n", None)];
        let timestamp = 1_700_000_000_000 + i64::from(i);
        many.push_with_headers(Some(&[i]), (i != 2).then_some(&value[..]), timestamp, headers);
    }
    many
}

/// The record bytes of a Produce frame, if it is one that decodes.
fn produce_records(frame: &[u8]) -> Vec<Vec<u8>> {
    use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
    use kafka_protocol::protocol::Decodable;
    let Ok(valid) = insync_kafka_wire::validate_request(frame) else { return Vec::new() };
    if valid.api_key != ApiKey::Produce as i16 {
        return Vec::new();
    }
    let mut bytes = Bytes::copy_from_slice(frame);
    if RequestHeader::decode(&mut bytes, valid.header_version).is_err() {
        return Vec::new();
    }
    match RequestKind::decode(ApiKey::Produce, &mut bytes, valid.api_version) {
        Ok(RequestKind::Produce(produce)) => produce
            .topic_data
            .iter()
            .flat_map(|t| t.partition_data.iter())
            .filter_map(|p| p.records.as_ref().map(|r| r.to_vec()))
            .collect(),
        _ => Vec::new(),
    }
}

/// A segment input is `[split: u16 BE][log bytes][index bytes]`: the log file, then its
/// index, of the first segment of a partition directory.
fn segment_seeds() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut log = PartitionLog::open(dir.path(), small_log_config()).expect("a new log opens");
    for (epoch, mut batch) in built_batches().into_iter().enumerate() {
        log.append_as_leader(&mut batch, epoch as i32).expect("append");
    }
    log.close().expect("close");
    let prefix = "00000000000000000000";
    let segment = std::fs::read(dir.path().join(format!("{prefix}.log"))).unwrap_or_default();
    let index = std::fs::read(dir.path().join(format!("{prefix}.index"))).unwrap_or_default();
    let mut seed = (segment.len().min(u16::MAX as usize) as u16).to_be_bytes().to_vec();
    seed.extend_from_slice(&segment);
    seed.extend_from_slice(&index);
    vec![seed]
}

fn small_log_config() -> LogConfig {
    LogConfig { segment_bytes: 4096, index_interval_bytes: 64, ..LogConfig::default() }
}

fn segment_recovery(data: &[u8]) {
    let Some((split, rest)) = data.split_first_chunk::<2>() else { return };
    let split = usize::from(u16::from_be_bytes(*split)).min(rest.len());
    let (segment, index) = rest.split_at(split);
    let Ok(dir) = tempfile::tempdir() else { return };
    let prefix = "00000000000000000000";
    if std::fs::write(dir.path().join(format!("{prefix}.log")), segment).is_err()
        || std::fs::write(dir.path().join(format!("{prefix}.index")), index).is_err()
    {
        return;
    }
    // Whatever recovery kept must read back and accept new appends.
    if let Ok(mut log) = PartitionLog::open(dir.path(), small_log_config()) {
        let end = log.log_end_offset();
        let _ = log.read(0, end, 1 << 20);
        let _ = log.append_as_leader(&mut many_records().build().to_vec(), 100);
        let _ = log.truncate_to(end / 2);
    }
}

fn checkpoint_seeds() -> Vec<Vec<u8>> {
    vec![b"0\n2\nt 0 42\nother 3 7\n".to_vec(), b"0\n3\n0 0\n2 17\n5 90\n".to_vec(), b"0\n0\n".to_vec()]
}

fn checkpoint(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let hw = dir.path().join("replication-offset-checkpoint");
    let epochs = dir.path().join(insync_log::epoch_cache::LEADER_EPOCH_CHECKPOINT_FILE);
    if std::fs::write(&hw, data).is_err() || std::fs::write(&epochs, data).is_err() {
        return;
    }
    let _ = OffsetCheckpointFile::new(hw).read();
    let _ = LeaderEpochCache::load(dir.path());
}

fn grpc_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for records in record_batch_seeds().into_iter().take(8) {
        let records = Bytes::from(records);
        let produce = pb::ProduceRequest {
            topic: "t".into(),
            partition: 0,
            acks: -1,
            timeout_ms: 1000,
            records: records.clone(),
            correlation_id: 3,
        };
        seeds.push([&[0u8][..], &produce.encode_to_vec()].concat());
        let fetch = pb::FetchResponse {
            partitions: vec![pb::FetchPartitionResponse { records, high_watermark: 5, ..Default::default() }],
            ..Default::default()
        };
        seeds.push([&[2u8][..], &fetch.encode_to_vec()].concat());
    }
    let fetch = pb::FetchRequest {
        replica_id: 2,
        max_wait_ms: 500,
        partitions: vec![pb::FetchPartition { topic: "t".into(), fetch_offset: 9, ..Default::default() }],
        ..Default::default()
    };
    seeds.push([&[1u8][..], &fetch.encode_to_vec()].concat());
    seeds
}

/// The first byte picks the message; the rest is its protobuf encoding. Record bytes go
/// through the batch validation the produce path and the follower append apply
/// (decompressing to at most about the input's size, as in `fuzz_batches`).
fn grpc_message(data: &[u8]) {
    let bound = insync_log::batch::fuzz_decompression_bound(data.len());
    let Some((kind, body)) = data.split_first() else { return };
    match kind % 3 {
        0 => {
            if let Ok(request) = pb::ProduceRequest::decode(body) {
                let _ = insync_log::batch::validate_batch_bounded(&request.records, bound);
            }
        }
        1 => {
            let _ = pb::FetchRequest::decode(body);
        }
        _ => {
            if let Ok(response) = pb::FetchResponse::decode(body) {
                for partition in &response.partitions {
                    for batch in insync_log::batch::iter_batches(&partition.records).take(partition.records.len()) {
                        match batch {
                            Ok((_, bytes)) => drop(insync_log::batch::validate_batch_bounded(bytes, bound)),
                            Err(_) => break,
                        }
                    }
                }
            }
        }
    }
}
