//! The determinism proof a replicated officer stands on (issue 16): three raft-rs `RawNode`s in
//! one process, each over its own `DiskStorage` in a temporary data directory, messages routed
//! in memory (dropped, duplicated, cut by a partition in some runs), each node applying the
//! committed entries (`now` + one `Command`) to its own `LockTable`. Contended lock traffic is
//! proposed to whoever thinks it leads. Asserted:
//! - every node that applies log index i produces exactly the outputs every other node (and the
//!   leader, which would send them to clients) produced for i, including a node that crashed
//!   and replays its log from disk into a fresh table;
//! - tokens strictly increase per name and overall in every node's apply order, across leader
//!   changes;
//! - a leader cut off from the majority commits nothing while cut off (so it grants nothing:
//!   grants are outputs of applied, committed entries) and steps down (check quorum);
//! - after healing, every node reaches the same table: equal `state_lines()` (the digest hook)
//!   and every table's `check_invariants()` holds.
//!
//! Rounds are bounded (each is one raft tick and 10 ms of the leader's clock); no sleeps, no
//! sockets, no timed assertions.
#![cfg(feature = "cluster")]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use officer::cluster::raft::eraftpb::{ConfState, Entry, EntryType, Message};
use officer::cluster::raft::{Config, RawNode, StateRole};
use officer::cluster::{decode_entry, encode_entry, storage::LOG_FILE, DiskStorage, LogCommand, StoreError};
use officer::locks::{Command, LockOpts, LockTable, Mode, Name, Output, SessionId, TableLimits};
use officer::protocol::Response;

const NODES: u64 = 3;
const MS_PER_ROUND: u64 = 10;
const NAMES: [&str; 4] = ["a", "b", "c", "sem"];

