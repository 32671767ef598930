//! The server's connections: the slab (keys are poll tokens), the generation that makes a
//! reused key's id new, the dirty / backlog / closing lists, socket interest, the write side
//! (flush) and reaping. What a flush or read means for the lock table (a close) is the
//! server's: these methods only say which connection must close and why.
//!
//! Idle connections own no buffer memory: a drained output buffer over 64 KiB is freed at
//! once, a smaller one once its connection has sent nothing for a housekeeping round
//! (`shrink_quiet_buffers`), so a burst that touched 15,000 connections does not pin 15,000
//! buffers.

use std::io::{ErrorKind, Write};

use log::{debug, warn};
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::conn::ConnKey;
use super::conn::{CloseReason, Conn};
use crate::wheel::Wheel;

/// Buffers larger than this are freed once drained, so a burst does not pin memory.
pub(super) const KEEP_BUF_CAPACITY: usize = 64 * 1024;
/// Connection slots one housekeeping round looks at for quiet buffers: the sweep is spread
/// over rounds so that it stays a bounded step however many connections there are.
const SWEEP_SLOTS: usize = 16 * 1024;
/// Lists and the slab whose capacity is above this are shrunk by housekeeping once they are
/// at most a quarter full.
const SHRINK_FLOOR: usize = 1024;

pub(crate) struct Connections {
    slab: Slab<Conn>,
    /// Connections that got output this wake-up: one write each at the end of it.
    dirty: Vec<usize>,
    /// Connections with input left that no readiness event will announce again.
    backlog: Vec<usize>,
    /// Connections out of the lock table, whose sockets go at `reap`.
    closing: Vec<usize>,
    next_generation: u32,
    /// Where the next housekeeping round goes on looking for quiet buffers.
    sweep_cursor: usize,
}

