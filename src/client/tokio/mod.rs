//! The async client (cargo feature `tokio`): [`AsyncClient`], the blocking
//! [`Client`](crate::client::Client)'s operations, options, errors and semantics on tokio.
//!
//! - `builder`: [`AsyncClientBuilder`], the blocking builder's options.
//! - `conn`: one connection multiplexing any number of tasks by request id, with a reader, a
//!   writer and a keep-alive task; where dropped `lock` futures are withdrawn.
//! - `resume`: the driver task that runs each link, and a resumable session's resume after a
//!   lost link ([`AsyncClientBuilder::session_grace`]), on the blocking client's `session`
//!   messages and rules.
//! - `guard`: [`AsyncLockGuard`] and [`AsyncClient::with_lock`].
//! - `shard`: [`AsyncShardedClient`], names spread over several servers with the blocking
//!   sharded client's placement and merging.
//! - `stream`: connecting and the handshake.
//!
//! What an answer means, request ids, held-lock tracking and the handshake's checks are the
//! blocking client's own code (`answer`, `handshake`), so both clients behave alike. Every
//! method is cancel-safe: dropping a pending [`lock`](AsyncClient::lock) withdraws the wait
//! on the server, and a grant that arrives after the drop is released at once.
//!
//! ```no_run
//! # async fn run() -> officer::client::Result<()> {
//! use officer::client::{tokio::AsyncClient, LockOptions};
//! use std::time::Duration;
//!
//! let client = AsyncClient::builder().host("localhost").namespace("billing").connect().await?;
//! let guard = client.lock_guard("invoice-run", LockOptions::with_timeout(Duration::from_secs(30))).await?;
//! // only one process in the fleet runs this at a time
//! guard.unlock().await?;
//! # Ok(()) }
//! ```

mod builder;
mod conn;
mod guard;
mod resume;
mod shard;
mod stream;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use builder::AsyncClientBuilder;
pub use guard::AsyncLockGuard;
pub use shard::AsyncShardedClient;

use super::answer::{self, Track};
use super::builder::Config;
use super::{
    Acquired, ConnectionInfo, Error, HelloOk, Listing, LockInfo, LockOptions, MyLocks, MyLocksListing,
    Result, Stats, Top,
};
use crate::protocol::{validate_name, ListRequest, Request, Response};
use conn::AsyncConn;

/// A connection to an officer server for async code, shareable between tasks (`Send + Sync`;
/// wrap it in an `Arc` to hand it to spawned tasks).
///
/// Any number of tasks call it at once: their requests are pipelined on the one connection and
/// matched to answers by request id, so a task waiting for a lock costs a small future, not a
/// thread, and never delays another task's call. Locks belong to the connection as with the
/// blocking [`Client`](crate::client::Client): tasks sharing a client share its locks. When the
/// connection breaks, the server releases its locks and calls fail with
/// [`ErrorKind::ConnectionLost`](crate::client::ErrorKind::ConnectionLost) until
/// [`AsyncClient::reconnect`] (a connection that held no locks is replaced on the next call,
/// see [`AsyncClientBuilder::auto_reconnect`]). With a resumable session
/// ([`AsyncClientBuilder::session_grace`]) a broken connection is instead reconnected and
/// resumed by the client within the grace, locks, waits and pending calls intact. Dropping
/// the client closes the connection.
///
/// ```no_run
/// # async fn run() -> officer::client::Result<()> {
/// use officer::client::{tokio::AsyncClient, LockOptions};
///
/// let client = AsyncClient::connect("localhost", 11500).await?;
/// let lock = client.lock("reindex", LockOptions::new()).await?;
/// println!("token {}", lock.token());
/// client.unlock("reindex").await?;
/// # Ok(()) }
/// ```
pub struct AsyncClient {
    config: Config,
    conn: Mutex<Arc<AsyncConn>>,
    /// Held while replacing a lost connection, so tasks needing one make one attempt.
    reconnecting: ::tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("target", &self.config.target)
            .field("prefix", &self.config.prefix)
            .finish()
    }
}

