//! `officer lock NAME -- COMMAND`: waits for the lock, runs the command holding it, releases it
//! when the command ends, and exits with the command's status.
//!
//! While the command runs, two threads report to the main one: one waits for the child, one
//! waits for the connection to end. Whichever comes first decides: a lost connection means the
//! lock is gone, which the user hears about at once (and the command is sent SIGTERM with
//! `--kill-on-loss`), and the exit status says so once the command has ended.
//!
//! With `--session-grace` the connection has a resumable session: a connection reset while the
//! command runs is bridged by the client (it reconnects and resumes), and only a lock really
//! lost (the grace ran out, the lease, an operator) counts as lost here.
//!
//! Signals that would kill officer are caught while the command runs (see `SignalRelay`):
//! officer must outlive the command, or the lock would go while the command still works.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use std::ffi::OsString;

use super::{shown_name, LockArgs, EXIT_CANNOT_EXECUTE, EXIT_LOCK_LOST, EXIT_NOT_FOUND, EXIT_SOFTWARE};
use crate::client::{Error, LockGuard, LockOptions};

/// What the main thread waits for while the command runs.
enum Event {
    Exited(std::io::Result<ExitStatus>),
    /// The lock is gone: the connection (`None`) or the grant, as the server said (`Some`).
    Lost(Option<Error>),
}

/// The options of the lock request the flags ask for.
pub(super) fn lock_options(args: &LockArgs) -> LockOptions {
    let timeout = if args.nonblock { Some(Duration::ZERO) } else { args.timeout };
    let mut opts = LockOptions { timeout, queue_max: args.queue_max, ..LockOptions::default() };
    if args.shared {
        opts = opts.shared();
    }
    if let (Some(permits), Some(limit)) = (args.permits, args.limit) {
        opts = opts.permits(permits, limit);
    }
    opts.lease = args.lease;
    opts.max_hold = args.max_hold;
    opts.lock_delay = args.lock_delay;
    opts.skip_while_detached = args.skip_while_detached;
    opts
}

/// How often a lease is renewed: three times per lease, so one late renewal still leaves time.
fn renew_interval(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(1))
}

