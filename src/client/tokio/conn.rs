//! One async connection, shared by every task of an [`AsyncClient`](super::AsyncClient).
//!
//! Requests are multiplexed by request id as in the blocking connection, with tasks instead of
//! threads. A call takes a slot in a slab (its request id is the slot's index past
//! [`FIRST_ID`], so matching an answer costs an index, not a hash) and appends its frame to the
//! connection's output buffer in one critical section (so ids and bytes go out in the same
//! order); the writer task writes whatever has piled up in one `write_all`: 64 tasks locking at
//! once cost one write, not 64. The reader task decodes every frame of a read under one lock,
//! keeps the set of held locks ([`Track`]), leaves each answer in its slot and wakes the
//! callers once the lock is released. A call is a future polling its own slot: no channel, no
//! allocation besides the name, per request. A keep-alive task pings when nothing was written
//! for the interval.
//!
//! LOST and CONTENDED notices (PROTOCOL.md §4.24, §4.25) are remembered per grant (the newest
//! [`NOTICES_KEPT`] of each), for the guards' `is_lost`, `lost` and `is_contended`.
//!
//! Cancel-safety lives in [`Call`]'s drop: a LOCK whose future is dropped before its answer is
//! withdrawn with an UNLOCK (PROTOCOL.md §6.4: a waiter's UNLOCK cancels its wait, a holder's
//! releases), and a grant that reaches no one is released when it arrives, so no lock stays
//! held with nobody to release it. Queuing a frame never waits, so guards release on drop
//! without blocking the runtime.
//!
//! With a resumable session (`AsyncClientBuilder::session_grace`, PROTOCOL.md §6.14) the
//! connection is the session, and the socket under it a numbered *link*, as in the blocking
//! client: a driver task runs each link's reader and writer, and when the link ends it
//! reconnects and resumes (`resume.rs`) while calls keep waiting in their slots. Each slot then
//! keeps its request's bytes, so what the lost link left unanswered is sent again under a new
//! id that stands for the original ([`session::resent_answer`]); the cancel-safety rules above
//! apply unchanged to the answers that come back.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ::tokio::io::{AsyncReadExt, AsyncWriteExt};
use ::tokio::sync::{watch, Notify};
use ::tokio::task::AbortHandle;

use super::stream::{self, Link, Reader, Writer};
use crate::client::answer::{unsolicited_reason, Effect, Track};
use crate::client::builder::Config;
use crate::client::cluster::{self, Members};
use crate::client::conn::{Lost, LostGrant};
use crate::client::handshake::{FIRST_ID, MAX_RESPONSE_FRAME};
use crate::client::session::{self, Resent, Session};
use crate::client::{Error, Result};
use crate::protocol::{split_frame, HelloOk, LostReason, Request, Response, SHUTDOWN_REQUEST_ID};

/// Bytes the reader asks the socket for at a time: also what bounds the frames one critical
/// section of the reader handles.
const READ_CHUNK: usize = 16 * 1024;

/// How many notices of each kind are remembered, as in the blocking client: a client that
/// never looks cannot make the reader grow without bound.
pub(crate) const NOTICES_KEPT: usize = 64;

/// Who takes a request's answer.
enum Waiter {
    /// Nobody: a guard's or a withdrawal's UNLOCK, or a call dropped before its answer.
    Nobody,
    /// The caller's [`Call`], with its waker once it was polled.
    Caller(Option<Waker>),
    /// The answer, arrived and not yet taken by the caller.
    Answered(Response),
}

/// A request in flight (or answered and not yet taken).
struct Slot {
    waiter: Waiter,
    track: Track,
    /// For a LOCK whose caller went away: an UNLOCK already follows it on the wire.
    withdrawn: bool,
    /// A LOCK whose caller went away while the connection held the name or another caller
    /// awaited a LOCK of it: its UNLOCK waits until neither is true (`withdraw_orphans`).
    orphan: bool,
    /// With a session: the request's bytes and order, to send it again after a resume
    /// (boxed, so a slot without a session costs one pointer more).
    sent: Option<Box<Sent>>,
}

/// A request as it went out, kept by a session's slot until its answer.
pub(super) struct Sent {
    frame: Vec<u8>,
    /// Grows with every request queued: resends go out in the order of the originals, and a
    /// resend's answer reaches its original only if the slot still holds that request.
    seq: u64,
    /// A request sent again after a resume: the slot (and its `seq`) of the request it stands
    /// for, and how its answer reads.
    stands_for: Option<(usize, u64, Resent)>,
}

impl Slot {
    /// A slot for `waiter`, tracking `track`, its request's bytes in `sent` (with a session).
    fn new(waiter: Waiter, track: Track, sent: Option<Box<Sent>>) -> Slot {
        Slot { waiter, track, withdrawn: false, orphan: false, sent }
    }

    /// For a request sent again after a resume, the request it stands for (see [`Sent`]).
    fn stands_for(&self) -> Option<(usize, u64, Resent)> {
        self.sent.as_ref().and_then(|s| s.stands_for)
    }

    /// Still awaited by a caller and not yet answered.
    fn live(&self) -> bool {
        matches!(self.waiter, Waiter::Caller(_))
    }

