//! The JSON of the RFC 6962 API (`/ct/v1/*`), as the embedded log serves it and as clients read
//! it: requests, answers, and a streaming writer for `get-entries`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_ca::ct::{DigitallySigned, Sct};
use keyless_ca::keys::{Hash as Digest, PublicKey};
use serde::{Deserialize, Serialize};

use super::SignedTreeHead;
use crate::LogError;
use crate::merkle::Hash;

/// Base64 of each hash (proofs).
pub fn encode_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| STANDARD.encode(h)).collect()
}

/// Hashes from base64, each exactly 32 bytes; `what` names the list in errors.
pub fn decode_hashes(hashes: &[String], what: &str) -> Result<Vec<Hash>, LogError> {
    hashes
        .iter()
        .map(|h| STANDARD.decode(h).ok().and_then(|h| h.try_into().ok()))
        .collect::<Option<Vec<Hash>>>()
        .ok_or_else(|| LogError::Malformed(format!("{what}: a proof node is not a base64 32-byte hash")))
}

/// `add-chain` / `add-pre-chain` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddChainRequest {
    /// Base64 DER certificates, leaf first.
    pub chain: Vec<String>,
}

impl AddChainRequest {
    /// The request for `chain` (DER, leaf first).
    pub fn new(chain: &[Vec<u8>]) -> AddChainRequest {
        AddChainRequest {
            chain: chain.iter().map(|c| STANDARD.encode(c)).collect(),
        }
    }

    /// The DER certificates; a submitter's mistake is a [`LogError::Client`] naming the element.
    pub fn decode(&self) -> Result<Vec<Vec<u8>>, LogError> {
        self.chain
            .iter()
            .enumerate()
            .map(|(i, c)| {
                STANDARD
                    .decode(c)
                    .map_err(|_| LogError::Client(format!("chain[{i}] is not base64 DER")))
            })
            .collect()
    }
}

/// `add-chain` / `add-pre-chain` response: an SCT in JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddChainResponse {
    /// Always 0 (v1).
    pub sct_version: u8,
    /// Base64 log id.
    pub id: String,
    /// Milliseconds.
    pub timestamp: u64,
    /// Base64 extensions.
    pub extensions: String,
    /// Base64 TLS `DigitallySigned`.
    pub signature: String,
}

impl AddChainResponse {
    /// From an SCT.
    pub fn from_sct(sct: &Sct) -> Self {
        AddChainResponse {
            sct_version: 0,
            id: STANDARD.encode(sct.log_id),
            timestamp: sct.timestamp,
            extensions: STANDARD.encode(&sct.extensions),
            signature: STANDARD.encode(sct.digitally_signed()),
        }
    }

    /// To an SCT, checking every field's encoding and size (the signature is not verified here:
    /// the CA verifies it with the configured log key).
    pub fn to_sct(&self) -> Result<Sct, LogError> {
        let bad = |m: &str| LogError::Malformed(m.to_string());
        if self.sct_version != 0 {
            return Err(LogError::Malformed(format!(
                "unsupported SCT version {}",
                self.sct_version
            )));
        }
        let id = STANDARD.decode(&self.id).map_err(|_| bad("id is not base64"))?;
        let log_id: [u8; 32] = id.try_into().map_err(|_| bad("id is not 32 bytes"))?;
        let extensions = STANDARD
            .decode(&self.extensions)
            .map_err(|_| bad("extensions is not base64"))?;
        if extensions.len() > usize::from(u16::MAX) {
            return Err(bad("extensions are longer than an SCT can carry (65535 bytes)"));
        }
        let ds = STANDARD
            .decode(&self.signature)
            .map_err(|_| bad("signature is not base64"))?;
        let ds = DigitallySigned::decode(&ds).map_err(|_| bad("signature is not a TLS DigitallySigned"))?;
        Ok(Sct {
            log_id,
            timestamp: self.timestamp,
            extensions,
            hash_algorithm: ds.hash_algorithm,
            signature_algorithm: ds.signature_algorithm,
            signature: ds.signature,
        })
    }
}

/// `get-sth` response. Fields in the order the log has always served them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetSthResponse {
    /// Base64 root hash.
    pub sha256_root_hash: String,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// Base64 TLS `DigitallySigned`.
    pub tree_head_signature: String,
    /// Entries in the tree.
    pub tree_size: u64,
}

