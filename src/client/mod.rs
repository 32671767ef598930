//! The blocking client: [`Client`], built on `std::net` and [`crate::protocol`].
//!
//! - `builder`: [`ClientBuilder`], where to connect and the connection's options.
//! - `conn`: one connection, multiplexed by request id with a reader and a keep-alive thread.
//! - `guard`: [`LockGuard`] and [`Client::with_lock`].
//! - `error`: [`Error`] and [`ErrorKind`].
//! - `v2`: the lock model v2 calls of [`Client`]: token-checked unlock, downgrade, check,
//!   renew, waiting for a lost grant, the detailed listing and the operator's calls.
//! - `types`: [`LockOptions`] and [`LockMode`], [`Acquired`], [`Listing`], [`MyLocks`], [`MyLocksListing`], [`Stats`].
//! - `shard`, `shard_builder`: [`ShardedClient`] and [`ShardedBuilder`], names spread over
//!   several servers; [`placement`] (public, pure: which server a name lives on) and `merge`
//!   (how listings of several servers become one) hold what an async client can share.
//! - `cluster`: the members of one cluster ([`ClientBuilder::cluster`]) and which to try next,
//!   following `not_leader` redirects, without I/O; shared with the async client.
//! - `session`, `resume`: resumable sessions ([`ClientBuilder::session_grace`]): the messages,
//!   back-off and how a request sent again is answered, without I/O; and the reconnect-and-resume
//!   the reader thread runs when a link drops.
//! - `answer`, `handshake`: what answers mean and the handshake's checks, without I/O; shared
//!   with [`tokio`] (cargo feature `tokio`), the async client.
//!
//! Locks belong to the connection, as in the original officer: every thread sharing a `Client`
//! shares its locks (a second `lock` of a held name answers "already acquired" at once). For
//! exclusion between threads of one process, give each its own `Client`.
//!
//! ```no_run
//! use officer::client::{Client, LockOptions};
//! use std::time::Duration;
//!
//! let client = Client::builder().host("localhost").port(11500).namespace("billing").connect()?;
//! client.with_lock("invoice-run", LockOptions::with_timeout(Duration::from_secs(30)), || {
//!     // only one process in the fleet runs this at a time
//! })?;
//! # Ok::<(), officer::client::Error>(())
//! ```

#![warn(missing_docs)]
// Without the `tokio` feature the async module is left out, and its link in the map above is
// expected to dangle (the `-F tokio` docs check it).
#![cfg_attr(not(feature = "tokio"), allow(rustdoc::broken_intra_doc_links))]

mod answer;
mod builder;
mod cluster;
mod conn;
mod error;
mod guard;
mod handshake;
mod merge;
pub mod placement;
mod resume;
#[cfg(test)]
mod resume_tests;
mod session;
mod shard;
mod shard_builder;
mod stream;
#[cfg(test)]
mod tests;
#[cfg(feature = "tokio")]
pub mod tokio;
mod types;
mod v2;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use crate::protocol::{
    ConnectionInfo, DetachedSession, HelloOk, HolderInfo, LockDetail, LockInfo, LostReason, Mode, TopEntry,
    WaiterInfo,
};
pub use builder::{ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HOST, DEFAULT_PORT};
#[cfg(feature = "cli")]
pub(crate) use error::shown_name;
pub use error::{Error, ErrorKind, Result};
pub use guard::LockGuard;
pub use shard::ShardedClient;
pub use shard_builder::ShardedBuilder;
pub use types::{Acquired, Listing, LockMode, LockOptions, MyLocks, MyLocksListing, Stats, Top};

use crate::protocol::{validate_name, ListRequest, Request, Response};
use builder::Config;
use conn::{Conn, Track};

/// A connection to an officer server, shareable between threads (`Send + Sync`).
///
/// Calls block the calling thread only: a thread waiting for a lock does not delay other
/// threads' calls. When the connection breaks, the server releases its locks; calls then fail
/// with [`ErrorKind::ConnectionLost`] until [`Client::reconnect`] (a connection that held no
/// locks is replaced on the next call, see [`ClientBuilder::auto_reconnect`]). With a
/// resumable session ([`ClientBuilder::session_grace`]) a broken connection is instead
/// reconnected and resumed by the client within the grace, locks and waits intact, and only a
/// failed resume is a lost connection. Dropping the client closes the connection.
///
/// ```no_run
/// use officer::client::{Client, LockOptions};
///
/// let client = Client::connect("localhost", 11500)?;
/// let lock = client.lock("reindex", LockOptions::new())?;
/// println!("token {}", lock.token());
/// client.unlock("reindex")?;
/// # Ok::<(), officer::client::Error>(())
/// ```
pub struct Client {
    config: Config,
    conn: Mutex<Arc<Conn>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.config.target)
            .field("prefix", &self.config.prefix)
            .finish()
    }
}

