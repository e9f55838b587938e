//! The issuance record against the CT logs, both ways:
//!
//! - every certificate the record says was issued and logged must be in the log its SCT names,
//!   once that log's verified tree head is past the SCT's timestamp plus a grace period;
//! - every logged certificate that chains to this CA must be in the record: one that is not was
//!   signed with the CA key outside the service.
//!
//! A logged precertificate announced by an `intent` record but never issued (the CT log or the
//! signer failed, the client went away) is reported as an abandoned issuance, apart from the
//! findings: the service knew about it. Only an entry with neither an intent nor an issued record
//! means the CA key signed something the service did not issue.
//!
//! Records and entries are matched by the TBS hash without the CT extensions
//! ([`crate::tbs::tbs_sha256_of_certificate`]), which a final certificate and its precertificate
//! entry share.

use std::collections::{HashMap, HashSet};

use base64::Engine as _;

use crate::AuditError;
use crate::index::{IndexedCert, LogIndex};
use crate::record::{Decision, Record};
use crate::tbs::tbs_sha256_of_certificate;

/// How long after its SCT a certificate may still be missing from a tree head: the log's
/// maximum merge delay plus clock skew.
pub const GRACE_MS: u64 = 60_000;

/// What the cross-check found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CrossCheckReport {
    /// Issued records examined (including those issued with CT disabled, which need no entry).
    pub records_checked: u64,
    /// Indexed log entries that chain to this CA, examined.
    pub log_certificates_checked: u64,
    /// `(record seq, serial)`: issued and logged per the record, but not in the synced log
    /// although its verified tree head is newer than the SCT timestamp plus [`GRACE_MS`].
    pub missing_from_log: Vec<(u64, String)>,
    /// Records too recent for the synced tree head of their log.
    pub not_yet_due: u64,
    /// Records whose SCT names a log that was never synced (nothing to check them against).
    pub log_not_synced: u64,
    /// In a log, chaining to this CA, with neither an issued nor an intent record: the CA key
    /// signed something the service did not issue.
    pub unrecorded: Vec<IndexedCert>,
    /// In a log, announced by an intent record, never issued: not a finding.
    pub abandoned: Vec<AbandonedEntry>,
}

/// A log entry for an issuance the record announced but did not complete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AbandonedEntry {
    /// The log entry.
    pub entry: IndexedCert,
    /// The `intent` record announcing it.
    pub intent_seq: u64,
    /// The `abandoned` record closing the intent, with `class: message`; `None`: the issuance
    /// was interrupted before any outcome was recorded (a crash, a killed request).
    pub abandoned: Option<(u64, String)>,
}

impl AbandonedEntry {
    /// `abandoned` or `interrupted`.
    pub fn outcome(&self) -> &'static str {
        if self.abandoned.is_some() {
            "abandoned"
        } else {
            "interrupted"
        }
    }

    fn line(&self) -> String {
        let c = &self.entry;
        let why = match &self.abandoned {
            Some((seq, reason)) => format!("abandoned (record {seq}: {reason})"),
            None => "interrupted: no outcome was recorded".into(),
        };
        format!(
            "note: CT log {} entry {}: {} {} for {} was announced by intent record {} and never issued: {why}",
            c.log_id,
            c.leaf_index,
            if c.entry_type == "precert" {
                "precertificate"
            } else {
                "certificate"
            },
            c.serial,
            if c.san.is_empty() { "no SAN" } else { &c.san },
            self.intent_seq,
        )
    }
}

impl CrossCheckReport {
    /// Nothing missing, nothing unrecorded.
    pub fn ok(&self) -> bool {
        self.missing_from_log.is_empty() && self.unrecorded.is_empty()
    }

    /// One line per finding (a summary line when there is none), then one note per abandoned
    /// issuance found in a log.
    pub fn lines(&self) -> Vec<String> {
        let mut out = self.finding_lines();
        out.extend(self.abandoned.iter().map(AbandonedEntry::line));
        out
    }

