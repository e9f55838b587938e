//! The issuance record on disk: SQLite (WAL, `synchronous=FULL`) in `<data_dir>/audit/`, written
//! by one thread that commits queued records in one transaction together with a checkpoint
//! signed by the audit key, in the same discipline as the embedded CT log.
//!
//! Two inputs feed the writer. Durable records (`intent`, `issued`, `abandoned`) are waited for
//! by the issuance that wrote them, are never dropped, and are always taken first. Refusals go
//! into a bounded queue: when it is full they are dropped and counted, and a failed commit is
//! retried without them, so a flood of refusals can neither grow the disk without bound nor
//! fail or slow an issuance. A storage outage (disk full, I/O error) answers durable waiters with
//! [`AuditError::Unavailable`]; the writer keeps its head equal to what is committed and resumes
//! by itself when storage returns.
//!
//! Parts: `queue` (the two inputs, refusal drops, shutdown), `writer` (the transaction, the
//! checkpoint it signs, outage handling, exports), `pg` (the record on PostgreSQL); checkpoints
//! and file locations are shared with `verify` through [`crate::checkpoint`] and [`crate::files`].
//!
//! Several replicas share one record on PostgreSQL ([`AuditOptions::postgres`]): there, each
//! batch transaction locks the one-row `head` table (`SELECT … FOR UPDATE`) and appends after
//! what it finds, so replicas serialize on that lock and there stays one chain with one sequence,
//! verified exactly as on SQLite; the writer never caches the head across transactions. The cost
//! is one row lock (and a round trip) per batch, which batching amortizes. The audit key directory
//! (the public key, `verify` and `cross-check` state, the CT log index) stays local to each
//! replica.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use keyless_ca::Signer;
use rusqlite::{Connection, ErrorCode, OptionalExtension};

use self::queue::{Handle, Pending, Shared};
pub use self::queue::{REFUSALS_PER_BATCH, Stopped};
use self::writer::Writer;
use crate::AuditError;
pub use crate::checkpoint::{CHECKPOINT_ALGORITHM, Checkpoint, checkpoint_signed_data, latest_checkpoint};
pub use crate::files::{audit_dir, db_path, default_key_path, public_key_path};
use crate::files::{pem_public_key, read_spki_file};
use crate::record::Record;

mod binding;
mod buckets;
pub(crate) mod pg;
mod pg_tls;
mod queue;
#[cfg(test)]
mod tests;
mod writer;

pub use self::binding::{CaChain, adopt as adopt_ca_chain};
pub use self::buckets::SharedBuckets;
pub use self::pg::{Postgres, SCHEMA_VERSION};
use self::writer::Backend;

/// Where the record is read from: the SQLite database in an audit directory, or PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordSource {
    /// `<dir>/record.sqlite`.
    Sqlite(PathBuf),
    /// The shared record of several replicas.
    Postgres(Postgres),
}

impl RecordSource {
    /// For messages: the database file, or `postgresql host:port/db` (never a password).
    pub fn describe(&self) -> String {
        match self {
            RecordSource::Sqlite(dir) => db_path(dir).display().to_string(),
            RecordSource::Postgres(db) => db.describe(),
        }
    }
}

fn storage(e: impl std::fmt::Display) -> AuditError {
    AuditError::Storage(e.to_string())
}

/// A SQLite failure as the writer reports it: running out of space or I/O is an outage
/// ([`AuditError::Unavailable`]); anything else a storage fault.
fn sqlite(e: rusqlite::Error) -> AuditError {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::OutOfMemory,
        ) => AuditError::Unavailable(e.to_string()),
        _ => AuditError::Storage(e.to_string()),
    }
}

pub(crate) fn open_db(path: &Path) -> Result<Connection, AuditError> {
    let conn = Connection::open(path).map_err(storage)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS records (
             seq INTEGER PRIMARY KEY, json TEXT NOT NULL, prev_hash BLOB NOT NULL, hash BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS checkpoints (
             size INTEGER PRIMARY KEY, head BLOB NOT NULL, time_ms INTEGER NOT NULL, signature BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    )
    .map_err(storage)?;
    Ok(conn)
}

/// Where committed records are also exported as JSON lines (for a SIEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// Standard output.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
}

