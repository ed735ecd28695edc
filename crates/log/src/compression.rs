//! Record batch compression as Kafka stores it: the bytes after a batch's 61-byte header are
//! the records section compressed with the codec in `attributes & 7` (Kafka
//! `CompressionType`), in exactly the stream format Kafka's own clients write:
//!
//! - **gzip** (1): a gzip stream (RFC 1952), Java's `GZIPOutputStream`; concatenated
//!   members are read one after the other, as Java's `GZIPInputStream` does.
//! - **snappy** (2): the Java producer writes snappy-java's xerial framing (magic
//!   `\x82SNAPPY\0`, version, compatible version, then `[u32 BE length][raw snappy block]*`,
//!   32 KiB blocks); librdkafka, sarama and others send one plain raw snappy block. Both are
//!   read; xerial framing is written, as Kafka does.
//! - **lz4** (3): an LZ4 frame (Kafka `KafkaLZ4BlockOutputStream`: independent 64 KiB blocks,
//!   no checksums; the standard frame for magic 2). Linked blocks, block and content
//!   checksums and the content size are read too, as liblz4 writes them.
//! - **zstd** (4): zstd frames (Kafka's default level 3).
//!
//! [`decompress`] reads untrusted bytes from the network, so it never produces, nor
//! allocates output for, more than `max_output_bytes` whatever the input claims: it grows its
//! buffer only as real output arrives (snappy's and lz4's declared sizes are checked before
//! allocating), and a decompression bomb or garbage is an error, never a panic. Codec state
//! is small and fixed: miniz_oxide's inflater (no 32 KiB window: the output buffer is the
//! window), snappy and lz4 blocks decoded straight into the output, zstd one-shot (no
//! window buffer: frames decode into the bounded output, whatever window they declare).

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use miniz_oxide::inflate::core::{decompress as inflate, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

use crate::batch::BatchError;

/// A record batch codec (Kafka `CompressionType`), numbered as in the attributes' low bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    #[default]
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Compression {
    /// Every codec, in id order.
    pub const ALL: [Compression; 5] =
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

    /// The id in a batch's attributes (`attributes & 7`).
    pub fn id(self) -> i16 {
        self as i16
    }

    /// The codec with this attributes id; 5, 6 and 7 are unknown to Kafka too
    /// (`UNSUPPORTED_COMPRESSION_TYPE`).
    pub fn from_id(id: i16) -> Result<Compression, BatchError> {
        Compression::ALL
            .get(usize::try_from(id).unwrap_or(usize::MAX))
            .copied()
            .ok_or(BatchError::UnsupportedCompression(id))
    }

    /// Kafka's name (`compression.type` of a producer).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = String;

    /// A producer's `compression.type`: none, gzip, snappy, lz4 or zstd (any case).
    fn from_str(s: &str) -> Result<Compression, String> {
        let lower = s.trim().to_ascii_lowercase();
        Compression::ALL.into_iter().find(|c| c.name() == lower).ok_or_else(|| {
            let names: Vec<&str> = Compression::ALL.iter().map(|c| c.name()).collect();
            format!("unknown compression type {s:?} (expected one of {})", names.join(", "))
        })
    }
}

/// A topic's `compression.type` (Kafka's values: uncompressed, zstd, lz4, snappy, gzip,
/// producer): `None` for `producer` (batches stay as the producer sent them), else the codec
/// the leader stores batches in (`uncompressed`: [`Compression::None`]).
pub fn topic_compression(value: &str) -> Result<Option<Compression>, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "producer" => Ok(None),
        "uncompressed" => Ok(Some(Compression::None)),
        "none" => Err(format!("unknown compression.type {value:?} (a topic says uncompressed, not none)")),
        other => other.parse().map(Some),
    }
}

/// Decompresses `input` (a batch's records section) with `codec`, producing at most
/// `max_output_bytes`: more is [`BatchError::DecompressedTooLarge`], damaged or truncated
/// data [`BatchError::Decompression`]. Never panics; never allocates output beyond the
/// bound (see the module docs).
pub fn decompress(codec: Compression, input: &[u8], max_output_bytes: usize) -> Result<Vec<u8>, BatchError> {
    match codec {
        Compression::None if input.len() > max_output_bytes => Err(too_large(codec, max_output_bytes)),
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => gzip::decompress(input, max_output_bytes),
        Compression::Snappy => snappy::decompress(input, max_output_bytes),
        Compression::Lz4 => lz4::decompress(input, max_output_bytes),
        Compression::Zstd => zstd::decompress(input, max_output_bytes),
    }
}

/// Compresses `input` with `codec` in the format Kafka's Java producer writes (see the
/// module docs; gzip level 6, zstd level 3 as Kafka's defaults).
pub fn compress(codec: Compression, input: &[u8]) -> Vec<u8> {
    match codec {
        Compression::None => input.to_vec(),
        Compression::Gzip => gzip::compress(input),
        Compression::Snappy => snappy::compress(input),
        Compression::Lz4 => lz4::compress(input),
        Compression::Zstd => zstd::compress(input),
    }
}

fn corrupt(codec: Compression, reason: impl Into<String>) -> BatchError {
    BatchError::Decompression { codec, reason: reason.into() }
}

fn too_large(codec: Compression, max_bytes: usize) -> BatchError {
    BatchError::DecompressedTooLarge { codec, max_bytes }
}

