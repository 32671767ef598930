//! Frame splitting (PROTOCOL.md §2.1): a `u32` big-endian length, then opcode and request id.

use byteorder::{BigEndian, ByteOrder};

use super::{DecodeError, MAX_FRAME_CEILING};

/// Bytes of the length prefix itself.
pub const LENGTH_PREFIX_LEN: usize = 4;
/// Length prefix + opcode + request id.
pub const FRAME_HEADER_LEN: usize = 9;
/// Smallest legal value of the length prefix: opcode (1) + request id (4).
pub const MIN_FRAME_LEN: u32 = 5;

/// One frame borrowed from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub opcode: u8,
    /// Chosen by the client and echoed in the response; 0 only on frames the server sends
    /// on its own (PROTOCOL.md §2.4).
    pub request_id: u32,
    /// The bytes after the request id: length prefix minus 5.
    pub payload: &'a [u8],
}

/// Splits the first frame off `buf`.
///
/// Returns `Ok(None)` while the frame is incomplete and `Ok(Some((frame, consumed)))` once it
/// is whole. The length is checked against `max_frame` (capped at `MAX_FRAME_CEILING`) as soon
/// as its four bytes arrive, so a peer cannot make the server buffer an oversized body, and
/// HTTP or TLS bytes fail at once (PROTOCOL.md §2.6).
pub fn split_frame(buf: &[u8], max_frame: u32) -> Result<Option<(Frame<'_>, usize)>, DecodeError> {
    if buf.len() < LENGTH_PREFIX_LEN {
        return Ok(None);
    }
    let max_frame = max_frame.min(MAX_FRAME_CEILING);
    let len = BigEndian::read_u32(&buf[..LENGTH_PREFIX_LEN]);
    if len < MIN_FRAME_LEN {
        return Err(DecodeError::FrameTooShort(len));
    }
    if len > max_frame {
        return Err(DecodeError::FrameTooLarge { len, max: max_frame });
    }
    let total = LENGTH_PREFIX_LEN + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let frame = Frame {
        opcode: buf[4],
        request_id: BigEndian::read_u32(&buf[5..9]),
        payload: &buf[FRAME_HEADER_LEN..total],
    };
    Ok(Some((frame, total)))
}
