//! The cluster under faults, judged by its clients' history: a 3-node `officer run --cluster`
//! (support::cluster) serves contended load (16 clients on 5 names, each looping
//! lock / hold / unlock with a resumable session, reconnecting to whichever member leads: 12
//! raw-frame workers whose every reconnect is logged, 4 on the library's cluster client)
//! while the test injects, in turn and twice over: kill -9 of the leader, kill -9 of a
//! follower, a restart of the whole cluster, a partition isolating the leader with half of the
//! clients still on it, a partition of a follower, and a freeze of the leader's links
//! (half-open: nothing forwarded, nothing reset). Each fault is followed by a wait for an
//! agreed leader and for grants to go on. Then the history checker (support::history) must find
//! no violation: no two holds of a name at once, tokens in grant order and increasing across
//! failovers and restarts, no acknowledged grant lost across a resume, FIFO among fenced
//! waiters. A second test runs the same load against one plain server whose connections are
//! reset, and shows the checker finds faults planted in that real history.
//!
//! Bounded: every wait is a polling loop with a limit, each fault waits for a fixed number of
//! grants, the load stops once the faults are done (about 20 s in debug on 2 cores). A failed
//! run keeps the nodes' logs under the target's tmp directory and prints where.

#![cfg(feature = "cluster")]

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use officer::client::LockOptions;
use support::cluster::{Cluster, Worker, WorkerControl, NODES};
use support::history::{check, Event, History, Kind, Op, Outcome, Recorder, Violation};
use support::rng::Rng;

const CLIENTS: u32 = 12;
/// Clients on the library's cluster client, beside the raw ones.
const LIBRARY_CLIENTS: u32 = 4;
const NAMES: [&str; 5] = ["fault/a", "fault/b", "fault/c", "fault/d", "fault/e"];
/// Raft tick of every node: elections after 10 ticks, so a failover takes about a second.
const TICK_MS: u32 = 50;
/// The sessions' grace: long enough for a whole-cluster restart and an election.
const GRACE_MS: u32 = 30_000;
/// Grants that must follow each fault (and the start) before the next one.
const PROGRESS: u64 = 100;
/// Passes of the six faults.
const ROUNDS: usize = 2;
/// Bound on an election or a node's return after a fault.
const ELECTION: Duration = Duration::from_secs(30);
/// Bound on the grants after a fault.
const PROGRESS_LIMIT: Duration = Duration::from_secs(60);

/// One load client: loops until told to stop. A hold lasts 0-3 ms; one in four is CHECKed
/// while held, and so is every hold during which the client had to resume its session.
fn run_worker(mut worker: Worker, control: Arc<WorkerControl>, seed: u64) {
    let mut rng = Rng::new(seed);
    while !control.stop.load(Ordering::SeqCst) {
        let name = NAMES[rng.below(NAMES.len() as u64) as usize];
        let before = worker.reconnects();
        let Ok(token) = worker.lock(name) else { continue };
        thread::sleep(Duration::from_millis(rng.below(4)));
        if (rng.below(4) == 0 || worker.reconnects() != before) && worker.check(name, token).is_err() {
            continue;
        }
        let _ = worker.unlock(name, token);
    }
}

