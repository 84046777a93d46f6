//! Signals of the runner and the guard: blocked in every thread and received by the main thread
//! alone, so that Ctrl-C, SIGTERM, SIGHUP and a child's death all arrive as events in one loop.

use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

/// SIGINT, SIGTERM, SIGHUP and SIGCHLD.
pub fn set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        set.add(signal);
    }
    set
}

/// Blocks the set in the calling thread; call it before any thread is spawned so all inherit
/// the mask. Children get an empty mask back: std resets it between fork and exec.
pub fn block() -> nix::Result<()> {
    set().thread_block()
}

/// The next signal of the set, or None after `timeout`.
pub fn next(timeout: Option<Duration>) -> Option<Signal> {
    let set = set();
    match timeout {
        None => set.wait().ok(),
        Some(timeout) => {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs() as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // SAFETY: a valid sigset and timespec; no siginfo is requested.
            let rc = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
            if rc > 0 {
                Signal::try_from(rc).ok()
            } else {
                None
            }
        }
    }
}