    /// On the wire, answer not yet read.
    fn in_flight(&self) -> bool {
        !matches!(self.waiter, Waiter::Answered(_))
    }
}

pub(super) struct State {
    /// Requests by `id - FIRST_ID`; `None` is a free slot, listed in `free`. A slot is reused
    /// only after its answer was read, so an id is never in flight twice.
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Full names of the locks held, from the answers read so far.
    held: HashSet<String, NameHash>,
    pub(super) lost: Option<Lost>,
    /// Frames queued for the writer task, in request-id order.
    pub(super) out: Vec<u8>,
    /// The name of each pending LOCK that is `orphan` (once per orphan): an answer about a
    /// name not in it costs no scan of the slots.
    orphans: Vec<String>,
    /// Grants the server said it ended (LOST notices), newest last, at most `NOTICES_KEPT`.
    lost_grants: VecDeque<LostGrant>,
    /// Grants someone started waiting behind (CONTENDED notices), at most `NOTICES_KEPT`.
    contended: VecDeque<(String, u64)>,
    /// The driver (which runs each link's reader and writer) and keep-alive tasks, aborted
    /// when the connection ends.
    tasks: Vec<AbortHandle>,
    /// A session is open: slots keep their requests' bytes for a resume.
    session: bool,
    /// False while a session's link is down and being resumed: requests are kept in their
    /// slots, not queued, and the resume sends them. Always true without a session.
    pub(super) attached: bool,
    /// GOODBYE was queued: the end of the link that follows is not a loss to resume.
    goodbye: bool,
    /// The number of the current link (1 for the first socket, one more per resume).
    pub(super) link: u64,
    /// The `seq` of the next request queued with a session.
    next_seq: u64,
}

/// A live (or lost) connection, shared through `Arc` by the client, its guards and its tasks.
pub(crate) struct AsyncConn {
    /// The first link's HELLO_OK: the server's limits, which a resume (to the same server)
    /// does not change.
    hello: HelloOk,
    /// The current link's connection id (a resume brings a new one).
    connection_id: AtomicU64,
    /// The resumable session, if the server opened one.
    pub(super) session: Option<Session>,
    /// How links are opened: kept for resumes.
    pub(super) config: Config,
    /// Resumes that succeeded.
    pub(super) resumes: AtomicU64,
    /// The number of a link to end (a keep-alive ping went unanswered on it): the driver
    /// watches it for the current link.
    pub(super) kill: watch::Sender<u64>,
    pub(super) state: Mutex<State>,
    /// Wakes the writer task when `State::out` turns non-empty (or the connection ended).
    wake_writer: Notify,
    /// Woken on every LOST notice and when the connection ends, for the guards' `lost`.
    notices: Notify,
    /// Set when the connection is lost, for cheap checks and for `wait_disconnected`.
    lost_flag: AtomicBool,
    lost_tx: watch::Sender<bool>,
    epoch: Instant,
    /// Milliseconds after `epoch` of the last write, read by the keep-alive task.
    last_write_ms: AtomicU64,
}

impl std::fmt::Debug for AsyncConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncConn").field("connection_id", &self.hello.connection_id).finish_non_exhaustive()
    }
}

/// Locks a mutex, ignoring poisoning: no user code runs while it is held, and the state stays
/// consistent between statements.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Appends `item`, forgetting the oldest past `NOTICES_KEPT`.
fn remember<T>(list: &mut VecDeque<T>, item: T) {
    if list.len() == NOTICES_KEPT {
        list.pop_front();
    }
    list.push_back(item);
}

