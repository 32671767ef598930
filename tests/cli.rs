//! The command-line client, run as the real `officer` binary against a server on
//! 127.0.0.1:0: `officer lock` (like flock(1)) and the listing subcommands.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use officer::client::{Client, LockOptions};
use serde_json::Value;
use support::server::TestServer;
use support::WAIT;

const OFFICER: &str = env!("CARGO_BIN_EXE_officer");

/// `officer SUBCOMMAND -h 127.0.0.1 -p PORT ARGS...` as a command, not yet started.
fn officer(server_port: u16, subcommand: &str, args: &[&str]) -> Command {
    let mut cmd = bare();
    cmd.arg(subcommand).args(["-h", "127.0.0.1", "-p", &server_port.to_string()]).args(args);
    cmd
}

/// The binary with no `OFFICER_*` address variables from the caller's environment.
fn bare() -> Command {
    let mut cmd = Command::new(OFFICER);
    for var in ["OFFICER_ADDR", "OFFICER_HOST", "OFFICER_PORT"] {
        cmd.env_remove(var);
    }
    cmd
}

/// A port nothing listens on (bound, then closed).
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Runs to completion, killing the child if it outlives `WAIT`.
fn run(mut cmd: Command) -> Output {
    let child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    finish(child)
}

fn finish(child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(output) => output.expect("wait"),
        Err(_) => {
            // SAFETY: signalling our own child; a stale pid only makes kill fail.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("officer did not finish within {WAIT:?}");
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn client(server: &TestServer) -> Client {
    Client::connect("127.0.0.1", server.addr().port()).expect("connect")
}

#[test]
fn lock_runs_the_command_once_holding_the_lock_and_passes_its_status() {
    let server = TestServer::start();
    let port = server.addr().port().to_string();
    // The command checks the lock is held by listing it, and prints its environment.
    let script = format!(
        "echo run >> \"$COUNT\"; echo \"$OFFICER_LOCK_NAME $OFFICER_FENCING_TOKEN\"; \
         {OFFICER} locks -h 127.0.0.1 -p {port} --json; exit 3"
    );
    let dir = support::temp_dir();
    let count = dir.path().join("count");
    let mut cmd = officer(server.addr().port(), "lock", &["job", "--", "sh", "-c", &script]);
    cmd.env("COUNT", &count);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let env_line = lines.next().expect("env line");
    let (name, token) = env_line.split_once(' ').expect("name and token");
    assert_eq!(name, "job");
    assert!(token.parse::<u64>().expect("numeric token") > 0);
    let listing: Value = serde_json::from_str(lines.next().expect("json line")).expect("json");
    assert_eq!(listing["locks"][0]["name"], "job");
    assert_eq!(std::fs::read_to_string(&count).expect("count"), "run\n", "ran exactly once");
    client(&server).try_lock("job").expect("released after the command ended");
}

#[test]
fn nonblock_conflict_exits_with_the_conflict_code_and_names_the_holder() {
    let server = TestServer::start();
    let holder = client(&server);
    holder.try_lock("busy").expect("lock");
    let label =
        holder.connections().expect("conns").iter().find(|c| c.held == ["busy"]).expect("me").label.clone();
    let dir = support::temp_dir();
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let out = run(officer(server.addr().port(), "lock", &["-n", "busy", "--", "sh", "-c", &touch]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("busy") && stderr.contains(&label), "{stderr}");
    assert!(!marker.exists(), "the command must not run without the lock");

    let out = run(officer(server.addr().port(), "lock", &["-n", "-E", "7", "busy", "--", "true"]));
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn timeout_gives_up_after_the_wait() {
    let server = TestServer::start();
    let holder = client(&server);
    holder.try_lock("slow").expect("lock");
    let start = Instant::now();
    let out = run(officer(server.addr().port(), "lock", &["-w", "0.2", "slow", "--", "true"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert!(text(&out.stderr).contains("timed out"), "{}", text(&out.stderr));
}

#[test]
fn queue_max_refuses_a_long_queue() {
    let server = TestServer::start();
    let holder = client(&server);
    holder.try_lock("q").expect("lock");
    let out = run(officer(server.addr().port(), "lock", &["--queue-max", "1", "-E", "4", "q", "--", "true"]));
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("queue"), "{}", text(&out.stderr));
}

/// The server's --max-waiters refusing the wait is a busy lock (exit 1 or -E), not "unreachable".
#[test]
fn a_queue_at_the_server_limit_is_a_conflict() {
    let server = TestServer::start_with(|cfg| cfg.table.max_waiters_per_lock = 1);
    let holder = client(&server);
    holder.try_lock("full").expect("lock");
    let waiter = client(&server);
    thread::scope(|s| {
        s.spawn(|| waiter.lock("full", LockOptions::with_timeout(WAIT)));
        let deadline = Instant::now() + WAIT;
        while holder.locks().expect("locks").iter().all(|l| l.queue.len() < 2) {
            assert!(Instant::now() < deadline, "never queued");
            thread::sleep(Duration::from_millis(5));
        }
        let dir = support::temp_dir();
        let marker = dir.path().join("ran");
        let touch = format!("touch {}", marker.display());
        let out = run(officer(server.addr().port(), "lock", &["-w", "20", "-E", "9", "full", "-c", &touch]));
        assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("limit"), "{}", text(&out.stderr));
        assert!(!marker.exists(), "the command must not run without the lock");
        holder.unlock("full").expect("unlock");
    });
}

#[test]
fn a_waiting_lock_runs_once_the_holder_releases() {
    let server = TestServer::start();
    let holder = client(&server);
    holder.try_lock("w").expect("lock");
    let child = officer(server.addr().port(), "lock", &["-w", "20", "w", "--", "sh", "-c", "exit 0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + WAIT;
    while holder.locks().expect("locks").iter().all(|l| l.queue.len() < 2) {
        assert!(Instant::now() < deadline, "officer lock never queued");
        thread::sleep(Duration::from_millis(5));
    }
    holder.unlock("w").expect("unlock");
    let out = finish(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn command_errors_and_signals_map_to_shell_statuses() {
    let server = TestServer::start();
    let port = server.addr().port();
    let out = run(officer(port, "lock", &["x", "--", "/nonexistent/command"]));
    assert_eq!(out.status.code(), Some(127));
    let out = run(officer(port, "lock", &["x", "--", "sh", "-c", "kill -TERM $$"]));
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM));
}

#[test]
fn unreachable_server_is_exit_69() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    for sub in ["lock", "ping", "locks"] {
        let args: &[&str] = if sub == "lock" { &["x", "--", "true"] } else { &[] };
        let out = run(officer(port, sub, args));
        assert_eq!(out.status.code(), Some(69), "{sub}");
        assert!(text(&out.stderr).contains("cannot connect"), "{}", text(&out.stderr));
    }
}

/// Starts `officer lock` with a command that prints `started` and then waits; returns the
/// child once the command runs (so the lock is held).
fn start_holding(port: u16, extra: &[&str], command: &str) -> Child {
    let mut args = extra.to_vec();
    args.extend(["lost", "--", "sh", "-c", command]);
    let mut child = officer(port, "lock", &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    let stdout = child.stdout.as_mut().expect("stdout");
    BufReader::new(stdout).read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "started");
    child
}

#[test]
fn losing_the_server_while_the_command_runs_is_reported_and_exit_75() {
    let server = TestServer::start();
    // The command ends when its stdin closes, after the loss.
    let mut child = start_holding(server.addr().port(), &[], "echo started; read line; exit 0");
    server.stop();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("read");
    assert!(line.contains("lost the connection") && line.contains("no longer held"), "{line}");
    drop(child.stdin.take()); // let the command finish
    let out = finish(child);
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_LOCK_LOST));
}

#[test]
fn kill_on_loss_stops_the_command() {
    let dir = support::temp_dir();
    let state = support::state_file_in(dir.path());
    let (mut server, addr) =
        support::process::spawn_officer(&["--state-file", state.to_str().expect("utf-8 path")]);
    let child = start_holding(addr.port(), &["--kill-on-loss"], "echo started; exec sleep 60");
    server.kill().expect("kill server");
    let _ = server.wait();
    let out = finish(child);
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_LOCK_LOST));
    assert!(text(&out.stderr).contains("stopping the command"), "{}", text(&out.stderr));
}

#[test]
fn listings_as_tables_and_json_with_prefix_and_namespace() {
    let server = TestServer::start();
    let port = server.addr().port();
    let holder = Client::builder().host("127.0.0.1").port(port).namespace("ns").connect().expect("connect");
    holder.try_lock("jobs/1").expect("lock");
    let waiter = client(&server);
    thread::scope(|s| {
        s.spawn(|| waiter.lock("ns:jobs/1", LockOptions::with_timeout(WAIT)));
        let deadline = Instant::now() + WAIT;
        while holder.locks().expect("locks").iter().all(|l| l.queue.len() < 2) {
            assert!(Instant::now() < deadline, "never queued");
            thread::sleep(Duration::from_millis(5));
        }

        let table = text(&run(officer(port, "locks", &[])).stdout);
        assert!(table.starts_with("NAME") && table.contains("ns:jobs/1"), "{table}");
        let doc: Value = serde_json::from_slice(
            &run(officer(port, "locks", &["--namespace", "ns", "jobs/", "--json"])).stdout,
        )
        .expect("json");
        assert_eq!(doc["locks"][0]["name"], "jobs/1");
        assert_eq!(doc["locks"][0]["waiters"].as_array().map(Vec::len), Some(1));
        assert_eq!(doc["truncated"], false);
        let none = text(&run(officer(port, "locks", &["nothing-here"])).stdout);
        assert_eq!(none, "no locks\n");

        let doc: Value =
            serde_json::from_slice(&run(officer(port, "connections", &["--json"])).stdout).expect("json");
        let conns = doc["connections"].as_array().expect("array");
        assert!(conns.iter().any(|c| c["held"][0] == "ns:jobs/1"));
        assert!(conns.iter().any(|c| c["waiting"][0] == "ns:jobs/1"));
        let table = text(&run(officer(port, "connections", &[])).stdout);
        assert!(table.starts_with("CONNECTION"), "{table}");

        holder.unlock("jobs/1").expect("unlock");
    });

    let stats = run(officer(port, "stats", &["--json"]));
    let doc: Value = serde_json::from_slice(&stats.stdout).expect("json");
    assert!(doc.as_object().is_some_and(|m| !m.is_empty()), "{doc}");
    assert!(text(&run(officer(port, "stats", &[])).stdout).starts_with("KEY"));

    let ping = run(officer(port, "ping", &["-c", "2"]));
    assert_eq!(ping.status.code(), Some(0));
    assert_eq!(text(&ping.stdout).lines().filter(|l| l.starts_with("pong from")).count(), 2);
    let doc: Value = serde_json::from_slice(&run(officer(port, "ping", &["--json"])).stdout).expect("json");
    assert_eq!(doc["rtt_ms"].as_array().map(Vec::len), Some(1));
}

#[test]
fn sigterm_to_officer_is_passed_to_the_command_which_keeps_the_lock_until_it_ends() {
    let server = TestServer::start();
    // Bounded, so a failing run leaves nothing behind for long.
    let command = "trap 'exit 5' TERM; echo started; for i in $(seq 400); do sleep 0.05; done";
    let child = start_holding(server.addr().port(), &[], command);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = finish(child);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    client(&server).try_lock("lost").expect("released after the command ended");
}

#[test]
fn auth_file_authenticates_the_cli() {
    let secret = "0123456789abcdef0123456789abcdef";
    let server = TestServer::start_with(move |cfg| cfg.auth_secret = Some(secret.as_bytes().to_vec()));
    let dir = support::temp_dir();
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{secret}\n")).expect("write secret");
    let file = file.to_str().expect("utf-8 path");
    let port = server.addr().port();
    assert_eq!(run(officer(port, "ping", &["--auth-file", file])).status.code(), Some(0));
    let out = run(officer(port, "lock", &["--auth-file", file, "x", "--", "true"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // No secret: the server was reached, so not 69; the message names the flag to use.
    let out = run(officer(port, "ping", &[]));
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_NO_PERM), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("requires authentication") && stderr.contains("--auth-file"), "{stderr}");
    assert!(!stderr.contains("ClientBuilder"), "no library method in a CLI message: {stderr}");

    // A wrong secret of a valid length: refused by the server, and the file is named.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "fedcba9876543210fedcba9876543210").expect("write");
    let out = run(officer(port, "ping", &["--auth-file", wrong.to_str().expect("utf-8")]));
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_NO_PERM), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("refused the secret") && stderr.contains("wrong"), "{stderr}");

    // Too short to be any server's secret: said so, without connecting.
    let short = dir.path().join("short");
    std::fs::write(&short, "tiny\n").expect("write");
    let out = run(officer(port, "ping", &["--auth-file", short.to_str().expect("utf-8")]));
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_CONFIG), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("4 bytes") && stderr.contains("at least 32 bytes"), "{stderr}");

    let out = run(officer(port, "ping", &["--auth-file", "/nonexistent/secret"]));
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_NO_INPUT), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("/nonexistent/secret"), "{}", text(&out.stderr));
}

