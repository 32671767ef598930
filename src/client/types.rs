//! Plain values the client takes and returns: lock options, the result of a granted lock,
//! listings, a connection's own locks and server statistics.

use std::time::Duration;

use crate::protocol::{LockExtRequest, TIMEOUT_FOREVER};

/// How `lock` waits: for how long, and whether to queue behind a long line at all.
///
/// The server enforces the timeout (with millisecond precision), so a waiting call returns
/// exactly when the server answers: granted, timed out, or refused because the queue is full.
///
/// ```
/// use officer::client::LockOptions;
/// use std::time::Duration;
///
/// let forever = LockOptions::new();
/// assert_eq!(forever.timeout, None);
/// let patient = LockOptions::new().timeout(Duration::from_secs(5)).queue_max(10);
/// assert_eq!(patient.queue_max, Some(10));
/// assert_eq!(LockOptions::try_once().timeout, Some(Duration::ZERO));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockOptions {
    /// `None` waits forever; `Some(Duration::ZERO)` tries once without waiting.
    pub timeout: Option<Duration>,
    /// Refuse to wait when holder + waiters already number this many (`None` or 0: no limit).
    pub queue_max: Option<u32>,
    /// Exclusive (the default), shared, or permits of a counting semaphore.
    pub mode: LockMode,
    /// The grant ends by itself unless renewed ([`Client::renew`](super::Client::renew))
    /// within this long; `None`: held until unlocked or the connection ends.
    pub lease: Option<Duration>,
    /// The grant ends this long after it was granted, renewed or not; `None`: no bound.
    pub max_hold: Option<Duration>,
    /// After this grant ends abnormally (connection lost, lease expired, revoked), the name
    /// grants nothing for this long; `None`: free at once, as always.
    pub lock_delay: Option<Duration>,
    /// Ask the server to say when someone starts waiting behind this grant.
    pub notify_contention: bool,
    /// With a resumable session: if the wait's turn comes while the connection is lost, the
    /// server skips it instead of granting it (PROTOCOL.md §6.14); the call then fails with
    /// the server code `skipped`. Without a session it changes nothing.
    pub skip_while_detached: bool,
}

/// How a grant holds its name (PROTOCOL.md §6.7, §6.8).
///
/// ```
/// use officer::client::{LockMode, LockOptions};
/// assert_eq!(LockOptions::new().mode, LockMode::Exclusive);
/// assert_eq!(LockOptions::new().shared().mode, LockMode::Shared);
/// assert_eq!(LockOptions::new().permits(2, 5).mode, LockMode::Semaphore { permits: 2, limit: 5 });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LockMode {
    /// Alone: no other grant of the name beside it.
    #[default]
    Exclusive,
    /// Beside other shared grants, never beside an exclusive one; a waiting exclusive request
    /// is served before shared requests that came after it.
    Shared,
    /// `permits` of the name's `limit` permits; every user of the name must give the same
    /// `limit` (another one is refused with `limit_mismatch`).
    Semaphore {
        /// Permits this grant takes, `1..=limit`.
        permits: u32,
        /// The name's number of permits.
        limit: u32,
    },
}

impl LockOptions {
    /// Wait forever, queue without limit.
    ///
    /// ```
    /// assert_eq!(officer::client::LockOptions::new(), Default::default());
    /// ```
    pub fn new() -> LockOptions {
        LockOptions::default()
    }

    /// Try once: granted at once or refused with a timeout error.
    ///
    /// ```
    /// let opts = officer::client::LockOptions::try_once();
    /// assert_eq!(opts.timeout, Some(std::time::Duration::ZERO));
    /// ```
    pub fn try_once() -> LockOptions {
        LockOptions { timeout: Some(Duration::ZERO), ..LockOptions::default() }
    }

    /// Wait at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = officer::client::LockOptions::with_timeout(Duration::from_millis(250));
    /// assert_eq!(opts.timeout, Some(Duration::from_millis(250)));
    /// ```
    pub fn with_timeout(timeout: Duration) -> LockOptions {
        LockOptions { timeout: Some(timeout), ..LockOptions::default() }
    }

    /// Sets the timeout (`Duration::ZERO` tries once).
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = officer::client::LockOptions::new().timeout(Duration::from_secs(2));
    /// assert_eq!(opts.timeout, Some(Duration::from_secs(2)));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> LockOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the queue limit: holder + waiters at or above `max` refuses at once.
    ///
    /// ```
    /// let opts = officer::client::LockOptions::new().queue_max(1);
    /// assert_eq!(opts.queue_max, Some(1));
    /// ```
    pub fn queue_max(mut self, max: u32) -> LockOptions {
        self.queue_max = Some(max);
        self
    }

    /// A shared grant (a reader's lock, like `flock -s`).
    ///
    /// ```
    /// let opts = officer::client::LockOptions::new().shared();
    /// assert_eq!(opts.mode, officer::client::LockMode::Shared);
    /// ```
    pub fn shared(mut self) -> LockOptions {
        self.mode = LockMode::Shared;
        self
    }

