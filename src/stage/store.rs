//! The store: a directory of stages named by id (`stages/<id>/`). Writes are atomic (a temporary
//! `.tmp-*` directory, then one rename), the first writer wins, and files are read-only.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use fs_err as fs;

use super::id::{self, StageId, ID_HEX_LEN, MIN_PREFIX_LEN};
use super::{verify, Stage};

/// Temporary stages are written inside the store, so that the final rename never crosses a file
/// system, under names that are never ids, so that listings skip them.
pub const TMP_PREFIX: &str = ".tmp-";
pub const DEFAULT_STORE: &str = "stages";

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Created,
    /// An intact stage with this id was already in the store; nothing was written.
    Existed,
    /// A damaged stage with this id was in the store and has been replaced.
    Repaired,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("`{0}` is not a stage id: ids are lower-case hexadecimal digits")]
    NotHex(String),
    #[error("the id prefix `{0}` is too short")]
    TooShort(String),
    #[error("no stage `{prefix}` in the store `{store}`")]
    NotFound { prefix: String, store: String },
    #[error("the id prefix `{prefix}` is ambiguous: it matches {}", list(.matches))]
    Ambiguous {
        prefix: String,
        matches: Vec<StageId>,
    },
}

fn list(ids: &[StageId]) -> String {
    ids.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl LookupError {
    pub fn hint(&self) -> String {
        match self {
            LookupError::NotHex(_) => "give a stage id as printed by `bottle gen` or `bottle ls`".into(),
            LookupError::TooShort(_) => format!("give at least {MIN_PREFIX_LEN} digits of the id"),
            LookupError::NotFound { .. } => {
                "list the stages with `bottle ls`; pass `--store DIR` if the stage is in another store".into()
            }
            LookupError::Ambiguous { .. } => "give more digits of the id".into(),
        }
    }
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn stage_dir(&self, id: &StageId) -> PathBuf {
        self.root.join(id.to_string())
    }

    pub fn contains(&self, id: &StageId) -> bool {
        self.stage_dir(id).is_dir()
    }

    /// Every stage in the store, sorted. A missing store is an empty one.
    pub fn ids(&self) -> anyhow::Result<Vec<StageId>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("failed to list the store `{}`", self.root.display()))
            }
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry
                .with_context(|| format!("failed to list the store `{}`", self.root.display()))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<StageId>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// A full id or a unique prefix of at least six digits. Fails with a `LookupError` (inside
    /// the `anyhow::Error`) when the text names no stage, or with an I/O error.
    pub fn resolve(&self, text: &str) -> anyhow::Result<StageId> {
        let prefix = text.trim();
        if prefix.is_empty() || prefix.len() > ID_HEX_LEN || !id::is_lower_hex(prefix) {
            return Err(LookupError::NotHex(text.to_owned()).into());
        }
        if prefix.len() < MIN_PREFIX_LEN {
            return Err(LookupError::TooShort(text.to_owned()).into());
        }
        if let Ok(id) = prefix.parse::<StageId>() {
            return match self.contains(&id) {
                true => Ok(id),
                false => Err(self.not_found(prefix).into()),
            };
        }
        let matches: Vec<StageId> = self
            .ids()?
            .into_iter()
            .filter(|id| id.to_string().starts_with(prefix))
            .collect();
        match matches.as_slice() {
            [] => Err(self.not_found(prefix).into()),
            [one] => Ok(*one),
            _ => Err(LookupError::Ambiguous {
                prefix: prefix.to_owned(),
                matches,
            }
            .into()),
        }
    }

    fn not_found(&self, prefix: &str) -> LookupError {
        LookupError::NotFound {
            prefix: prefix.to_owned(),
            store: self.root.display().to_string(),
        }
    }

    pub fn read(&self, id: &StageId, file: &str) -> anyhow::Result<Vec<u8>> {
        Ok(fs::read(self.stage_dir(id).join(file))?)
    }

    /// Writes `stage` unless the store has an intact copy already; a damaged copy is replaced.
    /// A failure at any point removes what this call wrote; a crash leaves at most a `.tmp-*`
    /// directory, never a partial stage under an id.
    ///
    /// Nothing is fsynced: a stage is derived data, verified before every use, and a stage that
    /// lost bytes in a power cut is found damaged and rewritten by the next `gen`. Durability
    /// would cost more than the whole rest of `gen` (about 1 ms per fsync here).
    pub fn write(&self, stage: &Stage) -> anyhow::Result<WriteOutcome> {
        let target = self.stage_dir(&stage.id);
        let damaged = target.is_dir() && !verify::verify(self, &stage.id).is_intact();
        if target.is_dir() && !damaged {
            return Ok(WriteOutcome::Existed);
        }
        fs::create_dir_all(&self.root)
            .with_context(|| format!("failed to create the store `{}`", self.root.display()))?;
        let tmp = TempDir::create(&self.root, &stage.id)?;
        for (name, bytes) in &stage.files {
            write_read_only(&tmp.path.join(name), bytes)?;
        }
        if damaged {
            // Move the damaged copy aside first, so the id never names a half-replaced stage.
            let aside = TempDir::create(&self.root, &stage.id)?;
            fs::remove_dir(&aside.path)?;
            if std::fs::rename(&target, &aside.path).is_err() && target.is_dir() {
                anyhow::bail!(
                    "failed to move the damaged stage `{}` aside",
                    target.display()
                );
            }
            let _removed_on_drop = aside;
        }
        match std::fs::rename(&tmp.path, &target) {
            Ok(()) => {
                tmp.keep();
                Ok(if damaged {
                    WriteOutcome::Repaired
                } else {
                    WriteOutcome::Created
                })
            }
            // Another writer won the race; its stage has the same bytes by construction.
            Err(_) if target.is_dir() => Ok(WriteOutcome::Existed),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "failed to move the new stage into place at `{}`",
                    target.display()
                )
            }),
        }
    }
}

