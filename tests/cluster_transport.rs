//! The peer transport (`officer::cluster::Transport`) over loopback: two and three transports
//! in one test thread, each with its own mio `Poll`, exchanging raft messages; a peer killed
//! and restarted (reconnect, either side); handshakes of another cluster or an unknown node
//! refused; garbage from a raw TCP client closing only its connection; a peer that never reads
//! (the sender's queue stays within its bound and counts drops); and three `Node`s over three
//! transports electing a leader and committing LOCK commands applied identically everywhere.
//!
//! Every wait is on events (a mio poll with a short timeout, in a loop bounded by rounds);
//! nothing sleeps, nothing asserts on time.
#![cfg(feature = "cluster")]

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Poll};
use officer::cluster::raft::eraftpb::{ConfState, Entry, Message, MessageType};
use officer::cluster::wire::{encode_handshake, encode_message, Handshake};
use officer::cluster::{DiskStorage, Event, Node, NodeConfig, Transport, TransportConfig};
use officer::locks::{Command, LockOpts, Name, SessionId};

const CLUSTER: u64 = 7;
const ROUNDS: usize = 3000;

struct Side {
    id: u64,
    poll: Poll,
    events: Events,
    transport: Transport,
    inbox: Vec<(u64, Message)>,
    unreachable: Vec<u64>,
}

impl Side {
    fn new(config: TransportConfig, addr: SocketAddr) -> Side {
        let poll = Poll::new().expect("a poll");
        let listener = TcpListener::bind(addr).expect("bind the peer address");
        let id = config.node_id;
        let transport =
            Transport::new(config, listener, poll.registry(), 10..100, Instant::now()).expect("a transport");
        Side {
            id,
            poll,
            events: Events::with_capacity(64),
            transport,
            inbox: Vec::new(),
            unreachable: Vec::new(),
        }
    }

    /// One turn: wait a little for events, handle them, housekeeping, write, collect.
    fn turn(&mut self) {
        match self.poll.poll(&mut self.events, Some(Duration::from_millis(2))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("poll: {e}"),
        }
        let now = Instant::now();
        for event in self.events.iter() {
            assert!(self.transport.owns(event.token()), "only the transport's tokens are registered");
            self.transport.handle_event(self.poll.registry(), event, now);
        }
        self.transport.tick(self.poll.registry(), now);
        self.transport.flush(self.poll.registry());
        self.transport.poll_inbound(&mut self.inbox);
        self.transport.take_unreachable(&mut self.unreachable);
    }
}

/// Free loopback addresses: bound then released, so each side rebinds its own (and a
/// restarted side the same one).
fn addresses(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    listeners.iter().map(|l| l.local_addr().expect("addr")).collect()
}

fn config(id: u64, addrs: &[SocketAddr]) -> TransportConfig {
    let peers = (1..=addrs.len() as u64).filter(|&p| p != id).map(|p| (p, addrs[p as usize - 1])).collect();
    TransportConfig::new(CLUSTER, id, peers)
}

fn sides(addrs: &[SocketAddr]) -> Vec<Side> {
    (1..=addrs.len() as u64).map(|id| Side::new(config(id, addrs), addrs[id as usize - 1])).collect()
}

fn run_until(sides: &mut [Side], what: &str, mut done: impl FnMut(&mut [Side]) -> bool) {
    for _ in 0..ROUNDS {
        if done(sides) {
            return;
        }
        for side in sides.iter_mut() {
            side.turn();
        }
    }
    panic!("not reached within {ROUNDS} rounds: {what}");
}

fn all_connected(sides: &[Side]) -> bool {
    sides.iter().all(|a| sides.iter().all(|b| a.id == b.id || a.transport.is_connected(b.id)))
}

