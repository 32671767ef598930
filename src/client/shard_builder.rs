//! [`ShardedBuilder`]: the servers of a [`ShardedClient`] and the options every one of its
//! connections shares (the same options as [`ClientBuilder`]).
//!
//! A server is named by its canonical address: `host:port` (`[v6]:port`) exactly as given,
//! or a UNIX socket path. Placement hashes that string, so every client of a set must spell
//! each server the same way (`localhost:11500` and `127.0.0.1:11500` are two servers to it).

use std::io;
use std::path::Path;
use std::time::Duration;

use super::builder::Target;
use super::{ClientBuilder, Error, Result, ShardedClient, DEFAULT_PORT};

/// Builds a [`ShardedClient`]: the list of servers, then the options of [`ClientBuilder`].
///
/// ```no_run
/// use officer::client::ShardedClient;
/// use std::time::Duration;
///
/// let client = ShardedClient::builder()
///     .servers(["locks-a:11500", "locks-b:11500", "locks-c:11500"])
///     .namespace("billing")
///     .connect_timeout(Duration::from_secs(2))
///     .connect()?;
/// # Ok::<(), officer::client::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ShardedBuilder {
    options: ClientBuilder,
    /// The namespace prefix with its `:` (or empty), which placement hashes with the name.
    prefix: String,
    servers: Vec<std::result::Result<Target, String>>,
}

impl ShardedBuilder {
    /// No servers yet; the options of [`ClientBuilder::new`].
    ///
    /// ```
    /// let builder = officer::client::ShardedBuilder::new().server("a:11500");
    /// ```
    pub fn new() -> ShardedBuilder {
        ShardedBuilder::default()
    }

    /// Adds a server: `host`, `host:port`, `[v6]:port`, a bare IPv6 address, or a UNIX socket
    /// path (starting with `/` or `.`); without a port, 11500. A malformed address makes
    /// [`ShardedBuilder::connect`] fail. The same server given twice counts once.
    ///
    /// ```
    /// let builder = officer::client::ShardedClient::builder().server("10.0.0.5:11500").server("/run/officer.sock");
    /// ```
    pub fn server(mut self, address: impl AsRef<str>) -> ShardedBuilder {
        self.servers.push(parse_server(address.as_ref()));
        self
    }

    /// Adds every server of `addresses`, as [`ShardedBuilder::server`].
    ///
    /// ```
    /// let builder = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]);
    /// ```
    pub fn servers<I, S>(mut self, addresses: I) -> ShardedBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.servers.extend(addresses.into_iter().map(|a| parse_server(a.as_ref())));
        self
    }

    /// Adds a TCP server by host and port.
    ///
    /// ```
    /// let builder = officer::client::ShardedClient::builder().tcp_server("10.0.0.5", 11500);
    /// ```
    pub fn tcp_server(mut self, host: impl Into<String>, port: u16) -> ShardedBuilder {
        self.servers.push(Ok(Target::Tcp { host: host.into(), port }));
        self
    }

    /// Adds a server on a UNIX socket.
    ///
    /// ```
    /// let builder = officer::client::ShardedClient::builder().unix_server("/run/officer-a.sock");
    /// ```
    pub fn unix_server(mut self, path: impl AsRef<Path>) -> ShardedBuilder {
        self.servers.push(Ok(Target::Unix(path.as_ref().to_owned())));
        self
    }

    /// As [`ClientBuilder::namespace`]; placement hashes the name with the namespace, so
    /// clients of different namespaces may place the same short name differently.
    ///
    /// ```
    /// let builder = officer::client::ShardedClient::builder().namespace("reports");
    /// ```
    pub fn namespace(mut self, namespace: impl AsRef<str>) -> ShardedBuilder {
        let ns = namespace.as_ref();
        self.prefix = if ns.is_empty() { String::new() } else { format!("{ns}:") };
        self.options = self.options.namespace(ns);
        self
    }

    /// As [`ClientBuilder::keep_alive`], for every server.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = officer::client::ShardedClient::builder().keep_alive(Duration::from_secs(10));
    /// ```
    pub fn keep_alive(mut self, interval: Duration) -> ShardedBuilder {
        self.options = self.options.keep_alive(interval);
        self
    }

    /// As [`ClientBuilder::no_keep_alive`], for every server.
    ///
    /// ```
    /// let builder = officer::client::ShardedClient::builder().no_keep_alive();
    /// ```
    pub fn no_keep_alive(mut self) -> ShardedBuilder {
        self.options = self.options.no_keep_alive();
        self
    }

    /// As [`ClientBuilder::connect_timeout`], for each connection.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = officer::client::ShardedClient::builder().connect_timeout(Duration::from_millis(500));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> ShardedBuilder {
        self.options = self.options.connect_timeout(timeout);
        self
    }

    /// As [`ClientBuilder::auto_reconnect`], for every server.
    ///
    /// ```
    /// let builder = officer::client::ShardedClient::builder().auto_reconnect(false);
    /// ```
    pub fn auto_reconnect(mut self, enabled: bool) -> ShardedBuilder {
        self.options = self.options.auto_reconnect(enabled);
        self
    }

    /// As [`ClientBuilder::session_grace`], for every server: each connection asks its server
    /// for a resumable session of `grace`, so when one server's connection drops, that
    /// session alone is resumed (its locks and waits kept) while the other servers' names
    /// carry on untouched. A server that is down still fails only its own names.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = officer::client::ShardedClient::builder().session_grace(Duration::from_secs(10));
    /// ```
    pub fn session_grace(mut self, grace: Duration) -> ShardedBuilder {
        self.options = self.options.session_grace(grace);
        self
    }

    /// As [`ClientBuilder::auth`]: the one secret of every server of the set.
    ///
    /// ```
    /// let builder = officer::client::ShardedClient::builder().auth("s3cret");
    /// ```
    pub fn auth(mut self, secret: impl Into<Vec<u8>>) -> ShardedBuilder {
        self.options = self.options.auth(secret);
        self
    }

    /// Connects to every server at once (in parallel, so a slow one costs one connect
    /// timeout, not one each). A server that cannot be reached does not fail the client: its
    /// names fail when used, each use trying to connect again. Fails only for an empty list
    /// or a malformed address.
    ///
    /// ```no_run
    /// let client = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]).connect()?;
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn connect(self) -> Result<ShardedClient> {
        let client = self.connect_lazy()?;
        client.open_all();
        Ok(client)
    }

    /// Connects to no server yet: each connection opens on the first call that needs its
    /// server (a command-line `lock` then talks only to the server of its name).
    ///
    /// ```
    /// let client = officer::client::ShardedClient::builder().servers(["a:11500", "b:11500"]).connect_lazy()?;
    /// assert_eq!(client.servers().count(), 2);
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn connect_lazy(self) -> Result<ShardedClient> {
        let (servers, prefix) = self.into_parts()?;
        Ok(ShardedClient::from_parts(servers, prefix))
    }

    /// Each server's canonical address and connection options, and the namespace prefix:
    /// what a sharded client (blocking or async) is made of.
    pub(crate) fn into_parts(self) -> Result<(Vec<(String, ClientBuilder)>, String)> {
        let mut targets = Vec::with_capacity(self.servers.len());
        for server in self.servers {
            targets.push(server.map_err(|why| Error::io(io::Error::new(io::ErrorKind::InvalidInput, why)))?);
        }
        if targets.is_empty() {
            let why = "a sharded client needs at least one server";
            return Err(Error::io(io::Error::new(io::ErrorKind::InvalidInput, why)));
        }
        let servers = targets.into_iter().map(|t| (t.to_string(), options_for(&self.options, t))).collect();
        Ok((servers, self.prefix))
    }
}