/// How the record is opened (the `audit:` configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// The checkpoint signing key; `None`: [`default_key_path`]. Keep it on another volume or
    /// secret mount, so whoever can rewrite the database cannot also re-sign it.
    pub key: Option<PathBuf>,
    /// JSON-lines export of every committed record.
    pub export: Option<Export>,
    /// After every commit the latest signed [`Checkpoint`] is written here atomically: an
    /// anchor outside the record for `keyless audit verify --against`. When the file exists at
    /// start-up, the record must contain it, or the writer refuses to open.
    pub checkpoint_export: Option<PathBuf>,
    /// Refusal records waiting for the writer; beyond this they are dropped and counted.
    pub refusal_queue: usize,
    /// Keep the record on PostgreSQL (shared by replicas) instead of SQLite in the directory;
    /// the directory still holds the public key.
    pub postgres: Option<Postgres>,
    /// The CA chain this process issues under: bound to the record by its first writer, and
    /// checked against it by every later one (see [`CaChain`]).
    pub ca_chain: Option<CaChain>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            key: None,
            export: None,
            checkpoint_export: None,
            refusal_queue: 10_000,
            postgres: None,
            ca_chain: None,
        }
    }
}

/// The writer side of the record. Cheap to clone; the writer thread ends with the last clone,
/// after committing everything still queued.
#[derive(Clone)]
pub struct AuditLog {
    handle: Arc<Handle>,
    stopped: Stopped,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (creating on first use) the record in `dir` and its audit key, and starts the
    /// writer. Refuses a record that does not verify, and one that lacks the checkpoint
    /// anchored at `options.checkpoint_export`.
    pub fn open(dir: &Path, options: AuditOptions) -> Result<AuditLog, AuditError> {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::Setup(format!("{}: {e}", dir.display())))?;
        let key_path = options.key.clone().unwrap_or_else(|| default_key_path(dir));
        let (backend, size, place) = match &options.postgres {
            None => {
                let conn = open_db(&db_path(dir))?;
                let head = last_hash(&conn)?;
                (Backend::Sqlite(conn, Some(head)), head.0, dir.display().to_string())
            }
            Some(db) => {
                let (w, size) = pg::PgWriter::open(db)?;
                let place = w.describe();
                (Backend::Postgres(w), size, place)
            }
        };
        if !key_path.exists() && size > 0 {
            return Err(AuditError::Setup(format!(
                "the audit key {} does not exist, but the issuance record in {} already holds {} records signed with one: restore the key (or point audit.key at it)",
                key_path.display(),
                place,
                size
            )));
        }
        let key =
            keyless_ctlog::load_or_create_key(&key_path).map_err(|e| AuditError::Setup(format!("audit key: {e}")))?;
        let spki = key.public_key_spki().to_vec();
        // Refuse to extend a record that does not verify: appending would bless the damage.
        let anchor = match &options.checkpoint_export {
            Some(path) if path.exists() => Some((path.clone(), Checkpoint::read(path)?)),
            _ => None,
        };
        let anchored = anchor.as_ref().map(|(_, c)| c);
        let report = match &backend {
            Backend::Sqlite(conn, _) => crate::verify::verify_db(conn, &spki, anchored)?,
            Backend::Postgres(w) => w.verify(&spki, anchored)?,
        };
        if let Some((seq, why)) = report.first_bad {
            return Err(AuditError::Setup(format!(
                "the issuance record in {} fails verification at record {seq}: {why}{}",
                place,
                anchor
                    .as_ref()
                    .map(|(p, _)| format!(
                        " (against the anchored checkpoint {}; if the record was restored from a backup on purpose, move that file aside)",
                        p.display()
                    ))
                    .unwrap_or_default()
            )));
        }
        if let Some(chain) = &options.ca_chain {
            match &backend {
                Backend::Sqlite(conn, _) => binding::bind_sqlite(conn, chain, &place)?,
                Backend::Postgres(w) => w.bind_chain(chain)?,
            }
        }
        // Only a key that verifies the record gets its public half published for verifiers.
        let pub_path = public_key_path(dir);
        match read_spki_file(&pub_path) {
            None if !pub_path.exists() => {
                std::fs::write(&pub_path, pem_public_key(&spki))
                    .map_err(|e| AuditError::Setup(format!("{}: {e}", pub_path.display())))?;
            }
            Some(existing) if existing == spki => {}
            _ => {
                return Err(AuditError::Setup(format!(
                    "{} is not the public half of the audit key {}: verifiers would trust another key; remove it to have it rewritten",
                    pub_path.display(),
                    key_path.display()
                )));
            }
        }
        let export = match options.export {
            None => None,
            Some(Export::Stdout) => Some(Box::new(std::io::stdout()) as Box<dyn std::io::Write + Send>),
            Some(Export::File(path)) => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| AuditError::Setup(format!("audit export {}: {e}", path.display())))?,
            ) as Box<dyn std::io::Write + Send>),
        };
        let shared = Arc::new(Shared::new(options.refusal_queue));
        let stopped = Stopped::default();
        let on_exit = stopped.clone();
        let writer = Writer {
            backend,
            key,
            spki,
            export,
            checkpoint_export: options.checkpoint_export,
            anchor_failing: false,
            outage: None,
            shared: shared.clone(),
        };
        // The writer logs where the opener's logs go (the global subscriber in the service).
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || writer.run());
                on_exit.set();
            })
            .map_err(|e| AuditError::Setup(format!("cannot start the audit writer: {e}")))?;
        Ok(AuditLog {
            handle: Arc::new(Handle(shared)),
            stopped,
        })
    }

    /// A handle that tells when the writer has drained its queue and stopped (after the last
    /// clone of this log is dropped), so a shutdown loses no queued refusal.
    pub fn stopped(&self) -> Stopped {
        self.stopped.clone()
    }

    /// Appends `record` and waits until it is durably committed; returns its position.
    /// [`AuditError::Unavailable`] while storage is out (disk full, I/O error).
    pub async fn append_durable(&self, record: Record) -> Result<u64, AuditError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        if !self.handle.0.push_durable(Pending { record, done }) {
            return Err(AuditError::Storage("the audit writer has stopped".into()));
        }
        wait.await
            .map_err(|_| AuditError::Storage("the audit writer has stopped".into()))?
    }

    /// Queues a refusal without waiting or blocking: nothing was promised to anyone. When the
    /// refusal queue is full it is dropped and counted (`keyless_audit_refusals_dropped_total`).
    pub fn append(&self, record: Record) {
        self.handle.0.push_refusal(record);
    }

    /// Refusal records dropped since start (queue full, or their commit failed).
    pub fn refusals_dropped(&self) -> u64 {
        self.handle.0.dropped.load(Ordering::Relaxed)
    }

    /// False while the last commit failed (storage outage): readiness can report it.
    pub fn available(&self) -> bool {
        !self.handle.0.unavailable.load(Ordering::Relaxed)
    }
}

