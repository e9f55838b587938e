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

/// Why an SCT could not be had or trusted, or why TLS-encoded bytes could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CtError(pub String);

/// TLS presentation-language vectors (RFC 8446 §3.4) as RFC 6962 uses them: big-endian integers
/// and `opaque<…>` vectors with 1-, 2- or 3-byte length prefixes. The one TLS codec of the
/// workspace: the CT log, the remote-log client and the audit sync build on it.
pub mod tls {
    use super::CtError;

    /// Appends a 16-bit length and the bytes. The caller bounds `bytes` below 64 KiB (signatures,
    /// CT extensions, SCTs: a few hundred bytes).
    pub fn put_u16_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    /// Appends a 24-bit length and the bytes. The caller bounds `bytes` below 16 MiB
    /// (certificates and chains, which the log caps far lower).
    pub fn put_u24_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(bytes);
    }

    /// Reads TLS structures from a byte slice without copying. Every read checks the length
    /// left, so truncated or oversized input is an error, never a panic.
    #[derive(Debug, Clone)]
    pub struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        /// A reader over `bytes`.
        pub fn new(bytes: &'a [u8]) -> Reader<'a> {
            Reader(bytes)
        }

        /// The next `n` bytes.
        pub fn take(&mut self, n: usize) -> Result<&'a [u8], CtError> {
            if self.0.len() < n {
                return Err(CtError(format!("truncated: {n} bytes needed, {} left", self.0.len())));
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }

        /// A big-endian unsigned integer of `n` ≤ 8 bytes.
        pub fn uint(&mut self, n: usize) -> Result<u64, CtError> {
            debug_assert!(n <= 8);
            Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
        }

        /// One byte.
        pub fn u8(&mut self) -> Result<u8, CtError> {
            Ok(self.take(1)?[0])
        }

        /// Two bytes, big-endian.
        pub fn u16(&mut self) -> Result<u16, CtError> {
            Ok(self.uint(2)? as u16)
        }

        /// Eight bytes, big-endian.
        pub fn u64(&mut self) -> Result<u64, CtError> {
            self.uint(8)
        }

        /// Exactly `N` bytes.
        pub fn array<const N: usize>(&mut self) -> Result<[u8; N], CtError> {
            let mut out = [0u8; N];
            out.copy_from_slice(self.take(N)?);
            Ok(out)
        }

        /// An `opaque<…>` vector whose length prefix is `len_bytes` (1, 2 or 3) long.
        pub fn vec(&mut self, len_bytes: usize) -> Result<&'a [u8], CtError> {
            let n = self.uint(len_bytes)?;
            let n = usize::try_from(n).map_err(|_| CtError(format!("a vector claims {n} bytes")))?;
            self.take(n)
        }

        /// Nothing left to read.
        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }

        /// Fails if anything is left: every structure is read whole.
        pub fn finish(&self) -> Result<(), CtError> {
            if self.0.is_empty() {
                Ok(())
            } else {
                Err(CtError(format!("{} trailing bytes", self.0.len())))
            }
        }
    }
}

use tls::{Reader, put_u16_prefixed, put_u24_prefixed};

/// A TLS `DigitallySigned` (RFC 5246 §4.7): how SCTs and tree heads carry their signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigitallySigned {
    /// TLS hash algorithm (4 = SHA-256).
    pub hash_algorithm: u8,
    /// TLS signature algorithm (3 = ECDSA).
    pub signature_algorithm: u8,
    /// The signature (DER for ECDSA).
    pub signature: Vec<u8>,
}

impl DigitallySigned {
    /// An ECDSA-with-SHA-256 signature, the only kind RFC 6962 clients accept from a P-256 log.
    pub fn ecdsa_sha256(signature: Vec<u8>) -> DigitallySigned {
        DigitallySigned {
            hash_algorithm: HASH_SHA256,
            signature_algorithm: SIG_ECDSA,
            signature,
        }
    }

    /// hash(1) sig(1) len(2) signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.signature.len() + 4);
        out.push(self.hash_algorithm);
        out.push(self.signature_algorithm);
        put_u16_prefixed(&mut out, &self.signature);
        out
    }

    /// Reads exactly one `DigitallySigned` (nothing may follow it).
    pub fn decode(bytes: &[u8]) -> Result<DigitallySigned, CtError> {
        let mut r = Reader::new(bytes);
        let ds = DigitallySigned::read(&mut r)?;
        r.finish()?;
        Ok(ds)
    }

    fn read(r: &mut Reader<'_>) -> Result<DigitallySigned, CtError> {
        Ok(DigitallySigned {
            hash_algorithm: r.u8()?,
            signature_algorithm: r.u8()?,
            signature: r.vec(2)?.to_vec(),
        })
    }

    /// Fails unless the algorithms are SHA-256 / ECDSA, naming what they are.
    pub fn require_ecdsa_sha256(&self) -> Result<(), CtError> {
        if (self.hash_algorithm, self.signature_algorithm) == (HASH_SHA256, SIG_ECDSA) {
            return Ok(());
        }
        Err(CtError(format!(
            "signed with hash {} / signature {}, not SHA-256 / ECDSA",
            self.hash_algorithm, self.signature_algorithm
        )))
    }
}

