//! Socket types: one listener and one stream type covering TCP and UNIX sockets, so the
//! event loop handles both the same way; the mode and group of UNIX socket files, and their
//! removal when the listener goes. [`Stream`] is also the socket of `officer bench`'s mio loop
//! (which adds its own `connect` constructor), so there is one mio stream type in the crate.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use super::config::{Listen, SocketPerms};

/// The address the server actually bound (port 0 resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundAddr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for BoundAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoundAddr::Tcp(a) => write!(f, "{a}"),
            BoundAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, SocketFile),
}

/// A freshly accepted stream with the label the lock table shows for it (`None` = UNIX peer).
pub(crate) struct Accepted {
    pub stream: Stream,
    pub peer: Option<std::net::SocketAddr>,
}

impl Listener {
    /// Binds `listen`; a UNIX socket file gets `perms` before anyone can see it at its path.
    pub(crate) fn bind(listen: &Listen, perms: SocketPerms) -> io::Result<Listener> {
        match listen {
            Listen::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(*addr)?)),
            Listen::Unix(path) => {
                remove_stale_socket(path)?;
                let listener = if perms == SocketPerms::default() {
                    UnixListener::bind(path)?
                } else {
                    bind_with_perms(path, perms)?
                };
                Ok(Listener::Unix(listener, SocketFile::created(path)?))
            }
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<BoundAddr> {
        match self {
            Listener::Tcp(l) => Ok(BoundAddr::Tcp(l.local_addr()?)),
            Listener::Unix(_, file) => Ok(BoundAddr::Unix(file.path.clone())),
        }
    }

    pub(crate) fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept()?;
                // Lock traffic is small request/response frames: Nagle would only add latency.
                let _ = stream.set_nodelay(true);
                Ok(Accepted { stream: Stream::Tcp(stream), peer: Some(peer) })
            }
            Listener::Unix(l, _) => {
                let (stream, _) = l.accept()?;
                Ok(Accepted { stream: Stream::Unix(stream), peer: None })
            }
        }
    }

    /// The socket file to remove on clean exit, if any.
    pub(crate) fn socket_path(&self) -> Option<&Path> {
        match self {
            Listener::Tcp(_) => None,
            Listener::Unix(_, file) => Some(&file.path),
        }
    }

    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => registry.register(l, token, Interest::READABLE),
            Listener::Unix(l, _) => registry.register(l, token, Interest::READABLE),
        }
    }

    pub(crate) fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => registry.deregister(l),
            Listener::Unix(l, _) => registry.deregister(l),
        }
    }
}

/// Binds at a temporary name in the same directory, sets mode and group there, then renames
/// the file into place: at `path` the socket never exists with the umask's permissions, so no
/// one the operator did not allow can connect in between (and a failure leaves no file).
fn bind_with_perms(path: &Path, perms: SocketPerms) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    let tmp = temp_socket_path(path);
    // A leftover of a crashed server with this pid; nothing but a socket is removed.
    if std::fs::symlink_metadata(&tmp).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(&tmp);
    }
    let listener = UnixListener::bind(&tmp)?;
    let placed = apply_perms(&tmp, perms).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(io::Error::new(e.kind(), format!("socket {}: {e}", path.display())));
    }
    Ok(listener)
}

/// Longest path a UNIX socket can be bound at: `sun_path` holds 108 bytes with the NUL.
const SUN_PATH_MAX: usize = 107;

/// `.<name>.<pid>.tmp` beside `path`; when that would not fit in `sun_path` but `path` does,
/// the short `.<pid in base 36>.tmp` (at most 10 bytes, no longer than most socket names), so
/// `--socket-mode` never makes a path too long that binds without it.
fn temp_socket_path(path: &Path) -> PathBuf {
    let pid = std::process::id();
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{pid}.tmp"));
    let tmp = path.with_file_name(name);
    if tmp.as_os_str().len() <= SUN_PATH_MAX {
        return tmp;
    }
    let mut digits = Vec::new();
    let mut n = pid;
    loop {
        digits.push(char::from_digit(n % 36, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    let short: String = digits.iter().rev().collect();
    path.with_file_name(format!(".{short}.tmp"))
}

fn apply_perms(path: &Path, perms: SocketPerms) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(gid) = perms.group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot hand the file to group {gid}: {e}")))?;
    }
    if let Some(mode) = perms.mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot set mode {mode:04o}: {e}")))?;
    }
    Ok(())
}

/// A UNIX socket file this process created. Dropping it removes the file, but only while the
/// path still names that very file (same device and inode): a newer server's socket at the
/// same path is never touched.
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn created(path: &Path) -> io::Result<SocketFile> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile { path: path.to_owned(), dev: meta.dev(), ino: meta.ino() })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Parses `--socket-mode`: octal permission bits such as `0660` or `660`.
///
/// ```
/// assert_eq!(officer::server::parse_socket_mode("0660"), Ok(0o660));
/// assert!(officer::server::parse_socket_mode("0999").is_err());
/// ```
pub fn parse_socket_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 && !digits.is_empty() => Ok(mode),
        _ => Err(format!("{text:?} is not an octal file mode (e.g. 0660)")),
    }
}

/// Resolves `--socket-group`: a group name from the group database, or a numeric gid.
///
/// ```
/// assert_eq!(officer::server::resolve_group("0"), Ok(0));
/// assert!(officer::server::resolve_group("no-such-group-here").is_err());
/// ```
pub fn resolve_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group).map_err(|_| format!("bad group name {group:?}"))?;
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: `grp`, `buf` and `found` outlive the call and `buf.len()` is its real size;
        // getgrnam_r writes only into them.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        let rc =
            unsafe { libc::getgrnam_r(name.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(format!("cannot look up group {group:?}: {}", io::Error::from_raw_os_error(rc)));
        }
        if found.is_null() {
            return Err(format!("no group named {group:?}"));
        }
        return Ok(grp.gr_gid);
    }
}

/// A socket file left by a crashed server is replaced; one a live server answers on is not.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another server is listening on {}", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

/// A connected, non-blocking mio stream, TCP or UNIX: Read/Write and a mio [`Source`].
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(crate) fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(registry, token, interests),
            Stream::Unix(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(registry, token, interests),
            Stream::Unix(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(registry),
            Stream::Unix(s) => s.deregister(registry),
        }
    }
}
