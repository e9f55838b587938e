//! The writer thread: one transaction per batch (the records, chained, and a checkpoint signed by
//! the audit key over the new head), the JSON-lines and checkpoint exports after each commit, and
//! storage outages: durable waiters get [`AuditError::Unavailable`], the outage is logged once
//! when it starts and once when it ends, and the head is re-read from disk after any failure.
//! On PostgreSQL the head is read (and locked) inside each transaction instead, and an idle
//! writer asks the server every [`PROBE_EVERY`] whether it answers, so readiness shows an outage
//! (and its end) without waiting for traffic.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use keyless_ca::Signer;
use rusqlite::{Connection, params};

use super::pg::PgWriter;
use super::queue::{Pending, Shared, Taken};
use super::{last_hash, sqlite, storage};
use crate::checkpoint::{Checkpoint, checkpoint_signed_data};
use crate::record::{Record, chain_hash};
use crate::{AuditError, now_ms};

/// How often an idle writer on PostgreSQL checks that the server answers.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Where the writer commits.
pub(super) enum Backend {
    /// The connection, and (next seq, hash of the last record) as committed; `None` after a
    /// failure until it is read back from the database, so it can never run ahead of what is on
    /// disk.
    Sqlite(Connection, Option<(u64, [u8; 32])>),
    /// Shared with other replicas: the head is read under lock in every transaction.
    Postgres(PgWriter),
}

pub(super) struct Writer {
    pub(super) backend: Backend,
    pub(super) key: keyless_ca::SoftwareSigner,
    pub(super) spki: Vec<u8>,
    pub(super) export: Option<Box<dyn std::io::Write + Send>>,
    pub(super) checkpoint_export: Option<PathBuf>,
    pub(super) anchor_failing: bool,
    /// Since when commits fail, and how many did.
    pub(super) outage: Option<(Instant, u64)>,
    pub(super) shared: Arc<Shared>,
}

impl Writer {
    pub(super) fn run(mut self) {
        let idle = match self.backend {
            Backend::Sqlite(..) => None,
            Backend::Postgres(_) => Some(PROBE_EVERY),
        };
        loop {
            match self.shared.take_batch_or_idle(idle) {
                Taken::Batch(durable, refusals) => self.commit(durable, refusals),
                Taken::Idle => self.probe(),
                Taken::Closed => break,
            }
        }
    }

    /// Idle on PostgreSQL: is the server there? Starts or ends an outage as a commit would.
    fn probe(&mut self) {
        let Backend::Postgres(pg) = &self.backend else {
            return;
        };
        match pg.probe() {
            Ok(()) => self.writable(),
            Err(e) => self.unwritable(&e, 0),
        }
    }

    /// The record takes writes: ends an outage, logged once with how long it lasted.
    fn writable(&mut self) {
        if let Some((since, failures)) = self.outage.take() {
            tracing::info!(
                after_s = since.elapsed().as_secs(),
                failed_commits = failures,
                "the issuance record is writable again"
            );
        }
        self.shared.unavailable.store(false, Ordering::Relaxed);
    }

    /// The record does not take writes: starts an outage (logged once, with its cause) or adds
    /// `failed_commits` to the one under way.
    fn unwritable(&mut self, e: &AuditError, failed_commits: u64) {
        match &mut self.outage {
            None => {
                tracing::error!(
                    error = %e,
                    "the issuance record cannot be written: issuances are refused (503) until it can; refusals are dropped"
                );
                self.outage = Some((Instant::now(), failed_commits));
            }
            Some((_, failures)) => *failures += failed_commits,
        }
        self.shared.unavailable.store(true, Ordering::Relaxed);
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
                self.writable();
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
                self.unwritable(&e, 1);
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
        let (conn, cached) = match &mut self.backend {
            Backend::Postgres(pg) => return pg.write(batch, &self.key, &self.spki),
            Backend::Sqlite(conn, cached) => (conn, cached),
        };
        let head = match *cached {
            Some(h) => h,
            None => {
                let h = last_hash(conn)?;
                *cached = Some(h);
                h
            }
        };
        match transaction(conn, &self.key, &self.spki, head, batch) {
            Ok((next, lines, checkpoint)) => {
                *cached = Some(next);
                Ok((head.0, lines, checkpoint))
            }
            Err(e) => {
                // The transaction rolled back; read the committed head again rather than trust
                // that nothing reached the disk.
                *cached = last_hash(conn).ok();
                Err(e)
            }
        }
    }
}

#[allow(clippy::type_complexity)]
fn transaction(
    conn: &mut Connection,
    key: &keyless_ca::SoftwareSigner,
    spki: &[u8],
    head: (u64, [u8; 32]),
    batch: &[&Record],
) -> Result<((u64, [u8; 32]), Vec<String>, Checkpoint), AuditError> {
    let tx = conn.transaction().map_err(sqlite)?;
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
    let signature = key
        .sign(&data)
        .map_err(|e| storage(format!("checkpoint signing: {e}")))?;
    tx.execute(
        "INSERT OR REPLACE INTO checkpoints (size, head, time_ms, signature) VALUES (?1, ?2, ?3, ?4)",
        params![seq as i64, prev.as_slice(), time_ms as i64, signature],
    )
    .map_err(sqlite)?;
    tx.commit().map_err(sqlite)?;
    let checkpoint = Checkpoint::new(seq, &prev, time_ms, &signature, spki);
    Ok(((seq, prev), lines, checkpoint))
}
