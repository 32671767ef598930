//! A client of one cluster (`ClientBuilder::cluster`, docs/CLUSTER.md): the members it was
//! given, the leader it last reached, and which member to try next, without I/O or a clock.
//!
//! Only the leader serves clients; any other member answers HELLO with the fatal ERROR
//! `not_leader` (PROTOCOL.md §5) whose message is the leader's client address, or empty while
//! none is known. A [`Route`] turns those answers into the order of attempts: the last known
//! leader first, then the other members in the order given; a `not_leader` naming an address
//! is followed at once (at most [`MAX_REDIRECTS`] times in a row, so two members naming each
//! other cannot loop), anything else moves on to the next member, and only after every member
//! failed does the caller pause ([`Route::failed`]), so a cluster without a leader yet costs a
//! few attempts per back-off step, not a busy loop. The blocking and the async client connect
//! and resume with the same `Route`; each does its own I/O and keeps its own deadline.

use std::sync::Mutex;
use std::time::Duration;

use super::builder::Target;
use super::session::backoff;
use super::Error;
use crate::protocol::{ErrorCode, Response};

/// How many `not_leader` redirects are followed in a row before the next member is tried.
pub(crate) const MAX_REDIRECTS: u32 = 3;

/// The shortest time one attempt gets, however many members share the connect timeout.
pub(crate) const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// The members of one cluster and the leader last reached, shared by every connection (and
/// resume) of a client.
#[derive(Debug)]
pub(crate) struct Members {
    list: Vec<Target>,
    leader: Mutex<Option<Target>>,
}

impl Members {
    /// `list`: at least one member, in the order to try them.
    pub(crate) fn new(list: Vec<Target>) -> Members {
        Members { list, leader: Mutex::new(None) }
    }

    /// The members as given.
    #[cfg(test)]
    pub(crate) fn list(&self) -> &[Target] {
        &self.list
    }

    /// The leader last reached (or last named by a `not_leader`), if any.
    pub(crate) fn leader(&self) -> Option<Target> {
        self.leader.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Remembers `target` as the leader: the next connect or resume starts there.
    pub(crate) fn set_leader(&self, target: &Target) {
        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = Some(target.clone());
    }

    /// Notes a `not_leader` message seen on a live connection: the leader it names, if any,
    /// is where the resume that follows starts.
    pub(crate) fn heard_of_leader(&self, message: &str) {
        if let Some(target) = leader_named(message) {
            self.set_leader(&target);
        }
    }

    /// How long one attempt may take: the connect timeout shared by the members, so a member
    /// that drops packets (a dead machine) costs one share, not the whole timeout.
    pub(crate) fn attempt_timeout(&self, connect_timeout: Duration) -> Duration {
        let n = u32::try_from(self.list.len()).unwrap_or(u32::MAX).max(1);
        (connect_timeout / n).max(MIN_ATTEMPT).min(connect_timeout)
    }

    /// The attempts of one connect or resume, starting at the last known leader.
    pub(crate) fn route(&self) -> Route {
        let mut order = Vec::with_capacity(self.list.len() + 1);
        if let Some(leader) = self.leader() {
            order.push(leader);
        }
        for member in &self.list {
            if !order.contains(member) {
                order.push(member.clone());
            }
        }
        Route { order, next: 0, redirect: None, redirects: 0, round: 0 }
    }
}

/// The leader a `not_leader` message names (`host:port`), or `None` for an empty or
/// malformed one: a peer's bytes never make the client fail, it moves on to the next member.
pub(crate) fn leader_named(message: &str) -> Option<Target> {
    let message = message.trim();
    if message.is_empty() || message.starts_with('/') || message.starts_with('.') {
        // A leader is reached over TCP; a path here would be a server's mistake.
        return None;
    }
    super::shard_builder::parse_server(message).ok()
}

/// The leader's address if `e` is a `not_leader` refusal naming one; `Some(None)` for a
/// `not_leader` naming none; `None` for any other error.
fn not_leader(e: &Error) -> Option<Option<Target>> {
    (e.server_code() == Some(ErrorCode::NotLeader)).then(|| e.server_message().and_then(leader_named))
}

/// One connect's (or resume's) order of attempts; see the module's doc.
#[derive(Debug)]
pub(crate) struct Route {
    /// The last known leader, then the other members.
    order: Vec<Target>,
    /// The index in `order` of the next member to try.
    next: usize,
    /// A leader named by the last attempt's `not_leader`, tried before the next member.
    redirect: Option<Target>,
    /// Redirects followed in a row.
    redirects: u32,
    /// Rounds over every member that failed.
    round: u32,
}

impl Route {
    /// The target of the next attempt.
    pub(crate) fn next(&mut self) -> Target {
        if let Some(target) = self.redirect.take() {
            return target;
        }
        let target = self.order[self.next % self.order.len()].clone();
        self.next += 1;
        target
    }

