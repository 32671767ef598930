//! Process-level concerns: the open-file limit, signals, the pid file and shutdown.

use std::io;

use log::{info, warn};
use mio::{Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use super::conn::CloseReason;
use super::{Server, ServerError};
use crate::protocol::{Response, SHUTDOWN_REQUEST_ID};

/// Descriptors kept free for the listener, the poller, files and logging.
const FD_RESERVE: usize = 32;

/// Raises the soft open-file limit to the hard limit; returns the soft limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only write/read the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every platform
    Some(lim.rlim_cur as u64)
}

/// Raises the open-file limit and clamps `wanted` connections to what it allows.
pub(super) fn clamp_connections(wanted: usize) -> usize {
    let Some(soft) = raise_fd_limit() else { return wanted };
    let allowed = (soft as usize).saturating_sub(FD_RESERVE).max(1);
    if wanted > allowed {
        warn!("max connections clamped to the open-file limit wanted={wanted} allowed={allowed}");
    }
    wanted.min(allowed)
}

pub(super) fn register_signals(poll: &Poll, token: Token) -> io::Result<Signals> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    poll.registry().register(&mut signals, token, Interest::READABLE)?;
    Ok(signals)
}

/// Tells systemd (when NOTIFY_SOCKET is set) how the service is doing; a no-op otherwise.
pub(super) fn notify(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        warn!("systemd notification failed error={e}");
    }
}

/// Half the watchdog period systemd asks for (WATCHDOG_USEC), in ticks.
pub(super) fn watchdog_interval() -> Option<crate::wheel::Tick> {
    sd_notify::watchdog_enabled().map(|d| (d.as_millis() as crate::wheel::Tick / 2).max(1))
}

impl Server {
    /// Graceful shutdown: stop accepting, tell every client, drain output, remove files.
    pub(super) fn shut_down(mut self) -> Result<(), ServerError> {
        notify(sd_notify::NotifyState::Stopping);
        if let Some(mut listener) = self.listener.take() {
            let _ = listener.deregister(self.poll.registry());
            if let Some(path) = listener.socket_path() {
                let _ = std::fs::remove_file(path);
            }
        }
        let notice = Response::Shutdown { message: "server is shutting down".into() };
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for &key in &keys {
            self.send(key, SHUTDOWN_REQUEST_ID, &notice);
        }
        // Every connection is marked closing before any of them leaves the lock table (even
        // one whose write fails while draining), so no release can grant a lock to a client
        // that was just told we are stopping.
        for &key in &keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.closing = Some(CloseReason::Shutdown);
            }
        }
        self.flush_dirty();
        self.drain_output();
        let now = self.now();
        for key in keys {
            self.forget(key, CloseReason::Shutdown, now);
        }
        self.reap_closed();
        if let Some(pid_file) = self.pid_file.take() {
            pid_file.remove();
        }
        info!("officer stopped");
        Ok(())
    }

    /// Polls for writability until every connection's output is written or the drain timeout.
    fn drain_output(&mut self) {
        let deadline = std::time::Instant::now() + self.config.drain_timeout;
        let mut events = mio::Events::with_capacity(256);
        while self.conns.iter().any(|(_, c)| c.pending_output() > 0) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                warn!("drain timeout: closing connections with unsent output");
                return;
            }
            if self.poll.poll(&mut events, Some(left)).is_err() {
                return;
            }
            for event in events.iter() {
                if event.is_writable() {
                    self.mark_dirty(event.token().0);
                }
            }
            self.flush_dirty();
        }
    }
}