#[test]
fn usage_errors_exit_64_and_help_works() {
    for args in [
        &[][..],
        &["lock", "x"],
        &["lock", "x", "-c", "true", "--", "true"],
        &["locks", "--no-such-flag"],
        &["ping", "-h", "127.0.0.1:1", "-p", "2"],
        &["ping", "-h", "127.0.0.1:http"],
        &["no-such-subcommand"],
    ] {
        let out = run({
            let mut cmd = bare();
            cmd.args(args);
            cmd
        });
        assert_eq!(out.status.code(), Some(officer::cli::EXIT_USAGE), "{args:?}: {}", text(&out.stderr));
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
    let mut cmd = bare();
    cmd.args(["ping"]).env("OFFICER_PORT", "eleven");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_USAGE));
    assert!(text(&out.stderr).contains("OFFICER_PORT"), "{}", text(&out.stderr));

    let help = run({
        let mut cmd = bare();
        cmd.arg("help");
        cmd
    });
    assert_eq!(help.status.code(), Some(0), "{}", text(&help.stderr));
    let help = text(&help.stdout);
    for word in ["lock", "locks", "start", "stop", "completions", "man", "OFFICER_ADDR", "Exit status", "64"]
    {
        assert!(help.contains(word), "officer help lacks {word}: {help}");
    }
    let lock_help = run({
        let mut cmd = bare();
        cmd.args(["help", "lock"]);
        cmd
    });
    assert_eq!(lock_help.status.code(), Some(0));
    assert!(text(&lock_help.stdout).contains("sh -c"), "{}", text(&lock_help.stdout));
}

