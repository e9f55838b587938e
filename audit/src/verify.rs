//! `keyless audit verify`: walks the hash chain and checks every checkpoint signature. Any edit,
//! deletion, insertion, reordering or truncation shows up as the position of the first bad record.
//!
//! Removing the last records together with their checkpoints leaves a shorter record that is
//! internally consistent; only a checkpoint kept outside it (the `checkpoint_export` anchor, or a
//! witness's copy) reveals that, which is what `--against` checks.

use std::path::Path;

use keyless_ca::keys::{Hash, PublicKey};
use rusqlite::Connection;
use serde::Serialize;

use crate::AuditError;
use crate::checkpoint::{Checkpoint, checkpoint_signed_data};
use crate::files::db_path;
use crate::record::chain_hash;
use crate::store::RecordSource;

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Records in the store.
    pub records: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The latest checkpoint: (records it covers, when it was signed in ms).
    pub last_checkpoint: Option<(u64, u64)>,
    /// The first bad position and why; `None` when everything verifies.
    pub first_bad: Option<(u64, String)>,
    /// Records by kind (`issued`, `rejected`, `intent`, `abandoned`; others as they are named).
    pub kinds: std::collections::BTreeMap<String, u64>,
    /// The anchored checkpoint checked against: (size, when it was signed in ms).
    pub anchor: Option<(u64, u64)>,
}

impl VerifyReport {
    /// How many records of `kind` (`issued`, `rejected`, `intent`, `abandoned`).
    pub fn count(&self, kind: &str) -> u64 {
        self.kinds.get(kind).copied().unwrap_or(0)
    }

    /// `12 issued, 3 refused, 13 intents, 1 abandoned` (kinds that occur).
    pub fn kinds_line(&self) -> String {
        let mut parts = Vec::new();
        for (kind, label) in [
            ("issued", "issued"),
            ("rejected", "refused"),
            ("intent", "intents"),
            ("abandoned", "abandoned"),
        ] {
            let n = self.count(kind);
            if n > 0 || kind == "issued" {
                parts.push(format!("{n} {label}"));
            }
        }
        for (kind, n) in &self.kinds {
            if !["issued", "rejected", "intent", "abandoned"].contains(&kind.as_str()) {
                parts.push(format!("{n} {kind}"));
            }
        }
        parts.join(", ")
    }
}

impl VerifyReport {
    fn bad(&mut self, seq: u64, why: String) {
        if self.first_bad.as_ref().is_none_or(|(s, _)| seq < *s) {
            self.first_bad = Some((seq, why));
        }
    }
}

/// Verifies the record in `dir` against the audit public key (DER SPKI) and, when given, against
/// a checkpoint kept outside it: the record must contain that size with that head. A checkpoint
/// the key did not sign is an error (the check cannot run), not a finding about the record.
pub fn verify_dir(dir: &Path, audit_key_spki: &[u8], anchor: Option<&Checkpoint>) -> Result<VerifyReport, AuditError> {
    let path = db_path(dir);
    if !path.exists() {
        return Err(AuditError::Setup(format!("no issuance record at {}", path.display())));
    }
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| AuditError::Storage(e.to_string()))?;
    verify_db(&conn, audit_key_spki, anchor)
}

pub(crate) fn verify_db(
    conn: &Connection,
    audit_key_spki: &[u8],
    anchor: Option<&Checkpoint>,
) -> Result<VerifyReport, AuditError> {
    let storage = |e: rusqlite::Error| AuditError::Storage(e.to_string());
    let mut check = ChainCheck::new(audit_key_spki, anchor)?;
    {
        let mut stmt = conn
            .prepare("SELECT seq, json, prev_hash, hash FROM records ORDER BY rowid")
            .map_err(storage)?;
        let mut rows = stmt.query([]).map_err(storage)?;
        while let Some(row) = rows.next().map_err(storage)? {
            let seq: i64 = row.get(0).map_err(storage)?;
            let json: String = row.get(1).map_err(storage)?;
            let stored_prev: Vec<u8> = row.get(2).map_err(storage)?;
            let stored_hash: Vec<u8> = row.get(3).map_err(storage)?;
            check.record(seq, &json, &stored_prev, &stored_hash);
        }
    }
    let mut stmt = conn
        .prepare("SELECT size, head, time_ms, signature FROM checkpoints ORDER BY size")
        .map_err(storage)?;
    let mut rows = stmt.query([]).map_err(storage)?;
    while let Some(row) = rows.next().map_err(storage)? {
        let size: i64 = row.get(0).map_err(storage)?;
        let head: Vec<u8> = row.get(1).map_err(storage)?;
        let time_ms: i64 = row.get(2).map_err(storage)?;
        let signature: Vec<u8> = row.get(3).map_err(storage)?;
        check.checkpoint(size, head, time_ms, &signature);
    }
    Ok(check.finish())
}