/// The builder of one server's connection: the shared options, that server's address.
fn options_for(options: &ClientBuilder, target: Target) -> ClientBuilder {
    match target {
        Target::Tcp { host, port } => options.clone().host(host).port(port),
        Target::Unix(path) => options.clone().unix_socket(path),
    }
}

/// A server address as [`ShardedBuilder::server`] takes it.
pub(crate) fn parse_server(s: &str) -> std::result::Result<Target, String> {
    if s.starts_with('/') || s.starts_with('.') {
        return Ok(Target::Unix(s.into()));
    }
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("{p:?} in server {s:?} is not a port number"));
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) =
            rest.split_once(']').ok_or_else(|| format!("server {s:?} lacks the closing ]"))?;
        match after {
            "" => (host, DEFAULT_PORT),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, port(p)?),
                None => return Err(format!("server {s:?}: expected :PORT after ]")),
            },
        }
    } else {
        match s.split_once(':') {
            Some((host, p)) if !p.contains(':') => (host, port(p)?),
            _ => (s, DEFAULT_PORT),
        }
    };
    if host.is_empty() {
        return Err(format!("server {s:?} has no host"));
    }
    Ok(Target::Tcp { host: host.to_owned(), port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(s: &str) -> String {
        parse_server(s).map(|t| t.to_string()).unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn addresses_parse_to_their_canonical_form() {
        assert_eq!(canonical("db1"), "db1:11500");
        assert_eq!(canonical("db1:9000"), "db1:9000");
        assert_eq!(canonical("[::1]:9000"), "[::1]:9000");
        assert_eq!(canonical("[::1]"), "[::1]:11500");
        assert_eq!(canonical("fe80::1"), "[fe80::1]:11500");
        assert_eq!(canonical("/run/o.sock"), "/run/o.sock");
        assert!(canonical("db1:http").starts_with("error:"));
        assert!(canonical(":9000").starts_with("error:"));
        assert!(canonical("[::1").starts_with("error:"));
    }

    #[test]
    fn an_empty_list_or_a_bad_address_fails_at_connect() {
        assert!(ShardedBuilder::new().connect_lazy().unwrap_err().is_io());
        let err = ShardedBuilder::new().server("a:1").server("b:x").connect_lazy().unwrap_err();
        assert!(err.to_string().contains("\"x\""), "{err}");
    }
}
