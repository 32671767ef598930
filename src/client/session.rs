//! Resumable sessions on the client side, without I/O (PROTOCOL.md §3.22-§3.24, §6.14): the
//! SESSION_OPEN / SESSION_RESUME / GOODBYE bytes, what their answers mean, how long to wait
//! between reconnect attempts, and how the answer to a request sent again after a resume stands
//! for the answer the lost connection never delivered.
//!
//! The connection (`conn.rs`) does the I/O: it opens the session in its handshake, and when its
//! socket drops it reconnects, resumes, lets the replay answer what it can under the original
//! request ids, and sends the rest again through [`resent_answer`]. Both clients, blocking
//! (`resume.rs`) and async (`tokio/resume.rs`), take from here the messages, the attempts of a
//! resume ([`Retry`], handed the time), what each request sent again is ([`Resent::of`]) and
//! what its answer means, so they resume alike.

use std::time::{Duration, Instant};

use super::answer::{unexpected, Track};
use super::{Error, Result};
use crate::protocol::{ErrorCode, Request, Response, Resumed, SessionOk, SessionOpen, SessionResume};

/// What the client keeps of the server's SESSION_OK: enough to resume.
#[derive(Clone, Copy)]
pub(crate) struct Session {
    pub(crate) id: u64,
    pub(crate) secret: [u8; crate::protocol::SESSION_SECRET_LEN],
    /// The grace the server granted: how long the client tries to resume after a loss.
    pub(crate) grace: Duration,
}

/// The secret stays out of logs: `Debug` shows the id and the grace only.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.id).field("grace", &self.grace).finish_non_exhaustive()
    }
}

/// The SESSION_OPEN asking for `grace` (capped at `u32::MAX` ms), under request id `id`.
pub(crate) fn open_request(grace: Duration, id: u32) -> Vec<u8> {
    let grace_ms = u32::try_from(grace.as_millis()).unwrap_or(u32::MAX).max(1);
    let mut out = Vec::new();
    Request::SessionOpen(SessionOpen { grace_ms, skip_while_detached: false }).encode(id, &mut out);
    out
}

/// The answer to SESSION_OPEN: the session, or `None` when the server opened none (its maximum
/// grace is 0, or it predates sessions and does not know the opcode): the connection then works
/// exactly as one that never asked.
pub(crate) fn opened(resp: Response) -> Result<Option<Session>> {
    match resp {
        Response::SessionOk(ok) if ok.is_open() => Ok(Some(session_of(&ok))),
        Response::SessionOk(_) => Ok(None),
        Response::Error { code: ErrorCode::UnknownOpcode, .. } => Ok(None),
        Response::Error { code, message } => Err(Error::server(code, message)),
        other => Err(unexpected(&other, "SESSION_OPEN")),
    }
}

fn session_of(ok: &SessionOk) -> Session {
    Session { id: ok.session_id, secret: ok.secret, grace: Duration::from_millis(ok.grace_ms.into()) }
}

/// The SESSION_RESUME of `session` under request id `id`.
pub(crate) fn resume_request(session: &Session, id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    Request::SessionResume(SessionResume { session_id: session.id, secret: session.secret })
        .encode(id, &mut out);
    out
}

/// The answer to SESSION_RESUME: how many replayed frames follow. `bad_session` means the
/// session is gone for good (its grace ran out on the server): [`is_gone`] tells it apart.
pub(crate) fn resumed(resp: Response) -> Result<Resumed> {
    match resp {
        Response::Resumed(resumed) => Ok(resumed),
        Response::Error { code, message } => Err(Error::server(code, message)),
        other => Err(unexpected(&other, "SESSION_RESUME")),
    }
}

/// True when a failed resume can never succeed: the server no longer has the session, or
/// refuses this client's credentials. Anything else (no route, refused, a timeout, a server
/// shutting down) may pass, so the client tries again while the grace lasts.
pub(crate) fn is_gone(e: &Error) -> bool {
    matches!(
        e.server_code(),
        Some(
            ErrorCode::BadSession | ErrorCode::AuthFailed | ErrorCode::AuthRequired | ErrorCode::SessionState
        )
    )
}

/// The GOODBYE frame under request id `id`.
pub(crate) fn goodbye_request(id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    Request::Goodbye.encode(id, &mut out);
    out
}

/// The pause before reconnect attempt `attempt` (0 = the first): 20 ms, doubling up to 500 ms,
/// so a blip is bridged at once and a longer outage costs the server a connection attempt
/// twice a second at most.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(20u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_millis(500))
}

/// The attempts of one resume, without I/O or a clock: the caller says when it is (`now`),
/// tries when told, and reports each failure.
#[derive(Debug)]
pub(crate) struct Retry {
    /// Why the link was lost, for the final error.
    reason: String,
    grace: Duration,
    deadline: Instant,
    attempt: u32,
    /// The last attempt's error.
    last: String,
}

