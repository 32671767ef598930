//! Client behaviour against a scripted fake server: what the real server rarely or never does
//! on demand (answers out of order, SHUTDOWN, garbage, asking for AUTH).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::*;
use crate::protocol::{op, split_frame, ErrorCode, HelloOk, LostReason, Response, PROTOCOL_VERSION};

/// The server side of one scripted connection.
struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One request as the fake server saw it.
struct Seen {
    opcode: u8,
    id: u32,
    payload: Vec<u8>,
}

impl Peer {
    fn recv(&mut self) -> Option<Seen> {
        loop {
            if let Ok(Some((frame, len))) = split_frame(&self.buf, 1 << 20) {
                let seen =
                    Seen { opcode: frame.opcode, id: frame.request_id, payload: frame.payload.to_vec() };
                self.buf.drain(..len);
                return Some(seen);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn send(&mut self, id: u32, resp: &Response) {
        let mut out = Vec::new();
        resp.encode(id, &mut out);
        self.stream.write_all(&out).expect("fake server write");
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("fake server write");
    }
}

fn hello(idle_timeout_ms: u32, auth_required: bool) -> Response {
    Response::HelloOk(HelloOk {
        version: PROTOCOL_VERSION,
        auth_required,
        connection_id: 7,
        max_frame: 64 * 1024,
        max_name: 16,
        idle_timeout_ms,
    })
}

/// Starts a one-connection fake server that answers HELLO with `greeting` (and the probe PING
/// behind it with PONG) and then runs `script`. The script's end is reported on the returned channel.
fn fake_server(
    greeting: Response,
    script: impl FnOnce(&mut Peer) + Send + 'static,
) -> (SocketAddr, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut peer = Peer { stream, buf: Vec::new() };
        let first = peer.recv().expect("hello");
        assert_eq!(first.opcode, op::HELLO);
        // The client sends its line-end probe right behind HELLO (PROTOCOL.md §2.6).
        let probe = peer.recv().expect("probe");
        assert_eq!((probe.opcode, &probe.payload[..]), (op::PING, &b"\r\n\r\n"[..]));
        let greeted = matches!(greeting, Response::HelloOk(_));
        peer.send(first.id, &greeting);
        if greeted {
            peer.send(probe.id, &Response::Pong);
        }
        script(&mut peer);
        let _ = done_tx.send(());
    });
    (addr, done_rx)
}

fn connect(addr: SocketAddr) -> Client {
    Client::builder().host("127.0.0.1").port(addr.port()).connect().expect("connect")
}

#[test]
fn answers_are_routed_by_request_id_not_arrival_order() {
    let (addr, done) = fake_server(hello(0, false), |peer| {
        // The two threads race to send; take both frames in whatever order they came.
        let (a, b) = (peer.recv().expect("first"), peer.recv().expect("second"));
        let (lock, ping) = if a.opcode == op::LOCK { (a, b) } else { (b, a) };
        assert_eq!((lock.opcode, ping.opcode), (op::LOCK, op::PING));
        // The ping is answered while the lock still waits.
        peer.send(ping.id, &Response::Pong);
        let unlock = peer.recv().expect("unlock after the ping returned");
        assert_eq!(unlock.opcode, op::UNLOCK);
        peer.send(lock.id, &Response::Acquired { token: 5 });
        peer.send(unlock.id, &Response::ReleaseFailed);
    });
    let client = connect(addr);
    thread::scope(|s| {
        let waiter = s.spawn(|| client.lock("slow", LockOptions::new()));
        // Answered only once the LOCK frame has arrived too, so it proves a waiting lock
        // does not hold up other calls.
        client.ping().expect("ping answered while a lock waits");
        let err = client.unlock("other").unwrap_err();
        assert!(err.is_not_held(), "{err}");
        let got = waiter.join().expect("waiter").expect("lock");
        assert_eq!((got.token(), got.already_acquired()), (5, false));
    });
    done.recv_timeout(Duration::from_secs(10)).expect("script finished");
}

#[test]
fn shutdown_frame_loses_the_connection_and_reports_released_locks() {
    let (addr, _done) = fake_server(hello(0, false), |peer| {
        let lock = peer.recv().expect("lock");
        peer.send(lock.id, &Response::Acquired { token: 1 });
        let _ = peer.recv().expect("ping");
        peer.send(0, &Response::Shutdown { message: "maintenance".into() });
        // Keep the socket open: the frame alone must end the session.
        let _ = peer.recv();
    });
    let client =
        Client::builder().host("127.0.0.1").port(addr.port()).namespace("ns").connect().expect("connect");
    client.try_lock("a").expect("lock");
    // The ping is never answered; the SHUTDOWN frame wakes it.
    let err = client.ping().unwrap_err();
    assert!(err.is_connection_lost(), "{err}");
    assert_eq!(err.released_locks(), ["a".to_string()]);
    assert!(err.to_string().contains("maintenance"), "{err}");
    assert!(!client.is_connected());
    // Locks were held, so nothing reconnects: the same error again.
    assert!(client.ping().unwrap_err().is_connection_lost());
}

#[test]
fn garbage_from_the_server_is_a_lost_connection() {
    let (addr, _done) = fake_server(hello(0, false), |peer| {
        let ping = peer.recv().expect("ping");
        let mut out = Vec::new();
        Response::Pong.encode(ping.id, &mut out);
        out[4] = 0x7F; // not a response opcode
        peer.send_raw(&out);
        let _ = peer.recv();
    });
    let client =
        Client::builder().host("127.0.0.1").port(addr.port()).auto_reconnect(false).connect().expect("c");
    let err = client.ping().unwrap_err();
    assert!(err.is_connection_lost(), "{err}");
    assert!(err.to_string().contains("opcode"), "{err}");
}

#[test]
fn auth_is_sent_when_the_server_asks() {
    let (addr, done) = fake_server(hello(0, true), |peer| {
        let auth = peer.recv().expect("auth");
        assert_eq!((auth.opcode, auth.payload.as_slice()), (op::AUTH, &b"pw"[..]));
        peer.send(auth.id, &Response::AuthOk);
        let ping = peer.recv().expect("ping");
        peer.send(ping.id, &Response::Pong);
    });
    let client = Client::builder().host("127.0.0.1").port(addr.port()).auth("pw").connect().expect("connect");
    client.ping().expect("ping");
    done.recv_timeout(Duration::from_secs(10)).expect("script finished");

    let (addr, _done) = fake_server(hello(0, true), |_| {});
    let err = Client::connect("127.0.0.1", addr.port()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server(ErrorCode::AuthRequired));
}

#[test]
fn keep_alive_pings_a_silent_connection() {
    let (addr, done) = fake_server(hello(90, false), |peer| {
        // Idle timeout 90 ms: the client must ping on its own, more than once.
        for _ in 0..3 {
            let ping = peer.recv().expect("keep-alive ping");
            assert_eq!(ping.opcode, op::PING);
            peer.send(ping.id, &Response::Pong);
        }
    });
    let _client = connect(addr);
    done.recv_timeout(Duration::from_secs(10)).expect("three pings arrived");
}

#[test]
fn bad_names_are_refused_before_sending() {
    let (addr, _done) = fake_server(hello(0, false), |peer| {
        // Any frame reaching the server would be a bug; answer it with garbage to fail loudly.
        if peer.recv().is_some() {
            peer.send_raw(&[0, 0, 0, 0]);
        }
    });
    let client = connect(addr);
    let long = "x".repeat(17); // the fake server's max_name is 16
    for name in ["", long.as_str(), "tab\there"] {
        let err = client.try_lock(name).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidName, "{name:?}: {err}");
    }
    assert!(client.is_connected());
}

