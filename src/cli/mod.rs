//! The `officer` binary's subcommands, as a library so `main.rs` only parses arguments.
//!
//! - this file: the client subcommands' clap definitions ([`ClientCommand`], [`ConnectArgs`])
//!   and [`run`], on top of [`crate::client`]; where the server's address comes from (flags,
//!   then `OFFICER_HOST`/`OFFICER_PORT`, then `OFFICER_ADDR`); the exit statuses (sysexits
//!   values, see [`TOP_LEVEL_HELP`]) and the words of connect failures.
//! - `lock`: `officer lock NAME -- COMMAND`, flock(1) across hosts.
//! - `show`: the listings, as aligned tables or `--json`; `top`: the live view.
//! - `shard`: the same over several servers (`-h a:11500,b:11500`), as [`crate::client::ShardedClient`].
//! - [`serve`]: `officer run|start|stop|restart|status`, flags to [`crate::server::Config`].
//! - [`bench`](mod@bench): `officer bench`, flags and reports around [`crate::bench`].
//!
//! `-h` means `--host` here, as in `officer run`, so every subcommand turns clap's help flag
//! off and offers `--help` alone.

mod admin;
pub mod bench;
mod lock;
pub mod serve;
mod shard;
mod show;
mod top;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::client::{Client, ClientBuilder, Error, ErrorKind, DEFAULT_HOST, DEFAULT_PORT};
use crate::protocol::ErrorCode;

/// Exit status of a usage error: bad flags, values or environment (EX_USAGE, as flock(1)).
///
/// ```
/// assert_eq!(officer::cli::EXIT_USAGE, 64);
/// ```
pub const EXIT_USAGE: i32 = 64;
/// Exit status when a lock name (or listing prefix) is refused: empty, too long, control
/// characters; checked before anything is sent (EX_DATAERR).
///
/// ```
/// assert_eq!(officer::cli::EXIT_DATA, 65);
/// ```
pub const EXIT_DATA: i32 = 65;
/// Exit status when the `--auth-file` cannot be read (EX_NOINPUT, as flock(1) for its file).
///
/// ```
/// assert_eq!(officer::cli::EXIT_NO_INPUT, 66);
/// ```
pub const EXIT_NO_INPUT: i32 = 66;
/// Exit status only when the server cannot be reached: refused, timed out, unknown host, the
/// connection lost, or the server refusing new connections (at its limit, shutting down)
/// (EX_UNAVAILABLE).
///
/// ```
/// // `officer ping` in a health check: anything but 0 is unhealthy, 69 means unreachable.
/// assert_eq!(officer::cli::EXIT_UNAVAILABLE, 69);
/// ```
pub const EXIT_UNAVAILABLE: i32 = 69;
/// Exit status of an answer that cannot happen in a command-line session (EX_SOFTWARE).
///
/// ```
/// assert_eq!(officer::cli::EXIT_SOFTWARE, 70);
/// ```
pub const EXIT_SOFTWARE: i32 = 70;
/// Exit status when the peer does not speak the officer protocol (EX_PROTOCOL).
///
/// ```
/// assert_eq!(officer::cli::EXIT_PROTOCOL, 76);
/// ```
pub const EXIT_PROTOCOL: i32 = 76;
/// Exit status when the server requires authentication or refused the secret (EX_NOPERM).
///
/// ```
/// assert_eq!(officer::cli::EXIT_NO_PERM, 77);
/// ```
pub const EXIT_NO_PERM: i32 = 77;
/// Exit status when the `--auth-file` secret is too short to be any server's (EX_CONFIG).
///
/// ```
/// assert_eq!(officer::cli::EXIT_CONFIG, 78);
/// ```
pub const EXIT_CONFIG: i32 = 78;

/// Shortest secret a server accepts (`officer run --auth-file`); a shorter one in a client's
/// `--auth-file` cannot match any server's, so the client says so instead of connecting.
pub const MIN_SECRET_LEN: usize = crate::server::Config::MIN_SECRET_LEN;

/// The end of `officer --help`: where the server address comes from and what exit statuses
/// mean, for the client subcommands.
pub const TOP_LEVEL_HELP: &str = "\
Server address (client subcommands):
  -h HOST[:PORT], -p PORT      flags win ([V6]:PORT for IPv6, e.g. -h [::1]:11500)
  -h HOST[:PORT],HOST[:PORT]   several servers: each lock name lives on one of them; the
                               listings ask them all (also in OFFICER_HOST, OFFICER_ADDR)
  --cluster -h HOST[:PORT],... the list is one cluster's members: the client talks to its
                               leader and follows redirects (also OFFICER_CLUSTER=1)
  OFFICER_HOST, OFFICER_PORT   then these (OFFICER_HOST may also be HOST:PORT)
  OFFICER_ADDR=HOST:PORT       then this, as etcdctl's ETCDCTL_ENDPOINTS
  default                      localhost:11500
