//! The payloads of the lock model v2 requests (PROTOCOL.md §3.12-§3.21): modes, semaphores,
//! leases, token-checked requests, and the reasons of LOST (§4.24). They are new messages under
//! new opcodes, so the version-1 layouts (and their clients) are untouched (§8). The detailed
//! listings are in `detail.rs`.

use super::wire::{put_u16, put_u32, put_u64, Reader};
use super::{op, validate_name, DecodeError, LockRequest, TIMEOUT_FOREVER};

/// Request id of the notices the server sends on its own (LOST, CONTENDED): 0, the id §2.4
/// reserves for frames that answer no request. They are told from SHUTDOWN and ERROR by opcode.
pub const NOTICE_REQUEST_ID: u32 = 0;

/// LOCK_EXT flags bit 0: send CONTENDED when a request starts waiting behind this grant (§6.11).
pub const NOTIFY_CONTENTION: u16 = 0x0001;
/// LOCK_EXT flags bit 1: if this wait's turn comes while its session is detached, it is
/// skipped (ERROR `skipped`, replayed on resume) instead of granted (§6.14).
pub const EXT_SKIP_WHILE_DETACHED: u16 = 0x0002;

/// How a grant holds its name (§6.7, §6.8). On the wire a `u8`; values above 2 are `bad_value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Mode {
    /// Alone: no other grant of the name beside it (the only mode of version 1's LOCK).
    Exclusive = 0,
    /// Beside other shared grants, never beside an exclusive one.
    Shared = 1,
    /// A counting semaphore: `permits` of the name's `limit`.
    Semaphore = 2,
}

impl Mode {
    pub fn from_u8(byte: u8) -> Option<Mode> {
        match byte {
            0 => Some(Mode::Exclusive),
            1 => Some(Mode::Shared),
            2 => Some(Mode::Semaphore),
            _ => None,
        }
    }

    /// A stable lower-case name for listings and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
            Mode::Semaphore => "semaphore",
        }
    }
}

/// LOCK_EXT payload (§3.12), 31 bytes then the name: flags `u16`, mode `u8`, timeout_ms `u32`,
/// queue_max `u32`, permits `u32`, limit `u32`, lease_ms `u32`, max_hold_ms `u32`,
/// lock_delay_ms `u32`, name (rest).
///
/// Decoding guarantees the ranges of §3.12: for `Exclusive` and `Shared`, `permits` and `limit`
/// are 0; for `Semaphore`, `1 <= permits <= limit`. The sentinels decode to `None` as in LOCK:
/// timeout `0xFFFFFFFF`, queue_max 0, lease_ms 0, max_hold_ms 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockExtRequest<'a> {
    pub name: &'a str,
    pub mode: Mode,
    /// `None` waits forever; `Some(0)` tries once.
    pub timeout_ms: Option<u32>,
    /// `None` queues without limit; `Some(n)` refuses when holders + waiters >= n.
    pub queue_max: Option<u32>,
    /// Semaphore only: how many permits this grant takes.
    pub permits: u32,
    /// Semaphore only: the name's number of permits, which every user must agree on.
    pub limit: u32,
    /// The grant ends unless renewed within this long (RENEW); `None`: no lease.
    pub lease_ms: Option<u32>,
    /// The grant ends this long after it began, renewed or not; `None`: no bound.
    pub max_hold_ms: Option<u32>,
    /// After this grant ends abnormally, the name stays unavailable this long; 0: not at all.
    pub lock_delay_ms: u32,
    /// Send CONTENDED when another request starts waiting behind this grant.
    pub notify_contention: bool,
    /// Flags bit 1: a wait whose turn comes while the session is detached is skipped (§6.14).
    pub skip_while_detached: bool,
}

impl<'a> LockExtRequest<'a> {
    /// An exclusive grant that waits forever, the same lock as version 1's LOCK; set the other
    /// fields on it.
    pub fn exclusive(name: &'a str) -> Self {
        Self::with_mode(name, Mode::Exclusive, 0, 0)
    }

    pub fn shared(name: &'a str) -> Self {
        Self::with_mode(name, Mode::Shared, 0, 0)
    }

    /// `permits` of the name's `limit`; the server refuses `permits` 0 or above `limit`.
    pub fn semaphore(name: &'a str, permits: u32, limit: u32) -> Self {
        Self::with_mode(name, Mode::Semaphore, permits, limit)
    }

    fn with_mode(name: &'a str, mode: Mode, permits: u32, limit: u32) -> Self {
        LockExtRequest {
            name,
            mode,
            timeout_ms: None,
            queue_max: None,
            permits,
            limit,
            lease_ms: None,
            max_hold_ms: None,
            lock_delay_ms: 0,
            notify_contention: false,
            skip_while_detached: false,
        }
    }

    /// LOCK as the LOCK_EXT it is (§6.7): exclusive, with its timeout and queue limit, and no
    /// lease, hold budget, lock-delay or notice. One code path can then serve both requests.
    pub fn from_lock(lock: &LockRequest<'a>) -> Self {
        let mut ext = Self::exclusive(lock.name);
        (ext.timeout_ms, ext.queue_max) = (lock.timeout_ms, lock.queue_max);
        ext
    }