impl GetSthResponse {
    /// The answer for a tree head.
    pub fn from_sth(sth: &SignedTreeHead) -> GetSthResponse {
        GetSthResponse {
            sha256_root_hash: STANDARD.encode(sth.root),
            timestamp: sth.timestamp,
            tree_head_signature: STANDARD.encode(&sth.signature),
            tree_size: sth.tree_size,
        }
    }

    /// Decodes the tree head and verifies its signature (ECDSA with SHA-256) with the log's
    /// `key`; `log` names the log in errors.
    pub fn verify(&self, key: &PublicKey, log: &str) -> Result<SignedTreeHead, LogError> {
        let bad = |m: String| LogError::Malformed(m);
        let root: Hash = STANDARD
            .decode(&self.sha256_root_hash)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("get-sth: sha256_root_hash is not a base64 32-byte hash".into()))?;
        let signature = STANDARD
            .decode(&self.tree_head_signature)
            .map_err(|_| bad("get-sth: tree_head_signature is not base64".into()))?;
        let ds = DigitallySigned::decode(&signature)
            .map_err(|_| bad("get-sth: tree_head_signature is not a TLS DigitallySigned".into()))?;
        ds.require_ecdsa_sha256()
            .map_err(|e| bad(format!("get-sth: the tree head is {e}")))?;
        let sth = SignedTreeHead {
            tree_size: self.tree_size,
            timestamp: self.timestamp,
            root,
            signature,
        };
        if !key.verify(Digest::Sha256, &sth.signed_data(), &ds.signature) {
            return Err(bad(format!(
                "the tree head of size {} from {log} does not verify with the log key",
                self.tree_size
            )));
        }
        Ok(sth)
    }
}

/// `get-sth-consistency` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetSthConsistencyResponse {
    /// Base64 proof nodes.
    pub consistency: Vec<String>,
}

/// `get-proof-by-hash` response. Fields in the order the log has always served them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetProofByHashResponse {
    /// Base64 proof nodes.
    pub audit_path: Vec<String>,
    /// The entry's position.
    pub leaf_index: u64,
}

/// `get-roots` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRootsResponse {
    /// Base64 DER root certificates.
    pub certificates: Vec<String>,
}

/// `get-entries` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetEntriesResponse {
    /// The entries, from the first asked for (a log may send fewer than asked).
    pub entries: Vec<LogEntry>,
}

/// One entry of `get-entries` (and the entry part of `get-entry-and-proof`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    /// Base64 `MerkleTreeLeaf`.
    pub leaf_input: String,
    /// Base64 `extra_data` (the chain; for a precertificate, the precertificate first).
    pub extra_data: String,
}

/// Base64 length of `n` bytes.
fn b64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Appends one [`LogEntry`] as JSON, `{"leaf_input":"…","extra_data":"…"}`, encoding
/// `extra_prefix ‖ chain` straight into `out` (the concatenation is never built): the embedded
/// log streams `get-entries` answers this way.
pub fn write_entry_json(out: &mut String, leaf_input: &[u8], extra_prefix: &[u8], chain: &[u8]) {
    use std::io::Write as _;
    out.push_str("{\"leaf_input\":\"");
    STANDARD.encode_string(leaf_input, out);
    out.push_str("\",\"extra_data\":\"");
    {
        let mut enc = base64::write::EncoderStringWriter::from_consumer(&mut *out, &STANDARD);
        // Writing to a String cannot fail.
        let _ = enc.write_all(extra_prefix).and_then(|_| enc.write_all(chain));
        enc.into_inner();
    }
    out.push_str("\"}");
}

