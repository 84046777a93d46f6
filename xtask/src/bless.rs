//! `cargo xtask bless`: rewrites golden/<case>/<agent>/ (the id and every stage file) from the
//! current renderers. Refuses, writing nothing, when an existing case's bytes would change but
//! `STAGE_FORMAT` did not: one id must never name two contents.

use std::collections::BTreeMap;

use anyhow::bail;
use fs_err as fs;

use crate::{root, stages_of};

pub const ID_FILE: &str = "id";

type Files = BTreeMap<String, Vec<u8>>;

pub fn run() -> anyhow::Result<()> {
    let golden = root().join("golden");
    let mut plans: Vec<(std::path::PathBuf, Files)> = Vec::new();
    let mut refusals = Vec::new();
    let mut stale_dirs = Vec::new();
    for case in fs::read_dir(&golden)? {
        let case = case?.path();
        let manifest = case.join("bottle.toml");
        if !manifest.is_file() {
            continue;
        }
        let stages = stages_of(&manifest)?;
        for stage in &stages {
            let dir = case.join(&stage.spec.agent);
            let mut files: Files = stage
                .files
                .iter()
                .map(|(n, b)| (n.to_string(), b.clone()))
                .collect();
            files.insert(ID_FILE.to_owned(), format!("{}\n", stage.id).into_bytes());
            if let Some(old) = read_dir_files(&dir)? {
                if !may_rewrite(&old, &files, bottle::STAGE_FORMAT) {
                    refusals.push(dir.display().to_string());
                    continue;
                }
            }
            plans.push((dir, files));
        }
        for entry in fs::read_dir(&case)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() && !stages.iter().any(|s| s.spec.agent == name) {
                stale_dirs.push(path);
            }
        }
    }
    if !refusals.is_empty() {
        bail!(
            "the renderers now write different bytes for:\n  {}\nbut STAGE_FORMAT is still {}. \
             Bump STAGE_FORMAT in src/lib.rs so no id names two contents, then bless again.",
            refusals.join("\n  "),
            bottle::STAGE_FORMAT
        );
    }
    for (dir, files) in plans {
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        for (name, bytes) in files {
            fs::write(dir.join(name), bytes)?;
        }
        println!(
            "blessed {}",
            dir.strip_prefix(root()).unwrap_or(&dir).display()
        );
    }
    for dir in stale_dirs {
        fs::remove_dir_all(&dir)?;
        println!("removed {}", dir.display());
    }
    Ok(())
}

/// Changed bytes are allowed only when the format version changed with them.
fn may_rewrite(old: &Files, new: &Files, format: u32) -> bool {
    let old_format = old
        .get(bottle::render::SPEC_JSON)
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| v["format"].as_u64());
    old == new || old_format != Some(u64::from(format))
}

fn read_dir_files(dir: &std::path::Path) -> anyhow::Result<Option<Files>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut files = Files::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        files.insert(
            path.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            fs::read(&path)?,
        );
    }
    Ok(Some(files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(format: u32, body: &str) -> Files {
        Files::from([
            (
                bottle::render::SPEC_JSON.to_owned(),
                format!("{{\"format\": {format}}}").into_bytes(),
            ),
            ("smolfile.toml".to_owned(), body.as_bytes().to_vec()),
        ])
    }

    #[test]
    fn refuses_changed_bytes_without_a_format_bump() {
        assert!(
            may_rewrite(&files(2, "a"), &files(2, "a"), 2),
            "unchanged is fine"
        );
        assert!(
            !may_rewrite(&files(2, "a"), &files(2, "b"), 2),
            "changed bytes, same format"
        );
        assert!(
            may_rewrite(&files(1, "a"), &files(2, "b"), 2),
            "changed bytes with a bump"
        );
    }
}
