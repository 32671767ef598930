//! A 3-node cluster of real `officer run --cluster` processes on loopback, driven by a fault
//! test: each node in its own data directory, every peer link through a loopback [`Proxy`]
//! (node i's entry for node j > i, the one i dials, names a proxy in front of j's real peer
//! port), so a test can cut a pair or isolate a node; kill -9 a node, restart it with the same
//! flags, restart all of them, find the leader by asking (HELLO answered HELLO_OK, or the fatal
//! `not_leader`). Every wait is a bounded polling loop on something observable.
//!
//! Also [`Worker`]: a small reconnecting raw-frame client with a resumable session that tries
//! each member, follows `not_leader`, resumes after a lost connection, resends what was in
//! flight, and logs every operation into a [`History`](super::history) for the checker.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use officer::protocol::{
    split_frame, ErrorCode, Hello, LockRequest, Request, Response, SessionOk, SessionOpen, SessionResume,
    TokenRequest, PROTOCOL_VERSION,
};

use super::frames::encode;
use super::history::{Op, Outcome, Recorder};
use super::process::{wait_exit, OFFICER};
use super::proxy::Proxy;

/// Members of every cluster a test starts.
pub const NODES: usize = 3;

/// A free loopback port: bound, read, released. The node binds it a moment later; another
/// process taking it in between is possible but not on a test machine's loopback in practice.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("address").port()
}

