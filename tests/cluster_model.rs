//! The determinism proof a replicated officer stands on (issue 16), through the library's
//! driver: three `officer::cluster::Node`s in one process, each over its own `DiskStorage` in a
//! temporary data directory, the raft messages their `poll` hands out routed in memory
//! (dropped, duplicated, cut by a partition in some runs), nodes crashed and restarted from
//! their data directories. Contended lock traffic is proposed to whoever thinks it leads, each
//! proposal with a tag; the leader fires its own timers as `Expire` entries. Asserted:
//! - every node that applies log index i produces exactly the outputs every other node (and the
//!   leader, which would send them to clients) produced for i, including a node that crashed
//!   and replays its log from disk into a fresh table;
//! - tokens strictly increase per name and overall in every node's apply order, across leader
//!   changes; cluster time (`applied_now`) never goes back on any node, even when the new
//!   leader's clock is far behind the old one's;
//! - a proposal is answered at most once, only by the node it was made to, with the outputs
//!   recorded for its index; after healing every proposal of a node still running is answered
//!   or dropped;
//! - a leader cut off from the majority commits nothing and answers nothing while cut off (so
//!   it answers no grant), steps down (check quorum), and its pending proposals end dropped;
//! - group commit: the leader's `Ready`s persist several entries per fsync;
//! - after healing, every node reaches the same table: equal `state_lines()` and `digest()`,
//!   and every table's `check_invariants()` holds.
//!
//! Rounds are bounded (each is one raft tick and 10 ms of the clock); no sleeps, no sockets,
//! no timed assertions.
#![cfg(feature = "cluster")]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use officer::cluster::raft::eraftpb::{ConfState, Message, MessageType};
use officer::cluster::raft::Storage as _;
use officer::cluster::{storage::LOG_FILE, DiskStorage, Event, Node, NodeConfig, StoreError};
use officer::locks::{Command, LockOpts, Mode, Name, Output, SessionId};
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

/// What the checker saw one node apply since it last started.
#[derive(Default)]
struct Seen {
    last_token: u64,
    last_token_of: HashMap<String, u64>,
    last_now: u64,
    /// Entries with a command applied since the node last started.
    applied_entries: u64,
    /// The index of the last leader's snapshot installed since the node last started.
    restored_at: u64,
}

/// One member: its data directory, and the node while it runs.
struct Member {
    id: u64,
    dir: PathBuf,
    /// `None` while the node is down (crashed: its table is gone, its data directory stays).
    node: Option<Node>,
    /// Where this node's clock reads 0 in the cluster's time: clocks of different machines.
    clock_base: u64,
    seen: Seen,
}

impl Member {
    fn node(&self) -> &Node {
        self.node.as_ref().expect("a running node")
    }
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

/// Where a proposal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Made to node `.0`, not answered yet.
    Pending(u64),
    Answered {
        node: u64,
        index: u64,
    },
    Dropped(u64),
    /// Its node crashed before answering.
    Lost,
}

struct Cluster {
    members: Vec<Member>,
    inflight: Vec<Message>,
    /// Directed links that are down.
    cut: HashSet<(u64, u64)>,
    faults: Faults,
    rng: Rng,
    seed: u64,
    now: u64,
    /// The outputs of each applied log index, from the first node that applied it: every other
    /// application of that index must produce the same.
    outputs: BTreeMap<(u64, u32), Vec<Output>>,
    /// Every proposal by tag.
    fates: HashMap<u64, Fate>,
    next_tag: u64,
    clients: Vec<Client>,
    next_session: u64,
    recent_tokens: VecDeque<u64>,
    /// Counts for the report.
    proposed: u64,
    refused_proposals: u64,
    grants: u64,
    leaders_seen: HashSet<(u64, u64)>,
    /// The nodes' `snapshot_min_bytes` (tiny in the snapshot run, so logs compact often).
    snapshot_min_bytes: u64,
    _tmp: tempfile::TempDir,
}

fn config(id: u64, snapshot_min_bytes: u64) -> NodeConfig {
    NodeConfig {
        tick_ms: MS_PER_ROUND,
        election_ticks: 10,
        heartbeat_ticks: 2,
        snapshot_min_bytes,
        ..NodeConfig::new(id)
    }
}

