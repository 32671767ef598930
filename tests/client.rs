//! The library client against a real server on 127.0.0.1:0 (or a temp UNIX socket): every
//! call and error kind, contention between clients, namespaces, guards and nesting, a client
//! shared between threads, keep-alive, and losing the server.

mod support;

use std::panic;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use officer::client::{Client, ErrorKind, LockOptions};
use support::server::TestServer;
use support::WAIT;

fn client(server: &TestServer) -> Client {
    Client::connect("127.0.0.1", server.addr().port()).expect("connect")
}

fn client_ns(server: &TestServer, ns: &str) -> Client {
    Client::builder().host("127.0.0.1").port(server.addr().port()).namespace(ns).connect().expect("connect")
}

/// Polls `cond` until it holds, failing after `WAIT`: for server-side state changes that the
/// test cannot be told about (another connection joining a queue).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// The queue of `name` as the server lists it (empty when the lock does not exist).
fn queue_of(observer: &Client, name: &str) -> Vec<String> {
    let locks = observer.locks().expect("locks");
    locks.iter().find(|l| l.name == name).map(|l| l.queue.clone()).unwrap_or_default()
}

#[test]
fn client_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Client>();
    check::<officer::client::LockGuard>();
    check::<officer::client::Error>();
}

#[test]
fn handshake_ping_and_server_info() {
    let server = TestServer::start();
    let c = client(&server);
    assert!(c.is_connected());
    assert!(c.ping().expect("ping") < WAIT);
    let info = c.server_info();
    assert_eq!(info.version, officer::protocol::PROTOCOL_VERSION);
    assert!(info.max_name > 0);
}

#[test]
fn lock_unlock_already_acquired_and_not_held() {
    let server = TestServer::start();
    let c = client(&server);
    let first = c.lock("a", LockOptions::new()).expect("lock");
    assert_eq!((first.name(), first.already_acquired()), ("a", false));
    let again = c.try_lock("a").expect("relock");
    assert!(again.already_acquired());
    assert_eq!(again.token(), first.token());
    c.unlock("a").expect("unlock");
    let err = c.unlock("a").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotHeld);
    assert_eq!(err.lock_name(), Some("a"));
    assert!(err.to_string().contains("\"a\""), "{err}");
    let next = c.try_lock("a").expect("lock again");
    assert!(next.token() > first.token(), "fencing tokens increase");
}

#[test]
fn try_lock_conflict_carries_the_holders_label() {
    let server = TestServer::start();
    let (holder, other) = (client(&server), client(&server));
    holder.try_lock("x").expect("lock");
    let err = other.try_lock("x").unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let label = other
        .connections()
        .expect("connections")
        .iter()
        .find(|c| c.held == ["x"])
        .expect("holder")
        .label
        .clone();
    assert_eq!(err.queue(), Some(&[label.clone()][..]));
    assert!(err.to_string().contains(&label), "{err}");
}

#[test]
fn timed_lock_waits_for_the_timeout() {
    let server = TestServer::start();
    let (holder, other) = (client(&server), client(&server));
    holder.try_lock("x").expect("lock");
    let start = Instant::now();
    let err = other.lock("x", LockOptions::with_timeout(Duration::from_millis(150))).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // The client waits for the server's answer. The server's clock is whole milliseconds,
    // so allow one tick of rounding (PROTOCOL.md §6.3 promises never early; reported).
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(149), "answered after {waited:?}");
    assert_eq!(err.queue().map(<[String]>::len), Some(1));
}

#[test]
fn queue_max_refuses_with_the_queue() {
    let server = TestServer::start();
    let (holder, waiter, late) = (client(&server), client(&server), client(&server));
    holder.try_lock("x").expect("lock");
    thread::scope(|s| {
        let waiting = s.spawn(|| waiter.lock("x", LockOptions::new()));
        wait_until("the waiter queues", || queue_of(&holder, "x").len() == 2);
        let err = late.lock("x", LockOptions::new().queue_max(2)).unwrap_err();
        assert!(err.is_queue_maxed(), "{err}");
        assert_eq!(err.queue().map(<[String]>::len), Some(2));
        // queue_max above the queue length waits as usual; try once to see it is let through.
        assert!(late.lock("x", LockOptions::try_once().queue_max(3)).unwrap_err().is_timeout());
        holder.unlock("x").expect("unlock");
        assert!(!waiting.join().expect("join").expect("granted").already_acquired());
    });
}

