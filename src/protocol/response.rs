//! Responses, server to client (PROTOCOL.md §4). Responses own their data: the server builds
//! them rarely with strings (listings, queues) and the client keeps them.

use super::detail::{connection_detail, lock_detail, put_connection_detail, put_lock_detail};
use super::frame::{FRAME_HEADER_LEN, LENGTH_PREFIX_LEN, MIN_FRAME_LEN};
use super::wire::{begin_frame, end_frame, put_str16, put_str_list, put_u16, put_u32, put_u64, Reader};
use super::{
    op, ConnectionDetail, DecodeError, DetachedSession, ErrorCode, Frame, LockDetail, LostReason, Resumed,
    SessionOk,
};

/// Request id of frames the server sends on its own (SHUTDOWN, and an ERROR that answers no
/// readable request); clients never use it (§2.4).
pub const SHUTDOWN_REQUEST_ID: u32 = 0;

/// HELLO_OK payload (§4.1), 24 bytes: version `u16`, flags `u16` (bit 0 = auth required),
/// connection id `u64`, max frame `u32`, max name `u32`, idle timeout ms `u32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloOk {
    pub version: u16,
    /// The client must send AUTH before anything but PING.
    pub auth_required: bool,
    /// The server's id for this connection, as shown in logs.
    pub connection_id: u64,
    pub max_frame: u32,
    pub max_name: u32,
    /// The server closes a connection silent for this long; 0 = never.
    pub idle_timeout_ms: u32,
}

/// One lock in a LOCKS listing (§4.12): name `str16`, queue `list`; the queue holds connection
/// labels, the holder first, then waiters in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    pub name: String,
    pub queue: Vec<String>,
}

/// One connection in a CONNECTIONS listing (§4.13): label `str16`, held `list`, waiting `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// `ip:port` for TCP peers, `unix:<id>` for UNIX-socket peers.
    pub label: String,
    pub held: Vec<String>,
    pub waiting: Vec<String>,
}

/// A decoded or to-be-encoded response. `str16` is a `u16` length then UTF-8 bytes; `list` is a
/// `u32` count then that many `str16` (§2.2). Variants without fields have an empty payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    HelloOk(HelloOk),
    /// §4.2.
    Pong,
    /// §4.3: token `u64`, the fencing token of this hold.
    Acquired {
        token: u64,
    },
    /// §4.4: token `u64` of the hold this connection already has.
    AlreadyAcquired {
        token: u64,
    },
    /// §4.5: a LOCK for a name this connection already waits for; the first request keeps waiting.
    AlreadyWaiting,
    /// §4.6: queue `list` of connection labels, holder first.
    TimedOut {
        queue: Vec<String>,
    },
    /// §4.7: queue `list` of connection labels, holder first.
    QueueMaxed {
        queue: Vec<String>,
    },
    /// §4.8: a waiting LOCK ended by UNLOCK or RESET of the same connection.
    Cancelled,
    /// §4.9.
    Released,
    /// §4.10.
    ReleaseFailed,
    /// §4.11.
    ResetOk,
    /// §4.12: truncated `u8`, count `u32`, then each `LockInfo`.
    Locks {
        locks: Vec<LockInfo>,
        truncated: bool,
    },
    /// §4.13: truncated `u8`, count `u32`, then each `ConnectionInfo`.
    Connections {
        connections: Vec<ConnectionInfo>,
        truncated: bool,
    },
    /// §4.14: held `list`, waiting `list` of lock names.
    MyLocks {
        held: Vec<String>,
        waiting: Vec<String>,
    },
    /// §4.20: truncated `u8`, held `list`, waiting `list` of lock names.
    MyLocksMatching {
        held: Vec<String>,
        waiting: Vec<String>,
        truncated: bool,
    },
    /// §4.15: count `u32`, then each key `str16` and value `u64`.
    Stats(Vec<(String, u64)>),
    /// §4.16.
    AuthOk,
    /// §4.19: the locks held longest and the locks with the most waiters.
    Top {
        longest_held: Vec<TopEntry>,
        deepest_queues: Vec<TopEntry>,
    },
    /// §4.17: message, UTF-8 to the end of the frame; sent with request id 0.
    Shutdown {
        message: String,
    },
    /// §4.18: code `u16`, message, UTF-8 to the end of the frame.
    Error {
        code: ErrorCode,
        message: String,
    },
    /// §4.21: the exclusive grant is shared now; it keeps its token. Empty.
    Downgraded,
    /// §4.22: ends_in_ms `u32`: the grant now ends this long from the answer, by lease or
    /// `max_hold_ms`, whichever comes first; `0xFFFFFFFF` (`None`): it has neither.
    Renewed {
        ends_in_ms: Option<u32>,
    },
    /// §4.23: held `u8`: the token holds the name now (clients treat any nonzero value as 1).
    Checked {
        held: bool,
    },
    /// §4.24: token `u64`, reason `u8`, name `str16`. Unsolicited (request id 0) when a grant
    /// ends without its holder's UNLOCK; or the answer to a request on a grant that was lost.
    Lost {
        token: u64,
        reason: LostReason,
        name: String,
    },
    /// §4.25: token `u64`, name `str16`; unsolicited (request id 0): a request started waiting
    /// behind this grant.
    Contended {
        token: u64,
        name: String,
    },
    /// §4.26: count `u32`, the grants REVOKE ended.
    Revoked {
        count: u32,
    },
    /// §4.27: KICK closed the connection. Empty.
    Kicked,
    /// §4.28: truncated `u8`, count `u32`, then each `LockDetail`.
    LocksDetail {
        locks: Vec<LockDetail>,
        truncated: bool,
    },
    /// §4.29: truncated `u8`, count `u32`, then each `ConnectionDetail`.
    ConnectionsDetail {
        connections: Vec<ConnectionDetail>,
        truncated: bool,
    },
    /// §4.30: session_id `u64`, secret 16 bytes, grace_ms `u32` (0: no session was opened).
    SessionOk(SessionOk),
    /// §4.31: grace_ms `u32`, replayed `u32`: that many replayed frames follow.
    Resumed(Resumed),
    /// §4.32: truncated `u8`, count `u32`, then each `DetachedSession`, soonest grace end first.
    Sessions {
        sessions: Vec<DetachedSession>,
        truncated: bool,
    },
}

