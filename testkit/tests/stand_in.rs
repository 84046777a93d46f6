//! The stand-in's own behaviour at its command line. (This test also makes `cargo test` build
//! the stand-in binaries that bottle's end-to-end tests put on PATH.)

use std::process::Command;

fn fake() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fake-smolvm"))
}

#[test]
fn help_lists_the_external_network_contract() {
    let out = fake()
        .args(["machine", "create", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--net-unixstream",
        "--net-address",
        "--net-gateway",
        "--net-dns",
        "--net-mac",
    ] {
        assert!(help.contains(flag), "{flag} missing from {help}");
    }
}

#[test]
fn a_create_without_the_external_network_fails_like_smolvm() {
    let state = tempfile_dir();
    let out = fake()
        .args([
            "machine",
            "create",
            "--name",
            "m",
            "--smolfile",
            "/nonexistent",
            "--net",
        ])
        .env("SMOLVM_DATA_DIR", &state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("Error: "), "{err}");
    assert!(err.contains("--net-backend"), "{err}");
    let _ = std::fs::remove_dir_all(state);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("stand-in-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
