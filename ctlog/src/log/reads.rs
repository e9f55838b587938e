//! Reads for the HTTP API: inclusion and consistency proofs from the stored tree nodes (never past
//! the published tree head), and read-only SQLite connections for them and for entry reads. A
//! reader's snapshot always holds at least the published tree, since a tree head is published only
//! after its entries (and their nodes) are committed.

use rusqlite::Connection;

use super::Shared;
use crate::LogError;
use crate::merkle::{self, Hash};
use crate::store::{self, StoredNodes};

/// Idle read-only connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

impl Shared {
    /// Inclusion proof for a leaf hash in the tree of `size` (≤ the published size).
    pub(crate) fn proof_by_hash(
        &self,
        conn: &Connection,
        hash: &Hash,
        size: u64,
    ) -> Result<(u64, Vec<Hash>), LogError> {
        let published = self.published_size();
        if size == 0 || size > published {
            return Err(LogError::Client(format!("tree_size must be between 1 and {published}")));
        }
        let index =
            store::index_of_leaf(conn, hash)?.ok_or_else(|| LogError::Client("no entry with that leaf hash".into()))?;
        if index >= size {
            return Err(LogError::Client(format!("the entry is not in the tree of size {size}")));
        }
        Ok((index, merkle::inclusion_from(&mut StoredNodes::new(conn), index, size)?))
    }

    pub(crate) fn proof_by_index(&self, conn: &Connection, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        let published = self.published_size();
        if size == 0 || size > published || index >= size {
            return Err(LogError::Client(format!("need leaf_index < tree_size <= {published}")));
        }
        merkle::inclusion_from(&mut StoredNodes::new(conn), index, size)
    }

    pub(crate) fn consistency(&self, conn: &Connection, first: u64, second: u64) -> Result<Vec<Hash>, LogError> {
        let published = self.published_size();
        if first > second || second > published {
            return Err(LogError::Client(format!("need first <= second <= {published}")));
        }
        merkle::consistency_from(&mut StoredNodes::new(conn), first, second)
    }

    /// Runs `f` on a read-only connection (call from a blocking thread): an idle one, or a new
    /// one when all are busy. At most [`MAX_IDLE_READERS`] are kept afterwards; the HTTP layer
    /// bounds how many run at once.
    pub(crate) fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T, LogError>) -> Result<T, LogError> {
        let idle = self.readers.lock().expect("poisoned").pop();
        let conn = match idle {
            Some(c) => c,
            None => store::open_reader(&self.db)?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().expect("poisoned");
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
        out
    }

    pub(crate) fn published_size(&self) -> u64 {
        self.state.read().expect("poisoned").sth.tree_size
    }
}
