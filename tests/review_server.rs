//! Review checks on the restructured server's connection ends: a connection that leaves while
//! its RESET is still releasing (across turns) is answered by nobody, and the connection that
//! takes its slab slot next hears only its own answers, under its own request ids.

mod support;

use officer::protocol::{Request, Response};
use support::frames::{encode, lock_req, locks_req};
use support::raw::Raw;
use support::server::TestServer;

/// More holds than one release batch (1000): the RESET spans several turns of the loop.
const HOLDS: usize = 2500;

#[test]
fn a_reset_left_releasing_by_a_closed_connection_answers_nobody_in_its_slot() {
    let server = TestServer::start();
    let mut waiter = Raw::connect(server.addr());
    for round in 0..5 {
        let names: Vec<String> = (0..HOLDS).map(|i| format!("r{round}-{i}")).collect();
        let mut leaver = Raw::connect(server.addr());
        let mut burst = Vec::new();
        for (i, name) in names.iter().enumerate() {
            burst.extend(encode(&lock_req(name), 2 + i as u32));
        }
        leaver.send_bytes(&burst).expect("write");
        for _ in 0..HOLDS {
            assert!(matches!(leaver.recv().1, Response::Acquired { .. }));
        }
        // The waiter queues behind the last hold to be released: its grant says the release is
        // done.
        let wait_id = waiter.send(&lock_req(&names[HOLDS - 1]));
        // RESET under request id 2, which the next connection uses for its PING; then gone.
        leaver.send_bytes(&encode(&Request::Reset, 2)).expect("write");
        drop(leaver);
        let mut next = Raw::connect(server.addr());
        let last = names[HOLDS - 1].as_str();
        // Each round trip of `next` is at least one turn of the loop, while the release goes on.
        loop {
            assert_eq!(next.call(&Request::Ping(&[])), Response::Pong, "round {round}");
            let Response::Locks { locks, .. } = next.call(&locks_req(last)) else { panic!("not a listing") };
            if locks.iter().any(|l| l.name == last && l.queue == [waiter.label.clone()]) {
                break;
            }
        }
        let (rid, response) = waiter.recv();
        assert_eq!(rid, wait_id);
        assert!(matches!(response, Response::Acquired { .. }), "{response:?}");
        assert_eq!(waiter.call(&Request::Unlock(&names[HOLDS - 1])), Response::Released);
        assert_eq!(next.call(&Request::MyLocks), Response::MyLocks { held: vec![], waiting: vec![] });
    }
}
