//! The command line: argument definitions and glue. One file per command; each builds what the
//! library needs from its arguments, calls it, and prints. No logic of its own lives here.
//! stdout carries data (ids, tables, `--json`); every message goes to stderr.

mod diff;
mod egress;
mod export;
mod gc;
mod gen;
mod guard;
mod hash;
mod logs;
mod ls;
mod output;
mod pin;
mod proxy;
mod ps;
mod run;
mod show;
mod stop;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::error::{self, Exit, UserError};
use crate::spec::{Manifest, ResolvedSpec};
use crate::stage::{self, verify as check, Stage, StageId, Store};

const ABOUT: &str = "Run AI coding agents in microVMs that reach only what you allowed";

const LONG_ABOUT: &str = "\
Run AI coding agents in microVMs that reach only what you allowed.

A manifest (bottle.toml) names agents and the bottles they run in. `bottle gen` turns one agent
into a stage: a directory of rendered configuration named by the BLAKE3 hash of its resolved
spec, so the same spec gives the same id and the same bytes on every machine.

  bottle gen examples/claude.toml     # write the stage, print its id
  bottle show 1a2b3c                  # what it would run and what it could reach
  bottle verify                       # re-render every stage and compare every byte
  bottle run 1a2b3c                   # run it: sidecars, a contained gvproxy, smolvm
  bottle ps                           # what is running";

#[derive(Debug, Parser)]
#[command(name = "bottle", version, about = ABOUT, long_about = LONG_ABOUT, after_help = error::EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Gen(gen::Args),
    Hash(hash::Args),
    Show(show::Args),
    Ls(ls::Args),
    Verify(verify::Args),
    Diff(diff::Args),
    Run(run::Args),
    Ps(ps::Args),
    Stop(stop::Args),
    Logs(logs::Args),
    /// Internal: the guard that contains gvproxy (started by `bottle run`)
    #[command(name = "__guard", hide = true)]
    Guard(guard::Args),
    Pin(pin::PinArgs),
    Unpin(pin::UnpinArgs),
    Gc(gc::Args),
    Export(export::ExportArgs),
    Import(export::ImportArgs),
    Proxy(proxy::Args),
    Egress(egress::Args),
}

/// The store, shared by every command that reads or writes stages.
#[derive(Debug, clap::Args)]
struct StoreArg {
    /// The stage store
    #[arg(long, value_name = "DIR", env = "BOTTLE_STORE", default_value = stage::store::DEFAULT_STORE)]
    store: PathBuf,
}

impl StoreArg {
    fn open(&self) -> Store {
        Store::new(&self.store)
    }
}

/// Which manifest, and which agent in it.
#[derive(Debug, clap::Args)]
struct ManifestArgs {
    /// The manifest
    #[arg(value_name = "MANIFEST", default_value = "bottle.toml")]
    manifest: PathBuf,
    /// The agent to resolve; may be left out when the manifest defines exactly one
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
}

impl ManifestArgs {
    fn resolve(&self) -> anyhow::Result<ResolvedSpec> {
        load_spec(&self.manifest, self.agent.as_deref())
    }
}

/// The command tree, for generated documentation (completions, the man page).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Success.into()
            };
        }
    };
    let is_run = matches!(cli.command, Command::Run(_));
    let result = match cli.command {
        Command::Gen(args) => gen::exec(args),
        Command::Hash(args) => hash::exec(args),
        Command::Show(args) => show::exec(args),
        Command::Ls(args) => ls::exec(args),
        Command::Verify(args) => verify::exec(args),
        Command::Diff(args) => diff::exec(args),
        Command::Run(args) => run::exec(args),
        Command::Ps(args) => ps::exec(args),
        Command::Stop(args) => stop::exec(args),
        Command::Logs(args) => logs::exec(args),
        Command::Guard(args) => guard::exec(args),
        Command::Pin(args) => pin::exec_pin(args),
        Command::Unpin(args) => pin::exec_unpin(args),
        Command::Gc(args) => gc::exec(args),
        Command::Export(args) => export::exec_export(args),
        Command::Import(args) => export::exec_import(args),
        Command::Proxy(args) => proxy::exec(args),
        Command::Egress(args) => egress::exec(args),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(err) if is_broken_pipe(&err) => Exit::Success.into(),
        Err(err) => {
            error::report(&err);
            if is_run {
                // A guest may exit 1, 2 or 3 itself: every failure of bottle's own is 125.
                Exit::RunFailed.into()
            } else {
                error::exit_code(&err).into()
            }
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

fn load_spec(path: &Path, agent: Option<&str>) -> anyhow::Result<ResolvedSpec> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(UserError::usage(
                format!("no manifest at `{}`", path.display()),
                "write a bottle.toml (see examples/) or pass the manifest's path",
            ))
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("failed to read the manifest `{}`", path.display()))
        }
    };
    let name = path.display().to_string();
    let manifest = Manifest::parse(&name, &text)?;
    Ok(manifest.resolve(agent)?)
}

/// Finds a stage by id or prefix and refuses it unless it verifies.
fn open_intact_stage(store: &Store, id_text: &str) -> anyhow::Result<Stage> {
    let id = store.resolve(id_text)?;
    intact_stage(store, &id)
}

fn intact_stage(store: &Store, id: &StageId) -> anyhow::Result<Stage> {
    let report = check::verify(store, id);
    match report.stage {
        Some(stage) if report.problems.is_empty() => Ok(stage),
        _ => Err(UserError::check_failed(
            format!(
                "stage {id} is damaged:\n{}",
                report.problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
            ),
            "regenerate it from its manifest with `bottle gen` after removing the damaged directory",
        )),
    }
}
