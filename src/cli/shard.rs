//! The client subcommands over several servers: `-h a:11500,b:11500` (or the same list in
//! `OFFICER_HOST` or `OFFICER_ADDR`) spreads lock names over the servers as
//! [`ShardedClient`] places them. `officer lock` talks only to its name's server; the
//! listings ask every server and add a SERVER column (a `server` key in `--json`). A single
//! host never comes here, so its output stays as it was.
//!
//! The listings print what the reachable servers answered, report each server that failed on
//! stderr, and exit with the first failure's status.

use std::io::Write;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::show::table;
use super::{
    client_secret, split_host_port, ConnectArgs, ConnectionsArgs, LocksArgs, PingArgs, SocketType, StatsArgs,
    EXIT_USAGE,
};
use crate::client::{Client, Error, ErrorKind, Result, ShardedClient, Stats, DEFAULT_PORT};
use crate::protocol::ErrorCode;

impl ConnectArgs {
    /// The servers when the host (from `-h`, else `OFFICER_HOST`, else `OFFICER_ADDR`) is a
    /// comma-separated list, `None` for one server (see [`ConnectArgs::endpoint_from`]). An
    /// entry without a port takes the port of its layer (`-p`, `OFFICER_PORT`), else of the
    /// next layers as for one server; an entry with its own port beside its layer's port is
    /// an error, as for one server.
    ///
    /// ```
    /// # use clap::Parser;
    /// # #[derive(Parser)] #[command(disable_help_flag = true)]
    /// # struct Args { #[command(flatten)] connect: officer::cli::ConnectArgs }
    /// let args = Args::parse_from(["x", "-h", "a,b:9000", "-p", "7"]);
    /// assert!(args.connect.servers_from(|_| None).is_some_and(|r| r.is_err()));
    /// let args = Args::parse_from(["x", "-h", "a,b:9000"]);
    /// let servers = args.connect.servers_from(|_| None).unwrap()?;
    /// assert_eq!(servers, [("a".to_owned(), 11500), ("b".to_owned(), 9000)]);
    /// assert!(Args::parse_from(["x", "-h", "a"]).connect.servers_from(|_| None).is_none());
    /// # Ok::<(), String>(())
    /// ```
    pub fn servers_from(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<std::result::Result<Vec<(String, u16)>, String>> {
        // The members of one cluster are not shards (`ConnectArgs::members_from`).
        if self.socket_type != SocketType::Tcp || self.is_cluster_from(&env) {
            return None;
        }
        let env = |var: &str| env(var).filter(|v| !v.is_empty());
        let env_port = env("OFFICER_PORT").map(|p| p.parse::<u16>().map_err(|_| p));
        let layers = [
            Layer { what: "-h/-p", host: self.host.clone(), port: self.port.map(Ok) },
            Layer { what: "OFFICER_HOST/OFFICER_PORT", host: env("OFFICER_HOST"), port: env_port },
            Layer { what: "OFFICER_ADDR", host: env("OFFICER_ADDR"), port: None },
        ];
        let chosen = layers.iter().position(|l| l.host.is_some())?;
        if !layers[chosen].host.as_deref().is_some_and(|h| h.contains(',')) {
            return None;
        }
        Some(list_from(&layers, chosen))
    }

    /// [`ConnectArgs::servers_from`] with the process environment; a malformed list is a
    /// usage error, printed.
    fn servers_or_exit(&self) -> std::result::Result<Option<Vec<(String, u16)>>, i32> {
        match self.servers_from(|var| std::env::var(var).ok()) {
            None => Ok(None),
            Some(Ok(servers)) => Ok(Some(servers)),
            Some(Err(e)) => {
                eprintln!("officer: {e}");
                Err(EXIT_USAGE)
            }
        }
    }

    /// A sharded client over `servers` with these flags; it connects to each server on first
    /// use, and never replaces a broken connection (a command-line run is one session).
    fn sharded_or_exit(&self, servers: &[(String, u16)]) -> std::result::Result<ShardedClient, i32> {
        let mut builder =
            ShardedClient::builder().connect_timeout(self.connect_timeout).auto_reconnect(false);
        for (host, port) in servers {
            builder = builder.tcp_server(host.clone(), *port);
        }
        if let Some(ns) = &self.namespace {
            builder = builder.namespace(ns);
        }
        if let Some(path) = &self.auth_file {
            builder = builder.auth(client_secret(path).map_err(|(code, msg)| {
                eprintln!("officer: {msg}");
                code
            })?);
        }
        builder.connect_lazy().map_err(|e| super::report(&e))
    }

    /// The client for `officer lock NAME` and the server it talks to, for messages: the one
    /// server, or NAME's server of a list (connecting to that one only).
    pub(super) fn connect_for_name(&self, name: &str) -> std::result::Result<(Arc<Client>, String), i32> {
        let Some(servers) = self.servers_or_exit()? else {
            return self.connect_or_exit().map(|client| (Arc::new(client), self.describe()));
        };
        let sharded = self.sharded_or_exit(&servers)?;
        let server = sharded.server_for(name).to_owned();
        match sharded.client_for(name) {
            Ok(client) => Ok((client, server)),
            Err(e) => {
                let (code, msg) = self.connect_failure_at(&server, &e);
                eprintln!("officer: {msg}");
                Err(code)
            }
        }
    }
}

/// One source of the address, as in [`ConnectArgs::endpoint_from`]: a host (or list), and a
/// port (an unparsable `OFFICER_PORT` kept as its text).
struct Layer {
    what: &'static str,
    host: Option<String>,
    port: Option<std::result::Result<u16, String>>,
}

/// The answers of every server: each server's address and its result.
type Answers<T> = Vec<(String, Result<T>)>;

/// The list of layer `chosen`, each entry's port from itself or the first layer that gives one.
fn list_from(layers: &[Layer], chosen: usize) -> std::result::Result<Vec<(String, u16)>, String> {
    let mut default_port = None;
    for (i, Layer { what, host, port }) in layers.iter().enumerate() {
        let port = match port {
            Some(Ok(p)) => Some(*p),
            Some(Err(p)) => return Err(format!("OFFICER_PORT={p:?} is not a port number")),
            None if i == chosen => None,
            // A single host with a port lends its port, as for one server.
            None => match host.as_deref().filter(|h| !h.contains(',')).map(split_host_port) {
                Some(Ok((_, p))) => p,
                Some(Err(e)) => return Err(format!("{what}: {e}")),
                None => None,
            },
        };
        default_port = default_port.or(port);
    }
    let Layer { what, host: list, port: layer_port } = &layers[chosen];
    let layer_port = layer_port.as_ref().and_then(|p| p.as_ref().ok());
    let mut servers = Vec::new();
    for entry in list.as_deref().unwrap_or_default().split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(format!(
                "{what}: an empty server in the list {:?}",
                list.as_deref().unwrap_or_default()
            ));
        }
        let (host, port) = split_host_port(entry).map_err(|e| format!("{what}: {e}"))?;
        if port.is_some() && layer_port.is_some() {
            return Err(format!("{what}: the port of {entry:?} is given twice (in the host and as a port)"));
        }
        servers.push((host, port.or(default_port).unwrap_or(DEFAULT_PORT)));
    }
    Ok(servers)
}

