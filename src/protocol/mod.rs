//! The binary wire protocol: frame header, opcodes, requests, responses and error codes.
//!
//! This module is a pure codec over byte slices. It never touches sockets or clocks: decoding
//! returns `Ok(None)` when more bytes are needed and `Err` when the bytes are wrong; encoding
//! appends to a caller-owned `Vec<u8>`. Every message documents its layout and names its section
//! in `PROTOCOL.md`, which is the normative description.

mod bounded;
mod detail;
mod error;
mod frame;
mod request;
mod response;
mod session;
mod v2;
mod wire;

pub use bounded::{str16_size, LIST_COUNT_SIZE};
pub use detail::{
    AwaitedName, ConnectionDetail, HeldName, HolderInfo, LockDetail, WaiterInfo, GRANT_FIXED, WAIT_FIXED,
};
pub use error::{DecodeError, ErrorCode};
pub use frame::{split_frame, Frame, FRAME_HEADER_LEN, LENGTH_PREFIX_LEN, MIN_FRAME_LEN};
pub use request::{Hello, ListRequest, LockRequest, Request};
pub use response::{ConnectionInfo, HelloOk, LockInfo, Response, TopEntry, SHUTDOWN_REQUEST_ID};
pub use session::{
    secrets_match, DetachedSession, Resumed, SessionOk, SessionOpen, SessionResume, DETACHED_FIXED,
    SESSION_SECRET_LEN, SKIP_WHILE_DETACHED,
};
pub use v2::{
    LockExtRequest, LostReason, Mode, RevokeRequest, TokenRequest, EXT_SKIP_WHILE_DETACHED, NOTICE_REQUEST_ID,
};

/// The four magic bytes that open the handshake payload: `OFCR`.
pub const MAGIC: [u8; 4] = *b"OFCR";
/// The highest protocol version this crate speaks; a server answers HELLO with the lower of
/// this and the client's version (PROTOCOL.md §2.5).
pub const PROTOCOL_VERSION: u16 = 1;
/// The lowest protocol version this crate speaks; a HELLO below it is refused.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// Default largest frame (the value of the length prefix) a server accepts.
pub const DEFAULT_MAX_FRAME: u32 = 64 * 1024;
/// Hard ceiling on the frame limit: below 2^24, so the first byte of every frame is 0x00, which
/// tells a binary session from a JSON one (`{`) and from HTTP or TLS (PROTOCOL.md §2.1).
pub const MAX_FRAME_CEILING: u32 = 0x00FF_FFFF;
/// Default longest lock name in bytes.
pub const DEFAULT_MAX_NAME: u32 = 1024;
/// Hard ceiling on the name limit: names travel with a `u16` length inside listings.
pub const MAX_NAME_CEILING: u32 = u16::MAX as u32;
/// `timeout_ms` value in LOCK meaning "wait forever".
pub const TIMEOUT_FOREVER: u32 = u32::MAX;

/// Opcodes, the one table of them. Requests (PROTOCOL.md §3) have the high bit clear;
/// responses (PROTOCOL.md §4) have it set.
pub mod op {
    pub const HELLO: u8 = 0x01;
    pub const PING: u8 = 0x02;
    pub const LOCK: u8 = 0x03;
    pub const UNLOCK: u8 = 0x04;
    pub const RESET: u8 = 0x05;
    pub const LOCKS: u8 = 0x06;
    pub const CONNECTIONS: u8 = 0x07;
    pub const MY_LOCKS: u8 = 0x08;
    pub const STATS: u8 = 0x09;
    pub const AUTH: u8 = 0x0A;
    pub const TOP: u8 = 0x0B;
    pub const MY_LOCKS_MATCHING: u8 = 0x0C;
    // Lock model v2 (PROTOCOL.md §3.12-§3.21): new messages, so version-1 layouts stay as they are.
    pub const LOCK_EXT: u8 = 0x0D;
    pub const DOWNGRADE: u8 = 0x0E;
    pub const RENEW: u8 = 0x0F;
    pub const CHECK: u8 = 0x10;
    pub const UNLOCK_TOKEN: u8 = 0x11;
    pub const REVOKE: u8 = 0x12;
    pub const KICK: u8 = 0x13;
    pub const ADMIN_AUTH: u8 = 0x14;
    pub const LOCKS_DETAIL: u8 = 0x15;
    pub const CONNECTIONS_DETAIL: u8 = 0x16;
    // Resumable sessions (PROTOCOL.md §3.22-§3.24).
    pub const SESSION_OPEN: u8 = 0x17;
    pub const SESSION_RESUME: u8 = 0x18;
    pub const GOODBYE: u8 = 0x19;
    pub const SESSIONS: u8 = 0x1A;