impl Response {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error { code, message: message.into() }
    }

    /// True for the notices (LOST, CONTENDED, §4.24, §4.25): sent with request id 0
    /// (`NOTICE_REQUEST_ID`) they answer no request, and a client hands them to the grant they
    /// name instead of to a waiting caller. LOST with another id is an answer (§6.9).
    pub fn is_notice(&self, request_id: u32) -> bool {
        request_id == super::NOTICE_REQUEST_ID
            && matches!(self, Response::Lost { .. } | Response::Contended { .. })
    }

    pub fn opcode(&self) -> u8 {
        match self {
            Response::HelloOk(_) => op::HELLO_OK,
            Response::Pong => op::PONG,
            Response::Acquired { .. } => op::ACQUIRED,
            Response::AlreadyAcquired { .. } => op::ALREADY_ACQUIRED,
            Response::AlreadyWaiting => op::ALREADY_WAITING,
            Response::TimedOut { .. } => op::TIMED_OUT,
            Response::QueueMaxed { .. } => op::QUEUE_MAXED,
            Response::Cancelled => op::CANCELLED,
            Response::Released => op::RELEASED,
            Response::ReleaseFailed => op::RELEASE_FAILED,
            Response::ResetOk => op::RESET_OK,
            Response::Locks { .. } => op::LOCKS_LIST,
            Response::Connections { .. } => op::CONNECTIONS_LIST,
            Response::MyLocks { .. } => op::MY_LOCKS_LIST,
            Response::MyLocksMatching { .. } => op::MY_LOCKS_MATCHING_LIST,
            Response::Stats(_) => op::STATS_LIST,
            Response::AuthOk => op::AUTH_OK,
            Response::Top { .. } => op::TOP_LIST,
            Response::Shutdown { .. } => op::SHUTDOWN,
            Response::Error { .. } => op::ERROR,
            Response::Downgraded => op::DOWNGRADED,
            Response::Renewed { .. } => op::RENEWED,
            Response::Checked { .. } => op::CHECKED,
            Response::Lost { .. } => op::LOST,
            Response::Contended { .. } => op::CONTENDED,
            Response::Revoked { .. } => op::REVOKED,
            Response::Kicked => op::KICKED,
            Response::LocksDetail { .. } => op::LOCKS_DETAIL_LIST,
            Response::ConnectionsDetail { .. } => op::CONNECTIONS_DETAIL_LIST,
            Response::SessionOk(_) => op::SESSION_OK,
            Response::Resumed(_) => op::RESUMED,
            Response::Sessions { .. } => op::SESSIONS_LIST,
        }
    }

    /// Appends this response as one frame to `out`.
    pub fn encode(&self, request_id: u32, out: &mut Vec<u8>) {
        if self.encode_short(request_id, out) {
            return;
        }
        let start = begin_frame(out, self.opcode(), request_id);
        match self {
            Response::HelloOk(h) => {
                put_u16(out, h.version);
                put_u16(out, h.auth_required as u16);
                put_u64(out, h.connection_id);
                put_u32(out, h.max_frame);
                put_u32(out, h.max_name);
                put_u32(out, h.idle_timeout_ms);
            }
            Response::Acquired { token } | Response::AlreadyAcquired { token } => put_u64(out, *token),
            Response::TimedOut { queue } | Response::QueueMaxed { queue } => put_str_list(out, queue),
            Response::Locks { locks, truncated } => {
                out.push(*truncated as u8);
                put_u32(out, locks.len() as u32);
                for lock in locks {
                    put_str16(out, &lock.name);
                    put_str_list(out, &lock.queue);
                }
            }
            Response::Connections { connections, truncated } => {
                out.push(*truncated as u8);
                put_u32(out, connections.len() as u32);
                for conn in connections {
                    put_str16(out, &conn.label);
                    put_str_list(out, &conn.held);
                    put_str_list(out, &conn.waiting);
                }
            }
            Response::MyLocks { held, waiting } => {
                put_str_list(out, held);
                put_str_list(out, waiting);
            }
            Response::MyLocksMatching { held, waiting, truncated } => {
                out.push(*truncated as u8);
                put_str_list(out, held);
                put_str_list(out, waiting);
            }
            Response::Stats(entries) => {
                put_u32(out, entries.len() as u32);
                for (key, value) in entries {
                    put_str16(out, key);
                    put_u64(out, *value);
                }
            }
            Response::Top { longest_held, deepest_queues } => {
                put_top_list(out, longest_held);
                put_top_list(out, deepest_queues);
            }
            Response::Shutdown { message } => out.extend_from_slice(message.as_bytes()),
            Response::Error { code, message } => {
                put_u16(out, *code as u16);
                out.extend_from_slice(message.as_bytes());
            }
            Response::Renewed { ends_in_ms } => put_u32(out, ends_in_ms.unwrap_or(u32::MAX)),
            Response::Checked { held } => out.push(*held as u8),
            Response::Lost { token, reason, name } => {
                put_u64(out, *token);
                out.push(reason.to_u8());
                put_str16(out, name);
            }
            Response::Contended { token, name } => {
                put_u64(out, *token);
                put_str16(out, name);
            }
            Response::Revoked { count } => put_u32(out, *count),
            Response::LocksDetail { locks, truncated } => {
                out.push(*truncated as u8);
                put_u32(out, locks.len() as u32);
                for lock in locks {
                    put_lock_detail(out, lock);
                }
            }
            Response::ConnectionsDetail { connections, truncated } => {
                out.push(*truncated as u8);
                put_u32(out, connections.len() as u32);
                for conn in connections {
                    put_connection_detail(out, conn);
                }
            }
            Response::SessionOk(ok) => ok.encode(out),
            Response::Resumed(resumed) => resumed.encode(out),
            Response::Sessions { sessions, truncated } => {
                out.push(*truncated as u8);
                put_u32(out, sessions.len() as u32);
                for session in sessions {
                    session.encode(out);
                }
            }
            Response::Pong
            | Response::Downgraded
            | Response::Kicked
            | Response::AlreadyWaiting
            | Response::Cancelled
            | Response::Released
            | Response::ReleaseFailed
            | Response::ResetOk
            | Response::AuthOk => {}
        }
        end_frame(out, start);
    }

    /// Appends the frame of a response whose payload is empty or one token (ACQUIRED, RELEASED,
    /// PONG: most of what the server sends) in one copy of its finished bytes, instead of a
    /// header, a payload and a back-patched length. False, writing nothing, for the others.
    #[inline]
    pub(crate) fn encode_short(&self, request_id: u32, out: &mut Vec<u8>) -> bool {
        let token = match self {
            Response::Acquired { token } | Response::AlreadyAcquired { token } => Some(*token),
            Response::Pong
            | Response::Downgraded
            | Response::Kicked
            | Response::AlreadyWaiting
            | Response::Cancelled
            | Response::Released
            | Response::ReleaseFailed
            | Response::ResetOk
            | Response::AuthOk => None,
            _ => return false,
        };
        // Length prefix, opcode, request id, then the token if there is one (§2.1).
        let mut frame = [0u8; FRAME_HEADER_LEN + 8];
        let len = if token.is_some() { MIN_FRAME_LEN + 8 } else { MIN_FRAME_LEN };
        frame[..4].copy_from_slice(&len.to_be_bytes());
        frame[4] = self.opcode();
        frame[5..9].copy_from_slice(&request_id.to_be_bytes());
        frame[9..].copy_from_slice(&token.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&frame[..LENGTH_PREFIX_LEN + len as usize]);
        true
    }

    /// Decodes the payload of one response frame. HELLO_OK flag bits other than bit 0 are
    /// ignored, so a later server may define them (§8).
    pub fn decode(frame: &Frame<'_>) -> Result<Response, DecodeError> {
        let mut r = Reader::new(frame.payload, frame.opcode);
        let resp = match frame.opcode {
            op::HELLO_OK => {
                let version = r.u16()?;
                let flags = r.u16()?;
                Response::HelloOk(HelloOk {
                    version,
                    auth_required: flags & 1 != 0,
                    connection_id: r.u64()?,
                    max_frame: r.u32()?,
                    max_name: r.u32()?,
                    idle_timeout_ms: r.u32()?,
                })
            }
            op::PONG => Response::Pong,
            op::ACQUIRED => Response::Acquired { token: r.u64()? },
            op::ALREADY_ACQUIRED => Response::AlreadyAcquired { token: r.u64()? },
            op::ALREADY_WAITING => Response::AlreadyWaiting,
            op::TIMED_OUT => Response::TimedOut { queue: r.str_list()? },
            op::QUEUE_MAXED => Response::QueueMaxed { queue: r.str_list()? },
            op::CANCELLED => Response::Cancelled,
            op::RELEASED => Response::Released,
            op::RELEASE_FAILED => Response::ReleaseFailed,
            op::RESET_OK => Response::ResetOk,
            op::LOCKS_LIST => {
                let truncated = r.u8()? != 0;
                let count = r.u32()?;
                let mut locks = Vec::new();
                for _ in 0..count {
                    locks.push(LockInfo { name: r.str16()?, queue: r.str_list()? });
                }
                Response::Locks { locks, truncated }
            }
            op::CONNECTIONS_LIST => {
                let truncated = r.u8()? != 0;
                let count = r.u32()?;
                let mut connections = Vec::new();
                for _ in 0..count {
                    connections.push(ConnectionInfo {
                        label: r.str16()?,
                        held: r.str_list()?,
                        waiting: r.str_list()?,
                    });
                }
                Response::Connections { connections, truncated }
            }
            op::MY_LOCKS_LIST => Response::MyLocks { held: r.str_list()?, waiting: r.str_list()? },
            op::MY_LOCKS_MATCHING_LIST => {
                let truncated = r.u8()? != 0;
                Response::MyLocksMatching { held: r.str_list()?, waiting: r.str_list()?, truncated }
            }
            op::STATS_LIST => {
                let count = r.u32()?;
                let mut entries = Vec::new();
                for _ in 0..count {
                    entries.push((r.str16()?, r.u64()?));
                }
                Response::Stats(entries)
            }
            op::AUTH_OK => Response::AuthOk,
            op::TOP_LIST => {
                Response::Top { longest_held: top_list(&mut r)?, deepest_queues: top_list(&mut r)? }
            }
            op::SHUTDOWN => Response::Shutdown { message: text(r.rest())? },
            op::ERROR => {
                let code = ErrorCode::from_u16(r.u16()?);
                Response::Error { code, message: text(r.rest())? }
            }
            op::DOWNGRADED => Response::Downgraded,
            op::RENEWED => {
                let ms = r.u32()?;
                Response::Renewed { ends_in_ms: (ms != u32::MAX).then_some(ms) }
            }
            op::CHECKED => Response::Checked { held: r.u8()? != 0 },
            op::LOST => {
                Response::Lost { token: r.u64()?, reason: LostReason::from_u8(r.u8()?), name: r.str16()? }
            }
            op::CONTENDED => Response::Contended { token: r.u64()?, name: r.str16()? },
            op::REVOKED => Response::Revoked { count: r.u32()? },
            op::KICKED => Response::Kicked,
            op::LOCKS_DETAIL_LIST => {
                let truncated = r.u8()? != 0;
                let count = r.u32()?;
                let mut locks = Vec::new();
                for _ in 0..count {
                    locks.push(lock_detail(&mut r)?);
                }
                Response::LocksDetail { locks, truncated }
            }
            op::CONNECTIONS_DETAIL_LIST => {
                let truncated = r.u8()? != 0;
                let count = r.u32()?;
                let mut connections = Vec::new();
                for _ in 0..count {
                    connections.push(connection_detail(&mut r)?);
                }
                Response::ConnectionsDetail { connections, truncated }
            }
            op::SESSION_OK => Response::SessionOk(SessionOk::decode(&mut r)?),
            op::RESUMED => Response::Resumed(Resumed::decode(&mut r)?),
            op::SESSIONS_LIST => {
                let truncated = r.u8()? != 0;
                let count = r.u32()?;
                let mut sessions = Vec::new();
                for _ in 0..count {
                    sessions.push(DetachedSession::decode(&mut r)?);
                }
                Response::Sessions { sessions, truncated }
            }
            other => return Err(DecodeError::UnknownOpcode(other)),
        };
        r.finish()?;
        Ok(resp)
    }
}

