//! The schema tables: types for Kafka's message definitions, and the tables `build.rs`
//! generated from `schemas/*.json`.

/// An inclusive version range, as the schemas write "3+", "0-7", "5" or "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    pub low: i16,
    pub high: i16,
}

impl Versions {
    pub fn contains(&self, version: i16) -> bool {
        self.low <= version && version <= self.high
    }
}

/// A field's wire type (Kafka `FieldType`).
#[derive(Debug, Clone, Copy)]
pub enum Type {
    Bool,
    Int8,
    Int16,
    Uint16,
    Int32,
    Uint32,
    Int64,
    Float64,
    Uuid,
    String,
    Bytes,
    /// A record set: bytes on the wire; the batches inside are validated by the log.
    Records,
    Struct(&'static [Field]),
    Array(&'static Type),
}

/// Where a field sits in the tagged-field section, and in which versions.
#[derive(Debug, Clone, Copy)]
pub struct Tag {
    pub tag: u32,
    pub versions: Versions,
}

/// One field of a message or struct, in wire order.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: Type,
    /// Versions in which the field exists at all.
    pub versions: Versions,
    pub nullable: Versions,
    /// A field-level override of the message's flexible versions (Kafka uses it for the
    /// request header's ClientId, which keeps its two-byte length in every version).
    pub flexible: Option<Versions>,
    pub tag: Option<Tag>,
}

impl Field {
    /// Whether the field is present in `version` in the tagged section rather than inline.
    pub fn is_tagged_in(&self, version: i16) -> bool {
        self.tag.is_some_and(|tag| tag.versions.contains(version))
    }
}

/// One message: a request (with its API key) or the request header.
#[derive(Debug, Clone, Copy)]
pub struct MessageSchema {
    pub name: &'static str,
    /// -1 for the header.
    pub api_key: i16,
    pub valid: Versions,
    pub flexible: Versions,
    pub fields: &'static [Field],
}

impl MessageSchema {
    /// The request header version a request of this schema at `version` carries (Kafka
    /// `ApiMessageType.requestHeaderVersion`): 2 for flexible versions, else 1, except
    /// ControlledShutdown v0 which predates the client id (header v0).
    pub fn request_header_version(&self, version: i16) -> i16 {
        if self.flexible.contains(version) {
            2
        } else if self.api_key == 7 && version == 0 {
            0
        } else {
            1
        }
    }
}

include!(concat!(env!("OUT_DIR"), "/schemas.rs"));

/// The schema of the request with this API key, if `schemas/` has it.
pub fn request_schema(api_key: i16) -> Option<&'static MessageSchema> {
    REQUESTS.iter().find(|schema| schema.api_key == api_key)
}
