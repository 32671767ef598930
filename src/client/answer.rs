//! What the server's answers mean, without I/O: shared by the blocking [`Client`](super::Client)
//! and the async client, so both give the same results and errors for the same answers.
//!
//! - Per request: the LOCK request for a name and options, and each answer turned into the
//!   caller's result, with names outside the client's namespace left out of listings.
//! - Per connection: request ids, the set of held locks kept from answers ([`Track`]), and the
//!   reason a frame with request id 0 gives for ending the connection.

use std::collections::BTreeSet;

use super::builder::Config;
use super::{Acquired, Error, Listing, LockOptions, MyLocks, MyLocksListing, Result, Stats, Top};
use crate::protocol::{
    ConnectionInfo, LockInfo, LockRequest, Request, Response, TopEntry, SHUTDOWN_REQUEST_ID,
};

/// What the reader must record when the answer to a request arrives.
#[derive(Debug)]
pub(crate) enum Track {
    None,
    /// LOCK of this full name: ACQUIRED / ALREADY_ACQUIRED mean it is held.
    Lock(String),
    /// UNLOCK of this full name: RELEASED means it is no longer held.
    Unlock(String),
    /// RESET: RESET_OK means nothing is held.
    Reset,
}

/// What an answer does to the set of held locks (see [`Track::effect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    Keep,
    /// The tracked name is now held.
    Insert,
    /// The tracked name is no longer held.
    Remove,
    /// Nothing is held.
    Clear,
}

impl Track {
    /// What the answer `resp` to the request tracked by `self` does to the held set: the one
    /// statement of these rules, which both clients apply to their own set.
    pub(crate) fn effect(&self, resp: &Response) -> Effect {
        match (self, resp) {
            (Track::Lock(_), Response::Acquired { .. } | Response::AlreadyAcquired { .. }) => Effect::Insert,
            (Track::Unlock(_), Response::Released) => Effect::Remove,
            (Track::Reset, Response::ResetOk) => Effect::Clear,
            // The answer form of LOST: the grant is gone as surely as by the notice.
            (Track::Unlock(_), Response::Lost { .. }) => Effect::Remove,
            _ => Effect::Keep,
        }
    }

    /// The full name tracked, for a LOCK or UNLOCK.
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            Track::Lock(name) | Track::Unlock(name) => Some(name),
            Track::None | Track::Reset => None,
        }
    }

    /// Updates `held` (full names) for the answer `resp` to the request tracked by `self`.
    pub(crate) fn record(&self, held: &mut BTreeSet<String>, resp: &Response) {
        match (self.effect(resp), self.name()) {
            (Effect::Insert, Some(name)) => {
                held.insert(name.to_owned());
            }
            (Effect::Remove, Some(name)) => {
                held.remove(name);
            }
            (Effect::Clear, _) => held.clear(),
            _ => {}
        }
    }
}

/// A fresh request id after `*next`: never 0 (reserved for the server) and never one for which
/// `in_use` is true (a request still waiting for its answer).
pub(crate) fn alloc_id(next: &mut u32, in_use: impl Fn(u32) -> bool) -> u32 {
    loop {
        let id = *next;
        *next = next.wrapping_add(1);
        if id != SHUTDOWN_REQUEST_ID && !in_use(id) {
            return id;
        }
    }
}

/// Why the server ends the connection with `resp`, a frame sent with request id 0.
pub(crate) fn unsolicited_reason(resp: Response) -> String {
    match resp {
        Response::Shutdown { message } if message.is_empty() => "the server is shutting down".to_owned(),
        Response::Shutdown { message } => format!("the server is shutting down: {message}"),
        Response::Error { code, message } => format!("the server closed the connection: {code}: {message}"),
        other => format!("unexpected frame 0x{:02x} with request id 0", other.opcode()),
    }
}

/// The error for an answer that does not fit the request.
pub(crate) fn unexpected(resp: &Response, request: &str) -> Error {
    Error::protocol(format!("unexpected answer (opcode 0x{:02x}) to {request}", resp.opcode()))
}

/// An ERROR answer as the caller's error; any other answer passes.
pub(crate) fn refused(resp: Response) -> Result<Response> {
    match resp {
        Response::Error { code, message } => Err(Error::server(code, message)),
        resp => Ok(resp),
    }
}

/// The LOCK request for the full name `full`.
pub(crate) fn lock_request<'a>(full: &'a str, opts: &LockOptions) -> Request<'a> {
    // What LOCK can say goes as LOCK, so an exclusive lock is the same bytes as always and
    // works with every server; anything more is LOCK_EXT (PROTOCOL.md §3.12).
    if opts.is_v1() {
        Request::Lock(LockRequest {
            name: full,
            timeout_ms: opts.timeout_ms(),
            queue_max: opts.queue_max_wire(),
        })
    } else {
        Request::LockExt(opts.ext_request(full))
    }
}

/// The answer to LOCK of `name` (as the caller named it).
pub(crate) fn lock(name: &str, resp: Response) -> Result<Acquired> {
    let acquired = |token, already| Acquired { name: name.to_owned(), token, already };
    match resp {
        Response::Acquired { token } => Ok(acquired(token, false)),
        Response::AlreadyAcquired { token } => Ok(acquired(token, true)),
        Response::TimedOut { queue } => Err(Error::lock_timeout(name, queue)),
        Response::QueueMaxed { queue } => Err(Error::queue_maxed(name, queue)),
        Response::AlreadyWaiting => Err(Error::already_waiting(name)),
        Response::Cancelled => Err(Error::cancelled(name)),
        other => Err(unexpected(&other, "LOCK")),
    }
}

