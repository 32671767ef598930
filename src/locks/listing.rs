//! Read-only views of the lock table: the LOCKS, CONNECTIONS and MY_LOCKS listings, statistics
//! and monitoring helpers.
//!
//! Every listing is built within the bytes of one frame (`max_frame`, PROTOCOL.md §2.1). The
//! encoded size of an entry is known before it is built (§2.2: 2 + length per string, 4 per
//! list count), so entries are added whole while they fit, nothing built is thrown away, the
//! encoded frame always fits, and `truncated` says when something was left out. Which entries
//! come first is decided by selection ([`smallest`]), never by sorting what matched: the work is
//! one pass over the candidates (the locks, the connections, or one connection's holdings) plus
//! a sort of at most the entries that can fit in the frame. Without a name-ordered index the
//! pass itself is unavoidable for a name-ordered listing; it touches each candidate once and
//! keeps no per-candidate memory.

use std::cmp::{Ordering, Reverse};

use super::session::SessionState;
use super::store::Lock;
use super::table::QUEUE_REPORT_MAX;
use super::{LockTable, SessionId, TableStats};
use crate::protocol::{str16_size, ConnectionInfo, LockInfo, Response, DEFAULT_MAX_FRAME, LIST_COUNT_SIZE};
use crate::wheel::Tick;

/// Bytes of a response frame's length that are not payload: opcode and request id.
const FRAME_HEAD: usize = 5;
/// The smallest `str16` a name takes: two length bytes and at least one byte of name.
const MIN_NAME_SIZE: usize = 3;
/// The smallest LOCKS_LIST entry: a name, the queue count and the holder's (possibly empty) label.
const MIN_LOCK_ENTRY: usize = MIN_NAME_SIZE + LIST_COUNT_SIZE + 2;
/// The smallest CONNECTIONS_LIST entry: a label and two list counts.
const MIN_CONNECTION_ENTRY: usize = 2 + 2 * LIST_COUNT_SIZE;
/// A connection holding more than this share of all locks has its holdings found by one
/// sequential pass over the store instead of one random lookup per held lock. Measured over
/// 1,000,000 locks held by one connection: 10 ms for the pass, 82 ms for the lookups, so the
/// lookups win only below about an eighth of the table.
const SCAN_STORE_WHEN_HOLDING_ONE_IN: usize = 8;
/// Above this many waits, a prefix-filtered list of a connection's waits reads the store in key
/// order (see `first_waits`).
const SORT_WAITS_ABOVE: usize = 65_536;

/// The payload bytes a listing may still fill.
pub(super) struct Room {
    pub left: usize,
}

impl Room {
    /// The payload of one `max_frame` frame, less the response's `fixed` fields.
    pub fn new(max_frame: u32, fixed: usize) -> Room {
        Room { left: (max_frame as usize).saturating_sub(FRAME_HEAD + fixed) }
    }

    /// Takes `n` bytes if they are left.
    pub fn take(&mut self, n: usize) -> bool {
        let fits = n <= self.left;
        if fits {
            self.left -= n;
        }
        fits
    }

    /// How many entries of at least `min` bytes could still fit: the most worth selecting.
    fn most(&self, min: usize) -> usize {
        self.left / min
    }
}

impl LockTable {
    /// LOCKS within the default frame limit; see [`LockTable::locks_within`].
    pub fn locks(&self, prefix: &str, max: u32) -> Response {
        self.locks_within(prefix, max, DEFAULT_MAX_FRAME)
    }

    /// LOCKS: locks whose name starts with `prefix`, sorted by name, each with its queue (holder
    /// first, at most `QUEUE_REPORT_MAX` labels), in a frame of at most `max_frame`. `max` 0
    /// means the default; any `max` is capped by the default. Entries are whole, except that a
    /// first entry too large for the frame is sent with its queue cut.
    pub fn locks_within(&self, prefix: &str, max: u32, max_frame: u32) -> Response {
        let mut room = Room::new(max_frame, 1 + LIST_COUNT_SIZE);
        let cap = self.list_cap(max).min(room.most(MIN_LOCK_ENTRY));
        // The name travels beside the lock, so a comparison reads the name alone, not the
        // lock first (half the memory touched per comparison).
        let matching = self
            .store
            .iter()
            .filter(|l| is_listed(l))
            .map(|l| (&*l.name, l))
            .filter(|(name, _)| has_prefix(name, prefix));
        let (found, mut truncated) = smallest(matching, cap, |a, b| a.0.cmp(b.0));
        let mut locks = Vec::with_capacity(found.len());
        for (_, lock) in found {
            let Some((entry, cut)) = self.lock_entry(lock, &mut room, locks.is_empty()) else {
                truncated = true;
                break;
            };
            locks.push(entry);
            truncated |= cut;
        }
        Response::Locks { locks, truncated }
    }

