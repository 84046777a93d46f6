//! Project automation, run as `cargo xtask <task>` (an alias in .cargo/config.toml).
//!
//! bless   rewrite golden/ from the renderers (refuses byte changes without a format bump)
//! stages  regenerate stages/ from examples/*.toml
//! ci      fmt, clippy with warnings denied, and the whole test suite
//! bench   speed of the generator (as whole processes), of `bottle run` up to smolvm's start and
//!         of its teardown, and of the egress proxy against a direct connection and tinyproxy;
//!         `bench-generator`, `bench-run` and `bench-egress` run one part
//! dist    shell completions and man pages from the clap definitions, into target/dist/

mod bench;
mod bench_egress;
mod bench_run;
mod bless;
mod ci;
mod dist;
mod stages;

use std::path::{Path, PathBuf};

const USAGE: &str = "usage: cargo xtask <bless|stages|ci|bench|dist>";

fn main() -> std::process::ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "bless" => bless::run(),
        "stages" => stages::run(),
        "ci" => ci::run(),
        "bench" => bench::run()
            .and_then(|()| bench_run::run())
            .and_then(|()| bench_egress::run()),
        "bench-run" => bench_run::run(),
        "bench-generator" => bench::run(),
        "bench-egress" => bench_egress::run(),
        "dist" => dist::run(),
        _ => {
            eprintln!("{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The workspace root, whatever directory cargo was started from.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Builds the release binaries of `packages` (with `bottle`) and returns the release directory.
fn build_release(packages: &[&str]) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut args = vec!["build", "--release", "--locked", "--quiet", "-p", "bottle"];
    for package in packages {
        args.extend(["-p", package]);
    }
    let status = std::process::Command::new(cargo)
        .args(&args)
        .current_dir(root())
        .status()?;
    if !status.success() {
        anyhow::bail!("cargo build --release failed");
    }
    Ok(std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("release"))
}

/// A fresh, empty temporary directory for one benchmark.
fn bench_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bottle-bench-{name}-{}", std::process::id()));
    if dir.exists() {
        fs_err::remove_dir_all(&dir)?;
    }
    fs_err::create_dir_all(&dir)?;
    Ok(dir)
}

/// Every agent's stage of one manifest; the manifest is named relative to the root in errors.
fn stages_of(manifest: &Path) -> anyhow::Result<Vec<bottle::stage::Stage>> {
    let text = fs_err::read_to_string(manifest)?;
    let name = manifest
        .strip_prefix(root())
        .unwrap_or(manifest)
        .display()
        .to_string();
    let parsed = bottle::spec::Manifest::parse(&name, &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    bottle::stage::build_all(&parsed).map_err(|e| anyhow::anyhow!("{e}"))
}
