//! `cargo xtask ci`: what CI runs: formatting, clippy with warnings denied, the whole test suite
//! (which includes the golden, committed-stage and smolfile-parser checks).

use std::process::Command;

use anyhow::{bail, Context as _};

use crate::root;

pub fn run() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let steps: [&[&str]; 3] = [
        &["fmt", "--all", "--", "--check"],
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
        &["test", "--workspace", "--locked"],
    ];
    for args in steps {
        eprintln!("$ cargo {}", args.join(" "));
        let status = Command::new(&cargo)
            .args(args)
            .current_dir(root())
            .status()
            .with_context(|| format!("failed to start cargo {}", args[0]))?;
        if !status.success() {
            bail!("`cargo {}` failed ({status})", args.join(" "));
        }
    }
    Ok(())
}
