//! The issuance record on PostgreSQL, shared by every replica: the same tables as on SQLite plus
//! a one-row `head` (size, hash of the last record) that each batch locks with
//! `SELECT … FOR UPDATE`. Replicas serialize on that row lock, so there is one chain: a batch gets
//! the consecutive positions after the locked head, its checkpoint is signed over the new head
//! and the head row moves, all in one transaction. The head is never cached across
//! transactions (other replicas move it). The cost is one row lock per batch, which the batching
//! of the writer amortizes.
//!
//! Migrations are embedded; they run at start-up in one transaction under
//! `pg_advisory_xact_lock`, so replicas starting together do not race, and a database whose
//! schema is newer than this binary knows is refused. Connect and statement timeouts make a hung
//! server fail closed (503) instead of holding issuances; the pool replaces closed connections,
//! so the writer resumes by itself when the server comes back.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::TryStreamExt as _;
use keyless_ca::Signer;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

use super::pg_tls::MakeRustls;

use super::binding::{CaChain, META_KEY};
use crate::AuditError;
use crate::checkpoint::{Checkpoint, checkpoint_signed_data};
use crate::record::{Record, chain_hash};
use crate::verify::{ChainCheck, VerifyReport};

/// A new connection must be up within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Any statement (including the wait for the head lock) is cancelled by the server after this.
const STATEMENT_TIMEOUT: &str = "10s";
/// A session that stays idle inside a transaction (a replica frozen while holding the head lock)
/// is ended by the server after this, releasing the lock for the others.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "15s";
/// A whole batch transaction, as the client sees it: beyond this the connection is dropped and
/// the batch fails as [`AuditError::Unavailable`], even if the server does not answer at all.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15);
/// Serializes migrations between replicas (an arbitrary constant: "keyless-audit").
const MIGRATION_LOCK: i64 = 0x6b65_796c_6573_7361;

/// The schema, one migration per entry; version N is the first N entries.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE records (
        seq BIGINT PRIMARY KEY, json TEXT NOT NULL, prev_hash BYTEA NOT NULL, hash BYTEA NOT NULL);
     CREATE TABLE checkpoints (
        size BIGINT PRIMARY KEY, head BYTEA NOT NULL, time_ms BIGINT NOT NULL, signature BYTEA NOT NULL);
     CREATE TABLE head (
        id INT PRIMARY KEY CHECK (id = 1), size BIGINT NOT NULL, hash BYTEA NOT NULL);
     INSERT INTO head (id, size, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));",
    // 2: the CA chain bound to the record, and the rate-limit buckets shared by replicas.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE rate_buckets (
        key TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL, granted BOOLEAN NOT NULL,
        updated TIMESTAMPTZ NOT NULL, full_after DOUBLE PRECISION NOT NULL);",
];

/// The schema version this binary writes and reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Where the record is on PostgreSQL (`audit.postgres`). The URL carries a password: `Debug`
/// and [`Postgres::describe`] show only the host and database.
#[derive(Clone, PartialEq, Eq)]
pub struct Postgres {
    /// `postgres://user:password@host:port/db` (or the key=value form); `sslmode=require`
    /// connects over TLS and verifies the server (see `pg_tls`).
    pub url: String,
    /// Connections the writer's pool keeps at most.
    pub pool_size: usize,
    /// PEM roots for the server's certificate (`audit.postgres.ca_cert`); `None`: the system's.
    pub ca_cert_pem: Option<String>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Postgres({}, pool_size: {})", self.describe(), self.pool_size)
    }
}

impl Postgres {
    /// `host:port/db` for messages and logs, never the password.
    pub fn describe(&self) -> String {
        match self.url.parse::<tokio_postgres::Config>() {
            Ok(c) => {
                let host = c
                    .get_hosts()
                    .first()
                    .map(|h| match h {
                        tokio_postgres::config::Host::Tcp(h) => h.clone(),
                        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                    })
                    .unwrap_or_else(|| "localhost".into());
                let port = c.get_ports().first().copied().unwrap_or(5432);
                format!("postgresql {host}:{port}/{}", c.get_dbname().unwrap_or("-"))
            }
            Err(_) => "postgresql (unparsable URL)".into(),
        }
    }