#[test]
fn a_name_refused_before_sending_is_65_and_shown_once_cut() {
    let server = TestServer::start();
    let port = server.addr().port();
    let long = "n".repeat(5000);
    let out = run(officer(port, "lock", &[&long, "--", "true"]));
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_DATA), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert_eq!(stderr.matches("(5000 bytes)").count(), 1, "the length once: {stderr}");
    assert!(stderr.len() < 300 && !stderr.contains(&"n".repeat(100)), "cut: {stderr}");

    let out = run(officer(port, "lock", &["tab\there", "--", "true"]));
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_DATA), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("control"), "{}", text(&out.stderr));
    let out = run(officer(port, "locks", &[&long]));
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_DATA), "a listing prefix too");
    assert!(client(&server).locks().expect("locks").is_empty(), "nothing reached the lock table");
}

#[test]
fn shell_command_runs_through_sh_c_holding_the_lock() {
    let server = TestServer::start();
    let port = server.addr().port().to_string();
    // Pipes, quoting and variables only a shell understands; the lock is held meanwhile.
    let line = format!(
        "echo \"$OFFICER_LOCK_NAME\" | tr a-z A-Z; {OFFICER} locks -h 127.0.0.1 -p {port} --json | grep -c '\"job\"'; exit 4"
    );
    let out = run(officer(server.addr().port(), "lock", &["job", "-c", &line]));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "JOB\n1\n");
    client(&server).try_lock("job").expect("released after the shell ended");
}

