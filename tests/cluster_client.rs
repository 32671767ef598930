//! Clients of one cluster (`ClientBuilder::cluster`, `AsyncClientBuilder::cluster`): connecting
//! through members that are not the leader (fake servers here that answer HELLO with the fatal
//! `not_leader`, PROTOCOL.md §5), members that are down, and a session resumed on "the new
//! leader" after the old one dies or loses the lead.
//!
//! Until a real cluster runs in these tests, the leader is a real single server reached through
//! loopback proxies: two proxies in front of one server are two "members" that share its
//! sessions, so a resume through the second after the first is cut is what a resume on a new
//! leader looks like to the client.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use officer::client::{Client, LockOptions};
use officer::protocol::{ErrorCode, Response};
use support::ops::officer;
use support::proxy::Proxy;
use support::server::TestServer;
use support::WAIT;

// ---------------------------------------------------------------------------------------------
// Fake members

/// The fatal `not_leader` ERROR naming `leader` (PROTOCOL.md §4.31 `error_not_leader`).
fn not_leader_frame(leader: &str) -> Vec<u8> {
    let mut out = Vec::new();
    Response::Error { code: ErrorCode::NotLeader, message: leader.to_owned() }.encode(0, &mut out);
    out
}

/// A member that is not the leader: it answers every connection's first bytes with
/// `not_leader` naming what [`Follower::names`] last set (empty: no leader known), then closes.
struct Follower {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    leader: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
}

impl Follower {
    fn start(leader: &str) -> Follower {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let named = Arc::new(Mutex::new(leader.to_owned()));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, name, stopped) = (Arc::clone(&accepted), Arc::clone(&named), Arc::clone(&stop));
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let frame = not_leader_frame(&name.lock().unwrap());
                refuse(conn, &frame);
            }
        });
        Follower { addr, accepted, leader: named, stop }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    fn names(&self, leader: &str) {
        *self.leader.lock().unwrap() = leader.to_owned();
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads the client's HELLO, answers `frame`, and closes after the client does, so the close
/// is a FIN after the answer, never an RST that could overtake it.
fn refuse(mut conn: TcpStream, frame: &[u8]) {
    let _ = conn.set_read_timeout(Some(WAIT));
    let mut buf = [0u8; 256];
    let _ = conn.read(&mut buf);
    let _ = conn.write_all(frame);
    let _ = conn.shutdown(Shutdown::Write);
    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
}

/// An address where nothing listens (bound, then closed): connecting is refused.
fn dead_member() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// A proxy in front of the leader whose connections the test can end the way a leader that
/// loses its lead ends them: a fatal `not_leader` naming the new leader, then the close (and
/// the server side closed too, so the server detaches the session).
struct Deposable {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<Link>>>,
}

/// One proxied connection: the client's socket (written under its lock) and the server's.
type Link = (Arc<Mutex<TcpStream>>, TcpStream);

impl Deposable {
    fn start(upstream: SocketAddr) -> Deposable {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let links = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&links);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                let to_client = Arc::new(Mutex::new(client.try_clone().expect("clone")));
                pump_up(client, server.try_clone().expect("clone"));
                pump_down(server.try_clone().expect("clone"), Arc::clone(&to_client));
                shared.lock().unwrap().push((to_client, server));
            }
        });
        Deposable { addr, links }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Ends every link with `not_leader` naming `leader`; returns how many there were.
    fn depose(&self, leader: &str) -> usize {
        let links = std::mem::take(&mut *self.links.lock().unwrap());
        for (client, server) in &links {
            let client = client.lock().unwrap();
            let _ = (&*client).write_all(&not_leader_frame(leader));
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
        links.len()
    }
}

/// Client to server: plain copying until either side closes.
fn pump_up(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Server to client, each chunk written under the lock `depose` takes, so its frame never
/// lands inside a chunk.
fn pump_down(mut from: TcpStream, to: Arc<Mutex<TcpStream>>) {
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if (&*to.lock().unwrap()).write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.lock().unwrap().shutdown(Shutdown::Write);
    });
}

fn server() -> TestServer {
    TestServer::start_with(|c| c.max_session_grace = Duration::from_secs(60))
}

fn observer(server: &TestServer) -> Client {
    Client::connect("127.0.0.1", server.addr().port()).expect("connect the observer")
}

