//! Kafka RecordBatch v2 (magic 2), byte for byte (Kafka `DefaultRecordBatch`,
//! `DefaultRecord`): building batches on the producer side, validating untrusted batches on
//! the produce path, stamping offsets and leader epochs, decoding records, and iterating the
//! concatenated batches that segments and fetch responses hold.
//!
//! Layout (big-endian), offsets in bytes from the start of the batch:
//!
//! ```text
//!  0 baseOffset i64 | 8 batchLength i32 (bytes after this field) | 12 partitionLeaderEpoch i32
//! 16 magic i8 (=2)  | 17 crc u32 (CRC-32C of bytes 21..end)       | 21 attributes i16
//! 23 lastOffsetDelta i32 | 27 baseTimestamp i64 | 35 maxTimestamp i64 | 43 producerId i64
//! 51 producerEpoch i16   | 53 baseSequence i32  | 57 recordsCount i32 | 61 records...
//! ```
//!
//! Each record: `length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
//! keyLength varint (-1 = null) | key | valueLength varint | value | headersCount varint |
//! headers (keyLength varint, key utf8, valueLength varint, value)`.
//!
//! A compressed batch (`attributes & 7` = 1 gzip, 2 snappy, 3 lz4, 4 zstd) has the same
//! header, uncompressed, and the records section compressed as one stream
//! ([`crate::compression`]); its CRC covers the compressed bytes. Validation and decoding
//! decompress the records section, never past a bound ([`validate_batch_bounded`]), then
//! walk the records exactly as for an uncompressed batch.
//!
//! Every decoder here works on `&[u8]` through a bounds-checked cursor and never panics on
//! any input: produce requests hand us bytes from the network. [`fuzz_batches`] is the
//! entry point a fuzzer calls.

use std::borrow::Cow;

use bytes::Bytes;
use insync_types::ErrorCode;

use crate::compression::{self, Compression};
use crate::varint::{put_varint, put_varlong, varint_size, varlong_size, Cursor, CursorError};

/// Size of the fixed batch header, up to and including `recordsCount`
/// (Kafka `DefaultRecordBatch.RECORD_BATCH_OVERHEAD`).
pub const BATCH_HEADER_BYTES: usize = 61;
/// `baseOffset` + `batchLength`: the bytes in front of what `batchLength` counts
/// (Kafka `Records.LOG_OVERHEAD`).
pub const LOG_OVERHEAD: usize = 12;
/// The only magic value this crate reads or writes (Kafka `RecordBatch.MAGIC_VALUE_V2`).
pub const MAGIC_V2: i8 = 2;
/// Kafka `RecordBatch.NO_PARTITION_LEADER_EPOCH`: what a producer puts in the batch.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;
/// Kafka `RecordBatch.NO_TIMESTAMP`.
pub const NO_TIMESTAMP: i64 = -1;
/// The most bytes the records of one compressed batch may decompress to where no tighter
/// bound applies: readers ([`decode_records`]: consumers, tools, the fetch path) and
/// [`validate_batch`]. Twice the largest `max.message.bytes` (32 MiB), which bounds what a
/// leader accepts (`PartitionLog::append_as_leader`).
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// Smallest legal `batchLength`: the header after `LOG_OVERHEAD` with zero records.
const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32;

// Field offsets inside the header (Kafka `DefaultRecordBatch.*_OFFSET`).
const BASE_OFFSET_OFFSET: usize = 0;
const LENGTH_OFFSET: usize = 8;
const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const BASE_TIMESTAMP_OFFSET: usize = 27;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;
const RECORDS_COUNT_OFFSET: usize = 57;

// Attribute bits (Kafka `DefaultRecordBatch`).
const COMPRESSION_CODEC_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_MASK: i16 = 0x08;
const TRANSACTIONAL_FLAG_MASK: i16 = 0x10;
const CONTROL_FLAG_MASK: i16 = 0x20;

/// Why a batch was rejected. Produce answers `CORRUPT_MESSAGE` for all of them except an
/// unknown codec (`UNSUPPORTED_COMPRESSION_TYPE`) and records that decompress past the
/// bound (`MESSAGE_TOO_LARGE`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the header (or than `batchLength` announces).
    #[error("batch too short: need {needed} bytes, have {available}")]
    TooShort { needed: usize, available: usize },
    /// The magic byte is not 2; older message formats are not supported.
    #[error("unsupported magic {0} (only RecordBatch v2, magic 2, is supported)")]
    BadMagic(i8),
    /// `batchLength` is below the header size or does not match the bytes given.
    #[error("bad batch length {batch_length} for a buffer of {buffer_bytes} bytes")]
    BadLength { batch_length: i32, buffer_bytes: usize },
    /// The CRC-32C stored in the batch does not match its content.
    #[error("CRC-32C mismatch: batch says {expected:#010x}, content gives {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    /// The records inside do not decode, or disagree with the header.
    #[error("bad records: {0}")]
    BadRecords(String),
    /// A codec id Kafka does not define (attributes & 7 = 5, 6 or 7).
    #[error("unsupported compression codec {0} (Kafka defines 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)")]
    UnsupportedCompression(i16),
    /// The compressed records section does not decompress: damaged, truncated, or not in
    /// the codec's format.
    #[error("corrupt {codec} data: {reason}")]
    Decompression { codec: Compression, reason: String },
    /// The compressed records section decompresses to more than the bound (a leader's is
    /// the topic's `max.message.bytes`): a decompression bomb, or a batch too large.
    #[error("{codec} records decompress to more than {max_bytes} bytes")]
    DecompressedTooLarge { codec: Compression, max_bytes: usize },
}

impl BatchError {
    /// The Kafka error code for a produce response (Kafka `LogValidator`,
    /// `CorruptRecordException` → CORRUPT_MESSAGE).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            BatchError::UnsupportedCompression(_) => ErrorCode::UNSUPPORTED_COMPRESSION_TYPE,
            // As Kafka's RecordTooLargeException: a Java producer splits the batch and
            // retries, where CORRUPT_MESSAGE would have it retry the same batch.
            BatchError::DecompressedTooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
            _ => ErrorCode::CORRUPT_MESSAGE,
        }
    }
}

fn records_error(what: &str, record_index: usize, error: CursorError) -> BatchError {
    let cause = match error {
        CursorError::Eof => "runs past the end of the batch",
        CursorError::VarintTooLong => "has an over-long varint",
    };
    BatchError::BadRecords(format!("record {record_index}: {what} {cause}"))
}

