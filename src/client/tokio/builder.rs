//! [`AsyncClientBuilder`]: the blocking [`ClientBuilder`]'s options, connecting with tokio.

use std::path::Path;
use std::time::Duration;

use super::AsyncClient;
use crate::client::{ClientBuilder, Result};

/// Builds an [`AsyncClient`] with non-default options; the same options, defaults and meaning
/// as [`ClientBuilder`] (which converts into this with `From`).
///
/// ```no_run
/// # async fn run() -> officer::client::Result<()> {
/// use officer::client::tokio::AsyncClient;
/// use std::time::Duration;
///
/// let client = AsyncClient::builder()
///     .host("locks.internal")
///     .namespace("billing")
///     .connect_timeout(Duration::from_secs(2))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct AsyncClientBuilder {
    inner: ClientBuilder,
}

impl From<ClientBuilder> for AsyncClientBuilder {
    fn from(inner: ClientBuilder) -> AsyncClientBuilder {
        AsyncClientBuilder { inner }
    }
}

impl AsyncClientBuilder {
    /// The defaults of [`ClientBuilder::new`].
    ///
    /// ```
    /// let builder = officer::client::tokio::AsyncClientBuilder::new();
    /// ```
    pub fn new() -> AsyncClientBuilder {
        AsyncClientBuilder::default()
    }

    fn with(self, f: impl FnOnce(ClientBuilder) -> ClientBuilder) -> AsyncClientBuilder {
        AsyncClientBuilder { inner: f(self.inner) }
    }

    /// The server's host name or address; see [`ClientBuilder::host`].
    ///
    /// ```
    /// let builder = officer::client::tokio::AsyncClient::builder().host("10.0.0.5");
    /// ```
    pub fn host(self, host: impl Into<String>) -> AsyncClientBuilder {
        self.with(|b| b.host(host))
    }

    /// The server's TCP port; see [`ClientBuilder::port`].
    ///
    /// ```
    /// let builder = officer::client::tokio::AsyncClient::builder().port(9999);
    /// ```
    pub fn port(self, port: u16) -> AsyncClientBuilder {
        self.with(|b| b.port(port))
    }

    /// Connects to a UNIX socket instead of TCP.
    ///
    /// ```
    /// let builder = officer::client::tokio::AsyncClient::builder().unix_socket("/tmp/officer.sock");
    /// ```
    pub fn unix_socket(self, path: impl AsRef<Path>) -> AsyncClientBuilder {
        self.with(|b| b.unix_socket(path))
    }

    /// Connects to one cluster whose members' client addresses are `members`, following
    /// `not_leader` redirects to the leader and resuming a session on the new leader after a
    /// failover; the same rules as [`ClientBuilder::cluster`].
    ///
    /// ```
    /// let builder = officer::client::tokio::AsyncClient::builder()
    ///     .cluster(["10.0.0.1:11500", "10.0.0.2:11500", "10.0.0.3:11500"]);
    /// ```
    pub fn cluster<I, S>(self, members: I) -> AsyncClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.with(|b| b.cluster(members))
    }

    /// Prefixes every lock name with `namespace:`; see [`ClientBuilder::namespace`].
    ///
    /// ```
    /// let builder = officer::client::tokio::AsyncClient::builder().namespace("reports");
    /// ```
    pub fn namespace(self, namespace: impl AsRef<str>) -> AsyncClientBuilder {
        self.with(|b| b.namespace(namespace))
    }

    /// Pings whenever nothing was sent for `interval`; see [`ClientBuilder::keep_alive`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = officer::client::tokio::AsyncClient::builder().keep_alive(Duration::from_secs(10));
    /// ```
    pub fn keep_alive(self, interval: Duration) -> AsyncClientBuilder {
        self.with(|b| b.keep_alive(interval))
    }

    /// Never pings on its own; see [`ClientBuilder::no_keep_alive`].
    ///
    /// ```
    /// let builder = officer::client::tokio::AsyncClient::builder().no_keep_alive();
    /// ```
    pub fn no_keep_alive(self) -> AsyncClientBuilder {
        self.with(ClientBuilder::no_keep_alive)
    }

    /// Limits how long connecting and the handshake may take.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = officer::client::tokio::AsyncClient::builder().connect_timeout(Duration::from_millis(500));
    /// ```
    pub fn connect_timeout(self, timeout: Duration) -> AsyncClientBuilder {
        self.with(|b| b.connect_timeout(timeout))
    }

    /// Whether a call on a broken connection that held no locks opens a new one (default:
    /// true); see [`ClientBuilder::auto_reconnect`].
    ///
    /// ```
    /// let builder = officer::client::tokio::AsyncClient::builder().auto_reconnect(false);
    /// ```
    pub fn auto_reconnect(self, enabled: bool) -> AsyncClientBuilder {
        self.with(|b| b.auto_reconnect(enabled))
    }

    /// Asks the server for a resumable session with this grace; the same semantics as
    /// [`ClientBuilder::session_grace`]: when the connection drops, the client reconnects by
    /// itself (with back-off, until the grace runs out) and resumes, and its guards, pending
    /// `lock` futures and their places in the queues survive the blip. Only a lock really lost
    /// (grace over, lease expired, revoked) is reported, through
    /// [`AsyncLockGuard::is_lost`](super::AsyncLockGuard::is_lost) and
    /// [`lost`](super::AsyncLockGuard::lost). Dropping a `lock` future during the outage still
    /// withdraws its wait once resumed; closing the client says GOODBYE, so the server releases
    /// at once rather than after the grace.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = officer::client::tokio::AsyncClient::builder().session_grace(Duration::from_secs(10));
    /// ```
    pub fn session_grace(self, grace: Duration) -> AsyncClientBuilder {
        self.with(|b| b.session_grace(grace))
    }

    /// The shared secret sent in AUTH when the server asks for authentication.
    ///
    /// ```
    /// let builder = officer::client::tokio::AsyncClient::builder().auth("s3cret");
    /// ```
    pub fn auth(self, secret: impl Into<Vec<u8>>) -> AsyncClientBuilder {
        self.with(|b| b.auth(secret))
    }

    /// Connects and performs the handshake; must run inside a tokio runtime, which the
    /// client's reader, writer and keep-alive tasks are spawned on.
    ///
    /// ```no_run
    /// # async fn run() -> officer::client::Result<()> {
    /// let client = officer::client::tokio::AsyncClient::builder().port(11500).connect().await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(self) -> Result<AsyncClient> {
        AsyncClient::from_config(self.inner.into_config()?).await
    }
}
