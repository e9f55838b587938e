//! The issuance record on disk: SQLite (WAL, `synchronous=FULL`) in `<data_dir>/audit/`, written
//! by one thread that commits every queued record in one transaction together with a checkpoint
//! signed by the audit key, in the same discipline as the embedded CT log. An `issued` record is
//! durable before its certificate is returned; `rejected` records are written without waiting.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use keyless_ca::{SignatureAlgorithm, Signer};
use rusqlite::{Connection, OptionalExtension, params};

use crate::AuditError;
use crate::record::{Record, chain_hash};

/// The checkpoint signature's domain separator.
const CHECKPOINT_DOMAIN: &[u8] = b"keyless-audit-checkpoint-v1\n";

/// The bytes a checkpoint signature covers.
pub fn checkpoint_signed_data(size: u64, head: &[u8; 32], time_ms: u64) -> Vec<u8> {
    let mut out = CHECKPOINT_DOMAIN.to_vec();
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(&time_ms.to_be_bytes());
    out
}

/// Where the record lives under a data directory.
pub fn audit_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("audit")
}

/// The record database file.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("record.sqlite")
}

/// The audit key's public half (PEM), written next to the key for verifiers.
pub fn public_key_path(dir: &Path) -> PathBuf {
    dir.join("audit-key.pub.pem")
}

fn storage(e: impl std::fmt::Display) -> AuditError {
    AuditError::Storage(e.to_string())
}