/// One decoded record, with absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `baseOffset + offsetDelta`.
    pub offset: i64,
    /// `baseTimestamp + timestampDelta`, in ms since the epoch.
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Header keys are UTF-8 strings in Kafka; values are bytes and may be null.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// The 61-byte batch header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Offset of the last record: `baseOffset + lastOffsetDelta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.saturating_add(i64::from(self.last_offset_delta))
    }

    /// The offset right after this batch; the log end offset once it is appended.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// Bytes the whole batch takes: `LOG_OVERHEAD + batchLength`.
    pub fn total_size_bytes(&self) -> usize {
        LOG_OVERHEAD + usize::try_from(self.batch_length).unwrap_or(0)
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_CODEC_MASK
    }

    /// The codec of the records section; ids 5-7 are `UnsupportedCompression`.
    pub fn codec(&self) -> Result<Compression, BatchError> {
        Compression::from_id(self.compression())
    }

    /// Timestamp type bit: false = CreateTime, true = LogAppendTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_MASK != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG_MASK != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG_MASK != 0
    }
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(bytes)
}

/// Decodes the 61-byte header. Checks only what the header alone can tell: enough bytes,
/// magic 2, `batchLength` at least the header size. The CRC and records are checked by
/// [`validate_batch`].
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::TooShort { needed: BATCH_HEADER_BYTES, available: buf.len() });
    }
    let magic = buf[MAGIC_OFFSET] as i8;
    if magic != MAGIC_V2 {
        return Err(BatchError::BadMagic(magic));
    }
    let batch_length = be_i32(buf, LENGTH_OFFSET);
    if batch_length < MIN_BATCH_LENGTH {
        return Err(BatchError::BadLength { batch_length, buffer_bytes: buf.len() });
    }
    Ok(BatchHeader {
        base_offset: be_i64(buf, BASE_OFFSET_OFFSET),
        batch_length,
        partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH_OFFSET),
        magic,
        crc: be_i32(buf, CRC_OFFSET) as u32,
        attributes: be_i16(buf, ATTRIBUTES_OFFSET),
        last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_OFFSET),
        base_timestamp: be_i64(buf, BASE_TIMESTAMP_OFFSET),
        max_timestamp: be_i64(buf, MAX_TIMESTAMP_OFFSET),
        producer_id: be_i64(buf, PRODUCER_ID_OFFSET),
        producer_epoch: be_i16(buf, PRODUCER_EPOCH_OFFSET),
        base_sequence: be_i32(buf, BASE_SEQUENCE_OFFSET),
        records_count: be_i32(buf, RECORDS_COUNT_OFFSET),
    })
}

/// CRC-32C over `attributes..end`, the span Kafka `DefaultRecordBatch.computeChecksum`
/// covers. The base offset, length, leader epoch and magic are outside it, which is what
/// lets a broker stamp offsets and epochs without recomputing the CRC.
fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// The checks that need no record decoding: header, exact length, CRC, and a record count
/// consistent with `lastOffsetDelta`. This is what Kafka `DefaultRecordBatch.ensureValid`
/// plus `LogValidator.validateBatch` check on every batch; segment recovery and follower
/// appends use it (the leader already decoded the records when it accepted them).
pub(crate) fn check_batch_integrity(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_header(buf)?;
    if header.total_size_bytes() != buf.len() {
        return Err(BatchError::BadLength { batch_length: header.batch_length, buffer_bytes: buf.len() });
    }
    let actual = compute_crc(buf);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch { expected: header.crc, actual });
    }
    // Kafka LogValidator.validateBatch: "Record count must be > 0" and the offset range
    // implied by lastOffsetDelta must equal the record count.
    if header.records_count <= 0 {
        return Err(BatchError::BadRecords(format!("records count {} must be positive", header.records_count)));
    }
    if i64::from(header.last_offset_delta) + 1 != i64::from(header.records_count) {
        return Err(BatchError::BadRecords(format!(
            "last offset delta {} disagrees with records count {}",
            header.last_offset_delta, header.records_count
        )));
    }
    Ok(header)
}

/// Validates exactly one complete, untrusted batch, as the produce path must: exact length,
/// magic 2, CRC-32C, a known codec, and every record decodes with offset deltas 0..n-1 in
/// order, the declared count, and no trailing bytes (Kafka `DefaultRecordBatch.ensureValid`,
/// `LogValidator.validateBatch`/`validateRecord`, and the record iterator's "Incorrect
/// declared batch size" check). A compressed batch's records are decompressed first, to at
/// most [`DEFAULT_MAX_DECOMPRESSED_BYTES`]; see [`validate_batch_bounded`]. Never panics.
pub fn validate_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_batch_bounded(buf, DEFAULT_MAX_DECOMPRESSED_BYTES)
}

/// [`validate_batch`] with the records of a compressed batch decompressed to at most
/// `max_decompressed_bytes` (more: [`BatchError::DecompressedTooLarge`]); nothing is
/// allocated past that bound, whatever the compressed data claims. An uncompressed batch
/// allocates nothing.
pub fn validate_batch_bounded(buf: &[u8], max_decompressed_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = check_batch_integrity(buf)?;
    let records = records_section(&header, buf, max_decompressed_bytes)?;
    walk_records(&header, &records, |_| Ok(()))?;
    Ok(header)
}

/// The records of a batch whose header is checked: the bytes after the header, decompressed
/// (to at most `max_decompressed_bytes`) when the batch is compressed.
fn records_section<'a>(
    header: &BatchHeader,
    batch: &'a [u8],
    max_decompressed_bytes: usize,
) -> Result<Cow<'a, [u8]>, BatchError> {
    let raw = &batch[BATCH_HEADER_BYTES..header.total_size_bytes().min(batch.len())];
    match header.codec()? {
        Compression::None => Ok(Cow::Borrowed(raw)),
        codec => compression::decompress(codec, raw, max_decompressed_bytes).map(Cow::Owned),
    }
}

/// Re-encodes a batch with `codec` (Kafka `LogValidator.validateMessagesAndAssignOffsetsCompressed`
/// when a topic's `compression.type` differs from the producer's): validates it (decompressing
/// to at most `max_decompressed_bytes`), then writes the same header (offsets, producer id,
/// epoch and sequence, timestamps, count, the other attribute bits) with the new codec bits,
/// length and CRC, and the same record bytes compressed with `codec`
/// ([`Compression::None`]: uncompressed).
pub fn recompress_batch(
    batch: &[u8],
    codec: Compression,
    max_decompressed_bytes: usize,
) -> Result<Vec<u8>, BatchError> {
    let header = check_batch_integrity(batch)?;
    let records = records_section(&header, batch, max_decompressed_bytes)?;
    walk_records(&header, &records, |_| Ok(()))?;
    let compressed = compression::compress(codec, &records);
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + compressed.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
    out.extend_from_slice(&compressed);
    finish_header(&mut out, (header.attributes & !COMPRESSION_CODEC_MASK) | codec.id());
    Ok(out)
}