    /// `permits` of a counting semaphore of `limit` permits.
    ///
    /// ```
    /// let opts = officer::client::LockOptions::new().permits(1, 4);
    /// assert_eq!(opts.mode, officer::client::LockMode::Semaphore { permits: 1, limit: 4 });
    /// ```
    pub fn permits(mut self, permits: u32, limit: u32) -> LockOptions {
        self.mode = LockMode::Semaphore { permits, limit };
        self
    }

    /// A lease: the grant ends unless renewed within `lease` (at least 1 ms).
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = officer::client::LockOptions::new().lease(Duration::from_secs(10));
    /// assert_eq!(opts.lease, Some(Duration::from_secs(10)));
    /// ```
    pub fn lease(mut self, lease: Duration) -> LockOptions {
        self.lease = Some(lease);
        self
    }

    /// A hold budget: the grant ends `max_hold` after it was granted, renewed or not.
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = officer::client::LockOptions::new().max_hold(Duration::from_secs(60));
    /// assert_eq!(opts.max_hold, Some(Duration::from_secs(60)));
    /// ```
    pub fn max_hold(mut self, max_hold: Duration) -> LockOptions {
        self.max_hold = Some(max_hold);
        self
    }

    /// A lock-delay: after the grant ends abnormally, the name stays unavailable this long.
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = officer::client::LockOptions::new().lock_delay(Duration::from_secs(5));
    /// assert_eq!(opts.lock_delay, Some(Duration::from_secs(5)));
    /// ```
    pub fn lock_delay(mut self, delay: Duration) -> LockOptions {
        self.lock_delay = Some(delay);
        self
    }

    /// Ask to be told when someone starts waiting behind the grant
    /// ([`LockGuard::is_contended`](super::LockGuard::is_contended)).
    ///
    /// ```
    /// assert!(officer::client::LockOptions::new().notify_contention().notify_contention);
    /// ```
    pub fn notify_contention(mut self) -> LockOptions {
        self.notify_contention = true;
        self
    }

    /// With a resumable session ([`ClientBuilder::session_grace`](super::ClientBuilder::session_grace)):
    /// a wait whose turn comes while the connection is lost is skipped, so the name goes to
    /// the next waiter instead of being held for a client that may not come back in time.
    /// The call then fails with the server code
    /// [`ErrorCode::Skipped`](crate::protocol::ErrorCode::Skipped) once the session resumes.
    ///
    /// ```
    /// assert!(officer::client::LockOptions::new().skip_while_detached().skip_while_detached);
    /// ```
    pub fn skip_while_detached(mut self) -> LockOptions {
        self.skip_while_detached = true;
        self
    }

    /// True when these options ask for nothing the version-1 LOCK cannot say: then the client
    /// sends LOCK, byte for byte as before, which every server understands.
    pub(crate) fn is_v1(&self) -> bool {
        self.mode == LockMode::Exclusive
            && self.lease.is_none()
            && self.max_hold.is_none()
            && self.lock_delay.is_none()
            && !self.notify_contention
            && !self.skip_while_detached
    }

    /// The LOCK_EXT request of these options for `name`.
    pub(crate) fn ext_request<'a>(&self, name: &'a str) -> LockExtRequest<'a> {
        let mut req = match self.mode {
            LockMode::Exclusive => LockExtRequest::exclusive(name),
            LockMode::Shared => LockExtRequest::shared(name),
            LockMode::Semaphore { permits, limit } => LockExtRequest::semaphore(name, permits, limit),
        };
        req.timeout_ms = self.timeout_ms();
        req.queue_max = self.queue_max_wire();
        req.lease_ms = self.lease.map(duration_ms);
        req.max_hold_ms = self.max_hold.map(duration_ms);
        req.lock_delay_ms = self.lock_delay.map_or(0, duration_ms);
        req.notify_contention = self.notify_contention;
        req.skip_while_detached = self.skip_while_detached;
        req
    }

    /// The LOCK request's `timeout_ms`: rounded up so a short non-zero timeout never turns
    /// into a try-once, and kept below the "forever" value.
    pub(crate) fn timeout_ms(&self) -> Option<u32> {
        self.timeout.map(|t| {
            let ms = t.as_nanos().div_ceil(1_000_000);
            ms.min(u128::from(TIMEOUT_FOREVER - 1)) as u32
        })
    }

    /// The LOCK request's `queue_max`: zero means no limit on the wire, too.
    pub(crate) fn queue_max_wire(&self) -> Option<u32> {
        self.queue_max.filter(|&n| n != 0)
    }
}

/// A duration in whole milliseconds for a LOCK_EXT field where 0 means "none": rounded up, at
/// least 1, at most `u32::MAX`.
fn duration_ms(d: Duration) -> u32 {
    d.as_nanos().div_ceil(1_000_000).clamp(1, u128::from(u32::MAX)) as u32
}

