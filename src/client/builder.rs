//! [`ClientBuilder`]: where to connect and how the connection behaves.
//!
//! The builder's settings are kept by the client after `connect`, because `reconnect` (and an
//! automatic reconnect after a lock-free loss) opens the next connection the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::cluster::Members;
use super::{Client, Error, Result};

/// The default server port, as in the original officer.
///
/// ```
/// let client = officer::client::Client::builder().port(officer::client::DEFAULT_PORT);
/// ```
pub const DEFAULT_PORT: u16 = 11500;
/// The default server host.
///
/// ```
/// let client = officer::client::Client::builder().host(officer::client::DEFAULT_HOST);
/// ```
pub const DEFAULT_HOST: &str = "localhost";
/// How long `connect` waits for the TCP connection and the handshake by default.
///
/// ```
/// use officer::client::{Client, DEFAULT_CONNECT_TIMEOUT};
/// let patient = Client::builder().connect_timeout(DEFAULT_CONNECT_TIMEOUT * 4);
/// ```
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    /// `host:port` (`[v6]:port` for an IPv6 address) or the socket path, as messages name the server.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
            Target::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// When the client pings on its own to keep an otherwise silent connection open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeepAlive {
    /// A third of the server's idle timeout from the handshake; none if the server has none.
    Auto,
    Every(Duration),
    Off,
}

/// Everything `connect` needs, kept for reconnects.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) target: Target,
    /// The full prefix including the `:` separator, or empty.
    pub(crate) prefix: String,
    pub(crate) keep_alive: KeepAlive,
    pub(crate) connect_timeout: Duration,
    pub(crate) auto_reconnect: bool,
    pub(crate) secret: Option<Vec<u8>>,
    /// Ask for a resumable session with this grace (`None`: locks belong to the connection).
    pub(crate) session_grace: Option<Duration>,
    /// The members of the cluster `target` belongs to ([`ClientBuilder::cluster`]); `None`
    /// for one server.
    pub(crate) cluster: Option<Arc<Members>>,
}

impl Config {
    /// The interval to ping at, given the server's idle timeout in milliseconds (0 = none).
    pub(crate) fn keep_alive_interval(&self, idle_timeout_ms: u32) -> Option<Duration> {
        match self.keep_alive {
            KeepAlive::Off => None,
            KeepAlive::Every(d) => Some(d.max(Duration::from_millis(1))),
            KeepAlive::Auto if idle_timeout_ms == 0 => None,
            // A third leaves room for one lost or delayed ping before the server gives up.
            KeepAlive::Auto => {
                Some(Duration::from_millis(u64::from(idle_timeout_ms) / 3).max(Duration::from_millis(1)))
            }
        }
    }

    /// The name as the server knows it.
    pub(crate) fn full_name(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// The name as the caller knows it, or `None` for a name outside the namespace.
    pub(crate) fn short_name<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(self.prefix.as_str())
    }

    /// This config aimed at `target` (a member of its cluster), each step within `timeout`.
    pub(crate) fn at(&self, target: &Target, timeout: Duration) -> Config {
        Config { target: target.clone(), connect_timeout: timeout, ..self.clone() }
    }

    /// Like `short_name`, but keeps names outside the namespace whole (for error messages).
    pub(crate) fn display_name(&self, full: &str) -> String {
        self.short_name(full).unwrap_or(full).to_owned()
    }
}

/// Builds a [`Client`] with non-default options.
///
/// ```no_run
/// use officer::client::Client;
/// use std::time::Duration;
///
/// let client = Client::builder()
///     .host("locks.internal")
///     .port(11500)
///     .namespace("billing")
///     .connect_timeout(Duration::from_secs(2))
///     .connect()?;
/// # Ok::<(), officer::client::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    config: Config,
    /// Why the settings cannot connect (a malformed cluster member), reported by `connect`.
    invalid: Option<String>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder::new()
    }
}

impl ClientBuilder {
    /// TCP to `localhost:11500`, no namespace, automatic keep-alive, 5 s connect timeout,
    /// automatic reconnect only after losing a connection that held no locks.
    ///
    /// ```
    /// let builder = officer::client::ClientBuilder::new();
    /// ```
    pub fn new() -> ClientBuilder {
        ClientBuilder {
            config: Config {
                target: Target::Tcp { host: DEFAULT_HOST.to_owned(), port: DEFAULT_PORT },
                prefix: String::new(),
                keep_alive: KeepAlive::Auto,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                auto_reconnect: true,
                secret: None,
                session_grace: None,
                cluster: None,
            },
            invalid: None,
        }
    }

    /// Connects over TCP to `host` (a name or an IP address); keeps the port already set.
    ///
    /// ```
    /// let builder = officer::client::Client::builder().host("10.0.0.5");
    /// ```
    pub fn host(mut self, host: impl Into<String>) -> ClientBuilder {
        let port = match &self.config.target {
            Target::Tcp { port, .. } => *port,
            Target::Unix(_) => DEFAULT_PORT,
        };
        self.config.target = Target::Tcp { host: host.into(), port };
        self.config.cluster = None;
        self
    }

