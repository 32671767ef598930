//! The sans-IO session: one connection's protocol, from its first byte to its close, with no
//! socket and no clock (the model is quinn-proto's `Connection` beside its driver).
//!
//! The server hands it the bytes it has read and `now`; [`Session::next`] answers with one
//! [`Step`] per complete frame or line (a reply the session decided alone, a request for the
//! server to run against the lock table, an answered bad request, a close with its reason)
//! and how many bytes it used. The server stays free to interleave its own I/O between
//! steps (the output limit's flush, a listing ending the turn). [`Session::deadline`] says
//! when the connection next needs looking at (idle, authentication), [`Session::expired`]
//! whether it must go, and [`Session::encode`] turns a response into this connection's wire
//! form (a frame that fits `max_frame`, or a JSON line).
//!
//! What it owns: the phase machine (PROTOCOL.md §5), the JSON sniff and refusal policy (§7.1),
//! frame limits per phase, which decode errors are fatal (§2.4), the greeting (HELLO_OK),
//! authentication (§2.5) and the activity rule (only a complete frame or line is activity).

mod close;
mod fit;
pub(crate) mod json;
mod lines;
#[cfg(test)]
mod tests;

use log::debug;

use super::Config;
use crate::protocol::{op, split_frame, DecodeError, ErrorCode, Frame, HelloOk, Request, Response};
use crate::wheel::Tick;

pub use close::CloseReason;
pub use json::Scratch;

/// Before HELLO only a frame of exactly HELLO's size is plausible (its length field is 13; 17
/// bytes on the wire); anything larger is not an officer client, and refusing it early keeps a
/// stranger from making us buffer a body.
const HELLO_FRAME_LEN: u32 = 13;

/// Which protocol the connection speaks, decided by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing valid received yet: only HELLO (or, with compat, a `{` line) is accepted.
    AwaitHello,
    /// Greeted, but the server requires AUTH before anything but PING.
    AwaitAuth,
    Binary,
    /// The original officer's JSON lines (PROTOCOL.md §7).
    Json,
}

/// What the server does next for this connection.
#[derive(Debug)]
pub enum Step<'a> {
    /// Run this request against the lock table (or build the listing / STATS it asks for) and
    /// send what it answers under `rid`.
    Execute { rid: u32, request: Request<'a> },
    /// Send this answer, which the session decided alone (HELLO_OK, PONG, AUTH_OK, ...).
    Reply { rid: u32, response: Response },
    /// A request that cannot be served: answer it with this error (counted as a bad request);
    /// the connection goes on. `quiet`: logged by nobody (JSON lines, as always).
    Invalid { rid: u32, code: ErrorCode, message: String, quiet: bool },
    /// The connection ends: send `response` (request id 0, as every fatal ERROR) and close it
    /// for `reason`. `cause` says what to log.
    Close { reason: CloseReason, response: Response, cause: Cause },
    /// Complete input that asks for nothing (a blank line, `keep_alive`): activity only.
    Activity,
}

/// Why the session closes a connection, for the server's log line and counters.
#[derive(Debug)]
pub enum Cause {
    /// The bytes are not the protocol (a bad frame, a bad HELLO).
    Decode(DecodeError),
    /// A second HELLO: the connection is told and closed, without a warning.
    HelloTwice,
    /// AUTH with the wrong secret.
    AuthFailed,
    /// A JSON-lines client where that protocol is not allowed (counted as a bad request).
    JsonRefused(ErrorCode),
}

/// One step and what it consumed.
#[derive(Debug)]
pub struct Next<'a> {
    pub step: Step<'a>,
    /// Bytes of the input used (all of it for a close).
    pub used: usize,
    /// Counted as a request in STATS (every complete frame; every non-blank line).
    pub request: bool,
    /// Its answer walks the table (a listing, STATS): it ends the connection's turn.
    pub scans: bool,
}