    fn finding_lines(&self) -> Vec<String> {
        if self.ok() {
            let mut line = format!(
                "record and CT logs agree: {} issued record(s), {} logged certificate(s) of this CA",
                self.records_checked, self.log_certificates_checked
            );
            let mut notes = Vec::new();
            if self.not_yet_due > 0 {
                notes.push(format!("{} too recent for the synced tree head", self.not_yet_due));
            }
            if self.log_not_synced > 0 {
                notes.push(format!("{} logged to a log that was never synced", self.log_not_synced));
            }
            if !self.abandoned.is_empty() {
                notes.push(format!("{} abandoned issuance(s) in the log", self.abandoned.len()));
            }
            if !notes.is_empty() {
                line.push_str(&format!(" ({})", notes.join("; ")));
            }
            return vec![line];
        }
        let mut out: Vec<String> = self
            .missing_from_log
            .iter()
            .map(|(seq, serial)| {
                format!(
                    "record {seq}: certificate {serial} was issued with an SCT but is not in that CT log, although the log's verified tree head is more than {} s newer than the SCT",
                    GRACE_MS / 1000
                )
            })
            .collect();
        out.extend(self.unrecorded.iter().map(|c| {
            format!(
                "CT log {} entry {}: {} {} for {} (issuer {}) chains to this CA but is not in the issuance record: the CA key signed something the service did not issue",
                c.log_id,
                c.leaf_index,
                if c.entry_type == "precert" { "precertificate" } else { "certificate" },
                c.serial,
                if c.san.is_empty() { "no SAN" } else { &c.san },
                if c.issuer.is_empty() { "unknown" } else { &c.issuer },
            )
        }));
        out
    }
}

