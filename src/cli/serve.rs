//! The server-side subcommands: `officer run` (foreground, as under systemd) and background
//! mode (`start`, `stop`, `restart`, `status`). Their flags become a [`Config`]; everything
//! else is in [`crate::server`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use super::SocketType;
use crate::server::{daemon, Config, Listen, Server};

/// `-l/--log-level`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// The flags of `officer run` (and of `start`/`restart`, which take the same).
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Address (or host name) to listen on.
    #[arg(short = 'h', long, default_value = "0.0.0.0")]
    host: String,
    /// TCP port to listen on (0 picks a free port).
    #[arg(short, long, default_value_t = 11500)]
    port: u16,
    /// Listen on TCP or on a UNIX socket.
    #[arg(short = 'o', long, value_enum, default_value = "TCP", ignore_case = true)]
    socket_type: SocketType,
    /// UNIX socket path (a stale file is replaced, the file is removed on clean exit).
    #[arg(short = 'f', long, default_value = "/tmp/officer.sock")]
    socket_file: PathBuf,
    /// Log level.
    #[arg(short, long, value_enum, default_value = "error")]
    log_level: LogLevel,
    /// Log lock state and rates every 5 seconds (at info level).
    #[arg(short, long)]
    stats: bool,
    /// Write officer.pid into this directory.
    #[arg(short = 'd', long)]
    pid_dir: Option<PathBuf>,
    /// Close connections that sent nothing for this many seconds (0 = never).
    #[arg(short, long, default_value_t = 60)]
    max_idle: u64,
    /// Fencing-token state file [default: /var/lib/officer/officer.state as root, else
    /// $XDG_STATE_HOME/officer/officer.state, else ~/.local/state/officer/officer.state;
    /// with neither variable set the server refuses to start]. Each start reserves the next
    /// 2^32 tokens, so tokens jump by 2^32 per restart and never repeat.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Most simultaneous connections (clamped to the open-file limit).
    #[arg(long, default_value_t = 100_000)]
    max_connections: usize,
    /// Largest frame in bytes (64 to 16777215).
    #[arg(long, default_value_t = crate::protocol::DEFAULT_MAX_FRAME,
          value_parser = clap::value_parser!(u32).range(64..=crate::protocol::MAX_FRAME_CEILING as i64))]
    max_frame: u32,
    /// Longest lock name in bytes (at most 65535).
    #[arg(long, default_value_t = crate::protocol::DEFAULT_MAX_NAME,
          value_parser = clap::value_parser!(u32).range(1..=crate::protocol::MAX_NAME_CEILING as i64))]
    max_name: u32,
    /// Pending output bytes after which a client that does not read is closed.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_output: usize,
    /// Most locks held plus awaited by one connection (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    max_locks_per_conn: u32,
    /// Most waiters queued on one lock (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    max_waiters: u32,
    /// Do not serve clients of the original JSON-lines protocol.
    #[arg(long)]
    no_compat: bool,
    /// Largest frame accepted before a client has authenticated (with --auth-file).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(64..))]
    max_frame_pre_auth: u32,
    /// New connections accepted per turn of the event loop (the rest wait for the next turn).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    accepts_per_wakeup: u64,
    /// Requests served per connection per turn of the event loop, so one busy client cannot
    /// starve the others.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    requests_per_wakeup: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9150).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
    /// Also export the longest hold and queue depth of the top N locks by name at /metrics
    /// (0 = none: lock names are user data and an unbounded label set; at most 100).
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=crate::server::MAX_METRICS_PER_LOCK as i64))]
    metrics_per_lock: u32,
    /// Require clients to authenticate with the secret in this file (at least 32 bytes;
    /// a trailing newline is ignored). Never pass secrets in argv.
    #[arg(long)]
    auth_file: Option<PathBuf>,
    /// Also listen here for clients of the original JSON-lines protocol, served without the
    /// secret (binary clients there authenticate as on the main port): HOST:PORT, meant for
    /// loopback or a private network, or a UNIX socket path (anything with a '/').
    #[arg(long, value_name = "HOST:PORT|PATH", conflicts_with = "no_compat")]
    compat_listen: Option<String>,
    /// Add the fencing token ("token") to every JSON acquired/already_acquired reply, not only
    /// when the lock command asks with "token": true.
    #[arg(long)]
    json_tokens: bool,
    /// Permission bits (octal, e.g. 0660) of every UNIX socket the server creates.
    #[arg(long, value_name = "OCTAL", value_parser = crate::server::parse_socket_mode)]
    socket_mode: Option<u32>,
    /// Group (name or GID) of every UNIX socket the server creates.
    #[arg(long, value_name = "NAME|GID", value_parser = crate::server::resolve_group)]
    socket_group: Option<u32>,
    /// Give admin rights (officer kick, release --force) to clients that present the secret in
    /// this file (at least 32 bytes). Without it, only this user on the UNIX socket has them.
    #[arg(long, value_name = "PATH")]
    admin_file: Option<PathBuf>,
    /// Longest lock-delay, in milliseconds, a client may ask for (a longer one is refused).
    #[arg(long, value_name = "MS", default_value_t = crate::locks::MAX_LOCK_DELAY_MS)]
    max_lock_delay: u32,
    /// Longest grace, in milliseconds, a resumable session may ask for: its locks outlive a
    /// lost connection this long (PROTOCOL.md §6.14). 0, the default, opens no session.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    max_session_grace: u32,
    #[cfg(feature = "cluster")]
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// `officer run --cluster`: one member of a replicated cluster (docs/CLUSTER.md).
#[cfg(feature = "cluster")]
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Run as a member of a raft-replicated cluster (needs --node-id, --peer for every
    /// member, --data-dir); no state file: tokens come from the replicated log.
    #[arg(long, requires_all = ["node_id", "data_dir"])]
    cluster: bool,
    /// The cluster's id: nodes refuse peers of another.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "cluster")]
    cluster_id: u64,
    /// This node's id among the --peer entries.
    #[arg(long, value_name = "ID", requires = "cluster")]
    node_id: Option<u64>,
    /// A member, this node included: ID=PEER_HOST:PORT/CLIENT_HOST:PORT (repeat per member).
    /// This node listens for peers on its own PEER address; redirects name CLIENT addresses.
    #[arg(long = "peer", value_name = "ID=PEER/CLIENT", requires = "cluster")]
    peers: Vec<String>,
    /// Where this node keeps its raft log (created if missing).
    #[arg(long, value_name = "PATH", requires = "cluster")]
    data_dir: Option<PathBuf>,
    /// Milliseconds per raft tick: a leader is elected after 10 silent ticks.
    #[arg(long, value_name = "MS", default_value_t = 100, requires = "cluster",
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    tick_ms: u64,
    /// Least bytes of log applied between two snapshots of the table (the log is compacted
    /// to each snapshot); the interval also grows to twice the last snapshot's size.
    #[arg(long, value_name = "BYTES", default_value_t = crate::cluster::snapshot::SNAPSHOT_MIN_BYTES,
          requires = "cluster", value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_min_bytes: u64,
}

