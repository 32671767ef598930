//! One client connection: its socket, buffers and place on the server's lists, beside its sans-IO
//! session (the protocol state, `session/`).

use crate::locks::SessionId;
use crate::wheel::TimerHandle;

use super::net::Stream;
use super::session::Session;

pub(crate) use super::session::CloseReason;

/// The server's own name for a connection, for its idle wheel: slab slots are reused, so it
/// carries a generation and a stale key never matches a later connection in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnKey {
    pub slot: u32,
    pub generation: u32,
}

pub(crate) struct Conn {
    pub stream: Stream,
    pub id: ConnKey,
    /// Its session in the lock table, which routes the table's outputs back here.
    pub sid: SessionId,
    /// Never reused: shown in HELLO_OK and logs.
    pub serial: u64,
    pub label: String,
    pub session: Session,
    /// Bytes of an incomplete frame (or frames left over by the per-wake-up budget).
    pub inbuf: Vec<u8>,
    pub outbuf: Vec<u8>,
    /// Bytes of `outbuf` already written.
    pub out_pos: usize,
    pub idle_timer: Option<TimerHandle>,
    /// Whether WRITABLE is part of the registered interest.
    pub want_write: bool,
    /// Queued in the dirty list for a flush this wake-up.
    pub dirty: bool,
    /// Queued in the backlog: input is left that no readiness event will announce again.
    pub backlogged: bool,
    pub closing: Option<CloseReason>,
    /// Output was queued since the last housekeeping round: its buffer is kept.
    pub out_recent: bool,
}

impl Conn {
    pub(crate) fn new(
        stream: Stream,
        id: ConnKey,
        sid: SessionId,
        serial: u64,
        label: String,
        session: Session,
    ) -> Conn {
        Conn {
            stream,
            id,
            sid,
            serial,
            label,
            session,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            out_pos: 0,
            idle_timer: None,
            want_write: false,
            dirty: false,
            backlogged: false,
            closing: None,
            out_recent: false,
        }
    }

    pub(crate) fn pending_output(&self) -> usize {
        self.outbuf.len() - self.out_pos
    }
}