/// Sets `batchLength` from the buffer's size and the attributes, then the CRC over the final
/// bytes.
fn finish_header(batch: &mut [u8], attributes: i16) {
    let batch_length = (batch.len() - LOG_OVERHEAD) as i32;
    batch[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&batch_length.to_be_bytes());
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Overwrites `baseOffset` and `partitionLeaderEpoch`, as the leader does when it assigns
/// offsets (Kafka `DefaultRecordBatch.setLastOffset`/`setPartitionLeaderEpoch`). Both
/// fields lie before `attributes`, outside the CRC, so the CRC stays valid and is not
/// recomputed. `buf` must hold at least a header; callers validate first.
pub fn stamp_batch(buf: &mut [u8], base_offset: i64, partition_leader_epoch: i32) {
    debug_assert!(buf.len() >= BATCH_HEADER_BYTES, "stamp_batch on {} bytes", buf.len());
    if buf.len() < PARTITION_LEADER_EPOCH_OFFSET + 4 {
        return;
    }
    buf[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    buf[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&partition_leader_epoch.to_be_bytes());
}

/// One record as slices into the batch (no copies), produced by [`walk_records`].
struct RawRecord<'a> {
    offset_delta: i32,
    timestamp_delta: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    /// The raw header section and its count; decoded again only by `decode_records`.
    headers: &'a [u8],
    headers_count: i32,
}

/// Reads a nullable byte field: varint length (-1 = null) then the bytes.
fn nullable_bytes<'a>(
    cursor: &mut Cursor<'a>,
    what: &str,
    record_index: usize,
) -> Result<Option<&'a [u8]>, BatchError> {
    let length = cursor.varint().map_err(|e| records_error(what, record_index, e))?;
    match length {
        -1 => Ok(None),
        length if length < 0 => {
            Err(BatchError::BadRecords(format!("record {record_index}: {what} length {length} is negative")))
        }
        length => cursor.take(length as usize).map(Some).map_err(|e| records_error(what, record_index, e)),
    }
}

/// Walks a header section of `count` headers, calling `visit` for each. Header keys must be
/// non-null UTF-8 (Kafka `DefaultRecord.readHeaders`: "Invalid negative header key size").
fn walk_headers<'a>(
    headers: &'a [u8],
    count: i32,
    record_index: usize,
    mut visit: impl FnMut(&'a str, Option<&'a [u8]>),
) -> Result<usize, BatchError> {
    let mut cursor = Cursor::new(headers);
    for _ in 0..count {
        let key_length = cursor.varint().map_err(|e| records_error("header key", record_index, e))?;
        if key_length < 0 {
            return Err(BatchError::BadRecords(format!(
                "record {record_index}: header key length {key_length} is negative"
            )));
        }
        let key = cursor.take(key_length as usize).map_err(|e| records_error("header key", record_index, e))?;
        let key = std::str::from_utf8(key)
            .map_err(|_| BatchError::BadRecords(format!("record {record_index}: header key is not UTF-8")))?;
        let value = nullable_bytes(&mut cursor, "header value", record_index)?;
        visit(key, value);
    }
    Ok(cursor.position())
}

/// Decodes one record at the cursor (Kafka `DefaultRecord.readFrom`), checking that the
/// fields consume exactly the record's declared length.
fn read_record<'a>(cursor: &mut Cursor<'a>, record_index: usize) -> Result<RawRecord<'a>, BatchError> {
    let length = cursor.varint().map_err(|e| records_error("length", record_index, e))?;
    if length < 0 {
        return Err(BatchError::BadRecords(format!("record {record_index}: length {length} is negative")));
    }
    let body = cursor.take(length as usize).map_err(|e| records_error("body", record_index, e))?;
    let mut body_cursor = Cursor::new(body);
    let _attributes = body_cursor.i8().map_err(|e| records_error("attributes", record_index, e))?;
    let timestamp_delta = body_cursor.varlong().map_err(|e| records_error("timestamp delta", record_index, e))?;
    let offset_delta = body_cursor.varint().map_err(|e| records_error("offset delta", record_index, e))?;
    let key = nullable_bytes(&mut body_cursor, "key", record_index)?;
    let value = nullable_bytes(&mut body_cursor, "value", record_index)?;
    let headers_count = body_cursor.varint().map_err(|e| records_error("headers count", record_index, e))?;
    if headers_count < 0 {
        return Err(BatchError::BadRecords(format!(
            "record {record_index}: headers count {headers_count} is negative"
        )));
    }
    let headers_start = body_cursor.position();
    let headers = &body[headers_start..];
    let headers_bytes = walk_headers(headers, headers_count, record_index, |_, _| {})?;
    if headers_bytes != headers.len() {
        // Kafka DefaultRecord.readFrom: "Invalid record size: expected to read N bytes in
        // record payload, but instead read M".
        return Err(BatchError::BadRecords(format!(
            "record {record_index}: declared length {length} but fields end after {} bytes",
            headers_start + headers_bytes
        )));
    }
    Ok(RawRecord { offset_delta, timestamp_delta, key, value, headers, headers_count })
}

/// Decodes every record of a batch whose header and CRC are already checked, from its
/// (decompressed) records section, enforcing the declared count, offset deltas 0..n-1 in
/// order, and no trailing bytes.
fn walk_records<'a>(
    header: &BatchHeader,
    records: &'a [u8],
    mut visit: impl FnMut(RawRecord<'a>) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let mut cursor = Cursor::new(records);
    // Bounded: each record consumes at least one byte, so a huge declared count fails at
    // the end of the buffer after at most `records.len()` iterations.
    let records_count = usize::try_from(header.records_count).unwrap_or(0);
    for record_index in 0..records_count {
        if cursor.remaining() == 0 {
            return Err(BatchError::BadRecords(format!(
                "batch declares {} records but holds only {record_index}",
                header.records_count
            )));
        }
        let record = read_record(&mut cursor, record_index)?;
        if i64::from(record.offset_delta) != record_index as i64 {
            return Err(BatchError::BadRecords(format!(
                "record {record_index} has offset delta {}; expected {record_index}",
                record.offset_delta
            )));
        }
        visit(record)?;
    }
    if cursor.remaining() != 0 {
        return Err(BatchError::BadRecords(format!(
            "{} bytes remain after the {} declared records",
            cursor.remaining(),
            header.records_count
        )));
    }
    Ok(())
}

/// Decodes the records of one batch into owned [`Record`]s with absolute offsets and
/// timestamps. Validates like [`validate_batch`] first (a compressed batch is decompressed
/// once, to at most [`DEFAULT_MAX_DECOMPRESSED_BYTES`]), so it is safe on untrusted input.
pub fn decode_records(batch: &[u8]) -> Result<Vec<Record>, BatchError> {
    decode_records_bounded(batch, DEFAULT_MAX_DECOMPRESSED_BYTES)
}