/// Verifies the record wherever it is (see [`verify_dir`]).
pub fn verify_source(
    source: &RecordSource,
    audit_key_spki: &[u8],
    anchor: Option<&Checkpoint>,
) -> Result<VerifyReport, AuditError> {
    match source {
        RecordSource::Sqlite(dir) => verify_dir(dir, audit_key_spki, anchor),
        RecordSource::Postgres(db) => crate::store::pg::verify(db, audit_key_spki, anchor),
    }
}

/// The chain and checkpoint check, fed with the stored rows by each backend: records in order
/// first, then checkpoints by size.
pub(crate) struct ChainCheck {
    key: PublicKey,
    anchored: Option<(Checkpoint, [u8; 32])>,
    report: VerifyReport,
    /// Every record's hash by position, as recomputed from the chain (not as stored).
    hashes: Vec<[u8; 32]>,
    prev: [u8; 32],
    broken: bool,
}

impl ChainCheck {
    /// A checkpoint the key did not sign as the anchor is an error: the check cannot run.
    pub(crate) fn new(audit_key_spki: &[u8], anchor: Option<&Checkpoint>) -> Result<ChainCheck, AuditError> {
        let key = PublicKey::from_spki_der(audit_key_spki).map_err(|e| AuditError::Setup(format!("audit key: {e}")))?;
        let anchored = anchor
            .map(|a| a.verify(audit_key_spki).map(|head| (a.clone(), head)))
            .transpose()?;
        Ok(ChainCheck {
            key,
            anchored,
            report: VerifyReport::default(),
            hashes: Vec::new(),
            prev: [0u8; 32],
            broken: false,
        })
    }

    /// The next stored record.
    pub(crate) fn record(&mut self, seq: i64, json: &str, stored_prev: &[u8], stored_hash: &[u8]) {
        let position = self.report.records;
        let prev = self.prev;
        let report = &mut self.report;
        let hash = chain_hash(&prev, json.as_bytes());
        let value = serde_json::from_str::<serde_json::Value>(json).ok();
        let kind = value
            .as_ref()
            .and_then(|v| v["decision"].as_str())
            .unwrap_or("unreadable");
        *report.kinds.entry(kind.to_string()).or_default() += 1;
        if !self.broken {
            let why = if seq != position as i64 {
                Some(format!(
                    "expected record {position}, found record {seq}: records were deleted or reordered"
                ))
            } else if stored_prev != prev {
                Some("does not follow the record before it: records were deleted or reordered".to_string())
            } else if value.as_ref().and_then(|v| v["seq"].as_u64()) != Some(position) {
                Some("its content names another position: records were moved".to_string())
            } else if stored_hash != hash {
                Some("its content was changed after it was written".to_string())
            } else {
                None
            };
            if let Some(why) = why {
                report.bad(position, why);
                self.broken = true;
            }
        }
        self.hashes.push(hash);
        self.prev = hash;
        report.records = position + 1;
    }

    /// The next stored checkpoint (after every record).
    pub(crate) fn checkpoint(&mut self, size: i64, head: Vec<u8>, time_ms: i64, signature: &[u8]) {
        let report = &mut self.report;
        let (size, time_ms) = (size.max(0) as u64, time_ms.max(0) as u64);
        report.checkpoints += 1;
        report.last_checkpoint = Some((size, time_ms));
        let head: [u8; 32] = match head.try_into() {
            Ok(h) => h,
            Err(_) => {
                report.bad(size.saturating_sub(1), format!("checkpoint at {size} is malformed"));
                return;
            }
        };
        if !self
            .key
            .verify(Hash::Sha256, &checkpoint_signed_data(size, &head, time_ms), signature)
        {
            report.bad(
                size.saturating_sub(1),
                format!("checkpoint at {size} does not carry a valid audit key signature"),
            );
            return;
        }
        if size > report.records {
            report.bad(
                report.records,
                format!(
                    "records {} to {} are missing: a checkpoint signed them",
                    report.records,
                    size - 1
                ),
            );
        } else if size > 0 && self.hashes[size as usize - 1] != head {
            report.bad(
                size - 1,
                format!("the chain up to here differs from the one checkpoint {size} signed"),
            );
        }
    }

