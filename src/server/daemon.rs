//! Background mode, as the original ran under the `daemons` gem: `officer start`, `stop`,
//! `status` and `restart` around a pid file.
//!
//! `start` double-forks, detaches with `setsid`, points stdin at /dev/null and stdout/stderr
//! at `<name>.output`, and binds the server in the grandchild. The parent waits on a pipe
//! for the grandchild's verdict, so a failure to bind (or a second server on the same pid
//! file) reaches the shell as a message and a non-zero exit.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::pidfile::{inspect, PidState};
use super::{Config, Server};

/// Where one named server keeps its files.
#[derive(Debug, Clone)]
pub struct DaemonPaths {
    pub pid_file: PathBuf,
    /// Holds the bound address while the server runs, for `status`.
    pub addr_file: PathBuf,
    /// The detached server's stdout and stderr.
    pub output_file: PathBuf,
}

impl DaemonPaths {
    /// `<pid_dir>/<name>.pid`, `<pid_dir>/<name>.addr`, `<log_dir>/<name>.output`.
    pub fn new(name: &str, pid_dir: &Path, log_dir: &Path) -> DaemonPaths {
        DaemonPaths {
            pid_file: pid_dir.join(format!("{name}.pid")),
            addr_file: pid_dir.join(format!("{name}.addr")),
            output_file: log_dir.join(format!("{name}.output")),
        }
    }
}

/// The system run directory when root, else a per-user runtime directory: `$XDG_RUNTIME_DIR`,
/// or `$TMPDIR/officer-UID` when that is unset. The temporary directory is shared, so anyone
/// could create `officer-UID` first and plant links to the user's files where the pid and
/// output files go: it is created private (0700), and one that already exists is used only
/// when it is a directory of this user that no one else may write.
pub fn default_pid_dir() -> Result<PathBuf, String> {
    if is_root() {
        return Ok(PathBuf::from("/run"));
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("officer-{uid}"));
    private_dir(&dir, uid).map_err(|why| {
        format!("the default pid directory {} {why}; pass -d DIR (a directory of your own)", dir.display())
    })?;
    Ok(dir)
}

/// Creates `dir` with mode 0700, or checks that the one there is a directory (not a link) of
/// `uid` that neither group nor others may write.
fn private_dir(dir: &Path, uid: u32) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot be created: {e}")),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.file_type().is_dir() {
        return Err("is not a directory".into());
    }
    if meta.uid() != uid {
        return Err(format!("belongs to uid {}, not to you", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("may be written by others (mode {:04o})", meta.mode() & 0o7777));
    }
    Ok(())
}

/// /var/log when root, else the pid directory: the output directory when neither `--log-dir`
/// nor `-d` names one (with `-d`, the output file sits next to the pid file).
pub fn default_log_dir(pid_dir: &Path) -> PathBuf {
    if is_root() {
        PathBuf::from("/var/log")
    } else {
        pid_dir.to_owned()
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Starts a detached server; returns the exit code for the shell.
///
/// Must be called while the process is single-threaded (it forks).
pub fn start(mut config: Config, paths: &DaemonPaths, init_logging: impl FnOnce()) -> i32 {
    config.pid_file = Some(paths.pid_file.clone());
    config.handle_signals = true;
    if let PidState::Running(pid) = inspect(&paths.pid_file).unwrap_or(PidState::Missing) {
        eprintln!(
            "officer is already running (pid {}) with pid file {}",
            show(pid),
            paths.pid_file.display()
        );
        return 1;
    }
    let (read_end, write_end) = match pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("officer: cannot create a pipe: {e}");
            return 1;
        }
    };
    // SAFETY: the process is single-threaded here (documented precondition), so the child
    // may run arbitrary code after fork.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("officer: fork failed: {}", io::Error::last_os_error());
            1
        }
        0 => {
            drop(read_end);
            detach_and_serve(config, paths, write_end, init_logging)
        }
        child => {
            drop(write_end);
            let mut status = 0;
            // SAFETY: waiting for the intermediate child we just forked.
            unsafe { libc::waitpid(child, &mut status, 0) };
            report_start(read_end, paths)
        }
    }
}