fn heartbeat(from: u64, to: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

#[test]
fn two_transports_exchange_messages_in_order() {
    let addrs = addresses(2);
    let mut sides = sides(&addrs);
    run_until(&mut sides, "connected", |s| all_connected(s));
    for term in 1..=200 {
        assert!(sides[0].transport.send(2, &heartbeat(1, 2, term)));
        assert!(sides[1].transport.send(1, &heartbeat(2, 1, term)));
    }
    run_until(&mut sides, "all delivered", |s| s.iter().all(|side| side.inbox.len() == 200));
    for side in &sides {
        let other = 3 - side.id;
        let terms: Vec<u64> = side
            .inbox
            .iter()
            .map(|(from, m)| {
                assert_eq!((*from, m.from, m.to), (other, other, side.id));
                m.term
            })
            .collect();
        assert_eq!(terms, (1..=200).collect::<Vec<_>>(), "in order, none lost");
        assert_eq!(side.transport.stats().established, 1, "one connection per pair");
    }
    assert_eq!(sides[0].transport.stats().dials, 1, "the lower id dials");
    assert_eq!(sides[1].transport.stats().dials, 0);
    // A message to an unknown node is dropped and counted.
    assert!(!sides[0].transport.send(9, &heartbeat(1, 9, 1)));
    assert_eq!(sides[0].transport.stats().dropped_unconnected, 1);
}

#[test]
fn three_transports_form_a_mesh() {
    let addrs = addresses(3);
    let mut sides = sides(&addrs);
    run_until(&mut sides, "a full mesh", |s| all_connected(s));
    for side in sides.iter_mut() {
        for to in (1..=3).filter(|&to| to != side.id) {
            for term in 1..=20 {
                assert!(side.transport.send(to, &heartbeat(side.id, to, term)));
            }
        }
    }
    run_until(&mut sides, "all delivered", |s| s.iter().all(|side| side.inbox.len() == 40));
    for side in &sides {
        for from in (1..=3).filter(|&f| f != side.id) {
            let terms: Vec<u64> =
                side.inbox.iter().filter(|(f, _)| *f == from).map(|(_, m)| m.term).collect();
            assert_eq!(terms, (1..=20).collect::<Vec<_>>());
        }
        assert_eq!(side.transport.stats().refused, 0);
    }
}

#[test]
fn a_killed_peer_is_reconnected_after_its_restart() {
    let addrs = addresses(2);
    let mut sides = sides(&addrs);
    run_until(&mut sides, "connected", |s| all_connected(s));
    // Kill the acceptor (node 2): node 1 sees the link break and dials again until it is back.
    let killed = sides.pop().expect("node 2");
    drop(killed);
    run_until(&mut sides, "node 1 sees the break", |s| {
        s[0].unreachable.contains(&2) && !s[0].transport.is_connected(2)
    });
    // Dials fail with the port closed (back-off between them), then it restarts.
    run_until(&mut sides, "node 1 dials the closed port twice more", |s| s[0].transport.stats().dials >= 3);
    assert!(!sides[0].transport.is_connected(2));
    sides.push(Side::new(config(2, &addrs), addrs[1]));
    run_until(&mut sides, "reconnected to the restarted node 2", |s| all_connected(s));
    assert!(sides[0].transport.send(2, &heartbeat(1, 2, 5)));
    run_until(&mut sides, "a message over the new link", |s| s[1].inbox.iter().any(|(_, m)| m.term == 5));

    // Kill the dialer (node 1) and restart it: node 2 takes its new connection (the newer
    // of one dialer wins), whether or not it noticed the old one end.
    sides.remove(0);
    sides.insert(0, Side::new(config(1, &addrs), addrs[0]));
    run_until(&mut sides, "the restarted node 1 connected", |s| all_connected(s));
    assert!(sides[1].transport.send(1, &heartbeat(2, 1, 6)));
    run_until(&mut sides, "node 2 reaches the new node 1", |s| s[0].inbox.iter().any(|(_, m)| m.term == 6));
}

/// Drives `sides` until the raw client's socket reports end of stream; returns what it read.
fn until_closed(sides: &mut [Side], raw: &mut std::net::TcpStream, what: &str) -> Vec<u8> {
    raw.set_nonblocking(true).expect("nonblocking");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..ROUNDS {
        match raw.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("{what}: {e}"),
        }
        for side in sides.iter_mut() {
            side.turn();
        }
    }
    panic!("{what}: the connection was not closed within {ROUNDS} rounds");
}

