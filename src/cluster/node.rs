//! One cluster node with no I/O and no clock, in the style of quinn-proto's `Connection`: the
//! caller hands it time (`tick(now)`), peer messages (`step`) and client commands
//! (`propose`), and drains what it must do (`poll`): raft messages to send, addressed by node
//! id, and the outputs of every committed entry it applied, the proposals it answers matched
//! by the caller's tag. It owns a raft-rs `RawNode` over [`DiskStorage`] and the [`LockTable`]
//! the committed entries build.
//!
//! # One `Ready`, in raft-rs's order
//!
//! `poll` handles at most one `Ready`:
//! 1. messages that need nothing on disk go out at once (a leader's appends and heartbeats:
//!    the leader may send entries before its own fsync, raft thesis §10.2.1);
//! 2. the entries committed so far are applied to the table, in log order;
//! 3. the new entries and the hard state are persisted with ONE fsync
//!    ([`DiskStorage::persist`]): the group commit, however many proposals the caller made
//!    since the last `poll`. A hard state whose term and vote are unchanged (only the commit
//!    index moved) is recorded without an fsync of its own: it goes to disk with the next one;
//!    a commit index lost in a crash is learnt again from the leader;
//! 4. only then the messages that promise what is on disk (votes, append responses) go out;
//! 5. `advance`: the commit index it reports is recorded (no fsync of its own), its messages go
//!    out, the entries it committed are applied, then `advance_apply`.
//!
//! A proposal is answered only when its entry is applied, that is committed: [`Event::Applied`]
//! carries the caller's tag and the table's outputs for it. If the index of a proposal turns
//! out to hold another term's entry (this node lost the leadership before it committed), the
//! proposal is [`Event::Dropped`] and never applied.
//!
//! # Several commands per entry
//!
//! `propose` does not hand each command to raft: it appends it to a [`Batch`], and the batch
//! becomes ONE raft entry (`entry.rs`, version 2) when the caller next steps a message, ticks,
//! asks for a read index, campaigns or polls, or when it reaches [`MAX_BATCH_BYTES`]. raft's
//! cost per entry (the entry's protobuf encoding for the log and for each follower, its copies,
//! its bookkeeping) is then paid once per wake-up, not once per command: that, not locking, is
//! what bounded a leader's pipelined throughput (BENCHMARKS.md, "What bounds the cluster").
//! Commands keep their proposal order inside the entry and each keeps its own `now`, so the
//! table applies exactly what it would have applied one entry at a time. Flushing before any
//! other call into raft means raft never sees a state change between a proposal and its
//! entry: a refusal is decided in `propose` itself (the uncommitted bound is checked there
//! against `raft.uncommitted_size()`, exactly as raft would check the batch), so the caller
//! can still answer a refused client at once.
//!
//! # Time
//!
//! A replica never fires a timer: the table changes only by committed entries. The leader
//! stamps each entry it proposes with its `now`, and turns its own due deadlines (lock waits,
//! leases, lock delays, session graces, pending release batches) into `Expire` entries, at
//! most one in flight. Every replica applies an entry at `max(entry.now, the previous applied
//! entry's now)`: a function of the log alone, so every replica computes the same table, and
//! cluster time never goes back when leaders change. A new leader whose clock is behind the
//! applied time carries an offset (`stamp = local now + offset`, the offset raised whenever the
//! stamp would fall below the last applied or stamped time), so cluster time stands still
//! across a failover, then advances at the leader's rate: grants last longer, never shorter.
//!
//! # A cut-off leader
//!
//! raft runs with `check_quorum` and `pre_vote`. A leader that hears from no quorum for an
//! election timeout steps down; a node cut off from the others cannot disturb them when it
//! returns (pre-vote: it wins no pre-election, so it does not bump the term). For a short while
//! a cut-off leader and a new one may both hold the leader role, but the old one commits
//! nothing (no quorum acknowledges its entries) and proposals are answered only on commit, so
//! it never answers a grant it could not commit; its pending proposals end `Dropped` once the
//! new leader's log replaces them. Reads that do not go through the log must not trust
//! `is_leader()` alone (docs/CLUSTER.md).

