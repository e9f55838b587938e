//! SQLite storage for the embedded log: a real file, WAL mode, `synchronous=FULL` so a committed
//! entry survives a crash or power loss.
//!
//! The Merkle tree is stored too, as tiles (the static-ct layout): tile level `L` holds the tree's
//! nodes at level `8·L`, [`TILE_WIDTH`] hashes to a row (`tiles(level, idx)`), the last row of each
//! level partial. A batch's entries and every node they complete are written in the same
//! transaction, so storage never holds entries without their nodes. A node between two tile levels
//! is recomputed from at most 128 hashes of one row when read. Leaf hashes are indexed
//! (`entries_by_leaf_hash`) for `get-proof-by-hash`.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

use crate::LogError;
use crate::merkle::{Frontier, Hash, Nodes, node_hash};
use crate::wire::{SignedTreeHead, entry_json_len, write_entry_json};

fn storage(e: rusqlite::Error) -> LogError {
    LogError::Storage(e.to_string())
}

/// Opens (creating if needed) the log database for writing, migrating an older schema.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, LogError> {
    let mut conn = Connection::open(path).map_err(storage)?;
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
             leaf_hash BLOB NOT NULL,
             submission_hash BLOB);
         CREATE TABLE IF NOT EXISTS sths (
             tree_size INTEGER NOT NULL,
             timestamp INTEGER NOT NULL PRIMARY KEY,
             root BLOB NOT NULL,
             signature BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS tiles (
             level INTEGER NOT NULL,
             idx INTEGER NOT NULL,
             hashes BLOB NOT NULL,
             PRIMARY KEY (level, idx)) WITHOUT ROWID;",
    )
    .map_err(storage)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Databases written before deduplication have no `submission_hash`: add it, fill it in from the
/// stored entries (it depends only on what is stored), and index it, all in one transaction so an
/// interrupted migration leaves the old schema intact.
fn migrate(conn: &mut Connection) -> Result<(), LogError> {
    let has_column = conn
        .prepare("SELECT 1 FROM pragma_table_info('entries') WHERE name = 'submission_hash'")
        .and_then(|mut s| s.exists([]))
        .map_err(storage)?;
    let tx = conn.transaction().map_err(storage)?;
    if !has_column {
        tx.execute_batch("ALTER TABLE entries ADD COLUMN submission_hash BLOB")
            .map_err(storage)?;
    }
    // Also completes rows left without a hash by any earlier version.
    const CHUNK: i64 = 10_000;
    let mut after = -1i64;
    loop {
        let rows: Vec<(i64, [u8; 32])> = {
            let mut stmt = tx
                .prepare(
                    "SELECT idx, leaf_input, chain_hash FROM entries
                     WHERE submission_hash IS NULL AND idx > ?1 ORDER BY idx LIMIT ?2",
                )
                .map_err(storage)?;
            let mut rows = stmt.query(params![after, CHUNK]).map_err(storage)?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(storage)? {
                let idx: i64 = r.get(0).map_err(storage)?;
                let leaf = r.get_ref(1).and_then(|v| Ok(v.as_blob()?)).map_err(storage)?;
                let chain = r.get_ref(2).and_then(|v| Ok(v.as_blob()?)).map_err(storage)?;
                out.push((idx, submission_hash(leaf, chain)));
            }
            out
        };
        let Some(&(last, _)) = rows.last() else { break };
        let mut update = tx
            .prepare_cached("UPDATE entries SET submission_hash = ?2 WHERE idx = ?1")
            .map_err(storage)?;
        for (idx, hash) in &rows {
            update.execute(params![idx, &hash[..]]).map_err(storage)?;
        }
        after = last;
    }
    // Databases written before tree nodes were stored looked leaf hashes up in memory.
    tx.execute_batch(
        "CREATE INDEX IF NOT EXISTS entries_by_submission ON entries(submission_hash);
         CREATE INDEX IF NOT EXISTS entries_by_leaf_hash ON entries(leaf_hash);",
    )
    .map_err(storage)?;
    tx.commit().map_err(storage)
}

