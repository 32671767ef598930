//! The async client's resumable sessions end to end, through the loopback fault proxy
//! (`support::proxy`): connections reset (RST) or frozen under an async client that holds and
//! waits for locks, with `lock` futures dropped during the outage, and a sharded async client
//! whose one shard is cut; what it, its guards and the other clients see afterwards.

#![cfg(feature = "tokio")]

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use officer::client::tokio::{AsyncClient, AsyncShardedClient};
use officer::client::{Client, LockOptions, ShardedClient};
use support::proxy::{async_client_behind, Proxy};
use support::server::TestServer;
use support::WAIT;

/// Runs `f` on a fresh single-threaded runtime. The blocking observer's calls made on it are
/// answered by the server alone; one that waits for the async client runs in `spawn_blocking`.
fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

/// A server that keeps detached sessions up to `max_grace`.
fn server(max_grace: Duration) -> TestServer {
    TestServer::start_with(|c| c.max_session_grace = max_grace)
}

fn direct(server: &TestServer) -> Client {
    Client::connect("127.0.0.1", server.addr().port()).expect("connect")
}

fn stat(observer: &Client, key: &str) -> u64 {
    observer.stats().expect("stats").iter().find(|(k, _)| *k == key).map_or(0, |(_, v)| v)
}

fn queue_of(observer: &Client, name: &str) -> Vec<String> {
    let locks = observer.locks_matching(name, 0).expect("locks");
    locks.iter().find(|l| l.name == name).map(|l| l.queue.clone()).unwrap_or_default()
}

/// Polls `cond` until it holds, failing after `WAIT` (for server-side state the test cannot be
/// told about).
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

const GRACE: Duration = Duration::from_secs(30);

/// A client with a session behind `proxy` whose task waits for `name` (held by another
/// client), then its link reset and new connections refused until `proxy.refuse(false)`:
/// returned once the server has detached the session, the wait kept in the queue.
async fn detached_waiter(
    observer: &Client,
    proxy: &Proxy,
    name: &'static str,
) -> (Arc<AsyncClient>, tokio::task::JoinHandle<officer::client::Result<officer::client::Acquired>>) {
    let client = Arc::new(async_client_behind(proxy, GRACE).await);
    let c = Arc::clone(&client);
    let waiting = tokio::spawn(async move { c.lock(name, LockOptions::with_timeout(WAIT)).await });
    wait_until("the session's wait to queue", || queue_of(observer, name).len() == 2).await;
    proxy.refuse(true);
    proxy.reset_all();
    wait_until("the server to detach the session", || stat(observer, "sessions_detached") == 1).await;
    (client, waiting)
}

#[test]
fn an_async_holder_keeps_its_lock_and_token_across_a_reset() {
    let server = server(GRACE);
    let observer = direct(&server);
    let proxy = Proxy::start(server.addr());
    run(async {
        let client = async_client_behind(&proxy, GRACE).await;
        assert_eq!(client.session().map(|(_, g)| g), Some(GRACE));
        let guard = client.lock_guard("ablip/held", LockOptions::new()).await.expect("lock");
        let token = guard.token();
        let first_id = client.server_info().connection_id;
        assert_eq!(proxy.reset_all(), 1);
        // The next call waits for the resume and is answered on the new connection.
        let mine = client.my_locks().await.expect("my_locks after the reset");
        assert_eq!(mine.held, vec!["ablip/held".to_string()]);
        assert_eq!(client.resumes(), 1);
        assert_eq!(proxy.connections(), 2, "one reconnect");
        assert!(client.is_connected());
        assert_ne!(client.server_info().connection_id, first_id, "a new link");
        assert!(!guard.is_lost(), "the guard survived the blip");
        assert!(!guard.wait_lost(Some(Duration::from_millis(20))).await);
        assert!(observer.check("ablip/held", token).expect("check"), "the same grant, with its token");
        assert!(observer.try_lock("ablip/held").unwrap_err().is_timeout(), "nobody else got it");
        assert_eq!(stat(&observer, "sessions_resumed"), 1);
        guard.unlock().await.expect("unlock on the resumed connection");
        assert_eq!(observer.try_lock("ablip/held").expect("free after the unlock").token(), token + 1);
    });
}

