//! `officer run --cluster` as three real processes on loopback: who serves (one leader, the
//! followers' redirect), what survives a `kill -9` of the leader and a restart of the whole
//! cluster (fencing tokens, a resumable session's lock), and the starts that must be refused
//! (a damaged log, another cluster's data directory). The fault harness with a history checker
//! is `tests/cluster_faults.rs`; this file checks the driver's own promises one by one.
#![cfg(feature = "cluster")]

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use officer::protocol::{ErrorCode, Request, Response, SessionOpen, SessionResume};
use support::frames::token_of;
use support::process::{read_listening_line, wait_exit, wait_until, OFFICER};
use support::raw::Raw;
use support::WAIT;

/// Three members' ports and data directories; `start(i)` runs member `i` (1-based).
struct Cluster {
    dir: tempfile::TempDir,
    peer: Vec<SocketAddr>,
    client: Vec<SocketAddr>,
    /// Each member's /metrics address: a follower's one view (it redirects clients).
    metrics: Vec<SocketAddr>,
    nodes: Vec<Option<Child>>,
    /// More arguments for every member.
    extra: Vec<String>,
}

/// A free loopback port (bound and released: the member binds it again at once).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

impl Cluster {
    fn new() -> Cluster {
        let peer = (0..3).map(|_| free_addr()).collect();
        let client = (0..3).map(|_| free_addr()).collect();
        let metrics = (0..3).map(|_| free_addr()).collect();
        Cluster {
            dir: support::temp_dir(),
            peer,
            client,
            metrics,
            nodes: vec![None, None, None],
            extra: Vec::new(),
        }
    }

