//! The replicated log entry: owned [`Command`]s, each with the leader's `now`, so that every
//! replica applies `LockTable::apply(now, &command, out)` with the same arguments, in order.
//!
//! Layout (docs/CLUSTER.md "Entry format"); integers are unsigned LEB128 varints (7 bits a
//! byte, low group first, at most 10 bytes for a u64, 5 for a u32), strings a varint length
//! then UTF-8 bytes, a secret its 16 raw bytes. An entry holds one command (version 1) or
//! several (version 2, a [`Batch`]: one wake-up's proposals in one raft entry, so raft's cost
//! per entry, its encoding, copies and bookkeeping, is paid once per batch, not per command):
//!
//! ```text
//! version 1 (ENTRY_VERSION)  | item
//! version 2 (BATCH_VERSION)  | count (varint, >= 2) | item * count
//! item = now (varint) | tag (1 byte) | the variant's fields
//! ```
//!
//! | tag | command     | fields after the tag                                              |
//! |-----|-------------|-------------------------------------------------------------------|
//! | 1   | Attach      | session, label                                                    |
//! | 2   | Lock        | session, request_id, name, flags, mode, \[timeout_ms\], \[queue_max\], \[lease_ms\], \[max_hold_ms\], lock_delay_ms |
//! | 3   | Unlock      | session, request_id, name, has_token (0/1), \[token\]                |
//! | 4   | Downgrade   | session, request_id, name, token                                  |
//! | 5   | Renew       | session, request_id, name, token                                  |
//! | 6   | Revoke      | session, request_id, name, has_token (0/1), \[token\]                |
//! | 7   | Check       | session, request_id, name, token                                  |
//! | 8   | Reset       | session, request_id                                               |
//! | 9   | Detach      | session                                                           |
//! | 10  | OpenSession | session, request_id, grace_ms, skip (1 byte: 0 or 1), secret      |
//! | 11  | Suspend     | session                                                           |
//! | 12  | Resume      | session, request_id, from, secret                                 |
//! | 13  | Expire      | (none)                                                            |
//!
//! Lock `flags`: bit 0 timeout_ms present, bit 1 queue_max, bit 2 lease_ms, bit 3 max_hold_ms,
//! bit 4 notify_contention, bit 5 skip_while_detached; other bits are refused. `mode`: 0 exclusive, 1 shared, 2 permits
//! followed by count and limit (varints). An entry is exactly its fields: trailing bytes are
//! refused. Decoding never panics and never allocates more than the input's length.

use std::fmt;

use crate::locks::{Command, LockOpts, Mode, Name, SessionId, Tick};
use crate::protocol::SESSION_SECRET_LEN;

/// The version byte every entry starts with. A node refuses an entry of any other version,
/// so a format change is a new version that old nodes reject loudly instead of misreading.
pub const ENTRY_VERSION: u8 = 1;

/// The version byte of an entry of several commands (module doc).
pub const BATCH_VERSION: u8 = 2;

const TAG_ATTACH: u8 = 1;
const TAG_LOCK: u8 = 2;
const TAG_UNLOCK: u8 = 3;
const TAG_DOWNGRADE: u8 = 4;
const TAG_RENEW: u8 = 5;
const TAG_REVOKE: u8 = 6;
const TAG_CHECK: u8 = 7;
const TAG_RESET: u8 = 8;
const TAG_DETACH: u8 = 9;
const TAG_OPEN_SESSION: u8 = 10;
const TAG_SUSPEND: u8 = 11;
const TAG_RESUME: u8 = 12;
const TAG_EXPIRE: u8 = 13;

const FLAG_TIMEOUT: u8 = 1;
const FLAG_QUEUE_MAX: u8 = 1 << 1;
const FLAG_LEASE: u8 = 1 << 2;
const FLAG_MAX_HOLD: u8 = 1 << 3;
const FLAG_NOTIFY: u8 = 1 << 4;
const FLAG_SKIP: u8 = 1 << 5;
const FLAGS_KNOWN: u8 = FLAG_TIMEOUT | FLAG_QUEUE_MAX | FLAG_LEASE | FLAG_MAX_HOLD | FLAG_NOTIFY | FLAG_SKIP;

