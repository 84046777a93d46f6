//! `bottle run`, `ps`, `stop` and `logs` end to end, with real parts: Debian's gvproxy, real
//! namespaces and sockets, and the stand-in smolvm of `testkit` (the real smolvm cannot be
//! installed here) which becomes a smoltcp guest on gvproxy's VM socket and probes what it can
//! reach. Each run's host side is inside a network namespace the test creates, with only
//! loopback and 198.18.0.1/24 on a veth pair as default route: even a broken containment could
//! not send a packet off this machine. Needs gvproxy, `unshare` and `ip` (iproute2).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bottle::run::procs::ProcessId;
use serde_json::{json, Value};

const MANIFEST: &str = r#"
[agents.probe]
bottle = "b"
command = ["/probe", "--all"]
secrets = ["BOTTLE_TEST_SECRET_KEY"]

[bottles.b]
image = "docker.io/library/alpine:3.20"
git = true
supervise = { command = ["testhost", "serve", "--addr", "127.0.0.1:{port}", "--banner", "supervise"] }
"#;

const SECRET_VALUE: &str = "s3cr3t-value-never-on-a-command-line";

fn bottle_exe() -> &'static str {
    env!("CARGO_BIN_EXE_bottle")
}

/// The testkit binaries, built by `cargo test --workspace` into the same directory as bottle.
fn testkit_bin(name: &str) -> PathBuf {
    let path = Path::new(bottle_exe()).parent().unwrap().join(name);
    assert!(
        path.is_file(),
        "`{}` is missing: run `cargo test --workspace` (or `cargo build -p bottle-testkit`)",
        path.display()
    );
    path
}

struct RunEnv {
    _dir: tempfile::TempDir,
    root: PathBuf,
    id: String,
    /// Leave the egress sidecar to bottle (its built-in proxy) instead of a test server.
    builtin_egress: bool,
    /// Leave the git sidecar to bottle (git daemon on a mirror of the workspace).
    builtin_git: bool,
}

