//! The launch plan: every process a run starts, with its full command line, and every file it
//! creates, computed from the stage and the host without touching either. `--dry-run` prints
//! it, the tests read it, and the executor (`session`) carries it out. Host ports are the one
//! thing left open: they depend on what is free when the run starts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::guard::{GuardConfig, GuardRelay};
use super::gvproxy::{self, GuestNetwork, Mode, RuntimePaths};
use super::rundir::Layout;
use super::smolvm;
use crate::render::gvproxy::Zone;
use crate::render::{GVPROXY_YAML, PIPELOCK_YAML, SMOLFILE};
use crate::spec::resolved::EgressEngine;
use crate::spec::resolved::PORT_PLACEHOLDER;
use crate::stage::alloc::SidecarKind;
use crate::stage::Stage;

/// The hidden subcommand that runs the guard.
pub const GUARD_SUBCOMMAND: &str = "__guard";

pub struct Inputs<'a> {
    pub stage: &'a Stage,
    pub stage_dir: &'a Path,
    pub layout: &'a Layout,
    /// This program, which also runs the guard.
    pub bottle: &'a Path,
    pub smolvm: &'a Path,
    pub gvproxy: &'a Path,
    pub mode: Mode,
    pub workspace: &'a Path,
    /// Commands given on the command line for sidecars (by name), over the stage's own and the
    /// built-in ones; `{port}` not yet filled in. A sidecar without any command is expected to
    /// be listening on its preferred host port already.
    pub sidecar_commands: &'a BTreeMap<String, Vec<String>>,
    /// The store, absolute: the built-in egress proxy reads the stage from it.
    pub store: &'a Path,
    pub runner_pid: u32,
    pub terminal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchPlan {
    pub id: String,
    pub slug: String,
    pub run_dir: PathBuf,
    pub mode: Mode,
    pub network: GuestNetwork,
    /// Added through the API in legacy mode; in config mode they are in the stage's file.
    pub zones: Vec<Zone>,
    pub sidecars: Vec<SidecarLaunch>,
    pub guard_config: PathBuf,
    pub guard: GuardConfig,
    pub guard_command: Vec<String>,
    pub smolvm: PathBuf,
    pub smolvm_commands: smolvm::Commands,
    pub files: Vec<PlannedFile>,
    /// The git gateway's mirror to make before the sidecars start, when bottle runs the gateway.
    pub git_mirror: Option<GitMirror>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitMirror {
    pub workspace: PathBuf,
    pub base: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SidecarLaunch {
    pub name: String,
    pub kind: SidecarKind,
    pub guest_port: u16,
    pub preferred_port: u16,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// With `{port}` still in it.
    pub command: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedFile {
    pub path: PathBuf,
    pub what: &'static str,
}

pub fn plan(inputs: &Inputs<'_>) -> LaunchPlan {
    let layout = inputs.layout;
    let stage = inputs.stage;
    let network = gvproxy::guest_network(&stage.plan, inputs.mode);
    let sidecars: Vec<SidecarLaunch> = stage
        .plan
        .sidecars
        .iter()
        .map(|s| SidecarLaunch {
            name: s.name.clone(),
            kind: s.kind,
            guest_port: s.guest_port,
            preferred_port: s.host_port,
            socket: layout.bridge_socket(&s.name),
            log: layout.log(&s.name),
            command: inputs
                .sidecar_commands
                .get(&s.name)
                .or(s.command.as_ref())
                .cloned()
                .or_else(|| builtin_command(s.kind, inputs, layout)),
        })
        .collect();
    let paths = RuntimePaths {
        vm_socket: &layout.vm_socket(),
        api_socket: &layout.api_socket(),
        pid_file: &layout.gvproxy_pid(),
    };
    let mut gvproxy_command = vec![inputs.gvproxy.display().to_string()];
    gvproxy_command.extend(gvproxy::args(
        inputs.mode,
        &inputs.stage_dir.join(GVPROXY_YAML),
        &paths,
    ));
    let guard = GuardConfig {
        parent: inputs.runner_pid,
        relays: sidecars
            .iter()
            .map(|s| GuardRelay {
                port: s.guest_port,
                socket: s.socket.clone(),
            })
            .collect(),
        writable: layout.gvproxy_dir(),
        gvproxy_log: layout.log("gvproxy"),
        gvproxy: gvproxy_command,
    };
    let guard_command = vec![
        inputs.bottle.display().to_string(),
        GUARD_SUBCOMMAND.to_owned(),
        "--config".to_owned(),
        layout.guard_config().display().to_string(),
    ];
    let smolfile = inputs.stage_dir.join(SMOLFILE);
    let vm_socket = layout.vm_socket();
    let smolvm_commands = smolvm::commands(&smolvm::Machine {
        name: &stage.plan.slug,
        smolfile: &smolfile,
        vm_socket: &vm_socket,
        network: &network,
        workspace: inputs.workspace,
        workdir: &stage.spec.workdir,
        command: &stage.spec.command,
        terminal: inputs.terminal,
    });
    let mut files = vec![
        PlannedFile {
            path: layout.root.clone(),
            what: "the run directory (mode 0700)",
        },
        PlannedFile {
            path: layout.lock(),
            what: "the lock: one run of this stage at a time",
        },
        PlannedFile {
            path: layout.record(),
            what: "the run record: pids, ports, state, outcome",
        },
        PlannedFile {
            path: layout.guard_config(),
            what: "the guard's configuration",
        },
        PlannedFile {
            path: layout.vm_socket(),
            what: "gvproxy's VM socket (smolvm's NIC attaches here)",
        },
        PlannedFile {
            path: layout.gvproxy_pid(),
            what: "gvproxy's pid file",
        },
    ];
    if inputs.mode == Mode::Legacy {
        files.push(PlannedFile {
            path: layout.api_socket(),
            what: "gvproxy's API socket (DNS zones are added here)",
        });
    }
    for s in &sidecars {
        files.push(PlannedFile {
            path: s.socket.clone(),
            what: "a bridge to a sidecar's host port",
        });
    }
    for component in ["guard", "gvproxy", "smolvm"] {
        files.push(PlannedFile {
            path: layout.log(component),
            what: "a log",
        });
    }
    for s in sidecars.iter().filter(|s| s.command.is_some()) {
        files.push(PlannedFile {
            path: s.log.clone(),
            what: "a sidecar's log",
        });
    }
    let git_mirror = plan_git_mirror(&sidecars, inputs, layout);
    if let Some(mirror) = &git_mirror {
        files.push(PlannedFile {
            path: mirror.base.clone(),
            what: "the git gateway's bare mirror of the workspace (pushes land here)",
        });
    }
    LaunchPlan {
        git_mirror,
        id: stage.id.to_string(),
        slug: stage.plan.slug.clone(),
        run_dir: layout.root.clone(),
        mode: inputs.mode,
        network,
        zones: if inputs.mode == Mode::Legacy {
            gvproxy::legacy_zones()
        } else {
            Vec::new()
        },
        sidecars,
        guard_config: layout.guard_config(),
        guard,
        guard_command,
        smolvm: inputs.smolvm.to_owned(),
        smolvm_commands,
        files,
    }
}

/// The command of a built-in sidecar that bottle itself provides: the egress proxy
/// (`bottle proxy`, its audit log next to the other logs) and the git gateway (`git daemon` on
/// the run's mirror).
fn builtin_command(kind: SidecarKind, inputs: &Inputs<'_>, layout: &Layout) -> Option<Vec<String>> {
    match kind {
        SidecarKind::Egress if inputs.stage.spec.egress.engine == EgressEngine::Pipelock => {
            Some(vec![
                "pipelock".to_owned(),
                "run".to_owned(),
                "-c".to_owned(),
                inputs.stage_dir.join(PIPELOCK_YAML).display().to_string(),
                "-l".to_owned(),
                format!("127.0.0.1:{PORT_PLACEHOLDER}"),
            ])
        }
        SidecarKind::Egress => Some(vec![
            inputs.bottle.display().to_string(),
            "proxy".to_owned(),
            inputs.stage.id.to_string(),
            "--store".to_owned(),
            inputs.store.display().to_string(),
            "--listen".to_owned(),
            format!("127.0.0.1:{PORT_PLACEHOLDER}"),
            "--log".to_owned(),
            layout.egress_audit_log().display().to_string(),
        ]),
        SidecarKind::Git => Some(crate::sidecar::git::daemon_args(&layout.git_mirror_base())),
        _ => None,
    }
}

/// bottle makes the mirror only for a git sidecar it runs itself, not for one given on the
/// command line.
fn plan_git_mirror(
    sidecars: &[SidecarLaunch],
    inputs: &Inputs<'_>,
    layout: &Layout,
) -> Option<GitMirror> {
    let git = sidecars.iter().find(|s| s.kind == SidecarKind::Git)?;
    if inputs.sidecar_commands.contains_key(&git.name) {
        return None;
    }
    Some(GitMirror {
        workspace: inputs.workspace.to_owned(),
        base: layout.git_mirror_base(),
    })
}

/// A sidecar command with its host port filled in.
pub fn fill_port(command: &[String], port: u16) -> Vec<String> {
    command
        .iter()
        .map(|arg| arg.replace(PORT_PLACEHOLDER, &port.to_string()))
        .collect()
}

fn shell_line(words: &[String]) -> String {
    crate::stage::diff::shell_words(words)
}

/// The dry run's text: every process and file, in the order they are started and created.
pub fn render(plan: &LaunchPlan) -> String {
    let mut out = String::new();
    let smolvm = |args: &[String]| {
        let mut line = vec![plan.smolvm.display().to_string()];
        line.extend(args.iter().cloned());
        shell_line(&line)
    };
    let _ = writeln!(out, "stage {}  machine {}", plan.id, plan.slug);
    if plan.mode == Mode::Legacy {
        let _ = writeln!(out, "{}", legacy_notice(&plan.network));
    }
    let _ = writeln!(out, "\nprocesses, in start order:");
    let mut n = 0;
    let mut step = |out: &mut String, what: String, line: String| {
        n += 1;
        let _ = writeln!(out, "  {n}. {what}\n     {line}");
    };
    step(
        &mut out,
        "the guard: new user + network + mount namespace, loopback only, read-only except gvproxy's directory".into(),
        shell_line(&plan.guard_command),
    );
    for relay in &plan.guard.relays {
        let _ = writeln!(
            out,
            "     relay 127.0.0.1:{} -> {}",
            relay.port,
            relay.socket.display()
        );
    }
    step(
        &mut out,
        "gvproxy, inside the guard".into(),
        shell_line(&plan.guard.gvproxy),
    );
    for zone in &plan.zones {
        let _ = writeln!(
            out,
            "     DNS zone {:?}: {}",
            zone.name,
            if zone.records.is_empty() {
                "every other name gets NXDOMAIN".to_owned()
            } else {
                zone.records
                    .iter()
                    .map(|r| format!("{}.{} -> {}", r.name, zone.name, r.ip))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    let c = &plan.smolvm_commands;
    step(
        &mut out,
        "smolvm: remove a machine a crashed run left (only after a crash)".into(),
        smolvm(&c.clear),
    );
    step(
        &mut out,
        "smolvm: create the machine, while gvproxy starts".into(),
        smolvm(&c.create),
    );
    for s in &plan.sidecars {
        match &s.command {
            Some(command) => step(
                &mut out,
                format!(
                    "sidecar {} on 127.0.0.1:{{port}} (preferred {}, another free one if taken), with a bridge; bottle waits until it listens",
                    s.name,
                    s.preferred_port
                ),
                shell_line(command),
            ),
            None => {
                let _ = writeln!(
                    out,
                    "     (sidecar {}: not started by bottle; expected listening on 127.0.0.1:{})",
                    s.name,
                    s.preferred_port
                );
            }
        }
    }
    step(
        &mut out,
        "smolvm: start it, once gvproxy's VM socket exists".into(),
        smolvm(&c.start),
    );
    step(
        &mut out,
        "smolvm: the stage's command, in the foreground".into(),
        smolvm(&c.exec),
    );
    let _ = writeln!(
        out,
        "\nat the end: {} ; {} ; stop the guard (and gvproxy), the sidecars, the bridges",
        smolvm(&c.stop),
        smolvm(&c.delete)
    );
    let _ = writeln!(out, "\nfiles:");
    for file in &plan.files {
        let _ = writeln!(out, "  {}  ({})", file.path.display(), file.what);
    }
    out
}

pub fn legacy_notice(network: &GuestNetwork) -> String {
    format!(
        "notice: gvproxy before {} has a fixed network: the guest gets {}/{} (gateway {}, proxy {}), not the stage's subnet",
        gvproxy::CONFIG_MODE_SINCE,
        network.address,
        network.prefix,
        network.gateway,
        network.proxy_ip
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Manifest;
    use crate::stage::build;

    fn stage() -> Stage {
        let manifest = Manifest::parse(
            "t.toml",
            "[agents.a]\nbottle = \"b\"\ncommand = [\"sh\"]\nsecrets = [\"KEY\"]\n\n[bottles.b]\nimage = \"alpine\"\ngit = true\n",
        )
        .unwrap();
        build(&manifest.resolve(None).unwrap())
    }

    fn plan_for(stage: &Stage, mode: Mode) -> LaunchPlan {
        let layout = Layout::new(Path::new("/run/user/1000/bottle"), &stage.id);
        let commands = BTreeMap::from([(
            "git".to_owned(),
            vec!["proxy".to_owned(), "--port".to_owned(), "{port}".to_owned()],
        )]);
        plan(&Inputs {
            stage,
            stage_dir: Path::new("/store/stage"),
            layout: &layout,
            bottle: Path::new("/bin/bottle"),
            smolvm: Path::new("/bin/smolvm"),
            gvproxy: Path::new("/bin/gvproxy"),
            mode,
            workspace: Path::new("/home/me/project"),
            sidecar_commands: &commands,
            store: Path::new("/store"),
            runner_pid: 4242,
            terminal: false,
        })
    }

    #[test]
    fn legacy_mode_uses_gvproxys_fixed_network_and_adds_the_zones() {
        let stage = stage();
        let plan = plan_for(&stage, Mode::Legacy);
        assert_eq!(plan.network.address.to_string(), "192.168.127.2");
        assert_eq!(plan.network.proxy_ip.to_string(), "192.168.127.254");
        assert_eq!(plan.network.mac, stage.plan.network.guest.mac);
        assert_eq!(plan.zones.len(), 2);
        assert!(plan.guard.gvproxy.contains(&"-ssh-port".to_owned()));
        assert!(!plan.guard.gvproxy.contains(&"-config".to_owned()));
        let create = plan.smolvm_commands.create.join(" ");
        assert!(
            create.contains("--net-address 192.168.127.2/24"),
            "{create}"
        );
        assert!(render(&plan).contains("not the stage's subnet"));
    }

    #[test]
    fn config_mode_uses_the_stages_network_and_file() {
        let stage = stage();
        let plan = plan_for(&stage, Mode::Config);
        assert_eq!(plan.network.address, stage.plan.network.guest.ip);
        assert_eq!(plan.network.gateway, stage.plan.network.gateway.ip);
        assert!(plan.zones.is_empty());
        assert_eq!(
            plan.guard.gvproxy[1..3],
            ["-config", "/store/stage/gvproxy.yaml"]
        );
        let create = plan.smolvm_commands.create.join(" ");
        assert!(
            create.contains(&format!("--net-address {}/24", stage.plan.network.guest.ip)),
            "{create}"
        );
    }

    #[test]
    fn every_sidecar_gets_a_relay_and_a_bridge_and_secrets_stay_off_command_lines() {
        let stage = stage();
        let plan = plan_for(&stage, Mode::Legacy);
        let ports: Vec<u16> = plan.guard.relays.iter().map(|r| r.port).collect();
        assert_eq!(ports, [3128, 9418]);
        assert_eq!(plan.guard.parent, 4242);
        assert_eq!(plan.guard.writable, plan.run_dir.join("gv"));
        // Egress: the built-in proxy on the stage; git: the command given by name.
        let egress = fill_port(plan.sidecars[0].command.as_ref().unwrap(), 20001);
        assert_eq!(egress[..3], ["/bin/bottle", "proxy", &stage.id.to_string()]);
        assert!(egress
            .windows(2)
            .any(|w| w == ["--listen", "127.0.0.1:20001"]));
        assert_eq!(
            fill_port(plan.sidecars[1].command.as_ref().unwrap(), 20002),
            ["proxy", "--port", "20002"]
        );
        let everything = serde_json::to_string(&plan).unwrap();
        assert!(
            !everything.contains("KEY"),
            "a secret's name or value in the plan"
        );
    }
}
