//! The fencing-token state file: a reservation of tokens that survives restarts.
//!
//! The file holds exactly `officer-state 2 <reserved> <fnv>\n`: every token issued so far is
//! below `reserved`, and `<fnv>` is the FNV-1a 64 checksum (16 lowercase hex digits) of the
//! text before it, so a truncated or edited file is refused instead of silently reusing
//! tokens (`officer-state 1 42949` is the first digits of `4294967297`). At start the server
//! reads floor F, writes F + BLOCK durably (temp file, fsync, rename, fsync of the directory)
//! and then issues tokens from F. When issuing approaches the reservation it writes a new one.
//! A crash therefore skips tokens but never repeats one.
//!
//! Version 1 (`officer-state 1 <reserved>\n`, no checksum) is still read, but only when it is
//! byte for byte what the old server wrote, so an upgrade keeps its tokens; the next write
//! is version 2.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Tokens reserved per write: a write every 2^32 grants, and 2^32 restarts fit in a u64.
/// Every reservation the server writes is therefore above BLOCK.
pub const BLOCK: u64 = 1 << 32;

/// The longest file the server writes is 52 bytes; anything much longer is not ours.
const MAX_LEN: u64 = 128;

/// Why the state file cannot be used. Each message names the file and says what is wrong.
#[derive(Debug)]
pub enum StateError {
    /// Something other than a regular file is at the path (reading a FIFO would hang start-up).
    NotRegularFile { path: PathBuf, kind: &'static str },
    /// The file exists but cannot be opened or read.
    Read { path: PathBuf, source: io::Error },
    /// The file is not exactly what the server writes.
    Corrupt { path: PathBuf, problem: Corruption },
    /// The new reservation cannot be written durably (the temp file is removed).
    Write { path: PathBuf, source: io::Error },
    /// The next reservation would overflow a u64.
    Exhausted { path: PathBuf },
    /// Another live server holds the file's lock (`<file>.lock`): two servers on one file
    /// would each reserve from the other's writes, and a restart could reuse tokens.
    InUse { path: PathBuf },
}

/// What is wrong with a state file's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corruption {
    Empty,
    TooLong,
    NotAscii,
    /// The last byte is not a newline: the file was cut short (or written by hand).
    MissingNewline,
    /// It does not start with `officer-state `.
    NotAStateFile,
    UnknownVersion(String),
    BadNumber,
    BadChecksum,
    /// A reservation no server writes (at most 2^32: the first one is already 1 + 2^32).
    ReservationTooSmall(u64),
    /// Right fields, wrong spelling (leading zeros, extra spaces, a `+`).
    NotCanonical,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::Empty => f.write_str("it is empty"),
            Corruption::TooLong => write!(f, "it is longer than {MAX_LEN} bytes"),
            Corruption::NotAscii => f.write_str("it holds bytes that are not ASCII text"),
            Corruption::MissingNewline => f.write_str("it does not end with a newline (truncated?)"),
            Corruption::NotAStateFile => f.write_str("it does not start with `officer-state `"),
            Corruption::UnknownVersion(v) => write!(f, "format version {v:?} is not 1 or 2"),
            Corruption::BadNumber => f.write_str("the reservation is not a number"),
            Corruption::BadChecksum => f.write_str("the checksum does not match (truncated or edited)"),
            Corruption::ReservationTooSmall(n) => {
                write!(f, "reservation {n} is below any the server writes (more than 2^32)")
            }
            Corruption::NotCanonical => f.write_str("it is not spelled exactly as the server writes it"),
        }
    }
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::NotRegularFile { path, kind } => write!(
                f,
                "state file {} is {kind}, not a regular file; give --state-file a regular file path",
                path.display()
            ),
            StateError::Read { path, source } => write!(f, "cannot read state file {}: {source}", path.display()),
            StateError::Corrupt { path, problem } => write!(
                f,
                "state file {} is corrupt: {problem}; expected exactly `officer-state 2 <reservation> <checksum>` and a newline. Refusing to start so no fencing token is reused. Inspect it, or remove it only if no token from this server is still in use",
                path.display()
            ),
            StateError::Write { path, source } => write!(f, "cannot write state file {}: {source}", path.display()),
            StateError::Exhausted { path } => {
                write!(f, "fencing tokens exhausted (u64) in state file {}", path.display())
            }
            StateError::InUse { path } => write!(
                f,
                "state file {} is in use by another server (its lock {} is held); give each server its own --state-file",
                path.display(),
                lock_path(path).display()
            ),
        }
    }
}

impl std::error::Error for StateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StateError::Read { source, .. } | StateError::Write { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// Holds the exclusive lock on `<file>.lock` for the server's life (released by the
    /// kernel when the process ends, however it ends).
    _lock: File,
    /// Every token below this may have been issued; none at or above it has.
    reserved: u64,
}

