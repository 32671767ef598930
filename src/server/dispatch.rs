//! The host's side of a session's steps: drive the session over a connection's input within
//! the turn's budget ([`drive`], for the server and the in-process loopback alike), and run
//! each `Execute` against the lock table ([`run`], the one place a request becomes a table
//! call).

use log::warn;

use super::session::{Cause, CloseReason, Scratch, Session, Step};
use super::{Config, Server};
use crate::locks::{Command, LockOpts, LockTable, Mode, Name, Output, SessionId};
use crate::protocol::{DecodeError, ErrorCode, LockExtRequest, Mode as WireMode, Request, Response};
use crate::wheel::Tick;

/// What driving a session over a connection's input needs from the code that owns the
/// connection: the server, or the in-process loopback the fuzz target drives ([`drive`]).
pub(crate) trait Host {
    /// The connection's session and the configuration, together (one borrow of the host).
    fn session(&mut self, key: usize) -> Option<(&mut Session, &Config)>;
    /// Whether the connection may be served another request: it is open and its unsent
    /// output is under the limit (the server flushes first when it is not).
    fn may_serve(&mut self, key: usize) -> bool;
    /// Whether its requests wait: its RESET is still releasing holds (PROTOCOL.md §6.5).
    fn holds_back(&self, key: usize) -> bool;
    fn send(&mut self, key: usize, rid: u32, response: &Response);
    fn close(&mut self, key: usize, reason: CloseReason, now: Tick);
    /// Runs an `Execute` step (normally through [`run`]) and sends what it answers.
    fn execute(&mut self, key: usize, rid: u32, request: Request<'_>, now: Tick);
    /// Counts one request, or one bad request, in the host's statistics.
    fn count(&mut self, bad: bool);
    /// The connection's serial and peer label, for log lines.
    fn names(&self, key: usize) -> (u64, &str);
}

/// Serves the complete frames (or JSON lines) at the front of `data`, within `budget`
/// requests. Returns how many bytes were consumed; the rest is an incomplete frame or
/// frames left for the next turn.
pub(crate) fn drive<H: Host>(
    host: &mut H,
    key: usize,
    data: &[u8],
    now: Tick,
    budget: &mut usize,
    scratch: &mut Scratch,
) -> usize {
    let mut pos = 0;
    while *budget > 0 {
        if !host.may_serve(key) {
            return data.len();
        }
        if pos == data.len() {
            // Used up: no input holds a step, so the session need not be asked.
            break;
        }
        let Some((session, config)) = host.session(key) else { return data.len() };
        let Some(next) = session.next(&data[pos..], now, config, scratch) else { break };
        pos += next.used;
        *budget -= 1;
        if next.request {
            host.count(false);
        }
        if !take_step(host, key, next.step, now) {
            return data.len();
        }
        if next.scans || host.holds_back(key) {
            // One O(locks) answer per connection per turn: the rest of its input waits in
            // the backlog while everyone else is served. A RESET still releasing holds its
            // later requests back the same way.
            *budget = 0;
        }
    }
    pos
}

/// Does what one step says; false once the connection is closing.
fn take_step<H: Host>(host: &mut H, key: usize, step: Step<'_>, now: Tick) -> bool {
    match step {
        Step::Execute { rid, request } => host.execute(key, rid, request, now),
        Step::Reply { rid, response } => host.send(key, rid, &response),
        Step::Invalid { rid, code, message, quiet } => {
            if !quiet {
                warn!("bad request conn={} request_id={rid} error={message}", host.names(key).0);
            }
            host.count(true);
            host.send(key, rid, &Response::error(code, message));
        }
        Step::Close { reason, response, cause } => {
            log_cause(host, key, &cause);
            // Fatal, so it carries request id 0 like every ERROR that ends a connection.
            host.send(key, crate::protocol::SHUTDOWN_REQUEST_ID, &response);
            host.close(key, reason, now);
            return false;
        }
        Step::Activity => {}
    }
    true
}

fn log_cause<H: Host>(host: &mut H, key: usize, cause: &Cause) {
    let (serial, peer) = host.names(key);
    match cause {
        Cause::Decode(error) => warn!("closing connection after protocol error conn={serial} error={error}"),
        Cause::HelloTwice => {}
        Cause::AuthFailed => warn!("authentication failed conn={serial} peer={peer}"),
        Cause::JsonRefused(code) => {
            warn!("refusing JSON-lines client conn={serial} peer={peer} code={}", code.as_str());
            host.count(true);
        }
    }
}

impl Server {
    /// Serves the complete frames (or JSON lines) at the front of `data` ([`drive`]).
    pub(super) fn process(&mut self, key: usize, data: &[u8], now: Tick, budget: &mut usize) -> usize {
        // Cluster mode: only the leader serves; anyone else is sent to it (its first bytes,
        // normally HELLO, are read and answered with the redirect).
        #[cfg(feature = "cluster")]
        if self.cluster.as_ref().is_some_and(|c| !c.is_leader()) {
            self.redirect(key, now);
            return data.len();
        }
        let mut scratch = std::mem::take(&mut self.line_scratch);
        let used = drive(self, key, data, now, budget, &mut scratch);
        self.line_scratch = scratch;
        used
    }
}

impl Host for Server {
    fn session(&mut self, key: usize) -> Option<(&mut Session, &Config)> {
        self.conns.get_mut(key).map(|c| (&mut c.session, &self.config))
    }