/// The answer to UNLOCK of `name`.
pub(crate) fn unlock(name: &str, resp: Response) -> Result<()> {
    match resp {
        Response::Released => Ok(()),
        Response::ReleaseFailed => Err(Error::not_held(name)),
        // The answer form of LOST (PROTOCOL.md §4.24): the server ended the grant already.
        Response::Lost { token, reason, .. } => Err(Error::grant_lost(name, token, reason)),
        other => Err(unexpected(&other, "UNLOCK")),
    }
}

/// The answer to RESET.
pub(crate) fn reset(resp: Response) -> Result<()> {
    match resp {
        Response::ResetOk => Ok(()),
        other => Err(unexpected(&other, "RESET")),
    }
}

/// The answer to PING.
pub(crate) fn pong(resp: Response) -> Result<()> {
    match resp {
        Response::Pong => Ok(()),
        other => Err(unexpected(&other, "PING")),
    }
}

/// The answer to LOCKS: locks inside the namespace, without it.
pub(crate) fn locks(config: &Config, resp: Response) -> Result<Listing<LockInfo>> {
    match resp {
        Response::Locks { locks, truncated } => {
            let items = locks
                .into_iter()
                .filter_map(|l| {
                    Some(LockInfo { name: config.short_name(&l.name)?.to_owned(), queue: l.queue })
                })
                .collect();
            Ok(Listing { items, truncated })
        }
        other => Err(unexpected(&other, "LOCKS")),
    }
}

/// The answer to CONNECTIONS: every connection, showing only names inside the namespace.
pub(crate) fn connections(config: &Config, resp: Response) -> Result<Listing<ConnectionInfo>> {
    match resp {
        Response::Connections { connections, truncated } => {
            let items = connections
                .into_iter()
                .map(|c| ConnectionInfo {
                    label: c.label,
                    held: strip_all(config, c.held),
                    waiting: strip_all(config, c.waiting),
                })
                .collect();
            Ok(Listing { items, truncated })
        }
        other => Err(unexpected(&other, "CONNECTIONS")),
    }
}

/// The answer to MY_LOCKS.
pub(crate) fn my_locks(config: &Config, resp: Response) -> Result<MyLocks> {
    match resp {
        Response::MyLocks { held, waiting } => {
            Ok(MyLocks { held: strip_all(config, held), waiting: strip_all(config, waiting) })
        }
        other => Err(unexpected(&other, "MY_LOCKS")),
    }
}

/// The answer to MY_LOCKS_MATCHING.
pub(crate) fn my_locks_matching(config: &Config, resp: Response) -> Result<MyLocksListing> {
    match resp {
        Response::MyLocksMatching { held, waiting, truncated } => Ok(MyLocksListing {
            held: strip_all(config, held),
            waiting: strip_all(config, waiting),
            truncated,
        }),
        other => Err(unexpected(&other, "MY_LOCKS_MATCHING")),
    }
}

/// The answer to STATS.
pub(crate) fn stats(resp: Response) -> Result<Stats> {
    match resp {
        Response::Stats(entries) => Ok(Stats { entries }),
        other => Err(unexpected(&other, "STATS")),
    }
}

/// The answer to TOP: entries inside the namespace, without it.
pub(crate) fn top(config: &Config, resp: Response) -> Result<Top> {
    match resp {
        Response::Top { longest_held, deepest_queues } => {
            let inside = |entries: Vec<TopEntry>| -> Vec<TopEntry> {
                entries
                    .into_iter()
                    .filter_map(|e| Some(TopEntry { name: config.short_name(&e.name)?.to_owned(), ..e }))
                    .collect()
            };
            Ok(Top { longest_held: inside(longest_held), deepest_queues: inside(deepest_queues) })
        }
        other => Err(unexpected(&other, "TOP")),
    }
}

/// Names inside the namespace, without it.
fn strip_all(config: &Config, names: Vec<String>) -> Vec<String> {
    names.iter().filter_map(|n| config.short_name(n)).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_skip_zero_and_ids_in_use() {
        let mut next = u32::MAX;
        assert_eq!(alloc_id(&mut next, |id| id == 1), u32::MAX);
        assert_eq!(alloc_id(&mut next, |id| id == 1), 2);
    }

    #[test]
    fn held_locks_follow_the_answers() {
        let mut held = BTreeSet::new();
        Track::Lock("a".into()).record(&mut held, &Response::Acquired { token: 1 });
        Track::Lock("b".into()).record(&mut held, &Response::AlreadyAcquired { token: 2 });
        Track::Lock("c".into()).record(&mut held, &Response::TimedOut { queue: vec![] });
        assert_eq!(held.iter().map(String::as_str).collect::<Vec<_>>(), ["a", "b"]);
        Track::Unlock("a".into()).record(&mut held, &Response::ReleaseFailed);
        assert!(held.contains("a"));
        Track::Unlock("a".into()).record(&mut held, &Response::Released);
        assert!(!held.contains("a"));
        Track::Reset.record(&mut held, &Response::ResetOk);
        assert!(held.is_empty());
    }
}
