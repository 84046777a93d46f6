//! The git gateway: a bare mirror of the user's workspace repository, made at run start in the
//! run's own state, served by the real `git daemon` on loopback with push enabled. The agent
//! clones and pushes over `git://`; pushes land only in the mirror, and nothing the agent does
//! reaches the user's repository until the user fetches. No credential is involved.
//!
//! This module names git's flags; it never touches the user's repository except to read it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::error::UserError;

/// The repository's name under the gateway: the guest clones `${GIT_GATE_URL}workspace`.
pub const REPO_NAME: &str = "workspace.git";

#[derive(Debug, Clone)]
pub struct Mirror {
    /// The directory the daemon serves (`--base-path`).
    pub base: PathBuf,
    /// The bare repository inside it.
    pub repo: PathBuf,
    /// Refs as they were when the mirror was made.
    pub initial: Refs,
}

/// Ref name to object id.
pub type Refs = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RefChange {
    Created {
        name: String,
        to: String,
    },
    Moved {
        name: String,
        from: String,
        to: String,
    },
    Deleted {
        name: String,
        from: String,
    },
}

fn git(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    // The user's global and system configuration (hooks, credential helpers, aliases) has no
    // business in the mirror.
    cmd.arg("-C")
        .arg(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    cmd.env("GIT_TERMINAL_PROMPT", "0");
    cmd
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start git to {what}"))?;
    if !out.status.success() {
        bail!(
            "git failed to {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes the mirror of `workspace` inside `base`, the directory the daemon will serve (which
/// must not contain a mirror yet).
pub fn create_mirror(workspace: &Path, base: &Path) -> anyhow::Result<Mirror> {
    let is_repo = git(workspace)
        .args(["rev-parse", "--git-dir"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !is_repo {
        return Err(UserError::usage(
            format!(
                "the workspace `{}` is not a git repository, and the bottle has `git = true`",
                workspace.display()
            ),
            "run bottle from inside a repository, pass `--workspace DIR`, or set `git = false`",
        ));
    }
    let base = base.to_owned();
    let repo = base.join(REPO_NAME);
    fs_err::create_dir_all(&base)?;
    let mut clone = Command::new("git");
    clone
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["clone", "--bare", "--quiet", "--no-hardlinks", "--"])
        .arg(workspace)
        .arg(&repo);
    run(&mut clone, "mirror the workspace")?;
    // Pushes of any kind are the point: the user reviews them afterwards.
    run(
        git(&repo).args(["config", "receive.denyNonFastForwards", "false"]),
        "configure the mirror",
    )?;
    run(
        git(&repo).args(["config", "receive.denyDeletes", "false"]),
        "configure the mirror",
    )?;
    let initial = refs(&repo)?;
    Ok(Mirror {
        base,
        repo,
        initial,
    })
}

pub fn refs(repo: &Path) -> anyhow::Result<Refs> {
    let out = run(
        git(repo).args(["for-each-ref", "--format=%(objectname) %(refname)"]),
        "list refs",
    )?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(id, name)| (name.to_owned(), id.to_owned()))
        .collect())
}

/// The `git daemon` command line serving `base` on 127.0.0.1, push enabled, with `{port}` where
/// the host port goes (the runner fills it in).
///
/// `git daemon` would fork `git-daemon` and wait for it, so signals and the parent-death signal
/// the runner arranges would reach only the wrapper, and a SIGKILLed run could leave the daemon
/// behind. The shell instead replaces itself with `git-daemon` from git's own exec path: one
/// process, the one the runner started.
pub fn daemon_args(base: &Path) -> Vec<String> {
    vec![
        "sh".to_owned(),
        "-c".to_owned(),
        r#"exec "$(git --exec-path)/git-daemon" "$@""#.to_owned(),
        "git-daemon".to_owned(),
        "--reuseaddr".to_owned(),
        "--listen=127.0.0.1".to_owned(),
        format!("--port={}", crate::spec::resolved::PORT_PLACEHOLDER),
        format!("--base-path={}", base.display()),
        "--export-all".to_owned(),
        "--enable=receive-pack".to_owned(),
        "--informative-errors".to_owned(),
        base.display().to_string(),
    ]
}

/// The daemon as a command, for callers that start it themselves.
pub fn daemon_command(mirror: &Mirror, port: u16) -> Command {
    let argv: Vec<String> = daemon_args(&mirror.base)
        .iter()
        .map(|arg| arg.replace(crate::spec::resolved::PORT_PLACEHOLDER, &port.to_string()))
        .collect();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd
}

/// What the agent did to the mirror's refs. Pure.
pub fn changes(before: &Refs, after: &Refs) -> Vec<RefChange> {
    let mut out = Vec::new();
    for (name, to) in after {
        match before.get(name) {
            None => out.push(RefChange::Created {
                name: name.clone(),
                to: to.clone(),
            }),
            Some(from) if from != to => out.push(RefChange::Moved {
                name: name.clone(),
                from: from.clone(),
                to: to.clone(),
            }),
            Some(_) => {}
        }
    }
    for (name, from) in before.iter().filter(|(n, _)| !after.contains_key(*n)) {
        out.push(RefChange::Deleted {
            name: name.clone(),
            from: from.clone(),
        });
    }
    out
}

/// The command that brings the agent's created or moved refs into the user's repository, under
/// `refs/remotes/bottle/…`, so nothing of the user's is overwritten. `None` when nothing changed.
pub fn fetch_command(workspace: &Path, mirror: &Path, changes: &[RefChange]) -> Option<String> {
    let refspecs: Vec<String> = changes
        .iter()
        .filter_map(|c| match c {
            RefChange::Created { name, .. } | RefChange::Moved { name, .. } => Some(name),
            RefChange::Deleted { .. } => None,
        })
        .map(|name| {
            let short = name
                .strip_prefix("refs/heads/")
                .or_else(|| name.strip_prefix("refs/"))
                .unwrap_or(name);
            format!("{name}:refs/remotes/bottle/{short}")
        })
        .collect();
    if refspecs.is_empty() {
        return None;
    }
    let quote = |p: &Path| crate::stage::diff::shell_words(&[p.display().to_string()]);
    Some(format!(
        "git -C {} fetch {} {}",
        quote(workspace),
        quote(mirror),
        refspecs.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_changes() {
        let before = Refs::from([
            ("refs/heads/main".into(), "a".into()),
            ("refs/heads/old".into(), "b".into()),
        ]);
        let after = Refs::from([
            ("refs/heads/main".into(), "c".into()),
            ("refs/heads/new".into(), "d".into()),
        ]);
        let got = changes(&before, &after);
        assert_eq!(
            got,
            vec![
                RefChange::Moved {
                    name: "refs/heads/main".into(),
                    from: "a".into(),
                    to: "c".into()
                },
                RefChange::Created {
                    name: "refs/heads/new".into(),
                    to: "d".into()
                },
                RefChange::Deleted {
                    name: "refs/heads/old".into(),
                    from: "b".into()
                },
            ]
        );
        let cmd = fetch_command(Path::new("/w s"), Path::new("/m"), &got).unwrap();
        assert_eq!(
            cmd,
            "git -C '/w s' fetch /m refs/heads/main:refs/remotes/bottle/main refs/heads/new:refs/remotes/bottle/new"
        );
        assert_eq!(fetch_command(Path::new("/w"), Path::new("/m"), &[]), None);
    }
}
