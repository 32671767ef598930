//! Snapshots of the lock table (issue 16, log compaction): `encode_snapshot` writes the whole
//! replicated state as compact bytes, `decode_snapshot` rebuilds a table that behaves exactly
//! like the one encoded: for any later commands both give the same outputs and the same
//! `state_lines`. Limits and batch sizes are configuration, not state, and are not written.
//!
//! Layout (version 1), every integer an unsigned LEB128 varint unless said otherwise, a string
//! its byte length then its UTF-8 bytes, an `Option` a 0/1 byte then the value:
//!
//! ```text
//! version u8 = 1
//! next_token next_session wheel_elapsed inline_budget
//! counters (TableStats, histograms as 13 counts, sum, count)  session_stats (7 values)
//! locks:     n, each: name delay_until limit
//!            holders: n, each: session token since weight extra:u8 held_prev held_next
//!                     (n = 0: the last grant, still in the set's inline place: session token since weight extra)
//!            waiters: n, each: session request_id weight opts:Option<GrantOpts> since deadline:Option
//! extras:    n (by token), each: token lock session GrantOpts lease_end:Option hold_end:Option notify:u8
//! sessions:  n (by id), each: id label held first_wait:Option<(lock, seq)> more_waits: n (lock, seq)
//!            next_wait held_head held_tail gone:u8 releasing:u8 skip_default:u8
//!            lost: n (name token reason:u8) resumable:Option<(secret:16 bytes, grace_ms,
//!            detached:Option<(until label outbox: n (session request_id lock:Option<name> frame))>)>
//! timers:    next_deadline:Option, n in firing order, each: deadline tag fields
//! releasing: n (session reset:Option)   revoking: n (session request_id name below count)
//! granting:  n (lock or vacant)
//! ```
//!
//! A lock is written as its position in key order plus one (0 for none, or for a vacant slot
//! in the granting queue), in held links and in every lock reference, so the restored table,
//! whose keys are the positions, finds the same locks. Derived state (the waiter and detached
//! gauges, grace ends, the delays map, unheld delayed locks, timer handles) is rebuilt, not
//! written. The decoder is total: any byte string gives a table or a [`SnapshotError`], never
//! a panic and never an allocation larger than the input; the table it returns passed
//! cross-reference checks and `check_invariants`.
//!
//! Kept outputs (a detached session's outbox) are written as the response frames the protocol
//! encodes them to. Timers are written in the order the wheel would fire them and inserted in
//! that order into a fresh wheel advanced to the encoded wheel's time, so overdue timers left by
//! a cut `Expire` stay first, in their order. Not written, as not observable: capacities, the
//! store's index and the housekeeping marks, timer handles and the wheel's generation, the
//! buffers `expire` and REVOKE reuse (empty between commands).
//!
//! Key order: the restored table's slab keys are the positions, so new locks fill it from the
//! end where the original reuses freed slots. Nothing observable reads the keys (listings
//! order by name): `granting`, the one structure of keys, loses a lock's keys when the lock
//! goes (`a_stale_granting_key_and_a_reused_slot`); a vacant entry is still read, from a
//! snapshot written before that, and costs the grant step one look as it did. Batch sizes are
//! configuration: `set_batches` on a restored table leaves its inline release budget (state)
//! as restored, so a table configured like the original stays in step with it.

use std::collections::VecDeque;
use std::fmt;

use hashbrown::HashMap;

use super::holders::{Holder, Holders};
use super::lease::{Extra, GrantOpts, LostGrant, LOST_MEMORY};
use super::release::Release;
use super::revoke::Revoke;
use super::session::SessionState;
use super::store::{Lock, Waiter, NO_LOCK};
use super::suspend::{Detached, Resumable};
use super::table::{LockTable, Timer};
use super::{Histogram, Name, Output, SessionId, SessionStats, TableLimits, TableStats};
use crate::protocol::{split_frame, LostReason, Response, MAX_FRAME_CEILING, SESSION_SECRET_LEN};
use crate::wheel::Wheel;

