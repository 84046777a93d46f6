//! Verification: a stage is intact when re-rendering it from its own `spec.json` gives every
//! file byte for byte, the id is the hash of that `spec.json`, and the digests in `plan.json`
//! match the files. Anything else (a missing, extra, changed or unreadable file) is a problem,
//! and a stage with a problem is never launched.

use std::collections::BTreeMap;
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

/// Verifies a stage in the store.
pub fn verify(store: &Store, id: &StageId) -> Report {
    let dir = store.stage_dir(id);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            let file = dir.display().to_string();
            let problems = vec![Problem::Unreadable {
                file,
                error: e.to_string(),
            }];
            return Report {
                id: *id,
                stage: None,
                problems,
            };
        }
    };
    let mut files = Files::new();
    let mut problems = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        match std::fs::read(entry.path()) {
            Ok(bytes) => {
                files.insert(name, bytes);
            }
            Err(e) => problems.push(Problem::Unreadable {
                file: name,
                error: e.to_string(),
            }),
        }
    }
    let mut report = verify_files(id, &files);
    problems.append(&mut report.problems);
    report.problems = problems;
    report
}

/// A stage's files by name, as read from a directory or an archive.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Verifies a stage given as its files, wherever they came from.
pub fn verify_files(id: &StageId, files: &Files) -> Report {
    let mut problems = Vec::new();
    for extra in files
        .keys()
        .filter(|f| !render::STAGE_FILES.contains(&f.as_str()))
    {
        problems.push(Problem::Unexpected {
            file: extra.clone(),
        });
    }
    let missing = |problems: &mut Vec<Problem>, file: &str| {
        problems.push(Problem::Missing {
            file: file.to_owned(),
        });
    };
    let Some(spec_bytes) = files.get(render::SPEC_JSON) else {
        missing(&mut problems, render::SPEC_JSON);
        return Report {
            id: *id,
            stage: None,
            problems,
        };
    };
    let spec = match ResolvedSpec::from_canonical_bytes(spec_bytes) {
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
    // A file bottle writes for some stages, but not for this one.
    for extra in files
        .keys()
        .filter(|f| render::STAGE_FILES.contains(&f.as_str()) && expected.file(f).is_none())
    {
        problems.push(Problem::Unexpected {
            file: extra.clone(),
        });
    }
    if expected.id != *id {
        problems.push(Problem::IdMismatch {
            computed: expected.id,
        });
    }
    for (name, want) in &expected.files {
        match files.get(*name) {
            None => missing(&mut problems, name),
            Some(got) if got != want => problems.push(Problem::Differs {
                file: (*name).to_owned(),
            }),
            Some(_) => {}
        }
    }
    // The digests are checked on their own so that a report says whether plan.json was edited
    // along with a file or the file alone.
    if let Some(plan_bytes) = files.get(render::PLAN_JSON) {
        match plan::parse(plan_bytes) {
            Ok(recorded) => {
                let others = expected
                    .files
                    .iter()
                    .map(|(n, _)| *n)
                    .filter(|n| *n != render::PLAN_JSON);
                for name in others {
                    let Some(bytes) = files.get(name) else {
                        continue;
                    };
                    if recorded.files.get(name) != Some(&plan::digest(bytes)) {
                        problems.push(Problem::DigestMismatch {
                            file: name.to_owned(),
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
