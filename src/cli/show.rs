//! `officer locks`, `connections`, `stats` and `ping`: one request each, printed as an aligned
//! table for people or as one JSON document for scripts (`--json`).

use std::io::Write;

use serde_json::{json, Map, Value};

use super::{CheckArgs, ConnectionsArgs, LocksArgs, PingArgs, StatsArgs};
use crate::client::{Client, ConnectionInfo, DetachedSession, Listing, LockDetail, LockInfo, Result, Stats};

pub(super) fn locks(args: LocksArgs) -> i32 {
    if args.detail {
        return locks_detail(&args);
    }
    if let Some(status) = super::shard::locks(&args) {
        return status;
    }
    query(
        &args.connect,
        |client| client.locks_matching(&args.prefix, args.max),
        |listing| {
            if args.json {
                return json_listing("locks", &listing, lock_json);
            }
            let rows = listing.iter().map(|l| {
                let (holder, waiters) = l.queue.split_first().map_or(("", &[][..]), |(h, w)| (h.as_str(), w));
                vec![l.name.clone(), holder.to_owned(), waiters.join(", ")]
            });
            table(&["NAME", "HOLDER", "WAITING"], rows, "no locks", listing.truncated)
        },
    )
}

/// `officer locks --detail`: LOCKS_DETAIL, one row per lock.
fn locks_detail(args: &LocksArgs) -> i32 {
    query(
        &args.connect,
        |client| client.locks_detail(&args.prefix, args.max),
        |listing| {
            if args.json {
                return json_listing("locks", &listing, lock_detail_json);
            }
            let rows = listing.iter().map(|l| {
                let holders: Vec<String> =
                    l.holders.iter().map(|h| format!("{} ({})", h.label, h.token)).collect();
                let waiters: Vec<String> = l.waiters.iter().map(|w| w.label.clone()).collect();
                vec![l.name.clone(), lock_kind(l), holders.join(", "), waiters.join(", ")]
            });
            table(&["NAME", "MODE", "HOLDERS (TOKEN)", "WAITING"], rows, "no locks", listing.truncated)
        },
    )
}

/// "exclusive", "shared" or "semaphore 2/5" (permits in use of the limit).
pub(super) fn lock_kind(lock: &LockDetail) -> String {
    match lock.holders.first() {
        _ if lock.limit > 0 => format!("semaphore {}/{}", lock.permits_in_use(), lock.limit),
        Some(h) => h.mode.as_str().to_owned(),
        None => "-".to_owned(),
    }
}

fn lock_detail_json(lock: &LockDetail) -> Value {
    let holders: Vec<Value> = lock
        .holders
        .iter()
        .map(|h| {
            json!({ "label": h.label, "mode": h.mode.as_str(), "permits": h.permits, "token": h.token,
                    "held_ms": h.held_ms, "ends_in_ms": h.ends_in_ms })
        })
        .collect();
    let waiters: Vec<Value> = lock
        .waiters
        .iter()
        .map(|w| json!({ "label": w.label, "mode": w.mode.as_str(), "permits": w.permits }))
        .collect();
    json!({ "name": lock.name, "limit": lock.limit, "permits_in_use": lock.permits_in_use(),
            "holders": holders, "waiters": waiters })
}

pub(super) fn connections(args: ConnectionsArgs) -> i32 {
    if args.detail {
        return connections_detail(&args);
    }
    if args.sessions {
        return detached_sessions(&args);
    }
    if let Some(status) = super::shard::connections(&args) {
        return status;
    }
    query(
        &args.connect,
        |client| client.connections_matching(&args.prefix, args.max),
        |listing| {
            if args.json {
                return json_listing("connections", &listing, connection_json);
            }
            let rows = listing.iter().map(|c| vec![c.label.clone(), c.held.join(", "), c.waiting.join(", ")]);
            table(&["CONNECTION", "HOLDS", "WAITS FOR"], rows, "no connections", listing.truncated)
        },
    )
}