/// [`decode_records`] with the decompression bound of [`validate_batch_bounded`].
pub fn decode_records_bounded(batch: &[u8], max_decompressed_bytes: usize) -> Result<Vec<Record>, BatchError> {
    let header = check_batch_integrity(batch)?;
    let records = records_section(&header, batch, max_decompressed_bytes)?;
    walk_records(&header, &records, |_| Ok(()))?;
    // Capacity from the validated count is bounded by the records' size (>= 7 bytes each).
    let mut out = Vec::with_capacity(usize::try_from(header.records_count).unwrap_or(0));
    walk_records(&header, &records, |raw| {
        let mut headers = Vec::new();
        walk_headers(raw.headers, raw.headers_count, out.len(), |key, value| {
            headers.push((key.to_owned(), value.map(Bytes::copy_from_slice)));
        })?;
        out.push(Record {
            offset: header.base_offset.saturating_add(i64::from(raw.offset_delta)),
            timestamp_ms: header.base_timestamp.wrapping_add(raw.timestamp_delta),
            key: raw.key.map(Bytes::copy_from_slice),
            value: raw.value.map(Bytes::copy_from_slice),
            headers,
        });
        Ok(())
    })?;
    Ok(out)
}

/// One record borrowed from its batch: what a reader that copies nothing sees
/// ([`visit_records`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Validates one batch as [`decode_records`] does (CRC, record framing, headers; a
/// compressed batch decompressed once, bounded), then visits its records in order without
/// copying them: for readers that only count or inspect (`insync consume --perf`, the
/// end-to-end latency tool). Nothing is visited unless the whole batch is valid.
pub fn visit_records(batch: &[u8], mut visit: impl FnMut(RecordView<'_>)) -> Result<(), BatchError> {
    let header = check_batch_integrity(batch)?;
    let records = records_section(&header, batch, DEFAULT_MAX_DECOMPRESSED_BYTES)?;
    // Reading a record checks its headers too: the first pass validates everything.
    walk_records(&header, &records, |_| Ok(()))?;
    walk_records(&header, &records, |raw| {
        visit(RecordView {
            offset: header.base_offset.saturating_add(i64::from(raw.offset_delta)),
            timestamp_ms: header.base_timestamp.wrapping_add(raw.timestamp_delta),
            key: raw.key,
            value: raw.value,
        });
        Ok(())
    })
}

/// Iterator over concatenated batches (a segment slice or a fetch response), yielding each
/// header and its bytes. Like Kafka `ByteBufferLogInputStream.nextBatch`, it checks the
/// length and magic as soon as they are in the buffer, and stops cleanly (returns `None`)
/// at a partial trailing batch, because a fetch may cut the last batch. It does not check
/// CRCs; use [`validate_batch`] on each item for that. After an error it yields nothing.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    position: usize,
    failed: bool,
}

/// Iterates the whole batches in `buf`; see [`BatchIter`].
pub fn iter_batches(buf: &[u8]) -> BatchIter<'_> {
    BatchIter { buf, position: 0, failed: false }
}

impl<'a> BatchIter<'a> {
    /// Bytes of whole batches yielded so far: where a partial trailing batch starts once
    /// the iterator is exhausted.
    pub fn position(&self) -> usize {
        self.position
    }

    fn fail(&mut self, error: BatchError) -> Option<Result<(BatchHeader, &'a [u8]), BatchError>> {
        self.failed = true;
        Some(Err(error))
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = &self.buf[self.position..];
        if rest.len() < LOG_OVERHEAD {
            return None;
        }
        let batch_length = be_i32(rest, LENGTH_OFFSET);
        if batch_length < MIN_BATCH_LENGTH {
            return self.fail(BatchError::BadLength { batch_length, buffer_bytes: rest.len() });
        }
        if rest.len() <= MAGIC_OFFSET {
            return None;
        }
        let magic = rest[MAGIC_OFFSET] as i8;
        if magic != MAGIC_V2 {
            return self.fail(BatchError::BadMagic(magic));
        }
        let total = LOG_OVERHEAD + batch_length as usize;
        if rest.len() < total {
            return None;
        }
        let batch = &rest[..total];
        match parse_header(batch) {
            Ok(header) => {
                self.position += total;
                Some(Ok((header, batch)))
            }
            Err(error) => self.fail(error),
        }
    }
}

/// Builds one RecordBatch v2, the way Kafka `MemoryRecordsBuilder` does: base offset 0 (the
/// leader assigns real offsets), partition leader epoch -1, base timestamp = first record's
/// timestamp, CreateTime, uncompressed unless [`BatchBuilder::compression`] says otherwise.
///
/// Records are encoded straight into the final buffer behind a reserved header, so for an
/// uncompressed batch [`BatchBuilder::build`] only fills in the header and CRC: one buffer,
/// no copy. Use [`BatchBuilder::with_capacity`] to pre-size it and avoid growth.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    records_count: i32,
    base_timestamp: Option<i64>,
    /// Largest record timestamp so far; `None` until the first push. Kafka starts from
    /// `NO_TIMESTAMP` (-1), which differs only for negative timestamps that Kafka's
    /// producer rejects anyway.
    max_timestamp: Option<i64>,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    compression: Compression,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder::new()
    }
}

impl BatchBuilder {
    /// An empty builder without a producer id (idempotence off: -1, -1, -1).
    pub fn new() -> BatchBuilder {
        BatchBuilder::with_capacity(256)
    }

    /// An empty builder whose buffer holds `capacity_bytes` before it must grow.
    pub fn with_capacity(capacity_bytes: usize) -> BatchBuilder {
        let mut buf = Vec::with_capacity(capacity_bytes.max(BATCH_HEADER_BYTES));
        buf.resize(BATCH_HEADER_BYTES, 0);
        BatchBuilder {
            buf,
            records_count: 0,
            base_timestamp: None,
            max_timestamp: None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            compression: Compression::None,
        }
    }

    /// Compresses the records section with `codec` on [`BatchBuilder::build`] (Kafka's
    /// producer `compression.type`).
    pub fn compression(mut self, codec: Compression) -> Self {
        self.compression = codec;
        self
    }

    /// Sets the idempotent-producer fields (Kafka KIP-98).
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Appends a record without headers.
    pub fn push(&mut self, key: Option<&[u8]>, value: Option<&[u8]>, timestamp_ms: i64) {
        self.push_with_headers(key, value, timestamp_ms, &[]);
    }

