//! The walk against frames encoded by `kafka-protocol` (the decoder it guards): every
//! served API and version is accepted whole, every prefix and every count or length bomb is
//! refused, and whatever the walk accepts the decoder reads to the same last byte.
use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};

use super::*;
use crate::samples::{every_version, frame};

/// Decodes as the broker does; returns the bytes left over, or None if it refused.
fn decode_leftover(frame: &[u8], valid: &ValidRequest) -> Option<usize> {
    let api_key = ApiKey::try_from(valid.api_key).ok()?;
    let mut bytes = Bytes::copy_from_slice(frame);
    <RequestHeader as kafka_protocol::protocol::Decodable>::decode(&mut bytes, valid.header_version).ok()?;
    if frame.len() - bytes.len() != valid.header_len {
        return Some(usize::MAX);
    }
    RequestKind::decode(api_key, &mut bytes, valid.api_version).ok()?;
    Some(bytes.len())
}

#[test]
fn the_eighteen_byte_metadata_bomb_is_refused() {
    // 00 00 00 0e | Metadata v1, correlation 1, client id null | topics: 0x7fffffff.
    let frame = [0x00, 0x03, 0x00, 0x01, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff];
    let error = validate_request(&frame).expect_err("refused");
    assert_eq!(error.path(), "MetadataRequest.Topics");
    assert!(error.reason.contains("array count 2147483647 but only 0 bytes remain"), "{error}");
}

#[test]
fn header_versions_agree_with_the_codec() {
    for (api_key, v) in every_version() {
        let schema = request_schema(api_key as i16).expect("schema");
        assert_eq!(schema.request_header_version(v), api_key.request_header_version(v), "{api_key:?} v{v}");
    }
}

#[test]
fn every_served_version_is_accepted_whole_and_decoded_to_the_last_byte() {
    for (api_key, v) in every_version() {
        let frame = frame(api_key, v);
        let valid = validate_request(&frame).unwrap_or_else(|e| panic!("{api_key:?} v{v}: {e}"));
        assert_eq!((valid.api_key, valid.api_version, valid.correlation_id), (api_key as i16, v, 7));
        assert_eq!(valid.trailing, 0, "{api_key:?} v{v}");
        assert_eq!(decode_leftover(&frame, &valid), Some(0), "{api_key:?} v{v}");
    }
}

#[test]
fn every_prefix_is_refused_and_trailing_bytes_are_ignored_as_kafka_does() {
    for (api_key, v) in every_version() {
        let frame = frame(api_key, v);
        for cut in 0..frame.len() {
            assert!(validate_request(&frame[..cut]).is_err(), "{api_key:?} v{v} cut at {cut} of {}", frame.len());
        }
        let mut longer = frame.clone();
        longer.extend_from_slice(&[1, 0, 0]);
        let valid = validate_request(&longer).expect("trailing bytes are ignored");
        assert_eq!(valid.trailing, 3);
        assert_eq!(decode_leftover(&longer, &valid), Some(3), "{api_key:?} v{v}: the decoder ignores them too");
    }
}

#[test]
fn librdkafkas_metadata_request_for_all_topics_is_accepted() {
    // confluent-kafka's AdminClient.list_topics(): Metadata v12 with a null topic array and
    // three bytes after the request's last field (captured; Kafka brokers serve it).
    let frame = include_bytes!("../../corpus/Metadata-v12-confluent-kafka-4.bin");
    let valid = validate_request(frame).expect("served");
    assert_eq!((valid.api_version, valid.trailing), (12, 3));
}

/// Every 4-byte window set to 0x7fffffff, every single byte set to 0xff / 0x7f / 0x80:
/// the count and length bombs of every field of every API and version. Whatever the walk
/// still accepts, the decoder reads to the same last byte.
#[test]
fn bombs_at_every_offset_are_refused_or_read_identically() {
    let mut refused = 0usize;
    for (api_key, v) in every_version() {
        let frame = frame(api_key, v);
        let mut variants = Vec::new();
        for at in 0..frame.len() {
            for byte in [0xff, 0x7f, 0x80, 0x00] {
                let mut bomb = frame.clone();
                bomb[at] = byte;
                variants.push(bomb);
            }
            if at + 4 <= frame.len() {
                let mut bomb = frame.clone();
                bomb[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
                variants.push(bomb);
            }
        }
        for bomb in variants {
            match validate_request(&bomb) {
                Err(_) => refused += 1,
                Ok(valid) => {
                    if let Some(leftover) = decode_leftover(&bomb, &valid) {
                        assert_eq!(
                            leftover, valid.trailing,
                            "{api_key:?} v{v}: walk and decoder disagree on {bomb:02x?}"
                        );
                    }
                }
            }
        }
    }
    assert!(refused > 1000, "only {refused} bombs refused");
}

#[test]
fn a_known_tagged_field_must_fill_its_declared_size() {
    // Fetch v12 with ClusterId (tag 0) declared as 5 bytes but holding a 2-byte string.
    let mut good = frame(ApiKey::Fetch, 12);
    assert!(validate_request(&good).is_ok());
    // The body ends with the tagged section: count, then tag 0 ("cluster": size 8, varint
    // 8 then 7 bytes), then tag 99 (size 3, "xyz"). Rewrite ClusterId's string length from
    // 8 (7 bytes) to 3 (2 bytes) without touching the declared size.
    let tail = b"\x02\x00\x08\x08cluster\x63\x03xyz";
    let at = good.len() - tail.len();
    assert_eq!(&good[at..], tail, "layout as expected");
    good[at + 3] = 0x03;
    let error = validate_request(&good).expect_err("size mismatch");
    assert!(error.reason.contains("tagged field of 8 bytes holds a value of 3 bytes"), "{error}");
}

#[test]
fn varints_longer_than_five_bytes_or_wider_than_32_bits_are_refused() {
    let mut reader = Reader { buf: &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01], pos: 0 };
    assert!(reader.uvarint().is_err());
    let mut reader = Reader { buf: &[0xff, 0xff, 0xff, 0xff, 0x1f], pos: 0 };
    assert!(reader.uvarint().unwrap_err().reason.contains("exceeds 32 bits"));
    let mut reader = Reader { buf: &[0xff, 0xff, 0xff, 0xff, 0x0f], pos: 0 };
    assert_eq!(reader.uvarint().unwrap(), u32::MAX);
}

#[test]
fn unknown_api_keys_and_versions_are_refused_by_name() {
    let error = validate_request(&[0x03, 0xe7, 0, 0, 0, 0, 0, 1]).expect_err("API 999");
    assert!(error.reason.contains("API key 999 has no schema"), "{error}");
    let error = validate_request(&[0x00, 0x03, 0x00, 0x63, 0, 0, 0, 1]).expect_err("Metadata v99");
    assert!(error.reason.contains("MetadataRequest has no version 99"), "{error}");
}
