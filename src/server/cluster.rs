//! Cluster mode's driver (`officer run --cluster`, feature `cluster`): the server's loop runs
//! one raft [`Node`] and its peer [`Transport`] beside the client connections, in the same
//! single thread (docs/CLUSTER.md, "The server driver").
//!
//! The node owns the replicated lock table. The server proposes what it would have applied
//! (`propose`); every command comes back as an applied entry once a quorum has it on disk, and
//! only then are its outputs sent: a client is never told of a change that a failover could
//! lose. One `turn` per wake-up steps the peers' messages in, ticks raft, and handles every
//! `Ready` (one fsync for all the wake-up's proposals: the group commit), sending what it
//! says to send.
//!
//! Leadership is the server's to act on (`Server::cluster_turn`): a node that is not the
//! leader refuses clients with ERROR `not_leader` naming the leader's client address; a
//! leader that loses the lead closes its clients the same way; a node that wins it suspends,
//! once it has applied everything before its term, every session its predecessor served (a
//! resumable session's grace starts then; a plain connection's locks are released).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use log::{debug, info, warn};
use mio::{Registry, Token};
use raft::eraftpb::{ConfState, MessageType};
use raft::Storage;

use crate::cluster::{DiskStorage, Event, Node, NodeConfig, NodeError, Transport, TransportConfig};
use crate::locks::{Command, LockTable, Output, SessionId, TableLimits};
use crate::protocol::{ListRequest, Request};
use crate::wheel::Tick;

use super::conn::ConnKey;

/// Tokens of the transport: its listener, then one per peer connection. Above every slab key
/// (connections are clamped far below) and below the metrics endpoint's.
pub(super) const CLUSTER_TOKEN_BASE: usize = 1 << 39;
/// The listener and 63 peer connections: a handful per peer covers reconnects and strangers;
/// beyond that the transport refuses connections until some close.
const CLUSTER_TOKENS: usize = 64;
/// Sessions suspended per turn after a takeover, so that a new leader of many sessions keeps
/// serving while it proposes them.
const SUSPEND_BATCH: usize = 1024;
/// `Ready`s handled per turn at most: raft hands one more after `advance` at most in steady
/// state; the bound only keeps a turn finite.
const READIES_PER_TURN: usize = 4;
/// Session ids of a term start at `term << SESSION_TERM_SHIFT`: each term has at most one
/// leader, so two leaders never hand out the same id, whatever the other has not yet applied.
const SESSION_TERM_SHIFT: u32 = 40;

/// One member of the cluster: where its peers reach it, and where its clients do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// This node's own entry: where it listens for peers; another's: where it dials them
    /// (a proxy may sit in between).
    pub peer: SocketAddr,
    /// The address a redirect names (`host:port`), as the member's clients reach it.
    pub client: String,
}

/// `officer run --cluster`'s settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Guards against a node pointed at another cluster's peers (not an authentication).
    pub cluster_id: u64,
    pub node_id: u64,
    /// Every member, this node included: the static voter list.
    pub members: BTreeMap<u64, Member>,
    /// Holds the raft log (`raft.log`).
    pub data_dir: PathBuf,
    /// Milliseconds per raft tick: elections after 10 ticks without a leader, heartbeats
    /// every 2.
    pub tick_ms: u64,
    /// Least log bytes applied between two snapshots (`cluster::snapshot::Policy`).
    pub snapshot_min_bytes: u64,
}

impl ClusterConfig {
    /// Parses `--peer ID=PEER_ADDR/CLIENT_ADDR`.
    pub fn parse_member(spec: &str) -> Result<(u64, Member), String> {
        let bad = || format!("--peer {spec:?}: expected ID=PEER_HOST:PORT/CLIENT_HOST:PORT");
        let (id, addrs) = spec.split_once('=').ok_or_else(bad)?;
        let (peer, client) = addrs.split_once('/').ok_or_else(bad)?;
        let id: u64 = id.trim().parse().map_err(|_| bad())?;
        if id == 0 {
            return Err(format!("--peer {spec:?}: node ids start at 1"));
        }
        let peer: SocketAddr = peer.trim().parse().map_err(|_| bad())?;
        if client.trim().is_empty() {
            return Err(bad());
        }
        Ok((id, Member { peer, client: client.trim().to_owned() }))
    }

