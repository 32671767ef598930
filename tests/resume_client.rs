//! The blocking client's resumable sessions end to end, through the loopback fault proxy
//! (`support::proxy`): connections reset (RST) or frozen under a client that holds and waits
//! for locks, and what it, its guards and the other clients see afterwards.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use officer::protocol::{Request, Response};
use support::frames::{hello_frame, lock_req, token_of};
use support::proxy::Proxy;
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
    support::process::wait_until("the reset connection's lock to go", WAIT, || {
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
