//! The async client against a real server on 127.0.0.1:0 (or a temp UNIX socket): the blocking
//! client's semantics on the core cases, many tasks on one connection, cancel-safety of `lock`
//! (a dropped wait is withdrawn; a grant racing the drop is released), guards released on drop,
//! and losing the server.

#![cfg(feature = "tokio")]

mod support;

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use officer::client::tokio::{AsyncClient, AsyncLockGuard, AsyncShardedClient};
use officer::client::{ErrorKind, LockOptions, LostReason, ShardedClient};
use support::server::TestServer;
use support::WAIT;

/// Runs `f` on a fresh single-threaded runtime: every task of the test shares one thread, so
/// 1,000 waiting locks are visibly futures, not threads.
fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

/// Runs `a` and `b` concurrently on this task until both are done (tokio's `join!` without
/// its macros feature).
async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut ra, mut rb) = (None, None);
    poll_fn(|cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    (ra.expect("a done"), rb.expect("b done"))
}

async fn client(server: &TestServer) -> AsyncClient {
    AsyncClient::connect("127.0.0.1", server.addr().port()).await.expect("connect")
}

async fn client_ns(server: &TestServer, ns: &str) -> AsyncClient {
    let builder = AsyncClient::builder().host("127.0.0.1").port(server.addr().port()).namespace(ns);
    builder.connect().await.expect("connect")
}

/// Polls `cond` until it holds, failing after `WAIT`: for server-side state the test cannot be
/// told about (another connection joining a queue, an UNLOCK sent from a drop).
async fn wait_until<F: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The queue of `name` as the server lists it (empty when the lock does not exist).
async fn queue_of(observer: &AsyncClient, name: &str) -> Vec<String> {
    let locks = observer.locks().await.expect("locks");
    locks.iter().find(|l| l.name == name).map(|l| l.queue.clone()).unwrap_or_default()
}

#[test]
fn client_guard_and_futures_are_send() {
    fn check<T: Send + Sync>() {}
    check::<AsyncClient>();
    check::<AsyncLockGuard>();
    fn send<T: Send>(_: &T) {}
    let server = TestServer::start();
    run(async {
        let c = client(&server).await;
        let lock = c.lock("x", LockOptions::new());
        send(&lock);
        lock.await.expect("lock");
        let guard = c.lock_guard("y", LockOptions::new());
        send(&guard);
        drop(guard);
    });
}

#[test]
fn acquire_contend_timeout_and_not_held_as_the_blocking_client() {
    let server = TestServer::start();
    run(async {
        let (a, b) = (client(&server).await, client(&server).await);
        assert!(a.ping().await.expect("ping") < WAIT);
        let first = a.lock("x", LockOptions::new()).await.expect("lock");
        assert!(!first.already_acquired() && first.name() == "x");
        let again = a.try_lock("x").await.expect("held already");
        assert!(again.already_acquired());
        assert_eq!(again.token(), first.token());

        let holder = queue_of(&b, "x").await;
        let err = b.try_lock("x").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::LockTimeout, "{err}");
        assert_eq!(err.queue(), Some(&holder[..]));
        assert_eq!(err.lock_name(), Some("x"));
        let started = Instant::now();
        let err = b.lock("x", LockOptions::with_timeout(Duration::from_millis(50))).await.unwrap_err();
        assert!(err.is_timeout() && started.elapsed() >= Duration::from_millis(50), "{err}");

        a.unlock("x").await.expect("unlock");
        assert!(a.unlock("x").await.unwrap_err().is_not_held());
        let second = b.try_lock("x").await.expect("free now");
        assert!(second.token() > first.token());
        assert_eq!(a.server_info().max_name, b.server_info().max_name);
    });
}

#[test]
fn queue_max_refuses_with_the_queue() {
    let server = TestServer::start();
    run(async {
        let (a, b, c) = (client(&server).await, client(&server).await, client(&server).await);
        a.try_lock("q").await.expect("lock");
        let waiting = b.lock("q", LockOptions::new());
        let refused = async {
            wait_until("b waits", || async { queue_of(&c, "q").await.len() == 2 }).await;
            let err = c.lock("q", LockOptions::new().queue_max(2)).await.unwrap_err();
            assert!(err.is_queue_maxed(), "{err}");
            assert_eq!(err.queue().map(<[String]>::len), Some(2));
            a.unlock("q").await.expect("unlock");
        };
        let (granted, ()) = both(waiting, refused).await;
        assert!(!granted.expect("b gets it after a").already_acquired());
    });
}

