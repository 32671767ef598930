//! The detailed listings of the lock model v2 (PROTOCOL.md §4.28, §4.29): every grant with its
//! mode, permits, token and timing, every wait with its mode, by lock (LOCKS_DETAIL_LIST) or by
//! connection (CONNECTIONS_DETAIL_LIST). The version-1 listings cannot say these things and keep
//! their layouts.
//!
//! A grant entry is `str16`, mode `u8`, permits `u32`, token `u64`, held_ms `u64`, ends_in_ms
//! `u32`; a wait entry is `str16`, mode `u8`, permits `u32`. The `str16` is a connection's label
//! in a lock's entry and a lock's name in a connection's.

use super::wire::{put_str16, put_u32, put_u64, Reader};
use super::{op, str16_size, DecodeError, Mode, LIST_COUNT_SIZE};

/// Encoded size of a grant entry after its `str16`.
pub const GRANT_FIXED: usize = 1 + 4 + 8 + 8 + 4;
/// Encoded size of a wait entry after its `str16`.
pub const WAIT_FIXED: usize = 1 + 4;

/// One grant of a lock, in a LOCKS_DETAIL_LIST entry (§4.28).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderInfo {
    /// The holder's connection label (§4.13).
    pub label: String,
    pub mode: Mode,
    /// 0 for exclusive and shared grants.
    pub permits: u32,
    pub token: u64,
    /// How long the grant has been held.
    pub held_ms: u64,
    /// When the grant ends by itself (lease or `max_hold_ms`, §6.9); `None` (`0xFFFFFFFF`): never.
    pub ends_in_ms: Option<u32>,
}

/// One waiting request for a lock, in a LOCKS_DETAIL_LIST entry (§4.28).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaiterInfo {
    pub label: String,
    pub mode: Mode,
    pub permits: u32,
}

/// One lock in a LOCKS_DETAIL_LIST (§4.28): name `str16`, limit `u32` (0: not a semaphore),
/// holders (`u32` count, then each grant, in grant order), waiters (`u32` count, then each wait,
/// in queue order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockDetail {
    pub name: String,
    pub limit: u32,
    pub holders: Vec<HolderInfo>,
    pub waiters: Vec<WaiterInfo>,
}

impl LockDetail {
    /// Permits in use: the sum over the holders (0 for a lock that is not a semaphore).
    pub fn permits_in_use(&self) -> u64 {
        self.holders.iter().map(|h| u64::from(h.permits)).sum()
    }
}

/// One grant a connection holds, in a CONNECTIONS_DETAIL_LIST entry (§4.29).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldName {
    /// The lock's name.
    pub name: String,
    pub mode: Mode,
    pub permits: u32,
    pub token: u64,
    pub held_ms: u64,
    pub ends_in_ms: Option<u32>,
}

/// One wait of a connection, in a CONNECTIONS_DETAIL_LIST entry (§4.29).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwaitedName {
    pub name: String,
    pub mode: Mode,
    pub permits: u32,
}

/// One connection in a CONNECTIONS_DETAIL_LIST (§4.29): label `str16`, connection id `u64`
/// (what KICK takes), held (`u32` count, then each grant, sorted by name), waiting (`u32` count,
/// then each wait, in the order the waits started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionDetail {
    pub label: String,
    pub connection_id: u64,
    pub held: Vec<HeldName>,
    pub waiting: Vec<AwaitedName>,
}

/// The fields of a grant entry after its `str16`.
struct GrantFields {
    mode: Mode,
    permits: u32,
    token: u64,
    held_ms: u64,
    ends_in_ms: Option<u32>,
}

fn put_grant(out: &mut Vec<u8>, key: &str, g: GrantFields) {
    put_str16(out, key);
    out.push(g.mode as u8);
    put_u32(out, g.permits);
    put_u64(out, g.token);
    put_u64(out, g.held_ms);
    put_u32(out, g.ends_in_ms.unwrap_or(u32::MAX));
}

fn put_wait(out: &mut Vec<u8>, key: &str, mode: Mode, permits: u32) {
    put_str16(out, key);
    out.push(mode as u8);
    put_u32(out, permits);
}

fn grant(r: &mut Reader<'_>, opcode: u8) -> Result<(String, GrantFields), DecodeError> {
    let key = r.str16()?;
    let mode = mode(r, opcode)?;
    let (permits, token, held_ms, ends) = (r.u32()?, r.u64()?, r.u64()?, r.u32()?);
    let ends_in_ms = (ends != u32::MAX).then_some(ends);
    Ok((key, GrantFields { mode, permits, token, held_ms, ends_in_ms }))
}

fn wait(r: &mut Reader<'_>, opcode: u8) -> Result<(String, Mode, u32), DecodeError> {
    Ok((r.str16()?, mode(r, opcode)?, r.u32()?))
}

/// A mode byte in a response; an unknown one means the server speaks something newer (§5.2).
fn mode(r: &mut Reader<'_>, opcode: u8) -> Result<Mode, DecodeError> {
    let byte = r.u8()?;
    Mode::from_u8(byte).ok_or(DecodeError::BadValue { opcode, field: "mode", value: byte.into() })
}

