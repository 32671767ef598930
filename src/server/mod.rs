//! The server: a single-threaded mio event loop, the only code that touches sockets, signals,
//! files and the clock.
//!
//! One wake-up: accept (bounded), read every ready connection (connections that hung up
//! first, so a waiter that disconnected in the same wake-up as a release is never granted),
//! decode frames and drive the lock table, run a bounded batch of released holds and of
//! expired timers, then flush every connection that got output with one write each. Work left
//! over by a batch makes the next poll return at once, so it goes on next turn, after everyone
//! else was served (README "Limits and guarantees").
//!
//! A connection's protocol (phases, JSON sniff, frame limits, handshake, AUTH, idle and auth
//! deadlines, reply encoding) is `session/`, with no socket or clock; `dispatch.rs` drives a
//! session over what was read and turns its requests into lock-table calls; `connections.rs`
//! owns the sockets' bookkeeping (slab, dirty / backlog / closing lists, interest, writes,
//! reaping); `io.rs` accepts, reads and closes. `loopback.rs` hosts sessions in process for
//! the connection fuzz target.

mod admin;
mod clock;
#[cfg(feature = "cluster")]
mod cluster;
mod config;
mod conn;
mod connections;
pub mod daemon;
mod dispatch;
mod event_loop;
mod io;
#[doc(hidden)]
pub mod loopback;
mod metrics;
pub(crate) mod net;
pub mod pidfile;
mod resume;
mod routes;
mod session;
mod shutdown;
mod snapshot;
mod state_file;
mod stats;
mod sys;
mod timers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::{Poll, Token, Waker};

use crate::locks::{Command, LockTable, Output, SessionId};
use crate::wheel::{Tick, Wheel};

#[cfg(feature = "cluster")]
pub use cluster::{ClusterConfig, Member};
pub use config::{Config, Listen, SocketPerms};
#[doc(hidden)]
pub use loopback::Loopback;
pub use metrics::MAX_PER_LOCK as MAX_METRICS_PER_LOCK;
pub use net::{parse_socket_mode, resolve_group, BoundAddr};
pub use state_file::{Corruption, StateError};
pub use sys::raise_fd_limit;

use connections::Connections;
use net::Listener;
use snapshot::{AcquireRate, ServerStats};
use state_file::StateFile;
use timers::ServerTimers;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
const METRICS_LISTENER: Token = Token(usize::MAX - 4);
const COMPAT_LISTENER: Token = Token(usize::MAX - 5);

/// Errors that stop the server from starting or running.
#[derive(Debug)]
pub enum ServerError {
    /// The listener could not be bound.
    Bind(std::io::Error),
    /// A listener could not be bound: which one ("lock port", "compat port", "metrics port"),
    /// at which address, and why; see [`ServerError::bind_at`].
    BindAt { listener: &'static str, addr: String, error: std::io::Error },
    /// The state file is unreadable, corrupt, not a regular file or cannot be written.
    State(StateError),
    /// The pid file is held by another server or cannot be written.
    PidFile(std::io::Error),
    /// Any other I/O failure of the server itself (poll, signals).
    Io(std::io::Error),
    /// Cluster mode could not start or must stop: the data directory (corrupt, another
    /// cluster's), the peer port, or a fatal raft error.
    #[cfg(feature = "cluster")]
    Cluster(String),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Bind(e) => write!(f, "cannot listen: {e}"),
            ServerError::BindAt { listener, addr, error } => {
                write!(f, "cannot listen on {addr} ({listener}): {error}")
            }
            ServerError::State(e) => write!(f, "{e}"),
            ServerError::PidFile(e) => write!(f, "pid file: {e}"),
            ServerError::Io(e) => write!(f, "server I/O error: {e}"),
            #[cfg(feature = "cluster")]
            ServerError::Cluster(e) => write!(f, "cluster: {e}"),
        }
    }
}

