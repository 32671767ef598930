//! The peer wire: how nodes frame raft messages to each other over a stream (docs/CLUSTER.md,
//! "Peer wire"). It is not the client protocol (PROTOCOL.md): only officer nodes of one
//! cluster speak it, on their own port. Pure: encoders append to a caller's buffer, the
//! decoder reads a byte slice and never panics.
//!
//! ```text
//! length (u32 LE, of kind + body) | CRC-32C of kind + body (u32 LE) | kind (1 byte) | body
//! ```
//!
//! | kind | frame     | body                                                          |
//! |------|-----------|---------------------------------------------------------------|
//! | 1    | Handshake | version (1 byte, `WIRE_VERSION`), cluster id (u64 LE), node id (u64 LE) |
//! | 2    | Raft      | one raft `Message` in protobuf (rust-protobuf, as raft-rs encodes it) |
//!
//! A connection starts with the dialer's handshake; every later frame is a raft message. The
//! decoder checks the length against the caller's cap before waiting for the body (so a
//! hostile length never makes it buffer), then the checksum, then the body: a handshake is
//! exactly 17 bytes, a raft message must parse. The caller checks that the handshake's
//! cluster id is its own and its node id a peer, and that every message's `from` is that id.

use std::fmt;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};

use super::crc::crc32c;

/// The handshake's version byte; another version is refused.
pub const WIRE_VERSION: u8 = 1;
/// The largest `length` the encoders write and the default cap of the decoder: a raft message
/// carries at most `max_size_per_msg` (1 MiB) of entries.
pub const MAX_FRAME: u32 = 16 << 20;
/// The largest `length` of a frame carrying a `MsgSnapshot`: a snapshot of the table travels
/// whole, in one frame (not in chunks), so a table whose snapshot is larger cannot be sent to
/// a lagging follower (docs/CLUSTER.md, "Snapshots"). Only an established peer connection
/// may send one ([`decode_peer_frame`]).
pub const MAX_SNAPSHOT_FRAME: u32 = 256 << 20;
/// The bytes before the kind: length and checksum.
pub const HEADER_LEN: usize = 8;

const KIND_HANDSHAKE: u8 = 1;
const KIND_RAFT: u8 = 2;
const HANDSHAKE_BODY: usize = 17;

/// The first frame of a peer connection: who dials, and for which cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// Chosen by the operator, the same on every node: a node of another cluster is refused.
    pub cluster_id: u64,
    /// The dialer's raft id (never 0).
    pub node_id: u64,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Handshake(Handshake),
    Raft(Message),
}

/// Why bytes are not a frame. The connection that sent them should be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The length prefix is above the cap.
    TooLarge { len: u32, max: u32 },
    /// A length of 0: no kind byte.
    Empty,
    /// The checksum does not match the bytes.
    Checksum { expected: u32, found: u32 },
    /// An unknown kind byte.
    Kind(u8),
    /// A handshake body of the wrong length.
    HandshakeLength(usize),
    /// A handshake of another wire version.
    Version(u8),
    /// A handshake naming node 0.
    NodeZero,
    /// A raft frame whose body is not a protobuf `Message`.
    Protobuf(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLarge { len, max } => write!(f, "peer frame of {len} bytes, the limit is {max}"),
            WireError::Empty => write!(f, "peer frame of length 0"),
            WireError::Checksum { expected, found } => {
                write!(f, "peer frame checksum {found:#010x}, its bytes give {expected:#010x}")
            }
            WireError::Kind(kind) => write!(f, "unknown peer frame kind {kind}"),
            WireError::HandshakeLength(len) => {
                write!(f, "peer handshake of {len} bytes, expected {HANDSHAKE_BODY}")
            }
            WireError::Version(v) => write!(f, "peer wire version {v}, this build speaks {WIRE_VERSION}"),
            WireError::NodeZero => write!(f, "peer handshake names node 0"),
            WireError::Protobuf(e) => write!(f, "peer raft message does not parse: {e}"),
        }
    }
}

impl std::error::Error for WireError {}

