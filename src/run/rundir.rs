//! The run directory of one stage: where it lives (a short private path), its layout, and the
//! lock that lets a stage run once at a time. A stale directory left by a runner killed with
//! SIGKILL is recognised here and cleared. It starts no process.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use fs_err as fs;
use nix::fcntl::{Flock, FlockArg};

use super::procs;
use super::record::{RunRecord, State};
use crate::error::UserError;
use crate::stage::StageId;

/// Unix socket paths must fit `sun_path` (108 bytes with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Where run directories live: `$XDG_RUNTIME_DIR/bottle`, else `/tmp/bottle-<uid>`.
pub fn base() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => Path::new(&dir).join("bottle"),
        _ => PathBuf::from(format!("/tmp/bottle-{}", nix::unistd::getuid())),
    }
}

/// The paths of one run; pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(base: &Path, id: &StageId) -> Layout {
        Layout {
            root: base.join(id.to_string()),
        }
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }
    pub fn record(&self) -> PathBuf {
        self.root.join("run.json")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn log(&self, component: &str) -> PathBuf {
        self.logs().join(format!("{component}.log"))
    }
    /// The bridges' sockets.
    pub fn sockets(&self) -> PathBuf {
        self.root.join("sock")
    }
    pub fn bridge_socket(&self, sidecar: &str) -> PathBuf {
        self.sockets().join(format!("{sidecar}.sock"))
    }
    /// The only directory gvproxy may write.
    pub fn gvproxy_dir(&self) -> PathBuf {
        self.root.join("gv")
    }
    pub fn vm_socket(&self) -> PathBuf {
        self.gvproxy_dir().join("vm.sock")
    }
    pub fn api_socket(&self) -> PathBuf {
        self.gvproxy_dir().join("api.sock")
    }
    pub fn gvproxy_pid(&self) -> PathBuf {
        self.gvproxy_dir().join("gvproxy.pid")
    }
    /// The built-in egress proxy's audit log: one JSON line per decision.
    pub fn egress_audit_log(&self) -> PathBuf {
        self.logs().join("egress-audit.jsonl")
    }
    /// The git gateway's mirror lives here, in the run's state, never in the user's repository.
    pub fn git_mirror_base(&self) -> PathBuf {
        self.root.join("git")
    }
    pub fn guard_config(&self) -> PathBuf {
        self.root.join("guard.json")
    }

    /// Socket paths that do not fit, so the run can be refused before anything starts.
    pub fn too_long_sockets<'a>(
        &self,
        sidecars: impl IntoIterator<Item = &'a str>,
    ) -> Vec<PathBuf> {
        let mut all = vec![self.vm_socket(), self.api_socket()];
        all.extend(sidecars.into_iter().map(|s| self.bridge_socket(s)));
        all.into_iter()
            .filter(|p| p.as_os_str().len() > MAX_SOCKET_PATH)
            .collect()
    }
}

/// Creates `dir` with mode 0700 if missing, then refuses it unless it is a real directory (not a
/// symbolic link) owned by us and closed to everyone else.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("failed to create `{}`", dir.display())),
    }
    let meta = fs::symlink_metadata(dir)?;
    let uid = nix::unistd::getuid().as_raw();
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(UserError {
            message: format!(
                "`{}` is not a private directory of this user (it must be a directory owned by uid {uid}, mode 0700)",
                dir.display()
            ),
            hint: Some("remove it, or set XDG_RUNTIME_DIR to a private directory".into()),
            exit: crate::error::Exit::Usage,
        }
        .into());
    }
    Ok(())
}

/// A run directory held by this process. The lock is an flock, so the kernel releases it when
/// the holder dies, however it dies.
pub struct RunDir {
    pub layout: Layout,
    _lock: Flock<std::fs::File>,
    /// The record a previous, crashed run left, already cleared.
    pub cleared: Option<RunRecord>,
}

#[derive(Debug, thiserror::Error)]
#[error("stage {id} is already running (runner pid {pid}, run directory `{dir}`)")]
pub struct AlreadyRunning {
    pub id: String,
    pub pid: String,
    pub dir: String,
}

