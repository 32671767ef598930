//! Hierarchical timer wheel over integer millisecond ticks, modelled on tokio's
//! `runtime/time/wheel`: 6 levels of 64 slots, so level `L` slots span `64^L` ticks and the wheel
//! covers `2^36` ticks (about 2.2 years) before the top level wraps.
//!
//! The wheel never reads a clock: the caller hands in `now` (ticks since its own epoch), which
//! keeps tests literal and the lock table deterministic. Entries live in a slab and are threaded
//! through intrusive doubly-linked per-slot lists, so `insert` and `cancel` are O(1) and allocate
//! nothing once the slab has grown. Handles carry a generation so a handle to a fired or cancelled
//! timer never touches a later timer that reused the slab slot.
//!
//! Order: `poll` fires timers in deadline order, and timers with equal deadlines in insertion
//! order; timers inserted already overdue fire first, in insertion order.

use slab::Slab;

/// One tick is one millisecond since the caller's epoch.
pub type Tick = u64;

const LEVELS: usize = 6;
const SLOT_BITS: usize = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = SLOTS as u64 - 1;
/// Lists `0..DUE` are the wheel slots (`level * SLOTS + slot`). List `DUE` holds timers inserted
/// with a deadline already reached; they fire on the next poll.
const DUE: usize = LEVELS * SLOTS;
const LISTS: usize = DUE + 1;
/// End-of-list marker for the intrusive links.
const NIL: usize = usize::MAX;
/// Below this slab capacity a shrink is not worth its O(capacity) cost.
const SHRINK_FLOOR: usize = 1024;

/// Names one inserted timer. Stale handles (fired or cancelled timers) are harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerHandle {
    key: usize,
    generation: u32,
}

struct Entry<T> {
    value: T,
    deadline: Tick,
    /// Matches the handle's generation while this timer is alive.
    generation: u32,
    /// Which list (slot or `DUE`) the entry is linked into.
    list: u16,
    prev: usize,
    next: usize,
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: usize,
    tail: usize,
}

const EMPTY: List = List { head: NIL, tail: NIL };

/// A timer wheel holding values of type `T` until their deadline.
pub struct Wheel<T> {
    entries: Slab<Entry<T>>,
    lists: Box<[List; LISTS]>,
    /// Bit `s` of `occupied[L]` is set while slot `s` of level `L` is non-empty.
    occupied: [u64; LEVELS],
    /// The last `now` handed to `poll`: every timer with a deadline at or before it has fired,
    /// except those in the `DUE` list.
    elapsed: Tick,
    /// A lower bound of the deadlines in the `DUE` list, meaningful while it is non-empty.
    due_min: Tick,
    generation: u32,
}

