//! JSON-lines compatibility mode for clients of the original Ruby officer (PROTOCOL.md §7).
//!
//! A connection whose first byte is `{` speaks the original protocol: one JSON object per
//! `\n`-terminated line. Each line becomes a `Request` for the same dispatcher the binary
//! protocol uses, under an internal request id, so both kinds of client share one lock table.
//! Replies are turned back into the original's JSON; the replies the original never sent
//! (a duplicate lock while waiting, a wait cancelled by unlock) are dropped here.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::conn::Conn;
use super::Server;
use crate::protocol::{validate_name, DecodeError, ErrorCode, ListRequest, LockRequest, Request, Response};
use crate::wheel::Tick;

/// Per-connection state of the JSON mode.
#[derive(Debug, Default)]
pub(crate) struct JsonSession {
    next_id: u32,
    /// Names of lock/unlock requests awaiting their reply, by internal request id.
    names: HashMap<u32, Box<str>>,
}

impl JsonSession {
    fn next_request_id(&mut self) -> u32 {
        // Id 0 is reserved for server notices.
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }
}

impl Server {
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
                self.json_error(key, format!("invalid JSON: {e}"));
                return false;
            }
        };
        let Some(conn) = self.conns.get_mut(key) else { return false };
        let Some(session) = conn.json.as_mut() else { return false };
        let rid = session.next_request_id();
        let request = match parse_command(&value, self.config.max_name) {
            Ok(Some(request)) => request,
            Ok(None) => return false, // keep_alive: activity only, no reply
            Err(message) => {
                self.json_error(key, message);
                return false;
            }
        };
        if let Request::Lock(LockRequest { name, .. }) | Request::Unlock(name) = request {
            session.names.insert(rid, name.into());
        }
        let heavy = super::dispatch::scans_the_table(request.opcode());
        self.execute(key, rid, request, now);
        heavy
    }

    fn json_error(&mut self, key: usize, message: String) {
        self.stats.bad_requests += 1;
        self.send(key, 0, &Response::error(ErrorCode::Malformed, message));
    }
}

/// Turns one JSON object into a request; `Ok(None)` for `keep_alive`.
fn parse_command(value: &Value, max_name: u32) -> Result<Option<Request<'_>>, String> {
    let obj = value.as_object().ok_or("request must be a JSON object")?;
    let command = obj.get("command").and_then(Value::as_str).ok_or("missing \"command\"")?;
    let everything = ListRequest { prefix: "", max: u32::MAX };
    let request = match command {
        "lock" => Request::Lock(LockRequest {
            name: name_field(obj, max_name)?,
            timeout_ms: timeout_field(obj)?,
            queue_max: queue_max_field(obj)?,
        }),
        "unlock" => Request::Unlock(name_field(obj, max_name)?),
        "reset" => Request::Reset,
        "locks" => Request::Locks(everything),
        "connections" => Request::Connections(everything),
        "my_locks" => Request::MyLocks,
        "keep_alive" => return Ok(None),
        other => return Err(format!("unknown command {other:?}")),
    };
    Ok(Some(request))
}

fn name_field(obj: &Map<String, Value>, max_name: u32) -> Result<&str, String> {
    let name = obj.get("name").and_then(Value::as_str).ok_or("missing string \"name\"")?;
    validate_name(name.as_bytes(), max_name, false).map_err(|e| e.to_string())
}

/// Seconds as a non-negative number (fractions allowed); absent or null waits forever.
fn timeout_field(obj: &Map<String, Value>) -> Result<Option<u32>, String> {
    match obj.get("timeout") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(secs) if secs >= 0.0 && secs.is_finite() => {
                Ok(Some((secs * 1000.0).round().min((u32::MAX - 1) as f64) as u32))
            }
            _ => Err("\"timeout\" must be a non-negative number of seconds or null".into()),
        },
    }
}

fn queue_max_field(obj: &Map<String, Value>) -> Result<Option<u32>, String> {
    match obj.get("queue_max") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) => Ok(Some(n.min(u32::MAX as u64) as u32)),
            None => Err("\"queue_max\" must be a non-negative integer or null".into()),
        },
    }
}

/// Appends the original's JSON reply for `response`, or nothing where it sent nothing.
pub(super) fn encode_reply(conn: &mut Conn, request_id: u32, response: &Response) {
    let Some(session) = conn.json.as_mut() else { return };
    let name = session.names.remove(&request_id);
    let name = name.as_deref().unwrap_or("");
    let value = match response {
        Response::Acquired { token } => json!({"result": "acquired", "name": name, "token": token}),
        Response::AlreadyAcquired { token } => {
            json!({"result": "already_acquired", "name": name, "token": token})
        }
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
            let map: Map<String, Value> = connections
                .iter()
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
        Response::AlreadyWaiting | Response::Cancelled => return,
        Response::HelloOk(_)
        | Response::Pong
        | Response::Stats(_)
        | Response::AuthOk
        | Response::Top { .. } => return,
    };
    if serde_json::to_writer(&mut conn.outbuf, &value).is_ok() {
        conn.outbuf.push(b'\n');
    }
}
