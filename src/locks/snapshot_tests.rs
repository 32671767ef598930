//! Tests of the snapshot codec (`snapshot.rs`): a restored table behaves as the one encoded
//! under any later commands (the proptest is the main proof), decoding is total, and a big
//! table round-trips (its sizes and times are printed, not asserted).

use std::time::Instant;

use proptest::prelude::*;

use super::*;

const NAMES: [&str; 3] = ["a", "b", "sem"];
const SEM_LIMIT: u32 = 3;
const SESSIONS: u64 = 4;

fn secret(session: u64) -> [u8; 16] {
    [session as u8; 16]
}

/// A command over few names and sessions, with small colliding timeouts, leases, lock-delays
/// and graces, so timers share deadlines and batches are cut.
fn command() -> impl Strategy<Value = Command> {
    let session = (1..=SESSIONS).prop_map(SessionId);
    let name = (0..NAMES.len()).prop_map(|i| Name::new(NAMES[i]));
    let token = prop_oneof![2 => Just(None), 3 => (1..30u64).prop_map(Some)];
    let small = |n: u32| prop_oneof![2 => Just(None), 3 => (1..n).prop_map(Some)];
    let opts = (
        0..5u32,
        1..=SEM_LIMIT,
        small(12),
        small(20),
        prop_oneof![2 => Just(0u32), 1 => 1..10u32],
        any::<bool>(),
        any::<bool>(),
    );
    let lock = (
        session.clone(),
        0..(NAMES.len()),
        0..100u32,
        prop_oneof![2 => Just(None), 1 => Just(Some(0)), 3 => (1..12u32).prop_map(Some)],
        prop_oneof![3 => Just(None), 1 => (1..4u32).prop_map(Some)],
        opts,
    )
        .prop_map(
            |(
                session,
                n,
                request_id,
                timeout_ms,
                queue_max,
                (m, count, lease_ms, max_hold_ms, lock_delay_ms, notify, skip),
            )| {
                let mode = match (n, m) {
                    (2, _) => Mode::Permits { count, limit: SEM_LIMIT },
                    (_, 0 | 1) => Mode::Shared,
                    (_, 2) => Mode::Permits { count, limit: SEM_LIMIT }, // a kind mismatch now and then
                    _ => Mode::Exclusive,
                };
                let opts = LockOpts {
                    mode,
                    lease_ms,
                    max_hold_ms,
                    lock_delay_ms,
                    notify_contention: notify,
                    skip_while_detached: skip,
                };
                Command::Lock { session, request_id, name: Name::new(NAMES[n]), timeout_ms, queue_max, opts }
            },
        );
    prop_oneof![
        8 => lock,
        4 => (session.clone(), 0..100u32, name.clone(), token.clone())
            .prop_map(|(session, request_id, name, token)| Command::Unlock { session, request_id, name, token }),
        1 => (session.clone(), 0..100u32, name.clone(), 1..30u64)
            .prop_map(|(session, request_id, name, token)| Command::Downgrade { session, request_id, name, token }),
        2 => (session.clone(), 0..100u32, name.clone(), 1..30u64)
            .prop_map(|(session, request_id, name, token)| Command::Renew { session, request_id, name, token }),
        2 => (session.clone(), 0..100u32, name.clone(), token)
            .prop_map(|(session, request_id, name, token)| Command::Revoke { session, request_id, name, token }),
        1 => (session.clone(), 0..100u32, name, 1..30u64)
            .prop_map(|(session, request_id, name, token)| Command::Check { session, request_id, name, token }),
        1 => (session.clone(), 0..100u32).prop_map(|(session, request_id)| Command::Reset { session, request_id }),
        1 => session.clone().prop_map(|session| Command::Detach { session }),
        2 => (session.clone(), 0..8u32).prop_map(|(session, n)| Command::Attach { session, label: format!("c{}:{n}", session.0) }),
        2 => (session.clone(), prop_oneof![1 => Just(0u32), 4 => 1..25u32], any::<bool>())
            .prop_map(|(session, grace_ms, skip)| Command::OpenSession { session, request_id: 7, grace_ms, secret: secret(session.0), skip_while_detached: skip }),
        2 => session.clone().prop_map(|session| Command::Suspend { session }),
        2 => (session.clone(), session, any::<bool>()).prop_map(|(session, from, right)| {
            let secret = if right { secret(session.0) } else { [0xee; 16] };
            Command::Resume { session, request_id: 8, from, secret }
        }),
        4 => Just(Command::Expire),
    ]
}

