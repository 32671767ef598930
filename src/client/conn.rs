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

pub(crate) use super::answer::Track;
use super::answer::{alloc_id, unsolicited_reason};
use super::builder::{Config, Target};
use super::handshake::{self, AUTH_ID, FIRST_ID, HELLO_ID, MAX_RESPONSE_FRAME, PROBE_ID};
use super::stream::Stream;
use super::{Error, Result};
use crate::protocol::{
    split_frame, HelloOk, LostReason, Request, Response, NOTICE_REQUEST_ID, SHUTDOWN_REQUEST_ID,
};

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
            return Err(unsolicited_reason(resp));
        }
        let mut st = lock(&self.state);
        let Some(pending) = st.pending.remove(&id) else {
            // Not fatal: the caller that sent it is gone and nothing else is affected.
            log::debug!("officer response for unknown request id={id}");
            return Ok(());
        };
        pending.track.record(&mut st.held, &resp);
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
        let pending = &self.pending;
        alloc_id(&mut self.next_id, |id| pending.contains_key(&id))
    }
}

/// HELLO (and AUTH when the server asks), answered before any other traffic. Returns the
/// server's limits and any bytes read past the handshake.
fn handshake(stream: &mut Stream, config: &Config) -> Result<(HelloOk, Vec<u8>)> {
    stream.set_read_timeout(Some(config.connect_timeout))?;
    stream.set_write_timeout(Some(config.connect_timeout))?;
    let mut buf = Vec::new();
    stream.write_all(&handshake::opening())?;
    let hello = handshake::hello(read_reply(stream, &mut buf, HELLO_ID, Some(&config.target))?)?;
    handshake::probe(read_reply(stream, &mut buf, PROBE_ID, None)?)?;
    handshake::check_version(&hello)?;
    if let Some(auth) = handshake::auth_request(config, &hello)? {
        stream.write_all(&auth)?;
        handshake::auth(read_reply(stream, &mut buf, AUTH_ID, None)?)?;
    }
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    Ok((hello, buf))
}

/// Reads until the answer to `id` arrives, during the handshake only (see
/// [`handshake::next_reply`] for `first_of`).
fn read_reply(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    id: u32,
    first_of: Option<&Target>,
) -> Result<Response> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(resp) = handshake::next_reply(buf, id, first_of)? {
            return Ok(resp);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(handshake::closed_early(buf, first_of)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(handshake::silent());
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