/// Makes room for `additional` more bytes in `out` without ever giving it a capacity past
/// `limit` (doubling below it, as `Vec` does, but `reserve_exact` so the last step lands on
/// the limit instead of past it, and in one step once within 3/4 of it rather than in a
/// last small one). Fails if `out` would hold more than `limit` bytes.
fn reserve_bounded(out: &mut Vec<u8>, additional: usize, limit: usize, codec: Compression) -> Result<(), BatchError> {
    let needed = out.len().checked_add(additional).filter(|&n| n <= limit).ok_or_else(|| too_large(codec, limit))?;
    if needed > out.capacity() {
        let doubled = needed.max(out.capacity().saturating_mul(2));
        let target = if doubled >= limit / 4 * 3 { limit } else { doubled };
        out.reserve_exact(target - out.len());
    }
    Ok(())
}

/// A decoder's output: `len` bytes written, in a buffer whose bytes past `len` are zeroed
/// spare room. miniz, snap and lz4_flex write into an initialised `&mut [u8]`, so room must be
/// zero-filled before they decode into it; keeping the spare room across gzip members and
/// lz4 blocks (instead of truncating after each and zero-filling again for the next) zeroes
/// every byte at most once, so a stream of thousands of tiny members or blocks costs work in
/// proportion to its input and output, not blocks × room.
struct Output {
    buf: Vec<u8>,
    len: usize,
    limit: usize,
    codec: Compression,
}

impl Output {
    fn new(codec: Compression, limit: usize) -> Output {
        Output { buf: Vec::new(), len: 0, limit, codec }
    }

    /// The bytes written so far.
    fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Makes `buf[..end]` exist, zero-filling only bytes never zeroed before; past the bound
    /// is [`BatchError::DecompressedTooLarge`].
    fn room_to(&mut self, end: usize) -> Result<(), BatchError> {
        if end > self.limit {
            return Err(too_large(self.codec, self.limit));
        }
        if let Some(additional) = end.checked_sub(self.buf.len()).filter(|&n| n > 0) {
            reserve_bounded(&mut self.buf, additional, self.limit, self.codec)?;
            #[cfg(test)]
            tests::ZEROED.with(|zeroed| zeroed.set(zeroed.get() + additional));
            self.buf.resize(end, 0);
        }
        Ok(())
    }

    /// Doubles the room (at least `guess` more bytes the first time), never past the bound.
    fn grow(&mut self, guess: usize) -> Result<(), BatchError> {
        let have = self.buf.len();
        let additional = have.max(guess).min(self.limit.saturating_sub(have)).max(1);
        self.room_to(have.saturating_add(additional))
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.truncate(self.len);
        self.buf
    }
}

fn u32_be(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

fn u32_le(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))
}

mod gzip {
    use super::*;

    const CODEC: Compression = Compression::Gzip;
    const MAGIC: [u8; 2] = [0x1f, 0x8b];
    const DEFLATE: u8 = 8;
    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;
    /// Level 6: Java's `Deflater.DEFAULT_COMPRESSION`, what Kafka's gzip uses by default.
    const LEVEL: u8 = 6;

    pub(super) fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
        let mut out = Output::new(CODEC, limit);
        // One inflater for every member, reset by `init` (its tables are rebuilt for every
        // deflate block): a stream of tiny members costs no ~11 KiB of table setup each.
        let mut state = DecompressorOxide::new();
        // A first guess at the whole output, spent once (the spare room carries over from
        // member to member): O(input) zeroing at most, whatever the members' count.
        let guess = input.len().saturating_mul(4).max(1024);
        let mut rest = input;
        // Bounded: each member consumes at least its 18 bytes of header and trailer.
        loop {
            let body = skip_header(rest)?;
            let start = out.len;
            let consumed = inflate_member(&mut state, body, &mut out, guess)?;
            let trailer = body.get(consumed..consumed + 8).ok_or_else(|| corrupt(CODEC, "truncated trailer"))?;
            let crc = u32_le(trailer).unwrap_or_default();
            let size = u32_le(&trailer[4..]).unwrap_or_default();
            if crc32fast::hash(&out.written()[start..]) != crc {
                return Err(corrupt(CODEC, "CRC-32 mismatch"));
            }
            if (out.len - start) as u32 != size {
                return Err(corrupt(CODEC, "size in the trailer does not match the data"));
            }
            rest = &body[consumed + 8..];
            if rest.is_empty() {
                return Ok(out.finish());
            }
            if !rest.starts_with(&MAGIC) {
                return Err(corrupt(CODEC, format!("{} bytes after the gzip stream", rest.len())));
            }
        }
    }

    /// The deflate data after a member's header (RFC 1952 section 2.3).
    fn skip_header(member: &[u8]) -> Result<&[u8], BatchError> {
        let truncated = || corrupt(CODEC, "truncated header");
        let header = member.get(..10).ok_or_else(truncated)?;
        if header[..2] != MAGIC {
            return Err(corrupt(CODEC, "not a gzip stream (bad magic)"));
        }
        if header[2] != DEFLATE {
            return Err(corrupt(CODEC, format!("unknown method {}", header[2])));
        }
        let flags = header[3];
        let mut at = 10;
        if flags & FEXTRA != 0 {
            let length = member.get(at..at + 2).ok_or_else(truncated)?;
            at += 2 + usize::from(u16::from_le_bytes([length[0], length[1]]));
        }
        for flag in [FNAME, FCOMMENT] {
            if flags & flag != 0 {
                let text = member.get(at..).ok_or_else(truncated)?;
                at += text.iter().position(|&b| b == 0).ok_or_else(truncated)? + 1;
            }
        }
        if flags & FHCRC != 0 {
            at += 2;
        }
        member.get(at..).ok_or_else(truncated)
    }

    /// Inflates one raw deflate stream onto the end of `out`; returns the input bytes it
    /// took. The member's own output is the inflater's window (no 32 KiB window of its own):
    /// a distance reaching back into an earlier member is corrupt, as zlib (Java's
    /// `GZIPInputStream`) says "invalid distance too far back".
    fn inflate_member(
        state: &mut DecompressorOxide,
        input: &[u8],
        out: &mut Output,
        guess: usize,
    ) -> Result<usize, BatchError> {
        state.init();
        let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
        let start = out.len;
        let mut consumed = 0;
        // Bounded: every round grows the room (doubling), which stops at the bound.
        loop {
            let position = out.len - start;
            let (status, read, written) = inflate(state, &input[consumed..], &mut out.buf[start..], position, flags);
            consumed += read;
            out.len += written;
            match status {
                TINFLStatus::Done => return Ok(consumed),
                TINFLStatus::HasMoreOutput => out.grow(guess)?,
                TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
                    return Err(corrupt(CODEC, "truncated deflate data"))
                }
                other => return Err(corrupt(CODEC, format!("bad deflate data ({other:?})"))),
            }
        }
    }

    pub(super) fn compress(input: &[u8]) -> Vec<u8> {
        let deflated = miniz_oxide::deflate::compress_to_vec(input, LEVEL);
        let mut out = Vec::with_capacity(deflated.len() + 18);
        // No mtime, no name; "unknown" OS (255), as Java's GZIPOutputStream writes.
        out.extend_from_slice(&[MAGIC[0], MAGIC[1], DEFLATE, 0, 0, 0, 0, 0, 0, 0xff]);
        out.extend_from_slice(&deflated);
        out.extend_from_slice(&crc32fast::hash(input).to_le_bytes());
        out.extend_from_slice(&(input.len() as u32).to_le_bytes());
        out
    }
}

