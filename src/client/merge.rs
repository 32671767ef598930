//! How a sharded client merges the answers of several servers into one, pure and without I/O
//! (the blocking [`ShardedClient`](super::ShardedClient) uses it; an async one can too).
//!
//! Each server lists only the names placed on it, so the parts never overlap; a merge only
//! orders them as one server would and keeps the caller's `max` (a server applies `max` to its
//! own part, so the parts together may hold up to `max` per server).

use super::{Listing, MyLocks, MyLocksListing, Top};
use crate::protocol::{ConnectionInfo, LockInfo, TopEntry};

/// What the server lists when a listing's `max` is 0 (its default) for TOP.
const TOP_DEFAULT: u32 = 10;

/// Keeps at most `max` items (0: all), saying whether any were cut.
fn cut<T>(items: &mut Vec<T>, max: u32) -> bool {
    let max = max as usize;
    if max > 0 && items.len() > max {
        items.truncate(max);
        return true;
    }
    false
}

/// LOCKS answers: sorted by name, as one server sorts them; at most `max` (0: no cut beyond
/// each server's own default); `truncated` when any server or the cut left names out. Every
/// server answers with the first names by name, so the first `max` of the merge are exactly
/// the first `max` names over all servers.
pub(crate) fn locks(parts: Vec<Listing<LockInfo>>, max: u32) -> Listing<LockInfo> {
    let mut truncated = parts.iter().any(|p| p.truncated);
    let mut items: Vec<LockInfo> = parts.into_iter().flat_map(|p| p.items).collect();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    truncated |= cut(&mut items, max);
    Listing { items, truncated }
}

/// CONNECTIONS answers: sorted by label (a stable sort, so equal labels of different servers
/// keep the servers' order); cut and flagged as [`locks`].
pub(crate) fn connections(parts: Vec<Listing<ConnectionInfo>>, max: u32) -> Listing<ConnectionInfo> {
    let mut truncated = parts.iter().any(|p| p.truncated);
    let mut items: Vec<ConnectionInfo> = parts.into_iter().flat_map(|p| p.items).collect();
    items.sort_by(|a, b| a.label.cmp(&b.label));
    truncated |= cut(&mut items, max);
    Listing { items, truncated }
}

/// MY_LOCKS answers: held names sorted, awaited names server after server (each server's in
/// the order its waits started; there is no order between servers).
pub(crate) fn my_locks(parts: Vec<MyLocks>) -> MyLocks {
    let mut merged = MyLocks::default();
    for part in parts {
        merged.held.extend(part.held);
        merged.waiting.extend(part.waiting);
    }
    merged.held.sort();
    merged
}

/// MY_LOCKS_MATCHING answers: as [`my_locks`], each list cut to `max`, `truncated` ORed.
pub(crate) fn my_locks_listing(parts: Vec<MyLocksListing>, max: u32) -> MyLocksListing {
    let mut truncated = parts.iter().any(|p| p.truncated);
    let mine = my_locks(parts.into_iter().map(|p| MyLocks { held: p.held, waiting: p.waiting }).collect());
    let (mut held, mut waiting) = (mine.held, mine.waiting);
    truncated |= cut(&mut held, max);
    truncated |= cut(&mut waiting, max);
    MyLocksListing { held, waiting, truncated }
}

/// TOP answers: longest held first and most waiters first over all servers, at most `max`
/// of each (0: the server's default of 10), ties by name so the order is stable.
pub(crate) fn top(parts: Vec<Top>, max: u32) -> Top {
    let max = if max == 0 { TOP_DEFAULT } else { max };
    let mut merged = Top::default();
    for part in parts {
        merged.longest_held.extend(part.longest_held);
        merged.deepest_queues.extend(part.deepest_queues);
    }
    let by = |key: fn(&TopEntry) -> u64| {
        move |a: &TopEntry, b: &TopEntry| key(b).cmp(&key(a)).then_with(|| a.name.cmp(&b.name))
    };
    merged.longest_held.sort_by(by(|e| e.held_ms));
    merged.deepest_queues.sort_by(by(|e| u64::from(e.waiters)));
    cut(&mut merged.longest_held, max);
    cut(&mut merged.deepest_queues, max);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(name: &str) -> LockInfo {
        LockInfo { name: name.into(), queue: vec!["h".into()] }
    }

    fn names(listing: &Listing<LockInfo>) -> Vec<&str> {
        listing.iter().map(|l| l.name.as_str()).collect()
    }

    #[test]
    fn locks_sort_by_name_and_cut_to_max_with_the_flag() {
        let a = Listing { items: vec![lock("b"), lock("d")], truncated: false };
        let b = Listing { items: vec![lock("a"), lock("c")], truncated: false };
        let all = locks(vec![a.clone(), b.clone()], 0);
        assert_eq!((names(&all), all.truncated), (vec!["a", "b", "c", "d"], false));
        let cut = locks(vec![a.clone(), b], 3);
        assert_eq!((names(&cut), cut.truncated), (vec!["a", "b", "c"], true));
        let flagged = locks(vec![a, Listing { items: vec![], truncated: true }], 0);
        assert!(flagged.truncated);
    }

    #[test]
    fn connections_sort_by_label_stably() {
        let conn = |label: &str, held: &str| ConnectionInfo {
            label: label.into(),
            held: vec![held.into()],
            waiting: vec![],
        };
        let a = Listing { items: vec![conn("x", "1"), conn("z", "2")], truncated: false };
        let b = Listing { items: vec![conn("x", "3"), conn("y", "4")], truncated: false };
        let merged = connections(vec![a, b], 0);
        let held: Vec<&str> = merged.iter().map(|c| c.held[0].as_str()).collect();
        assert_eq!(held, ["1", "3", "4", "2"]);
    }

    #[test]
    fn my_locks_sort_held_and_keep_waits_per_server() {
        let a = MyLocks { held: vec!["b".into()], waiting: vec!["w2".into(), "w1".into()] };
        let b = MyLocks { held: vec!["a".into()], waiting: vec!["w0".into()] };
        let merged = my_locks(vec![a.clone(), b.clone()]);
        assert_eq!(merged.held, ["a", "b"]);
        assert_eq!(merged.waiting, ["w2", "w1", "w0"]);
        let parts = [a, b].map(|m| MyLocksListing { held: m.held, waiting: m.waiting, truncated: false });
        let listing = my_locks_listing(parts.to_vec(), 1);
        assert_eq!(
            (listing.held, listing.waiting, listing.truncated),
            (vec!["a".into()], vec!["w2".into()], true)
        );
    }

    #[test]
    fn top_orders_over_all_servers_and_defaults_to_ten() {
        let entry = |name: &str, held_ms, waiters| TopEntry {
            name: name.into(),
            holder: "h".into(),
            held_ms,
            waiters,
        };
        let part = |i: u64| Top {
            longest_held: (0..8).map(|j| entry(&format!("{i}-{j}"), i * 100 + j, 0)).collect(),
            deepest_queues: vec![entry(&format!("q{i}"), 0, i as u32)],
        };
        let merged = top(vec![part(1), part(2)], 0);
        assert_eq!(merged.longest_held.len(), 10);
        assert_eq!(merged.longest_held[0].name, "2-7");
        assert_eq!(merged.longest_held[9].name, "1-6");
        let queues: Vec<&str> = merged.deepest_queues.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(queues, ["q2", "q1"]);
        assert_eq!(top(vec![part(1)], 2).longest_held.len(), 2);
    }
}