#[cfg(feature = "cluster")]
impl ClusterArgs {
    fn config(&self) -> Result<Option<crate::server::ClusterConfig>, String> {
        if !self.cluster {
            return Ok(None);
        }
        let mut members = std::collections::BTreeMap::new();
        for spec in &self.peers {
            let (id, member) = crate::server::ClusterConfig::parse_member(spec)?;
            if members.insert(id, member).is_some() {
                return Err(format!("--peer: node {id} is listed twice"));
            }
        }
        let config = crate::server::ClusterConfig {
            cluster_id: self.cluster_id,
            node_id: self.node_id.unwrap_or(0),
            members,
            data_dir: self.data_dir.clone().unwrap_or_default(),
            tick_ms: self.tick_ms,
            snapshot_min_bytes: self.snapshot_min_bytes,
        };
        config.validate()?;
        Ok(Some(config))
    }
}

/// Background-mode options beside the server flags.
#[derive(clap::Args, Debug)]
pub struct StartArgs {
    #[command(flatten)]
    run: RunArgs,
    // The help texts are given apart: rustdoc would read `<name>` as an HTML tag.
    /// Name of this server: its files are `NAME.pid`, `NAME.addr` and `NAME.output`.
    #[arg(
        long,
        default_value = "officer",
        help = "Name of this server: its files are <name>.pid, <name>.addr and <name>.output"
    )]
    name: String,
    /// Directory of `NAME.output` (default: the `-d` directory; without `-d`, `/var/log` as
    /// root, else the pid directory).
    #[arg(
        long,
        help = "Directory of <name>.output [default: the -d directory, as the original's daemons gem \
                does; without -d: /var/log as root, else the pid directory]"
    )]
    log_dir: Option<PathBuf>,
}