    fn may_serve(&mut self, key: usize) -> bool {
        self.within_output_limit(key)
    }

    fn holds_back(&self, key: usize) -> bool {
        Server::holds_back(self, key)
    }

    fn send(&mut self, key: usize, rid: u32, response: &Response) {
        Server::send(self, key, rid, response)
    }

    fn close(&mut self, key: usize, reason: CloseReason, now: Tick) {
        Server::close(self, key, reason, now)
    }

    /// Runs one request of a greeted connection (binary or JSON) and sends its answers.
    fn execute(&mut self, key: usize, rid: u32, request: Request<'_>, now: Tick) {
        // Operators' requests act on connections, which the table does not know; so do a
        // session's takeover and GOODBYE (`resume.rs`).
        match request {
            Request::Kick(victim) => return self.kick(key, rid, victim, now),
            Request::SessionResume(resume) => return self.resume_session(key, rid, resume, now),
            Request::Goodbye => return self.goodbye(key, rid, now),
            Request::ConnectionsDetail(list) => return self.connections_detail(key, rid, list, now),
            _ => {}
        }
        let Some(conn) = self.conns.get(key) else { return };
        let (sid, admin) = (conn.sid, conn.session.is_admin());
        if let Request::Revoke(revoke) = &request {
            self.log_revoke(key, revoke);
        }
        // Cluster mode: listings wait for a read index (docs/CLUSTER.md, "Listings").
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster.as_deref_mut() {
            if let Some(listing) = super::cluster::Listing::of(&request) {
                return cluster.read(key, conn.id, rid, listing);
            }
        }
        #[cfg(feature = "cluster")]
        let ran = match self.cluster.as_deref_mut() {
            Some(cluster) => run(cluster, now, (sid, admin), rid, request, &self.config, &mut self.outputs),
            None => run(&mut self.table, now, (sid, admin), rid, request, &self.config, &mut self.outputs),
        };
        #[cfg(not(feature = "cluster"))]
        let ran = run(&mut self.table, now, (sid, admin), rid, request, &self.config, &mut self.outputs);
        match ran {
            Ran::Outputs => self.deliver_outputs(now),
            Ran::Reply(response) => Server::send(self, key, rid, &response),
            Ran::Stats => {
                let response = Response::Stats(self.stats_entries(now));
                Server::send(self, key, rid, &response);
            }
        }
    }

    fn count(&mut self, bad: bool) {
        if bad {
            self.stats.bad_requests += 1;
        } else {
            self.stats.requests += 1;
        }
    }