    pub const HELLO_OK: u8 = 0x81;
    pub const PONG: u8 = 0x82;
    pub const ACQUIRED: u8 = 0x83;
    pub const ALREADY_ACQUIRED: u8 = 0x84;
    pub const ALREADY_WAITING: u8 = 0x85;
    pub const TIMED_OUT: u8 = 0x86;
    pub const QUEUE_MAXED: u8 = 0x87;
    pub const CANCELLED: u8 = 0x88;
    pub const RELEASED: u8 = 0x89;
    pub const RELEASE_FAILED: u8 = 0x8A;
    pub const RESET_OK: u8 = 0x8B;
    pub const LOCKS_LIST: u8 = 0x8C;
    pub const CONNECTIONS_LIST: u8 = 0x8D;
    pub const MY_LOCKS_LIST: u8 = 0x8E;
    pub const STATS_LIST: u8 = 0x8F;
    pub const AUTH_OK: u8 = 0x90;
    pub const SHUTDOWN: u8 = 0x91;
    pub const TOP_LIST: u8 = 0x92;
    pub const MY_LOCKS_MATCHING_LIST: u8 = 0x93;
    // Lock model v2 (PROTOCOL.md §4.21-§4.29).
    pub const DOWNGRADED: u8 = 0x94;
    pub const RENEWED: u8 = 0x95;
    pub const CHECKED: u8 = 0x96;
    pub const LOST: u8 = 0x97;
    pub const CONTENDED: u8 = 0x98;
    pub const REVOKED: u8 = 0x99;
    pub const KICKED: u8 = 0x9A;
    pub const LOCKS_DETAIL_LIST: u8 = 0x9B;
    pub const CONNECTIONS_DETAIL_LIST: u8 = 0x9C;
    // Resumable sessions (PROTOCOL.md §4.30-§4.31).
    pub const SESSION_OK: u8 = 0x9D;
    pub const RESUMED: u8 = 0x9E;
    pub const SESSIONS_LIST: u8 = 0x9F;
    pub const ERROR: u8 = 0xFF;

    /// True for the request opcodes of the lock model v2 (§3.12-§3.21): a server that does not
    /// serve them yet answers each with `unknown_opcode`, exactly as before they were defined.
    pub const fn is_v2_request(opcode: u8) -> bool {
        opcode >= LOCK_EXT && opcode <= CONNECTIONS_DETAIL
    }
}

/// Checks a lock name (or listing prefix when `allow_empty`) against the rules of
/// PROTOCOL.md §2.3: UTF-8, no ASCII control characters, at most `max_name` bytes.
/// `max_name` is capped at `MAX_NAME_CEILING`, since listings carry names with a `u16` length.
pub fn validate_name(bytes: &[u8], max_name: u32, allow_empty: bool) -> Result<&str, DecodeError> {
    let max_name = max_name.min(MAX_NAME_CEILING);
    if bytes.is_empty() && !allow_empty {
        return Err(DecodeError::EmptyName);
    }
    if bytes.len() > max_name as usize {
        return Err(DecodeError::NameTooLong { len: bytes.len(), max: max_name });
    }
    // Fast path for the usual printable-ASCII name: one pass instead of a UTF-8 validation
    // followed by a control-character scan (this runs on every LOCK and UNLOCK).
    if printable_ascii(bytes) {
        // SAFETY: every byte is printable ASCII, and ASCII is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    let name = std::str::from_utf8(bytes).map_err(|_| DecodeError::NameNotUtf8)?;
    if name.bytes().any(|b| b < 0x20 || b == 0x7F) {
        return Err(DecodeError::NameHasControl);
    }
    Ok(name)
}

/// True when every byte is printable ASCII (0x20..=0x7E). Eight bytes at a time: the usual
/// name fits in two or three words, so this is a handful of operations instead of a loop per byte.
fn printable_ascii(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // A byte below 0x20, a byte with the high bit, and a 0x7F byte (zero after xor), each by
        // the exact "has a byte less than n" test: (x - n*ONES) & !x & HIGH.
        let below_space = x.wrapping_sub(0x20 * ONES) & !x & HIGH;
        let del = (x ^ (0x7F * ONES)).wrapping_sub(ONES) & !(x ^ (0x7F * ONES)) & HIGH;
        if below_space | (x & HIGH) | del != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|b| (0x20..0x7F).contains(b))
}

#[cfg(test)]
mod tests {
    use super::printable_ascii;

    #[test]
    fn printable_ascii_matches_the_bytewise_rule_for_every_byte_at_every_position() {
        for len in [1usize, 7, 8, 9, 16, 17] {
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut name = vec![b'a'; len];
                    name[pos] = b;
                    let expected = (0x20..0x7F).contains(&b);
                    assert_eq!(printable_ascii(&name), expected, "byte 0x{b:02x} at {pos} of {len}");
                }
            }
        }
    }
}
