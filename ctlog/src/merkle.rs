//! RFC 6962 / RFC 9162 Merkle tree hashing, with proofs computed from cached perfect subtrees.
//!
//! `levels[k][i]` is the hash of the perfect subtree covering leaves `[i·2^k, (i+1)·2^k)`. Every
//! left part in RFC 9162's recursive definitions is such a subtree, so roots and proofs cost
//! O(log² n) hashes instead of O(n).

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

/// An append-only Merkle tree of leaf hashes.
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

    /// MTH of leaves `[start, start + n)`.
    fn mth(&self, start: u64, n: u64) -> Hash {
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let k = n.trailing_zeros() as usize;
            return self.levels[k][(start / n) as usize];
        }
        let k = split(n);
        node_hash(&self.mth(start, k), &self.mth(start + k, n - k))
    }

    /// Root hash of the first `size` leaves.
    pub fn root(&self, size: u64) -> Option<Hash> {
        (size <= self.size()).then(|| self.mth(0, size))
    }

    /// Inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.size() {
            return None;
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Some(proof)
    }

    fn path(&self, m: u64, start: u64, n: u64, out: &mut Vec<Hash>) {
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, k, out);
            out.push(self.mth(start + k, n - k));
        } else {
            self.path(m - k, start + k, n - k, out);
            out.push(self.mth(start, k));
        }
    }

    /// Consistency proof between the trees of `first` and `second` leaves (RFC 9162 §2.1.4).
    pub fn consistency_proof(&self, first: u64, second: u64) -> Option<Vec<Hash>> {
        if first > second || second > self.size() {
            return None;
        }
        let mut proof = Vec::new();
        if first > 0 && first < second {
            self.subproof(first, 0, second, true, &mut proof);
        }
        Some(proof)
    }

    fn subproof(&self, m: u64, start: u64, n: u64, complete: bool, out: &mut Vec<Hash>) {
        if m == n {
            if !complete {
                out.push(self.mth(start, n));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, k, complete, out);
            out.push(self.mth(start + k, n - k));
        } else {
            self.subproof(m - k, start + k, n - k, false, out);
            out.push(self.mth(start, k));
        }
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
