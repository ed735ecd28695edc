//! Compressed batches through `PartitionLog`: the leader stores them byte for byte as the
//! producer compressed them (`compression.type=producer`), bounds their decompression by
//! `max.message.bytes`, and re-encodes them when the topic names another codec; followers
//! and recovery carry them unchanged.

use insync_log::batch::parse_header;
use insync_log::{decode_records, iter_batches, BatchBuilder, Compression, LogConfig, LogError, PartitionLog, Record};

fn batch(codec: Compression, tag: &str, records: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new().producer(5, 1, 0).compression(codec);
    for index in 0..records {
        let value = format!("{tag}-{index} {}", "payload ".repeat(8));
        builder.push(Some(format!("k{index}").as_bytes()), Some(value.as_bytes()), 1_700_000_000_000 + index as i64);
    }
    builder.build().to_vec()
}

/// (offset, key, value) of every record in concatenated batches.
fn records(bytes: &[u8]) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for item in iter_batches(bytes) {
        let (_, batch) = item.unwrap();
        out.extend(
            decode_records(batch)
                .unwrap()
                .into_iter()
                .map(|r: Record| (r.offset, r.key.unwrap_or_default().to_vec(), r.value.unwrap_or_default().to_vec())),
        );
    }
    out
}

/// The codec of every batch in concatenated batches.
fn codecs(bytes: &[u8]) -> Vec<Compression> {
    iter_batches(bytes).map(|item| item.unwrap().0.codec().unwrap()).collect()
}

#[test]
fn the_leader_stores_compressed_batches_unchanged_and_followers_copy_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = PartitionLog::open(&dir.path().join("leader"), LogConfig::default()).unwrap();
    let mut sent = Vec::new();
    for codec in Compression::ALL {
        let mut bytes = batch(codec, codec.name(), 20);
        let info = leader.append_as_leader(&mut bytes, 3).unwrap();
        assert_eq!(info.records, 20);
        assert_eq!(info.bytes, bytes.len(), "{codec}: stored as sent");
        sent.extend_from_slice(&bytes); // stamped in place: what the log should hold
    }
    let stored = leader.read(0, i64::MAX, 1 << 20).unwrap();
    assert_eq!(&stored[..], &sent[..], "byte for byte as the producers compressed them");
    assert_eq!(codecs(&stored), Compression::ALL);
    let all = records(&stored);
    assert_eq!(all.len(), 100);
    assert!(all.iter().enumerate().all(|(i, r)| r.0 == i as i64));
    assert_eq!(all[20].2, format!("gzip-0 {}", "payload ".repeat(8)).into_bytes());

    // A follower appends the fetched bytes (CRC checked, nothing decompressed) and holds
    // the same bytes; so does the leader's log reopened (recovery scans CRCs only).
    let mut follower = PartitionLog::open(&dir.path().join("follower"), LogConfig::default()).unwrap();
    let info = follower.append_as_follower(&stored).unwrap();
    assert_eq!((info.records, info.bytes), (100, stored.len()));
    assert_eq!(&follower.read(0, i64::MAX, 1 << 20).unwrap()[..], &stored[..]);
    leader.close().unwrap();
    let reopened = PartitionLog::open(&dir.path().join("leader"), LogConfig::default()).unwrap();
    assert_eq!(reopened.log_end_offset(), 100);
    assert_eq!(&reopened.read(0, i64::MAX, 1 << 20).unwrap()[..], &stored[..]);
}