#[test]
fn a_handshake_of_another_cluster_or_an_unknown_node_is_refused() {
    let addrs = addresses(2);
    let mut sides = sides(&addrs);
    run_until(&mut sides, "connected", |s| all_connected(s));
    let refusals =
        [Handshake { cluster_id: CLUSTER + 1, node_id: 1 }, Handshake { cluster_id: CLUSTER, node_id: 9 }];
    for (i, handshake) in refusals.iter().enumerate() {
        let mut raw = std::net::TcpStream::connect(addrs[1]).expect("connect");
        let mut bytes = Vec::new();
        encode_handshake(handshake, &mut bytes);
        encode_message(&heartbeat(handshake.node_id, 2, 99), &mut bytes).expect("encode");
        raw.write_all(&bytes).expect("write");
        let got = until_closed(&mut sides, &mut raw, "refused handshake");
        assert!(got.is_empty(), "the acceptor sends nothing to a refused dialer");
        assert_eq!(sides[1].transport.stats().refused, i as u64 + 1);
    }
    // The refused message never arrived, and the real link still works.
    assert!(sides[1].inbox.iter().all(|(_, m)| m.term != 99));
    assert!(sides[0].transport.send(2, &heartbeat(1, 2, 3)));
    run_until(&mut sides, "the real link still carries messages", |s| {
        s[1].inbox.iter().any(|(_, m)| m.term == 3)
    });
    // A whole transport of another cluster is refused the same way, dial after dial.
    let stranger_addr = addresses(1)[0];
    let mut stranger_config = config(1, &addrs);
    stranger_config.cluster_id = CLUSTER + 1;
    let mut all = vec![Side::new(stranger_config, stranger_addr), sides.pop().expect("node 2")];
    let before = all[1].transport.stats().refused;
    all[1].inbox.clear();
    run_until(&mut all, "the stranger's dials refused, and it saw them end", |s| {
        s[1].transport.stats().refused >= before + 2 && s[0].transport.stats().broken >= 2
    });
    assert!(all[0].transport.stats().dials >= 2, "the stranger dials again (with back-off)");
    assert!(all[0].inbox.is_empty() && all[1].inbox.is_empty());
}

#[test]
fn garbage_from_a_raw_client_closes_only_its_connection() {
    let addrs = addresses(2);
    let mut sides = sides(&addrs);
    run_until(&mut sides, "connected", |s| all_connected(s));
    let garbage: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0xff; 64],
        &[0, 0, 0, 0, 0, 0, 0, 0, 1],
        &[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0],
        // A length below MAX_FRAME but above a handshake's, body never sent: refused from the
        // header alone, before the handshake nothing larger is buffered.
        &[0xe8, 0x03, 0, 0, 0, 0, 0, 0],
    ];
    for (i, bytes) in garbage.iter().enumerate() {
        let mut raw = std::net::TcpStream::connect(addrs[1]).expect("connect");
        raw.write_all(bytes).expect("write");
        until_closed(&mut sides, &mut raw, "garbage");
        assert_eq!(sides[1].transport.stats().refused, i as u64 + 1);
        assert!(sides[1].transport.is_connected(1), "the peer's connection is untouched");
    }
    // Garbage after a valid handshake of node 1 (a bad frame) replaces then closes that
    // connection; node 1 notices and dials again.
    let mut raw = std::net::TcpStream::connect(addrs[1]).expect("connect");
    let mut bytes = Vec::new();
    encode_handshake(&Handshake { cluster_id: CLUSTER, node_id: 1 }, &mut bytes);
    bytes.extend_from_slice(&[9; 40]);
    raw.write_all(&bytes).expect("write");
    until_closed(&mut sides, &mut raw, "garbage after a handshake");
    run_until(&mut sides, "node 1 reconnected", |s| all_connected(s));
    assert!(sides[0].transport.send(2, &heartbeat(1, 2, 4)));
    run_until(&mut sides, "messages flow again", |s| s[1].inbox.iter().any(|(_, m)| m.term == 4));
}

#[test]
fn a_peer_that_never_reads_fills_a_bounded_queue_and_drops() {
    let addrs = addresses(2);
    let bound = 256 << 10;
    let mut config2 = config(2, &addrs);
    config2.queue_bytes = bound;
    let mut side = vec![Side::new(config2, addrs[1])];
    // "Node 1" is a raw socket that says hello and never reads.
    let mut raw = std::net::TcpStream::connect(addrs[1]).expect("connect");
    let mut hello = Vec::new();
    encode_handshake(&Handshake { cluster_id: CLUSTER, node_id: 1 }, &mut hello);
    raw.write_all(&hello).expect("write");
    run_until(&mut side, "the raw node 1 accepted", |s| s[0].transport.is_connected(1));
    let mut big = heartbeat(2, 1, 1);
    big.set_msg_type(MessageType::MsgAppend);
    let entry = Entry { data: vec![7u8; 64 << 10].into(), ..Default::default() };
    big.entries = vec![entry].into();
    let mut sent = 0u64;
    for _ in 0..400 {
        for _ in 0..8 {
            sent += u64::from(side[0].transport.send(1, &big));
        }
        side[0].turn();
        assert!(side[0].transport.queued_bytes(1) <= bound, "the queue stays within its bound");
    }
    let stats = side[0].transport.stats();
    assert!(stats.dropped_full > 0, "the full queue dropped: {stats:?}");
    assert_eq!(stats.dropped_full + sent, 3200);
    assert!(side[0].transport.is_connected(1), "a slow peer is not disconnected");
    drop(raw);
}

