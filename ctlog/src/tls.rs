//! RFC 6962 TLS-style encodings the log stores and serves.

/// Appends a 16-bit length and the bytes.
pub(crate) fn u16_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends a 24-bit length and the bytes.
pub(crate) fn u24_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(bytes);
}

/// `MerkleTreeLeaf` for a precertificate entry.
pub(crate) fn precert_leaf(timestamp: u64, issuer_key_hash: &[u8; 32], tbs: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0];
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(issuer_key_hash);
    u24_prefixed(&mut out, tbs);
    u16_prefixed(&mut out, &[]);
    out
}

/// `MerkleTreeLeaf` for an X.509 entry.
pub(crate) fn x509_leaf(timestamp: u64, cert: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0];
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    u24_prefixed(&mut out, cert);
    u16_prefixed(&mut out, &[]);
    out
}

/// A `u24` list of `u24`-prefixed certificates (the `certificate_chain` of `extra_data`).
pub(crate) fn cert_list(certs: &[Vec<u8>]) -> Vec<u8> {
    let mut inner = Vec::new();
    for c in certs {
        u24_prefixed(&mut inner, c);
    }
    let mut out = Vec::with_capacity(inner.len() + 3);
    u24_prefixed(&mut out, &inner);
    out
}

/// `TreeHeadSignature` input.
pub fn tree_head_signed_data(timestamp: u64, tree_size: u64, root: &[u8; 32]) -> Vec<u8> {
    let mut out = vec![0, 1];
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&tree_size.to_be_bytes());
    out.extend_from_slice(root);
    out
}