/// Runs a listing on every server of a list, or returns `None` for one server.
fn fan_out<T: Send>(
    connect: &ConnectArgs,
    ask: impl Fn(&Client) -> Result<T> + Sync,
) -> Option<std::result::Result<Answers<T>, i32>> {
    let servers = match connect.servers_or_exit() {
        Ok(None) => return None,
        Ok(Some(servers)) => servers,
        Err(code) => return Some(Err(code)),
    };
    Some(connect.sharded_or_exit(&servers).map(|client| {
        client.each_server(ask).into_iter().map(|(server, result)| (server.to_owned(), result)).collect()
    }))
}

/// The servers that failed, with their errors.
type Failures = Vec<(String, Error)>;

/// Prints `text`, reports the failures, and returns the first failure's exit status (or 0).
fn finish(connect: &ConnectArgs, text: String, failures: Failures) -> i32 {
    // A closed pipe (`officer locks | head`) is not worth a panic or an error status.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    let mut status = 0;
    for (server, e) in failures {
        let code = report_at(connect, &server, &e);
        if status == 0 {
            status = code;
        }
    }
    status
}

/// Prints the failure of the server at `server` and returns its exit status: failures of
/// reaching it read as for one server.
fn report_at(connect: &ConnectArgs, server: &str, e: &Error) -> i32 {
    let (code, msg) = match e.kind() {
        ErrorKind::Io
        | ErrorKind::Protocol
        | ErrorKind::Server(ErrorCode::AuthRequired | ErrorCode::AuthFailed) => {
            connect.connect_failure_at(server, e)
        }
        _ => (super::exit_status(e), e.to_string()),
    };
    eprintln!("officer: {msg}");
    code
}

