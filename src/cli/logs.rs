//! `bottle logs`: a run's logs, kept after it ends.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use fs_err as fs;

use crate::error::Exit;
use crate::run::record::RunRecord;
use crate::run::{control, rundir};

/// Print the logs of a stage's last run
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A stage id or a unique prefix of at least 6 digits
    id: String,
    /// One component: gvproxy, smolvm, guard, or a sidecar of the run by name; default all
    #[arg(long, value_name = "NAME")]
    component: Option<String>,
    /// Keep printing what is appended until the run ends (needs --component)
    #[arg(long, short = 'f', requires = "component")]
    follow: bool,
}

pub fn exec(args: Args) -> anyhow::Result<Exit> {
    let (layout, record) = control::find(&rundir::base(), &args.id)?;
    let mut out = std::io::stdout().lock();
    let Some(component) = &args.component else {
        let names = control::components(&record);
        for name in names {
            let path = layout.log(&name);
            if let Ok(text) = std::fs::read_to_string(&path) {
                writeln!(out, "==> {name} ({}) <==", path.display())?;
                out.write_all(text.as_bytes())?;
            }
        }
        return Ok(Exit::Success);
    };
    let path = control::log_path(&layout, &record, component)?;
    let mut file = fs::File::open(&path)?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    out.write_all(&buf)?;
    out.flush()?;
    if args.follow {
        let mut pos = file.stream_position()?;
        loop {
            let live = RunRecord::read(&layout.record())
                .map(|r| rundir::is_live(&r))
                .unwrap_or(false);
            buf.clear();
            file.seek(SeekFrom::Start(pos))?;
            file.read_to_end(&mut buf)?;
            pos += buf.len() as u64;
            out.write_all(&buf)?;
            out.flush()?;
            if !live {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(Exit::Success)
}
