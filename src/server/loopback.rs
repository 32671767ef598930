//! An in-process host for sessions: the server's per-connection code (the session, the step
//! loop `dispatch::drive`, the table calls of `dispatch::run`) around a lock table, with no
//! socket, poll or clock. The connection fuzz target drives it with its bytes; doc-hidden,
//! not a stable API.
//!
//! What it leaves out is the server's I/O: output is kept whole (a peer that reads it all,
//! so the output limit never bites), and `turn` stands for one wake-up of the loop: it
//! serves each connection's buffered input within the per-turn budget, closes those that
//! hung up once their input is served, then runs one batch of releases, wait timeouts and
//! idle / authentication deadlines.

use slab::Slab;

use super::dispatch::{drive, run, Host, Ran};
use super::session::{CloseReason, Expiry, Scratch, Session};
use super::Config;
use std::collections::HashMap;

use crate::locks::{Command, LockTable, Output, SessionId};
use crate::protocol::{Request, Response};
use crate::wheel::Tick;

/// Sessions and a lock table, driven by hand.
#[doc(hidden)]
pub struct Loopback {
    config: Config,
    table: LockTable,
    outputs: Vec<Output>,
    peers: Slab<Peer>,
    /// Where the table's outputs go: each live session's peer.
    routes: HashMap<SessionId, usize>,
    scratch: Scratch,
    next_serial: u64,
    requests: u64,
    bad_requests: u64,
}

struct Peer {
    sid: SessionId,
    serial: u64,
    label: String,
    session: Session,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    closed: Option<CloseReason>,
    /// Its write side is shut: it closes once its input is served.
    hung_up: bool,
    /// Its last turn ended on the budget: input is left to serve.
    backlogged: bool,
}

impl Loopback {
    pub fn new(config: Config) -> Loopback {
        Loopback {
            table: LockTable::new(1, config.table),
            config,
            outputs: Vec::new(),
            peers: Slab::new(),
            routes: HashMap::new(),
            scratch: Scratch::default(),
            next_serial: 1,
            requests: 0,
            bad_requests: 0,
        }
    }

    /// A new connection, as the server accepts one; `label` stands for its `ip:port`.
    pub fn connect(&mut self, label: &str, now: Tick) -> usize {
        let entry = self.peers.vacant_entry();
        let key = entry.key();
        let sid = self.table.next_session();
        let serial = self.next_serial;
        self.next_serial += 1;
        entry.insert(Peer {
            sid,
            serial,
            label: label.to_owned(),
            session: Session::new(serial, false, now, &self.config),
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            closed: None,
            hung_up: false,
            backlogged: false,
        });
        self.routes.insert(sid, key);
        self.table.apply(now, &Command::Attach { session: sid, label: label.to_owned() }, &mut self.outputs);
        key
    }

    /// One read of `bytes`, served at once within one turn's budget (the rest waits).
    pub fn receive(&mut self, key: usize, bytes: &[u8], now: Tick) {
        let Some(peer) = self.peers.get_mut(key).filter(|p| p.closed.is_none()) else { return };
        peer.inbuf.extend_from_slice(bytes);
        self.serve(key, now);
    }

    /// The peer shut its write side: like the server reading EOF.
    pub fn hang_up(&mut self, key: usize) {
        if let Some(peer) = self.peers.get_mut(key) {
            peer.hung_up = true;
        }
    }

    /// One wake-up of the loop; returns whether work is left for another.
    pub fn turn(&mut self, now: Tick) -> bool {
        let keys: Vec<usize> = self.peers.iter().map(|(key, _)| key).collect();
        for &key in &keys {
            self.serve(key, now);
        }
        self.table.apply(now, &Command::Expire, &mut self.outputs);
        self.deliver();
        for key in keys {
            self.expire(key, now);
        }
        self.table.has_pending_releases()
            || self.peers.iter().any(|(_, p)| p.closed.is_none() && (p.backlogged || p.hung_up))
    }

    /// Takes what the connection was sent so far.
    pub fn take_output(&mut self, key: usize) -> Vec<u8> {
        self.peers.get_mut(key).map(|p| std::mem::take(&mut p.outbuf)).unwrap_or_default()
    }

