//! What was seen in CT logs: `<audit_dir>/index.sqlite` (WAL).
//!
//! Per log: its last verified signed tree head, every leaf hash (so the root of the next tree head
//! can be recomputed from the entries themselves rather than taken on the log's word), and the
//! entries that chain to this CA, decoded. A sync commits in chunks: each chunk's leaves, its
//! certificates and the verified prefix `(size, root)` land in one transaction, with the
//! compact Merkle frontier that lets the next chunk (or the next run) go on in bounded memory.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use keyless_ca::Serial;
use keyless_ctlog::merkle::Hash;
use rusqlite::{Connection, OptionalExtension};

use crate::AuditError;
use crate::record::Extension;

mod commit;
#[cfg(test)]
mod tests;

pub(crate) use self::commit::Commit;

/// The index database file.
pub fn index_path(audit_dir: &Path) -> PathBuf {
    audit_dir.join("index.sqlite")
}

/// How far a log is verified and indexed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifiedSth {
    /// Hex SHA-256 of the log's DER public key (the RFC 6962 log id).
    pub log_id: String,
    /// The log's base URL (without `/ct/v1`), as last synced.
    pub url: String,
    /// Entries fetched, verified and indexed: the tree of this size has `root`, proven
    /// consistent with a signed tree head of the log.
    pub tree_size: u64,
    /// Merkle root of the first `tree_size` entries, hex.
    pub root: String,
    /// The timestamp (ms) of the latest signed tree head whose entries are all indexed (0 before
    /// the first complete sync): every entry logged before it, minus the MMD, is in the index.
    pub timestamp: u64,
    /// When a sync last verified it, ms since the epoch.
    pub verified_at: u64,
    /// The size of the latest signed tree head verified; above `tree_size` while a sync bounded
    /// by `SyncLimits` has not fetched everything yet.
    pub signed_size: u64,
}

/// The latest signed tree head of a log that a sync verified (signature, consistency,
/// plausibility), whether or not its entries are all fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignedHead {
    pub(crate) tree_size: u64,
    pub(crate) root: Hash,
    pub(crate) timestamp: u64,
    pub(crate) signature: Vec<u8>,
    /// When it was verified (local clock), ms.
    pub(crate) verified_at: u64,
}

/// What the index knows about one log, for the next sync.
pub(crate) struct LogProgress {
    pub(crate) prefix: VerifiedSth,
    /// The signature of the tree head `prefix.timestamp` belongs to (empty if none).
    pub(crate) prefix_signature: Vec<u8>,
    pub(crate) signed: SignedHead,
    /// The compact frontier of the prefix (perfect subtree roots, largest first), when stored.
    pub(crate) frontier: Option<Vec<Hash>>,
}

/// A log entry that chains to this CA.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IndexedCert {
    /// Hex log id.
    pub log_id: String,
    /// Position in the log.
    pub leaf_index: u64,
    /// `precert` or `x509`.
    pub entry_type: String,
    /// The entry's timestamp (ms), from the leaf.
    pub timestamp: u64,
    /// Serial, as [`keyless_ca::Serial`] shows it.
    pub serial: String,
    /// SAN, as [`crate::record::san_text`].
    pub san: String,
    /// The OIDC issuer: extension 1.8, else 1.1, else empty.
    pub issuer: String,
    /// Hex SHA-256 of the TBS without the CT poison and SCT-list extensions (see
    /// [`crate::tbs::tbs_sha256_of_certificate`]): a precertificate entry and the final
    /// certificate issued from it have the same value.
    pub tbs_sha256: String,
    /// Every extension, decoded (the SAN's value is the SAN text, as in the record).
    pub extensions: Vec<Extension>,
    /// Validity start, seconds since the epoch.
    pub not_before: i64,
}

impl IndexedCert {
    /// The summary the query table, watchlists and the review page use.
    pub fn summary(&self) -> crate::CertSummary {
        crate::CertSummary {
            serial: self.serial.clone(),
            san: self.san.clone(),
            issuer: self.issuer.clone(),
            time_ms: self.not_before.max(0) as u64 * 1000,
            leaf_index: Some(self.leaf_index),
        }
    }
}

/// The CT index. Cheap to share by reference; one connection behind a mutex.
pub struct LogIndex {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for LogIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogIndex")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn storage(e: impl std::fmt::Display) -> AuditError {
    AuditError::Storage(e.to_string())
}

/// Columns added after the first release, with how to add them to an older index.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("signed_size", "ALTER TABLE logs ADD COLUMN signed_size INTEGER"),
    ("signed_root", "ALTER TABLE logs ADD COLUMN signed_root BLOB"),
    (
        "signed_timestamp",
        "ALTER TABLE logs ADD COLUMN signed_timestamp INTEGER",
    ),
    ("signed_signature", "ALTER TABLE logs ADD COLUMN signed_signature BLOB"),
    (
        "signed_verified_at",
        "ALTER TABLE logs ADD COLUMN signed_verified_at INTEGER",
    ),
    ("frontier", "ALTER TABLE logs ADD COLUMN frontier BLOB"),
];

