//! JSON-lines compatibility mode for clients of the original Ruby officer (PROTOCOL.md §7).
//!
//! A connection whose first byte is `{` speaks the original protocol: one JSON object per
//! `\n`-terminated line. Each line becomes a `Request` for the same dispatcher the binary
//! protocol uses, under an internal request id, so both kinds of client share one lock table.
//! Replies are turned back into the original's JSON, key for key (a `token` only when the lock
//! command asked or `--json-tokens` is on); the replies the original never sent (a duplicate
//! lock while waiting, a wait cancelled by unlock) are dropped here. Where the mode is not
//! allowed (`--no-compat`, or a secret on a listener other than `--compat-listen`) the client
//! is refused with one JSON error line (PROTOCOL.md §7.1).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use log::warn;

use super::conn::{CloseReason, Conn, Phase};
use super::Server;
use crate::protocol::{validate_name, DecodeError, ErrorCode, ListRequest, LockRequest, Request, Response};
use crate::wheel::Tick;

/// Per-connection state of the JSON mode.
#[derive(Debug)]
pub(crate) struct JsonSession {
    next_id: u32,
    /// `--json-tokens`: every grant reply carries its token, asked for or not.
    tokens_always: bool,
    /// Lock/unlock requests awaiting their reply, by internal request id. At most one entry
    /// per request the lock table still owes an answer, so this is bounded like the table.
    pending: HashMap<u32, Pending>,
}

/// What a reply needs that the lock table's `Response` does not carry.
#[derive(Debug)]
struct Pending {
    name: Box<str>,
    /// The lock command said `"token": true`.
    token: bool,
}

impl JsonSession {
    fn new(tokens_always: bool) -> JsonSession {
        JsonSession { next_id: 0, tokens_always, pending: HashMap::new() }
    }

    fn next_request_id(&mut self) -> u32 {
        // Id 0 is reserved for server notices.
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }
}

/// A request line that cannot be served: the error code and message of its reply.
type LineError = (ErrorCode, String);

/// One parsed request line.
struct Command<'a> {
    request: Request<'a>,
    /// `"token": true` in a lock command.
    token: bool,
}

impl Server {
    /// The first byte of a connection was `{`: serve it in JSON mode, or refuse it with one
    /// JSON error line and close it where the original protocol is not allowed (`--no-compat`,
    /// or a secret is set and this is not the compat listener). Returns the bytes consumed.
    pub(super) fn begin_json(&mut self, key: usize, data: &[u8], now: Tick, budget: &mut usize) -> usize {
        let refusal = self.json_refusal(key);
        let tokens_always = self.config.json_tokens;
        let Some(conn) = self.conns.get_mut(key) else { return data.len() };
        conn.phase = Phase::Json;
        conn.json = Some(JsonSession::new(tokens_always));
        let Some((code, message, reason)) = refusal else {
            // No AUTH will come: the compat listener's JSON clients are served without one.
            conn.auth_deadline = None;
            return self.process_json(key, data, now, budget);
        };
        warn!("refusing JSON-lines client conn={} peer={} code={}", conn.serial, conn.label, code.as_str());
        self.stats.bad_requests += 1;
        self.send(key, crate::protocol::SHUTDOWN_REQUEST_ID, &Response::error(code, message));
        self.close(key, reason, now);
        data.len()
    }

    fn json_refusal(&self, key: usize) -> Option<(ErrorCode, &'static str, CloseReason)> {
        let compat_conn = self.conns.get(key).is_some_and(|c| c.compat);
        if !self.config.compat {
            let message = "this server does not serve the original JSON-lines protocol (--no-compat)";
            return Some((ErrorCode::BadHandshake, message, CloseReason::Protocol));
        }
        if self.config.auth_secret.is_some() && !compat_conn {
            let message = if self.config.compat_listen.is_some() {
                "this port requires authentication, which the original JSON-lines protocol cannot give: \
                 connect to the server's --compat-listen address instead"
            } else {
                "this port requires authentication, which the original JSON-lines protocol cannot give, \
                 and the server has no --compat-listen address for such clients"
            };
            return Some((ErrorCode::AuthRequired, message, CloseReason::Auth));
        }
        None
    }

