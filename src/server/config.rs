//! Server configuration: where to listen and every limit, with the defaults README documents.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::locks::TableLimits;
use crate::protocol::{DEFAULT_MAX_FRAME, DEFAULT_MAX_NAME};

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    /// A UNIX stream socket; a stale file at the path is replaced, and removed on clean exit.
    Unix(PathBuf),
}

/// Mode and group applied to a UNIX socket file as it is created; `None` keeps what the
/// process umask and user give (0755 under the usual umask: no one else can connect).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketPerms {
    /// Permission bits, e.g. `0o660`.
    pub mode: Option<u32>,
    /// Group id the file is handed to (the server must be a member, or root).
    pub group: Option<u32>,
}

/// Everything `officer run` can set. `Config::default()` listens on 0.0.0.0:11500.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    /// Close a connection that sent nothing for this long (its locks are released).
    pub max_idle: Option<Duration>,
    /// Clamped at start to the open-file limit minus a reserve.
    pub max_connections: usize,
    /// Largest frame (length prefix value) accepted after the handshake.
    pub max_frame: u32,
    pub max_name: u32,
    /// Bytes of pending output after which a connection that does not read is closed.
    pub max_output: usize,
    pub table: TableLimits,
    /// Fencing-token reservations survive restarts here; `None` starts tokens at 1.
    pub state_file: Option<PathBuf>,
    /// Written after the listener is bound, removed on clean exit.
    pub pid_file: Option<PathBuf>,
    /// Log lock state and rates at info level this often.
    pub stats_interval: Option<Duration>,
    /// Install SIGTERM/SIGINT handlers (the binary does; embedded servers and tests do not).
    pub handle_signals: bool,
    /// Serve clients of the original JSON-lines protocol on the same port.
    pub compat: bool,
    /// A second listener where JSON-lines clients are served without the secret (PROTOCOL.md
    /// §7); binary clients there follow the main port's rules. `None` = off.
    pub compat_listen: Option<Listen>,
    /// Add the fencing token to every JSON `acquired` / `already_acquired` reply, not only to
    /// those of lock commands that ask with `"token": true`.
    pub json_tokens: bool,
    /// Permissions of every UNIX socket file the server creates.
    pub socket_perms: SocketPerms,
    /// Accepts per wake-up, so a connection storm cannot starve connected clients.
    pub accepts_per_wakeup: usize,
    /// Requests served per connection per wake-up, so one busy client cannot starve the rest.
    pub requests_per_wakeup: usize,
    /// How long a graceful shutdown waits for output to drain.
    pub drain_timeout: Duration,
    /// Serve Prometheus metrics at `http://ADDR/metrics`; `None` = off.
    pub metrics_addr: Option<SocketAddr>,
    /// Per-lock series (by name) for this many top locks at `/metrics`; 0 = none (the default,
    /// so lock names never become an unbounded label set). At most 100.
    pub metrics_per_lock: u32,
    /// Shared secret clients must present (AUTH) right after the handshake; `None` = open.
    pub auth_secret: Option<Vec<u8>>,
    /// A connection not authenticated this long after it was accepted is closed.
    pub auth_timeout: Duration,
    /// Largest frame accepted before authentication (HELLO and AUTH are small).
    pub pre_auth_max_frame: u32,
    /// The secret of ADMIN_AUTH, which gives a connection admin rights (KICK, REVOKE);
    /// `None`: only the server's own user on its UNIX socket has them (PROTOCOL.md §6.12).
    pub admin_secret: Option<Vec<u8>>,
    /// Longest grace a resumable session gets (SESSION_OPEN asks, this clamps; PROTOCOL.md
    /// §6.14); zero, the default, opens no session, so a lost connection releases at once.
    pub max_session_grace: Duration,
    /// Cluster mode (`officer run --cluster`): the node, its peers and its data directory;
    /// `None` is a single server.
    #[cfg(feature = "cluster")]
    pub cluster: Option<super::ClusterConfig>,
}

impl Config {
    /// Shortest secret `--auth-file` accepts.
    pub const MIN_SECRET_LEN: usize = 32;
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Listen::Tcp(SocketAddr::from(([0, 0, 0, 0], 11500))),
            max_idle: Some(Duration::from_secs(60)),
            max_connections: 100_000,
            max_frame: DEFAULT_MAX_FRAME,
            max_name: DEFAULT_MAX_NAME,
            max_output: 4 * 1024 * 1024,
            table: TableLimits {
                max_locks_per_conn: 0,
                max_waiters_per_lock: 0,
                list_max_default: 10_000,
                ..TableLimits::default()
            },
            state_file: None,
            pid_file: None,
            stats_interval: None,
            handle_signals: false,
            compat: true,
            compat_listen: None,
            json_tokens: false,
            socket_perms: SocketPerms::default(),
            accepts_per_wakeup: 256,
            requests_per_wakeup: 4096,
            drain_timeout: Duration::from_secs(2),
            metrics_addr: None,
            metrics_per_lock: 0,
            auth_secret: None,
            auth_timeout: Duration::from_secs(5),
            pre_auth_max_frame: 512,
            admin_secret: None,
            max_session_grace: Duration::ZERO,
            #[cfg(feature = "cluster")]
            cluster: None,
        }
    }
}
