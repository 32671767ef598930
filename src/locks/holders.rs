//! Who holds a lock: a holder set with the modes it admits. Today every hold is exclusive, so
//! the set is one inline holder (an uncontended lock allocates nothing for it); shared modes
//! (issue 13) would spill further holders out of line and make `admits` look at the mode.

use super::SessionId;
use crate::wheel::Tick;

/// How a request wants to hold a lock. Only `Exclusive` exists on the wire today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Exclusive,
}

/// One grant of a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Holder {
    pub session: SessionId,
    /// The fencing token of this grant.
    pub token: u64,
    /// When this grant was made.
    pub since: Tick,
}

/// The holders of one lock; never empty, since a lock without a holder is removed.
#[derive(Debug)]
pub(super) struct Holders {
    only: Holder,
}

impl Holders {
    pub fn new(holder: Holder) -> Self {
        Holders { only: holder }
    }

    /// Whether a request in `mode` could be granted beside the current holders. An exclusive
    /// request is admitted by no holder at all, so with one non-empty set of exclusive holds the
    /// answer is always no; the queue decides who comes next.
    pub fn admits(&self, mode: Mode) -> bool {
        match mode {
            Mode::Exclusive => false,
        }
    }

    /// The grant `session` holds, if any.
    pub fn of(&self, session: SessionId) -> Option<&Holder> {
        (self.only.session == session).then_some(&self.only)
    }

    /// The first grant: the one listings show first and the one that set `since`.
    pub fn first(&self) -> &Holder {
        &self.only
    }

    pub fn iter(&self) -> impl Iterator<Item = &Holder> {
        std::iter::once(&self.only)
    }

    /// The sole (exclusive) holder let go and `next` takes over.
    pub fn hand_to(&mut self, next: Holder) {
        self.only = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exclusive_hold_admits_no_one_else() {
        let a = SessionId(1);
        let b = SessionId(2);
        let mut holders = Holders::new(Holder { session: a, token: 7, since: 3 });
        assert!(!holders.admits(Mode::Exclusive));
        assert_eq!(holders.of(a).map(|h| h.token), Some(7));
        assert_eq!(holders.of(b), None);
        holders.hand_to(Holder { session: b, token: 8, since: 9 });
        assert_eq!(holders.of(a), None);
        assert_eq!(holders.first(), &Holder { session: b, token: 8, since: 9 });
        assert_eq!(holders.iter().count(), 1);
        assert!(!holders.admits(Mode::Exclusive));
    }
}
