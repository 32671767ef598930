//! Issue 16's groundwork: what a replicated officer cluster stands on, with no I/O between
//! nodes yet (docs/CLUSTER.md). Built with the `cluster` feature (off by default) on TiKV's
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
//! tests/cluster_model.rs runs three `RawNode`s in one process over these two, each applying
//! committed entries to its own `LockTable`, and checks that every replica reaches the same table.
//!
//! [`Command`]: crate::locks::Command

mod crc;
pub mod entry;
pub mod storage;

pub use entry::{decode_entry, encode_entry, EntryError, LogCommand, ENTRY_VERSION};
pub use storage::{DiskStorage, StoreError};

/// raft-rs as this module uses it, so callers name the same crate version.
pub use raft;