const MODE_EXCLUSIVE: u8 = 0;
const MODE_SHARED: u8 = 1;
const MODE_PERMITS: u8 = 2;

/// One replicated change of the lock table: apply `command` at `now` (the leader's tick).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCommand {
    pub now: Tick,
    pub command: Command,
}

/// Why bytes are not an entry. Each names what was wrong, so a node's log line says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryError {
    /// The input ended inside a field (`field` names it).
    Truncated { field: &'static str },
    /// The first byte is neither [`ENTRY_VERSION`] nor [`BATCH_VERSION`].
    Version(u8),
    /// A batch whose count is below 2, or above what its bytes could hold.
    Count(u64),
    /// No command has this tag.
    UnknownTag(u8),
    /// A varint longer than its type allows, or with bits beyond it.
    Varint { field: &'static str },
    /// A presence byte or flag byte with a value it cannot have.
    BadFlag { field: &'static str, byte: u8 },
    /// No lock mode has this byte.
    UnknownMode(u8),
    /// A string that is not UTF-8.
    Utf8 { field: &'static str },
    /// Bytes after the last field.
    Trailing(usize),
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryError::Truncated { field } => write!(f, "log entry ends inside its {field}"),
            EntryError::Version(v) => {
                write!(f, "log entry version {v} (this node reads {ENTRY_VERSION} and {BATCH_VERSION})")
            }
            EntryError::Count(n) => write!(f, "log entry batch of {n} commands"),
            EntryError::UnknownTag(t) => write!(f, "log entry has unknown command tag {t}"),
            EntryError::Varint { field } => write!(f, "log entry's {field} is an over-long varint"),
            EntryError::BadFlag { field, byte } => write!(f, "log entry's {field} byte is {byte:#04x}"),
            EntryError::UnknownMode(m) => write!(f, "log entry has unknown lock mode {m}"),
            EntryError::Utf8 { field } => write!(f, "log entry's {field} is not UTF-8"),
            EntryError::Trailing(n) => write!(f, "log entry has {n} trailing bytes"),
        }
    }
}

impl std::error::Error for EntryError {}

/// The tag byte of each command (the table in the module doc).
fn tag_of(command: &Command) -> u8 {
    match command {
        Command::Attach { .. } => TAG_ATTACH,
        Command::Lock { .. } => TAG_LOCK,
        Command::Unlock { .. } => TAG_UNLOCK,
        Command::Downgrade { .. } => TAG_DOWNGRADE,
        Command::Renew { .. } => TAG_RENEW,
        Command::Revoke { .. } => TAG_REVOKE,
        Command::Check { .. } => TAG_CHECK,
        Command::Reset { .. } => TAG_RESET,
        Command::Detach { .. } => TAG_DETACH,
        Command::OpenSession { .. } => TAG_OPEN_SESSION,
        Command::Suspend { .. } => TAG_SUSPEND,
        Command::Resume { .. } => TAG_RESUME,
        Command::Expire => TAG_EXPIRE,
    }
}

/// Appends the encoding of `entry` to `out`, as an entry of one command (version 1). Total:
/// every `Command` has an encoding.
pub fn encode_entry(entry: &LogCommand, out: &mut Vec<u8>) {
    out.push(ENTRY_VERSION);
    encode_item(entry, out);
}

/// Commands gathered for one entry, in proposal order.
#[derive(Debug, Default)]
pub struct Batch {
    items: Vec<u8>,
    count: u32,
}

impl Batch {
    /// Appends a command; returns the bytes it added.
    pub fn push(&mut self, entry: &LogCommand) -> usize {
        let before = self.items.len();
        encode_item(entry, &mut self.items);
        self.count += 1;
        self.items.len() - before
    }

    /// Takes back the last `push`, which added `added` bytes (a proposal refused after all).
    pub fn pop(&mut self, added: usize) {
        debug_assert!(self.count > 0 && added <= self.items.len());
        self.items.truncate(self.items.len().saturating_sub(added));
        self.count = self.count.saturating_sub(1);
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The commands gathered.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// At most the size of the entry `take` would return now (exact for one command; for more,
    /// the count's varint is taken at its longest, 5 bytes), the figure the bounds check.
    pub fn encoded_len(&self) -> usize {
        match self.count {
            0 => 0,
            1 => 1 + self.items.len(),
            _ => 6 + self.items.len(),
        }
    }

    /// The entry's data (version 1 for one command, 2 for more), leaving the batch empty.
    pub fn take(&mut self) -> Vec<u8> {
        let mut data = Vec::with_capacity(self.encoded_len());
        if self.count == 1 {
            data.push(ENTRY_VERSION);
        } else {
            data.push(BATCH_VERSION);
            put_varint(&mut data, self.count.into());
        }
        data.extend_from_slice(&self.items);
        self.items.clear();
        self.count = 0;
        data
    }
}

/// Decodes a whole entry of either version, appending its commands to `out` in order. On an
/// error `out` is left as it was: an entry is applied whole or not at all.
pub fn decode_entries(bytes: &[u8], out: &mut Vec<LogCommand>) -> Result<(), EntryError> {
    let mut r = Reader { bytes };
    match r.byte("version")? {
        ENTRY_VERSION => {
            let item = r.item()?;
            r.end()?;
            out.push(item);
            Ok(())
        }
        BATCH_VERSION => {
            let count = r.u64("batch count")?;
            // Every item is at least 2 bytes (now, tag): a count beyond that is refused before
            // anything is allocated for it.
            if count < 2 || count > (r.bytes.len() / 2) as u64 {
                return Err(EntryError::Count(count));
            }
            let start = out.len();
            out.reserve(count as usize);
            for _ in 0..count {
                match r.item() {
                    Ok(item) => out.push(item),
                    Err(e) => {
                        out.truncate(start);
                        return Err(e);
                    }
                }
            }
            r.end().inspect_err(|_| out.truncate(start))
        }
        other => Err(EntryError::Version(other)),
    }
}

/// Appends one item (`now | tag | fields`).
fn encode_item(entry: &LogCommand, out: &mut Vec<u8>) {
    put_varint(out, entry.now);
    out.push(tag_of(&entry.command));
    match &entry.command {
        Command::Attach { session, label } => {
            put_varint(out, session.0);
            put_str(out, label);
        }
        Command::Lock { session, request_id, name, timeout_ms, queue_max, opts } => {
            put_head(out, *session, *request_id, name);
            let mut flags = 0;
            for (present, flag) in [
                (timeout_ms.is_some(), FLAG_TIMEOUT),
                (queue_max.is_some(), FLAG_QUEUE_MAX),
                (opts.lease_ms.is_some(), FLAG_LEASE),
                (opts.max_hold_ms.is_some(), FLAG_MAX_HOLD),
                (opts.notify_contention, FLAG_NOTIFY),
                (opts.skip_while_detached, FLAG_SKIP),
            ] {
                if present {
                    flags |= flag;
                }
            }
            out.push(flags);
            match opts.mode {
                Mode::Exclusive => out.push(MODE_EXCLUSIVE),
                Mode::Shared => out.push(MODE_SHARED),
                Mode::Permits { count, limit } => {
                    out.push(MODE_PERMITS);
                    put_varint(out, count.into());
                    put_varint(out, limit.into());
                }
            }
            for value in [*timeout_ms, *queue_max, opts.lease_ms, opts.max_hold_ms].into_iter().flatten() {
                put_varint(out, value.into());
            }
            put_varint(out, opts.lock_delay_ms.into());
        }
        Command::Unlock { session, request_id, name, token }
        | Command::Revoke { session, request_id, name, token } => {
            put_head(out, *session, *request_id, name);
            put_opt(out, *token);
        }
        Command::Downgrade { session, request_id, name, token }
        | Command::Renew { session, request_id, name, token }
        | Command::Check { session, request_id, name, token } => {
            put_head(out, *session, *request_id, name);
            put_varint(out, *token);
        }
        Command::Reset { session, request_id } => {
            put_varint(out, session.0);
            put_varint(out, (*request_id).into());
        }
        Command::Detach { session } | Command::Suspend { session } => put_varint(out, session.0),
        Command::OpenSession { session, request_id, grace_ms, secret, skip_while_detached } => {
            put_varint(out, session.0);
            put_varint(out, (*request_id).into());
            put_varint(out, (*grace_ms).into());
            out.push(u8::from(*skip_while_detached));
            out.extend_from_slice(secret);
        }
        Command::Resume { session, request_id, from, secret } => {
            put_varint(out, session.0);
            put_varint(out, (*request_id).into());
            put_varint(out, from.0);
            out.extend_from_slice(secret);
        }
        Command::Expire => {}
    }
}

/// Decodes one whole entry of one command (version 1); any byte out of place is an
/// [`EntryError`], never a panic.
pub fn decode_entry(bytes: &[u8]) -> Result<LogCommand, EntryError> {
    let mut r = Reader { bytes };
    let version = r.byte("version")?;
    if version != ENTRY_VERSION {
        return Err(EntryError::Version(version));
    }
    let item = r.item()?;
    r.end()?;
    Ok(item)
}

impl Reader<'_> {
    /// One item: `now | tag | fields`.
    fn item(&mut self) -> Result<LogCommand, EntryError> {
        let r = self;
        let now = r.u64("now")?;
        let tag = r.byte("tag")?;
        let command = match tag {
            TAG_ATTACH => Command::Attach { session: r.session("session")?, label: r.string("label")? },
            TAG_LOCK => {
                let (session, request_id, name) = r.head()?;
                let flags = r.byte("lock flags")?;
                if flags & !FLAGS_KNOWN != 0 {
                    return Err(EntryError::BadFlag { field: "lock flags", byte: flags });
                }
                let mode = match r.byte("mode")? {
                    MODE_EXCLUSIVE => Mode::Exclusive,
                    MODE_SHARED => Mode::Shared,
                    MODE_PERMITS => {
                        Mode::Permits { count: r.u32("permit count")?, limit: r.u32("permit limit")? }
                    }
                    other => return Err(EntryError::UnknownMode(other)),
                };
                let timeout_ms = r.u32_if(flags & FLAG_TIMEOUT != 0, "timeout_ms")?;
                let queue_max = r.u32_if(flags & FLAG_QUEUE_MAX != 0, "queue_max")?;
                let lease_ms = r.u32_if(flags & FLAG_LEASE != 0, "lease_ms")?;
                let max_hold_ms = r.u32_if(flags & FLAG_MAX_HOLD != 0, "max_hold_ms")?;
                let lock_delay_ms = r.u32("lock_delay_ms")?;
                let opts = LockOpts {
                    mode,
                    lease_ms,
                    max_hold_ms,
                    lock_delay_ms,
                    notify_contention: flags & FLAG_NOTIFY != 0,
                    skip_while_detached: flags & FLAG_SKIP != 0,
                };
                Command::Lock { session, request_id, name, timeout_ms, queue_max, opts }
            }
            TAG_UNLOCK => {
                let (session, request_id, name) = r.head()?;
                Command::Unlock { session, request_id, name, token: r.opt_u64("token")? }
            }
            TAG_DOWNGRADE => {
                let (session, request_id, name) = r.head()?;
                Command::Downgrade { session, request_id, name, token: r.u64("token")? }
            }
            TAG_RENEW => {
                let (session, request_id, name) = r.head()?;
                Command::Renew { session, request_id, name, token: r.u64("token")? }
            }
            TAG_REVOKE => {
                let (session, request_id, name) = r.head()?;
                Command::Revoke { session, request_id, name, token: r.opt_u64("token")? }
            }
            TAG_CHECK => {
                let (session, request_id, name) = r.head()?;
                Command::Check { session, request_id, name, token: r.u64("token")? }
            }
            TAG_RESET => Command::Reset { session: r.session("session")?, request_id: r.u32("request_id")? },
            TAG_DETACH => Command::Detach { session: r.session("session")? },
            TAG_OPEN_SESSION => Command::OpenSession {
                session: r.session("session")?,
                request_id: r.u32("request_id")?,
                grace_ms: r.u32("grace_ms")?,
                skip_while_detached: match r.byte("skip")? {
                    0 => false,
                    1 => true,
                    byte => return Err(EntryError::BadFlag { field: "skip", byte }),
                },
                secret: r.secret()?,
            },
            TAG_SUSPEND => Command::Suspend { session: r.session("session")? },
            TAG_RESUME => Command::Resume {
                session: r.session("session")?,
                request_id: r.u32("request_id")?,
                from: r.session("from")?,
                secret: r.secret()?,
            },
            TAG_EXPIRE => Command::Expire,
            other => return Err(EntryError::UnknownTag(other)),
        };
        Ok(LogCommand { now, command })
    }

    /// Refuses bytes after the last field.
    fn end(&self) -> Result<(), EntryError> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(EntryError::Trailing(n)),
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_head(out: &mut Vec<u8>, session: SessionId, request_id: u32, name: &Name) {
    put_varint(out, session.0);
    put_varint(out, request_id.into());
    put_str(out, name);
}

fn put_opt(out: &mut Vec<u8>, value: Option<u64>) {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_varint(out, v);
        }
    }
}

