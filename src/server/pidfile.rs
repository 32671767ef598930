//! The pid file: created and `flock`ed by the running server for its whole life, so a second
//! server on the same file is refused by the kernel's lock rather than by a racy existence
//! test, and a file left by a crash is recognised as stale (nobody holds its lock).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A pid file this process holds locked.
#[derive(Debug)]
pub struct PidFile {
    // Kept open: closing it would drop the lock.
    _file: File,
    path: PathBuf,
}

impl PidFile {
    /// Creates (or takes over a stale) pid file and writes this process's pid into it.
    pub fn acquire(path: &Path) -> io::Result<PidFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        if !try_lock(&file)? {
            let pid = read_pid(path).map_or_else(|| "unknown".to_string(), |p| p.to_string());
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another officer (pid {pid}) holds the pid file {}", path.display()),
            ));
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(PidFile { _file: file, path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file (on clean exit); the lock goes when `self` drops.
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a pid file says about its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidState {
    /// No file.
    Missing,
    /// A file nobody holds locked: its server is gone.
    Stale(Option<u32>),
    /// Locked by a live server with this pid (if readable).
    Running(Option<u32>),
}

/// Inspects a pid file without disturbing a server that holds it.
pub fn inspect(path: &Path) -> io::Result<PidState> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PidState::Missing),
        Err(e) => return Err(e),
    };
    let pid = read_pid(path);
    if try_lock(&file)? {
        Ok(PidState::Stale(pid))
    } else {
        Ok(PidState::Running(pid))
    }
}

pub fn read_pid(path: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// `flock(LOCK_EX | LOCK_NB)`: Ok(false) when another open file holds the lock.
fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: flock only takes a descriptor we own for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_stale_files_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("officer.pid");
        assert_eq!(inspect(&path).unwrap(), PidState::Missing);
        let held = PidFile::acquire(&path).unwrap();
        assert_eq!(read_pid(&path), Some(std::process::id()));
        assert_eq!(inspect(&path).unwrap(), PidState::Running(Some(std::process::id())));
        let err = PidFile::acquire(&path).unwrap_err();
        assert!(err.to_string().contains("another officer"), "{err}");
        drop(held);
        assert_eq!(inspect(&path).unwrap(), PidState::Stale(Some(std::process::id())));
        let again = PidFile::acquire(&path).unwrap();
        again.remove();
        assert_eq!(inspect(&path).unwrap(), PidState::Missing);
    }
}