mod snappy {
    use super::*;

    const CODEC: Compression = Compression::Snappy;
    /// snappy-java's stream header: magic, version 1, compatible version 1.
    const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
    const XERIAL_HEADER_BYTES: usize = 16;
    /// snappy-java's default block size, which Kafka's producer uses.
    const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

    pub(super) fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
        let mut out = Output::new(CODEC, limit);
        if !input.starts_with(&XERIAL_MAGIC) {
            raw_block(input, &mut out)?;
            return Ok(out.finish());
        }
        let mut rest = input;
        // Bounded: each step consumes a header or a length and its block.
        while !rest.is_empty() {
            if rest.starts_with(&XERIAL_MAGIC) {
                // A stream header; snappy-java also accepts one between blocks
                // (concatenated streams).
                rest = rest.get(XERIAL_HEADER_BYTES..).ok_or_else(|| corrupt(CODEC, "truncated xerial header"))?;
                continue;
            }
            let length = u32_be(rest).ok_or_else(|| corrupt(CODEC, "truncated xerial block length"))?;
            let length = i32::try_from(length).map_err(|_| corrupt(CODEC, "negative xerial block length"))?;
            let block = rest
                .get(4..4 + length as usize)
                .ok_or_else(|| corrupt(CODEC, format!("xerial block of {length} bytes runs past the data")))?;
            raw_block(block, &mut out)?;
            rest = &rest[4 + block.len()..];
        }
        Ok(out.finish())
    }

    /// Decodes one raw snappy block onto the end of `out`, checking the length it declares
    /// against the bound before allocating anything.
    fn raw_block(block: &[u8], out: &mut Output) -> Result<(), BatchError> {
        let length = snap::raw::decompress_len(block).map_err(|e| corrupt(CODEC, e.to_string()))?;
        let start = out.len;
        out.room_to(start.checked_add(length).ok_or_else(|| too_large(CODEC, out.limit))?)?;
        // snap writes exactly the declared length or fails, so the room zeroed is output.
        let written = snap::raw::Decoder::new()
            .decompress(block, &mut out.buf[start..start + length])
            .map_err(|e| corrupt(CODEC, e.to_string()))?;
        out.len += written;
        Ok(())
    }

    pub(super) fn compress(input: &[u8]) -> Vec<u8> {
        let mut encoder = snap::raw::Encoder::new();
        let mut out = Vec::with_capacity(XERIAL_HEADER_BYTES + snap::raw::max_compress_len(input.len()) + 64);
        out.extend_from_slice(&XERIAL_MAGIC);
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        let mut block = vec![0u8; snap::raw::max_compress_len(XERIAL_BLOCK_BYTES)];
        for chunk in input.chunks(XERIAL_BLOCK_BYTES) {
            // snap fails only on an input over 2^32 - 1 bytes or an output buffer under
            // max_compress_len: neither for a 32 KiB chunk and this buffer, whatever the data.
            let length = encoder.compress(chunk, &mut block).expect("a 32 KiB chunk fits max_compress_len");
            out.extend_from_slice(&(length as u32).to_be_bytes());
            out.extend_from_slice(&block[..length]);
        }
        out
    }
}

mod lz4 {
    use super::*;

    const CODEC: Compression = Compression::Lz4;
    const MAGIC: u32 = 0x184D_2204;
    const VERSION: u8 = 0b01;
    const FLG_BLOCK_INDEPENDENCE: u8 = 0x20;
    const FLG_BLOCK_CHECKSUM: u8 = 0x10;
    const FLG_CONTENT_SIZE: u8 = 0x08;
    const FLG_CONTENT_CHECKSUM: u8 = 0x04;
    const FLG_RESERVED: u8 = 0x02;
    const FLG_DICT_ID: u8 = 0x01;
    const BD_RESERVED: u8 = 0x8f;
    const UNCOMPRESSED_BLOCK: u32 = 0x8000_0000;
    /// The back-reference window of LZ4: what a linked block may refer to.
    const WINDOW_BYTES: usize = 64 * 1024;
    /// Kafka writes 64 KiB blocks (BD block maximum size id 4).
    const BLOCK_BYTES: usize = 64 * 1024;
    /// The most one byte of an LZ4 block decodes to (a match length's extension bytes).
    const MAX_RATIO: usize = 255;

