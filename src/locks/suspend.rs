//! Resumable sessions (issue 14, PROTOCOL.md §6.14) in the table: a session opened with a
//! grace outlives its connection. When the server reports the connection lost (`Suspend`), the
//! session is *detached*: its grants, waits, leases and wait timers carry on exactly as if the
//! connection were there, and every output addressed to it is kept, in order, in its outbox
//! instead of being handed to the server. `Resume` hands the outbox back after a `Resumed`
//! answer; the grace timer, if it fires first, ends the session as today's detach does
//! (batched releases, lock-delay applies).
//!
//! The outbox is table state, not server state, so a replica applying the same commands keeps
//! the same outbox (the later Raft issue). Its size needs no cap of its own: a detached session
//! sends no request, so each of its waits ends at most once (one answer) and each grant gets at
//! most one LOST and one CONTENDED; the outbox holds at most 3 outputs per hold or wait the
//! session had when it was detached (plus a pending RESET's answer), each under `max_frame`.
//!
//! Cost to sessions that never detach: one `Option<Box<_>>` in their state, and one comparison
//! of a counter per command (`apply` diverts outputs only while some session is detached).

use super::table::{LockTable, Timer};
use super::{Output, SessionId};
use crate::protocol::{
    secrets_match, str16_size, DetachedSession, ErrorCode, Response, Resumed, SessionOk, DETACHED_FIXED,
    LIST_COUNT_SIZE, MIN_FRAME_LEN, SESSION_SECRET_LEN,
};
use crate::wheel::{Tick, TimerHandle};

/// What a resumable session carries beyond a plain one; boxed, so plain sessions pay a pointer.
#[derive(Debug)]
pub(super) struct Resumable {
    pub(super) secret: [u8; SESSION_SECRET_LEN],
    pub(super) grace_ms: u32,
    pub(super) detached: Option<Detached>,
}

impl Resumable {
    pub(super) fn is_detached(&self) -> bool {
        self.detached.is_some()
    }
}

/// A detached session: when its grace ends, and what it was sent meanwhile.
#[derive(Debug)]
pub(super) struct Detached {
    pub(super) timer: TimerHandle,
    pub(super) until: Tick,
    /// The label it had while attached; the listing shows it marked detached meanwhile.
    pub(super) label: Box<str>,
    pub(super) outbox: Vec<Output>,
}

/// The suffix listings show after a detached session's label.
pub const DETACHED_SUFFIX: &str = " (detached)";

/// The counters of resumable sessions, for STATS and /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Sessions opened with a nonzero grace (monotone).
    pub opened: u64,
    /// Sessions detached now (a gauge).
    pub detached: usize,
    /// Resumes served, takeovers of an attached session included (monotone).
    pub resumed: u64,
    /// Of those, takeovers of a session whose connection was still open (monotone).
    pub taken_over: u64,
    /// Sessions whose grace ran out before a resume (monotone).
    pub expired: u64,
    /// SESSION_RESUME refused with `bad_session` (monotone): unknown id, wrong secret, ended.
    pub resume_failures: u64,
    /// Waits skipped, not granted, because their turn came while detached (monotone, §6.14).
    pub skipped: u64,
}

/// One detached session, for listings: who, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedInfo {
    pub session: SessionId,
    pub label: String,
    /// Milliseconds of grace left at the `now` asked for.
    pub grace_left_ms: u64,
    /// Outputs waiting in its outbox.
    pub kept: usize,
    /// Grants it holds and waits it has.
    pub held: usize,
    pub waiting: usize,
}

