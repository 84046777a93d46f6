//! `bottle ls`: the stages in the store.

use serde::Serialize;

use super::output::{self, human_size, JSON_VERSION};
use super::StoreArg;
use crate::error::Exit;
use crate::stage::store::StageSummary;

/// List the stages in the store, with agent, image and size
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    store: StoreArg,
    /// Print a JSON object: {"version", "store", "stages": [{"id", "agent", "image", "size"}]}
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct LsJson {
    version: u32,
    store: String,
    stages: Vec<StageSummary>,
}

pub fn exec(args: Args) -> anyhow::Result<Exit> {
    let store = args.store.open();
    let stages = store.summaries()?;
    if args.json {
        output::json(&LsJson {
            version: JSON_VERSION,
            store: store.root().display().to_string(),
            stages,
        })?;
        return Ok(Exit::Success);
    }
    if stages.is_empty() {
        output::note(&format!("no stages in `{}`", store.root().display()));
        return Ok(Exit::Success);
    }
    let agent_width = stages
        .iter()
        .map(|s| s.agent.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = format!(
        "{:<32}  {:<agent_width$}  {:>9}  IMAGE\n",
        "ID", "AGENT", "SIZE"
    );
    for stage in &stages {
        out.push_str(&format!(
            "{}  {:<agent_width$}  {:>9}  {}\n",
            stage.id,
            stage.agent,
            human_size(stage.size),
            stage.image
        ));
    }
    output::data(&out)?;
    Ok(Exit::Success)
}