#[test]
fn the_server_address_comes_from_flags_then_the_environment() {
    let server = TestServer::start();
    let port = server.addr().port().to_string();
    let dead = dead_port().to_string();
    let ok = |args: &[&str], envs: &[(&str, &str)]| {
        let mut cmd = bare();
        cmd.arg("ping").args(args).envs(envs.iter().copied());
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{args:?} {envs:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let addr = format!("127.0.0.1:{port}");
    let dead_addr = format!("127.0.0.1:{dead}");
    ok(&[], &[("OFFICER_ADDR", &addr)]);
    ok(&[], &[("OFFICER_HOST", "127.0.0.1"), ("OFFICER_PORT", &port)]);
    ok(&[], &[("OFFICER_HOST", &addr)]);
    ok(&["-h", &addr], &[]);
    // Each part from the first layer that gives it: flags, OFFICER_HOST/PORT, OFFICER_ADDR.
    ok(&["-p", &port], &[("OFFICER_ADDR", &dead_addr)]);
    ok(&[], &[("OFFICER_ADDR", &dead_addr), ("OFFICER_PORT", &port)]);
    ok(&["-h", &addr], &[("OFFICER_HOST", "192.0.2.1"), ("OFFICER_PORT", &dead)]);
    // The address the messages name is the resolved one.
    let mut cmd = bare();
    cmd.arg("ping").env("OFFICER_ADDR", &dead_addr);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_UNAVAILABLE));
    assert!(text(&out.stderr).contains(&dead_addr), "{}", text(&out.stderr));

    // [v6]:port, where the machine has IPv6 loopback.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let v6 = TestServer::start_with(|cfg| {
            cfg.listen = officer::server::Listen::Tcp("[::1]:0".parse().unwrap())
        });
        let v6_addr = format!("[::1]:{}", v6.addr().port());
        ok(&["-h", &v6_addr], &[]);
        ok(&[], &[("OFFICER_ADDR", &v6_addr)]);
    }
}

/// Serves one connection on 127.0.0.1:0 the way a foreign server would: `greet` is written at
/// once (an SSH banner), or after the client's first bytes (an HTTP error reply).
/// A peer that greets at once (`until` None, like SSH) or, like an HTTP server or a JSON-lines
/// server, only once it has read a whole request head (`until` its terminator).
fn foreign_server(greet: &'static [u8], until: Option<&'static [u8]>) -> (u16, thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut buf = [0u8; 64];
        if let Some(end) = until {
            let mut head = Vec::new();
            while !head.windows(end.len()).any(|w| w == end) {
                match stream.read(&mut buf) {
                    Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                    // No complete head: such a server never answers.
                    _ => return,
                }
            }
        }
        let _ = stream.write_all(greet);
        // Keep the connection open until the client goes: the client must not need the close.
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    });
    (port, handle)
}

#[test]
fn a_peer_that_does_not_speak_officer_is_named_at_once() {
    // What the peer sends, what it waits for first, what the message must quote.
    type Peer = (&'static [u8], Option<&'static [u8]>, &'static str);
    let peers: [Peer; 3] = [
        (b"SSH-2.0-OpenSSH_9.6\r\n", None, "SSH-2.0-OpenSSH_9.6"),
        // An HTTP server answers only a complete head, ended by an empty line.
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", Some(b"\r\n\r\n"), "HTTP/1.1 400"),
        (b"{\"result\":\"error\"}\n", Some(b"\n"), "result"),
    ];
    for (greet, until, shown) in peers {
        let (port, peer) = foreign_server(greet, until);
        // A connect timeout longer than WAIT: an answer must come from the bytes, not the clock.
        let out = run(officer(port, "ping", &["--connect-timeout", "60"]));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(officer::cli::EXIT_PROTOCOL), "{stderr}");
        assert!(
            stderr.contains(&format!("the server at 127.0.0.1:{port} does not speak the officer protocol")),
            "{stderr}"
        );
        assert!(stderr.contains(shown), "quotes what it answered: {stderr}");
        assert!(!stderr.contains("frame length") && !stderr.contains("timeout"), "{stderr}");
        peer.join().expect("peer thread");
    }
    // The library says the same, as an error of kind Protocol.
    let (port, peer) = foreign_server(b"SSH-2.0-x\r\n", None);
    let err = Client::builder()
        .host("127.0.0.1")
        .port(port)
        .connect_timeout(Duration::from_secs(60))
        .connect()
        .expect_err("not officer");
    assert_eq!(err.kind(), officer::client::ErrorKind::Protocol);
    assert!(err.to_string().contains("does not speak the officer protocol"), "{err}");
    peer.join().expect("peer thread");
}

