//! SQLite storage for the embedded log: a real file, WAL mode, `synchronous=FULL` so a committed
//! entry survives a crash or power loss.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};

use crate::LogError;
use crate::merkle::Hash;

fn storage(e: rusqlite::Error) -> LogError {
    LogError::Storage(e.to_string())
}

/// One stored entry.
pub(crate) struct Entry {
    pub(crate) leaf_input: Vec<u8>,
    pub(crate) extra_data: Vec<u8>,
}

/// A stored signed tree head.
pub(crate) struct StoredSth {
    pub(crate) tree_size: u64,
    pub(crate) timestamp: u64,
    pub(crate) root: Hash,
    pub(crate) signature: Vec<u8>,
}

/// Opens (creating if needed) the log database for writing.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, LogError> {
    let conn = Connection::open(path).map_err(storage)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(storage)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(storage)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS chains (
             hash BLOB PRIMARY KEY,
             certs BLOB NOT NULL) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS entries (
             idx INTEGER PRIMARY KEY,
             leaf_input BLOB NOT NULL,
             extra_prefix BLOB NOT NULL,
             chain_hash BLOB NOT NULL REFERENCES chains(hash),
             leaf_hash BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS sths (
             tree_size INTEGER NOT NULL,
             timestamp INTEGER NOT NULL PRIMARY KEY,
             root BLOB NOT NULL,
             signature BLOB NOT NULL);",
    )
    .map_err(storage)?;
    Ok(conn)
}

/// Opens a read-only connection (WAL lets it read while the writer commits).
pub(crate) fn open_reader(path: &Path) -> Result<Connection, LogError> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(storage)
}

/// All leaf hashes in index order, checking the indices are contiguous from 0.
pub(crate) fn leaf_hashes(conn: &Connection) -> Result<Vec<Hash>, LogError> {
    let mut stmt = conn
        .prepare("SELECT idx, leaf_hash FROM entries ORDER BY idx")
        .map_err(storage)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .map_err(storage)?;
    let mut out = Vec::new();
    for row in rows {
        let (idx, hash) = row.map_err(storage)?;
        if idx != out.len() as i64 {
            return Err(LogError::Setup(format!(
                "entry {idx} found where {} was expected",
                out.len()
            )));
        }
        out.push(
            hash.try_into()
                .map_err(|_| LogError::Setup(format!("entry {idx} has a malformed leaf hash")))?,
        );
    }
    Ok(out)
}

/// Every stored STH, oldest first.
pub(crate) fn sths(conn: &Connection) -> Result<Vec<StoredSth>, LogError> {
    let mut stmt = conn
        .prepare("SELECT tree_size, timestamp, root, signature FROM sths ORDER BY timestamp")
        .map_err(storage)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })
        .map_err(storage)?;
    let mut out = Vec::new();
    for row in rows {
        let (size, ts, root, signature) = row.map_err(storage)?;
        let root = root
            .try_into()
            .map_err(|_| LogError::Setup("stored STH has a malformed root".into()))?;
        out.push(StoredSth {
            tree_size: size as u64,
            timestamp: ts as u64,
            root,
            signature,
        });
    }
    Ok(out)
}

/// One entry to store. `extra_data` is `extra_prefix || chain`, where the chain (the same for
/// every entry of one CA) is stored once under its hash.
pub(crate) struct NewEntry<'a> {
    pub(crate) leaf_input: &'a [u8],
    pub(crate) extra_prefix: &'a [u8],
    pub(crate) chain_hash: &'a [u8; 32],
    pub(crate) chain: &'a [u8],
    pub(crate) leaf_hash: &'a Hash,
}

/// Appends entries starting at `first_index` in one transaction: one fsync for the whole batch.
pub(crate) fn append(conn: &mut Connection, first_index: u64, batch: &[NewEntry<'_>]) -> Result<(), LogError> {
    let tx = conn.transaction().map_err(storage)?;
    {
        let mut chain = tx
            .prepare_cached("INSERT OR IGNORE INTO chains (hash, certs) VALUES (?1, ?2)")
            .map_err(storage)?;
        let mut entry = tx
            .prepare_cached(
                "INSERT INTO entries (idx, leaf_input, extra_prefix, chain_hash, leaf_hash) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(storage)?;
        let mut last_chain: Option<&[u8; 32]> = None;
        for (i, e) in batch.iter().enumerate() {
            if last_chain != Some(e.chain_hash) {
                chain.execute(params![&e.chain_hash[..], e.chain]).map_err(storage)?;
                last_chain = Some(e.chain_hash);
            }
            let idx = (first_index + i as u64) as i64;
            entry
                .execute(params![
                    idx,
                    e.leaf_input,
                    e.extra_prefix,
                    &e.chain_hash[..],
                    &e.leaf_hash[..]
                ])
                .map_err(storage)?;
        }
    }
    tx.commit().map_err(storage)
}

/// Records a published STH.
pub(crate) fn insert_sth(conn: &Connection, sth: &StoredSth) -> Result<(), LogError> {
    conn.execute(
        "INSERT OR REPLACE INTO sths (tree_size, timestamp, root, signature) VALUES (?1, ?2, ?3, ?4)",
        params![sth.tree_size as i64, sth.timestamp as i64, &sth.root[..], sth.signature],
    )
    .map(|_| ())
    .map_err(storage)
}

/// Entries `[start, end]` inclusive.
pub(crate) fn entries(conn: &Connection, start: u64, end: u64) -> Result<Vec<Entry>, LogError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT e.leaf_input, e.extra_prefix, c.certs FROM entries e JOIN chains c ON c.hash = e.chain_hash
             WHERE e.idx BETWEEN ?1 AND ?2 ORDER BY e.idx",
        )
        .map_err(storage)?;
    let rows = stmt
        .query_map(params![start as i64, end as i64], |r| {
            let mut extra_data: Vec<u8> = r.get(1)?;
            extra_data.extend_from_slice(&r.get::<_, Vec<u8>>(2)?);
            Ok(Entry {
                leaf_input: r.get(0)?,
                extra_data,
            })
        })
        .map_err(storage)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(storage)
}
