//! The JSON-lines mode of the original Ruby officer, over real sockets: every command and
//! reply an existing Ruby client relies on, and JSON and binary clients sharing one table.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use officer::protocol::{LockRequest, Request, Response};
use serde_json::{json, Value};
use support::{Raw, TestServer, WAIT};

/// A client of the original protocol: one JSON object per line.
struct JsonClient {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    label: String,
}

impl JsonClient {
    fn connect(addr: SocketAddr) -> JsonClient {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let label = stream.local_addr().unwrap().to_string();
        JsonClient { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream, label }
    }

    fn send(&mut self, value: Value) {
        self.send_raw(format!("{value}\n").as_bytes());
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// The next reply line; `None` on EOF.
    fn try_recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("reply is JSON")),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    fn recv(&mut self) -> Value {
        self.try_recv().expect("connection closed")
    }

    fn call(&mut self, value: Value) -> Value {
        self.send(value);
        self.recv()
    }

    /// Proves no reply is pending: a my_locks sent now is answered next.
    fn my_locks(&mut self) -> Vec<String> {
        let reply = self.call(json!({"command": "my_locks"}));
        assert_eq!(reply["result"], "my_locks", "unexpected reply {reply}");
        serde_json::from_value(reply["value"].clone()).unwrap()
    }
}

fn result(v: &Value) -> &str {
    v["result"].as_str().unwrap_or("")
}

#[test]
fn lock_unlock_and_already_acquired() {
    let server = TestServer::start();
    let mut a = JsonClient::connect(server.addr());
    let reply = a.call(json!({"command": "lock", "name": "x"}));
    assert_eq!(result(&reply), "acquired");
    assert_eq!(reply["name"], "x");
    assert!(reply["token"].as_u64().unwrap() > 0);
    let again = a.call(json!({"command": "lock", "name": "x"}));
    assert_eq!(result(&again), "already_acquired");
    assert_eq!(again["token"], reply["token"]);
    assert_eq!(a.call(json!({"command": "unlock", "name": "x"})), json!({"result": "released", "name": "x"}));
    assert_eq!(
        a.call(json!({"command": "unlock", "name": "x"})),
        json!({"result": "release_failed", "name": "x"})
    );
}

#[test]
fn waiting_lock_is_answered_only_on_grant_and_repeat_sends_nothing() {
    let server = TestServer::start();
    let mut a = JsonClient::connect(server.addr());
    let mut b = JsonClient::connect(server.addr());
    assert_eq!(result(&a.call(json!({"command": "lock", "name": "w"}))), "acquired");
    b.send(json!({"command": "lock", "name": "w"}));
    b.send(json!({"command": "lock", "name": "w"}));
    assert_eq!(b.my_locks(), vec!["w"]);
    assert_eq!(result(&a.call(json!({"command": "unlock", "name": "w"}))), "released");
    let granted = b.recv();
    assert_eq!(result(&granted), "acquired");
    assert_eq!(granted["name"], "w");
    assert_eq!(b.my_locks(), vec!["w"], "exactly one reply for the two lock requests");
}

#[test]
fn unlock_while_waiting_leaves_the_queue_silently() {
    let server = TestServer::start();
    let mut a = JsonClient::connect(server.addr());
    let mut b = JsonClient::connect(server.addr());
    a.call(json!({"command": "lock", "name": "u"}));
    b.send(json!({"command": "lock", "name": "u"}));
    assert_eq!(b.my_locks(), vec!["u"]);
    assert_eq!(b.call(json!({"command": "unlock", "name": "u"})), json!({"result": "released", "name": "u"}));
    a.call(json!({"command": "unlock", "name": "u"}));
    assert!(b.my_locks().is_empty(), "the cancelled wait got no reply and was not granted");
}

#[test]
fn timeouts_carry_the_queue() {
    let server = TestServer::start();
    let mut a = JsonClient::connect(server.addr());
    let mut b = JsonClient::connect(server.addr());
    a.call(json!({"command": "lock", "name": "t"}));
    let now = b.call(json!({"command": "lock", "name": "t", "timeout": 0}));
    assert_eq!(now, json!({"result": "timed_out", "name": "t", "queue": [a.label]}));
    let started = Instant::now();
    let later = b.call(json!({"command": "lock", "name": "t", "timeout": 1}));
    assert!(started.elapsed() >= Duration::from_millis(990));
    assert_eq!(result(&later), "timed_out");
    assert_eq!(later["queue"][0], json!(a.label));
    let null_timeout = b.call(json!({"command": "lock", "name": "free", "timeout": null}));
    assert_eq!(result(&null_timeout), "acquired");
}

