//! The peer transport: TCP connections between the nodes of one cluster, framed by
//! [`wire`](super::wire), driven from a mio `Poll` the caller owns (docs/CLUSTER.md,
//! "Transport"). It registers its sockets with the caller's `Registry` under tokens from the
//! range the caller gives, is handed `now` and readiness events, never blocks, spawns no
//! thread and reads no clock.
//!
//! - One connection per pair of nodes, used both ways: the node with the lower id dials, the
//!   other accepts. The dialer's handshake comes first; the acceptor checks its cluster id and
//!   that its node id is a peer, else closes (and logs). Should two connections for one pair
//!   exist (a misconfigured peer dialing down, or a dialer that restarted while the acceptor
//!   still holds its old half-open connection), the one dialed by the lower id wins on both
//!   sides; between two of the same dialer, the newer wins.
//! - A failed or broken outbound connection is dialed again after a back-off that doubles
//!   from `backoff_min` to `backoff_max`, jittered (a uniform draw in its upper half) by a
//!   generator seeded from the node id; a frame received resets it.
//! - [`Transport::send`] queues one frame for a peer. The queue of unsent bytes per peer is
//!   bounded (`queue_bytes`): a frame that does not fit, or a peer not connected, is dropped
//!   and counted (raft retransmits). [`Transport::flush`] writes what is queued.
//! - Reads take at most `read_budget` bytes per connection per turn; a connection left with
//!   bytes to read is read again by the next [`Transport::tick`] (`next_wakeup` says so); the
//!   listener accepts at most 32 connections per turn the same way. Before its handshake a
//!   connection may send only a handshake's 26 bytes: no stranger makes this node buffer more.
//!   Frames are decoded by the pure [`decode_frame`]; a bad frame, a second handshake or a
//!   message whose `from` is not the handshake's node closes that connection only.
//! - [`Transport::poll_inbound`] hands what arrived, [`Transport::take_unreachable`] the
//!   peers whose link broke (for `Node::report_unreachable`).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use raft::eraftpb::{Message, MessageType};
use slab::Slab;

use super::wire::{
    decode_frame, decode_peer_frame, encode_handshake, encode_message, Frame, Handshake, MAX_FRAME,
    MAX_SNAPSHOT_FRAME,
};

/// The length field of a handshake frame: kind and 17 bytes of body.
const HANDSHAKE_FRAME: u32 = 18;

/// Connections accepted per turn at most (the rest wait for the next `tick`).
const ACCEPT_BUDGET: usize = 32;

/// How a transport runs. `TransportConfig::new(cluster_id, node_id, peers)` has sensible
/// defaults.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub cluster_id: u64,
    /// This node's id, never 0.
    pub node_id: u64,
    /// Every other member: id and peer address.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// The most unsent bytes queued for one peer; above it `send` drops.
    pub queue_bytes: usize,
    /// The most bytes read from one connection per turn.
    pub read_budget: usize,
    /// The decoder's frame cap (at most [`MAX_FRAME`]).
    pub max_frame: u32,
    /// The decoder's cap for a frame carrying a snapshot (at most [`MAX_SNAPSHOT_FRAME`]).
    pub max_snapshot_frame: u32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// An accepted connection that sends no handshake within this is closed.
    pub handshake_timeout: Duration,
}