    /// Connects over TCP to `port`; keeps the host already set.
    ///
    /// ```
    /// let builder = officer::client::Client::builder().port(9999);
    /// ```
    pub fn port(mut self, port: u16) -> ClientBuilder {
        let host = match &self.config.target {
            Target::Tcp { host, .. } => host.clone(),
            Target::Unix(_) => DEFAULT_HOST.to_owned(),
        };
        self.config.target = Target::Tcp { host, port };
        self.config.cluster = None;
        self
    }

    /// Connects to a UNIX socket instead of TCP.
    ///
    /// ```
    /// let builder = officer::client::Client::builder().unix_socket("/tmp/officer.sock");
    /// ```
    pub fn unix_socket(mut self, path: impl AsRef<Path>) -> ClientBuilder {
        self.config.target = Target::Unix(path.as_ref().to_owned());
        self.config.cluster = None;
        self
    }

    /// Connects to one cluster (`officer run --cluster`, docs/CLUSTER.md) whose members'
    /// client addresses are `members` (`host:port`, `[v6]:port`; a host alone takes port
    /// 11500). These are replicas of one lock table, not shards (for shards see
    /// [`ShardedClient`](super::ShardedClient)); replaces [`host`](Self::host) and
    /// [`port`](Self::port).
    ///
    /// Connecting tries the members in order, starting at the leader last reached: a member
    /// that is not the leader answers `not_leader` naming the leader, which is tried next (at
    /// most 3 redirects in a row, so members naming each other cannot loop); a member that
    /// refuses, fails or names no leader (an election is under way) gives way to the next.
    /// Each attempt gets a share of the [connect timeout](Self::connect_timeout) (at least
    /// 100 ms); after a round over every member the client pauses (20 ms, doubling up to
    /// 500 ms), and gives up with the last member's error once the connect timeout has
    /// passed since the first attempt.
    ///
    /// With a [session](Self::session_grace), a failover is a blip: when the leader dies or
    /// hands over (its connections end with `not_leader` naming the new leader), the client
    /// finds the new leader the same way within the grace and resumes there, holds and waits
    /// intact. Without one, the lost connection is reported as for one server (its locks are
    /// gone with the old leader), and the next connection goes to the new leader.
    ///
    /// The leader learnt is shared by the clones of this builder and every client built from
    /// them. An empty list, or a member that does not parse, fails at `connect`.
    ///
    /// ```
    /// let builder = officer::client::Client::builder()
    ///     .cluster(["10.0.0.1:11500", "10.0.0.2:11500", "10.0.0.3:11500"]);
    /// ```
    pub fn cluster<I, S>(mut self, members: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let parsed: std::result::Result<Vec<Target>, String> =
            members.into_iter().map(|m| super::shard_builder::parse_server(m.as_ref())).collect();
        match parsed {
            Ok(list) if list.is_empty() => self.invalid = Some("a cluster needs at least one member".into()),
            Ok(list) => {
                self.config.target = list[0].clone();
                self.config.cluster = Some(Arc::new(Members::new(list)));
                self.invalid = None;
            }
            Err(why) => self.invalid = Some(why),
        }
        self
    }

    /// Prefixes every lock name with `namespace:` and strips it from names in results, so
    /// services sharing a server cannot collide. An empty namespace means none.
    ///
    /// ```
    /// let builder = officer::client::Client::builder().namespace("reports");
    /// ```
    pub fn namespace(mut self, namespace: impl AsRef<str>) -> ClientBuilder {
        let ns = namespace.as_ref();
        self.config.prefix = if ns.is_empty() { String::new() } else { format!("{ns}:") };
        self
    }

    /// Pings whenever the client has sent nothing for `interval`, instead of the automatic
    /// interval (a third of the server's idle timeout).
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = officer::client::Client::builder().keep_alive(Duration::from_secs(10));
    /// ```
    pub fn keep_alive(mut self, interval: Duration) -> ClientBuilder {
        self.config.keep_alive = KeepAlive::Every(interval);
        self
    }

    /// Never pings on its own: a connection silent for longer than the server's idle timeout
    /// is closed by the server, releasing its locks.
    ///
    /// ```
    /// let builder = officer::client::Client::builder().no_keep_alive();
    /// ```
    pub fn no_keep_alive(mut self) -> ClientBuilder {
        self.config.keep_alive = KeepAlive::Off;
        self
    }