    /// Serves complete lines at the front of `data`; returns the bytes consumed.
    pub(super) fn process_json(&mut self, key: usize, data: &[u8], now: Tick, budget: &mut usize) -> usize {
        let mut pos = 0;
        while *budget > 0 {
            if !self.within_output_limit(key) {
                return data.len();
            }
            let rest = &data[pos..];
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                if rest.len() > self.config.max_frame as usize {
                    let e = DecodeError::FrameTooLarge { len: rest.len() as u32, max: self.config.max_frame };
                    self.fail(key, &e, now);
                    return data.len();
                }
                break;
            };
            pos += end + 1;
            *budget -= 1;
            if let Some(conn) = self.conns.get_mut(key) {
                conn.last_active = now;
            }
            if end > self.config.max_frame as usize {
                let e = DecodeError::FrameTooLarge { len: end as u32, max: self.config.max_frame };
                self.fail(key, &e, now);
                return data.len();
            }
            let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
            if !line.iter().all(u8::is_ascii_whitespace) {
                self.stats.requests += 1;
                if self.json_line(key, line, now) || self.holds_back(key) {
                    // A listing walks the whole table: it ends this connection's turn; so does
                    // a reset still releasing holds (its later lines wait for its reply).
                    *budget = 0;
                }
            }
        }
        pos
    }

    /// Serves one line; true when it was a listing (a scan of the whole table).
    fn json_line(&mut self, key: usize, line: &[u8], now: Tick) -> bool {
        let value: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                self.json_error(key, (ErrorCode::Malformed, format!("invalid JSON: {e}")));
                return false;
            }
        };
        let Some(conn) = self.conns.get_mut(key) else { return false };
        let Some(session) = conn.json.as_mut() else { return false };
        let rid = session.next_request_id();
        let Command { request, token } = match parse_command(&value, self.config.max_name) {
            Ok(Some(command)) => command,
            Ok(None) => return false, // keep_alive: activity only, no reply
            Err(error) => {
                self.json_error(key, error);
                return false;
            }
        };
        if let Request::Lock(LockRequest { name, .. }) | Request::Unlock(name) = request {
            session.pending.insert(rid, Pending { name: name.into(), token });
        }
        let heavy = super::dispatch::scans_the_table(request.opcode());
        self.execute(key, rid, request, now);
        heavy
    }

    fn json_error(&mut self, key: usize, (code, message): LineError) {
        self.stats.bad_requests += 1;
        self.send(key, 0, &Response::error(code, message));
    }
}

/// Turns one JSON object into a request; `Ok(None)` for `keep_alive`.
fn parse_command(value: &Value, max_name: u32) -> Result<Option<Command<'_>>, LineError> {
    let malformed = |message: &str| (ErrorCode::Malformed, message.to_owned());
    let obj = value.as_object().ok_or_else(|| malformed("request must be a JSON object"))?;
    let command =
        obj.get("command").and_then(Value::as_str).ok_or_else(|| malformed("missing \"command\""))?;
    let everything = ListRequest { prefix: "", max: u32::MAX };
    let request = match command {
        "lock" => {
            let lock = LockRequest {
                name: name_field(obj, max_name)?,
                timeout_ms: timeout_field(obj).map_err(malformed)?,
                queue_max: queue_max_field(obj).map_err(malformed)?,
            };
            let token = token_field(obj).map_err(malformed)?;
            return Ok(Some(Command { request: Request::Lock(lock), token }));
        }
        "unlock" => Request::Unlock(name_field(obj, max_name)?),
        "reset" => Request::Reset,
        "locks" => Request::Locks(everything),
        "connections" => Request::Connections(everything),
        "my_locks" => Request::MyLocks,
        "keep_alive" => return Ok(None),
        other => return Err((ErrorCode::Malformed, format!("unknown command {other:?}"))),
    };
    Ok(Some(Command { request, token: false }))
}

/// A missing or non-string `name` is a malformed request; a string that breaks the name
/// rules (PROTOCOL.md §2.3) is `bad_name`, as in the binary protocol.
fn name_field(obj: &Map<String, Value>, max_name: u32) -> Result<&str, LineError> {
    let name = obj.get("name").and_then(Value::as_str);
    let name = name.ok_or_else(|| (ErrorCode::Malformed, "missing string \"name\"".to_owned()))?;
    validate_name(name.as_bytes(), max_name, false).map_err(|e| (e.code(), e.to_string()))
}

/// Seconds as a non-negative number (fractions allowed); absent or null waits forever.
fn timeout_field(obj: &Map<String, Value>) -> Result<Option<u32>, &'static str> {
    match obj.get("timeout") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(secs) if secs >= 0.0 && secs.is_finite() => {
                Ok(Some((secs * 1000.0).round().min((u32::MAX - 1) as f64) as u32))
            }
            _ => Err("\"timeout\" must be a non-negative number of seconds or null"),
        },
    }
}