use std::collections::BTreeMap;
use std::fmt;

use raft::eraftpb::{EntryType, Message, MessageType};
use raft::prelude::Entry;
use raft::{Config, RawNode, StateRole};

use super::entry::{decode_entries, encode_entry, Batch, EntryError, LogCommand};
use super::snapshot::{decode_state, encode_state, Policy, RestoreError, SNAPSHOT_MIN_BYTES};
use super::storage::{DiskStorage, StoreError};
use crate::locks::{Command, LockTable, Output, TableLimits, Tick};

/// How a node runs. `NodeConfig::new(id)` is a sensible default.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's raft id, never 0.
    pub id: u64,
    /// Milliseconds of `now` per raft tick.
    pub tick_ms: u64,
    /// Raft ticks without a leader before a follower campaigns (randomized up to twice this).
    pub election_ticks: usize,
    /// Raft ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// The table's first fencing token (the same on every node).
    pub first_token: u64,
    pub limits: TableLimits,
    /// The most bytes of entries proposed and not yet committed; beyond it `propose` refuses.
    pub max_uncommitted_bytes: u64,
    /// The least log bytes applied between two snapshots (`snapshot::Policy`).
    pub snapshot_min_bytes: u64,
}

impl NodeConfig {
    /// 100 ms ticks, an election after 10 of them, heartbeats every 2.
    pub fn new(id: u64) -> NodeConfig {
        NodeConfig {
            id,
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            first_token: 1,
            limits: TableLimits::default(),
            max_uncommitted_bytes: MAX_UNCOMMITTED_BYTES,
            snapshot_min_bytes: SNAPSHOT_MIN_BYTES,
        }
    }

    /// The uncommitted bound raft is given (at least `max_size_per_msg`).
    fn max_uncommitted(&self) -> u64 {
        self.max_uncommitted_bytes.max(1 << 20)
    }

    fn raft(&self, applied: u64) -> Config {
        Config {
            id: self.id,
            election_tick: self.election_ticks,
            heartbeat_tick: self.heartbeat_ticks,
            // The table is restored from the log's snapshot, if any: apply the entries after it.
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            // A leader whose followers lag (slow disks, a slow link) refuses proposals beyond
            // this much uncommitted log rather than grow without bound.
            max_uncommitted_size: self.max_uncommitted(),
            ..Config::default()
        }
    }
}

/// A proposal made to a node that does not lead. `leader` is the node it believes leads, if
/// it knows one: where the caller should send the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotLeader {
    pub leader: Option<u64>,
}

/// Why the node must stop (or, from `step`, why one message was refused).
#[derive(Debug)]
pub enum NodeError {
    /// The log storage failed: the node must stop.
    Store(StoreError),
    /// raft refused something: from `step`, a stale or unexpected peer message (log it and go
    /// on); from `new`, a bad configuration or log.
    Raft(raft::Error),
    /// A committed entry does not decode: the log is not ours, or a bug; the node must stop
    /// rather than skip it and diverge.
    Entry { index: u64, source: EntryError },
    /// A committed entry of a kind this build does not apply yet (conf changes).
    Unsupported { index: u64, what: &'static str },
    /// The snapshot at `index` (the log's own on start, or a leader's) does not restore.
    Snapshot { index: u64, source: RestoreError },
    /// A message addressed to another node.
    Misaddressed { to: u64 },
    /// A proposal sent by a peer: refused (`step`).
    PeerProposal { from: u64 },
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Store(e) => write!(f, "{e}"),
            NodeError::Raft(e) => write!(f, "raft: {e}"),
            NodeError::Entry { index, source } => {
                write!(f, "committed entry {index} does not decode: {source}")
            }
            NodeError::Unsupported { index, what } => write!(f, "entry {index}: {what} not supported yet"),
            NodeError::Snapshot { index, source } => {
                write!(f, "the snapshot at {index} does not restore: {source}")
            }
            NodeError::Misaddressed { to } => write!(f, "a raft message for node {to}"),
            NodeError::PeerProposal { from } => {
                write!(f, "node {from} sent a proposal; proposals never travel")
            }
        }
    }
}

