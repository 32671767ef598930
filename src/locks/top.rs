//! The TOP view for monitoring: the locks held longest and the locks with the most waiters.
//! It passes over every lock once per list (O(locks) time, O(n) memory, selection rather than a
//! sort); it serves operators and scrapes, never the lock path. Its frame is built within
//! `max_frame` like every listing: entry sizes are known before the entries are built.

use std::cmp::Reverse;

use super::listing::smallest;
use super::store::Lock;
use super::LockTable;
use crate::protocol::{str16_size, Response, TopEntry, DEFAULT_MAX_FRAME, LIST_COUNT_SIZE};
use crate::wheel::Tick;

/// Entries per list when the request asks for 0, and the most it may ask for.
pub const TOP_DEFAULT: u32 = 10;
pub const TOP_MAX: u32 = 1000;

/// Opcode and request id, then the two list counts: what a TOP_LIST frame holds besides entries.
const TOP_FIXED: usize = 5 + 2 * LIST_COUNT_SIZE;

impl LockTable {
    /// TOP within the default frame limit; see [`LockTable::top_within`].
    pub fn top(&self, now: Tick, n: u32) -> Response {
        self.top_within(now, n, DEFAULT_MAX_FRAME)
    }

    /// Response::Top with at most `n` entries per list (0 = default), as of `now`, in a frame
    /// of at most `max_frame`: when both lists do not fit, each gets at least half the room.
    pub fn top_within(&self, now: Tick, n: u32, max_frame: u32) -> Response {
        let n = if n == 0 { TOP_DEFAULT } else { n.min(TOP_MAX) } as usize;
        let (held, _) = smallest(self.store.iter().filter(|l| !l.holders.is_empty()), n, |a, b| {
            (a.holders.first().since, &*a.name).cmp(&(b.holders.first().since, &*b.name))
        });
        let deep = self.store.iter().filter(|l| !l.waiters.is_empty());
        let (deep, _) = smallest(deep, n, |a, b| {
            (Reverse(a.waiters.len()), &*a.name).cmp(&(Reverse(b.waiters.len()), &*b.name))
        });
        let room = (max_frame as usize).saturating_sub(TOP_FIXED);
        let (held_fit, deep_fit) = split_room(&self.entry_sizes(&held), &self.entry_sizes(&deep), room);
        Response::Top {
            longest_held: held[..held_fit].iter().map(|l| self.top_entry(l, now)).collect(),
            deepest_queues: deep[..deep_fit].iter().map(|l| self.top_entry(l, now)).collect(),
        }
    }

    /// The encoded size of each lock's TOP_LIST entry: name, holder label, held_ms, waiters.
    fn entry_sizes(&self, locks: &[&Lock]) -> Vec<usize> {
        locks
            .iter()
            .map(|l| str16_size(&l.name) + str16_size(self.label(l.holders.first().session)) + 8 + 4)
            .collect()
    }

    fn top_entry(&self, lock: &Lock, now: Tick) -> TopEntry {
        TopEntry {
            name: lock.name.to_string(),
            holder: self.label(lock.holders.first().session).to_owned(),
            held_ms: now.saturating_sub(lock.holders.first().since),
            waiters: lock.waiters.len() as u32,
        }
    }
}

/// How many entries of two lists fit in `room` bytes, given each entry's size: all of both if
/// they fit; otherwise a list that needs at most half the room gets it all and the other the
/// rest, else each gets half (and the second what the first left).
fn split_room(a: &[usize], b: &[usize], room: usize) -> (usize, usize) {
    let (total_a, total_b): (usize, usize) = (a.iter().sum(), b.iter().sum());
    if total_a + total_b <= room {
        return (a.len(), b.len());
    }
    let half = room / 2;
    if total_b <= half {
        return (fitting(a, room - total_b).0, b.len());
    }
    let (fit_a, used_a) = fitting(a, if total_a <= half { total_a } else { half });
    (fit_a, fitting(b, room - used_a).0)
}

/// How many leading entries fit in `room` bytes, and the bytes they take.
fn fitting(sizes: &[usize], room: usize) -> (usize, usize) {
    let mut used = 0;
    for (i, &size) in sizes.iter().enumerate() {
        if used + size > room {
            return (i, used);
        }
        used += size;
    }
    (sizes.len(), used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::tests::Drive;
    use crate::locks::{SessionId, TableLimits};
    use crate::protocol::LockRequest;

    fn req(name: &str) -> LockRequest<'_> {
        LockRequest { name, timeout_ms: None, queue_max: None }
    }

    #[test]
    fn oldest_holds_and_deepest_queues_first() {
        let mut t = LockTable::new(1, TableLimits::default());
        let (a, b, c) = (SessionId(0), SessionId(1), SessionId(2));
        t.connect_as(a, "A".into());
        t.connect_as(b, "B".into());
        t.connect_as(c, "C".into());
        let mut out = Vec::new();
        t.lock_req(10, a, 1, &req("young"), &mut out);
        t.lock_req(5, b, 2, &req("old"), &mut out);
        t.lock_req(20, b, 3, &req("young"), &mut out);
        t.lock_req(20, c, 4, &req("young"), &mut out);
        t.lock_req(20, a, 5, &req("old"), &mut out);
        let Response::Top { longest_held, deepest_queues } = t.top(100, 1) else { panic!() };
        assert_eq!(
            longest_held,
            vec![TopEntry { name: "old".into(), holder: "B".into(), held_ms: 95, waiters: 1 }]
        );
        assert_eq!(
            deepest_queues,
            vec![TopEntry { name: "young".into(), holder: "A".into(), held_ms: 90, waiters: 2 }]
        );
    }

    #[test]
    fn the_room_is_shared_between_the_two_lists() {
        assert_eq!(split_room(&[10, 10], &[10], 100), (2, 1), "both fit");
        assert_eq!(
            split_room(&[10; 10], &[10, 10], 100),
            (8, 2),
            "the short list whole, the rest to the long one"
        );
        assert_eq!(split_room(&[10, 10], &[10; 10], 100), (2, 8));
        assert_eq!(split_room(&[10; 10], &[10; 10], 100), (5, 5), "half each");
        assert_eq!(
            split_room(&[10; 10], &[10; 10], 15),
            (0, 1),
            "what the first cannot use goes to the second"
        );
    }

    #[test]
    fn a_top_of_long_names_fits_its_frame() {
        let mut t = LockTable::new(1, TableLimits::default());
        let a = SessionId(0);
        t.connect_as(a, "A".into());
        let mut out = Vec::new();
        for i in 0..200 {
            let name = format!("{i:04}{}", "x".repeat(1000));
            t.lock_req(i, a, 1, &req(&name), &mut out);
        }
        let response = t.top_within(1000, 200, 8192);
        let mut bytes = Vec::new();
        response.encode(1, &mut bytes);
        assert!(bytes.len() <= 8192 + 4, "{} bytes", bytes.len());
        let Response::Top { longest_held, deepest_queues } = response else { panic!() };
        assert_eq!(longest_held.len(), 8, "8192 - 13 bytes hold 8 entries of 1021 bytes");
        assert_eq!(longest_held[0].name, format!("0000{}", "x".repeat(1000)), "oldest first");
        assert!(deepest_queues.is_empty());
    }
}