/// One lock in a TOP_LIST (§4.19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopEntry {
    pub name: String,
    /// The holder's label (`ip:port` or `unix:N`).
    pub holder: String,
    /// How long the holder has held it, in milliseconds.
    pub held_ms: u64,
    /// Connections waiting behind the holder.
    pub waiters: u32,
}

fn put_top_list(out: &mut Vec<u8>, entries: &[TopEntry]) {
    put_u32(out, entries.len() as u32);
    for e in entries {
        put_str16(out, &e.name);
        put_str16(out, &e.holder);
        put_u64(out, e.held_ms);
        put_u32(out, e.waiters);
    }
}

fn top_list(r: &mut Reader<'_>) -> Result<Vec<TopEntry>, DecodeError> {
    let count = r.u32()?;
    let mut entries = Vec::new();
    for _ in 0..count {
        entries.push(TopEntry { name: r.str16()?, holder: r.str16()?, held_ms: r.u64()?, waiters: r.u32()? });
    }
    Ok(entries)
}

fn text(bytes: &[u8]) -> Result<String, DecodeError> {
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::TextNotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-copy frames are the frames the general writer builds field by field, and every
    /// other response is left to that writer.
    #[test]
    fn short_frames_are_byte_for_byte_the_general_ones() {
        let short = [
            (Response::Acquired { token: 0x0102_0304_0506_0708 }, Some(0x0102_0304_0506_0708)),
            (Response::AlreadyAcquired { token: 7 }, Some(7)),
            (Response::Pong, None),
            (Response::Downgraded, None),
            (Response::Kicked, None),
            (Response::AlreadyWaiting, None),
            (Response::Cancelled, None),
            (Response::Released, None),
            (Response::ReleaseFailed, None),
            (Response::ResetOk, None),
            (Response::AuthOk, None),
        ];
        for (response, token) in short {
            let mut expected = Vec::new();
            let start = begin_frame(&mut expected, response.opcode(), 0xA1B2_C3D4);
            if let Some(token) = token {
                put_u64(&mut expected, token);
            }
            end_frame(&mut expected, start);
            let mut out = vec![9];
            assert!(response.encode_short(0xA1B2_C3D4, &mut out), "{response:?}");
            assert_eq!(out[1..], expected[..], "{response:?}");
        }
        let mut out = Vec::new();
        assert!(!Response::Revoked { count: 1 }.encode_short(1, &mut out));
        assert!(!Response::error(ErrorCode::Malformed, "x").encode_short(1, &mut out));
        assert!(out.is_empty(), "nothing written for the others");
    }
}
