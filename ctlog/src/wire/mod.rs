//! RFC 6962 on the wire, in one place: the `MerkleTreeLeaf` and the `extra_data` of log entries,
//! what a tree head signs, and the JSON of the `/ct/v1/*` API. The embedded log ([`crate::http`]),
//! the client for remote logs ([`crate::client`]) and the audit sync all encode and decode through
//! this module.
//!
//! The SCT, the TLS `DigitallySigned`, the TLS vector codec and the SCT's signed data live in the
//! issuance core (`keyless_ca::ct`, re-exported here), because the CA verifies every SCT itself and
//! must not depend on this crate.
//!
//! Decoders take untrusted bytes (a remote log's answers, stored rows): every length is checked,
//! truncated or trailing bytes are refused with [`LogError::Malformed`], and nothing panics.
//!
//! The binary structures are here; the JSON of the API is in `json` (re-exported).

pub use keyless_ca::ct::tls::{self, Reader};
pub use keyless_ca::ct::{DigitallySigned, HASH_SHA256, SIG_ECDSA, Sct, precert_signed_data, x509_signed_data};

pub use self::json::{
    AddChainRequest, AddChainResponse, GetEntriesResponse, GetProofByHashResponse, GetRootsResponse,
    GetSthConsistencyResponse, GetSthResponse, LogEntry, decode_hashes, encode_hashes, entry_json_len,
    write_entry_json,
};
use crate::LogError;
use crate::merkle::Hash;

mod json;

fn malformed(what: &str) -> impl FnOnce(keyless_ca::ct::CtError) -> LogError + '_ {
    move |e| LogError::Malformed(format!("{what}: {e}"))
}

// ---- MerkleTreeLeaf ----

/// `LogEntryType` and its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafEntry<'a> {
    /// `x509_entry`: the certificate (DER).
    X509(&'a [u8]),
    /// `precert_entry`: the issuer's key hash and the TBS without the poison.
    Precert {
        /// SHA-256 of the issuing CA's SubjectPublicKeyInfo.
        issuer_key_hash: [u8; 32],
        /// The TBSCertificate as the log holds it.
        tbs: &'a [u8],
    },
}

/// A v1 `MerkleTreeLeaf` (RFC 6962 §3.4): a `TimestampedEntry` with its version and leaf type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MerkleTreeLeaf<'a> {
    /// Milliseconds since the epoch (the SCT's timestamp).
    pub timestamp: u64,
    /// The entry.
    pub entry: LeafEntry<'a>,
    /// `CtExtensions` (empty in practice).
    pub extensions: &'a [u8],
}

