//! `bottle diff`: what changed between two stages, each given by id or by manifest.

use std::path::Path;

use serde::Serialize;

use super::output::{self, JSON_VERSION};
use super::{intact_stage, load_spec, StoreArg};
use crate::error::Exit;
use crate::stage::diff::{self, Change, FileDiff};
use crate::stage::{self, Stage, Store};

/// Compare two stages: a summary of what changed in meaning, then a unified diff per file
///
/// Each side is a stage id (or unique prefix) or the path of a manifest, which is resolved
/// without writing anything. Exits 0 when the stages are identical, 1 when they differ.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The old side: a stage id, a prefix, or a manifest path
    a: String,
    /// The new side: a stage id, a prefix, or a manifest path
    b: String,
    /// The agent for sides given as manifests with more than one agent
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    #[command(flatten)]
    store: StoreArg,
    /// Print a JSON object: {"version", "a", "b", "identical", "changes", "files"}
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct DiffJson {
    version: u32,
    a: String,
    b: String,
    identical: bool,
    changes: Vec<Change>,
    files: Vec<FileDiff>,
}

fn side(store: &Store, text: &str, agent: Option<&str>) -> anyhow::Result<Stage> {
    let path = Path::new(text);
    if path.is_file() || text.ends_with(".toml") {
        return Ok(stage::build(&load_spec(path, agent)?));
    }
    let id = store.resolve(text)?;
    intact_stage(store, &id)
}

pub fn exec(args: Args) -> anyhow::Result<Exit> {
    let store = args.store.open();
    let a = side(&store, &args.a, args.agent.as_deref())?;
    let b = side(&store, &args.b, args.agent.as_deref())?;
    let changes = diff::summary(&a, &b);
    let files = diff::file_diffs(&a, &b);
    let identical = a.id == b.id;
    if args.json {
        output::json(&DiffJson {
            version: JSON_VERSION,
            a: a.id.to_string(),
            b: b.id.to_string(),
            identical,
            changes,
            files,
        })?;
    } else if identical {
        output::note(&format!("stages are identical: {}", a.id));
    } else {
        let mut out = format!("{} -> {}\n", a.id, b.id);
        for change in &changes {
            out.push_str(&format!("  {change}\n"));
        }
        for file in &files {
            out.push('\n');
            out.push_str(&file.unified);
        }
        output::data(&out)?;
    }
    Ok(if identical {
        Exit::Success
    } else {
        Exit::CheckFailed
    })
}