#[test]
fn an_async_waiter_keeps_its_place_and_gets_the_grant_made_while_it_was_away() {
    let server = server(GRACE);
    let observer = direct(&server);
    let holder = direct(&server);
    let first = holder.lock("ablip/queue", LockOptions::new()).expect("lock").token();
    let proxy = Proxy::start(server.addr());
    run(async {
        let waiter = Arc::new(async_client_behind(&proxy, GRACE).await);
        let w = Arc::clone(&waiter);
        let waiting =
            tokio::spawn(async move { w.lock("ablip/queue", LockOptions::with_timeout(WAIT)).await });
        wait_until("the session's wait to queue", || queue_of(&observer, "ablip/queue").len() == 2).await;
        let later = direct(&server);
        let queued_later = std::thread::spawn(move || {
            let token = later.lock("ablip/queue", LockOptions::with_timeout(WAIT)).expect("later").token();
            (later, token)
        });
        wait_until("the later waiter to queue", || queue_of(&observer, "ablip/queue").len() == 3).await;
        let before = queue_of(&observer, "ablip/queue");
        // Cut the session's connection and keep it from coming back for now.
        proxy.refuse(true);
        proxy.reset_all();
        wait_until("the server to detach the session", || stat(&observer, "sessions_detached") == 1).await;
        let detached = format!("{} (detached)", before[1]);
        assert_eq!(
            queue_of(&observer, "ablip/queue"),
            [before[0].clone(), detached.clone(), before[2].clone()],
            "the detached wait kept its place"
        );
        // Its turn comes while it is away: granted and held for the session.
        holder.unlock("ablip/queue").expect("unlock");
        wait_until("the grant to the detached session", || queue_of(&observer, "ablip/queue").len() == 2)
            .await;
        assert_eq!(queue_of(&observer, "ablip/queue"), [detached, before[2].clone()]);
        assert!(!waiting.is_finished(), "the lock future waits through the outage");
        proxy.refuse(false);
        let acquired = waiting.await.expect("waiter task").expect("the grant made while detached");
        assert!(acquired.token() > first);
        assert!(!acquired.already_acquired());
        assert!(waiter.resumes() >= 1);
        assert!(observer.check("ablip/queue", acquired.token()).expect("check"));
        waiter.unlock("ablip/queue").await.expect("unlock");
        let (_later, token) = queued_later.join().expect("later waiter");
        assert!(token > acquired.token(), "FIFO: the later waiter came after the resumed one");
    });
}

#[test]
fn an_expired_grace_makes_the_async_guard_lost_and_grants_the_next_waiter() {
    let grace = Duration::from_millis(300);
    let server = server(grace);
    let observer = direct(&server);
    let proxy = Proxy::start(server.addr());
    run(async {
        let client = async_client_behind(&proxy, grace).await;
        let guard = client.lock_guard("ablip/expired", LockOptions::new()).await.expect("lock");
        let next = direct(&server);
        let waiting = std::thread::spawn(move || {
            let token = next.lock("ablip/expired", LockOptions::with_timeout(WAIT)).expect("next").token();
            (next, token)
        });
        wait_until("the next waiter to queue", || queue_of(&observer, "ablip/expired").len() == 2).await;
        proxy.refuse(true);
        proxy.reset_all();
        assert_eq!(
            tokio::time::timeout(WAIT, guard.lost()).await.expect("the guard never reported the loss"),
            None,
            "lost with the session, not by a LOST notice"
        );
        assert!(guard.is_lost());
        assert!(!client.is_connected());
        let (_next, token) = waiting.join().expect("next waiter");
        assert!(token > guard.token(), "the next waiter got the lock once the grace ran out");
        let err = guard.unlock().await.unwrap_err();
        assert!(err.is_connection_lost(), "{err}");
        assert_eq!(err.released_locks(), ["ablip/expired".to_string()], "{err}");
        assert!(err.to_string().contains("grace"), "{err}");
        assert_eq!(client.resumes(), 0);
        assert_eq!(stat(&observer, "sessions_expired"), 1);
    });
}

