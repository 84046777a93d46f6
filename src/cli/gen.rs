//! `bottle gen`: resolve a manifest, render its stage, write it to the store.

use serde::Serialize;

use super::output::{self, JSON_VERSION};
use super::{ManifestArgs, StoreArg};
use crate::error::Exit;
use crate::stage::{self, store::WriteOutcome};

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