Each of host and port comes from the first of these that gives it.

Exit status (client subcommands):
  0        success; `officer lock`: the command's own status
  1        the lock was busy, timed out, or its queue was full (--queue-max or the server's
           --max-waiters); `officer lock -E N` changes it
  64       usage error: bad flags, values or OFFICER_* variables
  65       the lock name or prefix was refused (empty, too long, control characters)
  66       the --auth-file cannot be read
  69       the server cannot be reached: refused, timed out, unknown host, connection lost,
           or it refuses new connections (at its connection limit, shutting down)
  70       an answer that cannot happen in a command-line session (a bug: please report it)
  75       `officer lock`: the lock was lost while the command ran
  76       the server does not speak the officer protocol (wrong port?)
  77       the server requires authentication (--auth-file) or refused the secret
  78       the --auth-file secret is shorter than 32 bytes
  126, 127 `officer lock`: the command cannot be run / was not found
  128+N    `officer lock`: the command was killed by signal N

`officer help SUBCOMMAND` or `officer SUBCOMMAND --help` shows a subcommand's flags;
`officer completions SHELL` and `officer man` generate completions and the man page.";
/// Exit status of `officer lock` when the connection, and with it the lock, was lost while the
/// command ran (EX_TEMPFAIL).
///
/// ```
/// // A wrapper script retries a job whose lock was lost: `[ $? -eq 75 ] && retry`.
/// assert_eq!(officer::cli::EXIT_LOCK_LOST, 75);
/// ```
pub const EXIT_LOCK_LOST: i32 = 75;
/// Exit status of `officer lock` when the command exists but cannot be run (as in shells).
///
/// ```
/// assert_eq!(officer::cli::EXIT_CANNOT_EXECUTE, 126);
/// ```
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit status of `officer lock` when the command is not found (as in shells).
///
/// ```
/// assert_eq!(officer::cli::EXIT_NOT_FOUND, 127);
/// ```
pub const EXIT_NOT_FOUND: i32 = 127;

/// The client subcommands, flattened into the binary's top level.
///
/// ```
/// use clap::Parser;
/// use officer::cli::ClientCommand;
///
/// #[derive(Parser)]
/// #[command(disable_help_flag = true)]
/// struct Cli {
///     #[command(subcommand)]
///     command: ClientCommand,
/// }
/// let cli = Cli::parse_from(["officer", "lock", "-n", "backup", "--", "true"]);
/// assert!(matches!(cli.command, ClientCommand::Lock(_)));
/// ```
#[derive(clap::Subcommand, Debug)]
// Without this, clap would show this doc comment as the about text of the binary that
// flattens the enum.
#[command(about = None, long_about = None)]
pub enum ClientCommand {
    /// Run a command while holding a lock (like flock(1), across hosts).
    #[command(disable_help_flag = true)]
    Lock(LockArgs),
    /// List the server's locks with their holder and waiters.
    #[command(disable_help_flag = true)]
    Locks(LocksArgs),
    /// List the server's connections with the locks they hold and wait for.
    #[command(disable_help_flag = true)]
    Connections(ConnectionsArgs),
    /// Show the server's counters.
    #[command(disable_help_flag = true)]
    Stats(StatsArgs),
    /// Check that the server answers, and how fast.
    #[command(disable_help_flag = true)]
    Ping(PingArgs),
    /// Live view of the busiest locks, refreshed every second until interrupted.
    #[command(disable_help_flag = true)]
    Top(TopArgs),
    /// Ask whether a fencing token holds a lock now (exit 0 if it does, 1 if not).
    #[command(disable_help_flag = true)]
    Check(CheckArgs),
    /// End a lock's grants by force (an operator's action; the holders are told they lost it).
    #[command(disable_help_flag = true)]
    Release(ReleaseArgs),
    /// Close a connection by its id (an operator's action; its locks are released).
    #[command(disable_help_flag = true)]
    Kick(KickArgs),
}

/// `officer release --force NAME [--token T]`.
///
/// ```
/// # use clap::Parser;
/// # #[derive(Parser)] #[command(disable_help_flag = true)]
/// # struct Cli { #[command(subcommand)] command: officer::cli::ClientCommand }
/// use officer::cli::ClientCommand;
/// let Cli { command: ClientCommand::Release(args) } = Cli::parse_from(["officer", "release", "--force", "db"]) else { panic!() };
/// assert_eq!((args.name.as_str(), args.token), ("db", None));
/// ```
#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    /// The lock whose grants end.
    pub name: String,
    /// Required: releasing another's lock is a forced act (the holder gets LOST revoked).
    #[arg(long, required = true)]
    pub force: bool,
    /// End only the grant with this fencing token [default: every grant of the name].
    #[arg(long, value_name = "TOKEN", value_parser = clap::value_parser!(u64).range(1..))]
    pub token: Option<u64>,
    /// The server's admin secret (its --admin-file); not needed on its UNIX socket as its user.
    #[arg(long, value_name = "PATH")]
    pub admin_file: Option<PathBuf>,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
    help: Option<bool>,
}

