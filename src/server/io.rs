//! Accepting, reading and closing connections, and queueing their output: where a socket's
//! events meet the session and the lock table (the sockets' own bookkeeping, writes and
//! reaping are `connections.rs`).
//!
//! Reads go into one shared scratch buffer and frames are decoded straight from it; only the
//! tail of an incomplete frame is copied into the connection's own buffer, so an idle
//! connection owns no input buffer memory at all.

use std::io::{ErrorKind, Read, Write};

use log::{debug, info, warn};
use mio::{Interest, Token};

use super::conn::{CloseReason, Conn};
use super::connections::KEEP_BUF_CAPACITY;
use super::session::Session;
use super::timers::ServerTimer;
use super::Server;
use crate::locks::Command;
use crate::protocol::{Response, NOTICE_REQUEST_ID};
use crate::wheel::Tick;

/// Retry accepting this long after running out of file descriptors.
const EMFILE_BACKOFF_MS: Tick = 100;

impl Server {
    /// Accepts from the main listener, then from the compat listener (each within its own
    /// budget). `accept_pending` is one flag for both: it clears only once both are drained,
    /// so an edge-triggered event on either is never lost.
    pub(super) fn accept_ready(&mut self, now: Tick) {
        if !self.accept_pending || self.timers.is_armed(ServerTimer::AcceptResume) {
            return;
        }
        let main_drained = self.accept_from(false, now);
        let compat_drained = !self.timers.is_armed(ServerTimer::AcceptResume) && self.accept_from(true, now);
        if main_drained && compat_drained {
            self.accept_pending = false;
        }
    }

    /// True once the listener said `WouldBlock` (or there is none).
    fn accept_from(&mut self, compat: bool, now: Tick) -> bool {
        for _ in 0..self.config.accepts_per_wakeup {
            let listener = if compat { &self.compat_listener } else { &self.listener };
            let Some(listener) = listener else { return true };
            match listener.accept() {
                Ok(accepted) => self.admit(accepted, compat, now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                    // Leaving the connection in the backlog and retrying later keeps the loop
                    // from spinning on a listener that stays readable.
                    warn!("out of file descriptors, pausing accepts ms={EMFILE_BACKOFF_MS} error={e}");
                    self.stats.accept_errors += 1;
                    self.timers.arm(ServerTimer::AcceptResume, now + EMFILE_BACKOFF_MS);
                    return false;
                }
                Err(e) => {
                    debug!("accept failed error={e}");
                    self.stats.accept_errors += 1;
                }
            }
        }
        // Budget spent with connections possibly still queued: poll again without sleeping.
        false
    }

    /// `compat`: accepted on the `--compat-listen` listener (JSON clients without the secret).
    fn admit(&mut self, accepted: super::net::Accepted, compat: bool, now: Tick) {
        let mut stream = accepted.stream;
        if self.conns.len() >= self.config.max_connections {
            self.stats.refused += 1;
            warn!("refusing connection: limit reached max_connections={}", self.config.max_connections);
            let refusal = crate::protocol::Response::error(
                crate::protocol::ErrorCode::LimitExceeded,
                "too many connections",
            );
            // The compat port is there for the original's clients: refuse them in their language.
            let mut bytes = Vec::new();
            if compat {
                super::session::json::write_line(&refusal, &mut bytes);
            } else {
                refusal.encode(crate::protocol::SHUTDOWN_REQUEST_ID, &mut bytes);
            }
            let _ = stream.write(&bytes);
            return;
        }
        let id = self.conns.next_id();
        let key = id.slot as usize;
        let serial = self.next_serial;
        self.next_serial += 1;
        let label = match accepted.peer {
            Some(addr) => addr.to_string(),
            None => format!("unix:{serial}"),
        };
        if let Err(e) = self.poll.registry().register(&mut stream, Token(key), Interest::READABLE) {
            warn!("cannot register connection error={e}");
            return;
        }
        info!("connection accepted conn={serial} peer={label}");
        let mut session = Session::new(serial, compat, now, &self.config);
        if super::admin::same_user(&stream) {
            session.grant_admin();
        }
        let sid = self.next_session();
        let mut conn = Conn::new(stream, id, sid, serial, label.clone(), session);
        if let Some(deadline) = conn.session.deadline(&self.config) {
            conn.idle_timer = Some(self.idle.insert(deadline, id));
        }
        self.conns.insert(conn);
        self.routes.insert(sid, key);
        self.apply(now, Command::Attach { session: sid, label });
        self.stats.accepted += 1;
    }