    pub(crate) fn decode(r: &mut Reader<'a>, max_name: u32) -> Result<Self, DecodeError> {
        let flags = r.u16()?;
        let mode = r.u8()?;
        let timeout = r.u32()?;
        let queue_max = r.u32()?;
        let permits = r.u32()?;
        let limit = r.u32()?;
        let lease_ms = r.u32()?;
        let max_hold_ms = r.u32()?;
        let lock_delay_ms = r.u32()?;
        if flags & !(NOTIFY_CONTENTION | EXT_SKIP_WHILE_DETACHED) != 0 {
            return Err(DecodeError::NonZeroFlags { opcode: op::LOCK_EXT, flags });
        }
        let bad =
            |field, value: u32| DecodeError::BadValue { opcode: op::LOCK_EXT, field, value: value.into() };
        let mode = Mode::from_u8(mode).ok_or(bad("mode", mode.into()))?;
        match mode {
            Mode::Exclusive | Mode::Shared if limit != 0 => return Err(bad("limit", limit)),
            Mode::Exclusive | Mode::Shared if permits != 0 => return Err(bad("permits", permits)),
            Mode::Semaphore if limit == 0 => return Err(bad("limit", limit)),
            Mode::Semaphore if permits == 0 || permits > limit => return Err(bad("permits", permits)),
            _ => {}
        }
        let name = validate_name(r.rest(), max_name, false)?;
        Ok(LockExtRequest {
            name,
            mode,
            timeout_ms: (timeout != TIMEOUT_FOREVER).then_some(timeout),
            queue_max: (queue_max != 0).then_some(queue_max),
            permits,
            limit,
            lease_ms: (lease_ms != 0).then_some(lease_ms),
            max_hold_ms: (max_hold_ms != 0).then_some(max_hold_ms),
            lock_delay_ms,
            notify_contention: flags & NOTIFY_CONTENTION != 0,
            skip_while_detached: flags & EXT_SKIP_WHILE_DETACHED != 0,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let skip = if self.skip_while_detached { EXT_SKIP_WHILE_DETACHED } else { 0 };
        put_u16(out, if self.notify_contention { NOTIFY_CONTENTION } else { 0 } | skip);
        out.push(self.mode as u8);
        put_u32(out, self.timeout_ms.unwrap_or(TIMEOUT_FOREVER));
        put_u32(out, self.queue_max.unwrap_or(0));
        put_u32(out, self.permits);
        put_u32(out, self.limit);
        put_u32(out, self.lease_ms.unwrap_or(0));
        put_u32(out, self.max_hold_ms.unwrap_or(0));
        put_u32(out, self.lock_delay_ms);
        out.extend_from_slice(self.name.as_bytes());
    }
}

/// DOWNGRADE, RENEW, CHECK and UNLOCK_TOKEN payload (§3.13-§3.16): token `u64` (never 0),
/// name (rest). The token names one grant of the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRequest<'a> {
    pub name: &'a str,
    pub token: u64,
}

impl<'a> TokenRequest<'a> {
    pub(crate) fn decode(r: &mut Reader<'a>, opcode: u8, max_name: u32) -> Result<Self, DecodeError> {
        let token = r.u64()?;
        if token == 0 {
            return Err(DecodeError::BadValue { opcode, field: "token", value: 0 });
        }
        Ok(TokenRequest { name: validate_name(r.rest(), max_name, false)?, token })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.token);
        out.extend_from_slice(self.name.as_bytes());
    }
}

/// REVOKE payload (§3.17): token `u64` (0 = every grant of the name), name (rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevokeRequest<'a> {
    pub name: &'a str,
    /// `None` revokes every grant of the name; `Some(t)` only the grant with token `t`.
    pub token: Option<u64>,
}

impl<'a> RevokeRequest<'a> {
    pub(crate) fn decode(r: &mut Reader<'a>, max_name: u32) -> Result<Self, DecodeError> {
        let token = r.u64()?;
        let name = validate_name(r.rest(), max_name, false)?;
        Ok(RevokeRequest { name, token: (token != 0).then_some(token) })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.token.unwrap_or(0));
        out.extend_from_slice(self.name.as_bytes());
    }
}

/// Why a grant ended without its holder's UNLOCK (LOST, §4.24). On the wire a `u8`; a client
/// treats a reason it does not know as a loss all the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LostReason {
    /// The lease ran out before a RENEW (§6.9).
    LeaseExpired,
    /// The grant reached its `max_hold_ms` (§6.9).
    MaxHold,
    /// An operator revoked it (REVOKE, §6.12).
    Revoked,
    /// A reason this version does not know (decoding only).
    Other(u8),
}

impl LostReason {
    pub fn to_u8(self) -> u8 {
        match self {
            LostReason::LeaseExpired => 1,
            LostReason::MaxHold => 2,
            LostReason::Revoked => 3,
            LostReason::Other(byte) => byte,
        }
    }

    pub fn from_u8(byte: u8) -> LostReason {
        match byte {
            1 => LostReason::LeaseExpired,
            2 => LostReason::MaxHold,
            3 => LostReason::Revoked,
            other => LostReason::Other(other),
        }
    }

    /// A stable snake_case name for logs, the CLI and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            LostReason::LeaseExpired => "lease_expired",
            LostReason::MaxHold => "max_hold",
            LostReason::Revoked => "revoked",
            LostReason::Other(_) => "unknown",
        }
    }
}
