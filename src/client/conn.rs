//! One connection to the server, shared by every thread of a client.
//!
//! Requests are multiplexed by request id: a caller registers a one-slot channel under a fresh
//! id, writes its frame, and blocks on the channel; a reader thread decodes every incoming frame
//! and hands it to the channel registered under its id. So a thread waiting minutes for a lock
//! never delays another thread's `unlock` or `ping` on the same connection.
//!
//! The reader also keeps the set of held locks, updated in the same critical section that
//! delivers LOCK / UNLOCK / RESET answers, so when the connection breaks the client knows
//! exactly which locks the server released. A lost connection stays lost: every later call gets
//! the same "connection lost" error, and waiting callers are woken by their channel closing.
//!
//! A keep-alive thread pings when nothing was written for the interval, because the server
//! closes connections that stay silent past its idle timeout, even ones holding locks.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::builder::{Config, Target};
use super::stream::Stream;
use super::{Error, Result};
use crate::protocol::{
    split_frame, ErrorCode, Hello, HelloOk, LostReason, Request, Response, MIN_PROTOCOL_VERSION,
    NOTICE_REQUEST_ID, PROTOCOL_VERSION, SHUTDOWN_REQUEST_ID,
};

/// Largest response frame accepted. Listings of a big server can be large, but a length
/// prefix beyond this means the stream is garbage, not a listing.
const MAX_RESPONSE_FRAME: u32 = 64 << 20;
/// Request ids of the handshake, sent before the reader thread exists.
const HELLO_ID: u32 = 1;
const AUTH_ID: u32 = 2;
const PROBE_ID: u32 = 3;

/// The payload of the PING sent right behind HELLO. An officer server answers it with PONG;
/// to a line-based peer (an HTTP server, the original JSON-lines officer) the pair looks like
/// one garbled line and an empty one, i.e. a complete request head, which such a server
/// answers or closes at once: the client then names the peer instead of waiting out its
/// connect timeout.
const PROBE_PAYLOAD: &[u8] = b"\r\n\r\n";
const FIRST_ID: u32 = 4;

/// What the reader must record when the answer to a request arrives.
#[derive(Debug)]
pub(crate) enum Track {
    None,
    /// LOCK of this full name: ACQUIRED / ALREADY_ACQUIRED mean it is held.
    Lock(String),
    /// UNLOCK of this full name: RELEASED means it is no longer held.
    Unlock(String),
    /// RESET: RESET_OK means nothing is held.
    Reset,
}

struct Pending {
    tx: SyncSender<Response>,
    track: Track,
}

/// Why a connection ended and what it took with it.
#[derive(Debug, Clone)]
pub(crate) struct Lost {
    pub(crate) reason: String,
    /// Full names of the locks held when it ended, sorted.
    pub(crate) released: Vec<String>,
    /// Closed on purpose by `disconnect` / `reconnect` / drop, not broken.
    pub(crate) by_client: bool,
}

impl Lost {
    pub(crate) fn error(&self) -> Error {
        Error::connection_lost(self.reason.clone(), self.released.clone())
    }
}

struct State {
    next_id: u32,
    pending: HashMap<u32, Pending>,
    held: BTreeSet<String>,
    lost: Option<Lost>,
    /// Grants the server said it ended (LOST notices), newest last, at most `NOTICES_KEPT`.
    lost_grants: VecDeque<LostGrant>,
    /// Grants someone started waiting behind (CONTENDED notices), at most `NOTICES_KEPT`.
    contended: VecDeque<(String, u64)>,
}

/// A grant the server ended without our UNLOCK: full name, token and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LostGrant {
    pub(crate) name: String,
    pub(crate) token: u64,
    pub(crate) reason: LostReason,
}

/// How many notices of each kind are remembered: a client that never looks cannot make the
/// reader grow without bound (the server keeps as many lost grants, PROTOCOL.md §6.9).
const NOTICES_KEPT: usize = 64;

/// Appends `item`, forgetting the oldest past `NOTICES_KEPT`.
fn remember<T>(list: &mut VecDeque<T>, item: T) {
    if list.len() == NOTICES_KEPT {
        list.pop_front();
    }
    list.push_back(item);
}

struct Writer {
    stream: Stream,
    buf: Vec<u8>,
}

