//! The JSON-lines mode of the original Ruby officer, over real sockets: every command the Ruby
//! client sends, in the exact form `Officer::Client` writes it, and every reply compared whole
//! (`==` on the parsed object, as the gem's own spec and its users' test suites do) with what
//! the original server sends (PROTOCOL.md §7). Also: the fencing-token opt-ins, the
//! `--compat-listen` listener next to an authenticated port, the JSON refusal line, and the
//! mode and group of the UNIX sockets the server creates.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use officer::protocol::{validate_name, ErrorCode, LockRequest, Request, Response};
use officer::server::{BoundAddr, Config, Listen, Server, ShutdownHandle, SocketPerms};
use serde_json::{json, Value};
use support::raw::Raw;
use support::server::TestServer;
use support::WAIT;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-compat";

/// A client of the original protocol, writing each command as `Officer::Client` does.
struct RubyClient {
    writer: Box<dyn Write + Send>,
    reader: BufReader<Box<dyn Read + Send>>,
    /// `ip:port` as the server shows this connection (TCP only).
    label: String,
}

impl RubyClient {
    fn connect(addr: SocketAddr) -> RubyClient {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let label = stream.local_addr().unwrap().to_string();
        let reader: Box<dyn Read + Send> = Box::new(stream.try_clone().unwrap());
        RubyClient { writer: Box::new(stream), reader: BufReader::new(reader), label }
    }

    fn connect_unix(path: &Path) -> RubyClient {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let reader: Box<dyn Read + Send> = Box::new(stream.try_clone().unwrap());
        RubyClient { writer: Box::new(stream), reader: BufReader::new(reader), label: String::new() }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    fn send(&mut self, value: Value) {
        self.send_raw(format!("{value}\n").as_bytes());
    }

    /// The next reply line, parsed; `None` on EOF.
    fn try_recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?} is not JSON: {e}")),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    fn recv(&mut self) -> Value {
        self.try_recv().expect("connection closed")
    }

    /// Every line up to the server's close.
    fn recv_to_eof(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.try_recv()).collect()
    }

    fn call(&mut self, value: Value) -> Value {
        self.send(value);
        self.recv()
    }

    /// `client.lock name, :timeout => t, :queue_max => q` writes exactly this line.
    fn send_lock(&mut self, name: &str, timeout: Option<u32>, queue_max: Option<u32>) {
        let line = format!(
            "{{\"command\":\"lock\",\"name\":{},\"timeout\":{},\"queue_max\":{}}}\n",
            json!(name),
            json!(timeout),
            json!(queue_max)
        );
        self.send_raw(line.as_bytes());
    }

    fn lock(&mut self, name: &str) -> Value {
        self.lock_with(name, None, None)
    }

    fn lock_with(&mut self, name: &str, timeout: Option<u32>, queue_max: Option<u32>) -> Value {
        self.send_lock(name, timeout, queue_max);
        self.recv()
    }

    fn unlock(&mut self, name: &str) -> Value {
        self.call(json!({"command": "unlock", "name": name}))
    }

    fn reset(&mut self) -> Value {
        self.call(json!({"command": "reset"}))
    }

    fn locks(&mut self) -> Value {
        self.call(json!({"command": "locks"}))
    }

    fn connections(&mut self) -> Value {
        self.call(json!({"command": "connections"}))
    }

    /// Also proves no other reply is pending: the one read next answers this command.
    fn my_locks(&mut self) -> Value {
        self.call(json!({"command": "my_locks"}))
    }

    fn keep_alive(&mut self) {
        self.send_raw(b"{\"command\":\"keep_alive\"}\n");
    }
}

// The original's replies, key for key (lib/officer/connection.rb `send_result`).
fn acquired(name: &str) -> Value {
    json!({"result": "acquired", "name": name})
}
fn already_acquired(name: &str) -> Value {
    json!({"result": "already_acquired", "name": name})
}
fn released(name: &str) -> Value {
    json!({"result": "released", "name": name})
}
fn release_failed(name: &str) -> Value {
    json!({"result": "release_failed", "name": name})
}
fn timed_out(name: &str, queue: &[&str]) -> Value {
    json!({"result": "timed_out", "name": name, "queue": queue})
}
fn queue_maxed(name: &str, queue: &[&str]) -> Value {
    json!({"result": "queue_maxed", "name": name, "queue": queue})
}
fn my_locks(names: &[&str]) -> Value {
    json!({"value": names, "result": "my_locks"})
}
fn error(code: &str, message: &str) -> Value {
    json!({"result": "error", "code": code, "message": message})
}

