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
//!
//! With a resumable session (`ClientBuilder::session_grace`, PROTOCOL.md §6.14) a `Conn` is the
//! session rather than one socket: the socket under it is a numbered *link*. When a link drops,
//! the reader thread reconnects and resumes (`resume.rs`) while pending callers keep waiting,
//! the replay answers them under their request ids, and what the lost link left unanswered is
//! sent again. Only when the grace runs out (or the server no longer knows the session) is the
//! `Conn` lost, with the locks it held, exactly as a connection without a session.

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
use super::cluster::{self, Members};
use super::handshake::{self, AUTH_ID, FIRST_ID, HELLO_ID, MAX_RESPONSE_FRAME, PROBE_ID};
use super::session::{self, Resent, Session};
use super::stream::Stream;
use super::{Error, Result};
use crate::protocol::{
    split_frame, HelloOk, LostReason, Request, Response, NOTICE_REQUEST_ID, SHUTDOWN_REQUEST_ID,
};

pub(super) struct Pending {
    pub(super) tx: SyncSender<Response>,
    pub(super) track: Track,
    /// With a session: the request as encoded and the link it went out on, to send it again
    /// when that link drops before the answer. `None` without a session.
    pub(super) sent: Option<(Vec<u8>, u64)>,
    /// A request sent again after a resume: the id of the original it stands for, and how
    /// its answer reads ([`session::resent_answer`]).
    pub(super) stands_for: Option<(u32, Resent)>,
}

impl Pending {
    pub(super) fn new(tx: SyncSender<Response>, track: Track) -> Pending {
        Pending { tx, track, sent: None, stands_for: None }
    }
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

pub(super) struct State {
    next_id: u32,
    pub(super) pending: HashMap<u32, Pending>,
    pub(super) held: BTreeSet<String>,
    pub(super) lost: Option<Lost>,
    /// The number of the link requests go out on (1 for the first socket, one more per resume).
    pub(super) link: u64,
    /// False while a session's link is down and being resumed: callers wait instead of sending.
    /// Always true without a session.
    pub(super) attached: bool,
    /// GOODBYE was sent: the server's close that follows is the end, not a loss to resume.
    pub(super) goodbye: bool,
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

/// Why a link ended, and whether a session may resume after it.
struct End {
    reason: String,
    resumable: bool,
}

impl End {
    /// The link broke (closed, reset, garbage): a session resumes.
    fn broken(reason: String) -> End {
        End { reason, resumable: true }
    }
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

pub(super) struct Writer {
    pub(super) stream: Stream,
    buf: Vec<u8>,
    /// The link `stream` belongs to: a request registered on an older one is not written
    /// here, because the resume that installed this stream sends it again.
    pub(super) link: u64,
}

/// A live (or lost) connection. Shared through `Arc` by the client, its guards, the reader
/// thread and the keep-alive thread.
pub(crate) struct Conn {
    /// The current link's HELLO_OK (a resume brings a new connection id).
    pub(super) hello: Mutex<HelloOk>,
    pub(super) writer: Mutex<Writer>,
    /// A clone of the current link's socket (and its number) used only to shut it down, so
    /// closing never waits for a writer.
    pub(super) control: Mutex<(u64, Stream)>,
    pub(super) state: Mutex<State>,
    /// Signalled when the connection is lost, a notice arrives, or a session's link is
    /// resumed.
    pub(super) changed: Condvar,
    /// The resumable session, if the server opened one.
    pub(super) session: Option<Session>,
    /// How the links are opened: kept for resumes.
    pub(super) config: Config,
    /// Resumes that succeeded.
    pub(super) resumes: AtomicU64,
    pub(super) epoch: Instant,
    /// Milliseconds after `epoch` of the last write, read by the keep-alive thread.
    last_write_ms: AtomicU64,
    /// The process that opened the socket: after `fork` a child must not shut down the
    /// socket it shares with its parent (it only drops its copy).
    owner_pid: u32,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("session", &self.session).finish_non_exhaustive()
    }
}

/// Locks a mutex, ignoring poisoning: no user code runs while these locks are held, and the
/// state stays consistent between statements.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conn {
    /// Connects (to the leader, for a cluster), performs the handshake (opening a session when
    /// the config asks for one), and starts the reader and keep-alive threads.
    pub(crate) fn open(config: &Config) -> Result<Arc<Conn>> {
        match &config.cluster {
            None => Conn::open_at(config, config.connect_timeout),
            // Each attempt gets a share of the connect timeout; the connection keeps it whole.
            Some(members) => {
                connect_cluster(config, members, |attempt| Conn::open_at(attempt, config.connect_timeout))
            }
        }
    }

