//! What the server shows of detached sessions (issue 14: "`connections` and `/metrics` show
//! detached sessions and their remaining grace") over real sockets: SESSIONS lists each one
//! with its id, the label it had, holds, waits, kept frames and the grace left, soonest end
//! first, bounded by `max` and by the frame (`truncated`); the blocking client and
//! `officer connections --sessions` (table and JSON) show the same; `/metrics` has the gauge of
//! detached sessions and the smallest grace left, without per-session labels.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use officer::client::Client;
use officer::protocol::{DetachedSession, ListRequest, Request, Response, SessionOk, SessionOpen};
use support::frames::{lock_req, token_of};
use support::process::wait_until;
use support::raw::{stat, Raw};
use support::server::TestServer;
use support::WAIT;

const MAX_GRACE_MS: u32 = 60_000;

fn server(configure: impl FnOnce(&mut officer::server::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.max_session_grace = Duration::from_millis(u64::from(MAX_GRACE_MS));
        configure(c);
    })
}

fn open(addr: SocketAddr, grace_ms: u32) -> (Raw, SessionOk) {
    let mut wire = Raw::connect(addr);
    match wire.call(&Request::SessionOpen(SessionOpen { grace_ms, skip_while_detached: false })) {
        Response::SessionOk(ok) if ok.is_open() => (wire, ok),
        other => panic!("expected an open SESSION_OK, got {other:?}"),
    }
}

/// This connection's label, as CONNECTIONS lists it (found by the one lock it holds).
fn label_of(observer: &mut Raw, held: &str) -> String {
    match observer.call(&Request::Connections(ListRequest { prefix: "", max: 0 })) {
        Response::Connections { connections, .. } => {
            connections.into_iter().find(|c| c.held == [held]).expect("listed").label
        }
        other => panic!("expected CONNECTIONS_LIST, got {other:?}"),
    }
}

fn sessions(observer: &mut Raw, max: u32) -> (Vec<DetachedSession>, bool) {
    match observer.call(&Request::Sessions(max)) {
        Response::Sessions { sessions, truncated } => (sessions, truncated),
        other => panic!("expected SESSIONS_LIST, got {other:?}"),
    }
}

#[test]
fn sessions_lists_each_detached_session_with_its_grace_left_soonest_first() {
    let server = server(|_| {});
    let mut observer = Raw::connect(server.addr());
    assert_eq!(sessions(&mut observer, 0), (vec![], false), "none detached");
    // `long`: 50 s, holds two names and waits for a third; `short`: 20 s, holds one.
    let (mut long, long_ok) = open(server.addr(), 50_000);
    token_of(&long.call(&lock_req("list/a")));
    token_of(&long.call(&lock_req("list/b")));
    token_of(&observer.call(&lock_req("list/busy")));
    long.send(&lock_req("list/busy"));
    let (mut short, short_ok) = open(server.addr(), 20_000);
    token_of(&short.call(&lock_req("list/c")));
    let short_label = label_of(&mut observer, "list/c");
    wait_until("the wait queues", WAIT, || stat(&mut observer, "waiters") == 1);
    let long_label = match observer.call(&Request::Connections(ListRequest { prefix: "", max: 0 })) {
        Response::Connections { connections, .. } => {
            connections.into_iter().find(|c| c.waiting == ["list/busy"]).expect("listed").label
        }
        other => panic!("expected CONNECTIONS_LIST, got {other:?}"),
    };
    // Attached sessions are not listed: they are connections.
    assert_eq!(sessions(&mut observer, 0), (vec![], false));
    drop(long);
    drop(short);
    wait_until("both detach", WAIT, || stat(&mut observer, "sessions_detached") == 2);
    // The wait's turn comes while detached: granted, kept for the replay.
    assert_eq!(observer.call(&Request::Unlock("list/busy")), Response::Released);
    wait_until("the grant is kept", WAIT, || stat(&mut observer, "waiters") == 0);
    let (listed, truncated) = sessions(&mut observer, 0);
    assert!(!truncated);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let (first, second) = (&listed[0], &listed[1]);
    assert_eq!((first.session_id, first.label.as_str()), (short_ok.session_id, short_label.as_str()));
    assert_eq!((first.held, first.waiting, first.kept), (1, 0, 0));
    assert_eq!((second.session_id, second.label.as_str()), (long_ok.session_id, long_label.as_str()));
    assert_eq!((second.held, second.waiting, second.kept), (3, 0, 1), "the grant made while detached");
    // Remaining grace: positive, at most the grace (and its tick of slack), and the soonest is
    // what STATS reports.
    assert!(first.grace_left_ms > 0 && first.grace_left_ms <= 20_001, "{first:?}");
    assert!(second.grace_left_ms > first.grace_left_ms && second.grace_left_ms <= 50_001, "{second:?}");
    let soonest = stat(&mut observer, "session_grace_left_min_ms");
    assert!(soonest <= u64::from(first.grace_left_ms) && soonest > 0, "{soonest} {first:?}");
    // `max` bounds it, soonest first, and says so.
    let (one, truncated) = sessions(&mut observer, 1);
    assert!(truncated);
    assert_eq!(one.iter().map(|s| s.session_id).collect::<Vec<_>>(), [short_ok.session_id]);
    // A resumed session leaves the listing.
    let mut back = Raw::connect(server.addr());
    let resume =
        officer::protocol::SessionResume { session_id: short_ok.session_id, secret: short_ok.secret };
    assert!(matches!(back.call(&Request::SessionResume(resume)), Response::Resumed(_)));
    let (left, _) = sessions(&mut observer, 0);
    assert_eq!(left.iter().map(|s| s.session_id).collect::<Vec<_>>(), [long_ok.session_id]);
}

