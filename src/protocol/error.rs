//! Decoding errors of the wire protocol and the error codes carried by ERROR frames.
//!
//! Whether an error is fatal (the server closes the connection after the ERROR) is a property of
//! its code, so `DecodeError::is_fatal` and `ErrorCode::is_fatal` always agree (PROTOCOL.md §5).

use std::fmt;

use super::op;

/// Error codes carried in an ERROR response (PROTOCOL.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// A field is missing, too short, or followed by trailing bytes.
    Malformed = 1,
    /// The opcode byte names no request.
    UnknownOpcode = 2,
    /// A name is empty, too long, not UTF-8, or contains control characters.
    BadName = 3,
    /// A reserved flags field is not zero.
    UnsupportedFlags = 4,
    /// The first frame is not a valid HELLO, or HELLO came twice. Fatal.
    BadHandshake = 5,
    /// The client asked for a protocol version the server does not speak. Fatal.
    UnsupportedVersion = 6,
    /// The length prefix is below the header size or above the limit. Fatal.
    BadFrameLength = 7,
    /// Authentication is required before this request.
    AuthRequired = 8,
    /// The secret did not match. Fatal.
    AuthFailed = 9,
    /// A per-connection or per-lock limit would be exceeded.
    LimitExceeded = 10,
    /// The server is shutting down.
    ShuttingDown = 11,
    /// A field of a v2 request holds a value outside its range (§5): a mode this version does
    /// not define, permits 0 or above the limit, token 0, a lock-delay above the server's maximum.
    BadValue = 12,
    /// A semaphore's limit disagrees with the limit the name is in use with, or the name is in
    /// use as a lock of the other kind (semaphore against exclusive/shared).
    LimitMismatch = 13,
    /// RENEW or DOWNGRADE names a grant (name and token) this connection does not hold, and
    /// did not lose either (a lost grant is answered with LOST, §4.24).
    NotHolder = 14,
    /// The connection holds the name already, in another mode or with other permits, or a
    /// DOWNGRADE names a grant that is not exclusive.
    ModeConflict = 15,
    /// An admin request (REVOKE, KICK) from a connection without admin rights.
    Forbidden = 16,
    /// KICK names no open connection.
    NotFound = 17,
    /// An operator closed this connection (KICK). Fatal.
    Kicked = 18,
    /// SESSION_RESUME names no session that can be resumed: no such id, a wrong secret, or the
    /// grace ran out. One code for all three, so a guesser learns nothing (§3.23).
    BadSession = 19,
    /// SESSION_OPEN or SESSION_RESUME on a connection that has a session already, or holds or
    /// waits for a lock: a session's state is never merged with another's (§3.22).
    SessionState = 20,
    /// A SESSION_RESUME on another connection took this connection's session over (the newest
    /// connection wins, §6.14). Fatal.
    TakenOver = 21,
    /// A wait of a detached session whose turn came was skipped, not granted, as its LOCK_EXT
    /// flags bit 1 or its SESSION_OPEN flags bit 0 asked; replayed on resume (§6.14).
    Skipped = 22,
    /// Cluster mode: this server is not the cluster's leader. The message is the leader's
    /// client address (`host:port`), or empty when no leader is known yet: the client
    /// connects there, or to another server of its list (docs/CLUSTER.md). Fatal.
    NotLeader = 23,
    /// A code this version does not know (decoding only; never sent).
    Unknown = 0xFFFF,
}

impl ErrorCode {
    /// True for the codes after which the server closes the connection (PROTOCOL.md §5).
    /// `Unknown` is not fatal: a client learns of a closed connection from the socket anyway.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::BadHandshake
                | ErrorCode::UnsupportedVersion
                | ErrorCode::BadFrameLength
                | ErrorCode::AuthFailed
                | ErrorCode::Kicked
                | ErrorCode::TakenOver
                | ErrorCode::NotLeader
        )
    }

    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            1 => ErrorCode::Malformed,
            2 => ErrorCode::UnknownOpcode,
            3 => ErrorCode::BadName,
            4 => ErrorCode::UnsupportedFlags,
            5 => ErrorCode::BadHandshake,
            6 => ErrorCode::UnsupportedVersion,
            7 => ErrorCode::BadFrameLength,
            8 => ErrorCode::AuthRequired,
            9 => ErrorCode::AuthFailed,
            10 => ErrorCode::LimitExceeded,
            11 => ErrorCode::ShuttingDown,
            12 => ErrorCode::BadValue,
            13 => ErrorCode::LimitMismatch,
            14 => ErrorCode::NotHolder,
            15 => ErrorCode::ModeConflict,
            16 => ErrorCode::Forbidden,
            17 => ErrorCode::NotFound,
            18 => ErrorCode::Kicked,
            19 => ErrorCode::BadSession,
            20 => ErrorCode::SessionState,
            21 => ErrorCode::TakenOver,
            22 => ErrorCode::Skipped,
            23 => ErrorCode::NotLeader,
            _ => ErrorCode::Unknown,
        }
    }

    /// A stable snake_case name for logs and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownOpcode => "unknown_opcode",
            ErrorCode::BadName => "bad_name",
            ErrorCode::UnsupportedFlags => "unsupported_flags",
            ErrorCode::BadHandshake => "bad_handshake",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::BadFrameLength => "bad_frame_length",
            ErrorCode::AuthRequired => "auth_required",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::BadValue => "bad_value",
            ErrorCode::LimitMismatch => "limit_mismatch",
            ErrorCode::NotHolder => "not_holder",
            ErrorCode::ModeConflict => "mode_conflict",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Kicked => "kicked",
            ErrorCode::BadSession => "bad_session",
            ErrorCode::SessionState => "session_state",
            ErrorCode::TakenOver => "taken_over",
            ErrorCode::Skipped => "skipped",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a byte sequence is not a valid frame or message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The length prefix is smaller than opcode + request id.
    FrameTooShort(u32),
    /// The length prefix exceeds the negotiated maximum.
    FrameTooLarge {
        len: u32,
        max: u32,
    },
    UnknownOpcode(u8),
    /// The payload ended before a fixed field of `opcode` was complete.
    Truncated {
        opcode: u8,
    },
    /// Bytes were left in the frame after the last field of `opcode`.
    TrailingBytes {
        opcode: u8,
    },
    EmptyName,
    NameTooLong {
        len: usize,
        max: u32,
    },
    NameNotUtf8,
    NameHasControl,
    /// A text field other than a name (an error message, a label) is not UTF-8.
    TextNotUtf8,
    /// A reserved flags field of `opcode` is not zero.
    NonZeroFlags {
        opcode: u8,
        flags: u16,
    },
    /// A request used request id 0, which is reserved for frames the server sends on its own.
    ZeroRequestId {
        opcode: u8,
    },
    /// The HELLO payload does not start with `OFCR`.
    BadMagic,
    /// HELLO asked for a version below the lowest this codec speaks.
    UnsupportedVersion(u16),
    /// A field of a v2 request (`opcode`) holds a value outside its range (PROTOCOL.md §5.1).
    BadValue {
        opcode: u8,
        field: &'static str,
        value: u64,
    },
}