    fn names(&self, key: usize) -> (u64, &str) {
        self.conns.get(key).map_or((0, ""), |c| (c.serial, c.label.as_str()))
    }
}

/// Where [`run`] sends commands and reads listings: the lock table itself, or in cluster mode
/// the raft node that proposes them and owns the replicated table.
pub(crate) trait StateMachine {
    /// Applies (or proposes) `command`; outputs that are ready go to `outputs`.
    fn apply(&mut self, now: Tick, command: Command, outputs: &mut Vec<Output>);
    /// The table listings read.
    fn read(&self) -> &LockTable;
    /// The table's time at the host's `now` (they differ in cluster mode).
    fn read_now(&self, now: Tick) -> Tick {
        now
    }
}

impl StateMachine for LockTable {
    #[inline]
    fn apply(&mut self, now: Tick, command: Command, outputs: &mut Vec<Output>) {
        LockTable::apply(self, now, &command, outputs);
    }

    #[inline]
    fn read(&self) -> &LockTable {
        self
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
pub(crate) fn run<M: StateMachine>(
    table: &mut M,
    now: Tick,
    (session, admin): (SessionId, bool),
    rid: u32,
    request: Request<'_>,
    config: &Config,
    outputs: &mut Vec<Output>,
) -> Ran {
    let max_frame = config.max_frame;
    match request {
        Request::Lock(lock) => {
            let timeout_ms = server_timeout(lock.timeout_ms);
            let (name, queue_max) = (Name::from(lock.name), lock.queue_max);
            let opts = LockOpts::default();
            let cmd = Command::Lock { session, request_id: rid, name, timeout_ms, queue_max, opts };
            table.apply(now, cmd, outputs);
            Ran::Outputs
        }
        Request::LockExt(ext) => {
            let (name, timeout_ms, queue_max) =
                (Name::from(ext.name), server_timeout(ext.timeout_ms), ext.queue_max);
            let opts = lock_opts(&ext);
            let cmd = Command::Lock { session, request_id: rid, name, timeout_ms, queue_max, opts };
            table.apply(now, cmd, outputs);
            Ran::Outputs
        }
        Request::Unlock(name) => {
            let cmd = Command::Unlock { session, request_id: rid, name: Name::from(name), token: None };
            table.apply(now, cmd, outputs);
            Ran::Outputs
        }
        Request::Downgrade(t) => {
            let cmd =
                Command::Downgrade { session, request_id: rid, name: Name::from(t.name), token: t.token };
            table.apply(now, cmd, outputs);
            Ran::Outputs
        }
        Request::Renew(t) => {
            let cmd = Command::Renew { session, request_id: rid, name: Name::from(t.name), token: t.token };
            table.apply(now, cmd, outputs);
            Ran::Outputs
        }
        // Operators' requests: only with admin rights (PROTOCOL.md §6.12), checked first.
        Request::Revoke(_) | Request::Kick(_) if !admin => {
            let what = if matches!(request, Request::Kick(_)) { "KICK" } else { "REVOKE" };
            Ran::Reply(Response::error(ErrorCode::Forbidden, format!("{what} needs admin rights")))
        }
        Request::Revoke(r) => {
            let cmd = Command::Revoke { session, request_id: rid, name: Name::from(r.name), token: r.token };
            table.apply(now, cmd, outputs);
            Ran::Outputs
        }
        Request::Check(t) => {
            let cmd = Command::Check { session, request_id: rid, name: Name::from(t.name), token: t.token };
            table.apply(now, cmd, outputs);
            Ran::Outputs
        }
        Request::UnlockToken(t) => {
            let cmd =
                Command::Unlock { session, request_id: rid, name: Name::from(t.name), token: Some(t.token) };
            table.apply(now, cmd, outputs);
            Ran::Outputs
        }
        Request::Reset => {
            table.apply(now, Command::Reset { session, request_id: rid }, outputs);
            Ran::Outputs
        }
        Request::Locks(list) => Ran::Reply(table.read().locks_within(list.prefix, list.max, max_frame)),
        Request::LocksDetail(list) => {
            Ran::Reply(locks_detail(table.read(), table.read_now(now), list.prefix, list.max, max_frame))
        }
        Request::Connections(list) => {
            Ran::Reply(table.read().connections_within(list.prefix, list.max, max_frame))
        }
        Request::MyLocks => Ran::Reply(table.read().my_locks_within(session, max_frame)),
        Request::MyLocksMatching(list) => {
            Ran::Reply(table.read().my_locks_matching(session, list.prefix, list.max, max_frame))
        }
        Request::Top(max) => Ran::Reply(table.read().top_within(table.read_now(now), max, max_frame)),
        Request::Sessions(max) => {
            Ran::Reply(table.read().sessions_within(table.read_now(now), max, max_frame))
        }
        Request::Stats => Ran::Stats,
        Request::SessionOpen(open) => {
            table.apply(now, super::resume::open_command(session, rid, &open, config), outputs);
            Ran::Outputs
        }
        // The session answers these itself (it owns the handshake); kept total for safety.
        Request::Ping(_) => Ran::Reply(Response::Pong),
        Request::Auth(_) => Ran::Reply(Response::AuthOk),
        Request::Hello(_) => Ran::Reply(Response::error(
            crate::protocol::ErrorCode::BadHandshake,
            "HELLO was already received",
        )),
        // The server closes connections itself (it takes KICK before `run`) and answers
        // CONNECTIONS_DETAIL itself (it knows the connection ids), the session answers
        // ADMIN_AUTH; the server takes SESSION_RESUME and GOODBYE before `run` too (they move
        // or close connections): refused here, should one arrive (the loopback host has no
        // connections).
        Request::Kick(_)
        | Request::AdminAuth(_)
        | Request::ConnectionsDetail(_)
        | Request::SessionResume(_)
        | Request::Goodbye => {
            let e = DecodeError::UnknownOpcode(request.opcode());
            Ran::Reply(Response::error(e.code(), e.to_string()))
        }
    }
}

/// Ticks are whole milliseconds rounded down, so a request may have arrived up to a tick after
/// `now`: one more tick guarantees a wait never ends early. Zero (try once) stays zero.
fn server_timeout(timeout_ms: Option<u32>) -> Option<u32> {
    timeout_ms.map(|ms| if ms == 0 { 0 } else { ms.saturating_add(1) })
}

/// The table's terms for a LOCK_EXT. The decoder has checked the ranges of mode, permits and
/// limit (PROTOCOL.md §3.12); what the table does not implement yet it refuses itself.
fn lock_opts(ext: &LockExtRequest<'_>) -> LockOpts {
    let mode = match ext.mode {
        WireMode::Exclusive => Mode::Exclusive,
        WireMode::Shared => Mode::Shared,
        WireMode::Semaphore => Mode::Permits { count: ext.permits, limit: ext.limit },
    };
    LockOpts {
        mode,
        lease_ms: ext.lease_ms,
        max_hold_ms: ext.max_hold_ms,
        lock_delay_ms: ext.lock_delay_ms,
        notify_contention: ext.notify_contention,
        skip_while_detached: ext.skip_while_detached,
    }
}

/// LOCKS_DETAIL: the locks LOCKS would list (the same selection, order and bound), each in
/// detail, built only as far as the frame bound lets it (PROTOCOL.md §4.28).
fn locks_detail(table: &LockTable, now: Tick, prefix: &str, max: u32, max_frame: u32) -> Response {
    let Response::Locks { locks, truncated } = table.locks_within(prefix, max, max_frame) else {
        return Response::LocksDetail { locks: Vec::new(), truncated: true };
    };
    let (locks, cut) = table.locks_detail_within(now, locks.iter().map(|l| l.name.as_str()), max_frame);
    Response::LocksDetail { locks, truncated: truncated || cut }
}