    pub(super) fn config(&self) -> Result<tokio_postgres::Config, AuditError> {
        let mut c: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| AuditError::Setup(format!("audit.postgres.url is not a PostgreSQL URL: {e}")))?;
        let options = format!(
            "{} -c statement_timeout={STATEMENT_TIMEOUT} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT}",
            c.get_options().unwrap_or_default()
        );
        c.options(options.trim())
            .connect_timeout(CONNECT_TIMEOUT)
            .application_name("keyless");
        Ok(c)
    }

    /// The TLS connector the URL asks for: rustls for `sslmode=require`, none otherwise. A CA
    /// bundle without `sslmode=require` is refused rather than silently unused.
    fn tls(&self, config: &tokio_postgres::Config) -> Result<Option<MakeRustls>, AuditError> {
        match (config.get_ssl_mode(), &self.ca_cert_pem) {
            (SslMode::Require, pem) => MakeRustls::new(pem.as_deref()).map(Some),
            (_, Some(_)) => Err(AuditError::Setup(
                "audit.postgres.ca_cert is set but the URL does not say sslmode=require: add it, or drop ca_cert"
                    .into(),
            )),
            (_, None) => Ok(None),
        }
    }

    async fn connect(&self) -> Result<Client, AuditError> {
        let config = self.config()?;
        let client = match self.tls(&config)? {
            Some(tls) => {
                let (client, connection) = config.connect(tls).await.map_err(|e| self.error(e))?;
                tokio::spawn(connection);
                client
            }
            None => {
                let (client, connection) = config.connect(NoTls).await.map_err(|e| self.error(e))?;
                tokio::spawn(connection);
                client
            }
        };
        Ok(client)
    }

    /// A pool of at most `pool_size` connections made from `config`, on the runtime that uses it.
    pub(super) fn pool(&self, config: tokio_postgres::Config) -> Result<Pool, AuditError> {
        let recycling = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match self.tls(&config)? {
            Some(tls) => Manager::from_config(config, tls, recycling),
            None => Manager::from_config(config, NoTls, recycling),
        };
        Pool::builder(manager)
            .max_size(self.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| AuditError::Setup(format!("audit.postgres: {e}")))
    }

    pub(super) fn error(&self, e: tokio_postgres::Error) -> AuditError {
        match pg(e) {
            AuditError::Unavailable(m) => AuditError::Unavailable(format!("{}: {m}", self.describe())),
            AuditError::Storage(m) => AuditError::Storage(format!("{}: {m}", self.describe())),
            other => other,
        }
    }
}

/// A PostgreSQL failure: the connection (refused, closed, timed out) or a server that is
/// shutting down, out of resources or cancelled the statement is an outage
/// ([`AuditError::Unavailable`]); anything else a storage fault.
pub(crate) fn pg(e: tokio_postgres::Error) -> AuditError {
    let outage = match e.code() {
        Some(code) => {
            let c = code.code();
            // 08 connection, 53 resources, 57 operator intervention (incl. statement timeout and
            // shutdown), 40 serialization/deadlock.
            ["08", "53", "57", "40"].iter().any(|class| c.starts_with(class))
        }
        None => {
            e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) || {
                let m = e.to_string();
                m.contains("connect") || m.contains("timeout") || m.contains("timed out")
            }
        }
    };
    let text = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        // With the causes: "error performing TLS handshake" alone does not say the certificate
        // was refused, nor "error connecting to server" why.
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    };
    if outage {
        AuditError::Unavailable(text)
    } else {
        AuditError::Storage(text)
    }
}

fn storage(e: impl std::fmt::Display) -> AuditError {
    AuditError::Storage(e.to_string())
}

/// Runs `fut` on a private current-thread runtime in a scoped thread: the readers are called
/// from synchronous code and from inside other runtimes (the review page) alike.
fn run<T: Send>(fut: impl Future<Output = Result<T, AuditError>> + Send) -> Result<T, AuditError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| AuditError::Setup(format!("cannot start a runtime for PostgreSQL: {e}")))?
                .block_on(fut)
        })
        .join()
        .unwrap_or_else(|_| Err(AuditError::Storage("the PostgreSQL reader panicked".into())))
    })
}

/// The schema version in the database (0: none yet).
async fn schema_version(c: &impl tokio_postgres::GenericClient, db: &Postgres) -> Result<i32, AuditError> {
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(|e| db.error(e))?
        .try_get(0)
        .map_err(storage)?;
    if !exists {
        return Ok(0);
    }
    c.query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .map_err(|e| db.error(e))?
        .try_get(0)
        .map_err(storage)
}

