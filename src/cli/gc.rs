//! `bottle gc`: remove stages nobody keeps.

use serde::Serialize;

use super::output::{self, human_size, JSON_VERSION};
use super::StoreArg;
use crate::error::{Exit, UserError};
use crate::stage::gc::{self, Decision};
use crate::stage::pins::{self, Pin};

/// Remove stages that are neither pinned, in use by a run, nor newer than --keep-since
///
/// Also removes temporary directories that crashed writers left (older than an hour).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only say what would be removed
    #[arg(long)]
    dry_run: bool,
    /// Keep stages created within this long: `30m`, `12h`, `7d`, `2w`
    #[arg(long, value_name = "DURATION")]
    keep_since: Option<String>,
    #[command(flatten)]
    store: StoreArg,
    /// Print a JSON object: {"version", "dry_run", "stages": [{"id", "size", "kept"}], "pins",
    /// "freed", "temporaries_removed"}; `kept` is null for a removed stage, else "pinned",
    /// "recent" or "in_use"
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct GcJson {
    version: u32,
    dry_run: bool,
    stages: Vec<Decision>,
    pins: Vec<Pin>,
    freed: u64,
    temporaries_removed: usize,
}

pub fn exec(args: Args) -> anyhow::Result<Exit> {
    let keep_since = args
        .keep_since
        .as_deref()
        .map(gc::parse_duration)
        .transpose()
        .map_err(|e| UserError::usage(e, "for example `--keep-since 7d`"))?;
    let store = args.store.open();
    let outcome = gc::collect(&store, keep_since, args.dry_run)?;
    if args.json {
        output::json(&GcJson {
            version: JSON_VERSION,
            dry_run: args.dry_run,
            pins: pins::list(&store)?,
            stages: outcome.decisions,
            freed: outcome.freed,
            temporaries_removed: outcome.temporaries_removed,
        })?;
        return Ok(Exit::Success);
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut out = String::new();
    for decision in &outcome.decisions {
        match &decision.kept {
            None => out.push_str(&format!(
                "{verb:<12}  {}  {}\n",
                decision.id,
                human_size(decision.size)
            )),
            Some(why) => out.push_str(&format!(
                "{:<12}  {}  ({})\n",
                "kept",
                decision.id,
                keep_reason(why)
            )),
        }
    }
    if !out.is_empty() {
        output::data(&out)?;
    }
    let removed = outcome
        .decisions
        .iter()
        .filter(|d| d.kept.is_none())
        .count();
    output::note(&format!(
        "{verb} {removed} stage{} ({}), kept {}; {} stale temporary director{}",
        if removed == 1 { "" } else { "s" },
        human_size(outcome.freed),
        outcome.decisions.len() - removed,
        outcome.temporaries_removed,
        if outcome.temporaries_removed == 1 {
            "y"
        } else {
            "ies"
        },
    ));
    Ok(Exit::Success)
}

fn keep_reason(keep: &gc::Keep) -> &'static str {
    match keep {
        gc::Keep::Pinned => "pinned",
        gc::Keep::Recent => "recent",
        gc::Keep::InUse => "in use by a run",
    }
}
