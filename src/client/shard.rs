//! [`ShardedClient`]: one [`Client`] per server of a set, each lock name routed to the one
//! server [`placement`](super::placement) gives it, and listings fanned out and merged
//! ([`merge`](super::merge)).
//!
//! Mutual exclusion never needs two servers to agree: a name lives on exactly one server, and
//! every client with the same set (in any order) picks the same one.

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use super::{
    merge, placement, Acquired, Client, ClientBuilder, ConnectionInfo, Listing, LockGuard, LockInfo,
    LockOptions, MyLocks, MyLocksListing, Result, ShardedBuilder, Stats, Top,
};

/// Locks spread over several officer servers, shareable between threads (`Send + Sync`).
///
/// - **Placement.** Each name (with the namespace) lives on the server with the highest
///   rendezvous weight for it ([`placement`](super::placement)): the same server for every
///   client whose list holds the same servers, in any order. Adding a server moves about 1/N
///   of the names to it; removing one moves only its own names.
/// - **Connections.** [`ShardedBuilder::connect`] connects to every server in parallel;
///   [`ShardedBuilder::connect_lazy`] to none. Either way a server that cannot be reached
///   fails only the calls that need it, with an error naming it
///   ([`Error::server_address`](super::Error::server_address)), and the next call that needs
///   it tries to connect again. Each connection behaves as a [`Client`]'s: its locks go when
///   it breaks, and it is replaced automatically only if it held none.
/// - **Fan-out.** [`locks`](ShardedClient::locks), [`connections`](ShardedClient::connections),
///   [`top`](ShardedClient::top), [`stats`](ShardedClient::stats) and
///   [`ping`](ShardedClient::ping) ask every server in parallel; [`reset`](ShardedClient::reset)
///   and [`my_locks`](ShardedClient::my_locks) only the servers this client is connected to
///   (a connection never opened holds nothing). Any failure fails the call, after every server
///   was asked; [`each_server`](ShardedClient::each_server) gives the answers one by one
///   instead, failures included.
/// - **Fencing tokens** are comparable only between grants of the same name. That name always
///   lives on the same server, so its tokens grow as on one server; tokens of names on
///   different servers come from different counters and say nothing about each other.
///
/// ```no_run
/// use officer::client::{LockOptions, ShardedClient};
///
/// let client = ShardedClient::builder().servers(["a:11500", "b:11500", "c:11500"]).connect()?;
/// let lock = client.lock("reindex", LockOptions::new())?;
/// println!("token {} from {}", lock.token(), client.server_for("reindex"));
/// client.unlock("reindex")?;
/// # Ok::<(), officer::client::Error>(())
/// ```
pub struct ShardedClient {
    /// Canonical address and its [`placement::server_key`], sorted by address, distinct.
    placement: Vec<(String, u64)>,
    /// The servers' connections, in the order of `placement`.
    shards: Vec<Shard>,
    /// The namespace prefix with its `:`, or empty.
    prefix: String,
}

/// One server: how to connect, and the client once connected.
struct Shard {
    options: ClientBuilder,
    /// `None` until the first successful connect. The mutex is held while connecting, so
    /// threads needing a down server wait for one attempt instead of each making their own.
    client: Mutex<Option<Arc<Client>>>,
}

impl Shard {
    fn slot(&self) -> MutexGuard<'_, Option<Arc<Client>>> {
        self.client.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn connected(&self) -> Option<Arc<Client>> {
        self.slot().clone()
    }

    fn client(&self, address: &str) -> Result<Arc<Client>> {
        let mut slot = self.slot();
        if let Some(client) = &*slot {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(self.options.clone().connect().map_err(|e| e.on_server(address))?);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }
}

impl std::fmt::Debug for ShardedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedClient").field("servers", &self.servers().collect::<Vec<_>>()).finish()
    }
}

