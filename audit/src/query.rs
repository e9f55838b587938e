//! `keyless audit query`: certificates (and optionally refusals, intents and abandoned
//! issuances) from the issuance record,
//! filtered by identity, issuer, repository, workflow, trigger, time or serial, as a table, CSV
//! or JSON.

use keyless_ca::Serial;
use serde_json::json;

use crate::record::{Decision, Record};
use crate::{glob, san_matches};

/// Sigstore extensions the filters look at.
const REPOSITORY: &[&str] = &["1.3.6.1.4.1.57264.1.12", "1.3.6.1.4.1.57264.1.5"];
const WORKFLOW: &[&str] = &[
    "1.3.6.1.4.1.57264.1.9",
    "1.3.6.1.4.1.57264.1.18",
    "1.3.6.1.4.1.57264.1.4",
];
const TRIGGER: &[&str] = &["1.3.6.1.4.1.57264.1.20", "1.3.6.1.4.1.57264.1.2"];

/// What to select. Every set field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Glob over the SAN (`alice@*`, `https://github.com/acme/*`).
    pub identity: Option<String>,
    /// Exact OIDC issuer URL.
    pub issuer: Option<String>,
    /// Glob over the source repository (1.12 URI, or 1.5 `owner/name`).
    pub repository: Option<String>,
    /// Glob over the workflow (1.9 build signer URI, 1.18 build config URI, or 1.4 name).
    pub workflow: Option<String>,
    /// Exact trigger (`push`, `workflow_dispatch`, ...; 1.20 or 1.2).
    pub trigger: Option<String>,
    /// From this time (ms since the epoch), inclusive.
    pub since_ms: Option<u64>,
    /// Before this time (ms since the epoch).
    pub until_ms: Option<u64>,
    /// Serial number (hex as [`Serial::parse_hex`] reads it: case, `0x`, colons and leading
    /// zeros ignored; text that is not hex selects nothing).
    pub serial: Option<String>,
    /// Include refused requests.
    pub rejected: bool,
    /// Include `intent` and `abandoned` records (issuances announced before CT logging, and
    /// those that did not complete).
    pub intents: bool,
}

fn any_ext(r: &Record, oids: &[&str], pattern: &str) -> bool {
    oids.iter().filter_map(|o| r.extension(o)).any(|v| glob(pattern, v))
}

impl Filter {
    /// True when `r` is selected.
    pub fn matches(&self, r: &Record) -> bool {
        let shown = match r.decision {
            Decision::Issued => true,
            Decision::Rejected => self.rejected,
            Decision::Intent | Decision::Abandoned => self.intents,
        };
        if !shown {
            return false;
        }
        let san = r.san();
        if let Some(p) = &self.identity {
            let hit = match san {
                Some(san) => san_matches(p, san),
                None => r.subject.as_deref().is_some_and(|s| glob(p, s)),
            };
            if !hit {
                return false;
            }
        }
        if let Some(i) = &self.issuer
            && r.issuer.as_deref() != Some(i.as_str())
        {
            return false;
        }
        if let Some(p) = &self.repository
            && !any_ext(r, REPOSITORY, p)
        {
            return false;
        }
        if let Some(p) = &self.workflow
            && !any_ext(r, WORKFLOW, p)
        {
            return false;
        }
        if let Some(t) = &self.trigger
            && !TRIGGER.iter().filter_map(|o| r.extension(o)).any(|v| v == t)
        {
            return false;
        }
        if self.since_ms.is_some_and(|t| r.time_ms < t) || self.until_ms.is_some_and(|t| r.time_ms >= t) {
            return false;
        }
        if let Some(s) = &self.serial {
            let want = Serial::parse_hex(s);
            if want.is_none() || r.serial().and_then(Serial::parse_hex) != want {
                return false;
            }
        }
        true
    }
}

