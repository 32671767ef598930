//! The fencing-token state file as an operator meets it: the real binary refuses a truncated,
//! edited or non-regular state file (naming the file and the reason), leaves no temp file
//! behind when the write fails, refuses to pick a temporary directory when it has no home,
//! and an upgrade from the version-1 format keeps the tokens going up.

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use officer::protocol::{LockRequest, Request, Response};
use support::raw::Raw;
use support::server::TestServer;
use support::WAIT;

/// Runs the binary with `args` to its exit; a run that does not end within WAIT is killed
/// and fails the test (a FIFO state file used to hang start-up forever).
fn run_to_exit(mut command: Command) -> Output {
    let child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(WAIT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // SAFETY: our own child, still unreaped (the thread is blocked in wait).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("officer run did not exit within {WAIT:?}");
        }
    }
}

fn officer_run(state: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_officer"));
    command.args(["run", "-h", "127.0.0.1", "-p", "0", "--state-file"]).arg(state);
    command
}

/// Exit code 1, nothing listening, and stderr that says `what` about `state`.
fn assert_refused(output: &Output, state: &Path, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "stdout {stdout} stderr {stderr}");
    assert!(!stdout.contains("listening"), "it started: {stdout}");
    assert!(stderr.contains(&state.display().to_string()), "file not named: {stderr}");
    assert!(stderr.contains(what), "expected {what:?} in: {stderr}");
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp."))
        .collect()
}

#[test]
fn a_truncated_state_file_stops_the_server_with_the_reason() {
    let dir = support::temp_dir();
    let state = support::state_file_in(dir.path());
    // The first digits of 4294967297: accepted as 42949 before, and tokens were reused.
    std::fs::write(&state, "officer-state 1 42949").unwrap();
    assert_refused(&run_to_exit(officer_run(&state)), &state, "does not end with a newline");
    std::fs::write(&state, "officer-state 1 42949\n").unwrap();
    assert_refused(&run_to_exit(officer_run(&state)), &state, "below any the server writes");
    // The file is left exactly as it was, for the operator to inspect.
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "officer-state 1 42949\n");
}

#[test]
fn an_edited_reservation_fails_its_checksum() {
    let dir = support::temp_dir();
    let state = support::state_file_in(dir.path());
    drop(TestServer::start_with(|c| c.state_file = Some(state.clone())));
    let written = std::fs::read_to_string(&state).unwrap();
    assert!(written.starts_with("officer-state 2 4294967297 ") && written.ends_with('\n'), "{written}");
    // Someone "resets" the counter by hand, keeping the rest of the line.
    std::fs::write(&state, written.replacen("4294967297", "9", 1)).unwrap();
    assert_refused(&run_to_exit(officer_run(&state)), &state, "checksum does not match");
}

#[test]
fn a_fifo_at_the_state_path_is_refused_at_once() {
    let dir = support::temp_dir();
    let fifo = dir.path().join("state.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    assert_refused(&run_to_exit(officer_run(&fifo)), &fifo, "is a FIFO, not a regular file");
}

#[test]
fn a_write_that_fails_leaves_no_temp_file() {
    let dir = support::temp_dir();
    let state = support::state_file_in(dir.path());
    // No file may grow past 0 bytes; SIGXFSZ ignored so write(2) fails with EFBIG, as a full
    // disk fails with ENOSPC after the temp file was created.
    let mut command = Command::new("sh");
    command
        .args(["-c", "trap '' XFSZ; ulimit -f 0 && exec \"$@\"", "sh", env!("CARGO_BIN_EXE_officer")])
        .args(["run", "-h", "127.0.0.1", "-p", "0", "--state-file"])
        .arg(&state);
    assert_refused(&run_to_exit(command), &state, "cannot write state file");
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
    assert!(!state.exists());
}

#[test]
fn without_home_the_server_refuses_to_pick_a_temporary_directory() {
    for xdg in [None, Some("relative/state")] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_officer"));
        command.args(["run", "-h", "127.0.0.1", "-p", "0"]).env_clear().env("PATH", "/usr/bin:/bin");
        if let Some(xdg) = xdg {
            command.env("XDG_STATE_HOME", xdg);
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Root has a fixed default; the fallback is what every other user gets.
            command.uid(65534).gid(65534);
        }
        let output = run_to_exit(command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{xdg:?}: {stderr}");
        assert!(stderr.contains("--state-file"), "{xdg:?}: {stderr}");
        assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"));
    }
}

#[test]
fn a_version_1_file_is_upgraded_and_tokens_keep_rising() {
    let dir = support::temp_dir();
    let state = support::state_file_in(dir.path());
    // Exactly what the old server wrote after three starts.
    std::fs::write(&state, "officer-state 1 12884901889\n").unwrap();
    let mut last = 0;
    for restart in 0..2 {
        let server = TestServer::start_with(|c| c.state_file = Some(state.clone()));
        let mut raw = Raw::connect(server.addr());
        let lock = Request::Lock(LockRequest { name: "t", timeout_ms: None, queue_max: None });
        let Response::Acquired { token } = raw.call(&lock) else { panic!("not acquired") };
        assert!(token > last && token >= 12_884_901_889, "restart {restart}: token {token} after {last}");
        last = token;
        server.stop();
        assert!(std::fs::read_to_string(&state).unwrap().starts_with("officer-state 2 "));
    }
    assert_eq!(last, 12_884_901_889 + (1 << 32));
}

/// The first token a fresh server on `state` grants.
fn first_token(state: &Path) -> u64 {
    let server = TestServer::start_with(|c| c.state_file = Some(state.to_owned()));
    let mut raw = Raw::connect(server.addr());
    let lock = Request::Lock(LockRequest { name: "t", timeout_ms: None, queue_max: None });
    let Response::Acquired { token } = raw.call(&lock) else { panic!("not acquired") };
    server.stop();
    token
}

#[test]
fn a_symlinked_state_file_is_written_through_the_link() {
    // The image ships /var/lib/officer/officer.state -> /volume/officer.state: the link lives
    // on storage that a new container starts afresh, the file it points to persists.
    let dir = support::temp_dir();
    let volume = dir.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    let target = volume.join("officer.state");
    let link = dir.path().join("officer.state");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let first = first_token(&link);
    let second = first_token(&link);
    assert!(second > first, "{second} after {first}");
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_symlink(), "the link was replaced by a regular file");
    // A new container: the link again, pointing at the volume's file, which must hold a
    // reservation above every token granted through the link.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let third = first_token(&link);
    assert!(third > second, "token {third} reused after {second}");
    assert!(temp_files(dir.path()).is_empty() && temp_files(&volume).is_empty());
}

#[test]
fn a_second_server_on_the_same_state_file_is_refused() {
    // Two servers on one file each reserve from what the other wrote: the one that granted
    // fewer tokens can write a reservation below the other's tokens, and the other's restart
    // reuses them. Only one server may use a state file at a time.
    let dir = support::temp_dir();
    let state = support::state_file_in(dir.path());
    let first = TestServer::start_with(|c| c.state_file = Some(state.clone()));
    let before = std::fs::read_to_string(&state).unwrap();
    assert_refused(&run_to_exit(officer_run(&state)), &state, "in use by another server");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), before, "the refused server wrote nothing");
    first.stop();
    // Once the first is gone the file is free again.
    let second = TestServer::start_with(|c| c.state_file = Some(state.clone()));
    second.stop();
}