/// The run's seed: `OFFICER_CLUSTER_SEED` (decimal) if set, to replay or vary a run, else the
/// test's own.
fn seed(default: u64) -> u64 {
    std::env::var("OFFICER_CLUSTER_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// xorshift64*: a seeded, dependency-free generator, so a failing seed can be replayed (raft's
/// own election jitter is not seeded; the assertions hold whatever it draws).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What one node applied: its table, and what the tokens it granted were.
struct Replica {
    table: LockTable,
    applied: u64,
    last_now: u64,
    last_token: u64,
    last_token_of: HashMap<String, u64>,
    /// Entries this replica has applied since it last started.
    applied_entries: u64,
}

impl Replica {
    fn new() -> Replica {
        Replica {
            table: LockTable::new(1, TableLimits::default()),
            applied: 0,
            last_now: 0,
            last_token: 0,
            last_token_of: HashMap::new(),
            applied_entries: 0,
        }
    }
}

struct Node {
    id: u64,
    dir: PathBuf,
    /// `None` while the node is down (crashed: its table is gone, its data directory stays).
    raw: Option<RawNode<DiskStorage>>,
    replica: Replica,
}

/// A client of the model: a session id and its next request id.
struct Client {
    session: u64,
    next_rid: u32,
    suspended: bool,
    /// Names it sent LOCKs for and has not unlocked since (its UNLOCKs mostly name these).
    asked: Vec<usize>,
}

#[derive(Default)]
struct Faults {
    /// Percent of messages dropped, and of messages delivered twice.
    drop_pct: u64,
    dup_pct: u64,
}

struct Cluster {
    nodes: Vec<Node>,
    inflight: Vec<Message>,
    /// Directed links that are down.
    cut: HashSet<(u64, u64)>,
    faults: Faults,
    rng: Rng,
    seed: u64,
    logger: slog::Logger,
    now: u64,
    /// The outputs of each applied log index, from the first node that applied it: every other
    /// application of that index must produce the same.
    outputs: BTreeMap<u64, Vec<Output>>,
    clients: Vec<Client>,
    next_session: u64,
    recent_tokens: VecDeque<u64>,
    /// Counts for the report.
    proposed: u64,
    dropped_proposals: u64,
    grants: u64,
    leaders_seen: HashSet<(u64, u64)>,
    _tmp: tempfile::TempDir,
}

fn config(id: u64, applied: u64) -> Config {
    let cfg = Config {
        id,
        election_tick: 10,
        heartbeat_tick: 2,
        applied,
        check_quorum: true,
        pre_vote: true,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        ..Config::default()
    };
    cfg.validate().expect("a valid raft config");
    cfg
}

fn tokens_of(response: &Response) -> Option<u64> {
    match response {
        Response::Acquired { token } => Some(*token),
        _ => None,
    }
}

/// Applies committed entries to `replica`, checking them against the outputs already recorded.
fn apply(
    node: u64,
    replica: &mut Replica,
    entries: Vec<Entry>,
    outputs: &mut BTreeMap<u64, Vec<Output>>,
    recent: &mut VecDeque<u64>,
    grants: &mut u64,
) {
    for entry in entries {
        assert_eq!(entry.get_entry_type(), EntryType::EntryNormal, "no conf changes in this model");
        assert_eq!(entry.index, replica.applied + 1, "node {node} applies in order");
        replica.applied = entry.index;
        if entry.data.is_empty() {
            continue; // a new leader's empty entry
        }
        let LogCommand { now, command } = decode_entry(&entry.data).expect("a committed entry decodes");
        // The leader's clock, never going back: a deterministic function of the log.
        let now = now.max(replica.last_now);
        replica.last_now = now;
        let mut out = Vec::new();
        replica.table.apply(now, &command, &mut out);
        replica.applied_entries += 1;
        // A resume hands back the outputs kept while the session was detached, old grants
        // among them: not new grants, so not in the token order.
        let replay = matches!(command, Command::Resume { .. });
        for o in out.iter().filter(|_| !replay) {
            if let (Some(token), Some(name)) = (tokens_of(&o.response), &o.lock) {
                assert!(
                    token > replica.last_token,
                    "node {node}: token {token} after {}",
                    replica.last_token
                );
                replica.last_token = token;
                let last = replica.last_token_of.entry(name.to_string()).or_insert(0);
                assert!(token > *last, "node {node}: token {token} of {name:?} after {last}");
                *last = token;
            }
        }
        match outputs.get(&entry.index) {
            Some(first) => {
                assert_eq!(first, &out, "node {node}'s outputs of entry {} ({command:?})", entry.index)
            }
            None => {
                for o in out.iter().filter(|_| !replay) {
                    if let Some(token) = tokens_of(&o.response) {
                        *grants += 1;
                        recent.push_back(token);
                        if recent.len() > 16 {
                            recent.pop_front();
                        }
                    }
                }
                outputs.insert(entry.index, out);
            }
        }
    }
}

impl Cluster {
    fn new(seed: u64, faults: Faults) -> Cluster {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let voters = ConfState { voters: (1..=NODES).collect(), ..Default::default() };
        let nodes = (1..=NODES)
            .map(|id| {
                let dir = tmp.path().join(format!("node{id}"));
                let mut store = DiskStorage::open(&dir).expect("open a fresh log");
                store.initialize(&voters).expect("initialize");
                let raw = RawNode::new(&config(id, 0), store, &logger).expect("a raft node");
                Node { id, dir, raw: Some(raw), replica: Replica::new() }
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            inflight: Vec::new(),
            cut: HashSet::new(),
            faults,
            rng: Rng(seed | 1),
            seed,
            logger,
            now: 0,
            outputs: BTreeMap::new(),
            clients: Vec::new(),
            next_session: 1,
            recent_tokens: VecDeque::new(),
            proposed: 0,
            dropped_proposals: 0,
            grants: 0,
            leaders_seen: HashSet::new(),
            _tmp: tmp,
        };
        cluster.nodes[0].raw.as_mut().unwrap().campaign().expect("campaign");
        cluster.run_until("a first leader", 100, |c| c.leader().is_some());
        let attach: Vec<Command> = (0..6).map(|_| cluster.new_client()).collect();
        cluster.propose(attach);
        cluster
    }

    fn new_client(&mut self) -> Command {
        let session = self.next_session;
        self.next_session += 1;
        self.clients.push(Client { session, next_rid: 1, suspended: false, asked: Vec::new() });
        Command::Attach { session: SessionId(session), label: format!("client{session}") }
    }

    /// The nodes that believe they lead (two, briefly, around a partition).
    fn leaders(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].raw.as_ref().is_some_and(|r| r.raft.state == StateRole::Leader))
            .collect()
    }

    /// The leader of the highest term, if any.
    fn leader(&self) -> Option<usize> {
        self.leaders().into_iter().max_by_key(|&i| self.nodes[i].raw.as_ref().map_or(0, |r| r.raft.term))
    }

    /// Proposes `commands` at the current time to every node that believes it leads: the one
    /// that truly leads commits them, a deposed one's copies are never committed.
    fn propose(&mut self, commands: Vec<Command>) {
        for i in self.leaders() {
            let raw = self.nodes[i].raw.as_mut().unwrap();
            for command in &commands {
                let mut data = Vec::new();
                encode_entry(&LogCommand { now: self.now, command: command.clone() }, &mut data);
                self.proposed += 1;
                if raw.propose(vec![], data).is_err() {
                    self.dropped_proposals += 1;
                }
            }
        }
    }

    fn round(&mut self) {
        self.now += MS_PER_ROUND;
        for node in &mut self.nodes {
            if let Some(raw) = node.raw.as_mut() {
                raw.tick();
            }
        }
        for _ in 0..3 {
            self.deliver();
            for i in 0..self.nodes.len() {
                self.handle_ready(i);
            }
        }
        for i in self.leaders() {
            let raw = self.nodes[i].raw.as_ref().unwrap();
            self.leaders_seen.insert((raw.raft.term, raw.raft.id));
        }
    }

    fn deliver(&mut self) {
        let messages = std::mem::take(&mut self.inflight);
        for m in messages {
            if self.cut.contains(&(m.from, m.to)) || self.rng.chance(self.faults.drop_pct) {
                continue;
            }
            let copies = if self.rng.chance(self.faults.dup_pct) { 2 } else { 1 };
            if let Some(raw) = self.nodes[(m.to - 1) as usize].raw.as_mut() {
                for _ in 0..copies {
                    // A step error (a stale or unexpected message) is raft refusing it, not ours.
                    let _ = raw.step(m.clone());
                }
            }
        }
    }

    /// One `Ready`, in raft-rs's order: send what may go at once, apply what is committed,
    /// persist entries and hard state with one fsync, only then send what needed them on disk,
    /// advance, and apply what that committed.
    fn handle_ready(&mut self, i: usize) {
        let Node { id, raw, replica, .. } = &mut self.nodes[i];
        let Some(raw) = raw.as_mut() else { return };
        if !raw.has_ready() {
            return;
        }
        let mut rd = raw.ready();
        self.inflight.extend(rd.take_messages());
        assert!(rd.snapshot().is_empty(), "no snapshots in this model: nothing is compacted");
        let (outputs, recent, grants) = (&mut self.outputs, &mut self.recent_tokens, &mut self.grants);
        apply(*id, replica, rd.take_committed_entries(), outputs, recent, grants);
        raw.mut_store().persist(rd.entries(), rd.hs()).expect("persist");
        self.inflight.extend(rd.take_persisted_messages());
        let mut light = raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            raw.mut_store().set_commit(commit).expect("set commit");
        }
        self.inflight.extend(light.take_messages());
        apply(*id, replica, light.take_committed_entries(), outputs, recent, grants);
        raw.advance_apply();
    }

    fn run_until(&mut self, what: &str, max_rounds: usize, done: impl Fn(&Cluster) -> bool) {
        for _ in 0..max_rounds {
            if done(self) {
                return;
            }
            self.round();
        }
        assert!(done(self), "no {what} within {max_rounds} rounds");
    }

    /// A few random client commands, most of them contended LOCKs and UNLOCKs.
    fn workload(&mut self) -> Vec<Command> {
        let mut cmds = Vec::new();
        for _ in 0..self.rng.below(8) {
            let c = self.rng.below(self.clients.len() as u64) as usize;
            let mut name_i = self.rng.below(NAMES.len() as u64) as usize;
            let token = self.recent_tokens.get(self.rng.below(16) as usize).copied().unwrap_or(1);
            let r = self.rng.below(100);
            let client = &mut self.clients[c];
            if r < 45 {
                client.asked.push(name_i);
            } else if (45..85).contains(&r) && !client.asked.is_empty() {
                name_i = client.asked.swap_remove(0);
            }
            let name = Name::new(NAMES[name_i]);
            let (session, request_id) = (SessionId(client.session), client.next_rid);
            client.next_rid += 1;
            let suspended = client.suspended;
            let cmd = match r {
                _ if suspended && r < 90 => continue,
                0..=44 => {
                    let mode = if NAMES[name_i] == "sem" {
                        Mode::Permits { count: 1 + self.rng.below(2) as u32, limit: 3 }
                    } else if self.rng.chance(25) {
                        Mode::Shared
                    } else {
                        Mode::Exclusive
                    };
                    let opts = LockOpts {
                        mode,
                        lease_ms: self.rng.chance(20).then(|| 100 + self.rng.below(400) as u32),
                        max_hold_ms: self.rng.chance(5).then_some(600),
                        lock_delay_ms: if self.rng.chance(5) { 50 } else { 0 },
                        notify_contention: self.rng.chance(10),
                    };
                    let timeout_ms = (!self.rng.chance(15)).then(|| self.rng.below(400) as u32);
                    let queue_max = self.rng.chance(10).then_some(2);
                    Command::Lock { session, request_id, name, timeout_ms, queue_max, opts }
                }
                45..=79 => Command::Unlock { session, request_id, name, token: None },
                80..=84 => Command::Unlock { session, request_id, name, token: Some(token) },
                85..=87 => Command::Renew { session, request_id, name, token },
                88..=89 => Command::Check { session, request_id, name, token },
                90..=91 => Command::Downgrade { session, request_id, name, token },
                92 => {
                    Command::Revoke { session, request_id, name, token: self.rng.chance(50).then_some(token) }
                }
                93..=94 => Command::Reset { session, request_id },
                95..=96 => Command::OpenSession { session, request_id, grace_ms: 300, secret: [c as u8; 16] },
                97 => {
                    self.clients[c].suspended = true;
                    Command::Suspend { session }
                }
                98 => {
                    self.clients.swap_remove(c);
                    cmds.push(Command::Detach { session });
                    self.new_client()
                }
                _ => {
                    // A resume from a fresh connection (refused if the session is not resumable).
                    let from = self.new_client();
                    let Command::Attach { session: from_id, .. } = from else { unreachable!() };
                    cmds.push(from);
                    self.clients.pop(); // `from` is forgotten by a resume, or unused after a refusal
                    self.clients[c].suspended = false;
                    Command::Resume { session, request_id, from: from_id, secret: [c as u8; 16] }
                }
            };
            cmds.push(cmd);
        }
        // Timers fire on the leader and become entries: one Expire a turn, as the server does.
        cmds.push(Command::Expire);
        cmds
    }

    fn load(&mut self, rounds: usize) {
        for _ in 0..rounds {
            let cmds = self.workload();
            self.propose(cmds);
            self.round();
        }
    }

    fn isolate(&mut self, i: usize) {
        let id = self.nodes[i].id;
        for other in 1..=NODES {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    /// Crashes a node that is not the leader; returns its index.
    fn crash_a_follower(&mut self) -> usize {
        let leader = self.leader().expect("a leader");
        let follower = (0..self.nodes.len()).find(|&i| i != leader).unwrap();
        self.crash(follower);
        follower
    }

    fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.raw = None;
        node.replica = Replica::new();
    }

    /// Restarts a crashed node from its data directory: raft state from the log, the table
    /// rebuilt by applying the committed entries again from index 1.
    fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let store = DiskStorage::open(&node.dir).expect("reopen the log");
        node.raw = Some(RawNode::new(&config(node.id, 0), store, &self.logger).expect("a raft node"));
    }

    /// Heals the network, restarts the nodes that are down, then runs until every node has
    /// applied the leader's whole log.
    fn converge(&mut self) {
        self.cut.clear();
        self.faults = Faults::default();
        for i in 0..self.nodes.len() {
            if self.nodes[i].raw.is_none() {
                self.restart(i);
            }
        }
        self.settle();
    }

    /// Runs until every running node has applied the leader's whole log, one last entry from
    /// the leader committing everything before it.
    fn settle(&mut self) {
        self.run_until("leader", 300, |c| c.leader().is_some());
        self.propose(vec![Command::Expire]);
        self.run_until("convergence", 500, |c| {
            let Some(l) = c.leader() else { return false };
            let raw = c.nodes[l].raw.as_ref().unwrap();
            let last = raw.raft.raft_log.last_index();
            raw.raft.raft_log.committed == last && c.running().all(|n| n.replica.applied == last)
        });
    }

    fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.raw.is_some())
    }

    /// The end state: the same table on every running node, each one consistent.
    fn assert_same_tables(&self) {
        let mut running = self.running();
        let first = running.next().expect("a running node");
        let lines = first.replica.table.state_lines();
        first.replica.table.check_invariants().unwrap_or_else(|e| panic!("node {}: {e}", first.id));
        for node in running {
            node.replica.table.check_invariants().unwrap_or_else(|e| panic!("node {}: {e}", node.id));
            assert_eq!(
                node.replica.table.state_lines(),
                lines,
                "node {} differs from node {}",
                node.id,
                first.id
            );
            assert_eq!(node.replica.table.digest(), first.replica.table.digest());
        }
    }

    fn report(&self, run: &str, started: Instant) {
        let stats = self.nodes[0].replica.table.stats();
        println!(
            "{run} (seed {}): {} entries applied, {} proposed ({} refused), {} grants ({} table-wide), {} leaders (term, id) seen, {} locks held at the end, {:?}",
            self.seed,
            self.outputs.len(),
            self.proposed,
            self.dropped_proposals,
            self.grants,
            stats.acquired,
            self.leaders_seen.len(),
            stats.locks_held,
            started.elapsed()
        );
        assert!(self.grants > 50, "{run}: the load granted {} locks", self.grants);
    }
}