    /// Limits how long connecting and the handshake may take.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = officer::client::Client::builder().connect_timeout(Duration::from_millis(500));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.config.connect_timeout = timeout;
        self
    }

    /// Whether a call on a broken connection that held no locks (and waited for none) opens
    /// a new connection instead of failing (default: true). A connection that held locks is
    /// never replaced silently: calls fail until [`Client::reconnect`]. With a session
    /// ([`ClientBuilder::session_grace`]) a dropped connection is always resumed, holding locks
    /// or not; this setting applies once a resume has failed.
    ///
    /// ```
    /// let builder = officer::client::Client::builder().auto_reconnect(false);
    /// ```
    pub fn auto_reconnect(mut self, enabled: bool) -> ClientBuilder {
        self.config.auto_reconnect = enabled;
        self
    }

    /// Asks the server for a resumable session (PROTOCOL.md §6.14): when the connection drops,
    /// the server keeps this client's locks and waits for `grace` (at most its
    /// `--max-session-grace`), and the client reconnects by itself (with back-off, until the
    /// grace runs out), resumes, and carries on. Guards stay valid and waiting calls keep
    /// waiting across the blip; an answer the server gave while the client was away comes on
    /// resume. Only a lock really lost (grace over, lease expired, revoked) is reported, as a
    /// lost connection or a LOST grant ([`LockGuard::is_lost`](super::LockGuard::is_lost)).
    ///
    /// A server that opens no session (maximum 0, or one that predates sessions) leaves the
    /// connection as without this option: [`Client::session`] says which. With a session the
    /// keep-alive also treats a ping unanswered for two intervals as a dead connection, and
    /// closing says GOODBYE, so the server releases at once rather than after the grace.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = officer::client::Client::builder().session_grace(Duration::from_secs(10));
    /// ```
    pub fn session_grace(mut self, grace: Duration) -> ClientBuilder {
        self.config.session_grace = (!grace.is_zero()).then_some(grace);
        self
    }

    /// The shared secret sent in AUTH when the server asks for authentication.
    ///
    /// ```
    /// let builder = officer::client::Client::builder().auth("s3cret");
    /// ```
    pub fn auth(mut self, secret: impl Into<Vec<u8>>) -> ClientBuilder {
        self.config.secret = Some(secret.into());
        self
    }

    /// Connects and performs the handshake.
    ///
    /// ```no_run
    /// let client = officer::client::Client::builder().unix_socket("/tmp/officer.sock").connect()?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn connect(self) -> Result<Client> {
        Client::from_config(self.into_config()?)
    }

    /// The settings, for [`Client`] or another client (the async one) built from them; fails
    /// when they are malformed.
    pub(crate) fn into_config(self) -> Result<Config> {
        match self.invalid {
            Some(why) => Err(Error::io(std::io::Error::new(std::io::ErrorKind::InvalidInput, why))),
            None => Ok(self.config),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_combine_and_unix_replaces_them() {
        let b = ClientBuilder::new().port(1).host("h");
        assert_eq!(b.config.target, Target::Tcp { host: "h".into(), port: 1 });
        let b = b.unix_socket("/s");
        assert_eq!(b.config.target, Target::Unix("/s".into()));
        let b = b.port(7);
        assert_eq!(b.config.target, Target::Tcp { host: DEFAULT_HOST.into(), port: 7 });
    }

    #[test]
    fn a_cluster_takes_its_members_and_host_leaves_it() {
        let b = ClientBuilder::new().cluster(["a:1", "b"]);
        let members = b.config.cluster.as_ref().unwrap().list().to_vec();
        assert_eq!(
            members,
            [Target::Tcp { host: "a".into(), port: 1 }, Target::Tcp { host: "b".into(), port: DEFAULT_PORT }]
        );
        assert_eq!(b.config.target, members[0]);
        assert!(b.clone().host("c").config.cluster.is_none());
        assert!(b.into_config().is_ok());
        let empty: [&str; 0] = [];
        assert!(ClientBuilder::new().cluster(empty).into_config().unwrap_err().is_io());
        let err = ClientBuilder::new().cluster(["a:x"]).into_config().unwrap_err();
        assert!(err.to_string().contains("\"x\""), "{err}");
    }

    #[test]
    fn targets_display_as_messages_name_them() {
        let v4 = Target::Tcp { host: "10.0.0.5".into(), port: 11500 };
        assert_eq!(v4.to_string(), "10.0.0.5:11500");
        let v6 = Target::Tcp { host: "::1".into(), port: 9 };
        assert_eq!(v6.to_string(), "[::1]:9");
        assert_eq!(Target::Unix("/run/o.sock".into()).to_string(), "/run/o.sock");
    }

    #[test]
    fn namespace_adds_and_strips_the_prefix() {
        let cfg = ClientBuilder::new().namespace("ns").config;
        assert_eq!(cfg.full_name("a"), "ns:a");
        assert_eq!(cfg.short_name("ns:a"), Some("a"));
        assert_eq!(cfg.short_name("other:a"), None);
        assert_eq!(cfg.display_name("other:a"), "other:a");
        let cfg = ClientBuilder::new().namespace("").config;
        assert_eq!(cfg.full_name("a"), "a");
    }

    #[test]
    fn keep_alive_interval_follows_the_server_idle_timeout() {
        let cfg = ClientBuilder::new().config;
        assert_eq!(cfg.keep_alive_interval(0), None);
        assert_eq!(cfg.keep_alive_interval(3000), Some(Duration::from_secs(1)));
        let cfg = ClientBuilder::new().keep_alive(Duration::from_secs(9)).config;
        assert_eq!(cfg.keep_alive_interval(0), Some(Duration::from_secs(9)));
        let cfg = ClientBuilder::new().no_keep_alive().config;
        assert_eq!(cfg.keep_alive_interval(3000), None);
    }
}