    /// Checks what a start needs: this node among the members, and more than one member
    /// (a cluster of one is a single server with an fsync per turn: use that).
    pub fn validate(&self) -> Result<(), String> {
        if !self.members.contains_key(&self.node_id) {
            return Err(format!("--node-id {} is not among the --peer entries", self.node_id));
        }
        if self.members.len() < 2 {
            return Err("a cluster needs at least two members (three to survive a loss)".into());
        }
        Ok(())
    }
}

/// A connection's SESSION_RESUME in flight: answered when its entry is applied.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingResume {
    pub key: usize,
    pub conn: ConnKey,
    pub from: SessionId,
    pub target: SessionId,
}

/// A listing in cluster mode: owned, since it is served after a read-index round, not from
/// the read buffer it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Listing {
    Locks(String, u32),
    LocksDetail(String, u32),
    Connections(String, u32),
    MyLocks,
    MyLocksMatching(String, u32),
    Top(u32),
    Sessions(u32),
}

impl Listing {
    /// The listings the table answers (`dispatch::run`); `None` for everything else.
    pub fn of(request: &Request<'_>) -> Option<Listing> {
        Some(match request {
            Request::Locks(l) => Listing::Locks(l.prefix.to_owned(), l.max),
            Request::LocksDetail(l) => Listing::LocksDetail(l.prefix.to_owned(), l.max),
            Request::Connections(l) => Listing::Connections(l.prefix.to_owned(), l.max),
            Request::MyLocks => Listing::MyLocks,
            Request::MyLocksMatching(l) => Listing::MyLocksMatching(l.prefix.to_owned(), l.max),
            Request::Top(max) => Listing::Top(*max),
            Request::Sessions(max) => Listing::Sessions(*max),
            _ => return None,
        })
    }

    pub fn request(&self) -> Request<'_> {
        fn list<'a>(prefix: &'a str, max: &u32) -> ListRequest<'a> {
            ListRequest { prefix, max: *max }
        }
        match self {
            Listing::Locks(p, m) => Request::Locks(list(p, m)),
            Listing::LocksDetail(p, m) => Request::LocksDetail(list(p, m)),
            Listing::Connections(p, m) => Request::Connections(list(p, m)),
            Listing::MyLocks => Request::MyLocks,
            Listing::MyLocksMatching(p, m) => Request::MyLocksMatching(list(p, m)),
            Listing::Top(max) => Request::Top(*max),
            Listing::Sessions(max) => Request::Sessions(*max),
        }
    }
}

/// A listing waiting for its read index, then for the table to apply up to it.
#[derive(Debug)]
pub(super) struct PendingRead {
    pub key: usize,
    pub conn: ConnKey,
    pub rid: u32,
    pub listing: Listing,
    index: Option<u64>,
}

/// What `turn` saw of this node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RoleChange {
    None,
    /// This node leads now.
    Gained,
    /// This node no longer leads.
    Lost,
}

/// The node, its transport and the server's bookkeeping of what it proposed.
pub(super) struct Driver {
    node: Node,
    transport: Transport,
    members: BTreeMap<u64, Member>,
    next_tag: u64,
    /// The last session id this leader handed out.
    last_session: u64,
    resumes: HashMap<u64, PendingResume>,
    resuming: HashMap<usize, u64>,
    /// Listings by read-index context, oldest first, and how many each connection has.
    reads: BTreeMap<u64, PendingRead>,
    reading: HashMap<usize, usize>,
    was_leader: bool,
    /// As a new leader: the log index up to which the predecessor's entries must be applied
    /// before its sessions are known.
    takeover_at: Option<u64>,
    /// Sessions of the predecessor still to suspend.
    orphans: Vec<SessionId>,
    inbound: Vec<(u64, raft::eraftpb::Message)>,
    broken: Vec<u64>,
    /// Proposals refused because this node does not lead (their connections are closed).
    pub refused: u64,
    /// Listings served after a read index.
    reads_served: u64,
}

