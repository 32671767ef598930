//! `Server::run`: the poll loop and the order of work within one wake-up.

use std::io::ErrorKind;
use std::sync::atomic::Ordering;
use std::time::Duration;

use log::{error, info, warn};
use mio::{Events, Token};

use super::conn::CloseReason;
use super::metrics::METRICS_BASE;
use super::session::Expiry;
use super::timers::ServerTimer;
use super::{Server, ServerError, COMPAT_LISTENER, LISTENER, METRICS_LISTENER, SIGNALS, WAKER};
use crate::locks::Command;
use crate::wheel::Tick;

/// Idle and authentication timers handled per turn: 10,000 connections going idle together
/// close a bounded batch per turn, each releasing from the table's per-turn budget.
const IDLE_BATCH: usize = 1024;
/// Shared vectors whose capacity is above this are shrunk by housekeeping once they are at
/// most a quarter full.
const VEC_SHRINK_FLOOR: usize = 1024;

impl Server {
    /// Serves until SIGTERM/SIGINT (when handled) or a `ShutdownHandle`, then drains and exits.
    pub fn run(mut self) -> Result<(), ServerError> {
        info!("officer listening addr={} max_connections={}", self.local, self.config.max_connections);
        // Bound, state file written: only now may systemd consider the service started.
        super::sys::notify(sd_notify::NotifyState::Ready);
        let mut events = Events::with_capacity(1024);
        let mut hung_up = Vec::new();
        let mut ready = Vec::new();
        let mut now = self.now();
        loop {
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                error!("poll failed error={e}");
                return Err(e.into());
            }
            now = self.now();
            let mut shutdown = false;
            for event in events.iter() {
                match event.token() {
                    LISTENER | COMPAT_LISTENER => self.accept_pending = true,
                    WAKER => shutdown |= self.shutdown_flag.load(Ordering::SeqCst),
                    SIGNALS => shutdown |= self.take_signals(),
                    METRICS_LISTENER => self.metrics_accept(now),
                    #[cfg(feature = "cluster")]
                    token if self.cluster.as_ref().is_some_and(|c| c.owns(token)) => {
                        self.cluster_event(event)
                    }
                    Token(key) if key >= METRICS_BASE => self.metrics_event(key - METRICS_BASE, now),
                    Token(key) => {
                        if event.is_writable() {
                            self.mark_dirty(key);
                        }
                        if event.is_read_closed() || event.is_error() {
                            hung_up.push(key);
                        } else if event.is_readable() {
                            ready.push(key);
                        }
                    }
                }
            }
            if shutdown {
                return self.shut_down();
            }
            self.accept_ready(now);
            // Peers that hung up go first: their requests are served, then their locks and
            // waits are dropped before any release in this wake-up can grant to them.
            for key in hung_up.drain(..) {
                self.serve_conn(key, now, true);
            }
            for key in ready.drain(..) {
                self.serve_conn(key, now, false);
            }
            self.serve_backlog(now);
            #[cfg(feature = "cluster")]
            if self.cluster.is_some() {
                self.cluster_turn(now)?;
            }
            self.run_timers(now);
            self.flush_dirty();
            self.reap_closed();
        }
    }

    /// Sleep until the earliest deadline (lock table, idle wheel, the server's own timers);
    /// not at all while work is left over. `now` is the tick of the wake-up just served:
    /// reading the clock again costs more than the few microseconds of lateness it would save.
    fn poll_timeout(&self, now: Tick) -> Option<Duration> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &self.cluster {
            return self.cluster_poll_timeout(cluster, now);
        }
        let leftover = self.conns.has_backlog() || self.table.has_pending_releases();
        if leftover || (self.accept_pending && !self.timers.is_armed(ServerTimer::AcceptResume)) {
            return Some(Duration::ZERO);
        }
        let next = self.table.next_deadline();
        let next = earliest(earliest(next, self.idle.next_deadline()), self.timers.next_deadline())?;
        Some(Duration::from_millis(next.saturating_sub(now)))
    }

    /// One bounded batch each of released holds (RESET, disconnect), of wait timeouts and of
    /// idle connections; what is left stays pending and makes the next poll return at once.
    /// Then the server's own due timers (at most one round of each).
    fn run_timers(&mut self, now: Tick) {
        // In cluster mode the leader's node turns the table's deadlines into log entries.
        #[cfg(feature = "cluster")]
        let local = self.cluster.is_none();
        #[cfg(not(feature = "cluster"))]
        let local = true;
        if local {
            self.table.apply(now, &Command::Expire, &mut self.outputs);
            self.deliver_outputs(now);
        }
        self.expire_idle(now);
        while let Some(timer) = self.timers.pop_due(now) {
            self.run_timer(timer, now);
        }
    }

    /// One of the server's own timers, already re-armed (or disarmed) by `ServerTimers`.
    fn run_timer(&mut self, timer: ServerTimer, now: Tick) {
        match timer {
            ServerTimer::AcceptResume => {
                self.accept_pending = true;
                self.accept_ready(now);
            }
            ServerTimer::Watchdog => super::sys::notify(sd_notify::NotifyState::Watchdog),
            ServerTimer::Housekeeping => {
                if !self.housekeeping(now) {
                    self.shutdown_flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    let _ = self.waker.wake();
                }
            }
            ServerTimer::StatsLine => self.log_stats(now),
        }
    }

    /// Idle and authentication deadlines share one timer per connection. Activity does not
    /// touch the timer (no churn per request); a timer that fires early is re-armed at the
    /// session's deadline.
    fn expire_idle(&mut self, now: Tick) {
        let mut expired = Vec::new();
        self.idle.poll_max(now, IDLE_BATCH, &mut expired);
        for id in expired {
            let key = id.slot as usize;
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.id == id) else { continue };
            conn.idle_timer = None;
            if conn.closing.is_some() {
                continue;
            }
            match conn.session.expired(now, &self.config) {
                Some(Expiry::Auth) => {
                    warn!(
                        "closing connection that did not authenticate conn={} peer={}",
                        conn.serial, conn.label
                    );
                    self.close(key, CloseReason::Auth, now);
                    continue;
                }
                // Its input may still be unread: after a pause (SIGSTOP, a long stall) more
                // sockets can be ready than one poll reports. Serve it first, then decide.
                Some(Expiry::Idle) => self.serve_conn(key, now, true),
                None => {}
            }
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.id == id && c.closing.is_none()) else {
                continue;
            };
            if conn.session.expired(now, &self.config) == Some(Expiry::Idle) {
                info!("closing idle connection conn={} peer={}", conn.serial, conn.label);
                self.close(key, CloseReason::Idle, now);
                continue;
            }
            if let Some(next) = conn.session.deadline(&self.config) {
                conn.idle_timer = Some(self.idle.insert(next, id));
            }
        }
    }

    /// Writes the state-file reservation ahead of token use and samples the acquire rate.
    /// False when the reservation cannot be extended: the server then shuts down rather than
    /// issue tokens a restart could issue again (the margin is half a block, 2^31 grants).
    fn housekeeping(&mut self, now: Tick) -> bool {
        self.expire_scrapes(now);
        let acquired = self.table().stats().acquired;
        self.acquire_rate.sample(now, acquired);
        if let Some(state) = &mut self.state {
            if let Err(msg) = state.maybe_extend(self.table.last_token()) {
                error!("cannot extend the fencing-token reservation, shutting down error={msg}");
                return false;
            }
        }
        self.give_back_memory();
        true
    }

    /// Shrinks what a burst grew once it is far below its peak (each container at most a
    /// quarter full, above a floor: a steady load never reallocates), then asks the allocator
    /// to return freed pages, so the footprint follows the load down (README "Limits and
    /// guarantees").
    fn give_back_memory(&mut self) {
        let mut shrank = self.table.shrink();
        shrank |= self.routes.shrink_if_sparse();
        shrank |= self.idle.shrink_if_sparse();
        shrank |= self.conns.shrink_quiet_buffers();
        shrank |= self.conns.shrink();
        shrank |= shrink_vec(&mut self.outputs);
        if shrank {
            trim_heap();
        }
    }

    fn take_signals(&mut self) -> bool {
        let Some(signals) = &mut self.signals else { return false };
        let mut any = false;
        for sig in signals.pending() {
            info!("shutting down signal={sig}");
            any = true;
        }
        any
    }
}

/// The earlier of two deadlines, either of which may be absent (once per turn: cheaper than
/// a flattened iterator's `min`).
pub(super) fn earliest(a: Option<Tick>, b: Option<Tick>) -> Option<Tick> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Frees a shared vector's spare capacity once it is at most a quarter full.
fn shrink_vec<T>(v: &mut Vec<T>) -> bool {
    if v.capacity() > VEC_SHRINK_FLOOR && v.len() * 4 <= v.capacity() {
        v.shrink_to(v.len() * 2);
        return true;
    }
    false
}

/// Returns the allocator's free pages at the top of the heap and in its arenas to the system
/// (glibc keeps them otherwise, and RSS would stay at the burst's peak). Only called after a
/// shrink, at most once per housekeeping second.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; 0 keeps no padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

#[cfg(test)]
mod tests {
    use super::earliest;

    #[test]
    fn earliest_is_the_min_of_the_deadlines_present() {
        assert_eq!(earliest(None, None), None);
        assert_eq!(earliest(Some(7), None), Some(7));
        assert_eq!(earliest(None, Some(3)), Some(3));
        assert_eq!(earliest(Some(7), Some(3)), Some(3));
        assert_eq!(earliest(Some(0), Some(u64::MAX)), Some(0));
    }
}
