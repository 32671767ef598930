//! A canonical description of the table's state, for replicas to compare (issue 16): two
//! tables that applied the same commands at the same ticks describe themselves identically.
//! Read-only and O(state); never called by the server's hot path.
//!
//! It names what the replicated state is: every lock (holders with session, token, mode and
//! grant tick; waiters in queue order with their request, weight, wait tick, deadline and
//! options; the lock-delay), every grant's lease state, every session (label, holds, waits in
//! order, lost grants, resumability and detachment), the counters (tokens, session ids), the
//! pending batched work and the statistics. Slab keys, timer handles and hash-map order are
//! left out: they are how this table stores the state, not the state, and sorted lists stand
//! in for maps. A missing field would let two replicas differ unseen, so add new state here.

use std::fmt::Write;

use super::table::LockTable;

impl LockTable {
    /// The table's state as sorted lines (see the module doc); equal on replicas that applied
    /// the same commands.
    pub fn state_lines(&self) -> Vec<String> {
        let name_of = |key: u32| self.store.get(key).map_or("<none>", |lock| lock.name.as_str()).to_owned();
        let mut lines = Vec::new();
        for lock in self.store.iter() {
            let mut line = format!("lock {:?} delay_until={} holders", lock.name.as_str(), lock.delay_until);
            for h in lock.holders.iter() {
                let _ = write!(
                    line,
                    " ({} t{} {:?} @{})",
                    h.session.0,
                    h.token,
                    lock.holders.mode_of(h),
                    h.since
                );
            }
            line.push_str(" waiters");
            for w in &lock.waiters {
                let _ = write!(
                    line,
                    " ({} r{} w{} @{} until {:?} {:?})",
                    w.session.0, w.request_id, w.weight, w.since, w.deadline, w.opts
                );
            }
            lines.push(line);
        }
        for (token, extra) in &self.extras {
            lines.push(format!(
                "grant t{token} of {:?} by {}: opts {:?} lease_end {:?} hold_end {:?} notify {} timed {}",
                name_of(extra.lock),
                extra.session.0,
                extra.opts,
                extra.lease_end,
                extra.hold_end,
                extra.notify,
                extra.timer.is_some()
            ));
        }
        for (key, timer) in &self.delays {
            let until = self.timers.get(*timer).map(|(at, _)| at);
            lines.push(format!("delay of {:?} until {until:?}", name_of(*key)));
        }
        for (id, s) in &self.sessions {
            let waits: Vec<String> = s.waiting_in_order().into_iter().map(name_of).collect();
            let lost: Vec<String> =
                s.lost.iter().map(|l| format!("{}:t{}:{:?}", l.name.as_str(), l.token, l.reason)).collect();
            lines.push(format!(
                "session {} {:?} held {} gone {} releasing {} waits {waits:?} lost {lost:?} resumable {}",
                id.0,
                s.label,
                s.held,
                s.gone,
                s.releasing,
                self.is_resumable(*id)
            ));
        }
        lines.sort();
        lines.push(format!("detached {:?}", self.detached_sessions(0, usize::MAX)));
        lines.push(format!(
            "next_token {} next_session {} waiters {} timers {} releasing {} revoking {} granting {} inline_budget {}",
            self.next_token,
            self.next_session,
            self.waiters,
            self.timers.len(),
            self.releasing.len(),
            self.revoking.len(),
            self.granting.len(),
            self.inline_budget
        ));
        lines.push(format!("stats {:?}", self.stats()));
        lines.push(format!("session_stats {:?}", self.session_stats()));
        lines
    }

    /// A 64-bit FNV-1a hash of [`LockTable::state_lines`]: the same on every replica, every
    /// process and every build (no random seed), so nodes can compare it over the wire.
    pub fn digest(&self) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for line in self.state_lines() {
            for &b in line.as_bytes().iter().chain(b"\n") {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash
    }
}

#[cfg(test)]
mod tests {
    use crate::locks::{Command, LockOpts, LockTable, Name, SessionId, TableLimits};

    fn run(cmds: &[(u64, Command)]) -> LockTable {
        let mut table = LockTable::new(1, TableLimits::default());
        let mut out = Vec::new();
        for (now, cmd) in cmds {
            table.apply(*now, cmd, &mut out);
        }
        table
    }

    #[test]
    fn same_commands_same_digest_and_a_difference_shows() {
        let attach = |s| Command::Attach { session: SessionId(s), label: format!("c{s}") };
        let lock = |s, r, timeout_ms| Command::Lock {
            session: SessionId(s),
            request_id: r,
            name: Name::new("a"),
            timeout_ms,
            queue_max: None,
            opts: LockOpts { lease_ms: Some(500), ..LockOpts::default() },
        };
        let cmds = vec![(0, attach(1)), (0, attach(2)), (1, lock(1, 1, None)), (2, lock(2, 1, Some(100)))];
        let (a, b) = (run(&cmds), run(&cmds));
        assert_eq!(a.state_lines(), b.state_lines());
        assert_eq!(a.digest(), b.digest());
        // The same commands at another tick, or one command fewer, are another state.
        let mut later = cmds.clone();
        later[3].0 = 3;
        assert_ne!(run(&later).digest(), a.digest());
        assert_ne!(run(&cmds[..3]).digest(), a.digest());
        let lines = a.state_lines().join("\n");
        assert!(lines.contains("lock \"a\""), "{lines}");
        assert!(lines.contains("(2 r1 w"), "the waiter is described: {lines}");
    }
}
