//! The table's refusals of the issue-13 requests, each with its error code (PROTOCOL.md §5)
//! in one place.

use crate::protocol::{ErrorCode, Response};

/// Why the table refuses a LOCK for what it asks, not for what is held or awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A semaphore request of 0 permits, of a limit of 0, or of more permits than the limit.
    BadPermits { count: u32, limit: u32 },
    /// The name is a read/write lock and the request is for permits, or the other way round, or
    /// the request names another semaphore limit than the name's users agreed on.
    KindMismatch { held_limit: u32, asked_limit: u32 },
    /// The session holds the name in another mode than it asks for, or a DOWNGRADE names a
    /// grant that is not exclusive.
    ModeConflict,
    /// A DOWNGRADE or RENEW names a grant (name and token) the session does not hold.
    NotHolder,
    /// A lock-delay above the server's maximum.
    LockDelayTooLong { asked: u32, max: u32 },
}

impl Refusal {
    pub fn response(self) -> Response {
        let (code, message) = match self {
            Refusal::BadPermits { count, limit } => (
                ErrorCode::BadValue,
                format!("{count} permits of a limit of {limit}: need 1 <= permits <= limit"),
            ),
            Refusal::KindMismatch { held_limit, asked_limit } => {
                (ErrorCode::LimitMismatch, format!("{} asked of {}", kind(asked_limit), kind(held_limit)))
            }
            Refusal::ModeConflict => {
                (ErrorCode::ModeConflict, "the lock is held by this connection in another mode".to_owned())
            }
            Refusal::NotHolder => (ErrorCode::NotHolder, "this connection holds no such grant".to_owned()),
            Refusal::LockDelayTooLong { asked, max } => {
                (ErrorCode::BadValue, format!("lock_delay_ms {asked} is above the server's maximum {max}"))
            }
        };
        Response::error(code, message)
    }
}

fn kind(limit: u32) -> String {
    if limit == 0 {
        "a read/write lock".to_owned()
    } else {
        format!("a semaphore of limit {limit}")
    }
}