    /// One LOCKS_LIST entry if it fits in `room` (taking its bytes), and whether its queue was
    /// cut; only the `first` entry may be cut, so a listing is never empty for want of room.
    fn lock_entry(&self, lock: &Lock, room: &mut Room, first: bool) -> Option<(LockInfo, bool)> {
        let queue = || {
            let holders = lock.holders.iter().map(|h| h.session);
            let conns = holders.chain(lock.waiters.iter().map(|w| w.session));
            conns.take(QUEUE_REPORT_MAX).map(|session| self.label(session))
        };
        let head = str16_size(&lock.name) + LIST_COUNT_SIZE;
        let whole = head + queue().map(str16_size).sum::<usize>();
        // Sizes first, strings after: nothing is built for an entry that is then left out.
        if room.take(whole) {
            let queue = queue().map(str::to_owned).collect();
            return Some((LockInfo { name: lock.name.to_string(), queue }, false));
        }
        if !first || !room.take(head) {
            return None;
        }
        let queue =
            queue().map_while(|label| room.take(str16_size(label)).then(|| label.to_owned())).collect();
        Some((LockInfo { name: lock.name.to_string(), queue }, true))
    }

    /// CONNECTIONS within the default frame limit; see [`LockTable::connections_within`].
    pub fn connections(&self, prefix: &str, max: u32) -> Response {
        self.connections_within(prefix, max, DEFAULT_MAX_FRAME)
    }

    /// CONNECTIONS: connections whose label starts with `prefix`, sorted by label, with the
    /// locks each holds (by name) and awaits (in the order the waits started), in a frame of at
    /// most `max_frame`. Entries are whole, except that a first entry too large for the frame
    /// is sent with its lists cut.
    pub fn connections_within(&self, prefix: &str, max: u32, max_frame: u32) -> Response {
        let mut room = Room::new(max_frame, 1 + LIST_COUNT_SIZE);
        let cap = self.list_cap(max).min(room.most(MIN_CONNECTION_ENTRY));
        let matching = self.sessions.iter().filter(|(_, state)| has_prefix(&state.label, prefix));
        // Labels should be unique; the id breaks ties so the order never depends on hashing.
        let by_label = |a: &(&SessionId, &SessionState), b: &(&SessionId, &SessionState)| {
            a.1.label.cmp(&b.1.label).then(a.0.cmp(b.0))
        };
        let (found, mut truncated) = smallest(matching, cap, by_label);
        let mut connections = Vec::with_capacity(found.len());
        for (&id, state) in found {
            let Some((entry, cut)) = self.connection_entry(id, state, &mut room, connections.is_empty())
            else {
                truncated = true;
                break;
            };
            connections.push(entry);
            truncated |= cut;
        }
        Response::Connections { connections, truncated }
    }

    /// One CONNECTIONS_LIST entry if it fits in `room`, and whether its lists were cut; only
    /// the `first` entry may be cut.
    fn connection_entry(
        &self,
        id: SessionId,
        state: &SessionState,
        room: &mut Room,
        first: bool,
    ) -> Option<(ConnectionInfo, bool)> {
        let head = str16_size(&state.label) + 2 * LIST_COUNT_SIZE;
        let limit = room.left.checked_sub(head)?;
        if !first && self.names_size_within(id, state, limit).is_none() {
            return None;
        }
        room.take(head);
        let (held, waiting, cut) = self.holdings(id, state, "", usize::MAX, room);
        Some((ConnectionInfo { label: state.label.to_string(), held, waiting }, cut))
    }