/// A `lock` future dropped while the link is down (its wait queued on the server, kept for the
/// detached session) is withdrawn once the session resumes: the session does not end up
/// holding a lock nobody owns, and the next waiter gets it.
#[test]
fn a_lock_future_dropped_during_the_outage_is_withdrawn_on_resume() {
    let server = server(GRACE);
    let observer = direct(&server);
    let holder = direct(&server);
    holder.lock("ablip/dropped", LockOptions::new()).expect("lock");
    let proxy = Proxy::start(server.addr());
    run(async {
        let (client, waiting) = detached_waiter(&observer, &proxy, "ablip/dropped").await;
        // Granted to the detached session, then the future is dropped before it could learn.
        holder.unlock("ablip/dropped").expect("unlock");
        wait_until("the grant to the detached session", || queue_of(&observer, "ablip/dropped").len() == 1)
            .await;
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        let next = direct(&server);
        let next_waits = tokio::task::spawn_blocking(move || {
            let token = next.lock("ablip/dropped", LockOptions::with_timeout(WAIT)).expect("next").token();
            (next, token)
        });
        wait_until("the next waiter to queue", || queue_of(&observer, "ablip/dropped").len() == 2).await;
        proxy.refuse(false);
        // The resume replays the grant, which nobody takes: released, so the next one gets it.
        let (_next, _token) = next_waits.await.expect("next waiter");
        assert!(client.resumes() >= 1);
        assert!(client.my_locks().await.expect("my_locks").held.is_empty(), "held by nobody");
    });
}

/// A `lock` future dropped while its wait is still queued (not granted) during the outage:
/// the wait is cancelled once resumed, and a later holder's release does not grant it.
#[test]
fn a_wait_dropped_during_the_outage_leaves_the_queue_on_resume() {
    let server = server(GRACE);
    let observer = direct(&server);
    let holder = direct(&server);
    holder.lock("ablip/cancel", LockOptions::new()).expect("lock");
    let proxy = Proxy::start(server.addr());
    run(async {
        let (client, waiting) = detached_waiter(&observer, &proxy, "ablip/cancel").await;
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        proxy.refuse(false);
        // Any call after the resume is answered after the withdrawal went out before it.
        client.ping().await.expect("ping after the resume");
        assert_eq!(queue_of(&observer, "ablip/cancel").len(), 1, "the dropped wait left the queue");
        holder.unlock("ablip/cancel").expect("unlock");
        assert!(observer.try_lock("ablip/cancel").is_ok(), "not granted to the withdrawn wait");
    });
}

#[test]
fn a_frozen_link_is_found_by_the_async_keep_alive_and_resumed() {
    let server = TestServer::start_with(|c| {
        c.max_session_grace = GRACE;
        c.max_idle = Some(Duration::from_secs(1));
    });
    let observer = direct(&server);
    let proxy = Proxy::start(server.addr());
    run(async {
        let client = async_client_behind(&proxy, GRACE).await;
        let guard = client.lock_guard("ablip/frozen", LockOptions::new()).await.expect("lock");
        proxy.freeze();
        // No RST, no FIN: only the unanswered keep-alive tells the client, which dials again.
        wait_until("the client to dial again", || proxy.connections() >= 2).await;
        proxy.thaw();
        wait_until("the resume", || client.resumes() >= 1).await;
        assert!(!guard.is_lost());
        assert!(observer.check("ablip/frozen", guard.token()).expect("check"));
        assert_eq!(client.my_locks().await.expect("my_locks").held, vec!["ablip/frozen".to_string()]);
        guard.unlock().await.expect("unlock");
    });
}