fn tokens_of(response: &Response) -> Option<u64> {
    match response {
        Response::Acquired { token } => Some(*token),
        _ => None,
    }
}

impl Cluster {
    fn new(seed: u64, faults: Faults) -> Cluster {
        Cluster::with_clocks(seed, faults, [0; NODES as usize])
    }

    fn with_clocks(seed: u64, faults: Faults, clock_bases: [u64; NODES as usize]) -> Cluster {
        Cluster::build(seed, faults, clock_bases, NodeConfig::new(1).snapshot_min_bytes)
    }

    fn build(
        seed: u64,
        faults: Faults,
        clock_bases: [u64; NODES as usize],
        snapshot_min_bytes: u64,
    ) -> Cluster {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let voters = ConfState { voters: (1..=NODES).collect(), ..Default::default() };
        let members = (1..=NODES)
            .map(|id| {
                let dir = tmp.path().join(format!("node{id}"));
                let mut store = DiskStorage::open(&dir).expect("open a fresh log");
                store.initialize(&voters).expect("initialize");
                let node = Node::new(&config(id, snapshot_min_bytes), store).expect("a node");
                let clock_base = clock_bases[id as usize - 1];
                Member { id, dir, node: Some(node), clock_base, seen: Seen::default() }
            })
            .collect();
        let mut cluster = Cluster {
            members,
            inflight: Vec::new(),
            cut: HashSet::new(),
            faults,
            rng: Rng(seed | 1),
            seed,
            now: 0,
            outputs: BTreeMap::new(),
            fates: HashMap::new(),
            next_tag: 1,
            clients: Vec::new(),
            next_session: 1,
            recent_tokens: VecDeque::new(),
            proposed: 0,
            refused_proposals: 0,
            grants: 0,
            leaders_seen: HashSet::new(),
            snapshot_min_bytes,
            _tmp: tmp,
        };
        cluster.members[0].node.as_mut().unwrap().campaign().expect("campaign");
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

    /// The time on member `i`'s own clock.
    fn local_now(&self, i: usize) -> u64 {
        self.now + self.members[i].clock_base
    }

    /// The nodes that believe they lead (two, briefly, around a partition).
    fn leaders(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].node.as_ref().is_some_and(Node::is_leader))
            .collect()
    }

    /// The leader of the highest term, if any.
    fn leader(&self) -> Option<usize> {
        self.leaders().into_iter().max_by_key(|&i| self.members[i].node().term())
    }

    /// Proposes `commands` to every node that believes it leads, each copy with its own tag:
    /// the one that truly leads commits them, a deposed one's copies are never committed.
    fn propose(&mut self, commands: Vec<Command>) {
        for i in self.leaders() {
            let now = self.local_now(i);
            let member = &mut self.members[i];
            let node = member.node.as_mut().unwrap();
            for command in &commands {
                let tag = self.next_tag;
                self.next_tag += 1;
                self.proposed += 1;
                match node.propose(now, command.clone(), tag) {
                    Ok(()) => {
                        self.fates.insert(tag, Fate::Pending(member.id));
                    }
                    Err(_) => self.refused_proposals += 1,
                }
            }
        }
    }

    fn round(&mut self) {
        self.now += MS_PER_ROUND;
        for i in 0..self.members.len() {
            let now = self.local_now(i);
            if let Some(node) = self.members[i].node.as_mut() {
                node.tick(now);
            }
        }
        for _ in 0..3 {
            self.deliver();
            for i in 0..self.members.len() {
                self.poll(i);
            }
        }
        for i in self.leaders() {
            let node = self.members[i].node();
            self.leaders_seen.insert((node.term(), node.id()));
        }
    }

    fn deliver(&mut self) {
        let messages = std::mem::take(&mut self.inflight);
        for m in messages {
            let lost = self.cut.contains(&(m.from, m.to)) || self.rng.chance(self.faults.drop_pct);
            if m.get_msg_type() == MessageType::MsgSnapshot {
                // What the server's transport reports: the snapshot left whole, or was lost
                // (raft then sends another).
                if let Some(sender) = self.members[(m.from - 1) as usize].node.as_mut() {
                    sender.report_snapshot(m.to, !lost);
                }
            }
            if lost {
                continue;
            }
            let copies = if self.rng.chance(self.faults.dup_pct) { 2 } else { 1 };
            if let Some(node) = self.members[(m.to - 1) as usize].node.as_mut() {
                for _ in 0..copies {
                    // A step error (a stale or unexpected message) refuses that message only.
                    let _ = node.step(m.clone());
                }
            }
        }
    }

    /// One `poll` of member `i`, its events checked: messages go in flight, applied entries
    /// are checked against the recorded outputs and the token order, answers against the
    /// proposals.
    fn poll(&mut self, i: usize) {
        let member = &mut self.members[i];
        let (id, seen) = (member.id, &mut member.seen);
        let Some(node) = member.node.as_mut() else { return };
        let mut events = Vec::new();
        node.poll(&mut events).expect("poll");
        assert!(node.applied_now() >= seen.last_now, "node {id}: cluster time went back");
        seen.last_now = node.applied_now();
        for event in events {
            match event {
                Event::Send(m) => {
                    assert_eq!(m.from, id);
                    self.inflight.push(m);
                }
                Event::Applied { index, position, tag, outputs } => {
                    check_applied(id, &mut self.members[i].seen, index, &outputs);
                    self.record((index, position), outputs);
                    if let Some(tag) = tag {
                        let fate = self.fates.insert(tag, Fate::Answered { node: id, index });
                        assert_eq!(fate, Some(Fate::Pending(id)), "node {id} answered tag {tag} at {index}");
                    }
                }
                Event::Dropped { tag } => {
                    let fate = self.fates.insert(tag, Fate::Dropped(id));
                    assert_eq!(fate, Some(Fate::Pending(id)), "node {id} dropped tag {tag}");
                }
                Event::ReadReady { .. } => panic!("node {id}: the model asks for no read index"),
                Event::Restored { index } => {
                    let seen = &mut self.members[i].seen;
                    assert!(
                        index > seen.restored_at,
                        "node {id}: a snapshot at {index} after {}",
                        seen.restored_at
                    );
                    seen.restored_at = index;
                }
            }
        }
    }

    /// The first application of `index` is the reference; every later one must equal it.
    fn record(&mut self, at: (u64, u32), out: Vec<Output>) {
        match self.outputs.get(&at) {
            Some(first) => assert_eq!(first, &out, "the outputs of entry {} position {}", at.0, at.1),
            None => {
                let replay = out.iter().any(is_replay);
                for o in out.iter().filter(|_| !replay) {
                    if let Some(token) = tokens_of(&o.response) {
                        self.grants += 1;
                        self.recent_tokens.push_back(token);
                        if self.recent_tokens.len() > 16 {
                            self.recent_tokens.pop_front();
                        }
                    }
                }
                self.outputs.insert(at, out);
            }
        }
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
                        skip_while_detached: self.rng.chance(20),
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
                95..=96 => Command::OpenSession {
                    session,
                    request_id,
                    grace_ms: 300,
                    secret: [c as u8; 16],
                    skip_while_detached: self.rng.chance(30),
                },
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
        // No Expire here: the leader's node fires its own timers as entries.
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
        let id = self.members[i].id;
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
        let follower = (0..self.members.len()).find(|&i| i != leader).unwrap();
        self.crash(follower);
        follower
    }

    /// The node is gone with its table and its pending proposals; its data directory stays.
    fn crash(&mut self, i: usize) {
        let member = &mut self.members[i];
        member.node = None;
        member.seen = Seen::default();
        for fate in self.fates.values_mut() {
            if *fate == Fate::Pending(member.id) {
                *fate = Fate::Lost;
            }
        }
    }

    /// Restarts a crashed node from its data directory: raft state from the log, the table
    /// rebuilt by applying the committed entries again from index 1.
    fn restart(&mut self, i: usize) {
        let member = &mut self.members[i];
        let store = DiskStorage::open(&member.dir).expect("reopen the log");
        member.node = Some(Node::new(&config(member.id, self.snapshot_min_bytes), store).expect("a node"));
    }

    /// Heals the network, restarts the nodes that are down, then runs until every node has
    /// applied the leader's whole log.
    fn converge(&mut self) {
        self.cut.clear();
        self.faults = Faults::default();
        for i in 0..self.members.len() {
            if self.members[i].node.is_none() {
                self.restart(i);
            }
        }
        self.settle();
    }

    /// Runs until every running node has applied the leader's whole log, one last entry from
    /// the leader committing everything before it; then every proposal of a running node has
    /// been answered or dropped.
    fn settle(&mut self) {
        self.run_until("leader", 300, |c| c.leader().is_some());
        self.propose(vec![Command::Expire]);
        self.run_until("convergence", 500, |c| {
            let Some(l) = c.leader() else { return false };
            let leader = c.members[l].node();
            let last = leader.last_index();
            // A proposal still in the leader's batch is not in `last` yet.
            leader.batched() == 0
                && leader.commit_index() == last
                && c.running().all(|n| n.applied_index() == last)
        });
        let pending: Vec<_> = self.fates.iter().filter(|(_, f)| matches!(f, Fate::Pending(_))).collect();
        assert!(pending.is_empty(), "proposals neither answered nor dropped: {pending:?}");
    }

    fn running(&self) -> impl Iterator<Item = &Node> {
        self.members.iter().filter_map(|m| m.node.as_ref())
    }

    /// The end state: the same table on every running node, each one consistent.
    fn assert_same_tables(&self) {
        let mut running = self.running();
        let first = running.next().expect("a running node");
        let lines = first.table().state_lines();
        first.table().check_invariants().unwrap_or_else(|e| panic!("node {}: {e}", first.id()));
        for node in running {
            node.table().check_invariants().unwrap_or_else(|e| panic!("node {}: {e}", node.id()));
            assert_eq!(
                node.table().state_lines(),
                lines,
                "node {} differs from node {}",
                node.id(),
                first.id()
            );
            assert_eq!(node.digest(), first.digest());
        }
    }

    fn count(&self, what: impl Fn(&Fate) -> bool) -> usize {
        self.fates.values().filter(|f| what(f)).count()
    }

    fn report(&self, run: &str, started: Instant) {
        let leader = self.leader().map(|l| self.members[l].node()).expect("a leader");
        let stats = leader.table().stats();
        let node_stats = leader.stats();
        println!(
            "{run} (seed {}): {} commands applied, {} proposed ({} refused, {} answered, {} dropped, {} lost in crashes), {} grants ({} table-wide), {} Expire entries from the leader, {} leaders (term, id) seen, {} locks held at the end, leader's group commit {} entries in {} batches ({} fsyncs, {} readies), {} commands in {} entries, {:?}",
            self.seed,
            self.outputs.len(),
            self.proposed,
            self.refused_proposals,
            self.count(|f| matches!(f, Fate::Answered { .. })),
            self.count(|f| matches!(f, Fate::Dropped(_))),
            self.count(|f| *f == Fate::Lost),
            self.grants,
            stats.acquired,
            node_stats.expires_proposed,
            self.leaders_seen.len(),
            stats.locks_held,
            node_stats.persisted,
            node_stats.entry_batches,
            node_stats.fsyncs,
            node_stats.readies,
            node_stats.applied_commands,
            node_stats.applied_entries,
            started.elapsed()
        );
        assert!(self.grants > 50, "{run}: the load granted {} locks", self.grants);
    }
}

