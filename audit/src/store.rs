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

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use keyless_ca::keys::{Hash, PublicKey};
use keyless_ca::{SignatureAlgorithm, Signer};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use crate::AuditError;
use crate::record::{Record, chain_hash, hex};

/// The checkpoint signature's domain separator.
const CHECKPOINT_DOMAIN: &[u8] = b"keyless-audit-checkpoint-v1\n";

/// Refusals taken into one batch at most, so a backlog of refusals never makes a durable
/// record wait behind a huge transaction.
pub const REFUSALS_PER_BATCH: usize = 1024;

/// At most one "refusals dropped" warning per this period.
const DROP_WARNING_EVERY: Duration = Duration::from_secs(10);

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

/// The audit key's public half (PEM), written next to the record for verifiers (wherever the
/// private key is kept).
pub fn public_key_path(dir: &Path) -> PathBuf {
    dir.join("audit-key.pub.pem")
}

/// Where the audit (checkpoint signing) key is kept unless configured elsewhere.
pub fn default_key_path(dir: &Path) -> PathBuf {
    dir.join("audit-key.pem")
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
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            key: None,
            export: None,
            checkpoint_export: None,
            refusal_queue: 10_000,
        }
    }
}

/// A signed checkpoint as exported for anchoring: `{size, head, time_ms, signature, key_sha256}`
/// (hex head, base64 signature, hex SHA-256 of the audit key's DER SPKI).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Records covered.
    pub size: u64,
    /// The chain hash of record `size - 1` (32 zero bytes for an empty record), hex.
    pub head: String,
    /// When it was signed, ms since the epoch.
    pub time_ms: u64,
    /// The audit key's signature over [`checkpoint_signed_data`], base64.
    pub signature: String,
    /// Which key signed it: hex SHA-256 of the audit public key (DER SPKI).
    pub key_sha256: String,
}

impl Checkpoint {
    fn new(size: u64, head: &[u8; 32], time_ms: u64, signature: &[u8], key_spki: &[u8]) -> Checkpoint {
        Checkpoint {
            size,
            head: hex(head),
            time_ms,
            signature: base64::engine::general_purpose::STANDARD.encode(signature),
            key_sha256: hex(&keyless_ca::keys::sha256(key_spki)),
        }
    }

    /// Reads a checkpoint file (the anchor, or a witness's copy of it).
    pub fn read(path: &Path) -> Result<Checkpoint, AuditError> {
        let text = std::fs::read(path).map_err(|e| AuditError::Setup(format!("checkpoint {}: {e}", path.display())))?;
        serde_json::from_slice(&text).map_err(|e| {
            AuditError::Setup(format!(
                "checkpoint {}: not a checkpoint ({{size, head, time_ms, signature, key_sha256}}): {e}",
                path.display()
            ))
        })
    }

    /// Checks that the audit key `audit_key_spki` signed this checkpoint; returns its head.
    pub fn verify(&self, audit_key_spki: &[u8]) -> Result<[u8; 32], AuditError> {
        let key_sha256 = hex(&keyless_ca::keys::sha256(audit_key_spki));
        if !self.key_sha256.eq_ignore_ascii_case(&key_sha256) {
            return Err(AuditError::Setup(format!(
                "the checkpoint of size {} was signed by audit key {}, not by the audit key in use ({key_sha256})",
                self.size, self.key_sha256
            )));
        }
        let head = crate::sync::unhex32(&self.head.to_ascii_lowercase()).ok_or_else(|| {
            AuditError::Setup(format!("the checkpoint of size {}: head is not a hex hash", self.size))
        })?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| AuditError::Setup(format!("the checkpoint of size {}: signature is not base64", self.size)))?;
        let key = PublicKey::from_spki_der(audit_key_spki).map_err(|e| AuditError::Setup(format!("audit key: {e}")))?;
        if !key.verify(
            Hash::Sha256,
            &checkpoint_signed_data(self.size, &head, self.time_ms),
            &signature,
        ) {
            return Err(AuditError::Setup(format!(
                "the checkpoint of size {} does not carry a valid audit key signature",
                self.size
            )));
        }
        Ok(head)
    }

    /// Writes it to `path` atomically: a temporary file beside it, flushed, then renamed.
    pub fn write_atomically(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, path)
    }
}