/// The length of what [`write_entry_json`] appends for these byte counts.
pub fn entry_json_len(leaf_input: usize, extra_data: usize) -> usize {
    r#"{"leaf_input":"","extra_data":""}"#.len() + b64_len(leaf_input) + b64_len(extra_data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyless_ca::ct::{HASH_SHA256, SIG_ECDSA};
    use keyless_ca::{SignatureAlgorithm, Signer as _, SoftwareSigner};

    #[test]
    fn sct_json_round_trips_and_refuses_bad_fields() {
        let sct = Sct {
            log_id: [1; 32],
            timestamp: 42,
            extensions: vec![5, 6],
            hash_algorithm: HASH_SHA256,
            signature_algorithm: SIG_ECDSA,
            signature: vec![0x30, 0x00],
        };
        let json = serde_json::to_string(&AddChainResponse::from_sct(&sct)).unwrap();
        let back: AddChainResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_sct().unwrap(), sct);

        let with = |f: &dyn Fn(&mut AddChainResponse)| {
            let mut r = back.clone();
            f(&mut r);
            r.to_sct().unwrap_err().to_string()
        };
        assert!(with(&|r| r.sct_version = 1).contains("version 1"));
        assert!(with(&|r| r.id = STANDARD.encode([1; 31])).contains("32 bytes"));
        assert!(with(&|r| r.id = "!".into()).contains("not base64"));
        assert!(with(&|r| r.extensions = STANDARD.encode(vec![0; 65536])).contains("65535"));
        assert!(with(&|r| r.signature = STANDARD.encode([4, 3, 0, 9, 1])).contains("DigitallySigned"));

        let req = AddChainRequest::new(&[vec![1, 2], vec![3]]);
        assert_eq!(req.decode().unwrap(), [vec![1, 2], vec![3]]);
        let bad = AddChainRequest {
            chain: vec!["AQI=".into(), "%%".into()],
        };
        assert!(matches!(bad.decode(), Err(LogError::Client(m)) if m.contains("chain[1]")));
    }

    #[test]
    fn tree_heads_verify_only_with_the_log_key_and_exact_fields() {
        let key = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap().0;
        let public = PublicKey::from_spki_der(key.public_key_spki()).unwrap();
        let mut sth = SignedTreeHead {
            tree_size: 3,
            timestamp: 1_700_000_000_000,
            root: [9; 32],
            signature: Vec::new(),
        };
        assert_eq!(sth.signed_data().len(), 2 + 8 + 8 + 32);
        sth.signature = DigitallySigned::ecdsa_sha256(key.sign(&sth.signed_data()).unwrap()).encode();
        let json = serde_json::to_string(&GetSthResponse::from_sth(&sth)).unwrap();
        assert!(json.starts_with(r#"{"sha256_root_hash":"#), "{json}");
        let answer: GetSthResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(answer.verify(&public, "log").unwrap(), sth);

        let other = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap().0;
        let other = PublicKey::from_spki_der(other.public_key_spki()).unwrap();
        assert!(
            answer
                .verify(&other, "log")
                .unwrap_err()
                .to_string()
                .contains("does not verify")
        );
        let mut grown = answer.clone();
        grown.tree_size = 4;
        assert!(grown.verify(&public, "log").is_err());
        let mut short = answer.clone();
        short.sha256_root_hash = STANDARD.encode([9; 31]);
        assert!(
            short
                .verify(&public, "log")
                .unwrap_err()
                .to_string()
                .contains("32-byte")
        );
        let mut rsa = answer;
        let mut ds = DigitallySigned::decode(&sth.signature).unwrap();
        ds.signature_algorithm = 1;
        rsa.tree_head_signature = STANDARD.encode(ds.encode());
        assert!(
            rsa.verify(&public, "log")
                .unwrap_err()
                .to_string()
                .contains("not SHA-256 / ECDSA")
        );
    }

    #[test]
    fn streamed_entries_are_the_json_shape() {
        let mut out = String::new();
        write_entry_json(&mut out, &[1, 2, 3, 4], &[5], &[6, 7]);
        assert_eq!(out.len(), entry_json_len(4, 3));
        let entry: LogEntry = serde_json::from_str(&out).unwrap();
        assert_eq!(STANDARD.decode(&entry.leaf_input).unwrap(), [1, 2, 3, 4]);
        assert_eq!(STANDARD.decode(&entry.extra_data).unwrap(), [5, 6, 7]);
        let hashes = encode_hashes(&[[1; 32], [2; 32]]);
        assert_eq!(decode_hashes(&hashes, "proof").unwrap(), [[1; 32], [2; 32]]);
        let err = decode_hashes(&["AAAA".into()], "get-sth-consistency").unwrap_err();
        assert!(
            err.to_string().starts_with("get-sth-consistency: a proof node"),
            "{err}"
        );
    }
}
