//! `bottle ps`: the running stages, their components and ports.

use serde::Serialize;

use super::output::{self, JSON_VERSION};
use crate::error::Exit;
use crate::run::{control, rundir};

/// List running stages with their components (pids) and sidecar ports
///
/// A run whose runner died without cleaning up is cleared and reported on stderr.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON object: {"version", "runs": [run.json of each live run, plus "dir"]}
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct PsJson {
    version: u32,
    runs: Vec<control::RunView>,
}

pub fn exec(args: Args) -> anyhow::Result<Exit> {
    let (live, cleared) = control::list(&rundir::base())?;
    for run in &cleared {
        output::note(&format!(
            "cleared a stale run of {} (runner pid {} is gone)",
            run.record.id, run.record.runner.pid
        ));
    }
    if args.json {
        output::json(&PsJson {
            version: JSON_VERSION,
            runs: live,
        })?;
        return Ok(Exit::Success);
    }
    if live.is_empty() {
        output::note("no running stages");
        return Ok(Exit::Success);
    }
    let mut out = String::new();
    for run in &live {
        let r = &run.record;
        out.push_str(&format!(
            "{}  {}  {:?}  runner {}\n",
            r.id, r.agent, r.state, r.runner.pid
        ));
        for c in &r.components {
            out.push_str(&format!("  {:<10} pid {}\n", c.name, c.process.pid));
        }
        for s in &r.sidecars {
            out.push_str(&format!(
                "  {:<10} guest :{}  host 127.0.0.1:{}{}\n",
                s.name,
                s.guest_port,
                s.host_port,
                if s.host_port != s.preferred_port {
                    format!(" (preferred {} was taken)", s.preferred_port)
                } else {
                    String::new()
                }
            ));
        }
    }
    output::data(&out)?;
    Ok(Exit::Success)
}