/// `officer kick CONN`.
///
/// ```
/// # use clap::Parser;
/// # #[derive(Parser)] #[command(disable_help_flag = true)]
/// # struct Cli { #[command(subcommand)] command: officer::cli::ClientCommand }
/// use officer::cli::ClientCommand;
/// let Cli { command: ClientCommand::Kick(args) } = Cli::parse_from(["officer", "kick", "42"]) else { panic!() };
/// assert_eq!(args.connection, 42);
/// ```
#[derive(clap::Args, Debug)]
pub struct KickArgs {
    /// The connection's id, as the server's logs and HELLO_OK show it.
    pub connection: u64,
    /// The server's admin secret (its --admin-file); not needed on its UNIX socket as its user.
    #[arg(long, value_name = "PATH")]
    pub admin_file: Option<PathBuf>,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
    help: Option<bool>,
}

/// `officer check NAME TOKEN`.
///
/// ```
/// # use clap::Parser;
/// # #[derive(Parser)] #[command(disable_help_flag = true)]
/// # struct Cli { #[command(subcommand)] command: officer::cli::ClientCommand }
/// use officer::cli::ClientCommand;
/// let Cli { command: ClientCommand::Check(args) } = Cli::parse_from(["officer", "check", "db", "42"]) else { panic!() };
/// assert_eq!((args.name.as_str(), args.token), ("db", 42));
/// ```
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The lock name.
    pub name: String,
    /// The fencing token (as `officer lock` passes it in OFFICER_FENCING_TOKEN).
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    pub token: u64,
    /// Print nothing; the exit status says it.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
    help: Option<bool>,
}

/// `officer top`.
///
/// ```
/// # use clap::Parser;
/// # #[derive(Parser)] #[command(disable_help_flag = true)]
/// # struct Cli { #[command(subcommand)] command: officer::cli::ClientCommand }
/// use officer::cli::ClientCommand;
/// let Cli { command: ClientCommand::Top(args) } = Cli::parse_from(["officer", "top", "-n", "2"]) else { panic!() };
/// assert_eq!(args.iterations, Some(2));
/// ```
#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// Seconds between refreshes.
    #[arg(short = 'i', long, default_value_t = 1.0)]
    pub interval: f64,
    /// Stop after this many refreshes (default: until interrupted).
    #[arg(short = 'n', long)]
    pub iterations: Option<u64>,
    /// Locks shown per list.
    #[arg(long, default_value_t = 10)]
    pub max: u32,
    /// One JSON document per refresh instead of a screen.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
    help: Option<bool>,
}

/// How the server is reached; the same flags as `officer run` has for listening.
///
/// ```
/// use clap::Parser;
/// use officer::cli::ConnectArgs;
///
/// #[derive(Parser)]
/// #[command(disable_help_flag = true)]
/// struct Args {
///     #[command(flatten)]
///     connect: ConnectArgs,
/// }
/// let args = Args::parse_from(["x", "-h", "10.0.0.5", "-p", "9999"]);
/// assert_eq!(args.connect.endpoint_from(|_| None)?, ("10.0.0.5".to_owned(), 9999));
/// let args = Args::parse_from(["x", "-h", "[::1]:9999"]);
/// assert_eq!(args.connect.endpoint_from(|_| None)?, ("::1".to_owned(), 9999));
/// # Ok::<(), String>(())
/// ```
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Server host name or address, or `HOST:PORT` (`[V6]:PORT` for IPv6), or a comma-separated
    /// list of them to spread lock names over several servers (`-H` is the same flag); the
    /// default is `$OFFICER_HOST`, else the host of `$OFFICER_ADDR`, else localhost.
    // The help text is given apart: clap would show rustdoc's escapes of the brackets.
    #[arg(
        short = 'h',
        short_alias = 'H',
        long,
        value_name = "HOST[:PORT]",
        help = "Server host name or address, or HOST:PORT ([V6]:PORT for IPv6), or a comma-separated \
                list of them to spread lock names over several servers (-H is the same flag) \
                [default: $OFFICER_HOST, else the host of $OFFICER_ADDR, else localhost]"
    )]
    pub host: Option<String>,
    /// Server TCP port [default: $OFFICER_PORT, else the port of $OFFICER_ADDR, else 11500].
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// Connect over TCP or to a UNIX socket.
    #[arg(short = 'o', long, value_enum, default_value = "TCP", ignore_case = true)]
    pub socket_type: SocketType,
    /// UNIX socket path (with `-o unix`).
    #[arg(short = 'f', long, default_value = "/tmp/officer.sock")]
    pub socket_file: PathBuf,
    /// Prefix every lock name with NAMESPACE: (and show only names inside it).
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Seconds to wait for the connection and handshake.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub connect_timeout: Duration,
    /// Authenticate with the secret in this file (as given to `officer run --auth-file`).
    #[arg(long, value_name = "PATH")]
    pub auth_file: Option<PathBuf>,
    /// The host list is the members of one cluster (`officer run --cluster`), not shards:
    /// connect to its leader, following the members' redirects, and with --session-grace
    /// resume on the new leader after a failover [default: $OFFICER_CLUSTER=1].
    #[arg(long)]
    pub cluster: bool,
}