#[test]
fn reset_and_listings_within_a_namespace() {
    let server = TestServer::start();
    run(async {
        let ns = client_ns(&server, "ns").await;
        let other = client_ns(&server, "other").await;
        assert_eq!(ns.namespace(), Some("ns"));
        assert_eq!(ns.try_lock("a").await.expect("a").name(), "a", "the name without the namespace");
        ns.try_lock("b").await.expect("b");
        other.try_lock("a").await.expect("same name, other namespace");
        let again = ns.try_lock("a").await.expect("nested");
        assert!(again.already_acquired() && again.name() == "a");
        let names: Vec<String> = ns.locks().await.expect("locks").iter().map(|l| l.name.clone()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(ns.locks_matching("b", 0).await.expect("matching").len(), 1);
        assert_eq!(ns.my_locks().await.expect("mine").held, ["a", "b"]);
        let listing = ns.my_locks_matching("a", 0).await.expect("mine matching");
        assert!(listing.held == ["a"] && !listing.truncated);
        let conns = ns.connections().await.expect("connections");
        assert!(conns.iter().any(|c| c.held == ["a", "b"]), "{conns:?}");
        assert!(conns.iter().any(|c| c.held.is_empty()), "the other namespace's names are hidden");
        assert!(ns.stats().await.expect("stats").get("locks_held").is_some_and(|n| n >= 3));
        let top = ns.top(0).await.expect("top");
        assert!(top.longest_held.iter().all(|e| e.name == "a" || e.name == "b"), "{top:?}");

        ns.reset().await.expect("reset");
        assert!(ns.my_locks().await.expect("mine").held.is_empty());
        assert_eq!(other.my_locks().await.expect("theirs").held, ["a"]);
        let err = ns.try_lock("bad\nname").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidName, "{err}");
        ns.ping().await.expect("an invalid name never reaches the server");
    });
}

#[test]
fn a_thousand_tasks_on_one_connection_each_get_their_lock() {
    let server = TestServer::start();
    run(async {
        let c = Arc::new(client(&server).await);
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let c = Arc::clone(&c);
                tokio::spawn(async move { c.lock(&format!("t{i:04}"), LockOptions::new()).await })
            })
            .collect();
        let all = async {
            for task in tasks {
                assert!(!task.await.expect("task").expect("lock").already_acquired());
            }
        };
        tokio::time::timeout(WAIT, all).await.expect("1,000 locks within the bound");
        assert_eq!(c.my_locks().await.expect("mine").held.len(), 1000);
    });
}

#[test]
fn a_dropped_wait_is_withdrawn_and_the_next_waiter_gets_the_lock() {
    let server = TestServer::start();
    run(async {
        let (holder, dropped, next) = (client(&server).await, client(&server).await, client(&server).await);
        holder.try_lock("x").await.expect("lock");
        let dropped = Arc::new(dropped);
        let waiting = tokio::spawn({
            let dropped = Arc::clone(&dropped);
            async move { dropped.lock("x", LockOptions::new()).await }
        });
        wait_until("the wait is queued", || async { queue_of(&holder, "x").await.len() == 2 }).await;
        let dropped_label = queue_of(&holder, "x").await[1].clone();
        let next_wait = next.lock("x", LockOptions::with_timeout(WAIT));
        let rest = async {
            wait_until("next waits too", || async { queue_of(&holder, "x").await.len() == 3 }).await;
            waiting.abort();
            assert!(waiting.await.unwrap_err().is_cancelled());
            wait_until("the wait is withdrawn", || async {
                !queue_of(&holder, "x").await.contains(&dropped_label)
            })
            .await;
            holder.unlock("x").await.expect("unlock");
        };
        let (granted, ()) = both(next_wait, rest).await;
        granted.expect("the next waiter gets the lock, not the dropped one");
        assert_eq!(queue_of(&holder, "x").await.len(), 1);
        assert!(!queue_of(&holder, "x").await.contains(&dropped_label));
        let mine = dropped.my_locks().await.expect("mine");
        assert!(mine.held.is_empty() && mine.waiting.is_empty(), "{mine:?}");
    });
}