/// An in-process server that also exposes its `--compat-listen` address.
struct CompatServer {
    main: BoundAddr,
    compat: Option<BoundAddr>,
    handle: ShutdownHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CompatServer {
    fn start(configure: impl FnOnce(&mut Config)) -> CompatServer {
        let mut config = Config { listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()), ..Config::default() };
        configure(&mut config);
        let server = Server::bind(config).expect("bind");
        let main = server.local_addr().clone();
        let compat = server.compat_addr().cloned();
        let handle = server.shutdown_handle();
        let thread = Some(std::thread::spawn(move || server.run().expect("server run")));
        CompatServer { main, compat, handle, thread }
    }

    /// A secret on the main port and a compat listener on 127.0.0.1:0.
    fn with_secret() -> CompatServer {
        CompatServer::start(|c| {
            c.auth_secret = Some(SECRET.to_vec());
            c.compat_listen = Some(Listen::Tcp("127.0.0.1:0".parse().unwrap()));
        })
    }

    fn main_tcp(&self) -> SocketAddr {
        match &self.main {
            BoundAddr::Tcp(a) => *a,
            other => panic!("main listener is {other}"),
        }
    }

    fn compat_tcp(&self) -> SocketAddr {
        match &self.compat {
            Some(BoundAddr::Tcp(a)) => *a,
            other => panic!("compat listener is {other:?}"),
        }
    }

    fn stop(mut self) {
        self.handle.shutdown();
        self.thread.take().unwrap().join().expect("server thread panicked");
    }
}

impl Drop for CompatServer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.shutdown();
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every command, as the Ruby client sends it, against the original's replies

#[test]
fn lock_unlock_as_the_gem_spec_expects() {
    let server = TestServer::start();
    let mut client = RubyClient::connect(server.addr());
    assert_eq!(client.lock("testlock"), acquired("testlock"));
    assert_eq!(client.my_locks(), my_locks(&["testlock"]));
    assert_eq!(client.lock("testlock"), already_acquired("testlock"));
    assert_eq!(client.unlock("testlock"), released("testlock"));
    assert_eq!(client.my_locks(), my_locks(&[]));
    assert_eq!(client.unlock("testlock"), release_failed("testlock"));
    // Namespaced names (`:namespace => "myapp"`) are plain names to the server.
    assert_eq!(client.lock("myapp:testlock"), acquired("myapp:testlock"));
}

#[test]
fn waiting_lock_is_answered_once_on_grant_and_a_repeat_sends_nothing() {
    let server = TestServer::start();
    let mut a = RubyClient::connect(server.addr());
    let mut b = RubyClient::connect(server.addr());
    assert_eq!(a.lock("w"), acquired("w"));
    b.send_lock("w", None, None);
    b.send_lock("w", None, None);
    assert_eq!(b.my_locks(), my_locks(&["w"]), "no reply while waiting, none for the repeat");
    assert_eq!(a.unlock("w"), released("w"));
    assert_eq!(b.recv(), acquired("w"));
    assert_eq!(b.my_locks(), my_locks(&["w"]), "exactly one reply for the two lock commands");
}

#[test]
fn unlock_of_a_queued_request_is_released_and_the_wait_never_answered() {
    // The gem's "EXPERIMENTAL: ... release a queued lock request" spec, byte for byte.
    let server = TestServer::start();
    let mut client = RubyClient::connect(server.addr());
    let mut socket = RubyClient::connect(server.addr());
    assert_eq!(client.lock("testlock"), acquired("testlock"));
    socket.send_raw(b"{\"command\":\"lock\",\"name\":\"testlock\"}\n");
    socket.send_raw(b"{\"command\":\"unlock\",\"name\":\"testlock\"}\n");
    assert_eq!(socket.recv(), released("testlock"));
    assert_eq!(client.unlock("testlock"), released("testlock"));
    assert_eq!(socket.my_locks(), my_locks(&[]), "the cancelled wait got no reply and no grant");
}

#[test]
fn timeouts_reply_timed_out_with_the_queue() {
    let server = TestServer::start();
    let mut client1 = RubyClient::connect(server.addr());
    let mut client2 = RubyClient::connect(server.addr());
    assert_eq!(client1.lock("testlock"), acquired("testlock"));
    let holder = client1.label.clone();
    assert_eq!(client2.lock_with("testlock", Some(0), None), timed_out("testlock", &[&holder]));
    let started = Instant::now();
    assert_eq!(client2.lock_with("testlock", Some(1), None), timed_out("testlock", &[&holder]));
    assert!(started.elapsed() >= Duration::from_millis(990), "a wait never ends early");
    assert_eq!(client2.my_locks(), my_locks(&[]), "a timed-out wait leaves the queue");
    // Fractions and null are accepted too (the Ruby client sends null when no timeout is set).
    assert_eq!(client2.call(json!({"command": "lock", "name": "f", "timeout": 0.5})), acquired("f"));
}

