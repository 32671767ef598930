//! What a node's snapshot holds and when a node takes one (docs/CLUSTER.md, "Snapshots").
//!
//! A snapshot's data is the replicated state after its index: the applied cluster time (so
//! the clamp `max(entry.now, applied_now)` goes on the same on a restored replica) and the
//! lock table, in the table's own format (`LockTable::encode_snapshot`).
//!
//! ```text
//! magic "OFSN" | version (1 byte = 1) | applied now (u64 LE) | the table's snapshot
//! ```
//!
//! When: a node compacts its log once the entries it applied since its last snapshot take at
//! least `max(min_bytes, 2 x the last snapshot's size)`. A snapshot costs O(table) (encode,
//! then one file rewrite and its fsyncs) inside the loop's turn; tying the interval to the
//! snapshot's own size bounds that cost to a constant amount of work per byte of log applied,
//! however large the table grows, and bounds the log kept on disk and in memory to about
//! twice the table's size (or `min_bytes`).

use std::fmt;

use crate::locks::{LockTable, SnapshotError, TableLimits, Tick};

const MAGIC: &[u8; 4] = b"OFSN";
/// The version of this header; another is refused.
pub const SNAPSHOT_VERSION: u8 = 1;
const HEADER: usize = MAGIC.len() + 1 + 8;

/// The least log bytes applied between two snapshots, by default (8 MiB).
pub const SNAPSHOT_MIN_BYTES: u64 = 8 << 20;

/// Why a snapshot's data does not restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreError {
    /// Shorter than the header.
    Truncated,
    /// Not a snapshot of this format.
    BadMagic,
    Version(u8),
    /// The table's part does not decode.
    Table(SnapshotError),
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::Truncated => write!(f, "snapshot shorter than its header"),
            RestoreError::BadMagic => write!(f, "not an officer snapshot"),
            RestoreError::Version(v) => {
                write!(f, "snapshot version {v}, this build reads {SNAPSHOT_VERSION}")
            }
            RestoreError::Table(e) => write!(f, "snapshot's table: {e}"),
        }
    }
}

impl std::error::Error for RestoreError {}

/// The state after an applied index, as snapshot data.
pub fn encode_state(applied_now: Tick, table: &LockTable) -> Vec<u8> {
    let mut data = Vec::with_capacity(HEADER + 64);
    data.extend_from_slice(MAGIC);
    data.push(SNAPSHOT_VERSION);
    data.extend_from_slice(&applied_now.to_le_bytes());
    table.encode_snapshot(&mut data);
    data
}

/// The applied time and the table a snapshot's data holds.
pub fn decode_state(data: &[u8], limits: TableLimits) -> Result<(Tick, LockTable), RestoreError> {
    let header = data.get(..HEADER).ok_or(RestoreError::Truncated)?;
    if &header[..4] != MAGIC {
        return Err(RestoreError::BadMagic);
    }
    if header[4] != SNAPSHOT_VERSION {
        return Err(RestoreError::Version(header[4]));
    }
    let mut now = [0; 8];
    now.copy_from_slice(&header[5..HEADER]);
    let table = LockTable::decode_snapshot(&data[HEADER..], limits).map_err(RestoreError::Table)?;
    Ok((u64::from_le_bytes(now), table))
}

/// When to take the next snapshot: see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    min_bytes: u64,
    /// Log bytes applied since the last snapshot (or since start).
    since: u64,
    /// The last snapshot's size.
    last_len: u64,
}

impl Policy {
    pub fn new(min_bytes: u64, last_len: u64) -> Policy {
        Policy { min_bytes: min_bytes.max(1), since: 0, last_len }
    }

    /// An applied entry of `len` bytes.
    pub fn applied(&mut self, len: usize) {
        // raft's own fields cost about as much as a small command: count them.
        self.since = self.since.saturating_add(len as u64 + 16);
    }

    pub fn due(&self) -> bool {
        self.since >= self.min_bytes.max(self.last_len.saturating_mul(2))
    }

    /// A snapshot of `len` bytes was taken or installed.
    pub fn taken(&mut self, len: usize) {
        self.since = 0;
        self.last_len = len as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_grows_with_the_snapshot() {
        // Each entry counts its bytes plus 16 for raft's fields: 20 here.
        let mut policy = Policy::new(100, 0);
        for _ in 0..4 {
            policy.applied(4);
        }
        assert!(!policy.due(), "80 of 100 bytes");
        policy.applied(4);
        assert!(policy.due());
        policy.taken(1000);
        assert!(!policy.due());
        for _ in 0..99 {
            policy.applied(4);
        }
        assert!(!policy.due(), "1980 of 2000 bytes: twice the snapshot");
        policy.applied(4);
        assert!(policy.due());
    }

    #[test]
    fn a_bad_header_is_refused() {
        let limits = TableLimits::default();
        let good = encode_state(42, &LockTable::new(1, limits));
        let (now, table) = decode_state(&good, limits).expect("restores");
        assert_eq!(now, 42);
        assert_eq!(table.state_lines(), LockTable::new(1, limits).state_lines());
        for cut in 0..HEADER {
            assert_eq!(decode_state(&good[..cut], limits).err(), Some(RestoreError::Truncated));
        }
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(decode_state(&bad, limits).err(), Some(RestoreError::BadMagic));
        let mut bad = good.clone();
        bad[4] = 2;
        assert_eq!(decode_state(&bad, limits).err(), Some(RestoreError::Version(2)));
        assert!(matches!(decode_state(&good[..HEADER], limits), Err(RestoreError::Table(_))));
    }
}