/// The selected records, in record order.
pub fn select<'a>(records: &'a [Record], filter: &Filter) -> Vec<&'a Record> {
    records.iter().filter(|r| filter.matches(r)).collect()
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// A JSON array of full records.
    Json,
}

/// RFC 3339 UTC time of a millisecond timestamp.
pub fn rfc3339(ms: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

const COLUMNS: [&str; 8] = [
    "seq",
    "time",
    "decision",
    "issuer",
    "identity",
    "serial",
    "repository",
    "reason",
];

fn row(r: &Record) -> [String; 8] {
    [
        r.seq.to_string(),
        rfc3339(r.time_ms),
        r.decision.as_str().into(),
        r.issuer.clone().unwrap_or_default(),
        r.san().or(r.subject.as_deref()).unwrap_or_default().to_string(),
        r.serial().unwrap_or_default().to_string(),
        REPOSITORY
            .iter()
            .find_map(|o| r.extension(o))
            .unwrap_or_default()
            .to_string(),
        r.rejection.as_ref().map(|j| j.class.clone()).unwrap_or_default(),
    ]
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Renders the selection.
pub fn render(records: &[&Record], format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(&json!(records)).unwrap_or_default() + "\n",
        Format::Csv => {
            let mut out = COLUMNS.join(",") + "\n";
            for r in records {
                out += &row(r).iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
                out.push('\n');
            }
            out
        }
        Format::Table => {
            let rows: Vec<[String; 8]> = records.iter().map(|r| row(r)).collect();
            let mut widths = COLUMNS.map(str::len);
            for r in &rows {
                for (w, f) in widths.iter_mut().zip(r) {
                    *w = (*w).max(f.chars().count());
                }
            }
            let line = |fields: Vec<&str>| {
                fields
                    .iter()
                    .zip(widths)
                    .map(|(f, w)| format!("{f:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
                    + "\n"
            };
            let mut out = line(COLUMNS.to_vec());
            for r in &rows {
                out += &line(r.iter().map(String::as_str).collect());
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{CertificateFacts, Extension, Rejection};

    fn issued(seq: u64, san: &str, repo: &str, trigger: &str) -> Record {
        Record {
            seq,
            time_ms: 1_000 * seq,
            request_id: format!("r{seq}"),
            issuer: Some("https://token.actions.githubusercontent.com".into()),
            subject: Some(san.into()),
            claims_sha256: None,
            key_sha256: None,
            decision: Decision::Issued,
            rule: "github-workflow".into(),
            certificate: Some(CertificateFacts {
                serial: format!("{:x}", 0xabc + seq),
                sha256: String::new(),
                san: format!("uri:{san}"),
                extensions: vec![
                    Extension {
                        oid: "1.3.6.1.4.1.57264.1.12".into(),
                        name: "Source Repository URI".into(),
                        value: repo.into(),
                        critical: false,
                    },
                    Extension {
                        oid: "1.3.6.1.4.1.57264.1.20".into(),
                        name: "Build Trigger".into(),
                        value: trigger.into(),
                        critical: false,
                    },
                ],
                not_before: 0,
                not_after: 600,
                sct_log_id: None,
                sct_timestamp: None,
                leaf_index: None,
                der: String::new(),
            }),
            rejection: None,
            intent: None,
            intent_seq: None,
        }
    }

    #[test]
    fn filters_combine_and_refusals_are_opt_in() {
        let mut rejected = issued(3, "x", "y", "push");
        rejected.decision = Decision::Rejected;
        rejected.certificate = None;
        rejected.rejection = Some(Rejection {
            class: "policy".into(),
            message: "denied, with \"quotes\", and commas".into(),
        });
        let records = vec![
            issued(
                0,
                "https://github.com/acme/app/.github/workflows/r.yml@refs/heads/main",
                "https://github.com/acme/app",
                "push",
            ),
            issued(
                1,
                "https://github.com/acme/lib/.github/workflows/r.yml@refs/tags/v1",
                "https://github.com/acme/lib",
                "release",
            ),
            issued(
                2,
                "https://github.com/evil/app/.github/workflows/r.yml@refs/heads/main",
                "https://github.com/evil/app",
                "push",
            ),
            rejected,
        ];
        let f = Filter {
            repository: Some("https://github.com/acme/*".into()),
            ..Filter::default()
        };
        assert_eq!(select(&records, &f).iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1]);
        let f = Filter {
            trigger: Some("push".into()),
            identity: Some("https://github.com/*/app/*".into()),
            ..Filter::default()
        };
        assert_eq!(select(&records, &f).iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 2]);
        let f = Filter {
            since_ms: Some(1_000),
            until_ms: Some(2_000),
            ..Filter::default()
        };
        assert_eq!(select(&records, &f).iter().map(|r| r.seq).collect::<Vec<_>>(), [1]);
        let f = Filter {
            serial: Some("0x0ABD".into()),
            ..Filter::default()
        };
        assert_eq!(select(&records, &f).iter().map(|r| r.seq).collect::<Vec<_>>(), [1]);
        let all = Filter {
            rejected: true,
            ..Filter::default()
        };
        let csv = render(&select(&records, &all), Format::Csv);
        assert_eq!(csv.lines().count(), 5);
        assert!(csv.lines().last().unwrap().ends_with(",policy"));
        let table = render(&select(&records, &Filter::default()), Format::Table);
        assert!(table.starts_with("seq  time"));
        let json: serde_json::Value = serde_json::from_str(&render(&select(&records, &all), Format::Json)).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 4);
    }

    #[test]
    fn intents_and_abandoned_issuances_are_shown_only_when_asked_for() {
        let mut intent = issued(1, "x", "y", "push");
        intent.decision = Decision::Intent;
        intent.certificate = None;
        intent.intent = Some(crate::record::Intent {
            serial: "5eed".into(),
            tbs_sha256: "00".repeat(32),
            san: "email:alice@example.com".into(),
            not_before: 0,
            not_after: 600,
            log: "https://ct.example".into(),
        });
        let mut abandoned = intent.clone();
        abandoned.seq = 2;
        abandoned.decision = Decision::Abandoned;
        abandoned.intent_seq = Some(1);
        abandoned.rejection = Some(Rejection {
            class: "ct_log".into(),
            message: "CT log unavailable".into(),
        });
        let records = vec![issued(0, "https://github.com/acme/app", "r", "push"), intent, abandoned];
        let seqs = |f: &Filter| select(&records, f).iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&Filter::default()), [0], "issued only by default");
        let all = Filter {
            intents: true,
            ..Filter::default()
        };
        assert_eq!(seqs(&all), [0, 1, 2]);
        let by_serial = Filter {
            intents: true,
            serial: Some("0x5EED".into()),
            ..Filter::default()
        };
        assert_eq!(seqs(&by_serial), [1, 2]);
        // Serials are compared as `Serial`s: the colon form finds them too, non-hex finds nothing.
        for (text, want) in [("00:5e:ed", vec![1, 2]), ("5eedx", vec![]), ("", vec![])] {
            let f = Filter {
                intents: true,
                serial: Some(text.into()),
                ..Filter::default()
            };
            assert_eq!(seqs(&f), want, "{text:?}");
        }
        let by_identity = Filter {
            intents: true,
            identity: Some("alice@*".into()),
            ..Filter::default()
        };
        assert_eq!(seqs(&by_identity), [1, 2]);
        let csv = render(&select(&records, &all), Format::Csv);
        let lines: Vec<&str> = csv.lines().collect();
        assert!(
            lines[2].contains(",intent,") && lines[2].contains("email:alice@example.com,5eed,"),
            "{csv}"
        );
        assert!(
            lines[3].contains(",abandoned,") && lines[3].ends_with(",ct_log"),
            "{csv}"
        );
    }
}