/// Hashes per tile row.
pub(crate) const TILE_WIDTH: u64 = 256;
/// Tree levels per tile level (`TILE_WIDTH = 2^TILE_HEIGHT`).
const TILE_HEIGHT: u32 = 8;

/// Nodes completed by appended leaves that belong in tile rows (tree levels `8·L`), per tile level:
/// the first node's index and the hashes in order (a level's nodes are completed left to right).
#[derive(Default)]
pub(crate) struct NewNodes(Vec<Option<(u64, Vec<Hash>)>>);

impl NewNodes {
    /// Records a node reported by [`Frontier::push`]; nodes between tile rows are not stored.
    pub(crate) fn add(&mut self, level: u32, index: u64, hash: &Hash) {
        if !level.is_multiple_of(TILE_HEIGHT) {
            return;
        }
        let l = (level / TILE_HEIGHT) as usize;
        if self.0.len() <= l {
            self.0.resize(l + 1, None);
        }
        match &mut self.0[l] {
            Some((_, hashes)) => hashes.push(*hash),
            slot @ None => *slot = Some((index, vec![*hash])),
        }
    }
}

/// Writes new nodes into their tile rows, extending the partial row of each level.
fn write_tiles(conn: &Connection, nodes: &NewNodes) -> Result<(), LogError> {
    let mut get = conn
        .prepare_cached("SELECT hashes FROM tiles WHERE level = ?1 AND idx = ?2")
        .map_err(storage)?;
    let mut put = conn
        .prepare_cached("INSERT OR REPLACE INTO tiles (level, idx, hashes) VALUES (?1, ?2, ?3)")
        .map_err(storage)?;
    for (level, slot) in nodes.0.iter().enumerate() {
        let Some((first, hashes)) = slot else { continue };
        let (mut at, mut rest) = (*first, &hashes[..]);
        while !rest.is_empty() {
            let (tile, offset) = (at / TILE_WIDTH, (at % TILE_WIDTH) as usize);
            let take = (TILE_WIDTH as usize - offset).min(rest.len());
            let mut blob: Vec<u8> = if offset == 0 {
                Vec::with_capacity(take * 32)
            } else {
                get.query_row(params![level as i64, tile as i64], |r| r.get(0))
                    .optional()
                    .map_err(storage)?
                    .unwrap_or_default()
            };
            if blob.len() != offset * 32 {
                return Err(LogError::Storage(format!(
                    "tile {level}/{tile} holds {} bytes where {} hashes were expected",
                    blob.len(),
                    offset
                )));
            }
            for h in &rest[..take] {
                blob.extend_from_slice(h);
            }
            put.execute(params![level as i64, tile as i64, blob]).map_err(storage)?;
            at += take as u64;
            rest = &rest[take..];
        }
    }
    Ok(())
}

/// Tree nodes read from the tiles through one connection (so from one snapshot), each row loaded
/// once per reader. Only asked for nodes of trees no larger than the stored one.
pub(crate) struct StoredNodes<'c> {
    conn: &'c Connection,
    rows: std::collections::HashMap<(u32, u64), Vec<u8>>,
}

impl<'c> StoredNodes<'c> {
    pub(crate) fn new(conn: &'c Connection) -> StoredNodes<'c> {
        StoredNodes {
            conn,
            rows: std::collections::HashMap::new(),
        }
    }
}

impl Nodes for StoredNodes<'_> {
    type Error = LogError;

    fn node(&mut self, level: u32, index: u64) -> Result<Hash, LogError> {
        let (tile_level, up) = (level / TILE_HEIGHT, level % TILE_HEIGHT);
        let first = index
            .checked_shl(up)
            .filter(|f| f >> up == index)
            .ok_or_else(|| LogError::Storage(format!("tree node {level}/{index} is out of range")))?;
        let (tile, offset, count) = (first / TILE_WIDTH, (first % TILE_WIDTH) as usize, 1usize << up);
        let row = match self.rows.entry((tile_level, tile)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let blob: Option<Vec<u8>> = self
                    .conn
                    .prepare_cached("SELECT hashes FROM tiles WHERE level = ?1 AND idx = ?2")
                    .and_then(|mut s| {
                        s.query_row(params![tile_level as i64, tile as i64], |r| r.get(0))
                            .optional()
                    })
                    .map_err(storage)?;
                v.insert(blob.unwrap_or_default())
            }
        };
        let bytes = row.get(offset * 32..(offset + count) * 32).ok_or_else(|| {
            LogError::Storage(format!(
                "tree node {level}/{index} is not stored (tile {tile_level}/{tile})"
            ))
        })?;
        let mut hashes: Vec<Hash> = bytes
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap_or([0; 32]))
            .collect();
        while hashes.len() > 1 {
            hashes = hashes.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect();
        }
        Ok(hashes[0])
    }
}