    /// The report, once every record and checkpoint was fed.
    pub(crate) fn finish(self) -> VerifyReport {
        let mut report = self.report;
        let hashes = self.hashes;
        if let Some((a, head)) = self.anchored {
            report.anchor = Some((a.size, a.time_ms));
            if a.size > report.records {
                report.bad(
                    report.records,
                    format!(
                        "the record ends at {} records, but the checkpoint kept outside it (signed at {} ms) covers {}: records {} to {} were removed together with their checkpoints",
                        report.records,
                        a.time_ms,
                        a.size,
                        report.records,
                        a.size - 1
                    ),
                );
            } else if a.size > 0 && hashes[a.size as usize - 1] != head {
                report.bad(
                    a.size - 1,
                    format!(
                        "the chain up to here differs from the checkpoint of size {} kept outside the record: the record was rewritten",
                        a.size
                    ),
                );
            }
        }
        let covered = report.last_checkpoint.map(|(s, _)| s).unwrap_or(0);
        if report.records > covered {
            report.bad(
                covered,
                format!(
                    "records {covered} to {} are not covered by any signed checkpoint: they were added outside the CA",
                    report.records - 1
                ),
            );
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::public_key_path;
    use crate::store::{AuditLog, AuditOptions};

    fn spki(dir: &Path) -> Vec<u8> {
        let pem = std::fs::read_to_string(public_key_path(dir)).unwrap();
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
            .unwrap()
    }

    /// Writes five records in three batches and returns the directory.
    fn written() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let log = AuditLog::open(dir.path(), AuditOptions::default()).unwrap();
        rt.block_on(async {
            for batch in [0..2u64, 2..3, 3..5] {
                for i in batch {
                    assert_eq!(log.append_durable(crate::record::test_refusal(i)).await.unwrap(), i);
                }
            }
        });
        drop(log);
        std::thread::sleep(std::time::Duration::from_millis(50));
        dir
    }

    fn tamper(dir: &Path, sql: &str) -> VerifyReport {
        let conn = Connection::open(db_path(dir)).unwrap();
        conn.execute_batch(sql).unwrap();
        drop(conn);
        verify_dir(dir, &spki(dir), None).unwrap()
    }

    #[test]
    fn an_untouched_record_verifies() {
        let dir = written();
        let report = verify_dir(dir.path(), &spki(dir.path()), None).unwrap();
        assert_eq!(report.records, 5);
        assert_eq!((report.count("rejected"), report.count("issued")), (5, 0));
        assert_eq!(report.kinds_line(), "0 issued, 5 refused");
        assert!(report.checkpoints >= 3);
        assert_eq!(report.first_bad, None);
        // And the writer accepts to continue it.
        assert!(AuditLog::open(dir.path(), AuditOptions::default()).is_ok());
    }

    #[test]
    fn edits_deletions_reorders_truncations_and_forged_tails_are_found_at_their_position() {
        let edit = written();
        let r = tamper(
            edit.path(),
            "UPDATE records SET json = replace(json, 'user2@', 'mallory@') WHERE seq = 2",
        );
        assert_eq!(r.first_bad.as_ref().map(|b| b.0), Some(2), "{r:?}");
        assert!(r.first_bad.unwrap().1.contains("changed"));
        // The writer refuses to extend a damaged record.
        let err = AuditLog::open(edit.path(), AuditOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("record 2"), "{err}");

        let delete = written();
        let r = tamper(delete.path(), "DELETE FROM records WHERE seq = 1");
        assert_eq!(r.first_bad.map(|b| b.0), Some(1));

        let reorder = written();
        let r = tamper(
            reorder.path(),
            "UPDATE records SET seq = -1 WHERE seq = 3; UPDATE records SET seq = 3 WHERE seq = 4;
             UPDATE records SET seq = 4 WHERE seq = -1;",
        );
        assert_eq!(r.first_bad.map(|b| b.0), Some(3));

        let truncate = written();
        let r = tamper(truncate.path(), "DELETE FROM records WHERE seq = 4");
        let (pos, why) = r.first_bad.unwrap();
        assert_eq!(pos, 4);
        assert!(why.contains("missing"), "{why}");

        // A record appended outside the CA, with a correct hash but no signed checkpoint.
        let forged = written();
        let conn = Connection::open(db_path(forged.path())).unwrap();
        let prev: Vec<u8> = conn
            .query_row("SELECT hash FROM records WHERE seq = 4", [], |r| r.get(0))
            .unwrap();
        let mut rec = crate::record::test_refusal(5);
        rec.seq = 5;
        let json = serde_json::to_string(&rec).unwrap();
        let hash = chain_hash(&prev.clone().try_into().unwrap(), json.as_bytes());
        conn.execute(
            "INSERT INTO records (seq, json, prev_hash, hash) VALUES (5, ?1, ?2, ?3)",
            rusqlite::params![json, prev, hash.as_slice()],
        )
        .unwrap();
        drop(conn);
        let r = verify_dir(forged.path(), &spki(forged.path()), None).unwrap();
        let (pos, why) = r.first_bad.unwrap();
        assert_eq!(pos, 5);
        assert!(why.contains("not covered by any signed checkpoint"), "{why}");
    }
}