/// [`report_at`] for an error of a sharded client, which names its server.
pub(super) fn report(connect: &ConnectArgs, e: &Error) -> i32 {
    match e.server_address() {
        Some(server) => report_at(connect, server, e),
        None => super::report(e),
    }
}

/// The answers, split into `(server, value)` and `(server, failure)`.
fn split<T>(results: Answers<T>) -> (Vec<(String, T)>, Failures) {
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for (server, result) in results {
        match result {
            Ok(value) => ok.push((server, value)),
            Err(e) => failed.push((server, e)),
        }
    }
    (ok, failed)
}

/// Keeps at most `max` rows (0: all), saying whether any were cut.
fn cut<T>(rows: &mut Vec<T>, max: u32) -> bool {
    let cut = max > 0 && rows.len() > max as usize;
    rows.truncate(if cut { max as usize } else { rows.len() });
    cut
}

/// `officer locks` over a list: sorted by name, at most `--max` over the set.
pub(super) fn locks(args: &LocksArgs) -> Option<i32> {
    let results = match fan_out(&args.connect, |c| c.locks_matching(&args.prefix, args.max))? {
        Ok(results) => results,
        Err(code) => return Some(code),
    };
    let (answers, failures) = split(results);
    let mut truncated = answers.iter().any(|(_, l)| l.truncated);
    let mut rows: Vec<_> =
        answers.into_iter().flat_map(|(s, l)| l.items.into_iter().map(move |i| (s.clone(), i))).collect();
    rows.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    truncated |= cut(&mut rows, args.max);
    let text = if args.json {
        let items = rows.iter().map(|(server, l)| {
            let (holder, waiters) = l.queue.split_first().map_or((None, &[][..]), |(h, w)| (Some(h), w));
            json!({ "name": l.name, "server": server, "holder": holder, "waiters": waiters })
        });
        json!({ "locks": items.collect::<Vec<_>>(), "truncated": truncated }).to_string() + "\n"
    } else {
        let rows = rows.into_iter().map(|(server, l)| {
            let (holder, waiters) = l.queue.split_first().map_or(("", &[][..]), |(h, w)| (h.as_str(), w));
            vec![l.name, server, holder.to_owned(), waiters.join(", ")]
        });
        table(&["NAME", "SERVER", "HOLDER", "WAITING"], rows, "no locks", truncated)
    };
    Some(finish(&args.connect, text, failures))
}

/// `officer connections` over a list: server after server, each in its own order.
pub(super) fn connections(args: &ConnectionsArgs) -> Option<i32> {
    let results = match fan_out(&args.connect, |c| c.connections_matching(&args.prefix, args.max))? {
        Ok(results) => results,
        Err(code) => return Some(code),
    };
    let (answers, failures) = split(results);
    let truncated = answers.iter().any(|(_, l)| l.truncated);
    let rows: Vec<_> =
        answers.into_iter().flat_map(|(s, l)| l.items.into_iter().map(move |i| (s.clone(), i))).collect();
    let text = if args.json {
        let items = rows.iter().map(
            |(server, c)| json!({ "label": c.label, "server": server, "held": c.held, "waiting": c.waiting }),
        );
        json!({ "connections": items.collect::<Vec<_>>(), "truncated": truncated }).to_string() + "\n"
    } else {
        let rows = rows.into_iter().map(|(s, c)| vec![c.label, s, c.held.join(", "), c.waiting.join(", ")]);
        table(&["CONNECTION", "SERVER", "HOLDS", "WAITS FOR"], rows, "no connections", truncated)
    };
    Some(finish(&args.connect, text, failures))
}

