//! Zigzag varints as in Kafka `ByteUtils.writeVarint`/`readVarint` (protobuf `sint32`/`sint64`),
//! used by the records inside a RecordBatch v2. A bounds-checked cursor lives here too, so
//! the batch decoder can never index out of range on hostile input.

/// Bytes a zigzag varint of `value` takes (Kafka `ByteUtils.sizeOfVarint`).
pub(crate) fn varint_size(value: i32) -> usize {
    let mut zigzag = ((value << 1) ^ (value >> 31)) as u32;
    let mut bytes = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        bytes += 1;
    }
    bytes
}

/// Bytes a zigzag varlong of `value` takes (Kafka `ByteUtils.sizeOfVarlong`).
pub(crate) fn varlong_size(value: i64) -> usize {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let mut bytes = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        bytes += 1;
    }
    bytes
}

/// Appends a zigzag varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_varlong(out, i64::from(value));
}

/// Appends a zigzag varlong. For values in i32 range this produces the same bytes as the
/// 32-bit form, because zigzag of a sign-extended value has the same low bits.
pub(crate) fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// Why a read from a [`Cursor`] failed; the batch layer turns it into `BatchError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CursorError {
    /// Ran past the end of the buffer.
    Eof,
    /// A varint longer than 5 bytes or a varlong longer than 10 (Kafka
    /// `ByteUtils.illegalVarintException`).
    VarintTooLong,
}

/// A read-only cursor over a byte slice whose every read is bounds-checked.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, position: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.position
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.position
    }

    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], CursorError> {
        let end = self.position.checked_add(len).ok_or(CursorError::Eof)?;
        let slice = self.buf.get(self.position..end).ok_or(CursorError::Eof)?;
        self.position = end;
        Ok(slice)
    }

    pub(crate) fn i8(&mut self) -> Result<i8, CursorError> {
        Ok(self.take(1)?[0] as i8)
    }

    /// Kafka `ByteUtils.readVarint`: at most 5 bytes; like Kafka, bits shifted past 32 in
    /// the fifth byte are dropped rather than rejected.
    pub(crate) fn varint(&mut self) -> Result<i32, CursorError> {
        let mut raw: u32 = 0;
        for index in 0..5u32 {
            let byte = self.take(1)?[0];
            raw |= u32::from(byte & 0x7f).wrapping_shl(7 * index);
            if byte & 0x80 == 0 {
                return Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32));
            }
        }
        Err(CursorError::VarintTooLong)
    }

    /// Kafka `ByteUtils.readVarlong`: at most 10 bytes.
    pub(crate) fn varlong(&mut self) -> Result<i64, CursorError> {
        let mut raw: u64 = 0;
        for index in 0..10u32 {
            let byte = self.take(1)?[0];
            raw |= u64::from(byte & 0x7f).wrapping_shl(7 * index);
            if byte & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(CursorError::VarintTooLong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Protobuf sint32 vectors (the same table aiokafka/kafka-python test against).
    const VARINT_VECTORS: &[(&[u8], i32)] = &[
        (b"\x00", 0),
        (b"\x01", -1),
        (b"\x02", 1),
        (b"\x7e", 63),
        (b"\x7f", -64),
        (b"\x80\x01", 64),
        (b"\x81\x01", -65),
        (b"\xfe\x7f", 8191),
        (b"\xff\x7f", -8192),
        (b"\x80\x80\x01", 8192),
        (b"\x81\x80\x01", -8193),
        (b"\xfe\xff\x7f", 1048575),
        (b"\xff\xff\x7f", -1048576),
        (b"\x80\x80\x80\x01", 1048576),
        (b"\xfe\xff\xff\xff\x0f", i32::MAX),
        (b"\xff\xff\xff\xff\x0f", i32::MIN),
    ];

    #[test]
    fn varint_matches_protobuf_zigzag_vectors() {
        for (bytes, value) in VARINT_VECTORS {
            let mut out = Vec::new();
            put_varint(&mut out, *value);
            assert_eq!(&out[..], *bytes, "encode {value}");
            assert_eq!(varint_size(*value), bytes.len());
            let mut cursor = Cursor::new(bytes);
            assert_eq!(cursor.varint(), Ok(*value), "decode {value}");
            assert_eq!(cursor.remaining(), 0);
        }
    }

    #[test]
    fn overlong_varints_are_rejected_not_panicking() {
        let mut cursor = Cursor::new(&[0xff; 6]);
        assert_eq!(cursor.varint(), Err(CursorError::VarintTooLong));
        let mut cursor = Cursor::new(&[0xff; 11]);
        assert_eq!(cursor.varlong(), Err(CursorError::VarintTooLong));
        let mut cursor = Cursor::new(&[0x80]);
        assert_eq!(cursor.varint(), Err(CursorError::Eof));
    }

    proptest! {
        #[test]
        fn varlong_round_trips(value: i64) {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            prop_assert_eq!(out.len(), varlong_size(value));
            let mut cursor = Cursor::new(&out);
            prop_assert_eq!(cursor.varlong(), Ok(value));
        }

        #[test]
        fn varint_round_trips(value: i32) {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            prop_assert_eq!(out.len(), varint_size(value));
            let mut cursor = Cursor::new(&out);
            prop_assert_eq!(cursor.varint(), Ok(value));
        }
    }
}
