//! Which log entries are this CA's, and what the index keeps about them. The log is untrusted:
//! an entry that is not a `MerkleTreeLeaf`, or that names this CA without verifying, is still
//! hashed into the tree but not indexed, with a warning.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyless_ca::Serial;
use keyless_ca::keys::{PublicKey, sha256, signature_oid_hash};
use keyless_ctlog::merkle::{self, Hash};
use keyless_ctlog::wire::{LeafEntry, LogEntry, MerkleTreeLeaf, PrecertChainEntry};
use x509_parser::prelude::*;

use crate::AuditError;
use crate::index::IndexedCert;
use crate::record::{decode_extensions, san_text};
use crate::tbs::{strip_ct_extensions, tbs_sha256, wrap_tbs};

/// Precertificate Signing Certificate EKU (RFC 6962 §3.1).
const PRECERT_SIGNING_EKU: &str = "1.3.6.1.4.1.11129.2.4.4";

// Which entries are this CA's.

/// The issuing CA, as entries are matched against it (see [`read_entry`]).
pub struct IssuingCa {
    key: PublicKey,
    pub(super) key_hash: [u8; 32],
    subject: Vec<u8>,
}

impl IssuingCa {
    /// The CA whose certificates a sync indexes: the first certificate of its chain (DER).
    pub fn from_chain(chain: &[Vec<u8>]) -> Result<IssuingCa, AuditError> {
        let first = chain
            .first()
            .ok_or_else(|| AuditError::Setup("the CA chain is empty".into()))?;
        let (_, ca) = X509Certificate::from_der(first)
            .map_err(|e| AuditError::Setup(format!("the issuing CA certificate does not parse: {e}")))?;
        let spki = ca.public_key().raw;
        Ok(IssuingCa {
            key: PublicKey::from_spki_der(spki)
                .map_err(|e| AuditError::Setup(format!("the issuing CA key is not usable: {e}")))?,
            key_hash: sha256(spki),
            subject: ca.subject().as_raw().to_vec(),
        })
    }

    /// The certificate's signature verifies with `key`.
    fn signed(key: &PublicKey, cert: &X509Certificate<'_>) -> bool {
        signature_oid_hash(&cert.signature_algorithm.algorithm.to_id_string())
            .is_some_and(|h| key.verify(h, cert.tbs_certificate.as_ref(), &cert.signature_value.data))
    }

    /// Whether an entry chains to this CA: precertificates by issuer key hash, with the
    /// precertificate in `extra_data` matching the leaf and signed by the CA key (directly or
    /// through a precertificate signing certificate it issued); X.509 entries by issuer name and
    /// signature.
    fn describe(
        &self,
        log_id: &str,
        index: u64,
        leaf: &MerkleTreeLeaf<'_>,
        extra: &[u8],
    ) -> Result<Option<IndexedCert>, String> {
        match &leaf.entry {
            LeafEntry::X509(cert_der) => {
                let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
                    return Ok(None);
                };
                if cert.issuer().as_raw() != self.subject.as_slice() || !Self::signed(&self.key, &cert) {
                    return Ok(None);
                }
                describe(&cert, log_id, index, "x509", leaf.timestamp).map(Some)
            }
            LeafEntry::Precert { issuer_key_hash, tbs } => {
                if *issuer_key_hash != self.key_hash {
                    return Ok(None);
                }
                self.check_precert(tbs, extra)?;
                let wrapped = wrap_tbs(tbs).ok_or("the precertificate TBS is not DER")?;
                let (_, cert) = X509Certificate::from_der(&wrapped)
                    .map_err(|e| format!("the precertificate TBS does not parse: {e}"))?;
                describe(&cert, log_id, index, "precert", leaf.timestamp).map(Some)
            }
        }
    }

    /// The precertificate in `extra_data` is this leaf's, and the CA key signed it.
    fn check_precert(&self, leaf_tbs: &[u8], extra: &[u8]) -> Result<(), String> {
        let PrecertChainEntry {
            pre_certificate: precert_der,
            precertificate_chain: chain,
        } = PrecertChainEntry::decode(extra).map_err(|e| format!("extra_data is malformed: {e}"))?;
        let (_, precert) = X509Certificate::from_der(precert_der)
            .map_err(|e| format!("the precertificate in extra_data does not parse: {e}"))?;
        if strip_ct_extensions(precert.tbs_certificate.as_ref()) != strip_ct_extensions(leaf_tbs) {
            return Err("the precertificate in extra_data is not the one in the leaf".into());
        }
        if Self::signed(&self.key, &precert) {
            return Ok(());
        }
        // RFC 6962 §3.1: a Precertificate Signing Certificate issued by the CA may sign it.
        let signer = chain
            .first()
            .and_then(|d| X509Certificate::from_der(d).ok())
            .map(|(_, c)| c);
        if let Some(signer) = signer {
            let is_precert_signer = matches!(signer.extended_key_usage(),
                Ok(Some(e)) if e.value.other.iter().any(|o| o.to_id_string() == PRECERT_SIGNING_EKU));
            let key = PublicKey::from_spki_der(signer.public_key().raw);
            if is_precert_signer
                && signer.issuer().as_raw() == self.subject.as_slice()
                && Self::signed(&self.key, &signer)
                && key.is_ok_and(|k| Self::signed(&k, &precert))
            {
                return Ok(());
            }
        }
        Err("the precertificate names this CA's key but is not signed by it".into())
    }
}