impl StateFile {
    /// Reads the file (missing = fresh start), reserves a block and returns the first token.
    pub fn open(path: &Path) -> Result<(StateFile, u64), StateError> {
        // A link is followed for the write as for the read: renaming over the link itself
        // would leave the file it points to (a volume, say) at the old reservation, and a
        // restart that sees the link again would reuse every token granted since.
        let path =
            &follow_links(path).map_err(|source| StateError::Read { path: path.to_owned(), source })?;
        // What is not a regular file is refused before anything is created beside it.
        if let Some(kind) = fs::metadata(path).ok().map(|m| m.file_type()).filter(|k| !k.is_file()) {
            return Err(StateError::NotRegularFile { path: path.to_owned(), kind: describe(kind) });
        }
        // Locked before the read: a second server must not even read a floor the first is
        // about to move.
        let lock = lock_exclusively(path)?;
        let floor = match read_state(path)? {
            Some(bytes) => {
                parse(&bytes).map_err(|problem| StateError::Corrupt { path: path.to_owned(), problem })?
            }
            None => 1,
        };
        let mut state = StateFile { path: path.to_owned(), _lock: lock, reserved: floor };
        state.reserve(floor)?;
        Ok((state, floor))
    }

    /// Extends the reservation when `last_token` comes within half a block of it.
    pub fn maybe_extend(&mut self, last_token: u64) -> Result<(), StateError> {
        if last_token.saturating_add(BLOCK / 2) >= self.reserved {
            self.reserve(last_token.saturating_add(1))?;
        }
        Ok(())
    }

    fn reserve(&mut self, from: u64) -> Result<(), StateError> {
        let reserved =
            from.checked_add(BLOCK).ok_or_else(|| StateError::Exhausted { path: self.path.clone() })?;
        write_durably(&self.path, render(reserved).as_bytes())
            .map_err(|source| StateError::Write { path: self.path.clone(), source })?;
        self.reserved = reserved;
        Ok(())
    }
}

/// `<file>.lock`, beside the state file (the state file itself is replaced by every write, so
/// a lock on it would not outlive the first reservation).
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    path.with_file_name(name)
}

/// Takes the exclusive, non-blocking flock(2) on `<file>.lock`, creating it (and the
/// directory) when missing. The file is never removed: removing a lock file races with the
/// next server opening it.
fn lock_exclusively(path: &Path) -> Result<File, StateError> {
    use std::os::fd::AsRawFd;
    let lock = lock_path(path);
    let err = |source| StateError::Write { path: path.to_owned(), source };
    if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&lock);
    let file = file.map_err(err)?;
    // A child forked by any thread holds a copy of a descriptor until it execs, and with it
    // the flock: a server that stopped an instant ago can still seem to hold the file through
    // a child its process (an embedding application, a test harness) was spawning. Such a
    // copy goes within milliseconds; a live server's lock does not.
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err(e));
        }
        if std::time::Instant::now() >= deadline {
            return Err(StateError::InUse { path: path.to_owned() });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// How long a held `<file>.lock` is retried before the file counts as in use.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// The path a chain of symbolic links ends at (the path itself when it is no link), also
/// when the last target does not exist yet: that is where a fresh reservation goes.
fn follow_links(path: &Path) -> io::Result<PathBuf> {
    let mut path = path.to_owned();
    for _ in 0..40 {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&path)?;
                // A relative target is relative to the link's directory; joining an absolute
                // one replaces the directory.
                path = path.parent().map_or_else(|| target.clone(), |dir| dir.join(&target));
            }
            _ => return Ok(path),
        }
    }
    Err(io::Error::from_raw_os_error(libc::ELOOP))
}

/// The file's bytes, `None` when it does not exist. Opened non-blocking and checked with
/// fstat before reading, so a FIFO or device at the path is refused instead of hanging.
fn read_state(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    let read_err = |source| StateError::Read { path: path.to_owned(), source };
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let kind = file.metadata().map_err(read_err)?.file_type();
    if !kind.is_file() {
        return Err(StateError::NotRegularFile { path: path.to_owned(), kind: describe(kind) });
    }
    let mut bytes = Vec::new();
    file.take(MAX_LEN + 1).read_to_end(&mut bytes).map_err(read_err)?;
    Ok(Some(bytes))
}