/// The transport of [`ConnectArgs`].
///
/// ```
/// use clap::ValueEnum;
/// let t = officer::cli::SocketType::from_str("unix", true).unwrap();
/// assert_eq!(t, officer::cli::SocketType::Unix);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum SocketType {
    Tcp,
    Unix,
}

impl ConnectArgs {
    /// A client builder for these flags, for callers that add options of their own.
    ///
    /// ```
    /// # use clap::Parser;
    /// # #[derive(Parser)] #[command(disable_help_flag = true)]
    /// # struct Args { #[command(flatten)] connect: officer::cli::ConnectArgs }
    /// let args = Args::parse_from(["x", "--namespace", "ci"]);
    /// let builder = args.connect.builder()?.auto_reconnect(false);
    /// # Ok::<(), String>(())
    /// ```
    ///
    /// Fails when the address flags or `OFFICER_*` variables are malformed, or the
    /// `--auth-file` cannot be read or is too short.
    pub fn builder(&self) -> Result<ClientBuilder, String> {
        self.builder_or_exit().map_err(|(_, msg)| msg)
    }

    /// Whether the host list names one cluster's members: `--cluster`, or `OFFICER_CLUSTER`
    /// set to `1`, `true` or `yes`.
    ///
    /// ```
    /// # use clap::Parser;
    /// # #[derive(Parser)] #[command(disable_help_flag = true)]
    /// # struct Args { #[command(flatten)] connect: officer::cli::ConnectArgs }
    /// let args = Args::parse_from(["x", "-h", "a,b"]);
    /// assert!(!args.connect.is_cluster_from(|_| None));
    /// assert!(args.connect.is_cluster_from(|v| (v == "OFFICER_CLUSTER").then(|| "1".to_owned())));
    /// assert!(Args::parse_from(["x", "--cluster"]).connect.is_cluster_from(|_| None));
    /// ```
    pub fn is_cluster_from(&self, env: impl Fn(&str) -> Option<String>) -> bool {
        self.cluster
            || env("OFFICER_CLUSTER")
                .is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "TRUE" | "YES"))
    }

    /// The cluster's members, `host:port` each, when the host list names one cluster
    /// ([`ConnectArgs::is_cluster_from`]; a single host is a cluster of one), else `None`.
    ///
    /// ```
    /// # use clap::Parser;
    /// # #[derive(Parser)] #[command(disable_help_flag = true)]
    /// # struct Args { #[command(flatten)] connect: officer::cli::ConnectArgs }
    /// let args = Args::parse_from(["x", "--cluster", "-h", "a,[::1]:9000"]);
    /// assert_eq!(args.connect.members_from(|_| None).unwrap()?, ["a:11500", "[::1]:9000"]);
    /// let args = Args::parse_from(["x", "--cluster", "-h", "a", "-p", "7"]);
    /// assert_eq!(args.connect.members_from(|_| None).unwrap()?, ["a:7"]);
    /// assert!(Args::parse_from(["x", "-h", "a,b"]).connect.members_from(|_| None).is_none());
    /// # Ok::<(), String>(())
    /// ```
    pub fn members_from(&self, env: impl Fn(&str) -> Option<String>) -> Option<Result<Vec<String>, String>> {
        if self.socket_type != SocketType::Tcp || !self.is_cluster_from(&env) {
            return None;
        }
        // The list as sharding reads it (ports, layers, errors alike), or the one endpoint.
        let as_list = ConnectArgs { cluster: false, ..self.clone() };
        let env_off = |var: &str| if var == "OFFICER_CLUSTER" { None } else { env(var) };
        let servers = match as_list.servers_from(env_off) {
            Some(list) => list,
            None => as_list.endpoint_from(env_off).map(|one| vec![one]),
        };
        let shown = |(host, port): (String, u16)| match host.contains(':') {
            true => format!("[{host}]:{port}"),
            false => format!("{host}:{port}"),
        };
        Some(servers.map(|list| list.into_iter().map(shown).collect()))
    }

    /// [`ConnectArgs::builder`], with the exit status its failure calls for.
    fn builder_or_exit(&self) -> Result<ClientBuilder, (i32, String)> {
        let members = self.members_from(|var| std::env::var(var).ok());
        let mut builder = match (self.socket_type, members) {
            (_, Some(members)) => Client::builder().cluster(members.map_err(|e| (EXIT_USAGE, e))?),
            (SocketType::Tcp, None) => {
                let (host, port) = self.endpoint().map_err(|e| (EXIT_USAGE, e))?;
                Client::builder().host(host).port(port)
            }
            (SocketType::Unix, None) => Client::builder().unix_socket(&self.socket_file),
        };
        builder = builder.connect_timeout(self.connect_timeout);
        if let Some(ns) = &self.namespace {
            builder = builder.namespace(ns);
        }
        if let Some(path) = &self.auth_file {
            builder = builder.auth(client_secret(path)?);
        }
        Ok(builder)
    }

    /// The server's host and port from the flags and the process environment; see
    /// [`ConnectArgs::endpoint_from`].
    pub fn endpoint(&self) -> Result<(String, u16), String> {
        self.endpoint_from(|var| std::env::var(var).ok())
    }

    /// The server's host and port: each from the first that gives it of `-h`/`-p`,
    /// `OFFICER_HOST`/`OFFICER_PORT`, `OFFICER_ADDR`, then `localhost:11500`. `-h` and
    /// `OFFICER_HOST` may carry a port (`host:port`, `[v6]:port`); a port given twice in one
    /// layer is an error, as is a malformed value. Empty variables count as unset.
    ///
    /// ```
    /// # use clap::Parser;
    /// # #[derive(Parser)] #[command(disable_help_flag = true)]
    /// # struct Args { #[command(flatten)] connect: officer::cli::ConnectArgs }
    /// let env = |var: &str| (var == "OFFICER_ADDR").then(|| "locks.internal:9000".to_owned());
    /// let args = Args::parse_from(["x"]);
    /// assert_eq!(args.connect.endpoint_from(env)?, ("locks.internal".to_owned(), 9000));
    /// let args = Args::parse_from(["x", "-h", "10.0.0.9"]);
    /// assert_eq!(args.connect.endpoint_from(env)?, ("10.0.0.9".to_owned(), 9000));
    /// # Ok::<(), String>(())
    /// ```
    pub fn endpoint_from(&self, env: impl Fn(&str) -> Option<String>) -> Result<(String, u16), String> {
        let env = |var: &str| env(var).filter(|v| !v.is_empty());
        let env_port = match env("OFFICER_PORT") {
            Some(p) => {
                Some(p.parse::<u16>().map_err(|_| format!("OFFICER_PORT={p:?} is not a port number"))?)
            }
            None => None,
        };
        let layers = [
            layer("-h/-p", self.host.as_deref(), self.port)?,
            layer("OFFICER_HOST/OFFICER_PORT", env("OFFICER_HOST").as_deref(), env_port)?,
            layer("OFFICER_ADDR", env("OFFICER_ADDR").as_deref(), None)?,
        ];
        let host = layers.iter().find_map(|(h, _)| h.clone()).unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let port = layers.iter().find_map(|(_, p)| *p).unwrap_or(DEFAULT_PORT);
        Ok((host, port))
    }

    /// Where these flags point, for messages: `host:port` or the socket path.
    ///
    /// ```
    /// # use clap::Parser;
    /// # #[derive(Parser)] #[command(disable_help_flag = true)]
    /// # struct Args { #[command(flatten)] connect: officer::cli::ConnectArgs }
    /// let args = Args::parse_from(["x"]);
    /// assert_eq!(args.connect.describe(), "localhost:11500");
    /// ```
    pub fn describe(&self) -> String {
        match (self.socket_type, self.endpoint()) {
            (SocketType::Tcp, Ok((host, port))) if host.contains(':') => format!("[{host}]:{port}"),
            (SocketType::Tcp, Ok((host, port))) => format!("{host}:{port}"),
            (SocketType::Tcp, Err(_)) => self.host.clone().unwrap_or_else(|| DEFAULT_HOST.to_owned()),
            (SocketType::Unix, _) => self.socket_file.display().to_string(),
        }
    }

    /// Connects with these flags, or prints why not and returns the exit status to use.
    fn connect_or_exit(&self) -> Result<Client, i32> {
        let builder = self.builder_or_exit().map_err(|(code, msg)| {
            eprintln!("officer: {msg}");
            code
        })?;
        // A command-line run is one session: a broken connection is reported, never replaced.
        builder.auto_reconnect(false).connect().map_err(|e| {
            let (code, msg) = self.connect_failure(&e);
            eprintln!("officer: {msg}");
            code
        })
    }

    /// The exit status and message for a failed connect: the CLI's words (flags, not library
    /// methods), and 69 only when the server was not reached.
    /// Like `connect_or_exit`, asking for a resumable session of `grace` (one server only:
    /// a session lives on one server).
    fn connect_session_or_exit(&self, grace: Duration) -> Result<Client, i32> {
        let cluster = self.is_cluster_from(|var| std::env::var(var).ok());
        if !cluster && self.host.as_deref().is_some_and(|h| h.contains(',')) {
            eprintln!("officer: --session-grace needs one server (or --cluster), not a list");
            return Err(EXIT_USAGE);
        }
        let builder = self.builder_or_exit().map_err(|(code, msg)| {
            eprintln!("officer: {msg}");
            code
        })?;
        builder.auto_reconnect(false).session_grace(grace).connect().map_err(|e| {
            let (code, msg) = self.connect_failure(&e);
            eprintln!("officer: {msg}");
            code
        })
    }

    fn connect_failure(&self, e: &Error) -> (i32, String) {
        self.connect_failure_at(&self.describe(), e)
    }

    /// [`ConnectArgs::connect_failure`] for the server at `server` (one of a list).
    fn connect_failure_at(&self, server: &str, e: &Error) -> (i32, String) {
        match e.kind() {
            ErrorKind::Server(ErrorCode::AuthRequired) => (
                EXIT_NO_PERM,
                format!(
                    "the server at {server} requires authentication: give its secret with --auth-file FILE"
                ),
            ),
            ErrorKind::Server(ErrorCode::AuthFailed) => {
                let file =
                    self.auth_file.as_deref().map_or_else(String::new, |p| format!(" {}", p.display()));
                (EXIT_NO_PERM, format!("the server at {server} refused the secret in --auth-file{file}"))
            }
            // The message of a foreign peer names the server already.
            ErrorKind::Protocol => (EXIT_PROTOCOL, e.to_string()),
            // "cannot connect to X: Connection refused", without the library's own preamble.
            ErrorKind::Io => {
                let cause = std::error::Error::source(e).map_or_else(|| e.to_string(), |c| c.to_string());
                (EXIT_UNAVAILABLE, format!("cannot connect to {server}: {cause}"))
            }
            _ => (exit_status(e), format!("cannot connect to {server}: {e}")),
        }
    }
}