fn last_hash(conn: &Connection) -> Result<(u64, [u8; 32]), AuditError> {
    let row: Option<(i64, Vec<u8>)> = conn
        .query_row("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(sqlite)?;
    Ok(match row {
        None => (0, [0; 32]),
        Some((seq, hash)) => (
            seq as u64 + 1,
            hash.try_into().map_err(|_| storage("a stored hash is not 32 bytes"))?,
        ),
    })
}

/// Reads every record wherever it is, in order, without checking the chain.
pub fn read_records_from(source: &RecordSource) -> Result<Vec<Record>, AuditError> {
    match source {
        RecordSource::Sqlite(dir) => read_records(dir),
        RecordSource::Postgres(db) => pg::read_records(db),
    }
}

/// The latest signed checkpoint wherever the record is, if any.
pub fn latest_checkpoint_from(source: &RecordSource, audit_key_spki: &[u8]) -> Result<Option<Checkpoint>, AuditError> {
    match source {
        RecordSource::Sqlite(dir) => latest_checkpoint(dir, audit_key_spki),
        RecordSource::Postgres(db) => pg::latest_checkpoint(db, audit_key_spki),
    }
}

/// Reads every record, in order, without checking the chain (see [`crate::verify`]).
pub fn read_records(dir: &Path) -> Result<Vec<Record>, AuditError> {
    let path = db_path(dir);
    if !path.exists() {
        return Err(AuditError::Setup(format!("no issuance record at {}", path.display())));
    }
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(storage)?;
    let mut stmt = conn.prepare("SELECT json FROM records ORDER BY seq").map_err(storage)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(storage)?;
    let mut out = Vec::new();
    for row in rows {
        let json = row.map_err(storage)?;
        out.push(
            serde_json::from_str(&json).map_err(|e| AuditError::Storage(format!("a record is not valid JSON: {e}")))?,
        );
    }
    Ok(out)
}
