//! The blocking client's resumable sessions end to end, through the loopback fault proxy
//! (`support::proxy`): connections reset (RST) or frozen under a client that holds and waits
//! for locks, and what it, its guards and the other clients see afterwards.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use officer::client::{Client, LockOptions};
use officer::protocol::{Request, Response};
use support::frames::{hello_frame, lock_req, token_of};
use support::process::wait_until;
use support::proxy::{client_behind, Proxy};
use support::raw::Raw;
use support::server::TestServer;
use support::WAIT;

// ---------------------------------------------------------------------------------------------
// The proxy itself

#[test]
fn proxy_forwards_and_resets_with_rst() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.addr());
    let mut through = Raw::connect(proxy.addr());
    token_of(&through.call(&lock_req("proxy/self")));
    assert_eq!(proxy.connections(), 1);
    assert_eq!(proxy.live(), 1);
    assert_eq!(proxy.reset_all(), 1);
    assert_eq!(proxy.live(), 0);
    // The client's side was reset, not closed: a read fails with ECONNRESET, never a clean EOF.
    let mut s = TcpStream::connect(proxy.addr()).expect("connect through the proxy");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&hello_frame(1)).unwrap();
    let mut buf = [0u8; 64];
    assert!(s.read(&mut buf).expect("HELLO_OK through the proxy") > 0);
    assert_eq!(proxy.reset_all(), 1);
    let err = loop {
        match s.read(&mut buf) {
            Ok(0) => panic!("the proxy closed with a FIN, not an RST"),
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    // The server's side was reset too: the lock taken through the proxy is released.
    let mut observer = Raw::connect(server.addr());
    wait_until("the reset connection's lock to go", WAIT, || {
        matches!(observer.call(&support::frames::try_lock_req("proxy/self")), Response::Acquired { .. })
    });
    assert_eq!(observer.call(&Request::Unlock("proxy/self")), Response::Released);
}

#[test]
fn frozen_proxy_holds_bytes_until_thawed_and_refusal_resets_new_connections() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.addr());
    let mut s = TcpStream::connect(proxy.addr()).expect("connect through the proxy");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&hello_frame(1)).unwrap();
    let mut buf = [0u8; 256];
    assert!(s.read(&mut buf).expect("HELLO_OK through the proxy") > 0);
    proxy.freeze();
    s.write_all(&support::frames::encode(&Request::Ping(b"x"), 2)).unwrap();
    // Held back: nothing comes while frozen (this can only fail if the proxy forwards).
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let held = s.read(&mut buf);
    assert!(
        matches!(&held, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a frozen proxy passed {held:?}"
    );
    s.set_read_timeout(Some(WAIT)).unwrap();
    proxy.thaw();
    let n = s.read(&mut buf).expect("the PONG after the thaw");
    let (frame, _) = officer::protocol::split_frame(&buf[..n], 1 << 20).unwrap().expect("a whole frame");
    assert_eq!(frame.request_id, 2);
    assert_eq!(Response::decode(&frame).unwrap(), Response::Pong);
    proxy.refuse(true);
    let mut refused = TcpStream::connect(proxy.addr()).expect("the kernel accepts");
    refused.set_read_timeout(Some(WAIT)).unwrap();
    let got = refused.read(&mut buf);
    assert!(
        matches!(&got, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "a refused connection got {got:?}"
    );
    assert_eq!(proxy.connections(), 2);
}

// ---------------------------------------------------------------------------------------------
// The client's resume through the proxy

/// A server that keeps detached sessions up to `max_grace`.
fn server(max_grace: Duration) -> TestServer {
    TestServer::start_with(|c| c.max_session_grace = max_grace)
}

fn direct(server: &TestServer) -> Client {
    Client::connect("127.0.0.1", server.addr().port()).expect("connect")
}

/// A client behind `proxy` with a session of `grace`, the grace granted in full.
fn behind(proxy: &Proxy, grace: Duration) -> Client {
    let client = client_behind(proxy, grace);
    assert_eq!(client.session().map(|(_, g)| g), Some(grace), "the server granted the grace asked");
    client
}

fn stat(observer: &Client, key: &str) -> u64 {
    observer.stats().expect("stats").iter().find(|(k, _)| *k == key).map_or(0, |(_, v)| v)
}

fn queue_of(observer: &Client, name: &str) -> Vec<String> {
    let locks = observer.locks_matching(name, 0).expect("locks");
    locks.iter().find(|l| l.name == name).map(|l| l.queue.clone()).unwrap_or_default()
}

const GRACE: Duration = Duration::from_secs(30);

#[test]
fn a_holder_keeps_its_lock_and_token_across_a_reset() {
    let server = server(GRACE);
    let observer = direct(&server);
    let proxy = Proxy::start(server.addr());
    let client = behind(&proxy, GRACE);
    let guard = client.lock_guard("blip/held", LockOptions::new()).expect("lock");
    let token = guard.token();
    let reset_at = std::time::Instant::now();
    assert_eq!(proxy.reset_all(), 1);
    // The next call waits for the resume and is answered on the new connection.
    assert_eq!(client.my_locks().expect("my_locks after the reset").held, vec!["blip/held".to_string()]);
    eprintln!("reset bridged: the next call answered {:?} after the reset", reset_at.elapsed());
    assert_eq!(client.resumes(), 1);
    assert_eq!(proxy.connections(), 2, "one reconnect");
    assert!(client.is_connected());
    assert!(!guard.is_lost(), "the guard survived the blip");
    assert!(observer.check("blip/held", token).expect("check"), "the same grant holds, with its token");
    assert!(observer.try_lock("blip/held").unwrap_err().is_timeout(), "nobody else got it meanwhile");
    assert_eq!(stat(&observer, "sessions_resumed"), 1);
    guard.unlock().expect("unlock on the resumed connection");
    assert_eq!(observer.try_lock("blip/held").expect("free after the unlock").token(), token + 1);
}

#[test]
fn a_waiter_keeps_its_place_and_gets_the_grant_made_while_it_was_away() {
    let server = server(GRACE);
    let observer = direct(&server);
    let holder = direct(&server);
    let first = holder.lock("blip/queue", LockOptions::new()).expect("lock").token();
    let proxy = Proxy::start(server.addr());
    let waiter = Arc::new(behind(&proxy, GRACE));
    let w = Arc::clone(&waiter);
    let waiting = thread::spawn(move || w.lock("blip/queue", LockOptions::with_timeout(WAIT)));
    wait_until("the session's wait to queue", WAIT, || queue_of(&observer, "blip/queue").len() == 2);
    let later = direct(&server);
    let queued_later = thread::spawn(move || {
        let token = later.lock("blip/queue", LockOptions::with_timeout(WAIT)).expect("later lock").token();
        (later, token)
    });
    wait_until("the later waiter to queue", WAIT, || queue_of(&observer, "blip/queue").len() == 3);
    let before = queue_of(&observer, "blip/queue");
    // Cut the session's connection and keep it from coming back for now.
    proxy.refuse(true);
    proxy.reset_all();
    wait_until("the server to detach the session", WAIT, || stat(&observer, "sessions_detached") == 1);
    let detached = format!("{} (detached)", before[1]);
    assert_eq!(
        queue_of(&observer, "blip/queue"),
        [before[0].clone(), detached.clone(), before[2].clone()],
        "the detached wait kept its place"
    );
    // Its turn comes while it is away: granted and held for the session, not for the later one.
    holder.unlock("blip/queue").expect("unlock");
    wait_until("the grant to the detached session", WAIT, || queue_of(&observer, "blip/queue").len() == 2);
    assert_eq!(queue_of(&observer, "blip/queue"), [detached, before[2].clone()]);
    proxy.refuse(false);
    let acquired = waiting.join().expect("waiter thread").expect("the grant made while detached");
    assert!(acquired.token() > first);
    assert!(!acquired.already_acquired());
    assert!(waiter.resumes() >= 1);
    assert!(observer.check("blip/queue", acquired.token()).expect("check"));
    waiter.unlock("blip/queue").expect("unlock");
    let (_later, token) = queued_later.join().expect("later waiter");
    assert!(token > acquired.token(), "FIFO: the later waiter came after the resumed one");
}

#[test]
fn an_expired_grace_reports_the_lock_lost_and_grants_the_next_waiter() {
    let grace = Duration::from_millis(300);
    let server = server(grace);
    let observer = direct(&server);
    let proxy = Proxy::start(server.addr());
    let client = behind(&proxy, grace);
    let guard = client.lock_guard("blip/expired", LockOptions::new()).expect("lock");
    let next = direct(&server);
    let waiting = thread::spawn(move || {
        let token = next.lock("blip/expired", LockOptions::with_timeout(WAIT)).expect("next lock").token();
        (next, token)
    });
    wait_until("the next waiter to queue", WAIT, || queue_of(&observer, "blip/expired").len() == 2);
    proxy.refuse(true);
    proxy.reset_all();
    let (_next, token) = waiting.join().expect("next waiter");
    assert!(token > guard.token(), "the next waiter got the lock once the grace ran out");
    assert!(guard.wait_lost(Some(WAIT)), "the guard never reported the loss");
    assert!(guard.is_lost());
    assert!(!client.is_connected());
    let err = guard.unlock().unwrap_err();
    assert!(err.is_connection_lost(), "{err}");
    assert_eq!(err.released_locks(), ["blip/expired".to_string()], "{err}");
    assert_eq!(client.resumes(), 0);
    assert_eq!(stat(&observer, "sessions_expired"), 1);
}

#[test]
fn a_frozen_connection_is_found_by_the_keep_alive_and_resumed() {
    let server = TestServer::start_with(|c| {
        c.max_session_grace = GRACE;
        c.max_idle = Some(Duration::from_secs(1));
    });
    let observer = direct(&server);
    let proxy = Proxy::start(server.addr());
    let client = behind(&proxy, GRACE);
    let guard = client.lock_guard("blip/frozen", LockOptions::new()).expect("lock");
    proxy.freeze();
    // No RST, no FIN: only the unanswered keep-alive tells the client, which then dials again
    // (and that connection is held too, until the thaw).
    wait_until("the client to dial again", WAIT, || proxy.connections() >= 2);
    proxy.thaw();
    wait_until("the resume", WAIT, || client.resumes() >= 1);
    assert!(!guard.is_lost());
    assert!(observer.check("blip/frozen", guard.token()).expect("check"));
    assert_eq!(client.my_locks().expect("my_locks").held, vec!["blip/frozen".to_string()]);
    guard.unlock().expect("unlock");
}

#[test]
fn goodbye_releases_at_once_without_waiting_out_the_grace() {
    let server = server(GRACE);
    let observer = direct(&server);
    let proxy = Proxy::start(server.addr());
    let client = behind(&proxy, GRACE);
    client.lock("blip/bye", LockOptions::new()).expect("lock");
    drop(client);
    // Not detached: released now, so the next lock is granted at once.
    assert!(observer.try_lock("blip/bye").is_ok(), "the lock outlived an explicit close");
    assert_eq!(stat(&observer, "sessions_detached"), 0);
}

#[test]
fn without_a_session_a_reset_loses_the_locks_as_before() {
    let server = server(GRACE);
    let proxy = Proxy::start(server.addr());
    let client = Client::connect("127.0.0.1", proxy.port()).expect("connect");
    assert_eq!(client.session(), None);
    let guard = client.lock_guard("blip/plain", LockOptions::new()).expect("lock");
    proxy.reset_all();
    assert!(guard.wait_lost(Some(WAIT)));
    assert!(client.my_locks().unwrap_err().is_connection_lost());
    assert_eq!(proxy.connections(), 1, "no reconnect after losing locks");
}

/// The mutual-exclusion checker with resets injected throughout a contended run: clients with
/// sessions behind the proxy and plain ones beside them take one lock in turn; at no time do
/// two of them hold it, and the tokens of the grants only grow.
#[test]
fn mutual_exclusion_holds_with_resets_injected_throughout() {
    const SESSIONS: usize = 4;
    const PLAIN: usize = 2;
    const ROUNDS: usize = 100;
    const RESETS: usize = 30;
    let server = server(GRACE);
    let proxy = Arc::new(Proxy::start(server.addr()));
    let inside = Arc::new(AtomicUsize::new(0));
    let grants = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<Client> =
        (0..SESSIONS).map(|_| behind(&proxy, GRACE)).chain((0..PLAIN).map(|_| direct(&server))).collect();
    let workers: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let (inside, grants) = (Arc::clone(&inside), Arc::clone(&grants));
            thread::spawn(move || {
                for _ in 0..ROUNDS {
                    let guard =
                        client.lock_guard("blip/mutex", LockOptions::with_timeout(WAIT)).expect("lock");
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                    grants.lock().unwrap().push(guard.token());
                    thread::yield_now();
                    assert!(!guard.is_lost(), "a grant lost across a reset");
                    assert_eq!(inside.fetch_sub(1, Ordering::SeqCst), 1);
                    guard.unlock().expect("unlock");
                }
                client.resumes()
            })
        })
        .collect();
    let resetter = {
        let (proxy, done) = (Arc::clone(&proxy), Arc::clone(&done));
        thread::spawn(move || {
            let mut resets = 0;
            while resets < RESETS && !done.load(Ordering::SeqCst) {
                resets += usize::from(proxy.reset_all() > 0);
                thread::sleep(Duration::from_millis(5));
            }
            resets
        })
    };
    let resumes: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    done.store(true, Ordering::SeqCst);
    let resets = resetter.join().expect("resetter");
    let grants = grants.lock().unwrap();
    eprintln!("{} grants, {resets} resets, {resumes} resumes", grants.len());
    assert_eq!(grants.len(), (SESSIONS + PLAIN) * ROUNDS);
    assert!(grants.windows(2).all(|p| p[0] < p[1]), "tokens not increasing: {grants:?}");
    assert!(resets > 0 && resumes > 0, "no reset hit a session: the run proved nothing");
}

