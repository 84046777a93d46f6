//! The runner: `bottle run` from a verified stage to a torn-down run. `preflight` judges the
//! host, `launch` plans every process and file without side effects, `session` carries the plan
//! out; `guard` is the other end, inside gvproxy's namespaces; `control` serves `ps`, `stop` and
//! `logs`. Only this folder (and the sidecars') spawns processes or opens sockets. It reads
//! stages, never manifests.
//!
//! Processes of a run: the runner (`bottle run`, holding the bridges as threads), the sidecars
//! it starts, the guard (`bottle __guard`) and gvproxy inside it, and smolvm's commands.
//!
//! **Invariant:** a stage is launched only after `stage::verify` found it intact and preflight
//! found smolvm's external network contract; there is no path to smolvm's TSI network.
//! **Invariant:** gvproxy runs only inside the guard's user + network + mount namespace, whose
//! only listeners are the relays to this run's bridges and whose file system is read-only but
//! for gvproxy's own directory; the guard checks this before it starts gvproxy.
//! **Invariant:** every process a run starts dies with the runner (PR_SET_PDEATHSIG), and a
//! process is signalled from a record only when its pid and start time both match.
//! **Invariant:** secrets reach smolvm through its environment only: never a command line, a
//! file, `run.json`, the guard, gvproxy or a sidecar.
//! **Invariant:** exactly one module names smolvm's flags (`smolvm`), one gvproxy's (`gvproxy`).

pub mod control;
pub mod guard;
pub mod gvproxy;
pub mod launch;
pub mod ports;
pub mod preflight;
pub mod procs;
pub mod record;
pub mod relay;
pub mod rundir;
pub mod session;
pub mod signals;
pub mod smolvm;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;

use crate::error::{Exit, UserError};
use crate::stage::{Stage, Store};
use launch::LaunchPlan;
use preflight::{Host, Tool};
use record::{RunRecord, State};

pub struct Options {
    pub dry_run: bool,
    pub workspace: PathBuf,
    /// Commands by sidecar name, over the stage's and the built-in ones.
    pub sidecar_commands: BTreeMap<String, Vec<String>>,
    /// Where run directories live (`rundir::base()` unless a test says otherwise).
    pub run_base: PathBuf,
    pub terminal: bool,
}

/// The launch plan for `stage` on this host, and the host when preflight passed (else its
/// problems). Starts nothing.
pub fn prepare(
    stage: &Stage,
    store: &Store,
    options: &Options,
) -> anyhow::Result<(LaunchPlan, Result<Host, Vec<preflight::Problem>>)> {
    let secrets: Vec<String> = stage.spec.secrets.iter().cloned().collect();
    // A dry run creates nothing, not even the cache of tool answers.
    let cache = (!options.dry_run && rundir::private_dir(&options.run_base).is_ok())
        .then(|| options.run_base.join("tools.json"));
    let needs_pipelock = stage.spec.egress.engine == crate::spec::resolved::EgressEngine::Pipelock;
    let facts = preflight::gather(&secrets, needs_pipelock, cache.as_deref());
    let host = preflight::assess(&facts);
    let bottle = std::env::current_exe().context("cannot find the bottle executable")?;
    let stage_dir = std::path::absolute(store.stage_dir(&stage.id))?;
    let store_dir = std::path::absolute(store.root())?;
    let layout = rundir::Layout::new(&options.run_base, &stage.id);
    let (smolvm, gvproxy, mode) = match &host {
        Ok(host) => (host.smolvm.clone(), host.gvproxy.clone(), host.mode),
        // A dry run still shows the plan: with what was found, or with the bare names.
        Err(_) => (
            found_or(&facts.smolvm, "smolvm"),
            found_or(&facts.gvproxy, "gvproxy"),
            match &facts.gvproxy {
                Tool::Found { output, .. } => gvproxy::parse_version(output)
                    .map(gvproxy::Mode::for_version)
                    .unwrap_or(gvproxy::Mode::Legacy),
                _ => gvproxy::Mode::Legacy,
            },
        ),
    };
    let plan = launch::plan(&launch::Inputs {
        stage,
        stage_dir: &stage_dir,
        layout: &layout,
        bottle: &bottle,
        smolvm: &smolvm,
        gvproxy: &gvproxy,
        mode,
        workspace: &options.workspace,
        sidecar_commands: &options.sidecar_commands,
        store: &store_dir,
        runner_pid: std::process::id(),
        terminal: options.terminal,
    });
    Ok((plan, host))
}

fn found_or(tool: &Tool, name: &str) -> PathBuf {
    match tool {
        Tool::Found { path, .. } | Tool::Broken { path, .. } => path.clone(),
        Tool::Missing => PathBuf::from(name),
    }
}

pub fn problems_error(problems: &[preflight::Problem]) -> anyhow::Error {
    UserError {
        message: format!(
            "this host cannot run the stage:\n{}",
            problems
                .iter()
                .map(|p| format!("  - {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        hint: Some("fix each problem above, then run again; `bottle run --dry-run ID` shows what would start".into()),
        exit: Exit::RunFailed,
    }
    .into()
}

/// Runs a planned stage to its end. `started` is when `bottle run` began, for the timings.
pub fn execute(
    stage: &Stage,
    plan: &LaunchPlan,
    options: &Options,
    started: Instant,
    note: &dyn Fn(&str),
) -> anyhow::Result<Exit> {
    let sidecar_names: Vec<&str> = plan.sidecars.iter().map(|s| s.name.as_str()).collect();
    rundir::ensure_short(
        &rundir::Layout::new(&options.run_base, &stage.id),
        &sidecar_names,
    )?;
    // Before any thread exists: every thread inherits the blocked set.
    signals::block()?;
    let run_dir = rundir::RunDir::acquire(&options.run_base, &stage.id).map_err(|err| {
        if err.is::<rundir::AlreadyRunning>() {
            UserError {
                message: err.to_string(),
                hint: Some(format!(
                    "wait for it to end, or stop it with `bottle stop {}`",
                    &stage.id.to_string()[..12]
                )),
                exit: Exit::RunFailed,
            }
            .into()
        } else {
            err
        }
    })?;
    if let Some(cleared) = &run_dir.cleared {
        note(&format!(
            "cleared a stale run of this stage (its runner, pid {}, died without cleaning up)",
            cleared.runner.pid
        ));
    }
    if plan.mode == gvproxy::Mode::Legacy {
        note(&launch::legacy_notice(&plan.network));
    }
    let checks_ms = started.elapsed().as_secs_f64() * 1e3;
    let record = RunRecord {
        version: record::RECORD_VERSION,
        id: stage.id.to_string(),
        agent: stage.spec.agent.clone(),
        slug: stage.plan.slug.clone(),
        runner: procs::ProcessId::current(),
        started_at_ms: record::now_ms(),
        state: State::Starting,
        gvproxy_mode: plan.mode,
        components: Vec::new(),
        sidecars: Vec::new(),
        outcome: None,
        timings: record::Timings {
            checks_ms: Some(checks_ms),
            ..Default::default()
        },
    };
    let secrets: Vec<String> = stage.spec.secrets.iter().cloned().collect();
    session::Session {
        plan,
        run_dir,
        record,
        secrets: &secrets,
        started,
        note,
    }
    .run()
    .map_err(|err| {
        UserError {
            message: format!("{err:#}"),
            hint: Some(format!(
                "the logs are kept: `bottle logs {}`",
                &stage.id.to_string()[..12]
            )),
            exit: Exit::RunFailed,
        }
        .into()
    })
}