/// One load client on the library's cluster client (`ClientBuilder::cluster`, which follows
/// `not_leader` and resumes its session on the new leader by itself). Its reconnects are
/// invisible here, so: an error of any call may mean the session is gone, and is logged as a
/// refused resume (the checker then asserts nothing more about this client's holds); an UNLOCK
/// answered "not held" is not judged either, since the library may have resent an UNLOCK
/// served before a loss. A CHECK answered "not held" is judged: the hold was never unlocked.
fn run_library_client(members: Vec<String>, mut rec: Recorder, control: Arc<WorkerControl>, seed: u64) {
    let mut rng = Rng::new(seed);
    let connect = || {
        officer::client::Client::builder()
            .cluster(members.iter())
            .session_grace(Duration::from_millis(GRACE_MS.into()))
            .connect()
    };
    let mut client = None;
    let started = Instant::now();
    while !control.stop.load(Ordering::SeqCst) {
        let Some(c) = client.as_ref() else {
            match connect() {
                Ok(c) => client = Some(c),
                Err(_) => {
                    assert!(started.elapsed() < PROGRESS_LIMIT * 4, "the library client never connected");
                    thread::sleep(Duration::from_millis(50));
                }
            }
            continue;
        };
        let name = NAMES[rng.below(NAMES.len() as u64) as usize];
        let op = rec.invoke(Op::Lock { name: name.to_owned() });
        let token = match c.lock(name, LockOptions::default()) {
            Ok(a) if a.already_acquired() => {
                rec.complete(op, Outcome::AlreadyAcquired(a.token()));
                a.token()
            }
            Ok(a) => {
                rec.complete(op, Outcome::Acquired(a.token()));
                a.token()
            }
            Err(e) => {
                rec.complete(op, Outcome::Refused(e.to_string()));
                lost_track(&mut rec, &mut client, &e);
                continue;
            }
        };
        control.stats.grants.fetch_add(1, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(rng.below(4)));
        let op = rec.invoke(Op::Check { name: name.to_owned(), token });
        match c.check(name, token) {
            Ok(held) => rec.complete(op, Outcome::Held(held)),
            Err(e) => {
                rec.complete(op, Outcome::Refused(e.to_string()));
                lost_track(&mut rec, &mut client, &e);
                continue;
            }
        }
        let op = rec.invoke(Op::Unlock { name: name.to_owned(), token });
        match c.unlock(name) {
            Ok(()) => rec.complete(op, Outcome::Released),
            Err(e) => {
                rec.complete(op, Outcome::Refused(e.to_string()));
                lost_track(&mut rec, &mut client, &e);
            }
        }
    }
}

/// After a library error: the session may be gone, so its holds are not judged any more
/// (logged as a refused resume), and a fresh client is built.
fn lost_track(rec: &mut Recorder, client: &mut Option<officer::client::Client>, e: &officer::client::Error) {
    let op = rec.invoke(Op::Resume);
    rec.complete(op, Outcome::Refused(format!("library error: {e}")));
    *client = None;
}

struct Load {
    controls: Vec<Arc<WorkerControl>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(cluster: &Cluster, history: &History) -> Load {
        let mut controls = Vec::new();
        let mut threads = Vec::new();
        for c in 0..CLIENTS {
            let control = Arc::new(WorkerControl::default());
            let worker = Worker::new(cluster.members(), GRACE_MS, history.recorder(c), Arc::clone(&control));
            let for_thread = Arc::clone(&control);
            threads.push(thread::spawn(move || run_worker(worker, for_thread, 0x5eed + u64::from(c))));
            controls.push(control);
        }
        let members: Vec<String> = cluster.members().iter().map(|m| m.to_string()).collect();
        for c in 0..LIBRARY_CLIENTS {
            let control = Arc::new(WorkerControl::default());
            let (rec, for_thread, members) =
                (history.recorder(CLIENTS + c), Arc::clone(&control), members.clone());
            threads.push(thread::spawn(move || {
                run_library_client(members, rec, for_thread, 0x11b + u64::from(c))
            }));
            controls.push(control);
        }
        Load { controls, threads }
    }

    fn grants(&self) -> u64 {
        self.controls.iter().map(|c| c.stats.grants.load(Ordering::SeqCst)).sum()
    }

    fn reconnects(&self) -> u64 {
        self.controls.iter().map(|c| c.stats.reconnects.load(Ordering::SeqCst)).sum()
    }

    fn redirects(&self) -> u64 {
        self.controls.iter().map(|c| c.stats.redirects.load(Ordering::SeqCst)).sum()
    }

