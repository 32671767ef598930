//! One async connection, shared by every task of an [`AsyncClient`](super::AsyncClient).
//!
//! Requests are multiplexed by request id as in the blocking connection, with tasks instead of
//! threads: a call registers a one-shot slot under a fresh id and appends its frame to the
//! connection's output buffer in one critical section (so ids and bytes go out in the same
//! order), then wakes the writer task, which writes whatever has piled up in one `write_all`:
//! 64 tasks locking at once cost a few writes, not 64. The reader task decodes frames, keeps
//! the set of held locks ([`Track`]) and fills the slots; a keep-alive task pings when nothing
//! was written for the interval.
//!
//! Cancel-safety lives in [`Call`]'s drop: a LOCK whose future is dropped before its answer is
//! withdrawn with an UNLOCK (PROTOCOL.md §6.4: a waiter's UNLOCK cancels its wait, a holder's
//! releases), and a grant that reaches no one is released when it arrives, so no lock stays
//! held with nobody to release it. Queuing a frame never waits, so guards release on drop
//! without blocking the runtime.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ::tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ::tokio::sync::{oneshot, watch, Notify};
use ::tokio::task::AbortHandle;

use super::stream;
use crate::client::answer::{alloc_id, unsolicited_reason, Track};
use crate::client::builder::Config;
use crate::client::conn::Lost;
use crate::client::handshake::{FIRST_ID, MAX_RESPONSE_FRAME};
use crate::client::{Error, Result};
use crate::protocol::{split_frame, HelloOk, Request, Response, SHUTDOWN_REQUEST_ID};

/// Bytes the reader asks the socket for at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A request waiting for its answer.
struct Pending {
    /// `None` for a request nobody awaits (a guard's or a withdrawal's UNLOCK).
    tx: Option<oneshot::Sender<Response>>,
    track: Track,
    /// For a LOCK whose caller went away: an UNLOCK already follows it on the wire.
    withdrawn: bool,
    /// A LOCK whose caller went away while the connection held the name or another caller
    /// awaited a LOCK of it: its UNLOCK waits until neither is true (`withdraw_orphans`).
    orphan: bool,
}

struct State {
    next_id: u32,
    pending: HashMap<u32, Pending>,
    /// Full names of the locks held, from the answers read so far.
    held: BTreeSet<String>,
    lost: Option<Lost>,
    /// Frames queued for the writer task, in request-id order.
    out: Vec<u8>,
    /// The name of each pending LOCK that is `orphan` (once per orphan): an answer about a
    /// name not in it costs no scan of `pending`.
    orphans: Vec<String>,
    /// The reader, writer and keep-alive tasks, aborted when the connection ends.
    tasks: Vec<AbortHandle>,
}