#[test]
fn queue_max_replies_queue_maxed_with_the_whole_queue() {
    let server = TestServer::start();
    let mut c1 = RubyClient::connect(server.addr());
    let mut c2 = RubyClient::connect(server.addr());
    let mut c3 = RubyClient::connect(server.addr());
    let mut c4 = RubyClient::connect(server.addr());
    assert_eq!(c1.lock("testlock"), acquired("testlock"));
    c2.send_lock("testlock", None, None);
    assert_eq!(c2.my_locks(), my_locks(&["testlock"]));
    c3.send_lock("testlock", None, None);
    assert_eq!(c3.my_locks(), my_locks(&["testlock"]));
    let queue = [c1.label.as_str(), c2.label.as_str(), c3.label.as_str()];
    assert_eq!(c4.lock_with("testlock", None, Some(3)), queue_maxed("testlock", &queue));
    assert_eq!(c4.my_locks(), my_locks(&[]));
    // Below the limit it queues like any lock: granted after the three ahead of it.
    c4.send_lock("testlock", None, Some(4));
    assert_eq!(c4.my_locks(), my_locks(&["testlock"]));
    drop((c1, c2, c3));
    assert_eq!(c4.recv(), acquired("testlock"));
}

#[test]
fn reset_releases_everything() {
    let server = TestServer::start();
    let mut client = RubyClient::connect(server.addr());
    let mut other = RubyClient::connect(server.addr());
    assert_eq!(client.lock("testlock1"), acquired("testlock1"));
    assert_eq!(client.lock("testlock2"), acquired("testlock2"));
    assert_eq!(client.my_locks(), my_locks(&["testlock1", "testlock2"]));
    assert_eq!(client.reset(), json!({"result": "reset_succeeded"}));
    assert_eq!(client.my_locks(), my_locks(&[]));
    assert_eq!(other.lock_with("testlock1", Some(0), None), acquired("testlock1"));
}

#[test]
fn locks_lists_every_lock_with_its_queue() {
    let server = TestServer::start();
    let mut client1 = RubyClient::connect(server.addr());
    let mut client2 = RubyClient::connect(server.addr());
    for name in ["client1_testlock1", "client1_testlock2"] {
        assert_eq!(client1.lock(name), acquired(name));
    }
    for name in ["client2_testlock1", "client2_testlock2"] {
        assert_eq!(client2.lock(name), acquired(name));
    }
    client2.send_lock("client1_testlock1", None, None);
    let (l1, l2) = (client1.label.clone(), client2.label.clone());
    let expected = json!({"result": "locks", "value": {
        "client1_testlock1": [l1, l2],
        "client1_testlock2": [l1],
        "client2_testlock1": [l2],
        "client2_testlock2": [l2],
    }});
    assert_eq!(client1.locks(), expected);
}

#[test]
fn connections_lists_those_taking_part_in_locking() {
    let server = TestServer::start();
    let mut client1 = RubyClient::connect(server.addr());
    let mut client2 = RubyClient::connect(server.addr());
    // Never locked anything: the original does not list it.
    let mut bystander = RubyClient::connect(server.addr());
    assert_eq!(bystander.my_locks(), my_locks(&[]));
    for name in ["client1_testlock1", "client1_testlock2"] {
        assert_eq!(client1.lock(name), acquired(name));
    }
    for name in ["client2_testlock1", "client2_testlock2"] {
        assert_eq!(client2.lock(name), acquired(name));
    }
    client1.send_lock("client2_testlock1", None, None); // awaited names are listed too
    let expected = json!({"result": "connections", "value": {
        client1.label.clone(): ["client1_testlock1", "client1_testlock2", "client2_testlock1"],
        client2.label.clone(): ["client2_testlock1", "client2_testlock2"],
    }});
    assert_eq!(client2.connections(), expected);
}

#[test]
fn my_locks_lists_held_then_awaited_names() {
    let server = TestServer::start();
    let mut a = RubyClient::connect(server.addr());
    let mut b = RubyClient::connect(server.addr());
    assert_eq!(a.lock("busy"), acquired("busy"));
    assert_eq!(b.lock("mine"), acquired("mine"));
    b.send_lock("busy", None, None);
    assert_eq!(b.my_locks(), my_locks(&["mine", "busy"]));
}