#[test]
fn decompression_is_bounded_by_max_message_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { max_batch_bytes: 64 * 1024, ..LogConfig::default() };
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
        // 1 MiB of zeros in one record: a few KiB compressed, far past 64 KiB decompressed.
        let mut builder = BatchBuilder::new().compression(codec);
        builder.push(None, Some(&vec![0u8; 1024 * 1024]), 1);
        let mut bomb = builder.build().to_vec();
        assert!(bomb.len() < 64 * 1024, "{codec}: {} bytes compressed", bomb.len());
        let error = log.append_as_leader(&mut bomb, 0).unwrap_err();
        assert!(matches!(error, LogError::CorruptBatch(_)), "{codec}: {error}");
        assert_eq!(error.error_code(), insync_types::ErrorCode::MESSAGE_TOO_LARGE, "{codec}: {error}");
        assert_eq!(log.log_end_offset(), 0, "nothing written");

        // Damaged compressed records (CRC made right) are CORRUPT_MESSAGE.
        let mut damaged = batch(codec, "x", 5);
        let last = damaged.len() - 3;
        damaged[last] ^= 0x5a;
        damaged.truncate(damaged.len() - 1);
        let length = (damaged.len() - 12) as i32;
        damaged[8..12].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&damaged[21..]);
        damaged[17..21].copy_from_slice(&crc.to_be_bytes());
        let error = log.append_as_leader(&mut damaged, 0).unwrap_err();
        assert_eq!(error.error_code(), insync_types::ErrorCode::CORRUPT_MESSAGE, "{codec}: {error}");
    }
    // An unknown codec id is UNSUPPORTED_COMPRESSION_TYPE.
    let mut unknown = batch(Compression::None, "u", 2);
    unknown[22] |= 5;
    let crc = crc32c::crc32c(&unknown[21..]);
    unknown[17..21].copy_from_slice(&crc.to_be_bytes());
    let error = log.append_as_leader(&mut unknown, 0).unwrap_err();
    assert_eq!(error.error_code(), insync_types::ErrorCode::UNSUPPORTED_COMPRESSION_TYPE, "{error}");
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn a_topic_compression_type_re_encodes_other_codecs() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { compression: Some(Compression::Zstd), ..LogConfig::default() };
    let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    let mut expected = Vec::new();
    for codec in [Compression::Gzip, Compression::None, Compression::Zstd, Compression::Snappy] {
        let mut bytes = batch(codec, codec.name(), 10);
        let sent = bytes.clone();
        let info = log.append_as_leader(&mut bytes, 2).unwrap();
        let stored = log.read(info.base_offset, i64::MAX, 1 << 20).unwrap();
        let (header, stored_batch) = iter_batches(&stored).next().unwrap().unwrap();
        assert_eq!(header.codec(), Ok(Compression::Zstd), "{codec} is stored as zstd");
        assert_eq!(info.bytes, stored_batch.len());
        let sent_header = parse_header(&sent).unwrap();
        assert_eq!(
            (header.producer_id, header.producer_epoch, header.base_sequence, header.records_count),
            (sent_header.producer_id, sent_header.producer_epoch, sent_header.base_sequence, sent_header.records_count)
        );
        assert_eq!(
            (header.base_timestamp, header.max_timestamp),
            (sent_header.base_timestamp, sent_header.max_timestamp)
        );
        assert_eq!((header.base_offset, header.partition_leader_epoch), (info.base_offset, 2));
        // The caller's buffer got the offsets and epoch, in the producer's codec.
        let stamped = parse_header(&bytes).unwrap();
        assert_eq!((stamped.base_offset, stamped.codec()), (info.base_offset, Ok(codec)));
        if codec == Compression::Zstd {
            assert_eq!(stored_batch, &bytes[..], "already zstd: stored as sent");
        }
        expected.extend(records(&bytes));
    }
    assert_eq!(records(&log.read(0, i64::MAX, 1 << 20).unwrap()), expected);

    // Changed live to uncompressed: the next batch is stored without compression.
    log.set_config(LogConfig { compression: Some(Compression::None), ..config });
    let mut bytes = batch(Compression::Lz4, "lz4", 3);
    let info = log.append_as_leader(&mut bytes, 2).unwrap();
    let stored = log.read(info.base_offset, i64::MAX, 1 << 20).unwrap();
    assert_eq!(codecs(&stored), [Compression::None]);
    assert_eq!(records(&stored), records(&bytes));
}

#[test]
fn a_re_encoded_batch_must_fit_max_message_bytes_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = BatchBuilder::new().compression(Compression::Gzip);
    builder.push(None, Some(&[7u8; 1900]), 1);
    let mut bytes = builder.build().to_vec();
    // Decompressed, the records (1909 bytes) fit 1950; as an uncompressed batch (61-byte header
    // plus the records) they do not.
    let config = LogConfig { max_batch_bytes: 1950, compression: Some(Compression::None), ..LogConfig::default() };
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    let error = log.append_as_leader(&mut bytes, 0).unwrap_err();
    assert!(matches!(error, LogError::MessageTooLarge { max_bytes: 1950, .. }), "{error}");
    assert_eq!(log.log_end_offset(), 0);
}