const SCHEMA: &str = "
    PRAGMA journal_mode=WAL;
    PRAGMA synchronous=FULL;
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS logs (
        log_id TEXT PRIMARY KEY, url TEXT NOT NULL, tree_size INTEGER NOT NULL, root TEXT NOT NULL,
        timestamp INTEGER NOT NULL, signature BLOB NOT NULL, verified_at INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS leaves (
        log_id TEXT NOT NULL, leaf_index INTEGER NOT NULL, hash BLOB NOT NULL,
        PRIMARY KEY (log_id, leaf_index)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS certificates (
        log_id TEXT NOT NULL, leaf_index INTEGER NOT NULL, entry_type TEXT NOT NULL,
        timestamp INTEGER NOT NULL, serial TEXT NOT NULL, san TEXT NOT NULL, issuer TEXT NOT NULL,
        tbs_sha256 TEXT NOT NULL, extensions TEXT NOT NULL, not_before INTEGER NOT NULL,
        PRIMARY KEY (log_id, leaf_index));
    CREATE INDEX IF NOT EXISTS certificates_serial ON certificates (serial);
    CREATE INDEX IF NOT EXISTS certificates_tbs ON certificates (tbs_sha256);
";

const CERT_COLUMNS: &str =
    "log_id, leaf_index, entry_type, timestamp, serial, san, issuer, tbs_sha256, extensions, not_before";

fn cert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(IndexedCert, String)> {
    Ok((
        IndexedCert {
            log_id: r.get(0)?,
            leaf_index: r.get::<_, i64>(1)? as u64,
            entry_type: r.get(2)?,
            timestamp: r.get::<_, i64>(3)? as u64,
            serial: r.get(4)?,
            san: r.get(5)?,
            issuer: r.get(6)?,
            tbs_sha256: r.get(7)?,
            extensions: Vec::new(),
            not_before: r.get(9)?,
        },
        r.get(8)?,
    ))
}

fn sth_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VerifiedSth> {
    let tree_size = r.get::<_, i64>(2)? as u64;
    Ok(VerifiedSth {
        log_id: r.get(0)?,
        url: r.get(1)?,
        tree_size,
        root: r.get(3)?,
        timestamp: r.get::<_, i64>(4)? as u64,
        verified_at: r.get::<_, i64>(5)? as u64,
        signed_size: r.get::<_, Option<i64>>(6)?.map_or(tree_size, |s| s as u64),
    })
}

const STH_COLUMNS: &str = "log_id, url, tree_size, root, timestamp, verified_at, signed_size";

impl LogIndex {
    /// Opens the index in `audit_dir`, creating the directory and the database on first use.
    pub fn open(audit_dir: &Path) -> Result<LogIndex, AuditError> {
        std::fs::create_dir_all(audit_dir).map_err(|e| AuditError::Setup(format!("{}: {e}", audit_dir.display())))?;
        let path = index_path(audit_dir);
        let conn = Connection::open(&path).map_err(storage)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(storage)?;
        conn.execute_batch(SCHEMA).map_err(storage)?;
        let present: Vec<String> = {
            let mut stmt = conn
                .prepare("SELECT name FROM pragma_table_info('logs')")
                .map_err(storage)?;
            let names = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(storage)?;
            names.collect::<Result<_, _>>().map_err(storage)?
        };
        for (column, sql) in ADDED_COLUMNS {
            if !present.iter().any(|c| c == column) {
                conn.execute_batch(sql).map_err(storage)?;
            }
        }
        Ok(LogIndex {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_certs(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<IndexedCert>, AuditError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql).map_err(storage)?;
        let rows = stmt.query_map(args, cert_row).map_err(storage)?;
        let mut out = Vec::new();
        for row in rows {
            let (mut cert, extensions) = row.map_err(storage)?;
            cert.extensions = serde_json::from_str(&extensions).map_err(|e| {
                storage(format!(
                    "stored extensions of entry {} are not JSON: {e}",
                    cert.leaf_index
                ))
            })?;
            out.push(cert);
        }
        Ok(out)
    }

    /// Every indexed entry (all chain to this CA), ordered by log id and leaf index.
    pub fn certificates(&self) -> Result<Vec<IndexedCert>, AuditError> {
        self.read_certs(
            &format!("SELECT {CERT_COLUMNS} FROM certificates ORDER BY log_id, leaf_index"),
            &[],
        )
    }

    /// The entries with this serial (hex as [`Serial::parse_hex`] reads it: case, `0x`, colons
    /// and leading zeros do not matter; text that is not hex matches nothing).
    pub fn find_serial(&self, serial: &str) -> Result<Vec<IndexedCert>, AuditError> {
        let Some(serial) = Serial::parse_hex(serial) else {
            return Ok(Vec::new());
        };
        // Stored as `Serial` shows it, so one text comparison finds it.
        let serial = serial.to_string();
        self.read_certs(
            &format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = ?1 ORDER BY log_id, leaf_index"),
            &[&serial],
        )
    }

    /// The entries whose [`IndexedCert::tbs_sha256`] is `tbs_sha256`.
    pub fn find_tbs(&self, tbs_sha256: &str) -> Result<Vec<IndexedCert>, AuditError> {
        self.read_certs(
            &format!("SELECT {CERT_COLUMNS} FROM certificates WHERE tbs_sha256 = ?1 ORDER BY log_id, leaf_index"),
            &[&tbs_sha256],
        )
    }

    /// The last verified tree head of a log, if it was ever synced.
    pub fn verified_sth(&self, log_id_hex: &str) -> Result<Option<VerifiedSth>, AuditError> {
        let conn = self.conn();
        conn.query_row(
            &format!("SELECT {STH_COLUMNS} FROM logs WHERE log_id = ?1"),
            [log_id_hex.to_ascii_lowercase()],
            sth_row,
        )
        .optional()
        .map_err(storage)
    }

    /// Every log synced, with its last verified tree head, by URL.
    pub fn logs(&self) -> Result<Vec<VerifiedSth>, AuditError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {STH_COLUMNS} FROM logs ORDER BY url, log_id"))
            .map_err(storage)?;
        let rows = stmt.query_map([], sth_row).map_err(storage)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(storage)
    }

    /// Every stored leaf hash of a log, in order.
    #[cfg(test)]
    pub(crate) fn leaf_hashes(&self, log_id: &str) -> Result<Vec<Hash>, AuditError> {
        let mut out = Vec::new();
        self.for_each_leaf(log_id, |h| out.push(h))?;
        Ok(out)
    }

    /// Streams the stored leaf hashes of a log, in order (memory stays constant).
    pub(crate) fn for_each_leaf(&self, log_id: &str, mut f: impl FnMut(Hash)) -> Result<u64, AuditError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT leaf_index, hash FROM leaves WHERE log_id = ?1 ORDER BY leaf_index")
            .map_err(storage)?;
        let mut rows = stmt.query([log_id]).map_err(storage)?;
        let mut n = 0u64;
        while let Some(row) = rows.next().map_err(storage)? {
            let index: i64 = row.get(0).map_err(storage)?;
            let hash: Vec<u8> = row.get(1).map_err(storage)?;
            if index != n as i64 {
                return Err(storage(format!(
                    "the index lacks leaf {n} of log {log_id}: it was damaged"
                )));
            }
            f(hash
                .try_into()
                .map_err(|_| storage(format!("leaf {index} of log {log_id} is not a 32-byte hash")))?);
            n += 1;
        }
        Ok(n)
    }

    /// The verified prefix, the latest signed tree head and the frontier of a log.
    pub(crate) fn progress(&self, log_id: &str) -> Result<Option<LogProgress>, AuditError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!(
                    "SELECT {STH_COLUMNS}, signature, signed_root, signed_timestamp, signed_signature,
                            signed_verified_at, frontier
                     FROM logs WHERE log_id = ?1"
                ),
                [log_id],
                |r| {
                    Ok((
                        sth_row(r)?,
                        r.get::<_, Vec<u8>>(7)?,
                        r.get::<_, Option<Vec<u8>>>(8)?,
                        r.get::<_, Option<i64>>(9)?,
                        r.get::<_, Option<Vec<u8>>>(10)?,
                        r.get::<_, Option<i64>>(11)?,
                        r.get::<_, Option<Vec<u8>>>(12)?,
                    ))
                },
            )
            .optional()
            .map_err(storage)?;
        let Some((prefix, signature, s_root, s_time, s_sig, s_at, frontier)) = row else {
            return Ok(None);
        };
        let damaged = |what: &str| {
            storage(format!(
                "the stored {what} of log {log_id} is malformed: the index was damaged"
            ))
        };
        let prefix_root = crate::hex::unhex32(&prefix.root).ok_or_else(|| damaged("root"))?;
        let signed = match s_root {
            None => SignedHead {
                tree_size: prefix.tree_size,
                root: prefix_root,
                timestamp: prefix.timestamp,
                signature: signature.clone(),
                verified_at: prefix.verified_at,
            },
            Some(root) => SignedHead {
                tree_size: prefix.signed_size,
                root: root.try_into().map_err(|_| damaged("signed root"))?,
                timestamp: s_time.unwrap_or(0).max(0) as u64,
                signature: s_sig.unwrap_or_default(),
                verified_at: s_at.unwrap_or(0).max(0) as u64,
            },
        };
        let frontier = frontier
            .map(|f| {
                if f.len() % 32 != 0 {
                    return Err(damaged("frontier"));
                }
                Ok(f.chunks_exact(32)
                    .map(|c| c.try_into().unwrap_or([0; 32]))
                    .collect::<Vec<Hash>>())
            })
            .transpose()?;
        Ok(Some(LogProgress {
            prefix,
            prefix_signature: signature,
            signed,
            frontier,
        }))
    }
}
