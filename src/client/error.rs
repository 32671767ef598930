//! The client's one error type: [`Error`], classified by [`ErrorKind`].
//!
//! The kinds mirror what a caller can do about a failure: retry later (timeout, queue full),
//! start over with a new connection (connection lost: every lock it held is gone), fix the call
//! (invalid name, lock not held) or report a bug (protocol). Lock refusals carry the lock's
//! queue, holder first, like the Ruby client's `LockTimeoutError` and `LockQueuedMaxError`.

use std::fmt;
use std::io;

use crate::protocol::{DecodeError, ErrorCode, LostReason};

/// A shorthand for results of client calls.
///
/// ```
/// fn holder(client: &officer::client::Client) -> officer::client::Result<()> {
///     client.ping()?;
///     Ok(())
/// }
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, without the details; see [`Error::kind`].
///
/// ```
/// use officer::client::ErrorKind;
/// use officer::protocol::ErrorCode;
///
/// let kind = ErrorKind::Server(ErrorCode::LimitExceeded);
/// assert_ne!(kind, ErrorKind::LockTimeout);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Connecting or talking to the server failed at the socket level.
    Io,
    /// The connection broke or was closed; every lock it held was released by the server.
    ConnectionLost,
    /// The server sent something this client does not understand.
    Protocol,
    /// The server answered with an ERROR frame carrying this code.
    Server(ErrorCode),
    /// The lock was not granted within the timeout (or at once, for a try-lock).
    LockTimeout,
    /// The lock's queue was at or above `queue_max`, so the request did not wait.
    QueueMaxed,
    /// `unlock` of a lock this connection does not hold.
    NotHeld,
    /// A lock name (after the namespace is added) breaks the server's naming rules.
    InvalidName,
    /// This connection already waits for the lock (another thread's `lock` call).
    AlreadyWaiting,
    /// The wait was ended by an `unlock` or `reset` from another thread on this connection.
    Cancelled,
    /// The grant ended without this client's unlock: its lease ran out, its `max_hold` passed,
    /// or an operator revoked it (the server said LOST; see [`Error::lost_reason`]).
    GrantLost,
}

/// An error of a client call; see [`ErrorKind`] for the classification.
///
/// ```no_run
/// use officer::client::{Client, LockOptions};
/// use std::time::Duration;
///
/// let client = Client::connect("localhost", 11500)?;
/// match client.lock("report", LockOptions::with_timeout(Duration::from_secs(1))) {
///     Ok(lock) => println!("got it, token {}", lock.token()),
///     Err(e) if e.is_timeout() => println!("busy, holder: {:?}", e.queue().and_then(|q| q.first())),
///     Err(e) => return Err(e),
/// }
/// # Ok::<(), officer::client::Error>(())
/// ```
#[derive(Debug)]
pub struct Error {
    repr: Repr,
}

#[derive(Debug)]
enum Repr {
    Io(io::Error),
    ConnectionLost {
        reason: String,
        released: Vec<String>,
    },
    Protocol(String),
    /// The peer answered HELLO with bytes no officer server sends (PROTOCOL.md §2.6).
    NotOfficer {
        server: String,
        first_bytes: Vec<u8>,
    },
    Server {
        code: ErrorCode,
        message: String,
    },
    LockTimeout {
        name: String,
        queue: Vec<String>,
    },
    QueueMaxed {
        name: String,
        queue: Vec<String>,
    },
    NotHeld {
        name: String,
    },
    InvalidName {
        name: String,
        why: DecodeError,
    },
    AlreadyWaiting {
        name: String,
    },
    Cancelled {
        name: String,
    },
    GrantLost {
        name: String,
        token: u64,
        reason: LostReason,
    },
    /// A failure of one server of a sharded client, with that server's address.
    OnServer {
        server: String,
        inner: Box<Error>,
    },
}

impl Error {
    pub(crate) fn io(err: io::Error) -> Error {
        Error { repr: Repr::Io(err) }
    }