impl RunEnv {
    fn new() -> RunEnv {
        // Short paths: unix sockets live under the run directory.
        let dir = tempfile::Builder::new()
            .prefix("bt")
            .tempdir_in("/tmp")
            .unwrap();
        let root = dir.path().to_owned();
        for sub in ["bin", "ws", "xdg", "smolvm"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        std::fs::set_permissions(root.join("xdg"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(testkit_bin("fake-smolvm"), root.join("bin/smolvm")).unwrap();
        std::os::unix::fs::symlink(testkit_bin("testhost"), root.join("bin/testhost")).unwrap();
        std::fs::write(root.join("bottle.toml"), MANIFEST).unwrap();
        std::fs::write(root.join("owned.txt"), "the test's own file\n").unwrap();
        let out = Command::new(bottle_exe())
            .args(["gen", "bottle.toml", "--store", "st"])
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        RunEnv {
            _dir: dir,
            root,
            id,
            builtin_egress: false,
            builtin_git: false,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn run_dir(&self) -> PathBuf {
        self.path("xdg/bottle").join(&self.id)
    }

    fn record(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.run_dir().join("run.json")).unwrap()).unwrap()
    }

    fn preferred_port(&self, sidecar: &str) -> u16 {
        let out = self.bottle(
            &["show", &self.id, "--store", "st", "--json"],
            &self.path_var(),
        );
        let show: Value = serde_json::from_slice(&out.stdout).unwrap();
        show["plan"]["sidecars"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == sidecar)
            .unwrap()["host_port"]
            .as_u64()
            .unwrap() as u16
    }

    fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    fn write_probes(&self, name: &str, probes: Value) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, serde_json::to_vec(&probes).unwrap()).unwrap();
        path
    }

    fn command(&self, path_var: &str) -> Command {
        let mut cmd = Command::new(bottle_exe());
        cmd.current_dir(&self.root)
            .env("PATH", path_var)
            .env("XDG_RUNTIME_DIR", self.path("xdg"))
            .env("SMOLVM_DATA_DIR", self.path("smolvm"))
            .env("BOTTLE_TEST_SECRET_KEY", SECRET_VALUE)
            .stdin(Stdio::null());
        cmd
    }

    fn bottle(&self, args: &[&str], path_var: &str) -> Output {
        self.command(path_var).args(args).output().unwrap()
    }

    /// `bottle run --yes` inside a fresh network namespace whose host side has `listens`.
    fn spawn_run(&self, probes: &Path, listens: &[String], extra: &[&str]) -> Child {
        self.spawn_run_as(None, Path::new(bottle_exe()), probes, listens, extra)
    }

    /// The same, as user `uid` when given (through `setpriv`), with this `bottle`.
    fn spawn_run_as(
        &self,
        uid: Option<u32>,
        bottle: &Path,
        probes: &Path,
        listens: &[String],
        extra: &[&str],
    ) -> Child {
        let mut args: Vec<String> = vec![
            "--user".into(),
            "--map-root-user".into(),
            "--net".into(),
            "--".into(),
            self.path("bin/testhost").display().to_string(),
            "netns".into(),
            "--pid-file".into(),
            self.path("runner.pid").display().to_string(),
        ];
        for listen in listens {
            args.extend(["--listen".into(), listen.clone()]);
        }
        args.extend([
            "--".into(),
            bottle.display().to_string(),
            "run".into(),
            self.id.clone(),
        ]);
        args.extend(["--store", "st", "--yes", "--workspace", "ws"].map(String::from));
        if !self.builtin_git {
            args.extend([
                "--sidecar".into(),
                "git=testhost serve --addr 127.0.0.1:{port} --banner git".into(),
            ]);
        }
        if !self.builtin_egress {
            args.extend([
                "--sidecar".into(),
                "egress=testhost serve --addr 127.0.0.1:{port} --banner egress".into(),
            ]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut unshare = match uid {
            None => Command::new("unshare"),
            Some(uid) => {
                let mut setpriv = Command::new("setpriv");
                setpriv.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                    "unshare".into(),
                ]);
                setpriv
            }
        };
        unshare
            .args(&args)
            .current_dir(&self.root)
            .env("PATH", self.path_var())
            .env("XDG_RUNTIME_DIR", self.path("xdg"))
            .env("SMOLVM_DATA_DIR", self.path("smolvm"))
            .env("BOTTLE_TEST_SECRET_KEY", SECRET_VALUE)
            .env("FAKE_SMOLVM_PROBES", probes)
            .env("FAKE_SMOLVM_STARTED", self.path("started"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        unshare.spawn().expect("unshare (util-linux) is needed")
    }

    fn run(&self, probes: &Path, listens: &[String]) -> Output {
        self.spawn_run(probes, listens, &[])
            .wait_with_output()
            .unwrap()
    }

    fn report(&self, name: &str) -> Value {
        let path = self.path(name);
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("no probe report at {}: {e}", path.display()));
        serde_json::from_slice(&bytes).unwrap()
    }

    fn wait_for_state(&self, state: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(bytes) = std::fs::read(self.run_dir().join("run.json")) {
                if let Ok(record) = serde_json::from_slice::<Value>(&bytes) {
                    if record["state"] == state {
                        return record;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "the run never reached state {state}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn recorded_processes(record: &Value) -> Vec<(String, ProcessId)> {
    let mut all: Vec<(String, ProcessId)> = record["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                serde_json::from_value(c["process"].clone()).unwrap(),
            )
        })
        .collect();
    all.push((
        "runner".into(),
        serde_json::from_value(record["runner"].clone()).unwrap(),
    ));
    all
}

fn assert_all_gone(record: &Value) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for (name, process) in recorded_processes(record) {
        while process.is_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !process.is_alive(),
            "{name} (pid {}) is still running",
            process.pid
        );
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn full_probes(env: &RunEnv, report: &str, exit_code: i32) -> Value {
    json!({
        "report": env.path(report),
        "exit_code": exit_code,
        "must_fail_tcp": [
            {"label": "host loopback port with a listener that is no sidecar", "ip": "proxy", "port": 24000},
            {"label": "the egress sidecar's real host port", "ip": "proxy", "port": env.preferred_port("egress")},
            {"label": "host address with a listener", "ip": "198.18.0.1", "port": 24001},
            {"label": "beyond the host, through its default route", "ip": "198.19.0.1", "port": 80},
        ],
        "must_fail_names": ["example.com", "attacker.test"],
        "txt_name": "example.com",
        "expose_target": env.path("owned.txt"),
    })
}

fn decoys() -> Vec<String> {
    vec![
        "127.0.0.1:24000=DECOY".to_owned(),
        "198.18.0.1:24001=DECOY".to_owned(),
    ]
}

#[test]
fn the_guest_reaches_its_sidecars_and_nothing_else_and_its_exit_code_is_returned() {
    let env = RunEnv::new();
    let probes = env.write_probes("probes.json", full_probes(&env, "report.json", 42));
    let out = env.run(&probes, &decoys());
    assert_eq!(out.status.code(), Some(42), "{}", stderr(&out));
    let report = env.report("report.json");
    assert_eq!(report["errors"], json!([]), "{report:#}");

    // Must work.
    assert_eq!(
        report["proxy_ip"], "192.168.127.254",
        "legacy gvproxy's host address"
    );
    for (var, banner) in [
        ("HTTP_PROXY", "egress"),
        ("GIT_GATE_URL", "git"),
        ("MCP_SUPERVISE_URL", "supervise"),
    ] {
        assert_eq!(
            report["sidecars"][var],
            format!("established: {banner}:hello from {var}\n"),
            "{report:#}"
        );
    }
    assert_eq!(report["secrets_present"]["BOTTLE_TEST_SECRET_KEY"], true);

    // Must fail.
    for (label, outcome) in report["must_fail_tcp"].as_object().unwrap() {
        let outcome = outcome.as_str().unwrap();
        assert!(!outcome.starts_with("established"), "{label}: {outcome}");
    }
    assert_eq!(report["must_fail_tcp"].as_object().unwrap().len(), 4);
    for name in ["example.com", "attacker.test"] {
        let answer = report["names"][name].as_str().unwrap();
        assert!(
            answer == "no answer" || answer.contains("A []"),
            "{name}: {answer}"
        );
        assert!(!answer.starts_with("rcode 0, 1"), "{name}: {answer}");
    }
    let txt = report["txt"].as_str().unwrap();
    assert!(
        txt == "no answer" || txt.contains(", 0 records"),
        "TXT: {txt}"
    );
    let expose = report["expose"].as_str().unwrap();
    assert!(!expose.contains(" 200 OK"), "expose: {expose}");
    assert!(expose.contains("read-only file system"), "expose: {expose}");
    assert_eq!(
        std::fs::read_to_string(env.path("owned.txt")).unwrap(),
        "the test's own file\n"
    );

    // The record, the logs, and nothing left running.
    let record = env.record();
    assert_eq!(record["state"], "ended");
    assert_eq!(record["outcome"]["exit_code"], 42);
    assert_eq!(record["gvproxy_mode"], "legacy");
    assert!(
        stderr(&out).contains("not the stage's subnet"),
        "{}",
        stderr(&out)
    );
    assert_all_gone(&record);
    assert!(!env.run_dir().join("gv/vm.sock").exists());
    assert!(!env.run_dir().join("sock/egress.sock").exists());
    let calls = std::fs::read_to_string(env.path("smolvm/calls.log")).unwrap();
    let verbs: Vec<&str> = calls
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(verbs, ["create", "start", "exec", "stop", "delete"]);
    assert!(!calls.contains(SECRET_VALUE));
    let logs = env.bottle(
        &["logs", &env.id[..8], "--component", "gvproxy"],
        &env.path_var(),
    );
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("gvproxy version v0.8.1"),
        "{}",
        stderr(&logs)
    );
}

#[test]
fn a_taken_preferred_port_is_replaced_and_recorded() {
    let env = RunEnv::new();
    let preferred = env.preferred_port("egress");
    let probes = env.write_probes(
        "probes.json",
        json!({
            "report": env.path("report.json"),
            "exit_code": 0,
            "must_fail_tcp": [{"label": "the taken port", "ip": "proxy", "port": preferred}],
        }),
    );
    let out = env.run(&probes, &[format!("127.0.0.1:{preferred}=DECOY")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = env.report("report.json");
    assert_eq!(
        report["sidecars"]["HTTP_PROXY"],
        "established: egress:hello from HTTP_PROXY\n"
    );
    assert!(!report["must_fail_tcp"]["the taken port"]
        .as_str()
        .unwrap()
        .starts_with("established"));
    let egress = env.record()["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "egress")
        .unwrap()
        .clone();
    assert_eq!(egress["preferred_port"], preferred);
    assert_ne!(egress["host_port"], preferred);
}

#[test]
fn sigkill_of_the_runner_leaves_no_process_and_the_next_run_clears_it() {
    let env = RunEnv::new();
    let holding = env.write_probes(
        "hold.json",
        json!({"report": env.path("hold-report.json"), "exit_code": 0, "hold_ms": 30000}),
    );
    let child = env.spawn_run(&holding, &[], &[]);
    let record = env.wait_for_state("running", Duration::from_secs(20));
    let processes = recorded_processes(&record);
    let names: Vec<&str> = processes.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "egress",
        "git",
        "supervise",
        "guard",
        "gvproxy",
        "smolvm",
        "runner",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} not recorded: {names:?}"
        );
    }
    let runner = processes.iter().find(|(n, _)| n == "runner").unwrap().1;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(137));
    assert_all_gone(&record);

    // `ps` sees no live run, and the next run clears the stale directory and works.
    let ps = env.bottle(&["ps", "--json"], &env.path_var());
    let listed: Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(listed["runs"], json!([]), "{listed:#}");
    let probes = env.write_probes(
        "again.json",
        json!({"report": env.path("again.json.report"), "exit_code": 5}),
    );
    let out = env.run(&probes, &[]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cleared a stale run"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        env.report("again.json.report")["sidecars"]["HTTP_PROXY"],
        "established: egress:hello from HTTP_PROXY\n"
    );
}

#[test]
fn a_second_concurrent_run_is_refused_and_stop_tears_the_first_down() {
    let env = RunEnv::new();
    let holding = env.write_probes(
        "hold.json",
        json!({"report": env.path("hold-report.json"), "exit_code": 0, "hold_ms": 30000}),
    );
    let first = env.spawn_run(&holding, &[], &[]);
    let record = env.wait_for_state("running", Duration::from_secs(20));
    let runner_pid = record["runner"]["pid"].as_u64().unwrap();

    let second = env.run(&holding, &[]);
    assert_eq!(second.status.code(), Some(125));
    assert!(
        stderr(&second).contains(&format!("already running (runner pid {runner_pid}")),
        "{}",
        stderr(&second)
    );

    // gc leaves a stage alone while a run uses it, however old it is.
    let gc = env.bottle(&["gc", "--store", "st", "--json"], &env.path_var());
    assert!(gc.status.success(), "{}", stderr(&gc));
    let collected: Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert_eq!(collected["stages"][0]["kept"], "in_use", "{collected:#}");
    assert!(
        env.path("st").join(&env.id).is_dir(),
        "gc removed a running stage"
    );

    let ps = env.bottle(&["ps", "--json"], &env.path_var());
    let listed: Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(listed["runs"][0]["id"], env.id.as_str());
    assert_eq!(listed["runs"][0]["sidecars"].as_array().unwrap().len(), 3);

    let follow = env
        .command(&env.path_var())
        .args(["logs", &env.id, "--component", "guard", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    let started = Instant::now();
    let stop = env.bottle(&["stop", &env.id[..10]], &env.path_var());
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert!(started.elapsed() < Duration::from_secs(5));
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    let record = env.record();
    assert_eq!(record["state"], "ended");
    assert_eq!(record["outcome"]["reason"], "stopped by SIGTERM");
    assert_all_gone(&record);
    // `logs --follow` printed the guard's log as it grew and ended with the run.
    let followed = follow.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&followed.stdout);
    assert!(text.contains("guard: contained"), "{text}");
    assert!(text.contains("gvproxy exited"), "{text}");
}

#[test]
fn a_sidecar_dying_mid_run_ends_the_run_with_125_and_tears_everything_down() {
    let env = RunEnv::new();
    let holding = env.write_probes(
        "hold.json",
        json!({"report": env.path("hold-report.json"), "exit_code": 0, "hold_ms": 30000}),
    );
    let started = Instant::now();
    let child = env.spawn_run(
        &holding,
        &[],
        &[
            "--sidecar",
            "git=testhost serve --addr 127.0.0.1:{port} --banner git --exit-after-ms 1000",
        ],
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        stderr(&out).contains("the git sidecar stopped while the guest ran"),
        "{}",
        stderr(&out)
    );
    let record = env.record();
    assert_eq!(record["outcome"]["exit_code"], 125);
    assert_all_gone(&record);
    let calls = std::fs::read_to_string(env.path("smolvm/calls.log")).unwrap();
    assert!(
        calls.lines().last().unwrap().contains("machine delete"),
        "{calls}"
    );
}

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn gvproxy_dying_early_fails_the_run_with_its_log_and_leaves_no_machine() {
    let env = RunEnv::new();
    script(
        &env.path("bin/gvproxy"),
        r#"case "$1" in -version) echo "gvproxy version v0.8.1";; *) echo "fatal: cannot listen: boom" >&2; exit 1;; esac"#,
    );
    let probes = env.write_probes(
        "p.json",
        json!({"report": env.path("r.json"), "exit_code": 0}),
    );
    let out = env.run(&probes, &[]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("gvproxy exited before its VM socket"), "{err}");
    assert!(err.contains("fatal: cannot listen: boom"), "{err}");
    // The machine was created while gvproxy started, never started, and deleted.
    let calls = std::fs::read_to_string(env.path("smolvm/calls.log")).unwrap();
    let verbs: Vec<&str> = calls
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(verbs, ["create", "delete"]);
    assert_eq!(
        std::fs::read_dir(env.path("smolvm")).unwrap().count(),
        1,
        "a machine was left"
    );
    let record = env.record();
    assert_eq!(record["outcome"]["exit_code"], 125);
    assert_all_gone(&record);
}

fn assert_refused_before_starting(env: &RunEnv, out: &Output, message: &str) {
    assert_eq!(out.status.code(), Some(125), "{}", stderr(out));
    assert!(stderr(out).contains(message), "{}", stderr(out));
    assert!(!env.run_dir().exists(), "a run directory was created");
    assert!(!env.path("smolvm/calls.log").exists(), "smolvm was called");
}

#[test]
fn a_missing_smolvm_is_refused_before_anything_starts() {
    let env = RunEnv::new();
    std::fs::remove_file(env.path("bin/smolvm")).unwrap();
    // Only our bin directory and gvproxy's: no smolvm anywhere.
    std::os::unix::fs::symlink("/usr/bin/gvproxy", env.path("bin/gvproxy")).unwrap();
    let bin = env.path("bin").display().to_string();
    let out = env.bottle(
        &[
            "run",
            &env.id,
            "--store",
            "st",
            "--yes",
            "--workspace",
            "ws",
        ],
        &bin,
    );
    assert_refused_before_starting(&env, &out, "smolvm is not on PATH");
    assert!(stderr(&out).contains("never runs a VM with smolvm's default TSI network"));
}

#[test]
fn a_smolvm_without_the_external_network_contract_is_refused() {
    let env = RunEnv::new();
    std::fs::remove_file(env.path("bin/smolvm")).unwrap();
    script(
        &env.path("bin/smolvm"),
        r#"echo "$@" >> "$SMOLVM_DATA_DIR/calls.log.old"; echo "  --net  --net-backend <BACKEND>""#,
    );
    let out = env.bottle(
        &[
            "run",
            &env.id,
            "--store",
            "st",
            "--yes",
            "--workspace",
            "ws",
        ],
        &env.path_var(),
    );
    assert_refused_before_starting(&env, &out, "lacks the external network contract");
    let calls = std::fs::read_to_string(env.path("smolvm/calls.log.old")).unwrap();
    assert_eq!(
        calls.trim(),
        "machine create --help",
        "only the help was asked"
    );
}

#[test]
fn a_missing_gvproxy_is_refused_before_anything_starts() {
    let env = RunEnv::new();
    let bin = env.path("bin").display().to_string();
    let out = env.bottle(
        &[
            "run",
            &env.id,
            "--store",
            "st",
            "--yes",
            "--workspace",
            "ws",
        ],
        &bin,
    );
    assert_refused_before_starting(&env, &out, "gvproxy is not on PATH");
}

#[test]
fn a_tampered_stage_is_refused_before_anything_starts() {
    let env = RunEnv::new();
    let smolfile = env.path("st").join(&env.id).join("smolfile.toml");
    std::fs::set_permissions(&smolfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = std::fs::read_to_string(&smolfile).unwrap();
    std::fs::write(&smolfile, text.replace("cpus = 2", "cpus = 3")).unwrap();
    let out = env.bottle(
        &[
            "run",
            &env.id,
            "--store",
            "st",
            "--yes",
            "--workspace",
            "ws",
        ],
        &env.path_var(),
    );
    assert_refused_before_starting(
        &env,
        &out,
        "smolfile.toml: differs from what its spec renders",
    );
}

#[test]
fn without_a_terminal_and_without_yes_the_run_is_refused() {
    let env = RunEnv::new();
    let out = env.bottle(
        &["run", &env.id, "--store", "st", "--workspace", "ws"],
        &env.path_var(),
    );
    assert_refused_before_starting(&env, &out, "stdin is not a terminal");
}

#[test]
fn a_dry_run_prints_every_process_and_file_without_smolvm_or_gvproxy() {
    let env = RunEnv::new();
    std::fs::remove_file(env.path("bin/smolvm")).unwrap();
    let bin = env.path("bin").display().to_string();
    let out = env.bottle(
        &[
            "run",
            &env.id[..8],
            "--store",
            "st",
            "--dry-run",
            "--workspace",
            "ws",
        ],
        &bin,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan = String::from_utf8(out.stdout.clone()).unwrap();
    for needle in [
        "__guard --config",
        "-listen-qemu unix://",
        "-ssh-port -1",
        "machine create --name bottle-probe-",
        "--net --net-backend virtio-net --net-unixstream",
        "machine exec --name",
        "relay 127.0.0.1:3128 ->",
        "run.json",
        "testhost serve --addr 127.0.0.1:{port} --banner supervise",
    ] {
        assert!(plan.contains(needle), "`{needle}` missing from:\n{plan}");
    }
    assert!(!plan.contains(SECRET_VALUE));
    assert!(stderr(&out).contains("smolvm is not on PATH"));
    assert!(
        !env.run_dir().exists(),
        "a dry run created the run directory"
    );
}

#[test]
fn ctrl_c_while_gvproxy_starts_stops_the_run_like_the_shell_would() {
    let env = RunEnv::new();
    script(
        &env.path("bin/gvproxy"),
        r#"case "$1" in -version) echo "gvproxy version v0.8.1";; *) exec sleep 30;; esac"#,
    );
    let probes = env.write_probes(
        "p.json",
        json!({"report": env.path("r.json"), "exit_code": 0}),
    );
    let child = env.spawn_run(&probes, &[], &[]);
    let record = env.wait_for_state("starting", Duration::from_secs(20));
    let runner: ProcessId = serde_json::from_value(record["runner"].clone()).unwrap();
    // The record is written before the guard starts; wait until the guard is recorded too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.record()["components"].as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the guard never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(runner.signal(nix::sys::signal::Signal::SIGINT));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let record = env.record();
    assert_eq!(
        record["outcome"]["reason"],
        "stopped by SIGINT before the guest started"
    );
    assert_all_gone(&record);
}

#[test]
fn a_sidecar_that_exits_before_listening_fails_the_run_before_the_machine_starts() {
    let env = RunEnv::new();
    let probes = env.write_probes(
        "p.json",
        json!({"report": env.path("r.json"), "exit_code": 0}),
    );
    let out = env
        .spawn_run(&probes, &[], &["--sidecar", "git=sleep 0.2"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the git sidecar exited before it listened on 127.0.0.1:"),
        "{}",
        stderr(&out)
    );
    let calls = std::fs::read_to_string(env.path("smolvm/calls.log")).unwrap();
    assert!(!calls.contains("machine start"), "{calls}");
    assert_all_gone(&env.record());
}

#[test]
fn an_unprivileged_user_gets_the_same_containment() {
    // As root, the run is made as nobody; run by anyone else, the test already is unprivileged.
    let user = nix::unistd::geteuid().is_root().then_some(65534u32);
    let env = RunEnv::new();
    // The user must be able to run the binaries wherever the checkout is: copy them into the
    // test's directory, which becomes the user's.
    let private_bin = env.path("ubin");
    std::fs::create_dir(&private_bin).unwrap();
    for (name, from) in [
        ("bottle", PathBuf::from(bottle_exe())),
        ("fake-smolvm", testkit_bin("fake-smolvm")),
        ("testhost", testkit_bin("testhost")),
    ] {
        std::fs::copy(&from, private_bin.join(name)).unwrap();
    }
    for name in ["smolvm", "testhost"] {
        std::fs::remove_file(env.path("bin").join(name)).unwrap();
    }
    std::os::unix::fs::symlink(private_bin.join("fake-smolvm"), env.path("bin/smolvm")).unwrap();
    std::os::unix::fs::symlink(private_bin.join("testhost"), env.path("bin/testhost")).unwrap();
    let probes = env.write_probes("probes.json", full_probes(&env, "report.json", 7));
    if let Some(uid) = user {
        for entry in walkdir::WalkDir::new(&env.root) {
            let path = entry.unwrap().into_path();
            std::os::unix::fs::lchown(&path, Some(uid), Some(uid)).unwrap();
        }
    }
    let out = env
        .spawn_run_as(user, &private_bin.join("bottle"), &probes, &decoys(), &[])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let report = env.report("report.json");
    assert_eq!(report["errors"], json!([]), "{report:#}");
    assert_eq!(
        report["sidecars"]["HTTP_PROXY"],
        "established: egress:hello from HTTP_PROXY\n"
    );
    assert_eq!(report["must_fail_tcp"].as_object().unwrap().len(), 4);
    for (label, outcome) in report["must_fail_tcp"].as_object().unwrap() {
        assert!(
            !outcome.as_str().unwrap().starts_with("established"),
            "{label}: {outcome}"
        );
    }
    assert!(report["expose"]
        .as_str()
        .unwrap()
        .contains("read-only file system"));
    assert_eq!(
        std::fs::read_to_string(env.path("owned.txt")).unwrap(),
        "the test's own file\n"
    );
    assert_all_gone(&env.record());
}

#[test]
fn by_default_the_egress_sidecar_is_bottles_own_proxy() {
    let mut env = RunEnv::new();
    env.builtin_egress = true;
    let probes = env.write_probes(
        "p.json",
        json!({"report": env.path("r.json"), "exit_code": 0}),
    );
    let out = env.run(&probes, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The guest's line is no HTTP request: the real proxy answers it with an HTTP error.
    let reply = env.report("r.json")["sidecars"]["HTTP_PROXY"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reply.starts_with("established: HTTP/1.1 4"), "{reply}");
    let record = env.record();
    let egress = record["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "egress")
        .expect("the egress proxy is a recorded component");
    assert!(egress["process"]["pid"].is_u64());
    assert_all_gone(&record);

    // Its decisions: `logs --component egress` shows the audit log, `egress` summarises it.
    let logs = env.bottle(&["logs", &env.id, "--component", "egress"], &env.path_var());
    assert!(logs.status.success(), "{}", stderr(&logs));
    let text = String::from_utf8_lossy(&logs.stdout).into_owned();
    let first: Value =
        serde_json::from_str(text.lines().next().expect("a decision was logged")).unwrap();
    assert!(first["outcome"].is_string(), "{text}");
    let summary = env.bottle(
        &["egress", &env.id, "--store", "st", "--json"],
        &env.path_var(),
    );
    assert!(summary.status.success(), "{}", stderr(&summary));
    let summary: Value = serde_json::from_slice(&summary.stdout).unwrap();
    assert_eq!(summary["version"], 1);
}

#[test]
fn by_default_the_git_sidecar_serves_a_mirror_and_the_workspace_is_untouched() {
    let mut env = RunEnv::new();
    env.builtin_git = true;
    let ws = env.path("ws");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&ws)
            .args(["-c", "user.name=T", "-c", "user.email=t@example.invalid"])
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    git(&["init", "--quiet"]);
    std::fs::write(ws.join("f"), "x\n").unwrap();
    git(&["add", "f"]);
    git(&["commit", "--quiet", "-m", "first"]);
    let refs_before = git(&["for-each-ref"]);

    let probes = env.write_probes(
        "p.json",
        json!({"report": env.path("r.json"), "exit_code": 0}),
    );
    let out = env.run(&probes, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("git gateway: the agent pushed nothing"),
        "{}",
        stderr(&out)
    );
    let mirror = env.run_dir().join("git/workspace.git");
    assert!(
        mirror.join("HEAD").is_file(),
        "no mirror at {}",
        mirror.display()
    );
    let record = env.record();
    let daemon = record["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "git")
        .expect("the git daemon is a recorded component");
    assert!(daemon["process"]["pid"].is_u64());
    assert_eq!(
        git(&["for-each-ref"]),
        refs_before,
        "the user's repository changed"
    );
    assert_all_gone(&record);
    // Not only the recorded process: nothing serving the mirror may outlive the run.
    let base = env.run_dir().join("git").display().to_string();
    let survivors: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let state = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let zombie = state
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'));
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (!zombie && cmdline.contains(&base)).then_some(cmdline)
        })
        .collect();
    assert!(survivors.is_empty(), "left running: {survivors:?}");

    // A second run keeps the first run's mirror aside instead of losing unfetched pushes.
    let out = env.run(&probes, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(env.run_dir().join("git.1/workspace.git/HEAD").is_file());
}

#[test]
fn git_true_with_a_workspace_that_is_no_repository_fails_clearly() {
    let mut env = RunEnv::new();
    env.builtin_git = true;
    let probes = env.write_probes(
        "p.json",
        json!({"report": env.path("r.json"), "exit_code": 0}),
    );
    let out = env.run(&probes, &[]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a git repository"),
        "{}",
        stderr(&out)
    );
    assert_all_gone(&env.record());
}

#[test]
fn a_pipelock_stage_runs_pipelock_and_is_refused_when_pipelock_is_missing() {
    let env = RunEnv::new();
    let manifest = MANIFEST.replace(
        "git = true",
        "git = true\negress = { engine = \"pipelock\", allow = [\"api.example.com\"] }",
    );
    std::fs::write(env.path("pipelock.toml"), manifest).unwrap();
    let out = env.bottle(&["gen", "pipelock.toml", "--store", "st"], &env.path_var());
    assert!(out.status.success(), "{}", stderr(&out));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let dry = env.bottle(
        &[
            "run",
            &id,
            "--store",
            "st",
            "--dry-run",
            "--workspace",
            "ws",
        ],
        &env.path_var(),
    );
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    let plan = String::from_utf8(dry.stdout).unwrap();
    let expected = format!(
        "pipelock run -c {}",
        env.path("st").join(&id).join("pipelock.yaml").display()
    );
    assert!(
        plan.contains(&expected),
        "`{expected}` missing from:\n{plan}"
    );
    assert!(
        plan.contains("-l '127.0.0.1:{port}'") || plan.contains("-l 127.0.0.1:{port}"),
        "{plan}"
    );

    let out = env.bottle(
        &["run", &id, "--store", "st", "--yes", "--workspace", "ws"],
        &env.path_var(),
    );
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pipelock is not on PATH"),
        "{}",
        stderr(&out)
    );
    assert!(
        !env.path("xdg/bottle").join(&id).exists(),
        "a run directory was created"
    );
}

/// The guest's only way out, end to end: through the real egress proxy as `proxy.internal:3128`
/// to a test server on the host side (198.18.0.1, opened in the stage on purpose), and refused
/// for a port the stage does not list.
#[test]
fn the_guest_reaches_an_allowed_server_through_the_egress_proxy_and_is_refused_the_rest() {
    let mut env = RunEnv::new();
    env.builtin_egress = true;
    let manifest = MANIFEST.replace(
        "git = true",
        "git = true\negress = { allow = [\"198.18.0.1:24100\"], allow_addresses = [\"198.18.0.1/32\"] }",
    );
    std::fs::write(env.path("egress.toml"), manifest).unwrap();
    let out = env.bottle(&["gen", "egress.toml", "--store", "st"], &env.path_var());
    assert!(out.status.success(), "{}", stderr(&out));
    env.id = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let connect = |port: u16| {
        format!("CONNECT 198.18.0.1:{port} HTTP/1.1\r\nHost: 198.18.0.1:{port}\r\n\r\nhello through the tunnel\n")
    };
    let probes = env.write_probes(
        "p.json",
        json!({
            "report": env.path("r.json"),
            "exit_code": 0,
            "proxy_requests": [
                {"label": "allowed", "request": connect(24100)},
                {"label": "unlisted port", "request": connect(24101)},
                {"label": "plain http, unlisted host", "request": "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"},
            ],
        }),
    );
    let listens = [
        "198.18.0.1:24100=upstream".to_owned(),
        "198.18.0.1:24101=decoy".to_owned(),
    ];
    let out = env.run(&probes, &listens);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = env.report("r.json");
    let answer = |label: &str| {
        report["proxy_requests"][label]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let allowed = answer("allowed");
    assert!(allowed.contains("HTTP/1.1 200"), "{allowed}");
    assert!(
        allowed.contains("upstream:hello through the tunnel"),
        "{allowed}"
    );
    for label in ["unlisted port", "plain http, unlisted host"] {
        let refused = answer(label);
        assert!(refused.contains("HTTP/1.1 403"), "{label}: {refused}");
        assert!(!refused.contains("decoy"), "{label}: {refused}");
    }
    // Every decision is in the run's audit log (the guest's plain "hello" to every sidecar is a
    // fourth one, refused as a malformed request).
    let audit = std::fs::read_to_string(env.run_dir().join("logs/egress-audit.jsonl")).unwrap();
    let records: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decided = |method: &str, port: u64| {
        records
            .iter()
            .find(|r| r["method"] == method && r["port"] == port)
            .map(|r| {
                (
                    r["outcome"].as_str().unwrap().to_owned(),
                    r["reason"].clone(),
                )
            })
    };
    assert_eq!(
        decided("CONNECT", 24100),
        Some(("allowed".into(), Value::Null)),
        "{audit}"
    );
    assert_eq!(decided("CONNECT", 24101).unwrap().0, "refused", "{audit}");
    assert_eq!(
        decided("GET", 80),
        Some(("refused".into(), json!("not_listed"))),
        "{audit}"
    );
    assert_all_gone(&env.record());
}
