//! One renderer for every error, and the exit codes they map to. Errors are printed once, by
//! `cli::main`: `error: …`, then each cause as `Caused by: …`, then an optional `hint: …`.

use std::io::Write;
use std::process::ExitCode;

use crate::spec::SpecError;
use crate::stage::store::LookupError;

/// The documented exit codes (also listed in `bottle --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// A check said no: `verify` found a damaged stage, `diff` found differences.
    CheckFailed,
    /// The command line, the manifest or an id is wrong; nothing was done.
    Usage,
    /// Something else failed (I/O, permissions); the message says what.
    Failure,
    /// `bottle run`: bottle could not run the stage, or a part of the bottle failed while it
    /// ran (preflight, a damaged stage, a component that died); the message says which.
    RunFailed,
    /// `bottle run`: the guest's own exit code, passed through.
    Guest(u8),
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::CheckFailed => 1,
            Exit::Usage => 2,
            Exit::Failure => 3,
            Exit::RunFailed => RUN_FAILED,
            Exit::Guest(code) => code,
        }
    }
}

/// What `bottle run` exits with when bottle itself failed (the code docker and podman use).
pub const RUN_FAILED: u8 = 125;

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  a check said no: a damaged stage (verify, show, export), stages that differ (diff),
     a stage missing from the store (gen --check), a refused archive (import)
  2  bad usage: arguments, manifest or stage id; nothing was written
  3  any other failure, such as an unreadable or unwritable file
run:
  the guest's exit code (128+N when the guest was killed by signal N)
  125  bottle could not run the stage or a part of the bottle failed; the message says which";

/// An error the user can fix, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
    pub exit: Exit,
}

impl UserError {
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
        UserError {
            message: message.into(),
            hint: Some(hint.into()),
            exit: Exit::Usage,
        }
        .into()
    }

    pub fn check_failed(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
        UserError {
            message: message.into(),
            hint: Some(hint.into()),
            exit: Exit::CheckFailed,
        }
        .into()
    }
}

pub fn exit_code(error: &anyhow::Error) -> Exit {
    for cause in error.chain() {
        if cause.is::<SpecError>() || cause.is::<LookupError>() {
            return Exit::Usage;
        }
        if let Some(user) = cause.downcast_ref::<UserError>() {
            return user.exit;
        }
    }
    Exit::Failure
}

pub fn render(error: &anyhow::Error) -> String {
    let mut out = format!("error: {error}");
    for cause in error.chain().skip(1) {
        out.push_str(&format!("\n  Caused by: {cause}"));
    }
    let hint = error.chain().find_map(|cause| {
        if let Some(lookup) = cause.downcast_ref::<LookupError>() {
            return Some(lookup.hint());
        }
        cause
            .downcast_ref::<UserError>()
            .and_then(|u| u.hint.clone())
    });
    if let Some(hint) = hint {
        out.push_str(&format!("\n\nhint: {hint}"));
    }
    out
}

pub fn report(error: &anyhow::Error) {
    let _ = writeln!(std::io::stderr().lock(), "{}", render(error));
}
