//! The `officer` binary's subcommands, as a library so `main.rs` only parses arguments.
//!
//! - this file: the client subcommands' clap definitions ([`ClientCommand`], [`ConnectArgs`])
//!   and [`run`], on top of [`crate::client`].
//! - `lock`: `officer lock NAME -- COMMAND`, flock(1) across hosts.
//! - `show`: the listings, as aligned tables or `--json`; `top`: the live view.
//! - [`serve`]: `officer run|start|stop|restart|status`, flags to [`crate::server::Config`].
//! - [`bench`]: `officer bench`, flags and reports around [`crate::bench`].
//!
//! `-h` means `--host` here, as in `officer run`, so every subcommand turns clap's help flag
//! off and offers `--help` alone.

pub mod bench;
mod lock;
pub mod serve;
mod show;
mod top;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::client::{Client, ClientBuilder, DEFAULT_HOST, DEFAULT_PORT};

/// Exit status when the server cannot be reached or answers with an error (EX_UNAVAILABLE).
///
/// ```
/// // `officer ping` in a health check: anything but 0 is unhealthy, 69 means unreachable.
/// assert_eq!(officer::cli::EXIT_UNAVAILABLE, 69);
/// ```
pub const EXIT_UNAVAILABLE: i32 = 69;
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
/// assert_eq!((args.connect.host.as_str(), args.connect.port), ("10.0.0.5", 9999));
/// ```
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Server host name or address.
    #[arg(short = 'h', long, default_value = DEFAULT_HOST)]
    pub host: String,
    /// Server TCP port.
    #[arg(short = 'p', long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
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
    /// Fails only when the `--auth-file` cannot be read.
    pub fn builder(&self) -> Result<ClientBuilder, String> {
        let mut builder = match self.socket_type {
            SocketType::Tcp => Client::builder().host(&self.host).port(self.port),
            SocketType::Unix => Client::builder().unix_socket(&self.socket_file),
        };
        builder = builder.connect_timeout(self.connect_timeout);
        if let Some(ns) = &self.namespace {
            builder = builder.namespace(ns);
        }
        if let Some(path) = &self.auth_file {
            builder = builder.auth(read_secret(path)?);
        }
        Ok(builder)
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
        match self.socket_type {
            SocketType::Tcp => format!("{}:{}", self.host, self.port),
            SocketType::Unix => self.socket_file.display().to_string(),
        }
    }

    /// Connects with these flags, or prints why not and returns the exit status to use.
    fn connect_or_exit(&self) -> Result<Client, i32> {
        let builder = self.builder().map_err(|e| {
            eprintln!("officer: {e}");
            EXIT_UNAVAILABLE
        })?;
        // A command-line run is one session: a broken connection is reported, never replaced.
        builder.auto_reconnect(false).connect().map_err(|e| {
            eprintln!("officer: cannot connect to {}: {e}", self.describe());
            EXIT_UNAVAILABLE
        })
    }
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
    /// Exit status when the lock is busy, times out, or its queue is full.
    #[arg(short = 'E', long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(0..=255))]
    pub conflict_exit_code: i32,
    /// Send SIGTERM to COMMAND as soon as the lock is lost (the connection broke).
    #[arg(long)]
    pub kill_on_loss: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The command to run and its arguments (after `--`, or after NAME and the options).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
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
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a usable number of seconds"))
}

#[cfg(test)]
mod tests;