#[test]
fn three_nodes_over_three_transports_commit_and_agree() {
    let addrs = addresses(3);
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let voters = ConfState { voters: vec![1, 2, 3], ..Default::default() };
    let mut sides = sides(&addrs);
    let mut nodes: Vec<Node> = (1..=3u64)
        .map(|id| {
            let mut store = DiskStorage::open(tmp.path().join(format!("node{id}"))).expect("open");
            store.initialize(&voters).expect("initialize");
            let mut config = NodeConfig::new(id);
            config.tick_ms = 10;
            Node::new(&config, store).expect("a node")
        })
        .collect();
    let start = Instant::now();
    let mut answered: BTreeMap<u64, usize> = BTreeMap::new();
    let mut events = Vec::new();
    let mut round = |sides: &mut [Side], nodes: &mut [Node], answered: &mut BTreeMap<u64, usize>| {
        for (side, node) in sides.iter_mut().zip(nodes.iter_mut()) {
            side.turn();
            node.tick(start.elapsed().as_millis() as u64);
            for (_, message) in side.inbox.drain(..) {
                let _ = node.step(message); // a stale message is refused, not fatal
            }
            for peer in side.unreachable.drain(..) {
                node.report_unreachable(peer);
            }
            while node.poll(&mut events).expect("poll") {
                for event in events.drain(..) {
                    match event {
                        Event::Send(message) => {
                            side.transport.send(message.to, &message);
                        }
                        Event::Applied { tag: Some(tag), outputs, .. } => {
                            answered.insert(tag, outputs.len());
                        }
                        _ => {}
                    }
                }
            }
            side.transport.flush(side.poll.registry());
        }
    };
    let mut leader = None;
    for _ in 0..ROUNDS {
        round(&mut sides, &mut nodes, &mut answered);
        leader = nodes.iter().position(|n| n.is_leader());
        if leader.is_some() {
            break;
        }
    }
    let leader = leader.expect("a leader elected over the transports");
    let mut commands = vec![Command::Attach { session: SessionId(1), label: "client1".into() }];
    for i in 0..20u32 {
        commands.push(Command::Lock {
            session: SessionId(1),
            request_id: i + 1,
            name: Name::new(&format!("job:{}", i % 5)),
            timeout_ms: Some(1000),
            queue_max: None,
            opts: LockOpts::default(),
        });
    }
    let count = commands.len() as u64;
    let now = start.elapsed().as_millis() as u64;
    for (tag, command) in commands.into_iter().enumerate() {
        nodes[leader].propose(now, command, tag as u64).expect("the leader takes proposals");
    }
    for _ in 0..ROUNDS {
        let applied = nodes[leader].applied_index();
        if answered.len() as u64 == count && nodes.iter().all(|n| n.applied_index() >= applied) {
            break;
        }
        round(&mut sides, &mut nodes, &mut answered);
    }
    assert_eq!(answered.len() as u64, count, "every proposal answered by the leader");
    assert!(answered.values().skip(1).all(|&outputs| outputs >= 1), "every LOCK answered");
    let digests: Vec<u64> = nodes.iter().map(|n| n.digest()).collect();
    assert!(digests.iter().all(|&d| d == digests[0]), "identical tables: {digests:?}");
    assert!(nodes.iter().all(|n| n.applied_index() == nodes[leader].applied_index()));
    assert_eq!(nodes[leader].table().state_lines(), nodes[(leader + 1) % 3].table().state_lines());
    for side in &sides {
        assert_eq!(side.transport.stats().refused, 0);
    }
}

#[test]
fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let addrs = addresses(2);
    let mut config2 = config(2, &addrs);
    config2.handshake_timeout = Duration::from_millis(50);
    let mut side = vec![Side::new(config2, addrs[1])];
    let mut raw = std::net::TcpStream::connect(addrs[1]).expect("connect");
    until_closed(&mut side, &mut raw, "a silent connection");
    assert_eq!(side[0].transport.stats().refused, 1);
}

#[test]
fn reads_take_a_bounded_budget_per_turn_and_go_on_next_turn() {
    let addrs = addresses(2);
    let budget = 64;
    let mut config2 = config(2, &addrs);
    config2.read_budget = budget;
    let mut sides = vec![Side::new(config(1, &addrs), addrs[0]), Side::new(config2, addrs[1])];
    run_until(&mut sides, "connected", |s| all_connected(s));
    for term in 1..=500 {
        assert!(sides[0].transport.send(2, &heartbeat(1, 2, term)));
    }
    // Every frame is at least 9 bytes: one turn's budget holds at most budget / 9 of them
    // (plus one whose start was read the turn before).
    let most = budget / 9 + 1;
    let mut rounds_with_more = 0;
    for _ in 0..ROUNDS {
        if sides[1].inbox.len() == 500 {
            break;
        }
        let before = sides[1].inbox.len();
        sides[0].turn();
        sides[1].turn();
        let got = sides[1].inbox.len() - before;
        assert!(got <= most, "{got} frames in one turn, the budget allows {most}");
        if sides[1].transport.next_wakeup().is_some() {
            rounds_with_more += 1;
        }
    }
    let terms: Vec<u64> = sides[1].inbox.iter().map(|(_, m)| m.term).collect();
    assert_eq!(terms, (1..=500).collect::<Vec<_>>(), "all delivered, in order, over many turns");
    assert!(rounds_with_more > 0, "next_wakeup asked for another turn while bytes were left");
}