    pub(crate) fn connection_lost(reason: impl Into<String>, released: Vec<String>) -> Error {
        Error { repr: Repr::ConnectionLost { reason: reason.into(), released } }
    }

    pub(crate) fn protocol(what: impl Into<String>) -> Error {
        Error { repr: Repr::Protocol(what.into()) }
    }

    /// The peer at `server` answered HELLO with `first_bytes` (at most [`SHOWN_BYTES`] kept).
    pub(crate) fn not_officer(server: impl Into<String>, first_bytes: &[u8]) -> Error {
        let first_bytes = first_bytes[..first_bytes.len().min(SHOWN_BYTES)].to_vec();
        Error { repr: Repr::NotOfficer { server: server.into(), first_bytes } }
    }

    pub(crate) fn server(code: ErrorCode, message: impl Into<String>) -> Error {
        Error { repr: Repr::Server { code, message: message.into() } }
    }

    pub(crate) fn lock_timeout(name: &str, queue: Vec<String>) -> Error {
        Error { repr: Repr::LockTimeout { name: name.to_owned(), queue } }
    }

    pub(crate) fn queue_maxed(name: &str, queue: Vec<String>) -> Error {
        Error { repr: Repr::QueueMaxed { name: name.to_owned(), queue } }
    }

    pub(crate) fn not_held(name: &str) -> Error {
        Error { repr: Repr::NotHeld { name: name.to_owned() } }
    }

    pub(crate) fn invalid_name(name: &str, why: DecodeError) -> Error {
        Error { repr: Repr::InvalidName { name: name.to_owned(), why } }
    }

    pub(crate) fn already_waiting(name: &str) -> Error {
        Error { repr: Repr::AlreadyWaiting { name: name.to_owned() } }
    }

    pub(crate) fn cancelled(name: &str) -> Error {
        Error { repr: Repr::Cancelled { name: name.to_owned() } }
    }

    pub(crate) fn grant_lost(name: &str, token: u64, reason: LostReason) -> Error {
        Error { repr: Repr::GrantLost { name: name.to_owned(), token, reason } }
    }

    /// For [`ErrorKind::GrantLost`]: why the server ended the grant, and its token.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// # let (name, token) = ("a", 1);
    /// if let Err(e) = client.renew(name, token) {
    ///     if let Some((reason, token)) = e.lost_reason() {
    ///         eprintln!("grant {token} ended: {}", reason.as_str());
    ///     }
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn lost_reason(&self) -> Option<(LostReason, u64)> {
        match &self.repr {
            Repr::GrantLost { reason, token, .. } => Some((*reason, *token)),
            Repr::OnServer { inner, .. } => inner.lost_reason(),
            _ => None,
        }
    }

    /// `self` as a failure of the server at `server` (a sharded client's shard). Kind, queue,
    /// lock name and released locks stay those of `self`; the message names the server.
    pub(crate) fn on_server(self, server: &str) -> Error {
        // Named once: an error that passed through two layers of the sharded client.
        if let Repr::OnServer { .. } = self.repr {
            return self;
        }
        Error { repr: Repr::OnServer { server: server.to_owned(), inner: Box::new(self) } }
    }

    /// For a [`ShardedClient`](super::ShardedClient)'s error: the address of the server that
    /// failed (as the client lists it), so a caller can tell one down server from another.
    ///
    /// ```no_run
    /// use officer::client::ShardedClient;
    /// let client = ShardedClient::builder().servers(["a:11500", "b:11500"]).connect()?;
    /// if let Err(e) = client.try_lock("report") {
    ///     eprintln!("server {:?} failed: {e}", e.server_address());
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn server_address(&self) -> Option<&str> {
        match &self.repr {
            Repr::OnServer { server, .. } => Some(server),
            _ => None,
        }
    }

