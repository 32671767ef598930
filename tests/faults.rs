//! Fault injection with real processes: clients killed while holding or waiting, clients
//! frozen (SIGSTOP, or a proxy that stops forwarding) until max-idle closes them, the server
//! killed with SIGKILL in a loop on one state file, and the server paused past max-idle; and
//! shared and semaphore names with clients dropping out (readers never beside a writer, never
//! more permits held than the limit, checked over the holds' intervals).

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use officer::client::{Client, LockOptions};
use officer::protocol::{Request, Response};
use support::frames::{lock_req, token_of};
use support::process::{wait_until, LockProcess, ServerProcess, OFFICER};
use support::raw::Raw;
use support::server::TestServer;
use support::WAIT;

fn client(port: u16) -> Client {
    Client::connect("127.0.0.1", port).expect("connect")
}

fn queue_of(observer: &Client, name: &str) -> Vec<String> {
    let locks = observer.locks_matching(name, 0).expect("locks");
    locks.iter().find(|l| l.name == name).map(|l| l.queue.clone()).unwrap_or_default()
}

/// Locks `name` on its own thread with a generous timeout; the token when granted.
fn lock_in_thread(c: Client, name: &'static str) -> thread::JoinHandle<(Client, u64, Instant)> {
    thread::spawn(move || {
        let token = c.lock(name, LockOptions::with_timeout(WAIT)).expect("waiter lock").token();
        (c, token, Instant::now())
    })
}

fn state_path(dir: &tempfile::TempDir) -> String {
    support::state_file_in(dir.path()).to_str().expect("utf-8 path").to_owned()
}

// ---------------------------------------------------------------------------------------------
// Client crashes

#[test]
fn client_killed_while_holding_hands_the_lock_on_promptly() {
    let server = TestServer::start();
    let port = server.addr().port();
    let observer = client(port);
    let mut holder = LockProcess::holder(port, "crash/held");
    assert!(holder.wait_held(WAIT), "officer lock never ran its command");
    let waiter = lock_in_thread(client(port), "crash/held");
    wait_until("the waiter to queue", WAIT, || queue_of(&observer, "crash/held").len() == 2);
    let crashed_at = Instant::now();
    holder.crash();
    let (waiter, token, granted_at) = waiter.join().expect("waiter");
    let delay = granted_at - crashed_at;
    eprintln!("holder SIGKILLed: the waiter got the lock {delay:?} later");
    assert!(token > 0);
    assert!(delay < Duration::from_secs(5), "the next waiter waited {delay:?} after the holder died");
    assert_eq!(waiter.my_locks().expect("my_locks").held, vec!["crash/held".to_string()]);
}

#[test]
fn client_killed_while_waiting_is_never_granted() {
    let server = TestServer::start();
    let port = server.addr().port();
    let observer = client(port);
    let holder = client(port);
    holder.lock("crash/wait", LockOptions::new()).expect("lock");
    let mut dead = LockProcess::holder(port, "crash/wait");
    wait_until("the doomed waiter to queue", WAIT, || queue_of(&observer, "crash/wait").len() == 2);
    let after = lock_in_thread(client(port), "crash/wait");
    wait_until("the last waiter to queue", WAIT, || queue_of(&observer, "crash/wait").len() == 3);
    let before = queue_of(&observer, "crash/wait");
    dead.crash();
    wait_until("the dead waiter to leave the queue", WAIT, || queue_of(&observer, "crash/wait").len() == 2);
    assert_eq!(queue_of(&observer, "crash/wait"), vec![before[0].clone(), before[2].clone()]);
    holder.unlock("crash/wait").expect("unlock");
    let (after, token, _) = after.join().expect("waiter");
    assert!(token > 0);
    assert_eq!(
        queue_of(&observer, "crash/wait"),
        vec![before[2].clone()],
        "the queue moved past the dead waiter"
    );
    assert!(!dead.printed_held(), "the killed waiter's command ran");
    drop(after);
}

// ---------------------------------------------------------------------------------------------
// Half-open clients