/// Appends a handshake frame.
pub fn encode_handshake(handshake: &Handshake, out: &mut Vec<u8>) {
    put_frame(out, KIND_HANDSHAKE, |out| {
        out.push(WIRE_VERSION);
        out.extend_from_slice(&handshake.cluster_id.to_le_bytes());
        out.extend_from_slice(&handshake.node_id.to_le_bytes());
    });
}

/// Appends a raft message frame; a message above [`MAX_FRAME`] (a snapshot above
/// [`MAX_SNAPSHOT_FRAME`]) is refused and nothing is appended.
pub fn encode_message(message: &Message, out: &mut Vec<u8>) -> Result<(), WireError> {
    let max = frame_cap(message);
    let start = out.len();
    let mut encoded = Ok(());
    put_frame(out, KIND_RAFT, |out| {
        encoded = message.write_to_vec(out).map_err(|e| WireError::Protobuf(e.to_string()));
    });
    let len = (out.len() - start - HEADER_LEN) as u64;
    if len > u64::from(max) {
        encoded = Err(WireError::TooLarge { len: len.min(u64::from(u32::MAX)) as u32, max });
    }
    if encoded.is_err() {
        out.truncate(start);
    }
    encoded
}

/// Reserves the header, writes kind and body, then back-patches length and checksum.
fn put_frame(out: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.push(kind);
    body(out);
    let payload = &out[start + HEADER_LEN..];
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32c(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the frame at the start of `buf`: `Ok(None)` if more bytes are needed, else the
/// frame and the bytes it took. A length above `max` is refused as soon as the header is in.
pub fn decode_frame(buf: &[u8], max: u32) -> Result<Option<(Frame, usize)>, WireError> {
    let Some(header) = buf.get(..HEADER_LEN) else { return Ok(None) };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let found = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(WireError::Empty);
    }
    let end = HEADER_LEN.saturating_add(len as usize);
    let Some(payload) = buf.get(HEADER_LEN..end) else { return Ok(None) };
    let expected = crc32c(payload);
    if expected != found {
        return Err(WireError::Checksum { expected, found });
    }
    let (kind, body) = (payload[0], &payload[1..]);
    let frame = match kind {
        KIND_HANDSHAKE => Frame::Handshake(decode_handshake(body)?),
        KIND_RAFT => {
            Frame::Raft(Message::parse_from_bytes(body).map_err(|e| WireError::Protobuf(e.to_string()))?)
        }
        other => return Err(WireError::Kind(other)),
    };
    Ok(Some((frame, end)))
}

/// [`decode_frame`] for an established peer connection: a frame may be as long as
/// `max_snapshot` if it carries a `MsgSnapshot`, and at most `max` otherwise.
pub fn decode_peer_frame(
    buf: &[u8],
    max: u32,
    max_snapshot: u32,
) -> Result<Option<(Frame, usize)>, WireError> {
    let decoded = decode_frame(buf, max.max(max_snapshot))?;
    if let Some((frame, used)) = &decoded {
        let len = (used - HEADER_LEN) as u32;
        let snapshot = matches!(frame, Frame::Raft(m) if m.get_msg_type() == MessageType::MsgSnapshot);
        if len > max && !snapshot {
            return Err(WireError::TooLarge { len, max });
        }
    }
    Ok(decoded)
}

/// The most a frame of `message` may take.
fn frame_cap(message: &Message) -> u32 {
    if message.get_msg_type() == MessageType::MsgSnapshot {
        MAX_SNAPSHOT_FRAME
    } else {
        MAX_FRAME
    }
}

fn decode_handshake(body: &[u8]) -> Result<Handshake, WireError> {
    let body: &[u8; HANDSHAKE_BODY] = body.try_into().map_err(|_| WireError::HandshakeLength(body.len()))?;
    if body[0] != WIRE_VERSION {
        return Err(WireError::Version(body[0]));
    }
    let u64_at = |at: usize| {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&body[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let handshake = Handshake { cluster_id: u64_at(1), node_id: u64_at(9) };
    if handshake.node_id == 0 {
        return Err(WireError::NodeZero);
    }
    Ok(handshake)
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
