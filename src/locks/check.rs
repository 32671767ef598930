//! The table's self-check for tests: the redundant structures (the wheel beside the waiters'
//! deadlines, the per-connection sets and lists beside the grants, the gauges) agree, and the
//! model's invariants hold at rest. O(locks + waiters + holds x holders); never called by the
//! server.

use super::holders::Mode;
use super::store::{Lock, NO_LOCK};
use super::table::{LockTable, Timer};
use super::SessionId;

impl LockTable {
    /// Checks that every waiter with a deadline has a live wait timer for exactly that deadline
    /// and no waiter without one has a timer (so the wheel could be rebuilt from the waiters),
    /// that the wheel holds no other timer, that holders and waiters are known to their
    /// session's state and the other way round, that each lock's grants fit (never an exclusive
    /// holder beside another, never more permits than the limit), that no waiter could be
    /// granted at rest (FIFO), that tokens increase in grant order, that each session's list
    /// of holds links exactly its grants, and that the waiter gauge is right. The first broken
    /// invariant is returned as text.
    pub fn check_invariants(&self) -> Result<(), String> {
        let (mut waiters, mut timed) = (0, 0);
        let mut grants: hashbrown::HashMap<SessionId, usize> = hashbrown::HashMap::new();
        for (key, lock) in self.store.iter_keyed() {
            self.check_grants(lock)?;
            for holder in lock.holders.iter() {
                if !self.sessions.contains_key(&holder.session) {
                    return Err(format!("holder {:?} of {:?} does not list it", holder.session, lock.name));
                }
                *grants.entry(holder.session).or_default() += 1;
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
            let waits = |key: u32| {
                self.store.get(key).is_some_and(|lock| lock.waiters.iter().any(|w| w.session == *session))
            };
            if let Some((key, _)) = state.waits().find(|&(key, _)| !waits(key)) {
                return Err(format!("{session:?} lists a wait on lock {key} that is not queued"));
            }
            // The walk checks that every lock it lists it holds, once; the count that it lists
            // every grant it has.
            self.check_held_list(*session, state.held_head, state.held_tail, state.held)?;
            let granted = grants.get(session).copied().unwrap_or(0);
            if granted != state.held {
                return Err(format!("{session:?} has {granted} grants but lists {} holds", state.held));
            }
        }
        let leased = self.check_extras()?;
        let delayed = self.check_delays()?;
        // One grace timer per detached session (issue 14).
        let graces = self.check_detached()?;
        if timed + leased + delayed + graces != self.timers.len() {
            return Err(format!(
                "{} timers for {timed} waiters with a deadline, {leased} grants with an end, {delayed} delays, {graces} graces",
                self.timers.len()
            ));
        }
        if waiters != self.waiters {
            return Err(format!("waiter gauge {} for {waiters} waiters", self.waiters));
        }
        Ok(())
    }

    /// Each lock in a lock-delay has one live delay timer at its end and no other lock has
    /// one; the gauge of unheld delayed locks is right. Returns the number of delay timers.
    fn check_delays(&self) -> Result<usize, String> {
        let mut unheld = 0;
        for (key, lock) in self.store.iter_keyed() {
            let timer = self.delays.get(&key).and_then(|&t| self.timers.get(t));
            match (lock.delay_until, timer) {
                (0, None) if !self.delays.contains_key(&key) => {}
                (until, Some((at, Timer::Delay { lock: k }))) if until == at && *k == key => {
                    unheld += usize::from(lock.holders.is_empty());
                }
                (until, timer) => {
                    return Err(format!("lock {:?}: delay until {until}, timer {timer:?}", lock.name))
                }
            }
        }
        if self.delays.len() > self.store.len() || unheld != self.delayed_unheld {
            return Err(format!(
                "{} delays, {unheld} unheld delayed locks, gauge {}",
                self.delays.len(),
                self.delayed_unheld
            ));
        }
        Ok(self.delays.len())
    }

    /// Each grant with a lease or hold budget has its state under its token, and the other
    /// way round; each such state with an end has a live lease timer at exactly that end.
    /// Returns the number of lease timers.
    fn check_extras(&self) -> Result<usize, String> {
        let flagged: usize =
            self.store.iter().map(|lock| lock.holders.iter().filter(|h| h.extra).count()).sum();
        if flagged != self.extras.len() {
            return Err(format!("{flagged} grants with options, {} option states", self.extras.len()));
        }
        let mut timers = 0;
        for (&token, extra) in &self.extras {
            let grant = self.store.get(extra.lock).and_then(|lock| lock.holders.of(extra.session));
            if !grant.is_some_and(|g| g.token == token && g.extra) {
                return Err(format!("option state of token {token} has no grant"));
            }
            match (extra.ends_at(), extra.timer.and_then(|t| self.timers.get(t))) {
                (None, None) if extra.timer.is_none() => {}
                (Some(end), Some((at, Timer::Lease { token: t }))) if at == end && *t == token => timers += 1,
                (end, timer) => return Err(format!("grant {token}: end {end:?}, timer {timer:?}")),
            }
        }
        Ok(timers)
    }

    /// The grants of one lock: not empty, of the lock's kind, summing to its gauge within its
    /// capacity, an exclusive one alone, tokens increasing, and a queue whose head does not fit.
    fn check_grants(&self, lock: &Lock) -> Result<(), String> {
        let holders = &lock.holders;
        let name = &lock.name;
        // (A run cut at the grant batch waits for the grant step, still at the head.)
        let cut =
            || self.granting.iter().any(|&key| self.store.get(key).is_some_and(|l| std::ptr::eq(l, lock)));
        // A cut run may have taken every grant's place (waiters skipped while detached count
        // towards the batch): its lock has no holder until the grant step, only waiters.
        if holders.is_empty() && lock.delay_until == 0 && (lock.waiters.is_empty() || !cut()) {
            return Err(format!("lock {name:?} has no holder and no lock-delay"));
        }
        let capacity = if holders.limit() == 0 { u64::from(u32::MAX) } else { u64::from(holders.limit()) };
        let used: u64 = holders.iter().map(|h| u64::from(h.weight)).sum();
        if used != u64::from(holders.used()) || used > capacity {
            return Err(format!(
                "lock {name:?}: grants weigh {used}, gauge {}, capacity {capacity}",
                holders.used()
            ));
        }
        let exclusive = holders.iter().any(|h| holders.mode_of(h) == Mode::Exclusive);
        if exclusive && holders.len() != 1 {
            return Err(format!("lock {name:?} has an exclusive holder beside {} others", holders.len() - 1));
        }
        let tokens: Vec<u64> = holders.iter().map(|h| h.token).collect();
        if tokens.windows(2).any(|w| w[0] >= w[1]) || tokens.iter().any(|&t| t >= self.next_token) {
            return Err(format!("lock {name:?}: tokens {tokens:?} out of order (next {})", self.next_token));
        }
        let valid = |weight: u32| match holders.limit() {
            0 => weight == 1 || weight == u32::MAX,
            limit => (1..=limit).contains(&weight),
        };
        if let Some(w) =
            holders.iter().map(|h| h.weight).chain(lock.waiters.iter().map(|w| w.weight)).find(|w| !valid(*w))
        {
            return Err(format!(
                "lock {name:?} (limit {}) has a grant or wait of weight {w}",
                holders.limit()
            ));
        }
        if lock.head_admitted() && !cut() {
            return Err(format!("lock {name:?}: the head of the queue fits but waits"));
        }
        Ok(())
    }

    /// Walks the list of holds of `session` from `head`: each grant links back to the one
    /// before, the list ends at `tail`, and it has exactly `len` entries.
    fn check_held_list(&self, session: SessionId, head: u32, tail: u32, len: usize) -> Result<(), String> {
        let (mut key, mut prev, mut count) = (head, NO_LOCK, 0);
        let mut seen = hashbrown::HashSet::new();
        while key != NO_LOCK {
            if !seen.insert(key) {
                return Err(format!("{session:?}'s list of holds names lock {key} twice"));
            }
            let Some(grant) = self.store.get(key).and_then(|lock| lock.holders.of(session)) else {
                return Err(format!("{session:?}'s list of holds names lock {key}, not held by it"));
            };
            if grant.held_prev != prev || count > len {
                return Err(format!("{session:?}'s list of holds is broken at lock {key}"));
            }
            (prev, key, count) = (key, grant.held_next, count + 1);
        }
        if prev != tail || count != len {
            return Err(format!(
                "{session:?}'s list of holds has {count} entries ending at {prev}, want {len} at {tail}"
            ));
        }
        Ok(())
    }
}