/// Which deadline of a session passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// It did not authenticate in time.
    Auth,
    /// It sent no complete frame or line for `--max-idle`.
    Idle,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    phase: Phase,
    /// Never reused: shown in HELLO_OK and logs.
    serial: u64,
    /// Accepted on the `--compat-listen` listener: JSON lines are served without the secret.
    compat: bool,
    /// When the last complete frame or line arrived.
    last_active: Tick,
    /// Close the connection at this tick unless it has authenticated by then.
    auth_deadline: Option<Tick>,
    json: Option<json::JsonSession>,
    /// May KICK and REVOKE (PROTOCOL.md §6.12).
    admin: bool,
    /// Sent a LOCK_EXT, SESSION_OPEN or SESSION_RESUME: a client that knows the LOST notice
    /// (PROTOCOL.md §4.24; sessions came after it, and a resumed session may be told a loss of
    /// a grant its earlier connection took).
    speaks_v2: bool,
    /// Sent GOODBYE (§3.24): nothing after it is read, and the close that follows its answer
    /// ends the session rather than detaching it.
    goodbye: bool,
}

impl Session {
    /// A session accepted at `now`; `compat`: on the `--compat-listen` listener.
    pub fn new(serial: u64, compat: bool, now: Tick, config: &Config) -> Session {
        let auth_deadline =
            config.auth_secret.as_ref().map(|_| now + config.auth_timeout.as_millis() as Tick);
        Session {
            phase: Phase::AwaitHello,
            serial,
            compat,
            last_active: now,
            auth_deadline,
            json: None,
            admin: false,
            speaks_v2: false,
            goodbye: false,
        }
    }

    /// Gives the connection admin rights from the start: its peer is the server's own user
    /// on the UNIX socket.
    pub fn grant_admin(&mut self) {
        self.admin = true;
    }

    /// Whether a LOST notice can be sent to this connection: a binary one that has sent
    /// LOCK_EXT. Any other holder of a revoked grant is closed instead (PROTOCOL.md §6.12).
    pub fn understands_lost(&self) -> bool {
        self.speaks_v2 && self.phase == Phase::Binary
    }

    /// Whether the client said GOODBYE (PROTOCOL.md §3.24).
    pub fn said_goodbye(&self) -> bool {
        self.goodbye
    }

    /// Whether the connection may KICK and REVOKE.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    #[cfg(test)]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The earliest tick at which `expired` may turn true (idle or authentication).
    pub fn deadline(&self, config: &Config) -> Option<Tick> {
        [self.idle_deadline(config), self.auth_deadline].into_iter().flatten().min()
    }

    /// Which deadline has passed at `now`, the authentication one first.
    pub fn expired(&self, now: Tick, config: &Config) -> Option<Expiry> {
        if self.auth_deadline.is_some_and(|t| t <= now) {
            return Some(Expiry::Auth);
        }
        self.idle_deadline(config).filter(|t| *t <= now).map(|_| Expiry::Idle)
    }

    fn idle_deadline(&self, config: &Config) -> Option<Tick> {
        config.max_idle.map(|d| self.last_active + d.as_millis() as Tick)
    }