#[test]
fn waiters_are_granted_in_fifo_order() {
    let server = TestServer::start();
    let holder = client(&server);
    holder.try_lock("fifo").expect("lock");
    let waiters: Vec<Client> = (0..4).map(|_| client(&server)).collect();
    let (tx, rx) = mpsc::channel();
    thread::scope(|s| {
        for (i, w) in waiters.iter().enumerate() {
            let tx = tx.clone();
            s.spawn(move || {
                w.lock("fifo", LockOptions::new()).expect("granted");
                tx.send(i).expect("send");
                w.unlock("fifo").expect("unlock");
            });
            // Queue them one at a time so the order of arrival is known.
            wait_until("the waiter queues", || queue_of(&holder, "fifo").len() == i + 2);
        }
        holder.unlock("fifo").expect("unlock");
    });
    let order: Vec<usize> = rx.try_iter().collect();
    assert_eq!(order, [0, 1, 2, 3]);
}

#[test]
fn contending_clients_exclude_each_other_over_many_rounds() {
    let server = TestServer::start();
    let inside = AtomicBool::new(false);
    let counter = AtomicU64::new(0);
    const ROUNDS: u64 = 40;
    thread::scope(|s| {
        for _ in 0..4 {
            let c = client(&server);
            let (inside, counter) = (&inside, &counter);
            s.spawn(move || {
                for _ in 0..ROUNDS {
                    c.with_lock("shared", LockOptions::with_timeout(WAIT), || {
                        assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                        let seen = counter.load(Ordering::SeqCst);
                        thread::yield_now();
                        counter.store(seen + 1, Ordering::SeqCst);
                        inside.store(false, Ordering::SeqCst);
                    })
                    .expect("with_lock");
                }
            });
        }
    });
    assert_eq!(counter.load(Ordering::SeqCst), 4 * ROUNDS);
}

#[test]
fn namespace_is_added_and_stripped() {
    let server = TestServer::start();
    let (a, b, plain) = (client_ns(&server, "a"), client_ns(&server, "b"), client(&server));
    assert_eq!(a.namespace(), Some("a"));
    a.try_lock("x").expect("lock");
    assert_eq!(queue_of(&plain, "a:x").len(), 1);
    assert_eq!(a.locks().expect("locks").iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["x"]);
    assert!(b.locks().expect("locks").is_empty(), "other namespaces are not listed");
    assert_eq!(a.my_locks().expect("mine").held, ["x"]);
    let conns = a.connections().expect("connections");
    assert!(conns.iter().any(|c| c.held == ["x"]));
    assert!(b.try_lock("x").is_ok(), "b:x is another lock");
    let a2 = client_ns(&server, "a");
    let err = a2.try_lock("x").unwrap_err();
    assert_eq!(err.lock_name(), Some("x"));
    a.unlock("x").expect("unlock");
}

#[test]
fn nested_with_lock_releases_only_at_the_outermost_level() {
    let server = TestServer::start();
    let (c, observer) = (client(&server), client(&server));
    let out = c
        .with_lock("n", LockOptions::new(), || {
            c.with_lock("n", LockOptions::new(), || assert_eq!(queue_of(&observer, "n").len(), 1))
                .expect("inner");
            assert_eq!(c.my_locks().expect("mine").held, ["n"], "inner level did not unlock");
            7
        })
        .expect("outer");
    assert_eq!(out, 7);
    assert!(c.my_locks().expect("mine").held.is_empty());
}