const GRACE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Connecting

#[test]
fn a_follower_redirects_to_the_leader_and_the_next_connect_starts_there() {
    let leader = server();
    let follower = Follower::start(&leader.addr().to_string());
    // The only way to the leader is the redirect: the other member is down.
    let builder = Client::builder().cluster([follower.addr(), dead_member()]);
    let client = builder.clone().connect().expect("connect through the redirect");
    client.ping().expect("ping the leader");
    assert_eq!(follower.accepted(), 1);
    let token = client.try_lock("redirect/a").expect("lock on the leader").token();
    assert!(observer(&leader).locks().unwrap().iter().any(|l| l.name == "redirect/a"));
    // The leader reached is remembered: a second connection goes there at once.
    let second = builder.connect().expect("connect again");
    second.ping().expect("ping");
    assert_eq!(follower.accepted(), 1, "the second connect asked the follower again");
    assert!(client.check("redirect/a", token).unwrap());
}

#[test]
fn a_follower_that_knows_no_leader_gives_way_to_the_next_member() {
    let leader = server();
    let follower = Follower::start("");
    let client = Client::builder()
        .cluster([follower.addr(), leader.addr().to_string()])
        .connect()
        .expect("connect to the second member");
    client.ping().expect("ping");
    assert_eq!(follower.accepted(), 1);
}

#[test]
fn a_dead_member_is_skipped() {
    let leader = server();
    let client = Client::builder()
        .cluster([dead_member(), leader.addr().to_string()])
        .connect()
        .expect("connect past the dead member");
    client.ping().expect("ping");
}

#[test]
fn members_naming_each_other_end_in_an_error_not_a_hang() {
    let (a, b) = (Follower::start(""), Follower::start(""));
    a.names(&b.addr());
    b.names(&a.addr());
    let started = Instant::now();
    let err = Client::builder()
        .cluster([a.addr(), b.addr()])
        .connect_timeout(Duration::from_millis(400))
        .connect()
        .expect_err("no member leads");
    assert_eq!(err.server_code(), Some(ErrorCode::NotLeader), "{err}");
    assert!(started.elapsed() < WAIT, "gave up only after {:?}", started.elapsed());
    let tried = a.accepted() + b.accepted();
    // Both were asked more than once (rounds go on until the timeout), but with pauses
    // between rounds: tens of attempts at most, not a busy loop's thousands.
    assert!(a.accepted() >= 2 && b.accepted() >= 2, "a {} b {}", a.accepted(), b.accepted());
    assert!(tried < 200, "{tried} attempts in 400 ms");
}

#[test]
fn a_cluster_with_no_leader_yet_fails_with_not_leader_after_the_connect_timeout() {
    let (a, b) = (Follower::start(""), Follower::start(""));
    let err = Client::builder()
        .cluster([a.addr(), b.addr()])
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .expect_err("no leader");
    assert_eq!(err.server_code(), Some(ErrorCode::NotLeader), "{err}");
    assert!(err.server_address().is_some(), "the error names no member: {err}");
}

