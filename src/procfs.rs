//! Reading /proc: a process's CPU time, start time and memory, and this process's open and
//! allowed descriptors. Used by the metrics endpoint (the `process_*` series, named as the
//! Prometheus client libraries name them) and by `officer bench` to measure the server under
//! test.

use std::time::Duration;

/// Fields of /proc/PID/stat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStat {
    /// User + system CPU time used.
    pub cpu: Duration,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_secs: f64,
    /// Virtual memory size in bytes.
    pub virtual_bytes: u64,
}

/// CPU time, start time and virtual size of a process, from /proc/PID/stat and /proc/stat.
pub fn process_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; the fields after its last `)` are
    // space-separated, starting with field 3 (state), so field N is at index N - 3.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after.split(' ').collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ticks = clock_ticks();
    let cpu = Duration::from_micros((field(14)? + field(15)?) * 1_000_000 / ticks);
    let start_time_secs = boot_time()? as f64 + field(22)? as f64 / ticks as f64;
    Some(ProcStat { cpu, start_time_secs, virtual_bytes: field(23)? })
}

/// CPU time (user + system) a process has used, from /proc/PID/stat.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    process_stat(pid).map(|s| s.cpu)
}

/// Resident set size of a process in bytes, from /proc/PID/status.
pub fn process_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Open file descriptors of this process.
pub fn open_fds() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64)
}

/// The soft open-file limit of this process (what `process_max_fds` reports).
pub fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only into the struct it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    // rlim_t is u64 on 64-bit Linux, not on every target.
    #[allow(clippy::unnecessary_cast)]
    let soft = limit.rlim_cur as u64;
    (rc == 0).then_some(soft)
}

/// The system's boot time in seconds since the epoch (`btime` in /proc/stat).
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_cpu_rss_and_fds_are_readable() {
        let pid = std::process::id();
        assert!(process_rss(pid).unwrap() > 0);
        assert!(process_cpu_time(pid).is_some());
        assert!(open_fds().unwrap() >= 3);
        assert!(max_fds().unwrap() >= open_fds().unwrap());
    }

    #[test]
    fn start_time_is_in_the_past_and_after_boot() {
        let stat = process_stat(std::process::id()).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let boot = boot_time().unwrap() as f64;
        assert!(
            stat.start_time_secs >= boot && stat.start_time_secs <= now + 1.0,
            "{stat:?} boot {boot} now {now}"
        );
        assert!(stat.virtual_bytes >= process_rss(std::process::id()).unwrap());
    }
}
