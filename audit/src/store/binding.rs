//! The CA chain bound to the record: the first writer to open a record stores the fingerprints
//! of the chain it issues under; every later opener (another replica, a restart) must present the
//! same chain or is refused, so replicas that were given different key material cannot write
//! certificates of two CAs into one record. Replacing the CA on purpose is one explicit step,
//! `keyless audit adopt-ca-chain`, which [`adopt`]s the new chain.

use rusqlite::{Connection, OptionalExtension};

use super::{RecordSource, open_db, pg, sqlite};
use crate::AuditError;
use crate::files::db_path;

/// The key of the binding in the record's `meta` table.
pub(crate) const META_KEY: &str = "ca_chain";

/// The SHA-256 fingerprints of a CA chain (issuing CA first, root last), as stored in the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaChain(String);

impl CaChain {
    /// The chain's DER certificates, issuing CA first.
    pub fn of(chain_der: &[Vec<u8>]) -> CaChain {
        CaChain(
            chain_der
                .iter()
                .map(|der| crate::hex::hex(&keyless_ca::keys::sha256(der)))
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    /// The fingerprints as stored: lower-case hex, comma-separated, issuing CA first.
    pub fn fingerprints(&self) -> &str {
        &self.0
    }

    /// Compares with what the record holds: `Ok` when equal, the refusal otherwise.
    pub(crate) fn check(&self, stored: &str, place: &str) -> Result<(), AuditError> {
        if stored == self.0 {
            return Ok(());
        }
        Err(AuditError::Setup(format!(
            "this CA's chain (SHA-256 {}) is not the chain the issuance record in {place} was started with (SHA-256 {stored}): \
             every replica must issue under the same CA key and certificate chain (make them once and give each replica the same HSM token or key file); \
             if the CA was replaced on purpose, run `keyless audit adopt-ca-chain` once",
            self.0
        )))
    }
}

/// Binds `chain` to a SQLite record on first use, or checks it against the bound one.
pub(crate) fn bind_sqlite(conn: &Connection, chain: &CaChain, place: &str) -> Result<(), AuditError> {
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
        [META_KEY, chain.fingerprints()],
    )
    .map_err(sqlite)?;
    let stored: String = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [META_KEY], |r| r.get(0))
        .map_err(sqlite)?;
    chain.check(&stored, place)
}

/// Makes `chain` the one the record is bound to; returns the one it replaces, if any.
pub fn adopt(source: &RecordSource, chain: &CaChain) -> Result<Option<String>, AuditError> {
    let previous = match source {
        RecordSource::Sqlite(dir) => {
            let conn = open_db(&db_path(dir))?;
            let previous = conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [META_KEY], |r| r.get(0))
                .optional()
                .map_err(sqlite)?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [META_KEY, chain.fingerprints()],
            )
            .map_err(sqlite)?;
            previous
        }
        RecordSource::Postgres(db) => pg::adopt_chain(db, chain)?,
    };
    Ok(previous.filter(|p: &String| p != chain.fingerprints()))
}
