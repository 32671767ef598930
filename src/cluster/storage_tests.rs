use raft::StorageError as SE;

use super::*;

fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry { index, term, data: data.to_vec().into(), ..Default::default() }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| entry(i, term, format!("cmd {i} of term {term}").as_bytes())).collect()
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote, commit, ..Default::default() }
}

fn voters(ids: &[u64]) -> ConfState {
    ConfState { voters: ids.to_vec(), ..Default::default() }
}

fn all(s: &DiskStorage) -> Vec<Entry> {
    let (first, last) = (s.first_index().unwrap(), s.last_index().unwrap());
    s.entries(first, last + 1, None, GetEntriesContext::empty(false)).unwrap()
}

fn file_len(s: &DiskStorage) -> u64 {
    fs::metadata(s.path()).unwrap().len()
}

fn store_err(r: raft::Result<impl fmt::Debug>) -> SE {
    match r {
        Err(raft::Error::Store(e)) => e,
        other => panic!("expected a storage error, got {other:?}"),
    }
}

#[test]
fn a_new_log_is_empty_and_uninitialized() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open(dir.path().join("node1")).unwrap();
    assert!(s.open_report().created);
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 0));
    assert_eq!(s.term(0).unwrap(), 0);
    assert_eq!(store_err(s.term(1)), SE::Unavailable);
    assert!(!s.initial_state().unwrap().initialized());
    assert_eq!(store_err(s.snapshot(0, 2)), SE::SnapshotTemporarilyUnavailable);
    assert_eq!(file_len(&s), FILE_HEADER as u64);
}

#[test]
fn reopen_after_appends_overwrites_and_states() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path()).unwrap();
    s.initialize(&voters(&[1, 2, 3])).unwrap();
    assert!(s.initialize(&voters(&[1])).is_err(), "a second initialize is refused");
    s.persist(&entries(1..=5, 1), Some(&hs(1, 2, 3))).unwrap();
    // A new leader's entries replace the conflicting suffix, as raft's append does.
    s.persist(&entries(4..=6, 2), Some(&hs(2, 3, 4))).unwrap();
    s.set_commit(5).unwrap();
    s.sync().unwrap();
    let expect: Vec<Entry> = entries(1..=3, 1).into_iter().chain(entries(4..=6, 2)).collect();
    assert_eq!(all(&s), expect);
    drop(s);

    let s = DiskStorage::open(dir.path()).unwrap();
    let report = s.open_report();
    assert_eq!((report.created, report.torn_bytes), (false, 0));
    assert_eq!(report.records, 1 + 5 + 1 + 3 + 1 + 1);
    assert_eq!(all(&s), expect);
    let state = s.initial_state().unwrap();
    assert_eq!(state.hard_state, hs(2, 3, 5));
    assert_eq!(state.conf_state, voters(&[1, 2, 3]));
    assert_eq!((s.term(3).unwrap(), s.term(4).unwrap(), s.term(6).unwrap()), (1, 2, 2));
}

#[test]
fn nothing_is_on_disk_before_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path()).unwrap();
    s.append(&entries(1..=3, 1)).unwrap();
    s.set_hard_state(&hs(1, 1, 0)).unwrap();
    // Buffered: visible to raft's queries, not yet written.
    assert_eq!(s.last_index().unwrap(), 3);
    assert_eq!(file_len(&s), FILE_HEADER as u64);
    s.sync().unwrap();
    let synced = file_len(&s);
    assert!(synced > FILE_HEADER as u64);
    // A sync with nothing buffered writes nothing.
    s.sync().unwrap();
    assert_eq!(file_len(&s), synced);
}

/// A crash mid-append leaves any prefix of the last write: every cut point inside it reopens
/// to the whole records before it, the file is cut there, and the log goes on from there.
#[test]
fn a_torn_tail_is_cut_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path()).unwrap();
    s.persist(&entries(1..=3, 1), Some(&hs(1, 1, 2))).unwrap();
    let acked = file_len(&s);
    s.persist(&entries(4..=6, 1), Some(&hs(1, 1, 5))).unwrap();
    let full = fs::read(s.path()).unwrap();
    drop(s);
    let mut cuts_seen = 0;
    for cut in acked as usize..full.len() {
        fs::write(dir.path().join(LOG_FILE), &full[..cut]).unwrap();
        let mut s = DiskStorage::open(dir.path()).unwrap();
        let last = s.last_index().unwrap();
        assert!((3..=6).contains(&last), "cut {cut}: last {last}");
        assert_eq!(all(&s), entries(1..=last, 1), "cut {cut}");
        let torn = s.open_report().torn_bytes;
        assert_eq!(file_len(&s) + torn, cut as u64, "cut {cut}: the file is cut to its whole records");
        cuts_seen += usize::from(torn > 0);
        // The next append lands after the whole records and survives a reopen.
        s.persist(&[entry(last + 1, 2, b"after the crash")], None).unwrap();
        drop(s);
        let s = DiskStorage::open(dir.path()).unwrap();
        assert_eq!(s.open_report().torn_bytes, 0);
        assert_eq!(s.last_index().unwrap(), last + 1);
        assert_eq!(s.term(last + 1).unwrap(), 2);
    }
    assert!(cuts_seen > 100, "most cut points fall inside a record: {cuts_seen}");
}

