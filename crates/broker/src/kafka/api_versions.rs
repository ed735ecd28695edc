//! ApiVersions (Kafka `ApiVersionsRequest`, KIP-35, KIP-511): the first request of every
//! client, answered with the APIs and versions in `SUPPORTED_APIS`. A client asking with
//! an ApiVersions version newer than ours gets UNSUPPORTED_VERSION in the v0 format (which
//! every client can read) with our ApiVersions range, and retries with that (Kafka
//! `ApiVersionsRequest.getErrorResponse` / `SocketServer` for unknown versions).
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use super::codec::{self, CodecError};
use super::connection::{respond_now, PendingReply, Reply, RequestMeta};
use super::SUPPORTED_APIS;

fn api_version(api_key: ApiKey, min_version: i16, max_version: i16) -> ApiVersion {
    ApiVersion::default().with_api_key(api_key as i16).with_min_version(min_version).with_max_version(max_version)
}

/// The lowest Produce version advertised, below the lowest served (3). librdkafka up to 2.11
/// (Debian's kcat ships 2.0.2) enables gzip, snappy and lz4 only when the broker advertises
/// Produce v0 (`rd_kafka_msgset_writer_select_MsgVersion` asks whether Produce [0, 0] is
/// supported), and silently sends uncompressed batches otherwise; Kafka before 4.0 (KIP-896)
/// advertised v0. Every client picks the highest version both sides know, so v0-v2 are only
/// ever sent by pre-0.11 clients, which get a closed connection and a broker WARN naming the
/// version, as for any version not served.
const PRODUCE_ADVERTISED_MIN_VERSION: i16 = 0;

/// The full answer: every served API with its version range.
pub fn response() -> ApiVersionsResponse {
    let advertised = |key: ApiKey, min: i16| if key == ApiKey::Produce { PRODUCE_ADVERTISED_MIN_VERSION } else { min };
    ApiVersionsResponse::default().with_error_code(0).with_api_keys(
        SUPPORTED_APIS.iter().map(|(key, min, max)| api_version(*key, advertised(*key, *min), *max)).collect(),
    )
}

pub(super) fn handle(meta: RequestMeta, _request: ApiVersionsRequest) -> PendingReply {
    respond_now(meta, response())
}

/// The v0-format UNSUPPORTED_VERSION answer to an ApiVersions version we do not know.
pub(super) fn unsupported_version(correlation_id: i32) -> PendingReply {
    let reply = match unsupported_version_frame(correlation_id) {
        Ok(frame) => Reply::Frame(frame),
        Err(e) => Reply::Close(e.to_string()),
    };
    Box::pin(std::future::ready(reply))
}

fn unsupported_version_frame(correlation_id: i32) -> Result<Bytes, CodecError> {
    let (min, max) = super::supported_versions(ApiKey::ApiVersions).unwrap_or((0, 0));
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(vec![api_version(ApiKey::ApiVersions, min, max)]);
    codec::response_frame(correlation_id, ApiKey::ApiVersions, 0, &response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn advertises_produce_from_0_and_fetch_4_or_later() {
        let response = response();
        let find = |key: ApiKey| response.api_keys.iter().find(|k| k.api_key == key as i16).cloned().unwrap();
        // Advertised from 0 for old librdkafka's codec check; served from 3 (RecordBatch v2).
        assert_eq!(find(ApiKey::Produce).min_version, 0);
        assert_eq!(crate::kafka::supported_versions(ApiKey::Produce).map(|v| v.0), Some(3));
        assert!(find(ApiKey::Fetch).max_version >= 4);
        assert_eq!(find(ApiKey::ApiVersions).max_version, 4);
    }

    #[test]
    fn unknown_api_versions_version_gets_a_v0_unsupported_version_answer() {
        let frame = unsupported_version_frame(7).unwrap();
        let mut body = frame.slice(8..); // size, correlation id
        let decoded = ApiVersionsResponse::decode(&mut body, 0).unwrap();
        assert_eq!(decoded.error_code, 35);
        assert_eq!(decoded.api_keys.len(), 1);
        assert_eq!(decoded.api_keys[0].api_key, ApiKey::ApiVersions as i16);
        assert!(body.is_empty(), "a v0 answer has nothing after the api_keys array");
    }
}