/// A command and the ticks `now` moves on by before it: often 0, so deadlines collide. Never
/// backwards: cluster replicas apply at a monotone `now` (docs/CLUSTER.md), and the table
/// itself needs it (a lock-delay timer that fires while the delay ends after `now` is dropped,
/// and the delay then never ends).
fn step() -> impl Strategy<Value = (i64, Command)> {
    (prop_oneof![6 => Just(0i64), 4 => 1..3i64, 2 => 3..15i64], command())
}

/// `now` moved by `dt`, never below 0.
fn moved(now: u64, dt: i64) -> u64 {
    now.saturating_add_signed(dt)
}

/// Batch sizes: `(expire, release, grant, revoke)`, mostly tiny.
fn batches() -> impl Strategy<Value = (usize, usize, usize, usize)> {
    let batch = || prop_oneof![3 => 1..4usize, 1 => Just(1000usize)];
    (batch(), batch(), batch(), batch())
}

fn configure(t: &mut LockTable, (expire, release, grant, revoke): (usize, usize, usize, usize)) {
    t.set_batches(expire, release);
    t.set_grant_batch(grant);
    t.set_revoke_batch(revoke);
}

fn snapshot(t: &LockTable) -> Vec<u8> {
    let mut bytes = Vec::new();
    t.encode_snapshot(&mut bytes);
    bytes
}

/// The error decoding `bytes` gives; a table is a test failure.
fn refusal(bytes: &[u8]) -> SnapshotError {
    match LockTable::decode_snapshot(bytes, limits()) {
        Ok(_) => panic!("{} bytes decoded", bytes.len()),
        Err(e) => e,
    }
}

fn limits() -> TableLimits {
    TableLimits { max_lock_delay_ms: 100, ..TableLimits::default() }
}

/// A table that ran `steps` from tick 0; returns it and the tick it reached.
fn run(steps: &[(i64, Command)], batches: (usize, usize, usize, usize)) -> (LockTable, u64) {
    let mut t = LockTable::new(1, limits());
    configure(&mut t, batches);
    for s in 1..=SESSIONS {
        t.apply(0, &Command::Attach { session: SessionId(s), label: format!("c{s}") }, &mut Vec::new());
    }
    let (mut now, mut out) = (0, Vec::new());
    for (dt, cmd) in steps {
        now = moved(now, *dt);
        t.apply(now, cmd, &mut out);
    }
    (t, now)
}

/// What the read-only views (listings, TOP, details, census) show: they read the store in
/// key order, which a restored table does not share, and must not depend on it.
fn views(t: &LockTable, now: u64) -> Vec<String> {
    let big = 1 << 20;
    let mut views = vec![
        format!("{:?}", t.locks_within("", 0, big)),
        format!("{:?}", t.connections_within("", 0, big)),
        format!("{:?}", t.top_within(now, 0, big)),
        format!("{:?}", t.sessions_within(now, 0, big)),
        format!("{:?}", t.mode_census()),
        format!("{:?}", t.longest_holds(10)),
        format!("{:?}", t.deepest_queues(10)),
        format!("{:?}", t.locks_detail_within(now, NAMES, big)),
        format!("{:?}", t.attached_sessions()),
        format!("{:?}", t.soonest_grace_left(now)),
    ];
    for s in 1..=SESSIONS {
        views.push(format!("{:?}", t.my_locks(SessionId(s))));
        views.push(format!("{} {}", t.is_releasing(SessionId(s)), t.is_resumable(SessionId(s))));
    }
    views.push(format!("{}", t.has_pending_releases()));
    views
}

