//! Verification: a stage is intact when re-rendering it from its own `spec.json` gives every
//! file byte for byte, the id is the hash of that `spec.json`, and the digests in `plan.json`
//! match the files. Anything else (a missing, extra, changed or unreadable file) is a problem,
//! and a stage with a problem is never launched.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use super::{build, Stage, StageId, Store};
use crate::render::{self, plan};
use crate::spec::ResolvedSpec;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    Unreadable { file: String, error: String },
    InvalidSpec { error: String },
    IdMismatch { computed: StageId },
    Missing { file: String },
    Unexpected { file: String },
    Differs { file: String },
    DigestMismatch { file: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unreadable { file, error } => write!(f, "{file}: cannot be read: {error}"),
            Problem::InvalidSpec { error } => write!(f, "{}: {error}", render::SPEC_JSON),
            Problem::IdMismatch { computed } => {
                write!(
                    f,
                    "{}: hashes to {computed}, not to the stage's name",
                    render::SPEC_JSON
                )
            }
            Problem::Missing { file } => write!(f, "{file}: missing"),
            Problem::Unexpected { file } => write!(f, "{file}: not part of a stage"),
            Problem::Differs { file } => write!(f, "{file}: differs from what its spec renders"),
            Problem::DigestMismatch { file } => {
                write!(
                    f,
                    "{file}: its digest in {} does not match",
                    render::PLAN_JSON
                )
            }
        }
    }
}

/// The stage as rebuilt from its `spec.json` when that much was readable, and every problem.
#[derive(Debug)]
pub struct Report {
    pub id: StageId,
    pub stage: Option<Stage>,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn verify(store: &Store, id: &StageId) -> Report {
    let mut problems = Vec::new();
    let dir = store.stage_dir(id);
    let present: BTreeSet<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => {
            let problem = Problem::Unreadable {
                file: dir.display().to_string(),
                error: e.to_string(),
            };
            return Report {
                id: *id,
                stage: None,
                problems: vec![problem],
            };
        }
    };
    let read = |file: &str, problems: &mut Vec<Problem>| match std::fs::read(dir.join(file)) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            problems.push(Problem::Missing {
                file: file.to_owned(),
            });
            None
        }
        Err(e) => {
            problems.push(Problem::Unreadable {
                file: file.to_owned(),
                error: e.to_string(),
            });
            None
        }
    };

    for extra in present
        .iter()
        .filter(|f| !render::STAGE_FILES.contains(&f.as_str()))
    {
        problems.push(Problem::Unexpected {
            file: extra.clone(),
        });
    }
    let Some(spec_bytes) = read(render::SPEC_JSON, &mut problems) else {
        return Report {
            id: *id,
            stage: None,
            problems,
        };
    };
    let spec = match ResolvedSpec::from_canonical_bytes(&spec_bytes) {
        Ok(spec) => spec,
        Err(invalid) => {
            problems.push(Problem::InvalidSpec {
                error: invalid.to_string(),
            });
            return Report {
                id: *id,
                stage: None,
                problems,
            };
        }
    };
    let expected = build(&spec);
    if expected.id != *id {
        problems.push(Problem::IdMismatch {
            computed: expected.id,
        });
    }
    let mut actual_files = Vec::new();
    for (name, want) in &expected.files {
        if let Some(got) = read(name, &mut problems) {
            if &got != want {
                problems.push(Problem::Differs {
                    file: (*name).to_owned(),
                });
            }
            actual_files.push((*name, got));
        }
    }
    // The digests are checked on their own so that a report says whether plan.json was edited
    // along with a file or the file alone.
    if let Some((_, plan_bytes)) = actual_files.iter().find(|(n, _)| *n == render::PLAN_JSON) {
        match plan::parse(plan_bytes) {
            Ok(recorded) => {
                for (name, bytes) in actual_files.iter().filter(|(n, _)| *n != render::PLAN_JSON) {
                    if recorded.files.get(*name) != Some(&plan::digest(bytes)) {
                        problems.push(Problem::DigestMismatch {
                            file: (*name).to_owned(),
                        });
                    }
                }
            }
            Err(error) => problems.push(Problem::Unreadable {
                file: render::PLAN_JSON.to_owned(),
                error,
            }),
        }
    }
    Report {
        id: *id,
        stage: Some(expected),
        problems,
    }
}
