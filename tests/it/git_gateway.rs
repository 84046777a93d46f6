//! The git gateway with the real git: a client clones from and pushes to the mirror through
//! `git daemon` on loopback; the user's repository is untouched until they run the printed fetch.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bottle::sidecar::git::{self, RefChange};

fn sh_git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Agent",
            "-c",
            "user.email=agent@example.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn clone_commit_push_and_the_user_repository_is_untouched() {
    let root = tempfile::tempdir().unwrap();
    let workspace = root.path().join("workspace");
    std::fs::create_dir(&workspace).unwrap();
    sh_git(&workspace, &["init", "--quiet"]);
    std::fs::write(workspace.join("README"), "hello\n").unwrap();
    sh_git(&workspace, &["add", "README"]);
    sh_git(&workspace, &["commit", "--quiet", "-m", "first"]);
    let user_refs_before = git::refs(&workspace).unwrap();

    let mirror = git::create_mirror(&workspace, &root.path().join("run/git")).unwrap();
    let port = free_port();
    let child = git::daemon_command(&mirror, port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "git daemon never listened");
        std::thread::sleep(Duration::from_millis(10));
    }

    let agent = root.path().join("agent");
    let url = format!("git://127.0.0.1:{port}/workspace");
    sh_git(
        root.path(),
        &["clone", "--quiet", &url, agent.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read_to_string(agent.join("README")).unwrap(),
        "hello\n"
    );
    sh_git(&agent, &["checkout", "--quiet", "-b", "agent/fix"]);
    std::fs::write(agent.join("README"), "hello, fixed\n").unwrap();
    sh_git(&agent, &["commit", "--quiet", "-am", "fix"]);
    sh_git(&agent, &["push", "--quiet", "origin", "agent/fix"]);

    assert_eq!(
        git::refs(&workspace).unwrap(),
        user_refs_before,
        "the push reached the user's repository"
    );
    let changes = git::changes(&mirror.initial, &git::refs(&mirror.repo).unwrap());
    assert!(
        matches!(changes.as_slice(), [RefChange::Created { name, .. }] if name == "refs/heads/agent/fix"),
        "{changes:?}"
    );

    let fetch = git::fetch_command(&workspace, &mirror.repo, &changes).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(&fetch)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{fetch}");
    let fetched = sh_git(
        &workspace,
        &["show", "refs/remotes/bottle/agent/fix:README"],
    );
    assert_eq!(fetched, "hello, fixed\n");
}

#[test]
fn a_workspace_that_is_not_a_repository_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let err = git::create_mirror(root.path(), &root.path().join("run")).unwrap_err();
    let text = bottle::error::render(&err);
    assert!(
        text.contains("is not a git repository") && text.contains("git = false"),
        "{text}"
    );
}