/// One member: its fixed addresses (a restart reuses them) and its process while it runs.
pub struct Node {
    /// Raft id, 1-based.
    pub id: u64,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// The cluster: nodes, the proxies of their peer links, and the flags every start uses.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// `links[k]` is the proxy of the pair `pairs()[k]`: lower id dials higher through it.
    links: Vec<((usize, usize), Proxy)>,
    pub tick_ms: u32,
    pub grace_max_ms: u32,
    /// Data directories and logs; kept (its path printed) when the test fails, for the logs.
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts all nodes; does not wait for a leader (`wait_leader`).
    pub fn start(tick_ms: u32, grace_max_ms: u32) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("cluster-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir");
        let nodes: Vec<Node> = (0..NODES)
            .map(|i| {
                let data_dir = dir.path().join(format!("n{}", i + 1));
                std::fs::create_dir_all(&data_dir).expect("data dir");
                Node {
                    id: i as u64 + 1,
                    client: SocketAddr::from(([127, 0, 0, 1], free_port())),
                    peer: SocketAddr::from(([127, 0, 0, 1], free_port())),
                    data_dir,
                    log: dir.path().join(format!("n{}.log", i + 1)),
                    child: None,
                }
            })
            .collect();
        let mut links = Vec::new();
        for (j, higher) in nodes.iter().enumerate() {
            for i in 0..j {
                links.push(((i, j), Proxy::start(higher.peer)));
            }
        }
        let mut cluster = Cluster { nodes, links, tick_ms, grace_max_ms, dir: Some(dir) };
        for i in 0..NODES {
            cluster.spawn(i);
        }
        cluster
    }

    /// The client addresses of all members, in id order.
    pub fn members(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.client).collect()
    }

    /// Where node `i` reaches node `j`: its own real port, or the proxy of the pair it dials.
    fn peer_entry(&self, i: usize, j: usize) -> SocketAddr {
        match self.links.iter().find(|((a, b), _)| (*a, *b) == (i, j)) {
            Some((_, proxy)) => proxy.addr(),
            None => self.nodes[j].peer,
        }
    }

    /// The flags of node `i`, the same on every start.
    pub fn args(&self, i: usize) -> Vec<String> {
        let node = &self.nodes[i];
        let mut args: Vec<String> = vec![
            "run".into(),
            "-h".into(),
            node.client.ip().to_string(),
            "-p".into(),
            node.client.port().to_string(),
            "--cluster".into(),
            "--cluster-id".into(),
            "1".into(),
            "--node-id".into(),
            node.id.to_string(),
        ];
        for j in 0..NODES {
            let peer = self.peer_entry(i, j);
            args.push("--peer".into());
            args.push(format!("{}={}/{}", self.nodes[j].id, peer, self.nodes[j].client));
        }
        args.push("--data-dir".into());
        args.push(node.data_dir.display().to_string());
        args.push("--tick-ms".into());
        args.push(self.tick_ms.to_string());
        // Info: the transport's and the driver's lines, which a failure's message shows.
        args.push("-l".into());
        args.push("info".into());
        args.push("--max-session-grace".into());
        args.push(self.grace_max_ms.to_string());
        args
    }

    fn spawn(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {} is already running", i + 1);
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.nodes[i].log).expect("node log");
        let child = Command::new(OFFICER)
            .args(self.args(i))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn officer run --cluster");
        self.nodes[i].child = Some(child);
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// kill -9 node `i` and reap it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again with the same flags and data directory.
    pub fn restart(&mut self, i: usize) {
        self.kill9(i);
        self.spawn(i);
    }

    /// Kills every node, then starts them all again.
    pub fn restart_all(&mut self) {
        for i in 0..NODES {
            self.kill9(i);
        }
        for i in 0..NODES {
            self.spawn(i);
        }
    }

    /// A node that exited on its own (a crash) fails the test with its log.
    pub fn assert_alive(&mut self) {
        for i in 0..NODES {
            if let Some(child) = self.nodes[i].child.as_mut() {
                if let Some(status) = wait_exit(child, Duration::ZERO) {
                    panic!("node {} exited by itself ({status}); its log:\n{}", i + 1, self.log_tail(i));
                }
            }
        }
    }

    /// The last lines of node `i`'s stderr.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Every node's log tail, for a failure's message.
    pub fn logs(&self) -> String {
        (0..NODES)
            .map(|i| format!("--- node {} log:\n{}", i + 1, self.log_tail(i)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The proxies of the links with node `i` at either end.
    fn links_of(&self, i: usize) -> impl Iterator<Item = &Proxy> {
        self.links.iter().filter(move |((a, b), _)| *a == i || *b == i).map(|(_, p)| p)
    }

    /// Cuts node `i` off from both others: every link with it is reset and refuses new ones.
    pub fn isolate(&self, i: usize) {
        for proxy in self.links_of(i) {
            proxy.refuse(true);
            proxy.reset_all();
        }
    }

    /// Undoes `isolate`.
    pub fn heal(&self, i: usize) {
        for proxy in self.links_of(i) {
            proxy.refuse(false);
        }
    }

    /// Freezes every link with node `i`: the sockets stay open and nothing is forwarded either
    /// way (a half-open path: no reset tells the nodes anything).
    pub fn freeze(&self, i: usize) {
        for proxy in self.links_of(i) {
            proxy.freeze();
        }
    }

    /// Undoes `freeze`: what was held back is forwarded.
    pub fn thaw(&self, i: usize) {
        for proxy in self.links_of(i) {
            proxy.thaw();
        }
    }

    /// What node `i` says to a HELLO now.
    pub fn probe(&self, i: usize) -> Probe {
        if !self.is_running(i) {
            return Probe::Down;
        }
        probe(self.nodes[i].client)
    }

    /// Waits until exactly one of the running nodes outside `exclude` answers HELLO_OK and
    /// every other running node outside `exclude` names it in its `not_leader`; returns it.
    pub fn wait_leader(&mut self, exclude: &[usize], limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            self.assert_alive();
            if let Some(leader) = self.agreed_leader(exclude) {
                return leader;
            }
            let states: Vec<Probe> = (0..NODES).map(|i| self.probe(i)).collect();
            assert!(
                start.elapsed() < limit,
                "no agreed leader after {limit:?} (excluding {exclude:?}): {states:?}\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn agreed_leader(&self, exclude: &[usize]) -> Option<usize> {
        let asked: Vec<usize> = (0..NODES).filter(|i| !exclude.contains(i) && self.is_running(*i)).collect();
        let states: Vec<(usize, Probe)> = asked.iter().map(|&i| (i, self.probe(i))).collect();
        let leaders: Vec<usize> =
            states.iter().filter(|(_, p)| *p == Probe::Leader).map(|(i, _)| *i).collect();
        let [leader] = leaders[..] else { return None };
        let named = self.nodes[leader].client.to_string();
        let all_agree = states.iter().all(|(i, p)| *i == leader || *p == Probe::Follower(named.clone()));
        all_agree.then_some(leader)
    }

    /// Waits until node `i` answers as a follower naming `leader`.
    pub fn wait_follower_of(&mut self, i: usize, leader: usize, limit: Duration) {
        let named = self.nodes[leader].client.to_string();
        let start = Instant::now();
        loop {
            self.assert_alive();
            let p = self.probe(i);
            if p == Probe::Follower(named.clone()) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "node {} is not a follower of {} after {limit:?}: {p:?}; all: {:?}\n{}",
                i + 1,
                leader + 1,
                (0..NODES).map(|k| self.probe(k)).collect::<Vec<_>>(),
                self.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..NODES {
            self.kill9(i);
        }
        if thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("cluster: the nodes' logs and data are kept in {}", dir.keep().display());
            }
        }
    }
}

/// A node's answer to HELLO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Down,
    Leader,
    /// `not_leader` with the leader's client address (empty: none known).
    Follower(String),
    /// No answer in time, or something else.
    Other(String),
}

/// Connects to `addr`, sends HELLO and reads one answer, all within about a second.
pub fn probe(addr: SocketAddr) -> Probe {
    let Ok(mut conn) = Conn::connect(addr, Duration::from_millis(500)) else { return Probe::Down };
    let deadline = Instant::now() + Duration::from_secs(1);
    let id = conn.send(&Request::Hello(Hello { version: PROTOCOL_VERSION }), 1);
    if id.is_err() {
        return Probe::Down;
    }
    match conn.recv_until(deadline) {
        Read1::Frame(1, Response::HelloOk(_)) => Probe::Leader,
        Read1::Frame(0, Response::Error { code: ErrorCode::NotLeader, message }) => Probe::Follower(message),
        Read1::Frame(rid, other) => Probe::Other(format!("{rid} {other:?}")),
        Read1::Closed => Probe::Down,
        Read1::Quiet => Probe::Other("no answer".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// One raw connection

/// What one bounded read gave.
enum Read1 {
    Frame(u32, Response),
    /// EOF or reset.
    Closed,
    /// Nothing before the deadline.
    Quiet,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        Ok(Conn { stream, buf: Vec::new() })
    }

    fn send(&mut self, request: &Request<'_>, rid: u32) -> std::io::Result<()> {
        self.stream.write_all(&encode(request, rid))
    }

    /// The next frame, or what stopped it by `deadline`. A frame the codec rejects is a server
    /// bug and fails the test.
    fn recv_until(&mut self, deadline: Instant) -> Read1 {
        loop {
            match split_frame(&self.buf, u32::MAX) {
                Ok(Some((frame, used))) => {
                    let response = Response::decode(&frame).expect("the server sent an undecodable response");
                    let rid = frame.request_id;
                    self.buf.drain(..used);
                    return Read1::Frame(rid, response);
                }
                Ok(None) => {}
                Err(e) => panic!("the server sent a bad frame: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Read1::Quiet;
            }
            let _ = self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Read1::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Read1::Quiet
                }
                Err(_) => return Read1::Closed,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The reconnecting client of the fault tests

/// How long a worker waits in silence before it asks the server with a PING whether the
/// connection is still alive; and how long that PING may take before the connection is
/// declared dead (a frozen or isolated path).
const QUIET: Duration = Duration::from_secs(2);
/// One operation, reconnects included, may take this long before the test fails as stuck.
const OP_LIMIT: Duration = Duration::from_secs(60);
/// Granularity of a worker's reads, so it sees `avoid` and its deadlines.
const READ_SLICE: Duration = Duration::from_millis(200);

/// Counters a worker shares with the test.
#[derive(Default)]
pub struct WorkerStats {
    pub grants: AtomicU64,
    pub reconnects: AtomicU64,
    pub redirects: AtomicU64,
}

/// Connection events a worker keeps for a stalled run's message.
const TRACE_LEN: usize = 12;

/// Controls a test holds on one worker: the members it must not use (bit i = node i), and stop;
/// and what the worker is doing, so that a stalled run explains itself (`describe`).
#[derive(Default)]
pub struct WorkerControl {
    pub avoid: AtomicU64,
    pub stop: AtomicBool,
    pub stats: WorkerStats,
    /// The operation in progress and what it waits for (request ids, connection).
    doing: Mutex<String>,
    /// The last few connection events (losses, resumes, failed sends), oldest first.
    trace: Mutex<VecDeque<String>>,
}

impl WorkerControl {
    fn set_doing(&self, what: String) {
        *self.doing.lock().unwrap() = what;
    }

    fn note(&self, what: String) {
        let mut trace = self.trace.lock().unwrap();
        if trace.len() == TRACE_LEN {
            trace.pop_front();
        }
        trace.push_back(what);
    }

    /// The worker's own idea of what it holds or waits for, and its recent connection events.
    pub fn describe(&self) -> String {
        let trace: Vec<String> = self.trace.lock().unwrap().iter().cloned().collect();
        format!("doing: {}; recent: [{}]", self.doing.lock().unwrap(), trace.join("; "))
    }
}

/// Why an operation did not finish: the session could not be resumed.
pub struct Abandoned;

/// The connection lost (or given up) in the middle of an operation.
struct Lost;

/// A reconnecting raw-protocol client with one resumable session at a time.
pub struct Worker {
    members: Vec<SocketAddr>,
    grace_ms: u32,
    rec: Recorder,
    control: Arc<WorkerControl>,
    conn: Option<(usize, Conn)>,
    session: Option<SessionOk>,
    /// Frames replayed after RESUMED, handed to the operation before anything read.
    replayed: Vec<(u32, Response)>,
    /// Request ids: never reused within a session, since a replay answers under the old ones.
    next_rid: u32,
    /// Connections the session has had: an operation whose request went out on an earlier one
    /// does not know whether the server saw it, and sends it again on this one.
    epoch: u64,
    /// The member the last `not_leader` named.
    hint: Option<usize>,
}

impl Worker {
    pub fn new(
        members: Vec<SocketAddr>,
        grace_ms: u32,
        rec: Recorder,
        control: Arc<WorkerControl>,
    ) -> Worker {
        Worker {
            members,
            grace_ms,
            rec,
            control,
            conn: None,
            session: None,
            replayed: Vec::new(),
            next_rid: 1,
            epoch: 0,
            hint: None,
        }
    }

    fn rid(&mut self) -> u32 {
        let rid = self.next_rid;
        self.next_rid += 1;
        rid
    }

    fn avoided(&self, i: usize) -> bool {
        self.control.avoid.load(Ordering::SeqCst) & (1 << i) != 0
    }

    /// Makes sure there is a connection with the session on it: opens the first session, or
    /// resumes it on a new connection (logged as `Op::Resume`). `Abandoned` when the server
    /// refused the resume: a fresh session is opened on the next call.
    fn ensure(&mut self, deadline: Instant) -> Result<(), Abandoned> {
        if self.conn.is_some() {
            return Ok(());
        }
        let resume_op = self.session.map(|_| self.rec.invoke(Op::Resume));
        loop {
            assert!(Instant::now() < deadline, "worker could not reach a leader in {OP_LIMIT:?}");
            let Some((i, mut conn)) = self.hello(deadline) else { continue };
            match self.session {
                None => {
                    if self.open_session(&mut conn, deadline) {
                        self.epoch += 1;
                        self.control.note(format!("session opened on connection {}", self.epoch));
                        self.conn = Some((i, conn));
                        return Ok(());
                    }
                }
                Some(session) => match self.resume(&mut conn, session, deadline) {
                    Some(true) => {
                        self.rec.complete(resume_op.expect("resume op"), Outcome::Done);
                        self.control.stats.reconnects.fetch_add(1, Ordering::SeqCst);
                        self.epoch += 1;
                        let replayed: Vec<u32> = self.replayed.iter().map(|(r, _)| *r).collect();
                        self.control
                            .note(format!("resumed on connection {}, replay ids {replayed:?}", self.epoch));
                        self.conn = Some((i, conn));
                        return Ok(());
                    }
                    Some(false) => {
                        self.rec
                            .complete(resume_op.expect("resume op"), Outcome::Refused("bad_session".into()));
                        self.session = None;
                        self.replayed.clear();
                        return Err(Abandoned);
                    }
                    None => {}
                },
            }
        }
    }

    /// A connection to the leader after HELLO, trying the hinted member first, then each in
    /// turn; `None` after one unsuccessful round (the caller loops, bounded by its deadline).
    fn hello(&mut self, deadline: Instant) -> Option<(usize, Conn)> {
        let order: Vec<usize> = match self.hint.take() {
            Some(h) => std::iter::once(h).chain((0..self.members.len()).filter(|&i| i != h)).collect(),
            None => (0..self.members.len()).collect(),
        };
        for i in order {
            if self.avoided(i) {
                continue;
            }
            let Ok(mut conn) = Conn::connect(self.members[i], Duration::from_millis(500)) else { continue };
            let rid = self.rid();
            if conn.send(&Request::Hello(Hello { version: PROTOCOL_VERSION }), rid).is_err() {
                continue;
            }
            let until = deadline.min(Instant::now() + QUIET);
            match conn.recv_until(until) {
                Read1::Frame(r, Response::HelloOk(_)) if r == rid => return Some((i, conn)),
                Read1::Frame(0, Response::Error { code: ErrorCode::NotLeader, message }) => {
                    self.control.stats.redirects.fetch_add(1, Ordering::SeqCst);
                    if let Some(named) = self.members.iter().position(|m| m.to_string() == message) {
                        if !self.avoided(named) {
                            // A short pause even so: two members naming each other (one of
                            // them stale) must not make a busy loop.
                            self.hint = Some(named);
                            thread::sleep(Duration::from_millis(10));
                            return None;
                        }
                    }
                }
                _ => {}
            }
        }
        // No leader known anywhere yet: a short pause before the next round, not a busy loop.
        thread::sleep(Duration::from_millis(50));
        None
    }

    fn open_session(&mut self, conn: &mut Conn, deadline: Instant) -> bool {
        let rid = self.rid();
        let open = SessionOpen { grace_ms: self.grace_ms, skip_while_detached: false };
        if conn.send(&Request::SessionOpen(open), rid).is_err() {
            return false;
        }
        match conn.recv_until(deadline.min(Instant::now() + QUIET)) {
            Read1::Frame(r, Response::SessionOk(ok)) if r == rid => {
                assert!(ok.is_open(), "the cluster opened no session (grace 0)");
                self.session = Some(ok);
                true
            }
            _ => false,
        }
    }

    /// `Some(true)`: resumed, the replay kept; `Some(false)`: refused (`bad_session`); `None`:
    /// the connection failed first (not_leader, a close): try another.
    fn resume(&mut self, conn: &mut Conn, session: SessionOk, deadline: Instant) -> Option<bool> {
        let rid = self.rid();
        let req = SessionResume { session_id: session.session_id, secret: session.secret };
        conn.send(&Request::SessionResume(req), rid).ok()?;
        let until = deadline.min(Instant::now() + QUIET);
        match conn.recv_until(until) {
            Read1::Frame(r, Response::Resumed(resumed)) if r == rid => {
                for _ in 0..resumed.replayed {
                    match conn.recv_until(until) {
                        Read1::Frame(r, response) => self.replayed.push((r, response)),
                        _ => return None,
                    }
                }
                Some(true)
            }
            Read1::Frame(r, Response::Error { code: ErrorCode::BadSession, .. }) if r == rid => Some(false),
            _ => None,
        }
    }

    fn send(&mut self, request: &Request<'_>) -> Result<u32, Lost> {
        let rid = self.rid();
        let (_, conn) = self.conn.as_mut().ok_or(Lost)?;
        if conn.send(request, rid).is_err() {
            self.control.note(format!("send of id {rid} failed on connection {}", self.epoch));
            self.conn = None;
            return Err(Lost);
        }
        Ok(rid)
    }

    /// Gives the connection up (it closed, went quiet, or is to be avoided).
    fn lose(&mut self, why: &str) -> Lost {
        self.control.note(format!("connection {} lost: {why}", self.epoch));
        self.conn = None;
        Lost
    }

    /// The next frame for the current operation: a replayed one first, then the wire. Sends a
    /// PING after `QUIET` of silence and gives the connection up when that goes unanswered
    /// too, or when the test says to avoid this member. Notices and PONGs are handled here.
    /// Past the operation's `deadline` the test fails with what the worker was waiting for
    /// (a live connection answering PINGs would otherwise keep it waiting for ever).
    fn next(&mut self, deadline: Instant) -> Result<(u32, Response), Lost> {
        if !self.replayed.is_empty() {
            return Ok(self.replayed.remove(0));
        }
        let mut heard = Instant::now();
        let mut probe: Option<u32> = None;
        loop {
            assert!(
                Instant::now() < deadline,
                "worker stuck for {OP_LIMIT:?} on a live connection: {}",
                self.control.describe()
            );
            let (i, conn) = self.conn.as_mut().ok_or(Lost)?;
            let avoided = self.control.avoid.load(Ordering::SeqCst) & (1 << *i) != 0;
            if avoided {
                return Err(self.lose("avoided"));
            }
            match conn.recv_until(Instant::now() + READ_SLICE) {
                Read1::Frame(rid, response) => {
                    heard = Instant::now();
                    if Some(rid) == probe && response == Response::Pong {
                        probe = None;
                        continue;
                    }
                    if let Response::Error { code, .. } = &response {
                        if code.is_fatal() {
                            return Err(self.lose(&format!("fatal {code:?}")));
                        }
                    }
                    if rid == 0 {
                        continue; // notices (LOST, CONTENDED): none expected, none acted on
                    }
                    return Ok((rid, response));
                }
                Read1::Closed => return Err(self.lose("closed")),
                Read1::Quiet if heard.elapsed() < QUIET => {}
                Read1::Quiet if probe.is_none() => {
                    probe = Some(self.send(&Request::Ping(b""))?);
                    heard = Instant::now();
                }
                Read1::Quiet => return Err(self.lose("PING unanswered")),
            }
        }
    }

    /// LOCK `name` (with a fence PING behind it), through reconnects; the token of the grant.
    ///
    /// The LOCK is sent again on every new connection of the session until it is answered,
    /// whatever lost the earlier one (a read, the fence's send, a PING): whether the server saw
    /// it, and whether an ACQUIRED it wrote reached us, is unknown, and a resend is always
    /// safe (ALREADY_ACQUIRED with the grant's token, ALREADY_WAITING, or a fresh wait).
    pub fn lock(&mut self, name: &str) -> Result<u64, Abandoned> {
        let deadline = Instant::now() + OP_LIMIT;
        let op = self.rec.invoke(Op::Lock { name: name.to_owned() });
        let mut rids: Vec<u32> = Vec::new();
        let mut fence: Option<(u64, u32)> = None;
        let mut fenced = false;
        // The connection (`epoch`) the LOCK last went out on.
        let mut sent_on: Option<u64> = None;
        loop {
            assert!(Instant::now() < deadline, "LOCK {name} not answered in {OP_LIMIT:?}");
            if let Err(a) = self.ensure(deadline) {
                self.rec.complete(op, Outcome::Abandoned);
                return Err(a);
            }
            if sent_on != Some(self.epoch) {
                let req = Request::Lock(LockRequest { name, timeout_ms: None, queue_max: None });
                let Ok(rid) = self.send(&req) else { continue };
                rids.push(rid);
                sent_on = Some(self.epoch);
                self.control
                    .set_doing(format!("LOCK {name}: ids {rids:?}, last sent on connection {}", self.epoch));
                if !fenced {
                    fenced = true;
                    let fop = self.rec.invoke(Op::Fence { name: name.to_owned() });
                    // A failed send loses the connection: the LOCK goes again on the next one.
                    let Ok(frid) = self.send(&Request::Ping(b"")) else { continue };
                    fence = Some((fop, frid));
                }
            }
            let Ok((rid, response)) = self.next(deadline) else {
                // The fence's PONG, if still owed, went down with the connection.
                fence = None;
                continue;
            };
            if let Some((fop, frid)) = fence {
                if rid == frid && response == Response::Pong {
                    self.rec.complete(fop, Outcome::Done);
                    fence = None;
                    continue;
                }
            }
            if !rids.contains(&rid) {
                continue; // a stale answer of an earlier operation's resend (PONG, ...)
            }
            let outcome = match response {
                Response::Acquired { token } => Outcome::Acquired(token),
                Response::AlreadyAcquired { token } => Outcome::AlreadyAcquired(token),
                Response::AlreadyWaiting => continue,
                other => panic!("LOCK {name}: unexpected answer {other:?}"),
            };
            let token = match outcome {
                Outcome::Acquired(t) | Outcome::AlreadyAcquired(t) => t,
                _ => unreachable!(),
            };
            self.rec.complete(op, outcome);
            self.control.stats.grants.fetch_add(1, Ordering::SeqCst);
            self.control.set_doing(format!("holding {name} with token {token}"));
            self.drain_fence(fence, deadline);
            return Ok(token);
        }
    }

    /// After a grant that came before the fence's PONG on the same connection: read that PONG
    /// (the next frame, as one connection answers in order), so that it is not left for the
    /// next operation. A loss just drops it.
    fn drain_fence(&mut self, fence: Option<(u64, u32)>, deadline: Instant) {
        let Some((fop, frid)) = fence else { return };
        if let Ok((rid, Response::Pong)) = self.next(deadline) {
            if rid == frid {
                self.rec.complete(fop, Outcome::Done);
            }
        }
    }

    /// CHECK that `token` still holds `name`.
    pub fn check(&mut self, name: &str, token: u64) -> Result<bool, Abandoned> {
        let deadline = Instant::now() + OP_LIMIT;
        let op = self.rec.invoke(Op::Check { name: name.to_owned(), token });
        loop {
            assert!(Instant::now() < deadline, "CHECK {name} not answered in {OP_LIMIT:?}");
            if let Err(a) = self.ensure(deadline) {
                self.rec.complete(op, Outcome::Abandoned);
                return Err(a);
            }
            let Ok(rid) = self.send(&Request::Check(TokenRequest { name, token })) else { continue };
            self.control
                .set_doing(format!("CHECK {name} token {token}: id {rid} on connection {}", self.epoch));
            while let Ok((r, response)) = self.next(deadline) {
                if r != rid {
                    continue;
                }
                match response {
                    Response::Checked { held } => {
                        self.rec.complete(op, Outcome::Held(held));
                        return Ok(held);
                    }
                    other => panic!("CHECK {name}: unexpected answer {other:?}"),
                }
            }
        }
    }

    /// UNLOCK `name` held with `token`, through reconnects: after one, CHECK first (an UNLOCK
    /// served before the loss would be answered RELEASE_FAILED on a resend, the same answer as
    /// a grant that was lost, so the two are told apart by asking).
    pub fn unlock(&mut self, name: &str, token: u64) -> Result<(), Abandoned> {
        let deadline = Instant::now() + OP_LIMIT;
        let op = self.rec.invoke(Op::Unlock { name: name.to_owned(), token });
        let mut sent_once = false;
        loop {
            assert!(Instant::now() < deadline, "UNLOCK {name} not answered in {OP_LIMIT:?}");
            if let Err(a) = self.ensure(deadline) {
                self.rec.complete(op, Outcome::Abandoned);
                return Err(a);
            }
            if sent_once && !self.check(name, token)? {
                self.rec.complete(op, Outcome::ReleaseFailed);
                return Ok(());
            }
            let Ok(rid) = self.send(&Request::Unlock(name)) else { continue };
            self.control
                .set_doing(format!("UNLOCK {name} token {token}: id {rid} on connection {}", self.epoch));
            sent_once = true;
            while let Ok((r, response)) = self.next(deadline) {
                if r != rid {
                    continue;
                }
                let outcome = match response {
                    Response::Released => Outcome::Released,
                    // LOST as the answer: the grant was gone; judged like RELEASE_FAILED.
                    Response::ReleaseFailed | Response::Lost { .. } => Outcome::ReleaseFailed,
                    other => panic!("UNLOCK {name}: unexpected answer {other:?}"),
                };
                self.control.set_doing(format!("nothing (last: UNLOCK {name} answered {outcome:?})"));
                self.rec.complete(op, outcome);
                return Ok(());
            }
        }
    }

    /// Sessions resumed on a new connection so far.
    pub fn reconnects(&self) -> u64 {
        self.control.stats.reconnects.load(Ordering::SeqCst)
    }
}
