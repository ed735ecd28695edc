//! Kafka's framing and headers (Kafka `NetworkReceive`/`NetworkSend`, `RequestHeader`,
//! `ResponseHeader`): a 4-byte big-endian size then the message; requests start with
//! api_key, api_version, correlation_id (the v0 header, the same in every header version),
//! responses with the correlation id. Bodies are encoded and decoded with the
//! `kafka-protocol` crate's generated codecs at the request's version.
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a connection's input or output is unusable; every one of them closes the
/// connection, as Kafka closes a channel on an invalid receive or request.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("connection closed by the client")]
    Closed,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Kafka `InvalidReceiveException`: size above socket.request.max.bytes, or negative.
    #[error("frame of {size} bytes exceeds the limit of {max_bytes} (message.max.bytes + headroom)")]
    FrameTooLarge { size: i64, max_bytes: usize },
    /// Kafka `connections.max.idle.ms`.
    #[error("idle for {} s (connections.max.idle.ms)", .0.as_secs())]
    Idle(Duration),
    #[error("request stopped arriving: {received} of {expected} bytes after {} ms", .after.as_millis())]
    PartialFrame { received: usize, expected: usize, after: Duration },
    /// Kafka `queued.max.request.bytes`: requests being received on every connection hold
    /// the whole budget.
    #[error("no memory for a {bytes}-byte request within {} ms: requests in flight hold all {budget} bytes of queued.max.request.bytes", .after.as_millis())]
    NoMemory { bytes: usize, budget: usize, after: Duration },
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("cannot decode {what}: {reason}")]
    Decode { what: String, reason: String },
    #[error("cannot encode {what}: {reason}")]
    Encode { what: String, reason: String },
}

/// What bounds the reading of one request (Kafka `SocketServer`): its size
/// (`socket.request.max.bytes`), how long a connection may sit idle between requests
/// (`connections.max.idle.ms`), how long a request may take to arrive once its first byte
/// has, and the bytes of requests being received across every connection of the listener
/// (`queued.max.request.bytes`, Kafka's `MemoryPool`).
#[derive(Clone)]
pub struct ReceiveLimits {
    pub max_frame_bytes: usize,
    pub idle: Duration,
    pub partial: Duration,
    pub budget: Arc<Semaphore>,
    /// The budget's size, and the most any one read asks of it at once.
    pub budget_bytes: usize,
}

/// Bytes are read in pieces of at most this size, so a frame's memory grows only as its
/// bytes arrive, never to a size it merely declares.
const RECEIVE_CHUNK_BYTES: usize = 64 * 1024;

/// One request's bytes, and its share of the receive budget. The connection holds the
/// share until the request's answer is written, so the budget also bounds what decoding a
/// request and answering it from its contents take (at most a constant times its bytes);
/// record data a fetch answers with is bounded separately, by fetch.max.bytes per answer
/// and the answers a connection may have in flight.
pub struct Frame {
    pub bytes: Bytes,
    pub budget: Option<OwnedSemaphorePermit>,
}

/// Reads one size-prefixed frame: the first byte may take up to `idle`, the rest of it
/// must arrive within `partial` of that; sizes above `max_frame_bytes` are refused before
/// anything is allocated, and the frame's memory grows only with the bytes received.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, limits: &ReceiveLimits) -> Result<Frame, CodecError> {
    let mut size = [0u8; 4];
    match tokio::time::timeout(limits.idle, reader.read(&mut size[..1])).await {
        Err(_) => return Err(CodecError::Idle(limits.idle)),
        Ok(Ok(0)) => return Err(CodecError::Closed),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.into()),
    }
    let deadline = tokio::time::Instant::now() + limits.partial;
    let partial =
        |received: usize, expected: usize| CodecError::PartialFrame { received, expected, after: limits.partial };
    match tokio::time::timeout_at(deadline, reader.read_exact(&mut size[1..])).await {
        Err(_) => return Err(partial(1, 4)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(CodecError::Closed),
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(_)) => {}
    }
    let size = i32::from_be_bytes(size);
    let length = usize::try_from(size).unwrap_or(usize::MAX);
    if length > limits.max_frame_bytes {
        return Err(CodecError::FrameTooLarge { size: i64::from(size), max_bytes: limits.max_frame_bytes });
    }
    // The whole frame's share of the budget at once, as Kafka's MemoryPool.tryAllocate does
    // (paying piece by piece would let large frames each hold part and wait for the rest).
    // A connection that must wait is not read meanwhile (TCP backpressure) and not closed,
    // up to the idle timeout: what holds the budget is bounded in time (requests stop
    // arriving within `partial`, answers are written or time out).
    let budget = match u32::try_from(length) {
        Ok(0) => None,
        Ok(bytes) => Some(
            tokio::time::timeout(limits.idle, limits.budget.clone().acquire_many_owned(bytes))
                .await
                .map_err(|_| CodecError::NoMemory { bytes: length, budget: limits.budget_bytes, after: limits.idle })?
                .map_err(|_| CodecError::Closed)?,
        ),
        Err(_) => return Err(CodecError::FrameTooLarge { size: i64::from(size), max_bytes: limits.max_frame_bytes }),
    };
    // The body must then arrive within `partial`; memory grows only with what arrives.
    let deadline = tokio::time::Instant::now() + limits.partial;
    let mut frame = BytesMut::new();
    while frame.len() < length {
        let want = (length - frame.len()).min(RECEIVE_CHUNK_BYTES);
        frame.reserve(want);
        let start = frame.len();
        let read = tokio::time::timeout_at(deadline, (&mut *reader).take(want as u64).read_buf(&mut frame)).await;
        match read {
            Err(_) | Ok(Ok(0)) => return Err(partial(start, length)),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => {}
        }
    }
    Ok(Frame { bytes: frame.freeze(), budget })
}

