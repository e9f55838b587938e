//! Certificate Transparency as the CA sees it (RFC 6962): the SCT, what a log signs, the
//! embedded SCT-list extension, and the [`CtLog`] trait that log adapters implement.
//!
//! The CA trusts no SCT it has not verified with the configured log key, so a misbehaving or
//! impersonated log cannot get a certificate released.

use std::future::Future;
use std::pin::Pin;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ParsedPublicKey};

use crate::der;

/// OID 1.3.6.1.4.1.11129.2.4.3: the precertificate poison (critical, NULL).
pub const POISON_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 3];
/// OID 1.3.6.1.4.1.11129.2.4.2: the embedded SCT list.
pub const SCT_LIST_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 2];

/// TLS `HashAlgorithm.sha256`.
pub const HASH_SHA256: u8 = 4;
/// TLS `SignatureAlgorithm.ecdsa`.
pub const SIG_ECDSA: u8 = 3;

/// A v1 Signed Certificate Timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sct {
    /// SHA-256 of the log's DER public key.
    pub log_id: [u8; 32],
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// CtExtensions (empty in practice).
    pub extensions: Vec<u8>,
    /// TLS hash algorithm (4 = SHA-256).
    pub hash_algorithm: u8,
    /// TLS signature algorithm (3 = ECDSA).
    pub signature_algorithm: u8,
    /// The signature (DER for ECDSA).
    pub signature: Vec<u8>,
}

/// Why an SCT could not be had or trusted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CtError(pub String);

fn u16_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn u24_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(bytes);
}

impl Sct {
    /// TLS `DigitallySigned`: hash(1) sig(1) len(2) signature.
    pub fn digitally_signed(&self) -> Vec<u8> {
        let mut out = vec![self.hash_algorithm, self.signature_algorithm];
        u16_prefixed(&mut out, &self.signature);
        out
    }

    /// Parses a TLS `DigitallySigned`.
    pub fn parse_digitally_signed(bytes: &[u8]) -> Option<(u8, u8, Vec<u8>)> {
        let (h, s) = (*bytes.first()?, *bytes.get(1)?);
        let len = u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize;
        (bytes.len() == 4 + len).then(|| (h, s, bytes[4..].to_vec()))
    }

    /// The TLS `SignedCertificateTimestamp` encoding (as carried in the SCT-list extension).
    pub fn to_tls(&self) -> Vec<u8> {
        let mut out = vec![0u8];
        out.extend_from_slice(&self.log_id);
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        u16_prefixed(&mut out, &self.extensions);
        out.extend_from_slice(&self.digitally_signed());
        out
    }

    /// Verifies the SCT over a precertificate entry with the log's key (see [`log_verifier`]).
    pub fn verify_precert(
        &self,
        log_key: &ParsedPublicKey,
        issuer_key_hash: &[u8; 32],
        tbs: &[u8],
    ) -> Result<(), CtError> {
        if self.hash_algorithm != HASH_SHA256 || self.signature_algorithm != SIG_ECDSA {
            return Err(CtError(format!(
                "SCT uses hash {} / signature {}, expected SHA-256 / ECDSA",
                self.hash_algorithm, self.signature_algorithm
            )));
        }
        let data = precert_signed_data(self.timestamp, issuer_key_hash, tbs, &self.extensions);
        log_key
            .verify_sig(&data, &self.signature)
            .map_err(|_| CtError("SCT signature does not verify with the log's public key".into()))
    }
}

/// A verifier for a log's P-256 key (SEC1 point), parsed once.
pub fn log_verifier(point: &[u8]) -> Result<ParsedPublicKey, CtError> {
    ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point).map_err(|_| CtError("not a P-256 public key".into()))
}

/// RFC 6962 §3.2 `digitally-signed` input for a precertificate entry.
pub fn precert_signed_data(timestamp: u64, issuer_key_hash: &[u8; 32], tbs: &[u8], extensions: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tbs.len() + 64);
    out.extend_from_slice(&[0, 0]); // v1, certificate_timestamp
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes()); // precert_entry
    out.extend_from_slice(issuer_key_hash);
    u24_prefixed(&mut out, tbs);
    u16_prefixed(&mut out, extensions);
    out
}

/// RFC 6962 §3.2 `digitally-signed` input for an X.509 entry.
pub fn x509_signed_data(timestamp: u64, cert: &[u8], extensions: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cert.len() + 32);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // x509_entry
    u24_prefixed(&mut out, cert);
    u16_prefixed(&mut out, extensions);
    out
}

/// The extnValue of the SCT-list extension: the TLS `SignedCertificateTimestampList`.
pub fn sct_list(scts: &[Sct]) -> Vec<u8> {
    let mut list = Vec::new();
    for s in scts {
        u16_prefixed(&mut list, &s.to_tls());
    }
    let mut out = Vec::with_capacity(list.len() + 2);
    u16_prefixed(&mut out, &list);
    der::octet_string(&out)
}

/// The DER encoding of an OID, for matching extensions.
pub fn oid_der(arcs: &[u64]) -> Vec<u8> {
    der::oid(arcs)
}

/// A future returned by [`CtLog`] methods (no runtime dependency in the core).
pub type CtFuture<'a> = Pin<Box<dyn Future<Output = Result<Logged, CtError>> + Send + 'a>>;

/// What a log answered to `add-pre-chain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The SCT (still to be verified by the CA).
    pub sct: Sct,
    /// The entry's position, when the log says (the embedded log does; RFC 6962 logs do not).
    pub leaf_index: Option<u64>,
}

/// A Certificate Transparency log the CA submits precertificates to: the embedded log or a
/// remote RFC 6962 log. Implementations bound their own time and retries.
pub trait CtLog: Send + Sync {
    /// Where the log is, for messages (a URL, or `embedded`).
    fn name(&self) -> &str;
    /// `add-pre-chain`: `chain` is [precertificate, issuing CA, …, root], DER. The CA verifies
    /// every SCT it gets back with the configured log key before it uses it.
    fn add_pre_chain<'a>(&'a self, chain: &'a [Vec<u8>]) -> CtFuture<'a>;
    /// True if this log is known to verify the precertificate's signature before accepting it (the
    /// embedded log does); otherwise the CA verifies it itself before sending it anywhere.
    fn verifies_precertificate_signature(&self) -> bool {
        false
    }
}
