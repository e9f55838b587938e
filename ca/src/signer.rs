//! The CA's signing key, as a trait the core owns and the key backends (file, PKCS#11) implement.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, KeyPair};

use crate::der;

/// Signature algorithms a CA key can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// ECDSA P-256 with SHA-256 (the default issuing key).
    EcdsaP256Sha256,
    /// ECDSA P-384 with SHA-384 (the default root key).
    EcdsaP384Sha384,
}

impl SignatureAlgorithm {
    /// DER `AlgorithmIdentifier` (ECDSA has no parameters).
    pub(crate) fn algorithm_identifier(self) -> Vec<u8> {
        match self {
            SignatureAlgorithm::EcdsaP256Sha256 => der::seq(&[&der::oid(&[1, 2, 840, 10045, 4, 3, 2])]),
            SignatureAlgorithm::EcdsaP384Sha384 => der::seq(&[&der::oid(&[1, 2, 840, 10045, 4, 3, 3])]),
        }
    }

    pub(crate) fn verification(self) -> &'static sig::EcdsaVerificationAlgorithm {
        match self {
            SignatureAlgorithm::EcdsaP256Sha256 => &sig::ECDSA_P256_SHA256_ASN1,
            SignatureAlgorithm::EcdsaP384Sha384 => &sig::ECDSA_P384_SHA384_ASN1,
        }
    }

    fn signing(self) -> &'static sig::EcdsaSigningAlgorithm {
        match self {
            SignatureAlgorithm::EcdsaP256Sha256 => &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
            SignatureAlgorithm::EcdsaP384Sha384 => &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }

    fn curve_oid(self) -> &'static [u64] {
        match self {
            SignatureAlgorithm::EcdsaP256Sha256 => &[1, 2, 840, 10045, 3, 1, 7],
            SignatureAlgorithm::EcdsaP384Sha384 => &[1, 3, 132, 0, 34],
        }
    }
}

/// A signing failure. The text is for the operator's log; clients never see it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SignError(pub String);

/// A CA signing key. `sign` returns the signature as X.509 carries it (DER `ECDSA-Sig-Value`).
///
/// Implementations may be slow or blocking (an HSM round trip); callers on an async runtime run
/// issuance on a blocking thread. The core verifies every signature this returns before use.
pub trait Signer: Send + Sync {
    /// The algorithm `sign` produces.
    fn algorithm(&self) -> SignatureAlgorithm;
    /// The key's DER SubjectPublicKeyInfo.
    fn public_key_spki(&self) -> &[u8];
    /// Signs `message` (hashing it as the algorithm says).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
    /// True when `sign` may block on I/O (an HSM): callers then run issuance off the async runtime.
    fn blocking(&self) -> bool {
        false
    }
}

/// An ECDSA key held in process memory (aws-lc-rs). Used by the file CA and for generating keys.
pub struct SoftwareSigner {
    key: EcdsaKeyPair,
    algorithm: SignatureAlgorithm,
    spki: Vec<u8>,
    rng: SystemRandom,
}

impl std::fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareSigner")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SoftwareSigner {
    /// Generates a fresh key; returns the signer and its unencrypted PKCS#8 DER.
    pub fn generate(algorithm: SignatureAlgorithm) -> Result<(SoftwareSigner, Vec<u8>), SignError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(algorithm.signing(), &rng)
            .map_err(|_| SignError("key generation failed".into()))?;
        let signer = SoftwareSigner::from_pkcs8(algorithm, pkcs8.as_ref())?;
        Ok((signer, pkcs8.as_ref().to_vec()))
    }

    /// Loads an unencrypted PKCS#8 DER key of the given algorithm.
    pub fn from_pkcs8(algorithm: SignatureAlgorithm, pkcs8: &[u8]) -> Result<SoftwareSigner, SignError> {
        let key = EcdsaKeyPair::from_pkcs8(algorithm.signing(), pkcs8)
            .map_err(|e| SignError(format!("not a {algorithm:?} PKCS#8 key: {e}")))?;
        let alg_id = der::seq(&[&der::oid(&[1, 2, 840, 10045, 2, 1]), &der::oid(algorithm.curve_oid())]);
        let spki = der::seq(&[&alg_id, &der::bit_string(key.public_key().as_ref())]);
        Ok(SoftwareSigner {
            key,
            algorithm,
            spki,
            rng: SystemRandom::new(),
        })
    }

    /// Loads a PKCS#8 DER key, detecting P-256 or P-384.
    pub fn from_pkcs8_any(pkcs8: &[u8]) -> Result<SoftwareSigner, SignError> {
        SoftwareSigner::from_pkcs8(SignatureAlgorithm::EcdsaP256Sha256, pkcs8)
            .or_else(|_| SoftwareSigner::from_pkcs8(SignatureAlgorithm::EcdsaP384Sha384, pkcs8))
            .map_err(|_| SignError("the key is not an ECDSA P-256 or P-384 PKCS#8 key".into()))
    }
}

impl Signer for SoftwareSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.key
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| SignError("ECDSA signing failed".into()))
    }
}