    pub(super) fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
        let mut out = Output::new(CODEC, limit);
        let mut rest = input;
        // Bounded: each frame consumes at least its 7-byte header and end mark.
        loop {
            rest = frame(rest, &mut out)?;
            if rest.is_empty() {
                return Ok(out.finish());
            }
        }
    }

    /// A frame descriptor (LZ4 frame format section "Frame Descriptor").
    struct Descriptor {
        flg: u8,
        max_block: usize,
        content_size: Option<usize>,
        /// Its length from the magic on, header checksum included.
        length: usize,
    }

    /// Reads and checks a frame's header; a content size past what the bound leaves is
    /// refused before any block is decoded.
    fn descriptor(input: &[u8], out: &Output) -> Result<Descriptor, BatchError> {
        let truncated = || corrupt(CODEC, "truncated frame header");
        if u32_le(input).ok_or_else(truncated)? != MAGIC {
            return Err(corrupt(CODEC, "not an LZ4 frame (bad magic)"));
        }
        let (&flg, &bd) = (input.get(4).ok_or_else(truncated)?, input.get(5).ok_or_else(truncated)?);
        if flg >> 6 != VERSION || flg & FLG_RESERVED != 0 || bd & BD_RESERVED != 0 {
            return Err(corrupt(CODEC, format!("unsupported frame descriptor FLG {flg:#04x} BD {bd:#04x}")));
        }
        if flg & FLG_DICT_ID != 0 {
            return Err(corrupt(CODEC, "frames with a dictionary id are not supported"));
        }
        let max_block = match (bd >> 4) & 0x07 {
            4 => 64 * 1024,
            5 => 256 * 1024,
            6 => 1024 * 1024,
            7 => 4 * 1024 * 1024,
            id => return Err(corrupt(CODEC, format!("bad block maximum size id {id}"))),
        };
        let mut at = 6;
        let mut content_size = None;
        if flg & FLG_CONTENT_SIZE != 0 {
            let bytes = input.get(at..at + 8).ok_or_else(truncated)?;
            let size = u64::from_le_bytes(bytes.try_into().unwrap_or_default());
            if size > (out.limit - out.len) as u64 {
                return Err(too_large(CODEC, out.limit));
            }
            content_size = Some(size as usize);
            at += 8;
        }
        let checksum = *input.get(at).ok_or_else(truncated)?;
        if (xxh32(&input[4..at], 0) >> 8) as u8 != checksum {
            return Err(corrupt(CODEC, "frame descriptor checksum mismatch"));
        }
        Ok(Descriptor { flg, max_block, content_size, length: at + 1 })
    }

    /// Decodes one frame onto the end of `out`; returns what follows it.
    fn frame<'a>(input: &'a [u8], out: &mut Output) -> Result<&'a [u8], BatchError> {
        let truncated = |what: &str| corrupt(CODEC, format!("truncated {what}"));
        let Descriptor { flg, max_block, content_size, length } = descriptor(input, out)?;
        let mut at = length;
        let frame_start = out.len;
        // Bounded: each block consumes at least its 4-byte size.
        loop {
            let size = u32_le(&input[at..]).ok_or_else(|| truncated("block size"))?;
            at += 4;
            if size == 0 {
                break; // EndMark
            }
            let length = (size & !UNCOMPRESSED_BLOCK) as usize;
            if length > max_block {
                return Err(corrupt(CODEC, format!("block of {length} bytes exceeds the frame's maximum {max_block}")));
            }
            let data = input.get(at..at + length).ok_or_else(|| truncated("block"))?;
            at += length;
            if flg & FLG_BLOCK_CHECKSUM != 0 {
                let expected = u32_le(&input[at..]).ok_or_else(|| truncated("block checksum"))?;
                if xxh32(data, 0) != expected {
                    return Err(corrupt(CODEC, "block checksum mismatch"));
                }
                at += 4;
            }
            if size & UNCOMPRESSED_BLOCK != 0 {
                let start = out.len;
                out.room_to(start + data.len())?;
                out.buf[start..start + data.len()].copy_from_slice(data);
                out.len += data.len();
            } else {
                let linked = flg & FLG_BLOCK_INDEPENDENCE == 0;
                block(data, out, max_block, linked.then_some(frame_start))?;
            }
        }
        if flg & FLG_CONTENT_CHECKSUM != 0 {
            let expected = u32_le(&input[at..]).ok_or_else(|| truncated("content checksum"))?;
            if xxh32(&out.written()[frame_start..], 0) != expected {
                return Err(corrupt(CODEC, "content checksum mismatch"));
            }
            at += 4;
        }
        if content_size.is_some_and(|size| size != out.len - frame_start) {
            return Err(corrupt(CODEC, "content size in the frame header does not match the data"));
        }
        Ok(&input[at..])
    }

    /// Decodes one compressed block onto the end of `out`. A linked block may refer back
    /// into the frame's output before it (`linked_from`: where the frame's output starts).
    fn block(data: &[u8], out: &mut Output, max_block: usize, linked_from: Option<usize>) -> Result<(), BatchError> {
        // An LZ4 sequence of n bytes decodes to under 255 n (each byte of a length adds at
        // most 255): no more room than that, nor than the frame's block size, is made for a
        // block, so a 6-byte block in a frame of 4 MiB blocks does not cost 4 MiB.
        let most = data.len().saturating_mul(MAX_RATIO).saturating_add(64).min(max_block);
        let room = most.min(out.limit - out.len);
        let start = out.len;
        out.room_to(start + room)?;
        let result = match linked_from {
            Some(frame_start) if start > frame_start => {
                let (before, tail) = out.buf.split_at_mut(start);
                let window = &before[frame_start.max(start.saturating_sub(WINDOW_BYTES))..];
                lz4_flex::block::decompress_into_with_dict(data, &mut tail[..room], window)
            }
            _ => lz4_flex::block::decompress_into(data, &mut out.buf[start..start + room]),
        };
        match result {
            Ok(written) => {
                out.len += written;
                Ok(())
            }
            Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) if room < most => {
                Err(too_large(CODEC, out.limit))
            }
            Err(e) => Err(corrupt(CODEC, e.to_string())),
        }
    }

    /// Kafka's frame: independent 64 KiB blocks, no checksums, no content size
    /// (`KafkaLZ4BlockOutputStream`); a block that does not shrink is stored uncompressed.
    pub(super) fn compress(input: &[u8]) -> Vec<u8> {
        let descriptor = [0x40 | FLG_BLOCK_INDEPENDENCE, 0x40];
        let mut out = Vec::with_capacity(lz4_flex::block::get_maximum_output_size(input.len()) + 64);
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&descriptor);
        out.push((xxh32(&descriptor, 0) >> 8) as u8);
        let mut block = vec![0u8; lz4_flex::block::get_maximum_output_size(BLOCK_BYTES)];
        for chunk in input.chunks(BLOCK_BYTES) {
            // Infallible: the block buffer fits the largest output of a chunk.
            match lz4_flex::block::compress_into(chunk, &mut block) {
                Ok(length) if length < chunk.len() => {
                    out.extend_from_slice(&(length as u32).to_le_bytes());
                    out.extend_from_slice(&block[..length]);
                }
                _ => {
                    out.extend_from_slice(&(chunk.len() as u32 | UNCOMPRESSED_BLOCK).to_le_bytes());
                    out.extend_from_slice(chunk);
                }
            }
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out
    }

    const PRIME1: u32 = 0x9E37_79B1;
    const PRIME2: u32 = 0x85EB_CA77;
    const PRIME3: u32 = 0xC2B2_AE3D;
    const PRIME4: u32 = 0x27D4_EB2F;
    const PRIME5: u32 = 0x1656_67B1;

    /// XXH32, the checksum of the LZ4 frame format.
    pub(super) fn xxh32(input: &[u8], seed: u32) -> u32 {
        let round = |acc: u32, lane: &[u8]| {
            let lane = u32::from_le_bytes([lane[0], lane[1], lane[2], lane[3]]);
            acc.wrapping_add(lane.wrapping_mul(PRIME2)).rotate_left(13).wrapping_mul(PRIME1)
        };
        let mut stripes = input.chunks_exact(16);
        let mut hash = if input.len() >= 16 {
            let mut v = [
                seed.wrapping_add(PRIME1).wrapping_add(PRIME2),
                seed.wrapping_add(PRIME2),
                seed,
                seed.wrapping_sub(PRIME1),
            ];
            for stripe in stripes.by_ref() {
                for (i, acc) in v.iter_mut().enumerate() {
                    *acc = round(*acc, &stripe[i * 4..]);
                }
            }
            v[0].rotate_left(1)
                .wrapping_add(v[1].rotate_left(7))
                .wrapping_add(v[2].rotate_left(12))
                .wrapping_add(v[3].rotate_left(18))
        } else {
            seed.wrapping_add(PRIME5)
        };
        hash = hash.wrapping_add(input.len() as u32);
        let tail = if input.len() >= 16 { stripes.remainder() } else { input };
        let mut words = tail.chunks_exact(4);
        for word in words.by_ref() {
            let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            hash = hash.wrapping_add(word.wrapping_mul(PRIME3)).rotate_left(17).wrapping_mul(PRIME4);
        }
        for &byte in words.remainder() {
            hash = hash.wrapping_add(u32::from(byte).wrapping_mul(PRIME5)).rotate_left(11).wrapping_mul(PRIME1);
        }
        hash ^= hash >> 15;
        hash = hash.wrapping_mul(PRIME2);
        hash ^= hash >> 13;
        hash = hash.wrapping_mul(PRIME3);
        hash ^ (hash >> 16)
    }
}

