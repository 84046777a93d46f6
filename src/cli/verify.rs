//! `bottle verify`: re-render stages from their own spec and compare every byte.

use serde::Serialize;

use super::output::{self, JSON_VERSION};
use super::StoreArg;
use crate::error::Exit;
use crate::stage::verify::{self, Problem};

/// Check that stages are intact: re-render each from its spec.json, compare every byte and the
/// digests in plan.json
///
/// Without ids, checks the whole store. Exits 1 when any stage is damaged.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stage ids or unique prefixes of at least 6 digits
    ids: Vec<String>,
    #[command(flatten)]
    store: StoreArg,
    /// Print a JSON object: {"version", "stages": [{"id", "intact", "problems"}]}
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct VerifyJson {
    version: u32,
    stages: Vec<StageJson>,
}

#[derive(Serialize)]
struct StageJson {
    id: String,
    intact: bool,
    problems: Vec<Problem>,
}

pub fn exec(args: Args) -> anyhow::Result<Exit> {
    let store = args.store.open();
    let ids = if args.ids.is_empty() {
        store.ids()?
    } else {
        args.ids
            .iter()
            .map(|text| store.resolve(text))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let reports: Vec<_> = ids.iter().map(|id| verify::verify(&store, id)).collect();
    let damaged = reports.iter().filter(|r| !r.is_intact()).count();
    if args.json {
        let stages = reports
            .into_iter()
            .map(|r| StageJson {
                id: r.id.to_string(),
                intact: r.problems.is_empty(),
                problems: r.problems,
            })
            .collect();
        output::json(&VerifyJson {
            version: JSON_VERSION,
            stages,
        })?;
    } else {
        let mut out = String::new();
        for report in &reports {
            if report.is_intact() {
                out.push_str(&format!("ok       {}\n", report.id));
            } else {
                out.push_str(&format!("DAMAGED  {}\n", report.id));
                for problem in &report.problems {
                    out.push_str(&format!("         {problem}\n"));
                }
            }
        }
        if !out.is_empty() {
            output::data(&out)?;
        }
        output::note(&match (reports.len(), damaged) {
            (0, _) => format!("no stages in `{}`", store.root().display()),
            (n, 0) => format!("{n} stage{} intact", if n == 1 { "" } else { "s" }),
            (n, d) => {
                format!("{d} of {n} stages damaged: remove them and regenerate with `bottle gen`")
            }
        });
    }
    Ok(if damaged == 0 {
        Exit::Success
    } else {
        Exit::CheckFailed
    })
}