pub(super) fn run(args: LockArgs) -> i32 {
    // With a list of servers, only the name's server is connected and named in messages.
    let found = match args.session_grace {
        // The lock outlives a blip of the connection: the client resumes by itself.
        Some(grace) => {
            args.connect.connect_session_or_exit(grace).map(|c| (Arc::new(c), args.connect.describe()))
        }
        None => args.connect.connect_for_name(&args.name),
    };
    let (client, server) = match found {
        Ok(found) => found,
        Err(code) => return code,
    };
    if args.session_grace.is_some() && client.session().is_none() {
        eprintln!(
            "officer: the server at {server} opened no session (see its --max-session-grace); \
             a lost connection will lose lock {}",
            shown_name(&args.name)
        );
    }
    let opts = lock_options(&args);
    let guard = match client.lock_guard(&args.name, opts) {
        Ok(guard) => guard,
        Err(e) if e.is_timeout() || e.is_queue_maxed() => {
            eprintln!("officer: {}", conflict_message(&args, &e));
            return args.conflict_exit_code;
        }
        // The server's --max-waiters: the queue is full, a conflict like --queue-max (one
        // connection awaiting one lock cannot reach --max-locks-per-conn, which allows one).
        Err(e) if e.server_code() == Some(crate::protocol::ErrorCode::LimitExceeded) => {
            eprintln!(
                "officer: lock {} is busy and its queue is at the server's limit: {e}",
                shown_name(&args.name)
            );
            return args.conflict_exit_code;
        }
        Err(e) if e.server_code() == Some(crate::protocol::ErrorCode::Skipped) => {
            eprintln!(
                "officer: lock {}: its turn came while the connection was lost, and was skipped \
                 (--skip-while-detached)",
                shown_name(&args.name)
            );
            return args.conflict_exit_code;
        }
        // The error names the lock already (cut when long): say it once.
        Err(e) if e.kind() == crate::client::ErrorKind::InvalidName => return super::report(&e),
        Err(e) => {
            eprintln!("officer: cannot lock {}: {e}", shown_name(&args.name));
            return super::exit_status(&e);
        }
    };
    // Installed before the command starts, so no signal can end officer while the command
    // runs; held until the command has ended, so the lock outlives the command's cleanup.
    let signals = match SignalRelay::start() {
        Ok(relay) => Some(relay),
        Err(e) => {
            eprintln!("officer: cannot relay signals to the command: {e}");
            None
        }
    };
    let child = match spawn(&args, &guard) {
        Ok(child) => child,
        Err(code) => return code,
    };
    let pid = child.id();
    if let Some(relay) = &signals {
        relay.set_target(pid);
    }
    let (tx, rx) = mpsc::channel();
    let lost_tx = tx.clone();
    let renew_tx = tx.clone();
    let (stop_renewing, renew_stop) = mpsc::channel::<()>();
    let token = guard.token();
    thread::scope(|s| {
        s.spawn(move || {
            let mut child = child;
            let _ = tx.send(Event::Exited(child.wait()));
        });
        // Ends when the command is done too: `disconnect` below counts as the end. A grant
        // the server ends (lease, hold budget, revocation) is lost like the connection.
        s.spawn(|| {
            if let Some(e) = client.wait_lost(&args.name, token, None) {
                let grant = e.lost_reason().is_some().then_some(e);
                let _ = lost_tx.send(Event::Lost(grant));
            }
        });
        if let Some(lease) = args.lease {
            let (client, name) = (&client, &args.name);
            s.spawn(move || renew_while_running(client, name, token, lease, &renew_stop, &renew_tx));
        }
        let mut lost = false;
        let status = loop {
            match rx.recv() {
                Ok(Event::Exited(status)) => break status,
                Ok(Event::Lost(why)) if !lost => {
                    lost = true;
                    report_loss(&args, &server, why.as_ref());
                    if args.kill_on_loss {
                        terminate(pid);
                    }
                }
                Ok(Event::Lost(_)) => {}
                // Both senders gone without an exit: cannot happen, as the waiter always sends.
                Err(_) => break Err(std::io::Error::other("lost track of the command")),
            }
        };
        drop(stop_renewing);
        drop(signals);
        // Lost while the command ended: the unlock fails, and the lock was not held throughout.
        if let Err(e) = guard.unlock() {
            if !lost {
                lost = true;
                if e.is_connection_lost() || e.lost_reason().is_some() {
                    report_loss(&args, &server, e.lost_reason().is_some().then_some(&e));
                } else {
                    eprintln!("officer: releasing lock {} failed: {e}", shown_name(&args.name));
                }
            }
        }
        client.disconnect();
        match status {
            Err(e) => {
                eprintln!("officer: waiting for the command failed: {e}");
                EXIT_SOFTWARE
            }
            Ok(_) if lost => EXIT_LOCK_LOST,
            Ok(status) => exit_code(status),
        }
    })
}

/// Catches the signals that would end officer while the command runs. A signal that kills
/// officer would close the connection and release the lock while the command still runs.
/// SIGTERM and SIGHUP (aimed at officer, by a supervisor) are passed on to the command;
/// SIGINT and SIGQUIT come from the terminal, which already sent them to the command too.
struct SignalRelay {
    handle: signal_hook::iterator::Handle,
    target: Arc<Mutex<Target>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// Where relayed signals go: a signal caught before the command exists waits for it.
#[derive(Default)]
struct Target {
    pid: Option<u32>,
    pending: Option<i32>,
}

impl SignalRelay {
    fn start() -> std::io::Result<SignalRelay> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGHUP, SIGINT, SIGQUIT])?;
        let handle = signals.handle();
        let target = Arc::new(Mutex::new(Target::default()));
        let shared = Arc::clone(&target);
        let thread = thread::Builder::new().name("officer-signals".into()).spawn(move || {
            for sig in signals.forever() {
                if sig == SIGTERM || sig == SIGHUP {
                    let mut t = shared.lock().unwrap_or_else(|e| e.into_inner());
                    match t.pid {
                        Some(pid) => signal(pid, sig),
                        None => t.pending = Some(sig),
                    }
                }
            }
        })?;
        Ok(SignalRelay { handle, target, thread: Some(thread) })
    }

    /// Names the command's pid and passes on a signal that came before it started.
    fn set_target(&self, pid: u32) {
        let mut t = self.target.lock().unwrap_or_else(|e| e.into_inner());
        t.pid = Some(pid);
        if let Some(sig) = t.pending.take() {
            signal(pid, sig);
        }
    }
}