mod zstd {
    use super::*;
    use ::zstd::zstd_safe::{self, CCtx, DCtx};

    const CODEC: Compression = Compression::Zstd;
    /// Kafka's default `compression.zstd.level`.
    const LEVEL: i32 = 3;
    /// `ZSTD_error_dstSize_tooSmall`; zstd's error codes are fixed since v1.3.1 and
    /// returned as `(size_t)-code`.
    const DST_SIZE_TOO_SMALL: usize = 70usize.wrapping_neg();

    thread_local! {
        // A context holds ~100 KiB of tables: one per thread, reused.
        static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
        static CCTX: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
    }

    /// One-shot decoding into a buffer of a known capacity: the frames decode straight into
    /// it (no window buffer, whatever window size a frame declares) and zstd refuses to
    /// write past it. The capacity is the declared content size when the first frame has
    /// one (Kafka's streaming producer leaves it out), else a guess that grows 4x a round,
    /// never past the bound.
    pub(super) fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
        let mut capacity = match zstd_safe::get_frame_content_size(input) {
            Ok(Some(size)) if size > limit as u64 => return Err(too_large(CODEC, limit)),
            Ok(Some(size)) => size as usize,
            Ok(None) => input.len().saturating_mul(8).max(16 * 1024).min(limit),
            Err(_) => return Err(corrupt(CODEC, "not a zstd frame")),
        };
        DCTX.with(|cell| {
            let mut cell = cell.borrow_mut();
            let dctx = cell.get_or_insert_with(DCtx::create);
            // Bounded: the capacity grows 4x a round up to the bound.
            loop {
                let mut out = Vec::with_capacity(capacity);
                match dctx.decompress(&mut out, input) {
                    Ok(_) => return Ok(out),
                    // (A skippable first frame declares size 0: grow from at least 16 KiB.)
                    Err(DST_SIZE_TOO_SMALL) if capacity < limit => {
                        capacity = capacity.saturating_mul(4).max(16 * 1024).min(limit)
                    }
                    Err(DST_SIZE_TOO_SMALL) => return Err(too_large(CODEC, limit)),
                    Err(code) => {
                        // A failed one-shot leaves the context ready for the next frame.
                        return Err(corrupt(CODEC, zstd_safe::get_error_name(code)));
                    }
                }
            }
        })
    }

    pub(super) fn compress(input: &[u8]) -> Vec<u8> {
        CCTX.with(|cell| {
            let mut cell = cell.borrow_mut();
            let cctx = cell.get_or_insert_with(CCtx::create);
            let mut out = Vec::with_capacity(zstd_safe::compress_bound(input.len()));
            // Infallible: the buffer is zstd's own bound for this input.
            match cctx.compress(&mut out, input, LEVEL) {
                Ok(_) => out,
                Err(code) => panic!("zstd compression failed: {}", zstd_safe::get_error_name(code)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Bytes [`Output::room_to`] zero-filled on this thread: the work a decode costs
        /// beyond its input and output, counted rather than timed.
        pub(super) static ZEROED: Cell<usize> = const { Cell::new(0) };
    }

    /// Decodes with the zero-fill counter reset; returns the result and the bytes zeroed.
    fn counted(codec: Compression, input: &[u8], limit: usize) -> (Result<Vec<u8>, BatchError>, usize) {
        ZEROED.with(|zeroed| zeroed.set(0));
        let result = decompress(codec, input, limit);
        (result, ZEROED.with(Cell::get))
    }

    /// An LZ4 frame (independent blocks, no checksums) with block maximum size id `bd_id`.
    fn lz4_frame(bd_id: u8, blocks: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
        let descriptor = [0x60, bd_id << 4];
        let mut frame = [&0x184D_2204u32.to_le_bytes()[..], &descriptor].concat();
        frame.push((lz4::xxh32(&descriptor, 0) >> 8) as u8);
        for block in blocks {
            frame.extend_from_slice(&(block.len() as u32).to_le_bytes());
            frame.extend_from_slice(&block);
        }
        frame.extend_from_slice(&0u32.to_le_bytes());
        frame
    }

    /// The worst shapes for the decoders that zero-fill room before decoding into it: ~1 MiB
    /// of the smallest gzip members, and of 6-byte LZ4 blocks in a frame of 4 MiB blocks
    /// (once 4 MiB zeroed per block), against a 32 MiB bound. Each byte is zeroed at most
    /// once, so the work stays a small multiple of input plus output, decoded or refused.
    #[test]
    fn many_tiny_members_and_blocks_cost_work_linear_in_input_and_output() {
        let mebibyte = 1024 * 1024;
        let member = compress(Compression::Gzip, b"x");
        let gzip = member.repeat(mebibyte / member.len());
        // Token 0x10: one literal, no match; then the literal.
        let lz4 = lz4_frame(7, std::iter::repeat_n(vec![0x10, b'x'], mebibyte / 6));
        let snappy_block = [&7u32.to_be_bytes()[..], &[0x05, 0x10], b"hello"].concat();
        let header = [&[0x82][..], b"SNAPPY\0", &[0, 0, 0, 1, 0, 0, 0, 1]].concat();
        let snappy = [header, snappy_block.repeat(mebibyte / snappy_block.len())].concat();
        for (codec, input) in [(Compression::Gzip, gzip), (Compression::Lz4, lz4), (Compression::Snappy, snappy)] {
            let (result, zeroed) = counted(codec, &input, 32 * mebibyte);
            let output = result.unwrap().len();
            assert!(output > 0 && zeroed <= 4 * (input.len() + output), "{codec}: {zeroed} bytes zeroed");
            let (result, zeroed) = counted(codec, &input, output / 2);
            assert_eq!(result, Err(BatchError::DecompressedTooLarge { codec, max_bytes: output / 2 }), "{codec}");
            assert!(zeroed <= output, "{codec}: {zeroed} bytes zeroed refusing at {}", output / 2);
        }
    }

    /// The room an LZ4 block gets is capped at what its bytes can decode to; a block at
    /// LZ4's largest ratio still fits, and a bomb of such blocks stops at the bound.
    #[test]
    fn lz4_blocks_at_the_largest_ratio_decode_and_bombs_stop_at_the_bound() {
        let zeros = vec![0u8; 4 * 1024 * 1024];
        let block = lz4_flex::block::compress(&zeros);
        assert!(block.len() * 250 < zeros.len(), "near LZ4's largest ratio: {} bytes", block.len());
        let frame = lz4_frame(7, [block.clone()]);
        assert_eq!(decompress(Compression::Lz4, &frame, zeros.len()).unwrap(), zeros);
        let bomb = lz4_frame(7, std::iter::repeat_n(block, 64));
        let (result, zeroed) = counted(Compression::Lz4, &bomb, 32 * 1024 * 1024);
        assert!(matches!(result, Err(BatchError::DecompressedTooLarge { .. })));
        assert!(zeroed <= 32 * 1024 * 1024, "{zeroed} bytes zeroed");
    }

    /// A gzip member's back-references stay within its own output: zlib (Java's
    /// `GZIPInputStream`) says "invalid distance too far back" to one reaching before it.
    #[test]
    fn a_gzip_member_cannot_refer_into_the_member_before_it() {
        // Fixed-Huffman deflate: a match of length 3 at distance 1, then the end of block.
        let header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        let trailer = [crc32fast::hash(b"aaa").to_le_bytes(), 3u32.to_le_bytes()].concat();
        let reaches_back = [&header[..], &[0x03, 0x02, 0x00], &trailer].concat();
        for input in [reaches_back.clone(), [compress(Compression::Gzip, b"a"), reaches_back].concat()] {
            let error = decompress(Compression::Gzip, &input, 100).unwrap_err();
            assert!(matches!(error, BatchError::Decompression { .. }), "{error}");
        }
    }

    fn sample() -> Vec<u8> {
        let mut data = Vec::new();
        for i in 0..5000u32 {
            data.extend_from_slice(format!("record {i} of a compressible sample; ").as_bytes());
        }
        data
    }

    #[test]
    fn names_and_ids_are_kafkas() {
        for (id, name) in ["none", "gzip", "snappy", "lz4", "zstd"].iter().enumerate() {
            let codec = Compression::from_id(id as i16).unwrap();
            assert_eq!((codec.id(), codec.name()), (id as i16, *name));
            assert_eq!(name.parse::<Compression>(), Ok(codec));
            assert_eq!(name.to_uppercase().parse::<Compression>(), Ok(codec));
        }
        for id in [5, 6, 7, -1] {
            assert_eq!(Compression::from_id(id), Err(BatchError::UnsupportedCompression(id)));
        }
        assert!("brotli".parse::<Compression>().unwrap_err().contains("none, gzip, snappy, lz4, zstd"));
    }

    #[test]
    fn every_codec_round_trips_small_large_and_empty_input() {
        let large = sample();
        for codec in Compression::ALL {
            for input in [&b""[..], b"x", b"hello hello hello hello", &large[..]] {
                let compressed = compress(codec, input);
                assert_eq!(decompress(codec, &compressed, input.len()).unwrap(), input, "{codec}");
                if !input.is_empty() {
                    let error = decompress(codec, &compressed, input.len() - 1).unwrap_err();
                    assert!(matches!(error, BatchError::DecompressedTooLarge { .. }), "{codec}: {error}");
                }
            }
            if codec != Compression::None {
                assert!(compress(codec, &large).len() < large.len() / 4, "{codec} compresses");
            }
        }
    }

    /// Reference streams made by other implementations: Python's gzip (zlib), liblz4 1.9.4
    /// (python-lz4), libzstd through python-zstandard's streaming writer (no content size,
    /// as Kafka's Java producer writes), and snappy in both framings, by hand.
    #[test]
    fn streams_from_other_implementations_decode() {
        let data = b"hello hello hello hello insync";
        let gzip = hex("1f8b0800000000000203cb48cdc9c957c8c02033f38a2bf39201332e5fe51e000000");
        let lz4 = hex("04224d18604082100000006e68656c6c6f20060060696e73796e6300000000");
        let zstd_streamed = hex("28b52ffd00589500006068656c6c6f20696e73796e630100f14a11");
        for (codec, stream) in [(Compression::Gzip, gzip), (Compression::Lz4, lz4), (Compression::Zstd, zstd_streamed)]
        {
            assert_eq!(decompress(codec, &stream, 1000).unwrap(), data, "{codec}");
        }
        // Raw snappy of "hello": length varint 5, a literal tag of length 5, the bytes.
        let raw = [&[0x05, 0x10][..], b"hello"].concat();
        assert_eq!(decompress(Compression::Snappy, &raw, 5).unwrap(), b"hello");
        // The same block in snappy-java's framing, twice, the second behind its own header
        // (concatenated streams).
        let header = [&[0x82][..], b"SNAPPY\0", &[0, 0, 0, 1, 0, 0, 0, 1]].concat();
        let block = [&7u32.to_be_bytes()[..], &raw].concat();
        let xerial = [&header[..], &block, &header, &block].concat();
        assert_eq!(decompress(Compression::Snappy, &xerial, 10).unwrap(), b"hellohello");
        assert!(matches!(decompress(Compression::Snappy, &xerial, 9), Err(BatchError::DecompressedTooLarge { .. })));
        assert!(compress(Compression::Snappy, b"hello").starts_with(&header));
        // Kafka's LZ4 frame descriptor: FLG 0x60 (version 1, independent blocks), BD 0x40.
        assert_eq!(&compress(Compression::Lz4, data)[..7], &[0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82]);
    }

    #[test]
    fn a_skippable_zstd_frame_first_is_read_past() {
        // A skippable frame (magic 0x184D2A50, 4-byte length, payload) declares content
        // size 0; the data frame behind it still decodes, and a bomb behind it still stops.
        let skippable = [&0x184D_2A50u32.to_le_bytes()[..], &3u32.to_le_bytes(), b"abc"].concat();
        let data = b"behind a skippable frame ".repeat(100);
        let input = [&skippable[..], &compress(Compression::Zstd, &data)].concat();
        assert_eq!(decompress(Compression::Zstd, &input, data.len()).unwrap(), data);
        let error = decompress(Compression::Zstd, &input, data.len() - 1).unwrap_err();
        assert!(matches!(error, BatchError::DecompressedTooLarge { .. }), "{error}");
    }

    #[test]
    fn xxh32_matches_the_reference() {
        assert_eq!(lz4::xxh32(b"", 0), 0x02CC_5D05);
        assert_eq!(lz4::xxh32(b"abc", 0), 0x32D1_53FF);
        // The FLG/BD bytes of Kafka's frame give the header checksum byte 0x82.
        assert_eq!((lz4::xxh32(&[0x60, 0x40], 0) >> 8) as u8, 0x82);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn linked_lz4_blocks_with_checksums_decode() {
        // liblz4 1.9.4 (python-lz4) with linked 64 KiB blocks, block and content checksums
        // and the content size: "abcdefghij" * 6556, the second block referring back into
        // the first.
        let data: Vec<u8> = b"abcdefghij".iter().copied().cycle().take(65_560).collect();
        let frame = [
            hex("04224d185c401800010000000000f014010000af6162636465666768696a0a00"),
            vec![0xff; 256],
            hex("de5062636465667f357dcf0a0000000ffaff0050666768696ab2d014dc000000005e3dfb19"),
        ]
        .concat();
        assert_eq!(decompress(Compression::Lz4, &frame, data.len()).unwrap(), data);
        // The content size is checked against the bound before any block is decoded.
        assert!(matches!(decompress(Compression::Lz4, &frame, 1000), Err(BatchError::DecompressedTooLarge { .. })));
        let mut flipped = frame.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let error = decompress(Compression::Lz4, &flipped, data.len()).unwrap_err();
        assert_eq!(error.to_string(), "corrupt lz4 data: content checksum mismatch");
        let mut flipped = frame.clone();
        flipped[40] ^= 1;
        let error = decompress(Compression::Lz4, &flipped, data.len()).unwrap_err();
        assert_eq!(error.to_string(), "corrupt lz4 data: block checksum mismatch");
    }

    /// Bombs: 64 MiB of zeros, compressed, against a 1 MiB bound. (That no more than the
    /// bound is allocated on the way is measured in `tests/decompression_bombs.rs`.)
    #[test]
    fn bombs_are_refused_at_the_bound() {
        let zeros = vec![0u8; 64 * 1024 * 1024];
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let bomb = compress(codec, &zeros);
            assert!(bomb.len() < zeros.len() / 20, "{codec}: {} bytes", bomb.len());
            let error = decompress(codec, &bomb, 1024 * 1024).unwrap_err();
            assert_eq!(error, BatchError::DecompressedTooLarge { codec, max_bytes: 1024 * 1024 }, "{codec}");
            assert_eq!(error.error_code(), insync_types::ErrorCode::MESSAGE_TOO_LARGE);
        }
        // A raw snappy block that claims 4 GiB in its length varint is refused before any
        // allocation, as is a zstd frame whose header declares 1 TiB.
        let claims_4_gib = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        let error = decompress(Compression::Snappy, &claims_4_gib, 1 << 20).unwrap_err();
        assert!(matches!(error, BatchError::DecompressedTooLarge { .. }), "{error}");
        // Magic, frame header descriptor 0xc0 (8-byte content size, a window descriptor),
        // window descriptor, content size 2^40, then no blocks at all.
        let claims_1_tib = [&[0x28, 0xb5, 0x2f, 0xfd, 0xc0, 0x50][..], &(1u64 << 40).to_le_bytes()].concat();
        let error = decompress(Compression::Zstd, &claims_1_tib, 1 << 20).unwrap_err();
        assert!(matches!(error, BatchError::DecompressedTooLarge { .. }), "{error}");
    }

    #[test]
    fn output_capacity_never_passes_the_bound() {
        let data = sample();
        for codec in Compression::ALL {
            let compressed = compress(codec, &data);
            let out = decompress(codec, &compressed, data.len()).unwrap();
            assert!(out.capacity() <= data.len(), "{codec}: capacity {} > bound {}", out.capacity(), data.len());
        }
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error_not_a_panic() {
        let data = sample();
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let compressed = compress(codec, &data);
            for cut in [0, 1, 5, 10, 17, compressed.len() / 2, compressed.len() - 1] {
                let error = decompress(codec, &compressed[..cut], 1 << 20).unwrap_err();
                assert!(matches!(error, BatchError::Decompression { .. }), "{codec} cut at {cut}: {error}");
                assert_eq!(error.error_code(), insync_types::ErrorCode::CORRUPT_MESSAGE);
            }
            let mut trailing = compressed.clone();
            trailing.extend_from_slice(b"junk");
            assert!(decompress(codec, &trailing, 1 << 20).is_err(), "{codec}: trailing junk");
            for garbage in [&b"\x00\x01\x02 garbage garbage garbage"[..], &[0xff; 64], &[0u8; 3]] {
                let _ = decompress(codec, garbage, 1 << 20);
            }
        }
    }

    #[test]
    fn flipped_bytes_never_panic() {
        let data = sample();
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let compressed = compress(codec, &data[..4000]);
            for at in 0..compressed.len() {
                for bit in [0x01, 0x80] {
                    let mut damaged = compressed.clone();
                    damaged[at] ^= bit;
                    if let Ok(out) = decompress(codec, &damaged, 8000) {
                        assert!(out.len() <= 8000);
                    }
                }
            }
        }
    }
}