fn newer(db: &Postgres, found: i32) -> AuditError {
    AuditError::Setup(format!(
        "the issuance record in {} has schema version {found}, newer than version {SCHEMA_VERSION} that this keyless knows: upgrade keyless",
        db.describe()
    ))
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction under an advisory lock; refuses a
/// newer one.
async fn migrate(client: &mut Client, db: &Postgres) -> Result<(), AuditError> {
    let tx = client.transaction().await.map_err(|e| db.error(e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| db.error(e))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INT PRIMARY KEY)")
        .await
        .map_err(|e| db.error(e))?;
    let found = schema_version(&tx, db).await?;
    if found > SCHEMA_VERSION {
        return Err(newer(db, found));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        tx.batch_execute(sql).await.map_err(|e| db.error(e))?;
        tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&(i as i32 + 1)])
            .await
            .map_err(|e| db.error(e))?;
        tracing::info!(version = i + 1, database = %db.describe(), "issuance record schema migrated");
    }
    tx.commit().await.map_err(|e| db.error(e))
}

/// A reader's connection: the schema must exist and not be newer than this binary's.
async fn reader(db: &Postgres) -> Result<Client, AuditError> {
    let client = db.connect().await?;
    match schema_version(&client, db).await? {
        0 => Err(AuditError::Setup(format!("no issuance record in {}", db.describe()))),
        v if v > SCHEMA_VERSION => Err(newer(db, v)),
        _ => Ok(client),
    }
}

fn hash32(v: Vec<u8>, what: &str) -> Result<[u8; 32], AuditError> {
    v.try_into()
        .map_err(|_| storage(format!("a stored {what} is not 32 bytes")))
}

/// Reads the records and checkpoints into `check` from one snapshot: other replicas commit while
/// this reads, and a checkpoint committed after the records were read would sign records this
/// reader never saw.
async fn verify_with(client: &mut Client, check: &mut ChainCheck, db: &Postgres) -> Result<(), AuditError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| db.error(e))?;
    let rows = tx
        .query_raw(
            "SELECT seq, json, prev_hash, hash FROM records ORDER BY seq",
            std::iter::empty::<i64>(),
        )
        .await
        .map_err(|e| db.error(e))?;
    futures_util::pin_mut!(rows);
    while let Some(row) = rows.try_next().await.map_err(|e| db.error(e))? {
        let seq: i64 = row.try_get(0).map_err(storage)?;
        let json: String = row.try_get(1).map_err(storage)?;
        let prev: Vec<u8> = row.try_get(2).map_err(storage)?;
        let hash: Vec<u8> = row.try_get(3).map_err(storage)?;
        check.record(seq, &json, &prev, &hash);
    }
    let rows = tx
        .query_raw(
            "SELECT size, head, time_ms, signature FROM checkpoints ORDER BY size",
            std::iter::empty::<i64>(),
        )
        .await
        .map_err(|e| db.error(e))?;
    futures_util::pin_mut!(rows);
    while let Some(row) = rows.try_next().await.map_err(|e| db.error(e))? {
        let size: i64 = row.try_get(0).map_err(storage)?;
        let head: Vec<u8> = row.try_get(1).map_err(storage)?;
        let time_ms: i64 = row.try_get(2).map_err(storage)?;
        let signature: Vec<u8> = row.try_get(3).map_err(storage)?;
        check.checkpoint(size, head, time_ms, &signature);
    }
    tx.commit().await.map_err(|e| db.error(e))
}

/// `keyless audit verify` on PostgreSQL: the same check as on SQLite.
pub(crate) fn verify(db: &Postgres, spki: &[u8], anchor: Option<&Checkpoint>) -> Result<VerifyReport, AuditError> {
    let mut check = ChainCheck::new(spki, anchor)?;
    run(async {
        let mut client = reader(db).await?;
        verify_with(&mut client, &mut check, db).await
    })?;
    Ok(check.finish())
}

/// Every record, in order.
pub(crate) fn read_records(db: &Postgres) -> Result<Vec<Record>, AuditError> {
    run(async {
        let client = reader(db).await?;
        let rows = client
            .query("SELECT json FROM records ORDER BY seq", &[])
            .await
            .map_err(|e| db.error(e))?;
        rows.iter()
            .map(|r| {
                let json: String = r.try_get(0).map_err(storage)?;
                serde_json::from_str(&json).map_err(|e| storage(format!("a record is not valid JSON: {e}")))
            })
            .collect()
    })
}