    /// The encoded size of every name `state` holds or awaits, or `None` as soon as it passes
    /// `limit`: at most `limit / 3` lookups, however many locks the connection has.
    fn names_size_within(&self, id: SessionId, state: &SessionState, limit: usize) -> Option<usize> {
        let keys = self.held_keys(id, state).chain(state.waits().map(|(key, _)| key));
        let mut total = 0;
        for lock in keys.filter_map(|key| self.store.get(key)) {
            total += str16_size(&lock.name);
            if total > limit {
                return None;
            }
        }
        Some(total)
    }

    /// MY_LOCKS within the default frame limit; see [`LockTable::my_locks_within`].
    pub fn my_locks(&self, session: SessionId) -> Response {
        self.my_locks_within(session, DEFAULT_MAX_FRAME)
    }

    /// MY_LOCKS (§3.7): what `session` holds (sorted by name) and awaits (in order); empty if
    /// unknown. Each list is capped at the listing default and both at the frame; this old
    /// answer has no field to say so (MY_LOCKS_MATCHING has).
    pub fn my_locks_within(&self, session: SessionId, max_frame: u32) -> Response {
        let (held, waiting, _) = self.mine(session, "", 0, Room::new(max_frame, 2 * LIST_COUNT_SIZE));
        Response::MyLocks { held, waiting }
    }

    /// MY_LOCKS_MATCHING (§3.11): like MY_LOCKS, only names starting with `prefix`, at most
    /// `max` in each list (0 = the default; capped by it), and `truncated` when any matching
    /// name was left out.
    pub fn my_locks_matching(&self, session: SessionId, prefix: &str, max: u32, max_frame: u32) -> Response {
        let room = Room::new(max_frame, 1 + 2 * LIST_COUNT_SIZE);
        let (held, waiting, truncated) = self.mine(session, prefix, max, room);
        Response::MyLocksMatching { held, waiting, truncated }
    }

    fn mine(
        &self,
        session: SessionId,
        prefix: &str,
        max: u32,
        mut room: Room,
    ) -> (Vec<String>, Vec<String>, bool) {
        match self.sessions.get(&session) {
            Some(state) => self.holdings(session, state, prefix, self.list_cap(max), &mut room),
            None => (Vec::new(), Vec::new(), false),
        }
    }

    /// The names starting with `prefix` that `id` holds (sorted) and awaits (in wait order),
    /// at most `max` of each, held first within `room`; and whether any was left out.
    pub(super) fn holdings(
        &self,
        id: SessionId,
        state: &SessionState,
        prefix: &str,
        max: usize,
        room: &mut Room,
    ) -> (Vec<String>, Vec<String>, bool) {
        let (held, mut cut) = self.held_names(id, state, prefix, max.min(room.most(MIN_NAME_SIZE)));
        let held = take_names(held, room, &mut cut);
        let (waits, more) = self.first_waits(state, prefix, max.min(room.most(MIN_NAME_SIZE)));
        cut |= more;
        let waiting = take_names(waits, room, &mut cut);
        (held, waiting, cut)
    }

    /// The names of the first `cap` waits of `state` (in the order they started) on locks
    /// starting with `prefix`, and whether more matched. The order needs no names, so without a
    /// prefix only the chosen waits are looked up in the store.
    fn first_waits(&self, state: &SessionState, prefix: &str, cap: usize) -> (Vec<&str>, bool) {
        let matches = |key: u32| self.store.get(key).is_some_and(|l| has_prefix(&l.name, prefix));
        let by_seq = |a: &(u64, u32), b: &(u64, u32)| a.0.cmp(&b.0);
        let (waits, more) = if prefix.is_empty() {
            smallest(state.waits().map(|(key, seq)| (seq, key)), cap, by_seq)
        } else if state.count() - state.held > SORT_WAITS_ABOVE {
            // Many waits: visit their locks in key order, so the store is read front to back
            // instead of at random (measured over 1,000,000 waits: half the time), at 16 bytes
            // per wait for the length of this request.
            let mut keyed: Vec<(u32, u64)> = state.waits().collect();
            keyed.sort_unstable_by_key(|&(key, _)| key);
            let waits = keyed.into_iter().filter(|&(key, _)| matches(key)).map(|(key, seq)| (seq, key));
            smallest(waits, cap, by_seq)
        } else {
            let waits = state.waits().filter(|&(key, _)| matches(key)).map(|(key, seq)| (seq, key));
            smallest(waits, cap, by_seq)
        };
        let names = waits.into_iter().filter_map(|(_, key)| self.store.get(key)).map(|l| &*l.name).collect();
        (names, more)
    }

