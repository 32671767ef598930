// rust-protobuf messages are built field by field (as raft-rs does).
#![allow(clippy::field_reassign_with_default)]

use raft::eraftpb::{ConfState, Message};

use super::*;
use crate::locks::{LockOpts, Name, SessionId};
use crate::protocol::Response;

/// A node over a fresh log in `dir` whose configuration has `voters`.
fn node(dir: &std::path::Path, id: u64, voters: Vec<u64>) -> Node {
    let mut store = DiskStorage::open(dir).expect("a fresh log");
    if store.open_report().created {
        store.initialize(&ConfState { voters, ..Default::default() }).expect("initialize");
    }
    Node::new(&NodeConfig { tick_ms: 10, ..NodeConfig::new(id) }, store).expect("a node")
}

/// Polls until nothing is ready (a one-node cluster needs no messages).
fn drain(node: &mut Node) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..10 {
        if !node.poll(&mut events).expect("poll") {
            break;
        }
    }
    assert!(events.iter().all(|e| !matches!(e, Event::Send(_))), "one node sends nothing: {events:?}");
    events
}

fn lock(session: u64, request_id: u32, name: &str, timeout_ms: Option<u32>) -> Command {
    Command::Lock {
        session: SessionId(session),
        request_id,
        name: Name::new(name),
        timeout_ms,
        queue_max: None,
        opts: LockOpts::default(),
    }
}

fn attach(session: u64) -> Command {
    Command::Attach { session: SessionId(session), label: format!("s{session}") }
}

/// A one-node cluster, leading, with sessions 1 and 2 attached.
fn leader(dir: &std::path::Path) -> Node {
    let mut n = node(dir, 1, vec![1]);
    n.campaign().expect("campaign");
    drain(&mut n);
    assert!(n.is_leader());
    assert_eq!(n.leader_id(), Some(1));
    n.propose(0, attach(1), 1).expect("leads");
    n.propose(0, attach(2), 2).expect("leads");
    drain(&mut n);
    n
}

/// A leader whose log is not committing (here: nothing polled) refuses proposals past its
/// bound of uncommitted bytes, and takes them again once the log has committed.
#[test]
fn proposals_past_the_uncommitted_bound_are_refused_until_the_log_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = DiskStorage::open(tmp.path()).expect("a fresh log");
    store.initialize(&ConfState { voters: vec![1], ..Default::default() }).expect("initialize");
    let config = NodeConfig { tick_ms: 10, max_uncommitted_bytes: 1 << 20, ..NodeConfig::new(1) };
    let mut n = Node::new(&config, store).expect("a node");
    n.campaign().expect("campaign");
    drain(&mut n);
    let long = "n".repeat(1000);
    let taken =
        (0..5000u32).take_while(|&i| n.propose(0, lock(1, i + 1, &long, None), u64::from(i)).is_ok()).count();
    assert!(taken > 100 && taken < 5000, "{taken} proposals of about 1 KB under a 1 MiB bound");
    assert!(n.propose(0, lock(1, 9999, &long, None), 9999).is_err(), "still full");
    drain(&mut n);
    assert!(n.propose(0, lock(1, 10_000, "small", None), 10_000).is_ok(), "committed: room again");
}

#[test]
fn proposals_are_answered_by_tag_once_applied_with_one_fsync_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = leader(dir.path());
    let before = n.stats();
    n.propose(5, lock(1, 1, "a", None), 10).unwrap();
    n.propose(5, lock(2, 1, "a", Some(1000)), 11).unwrap();
    n.propose(5, lock(2, 2, "b", None), 12).unwrap();
    let events = drain(&mut n);
    let answered: Vec<(Option<u64>, Vec<Response>)> = events
        .into_iter()
        .map(|e| match e {
            Event::Applied { tag, outputs, .. } => (tag, outputs.into_iter().map(|o| o.response).collect()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        answered,
        [
            (Some(10), vec![Response::Acquired { token: 1 }]),
            (Some(11), vec![]),
            (Some(12), vec![Response::Acquired { token: 2 }]),
        ]
    );
    let after = n.stats();
    assert_eq!(after.entry_batches - before.entry_batches, 1, "{after:?}");
    assert_eq!(after.fsyncs - before.fsyncs, 1, "three proposals, one fsync: {after:?}");
    assert_eq!(n.applied_index(), n.commit_index());
}

/// Proposals made between two polls become one raft entry, applied command by command in
/// proposal order: one index, positions 0, 1, 2.
#[test]
fn proposals_between_polls_share_one_entry_in_proposal_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = leader(dir.path());
    let (before, last) = (n.stats(), n.last_index());
    n.propose(5, lock(1, 1, "a", None), 10).unwrap();
    n.propose(
        5,
        Command::Unlock { session: SessionId(1), request_id: 2, name: Name::new("a"), token: None },
        11,
    )
    .unwrap();
    n.propose(5, lock(2, 1, "a", None), 12).unwrap();
    assert_eq!(n.last_index(), last, "nothing reaches raft before the flush");
    let events = drain(&mut n);
    let applied: Vec<(u64, u32, Option<u64>)> = events
        .iter()
        .map(|e| match e {
            Event::Applied { index, position, tag, .. } => (*index, *position, *tag),
            other => panic!("{other:?}"),
        })
        .collect();
    let index = last + 1;
    assert_eq!(applied, [(index, 0, Some(10)), (index, 1, Some(11)), (index, 2, Some(12))]);
    // The unlock ran between the two locks: the second lock is granted token 2 at once.
    let Event::Applied { outputs, .. } = &events[2] else { unreachable!() };
    assert!(matches!(outputs[..], [Output { response: Response::Acquired { token: 2 }, .. }]), "{outputs:?}");
    let after = n.stats();
    assert_eq!(
        (after.applied_entries - before.applied_entries, after.applied_commands - before.applied_commands),
        (1, 3)
    );
    assert_eq!(n.last_index(), index);
}

