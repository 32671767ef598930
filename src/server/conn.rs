//! One client connection: its socket, buffers, protocol phase and idle bookkeeping.

use crate::locks::SessionId;
use crate::wheel::{Tick, TimerHandle};

use super::net::Stream;

/// The server's own name for a connection, for its idle wheel: slab slots are reused, so it
/// carries a generation and a stale key never matches a later connection in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnKey {
    pub slot: u32,
    pub generation: u32,
}

/// Which protocol the connection speaks, decided by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Nothing valid received yet: only HELLO (or, with compat, a `{` line) is accepted.
    AwaitHello,
    /// Greeted, but the server requires AUTH before anything but PING.
    AwaitAuth,
    Binary,
    /// The original officer's JSON lines (PROTOCOL.md §7).
    Json,
}

/// Declares `CloseReason` from one list of `Variant => "name"`, so that the enum, its
/// names and `ALL` (which STATS, /metrics and the `--stats` line iterate) cannot drift apart:
/// adding a close reason is one line here.
macro_rules! close_reasons {
    ($($variant:ident => $name:literal,)+) => {
        /// Why a connection was closed; counted in stats and logged.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum CloseReason {
            $($variant,)+
        }

        impl CloseReason {
            /// Every reason, in the order STATS and /metrics list them.
            pub(crate) const ALL: &'static [CloseReason] = &[$(CloseReason::$variant,)+];

            /// The snake_case name in logs, STATS keys and the /metrics `reason` label.
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $(CloseReason::$variant => $name,)+
                }
            }
        }
    };
}

close_reasons! {
    Eof => "eof",
    Error => "error",
    Idle => "idle",
    Protocol => "protocol",
    OutputOverflow => "output_overflow",
    Auth => "auth",
    Shutdown => "shutdown",
}

impl CloseReason {
    /// How many reasons there are: the length of a counter array indexed by `index`.
    pub(crate) const COUNT: usize = CloseReason::ALL.len();

    /// This reason's slot in a `[u64; COUNT]` (variants are numbered in declaration order,
    /// the order of `ALL`).
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

pub(crate) struct Conn {
    pub stream: Stream,
    pub id: ConnKey,
    /// Its session in the lock table, which routes the table's outputs back here.
    pub session: SessionId,
    /// Never reused: shown in HELLO_OK and logs.
    pub serial: u64,
    pub label: String,
    pub phase: Phase,
    /// Bytes of an incomplete frame (or frames left over by the per-wake-up budget).
    pub inbuf: Vec<u8>,
    pub outbuf: Vec<u8>,
    /// Bytes of `outbuf` already written.
    pub out_pos: usize,
    pub last_active: Tick,
    /// Close the connection at this tick unless it has authenticated by then.
    pub auth_deadline: Option<Tick>,
    pub idle_timer: Option<TimerHandle>,
    /// Whether WRITABLE is part of the registered interest.
    pub want_write: bool,
    /// Queued in the dirty list for a flush this wake-up.
    pub dirty: bool,
    /// Queued in the backlog: input is left that no readiness event will announce again.
    pub backlogged: bool,
    pub closing: Option<CloseReason>,
    pub json: Option<super::json::JsonSession>,
    /// Accepted on the `--compat-listen` listener: JSON lines are served without the secret.
    pub compat: bool,
    /// Output was queued since the last housekeeping round: its buffer is kept.
    pub out_recent: bool,
}

impl Conn {
    pub(crate) fn new(
        stream: Stream,
        id: ConnKey,
        session: SessionId,
        serial: u64,
        label: String,
        now: Tick,
    ) -> Conn {
        Conn {
            stream,
            id,
            session,
            serial,
            label,
            phase: Phase::AwaitHello,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            out_pos: 0,
            last_active: now,
            auth_deadline: None,
            idle_timer: None,
            want_write: false,
            dirty: false,
            backlogged: false,
            closing: None,
            json: None,
            compat: false,
            out_recent: false,
        }
    }

    pub(crate) fn pending_output(&self) -> usize {
        self.outbuf.len() - self.out_pos
    }
}