#[test]
fn a_drop_racing_the_grant_leaves_the_lock_free() {
    let server = TestServer::start();
    run(async {
        let (holder, racer) = (client(&server).await, Arc::new(client(&server).await));
        for round in 0..60 {
            holder.try_lock("r").await.expect("lock");
            let task = tokio::spawn({
                let racer = Arc::clone(&racer);
                async move { racer.lock("r", LockOptions::new()).await }
            });
            for _ in 0..round % 3 {
                tokio::task::yield_now().await;
            }
            // The grant goes to the racer (if its LOCK arrived first) while its future is dropped.
            holder.unlock("r").await.expect("unlock");
            for _ in 0..round % 4 {
                tokio::task::yield_now().await;
            }
            task.abort();
            if let Ok(finished) = task.await {
                // Completed before the abort: the caller owns the lock, as without a drop.
                finished.expect("granted");
                racer.unlock("r").await.expect("unlock the completed grant");
            }
            wait_until("the lock is free", || async { queue_of(&holder, "r").await.is_empty() }).await;
            assert!(racer.my_locks().await.expect("mine").held.is_empty(), "round {round}");
        }
    });
}

#[test]
fn a_guard_dropped_in_the_runtime_releases_the_lock() {
    let server = TestServer::start();
    run(async {
        let (a, b) = (client(&server).await, client(&server).await);
        let guard = a.lock_guard("g", LockOptions::new()).await.expect("guard");
        let inner = a.lock_guard("g", LockOptions::new()).await.expect("nested");
        assert!(inner.already_acquired() && !guard.already_acquired() && guard.name() == "g");
        drop(inner);
        assert!(b.try_lock("g").await.unwrap_err().is_timeout(), "a nested guard releases nothing");
        drop(guard);
        b.lock("g", LockOptions::with_timeout(WAIT)).await.expect("released by the drop");
        b.unlock("g").await.expect("unlock");

        let value = a.with_lock("w", LockOptions::new(), async { 7 }).await.expect("with_lock");
        assert_eq!(value, 7);
        let guard = a.lock_guard("w", LockOptions::new()).await.expect("free again");
        guard.unlock().await.expect("explicit unlock");
        assert!(b.try_lock("w").await.is_ok());
    });
}

#[test]
fn server_stop_fails_pending_futures_with_connection_lost() {
    let server = TestServer::start();
    run(async {
        let (holder, waiter) = (client(&server).await, client(&server).await);
        holder.try_lock("x").await.expect("lock");
        let waiting = waiter.lock("x", LockOptions::new());
        let stop = async {
            wait_until("the wait is queued", || async { queue_of(&holder, "x").await.len() == 2 }).await;
            server.stop();
        };
        let (lost, ()) = both(waiting, stop).await;
        assert!(lost.unwrap_err().is_connection_lost());
        assert!(holder.wait_disconnected(Some(WAIT)).await);
        assert!(!holder.is_connected());
        for err in [holder.ping().await.unwrap_err(), holder.unlock("x").await.unwrap_err()] {
            assert!(err.is_connection_lost(), "{err}");
            assert_eq!(err.released_locks(), ["x".to_string()]);
        }
    });
}

#[test]
fn unix_socket_reconnect_and_auth() {
    let dir = support::temp_dir();
    let path = dir.path().join("officer.sock");
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let configured = secret.clone();
    let p = path.clone();
    let server = TestServer::start_with(move |cfg| {
        cfg.listen = officer::server::Listen::Unix(p);
        cfg.auth_secret = Some(configured);
    });
    run(async {
        let none = AsyncClient::connect_unix(&path).await.unwrap_err();
        assert_eq!(none.server_code(), Some(officer::protocol::ErrorCode::AuthRequired), "{none}");
        let c = AsyncClient::builder().unix_socket(&path).auth(secret).connect().await.expect("connect");
        c.try_lock("u").await.expect("lock over a UNIX socket");
        c.disconnect();
        assert!(c.ping().await.unwrap_err().is_connection_lost(), "closed on purpose: not replaced");
        c.reconnect().await.expect("reconnect");
        assert!(c.my_locks().await.expect("mine").held.is_empty());
    });
    drop(server);
}

#[test]
fn keep_alive_keeps_a_holder_past_the_idle_timeout() {
    let server = TestServer::start_with(|cfg| cfg.max_idle = Some(Duration::from_millis(1500)));
    let port = server.addr().port();
    run(async {
        let alive = client(&server).await;
        let builder = AsyncClient::builder().host("127.0.0.1").port(port).no_keep_alive();
        let silent = builder.connect().await.expect("connect");
        alive.try_lock("kept").await.expect("lock");
        silent.try_lock("dropped").await.expect("lock");
        assert!(silent.wait_disconnected(Some(WAIT)).await, "the server closed the idle connection");
        let err = silent.ping().await.unwrap_err();
        assert!(err.is_connection_lost(), "{err}");
        assert_eq!(err.released_locks(), ["dropped".to_string()]);
        assert!(!alive.wait_disconnected(Some(Duration::from_millis(3500))).await);
        assert_eq!(alive.my_locks().await.expect("mine").held, ["kept"]);
    });
}

