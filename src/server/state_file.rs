//! The fencing-token state file: a reservation of tokens that survives restarts.
//!
//! The file holds `officer-state 1 <reserved>`: every token issued so far is below `reserved`.
//! At start the server reads floor F, writes F + BLOCK durably (temp file, fsync, rename,
//! fsync of the directory) and then issues tokens from F. When issuing approaches the
//! reservation it writes a new one. A crash therefore skips tokens but never repeats one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Tokens reserved per write: a write every 2^32 grants, and 2^32 restarts fit in a u64.
pub const BLOCK: u64 = 1 << 32;

#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// Every token below this may have been issued; none at or above it has.
    reserved: u64,
}

impl StateFile {
    /// Reads the file (missing = fresh start), reserves a block and returns the first token.
    pub fn open(path: &Path) -> Result<(StateFile, u64), String> {
        let floor = match fs::read_to_string(path) {
            Ok(text) => parse(&text).ok_or_else(|| {
                format!("state file {} is corrupt (expected `officer-state 1 <number>`); refusing to start so no fencing token is reused. Inspect it, or remove it only if no token from this server is still in use", path.display())
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 1,
            Err(e) => return Err(format!("cannot read state file {}: {e}", path.display())),
        };
        let mut state = StateFile { path: path.to_owned(), reserved: floor };
        state.reserve(floor)?;
        Ok((state, floor))
    }

    /// Extends the reservation when `last_token` comes within half a block of it.
    pub fn maybe_extend(&mut self, last_token: u64) -> Result<(), String> {
        if last_token.saturating_add(BLOCK / 2) >= self.reserved {
            self.reserve(last_token.saturating_add(1))?;
        }
        Ok(())
    }

    fn reserve(&mut self, from: u64) -> Result<(), String> {
        let reserved = from.checked_add(BLOCK).ok_or("fencing tokens exhausted (u64)")?;
        write_durably(&self.path, &format!("officer-state 1 {reserved}\n"))
            .map_err(|e| format!("cannot write state file {}: {e}", self.path.display()))?;
        self.reserved = reserved;
        Ok(())
    }
}

fn parse(text: &str) -> Option<u64> {
    let mut words = text.split_ascii_whitespace();
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("officer-state"), Some("1"), Some(n), None) => n.parse().ok().filter(|n| *n > 0),
        _ => None,
    }
}

fn write_durably(path: &Path, contents: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    // A per-process temporary name: two servers sharing a state file by mistake must not
    // rename each other's half-written file away.
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(&dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_file_starts_at_one_and_restarts_skip_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let (_s, first) = StateFile::open(&path).unwrap();
        assert_eq!(first, 1);
        let (_s, second) = StateFile::open(&path).unwrap();
        assert_eq!(second, 1 + BLOCK);
        let (mut s, third) = StateFile::open(&path).unwrap();
        assert_eq!(third, 1 + 2 * BLOCK);
        s.maybe_extend(third + BLOCK / 2).unwrap();
        let (_s, fourth) = StateFile::open(&path).unwrap();
        assert!(fourth > third + BLOCK / 2);
    }

    #[test]
    fn corrupt_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        for bad in ["", "garbage", "officer-state 1 x", "officer-state 2 5", "officer-state 1 0"] {
            fs::write(&path, bad).unwrap();
            let err = StateFile::open(&path).unwrap_err();
            assert!(err.contains("corrupt"), "{bad:?}: {err}");
        }
    }
}