#[test]
fn a_reliable_network_replicates_the_same_table() {
    let started = Instant::now();
    let mut cluster = Cluster::new(seed(0x5eed_0001), Faults::default());
    cluster.load(600);
    cluster.converge();
    cluster.assert_same_tables();
    cluster.report("reliable", started);
}

#[test]
fn drops_and_duplicates_change_nothing() {
    let started = Instant::now();
    let mut cluster = Cluster::new(seed(0x5eed_0002), Faults { drop_pct: 10, dup_pct: 5 });
    cluster.load(600);
    cluster.converge();
    cluster.assert_same_tables();
    cluster.report("lossy", started);
}

/// The leader is cut off from both followers: it commits (and so grants) nothing while cut
/// off, steps down by check quorum, the majority elects a new leader and goes on granting with
/// higher tokens; after healing the old leader's uncommitted entries are replaced.
#[test]
fn an_isolated_leader_commits_nothing_and_a_new_one_takes_over() {
    let started = Instant::now();
    let mut cluster = Cluster::new(seed(0x5eed_0003), Faults::default());
    cluster.load(100);
    let old = cluster.leader().expect("a leader");
    let old_term = cluster.nodes[old].raw.as_ref().unwrap().raft.term;
    let committed = cluster.nodes[old].raw.as_ref().unwrap().raft.raft_log.committed;
    let grants_before = cluster.grants;
    cluster.isolate(old);
    let (mut overlap_rounds, mut stepped_down_after) = (0, None);
    for round in 0..200 {
        let cmds = cluster.workload();
        cluster.propose(cmds);
        cluster.round();
        let raw = cluster.nodes[old].raw.as_ref().unwrap();
        assert_eq!(raw.raft.raft_log.committed, committed, "the cut-off leader committed an entry");
        let leaders = cluster.leaders();
        if leaders.len() > 1 {
            overlap_rounds += 1;
        }
        if raw.raft.state != StateRole::Leader && stepped_down_after.is_none() {
            stepped_down_after = Some(round + 1);
        }
    }
    let stepped_down_after = stepped_down_after.expect("check quorum steps the cut-off leader down");
    let new = cluster.leader().expect("the majority elects a leader");
    assert_ne!(new, old);
    assert!(cluster.nodes[new].raw.as_ref().unwrap().raft.term > old_term);
    assert!(cluster.grants > grants_before, "the majority side went on granting");
    println!(
        "partition: the cut-off leader stepped down after {stepped_down_after} ticks; {overlap_rounds} rounds had two nodes in the leader role (the old one committing nothing)"
    );
    cluster.load(100);
    cluster.converge();
    cluster.assert_same_tables();
    cluster.report("partition", started);
}