    /// Serves buffered input, then reads until the socket is drained, the request budget is
    /// spent, or the connection closes.
    ///
    /// A read that returns less than the buffer emptied the socket at that moment, so
    /// `drain == false` stops there instead of paying a second `read` for the `WouldBlock`:
    /// anything arriving later is a new wake-up for the edge-triggered poller, which reports it
    /// on the next turn. Hung-up peers are drained (`drain == true`) to see the EOF now.
    pub(super) fn serve_conn(&mut self, key: usize, now: Tick, drain: bool) {
        if self.holds_back(key) {
            // Its RESET is still releasing: nothing it sent later is served before RESET_OK.
            self.conns.push_backlog(key);
            return;
        }
        let mut budget = self.config.requests_per_wakeup;
        if !self.serve_buffered(key, now, &mut budget) {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(conn) = self.conns.get_mut(key).filter(|c| c.closing.is_none()) {
            if budget == 0 {
                self.conns.push_backlog(key);
                break;
            }
            match conn.stream.read(&mut scratch) {
                Ok(0) => {
                    self.close(key, CloseReason::Eof, now);
                    break;
                }
                Ok(n) => {
                    self.stats.bytes_in += n as u64;
                    if conn.inbuf.is_empty() {
                        let used = self.process(key, &scratch[..n], now, &mut budget);
                        if let Some(conn) = self.conns.get_mut(key).filter(|c| c.closing.is_none()) {
                            conn.inbuf.extend_from_slice(&scratch[used..n]);
                        }
                    } else {
                        conn.inbuf.extend_from_slice(&scratch[..n]);
                        if !self.serve_buffered(key, now, &mut budget) {
                            break;
                        }
                    }
                    if !drain && n < scratch.len() {
                        // Requests left over by the budget get no new readiness event.
                        if budget == 0 {
                            self.conns.push_backlog(key);
                        }
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("read failed conn={} error={e}", conn.serial);
                    self.close(key, CloseReason::Error, now);
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    /// Decodes what the connection has buffered. Returns false when it must not read more.
    #[inline]
    fn serve_buffered(&mut self, key: usize, now: Tick, budget: &mut usize) -> bool {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.closing.is_none()) else { return false };
        if conn.inbuf.is_empty() {
            return true;
        }
        let buf = std::mem::take(&mut conn.inbuf);
        let used = self.process(key, &buf, now, budget);
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.closing.is_none()) else { return false };
        let mut buf = buf;
        buf.drain(..used);
        // A burst of pipelined input must not pin its buffer on an otherwise idle connection.
        if buf.is_empty() && buf.capacity() > KEEP_BUF_CAPACITY {
            buf = Vec::new();
        }
        conn.inbuf = buf;
        if *budget == 0 {
            self.conns.push_backlog(key);
            return false;
        }
        true
    }

    /// Whether the connection's requests wait: its RESET is releasing holds across turns
    /// (PROTOCOL.md §6.5). Request loops end the connection's turn when this turns true.
    pub(super) fn holds_back(&self, key: usize) -> bool {
        // Cluster mode: a SESSION_RESUME not yet committed holds back what follows it, which
        // must run as the resumed session.
        #[cfg(feature = "cluster")]
        if self.cluster.as_ref().is_some_and(|c| c.holds_back(key)) {
            return true;
        }
        // Checked after every request: no lookup at all while nothing is being released.
        self.table().has_pending_releases()
            && self.conns.get(key).is_some_and(|c| self.table().is_releasing(c.sid))
    }

    /// Gives each connection left over from the previous wake-up another budget.
    pub(super) fn serve_backlog(&mut self, now: Tick) {
        if !self.conns.has_backlog() {
            return;
        }
        for key in self.conns.take_backlog() {
            if self.conns.get(key).is_some() {
                self.serve_conn(key, now, true);
            }
        }
    }

    pub(super) fn mark_dirty(&mut self, key: usize) {
        self.conns.mark_dirty(key);
    }

    /// Appends one response frame to a connection's output.
    pub(super) fn send(&mut self, key: usize, request_id: u32, response: &crate::protocol::Response) {
        self.send_about(key, request_id, None, response)
    }

    /// `send` for an answer about the lock `lock` (a lock-table output names it).
    fn send_about(
        &mut self,
        key: usize,
        request_id: u32,
        lock: Option<&str>,
        response: &crate::protocol::Response,
    ) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.session.encode_about(request_id, lock, response, self.config.max_frame, &mut conn.outbuf);
        conn.out_recent = true;
        self.stats.responses += 1;
        self.mark_dirty(key);
    }

    /// Routes the lock table's outputs to their connections; stale ids are dropped.
    pub(super) fn deliver_outputs(&mut self, now: Tick) {
        if self.outputs.is_empty() {
            return;
        }
        let mut outputs = std::mem::take(&mut self.outputs);
        let (mut revoked, mut goodbyes) = (Vec::new(), Vec::new());
        for out in outputs.drain(..) {
            // Session ids are the table's, not slab keys: one lookup of a u64 per output.
            let Some(key) = self.routes.get(out.session) else { continue };
            let Some(conn) = self.conns.get(key).filter(|c| c.sid == out.session && c.closing.is_none())
            else {
                continue;
            };
            if out.request_id == NOTICE_REQUEST_ID && !conn.session.understands_lost() {
                // A version-1 or JSON client cannot be told a grant ended: losing the
                // connection is how it learns it lost its locks (PROTOCOL.md §6.12).
                if matches!(out.response, Response::Lost { .. }) && !revoked.contains(&key) {
                    revoked.push(key);
                }
                continue;
            }
            // GOODBYE's RESET is answered: the connection ends with it (PROTOCOL.md §3.24).
            if matches!(out.response, Response::ResetOk) && conn.session.said_goodbye() {
                goodbyes.push(key);
            }
            self.send_about(key, out.request_id, out.lock.as_deref(), &out.response);
        }
        self.outputs = outputs;
        for key in revoked {
            self.close(key, CloseReason::Revoked, now);
        }
        for key in goodbyes {
            self.close(key, CloseReason::Goodbye, now);
        }
    }

    /// One write per connection that got output; WRITABLE interest only while some is left.
    ///
    /// A flush can close a connection (write error, output limit), and its locks then go to
    /// waiters whose ACQUIRED lands on the dirty list again: go round until it stays empty, so
    /// a grant never waits for the next wake-up. Each round closes connections or ends, and a
    /// connection closes once, so this terminates.
    pub(super) fn flush_dirty(&mut self) {
        while let Some(keys) = self.conns.take_dirty() {
            for &key in &keys {
                self.flush(key);
            }
            self.conns.recycle_dirty(keys);
        }
    }

    /// Called before serving each request: a connection whose unsent output is over the
    /// limit gets one write now, and is closed if that does not bring it under. This bounds
    /// what a client that pipelines without reading can make the server hold to about
    /// `max_output` plus one response, however many requests one wake-up serves.
    pub(super) fn within_output_limit(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get(key) else { return false };
        if conn.pending_output() <= self.config.max_output {
            return conn.closing.is_none();
        }
        self.flush(key);
        self.conns.get(key).is_some_and(|c| c.closing.is_none())
    }

    /// One write (`Connections::flush`); a connection it condemns is closed here, where the
    /// lock table is.
    fn flush(&mut self, key: usize) {
        let registry = self.poll.registry();
        let max_output = self.config.max_output;
        if let Some(reason) = self.conns.flush(key, registry, max_output, &mut self.stats.bytes_out) {
            let now = self.now();
            self.close(key, reason, now);
        }
    }

    /// Releases the connection's locks and waits at once; the socket goes at `reap_closed`.
    pub(super) fn close(&mut self, key: usize, reason: CloseReason, now: Tick) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.closing.is_some() {
            return;
        }
        conn.closing = Some(reason);
        self.forget(key, reason, now);
    }

    /// Takes a connection already marked closing out of the lock table (waiters behind its
    /// locks are granted) and queues its socket for `reap_closed`.
    pub(super) fn forget(&mut self, key: usize, reason: CloseReason, now: Tick) {
        let Some(conn) = self.conns.get(key) else { return };
        let sid = conn.sid;
        info!("connection closed conn={} peer={} reason={}", conn.serial, conn.label, reason.as_str());
        self.stats.count_close(reason);
        // A lost connection detaches a resumable session for its grace (PROTOCOL.md §6.14);
        // `Suspend` of any other session is `Detach`.
        let cmd = if reason.is_loss() && !conn.session.said_goodbye() {
            Command::Suspend { session: sid }
        } else {
            Command::Detach { session: sid }
        };
        self.apply(now, cmd);
        self.conns.push_closing(key);
        self.deliver_outputs(now);
        // The table never answers a detached session again.
        self.routes.remove(sid);
    }

    /// Removes closed connections (`Connections::reap`).
    pub(super) fn reap_closed(&mut self) {
        self.conns.reap(self.poll.registry(), &mut self.idle);
    }
}