/// Checks `records` (the issuance record, in order) against what `index` holds.
pub fn cross_check(records: &[Record], index: &LogIndex) -> Result<CrossCheckReport, AuditError> {
    let logged = index.certificates()?;
    let logs: HashMap<String, u64> = index.logs()?.into_iter().map(|s| (s.log_id, s.timestamp)).collect();
    // tbs hash → the logs holding it.
    let mut in_logs: HashMap<&str, HashSet<&str>> = HashMap::new();
    for c in &logged {
        in_logs.entry(&c.tbs_sha256).or_default().insert(&c.log_id);
    }
    let mut report = CrossCheckReport::default();
    let mut recorded: HashSet<String> = HashSet::new();
    // tbs hash → intent seq; intent seq → its `abandoned` record.
    let mut intents: HashMap<&str, u64> = HashMap::new();
    let mut outcomes: HashMap<u64, (u64, String)> = HashMap::new();
    for r in records {
        match r.decision {
            Decision::Intent => {
                if let Some(i) = &r.intent {
                    intents.insert(i.tbs_sha256.as_str(), r.seq);
                }
            }
            Decision::Abandoned => {
                if let Some(seq) = r.intent_seq {
                    let reason = r
                        .rejection
                        .as_ref()
                        .map(|j| format!("{}: {}", j.class, j.message))
                        .unwrap_or_else(|| "no reason recorded".into());
                    outcomes.insert(seq, (r.seq, reason));
                }
            }
            _ => {}
        }
    }
    for r in records {
        if r.decision != Decision::Issued {
            continue;
        }
        let Some(c) = &r.certificate else {
            continue;
        };
        report.records_checked += 1;
        let der = base64::engine::general_purpose::STANDARD
            .decode(&c.der)
            .map_err(|_| AuditError::Setup(format!("record {}: the certificate is not base64", r.seq)))?;
        let tbs = tbs_sha256_of_certificate(&der).map_err(|e| AuditError::Setup(format!("record {}: {e}", r.seq)))?;
        let Some(log_id) = c.sct_log_id.as_deref().map(str::to_ascii_lowercase) else {
            // Issued with CT disabled: no log promised anything.
            recorded.insert(tbs);
            continue;
        };
        let found = in_logs.get(tbs.as_str()).is_some_and(|l| l.contains(log_id.as_str()));
        recorded.insert(tbs);
        if found {
            continue;
        }
        match logs.get(&log_id) {
            None => report.log_not_synced += 1,
            Some(sth_timestamp) => {
                let logged_at = c.sct_timestamp.unwrap_or_else(|| c.not_before.max(0) as u64 * 1000);
                if *sth_timestamp > logged_at.saturating_add(GRACE_MS) {
                    report.missing_from_log.push((r.seq, c.serial.clone()));
                } else {
                    report.not_yet_due += 1;
                }
            }
        }
    }
    report.log_certificates_checked = logged.len() as u64;
    for c in logged {
        if recorded.contains(&c.tbs_sha256) {
            continue;
        }
        match intents.get(c.tbs_sha256.as_str()) {
            Some(&intent_seq) => report.abandoned.push(AbandonedEntry {
                abandoned: outcomes.get(&intent_seq).cloned(),
                intent_seq,
                entry: c,
            }),
            None => report.unrecorded.push(c),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Decision, certificate_facts, hex};
    use crate::sync::sync;
    use crate::testkit::*;

    const ISSUER: &str = "https://issuer.example";

    fn issued(seq: u64, der: &[u8], sct: Option<(&[u8; 32], u64)>) -> Record {
        Record {
            seq,
            time_ms: 1_750_000_000_000,
            request_id: format!("req-{seq}"),
            issuer: Some(ISSUER.into()),
            subject: Some("someone@example.com".into()),
            claims_sha256: None,
            key_sha256: None,
            decision: Decision::Issued,
            rule: "email".into(),
            certificate: Some(certificate_facts(der, sct, None).unwrap()),
            rejection: None,
            intent: None,
            intent_seq: None,
        }
    }

    #[tokio::test]
    async fn finds_missing_and_unrecorded_certificates_both_ways() {
        let ca = TestCa::new("Audit Test CA");
        let log = FakeLog::start(log_key()).await;
        let l: Vec<_> = (0..8).map(|i| ca.leaf(&format!("u{i}@example.com"), ISSUER)).collect();
        log.add(vec![
            ca.precert_entry(&l[0], 1),
            ca.precert_entry(&l[1], 2),
            ca.precert_entry(&l[3], 3),
            x509_entry(4, &l[4].final_cert, &ca.chain()),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let index = LogIndex::open(dir.path()).unwrap();
        sync(&index, &log.url, &log.spki(), &ca.chain(), false).await.unwrap();
        let log_id: [u8; 32] = keyless_ca::keys::sha256(&log.spki());
        let sth = index.verified_sth(&hex(&log_id)).unwrap().unwrap();
        let old = sth.timestamp - 2 * GRACE_MS;
        let recent = sth.timestamp - GRACE_MS / 2;
        let elsewhere = [9u8; 32];
        let records = vec![
            issued(0, &l[0].final_cert, Some((&log_id, old))),
            crate::record::test_refusal(1),
            issued(2, &l[1].final_cert, Some((&log_id, old))),
            issued(3, &l[2].final_cert, Some((&log_id, old))), // never logged
            issued(4, &l[5].final_cert, Some((&log_id, recent))), // not yet due
            issued(5, &l[6].final_cert, None),                 // CT disabled
            issued(6, &l[7].final_cert, Some((&elsewhere, old))), // a log never synced
            issued(7, &l[4].final_cert, Some((&log_id, old))), // logged as a final certificate
        ];
        let report = cross_check(&records, &index).unwrap();
        assert_eq!(report.records_checked, 7);
        assert_eq!(report.log_certificates_checked, 4);
        assert_eq!(report.missing_from_log, [(3, l[2].serial.clone())]);
        assert_eq!(report.not_yet_due, 1);
        assert_eq!(report.log_not_synced, 1);
        assert_eq!(report.unrecorded.len(), 1);
        assert_eq!(report.unrecorded[0].serial, l[3].serial);
        assert_eq!(report.unrecorded[0].leaf_index, 2);
        assert!(!report.ok());
        let lines = report.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with(&format!("record 3: certificate {}", l[2].serial)),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("entry 2") && lines[1].contains("email:u3@example.com"),
            "{lines:?}"
        );
        assert!(lines[1].contains("did not issue"), "{lines:?}");

        // With the stray certificate recorded and the unlogged one gone, everything agrees.
        let mut fixed: Vec<Record> = records.into_iter().filter(|r| r.seq != 3).collect();
        fixed.push(issued(8, &l[3].final_cert, Some((&log_id, old))));
        let report = cross_check(&fixed, &index).unwrap();
        assert!(report.ok(), "{:?}", report.lines());
        assert_eq!(report.records_checked, 7);
        let lines = report.lines();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("agree"), "{lines:?}");
        assert!(lines[0].contains("1 too recent"), "{lines:?}");
    }

    #[tokio::test]
    async fn a_certificate_must_be_in_the_log_its_sct_names() {
        let ca = TestCa::new("Audit Test CA");
        let (a, b) = (FakeLog::start(log_key()).await, FakeLog::start(log_key()).await);
        let leaf = ca.leaf("x@example.com", ISSUER);
        a.add(vec![ca.precert_entry(&leaf, 1)]);
        b.add(vec![]);
        let dir = tempfile::tempdir().unwrap();
        let index = LogIndex::open(dir.path()).unwrap();
        sync(&index, &a.url, &a.spki(), &ca.chain(), false).await.unwrap();
        sync(&index, &b.url, &b.spki(), &ca.chain(), false).await.unwrap();
        let b_id = keyless_ca::keys::sha256(&b.spki());
        let records = [issued(0, &leaf.final_cert, Some((&b_id, 0)))];
        let report = cross_check(&records, &index).unwrap();
        assert_eq!(report.missing_from_log, [(0, leaf.serial.clone())]);
        assert!(report.unrecorded.is_empty(), "it is recorded, whichever log holds it");
        assert!(
            cross_check(&[], &LogIndex::open(&dir.path().join("empty")).unwrap())
                .unwrap()
                .ok()
        );
    }

    #[test]
    fn a_damaged_record_certificate_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let index = LogIndex::open(dir.path()).unwrap();
        let ca = TestCa::new("Audit Test CA");
        let mut r = issued(4, &ca.leaf("x@example.com", ISSUER).final_cert, None);
        r.certificate.as_mut().unwrap().der = "bm90IERFUg==".into();
        let err = cross_check(&[r], &index).unwrap_err();
        assert!(err.to_string().contains("record 4"), "{err}");
    }

    fn intent(seq: u64, leaf: &TestLeaf) -> Record {
        let mut r = crate::record::test_refusal(seq);
        r.decision = Decision::Intent;
        r.rejection = None;
        r.intent =
            Some(crate::record::Intent::of_tbs(&crate::testkit::tbs(&leaf.precert), "http://ct.example").unwrap());
        r
    }

    fn abandoned(seq: u64, intent_seq: u64, class: &str) -> Record {
        let mut r = crate::record::test_refusal(seq);
        r.decision = Decision::Abandoned;
        r.intent_seq = Some(intent_seq);
        r.rejection = Some(crate::record::Rejection {
            class: class.into(),
            message: "CT log unavailable".into(),
        });
        r
    }

    #[tokio::test]
    async fn logged_precertificates_with_an_intent_are_abandoned_issuances_not_findings() {
        let ca = TestCa::new("Audit Test CA");
        let log = FakeLog::start(log_key()).await;
        let l: Vec<_> = (0..4).map(|i| ca.leaf(&format!("u{i}@example.com"), ISSUER)).collect();
        log.add(
            l.iter()
                .enumerate()
                .map(|(i, x)| ca.precert_entry(x, i as u64))
                .collect(),
        );
        let dir = tempfile::tempdir().unwrap();
        let index = LogIndex::open(dir.path()).unwrap();
        sync(&index, &log.url, &log.spki(), &ca.chain(), false).await.unwrap();
        let log_id: [u8; 32] = keyless_ca::keys::sha256(&log.spki());
        let old = index.verified_sth(&hex(&log_id)).unwrap().unwrap().timestamp - 2 * GRACE_MS;
        let mut completed = issued(1, &l[0].final_cert, Some((&log_id, old)));
        completed.intent_seq = Some(0);
        let mut records = vec![
            intent(0, &l[0]),
            completed, // issued after its intent: counts as issued
            intent(2, &l[1]),
            abandoned(3, 2, "ct_log"), // the CT log answered too late
            intent(4, &l[2]),          // the process died before any outcome
        ];
        let report = cross_check(&records, &index).unwrap();
        assert_eq!(report.records_checked, 1);
        assert!(report.missing_from_log.is_empty());
        assert_eq!(
            report.unrecorded.len(),
            1,
            "entry 3 has neither an intent nor an issued record"
        );
        assert_eq!(report.unrecorded[0].serial, l[3].serial);
        let found: Vec<(u64, u64, &str)> = report
            .abandoned
            .iter()
            .map(|a| (a.entry.leaf_index, a.intent_seq, a.outcome()))
            .collect();
        assert_eq!(found, [(1, 2, "abandoned"), (2, 4, "interrupted")]);
        assert_eq!(
            report.abandoned[0].abandoned,
            Some((3, "ct_log: CT log unavailable".to_string()))
        );
        assert!(!report.ok());
        let lines = report.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].contains("entry 3") && lines[0].contains("did not issue"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("note:") && lines[1].contains("abandoned (record 3: ct_log"),
            "{lines:?}"
        );
        assert!(lines[2].contains("interrupted"), "{lines:?}");

        // Entry 3 announced too: nothing is a finding, the abandoned ones are still listed.
        records.push(intent(5, &l[3]));
        let report = cross_check(&records, &index).unwrap();
        assert!(report.ok(), "{:?}", report.lines());
        assert_eq!(report.abandoned.len(), 3);
        let lines = report.lines();
        assert!(
            lines[0].contains("agree") && lines[0].contains("3 abandoned issuance(s)"),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 4);
    }
}
