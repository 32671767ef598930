//! The lock model v2 calls of [`Client`] (issue 13, PROTOCOL.md §6.7-§6.13): token-checked
//! unlock, downgrade, the server-side fence check, lease renewal, waiting for a grant the
//! server ended, the detailed listing, and the operator's calls (admin rights, revoke, kick).

use std::sync::Arc;
use std::time::Duration;

use super::answer::unexpected;
use super::conn::Track;
use super::{Client, DetachedSession, Error, Listing, LockDetail, Result};
use crate::protocol::{ConnectionDetail, ListRequest, Request, Response, RevokeRequest, TokenRequest};

impl Client {
    /// Releases this connection's grant of `name` only if its fencing token is `token`, so a
    /// late unlock cannot release a newer grant of the same name. Fails with
    /// [`ErrorKind::NotHeld`](crate::client::ErrorKind::NotHeld) for any other token, and [`ErrorKind::GrantLost`](crate::client::ErrorKind::GrantLost) when the
    /// server ended that grant first. It never cancels a wait.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// let lock = client.try_lock("a")?;
    /// assert!(client.unlock_token("a", lock.token() + 1).unwrap_err().is_not_held());
    /// client.unlock_token("a", lock.token())?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn unlock_token(&self, name: &str, token: u64) -> Result<()> {
        let conn = self.current()?;
        let full = self.full_name(&conn, name, false)?;
        let req = Request::UnlockToken(TokenRequest { name: &full, token });
        match self.call(&conn, &req, Track::Unlock(full.clone()))? {
            Response::Released => Ok(()),
            Response::ReleaseFailed => Err(Error::not_held(name)),
            Response::Lost { token, reason, .. } => Err(Error::grant_lost(name, token, reason)),
            other => Err(unexpected(&other, "UNLOCK_TOKEN")),
        }
    }

    /// Turns this connection's exclusive grant `token` of `name` into a shared one, at once
    /// and keeping its token: the shared requests waiting at the head of the queue are granted
    /// beside it, and no writer can come in between.
    ///
    /// ```no_run
    /// use officer::client::{Client, LockOptions};
    /// let client = Client::connect("localhost", 11500)?;
    /// let lock = client.lock("config", LockOptions::new())?;
    /// // ... write ...
    /// client.downgrade("config", lock.token())?;
    /// // ... keep reading while other readers come in ...
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn downgrade(&self, name: &str, token: u64) -> Result<()> {
        let conn = self.current()?;
        let full = self.full_name(&conn, name, false)?;
        match self.call(&conn, &Request::Downgrade(TokenRequest { name: &full, token }), Track::None)? {
            Response::Downgraded => Ok(()),
            Response::Lost { token, reason, .. } => Err(Error::grant_lost(name, token, reason)),
            other => Err(unexpected(&other, "DOWNGRADE")),
        }
    }

    /// Asks the server whether `token` holds `name` right now, in any mode: a fence check for
    /// a resource that cannot store the highest token it has seen. Any connection may ask.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// # let token = 7;
    /// if !client.check("ledger", token)? {
    ///     panic!("refusing a write from a stale holder");
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn check(&self, name: &str, token: u64) -> Result<bool> {
        let conn = self.current()?;
        let full = self.full_name(&conn, name, false)?;
        match self.call(&conn, &Request::Check(TokenRequest { name: &full, token }), Track::None)? {
            Response::Checked { held } => Ok(held),
            other => Err(unexpected(&other, "CHECK")),
        }
    }

    /// Extends the lease of this connection's grant `token` of `name`. Returns how long the
    /// grant now lasts (bounded by its `max_hold`; `None` when it has neither lease nor
    /// bound), or [`ErrorKind::GrantLost`](crate::client::ErrorKind::GrantLost) when the server already ended it.
    ///
    /// ```no_run
    /// use officer::client::{Client, LockOptions};
    /// use std::time::Duration;
    /// let client = Client::connect("localhost", 11500)?;
    /// let lock = client.lock("job", LockOptions::new().lease(Duration::from_secs(10)))?;
    /// let left = client.renew("job", lock.token())?;
    /// println!("held for {left:?} more");
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn renew(&self, name: &str, token: u64) -> Result<Option<Duration>> {
        let conn = self.current()?;
        let full = self.full_name(&conn, name, false)?;
        match self.call(&conn, &Request::Renew(TokenRequest { name: &full, token }), Track::None)? {
            Response::Renewed { ends_in_ms } => Ok(ends_in_ms.map(|ms| Duration::from_millis(ms.into()))),
            Response::Lost { token, reason, .. } => Err(Error::grant_lost(name, token, reason)),
            other => Err(unexpected(&other, "RENEW")),
        }
    }

    /// Blocks until the server ends grant `token` of `name` on its own (a LOST notice: lease,
    /// hold budget or revocation) or the connection is lost, at most `timeout` (`None`:
    /// forever). Returns the error that describes the loss, or `None` when the time ran out
    /// with the grant still held: a watchdog for work done under a lease.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// # let token = 7;
    /// use std::time::Duration;
    /// if let Some(e) = client.wait_lost("job", token, Some(Duration::from_millis(10))) {
    ///     eprintln!("stop writing: {e}");
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn wait_lost(&self, name: &str, token: u64, timeout: Option<Duration>) -> Option<Error> {
        let conn = Arc::clone(&self.slot());
        let full = self.config.full_name(name);
        match conn.wait_grant_lost(&full, token, timeout) {
            Err(()) => None,
            Ok(Some(g)) => Some(Error::grant_lost(name, g.token, g.reason)),
            Ok(None) => Some(conn.lost().map_or_else(|| Error::protocol("connection lost"), |l| l.error())),
        }
    }

    /// Presents the admin secret (the server's `--admin-file`), which gives this connection
    /// the rights of [`Client::revoke`] and [`Client::kick`]. A wrong secret closes the
    /// connection. On the server's UNIX socket, its own user has the rights without it. A
    /// reconnected connection has to present it again.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// client.admin_auth(&std::fs::read("/etc/officer/admin.secret")?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn admin_auth(&self, secret: &[u8]) -> Result<()> {
        let conn = self.current()?;
        match self.call(&conn, &Request::AdminAuth(secret), Track::None)? {
            Response::AuthOk => Ok(()),
            other => Err(unexpected(&other, "ADMIN_AUTH")),
        }
    }

    /// An operator's forced release: ends grant `token` of `name`, or every grant of it with
    /// `None`; each holder is told LOST `revoked` (or, for a client that cannot be told,
    /// loses its connection). Returns how many grants ended. Needs admin rights.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect_unix("/tmp/officer.sock")?;
    /// let ended = client.revoke("stuck-job", None)?;
    /// println!("{ended} grants revoked");
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn revoke(&self, name: &str, token: Option<u64>) -> Result<u32> {
        let conn = self.current()?;
        let full = self.full_name(&conn, name, false)?;
        match self.call(&conn, &Request::Revoke(RevokeRequest { name: &full, token }), Track::None)? {
            Response::Revoked { count } => Ok(count),
            other => Err(unexpected(&other, "REVOKE")),
        }
    }

    /// Closes the server's connection `connection_id` (as listings and logs show it); its
    /// locks are released as on any disconnect. Needs admin rights.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect_unix("/tmp/officer.sock")?;
    /// client.kick(42)?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn kick(&self, connection_id: u64) -> Result<()> {
        let conn = self.current()?;
        match self.call(&conn, &Request::Kick(connection_id), Track::None)? {
            Response::Kicked => Ok(()),
            other => Err(unexpected(&other, "KICK")),
        }
    }

    /// The locks whose name starts with `prefix` (at most `max`; 0: the server's default), each
    /// with every holder's mode, permits and fencing token, every waiter's mode, and a
    /// semaphore's limit. With a namespace, only names inside it (without the prefix).
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// for lock in client.locks_detail("db/", 0)?.iter() {
    ///     println!("{}: {} holders, {} permits in use", lock.name, lock.holders.len(), lock.permits_in_use());
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn locks_detail(&self, prefix: &str, max: u32) -> Result<Listing<LockDetail>> {
        let conn = self.current()?;
        let full = self.full_name(&conn, prefix, true)?;
        match self.call(&conn, &Request::LocksDetail(ListRequest { prefix: &full, max }), Track::None)? {
            Response::LocksDetail { locks, truncated } => {
                let items = locks
                    .into_iter()
                    .filter_map(|mut l| {
                        l.name = self.config.short_name(&l.name)?.to_owned();
                        Some(l)
                    })
                    .collect();
                Ok(Listing { items, truncated })
            }
            other => Err(unexpected(&other, "LOCKS_DETAIL")),
        }
    }

    /// The connections whose label starts with `prefix` (at most `max`; 0: the server's
    /// default), each with its connection id (what [`Client::kick`] takes), every grant it holds
    /// with mode, permits and token, and every wait with its mode. With a namespace, only the
    /// names inside it (without the prefix) are listed.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// for conn in client.connections_detail("unix:", 0)?.iter() {
    ///     println!("{} (id {}): holds {}", conn.label, conn.connection_id, conn.held.len());
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn connections_detail(&self, prefix: &str, max: u32) -> Result<Listing<ConnectionDetail>> {
        let conn = self.current()?;
        let request = Request::ConnectionsDetail(ListRequest { prefix, max });
        match self.call(&conn, &request, Track::None)? {
            Response::ConnectionsDetail { connections, truncated } => {
                let inside = |name: &mut String| match self.config.short_name(name) {
                    Some(short) => {
                        *name = short.to_owned();
                        true
                    }
                    None => false,
                };
                let items = connections
                    .into_iter()
                    .map(|mut c| {
                        c.held.retain_mut(|h| inside(&mut h.name));
                        c.waiting.retain_mut(|w| inside(&mut w.name));
                        c
                    })
                    .collect();
                Ok(Listing { items, truncated })
            }
            other => Err(unexpected(&other, "CONNECTIONS_DETAIL")),
        }
    }

    /// The server's detached sessions (PROTOCOL.md §3.25): those whose connection was lost
    /// and that a resume may still take over, soonest grace end first, at most `max` (0: the
    /// server's default), each with its session id, the label it had, how many grants and
    /// waits it keeps, the frames kept for its replay, and the grace left. The counts are of
    /// every name, namespace or not. A server without sessions answers `unknown_opcode`
    /// ([`Error::server_code`]).
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// for s in client.detached_sessions(0)?.iter() {
    ///     println!("{} (session {}): {} ms of grace left", s.label, s.session_id, s.grace_left_ms);
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn detached_sessions(&self, max: u32) -> Result<Listing<DetachedSession>> {
        let conn = self.current()?;
        match self.call(&conn, &Request::Sessions(max), Track::None)? {
            Response::Sessions { sessions, truncated } => Ok(Listing { items: sessions, truncated }),
            other => Err(unexpected(&other, "SESSIONS")),
        }
    }
}
