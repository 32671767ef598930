use proptest::prelude::*;

use super::*;

fn name() -> impl Strategy<Value = Name> {
    // Short (inline) and long (shared) names, with multi-byte characters.
    prop_oneof!["[a-z0-9:]{0,8}", "[a-zé€]{20,40}", ".{0,5}"].prop_map(|s: String| Name::new(&s))
}

fn session() -> impl Strategy<Value = SessionId> {
    prop_oneof![0..300u64, any::<u64>()].prop_map(SessionId)
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Exclusive),
        Just(Mode::Shared),
        (any::<u32>(), any::<u32>()).prop_map(|(count, limit)| Mode::Permits { count, limit }),
    ]
}

fn opts() -> impl Strategy<Value = LockOpts> {
    (mode(), any::<Option<u32>>(), any::<Option<u32>>(), any::<u32>(), any::<bool>(), any::<bool>()).prop_map(
        |(mode, lease_ms, max_hold_ms, lock_delay_ms, notify_contention, skip_while_detached)| LockOpts {
            mode,
            lease_ms,
            max_hold_ms,
            lock_delay_ms,
            notify_contention,
            skip_while_detached,
        },
    )
}

fn command() -> impl Strategy<Value = Command> {
    let rid = any::<u32>();
    prop_oneof![
        (session(), ".{0,30}").prop_map(|(session, label)| Command::Attach { session, label }),
        (session(), rid, name(), any::<Option<u32>>(), any::<Option<u32>>(), opts()).prop_map(
            |(session, request_id, name, timeout_ms, queue_max, opts)| Command::Lock {
                session,
                request_id,
                name,
                timeout_ms,
                queue_max,
                opts
            }
        ),
        (session(), rid, name(), any::<Option<u64>>()).prop_map(|(session, request_id, name, token)| {
            Command::Unlock { session, request_id, name, token }
        }),
        (session(), rid, name(), any::<u64>()).prop_map(|(session, request_id, name, token)| {
            Command::Downgrade { session, request_id, name, token }
        }),
        (session(), rid, name(), any::<u64>()).prop_map(|(session, request_id, name, token)| {
            Command::Renew { session, request_id, name, token }
        }),
        (session(), rid, name(), any::<Option<u64>>()).prop_map(|(session, request_id, name, token)| {
            Command::Revoke { session, request_id, name, token }
        }),
        (session(), rid, name(), any::<u64>()).prop_map(|(session, request_id, name, token)| {
            Command::Check { session, request_id, name, token }
        }),
        (session(), rid).prop_map(|(session, request_id)| Command::Reset { session, request_id }),
        session().prop_map(|session| Command::Detach { session }),
        (session(), rid, any::<u32>(), any::<[u8; SESSION_SECRET_LEN]>(), any::<bool>()).prop_map(
            |(session, request_id, grace_ms, secret, skip_while_detached)| Command::OpenSession {
                session,
                request_id,
                grace_ms,
                secret,
                skip_while_detached,
            }
        ),
        session().prop_map(|session| Command::Suspend { session }),
        (session(), rid, session(), any::<[u8; SESSION_SECRET_LEN]>()).prop_map(
            |(session, request_id, from, secret)| Command::Resume { session, request_id, from, secret }
        ),
        Just(Command::Expire),
    ]
}

fn entry() -> impl Strategy<Value = LogCommand> {
    (prop_oneof![0..100_000u64, any::<u64>()], command())
        .prop_map(|(now, command)| LogCommand { now, command })
}

