//! Operations: the real binary as an operator or a service manager drives it. Background mode
//! (`start` / `status` / `stop` / `restart` around a pid file), systemd notifications without
//! systemd (a datagram socket of our own as NOTIFY_SOCKET), SIGTERM with clients connected,
//! and the start-up checks on authentication and exposure.
//!
//! Every server listens on 127.0.0.1 (or a UNIX socket in a temp dir), keeps its state file
//! in a temp dir, and is stopped by a guard even when the test fails. Waits are event-driven
//! with the 20 s bound of `support::WAIT`; nothing sleeps for start-up.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use officer::client::{Client, ClientBuilder, LockOptions};
use officer::protocol::{Hello, LockRequest, Request, Response, PROTOCOL_VERSION, SHUTDOWN_REQUEST_ID};
use support::ops::{officer, parse_started, process_gone, read_pid, DaemonGuard, Foreground};
use support::process::{signal, wait_until};
use support::raw::Raw;
use support::WAIT;

fn path_str(path: &Path) -> String {
    path.to_str().expect("temp paths are UTF-8").to_owned()
}

/// `officer start` on 127.0.0.1:0 with every file in `dir`.
fn start_args(dir: &Path, state: &str) -> Vec<String> {
    let d = path_str(dir);
    let state = path_str(&dir.join(state));
    ["start", "-h", "127.0.0.1", "-p", "0", "-d", &d, "--log-dir", &d, "--state-file", &state, "-m", "5"]
        .map(str::to_owned)
        .to_vec()
}