    /// The attempt at `target` failed with `e`: `None` to try the next target at once (a
    /// redirect, or the next member of this round), `Some(pause)` when every member failed
    /// in this round (the pause grows with the rounds, as a resume's back-off).
    pub(crate) fn failed(&mut self, target: &Target, e: &Error) -> Option<Duration> {
        if let Some(Some(leader)) = not_leader(e) {
            if &leader != target && self.redirects < MAX_REDIRECTS {
                log::debug!("officer member {target} names the leader {leader}");
                self.redirects += 1;
                self.redirect = Some(leader);
                return None;
            }
        }
        self.redirects = 0;
        if self.next < self.order.len() {
            return None;
        }
        self.next = 0;
        let pause = backoff(self.round);
        self.round = self.round.saturating_add(1);
        Some(pause)
    }

    /// Rounds over every member that failed so far.
    #[cfg(test)]
    pub(crate) fn rounds(&self) -> u32 {
        self.round
    }
}

/// Whether `resp`, a frame with request id 0 that ends a link, is a failover of the cluster of
/// `members` rather than the end: a `not_leader` (the leader lost its lead; the leader it
/// names, if any, is tried first) or a SHUTDOWN of one member. A session resumes after it on
/// the leader. Without a cluster, nothing the server ends on purpose is resumed.
pub(crate) fn is_failover(members: Option<&Members>, resp: &Response) -> bool {
    let Some(members) = members else { return false };
    match resp {
        Response::Error { code: ErrorCode::NotLeader, message } => {
            members.heard_of_leader(message);
            true
        }
        Response::Shutdown { .. } => true,
        _ => false,
    }
}

/// Whether a failed attempt ends the whole connect at once: a refused secret or a protocol
/// this client cannot speak is the same on every member. Anything else (refused, timed out,
/// `not_leader`, shutting down, a full server) may pass on another member or a little later.
pub(crate) fn is_final(e: &Error) -> bool {
    matches!(e.server_code(), Some(ErrorCode::AuthFailed | ErrorCode::AuthRequired))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(port: u16) -> Target {
        Target::Tcp { host: "10.0.0.1".into(), port }
    }

    fn members(ports: &[u16]) -> Members {
        Members::new(ports.iter().map(|&p| t(p)).collect())
    }

    fn refused() -> Error {
        Error::io(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"))
    }

    fn redirect(to: &str) -> Error {
        Error::server(ErrorCode::NotLeader, to)
    }

    #[test]
    fn members_are_tried_in_order_then_the_round_pauses() {
        let m = members(&[1, 2, 3]);
        let mut r = m.route();
        for port in [1, 2, 3] {
            let target = r.next();
            assert_eq!(target, t(port));
            let pause = r.failed(&target, &refused());
            assert_eq!(pause.is_some(), port == 3, "port {port}");
        }
        assert_eq!(r.rounds(), 1);
        assert_eq!(r.next(), t(1));
        // The second round's pause is longer than the first's.
        r.failed(&t(1), &refused());
        let second = r.next();
        r.failed(&second, &refused());
        let target = r.next();
        assert!(r.failed(&target, &refused()).unwrap() > backoff(0));
    }

    #[test]
    fn the_last_known_leader_comes_first() {
        let m = members(&[1, 2, 3]);
        m.set_leader(&t(3));
        let mut r = m.route();
        assert_eq!([r.next(), r.next(), r.next()], [t(3), t(1), t(2)]);
        // A leader outside the list (another name for a member) is tried first as well.
        m.heard_of_leader("10.0.0.9:7");
        let mut r = m.route();
        assert_eq!(r.next(), Target::Tcp { host: "10.0.0.9".into(), port: 7 });
        assert_eq!(r.next(), t(1));
    }

    #[test]
    fn a_named_leader_is_tried_next_and_an_empty_name_moves_on() {
        let m = members(&[1, 2, 3]);
        let mut r = m.route();
        let first = r.next();
        assert_eq!(r.failed(&first, &redirect("10.0.0.1:3")), None);
        assert_eq!(r.next(), t(3));
        let mut r = m.route();
        let first = r.next();
        assert_eq!(r.failed(&first, &redirect("")), None);
        assert_eq!(r.next(), t(2));
        // Garbage in the message is no address: the next member.
        let target = t(2);
        assert_eq!(r.failed(&target, &redirect("not an address:xx")), None);
        assert_eq!(r.next(), t(3));
    }

    #[test]
    fn redirects_in_a_loop_are_bounded() {
        let m = members(&[1, 2]);
        let mut r = m.route();
        let mut tried = Vec::new();
        let mut pause = None;
        for _ in 0..20 {
            let target = r.next();
            tried.push(target.clone());
            // 1 names 2 and 2 names 1.
            let other = if target == t(1) { "10.0.0.1:2" } else { "10.0.0.1:1" };
            pause = r.failed(&target, &redirect(other));
            if pause.is_some() {
                break;
            }
        }
        assert!(pause.is_some(), "no pause after {tried:?}");
        // Member 1 and three redirects, then member 2 and three redirects.
        assert_eq!(tried.len(), 2 * (1 + MAX_REDIRECTS as usize), "{tried:?}");
    }

    #[test]
    fn a_member_naming_itself_is_not_followed() {
        let m = members(&[1, 2]);
        let mut r = m.route();
        let first = r.next();
        assert_eq!(r.failed(&first, &redirect("10.0.0.1:1")), None);
        assert_eq!(r.next(), t(2));
    }

    #[test]
    fn attempts_share_the_connect_timeout() {
        let m = members(&[1, 2, 3, 4]);
        assert_eq!(m.attempt_timeout(Duration::from_secs(4)), Duration::from_secs(1));
        assert_eq!(m.attempt_timeout(Duration::from_millis(200)), MIN_ATTEMPT);
        assert_eq!(m.attempt_timeout(Duration::from_millis(50)), Duration::from_millis(50));
    }

    #[test]
    fn not_leader_and_shutdown_are_failovers_only_in_a_cluster() {
        let m = members(&[1, 2]);
        let moved = Response::Error { code: ErrorCode::NotLeader, message: "10.0.0.1:2".into() };
        assert!(!is_failover(None, &moved));
        assert!(is_failover(Some(&m), &moved));
        assert_eq!(m.leader(), Some(t(2)));
        assert!(is_failover(Some(&m), &Response::Shutdown { message: String::new() }));
        let other = Response::Error { code: ErrorCode::LimitExceeded, message: String::new() };
        assert!(!is_failover(Some(&m), &other));
    }

    #[test]
    fn only_auth_failures_end_a_connect_at_once() {
        assert!(is_final(&Error::server(ErrorCode::AuthFailed, "")));
        assert!(!is_final(&redirect("")));
        assert!(!is_final(&refused()));
        assert!(!is_final(&Error::server(ErrorCode::ShuttingDown, "")));
    }
}
