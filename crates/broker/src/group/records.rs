//! The records of the `__consumer_offsets` topic: committed offsets and group metadata,
//! encoded as Kafka's `GroupMetadataManager` writes them (key OffsetCommitKey, record type
//! 1 / GroupMetadataKey, record type 2; values OffsetCommitValue v3 / GroupMetadataValue v3,
//! non-flexible: the `group-coordinator` schemas `*.json` in apache/kafka), so Kafka's own
//! tools (`kafka-console-consumer --formatter ...OffsetsMessageFormatter`) could read the
//! topic. Pure: no I/O. Decoding reads hostile bytes: every length is checked against what
//! is present before anything is allocated, and nothing panics.
use bytes::{BufMut, Bytes, BytesMut};

/// Key record types (Kafka `CoordinatorRecordType` / the schema's `apiKey`): 0 and 1 are
/// both OffsetCommitKey (0 is the pre-0.10 layout, identical on the wire), 2 GroupMetadataKey.
const KEY_OFFSET_V0: i16 = 0;
const KEY_OFFSET: i16 = 1;
const KEY_GROUP: i16 = 2;
/// The value versions written: the newest non-flexible ones (Kafka 2.1+ brokers read them).
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    /// A committed offset; `value: None` is a tombstone (offset deleted).
    Offset { group: String, topic: String, partition: i32, value: Option<OffsetValue> },
    /// Group metadata as of the last completed rebalance; `value: None` = group deleted.
    Group { group: String, value: Option<GroupValue> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// The longest string a record can hold: Kafka's `string` is int16-framed. The coordinator
/// refuses longer ids and names where requests come in (see `fits`), so `encode` never meets one.
pub const MAX_STRING_BYTES: usize = i16::MAX as usize;

/// Does `s` fit a record's int16-framed string?
pub fn fits(s: &str) -> bool {
    s.len() <= MAX_STRING_BYTES
}

/// A record's key and value (None: a tombstone). Err names a string or bytes field too long
/// for its frame: nothing is ever cut (a cut key would be another group's or offset's key).
pub fn encode(record: &GroupRecord) -> Result<(Bytes, Option<Bytes>), String> {
    match record {
        GroupRecord::Offset { group, topic, partition, value } => {
            let mut key = BytesMut::with_capacity(2 + 2 + group.len() + 2 + topic.len() + 4);
            key.put_i16(KEY_OFFSET);
            put_string(&mut key, group, "group id")?;
            put_string(&mut key, topic, "topic")?;
            key.put_i32(*partition);
            let value = value.as_ref().map(encode_offset_value).transpose()?;
            Ok((key.freeze(), value))
        }
        GroupRecord::Group { group, value } => {
            let mut key = BytesMut::with_capacity(2 + 2 + group.len());
            key.put_i16(KEY_GROUP);
            put_string(&mut key, group, "group id")?;
            let value = value.as_ref().map(encode_group_value).transpose()?;
            Ok((key.freeze(), value))
        }
    }
}

fn encode_offset_value(value: &OffsetValue) -> Result<Bytes, String> {
    let mut buf = BytesMut::with_capacity(2 + 8 + 4 + 2 + value.metadata.len() + 8);
    buf.put_i16(OFFSET_VALUE_VERSION);
    buf.put_i64(value.offset);
    buf.put_i32(value.leader_epoch);
    put_string(&mut buf, &value.metadata, "offset metadata")?;
    buf.put_i64(value.commit_timestamp_ms);
    Ok(buf.freeze())
}

fn encode_group_value(value: &GroupValue) -> Result<Bytes, String> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i16(GROUP_VALUE_VERSION);
    put_string(&mut buf, &value.protocol_type, "protocol type")?;
    buf.put_i32(value.generation_id);
    put_nullable_string(&mut buf, value.protocol_name.as_deref(), "protocol name")?;
    put_nullable_string(&mut buf, value.leader.as_deref(), "leader id")?;
    buf.put_i64(value.state_timestamp_ms);
    let count = i32::try_from(value.members.len()).map_err(|_| format!("{} members", value.members.len()))?;
    buf.put_i32(count);
    for member in &value.members {
        put_string(&mut buf, &member.member_id, "member id")?;
        put_nullable_string(&mut buf, member.group_instance_id.as_deref(), "group instance id")?;
        put_string(&mut buf, &member.client_id, "client id")?;
        put_string(&mut buf, &member.client_host, "client host")?;
        buf.put_i32(member.rebalance_timeout_ms);
        buf.put_i32(member.session_timeout_ms);
        put_bytes(&mut buf, &member.subscription, "subscription")?;
        put_bytes(&mut buf, &member.assignment, "assignment")?;
    }
    Ok(buf.freeze())
}