/// A LOCK that never reached the server (held in a frozen proxy, then reset) is sent again
/// after the resume and queues there as a new wait; that link is reset too. The second resume
/// must not lose the wait the resend became: its grant, which comes under the resend's id,
/// still reaches the caller.
#[test]
fn a_resent_wait_survives_a_second_reset() {
    let server = server(GRACE);
    let observer = direct(&server);
    let holder = direct(&server);
    holder.lock("blip/twice", LockOptions::new()).expect("lock");
    let proxy = Proxy::start(server.addr());
    let client = Arc::new(behind(&proxy, GRACE));
    proxy.freeze();
    let c = Arc::clone(&client);
    let waiting = thread::spawn(move || c.lock("blip/twice", LockOptions::with_timeout(WAIT)));
    proxy.wait_held(1);
    assert_eq!(queue_of(&observer, "blip/twice").len(), 1, "the frozen proxy held the LOCK back");
    proxy.reset_all();
    proxy.thaw();
    wait_until("the resent LOCK to queue", WAIT, || queue_of(&observer, "blip/twice").len() == 2);
    assert_eq!(client.resumes(), 1);
    proxy.reset_all();
    wait_until("the second resume", WAIT, || client.resumes() == 2);
    client.ping().expect("ping");
    assert_eq!(queue_of(&observer, "blip/twice").len(), 2, "still one wait for the session");
    holder.unlock("blip/twice").expect("unlock");
    let acquired = waiting.join().expect("waiter thread").expect("the grant reached the caller");
    assert!(observer.check("blip/twice", acquired.token()).expect("check"));
    assert_eq!(client.my_locks().expect("my_locks").held, vec!["blip/twice".to_string()]);
}