/// Number of entries (their indices run from 0; appends keep them contiguous).
pub(crate) fn entry_count(conn: &Connection) -> Result<u64, LogError> {
    let max: Option<i64> = conn
        .query_row("SELECT MAX(idx) FROM entries", [], |r| r.get(0))
        .map_err(storage)?;
    Ok(max.map_or(0, |m| m as u64 + 1))
}

/// Number of leaves the stored tiles cover.
fn tile_coverage(conn: &Connection) -> Result<u64, LogError> {
    let last: Option<(i64, i64)> = conn
        .query_row(
            "SELECT idx, length(hashes) FROM tiles WHERE level = 0 ORDER BY idx DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(storage)?;
    match last {
        None => Ok(0),
        Some((idx, len)) if idx >= 0 && len > 0 && len % 32 == 0 && len as u64 <= TILE_WIDTH * 32 => {
            Ok(idx as u64 * TILE_WIDTH + len as u64 / 32)
        }
        Some((idx, len)) => Err(LogError::Setup(format!("leaf tile {idx} is malformed ({len} bytes)"))),
    }
}

/// Stores the tree nodes of entries that have none: every entry of a database written before
/// nodes were stored (once), or entries appended by such a version since. One transaction, so an
/// interrupted build leaves the database as it was; memory stays O(log n) (leaf hashes are read
/// in chunks). Returns the number of entries whose nodes were built.
pub(crate) fn build_tiles(conn: &mut Connection) -> Result<u64, LogError> {
    let count = entry_count(conn)?;
    let covered = tile_coverage(conn)?;
    if covered > count {
        return Err(LogError::Setup(format!(
            "the stored tree covers {covered} entries but only {count} are stored"
        )));
    }
    if covered == count {
        return Ok(0);
    }
    let tx = conn.transaction().map_err(storage)?;
    let mut frontier = Frontier::from_nodes(&mut StoredNodes::new(&tx), covered)?;
    const CHUNK: i64 = 16_384;
    while frontier.size() < count {
        let mut nodes = NewNodes::default();
        {
            let mut stmt = tx
                .prepare_cached("SELECT idx, leaf_hash FROM entries WHERE idx >= ?1 ORDER BY idx LIMIT ?2")
                .map_err(storage)?;
            let mut rows = stmt.query(params![frontier.size() as i64, CHUNK]).map_err(storage)?;
            while let Some(r) = rows.next().map_err(storage)? {
                let idx: i64 = r.get(0).map_err(storage)?;
                if idx as u64 != frontier.size() {
                    return Err(LogError::Setup(format!(
                        "entry {idx} found where {} was expected",
                        frontier.size()
                    )));
                }
                let hash: Hash = r
                    .get_ref(1)
                    .and_then(|v| Ok(v.as_blob()?))
                    .map_err(storage)?
                    .try_into()
                    .map_err(|_| LogError::Setup(format!("entry {idx} has a malformed leaf hash")))?;
                frontier.push(hash, |l, i, h| nodes.add(l, i, h));
            }
        }
        write_tiles(&tx, &nodes)?;
    }
    tx.commit().map_err(storage)?;
    Ok(count - covered)
}

/// The stored leaf hash of entry `index`.
pub(crate) fn leaf_hash_at(conn: &Connection, index: u64) -> Result<Option<Vec<u8>>, LogError> {
    conn.query_row(
        "SELECT leaf_hash FROM entries WHERE idx = ?1",
        params![index as i64],
        |r| r.get(0),
    )
    .optional()
    .map_err(storage)
}

/// The index of the entry with this leaf hash (the latest, if several), through the index.
pub(crate) fn index_of_leaf(conn: &Connection, hash: &Hash) -> Result<Option<u64>, LogError> {
    conn.prepare_cached("SELECT idx FROM entries WHERE leaf_hash = ?1 ORDER BY idx DESC LIMIT 1")
        .and_then(|mut s| s.query_row(params![&hash[..]], |r| r.get::<_, i64>(0)).optional())
        .map(|i| i.map(|i| i as u64))
        .map_err(storage)
}

/// What makes two submissions the same: the entry type, the certificate or precertificate TBS
/// (with its issuer key hash), and the stored chain. It is `MerkleTreeLeaf` without its version,
/// leaf type and timestamp (bytes 10 onward), plus the chain's hash, so it can be recomputed from
/// any stored row.
pub(crate) fn submission_hash(leaf_input: &[u8], chain_hash: &[u8]) -> [u8; 32] {
    let mut data = Vec::with_capacity(leaf_input.len() + 64);
    data.extend_from_slice(b"keyless-ct-submission-v1\0");
    data.extend_from_slice(leaf_input.get(10..).unwrap_or_default());
    data.extend_from_slice(chain_hash);
    keyless_ca::keys::sha256(&data)
}

/// Opens a read-only connection (WAL lets it read while the writer commits).
pub(crate) fn open_reader(path: &Path) -> Result<Connection, LogError> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(storage)
}

