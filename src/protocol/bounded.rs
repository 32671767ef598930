//! Encoding a response within a frame limit, in one pass (PROTOCOL.md §2.1: the server never
//! sends a frame longer than the `max_frame` it announced).
//!
//! Lists are written entry by entry and stop where the next entry would not fit; their counts
//! are back-patched and listings set their `truncated` flag. Nothing is encoded twice, so the
//! cost is that of the bytes sent. Listings are normally built to fit already (the lock table
//! sizes them with [`str16_size`] and [`LIST_COUNT_SIZE`]); this is what guarantees the limit
//! for every frame anyway, and what cuts the queues of TIMED_OUT and QUEUE_MAXED.

use byteorder::{BigEndian, ByteOrder};

use super::detail::{
    awaited_sizes, connection_detail_sizes, held_sizes, holder_sizes, lock_detail_sizes, put_awaited,
    put_held, put_holder, put_waiter, waiter_sizes,
};
use super::frame::LENGTH_PREFIX_LEN;
use super::response::{ConnectionInfo, LockInfo, TopEntry};
use super::wire::{begin_frame, end_frame, put_str16, put_u16, put_u32, put_u64, str16_len};
use super::{DetachedSession, Response};

/// Encoded size of a `list` count (§2.2).
pub const LIST_COUNT_SIZE: usize = 4;

/// Encoded size of `s` as a `str16` (§2.2): two length bytes, then at most 65535 bytes of text.
pub fn str16_size(s: &str) -> usize {
    2 + str16_len(s)
}

/// Sum of the `str16` sizes of `items`, without the list count.
fn strings_size<S: AsRef<str>>(items: &[S]) -> usize {
    items.iter().map(|s| str16_size(s.as_ref())).sum()
}

/// Writes into `out` up to the byte offset `end`, remembering whether anything was left out.
struct Bounded<'o> {
    out: &'o mut Vec<u8>,
    end: usize,
    cut: bool,
}

impl Bounded<'_> {
    fn fits(&self, n: usize) -> bool {
        self.out.len() + n <= self.end
    }

    /// A `u32` placeholder to back-patch; returns its offset.
    fn placeholder(&mut self) -> usize {
        let at = self.out.len();
        put_u32(self.out, 0);
        at
    }

    fn patch(&mut self, at: usize, count: u32) {
        BigEndian::write_u32(&mut self.out[at..at + 4], count);
    }

    /// A `list`: as many whole strings as fit while keeping `reserve` bytes for what follows.
    /// The count itself is a fixed field the caller has made room for.
    fn str_list<S: AsRef<str>>(&mut self, items: &[S], reserve: usize) {
        let at = self.placeholder();
        let mut count = 0;
        for item in items {
            let item = item.as_ref();
            if !self.fits(str16_size(item) + reserve) {
                self.cut = true;
                break;
            }
            put_str16(self.out, item);
            count += 1;
        }
        self.patch(at, count);
    }

    /// A count, then entries: whole while they fit (keeping `reserve` bytes); the first entry
    /// is written with its lists cut when only its fixed part (`head`) fits, so a frame with
    /// room for anything is never empty. `sizes` gives `(head, whole)` of an entry.
    fn entries<T>(
        &mut self,
        items: &[T],
        reserve: usize,
        sizes: impl Fn(&T) -> (usize, usize),
        mut write: impl FnMut(&mut Self, &T),
    ) {
        let at = self.placeholder();
        let mut count = 0;
        for item in items {
            let (head, whole) = sizes(item);
            if self.fits(whole + reserve) {
                write(self, item);
                count += 1;
                continue;
            }
            self.cut = true;
            if count == 0 && self.fits(head + reserve) {
                let end = self.end;
                self.end = end.saturating_sub(reserve);
                write(self, item);
                self.end = end;
                count += 1;
            }
            break;
        }
        self.patch(at, count);
    }

    /// UTF-8 text running to the end of the frame, cut at a character boundary.
    fn text(&mut self, text: &str) {
        let room = self.end.saturating_sub(self.out.len());
        let mut len = text.len().min(room);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        self.cut |= len < text.len();
        self.out.extend_from_slice(&text.as_bytes()[..len]);
    }
}

fn lock_sizes(lock: &LockInfo) -> (usize, usize) {
    let head = str16_size(&lock.name) + LIST_COUNT_SIZE;
    (head, head + strings_size(&lock.queue))
}

fn connection_sizes(conn: &ConnectionInfo) -> (usize, usize) {
    let head = str16_size(&conn.label) + 2 * LIST_COUNT_SIZE;
    (head, head + strings_size(&conn.held) + strings_size(&conn.waiting))
}

fn top_sizes(entry: &TopEntry) -> (usize, usize) {
    let size = str16_size(&entry.name) + str16_size(&entry.holder) + 8 + 4;
    (size, size)
}