#[test]
fn dropping_the_async_client_says_goodbye_and_releases_at_once() {
    let server = server(GRACE);
    let observer = direct(&server);
    let proxy = Proxy::start(server.addr());
    run(async {
        let client = async_client_behind(&proxy, GRACE).await;
        client.lock("ablip/bye", LockOptions::new()).await.expect("lock");
        drop(client);
        // Not detached: released now (once GOODBYE is read), so a waiter is granted at once.
        let got = tokio::task::spawn_blocking(move || {
            let got = observer.lock("ablip/bye", LockOptions::with_timeout(WAIT)).map(|_| ());
            (observer, got)
        });
        let (observer, got) = got.await.expect("observer");
        assert!(got.is_ok(), "the lock outlived an explicit close: {got:?}");
        assert_eq!(stat(&observer, "sessions_detached"), 0);
        assert_eq!(stat(&observer, "sessions_expired"), 0);
    });
}

#[test]
fn without_a_session_a_reset_loses_the_async_locks_as_before() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.addr());
    run(async {
        // The server opens no session (its maximum is 0): the client works as without one.
        let client = AsyncClient::builder()
            .host("127.0.0.1")
            .port(proxy.port())
            .session_grace(GRACE)
            .connect()
            .await
            .expect("connect");
        assert_eq!(client.session(), None);
        let guard = client.lock_guard("ablip/plain", LockOptions::new()).await.expect("lock");
        proxy.reset_all();
        assert!(guard.wait_lost(Some(WAIT)).await);
        assert!(client.my_locks().await.unwrap_err().is_connection_lost());
        assert_eq!(client.resumes(), 0);
        assert_eq!(proxy.connections(), 1, "no reconnect after losing locks");
    });
}

/// Many tasks on one async client with a session pipeline locks and unlocks while the proxy
/// resets the connection again and again: every call in flight at a reset is sent again and
/// answered once, the session's grants never overlap a plain client's, and tokens only grow.
#[test]
fn mutual_exclusion_holds_with_resets_under_pipelined_async_calls() {
    const TASKS: usize = 8;
    const ROUNDS: usize = 60;
    const RESETS: usize = 25;
    let server = server(GRACE);
    let proxy = Arc::new(Proxy::start(server.addr()));
    let inside = Arc::new(AtomicUsize::new(0));
    let grants = Arc::new(Mutex::new(Vec::new()));
    run(async {
        // One session client per task (locks belong to the connection), and one plain client.
        let mut workers = Vec::new();
        for i in 0..=TASKS {
            let client = match i {
                0 => AsyncClient::connect("127.0.0.1", server.addr().port()).await.expect("plain"),
                _ => async_client_behind(&proxy, GRACE).await,
            };
            let (inside, grants) = (Arc::clone(&inside), Arc::clone(&grants));
            workers.push(tokio::spawn(async move {
                for round in 0..ROUNDS {
                    // A private name too, so each reset finds calls of every kind in flight.
                    let own = format!("ablip/own-{i}-{round}");
                    client.try_lock(&own).await.expect("own lock");
                    let guard = client.lock_guard("ablip/mutex", LockOptions::with_timeout(WAIT)).await;
                    let guard = guard.expect("lock");
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                    grants.lock().unwrap().push(guard.token());
                    tokio::task::yield_now().await;
                    assert!(!guard.is_lost(), "a grant lost across a reset");
                    assert_eq!(inside.fetch_sub(1, Ordering::SeqCst), 1);
                    guard.unlock().await.expect("unlock");
                    client.unlock(&own).await.expect("own unlock");
                }
                assert!(client.my_locks().await.expect("my_locks").held.is_empty(), "nothing left held");
                client.resumes()
            }));
        }
        let resetter = {
            let proxy = Arc::clone(&proxy);
            std::thread::spawn(move || {
                let mut resets = 0;
                for _ in 0..RESETS * 20 {
                    resets += usize::from(proxy.reset_all() > 0);
                    if resets == RESETS {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(3));
                }
                resets
            })
        };
        let mut resumes = 0;
        for w in workers {
            resumes += w.await.expect("worker");
        }
        let resets = resetter.join().expect("resetter");
        let grants = grants.lock().unwrap();
        eprintln!("{} grants, {resets} resets, {resumes} resumes", grants.len());
        assert_eq!(grants.len(), (TASKS + 1) * ROUNDS);
        assert!(grants.windows(2).all(|p| p[0] < p[1]), "tokens not increasing");
        assert!(resets > 0 && resumes > 0, "no reset hit a session: the run proved nothing");
    });
}

