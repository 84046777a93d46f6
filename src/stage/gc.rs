//! Garbage collection: remove stages that are neither pinned, in use by a run, nor newer than a
//! bound, and temporary directories left by crashed writers. Deciding is pure (`plan`); removing
//! takes each stage's lock, so a stage a run holds is never removed.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use fs_err as fs;
use serde::Serialize;

use super::store::TMP_PREFIX;
use super::{pins, StageId, Store};

/// Temporary directories younger than this may belong to a writer still at work.
const TMP_GRACE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: StageId,
    pub modified: SystemTime,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    Pinned,
    Recent,
    InUse,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub size: u64,
    /// `None`: removed (or, in a dry run, would be).
    pub kept: Option<Keep>,
}

/// Which stages to keep and why. `keep_since`: stages modified within it are kept.
pub fn plan(
    candidates: &[Candidate],
    pinned: &BTreeSet<StageId>,
    keep_since: Option<Duration>,
    now: SystemTime,
) -> Vec<Decision> {
    candidates
        .iter()
        .map(|c| {
            let recent = keep_since
                .is_some_and(|bound| now.duration_since(c.modified).unwrap_or_default() < bound);
            let kept = if pinned.contains(&c.id) {
                Some(Keep::Pinned)
            } else if recent {
                Some(Keep::Recent)
            } else {
                None
            };
            Decision {
                id: c.id.to_string(),
                size: c.size,
                kept,
            }
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    pub decisions: Vec<Decision>,
    pub freed: u64,
    pub temporaries_removed: usize,
}

pub fn collect(
    store: &Store,
    keep_since: Option<Duration>,
    dry_run: bool,
) -> anyhow::Result<Outcome> {
    let pinned: BTreeSet<StageId> = pins::list(store)?.into_iter().map(|p| p.id).collect();
    let mut candidates = Vec::new();
    for id in store.ids()? {
        let dir = store.stage_dir(&id);
        let modified = fs::metadata(&dir)?.modified()?;
        let size = store.stage_size(&id);
        candidates.push(Candidate { id, modified, size });
    }
    let mut decisions = plan(&candidates, &pinned, keep_since, SystemTime::now());
    let mut freed = 0;
    for decision in decisions.iter_mut().filter(|d| d.kept.is_none()) {
        let id: StageId = decision.id.parse().map_err(anyhow::Error::msg)?;
        // The same lock a run holds: if it is taken, the stage is in use.
        match store.try_lock_exclusive(&id)? {
            None => decision.kept = Some(Keep::InUse),
            Some(_lock) if dry_run => freed += decision.size,
            Some(lock) => {
                store.remove(&id, lock)?;
                freed += decision.size;
            }
        }
    }
    let temporaries_removed = remove_stale_temporaries(store, dry_run)?;
    Ok(Outcome {
        decisions,
        freed,
        temporaries_removed,
    })
}

fn remove_stale_temporaries(store: &Store, dry_run: bool) -> anyhow::Result<usize> {
    let Ok(entries) = std::fs::read_dir(store.root()) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(TMP_PREFIX) {
            continue;
        }
        let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
        if age >= TMP_GRACE {
            if !dry_run {
                fs::remove_dir_all(entry.path())?;
            }
            removed += 1;
        }
    }
    Ok(removed)
}

/// `30s`, `15m`, `12h`, `7d`, `2w`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "`{text}` is not a duration: write a number and s, m, h, d or w, as in `7d`"
            ))
        }
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: it needs a number, as in `7d`"))?;
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_pinned_and_recent() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let id = |b: u8| format!("{:032x}", b).parse::<StageId>().unwrap();
        let old = now - Duration::from_secs(10 * 86_400);
        let candidates = vec![
            Candidate {
                id: id(1),
                modified: old,
                size: 10,
            },
            Candidate {
                id: id(2),
                modified: old,
                size: 20,
            },
            Candidate {
                id: id(3),
                modified: now - Duration::from_secs(60),
                size: 30,
            },
        ];
        let pinned = BTreeSet::from([id(2)]);
        let kept: Vec<_> = plan(&candidates, &pinned, Some(Duration::from_secs(3600)), now)
            .into_iter()
            .map(|d| d.kept)
            .collect();
        assert_eq!(kept, vec![None, Some(Keep::Pinned), Some(Keep::Recent)]);
        let no_bound: Vec<_> = plan(&candidates, &pinned, None, now)
            .into_iter()
            .map(|d| d.kept)
            .collect();
        assert_eq!(no_bound, vec![None, Some(Keep::Pinned), None]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("7y").is_err());
    }
}