/// The blocking client's `connect_cluster` with tokio: the members of `members` tried as a
/// [`Route`](crate::client::cluster::Route) says, each attempt within its share of the connect
/// timeout, until one is the leader or the connect timeout has passed.
async fn open_cluster(config: &Config, members: &Members) -> Result<Arc<AsyncConn>> {
    let deadline = Instant::now() + config.connect_timeout;
    let share = members.attempt_timeout(config.connect_timeout);
    let mut route = members.route();
    loop {
        let target = route.next();
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        // Each attempt gets a share of the connect timeout; the connection keeps it whole.
        let e = match AsyncConn::open_at(&config.at(&target, share.min(left)), config.connect_timeout).await {
            Ok(conn) => {
                members.set_leader(&target);
                return Ok(conn);
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
        ::tokio::time::sleep(pause).await;
    }
}

impl AsyncConn {
    /// Connects, performs the handshake (opening a session when the config asks for one),
    /// and spawns the driver (which runs the link's reader and writer) and keep-alive tasks
    /// on the current runtime.
    pub(crate) async fn open(config: &Config) -> Result<Arc<AsyncConn>> {
        match &config.cluster {
            None => Self::open_at(config, config.connect_timeout).await,
            Some(members) => open_cluster(config, members).await,
        }
    }

    /// [`AsyncConn::open`] of `config.target` only; the connection keeps `connect_timeout`
    /// (for its resumes) rather than the attempt's.
    async fn open_at(config: &Config, connect_timeout: Duration) -> Result<Arc<AsyncConn>> {
        let (hello, mut link) = stream::connect(config).await?;
        let session = match config.session_grace {
            Some(grace) => {
                let ask = session::open_request(grace, crate::client::conn::SESSION_ID);
                session::opened(stream::exchange(config, &mut link, &ask).await?)?
            }
            None => None,
        };
        Ok(Self::start(&Config { connect_timeout, ..config.clone() }, hello, session, link))
    }

    fn start(config: &Config, hello: HelloOk, session: Option<Session>, link: Link) -> Arc<AsyncConn> {
        let interval = config.keep_alive_interval(hello.idle_timeout_ms);
        let conn = Arc::new(AsyncConn {
            connection_id: AtomicU64::new(hello.connection_id),
            hello,
            session,
            config: config.clone(),
            resumes: AtomicU64::new(0),
            kill: watch::channel(0).0,
            state: Mutex::new(State {
                slots: Vec::new(),
                free: Vec::new(),
                held: HashSet::with_hasher(NameHash::new()),
                lost: None,
                out: Vec::new(),
                orphans: Vec::new(),
                lost_grants: VecDeque::new(),
                contended: VecDeque::new(),
                tasks: Vec::new(),
                session: session.is_some(),
                attached: true,
                goodbye: false,
                link: 1,
                next_seq: 0,
            }),
            wake_writer: Notify::new(),
            notices: Notify::new(),
            lost_flag: AtomicBool::new(false),
            lost_tx: watch::channel(false).0,
            epoch: Instant::now(),
            last_write_ms: AtomicU64::new(0),
        });
        let mut tasks =
            vec![::tokio::spawn(super::resume::drive(EndOnDrop(Arc::clone(&conn)), link)).abort_handle()];
        if let Some(interval) = interval {
            tasks.push(::tokio::spawn(Arc::clone(&conn).keep_alive_loop(interval)).abort_handle());
        }
        let mut st = lock(&conn.state);
        if st.lost.is_some() {
            // Ended before the handles were stored: nobody else will abort the tasks.
            tasks.iter().for_each(AbortHandle::abort);
        } else {
            st.tasks = tasks;
        }
        drop(st);
        conn
    }

    /// The server's HELLO_OK: the first link's limits, with the current link's connection id.
    pub(crate) fn server_info(&self) -> HelloOk {
        HelloOk { connection_id: self.connection_id.load(Ordering::Relaxed), ..self.hello.clone() }
    }

    /// The session's id and grace, if the server opened one.
    pub(crate) fn session(&self) -> Option<(u64, Duration)> {
        self.session.map(|s| (s.id, s.grace))
    }

    /// How many times the session was resumed after losing its link.
    pub(crate) fn resumes(&self) -> u64 {
        self.resumes.load(Ordering::SeqCst)
    }

    /// Records the connection id of a resumed link.
    pub(super) fn set_connection_id(&self, id: u64) {
        self.connection_id.store(id, Ordering::Relaxed);
    }

    /// Wakes the writer task for frames queued in `State::out`.
    pub(super) fn notify_writer(&self) {
        self.wake_writer.notify_one();
    }

    pub(crate) fn hello(&self) -> &HelloOk {
        &self.hello
    }

    /// The call that sends `req` and awaits its answer; `lock_name` is the full name for a
    /// LOCK, so that dropping the call withdraws it. The request is queued when the call is
    /// first polled, in the same critical section that registers its waker.
    pub(crate) fn start_call<'a>(
        &'a self,
        req: Request<'a>,
        track: Track,
        lock_name: Option<&'a str>,
    ) -> Call<'a> {
        Call { conn: self, stage: Stage::Unsent(Unsent::Request(req, track)), lock_name }
    }

    /// The call that sends an UNLOCK of `full` (moved into its tracking, not copied).
    pub(crate) fn start_unlock(&self, full: String) -> Call<'_> {
        Call { conn: self, stage: Stage::Unsent(Unsent::Unlock(full)), lock_name: None }
    }

    /// Sends `req` and waits for its answer (an ERROR answer is returned as a response).
    pub(crate) async fn call(&self, req: Request<'_>, track: Track) -> Result<Response> {
        self.start_call(req, track, None).await
    }

    /// Queues `req` with nobody awaiting its answer; never waits. On a lost connection there
    /// is nothing to do: the server has already released everything.
    pub(crate) fn send_detached(&self, req: &Request<'_>, track: Track) {
        let mut st = lock(&self.state);
        if st.lost.is_none() {
            let (_, wake) = st.queue(req, Waiter::Nobody, track);
            drop(st);
            if wake {
                self.wake_writer.notify_one();
            }
        }
    }

    /// True once the connection has ended.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost_flag.load(Ordering::Acquire)
    }

    /// The loss, if the connection has ended.
    pub(crate) fn lost(&self) -> Option<Lost> {
        lock(&self.state).lost.clone()
    }

    /// Why the server ended grant `token` of `full_name` (a LOST notice), if it did.
    pub(crate) fn grant_lost(&self, full_name: &str, token: u64) -> Option<LostReason> {
        let st = lock(&self.state);
        st.lost_grants.iter().find(|g| g.token == token && g.name == full_name).map(|g| g.reason)
    }

    /// Whether someone started waiting behind grant `token` of `full_name` (CONTENDED).
    pub(crate) fn contended(&self, full_name: &str, token: u64) -> bool {
        let st = lock(&self.state);
        st.contended.iter().any(|(name, t)| *t == token && name == full_name)
    }

    /// Waits until grant `token` of `full_name` is lost: `Some` with the server's reason for
    /// a LOST notice, `None` when the connection ended (taking the grant with it).
    pub(crate) async fn wait_grant_lost(&self, full_name: &str, token: u64) -> Option<LostReason> {
        loop {
            // Registered before looking, so a notice between the look and the wait wakes it.
            let mut notified = pin!(self.notices.notified());
            notified.as_mut().enable();
            if let Some(reason) = self.grant_lost(full_name, token) {
                return Some(reason);
            }
            if self.is_lost() {
                return None;
            }
            notified.await;
        }
    }

    /// Waits until the connection is lost, at most `timeout` (`None`: forever).
    pub(crate) async fn wait_lost(&self, timeout: Option<Duration>) -> bool {
        let mut rx = self.lost_tx.subscribe();
        let lost = rx.wait_for(|lost| *lost);
        match timeout {
            None => {
                // The sender lives in `self`, so the wait ends only when the flag is set.
                let _ = lost.await;
            }
            Some(t) => {
                let _ = ::tokio::time::timeout(t, lost).await;
            }
        }
        self.is_lost()
    }

    /// Closes the connection on purpose; the server releases its locks.
    pub(crate) fn close(&self, reason: &str) {
        self.fail(reason, true);
    }

    /// Marks the connection lost (the first reason wins), wakes every waiting call and aborts
    /// the tasks, which drops both halves of the socket and so closes it. Answers already
    /// read stay in their slots for their callers; no slot is reused after this.
    ///
    /// A session closed on purpose while attached says GOODBYE instead (the server then
    /// releases at once rather than after the grace): the frame is left for the writer, and
    /// the link's tasks run on until the server closes it (or the connect timeout).
    pub(super) fn fail(&self, reason: &str, by_client: bool) {
        let mut wakers = Vec::new();
        let tasks = {
            let mut st = lock(&self.state);
            if st.lost.is_some() {
                return;
            }
            let goodbye = by_client && st.session && st.attached && !st.goodbye;
            let mut released: Vec<String> = st.held.drain().collect();
            released.sort_unstable();
            st.lost = Some(Lost { reason: reason.to_owned(), released, by_client });
            for entry in st.slots.iter_mut() {
                match entry {
                    Some(Slot { waiter: Waiter::Answered(_), .. }) => {}
                    Some(Slot { waiter: Waiter::Caller(waker), .. }) => {
                        wakers.extend(waker.take());
                        *entry = None;
                    }
                    _ => *entry = None,
                }
            }
            st.orphans.clear();
            st.out.clear();
            let mut tasks = std::mem::take(&mut st.tasks);
            if goodbye && !tasks.is_empty() {
                st.goodbye = true;
                st.out = session::goodbye_request(crate::client::conn::SESSION_ID);
                // The driver (the first task) is left to write it and see the close.
                tasks.remove(0);
            }
            tasks
        };
        self.lost_flag.store(true, Ordering::Release);
        self.lost_tx.send_replace(true);
        self.wake_writer.notify_one();
        self.notices.notify_waiters();
        wakers.into_iter().for_each(Waker::wake);
        tasks.iter().for_each(AbortHandle::abort);
    }

    /// A call dropped before its answer was taken. A LOCK is withdrawn: if its answer came
    /// already and granted the lock, the lock is released; if not, an UNLOCK follows it so the
    /// server cancels the wait (or releases the grant it sends meanwhile). While the
    /// connection holds the name or another caller on it still awaits a LOCK of it, that
    /// UNLOCK could release a hold or cancel a wait that is somebody's: the LOCK is left an
    /// orphan, withdrawn by the answer that ends that state (`withdraw_orphans`); a grant it
    /// gets meanwhile is released on arrival.
    fn abandon(&self, idx: usize, lock_name: Option<&str>) {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        if st.lost.is_some() {
            // The server has released everything; the slot is never reused.
            return;
        }
        let answered = match st.slots.get(idx).and_then(Option::as_ref) {
            None => return,
            Some(slot) => !slot.in_flight(),
        };
        let queued = if answered {
            let granted = matches!(
                st.release(idx),
                Some(Slot { waiter: Waiter::Answered(Response::Acquired { .. }), .. })
            );
            match (lock_name, granted) {
                (Some(full), true) => {
                    st.queue_unlock(full);
                    true
                }
                _ => false,
            }
        } else {
            if let Some(slot) = st.slots[idx].as_mut() {
                slot.waiter = Waiter::Nobody;
                slot.orphan = lock_name.is_some();
            }
            match lock_name {
                // Whether to withdraw it now or once the name is neither held nor awaited by
                // another caller is one decision, taken in `withdraw_orphans`.
                Some(full) => {
                    st.orphans.push(full.to_owned());
                    st.withdraw_orphans(full)
                }
                // Any other answer is dropped when it arrives.
                None => false,
            }
        };
        drop(guard);
        if queued {
            self.wake_writer.notify_one();
        }
    }

    /// Hands every complete frame in `buf` to its caller under one lock, then wakes them
    /// (outside the lock: a waker may run anything); `Err` ends the connection.
    /// At most `*limit` frames are handled (a resume's replay), counted down.
    pub(super) fn dispatch_all(
        &self,
        buf: &mut Vec<u8>,
        wakers: &mut Vec<Waker>,
        limit: &mut u64,
    ) -> std::result::Result<(), End> {
        let mut consumed = 0;
        let mut queued = false;
        let mut noticed = false;
        let result = {
            let mut st = lock(&self.state);
            loop {
                if st.lost.is_some() || *limit == 0 {
                    break Ok(());
                }
                match split_frame(&buf[consumed..], MAX_RESPONSE_FRAME) {
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(End::broken(format!("bad frame from the server: {e}"))),
                    Ok(Some((frame, len))) => {
                        consumed += len;
                        *limit -= 1;
                        let resp = match Response::decode(&frame) {
                            Ok(resp) => resp,
                            Err(e) => break Err(End::broken(format!("bad response from the server: {e}"))),
                        };
                        // LOST and CONTENDED notices share request id 0 with fatal frames
                        // (PROTOCOL.md §4.24, §4.25).
                        if resp.is_notice(frame.request_id) {
                            noticed |= st.notice(resp);
                            continue;
                        }
                        if frame.request_id == SHUTDOWN_REQUEST_ID {
                            // Shutdown, a fatal error, the session taken over elsewhere: the
                            // server ended it on purpose, nothing to resume; but in a cluster a
                            // leader that lost its lead (or a member shutting down) is a
                            // failover, which a session resumes on the new leader.
                            let resumable = cluster::is_failover(self.config.cluster.as_deref(), &resp);
                            break Err(End { reason: unsolicited_reason(resp), resumable });
                        }
                        queued |= st.dispatch(frame.request_id, resp, wakers);
                    }
                }
            }
        };
        buf.drain(..consumed);
        wakers.drain(..).for_each(Waker::wake);
        if noticed {
            self.notices.notify_waiters();
        }
        if queued {
            self.wake_writer.notify_one();
        }
        result
    }

    async fn keep_alive_loop(self: Arc<Self>, interval: Duration) {
        loop {
            let (attached, link) = {
                let st = lock(&self.state);
                (st.attached, st.link)
            };
            if !attached {
                // A resume is under way; it writes, and this task pings again after it.
                if self.wait_lost(Some(interval)).await {
                    return;
                }
                continue;
            }
            let now_ms = self.epoch.elapsed().as_millis() as u64;
            let silent =
                Duration::from_millis(now_ms.saturating_sub(self.last_write_ms.load(Ordering::Relaxed)));
            if silent >= interval {
                let ping = self.call(Request::Ping(&[]), Track::None);
                if self.session.is_none() {
                    if ping.await.is_err() {
                        return;
                    }
                    continue;
                }
                // A ping unanswered for two intervals means a link that is silently dead (a
                // frozen path: no RST, no FIN): end it, and the driver resumes on a fresh one.
                match ::tokio::time::timeout(interval * 2, ping).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return,
                    Err(_) => self.link_failed(
                        link,
                        &format!("no answer to a keep-alive ping within {:?}", interval * 2),
                    ),
                }
                continue;
            }
            if self.wait_lost(Some(interval - silent)).await {
                return;
            }
        }
    }

    /// Link `link` is broken (a session's keep-alive found it silent): the driver ends it and
    /// resumes, if it is still the current one.
    fn link_failed(&self, link: u64, reason: &str) {
        log::debug!("officer link {link} failed: {reason}");
        self.kill.send_replace(link);
    }
}