impl TransportConfig {
    /// 4 MiB per peer queue, 256 KiB read per turn, back-off 50 ms to 2 s, 5 s to handshake.
    pub fn new(cluster_id: u64, node_id: u64, peers: BTreeMap<u64, SocketAddr>) -> TransportConfig {
        TransportConfig {
            cluster_id,
            node_id,
            peers,
            queue_bytes: 4 << 20,
            read_budget: 256 << 10,
            max_frame: MAX_FRAME,
            max_snapshot_frame: MAX_SNAPSHOT_FRAME,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters since the transport started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub dials: u64,
    pub accepted: u64,
    /// Dials that connected, and accepted connections whose handshake was accepted.
    pub established: u64,
    /// Connections closed for bad input: a bad frame, a refused handshake, a wrong `from`.
    pub refused: u64,
    /// Connections closed because the peer went away or a socket failed.
    pub broken: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    /// Messages dropped: the peer's queue was full (or the message exceeds `MAX_FRAME`).
    pub dropped_full: u64,
    /// Messages dropped: no connection to the peer (or an unknown peer).
    pub dropped_unconnected: u64,
}

/// The node-to-node transport: see the module documentation.
pub struct Transport {
    config: TransportConfig,
    listener: TcpListener,
    listener_token: Token,
    /// Connection `key` has token `first_conn_token + key`.
    first_conn_token: usize,
    max_conns: usize,
    conns: Slab<Conn>,
    peers: BTreeMap<u64, Peer>,
    /// Connections whose read budget ran out: read again on the next `tick`.
    read_again: Vec<usize>,
    /// The listener's accept budget ran out: accept again on the next `tick`.
    accept_again: bool,
    inbound: Vec<(u64, Message)>,
    unreachable: Vec<u64>,
    rng: u64,
    last_now: Instant,
    stats: TransportStats,
}

struct Peer {
    addr: SocketAddr,
    /// The connection established with this peer (handshake sent or received).
    conn: Option<usize>,
    /// When an outbound dial is due (only for peers this node dials, while not connected).
    dial_at: Option<Instant>,
    backoff: Duration,
}

struct Conn {
    stream: TcpStream,
    /// The peer, once known: at once for a dial, after its handshake for an accepted one.
    peer: Option<u64>,
    /// Whether this node dialed it.
    outbound: bool,
    /// Connected (a dial) or its handshake received (an accepted connection).
    established: bool,
    opened: Instant,
    read: Vec<u8>,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    sent: usize,
    writable: bool,
}

impl Conn {
    fn unsent(&self) -> usize {
        self.out.len() - self.sent
    }
}

/// Why a connection closes.
enum Close {
    Refused(String),
    Broken(String),
}

impl Transport {
    /// A transport over `listener` (bound by the caller, so it can learn the address before
    /// the others start), registering with `registry` under tokens from `tokens`: the first
    /// for the listener, one per connection after it.
    pub fn new(
        config: TransportConfig,
        mut listener: TcpListener,
        registry: &Registry,
        tokens: Range<usize>,
        now: Instant,
    ) -> io::Result<Transport> {
        if config.node_id == 0 || config.peers.contains_key(&config.node_id) || tokens.len() < 2 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a transport needs a node id other than 0 and its peers', and two tokens or more",
            ));
        }
        let listener_token = Token(tokens.start);
        registry.register(&mut listener, listener_token, Interest::READABLE)?;
        let peers = config
            .peers
            .iter()
            .map(|(&id, &addr)| {
                let dial_at = (id > config.node_id).then_some(now);
                (id, Peer { addr, conn: None, dial_at, backoff: config.backoff_min })
            })
            .collect();
        let rng = config.node_id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        Ok(Transport {
            listener,
            listener_token,
            first_conn_token: tokens.start + 1,
            max_conns: tokens.len() - 1,
            conns: Slab::new(),
            peers,
            read_again: Vec::new(),
            accept_again: false,
            inbound: Vec::new(),
            unreachable: Vec::new(),
            rng,
            last_now: now,
            stats: TransportStats::default(),
            config,
        })
    }

    /// Whether `token` is one of this transport's.
    pub fn owns(&self, token: Token) -> bool {
        token == self.listener_token || self.key(token).is_some()
    }

    fn key(&self, token: Token) -> Option<usize> {
        let key = token.0.checked_sub(self.first_conn_token)?;
        (key < self.max_conns).then_some(key)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    /// Whether the connection with `peer` is up: the dial connected, or the peer's handshake
    /// was accepted. (Messages sent while a dial is under way are queued behind its handshake.)
    pub fn is_connected(&self, peer: u64) -> bool {
        self.peer_conn(peer).is_some_and(|key| self.conns[key].established)
    }

    /// Unsent bytes queued for `peer`.
    pub fn queued_bytes(&self, peer: u64) -> usize {
        self.peer_conn(peer).map_or(0, |key| self.conns[key].unsent())
    }

    fn peer_conn(&self, peer: u64) -> Option<usize> {
        self.peers.get(&peer)?.conn
    }

    /// A readiness event for one of this transport's tokens (others are ignored).
    pub fn handle_event(&mut self, registry: &Registry, event: &mio::event::Event, now: Instant) {
        self.last_now = now;
        let token = event.token();
        if token == self.listener_token {
            if !self.accept_again {
                self.accept(registry, now);
            }
            return;
        }
        let Some(key) = self.key(token) else { return };
        if !self.conns.contains(key) {
            return; // a spurious event for a closed connection
        }
        if event.is_writable() {
            if let Err(close) = self.connected(key) {
                self.close(registry, key, close, now);
                return;
            }
            let conn = &mut self.conns[key];
            conn.writable = conn.established || !conn.outbound;
            if let Err(close) = self.write_if_writable(key) {
                self.close(registry, key, close, now);
                return;
            }
        }
        // A connection whose budget ran out last turn is read by `tick`, once per turn.
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        if readable && !self.read_again.contains(&key) {
            self.read(registry, key, now);
        }
    }

    /// Housekeeping for a turn: dials that are due, reads left over by the budget, accepted
    /// connections that never said who they are.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        self.last_now = now;
        let due: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.dial_at.is_some_and(|at| at <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.dial(registry, id, now);
        }
        if std::mem::take(&mut self.accept_again) {
            self.accept(registry, now);
        }
        for key in std::mem::take(&mut self.read_again) {
            if self.conns.contains(key) {
                self.read(registry, key, now);
            }
        }
        let timeout = self.config.handshake_timeout;
        let stale: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer.is_none() && now.saturating_duration_since(c.opened) >= timeout)
            .map(|(key, _)| key)
            .collect();
        for key in stale {
            self.close(registry, key, Close::Refused("no handshake in time".into()), now);
        }
    }

    /// When `tick` should run next at the latest.
    pub fn next_wakeup(&self) -> Option<Instant> {
        if !self.read_again.is_empty() || self.accept_again {
            return Some(self.last_now);
        }
        let dials = self.peers.values().filter_map(|p| p.dial_at);
        let handshakes = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer.is_none())
            .map(|(_, c)| c.opened + self.config.handshake_timeout);
        dials.chain(handshakes).min()
    }

    /// Queues `message` for peer `to`; `false` if it was dropped (not connected, or its queue
    /// is full: counted in the stats). Call [`flush`](Transport::flush) to write.
    pub fn send(&mut self, to: u64, message: &Message) -> bool {
        let Some(key) = self.peer_conn(to) else {
            self.stats.dropped_unconnected += 1;
            return false;
        };
        let conn = &mut self.conns[key];
        let start = conn.out.len();
        if encode_message(message, &mut conn.out).is_err() {
            self.stats.dropped_full += 1; // above MAX_FRAME: it would never fit
            return false;
        }
        // A snapshot is larger than the queue's bound: it is taken when the queue was within
        // the bound before it, so a peer costs at most the bound plus one snapshot.
        let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
        let before = start - conn.sent;
        if (snapshot && before > self.config.queue_bytes)
            || (!snapshot && conn.unsent() > self.config.queue_bytes)
        {
            conn.out.truncate(start);
            self.stats.dropped_full += 1;
            return false;
        }
        self.stats.frames_out += 1;
        true
    }

    /// Writes what is queued for every connected peer, as far as the sockets take it.
    pub fn flush(&mut self, registry: &Registry) {
        let keys: Vec<usize> =
            self.conns.iter().filter(|(_, c)| c.writable && c.unsent() > 0).map(|(key, _)| key).collect();
        for key in keys {
            if let Err(close) = self.write_if_writable(key) {
                self.close(registry, key, close, self.last_now);
            }
        }
    }

    /// Moves the messages that arrived, with their sender, to `out`.
    pub fn poll_inbound(&mut self, out: &mut Vec<(u64, Message)>) {
        out.append(&mut self.inbound);
    }

    /// Moves the peers whose connection broke since the last call to `out`.
    pub fn take_unreachable(&mut self, out: &mut Vec<u64>) {
        out.append(&mut self.unreachable);
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            match self.listener.accept() {
                Ok((stream, addr)) => {
                    if self.conns.len() >= self.max_conns {
                        log::warn!("peer transport: no token left, closing the connection from {addr}");
                        continue;
                    }
                    self.stats.accepted += 1;
                    if let Err(e) = self.insert(registry, stream, None, now) {
                        log::warn!("peer transport: cannot register the connection from {addr}: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("peer transport: accept: {e}");
                    return;
                }
            }
        }
        self.accept_again = true;
    }

    fn insert(
        &mut self,
        registry: &Registry,
        mut stream: TcpStream,
        peer: Option<u64>,
        now: Instant,
    ) -> io::Result<usize> {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let token = Token(self.first_conn_token + key);
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            stream,
            peer,
            outbound: peer.is_some(),
            established: false,
            opened: now,
            read: Vec::new(),
            out: Vec::new(),
            sent: 0,
            writable: false,
        };
        entry.insert(conn);
        Ok(key)
    }

    fn dial(&mut self, registry: &Registry, id: u64, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        peer.dial_at = None;
        let addr = peer.addr;
        if peer.conn.is_some() {
            return;
        }
        self.stats.dials += 1;
        let stream = match TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(e) => {
                log::debug!("peer transport: dialing node {id} at {addr}: {e}");
                self.schedule_dial(id, now);
                return;
            }
        };
        if self.conns.len() >= self.max_conns {
            self.schedule_dial(id, now);
            return;
        }
        match self.insert(registry, stream, Some(id), now) {
            Ok(key) => {
                let handshake =
                    Handshake { cluster_id: self.config.cluster_id, node_id: self.config.node_id };
                encode_handshake(&handshake, &mut self.conns[key].out);
                self.attach(registry, id, key, now);
            }
            Err(e) => {
                log::warn!("peer transport: cannot register a dial to node {id}: {e}");
                self.schedule_dial(id, now);
            }
        }
    }

    /// Back-off before the next dial: doubling, capped, a uniform draw in its upper half.
    fn schedule_dial(&mut self, id: u64, now: Instant) {
        if id < self.config.node_id {
            return; // the lower id dials
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let backoff = peer.backoff;
        let half = backoff / 2;
        let jitter = Duration::from_nanos(self.rng % (half.as_nanos() as u64).max(1));
        peer.dial_at = Some(now + half + jitter);
        peer.backoff = (backoff * 2).min(self.config.backoff_max).max(self.config.backoff_min);
    }

    /// Makes `key` the connection of peer `id`, resolving a conflict with one it already has:
    /// the connection dialed by the lower id wins, else the newer.
    fn attach(&mut self, registry: &Registry, id: u64, key: usize, now: Instant) {
        let lower_dials = self.config.node_id < id; // true: this node is the rightful dialer
        if let Some(old) = self.peers.get(&id).and_then(|p| p.conn) {
            let old_rightful = self.conns[old].outbound == lower_dials;
            let new_rightful = self.conns[key].outbound == lower_dials;
            if old_rightful && !new_rightful {
                self.close(registry, key, Close::Refused(format!("node {id} already has a connection")), now);
                return;
            }
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.conn = None;
            }
            self.close(registry, old, Close::Broken(format!("node {id} connected again")), now);
        }
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.conn = Some(key);
            peer.dial_at = None;
        }
        if !self.conns[key].outbound {
            self.conns[key].established = true;
            self.stats.established += 1;
        }
    }

    /// A dial's first writable event: connected, failed, or (spuriously) not yet.
    fn connected(&mut self, key: usize) -> Result<(), Close> {
        let conn = &mut self.conns[key];
        if conn.established || !conn.outbound {
            return Ok(());
        }
        match conn.stream.take_error() {
            Ok(Some(e)) | Err(e) => return Err(Close::Broken(e.to_string())),
            Ok(None) => {}
        }
        match conn.stream.peer_addr() {
            Ok(_) => {
                conn.established = true;
                self.stats.established += 1;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            Err(e) => Err(Close::Broken(e.to_string())),
        }
    }

    fn write_if_writable(&mut self, key: usize) -> Result<(), Close> {
        let conn = &mut self.conns[key];
        if !conn.writable {
            return Ok(());
        }
        while conn.sent < conn.out.len() {
            match conn.stream.write(&conn.out[conn.sent..]) {
                Ok(0) => return Err(Close::Broken("wrote 0 bytes".into())),
                Ok(n) => conn.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.writable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Close::Broken(e.to_string())),
            }
        }
        if conn.sent == conn.out.len() {
            conn.out.clear();
            conn.sent = 0;
        } else if conn.sent > conn.out.len() / 2 {
            conn.out.drain(..conn.sent);
            conn.sent = 0;
        }
        Ok(())
    }

    fn read(&mut self, registry: &Registry, key: usize, now: Instant) {
        let budget = self.config.read_budget.max(1);
        let mut taken = 0;
        let mut chunk = [0u8; 16 << 10];
        let result = loop {
            if taken >= budget {
                self.read_again.push(key);
                break Ok(());
            }
            let want = chunk.len().min(budget - taken);
            match self.conns[key].stream.read(&mut chunk[..want]) {
                Ok(0) => break Err(Close::Broken("closed by the peer".into())),
                Ok(n) => {
                    taken += n;
                    self.conns[key].read.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(Close::Broken(e.to_string())),
            }
        };
        // Frames that arrived before an end of stream are still delivered.
        let decoded = self.decode(registry, key, now);
        match decoded.and(result) {
            Ok(()) => {}
            Err(close) => {
                if self.conns.contains(key) {
                    self.close(registry, key, close, now);
                }
            }
        }
    }

    fn decode(&mut self, registry: &Registry, key: usize, now: Instant) -> Result<(), Close> {
        let mut at = 0;
        let result = loop {
            if !self.conns.contains(key) {
                return Ok(()); // replaced while attaching
            }
            let conn = &self.conns[key];
            // Before its handshake a connection may send only a handshake: a stranger's length
            // prefix never makes this node buffer more.
            let decoded = if conn.peer.is_some() {
                decode_peer_frame(&conn.read[at..], self.config.max_frame, self.config.max_snapshot_frame)
            } else {
                decode_frame(&conn.read[at..], HANDSHAKE_FRAME)
            };
            let (frame, used) = match decoded {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break Ok(()),
                Err(e) => break Err(Close::Refused(e.to_string())),
            };
            at += used;
            self.stats.frames_in += 1;
            match (frame, conn.peer) {
                (Frame::Handshake(h), None) => {
                    if h.cluster_id != self.config.cluster_id {
                        break Err(Close::Refused(format!(
                            "handshake of cluster {}, this is cluster {}",
                            h.cluster_id, self.config.cluster_id
                        )));
                    }
                    if !self.peers.contains_key(&h.node_id) {
                        break Err(Close::Refused(format!("handshake of node {}, not a peer", h.node_id)));
                    }
                    self.conns[key].peer = Some(h.node_id);
                    self.attach(registry, h.node_id, key, now);
                }
                (Frame::Handshake(_), Some(id)) => {
                    break Err(Close::Refused(format!("a second handshake from node {id}")))
                }
                (Frame::Raft(_), None) => {
                    break Err(Close::Refused("a raft message before the handshake".into()))
                }
                (Frame::Raft(message), Some(id)) => {
                    if message.from != id {
                        break Err(Close::Refused(format!("node {id} sent a message from {}", message.from)));
                    }
                    if let Some(peer) = self.peers.get_mut(&id) {
                        peer.backoff = self.config.backoff_min;
                    }
                    self.inbound.push((id, message));
                }
            }
        };
        if let Some(conn) = self.conns.get_mut(key) {
            conn.read.drain(..at);
        }
        result
    }

    fn close(&mut self, registry: &Registry, key: usize, why: Close, now: Instant) {
        let mut conn = self.conns.remove(key);
        let _ = registry.deregister(&mut conn.stream);
        self.read_again.retain(|&k| k != key);
        let who = match conn.peer {
            Some(id) => format!("node {id}"),
            None => conn.stream.peer_addr().map_or_else(|_| "an unknown peer".into(), |a| a.to_string()),
        };
        match &why {
            Close::Refused(reason) => {
                self.stats.refused += 1;
                log::warn!("peer transport: closing the connection of {who}: {reason}");
            }
            Close::Broken(reason) => {
                self.stats.broken += 1;
                log::info!("peer transport: the connection of {who} ended: {reason}");
            }
        }
        let Some(id) = conn.peer else { return };
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if peer.conn == Some(key) {
            peer.conn = None;
            self.unreachable.push(id);
            self.schedule_dial(id, now); // if this node is the one that dials
        }
    }
}
