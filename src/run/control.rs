//! Runs seen from another terminal: list them (`ps`), stop one (`stop`), find its logs (`logs`).
//! A run whose runner is gone (or whose pid now names another process) is stale: it is marked
//! crashed and whatever provably belongs to it is stopped. Never signals a process it cannot
//! prove is the recorded one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use nix::sys::signal::Signal;
use serde::Serialize;

use super::record::{RunRecord, State};
use super::rundir::{self, Layout};
use crate::error::{Exit, UserError};

#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub dir: String,
    #[serde(flatten)]
    pub record: RunRecord,
}

/// Every run under `base`: live ones, and stale ones that were just cleared (their record now
/// says `crashed`).
pub fn list(base: &Path) -> anyhow::Result<(Vec<RunView>, Vec<RunView>)> {
    let mut live = Vec::new();
    let mut cleared = Vec::new();
    for (layout, mut record) in rundir::list(base)? {
        let view = |record: RunRecord| RunView {
            dir: layout.root.display().to_string(),
            record,
        };
        if rundir::is_live(&record) {
            live.push(view(record));
        } else if matches!(
            record.state,
            State::Starting | State::Running | State::Stopping
        ) {
            rundir::mark_crashed(&layout, &mut record)?;
            cleared.push(view(record));
        }
    }
    Ok((live, cleared))
}

/// Finds the run of a stage given by id or prefix among the run directories (stages removed
/// from the store can still have runs).
pub fn find(base: &Path, text: &str) -> anyhow::Result<(Layout, RunRecord)> {
    let prefix = text.trim();
    let matches: Vec<_> = rundir::list(base)?
        .into_iter()
        .filter(|(_, r)| {
            r.id.starts_with(prefix) && prefix.len() >= crate::stage::id::MIN_PREFIX_LEN
        })
        .collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().expect("one match")),
        0 => Err(UserError::usage(
            format!("no run of a stage `{text}` in `{}`", base.display()),
            "list runs with `bottle ps`; give at least 6 digits of the stage id",
        )),
        _ => Err(UserError::usage(
            format!("the id prefix `{text}` matches several runs"),
            "give more digits of the id",
        )),
    }
}

pub enum Stopped {
    /// The runner tore the run down; its record says how it ended.
    Clean(RunRecord),
    /// The runner was already gone; what was left of it was cleared.
    Stale(RunRecord),
    NotRunning(RunRecord),
}

/// Asks the runner to tear down (SIGTERM, which it handles like Ctrl-C) and waits for it.
pub fn stop(base: &Path, text: &str, timeout: Duration) -> anyhow::Result<Stopped> {
    let (layout, mut record) = find(base, text)?;
    if !matches!(
        record.state,
        State::Starting | State::Running | State::Stopping
    ) {
        return Ok(Stopped::NotRunning(record));
    }
    if !record.runner.is_alive() {
        rundir::mark_crashed(&layout, &mut record)?;
        return Ok(Stopped::Stale(record));
    }
    record.runner.signal(Signal::SIGTERM);
    let deadline = Instant::now() + timeout;
    while record.runner.is_alive() {
        if Instant::now() >= deadline {
            bail!(
                "the runner (pid {}) did not stop within {} s",
                record.runner.pid,
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let record = RunRecord::read(&layout.record())?;
    Ok(Stopped::Clean(record))
}

pub const COMPONENTS: [&str; 3] = ["guard", "gvproxy", "smolvm"];

/// Every component with a log in a run: gvproxy, the guard, smolvm and the run's sidecars.
pub fn components(record: &RunRecord) -> Vec<String> {
    let mut all: Vec<String> = COMPONENTS.iter().map(|c| (*c).to_owned()).collect();
    all.extend(record.sidecars.iter().map(|s| s.name.clone()));
    all
}

/// The log of a component of the run (only a name the record knows, so a name can never
/// reach outside the log directory).
pub fn log_path(layout: &Layout, record: &RunRecord, component: &str) -> anyhow::Result<PathBuf> {
    let known = components(record);
    if !known.iter().any(|c| c == component) {
        return Err(UserError {
            message: format!("no component `{component}` in this run"),
            hint: Some(format!("choose one of {}", known.join(", "))),
            exit: Exit::Usage,
        }
        .into());
    }
    // The egress proxy's own output is a line or two; what a user wants is its decisions.
    if component == "egress" && layout.egress_audit_log().exists() {
        return Ok(layout.egress_audit_log());
    }
    Ok(layout.log(component))
}