/// The flags of `officer stop`, `status` and `restart`: every flag of `start`, because the
/// original's daemons gem hands the app's flags (`officer stop -- -d DIR`) to every command and
/// scripts rely on that to find the pid file. Only `-d`, `--name` and `--log-dir` matter to
/// `stop` and `status`; `restart` starts with all of them.
#[derive(clap::Args, Debug)]
pub struct DaemonArgs {
    #[command(flatten, next_help_heading = "Flags of start (accepted by every daemon command)")]
    start: StartArgs,
    /// Seconds `stop` (and `restart`) wait after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

/// `officer start`: a detached server; must be called while the process is single-threaded.
pub fn start(mut args: StartArgs) -> i32 {
    let paths = match start_paths(&args) {
        Ok(paths) => paths,
        Err(code) => return code,
    };
    // Named servers on one box must not share a token reservation.
    if args.run.state_file.is_none() && args.name != "officer" {
        match default_state_file() {
            Ok(path) => args.run.state_file = Some(path.with_file_name(format!("{}.state", args.name))),
            Err(e) => {
                eprintln!("officer: {e}");
                return 1;
            }
        }
    }
    let mut config = match config_from(&args.run) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("officer: {e}");
            return 1;
        }
    };
    absolutize(&mut config);
    let level = effective_level(&args.run);
    daemon::start(config, &paths, move || init_logging(level))
}

/// The files of one background server. The output log sits next to the pid file whenever `-d`
/// names a directory (as the daemons gem's `:dir` does), so servers with their own pid
/// directories never interleave their output in one file.
///
/// Fails (printing why; the exit status is returned) when no `-d` is given and the default
/// pid directory is not safe to use.
fn start_paths(args: &StartArgs) -> Result<daemon::DaemonPaths, i32> {
    let pid_dir = match &args.run.pid_dir {
        Some(dir) => dir.clone(),
        None => daemon::default_pid_dir().map_err(|e| {
            eprintln!("officer: {e}");
            1
        })?,
    };
    let log_dir = match (&args.log_dir, &args.run.pid_dir) {
        (Some(dir), _) | (None, Some(dir)) => dir.clone(),
        (None, None) => daemon::default_log_dir(&pid_dir),
    };
    Ok(daemon::DaemonPaths::new(&args.name, &absolute(&pid_dir), &absolute(&log_dir)))
}

/// The detached server must not depend on the shell's working directory for its files.
fn absolutize(config: &mut Config) {
    if let Some(p) = &mut config.state_file {
        *p = absolute(p);
    }
    if let Listen::Unix(p) = &mut config.listen {
        *p = absolute(p);
    }
    if let Some(Listen::Unix(p)) = &mut config.compat_listen {
        *p = absolute(p);
    }
}

fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// `officer run`: the server in the foreground until SIGTERM/SIGINT; the process exit code.
pub fn run(args: RunArgs) -> i32 {
    init_logging(effective_level(&args));
    let config = match config_from(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("officer: {e}");
            return 1;
        }
    };
    let server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            // Once: the log also goes to stderr, so logging it as well would print it twice.
            eprintln!("officer: {e}");
            return 1;
        }
    };
    let mut ready = format!("officer listening on {}\n", server.local_addr());
    if let Some(addr) = server.compat_addr() {
        ready.push_str(&format!("officer compat listener on {addr}\n"));
    }
    if let Some(addr) = server.metrics_addr() {
        ready.push_str(&format!("officer metrics on http://{addr}/metrics\n"));
    }
    // One write, and its failure ignored: a supervisor that reads the first line and closes
    // the pipe (or no stdout at all) must not stop the server, as `println!` would by
    // panicking on EPIPE.
    let mut stdout = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut stdout, ready.as_bytes())
        .and_then(|()| std::io::Write::flush(&mut stdout));
    drop(stdout);
    match server.run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("officer: {e}");
            1
        }
    }
}

fn config_from(args: &RunArgs) -> Result<Config, String> {
    let auth_secret = args.auth_file.as_deref().map(read_secret).transpose()?;
    let tcp = resolve(&args.host, args.port)?;
    if auth_secret.is_none() && args.socket_type == SocketType::Tcp && !tcp.ip().is_loopback() {
        let msg = format!(
            "WARNING: listening on {} without authentication: anyone who can reach this port can take and release locks; use --auth-file or a loopback/UNIX address",
            tcp.ip()
        );
        warn_once(&msg);
    }
    let compat_listen = args.compat_listen.as_deref().map(compat_listen).transpose()?;
    let mut config = Config {
        compat_listen,
        json_tokens: args.json_tokens,
        socket_perms: crate::server::SocketPerms { mode: args.socket_mode, group: args.socket_group },
        listen: match args.socket_type {
            SocketType::Tcp => Listen::Tcp(tcp),
            SocketType::Unix => Listen::Unix(args.socket_file.clone()),
        },
        max_idle: (args.max_idle > 0).then(|| Duration::from_secs(args.max_idle)),
        max_connections: args.max_connections,
        max_frame: args.max_frame,
        max_name: args.max_name,
        max_output: args.max_output,
        state_file: match &args.state_file {
            _ if clustered(args) => None,
            Some(path) => Some(path.clone()),
            None => Some(default_state_file()?),
        },
        pid_file: args.pid_dir.as_ref().map(|d| d.join("officer.pid")),
        stats_interval: args.stats.then(|| Duration::from_secs(5)),
        handle_signals: true,
        compat: !args.no_compat,
        auth_secret,
        metrics_addr: args.metrics_addr,
        metrics_per_lock: args.metrics_per_lock,
        pre_auth_max_frame: args.max_frame_pre_auth,
        accepts_per_wakeup: args.accepts_per_wakeup as usize,
        requests_per_wakeup: args.requests_per_wakeup as usize,
        admin_secret: args.admin_file.as_deref().map(read_secret).transpose()?,
        ..Config::default()
    };
    config.table.max_locks_per_conn = args.max_locks_per_conn;
    config.table.max_waiters_per_lock = args.max_waiters;
    config.table.max_lock_delay_ms = args.max_lock_delay;
    config.max_session_grace = Duration::from_millis(args.max_session_grace.into());
    #[cfg(feature = "cluster")]
    {
        config.cluster = args.cluster.config()?;
    }
    Ok(config)
}

/// Cluster mode keeps no state file: fencing tokens come from the replicated log.
fn clustered(args: &RunArgs) -> bool {
    #[cfg(feature = "cluster")]
    return args.cluster.cluster;
    #[cfg(not(feature = "cluster"))]
    {
        let _ = args;
        false
    }
}