fn run_officer(args: &[String]) -> support::ops::Outcome {
    officer(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Starts a background server and returns its pid and address.
fn start_ok(args: &[String], guard: &mut DaemonGuard) -> (u32, SocketAddr) {
    let out = run_officer(args);
    if let Some((pid, _)) = parse_started(&out.stdout) {
        guard.track(pid);
    }
    assert_eq!(out.code(), Some(0), "officer start failed: {}", out.both());
    let (pid, addr) = parse_started(&out.stdout).unwrap_or_else(|| panic!("no start line: {}", out.both()));
    (pid, addr.parse().unwrap_or_else(|_| panic!("not a TCP address: {addr}")))
}

/// A fresh library client takes a lock and returns its fencing token.
fn lock_once(addr: SocketAddr, name: &str) -> u64 {
    let client = Client::connect(&addr.ip().to_string(), addr.port()).expect("client connects");
    let token = client.try_lock(name).expect("lock is free").token();
    client.unlock(name).expect("unlock");
    token
}

#[test]
fn start_status_stop_round_trip() {
    let dir = support::temp_dir();
    let d = path_str(dir.path());
    let mut guard = DaemonGuard::new(dir.path(), "officer");
    let (pid, addr) = start_ok(&start_args(dir.path(), "s"), &mut guard);
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    let pid_file = dir.path().join("officer.pid");
    assert_eq!(read_pid(&pid_file), Some(pid), "the pid file names the server");
    assert!(!process_gone(pid), "the server runs");
    assert!(dir.path().join("officer.output").exists(), "output file in --log-dir");

    let status = officer(&["status", "-d", &d]);
    assert_eq!(status.code(), Some(0), "{}", status.both());
    assert!(status.stdout.contains("running"), "{}", status.both());
    assert!(status.stdout.contains(&addr.to_string()), "status names the address: {}", status.both());

    assert!(lock_once(addr, "ops:round-trip") > 0);

    // The pid file's lock refuses a second server before it binds anything.
    let second = run_officer(&start_args(dir.path(), "s2"));
    if let Some((p, _)) = parse_started(&second.stdout) {
        guard.track(p);
    }
    assert_ne!(second.code(), Some(0), "a second start must fail: {}", second.both());
    assert!(second.stderr.contains("already running"), "{}", second.both());
    assert!(second.stderr.contains(&pid.to_string()), "the message names the running pid: {}", second.both());
    assert_eq!(read_pid(&pid_file), Some(pid), "the refused start left the pid file alone");
    assert!(lock_once(addr, "ops:round-trip") > 0, "the first server still serves");

    let stop = officer(&["stop", "-d", &d]);
    assert_eq!(stop.code(), Some(0), "{}", stop.both());
    wait_until("the server process to go", WAIT, || process_gone(pid));
    assert!(!pid_file.exists(), "stop removes the pid file");
    assert!(!dir.path().join("officer.addr").exists(), "stop removes the address file");

    let status = officer(&["status", "-d", &d]);
    assert_eq!(status.code(), Some(3), "stopped is exit 3: {}", status.both());
    assert!(status.stdout.contains("not running"), "{}", status.both());

    let again = officer(&["stop", "-d", &d]);
    assert_eq!(again.code(), Some(0), "stopping a stopped server is fine: {}", again.both());
}

#[test]
fn restart_with_original_double_dash_form() {
    let dir = support::temp_dir();
    let d = path_str(dir.path());
    let state = path_str(&dir.path().join("s"));
    let mut guard = DaemonGuard::new(dir.path(), "officer");
    // The original's form: server flags after `--`.
    let restart: Vec<String> =
        ["restart", "-d", &d, "--", "-h", "127.0.0.1", "-p", "0", "--log-dir", &d, "--state-file", &state]
            .map(str::to_owned)
            .to_vec();

    // Nothing runs yet: restart just starts.
    let (first_pid, first_addr) = start_ok(&restart, &mut guard);
    let first_token = lock_once(first_addr, "ops:restart");

    let (second_pid, second_addr) = start_ok(&restart, &mut guard);
    assert_ne!(first_pid, second_pid, "restart runs a new process");
    wait_until("the first server to go", WAIT, || process_gone(first_pid));
    assert!(!process_gone(second_pid));
    assert_eq!(read_pid(&dir.path().join("officer.pid")), Some(second_pid));

    let status = officer(&["status", "-d", &d]);
    assert_eq!(status.code(), Some(0), "{}", status.both());
    assert!(status.stdout.contains(&second_addr.to_string()), "{}", status.both());
    let second_token = lock_once(second_addr, "ops:restart");
    assert!(
        second_token > first_token,
        "fencing tokens grow across a restart: {first_token} then {second_token}"
    );

    let stop = officer(&["stop", "-d", &d]);
    assert_eq!(stop.code(), Some(0), "{}", stop.both());
    wait_until("the second server to go", WAIT, || process_gone(second_pid));
}

#[test]
fn named_servers_keep_separate_files() {
    let dir = support::temp_dir();
    let d = path_str(dir.path());
    let mut main_guard = DaemonGuard::new(dir.path(), "officer");
    let mut other_guard = DaemonGuard::new(dir.path(), "other");
    let (main_pid, main_addr) = start_ok(&start_args(dir.path(), "s-main"), &mut main_guard);
    let mut other_args = start_args(dir.path(), "s-other");
    other_args.extend(["--name".to_owned(), "other".to_owned()]);
    let (other_pid, other_addr) = start_ok(&other_args, &mut other_guard);
    assert_ne!(main_pid, other_pid);
    assert_ne!(main_addr, other_addr);

    for name in ["officer", "other"] {
        for ext in ["pid", "addr", "output"] {
            assert!(dir.path().join(format!("{name}.{ext}")).exists(), "{name}.{ext} exists");
        }
    }
    assert_eq!(read_pid(&dir.path().join("other.pid")), Some(other_pid));
    assert_eq!(read_pid(&dir.path().join("officer.pid")), Some(main_pid));

    let status = officer(&["status", "-d", &d, "--name", "other"]);
    assert_eq!(status.code(), Some(0), "{}", status.both());
    assert!(status.stdout.contains(&other_addr.to_string()), "{}", status.both());
    assert!(lock_once(other_addr, "ops:named") > 0);

    // Restarting `other` leaves the default-named server alone.
    let mut restart = other_args.clone();
    restart[0] = "restart".to_owned();
    let (new_other_pid, other_addr) = start_ok(&restart, &mut other_guard);
    wait_until("the first `other` to go", WAIT, || process_gone(other_pid));
    let other_pid = new_other_pid;
    assert_eq!(read_pid(&dir.path().join("other.pid")), Some(other_pid));
    assert_eq!(read_pid(&dir.path().join("officer.pid")), Some(main_pid));
    assert!(!process_gone(main_pid));
    assert!(lock_once(other_addr, "ops:named") > 0);

    let stop = officer(&["stop", "-d", &d, "--name", "other"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.both());
    wait_until("the other server to go", WAIT, || process_gone(other_pid));
    assert!(!dir.path().join("other.pid").exists());
    assert_eq!(officer(&["status", "-d", &d, "--name", "other"]).code(), Some(3));

    // The default-named server did not notice.
    assert!(!process_gone(main_pid));
    assert_eq!(officer(&["status", "-d", &d]).code(), Some(0));
    assert!(lock_once(main_addr, "ops:named") > 0);
    assert_eq!(officer(&["stop", "-d", &d]).code(), Some(0));
    wait_until("the main server to go", WAIT, || process_gone(main_pid));
}

#[test]
fn stop_kills_a_server_that_ignores_sigterm() {
    let dir = support::temp_dir();
    let d = path_str(dir.path());
    let mut guard = DaemonGuard::new(dir.path(), "officer");
    let (pid, _) = start_ok(&start_args(dir.path(), "s"), &mut guard);
    // A stopped process cannot act on SIGTERM; SIGKILL still ends it.
    signal(pid, libc::SIGSTOP);
    let stop = officer(&["stop", "-d", &d, "--timeout", "1"]);
    assert_eq!(stop.code(), Some(0), "{}", stop.both());
    assert!(stop.stderr.contains("SIGKILL"), "stop says it escalated: {}", stop.both());
    wait_until("the server process to go", WAIT, || process_gone(pid));
    assert!(!dir.path().join("officer.pid").exists(), "stop removes the pid file the server could not");
    assert_eq!(officer(&["status", "-d", &d]).code(), Some(3));
}

#[test]
fn start_reports_a_port_it_cannot_listen_on() {
    let dir = support::temp_dir();
    let mut guard = DaemonGuard::new(dir.path(), "officer");
    let occupied = TcpListener::bind("127.0.0.1:0").expect("bind a port to occupy");
    let port = occupied.local_addr().unwrap().port().to_string();
    let mut args = start_args(dir.path(), "s");
    args[4] = port.clone();
    let out = run_officer(&args);
    if let Some((pid, _)) = parse_started(&out.stdout) {
        guard.track(pid);
    }
    assert_ne!(out.code(), Some(0), "start on an occupied port must fail: {}", out.both());
    assert!(out.stderr.contains("cannot listen"), "{}", out.both());
    let named = format!("cannot listen on 127.0.0.1:{port} (lock port)");
    assert_eq!(out.stderr.matches(&named).count(), 1, "named once: {}", out.both());
    let status = officer(&["status", "-d", &path_str(dir.path())]);
    assert_ne!(status.code(), Some(0), "nothing runs: {}", status.both());
    drop(occupied);
}

/// The original's daemons-gem forms: every command takes the app's flags after `--`, and with
/// `-d DIR` the output file sits next to the pid file, so two servers never share one.
#[test]
fn daemon_commands_take_the_app_flags_after_double_dash_and_keep_output_by_the_pid_file() {
    let dirs = [support::temp_dir(), support::temp_dir()];
    let mut guards: Vec<DaemonGuard> = dirs.iter().map(|d| DaemonGuard::new(d.path(), "officer")).collect();
    let mut servers = Vec::new();
    for (dir, guard) in dirs.iter().zip(guards.iter_mut()) {
        let (d, state) = (path_str(dir.path()), path_str(&dir.path().join("s")));
        // No --log-dir: the output file must follow -d (as root too, where the old default
        // was /var/log/officer.output for every server).
        let start: Vec<String> =
            ["start", "--", "-h", "127.0.0.1", "-p", "0", "-d", &d, "--state-file", &state]
                .map(str::to_owned)
                .to_vec();
        servers.push(start_ok(&start, guard));
    }
    for (dir, (pid, addr)) in dirs.iter().zip(&servers) {
        let d = path_str(dir.path());
        let output = dir.path().join("officer.output");
        let text = std::fs::read_to_string(&output).unwrap_or_else(|e| panic!("{}: {e}", output.display()));
        assert!(text.contains(&format!("officer listening on {addr}")), "{}: {text}", output.display());
        let other = servers.iter().find(|(p, _)| p != pid).map(|(_, a)| a.to_string()).unwrap();
        assert!(!text.contains(&other), "one server's output holds another's: {text}");

        for status_args in [
            &["status", "--", "-d", &d][..],
            &["status", "--", "-h", "127.0.0.1", "-p", "0", "-d", &d, "-l", "debug"],
        ] {
            let status = officer(status_args);
            assert_eq!(status.code(), Some(0), "{status_args:?}: {}", status.both());
            assert!(status.stdout.contains(&addr.to_string()), "{}", status.both());
        }
        let stop = officer(&["stop", "--", "-h", "127.0.0.1", "-p", "0", "-d", &d, "--timeout", "10"]);
        assert_eq!(stop.code(), Some(0), "{}", stop.both());
        wait_until("the server process to go", WAIT, || process_gone(*pid));
        let status = officer(&["status", "--", "-d", &d]);
        assert_eq!(status.code(), Some(3), "{}", status.both());
    }
    // An unknown flag after `--` is still a usage error, not silently ignored.
    let bad = officer(&["stop", "--", "-d", &path_str(dirs[0].path()), "--no-such-flag"]);
    assert_eq!(bad.code(), Some(64), "{}", bad.both());
}

/// A taken port is named with its address and listener, once.
#[test]
fn bind_failures_name_the_address_and_the_listener_once() {
    let dir = support::temp_dir();
    let state = path_str(&dir.path().join("s"));
    let occupied = TcpListener::bind("127.0.0.1:0").expect("bind a port to occupy");
    let taken = occupied.local_addr().unwrap().to_string();
    let port = occupied.local_addr().unwrap().port().to_string();
    let cases: [(&[&str], &str); 2] = [
        (&["-h", "127.0.0.1", "-p", &port, "--state-file", &state], "lock port"),
        (&["-h", "127.0.0.1", "-p", "0", "--state-file", &state, "--metrics-addr", &taken], "metrics port"),
    ];
    for (args, listener) in cases {
        let mut server = Foreground::spawn(args, &[]);
        assert_eq!(server.wait_exit().code(), Some(1), "{args:?}");
        let stderr = server.stderr().to_owned();
        let want = format!("cannot listen on {taken} ({listener})");
        assert_eq!(stderr.matches(&want).count(), 1, "once, with address and listener: {stderr}");
        assert_eq!(stderr.matches("in use").count(), 1, "the reason once: {stderr}");
    }
    drop(occupied);
}

#[test]
fn failed_start_leaves_no_pid_file() {
    let dir = support::temp_dir();
    let mut guard = DaemonGuard::new(dir.path(), "officer");
    let occupied = TcpListener::bind("127.0.0.1:0").expect("bind a port to occupy");
    let mut args = start_args(dir.path(), "s");
    args[4] = occupied.local_addr().unwrap().port().to_string();
    let out = run_officer(&args);
    if let Some((pid, _)) = parse_started(&out.stdout) {
        guard.track(pid);
    }
    assert_ne!(out.code(), Some(0), "{}", out.both());
    assert!(!dir.path().join("officer.pid").exists(), "a server that never ran leaves no pid file");
    let status = officer(&["status", "-d", &path_str(dir.path())]);
    assert_eq!(status.code(), Some(3), "{}", status.both());
}

// ---------------------------------------------------------------------------------------------
// systemd notifications

/// A datagram socket standing in for systemd's notification socket.
struct NotifySocket {
    socket: UnixDatagram,
    path: String,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = support::temp_dir();
        let path = path_str(&dir.path().join("notify"));
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket { socket, path, _dir: dir }
    }

    /// The next message's assignments (`READY=1`, ...), or `None` after `limit`.
    fn recv(&self, limit: Duration) -> Option<Vec<String>> {
        self.socket.set_read_timeout(Some(limit.max(Duration::from_millis(1)))).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        Some(text.lines().map(str::to_owned).collect())
    }

    /// Reads messages until one carries `want`; returns those seen before it.
    fn expect(&self, want: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self.recv(left).unwrap_or_else(|| panic!("no {want} within {WAIT:?}; saw {before:?}"));
            if msg.iter().any(|m| m == want) {
                return before;
            }
            before.extend(msg);
        }
    }
}

fn run_args(state_dir: &Path) -> Vec<String> {
    let state = path_str(&state_dir.join("s"));
    ["-h", "127.0.0.1", "-p", "0", "--state-file", &state].map(str::to_owned).to_vec()
}

fn spawn_run(args: &[String], envs: &[(&str, &str)]) -> Foreground {
    Foreground::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), envs)
}