impl ServerError {
    /// A bind failure that names the listener and its address, so an operator running several
    /// listeners (or several servers) sees which one failed.
    pub fn bind_at(
        listener: &'static str,
        addr: impl std::fmt::Display,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let addr = addr.to_string();
        move |error| ServerError::BindAt { listener, addr, error }
    }
}

impl std::error::Error for ServerError {}

impl From<std::io::Error> for ServerError {
    fn from(e: std::io::Error) -> Self {
        ServerError::Io(e)
    }
}

/// Asks a running server to shut down gracefully from another thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// A bound server, ready to `run`.
pub struct Server {
    poll: Poll,
    listener: Option<Listener>,
    local: BoundAddr,
    /// `--compat-listen`: JSON-lines clients are served here without the secret.
    compat_listener: Option<Listener>,
    compat_local: Option<BoundAddr>,
    conns: Connections,
    table: LockTable,
    outputs: Vec<Output>,
    /// Where the table's outputs go: each live session's slab key.
    routes: routes::Routes,
    idle: Wheel<conn::ConnKey>,
    scratch: Vec<u8>,
    /// Where JSON request lines are parsed (each is served before the next is read).
    line_scratch: session::Scratch,
    config: Config,
    start: clock::Clock,
    /// The open descriptor count STATS, `/metrics` and the stats line show, and when it was
    /// read: counting /proc/self/fd is O(descriptors) (about 5-15 ms at 10,000 connections),
    /// so it is read at most once a second (`snapshot::OPEN_FDS_MAX_AGE_MS`).
    open_fds: std::cell::Cell<Option<(Tick, Option<u64>)>>,
    next_serial: u64,
    state: Option<StateFile>,
    stats: ServerStats,
    acquire_rate: AcquireRate,
    shutdown_flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    accept_pending: bool,
    /// Housekeeping, the stats line, the accept back-off and the watchdog ping.
    timers: ServerTimers,
    pid_file: Option<pidfile::PidFile>,
    metrics: Option<metrics::Metrics>,
    metrics_addr: Option<std::net::SocketAddr>,
    /// Cluster mode: the raft node that owns the replicated table, and its peers.
    #[cfg(feature = "cluster")]
    cluster: Option<Box<cluster::Driver>>,
    /// What a cluster turn hands back (kept for its capacity).
    #[cfg(feature = "cluster")]
    cluster_events: Vec<crate::cluster::Event>,
}

