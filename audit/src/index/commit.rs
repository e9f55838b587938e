//! Committing what a sync verified: one transaction per chunk (its leaf hashes, the entries that
//! chain to this CA and the new verified prefix), refused if another sync of the log committed
//! in the meantime or if the index belongs to another issuing CA.

use std::path::Path;

use keyless_ctlog::merkle::Hash;
use rusqlite::{Connection, OptionalExtension, params};

use super::{CERT_COLUMNS, IndexedCert, LogIndex, SignedHead, VerifiedSth, storage};
use crate::AuditError;

fn check_ca(conn: &Connection, ca_key_sha256: &str, path: &Path) -> Result<(), AuditError> {
    let bound: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'ca_key_sha256'", [], |r| r.get(0))
        .optional()
        .map_err(storage)?;
    match bound {
        Some(b) if b != ca_key_sha256 => Err(AuditError::Setup(format!(
            "the CT index in {} was built for the issuing CA key {b}, not {ca_key_sha256}: use another audit directory for another CA",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// What a sync commits in one transaction (one chunk).
pub(crate) struct Commit<'a> {
    /// Hex SHA-256 of the issuing CA's SPKI the entries were matched against.
    pub(crate) ca_key_sha256: &'a str,
    /// The verified prefix the chunk started from (must still be the stored one).
    pub(crate) previous: Option<&'a VerifiedSth>,
    /// The newly verified prefix.
    pub(crate) sth: &'a VerifiedSth,
    /// The signature of the tree head `sth.timestamp` belongs to (TLS `DigitallySigned`);
    /// empty when no signed tree head is complete yet.
    pub(crate) signature: &'a [u8],
    /// The latest signed tree head verified; `None`: the prefix itself is one.
    pub(crate) signed: Option<&'a SignedHead>,
    /// The compact frontier of the new prefix.
    pub(crate) frontier: Option<&'a [Hash]>,
    /// Leaf hashes from `previous.tree_size` on.
    pub(crate) leaves: &'a [Hash],
    /// The new entries that chain to this CA.
    pub(crate) certificates: &'a [IndexedCert],
}

impl LogIndex {
    /// The index belongs to one issuing CA (hex SHA-256 of its SPKI), bound by the first commit;
    /// a different CA is refused, so "chains to this CA" keeps one meaning.
    pub(crate) fn check_ca(&self, ca_key_sha256: &str) -> Result<(), AuditError> {
        check_ca(&self.conn(), ca_key_sha256, &self.path)
    }

    /// Stores what a sync verified, all or nothing. Fails (storing nothing) if another sync of
    /// the same log committed in the meantime.
    pub(crate) fn commit(&self, c: Commit<'_>) -> Result<(), AuditError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(storage)?;
        check_ca(&tx, c.ca_key_sha256, &self.path)?;
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('ca_key_sha256', ?1)",
            [c.ca_key_sha256],
        )
        .map_err(storage)?;
        let log_id = c.sth.log_id.as_str();
        let current: Option<(i64, String)> = tx
            .query_row("SELECT tree_size, root FROM logs WHERE log_id = ?1", [log_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(storage)?;
        let expected = c.previous.map(|p| (p.tree_size as i64, p.root.clone()));
        if current != expected {
            return Err(AuditError::Storage(format!(
                "another sync of log {log_id} finished first; run the sync again"
            )));
        }
        let first = c.previous.map_or(0, |p| p.tree_size);
        let stored: i64 = tx
            .query_row("SELECT COUNT(*) FROM leaves WHERE log_id = ?1", [log_id], |r| r.get(0))
            .map_err(storage)?;
        if stored as u64 != first {
            return Err(storage(format!(
                "the index holds {stored} leaves of log {log_id} but its tree head covers {first}: it was damaged"
            )));
        }
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO leaves (log_id, leaf_index, hash) VALUES (?1, ?2, ?3)")
                .map_err(storage)?;
            for (i, h) in c.leaves.iter().enumerate() {
                insert
                    .execute(params![log_id, (first + i as u64) as i64, h.as_slice()])
                    .map_err(storage)?;
            }
            let mut insert = tx
                .prepare_cached(&format!(
                    "INSERT INTO certificates ({CERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ))
                .map_err(storage)?;
            for cert in c.certificates {
                let extensions = serde_json::to_string(&cert.extensions).map_err(storage)?;
                insert
                    .execute(params![
                        cert.log_id,
                        cert.leaf_index as i64,
                        cert.entry_type,
                        cert.timestamp as i64,
                        cert.serial,
                        cert.san,
                        cert.issuer,
                        cert.tbs_sha256,
                        extensions,
                        cert.not_before,
                    ])
                    .map_err(storage)?;
            }
        }
        let s = c.sth;
        let root_bytes = crate::hex::unhex32(&s.root);
        let (signed_size, signed_root, signed_timestamp, signed_signature, signed_at) = match c.signed {
            Some(h) => (
                h.tree_size,
                h.root.to_vec(),
                h.timestamp,
                h.signature.clone(),
                h.verified_at,
            ),
            None => (
                s.tree_size,
                root_bytes.map(|r| r.to_vec()).unwrap_or_default(),
                s.timestamp,
                c.signature.to_vec(),
                s.verified_at,
            ),
        };
        if signed_size < s.tree_size {
            return Err(storage(format!(
                "log {log_id}: a verified prefix of {} entries cannot exceed the signed tree head of {signed_size}",
                s.tree_size
            )));
        }
        let frontier: Option<Vec<u8>> = c.frontier.map(|f| f.concat());
        tx.execute(
            "INSERT INTO logs (log_id, url, tree_size, root, timestamp, signature, verified_at,
                 signed_size, signed_root, signed_timestamp, signed_signature, signed_verified_at, frontier)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (log_id) DO UPDATE SET url = ?2, tree_size = ?3, root = ?4, timestamp = ?5,
                 signature = ?6, verified_at = ?7, signed_size = ?8, signed_root = ?9,
                 signed_timestamp = ?10, signed_signature = ?11, signed_verified_at = ?12, frontier = ?13",
            params![
                s.log_id,
                s.url,
                s.tree_size as i64,
                s.root,
                s.timestamp as i64,
                c.signature,
                s.verified_at as i64,
                signed_size as i64,
                signed_root,
                signed_timestamp as i64,
                signed_signature,
                signed_at as i64,
                frontier,
            ],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)
    }
}
