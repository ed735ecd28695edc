//! The walk: reads a frame field by field by its schema, checking every length and count
//! against the bytes that remain before stepping over them. No allocation on the success
//! path; an error carries the field path where the frame went wrong.
use std::fmt;

use crate::schema::{request_schema, Field, MessageSchema, Type, REQUEST_HEADER};

/// What a valid frame holds: the routing fields and where the body starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidRequest {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub header_version: i16,
    /// Bytes of the request header; the body follows it.
    pub header_len: usize,
    /// Bytes after the body's last field, which every decoder ignores.
    pub trailing: usize,
}

/// Why a frame was refused, and where in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// Field names and array indexes from the message down, innermost last.
    path: Vec<String>,
    pub reason: String,
}

impl WireError {
    fn new(reason: impl Into<String>) -> WireError {
        WireError { path: Vec::new(), reason: reason.into() }
    }

    fn within(mut self, step: impl Into<String>) -> WireError {
        self.path.push(step.into());
        self
    }

    /// "FetchRequest.Topics[0].Partitions[3].FetchOffset".
    pub fn path(&self) -> String {
        let mut out = String::new();
        for step in self.path.iter().rev() {
            if !step.starts_with('[') && !out.is_empty() {
                out.push('.');
            }
            out.push_str(step);
        }
        out
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path(), self.reason)
        }
    }
}

impl std::error::Error for WireError {}

type Walk<T> = Result<T, WireError>;

/// Validates one whole request frame (the bytes after the 4-byte size): header and body by
/// the schema of its API key and version, with nothing left over.
pub fn validate_request(frame: &[u8]) -> Walk<ValidRequest> {
    let mut reader = Reader { buf: frame, pos: 0 };
    let api_key = reader.i16().map_err(|e| e.within("RequestHeader.RequestApiKey"))?;
    let api_version = reader.i16().map_err(|e| e.within("RequestHeader.RequestApiVersion"))?;
    let correlation_id = reader.i32().map_err(|e| e.within("RequestHeader.CorrelationId"))?;
    let schema =
        request_schema(api_key).ok_or_else(|| WireError::new(format!("API key {api_key} has no schema here")))?;
    if !schema.valid.contains(api_version) {
        return Err(WireError::new(format!(
            "{} has no version {api_version} (valid {}-{})",
            schema.name, schema.valid.low, schema.valid.high
        )));
    }
    let header_version = schema.request_header_version(api_version);
    let mut header = Reader { buf: frame, pos: 0 };
    walk_message(&REQUEST_HEADER, header_version, &mut header)?;
    let header_len = header.pos;
    let mut body = Reader { buf: frame, pos: header_len };
    walk_message(schema, api_version, &mut body)?;
    // Bytes after the request are ignored, as Kafka's readers ignore them: librdkafka's
    // Metadata v10+ request for all topics carries such bytes, and Kafka brokers serve it.
    let trailing = body.remaining();
    Ok(ValidRequest { api_key, api_version, correlation_id, header_version, header_len, trailing })
}

fn walk_message(schema: &MessageSchema, version: i16, reader: &mut Reader<'_>) -> Walk<()> {
    let flexible = schema.flexible.contains(version);
    walk_struct(schema.fields, version, flexible, reader).map_err(|e| e.within(schema.name))
}

/// The inline fields present in `version`, then (flexible versions) the tagged section.
fn walk_struct(fields: &[Field], version: i16, flexible: bool, reader: &mut Reader<'_>) -> Walk<()> {
    for field in fields.iter().filter(|f| f.versions.contains(version) && !f.is_tagged_in(version)) {
        walk_field(field, version, flexible, reader).map_err(|e| e.within(field.name))?;
    }
    if flexible {
        walk_tagged_fields(fields, version, reader)?;
    }
    Ok(())
}

/// Kafka's tagged-field section: a count, then (tag, size, value) each. A known tag's value
/// must fill exactly its declared size (the decoder reads a known tag's value by its type,
/// an unknown one by its size: both must step over the same bytes).
fn walk_tagged_fields(fields: &[Field], version: i16, reader: &mut Reader<'_>) -> Walk<()> {
    let count = reader.uvarint().map_err(|e| e.within("TaggedFields"))?;
    // Each tagged field takes at least two bytes (tag and size).
    if count as usize > reader.remaining() / 2 {
        return Err(
            WireError::new(format!("{count} tagged fields in {} bytes", reader.remaining())).within("TaggedFields")
        );
    }
    for _ in 0..count {
        let tag = reader.uvarint().map_err(|e| e.within("TaggedFields"))?;
        let size = reader.uvarint().map_err(|e| e.within(format!("TaggedFields[tag {tag}]")))? as usize;
        let value = reader.take(size).map_err(|e| e.within(format!("TaggedFields[tag {tag}]")))?;
        let known = fields.iter().find(|f| f.is_tagged_in(version) && f.tag.is_some_and(|t| t.tag == tag));
        if let Some(field) = known {
            let mut inner = Reader { buf: value, pos: 0 };
            walk_field(field, version, true, &mut inner).map_err(|e| e.within(field.name))?;
            if inner.remaining() != 0 {
                return Err(WireError::new(format!(
                    "tagged field of {size} bytes holds a value of {} bytes",
                    inner.pos
                ))
                .within(field.name));
            }
        }
    }
    Ok(())
}