#[test]
fn stopped_client_process_is_closed_at_max_idle() {
    let dir = support::temp_dir();
    let state = state_path(&dir);
    let server = ServerProcess::spawn(&["-m", "1", "--state-file", &state]);
    let port = server.port();
    let observer = client(port);
    let mut frozen =
        LockProcess::spawn(port, "halfopen/held", &["--kill-on-loss"], "echo held; exec sleep 60");
    assert!(frozen.wait_held(WAIT), "officer lock never ran its command");
    let label = queue_of(&observer, "halfopen/held")[0].clone();
    let waiter = lock_in_thread(client(port), "halfopen/held");
    wait_until("the waiter to queue", WAIT, || queue_of(&observer, "halfopen/held").len() == 2);
    frozen.signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    let (waiter, token, granted_at) = waiter.join().expect("waiter");
    let delay = granted_at - stopped_at;
    eprintln!("client SIGSTOPped: closed by the server and its lock handed over {delay:?} later");
    assert!(token > 0);
    // The keep-alive pinged at most a third of max-idle before the stop.
    assert!(delay >= Duration::from_millis(250), "closed {delay:?} after the stop, before max-idle");
    let connections = observer.connections().expect("connections");
    assert!(connections.iter().all(|c| c.label != label), "the frozen client is still connected");
    // Woken up, it learns that the lock is gone, stops its command and says so.
    frozen.signal(libc::SIGCONT);
    let status = frozen.wait_exit(WAIT).expect("officer lock did not exit after losing its lock");
    assert_eq!(status.code(), Some(officer::cli::EXIT_LOCK_LOST));
    drop(waiter);
}

