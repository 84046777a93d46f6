//! Pins: named references that keep stages from garbage collection. They live in the store's
//! `.pins/` directory (one file per pin, holding the id), never inside a stage, so stages stay
//! pure and identical everywhere.

use std::path::PathBuf;

use anyhow::Context as _;
use fs_err as fs;

use super::{StageId, Store};
use crate::error::UserError;
use crate::spec::validate;

pub const PINS_DIR: &str = ".pins";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pin {
    pub name: String,
    pub id: StageId,
}

fn dir(store: &Store) -> PathBuf {
    store.root().join(PINS_DIR)
}

/// Every pin, by name. Unreadable or malformed pin files are errors: silently dropping one
/// would let `gc` remove a stage the user meant to keep.
pub fn list(store: &Store) -> anyhow::Result<Vec<Pin>> {
    let dir = dir(store);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("failed to list the pins in `{}`", dir.display()))
        }
    };
    let mut pins = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let text = fs::read_to_string(&path)?;
        let id = text.trim().parse::<StageId>().map_err(|e| {
            UserError::usage(
                format!("the pin `{}` is malformed: {e}", path.display()),
                "a pin file holds one stage id; fix it or remove it with `bottle unpin`",
            )
        })?;
        pins.push(Pin { name, id });
    }
    pins.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pins)
}

/// Pins `id` under `name` (default: the id itself). Re-pinning a name moves it.
pub fn pin(store: &Store, id: &StageId, name: Option<&str>) -> anyhow::Result<Pin> {
    let name = match name {
        Some(name) => {
            validate::name(name).map_err(|invalid| {
                UserError::usage(
                    format!("invalid pin name: {}", invalid.message),
                    invalid.help.unwrap_or_default(),
                )
            })?;
            name.to_owned()
        }
        None => id.to_string(),
    };
    let dir = dir(store);
    fs::create_dir_all(&dir)?;
    // Written beside and renamed, so a pin is never seen half-written.
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    fs::write(&tmp, format!("{id}\n"))?;
    fs::rename(&tmp, dir.join(&name))?;
    Ok(Pin { name, id: *id })
}

/// Removes the pin called `name_or_id`, or every pin of the stage it names. Returns what was
/// removed; nothing matching is an error.
pub fn unpin(store: &Store, name_or_id: &str) -> anyhow::Result<Vec<Pin>> {
    let pins = list(store)?;
    let by_name: Vec<Pin> = pins
        .iter()
        .filter(|p| p.name == name_or_id)
        .cloned()
        .collect();
    let chosen = if !by_name.is_empty() {
        by_name
    } else {
        let id = store.resolve(name_or_id).map_err(|_| {
            UserError::usage(
                format!("no pin and no stage `{name_or_id}`"),
                "list the pins with `bottle gc --dry-run` or the stages with `bottle ls`",
            )
        })?;
        pins.into_iter().filter(|p| p.id == id).collect()
    };
    if chosen.is_empty() {
        return Err(UserError::usage(
            format!("`{name_or_id}` is not pinned"),
            "nothing to unpin",
        ));
    }
    for pin in &chosen {
        fs::remove_file(dir(store).join(&pin.name))?;
    }
    Ok(chosen)
}
