//! The I/O of a session's resume (PROTOCOL.md §6.14), run by the connection's reader thread when
//! a link drops: reconnect with back-off until the grace runs out, present the session's id and
//! secret, let the replay answer pending requests under their original ids, then send again
//! what the lost link left unanswered and let callers send on the new link.
//!
//! Callers that arrive meanwhile wait in `Conn::register`; callers already waiting keep
//! waiting. The connection is lost (as without a session, with every lock it held) only when
//! the grace runs out or the server says the session is gone.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::answer::Track;
use super::builder::Target;
use super::conn::{handshake, lock, read_reply, Conn, Pending, SESSION_ID};
use super::session::{self, Next, Resent, Retry, Session};
use super::stream::Stream;
use super::Result;
use crate::protocol::HelloOk;

/// A resumed link before it is attached: its replay is still being read.
pub(crate) struct Replay {
    /// Replayed frames still to come (RESUMED's `replayed`, counted down by the reader).
    pub(crate) left: u32,
    attach: Option<Attach>,
}

/// What attaching a resumed link installs.
struct Attach {
    link: u64,
    writer: Stream,
    control: Stream,
    hello: HelloOk,
}

/// A resumed link for the reader: its socket, the bytes read past RESUMED, and the replay.
pub(crate) struct NextLink {
    pub(crate) reader: Stream,
    pub(crate) leftover: Vec<u8>,
    pub(crate) replay: Replay,
}

impl Conn {
    /// The current link ended for `reason`. Without a session (or after GOODBYE, or when the
    /// connection was closed) that is the end; with one, reconnects and resumes within the
    /// grace and returns the new link, or gives up and marks the connection lost.
    pub(crate) fn resume_after(&self, reason: String) -> Option<NextLink> {
        let Some(session) = self.session else {
            self.fail(&reason, false);
            return None;
        };
        let link = {
            let mut st = lock(&self.state);
            if st.lost.is_some() {
                return None;
            }
            if st.goodbye {
                drop(st);
                self.fail(&reason, true);
                return None;
            }
            st.attached = false;
            st.link
        };
        log::debug!("officer session {} detached, resuming: {reason}", session.id);
        let mut retry = Retry::new(&session, reason, Instant::now());
        // A cluster's session resumes on whichever member leads now (`cluster.rs`).
        let mut route = self.config.cluster.as_ref().map(|m| m.route());
        loop {
            if self.lost().is_some() {
                return None;
            }
            let timeout = match retry.next(Instant::now(), self.config.connect_timeout) {
                Next::Try(timeout) => timeout,
                Next::GiveUp(why) => {
                    self.fail(&why, false);
                    return None;
                }
            };
            let (target, timeout) = match (&mut route, &self.config.cluster) {
                (Some(route), Some(members)) => {
                    (route.next(), timeout.min(members.attempt_timeout(self.config.connect_timeout)))
                }
                _ => (self.config.target.clone(), timeout),
            };
            match self.try_resume(&session, &target, timeout, link + 1) {
                Ok(next) => {
                    if let Some(members) = &self.config.cluster {
                        members.set_leader(&target);
                    }
                    // Counted before the replay is read, so a caller the replay answers sees it.
                    self.resumes.fetch_add(1, Ordering::SeqCst);
                    log::debug!("officer session {} resumed, {} replayed", session.id, next.replay.left);
                    return Some(next);
                }
                Err(e) => {
                    // The next member of a round (or a named leader) is tried at once.
                    if let Some(None) = route.as_mut().map(|r| r.failed(&target, &e)) {
                        if retry.note(&e).is_ok() {
                            continue;
                        }
                    }
                    match retry.failed(&e, Instant::now()) {
                        // Wakes early when the client closes meanwhile.
                        Ok(pause) => {
                            self.wait_lost(Some(pause));
                        }
                        Err(why) => {
                            self.fail(&why, false);
                            return None;
                        }
                    }
                }
            }
        }
    }

