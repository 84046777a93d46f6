//! `bottle hash`: the id a manifest's agent would get, with nothing written.

use super::output;
use super::ManifestArgs;
use crate::error::Exit;
use crate::stage::StageId;

/// Print the stage id of a manifest's agent without writing anything
///
/// This is the cache key for CI: it changes exactly when the stage's content would.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    manifest: ManifestArgs,
}

pub fn exec(args: Args) -> anyhow::Result<Exit> {
    let spec = args.manifest.resolve()?;
    output::data(&StageId::of_canonical_spec(&spec.canonical_bytes()).to_string())?;
    Ok(Exit::Success)
}