fn encoded(entry: &LogCommand) -> Vec<u8> {
    let mut out = Vec::new();
    encode_entry(entry, &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Every variant, with every optional field present or not, comes back as it went in.
    #[test]
    fn round_trip(entry in entry()) {
        let bytes = encoded(&entry);
        prop_assert_eq!(decode_entry(&bytes), Ok(entry));
    }

    /// Every strict prefix of an entry is refused as truncated, never read as a shorter entry.
    #[test]
    fn prefixes_are_truncated(entry in entry()) {
        let bytes = encoded(&entry);
        for cut in 0..bytes.len() {
            let err = decode_entry(&bytes[..cut]);
            prop_assert!(matches!(err, Err(EntryError::Truncated { .. })), "cut {} of {:?}: {:?}", cut, bytes, err);
        }
    }

    /// A byte appended to an entry is refused.
    #[test]
    fn trailing_byte_is_refused(entry in entry(), extra in any::<u8>()) {
        let mut bytes = encoded(&entry);
        bytes.push(extra);
        prop_assert_eq!(decode_entry(&bytes), Err(EntryError::Trailing(1)));
    }

    /// Random bytes, and valid entries with one byte changed, never panic: each is an entry
    /// or a typed error (a peer's bytes cannot take the node down).
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_entry(&bytes);
        let mut versioned = bytes.clone();
        versioned.insert(0, ENTRY_VERSION);
        let _ = decode_entry(&versioned);
    }

    #[test]
    fn mutated_entries_never_panic(entry in entry(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = encoded(&entry);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(decoded) = decode_entry(&bytes) {
            // What decodes re-encodes to the same bytes, unless a varint was padded.
            let again = encoded(&decoded);
            prop_assert!(again.len() <= bytes.len());
        }
    }
}

#[test]
fn an_entry_is_compact() {
    let entry = LogCommand {
        now: 12_345,
        command: Command::Lock {
            session: SessionId(7),
            request_id: 42,
            name: Name::new("job:1234"),
            timeout_ms: Some(5000),
            queue_max: None,
            opts: LockOpts::default(),
        },
    };
    let bytes = encoded(&entry);
    // version, now (2), tag, session, request id, name (1 + 8), flags, mode, timeout (2), delay
    assert_eq!(bytes.len(), 20, "{bytes:?}");
    assert_eq!(&bytes[..4], &[ENTRY_VERSION, 0xb9, 0x60, TAG_LOCK]);
    assert_eq!(encoded(&LogCommand { now: 0, command: Command::Expire }), [ENTRY_VERSION, 0, TAG_EXPIRE]);
}

#[test]
fn bad_bytes_are_named() {
    assert_eq!(decode_entry(&[]), Err(EntryError::Truncated { field: "version" }));
    assert_eq!(decode_entry(&[2, 0, TAG_EXPIRE]), Err(EntryError::Version(2)));
    assert_eq!(decode_entry(&[ENTRY_VERSION, 0, 99]), Err(EntryError::UnknownTag(99)));
    assert_eq!(decode_entry(&[ENTRY_VERSION, 0, 0]), Err(EntryError::UnknownTag(0)));
    // An 11-byte varint, and a 10th byte with bits beyond u64.
    let mut long = vec![ENTRY_VERSION];
    long.extend([0xff; 10]);
    long.push(0);
    assert_eq!(decode_entry(&long), Err(EntryError::Varint { field: "now" }));
    let mut wide = vec![ENTRY_VERSION];
    wide.extend([0xff; 9]);
    wide.extend([0x02, TAG_EXPIRE]);
    assert_eq!(decode_entry(&wide), Err(EntryError::Varint { field: "now" }));
    // u64::MAX itself is fine.
    let mut max = vec![ENTRY_VERSION];
    max.extend([0xff; 9]);
    max.extend([0x01, TAG_EXPIRE]);
    assert_eq!(decode_entry(&max), Ok(LogCommand { now: u64::MAX, command: Command::Expire }));
    // A request id beyond u32.
    let reset = [ENTRY_VERSION, 0, TAG_RESET, 1, 0x80, 0x80, 0x80, 0x80, 0x10];
    assert_eq!(decode_entry(&reset), Err(EntryError::Varint { field: "request_id" }));
    // Unlock's presence byte, Lock's flags and mode.
    let unlock = [ENTRY_VERSION, 0, TAG_UNLOCK, 1, 1, 1, b'a', 2];
    assert_eq!(decode_entry(&unlock), Err(EntryError::BadFlag { field: "token", byte: 2 }));
    let lock = [ENTRY_VERSION, 0, TAG_LOCK, 1, 1, 1, b'a', 0x40, 0, 0];
    assert_eq!(decode_entry(&lock), Err(EntryError::BadFlag { field: "lock flags", byte: 0x40 }));
    let lock = [ENTRY_VERSION, 0, TAG_LOCK, 1, 1, 1, b'a', 0, 3, 0];
    assert_eq!(decode_entry(&lock), Err(EntryError::UnknownMode(3)));
    // OpenSession's skip byte is 0 or 1.
    let mut open = vec![ENTRY_VERSION, 0, TAG_OPEN_SESSION, 1, 1, 100, 2];
    open.extend([7; SESSION_SECRET_LEN]);
    assert_eq!(decode_entry(&open), Err(EntryError::BadFlag { field: "skip", byte: 2 }));
    open[6] = 1;
    assert!(matches!(
        decode_entry(&open),
        Ok(LogCommand { command: Command::OpenSession { skip_while_detached: true, grace_ms: 100, .. }, .. })
    ));
    // A name that is not UTF-8, and a length far beyond the input (no allocation of it).
    let bad = [ENTRY_VERSION, 0, TAG_CHECK, 1, 1, 1, 0xff, 5];
    assert_eq!(decode_entry(&bad), Err(EntryError::Utf8 { field: "name" }));
    let huge = [ENTRY_VERSION, 0, TAG_ATTACH, 1, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert_eq!(decode_entry(&huge), Err(EntryError::Truncated { field: "label" }));
    // Every error reads as a sentence naming the field.
    assert_eq!(EntryError::Truncated { field: "label" }.to_string(), "log entry ends inside its label");
}

fn batched(entries: &[LogCommand]) -> Vec<u8> {
    let mut batch = Batch::default();
    for entry in entries {
        batch.push(entry);
    }
    let len = batch.encoded_len();
    let data = batch.take();
    assert!(data.len() <= len, "encoded_len {len} under the real {}", data.len());
    assert!(batch.is_empty() && batch.encoded_len() == 0);
    data
}

fn decoded(bytes: &[u8]) -> Result<Vec<LogCommand>, EntryError> {
    let mut out = Vec::new();
    decode_entries(bytes, &mut out).map(|()| out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// A batch of one is a version 1 entry (old readers read it); of more, version 2; both
    /// decode to the commands in the order they were pushed.
    #[test]
    fn batch_round_trip(entries in proptest::collection::vec(entry(), 1..20)) {
        let bytes = batched(&entries);
        if entries.len() == 1 {
            prop_assert_eq!(&bytes, &encoded(&entries[0]));
        } else {
            prop_assert_eq!(bytes[0], BATCH_VERSION);
        }
        prop_assert_eq!(decoded(&bytes), Ok(entries));
    }

    /// Every strict prefix of a batch is refused (never read as a shorter batch), a trailing
    /// byte is refused, and a refused batch leaves what was already decoded untouched.
    #[test]
    fn batch_prefixes_and_trailing_are_refused(entries in proptest::collection::vec(entry(), 2..6), extra in any::<u8>()) {
        let bytes = batched(&entries);
        let before = vec![LogCommand { now: 1, command: Command::Expire }];
        for cut in 0..bytes.len() {
            let mut out = before.clone();
            let err = decode_entries(&bytes[..cut], &mut out);
            prop_assert!(
                matches!(err, Err(EntryError::Truncated { .. }) | Err(EntryError::Count(_))),
                "cut {} of {:?}: {:?}", cut, bytes, err
            );
            prop_assert_eq!(&out, &before);
        }
        let mut long = bytes.clone();
        long.push(extra);
        let mut out = before.clone();
        prop_assert_eq!(decode_entries(&long, &mut out), Err(EntryError::Trailing(1)));
        prop_assert_eq!(&out, &before);
    }

    /// Random bytes behind either version byte, and batches with one byte changed, never panic.
    #[test]
    fn random_batches_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), at in any::<prop::sample::Index>(), byte in any::<u8>(), entries in proptest::collection::vec(entry(), 2..5)) {
        let _ = decoded(&bytes);
        let mut versioned = bytes.clone();
        versioned.insert(0, BATCH_VERSION);
        let _ = decoded(&versioned);
        let mut mutated = batched(&entries);
        let i = at.index(mutated.len());
        mutated[i] = byte;
        if let Ok(commands) = decoded(&mutated) {
            prop_assert!(!commands.is_empty());
        }
    }
}

#[test]
fn a_batch_count_is_checked() {
    let expire = [0, TAG_EXPIRE];
    let with_count = |count: &[u8], items: usize| {
        let mut bytes = vec![BATCH_VERSION];
        bytes.extend_from_slice(count);
        for _ in 0..items {
            bytes.extend_from_slice(&expire);
        }
        bytes
    };
    // A batch holds at least two commands: one is written as version 1.
    assert_eq!(decoded(&with_count(&[0], 0)), Err(EntryError::Count(0)));
    assert_eq!(decoded(&with_count(&[1], 1)), Err(EntryError::Count(1)));
    // A count beyond what the bytes could hold is refused before anything is reserved for it.
    assert_eq!(decoded(&with_count(&[3], 2)), Err(EntryError::Count(3)));
    let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert_eq!(decoded(&with_count(&huge, 4)), Err(EntryError::Count(u64::MAX)));
    // A count that fits but items that end early.
    let mut short = with_count(&[3], 2);
    short.push(0);
    short.push(0);
    assert_eq!(decoded(&short), Err(EntryError::UnknownTag(0)));
    // Two Expires, and the v1-only reader refusing the batch by its version.
    let two = with_count(&[2], 2);
    assert_eq!(decoded(&two), Ok(vec![LogCommand { now: 0, command: Command::Expire }; 2]));
    assert_eq!(decode_entry(&two), Err(EntryError::Version(BATCH_VERSION)));
    assert_eq!(decoded(&[3, 0, TAG_EXPIRE]), Err(EntryError::Version(3)));
    assert_eq!(EntryError::Count(1).to_string(), "log entry batch of 1 commands");
}

#[test]
fn a_popped_push_leaves_the_batch_as_it_was() {
    let a = LogCommand { now: 5, command: Command::Detach { session: SessionId(3) } };
    let b = LogCommand { now: 6, command: Command::Reset { session: SessionId(4), request_id: 9 } };
    let mut batch = Batch::default();
    batch.push(&a);
    let len = batch.encoded_len();
    let added = batch.push(&b);
    assert_eq!(batch.count(), 2);
    batch.pop(added);
    assert_eq!((batch.count(), batch.encoded_len()), (1, len));
    assert_eq!(batch.take(), encoded(&a));
}