/// One layer of [`ConnectArgs::endpoint_from`]: a host that may carry a port, and a port.
fn layer(what: &str, host: Option<&str>, port: Option<u16>) -> Result<(Option<String>, Option<u16>), String> {
    let Some(host) = host else { return Ok((None, port)) };
    let (host, in_host) = split_host_port(host).map_err(|e| format!("{what}: {e}"))?;
    if in_host.is_some() && port.is_some() {
        return Err(format!("{what}: the port is given twice (in the host and as a port)"));
    }
    Ok((Some(host), in_host.or(port)))
}

/// `host`, `host:port`, `v4:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address (more than one
/// colon and no brackets: no port).
///
/// ```
/// use officer::cli::split_host_port;
/// assert_eq!(split_host_port("db1:9000")?, ("db1".to_owned(), Some(9000)));
/// assert_eq!(split_host_port("[fe80::1]:9000")?, ("fe80::1".to_owned(), Some(9000)));
/// assert_eq!(split_host_port("fe80::1")?, ("fe80::1".to_owned(), None));
/// assert!(split_host_port("db1:http").is_err());
/// # Ok::<(), String>(())
/// ```
pub fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("{p:?} in {s:?} is not a port number"));
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| format!("{s:?} lacks the closing ]"))?;
        return match after {
            "" => Ok((host.to_owned(), None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host.to_owned(), Some(port(p)?))),
                None => Err(format!("{s:?}: expected :PORT after ]")),
            },
        };
    }
    match s.split_once(':') {
        Some((host, p)) if !p.contains(':') => Ok((host.to_owned(), Some(port(p)?))),
        _ => Ok((s.to_owned(), None)),
    }
}