    fn data_dir(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    fn command(&self, id: usize, voters: usize) -> Command {
        let mut command = Command::new(OFFICER);
        let port = self.client[id - 1].port().to_string();
        command.args(["run", "-h", "127.0.0.1", "-p", &port, "--cluster", "--tick-ms", "20"]);
        command.args(["--node-id", &id.to_string(), "--max-session-grace", "60000"]);
        for member in 1..=voters {
            let spec = format!("{member}={}/{}", self.peer[member - 1], self.client[member - 1]);
            command.args(["--peer", &spec]);
        }
        command.arg("--data-dir").arg(self.data_dir(id));
        command.arg("--metrics-addr").arg(self.metrics[id - 1].to_string());
        command.args(&self.extra);
        command
    }

    fn start(&mut self, id: usize) {
        let mut child =
            self.command(id, 3).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
        let line = read_listening_line(&mut child).expect("the member reports its address");
        assert_eq!(line, self.client[id - 1].to_string());
        self.nodes[id - 1] = Some(child);
    }

    fn start_all(&mut self) {
        for id in 1..=3 {
            self.start(id);
        }
    }

    fn kill9(&mut self, id: usize) {
        if let Some(mut child) = self.nodes[id - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The member that answers HELLO with HELLO_OK, once the others name it as leader.
    fn leader(&self) -> usize {
        let mut found = 0;
        wait_until("a leader the others redirect to", WAIT, || {
            found = 0;
            let mut named = Vec::new();
            for id in 1..=3 {
                if self.nodes[id - 1].is_none() {
                    continue;
                }
                match hello(self.client[id - 1]) {
                    Some(None) => found = id,
                    Some(Some(leader)) => named.push(leader),
                    None => return false,
                }
            }
            found != 0 && named.iter().all(|n| *n == self.client[found - 1].to_string())
        });
        found
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 1..=3 {
            self.kill9(id);
        }
    }
}

/// Member `id`'s gauge `officer_NAME` from its /metrics, if it answers.
fn gauge(cluster: &Cluster, id: usize, name: &str) -> Option<u64> {
    let mut s = std::net::TcpStream::connect(cluster.metrics[id - 1]).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).ok()?;
    let prefix = format!("officer_{name} ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())?.parse().ok())
}

/// HELLO to `addr`: `Some(None)` served, `Some(Some(leader))` redirected, `None` not answered.
fn hello(addr: SocketAddr) -> Option<Option<String>> {
    let mut raw = Raw::connect_no_hello(addr);
    raw.send_bytes(&support::frames::hello_frame(1)).ok()?;
    match raw.try_recv()? {
        (_, Response::HelloOk(_)) => Some(None),
        (0, Response::Error { code: ErrorCode::NotLeader, message }) => Some(Some(message)),
        _ => None,
    }
}

fn lock(raw: &mut Raw, name: &str) -> u64 {
    let response = raw.call(&support::frames::lock_req(name));
    assert!(matches!(response, Response::Acquired { .. }), "{response:?}");
    token_of(&response)
}

#[test]
fn one_leader_serves_and_followers_name_it() {
    let mut cluster = Cluster::new();
    cluster.start_all();
    let leader = cluster.leader();
    for id in (1..=3).filter(|&id| id != leader) {
        assert_eq!(hello(cluster.client[id - 1]), Some(Some(cluster.client[leader - 1].to_string())));
    }
    let mut raw = Raw::connect(cluster.client[leader - 1]);
    let first = lock(&mut raw, "a");
    assert_eq!(raw.call(&Request::Unlock("a")), Response::Released);
    assert!(lock(&mut raw, "a") > first);
    assert_eq!(support::raw::stat(&mut raw, "cluster_leader"), 1);
    assert_eq!(support::raw::stat(&mut raw, "cluster_node_id"), leader as u64);
    assert!(support::raw::stat(&mut raw, "cluster_commit_index") >= 3);
}

/// Tokens come from the log: strictly increasing across a leader's `kill -9` and across a
/// restart of every member, with no state file.
#[test]
fn tokens_increase_across_a_failover_and_a_full_restart() {
    let mut cluster = Cluster::new();
    cluster.start_all();
    let mut last = 0;
    let mut take = |cluster: &Cluster, rounds: usize| {
        let mut raw = Raw::connect(cluster.client[cluster.leader() - 1]);
        for i in 0..rounds {
            let token = lock(&mut raw, &format!("t{i}"));
            assert!(token > last, "token {token} after {last}");
            last = token;
        }
    };
    take(&cluster, 20);
    let old = cluster.leader();
    cluster.kill9(old);
    take(&cluster, 20);
    cluster.start(old);
    for id in 1..=3 {
        cluster.kill9(id);
    }
    cluster.start_all();
    take(&cluster, 20);
}

/// A resumable session's lock survives the leader's `kill -9`: the new leader knows the
/// session, lets it resume, and its grant and token are intact; a plain connection's lock is
/// released by the takeover.
#[test]
fn a_resumable_session_keeps_its_lock_through_a_failover() {
    let mut cluster = Cluster::new();
    cluster.start_all();
    let leader = cluster.leader();
    let mut with_session = Raw::connect(cluster.client[leader - 1]);
    let open = with_session
        .call(&Request::SessionOpen(SessionOpen { grace_ms: 30_000, skip_while_detached: false }));
    let Response::SessionOk(ok) = open else { panic!("{open:?}") };
    assert!(ok.grace_ms > 0);
    let token = lock(&mut with_session, "kept");
    let mut plain = Raw::connect(cluster.client[leader - 1]);
    lock(&mut plain, "released");
    cluster.kill9(leader);
    let new = cluster.leader();
    assert_ne!(new, leader);
    let mut again = Raw::connect(cluster.client[new - 1]);
    let resume = SessionResume { session_id: ok.session_id, secret: ok.secret };
    let resumed = again.call(&Request::SessionResume(resume));
    assert!(matches!(resumed, Response::Resumed(_)), "{resumed:?}");
    let check = again.call(&Request::Check(officer::protocol::TokenRequest { name: "kept", token }));
    assert_eq!(check, Response::Checked { held: true });
    // Listings go through a read index on the leader: pipelined behind a LOCK of the same
    // connection, LOCKS sees it (its answer comes after the LOCK's, in order).
    let id = again.send(&support::frames::lock_req("pipelined"));
    let listed = again.send(&support::frames::locks_req(""));
    let (first, acquired) = again.recv();
    assert_eq!(first, id, "{acquired:?}");
    let (second, locks) = again.recv();
    assert_eq!(second, listed);
    let Response::Locks { locks, .. } = locks else { panic!("{locks:?}") };
    let names: Vec<&str> = locks.iter().map(|l| l.name.as_str()).collect();
    assert!(names.contains(&"kept") && names.contains(&"pipelined"), "{names:?}");
    assert!(support::raw::stat(&mut again, "cluster_reads") >= 1);
    // The plain connection's lock goes once the new leader has suspended its predecessor's
    // sessions: another client gets it.
    let mut other = Raw::connect(cluster.client[new - 1]);
    let later = other.call(&Request::Lock(officer::protocol::LockRequest {
        name: "released",
        timeout_ms: Some(10_000),
        queue_max: None,
    }));
    assert!(token_of(&later) > token, "{later:?}");
}

fn run_to_exit(mut command: Command) -> (Option<i32>, String) {
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    let status = wait_exit(&mut child, WAIT).expect("the member exits");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut stderr).expect("stderr");
    (status.code(), stderr)
}

fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).expect("the raft log");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(path, bytes).expect("write it back");
}