/// Why a link ended, and whether a session may resume after it.
pub(super) struct End {
    pub(super) reason: String,
    pub(super) resumable: bool,
}

impl End {
    /// The link broke (closed, reset, garbage): a session resumes.
    pub(super) fn broken(reason: String) -> End {
        End { reason, resumable: true }
    }
}

/// A link's reader task: every answer to its caller, until the link ends; returns why.
pub(super) async fn read_loop(conn: Arc<AsyncConn>, mut rd: Reader, mut buf: Vec<u8>) -> End {
    let mut wakers = Vec::new();
    loop {
        let mut unlimited = u64::MAX;
        if let Err(end) = conn.dispatch_all(&mut buf, &mut wakers, &mut unlimited) {
            return end;
        }
        buf.reserve(READ_CHUNK);
        match rd.read_buf(&mut buf).await {
            Ok(0) => return End::broken("the server closed the connection".to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return End::broken(format!("read failed: {e}")),
        }
    }
}

/// A link's writer task: whatever frames piled up, in one write each time it wakes; returns
/// why it stopped.
pub(super) async fn write_loop(conn: Arc<AsyncConn>, mut wr: Writer) -> End {
    let mut batch = Vec::new();
    loop {
        let goodbye = {
            let mut st = lock(&conn.state);
            if st.lost.is_some() && st.out.is_empty() {
                return End { reason: "closed".to_owned(), resumable: false };
            }
            std::mem::swap(&mut st.out, &mut batch);
            st.lost.is_some()
        };
        if batch.is_empty() {
            // A frame queued after the swap finds `out` empty and notifies: the permit
            // `notify_one` leaves makes this return at once even if it came first.
            conn.wake_writer.notified().await;
            continue;
        }
        if let Err(e) = wr.write_all(&batch).await {
            return End::broken(format!("write failed: {e}"));
        }
        conn.last_write_ms.store(conn.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        batch.clear();
        if goodbye {
            // GOODBYE is out: the server answers and closes, which ends the reader. Closing
            // first could reset the connection before the server read it.
            ::tokio::time::sleep(conn.config.connect_timeout).await;
            return End { reason: "closed".to_owned(), resumable: false };
        }
    }
}

impl State {
    /// Takes a free slot for a request answered to `waiter` and queues `req`'s frame under its
    /// id; registered before the bytes can leave, so the answer cannot arrive before its slot
    /// exists. Returns the slot's index and whether the writer must be woken (`out` was
    /// empty: otherwise it was woken already for the bytes before).
    fn queue(&mut self, req: &Request<'_>, waiter: Waiter, track: Track) -> (usize, bool) {
        let (idx, wake, sent) = self.encode(req);
        self.slots[idx] = Some(Slot::new(waiter, track, sent));
        (idx, wake)
    }

    /// Reserves a slot and queues `req`'s frame under its id; the caller fills the slot. With
    /// a session the bytes are also kept, for the slot (returned); while detached they are
    /// only kept, and the resume sends them.
    fn encode(&mut self, req: &Request<'_>) -> (usize, bool, Option<Box<Sent>>) {
        let idx = self.take_slot();
        // Ids wrap only past four billion requests in flight, far beyond any memory.
        let id = FIRST_ID.wrapping_add(idx as u32);
        if !self.session {
            let wake = self.out.is_empty();
            req.encode(id, &mut self.out);
            return (idx, wake, None);
        }
        let mut frame = Vec::new();
        req.encode(id, &mut frame);
        let wake = self.attached && self.out.is_empty();
        if self.attached {
            self.out.extend_from_slice(&frame);
        }
        (idx, wake, Some(self.sent(frame)))
    }

    /// A free slot's index (the slab grows when none is free).
    fn take_slot(&mut self) -> usize {
        match self.free.pop() {
            Some(idx) => idx,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        }
    }

    /// `frame` as a session's slot keeps it, numbered after every request before it.
    fn sent(&mut self, frame: Vec<u8>) -> Box<Sent> {
        self.next_seq += 1;
        Box::new(Sent { frame, seq: self.next_seq, stands_for: None })
    }

    /// Attaches link `link` once a resume's replay is through: sends again every request in
    /// flight (PROTOCOL.md §6.14 "Answers in flight"), each under a new id that stands for it,
    /// in the order the originals were queued; what was queued while detached goes out the
    /// same way. A request that already has a resend in flight is covered by it (that resend
    /// is sent again instead); a resend whose original was answered meanwhile is dropped.
    pub(super) fn attach(&mut self, link: u64) {
        let mut dropped = Vec::new();
        let mut covered = HashSet::new();
        for (idx, slot) in self.slots.iter().enumerate() {
            let Some(slot) = slot.as_ref().filter(|s| s.in_flight()) else { continue };
            if let Some((original, seq, _)) = slot.stands_for() {
                if self.sent_seq(original) == Some(seq) {
                    covered.insert(original);
                } else {
                    dropped.push(idx);
                }
            }
        }
        for idx in dropped {
            self.release(idx);
        }
        let mut stale: Vec<(u64, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(idx, _)| !covered.contains(idx))
            .filter_map(|(idx, s)| s.as_ref().filter(|s| s.in_flight())?.sent.as_ref().map(|s| (s.seq, idx)))
            .collect();
        stale.sort_unstable();
        self.out.clear();
        for (seq, original) in stale {
            let Some(slot) = self.slots[original].as_ref() else { continue };
            let what = match slot.stands_for() {
                Some((_, _, what)) => what,
                None => Resent::of(&slot.track, |name| self.held.contains(name)),
            };
            let Some(frame) = slot.sent.as_ref().map(|s| s.frame.clone()) else { continue };
            let idx = self.take_slot();
            let frame = session::with_request_id(&frame, FIRST_ID.wrapping_add(idx as u32));
            self.out.extend_from_slice(&frame);
            let mut sent = self.sent(frame);
            sent.stands_for = Some((original, seq, what));
            self.slots[idx] = Some(Slot::new(Waiter::Nobody, Track::None, Some(sent)));
        }
        self.link = link;
        self.attached = true;
    }

    /// Frees slot `idx` and returns what it held.
    fn release(&mut self, idx: usize) -> Option<Slot> {
        let slot = self.slots.get_mut(idx)?.take()?;
        self.free.push(idx);
        Some(slot)
    }

    /// Queues an UNLOCK of `full` that nobody awaits.
    fn queue_unlock(&mut self, full: &str) {
        self.queue_unlock_owned(full.to_owned(), Waiter::Nobody);
    }

    /// Queues an UNLOCK of `full`, the name moving into its tracking once encoded.
    fn queue_unlock_owned(&mut self, full: String, waiter: Waiter) -> (usize, bool) {
        let (idx, wake, sent) = self.encode(&Request::Unlock(&full));
        self.slots[idx] = Some(Slot::new(waiter, Track::Unlock(full), sent));
        (idx, wake)
    }

    /// Delivers one answer; true when it queued a frame (the release of an orphaned grant).
    /// A caller's waker goes to `wakers`.
    fn dispatch(&mut self, id: u32, resp: Response, wakers: &mut Vec<Waker>) -> bool {
        let idx = id.wrapping_sub(FIRST_ID) as usize;
        let Some(slot) = self.slots.get_mut(idx).and_then(Option::as_mut).filter(|s| s.in_flight()) else {
            // Not fatal: nothing else is affected.
            log::debug!("officer response for unknown request id={id}");
            return false;
        };
        if let Some((original, seq, what)) = slot.stands_for() {
            self.release(idx);
            return self.resent_answered(original, seq, what, resp, wakers);
        }
        let track = std::mem::replace(&mut slot.track, Track::None);
        let (orphan, withdrawn) = (slot.orphan, slot.withdrawn);
        let effect = track.effect(&resp);
        let granted = matches!(resp, Response::Acquired { .. });
        let claimed = match std::mem::replace(&mut slot.waiter, Waiter::Nobody) {
            Waiter::Caller(waker) => {
                wakers.extend(waker);
                slot.waiter = Waiter::Answered(resp);
                true
            }
            _ => {
                self.release(idx);
                false
            }
        };
        let mut queued = false;
        if let Track::Lock(full) = &track {
            if orphan {
                if let Some(at) = self.orphans.iter().position(|n| n == full) {
                    self.orphans.swap_remove(at);
                }
            }
            // Nobody takes this answer. A fresh grant to a LOCK not yet withdrawn would stay
            // held with nobody to release it.
            if granted && !claimed && !withdrawn {
                self.queue_unlock(full);
                queued = true;
            }
        }
        // The answer's name, needed past its move into `held` only while orphans exist.
        let orphan_check = match self.orphans.is_empty() {
            true => None,
            false => track.name().map(str::to_owned),
        };
        self.record(effect, track);
        // This answer may have been what kept an orphaned LOCK of the name from its UNLOCK.
        if let Some(full) = orphan_check {
            queued |= self.withdraw_orphans(&full);
        }
        queued
    }

    /// The answer `resp` to a request sent again after a resume, standing for slot `original`
    /// (if it still holds request `seq`): delivered as the original's answer when it is one
    /// ([`session::resent_answer`]); an ALREADY_WAITING leaves the original waiting.
    fn resent_answered(
        &mut self,
        original: usize,
        seq: u64,
        what: Resent,
        resp: Response,
        wakers: &mut Vec<Waker>,
    ) -> bool {
        if self.sent_seq(original) != Some(seq) {
            log::debug!("officer answer to a resent request whose original is gone");
            return false;
        }
        let what = what.when_answered(self.root_track(original), |name| self.held.contains(name));
        match session::resent_answer(what, resp) {
            Some(answer) => self.dispatch(FIRST_ID.wrapping_add(original as u32), answer, wakers),
            None => false,
        }
    }

    /// The `seq` of the request slot `idx` holds, if it is in flight with a session.
    fn sent_seq(&self, idx: usize) -> Option<u64> {
        let slot = self.slots.get(idx)?.as_ref().filter(|s| s.in_flight())?;
        slot.sent.as_ref().map(|s| s.seq)
    }

    /// The tracking of the request slot `idx` stands for, following resends of resends (each
    /// step only to a slot that still holds the request it was sent for).
    fn root_track(&self, mut idx: usize) -> Option<&Track> {
        for _ in 0..=self.slots.len() {
            let slot = self.slots.get(idx)?.as_ref()?;
            match slot.stands_for() {
                Some((original, seq, _)) if self.sent_seq(original) == Some(seq) => idx = original,
                Some(_) => return None,
                None => return Some(&slot.track),
            }
        }
        None
    }

    /// Applies an answer's effect on the held set, moving the tracked name into it.
    fn record(&mut self, effect: Effect, track: Track) {
        match (effect, track) {
            (Effect::Insert, Track::Lock(name)) => {
                self.held.insert(name);
            }
            (Effect::Remove, Track::Unlock(name)) => {
                self.held.remove(&name);
            }
            (Effect::Clear, _) => self.held.clear(),
            _ => {}
        }
    }

    /// A LOST or CONTENDED notice; true for LOST (the guards' `lost` waits for those).
    fn notice(&mut self, resp: Response) -> bool {
        match resp {
            Response::Lost { name, token, reason } => {
                log::debug!("officer grant lost name={name} token={token} reason={}", reason.as_str());
                self.held.remove(&name);
                remember(&mut self.lost_grants, LostGrant { name, token, reason });
                true
            }
            Response::Contended { name, token } => {
                remember(&mut self.contended, (name, token));
                false
            }
            _ => false,
        }
    }

    /// Withdraws the orphaned LOCKs of `full` with one UNLOCK (queued after all of them, it
    /// cancels the connection's one wait for the name, or releases its grant), once the
    /// connection does not hold the name and no caller awaits a LOCK of it: until then the
    /// UNLOCK could release a hold or cancel a wait that is somebody's. True when it queued.
    /// Scans the slots only while an orphan of `full` exists.
    fn withdraw_orphans(&mut self, full: &str) -> bool {
        let of_name = |s: &Slot| matches!(&s.track, Track::Lock(name) if name == full);
        if !self.orphans.iter().any(|n| n == full)
            || self.held.contains(full)
            || self.slots.iter().flatten().any(|s| of_name(s) && s.live())
        {
            return false;
        }
        let mut withdrew = 0;
        for s in self.slots.iter_mut().flatten().filter(|s| s.orphan && of_name(s)) {
            (s.orphan, s.withdrawn) = (false, true);
            withdrew += 1;
        }
        self.orphans.retain(|n| n != full);
        if withdrew > 0 {
            self.queue_unlock(full);
        }
        withdrew > 0
    }
}

/// Ends the connection when the reader's or writer's future is dropped unfinished (aborted,
/// or its runtime shut down, even before the task first ran), so no call waits for an answer
/// nobody will read. A no-op after the connection ended, which is how those tasks usually stop.
pub(super) struct EndOnDrop(pub(super) Arc<AsyncConn>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.fail("the connection's tasks were stopped (was their runtime shut down?)", false);
    }
}

/// One request, sent on its first poll, then awaiting its answer: a future that polls its
/// slot. Dropping it once sent and before the answer is taken abandons it
/// ([`AsyncConn::abandon`]): that is what makes a dropped `lock` future safe.
pub(crate) struct Call<'a> {
    conn: &'a AsyncConn,
    stage: Stage<'a>,
    /// The full name, for a LOCK.
    lock_name: Option<&'a str>,
}