    /// The classification of this error.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// use officer::client::ErrorKind;
    /// let err = client.unlock("never-locked").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NotHeld);
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match &self.repr {
            Repr::Io(_) => ErrorKind::Io,
            Repr::ConnectionLost { .. } => ErrorKind::ConnectionLost,
            Repr::Protocol(_) | Repr::NotOfficer { .. } => ErrorKind::Protocol,
            Repr::Server { code, .. } => ErrorKind::Server(*code),
            Repr::LockTimeout { .. } => ErrorKind::LockTimeout,
            Repr::QueueMaxed { .. } => ErrorKind::QueueMaxed,
            Repr::NotHeld { .. } => ErrorKind::NotHeld,
            Repr::InvalidName { .. } => ErrorKind::InvalidName,
            Repr::AlreadyWaiting { .. } => ErrorKind::AlreadyWaiting,
            Repr::Cancelled { .. } => ErrorKind::Cancelled,
            Repr::GrantLost { .. } => ErrorKind::GrantLost,
            Repr::OnServer { inner, .. } => inner.kind(),
        }
    }

    /// True when the lock was not granted in time (including a failed try-lock).
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// if let Err(e) = client.try_lock("nightly") {
    ///     assert!(e.is_timeout() || e.is_connection_lost() || e.is_io());
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::LockTimeout
    }

    /// True when the lock's queue was full, so the request was refused without waiting.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// use officer::client::LockOptions;
    /// if let Err(e) = client.lock("popular", LockOptions::new().queue_max(3)) {
    ///     if e.is_queue_maxed() { println!("too many waiters: {:?}", e.queue()); }
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn is_queue_maxed(&self) -> bool {
        self.kind() == ErrorKind::QueueMaxed
    }

    /// True when the connection is gone, and with it every lock it held.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// if let Err(e) = client.ping() {
    ///     if e.is_connection_lost() { client.reconnect()?; }
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn is_connection_lost(&self) -> bool {
        self.kind() == ErrorKind::ConnectionLost
    }

    /// True for socket-level failures, such as a refused connection.
    ///
    /// ```
    /// let err = officer::client::Client::connect_unix("/nonexistent/officer.sock").unwrap_err();
    /// assert!(err.is_io());
    /// ```
    pub fn is_io(&self) -> bool {
        self.kind() == ErrorKind::Io
    }

    /// True when `unlock` named a lock this connection does not hold.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// assert!(client.unlock("not-mine").unwrap_err().is_not_held());
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn is_not_held(&self) -> bool {
        self.kind() == ErrorKind::NotHeld
    }

    /// The ERROR code when the server refused the request.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// use officer::protocol::ErrorCode;
    /// if let Err(e) = client.ping() {
    ///     if e.server_code() == Some(ErrorCode::AuthRequired) { eprintln!("set a secret"); }
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn server_code(&self) -> Option<ErrorCode> {
        match &self.repr {
            Repr::Server { code, .. } => Some(*code),
            Repr::OnServer { inner, .. } => inner.server_code(),
            _ => None,
        }
    }

    /// The message of the server's ERROR answer, if this is one (for `not_leader`, the
    /// leader's address). Crate-internal: callers read it in the error's `Display`.
    pub(crate) fn server_message(&self) -> Option<&str> {
        match &self.repr {
            Repr::Server { message, .. } => Some(message),
            Repr::OnServer { inner, .. } => inner.server_message(),
            _ => None,
        }
    }

    /// The lock's queue for a timeout or full queue: connection labels, holder first.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// if let Err(e) = client.try_lock("deploy") {
    ///     if let Some(holder) = e.queue().and_then(|q| q.first()) {
    ///         println!("deploy is held by {holder}");
    ///     }
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn queue(&self) -> Option<&[String]> {
        match &self.repr {
            Repr::LockTimeout { queue, .. } | Repr::QueueMaxed { queue, .. } => Some(queue),
            Repr::OnServer { inner, .. } => inner.queue(),
            _ => None,
        }
    }

    /// The lock name the error is about (without the client's namespace), when there is one.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// let err = client.unlock("a").unwrap_err();
    /// assert_eq!(err.lock_name(), Some("a"));
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn lock_name(&self) -> Option<&str> {
        match &self.repr {
            Repr::LockTimeout { name, .. }
            | Repr::QueueMaxed { name, .. }
            | Repr::NotHeld { name }
            | Repr::InvalidName { name, .. }
            | Repr::AlreadyWaiting { name }
            | Repr::Cancelled { name }
            | Repr::GrantLost { name, .. } => Some(name),
            Repr::OnServer { inner, .. } => inner.lock_name(),
            _ => None,
        }
    }

    /// For a lost connection: the locks it held, which the server has released.
    ///
    /// ```no_run
    /// # let client = officer::client::Client::connect("localhost", 11500)?;
    /// if let Err(e) = client.ping() {
    ///     for name in e.released_locks() { eprintln!("lost lock {name}"); }
    /// }
    /// # Ok::<(), officer::client::Error>(())
    /// ```
    pub fn released_locks(&self) -> &[String] {
        match &self.repr {
            Repr::ConnectionLost { released, .. } => released,
            Repr::OnServer { inner, .. } => inner.released_locks(),
            _ => &[],
        }
    }

    /// Rewrites lock names in this error: the connection layer knows full names, the caller
    /// wants them without the namespace.
    pub(crate) fn map_names(mut self, f: impl Fn(&str) -> String) -> Error {
        match &mut self.repr {
            Repr::ConnectionLost { released, .. } => {
                for name in released.iter_mut() {
                    *name = f(name);
                }
            }
            Repr::LockTimeout { name, .. }
            | Repr::QueueMaxed { name, .. }
            | Repr::NotHeld { name }
            | Repr::InvalidName { name, .. }
            | Repr::AlreadyWaiting { name }
            | Repr::Cancelled { name }
            | Repr::GrantLost { name, .. } => *name = f(name),
            Repr::OnServer { inner, .. } => {
                let taken = std::mem::replace(inner.as_mut(), Error::protocol(""));
                **inner = taken.map_names(f);
            }
            _ => {}
        }
        self
    }
}