/// The batch reaches raft before anything else does (a tick, a read index, a step), so raft's
/// state never changes between a proposal and its entry; and a batch is cut at
/// `MAX_BATCH_BYTES`.
#[test]
fn a_batch_is_flushed_before_raft_sees_anything_else_and_cut_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = leader(dir.path());
    let last = n.last_index();
    n.propose(5, lock(1, 1, "a", None), 1).unwrap();
    n.tick(6);
    assert_eq!(n.last_index(), last + 1, "tick flushed");
    n.propose(6, lock(1, 2, "b", None), 2).unwrap();
    n.read_index(7);
    assert_eq!(n.last_index(), last + 2, "read_index flushed");
    n.propose(6, lock(1, 3, "c", None), 3).unwrap();
    let mut stale = Message::default();
    stale.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeatResponse);
    // From a node outside the configuration: raft refuses it, but only after the flush.
    (stale.from, stale.to, stale.term) = (9, 1, n.term());
    assert!(matches!(n.step(stale), Err(NodeError::Raft(raft::Error::StepPeerNotFound))));
    assert_eq!(n.last_index(), last + 3, "step flushed");
    drain(&mut n);
    let before = n.stats();
    let long = "n".repeat(1000);
    let proposals = (MAX_BATCH_BYTES / 1000 + 20) as u32;
    for i in 0..proposals {
        n.propose(8, lock(2, i + 1, &long, None), u64::from(100 + i)).unwrap();
    }
    let events = drain(&mut n);
    let after = n.stats();
    assert_eq!(after.applied_commands - before.applied_commands, u64::from(proposals));
    assert_eq!(after.applied_entries - before.applied_entries, 2, "one full batch and the rest");
    let tags: Vec<Option<u64>> = events
        .iter()
        .filter_map(|e| if let Event::Applied { tag, .. } = e { Some(*tag) } else { None })
        .collect();
    assert_eq!(tags, (0..proposals).map(|i| Some(u64::from(100 + i))).collect::<Vec<_>>());
}

#[test]
fn a_follower_refuses_proposals_and_misaddressed_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = node(dir.path(), 2, vec![1, 2, 3]);
    assert_eq!(n.propose(0, attach(1), 1), Err(NotLeader { leader: None }));
    // A heartbeat from leader 1 in term 1 teaches it the leader: the hint names it.
    let mut hb = Message::default();
    hb.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    (hb.from, hb.to, hb.term) = (1, 2, 1);
    n.step(hb.clone()).expect("a heartbeat");
    assert_eq!(n.propose(0, attach(1), 1), Err(NotLeader { leader: Some(1) }));
    hb.to = 3;
    assert!(matches!(n.step(hb), Err(NodeError::Misaddressed { to: 3 })));
    let mut events = Vec::new();
    n.poll(&mut events).unwrap();
    assert!(events.iter().any(|e| matches!(e, Event::Send(m) if m.to == 1)), "{events:?}");
}

/// A wait's deadline becomes an `Expire` entry proposed by the leader itself, applied at a
/// `now` at or past the deadline; a follower would only apply it.
#[test]
fn the_leader_fires_due_timers_as_expire_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = leader(dir.path());
    n.tick(100);
    n.propose(100, lock(1, 1, "a", None), 1).unwrap();
    n.propose(100, lock(2, 1, "a", Some(50)), 2).unwrap();
    drain(&mut n);
    n.tick(120);
    assert!(drain(&mut n).is_empty(), "nothing is due yet");
    assert_eq!(n.stats().expires_proposed, 0);
    assert!(n.next_wakeup().is_some_and(|at| at <= 150));
    n.tick(160);
    let events = drain(&mut n);
    let [Event::Applied { tag: None, outputs, .. }] = &events[..] else { panic!("{events:?}") };
    assert!(matches!(
        outputs[..],
        [Output { session: SessionId(2), response: Response::TimedOut { .. }, .. }]
    ));
    assert!(n.applied_now() >= 150);
    assert_eq!(n.stats().expires_proposed, 1);
    n.tick(170);
    assert!(drain(&mut n).is_empty(), "no deadline left: no Expire");
}