impl Sct {
    /// The signature as a TLS `DigitallySigned`.
    pub fn digitally_signed(&self) -> Vec<u8> {
        DigitallySigned {
            hash_algorithm: self.hash_algorithm,
            signature_algorithm: self.signature_algorithm,
            signature: self.signature.clone(),
        }
        .encode()
    }

    /// The TLS `SignedCertificateTimestamp` encoding (as carried in the SCT-list extension).
    pub fn to_tls(&self) -> Vec<u8> {
        let mut out = vec![0u8];
        out.extend_from_slice(&self.log_id);
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        put_u16_prefixed(&mut out, &self.extensions);
        out.extend_from_slice(&self.digitally_signed());
        out
    }

    /// Reads one v1 TLS `SignedCertificateTimestamp` (the inverse of [`Sct::to_tls`]).
    pub fn from_tls(bytes: &[u8]) -> Result<Sct, CtError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != 0 {
            return Err(CtError(format!("unsupported SCT version {version}")));
        }
        let log_id = r.array::<32>()?;
        let timestamp = r.u64()?;
        let extensions = r.vec(2)?.to_vec();
        let ds = DigitallySigned::read(&mut r)?;
        r.finish()?;
        Ok(Sct {
            log_id,
            timestamp,
            extensions,
            hash_algorithm: ds.hash_algorithm,
            signature_algorithm: ds.signature_algorithm,
            signature: ds.signature,
        })
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
    put_u24_prefixed(&mut out, tbs);
    put_u16_prefixed(&mut out, extensions);
    out
}

/// RFC 6962 §3.2 `digitally-signed` input for an X.509 entry.
pub fn x509_signed_data(timestamp: u64, cert: &[u8], extensions: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cert.len() + 32);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // x509_entry
    put_u24_prefixed(&mut out, cert);
    put_u16_prefixed(&mut out, extensions);
    out
}

/// The extnValue of the SCT-list extension: the TLS `SignedCertificateTimestampList`.
pub fn sct_list(scts: &[Sct]) -> Vec<u8> {
    let mut list = Vec::new();
    for s in scts {
        put_u16_prefixed(&mut list, &s.to_tls());
    }
    let mut out = Vec::with_capacity(list.len() + 2);
    put_u16_prefixed(&mut out, &list);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sct() -> Sct {
        Sct {
            log_id: [7; 32],
            timestamp: 1_700_000_000_123,
            extensions: vec![1, 2, 3],
            hash_algorithm: HASH_SHA256,
            signature_algorithm: SIG_ECDSA,
            signature: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        }
    }

    #[test]
    fn scts_and_digitally_signed_round_trip() {
        let s = sct();
        let tls = s.to_tls();
        assert_eq!(tls.len(), 1 + 32 + 8 + 2 + 3 + 4 + 5);
        assert_eq!(Sct::from_tls(&tls).unwrap(), s);
        let ds = DigitallySigned::decode(&s.digitally_signed()).unwrap();
        assert_eq!(ds, DigitallySigned::ecdsa_sha256(s.signature.clone()));
        assert_eq!(ds.encode(), s.digitally_signed());
        ds.require_ecdsa_sha256().unwrap();
        let rsa = DigitallySigned {
            signature_algorithm: 1,
            ..ds
        };
        assert!(rsa.require_ecdsa_sha256().unwrap_err().0.contains("signature 1"));
    }

    #[test]
    fn truncated_and_oversized_tls_is_refused() {
        let tls = sct().to_tls();
        for n in 0..tls.len() {
            assert!(Sct::from_tls(&tls[..n]).is_err(), "{n} bytes");
        }
        let mut long = tls.clone();
        long.push(0);
        assert!(Sct::from_tls(&long).unwrap_err().0.contains("1 trailing bytes"));
        let mut v2 = tls;
        v2[0] = 1;
        assert!(Sct::from_tls(&v2).unwrap_err().0.contains("version 1"));
        // A length prefix claiming more than is there.
        assert!(
            DigitallySigned::decode(&[4, 3, 0xff, 0xff, 1, 2])
                .unwrap_err()
                .0
                .contains("truncated")
        );
        assert!(DigitallySigned::decode(&[4, 3, 0, 1, 9, 9]).is_err(), "trailing byte");
        let mut r = tls::Reader::new(&[0xff, 0xff, 0xff]);
        assert!(r.vec(3).is_err());
        let mut r = tls::Reader::new(&[0, 0, 2, 0xaa, 0xbb]);
        assert_eq!(r.vec(3).unwrap(), [0xaa, 0xbb]);
        assert!(r.is_empty() && r.finish().is_ok());
    }

    #[test]
    fn sct_lists_hold_each_sct_length_prefixed() {
        let s = sct();
        let ext = sct_list(std::slice::from_ref(&s));
        let (octets, rest) = der::read_tlv(&ext).unwrap();
        assert!(rest.is_empty());
        let mut r = tls::Reader::new(octets.content);
        let mut list = tls::Reader::new(r.vec(2).unwrap());
        r.finish().unwrap();
        assert_eq!(Sct::from_tls(list.vec(2).unwrap()).unwrap(), s);
        list.finish().unwrap();
    }
}