#[test]
fn guard_and_with_lock_release_on_drop_and_on_panic() {
    let server = TestServer::start();
    let (c, other) = (client(&server), client(&server));
    let guard = c.lock_guard("g", LockOptions::new()).expect("guard");
    assert_eq!(guard.name(), "g");
    assert!(guard.token() > 0 && !guard.already_acquired());
    assert!(other.try_lock("g").is_err());
    let nested = c.lock_guard("g", LockOptions::new()).expect("nested");
    assert!(nested.already_acquired());
    drop(nested);
    assert!(other.try_lock("g").is_err(), "a nested guard does not unlock");
    drop(guard);
    other.try_lock("g").expect("free after drop");
    other.unlock("g").expect("unlock");

    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let guarded = panic::catch_unwind(panic::AssertUnwindSafe(|| {
        let _guard = c.lock_guard("g", LockOptions::new()).expect("guard");
        panic!("boom");
    }));
    let closure = panic::catch_unwind(panic::AssertUnwindSafe(|| {
        c.with_lock("h", LockOptions::new(), || panic!("boom")).expect("with_lock");
    }));
    panic::set_hook(hook);
    assert!(guarded.is_err() && closure.is_err());
    other.try_lock("g").expect("guard released while unwinding");
    other.try_lock("h").expect("with_lock released while unwinding");
}

#[test]
fn explicit_guard_unlock_reports_errors() {
    let server = TestServer::start();
    let c = client(&server);
    let guard = c.lock_guard("e", LockOptions::new()).expect("guard");
    c.unlock("e").expect("released behind the guard's back");
    assert!(guard.unlock().unwrap_err().is_not_held());
}

#[test]
fn reset_releases_everything_and_cancels_waits() {
    let server = TestServer::start();
    let (holder, c) = (client(&server), client(&server));
    holder.try_lock("x").expect("lock");
    c.try_lock("y").expect("lock");
    thread::scope(|s| {
        let waiting = s.spawn(|| c.lock("x", LockOptions::new()));
        wait_until("the wait is queued", || c.my_locks().expect("mine").waiting == ["x"]);
        c.reset().expect("reset");
        let err = waiting.join().expect("join").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    });
    assert_eq!(c.my_locks().expect("mine"), Default::default());
    holder.try_lock("y").expect("y was released");
}

#[test]
fn unlock_cancels_a_wait_and_a_second_lock_is_already_waiting() {
    let server = TestServer::start();
    let (holder, c) = (client(&server), client(&server));
    holder.try_lock("x").expect("lock");
    thread::scope(|s| {
        let waiting = s.spawn(|| c.lock("x", LockOptions::new()));
        wait_until("the wait is queued", || c.my_locks().expect("mine").waiting == ["x"]);
        let dup = c.lock("x", LockOptions::new()).unwrap_err();
        assert_eq!(dup.kind(), ErrorKind::AlreadyWaiting, "{dup}");
        c.unlock("x").expect("unlock of a waited name");
        assert_eq!(waiting.join().expect("join").unwrap_err().kind(), ErrorKind::Cancelled);
    });
}

#[test]
fn a_waiting_thread_does_not_block_other_threads_of_a_shared_client() {
    let server = TestServer::start();
    let (holder, shared) = (client(&server), client(&server));
    holder.try_lock("busy").expect("lock");
    thread::scope(|s| {
        let waiting = s.spawn(|| shared.lock("busy", LockOptions::new()));
        wait_until("the wait is queued", || shared.my_locks().expect("mine").waiting == ["busy"]);
        for i in 0..50 {
            let name = format!("other-{}", i % 3);
            shared.try_lock(&name).expect("lock while another thread waits");
            shared.ping().expect("ping");
            shared.unlock(&name).expect("unlock");
        }
        holder.unlock("busy").expect("unlock");
        assert!(!waiting.join().expect("join").expect("granted").already_acquired());
    });
}