/// The format version this build writes and reads.
const VERSION: u8 = 1;

/// Timer tags.
const T_WAIT: u8 = 0;
const T_LEASE: u8 = 1;
const T_DELAY: u8 = 2;
const T_GRACE: u8 = 3;

/// Why snapshot bytes did not decode: what was wrong, and at which byte it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotError {
    /// The offset of the byte being read when the fault showed (the input's length for a
    /// fault found after the whole input was read).
    pub offset: usize,
    pub what: String,
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad snapshot at byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for SnapshotError {}

impl LockTable {
    /// Appends the table's whole replicated state to `out` (format version byte first).
    /// O(state); two tables with equal state write equal bytes.
    pub fn encode_snapshot(&self, out: &mut Vec<u8>) {
        let mut w = Writer { out, pos: HashMap::new() };
        w.out.push(VERSION);
        for (i, (key, _)) in self.store.iter_keyed().enumerate() {
            w.pos.insert(key, i as u64 + 1);
        }
        w.u(self.next_token);
        w.u(self.next_session);
        w.u(self.timers.elapsed());
        w.u(self.inline_budget as u64);
        w.stats(&self.counters);
        w.session_stats(&self.session_stats);
        w.locks(self);
        w.extras(self);
        w.sessions(self);
        w.timers(self);
        w.u(self.releasing.len() as u64);
        for release in &self.releasing {
            w.u(release.session.0);
            w.opt(release.reset.map(u64::from));
        }
        w.u(self.revoking.len() as u64);
        for revoke in &self.revoking {
            w.u(revoke.session.0);
            w.u(u64::from(revoke.request_id));
            w.str(&revoke.name);
            w.u(revoke.below);
            w.u(u64::from(revoke.count));
        }
        w.u(self.granting.len() as u64);
        for &key in &self.granting {
            w.lock_ref(key);
        }
    }

    /// Rebuilds a table from `encode_snapshot`'s bytes. `limits` as for `LockTable::new`
    /// (limits are configuration, not state: they are not serialized). Batch sizes are the
    /// defaults, as after `new`; the caller may call `set_batches`, which keeps the restored
    /// inline release budget.
    pub fn decode_snapshot(bytes: &[u8], limits: TableLimits) -> Result<LockTable, SnapshotError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.byte()?;
        if version != VERSION {
            return Err(r.err(format!("version {version}, this build reads {VERSION}")));
        }
        let mut table = LockTable::new(1, limits);
        table.next_token = r.u()?;
        table.next_session = r.u()?;
        let elapsed = r.u()?;
        table.inline_budget = r.usize()?;
        table.counters = r.stats()?;
        table.session_stats = r.session_stats()?;
        let locks = r.locks(&mut table)?;
        r.extras(&mut table, locks)?;
        r.sessions(&mut table, locks)?;
        table.timers.advance_empty(elapsed);
        r.timers(&mut table, locks)?;
        r.pending(&mut table, locks)?;
        if r.at != bytes.len() {
            return Err(r.err(format!("{} trailing bytes", bytes.len() - r.at)));
        }
        table.derive_gauges();
        let end = bytes.len();
        table.check_restored().map_err(|what| SnapshotError { offset: end, what })?;
        Ok(table)
    }

    /// The state a snapshot does not carry because the rest implies it.
    fn derive_gauges(&mut self) {
        self.waiters = self.store.iter().map(|lock| lock.waiters.len()).sum();
        self.delayed_unheld =
            self.store.iter().filter(|lock| lock.delay_until != 0 && lock.holders.is_empty()).count();
        self.grace_ends.clear();
        for (&id, state) in &self.sessions {
            if let Some(detached) = state.resumable.as_deref().and_then(|r| r.detached.as_ref()) {
                self.grace_ends.insert((detached.until, id));
            }
        }
        self.detached = self.grace_ends.len();
    }

    /// The cross-references `check_invariants` does not look at, then `check_invariants`.
    fn check_restored(&self) -> Result<(), String> {
        for (key, lock) in self.store.iter_keyed() {
            let mut seen = hashbrown::HashSet::new();
            if !lock.holders.iter().all(|h| seen.insert(h.session)) {
                return Err(format!("lock {key} has two grants of one session"));
            }
            seen.clear();
            if !lock.waiters.iter().all(|w| seen.insert(w.session)) {
                return Err(format!("lock {key} has two waits of one session"));
            }
        }
        for (&id, state) in &self.sessions {
            if id.0 >= self.next_session {
                return Err(format!("session {} is not below next_session {}", id.0, self.next_session));
            }
            let queued = self.releasing.iter().filter(|r| r.session == id).count();
            if queued != usize::from(state.releasing) || (state.gone && !state.releasing) {
                return Err(format!(
                    "session {} releasing {} gone {} in {queued} releases",
                    id.0, state.releasing, state.gone
                ));
            }
        }
        if let Some(release) = self.releasing.iter().find(|r| !self.sessions.contains_key(&r.session)) {
            return Err(format!("a release of unknown session {}", release.session.0));
        }
        if self.extras.keys().any(|&token| token >= self.next_token) {
            return Err("a grant's lease state has a token not issued yet".to_owned());
        }
        self.check_invariants()
    }
}