#[test]
fn a_dial_from_the_higher_id_loses_to_the_lower_ids_connection() {
    let addrs = addresses(2);
    let mut sides = sides(&addrs);
    run_until(&mut sides, "connected", |s| all_connected(s));
    // Node 2 "dials" node 1 (the wrong direction, as a simultaneous dial would): node 1 keeps
    // the connection it dialed and closes the newcomer.
    let mut raw = std::net::TcpStream::connect(addrs[0]).expect("connect");
    let mut bytes = Vec::new();
    encode_handshake(&Handshake { cluster_id: CLUSTER, node_id: 2 }, &mut bytes);
    raw.write_all(&bytes).expect("write");
    until_closed(&mut sides, &mut raw, "the wrong-direction dial");
    assert_eq!(sides[0].transport.stats().refused, 1);
    assert_eq!(sides[0].transport.stats().broken, 0, "the dialed connection is kept");
    assert!(sides[1].transport.send(1, &heartbeat(2, 1, 8)));
    run_until(&mut sides, "the kept link carries messages", |s| s[0].inbox.iter().any(|(_, m)| m.term == 8));
}

#[test]
fn a_burst_of_strangers_is_accepted_over_several_turns_and_refused() {
    let addrs = addresses(2);
    let mut side = vec![Side::new(config(2, &addrs), addrs[1])];
    // More than one turn's accept budget (32), each sending a bad frame.
    let mut raws: Vec<std::net::TcpStream> = (0..45)
        .map(|_| {
            let mut raw = std::net::TcpStream::connect(addrs[1]).expect("connect");
            raw.write_all(&[0xff; 16]).expect("write");
            raw
        })
        .collect();
    for raw in raws.iter_mut() {
        until_closed(&mut side, raw, "a stranger");
    }
    let stats = side[0].transport.stats();
    assert_eq!((stats.accepted, stats.refused), (45, 45), "{stats:?}");
}

/// A snapshot larger than both the queue's bound and `MAX_FRAME` goes whole, in one frame,
/// when the queue was within its bound; a second one behind it is dropped until the first is
/// written; an append of the same size is refused (only snapshots may exceed `MAX_FRAME`).
#[test]
fn a_snapshot_above_the_queue_bound_and_the_frame_cap_goes_whole() {
    let addrs = addresses(2);
    let mut sides = sides(&addrs);
    run_until(&mut sides, "connected", |s| all_connected(s));
    let size = (officer::cluster::wire::MAX_FRAME as usize) + (4 << 20);
    let mut snapshot = heartbeat(1, 2, 1);
    snapshot.set_msg_type(MessageType::MsgSnapshot);
    let mut body = officer::cluster::raft::eraftpb::Snapshot::default();
    body.mut_metadata().index = 77;
    body.data = (0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    snapshot.set_snapshot(body);
    assert!(sides[0].transport.send(2, &snapshot), "taken past the queue's bound");
    assert!(!sides[0].transport.send(2, &snapshot), "a second one waits for the first");
    let mut append = heartbeat(1, 2, 1);
    append.set_msg_type(MessageType::MsgAppend);
    append.entries = vec![Entry { data: vec![1u8; size].into(), ..Default::default() }].into();
    assert!(!sides[0].transport.send(2, &append), "an append above MAX_FRAME is refused");
    run_until(&mut sides, "the snapshot delivered", |s| !s[1].inbox.is_empty());
    let (from, got) = sides[1].inbox.remove(0);
    assert_eq!((from, got.get_msg_type()), (1, MessageType::MsgSnapshot));
    assert_eq!(got.get_snapshot().get_metadata().index, 77);
    assert_eq!(got.get_snapshot().data.len(), size);
    assert!(got.get_snapshot().data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    assert!(sides[1].transport.is_connected(1), "the link stays up");
    assert!(sides[0].transport.send(2, &heartbeat(1, 2, 2)), "the queue is free again");
}