/// The latest published STH, if any.
pub(crate) fn latest_sth(conn: &Connection) -> Result<Option<SignedTreeHead>, LogError> {
    let row = conn
        .query_row(
            "SELECT tree_size, timestamp, root, signature FROM sths ORDER BY timestamp DESC LIMIT 1",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            },
        )
        .optional()
        .map_err(storage)?;
    let Some((size, ts, root, signature)) = row else {
        return Ok(None);
    };
    let root = root
        .try_into()
        .map_err(|_| LogError::Setup("stored STH has a malformed root".into()))?;
    Ok(Some(SignedTreeHead {
        tree_size: size as u64,
        timestamp: ts as u64,
        root,
        signature,
    }))
}

/// One entry to store. `extra_data` is `extra_prefix || chain`, where the chain (the same for
/// every entry of one CA) is stored once under its hash.
pub(crate) struct NewEntry<'a> {
    pub(crate) leaf_input: &'a [u8],
    pub(crate) extra_prefix: &'a [u8],
    pub(crate) chain_hash: &'a [u8; 32],
    pub(crate) chain: &'a [u8],
    pub(crate) leaf_hash: &'a Hash,
    pub(crate) submission_hash: &'a [u8; 32],
    /// Look for an identical earlier submission first (outside submitters). The CA's own entries
    /// are unique by serial and skip the lookup; their hash is still recorded.
    pub(crate) dedup: bool,
}

/// Where an entry ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placed {
    /// Appended at this index.
    New(u64),
    /// Identical to the entry at `index`, whose `MerkleTreeLeaf` is `leaf_input`.
    Existing { index: u64, leaf_input: Vec<u8> },
}