/// The index row of a (pre)certificate.
fn describe(
    cert: &X509Certificate<'_>,
    log_id: &str,
    index: u64,
    entry_type: &str,
    timestamp: u64,
) -> Result<IndexedCert, String> {
    let san = san_text(cert);
    let mut extensions = decode_extensions(cert);
    for e in &mut extensions {
        if e.oid == "2.5.29.17" {
            e.value = san.clone();
        }
    }
    let ext = |oid: &str| extensions.iter().find(|e| e.oid == oid).map(|e| e.value.clone());
    let issuer = ext("1.3.6.1.4.1.57264.1.8")
        .or_else(|| ext("1.3.6.1.4.1.57264.1.1"))
        .unwrap_or_default();
    Ok(IndexedCert {
        log_id: log_id.to_string(),
        leaf_index: index,
        entry_type: entry_type.to_string(),
        timestamp,
        serial: Serial::from_be_bytes(cert.raw_serial()).to_string(),
        san,
        issuer,
        tbs_sha256: tbs_sha256(cert.tbs_certificate.as_ref()).map_err(|e| e.to_string())?,
        extensions,
        not_before: cert.validity().not_before.timestamp(),
    })
}

// The log's answers are read by these public functions, which `sync` calls on every answer: the
// log is untrusted, so the fuzz tests (`tests/tests/fuzz.rs`) feed them hostile answers.

/// What a sync makes of entry `at` of log `log_id` (hex): its Merkle leaf hash, and its index
/// row if it is a certificate of `ca`. An entry that is not a `MerkleTreeLeaf`, or that names
/// `ca` without verifying, is still hashed (it is in the tree) but not indexed, with a warning.
/// Only base64 that does not decode is an error (naming the field).
pub fn read_entry(
    ca: &IssuingCa,
    log_id: &str,
    at: u64,
    entry: &LogEntry,
) -> Result<(Hash, Option<IndexedCert>), &'static str> {
    let leaf_input = STANDARD.decode(&entry.leaf_input).map_err(|_| "leaf_input")?;
    let extra = STANDARD.decode(&entry.extra_data).map_err(|_| "extra_data")?;
    let h = merkle::leaf_hash(&leaf_input);
    let cert = match MerkleTreeLeaf::decode(&leaf_input) {
        Err(why) => {
            tracing::warn!(log_id, entry = at, %why, "unparseable CT log entry");
            None
        }
        Ok(leaf) => match ca.describe(log_id, at, &leaf, &extra) {
            Ok(cert) => cert,
            Err(why) => {
                tracing::warn!(
                    log_id, entry = at, %why,
                    "CT log entry names this CA but does not verify; not indexed"
                );
                None
            }
        },
    };
    Ok((h, cert))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    const ISSUER: &str = "https://issuer.example";

    fn entry((leaf, extra): (Vec<u8>, Vec<u8>)) -> LogEntry {
        LogEntry {
            leaf_input: STANDARD.encode(leaf),
            extra_data: STANDARD.encode(extra),
        }
    }

    #[test]
    fn entries_of_this_ca_are_indexed_and_malformed_ones_only_hashed() {
        let ca = TestCa::new("Audit Test CA");
        let issuing = IssuingCa::from_chain(&ca.chain()).unwrap();
        let leaf = ca.leaf("bob@example.com", ISSUER);
        let pre = ca.precert_entry(&leaf, 42);
        let (hash, cert) = read_entry(&issuing, "log", 3, &entry(pre.clone())).unwrap();
        assert_eq!(hash, merkle::leaf_hash(&pre.0));
        let cert = cert.expect("this CA's precertificate is indexed");
        assert_eq!(
            (cert.leaf_index, cert.entry_type.as_str(), cert.timestamp),
            (3, "precert", 42)
        );
        assert_eq!(cert.serial, leaf.serial);
        let x509 = x509_entry(7, &leaf.final_cert, &ca.chain());
        let (_, cert) = read_entry(&issuing, "log", 4, &entry(x509.clone())).unwrap();
        assert_eq!(cert.expect("indexed").entry_type, "x509");

        // Truncated, trailing or retyped leaves are in the tree (hashed) but not indexed.
        for bad in [
            pre.0[..pre.0.len() - 5].to_vec(),
            [pre.0.clone(), vec![0]].concat(),
            [&pre.0[..11], &[2], &pre.0[12..]].concat(),
        ] {
            let (hash, cert) = read_entry(&issuing, "log", 0, &entry((bad.clone(), pre.1.clone()))).unwrap();
            assert_eq!(hash, merkle::leaf_hash(&bad));
            assert!(cert.is_none());
        }
        // A precertificate entry whose extra_data is cut short names this CA but does not verify.
        let cut = (pre.0.clone(), pre.1[..pre.1.len() - 1].to_vec());
        assert!(read_entry(&issuing, "log", 0, &entry(cut)).unwrap().1.is_none());
        // Only base64 that does not decode is an error, naming the field.
        let mut garbled = entry(pre);
        garbled.extra_data = "%%".into();
        assert_eq!(read_entry(&issuing, "log", 0, &garbled).unwrap_err(), "extra_data");
    }
}