#[test]
fn keep_alive_has_no_reply_and_keeps_a_connection_past_max_idle() {
    let server = TestServer::start_with(|c| c.max_idle = Some(Duration::from_secs(1)));
    let mut a = RubyClient::connect(server.addr());
    assert_eq!(a.lock("k"), acquired("k"));
    a.keep_alive();
    assert_eq!(a.my_locks(), my_locks(&["k"]), "keep_alive sent nothing back");
    // Silent from after `a`'s last request on: once it is closed for idling, `a` would have
    // been closed first had its keep_alives not counted.
    let mut silent = RubyClient::connect(server.addr());
    assert_eq!(silent.lock("s"), acquired("s"));
    let started = Instant::now();
    // The silent client's close is the event we wait for (up to 200 ms at a time, sending a
    // keep_alive between waits). The ticks of the rule are the session's tests
    // (src/server/session/tests.rs).
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || closed_tx.send(silent.recv_to_eof()));
    let lines = loop {
        assert!(started.elapsed() < WAIT, "silent connection never closed");
        a.keep_alive();
        match closed_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(lines) => break lines,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(lines, Vec::<Value>::new(), "an idle close sends no line");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before max-idle");
    assert_eq!(a.my_locks(), my_locks(&["k"]), "the kept-alive client still holds its lock");
}

#[test]
fn disconnect_hands_the_lock_to_the_next_waiter() {
    let server = TestServer::start();
    let mut a = RubyClient::connect(server.addr());
    let mut b = RubyClient::connect(server.addr());
    assert_eq!(a.lock("d"), acquired("d"));
    b.send_lock("d", None, None);
    assert_eq!(b.my_locks(), my_locks(&["d"]));
    drop(a);
    assert_eq!(b.recv(), acquired("d"));
}

#[test]
fn bad_json_and_unknown_commands_get_one_error_line_and_the_connection_goes_on() {
    let server = TestServer::start();
    let mut a = RubyClient::connect(server.addr());
    let not_json = "{not json";
    let parse_error = serde_json::from_str::<Value>(not_json).unwrap_err();
    a.send_raw(format!("{not_json}\n").as_bytes());
    assert_eq!(a.recv(), error("malformed", &format!("invalid JSON: {parse_error}")));
    assert_eq!(a.call(json!({"command": "fly"})), error("malformed", "unknown command \"fly\""));
    assert_eq!(a.call(json!(["lock"])), error("malformed", "request must be a JSON object"));
    assert_eq!(a.call(json!({"name": "x"})), error("malformed", "missing \"command\""));
    assert_eq!(a.call(json!({"command": "lock"})), error("malformed", "missing string \"name\""));
    assert_eq!(a.call(json!({"command": "lock", "name": 7})), error("malformed", "missing string \"name\""));
    assert_eq!(
        a.call(json!({"command": "lock", "name": "x", "timeout": -1})),
        error("malformed", "\"timeout\" must be a non-negative number of seconds or null")
    );
    assert_eq!(
        a.call(json!({"command": "lock", "name": "x", "queue_max": "3"})),
        error("malformed", "\"queue_max\" must be a non-negative integer or null")
    );
    assert_eq!(a.my_locks(), my_locks(&[]), "no bad line took a lock");
    assert_eq!(a.lock("x"), acquired("x"));
}

#[test]
fn bad_names_are_bad_name_in_json_and_in_binary_mode() {
    let server = TestServer::start_with(|c| c.max_name = 8);
    let mut js = RubyClient::connect(server.addr());
    let mut bin = Raw::connect(server.addr());
    for name in ["", "bell\u{7}", "ninebytes"] {
        let message = validate_name(name.as_bytes(), 8, false).unwrap_err().to_string();
        assert_eq!(js.lock(name), error("bad_name", &message), "lock {name:?}");
        assert_eq!(js.unlock(name), error("bad_name", &message), "unlock {name:?}");
        let binary = bin.call(&Request::Lock(LockRequest { name, timeout_ms: None, queue_max: None }));
        assert_eq!(binary, Response::Error { code: ErrorCode::BadName, message }, "binary {name:?}");
    }
    assert_eq!(js.my_locks(), my_locks(&[]));
}

#[test]
fn limits_get_an_error_line_and_the_connection_goes_on() {
    let server = TestServer::start_with(|c| c.table.max_locks_per_conn = 1);
    let mut a = RubyClient::connect(server.addr());
    assert_eq!(a.lock("one"), acquired("one"));
    assert_eq!(a.lock("two"), error("limit_exceeded", "connection holds or awaits 1 locks, the limit is 1"));
    assert_eq!(a.unlock("one"), released("one"));
    assert_eq!(a.lock("two"), acquired("two"));
}