/// The encoder's state: the output and each lock key's position + 1.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    pos: HashMap<u32, u64>,
}

impl Writer<'_> {
    fn u(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    fn flag(&mut self, b: bool) {
        self.out.push(u8::from(b));
    }

    fn opt(&mut self, v: Option<u64>) {
        self.flag(v.is_some());
        if let Some(v) = v {
            self.u(v);
        }
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u(b.len() as u64);
        self.out.extend_from_slice(b);
    }

    /// A lock key as its position + 1; 0 for `NO_LOCK` or a vacant slot.
    fn lock_ref(&mut self, key: u32) {
        let pos = self.pos.get(&key).copied().unwrap_or(0);
        self.u(pos);
    }

    fn histogram(&mut self, h: &Histogram) {
        for &c in &h.counts {
            self.u(c);
        }
        self.u(h.sum_ms);
        self.u(h.count);
    }

    fn stats(&mut self, s: &TableStats) {
        for v in [s.connections as u64, s.locks_held as u64, s.waiters as u64] {
            self.u(v);
        }
        let counters = [
            s.acquired,
            s.already_acquired,
            s.already_waiting,
            s.queued,
            s.timed_out,
            s.queue_maxed,
            s.released,
            s.release_failed,
            s.cancelled,
            s.limit_refused,
            s.grants_after_wait,
            s.wait_time_total_ms,
            s.lost,
            s.last_token,
        ];
        for v in counters {
            self.u(v);
        }
        self.histogram(&s.wait_ms);
        self.histogram(&s.hold_ms);
    }

    fn session_stats(&mut self, s: &SessionStats) {
        let values =
            [s.opened, s.detached as u64, s.resumed, s.taken_over, s.expired, s.resume_failures, s.skipped];
        for v in values {
            self.u(v);
        }
    }

    fn grant_opts(&mut self, o: &GrantOpts) {
        self.opt(o.lease_ms.map(u64::from));
        self.opt(o.max_hold_ms.map(u64::from));
        self.u(u64::from(o.lock_delay_ms));
        self.flag(o.notify);
    }

    fn locks(&mut self, t: &LockTable) {
        self.u(t.store.len() as u64);
        for lock in t.store.iter() {
            self.str(&lock.name);
            self.u(lock.delay_until);
            self.u(u64::from(lock.holders.limit()));
            self.u(lock.holders.len() as u64);
            if lock.holders.is_empty() {
                // The grant that went last stays in the set's inline place, and TOP still
                // shows its holder and age for a lock whose cut grant run left it no holder.
                let stale = lock.holders.first();
                self.u(stale.session.0);
                self.u(stale.token);
                self.u(stale.since);
                self.u(u64::from(stale.weight));
                self.flag(stale.extra);
            }
            for h in lock.holders.iter() {
                self.u(h.session.0);
                self.u(h.token);
                self.u(h.since);
                self.u(u64::from(h.weight));
                self.flag(h.extra);
                self.lock_ref(h.held_prev);
                self.lock_ref(h.held_next);
            }
            self.u(lock.waiters.len() as u64);
            for w in &lock.waiters {
                self.u(w.session.0);
                self.u(u64::from(w.request_id));
                self.u(u64::from(w.weight));
                self.flag(w.opts.is_some());
                if let Some(opts) = w.opts.as_deref() {
                    self.grant_opts(opts);
                }
                self.u(w.since);
                self.opt(w.deadline);
            }
        }
    }

    fn extras(&mut self, t: &LockTable) {
        let mut extras: Vec<(&u64, &Extra)> = t.extras.iter().collect();
        extras.sort_unstable_by_key(|(token, _)| **token);
        self.u(extras.len() as u64);
        for (&token, e) in extras {
            self.u(token);
            self.lock_ref(e.lock);
            self.u(e.session.0);
            self.grant_opts(&e.opts);
            self.opt(e.lease_end);
            self.opt(e.hold_end);
            self.flag(e.notify);
        }
    }

    fn sessions(&mut self, t: &LockTable) {
        let mut sessions: Vec<(&SessionId, &SessionState)> = t.sessions.iter().collect();
        sessions.sort_unstable_by_key(|(id, _)| **id);
        self.u(sessions.len() as u64);
        for (id, s) in sessions {
            self.u(id.0);
            self.str(&s.label);
            self.u(s.held as u64);
            self.flag(s.first_wait.is_some());
            if let Some((lock, seq)) = s.first_wait {
                self.lock_ref(lock);
                self.u(seq);
            }
            let mut more: Vec<(u64, u32)> = s.more_waits.iter().map(|(&lock, &seq)| (seq, lock)).collect();
            more.sort_unstable();
            self.u(more.len() as u64);
            for (seq, lock) in more {
                self.lock_ref(lock);
                self.u(seq);
            }
            self.u(s.next_wait);
            self.lock_ref(s.held_head);
            self.lock_ref(s.held_tail);
            self.flag(s.gone);
            self.flag(s.releasing);
            self.flag(s.skip_default);
            self.u(s.lost.len() as u64);
            for lost in &s.lost {
                self.str(&lost.name);
                self.u(lost.token);
                self.out.push(lost.reason.to_u8());
            }
            self.flag(s.resumable.is_some());
            if let Some(r) = s.resumable.as_deref() {
                self.resumable(r);
            }
        }
    }

    fn resumable(&mut self, r: &Resumable) {
        self.out.extend_from_slice(&r.secret);
        self.u(u64::from(r.grace_ms));
        self.flag(r.detached.is_some());
        let Some(d) = r.detached.as_ref() else { return };
        self.u(d.until);
        self.str(&d.label);
        self.u(d.outbox.len() as u64);
        let mut frame = Vec::new();
        for o in &d.outbox {
            self.u(o.session.0);
            self.u(u64::from(o.request_id));
            self.flag(o.lock.is_some());
            if let Some(name) = &o.lock {
                self.str(name);
            }
            frame.clear();
            o.response.encode(o.request_id, &mut frame);
            self.bytes(&frame);
        }
    }

    fn timers(&mut self, t: &LockTable) {
        self.opt(t.timers.next_deadline());
        let pending = t.timers.pending_in_order();
        self.u(pending.len() as u64);
        for (deadline, timer) in pending {
            self.u(deadline);
            match *timer {
                Timer::Wait { lock, session, request_id } => {
                    self.out.push(T_WAIT);
                    self.lock_ref(lock);
                    self.u(session.0);
                    self.u(u64::from(request_id));
                }
                Timer::Lease { token } => {
                    self.out.push(T_LEASE);
                    self.u(token);
                }
                Timer::Delay { lock } => {
                    self.out.push(T_DELAY);
                    self.lock_ref(lock);
                }
                Timer::Grace { session } => {
                    self.out.push(T_GRACE);
                    self.u(session.0);
                }
            }
        }
    }
}

