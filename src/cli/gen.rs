//! `bottle gen`: resolve a manifest, render its stage, write it to the store.

use serde::Serialize;

use super::output::{self, JSON_VERSION};
use super::{ManifestArgs, StoreArg};
use crate::error::{Exit, UserError};
use crate::stage::{self, diff, store::WriteOutcome, verify, Stage, StageId, Store};

/// Render a manifest's agent into a stage in the store and print its id
///
/// The id is the BLAKE3 hash of the resolved spec: the same spec gives the same id and the same
/// bytes on every machine. When the stage is already in the store, nothing is rewritten.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    manifest: ManifestArgs,
    #[command(flatten)]
    store: StoreArg,
    /// Print a JSON object: {"version", "id", "agent", "path", "created"}
    #[arg(long)]
    json: bool,
    /// Write nothing; exit 1, with a summary of what changed, when the stage this manifest
    /// produces is not intact in the store (a CI check that committed stages are fresh)
    #[arg(long, conflicts_with = "json")]
    check: bool,
}

#[derive(Serialize)]
struct GenJson<'a> {
    version: u32,
    id: String,
    agent: &'a str,
    path: String,
    created: bool,
}

pub fn exec(args: Args) -> anyhow::Result<Exit> {
    let spec = args.manifest.resolve()?;
    let stage = stage::build(&spec);
    let store = args.store.open();
    if args.check {
        return check(&store, &stage);
    }
    let outcome = store.write(&stage)?;
    let path = store.stage_dir(&stage.id).display().to_string();
    match outcome {
        WriteOutcome::Created => output::note(&format!("created stage {} at {path}", stage.id)),
        WriteOutcome::Repaired => output::note(&format!(
            "replaced the damaged stage {} at {path}",
            stage.id
        )),
        WriteOutcome::Existed => output::note(&format!(
            "stage {} already exists at {path}; nothing written",
            stage.id
        )),
    }
    if args.json {
        output::json(&GenJson {
            version: JSON_VERSION,
            id: stage.id.to_string(),
            agent: &spec.agent,
            path,
            created: outcome != WriteOutcome::Existed,
        })?;
    } else {
        output::data(&stage.id.to_string())?;
    }
    Ok(Exit::Success)
}

fn check(store: &Store, stage: &Stage) -> anyhow::Result<Exit> {
    if store.contains(&stage.id) && verify::verify(store, &stage.id).is_intact() {
        output::note(&format!("stage {} is in the store and intact", stage.id));
        output::data(&stage.id.to_string())?;
        return Ok(Exit::Success);
    }
    let previous = latest_of_agent(store, &stage.spec.agent)?;
    let mut out = format!("{} (not in the store)\n", stage.id);
    match &previous {
        Some(old) => {
            out.push_str(&format!(
                "changes from {}, the newest stage of agent `{}`:\n",
                old.id, stage.spec.agent
            ));
            for change in diff::summary(old, stage) {
                out.push_str(&format!("  {change}\n"));
            }
        }
        None => out.push_str(&format!(
            "the store has no stage of agent `{}`\n",
            stage.spec.agent
        )),
    }
    output::data(&out)?;
    Err(UserError::check_failed(
        format!(
            "the stage of agent `{}` is not in `{}`",
            stage.spec.agent,
            store.root().display()
        ),
        "run `bottle gen` (and commit the new stage if the store is versioned)",
    ))
}

/// The most recently written intact stage of `agent`, to explain what changed.
fn latest_of_agent(store: &Store, agent: &str) -> anyhow::Result<Option<Stage>> {
    let mut newest: Option<(std::time::SystemTime, StageId)> = None;
    for summary in store.summaries()?.into_iter().filter(|s| s.agent == agent) {
        let id: StageId = summary.id.parse().map_err(anyhow::Error::msg)?;
        let modified = std::fs::metadata(store.stage_dir(&id))?.modified()?;
        if newest.is_none_or(|(t, _)| modified > t) {
            newest = Some((modified, id));
        }
    }
    Ok(newest.and_then(|(_, id)| verify::verify(store, &id).stage))
}