/// A tail of zeros (the file grew but the data never reached the disk) is torn too.
#[test]
fn a_zero_filled_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path()).unwrap();
    s.persist(&entries(1..=2, 1), None).unwrap();
    let len = file_len(&s);
    drop(s);
    let mut bytes = fs::read(dir.path().join(LOG_FILE)).unwrap();
    bytes.extend([0u8; 4096]);
    fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.open_report().torn_bytes, 4096);
    assert_eq!((file_len(&s), s.last_index().unwrap()), (len, 2));
}

/// A changed byte anywhere before the last record is corruption, never silently cut: the
/// node refuses to open (and so never votes on) that log.
#[test]
fn a_flipped_byte_before_the_last_record_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path()).unwrap();
    s.initialize(&voters(&[1, 2, 3])).unwrap();
    s.persist(&entries(1..=4, 1), Some(&hs(1, 1, 3))).unwrap();
    let before_last = file_len(&s) as usize;
    s.persist(&[entry(5, 1, b"last")], None).unwrap();
    let good = fs::read(s.path()).unwrap();
    drop(s);
    for at in 0..before_last {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        fs::write(dir.path().join(LOG_FILE), &bad).unwrap();
        match DiskStorage::open(dir.path()) {
            Err(StoreError::BadMagic { .. }) => assert!(at < MAGIC.len(), "byte {at}"),
            Err(StoreError::Version { found, .. }) => {
                assert_eq!((at, found), (MAGIC.len(), LOG_VERSION ^ 0x10))
            }
            Err(StoreError::Corrupt { offset, reason, .. }) => {
                assert!(offset as usize <= at && at >= FILE_HEADER, "byte {at} reported at {offset}");
                assert!(reason.contains("checksum"), "{reason}");
            }
            Err(e) => panic!("byte {at}: {e}"),
            Ok(_) => panic!("byte {at} flipped and the log opened"),
        }
    }
    // The file itself was left as it was found, for a human to look at.
    assert_eq!(fs::read(dir.path().join(LOG_FILE)).unwrap().len(), good.len());
    let e = StoreError::Corrupt { path: "d/raft.log".into(), offset: 8, reason: "x".into() };
    assert_eq!(e.to_string(), "raft log d/raft.log is corrupt at byte 8: x; the node will not start on it");
}

#[test]
fn wrong_magic_version_and_short_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    for (bytes, want) in [
        (&b""[..], "magic"),
        (&b"OFFRL"[..], "magic"),
        (&b"SQLITE3\x01"[..], "magic"),
        (&b"OFFRLOG\x02"[..], "version"),
        (&b"OFFRLOG\x00"[..], "version"),
    ] {
        fs::write(&path, bytes).unwrap();
        let err = DiskStorage::open(dir.path()).err().expect("refused");
        match (&err, want) {
            (StoreError::BadMagic { .. }, "magic") | (StoreError::Version { .. }, "version") => {}
            _ => panic!("{bytes:?}: {err}"),
        }
    }
}

/// A record whose checksums hold but whose fields do not parse, or that breaks the log's
/// order (a gap), is corruption too: written by a bug or another version, not by a crash.
#[test]
fn well_checksummed_nonsense_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    type Body = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: [(&str, Body); 4] = [
        ("unknown record kind 9", Box::new(|b| b.push(9))),
        ("record ends inside its entry term", Box::new(|b| b.extend([KIND_ENTRY, 1, 0, 0, 0, 0, 0, 0, 0]))),
        (
            "gap",
            Box::new(|b| {
                b.push(KIND_ENTRY);
                put_entry(b, &entry(7, 1, b""));
            }),
        ),
        ("bytes after", Box::new(|b| b.extend([KIND_HARD_STATE; 26]))),
    ];
    for (want, body) in cases {
        let mut bytes = file_header();
        put_record(&mut bytes, body).unwrap();
        put_record(&mut bytes, |b| b.push(KIND_HARD_STATE)).unwrap();
        fs::write(&path, &bytes).unwrap();
        match DiskStorage::open(dir.path()) {
            Err(StoreError::Corrupt { offset, reason, .. }) => {
                assert_eq!(offset, FILE_HEADER as u64);
                assert!(reason.contains(want), "{reason} should say {want}");
            }
            Err(e) => panic!("{want}: {e}"),
            Ok(_) => panic!("{want}: opened"),
        }
    }
}

