//! The detailed views of LOCKS_DETAIL and CONNECTIONS_DETAIL (issue 13, PROTOCOL.md §4.28,
//! §4.29): every holder with its mode, permits, token, age and end, every waiter with its mode;
//! by lock, or by connection with the connection's id (which the server, not the table, knows). Read-only; the
//! selection of the locks (prefix, page) is the caller's.
//!
//! Bounded (README "Limits and guarantees"): a LOCKS_DETAIL answer builds no more than fits
//! its frame. The bytes of each holder and waiter are counted before it is built, so a name
//! with a million holders costs at most `max_frame / 27` grant entries, not a million, and an
//! entry that does not fit whole is left out (the first one is cut), as the encoder would.
//! CONNECTIONS_DETAIL selects as CONNECTIONS does and builds each connection's grants and waits
//! within the room the same way.

use super::holders::Holder;
use super::holders::Mode;
use super::lease::ms_left;
use super::listing::{has_prefix, smallest, Room};
use super::session::SessionState;
use super::store::{Lock, Waiter};
use super::table::LockTable;
use super::SessionId;
use crate::protocol::{
    self, str16_size, AwaitedName, ConnectionDetail, HeldName, HolderInfo, LockDetail, Response, WaiterInfo,
    GRANT_FIXED, LIST_COUNT_SIZE, WAIT_FIXED,
};

/// The smallest CONNECTIONS_DETAIL_LIST entry: an empty label, the id and two empty lists.
const MIN_CONNECTION_DETAIL: usize = 2 + 8 + 2 * LIST_COUNT_SIZE;
use crate::wheel::Tick;

/// The wire mode and permits of a grant or wait in `mode`.
fn wire_mode(mode: Mode) -> (protocol::Mode, u32) {
    match mode {
        Mode::Exclusive => (protocol::Mode::Exclusive, 0),
        Mode::Shared => (protocol::Mode::Shared, 0),
        Mode::Permits { count, .. } => (protocol::Mode::Semaphore, count),
    }
}

impl LockTable {
    /// The detail of lock `name` at `now`; `None` if the name is not listed (§6.10: a name in
    /// its lock-delay with neither holders nor waiters is not).
    pub fn lock_detail(&self, now: Tick, name: &str) -> Option<LockDetail> {
        let lock = self.store.find(name).and_then(|key| self.store.get(key))?;
        (!lock.holders.is_empty() || !lock.waiters.is_empty()).then(|| self.detail_of(now, lock))
    }