impl Drop for SignalRelay {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The command line to run: `sh -c STRING` for `-c`, else COMMAND and its arguments.
fn command_line(args: &LockArgs) -> Option<(OsString, Vec<OsString>)> {
    if let Some(line) = &args.shell_command {
        return Some(("sh".into(), vec!["-c".into(), line.clone()]));
    }
    let (program, rest) = args.command.split_first()?;
    Some((program.clone(), rest.to_vec()))
}

fn spawn(args: &LockArgs, guard: &LockGuard) -> Result<Child, i32> {
    let Some((program, rest)) = command_line(args) else { return Err(EXIT_CANNOT_EXECUTE) };
    Command::new(&program)
        .args(&rest)
        .env("OFFICER_LOCK_NAME", &args.name)
        .env("OFFICER_FENCING_TOKEN", guard.token().to_string())
        .spawn()
        .map_err(|e| {
            eprintln!("officer: cannot run {}: {e}", program.to_string_lossy());
            if e.kind() == std::io::ErrorKind::NotFound {
                EXIT_NOT_FOUND
            } else {
                EXIT_CANNOT_EXECUTE
            }
        })
}

/// Renews the lease every third of it until `stop` closes; a renewal that fails means the
/// grant is gone (or going), which the main thread hears as a loss.
fn renew_while_running(
    client: &crate::client::Client,
    name: &str,
    token: u64,
    lease: Duration,
    stop: &mpsc::Receiver<()>,
    events: &mpsc::Sender<Event>,
) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(renew_interval(lease)) {
        match client.renew(name, token) {
            Ok(_) => {}
            // The connection watcher reports a lost connection.
            Err(e) if e.is_connection_lost() => return,
            Err(e) => {
                let _ = events.send(Event::Lost(Some(e)));
                return;
            }
        }
    }
}

/// Says the lock is gone: the connection to `server` was lost, or (`grant`) the server ended
/// the grant itself (its lease, hold budget, or an operator).
fn report_loss(args: &LockArgs, server: &str, grant: Option<&Error>) {
    let stopping = if args.kill_on_loss { ", stopping the command" } else { "" };
    let name = shown_name(&args.name);
    match grant.map(|e| (e, e.lost_reason())) {
        Some((_, Some((reason, _)))) => eprintln!(
            "officer: the server at {server} ended lock {name} ({}); it is no longer held{stopping}",
            reason.as_str()
        ),
        Some((e, None)) => {
            eprintln!(
                "officer: renewing lock {name} at {server} failed: {e}; it may no longer be held{stopping}"
            )
        }
        None => eprintln!(
            "officer: lost the connection to the server at {server}; lock {name} is no longer held{stopping}"
        ),
    }
}

/// Asks the command to stop. The pid cannot have been reused: the child is reaped only by the
/// waiter thread, and a stale pid would only mean the command has already ended.
fn terminate(pid: u32) {
    signal(pid, libc::SIGTERM);
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; a bad pid only makes it fail.
    let _ = unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// The command's exit status, or 128 + the signal that killed it, as shells report it.
fn exit_code(status: ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|sig| 128 + sig)).unwrap_or(EXIT_SOFTWARE)
}

/// "lock "x" is busy: held by 10.0.0.5:41234, 2 waiting".
fn conflict_message(args: &LockArgs, e: &Error) -> String {
    let queue = e.queue().unwrap_or(&[]);
    let who = match queue.split_first() {
        None => "it was released just now".to_owned(),
        Some((holder, [])) => format!("held by {holder}"),
        Some((holder, waiting)) => format!("held by {holder}, {} waiting", waiting.len()),
    };
    let name = shown_name(&args.name);
    if e.is_queue_maxed() {
        let max = args.queue_max.unwrap_or(0);
        format!("lock {name} has {} in its queue (--queue-max {max}): {who}", queue.len())
    } else if args.nonblock || args.timeout.is_some_and(|t| t.is_zero()) {
        format!("lock {name} is busy: {who}")
    } else {
        let secs = args.timeout.map_or(0.0, |t| t.as_secs_f64());
        format!("timed out after {secs}s waiting for lock {name}: {who}")
    }
}
