//! Primitive big-endian readers and writers shared by requests and responses.

use byteorder::{BigEndian, ByteOrder, WriteBytesExt};

use super::DecodeError;

/// A cursor over one frame's payload; every read fails with `Truncated` past the end.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    opcode: u8,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], opcode: u8) -> Self {
        Reader { buf, opcode }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { opcode: self.opcode });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(BigEndian::read_u16(self.take(2)?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(BigEndian::read_u32(self.take(4)?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(BigEndian::read_u64(self.take(8)?))
    }

    /// A `u16`-length-prefixed UTF-8 string.
    pub(crate) fn str16(&mut self) -> Result<String, DecodeError> {
        let len = self.u16()? as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::TextNotUtf8)
    }

    /// A `u32` count followed by that many `str16` values.
    pub(crate) fn str_list(&mut self) -> Result<Vec<String>, DecodeError> {
        let count = self.u32()? as usize;
        // Each entry needs at least two bytes, so a lying count cannot reserve huge memory.
        let mut out = Vec::with_capacity(count.min(self.buf.len() / 2));
        for _ in 0..count {
            out.push(self.str16()?);
        }
        Ok(out)
    }

    /// Everything left in the payload.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Fails when bytes are left over after the last field.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { opcode: self.opcode })
        }
    }
}

/// Appends a frame header with a zero length and returns the offset to back-patch.
pub(crate) fn begin_frame(out: &mut Vec<u8>, opcode: u8, request_id: u32) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, opcode]);
    put_u32(out, request_id);
    start
}

/// Writes the final length of the frame that starts at `start`.
pub(crate) fn end_frame(out: &mut [u8], start: usize) {
    let len = (out.len() - start - 4) as u32;
    BigEndian::write_u32(&mut out[start..start + 4], len);
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    let _ = out.write_u16::<BigEndian>(v);
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    let _ = out.write_u32::<BigEndian>(v);
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    let _ = out.write_u64::<BigEndian>(v);
}

/// A `u16`-length-prefixed string; longer strings are cut at a character boundary,
/// which only labels and messages can reach (names are limited to `u16::MAX` bytes).
pub(crate) fn put_str16(out: &mut Vec<u8>, s: &str) {
    let end = str16_len(s);
    put_u16(out, end as u16);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// How many bytes of `s` a `str16` carries: all of them up to 65535, else cut at a character
/// boundary at or below 65535.
pub(crate) fn str16_len(s: &str) -> usize {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

pub(crate) fn put_str_list<S: AsRef<str>>(out: &mut Vec<u8>, items: &[S]) {
    put_u32(out, items.len() as u32);
    for item in items {
        put_str16(out, item.as_ref());
    }
}