impl std::error::Error for NodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NodeError::Store(e) => Some(e),
            NodeError::Raft(e) => Some(e),
            NodeError::Entry { source, .. } => Some(source),
            NodeError::Snapshot { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> NodeError {
        NodeError::Store(e)
    }
}

/// What `poll` asks of the caller, in the order it must be done.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Send this raft message to node `message.to` (losing it is fine: raft retries).
    Send(Message),
    /// The command at `position` of the committed entry `index` was applied; `outputs` are the
    /// table's responses, addressed by session. `tag` is the caller's, when this node proposed
    /// the command in the term that committed it. Every node applies every entry; only the
    /// leader's caller sends them.
    Applied { index: u64, position: u32, tag: Option<u64>, outputs: Vec<Output> },
    /// The proposal `tag` will never commit: its index holds another leader's entry.
    Dropped { tag: u64 },
    /// The read index asked for with `ctx` ([`Node::read_index`]): once the node has applied
    /// up to `index`, its table holds every entry committed before the read was asked for.
    ReadReady { ctx: u64, index: u64 },
    /// A leader's snapshot at `index` replaced the table (this node had fallen behind the
    /// leader's log). Proposals up to `index` were `Dropped`.
    Restored { index: u64 },
}

/// Counters of what the node did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// `Ready`s handled, each with at most one fsync.
    pub readies: u64,
    /// Those that fsynced (something to persist: entries or a hard state).
    pub fsyncs: u64,
    /// Those that persisted entries, and how many entries in all: their ratio is the group
    /// commit's batch.
    pub entry_batches: u64,
    pub persisted: u64,
    /// Commands applied to the table, and the entries that carried them: their ratio is the
    /// batch of commands per entry.
    pub applied_commands: u64,
    pub applied_entries: u64,
    /// `Expire` entries this node proposed as leader.
    pub expires_proposed: u64,
    /// Snapshots this node took (compacting its log), and leaders' snapshots it installed.
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    /// The size of the last snapshot taken or installed (or restored on start).
    pub snapshot_bytes: u64,
}

/// A sans-IO cluster node: see the module documentation.
pub struct Node {
    raw: RawNode<DiskStorage>,
    table: LockTable,
    tick_ms: u64,
    /// When the next raft tick is due; `None` until the first `tick`.
    next_tick: Option<Tick>,
    applied: u64,
    /// The `now` the last applied entry was applied at.
    applied_now: Tick,
    /// The last `now` this node stamped on an entry, and the offset its clock runs behind
    /// cluster time.
    stamped: Tick,
    offset: Tick,
    /// Tagged proposals not yet applied: index -> (term, the tag of each position).
    pending: BTreeMap<u64, (u64, Vec<u64>)>,
    /// Commands proposed and not yet handed to raft, and their tags.
    batch: Batch,
    batch_tags: Vec<u64>,
    /// Tags of a batch raft refused after `propose` took them (not expected: refusals are
    /// decided in `propose`), reported `Dropped` by the next `poll`.
    refused: Vec<u64>,
    /// The uncommitted bound raft enforces, checked in `propose`.
    max_uncommitted: usize,
    /// Scratch for decoding an entry's commands.
    decoded: Vec<LogCommand>,
    /// The (term, index) of this leader's `Expire` in flight.
    expire_in_flight: Option<(u64, u64)>,
    /// When to compact the log next.
    policy: Policy,
    limits: TableLimits,
    stats: NodeStats,
}

/// The default most bytes of entries a leader keeps proposed and not yet committed (at least
/// `max_size_per_msg`, 1 MiB); beyond it `propose` refuses (the server then answers the client
/// that the cluster is busy).
pub const MAX_UNCOMMITTED_BYTES: u64 = 64 << 20;