/// A live (or lost) connection. Shared through `Arc` by the client, its guards, the reader
/// thread and the keep-alive thread.
pub(crate) struct Conn {
    hello: HelloOk,
    writer: Mutex<Writer>,
    /// A clone of the socket used only to shut it down, so closing never waits for a writer.
    control: Stream,
    state: Mutex<State>,
    /// Signalled when the connection is lost.
    changed: Condvar,
    epoch: Instant,
    /// Milliseconds after `epoch` of the last write, read by the keep-alive thread.
    last_write_ms: AtomicU64,
    /// The process that opened the socket: after `fork` a child must not shut down the
    /// socket it shares with its parent (it only drops its copy).
    owner_pid: u32,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("connection_id", &self.hello.connection_id).finish_non_exhaustive()
    }
}

/// Locks a mutex, ignoring poisoning: no user code runs while these locks are held, and the
/// state stays consistent between statements.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conn {
    /// Connects, performs the handshake, and starts the reader and keep-alive threads.
    pub(crate) fn open(config: &Config) -> Result<Arc<Conn>> {
        let mut stream = Stream::connect(&config.target, config.connect_timeout)?;
        let (hello, leftover) = handshake(&mut stream, config)?;
        let reader = stream.try_clone()?;
        let control = stream.try_clone()?;
        let conn = Arc::new(Conn {
            hello,
            writer: Mutex::new(Writer { stream, buf: Vec::new() }),
            control,
            state: Mutex::new(State {
                next_id: FIRST_ID,
                pending: HashMap::new(),
                held: BTreeSet::new(),
                lost: None,
                lost_grants: VecDeque::new(),
                contended: VecDeque::new(),
            }),
            changed: Condvar::new(),
            epoch: Instant::now(),
            last_write_ms: AtomicU64::new(0),
            owner_pid: std::process::id(),
        });
        let for_reader = Arc::clone(&conn);
        thread::Builder::new()
            .name("officer-reader".into())
            .spawn(move || for_reader.read_loop(reader, leftover))?;
        if let Some(interval) = config.keep_alive_interval(conn.hello.idle_timeout_ms) {
            let for_pinger = Arc::clone(&conn);
            let spawned = thread::Builder::new()
                .name("officer-keepalive".into())
                .spawn(move || for_pinger.keep_alive_loop(interval));
            if let Err(e) = spawned {
                conn.fail("could not start the keep-alive thread", true);
                return Err(e.into());
            }
        }
        Ok(conn)
    }

    pub(crate) fn hello(&self) -> &HelloOk {
        &self.hello
    }

    /// Sends one request and waits for its answer (an ERROR answer is returned as a response).
    pub(crate) fn call(&self, req: &Request<'_>, track: Track) -> Result<Response> {
        let (tx, rx) = sync_channel(1);
        let id = {
            let mut st = lock(&self.state);
            if let Some(lost) = &st.lost {
                return Err(lost.error());
            }
            let id = st.alloc_id();
            // Registered before writing, so the answer cannot arrive before its slot exists.
            st.pending.insert(id, Pending { tx, track });
            id
        };
        if let Err(e) = self.send(req, id) {
            self.fail(&format!("write failed: {e}"), false);
        }
        // The channel closes without a value only when `fail` dropped the slot.
        rx.recv().map_err(|_| self.lost_error())
    }

    fn send(&self, req: &Request<'_>, id: u32) -> io::Result<()> {
        let mut w = lock(&self.writer);
        let Writer { stream, buf } = &mut *w;
        buf.clear();
        req.encode(id, buf);
        stream.write_all(buf)?;
        self.last_write_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The loss, if the connection has ended.
    pub(crate) fn lost(&self) -> Option<Lost> {
        lock(&self.state).lost.clone()
    }

    fn lost_error(&self) -> Error {
        match &lock(&self.state).lost {
            Some(lost) => lost.error(),
            None => Error::protocol("request slot dropped while connected"),
        }
    }

    /// Waits until the connection is lost, at most `timeout` (`None`: forever).
    pub(crate) fn wait_lost(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = lock(&self.state);
        while st.lost.is_none() {
            st = match deadline {
                None => self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.changed.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
        st.lost.is_some()
    }

    /// Closes the connection on purpose; the server releases its locks.
    pub(crate) fn close(&self, reason: &str) {
        if self.owner_pid != std::process::id() {
            // A forked child: shutting the shared socket down would cut off the parent.
            return;
        }
        self.fail(reason, true);
    }

    /// Marks the connection lost (the first reason wins), wakes every waiting caller and
    /// shuts the socket down so the reader thread ends.
    fn fail(&self, reason: &str, by_client: bool) {
        {
            let mut st = lock(&self.state);
            if st.lost.is_some() {
                return;
            }
            let released = std::mem::take(&mut st.held).into_iter().collect();
            st.lost = Some(Lost { reason: reason.to_owned(), released, by_client });
            // Dropping the senders wakes every caller blocked on an answer.
            st.pending.clear();
        }
        self.changed.notify_all();
        self.control.shutdown();
    }

    fn read_loop(self: Arc<Self>, mut stream: Stream, mut buf: Vec<u8>) {
        let mut chunk = vec![0u8; 16 * 1024];
        let reason = loop {
            if let Err(reason) = self.dispatch_all(&mut buf) {
                break reason;
            }
            match stream.read(&mut chunk) {
                Ok(0) => break "the server closed the connection".to_owned(),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break format!("read failed: {e}"),
            }
        };
        log::debug!("officer connection ended connection_id={} reason={reason}", self.hello.connection_id);
        self.fail(&reason, false);
    }

    /// Hands every complete frame in `buf` to its caller; `Err` ends the connection.
    fn dispatch_all(&self, buf: &mut Vec<u8>) -> std::result::Result<(), String> {
        let mut consumed = 0;
        let result = loop {
            match split_frame(&buf[consumed..], MAX_RESPONSE_FRAME) {
                Ok(None) => break Ok(()),
                Err(e) => break Err(format!("bad frame from the server: {e}")),
                Ok(Some((frame, len))) => {
                    consumed += len;
                    let resp = match Response::decode(&frame) {
                        Ok(resp) => resp,
                        Err(e) => break Err(format!("bad response from the server: {e}")),
                    };
                    if let Err(reason) = self.dispatch(frame.request_id, resp) {
                        break Err(reason);
                    }
                }
            }
        };
        buf.drain(..consumed);
        result
    }

    fn dispatch(&self, id: u32, resp: Response) -> std::result::Result<(), String> {
        // Notices share request id 0 with SHUTDOWN and fatal errors; their opcode tells them
        // apart (PROTOCOL.md §4.24, §4.25).
        if id == NOTICE_REQUEST_ID && matches!(resp, Response::Lost { .. } | Response::Contended { .. }) {
            self.notice(resp);
            return Ok(());
        }
        if id == SHUTDOWN_REQUEST_ID {
            return Err(match resp {
                Response::Shutdown { message } if message.is_empty() => {
                    "the server is shutting down".to_owned()
                }
                Response::Shutdown { message } => format!("the server is shutting down: {message}"),
                Response::Error { code, message } => {
                    format!("the server closed the connection: {code}: {message}")
                }
                other => format!("unexpected frame 0x{:02x} with request id 0", other.opcode()),
            });
        }
        let mut st = lock(&self.state);
        let Some(pending) = st.pending.remove(&id) else {
            // Not fatal: the caller that sent it is gone and nothing else is affected.
            log::debug!("officer response for unknown request id={id}");
            return Ok(());
        };
        match (&pending.track, &resp) {
            (Track::Lock(name), Response::Acquired { .. } | Response::AlreadyAcquired { .. }) => {
                st.held.insert(name.clone());
            }
            (Track::Unlock(name), Response::Released) => {
                st.held.remove(name);
            }
            (Track::Reset, Response::ResetOk) => st.held.clear(),
            // The answer form of LOST: the grant is gone as surely as by the notice.
            (Track::Unlock(name), Response::Lost { .. }) => {
                st.held.remove(name);
            }
            _ => {}
        }
        // The slot holds one value and gets exactly one, so this cannot block; a caller that
        // gave up is simply gone.
        let _ = pending.tx.try_send(resp);
        Ok(())
    }

    /// Records a LOST or CONTENDED notice and wakes whoever waits for one.
    fn notice(&self, resp: Response) {
        {
            let mut st = lock(&self.state);
            match resp {
                Response::Lost { token, reason, name } => {
                    log::debug!("officer grant lost name={name} token={token} reason={}", reason.as_str());
                    st.held.remove(&name);
                    remember(&mut st.lost_grants, LostGrant { name, token, reason });
                }
                Response::Contended { token, name } => remember(&mut st.contended, (name, token)),
                _ => return,
            }
        }
        self.changed.notify_all();
    }

    /// The LOST notice of grant `token` of `full_name`, if the server sent one.
    pub(crate) fn grant_lost(&self, full_name: &str, token: u64) -> Option<LostGrant> {
        let st = lock(&self.state);
        st.lost_grants.iter().find(|g| g.token == token && g.name == full_name).cloned()
    }

    /// Whether someone started waiting behind grant `token` of `full_name` (CONTENDED).
    pub(crate) fn contended(&self, full_name: &str, token: u64) -> bool {
        let st = lock(&self.state);
        st.contended.iter().any(|(name, t)| *t == token && name == full_name)
    }

    /// Waits until grant `token` of `full_name` is lost (a LOST notice) or the connection
    /// is, at most `timeout` (`None`: forever). `Some` with the notice, or `None` for the
    /// connection; `Err(())` when the time ran out first.
    pub(crate) fn wait_grant_lost(
        &self,
        full_name: &str,
        token: u64,
        timeout: Option<Duration>,
    ) -> std::result::Result<Option<LostGrant>, ()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = lock(&self.state);
        loop {
            if let Some(g) = st.lost_grants.iter().find(|g| g.token == token && g.name == full_name) {
                return Ok(Some(g.clone()));
            }
            if st.lost.is_some() {
                return Ok(None);
            }
            st = match deadline {
                None => self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(());
                    }
                    self.changed.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
    }

    fn keep_alive_loop(self: Arc<Self>, interval: Duration) {
        loop {
            let now_ms = self.epoch.elapsed().as_millis() as u64;
            let silent =
                Duration::from_millis(now_ms.saturating_sub(self.last_write_ms.load(Ordering::Relaxed)));
            if silent >= interval {
                if self.call(&Request::Ping(&[]), Track::None).is_err() {
                    return;
                }
                continue;
            }
            if self.wait_lost(Some(interval - silent)) {
                return;
            }
        }
    }
}

impl State {
    /// A fresh request id: never 0 (reserved for the server) and never one still waiting.
    fn alloc_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if id != SHUTDOWN_REQUEST_ID && !self.pending.contains_key(&id) {
                return id;
            }
        }
    }
}

