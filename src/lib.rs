//! officer: a distributed lock server and its client.
//!
//! Module map (dependencies point one way: `protocol` <- `locks` <- `server`, `protocol` <- `client`):
//! - [`protocol`]: the binary wire codec, pure functions over byte slices (PROTOCOL.md).
//! - [`wheel`]: a hierarchical timer wheel over integer millisecond ticks.
//! - [`locks`]: the lock table, a deterministic state machine handed `now`; no I/O.
//! - [`server`]: the mio event loop, the only server code that touches sockets, signals, files
//!   and the clock; also background mode (`start`/`stop`), the pid file and `/metrics`.
//! - [`client`]: a blocking, thread-safe client over `std::net` built on `protocol`.
//! - [`cli`]: the command-line client subcommands (`officer lock`, `locks`, `top`, ...).
//! - [`bench`]: `officer bench`, a load generator driving many connections from one mio loop
//!   (a client-side tool, so it has its own sockets).
//! - [`procfs`]: CPU time, resident memory and open descriptors read from /proc.

pub mod bench;
pub mod cli;
pub mod client;
pub mod locks;
pub mod procfs;
pub mod protocol;
pub mod server;
pub mod wheel;

pub use client::Client;
