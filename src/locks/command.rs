//! The one way in: every change to the table is an owned [`Command`] handed to
//! [`LockTable::apply`], a value that could be written to a log and applied again on another
//! replica to the same effect. The transitions themselves live in `table` and `release`.

use super::table::{LockTable, Terms};
use super::{Mode, Name, Output};
use crate::protocol::SESSION_SECRET_LEN;
use crate::wheel::Tick;

/// A session of the table: opaque, allocated by the table's counter (see
/// [`LockTable::next_session`]) and carried in `Attach`, so replicas applying the same
/// commands agree on it; it is never reused and is not tied to a socket. The server maps it
/// to its own connection key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// A change to the lock table. Times are not part of a command: `apply` is handed `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Registers `session` under its listing label (`ip:port` or `unix:N`), or relabels it.
    Attach { session: SessionId, label: String },
    /// LOCK: acquire, report an existing hold or wait, refuse, or join the queue. The timeout
    /// is taken as given: rounding for the caller's clock resolution is the caller's business.
    Lock {
        session: SessionId,
        request_id: u32,
        name: Name,
        timeout_ms: Option<u32>,
        queue_max: Option<u32>,
        /// How to hold it (issue 13); `LockOpts::default()` is the v1 LOCK.
        opts: LockOpts,
    },
    /// UNLOCK: the holder releases (the next waiter is granted); a waiter abandons its wait.
    /// With a `token`, only the session's grant of that token is released: a waiter's wait is
    /// not abandoned, and any other token is `ReleaseFailed`.
    Unlock { session: SessionId, request_id: u32, name: Name, token: Option<u64> },
    /// DOWNGRADE: the session's exclusive grant `token` of `name` becomes shared, keeping its
    /// token; the shared waiters at the head of the queue are granted with it.
    Downgrade { session: SessionId, request_id: u32, name: Name, token: u64 },
    /// RENEW: the lease of the session's grant `token` of `name` starts again from `now`.
    Renew { session: SessionId, request_id: u32, name: Name, token: u64 },
    /// REVOKE: ends grant `token` of `name` (every grant of it if `None`, in batches) with LOST
    /// `revoked` to its holder; the server checks the session's right to ask first.
    Revoke { session: SessionId, request_id: u32, name: Name, token: Option<u64> },
    /// CHECK: does grant `token` hold `name` now? Any session may ask; nothing changes.
    Check { session: SessionId, request_id: u32, name: Name, token: u64 },
    /// RESET: every wait of the session is cancelled and its holds released, then `ResetOk`.
    Reset { session: SessionId, request_id: u32 },
    /// The session is gone: its waits end unanswered, its holds are released, it is forgotten.
    /// A detached resumable session goes too, its kept outputs with it.
    Detach { session: SessionId },
    /// SESSION_OPEN (issue 14): `session` becomes resumable with `grace_ms` (0: it does not) and
    /// `secret`; answered `SessionOk`, or `SessionState` when it holds or awaits anything.
    /// With `skip_while_detached`, every wait of the session skips as `LockOpts` can ask.
    OpenSession {
        session: SessionId,
        request_id: u32,
        grace_ms: u32,
        secret: [u8; SESSION_SECRET_LEN],
        skip_while_detached: bool,
    },
    /// The connection of `session` is lost: a resumable session is detached for its grace
    /// (its outputs kept for a resume); any other is detached as by `Detach`.
    Suspend { session: SessionId },
    /// SESSION_RESUME of `session` by the fresh session `from` of a new connection: answered
    /// `Resumed` to `session` (then the kept outputs), or refused to `from` (`suspend.rs`).
    Resume { session: SessionId, request_id: u32, from: SessionId, secret: [u8; SESSION_SECRET_LEN] },
    /// One turn of work that was left for later: continue pending RESET and detach releases
    /// (refilling the inline release budget), REVOKEs of many grants and runs of waiters too
    /// long to grant at once, then time out the waits due by `now`, each bounded by its batch. The server applies it once per turn of its loop.
    Expire,
}

