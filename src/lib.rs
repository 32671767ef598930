//! officer: a distributed lock server and its client.
//!
//! Module map (dependencies point one way: `protocol` <- `locks` <- `server`, `protocol` <-
//! `client`), with the cargo feature that builds each (Cargo.toml `[features]`; the default is
//! `cli`, which implies `server` and `client`). README.md "Layout" maps each behaviour of
//! PROTOCOL.md to the one file that implements it.
//! - [`protocol`] (always): the binary wire codec, pure functions over byte slices (PROTOCOL.md).
//! - [`client`] (`client`): the blocking, thread-safe client over `std::net` and the sharded
//!   client over several servers, built on `protocol` only; `default-features = false,
//!   features = ["client"]` builds only these two (byteorder, log). With the `tokio` feature
//!   (off by default), `client::tokio` adds the async client and async sharded client, sharing
//!   every step that is not I/O (`client/answer.rs`, `client/handshake.rs`).
//! - [`wheel`] (`server`): a hierarchical timer wheel over integer millisecond ticks.
//! - [`locks`] (`server`): the lock table, a deterministic state machine handed `now`, driven by
//!   one owned [`locks::Command`] through [`locks::LockTable::apply`] and keyed by table-owned
//!   [`locks::SessionId`]s; its outputs name their lock. No I/O.
//! - [`server`] (`server`): the mio event loop, the only server code that touches sockets,
//!   signals, files and the clock. Each connection's protocol is a sans-IO session
//!   (`server/session/`: bytes and `now` in, steps and a deadline out); the loop reads, budgets,
//!   turns steps into table commands (`server/dispatch.rs`) and writes. Also background mode
//!   (`start`/`stop`), the pid file, the state file and `/metrics`.
//! - `cluster` (feature `cluster`, off by default): the replicated cluster's parts on raft-rs:
//!   the log entry (`now` + one `Command`), the durable raft log storage, the sans-IO node and
//!   the peer transport; `server/cluster.rs` drives them for `officer run --cluster`
//!   (docs/CLUSTER.md).
//! - [`procfs`] (`server`): CPU time, resident memory and open descriptors read from /proc.
//! - [`cli`] (`cli`): the command-line client subcommands (`officer lock`, `locks`, `top`, ...).
//! - [`bench`](mod@bench) (`cli`): `officer bench`, a load generator driving many connections
//!   from one mio loop (a client-side tool: it opens its own connections, over the server's mio
//!   stream type).

// The map above links every module; a build without `cli` leaves some out, and their links are
// expected to dangle there (the default build's docs check them).
#![cfg_attr(not(feature = "cli"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "cli")]
pub mod bench;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "cluster")]
pub mod cluster;
#[cfg(feature = "server")]
pub mod locks;
#[cfg(feature = "server")]
pub mod procfs;
pub mod protocol;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod wheel;

#[cfg(feature = "client")]
pub use client::Client;