    /// The step for the complete frame or line at the front of `input`, or `None` when the
    /// input holds none yet. JSON requests borrow their names from `scratch`.
    #[inline]
    pub fn next<'a>(
        &mut self,
        input: &'a [u8],
        now: Tick,
        config: &Config,
        scratch: &'a mut Scratch,
    ) -> Option<Next<'a>> {
        if self.goodbye {
            // The server reads no request after GOODBYE (§3.24): its close is coming.
            return None;
        }
        match self.phase {
            // The original protocol: served, or refused with one JSON error line.
            Phase::AwaitHello if input.first() == Some(&b'{') => self.begin_json(input, now, config, scratch),
            Phase::Json => self.next_line(input, now, config, scratch),
            Phase::Binary => self.next_binary(input, now, config),
            Phase::AwaitHello | Phase::AwaitAuth => self.next_frame(input, now, config),
        }
    }

    /// A greeted binary connection's next frame. LOCK and UNLOCK take a short path (no
    /// operator check, no handshake match: neither applies to them); anything else, and any
    /// frame the short path does not accept, goes through `next_frame`, which decides it
    /// exactly as before.
    #[inline]
    fn next_binary<'a>(&mut self, input: &'a [u8], now: Tick, config: &Config) -> Option<Next<'a>> {
        match split_frame(input, config.max_frame) {
            Ok(None) => return None,
            Ok(Some((frame, used))) => {
                if let Some(request) = Request::decode_hot(&frame, config.max_name) {
                    // Activity, as in `next_frame`: a complete frame arrived.
                    self.last_active = now;
                    let rid = frame.request_id;
                    debug!("request conn={} request_id={rid} op=0x{:02x}", self.serial, frame.opcode);
                    return Some(Next {
                        step: Step::Execute { rid, request },
                        used,
                        request: true,
                        scans: false,
                    });
                }
            }
            Err(_) => {}
        }
        self.next_frame(input, now, config)
    }

    /// Appends `response` to `out` in this connection's form: one frame within `max_frame`,
    /// or the original's JSON line (nothing where the original sent nothing).
    pub fn encode(&self, request_id: u32, response: &Response, max_frame: u32, out: &mut Vec<u8>) {
        self.encode_about(request_id, None, response, max_frame, out)
    }

    /// `encode` for an answer about the lock `lock` (the lock table names it in its outputs):
    /// the JSON mode's replies carry the name, which the binary frames leave out.
    pub fn encode_about(
        &self,
        request_id: u32,
        lock: Option<&str>,
        response: &Response,
        max_frame: u32,
        out: &mut Vec<u8>,
    ) {
        match (&self.json, self.phase) {
            (Some(session), Phase::Json) => session.encode_reply(request_id, lock, response, out),
            _ => fit::encode_within(response, request_id, max_frame, out),
        }
    }

    #[inline]
    fn next_frame<'a>(&mut self, input: &'a [u8], now: Tick, config: &Config) -> Option<Next<'a>> {
        let max_frame = match self.phase {
            Phase::AwaitHello => HELLO_FRAME_LEN,
            Phase::AwaitAuth => config.pre_auth_max_frame,
            Phase::Binary | Phase::Json => config.max_frame,
        };
        match split_frame(input, max_frame) {
            Ok(None) => None,
            Ok(Some((frame, used))) => {
                // Only a complete frame is activity (PROTOCOL.md §2.5): a trickle of bytes
                // cannot keep a connection open past the idle limit.
                self.last_active = now;
                let step = self.on_frame(&frame, config);
                // Nothing after a close is served: it uses the rest of the input.
                let used = if matches!(step, Step::Close { .. }) { input.len() } else { used };
                Some(Next { step, used, request: true, scans: scans_the_table(frame.opcode) })
            }
            Err(e) => {
                let e = match (self.phase, e) {
                    (Phase::AwaitHello, DecodeError::FrameTooLarge { .. })
                    | (Phase::AwaitHello, DecodeError::FrameTooShort(_)) => DecodeError::BadMagic,
                    (_, e) => e,
                };
                Some(Next { step: fail(e), used: input.len(), request: false, scans: false })
            }
        }
    }

    fn on_frame<'a>(&mut self, frame: &Frame<'a>, config: &Config) -> Step<'a> {
        let rid = frame.request_id;
        // Without admin rights an operator's request is refused before anything else is
        // looked at, so it learns nothing, not even whether its payload names anything (§6.12).
        if self.phase == Phase::Binary && !self.admin && matches!(frame.opcode, op::REVOKE | op::KICK) {
            let what = if frame.opcode == op::KICK { "KICK" } else { "REVOKE" };
            let response = Response::error(ErrorCode::Forbidden, format!("{what} needs admin rights"));
            return Step::Reply { rid, response };
        }
        let decoded = Request::decode(frame, config.max_name);
        let request = match decoded {
            Ok(request) => request,
            Err(e) if e.is_fatal() => return fail(e),
            // Before HELLO any undecodable frame means the peer does not speak the protocol.
            Err(_) if self.phase == Phase::AwaitHello => return fail(DecodeError::BadMagic),
            Err(e) => return Step::Invalid { rid, code: e.code(), message: e.to_string(), quiet: false },
        };
        debug!("request conn={} request_id={rid} op=0x{:02x}", self.serial, frame.opcode);
        match request {
            Request::LockExt(_) | Request::SessionOpen(_) | Request::SessionResume(_) => {
                self.speaks_v2 = true
            }
            Request::Goodbye if self.phase == Phase::Binary => self.goodbye = true,
            _ => {}
        }
        match (self.phase, request) {
            (Phase::AwaitHello, Request::Hello(hello)) => self.greet(rid, hello.negotiated_version(), config),
            (Phase::AwaitHello, _) => fail(DecodeError::BadMagic),
            (Phase::AwaitAuth, Request::Auth(secret)) => self.authenticate(rid, secret, config),
            (_, Request::Ping(_)) => Step::Reply { rid, response: Response::Pong },
            (_, Request::Hello(_)) => Step::Close {
                reason: CloseReason::Protocol,
                response: Response::error(ErrorCode::BadHandshake, "HELLO was already received"),
                cause: Cause::HelloTwice,
            },
            (Phase::AwaitAuth, _) => {
                let response = Response::error(ErrorCode::AuthRequired, "authenticate with AUTH first");
                Step::Reply { rid, response }
            }
            // Without a configured secret there is nothing to check (PROTOCOL.md §2.5).
            (_, Request::Auth(_)) => Step::Reply { rid, response: Response::AuthOk },
            (_, Request::AdminAuth(secret)) => self.admin_authenticate(rid, secret, config),
            (_, request) => Step::Execute { rid, request },
        }
    }

    fn greet(&mut self, rid: u32, version: u16, config: &Config) -> Step<'static> {
        let auth_required = config.auth_secret.is_some();
        self.phase = if auth_required { Phase::AwaitAuth } else { Phase::Binary };
        let hello = HelloOk {
            version,
            auth_required,
            connection_id: self.serial,
            max_frame: config.max_frame,
            max_name: config.max_name,
            idle_timeout_ms: config.max_idle.map_or(0, |d| d.as_millis().min(u32::MAX as u128) as u32),
        };
        Step::Reply { rid, response: Response::HelloOk(hello) }
    }

    /// Checks an AUTH secret in constant time; one failure closes the connection.
    fn authenticate(&mut self, rid: u32, secret: &[u8], config: &Config) -> Step<'static> {
        let expected = config.auth_secret.as_deref().unwrap_or_default();
        if constant_time_eq(secret, expected) {
            self.phase = Phase::Binary;
            self.auth_deadline = None;
            return Step::Reply { rid, response: Response::AuthOk };
        }
        Step::Close {
            reason: CloseReason::Auth,
            response: Response::error(ErrorCode::AuthFailed, "authentication failed"),
            cause: Cause::AuthFailed,
        }
    }
}

