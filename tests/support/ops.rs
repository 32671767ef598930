//! The binary as an operator drives it (tests/ops.rs): short commands run to completion with
//! their output, long-lived `officer run` children with the service manager's variables cleared,
//! guards that stop whatever a test started even when it panics, and probes for servers that
//! are not our children (`officer start` detaches).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::process::{signal, wait_exit, OFFICER};
use super::WAIT;

/// The binary with none of the service manager's variables a test runner might pass on.
pub fn officer_command() -> Command {
    let mut command = Command::new(OFFICER);
    command.env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC").env_remove("WATCHDOG_PID");
    command
}

/// What a finished command said.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Both streams, for assertion messages.
    pub fn both(&self) -> String {
        format!("status {:?}\nstdout: {}\nstderr: {}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `officer ARGS` to completion, at most `WAIT`. Output is read until the command exits,
/// not until EOF: a detached server that kept a copy of the pipes would never give EOF.
pub fn officer(args: &[&str]) -> Outcome {
    let mut child = officer_command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn officer");
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let status = wait_exit(&mut child, WAIT).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("officer {args:?} did not exit within {WAIT:?}");
    });
    let collect = |rx: mpsc::Receiver<String>| rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    Outcome { status, stdout: collect(stdout), stderr: collect(stderr) }
}

/// Reads a stream to its end on a thread; the text arrives on the channel.
fn drain(mut stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    rx
}

/// True when no process `pid` runs: none exists, or only its zombie is left (a detached
/// server is reaped by whatever adopted it, which may be slow or never happen in a container).
pub fn process_gone(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold spaces.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// True when `pid` runs the officer binary (guards must not kill a reused pid).
fn is_officer(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).next().is_some_and(|exe| exe.ends_with(b"officer")))
}

/// The pid written in a pid file.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Background servers

/// Stops the background server `name` in `pid_dir` on drop: `officer stop`, then SIGKILL to
/// every pid it was seen with, should anything survive a failed test.
pub struct DaemonGuard {
    pub pid_dir: PathBuf,
    pub name: String,
    pids: Vec<u32>,
}

impl DaemonGuard {
    pub fn new(pid_dir: &Path, name: &str) -> DaemonGuard {
        DaemonGuard { pid_dir: pid_dir.to_owned(), name: name.to_owned(), pids: Vec::new() }
    }

    /// Remembers a pid this server ran with (a restart gives a new one).
    pub fn track(&mut self, pid: u32) {
        self.pids.push(pid);
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Some(pid) = read_pid(&self.pid_dir.join(format!("{}.pid", self.name))) {
            self.pids.push(pid);
        }
        if self.pids.iter().all(|&p| process_gone(p)) {
            return;
        }
        let dir = self.pid_dir.to_string_lossy().into_owned();
        let _ = officer_command()
            .args(["stop", "-d", &dir, "--name", &self.name, "--timeout", "5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for &pid in &self.pids {
            if !process_gone(pid) && is_officer(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

/// `officer start`'s success line: `officer started (pid N), listening on ADDR`.
pub fn parse_started(stdout: &str) -> Option<(u32, String)> {
    let rest = stdout.lines().find_map(|l| l.strip_prefix("officer started (pid "))?;
    let (pid, rest) = rest.split_once("), listening on ")?;
    Some((pid.parse().ok()?, rest.trim().to_owned()))
}

// ---------------------------------------------------------------------------------------------
// Foreground servers

/// A real `officer run` child: its first stdout line, and its stderr collected on a thread.
/// Killed and reaped on drop unless the test waited for its exit.
pub struct Foreground {
    pub child: Child,
    pub first_line: String,
    stderr: mpsc::Receiver<String>,
    stderr_text: Option<String>,
}

impl Foreground {
    /// `officer run ARGS` with `envs` added, once it has printed its first stdout line (or
    /// exited without one, then `first_line` is empty).
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Foreground {
        let mut command = officer_command();
        command.arg("run").args(args).envs(envs.iter().copied());
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn officer run");
        let stderr = drain(child.stderr.take().expect("stderr"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        thread::spawn(move || {
            // Keep reading after the first line, so a later print never meets a closed pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let first_line = lines.recv_timeout(WAIT).unwrap_or_default();
        Foreground { child, first_line, stderr, stderr_text: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address of `officer listening on ADDR`.
    pub fn listening_on(&self) -> &str {
        self.first_line
            .strip_prefix("officer listening on ")
            .unwrap_or_else(|| panic!("not a listening line: {:?}", self.first_line))
    }

    /// Waits for the exit, at most `WAIT`.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_exit(&mut self.child, WAIT).unwrap_or_else(|| panic!("officer did not exit within {WAIT:?}"))
    }

    /// Everything the server wrote on stderr; only once it has exited (waits for EOF).
    pub fn stderr(&mut self) -> &str {
        if self.stderr_text.is_none() {
            self.stderr_text = Some(self.stderr.recv_timeout(WAIT).unwrap_or_default());
        }
        self.stderr_text.as_deref().unwrap_or_default()
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