impl Connections {
    pub(crate) fn new() -> Connections {
        Connections {
            slab: Slab::new(),
            dirty: Vec::new(),
            backlog: Vec::new(),
            closing: Vec::new(),
            next_generation: 1,
            sweep_cursor: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(crate) fn get(&self, key: usize) -> Option<&Conn> {
        self.slab.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut Conn> {
        self.slab.get_mut(key)
    }

    pub(crate) fn iter(&self) -> slab::Iter<'_, Conn> {
        self.slab.iter()
    }

    /// The id the next `insert` gets: the slab key it will take, with a fresh generation (a
    /// timer or queue entry of the key's previous owner is never mistaken for it).
    pub(crate) fn next_id(&mut self) -> ConnKey {
        let id = ConnKey { slot: self.slab.vacant_key() as u32, generation: self.next_generation };
        self.next_generation = self.next_generation.wrapping_add(1);
        id
    }

    /// Adds a connection made with the id `next_id` just gave.
    pub(crate) fn insert(&mut self, conn: Conn) {
        let key = self.slab.insert(conn);
        debug_assert_eq!(Some(key as u32), self.slab.get(key).map(|c| c.id.slot));
    }

    /// Queues the connection for a flush at the end of this wake-up.
    pub(crate) fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// The dirty list, to flush; `None` once nothing is dirty. Hand it back with `recycle_dirty`.
    pub(crate) fn take_dirty(&mut self) -> Option<Vec<usize>> {
        (!self.dirty.is_empty()).then(|| std::mem::take(&mut self.dirty))
    }

    /// Keeps a flushed list's allocation, unless flushing dirtied connections again.
    pub(crate) fn recycle_dirty(&mut self, mut keys: Vec<usize>) {
        keys.clear();
        if self.dirty.is_empty() {
            self.dirty = keys;
        }
    }

    pub(crate) fn push_backlog(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            if !conn.backlogged {
                conn.backlogged = true;
                self.backlog.push(key);
            }
        }
    }

    pub(crate) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// The backlog to serve, each connection taken off it.
    pub(crate) fn take_backlog(&mut self) -> Vec<usize> {
        let keys = std::mem::take(&mut self.backlog);
        for &key in &keys {
            if let Some(conn) = self.slab.get_mut(key) {
                conn.backlogged = false;
            }
        }
        keys
    }

    /// Queues a connection that left the lock table for `reap`.
    pub(crate) fn push_closing(&mut self, key: usize) {
        self.closing.push(key);
    }

    /// One write of the connection's pending output; WRITABLE interest only while some is
    /// left. Returns why it must now be closed: the write failed, or what is left is over
    /// `max_output` (a client that does not read). `bytes_out` counts what was written.
    pub(crate) fn flush(
        &mut self,
        key: usize,
        registry: &Registry,
        max_output: usize,
        bytes_out: &mut u64,
    ) -> Option<CloseReason> {
        let conn = self.slab.get_mut(key)?;
        conn.dirty = false;
        while conn.pending_output() > 0 {
            match conn.stream.write(&conn.outbuf[conn.out_pos..]) {
                Ok(0) => break,
                Ok(n) => {
                    conn.out_pos += n;
                    *bytes_out += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("write failed conn={} error={e}", conn.serial);
                    conn.outbuf.clear();
                    conn.out_pos = 0;
                    return conn.closing.is_none().then_some(CloseReason::Error);
                }
            }
        }
        let pending = conn.pending_output();
        if pending == 0 {
            conn.outbuf.clear();
            conn.out_pos = 0;
            if conn.outbuf.capacity() > KEEP_BUF_CAPACITY {
                conn.outbuf = Vec::new();
            }
        } else if pending > max_output && conn.closing.is_none() {
            warn!("closing connection that does not read conn={} pending_bytes={pending}", conn.serial);
            return Some(CloseReason::OutputOverflow);
        }
        self.update_interest(key, registry);
        None
    }

    /// The one place that decides a socket's interest.
    fn update_interest(&mut self, key: usize, registry: &Registry) {
        let Some(conn) = self.slab.get_mut(key) else { return };
        let want_write = conn.pending_output() > 0;
        if want_write != conn.want_write {
            conn.want_write = want_write;
            let interest =
                if want_write { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            let _ = registry.reregister(&mut conn.stream, Token(key), interest);
        }
    }

    /// Removes closed connections: a last best-effort write (an ERROR frame), then the socket
    /// and its idle timer.
    #[inline]
    pub(crate) fn reap(&mut self, registry: &Registry, idle: &mut Wheel<ConnKey>) {
        // Every turn calls this; nearly every turn closes nothing.
        if !self.closing.is_empty() {
            self.reap_closing(registry, idle);
        }
    }

    fn reap_closing(&mut self, registry: &Registry, idle: &mut Wheel<ConnKey>) {
        for key in std::mem::take(&mut self.closing) {
            if !self.slab.contains(key) {
                continue;
            }
            let mut conn = self.slab.remove(key);
            if conn.pending_output() > 0 {
                let _ = conn.stream.write(&conn.outbuf[conn.out_pos..]);
            }
            if let Some(handle) = conn.idle_timer.take() {
                idle.cancel(handle);
            }
            // A peer that hung up has nothing more to learn: dropping the socket closes it and
            // takes it out of the poller, and skipping deregister and shutdown halves the
            // syscalls of 10,000 peers hanging up together.
            if conn.closing != Some(CloseReason::Eof) {
                let _ = registry.deregister(&mut conn.stream);
                conn.stream.shutdown();
            }
        }
    }

    /// Housekeeping: frees the drained buffers of connections that sent and received nothing
    /// since the previous round, looking at `SWEEP_SLOTS` slots per round. Returns whether a
    /// buffer was freed. A busy connection keeps its buffers (no reallocation per request).
    pub(crate) fn shrink_quiet_buffers(&mut self) -> bool {
        let capacity = self.slab.capacity();
        if capacity == 0 {
            return false;
        }
        let start = if self.sweep_cursor >= capacity { 0 } else { self.sweep_cursor };
        let end = (start + SWEEP_SLOTS).min(capacity);
        let mut freed = false;
        for key in start..end {
            let Some(conn) = self.slab.get_mut(key) else { continue };
            let quiet = !std::mem::take(&mut conn.out_recent) && !conn.dirty;
            if quiet && conn.pending_output() == 0 && conn.outbuf.capacity() > 0 {
                (conn.outbuf, conn.out_pos) = (Vec::new(), 0);
                freed = true;
            }
            if conn.inbuf.is_empty() && conn.inbuf.capacity() > 0 && !conn.backlogged {
                conn.inbuf = Vec::new();
                freed = true;
            }
        }
        self.sweep_cursor = end;
        freed
    }

    /// Shrinks the slab and the lists once a burst is far below its peak (each at most a
    /// quarter full, above a floor: a steady load never reallocates). Returns whether any
    /// capacity was given back.
    pub(crate) fn shrink(&mut self) -> bool {
        let mut shrank = false;
        let (len, capacity) = (self.slab.len(), self.slab.capacity());
        if capacity > SHRINK_FLOOR && len * 4 <= capacity {
            self.slab.shrink_to_fit();
            shrank |= self.slab.capacity() < capacity;
        }
        shrank |= shrink_vec(&mut self.dirty);
        shrank |= shrink_vec(&mut self.backlog);
        shrank |= shrink_vec(&mut self.closing);
        shrank
    }
}

/// Frees a list's spare capacity once it is at most a quarter full.
fn shrink_vec(v: &mut Vec<usize>) -> bool {
    if v.capacity() > SHRINK_FLOOR && v.len() * 4 <= v.capacity() {
        v.shrink_to(v.len() * 2);
        return true;
    }
    false
}
