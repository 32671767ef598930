//! Resumable sessions on the client side, without I/O (PROTOCOL.md §3.22-§3.24, §6.14): the
//! SESSION_OPEN / SESSION_RESUME / GOODBYE bytes, what their answers mean, how long to wait
//! between reconnect attempts, and how the answer to a request sent again after a resume stands
//! for the answer the lost connection never delivered.
//!
//! The connection (`conn.rs`) does the I/O: it opens the session in its handshake, and when its
//! socket drops it reconnects, resumes, lets the replay answer what it can under the original
//! request ids, and sends the rest again through [`resent_answer`].

use std::time::Duration;

use super::answer::unexpected;
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