/// The latest signed checkpoint, if any.
pub(crate) fn latest_checkpoint(db: &Postgres, spki: &[u8]) -> Result<Option<Checkpoint>, AuditError> {
    run(async {
        let client = reader(db).await?;
        let row = client
            .query_opt(
                "SELECT size, head, time_ms, signature FROM checkpoints ORDER BY size DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(|e| db.error(e))?;
        row.map(|r| {
            let signature: Vec<u8> = r.try_get(3).map_err(storage)?;
            Checkpoint::from_stored(
                r.try_get(0).map_err(storage)?,
                r.try_get(1).map_err(storage)?,
                r.try_get(2).map_err(storage)?,
                &signature,
                spki,
            )
        })
        .transpose()
    })
}

/// `keyless audit adopt-ca-chain` on PostgreSQL (migrating first, like a starting replica).
pub(crate) fn adopt_chain(db: &Postgres, chain: &CaChain) -> Result<Option<String>, AuditError> {
    run(async {
        let mut client = db.connect().await?;
        migrate(&mut client, db).await?;
        let tx = client.transaction().await.map_err(|e| db.error(e))?;
        let previous = tx
            .query_opt("SELECT value FROM meta WHERE key = $1 FOR UPDATE", &[&META_KEY])
            .await
            .map_err(|e| db.error(e))?
            .map(|r| r.try_get::<_, String>(0))
            .transpose()
            .map_err(storage)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&META_KEY, &chain.fingerprints()],
        )
        .await
        .map_err(|e| db.error(e))?;
        tx.commit().await.map_err(|e| db.error(e))?;
        Ok(previous)
    })
}

/// The writer's side: a private current-thread runtime (driven only while the writer thread
/// works) and a connection pool on it.
pub(super) struct PgWriter {
    db: Postgres,
    /// Always `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
}

impl Drop for PgWriter {
    /// Without blocking: the writer may be dropped by an opener inside another runtime.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl PgWriter {
    /// Connects, migrates and returns the writer with the record's current size. Fails when the
    /// server cannot be reached: a replica without its record cannot issue.
    pub(super) fn open(db: &Postgres) -> Result<(PgWriter, u64), AuditError> {
        // The pool first: a runtime must not be dropped (on an error) inside an async opener.
        let pool = db.pool(db.config()?)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AuditError::Setup(format!("cannot start the audit writer's runtime: {e}")))?;
        let writer = PgWriter {
            db: db.clone(),
            rt: Some(rt),
            pool,
        };
        let size = writer.block_on(async {
            let mut client = writer.client().await?;
            migrate(&mut client, db).await?;
            let row = client
                .query_one("SELECT size FROM head WHERE id = 1", &[])
                .await
                .map_err(|e| db.error(e))?;
            row.try_get::<_, i64>(0).map_err(storage)
        })?;
        Ok((writer, size.max(0) as u64))
    }

    /// Runs `fut` on the writer's runtime: directly on the writer thread, on a scoped thread
    /// when called from inside another runtime (an opener in the service or a test).
    fn block_on<T: Send>(&self, fut: impl Future<Output = Result<T, AuditError>> + Send) -> Result<T, AuditError> {
        let Some(rt) = &self.rt else {
            return Err(AuditError::Storage("the audit writer has stopped".into()));
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return rt.block_on(fut);
        }
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(fut))
                .join()
                .unwrap_or_else(|_| Err(AuditError::Storage("the PostgreSQL writer panicked".into())))
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, AuditError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => self.db.error(e),
            other => AuditError::Unavailable(format!("{}: {other}", self.db.describe())),
        })
    }

    /// Verifies the whole record (at start-up, before extending it).
    pub(super) fn verify(&self, spki: &[u8], anchor: Option<&Checkpoint>) -> Result<VerifyReport, AuditError> {
        let mut check = ChainCheck::new(spki, anchor)?;
        self.block_on(async {
            let mut client = self.client().await?;
            verify_with(&mut client, &mut check, &self.db).await
        })?;
        Ok(check.finish())
    }

    /// Binds `chain` to the record on first use, or checks it against the bound one (replicas
    /// starting together with the same chain both pass: the first insert wins, the second reads it).
    pub(super) fn bind_chain(&self, chain: &CaChain) -> Result<(), AuditError> {
        let stored = self.block_on(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                    &[&META_KEY, &chain.fingerprints()],
                )
                .await
                .map_err(|e| self.db.error(e))?;
            client
                .query_one("SELECT value FROM meta WHERE key = $1", &[&META_KEY])
                .await
                .map_err(|e| self.db.error(e))?
                .try_get::<_, String>(0)
                .map_err(storage)
        })?;
        chain.check(&stored, &self.db.describe())
    }

    /// Where the record is, for messages.
    pub(super) fn describe(&self) -> String {
        self.db.describe()
    }

    /// Whether the server answers (the writer asks while idle, so readiness follows an outage
    /// and its end without traffic).
    pub(super) fn probe(&self) -> Result<(), AuditError> {
        self.block_on(async {
            let client = self.client().await?;
            match tokio::time::timeout(CONNECT_TIMEOUT, client.simple_query("SELECT 1")).await {
                Ok(r) => r.map(drop).map_err(|e| self.db.error(e)),
                Err(_) => {
                    drop(deadpool_postgres::Object::take(client));
                    Err(AuditError::Unavailable(format!(
                        "{}: no answer within 5 s",
                        self.db.describe()
                    )))
                }
            }
        })
    }

    /// One transaction: lock the head, append the batch after it, sign a checkpoint over the
    /// new head, move the head. Returns the first record's position, the JSON lines and the
    /// checkpoint.
    pub(super) fn write(
        &self,
        batch: &[&Record],
        key: &keyless_ca::SoftwareSigner,
        spki: &[u8],
    ) -> Result<(u64, Vec<String>, Checkpoint), AuditError> {
        self.block_on(async {
            let mut client = self.client().await?;
            let result = tokio::time::timeout(TRANSACTION_TIMEOUT, transaction(&mut client, batch, key, spki)).await;
            let result = match result {
                Ok(r) => r.map_err(|e| match e {
                    TxError::Pg(e) => self.db.error(e),
                    TxError::Audit(e) => e,
                }),
                Err(_) => Err(AuditError::Unavailable(format!(
                    "{}: the transaction took more than {} s",
                    self.db.describe(),
                    TRANSACTION_TIMEOUT.as_secs()
                ))),
            };
            if matches!(result, Err(AuditError::Unavailable(_))) {
                // Do not return a connection in an unknown state to the pool.
                drop(deadpool_postgres::Object::take(client));
            }
            result
        })
    }
}