    /// One attempt at `target`: connect, handshake, SESSION_RESUME, RESUMED; each step within
    /// `timeout`.
    fn try_resume(
        &self,
        session: &Session,
        target: &Target,
        timeout: Duration,
        link: u64,
    ) -> Result<NextLink> {
        let config = self.config.at(target, timeout);
        let mut stream = Stream::connect(&config.target, timeout)?;
        let (hello, mut leftover) = handshake(&mut stream, &config)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(&session::resume_request(session, SESSION_ID))?;
        let resumed = session::resumed(read_reply(&mut stream, &mut leftover, SESSION_ID, None)?)?;
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
        let attach = Attach { link, writer: stream.try_clone()?, control: stream.try_clone()?, hello };
        Ok(NextLink {
            reader: stream,
            leftover,
            replay: Replay { left: resumed.replayed, attach: Some(attach) },
        })
    }

    /// Attaches the resumed link once its replay is through: sends again every request a
    /// lost link left unanswered (PROTOCOL.md §6.14 "Answers in flight"), then lets callers
    /// send. Done under the writer's lock, so nothing new goes out before the resent requests.
    pub(crate) fn attach_when_replayed(&self, replay: &mut Option<Replay>) {
        let Some(r) = replay.as_mut() else { return };
        if r.left > 0 {
            return;
        }
        let Some(attach) = r.attach.take() else { return };
        *replay = None;
        let Attach { link, writer, control, hello } = attach;
        let mut w = lock(&self.writer);
        w.stream = writer;
        w.link = link;
        {
            let mut st = lock(&self.state);
            if st.lost.is_some() {
                // Closed while resuming: the session ends now rather than after its grace.
                let id = st.alloc_id();
                let _ = w.stream.write_all(&session::goodbye_request(id));
                control.shutdown();
                return;
            }
            // A resend of an earlier resume still unanswered may be the wait its original
            // became on the server (the original never reached it): it is sent again itself,
            // standing for it, and covers its original, which is not. One whose original was
            // answered meanwhile is dropped (its answer, if any, went with the lost link).
            let originals: HashSet<u32> = st.pending.keys().copied().collect();
            st.pending.retain(|_, p| p.stands_for.is_none_or(|(o, _)| originals.contains(&o)));
            let covered: HashSet<u32> =
                st.pending.values().filter_map(|p| p.stands_for.map(|(o, _)| o)).collect();
            let mut stale: Vec<u32> = st
                .pending
                .iter()
                .filter(|(id, p)| !covered.contains(id) && p.sent.as_ref().is_some_and(|(_, l)| *l < link))
                .map(|(id, _)| *id)
                .collect();
            // In the order they were first sent (ids grow), as a caller would expect.
            stale.sort_unstable();
            let mut out = Vec::new();
            for original in stale {
                let Some(p) = st.pending.get(&original) else { continue };
                let (frame, tx) = (p.sent.as_ref().map(|(f, _)| f.clone()).unwrap_or_default(), p.tx.clone());
                let what = match p.stands_for {
                    Some((_, what)) => what,
                    None => Resent::of(&p.track, |name| st.held.contains(name)),
                };
                let id = st.alloc_id();
                let frame = session::with_request_id(&frame, id);
                out.extend_from_slice(&frame);
                let mut resend = Pending::new(tx, Track::None);
                resend.sent = Some((frame, link));
                resend.stands_for = Some((original, what));
                st.pending.insert(id, resend);
            }
            if !out.is_empty() && w.stream.write_all(&out).is_err() {
                // The reader sees the new link fail too, and resumes again.
                control.shutdown();
            }
            log::debug!("officer link {link} attached, {} requests sent again", st.pending.len());
            *lock(&self.control) = (link, control);
            *lock(&self.hello) = hello;
            st.link = link;
            st.attached = true;
        }
        self.wrote();
        drop(w);
        self.changed.notify_all();
    }
}