fn describe(kind: fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// What the server writes for a reservation: version 2 with its checksum.
fn render(reserved: u64) -> String {
    let body = format!("officer-state 2 {reserved}");
    format!("{body} {:016x}\n", fnv1a64(body.as_bytes()))
}

/// What the old server wrote (read for upgrades only).
fn render_v1(reserved: u64) -> String {
    format!("officer-state 1 {reserved}\n")
}

/// The reservation in `bytes`, accepted only when the bytes are exactly what a server wrote.
fn parse(bytes: &[u8]) -> Result<u64, Corruption> {
    if bytes.is_empty() {
        return Err(Corruption::Empty);
    }
    if bytes.len() as u64 > MAX_LEN {
        return Err(Corruption::TooLong);
    }
    let text = std::str::from_utf8(bytes).ok().filter(|t| t.is_ascii()).ok_or(Corruption::NotAscii)?;
    let line = text.strip_suffix('\n').ok_or(Corruption::MissingNewline)?;
    let rest = line.strip_prefix("officer-state ").ok_or(Corruption::NotAStateFile)?;
    let (version, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let number = rest.split(' ').next().unwrap_or("");
    let reserved: u64 = number.parse().map_err(|_| Corruption::BadNumber)?;
    let expected = match version {
        "1" => render_v1(reserved),
        "2" => render(reserved),
        other => return Err(Corruption::UnknownVersion(other.to_owned())),
    };
    if expected != text {
        let checksum_differs = version == "2" && expected.split(' ').count() == line.split(' ').count();
        return Err(if checksum_differs && canonical(number) {
            Corruption::BadChecksum
        } else {
            Corruption::NotCanonical
        });
    }
    if reserved <= BLOCK {
        return Err(Corruption::ReservationTooSmall(reserved));
    }
    Ok(reserved)
}

/// Decimal digits as `u64::to_string` writes them (no sign, no leading zero).
fn canonical(number: &str) -> bool {
    number.parse::<u64>().is_ok_and(|n| n.to_string() == number)
}

/// FNV-1a, 64 bits: enough to catch truncation and typing, no dependency.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn write_durably(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_durably_with(path, contents, |file, bytes| file.write_all(bytes))
}

/// Writes `contents` to a temp file with `write`, fsyncs, renames it over `path` and fsyncs
/// the directory. On any failure before the rename is done the temp file is removed, so a
/// full disk does not leave `<file>.tmp.<pid>` behind.
fn write_durably_with(
    path: &Path,
    contents: &[u8],
    write: impl FnOnce(&mut File, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let tmp = temp_path(path, &dir);
    let written = write_temp(&tmp, contents, write).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(&dir)?.sync_all()
}

/// A per-process temporary name: two servers sharing a state file by mistake must not
/// rename each other's half-written file away.
fn temp_path(path: &Path, dir: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".tmp.{}", std::process::id()));
    dir.join(name)
}

