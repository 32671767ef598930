//! Graceful shutdown, and what it guarantees the clients connected when the server stops.
//!
//! On SIGTERM/SIGINT, a `ShutdownHandle`, or a fencing-token reservation that cannot be
//! extended, the loop stops serving and nothing more is accepted (the lock listener is
//! deregistered, its UNIX socket file removed); systemd is told STOPPING. Every open connection
//! is sent one SHUTDOWN notice, and every one is marked closing before any of them leaves the
//! lock table, so no release made while stopping can grant a lock to a client that was just
//! told the server stops. Pending output (answers already queued, then the notice) is drained
//! until it is written or `Config::drain_timeout` passes; only then do the connections leave
//! the table and close, and the pid file is removed last.

use log::{info, warn};

use super::conn::CloseReason;
use super::sys::notify;
use super::{Server, ServerError};
use crate::protocol::{Response, SHUTDOWN_REQUEST_ID};

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
