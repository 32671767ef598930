//! Shared helpers for the integration suites, one submodule per concern. Every suite declares
//! it with a plain `mod support;` and names what it uses (`support::raw::Raw`,
//! `support::server::TestServer`, ...); this file owns only what all of them share: the bound
//! every wait uses and where a test's state file lives.
//!
//! - `server`: the server in-process on 127.0.0.1:0 or a UNIX socket (`TestServer`).
//! - `raw`: the one raw binary-protocol connection (`Raw`), the bystander, a STATS probe.
//! - `frames`: frame builders, malformed ones included, and small request/reply helpers.
//! - `process`: the real binary as child processes (`officer run`, `officer lock`), signals,
//!   bounded polling, `/proc` probes.
//! - `proxy`: a loopback fault proxy the test resets, freezes and thaws (`Proxy`).
//! - `ops`: the binary as an operator drives it (`officer start/stop/status`, guards).
//! - `rng`: the one seeded RNG of the tests.
//! - `history`: a recorded history of lock operations and the checker that judges it.
//! - `cluster` (feature `cluster`): a 3-node `officer run --cluster` behind fault proxies.

// Each test file is its own crate and uses a different part of this module, so what one suite
// leaves unused is used by another; the check for helpers no suite uses is done by hand.
#![allow(dead_code)]

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod frames;
pub mod history;
pub mod ops;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod rng;
pub mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Generous bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

/// A fresh temporary directory inside the system temp dir, removed on drop.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// The state file a test's server uses in `dir`.
pub fn state_file_in(dir: &Path) -> PathBuf {
    dir.join("officer.state")
}
