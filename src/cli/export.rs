//! `bottle export` and `bottle import`: move stages between machines as archives.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use fs_err as fs;

use super::output;
use super::{open_intact_stage, StoreArg};
use crate::error::{Exit, UserError};
use crate::stage::archive::{self, ImportError};
use crate::stage::store::WriteOutcome;

/// Write a stage as one tar archive whose bytes depend only on the stage
///
/// Entries are sorted, owned by 0:0, with fixed modes and time 0: the same stage exported on any
/// machine gives the same file. The stage is verified first.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A stage id or a unique prefix of at least 6 digits
    id: String,
    /// Where to write the archive (`-` for stdout); default: `<id>.tar`
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArg,
}

/// Check a stage archive completely, then add its stage to the store
///
/// The archive must hold exactly one stage directory of plain files, with no links and no paths
/// outside it, and the stage must verify byte for byte. Nothing enters the store otherwise.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The archive (`-` for stdin)
    file: PathBuf,
    #[command(flatten)]
    store: StoreArg,
}

pub fn exec_export(args: ExportArgs) -> anyhow::Result<Exit> {
    let store = args.store.open();
    let stage = open_intact_stage(&store, &args.id)?;
    let bytes = archive::export(&stage);
    let target = args
        .output
        .unwrap_or_else(|| PathBuf::from(format!("{}.tar", stage.id)));
    if target.as_os_str() == "-" {
        std::io::stdout().lock().write_all(&bytes)?;
        return Ok(Exit::Success);
    }
    // Beside the target, then renamed: a failed export never leaves a truncated archive.
    let tmp = target.with_extension(format!("tar.tmp-{}", std::process::id()));
    fs::write(&tmp, &bytes)?;
    fs::rename(&tmp, &target).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    output::note(&format!(
        "exported stage {} to {}",
        stage.id,
        target.display()
    ));
    Ok(Exit::Success)
}

pub fn exec_import(args: ImportArgs) -> anyhow::Result<Exit> {
    let bytes = read_limited(&args.file)?;
    let stage = archive::import(&bytes).map_err(|e| {
        let hint = match e {
            ImportError::Damaged { .. } => {
                "the archive was changed after export; export it again from an intact stage"
            }
            _ => "a stage archive is what `bottle export` writes",
        };
        UserError::check_failed(format!("refused `{}`: {e}", args.file.display()), hint)
    })?;
    let store = args.store.open();
    let outcome = store.write(&stage)?;
    let path = store.stage_dir(&stage.id).display().to_string();
    match outcome {
        WriteOutcome::Existed => {
            output::note(&format!("stage {} already exists at {path}", stage.id))
        }
        _ => output::note(&format!("imported stage {} to {path}", stage.id)),
    }
    output::data(&stage.id.to_string())?;
    Ok(Exit::Success)
}

fn read_limited(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let limit = archive::MAX_ARCHIVE_BYTES + 1;
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)?;
    } else {
        let file = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => UserError::usage(
                format!("no archive at `{}`", path.display()),
                "give the path `bottle export` wrote",
            ),
            _ => anyhow::Error::new(e).context(format!("failed to open `{}`", path.display())),
        })?;
        file.take(limit)
            .read_to_end(&mut bytes)
            .with_context(|| format!("failed to read `{}`", path.display()))?;
    }
    Ok(bytes)
}