enum Stage<'a> {
    Unsent(Unsent<'a>),
    /// Queued in this slot.
    Sent(usize),
    Done,
}

/// A request not yet queued.
enum Unsent<'a> {
    Request(Request<'a>, Track),
    /// An UNLOCK, its name moving into the tracking once encoded.
    Unlock(String),
}

impl Future for Call<'_> {
    /// The answer (an ERROR answer too), or the connection-lost error.
    type Output = Result<Response>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Response>> {
        let this = &mut *self;
        let idx = match std::mem::replace(&mut this.stage, Stage::Done) {
            Stage::Done => return Poll::Ready(Err(Error::protocol("an answered call was polled again"))),
            Stage::Unsent(unsent) => {
                let waker = Waiter::Caller(Some(cx.waker().clone()));
                let (idx, wake) = {
                    let mut st = lock(&this.conn.state);
                    if let Some(lost) = &st.lost {
                        return Poll::Ready(Err(lost.error()));
                    }
                    match unsent {
                        Unsent::Request(req, track) => st.queue(&req, waker, track),
                        Unsent::Unlock(full) => st.queue_unlock_owned(full, waker),
                    }
                };
                this.stage = Stage::Sent(idx);
                if wake {
                    this.conn.wake_writer.notify_one();
                }
                // The answer cannot be in before the writer ran.
                return Poll::Pending;
            }
            Stage::Sent(idx) => idx,
        };
        let mut guard = lock(&this.conn.state);
        let st = &mut *guard;
        let answered = match st.slots.get_mut(idx).and_then(Option::as_mut) {
            Some(Slot { waiter: Waiter::Answered(_), .. }) => true,
            Some(Slot { waiter: Waiter::Caller(waker), .. }) if st.lost.is_none() => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                this.stage = Stage::Sent(idx);
                return Poll::Pending;
            }
            _ => false,
        };
        if answered {
            if let Some(Slot { waiter: Waiter::Answered(resp), .. }) = st.release(idx) {
                return Poll::Ready(Ok(resp));
            }
        }
        // A slot without an answer goes only with the connection.
        Poll::Ready(Err(match &st.lost {
            Some(lost) => lost.error(),
            None => Error::protocol("request slot dropped while connected"),
        }))
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        // Unsent: nothing went out. Done: the answer was taken.
        if let Stage::Sent(idx) = self.stage {
            self.conn.abandon(idx, self.lock_name);
        }
    }
}

