//! From bytes to the lock table: split frames, decode requests, route each one.

use log::{debug, warn};

use super::conn::{CloseReason, Phase};
use super::Server;
use crate::locks::{Command, LockOpts, Name};
use crate::protocol::{op, split_frame, DecodeError, ErrorCode, Frame, HelloOk, Request, Response};
use crate::wheel::Tick;

/// Before HELLO only a frame of exactly HELLO's size is plausible (its length field is 13; 17
/// bytes on the wire); anything larger is not an officer client, and refusing it early keeps a
/// stranger from making us buffer a body.
const HELLO_FRAME_LEN: u32 = 13;

impl Server {
    /// Serves the complete frames (or JSON lines) at the front of `data`, within `budget`
    /// requests. Returns how many bytes were consumed; the rest is an incomplete frame or
    /// frames left for the next wake-up.
    pub(super) fn process(&mut self, key: usize, data: &[u8], now: Tick, budget: &mut usize) -> usize {
        let Some(conn) = self.conns.get(key) else { return data.len() };
        match conn.phase {
            // The original protocol: served, or refused with one JSON error line (json.rs).
            Phase::AwaitHello if data.first() == Some(&b'{') => self.begin_json(key, data, now, budget),
            Phase::Json => self.process_json(key, data, now, budget),
            Phase::AwaitHello | Phase::AwaitAuth | Phase::Binary => {
                self.process_frames(key, data, now, budget)
            }
        }
    }

    fn process_frames(&mut self, key: usize, data: &[u8], now: Tick, budget: &mut usize) -> usize {
        let mut pos = 0;
        while *budget > 0 {
            if !self.within_output_limit(key) {
                return data.len();
            }
            let Some(conn) = self.conns.get(key).filter(|c| c.closing.is_none()) else { return data.len() };
            let max_frame = match conn.phase {
                Phase::AwaitHello => HELLO_FRAME_LEN,
                Phase::AwaitAuth => self.config.pre_auth_max_frame,
                Phase::Binary | Phase::Json => self.config.max_frame,
            };
            match split_frame(&data[pos..], max_frame) {
                Ok(None) => break,
                Ok(Some((frame, used))) => {
                    pos += used;
                    *budget -= 1;
                    // Only a complete frame is activity (PROTOCOL.md §2.5): a trickle of bytes
                    // cannot keep a connection open past the idle limit.
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.last_active = now;
                    }
                    self.stats.requests += 1;
                    self.dispatch(key, &frame, now);
                    if scans_the_table(frame.opcode) || self.holds_back(key) {
                        // One O(locks) answer per connection per turn: the rest of its input
                        // waits in the backlog while everyone else is served. A RESET still
                        // releasing holds its later requests back the same way.
                        *budget = 0;
                    }
                }
                Err(e) => {
                    let e = match (conn.phase, e) {
                        (Phase::AwaitHello, DecodeError::FrameTooLarge { .. })
                        | (Phase::AwaitHello, DecodeError::FrameTooShort(_)) => DecodeError::BadMagic,
                        (_, e) => e,
                    };
                    self.fail(key, &e, now);
                    return data.len();
                }
            }
        }
        pos
    }

    fn dispatch(&mut self, key: usize, frame: &Frame<'_>, now: Tick) {
        let Some(conn) = self.conns.get(key) else { return };
        let rid = frame.request_id;
        let phase = conn.phase;
        // Lock model v2 requests are decoded but not served yet: they get the answer they got
        // before they existed, so no client is granted less than it asked for (PROTOCOL.md §8).
        let decoded = if op::is_v2_request(frame.opcode) {
            Err(DecodeError::UnknownOpcode(frame.opcode))
        } else {
            Request::decode(frame, self.config.max_name)
        };
        let request = match decoded {
            Ok(request) => request,
            Err(e) if e.is_fatal() => return self.fail(key, &e, now),
            // Before HELLO any undecodable frame means the peer does not speak the protocol.
            Err(_) if phase == Phase::AwaitHello => return self.fail(key, &DecodeError::BadMagic, now),
            Err(e) => {
                warn!("bad request conn={} request_id={rid} error={e}", conn.serial);
                self.stats.bad_requests += 1;
                return self.send(key, rid, &Response::error(e.code(), e.to_string()));
            }
        };
        debug!("request conn={} request_id={rid} op=0x{:02x}", conn.serial, frame.opcode);
        match (phase, request) {
            (Phase::AwaitHello, Request::Hello(hello)) => self.greet(key, rid, hello.negotiated_version()),
            (Phase::AwaitHello, _) => self.fail(key, &DecodeError::BadMagic, now),
            (Phase::AwaitAuth, Request::Auth(secret)) => self.authenticate(key, rid, secret, now),
            (Phase::AwaitAuth, Request::Ping(_)) => self.send(key, rid, &Response::Pong),
            (Phase::AwaitAuth, Request::Hello(_)) => self.execute(key, rid, request, now),
            (Phase::AwaitAuth, _) => {
                let response = Response::error(ErrorCode::AuthRequired, "authenticate with AUTH first");
                self.send(key, rid, &response);
            }
            (_, request) => self.execute(key, rid, request, now),
        }
    }

    /// Runs one request of a greeted connection (binary or JSON).
    pub(super) fn execute(&mut self, key: usize, rid: u32, request: Request<'_>, now: Tick) {
        let Some(conn) = self.conns.get(key) else { return };
        let session = conn.session;
        let max_frame = self.config.max_frame;
        match request {
            Request::Hello(_) => {
                // Fatal, so it carries request id 0 like every ERROR that ends a connection.
                let response = Response::error(ErrorCode::BadHandshake, "HELLO was already received");
                self.send(key, crate::protocol::SHUTDOWN_REQUEST_ID, &response);
                self.close(key, CloseReason::Protocol, now);
            }
            Request::Ping(_) => self.send(key, rid, &Response::Pong),
            Request::Lock(lock) => {
                // Ticks are whole milliseconds rounded down, so the request may have arrived up
                // to a tick after `now`: one more tick guarantees a wait never ends early.
                let timeout_ms = lock.timeout_ms.map(|ms| if ms == 0 { 0 } else { ms.saturating_add(1) });
                let (name, queue_max) = (Name::from(lock.name), lock.queue_max);
                let cmd = Command::Lock {
                    session,
                    request_id: rid,
                    name,
                    timeout_ms,
                    queue_max,
                    opts: LockOpts::default(),
                };
                self.table.apply(now, &cmd, &mut self.outputs);
                self.deliver_outputs();
            }
            Request::Unlock(name) => {
                let cmd = Command::Unlock { session, request_id: rid, name: Name::from(name), token: None };
                self.table.apply(now, &cmd, &mut self.outputs);
                self.deliver_outputs();
            }
            Request::Reset => {
                self.table.apply(now, &Command::Reset { session, request_id: rid }, &mut self.outputs);
                self.deliver_outputs();
            }
            // Listings are built within one frame (JSON replies get the same bound on their
            // work), so each costs what it returns plus one pass over its candidates.
            Request::Locks(list) => {
                let response = self.table.locks_within(list.prefix, list.max, max_frame);
                self.send(key, rid, &response);
            }
            Request::Connections(list) => {
                let response = self.table.connections_within(list.prefix, list.max, max_frame);
                self.send(key, rid, &response);
            }
            Request::MyLocks => {
                let response = self.table.my_locks_within(session, max_frame);
                self.send(key, rid, &response);
            }
            Request::MyLocksMatching(list) => {
                let response = self.table.my_locks_matching(session, list.prefix, list.max, max_frame);
                self.send(key, rid, &response);
            }
            Request::Stats => {
                let response = Response::Stats(self.stats_entries(now));
                self.send(key, rid, &response);
            }
            Request::Top(max) => {
                let response = self.table.top_within(now, max, max_frame);
                self.send(key, rid, &response);
            }
            // Without a configured secret there is nothing to check (PROTOCOL.md §2.5).
            Request::Auth(_) => self.send(key, rid, &Response::AuthOk),
            // `dispatch` refuses these before decoding; refused here too, should one arrive.
            Request::LockExt(_)
            | Request::Downgrade(_)
            | Request::Renew(_)
            | Request::Check(_)
            | Request::UnlockToken(_)
            | Request::Revoke(_)
            | Request::Kick(_)
            | Request::AdminAuth(_)
            | Request::LocksDetail(_)
            | Request::ConnectionsDetail(_) => {
                let e = DecodeError::UnknownOpcode(request.opcode());
                self.send(key, rid, &Response::error(e.code(), e.to_string()));
            }
        }
    }

    fn greet(&mut self, key: usize, rid: u32, version: u16) {
        let auth_required = self.config.auth_secret.is_some();
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.phase = if auth_required { Phase::AwaitAuth } else { Phase::Binary };
        let hello = HelloOk {
            version,
            auth_required,
            connection_id: conn.serial,
            max_frame: self.config.max_frame,
            max_name: self.config.max_name,
            idle_timeout_ms: self.config.max_idle.map_or(0, |d| d.as_millis().min(u32::MAX as u128) as u32),
        };
        self.send(key, rid, &Response::HelloOk(hello));
    }
}