/// Round-trips `a` and requires the restored table to encode to the same bytes.
fn restore(a: &LockTable, batches: (usize, usize, usize, usize)) -> LockTable {
    let bytes = snapshot(a);
    let mut b = match LockTable::decode_snapshot(&bytes, limits()) {
        Ok(b) => b,
        Err(e) => panic!("{e}; state {:#?}", a.state_lines()),
    };
    configure(&mut b, batches);
    assert_eq!(snapshot(&b), bytes, "the restored table encodes to the same bytes");
    assert_eq!(b.state_lines(), a.state_lines());
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The main proof: a table restored from a snapshot and the table it was taken of, given
    /// the same later commands, answer identically at every step and end in the same state.
    /// B is restored at many points of one run, from A (whose freed slab slots are reused) or
    /// from itself (a chain of restores), so snapshots are taken mid-batch, mid-grace, with
    /// overdue timers left by a cut `Expire`, and so on.
    #[test]
    fn a_restored_table_behaves_as_the_original(
        batches in batches(),
        steps in prop::collection::vec((step(), prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)]), 1..150),
    ) {
        let (mut a, mut now) = run(&[], batches);
        let mut b = restore(&a, batches);
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        for (i, ((dt, cmd), restart)) in steps.iter().enumerate() {
            now = moved(now, *dt);
            a.apply(now, cmd, &mut out_a);
            b.apply(now, cmd, &mut out_b);
            prop_assert_eq!(&out_a, &out_b, "step {} {:?} at {}", i, cmd, now);
            prop_assert_eq!(a.next_deadline(), b.next_deadline(), "step {}", i);
            out_a.clear();
            out_b.clear();
            // Batched work pending is rare and where a snapshot is most likely wrong: always
            // restore there.
            let pending = !a.revoking.is_empty() || !a.granting.is_empty() || !a.releasing.is_empty();
            match restart {
                _ if pending => b = restore(&a, batches),
                1 => b = restore(&a, batches),
                2 => b = restore(&b, batches),
                _ => {}
            }
        }
        prop_assert_eq!(a.state_lines(), b.state_lines());
        prop_assert_eq!(a.digest(), b.digest());
        prop_assert_eq!(views(&a, now), views(&b, now));
        // (Their snapshots may differ in lock order: A reuses freed slab slots for new locks,
        // B, whose keys are compacted, appends them; see the module doc of `snapshot`.)
        b.check_invariants().map_err(TestCaseError::fail)?;
    }

    /// Flipped (dropped, inserted) bytes of a real snapshot never panic: a table or an error. A table decoded from
    /// them passes its self-check and then runs commands, ends every session and drains its
    /// timers without a panic (the gauges and links it was rebuilt with hold up).
    #[test]
    fn flipped_bytes_never_panic(
        prefix in prop::collection::vec(step(), 0..40),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4),
        suffix in prop::collection::vec(step(), 0..20),
    ) {
        let (a, now) = run(&prefix, (2, 2, 2, 2));
        let mut bytes = snapshot(&a);
        for (at, mask) in flips {
            let i = at.index(bytes.len());
            // Mostly a flip; now and then a byte dropped or one put in, which shifts the rest.
            match mask {
                1 => {
                    bytes.remove(i);
                }
                2 => bytes.insert(i, 0x81),
                _ => bytes[i] ^= mask,
            }
            if bytes.is_empty() {
                break;
            }
        }
        if let Ok(mut t) = LockTable::decode_snapshot(&bytes, limits()) {
            t.check_invariants().map_err(TestCaseError::fail)?;
            drain(&mut t, now, &suffix);
            t.check_invariants().map_err(TestCaseError::fail)?;
        }
    }

    /// Random bytes never panic either (almost all are errors).
    #[test]
    fn random_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = LockTable::decode_snapshot(&bytes, limits());
        if !bytes.is_empty() {
            bytes[0] = 1; // the version byte right: the rest is read
        }
        let _ = LockTable::decode_snapshot(&bytes, limits());
    }
}