impl Driver {
    /// Opens the data directory (a new one is initialized with the members as voters), binds
    /// the peer port and registers it with the server's poll.
    pub fn open(config: &ClusterConfig, limits: TableLimits, registry: &Registry) -> Result<Driver, String> {
        config.validate()?;
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| format!("data dir {}: {e}", dir.display()))?;
        let mut store = DiskStorage::open(dir).map_err(|e| format!("raft log in {}: {e}", dir.display()))?;
        let voters: Vec<u64> = config.members.keys().copied().collect();
        let state = store.initial_state().map_err(|e| format!("raft log in {}: {e}", dir.display()))?;
        if state.conf_state.voters.is_empty() {
            let conf = ConfState { voters: voters.clone(), ..Default::default() };
            store.initialize(&conf).map_err(|e| format!("initializing {}: {e}", dir.display()))?;
        } else {
            let mut known = state.conf_state.voters.clone();
            known.sort_unstable();
            if known != voters {
                return Err(format!(
                    "the raft log in {} belongs to a cluster of nodes {known:?}, not {voters:?}",
                    dir.display()
                ));
            }
        }
        let mut node_config = NodeConfig::new(config.node_id);
        node_config.tick_ms = config.tick_ms.max(1);
        node_config.limits = limits;
        node_config.snapshot_min_bytes = config.snapshot_min_bytes;
        let node = Node::new(&node_config, store).map_err(|e| format!("starting raft: {e}"))?;
        let me = &config.members[&config.node_id];
        let listener = mio::net::TcpListener::bind(me.peer)
            .map_err(|e| format!("cannot listen on {} (peer port): {e}", me.peer))?;
        let peers = config
            .members
            .iter()
            .filter(|(&id, _)| id != config.node_id)
            .map(|(&id, m)| (id, m.peer))
            .collect();
        let transport_config = TransportConfig::new(config.cluster_id, config.node_id, peers);
        let tokens = CLUSTER_TOKEN_BASE..CLUSTER_TOKEN_BASE + CLUSTER_TOKENS;
        let transport = Transport::new(transport_config, listener, registry, tokens, Instant::now())
            .map_err(|e| format!("peer transport: {e}"))?;
        info!(
            "cluster node started node={} peers={} data_dir={} last_index={}",
            config.node_id,
            config.members.len() - 1,
            dir.display(),
            node.last_index()
        );
        Ok(Driver {
            node,
            transport,
            members: config.members.clone(),
            next_tag: 1,
            last_session: 0,
            resumes: HashMap::new(),
            resuming: HashMap::new(),
            reads: BTreeMap::new(),
            reading: HashMap::new(),
            was_leader: false,
            takeover_at: None,
            orphans: Vec::new(),
            inbound: Vec::new(),
            broken: Vec::new(),
            refused: 0,
            reads_served: 0,
        })
    }

    /// The replicated table, as far as this node has applied the log.
    pub fn table(&self) -> &LockTable {
        self.node.table()
    }

    /// STATS entries of cluster mode (after a single server's, which they do not change):
    /// this node's id, whether it leads, the leader it knows (0: none), its term, commit and
    /// applied indexes, fsyncs and entries persisted, proposals refused as a follower.
    pub fn stats_entries(&self) -> Vec<(String, u64)> {
        let node = &self.node;
        let stats = node.stats();
        let transport = self.transport.stats();
        [
            ("cluster_node_id", node.id()),
            ("cluster_leader", u64::from(node.is_leader())),
            ("cluster_leader_id", node.leader_id().unwrap_or(0)),
            ("cluster_term", node.term()),
            ("cluster_commit_index", node.commit_index()),
            ("cluster_applied_index", node.applied_index()),
            ("cluster_fsyncs", stats.fsyncs),
            ("cluster_entries_persisted", stats.persisted),
            ("cluster_entry_batches", stats.entry_batches),
            ("cluster_entries_applied", stats.applied_entries),
            ("cluster_commands_applied", stats.applied_commands),
            ("cluster_proposals_refused", self.refused),
            ("cluster_reads", self.reads_served),
            ("cluster_peer_frames_dropped", transport.dropped_full + transport.dropped_unconnected),
            ("cluster_snapshots_taken", stats.snapshots_taken),
            ("cluster_snapshots_installed", stats.snapshots_installed),
            ("cluster_snapshot_bytes", stats.snapshot_bytes),
            ("cluster_log_first_index", node.first_index()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    pub fn owns(&self, token: Token) -> bool {
        (CLUSTER_TOKEN_BASE..CLUSTER_TOKEN_BASE + CLUSTER_TOKENS).contains(&token.0)
            && self.transport.owns(token)
    }

    pub fn handle_event(&mut self, registry: &Registry, event: &mio::event::Event) {
        self.transport.handle_event(registry, event, Instant::now());
    }

    pub fn is_leader(&self) -> bool {
        self.node.is_leader()
    }

    /// The leader's client address, when a leader other than this node is known.
    pub fn leader_client(&self) -> Option<&str> {
        let leader = self.node.leader_id().filter(|&id| id != self.node.id())?;
        self.members.get(&leader).map(|m| m.client.as_str())
    }

    /// A session id no other leader hands out (see `SESSION_TERM_SHIFT`).
    pub fn next_session(&mut self) -> SessionId {
        let term_base = self.node.term() << SESSION_TERM_SHIFT;
        let next = (self.last_session + 1).max(term_base).max(self.node.table().next_session().0);
        self.last_session = next;
        SessionId(next)
    }

    /// Proposes a command stamped with local `now`; its outputs come back from `turn`. A node
    /// that does not lead refuses (counted): its clients are being closed.
    pub fn propose(&mut self, now: Tick, command: Command) -> Option<u64> {
        let tag = self.next_tag;
        self.next_tag += 1;
        match self.node.propose(now, command, tag) {
            Ok(()) => Some(tag),
            Err(_) => {
                self.refused += 1;
                None
            }
        }
    }

    /// SESSION_RESUME: proposed, answered when applied (`take_resume`). False when the
    /// leader refused it (its uncommitted log is full): the caller answers at once.
    pub fn propose_resume(&mut self, now: Tick, resume: PendingResume, secret: [u8; 16], rid: u32) -> bool {
        let cmd = Command::Resume { session: resume.target, request_id: rid, from: resume.from, secret };
        let Some(tag) = self.propose(now, cmd) else { return !self.node.is_leader() };
        self.resumes.insert(tag, resume);
        self.resuming.insert(resume.key, tag);
        true
    }

    /// Whether connection `key` waits for its SESSION_RESUME to be applied or for a listing's
    /// read index (its later requests are held back meanwhile, like those behind a RESET, so
    /// that they are answered in order and run as the resumed session).
    pub fn holds_back(&self, key: usize) -> bool {
        (!self.resuming.is_empty() && self.resuming.contains_key(&key))
            || (!self.reading.is_empty() && self.reading.contains_key(&key))
    }

    /// A listing: served once a read-index round confirms the lead and the table has applied
    /// up to it (`take_ready_reads`).
    pub fn read(&mut self, key: usize, conn: ConnKey, rid: u32, listing: Listing) {
        let ctx = self.next_tag;
        self.next_tag += 1;
        self.node.read_index(ctx);
        self.reads.insert(ctx, PendingRead { key, conn, rid, listing, index: None });
        *self.reading.entry(key).or_default() += 1;
    }

    fn read_ready(&mut self, ctx: u64, index: u64) {
        if let Some(read) = self.reads.get_mut(&ctx) {
            read.index = Some(index);
        }
    }

    /// The listings whose read index the table has reached, oldest first.
    pub fn take_ready_reads(&mut self, out: &mut Vec<PendingRead>) {
        let applied = self.node.applied_index();
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= applied))
            .map(|(&c, _)| c)
            .collect();
        for ctx in ready {
            let Some(read) = self.reads.remove(&ctx) else { continue };
            if let std::collections::hash_map::Entry::Occupied(mut n) = self.reading.entry(read.key) {
                *n.get_mut() -= 1;
                if *n.get() == 0 {
                    n.remove();
                }
            }
            self.reads_served += 1;
            out.push(read);
        }
    }

    /// The resume a tag belongs to, once its entry is applied or dropped.
    pub fn take_resume(&mut self, tag: u64) -> Option<PendingResume> {
        let resume = self.resumes.remove(&tag)?;
        self.resuming.remove(&resume.key);
        Some(resume)
    }

    /// One wake-up's raft work: peers' messages in, a tick, every `Ready`. Applied entries
    /// and dropped proposals are left in `out` for the server; messages are sent here.
    pub fn turn(
        &mut self,
        registry: &Registry,
        now: Tick,
        out: &mut Vec<Event>,
    ) -> Result<RoleChange, NodeError> {
        let instant = Instant::now();
        self.transport.tick(registry, instant);
        self.transport.poll_inbound(&mut self.inbound);
        for (from, message) in self.inbound.drain(..) {
            if let Err(e) = self.node.step(message) {
                debug!("raft message refused from={from} error={e}");
            }
        }
        self.transport.take_unreachable(&mut self.broken);
        for peer in self.broken.drain(..) {
            self.node.report_unreachable(peer);
            // A snapshot on its way over the broken link is lost: raft sends another.
            self.node.report_snapshot(peer, false);
        }
        self.node.tick(now);
        for _ in 0..READIES_PER_TURN {
            let first = out.len();
            let more = self.node.poll(out)?;
            let mut kept = first;
            for i in first..out.len() {
                match &out[i] {
                    Event::Send(message) => {
                        let sent = self.transport.send(message.to, message);
                        if message.get_msg_type() == MessageType::MsgSnapshot {
                            debug!(
                                "snapshot to node {} index={} queued={sent}",
                                message.to,
                                message.get_snapshot().get_metadata().index
                            );
                            self.node.report_snapshot(message.to, sent);
                        }
                    }
                    &Event::ReadReady { ctx, index } => self.read_ready(ctx, index),
                    &Event::Restored { index } => info!("installed the leader's snapshot index={index}"),
                    Event::Applied { .. } | Event::Dropped { .. } => {
                        out.swap(kept, i);
                        kept += 1;
                    }
                }
            }
            out.truncate(kept);
            if !more {
                break;
            }
        }
        self.transport.flush(registry);
        Ok(self.role_change())
    }

    fn role_change(&mut self) -> RoleChange {
        let leads = self.node.is_leader();
        if leads == self.was_leader {
            return RoleChange::None;
        }
        self.was_leader = leads;
        if leads {
            info!("cluster: this node leads term={} node={}", self.node.term(), self.node.id());
            self.takeover_at = Some(self.node.last_index());
            self.orphans.clear();
            RoleChange::Gained
        } else {
            warn!(
                "cluster: this node no longer leads term={} leader={:?}",
                self.node.term(),
                self.node.leader_id()
            );
            self.takeover_at = None;
            self.orphans.clear();
            self.resumes.clear();
            self.resuming.clear();
            self.reads.clear();
            self.reading.clear();
            RoleChange::Lost
        }
    }

    /// As a new leader: once the predecessor's entries are applied, the sessions it served
    /// (attached in the table, not served here: `served`) are suspended, a batch per turn.
    /// A session already resumed here, or whose SESSION_RESUME is in flight, is skipped when
    /// its turn comes: a Suspend behind its Resume in the log would detach a connected client.
    pub fn suspend_orphans(&mut self, now: Tick, served: impl Fn(SessionId) -> bool) {
        if let Some(at) = self.takeover_at {
            if self.node.applied_index() < at {
                return;
            }
            self.takeover_at = None;
            self.orphans = self.node.table().attached_sessions();
            // Suspended in id order, popped from the end.
            self.orphans.reverse();
            if !self.orphans.is_empty() {
                info!("cluster: suspending the previous leader's sessions count={}", self.orphans.len());
            }
        }
        if self.orphans.is_empty() {
            return;
        }
        let resuming: std::collections::HashSet<SessionId> =
            self.resumes.values().map(|r| r.target).collect();
        for _ in 0..SUSPEND_BATCH {
            let Some(session) = self.orphans.pop() else { break };
            if !served(session) && !resuming.contains(&session) {
                self.propose(now, Command::Suspend { session });
            }
        }
    }

    /// Work left over for the next turn (orphans to suspend).
    pub fn has_leftover(&self) -> bool {
        !self.orphans.is_empty()
    }

    /// When `turn` is next due, in the server's ticks.
    pub fn next_wakeup(&self, now: Tick) -> Option<Tick> {
        let transport = self.transport.next_wakeup().map(|at| {
            let wait = at.saturating_duration_since(Instant::now());
            now.saturating_add(wait.as_millis() as Tick)
        });
        match (self.node.next_wakeup(), transport) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Cluster time for reading the table (listings' ages and deadlines): what it has applied.
    pub fn read_now(&self, now: Tick) -> Tick {
        self.node.cluster_now(now)
    }
}

impl super::dispatch::StateMachine for Driver {
    /// Proposes; a request the leader cannot take (its uncommitted log is at its bound,
    /// `MAX_UNCOMMITTED_BYTES`) is answered at once with `limit_exceeded`, so no client waits
    /// for an answer that will never come.
    fn apply(&mut self, now: Tick, command: Command, outputs: &mut Vec<Output>) {
        let asker = asker(&command);
        if self.propose(now, command).is_none() && self.node.is_leader() {
            if let Some((session, request_id)) = asker {
                let message = "the cluster has too many uncommitted changes: try again";
                let response =
                    crate::protocol::Response::error(crate::protocol::ErrorCode::LimitExceeded, message);
                outputs.push(Output { session, request_id, lock: None, response });
            }
        }
    }

    fn read(&self) -> &LockTable {
        self.node.table()
    }

    fn read_now(&self, now: Tick) -> Tick {
        Driver::read_now(self, now)
    }
}

/// Who waits for an answer to `command`, if anyone.
fn asker(command: &Command) -> Option<(SessionId, u32)> {
    match *command {
        Command::Lock { session, request_id, .. }
        | Command::Unlock { session, request_id, .. }
        | Command::Downgrade { session, request_id, .. }
        | Command::Renew { session, request_id, .. }
        | Command::Revoke { session, request_id, .. }
        | Command::Check { session, request_id, .. }
        | Command::Reset { session, request_id }
        | Command::OpenSession { session, request_id, .. } => Some((session, request_id)),
        Command::Resume { from, request_id, .. } => Some((from, request_id)),
        Command::Attach { .. } | Command::Detach { .. } | Command::Suspend { .. } | Command::Expire => None,
    }
}

/// The server's side of cluster mode: the turn, redirects and takeovers.
impl super::Server {
    pub(super) fn cluster_event(&mut self, event: &mio::event::Event) {
        if let Some(cluster) = &mut self.cluster {
            cluster.handle_event(self.poll.registry(), event);
        }
    }

    /// One wake-up's raft work (after the clients were served, so their proposals share one
    /// fsync), then the applied entries' outputs to their connections, then what a change of
    /// leader asks. A fatal node error stops the server.
    pub(super) fn cluster_turn(&mut self, now: Tick) -> Result<(), super::ServerError> {
        let Some(cluster) = self.cluster.as_deref_mut() else { return Ok(()) };
        let mut events = std::mem::take(&mut self.cluster_events);
        let change = cluster
            .turn(self.poll.registry(), now, &mut events)
            .map_err(|e| super::ServerError::Cluster(format!("node stopped: {e}")))?;
        for event in events.drain(..) {
            match event {
                Event::Applied { tag, mut outputs, .. } => {
                    self.outputs.append(&mut outputs);
                    match tag.and_then(|tag| self.cluster.as_mut()?.take_resume(tag)) {
                        Some(resume) => self.applied_resume(resume, now),
                        None => self.deliver_outputs(now),
                    }
                }
                Event::Dropped { tag } => {
                    // Its connection is being closed (the lead was lost); nothing to answer.
                    if let Some(cluster) = self.cluster.as_mut() {
                        cluster.take_resume(tag);
                    }
                }
                Event::Send(_) | Event::ReadReady { .. } | Event::Restored { .. } => {}
            }
        }
        self.cluster_events = events;
        self.serve_reads(now);
        match change {
            RoleChange::Lost => self.redirect_all(now),
            RoleChange::Gained | RoleChange::None => {}
        }
        let routes = &self.routes;
        if let Some(cluster) = self.cluster.as_deref_mut() {
            if cluster.is_leader() {
                cluster.suspend_orphans(now, |session| routes.get(session).is_some());
            }
        }
        Ok(())
    }

    /// Answers the listings whose read index the table has reached, then serves what their
    /// connections sent after them.
    fn serve_reads(&mut self, now: Tick) {
        let mut ready = Vec::new();
        if let Some(cluster) = self.cluster.as_deref_mut() {
            cluster.take_ready_reads(&mut ready);
        }
        for read in ready {
            let Some(conn) = self.conns.get(read.key).filter(|c| c.id == read.conn && c.closing.is_none())
            else {
                continue;
            };
            let who = (conn.sid, conn.session.is_admin());
            let Some(cluster) = self.cluster.as_deref_mut() else { return };
            let ran = super::dispatch::run(
                cluster,
                now,
                who,
                read.rid,
                read.listing.request(),
                &self.config,
                &mut self.outputs,
            );
            if let super::dispatch::Ran::Reply(response) = ran {
                self.send(read.key, read.rid, &response);
            }
            if !self.holds_back(read.key) {
                self.conns.push_backlog(read.key);
            }
        }
    }

    /// A SESSION_RESUME's entry was applied: finish it as a single server does, unless its
    /// connection went away meanwhile (then the session it resumed is suspended again).
    fn applied_resume(&mut self, resume: PendingResume, now: Tick) {
        let alive = self.conns.get(resume.key).is_some_and(|c| c.id == resume.conn && c.closing.is_none());
        if alive {
            return self.finish_resume(resume.key, resume.from, resume.target, now);
        }
        let resumed = self.outputs.iter().any(|o| {
            o.session == resume.target && matches!(o.response, crate::protocol::Response::Resumed(_))
        });
        self.outputs.retain(|o| o.session != resume.target);
        self.deliver_outputs(now);
        if resumed {
            self.apply(now, Command::Suspend { session: resume.target });
        }
    }

    /// Closes connection `key` with a fatal `not_leader` naming the leader's client address.
    pub(super) fn redirect(&mut self, key: usize, now: Tick) {
        let leader = self.cluster.as_ref().and_then(|c| c.leader_client()).unwrap_or("").to_owned();
        let response = crate::protocol::Response::error(crate::protocol::ErrorCode::NotLeader, leader);
        self.send(key, crate::protocol::SHUTDOWN_REQUEST_ID, &response);
        self.close(key, super::session::CloseReason::NotLeader, now);
    }

    /// The lead was lost: every client goes to the new leader (or looks for one).
    fn redirect_all(&mut self, now: Tick) {
        let keys: Vec<usize> =
            self.conns.iter().filter(|(_, c)| c.closing.is_none()).map(|(k, _)| k).collect();
        if !keys.is_empty() {
            warn!("cluster: closing client connections after losing the lead count={}", keys.len());
        }
        for key in keys {
            self.redirect(key, now);
        }
    }

    /// Sleep until the earliest of the node's, the transport's, the idle wheel's and the
    /// server's own deadlines; not at all while work is left over.
    pub(super) fn cluster_poll_timeout(&self, cluster: &Driver, now: Tick) -> Option<std::time::Duration> {
        let leftover = self.conns.has_backlog() || cluster.has_leftover();
        let accepting =
            self.accept_pending && !self.timers.is_armed(super::timers::ServerTimer::AcceptResume);
        if leftover || accepting {
            return Some(std::time::Duration::ZERO);
        }
        let earliest = super::event_loop::earliest;
        let next = earliest(
            earliest(cluster.next_wakeup(now), self.idle.next_deadline()),
            self.timers.next_deadline(),
        )?;
        Some(std::time::Duration::from_millis(next.saturating_sub(now)))
    }
}