#[test]
fn queue_max_and_reset() {
    let server = TestServer::start();
    let mut a = JsonClient::connect(server.addr());
    let mut b = JsonClient::connect(server.addr());
    a.call(json!({"command": "lock", "name": "q"}));
    a.call(json!({"command": "lock", "name": "r"}));
    let maxed = b.call(json!({"command": "lock", "name": "q", "queue_max": 1}));
    assert_eq!(maxed, json!({"result": "queue_maxed", "name": "q", "queue": [a.label]}));
    assert_eq!(a.call(json!({"command": "reset"})), json!({"result": "reset_succeeded"}));
    assert_eq!(result(&b.call(json!({"command": "lock", "name": "q", "queue_max": 1}))), "acquired");
    assert_eq!(result(&b.call(json!({"command": "lock", "name": "r", "timeout": 0}))), "acquired");
}

#[test]
fn disconnect_hands_over() {
    let server = TestServer::start();
    let mut a = JsonClient::connect(server.addr());
    let mut b = JsonClient::connect(server.addr());
    a.call(json!({"command": "lock", "name": "d"}));
    b.send(json!({"command": "lock", "name": "d"}));
    assert_eq!(b.my_locks(), vec!["d"]);
    drop(a);
    assert_eq!(result(&b.recv()), "acquired");
}

#[test]
fn json_and_binary_clients_share_the_table() {
    let server = TestServer::start();
    let mut bin = Raw::connect(server.addr());
    let mut js = JsonClient::connect(server.addr());
    let Response::Acquired { .. } =
        bin.call(&Request::Lock(LockRequest { name: "shared", timeout_ms: None, queue_max: None }))
    else {
        panic!("binary lock failed")
    };
    js.send(json!({"command": "lock", "name": "shared"}));
    assert_eq!(js.my_locks(), vec!["shared"]);
    let locks = js.call(json!({"command": "locks"}));
    assert_eq!(locks, json!({"result": "locks", "value": {"shared": [bin.label, js.label]}}));
    let conns = js.call(json!({"command": "connections"}));
    assert_eq!(conns["result"], "connections");
    assert_eq!(conns["value"][&js.label], json!(["shared"]));
    assert_eq!(conns["value"][&bin.label], json!(["shared"]));
    assert_eq!(bin.call(&Request::Unlock("shared")), Response::Released);
    assert_eq!(result(&js.recv()), "acquired");
    match bin.call(&Request::Lock(LockRequest { name: "shared", timeout_ms: Some(0), queue_max: None })) {
        Response::TimedOut { queue } => assert_eq!(queue, vec![js.label.clone()]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_lines_get_errors_and_the_connection_goes_on() {
    let server = TestServer::start();
    let mut a = JsonClient::connect(server.addr());
    a.send_raw(b"{not json\n");
    let reply = a.recv();
    assert_eq!(result(&reply), "error");
    assert!(reply["message"].as_str().unwrap().contains("invalid JSON"));
    let reply = a.call(json!({"command": "fly"}));
    assert_eq!(result(&reply), "error");
    assert!(reply["message"].as_str().unwrap().contains("fly"));
    let reply = a.call(json!({"command": "lock"}));
    assert_eq!(result(&reply), "error");
    let reply = a.call(json!({"command": "lock", "name": "x", "timeout": -1}));
    assert_eq!(result(&reply), "error");
    assert!(a.my_locks().is_empty());
}

#[test]
fn over_long_line_closes_the_connection() {
    let server = TestServer::start_with(|c| c.max_frame = 1024);
    let mut a = JsonClient::connect(server.addr());
    let mut keeper = JsonClient::connect(server.addr());
    keeper.call(json!({"command": "lock", "name": "keep"}));
    let mut line = b"{\"command\":\"lock\",\"name\":\"".to_vec();
    line.extend(std::iter::repeat_n(b'a', 4000));
    a.send_raw(&line);
    loop {
        match a.try_recv() {
            None => break,
            Some(v) => assert_eq!(result(&v), "error"),
        }
    }
    assert_eq!(keeper.my_locks(), vec!["keep"]);
}

#[test]
fn keep_alive_keeps_a_connection_past_max_idle() {
    let server = TestServer::start_with(|c| c.max_idle = Some(Duration::from_secs(1)));
    let mut a = JsonClient::connect(server.addr());
    let mut silent = JsonClient::connect(server.addr());
    a.call(json!({"command": "lock", "name": "k"}));
    silent.call(json!({"command": "lock", "name": "s"}));
    let started = Instant::now();
    // keep_alive has no reply; the silent client's close is the event we wait for.
    let waiter = std::thread::spawn(move || {
        while silent.try_recv().is_some() {}
        started.elapsed()
    });
    while !waiter.is_finished() {
        assert!(started.elapsed() < WAIT, "silent connection never closed");
        a.send(json!({"command": "keep_alive"}));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(waiter.join().unwrap() >= Duration::from_millis(900));
    let pass = started.elapsed() + Duration::from_millis(500);
    while started.elapsed() < pass {
        a.send(json!({"command": "keep_alive"}));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(a.my_locks(), vec!["k"], "the kept-alive client still holds its lock");
}