/// HELLO (and AUTH when the server asks), answered before any other traffic. Returns the
/// server's limits and any bytes read past the handshake.
fn handshake(stream: &mut Stream, config: &Config) -> Result<(HelloOk, Vec<u8>)> {
    stream.set_read_timeout(Some(config.connect_timeout))?;
    stream.set_write_timeout(Some(config.connect_timeout))?;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    Request::Hello(Hello { version: PROTOCOL_VERSION }).encode(HELLO_ID, &mut out);
    Request::Ping(PROBE_PAYLOAD).encode(PROBE_ID, &mut out);
    stream.write_all(&out)?;
    let hello = match read_reply(stream, &mut buf, HELLO_ID, Some(&config.target))? {
        Response::HelloOk(hello) => hello,
        Response::Error { code, message } => return Err(Error::server(code, message)),
        other => return Err(unexpected(&other, "HELLO")),
    };
    // PING is allowed before AUTH, so its PONG comes next on every officer server.
    match read_reply(stream, &mut buf, PROBE_ID, None)? {
        Response::Pong => {}
        Response::Error { code, message } => return Err(Error::server(code, message)),
        other => return Err(unexpected(&other, "PING")),
    }
    // The server picks the lower of its version and ours; anything outside what this crate
    // speaks means the session cannot go on (PROTOCOL.md §2.5).
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.version) {
        let v = hello.version;
        return Err(Error::protocol(format!(
            "server chose protocol version {v}, this client speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
        )));
    }
    if hello.auth_required {
        let Some(secret) = &config.secret else {
            return Err(Error::server(
                ErrorCode::AuthRequired,
                "the server requires a secret (ClientBuilder::auth)",
            ));
        };
        out.clear();
        Request::Auth(secret).encode(AUTH_ID, &mut out);
        stream.write_all(&out)?;
        match read_reply(stream, &mut buf, AUTH_ID, None)? {
            Response::AuthOk => {}
            Response::Error { code, message } => return Err(Error::server(code, message)),
            other => return Err(unexpected(&other, "AUTH")),
        }
    }
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    Ok((hello, buf))
}

