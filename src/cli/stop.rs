//! `bottle stop`: a clean teardown of a run from another terminal.

use std::time::Duration;

use super::output;
use crate::error::Exit;
use crate::run::{control, rundir};

/// Stop a running stage: the same ordered teardown as Ctrl-C in its terminal
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A stage id or a unique prefix of at least 6 digits
    id: String,
}

pub fn exec(args: Args) -> anyhow::Result<Exit> {
    match control::stop(&rundir::base(), &args.id, Duration::from_secs(15))? {
        control::Stopped::Clean(record) => {
            let how = record
                .outcome
                .map(|o| format!("{} (exit {})", o.reason, o.exit_code))
                .unwrap_or_else(|| "no outcome recorded".into());
            output::note(&format!("stopped {}: {how}", record.id));
        }
        control::Stopped::Stale(record) => output::note(&format!(
            "{} was not running (its runner, pid {}, had died); cleared what it left",
            record.id, record.runner.pid
        )),
        control::Stopped::NotRunning(record) => {
            output::note(&format!("{} is not running", record.id))
        }
    }
    Ok(Exit::Success)
}