#[test]
fn handshake_error_is_a_server_error() {
    let refusal = Response::error(ErrorCode::LimitExceeded, "too many connections");
    let (addr, _done) = fake_server(refusal, |_| {});
    let err = Client::connect("127.0.0.1", addr.port()).unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::LimitExceeded));
    assert!(err.to_string().contains("too many connections"), "{err}");
}

#[test]
fn request_ids_are_never_zero() {
    let (addr, done) = fake_server(hello(0, false), |peer| {
        while let Some(seen) = peer.recv() {
            assert_ne!(seen.id, 0);
            peer.send(seen.id, &Response::Pong);
        }
    });
    let client = connect(addr);
    for _ in 0..5 {
        client.ping().expect("ping");
    }
    drop(client);
    done.recv_timeout(Duration::from_secs(10)).expect("server saw the close");
}

#[test]
fn plain_options_send_lock_and_more_sends_lock_ext() {
    let (addr, done) = fake_server(hello(0, false), |peer| {
        let plain = peer.recv().expect("plain lock");
        assert_eq!(plain.opcode, op::LOCK, "an exclusive lock is the version-1 LOCK");
        peer.send(plain.id, &Response::Acquired { token: 1 });
        let shared = peer.recv().expect("shared lock");
        assert_eq!(shared.opcode, op::LOCK_EXT);
        assert_eq!(shared.payload[2], 1, "mode shared");
        peer.send(shared.id, &Response::Acquired { token: 2 });
        let sem = peer.recv().expect("semaphore");
        assert_eq!(sem.opcode, op::LOCK_EXT);
        // flags, mode 2, timeout 0 (try once), queue_max, permits 2, limit 5, lease 1500 ms.
        assert_eq!(
            &sem.payload[..23],
            &[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 5, 0xdc]
        );
        peer.send(sem.id, &Response::Acquired { token: 3 });
    });
    let client = connect(addr);
    client.lock("a", LockOptions::new()).expect("plain");
    client.lock("b", LockOptions::new().shared()).expect("shared");
    let opts = LockOptions::try_once().permits(2, 5).lease(Duration::from_millis(1500));
    client.lock("c", opts).expect("semaphore");
    done.recv_timeout(Duration::from_secs(10)).expect("script finished");
}