#[test]
fn keep_alive_keeps_a_busy_holder_past_the_idle_timeout() {
    // Generous enough that a loaded machine's scheduling stalls stay well inside the keep-alive
    // margin (pings every third of the idle timeout).
    let server = TestServer::start_with(|cfg| cfg.max_idle = Some(Duration::from_millis(1500)));
    let port = server.addr().port();
    let alive = client(&server);
    let silent = Client::builder().host("127.0.0.1").port(port).no_keep_alive().connect().expect("connect");
    alive.try_lock("kept").expect("lock");
    silent.try_lock("dropped").expect("lock");
    // The silent one is closed by the server after its idle timeout; the other outlives it.
    assert!(silent.wait_disconnected(Some(WAIT)), "the server closed the idle connection");
    let err = silent.ping().unwrap_err();
    assert!(err.is_connection_lost(), "{err}");
    assert_eq!(err.released_locks(), ["dropped".to_string()]);
    // Be busy for several idle timeouts more.
    assert!(!alive.wait_disconnected(Some(Duration::from_millis(3500))));
    assert_eq!(alive.my_locks().expect("mine").held, ["kept"]);
}

#[test]
fn server_stop_turns_every_call_into_connection_lost() {
    let server = TestServer::start();
    let (holder, waiter) = (client(&server), client(&server));
    holder.try_lock("x").expect("lock");
    thread::scope(|s| {
        let waiting = s.spawn(|| waiter.lock("x", LockOptions::new()));
        wait_until("the wait is queued", || queue_of(&holder, "x").len() == 2);
        server.stop();
        assert!(waiting.join().expect("join").unwrap_err().is_connection_lost());
    });
    assert!(holder.wait_disconnected(Some(WAIT)));
    assert!(!holder.is_connected());
    for err in
        [holder.ping().unwrap_err(), holder.try_lock("y").unwrap_err(), holder.unlock("x").unwrap_err()]
    {
        assert!(err.is_connection_lost(), "{err}");
        assert_eq!(err.released_locks(), ["x".to_string()]);
        assert!(err.to_string().contains("released: x"), "{err}");
    }
}

#[test]
fn killed_server_is_a_lost_connection() {
    let dir = support::temp_dir();
    let state = support::state_file_in(dir.path());
    let (mut child, addr) =
        support::process::spawn_officer(&["--state-file", state.to_str().expect("utf-8 path")]);
    let c = Client::connect("127.0.0.1", addr.port()).expect("connect");
    c.try_lock("k").expect("lock");
    child.kill().expect("kill");
    let _ = child.wait();
    assert!(c.wait_disconnected(Some(WAIT)));
    let err = c.try_lock("k").unwrap_err();
    assert!(err.is_connection_lost(), "{err}");
    assert_eq!(err.released_locks(), ["k".to_string()]);
}

#[test]
fn reconnect_and_disconnect() {
    let server = TestServer::start();
    let (c, other) = (client(&server), client(&server));
    c.try_lock("r").expect("lock");
    let before = c.server_info().connection_id;
    c.reconnect().expect("reconnect");
    assert_ne!(c.server_info().connection_id, before);
    other.try_lock("r").expect("released by reconnect");
    c.disconnect();
    assert!(!c.is_connected());
    let err = c.ping().unwrap_err();
    assert!(err.is_connection_lost() && err.to_string().contains("disconnect"), "{err}");
    c.reconnect().expect("reconnect after disconnect");
    c.ping().expect("ping");
}

#[test]
fn unix_socket_and_automatic_reconnect_only_without_locks() {
    let dir = support::temp_dir();
    let path = dir.path().join("officer.sock");
    let listen = |p: &std::path::Path| {
        let p = p.to_owned();
        TestServer::start_with(move |cfg| cfg.listen = officer::server::Listen::Unix(p))
    };
    let server = listen(&path);
    let idle = Client::connect_unix(&path).expect("connect");
    let holder = Client::connect_unix(&path).expect("connect");
    holder.try_lock("u").expect("lock over a UNIX socket");
    server.stop();
    assert!(idle.wait_disconnected(Some(WAIT)) && holder.wait_disconnected(Some(WAIT)));
    let _server = listen(&path);
    idle.ping().expect("a connection without locks is replaced on the next call");
    assert!(holder.ping().unwrap_err().is_connection_lost(), "never silently while locks were held");
    holder.reconnect().expect("explicit reconnect");
    holder.try_lock("u").expect("lock on the new server");
}

