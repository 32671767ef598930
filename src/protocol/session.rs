//! The payloads of resumable sessions (PROTOCOL.md §3.22-§3.24, §4.30-§4.31, §6.14): a session
//! outlives its connection for a grace period, and a new connection that presents its id and
//! secret takes it over. New messages under new opcodes (§8): a client that never sends
//! SESSION_OPEN sees no byte of difference.

use super::wire::{put_str16, put_u16, put_u32, put_u64, Reader};
use super::{op, str16_size, DecodeError};

/// Bytes of a session's resume secret: 128 random bits, so guessing one is hopeless and the
/// server need not slow down wrong guesses (it counts and logs them, §6.14).
pub const SESSION_SECRET_LEN: usize = 16;

/// SESSION_OPEN flags bit 0: while the session is detached, a wait whose turn comes is not
/// granted but ends with ERROR `skipped` (replayed on resume), so the name goes to the next
/// waiter; the default of every wait of the session, as LOCK_EXT flags bit 1 is of one.
pub const SKIP_WHILE_DETACHED: u16 = 0x0001;

/// SESSION_OPEN payload (§3.22), exactly 6 bytes: flags `u16`, grace_ms `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOpen {
    /// How long the client wants the session kept after its connection is lost; the server
    /// grants at most its own maximum, and 0 asks for no session at all.
    pub grace_ms: u32,
    /// Flags bit 0: waits whose turn comes while detached are skipped, not granted.
    pub skip_while_detached: bool,
}

impl SessionOpen {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let flags = r.u16()?;
        let grace_ms = r.u32()?;
        if flags & !SKIP_WHILE_DETACHED != 0 {
            return Err(DecodeError::NonZeroFlags { opcode: op::SESSION_OPEN, flags });
        }
        Ok(SessionOpen { grace_ms, skip_while_detached: flags & SKIP_WHILE_DETACHED != 0 })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_u16(out, if self.skip_while_detached { SKIP_WHILE_DETACHED } else { 0 });
        put_u32(out, self.grace_ms);
    }
}

/// SESSION_RESUME payload (§3.23), exactly 24 bytes: session_id `u64` (never 0), secret 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionResume {
    pub session_id: u64,
    pub secret: [u8; SESSION_SECRET_LEN],
}

/// The secret stays out of logs and panics: `Debug` shows the id only.
impl std::fmt::Debug for SessionResume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionResume").field("session_id", &self.session_id).finish_non_exhaustive()
    }
}

impl SessionResume {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let session_id = r.u64()?;
        let secret = read_secret(r)?;
        if session_id == 0 {
            return Err(DecodeError::BadValue { opcode: op::SESSION_RESUME, field: "session_id", value: 0 });
        }
        Ok(SessionResume { session_id, secret })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.session_id);
        out.extend_from_slice(&self.secret);
    }
}

/// SESSION_OK payload (§4.30), exactly 28 bytes: session_id `u64`, secret 16 bytes, grace_ms
/// `u32`. Grace 0 means the server opened no session (its maximum is 0, or the client asked
/// for 0): then the id and the secret are 0 and the connection behaves as without SESSION_OPEN.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionOk {
    pub session_id: u64,
    pub secret: [u8; SESSION_SECRET_LEN],
    /// The grace the server granted: at most the client's ask and the server's maximum.
    pub grace_ms: u32,
}

impl std::fmt::Debug for SessionOk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionOk")
            .field("session_id", &self.session_id)
            .field("grace_ms", &self.grace_ms)
            .finish_non_exhaustive()
    }
}

impl SessionOk {
    /// The answer of a server that opens no session (§4.30: grace 0, id 0, secret 0).
    pub const NONE: SessionOk = SessionOk { session_id: 0, secret: [0; SESSION_SECRET_LEN], grace_ms: 0 };

    /// True when a session was opened: the connection's locks survive its loss for `grace_ms`.
    pub fn is_open(&self) -> bool {
        self.grace_ms != 0
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SessionOk { session_id: r.u64()?, secret: read_secret(r)?, grace_ms: r.u32()? })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.session_id);
        out.extend_from_slice(&self.secret);
        put_u32(out, self.grace_ms);
    }
}

/// RESUMED payload (§4.31), exactly 8 bytes: grace_ms `u32`, replayed `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// The session's grace, the same as SESSION_OK granted: it applies again to the next loss.
    pub grace_ms: u32,
    /// How many frames follow RESUMED as the replay of what happened while detached (§6.14):
    /// answers under their original request ids, and notices under id 0.
    pub replayed: u32,
}

impl Resumed {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Resumed { grace_ms: r.u32()?, replayed: r.u32()? })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.grace_ms);
        put_u32(out, self.replayed);
    }
}

/// Encoded size of a SESSIONS_LIST entry after its `str16` label: session_id `u64`,
/// grace_left_ms, held, waiting and kept, each `u32`.
pub const DETACHED_FIXED: usize = 8 + 4 * 4;

/// One detached session in a SESSIONS_LIST (§4.32): label `str16` (the one it had while
/// attached), session_id `u64`, grace_left_ms `u32`, held `u32`, waiting `u32`, kept `u32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedSession {
    /// The label of its lost connection (listings show it with ` (detached)` meanwhile).
    pub label: String,
    /// The session's id, as SESSION_OK gave it (not a connection id: it has no connection).
    pub session_id: u64,
    /// Milliseconds until its grace ends and everything it has is released.
    pub grace_left_ms: u32,
    /// Grants it holds.
    pub held: u32,
    /// Waits it has in queues.
    pub waiting: u32,
    /// Frames kept for its replay (§6.14).
    pub kept: u32,
}

impl DetachedSession {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let label = r.str16()?;
        let session_id = r.u64()?;
        let (grace_left_ms, held, waiting, kept) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
        Ok(DetachedSession { label, session_id, grace_left_ms, held, waiting, kept })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_str16(out, &self.label);
        put_u64(out, self.session_id);
        for n in [self.grace_left_ms, self.held, self.waiting, self.kept] {
            put_u32(out, n);
        }
    }

    /// The encoded size, for `encode_within`: an entry is never cut, only left out.
    pub(crate) fn sizes(&self) -> (usize, usize) {
        let size = str16_size(&self.label) + DETACHED_FIXED;
        (size, size)
    }
}

fn read_secret(r: &mut Reader<'_>) -> Result<[u8; SESSION_SECRET_LEN], DecodeError> {
    let mut secret = [0; SESSION_SECRET_LEN];
    for byte in &mut secret {
        *byte = r.u8()?;
    }
    Ok(secret)
}

/// Compares two secrets in time independent of where they differ, so the answer's timing tells
/// a guesser nothing about how many leading bytes were right.
pub fn secrets_match(a: &[u8; SESSION_SECRET_LEN], b: &[u8; SESSION_SECRET_LEN]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimizer from turning the fold into an early-exit compare.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_when_every_byte_does() {
        let a = [7u8; SESSION_SECRET_LEN];
        assert!(secrets_match(&a, &a));
        for i in 0..SESSION_SECRET_LEN {
            let mut b = a;
            b[i] ^= 0x80;
            assert!(!secrets_match(&a, &b), "differs at {i}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let resume = SessionResume { session_id: 5, secret: [0xAB; SESSION_SECRET_LEN] };
        let ok = SessionOk { session_id: 5, secret: [0xAB; SESSION_SECRET_LEN], grace_ms: 1 };
        for text in [format!("{resume:?}"), format!("{ok:?}")] {
            assert!(!text.contains("171") && !text.to_lowercase().contains("ab,"), "{text}");
        }
    }
}