    /// The `cap` smallest names starting with `prefix` that `id` holds, sorted, and whether
    /// more matched.
    fn held_names<'a>(
        &'a self,
        id: SessionId,
        state: &SessionState,
        prefix: &str,
        cap: usize,
    ) -> (Vec<&'a str>, bool) {
        let by_name = |a: &&str, b: &&str| a.cmp(b);
        let matches = |name: &&str| has_prefix(name, prefix);
        if state.held > self.store.len() / SCAN_STORE_WHEN_HOLDING_ONE_IN {
            let mine = self.store.iter().filter(|lock| lock.holders.of(id).is_some()).map(|lock| &*lock.name);
            smallest(mine.filter(matches), cap, by_name)
        } else {
            let mine =
                self.held_keys(id, state).filter_map(|key| self.store.get(key)).map(|lock| &*lock.name);
            smallest(mine.filter(matches), cap, by_name)
        }
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            connections: self.sessions.len(),
            locks_held: self.store.len() - self.delayed_unheld,
            waiters: self.waiters,
            last_token: self.last_token(),
            ..self.counters.clone()
        }
    }

    /// The `n` locks held longest: `(name, held since)`, oldest first.
    pub fn longest_holds(&self, n: usize) -> Vec<(String, Tick)> {
        let held = self.store.iter().filter(|lock| !lock.holders.is_empty());
        let holds = held.map(|lock| (lock.holders.first().since, &*lock.name));
        let (found, _) = smallest(holds, n, Ord::cmp);
        found.into_iter().map(|(since, name)| (name.to_owned(), since)).collect()
    }

    /// The `n` locks with the most waiters: `(name, waiters)`, deepest first; only locks with
    /// at least one waiter.
    pub fn deepest_queues(&self, n: usize) -> Vec<(String, usize)> {
        let queues = self
            .store
            .iter()
            .filter(|lock| !lock.waiters.is_empty())
            .map(|lock| (Reverse(lock.waiters.len()), &*lock.name));
        let (found, _) = smallest(queues, n, Ord::cmp);
        found.into_iter().map(|(Reverse(depth), name)| (name.to_owned(), depth)).collect()
    }

    /// The most entries a listing asking for `max` may return: `max` 0 means the default, and
    /// the default (unless 0) is also the ceiling.
    pub(super) fn list_cap(&self, max: u32) -> usize {
        let ceiling = match self.limits.list_max_default {
            0 => u32::MAX,
            default => default,
        };
        let wanted = if max == 0 { ceiling } else { max.min(ceiling) };
        wanted as usize
    }
}

/// `name.starts_with(prefix)`, answering the empty prefix (every listing by default) without a
/// comparison: measured on the project machine, the library's comparison of an empty slice (a
/// zero-length `memcmp`) costs about 150 ns, which made most of the cost of a listing over a
/// million locks (170 ms instead of 10 ms).
pub(super) fn has_prefix(name: &str, prefix: &str) -> bool {
    prefix.is_empty() || name.as_bytes().starts_with(prefix.as_bytes())
}

/// Copies `names` in order while their `str16` fits in `room`; sets `cut` at the first that
/// does not.
fn take_names(names: Vec<&str>, room: &mut Room, cut: &mut bool) -> Vec<String> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if !room.take(str16_size(name)) {
            *cut = true;
            break;
        }
        out.push(name.to_owned());
    }
    out
}