impl DecodeError {
    /// The code an ERROR response carries for this error. Every malformed HELLO is a
    /// `BadHandshake`: HELLO is valid only as the first frame, so any error in it ends the
    /// handshake (PROTOCOL.md §5.1).
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::FrameTooShort(_) | DecodeError::FrameTooLarge { .. } => ErrorCode::BadFrameLength,
            DecodeError::BadMagic => ErrorCode::BadHandshake,
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            DecodeError::Truncated { opcode }
            | DecodeError::TrailingBytes { opcode }
            | DecodeError::NonZeroFlags { opcode, .. }
            | DecodeError::ZeroRequestId { opcode }
                if *opcode == op::HELLO =>
            {
                ErrorCode::BadHandshake
            }
            DecodeError::UnknownOpcode(_) => ErrorCode::UnknownOpcode,
            DecodeError::Truncated { .. }
            | DecodeError::TrailingBytes { .. }
            | DecodeError::TextNotUtf8
            | DecodeError::ZeroRequestId { .. } => ErrorCode::Malformed,
            DecodeError::EmptyName
            | DecodeError::NameTooLong { .. }
            | DecodeError::NameNotUtf8
            | DecodeError::NameHasControl => ErrorCode::BadName,
            DecodeError::NonZeroFlags { .. } => ErrorCode::UnsupportedFlags,
            DecodeError::BadValue { .. } => ErrorCode::BadValue,
        }
    }

    /// True when the connection must be closed after the ERROR rather than continued: the frame
    /// boundary is lost, or the peer failed the handshake. Same as `self.code().is_fatal()`.
    pub fn is_fatal(&self) -> bool {
        self.code().is_fatal()
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::FrameTooShort(len) => write!(f, "frame length {len} is below the 5-byte header"),
            DecodeError::FrameTooLarge { len, max } => {
                write!(f, "frame length {len} exceeds the limit of {max}")
            }
            DecodeError::UnknownOpcode(op) => write!(f, "unknown opcode 0x{op:02x}"),
            DecodeError::Truncated { opcode } => write!(f, "payload of opcode 0x{opcode:02x} is truncated"),
            DecodeError::TrailingBytes { opcode } => {
                write!(f, "trailing bytes after opcode 0x{opcode:02x} payload")
            }
            DecodeError::EmptyName => f.write_str("lock name is empty"),
            DecodeError::NameTooLong { len, max } => {
                write!(f, "lock name is {len} bytes, the limit is {max}")
            }
            DecodeError::NameNotUtf8 => f.write_str("lock name is not valid UTF-8"),
            DecodeError::NameHasControl => f.write_str("lock name contains control characters"),
            DecodeError::TextNotUtf8 => f.write_str("text field is not valid UTF-8"),
            DecodeError::NonZeroFlags { opcode, flags } => {
                write!(f, "reserved flags 0x{flags:04x} of opcode 0x{opcode:02x} must be zero")
            }
            DecodeError::ZeroRequestId { opcode } => {
                write!(f, "request id 0 (opcode 0x{opcode:02x}) is reserved for the server")
            }
            DecodeError::BadMagic => f.write_str("HELLO does not start with the magic OFCR"),
            DecodeError::UnsupportedVersion(v) => write!(f, "protocol version {v} is not supported"),
            DecodeError::BadValue { opcode, field, value } => {
                write!(f, "{field} {value} is out of range in opcode 0x{opcode:02x}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}