/// What a LOCK asks for beyond the v1 request (issue 13). Plain values: the table parses no
/// wire form. The default is the v1 LOCK: exclusive, bound to the session, nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockOpts {
    pub mode: Mode,
    /// The grant ends by itself this long after it is made (or last renewed) unless renewed.
    pub lease_ms: Option<u32>,
    /// The grant ends by itself this long after it is made, renewed or not.
    pub max_hold_ms: Option<u32>,
    /// After the grant ends abnormally, the name stays unavailable this long.
    pub lock_delay_ms: u32,
    /// Tell the holder when someone starts waiting behind it.
    pub notify_contention: bool,
    /// If the wait's turn comes while its session is detached, skip it (ERROR `skipped`)
    /// rather than grant it (PROTOCOL.md §6.14). Changes nothing for a lock granted at once.
    pub skip_while_detached: bool,
}

impl LockTable {
    /// Applies one command at `now`, pushing the responses it causes, in causal order, to `out`.
    pub fn apply(&mut self, now: Tick, cmd: &Command, out: &mut Vec<Output>) {
        self.divert_from = out.len();
        match cmd {
            Command::Attach { session, label } => self.attach(*session, label),
            Command::Lock { session, request_id, name, timeout_ms, queue_max, opts } => {
                let terms = Terms { timeout_ms: *timeout_ms, queue_max: *queue_max, opts: *opts };
                self.lock(now, *session, *request_id, name, terms, out)
            }
            Command::Unlock { session, request_id, name, token } => {
                self.unlock(now, *session, *request_id, name, *token, out)
            }
            Command::Downgrade { session, request_id, name, token } => {
                self.downgrade(now, *session, *request_id, name, *token, out)
            }
            Command::Renew { session, request_id, name, token } => {
                self.renew(now, *session, *request_id, name, *token, out)
            }
            Command::Revoke { session, request_id, name, token } => {
                self.revoke(now, *session, *request_id, name, *token, out)
            }
            Command::Check { session, request_id, name, token } => {
                self.check(now, *session, *request_id, name, *token, out)
            }
            Command::Reset { session, request_id } => self.reset(now, *session, *request_id, out),
            Command::Detach { session } => self.end_session(now, *session, out),
            Command::OpenSession { session, request_id, grace_ms, secret, skip_while_detached } => {
                let terms = (*grace_ms, *secret, *skip_while_detached);
                self.open_session(*session, *request_id, terms, out)
            }
            Command::Suspend { session } => self.suspend(now, *session, out),
            Command::Resume { session, request_id, from, secret } => {
                self.resume(*session, *request_id, *from, secret, out)
            }
            // The server applies it every turn: while nothing is pending and no timer is set
            // (every plain lock and unlock), it only refills the inline release budget and
            // moves the wheel's time, as the steps below would, in a few tests (issue 12).
            Command::Expire if self.nothing_pending() => {
                self.inline_budget = self.release_batch;
                self.timers.advance_empty(now);
            }
            Command::Expire => {
                self.release_step(now, out);
                self.revoke_step(now, out);
                self.grant_step(now, out);
                self.expire(now, out);
            }
        }
        // What is addressed to a detached session waits in its outbox for a resume.
        if self.detached != 0 {
            self.divert_detached(out);
        }
    }

    /// No release, revoke or grant run is pending and no timer is set: `Command::Expire` has
    /// nothing to do but refill the inline budget.
    #[inline]
    fn nothing_pending(&self) -> bool {
        self.timers.is_empty()
            && self.releasing.is_empty()
            && self.revoking.is_empty()
            && self.granting.is_empty()
    }

    /// The id the next `Attach` should carry: one above every id the table has seen. A query,
    /// so that the counter itself moves only by applied commands and replicas agree on it.
    pub fn next_session(&self) -> SessionId {
        SessionId(self.next_session)
    }

    /// Moves the session counter past `session`, so `next_session` never hands it out again.
    pub(super) fn saw_session(&mut self, session: SessionId) {
        self.next_session = self.next_session.max(session.0.saturating_add(1));
    }
}