/// A granted lock: its name and fencing token, and whether this connection already held it.
///
/// The fencing token increases every time the server grants any lock, so a resource guarded
/// by the lock can reject writes carrying an older token than one it has already seen.
///
/// ```no_run
/// # let client = officer::client::Client::connect("localhost", 11500)?;
/// let lock = client.try_lock("compaction")?;
/// println!("{} granted with token {}", lock.name(), lock.token());
/// assert!(client.try_lock("compaction")?.already_acquired());
/// # Ok::<(), officer::client::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    pub(crate) name: String,
    pub(crate) token: u64,
    pub(crate) already: bool,
}

impl Acquired {
    /// The lock name, without the client's namespace.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// assert_eq!(client.try_lock("a")?.name(), "a");
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token of this grant (for `already_acquired`, the token of the original grant).
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// let first = client.try_lock("a")?;
    /// assert_eq!(client.try_lock("a")?.token(), first.token());
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn token(&self) -> u64 {
        self.token
    }

    /// True when this connection held the lock before the call (a nested lock).
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// assert!(!client.try_lock("a")?.already_acquired());
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn already_acquired(&self) -> bool {
        self.already
    }
}

/// A server listing, possibly cut short by the server's entry limit.
///
/// It dereferences to a slice, so it can be iterated, indexed and counted directly.
///
/// ```no_run
/// # let client = officer::client::Client::connect("localhost", 11500)?;
/// let locks = client.locks()?;
/// for lock in locks.iter() {
///     println!("{}: {:?}", lock.name, lock.queue);
/// }
/// if locks.truncated { println!("(more not shown)"); }
/// # Ok::<(), officer::client::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    /// The entries, in the server's order.
    pub items: Vec<T>,
    /// True when the server left entries out because of its limit.
    pub truncated: bool,
}

impl<T> std::ops::Deref for Listing<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T> IntoIterator for Listing<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// The locks this connection holds and waits for (namespace removed).
///
/// ```no_run
/// # let client = officer::client::Client::connect("localhost", 11500)?;
/// client.try_lock("a")?;
/// assert_eq!(client.my_locks()?.held, vec!["a".to_string()]);
/// # Ok::<(), officer::client::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MyLocks {
    /// Held names.
    pub held: Vec<String>,
    /// Awaited names, in the order the waits started.
    pub waiting: Vec<String>,
}

/// The answer to [`Client::my_locks_matching`](crate::client::Client::my_locks_matching): the
/// matching names this connection holds and waits for (namespace removed), and whether the
/// server left any out.
///
/// ```
/// let mine = officer::client::MyLocksListing::default();
/// assert!(mine.held.is_empty() && mine.waiting.is_empty() && !mine.truncated);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MyLocksListing {
    /// Held names, sorted by name.
    pub held: Vec<String>,
    /// Awaited names, in the order the waits started.
    pub waiting: Vec<String>,
    /// True when matching names were left out (the `max` asked for, the server's default, or
    /// the frame limit).
    pub truncated: bool,
}

/// Server statistics: named counters in the server's order.
///
/// ```no_run
/// # let client = officer::client::Client::connect("localhost", 11500)?;
/// let stats = client.stats()?;
/// for (key, value) in stats.iter() { println!("{key} {value}"); }
/// println!("{:?}", stats.get("connections"));
/// # Ok::<(), officer::client::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `(key, value)` pairs in the server's order.
    pub entries: Vec<(String, u64)>,
}

impl Stats {
    /// The value of one counter.
    ///
    /// ```
    /// let stats = officer::client::Stats { entries: vec![("locks".into(), 3)] };
    /// assert_eq!(stats.get("locks"), Some(3));
    /// assert_eq!(stats.get("nope"), None);
    /// ```
    pub fn get(&self, key: &str) -> Option<u64> {
        self.entries.iter().find(|(k, _)| k == key).map(|&(_, v)| v)
    }

    /// All counters as `(key, value)` pairs.
    ///
    /// ```
    /// let stats = officer::client::Stats { entries: vec![("locks".into(), 3)] };
    /// assert_eq!(stats.iter().count(), 1);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

/// The answer to [`Client::top`](crate::client::Client::top).
///
/// ```
/// let top = officer::client::Top::default();
/// assert!(top.longest_held.is_empty() && top.deepest_queues.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Top {
    /// Locks held longest, longest first.
    pub longest_held: Vec<crate::protocol::TopEntry>,
    /// Locks with waiters, most waiters first.
    pub deepest_queues: Vec<crate::protocol::TopEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_ms_rounds_up_and_saturates() {
        let ms = |d| LockOptions::with_timeout(d).timeout_ms();
        assert_eq!(LockOptions::new().timeout_ms(), None);
        assert_eq!(ms(Duration::ZERO), Some(0));
        assert_eq!(ms(Duration::from_nanos(1)), Some(1));
        assert_eq!(ms(Duration::from_micros(1500)), Some(2));
        assert_eq!(ms(Duration::from_secs(3)), Some(3000));
        assert_eq!(ms(Duration::from_secs(u64::MAX)), Some(TIMEOUT_FOREVER - 1));
    }

    #[test]
    fn queue_max_zero_means_unlimited() {
        assert_eq!(LockOptions::new().queue_max(0).queue_max_wire(), None);
        assert_eq!(LockOptions::new().queue_max(2).queue_max_wire(), Some(2));
    }
}
