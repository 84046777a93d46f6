//! The guard (`bottle __guard`): contains gvproxy. In a fresh user + network + mount namespace
//! it brings up loopback, makes every mount read-only except gvproxy's own directory, listens on
//! 127.0.0.1:<guest port> for each sidecar (relaying to the runner's bridge sockets), and runs
//! gvproxy there. gvproxy's NAT to 127.0.0.1 then reaches only these relays, and any other dial,
//! DNS lookup or file the guest asks gvproxy for fails. Every check fails closed: the guard exits
//! before starting gvproxy when any step fails. It dies with the runner, and gvproxy with it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use fs_err as fs;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::{procs, relay, signals};

/// What the runner tells the guard, as `guard.json` in the run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// The runner's pid: the guard refuses to go on when its parent is already someone else.
    pub parent: u32,
    pub relays: Vec<GuardRelay>,
    /// gvproxy's directory: the only writable place in the guard's mount namespace.
    pub writable: PathBuf,
    /// gvproxy's stdout and stderr, opened before the file system becomes read-only.
    pub gvproxy_log: PathBuf,
    /// gvproxy's full command line, its absolute path first.
    pub gvproxy: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardRelay {
    /// Where the relay listens inside the namespace: 127.0.0.1:`port`, the sidecar's guest port.
    pub port: u16,
    /// The runner's bridge socket for that sidecar.
    pub socket: PathBuf,
}

/// Exit code of the guard when containment could not be set up; gvproxy never started.
pub const CONTAINMENT_FAILED: i32 = 90;

pub fn main(config_path: &Path) -> i32 {
    match run(config_path) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("guard: {}", crate::error::render(&err));
            CONTAINMENT_FAILED
        }
    }
}

fn run(config_path: &Path) -> anyhow::Result<i32> {
    let config: GuardConfig = serde_json::from_slice(&fs::read(config_path)?)
        .with_context(|| format!("`{}` is not a guard configuration", config_path.display()))?;
    die_with(config.parent)?;
    let gvproxy_log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.gvproxy_log)?
        .into_parts()
        .0;
    enter_namespaces()?;
    die_with(config.parent)?;
    loopback_up().context("failed to bring up loopback in the guard's network namespace")?;
    read_only_except(&config.writable)?;
    // Signals are blocked before any thread exists, so every thread inherits the mask and the
    // main thread alone receives them through `wait`.
    signals::block()?;
    for relay in &config.relays {
        relay::start_guard_relay(relay.port, relay.socket.clone())?;
    }
    let (program, args) = config
        .gvproxy
        .split_first()
        .context("the guard configuration has no gvproxy command")?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(gvproxy_log.try_clone()?)
        .stderr(gvproxy_log);
    procs::die_with_parent(&mut command);
    let mut gvproxy = command
        .spawn()
        .with_context(|| format!("failed to start gvproxy `{program}`"))?;
    eprintln!(
        "guard: contained; relays on 127.0.0.1:{:?}; gvproxy pid {}",
        config.relays.iter().map(|r| r.port).collect::<Vec<_>>(),
        gvproxy.id()
    );
    loop {
        match signals::next(None) {
            None => continue,
            Some(Signal::SIGCHLD) => {
                if let Some(status) = gvproxy.try_wait()? {
                    eprintln!("guard: gvproxy exited: {status}");
                    return Ok(procs::shell_code(status));
                }
            }
            Some(other) => {
                eprintln!("guard: {other}: stopping gvproxy");
                let status = procs::stop_child(&mut gvproxy, Duration::from_secs(2))?;
                eprintln!("guard: gvproxy exited: {status}");
                return Ok(0);
            }
        }
    }
}

fn die_with(parent: u32) -> anyhow::Result<()> {
    // SAFETY: plain system calls without pointers.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            bail!(
                "prctl(PR_SET_PDEATHSIG) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        if libc::getppid() as u32 != parent {
            bail!("the runner (pid {parent}) is gone");
        }
    }
    Ok(())
}

fn enter_namespaces() -> anyhow::Result<()> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)
        .context("failed to create a user + network + mount namespace (are unprivileged user namespaces enabled? see kernel.unprivileged_userns_clone and user.max_user_namespaces)")?;
    fs::write("/proc/self/setgroups", "deny")?;
    fs::write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    fs::write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

fn loopback_up() -> anyhow::Result<()> {
    // SAFETY: an ifreq filled with the name, passed to two ioctls on a socket we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let result = (|| {
            if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
                bail!("SIOCGIFFLAGS lo: {}", std::io::Error::last_os_error());
            }
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                bail!("SIOCSIFFLAGS lo: {}", std::io::Error::last_os_error());
            }
            Ok(())
        })();
        libc::close(fd);
        result
    }
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

fn mount_setattr(path: &Path, flags: libc::c_uint, set: u64, clear: u64) -> anyhow::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a NUL-terminated path and a mount_attr of the size we pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        bail!(
            "mount_setattr `{}`: {} (Linux 5.12 or newer is needed)",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Every mount read-only, recursively, except a bind mount of `writable` on itself.
fn read_only_except(writable: &Path) -> anyhow::Result<()> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .context("failed to make the guard's mounts private")?;
    mount(
        Some(writable),
        writable,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .with_context(|| format!("failed to bind `{}` on itself", writable.display()))?;
    mount_setattr(Path::new("/"), AT_RECURSIVE, MOUNT_ATTR_RDONLY, 0)?;
    mount_setattr(writable, 0, 0, MOUNT_ATTR_RDONLY)?;
    // Check the result instead of trusting it: the mount flags, whoever owns the files.
    let read_only = |path: &Path| {
        nix::sys::statvfs::statvfs(path)
            .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
            .unwrap_or(false)
    };
    let parent = writable.parent().unwrap_or(Path::new("/"));
    for path in [
        Path::new("/"),
        Path::new("/tmp"),
        Path::new("/dev/shm"),
        parent,
    ] {
        if path.exists() && !read_only(path) {
            bail!(
                "`{}` is still writable in the guard's namespace",
                path.display()
            );
        }
    }
    if read_only(writable) {
        bail!(
            "gvproxy's directory `{}` is not writable",
            writable.display()
        );
    }
    Ok(())
}
