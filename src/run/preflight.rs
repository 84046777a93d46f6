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
    /// `pipelock version`, asked only when the stage's egress engine is pipelock.
    pub pipelock: Option<Tool>,
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
    let pipelock_fix = format!(
        "install pipelock {} (github.com/luckyPipewrench/pipelock) and put it on PATH, or use the built-in egress engine",
        crate::render::pipelock::PIPELOCK_VERSION
    );
    match &facts.pipelock {
        None => {}
        Some(Tool::Missing) => problems.push(Problem {
            what: "the stage's egress engine is pipelock, and pipelock is not on PATH".into(),
            fix: pipelock_fix,
        }),
        Some(Tool::Broken { path, error }) => problems.push(Problem {
            what: format!("`{} version` failed: {error}", path.display()),
            fix: pipelock_fix,
        }),
        // The rendered file follows one version's schema, which refuses unknown keys.
        Some(Tool::Found { path, output })
            if !output.contains(crate::render::pipelock::PIPELOCK_VERSION) =>
        {
            problems.push(Problem {
                what: format!(
                    "`{}` is not pipelock {}: it says {:?}",
                    path.display(),
                    crate::render::pipelock::PIPELOCK_VERSION,
                    output.trim()
                ),
                fix: pipelock_fix,
            })
        }
        Some(Tool::Found { .. }) => {}
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

/// A tool being asked, or already answered from the cache.
enum Pending {
    Done(Tool),
    Asking {
        path: PathBuf,
        key: String,
        child: std::process::Child,
    },
}

/// Starts `name args` without waiting, unless the cache knows this exact file's answer.
fn ask(name: &str, args: &[&str], cache: &ToolCache) -> Pending {
    let Some(path) = which(name, std::env::var_os("PATH")) else {
        return Pending::Done(Tool::Missing);
    };
    let key = ToolCache::key(&path, args);
    if let Some(output) = key.as_ref().and_then(|k| cache.entries.get(k)) {
        return Pending::Done(Tool::Found {
            path,
            output: output.clone(),
        });
    }
    let mut command = Command::new(&path);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    super::procs::clean_signal_mask(&mut command);
    match command.spawn() {
        Ok(child) => Pending::Asking {
            path,
            key: key.unwrap_or_default(),
            child,
        },
        Err(e) => Pending::Done(Tool::Broken {
            path,
            error: e.to_string(),
        }),
    }
}

fn answer(pending: Pending, cache: &mut ToolCache) -> Tool {
    let (path, key, child) = match pending {
        Pending::Done(tool) => return tool,
        Pending::Asking { path, key, child } => (path, key, child),
    };
    match child.wait_with_output() {
        Ok(out) if out.status.success() => {
            let output = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if !key.is_empty() {
                // One answer per path and question: a replaced file drops its old entry.
                let question = key.split(" | ").next().unwrap_or_default().to_owned();
                cache
                    .entries
                    .retain(|k, _| k.split(" | ").next() != Some(question.as_str()));
                cache.entries.insert(key, output.clone());
                cache.changed = true;
            }
            Tool::Found { path, output }
        }
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

/// What `smolvm machine create --help` and `gvproxy -version` printed, per exact file (path,
/// device, inode, size, modification and change times): asking gvproxy costs tens of
/// milliseconds, and any change to the file gives a new key. Kept in the private run base.
#[derive(Default)]
struct ToolCache {
    file: Option<PathBuf>,
    entries: std::collections::BTreeMap<String, String>,
    changed: bool,
}

impl ToolCache {
    fn load(file: Option<&Path>) -> ToolCache {
        let entries = file
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        ToolCache {
            file: file.map(Path::to_owned),
            entries,
            changed: false,
        }
    }

    fn key(path: &Path, args: &[&str]) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(format!(
            "{} {} | {}:{}:{}:{}.{}:{}.{}",
            path.display(),
            args.join(" "),
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ))
    }

    /// Best effort: a cache that cannot be written only costs time next run.
    fn save(&self) {
        if let (true, Some(file)) = (self.changed, &self.file) {
            if let Ok(bytes) = serde_json::to_vec_pretty(&self.entries) {
                let tmp = file.with_extension("json.tmp");
                if std::fs::write(&tmp, bytes).is_ok() {
                    let _ = std::fs::rename(&tmp, file);
                }
            }
        }
    }
}

/// Starts a child that creates the namespaces and exits.
fn ask_namespaces() -> std::io::Result<std::process::Child> {
    let mut command = Command::new(Path::new("/bin/true"));
    super::procs::clean_signal_mask(&mut command);
    // SAFETY: unshare is a plain system call, safe between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Gathers every fact at once: the three checks run side by side. `cache` is the file of
/// remembered tool answers (None for a dry run, which writes nothing).
pub fn gather(secrets: &[String], needs_pipelock: bool, cache: Option<&Path>) -> Facts {
    let mut tools = ToolCache::load(cache);
    let pipelock = needs_pipelock.then(|| ask("pipelock", &["version"], &tools));
    let namespaces = ask_namespaces();
    let smolvm = ask("smolvm", &smolvm::help_args(), &tools);
    let gvproxy = ask("gvproxy", &gvproxy::version_args(), &tools);
    let namespaces = match namespaces.and_then(|child| child.wait_with_output()) {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("a test child exited with {}", out.status)),
        Err(e) => Err(e.to_string()),
    };
    let facts = Facts {
        smolvm: answer(smolvm, &mut tools),
        gvproxy: answer(gvproxy, &mut tools),
        namespaces,
        missing_secrets: secrets
            .iter()
            .filter(|name| std::env::var_os(name).is_none())
            .cloned()
            .collect(),
        pipelock: pipelock.map(|asked| answer(asked, &mut tools)),
    };
    tools.save();
    facts
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
            pipelock: None,
        }
    }

    #[test]
    fn pipelock_is_checked_only_when_the_stage_uses_it_and_must_be_the_pinned_version() {
        let missing = Facts {
            pipelock: Some(Tool::Missing),
            ..good()
        };
        let problems = assess(&missing).unwrap_err();
        assert!(
            problems[0].what.contains("pipelock is not on PATH"),
            "{problems:?}"
        );
        let other = Facts {
            pipelock: Some(Tool::Found {
                path: "/bin/pipelock".into(),
                output: "pipelock 3.4.0".into(),
            }),
            ..good()
        };
        assert!(assess(&other).unwrap_err()[0]
            .what
            .contains("is not pipelock 2.3.0"));
        let right = Facts {
            pipelock: Some(Tool::Found {
                path: "/bin/pipelock".into(),
                output: "pipelock 2.3.0".into(),
            }),
            ..good()
        };
        assert!(assess(&right).is_ok());
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
            pipelock: None,
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