#[test]
fn compaction_keeps_the_tail_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path()).unwrap();
    s.initialize(&voters(&[1, 2, 3])).unwrap();
    s.persist(&entries(1..=4, 1), None).unwrap();
    s.persist(&entries(5..=10, 2), Some(&hs(2, 1, 8))).unwrap();
    let before = file_len(&s);
    assert!(matches!(s.compact(9, vec![]), Err(StoreError::Refused(_))), "beyond the commit index");
    s.compact(6, b"table at 6".to_vec()).unwrap();
    assert!(file_len(&s) < before);
    for s in [s, DiskStorage::open(dir.path()).unwrap()] {
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (7, 10));
        assert_eq!(s.term(6).unwrap(), 2, "the snapshot's term stays for matching");
        assert_eq!(store_err(s.term(5)), SE::Compacted);
        assert_eq!(store_err(s.entries(6, 8, None, GetEntriesContext::empty(false))), SE::Compacted);
        assert_eq!(all(&s), entries(7..=10, 2));
        let snap = s.snapshot(6, 2).unwrap();
        assert_eq!((snap.get_metadata().index, snap.get_metadata().term), (6, 2));
        assert_eq!(snap.get_metadata().get_conf_state(), &voters(&[1, 2, 3]));
        assert_eq!(&snap.data[..], b"table at 6");
        assert_eq!(store_err(s.snapshot(7, 2)), SE::SnapshotTemporarilyUnavailable);
        assert_eq!(s.initial_state().unwrap().hard_state, hs(2, 1, 8));
    }
    let mut s = DiskStorage::open(dir.path()).unwrap();
    s.compact(3, vec![]).unwrap(); // at or below the snapshot: nothing to do
    assert_eq!(s.first_index().unwrap(), 7);
    // Entries at or below the snapshot are refused; the log goes on after its end.
    assert!(matches!(s.append(&entries(6..=7, 3)), Err(StoreError::Refused(_))));
    s.persist(&entries(11..=12, 3), Some(&hs(3, 2, 12))).unwrap();
    s.compact(12, b"all".to_vec()).unwrap();
    drop(s);
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap(), s.term(12).unwrap()), (13, 12, 3));
    assert_eq!(s.snapshot_data(), b"all");
}

#[test]
fn an_installed_snapshot_replaces_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path()).unwrap();
    s.persist(&entries(1..=3, 1), Some(&hs(1, 0, 2))).unwrap();
    let mut snap = Snapshot { data: b"leader's table".to_vec().into(), ..Default::default() };
    snap.mut_metadata().index = 20;
    snap.mut_metadata().term = 4;
    snap.mut_metadata().set_conf_state(voters(&[1, 2, 3, 4]));
    s.apply_snapshot(&snap).unwrap();
    drop(s);
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap(), s.term(20).unwrap()), (21, 20, 4));
    let state = s.initial_state().unwrap();
    assert_eq!((state.hard_state.term, state.hard_state.commit), (4, 20));
    assert_eq!(state.conf_state, voters(&[1, 2, 3, 4]));
    assert_eq!(s.snapshot(0, 1).unwrap(), snap);
}

/// raft-rs's `Storage` contract at the edges: `entries` bounds, size limit, `term` range.
#[test]
fn the_storage_contract() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path()).unwrap();
    s.persist(&entries(1..=5, 1), Some(&hs(1, 1, 5))).unwrap();
    s.compact(2, vec![]).unwrap();
    let ctx = || GetEntriesContext::empty(false);
    assert_eq!(store_err(s.entries(2, 4, None, ctx())), SE::Compacted);
    assert_eq!(s.entries(3, 6, None, ctx()).unwrap(), entries(3..=5, 1));
    assert_eq!(s.entries(4, 4, None, ctx()).unwrap(), vec![]);
    assert_eq!(store_err(s.entries(3, 7, None, ctx())), SE::Unavailable, "high beyond last + 1");
    assert_eq!(store_err(s.entries(5, 4, None, ctx())), SE::Unavailable, "low above high");
    // A size limit cuts the batch but never below one entry.
    assert_eq!(s.entries(3, 6, 0, ctx()).unwrap(), entries(3..=3, 1));
    assert_eq!(s.entries(3, 6, u64::MAX, ctx()).unwrap().len(), 3);
    assert_eq!(store_err(s.term(1)), SE::Compacted);
    assert_eq!(s.term(2).unwrap(), 1);
    assert_eq!(store_err(s.term(6)), SE::Unavailable);
    // Appends that would leave a gap or are not contiguous are refused, and change nothing.
    assert!(matches!(s.append(&entries(7..=7, 1)), Err(StoreError::Refused(_))));
    assert!(matches!(s.append(&[entry(6, 1, b""), entry(8, 1, b"")]), Err(StoreError::Refused(_))));
    s.sync().unwrap();
    assert_eq!(s.last_index().unwrap(), 5);
}