#[test]
fn json_and_binary_clients_share_one_table() {
    let server = TestServer::start();
    let mut bin = Raw::connect(server.addr());
    let mut js = RubyClient::connect(server.addr());
    let lock = |name| Request::Lock(LockRequest { name, timeout_ms: None, queue_max: None });
    assert!(matches!(bin.call(&lock("shared")), Response::Acquired { .. }));
    js.send_lock("shared", None, None);
    assert_eq!(js.my_locks(), my_locks(&["shared"]));
    let expected = json!({"result": "locks", "value": {"shared": [bin.label.clone(), js.label.clone()]}});
    assert_eq!(js.locks(), expected);
    assert_eq!(bin.call(&Request::Unlock("shared")), Response::Released);
    assert_eq!(js.recv(), acquired("shared"));
    match bin.call(&Request::Lock(LockRequest { name: "shared", timeout_ms: Some(0), queue_max: None })) {
        Response::TimedOut { queue } => assert_eq!(queue, vec![js.label.clone()]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn over_long_line_closes_the_connection_and_costs_no_one_else() {
    let server = TestServer::start_with(|c| c.max_frame = 1024);
    let mut a = RubyClient::connect(server.addr());
    let mut keeper = RubyClient::connect(server.addr());
    assert_eq!(keeper.lock("keep"), acquired("keep"));
    let mut line = b"{\"command\":\"lock\",\"name\":\"".to_vec();
    line.extend(std::iter::repeat_n(b'a', 4000));
    a.send_raw(&line);
    // One error line, unless the close (with input still unread) resets the connection first.
    let replies = a.recv_to_eof();
    assert!(replies.len() <= 1, "{replies:?}");
    for reply in replies {
        assert_eq!(
            (reply["result"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("bad_frame_length"))
        );
    }
    assert_eq!(keeper.my_locks(), my_locks(&["keep"]));
}

#[test]
fn shutdown_sends_one_error_line_then_closes() {
    let server = TestServer::start();
    let mut a = RubyClient::connect(server.addr());
    assert_eq!(a.lock("x"), acquired("x"));
    server.stop();
    assert_eq!(a.recv_to_eof(), vec![error("shutting_down", "server is shutting down")]);
}

// ---------------------------------------------------------------------------------------------
// Fencing tokens: only when asked for

#[test]
fn token_is_sent_only_when_the_lock_command_asks() {
    let server = TestServer::start();
    let mut a = RubyClient::connect(server.addr());
    let mut b = RubyClient::connect(server.addr());
    // A fresh server without a state file issues tokens from 1.
    assert_eq!(
        a.call(json!({"command": "lock", "name": "t", "token": true})),
        json!({"result": "acquired", "name": "t", "token": 1})
    );
    assert_eq!(a.lock("t"), already_acquired("t"), "not asked for: the original's keys only");
    assert_eq!(
        a.call(json!({"command": "lock", "name": "t", "token": true})),
        json!({"result": "already_acquired", "name": "t", "token": 1})
    );
    assert_eq!(a.call(json!({"command": "lock", "name": "u", "token": false})), acquired("u"));
    // A waiting lock that asked gets the token with its later grant.
    b.send(json!({"command": "lock", "name": "t", "token": true}));
    assert_eq!(b.my_locks(), my_locks(&["t"]));
    assert_eq!(a.unlock("t"), released("t"));
    assert_eq!(b.recv(), json!({"result": "acquired", "name": "t", "token": 3}));
    assert_eq!(b.call(json!({"command": "lock", "name": "v", "token": null})), acquired("v"));
    assert_eq!(
        b.call(json!({"command": "lock", "name": "v", "token": "yes"})),
        error("malformed", "\"token\" must be true, false or null")
    );
}

#[test]
fn json_tokens_flag_adds_the_token_to_every_grant() {
    let server = TestServer::start_with(|c| c.json_tokens = true);
    let mut a = RubyClient::connect(server.addr());
    assert_eq!(a.lock("t"), json!({"result": "acquired", "name": "t", "token": 1}));
    assert_eq!(a.lock("t"), json!({"result": "already_acquired", "name": "t", "token": 1}));
    assert_eq!(a.lock("u"), json!({"result": "acquired", "name": "u", "token": 2}));
    // Only grants carry it: every other reply keeps the original's keys.
    assert_eq!(a.unlock("t"), released("t"));
    assert_eq!(a.unlock("t"), release_failed("t"));
    assert_eq!(a.my_locks(), my_locks(&["u"]));
}

// ---------------------------------------------------------------------------------------------
// The compat listener next to an authenticated port

#[test]
fn compat_listener_serves_json_without_the_secret() {
    let server = CompatServer::with_secret();
    let mut a = RubyClient::connect(server.compat_tcp());
    let mut b = RubyClient::connect(server.compat_tcp());
    assert_eq!(a.lock("c"), acquired("c"));
    assert_eq!(b.lock_with("c", Some(0), None), timed_out("c", &[&a.label]));
    b.send_lock("c", None, None);
    assert_eq!(b.my_locks(), my_locks(&["c"]));
    assert_eq!(a.locks(), json!({"result": "locks", "value": {"c": [a.label.clone(), b.label.clone()]}}));
    assert_eq!(a.unlock("c"), released("c"));
    assert_eq!(b.recv(), acquired("c"));
    assert_eq!(b.reset(), json!({"result": "reset_succeeded"}));
}

#[test]
fn compat_listener_json_clients_are_not_closed_by_the_auth_deadline() {
    let server = CompatServer::start(|c| {
        c.auth_secret = Some(SECRET.to_vec());
        c.auth_timeout = Duration::from_millis(300);
        c.compat_listen = Some(Listen::Tcp("127.0.0.1:0".parse().unwrap()));
    });
    let mut a = RubyClient::connect(server.compat_tcp());
    assert_eq!(a.lock("long"), acquired("long"));
    // A binary client that does not authenticate is closed at the deadline: once it is,
    // the JSON client's deadline (had it one) has passed as well.
    let mut unauthenticated = Raw::connect(server.main_tcp());
    unauthenticated.responses_until_closed();
    assert_eq!(a.my_locks(), my_locks(&["long"]));
}

#[test]
fn json_client_on_the_authenticated_port_gets_one_error_line_then_the_close() {
    let server = CompatServer::with_secret();
    let mut holder = RubyClient::connect(server.compat_tcp());
    assert_eq!(holder.lock("x"), acquired("x"));
    let mut refused = RubyClient::connect(server.main_tcp());
    refused.send_lock("x", None, None);
    let message = "this port requires authentication, which the original JSON-lines protocol cannot give: \
                   connect to the server's --compat-listen address instead";
    assert_eq!(refused.recv_to_eof(), vec![error("auth_required", message)]);
    let expected = json!({"result": "locks", "value": {"x": [holder.label.clone()]}});
    assert_eq!(holder.locks(), expected, "the refused client never queued");
}

#[test]
fn binary_clients_still_need_auth_on_both_ports() {
    let server = CompatServer::with_secret();
    let lock = Request::Lock(LockRequest { name: "b", timeout_ms: None, queue_max: None });
    for addr in [server.main_tcp(), server.compat_tcp()] {
        let mut raw = Raw::connect(addr);
        match raw.call(&lock) {
            Response::Error { code, .. } => assert_eq!(code, ErrorCode::AuthRequired, "on {addr}"),
            other => panic!("unauthenticated LOCK on {addr}: {other:?}"),
        }
        assert_eq!(raw.call(&Request::Auth(SECRET)), Response::AuthOk);
        assert!(matches!(raw.call(&lock), Response::Acquired { .. }), "on {addr}");
        assert_eq!(raw.call(&Request::Unlock("b")), Response::Released);
    }
}

#[test]
fn without_a_compat_listener_the_refusal_says_so() {
    let server = TestServer::start_with(|c| c.auth_secret = Some(SECRET.to_vec()));
    let mut refused = RubyClient::connect(server.addr());
    refused.send_lock("x", None, None);
    let message = "this port requires authentication, which the original JSON-lines protocol cannot give, \
                   and the server has no --compat-listen address for such clients";
    assert_eq!(refused.recv_to_eof(), vec![error("auth_required", message)]);
}

#[test]
fn no_compat_refuses_json_with_one_error_line() {
    let server = TestServer::start_with(|c| c.compat = false);
    let mut refused = RubyClient::connect(server.addr());
    refused.send_lock("x", None, None);
    let message = "this server does not serve the original JSON-lines protocol (--no-compat)";
    assert_eq!(refused.recv_to_eof(), vec![error("bad_handshake", message)]);
    let mut bin = Raw::connect(server.addr());
    let lock = Request::Lock(LockRequest { name: "x", timeout_ms: Some(0), queue_max: None });
    assert!(matches!(bin.call(&lock), Response::Acquired { .. }), "the refused client took nothing");
}

#[test]
fn a_full_server_refuses_compat_clients_with_a_json_line() {
    let server = CompatServer::start(|c| {
        c.max_connections = 1;
        c.compat_listen = Some(Listen::Tcp("127.0.0.1:0".parse().unwrap()));
    });
    let mut first = RubyClient::connect(server.compat_tcp());
    assert_eq!(first.lock("only"), acquired("only"));
    let mut second = RubyClient::connect(server.compat_tcp());
    assert_eq!(second.recv_to_eof(), vec![error("limit_exceeded", "too many connections")]);
    assert_eq!(first.my_locks(), my_locks(&["only"]));
}

// ---------------------------------------------------------------------------------------------
// UNIX sockets: mode and group

fn egid() -> u32 {
    // SAFETY: getegid has no preconditions.
    unsafe { libc::getegid() }
}

fn socket_mode(path: &Path) -> u32 {
    let meta = std::fs::symlink_metadata(path).expect("stat socket");
    assert!(meta.file_type().is_socket(), "{} is a socket", path.display());
    meta.permissions().mode() & 0o7777
}

#[test]
fn compat_listener_on_a_unix_socket_gets_the_mode_and_group_and_goes_on_shutdown() {
    let dir = support::temp_dir();
    let main_path = dir.path().join("main.sock");
    let compat_path = dir.path().join("compat.sock");
    let server = CompatServer::start(|c| {
        c.listen = Listen::Unix(main_path.clone());
        c.auth_secret = Some(SECRET.to_vec());
        c.compat_listen = Some(Listen::Unix(compat_path.clone()));
        c.socket_perms = SocketPerms { mode: Some(0o660), group: Some(egid()) };
    });
    assert_eq!(server.compat, Some(BoundAddr::Unix(compat_path.clone())));
    for path in [&main_path, &compat_path] {
        assert_eq!(socket_mode(path), 0o660, "{}", path.display());
        assert_eq!(std::fs::symlink_metadata(path).unwrap().gid(), egid());
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "no temporary socket left behind: {leftovers:?}");
    let mut a = RubyClient::connect_unix(&compat_path);
    assert_eq!(a.lock("u"), acquired("u"));
    let locks = a.locks();
    let label = locks["value"]["u"][0].as_str().expect("a label").to_owned();
    assert!(label.starts_with("unix:"), "{locks}");
    server.stop();
    assert!(!compat_path.exists() && !main_path.exists(), "socket files removed on shutdown");
}

#[test]
fn socket_mode_without_group_and_a_failing_group() {
    let dir = support::temp_dir();
    let path = dir.path().join("o.sock");
    let server = CompatServer::start(|c| {
        c.listen = Listen::Unix(path.clone());
        c.socket_perms = SocketPerms { mode: Some(0o600), group: None };
    });
    assert_eq!(socket_mode(&path), 0o600);
    server.stop();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Not a member of group 0: the bind fails and names the socket; nothing is left behind.
        let config = Config {
            listen: Listen::Unix(path.clone()),
            socket_perms: SocketPerms { mode: None, group: Some(0) },
            ..Config::default()
        };
        let err = Server::bind(config).err().expect("chown to a foreign group fails").to_string();
        assert!(err.contains("o.sock") && err.contains("group 0"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

#[test]
fn socket_mode_works_for_a_path_near_the_length_limit() {
    // 101 bytes: a UNIX socket path may have 107, so this binds without --socket-mode, and
    // must with it (the temporary name it is bound at first used to add 17 bytes).
    let dir = support::temp_dir();
    let used = dir.path().as_os_str().len() + "/".len() + "/officer.sock".len();
    let sub = dir.path().join("d".repeat(101 - used));
    std::fs::create_dir(&sub).unwrap();
    let path = sub.join("officer.sock");
    assert_eq!(path.as_os_str().len(), 101);
    let server = CompatServer::start(|c| {
        c.listen = Listen::Unix(path.clone());
        c.socket_perms = SocketPerms { mode: Some(0o600), group: None };
    });
    assert_eq!(socket_mode(&path), 0o600);
    let mut a = RubyClient::connect_unix(&path);
    assert_eq!(a.lock("near-the-limit"), acquired("near-the-limit"));
    server.stop();
    assert_eq!(std::fs::read_dir(&sub).unwrap().count(), 0, "socket and temporary name removed");
}

// ---------------------------------------------------------------------------------------------
// The flags of `officer run`, over the real binary

/// `officer run ARGS` with its own state file; returns the child and its stdout lines reader.
fn spawn_run(args: &[&str]) -> (Child, BufReader<std::process::ChildStdout>, tempfile::TempDir) {
    let dir = support::temp_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_officer"))
        .arg("run")
        .args(args)
        .arg("--state-file")
        .arg(dir.path().join("officer.state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn officer");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdout, dir)
}

fn line_after(stdout: &mut BufReader<std::process::ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read stdout");
    line.trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?}"))
        .to_owned()
}

fn terminate(child: Child) -> String {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "exit {:?}", out.status);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_with_auth_file_and_compat_listen() {
    let secret_dir = support::temp_dir();
    let secret = secret_dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let secret = secret.to_str().unwrap();
    let args = ["-h", "127.0.0.1", "-p", "0", "--auth-file", secret, "--compat-listen", "127.0.0.1:0"];
    let (child, mut stdout, _dir) = spawn_run(&args);
    let main: SocketAddr = line_after(&mut stdout, "officer listening on ").parse().unwrap();
    let compat: SocketAddr = line_after(&mut stdout, "officer compat listener on ").parse().unwrap();
    let mut js = RubyClient::connect(compat);
    assert_eq!(js.lock("cli"), acquired("cli"));
    let mut refused = RubyClient::connect(main);
    refused.send_lock("cli", None, None);
    let lines = refused.recv_to_eof();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        (lines[0]["result"].as_str(), lines[0]["code"].as_str()),
        (Some("error"), Some("auth_required"))
    );
    drop((js, refused));
    let stderr = terminate(child);
    assert!(!stderr.contains("WARNING"), "loopback needs no warning: {stderr}");
}

#[test]
fn run_on_a_unix_socket_with_socket_mode_and_group() {
    let dir = support::temp_dir();
    let path = dir.path().join("officer.sock");
    let gid = egid().to_string();
    let args = ["-o", "UNIX", "-f", path.to_str().unwrap(), "--socket-mode", "0660", "--socket-group", &gid];
    let (child, mut stdout, _state) = spawn_run(&args);
    assert_eq!(line_after(&mut stdout, "officer listening on "), format!("unix:{}", path.display()));
    assert_eq!(socket_mode(&path), 0o660);
    assert_eq!(std::fs::symlink_metadata(&path).unwrap().gid(), egid());
    let mut js = RubyClient::connect_unix(&path);
    assert_eq!(js.lock("local"), acquired("local"));
    drop(js);
    terminate(child);
    assert!(!path.exists(), "socket removed on clean exit");
}

#[test]
fn run_warns_when_the_compat_listener_is_not_on_loopback() {
    // The lock port is taken, so the server stops before it binds anything: the warning is
    // printed while reading the flags, and nothing but loopback is ever bound by this test.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = support::temp_dir();
    let state = dir.path().join("officer.state");
    let out = Command::new(env!("CARGO_BIN_EXE_officer"))
        .args(["run", "-h", "127.0.0.1", "-p", &port, "--compat-listen", "0.0.0.0:0", "--state-file"])
        .arg(&state)
        .output()
        .expect("run officer");
    assert!(!out.status.success(), "the lock port was taken");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("WARNING: the compat listener on 0.0.0.0:0 serves JSON clients without authentication"),
        "{stderr}"
    );
}

#[test]
fn the_exposure_warnings_are_printed_once_at_any_log_level() {
    // At -l warn the log goes to stderr as well: the warning must not appear twice there (or
    // in the journal, with the shipped unit's --log-level warn).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = support::temp_dir();
    for level in ["error", "warn", "debug"] {
        let out = Command::new(env!("CARGO_BIN_EXE_officer"))
            .args(["run", "-h", "127.0.0.1", "-p", &port, "--compat-listen", "0.0.0.0:0", "-l", level])
            .arg("--state-file")
            .arg(dir.path().join("officer.state"))
            .output()
            .expect("run officer");
        assert!(!out.status.success(), "the lock port was taken");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let times = stderr.matches("WARNING: the compat listener on 0.0.0.0:0").count();
        assert_eq!(times, 1, "-l {level}: {stderr}");
    }
}

#[test]
fn run_refuses_bad_socket_flags_and_compat_listen_with_no_compat() {
    let cases: [&[&str]; 3] = [
        &["--socket-mode", "0999"],
        &["--socket-group", "no-such-group-officer-test"],
        &["--no-compat", "--compat-listen", "127.0.0.1:0"],
    ];
    for args in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_officer"))
            .arg("run")
            .args(["-h", "127.0.0.1", "-p", "0"])
            .args(args)
            .output()
            .expect("run officer");
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(args[0]), "{args:?}: the message names the flag: {stderr}");
    }
}

#[test]
fn a_compat_listener_that_cannot_bind_is_named_and_nothing_is_left() {
    let dir = support::temp_dir();
    let main_path = dir.path().join("main.sock");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let config = Config {
        listen: Listen::Unix(main_path.clone()),
        compat_listen: Some(Listen::Tcp(taken_addr)),
        ..Config::default()
    };
    let err = Server::bind(config).err().expect("the compat port is taken").to_string();
    assert!(err.contains(&format!("cannot listen on {taken_addr} (compat port)")), "{err}");
    assert!(!main_path.exists(), "the main socket bound before the failure is removed");
}