/// `officer connections --detail`: CONNECTIONS_DETAIL, one row per connection.
fn connections_detail(args: &ConnectionsArgs) -> i32 {
    query(
        &args.connect,
        |client| client.connections_detail(&args.prefix, args.max),
        |listing| {
            if args.json {
                return json_listing("connections", &listing, connection_detail_json);
            }
            let rows = listing.iter().map(|c| {
                let held: Vec<String> = c
                    .held
                    .iter()
                    .map(|h| format!("{} {} ({})", h.name, grant_mode(h.mode, h.permits), h.token))
                    .collect();
                let waiting: Vec<String> = c
                    .waiting
                    .iter()
                    .map(|w| format!("{} {}", w.name, grant_mode(w.mode, w.permits)))
                    .collect();
                vec![c.label.clone(), c.connection_id.to_string(), held.join(", "), waiting.join(", ")]
            });
            table(
                &["CONNECTION", "ID", "HOLDS (MODE, TOKEN)", "WAITS FOR"],
                rows,
                "no connections",
                listing.truncated,
            )
        },
    )
}

/// `officer connections --sessions`: SESSIONS, one row per detached session.
fn detached_sessions(args: &ConnectionsArgs) -> i32 {
    query(
        &args.connect,
        |client| client.detached_sessions(args.max),
        |mut listing| {
            listing.items.retain(|s| s.label.starts_with(&args.prefix));
            if args.json {
                return json_listing("sessions", &listing, detached_json);
            }
            table(
                &["SESSION", "WAS", "HOLDS", "WAITS", "KEPT", "GRACE LEFT"],
                listing.iter().map(detached_row),
                "no detached sessions",
                listing.truncated,
            )
        },
    )
}

fn detached_row(s: &DetachedSession) -> Vec<String> {
    let grace = format!("{:.3} s", f64::from(s.grace_left_ms) / 1000.0);
    let counts = [s.held, s.waiting, s.kept].map(|n| n.to_string());
    let [held, waiting, kept] = counts;
    vec![s.session_id.to_string(), s.label.clone(), held, waiting, kept, grace]
}

fn detached_json(s: &DetachedSession) -> Value {
    json!({ "session_id": s.session_id, "label": s.label, "held": s.held, "waiting": s.waiting,
            "kept": s.kept, "grace_left_ms": s.grace_left_ms })
}

/// "exclusive", "shared" or "2 permits".
fn grant_mode(mode: crate::protocol::Mode, permits: u32) -> String {
    match mode {
        crate::protocol::Mode::Semaphore => format!("{permits} permits"),
        other => other.as_str().to_owned(),
    }
}

fn connection_detail_json(conn: &crate::protocol::ConnectionDetail) -> Value {
    let held: Vec<Value> = conn
        .held
        .iter()
        .map(|h| {
            json!({ "name": h.name, "mode": h.mode.as_str(), "permits": h.permits, "token": h.token,
                    "held_ms": h.held_ms, "ends_in_ms": h.ends_in_ms })
        })
        .collect();
    let waiting: Vec<Value> = conn
        .waiting
        .iter()
        .map(|w| json!({ "name": w.name, "mode": w.mode.as_str(), "permits": w.permits }))
        .collect();
    json!({ "label": conn.label, "connection_id": conn.connection_id, "held": held, "waiting": waiting })
}

pub(super) fn stats(args: StatsArgs) -> i32 {
    if let Some(status) = super::shard::stats(&args) {
        return status;
    }
    query(&args.connect, Client::stats, |stats: Stats| {
        let entries = stats.iter().filter(|(k, _)| k.starts_with(&args.prefix));
        if args.json {
            let map: Map<String, Value> = entries.map(|(k, v)| (k.to_owned(), json!(v))).collect();
            return Value::Object(map).to_string() + "\n";
        }
        let rows = entries.map(|(k, v)| vec![k.to_owned(), v.to_string()]);
        table(&["KEY", "VALUE"], rows, "no counters", false)
    })
}

