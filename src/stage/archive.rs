//! Stage archives for moving stages between machines: a plain tar whose bytes depend only on the
//! stage (sorted entries, owner 0, fixed modes, time 0), and the checks an archive must pass
//! before anything of it enters a store.

use std::collections::BTreeMap;
use std::io::Read;

use super::verify::{self, Files, Problem};
use super::{Stage, StageId};
use crate::render;

/// Far above any real stage (a few KiB), far below anything that could hurt.
pub const MAX_ARCHIVE_BYTES: u64 = 4 * 1024 * 1024;
const MAX_FILE_BYTES: u64 = 1024 * 1024;
const MAX_ENTRIES: usize = 2 * render::STAGE_FILES.len();

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    #[error("the archive is larger than {MAX_ARCHIVE_BYTES} bytes; a stage is a few KiB")]
    TooLarge,
    #[error("the archive is truncated or is not a tar archive: {0}")]
    Corrupt(String),
    #[error("the archive entry `{0}` is a link or a special file; a stage holds plain files only")]
    NotAFile(String),
    #[error("the archive entry `{0}` is outside a stage directory (a stage archive holds `<id>/<file>` only)")]
    BadPath(String),
    #[error("the archive holds more than one stage or a directory that is not a stage id: `{0}`")]
    NotOneStage(String),
    #[error("the archive entry `{0}` appears twice")]
    Duplicate(String),
    #[error("the archive entry `{0}` is larger than a stage file can be")]
    FileTooLarge(String),
    #[error("the archive holds no stage")]
    Empty,
    #[error("the stage {id} in the archive is damaged:\n{}", list(.problems))]
    Damaged { id: StageId, problems: Vec<Problem> },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The archive of a stage: the directory `<id>/`, then its files in name order.
pub fn export(stage: &Stage) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let dir = format!("{}/", stage.id);
    let mut header = fixed_header(tar::EntryType::Directory, 0o555, 0);
    header.set_path(&dir).expect("an id is a valid tar path");
    header.set_cksum();
    builder
        .append(&header, std::io::empty())
        .expect("writing to memory");
    for (name, bytes) in &stage.files {
        let mut header = fixed_header(tar::EntryType::Regular, 0o444, bytes.len() as u64);
        header
            .set_path(format!("{dir}{name}"))
            .expect("stage file names are valid tar paths");
        header.set_cksum();
        builder
            .append(&header, bytes.as_slice())
            .expect("writing to memory");
    }
    builder.into_inner().expect("writing to memory")
}

fn fixed_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// Reads and checks an archive completely: its shape first (one stage directory, plain files,
/// no paths outside it, sizes within reason), then a full verification of the stage it holds.
/// Returns the stage, rebuilt from its own spec and equal to the archive byte for byte.
pub fn import(archive: &[u8]) -> Result<Stage, ImportError> {
    if archive.len() as u64 > MAX_ARCHIVE_BYTES {
        return Err(ImportError::TooLarge);
    }
    let mut id: Option<StageId> = None;
    let mut files: Files = BTreeMap::new();
    let mut reader = tar::Archive::new(archive);
    let entries = reader
        .entries()
        .map_err(|e| ImportError::Corrupt(e.to_string()))?;
    for (count, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| ImportError::Corrupt(e.to_string()))?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if count >= MAX_ENTRIES {
            return Err(ImportError::NotOneStage(raw_path));
        }
        let kind = entry.header().entry_type();
        let (dir, file) = split_stage_path(&raw_path)?;
        let this_id: StageId = dir
            .parse()
            .map_err(|_| ImportError::NotOneStage(raw_path.clone()))?;
        if *id.get_or_insert(this_id) != this_id {
            return Err(ImportError::NotOneStage(raw_path));
        }
        match (kind, file) {
            (tar::EntryType::Directory, None) => continue,
            (tar::EntryType::Regular, Some(name)) => {
                let size = entry
                    .header()
                    .size()
                    .map_err(|e| ImportError::Corrupt(e.to_string()))?;
                if size > MAX_FILE_BYTES {
                    return Err(ImportError::FileTooLarge(raw_path));
                }
                let mut bytes = Vec::with_capacity(size as usize);
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| ImportError::Corrupt(e.to_string()))?;
                if bytes.len() as u64 != size {
                    return Err(ImportError::Corrupt(format!("`{raw_path}` is cut short")));
                }
                if files.insert(name.to_owned(), bytes).is_some() {
                    return Err(ImportError::Duplicate(raw_path));
                }
            }
            (tar::EntryType::Regular | tar::EntryType::Directory, _) => {
                return Err(ImportError::BadPath(raw_path))
            }
            _ => return Err(ImportError::NotAFile(raw_path)),
        }
    }
    let id = id.ok_or(ImportError::Empty)?;
    let report = verify::verify_files(&id, &files);
    match report.stage {
        Some(stage) if report.problems.is_empty() => Ok(stage),
        _ => Err(ImportError::Damaged {
            id,
            problems: report.problems,
        }),
    }
}

/// `<id>/` or `<id>/<file>`, nothing else: no `..`, no absolute paths, no deeper directories.
fn split_stage_path(path: &str) -> Result<(&str, Option<&str>), ImportError> {
    let bad = || ImportError::BadPath(path.to_owned());
    if path.starts_with('/') || path.split('/').any(|c| c == ".." || c == ".") {
        return Err(bad());
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let mut parts = trimmed.split('/');
    let dir = parts.next().filter(|d| !d.is_empty()).ok_or_else(bad)?;
    let file = parts.next();
    if parts.next().is_some() || file.is_some_and(|f| f.is_empty() || f == "." || f == "..") {
        return Err(bad());
    }
    if file.is_some() && path.ends_with('/') {
        return Err(bad());
    }
    Ok((dir, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_paths() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(split_stage_path(&format!("{id}/")), Ok((id, None)));
        assert_eq!(
            split_stage_path(&format!("{id}/plan.json")),
            Ok((id, Some("plan.json")))
        );
        for bad in ["/etc/passwd", "../x", "a/b/c", "a/..", "a/", "", "a//b"] {
            let result = split_stage_path(bad).and_then(|(d, f)| {
                d.parse::<StageId>()
                    .map_err(|_| ImportError::BadPath(bad.into()))?;
                Ok(f)
            });
            assert!(result.is_err(), "{bad:?} accepted");
        }
    }
}
