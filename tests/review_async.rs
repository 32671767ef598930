//! Review findings on the async client's cancel-safety: races between a dropped `lock` future
//! and another task's request on the same connection, each shown deterministically on one
//! single-threaded runtime (the reader and writer tasks run only when the test yields).

#![cfg(feature = "tokio")]

mod support;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use officer::client::tokio::AsyncClient;
use officer::client::{ErrorKind, LockOptions};
use support::server::TestServer;
use support::WAIT;

fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

async fn client(server: &TestServer) -> AsyncClient {
    AsyncClient::connect("127.0.0.1", server.addr().port()).await.expect("connect")
}

/// Polls `f` once, which must leave it pending (its request is queued, its answer not read).
async fn poll_once<F: Future>(mut f: Pin<&mut F>) {
    poll_fn(|cx| {
        assert!(f.as_mut().poll(cx).is_pending(), "expected the call to wait");
        Poll::Ready(())
    })
    .await
}

async fn wait_until<F: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn queue_of(observer: &AsyncClient, name: &str) -> Vec<String> {
    let locks = observer.locks().await.expect("locks");
    locks.iter().find(|l| l.name == name).map(|l| l.queue.clone()).unwrap_or_default()
}

/// A waits for `x`; B's LOCK of `x` is on the wire when A's future is dropped, so A's drop
/// sends no UNLOCK (B might be the LOCK the server keeps). The server keeps A's, and answers
/// B `already_waiting`: A's wait must still be withdrawn then, or it lingers with nobody
/// awaiting it and every later `lock("x")` on the connection fails with `already_waiting`.
#[test]
fn a_wait_dropped_while_another_task_locks_the_name_is_still_withdrawn() {
    let server = TestServer::start();
    run(async {
        let (holder, c) = (client(&server).await, client(&server).await);
        holder.try_lock("x").await.expect("lock");
        let mut first = Box::pin(c.lock("x", LockOptions::new()));
        poll_once(first.as_mut()).await;
        wait_until("the first wait is queued", || async { queue_of(&holder, "x").await.len() == 2 }).await;
        let mut second = Box::pin(c.lock("x", LockOptions::new()));
        poll_once(second.as_mut()).await;
        drop(first);
        let err = second.await.expect_err("the connection already waits for x");
        assert_eq!(err.kind(), ErrorKind::AlreadyWaiting, "{err}");
        c.ping().await.expect("ping");
        assert_eq!(queue_of(&holder, "x").await.len(), 1, "the dropped wait was withdrawn");
        let err = c.try_lock("x").await.expect_err("held by the holder");
        assert_eq!(err.kind(), ErrorKind::LockTimeout, "{err}");
    });
}

/// A guard's drop queues its UNLOCK; a LOCK of the same name is dropped before that UNLOCK's
/// answer is read, so the connection still seems to hold the name and the drop sends nothing.
/// The server meanwhile granted the lock to another client and queued the LOCK behind it: the
/// wait must be withdrawn once the release is read, not linger until it is granted.
#[test]
fn a_wait_dropped_while_a_guard_release_is_in_flight_is_still_withdrawn() {
    let server = TestServer::start();
    run(async {
        let (c, other, observer) = (client(&server).await, client(&server).await, client(&server).await);
        let guard = c.lock_guard("x", LockOptions::new()).await.expect("lock");
        let other_wait = tokio::spawn(async move {
            let acquired = other.lock("x", LockOptions::with_timeout(WAIT)).await;
            (other, acquired)
        });
        wait_until("the other client waits", || async { queue_of(&observer, "x").await.len() == 2 }).await;
        drop(guard);
        let mut relock = Box::pin(c.lock("x", LockOptions::new()));
        poll_once(relock.as_mut()).await;
        drop(relock);
        let (_other, acquired) = other_wait.await.expect("task");
        acquired.expect("granted by the guard's release");
        c.ping().await.expect("ping");
        assert_eq!(queue_of(&observer, "x").await.len(), 1, "the dropped wait was withdrawn");
        let mine = c.my_locks().await.expect("mine");
        assert!(mine.held.is_empty() && mine.waiting.is_empty(), "{mine:?}");
    });
}

/// A guard that outlives the runtime its connection ran on: the connection ended with the
/// runtime (so the server released the lock), and dropping the guard outside any runtime
/// neither panics nor blocks.
#[test]
fn a_guard_dropped_after_its_runtime_is_gone_is_a_no_op() {
    let server = TestServer::start();
    let (c, guard) = run(async {
        let c = client(&server).await;
        let guard = c.lock_guard("g", LockOptions::new()).await.expect("lock");
        (c, guard)
    });
    drop(guard);
    run(async {
        let other = client(&server).await;
        let acquired = other.lock("g", LockOptions::with_timeout(WAIT)).await;
        acquired.expect("the lock went with the connection's runtime");
        assert!(!c.is_connected());
    });
}