    /// Why the connection was closed (the STATS / log name), or `None` while it is open.
    pub fn close_reason(&self, key: usize) -> Option<&'static str> {
        self.peers.get(key).and_then(|p| p.closed).map(CloseReason::as_str)
    }

    /// Forgets the connection, closing it first (as a peer that vanished) if it is open.
    pub fn remove(&mut self, key: usize, now: Tick) {
        Host::close(self, key, CloseReason::Eof, now);
        if self.peers.contains(key) {
            self.peers.remove(key);
        }
    }

    /// Requests and bad requests counted so far (the STATS keys of the same names).
    pub fn counts(&self) -> (u64, u64) {
        (self.requests, self.bad_requests)
    }

    fn serve(&mut self, key: usize, now: Tick) {
        let Some(peer) = self.peers.get_mut(key).filter(|p| p.closed.is_none()) else { return };
        peer.backlogged = false;
        if Host::holds_back(self, key) {
            self.backlog(key);
            return;
        }
        let input = std::mem::take(&mut self.peers[key].inbuf);
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut budget = self.config.requests_per_wakeup;
        let used = drive(self, key, &input, now, &mut budget, &mut scratch);
        self.scratch = scratch;
        let Some(peer) = self.peers.get_mut(key).filter(|p| p.closed.is_none()) else { return };
        peer.inbuf = input;
        peer.inbuf.drain(..used);
        if budget == 0 {
            self.backlog(key);
        } else if peer.hung_up {
            Host::close(self, key, CloseReason::Eof, now);
        }
    }

    fn backlog(&mut self, key: usize) {
        if let Some(peer) = self.peers.get_mut(key) {
            peer.backlogged = true;
        }
    }

    /// The server's idle timer, without the wheel: serve first, then decide.
    fn expire(&mut self, key: usize, now: Tick) {
        let Some(peer) = self.peers.get(key).filter(|p| p.closed.is_none()) else { return };
        match peer.session.expired(now, &self.config) {
            Some(Expiry::Auth) => return Host::close(self, key, CloseReason::Auth, now),
            Some(Expiry::Idle) => self.serve(key, now),
            None => return,
        }
        let Some(peer) = self.peers.get(key).filter(|p| p.closed.is_none()) else { return };
        if peer.session.expired(now, &self.config) == Some(Expiry::Idle) {
            Host::close(self, key, CloseReason::Idle, now);
        }
    }

    /// Routes the table's outputs to their connections; stale ids are dropped.
    fn deliver(&mut self) {
        let mut outputs = std::mem::take(&mut self.outputs);
        for out in outputs.drain(..) {
            let Some(&key) = self.routes.get(&out.session) else { continue };
            let live = self.peers.get(key).is_some_and(|p| p.sid == out.session && p.closed.is_none());
            if live {
                if let Some(peer) = self.peers.get_mut(key) {
                    let lock = out.lock.as_deref();
                    peer.session.encode_about(
                        out.request_id,
                        lock,
                        &out.response,
                        self.config.max_frame,
                        &mut peer.outbuf,
                    );
                }
            }
        }
        self.outputs = outputs;
    }
}

impl Host for Loopback {
    fn session(&mut self, key: usize) -> Option<(&mut Session, &Config)> {
        self.peers.get_mut(key).map(|p| (&mut p.session, &self.config))
    }

    fn may_serve(&mut self, key: usize) -> bool {
        self.peers.get(key).is_some_and(|p| p.closed.is_none())
    }

    fn holds_back(&self, key: usize) -> bool {
        self.table.has_pending_releases()
            && self.peers.get(key).is_some_and(|p| self.table.is_releasing(p.sid))
    }

    fn send(&mut self, key: usize, rid: u32, response: &Response) {
        if let Some(peer) = self.peers.get_mut(key) {
            peer.session.encode(rid, response, self.config.max_frame, &mut peer.outbuf);
        }
    }

    fn close(&mut self, key: usize, reason: CloseReason, now: Tick) {
        let Some(peer) = self.peers.get_mut(key).filter(|p| p.closed.is_none()) else { return };
        peer.closed = Some(reason);
        let sid = peer.sid;
        self.table.apply(now, &Command::Detach { session: sid }, &mut self.outputs);
        self.deliver();
        // The table never answers a detached session again.
        self.routes.remove(&sid);
    }

    fn execute(&mut self, key: usize, rid: u32, request: Request<'_>, now: Tick) {
        let Some(peer) = self.peers.get(key) else { return };
        let who = (peer.sid, peer.session.is_admin());
        match run(&mut self.table, now, who, rid, request, &self.config, &mut self.outputs) {
            Ran::Outputs => self.deliver(),
            Ran::Reply(response) => Host::send(self, key, rid, &response),
            // The server's STATS reports its own counters; these are the loopback's.
            Ran::Stats => {
                let entries = vec![
                    ("connections".to_owned(), self.peers.len() as u64),
                    ("requests".to_owned(), self.requests),
                    ("bad_requests".to_owned(), self.bad_requests),
                ];
                Host::send(self, key, rid, &Response::Stats(entries));
            }
        }
    }

    fn count(&mut self, bad: bool) {
        if bad {
            self.bad_requests += 1;
        } else {
            self.requests += 1;
        }
    }

    fn names(&self, key: usize) -> (u64, &str) {
        self.peers.get(key).map_or((0, ""), |p| (p.serial, p.label.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::Loopback;
    use crate::protocol::{split_frame, Hello, LockRequest, Request, Response};
    use crate::server::Config;

    fn frames(requests: &[(u32, Request<'_>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (rid, request) in requests {
            request.encode(*rid, &mut out);
        }
        out
    }

    fn responses(mut bytes: &[u8]) -> Vec<(u32, Response)> {
        let mut seen = Vec::new();
        while let Some((frame, used)) = split_frame(bytes, u32::MAX).unwrap() {
            seen.push((frame.request_id, Response::decode(&frame).unwrap()));
            bytes = &bytes[used..];
        }
        seen
    }

    #[test]
    fn a_hang_up_hands_the_lock_to_the_waiter_on_the_same_turn() {
        let mut lo = Loopback::new(Config::default());
        let lock = Request::Lock(LockRequest { name: "x", timeout_ms: None, queue_max: None });
        let hello = Request::Hello(Hello { version: 1 });
        let (a, b) = (lo.connect("a", 0), lo.connect("b", 0));
        lo.receive(a, &frames(&[(1, hello), (2, lock)]), 0);
        lo.receive(b, &frames(&[(1, hello), (2, lock)]), 0);
        assert!(matches!(
            responses(&lo.take_output(a))[..],
            [(1, Response::HelloOk(_)), (2, Response::Acquired { .. })]
        ));
        assert!(matches!(responses(&lo.take_output(b))[..], [(1, Response::HelloOk(_))]));
        lo.hang_up(a);
        assert!(!lo.turn(1), "no work left");
        assert_eq!(lo.close_reason(a), Some("eof"));
        assert!(matches!(responses(&lo.take_output(b))[..], [(2, Response::Acquired { .. })]));
        assert_eq!(lo.counts(), (4, 0));
    }
}
