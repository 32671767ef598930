//! Requests, client to server (PROTOCOL.md §3). Decoded requests borrow names from the frame,
//! so the server copies a name only when it creates a lock.

use super::wire::{begin_frame, end_frame, put_u16, put_u32, put_u64, Reader};
use super::{
    op, validate_name, DecodeError, Frame, LockExtRequest, RevokeRequest, SessionOpen, SessionResume,
    TokenRequest, MAGIC, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, TIMEOUT_FOREVER,
};

/// HELLO payload (§3.1), exactly 8 bytes: magic `OFCR`, version `u16`, flags `u16` (zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The highest version the client speaks.
    pub version: u16,
}

impl Hello {
    /// The version the session uses and HELLO_OK carries: the lower of the client's and ours.
    pub fn negotiated_version(&self) -> u16 {
        self.version.min(PROTOCOL_VERSION)
    }
}

/// LOCK payload (§3.3): flags `u16` (zero), timeout_ms `u32`, queue_max `u32`, name (rest).
///
/// The wire keeps one sentinel per field, so decoding yields `None` for them:
/// `Some(TIMEOUT_FOREVER)` encodes like `None`, and `queue_max: Some(0)` like `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockRequest<'a> {
    pub name: &'a str,
    /// `None` waits forever; `Some(0)` tries once.
    pub timeout_ms: Option<u32>,
    /// `None` queues without limit; `Some(n)` refuses when holder + waiters >= n.
    pub queue_max: Option<u32>,
}

/// LOCKS, CONNECTIONS (§3.6) and MY_LOCKS_MATCHING (§3.11) payload: max entries `u32`
/// (0 = server default), prefix (rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListRequest<'a> {
    pub prefix: &'a str,
    pub max: u32,
}

