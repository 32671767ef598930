//! Listings over real sockets (issue 10, item 1): MY_LOCKS is capped like every listing, the new
//! MY_LOCKS_MATCHING (PROTOCOL.md §3.11) filters, counts and says when it left names out, a
//! connection pipelining listings it never reads cannot take the server from others, and the
//! JSON mode's listings are bounded the same way. The big numbers (a million locks) are tested
//! on the lock table itself (src/locks/listing.rs); here 20,000 locks keep a debug build fast.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use officer::client::Client;
use officer::protocol::{op, split_frame, ListRequest, LockRequest, Request, Response};
use serde_json::Value;
use support::frames::encode;
use support::raw::Raw;
use support::server::TestServer;
use support::WAIT;

/// Locks held by the connection under test.
const HELD: usize = 20_000;
/// The listing default the servers here are started with, far below `HELD`.
const LIST_DEFAULT: u32 = 500;

fn name(i: usize) -> String {
    format!("l/{i:05}")
}

fn server() -> TestServer {
    TestServer::start_with(|c| c.table.list_max_default = LIST_DEFAULT)
}

/// Acquires `name(0..HELD)` on `wire` with one pipelined write, and checks every answer.
fn hold_many(wire: &mut Raw) {
    let mut frames = Vec::new();
    for i in 0..HELD {
        let n = name(i);
        let request = Request::Lock(LockRequest { name: &n, timeout_ms: Some(0), queue_max: None });
        frames.extend_from_slice(&encode(&request, 1_000_000 + i as u32));
    }
    wire.send_bytes(&frames).expect("write the locks");
    for i in 0..HELD {
        match wire.recv() {
            (rid, Response::Acquired { .. }) if rid == 1_000_000 + i as u32 => {}
            other => panic!("lock {i}: {other:?}"),
        }
    }
}

fn my_locks_matching(prefix: &str, max: u32) -> Request<'_> {
    Request::MyLocksMatching(ListRequest { prefix, max })
}

