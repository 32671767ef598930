//! `officer top`: a live view of the busiest locks (held longest, most waiters) and the main
//! counters, refreshed every interval until interrupted (or `--iterations` times). Each ranked
//! name also shows its mode, holder count and permits in use: TOP_LIST cannot say them
//! (PROTOCOL.md §6.13), so each shown name is asked for by LOCKS_DETAIL, one name each.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::json;

use super::TopArgs;
use crate::client::{Client, Stats, Top, TopEntry};

/// What a ranked name is held as, by name: "exclusive", "shared x3", "semaphore 2/5".
type Modes = HashMap<String, String>;

pub(super) fn run(args: TopArgs) -> i32 {
    if let Some(sharded) = super::shard::top_client(&args.connect) {
        return match sharded {
            Ok(client) => show(
                &args,
                |max| Ok((super::shard::top_stats(&client.stats()?), client.top(max)?, Modes::new())),
                |e| super::shard::report(&args.connect, e),
            ),
            Err(code) => code,
        };
    }
    let client = match args.connect.connect_or_exit() {
        Ok(client) => client,
        Err(code) => return code,
    };
    show(&args, |max| snapshot(&client, max), super::report)
}

/// Shows what `snapshot` says every interval, as often as asked.
fn show(
    args: &TopArgs,
    snapshot: impl Fn(u32) -> crate::client::Result<(Stats, Top, Modes)>,
    report: impl Fn(&crate::client::Error) -> i32,
) -> i32 {
    let clear = std::io::stdout().is_terminal() && !args.json;
    let mut shown = 0u64;
    loop {
        let text = match snapshot(args.max) {
            Ok((stats, top, modes)) if args.json => json_line(&stats, &top, &modes),
            Ok((stats, top, modes)) => render(&stats, &top, &modes, clear),
            Err(e) => return report(&e),
        };
        if std::io::stdout().lock().write_all(text.as_bytes()).is_err() {
            return 0;
        }
        shown += 1;
        if args.iterations.is_some_and(|n| shown >= n) {
            return 0;
        }
        std::thread::sleep(Duration::from_secs_f64(args.interval.max(0.05)));
    }
}

fn snapshot(client: &Client, max: u32) -> crate::client::Result<(Stats, Top, Modes)> {
    let (stats, top) = (client.stats()?, client.top(max)?);
    let modes = modes(client, &top)?;
    Ok((stats, top, modes))
}

/// The mode of each ranked name, by one LOCKS_DETAIL each with the name as prefix and a page
/// of one: the name itself sorts first. A name gone meanwhile has none.
fn modes(client: &Client, top: &Top) -> crate::client::Result<Modes> {
    let mut modes = Modes::new();
    for entry in top.longest_held.iter().chain(&top.deepest_queues) {
        if modes.contains_key(&entry.name) {
            continue;
        }
        let listing = client.locks_detail(&entry.name, 1)?;
        if let Some(lock) = listing.items.iter().find(|l| l.name == entry.name) {
            modes.insert(entry.name.clone(), mode_text(lock));
        }
    }
    Ok(modes)
}

/// The kind of the lock, with the number of holders of a shared one.
fn mode_text(lock: &crate::protocol::LockDetail) -> String {
    let kind = super::show::lock_kind(lock);
    if kind == "shared" {
        format!("shared x{}", lock.holders.len())
    } else {
        kind
    }
}

fn render(stats: &Stats, top: &Top, modes: &Modes, clear: bool) -> String {
    let get = |k: &str| stats.get(k).unwrap_or(0);
    let mut out = String::new();
    if clear {
        out.push_str("\x1b[H\x1b[2J");
    }
    out.push_str(&format!(
        "officer: {} connections, {} locks held, {} waiting, {} acquired/s, up {}s\n\n",
        get("connections"),
        get("locks_held"),
        get("waiters"),
        get("acquire_rate_per_sec"),
        get("uptime_ms") / 1000
    ));
    out.push_str(&section("HELD LONGEST", &top.longest_held, modes));
    out.push('\n');
    out.push_str(&section("MOST WAITERS", &top.deepest_queues, modes));
    out
}

fn section(title: &str, entries: &[TopEntry], modes: &Modes) -> String {
    let rows = entries.iter().map(|e| {
        vec![
            e.name.clone(),
            modes.get(&e.name).cloned().unwrap_or_else(|| "-".to_owned()),
            e.holder.clone(),
            format!("{:.1}s", e.held_ms as f64 / 1000.0),
            e.waiters.to_string(),
        ]
    });
    format!(
        "{title}\n{}",
        super::show::table(&["NAME", "MODE", "HOLDER", "HELD", "WAITERS"], rows, "  (none)", false)
    )
}

fn json_line(stats: &Stats, top: &Top, modes: &Modes) -> String {
    let entry = |e: &TopEntry| {
        json!({"name": e.name, "mode": modes.get(&e.name), "holder": e.holder, "held_ms": e.held_ms,
               "waiters": e.waiters})
    };
    let doc = json!({
        "connections": stats.get("connections"),
        "locks_held": stats.get("locks_held"),
        "waiters": stats.get("waiters"),
        "acquire_rate_per_sec": stats.get("acquire_rate_per_sec"),
        "longest_held": top.longest_held.iter().map(entry).collect::<Vec<_>>(),
        "deepest_queues": top.deepest_queues.iter().map(entry).collect::<Vec<_>>(),
    });
    doc.to_string() + "\n"
}