    /// Waits for `PROGRESS` more grants, checking the nodes stay up.
    fn progress(&self, cluster: &mut Cluster, history: &History, after: &str) {
        let target = self.grants() + PROGRESS;
        let start = Instant::now();
        while self.grants() < target {
            cluster.assert_alive();
            assert!(
                !self.threads.iter().any(|t| t.is_finished()),
                "a load client stopped (panicked) after {after}"
            );
            assert!(
                start.elapsed() < PROGRESS_LIMIT,
                "only {} of {PROGRESS} grants in {PROGRESS_LIMIT:?} after {after}; last events:\n{}\n\
                 the raw workers:\n{}\n{}",
                PROGRESS + self.grants() - target,
                tail(history),
                workers(&self.controls[..CLIENTS as usize]),
                cluster.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(self) {
        for c in &self.controls {
            c.stop.store(true, Ordering::SeqCst);
        }
        for t in self.threads {
            t.join().expect("a load client panicked");
        }
    }
}

/// The last few events of every client, for the message of a stalled run.
fn tail(history: &History) -> String {
    let events = history.events();
    let mut out = String::new();
    for c in 0..CLIENTS + LIBRARY_CLIENTS {
        let mine: Vec<_> = events.iter().filter(|e| e.client == c).map(|e| (e.op, &e.kind)).collect();
        out.push_str(&format!("client {c}: {:?}\n", &mine[mine.len().saturating_sub(6)..]));
    }
    out
}

/// Each raw worker's own account of what it holds or waits for, for a stalled run's message.
fn workers(controls: &[Arc<WorkerControl>]) -> String {
    let lines: Vec<String> = controls
        .iter()
        .enumerate()
        .map(|(c, control)| format!("worker {c}: {}", control.describe()))
        .collect();
    lines.join("\n")
}

/// What the server says of its locks, connections and detached sessions, asked on a connection
/// of its own (not through the proxy), for a stalled run's message.
fn server_listing(addr: std::net::SocketAddr) -> String {
    let client = match officer::client::Client::builder().host("127.0.0.1").port(addr.port()).connect() {
        Ok(client) => client,
        Err(e) => return format!("the server could not be asked: {e}"),
    };
    format!(
        "server locks: {:?}\nserver connections: {:?}\nserver detached sessions: {:?}",
        client.locks(),
        client.connections(),
        client.detached_sessions(0)
    )
}

/// Joins the load threads once they have stopped, or fails with `why_stuck()` when one is
/// still running after `limit`: a stuck worker makes the test fail with its story, not hang.
fn join_within(threads: Vec<thread::JoinHandle<()>>, limit: Duration, why_stuck: impl Fn() -> String) {
    let start = Instant::now();
    while threads.iter().any(|t| !t.is_finished()) {
        assert!(start.elapsed() < limit, "a load client did not stop in {limit:?}:\n{}", why_stuck());
        thread::sleep(Duration::from_millis(20));
    }
    for t in threads {
        t.join().expect("a load client panicked");
    }
}

/// Counts of what the run did, printed at the end.
#[derive(Default)]
struct Faults {
    injected: u32,
    failovers: u32,
}

impl Faults {
    /// Records the leader after a fault; a change of leader is a failover.
    fn leader(&mut self, before: usize, after: usize) -> usize {
        self.injected += 1;
        if before != after {
            self.failovers += 1;
        }
        after
    }
}

/// Says which fault starts, with the wall-clock time the nodes' log lines carry (UTC).
fn step(what: &str, node: usize) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    eprintln!("cluster_faults: {h:02}:{m:02}:{s:02} {what} (node {})", node + 1);
}

fn other_than(leader: usize) -> usize {
    (leader + 1) % NODES
}

/// One pass of the six faults, each followed by grants; returns the leader at the end.
fn round(
    cluster: &mut Cluster,
    load: &Load,
    history: &History,
    faults: &mut Faults,
    mut leader: usize,
) -> usize {
    // 1. kill -9 of the leader: the others elect one, the clients resume there.
    step("kill -9 of the leader", leader);
    cluster.kill9(leader);
    let dead = leader;
    leader = faults.leader(leader, cluster.wait_leader(&[dead], ELECTION));
    load.progress(cluster, history, "kill -9 of the leader");
    cluster.restart(dead);
    cluster.wait_follower_of(dead, leader, ELECTION);
    load.progress(cluster, history, "the killed leader's restart");

    // 2. kill -9 of a follower: the leader goes on with the other one.
    let follower = other_than(leader);
    step("kill -9 of a follower", follower);
    cluster.kill9(follower);
    load.progress(cluster, history, "kill -9 of a follower");
    cluster.restart(follower);
    leader = faults.leader(leader, cluster.wait_leader(&[], ELECTION));
    load.progress(cluster, history, "the follower's restart");

    // 3. The whole cluster killed and started again from its data directories.
    step("restart of the whole cluster, leader was", leader);
    cluster.restart_all();
    leader = faults.leader(leader, cluster.wait_leader(&[], ELECTION));
    load.progress(cluster, history, "the restart of the whole cluster");

    // 4. The leader cut off from its peers, with half of the clients still on it: the others
    // are told to avoid it and go to the new leader; the isolated one can commit nothing.
    let isolated = leader;
    for c in load.controls[..CLIENTS as usize].iter().step_by(2) {
        c.avoid.store(1 << isolated, Ordering::SeqCst);
    }
    step("isolation of the leader", isolated);
    cluster.isolate(isolated);
    leader = faults.leader(leader, cluster.wait_leader(&[isolated], ELECTION));
    load.progress(cluster, history, "the partition of the leader");
    step("heal", isolated);
    cluster.heal(isolated);
    cluster.wait_follower_of(isolated, leader, ELECTION);
    for c in &load.controls {
        c.avoid.store(0, Ordering::SeqCst);
    }
    load.progress(cluster, history, "the healed partition of the leader");

    // 5. A follower cut off, then back.
    let follower = other_than(leader);
    step("isolation of a follower", follower);
    cluster.isolate(follower);
    load.progress(cluster, history, "the partition of a follower");
    step("heal", follower);
    cluster.heal(follower);
    cluster.wait_follower_of(follower, leader, ELECTION);
    faults.leader(leader, cluster.wait_leader(&[], ELECTION));
    load.progress(cluster, history, "the healed partition of a follower");

    // 6. The leader's links frozen (half-open: nothing forwarded, nothing reset): the others
    // stop hearing it and elect another; thawed, it hears the new term and steps down.
    let frozen = leader;
    step("freeze of the leader's links", frozen);
    cluster.freeze(frozen);
    leader = faults.leader(leader, cluster.wait_leader(&[frozen], ELECTION));
    load.progress(cluster, history, "the freeze of the leader's links");
    step("thaw", frozen);
    cluster.thaw(frozen);
    cluster.wait_follower_of(frozen, leader, ELECTION);
    load.progress(cluster, history, "the thaw of the old leader's links");
    leader
}

#[test]
fn contended_load_through_crashes_restarts_and_partitions_keeps_every_lock_safe() {
    let history = History::new();
    let mut cluster = Cluster::start(TICK_MS, GRACE_MS);
    let mut leader = cluster.wait_leader(&[], ELECTION);
    let load = Load::start(&cluster, &history);
    load.progress(&mut cluster, &history, "the start");
    let mut faults = Faults::default();

    for _ in 0..ROUNDS {
        leader = round(&mut cluster, &load, &history, &mut faults, leader);
    }

    let (reconnects, redirects) = (load.reconnects(), load.redirects());
    load.stop();
    let report = history.check();
    println!(
        "cluster_faults: {} holds ({} by library clients, {} with a certain interval, {} fenced waits), {} faults, {} failovers, \
         {} session resumes ({} by the clients' count), {} abandoned sessions, {} not_leader redirects, \
         {} violations",
        report.holds.len(),
        report.holds.iter().filter(|h| h.client >= CLIENTS).count(),
        report.judged_holds(),
        report.queued_holds(),
        faults.injected,
        faults.failovers,
        report.resumes,
        reconnects,
        report.abandoned_sessions,
        redirects,
        report.violations.len()
    );
    assert!(
        report.violations.is_empty(),
        "violations: {:#?}",
        &report.violations[..report.violations.len().min(20)]
    );
    assert!(report.judged_holds() > 200, "too few judged holds for the check to mean much");
    assert!(faults.failovers >= 3, "the faults caused only {} failovers", faults.failovers);
    assert!(report.resumes > 0, "no client ever resumed its session");
    assert!(report.holds.iter().any(|h| h.client >= CLIENTS), "the library clients got no grant");
}

/// The same load and checker against one plain server behind a proxy that resets every
/// connection a few times: the workers' resume-and-resend path, judged without a cluster.
// It hung once in CI (every worker waiting on LOCK of one name): a worker whose fence PING
// failed to send, right after its LOCK, resumed without sending the LOCK again, so a grant
// whose ACQUIRED died with the connection was held by a worker that still waited for it
// (`Worker::lock` now resends on every new connection). A stall now fails with each worker's
// account and the server's listings.
#[test]
fn resets_of_a_single_server_leave_a_clean_history() {
    use support::process::ServerProcess;
    use support::proxy::Proxy;

    let server = ServerProcess::spawn(&["--max-session-grace", &GRACE_MS.to_string()]);
    let proxy = Proxy::start(server.addr);
    let history = History::new();
    let mut controls = Vec::new();
    let mut threads = Vec::new();
    for c in 0..CLIENTS {
        let control = Arc::new(WorkerControl::default());
        let worker = Worker::new(vec![proxy.addr()], GRACE_MS, history.recorder(c), Arc::clone(&control));
        let for_thread = Arc::clone(&control);
        threads.push(thread::spawn(move || run_worker(worker, for_thread, 0xfeed + u64::from(c))));
        controls.push(control);
    }
    let grants = |controls: &[Arc<WorkerControl>]| -> u64 {
        controls.iter().map(|c| c.stats.grants.load(Ordering::SeqCst)).sum()
    };
    let mut resets = 0;
    for _ in 0..5 {
        let target = grants(&controls) + PROGRESS;
        let start = Instant::now();
        while grants(&controls) < target {
            assert!(
                start.elapsed() < PROGRESS_LIMIT,
                "no progress between resets; last events:\n{}\nthe workers:\n{}\n{}",
                tail(&history),
                workers(&controls),
                server_listing(server.addr)
            );
            thread::sleep(Duration::from_millis(20));
        }
        resets += proxy.reset_all();
    }
    for c in &controls {
        c.stop.store(true, Ordering::SeqCst);
    }
    join_within(threads, PROGRESS_LIMIT, || {
        format!("{}\n{}", workers(&controls), server_listing(server.addr))
    });
    let report = history.check();
    println!(
        "single server: {} holds ({} judged, {} fenced), {resets} connections reset, {} resumes, {} violations",
        report.holds.len(),
        report.judged_holds(),
        report.queued_holds(),
        report.resumes,
        report.violations.len()
    );
    assert!(
        report.violations.is_empty(),
        "violations: {:#?}",
        &report.violations[..report.violations.len().min(20)]
    );
    assert!(report.resumes > 0, "no client resumed");
    assert_eq!(report.abandoned_sessions, 0, "a session could not be resumed on the same server");
    assert_checker_bites(&history.events());
}

/// The checker is not blind on a real history: one grant given another grant's token, or one
/// RELEASED turned into RELEASE_FAILED, is found.
fn assert_checker_bites(events: &[Event]) {
    let granted: Vec<usize> = (0..events.len())
        .filter(|&i| matches!(events[i].kind, Kind::Complete(Outcome::Acquired(_))))
        .collect();
    assert!(granted.len() > 2, "too few grants to mutate");
    let mut duplicated = events.to_vec();
    let Kind::Complete(Outcome::Acquired(token)) = events[granted[0]].kind.clone() else { unreachable!() };
    duplicated[granted[granted.len() / 2]].kind = Kind::Complete(Outcome::Acquired(token));
    let found = check(&duplicated).violations;
    assert!(
        found.iter().any(|v| matches!(v, Violation::DuplicateToken { .. })),
        "a duplicated token went unseen"
    );

    let mut lost = events.to_vec();
    let released = lost
        .iter()
        .rposition(|e| matches!(e.kind, Kind::Complete(Outcome::Released)))
        .expect("a RELEASED in the history");
    lost[released].kind = Kind::Complete(Outcome::ReleaseFailed);
    let found = check(&lost).violations;
    assert!(found.iter().any(|v| matches!(v, Violation::LostGrant { .. })), "a lost grant went unseen");
}
