//! Durable-file primitives for the Raft storage: atomic replace (temp + fsync + rename +
//! directory fsync) for the vote, committed id and snapshot, and the CRC-framed record
//! format of the append-only log with torn-tail detection. Blocking std::fs; callers run it
//! on tokio's blocking pool.
use crate::error::StorageError;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Frame header: payload length (u32 LE) then CRC-32C of the payload (u32 LE).
pub const FRAME_HEADER_BYTES: usize = 8;
/// A single record larger than this is treated as corruption (bounds the allocation a bad
/// length could cause). Metadata entries are tiny; a rewrite chunks its entries.
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// fsync a directory so a rename or file creation in it survives a crash.
pub fn sync_directory(directory: &Path) -> Result<(), StorageError> {
    File::open(directory).and_then(|d| d.sync_all()).map_err(|e| StorageError::io(directory, e))
}

/// Replaces `path` with `bytes` atomically: readers see the old or the new content, never a
/// mix, even across a crash.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let temporary = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(|e| StorageError::io(&temporary, e))?;
    file.write_all(bytes).map_err(|e| StorageError::io(&temporary, e))?;
    file.sync_all().map_err(|e| StorageError::io(&temporary, e))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(|e| StorageError::io(path, e))?;
    if let Some(parent) = path.parent() {
        sync_directory(parent)?;
    }
    Ok(())
}

/// Reads a whole file, None when it does not exist.
pub fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Frames one record: header + payload.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() <= MAX_RECORD_BYTES);
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The frames of a log file, split at the first invalid one.
#[derive(Debug, PartialEq, Eq)]
pub struct DecodedFrames<'a> {
    pub payloads: Vec<&'a [u8]>,
    /// Bytes of valid frames from the start; the file is truncated to this on recovery.
    pub valid_bytes: usize,
    /// Why decoding stopped before the end, if it did.
    pub invalid_tail: Option<String>,
}

/// Decodes frames. An invalid frame is accepted as a *torn tail* only when it is the last
/// thing in the file (a crash mid-append can only damage the end of an append-only file);
/// an invalid frame followed by another valid-looking length is reported as corruption by
/// the caller through `invalid_tail` + `valid_bytes < len`.
pub fn decode_frames(bytes: &[u8]) -> DecodedFrames<'_> {
    let mut payloads = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < FRAME_HEADER_BYTES {
            return DecodedFrames { payloads, valid_bytes: offset, invalid_tail: Some("truncated header".to_string()) };
        }
        let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let checksum = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if length > MAX_RECORD_BYTES {
            return DecodedFrames {
                payloads,
                valid_bytes: offset,
                invalid_tail: Some(format!("record length {length} exceeds {MAX_RECORD_BYTES}")),
            };
        }
        if rest.len() < FRAME_HEADER_BYTES + length {
            return DecodedFrames { payloads, valid_bytes: offset, invalid_tail: Some("truncated record".to_string()) };
        }
        let payload = &rest[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + length];
        if crc32c::crc32c(payload) != checksum {
            return DecodedFrames { payloads, valid_bytes: offset, invalid_tail: Some("CRC-32C mismatch".to_string()) };
        }
        payloads.push(payload);
        offset += FRAME_HEADER_BYTES + length;
    }
    DecodedFrames { payloads, valid_bytes: offset, invalid_tail: None }
}

/// Whether the bad frame at `valid_bytes` is the file's last frame (a torn append) rather
/// than damage in the middle. The bad frame's own length field is unreliable, so: the tail
/// is torn when the claimed frame reaches or passes the end of the file.
pub fn is_torn_tail(bytes: &[u8], valid_bytes: usize) -> bool {
    let rest = &bytes[valid_bytes..];
    if rest.len() < FRAME_HEADER_BYTES {
        return true;
    }
    let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    FRAME_HEADER_BYTES.saturating_add(length) >= rest.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_detected() {
        let mut file = encode_frame(b"first");
        file.extend(encode_frame(b"second"));
        let whole = decode_frames(&file);
        assert_eq!(whole.payloads, vec![&b"first"[..], &b"second"[..]]);
        assert_eq!(whole.invalid_tail, None);

        // Crash in the middle of the second append.
        let torn = &file[..file.len() - 3];
        let decoded = decode_frames(torn);
        assert_eq!(decoded.payloads, vec![&b"first"[..]]);
        assert_eq!(decoded.valid_bytes, FRAME_HEADER_BYTES + 5);
        assert!(decoded.invalid_tail.is_some());
        assert!(is_torn_tail(torn, decoded.valid_bytes));

        // A flipped byte in the first record with a whole record after it is corruption.
        let mut corrupt = file.clone();
        corrupt[FRAME_HEADER_BYTES] ^= 0xff;
        let decoded = decode_frames(&corrupt);
        assert_eq!(decoded.valid_bytes, 0);
        assert!(!is_torn_tail(&corrupt, decoded.valid_bytes));
    }

    #[test]
    fn atomic_write_replaces_content() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("vote.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(read_if_exists(&path).unwrap().unwrap(), b"two");
        assert!(!path.with_extension("tmp").exists());
        assert_eq!(read_if_exists(&directory.path().join("absent")).unwrap(), None);
    }
}