fn write_temp(
    tmp: &Path,
    contents: &[u8],
    write: impl FnOnce(&mut File, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    // A leftover of a crashed process with the same pid is ours to replace; create_new then
    // never opens (and blocks on) a FIFO or follows a link someone left at the name.
    let _ = fs::remove_file(tmp);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o644).open(tmp)?;
    write(&mut file, contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corrupt(bytes: &[u8]) -> Corruption {
        match parse(bytes) {
            Err(problem) => problem,
            Ok(n) => panic!("{:?} accepted as {n}", String::from_utf8_lossy(bytes)),
        }
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp."))
            .collect()
    }

    #[test]
    fn fresh_file_starts_at_one_and_restarts_skip_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        // Each `drop` is a server that stopped: one file serves one server at a time.
        let (s, first) = StateFile::open(&path).unwrap();
        assert_eq!(first, 1);
        drop(s);
        let (s, second) = StateFile::open(&path).unwrap();
        assert_eq!(second, 1 + BLOCK);
        drop(s);
        let (mut s, third) = StateFile::open(&path).unwrap();
        assert_eq!(third, 1 + 2 * BLOCK);
        s.maybe_extend(third + BLOCK / 2).unwrap();
        drop(s);
        let (_s, fourth) = StateFile::open(&path).unwrap();
        assert!(fourth > third + BLOCK / 2);
    }

    #[test]
    fn the_server_writes_version_2_with_a_checksum_and_a_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        StateFile::open(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        // FNV-1a 64 of "officer-state 2 4294967297", computed independently.
        assert_eq!(
            text,
            format!("officer-state 2 4294967297 {:016x}\n", fnv1a64(b"officer-state 2 4294967297"))
        );
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(parse(text.as_bytes()), Ok(4_294_967_297));
    }

    #[test]
    fn corrupt_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        for bad in ["", "garbage", "officer-state 1 x", "officer-state 2 5", "officer-state 1 0"] {
            fs::write(&path, bad).unwrap();
            let err = StateFile::open(&path).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, StateError::Corrupt { .. }), "{bad:?}: {msg}");
            assert!(msg.contains("corrupt") && msg.contains(&path.display().to_string()), "{bad:?}: {msg}");
        }
    }

    #[test]
    fn truncated_and_edited_files_are_refused_with_the_reason() {
        let good = render(4_294_967_297);
        // Every proper prefix of a good file is refused: truncation never yields a smaller floor.
        for cut in 0..good.len() {
            corrupt(&good.as_bytes()[..cut]);
        }
        assert_eq!(corrupt(b"officer-state 1 42949"), Corruption::MissingNewline);
        assert_eq!(corrupt(b"officer-state 1 4294967297"), Corruption::MissingNewline);
        assert_eq!(corrupt(b"officer-state 1 42949\n"), Corruption::ReservationTooSmall(42949));
        assert_eq!(corrupt(b"officer-state 1 04294967297\n"), Corruption::NotCanonical);
        assert_eq!(corrupt(b"officer-state 1 +4294967297\n"), Corruption::NotCanonical);
        assert_eq!(corrupt(b"officer-state 1  4294967297\n"), Corruption::BadNumber);
        assert_eq!(corrupt(b"officer-state 1 4294967297 \n"), Corruption::NotCanonical);
        assert_eq!(corrupt(b"officer-state 1 4294967297\n\n"), Corruption::BadNumber);
        assert_eq!(corrupt(b"officer-state 3 4294967297\n"), Corruption::UnknownVersion("3".into()));
        assert_eq!(corrupt(b"hello 1 4294967297\n"), Corruption::NotAStateFile);
        assert_eq!(corrupt("officer-state 1 4294967297é\n".as_bytes()), Corruption::NotAscii);
        assert_eq!(corrupt(&[b'9'; 200]), Corruption::TooLong);
        // One digit changed in the number, or in the checksum.
        let edited = good.replacen("4294967297", "4294967296", 1);
        assert_eq!(corrupt(edited.as_bytes()), Corruption::BadChecksum);
        let mut sum = good.clone().into_bytes();
        let last_digit = sum.len() - 2;
        sum[last_digit] = if sum[last_digit] == b'0' { b'1' } else { b'0' };
        assert_eq!(corrupt(&sum), Corruption::BadChecksum);
        let without_sum = "officer-state 2 4294967297\n";
        assert_eq!(corrupt(without_sum.as_bytes()), Corruption::NotCanonical);
    }

    #[test]
    fn an_exact_version_1_file_is_upgraded_and_keeps_its_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        fs::write(&path, "officer-state 1 8589934593\n").unwrap();
        let (_s, first) = StateFile::open(&path).unwrap();
        assert_eq!(first, 8_589_934_593);
        assert_eq!(fs::read_to_string(&path).unwrap(), render(8_589_934_593 + BLOCK));
    }

    #[test]
    fn a_fifo_or_directory_at_the_path_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // A regression would block in open(2) forever: run it where the test can give up.
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || tx.send(StateFile::open(&path).map(|_| ()).map_err(|e| e.to_string())));
        let err =
            rx.recv_timeout(std::time::Duration::from_secs(20)).expect("open blocked on a FIFO").unwrap_err();
        assert!(err.contains("is a FIFO, not a regular file") && err.contains("fifo"), "{err}");
        let err = StateFile::open(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::NotRegularFile { kind: "a directory", .. }), "{err}");
    }

    #[test]
    fn a_failed_write_removes_its_temp_file_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let (_s, _) = StateFile::open(&path).unwrap();
        let before = fs::read(&path).unwrap();
        // Half the bytes go out, then the disk is full.
        let err = write_durably_with(&path, render(99 * BLOCK).as_bytes(), |file, bytes| {
            file.write_all(&bytes[..bytes.len() / 2])?;
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        })
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_failed_rename_removes_its_temp_file_and_reports_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let (mut state, first) = StateFile::open(&path).unwrap();
        // The state path turns into a non-empty directory: rename(2) over it fails.
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        fs::write(path.join("x"), "x").unwrap();
        let err = state.maybe_extend(first + BLOCK).unwrap_err();
        assert!(matches!(err, StateError::Write { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn one_file_serves_one_server_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let (mut a, a_first) = StateFile::open(&path).unwrap();
        // Without the lock, b would reserve from a's write, and after a has granted many
        // tokens a slower b's next write would put the file below them.
        let err = StateFile::open(&path).unwrap_err();
        assert!(matches!(err, StateError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("state.lock"), "{err}");
        a.maybe_extend(a_first + 5 * BLOCK).unwrap();
        drop(a);
        let (_b, b_first) = StateFile::open(&path).unwrap();
        assert!(b_first > a_first + 5 * BLOCK);
    }

    #[test]
    fn a_stale_temp_file_of_this_pid_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let tmp = temp_path(&path, dir.path());
        OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).unwrap();
        StateFile::open(&path).unwrap();
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }
}