/// In the first child: new session, second fork, then the grandchild serves.
fn detach_and_serve(config: Config, paths: &DaemonPaths, verdict: OwnedFd, init_logging: impl FnOnce()) -> ! {
    // SAFETY: setsid/fork/_exit in a single-threaded child.
    unsafe {
        libc::setsid();
        match libc::fork() {
            0 => {}
            -1 => libc::_exit(1),
            _ => libc::_exit(0),
        }
    }
    let mut verdict = File::from(verdict);
    if let Err(e) = redirect_stdio(&paths.output_file) {
        let _ = writeln!(verdict, "error cannot open output file {}: {e}", paths.output_file.display());
        // SAFETY: terminating the detached grandchild.
        unsafe { libc::_exit(1) };
    }
    init_logging();
    let server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            let _ = writeln!(verdict, "error {e}");
            eprintln!("officer: {e}");
            // SAFETY: terminating the detached grandchild.
            unsafe { libc::_exit(1) };
        }
    };
    let addr = server.local_addr().to_string();
    let _ = std::fs::write(&paths.addr_file, format!("{addr}\n"));
    println!("officer listening on {addr}");
    let _ = writeln!(verdict, "ready {} {addr}", std::process::id());
    drop(verdict);
    let code = match server.run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("officer: {e}");
            1
        }
    };
    let _ = std::fs::remove_file(&paths.addr_file);
    std::process::exit(code)
}

fn report_start(read_end: OwnedFd, paths: &DaemonPaths) -> i32 {
    let mut text = String::new();
    let _ = File::from(read_end).read_to_string(&mut text);
    let line = text.lines().next().unwrap_or("");
    if let Some(rest) = line.strip_prefix("ready ") {
        let (pid, addr) = rest.split_once(' ').unwrap_or((rest, "?"));
        println!("officer started (pid {pid}), listening on {addr}");
        0
    } else if let Some(msg) = line.strip_prefix("error ") {
        eprintln!("officer failed to start: {msg}");
        1
    } else {
        eprintln!("officer failed to start; see {}", paths.output_file.display());
        1
    }
}

fn redirect_stdio(output: &Path) -> io::Result<()> {
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let out = OpenOptions::new().create(true).append(true).open(output)?;
    let null = File::open("/dev/null")?;
    // SAFETY: dup2 onto the standard descriptors; both sources are open files we own.
    unsafe {
        if libc::dup2(null.as_raw_fd(), 0) < 0
            || libc::dup2(out.as_raw_fd(), 1) < 0
            || libc::dup2(out.as_raw_fd(), 2) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Stops the server of `paths`: SIGTERM, wait, SIGKILL after `timeout`. Exit code 0 when
/// it is stopped (or was not running), 1 when it could not be stopped.
pub fn stop(paths: &DaemonPaths, timeout: Duration) -> i32 {
    let pid = match inspect(&paths.pid_file) {
        Ok(PidState::Running(Some(pid))) => pid,
        Ok(PidState::Running(None)) => {
            eprintln!("officer: pid file {} is locked but unreadable", paths.pid_file.display());
            return 1;
        }
        Ok(PidState::Stale(_)) => {
            remove_files(paths);
            println!("officer is not running (removed stale pid file)");
            return 0;
        }
        Ok(PidState::Missing) => {
            println!("officer is not running");
            return 0;
        }
        Err(e) => {
            eprintln!("officer: cannot read pid file {}: {e}", paths.pid_file.display());
            return 1;
        }
    };
    signal(pid, libc::SIGTERM);
    if !wait_released(paths, timeout) {
        eprintln!("officer (pid {pid}) did not stop within {timeout:?}; sending SIGKILL");
        signal(pid, libc::SIGKILL);
        if !wait_released(paths, Duration::from_secs(5)) {
            eprintln!("officer (pid {pid}) survived SIGKILL");
            return 1;
        }
    }
    remove_files(paths);
    println!("officer stopped (pid {pid})");
    0
}

/// Waits until no process holds the pid file's lock (the server exited).
fn wait_released(paths: &DaemonPaths, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !matches!(inspect(&paths.pid_file), Ok(PidState::Running(_))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

fn remove_files(paths: &DaemonPaths) {
    let _ = std::fs::remove_file(&paths.pid_file);
    let _ = std::fs::remove_file(&paths.addr_file);
}

/// Prints whether the server runs; exit codes as init scripts: 0 running, 1 dead with a
/// stale pid file, 3 not running, 4 unknown.
pub fn status(paths: &DaemonPaths) -> i32 {
    match inspect(&paths.pid_file) {
        Ok(PidState::Running(pid)) => {
            let addr = std::fs::read_to_string(&paths.addr_file).unwrap_or_default();
            let addr = addr.trim();
            println!(
                "officer is running (pid {}), listening on {}",
                show(pid),
                if addr.is_empty() { "?" } else { addr }
            );
            0
        }
        Ok(PidState::Stale(pid)) => {
            println!(
                "officer is not running (stale pid file {} names pid {})",
                paths.pid_file.display(),
                show(pid)
            );
            1
        }
        Ok(PidState::Missing) => {
            println!("officer is not running");
            3
        }
        Err(e) => {
            eprintln!("officer: cannot read pid file {}: {e}", paths.pid_file.display());
            4
        }
    }
}

fn show(pid: Option<u32>) -> String {
    pid.map_or_else(|| "?".into(), |p| p.to_string())
}
