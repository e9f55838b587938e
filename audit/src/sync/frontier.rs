//! The right edge of a Merkle tree, enough to go on appending leaves and computing the root in
//! O(log n) memory: what a sync keeps between chunks and between runs.

use keyless_ctlog::merkle::{self, Hash};

/// The right edge of a Merkle tree: the roots of its perfect subtrees, largest first (one per
/// set bit of the size). Enough to append leaves and compute the root, in O(log n) memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// A frontier as stored; `None` if `nodes` cannot be the frontier of `size` leaves.
    pub(crate) fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Frontier> {
        (nodes.len() == size.count_ones() as usize).then_some(Frontier { size, nodes })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    pub(crate) fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut n = self.size;
        while n & 1 == 1 {
            // A complete subtree of the same height sits on the left: merge.
            let Some(left) = self.nodes.pop() else { break };
            h = merkle::node_hash(&left, &h);
            n >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// RFC 6962 MTH of the leaves pushed so far.
    pub(crate) fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return merkle::empty_root();
        };
        nodes.fold(*last, |right, left| merkle::node_hash(left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frontier_computes_the_trees_root() {
        let mut tree = keyless_ctlog::merkle::Tree::default();
        let mut frontier = Frontier::default();
        assert_eq!(frontier.root(), merkle::empty_root());
        for i in 0..70u32 {
            let h = merkle::leaf_hash(&i.to_be_bytes());
            tree.push(h);
            frontier.push(h);
            assert_eq!(Some(frontier.root()), tree.root(tree.size()), "size {}", i + 1);
            assert_eq!(frontier.nodes().len(), (i + 1).count_ones() as usize);
        }
        let again = Frontier::from_parts(frontier.size(), frontier.nodes().to_vec()).unwrap();
        assert_eq!(again, frontier);
        assert!(
            Frontier::from_parts(70, vec![[0; 32]]).is_none(),
            "70 has three set bits"
        );
    }
}
