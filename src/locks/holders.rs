//! Who holds a lock: a holder set with the modes it admits (issue 13, PROTOCOL.md §6).
//!
//! Every grant has a weight and every lock a capacity, so one check decides admission for all
//! three kinds of request: on a read/write lock (capacity `u32::MAX`) an exclusive grant weighs
//! the whole capacity and a shared one weighs 1, so a writer is admitted only by an empty set and
//! a reader by any set without a writer; on a semaphore of limit N (capacity N) a grant weighs
//! its permits. The first grant is kept inline, so an exclusive lock allocates nothing for its
//! holder; further (shared or semaphore) grants spill into a vector that exists only for them.

use super::store::NO_LOCK;
use super::SessionId;
use crate::wheel::Tick;

/// How a request wants to hold a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Alone: the only mode of PROTOCOL.md v1.
    #[default]
    Exclusive,
    /// Beside other shared holders, never beside an exclusive one.
    Shared,
    /// `count` permits of a counting semaphore of `limit` permits; `1 <= count <= limit`, and
    /// every user of a name must name the same `limit`.
    Permits { count: u32, limit: u32 },
}

impl Mode {
    /// The share of a lock's capacity a grant in this mode takes.
    pub(super) fn weight(self) -> u32 {
        match self {
            Mode::Exclusive => u32::MAX,
            Mode::Shared => 1,
            Mode::Permits { count, .. } => count,
        }
    }

    /// The semaphore limit this mode names; 0 for the read/write modes.
    pub(super) fn limit(self) -> u32 {
        match self {
            Mode::Permits { limit, .. } => limit,
            Mode::Exclusive | Mode::Shared => 0,
        }
    }
}

/// One grant of a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Holder {
    pub session: SessionId,
    /// The fencing token of this grant.
    pub token: u64,
    /// When this grant was made.
    pub since: Tick,
    /// Its share of the capacity (see [`Mode::weight`]).
    pub weight: u32,
    /// It has a lease or a hold budget, kept out of line under its token (`lease`); in what
    /// would be padding, so a plain grant pays one test of it when it ends.
    pub extra: bool,
    /// Links of the holder's list of holds in acquisition order (`NO_LOCK` at either end), so
    /// RESET and detach release in token order, a bounded batch at a time, without a sort. Per
    /// grant, not per lock: each holder of a shared lock is in its own session's list.
    pub held_prev: u32,
    pub held_next: u32,
}

impl Holder {
    /// A grant not yet linked into its session's list of holds.
    pub fn new(session: SessionId, token: u64, since: Tick, weight: u32) -> Holder {
        Holder { session, token, since, weight, extra: false, held_prev: NO_LOCK, held_next: NO_LOCK }
    }
}

/// The holders of one lock, in grant (token) order. Empty only in passing: a lock whose last
/// holder let go either grants its first waiter at once or is removed.
#[derive(Debug)]
pub(super) struct Holders {
    /// The oldest grant; stale while `used == 0`.
    first: Holder,
    /// The younger grants of a shared lock or a semaphore; `Vec::new` allocates nothing.
    more: Vec<Holder>,
    /// The semaphore limit, or 0 for a read/write lock.
    limit: u32,
    /// The sum of the weights of the grants: 0 exactly when there is none, since every weight
    /// is at least 1.
    used: u32,
}

/// Vectors of further holders above this capacity are given back once they empty.
const MORE_SHRINK_FLOOR: usize = 8;

impl Holders {
    /// The holders of a lock just granted to `holder`; `limit` as in [`Mode::limit`].
    pub fn new(holder: Holder, limit: u32) -> Self {
        Holders { first: holder, more: Vec::new(), limit, used: holder.weight }
    }

    fn capacity(&self) -> u32 {
        if self.limit == 0 {
            u32::MAX
        } else {
            self.limit
        }
    }

    /// Whether this lock can be asked for in `mode` at all: a read/write lock in the
    /// exclusive or shared mode, a semaphore in permits of the same limit.
    pub fn kind_matches(&self, mode: Mode) -> bool {
        mode.limit() == self.limit
    }