impl ShardedClient {
    /// A builder: the servers, then the options of [`ClientBuilder`].
    ///
    /// ```
    /// let builder = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]);
    /// ```
    pub fn builder() -> ShardedBuilder {
        ShardedBuilder::new()
    }

    pub(crate) fn from_parts(mut servers: Vec<(String, ClientBuilder)>, prefix: String) -> ShardedClient {
        servers.sort_by(|a, b| a.0.cmp(&b.0));
        servers.dedup_by(|a, b| a.0 == b.0);
        let placement = servers.iter().map(|(a, _)| (a.clone(), placement::server_key(a))).collect();
        let shards =
            servers.into_iter().map(|(_, options)| Shard { options, client: Mutex::new(None) }).collect();
        ShardedClient { placement, shards, prefix }
    }

    /// Tries every server in parallel; failures are left for the calls that need them.
    pub(crate) fn open_all(&self) {
        for (address, result) in self.fan_out(false, |_| Ok(())) {
            if let Err(e) = result {
                log::debug!("officer sharded client could not connect server={address} error={e}");
            }
        }
    }

    /// The servers' canonical addresses, sorted.
    ///
    /// ```
    /// let client = officer::client::ShardedClient::builder().servers(["b:1", "a:1", "b:1"]).connect_lazy()?;
    /// assert_eq!(client.servers().collect::<Vec<_>>(), ["a:1", "b:1"]);
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.placement.iter().map(|(a, _)| a.as_str())
    }

    /// The namespace given to the builder, if any.
    ///
    /// ```
    /// let client = officer::client::ShardedClient::builder().server("a:1").namespace("ns").connect_lazy()?;
    /// assert_eq!(client.namespace(), Some("ns"));
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn namespace(&self) -> Option<&str> {
        self.prefix.strip_suffix(':')
    }

    fn index_for(&self, name: &str) -> usize {
        // The list is never empty (the builder refuses an empty one).
        placement::pick(&self.placement, placement::name_key(&self.prefix, name)).unwrap_or(0)
    }

    /// The address of the server `name` lives on; nothing is sent.
    ///
    /// ```
    /// let client = officer::client::ShardedClient::builder().servers(["a:1", "b:1"]).connect_lazy()?;
    /// let server = client.server_for("jobs/42");
    /// assert!(server == "a:1" || server == "b:1");
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn server_for(&self, name: &str) -> &str {
        &self.placement[self.index_for(name)].0
    }

    /// The [`Client`] of the server `name` lives on, connecting to it if need be: for what
    /// only one connection can answer, such as [`Client::wait_disconnected`].
    ///
    /// ```no_run
    /// let client = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]).connect()?;
    /// let server = client.client_for("deploy")?;
    /// println!("deploy lives on connection {}", server.server_info().connection_id);
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn client_for(&self, name: &str) -> Result<Arc<Client>> {
        let i = self.index_for(name);
        self.shards[i].client(&self.placement[i].0)
    }

    /// Runs `f` with the server of `name`; its errors name that server.
    fn routed<T>(&self, name: &str, f: impl FnOnce(&Client) -> Result<T>) -> Result<T> {
        let i = self.index_for(name);
        let address = &self.placement[i].0;
        let client = self.shards[i].client(address)?;
        f(&client).map_err(|e| e.on_server(address))
    }

    /// As [`Client::lock`], on the server of `name`.
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().server("a:11500").connect()?;
    /// let lock = client.lock("rebuild-cache", officer::client::LockOptions::new())?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn lock(&self, name: &str, opts: LockOptions) -> Result<Acquired> {
        self.routed(name, |c| c.lock(name, opts))
    }

    /// As [`Client::try_lock`], on the server of `name`.
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().server("a:11500").connect()?;
    /// if client.try_lock("cron:cleanup").is_ok() { client.unlock("cron:cleanup")?; }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn try_lock(&self, name: &str) -> Result<Acquired> {
        self.routed(name, |c| c.try_lock(name))
    }

    /// As [`Client::unlock`], on the server of `name`.
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().server("a:11500").connect()?;
    /// client.try_lock("a")?;
    /// client.unlock("a")?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn unlock(&self, name: &str) -> Result<()> {
        self.routed(name, |c| c.unlock(name))
    }

    /// As [`Client::lock_guard`]: the guard releases on the connection that granted it.
    /// Errors of its [`LockGuard::unlock`] do not name the server; [`ShardedClient::server_for`]
    /// does.
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().server("a:11500").connect()?;
    /// let guard = client.lock_guard("invoices", Default::default())?;
    /// println!("fencing token {}", guard.token());
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn lock_guard(&self, name: &str, opts: LockOptions) -> Result<LockGuard> {
        self.routed(name, |c| c.lock_guard(name, opts))
    }

    /// As [`Client::with_lock`], on the server of `name`.
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().server("a:11500").connect()?;
    /// let total = client.with_lock("ledger", Default::default(), || 40 + 2)?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn with_lock<T>(&self, name: &str, opts: LockOptions, f: impl FnOnce() -> T) -> Result<T> {
        let guard = self.lock_guard(name, opts)?;
        let value = f();
        guard.unlock().map_err(|e| e.on_server(self.server_for(name)))?;
        Ok(value)
    }

    /// Runs `f` on every server (or every connected one) in parallel; results in server order,
    /// errors naming their server.
    fn fan_out<T: Send>(
        &self,
        connected_only: bool,
        f: impl Fn(&Client) -> Result<T> + Sync,
    ) -> Vec<(&str, Result<T>)> {
        let run = |i: usize| -> Option<Result<T>> {
            let address = self.placement[i].0.as_str();
            let client = match connected_only {
                true => self.shards[i].connected()?,
                false => match self.shards[i].client(address) {
                    Ok(client) => client,
                    Err(e) => return Some(Err(e)),
                },
            };
            Some(f(&client).map_err(|e| e.on_server(address)))
        };
        let results: Vec<Option<Result<T>>> = match self.shards.len() {
            1 => vec![run(0)],
            n => thread::scope(|s| {
                // A thread that cannot be started runs its part here instead.
                let handles: Vec<_> = (0..n)
                    .map(|i| thread::Builder::new().spawn_scoped(s, move || run(i)).map_err(|_| i))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| match h {
                        Ok(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                        Err(i) => run(i),
                    })
                    .collect()
            }),
        };
        self.servers().zip(results).filter_map(|(a, r)| Some((a, r?))).collect()
    }

    /// Every server's answer, or the first failure (in server order) once all have answered.
    fn all<T: Send>(&self, connected_only: bool, f: impl Fn(&Client) -> Result<T> + Sync) -> Result<Vec<T>> {
        self.fan_out(connected_only, f).into_iter().map(|(_, r)| r).collect()
    }

    /// Runs `f` with every server's [`Client`] in parallel (connecting as needed) and returns
    /// each server's result, failures included, in server order: for a caller that wants what
    /// the reachable servers say while one is down.
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]).connect()?;
    /// for (server, answer) in client.each_server(|c| c.stats()) {
    ///     match answer {
    ///         Ok(stats) => println!("{server}: {:?} locks", stats.get("locks_held")),
    ///         Err(e) => eprintln!("{e}"),
    ///     }
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn each_server<T: Send>(&self, f: impl Fn(&Client) -> Result<T> + Sync) -> Vec<(&str, Result<T>)> {
        self.fan_out(false, f)
    }

    /// Releases every lock and cancels every wait of this client on every server it is
    /// connected to; all are asked even when one fails.
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]).connect()?;
    /// client.reset()?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn reset(&self) -> Result<()> {
        self.all(true, Client::reset).map(drop)
    }

    /// Every lock on every server (within the namespace), merged as [`ShardedClient::locks_matching`].
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]).connect()?;
    /// for lock in client.locks()?.iter() {
    ///     println!("{} on {}", lock.name, client.server_for(&lock.name));
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn locks(&self) -> Result<Listing<LockInfo>> {
        self.locks_matching("", 0)
    }

    /// Locks whose names start with `prefix` over all servers, sorted by name: the first `max`
    /// names over the set (0: each server's default, so up to that many per server), with
    /// `truncated` set when any server or the cut to `max` left names out.
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]).connect()?;
    /// let jobs = client.locks_matching("jobs/", 100)?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn locks_matching(&self, prefix: &str, max: u32) -> Result<Listing<LockInfo>> {
        Ok(merge::locks(self.all(false, |c| c.locks_matching(prefix, max))?, max))
    }

    /// Every connection of every server, merged as [`ShardedClient::connections_matching`].
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]).connect()?;
    /// println!("{} connections", client.connections()?.len());
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn connections(&self) -> Result<Listing<ConnectionInfo>> {
        self.connections_matching("", 0)
    }

    /// Connections whose label starts with `prefix` over all servers, sorted by label (one
    /// client appears once per server it is connected to), at most `max` (0: each server's
    /// default), `truncated` as for [`ShardedClient::locks_matching`]. Use
    /// [`ShardedClient::each_server`] to know which server a connection is on.
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]).connect()?;
    /// let local = client.connections_matching("127.0.0.1:", 0)?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn connections_matching(&self, prefix: &str, max: u32) -> Result<Listing<ConnectionInfo>> {
        Ok(merge::connections(self.all(false, |c| c.connections_matching(prefix, max))?, max))
    }

    /// What this client holds (sorted by name) and waits for (server after server) on the
    /// servers it is connected to.
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]).connect()?;
    /// println!("holding {:?}", client.my_locks()?.held);
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn my_locks(&self) -> Result<MyLocks> {
        Ok(merge::my_locks(self.all(true, Client::my_locks)?))
    }

    /// As [`Client::my_locks_matching`] over the connected servers: each list cut to `max`
    /// (0: each server's default), `truncated` ORed with the cut.
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]).connect()?;
    /// let jobs = client.my_locks_matching("jobs/", 100)?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn my_locks_matching(&self, prefix: &str, max: u32) -> Result<MyLocksListing> {
        Ok(merge::my_locks_listing(self.all(true, |c| c.my_locks_matching(prefix, max))?, max))
    }

    /// The busiest locks over all servers: held longest and with most waiters, at most `max`
    /// of each (0: 10).
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]).connect()?;
    /// for e in client.top(5)?.longest_held { println!("{} for {} ms", e.name, e.held_ms); }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn top(&self, max: u32) -> Result<Top> {
        Ok(merge::top(self.all(false, |c| c.top(max))?, max))
    }

    /// Each server's counters, by server address (counters of different servers are not
    /// added up: a sum of gauges such as uptime would mean nothing).
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]).connect()?;
    /// for (server, stats) in client.stats()? { println!("{server}: {:?}", stats.get("locks_held")); }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn stats(&self) -> Result<Vec<(String, Stats)>> {
        self.named(self.fan_out(false, Client::stats))
    }

    /// A round trip to every server, by server address.
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]).connect()?;
    /// for (server, rtt) in client.ping()? { println!("{server}: {rtt:?}"); }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn ping(&self) -> Result<Vec<(String, Duration)>> {
        self.named(self.fan_out(false, Client::ping))
    }

    fn named<T>(&self, results: Vec<(&str, Result<T>)>) -> Result<Vec<(String, T)>> {
        results.into_iter().map(|(a, r)| r.map(|v| (a.to_owned(), v))).collect()
    }

    /// Closes every connection (each server releases this client's locks); the next call that
    /// needs a server connects to it again.
    ///
    /// ```no_run
    /// # let client = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]).connect()?;
    /// client.disconnect();
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn disconnect(&self) {
        for shard in &self.shards {
            if let Some(client) = shard.slot().take() {
                client.disconnect();
            }
        }
    }
}