/// Largest first frame an officer server sends: HELLO_OK is 29 bytes, and an ERROR or SHUTDOWN
/// before it carries a short message.
const MAX_FIRST_FRAME: u32 = 64 * 1024;

/// Whether `buf`, the start of the server's first answer, can be officer's: frames are below
/// 2^24 bytes, so the first byte is 0 (PROTOCOL.md §2.6), and the first frame answers HELLO or
/// refuses the connection. An SSH banner, an HTTP reply or a JSON line fails on its first byte,
/// so the caller learns at once instead of after a timeout or a "frame length ..." error.
fn plausible_first_frame(buf: &[u8]) -> bool {
    use crate::protocol::op;
    if buf.first().is_some_and(|&b| b != 0) {
        return false;
    }
    if buf.len() < 5 {
        return true;
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    len <= MAX_FIRST_FRAME && matches!(buf[4], op::HELLO_OK | op::ERROR | op::SHUTDOWN)
}

/// Reads until the answer to `id` arrives, during the handshake only. With `first_of`, the
/// bytes are the server's very first and are checked to be officer's ([`plausible_first_frame`]).
fn read_reply(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    id: u32,
    first_of: Option<&Target>,
) -> Result<Response> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(target) = first_of {
            if !plausible_first_frame(buf) {
                return Err(Error::not_officer(target.to_string(), buf));
            }
        }
        let split = split_frame(buf, MAX_RESPONSE_FRAME).map_err(|e| Error::protocol(e.to_string()))?;
        if let Some((frame, len)) = split {
            let resp = Response::decode(&frame).map_err(|e| Error::protocol(e.to_string()))?;
            let rid = frame.request_id;
            buf.drain(..len);
            match resp {
                resp if rid == id => return Ok(resp),
                // The server may refuse a connection (limits, shutdown) before answering HELLO.
                Response::Error { code, message } => return Err(Error::server(code, message)),
                Response::Shutdown { message } => {
                    return Err(Error::server(ErrorCode::ShuttingDown, message));
                }
                _ => continue,
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) if !buf.is_empty() && first_of.is_some() => {
                // A few bytes, then the close: whatever it was, it did not finish a frame.
                return Err(Error::not_officer(first_of.map(Target::to_string).unwrap_or_default(), buf));
            }
            Ok(0) => {
                let eof = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the handshake",
                );
                return Err(eof.into());
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                // Silence is what an HTTP server or the original Ruby officer (JSON lines
                // only) gives a binary HELLO: say so rather than only "timed out".
                let late = io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no handshake answer within the connect timeout (is an officer server listening there?)",
                );
                return Err(late.into());
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The error for an answer that does not fit the request.
pub(crate) fn unexpected(resp: &Response, request: &str) -> Error {
    Error::protocol(format!("unexpected answer (opcode 0x{:02x}) to {request}", resp.opcode()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_officer_frames_pass_the_first_bytes_check() {
        let mut hello_ok = Vec::new();
        Response::HelloOk(HelloOk {
            version: 1,
            auth_required: false,
            connection_id: 1,
            max_frame: 65536,
            max_name: 1024,
            idle_timeout_ms: 0,
        })
        .encode(HELLO_ID, &mut hello_ok);
        for n in 0..=hello_ok.len() {
            assert!(plausible_first_frame(&hello_ok[..n]), "HELLO_OK cut at {n}");
        }
        let mut refused = Vec::new();
        Response::Error { code: ErrorCode::LimitExceeded, message: "too many".into() }
            .encode(0, &mut refused);
        assert!(plausible_first_frame(&refused));
        for foreign in
            [&b"SSH-2.0-OpenSSH_9.6\r\n"[..], b"HTTP/1.1 400 Bad Request\r\n", b"{\"result\":\"error\"}\n"]
        {
            assert!(!plausible_first_frame(&foreign[..1]), "{foreign:?}");
        }
        // Zero first byte but an opcode no server sends first, or an absurd length.
        assert!(!plausible_first_frame(&[0, 0, 0, 9, 0x83, 0, 0, 0, 1]));
        assert!(!plausible_first_frame(&[0, 0x10, 0, 0, 0x81]));
    }

    #[test]
    fn request_ids_skip_zero_and_ids_in_use() {
        let (tx, _rx) = sync_channel(1);
        let mut st = State {
            next_id: u32::MAX,
            pending: HashMap::new(),
            held: BTreeSet::new(),
            lost: None,
            lost_grants: VecDeque::new(),
            contended: VecDeque::new(),
        };
        st.pending.insert(1, Pending { tx, track: Track::None });
        assert_eq!(st.alloc_id(), u32::MAX);
        assert_eq!(st.alloc_id(), 2);
    }
}