/// The decoder's cursor over the input.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: impl Into<String>) -> SnapshotError {
        SnapshotError { offset: self.at, what: what.into() }
    }

    fn byte(&mut self) -> Result<u8, SnapshotError> {
        let b = *self.bytes.get(self.at).ok_or_else(|| self.err("truncated"))?;
        self.at += 1;
        Ok(b)
    }

    fn u(&mut self) -> Result<u64, SnapshotError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let v = self.u()?;
        u32::try_from(v).map_err(|_| self.err(format!("{v} does not fit 32 bits")))
    }

    fn usize(&mut self) -> Result<usize, SnapshotError> {
        let v = self.u()?;
        usize::try_from(v).map_err(|_| self.err(format!("{v} does not fit a usize")))
    }

    fn flag(&mut self) -> Result<bool, SnapshotError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.err(format!("flag byte {b}"))),
        }
    }

    fn opt(&mut self) -> Result<Option<u64>, SnapshotError> {
        Ok(if self.flag()? { Some(self.u()?) } else { None })
    }

    fn opt_u32(&mut self) -> Result<Option<u32>, SnapshotError> {
        Ok(if self.flag()? { Some(self.u32()?) } else { None })
    }

    /// A count of items of at least `min_size` bytes each: larger than the rest of the input
    /// could hold is an error, so no count makes the decoder allocate beyond the input's size.
    fn count(&mut self, min_size: usize) -> Result<usize, SnapshotError> {
        let n = self.u()?;
        let left = (self.bytes.len() - self.at) as u64;
        if n.saturating_mul(min_size as u64) > left {
            return Err(self.err(format!("count {n} larger than the {left} bytes left could hold")));
        }
        Ok(n as usize)
    }

    fn raw(&mut self, len: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.at.checked_add(len).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| self.err(format!("{len} bytes past the end")))?;
        let raw = &self.bytes[self.at..end];
        self.at = end;
        Ok(raw)
    }

    fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let len = self.count(1)?;
        self.raw(len)
    }

    fn str(&mut self) -> Result<&'a str, SnapshotError> {
        let start = self.at;
        let raw = self.bytes()?;
        std::str::from_utf8(raw)
            .map_err(|_| SnapshotError { offset: start, what: "a string is not UTF-8".into() })
    }

    /// A lock reference (position + 1, 0 for none) as a key of the restored table, whose keys
    /// are the positions; `NO_LOCK` for none. Out of range is an error.
    fn lock_ref(&mut self, locks: usize) -> Result<u32, SnapshotError> {
        match self.u()? {
            0 => Ok(NO_LOCK),
            pos if pos <= locks as u64 => Ok((pos - 1) as u32),
            pos => Err(self.err(format!("lock reference {pos} of {locks} locks"))),
        }
    }

    /// A lock reference that must name a lock.
    fn some_lock(&mut self, locks: usize) -> Result<u32, SnapshotError> {
        let key = self.lock_ref(locks)?;
        if key == NO_LOCK {
            return Err(self.err("a reference to no lock"));
        }
        Ok(key)
    }

    fn histogram(&mut self) -> Result<Histogram, SnapshotError> {
        let mut h = Histogram::default();
        for c in h.counts.iter_mut() {
            *c = self.u()?;
        }
        h.sum_ms = self.u()?;
        h.count = self.u()?;
        Ok(h)
    }

    fn stats(&mut self) -> Result<TableStats, SnapshotError> {
        let mut s = TableStats {
            connections: self.usize()?,
            locks_held: self.usize()?,
            waiters: self.usize()?,
            ..TableStats::default()
        };
        for v in [
            &mut s.acquired,
            &mut s.already_acquired,
            &mut s.already_waiting,
            &mut s.queued,
            &mut s.timed_out,
            &mut s.queue_maxed,
            &mut s.released,
            &mut s.release_failed,
            &mut s.cancelled,
            &mut s.limit_refused,
            &mut s.grants_after_wait,
            &mut s.wait_time_total_ms,
            &mut s.lost,
            &mut s.last_token,
        ] {
            *v = self.u()?;
        }
        s.wait_ms = self.histogram()?;
        s.hold_ms = self.histogram()?;
        Ok(s)
    }

    fn session_stats(&mut self) -> Result<SessionStats, SnapshotError> {
        Ok(SessionStats {
            opened: self.u()?,
            detached: self.usize()?,
            resumed: self.u()?,
            taken_over: self.u()?,
            expired: self.u()?,
            resume_failures: self.u()?,
            skipped: self.u()?,
        })
    }

    fn grant_opts(&mut self) -> Result<GrantOpts, SnapshotError> {
        Ok(GrantOpts {
            lease_ms: self.opt_u32()?,
            max_hold_ms: self.opt_u32()?,
            lock_delay_ms: self.u32()?,
            notify: self.flag()?,
        })
    }

    fn session(&mut self) -> Result<SessionId, SnapshotError> {
        Ok(SessionId(self.u()?))
    }

    /// The locks, inserted in order into the fresh table's store, so lock `i` gets key `i`.
    /// Returns their number.
    fn locks(&mut self, t: &mut LockTable) -> Result<usize, SnapshotError> {
        // Each lock takes at least 5 bytes (name length, delay, limit and two counts).
        let n = self.count(5)?;
        for i in 0..n {
            let name = Name::new(self.str()?);
            if t.store.find(&name).is_some() {
                return Err(self.err(format!("lock {:?} twice", name.as_str())));
            }
            let delay_until = self.u()?;
            let limit = self.u32()?;
            let holders = self.holders(limit, n)?;
            let mut lock = Lock::new(Name::clone(&name), Holder::new(SessionId(0), 0, 0, 1), limit);
            lock.holders = holders;
            lock.delay_until = delay_until;
            for _ in 0..self.count(6)? {
                lock.waiters.push_back(self.waiter()?);
            }
            let hash = t.store.hash(&name);
            if t.store.insert(hash, lock) != Some(i as u32) {
                return Err(self.err("the restored store did not give lock keys in order"));
            }
        }
        Ok(n)
    }

    fn holders(&mut self, limit: u32, locks: usize) -> Result<Holders, SnapshotError> {
        let count = self.count(7)?;
        let mut holders: Option<Holders> = None;
        for _ in 0..count {
            let mut h = Holder::new(self.session()?, self.u()?, self.u()?, self.u32()?);
            if h.weight == 0 {
                return Err(self.err("a grant of weight 0"));
            }
            h.extra = self.flag()?;
            h.held_prev = self.lock_ref(locks)?;
            h.held_next = self.lock_ref(locks)?;
            match holders.as_mut() {
                Some(set) => set.grant(h),
                None => holders = Some(Holders::new(h, limit)),
            }
        }
        match holders {
            Some(set) => Ok(set),
            None => {
                // No holder (a lock-delay runs, or a cut run waits for its grant step): a set
                // whose only grant went, that grant still in the inline place, as the table has it.
                let mut stale = Holder::new(self.session()?, self.u()?, self.u()?, self.u32()?);
                stale.extra = self.flag()?;
                let mut set = Holders::new(stale, limit);
                set.remove(stale.session);
                Ok(set)
            }
        }
    }

    fn waiter(&mut self) -> Result<Waiter, SnapshotError> {
        let (session, request_id, weight) = (self.session()?, self.u32()?, self.u32()?);
        let opts = if self.flag()? { Some(Box::new(self.grant_opts()?)) } else { None };
        Ok(Waiter { session, request_id, weight, opts, since: self.u()?, deadline: self.opt()?, timer: None })
    }

    fn extras(&mut self, t: &mut LockTable, locks: usize) -> Result<(), SnapshotError> {
        for _ in 0..self.count(8)? {
            let token = self.u()?;
            let extra = Extra {
                lock: self.some_lock(locks)?,
                session: self.session()?,
                opts: self.grant_opts()?,
                lease_end: self.opt()?,
                hold_end: self.opt()?,
                timer: None,
                notify: self.flag()?,
            };
            if t.extras.insert(token, extra).is_some() {
                return Err(self.err(format!("lease state of token {token} twice")));
            }
        }
        Ok(())
    }

    fn sessions(&mut self, t: &mut LockTable, locks: usize) -> Result<(), SnapshotError> {
        for _ in 0..self.count(12)? {
            let id = self.session()?;
            let mut s = SessionState::new(self.str()?.into());
            s.held = self.usize()?;
            if self.flag()? {
                s.first_wait = Some((self.some_lock(locks)?, self.u()?));
            }
            for _ in 0..self.count(2)? {
                let (lock, seq) = (self.some_lock(locks)?, self.u()?);
                if s.first_wait.is_some_and(|(first, _)| first == lock)
                    || s.more_waits.insert(lock, seq).is_some()
                {
                    return Err(self.err(format!("session {} waits twice on lock {lock}", id.0)));
                }
            }
            s.next_wait = self.u()?;
            s.held_head = self.lock_ref(locks)?;
            s.held_tail = self.lock_ref(locks)?;
            s.gone = self.flag()?;
            s.releasing = self.flag()?;
            s.skip_default = self.flag()?;
            let lost = self.count(3)?;
            if lost > LOST_MEMORY {
                return Err(self.err(format!("{lost} lost grants, more than {LOST_MEMORY}")));
            }
            for _ in 0..lost {
                let (name, token) = (Name::new(self.str()?), self.u()?);
                let byte = self.byte()?;
                let reason = LostReason::from_u8(byte);
                if matches!(reason, LostReason::Other(_)) {
                    return Err(self.err(format!("lost reason {byte}")));
                }
                s.lost.push(LostGrant { name, token, reason });
            }
            if self.flag()? {
                s.resumable = Some(Box::new(self.resumable()?));
            }
            if t.sessions.insert(id, s).is_some() {
                return Err(self.err(format!("session {} twice", id.0)));
            }
        }
        Ok(())
    }

    fn resumable(&mut self) -> Result<Resumable, SnapshotError> {
        let mut secret = [0; SESSION_SECRET_LEN];
        secret.copy_from_slice(self.raw(SESSION_SECRET_LEN)?);
        let grace_ms = self.u32()?;
        let detached = if self.flag()? { Some(self.detached()?) } else { None };
        Ok(Resumable { secret, grace_ms, detached })
    }

    fn detached(&mut self) -> Result<Detached, SnapshotError> {
        let until = self.u()?;
        let label = self.str()?.into();
        let n = self.count(4)?;
        let mut outbox = Vec::with_capacity(n);
        for _ in 0..n {
            let (session, request_id) = (self.session()?, self.u32()?);
            let lock = if self.flag()? { Some(Name::new(self.str()?)) } else { None };
            let start = self.at;
            let frame = self.bytes()?;
            let bad = |what: String| SnapshotError { offset: start, what };
            let response = match split_frame(frame, MAX_FRAME_CEILING) {
                Ok(Some((f, used))) if used == frame.len() => {
                    Response::decode(&f).map_err(|e| bad(format!("a kept response: {e}")))?
                }
                _ => return Err(bad("a kept response is not one whole frame".into())),
            };
            outbox.push(Output { session, request_id, lock, response });
        }
        // The grace timer comes with the timers; a placeholder handle until then.
        let timer = Wheel::<()>::new().insert(0, ());
        Ok(Detached { timer, until, label, outbox })
    }

    /// The timers in firing order, into the table's wheel (already advanced to the encoded
    /// wheel's time), each handle given to its owner; an owner that is not there, or one that
    /// gets two timers, is an error.
    fn timers(&mut self, t: &mut LockTable, locks: usize) -> Result<(), SnapshotError> {
        let mut graces = hashbrown::HashSet::new();
        let next_deadline = self.opt()?;
        for _ in 0..self.count(3)? {
            let at = self.u()?;
            let timer = match self.byte()? {
                T_WAIT => Timer::Wait {
                    lock: self.some_lock(locks)?,
                    session: self.session()?,
                    request_id: self.u32()?,
                },
                T_LEASE => Timer::Lease { token: self.u()? },
                T_DELAY => Timer::Delay { lock: self.some_lock(locks)? },
                T_GRACE => Timer::Grace { session: self.session()? },
                tag => return Err(self.err(format!("timer tag {tag}"))),
            };
            let handle = t.timers.insert(at, timer);
            let owned = match timer {
                Timer::Wait { lock, session, request_id } => t
                    .store
                    .get_mut(lock)
                    .and_then(|l| {
                        l.waiters.iter_mut().find(|w| w.session == session && w.request_id == request_id)
                    })
                    .filter(|w| w.deadline == Some(at) && w.timer.is_none())
                    .map(|w| w.timer = Some(handle))
                    .is_some(),
                Timer::Lease { token } => t
                    .extras
                    .get_mut(&token)
                    .filter(|e| e.ends_at() == Some(at) && e.timer.is_none())
                    .map(|e| e.timer = Some(handle))
                    .is_some(),
                Timer::Delay { lock } => {
                    let delayed = t.store.get(lock).is_some_and(|l| l.delay_until == at && at != 0);
                    delayed && t.delays.insert(lock, handle).is_none()
                }
                Timer::Grace { session } => {
                    let detached = t
                        .sessions
                        .get_mut(&session)
                        .and_then(|s| s.resumable.as_deref_mut())
                        .and_then(|r| r.detached.as_mut())
                        .filter(|d| d.until == at);
                    match detached {
                        Some(d) if graces.insert(session) => {
                            d.timer = handle;
                            true
                        }
                        _ => false,
                    }
                }
            };
            if !owned {
                return Err(self.err(format!("timer {timer:?} at {at} has no owner waiting for it")));
            }
        }
        if let Some(at) = next_deadline {
            t.timers.lower_due_bound(at);
        }
        if t.timers.next_deadline() != next_deadline {
            return Err(self.err(format!(
                "next deadline {:?} of the timers, {next_deadline:?} written",
                t.timers.next_deadline()
            )));
        }
        let detached =
            t.sessions.values().filter(|s| s.resumable.as_deref().is_some_and(|r| r.is_detached())).count();
        if detached != graces.len() {
            return Err(self.err(format!("{detached} detached sessions, {} grace timers", graces.len())));
        }
        Ok(())
    }

    /// The batched work: releases, revokes and cut grant runs.
    fn pending(&mut self, t: &mut LockTable, locks: usize) -> Result<(), SnapshotError> {
        let n = self.count(2)?;
        t.releasing = VecDeque::with_capacity(n);
        for _ in 0..n {
            let session = self.session()?;
            t.releasing.push_back(Release { session, reset: self.opt_u32()? });
        }
        let n = self.count(5)?;
        t.revoking = VecDeque::with_capacity(n);
        for _ in 0..n {
            let (session, request_id) = (self.session()?, self.u32()?);
            let name = Name::new(self.str()?);
            t.revoking.push_back(Revoke { session, request_id, name, below: self.u()?, count: self.u32()? });
        }
        let n = self.count(1)?;
        t.granting = VecDeque::with_capacity(n);
        for _ in 0..n {
            t.granting.push_back(self.lock_ref(locks)?);
        }
        Ok(())
    }
}