/// The exit status for a failed client call (see [`TOP_LEVEL_HELP`]).
pub(crate) fn exit_status(e: &Error) -> i32 {
    match e.kind() {
        ErrorKind::InvalidName | ErrorKind::Server(ErrorCode::BadName) => EXIT_DATA,
        ErrorKind::Io
        | ErrorKind::ConnectionLost
        | ErrorKind::Server(ErrorCode::ShuttingDown | ErrorCode::LimitExceeded) => EXIT_UNAVAILABLE,
        ErrorKind::Server(ErrorCode::AuthRequired | ErrorCode::AuthFailed) => EXIT_NO_PERM,
        ErrorKind::Protocol => EXIT_PROTOCOL,
        _ => EXIT_SOFTWARE,
    }
}

/// Prints a failed call's error and returns its exit status.
pub(crate) fn report(e: &Error) -> i32 {
    eprintln!("officer: {e}");
    exit_status(e)
}

/// A lock name for messages: quoted, and cut to its first bytes and length when long.
pub(crate) use crate::client::shown_name;

/// The client's secret from `--auth-file`, refused when unreadable (66) or too short to be any
/// server's (78).
fn client_secret(path: &std::path::Path) -> Result<Vec<u8>, (i32, String)> {
    let secret = read_secret(path).map_err(|e| (EXIT_NO_INPUT, format!("--auth-file: {e}")))?;
    if secret.len() < MIN_SECRET_LEN {
        return Err((
            EXIT_CONFIG,
            format!(
                "--auth-file {} holds a secret of {} bytes; officer secrets are at least {MIN_SECRET_LEN} bytes, so it cannot be the server's",
                path.display(),
                secret.len()
            ),
        ));
    }
    Ok(secret)
}