/// The `cap` smallest items by `cmp`, sorted, and whether any item was left out.
///
/// Memory is O(cap) and time O(items + cap log cap) whatever order the items come in:
/// candidates are gathered up to `2 * cap`, cut back to the `cap` smallest by selection, and
/// the largest one kept becomes a bar that most later items fail with a single comparison.
/// (A heap would cost O(log cap) per item when the items come in falling order, which a client
/// choosing its names can arrange; collecting every item first would cost memory per item.)
pub(super) fn smallest<T: Copy>(
    items: impl IntoIterator<Item = T>,
    cap: usize,
    cmp: impl Fn(&T, &T) -> Ordering,
) -> (Vec<T>, bool) {
    let mut items = items.into_iter();
    if cap == 0 {
        return (Vec::new(), items.next().is_some());
    }
    let mut kept: Vec<T> = Vec::new();
    let mut bar: Option<T> = None;
    let mut left_out = false;
    for item in items {
        if bar.as_ref().is_some_and(|bar| cmp(&item, bar) != Ordering::Less) {
            left_out = true;
            continue;
        }
        kept.push(item);
        if kept.len() >= cap.saturating_mul(2) {
            bar = Some(keep_first(&mut kept, cap, &cmp));
            left_out = true;
        }
    }
    if kept.len() > cap {
        keep_first(&mut kept, cap, &cmp);
        left_out = true;
    }
    kept.sort_unstable_by(&cmp);
    (kept, left_out)
}

/// Cuts `items` (longer than `cap` > 0) to its `cap` smallest, unordered; returns the largest kept.
fn keep_first<T: Copy>(items: &mut Vec<T>, cap: usize, cmp: &impl Fn(&T, &T) -> Ordering) -> T {
    items.select_nth_unstable_by(cap - 1, cmp);
    items.truncate(cap);
    items[cap - 1]
}