impl Session {
    /// ADMIN_AUTH: the admin secret in constant time; a wrong one closes the connection as a
    /// wrong AUTH does, and a server without an admin secret refuses it (not fatal).
    fn admin_authenticate(&mut self, rid: u32, secret: &[u8], config: &Config) -> Step<'static> {
        let Some(expected) = config.admin_secret.as_deref() else {
            let response = Response::error(ErrorCode::Forbidden, "this server has no admin secret");
            return Step::Reply { rid, response };
        };
        if constant_time_eq(secret, expected) {
            self.admin = true;
            return Step::Reply { rid, response: Response::AuthOk };
        }
        Step::Close {
            reason: CloseReason::Auth,
            response: Response::error(ErrorCode::AuthFailed, "authentication failed"),
            cause: Cause::AuthFailed,
        }
    }
}

/// A protocol violation: an ERROR with the decode error's code and text, then the close.
fn fail(error: DecodeError) -> Step<'static> {
    let response = Response::error(error.code(), error.to_string());
    Step::Close { reason: CloseReason::Protocol, response, cause: Cause::Decode(error) }
}

/// Requests whose answer walks every lock or connection, or every lock of one connection (or
/// /proc): they count as a whole turn of the connection's budget, so a pipeline of them is
/// served one per turn of the loop, between everyone else's requests.
pub(crate) fn scans_the_table(opcode: u8) -> bool {
    matches!(
        opcode,
        op::LOCKS
            | op::CONNECTIONS
            | op::MY_LOCKS
            | op::MY_LOCKS_MATCHING
            | op::TOP
            | op::STATS
            | op::KICK
            | op::LOCKS_DETAIL
            | op::CONNECTIONS_DETAIL
            | op::SESSIONS
    )
}

/// Compares without an early exit, so the time taken does not reveal how much matched.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = (given.len() != expected.len()) as u8;
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    diff == 0
}