/// What a resume does next, as [`Retry::next`] says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Try once, each step within this long (what is left of the grace, at most the
    /// connect timeout).
    Try(Duration),
    /// The grace is over: the connection is lost, for this reason.
    GiveUp(String),
}

impl Retry {
    /// A resume of `session` starting at `now`, after the link was lost for `reason`.
    pub(crate) fn new(session: &Session, reason: String, now: Instant) -> Retry {
        let last = reason.clone();
        Retry { reason, grace: session.grace, deadline: now + session.grace, attempt: 0, last }
    }

    /// The next step at `now`.
    pub(crate) fn next(&self, now: Instant, connect_timeout: Duration) -> Next {
        let left = self.deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Next::GiveUp(format!(
                "{}; the session was not resumed within its grace of {:?} ({})",
                self.reason, self.grace, self.last
            ));
        }
        Next::Try(left.min(connect_timeout))
    }

    /// An attempt failed with `e` and the next one follows at once (another member of a
    /// cluster): `Err` with the reason the connection is lost when the session is gone for
    /// good ([`is_gone`]), as [`Retry::failed`].
    pub(crate) fn note(&mut self, e: &Error) -> std::result::Result<(), String> {
        if is_gone(e) {
            return Err(format!("{}; the session cannot be resumed: {e}", self.reason));
        }
        self.last = e.to_string();
        Ok(())
    }

    /// The attempt failed at `now` with `e`: `Ok` with the pause before the next one, or
    /// `Err` with the reason the connection is lost when the session is gone for good
    /// ([`is_gone`]).
    pub(crate) fn failed(&mut self, e: &Error, now: Instant) -> std::result::Result<Duration, String> {
        self.note(e)?;
        let pause = backoff(self.attempt).min(self.deadline.saturating_duration_since(now));
        self.attempt = self.attempt.saturating_add(1);
        Ok(pause)
    }
}

/// What a request sent again after a resume was, for [`resent_answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resent {
    /// LOCK or LOCK_EXT; `held_before`: the client already held the name when it sent it.
    Lock { held_before: bool },
    /// UNLOCK or UNLOCK_TOKEN; `held_before`: the client believed it held the name.
    Unlock { held_before: bool },
    /// Anything else: the new answer is the answer.
    Other,
}

impl Resent {
    /// What a request tracked by `track` is when it is sent again; `held`: whether the
    /// client holds a full name now.
    pub(crate) fn of(track: &Track, held: impl Fn(&str) -> bool) -> Resent {
        match track {
            Track::Lock(name) => Resent::Lock { held_before: held(name) },
            Track::Unlock(name) => Resent::Unlock { held_before: held(name) },
            Track::None | Track::Reset => Resent::Other,
        }
    }

    /// `self` as it reads when its answer comes, for a request tracked by `root` (the
    /// original): whether the name is held is read then, not when it was sent again. Of two
    /// resent LOCKs of one name (both answers lost), the first ALREADY_ACQUIRED stands for the
    /// grant and is recorded held, so the second is the nested one it was.
    pub(crate) fn when_answered(self, root: Option<&Track>, held: impl Fn(&str) -> bool) -> Resent {
        match (self, root) {
            (Resent::Lock { held_before: false }, Some(Track::Lock(name))) if held(name) => {
                Resent::Lock { held_before: true }
            }
            (what, _) => what,
        }
    }
}

/// What to do with `resp`, the answer to a request that the lost connection left unanswered
/// and that was sent again after the resume (PROTOCOL.md §6.14 "Answers in flight"):
/// `None` keeps waiting for the original's answer, `Some` is the answer the caller gets.
///
/// - LOCK answered ALREADY_WAITING: the original wait is still queued, keeping its place; its
///   answer comes later under the original request id.
/// - LOCK answered ALREADY_ACQUIRED for a name not held before: the original was granted and
///   its ACQUIRED lost in flight, so it is reported as the fresh grant it was (the caller's
///   guard must release it).
/// - UNLOCK answered RELEASE_FAILED for a name held before: the original UNLOCK released it.
pub(crate) fn resent_answer(what: Resent, resp: Response) -> Option<Response> {
    match (what, resp) {
        (Resent::Lock { .. }, Response::AlreadyWaiting) => None,
        (Resent::Lock { held_before: false }, Response::AlreadyAcquired { token }) => {
            Some(Response::Acquired { token })
        }
        (Resent::Unlock { held_before: true }, Response::ReleaseFailed) => Some(Response::Released),
        (_, resp) => Some(resp),
    }
}