#[test]
fn systemd_ready_after_bind_and_stopping_on_sigterm() {
    let dir = support::temp_dir();
    let notify = NotifySocket::bind();
    let mut server = spawn_run(&run_args(dir.path()), &[("NOTIFY_SOCKET", &notify.path)]);
    let addr: SocketAddr = server.listening_on().parse().expect("TCP address");

    let before = notify.expect("READY=1");
    assert!(before.is_empty(), "READY=1 comes first: {before:?}");
    // Ready means serving: the handshake needs the event loop, not just a bound port.
    let mut raw = Raw::connect(addr);
    assert!(matches!(raw.call(&Request::Ping(b"")), Response::Pong));

    signal(server.pid(), libc::SIGTERM);
    let before = notify.expect("STOPPING=1");
    assert!(!before.iter().any(|m| m.starts_with("WATCHDOG")), "no watchdog unless asked: {before:?}");
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr: {}", server.stderr());
    assert!(notify.recv(Duration::from_millis(50)).is_none(), "nothing after STOPPING=1");
}

#[test]
fn systemd_watchdog_pings_at_half_the_period() {
    let dir = support::temp_dir();
    let notify = NotifySocket::bind();
    // 200 ms period: a ping every 100 ms.
    let envs = [("NOTIFY_SOCKET", notify.path.as_str()), ("WATCHDOG_USEC", "200000")];
    let mut server = spawn_run(&run_args(dir.path()), &envs);
    assert!(server.first_line.starts_with("officer listening on "), "{:?}", server.first_line);
    notify.expect("READY=1");

    let started = Instant::now();
    let mut pings = 0;
    while pings < 2 {
        let left = WAIT.saturating_sub(started.elapsed());
        let msg = notify.recv(left).unwrap_or_else(|| panic!("{pings} watchdog pings in {WAIT:?}"));
        pings += msg.iter().filter(|m| *m == "WATCHDOG=1").count();
    }
    // Half of a 200 ms period: two pings well inside a few seconds even on a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(5), "two pings took {:?}", started.elapsed());

    signal(server.pid(), libc::SIGTERM);
    notify.expect("STOPPING=1");
    assert_eq!(server.wait_exit().code(), Some(0), "stderr: {}", server.stderr());
}