/// Runs `steps` on `t` from `now` (or the wheel's time if later), then ends every session and expires until nothing is
/// pending (bounded: every step makes progress).
fn drain(t: &mut LockTable, now: u64, steps: &[(i64, Command)]) {
    // Time never goes back behind what the table has seen (its wheel's time, maybe flipped).
    let mut now = now.max(t.timers.elapsed());
    let mut out = Vec::new();
    for (dt, cmd) in steps {
        now = moved(now, *dt);
        t.apply(now, cmd, &mut out);
    }
    let mut sessions: Vec<SessionId> = t.sessions.keys().copied().collect();
    sessions.sort_unstable();
    for session in sessions {
        t.apply(now, &Command::Detach { session }, &mut out);
    }
    for _ in 0..10_000 {
        if t.next_deadline().is_none() && !t.has_pending_releases() {
            break;
        }
        now = t.next_deadline().map_or(now, |at| at.max(now));
        t.apply(now, &Command::Expire, &mut out);
    }
}

/// A busy table with holders, waiters, leases, delays, a detached session with kept outputs
/// and pending batched work.
fn busy_table() -> LockTable {
    let mut t = LockTable::new(1, limits());
    t.set_batches(1, 1);
    t.set_grant_batch(1);
    let mut out = Vec::new();
    let opts = |lease_ms, lock_delay_ms| LockOpts { lease_ms, lock_delay_ms, ..LockOpts::default() };
    let lock = |session, request_id, name: &str, timeout_ms, opts| Command::Lock {
        session: SessionId(session),
        request_id,
        name: Name::new(name),
        timeout_ms,
        queue_max: None,
        opts,
    };
    for s in 1..=4 {
        t.apply(0, &Command::Attach { session: SessionId(s), label: format!("c{s}") }, &mut out);
    }
    t.apply(
        0,
        &Command::OpenSession {
            session: SessionId(4),
            request_id: 1,
            grace_ms: 50,
            secret: secret(4),
            skip_while_detached: false,
        },
        &mut out,
    );
    t.apply(1, &lock(1, 1, "a", None, opts(Some(10), 5)), &mut out);
    t.apply(1, &lock(2, 1, "a", Some(10), LockOpts::default()), &mut out);
    t.apply(1, &lock(4, 1, "a", Some(10), LockOpts::default()), &mut out);
    t.apply(2, &lock(1, 2, "b", None, LockOpts { mode: Mode::Shared, ..LockOpts::default() }), &mut out);
    t.apply(2, &lock(3, 2, "b", None, LockOpts::default()), &mut out);
    t.apply(2, &lock(4, 2, "b", Some(3), LockOpts::default()), &mut out);
    t.apply(3, &Command::Suspend { session: SessionId(4) }, &mut out);
    t.apply(6, &Command::Expire, &mut out);
    t.apply(6, &Command::Reset { session: SessionId(1), request_id: 9 }, &mut out);
    t.check_invariants().unwrap();
    t
}

#[test]
fn a_busy_table_round_trips_and_runs_on_the_same() {
    let a = busy_table();
    let b = restore(&a, (1, 1, 1, REVOKE_BATCH));
    assert!(b.state_lines().iter().any(|l| l.contains("(detached)")), "{:#?}", b.state_lines());
    let (mut a, mut b) = (a, b);
    let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
    for now in 6..80 {
        a.apply(now, &Command::Expire, &mut out_a);
        b.apply(now, &Command::Expire, &mut out_b);
        assert_eq!(out_a, out_b, "at {now}");
    }
    let resume =
        Command::Resume { session: SessionId(4), request_id: 5, from: SessionId(3), secret: secret(4) };
    a.apply(80, &resume, &mut out_a);
    b.apply(80, &resume, &mut out_b);
    assert_eq!(out_a, out_b);
    assert_eq!(a.state_lines(), b.state_lines());
}