impl RunDir {
    pub fn acquire(base: &Path, id: &StageId) -> anyhow::Result<RunDir> {
        if let Some(parent) = base.parent() {
            fs::create_dir_all(parent)?;
        }
        private_dir(base)?;
        let layout = Layout::new(base, id);
        private_dir(&layout.root)?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(layout.lock())?
            .into_parts()
            .0;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let pid = RunRecord::read(&layout.record())
                    .map(|r| r.runner.pid.to_string())
                    .unwrap_or_else(|_| "unknown".into());
                return Err(AlreadyRunning {
                    id: id.to_string(),
                    pid,
                    dir: layout.root.display().to_string(),
                }
                .into());
            }
            Err((_, errno)) => {
                return Err(std::io::Error::from(errno))
                    .with_context(|| format!("failed to lock `{}`", layout.lock().display()))
            }
        };
        lock.set_len(0)?;
        writeln!(&mut *lock, "{}", std::process::id())?;
        let cleared = clear_stale(&layout)?;
        // Start clean: a previous run's sockets must not exist (gvproxy refuses existing ones)
        // and its logs would be mistaken for this run's.
        for dir in [layout.sockets(), layout.gvproxy_dir(), layout.logs()] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("failed to clear `{}`", dir.display()))
                }
            }
            private_dir(&dir)?;
        }
        let _ = std::fs::remove_file(layout.guard_config());
        Ok(RunDir {
            layout,
            _lock: lock,
            cleared,
        })
    }
}

/// With the lock held: a record still saying a run is live means its runner died without
/// tearing down. Whatever of it is still alive and provably its own is stopped.
fn clear_stale(layout: &Layout) -> anyhow::Result<Option<RunRecord>> {
    let mut record = match RunRecord::read(&layout.record()) {
        Ok(record) => record,
        Err(_) if !layout.record().exists() => return Ok(None),
        // An unreadable record names no process we could prove is ours: nothing to stop.
        Err(_) => return Ok(None),
    };
    // A run marked crashed by `ps` or `stop` may still have left its machine behind.
    if !matches!(
        record.state,
        State::Starting | State::Running | State::Stopping | State::Crashed
    ) {
        return Ok(None);
    }
    stop_stale_components(&record);
    record.state = State::Crashed;
    record.write(&layout.record())?;
    Ok(Some(record))
}

pub fn stop_stale_components(record: &RunRecord) {
    for component in record.components.iter().rev() {
        procs::stop_recorded(&component.process, Duration::from_millis(500));
    }
}

/// Is the run that wrote `record` still going: its runner alive and really the same process?
pub fn is_live(record: &RunRecord) -> bool {
    matches!(
        record.state,
        State::Starting | State::Running | State::Stopping
    ) && record.runner.is_alive()
}

/// Every run directory under `base` with its record, sorted by id. Directories without a
/// readable record are skipped.
pub fn list(base: &Path) -> anyhow::Result<Vec<(Layout, RunRecord)>> {
    let entries = match std::fs::read_dir(base) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("failed to list `{}`", base.display())),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<StageId>().ok())
        else {
            continue;
        };
        let layout = Layout::new(base, &id);
        if let Ok(record) = RunRecord::read(&layout.record()) {
            out.push((layout, record));
        }
    }
    out.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    Ok(out)
}

/// Marks a dead run's record as crashed and stops what is provably left of it; for `ps` and
/// `stop`, which find stale runs without taking the lock.
pub fn mark_crashed(layout: &Layout, record: &mut RunRecord) -> anyhow::Result<()> {
    stop_stale_components(record);
    record.state = State::Crashed;
    record.write(&layout.record())
}

pub fn ensure_short(layout: &Layout, sidecars: &[&str]) -> anyhow::Result<()> {
    let long = layout.too_long_sockets(sidecars.iter().copied());
    if let Some(first) = long.first() {
        bail!(
            "the socket path `{}` is longer than the {MAX_SOCKET_PATH} bytes unix sockets allow; set XDG_RUNTIME_DIR to a shorter directory",
            first.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> StageId {
        "0123456789abcdef0123456789abcdef".parse().unwrap()
    }

    #[test]
    fn a_stage_runs_once_at_a_time_and_the_lock_goes_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("bottle");
        let first = RunDir::acquire(&base, &id()).unwrap();
        let second = RunDir::acquire(&base, &id())
            .err()
            .expect("a second run must be refused");
        assert!(second.is::<AlreadyRunning>(), "{second:#}");
        drop(first);
        RunDir::acquire(&base, &id()).expect("the lock is free once its holder is gone");
    }

    #[test]
    fn directories_open_to_others_or_symbolic_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(private_dir(&open).is_err());
        let link = dir.path().join("link");
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(private_dir(&link).is_err());
        assert!(private_dir(&target).is_ok());
    }

    #[test]
    fn socket_paths_that_do_not_fit_are_found() {
        let long = PathBuf::from(format!("/{}", "x".repeat(90)));
        let layout = Layout::new(&long, &id());
        assert!(!layout.too_long_sockets(["egress"]).is_empty());
        let short = Layout::new(Path::new("/run/user/1000/bottle"), &id());
        assert!(short.too_long_sockets(["egress", "supervise"]).is_empty());
    }
}
