// rust-protobuf messages are built field by field (as raft-rs does).
#![allow(clippy::field_reassign_with_default)]

use proptest::prelude::*;
use raft::eraftpb::{Entry, EntryType, MessageType, Snapshot};

use super::*;

const TYPES: [MessageType; 8] = [
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgRequestPreVote,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgSnapshot,
];

fn entry() -> impl Strategy<Value = Entry> {
    (any::<u64>(), any::<u64>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(
        |(index, term, conf, data)| {
            let mut e = Entry::default();
            e.index = index;
            e.term = term;
            if conf {
                e.set_entry_type(EntryType::EntryConfChangeV2);
            }
            e.data = data.into();
            e
        },
    )
}

fn message() -> impl Strategy<Value = Message> {
    (
        0..TYPES.len(),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        proptest::collection::vec(entry(), 0..5),
        (any::<bool>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..16), any::<u64>()),
    )
        .prop_map(
            |(t, (to, from, term, log_term, index, commit), entries, (reject, hint, context, snap))| {
                let mut m = Message::default();
                m.set_msg_type(TYPES[t]);
                (m.to, m.from, m.term, m.log_term, m.index, m.commit) =
                    (to, from, term, log_term, index, commit);
                m.set_entries(entries.into());
                m.reject = reject;
                m.reject_hint = hint;
                m.context = context.into();
                if snap != 0 {
                    let mut s = Snapshot::default();
                    s.mut_metadata().index = snap;
                    s.data = vec![7; (snap % 32) as usize].into();
                    m.set_snapshot(s);
                }
                m
            },
        )
}

fn frame_of(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(message, &mut out).expect("encodes");
    out
}

/// A frame with a correct header around any kind and body, to reach the body decoders.
fn framed(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_frame(&mut out, kind, |out| out.extend_from_slice(body));
    out
}

proptest! {
    #[test]
    fn messages_round_trip(m in message(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let mut bytes = frame_of(&m);
        let len = bytes.len();
        bytes.extend_from_slice(&tail);
        let (frame, used) = decode_frame(&bytes, MAX_FRAME).unwrap().expect("a whole frame");
        prop_assert_eq!(frame, Frame::Raft(m));
        prop_assert_eq!(used, len);
        for cut in 0..len {
            prop_assert_eq!(decode_frame(&bytes[..cut], MAX_FRAME), Ok(None));
        }
    }

    #[test]
    fn handshakes_round_trip(cluster_id in any::<u64>(), node_id in 1..u64::MAX) {
        let handshake = Handshake { cluster_id, node_id };
        let mut bytes = Vec::new();
        encode_handshake(&handshake, &mut bytes);
        prop_assert_eq!(bytes.len(), HEADER_LEN + 1 + 17);
        prop_assert_eq!(decode_frame(&bytes, MAX_FRAME), Ok(Some((Frame::Handshake(handshake), bytes.len()))));
    }

    /// Random bytes: an error or a need for more, never a panic; a frame only when the
    /// checksum happens to hold, and then it used no more than the input.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), max in 0..1024u32) {
        if let Ok(Some((_, used))) = decode_frame(&bytes, max) {
            prop_assert!(used <= bytes.len());
        }
    }

    /// Random bodies behind a valid header and checksum reach the protobuf and handshake
    /// decoders: errors, never panics.
    #[test]
    fn random_bodies_never_panic(kind in 0..4u8, body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let bytes = framed(kind, &body);
        let decoded = decode_frame(&bytes, MAX_FRAME);
        match kind {
            KIND_HANDSHAKE | KIND_RAFT => {}
            other => prop_assert_eq!(decoded, Err(WireError::Kind(other))),
        }
    }

    /// Any one flipped bit of a frame is caught: by the checksum, the cap, or a length that
    /// now waits for more bytes.
    #[test]
    fn a_flipped_bit_is_never_a_frame(m in message(), at in any::<prop::sample::Index>(), bit in 0..8u8) {
        let mut bytes = frame_of(&m);
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        match decode_frame(&bytes, MAX_FRAME) {
            Ok(Some((frame, _))) => prop_assert!(false, "byte {} flipped still decodes: {:?}", i, frame),
            Ok(None) => prop_assert!(i < 4, "only a changed length waits for more"),
            Err(_) => {}
        }
    }
}

#[test]
fn a_length_above_the_cap_is_refused_from_the_header_alone() {
    let mut header = Vec::new();
    header.extend_from_slice(&(MAX_FRAME + 1).to_le_bytes());
    header.extend_from_slice(&[0; 4]);
    assert_eq!(
        decode_frame(&header, MAX_FRAME),
        Err(WireError::TooLarge { len: MAX_FRAME + 1, max: MAX_FRAME })
    );
    header[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(decode_frame(&header, 100), Err(WireError::TooLarge { .. })));
    // A big message under the encoder's limit, decoded with a smaller cap.
    let mut m = Message::default();
    m.context = vec![1; 4096].into();
    assert!(matches!(decode_frame(&frame_of(&m), 1024), Err(WireError::TooLarge { .. })));
}