/// Kafka `string`: int16 length then UTF-8; a longer string is an error, never cut.
fn put_string(buf: &mut BytesMut, s: &str, what: &str) -> Result<(), String> {
    let len = i16::try_from(s.len())
        .map_err(|_| format!("{what} of {} bytes exceeds the {MAX_STRING_BYTES}-byte limit", s.len()))?;
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>, what: &str) -> Result<(), String> {
    match s {
        Some(s) => put_string(buf, s, what),
        None => {
            buf.put_i16(-1);
            Ok(())
        }
    }
}

/// Kafka `bytes`: int32 length then the bytes.
fn put_bytes(buf: &mut BytesMut, b: &[u8], what: &str) -> Result<(), String> {
    let len = i32::try_from(b.len()).map_err(|_| format!("{what} of {} bytes exceeds the int32 frame", b.len()))?;
    buf.put_i32(len);
    buf.put_slice(b);
    Ok(())
}

/// Why a record read back from the log does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A key record type this broker does not know (say, KIP-848's consumer-group records
    /// written by a newer Kafka): Kafka's loader logs and skips these.
    UnknownType(i16),
    /// Bytes that do not decode as their known type: Kafka's loader fails the load.
    Invalid(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::UnknownType(t) => write!(f, "unknown record type {t}"),
            DecodeError::Invalid(e) => f.write_str(e),
        }
    }
}

impl From<String> for DecodeError {
    fn from(e: String) -> DecodeError {
        DecodeError::Invalid(e)
    }
}

/// A record read back from the log: Err(UnknownType) for a key type this broker does not
/// know (the loader skips it, as Kafka's does), Err(Invalid) for bytes that do not decode
/// as their type or version (the loader fails: acknowledged state must not silently go).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<GroupRecord, DecodeError> {
    let mut k = Reader::new(key);
    let record_type = k.i16()?;
    let record = match record_type {
        KEY_OFFSET_V0 | KEY_OFFSET => {
            let group = k.string()?;
            let topic = k.string()?;
            let partition = k.i32()?;
            let value = value.map(decode_offset_value).transpose()?;
            GroupRecord::Offset { group, topic, partition, value }
        }
        KEY_GROUP => {
            let group = k.string()?;
            let value = value.map(decode_group_value).transpose()?;
            GroupRecord::Group { group, value }
        }
        other => return Err(DecodeError::UnknownType(other)),
    };
    k.end("key")?;
    Ok(record)
}

/// OffsetCommitValue v0-v3 (v1 carries an expire timestamp, ignored as Kafka ignores it
/// since KIP-211; v3 adds the leader epoch; v4 is flexible and not read).
fn decode_offset_value(value: &[u8]) -> Result<OffsetValue, String> {
    let mut r = Reader::new(value);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(format!("unsupported offset value version {version}"));
    }
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?;
    let commit_timestamp_ms = r.i64()?;
    if version == 1 {
        r.i64()?;
    }
    r.end("offset value")?;
    Ok(OffsetValue { offset, leader_epoch, metadata, commit_timestamp_ms })
}