pub(crate) fn open_db(path: &Path) -> Result<Connection, AuditError> {
    let conn = Connection::open(path).map_err(storage)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS records (
             seq INTEGER PRIMARY KEY, json TEXT NOT NULL, prev_hash BLOB NOT NULL, hash BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS checkpoints (
             size INTEGER PRIMARY KEY, head BLOB NOT NULL, time_ms INTEGER NOT NULL, signature BLOB NOT NULL);",
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

struct Pending {
    record: Record,
    done: Option<tokio::sync::oneshot::Sender<Result<u64, AuditError>>>,
}

/// The writer side of the record. Cheap to clone; the writer thread ends with the last clone,
/// after committing everything still queued.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
    stopped: Stopped,
}

/// Signals that the writer thread has committed its queue and stopped.
#[derive(Clone, Default)]
pub struct Stopped(std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Stopped {
    fn set(&self) {
        let (flag, cv) = &*self.0;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }

    /// Blocks until the writer has stopped (true) or `timeout` passed (false).
    pub fn wait(&self, timeout: Duration) -> bool {
        let (flag, cv) = &*self.0;
        let guard = flag.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (creating on first use) the record in `dir` and its audit key, and starts the writer.
    pub fn open(dir: &Path, export: Option<Export>) -> Result<AuditLog, AuditError> {
        std::fs::create_dir_all(dir).map_err(storage)?;
        let key = keyless_ctlog::load_or_create_key(&dir.join("audit-key.pem"))
            .map_err(|e| AuditError::Setup(format!("audit key: {e}")))?;
        let pub_path = public_key_path(dir);
        if !pub_path.exists() {
            std::fs::write(&pub_path, pem_public_key(key.public_key_spki())).map_err(storage)?;
        }
        let conn = open_db(&db_path(dir))?;
        // Refuse to extend a record that does not verify: appending would bless the damage.
        let report = crate::verify::verify_db(&conn, key.public_key_spki())?;
        if let Some((seq, why)) = report.first_bad {
            return Err(AuditError::Setup(format!(
                "the issuance record in {} fails verification at record {seq}: {why}",
                dir.display()
            )));
        }
        let (tx, rx) = mpsc::channel::<Pending>();
        let export = match export {
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
        let head = last_hash(&conn)?;
        let stopped = Stopped::default();
        let on_exit = stopped.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                Writer {
                    conn,
                    key,
                    head,
                    export,
                }
                .run(rx);
                on_exit.set();
            })
            .map_err(|e| AuditError::Setup(format!("cannot start the audit writer: {e}")))?;
        Ok(AuditLog { tx, stopped })
    }

    /// A handle that tells when the writer has drained its queue and stopped (after the last
    /// clone of this log is dropped), so a shutdown loses no queued refusal.
    pub fn stopped(&self) -> Stopped {
        self.stopped.clone()
    }

    /// Appends `record` and waits until it is durably committed; returns its position.
    pub async fn append_durable(&self, record: Record) -> Result<u64, AuditError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.tx
            .send(Pending {
                record,
                done: Some(done),
            })
            .map_err(|_| AuditError::Storage("the audit writer has stopped".into()))?;
        wait.await
            .map_err(|_| AuditError::Storage("the audit writer has stopped".into()))?
    }

    /// Appends `record` without waiting (rejections: nothing was promised to anyone).
    pub fn append(&self, record: Record) {
        let _ = self.tx.send(Pending { record, done: None });
    }
}

fn pem_public_key(spki: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

fn last_hash(conn: &Connection) -> Result<(u64, [u8; 32]), AuditError> {
    let row: Option<(i64, Vec<u8>)> = conn
        .query_row("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(storage)?;
    Ok(match row {
        None => (0, [0; 32]),
        Some((seq, hash)) => (
            seq as u64 + 1,
            hash.try_into().map_err(|_| storage("a stored hash is not 32 bytes"))?,
        ),
    })
}

struct Writer {
    conn: Connection,
    key: keyless_ca::SoftwareSigner,
    /// (next seq, hash of the last record)
    head: (u64, [u8; 32]),
    export: Option<Box<dyn std::io::Write + Send>>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Pending>) {
        loop {
            let first = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(p) => p,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Pending>) {
        let start = self.head;
        let result = self.write(&batch);
        match result {
            Ok(lines) => {
                for (i, p) in batch.into_iter().enumerate() {
                    if let Some(done) = p.done {
                        let _ = done.send(Ok(start.0 + i as u64));
                    }
                }
                if let Some(out) = self.export.as_mut() {
                    for line in lines {
                        let _ = writeln!(out, "{line}");
                    }
                    let _ = out.flush();
                }
            }
            Err(e) => {
                self.head = start;
                tracing::error!(error = %e, records = batch.len(), "audit record commit failed");
                for p in batch {
                    if let Some(done) = p.done {
                        let _ = done.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// One transaction: the records, chained, and a signed checkpoint over the new head.
    fn write(&mut self, batch: &[Pending]) -> Result<Vec<String>, AuditError> {
        let tx = self.conn.transaction().map_err(storage)?;
        let (mut seq, mut prev) = self.head;
        let mut lines = Vec::with_capacity(batch.len());
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO records (seq, json, prev_hash, hash) VALUES (?1, ?2, ?3, ?4)")
                .map_err(storage)?;
            for p in batch {
                let mut record = p.record.clone();
                record.seq = seq;
                let json = serde_json::to_string(&record).map_err(storage)?;
                let hash = chain_hash(&prev, json.as_bytes());
                insert
                    .execute(params![seq as i64, json, prev.as_slice(), hash.as_slice()])
                    .map_err(storage)?;
                lines.push(json);
                prev = hash;
                seq += 1;
            }
        }
        let time_ms = now_ms();
        let data = checkpoint_signed_data(seq, &prev, time_ms);
        let signature = self
            .key
            .sign(&data)
            .map_err(|e| storage(format!("checkpoint signing: {e}")))?;
        tx.execute(
            "INSERT OR REPLACE INTO checkpoints (size, head, time_ms, signature) VALUES (?1, ?2, ?3, ?4)",
            params![seq as i64, prev.as_slice(), time_ms as i64, signature],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)?;
        self.head = (seq, prev);
        Ok(lines)
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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

/// The audit key's algorithm: checkpoints are ECDSA P-256 with SHA-256.
pub const CHECKPOINT_ALGORITHM: SignatureAlgorithm = SignatureAlgorithm::EcdsaP256Sha256;
