//! Process-level concerns: the open-file limit, signals and systemd notifications.

use std::io;

use log::warn;
use mio::{Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

/// Descriptors kept free for the listener, the poller, files and logging.
const FD_RESERVE: usize = 32;

/// Raises the soft open-file limit to the hard limit; returns the soft limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only write/read the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every platform
    Some(lim.rlim_cur as u64)
}

/// Raises the open-file limit and clamps `wanted` connections to what it allows.
pub(super) fn clamp_connections(wanted: usize) -> usize {
    let Some(soft) = raise_fd_limit() else { return wanted };
    let allowed = (soft as usize).saturating_sub(FD_RESERVE).max(1);
    if wanted > allowed {
        warn!("max connections clamped to the open-file limit wanted={wanted} allowed={allowed}");
    }
    wanted.min(allowed)
}

pub(super) fn register_signals(poll: &Poll, token: Token) -> io::Result<Signals> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    poll.registry().register(&mut signals, token, Interest::READABLE)?;
    Ok(signals)
}

/// Tells systemd (when NOTIFY_SOCKET is set) how the service is doing; a no-op otherwise.
pub(super) fn notify(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        warn!("systemd notification failed error={e}");
    }
}

/// Half the watchdog period systemd asks for (WATCHDOG_USEC), in ticks.
pub(super) fn watchdog_interval() -> Option<crate::wheel::Tick> {
    sd_notify::watchdog_enabled().map(|d| (d.as_millis() as crate::wheel::Tick / 2).max(1))
}