/// A follower crashes (its log gets a torn tail) and restarts, replaying its log into a fresh
/// table; then the leader crashes and restarts. Every replay reproduces the recorded outputs.
#[test]
fn crashed_nodes_replay_their_log_to_the_same_table() {
    let started = Instant::now();
    let mut cluster = Cluster::new(seed(0x5eed_0004), Faults { drop_pct: 3, dup_pct: 0 });
    cluster.load(80);
    let follower = cluster.crash_a_follower();
    // A crash mid-append: half a record at the end of the follower's log.
    let log = cluster.nodes[follower].dir.join(LOG_FILE);
    let mut file = OpenOptions::new().append(true).open(&log).expect("the log file");
    file.write_all(&[0x21, 0, 0, 0, 0xde, 0xad]).expect("a torn tail");
    drop(file);
    cluster.load(80);
    cluster.restart(follower);
    let torn = cluster.nodes[follower].raw.as_ref().unwrap().store().open_report().torn_bytes;
    assert_eq!(torn, 6);
    cluster.load(80);
    let leader = cluster.leader().expect("a leader");
    cluster.crash(leader);
    cluster.load(100);
    let new = cluster.leader().expect("a new leader after the crash");
    assert_ne!(new, leader);
    cluster.restart(leader);
    cluster.load(60);
    cluster.converge();
    cluster.assert_same_tables();
    for node in &cluster.nodes {
        assert_eq!(node.replica.applied, cluster.nodes[new].replica.applied);
    }
    let replayed = cluster.nodes[follower].replica.applied_entries;
    assert!(replayed > 100, "the restarted follower replayed {replayed} entries");
    cluster.report("crash-restart", started);
}

/// A follower whose log is damaged in the middle while it is down does not come back: its
/// storage refuses to open, so it never votes on that log; the other two go on granting and
/// agree.
#[test]
fn a_corrupt_log_keeps_its_node_down_and_the_majority_goes_on() {
    let started = Instant::now();
    let mut cluster = Cluster::new(seed(0x5eed_0005), Faults::default());
    cluster.load(100);
    let follower = cluster.crash_a_follower();
    let log = cluster.nodes[follower].dir.join(LOG_FILE);
    let mut bytes = std::fs::read(&log).expect("the log");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&log, &bytes).expect("damage the log");
    match DiskStorage::open(&cluster.nodes[follower].dir) {
        Err(StoreError::Corrupt { offset, .. }) => assert!(offset as usize <= middle),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a log damaged in the middle opened"),
    }
    let grants = cluster.grants;
    cluster.load(200);
    assert!(cluster.grants > grants, "two of three nodes go on granting");
    cluster.settle();
    cluster.assert_same_tables();
    cluster.report("corrupt follower", started);
}
