//! `cargo xtask bench`, the runner's part: how long `bottle run --yes` takes to reach smolvm
//! (split into bottle's own work, the wait for gvproxy's VM socket, the wait for the test
//! sidecar to listen and the stand-in's `machine start`) and how long teardown takes. Uses the release build, Debian's gvproxy and the testkit's stand-in smolvm, whose
//! guest only talks to the contained gvproxy. Targets: own work <= 30 ms, teardown <= 200 ms.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::bail;
use bottle::run::record::RunRecord;
use fs_err as fs;

const RUNS: usize = 20;
const OWN_TARGET_MS: f64 = 30.0;
const TEARDOWN_TARGET_MS: f64 = 200.0;

const MANIFEST: &str = r#"
[agents.bench]
bottle = "b"
command = ["/bench"]

[bottles.b]
image = "docker.io/library/alpine:3.20"
"#;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

struct Stats {
    name: &'static str,
    values: Vec<f64>,
}

impl Stats {
    fn median(&self) -> f64 {
        let mut v = self.values.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }
    fn line(&self) -> String {
        let min = self.values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.values.iter().copied().fold(0.0, f64::max);
        format!(
            "  {:<44} median {:>7.1} ms   min {:>7.1}   max {:>7.1}",
            self.name,
            self.median(),
            min,
            max
        )
    }
}

pub fn run() -> anyhow::Result<()> {
    let target = crate::build_release(&["bottle-testkit"])?;
    let dir = crate::bench_dir("run")?;
    let result = bench(&target, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(target: &Path, dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let bottle = target.join("bottle");
    for sub in ["bin", "ws", "xdg", "smolvm"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    fs::set_permissions(dir.join("xdg"), std::fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::symlink(target.join("fake-smolvm"), dir.join("bin/smolvm"))?;
    std::os::unix::fs::symlink(target.join("testhost"), dir.join("bin/testhost"))?;
    fs::write(dir.join("bottle.toml"), MANIFEST)?;
    let out = Command::new(&bottle)
        .args(["gen", "bottle.toml", "--store", "st"])
        .current_dir(dir)
        .stderr(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("bottle gen failed");
    }
    let id = String::from_utf8(out.stdout)?.trim().to_owned();
    let probes = dir.join("probes.json");
    fs::write(
        &probes,
        format!(
            "{{\"report\": \"{}\", \"exit_code\": 0}}",
            dir.join("report.json").display()
        ),
    )?;
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started_file = dir.join("started");
    let mut to_start = Stats {
        name: "bottle run --yes -> stand-in smolvm starts",
        values: vec![],
    };
    let mut wait = Stats {
        name: "  of which: waiting for gvproxy's VM socket",
        values: vec![],
    };
    let mut sidecars = Stats {
        name: "  of which: waiting for the sidecar to listen",
        values: vec![],
    };
    let mut start = Stats {
        name: "  of which: smolvm machine start (stand-in)",
        values: vec![],
    };
    let mut own = Stats {
        name: "  of which: bottle's own work",
        values: vec![],
    };
    let mut teardown = Stats {
        name: "teardown (guest exit -> all stopped)",
        values: vec![],
    };
    // One warm-up run fills the file cache and bottle's cache of tool answers.
    for i in 0..=RUNS {
        let _ = std::fs::remove_file(&started_file);
        let t0 = now_ns();
        let status = Command::new(&bottle)
            .args(["run", &id, "--store", "st", "--yes", "--workspace", "ws"])
            .args([
                "--sidecar",
                "egress=testhost serve --addr 127.0.0.1:{port} --banner egress",
            ])
            .current_dir(dir)
            .env("PATH", &path)
            .env("XDG_RUNTIME_DIR", dir.join("xdg"))
            .env("SMOLVM_DATA_DIR", dir.join("smolvm"))
            .env("FAKE_SMOLVM_PROBES", &probes)
            .env("FAKE_SMOLVM_STARTED", &started_file)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!(
                "bottle run failed ({status}); see {}",
                dir.join("xdg/bottle").join(&id).join("logs").display()
            );
        }
        let started: u128 = fs::read_to_string(&started_file)?.trim().parse()?;
        let record = RunRecord::read(&dir.join("xdg/bottle").join(&id).join("run.json"))?;
        if i == 0 {
            continue;
        }
        let total = (started - t0) as f64 / 1e6;
        let waited = record.timings.gvproxy_wait_ms.unwrap_or(0.0);
        let sidecar_waited = record.timings.sidecar_wait_ms.unwrap_or(0.0);
        let starting = record.timings.smolvm_start_ms.unwrap_or(0.0);
        start.values.push(starting);
        to_start.values.push(total);
        wait.values.push(waited);
        sidecars.values.push(sidecar_waited);
        own.values.push(total - waited - sidecar_waited - starting);
        teardown
            .values
            .push(record.timings.teardown_ms.unwrap_or(f64::NAN));
    }
    println!("bottle run ({RUNS} runs, release build, gvproxy legacy mode, stand-in smolvm)");
    for stats in [&to_start, &wait, &sidecars, &start, &own, &teardown] {
        println!("{}", stats.line());
    }
    println!(
        "  targets: own work <= {OWN_TARGET_MS} ms ({}), teardown <= {TEARDOWN_TARGET_MS} ms ({})",
        if own.median() <= OWN_TARGET_MS {
            "met"
        } else {
            "MISSED"
        },
        if teardown.median() <= TEARDOWN_TARGET_MS {
            "met"
        } else {
            "MISSED"
        },
    );
    Ok(())
}