/// `officer lock NAME [OPTIONS] -- COMMAND [ARGS...]`.
///
/// ```
/// # use clap::Parser;
/// # #[derive(Parser)] #[command(disable_help_flag = true)]
/// # struct Cli { #[command(subcommand)] command: officer::cli::ClientCommand }
/// use officer::cli::ClientCommand;
/// let Cli { command: ClientCommand::Lock(args) } = Cli::parse_from(["officer", "lock", "-w", "2.5", "deploy", "--", "./deploy.sh"]) else { panic!() };
/// assert_eq!((args.name.as_str(), args.command.len()), ("deploy", 1));
/// ```
#[derive(clap::Args, Debug)]
pub struct LockArgs {
    /// The lock to hold while COMMAND runs.
    pub name: String,
    /// Give up after waiting this many seconds (fractions allowed) [default: wait forever].
    #[arg(short = 'w', long, value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<Duration>,
    /// Fail at once if the lock is held (same as -w 0).
    #[arg(short = 'n', long, conflicts_with = "timeout")]
    pub nonblock: bool,
    /// Do not queue when holder + waiters already number N.
    #[arg(long, value_name = "N")]
    pub queue_max: Option<u32>,
    /// Take a shared lock (a reader's, like flock -s): shared holders run together, never
    /// beside an exclusive one.
    #[arg(short = 's', long, conflicts_with = "permits")]
    pub shared: bool,
    /// Take K permits of a counting semaphore of --limit N permits.
    #[arg(long, value_name = "K", requires = "limit")]
    pub permits: Option<u32>,
    /// The semaphore's number of permits (every user of the name must give the same N).
    #[arg(long, value_name = "N", requires = "permits")]
    pub limit: Option<u32>,
    /// Hold the lock on a lease of this many seconds, renewed while COMMAND runs: if officer
    /// stops renewing (it hangs, or the network does), the server frees the lock itself.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub lease: Option<Duration>,
    /// End the hold after this many seconds whatever the renewals (the lock is then lost).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub max_hold: Option<Duration>,
    /// After the hold ends abnormally, keep the name unavailable this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub lock_delay: Option<Duration>,
    /// Exit status when the lock is busy, times out, or its queue is full.
    #[arg(short = 'E', long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(0..=255))]
    pub conflict_exit_code: i32,
    /// Send SIGTERM to COMMAND as soon as the lock is lost (the connection broke, or the
    /// server ended the lease or hold).
    #[arg(long)]
    pub kill_on_loss: bool,
    /// Keep the lock across a lost connection for this long (`10`, `10s`, `2.5s`, `500ms`):
    /// officer reconnects and resumes its session while COMMAND runs, and the lock is lost only
    /// if that fails within the grace. Needs a server started with `--max-session-grace`
    /// (which caps it); one server (or one cluster, `--cluster`), not a list of shards.
    #[arg(long, value_name = "DURATION", value_parser = parse_grace)]
    pub session_grace: Option<Duration>,
    /// While waiting with --session-grace: if the lock's turn comes while the connection is
    /// lost, let the next waiter have it instead (officer then exits with the conflict status,
    /// without running COMMAND), rather than having it held for a client that may be gone.
    #[arg(long, requires = "session_grace")]
    pub skip_while_detached: bool,
    /// Run this shell command line with `sh -c` instead of COMMAND (as flock(1) -c).
    #[arg(short = 'c', long = "command", value_name = "SHELL_COMMAND", conflicts_with = "command")]
    pub shell_command: Option<OsString>,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The command to run and its arguments (after `--`, or after NAME and the options).
    #[arg(
        required_unless_present = "shell_command",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
    #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
    help: Option<bool>,
}

/// `officer locks [PREFIX]`.
///
/// ```
/// # use clap::Parser;
/// # #[derive(Parser)] #[command(disable_help_flag = true)]
/// # struct Cli { #[command(subcommand)] command: officer::cli::ClientCommand }
/// use officer::cli::ClientCommand;
/// let Cli { command: ClientCommand::Locks(args) } = Cli::parse_from(["officer", "locks", "jobs/", "--json"]) else { panic!() };
/// assert!(args.json && args.prefix == "jobs/");
/// ```
#[derive(clap::Args, Debug)]
pub struct LocksArgs {
    /// Only locks whose name starts with PREFIX.
    #[arg(default_value = "")]
    pub prefix: String,
    /// At most N entries (0: the server's default limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show each holder's mode and fencing token, each waiter's mode, and a semaphore's
    /// permits in use of its limit (one server at a time).
    #[arg(short = 'l', long)]
    pub detail: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
    help: Option<bool>,
}

