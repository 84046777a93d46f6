//! The audit log: one JSON line per egress decision, and the per-host summary that `bottle egress`
//! prints. Owns the record's format (serde both ways); knows nothing of HTTP or sockets.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The policy allowed it and the proxy connected.
    Allowed,
    /// The policy or a limit said no.
    Refused,
    /// Allowed, but the upstream could not be resolved or reached.
    Failed,
}

/// One decision. Field names are the log's format: add fields, never rename or remove them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, UTC, milliseconds: when the request arrived.
    pub time: String,
    /// `CONNECT`, `GET`, ...; empty when the request could not be parsed.
    pub method: String,
    /// The host asked for, normalised; empty when there was none.
    pub host: String,
    pub port: Option<u16>,
    /// The address connected to, or the one that caused a refusal.
    pub address: Option<IpAddr>,
    pub outcome: Outcome,
    /// A short code: `not_listed`, `ip_literal`, `restricted_address`, `header_too_large`, ...
    pub reason: Option<String>,
    /// The line the client was sent, for refusals and failures.
    pub message: Option<String>,
    /// The status the proxy answered with (200 for an open tunnel, the upstream's for HTTP).
    pub status: Option<u16>,
    /// Bytes from the client to the upstream (request body or tunnel traffic).
    pub bytes_up: u64,
    /// Bytes from the upstream to the client.
    pub bytes_down: u64,
    pub duration_ms: u64,
    /// The client's address, for telling agents' connections apart.
    pub client: Option<String>,
}

/// Where records go: a file opened for appending, or stderr. Each record is written with one
/// `write` call and flushed, so lines from concurrent requests never interleave.
pub struct AuditLog {
    sink: Mutex<Box<dyn Write + Send>>,
}

impl AuditLog {
    pub fn stderr() -> AuditLog {
        AuditLog {
            sink: Mutex::new(Box::new(std::io::stderr())),
        }
    }

    pub fn append_to(path: &Path) -> anyhow::Result<AuditLog> {
        let file = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("failed to open the egress log `{}`", path.display()))?;
        Ok(AuditLog {
            sink: Mutex::new(Box::new(file)),
        })
    }

    /// Writes one line. A failing log is reported on stderr once per failure and does not stop
    /// the proxy; the decision itself has already been enforced.
    pub fn write(&self, record: &Record) {
        let mut line = serde_json::to_vec(record).expect("a record always serialises");
        line.push(b'\n');
        let mut sink = self
            .sink
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(e) = sink.write_all(&line).and_then(|()| sink.flush()) {
            eprintln!("bottle proxy: failed to write the egress log: {e}");
        }
    }
}

/// `time` as RFC 3339 in UTC with milliseconds: `2026-11-27T03:21:40.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar, counting in
/// 400-year eras of 146,097 days whose years start in March (so leap days fall at the end).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One host's line in `bottle egress`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostSummary {
    pub host: String,
    pub port: Option<u16>,
    /// CONNECT (true) or plain HTTP (false): the default port of a pattern differs.
    pub tunnel: bool,
    pub allowed: u64,
    pub refused: u64,
    pub failed: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Refusal and failure codes with how often each occurred.
    pub reasons: BTreeMap<String, u64>,
    /// The last message the client was sent, for refusals and failures.
    pub last_message: Option<String>,
    pub last_time: String,
}

/// What a log file held: the records, and the lines that were not records (counted, not fatal,
/// so that a log with another component's lines in it still summarises).
#[derive(Debug, Default)]
pub struct ParsedLog {
    pub records: Vec<Record>,
    pub skipped: Vec<usize>,
}

pub fn parse_log(text: &str) -> ParsedLog {
    let mut parsed = ParsedLog::default();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(record) => parsed.records.push(record),
            Err(_) => parsed.skipped.push(index + 1),
        }
    }
    parsed
}

/// Groups records by host, port and CONNECT or not, sorted in that order. Pure.
pub fn summarize(records: &[Record]) -> Vec<HostSummary> {
    let mut by_host: BTreeMap<(String, Option<u16>, bool), HostSummary> = BTreeMap::new();
    for r in records {
        let tunnel = r.method == "CONNECT";
        let entry = by_host
            .entry((r.host.clone(), r.port, tunnel))
            .or_insert_with(|| HostSummary {
                host: r.host.clone(),
                port: r.port,
                tunnel,
                ..HostSummary::default()
            });
        match r.outcome {
            Outcome::Allowed => entry.allowed += 1,
            Outcome::Refused => entry.refused += 1,
            Outcome::Failed => entry.failed += 1,
        }
        entry.bytes_up += r.bytes_up;
        entry.bytes_down += r.bytes_down;
        if r.outcome != Outcome::Allowed {
            if let Some(reason) = &r.reason {
                *entry.reasons.entry(reason.clone()).or_default() += 1;
            }
            if r.message.is_some() {
                entry.last_message.clone_from(&r.message);
            }
        }
        if r.time > entry.last_time {
            entry.last_time.clone_from(&r.time);
        }
    }
    by_host.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_times() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_000 + 7); // a leap day
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.007Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_750_525); // 2026-11-27 03:35:25
        assert_eq!(rfc3339(t), "2026-11-27T03:35:25.000Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_107_542_399); // the day before 2100-03-01 (2100 is not a leap year)
        assert_eq!(rfc3339(t), "2100-02-28T23:59:59.000Z");
    }

    fn record(host: &str, outcome: Outcome, reason: Option<&str>, up: u64, down: u64) -> Record {
        Record {
            time: "2026-01-01T00:00:00.000Z".into(),
            method: "CONNECT".into(),
            host: host.into(),
            port: Some(443),
            address: None,
            outcome,
            reason: reason.map(str::to_owned),
            message: reason.map(|r| format!("because {r}")),
            status: None,
            bytes_up: up,
            bytes_down: down,
            duration_ms: 1,
            client: None,
        }
    }

    #[test]
    fn summarises_per_host() {
        let records = vec![
            record("b.test", Outcome::Allowed, None, 10, 100),
            record("a.test", Outcome::Refused, Some("not_listed"), 0, 0),
            record("b.test", Outcome::Allowed, None, 1, 2),
            record("a.test", Outcome::Refused, Some("not_listed"), 0, 0),
            record("b.test", Outcome::Failed, Some("connect_failed"), 0, 0),
        ];
        let summary = summarize(&records);
        assert_eq!(summary.len(), 2);
        assert_eq!(summary[0].host, "a.test");
        assert_eq!(summary[0].refused, 2);
        assert_eq!(summary[0].reasons.get("not_listed"), Some(&2));
        assert_eq!(summary[1].allowed, 2);
        assert_eq!(summary[1].failed, 1);
        assert_eq!((summary[1].bytes_up, summary[1].bytes_down), (11, 102));
        assert_eq!(
            summary[1].last_message.as_deref(),
            Some("because connect_failed")
        );
    }

    #[test]
    fn records_round_trip_and_junk_lines_are_counted() {
        let r = record("a.test", Outcome::Refused, Some("ip_literal"), 0, 0);
        let line = serde_json::to_string(&r).unwrap();
        let parsed = parse_log(&format!("{line}\nnot json\n\n{line}\n"));
        assert_eq!(parsed.records, vec![r.clone(), r]);
        assert_eq!(parsed.skipped, vec![2]);
    }
}
