//! RFC 6962 / RFC 9162 Merkle tree hashing: roots and proofs over any source of perfect subtree
//! hashes ([`Nodes`]), the [`Frontier`] an append-only log keeps in memory, and [`Tree`], an
//! all-in-memory tree for tests and small trees.

use aws_lc_rs::digest::{Context, SHA256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[0]);
    c.update(leaf);
    c.finish().as_ref().try_into().expect("32 bytes")
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[1]);
    c.update(left);
    c.update(right);
    c.finish().as_ref().try_into().expect("32 bytes")
}

/// The hash of the empty tree.
pub fn empty_root() -> Hash {
    aws_lc_rs::digest::digest(&SHA256, b"")
        .as_ref()
        .try_into()
        .expect("32 bytes")
}

/// Where proofs get their nodes: the hash of the perfect subtree at `level` covering leaves
/// `[index·2^level, (index+1)·2^level)`. Every left part in RFC 9162's recursive definitions is
/// such a subtree, so roots and proofs cost O(log² n) node reads instead of O(n) hashes. The
/// embedded log reads them from its stored tiles; [`Tree`] keeps them all in memory.
pub trait Nodes {
    /// The error a read can fail with.
    type Error;
    /// The node at `level`, `index`; only asked for nodes inside the tree being proved.
    fn node(&mut self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// MTH of leaves `[start, start + n)`.
fn mth<N: Nodes + ?Sized>(nodes: &mut N, start: u64, n: u64) -> Result<Hash, N::Error> {
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        return nodes.node(n.trailing_zeros(), start / n);
    }
    let k = split(n);
    Ok(node_hash(&mth(nodes, start, k)?, &mth(nodes, start + k, n - k)?))
}

/// Root hash of the first `size` leaves (the caller knows the tree holds them).
pub fn root_from<N: Nodes + ?Sized>(nodes: &mut N, size: u64) -> Result<Hash, N::Error> {
    mth(nodes, 0, size)
}

/// Inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3); empty when
/// `index >= size`.
pub fn inclusion_from<N: Nodes + ?Sized>(nodes: &mut N, index: u64, size: u64) -> Result<Vec<Hash>, N::Error> {
    let mut proof = Vec::new();
    if index < size {
        path(nodes, index, 0, size, &mut proof)?;
    }
    Ok(proof)
}

fn path<N: Nodes + ?Sized>(nodes: &mut N, m: u64, start: u64, n: u64, out: &mut Vec<Hash>) -> Result<(), N::Error> {
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path(nodes, m, start, k, out)?;
        out.push(mth(nodes, start + k, n - k)?);
    } else {
        path(nodes, m - k, start + k, n - k, out)?;
        out.push(mth(nodes, start, k)?);
    }
    Ok(())
}

/// Consistency proof between the trees of `first` and `second` leaves (RFC 9162 §2.1.4); empty
/// when there is nothing to prove.
pub fn consistency_from<N: Nodes + ?Sized>(nodes: &mut N, first: u64, second: u64) -> Result<Vec<Hash>, N::Error> {
    let mut proof = Vec::new();
    if first > 0 && first < second {
        subproof(nodes, first, 0, second, true, &mut proof)?;
    }
    Ok(proof)
}

fn subproof<N: Nodes + ?Sized>(
    nodes: &mut N,
    m: u64,
    start: u64,
    n: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), N::Error> {
    if m == n {
        if !complete {
            out.push(mth(nodes, start, n)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(nodes, m, start, k, complete, out)?;
        out.push(mth(nodes, start + k, n - k)?);
    } else {
        subproof(nodes, m - k, start + k, n - k, false, out)?;
        out.push(mth(nodes, start, k)?);
    }
    Ok(())
}

/// The right edge of an append-only tree (a compact range over `[0, size)`): one perfect subtree
/// root per set bit of `size`, largest first. It is all the log keeps in memory: enough to append
/// and to compute the current root, O(log n) hashes whatever the size.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the tree of `size` leaves, reading its perfect subtree roots from `nodes`.
    pub fn from_nodes<N: Nodes + ?Sized>(nodes: &mut N, size: u64) -> Result<Frontier, N::Error> {
        let mut hashes = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size >> level & 1 == 1 {
                hashes.push(nodes.node(level, start >> level)?);
                start += 1 << level;
            }
        }
        Ok(Frontier { size, hashes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Hashes held in memory (the popcount of the size, at most 64).
    pub fn hashes_held(&self) -> usize {
        self.hashes.len()
    }

    /// Appends a leaf hash, calling `created(level, index, hash)` for the leaf (level 0) and for
    /// every perfect subtree it completes, in increasing level: exactly the nodes that become
    /// final with this leaf, which is what the log stores.
    pub fn push(&mut self, leaf: Hash, mut created: impl FnMut(u32, u64, &Hash)) {
        let index = self.size;
        let mut h = leaf;
        created(0, index, &h);
        let mut level = 0u32;
        while index >> level & 1 == 1 {
            let Some(left) = self.hashes.pop() else { break };
            h = node_hash(&left, &h);
            level += 1;
            created(level, index >> level, &h);
        }
        self.hashes.push(h);
        self.size += 1;
    }

    /// The root of the tree.
    pub fn root(&self) -> Hash {
        let mut it = self.hashes.iter().rev();
        match it.next() {
            None => empty_root(),
            Some(last) => it.fold(*last, |right, left| node_hash(left, &right)),
        }
    }
}

/// An append-only Merkle tree of leaf hashes, every level in memory (~64 bytes per leaf): for
/// tests and small trees; the embedded log keeps a [`Frontier`] and stored nodes instead.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

/// Largest power of two strictly less than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

impl Tree {
    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut k = 0;
        while self.levels[k].len().is_multiple_of(2) {
            let n = self.levels[k].len();
            let h = node_hash(&self.levels[k][n - 2], &self.levels[k][n - 1]);
            if self.levels.len() == k + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[k + 1].push(h);
            k += 1;
        }
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels.first()?.get(index as usize).copied()
    }

    /// Index of a leaf hash (linear scan; the log keeps its own index for lookups).
    pub fn position(&self, hash: &Hash) -> Option<u64> {
        self.levels.first()?.iter().position(|h| h == hash).map(|p| p as u64)
    }

    /// Root hash of the first `size` leaves.
    pub fn root(&self, size: u64) -> Option<Hash> {
        if size > self.size() {
            return None;
        }
        let Ok(r) = root_from(&mut &*self, size);
        Some(r)
    }

    /// Inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.size() {
            return None;
        }
        let Ok(p) = inclusion_from(&mut &*self, index, size);
        Some(p)
    }

    /// Consistency proof between the trees of `first` and `second` leaves (RFC 9162 §2.1.4).
    pub fn consistency_proof(&self, first: u64, second: u64) -> Option<Vec<Hash>> {
        if first > second || second > self.size() {
            return None;
        }
        let Ok(p) = consistency_from(&mut &*self, first, second);
        Some(p)
    }
}