impl Client {
    /// A builder for options beyond host and port.
    ///
    /// ```no_run
    /// let client = officer::client::Client::builder().namespace("app").connect()?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// Connects over TCP with default options.
    ///
    /// ```no_run
    /// let client = officer::client::Client::connect("localhost", 11500)?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn connect(host: &str, port: u16) -> Result<Client> {
        ClientBuilder::new().host(host).port(port).connect()
    }

    /// Connects to a UNIX socket with default options.
    ///
    /// ```no_run
    /// let client = officer::client::Client::connect_unix("/tmp/officer.sock")?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn connect_unix(path: impl AsRef<Path>) -> Result<Client> {
        ClientBuilder::new().unix_socket(path).connect()
    }

    pub(crate) fn from_config(config: Config) -> Result<Client> {
        let conn = Conn::open(&config)?;
        Ok(Client { config, conn: Mutex::new(conn) })
    }

    fn slot(&self) -> MutexGuard<'_, Arc<Conn>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection to use, replacing a broken one that held no locks when allowed.
    fn current(&self) -> Result<Arc<Conn>> {
        let mut slot = self.slot();
        if self.config.auto_reconnect {
            if let Some(lost) = slot.lost() {
                if lost.released.is_empty() && !lost.by_client {
                    log::debug!("officer reconnecting after a lock-free loss reason={}", lost.reason);
                    *slot = Conn::open(&self.config)?;
                }
            }
        }
        Ok(Arc::clone(&slot))
    }

    /// Sends `req` on `conn`; an ERROR answer becomes `Err`, and names in errors lose the
    /// namespace.
    fn call(&self, conn: &Conn, req: &Request<'_>, track: Track) -> Result<Response> {
        match conn.call(req, track) {
            Ok(resp) => answer::refused(resp),
            Err(e) => Err(e.map_names(|n| self.config.display_name(n))),
        }
    }

    /// The full name of `name`, checked against the server's naming rules before sending,
    /// because an oversized name would make the server drop the whole connection.
    fn full_name(&self, conn: &Conn, name: &str, allow_empty: bool) -> Result<String> {
        let full = self.config.full_name(name);
        validate_name(full.as_bytes(), conn.hello().max_name, allow_empty)
            .map_err(|why| Error::invalid_name(name, why))?;
        Ok(full)
    }

    /// Locks on the current connection and returns it with the full name, for guards.
    pub(crate) fn lock_on(&self, name: &str, opts: LockOptions) -> Result<(Arc<Conn>, String, Acquired)> {
        let conn = self.current()?;
        let full = self.full_name(&conn, name, false)?;
        let req = answer::lock_request(&full, &opts);
        let result = answer::lock(name, self.call(&conn, &req, Track::Lock(full.clone()))?)?;
        Ok((conn, full, result))
    }

    /// Acquires `name`, waiting as `opts` says. A timeout or full queue is an error carrying
    /// the lock's queue ([`Error::queue`]); a lock this connection already holds is granted at
    /// once with [`Acquired::already_acquired`] set.
    ///
    /// ```no_run
    /// use officer::client::{Client, LockOptions};
    /// use std::time::Duration;
    ///
    /// let client = Client::connect("localhost", 11500)?;
    /// let opts = LockOptions::with_timeout(Duration::from_secs(5)).queue_max(10);
    /// match client.lock("rebuild-cache", opts) {
    ///     Ok(lock) => println!("acquired, token {}", lock.token()),
    ///     Err(e) if e.is_timeout() || e.is_queue_maxed() => println!("{e}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn lock(&self, name: &str, opts: LockOptions) -> Result<Acquired> {
        self.lock_on(name, opts).map(|(_, _, acquired)| acquired)
    }

    /// Acquires `name` only if it is free (or already held by this connection); otherwise
    /// fails at once with [`ErrorKind::LockTimeout`].
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// match client.try_lock("cron:cleanup") {
    ///     Ok(_) => { /* run it */ client.unlock("cron:cleanup")?; }
    ///     Err(e) if e.is_timeout() => println!("another host runs it"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn try_lock(&self, name: &str) -> Result<Acquired> {
        self.lock(name, LockOptions::try_once())
    }

    /// Releases `name`. Unlocking a name this connection waits for cancels that wait.
    /// Fails with [`ErrorKind::NotHeld`] when the connection neither holds nor waits for it.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// client.try_lock("a")?;
    /// client.unlock("a")?;
    /// assert!(client.unlock("a").unwrap_err().is_not_held());
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn unlock(&self, name: &str) -> Result<()> {
        let conn = self.current()?;
        let full = self.full_name(&conn, name, false)?;
        answer::unlock(name, self.call(&conn, &Request::Unlock(&full), Track::Unlock(full.clone()))?)
    }

    /// Releases every lock of this connection and cancels its waits.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// client.try_lock("a")?;
    /// client.try_lock("b")?;
    /// client.reset()?;
    /// assert!(client.my_locks()?.held.is_empty());
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn reset(&self) -> Result<()> {
        let conn = self.current()?;
        answer::reset(self.call(&conn, &Request::Reset, Track::Reset)?)
    }

    /// Closes the connection (the server releases all its locks) and opens a new one. Waiting
    /// calls fail with [`ErrorKind::ConnectionLost`]. In a child process after `fork`, the
    /// inherited connection is left untouched for the parent and the child gets its own.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// client.try_lock("a")?;
    /// client.reconnect()?;
    /// assert!(client.my_locks()?.held.is_empty());
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn reconnect(&self) -> Result<()> {
        let mut slot = self.slot();
        // Closed before connecting anew: the caller asked for the locks to go even if the
        // new connection cannot be opened.
        slot.close("closed by reconnect()");
        *slot = Conn::open(&self.config)?;
        Ok(())
    }

    /// Closes the connection; the server releases its locks. Later calls fail with
    /// [`ErrorKind::ConnectionLost`] until [`Client::reconnect`].
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// client.disconnect();
    /// assert!(!client.is_connected());
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn disconnect(&self) {
        self.slot().close("closed by disconnect()");
    }

    /// True while the connection is up. A `false` means every lock it held is gone. With a
    /// session, true also while a dropped connection is being resumed within the grace.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// assert!(client.is_connected());
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn is_connected(&self) -> bool {
        self.slot().lost().is_none()
    }

    /// Blocks until the current connection is lost or closed, at most `timeout` (`None`:
    /// forever). Returns true when it is gone: a watchdog for work done under a lock.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// use std::time::Duration;
    /// if client.wait_disconnected(Some(Duration::from_millis(10))) {
    ///     eprintln!("lost the server; stop writing");
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn wait_disconnected(&self, timeout: Option<Duration>) -> bool {
        let conn = Arc::clone(&self.slot());
        conn.wait_lost(timeout)
    }

    /// Every lock on the server (within this client's namespace), holder first in each queue.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// for lock in client.locks()?.iter() {
    ///     println!("{} held by {:?}", lock.name, lock.queue.first());
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn locks(&self) -> Result<Listing<LockInfo>> {
        self.locks_matching("", 0)
    }

    /// Locks whose names start with `prefix`, at most `max` of them (0: the server's default).
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// let jobs = client.locks_matching("jobs/", 100)?;
    /// println!("{} job locks{}", jobs.len(), if jobs.truncated { " (truncated)" } else { "" });
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn locks_matching(&self, prefix: &str, max: u32) -> Result<Listing<LockInfo>> {
        let conn = self.current()?;
        let full = self.full_name(&conn, prefix, true)?;
        let resp = self.call(&conn, &Request::Locks(ListRequest { prefix: &full, max }), Track::None)?;
        answer::locks(&self.config, resp)
    }

    /// Every connection on the server with the locks it holds and waits for. With a
    /// namespace, only names inside it are shown (without the prefix).
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// for conn in client.connections()?.iter() {
    ///     println!("{} holds {:?}, waits for {:?}", conn.label, conn.held, conn.waiting);
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn connections(&self) -> Result<Listing<ConnectionInfo>> {
        self.connections_matching("", 0)
    }

    /// Connections whose label (`ip:port` or `unix:<id>`) starts with `prefix`, at most
    /// `max` of them (0: the server's default).
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// let local = client.connections_matching("127.0.0.1:", 0)?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn connections_matching(&self, prefix: &str, max: u32) -> Result<Listing<ConnectionInfo>> {
        let conn = self.current()?;
        validate_name(prefix.as_bytes(), conn.hello().max_name, true)
            .map_err(|why| Error::invalid_name(prefix, why))?;
        let resp = self.call(&conn, &Request::Connections(ListRequest { prefix, max }), Track::None)?;
        answer::connections(&self.config, resp)
    }

    /// The locks this connection holds and waits for. The server caps each list at its listing
    /// default and the whole answer at its frame limit, without saying so: use
    /// [`Client::my_locks_matching`] to learn whether names were left out.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// let mine = client.my_locks()?;
    /// println!("holding {:?}, waiting for {:?}", mine.held, mine.waiting);
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn my_locks(&self) -> Result<MyLocks> {
        let conn = self.current()?;
        answer::my_locks(&self.config, self.call(&conn, &Request::MyLocks, Track::None)?)
    }

    /// The locks this connection holds (sorted by name) and waits for (in the order the waits
    /// started) whose names start with `prefix`, at most `max` of each (0: the server's
    /// default); [`MyLocksListing::truncated`] says when the server left names out. Needs a
    /// server that knows MY_LOCKS_MATCHING (PROTOCOL.md §3.11); an older one answers with an
    /// `unknown_opcode` error, and [`Client::my_locks`] works with every server.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// let jobs = client.my_locks_matching("jobs/", 100)?;
    /// println!("holding {:?}{}", jobs.held, if jobs.truncated { " and more" } else { "" });
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn my_locks_matching(&self, prefix: &str, max: u32) -> Result<MyLocksListing> {
        let conn = self.current()?;
        let full = self.full_name(&conn, prefix, true)?;
        let request = Request::MyLocksMatching(ListRequest { prefix: &full, max });
        answer::my_locks_matching(&self.config, self.call(&conn, &request, Track::None)?)
    }

    /// The server's counters.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// for (key, value) in client.stats()?.iter() {
    ///     println!("{key}: {value}");
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn stats(&self) -> Result<Stats> {
        let conn = self.current()?;
        answer::stats(self.call(&conn, &Request::Stats, Track::None)?)
    }

    /// The busiest locks: held longest, and with the most waiters; at most `max` of each
    /// (0: the server's default of 10). With a namespace, only locks inside it are shown.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// for e in client.top(5)?.longest_held {
    ///     println!("{} held by {} for {} ms, {} waiting", e.name, e.holder, e.held_ms, e.waiters);
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn top(&self, max: u32) -> Result<Top> {
        let conn = self.current()?;
        answer::top(&self.config, self.call(&conn, &Request::Top(max), Track::None)?)
    }

    /// Round trip to the server; returns how long it took.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// println!("server answered in {:?}", client.ping()?);
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn ping(&self) -> Result<Duration> {
        let conn = self.current()?;
        let start = Instant::now();
        answer::pong(self.call(&conn, &Request::Ping(&[]), Track::None)?)?;
        Ok(start.elapsed())
    }

    /// What the server said in the handshake of the current connection: its connection id
    /// for this client, limits, and idle timeout.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// let info = client.server_info();
    /// println!("connection {} (idle timeout {} ms)", info.connection_id, info.idle_timeout_ms);
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn server_info(&self) -> HelloOk {
        self.slot().hello()
    }

    /// The resumable session of the current connection: its id and the grace the server
    /// granted, or `None` without one (not asked for with [`ClientBuilder::session_grace`],
    /// or the server opened none).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let client = officer::client::Client::builder().session_grace(Duration::from_secs(10)).connect()?;
    /// if let Some((id, grace)) = client.session() {
    ///     println!("session {id}: locks survive a lost connection for {grace:?}");
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn session(&self) -> Option<(u64, Duration)> {
        self.slot().session()
    }

    /// How many times the current connection's session was resumed after its connection
    /// dropped (0 without a session).
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// println!("resumed {} times", client.resumes());
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn resumes(&self) -> u64 {
        self.slot().resumes()
    }

    /// The namespace given to the builder, if any.
    ///
    /// ```no_run
    /// let client = officer::client::Client::builder().namespace("ns").connect()?;
    /// assert_eq!(client.namespace(), Some("ns"));
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn namespace(&self) -> Option<&str> {
        self.config.prefix.strip_suffix(':')
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.slot().close("the client was dropped");
    }
}