#[test]
fn completions_and_man_page_name_the_subcommands() {
    let generate = |args: &[&str]| {
        let mut cmd = bare();
        cmd.args(args);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    for shell in ["bash", "zsh", "fish"] {
        let script = generate(&["completions", shell]);
        for sub in ["lock", "locks", "connections", "start", "stop", "status", "top"] {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
        assert!(script.contains("--auth-file"), "{shell} completions lack the flags");
    }
    let page = generate(&["man"]);
    assert!(page.contains(".TH officer 1"), "roff title: {page}");
    for sub in ["officer\\-lock", "officer\\-start", "officer\\-status"] {
        assert!(page.contains(sub), "the man page lacks {sub}: {page}");
    }
    let dir = support::temp_dir();
    generate(&["man", "--dir", dir.path().to_str().expect("utf-8")]);
    let lock_page = std::fs::read_to_string(dir.path().join("officer-lock.1")).expect("officer-lock.1");
    assert!(lock_page.contains("queue\\-max"), "{lock_page}");
    assert!(dir.path().join("officer.1").exists());
}

#[test]
fn top_shows_the_longest_hold_and_the_deepest_queue() {
    let server = TestServer::start();
    let holder = client(&server);
    holder.lock("busy", LockOptions::new()).unwrap();
    holder.lock("quiet", LockOptions::new()).unwrap();
    let waiter = client(&server);
    let waiting =
        thread::spawn(move || waiter.lock("busy", LockOptions::with_timeout(Duration::from_secs(20))));
    // Wait until the server has queued the waiter (event-driven: poll the listing).
    let deadline = Instant::now() + WAIT;
    while holder.locks().unwrap().iter().find(|l| l.name == "busy").map_or(0, |l| l.queue.len()) < 2 {
        assert!(Instant::now() < deadline, "waiter never queued");
    }
    let out = run(officer(server.addr().port(), "top", &["-n", "1", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_str(text(&out.stdout).trim()).expect("one JSON document");
    assert_eq!(doc["locks_held"], 2);
    assert_eq!(doc["waiters"], 1);
    assert_eq!(doc["longest_held"][0]["name"], "busy");
    assert_eq!(doc["deepest_queues"][0]["name"], "busy");
    assert_eq!(doc["deepest_queues"][0]["waiters"], 1);
    let screen = run(officer(server.addr().port(), "top", &["-n", "2", "-i", "0.1"]));
    let screen = text(&screen.stdout);
    assert_eq!(screen.matches("HELD LONGEST").count(), 2, "{screen}");
    assert!(screen.contains("busy"), "{screen}");
    holder.unlock("busy").unwrap();
    waiting.join().unwrap().unwrap();
}

#[test]
fn top_shows_each_ranked_name_s_mode_holders_and_permits() {
    let server = TestServer::start();
    let (a, b) = (client(&server), client(&server));
    a.lock("rw", LockOptions::new().shared()).unwrap();
    b.lock("rw", LockOptions::new().shared()).unwrap();
    a.lock("pool", LockOptions::new().permits(2, 5)).unwrap();
    a.lock("plain", LockOptions::new()).unwrap();
    let out = run(officer(server.addr().port(), "top", &["-n", "1", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_str(text(&out.stdout).trim()).expect("one JSON document");
    let mode = |name: &str| {
        let entries = doc["longest_held"].as_array().expect("a list");
        entries.iter().find(|e| e["name"] == name).map(|e| e["mode"].clone())
    };
    assert_eq!(mode("rw"), Some(Value::from("shared x2")), "{doc}");
    assert_eq!(mode("pool"), Some(Value::from("semaphore 2/5")), "{doc}");
    assert_eq!(mode("plain"), Some(Value::from("exclusive")), "{doc}");
    let screen = run(officer(server.addr().port(), "top", &["-n", "1"]));
    let screen = text(&screen.stdout);
    assert!(screen.contains("MODE") && screen.contains("semaphore 2/5"), "{screen}");
}

#[test]
fn stats_json_carries_histograms_and_process_numbers() {
    let server = TestServer::start();
    let c = client(&server);
    c.lock("s", LockOptions::new()).unwrap();
    c.unlock("s").unwrap();
    let out = run(officer(server.addr().port(), "stats", &["--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(doc["acquired"], 1);
    assert_eq!(doc["hold_ms_count"], 1);
    assert_eq!(doc["hold_ms_le_inf"], 1);
    assert!(doc["open_fds"].as_u64().unwrap() > 0);
    assert!(doc["resident_memory_bytes"].as_u64().unwrap() > 0);
}

/// Three servers and their `127.0.0.1:PORT` addresses, as a list for `-H`.
fn three_servers() -> (Vec<TestServer>, Vec<String>) {
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start()).collect();
    let addrs = servers.iter().map(|s| format!("127.0.0.1:{}", s.addr().port())).collect();
    (servers, addrs)
}

#[test]
fn lock_over_a_list_of_servers_locks_on_the_names_server_only() {
    let (_servers, addrs) = three_servers();
    let placer = officer::client::ShardedClient::builder().servers(&addrs).connect_lazy().expect("placer");
    let home = placer.server_for("nightly").to_owned();
    // While the command runs, each server lists what it holds: only the name's server has it.
    let script: String = addrs
        .iter()
        .map(|a| format!("echo {a}; {OFFICER} locks -h {a} --json; "))
        .chain(["echo \"$OFFICER_FENCING_TOKEN\"".to_owned()])
        .collect();
    let mut cmd = bare();
    cmd.args(["lock", "-H", &addrs.join(","), "nightly", "--", "sh", "-c", &script]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    for pair in lines[..6].chunks(2) {
        let listing: Value = serde_json::from_str(pair[1]).expect("json");
        let names: Vec<&str> =
            listing["locks"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
        let expected: &[&str] = if pair[0] == home { &["nightly"] } else { &[] };
        assert_eq!(names, expected, "{} (the name lives on {home})", pair[0]);
    }
    assert!(lines[6].parse::<u64>().is_ok(), "{stdout}");
    // The same list from the environment, in another order, finds the same server: busy there.
    let holder = Client::connect("127.0.0.1", home.rsplit(':').next().unwrap().parse().unwrap()).unwrap();
    holder.try_lock("nightly").expect("free after the command");
    let mut reversed = addrs.clone();
    reversed.reverse();
    let mut cmd = bare();
    cmd.args(["lock", "-n", "nightly", "--", "true"]).env("OFFICER_HOST", reversed.join(","));
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is busy"), "{}", text(&out.stderr));
}

#[test]
fn listings_over_a_list_of_servers_merge_and_name_each_server() {
    let (servers, addrs) = three_servers();
    let sharded = officer::client::ShardedClient::builder().servers(&addrs).connect().expect("connect");
    let names: Vec<String> = (0..12).map(|i| format!("job{i:02}")).collect();
    for name in &names {
        sharded.try_lock(name).expect("lock");
    }
    let list = addrs.join(",");
    let out = run({
        let mut cmd = bare();
        cmd.args(["locks", "-h", &list, "--json"]);
        cmd
    });
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    let listed: Vec<(String, String)> = doc["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["name"].as_str().unwrap().to_owned(), l["server"].as_str().unwrap().to_owned()))
        .collect();
    let expected: Vec<(String, String)> =
        names.iter().map(|n| (n.clone(), sharded.server_for(n).to_owned())).collect();
    assert_eq!(listed, expected);
    let table = run({
        let mut cmd = bare();
        cmd.args(["locks", "-h", &list]);
        cmd
    });
    assert!(text(&table.stdout).starts_with("NAME   SERVER"), "{}", text(&table.stdout));
    let stats = run({
        let mut cmd = bare();
        cmd.args(["stats", "locks_held", "--json"]).env("OFFICER_ADDR", &list);
        cmd
    });
    let doc: Value = serde_json::from_slice(&stats.stdout).expect("json");
    let held: u64 = addrs.iter().map(|a| doc["servers"][a]["locks_held"].as_u64().expect(a)).sum();
    assert_eq!(held, names.len() as u64);
    let ping = run({
        let mut cmd = bare();
        cmd.args(["ping", "-h", &list]);
        cmd
    });
    assert_eq!(text(&ping.stdout).lines().filter(|l| l.starts_with("pong from 127.0.0.1:")).count(), 3);
    let top = run({
        let mut cmd = bare();
        cmd.args(["top", "-h", &list, "-n", "1", "--json"]);
        cmd
    });
    assert_eq!(top.status.code(), Some(0), "{}", text(&top.stderr));
    let doc: Value = serde_json::from_slice(&top.stdout).expect("json");
    assert_eq!(doc["locks_held"].as_u64(), Some(names.len() as u64), "added up over the servers");
    assert_eq!(doc["longest_held"].as_array().unwrap().len(), 10, "the default of 10 over the set");

    // One server down: the others are still listed, the failure names it, and the status is 69.
    let down = addrs[0].clone();
    let mut servers = servers;
    servers.remove(0).stop();
    let out = run({
        let mut cmd = bare();
        cmd.args(["locks", "-h", &list, "--json"]);
        cmd
    });
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_UNAVAILABLE), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("cannot connect to {down}")), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    let left = doc["locks"].as_array().unwrap().len();
    assert_eq!(left, names.iter().filter(|n| sharded.server_for(n) != down).count());
}

#[test]
fn lock_over_a_list_fails_with_69_naming_its_server_when_that_one_is_down() {
    let up = TestServer::start();
    let addrs = vec![format!("127.0.0.1:{}", up.addr().port()), format!("127.0.0.1:{}", dead_port())];
    let placer = officer::client::ShardedClient::builder().servers(&addrs).connect_lazy().expect("placer");
    let on =
        |server: &str| (0..).map(|i| format!("job{i}")).find(|n| placer.server_for(n) == server).unwrap();
    let (on_dead, on_up) = (on(&addrs[1]), on(&addrs[0]));
    let list = addrs.join(",");
    let out = run({
        let mut cmd = bare();
        cmd.args(["lock", "-h", &list, &on_dead, "--", "true"]);
        cmd
    });
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_UNAVAILABLE), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("cannot connect to {}", addrs[1])), "{}", text(&out.stderr));
    let out = run({
        let mut cmd = bare();
        cmd.args(["lock", "-h", &list, &on_up, "--", "true"]);
        cmd
    });
    assert_eq!(out.status.code(), Some(0), "the other server's names still lock: {}", text(&out.stderr));
}

#[test]
fn shared_lock_runs_beside_readers_and_not_beside_a_writer() {
    let server = TestServer::start();
    let port = server.addr().port();
    let reader = client(&server);
    reader.lock("rs", LockOptions::try_once().shared()).expect("reader");
    // The command runs beside the other reader, and its own token holds the name.
    let script = format!("{OFFICER} check -h 127.0.0.1 -p {port} rs \"$OFFICER_FENCING_TOKEN\"");
    let out = run(officer(port, "lock", &["-s", "-n", "rs", "--", "sh", "-c", &script]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("holds lock"), "{}", text(&out.stdout));
    // Not beside a writer.
    let writer = client(&server);
    writer.try_lock("rw").expect("writer");
    let out = run(officer(port, "lock", &["--shared", "-n", "rw", "--", "true"]));
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("busy"), "{}", text(&out.stderr));
    // -s and --permits do not go together.
    let out = run(officer(port, "lock", &["-s", "--permits", "1", "--limit", "2", "rw", "--", "true"]));
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_USAGE));
}

#[test]
fn permits_of_a_limit_run_up_to_the_limit() {
    let server = TestServer::start();
    let port = server.addr().port();
    let first = client(&server);
    first.lock("pool", LockOptions::try_once().permits(1, 2)).expect("one of two");
    let out = run(officer(port, "lock", &["--permits", "1", "--limit", "2", "-n", "pool", "--", "true"]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let second = client(&server);
    second.lock("pool", LockOptions::try_once().permits(1, 2)).expect("two of two");
    let out = run(officer(port, "lock", &["--permits", "1", "--limit", "2", "-n", "pool", "--", "true"]));
    assert_eq!(out.status.code(), Some(1), "the limit was passed: {}", text(&out.stderr));
    // Another limit than the name's is an error, not a silent change; the command never runs.
    let out = run(officer(port, "lock", &["--permits", "1", "--limit", "3", "-n", "pool", "--", "true"]));
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("limit_mismatch"), "{}", text(&out.stderr));
    // --permits needs --limit.
    let out = run(officer(port, "lock", &["--permits", "1", "pool", "--", "true"]));
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_USAGE));
}

#[test]
fn check_exits_0_while_the_token_holds_and_1_after() {
    let server = TestServer::start();
    let port = server.addr().port();
    let holder = client(&server);
    let lock = holder.try_lock("fenced").expect("lock");
    let token = lock.token().to_string();
    let out = run(officer(port, "check", &["fenced", &token]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("token {token} holds lock \"fenced\"\n"));
    holder.unlock("fenced").expect("unlock");
    let out = run(officer(port, "check", &["fenced", &token]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("does not hold"), "{}", text(&out.stdout));
    let out = run(officer(port, "check", &["-q", "fenced", &token]));
    assert_eq!((out.status.code(), out.stdout.is_empty()), (Some(1), true));
    let out = run(officer(port, "check", &["fenced", "0"]));
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_USAGE), "tokens are never 0");
}

/// With `--lease`, officer renews while the command runs: the grant outlives its lease
/// several times over, and the command's own token still holds at its end.
#[test]
fn a_lease_is_renewed_while_the_command_runs() {
    let server = TestServer::start();
    let port = server.addr().port();
    let script = format!("sleep 1; {OFFICER} check -h 127.0.0.1 -p {port} leased \"$OFFICER_FENCING_TOKEN\"");
    let out = run(officer(port, "lock", &["--lease", "0.3", "leased", "--", "sh", "-c", &script]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("holds lock"), "{}", text(&out.stdout));
    client(&server).try_lock("leased").expect("released after the command");
}

/// A hold budget ends the grant whatever the renewals: officer says so, stops the command with
/// --kill-on-loss, and exits 75 as on a lost connection.
#[test]
fn max_hold_ending_the_grant_is_a_loss_exit_75() {
    let server = TestServer::start();
    let child = start_holding(
        server.addr().port(),
        &["--lease", "0.2", "--max-hold", "0.5", "--kill-on-loss"],
        "echo started; exec sleep 60",
    );
    let out = finish(child);
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_LOCK_LOST));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("max_hold") && stderr.contains("stopping the command"), "{stderr}");
}

/// `officer release --force` and `officer kick` as the server's own user on its UNIX socket
/// (no secret needed there): the holder learns its grant was revoked, the victim of a kick
/// loses its connection. Over TCP without the admin secret both are refused.
#[test]
fn release_force_and_kick_need_admin_rights() {
    let dir = support::temp_dir();
    let path = dir.path().join("officer.sock");
    let server = TestServer::start_with(|c| c.listen = officer::server::Listen::Unix(path.clone()));
    let sock = path.to_str().expect("utf-8 path");
    let unix = |sub: &str, args: &[&str]| {
        let mut cmd = bare();
        cmd.arg(sub).args(["-o", "unix", "-f", sock]).args(args);
        run(cmd)
    };
    let holder = Client::connect_unix(&path).expect("holder");
    let guard = holder.lock_guard("stuck", LockOptions::new().shared()).expect("lock");
    let out = unix("release", &["stuck"]);
    assert_eq!(out.status.code(), Some(officer::cli::EXIT_USAGE), "--force is required");
    let out = unix("release", &["--force", "stuck"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "revoked 1 grant of lock \"stuck\"\n");
    assert!(guard.wait_lost(Some(WAIT)), "the holder was not told");
    let victim = Client::connect_unix(&path).expect("victim");
    let id = victim.server_info().connection_id.to_string();
    let out = unix("kick", &[&id]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(victim.wait_disconnected(Some(WAIT)));
    let out = unix("kick", &["999999"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("not_found"), "{}", text(&out.stderr));
    drop(server);

    let tcp = TestServer::start();
    let out = run(officer(tcp.addr().port(), "kick", &["1"]));
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("forbidden"), "{}", text(&out.stderr));
    let out = run(officer(tcp.addr().port(), "release", &["--force", "x"]));
    assert!(text(&out.stderr).contains("forbidden"), "{}", text(&out.stderr));
}

/// With the server's admin secret, `--admin-file` gives the rights over TCP.
#[test]
fn admin_file_gives_the_rights_over_tcp() {
    let secret = "an admin secret of thirty-two bytes or more";
    let server = TestServer::start_with(|c| c.admin_secret = Some(secret.as_bytes().to_vec()));
    let dir = support::temp_dir();
    let file = dir.path().join("admin.secret");
    std::fs::write(&file, format!("{secret}\n")).expect("write secret");
    let holder = client(&server);
    let lock = holder.lock("held", LockOptions::new().shared()).expect("lock");
    let file = file.to_str().expect("utf-8 path");
    let token = lock.token().to_string();
    let out = run(officer(
        server.addr().port(),
        "release",
        &["--force", "--token", &token, "--admin-file", file, "held"],
    ));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let e = holder.wait_lost("held", lock.token(), Some(WAIT)).expect("told");
    assert_eq!(e.lost_reason().map(|(r, _)| r), Some(officer::client::LostReason::Revoked));
}

#[test]
fn locks_detail_shows_modes_tokens_and_permits() {
    let server = TestServer::start();
    let port = server.addr().port();
    let (a, b) = (client(&server), client(&server));
    let r1 = a.lock("rw", LockOptions::try_once().shared()).expect("reader");
    let r2 = b.lock("rw", LockOptions::try_once().shared()).expect("reader");
    a.lock("sem", LockOptions::try_once().permits(2, 5)).expect("permits");
    let out = run(officer(port, "locks", &["--detail"]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let rw = stdout.lines().find(|l| l.starts_with("rw ")).expect("rw row");
    assert!(rw.contains("shared") && rw.contains(&format!("({})", r1.token())), "{stdout}");
    assert!(rw.contains(&format!("({})", r2.token())), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("sem ") && l.contains("semaphore 2/5")), "{stdout}");
    let out = run(officer(port, "locks", &["-l", "--json", "se"]));
    let doc: Value = serde_json::from_str(&text(&out.stdout)).expect("json");
    assert_eq!(doc["locks"][0]["name"], "sem");
    assert_eq!(
        (doc["locks"][0]["limit"].as_u64(), doc["locks"][0]["permits_in_use"].as_u64()),
        (Some(5), Some(2))
    );
    assert_eq!(doc["locks"][0]["holders"][0]["mode"], "semaphore");
}

#[test]
fn bench_cycles_shared_and_semaphore_locks() {
    let server = TestServer::start();
    for mode in ["shared", "semaphore"] {
        let args = ["-c", "4", "-k", "100", "-n", "200", "--warmup", "0", "--lock-mode", mode, "--json"];
        let out = run(officer(server.addr().port(), "bench", &args));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let doc: Value = serde_json::from_str(text(&out.stdout).trim()).expect("one JSON document");
        assert_eq!(doc["mode"], mode);
        assert_eq!(doc["unexpected"], 0, "every LOCK_EXT acquired and was released: {doc}");
        assert!(doc["cycles"].as_u64().is_some_and(|n| n >= 200), "{doc}");
    }
    let stats: Value =
        serde_json::from_slice(&run(officer(server.addr().port(), "stats", &["--json"])).stdout)
            .expect("json");
    assert_eq!(stats["locks_held"], 0, "every cycle let go");
}

#[test]
fn connections_detail_shows_ids_and_modes() {
    let server = TestServer::start();
    let a = client(&server);
    a.lock("pool", LockOptions::new().permits(2, 5)).unwrap();
    let id = a.server_info().connection_id;
    let out = run(officer(server.addr().port(), "connections", &["--detail", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_str(text(&out.stdout).trim()).expect("one JSON document");
    let conns = doc["connections"].as_array().expect("a list");
    let mine = conns.iter().find(|c| c["connection_id"] == id).expect("the holder's entry");
    assert_eq!(mine["held"][0]["name"], "pool");
    assert_eq!(mine["held"][0]["mode"], "semaphore");
    assert_eq!(mine["held"][0]["permits"], 2);
    let table = text(&run(officer(server.addr().port(), "connections", &["-l"])).stdout).to_owned();
    assert!(table.contains("pool 2 permits"), "{table}");
}