/// Three servers, one proxy in front of each; a sharded client with sessions over the proxies.
/// One shard's connection is reset: that session alone resumes, every lock on every server is
/// still held with its token, and the other shards never reconnected.
#[test]
fn a_sharded_client_keeps_its_locks_when_one_shard_is_reset() {
    let servers: Vec<TestServer> = (0..3).map(|_| server(GRACE)).collect();
    let proxies: Vec<Proxy> = servers.iter().map(|s| Proxy::start(s.addr())).collect();
    let addresses: Vec<String> = proxies.iter().map(|p| format!("127.0.0.1:{}", p.port())).collect();
    let observers: Vec<Client> = servers.iter().map(direct).collect();
    let client = officer::client::ShardedClient::builder()
        .servers(&addresses)
        .session_grace(GRACE)
        .connect()
        .expect("connect");
    let names: Vec<String> = (0..60).map(|i| format!("blip/shard-{i}")).collect();
    let guards: Vec<_> =
        names.iter().map(|n| client.lock_guard(n, LockOptions::new()).expect("lock")).collect();
    let cut = &addresses[1];
    assert!(names.iter().any(|n| client.server_for(n) == cut), "the cut shard holds some names");
    assert_eq!(proxies[1].reset_all(), 1);
    let mut mine = client.my_locks().expect("my_locks after the reset").held;
    mine.sort();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(mine, sorted, "every lock still held");
    for (name, guard) in names.iter().zip(&guards) {
        let at = addresses.iter().position(|a| a == client.server_for(name)).expect("placed");
        assert!(!guard.is_lost(), "{name}");
        assert!(observers[at].check(name, guard.token()).expect("check"), "{name} kept its token");
    }
    for (i, address) in addresses.iter().enumerate() {
        let name = names.iter().find(|n| client.server_for(n) == address).expect("a name per server");
        let resumes = client.client_for(name).expect("shard").resumes();
        assert_eq!(resumes, u64::from(i == 1), "only the cut shard resumed ({address})");
        assert_eq!(proxies[i].connections(), 1 + usize::from(i == 1), "{address}");
    }
    for guard in guards {
        guard.unlock().expect("unlock");
    }
}