#[test]
fn listings_and_stats() {
    let server = TestServer::start();
    let (a, b) = (client(&server), client(&server));
    a.try_lock("jobs/1").expect("lock");
    a.try_lock("jobs/2").expect("lock");
    b.try_lock("other").expect("lock");
    let jobs = a.locks_matching("jobs/", 0).expect("locks");
    assert_eq!(jobs.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["jobs/1", "jobs/2"]);
    assert!(!jobs.truncated);
    let one = a.locks_matching("", 1).expect("locks");
    assert_eq!((one.len(), one.truncated), (1, true));
    assert_eq!(a.locks().expect("locks").len(), 3);
    let conns = a.connections().expect("connections");
    assert!(conns.len() >= 2);
    let label = &conns.iter().find(|c| c.held == ["other"]).expect("b").label;
    assert_eq!(a.connections_matching(label, 0).expect("by label").len(), 1);
    assert!(!a.stats().expect("stats").entries.is_empty());
}

#[test]
fn invalid_names_are_refused_without_losing_the_connection() {
    let server = TestServer::start_with(|cfg| cfg.max_name = 8);
    let c = client(&server);
    for name in ["", "much-too-long", "bell\u{7}"] {
        assert_eq!(c.try_lock(name).unwrap_err().kind(), ErrorKind::InvalidName, "{name:?}");
    }
    let ns = client_ns(&server, "longns");
    assert_eq!(ns.try_lock("abc").unwrap_err().kind(), ErrorKind::InvalidName, "the namespace counts");
    c.try_lock("ok").expect("a valid name still works");
}

#[test]
fn connect_errors_are_io() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let err = Client::builder().host("127.0.0.1").port(port).connect().unwrap_err();
    assert!(err.is_io(), "{err}");
}

#[test]
fn guard_unlock_after_a_loss_reports_it_with_short_names() {
    let server = TestServer::start();
    let c = client_ns(&server, "ns");
    let first = c.lock_guard("a", LockOptions::new()).expect("guard");
    let _second = c.lock_guard("b", LockOptions::new()).expect("guard");
    server.stop();
    assert!(c.wait_disconnected(Some(WAIT)));
    let err = first.unlock().unwrap_err();
    assert!(err.is_connection_lost(), "{err}");
    assert_eq!(err.released_locks(), ["a".to_string(), "b".to_string()]);
}

#[test]
fn authentication_with_the_builder_secret() {
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let configured = secret.clone();
    let server = TestServer::start_with(move |cfg| cfg.auth_secret = Some(configured));
    let builder = || Client::builder().host("127.0.0.1").port(server.addr().port());
    let c = builder().auth(secret).connect().expect("right secret");
    c.try_lock("a").expect("lock after AUTH");
    let wrong = builder().auth("not the secret").connect().unwrap_err();
    assert_eq!(wrong.server_code(), Some(officer::protocol::ErrorCode::AuthFailed), "{wrong}");
    let none = builder().connect().unwrap_err();
    assert_eq!(none.server_code(), Some(officer::protocol::ErrorCode::AuthRequired), "{none}");
}

/// The lock model v2 calls take and give names within the client's namespace, like the
/// original calls: a grant's token is checked, renewed and listed under the short name, and a
/// LOST notice (which carries the full name) reaches the guard of the short one.
#[test]
fn v2_calls_work_within_a_namespace() {
    let server = TestServer::start();
    let a = client_ns(&server, "team");
    let outside = client(&server);
    let lock = a.lock("job", LockOptions::new().shared()).expect("shared");
    assert!(a.check("job", lock.token()).expect("check"));
    assert!(outside.check("team:job", lock.token()).expect("the full name outside"));
    assert!(!outside.check("job", lock.token()).expect("another name outside"));
    let listed = a.locks_detail("", 0).expect("detail");
    assert_eq!(listed.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["job"]);
    a.unlock_token("job", lock.token()).expect("unlock");
    let guard = a.lock_guard("leased", LockOptions::new().lease(Duration::from_millis(50))).expect("lease");
    assert!(guard.wait_lost(Some(WAIT)), "the lease ran out unrenewed");
    let e = a.renew("leased", guard.token()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::GrantLost);
    assert_eq!(e.lock_name(), Some("leased"), "{e}");
}