    /// Appends a record with headers (Kafka `DefaultRecord.writeTo`).
    pub fn push_with_headers(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: i64,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        let base_timestamp = *self.base_timestamp.get_or_insert(timestamp_ms);
        self.max_timestamp = Some(self.max_timestamp.map_or(timestamp_ms, |m| m.max(timestamp_ms)));
        let timestamp_delta = timestamp_ms.wrapping_sub(base_timestamp);
        let offset_delta = self.records_count;

        let body_size = 1
            + varlong_size(timestamp_delta)
            + varint_size(offset_delta)
            + nullable_size(key)
            + nullable_size(value)
            + varint_size(headers.len() as i32)
            + headers.iter().map(|(k, v)| varint_size(k.len() as i32) + k.len() + nullable_size(*v)).sum::<usize>();
        self.buf.reserve(varint_size(body_size as i32) + body_size);

        put_varint(&mut self.buf, body_size as i32);
        let body_start = self.buf.len();
        self.buf.push(0); // record attributes: unused in v2
        put_varlong(&mut self.buf, timestamp_delta);
        put_varint(&mut self.buf, offset_delta);
        put_nullable(&mut self.buf, key);
        put_nullable(&mut self.buf, value);
        put_varint(&mut self.buf, headers.len() as i32);
        for (header_key, header_value) in headers {
            put_varint(&mut self.buf, header_key.len() as i32);
            self.buf.extend_from_slice(header_key.as_bytes());
            put_nullable(&mut self.buf, *header_value);
        }
        debug_assert_eq!(self.buf.len() - body_start, body_size);
        self.records_count += 1;
    }

    /// Records pushed so far.
    pub fn len_records(&self) -> usize {
        self.records_count as usize
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.records_count == 0
    }

    /// Size of the batch `build` would return now: exact for uncompressed batches, an upper
    /// estimate for compressed ones (the records before compression).
    pub fn estimated_size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Compresses the records if asked, fills the header and CRC (over the final bytes) and
    /// returns the batch. An empty builder yields a batch with zero records, which
    /// [`validate_batch`] rejects, as Kafka would.
    pub fn build(self) -> Bytes {
        let BatchBuilder {
            mut buf,
            records_count,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            compression,
        } = self;
        if compression != Compression::None {
            let compressed = compression::compress(compression, &buf[BATCH_HEADER_BYTES..]);
            buf.truncate(BATCH_HEADER_BYTES);
            buf.extend_from_slice(&compressed);
        }
        let header = &mut buf[..BATCH_HEADER_BYTES];
        header[BASE_OFFSET_OFFSET..8].copy_from_slice(&0i64.to_be_bytes());
        header[PARTITION_LEADER_EPOCH_OFFSET..16].copy_from_slice(&NO_PARTITION_LEADER_EPOCH.to_be_bytes());
        header[MAGIC_OFFSET] = MAGIC_V2 as u8;
        header[LAST_OFFSET_DELTA_OFFSET..27].copy_from_slice(&(records_count - 1).to_be_bytes());
        header[BASE_TIMESTAMP_OFFSET..35].copy_from_slice(&base_timestamp.unwrap_or(NO_TIMESTAMP).to_be_bytes());
        header[MAX_TIMESTAMP_OFFSET..43].copy_from_slice(&max_timestamp.unwrap_or(NO_TIMESTAMP).to_be_bytes());
        header[PRODUCER_ID_OFFSET..51].copy_from_slice(&producer_id.to_be_bytes());
        header[PRODUCER_EPOCH_OFFSET..53].copy_from_slice(&producer_epoch.to_be_bytes());
        header[BASE_SEQUENCE_OFFSET..57].copy_from_slice(&base_sequence.to_be_bytes());
        header[RECORDS_COUNT_OFFSET..61].copy_from_slice(&records_count.to_be_bytes());
        finish_header(&mut buf, compression.id());
        Bytes::from(buf)
    }
}

fn nullable_size(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varint_size(-1),
        Some(bytes) => varint_size(bytes.len() as i32) + bytes.len(),
    }
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i32);
            out.extend_from_slice(bytes);
        }
    }
}