impl AsyncClient {
    /// A builder for options beyond host and port.
    ///
    /// ```no_run
    /// # async fn run() -> officer::client::Result<()> {
    /// let client = officer::client::tokio::AsyncClient::builder().namespace("app").connect().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> AsyncClientBuilder {
        AsyncClientBuilder::new()
    }

    /// Connects over TCP with default options.
    ///
    /// ```no_run
    /// # async fn run() -> officer::client::Result<()> {
    /// let client = officer::client::tokio::AsyncClient::connect("localhost", 11500).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(host: &str, port: u16) -> Result<AsyncClient> {
        AsyncClientBuilder::new().host(host).port(port).connect().await
    }

    /// Connects to a UNIX socket with default options.
    ///
    /// ```no_run
    /// # async fn run() -> officer::client::Result<()> {
    /// let client = officer::client::tokio::AsyncClient::connect_unix("/tmp/officer.sock").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_unix(path: impl AsRef<Path>) -> Result<AsyncClient> {
        AsyncClientBuilder::new().unix_socket(path).connect().await
    }

    pub(crate) async fn from_config(config: Config) -> Result<AsyncClient> {
        let conn = AsyncConn::open(&config).await?;
        Ok(AsyncClient { config, conn: Mutex::new(conn), reconnecting: ::tokio::sync::Mutex::new(()) })
    }

    fn slot(&self) -> MutexGuard<'_, Arc<AsyncConn>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection to use, replacing a broken one that held no locks when allowed.
    async fn current(&self) -> Result<Arc<AsyncConn>> {
        let conn = Arc::clone(&self.slot());
        if !self.config.auto_reconnect || !replaceable(&conn) {
            return Ok(conn);
        }
        let _one = self.reconnecting.lock().await;
        let conn = Arc::clone(&self.slot());
        if !replaceable(&conn) {
            // Another task replaced it while this one waited.
            return Ok(conn);
        }
        log::debug!("officer reconnecting after a lock-free loss");
        let fresh = AsyncConn::open(&self.config).await?;
        *self.slot() = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// `resp` with an ERROR answer as `Err`, and names in errors without the namespace.
    fn answered(&self, resp: Result<Response>) -> Result<Response> {
        match resp {
            Ok(resp) => answer::refused(resp),
            Err(e) => Err(e.map_names(|n| self.config.display_name(n))),
        }
    }

    async fn call(&self, conn: &AsyncConn, req: Request<'_>, track: Track) -> Result<Response> {
        self.answered(conn.call(req, track).await)
    }

    /// The full name of `name`, checked against the server's naming rules before sending,
    /// because an oversized name would make the server drop the whole connection.
    fn full_name(&self, conn: &AsyncConn, name: &str, allow_empty: bool) -> Result<String> {
        // Two copies into one allocation: `format!` costs more than the rest of a request's
        // building on the hot path.
        let mut full = String::with_capacity(self.config.prefix.len() + name.len());
        full.push_str(&self.config.prefix);
        full.push_str(name);
        validate_name(full.as_bytes(), conn.hello().max_name, allow_empty)
            .map_err(|why| Error::invalid_name(name, why))?;
        Ok(full)
    }

    /// Sends LOCK on the current connection; the connection, the full name and the answer
    /// (an ERROR answer as `Err`).
    async fn lock_answer(&self, name: &str, opts: LockOptions) -> Result<(Arc<AsyncConn>, String, Response)> {
        let conn = self.current().await?;
        let full = self.full_name(&conn, name, false)?;
        let resp = {
            let req = answer::lock_request(&full, &opts);
            conn.start_call(req, Track::Lock(full.clone()), Some(&full)).await
        };
        let resp = self.answered(resp)?;
        Ok((conn, full, resp))
    }

    /// Locks on the current connection and returns it with the full name, for guards.
    pub(crate) async fn lock_on(
        &self,
        name: &str,
        opts: LockOptions,
    ) -> Result<(Arc<AsyncConn>, String, Acquired)> {
        let (conn, full, resp) = self.lock_answer(name, opts).await?;
        let acquired = answer::lock(name, resp)?;
        Ok((conn, full, acquired))
    }

    /// Acquires `name`, waiting as `opts` says; see [`Client::lock`](crate::client::Client::lock)
    /// for the outcomes. Dropping the future before it completes withdraws the request: the
    /// server cancels the wait, and a grant that was already on its way is released.
    ///
    /// ```no_run
    /// # async fn run() -> officer::client::Result<()> {
    /// use officer::client::{tokio::AsyncClient, LockOptions};
    /// use std::time::Duration;
    ///
    /// let client = AsyncClient::connect("localhost", 11500).await?;
    /// let opts = LockOptions::with_timeout(Duration::from_secs(5)).queue_max(10);
    /// match client.lock("rebuild-cache", opts).await {
    ///     Ok(lock) => println!("acquired, token {}", lock.token()),
    ///     Err(e) if e.is_timeout() || e.is_queue_maxed() => println!("{e}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn lock(&self, name: &str, opts: LockOptions) -> Result<Acquired> {
        let (_, mut full, resp) = self.lock_answer(name, opts).await?;
        let granted = matches!(resp, Response::Acquired { .. } | Response::AlreadyAcquired { .. });
        // A grant's name is the full name without the namespace: that buffer, not a copy.
        let mut acquired = answer::lock(if granted { "" } else { name }, resp)?;
        full.drain(..self.config.prefix.len());
        acquired.name = full;
        Ok(acquired)
    }

    /// Acquires `name` only if it is free (or already held by this connection); otherwise
    /// fails at once with [`ErrorKind::LockTimeout`](crate::client::ErrorKind::LockTimeout).
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// match client.try_lock("cron:cleanup").await {
    ///     Ok(_) => { /* run it */ client.unlock("cron:cleanup").await?; }
    ///     Err(e) if e.is_timeout() => println!("another host runs it"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_lock(&self, name: &str) -> Result<Acquired> {
        self.lock(name, LockOptions::try_once()).await
    }

    /// Releases `name`; unlocking a name this connection waits for cancels that wait. Fails
    /// with [`ErrorKind::NotHeld`](crate::client::ErrorKind::NotHeld) when the connection
    /// neither holds nor waits for it.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// client.try_lock("a").await?;
    /// client.unlock("a").await?;
    /// assert!(client.unlock("a").await.unwrap_err().is_not_held());
    /// # Ok(()) }
    /// ```
    pub async fn unlock(&self, name: &str) -> Result<()> {
        let conn = self.current().await?;
        let full = self.full_name(&conn, name, false)?;
        let resp = conn.start_unlock(full).await;
        answer::unlock(name, self.answered(resp)?)
    }

    /// Releases every lock of this connection and cancels its waits.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// client.try_lock("a").await?;
    /// client.reset().await?;
    /// assert!(client.my_locks().await?.held.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn reset(&self) -> Result<()> {
        let conn = self.current().await?;
        answer::reset(self.call(&conn, Request::Reset, Track::Reset).await?)
    }

    /// Closes the connection (the server releases all its locks) and opens a new one. Waiting
    /// calls fail with [`ErrorKind::ConnectionLost`](crate::client::ErrorKind::ConnectionLost).
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// client.try_lock("a").await?;
    /// client.reconnect().await?;
    /// assert!(client.my_locks().await?.held.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn reconnect(&self) -> Result<()> {
        let _one = self.reconnecting.lock().await;
        // Closed before connecting anew: the caller asked for the locks to go even if the
        // new connection cannot be opened.
        self.slot().close("closed by reconnect()");
        let fresh = AsyncConn::open(&self.config).await?;
        *self.slot() = fresh;
        Ok(())
    }

    /// Closes the connection; the server releases its locks. Later calls fail with
    /// [`ErrorKind::ConnectionLost`](crate::client::ErrorKind::ConnectionLost) until
    /// [`AsyncClient::reconnect`].
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) {
    /// client.disconnect();
    /// assert!(!client.is_connected());
    /// # }
    /// ```
    pub fn disconnect(&self) {
        self.slot().close("closed by disconnect()");
    }

    /// True while the connection is up. A `false` means every lock it held is gone.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) {
    /// assert!(client.is_connected());
    /// # }
    /// ```
    pub fn is_connected(&self) -> bool {
        !self.slot().is_lost()
    }

    /// Waits until the current connection is lost or closed, at most `timeout` (`None`:
    /// forever). Returns true when it is gone: a watchdog for work done under a lock.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) {
    /// if client.wait_disconnected(None).await {
    ///     eprintln!("lost the server; stop writing");
    /// }
    /// # }
    /// ```
    pub async fn wait_disconnected(&self, timeout: Option<Duration>) -> bool {
        let conn = Arc::clone(&self.slot());
        conn.wait_lost(timeout).await
    }

    /// Every lock on the server (within this client's namespace), holder first in each queue.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// for lock in client.locks().await?.iter() {
    ///     println!("{} held by {:?}", lock.name, lock.queue.first());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn locks(&self) -> Result<Listing<LockInfo>> {
        self.locks_matching("", 0).await
    }

    /// Locks whose names start with `prefix`, at most `max` of them (0: the server's default).
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// let jobs = client.locks_matching("jobs/", 100).await?;
    /// println!("{} job locks", jobs.len());
    /// # Ok(()) }
    /// ```
    pub async fn locks_matching(&self, prefix: &str, max: u32) -> Result<Listing<LockInfo>> {
        let conn = self.current().await?;
        let full = self.full_name(&conn, prefix, true)?;
        let resp = self.call(&conn, Request::Locks(ListRequest { prefix: &full, max }), Track::None).await?;
        answer::locks(&self.config, resp)
    }

    /// Every connection on the server with the locks it holds and waits for (names inside the
    /// namespace only, without it).
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// for conn in client.connections().await?.iter() {
    ///     println!("{} holds {:?}", conn.label, conn.held);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn connections(&self) -> Result<Listing<ConnectionInfo>> {
        self.connections_matching("", 0).await
    }

    /// Connections whose label starts with `prefix`, at most `max` of them (0: the server's
    /// default).
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// let local = client.connections_matching("127.0.0.1:", 0).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connections_matching(&self, prefix: &str, max: u32) -> Result<Listing<ConnectionInfo>> {
        let conn = self.current().await?;
        validate_name(prefix.as_bytes(), conn.hello().max_name, true)
            .map_err(|why| Error::invalid_name(prefix, why))?;
        let resp = self.call(&conn, Request::Connections(ListRequest { prefix, max }), Track::None).await?;
        answer::connections(&self.config, resp)
    }

    /// The locks this connection holds and waits for; see
    /// [`Client::my_locks`](crate::client::Client::my_locks).
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// let mine = client.my_locks().await?;
    /// println!("holding {:?}, waiting for {:?}", mine.held, mine.waiting);
    /// # Ok(()) }
    /// ```
    pub async fn my_locks(&self) -> Result<MyLocks> {
        let conn = self.current().await?;
        answer::my_locks(&self.config, self.call(&conn, Request::MyLocks, Track::None).await?)
    }

    /// The locks this connection holds and waits for whose names start with `prefix`, at
    /// most `max` of each; see [`Client::my_locks_matching`](crate::client::Client::my_locks_matching).
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// let jobs = client.my_locks_matching("jobs/", 100).await?;
    /// # Ok(()) }
    /// ```
    pub async fn my_locks_matching(&self, prefix: &str, max: u32) -> Result<MyLocksListing> {
        let conn = self.current().await?;
        let full = self.full_name(&conn, prefix, true)?;
        let request = Request::MyLocksMatching(ListRequest { prefix: &full, max });
        answer::my_locks_matching(&self.config, self.call(&conn, request, Track::None).await?)
    }

    /// The server's counters.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// println!("{:?}", client.stats().await?.get("locks_held"));
    /// # Ok(()) }
    /// ```
    pub async fn stats(&self) -> Result<Stats> {
        let conn = self.current().await?;
        answer::stats(self.call(&conn, Request::Stats, Track::None).await?)
    }

    /// The busiest locks: held longest, and with the most waiters; at most `max` of each
    /// (0: the server's default of 10), inside the namespace only.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// for e in client.top(5).await?.longest_held {
    ///     println!("{} held for {} ms", e.name, e.held_ms);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn top(&self, max: u32) -> Result<Top> {
        let conn = self.current().await?;
        answer::top(&self.config, self.call(&conn, Request::Top(max), Track::None).await?)
    }

    /// Round trip to the server; returns how long it took.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) -> officer::client::Result<()> {
    /// println!("server answered in {:?}", client.ping().await?);
    /// # Ok(()) }
    /// ```
    pub async fn ping(&self) -> Result<Duration> {
        let conn = self.current().await?;
        let start = Instant::now();
        answer::pong(self.call(&conn, Request::Ping(&[]), Track::None).await?)?;
        Ok(start.elapsed())
    }

    /// What the server said in the handshake of the current connection.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) {
    /// println!("connection {}", client.server_info().connection_id);
    /// # }
    /// ```
    pub fn server_info(&self) -> HelloOk {
        self.slot().server_info()
    }

    /// The resumable session of the current connection: its id and the grace the server
    /// granted, or `None` without one (not asked for with
    /// [`AsyncClientBuilder::session_grace`], or the server opened none).
    ///
    /// ```no_run
    /// # async fn run() -> officer::client::Result<()> {
    /// use std::time::Duration;
    /// let client = officer::client::tokio::AsyncClient::builder()
    ///     .session_grace(Duration::from_secs(10))
    ///     .connect()
    ///     .await?;
    /// if let Some((id, grace)) = client.session() {
    ///     println!("session {id}: locks survive a lost connection for {grace:?}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn session(&self) -> Option<(u64, Duration)> {
        self.slot().session()
    }

    /// How many times the current connection's session was resumed after its connection
    /// dropped (0 without a session).
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) {
    /// println!("resumed {} times", client.resumes());
    /// # }
    /// ```
    pub fn resumes(&self) -> u64 {
        self.slot().resumes()
    }

    /// The namespace given to the builder, if any.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncClient) {
    /// println!("{:?}", client.namespace());
    /// # }
    /// ```
    pub fn namespace(&self) -> Option<&str> {
        self.config.prefix.strip_suffix(':')
    }
}

/// Whether `conn` may be replaced without the caller noticing: lost, not on purpose, and
/// holding no locks.
fn replaceable(conn: &AsyncConn) -> bool {
    conn.is_lost() && conn.lost().is_some_and(|lost| lost.released.is_empty() && !lost.by_client)
}

impl Drop for AsyncClient {
    fn drop(&mut self) {
        self.slot().close("the client was dropped");
    }
}
