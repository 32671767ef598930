//! The table's self-check for tests: the redundant structures (the wheel beside the waiters'
//! deadlines, the per-connection sets beside the locks, the gauges) agree. O(locks + waiters);
//! never called by the server.

use super::holders::Mode;
use super::table::{LockTable, Timer};

impl LockTable {
    /// Checks that every waiter with a deadline has a live wait timer for exactly that deadline
    /// and no waiter without one has a timer (so the wheel could be rebuilt from the waiters),
    /// that the wheel holds no other timer, that holders and waiters are known to their
    /// session's state and the other way round, that no lock admits a second exclusive holder,
    /// and that the waiter gauge is right. The first broken invariant is returned as text.
    pub fn check_invariants(&self) -> Result<(), String> {
        let (mut waiters, mut timed) = (0, 0);
        for (key, lock) in self.store.iter_keyed() {
            if lock.holders.admits(Mode::Exclusive) {
                return Err(format!("lock {:?} admits an exclusive request while held", lock.name));
            }
            for holder in lock.holders.iter() {
                let known = self.sessions.get(&holder.session).is_some_and(|state| state.held.contains(&key));
                if !known {
                    return Err(format!("holder {:?} of {:?} does not list it", holder.session, lock.name));
                }
            }
            for waiter in &lock.waiters {
                waiters += 1;
                if !self.sessions.get(&waiter.session).is_some_and(|state| state.waits_on(key)) {
                    return Err(format!("waiter {:?} of {:?} does not list it", waiter.session, lock.name));
                }
                let expected =
                    Timer::Wait { lock: key, session: waiter.session, request_id: waiter.request_id };
                match (waiter.deadline, waiter.timer.and_then(|t| self.timers.get(t))) {
                    (None, None) if waiter.timer.is_none() => {}
                    (Some(deadline), Some((at, timer))) if at == deadline && *timer == expected => timed += 1,
                    (deadline, timer) => {
                        return Err(format!(
                            "waiter {:?} of {:?}: deadline {deadline:?}, timer {timer:?}",
                            waiter.session, lock.name
                        ))
                    }
                }
            }
        }
        for (session, state) in &self.sessions {
            let held =
                |key: &u32| self.store.get(*key).is_some_and(|lock| lock.holders.of(*session).is_some());
            if let Some(key) = state.held.iter().find(|key| !held(key)) {
                return Err(format!("{session:?} lists lock {key} as held, but does not hold it"));
            }
            let waits = |key: u32| {
                self.store.get(key).is_some_and(|lock| lock.waiters.iter().any(|w| w.session == *session))
            };
            if let Some((key, _)) = state.waits().find(|&(key, _)| !waits(key)) {
                return Err(format!("{session:?} lists a wait on lock {key} that is not queued"));
            }
        }
        if timed != self.timers.len() {
            return Err(format!("{} wait timers for {timed} waiters with a deadline", self.timers.len()));
        }
        if waiters != self.waiters {
            return Err(format!("waiter gauge {} for {waiters} waiters", self.waiters));
        }
        Ok(())
    }
}