/// A batch of proposals becomes an entry once it is this large, so that one entry stays well
/// under raft's 1 MiB message size and one apply is a bounded amount of work (about 10,000
/// commands at the typical 25 bytes each).
pub const MAX_BATCH_BYTES: usize = 256 << 10;

/// Raft ticks `tick` catches up at most after a stall; beyond that the tick clock restarts
/// from `now` (a stalled loop must not fire an election's worth of ticks at once).
const MAX_CATCH_UP_TICKS: u32 = 3;

impl Node {
    /// A node over `store` (opened, and `initialize`d with the voters on first start). Its
    /// table is restored from the log's snapshot, if it has one, and rebuilt by applying the
    /// committed entries after it. A snapshot that does not restore stops the node.
    pub fn new(config: &NodeConfig, store: DiskStorage) -> Result<Node, NodeError> {
        let applied = store.snapshot_metadata().index;
        let (applied_now, table, snapshot_len) = if applied == 0 {
            (0, LockTable::new(config.first_token, config.limits), 0)
        } else {
            let data = store.snapshot_data();
            let (now, table) = decode_state(data, config.limits)
                .map_err(|source| NodeError::Snapshot { index: applied, source })?;
            (now, table, data.len())
        };
        let raft_config = config.raft(applied);
        raft_config.validate().map_err(NodeError::Raft)?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, store, &logger).map_err(NodeError::Raft)?;
        Ok(Node {
            raw,
            table,
            tick_ms: config.tick_ms.max(1),
            next_tick: None,
            applied,
            applied_now,
            stamped: 0,
            offset: 0,
            pending: BTreeMap::new(),
            batch: Batch::default(),
            batch_tags: Vec::new(),
            refused: Vec::new(),
            max_uncommitted: usize::try_from(config.max_uncommitted()).unwrap_or(usize::MAX),
            decoded: Vec::new(),
            expire_in_flight: None,
            policy: Policy::new(config.snapshot_min_bytes, snapshot_len as u64),
            limits: config.limits,
            stats: NodeStats { snapshot_bytes: snapshot_len as u64, ..NodeStats::default() },
        })
    }

    /// Time passes: raft ticks once per `tick_ms` elapsed, and a leader proposes an `Expire`
    /// when a deadline of its table is due (or a release batch is pending).
    pub fn tick(&mut self, now: Tick) {
        self.flush();
        let next = *self.next_tick.get_or_insert(now.saturating_add(self.tick_ms));
        let mut due = next;
        let mut ticks = 0;
        while now >= due && ticks < MAX_CATCH_UP_TICKS {
            self.raw.tick();
            due = due.saturating_add(self.tick_ms);
            ticks += 1;
        }
        if now >= due {
            due = now.saturating_add(self.tick_ms);
        }
        self.next_tick = Some(due);
        self.fire_timers(now);
    }

    /// When the caller should call `tick` next at the latest (in its own clock).
    pub fn next_wakeup(&self) -> Option<Tick> {
        let in_flight =
            self.expire_in_flight.is_some_and(|(term, index)| term == self.term() && self.applied < index);
        let table = if !self.is_leader() || in_flight {
            None // a follower fires nothing; an Expire in flight is answered by a poll first
        } else if self.table.has_pending_releases() {
            Some(0)
        } else {
            self.table.next_deadline().map(|d| d.saturating_sub(self.offset))
        };
        [self.next_tick, table].into_iter().flatten().min()
    }

    /// A message from a peer. An error refuses only this message: log it and go on.
    /// Proposals never travel between nodes (`propose` refuses on a follower before raft
    /// could forward it), so a peer's `MsgPropose` is refused: its entries would reach the log
    /// without passing `propose`, and one that does not decode would stop every node.
    pub fn step(&mut self, message: Message) -> Result<(), NodeError> {
        if message.to != self.id() {
            return Err(NodeError::Misaddressed { to: message.to });
        }
        if message.get_msg_type() == MessageType::MsgPropose {
            return Err(NodeError::PeerProposal { from: message.from });
        }
        self.flush();
        self.raw.step(message).map_err(NodeError::Raft)
    }

    /// Proposes a client's command, stamped with `now`. It is answered by an
    /// [`Event::Applied`] with `tag` once committed, or [`Event::Dropped`]. Proposals made
    /// between two `poll`s share one entry (module documentation) and one fsync.
    ///
    /// Refused (`NotLeader`) on a node that does not lead, while a leader transfer is under way,
    /// and when the entry would take the uncommitted log past its bound (raft's rule: at least
    /// one entry is always let through).
    pub fn propose(&mut self, now: Tick, command: Command, tag: u64) -> Result<(), NotLeader> {
        if !self.is_leader() || self.raw.raft.lead_transferee.is_some() {
            return Err(self.not_leader());
        }
        let now = self.stamp(now);
        let added = self.batch.push(&LogCommand { now, command });
        let uncommitted = self.raw.raft.uncommitted_size();
        if uncommitted > 0 && uncommitted.saturating_add(self.batch.encoded_len()) > self.max_uncommitted {
            self.batch.pop(added);
            return Err(self.not_leader());
        }
        self.batch_tags.push(tag);
        if self.batch.encoded_len() >= MAX_BATCH_BYTES {
            self.flush();
        }
        Ok(())
    }

    /// A refusal naming the leader this node knows, if another.
    fn not_leader(&self) -> NotLeader {
        NotLeader { leader: self.leader_id().filter(|&id| id != self.id()) }
    }

    /// Hands the batch to raft as one entry.
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let data = self.batch.take();
        let tags = std::mem::take(&mut self.batch_tags);
        match self.raw.propose(Vec::new(), data) {
            Ok(()) => {
                let index = self.last_index();
                self.pending.insert(index, (self.term(), tags));
            }
            Err(_) => self.refused.extend(tags),
        }
    }

    /// Asks for a read index: a quorum round (`ReadOnlyOption::Safe`, raft-rs's default)
    /// that confirms this node still leads, answered by [`Event::ReadReady`] with `ctx`. A
    /// read served from the table once `applied_index()` reaches its index is linearizable:
    /// no leader elected meanwhile can have committed anything it misses. Asked on a node that
    /// does not lead, raft forwards it to the leader; the server only asks as leader.
    pub fn read_index(&mut self, ctx: u64) {
        self.flush();
        self.raw.read_index(ctx.to_le_bytes().to_vec());
    }

    /// Starts an election now (tests, and a planned leader transfer).
    pub fn campaign(&mut self) -> Result<(), NodeError> {
        self.flush();
        self.raw.campaign().map_err(NodeError::Raft)
    }

    /// The link to `id` broke: raft stops pipelining to it until it answers again.
    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    /// Handles one `Ready` (module documentation), appending what the caller must do to
    /// `out`. `Ok(false)`: nothing was ready. An error is fatal: drop the node.
    pub fn poll(&mut self, out: &mut Vec<Event>) -> Result<bool, NodeError> {
        self.flush();
        let refused = !self.refused.is_empty();
        out.extend(self.refused.drain(..).map(|tag| Event::Dropped { tag }));
        if !self.raw.has_ready() {
            return Ok(refused);
        }
        let mut rd = self.raw.ready();
        out.extend(rd.take_messages().into_iter().map(Event::Send));
        for read in rd.take_read_states() {
            // Only `read_index` puts contexts here, always 8 bytes.
            if let Ok(ctx) = <[u8; 8]>::try_from(read.request_ctx.as_slice()) {
                out.push(Event::ReadReady { ctx: u64::from_le_bytes(ctx), index: read.index });
            }
        }
        if !rd.snapshot().is_empty() {
            self.install(rd.snapshot(), out)?;
        }
        self.apply(rd.take_committed_entries(), out)?;
        let entries = rd.entries().len() as u64;
        let store = self.raw.mut_store();
        let synced = match rd.hs() {
            // Only the commit index moved: recorded, not fsynced (a lost commit index is learnt
            // again from the leader), so a leader pays one fsync per batch, not two.
            Some(hs)
                if entries == 0
                    && hs.term == store.hard_state().term
                    && hs.vote == store.hard_state().vote =>
            {
                store.set_commit(hs.commit)?;
                false
            }
            hs => {
                store.persist(rd.entries(), hs)?;
                entries > 0 || hs.is_some()
            }
        };
        self.stats.readies += 1;
        self.stats.fsyncs += u64::from(synced);
        self.stats.entry_batches += u64::from(entries > 0);
        self.stats.persisted += entries;
        out.extend(rd.take_persisted_messages().into_iter().map(Event::Send));
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        out.extend(light.take_messages().into_iter().map(Event::Send));
        self.apply(light.take_committed_entries(), out)?;
        self.raw.advance_apply();
        self.maybe_compact()?;
        Ok(true)
    }

    /// Whether a leader's snapshot sent to `id` left this node: `true` once it was queued
    /// whole (raft then probes the follower from the snapshot's index; if it never got it,
    /// raft sends another), `false` if it was dropped (raft sends another).
    pub fn report_snapshot(&mut self, id: u64, sent: bool) {
        let status = if sent { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
        self.raw.report_snapshot(id, status);
    }

    /// Takes a snapshot and compacts the log up to the applied index, if the policy says so.
    fn maybe_compact(&mut self) -> Result<(), NodeError> {
        let store = self.raw.store();
        if !self.policy.due()
            || self.applied <= store.snapshot_metadata().index
            || self.applied > store.hard_state().commit
        {
            return Ok(());
        }
        let data = encode_state(self.applied_now, &self.table);
        let len = data.len();
        self.raw.mut_store().compact(self.applied, data)?;
        self.policy.taken(len);
        self.stats.snapshots_taken += 1;
        self.stats.snapshot_bytes = len as u64;
        Ok(())
    }

    /// Installs a leader's snapshot: the table is decoded first, so a snapshot that does not
    /// restore stops the node before its log is replaced.
    fn install(&mut self, snapshot: &raft::eraftpb::Snapshot, out: &mut Vec<Event>) -> Result<(), NodeError> {
        let index = snapshot.get_metadata().index;
        let (now, table) = decode_state(&snapshot.data, self.limits)
            .map_err(|source| NodeError::Snapshot { index, source })?;
        self.raw.mut_store().apply_snapshot(snapshot)?;
        // Proposals up to the snapshot's index are answered never: their outputs are unknown.
        while let Some(first) = self.pending.first_entry() {
            if *first.key() > index {
                break;
            }
            let (_, (_, tags)) = first.remove_entry();
            out.extend(tags.into_iter().map(|tag| Event::Dropped { tag }));
        }
        self.table = table;
        self.applied = index;
        self.applied_now = now; // the snapshot's, so later entries clamp as on every replica
        self.expire_in_flight = None;
        self.policy.taken(snapshot.data.len());
        self.stats.snapshots_installed += 1;
        self.stats.snapshot_bytes = snapshot.data.len() as u64;
        out.push(Event::Restored { index });
        Ok(())
    }

    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The node this one believes leads, if any.
    pub fn leader_id(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|&id| id != 0)
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The first index still in the log (after the last snapshot's).
    pub fn first_index(&self) -> u64 {
        self.raw.raft.raft_log.first_index()
    }

    /// The last index in the log: proposals still in the batch are not in it yet.
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// Commands proposed since the last flush, not yet in the log (module doc).
    pub fn batched(&self) -> u32 {
        self.batch.count()
    }

    /// The last log index applied to the table.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// The time the last applied entry was applied at (cluster time).
    pub fn applied_now(&self) -> Tick {
        self.applied_now
    }

    /// Cluster time at local `now`: what this node would stamp on an entry now, for reading
    /// the table between entries (listings' ages and deadlines). Never below what was applied.
    pub fn cluster_now(&self, now: Tick) -> Tick {
        now.saturating_add(self.offset).max(self.applied_now).max(self.stamped)
    }

    /// The table's digest (`LockTable::digest`): equal on replicas that applied the same log.
    pub fn digest(&self) -> u64 {
        self.table.digest()
    }

    pub fn table(&self) -> &LockTable {
        &self.table
    }

    pub fn store(&self) -> &DiskStorage {
        self.raw.store()
    }

    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// Cluster time for an entry proposed at local `now`: never below what was applied or
    /// stamped before (module documentation, "Time").
    fn stamp(&mut self, now: Tick) -> Tick {
        let floor = self.applied_now.max(self.stamped);
        if now.saturating_add(self.offset) < floor {
            self.offset = floor - now;
        }
        self.stamped = now.saturating_add(self.offset);
        self.stamped
    }

    /// Proposes an `Expire` as an entry of its own (after the batch, so in proposal order):
    /// its index is what `expire_in_flight` waits for. Its index, or `None` if raft refused.
    fn propose_expire(&mut self, now: Tick) -> Option<u64> {
        self.flush();
        let now = self.stamp(now);
        let mut data = Vec::new();
        encode_entry(&LogCommand { now, command: Command::Expire }, &mut data);
        // Refused while a leader transfer is under way (or the log is at its bound).
        self.raw.propose(Vec::new(), data).ok()?;
        Some(self.last_index())
    }

    /// The leader's timers, as one `Expire` entry at a time.
    fn fire_timers(&mut self, now: Tick) {
        if !self.is_leader() {
            self.expire_in_flight = None;
            return;
        }
        if let Some((term, index)) = self.expire_in_flight {
            if term == self.term() && self.applied < index {
                return;
            }
            self.expire_in_flight = None;
        }
        let cluster_now = now.saturating_add(self.offset).max(self.applied_now).max(self.stamped);
        let due =
            self.table.has_pending_releases() || self.table.next_deadline().is_some_and(|d| d <= cluster_now);
        if due {
            if let Some(index) = self.propose_expire(now) {
                self.expire_in_flight = Some((self.term(), index));
                self.stats.expires_proposed += 1;
            }
        }
    }

    /// Applies committed entries in order, answering the proposals among them.
    fn apply(&mut self, entries: Vec<Entry>, out: &mut Vec<Event>) -> Result<(), NodeError> {
        for entry in entries {
            let index = entry.index;
            debug_assert_eq!(index, self.applied + 1, "raft hands committed entries in order");
            self.applied = index;
            // A proposal at an index up to this one is answered now or never.
            let mut mine = Vec::new();
            while let Some(first) = self.pending.first_entry() {
                if *first.key() > index {
                    break;
                }
                let (at, (term, tags)) = first.remove_entry();
                if at == index && term == entry.term {
                    mine = tags;
                } else {
                    out.extend(tags.into_iter().map(|tag| Event::Dropped { tag }));
                }
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => {}
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    return Err(NodeError::Unsupported { index, what: "a membership change" })
                }
            }
            if entry.data.is_empty() {
                continue; // a new leader's empty entry
            }
            let mut decoded = std::mem::take(&mut self.decoded);
            decode_entries(&entry.data, &mut decoded).map_err(|source| NodeError::Entry { index, source })?;
            self.policy.applied(entry.data.len());
            self.stats.applied_entries += 1;
            let mut tags = mine.into_iter();
            for (position, LogCommand { now, command }) in decoded.drain(..).enumerate() {
                let now = now.max(self.applied_now);
                self.applied_now = now;
                let mut outputs = Vec::new();
                self.table.apply(now, &command, &mut outputs);
                self.stats.applied_commands += 1;
                out.push(Event::Applied { index, position: position as u32, tag: tags.next(), outputs });
            }
            self.decoded = decoded;
            // More tags than commands is a bug, never a silence: their proposers hear Dropped.
            out.extend(tags.map(|tag| Event::Dropped { tag }));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