impl Server {
    /// Binds the listener and reserves fencing tokens; the server accepts nothing until `run`.
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        // The pid file first: a second server on the same file must not even bind the port.
        let pid_file = config.pid_file.as_deref().map(pidfile::PidFile::acquire).transpose();
        let pid_file = pid_file.map_err(ServerError::PidFile)?;
        match Self::bind_after_pid_file(config) {
            Ok(mut server) => {
                server.pid_file = pid_file;
                Ok(server)
            }
            Err(e) => {
                // A server that never ran must not leave a pid file that looks stale.
                if let Some(pid_file) = pid_file {
                    pid_file.remove();
                }
                Err(e)
            }
        }
    }

    fn bind_after_pid_file(mut config: Config) -> Result<Server, ServerError> {
        config.max_connections = sys::clamp_connections(config.max_connections);
        let (state, first_token) = match &config.state_file {
            Some(path) => {
                let (state, first) = StateFile::open(path).map_err(ServerError::State)?;
                (Some(state), first)
            }
            None => (None, 1),
        };
        let (what, where_) = match &config.listen {
            Listen::Tcp(addr) => ("lock port", addr.to_string()),
            Listen::Unix(path) => ("lock socket", path.display().to_string()),
        };
        let mut listener = Listener::bind(&config.listen, config.socket_perms)
            .map_err(ServerError::bind_at(what, &where_))?;
        let local = listener.local_addr().map_err(ServerError::bind_at(what, &where_))?;
        let poll = Poll::new()?;
        listener.register(poll.registry(), LISTENER)?;
        let compat_listener = match &config.compat_listen {
            Some(listen) => {
                // Named, so a failure is not mistaken for one of the lock port.
                let (what, where_) = match listen {
                    Listen::Tcp(addr) => ("compat port", addr.to_string()),
                    Listen::Unix(path) => ("compat socket", path.display().to_string()),
                };
                let named = ServerError::bind_at(what, &where_);
                let mut compat = Listener::bind(listen, config.socket_perms).map_err(named)?;
                compat.register(poll.registry(), COMPAT_LISTENER)?;
                let local = compat.local_addr().map_err(ServerError::bind_at(what, &where_))?;
                Some((compat, local))
            }
            None => None,
        };
        let (compat_listener, compat_local) = compat_listener.unzip();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let metrics = match config.metrics_addr {
            Some(addr) => {
                let mut listener =
                    mio::net::TcpListener::bind(addr).map_err(ServerError::bind_at("metrics port", addr))?;
                poll.registry().register(&mut listener, METRICS_LISTENER, mio::Interest::READABLE)?;
                Some(metrics::Metrics::new(listener))
            }
            None => None,
        };
        let metrics_addr = metrics.as_ref().and_then(metrics::Metrics::local_addr);
        #[cfg(feature = "cluster")]
        let cluster = match &config.cluster {
            Some(cluster) => Some(Box::new(
                cluster::Driver::open(cluster, config.table, poll.registry())
                    .map_err(ServerError::Cluster)?,
            )),
            None => None,
        };
        let signals = if config.handle_signals { Some(sys::register_signals(&poll, SIGNALS)?) } else { None };
        Ok(Server {
            poll,
            listener: Some(listener),
            local,
            compat_listener,
            compat_local,
            conns: Connections::new(),
            table: LockTable::new(first_token, config.table),
            outputs: Vec::new(),
            routes: routes::Routes::default(),
            idle: Wheel::new(),
            scratch: vec![0; 64 * 1024],
            line_scratch: session::Scratch::default(),
            start: clock::Clock::start(),
            open_fds: std::cell::Cell::new(None),
            next_serial: 1,
            state,
            stats: ServerStats::default(),
            acquire_rate: AcquireRate::default(),
            shutdown_flag: Arc::new(AtomicBool::new(false)),
            waker,
            signals,
            accept_pending: false,
            timers: ServerTimers::new(
                config.stats_interval.map(|d| d.as_millis() as Tick),
                sys::watchdog_interval(),
            ),
            pid_file: None,
            metrics,
            metrics_addr,
            #[cfg(feature = "cluster")]
            cluster,
            #[cfg(feature = "cluster")]
            cluster_events: Vec::new(),
            config,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> &BoundAddr {
        &self.local
    }

    /// The effective configuration (limits after clamping).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the `--compat-listen` listener is bound, when enabled (port 0 resolved).
    pub fn compat_addr(&self) -> Option<&BoundAddr> {
        self.compat_local.as_ref()
    }

    /// Where `/metrics` is served, when enabled (port 0 resolved).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { flag: self.shutdown_flag.clone(), waker: self.waker.clone() }
    }

    fn now(&self) -> Tick {
        self.start.ticks()
    }

    /// The lock table: the server's own, or in cluster mode the replicated one as far as this
    /// node has applied the log.
    #[inline]
    fn table(&self) -> &LockTable {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &self.cluster {
            return cluster.table();
        }
        &self.table
    }

    /// Applies a command to the table, its outputs left in `self.outputs`; in cluster mode
    /// proposes it instead, and its outputs come when it is committed (`cluster_turn`).
    #[inline]
    fn apply(&mut self, now: Tick, command: Command) {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &mut self.cluster {
            cluster.propose(now, command);
            return;
        }
        self.table.apply(now, &command, &mut self.outputs);
    }

    /// The id of a new connection's session (in cluster mode, unique across leaders).
    fn next_session(&mut self) -> SessionId {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &mut self.cluster {
            return cluster.next_session();
        }
        self.table.next_session()
    }
}
