//! Bounded validation of Kafka request frames before anything decodes them.
//!
//! The Kafka listener decodes requests with the `kafka-protocol` crate, whose decoders call
//! `Vec::with_capacity(count)` on array counts read off the wire before reading a single
//! element: an 18-byte Metadata request with a topic count of 0x7fffffff made a broker try
//! to allocate 154 GB and abort. This crate walks a whole request frame — header and body,
//! every array, string, bytes and tagged field — by the layout of Kafka's own message
//! schemas (`schemas/*.json`, turned into static tables by `build.rs`) and accepts it only
//! if every length and count fits in the bytes that are actually present, with the checks
//! Kafka's generated Java readers make (`MessageDataGenerator`: "Tried to allocate a
//! collection of size N, but there are only M bytes remaining"). It allocates nothing and
//! never panics, whatever the input: a frame it accepts has at most one array element per
//! remaining byte at every level, so the decoder that runs afterwards allocates in
//! proportion to the frame, and it reads the same structure this walk read.
//!
//! It is stricter than the decoders it guards where they are lax (a varint longer than five
//! bytes or wider than 32 bits, a tagged field whose content does not fill its declared size
//! exactly): such a frame would be read differently by the two, so it is refused. Bytes
//! after the request's last field are ignored by both, as by Kafka.
#![forbid(unsafe_code)]

pub mod samples;
mod schema;
mod walk;

pub use schema::{request_schema, Field, MessageSchema, Tag, Type, Versions, REQUESTS, REQUEST_HEADER};
pub use walk::{validate_request, ValidRequest, WireError};
