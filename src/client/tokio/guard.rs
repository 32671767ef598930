//! Scoped locking for async code: [`AsyncLockGuard`] (released on drop without blocking, and
//! telling when the server ended the grant: `is_lost`, `lost`, `is_contended`) and
//! [`AsyncClient::with_lock`].
//!
//! As with the blocking guard, a guard unlocks only on the connection that granted the lock:
//! after a reconnect the lock is gone with the old connection, and unlocking the same name on
//! the new one would release somebody else's critical section.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::conn::AsyncConn;
use super::AsyncClient;
use crate::client::answer::{self, Track};
use crate::client::{Acquired, LockOptions, LostReason, Result};
use crate::protocol::Request;

/// A held lock, released when the guard is dropped: drop queues an UNLOCK on the connection's
/// writer and returns at once, so it never blocks the runtime. Use
/// [`unlock`](AsyncLockGuard::unlock) to learn whether the release succeeded.
///
/// When the connection already held the lock (a nested lock), the guard releases nothing.
///
/// **Locks belong to the connection, not to a task.** Tasks sharing one `AsyncClient` share its
/// connection, so they do not exclude each other: a second task's `lock_guard` of a name the
/// first task holds succeeds at once as a nested lock ([`already_acquired`] is true), and the
/// name is released when the first task's guard goes, while the second still runs. For
/// exclusion between tasks of one process, give each contender its own `AsyncClient` (one
/// connection each), or guard the name with a `tokio::sync::Mutex` in front of the client.
///
/// [`already_acquired`]: AsyncLockGuard::already_acquired
///
/// ```no_run
/// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
/// {
///     let guard = client.lock_guard("invoices", Default::default()).await?;
///     println!("writing with fencing token {}", guard.token());
/// } // an UNLOCK is queued here
/// # Ok(()) }
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct AsyncLockGuard {
    conn: Arc<AsyncConn>,
    /// The name as the server knows it (with the namespace).
    full_name: String,
    acquired: Acquired,
    /// Cleared once released, so drop does not unlock twice.
    armed: bool,
}