/// Three servers, one proxy in front of each; a sharded async client with sessions over the
/// proxies. One shard's connection is reset: that session alone resumes, every lock on every
/// server is still held with its token, and the other shards never reconnected.
#[test]
fn an_async_sharded_client_keeps_its_locks_when_one_shard_is_reset() {
    let servers: Vec<TestServer> = (0..3).map(|_| server(GRACE)).collect();
    let proxies: Vec<Proxy> = servers.iter().map(|s| Proxy::start(s.addr())).collect();
    let addresses: Vec<String> = proxies.iter().map(|p| format!("127.0.0.1:{}", p.port())).collect();
    let observers: Vec<Client> = servers.iter().map(direct).collect();
    run(async {
        let builder = ShardedClient::builder().servers(&addresses).session_grace(GRACE);
        let client = AsyncShardedClient::connect(builder).await.expect("connect");
        let names: Vec<String> = (0..60).map(|i| format!("ablip/shard-{i}")).collect();
        let mut guards = Vec::new();
        for name in &names {
            guards.push(client.lock_guard(name, LockOptions::new()).await.expect("lock"));
        }
        let cut = &addresses[1];
        assert!(names.iter().any(|n| client.server_for(n) == cut), "the cut shard holds some names");
        assert_eq!(proxies[1].reset_all(), 1);
        let mut mine = client.my_locks().await.expect("my_locks after the reset").held;
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
            let shard = client.client_for(name);
            let resumes = shard.await.expect("shard").resumes();
            assert_eq!(resumes, u64::from(i == 1), "only the cut shard resumed ({address})");
            assert_eq!(proxies[i].connections(), 1 + usize::from(i == 1), "{address}");
        }
        for guard in guards {
            guard.unlock().await.expect("unlock");
        }
    });
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
    holder.lock("ablip/twice", LockOptions::new()).expect("lock");
    let proxy = Proxy::start(server.addr());
    run(async {
        let client = Arc::new(async_client_behind(&proxy, GRACE).await);
        proxy.freeze();
        let c = Arc::clone(&client);
        let waiting =
            tokio::spawn(async move { c.lock("ablip/twice", LockOptions::with_timeout(WAIT)).await });
        // Let the LOCK reach the frozen proxy, then drop it there with the link.
        wait_until("the LOCK reaches the frozen proxy", || proxy.held_bytes() > 0).await;
        assert_eq!(queue_of(&observer, "ablip/twice").len(), 1, "the frozen proxy held the LOCK back");
        proxy.reset_all();
        proxy.thaw();
        wait_until("the resent LOCK to queue", || queue_of(&observer, "ablip/twice").len() == 2).await;
        assert_eq!(client.resumes(), 1);
        proxy.reset_all();
        wait_until("the second resume", || client.resumes() == 2).await;
        // A call after the second resume is answered after the resends it made.
        client.ping().await.expect("ping");
        assert_eq!(queue_of(&observer, "ablip/twice").len(), 2, "still one wait for the session");
        holder.unlock("ablip/twice").expect("unlock");
        let got = tokio::time::timeout(WAIT, waiting).await.expect("the grant never reached the caller");
        let acquired = got.expect("waiter task").expect("lock");
        assert!(observer.check("ablip/twice", acquired.token()).expect("check"));
        assert_eq!(client.my_locks().await.expect("my_locks").held, vec!["ablip/twice".to_string()]);
    });
}