/// `officer stats` over a list: each server's counters, never added up.
pub(super) fn stats(args: &StatsArgs) -> Option<i32> {
    let results = match fan_out(&args.connect, Client::stats)? {
        Ok(results) => results,
        Err(code) => return Some(code),
    };
    let (answers, failures) = split(results);
    let entries = |stats: &Stats| -> Vec<(String, u64)> {
        stats.iter().filter(|(k, _)| k.starts_with(&args.prefix)).map(|(k, v)| (k.to_owned(), v)).collect()
    };
    let text = if args.json {
        let per_server: Map<String, Value> = answers
            .iter()
            .map(|(server, stats)| {
                let counters: Map<String, Value> =
                    entries(stats).into_iter().map(|(k, v)| (k, json!(v))).collect();
                (server.clone(), Value::Object(counters))
            })
            .collect();
        json!({ "servers": per_server }).to_string() + "\n"
    } else {
        let rows = answers.iter().flat_map(|(server, stats)| {
            entries(stats).into_iter().map(move |(k, v)| vec![server.clone(), k, v.to_string()])
        });
        table(&["SERVER", "KEY", "VALUE"], rows, "no counters", false)
    };
    Some(finish(&args.connect, text, failures))
}

/// `officer ping` over a list: `--count` pings to each server.
pub(super) fn ping(args: &PingArgs) -> Option<i32> {
    let results = match fan_out(&args.connect, |client| {
        let mut rtts = Vec::new();
        for _ in 0..args.count {
            rtts.push(client.ping()?.as_secs_f64() * 1000.0);
        }
        Ok((client.server_info().connection_id, rtts))
    })? {
        Ok(results) => results,
        Err(code) => return Some(code),
    };
    let (answers, failures) = split(results);
    let text = if args.json {
        let docs = answers.iter().map(|(server, (connection_id, rtts))| {
            json!({ "server": server, "connection_id": connection_id, "rtt_ms": rtts })
        });
        json!({ "servers": docs.collect::<Vec<_>>() }).to_string() + "\n"
    } else {
        let mut out = String::new();
        for (server, (connection_id, rtts)) in &answers {
            for ms in rtts {
                out.push_str(&format!("pong from {server} (connection {connection_id}): {ms:.3} ms\n"));
            }
        }
        out
    };
    Some(finish(&args.connect, text, failures))
}

/// `officer top` over a list: the sharded client, or `None` for one server.
pub(super) fn top_client(connect: &ConnectArgs) -> Option<std::result::Result<ShardedClient, i32>> {
    match connect.servers_or_exit() {
        Ok(None) => None,
        Ok(Some(servers)) => Some(connect.sharded_or_exit(&servers)),
        Err(code) => Some(Err(code)),
    }
}

/// The counters `officer top` shows, over several servers: counts added up, uptime the
/// shortest (the set has been complete that long).
pub(super) fn top_stats(per_server: &[(String, Stats)]) -> Stats {
    let sum = |key: &str| per_server.iter().filter_map(|(_, s)| s.get(key)).sum::<u64>();
    let uptime = per_server.iter().filter_map(|(_, s)| s.get("uptime_ms")).min().unwrap_or(0);
    let mut entries: Vec<(String, u64)> = ["connections", "locks_held", "waiters", "acquire_rate_per_sec"]
        .iter()
        .map(|k| (k.to_string(), sum(k)))
        .collect();
    entries.push(("uptime_ms".to_owned(), uptime));
    Stats { entries }
}
