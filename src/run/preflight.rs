//! Preflight: is this host able to run a stage? Facts are gathered in one place (`gather`, the
//! only I/O here) and judged by a pure function (`assess`), so every problem is reported at once,
//! each with its fix. A missing external-network contract in smolvm is a problem, never a reason
//! to fall back to TSI.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::gvproxy::{self, Mode, Version};
use super::smolvm;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    Missing,
    /// Found but running it failed.
    Broken {
        path: PathBuf,
        error: String,
    },
    Found {
        path: PathBuf,
        output: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `smolvm machine create --help`.
    pub smolvm: Tool,
    /// `gvproxy -version`.
    pub gvproxy: Tool,
    /// Err with the reason when a user + network + mount namespace cannot be made.
    pub namespaces: Result<(), String>,
    /// Secrets the stage names that the host's environment lacks.
    pub missing_secrets: Vec<String>,
}

/// What a run needs from the host, once preflight passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub smolvm: PathBuf,
    pub gvproxy: PathBuf,
    pub gvproxy_version: Version,
    pub mode: Mode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n    fix: {}", self.what, self.fix)
    }
}

const SMOLVM_FIX: &str = "install a smolvm with the external network contract (the joshuarli/smolvm fork, 1.9.2) and put it on PATH; bottle never runs a VM with smolvm's default TSI network";

pub fn assess(facts: &Facts) -> Result<Host, Vec<Problem>> {
    let mut problems = Vec::new();
    let smolvm = match &facts.smolvm {
        Tool::Missing => {
            problems.push(Problem {
                what: "smolvm is not on PATH".into(),
                fix: SMOLVM_FIX.into(),
            });
            None
        }
        Tool::Broken { path, error } => {
            problems.push(Problem {
                what: format!("`{} machine create --help` failed: {error}", path.display()),
                fix: SMOLVM_FIX.into(),
            });
            None
        }
        Tool::Found { path, output } => {
            let missing = smolvm::missing_contract_flags(output);
            if missing.is_empty() {
                Some(path.clone())
            } else {
                problems.push(Problem {
                    what: format!(
                        "`{}` lacks the external network contract: `machine create` has no {}",
                        path.display(),
                        missing.join(", ")
                    ),
                    fix: SMOLVM_FIX.into(),
                });
                None
            }
        }
    };
    let gvproxy_fix = "install gvproxy: on Debian `apt-get install gvproxy` (trixie or newer), or a release of containers/gvisor-tap-vsock; put it on PATH";
    let gvproxy = match &facts.gvproxy {
        Tool::Missing => {
            problems.push(Problem {
                what: "gvproxy is not on PATH".into(),
                fix: gvproxy_fix.into(),
            });
            None
        }
        Tool::Broken { path, error } => {
            problems.push(Problem {
                what: format!("`{} -version` failed: {error}", path.display()),
                fix: gvproxy_fix.into(),
            });
            None
        }
        Tool::Found { path, output } => match gvproxy::parse_version(output) {
            Some(version) => Some((path.clone(), version)),
            None => {
                problems.push(Problem {
                    what: format!(
                        "`{} -version` printed no version: {:?}",
                        path.display(),
                        output.trim()
                    ),
                    fix: gvproxy_fix.into(),
                });
                None
            }
        },
    };
    if let Err(reason) = &facts.namespaces {
        problems.push(Problem {
            what: format!("cannot create a user + network + mount namespace for gvproxy: {reason}"),
            fix: "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0; on Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0)".into(),
        });
    }
    for secret in &facts.missing_secrets {
        problems.push(Problem {
            what: format!("the secret `{secret}` is not set in this environment"),
            fix: format!("export {secret}=… before `bottle run` (it is passed to smolvm through its environment only)"),
        });
    }
    match (smolvm, gvproxy) {
        (Some(smolvm), Some((gvproxy, version))) if problems.is_empty() => Ok(Host {
            smolvm,
            gvproxy,
            gvproxy_version: version,
            mode: Mode::for_version(version),
        }),
        _ => Err(problems),
    }
}

/// Finds `name` on `PATH` like a shell would: the first executable file.
pub fn which(name: &str, path: Option<OsString>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = path?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn probe(name: &str, args: &[&str]) -> Tool {
    let Some(path) = which(name, std::env::var_os("PATH")) else {
        return Tool::Missing;
    };
    match Command::new(&path).args(args).stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => Tool::Found {
            path,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        },
        Ok(out) => Tool::Broken {
            path,
            error: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        },
        Err(e) => Tool::Broken {
            path,
            error: e.to_string(),
        },
    }
}

/// Really creates the namespaces, in a child that does nothing else.
fn namespaces() -> Result<(), String> {
    let mut command = Command::new(Path::new("/bin/true"));
    // SAFETY: unshare is a plain system call, safe between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match command.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("a test child exited with {status}")),
        Err(e) => Err(e.to_string()),
    }
}

pub fn gather(secrets: &[String]) -> Facts {
    Facts {
        smolvm: probe("smolvm", &smolvm::help_args()),
        gvproxy: probe("gvproxy", &gvproxy::version_args()),
        namespaces: namespaces(),
        missing_secrets: secrets
            .iter()
            .filter(|name| std::env::var_os(name).is_none())
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Facts {
        Facts {
            smolvm: Tool::Found {
                path: "/bin/smolvm".into(),
                output: smolvm::EXTERNAL_NETWORK_FLAGS.join("\n"),
            },
            gvproxy: Tool::Found {
                path: "/bin/gvproxy".into(),
                output: "gvproxy version v0.8.1".into(),
            },
            namespaces: Ok(()),
            missing_secrets: vec![],
        }
    }

    #[test]
    fn a_good_host_gives_legacy_mode_for_0_8_1() {
        let host = assess(&good()).unwrap();
        assert_eq!(host.mode, Mode::Legacy);
        assert_eq!(host.gvproxy_version, Version(0, 8, 1));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let facts = Facts {
            smolvm: Tool::Found {
                path: "/bin/smolvm".into(),
                output: "--net --net-backend".into(),
            },
            gvproxy: Tool::Missing,
            namespaces: Err("EPERM".into()),
            missing_secrets: vec!["API_KEY".into()],
        };
        let problems = assess(&facts).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0]
            .what
            .contains("lacks the external network contract"));
        assert!(problems[1].what.contains("gvproxy is not on PATH"));
        assert!(problems[2].what.contains("namespace"));
        assert!(problems[3].what.contains("API_KEY"));
    }

    #[test]
    fn a_missing_smolvm_is_its_own_problem() {
        let facts = Facts {
            smolvm: Tool::Missing,
            ..good()
        };
        let problems = assess(&facts).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].what.contains("smolvm is not on PATH"));
    }
}