    /// The details of the locks `names` (in that order) at `now` that fit one LOCKS_DETAIL_LIST
    /// frame of `max_frame`, and whether anything was left out: every entry whole but the
    /// first, which is cut to fit if it alone does not. Builds only what it returns.
    pub fn locks_detail_within<'a>(
        &self,
        now: Tick,
        names: impl IntoIterator<Item = &'a str>,
        max_frame: u32,
    ) -> (Vec<LockDetail>, bool) {
        let mut room = Room::new(max_frame, 1 + LIST_COUNT_SIZE);
        let mut details: Vec<LockDetail> = Vec::new();
        for name in names {
            let Some(lock) = self.store.find(name).and_then(|key| self.store.get(key)) else { continue };
            if lock.holders.is_empty() && lock.waiters.is_empty() {
                continue;
            }
            let head = str16_size(&lock.name) + 4 + 2 * LIST_COUNT_SIZE;
            let whole = head.checked_add(self.entries_size_within(lock, room.left.saturating_sub(head)));
            let fits = whole.is_some_and(|w| w <= room.left);
            if !fits && !details.is_empty() {
                return (details, true);
            }
            if !room.take(head) {
                return (details, true);
            }
            let (detail, cut) = self.detail_within(now, lock, &mut room);
            details.push(detail);
            if cut {
                return (details, true);
            }
        }
        (details, false)
    }

    /// The encoded size of the holder and waiter entries of `lock`, or more than `limit` as soon
    /// as it passes it: at most `limit / 7` entries looked at.
    fn entries_size_within(&self, lock: &Lock, limit: usize) -> usize {
        let mut total = 0;
        let holders = lock.holders.iter().map(|h| self.grant_size(h));
        for size in holders.chain(lock.waiters.iter().map(|w| self.wait_size(w))) {
            total += size;
            if total > limit {
                break;
            }
        }
        total
    }

    fn grant_size(&self, h: &Holder) -> usize {
        str16_size(self.label(h.session)) + GRANT_FIXED
    }

    fn wait_size(&self, w: &Waiter) -> usize {
        str16_size(self.label(w.session)) + WAIT_FIXED
    }

    /// The detail of `lock` with as many holders, then waiters, as `room` takes; true if any
    /// was left out.
    fn detail_within(&self, now: Tick, lock: &Lock, room: &mut Room) -> (LockDetail, bool) {
        let mut cut = false;
        let mut holders = Vec::new();
        for h in lock.holders.iter() {
            if !room.take(self.grant_size(h)) {
                cut = true;
                break;
            }
            holders.push(self.holder_info(now, lock, h));
        }
        let mut waiters = Vec::new();
        for w in lock.waiters.iter().take_while(|_| !cut) {
            if !room.take(self.wait_size(w)) {
                cut = true;
                break;
            }
            waiters.push(self.waiter_info(lock, w));
        }
        let detail =
            LockDetail { name: lock.name.to_string(), limit: lock.holders.limit(), holders, waiters };
        (detail, cut)
    }

    fn holder_info(&self, now: Tick, lock: &Lock, h: &Holder) -> HolderInfo {
        let (mode, permits) = wire_mode(lock.holders.mode_of(h));
        let ends = h.extra.then(|| self.extras.get(&h.token).and_then(|e| e.ends_at())).flatten();
        HolderInfo {
            label: self.label(h.session).to_owned(),
            mode,
            permits,
            token: h.token,
            held_ms: now.saturating_sub(h.since),
            ends_in_ms: ends.map(|at| ms_left(now, at)),
        }
    }

    fn waiter_info(&self, lock: &Lock, w: &Waiter) -> WaiterInfo {
        let mode = match (lock.holders.limit(), w.weight) {
            (0, u32::MAX) => Mode::Exclusive,
            (0, _) => Mode::Shared,
            (limit, count) => Mode::Permits { count, limit },
        };
        let (mode, permits) = wire_mode(mode);
        WaiterInfo { label: self.label(w.session).to_owned(), mode, permits }
    }

    /// The whole detail of `lock`, for tests and small views.
    fn detail_of(&self, now: Tick, lock: &Lock) -> LockDetail {
        LockDetail {
            name: lock.name.to_string(),
            limit: lock.holders.limit(),
            holders: lock.holders.iter().map(|h| self.holder_info(now, lock, h)).collect(),
            waiters: lock.waiters.iter().map(|w| self.waiter_info(lock, w)).collect(),
        }
    }

    /// CONNECTIONS_DETAIL (§3.21): the connections CONNECTIONS would list for `prefix` and
    /// `max` (sorted by label), each with its id as `id_of` gives it (a connection without one,
    /// going away, is left out), every grant it holds (sorted by name) and every wait (in the
    /// order they started), with modes, in a frame of at most `max_frame`: entries whole except
    /// a first one too large, which is cut, and `truncated` when anything was left out.
    pub fn connections_detail_within(
        &self,
        now: Tick,
        prefix: &str,
        max: u32,
        max_frame: u32,
        id_of: impl Fn(SessionId) -> Option<u64>,
    ) -> Response {
        let mut room = Room::new(max_frame, 1 + LIST_COUNT_SIZE);
        let cap = self.list_cap(max).min(room.left / MIN_CONNECTION_DETAIL);
        let matching =
            self.sessions.iter().filter(|(_, state)| !state.gone && has_prefix(&state.label, prefix));
        let by_label = |a: &(&SessionId, &SessionState), b: &(&SessionId, &SessionState)| {
            a.1.label.cmp(&b.1.label).then(a.0.cmp(b.0))
        };
        let (found, mut truncated) = smallest(matching, cap, by_label);
        let mut connections = Vec::with_capacity(found.len());
        for (&id, state) in found {
            let Some(connection_id) = id_of(id) else { continue };
            // Built in a trial room: an entry after the first that does not fit whole is dropped.
            let mut trial = Room { left: room.left };
            let Some((entry, cut)) = self.connection_detail(now, id, connection_id, state, &mut trial) else {
                truncated = true;
                break;
            };
            if cut && !connections.is_empty() {
                truncated = true;
                break;
            }
            room.left = trial.left;
            connections.push(entry);
            if cut {
                truncated = true;
                break;
            }
        }
        Response::ConnectionsDetail { connections, truncated }
    }

    /// One connection's entry within `room`, and whether any of its grants or waits was left
    /// out; `None` if not even its head fits.
    fn connection_detail(
        &self,
        now: Tick,
        id: SessionId,
        connection_id: u64,
        state: &SessionState,
        room: &mut Room,
    ) -> Option<(ConnectionDetail, bool)> {
        if !room.take(str16_size(&state.label) + 8 + 2 * LIST_COUNT_SIZE) {
            return None;
        }
        // The names (held sorted, waits in order) as CONNECTIONS picks them, within a copy of
        // the room: their detail entries are larger, so these are all that could fit.
        let mut names_room = Room { left: room.left };
        let (held_names, waited_names, mut cut) = self.holdings(id, state, "", usize::MAX, &mut names_room);
        let mut held = Vec::new();
        for name in &held_names {
            let Some(lock) = self.store.find(name).and_then(|key| self.store.get(key)) else { continue };
            let Some(h) = lock.holders.of(id) else { continue };
            if !room.take(str16_size(name) + GRANT_FIXED) {
                cut = true;
                break;
            }
            let info = self.holder_info(now, lock, h);
            let (mode, permits, token, held_ms, ends_in_ms) =
                (info.mode, info.permits, info.token, info.held_ms, info.ends_in_ms);
            held.push(HeldName { name: name.clone(), mode, permits, token, held_ms, ends_in_ms });
        }
        let mut waiting = Vec::new();
        for name in waited_names.iter().take_while(|_| !cut) {
            let Some(lock) = self.store.find(name).and_then(|key| self.store.get(key)) else { continue };
            let Some(w) = lock.waiters.iter().find(|w| w.session == id) else { continue };
            if !room.take(str16_size(name) + WAIT_FIXED) {
                cut = true;
                break;
            }
            let info = self.waiter_info(lock, w);
            waiting.push(AwaitedName { name: name.clone(), mode: info.mode, permits: info.permits });
        }
        Some((ConnectionDetail { label: state.label.to_string(), connection_id, held, waiting }, cut))
    }
}