/// `--compat-listen`: a UNIX socket path (it has a '/') or HOST:PORT. The compat listener
/// never asks for the secret, so a TCP address other than loopback gets a warning.
fn compat_listen(spec: &str) -> Result<Listen, String> {
    if spec.contains('/') {
        return Ok(Listen::Unix(PathBuf::from(spec)));
    }
    let (host, port) = spec
        .rsplit_once(':')
        .ok_or_else(|| format!("--compat-listen {spec:?}: expected HOST:PORT or a socket path"))?;
    let port = port.parse().map_err(|_| format!("--compat-listen {spec:?}: bad port {port:?}"))?;
    let addr = resolve(host.trim_start_matches('[').trim_end_matches(']'), port)?;
    if !addr.ip().is_loopback() {
        let msg = format!(
            "WARNING: the compat listener on {addr} serves JSON clients without authentication: anyone who can reach it can take and release locks; bind it to loopback, a private network or a UNIX socket"
        );
        warn_once(&msg);
    }
    Ok(Listen::Tcp(addr))
}

/// A start-up warning, printed once: through the log when it shows warnings (it writes to
/// stderr, or the journal under systemd), else straight to stderr (at the default `-l error`,
/// and in `start` before the detached server's log exists).
fn warn_once(msg: &str) {
    if log::log_enabled!(log::Level::Warn) {
        log::warn!("{msg}");
    } else {
        eprintln!("officer: {msg}");
    }
}

/// Reads the server's shared secret (as the client subcommands do) and checks its length.
fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let secret = crate::cli::read_secret(path)?;
    if secret.len() < Config::MIN_SECRET_LEN {
        return Err(format!(
            "auth file {} holds {} bytes; the secret must be at least {} bytes",
            path.display(),
            secret.len(),
            Config::MIN_SECRET_LEN
        ));
    }
    Ok(secret)
}

/// The default `--state-file`: `/var/lib/officer/officer.state` as root, else
/// `$XDG_STATE_HOME/officer/officer.state` or `$HOME/.local/state/officer/officer.state`.
/// Never a temporary directory: it is world-writable and wiped on reboot, and tokens would
/// start again at 1. Relative or empty variables are ignored, as the XDG spec says.
fn default_state_file() -> Result<PathBuf, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/var/lib/officer/officer.state"));
    }
    let absolute_var = |name| std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute());
    absolute_var("XDG_STATE_HOME")
        .or_else(|| absolute_var("HOME").map(|h| h.join(".local/state")))
        .map(|base| base.join("officer/officer.state"))
        .ok_or_else(|| {
            "no default state file: neither XDG_STATE_HOME nor HOME is set to an absolute path; pass --state-file PATH (a file that survives reboots, so fencing tokens never repeat)".to_string()
        })
}

/// `-s` logs its line at info level, so it raises a quieter level to info (as the original's
/// `-l debug -s` implies, statistics are meant to be seen).
fn effective_level(args: &RunArgs) -> LogLevel {
    match (args.stats, args.log_level) {
        (true, LogLevel::Error | LogLevel::Warn) => LogLevel::Info,
        (_, level) => level,
    }
}

/// The first address `host:port` resolves to.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))
}

fn init_logging(level: LogLevel) {
    use simplelog::{ConfigBuilder, LevelFilter, WriteLogger};
    let filter = match level {
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
    };
    let config =
        ConfigBuilder::new().set_target_level(LevelFilter::Off).set_thread_level(LevelFilter::Off).build();
    let _ = WriteLogger::init(filter, config, std::io::stderr());
}

/// `officer stop`.
pub fn stop(args: &DaemonArgs) -> i32 {
    match start_paths(&args.start) {
        Ok(paths) => daemon::stop(&paths, Duration::from_secs(args.timeout)),
        Err(code) => code,
    }
}

/// `officer status`.
pub fn status(args: &DaemonArgs) -> i32 {
    match start_paths(&args.start) {
        Ok(paths) => daemon::status(&paths),
        // LSB: 4 = the status is unknown.
        Err(_) => 4,
    }
}

/// `officer restart`: stop (if running), then start.
pub fn restart(args: DaemonArgs) -> i32 {
    let paths = match start_paths(&args.start) {
        Ok(paths) => paths,
        Err(code) => return code,
    };
    match daemon::stop(&paths, Duration::from_secs(args.timeout)) {
        0 => start(args.start),
        code => code,
    }
}