/// A resume hands back the outputs kept while the session was detached, old grants among
/// them: not new grants, so not in the token order.
fn is_replay(o: &Output) -> bool {
    matches!(o.response, Response::Resumed(_))
}

/// One node's application of `index`: tokens strictly increase, per name and overall.
fn check_applied(node: u64, seen: &mut Seen, index: u64, out: &[Output]) {
    seen.applied_entries += 1;
    if out.iter().any(is_replay) {
        return;
    }
    for o in out {
        if let (Some(token), Some(name)) = (tokens_of(&o.response), &o.lock) {
            assert!(
                token > seen.last_token,
                "node {node} entry {index}: token {token} after {}",
                seen.last_token
            );
            seen.last_token = token;
            let last = seen.last_token_of.entry(name.to_string()).or_insert(0);
            assert!(token > *last, "node {node} entry {index}: token {token} of {name:?} after {last}");
            *last = token;
        }
    }
}

#[test]
fn a_reliable_network_replicates_the_same_table() {
    let started = Instant::now();
    let mut cluster = Cluster::new(seed(0x5eed_0001), Faults::default());
    cluster.load(600);
    cluster.converge();
    cluster.assert_same_tables();
    // Group commit: one wake-up's proposals are one entry (several commands each), persisted
    // by one Ready, one fsync.
    let leader = cluster.members[cluster.leader().unwrap()].node().stats();
    assert!(leader.applied_commands >= 2 * leader.applied_entries, "{leader:?}");
    // A commit index alone is not fsynced: the leader's fsyncs are its entry batches (and the
    // rare term or vote change).
    assert!(leader.fsyncs * 10 <= leader.entry_batches * 11, "{leader:?}");
    // The leader's timers became entries (lock waits time out, leases end).
    assert!(leader.expires_proposed > 10, "{leader:?}");
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

/// The leader is cut off from both followers: it commits and answers nothing while cut off,
/// steps down by check quorum, the majority elects a new leader and goes on granting with
/// higher tokens; after healing the old leader's uncommitted entries are replaced and its
/// proposals dropped. The old leader's clock runs 1000 s ahead of the others': cluster time
/// does not go back when a node with a slow clock takes over.
#[test]
fn an_isolated_leader_commits_nothing_and_a_new_one_takes_over() {
    let started = Instant::now();
    let mut cluster = Cluster::with_clocks(seed(0x5eed_0003), Faults::default(), [1_000_000, 0, 0]);
    cluster.load(100);
    let old = cluster.leader().expect("a leader");
    let old_id = cluster.members[old].id;
    let (old_term, committed) =
        (cluster.members[old].node().term(), cluster.members[old].node().commit_index());
    let time_at_cut = cluster.members[old].node().applied_now();
    let answered_by_old =
        |c: &Cluster| c.count(|f| matches!(f, Fate::Answered { node, .. } if *node == old_id));
    let (answers_before, grants_before) = (answered_by_old(&cluster), cluster.grants);
    cluster.isolate(old);
    let (mut overlap_rounds, mut stepped_down_after) = (0, None);
    for round in 0..200 {
        let cmds = cluster.workload();
        cluster.propose(cmds);
        cluster.round();
        let node = cluster.members[old].node();
        assert_eq!(node.commit_index(), committed, "the cut-off leader committed an entry");
        assert_eq!(answered_by_old(&cluster), answers_before, "the cut-off leader answered a proposal");
        if cluster.leaders().len() > 1 {
            overlap_rounds += 1;
        }
        if !node.is_leader() && stepped_down_after.is_none() {
            stepped_down_after = Some(round + 1);
        }
    }
    let stepped_down_after = stepped_down_after.expect("check quorum steps the cut-off leader down");
    let new = cluster.leader().expect("the majority elects a leader");
    assert_ne!(new, old);
    assert!(cluster.members[new].node().term() > old_term);
    assert!(cluster.grants > grants_before, "the majority side went on granting");
    assert!(cluster.members[new].node().applied_now() > time_at_cut, "cluster time went on");
    let stranded = cluster.count(|f| *f == Fate::Pending(old_id));
    assert!(stranded > 0, "the cut-off leader took proposals");
    println!(
        "partition: the cut-off leader stepped down after {stepped_down_after} ticks; {overlap_rounds} rounds had two nodes in the leader role (the old one committing nothing); {stranded} proposals stranded on it"
    );
    cluster.load(100);
    cluster.converge();
    assert_eq!(answered_by_old(&cluster), answers_before, "a stranded proposal was answered");
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
    let log = cluster.members[follower].dir.join(LOG_FILE);
    let mut file = OpenOptions::new().append(true).open(&log).expect("the log file");
    file.write_all(&[0x21, 0, 0, 0, 0xde, 0xad]).expect("a torn tail");
    drop(file);
    cluster.load(80);
    cluster.restart(follower);
    assert_eq!(cluster.members[follower].node().store().open_report().torn_bytes, 6);
    cluster.load(80);
    let leader = cluster.leader().expect("a leader");
    // Proposals the leader took and had not answered when it died: lost, never answered.
    let mut cmds = cluster.workload();
    cmds.push(Command::Expire);
    cluster.propose(cmds);
    cluster.crash(leader);
    cluster.load(100);
    let new = cluster.leader().expect("a new leader after the crash");
    assert_ne!(new, leader);
    cluster.restart(leader);
    cluster.load(60);
    cluster.converge();
    cluster.assert_same_tables();
    let applied = cluster.members[new].node().applied_index();
    for member in &cluster.members {
        assert_eq!(member.node().applied_index(), applied);
    }
    let replayed = cluster.members[follower].seen.applied_entries;
    assert!(replayed > 100, "the restarted follower replayed {replayed} entries");
    assert!(cluster.count(|f| *f == Fate::Lost) > 0, "the leader's crash lost proposals in flight");
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
    let log = cluster.members[follower].dir.join(LOG_FILE);
    let mut bytes = std::fs::read(&log).expect("the log");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&log, &bytes).expect("damage the log");
    match DiskStorage::open(&cluster.members[follower].dir) {
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

/// Logs compact to snapshots every KiB or so. A follower that is down while the leader compacts
/// past its log, and one cut off meanwhile, catch up from the leader's snapshot into their
/// tables; a restarted node starts from its own snapshot. Every entry applied after a restore
/// gives the outputs the nodes that applied the whole log recorded (`record`), and the tables
/// end equal.
#[test]
fn snapshots_compact_the_log_and_catch_up_lagging_nodes() {
    let started = Instant::now();
    let mut cluster =
        Cluster::build(seed(0x5eed_0006), Faults { drop_pct: 2, dup_pct: 1 }, [0; NODES as usize], 1024);
    cluster.load(150);
    for node in cluster.running() {
        let stats = node.stats();
        assert!(stats.snapshots_taken > 2, "node {}: {stats:?}", node.id());
        assert!(node.first_index() > 100, "node {}: the log was not compacted", node.id());
    }
    // A follower down while the leader compacts past everything it has.
    let down = cluster.crash_a_follower();
    let down_last =
        DiskStorage::open(&cluster.members[down].dir).expect("reopen").last_index().expect("last");
    cluster.load(150);
    let leader = cluster.leader().expect("a leader");
    assert!(cluster.members[leader].node().first_index() > down_last + 1, "the leader kept the entries");
    cluster.restart(down);
    let restored_from = cluster.members[down].node().applied_index();
    assert!(restored_from > 0, "the restarted node starts from its own snapshot");
    cluster.load(60);
    assert!(
        cluster.members[down].seen.restored_at > down_last,
        "the follower installed the leader's snapshot"
    );
    assert!(cluster.members[down].node().stats().snapshots_installed > 0);
    // A follower cut off, its table kept, while the leader compacts past it.
    let leader = cluster.leader().expect("a leader");
    let cut = (0..cluster.members.len()).find(|&i| i != leader && i != down).unwrap();
    cluster.isolate(cut);
    let cut_applied = cluster.members[cut].node().applied_index();
    cluster.load(150);
    cluster.cut.clear();
    cluster.load(60);
    assert!(cluster.members[cut].seen.restored_at > cut_applied, "the cut-off follower installed a snapshot");
    // The leader restarts from its own snapshot; a new leader goes on.
    let leader = cluster.leader().expect("a leader");
    cluster.crash(leader);
    cluster.load(60);
    cluster.restart(leader);
    assert!(cluster.members[leader].node().applied_index() > 0, "restarted from its snapshot");
    cluster.load(60);
    cluster.converge();
    cluster.assert_same_tables();
    for member in &cluster.members {
        let node = member.node();
        assert!(node.store().first_index().expect("first") > 1, "node {}", node.id());
    }
    cluster.report("snapshots", started);
}