/// Hashes the held set's names with a multiply-rotate over 8-byte words and a final mix,
/// seeded per connection: several times cheaper than SipHash for short names. The names are
/// the application's own and the server's echoes of them, not an attacker's input.
#[derive(Clone)]
struct NameHash(u64);

impl NameHash {
    fn new() -> NameHash {
        NameHash(std::collections::hash_map::RandomState::new().build_hasher().finish())
    }
}

impl BuildHasher for NameHash {
    type Hasher = NameHasher;

    fn build_hasher(&self) -> NameHasher {
        NameHasher(self.0)
    }
}

struct NameHasher(u64);

impl NameHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.add(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        // Spreads every input bit over the low bits the table indexes by.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differing_in_any_byte_hash_apart() {
        let hash = NameHash(7);
        let h = |s: &str| hash.hash_one(s);
        assert_ne!(h("bench:0000000001"), h("bench:0000000002"));
        assert_ne!(h("a"), h("a\0"));
        assert_ne!(h(""), h("\0"));
        // The low bits (what a table of 64 buckets uses) differ for names one digit apart.
        let buckets: HashSet<u64> = (0..64).map(|i| h(&format!("bench:{i:010}")) & 63).collect();
        assert!(buckets.len() > 32, "names one digit apart crowd into {} of 64 buckets", buckets.len());
    }
}