/// A live (or lost) connection, shared through `Arc` by the client, its guards and its tasks.
pub(crate) struct AsyncConn {
    hello: HelloOk,
    state: Mutex<State>,
    /// Wakes the writer task when `State::out` has bytes (or the connection ended).
    wake_writer: Notify,
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
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AsyncConn {
    /// Connects, performs the handshake, and spawns the reader, writer and keep-alive tasks
    /// on the current runtime.
    pub(crate) async fn open(config: &Config) -> Result<Arc<AsyncConn>> {
        match stream::connect(config).await? {
            stream::Connected::Tcp(s, hello, leftover) => {
                let (rd, wr) = s.into_split();
                Ok(Self::start(config, hello, leftover, rd, wr))
            }
            stream::Connected::Unix(s, hello, leftover) => {
                let (rd, wr) = s.into_split();
                Ok(Self::start(config, hello, leftover, rd, wr))
            }
        }
    }

    fn start<R, W>(config: &Config, hello: HelloOk, leftover: Vec<u8>, rd: R, wr: W) -> Arc<AsyncConn>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let interval = config.keep_alive_interval(hello.idle_timeout_ms);
        let conn = Arc::new(AsyncConn {
            hello,
            state: Mutex::new(State {
                next_id: FIRST_ID,
                pending: HashMap::new(),
                held: BTreeSet::new(),
                lost: None,
                out: Vec::new(),
                orphans: Vec::new(),
                tasks: Vec::new(),
            }),
            wake_writer: Notify::new(),
            lost_flag: AtomicBool::new(false),
            lost_tx: watch::channel(false).0,
            epoch: Instant::now(),
            last_write_ms: AtomicU64::new(0),
        });
        let mut tasks = vec![
            ::tokio::spawn(read_loop(EndOnDrop(Arc::clone(&conn)), rd, leftover)).abort_handle(),
            ::tokio::spawn(write_loop(EndOnDrop(Arc::clone(&conn)), wr)).abort_handle(),
        ];
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

    pub(crate) fn hello(&self) -> &HelloOk {
        &self.hello
    }

    /// Queues `req` and returns the call awaiting its answer. `lock` is the full name for a
    /// LOCK, so that dropping the call withdraws it.
    pub(crate) fn start_call<'a>(
        &'a self,
        req: &Request<'_>,
        track: Track,
        lock_name: Option<&'a str>,
    ) -> Result<Call<'a>> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = lock(&self.state);
            if let Some(lost) = &st.lost {
                return Err(lost.error());
            }
            st.queue(req, Pending { tx: Some(tx), track, withdrawn: false, orphan: false })
        };
        self.wake_writer.notify_one();
        Ok(Call { conn: self, id, rx, lock_name, done: false })
    }

    /// Sends `req` and waits for its answer (an ERROR answer is returned as a response).
    pub(crate) async fn call(&self, req: &Request<'_>, track: Track) -> Result<Response> {
        self.start_call(req, track, None)?.answer().await
    }

    /// Queues `req` with nobody awaiting its answer; never waits. On a lost connection there
    /// is nothing to do: the server has already released everything.
    pub(crate) fn send_detached(&self, req: &Request<'_>, track: Track) {
        let mut st = lock(&self.state);
        if st.lost.is_none() {
            st.queue(req, Pending { tx: None, track, withdrawn: false, orphan: false });
            drop(st);
            self.wake_writer.notify_one();
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

    fn lost_error(&self) -> Error {
        match &lock(&self.state).lost {
            Some(lost) => lost.error(),
            None => Error::protocol("request slot dropped while connected"),
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

    /// Marks the connection lost (the first reason wins), fails every waiting call and aborts
    /// the tasks, which drops both halves of the socket and so closes it.
    fn fail(&self, reason: &str, by_client: bool) {
        let tasks = {
            let mut st = lock(&self.state);
            if st.lost.is_some() {
                return;
            }
            let released = std::mem::take(&mut st.held).into_iter().collect();
            st.lost = Some(Lost { reason: reason.to_owned(), released, by_client });
            // Dropping the senders fails every call still waiting.
            st.pending.clear();
            st.orphans.clear();
            st.out.clear();
            std::mem::take(&mut st.tasks)
        };
        self.lost_flag.store(true, Ordering::Release);
        self.lost_tx.send_replace(true);
        self.wake_writer.notify_one();
        tasks.iter().for_each(AbortHandle::abort);
    }

    /// A call dropped before its answer was taken. A LOCK is withdrawn: if its answer came
    /// already and granted the lock, the lock is released; if not, an UNLOCK follows it so the
    /// server cancels the wait (or releases the grant it sends meanwhile). While the
    /// connection holds the name or another caller on it still awaits a LOCK of it, that
    /// UNLOCK could release a hold or cancel a wait that is somebody's: the LOCK is left an
    /// orphan, withdrawn by the answer that ends that state (`withdraw_orphans`); a grant it
    /// gets meanwhile is released on arrival.
    fn abandon(&self, id: u32, rx: &mut oneshot::Receiver<Response>, lock_name: Option<&str>) {
        let mut st = lock(&self.state);
        // Closed under the state lock, so the reader either delivered the answer already
        // (taken here) or will find the slot closed (and release a grant itself).
        rx.close();
        let Some(full) = lock_name else { return };
        let delivered = rx.try_recv().ok();
        if st.lost.is_some() {
            return;
        }
        let queued = match delivered {
            Some(resp) => {
                let granted = matches!(resp, Response::Acquired { .. });
                if granted {
                    st.queue_unlock(full);
                }
                granted
            }
            None => {
                // Whether to withdraw it now or once the name is neither held nor awaited by
                // another caller is one decision, taken in `withdraw_orphans`.
                let Some(p) = st.pending.get_mut(&id) else { return };
                p.orphan = true;
                st.orphans.push(full.to_owned());
                st.withdraw_orphans(full)
            }
        };
        drop(st);
        if queued {
            self.wake_writer.notify_one();
        }
    }

    /// Hands every complete frame in `buf` to its caller; `Err` ends the connection.
    fn dispatch_all(&self, buf: &mut Vec<u8>) -> std::result::Result<(), String> {
        let mut consumed = 0;
        let mut queued = false;
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
                    // LOST and CONTENDED notices share request id 0 with fatal frames; the
                    // async client has no notice API yet, so it only stops counting a lost
                    // grant as held (PROTOCOL.md §4.24, §4.25).
                    if resp.is_notice(frame.request_id) {
                        self.notice(resp);
                        continue;
                    }
                    if frame.request_id == SHUTDOWN_REQUEST_ID {
                        break Err(unsolicited_reason(resp));
                    }
                    queued |= self.dispatch(frame.request_id, resp);
                }
            }
        };
        buf.drain(..consumed);
        if queued {
            self.wake_writer.notify_one();
        }
        result
    }

    /// A LOST notice: the server ended that grant, so the name is no longer held.
    fn notice(&self, resp: Response) {
        if let Response::Lost { name, token, reason } = resp {
            log::debug!("officer grant lost name={name} token={token} reason={}", reason.as_str());
            lock(&self.state).held.remove(&name);
        }
    }

    /// Delivers one answer; true when it queued a frame (the release of an orphaned grant).
    fn dispatch(&self, id: u32, resp: Response) -> bool {
        let mut st = lock(&self.state);
        let Some(Pending { tx, track, withdrawn, orphan }) = st.pending.remove(&id) else {
            // Not fatal: nothing else is affected.
            log::debug!("officer response for unknown request id={id}");
            return false;
        };
        if let (true, Track::Lock(full)) = (orphan, &track) {
            if let Some(at) = st.orphans.iter().position(|n| n == full) {
                st.orphans.swap_remove(at);
            }
        }
        track.record(&mut st.held, &resp);
        let unclaimed = match tx {
            None => Some(resp),
            Some(tx) => tx.send(resp).err(),
        };
        let mut queued = false;
        // Nobody takes this answer. A fresh grant to a LOCK not yet withdrawn would stay held
        // with nobody to release it.
        if let (Track::Lock(full), Some(Response::Acquired { .. })) = (&track, &unclaimed) {
            if !withdrawn {
                st.queue_unlock(full);
                queued = true;
            }
        }
        // This answer may have been what kept an orphaned LOCK of the name from its UNLOCK.
        if let (false, Track::Lock(full) | Track::Unlock(full)) = (st.orphans.is_empty(), &track) {
            queued |= st.withdraw_orphans(full);
        }
        queued
    }

    async fn keep_alive_loop(self: Arc<Self>, interval: Duration) {
        loop {
            let now_ms = self.epoch.elapsed().as_millis() as u64;
            let silent =
                Duration::from_millis(now_ms.saturating_sub(self.last_write_ms.load(Ordering::Relaxed)));
            if silent >= interval {
                if self.call(&Request::Ping(&[]), Track::None).await.is_err() {
                    return;
                }
                continue;
            }
            if self.wait_lost(Some(interval - silent)).await {
                return;
            }
        }
    }
}