impl Nodes for &Tree {
    type Error = std::convert::Infallible;
    fn node(&mut self, level: u32, index: u64) -> Result<Hash, Self::Error> {
        Ok(self.levels[level as usize][index as usize])
    }
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(first: u64, second: u64, first_root: &Hash, second_root: &Hash, proof: &[Hash]) -> bool {
    if first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if first == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if first.is_power_of_two() {
        path.insert(0, *first_root);
    }
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let Some((head, rest)) = path.split_first() else {
        return false;
    };
    let (mut fr, mut sr) = (*head, *head);
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && fr == *first_root && sr == *second_root
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC's definition, computed naively, to check the cached version against.
    fn naive(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&naive(&leaves[..k]), &naive(&leaves[k..]))
            }
        }
    }

    #[test]
    fn roots_and_proofs_for_every_small_tree() {
        let leaves: Vec<Hash> = (0..40u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut tree = Tree::default();
        for l in &leaves {
            tree.push(*l);
        }
        for n in 0..=40u64 {
            let root = tree.root(n).unwrap();
            assert_eq!(root, naive(&leaves[..n as usize]), "root {n}");
            for i in 0..n {
                let p = tree.inclusion_proof(i, n).unwrap();
                assert!(
                    verify_inclusion(&leaves[i as usize], i, n, &p, &root),
                    "inclusion {i}/{n}"
                );
                if n > 1 {
                    let wrong = &leaves[((i + 1) % n) as usize];
                    assert!(!verify_inclusion(wrong, i, n, &p, &root), "wrong leaf accepted {i}/{n}");
                }
            }
            for m in 0..=n {
                let p = tree.consistency_proof(m, n).unwrap();
                let r1 = tree.root(m).unwrap();
                assert!(verify_consistency(m, n, &r1, &root, &p), "consistency {m}->{n}");
                if m > 1 && m < n {
                    assert!(
                        !verify_consistency(m, n, &leaves[0], &root, &p),
                        "bad old root accepted {m}->{n}"
                    );
                }
            }
        }
    }

    #[test]
    fn known_answer_empty_tree() {
        // RFC 6962 test vector: the empty tree hash.
        let hex: String = empty_root().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}

#[cfg(test)]
mod frontier_tests {
    use super::*;

    #[test]
    fn the_frontier_matches_the_full_tree_and_reports_every_completed_node() {
        let mut tree = Tree::default();
        let mut f = Frontier::default();
        for i in 0..1000u32 {
            let h = leaf_hash(&i.to_be_bytes());
            tree.push(h);
            let mut created = Vec::new();
            f.push(h, |l, j, h| created.push((l, j, *h)));
            for (l, j, h) in created {
                assert_eq!(tree.levels[l as usize][j as usize], h, "node {l}/{j}");
            }
            assert_eq!(f.root(), tree.root(tree.size()).unwrap(), "root {}", i + 1);
            assert_eq!(Frontier::from_nodes(&mut &tree, f.size()).unwrap(), f);
        }
    }

    #[test]
    fn a_million_leaves_keep_a_logarithmic_frontier() {
        let mut f = Frontier::default();
        let mut most = 0;
        for i in 0..1_000_000u64 {
            f.push(leaf_hash(&i.to_be_bytes()), |_, _, _| {});
            assert_eq!(f.hashes_held(), f.size().count_ones() as usize);
            most = most.max(f.hashes_held());
        }
        assert_eq!(f.size(), 1_000_000);
        assert!(most <= 20, "at most log2(1M) hashes held, got {most}");
    }
}
