//! Rate-limit buckets shared by replicas, kept in the record's PostgreSQL database (table
//! `rate_buckets`, created by the record's migrations). One statement per bucket: an upsert that
//! refills the bucket by the time elapsed on the database's clock (replicas' clocks never meet),
//! takes a token if there is one, and returns the outcome. PostgreSQL's row lock serializes
//! concurrent takes of one bucket, so a limit of N holds across any number of replicas exactly,
//! as on one.
//!
//! These sessions commit with `synchronous_commit = off`: a bucket is a counter, not a record, and
//! waiting for the WAL flush would make the issuer's bucket (one row every issuance touches) a
//! queue of disk flushes. A database crash can forget the last fraction of a second of takes,
//! loosening the limits by that much; nothing else is at stake.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use super::pg::Postgres;
use crate::AuditError;

/// How long one take may wait (including for a connection) before the issuance fails closed.
const TAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a replica deletes buckets that have been idle long enough to be full again.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

const TAKE: &str = "
INSERT INTO rate_buckets AS b (key, tokens, granted, updated, full_after)
VALUES ($1, $2::float8 - 1, $2::float8 >= 1, statement_timestamp(), $4::float8)
ON CONFLICT (key) DO UPDATE SET
  granted = least($2::float8, b.tokens + greatest(0, extract(epoch FROM statement_timestamp() - b.updated)::float8) * $3::float8) >= 1,
  tokens = least($2::float8, b.tokens + greatest(0, extract(epoch FROM statement_timestamp() - b.updated)::float8) * $3::float8)
    - CASE WHEN least($2::float8, b.tokens + greatest(0, extract(epoch FROM statement_timestamp() - b.updated)::float8) * $3::float8) >= 1
      THEN 1 ELSE 0 END,
  updated = greatest(b.updated, statement_timestamp()),
  full_after = $4::float8
RETURNING tokens, granted";

/// The buckets of every replica, in PostgreSQL. Its pool lives on the caller's runtime (the
/// service's); the schema is made by the record writer, which opens first.
pub struct SharedBuckets {
    db: Postgres,
    pool: Pool,
    last_prune: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for SharedBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedBuckets({})", self.db.describe())
    }
}

impl SharedBuckets {
    /// A pool of `db.pool_size` connections, opened on first use.
    pub fn new(db: &Postgres) -> Result<SharedBuckets, AuditError> {
        let mut config = db.config()?;
        let options = format!("{} -c synchronous_commit=off", config.get_options().unwrap_or_default());
        config.options(options.trim());
        let pool = db.pool(config)?;
        Ok(SharedBuckets {
            db: db.clone(),
            pool,
            last_prune: Mutex::new(None),
        })
    }

    /// Takes a token from the bucket `key` (`burst` tokens, refilled at `per_second`): `Ok(())`,
    /// or how long until it has one. A bucket idle for its `full_after` is full again; such rows
    /// are deleted now and then. [`AuditError::Unavailable`] when the database does not answer in
    /// time.
    pub async fn take(
        &self,
        key: &str,
        burst: u32,
        per_second: f64,
        full_after: Duration,
    ) -> Result<Result<(), Duration>, AuditError> {
        let work = async {
            let client = self.pool.get().await.map_err(|e| match e {
                deadpool_postgres::PoolError::Backend(e) => self.db.error(e),
                other => AuditError::Unavailable(format!("{}: {other}", self.db.describe())),
            })?;
            if self.prune_due() {
                client
                    .execute(
                        "DELETE FROM rate_buckets WHERE updated < statement_timestamp() - make_interval(secs => full_after)",
                        &[],
                    )
                    .await
                    .map_err(|e| self.db.error(e))?;
            }
            // Prepared once per connection: parsing and planning the upsert cost more than running it.
            let take = client.prepare_cached(TAKE).await.map_err(|e| self.db.error(e))?;
            let row = client
                .query_one(
                    &take,
                    &[&key, &f64::from(burst), &per_second, &full_after.as_secs_f64()],
                )
                .await
                .map_err(|e| self.db.error(e))?;
            let tokens: f64 = row.try_get(0).map_err(|e| AuditError::Storage(e.to_string()))?;
            let granted: bool = row.try_get(1).map_err(|e| AuditError::Storage(e.to_string()))?;
            Ok(if granted {
                Ok(())
            } else {
                Err(Duration::from_secs_f64(((1.0 - tokens) / per_second).max(0.0)))
            })
        };
        match tokio::time::timeout(TAKE_TIMEOUT, work).await {
            Ok(outcome) => outcome,
            Err(_) => Err(AuditError::Unavailable(format!(
                "{}: no answer within {} s",
                self.db.describe(),
                TAKE_TIMEOUT.as_secs()
            ))),
        }
    }

    fn prune_due(&self) -> bool {
        let mut last = self.last_prune.lock().expect("poisoned");
        let now = Instant::now();
        let due = last.is_none_or(|t| now.duration_since(t) >= PRUNE_EVERY);
        if due {
            *last = Some(now);
        }
        due
    }
}