impl Server {
    /// Checks an AUTH secret in constant time; one failure closes the connection.
    fn authenticate(&mut self, key: usize, rid: u32, secret: &[u8], now: Tick) {
        let expected = self.config.auth_secret.as_deref().unwrap_or_default();
        if constant_time_eq(secret, expected) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.phase = Phase::Binary;
                conn.auth_deadline = None;
            }
            self.send(key, rid, &Response::AuthOk);
            return;
        }
        let (serial, peer) = self.conns.get(key).map_or((0, String::new()), |c| (c.serial, c.label.clone()));
        warn!("authentication failed conn={serial} peer={peer}");
        // Fatal, so it carries request id 0 like every ERROR that ends a connection (§2.4, §5).
        let response = Response::error(ErrorCode::AuthFailed, "authentication failed");
        self.send(key, crate::protocol::SHUTDOWN_REQUEST_ID, &response);
        self.close(key, CloseReason::Auth, now);
    }
}

/// Requests whose answer walks every lock or connection, or every lock of one connection (or
/// /proc): they count as a whole turn of the connection's budget, so a pipeline of them is
/// served one per turn of the loop, between everyone else's requests.
pub(super) fn scans_the_table(opcode: u8) -> bool {
    use crate::protocol::op;
    matches!(opcode, op::LOCKS | op::CONNECTIONS | op::MY_LOCKS | op::MY_LOCKS_MATCHING | op::TOP | op::STATS)
}

/// Compares without an early exit, so the time taken does not reveal how much matched.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = (given.len() != expected.len()) as u8;
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::{constant_time_eq, scans_the_table};
    use crate::protocol::op;

    #[test]
    fn every_listing_ends_the_connections_turn() {
        for opcode in [op::LOCKS, op::CONNECTIONS, op::MY_LOCKS, op::MY_LOCKS_MATCHING, op::TOP, op::STATS] {
            assert!(scans_the_table(opcode), "opcode 0x{opcode:02x}");
        }
        for opcode in [op::HELLO, op::PING, op::LOCK, op::UNLOCK, op::RESET, op::AUTH] {
            assert!(!scans_the_table(opcode), "opcode 0x{opcode:02x}");
        }
    }

    #[test]
    fn constant_time_eq_matches_only_equal_secrets() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret!", b"secret"));
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