/// The first three header fields, which every request header version starts with: enough
/// to route a request and to answer it even when its version is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

pub fn peek_header(frame: &[u8]) -> Result<RawHeader, CodecError> {
    if frame.len() < 8 {
        return Err(CodecError::TooShort(frame.len()));
    }
    Ok(RawHeader {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// A request whose whole frame passed [`insync_kafka_wire::validate_request`]: only such a
/// request's body can be decoded, so every API served now or added later is walked with
/// every count and length checked against the bytes present before `kafka-protocol`
/// allocates anything for it.
pub struct Request {
    pub header: RequestHeader,
    body: Bytes,
    api_key: ApiKey,
    api_version: i16,
    /// Bytes after the body's last field, by the schema.
    trailing: usize,
}

/// The reason a decode fails when the decoder and the schema walk disagree on where the
/// body ends: never expected, and a finding for the fuzzer if it happens.
pub const DISAGREEMENT: &str = "the decoder and the schema disagree";

impl Request {
    /// The body, decoded as the request its API key names.
    pub fn body(mut self) -> Result<RequestKind, CodecError> {
        let what = || format!("{:?} v{} request", self.api_key, self.api_version);
        let decoded = RequestKind::decode(self.api_key, &mut self.body, self.api_version)
            .map_err(|e| CodecError::Decode { what: what(), reason: format!("{e:#}") })?;
        if self.body.len() != self.trailing {
            let reason = format!("{DISAGREEMENT}: {} bytes left, {} expected", self.body.len(), self.trailing);
            return Err(CodecError::Decode { what: what(), reason });
        }
        Ok(decoded)
    }
}

/// Validates the frame by its schema, then decodes the header, leaving the body for
/// [`Request::body`].
pub fn decode_request(mut frame: Bytes, api_key: ApiKey, api_version: i16) -> Result<Request, CodecError> {
    let valid = insync_kafka_wire::validate_request(&frame).map_err(|e| CodecError::Decode {
        what: format!("{api_key:?} v{api_version} request"),
        reason: e.to_string(),
    })?;
    let before = frame.len();
    let header = RequestHeader::decode(&mut frame, valid.header_version).map_err(|e| CodecError::Decode {
        what: format!("{api_key:?} v{api_version} header"),
        reason: format!("{e:#}"),
    })?;
    if before - frame.len() != valid.header_len {
        return Err(CodecError::Decode {
            what: format!("{api_key:?} v{api_version} header"),
            reason: "the header decoder and the schema disagree on its length".into(),
        });
    }
    Ok(Request { header, body: frame, api_key, api_version, trailing: valid.trailing })
}

/// A whole response frame: size, header (v0: correlation id; v1 adds tagged fields), body.
pub fn response_frame<T: Encodable>(
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    body: &T,
) -> Result<Bytes, CodecError> {
    let encode_error = |e: anyhow::Error| CodecError::Encode {
        what: format!("{api_key:?} v{api_version} response"),
        reason: format!("{e:#}"),
    };
    let header_version = api_key.response_header_version(api_version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version).map_err(encode_error)?
        + body.compute_size(api_version).map_err(encode_error)?;
    let mut frame = BytesMut::with_capacity(4 + size);
    frame.put_i32(i32::try_from(size).map_err(|_| CodecError::Encode {
        what: format!("{api_key:?} v{api_version} response"),
        reason: format!("{size} bytes do not fit a frame"),
    })?);
    header.encode(&mut frame, header_version).map_err(encode_error)?;
    body.encode(&mut frame, api_version).map_err(encode_error)?;
    debug_assert_eq!(frame.len(), 4 + size, "compute_size disagrees with encode");
    Ok(frame.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsResponse;
    use tokio::io::AsyncWriteExt;

    fn limits(max_frame_bytes: usize, budget_bytes: usize) -> ReceiveLimits {
        ReceiveLimits {
            max_frame_bytes,
            idle: Duration::from_secs(5),
            partial: Duration::from_millis(200),
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
        }
    }

    #[tokio::test]
    async fn frames_above_the_limit_are_refused_before_reading_them() {
        let limits = limits(100, 1000);
        let mut input: &[u8] = &[0, 0, 0, 200, 1, 2, 3];
        assert!(matches!(read_frame(&mut input, &limits).await, Err(CodecError::FrameTooLarge { size: 200, .. })));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(read_frame(&mut negative, &limits).await, Err(CodecError::FrameTooLarge { size: -1, .. })));
        let mut ok: &[u8] = &[0, 0, 0, 3, 7, 8, 9];
        assert_eq!(read_frame(&mut ok, &limits).await.unwrap().bytes, Bytes::from_static(&[7, 8, 9]));
        let mut empty: &[u8] = &[];
        assert!(matches!(read_frame(&mut empty, &limits).await, Err(CodecError::Closed)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_that_stops_arriving_is_dropped_and_its_budget_returned() {
        let limits = limits(1 << 20, 1 << 20);
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        // Declares 100000 bytes, sends 10, then nothing.
        client.write_all(&100_000i32.to_be_bytes()).await.unwrap();
        client.write_all(&[1; 10]).await.unwrap();
        let error = read_frame(&mut server, &limits).await.err().expect("timed out");
        assert!(matches!(error, CodecError::PartialFrame { expected: 100_000, .. }), "{error}");
        assert_eq!(limits.budget.available_permits(), 1 << 20, "budget returned");
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_waits_for_the_budget_that_others_hold() {
        let limits = limits(1 << 20, 100);
        let mut first: &[u8] = &[0, 0, 0, 60, 1, 2];
        // 60 of 100 bytes taken as soon as the size is known, even before the body arrives.
        let partial = read_frame(&mut first, &limits).await.err().expect("the body stops after 2 bytes");
        assert!(matches!(partial, CodecError::PartialFrame { .. }), "{partial}");
        assert_eq!(limits.budget.available_permits(), 100, "returned when the frame is dropped");
        let whole = [&60i32.to_be_bytes()[..], &[9u8; 60]].concat();
        let held = read_frame(&mut whole.as_slice(), &limits).await.unwrap();
        assert_eq!(limits.budget.available_permits(), 40);
        // A second 60-byte frame waits (up to the idle timeout) instead of failing at once...
        let waiting = tokio::spawn({
            let limits = limits.clone();
            let whole = whole.clone();
            async move { read_frame(&mut whole.as_slice(), &limits).await.map(|f| f.bytes.len()) }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "waits for budget");
        // ...and proceeds once the first answer is written and its share released.
        drop(held);
        assert_eq!(waiting.await.unwrap().unwrap(), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_reported_as_idle() {
        let limits = limits(100, 1000);
        let (_client, mut server) = tokio::io::duplex(64);
        assert!(matches!(read_frame(&mut server, &limits).await, Err(CodecError::Idle(_))));
    }

    #[test]
    fn the_eighteen_byte_metadata_bomb_is_a_decode_error_not_an_allocation() {
        let frame = Bytes::from_static(&[0x00, 0x03, 0x00, 0x01, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff]);
        let error = decode_request(frame, ApiKey::Metadata, 1).err().expect("refused");
        assert!(error.to_string().contains("MetadataRequest.Topics: array count 2147483647"), "{error}");
    }

    #[test]
    fn api_versions_responses_always_use_header_v0() {
        // KIP-511: a client that does not know the broker's versions must be able to read
        // the ApiVersions answer, so its header never has tagged fields, even for v3+.
        let frame = response_frame(42, ApiKey::ApiVersions, 3, &ApiVersionsResponse::default()).unwrap();
        assert_eq!(&frame[4..8], &42i32.to_be_bytes());
        assert_eq!(i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize, frame.len() - 4);
        // error_code 0 follows the correlation id directly (no tagged-field byte between).
        assert_eq!(&frame[8..10], &[0, 0]);
    }
}