/// Whether LOCKS lists a lock: one in its lock-delay with neither holders nor waiters is not
/// (PROTOCOL.md §6.10).
fn is_listed(lock: &super::store::Lock) -> bool {
    !lock.holders.is_empty() || !lock.waiters.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::tests::Drive;
    use crate::locks::{Output, TableLimits};
    use crate::protocol::{split_frame, LockRequest};

    fn id(slot: u32) -> SessionId {
        SessionId(u64::from(slot))
    }

    fn lock(table: &mut LockTable, session: u32, name: &str, out: &mut Vec<Output>) {
        let req = LockRequest { name, timeout_ms: None, queue_max: None };
        table.lock_req(0, id(session), 1, &req, out);
    }

    /// The response as the server would send it, checked against the frame limit: the table's
    /// own sizing must already fit, so the plain encoding (which never cuts) is what is sent.
    fn frame_len(response: &Response, max_frame: u32) -> usize {
        let mut plain = Vec::new();
        response.encode(1, &mut plain);
        let mut bounded = Vec::new();
        response.encode_within(1, max_frame, &mut bounded);
        assert_eq!(plain, bounded, "the listing was built to fit: nothing left to cut");
        assert!(split_frame(&plain, max_frame).is_ok(), "{} bytes > {max_frame}", plain.len() - 4);
        plain.len() - 4
    }

    fn name(i: usize) -> String {
        format!("n/{i:07}")
    }

    /// One connection holding a million locks (acquired in falling name order, the worst order
    /// for a heap) asks for its locks: it gets one frame of the first names, flagged when it can
    /// be, and the other listings over that table stay one frame each.
    #[test]
    fn a_million_held_locks_give_one_bounded_page() {
        const N: usize = 1_000_000;
        let mut t = LockTable::new(1, TableLimits::default());
        let mut out = Vec::new();
        t.connect_as(id(0), "127.0.0.1:1".into());
        t.connect_as(id(1), "127.0.0.1:2".into());
        for i in (0..N).rev() {
            lock(&mut t, 0, &name(i), &mut out);
            out.clear();
        }
        lock(&mut t, 1, "other", &mut out);

        // 11 bytes per name: 65536 - 13 bytes of room hold 5956 of them, below the default 10000.
        let first = |n: usize| (0..n).map(name).collect::<Vec<_>>();
        let old = t.my_locks_within(id(0), DEFAULT_MAX_FRAME);
        assert!(frame_len(&old, DEFAULT_MAX_FRAME) <= DEFAULT_MAX_FRAME as usize);
        assert_eq!(old, Response::MyLocks { held: first(5956), waiting: vec![] });
        let page = t.my_locks_matching(id(0), "", 0, DEFAULT_MAX_FRAME);
        frame_len(&page, DEFAULT_MAX_FRAME);
        assert_eq!(page, Response::MyLocksMatching { held: first(5956), waiting: vec![], truncated: true });
        assert_eq!(
            t.my_locks_matching(id(0), "n/09", 2, DEFAULT_MAX_FRAME),
            Response::MyLocksMatching {
                held: vec![name(900_000), name(900_001)],
                waiting: vec![],
                truncated: true
            }
        );
        assert_eq!(
            t.my_locks_matching(id(1), "", 0, DEFAULT_MAX_FRAME),
            Response::MyLocksMatching { held: vec!["other".into()], waiting: vec![], truncated: false }
        );

        let Response::Locks { locks, truncated } = t.locks_within("", 0, DEFAULT_MAX_FRAME) else { panic!() };
        assert!(truncated);
        assert_eq!(locks.first().map(|l| l.name.as_str()), Some("n/0000000"));
        // 2 + 9 + 4 + 2 + 11 = 28 bytes an entry: 2340 of them fit 65536 - 10.
        assert_eq!(locks.len(), 2340);
        assert!(locks.windows(2).all(|w| w[0].name < w[1].name), "sorted by name");
        frame_len(&Response::Locks { locks, truncated }, DEFAULT_MAX_FRAME);

        let Response::Connections { connections, truncated } = t.connections_within("", 0, DEFAULT_MAX_FRAME)
        else {
            panic!()
        };
        assert!(truncated);
        assert_eq!(connections.len(), 1, "the first connection's million names fill the frame");
        assert_eq!(connections[0].held[..3], first(3)[..]);
        frame_len(&Response::Connections { connections, truncated }, DEFAULT_MAX_FRAME);
        frame_len(&t.top_within(5, TOP_LIMIT, DEFAULT_MAX_FRAME), DEFAULT_MAX_FRAME);
    }

    const TOP_LIMIT: u32 = crate::locks::top::TOP_MAX;

    /// Waits are listed in the order they started, by either path (few waits: straight
    /// lookups; many: lookups in key order), filtered by prefix and cut by count.
    #[test]
    fn many_waits_are_listed_in_wait_order_by_prefix() {
        for waits in [1_000, SORT_WAITS_ABOVE + 1_000] {
            let mut t = LockTable::new(1, TableLimits::default());
            let mut out = Vec::new();
            t.connect_as(id(0), "holder".into());
            t.connect_as(id(1), "waiter".into());
            for i in 0..waits {
                lock(&mut t, 0, &name(i), &mut out);
            }
            for i in (0..waits).rev() {
                lock(&mut t, 1, &name(i), &mut out);
            }
            let in_wait_order: Vec<String> = (100..200).rev().map(name).collect();
            assert_eq!(
                t.my_locks_matching(id(1), "n/00001", 0, DEFAULT_MAX_FRAME),
                Response::MyLocksMatching { held: vec![], waiting: in_wait_order.clone(), truncated: false },
                "{waits} waits"
            );
            assert_eq!(
                t.my_locks_matching(id(1), "n/00001", 5, DEFAULT_MAX_FRAME),
                Response::MyLocksMatching {
                    held: vec![],
                    waiting: in_wait_order[..5].to_vec(),
                    truncated: true
                },
                "{waits} waits"
            );
            let Response::MyLocks { waiting, .. } = t.my_locks_within(id(1), DEFAULT_MAX_FRAME) else {
                panic!()
            };
            assert_eq!(waiting[..2], [name(waits - 1), name(waits - 2)], "{waits} waits");
        }
    }

    /// Queues count against the frame: 40 locks with 1000 waiters each would be 40 x 16 KB;
    /// the listing is the first entries that fit whole, and the first is cut only when it alone
    /// does not fit.
    #[test]
    fn queues_inside_a_listing_count_against_the_frame() {
        let mut t = LockTable::new(1, TableLimits::default());
        let mut out = Vec::new();
        for session in 0..=1000 {
            t.connect_as(id(session), format!("10.0.0.1:{:05}", 10_000 + session));
        }
        for l in 0..40 {
            for session in 0..=1000 {
                lock(&mut t, session, &format!("q/{l:02}"), &mut out);
            }
        }
        // Each entry: 2 + 4 + 4 + 1000 x 16 = 16010 bytes; 65526 of room hold 4.
        let listing = t.locks_within("", 0, DEFAULT_MAX_FRAME);
        frame_len(&listing, DEFAULT_MAX_FRAME);
        let Response::Locks { locks, truncated } = listing else { panic!() };
        assert!(truncated);
        assert_eq!(locks.len(), 4);
        assert!(locks.iter().all(|l| l.queue.len() == QUEUE_REPORT_MAX), "whole entries");
        // A frame too small for one entry: that entry, its queue cut to fit.
        let listing = t.locks_within("q/3", 0, 4096);
        frame_len(&listing, 4096);
        let Response::Locks { locks, truncated } = listing else { panic!() };
        assert!(truncated);
        assert_eq!(locks.len(), 1);
        assert_eq!(locks[0].name, "q/30");
        // 4096 - 10 - 10 bytes hold 254 labels of 16 bytes.
        assert_eq!(locks[0].queue.len(), 254);
        assert_eq!(locks[0].queue[0], "10.0.0.1:10000", "holder first");
        // The same bound on every connection's lists.
        frame_len(&t.connections_within("", 0, 4096), 4096);
        frame_len(&t.my_locks_within(id(500), 64), 64);
    }

    /// Every listing fits every frame limit a server accepts, down to the smallest (64).
    #[test]
    fn every_listing_fits_every_frame_limit() {
        let mut t = LockTable::new(1, TableLimits::default());
        let mut out = Vec::new();
        for session in 0..20 {
            t.connect_as(id(session), format!("127.0.0.1:{}", 40_000 + session));
        }
        for i in 0..300usize {
            for session in 0..(i as u32 % 7) {
                lock(&mut t, session, &format!("{}-{i}", "é".repeat(i % 30)), &mut out);
            }
        }
        for max_frame in (64..3000).step_by(37).chain([DEFAULT_MAX_FRAME]) {
            frame_len(&t.locks_within("", 0, max_frame), max_frame);
            frame_len(&t.locks_within("é", 3, max_frame), max_frame);
            frame_len(&t.connections_within("", 0, max_frame), max_frame);
            frame_len(&t.my_locks_within(id(1), max_frame), max_frame);
            frame_len(&t.my_locks_matching(id(2), "", 0, max_frame), max_frame);
            frame_len(&t.top_within(10, 50, max_frame), max_frame);
        }
    }

    #[test]
    fn smallest_keeps_the_first_items_in_any_input_order() {
        let rising: Vec<u32> = (0..10_000).collect();
        let falling: Vec<u32> = (0..10_000).rev().collect();
        let mixed: Vec<u32> = (0..10_000).map(|i| (i * 7919) % 10_000).collect();
        for input in [rising, falling, mixed] {
            let (got, left_out) = smallest(input.iter().copied(), 100, Ord::cmp);
            assert_eq!(got, (0..100).collect::<Vec<_>>());
            assert!(left_out);
        }
    }

    #[test]
    fn smallest_says_whether_anything_was_left_out() {
        assert_eq!(smallest([3, 1, 2], 3, Ord::cmp), (vec![1, 2, 3], false));
        assert_eq!(smallest([3, 1, 2], 5, Ord::cmp), (vec![1, 2, 3], false));
        assert_eq!(smallest([3, 1, 2], 2, Ord::cmp), (vec![1, 2], true));
        assert_eq!(smallest([3, 1, 2], 0, Ord::cmp), (vec![], true));
        assert_eq!(smallest(Vec::<u8>::new(), 0, Ord::cmp), (vec![], false));
    }

    #[test]
    fn room_counts_down_and_refuses_what_does_not_fit() {
        let mut room = Room::new(20, 5);
        assert_eq!(room.left, 10);
        assert!(room.take(7));
        assert!(!room.take(4));
        assert!(room.take(3));
        assert_eq!(room.most(MIN_NAME_SIZE), 0);
    }
}