/// GroupMetadataValue v0-v3 (v1 adds rebalance timeouts, v2 the state timestamp, v3 static
/// member ids; v4 is flexible and not read).
fn decode_group_value(value: &[u8]) -> Result<GroupValue, String> {
    let mut r = Reader::new(value);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(format!("unsupported group value version {version}"));
    }
    let protocol_type = r.string()?;
    let generation_id = r.i32()?;
    let protocol_name = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    // A member takes at least 2+2+2+4+4+4 bytes (v0): bound the count by what is present.
    let count = usize::try_from(count).map_err(|_| format!("negative member count {count}"))?;
    if count > r.remaining() / 18 {
        return Err(format!("member count {count} exceeds the {} bytes left", r.remaining()));
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 { r.nullable_string()? } else { None };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let session_or_rebalance = r.i32()?;
        // v0 has only the session timeout, which Kafka also takes as the rebalance timeout.
        let (rebalance_timeout_ms, session_timeout_ms) =
            if version >= 1 { (session_or_rebalance, r.i32()?) } else { (session_or_rebalance, session_or_rebalance) };
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    r.end("group value")?;
    Ok(GroupValue { protocol_type, generation_id, protocol_name, leader, state_timestamp_ms, members })
}

/// A bounds-checked cursor: every read fails cleanly past the end.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err(format!("truncated: {n} bytes wanted, {} left", self.buf.len()));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn nullable_string(&mut self) -> Result<Option<String>, String> {
        let len = self.i16()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| format!("string length {len}"))?;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map(Some).map_err(|_| "string is not UTF-8".to_string())
    }

    fn string(&mut self) -> Result<String, String> {
        self.nullable_string()?.ok_or_else(|| "null where a string is required".to_string())
    }

    fn bytes(&mut self) -> Result<Bytes, String> {
        let len = self.i32()?;
        // Kafka writes -1 for null bytes; the group value's fields are not nullable, but an
        // empty assignment read as empty is harmless.
        if len == -1 {
            return Ok(Bytes::new());
        }
        let len = usize::try_from(len).map_err(|_| format!("bytes length {len}"))?;
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }

    /// Trailing bytes mean a layout we do not know: refuse rather than guess.
    fn end(&self, what: &str) -> Result<(), String> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes after the {what}", self.buf.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(group: &str, topic: &str, partition: i32, value: Option<i64>) -> GroupRecord {
        GroupRecord::Offset {
            group: group.into(),
            topic: topic.into(),
            partition,
            value: value.map(|offset| OffsetValue {
                offset,
                leader_epoch: 7,
                metadata: "m€ta".into(),
                commit_timestamp_ms: 1_700_000_000_000,
            }),
        }
    }

    fn group_value() -> GroupValue {
        GroupValue {
            protocol_type: "consumer".into(),
            generation_id: 3,
            protocol_name: Some("range".into()),
            leader: Some("c-1".into()),
            state_timestamp_ms: 1_700_000_000_001,
            members: vec![
                MemberValue {
                    member_id: "c-1".into(),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                    subscription: Bytes::from_static(b"\x00\x01sub"),
                    assignment: Bytes::from_static(b"assign"),
                },
                MemberValue {
                    member_id: "c-2".into(),
                    group_instance_id: Some("static-2".into()),
                    client_id: "c".into(),
                    client_host: "/10.0.0.2".into(),
                    rebalance_timeout_ms: 1,
                    session_timeout_ms: 2,
                    subscription: Bytes::new(),
                    assignment: Bytes::new(),
                },
            ],
        }
    }

    #[test]
    fn records_round_trip() {
        let records = [
            offset("g", "orders", 5, Some(42)),
            offset("g", "orders", 5, None),
            GroupRecord::Group { group: "g".into(), value: Some(group_value()) },
            GroupRecord::Group { group: "g".into(), value: Some(GroupValue { members: vec![], ..group_value() }) },
            GroupRecord::Group { group: "".into(), value: None },
        ];
        for record in records {
            let (key, value) = encode(&record).unwrap();
            assert_eq!(decode(&key, value.as_deref()), Ok(record));
        }
    }

    #[test]
    fn bytes_match_kafkas_layout() {
        // OffsetCommitKey: type 1, group, topic, partition; OffsetCommitValue v3.
        let (key, value) = encode(&offset("g", "t", 2, Some(9))).unwrap();
        assert_eq!(&key[..], b"\x00\x01\x00\x01g\x00\x01t\x00\x00\x00\x02");
        let mut want = vec![0, 3, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 7, 0, 6];
        want.extend_from_slice("m€ta".as_bytes());
        want.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        assert_eq!(value.as_deref(), Some(&want[..]));
        let (key, value) = encode(&GroupRecord::Group { group: "g".into(), value: None }).unwrap();
        assert_eq!((&key[..], value), (&b"\x00\x02\x00\x01g"[..], None));
    }

    #[test]
    fn older_value_versions_decode() {
        // OffsetCommitValue v1: offset, metadata, commit timestamp, expire timestamp.
        let mut v1 = vec![0, 1];
        v1.extend_from_slice(&10i64.to_be_bytes());
        v1.extend_from_slice(b"\x00\x00");
        v1.extend_from_slice(&5i64.to_be_bytes());
        v1.extend_from_slice(&(-1i64).to_be_bytes());
        let (key, _) = encode(&offset("g", "t", 0, None)).unwrap();
        let want = GroupRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            value: Some(OffsetValue { offset: 10, leader_epoch: -1, metadata: String::new(), commit_timestamp_ms: 5 }),
        };
        assert_eq!(decode(&key, Some(&v1)), Ok(want));
    }

    #[test]
    fn hostile_bytes_are_errors_never_panics() {
        let (key, value) = encode(&GroupRecord::Group { group: "grp".into(), value: Some(group_value()) }).unwrap();
        let value = value.unwrap();
        // Every truncation of key and value fails cleanly.
        for cut in 0..key.len() {
            assert!(decode(&key[..cut], Some(&value)).is_err());
        }
        for cut in 0..value.len() {
            assert!(decode(&key, Some(&value[..cut])).is_err(), "cut {cut}");
        }
        // Flipping every byte to each extreme never panics.
        for i in 0..value.len() {
            for b in [0x00, 0x7f, 0x80, 0xff] {
                let mut v = value.to_vec();
                v[i] = b;
                let _ = decode(&key, Some(&v));
            }
        }
        // A huge member count with no bytes behind it is refused before allocating.
        let mut v = vec![0, 3, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        v.extend_from_slice(&0i64.to_be_bytes());
        v.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode(&key, Some(&v)).unwrap_err().to_string().contains("member count"));
        assert_eq!(decode(b"\x00\x09", None), Err(DecodeError::UnknownType(9)));
        assert!(decode(b"\x00\x09", None).unwrap_err().to_string().contains("unknown record type 9"));
        let trailing = decode(&[key.as_ref(), b"x"].concat(), None).unwrap_err();
        assert!(matches!(&trailing, DecodeError::Invalid(e) if e.contains("trailing")), "{trailing}");
        assert!(matches!(decode(b"\x00", None), Err(DecodeError::Invalid(_))), "a cut key type is invalid");
    }

    #[test]
    fn strings_too_long_for_their_frame_are_refused_never_cut() {
        let longest = "g".repeat(MAX_STRING_BYTES);
        assert!(fits(&longest) && !fits(&format!("{longest}g")));
        let record = GroupRecord::Group { group: longest.clone(), value: None };
        let (key, _) = encode(&record).unwrap();
        assert_eq!(decode(&key, None), Ok(record));
        // One byte more: two such ids would collide under a cut key, so it is an error.
        let too_long = GroupRecord::Group { group: format!("{longest}x"), value: None };
        assert!(encode(&too_long).unwrap_err().contains("group id"));
        let mut value = group_value();
        value.members[1].group_instance_id = Some("i".repeat(MAX_STRING_BYTES + 1));
        let too_long = GroupRecord::Group { group: "g".into(), value: Some(value) };
        assert!(encode(&too_long).unwrap_err().contains("group instance id"));
        let mut commit = offset("g", "t", 0, Some(1));
        if let GroupRecord::Offset { value: Some(v), .. } = &mut commit {
            v.metadata = "m".repeat(MAX_STRING_BYTES + 1);
        }
        assert!(encode(&commit).unwrap_err().contains("offset metadata"));
        // A multi-byte character straddling the limit is refused too, not cut before it.
        let straddling = format!("{}€", "t".repeat(MAX_STRING_BYTES - 1));
        assert!(encode(&offset("g", &straddling, 0, None)).unwrap_err().contains("topic"));
    }
}
