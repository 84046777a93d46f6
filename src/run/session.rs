//! The executor: carries out a launch plan (sidecars, bridges, the guard with gvproxy, smolvm),
//! waits for the first event that ends the run, and always tears down in order: the machine,
//! gvproxy and the guard, the sidecars, the bridges. Decisions come from `launch`; this module
//! only acts and records what happened in `run.json`.

use crate::sidecar::git;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fs_err as fs;
use nix::sys::signal::Signal;

use super::launch::{self, LaunchPlan};
use super::record::{self, Component, Outcome, RunRecord, SidecarRecord, State};
use super::relay::Bridge;
use super::rundir::RunDir;
use super::{gvproxy, ports, procs, signals};
use crate::error::Exit;

/// How long gvproxy may take to bind its VM socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(2);

/// A component that ended the run while it was being set up, with its log.
#[derive(Debug, thiserror::Error)]
#[error("{what}\n--- last lines of `{log}` ---\n{tail}")]
pub struct ComponentFailed {
    pub what: String,
    pub log: String,
    pub tail: String,
}

/// A stop request (Ctrl-C, SIGTERM, SIGHUP) that arrived before the guest started.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {0} before the guest started")]
pub struct Interrupted(pub Signal);

struct Running {
    sidecars: Vec<(String, Child)>,
    bridges: Vec<Bridge>,
    guard: Option<Child>,
    machine_created: bool,
    machine_started: bool,
    exec: Option<Child>,
    mirror: Option<git::Mirror>,
}

pub struct Session<'a> {
    pub plan: &'a LaunchPlan,
    pub run_dir: RunDir,
    pub record: RunRecord,
    /// Host variables that only smolvm may see.
    pub secrets: &'a [String],
    pub started: Instant,
    /// Messages for the person running bottle.
    pub note: &'a dyn Fn(&str),
}