fn walk_field(field: &Field, version: i16, flexible: bool, reader: &mut Reader<'_>) -> Walk<()> {
    let nullable = field.nullable.contains(version);
    // Only strings and bytes may override the message's flexibility (Kafka FieldSpec).
    let compact_bytes = field.flexible.map_or(flexible, |versions| versions.contains(version));
    walk_value(&field.ty, version, flexible, compact_bytes, nullable, reader)
}

fn walk_value(
    ty: &Type,
    version: i16,
    flexible: bool,
    compact_bytes: bool,
    nullable: bool,
    reader: &mut Reader<'_>,
) -> Walk<()> {
    match ty {
        Type::Bool | Type::Int8 => reader.skip(1),
        Type::Int16 | Type::Uint16 => reader.skip(2),
        Type::Int32 | Type::Uint32 => reader.skip(4),
        Type::Int64 | Type::Float64 => reader.skip(8),
        Type::Uuid => reader.skip(16),
        Type::String => {
            let length = if compact_bytes { reader.compact_length()? } else { reader.i16()?.into() };
            skip_length(length, nullable, "string", reader)
        }
        Type::Bytes | Type::Records => {
            let length = if compact_bytes { reader.compact_length()? } else { reader.i32()?.into() };
            skip_length(length, nullable, "bytes", reader)
        }
        Type::Struct(fields) => {
            if nullable {
                // Kafka's nullable struct: an int8 marker, -1 absent, 1 present.
                match reader.i8()? {
                    -1 => return Ok(()),
                    1 => {}
                    other => return Err(WireError::new(format!("struct presence marker {other} is neither -1 nor 1"))),
                }
            }
            walk_struct(fields, version, flexible, reader)
        }
        Type::Array(element) => walk_array(element, version, flexible, nullable, reader),
    }
}

fn walk_array(element: &Type, version: i16, flexible: bool, nullable: bool, reader: &mut Reader<'_>) -> Walk<()> {
    let count = if flexible { reader.compact_length()? } else { reader.i32()?.into() };
    if count == -1 {
        return if nullable { Ok(()) } else { Err(WireError::new("array is null but not nullable in this version")) };
    }
    let Ok(count) = usize::try_from(count) else {
        return Err(WireError::new(format!("array count {count} is negative")));
    };
    // Kafka's generated readers: a collection can never have more elements than bytes left.
    if count > reader.remaining() {
        return Err(WireError::new(format!("array count {count} but only {} bytes remain", reader.remaining())));
    }
    for index in 0..count {
        // Array elements are never null and use the message's flexibility.
        walk_value(element, version, flexible, flexible, false, reader).map_err(|e| e.within(format!("[{index}]")))?;
    }
    Ok(())
}

fn skip_length(length: i64, nullable: bool, what: &str, reader: &mut Reader<'_>) -> Walk<()> {
    match length {
        -1 if nullable => Ok(()),
        -1 => Err(WireError::new(format!("{what} is null but not nullable in this version"))),
        length if length < 0 => Err(WireError::new(format!("{what} length {length} is negative"))),
        length => reader.skip(length as usize),
    }
}

/// A cursor over the frame that never reads past its end.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Walk<&'a [u8]> {
        if n > self.remaining() {
            return Err(WireError::new(format!("needs {n} bytes but only {} remain", self.remaining())));
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..self.pos])
    }

    fn skip(&mut self, n: usize) -> Walk<()> {
        self.take(n).map(|_| ())
    }

    fn i8(&mut self) -> Walk<i8> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    fn i16(&mut self) -> Walk<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Walk<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn array<const N: usize>(&mut self) -> Walk<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Kafka's unsigned varint: at most five bytes, and the value must fit 32 bits (Kafka
    /// `ByteUtils.readUnsignedVarint` refuses a longer one; a lax decoder would read the
    /// next field from its sixth byte).
    fn uvarint(&mut self) -> Walk<u32> {
        let mut value: u64 = 0;
        for index in 0..5 {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return u32::try_from(value).map_err(|_| WireError::new(format!("varint {value} exceeds 32 bits")));
            }
        }
        Err(WireError::new("varint longer than five bytes"))
    }

    /// A compact length (varint N+1, 0 for null) as N, -1 for null.
    fn compact_length(&mut self) -> Walk<i64> {
        Ok(i64::from(self.uvarint()?) - 1)
    }
}

#[cfg(test)]
mod tests;