/// A member whose log is damaged in the middle, or whose data directory belongs to a cluster
/// of other voters, refuses to start (it never votes), with the reason on stderr.
#[test]
fn a_damaged_or_foreign_data_directory_is_refused() {
    let mut cluster = Cluster::new();
    cluster.start_all();
    let leader = cluster.leader();
    let mut raw = Raw::connect(cluster.client[leader - 1]);
    for i in 0..50 {
        lock(&mut raw, &format!("n{i}"));
    }
    let victim = (1..=3).find(|&id| id != leader).expect("a follower");
    let log = cluster.data_dir(victim).join("raft.log");
    wait_until("the follower's log to hold the entries", WAIT, || {
        std::fs::metadata(&log).map(|m| m.len() > 2000).unwrap_or(false)
    });
    cluster.kill9(victim);
    let (code, stderr) = run_to_exit(cluster.command(victim, 2));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("belongs to a cluster of nodes [1, 2, 3]"), "{stderr}");
    flip_middle_byte(&log);
    let (code, stderr) = run_to_exit(cluster.command(victim, 3));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("raft log"), "{stderr}");
    // The two others go on.
    assert!(lock(&mut Raw::connect(cluster.client[cluster.leader() - 1]), "after") > 0);
}

/// With a small snapshot interval the members compact their logs as they go. A follower
/// down while the leader compacts past its log catches up from the leader's snapshot (its
/// /metrics says so); then, with the old leader and the third member killed in turn, the
/// caught-up member is elected and serves from the restored table: a resumable session's
/// lock is there, and tokens go on increasing.
#[test]
fn a_follower_behind_the_compacted_log_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::new();
    cluster.extra = vec!["--snapshot-min-bytes".into(), "2048".into()];
    cluster.start_all();
    let leader = cluster.leader();
    let behind = (1..=3).find(|&id| id != leader).expect("a follower");
    let third = (1..=3).find(|&id| id != leader && id != behind).expect("another");
    let mut raw = Raw::connect(cluster.client[leader - 1]);
    let open = raw.call(&Request::SessionOpen(SessionOpen { grace_ms: 60_000, skip_while_detached: false }));
    let Response::SessionOk(ok) = open else { panic!("{open:?}") };
    let kept = lock(&mut raw, "kept");
    cluster.kill9(behind);
    let mut last = kept;
    for i in 0..300 {
        let name = format!("c{}", i % 10);
        last = lock(&mut raw, &name);
        assert_eq!(raw.call(&Request::Unlock(&name)), Response::Released);
    }
    let taken = support::raw::stat(&mut raw, "cluster_snapshots_taken");
    assert!(taken >= 2, "the leader took {taken} snapshots");
    assert!(support::raw::stat(&mut raw, "cluster_log_first_index") > 100);
    cluster.start(behind);
    wait_until("the follower to install the leader's snapshot", WAIT, || {
        gauge(&cluster, behind, "cluster_snapshots_installed").is_some_and(|n| n >= 1)
    });
    // More entries the third member will miss, so that the caught-up one wins the election.
    let applied = support::raw::stat(&mut raw, "cluster_applied_index");
    wait_until("the follower to apply the leader's log", WAIT, || {
        gauge(&cluster, behind, "cluster_applied_index").is_some_and(|n| n >= applied)
    });
    cluster.kill9(third);
    for i in 0..20 {
        last = lock(&mut raw, &format!("d{i}"));
    }
    let applied = support::raw::stat(&mut raw, "cluster_applied_index");
    wait_until("the follower to apply the last entries", WAIT, || {
        gauge(&cluster, behind, "cluster_applied_index").is_some_and(|n| n >= applied)
    });
    cluster.kill9(leader);
    cluster.start(third);
    assert_eq!(cluster.leader(), behind, "the member with the longest log leads");
    let mut again = Raw::connect(cluster.client[behind - 1]);
    let resumed =
        again.call(&Request::SessionResume(SessionResume { session_id: ok.session_id, secret: ok.secret }));
    assert!(matches!(resumed, Response::Resumed(_)), "{resumed:?}");
    let check = again.call(&Request::Check(officer::protocol::TokenRequest { name: "kept", token: kept }));
    assert_eq!(check, Response::Checked { held: true });
    assert!(lock(&mut again, "after") > last);
}