enum TxError {
    Pg(tokio_postgres::Error),
    Audit(AuditError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        TxError::Pg(e)
    }
}

impl From<AuditError> for TxError {
    fn from(e: AuditError) -> Self {
        TxError::Audit(e)
    }
}

async fn transaction(
    client: &mut deadpool_postgres::Object,
    batch: &[&Record],
    key: &keyless_ca::SoftwareSigner,
    spki: &[u8],
) -> Result<(u64, Vec<String>, Checkpoint), TxError> {
    let tx = client.transaction().await?;
    // Every replica's batch waits here for the others': one chain, no forks.
    // Prepared once per connection (the pool keeps them): every batch runs these same four.
    let head = tx
        .query_one(
            &tx.prepare_cached("SELECT size, hash FROM head WHERE id = 1 FOR UPDATE")
                .await?,
            &[],
        )
        .await?;
    let start: i64 = head.try_get(0)?;
    let mut prev = hash32(head.try_get(1)?, "head hash")?;
    let start = start.max(0) as u64;
    let mut seq = start;
    let n = batch.len();
    let (mut seqs, mut jsons, mut prevs, mut hashes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for r in batch {
        let mut record = (*r).clone();
        record.seq = seq;
        let json = serde_json::to_string(&record).map_err(storage)?;
        let hash = chain_hash(&prev, json.as_bytes());
        seqs.push(seq as i64);
        prevs.push(prev.to_vec());
        hashes.push(hash.to_vec());
        jsons.push(json);
        prev = hash;
        seq += 1;
    }
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO records (seq, json, prev_hash, hash)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::bytea[])",
        )
        .await?,
        &[&seqs, &jsons, &prevs, &hashes],
    )
    .await?;
    let time_ms = crate::now_ms();
    let signature = key
        .sign(&checkpoint_signed_data(seq, &prev, time_ms))
        .map_err(|e| storage(format!("checkpoint signing: {e}")))?;
    tx.execute(
        &tx.prepare_cached("INSERT INTO checkpoints (size, head, time_ms, signature) VALUES ($1, $2, $3, $4)")
            .await?,
        &[&(seq as i64), &prev.as_slice(), &(time_ms as i64), &signature],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached("UPDATE head SET size = $1, hash = $2 WHERE id = 1")
            .await?,
        &[&(seq as i64), &prev.as_slice()],
    )
    .await?;
    tx.commit().await?;
    Ok((start, jsons, Checkpoint::new(seq, &prev, time_ms, &signature, spki)))
}
