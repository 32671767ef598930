//! Issue 16's groundwork: what a replicated officer cluster stands on, not yet driven by the
//! server's loop (docs/CLUSTER.md). Built with the `cluster` feature (off by default) on TiKV's
//! sans-IO `raft` crate (raft-rs): the application ticks, steps, proposes and handles each
//! `Ready`; the crate never touches a socket, a file or a clock.
//!
//! - `entry`: the replicated log entry, the leader's `now` plus one owned [`Command`], in a
//!   compact versioned binary form whose decoder refuses bad bytes with a typed error.
//! - `storage`: [`DiskStorage`], raft-rs's `Storage` over one checksummed, append-only file in a
//!   data directory: entries, hard state, conf state and snapshot metadata; `persist` fsyncs
//!   before anything is acknowledged, a torn tail is cut back on open, other corruption stops
//!   the node.
//!
//! - `node`: [`Node`], one sans-IO cluster node (quinn-proto style): a raft-rs `RawNode` over
//!   `DiskStorage` and the `LockTable` its committed entries build; `tick`, `step`, `propose`,
//!   and `poll` for one `Ready` (one fsync, messages to send, applied outputs, answered
//!   proposals). The leader turns its due deadlines into `Expire` entries.
//! - `snapshot`: a snapshot's data (the applied time and the table) and when a node takes one.
//! - `wire`: the framing of raft messages between nodes (length, checksum, kind, protobuf) and
//!   the handshake; a pure decoder with a size cap. Not the client protocol.
//! - `transport`: [`Transport`], the node-to-node TCP connections over a mio `Poll` the
//!   caller owns: dialing with back-off, the handshake checked, bounded send queues that drop
//!   when full, a read budget per connection per turn.
//!
//! tests/cluster_model.rs runs three `Node`s in one process, messages routed in memory through
//! drops, duplicates, partitions and crashes, and checks that every replica reaches the same
//! table.
//!
//! [`Command`]: crate::locks::Command

mod crc;
pub mod entry;
pub mod node;
pub mod snapshot;
pub mod storage;
pub mod transport;
pub mod wire;

pub use entry::{
    decode_entries, decode_entry, encode_entry, Batch, EntryError, LogCommand, BATCH_VERSION, ENTRY_VERSION,
};
pub use node::{Event, Node, NodeConfig, NodeError, NodeStats, NotLeader};
pub use storage::{DiskStorage, StoreError};
pub use transport::{Transport, TransportConfig, TransportStats};

/// raft-rs as this module uses it, so callers name the same crate version.
pub use raft;
