//! The JSON-lines codec of compatibility mode, for clients of the original Ruby officer
//! (PROTOCOL.md §7): one request line in, a `Request` out; one `Response` in, the original's
//! reply line out. It imports only `protocol` (and serde_json); the session frames the lines.
//!
//! Each line becomes a `Request` for the same dispatcher the binary protocol uses, under an
//! internal request id, so both kinds of client share one lock table. Replies are turned back
//! into the original's JSON, key for key (a `token` only when the lock command asked or
//! `--json-tokens` is on); the replies the original never sent (a duplicate lock while
//! waiting, a wait cancelled by unlock) are dropped here.
//!
//! Nothing is kept per request: the lock table names the lock in every answer about one, and
//! whether a lock command asked for its token is the low bit of its internal request id.

use serde_json::{json, Map, Value};

use crate::protocol::{validate_name, ErrorCode, ListRequest, LockRequest, Request, Response};

/// Where a JSON request line is parsed to: the requests a line yields borrow their names from
/// it. The server keeps one for all connections (each line is served before the next is read).
#[derive(Debug, Default)]
pub struct Scratch {
    value: Value,
}

/// Per-connection state of the JSON mode.
#[derive(Debug)]
pub(crate) struct JsonSession {
    next_id: u32,
    /// `--json-tokens`: every grant reply carries its token, asked for or not.
    tokens_always: bool,
}

/// The bit of an internal request id that says the lock command asked for its token.
const TOKEN_BIT: u32 = 1;

/// A request line that cannot be served: the error code and message of its reply.
pub(crate) type LineError = (ErrorCode, String);

/// What one non-blank request line asks for.
pub(crate) enum Parsed<'a> {
    Request {
        rid: u32,
        request: Request<'a>,
    },
    /// `keep_alive`: activity only, no reply.
    KeepAlive,
    /// Answered with an error line; the connection goes on.
    Invalid(LineError),
}

/// One parsed request line.
struct Command<'a> {
    request: Request<'a>,
    /// `"token": true` in a lock command.
    token: bool,
}

impl JsonSession {
    pub(crate) fn new(tokens_always: bool) -> JsonSession {
        JsonSession { next_id: 0, tokens_always }
    }

    /// The next internal request id: a serial above 0 (id 0 is reserved for server notices),
    /// shifted to make room for `TOKEN_BIT`.
    fn next_request_id(&mut self, token: bool) -> u32 {
        self.next_id = (self.next_id.wrapping_add(1) & (u32::MAX >> 1)).max(1);
        self.next_id << 1 | if token { TOKEN_BIT } else { 0 }
    }

    /// Parses one line (without its `\n`) into `scratch` and the request it asks for.
    pub(crate) fn parse<'a>(&mut self, line: &[u8], max_name: u32, scratch: &'a mut Scratch) -> Parsed<'a> {
        scratch.value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => return Parsed::Invalid((ErrorCode::Malformed, format!("invalid JSON: {e}"))),
        };
        let scratch: &'a Scratch = scratch;
        let Command { request, token } = match parse_command(&scratch.value, max_name) {
            Ok(Some(command)) => command,
            Ok(None) => return Parsed::KeepAlive,
            Err(error) => return Parsed::Invalid(error),
        };
        Parsed::Request { rid: self.next_request_id(token), request }
    }

    /// Appends the original's JSON reply for `response` to the request `request_id` about the
    /// lock `lock` (as the lock table names it), or nothing where the original sent nothing.
    pub(crate) fn encode_reply(
        &self,
        request_id: u32,
        lock: Option<&str>,
        response: &Response,
        out: &mut Vec<u8>,
    ) {
        let token = self.tokens_always || request_id & TOKEN_BIT != 0;
        if let Some(value) = reply_value(response, lock.unwrap_or(""), token) {
            push_line(&value, out);
        }
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

/// Appends one reply line that belongs to no request (a refusal before any session exists).
pub(crate) fn write_line(response: &Response, out: &mut Vec<u8>) {
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
        // Resumable sessions are binary-only (§6.14): a JSON connection never opens one.
        Response::SessionOk(_) | Response::Resumed(_) | Response::Sessions { .. } => return None,
    };
    Some(value)
}