/// Appends entries after the tree `frontier` describes, with the tree nodes they complete, in one
/// transaction (one fsync for the whole batch), answering deduplicated entries with the earlier
/// entry instead. New entries get consecutive indices in batch order. Returns where each went and
/// the frontier after the batch (for the caller to adopt once this returns).
pub(crate) fn append(
    conn: &mut Connection,
    frontier: &Frontier,
    batch: &[NewEntry<'_>],
) -> Result<(Vec<Placed>, Frontier), LogError> {
    let first_index = frontier.size();
    let mut frontier = frontier.clone();
    let mut nodes = NewNodes::default();
    let tx = conn.transaction().map_err(storage)?;
    let mut placed = Vec::with_capacity(batch.len());
    {
        let mut chain = tx
            .prepare_cached("INSERT OR IGNORE INTO chains (hash, certs) VALUES (?1, ?2)")
            .map_err(storage)?;
        let mut entry = tx
            .prepare_cached(
                "INSERT INTO entries (idx, leaf_input, extra_prefix, chain_hash, leaf_hash, submission_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(storage)?;
        let mut find = tx
            .prepare_cached("SELECT idx, leaf_input FROM entries WHERE submission_hash = ?1 ORDER BY idx LIMIT 1")
            .map_err(storage)?;
        // Entries of this batch by submission hash, so duplicates within one batch collapse too.
        let mut in_batch: std::collections::HashMap<&[u8; 32], usize> = std::collections::HashMap::new();
        let mut last_chain: Option<&[u8; 32]> = None;
        let mut next = first_index;
        for (i, e) in batch.iter().enumerate() {
            if e.dedup {
                if let Some(&j) = in_batch.get(e.submission_hash) {
                    let (index, leaf_input) = match &placed[j] {
                        Placed::New(index) => (*index, batch[j].leaf_input.to_vec()),
                        Placed::Existing { index, leaf_input } => (*index, leaf_input.clone()),
                    };
                    placed.push(Placed::Existing { index, leaf_input });
                    continue;
                }
                let found = find
                    .query_row(params![&e.submission_hash[..]], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                    })
                    .optional()
                    .map_err(storage)?;
                if let Some((index, leaf_input)) = found {
                    in_batch.insert(e.submission_hash, i);
                    placed.push(Placed::Existing {
                        index: index as u64,
                        leaf_input,
                    });
                    continue;
                }
            }
            if last_chain != Some(e.chain_hash) {
                chain.execute(params![&e.chain_hash[..], e.chain]).map_err(storage)?;
                last_chain = Some(e.chain_hash);
            }
            entry
                .execute(params![
                    next as i64,
                    e.leaf_input,
                    e.extra_prefix,
                    &e.chain_hash[..],
                    &e.leaf_hash[..],
                    &e.submission_hash[..]
                ])
                .map_err(storage)?;
            in_batch.entry(e.submission_hash).or_insert(i);
            placed.push(Placed::New(next));
            frontier.push(*e.leaf_hash, |l, i, h| nodes.add(l, i, h));
            next += 1;
        }
    }
    write_tiles(&tx, &nodes)?;
    tx.commit().map_err(storage)?;
    Ok((placed, frontier))
}

/// Records a published STH.
pub(crate) fn insert_sth(conn: &Connection, sth: &SignedTreeHead) -> Result<(), LogError> {
    conn.execute(
        "INSERT OR REPLACE INTO sths (tree_size, timestamp, root, signature) VALUES (?1, ?2, ?3, ?4)",
        params![sth.tree_size as i64, sth.timestamp as i64, &sth.root[..], sth.signature],
    )
    .map(|_| ())
    .map_err(storage)
}

/// The `get-entries` body for entries `[start, end]`, stopping before the entry that would take
/// it past `max_bytes` (but always holding at least one entry). Each distinct chain is loaded once
/// per call, and rows are read one by one, so memory stays near the size of the answer. Returns the
/// JSON and the number of entries in it.
pub(crate) fn entries_json(
    conn: &Connection,
    start: u64,
    end: u64,
    max_bytes: usize,
) -> Result<(String, u64), LogError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT leaf_input, extra_prefix, chain_hash FROM entries WHERE idx BETWEEN ?1 AND ?2 ORDER BY idx",
        )
        .map_err(storage)?;
    let mut rows = stmt.query(params![start as i64, end as i64]).map_err(storage)?;
    let mut chains = ChainCache::default();
    let mut out = String::from("{\"entries\":[");
    let mut count = 0u64;
    while let Some(r) = rows.next().map_err(storage)? {
        let leaf = r.get_ref(0).and_then(|v| Ok(v.as_blob()?)).map_err(storage)?;
        let prefix = r.get_ref(1).and_then(|v| Ok(v.as_blob()?)).map_err(storage)?;
        let hash = r.get_ref(2).and_then(|v| Ok(v.as_blob()?)).map_err(storage)?;
        let chain = chains.get(conn, hash)?;
        let len = entry_json_len(leaf.len(), prefix.len() + chain.len()) + 1;
        if count > 0 && out.len() + len + 2 > max_bytes {
            break;
        }
        if count > 0 {
            out.push(',');
        }
        write_entry_json(&mut out, leaf, prefix, &chain);
        count += 1;
    }
    out.push_str("]}");
    Ok((out, count))
}