impl Session<'_> {
    fn save(&self) -> anyhow::Result<()> {
        self.record.write(&self.run_dir.layout.record())
    }

    /// Runs to the end and returns what `bottle run` exits with. Setup failures are errors;
    /// everything started before the failure is torn down first either way.
    pub fn run(mut self) -> anyhow::Result<Exit> {
        let mut running = Running {
            sidecars: Vec::new(),
            bridges: Vec::new(),
            guard: None,
            machine_created: false,
            machine_started: false,
            exec: None,
            mirror: None,
        };
        let result = self
            .start(&mut running)
            .and_then(|()| self.wait(&mut running));
        let teardown_started = Instant::now();
        self.record.state = State::Stopping;
        let _ = self.save();
        self.teardown(&mut running);
        self.record.timings.teardown_ms = Some(teardown_started.elapsed().as_secs_f64() * 1e3);
        if let Some(mirror) = &running.mirror {
            self.report_pushes(mirror);
        }
        // A stop request during setup is not a failure of bottle's: it exits like the shell
        // would for that signal.
        let result = match result {
            Err(err) => match err.downcast_ref::<Interrupted>() {
                Some(Interrupted(signal)) => {
                    Ok((Exit::Guest(128 + *signal as i32 as u8), err.to_string()))
                }
                None => Err(err),
            },
            ok => ok,
        };
        let (exit, reason) = match &result {
            Ok((exit, reason)) => (*exit, reason.clone()),
            Err(err) => (Exit::RunFailed, format!("{err:#}")),
        };
        self.record.state = State::Ended;
        self.record.outcome = Some(Outcome {
            exit_code: i32::from(exit.code()),
            reason,
            ended_at_ms: record::now_ms(),
        });
        self.save()?;
        result.map(|(exit, _)| exit)
    }

    fn start(&mut self, running: &mut Running) -> anyhow::Result<()> {
        let plan = self.plan;
        let layout = self.run_dir.layout.clone();
        self.record.state = State::Starting;
        // The guard first: gvproxy's start-up is the longest step, and everything below
        // happens while it runs. It needs only the bridges' paths, not the bridges.
        fs::write(&plan.guard_config, serde_json::to_vec_pretty(&plan.guard)?)?;
        let guard_log = fs::File::create(layout.log("guard"))?.into_parts().0;
        let mut cmd = Command::new(&plan.guard_command[0]);
        cmd.args(&plan.guard_command[1..])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(guard_log.try_clone()?)
            .stderr(guard_log)
            .process_group(0);
        procs::die_with_parent(&mut cmd);
        let guard = cmd.spawn().context("failed to start the guard")?;
        self.note_component("guard", guard.id());
        running.guard = Some(guard);
        // The machine is created while gvproxy starts: `create` only records the machine, and
        // the NIC attaches to the socket at `start`. Teardown deletes it whatever happens next.
        let commands = &plan.smolvm_commands;
        if self.run_dir.cleared.is_some() {
            let _ = self.smolvm(&commands.clear);
        }
        let create = self.spawn_smolvm(&commands.create)?;
        running.machine_created = true;
        let sidecars = self
            .make_git_mirror(running)
            .and_then(|()| self.start_sidecars(running))
            .and_then(|()| self.save());
        let own_work = self.started.elapsed();
        let waited = Instant::now();
        let socket = sidecars.and_then(|()| self.wait_for_socket(running));
        // Reaped whatever happened, so that teardown's delete never races the create.
        let created = self.finish_smolvm(&commands.create, create);
        socket?;
        self.record.timings.gvproxy_wait_ms = Some(waited.elapsed().as_secs_f64() * 1e3);
        created.context("smolvm could not create the machine")?;
        if let Some(pid) = fs::read_to_string(layout.gvproxy_pid())
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            self.note_component("gvproxy", pid);
        }
        let sidecars_waited = Instant::now();
        self.wait_for_sidecars(running)?;
        let sidecar_wait = sidecars_waited.elapsed();
        self.record.timings.sidecar_wait_ms = Some(sidecar_wait.as_secs_f64() * 1e3);
        let after_wait = Instant::now();
        if plan.mode == gvproxy::Mode::Legacy {
            gvproxy::add_zones(&layout.api_socket(), &plan.zones)
                .context("failed to add the stage's DNS zones to gvproxy")?;
        }
        running.machine_started = true;
        let starting = Instant::now();
        self.smolvm(&commands.start)
            .context("smolvm could not start the machine")?;
        let smolvm_start = starting.elapsed();
        self.record.timings.smolvm_start_ms = Some(smolvm_start.as_secs_f64() * 1e3);
        let mut exec = Command::new(&plan.smolvm);
        exec.args(&commands.exec);
        procs::die_with_parent(&mut exec);
        self.record.timings.bottle_ms =
            Some((own_work + after_wait.elapsed() - smolvm_start).as_secs_f64() * 1e3);
        let exec = exec
            .spawn()
            .with_context(|| format!("failed to run `{}`", plan.smolvm.display()))?;
        self.note_component("smolvm", exec.id());
        running.exec = Some(exec);
        self.record.state = State::Running;
        self.save()?;
        Ok(())
    }

    /// The git gateway's mirror, made before its daemon starts.
    fn make_git_mirror(&mut self, running: &mut Running) -> anyhow::Result<()> {
        if let Some(planned) = &self.plan.git_mirror {
            // A previous run's mirror may hold pushes the user has not fetched: keep it aside.
            if planned.base.exists() {
                let aside = (1..)
                    .map(|n| planned.base.with_file_name(format!("git.{n}")))
                    .find(|p| !p.exists())
                    .expect("some numbered name is free");
                fs::rename(&planned.base, &aside)?;
                (self.note)(&format!(
                    "the previous run's git mirror is kept at {}",
                    aside.display()
                ));
            }
            running.mirror = Some(git::create_mirror(&planned.workspace, &planned.base)?);
        }
        Ok(())
    }

    /// Tells the user what the agent pushed to the gateway and how to fetch it; their own
    /// repository has not been touched.
    fn report_pushes(&self, mirror: &git::Mirror) {
        let changes = match git::refs(&mirror.repo) {
            Ok(after) => git::changes(&mirror.initial, &after),
            Err(err) => {
                (self.note)(&format!(
                    "warning: could not read the git gateway's refs: {err:#}"
                ));
                return;
            }
        };
        if changes.is_empty() {
            (self.note)("git gateway: the agent pushed nothing");
            return;
        }
        (self.note)("git gateway: the agent pushed (your repository is unchanged):");
        for change in &changes {
            let line = match change {
                git::RefChange::Created { name, to } => {
                    format!("  new     {name} {}", &to[..12.min(to.len())])
                }
                git::RefChange::Moved { name, to, .. } => {
                    format!("  moved   {name} {}", &to[..12.min(to.len())])
                }
                git::RefChange::Deleted { name, .. } => {
                    format!("  deleted {name} (in the mirror only)")
                }
            };
            (self.note)(&line);
        }
        if let Some(command) = git::fetch_command(
            &self
                .plan
                .git_mirror
                .as_ref()
                .map_or(mirror.repo.clone(), |m| m.workspace.clone()),
            &mirror.repo,
            &changes,
        ) {
            (self.note)(&format!("to review them in your repository:\n  {command}"));
        }
    }

    /// Chooses each sidecar's host port, starts the sidecars bottle runs and a bridge for each.
    fn start_sidecars(&mut self, running: &mut Running) -> anyhow::Result<()> {
        let plan = self.plan;
        let mut taken = Vec::new();
        for sidecar in &plan.sidecars {
            let host_port = match &sidecar.command {
                Some(_) => ports::choose(sidecar.preferred_port, &taken, ports::is_free)
                    .context("no free host port for a sidecar in 20000-32767")?,
                None => {
                    if ports::is_free(sidecar.preferred_port) {
                        (self.note)(&format!(
                            "warning: nothing listens on 127.0.0.1:{} for the {} sidecar, which bottle does not start yet; the guest's connections to it will be closed",
                            sidecar.preferred_port,
                            sidecar.name
                        ));
                    }
                    sidecar.preferred_port
                }
            };
            taken.push(host_port);
            if let Some(command) = &sidecar.command {
                let argv = launch::fill_port(command, host_port);
                let log = fs::File::create(&sidecar.log)?.into_parts().0;
                let mut cmd = Command::new(&argv[0]);
                cmd.args(&argv[1..])
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .process_group(0);
                for secret in self.secrets {
                    cmd.env_remove(secret);
                }
                procs::die_with_parent(&mut cmd);
                let child = cmd.spawn().with_context(|| {
                    format!("failed to start the {} sidecar `{}`", sidecar.name, argv[0])
                })?;
                self.note_component(&sidecar.name, child.id());
                running.sidecars.push((sidecar.name.clone(), child));
            }
            running
                .bridges
                .push(Bridge::start(&sidecar.socket, host_port)?);
            self.record.sidecars.push(SidecarRecord {
                name: sidecar.name.clone(),
                kind: sidecar.kind,
                guest_port: sidecar.guest_port,
                preferred_port: sidecar.preferred_port,
                host_port,
                socket: sidecar.socket.display().to_string(),
            });
        }
        Ok(())
    }

    fn note_component(&mut self, name: &str, pid: u32) {
        if let Some(process) = procs::ProcessId::of(pid) {
            self.record.components.push(Component {
                name: name.to_owned(),
                process,
            });
        }
    }

    /// A short smolvm command with its output in smolvm's log.
    fn smolvm(&self, args: &[String]) -> anyhow::Result<()> {
        let child = self.spawn_smolvm(args)?;
        self.finish_smolvm(args, child)
    }

    fn spawn_smolvm(&self, args: &[String]) -> anyhow::Result<Child> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run_dir.layout.log("smolvm"))?
            .into_parts()
            .0;
        let mut command = Command::new(&self.plan.smolvm);
        procs::clean_signal_mask(&mut command);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to run `{}`", self.plan.smolvm.display()))
    }

    fn finish_smolvm(&self, args: &[String], mut child: Child) -> anyhow::Result<()> {
        let status = child.wait()?;
        if !status.success() {
            let log = self.run_dir.layout.log("smolvm");
            return Err(ComponentFailed {
                what: format!("`smolvm {}` failed: {status}", args.join(" ")),
                log: log.display().to_string(),
                tail: tail(&log, 20),
            }
            .into());
        }
        Ok(())
    }

    /// Waits for gvproxy's VM socket, woken by any signal: a dead guard or a Ctrl-C ends the
    /// wait at once, and otherwise it checks every millisecond.
    fn wait_for_socket(&self, running: &mut Running) -> anyhow::Result<()> {
        let socket = self.run_dir.layout.vm_socket();
        let deadline = Instant::now() + SOCKET_TIMEOUT;
        loop {
            if is_socket(&socket) {
                return Ok(());
            }
            let guard = running.guard.as_mut().expect("the guard was started");
            if let Some(status) = guard.try_wait()? {
                let layout = &self.run_dir.layout;
                let (log, tail) = if status.code() == Some(super::guard::CONTAINMENT_FAILED) {
                    (layout.log("guard"), tail(&layout.log("guard"), 20))
                } else {
                    (layout.log("gvproxy"), tail(&layout.log("gvproxy"), 20))
                };
                return Err(ComponentFailed {
                    what: format!(
                        "gvproxy exited before its VM socket `{}` appeared (guard: {status})",
                        socket.display()
                    ),
                    log: log.display().to_string(),
                    tail,
                }
                .into());
            }
            if Instant::now() >= deadline {
                bail!(
                    "gvproxy did not create its VM socket `{}` within {} s; see `{}`",
                    socket.display(),
                    SOCKET_TIMEOUT.as_secs(),
                    self.run_dir.layout.log("gvproxy").display()
                );
            }
            match signals::next(Some(Duration::from_millis(1))) {
                Some(Signal::SIGCHLD) | None => {}
                Some(signal) => return Err(Interrupted(signal).into()),
            }
        }
    }

    /// Waits until every sidecar bottle started listens on its host port (by then gvproxy is
    /// up, so this is rarely a wait at all). A sidecar that exits first fails the run.
    fn wait_for_sidecars(&self, running: &mut Running) -> anyhow::Result<()> {
        let deadline = Instant::now() + SOCKET_TIMEOUT;
        for (name, child) in &mut running.sidecars {
            let port = self
                .record
                .sidecars
                .iter()
                .find(|s| s.name == *name)
                .map(|s| s.host_port)
                .expect("every started sidecar is recorded");
            while !ports::is_listening(port) {
                let log = self.run_dir.layout.log(name);
                if let Some(status) = child.try_wait()? {
                    return Err(ComponentFailed {
                        what: format!("the {name} sidecar exited before it listened on 127.0.0.1:{port} ({status})"),
                        log: log.display().to_string(),
                        tail: tail(&log, 20),
                    }
                    .into());
                }
                if Instant::now() >= deadline {
                    bail!(
                        "the {name} sidecar did not listen on 127.0.0.1:{port} within {} s; see `{}`",
                        SOCKET_TIMEOUT.as_secs(),
                        log.display()
                    );
                }
                match signals::next(Some(Duration::from_millis(1))) {
                    Some(Signal::SIGCHLD) | None => {}
                    Some(signal) => return Err(Interrupted(signal).into()),
                }
            }
        }
        Ok(())
    }

    /// The main loop: the first of the guest's end, a signal, or a component's death.
    fn wait(&mut self, running: &mut Running) -> anyhow::Result<(Exit, String)> {
        loop {
            match signals::next(None) {
                Some(Signal::SIGCHLD) | None => {}
                Some(signal) => {
                    return Ok((
                        Exit::Guest(128 + signal as i32 as u8),
                        format!("stopped by {signal}"),
                    ))
                }
            }
            if let Some(status) = running
                .exec
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                running.exec = None;
                let code = procs::shell_code(status);
                return Ok((
                    Exit::Guest(code.clamp(0, 255) as u8),
                    format!("the guest's command exited with {code}"),
                ));
            }
            if let Some(status) = running
                .guard
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                running.guard = None;
                return Err(ComponentFailed {
                    what: format!("gvproxy or its guard stopped while the guest ran ({status})"),
                    log: self.run_dir.layout.log("gvproxy").display().to_string(),
                    tail: tail(&self.run_dir.layout.log("gvproxy"), 20),
                }
                .into());
            }
            for (name, child) in &mut running.sidecars {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = self.run_dir.layout.log(name);
                    return Err(ComponentFailed {
                        what: format!("the {name} sidecar stopped while the guest ran ({status})"),
                        log: log.display().to_string(),
                        tail: tail(&log, 20),
                    }
                    .into());
                }
            }
        }
    }

    fn teardown(&mut self, running: &mut Running) {
        let commands = &self.plan.smolvm_commands;
        if running.machine_started {
            let _ = self.smolvm(&commands.stop);
        }
        if let Some(mut exec) = running.exec.take() {
            let _ = procs::stop_child(&mut exec, GRACE);
        }
        if running.machine_created {
            let _ = self.smolvm(&commands.delete);
        }
        if let Some(mut guard) = running.guard.take() {
            let _ = procs::stop_child(&mut guard, GRACE);
        }
        for (_, mut child) in running.sidecars.drain(..) {
            let _ = procs::stop_group(&mut child, GRACE);
        }
        for bridge in running.bridges.drain(..) {
            bridge.remove();
        }
        let layout = &self.run_dir.layout;
        for socket in [
            layout.vm_socket(),
            layout.api_socket(),
            layout.gvproxy_pid(),
        ] {
            let _ = std::fs::remove_file(socket);
        }
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

/// The last `lines` lines of a log (at most its last 64 KiB).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at `{}`)", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
