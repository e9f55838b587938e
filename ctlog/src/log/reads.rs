//! Reads for the HTTP API: inclusion and consistency proofs from the in-memory tree (never past
//! the published tree head), and read-only SQLite connections for entry reads.

use rusqlite::Connection;

use super::Shared;
use crate::LogError;
use crate::merkle::Hash;
use crate::store;

/// Idle read-only connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

impl Shared {
    /// Inclusion proof for a leaf hash in the tree of `size` (≤ the published size).
    pub(crate) fn proof_by_hash(&self, hash: &Hash, size: u64) -> Result<(u64, Vec<Hash>), LogError> {
        let st = self.state.read().expect("poisoned");
        if size == 0 || size > st.sth.tree_size {
            return Err(LogError::Client(format!(
                "tree_size must be between 1 and {}",
                st.sth.tree_size
            )));
        }
        let index = *st
            .by_hash
            .get(hash)
            .ok_or_else(|| LogError::Client("no entry with that leaf hash".into()))?;
        if index >= size {
            return Err(LogError::Client(format!("the entry is not in the tree of size {size}")));
        }
        Ok((index, st.tree.inclusion_proof(index, size).unwrap_or_default()))
    }

    pub(crate) fn proof_by_index(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        let st = self.state.read().expect("poisoned");
        if size == 0 || size > st.sth.tree_size || index >= size {
            return Err(LogError::Client(format!(
                "need leaf_index < tree_size <= {}",
                st.sth.tree_size
            )));
        }
        Ok(st.tree.inclusion_proof(index, size).unwrap_or_default())
    }

    pub(crate) fn consistency(&self, first: u64, second: u64) -> Result<Vec<Hash>, LogError> {
        let st = self.state.read().expect("poisoned");
        if first > second || second > st.sth.tree_size {
            return Err(LogError::Client(format!(
                "need first <= second <= {}",
                st.sth.tree_size
            )));
        }
        Ok(st.tree.consistency_proof(first, second).unwrap_or_default())
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
