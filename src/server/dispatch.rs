//! The server's side of a session's steps: drive the session over a connection's input within
//! the turn's budget, and run each `Execute` against the lock table ([`run`], the one place
//! that calls the table for a request).

use log::warn;

use super::session::{Cause, Scratch, Step};
use super::Server;
use crate::locks::{ConnId, LockTable, Output};
use crate::protocol::{Request, Response};
use crate::wheel::Tick;

impl Server {
    /// Serves the complete frames (or JSON lines) at the front of `data`, within `budget`
    /// requests. Returns how many bytes were consumed; the rest is an incomplete frame or
    /// frames left for the next wake-up.
    pub(super) fn process(&mut self, key: usize, data: &[u8], now: Tick, budget: &mut usize) -> usize {
        let mut scratch = std::mem::take(&mut self.line_scratch);
        let used = self.process_with(key, data, now, budget, &mut scratch);
        self.line_scratch = scratch;
        used
    }

    fn process_with(
        &mut self,
        key: usize,
        data: &[u8],
        now: Tick,
        budget: &mut usize,
        scratch: &mut Scratch,
    ) -> usize {
        let mut pos = 0;
        while *budget > 0 {
            if !self.within_output_limit(key) {
                return data.len();
            }
            let Some(conn) = self.conns.get_mut(key) else { return data.len() };
            let Some(next) = conn.session.next(&data[pos..], now, &self.config, scratch) else { break };
            pos += next.used;
            *budget -= 1;
            if next.request {
                self.stats.requests += 1;
            }
            if !self.take_step(key, next.step, now) {
                return data.len();
            }
            if next.scans || self.holds_back(key) {
                // One O(locks) answer per connection per turn: the rest of its input waits in
                // the backlog while everyone else is served. A RESET still releasing holds its
                // later requests back the same way.
                *budget = 0;
            }
        }
        pos
    }

    /// Does what one step says; false once the connection is closing.
    fn take_step(&mut self, key: usize, step: Step<'_>, now: Tick) -> bool {
        match step {
            Step::Execute { rid, request } => self.execute(key, rid, request, now),
            Step::Reply { rid, response } => self.send(key, rid, &response),
            Step::Invalid { rid, code, message, quiet } => {
                if !quiet {
                    let serial = self.conns.get(key).map_or(0, |c| c.serial);
                    warn!("bad request conn={serial} request_id={rid} error={message}");
                }
                self.stats.bad_requests += 1;
                self.send(key, rid, &Response::error(code, message));
            }
            Step::Close { reason, response, cause } => {
                self.log_close_cause(key, &cause);
                // Fatal, so it carries request id 0 like every ERROR that ends a connection.
                self.send(key, crate::protocol::SHUTDOWN_REQUEST_ID, &response);
                self.close(key, reason, now);
                return false;
            }
            Step::Activity => {}
        }
        true
    }

    fn log_close_cause(&mut self, key: usize, cause: &Cause) {
        let Some(conn) = self.conns.get(key) else { return };
        match cause {
            Cause::Decode(error) => {
                warn!("closing connection after protocol error conn={} error={error}", conn.serial)
            }
            Cause::HelloTwice => {}
            Cause::AuthFailed => warn!("authentication failed conn={} peer={}", conn.serial, conn.label),
            Cause::JsonRefused(code) => {
                warn!(
                    "refusing JSON-lines client conn={} peer={} code={}",
                    conn.serial,
                    conn.label,
                    code.as_str()
                );
                self.stats.bad_requests += 1;
            }
        }
    }

    /// Runs one request of a greeted connection (binary or JSON) and sends its answers.
    fn execute(&mut self, key: usize, rid: u32, request: Request<'_>, now: Tick) {
        let Some(conn) = self.conns.get(key) else { return };
        let id = conn.id;
        match run(&mut self.table, now, id, rid, request, self.config.max_frame, &mut self.outputs) {
            Ran::Outputs => self.deliver_outputs(),
            Ran::Reply(response) => self.send(key, rid, &response),
            Ran::Stats => {
                let response = Response::Stats(self.stats_entries(now));
                self.send(key, rid, &response);
            }
        }
    }
}

/// What running a request produced.
pub(crate) enum Ran {
    /// Responses were pushed to the outputs (for this connection and maybe others).
    Outputs,
    /// This connection's answer.
    Reply(Response),
    /// STATS: the caller builds it (the server's counters are not the table's).
    Stats,
}

/// Turns one request into a lock-table call. Listings are built within one frame (JSON
/// replies get the same bound on their work), so each costs what it returns plus one pass
/// over its candidates.
pub(crate) fn run(
    table: &mut LockTable,
    now: Tick,
    id: ConnId,
    rid: u32,
    request: Request<'_>,
    max_frame: u32,
    outputs: &mut Vec<Output>,
) -> Ran {
    match request {
        Request::Lock(mut lock) => {
            // Ticks are whole milliseconds rounded down, so the request may have arrived up
            // to a tick after `now`: one more tick guarantees a wait never ends early.
            lock.timeout_ms = lock.timeout_ms.map(|ms| if ms == 0 { 0 } else { ms.saturating_add(1) });
            table.lock(now, id, rid, &lock, outputs);
            Ran::Outputs
        }
        Request::Unlock(name) => {
            table.unlock(now, id, rid, name, outputs);
            Ran::Outputs
        }
        Request::Reset => {
            table.reset(now, id, rid, outputs);
            Ran::Outputs
        }
        Request::Locks(list) => Ran::Reply(table.locks_within(list.prefix, list.max, max_frame)),
        Request::Connections(list) => Ran::Reply(table.connections_within(list.prefix, list.max, max_frame)),
        Request::MyLocks => Ran::Reply(table.my_locks_within(id, max_frame)),
        Request::MyLocksMatching(list) => {
            Ran::Reply(table.my_locks_matching(id, list.prefix, list.max, max_frame))
        }
        Request::Top(max) => Ran::Reply(table.top_within(now, max, max_frame)),
        Request::Stats => Ran::Stats,
        // The session answers these itself (it owns the handshake); kept total for safety.
        Request::Ping(_) => Ran::Reply(Response::Pong),
        Request::Auth(_) => Ran::Reply(Response::AuthOk),
        Request::Hello(_) => Ran::Reply(Response::error(
            crate::protocol::ErrorCode::BadHandshake,
            "HELLO was already received",
        )),
    }
}