/// A guard dropped while the link is down queues its UNLOCK with nowhere to send it: the
/// resume sends it, so the lock is released then, not kept for the session.
#[test]
fn a_guard_dropped_during_the_outage_releases_on_resume() {
    let server = server(GRACE);
    let observer = direct(&server);
    let proxy = Proxy::start(server.addr());
    run(async {
        let client = async_client_behind(&proxy, GRACE).await;
        let guard = client.lock_guard("ablip/guard", LockOptions::new()).await.expect("lock");
        proxy.refuse(true);
        proxy.reset_all();
        wait_until("the server to detach the session", || stat(&observer, "sessions_detached") == 1).await;
        drop(guard);
        assert!(observer.try_lock("ablip/guard").unwrap_err().is_timeout(), "kept while detached");
        proxy.refuse(false);
        client.ping().await.expect("ping after the resume");
        assert!(client.resumes() >= 1);
        assert!(observer.try_lock("ablip/guard").is_ok(), "released by the resent UNLOCK");
        assert!(client.my_locks().await.expect("my_locks").held.is_empty());
    });
}

/// Two tasks of one client lock the same free name; both LOCKs are held back by a frozen proxy
/// and lost with the link. Both are sent again: exactly one task gets the fresh grant, the
/// other the nested ALREADY_ACQUIRED, as without the blip.
#[test]
fn two_lost_locks_of_one_name_resolve_to_one_grant_and_one_nested() {
    let server = server(GRACE);
    let observer = direct(&server);
    let proxy = Proxy::start(server.addr());
    run(async {
        let client = Arc::new(async_client_behind(&proxy, GRACE).await);
        proxy.freeze();
        // The two LOCKs are the same frame: once the first is held back its size says when the
        // second is too, so the link is reset with both in the proxy, not after a guessed pause.
        let lock = |c: Arc<AsyncClient>| {
            tokio::spawn(async move { c.lock("ablip/both", LockOptions::with_timeout(WAIT)).await })
        };
        let mut tasks = vec![lock(Arc::clone(&client))];
        wait_until("the first LOCK reaches the frozen proxy", || proxy.held_bytes() > 0).await;
        let one = proxy.held_bytes();
        tasks.push(lock(Arc::clone(&client)));
        wait_until("the second LOCK reaches the frozen proxy", || proxy.held_bytes() >= 2 * one).await;
        proxy.reset_all();
        proxy.thaw();
        let mut fresh = 0;
        let mut token = None;
        for t in tasks {
            let acquired = t.await.expect("task").expect("lock");
            fresh += usize::from(!acquired.already_acquired());
            assert!(token.is_none_or(|t| t == acquired.token()), "one grant, one token");
            token = Some(acquired.token());
        }
        assert_eq!(fresh, 1, "exactly one fresh grant");
        assert!(observer.check("ablip/both", token.expect("a token")).expect("check"));
        client.unlock("ablip/both").await.expect("unlock");
        assert!(observer.try_lock("ablip/both").is_ok(), "one UNLOCK releases it");
    });
}

/// A server shutting down ends the session on purpose (SHUTDOWN, id 0): the client does not
/// try to resume for its grace, and pending futures fail with the connection lost.
#[test]
fn a_server_shutdown_ends_the_async_session_at_once() {
    let server = server(GRACE);
    let holder = direct(&server);
    holder.lock("ablip/shutdown", LockOptions::new()).expect("lock");
    run(async {
        let client = AsyncClient::builder()
            .host("127.0.0.1")
            .port(server.addr().port())
            .session_grace(GRACE)
            .connect()
            .await
            .expect("connect");
        assert!(client.session().is_some());
        let waiting = client.lock("ablip/shutdown", LockOptions::with_timeout(GRACE * 2));
        let stop = tokio::task::spawn_blocking(move || server.stop());
        let err = tokio::time::timeout(WAIT, waiting).await.expect("still resuming").unwrap_err();
        assert!(err.is_connection_lost(), "{err}");
        assert!(err.to_string().contains("shutting down"), "{err}");
        assert_eq!(client.resumes(), 0);
        stop.await.expect("stop");
    });
}