    /// Whether a grant of `weight` fits beside the current holders. The queue decides whether
    /// it may have it (no request is granted past an earlier waiter).
    pub fn admits(&self, weight: u32) -> bool {
        u64::from(self.used) + u64::from(weight) <= u64::from(self.capacity())
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// The permits in use of a semaphore; on a read/write lock the number of shared grants, or
    /// `u32::MAX` while it is held exclusively.
    pub fn used(&self) -> u32 {
        self.used
    }

    /// The semaphore limit, or 0 for a read/write lock.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The mode a grant of this lock is held in.
    pub fn mode_of(&self, holder: &Holder) -> Mode {
        match (self.limit, holder.weight) {
            (0, u32::MAX) => Mode::Exclusive,
            (0, _) => Mode::Shared,
            (limit, count) => Mode::Permits { count, limit },
        }
    }

    /// The grant `session` holds, if any. O(holders): the first grant is looked at first, so an
    /// exclusive lock costs one comparison.
    pub fn of(&self, session: SessionId) -> Option<&Holder> {
        self.iter().find(|h| h.session == session)
    }

    pub fn of_mut(&mut self, session: SessionId) -> Option<&mut Holder> {
        if self.used == 0 {
            return None;
        }
        if self.first.session == session {
            return Some(&mut self.first);
        }
        self.more.iter_mut().find(|h| h.session == session)
    }

    /// The oldest grant: the one listings show first. Meaningless while the set is empty, which
    /// is never the case outside a transition.
    pub fn first(&self) -> &Holder {
        &self.first
    }

    /// The grants in token order.
    pub fn iter(&self) -> impl Iterator<Item = &Holder> {
        let first = (self.used != 0).then_some(&self.first);
        first.into_iter().chain(self.more.iter())
    }

    pub fn len(&self) -> usize {
        usize::from(self.used != 0) + self.more.len()
    }

    /// Adds a grant the caller has checked `admits` (its token is above every other's).
    pub fn grant(&mut self, holder: Holder) {
        if self.used == 0 {
            self.first = holder;
        } else {
            self.more.push(holder);
        }
        self.used = self.used.saturating_add(holder.weight);
    }

    /// Takes the grant of `session` out, keeping the others in token order. O(holders).
    pub fn remove(&mut self, session: SessionId) -> Option<Holder> {
        if self.used == 0 {
            return None;
        }
        if self.first.session == session && self.more.is_empty() {
            // The only grant (every exclusive lock): nothing moves, and an empty `more` has
            // nothing to give back.
            self.used = 0;
            return Some(self.first);
        }
        let holder = if self.first.session == session {
            let holder = self.first;
            if !self.more.is_empty() {
                self.first = self.more.remove(0);
            }
            holder
        } else {
            let pos = self.more.iter().position(|h| h.session == session)?;
            self.more.remove(pos)
        };
        self.used -= holder.weight;
        if self.more.is_empty() && self.more.capacity() > MORE_SHRINK_FLOOR {
            self.more = Vec::new();
        }
        Some(holder)
    }

    /// Moves the oldest grants with tokens below `below` into `into`, at most `max`, in token
    /// order: one shift of the younger grants for the whole batch, not one per grant, so a
    /// REVOKE step costs O(holders + max), not O(holders x max).
    pub fn take_oldest(&mut self, below: u64, max: usize, into: &mut Vec<Holder>) {
        if self.used == 0 || max == 0 || self.first.token >= below {
            return;
        }
        let n = self.more.iter().take(max - 1).take_while(|h| h.token < below).count();
        into.push(self.first);
        self.used -= self.first.weight;
        let end = (n + 1).min(self.more.len());
        for (i, holder) in self.more.drain(..end).enumerate() {
            if i < n {
                self.used -= holder.weight;
                into.push(holder);
            } else {
                // The first grant that stays moves to the inline place.
                self.first = holder;
            }
        }
        if self.more.is_empty() && self.more.capacity() > MORE_SHRINK_FLOOR {
            self.more = Vec::new();
        }
    }

    /// Turns the exclusive grant of `session` into a shared one, keeping its token; false if
    /// `session` holds no exclusive grant.
    pub fn downgrade(&mut self, session: SessionId) -> bool {
        if self.limit != 0 || self.used != u32::MAX || self.first.session != session {
            return false;
        }
        self.first.weight = 1;
        self.used = 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: u32 = u32::MAX;

    fn holder(session: u64, token: u64, weight: u32) -> Holder {
        Holder::new(SessionId(session), token, token, weight)
    }

    #[test]
    fn an_exclusive_hold_admits_no_one_else() {
        let (a, b) = (SessionId(1), SessionId(2));
        let mut holders = Holders::new(holder(1, 7, X), 0);
        assert!(!holders.admits(Mode::Exclusive.weight()));
        assert!(!holders.admits(Mode::Shared.weight()));
        assert_eq!(holders.of(a).map(|h| h.token), Some(7));
        assert_eq!(holders.of(b), None);
        assert_eq!(holders.mode_of(holders.first()), Mode::Exclusive);
        assert_eq!(holders.remove(a).map(|h| h.token), Some(7));
        assert!(holders.is_empty());
        assert_eq!(holders.iter().count(), 0);
        assert!(holders.admits(X));
        holders.grant(holder(2, 8, X));
        assert_eq!(holders.of(a), None);
        assert_eq!(holders.first().token, 8);
        assert_eq!(holders.iter().count(), 1);
        assert!(!holders.admits(X));
    }

    #[test]
    fn shared_holds_admit_readers_but_no_writer() {
        let mut holders = Holders::new(holder(1, 1, 1), 0);
        assert!(holders.admits(1));
        assert!(!holders.admits(X));
        holders.grant(holder(2, 2, 1));
        holders.grant(holder(3, 3, 1));
        assert_eq!(holders.used(), 3);
        assert_eq!(holders.remove(SessionId(1)).map(|h| h.token), Some(1));
        let tokens: Vec<u64> = holders.iter().map(|h| h.token).collect();
        assert_eq!(tokens, [2, 3], "token order survives the first grant leaving");
        assert_eq!(holders.mode_of(holders.first()), Mode::Shared);
        assert_eq!(holders.remove(SessionId(9)), None);
        holders.remove(SessionId(3));
        holders.remove(SessionId(2));
        assert!(holders.is_empty() && holders.admits(X));
    }

    #[test]
    fn permits_are_counted_against_the_limit() {
        let mut holders = Holders::new(holder(1, 1, 2), 5);
        assert!(holders.kind_matches(Mode::Permits { count: 1, limit: 5 }));
        assert!(!holders.kind_matches(Mode::Permits { count: 1, limit: 4 }));
        assert!(!holders.kind_matches(Mode::Exclusive));
        assert!(holders.admits(3));
        assert!(!holders.admits(4));
        holders.grant(holder(2, 2, 3));
        assert!(!holders.admits(1));
        assert_eq!(holders.mode_of(holders.first()), Mode::Permits { count: 2, limit: 5 });
        holders.remove(SessionId(1));
        assert_eq!(holders.used(), 3);
        assert!(holders.admits(2) && !holders.admits(3));
    }

    #[test]
    fn the_oldest_grants_below_a_token_are_taken_in_order() {
        let mut holders = Holders::new(holder(1, 1, 1), 0);
        for s in 2..=5 {
            holders.grant(holder(s, s, 1));
        }
        let mut taken = Vec::new();
        holders.take_oldest(5, 2, &mut taken);
        assert_eq!(taken.iter().map(|h| h.token).collect::<Vec<_>>(), [1, 2], "at most max");
        assert_eq!((holders.used(), holders.first().token), (3, 3));
        taken.clear();
        holders.take_oldest(5, 10, &mut taken);
        assert_eq!(taken.iter().map(|h| h.token).collect::<Vec<_>>(), [3, 4], "none from `below` on");
        assert_eq!(holders.iter().map(|h| h.token).collect::<Vec<_>>(), [5]);
        taken.clear();
        holders.take_oldest(9, 10, &mut taken);
        assert!(holders.is_empty() && taken.len() == 1);
        let mut exclusive = Holders::new(holder(1, 7, X), 0);
        exclusive.take_oldest(8, 1, &mut taken);
        assert!(exclusive.is_empty() && exclusive.admits(X));
    }

    #[test]
    fn only_an_exclusive_holder_downgrades() {
        let mut holders = Holders::new(holder(1, 1, 1), 0);
        assert!(!holders.downgrade(SessionId(1)), "already shared");
        let mut holders2 = Holders::new(holder(1, 1, X), 0);
        assert!(!holders2.downgrade(SessionId(2)));
        assert!(holders2.downgrade(SessionId(1)));
        assert_eq!(holders2.first().token, 1, "a downgrade keeps the token");
        assert!(holders2.admits(1) && !holders2.admits(X));
        holders.grant(holder(2, 2, 1));
        assert!(!holders.downgrade(SessionId(2)));
    }
}