fn queue_max_field(obj: &Map<String, Value>) -> Result<Option<u32>, &'static str> {
    match obj.get("queue_max") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) => Ok(Some(n.min(u32::MAX as u64) as u32)),
            None => Err("\"queue_max\" must be a non-negative integer or null"),
        },
    }
}

/// `"token": true` asks for the fencing token in the grant reply (an officer extension).
fn token_field(obj: &Map<String, Value>) -> Result<bool, &'static str> {
    match obj.get("token") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err("\"token\" must be true, false or null"),
    }
}

/// Appends the original's JSON reply for `response`, or nothing where it sent nothing.
pub(super) fn encode_reply(conn: &mut Conn, request_id: u32, response: &Response) {
    let Some(session) = conn.json.as_mut() else { return };
    let pending = session.pending.remove(&request_id);
    let token = session.tokens_always || pending.as_ref().is_some_and(|p| p.token);
    let name = pending.as_ref().map_or("", |p| &p.name);
    if let Some(value) = reply_value(response, name, token) {
        push_line(&value, &mut conn.outbuf);
    }
}

/// Appends one reply line that belongs to no request (a refusal before any session exists).
pub(super) fn write_line(response: &Response, out: &mut Vec<u8>) {
    if let Some(value) = reply_value(response, "", false) {
        push_line(&value, out);
    }
}

fn push_line(value: &Value, out: &mut Vec<u8>) {
    if serde_json::to_writer(&mut *out, value).is_ok() {
        out.push(b'\n');
    }
}

/// The original's reply object, key for key (PROTOCOL.md §7.4); `token` only when asked for.
fn reply_value(response: &Response, name: &str, token: bool) -> Option<Value> {
    let grant = |result: &str, t: u64| {
        let mut reply = json!({"result": result, "name": name});
        if token {
            reply["token"] = json!(t);
        }
        reply
    };
    let value = match response {
        Response::Acquired { token } => grant("acquired", *token),
        Response::AlreadyAcquired { token } => grant("already_acquired", *token),
        Response::TimedOut { queue } => json!({"result": "timed_out", "name": name, "queue": queue}),
        Response::QueueMaxed { queue } => json!({"result": "queue_maxed", "name": name, "queue": queue}),
        Response::Released => json!({"result": "released", "name": name}),
        Response::ReleaseFailed => json!({"result": "release_failed", "name": name}),
        Response::ResetOk => json!({"result": "reset_succeeded"}),
        Response::Locks { locks, .. } => {
            let map: Map<String, Value> = locks.iter().map(|l| (l.name.clone(), json!(l.queue))).collect();
            json!({"result": "locks", "value": map})
        }
        Response::Connections { connections, .. } => {
            // The original listed only connections that had taken part in locking; one that
            // holds and awaits nothing is left out, so a bare client does not show up.
            let map: Map<String, Value> = connections
                .iter()
                .filter(|c| !c.held.is_empty() || !c.waiting.is_empty())
                .map(|c| (c.label.clone(), json!(c.held.iter().chain(&c.waiting).collect::<Vec<_>>())))
                .collect();
            json!({"result": "connections", "value": map})
        }
        Response::MyLocks { held, waiting } => {
            json!({"result": "my_locks", "value": held.iter().chain(waiting).collect::<Vec<_>>()})
        }
        Response::Error { code, message } => {
            json!({"result": "error", "code": code.as_str(), "message": message})
        }
        Response::Shutdown { message } => {
            json!({"result": "error", "code": "shutting_down", "message": message})
        }
        // The original answered neither a duplicate wait nor a wait ended by its own unlock.
        Response::AlreadyWaiting | Response::Cancelled => return None,
        Response::HelloOk(_)
        | Response::Pong
        | Response::Stats(_)
        | Response::AuthOk
        | Response::Top { .. }
        | Response::MyLocksMatching { .. } => return None,
        // Lock model v2 answers and notices: a JSON client never asked for one (§7, §8).
        Response::Downgraded
        | Response::Renewed { .. }
        | Response::Checked { .. }
        | Response::Lost { .. }
        | Response::Contended { .. }
        | Response::Revoked { .. }
        | Response::Kicked
        | Response::LocksDetail { .. }
        | Response::ConnectionsDetail { .. } => return None,
    };
    Some(value)
}
