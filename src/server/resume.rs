//! Resumable sessions on the server's side (PROTOCOL.md §6.14): the grace a SESSION_OPEN gets
//! (clamped to `--max-session-grace`) and the secret drawn for it from the kernel, the takeover
//! a SESSION_RESUME makes (the table's session moves to the new connection, an older
//! connection still holding it is told `taken_over` and closed), and GOODBYE (a RESET whose
//! answer closes the connection). What a session keeps while detached is the lock table's
//! (`locks/suspend.rs`); which close detaches and which ends a session is `CloseReason::is_loss`.

use log::{info, warn};

use super::session::CloseReason;
use super::{Config, Server};
use crate::locks::{Command, SessionId};
use crate::protocol::{
    ErrorCode, Response, SessionOpen, SessionResume, SESSION_SECRET_LEN, SHUTDOWN_REQUEST_ID,
};
use crate::wheel::Tick;

/// The table command for a SESSION_OPEN: a secret the kernel
/// cannot give opens no session (grace 0) rather than a guessable one. The skip flag goes to
/// the table, as the default of the session's waits (§6.14).
pub(super) fn open_command(
    session: SessionId,
    request_id: u32,
    open: &SessionOpen,
    config: &Config,
) -> Command {
    let max = u32::try_from(config.max_session_grace.as_millis()).unwrap_or(u32::MAX);
    let mut grace_ms = open.grace_ms.min(max);
    let secret = if grace_ms == 0 {
        [0; SESSION_SECRET_LEN]
    } else {
        random_secret().unwrap_or_else(|| {
            warn!("no random bytes from the kernel: session not opened");
            grace_ms = 0;
            [0; SESSION_SECRET_LEN]
        })
    };
    let skip_while_detached = open.skip_while_detached;
    Command::OpenSession { session, request_id, grace_ms, secret, skip_while_detached }
}

/// 16 bytes from `getrandom(2)`, the kernel's CSPRNG (no new dependency: `libc` is there).
/// `None` only if the kernel refuses, which a server cannot work around safely.
pub(super) fn random_secret() -> Option<[u8; SESSION_SECRET_LEN]> {
    let mut secret = [0u8; SESSION_SECRET_LEN];
    let mut filled = 0;
    while filled < secret.len() {
        let rest = &mut secret[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`, which is that long.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return None;
        }
    }
    Some(secret)
}

impl Server {
    /// SESSION_RESUME on connection `key`: the table checks the id and secret and answers;
    /// on success the session is this connection's from now on (route and `sid`), after an
    /// older connection that still had it is told and closed.
    pub(super) fn resume_session(&mut self, key: usize, rid: u32, resume: SessionResume, now: Tick) {
        let Some(conn) = self.conns.get(key) else { return };
        let (from, target) = (conn.sid, SessionId(resume.session_id));
        // Cluster mode: answered when committed (`cluster_turn`), the connection held back.
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &mut self.cluster {
            let pending = super::cluster::PendingResume { key, conn: conn.id, from, target };
            if !cluster.propose_resume(now, pending, resume.secret, rid) {
                let message = "the cluster has too many uncommitted changes: try again";
                self.send(key, rid, &Response::error(ErrorCode::LimitExceeded, message));
            }
            return;
        }
        let cmd = Command::Resume { session: target, request_id: rid, from, secret: resume.secret };
        self.table.apply(now, &cmd, &mut self.outputs);
        self.finish_resume(key, from, target, now);
    }

    /// After the table applied a SESSION_RESUME of connection `key` (its outputs in
    /// `self.outputs`): on success the route and `sid` move to this connection, after an
    /// older connection that still had the session is told and closed.
    pub(super) fn finish_resume(&mut self, key: usize, from: SessionId, target: SessionId, now: Tick) {
        let resumed =
            self.outputs.iter().any(|o| o.session == target && matches!(o.response, Response::Resumed(_)));
        if !resumed {
            if let Some(conn) = self.conns.get(key) {
                warn!("session resume refused conn={} peer={} session={}", conn.serial, conn.label, target.0);
            }
            return self.deliver_outputs(now);
        }
        // The answer and the replay wait until the route points here.
        let mut pending = std::mem::take(&mut self.outputs);
        if let Some(old) = self.routes.get(target).filter(|&old| old != key) {
            // Newest wins (§6.14): the older connection gets `taken_over` and is closed. It now
            // owns the asker's fresh session, which the table has forgotten, so its close
            // releases nothing.
            let taken = |o: &crate::locks::Output| {
                o.session == target
                    && o.request_id == SHUTDOWN_REQUEST_ID
                    && matches!(o.response, Response::Error { code: ErrorCode::TakenOver, .. })
            };
            if let Some(pos) = pending.iter().position(taken) {
                let notice = pending.remove(pos);
                self.send(old, SHUTDOWN_REQUEST_ID, &notice.response);
            }
            if let Some(old_conn) = self.conns.get_mut(old) {
                old_conn.sid = from;
            }
            self.close(old, CloseReason::TakenOver, now);
        }
        self.routes.remove(from);
        self.routes.insert(target, key);
        if let Some(conn) = self.conns.get_mut(key) {
            conn.sid = target;
            info!("session resumed session={} conn={} peer={}", target.0, conn.serial, conn.label);
        }
        self.outputs.append(&mut pending);
        self.deliver_outputs(now);
    }

    /// GOODBYE: a RESET (every wait CANCELLED, every hold released, no lock-delay); the
    /// connection closes as soon as its RESET_OK is queued (`deliver_outputs`), ending the
    /// session, not detaching it (the session said goodbye).
    pub(super) fn goodbye(&mut self, key: usize, rid: u32, now: Tick) {
        let Some(conn) = self.conns.get(key) else { return };
        let cmd = Command::Reset { session: conn.sid, request_id: rid };
        self.apply(now, cmd);
        self.deliver_outputs(now);
    }
}