/// Many detached sessions with long labels under a small frame: the list is cut at an entry
/// boundary within the frame and says `truncated`; every entry that came is whole.
#[test]
fn sessions_are_cut_to_the_frame_and_say_truncated() {
    // STATS, which the test reads, fits 4096 bytes; 150 entries of about 40 bytes do not.
    let server = server(|c| c.max_frame = 4096);
    let mut observer = Raw::connect(server.addr());
    let mut wires = Vec::new();
    for i in 0..150 {
        let (mut wire, _) = open(server.addr(), 30_000);
        token_of(&wire.call(&lock_req(&format!("cut/{i}"))));
        wires.push(wire);
    }
    drop(wires);
    wait_until("all detach", WAIT, || stat(&mut observer, "sessions_detached") == 150);
    let (listed, truncated) = sessions(&mut observer, 0);
    assert!(truncated, "150 entries of 40+ bytes cannot fit 4096");
    assert!(listed.len() > 50 && listed.len() < 150, "{}", listed.len());
    // Entry: str16 label + 24; 10 header bytes: the whole frame stayed under its limit.
    let size: usize = listed.iter().map(|s| 2 + s.label.len() + 24).sum::<usize>() + 5 + 5;
    assert!(size <= 4096 && size + 2 + 15 + 24 > 4096, "{size}: cut at the last entry that fits");
    assert!(listed.windows(2).all(|w| w[0].grace_left_ms <= w[1].grace_left_ms));
    assert!(listed.iter().all(|s| s.held == 1 && s.waiting == 0));
}

/// SESSIONS needs AUTH like any listing when the server requires it; not admin rights.
#[test]
fn sessions_needs_auth_when_the_server_requires_it() {
    let server = server(|c| c.auth_secret = Some(b"s3cret".to_vec()));
    let mut wire = Raw::connect(server.addr());
    assert!(matches!(
        wire.call(&Request::Sessions(0)),
        Response::Error { code: officer::protocol::ErrorCode::AuthRequired, .. }
    ));
    assert_eq!(wire.call(&Request::Auth(b"s3cret")), Response::AuthOk);
    assert_eq!(sessions(&mut wire, 0), (vec![], false));
}

fn officer_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_officer"))
        .env_remove("OFFICER_ADDR")
        .env_remove("OFFICER_HOST")
        .env_remove("OFFICER_PORT")
        .arg("connections")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run officer");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n").expect("HTTP response").1.to_owned()
}

fn series(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {name} in\n{body}"))
        .parse()
        .expect("a number")
}

/// The client method, the command line (table and JSON) and /metrics agree.
#[test]
fn the_client_the_cli_and_metrics_show_the_detached_session() {
    let server = server(|c| c.metrics_addr = Some("127.0.0.1:0".parse().unwrap()));
    let port = server.addr().port();
    let client = Client::connect("127.0.0.1", port).expect("connect");
    assert!(client.detached_sessions(0).expect("sessions").is_empty());
    assert_eq!(officer_cli(port, &["--sessions"]), "no detached sessions\n");
    let body = scrape(server.metrics_addr());
    assert_eq!(series(&body, "officer_sessions_detached"), 0.0);
    assert_eq!(series(&body, "officer_session_grace_left_min_milliseconds"), 0.0);
    let (mut wire, ok) = open(server.addr(), 40_000);
    token_of(&wire.call(&lock_req("cli/held")));
    drop(wire);
    wait_until("it detaches", WAIT, || client.stats().expect("stats").get("sessions_detached") == Some(1));
    let listing = client.detached_sessions(0).expect("sessions");
    assert_eq!(listing.len(), 1);
    assert!(!listing.truncated);
    let s = &listing[0];
    assert_eq!((s.session_id, s.held, s.waiting, s.kept), (ok.session_id, 1, 0, 0));
    let table = officer_cli(port, &["--sessions"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("SESSION") && lines[0].contains("GRACE LEFT"), "{table}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..5], [ok.session_id.to_string().as_str(), &s.label, "1", "0", "0"], "{table}");
    assert!(row[5].parse::<f64>().is_ok_and(|secs| secs > 0.0 && secs <= 40.001), "{table}");
    let doc: serde_json::Value =
        serde_json::from_str(&officer_cli(port, &["--sessions", "--json"])).expect("JSON");
    assert_eq!(doc["truncated"], false);
    assert_eq!(doc["sessions"][0]["session_id"], ok.session_id);
    assert_eq!(doc["sessions"][0]["label"], s.label.as_str());
    assert_eq!(doc["sessions"][0]["held"], 1);
    let left = doc["sessions"][0]["grace_left_ms"].as_u64().expect("grace_left_ms");
    assert!(left > 0 && left <= 40_001, "{doc}");
    // A prefix that matches no label leaves it out.
    assert_eq!(officer_cli(port, &["--sessions", "nowhere:"]), "no detached sessions\n");
    let body = scrape(server.metrics_addr());
    assert_eq!(series(&body, "officer_sessions_detached"), 1.0);
    let min = series(&body, "officer_session_grace_left_min_milliseconds");
    assert!(min > 0.0 && min <= 40_001.0, "{min}");
    assert!(!body.contains(&s.label), "no per-session labels in /metrics");
}
