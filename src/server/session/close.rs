//! Why a connection ends: one list shared by the session (which decides the protocol's
//! reasons), the server (I/O reasons) and every counter of closes.

/// Declares `CloseReason` from one list of `Variant => "name"`, so that the enum, its
/// names and `ALL` (which STATS, /metrics and the `--stats` line iterate) cannot drift apart:
/// adding a close reason is one line here.
macro_rules! close_reasons {
    ($($variant:ident => $name:literal,)+) => {
        /// Why a connection was closed; counted in stats and logged.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum CloseReason {
            $($variant,)+
        }

        impl CloseReason {
            /// Every reason, in the order STATS and /metrics list them.
            pub(crate) const ALL: &'static [CloseReason] = &[$(CloseReason::$variant,)+];

            /// The snake_case name in logs, STATS keys and the /metrics `reason` label.
            pub fn as_str(self) -> &'static str {
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
    Kicked => "kicked",
    Revoked => "revoked",
    Goodbye => "goodbye",
    TakenOver => "taken_over",
    NotLeader => "not_leader",
}

impl CloseReason {
    /// Whether a close for this reason is the *loss* of the connection, which detaches a
    /// resumable session for its grace (PROTOCOL.md §6.14); the others end the session: the
    /// client said GOODBYE, an operator kicked it, the server stops, a grant was revoked from a
    /// client that cannot be told, or another connection took the session over. A cluster node that is not the leader
    /// (`NotLeader`) loses its clients: their sessions carry on at the leader.
    pub fn is_loss(self) -> bool {
        matches!(
            self,
            CloseReason::Eof
                | CloseReason::Error
                | CloseReason::Idle
                | CloseReason::Protocol
                | CloseReason::OutputOverflow
                | CloseReason::Auth
                | CloseReason::NotLeader
        )
    }

    /// How many reasons there are: the length of a counter array indexed by `index`.
    pub(crate) const COUNT: usize = CloseReason::ALL.len();

    /// This reason's slot in a `[u64; COUNT]` (variants are numbered in declaration order,
    /// the order of `ALL`).
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}