impl<'a> MerkleTreeLeaf<'a> {
    /// The leaf of an entry logged at `timestamp`, without extensions.
    pub fn new(timestamp: u64, entry: LeafEntry<'a>) -> MerkleTreeLeaf<'a> {
        MerkleTreeLeaf {
            timestamp,
            entry,
            extensions: &[],
        }
    }

    /// The TLS encoding: the `leaf_input` of `get-entries`, hashed into the tree. Byte for byte
    /// the data an SCT for the entry signs (both start with version 0 and type 0, then the
    /// timestamp, entry type, entry and extensions), so this is built by the same code.
    pub fn encode(&self) -> Vec<u8> {
        match self.entry {
            LeafEntry::X509(cert) => x509_signed_data(self.timestamp, cert, self.extensions),
            LeafEntry::Precert { issuer_key_hash, tbs } => {
                precert_signed_data(self.timestamp, &issuer_key_hash, tbs, self.extensions)
            }
        }
    }

    /// Reads a whole `MerkleTreeLeaf`: version 0, leaf type 0 (`timestamped_entry`), a known
    /// entry type, and nothing after the extensions.
    pub fn decode(input: &'a [u8]) -> Result<MerkleTreeLeaf<'a>, LogError> {
        let mut r = Reader::new(input);
        let bad = malformed("MerkleTreeLeaf");
        let head = (|| {
            let version = r.u8()?;
            let leaf_type = r.u8()?;
            Ok((version, leaf_type, r.u64()?, r.u16()?))
        })();
        let (version, leaf_type, timestamp, entry_type) = head.map_err(bad)?;
        if version != 0 || leaf_type != 0 {
            return Err(LogError::Malformed(format!(
                "unsupported leaf version {version} / type {leaf_type}"
            )));
        }
        let entry = match entry_type {
            0 => LeafEntry::X509(r.vec(3).map_err(malformed("x509_entry"))?),
            1 => LeafEntry::Precert {
                issuer_key_hash: r.array::<32>().map_err(malformed("precert_entry"))?,
                tbs: r.vec(3).map_err(malformed("precert_entry"))?,
            },
            other => return Err(LogError::Malformed(format!("unknown entry type {other}"))),
        };
        let extensions = r.vec(2).map_err(malformed("CtExtensions"))?;
        r.finish().map_err(malformed("MerkleTreeLeaf"))?;
        Ok(MerkleTreeLeaf {
            timestamp,
            entry,
            extensions,
        })
    }
}

// ---- extra_data ----

/// `ASN.1Cert certificate_chain<0..2^24-1>`: a 24-bit list of 24-bit-prefixed certificates, the
/// `extra_data` of an X.509 entry and the tail of a precertificate's.
pub fn encode_chain(certs: &[Vec<u8>]) -> Vec<u8> {
    let mut inner = Vec::with_capacity(certs.iter().map(|c| c.len() + 3).sum());
    for c in certs {
        tls::put_u24_prefixed(&mut inner, c);
    }
    let mut out = Vec::with_capacity(inner.len() + 3);
    tls::put_u24_prefixed(&mut out, &inner);
    out
}

/// Reads a `certificate_chain` from `r`.
fn read_chain<'a>(r: &mut Reader<'a>) -> Result<Vec<&'a [u8]>, LogError> {
    let mut list = Reader::new(r.vec(3).map_err(malformed("certificate_chain"))?);
    let mut chain = Vec::new();
    while !list.is_empty() {
        chain.push(list.vec(3).map_err(malformed("certificate_chain"))?);
    }
    Ok(chain)
}

/// Reads the `extra_data` of an X.509 entry: its `certificate_chain`, and nothing else.
pub fn decode_chain(extra: &[u8]) -> Result<Vec<&[u8]>, LogError> {
    let mut r = Reader::new(extra);
    let chain = read_chain(&mut r)?;
    r.finish().map_err(malformed("certificate_chain"))?;
    Ok(chain)
}

/// The `extra_data` of a precertificate entry: the precertificate as submitted (with its poison)
/// and the chain after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrecertChainEntry<'a> {
    /// The precertificate (DER).
    pub pre_certificate: &'a [u8],
    /// Its issuer, …, root (DER).
    pub precertificate_chain: Vec<&'a [u8]>,
}

impl<'a> PrecertChainEntry<'a> {
    /// The leading `pre_certificate` field alone: the embedded log stores it apart from the
    /// chain, which every entry of one CA shares, and serves `prefix ‖ encode_chain(chain)`.
    pub fn prefix(pre_certificate: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(pre_certificate.len() + 3);
        tls::put_u24_prefixed(&mut out, pre_certificate);
        out
    }

    /// The TLS encoding.
    pub fn encode(&self) -> Vec<u8> {
        let chain: Vec<Vec<u8>> = self.precertificate_chain.iter().map(|c| c.to_vec()).collect();
        let mut out = PrecertChainEntry::prefix(self.pre_certificate);
        out.extend(encode_chain(&chain));
        out
    }

    /// Reads a whole `PrecertChainEntry`.
    pub fn decode(extra: &'a [u8]) -> Result<PrecertChainEntry<'a>, LogError> {
        let mut r = Reader::new(extra);
        let pre_certificate = r.vec(3).map_err(malformed("pre_certificate"))?;
        let precertificate_chain = read_chain(&mut r)?;
        r.finish().map_err(malformed("PrecertChainEntry"))?;
        Ok(PrecertChainEntry {
            pre_certificate,
            precertificate_chain,
        })
    }
}

// ---- tree heads ----

/// The `TreeHeadSignature` input (RFC 6962 §3.5): version 0, type `tree_hash` (1), timestamp,
/// tree size, root.
pub fn tree_head_signed_data(timestamp: u64, tree_size: u64, root: &Hash) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 8 + 8 + 32);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&tree_size.to_be_bytes());
    out.extend_from_slice(root);
    out
}

