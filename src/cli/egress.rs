//! `bottle egress`: summarise an egress audit log per host, against the stage's current policy.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;

use super::output::{self, JSON_VERSION};
use super::{open_intact_stage, StoreArg};
use crate::error::{Exit, UserError};
use crate::render::egress::EgressPolicy;
use crate::sidecar::egress::audit::{self, HostSummary};
use crate::sidecar::egress::decision::{self, Host, CONNECT_PORT, HTTP_PORT};

const LONG_ABOUT: &str = "\
Summarise an egress audit log per host: what the agent reached and what was refused

One line per host and port: requests allowed, refused and failed, bytes up (to the host) and down,
and whether the stage's allow list has the host now. Use it to widen the list on purpose: add a
host to egress.allow in bottle.toml and run `bottle gen` again.

By default the log is the one of the stage's last `bottle run`; `--log FILE` reads the file given
to `bottle proxy --log FILE` instead.";

#[derive(Debug, clap::Args)]
#[command(
    about = "Summarise an egress audit log per host: what was reached and what was refused",
    long_about = LONG_ABOUT
)]
pub struct Args {
    /// A stage id or a unique prefix of at least 6 digits
    id: String,
    #[command(flatten)]
    store: StoreArg,
    /// The audit log to read (JSON lines, as written by `bottle proxy --log FILE`); default: the
    /// log of the stage's last `bottle run`
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Only hosts with refused requests
    #[arg(long)]
    denied: bool,
    /// Print a JSON object: {"version", "hosts": [{"host", "port", "tunnel", "allowed", "refused",
    /// "failed", "bytes_up", "bytes_down", "reasons", "last_message", "last_time", "listed"}]}
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct EgressJson {
    version: u32,
    hosts: Vec<HostJson>,
}

#[derive(Serialize)]
struct HostJson {
    #[serde(flatten)]
    summary: HostSummary,
    /// Whether the stage's allow list has this host and port now.
    listed: bool,
}

pub fn exec(args: Args) -> anyhow::Result<Exit> {
    let store = args.store.open();
    let stage = open_intact_stage(&store, &args.id)?;
    let policy = crate::sidecar::egress::policy_of(&stage)?;
    let log = args.log.clone().unwrap_or_else(|| {
        crate::run::rundir::Layout::new(&crate::run::rundir::base(), &stage.id).egress_audit_log()
    });
    let text = match std::fs::read_to_string(&log) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let hint = match args.log {
                Some(_) => "pass the file given to `bottle proxy --log FILE`",
                None => "the stage has not run with bottle's egress proxy here yet; or pass `--log FILE`",
            };
            return Err(UserError::usage(
                format!("no egress log at `{}`", log.display()),
                hint,
            ));
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("failed to read the egress log `{}`", log.display()))
        }
    };
    let parsed = audit::parse_log(&text);
    if !parsed.skipped.is_empty() {
        output::note(&format!(
            "skipped {} line{} of `{}` that are not egress records (first: line {})",
            parsed.skipped.len(),
            if parsed.skipped.len() == 1 { "" } else { "s" },
            log.display(),
            parsed.skipped[0]
        ));
    }
    let hosts: Vec<HostJson> = audit::summarize(&parsed.records)
        .into_iter()
        .filter(|s| !args.denied || s.refused > 0)
        .map(|summary| {
            let listed = is_listed(&policy, &summary);
            HostJson { summary, listed }
        })
        .collect();
    if args.json {
        output::json(&EgressJson {
            version: JSON_VERSION,
            hosts,
        })?;
        return Ok(Exit::Success);
    }
    if hosts.is_empty() {
        output::note(if args.denied {
            "nothing was refused"
        } else {
            "the log has no egress decisions"
        });
        return Ok(Exit::Success);
    }
    let rows: Vec<[String; 8]> = hosts.iter().map(row).collect();
    let header = [
        "HOST:PORT",
        "VIA",
        "ALLOWED",
        "REFUSED",
        "FAILED",
        "UP",
        "DOWN",
        "ON THE LIST",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    output::data(&out)?;
    for host in hosts.iter().filter(|h| h.summary.refused > 0) {
        if let Some(message) = &host.summary.last_message {
            output::note(&format!("{}: {message}", target(&host.summary)));
        }
    }
    if hosts.iter().any(|h| h.summary.refused > 0) {
        output::note(
            "to allow a host, add it to egress.allow in bottle.toml (and its private range to \
             egress.allow_addresses if it resolves to one), then run `bottle gen`",
        );
    }
    Ok(Exit::Success)
}

fn is_listed(policy: &EgressPolicy, summary: &HostSummary) -> bool {
    let (Some(host), Some(port)) = (Host::parse(&summary.host), summary.port) else {
        return false;
    };
    let default_port = if summary.tunnel {
        CONNECT_PORT
    } else {
        HTTP_PORT
    };
    decision::admit(policy, &host, port, default_port).is_ok()
}

fn target(s: &HostSummary) -> String {
    match (s.host.as_str(), s.port) {
        ("", _) => "(no host)".to_owned(),
        (host, Some(port)) => format!("{host}:{port}"),
        (host, None) => host.to_owned(),
    }
}

fn row(h: &HostJson) -> [String; 8] {
    let s = &h.summary;
    [
        target(s),
        if s.tunnel { "CONNECT" } else { "HTTP" }.to_owned(),
        s.allowed.to_string(),
        s.refused.to_string(),
        s.failed.to_string(),
        size(s.bytes_up),
        size(s.bytes_down),
        if h.listed { "yes" } else { "no" }.to_owned(),
    ]
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
