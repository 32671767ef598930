//! Plain values the client takes and returns: lock options, the result of a granted lock,
//! listings, a connection's own locks and server statistics.

use std::time::Duration;

use crate::protocol::TIMEOUT_FOREVER;

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
        LockOptions { timeout: Some(Duration::ZERO), queue_max: None }
    }

    /// Wait at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = officer::client::LockOptions::with_timeout(Duration::from_millis(250));
    /// assert_eq!(opts.timeout, Some(Duration::from_millis(250)));
    /// ```
    pub fn with_timeout(timeout: Duration) -> LockOptions {
        LockOptions { timeout: Some(timeout), queue_max: None }
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
