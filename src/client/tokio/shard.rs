//! [`AsyncShardedClient`]: the blocking [`ShardedClient`](crate::client::ShardedClient) on
//! tokio, one [`AsyncClient`] per server. Placement ([`placement`]) and the merging of
//! listings (`merge`) are the blocking client's own code, so both place every name on the
//! same server and merge listings alike; fan-outs ask every server concurrently on the
//! caller's task instead of on threads.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use super::{AsyncClient, AsyncClientBuilder, AsyncLockGuard};
use crate::client::{
    merge, placement, Acquired, ClientBuilder, ConnectionInfo, Listing, LockInfo, LockOptions, MyLocks,
    MyLocksListing, Result, ShardedBuilder, Stats, Top,
};

/// Locks spread over several officer servers for async code, shareable between tasks.
///
/// The same placement, failure and fan-out rules as the blocking
/// [`ShardedClient`](crate::client::ShardedClient), built from the same [`ShardedBuilder`]:
/// each name lives on one server, a server that is down fails only its own names (the error
/// names it, [`Error::server_address`](crate::client::Error::server_address)), listings are
/// asked of every server at once and merged, `reset` and `my_locks` go to the connected servers.
///
/// ```no_run
/// # async fn run() -> officer::client::Result<()> {
/// use officer::client::{tokio::AsyncShardedClient, LockOptions, ShardedClient};
///
/// let builder = ShardedClient::builder().servers(["a:11500", "b:11500", "c:11500"]).namespace("billing");
/// let client = AsyncShardedClient::connect(builder).await?;
/// let lock = client.lock("reindex", LockOptions::new()).await?;
/// println!("token {} from {}", lock.token(), client.server_for("reindex"));
/// client.unlock("reindex").await?;
/// # Ok(()) }
/// ```
pub struct AsyncShardedClient {
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
    client: Mutex<Option<Arc<AsyncClient>>>,
    /// Held while connecting, so tasks needing a down server wait for one attempt.
    connecting: ::tokio::sync::Mutex<()>,
}

impl Shard {
    fn slot(&self) -> MutexGuard<'_, Option<Arc<AsyncClient>>> {
        self.client.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn connected(&self) -> Option<Arc<AsyncClient>> {
        self.slot().clone()
    }

    async fn client(&self, address: &str) -> Result<Arc<AsyncClient>> {
        if let Some(client) = self.connected() {
            return Ok(client);
        }
        let _one = self.connecting.lock().await;
        if let Some(client) = self.connected() {
            return Ok(client);
        }
        let builder = AsyncClientBuilder::from(self.options.clone());
        let client = Arc::new(builder.connect().await.map_err(|e| e.on_server(address))?);
        *self.slot() = Some(Arc::clone(&client));
        Ok(client)
    }
}

impl std::fmt::Debug for AsyncShardedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncShardedClient").field("servers", &self.servers().collect::<Vec<_>>()).finish()
    }
}

/// Runs every future of `futures` concurrently on the calling task; their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