pub(super) fn ping(args: PingArgs) -> i32 {
    if let Some(status) = super::shard::ping(&args) {
        return status;
    }
    let target = args.connect.describe();
    query(
        &args.connect,
        |client| {
            let mut rtts = Vec::new();
            for _ in 0..args.count {
                rtts.push(client.ping()?.as_secs_f64() * 1000.0);
            }
            Ok((client.server_info().connection_id, rtts))
        },
        |(connection_id, rtts)| {
            if args.json {
                let doc = json!({ "server": target, "connection_id": connection_id, "rtt_ms": rtts });
                return doc.to_string() + "\n";
            }
            rtts.iter()
                .map(|ms| format!("pong from {target} (connection {connection_id}): {ms:.3} ms\n"))
                .collect()
        },
    )
}

/// `officer check NAME TOKEN`: 0 when the token holds the name now, 1 when not (as `test`
/// answers), other statuses for errors; on a list of servers, asks the name's server.
pub(super) fn check(args: CheckArgs) -> i32 {
    let (client, _) = match args.connect.connect_for_name(&args.name) {
        Ok(found) => found,
        Err(code) => return code,
    };
    match client.check(&args.name, args.token) {
        Ok(held) => {
            if !args.quiet {
                let what = if held { "holds" } else { "does not hold" };
                println!("token {} {what} lock {}", args.token, super::shown_name(&args.name));
            }
            if held {
                0
            } else {
                1
            }
        }
        Err(e) => super::report(&e),
    }
}

/// Connects, runs `ask`, prints `render`'s text; errors go to stderr with a non-zero status.
fn query<T>(
    connect: &super::ConnectArgs,
    ask: impl FnOnce(&Client) -> Result<T>,
    render: impl FnOnce(T) -> String,
) -> i32 {
    let client = match connect.connect_or_exit() {
        Ok(client) => client,
        Err(code) => return code,
    };
    match ask(&client) {
        Ok(value) => {
            let text = render(value);
            // A closed pipe (`officer locks | head`) is not worth a panic or an error status.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            0
        }
        Err(e) => super::report(&e),
    }
}

fn lock_json(lock: &LockInfo) -> Value {
    let (holder, waiters) = lock.queue.split_first().map_or((None, &[][..]), |(h, w)| (Some(h), w));
    json!({ "name": lock.name, "holder": holder, "waiters": waiters })
}

fn connection_json(conn: &ConnectionInfo) -> Value {
    json!({ "label": conn.label, "held": conn.held, "waiting": conn.waiting })
}

fn json_listing<T>(key: &str, listing: &Listing<T>, item: fn(&T) -> Value) -> String {
    let items: Vec<Value> = listing.iter().map(item).collect();
    let mut doc = Map::new();
    doc.insert(key.to_owned(), Value::Array(items));
    doc.insert("truncated".to_owned(), json!(listing.truncated));
    Value::Object(doc).to_string() + "\n"
}

/// Left-aligned columns two spaces apart; the last column is not padded.
pub(super) fn table(
    headers: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
    empty: &str,
    truncated: bool,
) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    if rows.is_empty() {
        return format!("{empty}\n");
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let last = row.len().saturating_sub(1);
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    if truncated {
        out.push_str("(truncated: the server lists only so many; narrow with a prefix or raise --max)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_trims_trailing_space() {
        let rows = vec![
            vec!["a".into(), "127.0.0.1:1".into(), "".into()],
            vec!["long-name".into(), "x".into(), "y, z".into()],
        ];
        let out = table(&["NAME", "HOLDER", "WAITING"], rows.into_iter(), "none", false);
        assert_eq!(
            out,
            "NAME       HOLDER       WAITING\n\
             a          127.0.0.1:1\n\
             long-name  x            y, z\n"
        );
        assert_eq!(table(&["A"], std::iter::empty(), "none", false), "none\n");
    }

    #[test]
    fn json_listing_has_items_and_truncated() {
        let listing = Listing {
            items: vec![LockInfo { name: "a".into(), queue: vec!["h".into(), "w".into()] }],
            truncated: true,
        };
        let doc: Value = serde_json::from_str(&json_listing("locks", &listing, lock_json)).expect("json");
        assert_eq!(
            doc,
            json!({ "locks": [{ "name": "a", "holder": "h", "waiters": ["w"] }], "truncated": true })
        );
    }
}