impl AsyncLockGuard {
    /// The lock name, without the client's namespace.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// let guard = client.lock_guard("a", Default::default()).await?;
    /// assert_eq!(guard.name(), "a");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        self.acquired.name()
    }

    /// The fencing token of the grant.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// let guard = client.lock_guard("a", Default::default()).await?;
    /// println!("token {}", guard.token());
    /// # Ok(()) }
    /// ```
    pub fn token(&self) -> u64 {
        self.acquired.token()
    }

    /// True when the connection already held the lock, so this guard will not release it.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// let outer = client.lock_guard("a", Default::default()).await?;
    /// let inner = client.lock_guard("a", Default::default()).await?;
    /// assert!(inner.already_acquired() && !outer.already_acquired());
    /// # Ok(()) }
    /// ```
    pub fn already_acquired(&self) -> bool {
        self.acquired.already_acquired()
    }

    /// True when the server has ended this grant on its own (a LOST notice: its lease ran
    /// out, its `max_hold` passed, or it was revoked) or the connection is gone: from then on
    /// the holder must act as if it held nothing. As with the blocking
    /// [`LockGuard::is_lost`](crate::client::LockGuard::is_lost), the newest
    /// 64 notices of a connection are remembered.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// use officer::client::LockOptions;
    /// use std::time::Duration;
    /// let guard = client.lock_guard("job", LockOptions::new().lease(Duration::from_secs(5))).await?;
    /// while !guard.is_lost() {
    ///     // ... one bounded step of work, then renew ...
    /// #   break;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn is_lost(&self) -> bool {
        self.conn.is_lost() || self.conn.grant_lost(&self.full_name, self.token()).is_some()
    }

    /// Completes when the grant is lost (see [`AsyncLockGuard::is_lost`]): with the server's
    /// reason for a LOST notice, or `None` when the connection ended and took the lock with
    /// it. Cancel-safe: a watchdog to `select!` against the work done under the lock.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// use officer::client::{LockOptions, LostReason};
    /// use std::time::Duration;
    /// let guard = client.lock_guard("job", LockOptions::new().lease(Duration::from_secs(5))).await?;
    /// match guard.lost().await {
    ///     Some(LostReason::Revoked) => eprintln!("an operator took the lock away"),
    ///     Some(reason) => eprintln!("the server ended the grant: {reason:?}"),
    ///     None => eprintln!("the connection is gone, and the lock with it"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn lost(&self) -> Option<LostReason> {
        self.conn.wait_grant_lost(&self.full_name, self.token()).await
    }

    /// Waits until the grant is lost, at most `timeout` (`None`: forever); true when it was.
    /// The async form of [`LockGuard::wait_lost`](crate::client::LockGuard::wait_lost).
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// use std::time::Duration;
    /// let guard = client.lock_guard("job", Default::default()).await?;
    /// assert!(!guard.wait_lost(Some(Duration::from_millis(10))).await);
    /// # Ok(()) }
    /// ```
    pub async fn wait_lost(&self, timeout: Option<Duration>) -> bool {
        match timeout {
            None => {
                self.lost().await;
                true
            }
            Some(t) => ::tokio::time::timeout(t, self.lost()).await.is_ok(),
        }
    }

    /// True once the server said that someone waits behind this grant (a grant taken with
    /// [`LockOptions::notify_contention`]): a hint to finish early.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// use officer::client::LockOptions;
    /// let guard = client.lock_guard("batch", LockOptions::new().notify_contention()).await?;
    /// if guard.is_contended() { /* wrap up */ }
    /// # Ok(()) }
    /// ```
    pub fn is_contended(&self) -> bool {
        self.conn.contended(&self.full_name, self.token())
    }

    /// Releases the lock now and reports failures that drop would swallow: a connection lost
    /// while the guard was held means the critical section may not have been exclusive.
    /// Dropping this future before it completes still releases the lock.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// let guard = client.lock_guard("a", Default::default()).await?;
    /// guard.unlock().await?;
    /// # Ok(()) }
    /// ```
    pub async fn unlock(mut self) -> Result<()> {
        if !std::mem::replace(&mut self.armed, false) || self.acquired.already {
            return Ok(());
        }
        let track = Track::Unlock(self.full_name.clone());
        // Once queued the UNLOCK goes out whether or not this future is awaited to the end.
        match self.conn.call(Request::Unlock(&self.full_name), track).await {
            Ok(resp) => answer::unlock(self.acquired.name(), answer::refused(resp)?),
            Err(e) => {
                // The full name ends with the caller's name; what precedes it is the namespace.
                let prefix = &self.full_name[..self.full_name.len() - self.acquired.name().len()];
                Err(e.map_names(|n| n.strip_prefix(prefix).unwrap_or(n).to_owned()))
            }
        }
    }
}

impl Drop for AsyncLockGuard {
    fn drop(&mut self) {
        if std::mem::replace(&mut self.armed, false) && !self.acquired.already {
            let track = Track::Unlock(self.full_name.clone());
            self.conn.send_detached(&Request::Unlock(&self.full_name), track);
        }
    }
}

impl AsyncClient {
    /// Acquires `name` and returns a guard that releases it when dropped.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// use officer::client::LockOptions;
    /// use std::time::Duration;
    ///
    /// let guard = client.lock_guard("daily-report", LockOptions::with_timeout(Duration::from_secs(10))).await?;
    /// // ... produce the report, passing guard.token() to the storage layer ...
    /// guard.unlock().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock_guard(&self, name: &str, opts: LockOptions) -> Result<AsyncLockGuard> {
        let (conn, full_name, acquired) = self.lock_on(name, opts).await?;
        Ok(AsyncLockGuard { conn, full_name, acquired, armed: true })
    }

    /// Runs the future `f` while holding `name` and releases the lock afterwards, also when
    /// `f` panics or this future is dropped. Returns `f`'s value, or the error of locking or
    /// unlocking: a failed unlock (such as a lost connection) means `f` may have run partly
    /// without the lock.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// let total = client.with_lock("ledger", Default::default(), async { 40 + 2 }).await?;
    /// assert_eq!(total, 42);
    /// # Ok(()) }
    /// ```
    pub async fn with_lock<T>(&self, name: &str, opts: LockOptions, f: impl Future<Output = T>) -> Result<T> {
        let guard = self.lock_guard(name, opts).await?;
        let value = f.await;
        guard.unlock().await?;
        Ok(value)
    }
}