impl AsyncShardedClient {
    /// Connects to every server of `builder` at once; a server that cannot be reached does
    /// not fail the client (its names fail when used, each use trying again). Fails only for
    /// an empty list or a malformed address.
    ///
    /// ```no_run
    /// # async fn run() -> officer::client::Result<()> {
    /// use officer::client::{tokio::AsyncShardedClient, ShardedClient};
    /// let client = AsyncShardedClient::connect(ShardedClient::builder().servers(["a:11500", "b:11500"])).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(builder: ShardedBuilder) -> Result<AsyncShardedClient> {
        let client = Self::connect_lazy(builder)?;
        for (address, result) in client.fan_out(false, |_| async { Ok(()) }).await {
            if let Err(e) = result {
                log::debug!("officer sharded client could not connect server={address} error={e}");
            }
        }
        Ok(client)
    }

    /// Connects to no server yet: each connection opens on the first call that needs it.
    ///
    /// ```
    /// use officer::client::{tokio::AsyncShardedClient, ShardedClient};
    /// let client = AsyncShardedClient::connect_lazy(ShardedClient::builder().servers(["b:1", "a:1"]))?;
    /// assert_eq!(client.servers().collect::<Vec<_>>(), ["a:1", "b:1"]);
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn connect_lazy(builder: ShardedBuilder) -> Result<AsyncShardedClient> {
        let (mut servers, prefix) = builder.into_parts()?;
        servers.sort_by(|a, b| a.0.cmp(&b.0));
        servers.dedup_by(|a, b| a.0 == b.0);
        let placement = servers.iter().map(|(a, _)| (a.clone(), placement::server_key(a))).collect();
        let shards = servers
            .into_iter()
            .map(|(_, options)| Shard {
                options,
                client: Mutex::new(None),
                connecting: ::tokio::sync::Mutex::new(()),
            })
            .collect();
        Ok(AsyncShardedClient { placement, shards, prefix })
    }

    /// The servers' canonical addresses, sorted.
    ///
    /// ```
    /// # let client = officer::client::tokio::AsyncShardedClient::connect_lazy(officer::client::ShardedClient::builder().server("a:1"))?;
    /// assert_eq!(client.servers().count(), 1);
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.placement.iter().map(|(a, _)| a.as_str())
    }

    /// The namespace given to the builder, if any.
    ///
    /// ```
    /// # let client = officer::client::tokio::AsyncShardedClient::connect_lazy(officer::client::ShardedClient::builder().server("a:1").namespace("ns"))?;
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

    /// The address of the server `name` lives on (the blocking client's answer); nothing is sent.
    ///
    /// ```
    /// # let client = officer::client::tokio::AsyncShardedClient::connect_lazy(officer::client::ShardedClient::builder().servers(["a:1", "b:1"]))?;
    /// let server = client.server_for("jobs/42");
    /// assert!(server == "a:1" || server == "b:1");
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn server_for(&self, name: &str) -> &str {
        &self.placement[self.index_for(name)].0
    }

    /// The [`AsyncClient`] of the server `name` lives on, connecting to it if need be.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// let server = client.client_for("deploy").await?;
    /// println!("deploy lives on connection {}", server.server_info().connection_id);
    /// # Ok(()) }
    /// ```
    pub async fn client_for(&self, name: &str) -> Result<Arc<AsyncClient>> {
        let i = self.index_for(name);
        self.shards[i].client(&self.placement[i].0).await
    }

    /// As [`AsyncClient::lock`], on the server of `name`; its errors name that server.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// let lock = client.lock("rebuild-cache", Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock(&self, name: &str, opts: LockOptions) -> Result<Acquired> {
        let (client, address) = self.routed(name).await?;
        client.lock(name, opts).await.map_err(|e| e.on_server(address))
    }

    /// As [`AsyncClient::try_lock`], on the server of `name`.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// if client.try_lock("cron:cleanup").await.is_ok() { client.unlock("cron:cleanup").await?; }
    /// # Ok(()) }
    /// ```
    pub async fn try_lock(&self, name: &str) -> Result<Acquired> {
        self.lock(name, LockOptions::try_once()).await
    }

    /// As [`AsyncClient::unlock`], on the server of `name`.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// client.try_lock("a").await?;
    /// client.unlock("a").await?;
    /// # Ok(()) }
    /// ```
    pub async fn unlock(&self, name: &str) -> Result<()> {
        let (client, address) = self.routed(name).await?;
        client.unlock(name).await.map_err(|e| e.on_server(address))
    }

    /// As [`AsyncClient::lock_guard`]: the guard releases on the connection that granted it.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// let guard = client.lock_guard("invoices", Default::default()).await?;
    /// guard.unlock().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock_guard(&self, name: &str, opts: LockOptions) -> Result<AsyncLockGuard> {
        let (client, address) = self.routed(name).await?;
        client.lock_guard(name, opts).await.map_err(|e| e.on_server(address))
    }

    /// As [`AsyncClient::with_lock`], on the server of `name`.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// let total = client.with_lock("ledger", Default::default(), async { 40 + 2 }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn with_lock<T>(&self, name: &str, opts: LockOptions, f: impl Future<Output = T>) -> Result<T> {
        let (client, address) = self.routed(name).await?;
        client.with_lock(name, opts, f).await.map_err(|e| e.on_server(address))
    }

    /// The client of the server of `name` (connecting if need be) and that server's address.
    async fn routed(&self, name: &str) -> Result<(Arc<AsyncClient>, &str)> {
        let i = self.index_for(name);
        let address = self.placement[i].0.as_str();
        Ok((self.shards[i].client(address).await?, address))
    }

    /// Runs `f` on every server (or every connected one) concurrently; results in server
    /// order, errors naming their server.
    async fn fan_out<T, F, Fut>(&self, connected_only: bool, f: F) -> Vec<(&str, Result<T>)>
    where
        F: Fn(Arc<AsyncClient>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let runs = self.shards.iter().zip(self.servers()).map(|(shard, address)| {
            let f = &f;
            async move {
                let client = match connected_only {
                    true => shard.connected()?,
                    false => match shard.client(address).await {
                        Ok(client) => client,
                        Err(e) => return Some((address, Err(e))),
                    },
                };
                Some((address, f(client).await.map_err(|e| e.on_server(address))))
            }
        });
        join_all(runs.collect()).await.into_iter().flatten().collect()
    }

    /// Every server's answer, or the first failure (in server order) once all have answered.
    async fn all<T, F, Fut>(&self, connected_only: bool, f: F) -> Result<Vec<T>>
    where
        F: Fn(Arc<AsyncClient>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.fan_out(connected_only, f).await.into_iter().map(|(_, r)| r).collect()
    }

    /// Runs `f` with every server's [`AsyncClient`] concurrently (connecting as needed) and
    /// returns each server's result, failures included and naming their server, in server
    /// order: for a caller that wants what the reachable servers say while one is down. The
    /// async form of [`ShardedClient::each_server`](crate::client::ShardedClient::each_server).
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) {
    /// for (server, answer) in client.each_server(|c| async move { c.stats().await }).await {
    ///     match answer {
    ///         Ok(stats) => println!("{server}: {:?} locks", stats.get("locks_held")),
    ///         Err(e) => eprintln!("{e}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn each_server<T, F, Fut>(&self, f: F) -> Vec<(&str, Result<T>)>
    where
        F: Fn(Arc<AsyncClient>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.fan_out(false, f).await
    }

    /// Releases every lock and cancels every wait of this client on every server it is
    /// connected to; all are asked even when one fails.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// client.reset().await?;
    /// # Ok(()) }
    /// ```
    pub async fn reset(&self) -> Result<()> {
        self.all(true, |c| async move { c.reset().await }).await.map(drop)
    }

    /// Every lock on every server (within the namespace), sorted by name.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// for lock in client.locks().await?.iter() { println!("{}", lock.name); }
    /// # Ok(()) }
    /// ```
    pub async fn locks(&self) -> Result<Listing<LockInfo>> {
        self.locks_matching("", 0).await
    }

    /// As [`ShardedClient::locks_matching`](crate::client::ShardedClient::locks_matching): the
    /// first `max` names over the set, `truncated` when any server or the cut left names out.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// let jobs = client.locks_matching("jobs/", 100).await?;
    /// # Ok(()) }
    /// ```
    pub async fn locks_matching(&self, prefix: &str, max: u32) -> Result<Listing<LockInfo>> {
        let parts = self.all(false, |c| async move { c.locks_matching(prefix, max).await }).await?;
        Ok(merge::locks(parts, max))
    }

    /// Every connection of every server, sorted by label.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// println!("{} connections", client.connections().await?.len());
    /// # Ok(()) }
    /// ```
    pub async fn connections(&self) -> Result<Listing<ConnectionInfo>> {
        self.connections_matching("", 0).await
    }

    /// As [`ShardedClient::connections_matching`](crate::client::ShardedClient::connections_matching).
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// let local = client.connections_matching("127.0.0.1:", 0).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connections_matching(&self, prefix: &str, max: u32) -> Result<Listing<ConnectionInfo>> {
        let parts = self.all(false, |c| async move { c.connections_matching(prefix, max).await }).await?;
        Ok(merge::connections(parts, max))
    }

    /// What this client holds (sorted) and waits for on the servers it is connected to.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// println!("holding {:?}", client.my_locks().await?.held);
    /// # Ok(()) }
    /// ```
    pub async fn my_locks(&self) -> Result<MyLocks> {
        Ok(merge::my_locks(self.all(true, |c| async move { c.my_locks().await }).await?))
    }

    /// As [`ShardedClient::my_locks_matching`](crate::client::ShardedClient::my_locks_matching).
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// let jobs = client.my_locks_matching("jobs/", 100).await?;
    /// # Ok(()) }
    /// ```
    pub async fn my_locks_matching(&self, prefix: &str, max: u32) -> Result<MyLocksListing> {
        let parts = self.all(true, |c| async move { c.my_locks_matching(prefix, max).await }).await?;
        Ok(merge::my_locks_listing(parts, max))
    }

    /// The busiest locks over all servers, at most `max` of each list (0: 10).
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// for e in client.top(5).await?.longest_held { println!("{} for {} ms", e.name, e.held_ms); }
    /// # Ok(()) }
    /// ```
    pub async fn top(&self, max: u32) -> Result<Top> {
        Ok(merge::top(self.all(false, |c| async move { c.top(max).await }).await?, max))
    }

    /// Each server's counters, by server address (not added up).
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// for (server, stats) in client.stats().await? { println!("{server}: {:?}", stats.get("locks_held")); }
    /// # Ok(()) }
    /// ```
    pub async fn stats(&self) -> Result<Vec<(String, Stats)>> {
        named(self.fan_out(false, |c| async move { c.stats().await }).await)
    }

    /// A round trip to every server, by server address.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) -> officer::client::Result<()> {
    /// for (server, rtt) in client.ping().await? { println!("{server}: {rtt:?}"); }
    /// # Ok(()) }
    /// ```
    pub async fn ping(&self) -> Result<Vec<(String, Duration)>> {
        named(self.fan_out(false, |c| async move { c.ping().await }).await)
    }

    /// Closes every connection (each server releases this client's locks); the next call that
    /// needs a server connects to it again.
    ///
    /// ```no_run
    /// # async fn run(client: officer::client::tokio::AsyncShardedClient) {
    /// client.disconnect();
    /// # }
    /// ```
    pub fn disconnect(&self) {
        for shard in &self.shards {
            if let Some(client) = shard.slot().take() {
                client.disconnect();
            }
        }
    }
}

fn named<T>(results: Vec<(&str, Result<T>)>) -> Result<Vec<(String, T)>> {
    results.into_iter().map(|(a, r)| r.map(|v| (a.to_owned(), v))).collect()
}