#[test]
fn encoding_refuses_a_message_above_the_limit() {
    let mut m = Message::default();
    m.context = vec![0; MAX_FRAME as usize].into();
    let mut out = vec![9];
    assert!(matches!(encode_message(&m, &mut out), Err(WireError::TooLarge { .. })));
    assert_eq!(out, [9], "nothing appended");
}

#[test]
fn bad_handshakes_say_why() {
    let mut body = vec![WIRE_VERSION];
    body.extend_from_slice(&7u64.to_le_bytes());
    body.extend_from_slice(&0u64.to_le_bytes());
    assert_eq!(decode_frame(&framed(KIND_HANDSHAKE, &body), MAX_FRAME), Err(WireError::NodeZero));
    body[0] = 2;
    assert_eq!(decode_frame(&framed(KIND_HANDSHAKE, &body), MAX_FRAME), Err(WireError::Version(2)));
    body[0] = WIRE_VERSION;
    body.push(0);
    assert_eq!(decode_frame(&framed(KIND_HANDSHAKE, &body), MAX_FRAME), Err(WireError::HandshakeLength(18)));
    assert_eq!(decode_frame(&framed(KIND_HANDSHAKE, &[]), MAX_FRAME), Err(WireError::HandshakeLength(0)));
    assert_eq!(decode_frame(&[0; 8], MAX_FRAME), Err(WireError::Empty));
    let e = decode_frame(&framed(KIND_RAFT, &[0xff, 0xff]), MAX_FRAME).unwrap_err();
    assert!(matches!(e, WireError::Protobuf(_)), "{e}");
}

/// The bytes docs/CLUSTER.md shows: a handshake of cluster 7 from node 2.
#[test]
fn the_documented_handshake() {
    let mut bytes = Vec::new();
    encode_handshake(&Handshake { cluster_id: 7, node_id: 2 }, &mut bytes);
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let crc = crc32c(&bytes[8..]).to_le_bytes();
    let mut expected = vec![0x12, 0, 0, 0, crc[0], crc[1], crc[2], crc[3], 1, 1];
    expected.extend_from_slice(&7u64.to_le_bytes());
    expected.extend_from_slice(&2u64.to_le_bytes());
    assert_eq!(bytes, expected, "{}", hex.join(" "));
}

/// A body that claims a huge field in a few bytes is an error at once (rust-protobuf reserves
/// at most 10 MB for a claimed length before it sees the bytes are missing).
#[test]
fn a_field_longer_than_its_frame_is_refused() {
    // Field 12 (context), length-delimited, claiming 2^31 bytes; then field 7 (entries) claiming 10 MB.
    for body in [&[0x62, 0x80, 0x80, 0x80, 0x80, 0x08, 1, 2][..], &[0x3a, 0x80, 0xad, 0xe2, 0x04, 0x0a]] {
        let e = decode_frame(&framed(KIND_RAFT, body), MAX_FRAME).unwrap_err();
        assert!(matches!(e, WireError::Protobuf(_)), "{e}");
    }
}

/// Only a snapshot may exceed `max` on an established connection, and none `max_snapshot`.
#[test]
fn a_peer_frame_above_the_cap_must_be_a_snapshot() {
    let mut snapshot = Message::default();
    snapshot.set_msg_type(MessageType::MsgSnapshot);
    let mut body = Snapshot::default();
    body.data = vec![3; 4096].into();
    snapshot.set_snapshot(body);
    let frame = frame_of(&snapshot);
    match decode_peer_frame(&frame, 1024, 8192) {
        Ok(Some((Frame::Raft(m), used))) => assert_eq!((m, used), (snapshot.clone(), frame.len())),
        other => panic!("{other:?}"),
    }
    assert!(matches!(decode_peer_frame(&frame, 1024, 2048), Err(WireError::TooLarge { max: 2048, .. })));
    let mut append = Message::default();
    append.set_msg_type(MessageType::MsgAppend);
    append.context = vec![3; 4096].into();
    assert!(matches!(
        decode_peer_frame(&frame_of(&append), 1024, 8192),
        Err(WireError::TooLarge { max: 1024, .. })
    ));
    assert!(matches!(decode_peer_frame(&frame_of(&append), 8192, 8192), Ok(Some(_))));
    // Only a prefix: more bytes needed, whatever the length claims up to the snapshot cap.
    assert_eq!(decode_peer_frame(&frame[..100], 1024, 8192), Ok(None));
}

#[test]
fn encoding_takes_a_snapshot_above_max_frame() {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    let mut body = Snapshot::default();
    body.data = vec![0; MAX_FRAME as usize + 10].into();
    m.set_snapshot(body);
    let mut out = Vec::new();
    encode_message(&m, &mut out).expect("a snapshot may exceed MAX_FRAME");
    assert!(out.len() > MAX_FRAME as usize);
}