/// Fuzzing entry point: runs every decoder on arbitrary bytes and checks that they agree.
/// It must never panic; a `cargo fuzz` target is one line:
/// `fuzz_target!(|data: &[u8]| insync_log::batch::fuzz_batches(data));`
///
/// Compressed records are decompressed to at most [`fuzz_decompression_bound`] of the
/// input (a fuzzer holds a run to a constant times its input; a broker's bound is the
/// topic's `max.message.bytes`). Bytes whose CRC does not match are tried again with the
/// CRC made right, so that mutations behind it (records, compressed streams) reach the
/// decoders too.
///
/// ```
/// insync_log::batch::fuzz_batches(b"\x00\x01garbage");
/// ```
pub fn fuzz_batches(data: &[u8]) {
    let bound = fuzz_decompression_bound(data.len());
    let _ = parse_header(data);
    let fuzz_one = |batch: &[u8]| -> Result<(), BatchError> {
        let header = validate_batch_bounded(batch, bound)?;
        let records = decode_records_bounded(batch, bound).expect("a valid batch decodes");
        assert_eq!(records.len() as i64, i64::from(header.records_count));
        let mut restamped = batch.to_vec();
        stamp_batch(&mut restamped, 42, 7);
        assert!(check_batch_integrity(&restamped).is_ok(), "stamping kept the CRC");
        Ok(())
    };
    if let Err(BatchError::CrcMismatch { .. }) = fuzz_one(data) {
        let mut fixed = data.to_vec();
        let crc = compute_crc(&fixed);
        fixed[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        let _ = fuzz_one(&fixed);
    }
    let mut iter = iter_batches(data);
    let mut whole_bytes = 0;
    for item in iter.by_ref().take(data.len()) {
        match item {
            Ok((header, bytes)) => {
                assert_eq!(header.total_size_bytes(), bytes.len());
                whole_bytes += bytes.len();
                let _ = validate_batch_bounded(bytes, bound);
            }
            Err(_) => break,
        }
    }
    assert_eq!(iter.position(), whole_bytes);
}

/// The decompression bound [`fuzz_batches`] uses for an input of `input_bytes`: the input's
/// size plus 1 KiB, so that a fuzzer's per-input allocation budget holds.
pub fn fuzz_decompression_bound(input_bytes: usize) -> usize {
    input_bytes.saturating_add(1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A batch computed by hand from the Kafka protocol spec: one record, key null, value
    /// "hello", timestamp 1_700_000_000_000, no producer id, base offset 0, epoch -1.
    fn hand_made_batch() -> Vec<u8> {
        let mut batch = Vec::new();
        batch.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
        batch.extend_from_slice(&61i32.to_be_bytes()); // batchLength = 49 + 12-byte record
        batch.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
        batch.push(2); // magic
        batch.extend_from_slice(&[0, 0, 0, 0]); // crc, filled below
        batch.extend_from_slice(&0i16.to_be_bytes()); // attributes
        batch.extend_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta
        batch.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // baseTimestamp
        batch.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // maxTimestamp
        batch.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
        batch.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
        batch.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
        batch.extend_from_slice(&1i32.to_be_bytes()); // recordsCount
                                                      // Record: length 11 → zigzag 22 = 0x16; attributes 0; timestampDelta 0; offsetDelta
                                                      // 0; keyLength -1 → 0x01; valueLength 5 → 0x0a; "hello"; headersCount 0.
        batch.extend_from_slice(&[0x16, 0x00, 0x00, 0x00, 0x01, 0x0a]);
        batch.extend_from_slice(b"hello");
        batch.push(0x00);
        assert_eq!(batch.len(), 73);
        batch
    }

    /// CRC-32C of bytes 21..73 of the batch above, computed independently with a bitwise
    /// Castagnoli implementation (reflected polynomial 0x82F63B78) in Python.
    const HAND_MADE_CRC: u32 = 0xE641_A44B;

    #[test]
    fn crc32c_is_castagnoli() {
        // The CRC-32C check value from the CRC catalogue.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn hand_made_fixture_matches_builder_byte_for_byte() {
        let mut expected = hand_made_batch();
        let crc = crc32c::crc32c(&expected[21..]);
        assert_eq!(crc, HAND_MADE_CRC);
        expected[17..21].copy_from_slice(&crc.to_be_bytes());

        let mut builder = BatchBuilder::new();
        builder.push(None, Some(b"hello"), 1_700_000_000_000);
        assert_eq!(builder.estimated_size_bytes(), 73);
        let built = builder.build();
        assert_eq!(&built[..], &expected[..]);

        let header = validate_batch(&expected).unwrap();
        assert_eq!(header.crc, HAND_MADE_CRC);
        assert_eq!(header.records_count, 1);
        assert_eq!(header.last_offset(), 0);
        assert_eq!(header.next_offset(), 1);
        assert_eq!(header.total_size_bytes(), 73);
        assert_eq!(header.compression(), 0);
        assert!(!header.is_transactional() && !header.is_control());
        let records = decode_records(&expected).unwrap();
        assert_eq!(
            records,
            vec![Record {
                offset: 0,
                timestamp_ms: 1_700_000_000_000,
                key: None,
                value: Some(Bytes::from_static(b"hello")),
                headers: vec![],
            }]
        );
    }

    #[test]
    fn visiting_sees_what_decoding_copies_and_nothing_of_a_damaged_batch() {
        let mut builder = BatchBuilder::new();
        builder.push(Some(b"k1"), Some(b"v1"), 7);
        builder.push(None, None, 9);
        let mut batch = builder.build().to_vec();
        stamp_batch(&mut batch, 40, 2);
        let mut seen = Vec::new();
        visit_records(&batch, |r| {
            seen.push((r.offset, r.timestamp_ms, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)))
        })
        .unwrap();
        let decoded: Vec<_> = decode_records(&batch)
            .unwrap()
            .into_iter()
            .map(|r| (r.offset, r.timestamp_ms, r.key.map(|b| b.to_vec()), r.value.map(|b| b.to_vec())))
            .collect();
        assert_eq!(seen, decoded);
        assert_eq!(seen[0], (40, 7, Some(b"k1".to_vec()), Some(b"v1".to_vec())));
        let last = batch.len() - 2;
        batch[last] ^= 0xff;
        let mut visited = 0;
        assert!(visit_records(&batch, |_| visited += 1).is_err());
        assert_eq!(visited, 0);
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let mut batch = hand_made_batch();
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        stamp_batch(&mut batch, 1234, 9);
        let header = validate_batch(&batch).unwrap();
        assert_eq!(header.base_offset, 1234);
        assert_eq!(header.partition_leader_epoch, 9);
        assert_eq!(decode_records(&batch).unwrap()[0].offset, 1234);
    }

    #[test]
    fn validation_rejects_each_kind_of_damage() {
        let mut builder = BatchBuilder::new();
        builder.push(Some(b"k"), Some(b"v"), 5);
        builder.push(None, None, 6);
        let good = builder.build().to_vec();
        assert!(validate_batch(&good).is_ok());

        assert!(matches!(validate_batch(&good[..60]), Err(BatchError::TooShort { .. })));
        assert!(matches!(validate_batch(&good[..good.len() - 1]), Err(BatchError::BadLength { .. })));
        let mut bad_magic = good.clone();
        bad_magic[16] = 1;
        assert_eq!(validate_batch(&bad_magic), Err(BatchError::BadMagic(1)));
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 0x40;
        assert!(matches!(validate_batch(&flipped), Err(BatchError::CrcMismatch { .. })));

        // Compression: set the codec bits and fix the CRC so only the codec is wrong. Gzip
        // over plain records is corrupt gzip data; ids 5-7 are no codec at all.
        let error = validate_batch(&with_codec_bits(&good, 1)).unwrap_err();
        assert!(matches!(error, BatchError::Decompression { codec: Compression::Gzip, .. }), "{error}");
        assert_eq!(error.error_code(), ErrorCode::CORRUPT_MESSAGE);
        for id in [5, 6, 7] {
            let error = validate_batch(&with_codec_bits(&good, id)).unwrap_err();
            assert_eq!(error, BatchError::UnsupportedCompression(id));
            assert_eq!(error.error_code(), ErrorCode::UNSUPPORTED_COMPRESSION_TYPE);
            assert!(matches!(decode_records(&with_codec_bits(&good, id)), Err(BatchError::UnsupportedCompression(_))));
        }

        // Count that disagrees with the records, with a correct CRC.
        let mut miscounted = good.clone();
        miscounted[57..61].copy_from_slice(&3i32.to_be_bytes());
        miscounted[23..27].copy_from_slice(&2i32.to_be_bytes());
        let crc = crc32c::crc32c(&miscounted[21..]);
        miscounted[17..21].copy_from_slice(&crc.to_be_bytes());
        let error = validate_batch(&miscounted).unwrap_err();
        assert!(matches!(error, BatchError::BadRecords(_)), "{error}");
        assert_eq!(error.error_code(), ErrorCode::CORRUPT_MESSAGE);

        let empty = BatchBuilder::new().build();
        assert!(matches!(validate_batch(&empty), Err(BatchError::BadRecords(_))));
    }

    /// `batch` with its codec bits set to `id` and the CRC made right again.
    fn with_codec_bits(batch: &[u8], id: i16) -> Vec<u8> {
        let mut out = batch.to_vec();
        let attributes = (be_i16(&out, ATTRIBUTES_OFFSET) & !COMPRESSION_CODEC_MASK) | id;
        finish_header(&mut out, attributes);
        out
    }

    /// `batch` (uncompressed) with its records section replaced by `records`, the codec bits
    /// set to `id`, and length and CRC made right.
    fn with_records_section(batch: &[u8], id: i16, records: &[u8]) -> Vec<u8> {
        let mut out = batch[..BATCH_HEADER_BYTES].to_vec();
        out.extend_from_slice(records);
        finish_header(&mut out, id);
        out
    }

    fn sample_builder(codec: Compression) -> BatchBuilder {
        let mut builder = BatchBuilder::new().producer(9, 2, 40).compression(codec);
        for i in 0..50u32 {
            let value = format!("value {i} value {i} value {i}");
            let headers: &[(&str, Option<&[u8]>)] = &[("trace", Some(b"abc")), ("none", None)];
            builder.push_with_headers(
                Some(&i.to_be_bytes()),
                Some(value.as_bytes()),
                1_700_000_000_000 + i64::from(i),
                headers,
            );
        }
        builder
    }

    #[test]
    fn every_codec_round_trips_through_the_builder() {
        let plain = sample_builder(Compression::None).build();
        let expected = decode_records(&plain).unwrap();
        for codec in Compression::ALL {
            let mut batch = sample_builder(codec).build().to_vec();
            let header = validate_batch(&batch).unwrap();
            assert_eq!(header.compression(), codec.id(), "{codec}");
            assert_eq!(header.codec(), Ok(codec));
            assert_eq!(header.total_size_bytes(), batch.len());
            assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (9, 2, 40));
            assert_eq!((header.records_count, header.last_offset_delta), (50, 49));
            assert_eq!(header.max_timestamp, 1_700_000_000_049);
            // The header is the uncompressed batch's, but for length, attributes and CRC.
            assert_eq!(batch[23..BATCH_HEADER_BYTES], plain[23..BATCH_HEADER_BYTES], "{codec}");
            if codec != Compression::None {
                assert!(batch.len() < plain.len(), "{codec}: {} >= {}", batch.len(), plain.len());
            }
            assert_eq!(decode_records(&batch).unwrap(), expected, "{codec}");
            stamp_batch(&mut batch, 1000, 3);
            assert_eq!(decode_records(&batch).unwrap()[49].offset, 1049);
            // The records section holds exactly the plain batch's records, compressed.
            let records = compression::decompress(codec, &batch[BATCH_HEADER_BYTES..], 1 << 20).unwrap();
            assert_eq!(records, plain[BATCH_HEADER_BYTES..]);
        }
    }

    #[test]
    fn hand_made_snappy_and_lz4_batches_decode() {
        let mut plain = hand_made_batch();
        let crc = crc32c::crc32c(&plain[21..]);
        plain[17..21].copy_from_slice(&crc.to_be_bytes());
        let records = &plain[BATCH_HEADER_BYTES..]; // 12 bytes: one record, value "hello"
        assert_eq!(records.len(), 12);
        let expected = decode_records(&plain).unwrap();

        // A raw snappy block (librdkafka, sarama): length varint 12, one literal of 12 bytes
        // (tag (12 - 1) << 2), the bytes.
        let raw_snappy = [&[12, 11 << 2][..], records].concat();
        // snappy-java's framing (the Java producer): magic, version 1, compatible 1, then the
        // block behind its big-endian length.
        let xerial = [
            &[0x82][..],
            b"SNAPPY\0",
            &1i32.to_be_bytes(),
            &1i32.to_be_bytes(),
            &(raw_snappy.len() as u32).to_be_bytes(),
            &raw_snappy,
        ]
        .concat();
        // Kafka's LZ4 frame: magic, FLG 0x60, BD 0x40, header checksum 0x82, one block of
        // 13 bytes (token 0xc0: 12 literals, no match), the end mark.
        let lz4 = [&[0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82, 13, 0, 0, 0, 0xc0][..], records, &[0, 0, 0, 0]].concat();
        for (id, section) in [(2, raw_snappy), (2, xerial), (3, lz4)] {
            let batch = with_records_section(&plain, id, &section);
            let header = validate_batch(&batch).unwrap();
            assert_eq!(header.compression(), id);
            assert_eq!(decode_records(&batch).unwrap(), expected, "codec {id}");
        }
    }

    #[test]
    fn a_bomb_is_refused_at_the_bound_and_garbage_is_corrupt() {
        // One record whose 2 MiB value of zeros compresses to a few KiB.
        let zeros = vec![0u8; 2 * 1024 * 1024];
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let mut builder = BatchBuilder::new().compression(codec);
            builder.push(None, Some(&zeros), 1);
            let batch = builder.build();
            assert!(batch.len() < 200 * 1024, "{codec}: {}", batch.len());
            let error = validate_batch_bounded(&batch, 1024 * 1024).unwrap_err();
            assert_eq!(error, BatchError::DecompressedTooLarge { codec, max_bytes: 1024 * 1024 });
            assert_eq!(error.error_code(), ErrorCode::MESSAGE_TOO_LARGE);
            assert!(decode_records_bounded(&batch, 1024 * 1024).is_err());
            assert_eq!(decode_records(&batch).unwrap()[0].value.as_ref().map(|v| v.len()), Some(zeros.len()));

            // Truncated compressed records (length and CRC made right): corrupt, no panic.
            let good = sample_builder(codec).build();
            for keep in [0, 1, 9, (good.len() - BATCH_HEADER_BYTES) / 2, good.len() - BATCH_HEADER_BYTES - 1] {
                let cut = with_records_section(&good, codec.id(), &good[BATCH_HEADER_BYTES..BATCH_HEADER_BYTES + keep]);
                let error = validate_batch(&cut).unwrap_err();
                assert!(matches!(error, BatchError::Decompression { .. }), "{codec} keeping {keep}: {error}");
                assert_eq!(error.error_code(), ErrorCode::CORRUPT_MESSAGE);
            }
            // Valid compressed data that holds one record too few: a records error.
            let mut fewer = sample_builder(Compression::None);
            fewer.push(None, None, 0);
            let extra = fewer.build();
            let section = compression::compress(codec, &extra[BATCH_HEADER_BYTES..]);
            let error = validate_batch(&with_records_section(&good, codec.id(), &section)).unwrap_err();
            assert!(matches!(error, BatchError::BadRecords(_)), "{codec}: {error}");
        }
    }

    #[test]
    fn recompressing_keeps_the_header_and_records() {
        for (from, to) in [
            (Compression::Gzip, Compression::Zstd),
            (Compression::None, Compression::Lz4),
            (Compression::Snappy, Compression::None),
            (Compression::Zstd, Compression::Snappy),
            (Compression::Lz4, Compression::Gzip),
        ] {
            let mut batch = sample_builder(from).build().to_vec();
            stamp_batch(&mut batch, 77, 5);
            let recompressed = recompress_batch(&batch, to, 1 << 20).unwrap();
            let before = validate_batch(&batch).unwrap();
            let after = validate_batch(&recompressed).unwrap();
            assert_eq!(after.codec(), Ok(to));
            assert_eq!(after.attributes & !COMPRESSION_CODEC_MASK, before.attributes & !COMPRESSION_CODEC_MASK);
            let same = |h: &BatchHeader| {
                (h.base_offset, h.partition_leader_epoch, h.last_offset_delta, h.base_timestamp, h.max_timestamp)
            };
            assert_eq!(same(&after), same(&before));
            assert_eq!(
                (after.producer_id, after.producer_epoch, after.base_sequence, after.records_count),
                (before.producer_id, before.producer_epoch, before.base_sequence, before.records_count)
            );
            assert_eq!(decode_records(&recompressed).unwrap(), decode_records(&batch).unwrap(), "{from} -> {to}");
        }
        let plain = sample_builder(Compression::None).build();
        assert_eq!(&recompress_batch(&plain, Compression::None, 1 << 20).unwrap()[..], &plain[..]);
        assert!(matches!(
            recompress_batch(&sample_builder(Compression::Gzip).build(), Compression::Zstd, 100),
            Err(BatchError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn iterator_stops_at_partial_tail_and_fails_on_garbage() {
        let mut builder = BatchBuilder::new();
        builder.push(None, Some(b"one"), 1);
        let one = builder.build();
        let mut concatenated = one.to_vec();
        concatenated.extend_from_slice(&one);
        concatenated.extend_from_slice(&one[..30]);
        let mut iter = iter_batches(&concatenated);
        assert!(iter.next().unwrap().is_ok());
        assert!(iter.next().unwrap().is_ok());
        assert!(iter.next().is_none());
        assert_eq!(iter.position(), 2 * one.len());

        let mut garbage = one.to_vec();
        garbage.extend_from_slice(&[0xAB; 40]);
        let mut iter = iter_batches(&garbage);
        assert!(iter.next().unwrap().is_ok());
        assert!(iter.next().unwrap().is_err());
        assert!(iter.next().is_none());
    }

    /// (key, value, timestamp, headers) of one generated record.
    type TestRecord = (Option<Vec<u8>>, Option<Vec<u8>>, i64, Vec<(String, Option<Vec<u8>>)>);

    fn arb_record() -> impl Strategy<Value = TestRecord> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            any::<i64>(),
            proptest::collection::vec(
                ("[a-z.-]{0,12}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20))),
                0..3,
            ),
        )
    }

    fn build(records: &[TestRecord]) -> Bytes {
        build_with(records, Compression::None)
    }

    fn build_with(records: &[TestRecord], codec: Compression) -> Bytes {
        let mut builder = BatchBuilder::new().producer(77, 3, 10).compression(codec);
        for (key, value, timestamp_ms, headers) in records {
            let headers: Vec<(&str, Option<&[u8]>)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
            builder.push_with_headers(key.as_deref(), value.as_deref(), *timestamp_ms, &headers);
        }
        assert_eq!(builder.len_records(), records.len());
        builder.build()
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            records in proptest::collection::vec(arb_record(), 1..20),
            base_offset in 0i64..i64::MAX / 2,
            epoch in 0i32..1000,
            codec in 0usize..5,
        ) {
            let codec = Compression::ALL[codec];
            let mut batch = build_with(&records, codec).to_vec();
            stamp_batch(&mut batch, base_offset, epoch);
            let header = validate_batch(&batch).unwrap();
            prop_assert_eq!(header.base_offset, base_offset);
            prop_assert_eq!(header.codec(), Ok(codec));
            prop_assert_eq!(header.partition_leader_epoch, epoch);
            prop_assert_eq!(header.producer_id, 77);
            prop_assert_eq!(header.producer_epoch, 3);
            prop_assert_eq!(header.base_sequence, 10);
            prop_assert_eq!(header.records_count as usize, records.len());
            prop_assert_eq!(header.base_timestamp, records[0].2);
            prop_assert_eq!(header.max_timestamp, records.iter().map(|r| r.2).max().unwrap());
            let decoded = decode_records(&batch).unwrap();
            prop_assert_eq!(decoded.len(), records.len());
            for (index, (record, (key, value, timestamp_ms, headers))) in decoded.iter().zip(&records).enumerate() {
                prop_assert_eq!(record.offset, base_offset + index as i64);
                prop_assert_eq!(record.timestamp_ms, *timestamp_ms);
                prop_assert_eq!(record.key.as_deref(), key.as_deref());
                prop_assert_eq!(record.value.as_deref(), value.as_deref());
                let decoded_headers: Vec<(String, Option<Vec<u8>>)> = record
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_ref().map(|v| v.to_vec())))
                    .collect();
                prop_assert_eq!(&decoded_headers, headers);
            }
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            fuzz_batches(&data);
        }

        #[test]
        fn random_bytes_behind_a_valid_header_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..256),
            records_count in -2i32..300,
        ) {
            // Random record bytes under a header with a correct length and CRC, so the
            // record decoder itself gets fuzzed (not just the CRC check).
            let mut batch = vec![0u8; BATCH_HEADER_BYTES];
            batch.extend_from_slice(&tail);
            let batch_length = (batch.len() - LOG_OVERHEAD) as i32;
            batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
            batch[16] = 2;
            batch[23..27].copy_from_slice(&(records_count.wrapping_sub(1)).to_be_bytes());
            batch[57..61].copy_from_slice(&records_count.to_be_bytes());
            let crc = crc32c::crc32c(&batch[21..]);
            batch[17..21].copy_from_slice(&crc.to_be_bytes());
            fuzz_batches(&batch);
        }

        #[test]
        fn mutated_valid_batches_never_panic(
            records in proptest::collection::vec(arb_record(), 1..5),
            mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
            fix_crc: bool,
        ) {
            let mut batch = build(&records).to_vec();
            for (index, byte) in &mutations {
                let at = index.index(batch.len());
                batch[at] = *byte;
            }
            if fix_crc && batch.len() >= BATCH_HEADER_BYTES {
                let crc = crc32c::crc32c(&batch[21..]);
                batch[17..21].copy_from_slice(&crc.to_be_bytes());
            }
            fuzz_batches(&batch);
            let mut doubled = batch.clone();
            doubled.extend_from_slice(&batch);
            doubled.truncate(cut.index(doubled.len() + 1));
            fuzz_batches(&doubled);
        }

        #[test]
        fn mutated_compressed_batches_never_panic(
            records in proptest::collection::vec(arb_record(), 1..5),
            codec in 1usize..5,
            mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            bomb_bytes in 0usize..20_000,
        ) {
            // Mutations land behind the header, in the compressed stream; fuzz_batches
            // retries with the CRC made right, so the decompressors see every one.
            let codec = Compression::ALL[codec];
            let mut records = records;
            records.push((None, Some(vec![0; bomb_bytes]), 0, Vec::new()));
            let mut batch = build_with(&records, codec).to_vec();
            fuzz_batches(&batch);
            let section = batch.len() - BATCH_HEADER_BYTES;
            for (index, byte) in &mutations {
                batch[BATCH_HEADER_BYTES + index.index(section)] = *byte;
            }
            fuzz_batches(&batch);
        }
    }
}