/// The `"leaf_input":"…","extra_data":"…"` of one entry as a JSON object (for
/// `get-entry-and-proof`), or `None` if there is no such entry.
pub(crate) fn entry_json(conn: &Connection, index: u64) -> Result<Option<String>, LogError> {
    let mut stmt = conn
        .prepare_cached("SELECT leaf_input, extra_prefix, chain_hash FROM entries WHERE idx = ?1")
        .map_err(storage)?;
    let mut rows = stmt.query(params![index as i64]).map_err(storage)?;
    let Some(r) = rows.next().map_err(storage)? else {
        return Ok(None);
    };
    let leaf = r.get_ref(0).and_then(|v| Ok(v.as_blob()?)).map_err(storage)?;
    let prefix = r.get_ref(1).and_then(|v| Ok(v.as_blob()?)).map_err(storage)?;
    let hash = r.get_ref(2).and_then(|v| Ok(v.as_blob()?)).map_err(storage)?;
    let chain = ChainCache::default().get(conn, hash)?;
    let mut out = String::with_capacity(entry_json_len(leaf.len(), prefix.len() + chain.len()));
    write_entry_json(&mut out, leaf, prefix, &chain);
    Ok(Some(out))
}

/// Chains loaded during one read, by hash.
#[derive(Default)]
struct ChainCache(std::collections::HashMap<Vec<u8>, std::rc::Rc<Vec<u8>>>);

