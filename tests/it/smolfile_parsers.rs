//! Every Smolfile bottle renders must be accepted by smolvm's own parser, the `smolfile` crate,
//! in 1.9.2 (the base of the smolvm fork that can attach its NIC to an external socket) and in
//! the newest, 1.33.0. Cargo cannot link two 1.x versions into one binary, so each version is a
//! small checker crate of its own under checkers/, built here with cargo and run over every
//! golden and committed stage. The real smolvm binary cannot be installed here; its parser can.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::repo;

fn checker(version: &str) -> PathBuf {
    let target = repo().join("target").join("checkers");
    let manifest = repo()
        .join("checkers")
        .join(format!("smolfile-{version}"))
        .join("Cargo.toml");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "building the smolfile {version} checker failed"
    );
    target
        .join("release")
        .join(format!("smolfile-check-{}", version.replace('.', "-")))
}

fn rendered_smolfiles() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(repo().join("golden"))
        .into_iter()
        .chain(walkdir::WalkDir::new(repo().join("stages")))
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.file_name().is_some_and(|n| n == "smolfile.toml"))
        .collect();
    files.sort();
    files
}

fn check_all(version: &str) {
    let files = rendered_smolfiles();
    assert!(
        files.len() >= 8,
        "expected the golden and committed stages, found {files:?}"
    );
    let out = Command::new(checker(version))
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "smolfile {version} rejected a rendered Smolfile:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let accepted = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("ok "))
        .count();
    assert_eq!(accepted, files.len());
}

/// The checker must be able to fail, or a pass means nothing.
fn rejects_network_keys(version: &str, dir: &Path) {
    let bad = dir.join(format!("bad-{version}.toml"));
    std::fs::write(
        &bad,
        "image = \"alpine\"\nnet_backend = \"tsi\"\nbogus = 1\n",
    )
    .unwrap();
    let out = Command::new(checker(version)).arg(&bad).output().unwrap();
    assert!(
        !out.status.success(),
        "smolfile {version} accepted an unknown key"
    );
}

#[test]
fn smolfile_1_9_2_accepts_every_rendered_smolfile() {
    check_all("1.9");
    rejects_network_keys("1.9", tempfile::tempdir().unwrap().path());
}

#[test]
fn smolfile_1_33_0_accepts_every_rendered_smolfile() {
    check_all("1.33");
    rejects_network_keys("1.33", tempfile::tempdir().unwrap().path());
}