#[test]
fn a_malformed_member_fails_at_connect() {
    let err = Client::builder().cluster(["127.0.0.1:notaport"]).connect().expect_err("bad member");
    assert!(err.is_io(), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Failover with a session

#[test]
fn a_session_resumes_on_the_leader_a_follower_names_after_the_leader_dies() {
    let s = server();
    let (old, new) = (Proxy::start(s.addr()), Proxy::start(s.addr()));
    let follower = Follower::start(&new.addr().to_string());
    let client = Client::builder()
        .cluster([old.addr().to_string(), follower.addr()])
        .session_grace(GRACE)
        .connect()
        .expect("connect to the first member");
    assert!(client.session().is_some(), "no session opened");
    let guard = client.lock_guard("failover/held", LockOptions::new()).expect("lock");
    // The old leader dies: its connections reset, new ones refused.
    old.refuse(true);
    assert_eq!(old.reset_all(), 1);
    // The next call waits for the resume: old refused, the follower names the new one.
    client.ping().expect("ping after the failover");
    assert_eq!(client.resumes(), 1);
    assert_eq!(follower.accepted(), 1);
    assert_eq!(new.connections(), 1);
    assert!(!guard.is_lost());
    assert!(client.check("failover/held", guard.token()).expect("check"), "the hold did not survive");
    let later = client.try_lock("failover/later").expect("lock after the failover");
    assert!(later.token() > guard.token(), "token {} after {}", later.token(), guard.token());
    guard.unlock().expect("unlock after the failover");
}

#[test]
fn a_leader_that_loses_the_lead_hands_the_session_to_the_leader_it_names() {
    let s = server();
    let old = Deposable::start(s.addr());
    let new = Proxy::start(s.addr());
    // The new leader is not among the members given: the redirect alone leads there.
    let client = Client::builder()
        .cluster([old.addr(), dead_member()])
        .session_grace(GRACE)
        .no_keep_alive()
        .connect()
        .expect("connect");
    let held = client.try_lock("depose/held").expect("lock");
    assert_eq!(old.depose(&new.addr().to_string()), 1);
    client.ping().expect("ping after the hand-over");
    assert_eq!(client.resumes(), 1);
    assert_eq!(new.connections(), 1);
    assert!(client.check("depose/held", held.token()).expect("check"));
}

#[test]
fn without_a_session_a_dead_leader_is_reported_and_reconnect_finds_the_next() {
    let s = server();
    let (old, new) = (Proxy::start(s.addr()), Proxy::start(s.addr()));
    let client = Client::builder()
        .cluster([old.addr().to_string(), new.addr().to_string()])
        .connect()
        .expect("connect");
    client.try_lock("plain/held").expect("lock");
    old.refuse(true);
    assert_eq!(old.reset_all(), 1);
    let err = loop {
        // The reader may not have seen the reset yet when the first ping goes out.
        match client.ping() {
            Ok(_) => thread::sleep(Duration::from_millis(5)),
            Err(e) => break e,
        }
    };
    assert!(err.is_connection_lost(), "{err}");
    assert_eq!(err.released_locks(), ["plain/held"]);
    client.reconnect().expect("reconnect to the next member");
    client.ping().expect("ping the new member");
    assert_eq!(new.connections(), 1);
}

// ---------------------------------------------------------------------------------------------
// The command line

#[test]
fn the_cli_with_cluster_reaches_the_leader_through_a_follower() {
    let leader = server();
    let follower = Follower::start(&leader.addr().to_string());
    let members = format!("{},{}", dead_member(), follower.addr());
    let out = officer(&["lock", "--cluster", "-h", &members, "cli/held", "--", "true"]);
    assert_eq!(out.code(), Some(0), "{}", out.both());
    let out =
        officer(&["lock", "--cluster", "-h", &members, "--session-grace", "10s", "cli/held", "--", "true"]);
    assert_eq!(out.code(), Some(0), "{}", out.both());
    assert_eq!(follower.accepted(), 2);
    // The list as shards: the follower is one of them, and its refusal is an error.
    let out = officer(&["ping", "-h", &follower.addr()]);
    assert_ne!(out.code(), Some(0), "{}", out.both());
    assert!(out.stderr.contains("not_leader"), "{}", out.both());
}

#[test]
fn officer_cluster_in_the_environment_means_the_same_as_the_flag() {
    let leader = server();
    let follower = Follower::start(&leader.addr().to_string());
    let out = support::ops::officer_command()
        .args(["ping", "-h", &format!("{},{}", follower.addr(), dead_member())])
        .env("OFFICER_CLUSTER", "1")
        .output()
        .expect("run officer ping");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(follower.accepted(), 1);
}

// ---------------------------------------------------------------------------------------------
// The async client

#[cfg(feature = "tokio")]
mod async_client {
    use super::*;
    use officer::client::tokio::AsyncClient;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
    }

    #[test]
    fn a_follower_redirects_the_async_client_and_a_dead_member_is_skipped() {
        let leader = server();
        let follower = Follower::start(&leader.addr().to_string());
        run(async {
            let client = AsyncClient::builder()
                .cluster([dead_member(), follower.addr()])
                .connect()
                .await
                .expect("connect through the redirect");
            client.ping().await.expect("ping");
        });
        assert_eq!(follower.accepted(), 1);
    }

    #[test]
    fn members_naming_each_other_end_the_async_connect_in_an_error() {
        let (a, b) = (Follower::start(""), Follower::start(""));
        a.names(&b.addr());
        b.names(&a.addr());
        let err = run(async {
            AsyncClient::builder()
                .cluster([a.addr(), b.addr()])
                .connect_timeout(Duration::from_millis(300))
                .connect()
                .await
                .expect_err("no member leads")
        });
        assert_eq!(err.server_code(), Some(ErrorCode::NotLeader), "{err}");
    }

    #[test]
    fn an_async_session_resumes_on_the_named_leader_after_the_leader_dies() {
        let s = server();
        let (old, new) = (Proxy::start(s.addr()), Proxy::start(s.addr()));
        let follower = Follower::start(&new.addr().to_string());
        run(async {
            let client = AsyncClient::builder()
                .cluster([old.addr().to_string(), follower.addr()])
                .session_grace(GRACE)
                .connect()
                .await
                .expect("connect");
            let guard = client.lock_guard("async/held", LockOptions::new()).await.expect("lock");
            old.refuse(true);
            assert_eq!(old.reset_all(), 1);
            client.ping().await.expect("ping after the failover");
            assert_eq!(client.resumes(), 1);
            assert!(!guard.is_lost());
            assert_eq!(client.my_locks().await.expect("my locks").held, ["async/held"]);
        });
        assert_eq!(follower.accepted(), 1);
        assert_eq!(new.connections(), 1);
    }

    #[test]
    fn an_async_session_follows_a_leader_that_loses_the_lead() {
        let s = server();
        let old = Deposable::start(s.addr());
        let new = Proxy::start(s.addr());
        run(async {
            let client = AsyncClient::builder()
                .cluster([old.addr(), dead_member()])
                .session_grace(GRACE)
                .no_keep_alive()
                .connect()
                .await
                .expect("connect");
            client.try_lock("async/depose").await.expect("lock");
            assert_eq!(old.depose(&new.addr().to_string()), 1);
            client.ping().await.expect("ping after the hand-over");
            assert_eq!(client.resumes(), 1);
            assert_eq!(client.my_locks().await.expect("my locks").held, ["async/depose"]);
        });
        assert_eq!(new.connections(), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// A real cluster: three `officer run --cluster` processes

#[cfg(feature = "cluster")]
mod real_cluster {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use support::process::{read_listening_line, wait_until, OFFICER};

    /// Raft tick of the test clusters: an election in 0.5 to 1 s, fast enough for a test and
    /// slow enough that a loaded machine does not hold spurious elections.
    const TICK_MS: &str = "50";

    /// Three members on loopback, each killed (SIGKILL) and reaped on drop.
    struct Cluster {
        children: Vec<Option<Child>>,
        clients: Vec<String>,
        _dir: tempfile::TempDir,
    }

    /// A port nothing listens on now (bound, then closed), for a member to listen on.
    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
    }

    impl Cluster {
        fn start() -> Cluster {
            let dir = support::temp_dir();
            let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
            let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
            let mut children = Vec::new();
            for i in 0..3 {
                let mut command = Command::new(OFFICER);
                command.args(["run", "-h", "127.0.0.1", "-p", &clients[i].to_string(), "--cluster"]);
                command.args(["--node-id", &(i + 1).to_string(), "--tick-ms", TICK_MS]);
                command.args(["--max-session-grace", "60000"]);
                command.arg("--data-dir").arg(dir.path().join(format!("n{}", i + 1)));
                for j in 0..3 {
                    let peer = format!("{}=127.0.0.1:{}/127.0.0.1:{}", j + 1, peers[j], clients[j]);
                    command.args(["--peer", &peer]);
                }
                let mut child =
                    command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn a member");
                read_listening_line(&mut child).expect("a member did not report its address");
                children.push(Some(child));
            }
            let clients = clients.iter().map(|p| format!("127.0.0.1:{p}")).collect();
            Cluster { children, clients, _dir: dir }
        }

        /// The index of the member that serves clients now, waiting for an election.
        fn leader(&self) -> usize {
            let mut found = None;
            wait_until("a leader", WAIT, || {
                found = (0..3).find(|&i| self.children[i].is_some() && self.serves(i));
                found.is_some()
            });
            found.unwrap()
        }

        /// Whether member `i` answers a plain client (followers refuse with `not_leader`).
        fn serves(&self, i: usize) -> bool {
            let (host, port) = self.clients[i].rsplit_once(':').unwrap();
            let client = Client::builder()
                .host(host)
                .port(port.parse().unwrap())
                .connect_timeout(Duration::from_secs(2));
            client.connect().is_ok_and(|c| c.ping().is_ok())
        }

        fn client(&self) -> officer::client::ClientBuilder {
            Client::builder().cluster(&self.clients).connect_timeout(WAIT)
        }

        fn kill9(&mut self, i: usize) {
            if let Some(mut child) = self.children[i].take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            (0..3).for_each(|i| self.kill9(i));
        }
    }

    #[test]
    fn a_session_keeps_its_lock_when_the_leader_is_killed() {
        let mut cluster = Cluster::start();
        let client = cluster.client().session_grace(GRACE).connect().expect("connect to the cluster");
        assert!(client.session().is_some(), "the cluster opened no session");
        let guard = client.lock_guard("real/held", LockOptions::new()).expect("lock");
        let old = cluster.leader();
        cluster.kill9(old);
        // Waits for the resume on the new leader, which has the hold.
        assert!(client.check("real/held", guard.token()).expect("check after the failover"));
        assert!(client.resumes() >= 1, "no resume");
        assert!(!guard.is_lost());
        let new = cluster.leader();
        assert_ne!(new, old);
        let later = client.try_lock("real/later").expect("lock on the new leader");
        assert!(later.token() > guard.token(), "token {} after {}", later.token(), guard.token());
        // Another client sees the hold on the new leader, and cannot take it.
        let other = cluster.client().connect().expect("a second client");
        assert!(other.try_lock("real/held").expect_err("still held").is_timeout());
        guard.unlock().expect("unlock on the new leader");
        other.try_lock("real/held").expect("free once unlocked");
    }

    #[test]
    fn without_a_session_the_lock_goes_with_the_leader_and_tokens_keep_growing() {
        let mut cluster = Cluster::start();
        let client = cluster.client().connect().expect("connect to the cluster");
        let first = client.try_lock("real/plain").expect("lock").token();
        let old = cluster.leader();
        cluster.kill9(old);
        assert!(client.wait_disconnected(Some(WAIT)), "the loss was not noticed");
        let err = client.ping().expect_err("the connection is lost");
        assert!(err.is_connection_lost(), "{err}");
        assert_eq!(err.released_locks(), ["real/plain"]);
        client.reconnect().expect("reconnect to the new leader");
        // The new leader released the plain connection's lock; its token is newer.
        let again = client.lock("real/plain", LockOptions::with_timeout(WAIT)).expect("lock again").token();
        assert!(again > first, "token {again} after {first}");
    }

    #[test]
    fn officer_lock_with_cluster_runs_its_command_under_the_leaders_lock() {
        let cluster = Cluster::start();
        let members = cluster.clients.join(",");
        let out = officer(&[
            "lock",
            "--cluster",
            "-h",
            &members,
            "--session-grace",
            "10s",
            "real/cli",
            "--",
            "true",
        ]);
        assert_eq!(out.code(), Some(0), "{}", out.both());
        // Without --cluster the list is shards, and the followers among them refuse.
        let out = officer(&["ping", "-h", &members]);
        assert_ne!(out.code(), Some(0), "{}", out.both());
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn an_async_session_keeps_its_lock_when_the_leader_is_killed() {
        use officer::client::tokio::AsyncClient;
        let mut cluster = Cluster::start();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let members = cluster.clients.clone();
        let client = rt.block_on(async {
            AsyncClient::builder()
                .cluster(&members)
                .connect_timeout(WAIT)
                .session_grace(GRACE)
                .connect()
                .await
        });
        let client = client.expect("connect to the cluster");
        let token = rt.block_on(client.try_lock("real/async")).expect("lock").token();
        let old = cluster.leader();
        cluster.kill9(old);
        let held = rt.block_on(client.my_locks()).expect("my locks after the failover").held;
        assert_eq!(held, ["real/async"]);
        assert!(client.resumes() >= 1);
        let later = rt.block_on(client.try_lock("real/async-later")).expect("lock").token();
        assert!(later > token, "token {later} after {token}");
    }
}