/// The reader task: every answer to its caller, until the connection ends.
async fn read_loop<R: AsyncRead + Unpin>(conn: EndOnDrop, mut rd: R, mut buf: Vec<u8>) {
    let conn = &*conn.0;
    let reason = loop {
        if let Err(reason) = conn.dispatch_all(&mut buf) {
            break reason;
        }
        buf.reserve(READ_CHUNK);
        match rd.read_buf(&mut buf).await {
            Ok(0) => break "the server closed the connection".to_owned(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break format!("read failed: {e}"),
        }
    };
    log::debug!("officer connection ended connection_id={} reason={reason}", conn.hello.connection_id);
    conn.fail(&reason, false);
}

/// The writer task: whatever frames piled up, in one write each time it wakes.
async fn write_loop<W: AsyncWrite + Unpin>(conn: EndOnDrop, mut wr: W) {
    let conn = &*conn.0;
    let mut batch = Vec::new();
    loop {
        {
            let mut st = lock(&conn.state);
            if st.lost.is_some() {
                return;
            }
            std::mem::swap(&mut st.out, &mut batch);
        }
        if batch.is_empty() {
            conn.wake_writer.notified().await;
            continue;
        }
        if let Err(e) = wr.write_all(&batch).await {
            conn.fail(&format!("write failed: {e}"), false);
            return;
        }
        conn.last_write_ms.store(conn.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        batch.clear();
    }
}

impl State {
    /// Registers `pending` under a fresh id and queues `req`'s frame; registered before the
    /// bytes can leave, so the answer cannot arrive before its slot exists.
    fn queue(&mut self, req: &Request<'_>, pending: Pending) -> u32 {
        let map = &self.pending;
        let id = alloc_id(&mut self.next_id, |id| map.contains_key(&id));
        self.pending.insert(id, pending);
        req.encode(id, &mut self.out);
        id
    }

    /// Queues an UNLOCK of `full` that nobody awaits.
    fn queue_unlock(&mut self, full: &str) {
        let unlock =
            Pending { tx: None, track: Track::Unlock(full.to_owned()), withdrawn: false, orphan: false };
        self.queue(&Request::Unlock(full), unlock);
    }

    /// Withdraws the orphaned LOCKs of `full` with one UNLOCK (queued after all of them, it
    /// cancels the connection's one wait for the name, or releases its grant), once the
    /// connection does not hold the name and no caller awaits a LOCK of it: until then the
    /// UNLOCK could release a hold or cancel a wait that is somebody's. True when it queued.
    /// Scans the waiting requests only while an orphan of `full` exists.
    fn withdraw_orphans(&mut self, full: &str) -> bool {
        let of_name = |p: &Pending| matches!(&p.track, Track::Lock(name) if name == full);
        let live = |p: &Pending| p.tx.as_ref().is_some_and(|tx| !tx.is_closed());
        if !self.orphans.iter().any(|n| n == full)
            || self.held.contains(full)
            || self.pending.values().any(|p| of_name(p) && live(p))
        {
            return false;
        }
        let mut withdrew = 0;
        for p in self.pending.values_mut().filter(|p| p.orphan && of_name(p)) {
            (p.orphan, p.withdrawn) = (false, true);
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
struct EndOnDrop(Arc<AsyncConn>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.fail("the connection's tasks were stopped (was their runtime shut down?)", false);
    }
}

/// One request on the wire, awaiting its answer. Dropping it before the answer is taken
/// abandons it ([`AsyncConn::abandon`]): that is what makes a dropped `lock` future safe.
pub(crate) struct Call<'a> {
    conn: &'a AsyncConn,
    id: u32,
    rx: oneshot::Receiver<Response>,
    /// The full name, for a LOCK.
    lock_name: Option<&'a str>,
    done: bool,
}

impl Call<'_> {
    /// The answer (an ERROR answer too), or the connection-lost error.
    pub(crate) async fn answer(mut self) -> Result<Response> {
        let answer = (&mut self.rx).await;
        self.done = true;
        // The slot closes without a value only when `fail` dropped it.
        answer.map_err(|_| self.conn.lost_error())
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.abandon(self.id, &mut self.rx, self.lock_name);
        }
    }
}