/// Bytes of a foreign peer's answer quoted in [`Repr::NotOfficer`]'s message.
const SHOWN_BYTES: usize = 24;
/// Names longer than this are cut in messages (see [`shown_name`]).
const SHOWN_NAME_MAX: usize = 64;
/// Bytes of a cut name that are still shown.
const SHOWN_NAME_HEAD: usize = 40;

/// A lock name for a message: quoted whole when short, else its first bytes (cut at a
/// character boundary) and its length, so a 60 kB name cannot flood a terminal or a log.
pub(crate) fn shown_name(name: &str) -> String {
    if name.len() <= SHOWN_NAME_MAX {
        return format!("{name:?}");
    }
    let mut end = SHOWN_NAME_HEAD;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &name[..end], name.len())
}

/// A foreign peer's first bytes as text: printable ASCII kept, everything else escaped.
fn shown_bytes(bytes: &[u8]) -> String {
    bytes.iter().flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect()
}

/// Formats a queue for messages: "holder (and 2 waiting)".
fn describe_queue(queue: &[String]) -> String {
    match queue.split_first() {
        None => "the lock is free now".to_owned(),
        Some((holder, [])) => format!("held by {holder}"),
        Some((holder, waiting)) => format!("held by {holder}, {} waiting", waiting.len()),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Io(e) => write!(f, "cannot talk to the officer server: {e}"),
            Repr::ConnectionLost { reason, released } if released.is_empty() => {
                write!(f, "connection to the officer server lost ({reason}); it held no locks")
            }
            Repr::ConnectionLost { reason, released } => write!(
                f,
                "connection to the officer server lost ({reason}); its locks were released: {}",
                released.join(", ")
            ),
            Repr::Protocol(what) => write!(f, "officer protocol error: {what}"),
            Repr::NotOfficer { server, first_bytes } => write!(
                f,
                "the server at {server} does not speak the officer protocol (it answered \"{}\")",
                shown_bytes(first_bytes)
            ),
            Repr::Server { code, message } if message.is_empty() => write!(f, "server error {code}"),
            Repr::Server { code, message } => write!(f, "server error {code}: {message}"),
            Repr::LockTimeout { name, queue } => {
                write!(f, "timed out waiting for lock {} ({})", shown_name(name), describe_queue(queue))
            }
            Repr::QueueMaxed { name, queue } => {
                write!(f, "queue of lock {} is full ({})", shown_name(name), describe_queue(queue))
            }
            Repr::NotHeld { name } => {
                write!(f, "cannot unlock {}: this connection does not hold it", shown_name(name))
            }
            Repr::InvalidName { name, why } => write!(f, "invalid lock name {}: {why}", shown_name(name)),
            Repr::AlreadyWaiting { name } => {
                write!(f, "this connection already waits for lock {}", shown_name(name))
            }
            Repr::Cancelled { name } => {
                write!(f, "the wait for lock {} was cancelled by unlock or reset", shown_name(name))
            }
            Repr::GrantLost { name, token, reason } => {
                write!(f, "lock {} (token {token}) was lost: {}", shown_name(name), reason.as_str())
            }
            Repr::OnServer { server, inner } => write!(f, "officer server {server}: {inner}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.repr {
            Repr::Io(e) => Some(e),
            Repr::InvalidName { why, .. } => Some(why),
            // The message already includes the inner error's; its cause is the one below it.
            Repr::OnServer { inner, .. } => inner.source(),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error::io(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_once_with_their_length() {
        let long = "é".repeat(3000); // 6000 bytes, two per character: the cut must not split one
        let err = Error::invalid_name(&long, DecodeError::NameTooLong { len: long.len(), max: 1024 });
        let msg = err.to_string();
        assert!(msg.len() < 200, "{msg}");
        assert!(msg.contains("(6000 bytes)") && msg.contains("the limit is 1024"), "{msg}");
        assert_eq!(msg.matches("é").count(), SHOWN_NAME_HEAD / 2, "{msg}");
        assert_eq!(shown_name("short"), "\"short\"");
    }

    #[test]
    fn a_foreign_peer_is_named_with_its_first_bytes_escaped() {
        let err = Error::not_officer("db:22", b"SSH-2.0-OpenSSH_9.6\r\n and a lot more than we keep");
        assert_eq!(err.kind(), ErrorKind::Protocol);
        let msg = err.to_string();
        assert!(msg.starts_with("the server at db:22 does not speak the officer protocol"), "{msg}");
        assert!(msg.contains("SSH-2.0-OpenSSH_9.6\\r\\n"), "{msg}");
        assert!(!msg.contains("lot more"), "{msg}");
    }

    #[test]
    fn a_shard_failure_names_its_server_and_keeps_the_inner_details() {
        let err = Error::lock_timeout("ns:job", vec!["10.0.0.9:4000".into()]).on_server("b:11500");
        assert_eq!(err.kind(), ErrorKind::LockTimeout);
        assert!(err.is_timeout());
        assert_eq!(err.server_address(), Some("b:11500"));
        assert_eq!(err.queue(), Some(&["10.0.0.9:4000".to_owned()][..]));
        let err = err.map_names(|n| n.strip_prefix("ns:").unwrap_or(n).to_owned());
        assert_eq!(err.lock_name(), Some("job"));
        let msg = err.to_string();
        assert!(msg.starts_with("officer server b:11500: timed out waiting for lock \"job\""), "{msg}");
        let io = Error::io(io::Error::from(io::ErrorKind::ConnectionRefused)).on_server("c:1");
        assert!(io.is_io());
        assert!(std::error::Error::source(&io).is_some());
        assert_eq!(Error::not_held("a").server_address(), None);
        let twice = Error::not_held("a").on_server("a:1").on_server("a:1");
        assert_eq!(twice.to_string().matches("a:1").count(), 1, "{twice}");
    }
}