impl<T> Default for Wheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Wheel<T> {
    /// An empty wheel at tick 0.
    pub fn new() -> Self {
        Wheel {
            entries: Slab::new(),
            lists: Box::new([EMPTY; LISTS]),
            occupied: [0; LEVELS],
            elapsed: 0,
            due_min: 0,
            generation: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What `poll_max` does to a wheel with no timer: its time moves on to `now`. The caller
    /// checked `is_empty` and skips the poll.
    #[inline]
    pub fn advance_empty(&mut self, now: Tick) {
        debug_assert!(self.entries.is_empty(), "advance_empty on a wheel with timers");
        self.elapsed = self.elapsed.max(now);
    }

    /// Schedules `value` for `deadline`. A deadline at or before the last polled tick fires on
    /// the next poll.
    pub fn insert(&mut self, deadline: Tick, value: T) -> TimerHandle {
        // A wrapping u32 generation can only be confused after 2^32 inserts that all land on the
        // same slab slot while the stale handle is kept: not a practical concern.
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let key = self.entries.insert(Entry { value, deadline, generation, list: 0, prev: NIL, next: NIL });
        self.link(key);
        TimerHandle { key, generation }
    }

    /// Removes a pending timer and returns its value; `None` if it already fired or was cancelled.
    pub fn cancel(&mut self, handle: TimerHandle) -> Option<T> {
        match self.entries.get(handle.key) {
            Some(entry) if entry.generation == handle.generation => {}
            _ => return None,
        }
        self.unlink(handle.key);
        self.entries.try_remove(handle.key).map(|entry| entry.value)
    }

    /// The deadline and value of a pending timer; `None` if it fired or was cancelled. For
    /// consistency checks of the wheel's owner.
    pub fn get(&self, handle: TimerHandle) -> Option<(Tick, &T)> {
        let entry = self.entries.get(handle.key).filter(|entry| entry.generation == handle.generation)?;
        Some((entry.deadline, &entry.value))
    }

    /// A tick at or before the earliest pending deadline; `None` when no timer is pending.
    /// Timers parked in a higher level report the start of their slot, which may be earlier than
    /// their deadline: polling then merely cascades them down.
    pub fn next_deadline(&self) -> Option<Tick> {
        if self.entries.is_empty() {
            return None;
        }
        if self.lists[DUE].head != NIL {
            return Some(self.due_min);
        }
        self.next_slot().map(|(_, start)| start)
    }

    /// Moves every value whose deadline is at or before `now` into `out`, in deadline order.
    /// A `now` earlier than a previous one is treated as that previous one.
    pub fn poll(&mut self, now: Tick, out: &mut Vec<T>) {
        self.poll_max(now, usize::MAX, out);
    }

    /// Like [`Wheel::poll`], but moves at most `max` values into `out`. Timers due and not moved
    /// stay pending, in order, in the due list: `next_deadline` then reports a tick at or
    /// before `now`, they stay cancellable, and the next poll hands them out first.
    ///
    /// Cost: the values moved, plus one cheap relink (no allocation) per timer that became due
    /// or cascaded, plus one step per `2^36` ticks of the jump for each occupied top-level slot
    /// (only timers more than `2^36` ticks away wrap around the top level).
    pub fn poll_max(&mut self, now: Tick, max: usize, out: &mut Vec<T>) {
        let now = now.max(self.elapsed);
        // The common case on an idle wheel: nothing to visit, only time moves on.
        if self.entries.is_empty() {
            self.elapsed = now;
            return;
        }
        // Timers already due (left over, or inserted overdue) go first. Slots are then visited
        // in order of their start tick, so a cascaded timer always lands in a slot not visited
        // yet, and timers fire in deadline order; once `max` have fired, the rest join the due
        // list, in the same order.
        let mut room = max;
        self.take_due(&mut room, out);
        while let Some((list, start)) = self.next_slot() {
            if start > now {
                break;
            }
            self.elapsed = start;
            self.cascade(list, &mut room, out);
        }
        self.elapsed = now;
    }

    /// Empties one slot list: timers due by `elapsed` fire while `room` lasts (and then join
    /// the due list), the others are re-linked relative to `elapsed`, which moves them to a
    /// lower level (or, for very far timers, a later rotation).
    fn cascade(&mut self, list: usize, room: &mut usize, out: &mut Vec<T>) {
        let mut key = self.lists[list].head;
        self.lists[list] = EMPTY;
        self.clear_occupied(list);
        while key != NIL {
            let Some(entry) = self.entries.get(key) else { return };
            let (next, due) = (entry.next, entry.deadline <= self.elapsed);
            if due && *room > 0 {
                *room -= 1;
                if let Some(entry) = self.entries.try_remove(key) {
                    out.push(entry.value);
                }
            } else {
                self.link(key);
            }
            key = next;
        }
    }

    /// Moves values from the head of the due list into `out` while `room` lasts.
    fn take_due(&mut self, room: &mut usize, out: &mut Vec<T>) {
        while *room > 0 {
            let key = self.lists[DUE].head;
            if key == NIL {
                return;
            }
            self.unlink(key);
            if let Some(entry) = self.entries.try_remove(key) {
                out.push(entry.value);
            }
            *room -= 1;
        }
    }

    /// Gives back slab memory once far fewer timers are pending than at the peak: at most a
    /// quarter of the capacity in use, and only above a floor, so a steady load never
    /// reallocates. Costs O(capacity) when it shrinks.
    pub fn shrink_if_sparse(&mut self) -> bool {
        let (len, capacity) = (self.entries.len(), self.entries.capacity());
        if capacity < SHRINK_FLOOR || len * 4 > capacity {
            return false;
        }
        self.entries.shrink_to_fit();
        self.entries.capacity() < capacity
    }

    /// The last tick polled (or advanced to): a wheel rebuilt from `pending_in_order` must be
    /// advanced here first, so overdue timers land in the due list again.
    pub fn elapsed(&self) -> Tick {
        self.elapsed
    }

    /// Every pending timer with its deadline, in the order polls would fire them: the due list
    /// first, in its order, then the rest by deadline, equal deadlines in insertion order. A
    /// fresh wheel advanced to `elapsed` that is given them in this order fires the same
    /// values in the same order (a snapshot rebuilds the table's wheel so). Equal deadlines
    /// always share one list (a later insert lands in a lower level only once the higher slot
    /// holding that deadline has cascaded), so a stable sort by deadline of the lists' entries
    /// keeps their insertion order. O(timers log timers); for snapshots, never the hot path.
    pub fn pending_in_order(&self) -> Vec<(Tick, &T)> {
        let mut due = Vec::new();
        let mut rest = Vec::new();
        for (list, head) in self.lists.iter().enumerate() {
            let into = if list == DUE { &mut due } else { &mut rest };
            let mut key = head.head;
            while let Some(entry) = self.entries.get(key) {
                into.push((entry.deadline, &entry.value));
                key = entry.next;
            }
        }
        rest.sort_by_key(|&(deadline, _)| deadline);
        due.extend(rest);
        due
    }

    /// Lowers the bound `next_deadline` reports for the due list to `at` (no effect on an
    /// empty due list, or above the bound it has): a wheel rebuilt from `pending_in_order`
    /// reports what the original did, whose bound had not risen as due timers fired.
    pub fn lower_due_bound(&mut self, at: Tick) {
        if self.lists[DUE].head != NIL {
            self.due_min = self.due_min.min(at);
        }
    }

    /// Slab capacity in timers, for memory tests and metrics.
    pub fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// The list a deadline belongs in, relative to `elapsed`.
    fn list_for(&self, deadline: Tick) -> usize {
        if deadline <= self.elapsed {
            return DUE;
        }
        // The level is the highest 6-bit digit where deadline and elapsed differ; `| SLOT_MASK`
        // puts differences in the lowest digit at level 0. Beyond 2^36 ticks, the top level.
        let differing = (self.elapsed ^ deadline) | SLOT_MASK;
        let highest_bit = (u64::BITS - 1 - differing.leading_zeros()) as usize;
        let level = (highest_bit / SLOT_BITS).min(LEVELS - 1);
        let slot = ((deadline >> (level * SLOT_BITS)) & SLOT_MASK) as usize;
        level * SLOTS + slot
    }

    /// Appends entry `key` to the tail of the list its deadline belongs in (FIFO keeps equal
    /// deadlines in insertion order).
    fn link(&mut self, key: usize) {
        let Some(deadline) = self.entries.get(key).map(|entry| entry.deadline) else { return };
        let list = self.list_for(deadline);
        let tail = self.lists[list].tail;
        if let Some(entry) = self.entries.get_mut(key) {
            entry.list = list as u16;
            entry.prev = tail;
            entry.next = NIL;
        }
        match self.entries.get_mut(tail) {
            Some(prev) => prev.next = key,
            None => self.lists[list].head = key,
        }
        self.lists[list].tail = key;
        if list == DUE {
            let was_empty = tail == NIL;
            self.due_min = if was_empty { deadline } else { self.due_min.min(deadline) };
        } else {
            self.occupied[list / SLOTS] |= 1 << (list % SLOTS);
        }
    }

    /// Detaches entry `key` from its list in O(1).
    fn unlink(&mut self, key: usize) {
        let Some(entry) = self.entries.get(key) else { return };
        let (list, prev, next) = (entry.list as usize, entry.prev, entry.next);
        match self.entries.get_mut(prev) {
            Some(p) => p.next = next,
            None => self.lists[list].head = next,
        }
        match self.entries.get_mut(next) {
            Some(n) => n.prev = prev,
            None => self.lists[list].tail = prev,
        }
        if self.lists[list].head == NIL {
            self.clear_occupied(list);
        }
    }

    fn clear_occupied(&mut self, list: usize) {
        if list < DUE {
            self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
        }
    }

    /// The occupied slot with the earliest start tick, over all levels: `(list, start)`.
    fn next_slot(&self) -> Option<(usize, Tick)> {
        // Ties cannot happen between levels; min_by_key would keep the lowest level anyway.
        (0..LEVELS).filter_map(|level| self.level_next(level)).min_by_key(|&(_, start)| start)
    }

    /// The next occupied slot of one level and the tick its span starts at. Slots after the
    /// current one start in this rotation; slots at or before it (only far timers parked in the
    /// top level) start in the next rotation.
    fn level_next(&self, level: usize) -> Option<(usize, Tick)> {
        let occupied = self.occupied[level];
        if occupied == 0 {
            return None;
        }
        let shift = level * SLOT_BITS;
        let slot_range = 1u64 << shift;
        let level_range = slot_range << SLOT_BITS;
        let current = (self.elapsed >> shift) & SLOT_MASK;
        let level_start = self.elapsed & !(level_range - 1);
        let later = occupied & u64::MAX.checked_shl(current as u32 + 1).unwrap_or(0);
        let (slot, rotation_start) = if later != 0 {
            (later.trailing_zeros() as usize, level_start)
        } else {
            (occupied.trailing_zeros() as usize, level_start.saturating_add(level_range))
        };
        let start = rotation_start.saturating_add(slot as u64 * slot_range);
        Some((level * SLOTS + slot, start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn poll(wheel: &mut Wheel<u32>, now: Tick) -> Vec<u32> {
        let mut out = Vec::new();
        wheel.poll(now, &mut out);
        out
    }

    #[test]
    fn fires_exactly_at_deadline() {
        let mut wheel = Wheel::new();
        wheel.insert(100, 1);
        wheel.insert(1, 2);
        wheel.insert(64, 3);
        assert_eq!(poll(&mut wheel, 0), Vec::<u32>::new());
        assert_eq!(poll(&mut wheel, 1), vec![2]);
        assert_eq!(poll(&mut wheel, 63), Vec::<u32>::new());
        assert_eq!(poll(&mut wheel, 64), vec![3]);
        assert_eq!(poll(&mut wheel, 99), Vec::<u32>::new());
        assert_eq!(poll(&mut wheel, 100), vec![1]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn far_deadlines_cascade_to_the_exact_tick() {
        let hour = 3_600_000;
        let day = 24 * hour;
        let deadlines = [hour, day, 30 * day, (1 << 36) - 1, 1 << 36, (1 << 36) + 5, (1 << 40) + 123];
        for (i, &deadline) in deadlines.iter().enumerate() {
            let mut wheel = Wheel::new();
            wheel.insert(deadline, i as u32);
            // Jump close, then walk tick by tick across the deadline.
            assert_eq!(poll(&mut wheel, deadline - 3), Vec::<u32>::new(), "deadline {deadline}");
            assert!(wheel.next_deadline().is_some_and(|d| d <= deadline));
            assert_eq!(poll(&mut wheel, deadline - 2), Vec::<u32>::new());
            assert_eq!(poll(&mut wheel, deadline - 1), Vec::<u32>::new());
            assert_eq!(poll(&mut wheel, deadline), vec![i as u32], "deadline {deadline}");
        }
    }

    #[test]
    fn far_deadline_reached_by_following_next_deadline() {
        // A server sleeps until next_deadline and polls: it must reach the timer, never overshoot.
        let deadline = (1u64 << 37) + 977;
        let mut wheel = Wheel::new();
        wheel.insert(deadline, 7);
        let mut wakeups = 0;
        while let Some(at) = wheel.next_deadline() {
            assert!(at <= deadline);
            let fired = poll(&mut wheel, at);
            assert_eq!(fired.is_empty(), at < deadline);
            wakeups += 1;
        }
        assert!(wakeups < 20, "{wakeups} wakeups");
    }

    #[test]
    fn deadline_already_reached_fires_on_next_poll() {
        let mut wheel = Wheel::new();
        poll(&mut wheel, 500);
        wheel.insert(10, 1);
        wheel.insert(500, 2);
        wheel.insert(501, 3);
        assert_eq!(wheel.next_deadline(), Some(10));
        assert_eq!(poll(&mut wheel, 500), vec![1, 2]);
        assert_eq!(poll(&mut wheel, 501), vec![3]);
    }

    #[test]
    fn equal_deadlines_fire_in_insertion_order() {
        let mut wheel = Wheel::new();
        wheel.insert(4_000, 1);
        poll(&mut wheel, 3_990);
        wheel.insert(4_000, 2);
        wheel.insert(3_999, 0);
        assert_eq!(poll(&mut wheel, 10_000), vec![0, 1, 2]);
    }

    #[test]
    fn cancel_removes_once_and_ignores_stale_handles() {
        let mut wheel = Wheel::new();
        let first = wheel.insert(50, 1);
        assert_eq!(wheel.cancel(first), Some(1));
        assert_eq!(wheel.cancel(first), None);
        // The slab slot is reused by the next insert: the old handle must not remove it.
        let second = wheel.insert(60, 2);
        assert_ne!(first, second);
        assert_eq!(wheel.cancel(first), None);
        assert_eq!(wheel.len(), 1);
        assert_eq!(poll(&mut wheel, 60), vec![2]);
        assert_eq!(wheel.cancel(second), None, "a fired timer cannot be cancelled");
    }

    #[test]
    fn cancel_from_the_middle_of_a_slot() {
        let mut wheel = Wheel::new();
        let handles: Vec<_> = (0..5).map(|i| wheel.insert(70, i)).collect();
        assert_eq!(wheel.cancel(handles[2]), Some(2));
        assert_eq!(wheel.cancel(handles[0]), Some(0));
        assert_eq!(wheel.cancel(handles[4]), Some(4));
        assert_eq!(poll(&mut wheel, 70), vec![1, 3]);
    }

    #[test]
    fn large_jump_fires_everything_in_order() {
        let mut wheel = Wheel::new();
        let deadlines = [5u64, 1 << 20, 64, 1 << 33, 4_095, 1 << 12, 7 << 30];
        for (i, &d) in deadlines.iter().enumerate() {
            wheel.insert(d, i as u32);
        }
        wheel.insert(1 << 34, 99);
        assert_eq!(poll(&mut wheel, 1 << 33), vec![0, 2, 4, 5, 1, 6, 3]);
        assert_eq!(wheel.len(), 1);
        assert_eq!(poll(&mut wheel, u64::MAX), vec![99]);
    }

    #[test]
    fn poll_max_hands_out_a_bounded_batch_in_order_and_keeps_the_rest_due() {
        let mut wheel = Wheel::new();
        let handles: Vec<_> = (0..10).map(|i| wheel.insert(100 + (i % 2), i)).collect();
        wheel.insert(500, 99);
        let mut out = Vec::new();
        wheel.poll_max(200, 3, &mut out);
        assert_eq!(out, vec![0, 2, 4], "deadline 100 first, in insertion order");
        assert!(wheel.next_deadline().is_some_and(|d| d <= 200), "the rest is due now");
        // A due timer not handed out yet can still be cancelled.
        assert_eq!(wheel.cancel(handles[6]), Some(6));
        wheel.insert(150, 42);
        out.clear();
        wheel.poll_max(200, 4, &mut out);
        assert_eq!(out, vec![8, 1, 3, 5]);
        out.clear();
        wheel.poll_max(200, 100, &mut out);
        assert_eq!(out, vec![7, 9, 42], "a timer inserted overdue fires after those already due");
        assert_eq!(wheel.len(), 1);
        assert!(wheel.next_deadline().is_some_and(|d| d > 200 && d <= 500));
    }

    #[test]
    fn shrinks_only_when_far_below_the_peak() {
        let mut wheel = Wheel::new();
        let handles: Vec<_> = (0..5_000).map(|i| wheel.insert(10 + i, i as u32)).collect();
        assert!(!wheel.shrink_if_sparse(), "full: nothing to give back");
        for h in handles {
            wheel.cancel(h);
        }
        assert!(wheel.shrink_if_sparse());
        assert!(wheel.capacity() < 1_024, "capacity {}", wheel.capacity());
        assert!(!wheel.shrink_if_sparse());
    }

    #[test]
    fn next_deadline_bounds() {
        let mut wheel = Wheel::new();
        assert_eq!(wheel.next_deadline(), None);
        let far = wheel.insert(1_000_000, 1);
        assert!(wheel.next_deadline().is_some_and(|d| d <= 1_000_000));
        wheel.insert(3, 2);
        assert_eq!(wheel.next_deadline(), Some(3));
        assert_eq!(poll(&mut wheel, 3), vec![2]);
        wheel.cancel(far);
        assert_eq!(wheel.next_deadline(), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Cancel(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let delta = prop_oneof![0..70u64, 0..5_000u64, 0..(1u64 << 38), Just(1u64 << 36)];
        let jump = prop_oneof![0..70u64, 0..5_000u64, 0..(1u64 << 37)];
        prop_oneof![
            4 => delta.prop_map(Op::Insert),
            2 => any::<usize>().prop_map(Op::Cancel),
            3 => jump.prop_map(Op::Advance),
        ]
    }

    /// Reference model: pending timers ordered by (fire key, insertion sequence). Overdue timers
    /// fire as if due at the tick they were inserted, matching the wheel's documented order.
    struct Model {
        now: Tick,
        pending: BTreeMap<(Tick, u32), Tick>,
        handles: Vec<(TimerHandle, (Tick, u32))>,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn matches_a_sorted_model(ops in prop::collection::vec(op(), 1..120)) {
            let mut wheel = Wheel::new();
            let mut model = Model { now: 0, pending: BTreeMap::new(), handles: Vec::new() };
            for (seq, op) in ops.into_iter().enumerate() {
                let seq = seq as u32;
                match op {
                    Op::Insert(delta) => {
                        // Some deadlines land in the past (delta below 50 ticks back).
                        let deadline = (model.now + delta).saturating_sub(50);
                        let handle = wheel.insert(deadline, seq);
                        let key = (deadline.max(model.now), seq);
                        model.pending.insert(key, deadline);
                        model.handles.push((handle, key));
                    }
                    Op::Cancel(i) if !model.handles.is_empty() => {
                        let (handle, key) = model.handles[i % model.handles.len()];
                        let expected = model.pending.remove(&key).map(|_| key.1);
                        prop_assert_eq!(wheel.cancel(handle), expected);
                    }
                    Op::Cancel(_) => {}
                    Op::Advance(jump) => {
                        model.now += jump;
                        let later = model.pending.split_off(&(model.now + 1, 0));
                        let fired: Vec<u32> = model.pending.keys().map(|k| k.1).collect();
                        model.pending = later;
                        let mut out = Vec::new();
                        wheel.poll(model.now, &mut out);
                        prop_assert_eq!(out, fired);
                    }
                }
                prop_assert_eq!(wheel.len(), model.pending.len());
                let earliest = model.pending.values().min().copied();
                match (wheel.next_deadline(), earliest) {
                    (None, None) => {}
                    (Some(bound), Some(min)) => prop_assert!(bound <= min, "{} > {}", bound, min),
                    (got, want) => prop_assert!(false, "next_deadline {:?}, earliest {:?}", got, want),
                }
            }
        }
    }
}
