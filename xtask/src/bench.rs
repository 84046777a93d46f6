//! `cargo xtask bench`: the generator's speed, measured as whole processes of the release build
//! (median of several runs), against the targets of the stage generator issue.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fs_err as fs;

use crate::root;

const RUNS: usize = 15;

pub fn run() -> anyhow::Result<()> {
    let bottle = crate::build_release(&[])?.join("bottle");
    let work = crate::bench_dir("generator")?;
    let example = root().join("examples/claude.toml");
    let mut report = Report::default();

    let new_stage = median(RUNS, |i| {
        let store = work.join(format!("new-{i}"));
        time(
            Command::new(&bottle)
                .arg("gen")
                .arg(&example)
                .arg("--store")
                .arg(&store),
        )
    })?;
    report.row("gen, new stage", new_stage, Some(Duration::from_millis(5)));

    let existing = work.join("existing");
    run_ok(
        Command::new(&bottle)
            .arg("gen")
            .arg(&example)
            .arg("--store")
            .arg(&existing),
    )?;
    let gen_existing = median(RUNS, |_| {
        time(
            Command::new(&bottle)
                .arg("gen")
                .arg(&example)
                .arg("--store")
                .arg(&existing),
        )
    })?;
    report.row("gen, existing stage", gen_existing, None);

    let hash = median(RUNS, |_| {
        time(Command::new(&bottle).arg("hash").arg(&example))
    })?;
    report.row("hash", hash, Some(Duration::from_millis(2)));

    let manifests = work.join("manifests");
    fs::create_dir_all(&manifests)?;
    let template = fs::read_to_string(&example)?;
    let many_store = work.join("many");
    let start = Instant::now();
    for i in 0..1000 {
        let path = manifests.join(format!("m{i}.toml"));
        fs::write(
            &path,
            template
                .replace("cpus = 2", &format!("cpus = {}", 1 + i % 16))
                .replace("4GiB", &format!("{}MiB", 64 + i)),
        )?;
        run_ok(
            Command::new(&bottle)
                .arg("gen")
                .arg(&path)
                .arg("--store")
                .arg(&many_store),
        )?;
    }
    report.row("gen of 1,000 distinct specs (total)", start.elapsed(), None);

    let big = work.join("big");
    let count = fill_store(&big, 10_000)?;
    let ls = median(3, |_| {
        time(Command::new(&bottle).arg("ls").arg("--store").arg(&big))
    })?;
    report.row(
        &format!("ls, {count} stages"),
        ls,
        Some(Duration::from_secs(1)),
    );
    let verify = median(3, |_| {
        time(Command::new(&bottle).arg("verify").arg("--store").arg(&big))
    })?;
    report.row(
        &format!("verify, {count} stages"),
        verify,
        Some(Duration::from_secs(5)),
    );
    let gc = median(3, |_| {
        time(
            Command::new(&bottle)
                .args(["gc", "--dry-run", "--store"])
                .arg(&big),
        )
    })?;
    report.row(
        &format!("gc --dry-run, {count} stages"),
        gc,
        Some(Duration::from_secs(1)),
    );

    let id = String::from_utf8(
        Command::new(&bottle)
            .arg("hash")
            .arg(&example)
            .output()?
            .stdout,
    )?;
    let archive = work.join("stage.tar");
    let export = median(RUNS, |_| {
        time(
            Command::new(&bottle)
                .arg("export")
                .arg(id.trim())
                .arg("-o")
                .arg(&archive)
                .arg("--store")
                .arg(&existing),
        )
    })?;
    report.row("export", export, Some(Duration::from_millis(20)));
    let import = median(RUNS, |i| {
        time(
            Command::new(&bottle)
                .arg("import")
                .arg(&archive)
                .arg("--store")
                .arg(work.join(format!("import-{i}"))),
        )
    })?;
    report.row(
        "import (into an empty store)",
        import,
        Some(Duration::from_millis(20)),
    );

    fs::remove_dir_all(&work)?;
    report.print();
    Ok(())
}

/// Writes `count` distinct, valid stages straight through the library (fixture set-up, not
/// measured), so the store is as `bottle gen` would leave it.
fn fill_store(store: &Path, count: usize) -> anyhow::Result<usize> {
    let text = fs::read_to_string(root().join("examples/claude.toml"))?;
    let store = bottle::stage::Store::new(store);
    for i in 0..count {
        let manifest = bottle::spec::Manifest::parse(
            "bench.toml",
            &text.replace("4GiB", &format!("{}MiB", 64 + i)),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let spec = manifest.resolve(None).map_err(|e| anyhow::anyhow!("{e}"))?;
        store.write(&bottle::stage::build(&spec))?;
    }
    Ok(count)
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("failed to start bottle")?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn time(cmd: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    run_ok(cmd)?;
    Ok(start.elapsed())
}

fn median(
    runs: usize,
    mut f: impl FnMut(usize) -> anyhow::Result<Duration>,
) -> anyhow::Result<Duration> {
    let mut samples = (0..runs).map(&mut f).collect::<anyhow::Result<Vec<_>>>()?;
    samples.sort();
    Ok(samples[samples.len() / 2])
}

#[derive(Default)]
struct Report {
    rows: Vec<(String, Duration, Option<Duration>)>,
}

impl Report {
    fn row(&mut self, what: &str, took: Duration, target: Option<Duration>) {
        eprintln!("  measured {what}: {took:.2?}");
        self.rows.push((what.to_owned(), took, target));
    }

    fn print(&self) {
        println!(
            "{:<40} {:>12} {:>12}  verdict",
            "benchmark", "measured", "target"
        );
        for (what, took, target) in &self.rows {
            let (target_text, verdict) = match target {
                Some(t) if took <= t => (format!("{t:.0?}"), "ok"),
                Some(t) => (format!("{t:.0?}"), "OVER"),
                None => ("-".to_owned(), ""),
            };
            println!(
                "{what:<40} {:>12} {target_text:>12}  {verdict}",
                format!("{took:.2?}")
            );
        }
    }
}