#[test]
fn my_locks_is_capped_and_my_locks_matching_filters_and_says_so() {
    let server = server();
    let mut wire = Raw::connect(server.addr());
    hold_many(&mut wire);

    // The old request: same layout, at most the listing default, the first names in order.
    match wire.call(&Request::MyLocks) {
        Response::MyLocks { held, waiting } => {
            assert_eq!(held, (0..LIST_DEFAULT as usize).map(name).collect::<Vec<_>>());
            assert!(waiting.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // The new one: the default page, flagged.
    match wire.call(&my_locks_matching("", 0)) {
        Response::MyLocksMatching { held, waiting, truncated } => {
            assert_eq!(held.len(), LIST_DEFAULT as usize);
            assert!(waiting.is_empty());
            assert!(truncated, "19,500 held names were left out");
        }
        other => panic!("{other:?}"),
    }
    // A prefix and a count: `l/01` matches l/01000..l/01999.
    assert_eq!(
        wire.call(&my_locks_matching("l/01", 3)),
        Response::MyLocksMatching {
            held: vec![name(1000), name(1001), name(1002)],
            waiting: vec![],
            truncated: true
        }
    );
    // Everything that matches fits: not truncated.
    let all: Vec<String> = (19_990..20_000).map(name).collect();
    assert_eq!(
        wire.call(&my_locks_matching("l/1999", 0)),
        Response::MyLocksMatching { held: all, waiting: vec![], truncated: false }
    );
    assert_eq!(
        wire.call(&my_locks_matching("nothing/", 0)),
        Response::MyLocksMatching { held: vec![], waiting: vec![], truncated: false }
    );
}

#[test]
fn my_locks_matching_lists_waits_in_order_and_checks_the_prefix() {
    let server = server();
    let addr = server.addr();
    let mut holder = Raw::connect(addr);
    let mut me = Raw::connect(addr);
    for n in ["w/b", "w/a", "w/c", "x/1"] {
        assert!(matches!(holder.call(&support::frames::lock_req(n)), Response::Acquired { .. }));
    }
    assert!(matches!(me.call(&support::frames::lock_req("w/mine")), Response::Acquired { .. }));
    // Three waits, started in the order b, a, c.
    for n in ["w/b", "w/a", "w/c", "x/1"] {
        me.send(&support::frames::lock_req(n));
    }
    assert_eq!(
        me.call(&my_locks_matching("w/", 0)),
        Response::MyLocksMatching {
            held: vec!["w/mine".into()],
            waiting: vec!["w/b".into(), "w/a".into(), "w/c".into()],
            truncated: false
        }
    );
    assert_eq!(
        me.call(&my_locks_matching("w/", 1)),
        Response::MyLocksMatching {
            held: vec!["w/mine".into()],
            waiting: vec!["w/b".into()],
            truncated: true
        }
    );
    // A prefix breaks the name rules like any name: a non-fatal bad_name.
    let mut bad = vec![0, 0, 0, 0];
    bad.push(0x01);
    me.send_bytes(&support::frames::frame(op::MY_LOCKS_MATCHING, 77, &bad)).expect("write");
    match me.recv() {
        (77, Response::Error { code, .. }) => assert_eq!(code, officer::protocol::ErrorCode::BadName),
        other => panic!("{other:?}"),
    }
    assert_eq!(me.call(&Request::Ping(b"")), Response::Pong);
}

/// The hostile pattern of issue 10: a connection holding many locks pipelines listings and
/// reads none of them. Each answer is one bounded page, so the server neither freezes nor
/// piles up output; a bystander is answered while the listings are still unread.
#[test]
fn pipelined_unread_listings_cost_one_page_each_and_others_are_served() {
    const LISTINGS: usize = 2_000;
    let server = server();
    let addr = server.addr();
    let mut hostile = Raw::connect(addr);
    hold_many(&mut hostile);
    let mut bystander = Raw::connect(addr);

    let mut batch = Vec::new();
    for i in 0..LISTINGS {
        let request = if i % 2 == 0 { Request::MyLocks } else { my_locks_matching("", 0) };
        batch.extend_from_slice(&encode(&request, 1 + i as u32));
    }
    hostile.send_bytes(&batch).expect("write the listings");
    // The hostile client has read nothing yet.
    for _ in 0..3 {
        assert_eq!(bystander.call(&Request::Ping(b"")), Response::Pong);
    }
    assert!(matches!(bystander.call(&support::frames::lock_req("by")), Response::Acquired { .. }));

    // Every listing is answered (the connection was not closed for piling up output), each
    // with one default page.
    for i in 0..LISTINGS {
        let (rid, response) = hostile.recv();
        assert_eq!(rid, 1 + i as u32);
        let held = match response {
            Response::MyLocks { held, .. } => held,
            Response::MyLocksMatching { held, truncated: true, .. } => held,
            other => panic!("listing {i}: {other:?}"),
        };
        assert_eq!(held.len(), LIST_DEFAULT as usize, "listing {i}");
    }
    assert_eq!(hostile.call(&Request::Ping(b"")), Response::Pong);
}

/// Every listing fits the frame the server announced, counting each lock's queue, and says
/// when it left entries out; a first entry too big for the frame comes with its queue cut.
#[test]
fn listings_fit_a_small_frame_with_queues_counted() {
    const FRAME: u32 = 2048;
    const WAITERS: usize = 150;
    let server = TestServer::start_with(|c| c.max_frame = FRAME);
    let addr = server.addr();
    let mut holder = Raw::connect(addr);
    for i in 0..50 {
        assert!(matches!(
            holder.call(&support::frames::lock_req(&format!("q/{i:02}"))),
            Response::Acquired { .. }
        ));
    }
    // 150 waiters on q/00: its queue (151 labels of 17 bytes) alone needs more than 2048 bytes.
    // A PING answered after the LOCK proves the wait is queued (one connection is served in order).
    let mut waiters: Vec<Raw> = (0..WAITERS).map(|_| Raw::connect(addr)).collect();
    for w in &mut waiters {
        w.send(&support::frames::lock_req("q/00"));
        assert_eq!(w.call(&Request::Ping(b"")), Response::Pong);
    }
    match call_checked(&mut holder, &Request::Locks(ListRequest { prefix: "q/", max: 0 }), FRAME) {
        Response::Locks { locks, truncated } => {
            assert!(truncated);
            assert_eq!(locks.len(), 1, "the first entry fills the frame");
            assert_eq!(locks[0].name, "q/00");
            assert_eq!(locks[0].queue[0], holder.label, "holder first");
            assert!(locks[0].queue.len() > 100 && locks[0].queue.len() <= WAITERS, "cut to fit");
        }
        other => panic!("{other:?}"),
    }
    // Without the long queue everything fits: whole entries, not flagged.
    match call_checked(&mut holder, &Request::Locks(ListRequest { prefix: "q/1", max: 0 }), FRAME) {
        Response::Locks { locks, truncated } => {
            assert_eq!(locks.len(), 10);
            assert!(!truncated);
        }
        other => panic!("{other:?}"),
    }
    // 151 connections of about 31 bytes each do not fit either.
    match call_checked(&mut holder, &Request::Connections(ListRequest { prefix: "", max: 0 }), FRAME) {
        Response::Connections { connections, truncated } => {
            assert!(truncated);
            assert!(connections.len() > 10 && connections.len() < WAITERS, "{}", connections.len());
        }
        other => panic!("{other:?}"),
    }
    match call_checked(&mut holder, &my_locks_matching("q/", 0), FRAME) {
        Response::MyLocksMatching { held, truncated, .. } => {
            assert_eq!((held.len(), truncated), (50, false), "50 names of 6 bytes fit");
        }
        other => panic!("{other:?}"),
    }
}

/// Sends `request` and checks its answer against the announced frame limit.
fn call_checked(wire: &mut Raw, request: &Request<'_>, max_frame: u32) -> Response {
    let response = wire.call(request);
    // The decoded answer re-encodes to the bytes that came (the codec is canonical).
    let mut bytes = Vec::new();
    response.encode(1, &mut bytes);
    assert!(bytes.len() - 4 <= max_frame as usize, "a frame of {} > {max_frame}", bytes.len() - 4);
    assert!(split_frame(&bytes, max_frame).is_ok());
    response
}

/// JSON clients get the same bounded listings: `my_locks` and `locks` go through the same
/// table functions, capped at the listing default.
#[test]
fn json_listings_are_capped_too() {
    let server = server();
    let stream = TcpStream::connect(server.addr()).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut lines = String::new();
    for i in 0..HELD {
        lines.push_str(&format!("{{\"command\":\"lock\",\"name\":\"{}\",\"timeout\":0}}\n", name(i)));
    }
    writer.write_all(lines.as_bytes()).expect("write");
    let mut read_reply = || -> Value {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read");
        serde_json::from_str(&line).expect("a JSON reply")
    };
    for i in 0..HELD {
        let reply = read_reply();
        assert_eq!(reply["result"], "acquired", "lock {i}: {reply}");
    }
    writer.write_all(b"{\"command\":\"my_locks\"}\n{\"command\":\"locks\"}\n").expect("write");
    let mine = read_reply();
    assert_eq!(mine["result"], "my_locks");
    let names: Vec<&str> =
        mine["value"].as_array().expect("a list").iter().filter_map(Value::as_str).collect();
    assert_eq!(names, (0..LIST_DEFAULT as usize).map(name).collect::<Vec<_>>());
    let locks = read_reply();
    assert_eq!(locks["result"], "locks");
    assert_eq!(locks["value"].as_object().expect("a map").len(), LIST_DEFAULT as usize);
}

#[test]
fn the_client_lists_its_own_locks_by_prefix_within_its_namespace() {
    let server = server();
    let addr = server.addr();
    let client =
        Client::builder().host("127.0.0.1").port(addr.port()).namespace("ns").connect().expect("connect");
    let outsider = Client::connect("127.0.0.1", addr.port()).expect("connect");
    outsider.try_lock("ns:jobs/outside").expect("lock");
    for n in ["jobs/b", "jobs/a", "other"] {
        client.try_lock(n).expect("lock");
    }
    let jobs = client.my_locks_matching("jobs/", 0).expect("my_locks_matching");
    assert_eq!(jobs.held, ["jobs/a", "jobs/b"]);
    assert!(jobs.waiting.is_empty() && !jobs.truncated);
    let first = client.my_locks_matching("", 1).expect("my_locks_matching");
    assert_eq!((first.held, first.truncated), (vec!["jobs/a".to_string()], true));
    // The old call still works, and sees the same names.
    assert_eq!(client.my_locks().expect("my_locks").held, ["jobs/a", "jobs/b", "other"]);
}
