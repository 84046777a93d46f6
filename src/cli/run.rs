//! `bottle run`: verify a stage, check the host, show the plan, ask, and run it.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;

use super::output;
use super::{intact_stage, StoreArg};
use crate::error::{Exit, UserError};
use crate::run::{self, launch, rundir};
use crate::stage::Stage;

/// Run a stage: its sidecars, a contained gvproxy and the smolvm machine, then clean up
///
/// The stage is verified first and refused when damaged. Exits with the guest's exit code, or
/// 125 when bottle itself failed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A stage id or a unique prefix of at least 6 digits
    id: String,
    #[command(flatten)]
    store: StoreArg,
    /// Do not ask before starting
    #[arg(long, short = 'y')]
    yes: bool,
    /// Print every process and file the run would start and create; start nothing
    #[arg(long)]
    dry_run: bool,
    /// The directory mounted at the bottle's workdir
    #[arg(long, value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
    /// Start a sidecar of the stage with this command instead of its own (or the built-in
    /// one), `{port}` replaced by its host port: NAME=PROGRAM ARG... split on spaces. Repeatable.
    #[arg(long = "sidecar", value_name = "NAME=COMMAND")]
    sidecars: Vec<String>,
}

pub fn exec(args: Args) -> anyhow::Result<Exit> {
    let started = Instant::now();
    let store = args.store.open();
    let id = store.resolve(&args.id)?;
    // Held shared until the run ends, taken before the stage is verified: `bottle gc` never
    // removes a stage that a run uses.
    let _held = store.hold(&id)?;
    let stage = intact_stage(&store, &id)?;
    let workspace = std::path::absolute(&args.workspace)
        .with_context(|| format!("bad workspace `{}`", args.workspace.display()))?;
    if !workspace.is_dir() {
        return Err(UserError::usage(
            format!("the workspace `{}` is not a directory", workspace.display()),
            "pass an existing directory with --workspace",
        ));
    }
    // The stage's own commands (supervise, custom sidecars) and the built-in egress proxy are
    // in the plan; the command line may replace any of them by name.
    let mut sidecar_commands = BTreeMap::new();
    for text in &args.sidecars {
        let (name, command) = parse_sidecar(text, &stage)?;
        sidecar_commands.insert(name, command);
    }
    let options = run::Options {
        dry_run: args.dry_run,
        workspace,
        sidecar_commands,
        run_base: rundir::base(),
        terminal: std::io::stdin().is_terminal(),
    };
    let (plan, host) = run::prepare(&stage, &store, &options)?;
    if options.dry_run {
        output::data(&launch::render(&plan))?;
        if let Err(problems) = &host {
            output::note(&format!(
                "preflight: this host could not run it yet:\n{}",
                problems
                    .iter()
                    .map(|p| format!("  - {p}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        return Ok(Exit::Success);
    }
    if let Err(problems) = host {
        return Err(run::problems_error(&problems));
    }
    if !args.yes {
        confirm(&super::show::text(&stage))?;
    }
    run::execute(&stage, &plan, &options, started, &output::note)
}

fn parse_sidecar(text: &str, stage: &Stage) -> anyhow::Result<(String, Vec<String>)> {
    let names: Vec<&str> = stage
        .plan
        .sidecars
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let bad = || {
        UserError::usage(
            format!("`--sidecar {text}` is not NAME=COMMAND for a sidecar of this stage"),
            format!(
                "for example: --sidecar 'egress=my-proxy --port {{port}}'; this stage's sidecars: {}",
                names.join(", ")
            ),
        )
    };
    let (name, command) = text.split_once('=').ok_or_else(bad)?;
    if !names.contains(&name) {
        return Err(bad());
    }
    let words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
    if words.is_empty() {
        return Err(bad());
    }
    Ok((name.to_owned(), words))
}

/// Shows the plan on stderr and asks y/N on the terminal; without one, refuses.
fn confirm(plan_text: &str) -> anyhow::Result<()> {
    output::note(plan_text);
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(UserError {
            message: "not starting without confirmation: stdin is not a terminal".into(),
            hint: Some("read the plan above (or `bottle show ID`) and pass --yes".into()),
            exit: Exit::RunFailed,
        }
        .into());
    }
    let mut err = std::io::stderr().lock();
    write!(err, "start this bottle? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(UserError {
            message: "not started".into(),
            hint: None,
            exit: Exit::RunFailed,
        }
        .into())
    }
}