/// `officer connections [PREFIX]`.
///
/// ```
/// # use clap::Parser;
/// # #[derive(Parser)] #[command(disable_help_flag = true)]
/// # struct Cli { #[command(subcommand)] command: officer::cli::ClientCommand }
/// use officer::cli::ClientCommand;
/// let Cli { command: ClientCommand::Connections(args) } = Cli::parse_from(["officer", "connections", "10.0.0.7:"]) else { panic!() };
/// assert_eq!(args.prefix, "10.0.0.7:");
/// ```
#[derive(clap::Args, Debug)]
pub struct ConnectionsArgs {
    /// Only connections whose label (ip:port, unix:ID) starts with PREFIX.
    #[arg(default_value = "")]
    pub prefix: String,
    /// At most N entries (0: the server's default limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show each connection's id (what `officer kick` takes), each grant's mode, permits and
    /// fencing token, and each wait's mode (one server at a time).
    #[arg(short = 'l', long)]
    pub detail: bool,
    /// List the detached sessions instead (their connection was lost; a resume may still take
    /// them over): session id, the label they had, holds, waits, frames kept for the replay,
    /// and the grace left, soonest end first. PREFIX filters their labels (one server at a time).
    #[arg(short = 'S', long, conflicts_with = "detail")]
    pub sessions: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
    help: Option<bool>,
}

/// `officer stats [PREFIX]`.
///
/// ```
/// # use clap::Parser;
/// # #[derive(Parser)] #[command(disable_help_flag = true)]
/// # struct Cli { #[command(subcommand)] command: officer::cli::ClientCommand }
/// use officer::cli::ClientCommand;
/// let Cli { command: ClientCommand::Stats(args) } = Cli::parse_from(["officer", "stats", "--json"]) else { panic!() };
/// assert!(args.json);
/// ```
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Only counters whose key starts with PREFIX.
    #[arg(default_value = "")]
    pub prefix: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
    help: Option<bool>,
}

/// `officer ping`.
///
/// ```
/// # use clap::Parser;
/// # #[derive(Parser)] #[command(disable_help_flag = true)]
/// # struct Cli { #[command(subcommand)] command: officer::cli::ClientCommand }
/// use officer::cli::ClientCommand;
/// let Cli { command: ClientCommand::Ping(args) } = Cli::parse_from(["officer", "ping", "-c", "3"]) else { panic!() };
/// assert_eq!(args.count, 3);
/// ```
#[derive(clap::Args, Debug)]
pub struct PingArgs {
    /// Number of pings to send.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[arg(long, action = clap::ArgAction::Help, help = "Print help")]
    help: Option<bool>,
}

/// Runs one client subcommand and returns the process exit status.
///
/// ```no_run
/// use clap::Parser;
/// # #[derive(Parser)] #[command(disable_help_flag = true)]
/// # struct Cli { #[command(subcommand)] command: officer::cli::ClientCommand }
/// let cli = Cli::parse_from(["officer", "ping"]);
/// std::process::exit(officer::cli::run(cli.command));
/// ```
pub fn run(cmd: ClientCommand) -> i32 {
    match cmd {
        ClientCommand::Lock(args) => lock::run(args),
        ClientCommand::Locks(args) => show::locks(args),
        ClientCommand::Connections(args) => show::connections(args),
        ClientCommand::Stats(args) => show::stats(args),
        ClientCommand::Ping(args) => show::ping(args),
        ClientCommand::Top(args) => top::run(args),
        ClientCommand::Check(args) => show::check(args),
        ClientCommand::Release(args) => admin::release(args),
        ClientCommand::Kick(args) => admin::kick(args),
    }
}

/// The secret in `path`, without one trailing newline (`officer run --auth-file` and every
/// client subcommand read it the same way).
///
/// ```
/// let dir = std::env::temp_dir().join(format!("officer-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(dir.join("s"), "secret\n").unwrap();
/// assert_eq!(officer::cli::read_secret(&dir.join("s")).unwrap(), b"secret");
/// ```
pub fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut secret =
        std::fs::read(path).map_err(|e| format!("cannot read auth file {}: {e}", path.display()))?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    Ok(secret)
}

/// Seconds as a decimal number (`0.5`, `10`), not negative.
/// A duration in seconds, with an optional `s` or `ms` unit: `10`, `10s`, `2.5s`, `500ms`.
fn parse_grace(s: &str) -> Result<Duration, String> {
    match s.strip_suffix("ms") {
        Some(ms) => parse_secs(ms).map(|d| d / 1000).map_err(|_| format!("{s:?} is not a duration")),
        None => parse_secs(s.strip_suffix('s').unwrap_or(s)).map_err(|_| format!("{s:?} is not a duration")),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a usable number of seconds"))
}

#[cfg(test)]
mod tests;