// ---------------------------------------------------------------------------------------------
// SIGTERM with clients connected

/// A holder and a waiter on one lock; both must see SHUTDOWN under request id 0, then EOF.
fn hold_and_wait(mut connect: impl FnMut() -> Raw) -> (Raw, Raw) {
    let mut holder = connect();
    let lock = |name| Request::Lock(LockRequest { name, timeout_ms: None, queue_max: None });
    assert!(matches!(holder.call(&lock("ops:drain")), Response::Acquired { .. }));
    let mut waiter = connect();
    waiter.send(&lock("ops:drain"));
    // The waiter is queued once the listing shows two entries for the lock.
    let listing = Request::Locks(officer::protocol::ListRequest { prefix: "ops:", max: 0 });
    wait_until("the waiter to queue", WAIT, || match holder.call(&listing) {
        Response::Locks { locks, .. } => locks.iter().any(|l| l.queue.len() == 2),
        other => panic!("unexpected {other:?}"),
    });
    (holder, waiter)
}

/// SIGTERM's notice: SHUTDOWN under request id 0 first; returns the frames between it and EOF.
fn expect_shutdown_then_eof(raw: &mut Raw, who: &str) -> Vec<Response> {
    match raw.try_recv() {
        Some((id, Response::Shutdown { message })) => {
            assert_eq!(id, SHUTDOWN_REQUEST_ID, "{who}: SHUTDOWN request id");
            assert!(!message.is_empty(), "{who}: SHUTDOWN says why");
        }
        other => panic!("{who}: expected SHUTDOWN after SIGTERM, got {other:?}"),
    }
    raw.responses_until_closed()
}