impl LockTable {
    /// SESSION_OPEN: makes `session` resumable with `grace_ms` (the server has clamped it to its
    /// maximum), `secret` (the server drew it from the OS) and whether its waits skip while
    /// detached by default. Grace 0 opens nothing.
    pub(super) fn open_session(
        &mut self,
        session: SessionId,
        request_id: u32,
        (grace_ms, secret, skip_default): (u32, [u8; SESSION_SECRET_LEN], bool),
        out: &mut Vec<Output>,
    ) {
        let Some(state) = self.sessions.get_mut(&session).filter(|state| !state.gone) else { return };
        let response = if state.resumable.is_some() {
            Response::error(ErrorCode::SessionState, "the connection has a session already")
        } else if state.count() != 0 || state.releasing {
            Response::error(ErrorCode::SessionState, "the connection holds or waits for a lock")
        } else if grace_ms == 0 {
            Response::SessionOk(SessionOk::NONE)
        } else {
            state.resumable = Some(Box::new(Resumable { secret, grace_ms, detached: None }));
            state.skip_default = skip_default;
            self.session_stats.opened += 1;
            Response::SessionOk(SessionOk { session_id: session.0, secret, grace_ms })
        };
        out.push(Output { session, request_id, lock: None, response });
    }

    /// Every session that is attached (not detached, not gone), in id order: after a
    /// failover the new leader's server suspends those it does not serve (docs/CLUSTER.md).
    /// O(sessions), once per takeover.
    pub fn attached_sessions(&self) -> Vec<SessionId> {
        let mut sessions: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, state)| !state.gone && state.resumable.as_ref().is_none_or(|r| r.detached.is_none()))
            .map(|(&id, _)| id)
            .collect();
        sessions.sort_unstable();
        sessions
    }

    /// The connection of `session` is lost: a resumable session is detached for its grace (the
    /// timer ends it one tick late rather than early: `now` is rounded down); any other is
    /// detached for good, as `Command::Detach` does.
    pub(super) fn suspend(&mut self, now: Tick, session: SessionId, out: &mut Vec<Output>) {
        let Some(state) = self.sessions.get_mut(&session).filter(|state| !state.gone) else { return };
        let Some(resumable) = state.resumable.as_deref_mut() else { return self.detach(now, session, out) };
        if resumable.detached.is_some() {
            return;
        }
        let until = now.saturating_add(u64::from(resumable.grace_ms) + 1);
        let timer = self.timers.insert(until, Timer::Grace { session });
        let marked: Box<str> = format!("{}{DETACHED_SUFFIX}", state.label).into();
        let label = std::mem::replace(&mut state.label, marked);
        resumable.detached = Some(Detached { timer, until, label, outbox: Vec::new() });
        self.detached += 1;
        self.grace_ends.insert((until, session));
    }

    /// SESSION_RESUME by the fresh session `from` (a new connection) of `session`. On success
    /// the table answers `Resumed` to `session` (the server routes it to `from`'s connection
    /// from then on), with `TakenOver` (request id 0) first when `session` was still attached,
    /// then replays the outbox; `from` is forgotten, and `session` takes its label. Refusals
    /// are answered to `from`, which stays as it was.
    pub(super) fn resume(
        &mut self,
        session: SessionId,
        request_id: u32,
        from: SessionId,
        secret: &[u8; SESSION_SECRET_LEN],
        out: &mut Vec<Output>,
    ) {
        let refuse = |out: &mut Vec<Output>, code, message: &str| {
            out.push(Output {
                session: from,
                request_id,
                lock: None,
                response: Response::error(code, message),
            })
        };
        let Some(fresh) = self.sessions.get(&from).filter(|state| !state.gone) else { return };
        if fresh.resumable.is_some() || session == from {
            return refuse(out, ErrorCode::SessionState, "the connection has a session already");
        }
        if fresh.count() != 0 || fresh.releasing {
            return refuse(out, ErrorCode::SessionState, "the connection holds or waits for a lock");
        }
        let valid = self
            .sessions
            .get(&session)
            .filter(|state| !state.gone)
            .and_then(|state| state.resumable.as_deref().filter(|r| secrets_match(&r.secret, secret)));
        if valid.is_none() {
            self.session_stats.resume_failures += 1;
            return refuse(out, ErrorCode::BadSession, "session cannot be resumed");
        }
        let label = self.sessions.remove(&from).map(|state| state.label).unwrap_or_default();
        let Some(state) = self.sessions.get_mut(&session) else { return };
        state.label = label;
        let Some(resumable) = state.resumable.as_deref_mut() else { return };
        let grace_ms = resumable.grace_ms;
        let outbox = match resumable.detached.take() {
            Some(detached) => {
                self.timers.cancel(detached.timer);
                self.detached -= 1;
                self.grace_ends.remove(&(detached.until, session));
                detached.outbox
            }
            None => {
                self.session_stats.taken_over += 1;
                let taken = Response::error(ErrorCode::TakenOver, "taken over by another connection");
                out.push(Output { session, request_id: 0, lock: None, response: taken });
                Vec::new()
            }
        };
        self.session_stats.resumed += 1;
        let resumed = Resumed { grace_ms, replayed: u32::try_from(outbox.len()).unwrap_or(u32::MAX) };
        out.push(Output { session, request_id, lock: None, response: Response::Resumed(resumed) });
        out.extend(outbox);
    }

    /// The grace timer of `session` fired: unless it was resumed meanwhile (the timer is then
    /// cancelled, so this is a stale one), the session ends as a lost plain connection does.
    pub(super) fn grace_end(&mut self, now: Tick, session: SessionId, out: &mut Vec<Output>) {
        // What this command sent it before its grace ended (an earlier timer of the same
        // batch) was sent while detached: it goes, kept, with the session.
        self.divert_detached(out);
        if self.take_detached(session).is_some() {
            self.session_stats.expired += 1;
            self.detach(now, session, out);
        }
    }

    /// `Command::Detach` of a session that may be detached: its kept outputs are dropped with it.
    pub(super) fn end_session(&mut self, now: Tick, session: SessionId, out: &mut Vec<Output>) {
        if let Some(detached) = self.take_detached(session) {
            self.timers.cancel(detached.timer);
        }
        self.detach(now, session, out);
    }

    /// Takes the detached state of `session` (restoring its label), if it is detached.
    fn take_detached(&mut self, session: SessionId) -> Option<Detached> {
        let state = self.sessions.get_mut(&session)?;
        let detached = state.resumable.as_deref_mut()?.detached.take()?;
        state.label = detached.label.clone();
        self.detached -= 1;
        self.grace_ends.remove(&(detached.until, session));
        Some(detached)
    }

    /// Moves the outputs from `divert_from` on that are addressed to a detached session into
    /// its outbox, keeping the order of the rest, and marks them all handled. Within one command
    /// sessions only stop being detached (a `Suspend` outputs nothing), so what was handled
    /// stays right. O(new outputs) hash lookups; called only while some session is detached.
    pub(super) fn divert_detached(&mut self, out: &mut Vec<Output>) {
        let start = self.divert_from.min(out.len());
        if out.len() == start {
            return;
        }
        for output in out.split_off(start) {
            let detached = self
                .sessions
                .get_mut(&output.session)
                .and_then(|state| state.resumable.as_deref_mut())
                .and_then(|r| r.detached.as_mut());
            match detached {
                Some(detached) => detached.outbox.push(output),
                None => out.push(output),
            }
        }
        self.divert_from = out.len();
    }

    /// Self-check: the detached gauge counts the detached sessions, each with a live grace
    /// timer for itself at its end. Returns the number of grace timers.
    pub(super) fn check_detached(&self) -> Result<usize, String> {
        let mut count = 0;
        for (&session, state) in &self.sessions {
            let Some(detached) = state.resumable.as_deref().and_then(|r| r.detached.as_ref()) else {
                continue;
            };
            match self.timers.get(detached.timer) {
                Some((at, Timer::Grace { session: of })) if at == detached.until && *of == session => {}
                other => return Err(format!("{session:?} is detached with grace timer {other:?}")),
            }
            if !self.grace_ends.contains(&(detached.until, session)) {
                return Err(format!(
                    "{session:?} is detached until {} but not in the grace ends",
                    detached.until
                ));
            }
            count += 1;
        }
        if count != self.detached || self.grace_ends.len() != count {
            return Err(format!(
                "detached gauge {} and {} grace ends for {count} detached sessions",
                self.detached,
                self.grace_ends.len()
            ));
        }
        Ok(count)
    }

    /// The counters of resumable sessions.
    pub fn session_stats(&self) -> SessionStats {
        SessionStats { detached: self.detached, ..self.session_stats }
    }

    /// Whether `session` is resumable (it sent SESSION_OPEN and got a grace).
    pub fn is_resumable(&self, session: SessionId) -> bool {
        self.sessions.get(&session).is_some_and(|state| state.resumable.is_some())
    }

    /// Milliseconds of grace left at `now` to the detached session whose grace ends first;
    /// `None` when none is detached. O(1): the first of the ordered grace ends (STATS and
    /// /metrics ask; STATS may be asked for on every request).
    pub fn soonest_grace_left(&self, now: Tick) -> Option<u64> {
        self.grace_ends.first().map(|&(until, _)| until.saturating_sub(now))
    }

    /// The detached sessions, soonest grace end first, at most `max`: O(sessions) to find
    /// them, so it serves listings, not the hot path.
    pub fn detached_sessions(&self, now: Tick, max: usize) -> Vec<DetachedInfo> {
        let mut found: Vec<(Tick, DetachedInfo)> = self
            .sessions
            .iter()
            .filter_map(|(&session, state)| {
                let detached = state.resumable.as_deref()?.detached.as_ref()?;
                let info = DetachedInfo {
                    session,
                    label: detached.label.to_string(),
                    grace_left_ms: detached.until.saturating_sub(now),
                    kept: detached.outbox.len(),
                    held: state.held,
                    waiting: state.count() - state.held,
                };
                Some((detached.until, info))
            })
            .collect();
        found.sort_unstable_by_key(|(until, info)| (*until, info.session));
        found.into_iter().take(max).map(|(_, info)| info).collect()
    }

    /// SESSIONS (PROTOCOL.md §3.25): the detached sessions, soonest grace end first, at most
    /// `max` (0: the listing default, which is also the ceiling) and as many as fit a frame of
    /// `max_frame`; `truncated` when any was left out. A walk of the first entries of the
    /// ordered grace ends (no pass over the sessions, no sort), an entry built only for what is
    /// sent.
    pub fn sessions_within(&self, now: Tick, max: u32, max_frame: u32) -> Response {
        if self.detached == 0 {
            return Response::Sessions { sessions: Vec::new(), truncated: false };
        }
        let cap = self.list_cap(max);
        // The frame header, `truncated` and the count come first (§4.32).
        let mut room = (max_frame as usize).saturating_sub(MIN_FRAME_LEN as usize + 1 + LIST_COUNT_SIZE);
        let wire = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let mut sessions = Vec::new();
        for &(until, id) in &self.grace_ends {
            let Some(state) = self.sessions.get(&id) else { continue };
            let Some(detached) = state.resumable.as_deref().and_then(|r| r.detached.as_ref()) else {
                continue;
            };
            let size = str16_size(&detached.label) + DETACHED_FIXED;
            if sessions.len() == cap || size > room {
                break;
            }
            room -= size;
            sessions.push(DetachedSession {
                label: detached.label.to_string(),
                session_id: id.0,
                grace_left_ms: u32::try_from(until.saturating_sub(now)).unwrap_or(u32::MAX),
                held: wire(state.held),
                waiting: wire(state.count() - state.held),
                kept: wire(detached.outbox.len()),
            });
        }
        let truncated = sessions.len() < self.grace_ends.len();
        Response::Sessions { sessions, truncated }
    }
}
