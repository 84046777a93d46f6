//! Differences between two stages: first what changed in meaning (resources, image, command,
//! environment, egress, sidecars), then the line diff of every file that differs.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::Stage;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    Changed {
        what: String,
        before: String,
        after: String,
    },
    Added {
        what: String,
        value: String,
    },
    Removed {
        what: String,
        value: String,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Changed {
                what,
                before,
                after,
            } => write!(f, "~ {what}: {before} -> {after}"),
            Change::Added { what, value } => write!(f, "+ {what}: {value}"),
            Change::Removed { what, value } => write!(f, "- {what}: {value}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileDiff {
    pub file: String,
    pub unified: String,
}

pub fn summary(a: &Stage, b: &Stage) -> Vec<Change> {
    let mut changes = Vec::new();
    let (sa, sb) = (&a.spec, &b.spec);
    let mut scalar = |what: &str, before: String, after: String| {
        if before != after {
            changes.push(Change::Changed {
                what: what.to_owned(),
                before,
                after,
            });
        }
    };
    scalar("agent", sa.agent.clone(), sb.agent.clone());
    scalar("image", sa.image.clone(), sb.image.clone());
    scalar(
        "command",
        shell_words(&sa.command),
        shell_words(&sb.command),
    );
    scalar("workdir", sa.workdir.clone(), sb.workdir.clone());
    scalar("cpus", sa.cpus.to_string(), sb.cpus.to_string());
    scalar(
        "memory",
        format!("{} MiB", sa.memory_mib),
        format!("{} MiB", sb.memory_mib),
    );
    scalar("git", sa.git.to_string(), sb.git.to_string());
    let supervise = |s: &Stage| {
        s.spec
            .supervise
            .as_ref()
            .map_or("none".to_owned(), |s| shell_words(&s.command))
    };
    scalar("supervise", supervise(a), supervise(b));
    scalar(
        "subnet",
        a.plan.network.subnet.clone(),
        b.plan.network.subnet.clone(),
    );

    map_changes(&mut changes, "env", &sa.env, &sb.env);
    set_changes(
        &mut changes,
        "secret",
        sa.secrets.iter().cloned().collect(),
        sb.secrets.iter().cloned().collect(),
    );
    set_changes(
        &mut changes,
        "egress",
        sa.egress.allow.iter().map(|p| p.to_string()).collect(),
        sb.egress.allow.iter().map(|p| p.to_string()).collect(),
    );
    let sidecars = |s: &Stage| -> BTreeMap<String, String> {
        s.plan
            .sidecars
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    match &c.command {
                        Some(cmd) => format!(
                            "guest port {}, host port {}, runs {}",
                            c.guest_port,
                            c.host_port,
                            shell_words(cmd)
                        ),
                        None => format!("guest port {}, host port {}", c.guest_port, c.host_port),
                    },
                )
            })
            .collect()
    };
    map_changes(&mut changes, "sidecar", &sidecars(a), &sidecars(b));
    changes
}

fn map_changes(
    out: &mut Vec<Change>,
    kind: &str,
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) {
    for (key, before) in a {
        match b.get(key) {
            None => out.push(Change::Removed {
                what: format!("{kind} {key}"),
                value: before.clone(),
            }),
            Some(after) if after != before => out.push(Change::Changed {
                what: format!("{kind} {key}"),
                before: before.clone(),
                after: after.clone(),
            }),
            Some(_) => {}
        }
    }
    for (key, after) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
        out.push(Change::Added {
            what: format!("{kind} {key}"),
            value: after.clone(),
        });
    }
}

fn set_changes(out: &mut Vec<Change>, kind: &str, a: BTreeSet<String>, b: BTreeSet<String>) {
    for gone in a.difference(&b) {
        out.push(Change::Removed {
            what: kind.to_owned(),
            value: gone.clone(),
        });
    }
    for new in b.difference(&a) {
        out.push(Change::Added {
            what: kind.to_owned(),
            value: new.clone(),
        });
    }
}

/// Unified diffs of the files that differ, in file-name order.
pub fn file_diffs(a: &Stage, b: &Stage) -> Vec<FileDiff> {
    let names: BTreeSet<&str> = a.files.iter().chain(&b.files).map(|(n, _)| *n).collect();
    let mut diffs = Vec::new();
    for name in names {
        let before = String::from_utf8_lossy(a.file(name).unwrap_or_default());
        let after = String::from_utf8_lossy(b.file(name).unwrap_or_default());
        if before == after {
            continue;
        }
        let unified = similar::TextDiff::from_lines(before.as_ref(), after.as_ref())
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{}/{name}", a.id), &format!("b/{}/{name}", b.id))
            .to_string();
        diffs.push(FileDiff {
            file: name.to_owned(),
            unified,
        });
    }
    diffs
}

/// A command line as a person would type it, quoting only where needed.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,{}".contains(c));
            if plain {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
