//! The operator's requests (PROTOCOL.md §6.12): who has admin rights (ADMIN_AUTH with the
//! admin secret, or the server's own user on its UNIX socket), KICK, which closes another
//! connection, and the log line of REVOKE (`dispatch::run` checks the rights of both and the
//! table carries REVOKE out). Each is logged with the admin's connection and what it ends.
//! Also CONNECTIONS_DETAIL, which anyone may ask: it shows the connection ids KICK takes, which
//! only the server knows.

use std::os::fd::AsRawFd;

use log::warn;

use super::net::Stream;
use super::session::CloseReason;
use super::Server;
use crate::protocol::{ErrorCode, ListRequest, Response, RevokeRequest, SHUTDOWN_REQUEST_ID};
use crate::wheel::Tick;

impl Server {
    /// Logs an admin's REVOKE (`run` refuses it without the rights), with who asked.
    pub(super) fn log_revoke(&self, key: usize, revoke: &RevokeRequest<'_>) {
        let Some(admin) = self.conns.get(key).filter(|c| c.session.is_admin()) else { return };
        let token = revoke.token.map_or_else(|| "all".to_owned(), |t| t.to_string());
        warn!("revoke by conn={} peer={}: lock={:?} token={token}", admin.serial, admin.label, revoke.name);
    }

    /// KICK `victim` (a connection id, as HELLO_OK and logs show it) for the admin on `key`.
    /// Finding it walks the connections: an operator's request, counted as a scan.
    pub(super) fn kick(&mut self, key: usize, rid: u32, victim: u64, now: Tick) {
        let Some(admin) = self.conns.get(key) else { return };
        if !admin.session.is_admin() {
            let response = Response::error(ErrorCode::Forbidden, "KICK needs admin rights");
            return self.send(key, rid, &response);
        }
        let (admin_serial, admin_label) = (admin.serial, admin.label.clone());
        let found = self
            .conns
            .iter()
            .find(|(_, c)| c.serial == victim && c.closing.is_none())
            .map(|(k, c)| (k, c.label.clone()));
        let Some((victim_key, victim_label)) = found else {
            let response = Response::error(ErrorCode::NotFound, format!("no open connection {victim}"));
            return self.send(key, rid, &response);
        };
        warn!("kick by conn={admin_serial} peer={admin_label}: closing conn={victim} peer={victim_label}");
        // The admin's answer first: a KICK of its own connection gets KICKED, then the error.
        self.send(key, rid, &Response::Kicked);
        let notice = Response::error(ErrorCode::Kicked, "closed by an operator");
        self.send(victim_key, SHUTDOWN_REQUEST_ID, &notice);
        self.close(victim_key, CloseReason::Kicked, now);
    }
}

impl Server {
    /// CONNECTIONS_DETAIL (PROTOCOL.md §3.21) for the connection on `key`: the table's listing,
    /// each connection with its id (its serial, as HELLO_OK gave it). The selection and the
    /// frame bound are the table's; each id costs one route lookup.
    pub(super) fn connections_detail(&mut self, key: usize, rid: u32, list: ListRequest<'_>, now: Tick) {
        let id_of = |sid| self.routes.get(sid).and_then(|k| self.conns.get(k)).map(|c| c.serial);
        let max_frame = self.config.max_frame;
        let response = self.table().connections_detail_within(now, list.prefix, list.max, max_frame, id_of);
        self.send(key, rid, &response);
    }
}

/// Whether the peer of a UNIX-socket connection runs as the server's own user (its
/// credentials as the kernel recorded them at connect). TCP peers never are.
pub(super) fn same_user(stream: &Stream) -> bool {
    let Stream::Unix(stream) = stream else { return false };
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: geteuid has no preconditions.
    rc == 0 && cred.uid == unsafe { libc::geteuid() }
}
