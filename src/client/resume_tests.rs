//! The client's resume against a scripted fake server, for what the real one does only by
//! chance: answers lost in flight when the connection drops, so the client's requests sent
//! again after RESUMED must stand for the originals (PROTOCOL.md §6.14 "Answers in flight"),
//! and a replay that answers a wait under its original request id.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::*;
use crate::protocol::{op, split_frame, ErrorCode, HelloOk, Request, Resumed, SessionOk, PROTOCOL_VERSION};

const LIMIT: Duration = Duration::from_secs(20);

/// One accepted connection of the fake server.
struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A request as the fake server saw it.
struct Seen {
    opcode: u8,
    id: u32,
    /// The lock name of a LOCK or UNLOCK.
    name: String,
}

impl Peer {
    fn accept(listener: &TcpListener) -> Peer {
        let (stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(LIMIT)).expect("timeout");
        Peer { stream, buf: Vec::new() }
    }

    fn recv(&mut self) -> Seen {
        loop {
            if let Some((frame, len)) = split_frame(&self.buf, 1 << 20).expect("frame") {
                let name = match Request::decode(&frame, 1024).expect("request") {
                    Request::Lock(l) => l.name.to_owned(),
                    Request::Unlock(name) => name.to_owned(),
                    _ => String::new(),
                };
                let seen = Seen { opcode: frame.opcode, id: frame.request_id, name };
                self.buf.drain(..len);
                return seen;
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => panic!("the client went away"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn expect(&mut self, opcode: u8) -> u32 {
        let seen = self.recv();
        assert_eq!(seen.opcode, opcode, "expected opcode 0x{opcode:02x}");
        seen.id
    }

    fn send(&mut self, id: u32, resp: &Response) {
        let mut out = Vec::new();
        resp.encode(id, &mut out);
        self.stream.write_all(&out).expect("fake server write");
    }

    /// HELLO and the probe PING, answered.
    fn greet(&mut self) {
        let hello = self.expect(op::HELLO);
        let probe = self.expect(op::PING);
        let ok = HelloOk {
            version: PROTOCOL_VERSION,
            auth_required: false,
            connection_id: 7,
            max_frame: 64 * 1024,
            max_name: 64,
            idle_timeout_ms: 0,
        };
        self.send(hello, &Response::HelloOk(ok));
        self.send(probe, &Response::Pong);
    }

    /// Drops the connection as a network failure would (the client must resume, not stop).
    fn cut(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

const SECRET: [u8; 16] = [0x5a; 16];

/// A client with a session on a fake server whose script runs on its own thread.
fn session_client(script: impl FnOnce(TcpListener) + Send + 'static) -> (Client, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (done_tx, done) = mpsc::channel();
    thread::spawn(move || {
        script(listener);
        let _ = done_tx.send(());
    });
    let client = Client::builder()
        .host("127.0.0.1")
        .port(port)
        .no_keep_alive()
        .session_grace(Duration::from_secs(30))
        .connect()
        .expect("connect");
    (client, done)
}

/// The first connection: greeted and given session 9.
fn open(listener: &TcpListener) -> Peer {
    let mut peer = Peer::accept(listener);
    peer.greet();
    let id = peer.expect(op::SESSION_OPEN);
    peer.send(id, &Response::SessionOk(SessionOk { session_id: 9, secret: SECRET, grace_ms: 30_000 }));
    peer
}

/// The next connection: greeted, and the resume answered with `replayed` frames to follow.
fn resume(listener: &TcpListener, replayed: u32) -> Peer {
    let mut peer = Peer::accept(listener);
    peer.greet();
    let id = peer.expect(op::SESSION_RESUME);
    peer.send(id, &Response::Resumed(Resumed { grace_ms: 30_000, replayed }));
    peer
}

#[test]
fn requests_whose_answers_were_lost_in_flight_are_answered_after_the_resume() {
    let (client, done) = session_client(|listener| {
        let mut first = open(&listener);
        // A LOCK served (its ACQUIRED lost with the connection), an UNLOCK of a held name
        // served (its RELEASED lost), and a wait still queued.
        let held = first.expect(op::LOCK);
        first.send(held, &Response::Acquired { token: 3 });
        let mut sent = [first.recv(), first.recv(), first.recv()];
        sent.sort_by(|a, b| a.name.cmp(&b.name));
        let [granted, held_again, queued] = sent;
        assert_eq!(
            (granted.name.as_str(), held_again.name.as_str(), queued.name.as_str()),
            ("granted", "held", "queued")
        );
        assert_eq!(held_again.opcode, op::UNLOCK);
        let old_ids = [held, granted.id, held_again.id, queued.id];
        first.cut();
        let mut second = resume(&listener, 0);
        // All three come again, under new ids.
        let mut again = [second.recv(), second.recv(), second.recv()];
        again.sort_by(|a, b| a.name.cmp(&b.name));
        let [g, u, q] = again;
        for s in [&g, &u, &q] {
            assert!(!old_ids.contains(&s.id), "sent again under its old id");
        }
        assert_eq!((g.opcode, u.opcode, q.opcode), (op::LOCK, op::UNLOCK, op::LOCK));
        second.send(g.id, &Response::AlreadyAcquired { token: 4 });
        second.send(q.id, &Response::AlreadyWaiting);
        second.send(u.id, &Response::ReleaseFailed);
        let queued = queued.id;
        // The queued wait's grant comes later, under its original id.
        second.send(queued, &Response::Acquired { token: 5 });
        let bye = second.expect(op::GOODBYE);
        second.send(bye, &Response::ResetOk);
    });
    let held = client.lock("held", LockOptions::new()).expect("lock held");
    assert_eq!(held.token(), 3);
    thread::scope(|s| {
        let granted = s.spawn(|| client.lock("granted", LockOptions::new()));
        let queued = s.spawn(|| client.lock("queued", LockOptions::new()));
        let unlocked = s.spawn(|| client.unlock("held"));
        let granted = granted.join().expect("thread").expect("the lock served before the cut");
        assert_eq!(
            (granted.token(), granted.already_acquired()),
            (4, false),
            "a fresh grant, not a nested one"
        );
        let queued = queued.join().expect("thread").expect("the wait kept through the cut");
        assert_eq!((queued.token(), queued.already_acquired()), (5, false));
        unlocked.join().expect("thread").expect("the unlock served before the cut");
    });
    assert_eq!(client.resumes(), 1);
    drop(client);
    done.recv_timeout(LIMIT).expect("script finished");
}

#[test]
fn two_locks_of_one_name_lost_in_flight_make_one_fresh_grant_not_two() {
    let (client, done) = session_client(|listener| {
        // Two threads lock the same name; the connection drops before either answer arrives
        // (the server had granted one and answered the other ALREADY_ACQUIRED).
        let mut first = open(&listener);
        let (a, b) = (first.recv(), first.recv());
        assert_eq!(
            (a.opcode, b.opcode, a.name.as_str(), b.name.as_str()),
            (op::LOCK, op::LOCK, "same", "same")
        );
        first.cut();
        let mut second = resume(&listener, 0);
        let (a, b) = (second.recv(), second.recv());
        second.send(a.id, &Response::AlreadyAcquired { token: 4 });
        second.send(b.id, &Response::AlreadyAcquired { token: 4 });
        let bye = second.expect(op::GOODBYE);
        second.send(bye, &Response::ResetOk);
    });
    let nested: Vec<bool> = thread::scope(|s| {
        let threads: Vec<_> = (0..2).map(|_| s.spawn(|| client.lock("same", LockOptions::new()))).collect();
        threads
            .into_iter()
            .map(|t| {
                let guard = t.join().expect("thread").expect("lock");
                assert_eq!(guard.token(), 4);
                let nested = guard.already_acquired();
                // The nested guard must not release the grant the fresh one owns.
                std::mem::forget(guard);
                nested
            })
            .collect()
    });
    let fresh = nested.iter().filter(|n| !**n).count();
    assert_eq!(fresh, 1, "exactly one caller owns the grant: {nested:?}");
    drop(client);
    done.recv_timeout(LIMIT).expect("script finished");
}

#[test]
fn a_replayed_answer_reaches_its_caller_and_is_not_sent_again() {
    let (client, done) = session_client(|listener| {
        let mut first = open(&listener);
        let wait = first.expect(op::LOCK);
        first.cut();
        // Granted while detached: the replay carries it under the original id.
        let mut second = resume(&listener, 1);
        second.send(wait, &Response::Acquired { token: 11 });
        // Nothing is sent again: the next frame is the client's own PING.
        let ping = second.expect(op::PING);
        second.send(ping, &Response::Pong);
        let bye = second.expect(op::GOODBYE);
        second.send(bye, &Response::ResetOk);
    });
    let got = client.lock("w", LockOptions::new()).expect("the replayed grant");
    assert_eq!(got.token(), 11);
    client.ping().expect("ping on the resumed connection");
    drop(client);
    done.recv_timeout(LIMIT).expect("script finished");
}

#[test]
fn a_refused_resume_loses_the_connection_with_its_locks() {
    let (client, done) = session_client(|listener| {
        let mut first = open(&listener);
        let id = first.expect(op::LOCK);
        first.send(id, &Response::Acquired { token: 2 });
        first.cut();
        let mut second = Peer::accept(&listener);
        second.greet();
        let id = second.expect(op::SESSION_RESUME);
        second.send(id, &Response::Error { code: ErrorCode::BadSession, message: "no such session".into() });
    });
    let guard = client.lock_guard("x", LockOptions::new()).expect("lock");
    assert!(guard.wait_lost(Some(LIMIT)), "the loss was never reported");
    let err = client.ping().unwrap_err();
    assert!(err.is_connection_lost(), "{err}");
    assert_eq!(err.released_locks(), ["x".to_string()]);
    assert!(err.to_string().contains("bad_session"), "{err}");
    done.recv_timeout(LIMIT).expect("script finished");
}

#[test]
fn a_server_shutting_down_ends_the_session_without_a_resume() {
    let (tx, rx) = mpsc::channel();
    let (client, done) = session_client(move |listener| {
        let mut first = open(&listener);
        let id = first.expect(op::LOCK);
        first.send(id, &Response::Acquired { token: 2 });
        first.send(0, &Response::Shutdown { message: "bye".into() });
        // Handed back so the test can see that nobody dialled again.
        let _ = tx.send((listener, first));
    });
    let guard = client.lock_guard("x", LockOptions::new()).expect("lock");
    assert!(guard.wait_lost(Some(LIMIT)), "the shutdown was not a loss");
    let (listener, _first) = rx.recv_timeout(LIMIT).expect("the script's listener");
    listener.set_nonblocking(true).expect("nonblocking");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the client dialled again after a shutdown"
    );
    let err = client.ping().unwrap_err();
    assert!(err.is_connection_lost() && err.to_string().contains("shutting down"), "{err}");
    assert_eq!(client.resumes(), 0);
    done.recv_timeout(LIMIT).expect("script finished");
}