fn write_read_only(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o444))?;
    Ok(())
}

/// A directory removed on drop unless kept: the guard that leaves no debris on failure.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    fn create(parent: &Path, id: &StageId) -> anyhow::Result<TempDir> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{TMP_PREFIX}{id}.{}.{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let path = parent.join(name);
        fs::create_dir(&path)?;
        Ok(TempDir { path, keep: false })
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One line of `bottle ls`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StageSummary {
    pub id: String,
    pub agent: String,
    pub image: String,
    /// Bytes of all files.
    pub size: u64,
}

impl Store {
    /// Bytes of all files of a stage; 0 when it cannot be listed.
    pub fn stage_size(&self, id: &StageId) -> u64 {
        std::fs::read_dir(self.stage_dir(id))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Reads each stage's `spec.json` without re-rendering: listing must stay fast on big stores.
    /// A stage whose spec cannot be read is listed with `?` for what is unknown.
    pub fn summaries(&self) -> anyhow::Result<Vec<StageSummary>> {
        #[derive(serde::Deserialize)]
        struct Head {
            agent: String,
            image: String,
        }
        let mut out = Vec::new();
        for id in self.ids()? {
            let dir = self.stage_dir(&id);
            let head: Option<Head> = std::fs::read(dir.join(crate::render::SPEC_JSON))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            let size = self.stage_size(&id);
            let (agent, image) = head.map_or(("?".into(), "?".into()), |h| (h.agent, h.image));
            out.push(StageSummary {
                id: id.to_string(),
                agent,
                image,
                size,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that fails half-way (here: a file name the file system refuses) leaves neither a
    /// stage nor a temporary directory behind.
    #[test]
    fn a_failed_write_leaves_nothing() {
        let spec_text =
            "[agents.a]\nbottle = \"b\"\ncommand = [\"sh\"]\n[bottles.b]\nimage = \"i\"\n";
        let spec = crate::spec::Manifest::parse("t", spec_text)
            .unwrap()
            .resolve(None)
            .unwrap();
        let mut stage = super::super::build(&spec);
        stage.files.push(("no/such/dir", b"x".to_vec()));
        let dir = std::env::temp_dir().join(format!("bottle-store-test-{}", std::process::id()));
        let store = Store::new(&dir);
        assert!(store.write(&stage).is_err());
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A lock on a stage directory (`flock`), released on drop. A run holds it shared for as long as
/// it uses the stage; `gc` takes it exclusively before removing a stage, and skips a stage whose
/// lock is taken.
#[derive(Debug)]
pub struct StageLock {
    _file: std::fs::File,
}

impl Store {
    /// Holds the stage shared, for a run: `gc` will not remove it meanwhile.
    pub fn hold(&self, id: &StageId) -> anyhow::Result<StageLock> {
        let file = std::fs::File::open(self.stage_dir(id))
            .with_context(|| format!("failed to open the stage {id}"))?;
        file.lock_shared()
            .with_context(|| format!("failed to lock the stage {id}"))?;
        Ok(StageLock { _file: file })
    }

    /// The exclusive lock, or `None` when someone holds the stage.
    pub fn try_lock_exclusive(&self, id: &StageId) -> anyhow::Result<Option<StageLock>> {
        let file = std::fs::File::open(self.stage_dir(id))
            .with_context(|| format!("failed to open the stage {id}"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(StageLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("failed to lock the stage {id}"))
            }
        }
    }

    /// Removes a stage, holding its exclusive lock: first renamed aside so that the id never names
    /// a half-removed stage, then deleted.
    pub fn remove(&self, id: &StageId, _lock: StageLock) -> anyhow::Result<()> {
        let aside = TempDir::create(&self.root, id)?;
        fs::remove_dir(&aside.path)?;
        fs::rename(self.stage_dir(id), &aside.path)?;
        drop(aside);
        Ok(())
    }
}
