//! The egress proxy's system calls that the standard library and tokio do not offer: Linux
//! splice(2) through a pipe (tunnel bytes move socket to socket inside the kernel, never through
//! user memory) and raising the open-file limit. The proxy's only `unsafe` code; each call works
//! on descriptors this module owns or that the caller lends for the duration of the call.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A kernel pipe used as the buffer of one tunnel direction.
#[cfg(target_os = "linux")]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes one splice may move: the pipe's capacity.
    pub capacity: usize,
}

#[cfg(target_os = "linux")]
impl Pipe {
    /// A non-blocking pipe, grown to `wanted` bytes when the system allows (it may not: the
    /// per-user pipe budget), else left at the default.
    pub fn new(wanted: usize) -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid array of two descriptors for pipe2 to fill.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ/F_GETPIPE_SZ on a descriptor we own; failures are harmless.
        let capacity = unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, wanted as libc::c_int);
            libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        Ok(Pipe {
            read,
            write,
            capacity: if capacity > 0 {
                capacity as usize
            } else {
                64 * 1024
            },
        })
    }

    /// Moves up to `max` bytes from the socket `from` into the pipe. `Ok(0)` is end of file;
    /// `WouldBlock` means the socket has nothing now (the caller keeps the pipe empty before this).
    pub fn fill_from(&self, from: RawFd, max: usize) -> io::Result<usize> {
        splice(from, self.write.as_raw_fd(), max)
    }

    /// Moves up to `max` bytes from the pipe to the socket `to`; `WouldBlock` means it is full.
    pub fn drain_to(&self, to: RawFd, max: usize) -> io::Result<usize> {
        splice(self.read.as_raw_fd(), to, max)
    }
}

#[cfg(target_os = "linux")]
fn splice(from: RawFd, to: RawFd, max: usize) -> io::Result<usize> {
    // SAFETY: splice reads and writes only through the two descriptors, which the caller keeps
    // open for the call; null offsets mean "the current position", as sockets and pipes need.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            max,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Raises the soft limit of open files to the hard limit: every tunnel holds two sockets and,
/// on Linux, up to two pipes. Returns the new soft limit.
pub fn raise_open_file_limit() -> io::Result<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill, and setrlimit only reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(io::Error::last_os_error());
            }
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}