pub(crate) fn put_holder(out: &mut Vec<u8>, h: &HolderInfo) {
    let fields = GrantFields {
        mode: h.mode,
        permits: h.permits,
        token: h.token,
        held_ms: h.held_ms,
        ends_in_ms: h.ends_in_ms,
    };
    put_grant(out, &h.label, fields);
}

pub(crate) fn put_waiter(out: &mut Vec<u8>, w: &WaiterInfo) {
    put_wait(out, &w.label, w.mode, w.permits);
}

pub(crate) fn put_held(out: &mut Vec<u8>, h: &HeldName) {
    let fields = GrantFields {
        mode: h.mode,
        permits: h.permits,
        token: h.token,
        held_ms: h.held_ms,
        ends_in_ms: h.ends_in_ms,
    };
    put_grant(out, &h.name, fields);
}

pub(crate) fn put_awaited(out: &mut Vec<u8>, w: &AwaitedName) {
    put_wait(out, &w.name, w.mode, w.permits);
}

pub(crate) fn put_lock_detail(out: &mut Vec<u8>, lock: &LockDetail) {
    put_str16(out, &lock.name);
    put_u32(out, lock.limit);
    put_u32(out, lock.holders.len() as u32);
    lock.holders.iter().for_each(|h| put_holder(out, h));
    put_u32(out, lock.waiters.len() as u32);
    lock.waiters.iter().for_each(|w| put_waiter(out, w));
}

pub(crate) fn put_connection_detail(out: &mut Vec<u8>, conn: &ConnectionDetail) {
    put_str16(out, &conn.label);
    put_u64(out, conn.connection_id);
    put_u32(out, conn.held.len() as u32);
    conn.held.iter().for_each(|h| put_held(out, h));
    put_u32(out, conn.waiting.len() as u32);
    conn.waiting.iter().for_each(|w| put_awaited(out, w));
}

pub(crate) fn lock_detail(r: &mut Reader<'_>) -> Result<LockDetail, DecodeError> {
    const OP: u8 = op::LOCKS_DETAIL_LIST;
    let name = r.str16()?;
    let limit = r.u32()?;
    let mut holders = Vec::new();
    for _ in 0..r.u32()? {
        let (label, g) = grant(r, OP)?;
        let GrantFields { mode, permits, token, held_ms, ends_in_ms } = g;
        holders.push(HolderInfo { label, mode, permits, token, held_ms, ends_in_ms });
    }
    let mut waiters = Vec::new();
    for _ in 0..r.u32()? {
        let (label, mode, permits) = wait(r, OP)?;
        waiters.push(WaiterInfo { label, mode, permits });
    }
    Ok(LockDetail { name, limit, holders, waiters })
}

pub(crate) fn connection_detail(r: &mut Reader<'_>) -> Result<ConnectionDetail, DecodeError> {
    const OP: u8 = op::CONNECTIONS_DETAIL_LIST;
    let label = r.str16()?;
    let connection_id = r.u64()?;
    let mut held = Vec::new();
    for _ in 0..r.u32()? {
        let (name, g) = grant(r, OP)?;
        let GrantFields { mode, permits, token, held_ms, ends_in_ms } = g;
        held.push(HeldName { name, mode, permits, token, held_ms, ends_in_ms });
    }
    let mut waiting = Vec::new();
    for _ in 0..r.u32()? {
        let (name, mode, permits) = wait(r, OP)?;
        waiting.push(AwaitedName { name, mode, permits });
    }
    Ok(ConnectionDetail { label, connection_id, held, waiting })
}

// Sizes for `encode_within` (bounded.rs): (the part that must fit, the whole entry).

pub(crate) fn holder_sizes(h: &HolderInfo) -> (usize, usize) {
    let size = str16_size(&h.label) + GRANT_FIXED;
    (size, size)
}

pub(crate) fn waiter_sizes(w: &WaiterInfo) -> (usize, usize) {
    let size = str16_size(&w.label) + WAIT_FIXED;
    (size, size)
}

pub(crate) fn held_sizes(h: &HeldName) -> (usize, usize) {
    let size = str16_size(&h.name) + GRANT_FIXED;
    (size, size)
}

pub(crate) fn awaited_sizes(w: &AwaitedName) -> (usize, usize) {
    let size = str16_size(&w.name) + WAIT_FIXED;
    (size, size)
}

/// Name, limit and the two counts; then every holder and waiter.
pub(crate) fn lock_detail_sizes(lock: &LockDetail) -> (usize, usize) {
    let head = str16_size(&lock.name) + 4 + 2 * LIST_COUNT_SIZE;
    let holders: usize = lock.holders.iter().map(|h| holder_sizes(h).1).sum();
    let waiters: usize = lock.waiters.iter().map(|w| waiter_sizes(w).1).sum();
    (head, head + holders + waiters)
}

/// Label, connection id and the two counts; then every grant and wait.
pub(crate) fn connection_detail_sizes(conn: &ConnectionDetail) -> (usize, usize) {
    let head = str16_size(&conn.label) + 8 + 2 * LIST_COUNT_SIZE;
    let held: usize = conn.held.iter().map(|h| held_sizes(h).1).sum();
    let waiting: usize = conn.waiting.iter().map(|w| awaited_sizes(w).1).sum();
    (head, head + held + waiting)
}