#[test]
fn every_prefix_and_any_trailing_byte_is_refused() {
    let bytes = snapshot(&busy_table());
    for len in 0..bytes.len() {
        assert!(LockTable::decode_snapshot(&bytes[..len], limits()).is_err(), "prefix of {len} bytes");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    let err = refusal(&longer);
    assert!(err.what.contains("trailing"), "{err}");
    let mut other = bytes;
    other[0] = 2;
    assert!(refusal(&other).what.contains("version"));
}

#[test]
fn a_huge_count_claims_no_memory() {
    // An empty table ends in zero counts of locks, extras and sessions, no next deadline, and
    // zero counts of timers, releases, revokes and cut runs. Each count in turn claims 2^62
    // items, then 127 (more than the bytes left could hold).
    let bytes = snapshot(&LockTable::new(1, limits()));
    assert!(bytes.ends_with(&[0; 8]));
    for field in [0, 1, 2, 4, 5, 6, 7] {
        for claim in [&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40][..], &[0x7f]] {
            let mut huge = bytes.clone();
            let at = bytes.len() - 8 + field;
            huge.splice(at..=at, claim.iter().copied());
            let err = refusal(&huge);
            assert!(err.what.contains("count"), "field {field}: {err}");
        }
    }
    // A varint longer than 64 bits is an error, not a wrap.
    let mut long = bytes.clone();
    long.splice(1..2, [0xff; 11]);
    assert!(refusal(&long).what.contains("varint"));
}

/// A big table: 100,000 locks with holders, waiters with timers and leases, round-trips.
/// Prints encode and decode times and bytes per lock; asserts only equality.
#[test]
fn a_table_of_100_000_locks_round_trips() {
    const LOCKS: u32 = 100_000;
    let mut t = LockTable::new(1, TableLimits::default());
    let mut out = Vec::new();
    for s in 1..=3 {
        t.apply(0, &Command::Attach { session: SessionId(s), label: format!("10.0.0.{s}:4000") }, &mut out);
    }
    for i in 0..LOCKS {
        let name = Name::new(&format!("job:{i:08}"));
        let lease = LockOpts { lease_ms: (i % 4 == 0).then_some(30_000 + i % 100), ..LockOpts::default() };
        let lock = |session, timeout_ms, opts| Command::Lock {
            session: SessionId(session),
            request_id: i,
            name: name.clone(),
            timeout_ms,
            queue_max: None,
            opts,
        };
        t.apply(1, &lock(1, None, lease), &mut out);
        if i % 2 == 0 {
            t.apply(2, &lock(2, Some(10_000 + i % 50), LockOpts::default()), &mut out);
        }
        if i % 10 == 0 {
            t.apply(3, &lock(3, None, LockOpts::default()), &mut out);
        }
    }
    out.clear();
    let start = Instant::now();
    let bytes = snapshot(&t);
    let encoded = start.elapsed();
    let start = Instant::now();
    let mut b = LockTable::decode_snapshot(&bytes, TableLimits::default()).expect("decodes");
    let decoded = start.elapsed();
    println!(
        "snapshot of {LOCKS} locks ({} waiters, {} timers): {} bytes, {:.1} bytes/lock, encode {encoded:?}, decode {decoded:?}",
        t.stats().waiters,
        t.timers.len(),
        bytes.len(),
        bytes.len() as f64 / f64::from(LOCKS)
    );
    assert_eq!(snapshot(&b), bytes);
    assert_eq!(b.state_lines(), t.state_lines());
    // The same timers fire in the same order.
    let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
    for now in [10_010, 10_030, 30_050, 40_000] {
        t.apply(now, &Command::Expire, &mut out_a);
        b.apply(now, &Command::Expire, &mut out_b);
        assert_eq!(out_a, out_b, "at {now}");
        assert!(!out_a.is_empty() || now == 40_000);
        out_a.clear();
        out_b.clear();
    }
}

