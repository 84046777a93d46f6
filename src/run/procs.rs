//! Processes of a run: who a pid really is (pid plus its start time, so a reused pid is never
//! mistaken for ours), tying a child's life to its parent, and stopping children in a bounded
//! time. It never decides what to start; the runner and the guard do.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// A process as recorded in `run.json`: a pid alone can be reused, a pid with the start time
/// the kernel gave it (clock ticks since boot, field 22 of `/proc/<pid>/stat`) cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessId {
    pub fn of(pid: u32) -> Option<ProcessId> {
        start_time(pid).map(|start_time| ProcessId { pid, start_time })
    }

    pub fn current() -> ProcessId {
        ProcessId::of(std::process::id()).expect("/proc/self/stat is readable")
    }

    /// True when a process with this pid exists AND started when the recorded one did.
    pub fn is_alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time) && !is_zombie(self.pid)
    }

    /// Sends `signal` only if the process is still the recorded one.
    pub fn signal(&self, sig: Signal) -> bool {
        self.is_alive() && signal::kill(Pid::from_raw(self.pid as i32), sig).is_ok()
    }
}

/// Field 22 (starttime) of `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is the first; starttime is field 22.
    after.split_whitespace().nth(19)?.parse().ok()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = &s[s.rfind(')')? + 1..];
            after.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}

/// Gives the child an empty signal mask: the runner and the guard block the signals they wait
/// for, and a child would otherwise inherit that mask and ignore SIGTERM.
pub fn clean_signal_mask(command: &mut Command) -> &mut Command {
    // SAFETY: sigemptyset and sigprocmask are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Makes the child receive SIGKILL when the thread that spawned it dies, even when that thread's
/// process is killed with SIGKILL. Spawn from the main thread only: the kernel ties the signal to
/// the spawning thread. `parent` is checked after the call, closing the race in which the parent
/// died before the child set its death signal. Also clears the signal mask.
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    let parent = std::process::id() as i32;
    clean_signal_mask(command);
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(125);
            }
            Ok(())
        })
    }
}

/// Asks a child to stop with SIGTERM and waits up to `grace`, then SIGKILLs it.
pub fn stop_child(child: &mut Child, grace: Duration) -> io::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let _ = signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return child.wait();
        }
        // Woken by the child's SIGCHLD where the caller blocks it (the runner and the guard do).
        let _ = super::signals::next(Some(Duration::from_millis(2)));
    }
}

/// Like `stop_child`, for a child that leads its own process group (the sidecars): the signals
/// go to the whole group, so whatever the command started itself goes too.
pub fn stop_group(child: &mut Child, grace: Duration) -> io::Result<ExitStatus> {
    let group = Pid::from_raw(child.id() as i32);
    if let Some(status) = child.try_wait()? {
        let _ = signal::killpg(group, Signal::SIGKILL);
        return Ok(status);
    }
    let _ = signal::killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait()? {
            // The leader is gone; anything it left in its group is not waited for.
            let _ = signal::killpg(group, Signal::SIGKILL);
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = signal::killpg(group, Signal::SIGKILL);
            return child.wait();
        }
        let _ = super::signals::next(Some(Duration::from_millis(2)));
    }
}

/// Waits until a recorded process is gone, SIGKILLing it after `grace`. For processes that are
/// not our children (a stale run's), so there is nothing to reap.
pub fn stop_recorded(process: &ProcessId, grace: Duration) {
    if !process.signal(Signal::SIGTERM) {
        return;
    }
    let deadline = Instant::now() + grace;
    while process.is_alive() {
        if Instant::now() >= deadline {
            process.signal(Signal::SIGKILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The exit code a shell would show: the code, or 128 + the signal number.
pub fn shell_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(125)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_read_after_a_name_with_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
    }

    #[test]
    fn our_own_identity_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessId::current();
        assert!(me.is_alive());
        let reused = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reused.is_alive());
    }
}