#[test]
fn automatic_reconnect_only_without_locks() {
    let dir = support::temp_dir();
    let path = dir.path().join("officer.sock");
    let listen = |p: &std::path::Path| {
        let p = p.to_owned();
        TestServer::start_with(move |cfg| cfg.listen = officer::server::Listen::Unix(p))
    };
    let server = listen(&path);
    run(async {
        let idle = AsyncClient::connect_unix(&path).await.expect("connect");
        let holder = AsyncClient::connect_unix(&path).await.expect("connect");
        holder.try_lock("u").await.expect("lock");
        server.stop();
        assert!(idle.wait_disconnected(Some(WAIT)).await && holder.wait_disconnected(Some(WAIT)).await);
        let _server = listen(&path);
        idle.ping().await.expect("a connection without locks is replaced on the next call");
        assert!(
            holder.ping().await.unwrap_err().is_connection_lost(),
            "never silently while locks were held"
        );
        holder.reconnect().await.expect("explicit reconnect");
        holder.try_lock("u").await.expect("lock on the new server");
    });
}

#[test]
fn a_client_outliving_its_runtime_fails_instead_of_hanging() {
    let server = TestServer::start();
    let port = server.addr().port();
    let builder = || AsyncClient::builder().host("127.0.0.1").port(port);
    let (fixed, replaced) = run(async {
        let fixed = builder().auto_reconnect(false).connect().await.expect("connect");
        (fixed, builder().connect().await.expect("connect"))
    });
    // The runtime that ran the connections' tasks is gone, so are the connections.
    let err = run(fixed.ping()).unwrap_err();
    assert!(err.is_connection_lost(), "{err}");
    // One without locks is replaced on the next call, on the runtime making it.
    run(async { replaced.ping().await.expect("reconnected on this runtime") });
}

#[test]
fn sharded_places_as_the_blocking_client_and_a_down_server_fails_only_its_names() {
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start()).collect();
    let addresses: Vec<String> = servers.iter().map(|s| format!("127.0.0.1:{}", s.addr().port())).collect();
    let reversed: Vec<&String> = addresses.iter().rev().collect();
    let blocking =
        ShardedClient::builder().servers(&addresses).namespace("ns").connect_lazy().expect("build");
    let names: Vec<String> = (0..60).map(|i| format!("job-{i}")).collect();
    run(async {
        let client = AsyncShardedClient::connect(ShardedClient::builder().servers(reversed).namespace("ns"))
            .await
            .expect("connect");
        for name in &names {
            assert_eq!(client.server_for(name), blocking.server_for(name), "{name}");
            client.try_lock(name).await.expect("lock");
        }
        let listed: Vec<String> =
            client.locks().await.expect("locks").iter().map(|l| l.name.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(listed, sorted, "merged and sorted over the set");
        assert_eq!(client.my_locks().await.expect("mine").held, sorted);
        for (i, address) in addresses.iter().enumerate() {
            let port = servers[i].addr().port();
            let direct = AsyncClient::builder().host("127.0.0.1").port(port).namespace("ns").connect().await;
            let on_it = direct.expect("connect").locks().await.expect("locks");
            assert!(on_it.iter().all(|l| client.server_for(&l.name) == address), "only its own names");
        }
        assert_eq!(client.ping().await.expect("ping").len(), 3);

        let down = addresses[0].clone();
        let mut servers = servers;
        servers.remove(0).stop();
        for name in &names {
            client.unlock(name).await.map(drop).unwrap_or_else(|e| {
                assert_eq!(e.server_address(), Some(down.as_str()), "{e}");
                assert!(e.is_connection_lost(), "{e}");
            });
            let relock = client.try_lock(name).await;
            match client.server_for(name) == down {
                true => assert_eq!(relock.unwrap_err().server_address(), Some(down.as_str())),
                false => assert!(!relock.expect("the others keep working").already_acquired()),
            }
        }
    });
}