#[test]
fn a_stale_temporary_file_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path()).unwrap();
    s.persist(&entries(1..=2, 1), None).unwrap();
    drop(s);
    fs::write(dir.path().join(TMP_FILE), b"half a rewrite").unwrap();
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.last_index().unwrap(), 2);
    assert!(!dir.path().join(TMP_FILE).exists());
}

/// What the log should hold: the reference the property below compares `DiskStorage` with.
#[derive(Clone, Debug, Default)]
struct Model {
    snapshot: (u64, u64),
    entries: Vec<Entry>,
    hs: HardState,
}

impl Model {
    fn last(&self) -> u64 {
        self.snapshot.0 + self.entries.len() as u64
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Append `n` entries of `term` starting `back` entries before the end (an overwrite).
    Append {
        back: u64,
        n: u64,
        term: u64,
    },
    HardState {
        term: u64,
        vote: u64,
    },
    CommitAll,
    /// Compact to the point `percent` of the way from the snapshot to the commit index.
    Compact {
        percent: u64,
    },
    Sync,
    /// Drop the storage without a sync (a crash: what was not synced is gone) and reopen.
    Crash,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0..4u64, 1..5u64, 1..4u64).prop_map(|(back, n, term)| Op::Append { back, n, term }),
        1 => (0..5u64, 0..4u64).prop_map(|(term, vote)| Op::HardState { term, vote }),
        1 => Just(Op::CommitAll),
        1 => (0..=100u64).prop_map(|percent| Op::Compact { percent }),
        2 => Just(Op::Sync),
        1 => Just(Op::Crash),
    ]
}

fn assert_matches(s: &DiskStorage, m: &Model) {
    assert_eq!(s.first_index().unwrap(), m.snapshot.0 + 1);
    assert_eq!(s.last_index().unwrap(), m.last());
    assert_eq!(s.term(m.snapshot.0).unwrap(), m.snapshot.1);
    assert_eq!(all(s), m.entries);
    for e in &m.entries {
        assert_eq!(s.term(e.index).unwrap(), e.term);
    }
    assert_eq!(s.hard_state(), &m.hs);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Any sequence of appends (overwrites included), hard states, compactions, syncs and
    /// crashes: the storage answers as the model does, and a crash loses exactly what was not
    /// synced.
    #[test]
    fn storage_follows_the_model_through_crashes(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = DiskStorage::open(dir.path()).unwrap();
        let (mut model, mut durable) = (Model::default(), Model::default());
        for op in ops {
            match op {
                Op::Append { back, n, term } => {
                    let start = (model.last() + 1).saturating_sub(back).max(model.snapshot.0 + 1);
                    let batch = entries(start..=start + n - 1, term);
                    s.append(&batch).unwrap();
                    model.entries.truncate((start - model.snapshot.0 - 1) as usize);
                    model.entries.extend(batch);
                }
                Op::HardState { term, vote } => {
                    let h = hs(term, vote, model.hs.commit.min(model.last()));
                    s.set_hard_state(&h).unwrap();
                    model.hs = h;
                }
                Op::CommitAll => {
                    s.set_commit(model.last()).unwrap();
                    model.hs.commit = model.last();
                }
                Op::Compact { percent } => {
                    let (from, to) = (model.snapshot.0, model.hs.commit.min(model.last()));
                    let index = from + to.saturating_sub(from) * percent / 100;
                    s.compact(index, index.to_le_bytes().to_vec()).unwrap();
                    if index > model.snapshot.0 {
                        let term = model.entries[(index - model.snapshot.0 - 1) as usize].term;
                        model.entries.drain(..(index - model.snapshot.0) as usize);
                        model.snapshot = (index, term);
                    }
                    durable = model.clone();
                }
                Op::Sync => {
                    s.sync().unwrap();
                    durable = model.clone();
                }
                Op::Crash => {
                    drop(s);
                    s = DiskStorage::open(dir.path()).unwrap();
                    proptest::prop_assert_eq!(s.open_report().torn_bytes, 0);
                    model = durable.clone();
                }
            }
            assert_matches(&s, &model);
        }
        s.sync().unwrap();
        drop(s);
        let s = DiskStorage::open(dir.path()).unwrap();
        assert_matches(&s, &model);
        if model.snapshot.0 > 0 {
            proptest::prop_assert_eq!(s.snapshot_data(), &model.snapshot.0.to_le_bytes()[..]);
        }
    }
}