impl Response {
    /// Appends this response as one frame whose length field is at most `max_frame`, cutting
    /// lists at an entry boundary and text at a character boundary; a listing that lost
    /// entries says so with its `truncated` flag. Identical to [`Response::encode`] when the
    /// frame fits. Fixed fields are never cut: `max_frame` must be at least 33 (SESSION_OK), which
    /// every server limit is (the smallest is 64). Nor is the name of LOST or CONTENDED: it came
    /// in a LOCK_EXT frame, 20 bytes longer than the notice, under the same limit.
    pub fn encode_within(&self, request_id: u32, max_frame: u32, out: &mut Vec<u8>) {
        // Fixed and tiny: nothing to cut (and this is nearly every answer).
        if self.encode_short(request_id, out) {
            return;
        }
        let start = out.len();
        begin_frame(out, self.opcode(), request_id);
        let end = start + LENGTH_PREFIX_LEN + max_frame as usize;
        let mut b = Bounded { out, end, cut: false };
        match self {
            Response::TimedOut { queue } | Response::QueueMaxed { queue } => b.str_list(queue, 0),
            Response::Locks { locks, truncated } => {
                let flag = b.out.len();
                b.out.push(0);
                b.entries(locks, 0, lock_sizes, |b, lock| {
                    put_str16(b.out, &lock.name);
                    b.str_list(&lock.queue, 0);
                });
                b.out[flag] = (*truncated || b.cut) as u8;
            }
            Response::Connections { connections, truncated } => {
                let flag = b.out.len();
                b.out.push(0);
                b.entries(connections, 0, connection_sizes, |b, conn| {
                    put_str16(b.out, &conn.label);
                    b.str_list(&conn.held, LIST_COUNT_SIZE);
                    b.str_list(&conn.waiting, 0);
                });
                b.out[flag] = (*truncated || b.cut) as u8;
            }
            Response::LocksDetail { locks, truncated } => {
                let flag = b.out.len();
                b.out.push(0);
                b.entries(locks, 0, lock_detail_sizes, |b, lock| {
                    put_str16(b.out, &lock.name);
                    put_u32(b.out, lock.limit);
                    b.entries(&lock.holders, LIST_COUNT_SIZE, holder_sizes, |b, h| put_holder(b.out, h));
                    b.entries(&lock.waiters, 0, waiter_sizes, |b, w| put_waiter(b.out, w));
                });
                b.out[flag] = (*truncated || b.cut) as u8;
            }
            Response::ConnectionsDetail { connections, truncated } => {
                let flag = b.out.len();
                b.out.push(0);
                b.entries(connections, 0, connection_detail_sizes, |b, conn| {
                    put_str16(b.out, &conn.label);
                    put_u64(b.out, conn.connection_id);
                    b.entries(&conn.held, LIST_COUNT_SIZE, held_sizes, |b, h| put_held(b.out, h));
                    b.entries(&conn.waiting, 0, awaited_sizes, |b, w| put_awaited(b.out, w));
                });
                b.out[flag] = (*truncated || b.cut) as u8;
            }
            Response::Sessions { sessions, truncated } => {
                let flag = b.out.len();
                b.out.push(0);
                b.entries(sessions, 0, DetachedSession::sizes, |b, s| s.encode(b.out));
                b.out[flag] = (*truncated || b.cut) as u8;
            }
            Response::MyLocks { held, waiting } => {
                b.str_list(held, LIST_COUNT_SIZE);
                b.str_list(waiting, 0);
            }
            Response::MyLocksMatching { held, waiting, truncated } => {
                let flag = b.out.len();
                b.out.push(0);
                b.str_list(held, LIST_COUNT_SIZE);
                b.str_list(waiting, 0);
                b.out[flag] = (*truncated || b.cut) as u8;
            }
            Response::Stats(entries) => b.entries(
                entries,
                0,
                |(key, _)| (str16_size(key) + 8, str16_size(key) + 8),
                |b, (key, value)| {
                    put_str16(b.out, key);
                    put_u64(b.out, *value);
                },
            ),
            Response::Top { longest_held, deepest_queues } => {
                let write = |b: &mut Bounded<'_>, e: &TopEntry| {
                    put_str16(b.out, &e.name);
                    put_str16(b.out, &e.holder);
                    put_u64(b.out, e.held_ms);
                    put_u32(b.out, e.waiters);
                };
                b.entries(longest_held, LIST_COUNT_SIZE, top_sizes, write);
                b.entries(deepest_queues, 0, top_sizes, write);
            }
            Response::Shutdown { message } => b.text(message),
            Response::Error { code, message } => {
                put_u16(b.out, *code as u16);
                b.text(message);
            }
            _ => {
                // Fixed-size payloads: nothing to cut.
                out.truncate(start);
                self.encode(request_id, out);
                return;
            }
        }
        end_frame(out, start);
    }
}