/// A cursor over the entry's bytes; every read checks what is left.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], EntryError> {
        if self.bytes.len() < n {
            return Err(EntryError::Truncated { field });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn byte(&mut self, field: &'static str) -> Result<u8, EntryError> {
        Ok(self.take(1, field)?[0])
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, EntryError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(field)?;
            let bits = u64::from(b & 0x7f);
            // The tenth byte carries bit 63 only.
            if shift == 63 && bits > 1 {
                return Err(EntryError::Varint { field });
            }
            value |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(EntryError::Varint { field })
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, EntryError> {
        u32::try_from(self.u64(field)?).map_err(|_| EntryError::Varint { field })
    }

    fn u32_if(&mut self, present: bool, field: &'static str) -> Result<Option<u32>, EntryError> {
        if present {
            self.u32(field).map(Some)
        } else {
            Ok(None)
        }
    }

    fn opt_u64(&mut self, field: &'static str) -> Result<Option<u64>, EntryError> {
        match self.byte(field)? {
            0 => Ok(None),
            1 => self.u64(field).map(Some),
            byte => Err(EntryError::BadFlag { field, byte }),
        }
    }

    fn session(&mut self, field: &'static str) -> Result<SessionId, EntryError> {
        self.u64(field).map(SessionId)
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str, EntryError> {
        // A length beyond the input is truncation, found before anything is allocated.
        let len = usize::try_from(self.u64(field)?).map_err(|_| EntryError::Truncated { field })?;
        std::str::from_utf8(self.take(len, field)?).map_err(|_| EntryError::Utf8 { field })
    }

    fn string(&mut self, field: &'static str) -> Result<String, EntryError> {
        self.str(field).map(str::to_owned)
    }

    fn head(&mut self) -> Result<(SessionId, u32, Name), EntryError> {
        Ok((self.session("session")?, self.u32("request_id")?, Name::new(self.str("name")?)))
    }

    fn secret(&mut self) -> Result<[u8; SESSION_SECRET_LEN], EntryError> {
        let mut secret = [0; SESSION_SECRET_LEN];
        secret.copy_from_slice(self.take(SESSION_SECRET_LEN, "secret")?);
        Ok(secret)
    }
}

#[cfg(test)]
#[path = "entry_tests.rs"]
mod tests;