// ---------------------------------------------------------------------------------------------
// `officer lock --session-grace`

#[test]
fn officer_lock_with_a_session_grace_survives_a_reset_while_the_command_runs() {
    let server = server(GRACE);
    let observer = direct(&server);
    let proxy = Proxy::start(server.addr());
    let dir = support::temp_dir();
    let go = dir.path().join("go");
    let script = format!("echo held; while [ ! -e {} ]; do sleep 0.02; done; echo done", go.display());
    let mut child = Command::new(support::process::OFFICER)
        .args(["lock", "-h", "127.0.0.1", "-p", &proxy.port().to_string(), "--session-grace", "10s"])
        .args(["--kill-on-loss", "blip/cli", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn officer lock");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "held");
    let token = observer.locks_detail("blip/cli", 0).expect("detail").items[0].holders[0].token;
    proxy.reset_all();
    wait_until("officer lock to resume its session", WAIT, || stat(&observer, "sessions_resumed") == 1);
    assert!(observer.check("blip/cli", token).expect("check"), "the lock was kept");
    std::fs::write(&go, b"").expect("signal the command");
    let status = support::process::wait_exit(&mut child, WAIT).expect("officer lock exits");
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
    line.clear();
    out.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "done", "the command ran to its end; stderr: {stderr}");
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.is_empty(), "officer lock complained: {stderr}");
    // Released by its GOODBYE at the end, not left to the grace.
    assert!(observer.try_lock("blip/cli").is_ok());
    assert_eq!(proxy.connections(), 2);
}

#[test]
fn a_server_that_opens_no_session_leaves_the_client_as_before() {
    // The default --max-session-grace is 0: SESSION_OK with grace 0.
    let server = TestServer::start();
    let proxy = Proxy::start(server.addr());
    let client = Client::builder()
        .host("127.0.0.1")
        .port(proxy.port())
        .session_grace(GRACE)
        .connect()
        .expect("connect");
    assert_eq!(client.session(), None);
    let guard = client.lock_guard("blip/nosession", LockOptions::new()).expect("lock");
    proxy.reset_all();
    assert!(guard.wait_lost(Some(WAIT)), "without a session the reset loses the lock");
    assert_eq!(client.resumes(), 0);
    assert_eq!(proxy.connections(), 1);
}