/// Replaces the request id of `frame` (a whole encoded request) with `id`.
pub(crate) fn with_request_id(frame: &[u8], id: u32) -> Vec<u8> {
    let mut out = frame.to_vec();
    if out.len() >= crate::protocol::FRAME_HEADER_LEN {
        out[5..9].copy_from_slice(&id.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::split_frame;

    #[test]
    fn a_lock_served_before_the_loss_reads_as_its_original_answer() {
        let fresh = Resent::Lock { held_before: false };
        let nested = Resent::Lock { held_before: true };
        assert_eq!(resent_answer(fresh, Response::AlreadyWaiting), None);
        assert_eq!(resent_answer(nested, Response::AlreadyWaiting), None);
        assert_eq!(
            resent_answer(fresh, Response::AlreadyAcquired { token: 9 }),
            Some(Response::Acquired { token: 9 })
        );
        assert_eq!(
            resent_answer(nested, Response::AlreadyAcquired { token: 9 }),
            Some(Response::AlreadyAcquired { token: 9 })
        );
        // Never served: the new answer is the only one.
        assert_eq!(
            resent_answer(fresh, Response::Acquired { token: 3 }),
            Some(Response::Acquired { token: 3 })
        );
    }

    #[test]
    fn an_unlock_served_before_the_loss_reads_as_released() {
        let held = Resent::Unlock { held_before: true };
        let not_held = Resent::Unlock { held_before: false };
        assert_eq!(resent_answer(held, Response::ReleaseFailed), Some(Response::Released));
        assert_eq!(resent_answer(not_held, Response::ReleaseFailed), Some(Response::ReleaseFailed));
        assert_eq!(resent_answer(Resent::Other, Response::Pong), Some(Response::Pong));
    }

    #[test]
    fn backoff_doubles_from_20ms_to_a_500ms_ceiling() {
        let steps: Vec<u64> = (0..8).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(steps, [20, 40, 80, 160, 320, 500, 500, 500]);
        assert_eq!(backoff(u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn a_resume_tries_within_the_grace_then_gives_up_with_the_last_error() {
        let t0 = Instant::now();
        let s = Session { id: 1, secret: [0; 16], grace: Duration::from_millis(1000) };
        let mut r = Retry::new(&s, "reset".into(), t0);
        let connect = Duration::from_millis(300);
        assert_eq!(r.next(t0, connect), Next::Try(connect));
        let refused = Error::io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(r.failed(&refused, t0), Ok(Duration::from_millis(20)));
        assert_eq!(r.failed(&refused, t0), Ok(Duration::from_millis(40)));
        // Near the end: each step only within what is left, and the pause no longer.
        let late = t0 + Duration::from_millis(990);
        assert_eq!(r.next(late, connect), Next::Try(Duration::from_millis(10)));
        assert_eq!(r.failed(&refused, late), Ok(Duration::from_millis(10)));
        let Next::GiveUp(why) = r.next(t0 + Duration::from_millis(1000), connect) else { panic!("tries on") };
        assert!(why.starts_with("reset; the session was not resumed within its grace of 1s"), "{why}");
        assert!(why.contains(&refused.to_string()), "{why}");
        let gone = Error::server(ErrorCode::BadSession, "no such session");
        let why = r.failed(&gone, t0).unwrap_err();
        assert!(why.starts_with("reset; the session cannot be resumed"), "{why}");
    }

    #[test]
    fn a_resent_lock_reads_held_as_of_its_answer() {
        let lock = Track::Lock("a".into());
        let none = |_: &str| false;
        let all = |_: &str| true;
        assert_eq!(Resent::of(&lock, none), Resent::Lock { held_before: false });
        assert_eq!(Resent::of(&Track::Unlock("a".into()), all), Resent::Unlock { held_before: true });
        assert_eq!(Resent::of(&Track::Reset, all), Resent::Other);
        let fresh = Resent::Lock { held_before: false };
        assert_eq!(fresh.when_answered(Some(&lock), all), Resent::Lock { held_before: true });
        assert_eq!(fresh.when_answered(Some(&lock), none), fresh);
        assert_eq!(fresh.when_answered(None, all), fresh);
    }

    #[test]
    fn request_ids_are_rewritten_in_place() {
        let mut ping = Vec::new();
        Request::Ping(b"abc").encode(7, &mut ping);
        let moved = with_request_id(&ping, 0x0102_0304);
        let (frame, len) = split_frame(&moved, 1 << 20).unwrap().unwrap();
        assert_eq!((frame.request_id, len), (0x0102_0304, ping.len()));
        assert_eq!(Request::decode(&frame, 1024).unwrap(), Request::Ping(b"abc"));
    }

    #[test]
    fn servers_without_sessions_leave_the_connection_as_it_was() {
        assert!(opened(Response::SessionOk(SessionOk::NONE)).unwrap().is_none());
        let old = Response::Error { code: ErrorCode::UnknownOpcode, message: "0x17".into() };
        assert!(opened(old).unwrap().is_none());
        let ok = SessionOk { session_id: 4, secret: [1; 16], grace_ms: 1500 };
        let s = opened(Response::SessionOk(ok)).unwrap().expect("a session");
        assert_eq!((s.id, s.grace), (4, Duration::from_millis(1500)));
        assert!(!format!("{s:?}").contains("secret:"));
    }
}
