//! officer: a distributed lock server and its client.
//!
//! Module map (dependencies point one way: `protocol` <- `locks` <- `server`, `protocol` <- `client`):
//! - [`protocol`]: the binary wire codec, pure functions over byte slices (PROTOCOL.md).
//! - [`wheel`]: a hierarchical timer wheel over integer millisecond ticks.
//! - [`locks`]: the lock table, a deterministic state machine handed `now`; no I/O.
//! - `server`: the mio event loop, the only code that touches sockets, signals and the clock.
//! - `client`: a blocking client over `std::net` built on `protocol`.

pub mod bench;
pub mod cli;
pub mod client;
pub mod locks;
pub mod procfs;
pub mod protocol;
pub mod server;
pub mod wheel;