/// The one key-order dependence found: `granting` holds slab keys, and its entry for a lock
/// whose run was cut used to outlive the lock (every waiter and holder left before the grant
/// step). A restored table wrote it as a vacant slot while the original kept the key, and a new
/// lock reusing the slot was served by the old entry one grant step earlier than in the
/// restored table. Removing a lock now removes its keys from `granting`: both tables agree.
#[test]
fn a_stale_granting_key_and_a_reused_slot() {
    let mut a = LockTable::new(1, limits());
    a.set_grant_batch(1);
    let mut out = Vec::new();
    let shared = LockOpts { mode: Mode::Shared, ..LockOpts::default() };
    let lock = |session, name: &str, opts| Command::Lock {
        session: SessionId(session),
        request_id: 1,
        name: Name::new(name),
        timeout_ms: None,
        queue_max: None,
        opts,
    };
    let unlock = |session, name: &str| Command::Unlock {
        session: SessionId(session),
        request_id: 2,
        name: Name::new(name),
        token: None,
    };
    for s in 1..=3 {
        a.apply(0, &Command::Attach { session: SessionId(s), label: format!("c{s}") }, &mut out);
    }
    // "x" is cut: s2 is granted, s3 waits for the grant step; then everyone leaves "x".
    a.apply(1, &lock(1, "x", LockOpts::default()), &mut out);
    a.apply(1, &lock(2, "x", shared), &mut out);
    a.apply(1, &lock(3, "x", shared), &mut out);
    a.apply(2, &unlock(1, "x"), &mut out);
    a.apply(2, &unlock(2, "x"), &mut out);
    a.apply(2, &unlock(3, "x"), &mut out);
    assert_eq!((a.store.len(), a.granting.len()), (0, 0), "no stale key in granting");
    let mut b = restore(&a, (EXPIRE_BATCH, RELEASE_BATCH, 1, REVOKE_BATCH));
    // "y" takes the slot in A; its own run is cut too.
    let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
    for cmd in [lock(1, "y", LockOpts::default()), lock(2, "y", shared), lock(3, "y", shared), unlock(1, "y")]
    {
        a.apply(3, &cmd, &mut out_a);
        b.apply(3, &cmd, &mut out_b);
        assert_eq!(out_a, out_b);
    }
    a.apply(4, &Command::Expire, &mut out_a);
    b.apply(4, &Command::Expire, &mut out_b);
    assert_eq!(out_a, out_b, "the grant step serves the same waiters");
}

/// `set_batches` on a restored table keeps the inline release budget the original had spent
/// this turn (it once refilled it, so a configured replica released more holds in that turn
/// than the table it was restored from).
#[test]
fn configuring_a_restored_table_keeps_its_spent_inline_budget() {
    let mut a = LockTable::new(1, limits());
    a.set_batches(EXPIRE_BATCH, 3);
    let mut out = Vec::new();
    let lock = |session, name: String| Command::Lock {
        session: SessionId(session),
        request_id: 1,
        name: Name::new(&name),
        timeout_ms: None,
        queue_max: None,
        opts: LockOpts::default(),
    };
    for s in 1..=2 {
        a.apply(0, &Command::Attach { session: SessionId(s), label: format!("c{s}") }, &mut out);
        for i in 0..2 {
            a.apply(0, &lock(s, format!("s{s}-{i}")), &mut out);
        }
    }
    // Session 1's two holds spend two of the turn's three inline releases.
    a.apply(1, &Command::Detach { session: SessionId(1) }, &mut out);
    assert_eq!(a.inline_budget, 1);
    let mut b = LockTable::decode_snapshot(&snapshot(&a), limits()).expect("decode");
    b.set_batches(EXPIRE_BATCH, 3);
    assert_eq!(b.inline_budget, 1, "the restored budget is kept");
    // So session 2's detach in the same turn releases one hold inline on both.
    let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
    a.apply(1, &Command::Detach { session: SessionId(2) }, &mut out_a);
    b.apply(1, &Command::Detach { session: SessionId(2) }, &mut out_b);
    assert_eq!(out_a, out_b);
    assert_eq!(b.stats().locks_held, 1);
    assert_eq!(b.state_lines(), a.state_lines());
}