#[test]
fn a_lost_notice_marks_the_grant_lost_and_leaves_the_connection_up() {
    let (addr, done) = fake_server(hello(0, false), |peer| {
        let lock = peer.recv().expect("lock");
        peer.send(lock.id, &Response::Acquired { token: 9 });
        let other = peer.recv().expect("second lock");
        peer.send(other.id, &Response::Acquired { token: 10 });
        let ping = peer.recv().expect("ping");
        // The notices come unasked, under request id 0, before the ping's answer.
        peer.send(0, &Response::Contended { token: 10, name: "ns:other".into() });
        peer.send(0, &Response::Lost { token: 9, reason: LostReason::LeaseExpired, name: "ns:job".into() });
        peer.send(ping.id, &Response::Pong);
        let renew = peer.recv().expect("renew");
        assert_eq!(renew.opcode, op::RENEW);
        peer.send(
            renew.id,
            &Response::Lost { token: 9, reason: LostReason::LeaseExpired, name: "ns:job".into() },
        );
        let _ = peer.recv();
    });
    let client =
        Client::builder().host("127.0.0.1").port(addr.port()).namespace("ns").connect().expect("connect");
    let guard = client.lock_guard("job", LockOptions::new().lease(Duration::from_secs(1))).expect("lock");
    let other = client.lock_guard("other", LockOptions::new().notify_contention()).expect("lock");
    assert!(!guard.is_lost() && !other.is_contended());
    client.ping().expect("ping");
    assert!(guard.is_lost() && guard.wait_lost(Some(Duration::ZERO)));
    assert!(other.is_contended() && !other.is_lost());
    let e = client.wait_lost("job", 9, None).expect("lost");
    assert_eq!((e.kind(), e.lost_reason()), (ErrorKind::GrantLost, Some((LostReason::LeaseExpired, 9))));
    assert!(client.wait_lost("other", 10, Some(Duration::from_millis(1))).is_none());
    let e = client.renew("job", 9).unwrap_err();
    assert_eq!(e.lost_reason(), Some((LostReason::LeaseExpired, 9)));
    assert!(e.to_string().contains("\"job\"") && e.to_string().contains("lease_expired"), "{e}");
    assert!(client.is_connected());
    // The guards' unlocks fail quietly on the closed connection.
    client.disconnect();
    drop((guard, other));
    done.recv_timeout(Duration::from_secs(10)).expect("script finished");
}