/// The latest signed checkpoint in the record in `dir`, if any.
pub fn latest_checkpoint(dir: &Path, audit_key_spki: &[u8]) -> Result<Option<Checkpoint>, AuditError> {
    let conn =
        Connection::open_with_flags(db_path(dir), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(storage)?;
    let row: Option<(i64, Vec<u8>, i64, Vec<u8>)> = conn
        .query_row(
            "SELECT size, head, time_ms, signature FROM checkpoints ORDER BY size DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(storage)?;
    row.map(|(size, head, time_ms, signature)| {
        let head: [u8; 32] = head
            .try_into()
            .map_err(|_| storage("a stored checkpoint head is not 32 bytes"))?;
        Ok(Checkpoint::new(
            size.max(0) as u64,
            &head,
            time_ms.max(0) as u64,
            &signature,
            audit_key_spki,
        ))
    })
    .transpose()
}

struct Pending {
    record: Record,
    done: tokio::sync::oneshot::Sender<Result<u64, AuditError>>,
}

/// What waits for the writer.
#[derive(Default)]
struct Queues {
    durable: VecDeque<Pending>,
    refusals: VecDeque<Record>,
    closed: bool,
}

/// State shared by the handles and the writer thread.
struct Shared {
    queues: Mutex<Queues>,
    wake: Condvar,
    refusal_capacity: usize,
    dropped: AtomicU64,
    /// Dropped since the last warning, and when that was.
    warning: Mutex<(u64, Option<Instant>)>,
    unavailable: AtomicBool,
}

impl Shared {
    fn new(refusal_capacity: usize) -> Shared {
        Shared {
            queues: Mutex::new(Queues::default()),
            wake: Condvar::new(),
            refusal_capacity: refusal_capacity.max(1),
            dropped: AtomicU64::new(0),
            warning: Mutex::new((0, None)),
            unavailable: AtomicBool::new(false),
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a durable record; false once the writer is closing.
    fn push_durable(&self, p: Pending) -> bool {
        let mut q = self.queues();
        if q.closed {
            return false;
        }
        q.durable.push_back(p);
        drop(q);
        self.wake.notify_one();
        true
    }

    /// Queues a refusal, or drops and counts it when the queue is full. Never blocks.
    fn push_refusal(&self, record: Record) {
        let mut q = self.queues();
        if q.closed {
            return;
        }
        if q.refusals.len() >= self.refusal_capacity {
            drop(q);
            self.dropped_refusals(1, "the refusal queue is full");
            return;
        }
        q.refusals.push_back(record);
        drop(q);
        self.wake.notify_one();
    }

    fn dropped_refusals(&self, n: u64, why: &str) {
        if n == 0 {
            return;
        }
        self.dropped.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("keyless_audit_refusals_dropped_total").increment(n);
        let mut w = self.warning.lock().unwrap_or_else(|e| e.into_inner());
        w.0 += n;
        if w.1.is_none_or(|t| t.elapsed() >= DROP_WARNING_EVERY) {
            tracing::warn!(
                dropped = w.0,
                total = self.dropped.load(Ordering::Relaxed),
                capacity = self.refusal_capacity,
                reason = why,
                "refusal records dropped from the issuance record (issuances are unaffected)"
            );
            *w = (0, Some(Instant::now()));
        }
    }

    /// Waits for work; takes every durable record and at most [`REFUSALS_PER_BATCH`] refusals.
    /// `None` once closed and drained.
    fn take_batch(&self) -> Option<(Vec<Pending>, Vec<Record>)> {
        let mut q = self.queues();
        while q.durable.is_empty() && q.refusals.is_empty() {
            if q.closed {
                return None;
            }
            q = self
                .wake
                .wait_timeout(q, Duration::from_secs(1))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let durable: Vec<Pending> = q.durable.drain(..).collect();
        let n = q.refusals.len().min(REFUSALS_PER_BATCH);
        let refusals: Vec<Record> = q.refusals.drain(..n).collect();
        Some((durable, refusals))
    }

    fn close(&self) {
        self.queues().closed = true;
        self.wake.notify_all();
    }
}

/// Closes the queues when the last [`AuditLog`] clone goes: the writer then commits what is
/// queued and stops.
struct Handle(Arc<Shared>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The writer side of the record. Cheap to clone; the writer thread ends with the last clone,
/// after committing everything still queued.
#[derive(Clone)]
pub struct AuditLog {
    handle: Arc<Handle>,
    stopped: Stopped,
}

/// Signals that the writer thread has committed its queue and stopped.
#[derive(Clone, Default)]
pub struct Stopped(Arc<(Mutex<bool>, Condvar)>);

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

/// Reads a PEM (or DER) public key file as DER SPKI.
fn read_spki_file(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => base64::engine::general_purpose::STANDARD
            .decode(
                text.lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>()
                    .trim(),
            )
            .ok(),
        _ => Some(bytes),
    }
}

impl AuditLog {
    /// Opens (creating on first use) the record in `dir` and its audit key, and starts the
    /// writer. Refuses a record that does not verify, and one that lacks the checkpoint
    /// anchored at `options.checkpoint_export`.
    pub fn open(dir: &Path, options: AuditOptions) -> Result<AuditLog, AuditError> {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::Setup(format!("{}: {e}", dir.display())))?;
        let key_path = options.key.clone().unwrap_or_else(|| default_key_path(dir));
        let conn = open_db(&db_path(dir))?;
        let head = last_hash(&conn)?;
        if !key_path.exists() && head.0 > 0 {
            return Err(AuditError::Setup(format!(
                "the audit key {} does not exist, but the issuance record in {} already holds {} records signed with one: restore the key (or point audit.key at it)",
                key_path.display(),
                dir.display(),
                head.0
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
        let report = crate::verify::verify_db(&conn, &spki, anchor.as_ref().map(|(_, c)| c))?;
        if let Some((seq, why)) = report.first_bad {
            return Err(AuditError::Setup(format!(
                "the issuance record in {} fails verification at record {seq}: {why}{}",
                dir.display(),
                anchor
                    .as_ref()
                    .map(|(p, _)| format!(
                        " (against the anchored checkpoint {}; if the record was restored from a backup on purpose, move that file aside)",
                        p.display()
                    ))
                    .unwrap_or_default()
            )));
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
            conn,
            key,
            spki,
            head: Some(head),
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

fn pem_public_key(spki: &[u8]) -> String {
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
        .map_err(sqlite)?;
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
    spki: Vec<u8>,
    /// (next seq, hash of the last record) as committed; `None` after a failure until it is
    /// read back from the database, so it can never run ahead of what is on disk.
    head: Option<(u64, [u8; 32])>,
    export: Option<Box<dyn std::io::Write + Send>>,
    checkpoint_export: Option<PathBuf>,
    anchor_failing: bool,
    /// Since when commits fail, and how many did.
    outage: Option<(Instant, u64)>,
    shared: Arc<Shared>,
}

impl Writer {
    fn run(mut self) {
        while let Some((durable, refusals)) = self.shared.take_batch() {
            self.commit(durable, refusals);
        }
    }

    fn commit(&mut self, durable: Vec<Pending>, refusals: Vec<Record>) {
        let mut records: Vec<&Record> = durable.iter().map(|p| &p.record).collect();
        let n_durable = records.len();
        records.extend(refusals.iter());
        let mut result = self.write(&records);
        if result.is_err() && !refusals.is_empty() {
            // A refusal must never fail an issuance: drop them and retry the durable ones alone.
            self.shared
                .dropped_refusals(refusals.len() as u64, "their commit failed");
            if n_durable > 0 {
                if let Err(e) = &result {
                    tracing::debug!(error = %e, "audit commit failed; retrying the durable records alone");
                }
                records.truncate(n_durable);
                result = self.write(&records);
            }
        }
        match result {
            Ok((start, lines, checkpoint)) => {
                if let Some((since, failures)) = self.outage.take() {
                    tracing::info!(
                        after_s = since.elapsed().as_secs(),
                        failed_commits = failures,
                        "the issuance record is writable again"
                    );
                }
                self.shared.unavailable.store(false, Ordering::Relaxed);
                for (i, p) in durable.into_iter().enumerate() {
                    let _ = p.done.send(Ok(start + i as u64));
                }
                if let Some(out) = self.export.as_mut() {
                    for line in &lines {
                        let _ = writeln!(out, "{line}");
                    }
                    let _ = out.flush();
                }
                self.export_checkpoint(&checkpoint);
            }
            Err(e) => {
                match &mut self.outage {
                    None => {
                        tracing::error!(
                            error = %e,
                            "the issuance record cannot be written: issuances are refused (503) until it can; refusals are dropped"
                        );
                        self.outage = Some((Instant::now(), 1));
                    }
                    Some((_, failures)) => *failures += 1,
                }
                self.shared.unavailable.store(true, Ordering::Relaxed);
                for p in durable {
                    let _ = p.done.send(Err(e.clone()));
                }
            }
        }
    }

    fn export_checkpoint(&mut self, checkpoint: &Checkpoint) {
        let Some(path) = &self.checkpoint_export else {
            return;
        };
        match checkpoint.write_atomically(path) {
            Ok(()) if self.anchor_failing => {
                self.anchor_failing = false;
                tracing::info!(path = %path.display(), "the checkpoint anchor is written again");
            }
            Ok(()) => {}
            Err(e) if !self.anchor_failing => {
                self.anchor_failing = true;
                tracing::warn!(path = %path.display(), error = %e, "cannot write the checkpoint anchor");
            }
            Err(_) => {}
        }
    }

    /// One transaction: the records, chained, and a signed checkpoint over the new head.
    /// Returns the first record's position, the JSON lines and the checkpoint.
    fn write(&mut self, batch: &[&Record]) -> Result<(u64, Vec<String>, Checkpoint), AuditError> {
        let head = match self.head {
            Some(h) => h,
            None => {
                let h = last_hash(&self.conn)?;
                self.head = Some(h);
                h
            }
        };
        match self.transaction(head, batch) {
            Ok((next, lines, checkpoint)) => {
                self.head = Some(next);
                Ok((head.0, lines, checkpoint))
            }
            Err(e) => {
                // The transaction rolled back; read the committed head again rather than trust
                // that nothing reached the disk.
                self.head = last_hash(&self.conn).ok();
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn transaction(
        &mut self,
        head: (u64, [u8; 32]),
        batch: &[&Record],
    ) -> Result<((u64, [u8; 32]), Vec<String>, Checkpoint), AuditError> {
        let tx = self.conn.transaction().map_err(sqlite)?;
        let (mut seq, mut prev) = head;
        let mut lines = Vec::with_capacity(batch.len());
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO records (seq, json, prev_hash, hash) VALUES (?1, ?2, ?3, ?4)")
                .map_err(sqlite)?;
            for r in batch {
                let mut record = (*r).clone();
                record.seq = seq;
                let json = serde_json::to_string(&record).map_err(storage)?;
                let hash = chain_hash(&prev, json.as_bytes());
                insert
                    .execute(params![seq as i64, json, prev.as_slice(), hash.as_slice()])
                    .map_err(sqlite)?;
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
        .map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
        let checkpoint = Checkpoint::new(seq, &prev, time_ms, &signature, &self.spki);
        Ok(((seq, prev), lines, checkpoint))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Decision, Rejection, test_refusal};
    use crate::verify::verify_dir;

    fn spki(dir: &Path) -> Vec<u8> {
        read_spki_file(&public_key_path(dir)).unwrap()
    }

    fn durable(seq: u64, what: &str) -> Record {
        let mut r = test_refusal(seq);
        r.decision = Decision::Intent;
        r.rejection = Some(Rejection {
            class: "test".into(),
            message: what.into(),
        });
        r
    }

    fn close(log: AuditLog) {
        let stopped = log.stopped();
        drop(log);
        assert!(stopped.wait(Duration::from_secs(5)));
    }

    #[test]
    fn refusals_wait_in_a_bounded_queue_and_durable_records_go_first() {
        let shared = Shared::new(4);
        for i in 0..10 {
            shared.push_refusal(test_refusal(i));
        }
        assert_eq!(shared.queues().refusals.len(), 4);
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 6);

        let shared = Shared::new(5000);
        for i in 0..3000 {
            shared.push_refusal(test_refusal(i));
        }
        let mut waiting = Vec::new();
        for i in 0..2 {
            let (done, wait) = tokio::sync::oneshot::channel();
            assert!(shared.push_durable(Pending {
                record: durable(i, "d"),
                done
            }));
            waiting.push(wait);
        }
        let (d, r) = shared.take_batch().unwrap();
        assert_eq!((d.len(), r.len()), (2, REFUSALS_PER_BATCH));
        assert_eq!(r[0].request_id, "req-0", "refusals keep their order");
        let (d, r) = shared.take_batch().unwrap();
        assert_eq!((d.len(), r.len()), (0, REFUSALS_PER_BATCH));
        shared.close();
        assert_eq!(shared.take_batch().map(|(d, r)| (d.len(), r.len())), Some((0, 952)));
        assert!(shared.take_batch().is_none(), "closed and drained");
        let (done, _) = tokio::sync::oneshot::channel();
        assert!(!shared.push_durable(Pending {
            record: durable(9, "late"),
            done
        }));
    }

    #[tokio::test]
    async fn a_failed_batch_is_retried_without_its_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), AuditOptions::default()).unwrap();
        // A real SQLite trigger refuses any record mentioning "poison".
        let conn = Connection::open(db_path(dir.path())).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON records WHEN NEW.json LIKE '%poison%'
             BEGIN SELECT RAISE(ABORT, 'poisoned record'); END;",
        )
        .unwrap();
        // Hold the write lock so the writer blocks on its first batch while the next one queues.
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let a = tokio::spawn({
            let log = log.clone();
            async move { log.append_durable(durable(0, "a")).await }
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut poison = test_refusal(0);
        poison.request_id = "poison".into();
        log.append(poison);
        let b = tokio::spawn({
            let log = log.clone();
            async move { log.append_durable(durable(0, "b")).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(a.await.unwrap().unwrap(), 0);
        assert_eq!(b.await.unwrap().unwrap(), 1, "b committed alone, right after a");
        assert_eq!(log.refusals_dropped(), 1);
        assert!(log.available());

        // A durable record that cannot be committed fails its waiter; the head does not move.
        let err = log.append_durable(durable(0, "poison")).await.unwrap_err();
        assert!(matches!(err, AuditError::Storage(_)), "{err}");
        assert!(err.to_string().contains("poisoned record"), "{err}");
        assert!(!log.available());
        assert_eq!(log.append_durable(durable(0, "c")).await.unwrap(), 2);
        assert!(log.available());
        close(log);
        let report = verify_dir(dir.path(), &spki(dir.path()), None).unwrap();
        assert_eq!((report.records, report.first_bad), (3, None));
        let messages: Vec<String> = read_records(dir.path())
            .unwrap()
            .into_iter()
            .map(|r| r.rejection.unwrap().message)
            .collect();
        assert_eq!(messages, ["a", "b", "c"]);
    }

    /// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
    struct Tmpfs {
        path: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Tmpfs {
        fn mount(size: &str) -> Result<Tmpfs, String> {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .output()
                .map_err(|e| format!("mount: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
            }
            Ok(Tmpfs {
                path: dir.path().to_path_buf(),
                _dir: dir,
            })
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }

    /// Log output captured in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines_with(&self, text: &str) -> usize {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .filter(|l| l.contains(text))
                .count()
        }
    }

    #[tokio::test]
    async fn a_full_disk_is_an_outage_that_ends_by_itself() {
        let logs = Captured::default();
        let writer = logs.clone();
        let _subscriber = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish(),
        );
        let fs = match Tmpfs::mount("3m") {
            Ok(fs) => fs,
            Err(why) => {
                eprintln!("SKIPPED a_full_disk_is_an_outage_that_ends_by_itself: cannot mount a tmpfs ({why})");
                return;
            }
        };
        let dir = fs.path.join("audit");
        let log = AuditLog::open(
            &dir,
            AuditOptions {
                refusal_queue: 8,
                ..AuditOptions::default()
            },
        )
        .unwrap();
        assert_eq!(log.append_durable(durable(0, "before")).await.unwrap(), 0);

        // Fill the filesystem.
        let filler = fs.path.join("filler");
        {
            let mut f = std::fs::File::create(&filler).unwrap();
            let block = vec![0u8; 64 << 10];
            while f.write_all(&block).is_ok() {}
        }
        let big = "x".repeat(16 << 10);
        let mut committed = 0;
        let err = loop {
            match log.append_durable(durable(0, &big)).await {
                Ok(seq) => committed = seq,
                Err(e) => break e,
            }
            assert!(committed < 200, "the disk never filled");
        };
        assert!(matches!(err, AuditError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("full"), "{err}");
        assert!(!log.available());
        // Still out: the next issuance fails fast too, and refusals never block.
        let again = log.append_durable(durable(0, &big)).await.unwrap_err();
        assert!(matches!(again, AuditError::Unavailable(_)), "{again}");
        let started = Instant::now();
        for i in 0..1000 {
            log.append(test_refusal(i));
        }
        assert!(started.elapsed() < Duration::from_millis(500));
        // All but the few in the queue or in the writer's hands (at most 8 a batch) are gone.
        assert!(log.refusals_dropped() >= 900, "{}", log.refusals_dropped());

        // Space returns: the chain continues right after the last committed record (queued
        // refusals may now be committed just before the durable one).
        std::fs::remove_file(&filler).unwrap();
        let seq = log.append_durable(durable(0, "after")).await.unwrap();
        assert!(log.available());
        close(log);
        // One line when the outage began, one when it ended: not one per request.
        assert_eq!(logs.lines_with("the issuance record cannot be written"), 1);
        assert_eq!(logs.lines_with("the issuance record is writable again"), 1);
        assert!(logs.lines_with("refusal records dropped") >= 1);
        let report = verify_dir(&dir, &spki(&dir), None).unwrap();
        assert_eq!(report.first_bad, None, "{report:?}");
        let records = read_records(&dir).unwrap();
        assert_eq!(records.len() as u64, report.records);
        let last = &records[committed as usize].rejection.as_ref().unwrap().message;
        assert_eq!(last, if committed == 0 { "before" } else { big.as_str() });
        assert!(
            records[committed as usize + 1..seq as usize]
                .iter()
                .all(|r| r.decision == Decision::Rejected),
            "nothing durable was lost or duplicated in between"
        );
        assert_eq!(records[seq as usize].rejection.as_ref().unwrap().message, "after");
        assert_eq!(
            report.count("intent"),
            committed + 2,
            "every acknowledged durable record, once"
        );
    }

    #[tokio::test]
    async fn the_audit_key_can_live_on_another_volume() {
        let dir = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let key = keys.path().join("audit.pem");
        let elsewhere = AuditOptions {
            key: Some(key.clone()),
            ..AuditOptions::default()
        };
        let log = AuditLog::open(dir.path(), elsewhere.clone()).unwrap();
        log.append_durable(durable(0, "a")).await.unwrap();
        close(log);
        assert!(key.exists());
        assert!(!default_key_path(dir.path()).exists(), "no key beside the record");
        let report = verify_dir(dir.path(), &spki(dir.path()), None).unwrap();
        assert_eq!((report.records, report.first_bad), (1, None));

        // Forgetting where the key is: refused, and no new key is made beside the record.
        let err = AuditLog::open(dir.path(), AuditOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not exist") && err.contains("restore the key"),
            "{err}"
        );
        assert!(!default_key_path(dir.path()).exists());
        // Another key fails the record's checkpoints, and the published public key stays.
        let other_key = keys.path().join("other.pem");
        keyless_ctlog::load_or_create_key(&other_key).unwrap();
        let other = AuditOptions {
            key: Some(other_key),
            ..AuditOptions::default()
        };
        let before = std::fs::read(public_key_path(dir.path())).unwrap();
        let err = AuditLog::open(dir.path(), other).unwrap_err().to_string();
        assert!(err.contains("valid audit key signature"), "{err}");
        assert_eq!(std::fs::read(public_key_path(dir.path())).unwrap(), before);
        // A public key file that is not the key's is refused rather than silently replaced.
        std::fs::write(public_key_path(dir.path()), pem_public_key(&[0x30, 0x00])).unwrap();
        let err = AuditLog::open(dir.path(), elsewhere.clone()).unwrap_err().to_string();
        assert!(err.contains("is not the public half"), "{err}");
        std::fs::remove_file(public_key_path(dir.path())).unwrap();
        close(AuditLog::open(dir.path(), elsewhere).unwrap());
        assert_eq!(std::fs::read(public_key_path(dir.path())).unwrap(), before);
    }

    #[tokio::test]
    async fn the_anchor_catches_records_removed_together_with_their_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let witness = tempfile::tempdir().unwrap();
        let anchor = witness.path().join("checkpoint.json");
        let options = AuditOptions {
            checkpoint_export: Some(anchor.clone()),
            ..AuditOptions::default()
        };
        let log = AuditLog::open(dir.path(), options.clone()).unwrap();
        for i in 0..5 {
            assert_eq!(log.append_durable(durable(0, &format!("r{i}"))).await.unwrap(), i);
        }
        close(log);
        let key = spki(dir.path());
        let cp = Checkpoint::read(&anchor).unwrap();
        assert_eq!(cp.size, 5);
        assert_eq!(cp.key_sha256, hex(&keyless_ca::keys::sha256(&key)));
        assert_eq!(Some(cp.clone()), latest_checkpoint(dir.path(), &key).unwrap());
        cp.verify(&key).unwrap();
        assert!(!witness.path().join("checkpoint.json.tmp").exists());
        assert_eq!(verify_dir(dir.path(), &key, Some(&cp)).unwrap().first_bad, None);

        // The last two records go, together with the checkpoints that signed them.
        let conn = Connection::open(db_path(dir.path())).unwrap();
        conn.execute_batch("DELETE FROM records WHERE seq >= 3; DELETE FROM checkpoints WHERE size > 3;")
            .unwrap();
        drop(conn);
        let alone = verify_dir(dir.path(), &key, None).unwrap();
        assert_eq!(
            (alone.records, alone.first_bad.clone()),
            (3, None),
            "undetectable from inside"
        );
        let against = verify_dir(dir.path(), &key, Some(&cp)).unwrap();
        let (pos, why) = against.first_bad.unwrap();
        assert_eq!(pos, 3);
        assert!(
            why.contains("records 3 to 4 were removed together with their checkpoints"),
            "{why}"
        );
        // The writer refuses to go on from a record that lost anchored records.
        let err = AuditLog::open(dir.path(), options).unwrap_err().to_string();
        assert!(
            err.contains("at record 3") && err.contains("anchored checkpoint"),
            "{err}"
        );

        // A checkpoint the audit key did not sign proves nothing: an error, not a finding.
        let mut forged = cp.clone();
        forged.size = 2;
        let err = verify_dir(dir.path(), &key, Some(&forged)).unwrap_err().to_string();
        assert!(err.contains("valid audit key signature"), "{err}");
        let mut other = cp.clone();
        other.key_sha256 = "00".repeat(32);
        let err = verify_dir(dir.path(), &key, Some(&other)).unwrap_err().to_string();
        assert!(err.contains("signed by audit key"), "{err}");
        std::fs::write(&anchor, "{}").unwrap();
        let err = Checkpoint::read(&anchor).unwrap_err().to_string();
        assert!(
            err.contains("checkpoint.json") && err.contains("not a checkpoint"),
            "{err}"
        );
    }
}