#[test]
fn sigterm_drains_tcp_clients_and_removes_the_pid_file() {
    let dir = support::temp_dir();
    let mut args = run_args(dir.path());
    args.extend(["-d".to_owned(), path_str(dir.path())]);
    let mut server = spawn_run(&args, &[]);
    let addr: SocketAddr = server.listening_on().parse().expect("TCP address");
    let pid_file = dir.path().join("officer.pid");
    assert_eq!(read_pid(&pid_file), Some(server.pid()), "run -d writes the pid file");

    let (mut holder, mut waiter) = hold_and_wait(|| Raw::connect(addr));
    signal(server.pid(), libc::SIGTERM);
    assert_eq!(expect_shutdown_then_eof(&mut holder, "holder"), vec![], "holder: only SHUTDOWN before EOF");
    // What the waiter gets after SHUTDOWN is checked by sigterm_grants_no_lock_during_shutdown.
    expect_shutdown_then_eof(&mut waiter, "waiter");
    assert_eq!(server.wait_exit().code(), Some(0), "stderr: {}", server.stderr());
    assert!(!pid_file.exists(), "clean exit removes the pid file");
}

#[test]
fn sigterm_drains_unix_clients_and_removes_socket_and_pid_files() {
    let dir = support::temp_dir();
    let sock = dir.path().join("sock");
    let d = path_str(dir.path());
    let state = path_str(&dir.path().join("s"));
    let sock_s = path_str(&sock);
    let args = ["-o", "UNIX", "-f", &sock_s, "-d", &d, "--state-file", &state].map(str::to_owned);
    let mut server = spawn_run(&args, &[]);
    assert_eq!(server.listening_on(), format!("unix:{sock_s}"));
    assert!(sock.exists());
    let pid_file = dir.path().join("officer.pid");
    assert_eq!(read_pid(&pid_file), Some(server.pid()));

    let (mut holder, mut waiter) = hold_and_wait(|| Raw::connect_unix(&sock));
    signal(server.pid(), libc::SIGTERM);
    assert_eq!(expect_shutdown_then_eof(&mut holder, "holder"), vec![], "holder: only SHUTDOWN before EOF");
    // What the waiter gets after SHUTDOWN is checked by sigterm_grants_no_lock_during_shutdown.
    expect_shutdown_then_eof(&mut waiter, "waiter");
    assert_eq!(server.wait_exit().code(), Some(0), "stderr: {}", server.stderr());
    assert!(!sock.exists(), "clean exit removes the socket file");
    assert!(!pid_file.exists(), "clean exit removes the pid file");
}

