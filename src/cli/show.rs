//! `bottle show`: the plan a person reads before saying yes.

use serde::Serialize;

use super::output::{self, JSON_VERSION};
use super::{open_intact_stage, StoreArg};
use crate::error::Exit;
use crate::render::plan::Plan;
use crate::render::smolfile;
use crate::spec::resolved::EgressEngine;
use crate::spec::ResolvedSpec;
use crate::stage::alloc::{self, SidecarKind};
use crate::stage::diff::shell_words;
use crate::stage::Stage;

/// Show what a stage runs and what its guest can and cannot reach
///
/// The stage is verified first; a damaged stage is refused.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A stage id or a unique prefix of at least 6 digits
    id: String,
    #[command(flatten)]
    store: StoreArg,
    /// Print a JSON object: {"version", "spec", "plan", "guest_env", "unreachable"}
    #[arg(long)]
    json: bool,
}

const UNREACHABLE: &[&str] = &[
    "any host not on the egress list, and listed hosts that resolve to private, loopback, link-local or metadata addresses",
    "the host's loopback ports and its LAN",
    "DNS for any name but proxy.internal",
];

#[derive(Serialize)]
struct ShowJson<'a> {
    version: u32,
    spec: &'a ResolvedSpec,
    plan: &'a Plan,
    guest_env: std::collections::BTreeMap<String, String>,
    unreachable: &'a [&'a str],
}

pub fn exec(args: Args) -> anyhow::Result<Exit> {
    let store = args.store.open();
    let stage = open_intact_stage(&store, &args.id)?;
    let assignments = alloc::allocate(&stage.id, &stage.spec);
    let guest_env = smolfile::guest_env(&stage.spec, &assignments);
    if args.json {
        output::json(&ShowJson {
            version: JSON_VERSION,
            spec: &stage.spec,
            plan: &stage.plan,
            guest_env,
            unreachable: UNREACHABLE,
        })?;
        return Ok(Exit::Success);
    }
    output::data(&text(&stage))?;
    Ok(Exit::Success)
}

/// The plan as a person reads it; also what `bottle run` shows before asking.
pub(super) fn text(stage: &Stage) -> String {
    let assignments = alloc::allocate(&stage.id, &stage.spec);
    let guest_env = smolfile::guest_env(&stage.spec, &assignments);
    let spec = &stage.spec;
    let plan = &stage.plan;
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("stage {}  agent {}", stage.id, spec.agent));
    line(format!("  image    {}", spec.image));
    line(format!("  command  {}", shell_words(&spec.command)));
    line(format!("  workdir  {}", spec.workdir));
    line(format!("  cpus     {}", spec.cpus));
    line(format!("  memory   {} MiB", spec.memory_mib));
    line(format!("  machine  {}", plan.slug));
    line(String::new());
    line("guest environment".into());
    for (key, value) in &guest_env {
        line(format!("  {key}={value}"));
    }
    for secret in &spec.secrets {
        line(format!(
            "  {secret}  (secret: the host's ${secret}, read at run time, never stored)"
        ));
    }
    line(String::new());
    line("the guest can reach".into());
    for sidecar in &plan.sidecars {
        let what = match sidecar.kind {
            SidecarKind::Egress => "egress proxy".to_owned(),
            SidecarKind::Git => "git gateway".to_owned(),
            SidecarKind::Supervise => "supervisor".to_owned(),
            SidecarKind::Custom => format!("sidecar {}", sidecar.name),
        };
        line(format!(
            "  {what:<13} {:<32} host 127.0.0.1:{} (preferred)",
            sidecar.guest_url, sidecar.host_port
        ));
        match sidecar.kind {
            SidecarKind::Egress if spec.egress.allow.is_empty() => {
                line("    no hosts: every request through the proxy is refused".into())
            }
            SidecarKind::Egress => {
                if spec.egress.engine == EgressEngine::Pipelock {
                    line(format!(
                        "    enforced by pipelock {}, which cannot restrict ports: every listed host on every port",
                        crate::render::pipelock::PIPELOCK_VERSION
                    ));
                }
                for pattern in &spec.egress.allow {
                    let ports = if pattern.port.is_some() {
                        ""
                    } else {
                        " (ports 443 and 80)"
                    };
                    line(format!("    {pattern}{ports}"));
                }
            }
            SidecarKind::Git => {
                line("    a mirror of the workspace repository; pushes stay in the mirror".into())
            }
            SidecarKind::Supervise | SidecarKind::Custom => {}
        }
        if let Some(command) = &sidecar.command {
            line(format!("    runs on the host: {}", shell_words(command)));
        }
        if let Some(env) = &sidecar.url_env {
            line(format!("    the guest finds it in ${env}"));
        }
    }
    line(String::new());
    line("the guest cannot reach".into());
    for what in UNREACHABLE {
        line(format!("  {what}"));
    }
    line(String::new());
    line(format!(
        "network  {}  guest {} ({})  gateway {}  {} -> {}",
        plan.network.subnet,
        plan.network.guest.ip,
        plan.network.guest.mac,
        plan.network.gateway.ip,
        plan.network.proxy_name,
        plan.network.proxy_ip
    ));
    out
}