#[test]
fn each_server_answers_per_server_and_reset_reaches_them_all() {
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start()).collect();
    let addresses: Vec<String> = servers.iter().map(|s| format!("127.0.0.1:{}", s.addr().port())).collect();
    run(async {
        let client =
            AsyncShardedClient::connect(ShardedClient::builder().servers(&addresses)).await.expect("connect");
        let names: Vec<String> = (0..30).map(|i| format!("fan-{i}")).collect();
        for name in &names {
            client.try_lock(name).await.expect("lock");
        }
        let held = client.each_server(|c| async move { c.my_locks().await.map(|m| m.held.len()) }).await;
        let servers_listed: Vec<&str> = held.iter().map(|(a, _)| *a).collect();
        let in_order: Vec<&str> = client.servers().collect();
        assert_eq!(servers_listed, in_order, "one answer per server, in server order");
        let total: usize = held.into_iter().map(|(_, n)| n.expect("my_locks")).sum();
        assert_eq!(total, names.len(), "each name held on exactly one server");

        client.reset().await.expect("reset");
        assert!(client.my_locks().await.expect("mine").held.is_empty(), "reset fanned out");
        for name in &names {
            assert!(!client.try_lock(name).await.expect("free again").already_acquired());
        }

        let down = addresses[1].clone();
        let mut servers = servers;
        servers.remove(1).stop();
        let answers = client.each_server(|c| async move { c.ping().await }).await;
        assert_eq!(answers.len(), 3);
        for (address, answer) in answers {
            match address == down {
                true => assert_eq!(answer.unwrap_err().server_address(), Some(down.as_str())),
                false => assert!(answer.is_ok(), "{address} still answers"),
            }
        }
    });
}

#[test]
fn a_lease_that_runs_out_makes_the_guard_lost() {
    let server = TestServer::start();
    run(async {
        let c = client(&server).await;
        let opts = LockOptions::new().lease(Duration::from_millis(50));
        let guard = c.lock_guard("leased", opts).await.expect("lock");
        assert!(!guard.is_lost() && !guard.is_contended());
        let reason = tokio::time::timeout(WAIT, guard.lost()).await.expect("LOST within WAIT");
        assert_eq!(reason, Some(LostReason::LeaseExpired));
        assert!(guard.is_lost() && guard.wait_lost(Some(Duration::ZERO)).await);
        assert!(c.is_connected(), "a lost grant is not a lost connection");
        // The server released it: another connection gets it at once.
        let other = client(&server).await;
        assert!(!other.try_lock("leased").await.expect("free").already_acquired());
        // Releasing it says what happened to it (the answer form of LOST).
        let e = guard.unlock().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::GrantLost, "{e}");
        assert_eq!(e.lost_reason().map(|(reason, _)| reason), Some(LostReason::LeaseExpired));
    });
}

#[test]
fn a_second_task_waiting_makes_the_guard_contended() {
    let server = TestServer::start();
    run(async {
        let (holder, other) = (Arc::new(client(&server).await), Arc::new(client(&server).await));
        let guard = holder.lock_guard("busy", LockOptions::new().notify_contention()).await.expect("lock");
        assert!(!guard.is_contended());
        let waiter = tokio::spawn({
            let other = Arc::clone(&other);
            async move { other.lock("busy", LockOptions::new()).await.map(|_| ()) }
        });
        wait_until("the holder hears of the waiter", || {
            let contended = guard.is_contended();
            async move { contended }
        })
        .await;
        assert!(!guard.is_lost(), "contention is a hint, not a loss");
        drop(guard);
        tokio::time::timeout(WAIT, waiter).await.expect("granted within WAIT").expect("task").expect("lock");
    });
}

const ADMIN_SECRET: &[u8] = b"an admin secret of 32 bytes or more";

#[test]
fn a_revoked_grant_makes_the_guard_lost_revoked_and_a_lost_connection_too() {
    let server = TestServer::start_with(|c| c.admin_secret = Some(ADMIN_SECRET.to_vec()));
    run(async {
        let c = client_ns(&server, "ns").await;
        // A lease makes it a LOCK_EXT grant, which the server can tell of its end.
        let opts = LockOptions::new().lease(Duration::from_secs(600));
        let guard = c.lock_guard("rv", opts).await.expect("lock");
        let mut lost = std::pin::pin!(guard.lost());
        poll_fn(|cx| {
            assert!(lost.as_mut().poll(cx).is_pending(), "not lost yet");
            Poll::Ready(())
        })
        .await;
        let admin = officer::client::Client::connect("127.0.0.1", server.addr().port()).expect("connect");
        admin.admin_auth(ADMIN_SECRET).expect("admin");
        assert_eq!(admin.revoke("ns:rv", None).expect("revoke"), 1);
        let reason = tokio::time::timeout(WAIT, lost).await.expect("LOST within WAIT");
        assert_eq!(reason, Some(LostReason::Revoked));
        assert!(guard.is_lost());

        // A guard whose connection goes is lost too, without a reason.
        let second = c.lock_guard("other", opts).await.expect("lock");
        assert!(!second.is_lost());
        c.disconnect();
        assert_eq!(tokio::time::timeout(WAIT, second.lost()).await.expect("within WAIT"), None);
        assert!(second.is_lost());
    });
}