/// A decoded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    Hello(Hello),
    /// The payload is opaque padding, ignored by the server.
    Ping(&'a [u8]),
    Lock(LockRequest<'a>),
    Unlock(&'a str),
    Reset,
    Locks(ListRequest<'a>),
    Connections(ListRequest<'a>),
    MyLocks,
    Stats,
    Auth(&'a [u8]),
    /// §3.10: the busiest locks, at most this many per list (0 = server default).
    Top(u32),
    /// §3.11: MY_LOCKS with a prefix and a most-entries count, answered with a `truncated` flag.
    MyLocksMatching(ListRequest<'a>),
    /// §3.12: LOCK with a mode, permits, lease, hold budget, lock-delay and contention notice.
    LockExt(LockExtRequest<'a>),
    /// §3.13: turn this exclusive grant into a shared one, atomically.
    Downgrade(TokenRequest<'a>),
    /// §3.14: extend a lease.
    Renew(TokenRequest<'a>),
    /// §3.15: does this token hold this name now? Any connection may ask.
    Check(TokenRequest<'a>),
    /// §3.16: UNLOCK that releases only the grant with this token.
    UnlockToken(TokenRequest<'a>),
    /// §3.17 (admin): end one grant of a name, or all of them, with LOST `revoked`.
    Revoke(RevokeRequest<'a>),
    /// §3.18 (admin): close the connection with this id.
    Kick(u64),
    /// §3.19: present the admin secret.
    AdminAuth(&'a [u8]),
    /// §3.20: LOCKS with every holder's mode, permits and token, and every waiter's mode.
    LocksDetail(ListRequest<'a>),
    /// §3.21: CONNECTIONS with each connection's id and every grant's mode, permits and token.
    ConnectionsDetail(ListRequest<'a>),
    /// §3.22: make this connection's locks outlive it for a grace period.
    SessionOpen(SessionOpen),
    /// §3.23: take over a session whose connection was lost (or is still open: newest wins).
    SessionResume(SessionResume),
    /// §3.24: release everything at once, as RESET, then close; no grace.
    Goodbye,
    /// §3.25: the detached sessions and their remaining grace, at most `max` (0: the server's
    /// default), soonest grace end first.
    Sessions(u32),
}

impl<'a> Request<'a> {
    /// Decodes the payload of one frame. Names are checked against `max_name`.
    /// Request id 0 is refused: it marks frames the server sends on its own (§2.4).
    pub fn decode(frame: &Frame<'a>, max_name: u32) -> Result<Request<'a>, DecodeError> {
        if frame.request_id == 0 {
            return Err(DecodeError::ZeroRequestId { opcode: frame.opcode });
        }
        let mut r = Reader::new(frame.payload, frame.opcode);
        let req = match frame.opcode {
            op::HELLO => Request::Hello(hello(r)?),
            op::PING => Request::Ping(r.rest()),
            op::LOCK => {
                let flags = r.u16()?;
                let timeout = r.u32()?;
                let queue_max = r.u32()?;
                if flags != 0 {
                    return Err(DecodeError::NonZeroFlags { opcode: op::LOCK, flags });
                }
                let name = validate_name(r.rest(), max_name, false)?;
                Request::Lock(LockRequest {
                    name,
                    timeout_ms: (timeout != TIMEOUT_FOREVER).then_some(timeout),
                    queue_max: (queue_max != 0).then_some(queue_max),
                })
            }
            op::UNLOCK => Request::Unlock(validate_name(r.rest(), max_name, false)?),
            op::RESET => empty(r, Request::Reset)?,
            op::LOCKS => Request::Locks(list(&mut r, max_name)?),
            op::CONNECTIONS => Request::Connections(list(&mut r, max_name)?),
            op::MY_LOCKS => empty(r, Request::MyLocks)?,
            op::MY_LOCKS_MATCHING => Request::MyLocksMatching(list(&mut r, max_name)?),
            op::STATS => empty(r, Request::Stats)?,
            op::AUTH => Request::Auth(r.rest()),
            op::TOP => {
                let max = r.u32()?;
                r.finish()?;
                Request::Top(max)
            }
            op::LOCK_EXT => Request::LockExt(LockExtRequest::decode(&mut r, max_name)?),
            op::DOWNGRADE => Request::Downgrade(TokenRequest::decode(&mut r, op::DOWNGRADE, max_name)?),
            op::RENEW => Request::Renew(TokenRequest::decode(&mut r, op::RENEW, max_name)?),
            op::CHECK => Request::Check(TokenRequest::decode(&mut r, op::CHECK, max_name)?),
            op::UNLOCK_TOKEN => {
                Request::UnlockToken(TokenRequest::decode(&mut r, op::UNLOCK_TOKEN, max_name)?)
            }
            op::REVOKE => Request::Revoke(RevokeRequest::decode(&mut r, max_name)?),
            op::KICK => {
                let id = r.u64()?;
                r.finish()?;
                Request::Kick(id)
            }
            op::ADMIN_AUTH => Request::AdminAuth(r.rest()),
            op::LOCKS_DETAIL => Request::LocksDetail(list(&mut r, max_name)?),
            op::CONNECTIONS_DETAIL => Request::ConnectionsDetail(list(&mut r, max_name)?),
            op::SESSION_OPEN => {
                let open = SessionOpen::decode(&mut r)?;
                r.finish()?;
                Request::SessionOpen(open)
            }
            op::SESSION_RESUME => {
                let resume = SessionResume::decode(&mut r)?;
                r.finish()?;
                Request::SessionResume(resume)
            }
            op::GOODBYE => empty(r, Request::Goodbye)?,
            op::SESSIONS => {
                let max = r.u32()?;
                r.finish()?;
                Request::Sessions(max)
            }
            other => return Err(DecodeError::UnknownOpcode(other)),
        };
        Ok(req)
    }

    /// LOCK and UNLOCK, nearly all of a server's traffic, decoded on a short path of their own:
    /// `Some` exactly when [`Request::decode`] would succeed on the frame with this same
    /// request; `None` for any other opcode and for any frame `decode` refuses, whose error
    /// `decode` then reports.
    #[inline]
    pub fn decode_hot(frame: &Frame<'a>, max_name: u32) -> Option<Request<'a>> {
        if frame.request_id == 0 {
            return None;
        }
        match frame.opcode {
            op::UNLOCK => validate_name(frame.payload, max_name, false).ok().map(Request::Unlock),
            op::LOCK => {
                // flags u16 (zero), timeout_ms u32, queue_max u32, then the name (§3.3).
                let (head, name) = frame.payload.split_first_chunk::<10>()?;
                if head[..2] != [0, 0] {
                    return None;
                }
                let timeout = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
                let queue_max = u32::from_be_bytes([head[6], head[7], head[8], head[9]]);
                let name = validate_name(name, max_name, false).ok()?;
                Some(Request::Lock(LockRequest {
                    name,
                    timeout_ms: (timeout != TIMEOUT_FOREVER).then_some(timeout),
                    queue_max: (queue_max != 0).then_some(queue_max),
                }))
            }
            _ => None,
        }
    }

    /// The opcode this request travels under.
    pub fn opcode(&self) -> u8 {
        match self {
            Request::Hello(_) => op::HELLO,
            Request::Ping(_) => op::PING,
            Request::Lock(_) => op::LOCK,
            Request::Unlock(_) => op::UNLOCK,
            Request::Reset => op::RESET,
            Request::Locks(_) => op::LOCKS,
            Request::Connections(_) => op::CONNECTIONS,
            Request::MyLocks => op::MY_LOCKS,
            Request::Stats => op::STATS,
            Request::Auth(_) => op::AUTH,
            Request::Top(_) => op::TOP,
            Request::MyLocksMatching(_) => op::MY_LOCKS_MATCHING,
            Request::LockExt(_) => op::LOCK_EXT,
            Request::Downgrade(_) => op::DOWNGRADE,
            Request::Renew(_) => op::RENEW,
            Request::Check(_) => op::CHECK,
            Request::UnlockToken(_) => op::UNLOCK_TOKEN,
            Request::Revoke(_) => op::REVOKE,
            Request::Kick(_) => op::KICK,
            Request::AdminAuth(_) => op::ADMIN_AUTH,
            Request::LocksDetail(_) => op::LOCKS_DETAIL,
            Request::ConnectionsDetail(_) => op::CONNECTIONS_DETAIL,
            Request::SessionOpen(_) => op::SESSION_OPEN,
            Request::SessionResume(_) => op::SESSION_RESUME,
            Request::Goodbye => op::GOODBYE,
            Request::Sessions(_) => op::SESSIONS,
        }
    }

    /// Appends this request as one frame to `out`.
    pub fn encode(&self, request_id: u32, out: &mut Vec<u8>) {
        let start = begin_frame(out, self.opcode(), request_id);
        match self {
            Request::Hello(h) => {
                out.extend_from_slice(&MAGIC);
                put_u16(out, h.version);
                put_u16(out, 0);
            }
            Request::Ping(pad) | Request::Auth(pad) | Request::AdminAuth(pad) => out.extend_from_slice(pad),
            Request::Top(max) | Request::Sessions(max) => put_u32(out, *max),
            Request::Lock(l) => {
                put_u16(out, 0);
                put_u32(out, l.timeout_ms.unwrap_or(TIMEOUT_FOREVER));
                put_u32(out, l.queue_max.unwrap_or(0));
                out.extend_from_slice(l.name.as_bytes());
            }
            Request::Unlock(name) => out.extend_from_slice(name.as_bytes()),
            Request::LockExt(l) => l.encode(out),
            Request::Downgrade(t) | Request::Renew(t) | Request::Check(t) | Request::UnlockToken(t) => {
                t.encode(out)
            }
            Request::Revoke(r) => r.encode(out),
            Request::Kick(id) => put_u64(out, *id),
            Request::Locks(l)
            | Request::Connections(l)
            | Request::MyLocksMatching(l)
            | Request::LocksDetail(l)
            | Request::ConnectionsDetail(l) => {
                put_u32(out, l.max);
                out.extend_from_slice(l.prefix.as_bytes());
            }
            Request::SessionOpen(open) => open.encode(out),
            Request::SessionResume(resume) => resume.encode(out),
            Request::Reset | Request::MyLocks | Request::Stats | Request::Goodbye => {}
        }
        end_frame(out, start);
    }
}

/// HELLO is checked field by field so that a peer speaking something else fails on the magic.
fn hello(mut r: Reader<'_>) -> Result<Hello, DecodeError> {
    let magic = r.u32().map_err(|_| DecodeError::BadMagic)?;
    if magic.to_be_bytes() != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u16()?;
    let flags = r.u16()?;
    r.finish()?;
    if version < MIN_PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if flags != 0 {
        return Err(DecodeError::NonZeroFlags { opcode: op::HELLO, flags });
    }
    Ok(Hello { version })
}

fn empty<'a>(r: Reader<'_>, req: Request<'a>) -> Result<Request<'a>, DecodeError> {
    r.finish()?;
    Ok(req)
}

fn list<'a>(r: &mut Reader<'a>, max_name: u32) -> Result<ListRequest<'a>, DecodeError> {
    let max = r.u32()?;
    let prefix = validate_name(r.rest(), max_name, true)?;
    Ok(ListRequest { prefix, max })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames of every shape a LOCK or UNLOCK payload can take: valid, flagged, cut short,
    /// empty, too long, with a control character, not UTF-8; plus a few other opcodes.
    fn payloads() -> Vec<(u8, Vec<u8>)> {
        let lock = |flags: u16, timeout: u32, queue_max: u32, name: &[u8]| {
            let mut p = Vec::new();
            p.extend_from_slice(&flags.to_be_bytes());
            p.extend_from_slice(&timeout.to_be_bytes());
            p.extend_from_slice(&queue_max.to_be_bytes());
            p.extend_from_slice(name);
            p
        };
        let names: [&[u8]; 7] =
            [b"job:1", b"", b"a\x01b", b"\xff\xfe", "caf\u{e9}".as_bytes(), &[b'x'; 40], b" "];
        let mut out = Vec::new();
        for name in names {
            for (flags, timeout, queue_max) in [(0, 0, 0), (0, TIMEOUT_FOREVER, 3), (1, 5, 0), (0x100, 7, 9)]
            {
                out.push((op::LOCK, lock(flags, timeout, queue_max, name)));
            }
            out.push((op::UNLOCK, name.to_vec()));
        }
        let full = lock(0, 10, 2, b"n");
        for cut in 0..full.len() {
            out.push((op::LOCK, full[..cut].to_vec()));
        }
        out.push((op::RESET, Vec::new()));
        out.push((op::PING, b"pad".to_vec()));
        out.push((op::UNLOCK_TOKEN, full.clone()));
        out
    }

    #[test]
    fn the_short_path_decodes_exactly_what_decode_accepts_of_lock_and_unlock() {
        let mut accepted = 0;
        for (opcode, payload) in payloads() {
            for request_id in [0, 1, u32::MAX] {
                for max_name in [32, 1024] {
                    let frame = Frame { opcode, request_id, payload: &payload };
                    let hot = Request::decode_hot(&frame, max_name);
                    let full = Request::decode(&frame, max_name);
                    if matches!(opcode, op::LOCK | op::UNLOCK) {
                        assert_eq!(hot, full.ok(), "opcode {opcode:#x} id {request_id} payload {payload:?}");
                    } else {
                        assert_eq!(hot, None, "opcode {opcode:#x}: not for the short path");
                    }
                    accepted += usize::from(hot.is_some());
                }
            }
        }
        assert!(accepted > 20, "the valid frames take the short path ({accepted})");
    }
}