/// A signed tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTreeHead {
    /// Number of entries.
    pub tree_size: u64,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// Merkle root.
    pub root: Hash,
    /// TLS `DigitallySigned` over [`SignedTreeHead::signed_data`].
    pub signature: Vec<u8>,
}

impl SignedTreeHead {
    /// What the signature covers.
    pub fn signed_data(&self) -> Vec<u8> {
        tree_head_signed_data(self.timestamp, self.tree_size, &self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn precert_leaf(tbs: &[u8]) -> MerkleTreeLeaf<'_> {
        MerkleTreeLeaf::new(
            1_700_000_000_123,
            LeafEntry::Precert {
                issuer_key_hash: [7; 32],
                tbs,
            },
        )
    }

    #[test]
    fn merkle_tree_leaves_round_trip_and_are_what_an_sct_signs() {
        let (tbs, cert) = (vec![1u8; 300], vec![2u8; 70_000]);
        for leaf in [precert_leaf(&tbs), MerkleTreeLeaf::new(5, LeafEntry::X509(&cert))] {
            let bytes = leaf.encode();
            assert_eq!(MerkleTreeLeaf::decode(&bytes).unwrap(), leaf);
        }
        let leaf = precert_leaf(&tbs);
        assert_eq!(leaf.encode(), precert_signed_data(leaf.timestamp, &[7; 32], &tbs, &[]));
        // Layout: version, leaf type, timestamp, entry type, issuer key hash, u24 TBS, u16 ext.
        let bytes = leaf.encode();
        assert_eq!(bytes.len(), 2 + 8 + 2 + 32 + 3 + 300 + 2);
        assert_eq!(&bytes[..2], [0, 0]);
        assert_eq!(&bytes[2..10], 1_700_000_000_123u64.to_be_bytes());
        assert_eq!(&bytes[10..12], [0, 1]);
        assert_eq!(&bytes[44..47], [0, 1, 44]);
    }

    #[test]
    fn truncated_or_oversized_leaves_are_refused() {
        let tbs = vec![1u8; 40];
        let bytes = precert_leaf(&tbs).encode();
        for n in 0..bytes.len() {
            let err = MerkleTreeLeaf::decode(&bytes[..n]).unwrap_err();
            assert!(matches!(err, LogError::Malformed(_)), "{n}: {err}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(
            MerkleTreeLeaf::decode(&trailing)
                .unwrap_err()
                .to_string()
                .contains("trailing")
        );
        let mut v2 = bytes.clone();
        v2[0] = 1;
        assert!(
            MerkleTreeLeaf::decode(&v2)
                .unwrap_err()
                .to_string()
                .contains("version 1")
        );
        let mut kind = bytes.clone();
        kind[11] = 2;
        assert!(
            MerkleTreeLeaf::decode(&kind)
                .unwrap_err()
                .to_string()
                .contains("entry type 2")
        );
        // A TBS length pointing past the end.
        let mut long = bytes;
        long[44] = 0xff;
        assert!(
            MerkleTreeLeaf::decode(&long)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
    }

    #[test]
    fn extra_data_round_trips_and_refuses_bad_lengths() {
        let chain = vec![vec![3u8; 10], vec![4u8; 20]];
        let x509 = encode_chain(&chain);
        assert_eq!(x509.len(), 3 + 3 + 10 + 3 + 20);
        assert_eq!(decode_chain(&x509).unwrap(), [&chain[0][..], &chain[1][..]]);
        assert_eq!(decode_chain(&encode_chain(&[])).unwrap(), Vec::<&[u8]>::new());

        let pre = PrecertChainEntry {
            pre_certificate: &[9u8; 5],
            precertificate_chain: vec![&chain[0], &chain[1]],
        };
        let bytes = pre.encode();
        assert_eq!(bytes, [PrecertChainEntry::prefix(&[9u8; 5]), x509.clone()].concat());
        assert_eq!(PrecertChainEntry::decode(&bytes).unwrap(), pre);

        for n in 0..bytes.len() {
            assert!(PrecertChainEntry::decode(&bytes[..n]).is_err(), "{n}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(PrecertChainEntry::decode(&trailing).is_err());
        // The outer list is consistent but an inner certificate claims more than the list holds.
        let mut inner = x509.clone();
        inner[5] = 200;
        assert!(decode_chain(&inner).is_err());
        assert!(decode_chain(&[0xff, 0xff, 0xff]).is_err());
    }
}