impl ChainCache {
    fn get(&mut self, conn: &Connection, hash: &[u8]) -> Result<std::rc::Rc<Vec<u8>>, LogError> {
        if let Some(c) = self.0.get(hash) {
            return Ok(c.clone());
        }
        let certs: Vec<u8> = conn
            .prepare_cached("SELECT certs FROM chains WHERE hash = ?1")
            .and_then(|mut s| s.query_row(params![hash], |r| r.get(0)))
            .map_err(|e| LogError::Storage(format!("the chain of a stored entry is missing: {e}")))?;
        let certs = std::rc::Rc::new(certs);
        self.0.insert(hash.to_vec(), certs.clone());
        Ok(certs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{
        self, consistency_from, inclusion_from, leaf_hash, root_from, verify_consistency, verify_inclusion,
    };

    // An independent reference: RFC 6962 §2.1's definitions, computed naively from the leaves.
    fn k_of(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }
    fn ref_root(l: &[Hash]) -> Hash {
        match l.len() {
            0 => merkle::empty_root(),
            1 => l[0],
            n => node_hash(&ref_root(&l[..k_of(n)]), &ref_root(&l[k_of(n)..])),
        }
    }
    fn ref_path(m: usize, l: &[Hash]) -> Vec<Hash> {
        if l.len() <= 1 {
            return Vec::new();
        }
        let k = k_of(l.len());
        let (mut p, other) = if m < k {
            (ref_path(m, &l[..k]), ref_root(&l[k..]))
        } else {
            (ref_path(m - k, &l[k..]), ref_root(&l[..k]))
        };
        p.push(other);
        p
    }
    fn ref_subproof(m: usize, l: &[Hash], b: bool) -> Vec<Hash> {
        let n = l.len();
        if m == n {
            return if b { Vec::new() } else { vec![ref_root(l)] };
        }
        let k = k_of(n);
        let (mut p, other) = if m <= k {
            (ref_subproof(m, &l[..k], b), ref_root(&l[k..]))
        } else {
            (ref_subproof(m - k, &l[k..], false), ref_root(&l[..k]))
        };
        p.push(other);
        p
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n as u64).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// Stores the tree of `leaves` through the frontier and tile writer, in batches of uneven
    /// sizes (so partial rows are extended across transactions), checking the stored root against
    /// the frontier's after every batch.
    fn store_tree(conn: &mut Connection, leaves: &[Hash], batches: &[usize]) -> Frontier {
        let mut f = Frontier::default();
        let mut at = 0;
        for &b in batches.iter().cycle() {
            if at == leaves.len() {
                break;
            }
            let end = (at + b).min(leaves.len());
            let mut nodes = NewNodes::default();
            for h in &leaves[at..end] {
                f.push(*h, |l, i, h| nodes.add(l, i, h));
            }
            let tx = conn.transaction().unwrap();
            write_tiles(&tx, &nodes).unwrap();
            tx.commit().unwrap();
            at = end;
            assert_eq!(
                root_from(&mut StoredNodes::new(conn), f.size()).unwrap(),
                f.root(),
                "after {at}"
            );
        }
        f
    }

    fn check_size(conn: &Connection, l: &[Hash], size: usize, indices: &[usize], firsts: &[usize]) {
        let mut nodes = StoredNodes::new(conn);
        let root = root_from(&mut nodes, size as u64).unwrap();
        assert_eq!(root, ref_root(&l[..size]), "root {size}");
        assert_eq!(
            Frontier::from_nodes(&mut nodes, size as u64).unwrap().root(),
            root,
            "frontier {size}"
        );
        for &i in indices.iter().filter(|&&i| i < size) {
            let p = inclusion_from(&mut nodes, i as u64, size as u64).unwrap();
            assert_eq!(p, ref_path(i, &l[..size]), "inclusion {i}/{size}");
            assert!(verify_inclusion(&l[i], i as u64, size as u64, &p, &root));
        }
        for &m in firsts.iter().filter(|&&m| m >= 1 && m <= size) {
            let p = consistency_from(&mut nodes, m as u64, size as u64).unwrap();
            let want = if m == size {
                Vec::new()
            } else {
                ref_subproof(m, &l[..size], true)
            };
            assert_eq!(p, want, "consistency {m}->{size}");
            assert!(verify_consistency(m as u64, size as u64, &ref_root(&l[..m]), &root, &p));
        }
    }

    #[test]
    fn stored_roots_and_proofs_equal_the_reference_for_many_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("t.sqlite")).unwrap();
        let l = leaves(1100);
        store_tree(&mut conn, &l, &[1, 7, 300, 13, 255, 2]);
        for size in 1..=600usize {
            let idx = [0, 1, size / 2, size.saturating_sub(2), size - 1];
            let firsts = [1, size / 3, size / 2 + 1, size - 1, size];
            check_size(&conn, &l, size, &idx, &firsts);
        }
        for size in [767, 768, 769, 1023, 1024, 1025, 1100] {
            check_size(
                &conn,
                &l,
                size,
                &[0, 255, 256, 511, 512, size - 1],
                &[1, 255, 256, 257, 512, 1024, size - 1],
            );
        }
    }

    #[test]
    fn nodes_above_the_first_tile_level_are_stored_and_read_back() {
        // Past 65,536 leaves a second tile level (tree level 8) has a full row.
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("t.sqlite")).unwrap();
        let l = leaves(66_000);
        store_tree(&mut conn, &l, &[4096, 999, 1]);
        for size in [65_535, 65_536, 65_537, 66_000] {
            check_size(&conn, &l, size, &[0, 65_535, size - 1], &[1, 256, 65_536, size - 1]);
        }
    }

    #[test]
    fn a_missing_or_short_tile_is_a_storage_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("t.sqlite")).unwrap();
        store_tree(&mut conn, &leaves(300), &[300]);
        let mut nodes = StoredNodes::new(&conn);
        let e = root_from(&mut nodes, 301).unwrap_err();
        assert!(e.to_string().contains("is not stored"), "{e}");
        assert!(matches!(nodes.node(60, u64::MAX), Err(LogError::Storage(_))));
        conn.execute("UPDATE tiles SET hashes = x'00' WHERE level = 0 AND idx = 1", [])
            .unwrap();
        assert!(
            matches!(build_tiles(&mut conn), Err(LogError::Setup(_))),
            "a malformed row is refused"
        );
    }
}
