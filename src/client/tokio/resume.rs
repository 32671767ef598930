//! The async connection's links and their resume (PROTOCOL.md §6.14): the driver task runs one
//! link's reader and writer, and when the link ends without a session (or after GOODBYE) the
//! connection is lost; with one, it reconnects with back-off until the grace runs out,
//! presents the session's id and secret, lets the replay answer pending calls under their
//! original ids, then sends again what the lost link left unanswered (`State::attach`) and
//! runs the new link. The messages, the back-off and what a resent request's answer means
//! are the blocking client's (`session.rs`); only the I/O is here.
//!
//! Calls made meanwhile wait in their slots and go out on the new link; the guards and
//! `lost()` watchers see nothing of a resume, only of a real loss: the grace ran out, the
//! server no longer has the session, or the client closed.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use ::tokio::task::AbortHandle;

use super::conn::{lock, read_loop, write_loop, AsyncConn, End, EndOnDrop};
use super::stream::{self, Link};
use crate::client::builder::Config;
use crate::client::conn::SESSION_ID;
use crate::client::session::{self, Next, Retry, Session};
use crate::client::{Error, Result};

/// Aborts the link's reader and writer when the driver moves on (or is itself dropped).
struct AbortOnDrop([AbortHandle; 2]);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(AbortHandle::abort);
    }
}

/// The driver task: runs link after link until the connection is lost. Ends the connection
/// if it is dropped unfinished (`EndOnDrop`).
pub(super) async fn drive(conn: EndOnDrop, first: Link) {
    let conn = &conn.0;
    let mut link = first;
    loop {
        let end = run_link(conn, link).await;
        log::debug!("officer link ended session={:?} reason={}", conn.session, end.reason);
        if !end.resumable {
            conn.fail(&end.reason, false);
            return;
        }
        match resume_after(conn, end.reason).await {
            Some(next) => link = next,
            None => return,
        }
    }
}

/// Runs one link's reader and writer as two tasks (so reading and writing proceed in
/// parallel on a multi-threaded runtime) until either ends, or the keep-alive ends the link.
async fn run_link(conn: &Arc<AsyncConn>, link: Link) -> End {
    let number = lock(&conn.state).link;
    let Link { rd, wr, leftover } = link;
    let mut reader = ::tokio::spawn(read_loop(Arc::clone(conn), rd, leftover));
    let mut writer = ::tokio::spawn(write_loop(Arc::clone(conn), wr));
    let _abort = AbortOnDrop([reader.abort_handle(), writer.abort_handle()]);
    let mut killed = conn.kill.subscribe();
    let mut killed = pin!(async move {
        let _ = killed.wait_for(|k| *k == number).await;
    });
    poll_fn(|cx| {
        for task in [&mut reader, &mut writer] {
            if let Poll::Ready(end) = std::pin::Pin::new(&mut *task).poll(cx) {
                return Poll::Ready(joined(end));
            }
        }
        match killed.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(End::broken("the keep-alive found the link silent".to_owned())),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// A link task's outcome; one that panicked or was aborted ends the link.
fn joined(end: std::result::Result<End, ::tokio::task::JoinError>) -> End {
    end.unwrap_or_else(|e| End { reason: format!("the connection's task failed: {e}"), resumable: false })
}

/// The link ended for `reason`. Without a session (or after GOODBYE, or when the client
/// closed) that is the end; with one, reconnects and resumes within the grace and returns
/// the new link, or gives up and marks the connection lost.
async fn resume_after(conn: &AsyncConn, reason: String) -> Option<Link> {
    let Some(session) = conn.session else {
        conn.fail(&reason, false);
        return None;
    };
    {
        let mut st = lock(&conn.state);
        if st.lost.is_some() {
            return None;
        }
        st.attached = false;
    }
    log::debug!("officer session {} detached, resuming: {reason}", session.id);
    let mut retry = Retry::new(&session, reason, Instant::now());
    // A cluster's session resumes on whichever member leads now (`client/cluster.rs`).
    let members = conn.config.cluster.as_deref();
    let mut route = members.map(|m| m.route());
    loop {
        if conn.is_lost() {
            return None;
        }
        let timeout = match retry.next(Instant::now(), conn.config.connect_timeout) {
            Next::Try(timeout) => timeout,
            Next::GiveUp(why) => {
                conn.fail(&why, false);
                return None;
            }
        };
        let (target, timeout) = match (&mut route, members) {
            (Some(route), Some(m)) => {
                (route.next(), timeout.min(m.attempt_timeout(conn.config.connect_timeout)))
            }
            _ => (conn.config.target.clone(), timeout),
        };
        match try_resume(conn, &session, &conn.config.at(&target, timeout)).await {
            Ok(next) => {
                if let Some(m) = members {
                    m.set_leader(&target);
                }
                return next;
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
                        conn.wait_lost(Some(pause)).await;
                    }
                    Err(why) => {
                        conn.fail(&why, false);
                        return None;
                    }
                }
            }
        }
    }
}

/// One attempt: connect, handshake, SESSION_RESUME, RESUMED, the replay, each within the
/// connect timeout of `config`; then attaches the link. `Ok(None)`: the client closed
/// meanwhile (the session is ended with GOODBYE).
async fn try_resume(conn: &AsyncConn, session: &Session, config: &Config) -> Result<Option<Link>> {
    let (hello, mut link) = stream::connect(config).await?;
    let resumed = session::resumed(
        stream::exchange(config, &mut link, &session::resume_request(session, SESSION_ID)).await?,
    )?;
    // Counted before the replay is read, so a caller the replay answers sees it.
    conn.resumes.fetch_add(1, Ordering::SeqCst);
    log::debug!("officer session {} resumed, {} replayed", session.id, resumed.replayed);
    let replay = replay(conn, &mut link, u64::from(resumed.replayed));
    ::tokio::time::timeout(config.connect_timeout, replay)
        .await
        .map_err(|_| crate::client::handshake::silent())??;
    let attached = {
        let mut st = lock(&conn.state);
        let lost = st.lost.is_some();
        if !lost {
            let number = st.link + 1;
            st.attach(number);
        }
        (!lost).then(|| !st.out.is_empty())
    };
    let Some(wake) = attached else {
        // Closed while resuming: the session ends now rather than after its grace.
        use ::tokio::io::AsyncWriteExt;
        let _ = link.wr.write_all(&session::goodbye_request(SESSION_ID)).await;
        return Ok(None);
    };
    conn.set_connection_id(hello.connection_id);
    if wake {
        conn.notify_writer();
    }
    Ok(Some(link))
}

/// Reads the `left` replayed frames and hands each to its call, under its original id.
async fn replay(conn: &AsyncConn, link: &mut Link, mut left: u64) -> Result<()> {
    use ::tokio::io::AsyncReadExt;
    let mut wakers = Vec::new();
    loop {
        conn.dispatch_all(&mut link.leftover, &mut wakers, &mut left)
            .map_err(|end| Error::protocol(end.reason))?;
        if left == 0 || conn.is_lost() {
            return Ok(());
        }
        link.leftover.reserve(16 * 1024);
        if link.rd.read_buf(&mut link.leftover).await? == 0 {
            return Err(Error::protocol("the server closed the connection during the replay"));
        }
    }
}
