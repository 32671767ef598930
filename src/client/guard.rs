//! Scoped locking: [`LockGuard`] (unlock on drop) and [`Client::with_lock`] built on it.
//!
//! A guard unlocks on the connection that granted the lock. After a reconnect the old
//! connection is gone and so is the lock; unlocking a same-named lock on the new connection
//! would release somebody else's critical section, so the guard never does.

use std::sync::Arc;
use std::time::Duration;

use super::answer;
use super::conn::{Conn, Track};
use super::{Acquired, Client, LockOptions, Result};

/// A held lock that is released when the guard is dropped, also while unwinding a panic.
///
/// When the connection already held the lock (a nested lock), the guard releases nothing:
/// the outermost holder does.
///
/// ```no_run
/// use officer::client::{Client, LockOptions};
///
/// let client = Client::connect("localhost", 11500)?;
/// {
///     let guard = client.lock_guard("invoices", LockOptions::new())?;
///     println!("writing with fencing token {}", guard.token());
/// } // unlocked here
/// # Ok::<(), officer::client::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct LockGuard {
    conn: Arc<Conn>,
    /// The name as the server knows it (with the namespace).
    full_name: String,
    acquired: Acquired,
    /// Cleared once released, so drop does not unlock twice.
    armed: bool,
}

impl LockGuard {
    /// The lock name, without the client's namespace.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// let guard = client.lock_guard("a", Default::default())?;
    /// assert_eq!(guard.name(), "a");
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        self.acquired.name()
    }

    /// The fencing token of the grant.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// let guard = client.lock_guard("a", Default::default())?;
    /// println!("token {}", guard.token());
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn token(&self) -> u64 {
        self.acquired.token()
    }

    /// True when the connection already held the lock, so this guard will not release it.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// let outer = client.lock_guard("a", Default::default())?;
    /// let inner = client.lock_guard("a", Default::default())?;
    /// assert!(inner.already_acquired() && !outer.already_acquired());
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn already_acquired(&self) -> bool {
        self.acquired.already_acquired()
    }

    /// True when the server has ended this grant on its own (a LOST notice: its lease ran
    /// out, its `max_hold` passed, or it was revoked) or the connection is gone: from then on
    /// the holder must act as if it held nothing.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// use officer::client::LockOptions;
    /// use std::time::Duration;
    /// let guard = client.lock_guard("job", LockOptions::new().lease(Duration::from_secs(5)))?;
    /// while !guard.is_lost() {
    ///     // ... one bounded step of work, then renew ...
    /// #   break;
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn is_lost(&self) -> bool {
        self.conn.lost().is_some() || self.conn.grant_lost(&self.full_name, self.token()).is_some()
    }

    /// Blocks until the grant is lost (see [`LockGuard::is_lost`]), at most `timeout`
    /// (`None`: forever); true when it was.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// use std::time::Duration;
    /// let guard = client.lock_guard("job", Default::default())?;
    /// assert!(!guard.wait_lost(Some(Duration::from_millis(10))));
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn wait_lost(&self, timeout: Option<Duration>) -> bool {
        self.conn.wait_grant_lost(&self.full_name, self.token(), timeout).is_ok()
    }

    /// True once the server said that someone waits behind this grant (a grant taken with
    /// [`LockOptions::notify_contention`]): a hint to finish early.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// use officer::client::LockOptions;
    /// let guard = client.lock_guard("batch", LockOptions::new().notify_contention())?;
    /// if guard.is_contended() { /* wrap up */ }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn is_contended(&self) -> bool {
        self.conn.contended(&self.full_name, self.token())
    }

    /// Releases the lock now and reports failures that drop would swallow: a connection lost
    /// while the guard was held means the critical section may not have been exclusive.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// let guard = client.lock_guard("a", Default::default())?;
    /// guard.unlock()?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn unlock(mut self) -> Result<()> {
        self.release()
    }

    fn release(&mut self) -> Result<()> {
        if !std::mem::replace(&mut self.armed, false) || self.acquired.already {
            return Ok(());
        }
        let track = Track::Unlock(self.full_name.clone());
        match self.conn.call(&crate::protocol::Request::Unlock(&self.full_name), track) {
            Ok(resp) => answer::unlock(self.acquired.name(), answer::refused(resp)?),
            Err(e) => {
                // The full name ends with the caller's name; what precedes it is the namespace.
                let prefix = &self.full_name[..self.full_name.len() - self.acquired.name().len()];
                Err(e.map_names(|n| n.strip_prefix(prefix).unwrap_or(n).to_owned()))
            }
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Errors cannot be returned from drop; a lost connection released the lock anyway.
        if let Err(e) = self.release() {
            log::debug!("officer guard unlock failed name={} error={e}", self.acquired.name());
        }
    }
}

impl Client {
    /// Acquires `name` and returns a guard that releases it when dropped.
    ///
    /// ```no_run
    /// use officer::client::{Client, LockOptions};
    /// use std::time::Duration;
    ///
    /// let client = Client::connect("localhost", 11500)?;
    /// let guard = client.lock_guard("daily-report", LockOptions::with_timeout(Duration::from_secs(10)))?;
    /// // ... produce the report, passing guard.token() to the storage layer ...
    /// drop(guard);
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn lock_guard(&self, name: &str, opts: LockOptions) -> Result<LockGuard> {
        let (conn, full_name, acquired) = self.lock_on(name, opts)?;
        Ok(LockGuard { conn, full_name, acquired, armed: true })
    }

    /// Runs `f` while holding `name` and releases the lock afterwards, also when `f` panics
    /// (the panic then continues). Nested calls for the same name on this client run `f`
    /// without waiting and release only at the outermost level.
    ///
    /// Returns `f`'s value, or the error of locking, or of unlocking: a failed unlock (such as
    /// a lost connection) means `f` may have run partly without the lock.
    ///
    /// ```no_run
    /// use officer::client::{Client, LockOptions};
    ///
    /// let client = Client::connect("localhost", 11500)?;
    /// let total = client.with_lock("ledger", LockOptions::new(), || {
    ///     // exclusive across every process using this lock name
    ///     40 + 2
    /// })?;
    /// assert_eq!(total, 42);
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn with_lock<T>(&self, name: &str, opts: LockOptions, f: impl FnOnce() -> T) -> Result<T> {
        let guard = self.lock_guard(name, opts)?;
        let value = f();
        guard.unlock()?;
        Ok(value)
    }
}
