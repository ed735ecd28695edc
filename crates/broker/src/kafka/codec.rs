//! Kafka's framing and headers (Kafka `NetworkReceive`/`NetworkSend`, `RequestHeader`,
//! `ResponseHeader`): a 4-byte big-endian size then the message; requests start with
//! api_key, api_version, correlation_id (the v0 header, the same in every header version),
//! responses with the correlation id. Bodies are encoded and decoded with the
//! `kafka-protocol` crate's generated codecs at the request's version.
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt};

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
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("cannot decode {what}: {reason}")]
    Decode { what: String, reason: String },
    #[error("cannot encode {what}: {reason}")]
    Encode { what: String, reason: String },
}

/// Reads one size-prefixed frame, refusing sizes above `max_frame_bytes` before allocating.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, max_frame_bytes: usize) -> Result<Bytes, CodecError> {
    let mut size = [0u8; 4];
    if let Err(e) = reader.read_exact(&mut size).await {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof { CodecError::Closed } else { e.into() });
    }
    let size = i32::from_be_bytes(size);
    let Ok(length) = usize::try_from(size) else {
        return Err(CodecError::FrameTooLarge { size: i64::from(size), max_bytes: max_frame_bytes });
    };
    if length > max_frame_bytes {
        return Err(CodecError::FrameTooLarge { size: i64::from(size), max_bytes: max_frame_bytes });
    }
    let mut frame = BytesMut::zeroed(length);
    reader.read_exact(&mut frame).await?;
    Ok(frame.freeze())
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

/// Decodes the request header in place, leaving `frame` at the body.
pub fn decode_header(frame: &mut Bytes, api_key: ApiKey, api_version: i16) -> Result<RequestHeader, CodecError> {
    let header_version = api_key.request_header_version(api_version);
    RequestHeader::decode(frame, header_version).map_err(|e| CodecError::Decode {
        what: format!("{api_key:?} v{api_version} header"),
        reason: format!("{e:#}"),
    })
}

pub fn decode_body<T: Decodable>(body: &mut Bytes, api_key: ApiKey, api_version: i16) -> Result<T, CodecError> {
    T::decode(body, api_version).map_err(|e| CodecError::Decode {
        what: format!("{api_key:?} v{api_version} request"),
        reason: format!("{e:#}"),
    })
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

    #[tokio::test]
    async fn frames_above_the_limit_are_refused_before_reading_them() {
        let mut input: &[u8] = &[0, 0, 0, 200, 1, 2, 3];
        assert!(matches!(read_frame(&mut input, 100).await, Err(CodecError::FrameTooLarge { size: 200, .. })));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(read_frame(&mut negative, 100).await, Err(CodecError::FrameTooLarge { size: -1, .. })));
        let mut ok: &[u8] = &[0, 0, 0, 3, 7, 8, 9];
        assert_eq!(read_frame(&mut ok, 100).await.unwrap(), Bytes::from_static(&[7, 8, 9]));
        let mut empty: &[u8] = &[];
        assert!(matches!(read_frame(&mut empty, 100).await, Err(CodecError::Closed)));
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
