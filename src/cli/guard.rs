//! `bottle __guard`: hidden; the runner starts it to contain gvproxy (see `run::guard`).

use std::path::PathBuf;

use crate::error::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The guard configuration the runner wrote
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

pub fn exec(args: Args) -> anyhow::Result<Exit> {
    let code = crate::run::guard::main(&args.config);
    Ok(Exit::Guest(code.clamp(0, 255) as u8))
}