#[test]
fn a_restarted_node_rebuilds_its_table_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (digest, applied) = {
        let mut n = leader(dir.path());
        n.propose(5, lock(1, 1, "a", None), 3).unwrap();
        n.propose(5, lock(2, 1, "a", Some(10_000)), 4).unwrap();
        drain(&mut n);
        (n.digest(), n.applied_index())
    };
    // The restarted node replays what its log says is committed. The last commit index was
    // not fsynced (it never is on its own), so it may be behind until a leader commits again:
    // here the node itself, with a new term's empty entry.
    let mut n = node(dir.path(), 1, vec![1]);
    drain(&mut n);
    assert!(n.applied_index() <= applied);
    assert!(!n.is_leader());
    n.campaign().unwrap();
    drain(&mut n);
    assert_eq!((n.digest(), n.applied_index()), (digest, applied + 1));
    assert_eq!(n.table().last_token(), 1);
}

/// A peer's proposal never reaches the log: not even the leader's, where raft would append it
/// (junk that does not decode would stop every node once committed).
#[test]
fn a_proposal_from_a_peer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = leader(dir.path());
    let last = n.last_index();
    let mut m = Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgPropose);
    (m.from, m.to) = (2, 1);
    let mut junk = raft::eraftpb::Entry::default();
    junk.data = vec![0xff, 0xff].into();
    m.set_entries(vec![junk].into());
    assert!(matches!(n.step(m), Err(NodeError::PeerProposal { from: 2 })));
    drain(&mut n);
    assert_eq!(n.last_index(), last);
}

/// A node over `dir`'s log with a tiny snapshot interval.
fn snapshotting(dir: &std::path::Path) -> Node {
    let store = DiskStorage::open(dir).expect("the log");
    let config = NodeConfig { tick_ms: 10, snapshot_min_bytes: 256, ..NodeConfig::new(1) };
    Node::new(&config, store).expect("a node")
}

/// With a small interval the node compacts its log to snapshots as it applies; a restart
/// starts from the last snapshot (not from index 1) and reaches the same table, which goes on
/// granting with the same tokens as the node that never restarted.
#[test]
fn a_node_compacts_to_snapshots_and_restarts_from_one() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    drop(leader(dir.path()));
    drop(leader(other.path()));
    let run = |n: &mut Node, from: u32, to: u32| {
        for i in from..to {
            n.propose(
                u64::from(i),
                lock(1 + u64::from(i % 2), i, &format!("n{}", i % 7), Some(50)),
                100 + u64::from(i),
            )
            .unwrap();
            if i % 3 == 0 {
                n.propose(u64::from(i), Command::Expire, 10_000 + u64::from(i)).unwrap();
            }
            drain(n);
        }
    };
    let (mut n, mut reference) = (snapshotting(dir.path()), snapshotting(other.path()));
    for node in [&mut n, &mut reference] {
        node.campaign().unwrap();
        drain(node);
        run(node, 0, 60);
    }
    let stats = n.stats();
    assert!(stats.snapshots_taken >= 3, "{stats:?}");
    assert!(n.first_index() > 2, "the log was compacted: first index {}", n.first_index());
    let (digest, applied) = (n.digest(), n.applied_index());
    drop(n);
    let mut n = snapshotting(dir.path());
    assert!(n.applied_index() > 1, "restored from a snapshot, not replayed from 1");
    assert!(n.stats().snapshot_bytes > 0);
    drain(&mut n);
    n.campaign().unwrap();
    drain(&mut n);
    assert_eq!(n.applied_index(), applied + 1, "the new term's empty entry");
    assert_eq!(n.digest(), digest);
    // The restored table and the reference go on alike (the reference took its own new term).
    reference.campaign().unwrap();
    drain(&mut reference);
    run(&mut n, 60, 90);
    run(&mut reference, 60, 90);
    assert_eq!(n.table().state_lines(), reference.table().state_lines());
}

/// A snapshot whose data does not restore stops the node at start with the index named.
#[test]
fn a_snapshot_that_does_not_restore_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = leader(dir.path());
    n.propose(5, lock(1, 1, "a", None), 3).unwrap();
    drain(&mut n);
    drop(n);
    let mut store = DiskStorage::open(dir.path()).unwrap();
    let index = store.hard_state().commit;
    store.compact(index, b"OFSN\x01junk".to_vec()).unwrap();
    drop(store);
    let store = DiskStorage::open(dir.path()).unwrap();
    match Node::new(&NodeConfig::new(1), store) {
        Err(NodeError::Snapshot { index: at, .. }) => assert_eq!(at, index),
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a node over a snapshot that does not restore"),
    }
}
