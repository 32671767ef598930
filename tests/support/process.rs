//! The real binary as child processes: `officer run` servers that die with the test (TCP on
//! 127.0.0.1:0, the address read from the first stdout line), `officer lock` clients in their
//! own process group, signals, polling with a bound, and `/proc` probes of a child's CPU,
//! descriptors and memory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub const OFFICER: &str = env!("CARGO_BIN_EXE_officer");

/// Polls `cond` every few milliseconds until it holds; panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// Sends `sig` to `pid`; a process that is already gone only makes it fail.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Polls `try_wait` until the child exits or `limit` passes.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// Server processes

/// Runs `officer run -h 127.0.0.1 -p 0 <args>` and reads the bound address from its first
/// stdout line. The caller owns the child (kill it when done).
///
/// Unless `args` names a `--state-file`, one in a fresh temporary directory is used, so tests
/// never share the default state file.
pub fn spawn_officer(args: &[&str]) -> (Child, SocketAddr) {
    let mut command = Command::new(OFFICER);
    command.args(["run", "-h", "127.0.0.1", "-p", "0"]).args(args);
    if !args.contains(&"--state-file") {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        command.arg("--state-file").arg(dir.join("officer.state"));
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn officer");
    let addr = read_listening_line(&mut child).expect("officer did not report its address");
    let addr = addr.parse().expect("listening line has a TCP address");
    (child, addr)
}

/// Reads `officer listening on X` from the child's stdout and returns X.
pub fn read_listening_line(child: &mut Child) -> Option<String> {
    let stdout = child.stdout.take()?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).ok()?;
    line.trim().strip_prefix("officer listening on ").map(str::to_owned)
}

/// A real `officer run` child, killed (SIGCONT first, in case it is stopped, then SIGKILL) and
/// reaped on drop.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// `officer run -h 127.0.0.1 -p 0 ARGS`, once it has printed its address.
    pub fn spawn(args: &[&str]) -> ServerProcess {
        let (child, addr) = spawn_officer(args);
        ServerProcess { child, addr }
    }

    /// The same, run by `sh` after `ulimit -n NOFILE` (soft and hard), so the server cannot
    /// raise its own open-file limit.
    pub fn spawn_with_nofile(nofile: u32, args: &[&str]) -> ServerProcess {
        let script = format!("ulimit -n {nofile} && exec \"$0\" run -h 127.0.0.1 -p 0 \"$@\"");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(OFFICER)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sh");
        let addr = read_listening_line(&mut child).expect("officer did not report its address");
        ServerProcess { child, addr: addr.parse().expect("TCP address") }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        self.reap();
    }

    fn reap(&mut self) {
        signal(self.pid(), libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.reap();
    }
}

// ---------------------------------------------------------------------------------------------
// `officer lock` client processes

/// `officer lock -h 127.0.0.1 -p PORT [ARGS] NAME -- sh -c SCRIPT` in its own process group;
/// its stdout lines arrive on a channel. Drop kills the whole group (officer and the command).
pub struct LockProcess {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl LockProcess {
    pub fn spawn(port: u16, name: &str, args: &[&str], script: &str) -> LockProcess {
        let mut child = Command::new(OFFICER)
            .args(["lock", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .arg(name)
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn officer lock");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LockProcess { child, lines }
    }

    /// Holds `name` and prints `held` once it has it, then sleeps a minute.
    pub fn holder(port: u16, name: &str) -> LockProcess {
        LockProcess::spawn(port, name, &[], "echo held; exec sleep 60")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True once the command has printed `held`; false if stdout ended first or after `limit`.
    pub fn wait_held(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == "held" => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Whether `held` was printed so far (without waiting).
    pub fn printed_held(&self) -> bool {
        self.lines.try_iter().any(|l| l == "held")
    }

    /// SIGKILL to `officer lock` alone (a client crash); the command lives on until drop.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// Waits for `officer lock` to exit, at most `limit`; its exit code, if it exited.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, limit)
    }
}

impl Drop for LockProcess {
    fn drop(&mut self) {
        // SAFETY: killpg has no memory-safety preconditions; the group outlives its leader
        // while the command runs, and the id is not reused while the group exists.
        unsafe { libc::killpg(self.child.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// /proc probes

/// User + system CPU time of a process.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((utime + stime) * 1000 / hz)
}

pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/PID/fd").count()
}

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