    /// [`Conn::open`] of `config.target` only; the connection keeps `connect_timeout` (for
    /// its resumes and GOODBYE) rather than the attempt's.
    fn open_at(config: &Config, connect_timeout: Duration) -> Result<Arc<Conn>> {
        let mut stream = Stream::connect(&config.target, config.connect_timeout)?;
        let (hello, mut leftover) = handshake(&mut stream, config)?;
        let session = match config.session_grace {
            Some(grace) => open_session(&mut stream, &mut leftover, config, grace)?,
            None => None,
        };
        let reader = stream.try_clone()?;
        let control = stream.try_clone()?;
        let idle_timeout_ms = hello.idle_timeout_ms;
        let conn = Arc::new(Conn {
            hello: Mutex::new(hello),
            writer: Mutex::new(Writer { stream, buf: Vec::new(), link: 1 }),
            control: Mutex::new((1, control)),
            state: Mutex::new(State {
                next_id: FIRST_ID,
                pending: HashMap::new(),
                held: BTreeSet::new(),
                lost: None,
                link: 1,
                attached: true,
                goodbye: false,
                lost_grants: VecDeque::new(),
                contended: VecDeque::new(),
            }),
            changed: Condvar::new(),
            session,
            config: Config { connect_timeout, ..config.clone() },
            resumes: AtomicU64::new(0),
            epoch: Instant::now(),
            last_write_ms: AtomicU64::new(0),
            owner_pid: std::process::id(),
        });
        let for_reader = Arc::clone(&conn);
        thread::Builder::new()
            .name("officer-reader".into())
            .spawn(move || for_reader.read_loop(reader, leftover))?;
        if let Some(interval) = config.keep_alive_interval(idle_timeout_ms) {
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

    /// The current link's HELLO_OK.
    pub(crate) fn hello(&self) -> HelloOk {
        lock(&self.hello).clone()
    }

    /// The session's id and grace, if the server opened one.
    pub(crate) fn session(&self) -> Option<(u64, Duration)> {
        self.session.map(|s| (s.id, s.grace))
    }

    /// How many times the session was resumed after losing its link.
    pub(crate) fn resumes(&self) -> u64 {
        self.resumes.load(Ordering::SeqCst)
    }

    /// Sends one request and waits for its answer (an ERROR answer is returned as a response).
    pub(crate) fn call(&self, req: &Request<'_>, track: Track) -> Result<Response> {
        let (tx, rx) = sync_channel(1);
        let (id, link) = self.register(req, track, tx)?;
        self.send_on(req, id, link);
        // The channel closes without a value only when `fail` dropped the slot.
        rx.recv().map_err(|_| self.lost_error())
    }

    /// Registers a slot for the answer under a fresh id, waiting while a session's link is
    /// being resumed. Returns the id and the link to send on.
    pub(super) fn register(
        &self,
        req: &Request<'_>,
        track: Track,
        tx: SyncSender<Response>,
    ) -> Result<(u32, u64)> {
        let mut st = lock(&self.state);
        loop {
            if let Some(lost) = &st.lost {
                return Err(lost.error());
            }
            if st.attached {
                break;
            }
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let id = st.alloc_id();
        let mut pending = Pending::new(tx, track);
        if self.session.is_some() {
            let mut frame = Vec::new();
            req.encode(id, &mut frame);
            pending.sent = Some((frame, st.link));
        }
        // Registered before writing, so the answer cannot arrive before its slot exists.
        st.pending.insert(id, pending);
        Ok((id, st.link))
    }

    /// Writes `req` on link `link`; a failed write ends that link.
    pub(super) fn send_on(&self, req: &Request<'_>, id: u32, link: u64) {
        if let Err(e) = self.send(req, id, link) {
            self.link_failed(link, &format!("write failed: {e}"));
        }
    }

    fn send(&self, req: &Request<'_>, id: u32, link: u64) -> io::Result<()> {
        let mut w = lock(&self.writer);
        let Writer { stream, buf, link: current } = &mut *w;
        if *current != link {
            // Registered on a link that has been replaced: the resume sent it again.
            return Ok(());
        }
        buf.clear();
        req.encode(id, buf);
        stream.write_all(buf)?;
        self.last_write_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Link `link` is broken. Without a session the connection is lost; with one, the link's
    /// socket is shut down so the reader notices and resumes.
    pub(super) fn link_failed(&self, link: u64, reason: &str) {
        if self.session.is_none() {
            self.fail(reason, false);
            return;
        }
        let control = lock(&self.control);
        if control.0 == link {
            log::debug!("officer link {link} failed: {reason}");
            control.1.shutdown();
        }
    }

    /// Notes that something was written now, for the keep-alive.
    pub(super) fn wrote(&self) {
        self.last_write_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
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

    /// Closes the connection on purpose; the server releases its locks. A session says
    /// GOODBYE first, so the server releases at once instead of keeping the locks for the
    /// grace (a session whose link is down at that moment ends with its grace on the server).
    pub(crate) fn close(&self, reason: &str) {
        if self.owner_pid != std::process::id() {
            // A forked child: shutting the shared socket down would cut off the parent.
            return;
        }
        if self.session.is_some() {
            self.goodbye();
        }
        self.fail(reason, true);
    }

    /// Sends GOODBYE and waits (at most the connect timeout) for its RESET_OK, so the server
    /// has released everything before the socket closes.
    fn goodbye(&self) {
        let (tx, rx) = sync_channel(1);
        let (id, link) = {
            let mut st = lock(&self.state);
            if st.lost.is_some() || !st.attached || st.goodbye {
                return;
            }
            st.goodbye = true;
            let id = st.alloc_id();
            st.pending.insert(id, Pending::new(tx, Track::Reset));
            (id, st.link)
        };
        let written = {
            let mut w = lock(&self.writer);
            w.link == link && w.stream.write_all(&session::goodbye_request(id)).is_ok()
        };
        if written {
            let _ = rx.recv_timeout(self.config.connect_timeout);
        }
    }

    /// Marks the connection lost (the first reason wins), wakes every waiting caller and
    /// shuts the socket down so the reader thread ends.
    pub(super) fn fail(&self, reason: &str, by_client: bool) {
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
        lock(&self.control).1.shutdown();
    }

    /// Reads link after link: the first, then (with a session) each one a resume opens,
    /// until the connection is lost.
    fn read_loop(self: Arc<Self>, mut stream: Stream, mut buf: Vec<u8>) {
        let mut replay = None;
        loop {
            let end = self.read_link(&mut stream, &mut buf, &mut replay);
            log::debug!("officer link ended session={:?} reason={}", self.session, end.reason);
            if !end.resumable {
                self.fail(&end.reason, false);
                return;
            }
            match self.resume_after(end.reason) {
                Some(next) => {
                    stream = next.reader;
                    buf = next.leftover;
                    replay = Some(next.replay);
                }
                None => return,
            }
        }
    }

    /// Reads one link until it ends; returns why. `replay`: the resume of this link, which
    /// is attached once its replayed frames are through.
    fn read_link(
        &self,
        stream: &mut Stream,
        buf: &mut Vec<u8>,
        replay: &mut Option<super::resume::Replay>,
    ) -> End {
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            if let Err(reason) = self.dispatch_all(buf, replay) {
                return reason;
            }
            match stream.read(&mut chunk) {
                Ok(0) => return End::broken("the server closed the connection".to_owned()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return End::broken(format!("read failed: {e}")),
            }
        }
    }

    /// Hands every complete frame in `buf` to its caller; `Err` ends the link.
    fn dispatch_all(
        &self,
        buf: &mut Vec<u8>,
        replay: &mut Option<super::resume::Replay>,
    ) -> std::result::Result<(), End> {
        // A resume whose replay is empty (or through) attaches before anything else is read.
        self.attach_when_replayed(replay);
        let mut consumed = 0;
        let result = loop {
            match split_frame(&buf[consumed..], MAX_RESPONSE_FRAME) {
                Ok(None) => break Ok(()),
                Err(e) => break Err(End::broken(format!("bad frame from the server: {e}"))),
                Ok(Some((frame, len))) => {
                    consumed += len;
                    let resp = match Response::decode(&frame) {
                        Ok(resp) => resp,
                        Err(e) => break Err(End::broken(format!("bad response from the server: {e}"))),
                    };
                    if let Err(reason) = self.dispatch(frame.request_id, resp) {
                        break Err(reason);
                    }
                    if let Some(r) = replay.as_mut() {
                        r.left = r.left.saturating_sub(1);
                    }
                    self.attach_when_replayed(replay);
                }
            }
        };
        buf.drain(..consumed);
        result
    }

    fn dispatch(&self, id: u32, resp: Response) -> std::result::Result<(), End> {
        // Notices share request id 0 with SHUTDOWN and fatal errors; their opcode tells them
        // apart (PROTOCOL.md §4.24, §4.25).
        if id == NOTICE_REQUEST_ID && matches!(resp, Response::Lost { .. } | Response::Contended { .. }) {
            self.notice(resp);
            return Ok(());
        }
        if id == SHUTDOWN_REQUEST_ID {
            // The server ended the connection on purpose (shutdown, a fatal error, the session
            // taken over elsewhere): nothing to resume. In a cluster, though, a leader that
            // lost its lead (or a member shutting down) is a failover, which a session
            // resumes on the new leader.
            let resumable = cluster::is_failover(self.config.cluster.as_deref(), &resp);
            return Err(End { reason: unsolicited_reason(resp), resumable });
        }
        let mut st = lock(&self.state);
        let Some(mut pending) = st.pending.remove(&id) else {
            // Not fatal: the caller that sent it is gone and nothing else is affected.
            log::debug!("officer response for unknown request id={id}");
            return Ok(());
        };
        let mut resp = resp;
        // A resend of a resend (a second resume) stands for the one before it, down to the
        // original.
        while let Some((original, what)) = pending.stands_for {
            // Sent again after a resume: its answer may stand for the original's, the name's
            // hold read as of now ([`Resent::when_answered`]).
            let what = what.when_answered(st.root_track(original), |name| st.held.contains(name));
            let Some(answer) = session::resent_answer(what, resp) else { return Ok(()) };
            let Some(orig) = st.pending.remove(&original) else { return Ok(()) };
            (pending, resp) = (orig, answer);
        }
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
            let attached = {
                let st = lock(&self.state);
                if st.lost.is_some() {
                    return;
                }
                st.attached
            };
            if !attached {
                // A resume is under way; it writes, and this thread pings again after it.
                self.wait_lost(Some(interval));
                continue;
            }
            let now_ms = self.epoch.elapsed().as_millis() as u64;
            let silent =
                Duration::from_millis(now_ms.saturating_sub(self.last_write_ms.load(Ordering::Relaxed)));
            if silent >= interval {
                let pinged = match self.session {
                    None => self.call(&Request::Ping(&[]), Track::None).map(|_| ()),
                    // A ping unanswered for two intervals means a link that is silently dead
                    // (a frozen path: no RST, no FIN): drop it and resume on a fresh one.
                    Some(_) => self.ping_within(interval * 2),
                };
                if pinged.is_err() {
                    return;
                }
                continue;
            }
            if self.wait_lost(Some(interval - silent)) {
                return;
            }
        }
    }

    /// Pings and waits at most `limit` for the PONG; a link that stays silent is shut down
    /// (the resume follows). `Err` only when the connection is lost.
    fn ping_within(&self, limit: Duration) -> Result<()> {
        let ping = Request::Ping(&[]);
        let (tx, rx) = sync_channel(1);
        let (id, link) = self.register(&ping, Track::None, tx)?;
        self.send_on(&ping, id, link);
        match rx.recv_timeout(limit) {
            Ok(_) => Ok(()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                lock(&self.state).pending.remove(&id);
                self.link_failed(link, &format!("no answer to a keep-alive ping within {limit:?}"));
                Ok(())
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(self.lost_error()),
        }
    }
}

impl State {
    /// The tracking of the request `id` stands for, following resends of resends.
    fn root_track(&self, mut id: u32) -> Option<&Track> {
        for _ in 0..=self.pending.len() {
            let p = self.pending.get(&id)?;
            match p.stands_for {
                Some((original, _)) => id = original,
                None => return Some(&p.track),
            }
        }
        None
    }

    /// A fresh request id: never 0 (reserved for the server), never one still waiting, and
    /// never one of the handshake's, which a resume's handshake uses again.
    pub(super) fn alloc_id(&mut self) -> u32 {
        let pending = &self.pending;
        alloc_id(&mut self.next_id, |id| id < FIRST_ID || pending.contains_key(&id))
    }
}

/// Connects to the leader of the cluster of `members` (`ClientBuilder::cluster`): `attempt` connects to the one member `config` is aimed at,
/// and the members are tried as a [`Route`](super::cluster::Route) says, each attempt within
/// its share of the connect timeout, until one succeeds or the connect timeout has passed.
/// The member reached is remembered as the leader.
pub(crate) fn connect_cluster<T>(
    config: &Config,
    members: &Members,
    mut attempt: impl FnMut(&Config) -> Result<T>,
) -> Result<T> {
    let deadline = Instant::now() + config.connect_timeout;
    let share = members.attempt_timeout(config.connect_timeout);
    let mut route = members.route();
    loop {
        let target = route.next();
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let e = match attempt(&config.at(&target, share.min(left))) {
            Ok(t) => {
                members.set_leader(&target);
                return Ok(t);
            }
            Err(e) => e,
        };
        log::debug!("officer cluster member {target} failed: {e}");
        if cluster::is_final(&e) {
            return Err(e.on_server(&target.to_string()));
        }
        let pause = route.failed(&target, &e).unwrap_or_default();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || left <= pause {
            return Err(e.on_server(&target.to_string()));
        }
        thread::sleep(pause);
    }
}

/// SESSION_OPEN right after the handshake, under the handshake's first id (HELLO's answer has
/// come, so it is free again): the session, or `None` when the server opened none.
fn open_session(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    config: &Config,
    grace: Duration,
) -> Result<Option<Session>> {
    stream.set_read_timeout(Some(config.connect_timeout))?;
    stream.write_all(&session::open_request(grace, SESSION_ID))?;
    let opened = session::opened(read_reply(stream, buf, SESSION_ID, None)?);
    stream.set_read_timeout(None)?;
    opened
}

/// The request id of SESSION_OPEN and SESSION_RESUME, sent once the handshake is answered.
pub(super) const SESSION_ID: u32 = HELLO_ID;

/// HELLO (and AUTH when the server asks), answered before any other traffic. Returns the
/// server's limits and any bytes read past the handshake.
pub(super) fn handshake(stream: &mut Stream, config: &Config) -> Result<(HelloOk, Vec<u8>)> {
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
pub(super) fn read_reply(
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
            link: 1,
            attached: true,
            goodbye: false,
            lost_grants: VecDeque::new(),
            contended: VecDeque::new(),
        };
        st.pending.insert(FIRST_ID, Pending::new(tx, Track::None));
        assert_eq!(st.alloc_id(), u32::MAX);
        // 0 is the server's, 1 to 3 the handshake's, 4 is waiting.
        assert_eq!(st.alloc_id(), FIRST_ID + 1);
    }
}