/// A loopback proxy for one connection that can stop forwarding while keeping both sockets
/// open: the client thinks it is connected, the server hears nothing.
struct Proxy {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (frozen.clone(), stop.clone());
        let acceptor = thread::spawn(move || {
            let (down, _) = listener.accept().expect("proxy accept");
            let up = TcpStream::connect(upstream).expect("proxy connect");
            let pumps = [
                pump(down.try_clone().unwrap(), up.try_clone().unwrap(), f.clone(), s.clone()),
                pump(up, down, f, s),
            ];
            for p in pumps {
                let _ = p.join();
            }
        });
        Proxy { addr, frozen, stop, threads: vec![acceptor] }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to` until stopped; while frozen it reads nothing and holds both open.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    from.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while !stop.load(Ordering::Relaxed) {
            if frozen.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    })
}

#[test]
fn client_behind_a_frozen_proxy_is_closed_at_max_idle() {
    let server = TestServer::start_with(|c| c.max_idle = Some(Duration::from_secs(1)));
    let port = server.addr().port();
    let observer = client(port);
    let proxy = Proxy::start(server.addr());
    // The library client pings on its own every third of max-idle, through the proxy.
    let behind = client(proxy.addr.port());
    behind.lock("proxy/held", LockOptions::new()).expect("lock through the proxy");
    let waiter = lock_in_thread(client(port), "proxy/held");
    wait_until("the waiter to queue", WAIT, || queue_of(&observer, "proxy/held").len() == 2);
    // Proof that the proxied client stays alive on its keep-alive alone while forwarding works.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(queue_of(&observer, "proxy/held").len(), 2, "closed while the proxy still forwarded");
    proxy.frozen.store(true, Ordering::Relaxed);
    let frozen_at = Instant::now();
    let (waiter, token, granted_at) = waiter.join().expect("waiter");
    let delay = granted_at - frozen_at;
    eprintln!("proxy frozen: the server closed the silent client after {delay:?}");
    assert!(token > 0);
    assert!(delay >= Duration::from_millis(250), "closed {delay:?} after the freeze, before max-idle");
    // The client itself never heard: the connection is half-open from its side.
    assert!(behind.is_connected());
    drop(proxy);
    assert!(behind.wait_disconnected(Some(WAIT)), "the client never saw the proxy close");
    drop(waiter);
}

// ---------------------------------------------------------------------------------------------
// Server crashes and pauses

#[test]
fn kill9_restarts_never_reuse_tokens() {
    let dir = support::temp_dir();
    let state = state_path(&dir);
    let mut runs: Vec<Vec<u64>> = Vec::new();
    let mut startup_kills = 0;
    for i in 0..10u64 {
        if i % 3 == 1 {
            // Killed during start-up, at a few different moments (possibly mid state-file write).
            let mut child = Command::new(OFFICER)
                .args(["run", "-h", "127.0.0.1", "-p", "0", "-m", "0", "--state-file", &state])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn officer");
            thread::sleep(Duration::from_micros(i * 700));
            let _ = child.kill();
            let _ = child.wait();
            startup_kills += 1;
            continue;
        }
        let server = ServerProcess::spawn(&["-m", "0", "--state-file", &state]);
        let mut w = Raw::connect(server.addr);
        let mut tokens = Vec::new();
        for r in 0..5 {
            let name = format!("restart/{r}");
            tokens.push(token_of(&w.call(&lock_req(&name))));
            assert_eq!(w.call(&Request::Unlock(&name)), Response::Released);
        }
        // Die holding a lock, with another request in flight.
        tokens.push(token_of(&w.call(&lock_req("restart/held"))));
        w.send(&lock_req("restart/in-flight"));
        let highest_before = runs.iter().flatten().max().copied().unwrap_or(0);
        assert!(tokens.windows(2).all(|p| p[0] < p[1]), "run {i}: tokens not increasing: {tokens:?}");
        assert!(tokens[0] > highest_before, "run {i}: token {} not above {highest_before}", tokens[0]);
        runs.push(tokens);
        server.kill9();
    }
    eprintln!("{} runs killed with SIGKILL, {startup_kills} killed during start-up", runs.len());
    assert_eq!(runs.len(), 7);
}

#[test]
fn server_paused_past_max_idle_keeps_clients_that_kept_pinging() {
    let dir = support::temp_dir();
    let state = state_path(&dir);
    let server = ServerProcess::spawn(&["-m", "1", "--state-file", &state]);
    let port = server.port();
    // Library clients ping on their own (every third of max-idle).
    let clients: Vec<Client> = (0..4)
        .map(|i| {
            let c = client(port);
            c.lock(&format!("pause/c{i}"), LockOptions::new()).expect("lock");
            c
        })
        .collect();
    // Raw clients ping every 200 ms from their own thread.
    let stop = Arc::new(AtomicBool::new(false));
    let pingers: Vec<thread::JoinHandle<Raw>> = (0..2)
        .map(|i| {
            let mut w = Raw::connect(server.addr);
            token_of(&w.call(&lock_req(&format!("pause/r{i}"))));
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(w.call(&Request::Ping(b"")), Response::Pong);
                    thread::sleep(Duration::from_millis(200));
                }
                w
            })
        })
        .collect();
    // And one that goes silent just before the pause: it must be closed after it.
    let mut silent = Raw::connect(server.addr);
    token_of(&silent.call(&lock_req("pause/silent")));

    server.signal(libc::SIGSTOP);
    thread::sleep(Duration::from_millis(2500));
    server.signal(libc::SIGCONT);
    let resumed = Instant::now();

    let observer = client(port);
    wait_until("the silent client to be closed", WAIT, || queue_of(&observer, "pause/silent").is_empty());
    eprintln!("after the pause the silent client was closed within {:?}", resumed.elapsed());
    let (_, closed) = silent.wait_closed(WAIT);
    assert!(closed);
    for (i, c) in clients.iter().enumerate() {
        assert!(c.is_connected(), "library client {i} lost its connection");
        assert_eq!(c.my_locks().expect("my_locks").held, vec![format!("pause/c{i}")], "library client {i}");
    }
    stop.store(true, Ordering::Relaxed);
    for (i, p) in pingers.into_iter().enumerate() {
        let mut w = p.join().expect("pinger");
        match w.call(&Request::MyLocks) {
            Response::MyLocks { held, .. } => assert_eq!(held, vec![format!("pause/r{i}")], "raw client {i}"),
            other => panic!("raw client {i}: {other:?}"),
        }
    }
}

/// More clients than one poll call reports (1024) ping during a pause: after SIGCONT every
/// one of them is answered, none is closed as idle with its ping still unread.
#[test]
fn many_clients_that_pinged_during_a_pause_are_all_kept() {
    const CLIENTS: usize = 1500;
    officer::server::raise_fd_limit();
    let dir = support::temp_dir();
    let state = state_path(&dir);
    let server = ServerProcess::spawn(&["-m", "2", "--state-file", &state]);
    let mut wires: Vec<Raw> = (0..CLIENTS).map(|_| Raw::connect(server.addr)).collect();
    server.signal(libc::SIGSTOP);
    let paused = Instant::now();
    for w in &mut wires {
        w.send(&Request::Ping(b""));
    }
    // Past max-idle for everyone: without reading first, the idle timers would close them.
    thread::sleep(Duration::from_millis(3000).saturating_sub(paused.elapsed()));
    server.signal(libc::SIGCONT);
    let mut closed = 0;
    for w in &mut wires {
        match w.try_recv() {
            Some((_, Response::Pong)) => {}
            None => closed += 1,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(closed, 0, "{closed} of {CLIENTS} clients that pinged were closed as idle");
}

/// The server runs out of descriptors (its limit lowered under it with prlimit, so its own
/// connection cap cannot refuse first): accepting backs off instead of spinning, connected
/// clients keep working, and accepting resumes once descriptors free up.
#[test]
fn running_out_of_descriptors_backs_off_and_recovers() {
    let dir = support::temp_dir();
    let state = state_path(&dir);
    let server = ServerProcess::spawn(&["-m", "30", "--state-file", &state]);
    let mut bystander = Raw::connect(server.addr);
    token_of(&bystander.call(&lock_req("emfile/kept")));
    let open = support::process::fd_count(server.pid());
    let limit = libc::rlimit { rlim_cur: (open + 8) as libc::rlim_t, rlim_max: (open + 8) as libc::rlim_t };
    // SAFETY: prlimit on our child's pid with a valid struct; no old value is read back.
    let rc = unsafe {
        libc::prlimit(server.pid() as libc::pid_t, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut())
    };
    assert_eq!(rc, 0, "prlimit failed: {}", std::io::Error::last_os_error());
    // More connections than descriptors left: the kernel completes them, the server cannot
    // accept them all.
    let flood: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(server.addr).expect("connect")).collect();
    let cpu_before = support::process::cpu_time(server.pid());
    thread::sleep(Duration::from_millis(1500));
    let spent = support::process::cpu_time(server.pid()) - cpu_before;
    assert!(
        spent < Duration::from_millis(700),
        "server spun while out of descriptors: {spent:?} of CPU in 1.5 s"
    );
    assert_eq!(bystander.call(&Request::Ping(b"")), Response::Pong, "connected clients keep working");
    let mut observer = Raw::connect_no_hello(server.addr);
    drop(flood);
    // Descriptors free up as the flood closes: a new client is accepted and served.
    observer.send_bytes(&support::frames::hello_frame(1)).expect("hello");
    let (_, hello) = observer.recv();
    assert!(matches!(hello, Response::HelloOk(_)), "{hello:?}");
    let stats = support::raw::stat(&mut bystander, "accept_errors");
    assert!(stats > 0, "the server never hit EMFILE, so the test proved nothing");
}

// ---------------------------------------------------------------------------------------------
// Shared and semaphore names under faults (issue 13): the same checks with modes

/// One hold as its holder saw it, from `lock` returning to just before it let go (by UNLOCK or
/// by dropping its connection): inside the server's grant, so holds that overlap here overlapped
/// there too.
struct ModeHold {
    name: &'static str,
    /// Its share of the name: `WRITER` for an exclusive hold, 1 for a reader, its permits on a
    /// semaphore.
    weight: u64,
    start: Instant,
    end: Instant,
}

/// An exclusive hold's weight: more than every reader together.
const WRITER: u64 = 1 << 20;

/// The checker: at no instant does the weight held of a name pass its capacity (`WRITER` for a
/// read/write name: one writer alone, or readers only; the limit for a semaphore). A sweep over
/// the starts and ends; an end and a start at the same instant do not overlap.
fn most_held_at_once(holds: &[ModeHold], name: &str) -> u64 {
    let mut events: Vec<(Instant, i64)> = Vec::new();
    for h in holds.iter().filter(|h| h.name == name) {
        events.push((h.start, h.weight as i64));
        events.push((h.end, -(h.weight as i64)));
    }
    events.sort_by_key(|&(at, delta)| (at, delta));
    let (mut held, mut most) = (0i64, 0i64);
    for (_, delta) in events {
        held += delta;
        most = most.max(held);
    }
    most as u64
}

/// 12 clients on a read/write name and a semaphore of 3, a third of them writers or 2-permit
/// takers; every seventh hold ends by the client dropping its connection instead of UNLOCK, and
/// the client reconnects. Readers never overlap a writer, at most 3 permits are held at any
/// instant, and every lock is released at the end. Bounded: 12 x 40 holds.
#[test]
fn readers_and_permit_holders_stay_within_bounds_while_clients_drop_out() {
    const THREADS: u64 = 12;
    const ROUNDS: usize = 40;
    const LIMIT: u32 = 3;
    let server = TestServer::start();
    let port = server.addr().port();
    let holds: Vec<ModeHold> = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let mut client = client(port);
                    let mut rng = support::rng::Rng::new(0xFA17_0000 + t);
                    let mut holds = Vec::with_capacity(ROUNDS);
                    for round in 0..ROUNDS {
                        let heavy = rng.below(3) == 0;
                        let (name, weight, opts) = if rng.below(2) == 0 {
                            let opts = if heavy { LockOptions::new() } else { LockOptions::new().shared() };
                            ("fx/rw", if heavy { WRITER } else { 1 }, opts)
                        } else {
                            let permits = if heavy { 2 } else { 1 };
                            ("fx/sem", u64::from(permits), LockOptions::new().permits(permits, LIMIT))
                        };
                        let lock = client.lock(name, opts.timeout(WAIT)).expect("lock");
                        let start = Instant::now();
                        thread::yield_now();
                        let end = Instant::now();
                        holds.push(ModeHold { name, weight, start, end });
                        if round % 7 == 6 {
                            // The connection goes while holding: the server releases it.
                            drop(client);
                            client = self::client(port);
                        } else {
                            client.unlock_token(name, lock.token()).expect("unlock");
                        }
                    }
                    holds
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("worker panicked")).collect()
    });
    assert_eq!(holds.len(), THREADS as usize * ROUNDS);
    let rw = most_held_at_once(&holds, "fx/rw");
    assert!(rw <= WRITER, "a reader beside a writer, or two writers: {rw}");
    let sem = most_held_at_once(&holds, "fx/sem");
    assert!(sem <= u64::from(LIMIT), "{sem} permits held at once, the limit is {LIMIT}");
    let observer = client(port);
    wait_until("every hold to be released", WAIT, || observer.locks().expect("locks").is_empty());
}

#[test]
fn killed_shared_and_permit_holders_hand_over_promptly() {
    let server = TestServer::start();
    let port = server.addr().port();
    let observer = client(port);
    let mut readers: Vec<LockProcess> =
        (0..2).map(|_| LockProcess::spawn(port, "crash/rw", &["-s"], "echo held; exec sleep 60")).collect();
    let mut permits: Vec<LockProcess> = (0..2)
        .map(|_| {
            let args = ["--permits", "1", "--limit", "2"];
            LockProcess::spawn(port, "crash/sem", &args, "echo held; exec sleep 60")
        })
        .collect();
    for p in readers.iter().chain(&permits) {
        assert!(p.wait_held(WAIT), "officer lock never ran its command");
    }
    let writer = lock_in_thread(client(port), "crash/rw");
    let taker = thread::spawn(move || {
        let c = client(port);
        let token =
            c.lock("crash/sem", LockOptions::new().permits(2, 2).timeout(WAIT)).expect("permits").token();
        (c, token)
    });
    wait_until("both to queue", WAIT, || {
        queue_of(&observer, "crash/rw").len() == 3 && queue_of(&observer, "crash/sem").len() == 3
    });
    readers[0].crash();
    permits[0].crash();
    wait_until("the first crashes to be released", WAIT, || {
        queue_of(&observer, "crash/rw").len() == 2 && queue_of(&observer, "crash/sem").len() == 2
    });
    assert!(!writer.is_finished(), "one reader is left: the writer still waits");
    assert!(!taker.is_finished(), "one permit is free of the two asked");
    readers[1].crash();
    permits[1].crash();
    let (writer, token, _) = writer.join().expect("writer");
    let (taker, sem_token) = taker.join().expect("taker");
    assert!(token > 0 && sem_token > 0);
    assert_eq!(queue_of(&observer, "crash/rw").len(), 1, "the writer alone");
    assert_eq!(queue_of(&observer, "crash/sem").len(), 1, "the taker of both permits alone");
    drop((writer, taker));
}