#[test]
fn sigterm_grants_no_lock_during_shutdown() {
    use std::io::{BufRead, BufReader, Write};
    let dir = support::temp_dir();
    let mut server = spawn_run(&run_args(dir.path()), &[]);
    let addr: SocketAddr = server.listening_on().parse().expect("TCP address");
    let (mut holder, mut waiter) = hold_and_wait(|| Raw::connect(addr));
    // A client of the original JSON-lines protocol queues behind them.
    let mut json = std::net::TcpStream::connect(addr).expect("connect");
    json.set_read_timeout(Some(WAIT)).unwrap();
    json.write_all(b"{\"command\":\"lock\",\"name\":\"ops:drain\"}\n").unwrap();
    let listing = Request::Locks(officer::protocol::ListRequest { prefix: "ops:", max: 0 });
    wait_until("the JSON waiter to queue", WAIT, || match holder.call(&listing) {
        Response::Locks { locks, .. } => locks.iter().any(|l| l.queue.len() == 3),
        other => panic!("unexpected {other:?}"),
    });

    signal(server.pid(), libc::SIGTERM);
    assert_eq!(expect_shutdown_then_eof(&mut holder, "holder"), vec![]);
    assert_eq!(expect_shutdown_then_eof(&mut waiter, "waiter"), vec![], "waiter: nothing after SHUTDOWN");
    let lines: Vec<String> = BufReader::new(json).lines().map_while(Result::ok).collect();
    assert!(!lines.iter().any(|l| l.contains("acquired")), "JSON waiter: {lines:?}");
    assert_eq!(server.wait_exit().code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// Start-up checks

#[test]
fn auth_file_with_a_short_secret_is_refused() {
    let dir = support::temp_dir();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "0123456789").unwrap();
    let mut args = run_args(dir.path());
    args.extend(["--auth-file".to_owned(), path_str(&secret_file)]);
    let mut server = spawn_run(&args, &[]);
    assert!(server.first_line.is_empty(), "must not listen: {:?}", server.first_line);
    let status = server.wait_exit();
    assert_ne!(status.code(), Some(0));
    let stderr = server.stderr().to_owned();
    assert!(stderr.contains("at least 32 bytes"), "{stderr}");
    assert!(!stderr.contains("0123456789"), "the secret is never echoed: {stderr}");
}

#[test]
fn auth_file_with_a_long_secret_requires_auth() {
    let dir = support::temp_dir();
    let secret = b"0123456789abcdefghijklmnopqrstuvwxyzABCD";
    assert_eq!(secret.len(), 40);
    let secret_file = dir.path().join("secret");
    // A trailing newline is not part of the secret.
    std::fs::write(&secret_file, [&secret[..], b"\n"].concat()).unwrap();
    let mut args = run_args(dir.path());
    args.extend(["--auth-file".to_owned(), path_str(&secret_file)]);
    let server = spawn_run(&args, &[]);
    let addr: SocketAddr = server.listening_on().parse().expect("TCP address");

    let mut raw = Raw::connect_no_hello(addr);
    match raw.call(&Request::Hello(Hello { version: PROTOCOL_VERSION })) {
        Response::HelloOk(hello) => assert!(hello.auth_required, "{hello:?}"),
        other => panic!("handshake: {other:?}"),
    }

    let builder = || ClientBuilder::new().host("127.0.0.1").port(addr.port());
    let err = builder().connect().expect_err("no secret, no session");
    assert!(err.to_string().contains("secret"), "{err}");
    let mut wrong = secret.to_vec();
    wrong[0] ^= 1;
    assert!(builder().auth(wrong).connect().is_err(), "a wrong secret is refused");

    let client = builder().auth(secret.to_vec()).connect().expect("the right secret connects");
    assert!(client.server_info().auth_required);
    let lock = client.lock("ops:auth", LockOptions::try_once()).expect("lock");
    assert!(lock.token() > 0);
    client.unlock("ops:auth").expect("unlock");
}

#[test]
fn listening_on_all_addresses_without_auth_warns() {
    let dir = support::temp_dir();
    let state = path_str(&dir.path().join("s"));
    let mut server = Foreground::spawn(&["-h", "0.0.0.0", "-p", "0", "--state-file", &state], &[]);
    assert!(server.first_line.starts_with("officer listening on 0.0.0.0:"), "{:?}", server.first_line);
    // The warning precedes the listening line; stop the server to read stderr to its end.
    signal(server.pid(), libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    let stderr = server.stderr();
    assert!(
        stderr.lines().any(|l| l.contains("WARNING") && l.contains("without authentication")),
        "{stderr}"
    );
}

#[test]
fn loopback_without_auth_does_not_warn() {
    let dir = support::temp_dir();
    let mut server = spawn_run(&run_args(dir.path()), &[]);
    assert!(server.first_line.starts_with("officer listening on 127.0.0.1:"), "{:?}", server.first_line);
    signal(server.pid(), libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(!server.stderr().contains("WARNING"), "{}", server.stderr());
}

#[test]
fn the_default_pid_directory_in_tmp_must_be_private() {
    // Without XDG_RUNTIME_DIR (cron, su, a container) a non-root `officer start` keeps its pid
    // and output files in $TMPDIR/officer-UID. Anyone can create that directory first and put
    // a link there: the server would truncate and write whatever the link points to.
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::os::unix::process::CommandExt;
    let dir = support::temp_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    // Root's default is /run: the fallback is what every other user gets.
    let uid = if root { 65534 } else { unsafe { libc::geteuid() } };
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    if root {
        std::os::unix::fs::chown(&victim, Some(uid), None).unwrap();
    }
    // The "other user's" directory: writable by everyone (and, under root, owned by root).
    let planted = dir.path().join(format!("officer-{uid}"));
    std::fs::create_dir(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
    symlink(&victim, planted.join("officer.pid")).unwrap();
    let state = path_str(&dir.path().join("state").join("officer.state"));
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_officer"));
    command
        .args(["start", "-h", "127.0.0.1", "-p", "0", "--state-file", &state])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("TMPDIR", dir.path())
        .stdin(std::process::Stdio::null());
    if root {
        command.uid(uid).gid(uid);
    }
    let out = command.output().expect("run officer start");
    let mut guard = DaemonGuard::new(&planted, "officer");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if let Some((pid, _)) = parse_started(&stdout) {
        guard.track(pid);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "the link was followed: {stderr}");
    assert_ne!(out.status.code(), Some(0), "started in a directory others can write: {stdout}");
    assert!(stderr.contains(&planted.display().to_string()) && stderr.contains("-d"), "{stderr}");
}
