//! The CA's signing key, as a trait the core owns and the key backends (file, PKCS#11) implement.
//!
//! The certificate signature algorithm follows the key as Fulcio's file CA chooses it: ECDSA with
//! SHA-256/384/512 by curve (P-256/P-384/P-521), RSA PKCS#1 v1.5 with SHA-256 whatever the
//! modulus size, and pure Ed25519.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, VerificationAlgorithm};

use crate::der;

const OID_EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
const OID_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
const OID_ED25519: &[u64] = &[1, 3, 101, 112];
const OID_P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
const OID_P384: &[u64] = &[1, 3, 132, 0, 34];
const OID_P521: &[u64] = &[1, 3, 132, 0, 35];

/// Signature algorithms a CA key can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// ECDSA P-256 with SHA-256 (the default issuing key).
    EcdsaP256Sha256,
    /// ECDSA P-384 with SHA-384 (the default root key).
    EcdsaP384Sha384,
    /// ECDSA P-521 with SHA-512.
    EcdsaP521Sha512,
    /// RSA PKCS#1 v1.5 with SHA-256 (any modulus the key policy allows: 2048, 3072, 4096).
    RsaPkcs1Sha256,
    /// Pure Ed25519.
    Ed25519,
}

impl SignatureAlgorithm {
    /// DER `AlgorithmIdentifier`: ECDSA and Ed25519 have no parameters, RSA a NULL (RFC 4055).
    pub(crate) fn algorithm_identifier(self) -> Vec<u8> {
        match self {
            SignatureAlgorithm::EcdsaP256Sha256 => der::seq(&[&der::oid(&[1, 2, 840, 10045, 4, 3, 2])]),
            SignatureAlgorithm::EcdsaP384Sha384 => der::seq(&[&der::oid(&[1, 2, 840, 10045, 4, 3, 3])]),
            SignatureAlgorithm::EcdsaP521Sha512 => der::seq(&[&der::oid(&[1, 2, 840, 10045, 4, 3, 4])]),
            SignatureAlgorithm::RsaPkcs1Sha256 => {
                der::seq(&[&der::oid(&[1, 2, 840, 113549, 1, 1, 11]), &[der::NULL, 0]])
            }
            SignatureAlgorithm::Ed25519 => der::seq(&[&der::oid(OID_ED25519)]),
        }
    }

    /// The verifier for signatures this algorithm produces, over the key's subjectPublicKey bits.
    pub(crate) fn verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            SignatureAlgorithm::EcdsaP256Sha256 => &sig::ECDSA_P256_SHA256_ASN1,
            SignatureAlgorithm::EcdsaP384Sha384 => &sig::ECDSA_P384_SHA384_ASN1,
            SignatureAlgorithm::EcdsaP521Sha512 => &sig::ECDSA_P521_SHA512_ASN1,
            SignatureAlgorithm::RsaPkcs1Sha256 => &sig::RSA_PKCS1_2048_8192_SHA256,
            SignatureAlgorithm::Ed25519 => &sig::ED25519,
        }
    }

    fn ecdsa_signing(self) -> Option<&'static sig::EcdsaSigningAlgorithm> {
        match self {
            SignatureAlgorithm::EcdsaP256Sha256 => Some(&sig::ECDSA_P256_SHA256_ASN1_SIGNING),
            SignatureAlgorithm::EcdsaP384Sha384 => Some(&sig::ECDSA_P384_SHA384_ASN1_SIGNING),
            SignatureAlgorithm::EcdsaP521Sha512 => Some(&sig::ECDSA_P521_SHA512_ASN1_SIGNING),
            SignatureAlgorithm::RsaPkcs1Sha256 | SignatureAlgorithm::Ed25519 => None,
        }
    }

    fn curve_oid(self) -> Option<&'static [u64]> {
        match self {
            SignatureAlgorithm::EcdsaP256Sha256 => Some(OID_P256),
            SignatureAlgorithm::EcdsaP384Sha384 => Some(OID_P384),
            SignatureAlgorithm::EcdsaP521Sha512 => Some(OID_P521),
            SignatureAlgorithm::RsaPkcs1Sha256 | SignatureAlgorithm::Ed25519 => None,
        }
    }

    /// How certificates name it (OpenSSL's names), for logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            SignatureAlgorithm::EcdsaP256Sha256 => "ecdsa-with-SHA256 (P-256)",
            SignatureAlgorithm::EcdsaP384Sha384 => "ecdsa-with-SHA384 (P-384)",
            SignatureAlgorithm::EcdsaP521Sha512 => "ecdsa-with-SHA512 (P-521)",
            SignatureAlgorithm::RsaPkcs1Sha256 => "sha256WithRSAEncryption",
            SignatureAlgorithm::Ed25519 => "Ed25519",
        }
    }
}

/// A key to generate (`keyless ca init --algorithm`, tests). RSA needs a size, which the
/// signature algorithm alone does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// ECDSA P-256.
    EcdsaP256,
    /// ECDSA P-384.
    EcdsaP384,
    /// ECDSA P-521.
    EcdsaP521,
    /// RSA, 2048-bit modulus.
    Rsa2048,
    /// RSA, 3072-bit modulus.
    Rsa3072,
    /// RSA, 4096-bit modulus.
    Rsa4096,
    /// Ed25519.
    Ed25519,
}

impl KeySpec {
    /// Every spec, in the order help texts list them.
    pub const ALL: [KeySpec; 7] = [
        KeySpec::EcdsaP256,
        KeySpec::EcdsaP384,
        KeySpec::EcdsaP521,
        KeySpec::Rsa2048,
        KeySpec::Rsa3072,
        KeySpec::Rsa4096,
        KeySpec::Ed25519,
    ];

    /// The name `--algorithm` takes.
    pub fn name(self) -> &'static str {
        match self {
            KeySpec::EcdsaP256 => "ecdsa-p256",
            KeySpec::EcdsaP384 => "ecdsa-p384",
            KeySpec::EcdsaP521 => "ecdsa-p521",
            KeySpec::Rsa2048 => "rsa-2048",
            KeySpec::Rsa3072 => "rsa-3072",
            KeySpec::Rsa4096 => "rsa-4096",
            KeySpec::Ed25519 => "ed25519",
        }
    }

    /// The certificate signature algorithm a key of this spec signs with.
    pub fn signature_algorithm(self) -> SignatureAlgorithm {
        match self {
            KeySpec::EcdsaP256 => SignatureAlgorithm::EcdsaP256Sha256,
            KeySpec::EcdsaP384 => SignatureAlgorithm::EcdsaP384Sha384,
            KeySpec::EcdsaP521 => SignatureAlgorithm::EcdsaP521Sha512,
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => SignatureAlgorithm::RsaPkcs1Sha256,
            KeySpec::Ed25519 => SignatureAlgorithm::Ed25519,
        }
    }
}

impl std::str::FromStr for KeySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<KeySpec, String> {
        KeySpec::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = KeySpec::ALL.iter().map(|k| k.name()).collect();
            format!("unknown key algorithm {s:?} (one of: {})", names.join(", "))
        })
    }
}

/// A signing failure. The text is for the operator's log; clients never see it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SignError(pub String);

/// A CA signing key. `sign` returns the signature as X.509 carries it: a DER `ECDSA-Sig-Value`
/// for ECDSA, the raw signature for RSA and Ed25519.
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

enum SoftwareKey {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A key held in process memory (aws-lc-rs): ECDSA P-256/P-384/P-521, RSA or Ed25519. Used by the
/// file CA, the embedded CT log and the audit record, and for generating keys.
pub struct SoftwareSigner {
    key: SoftwareKey,
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

/// Which key a PKCS#8 `PrivateKeyInfo` holds, from its `privateKeyAlgorithm` (and curve).
fn pkcs8_algorithm(pkcs8: &[u8]) -> Option<SignatureAlgorithm> {
    let (info, _) = der::read_tlv(pkcs8)?;
    let items = der::read_all(info.content)?;
    let alg = der::read_all(items.get(1)?.content)?;
    let oid = alg.first()?.raw;
    if oid == der::oid(OID_RSA) {
        Some(SignatureAlgorithm::RsaPkcs1Sha256)
    } else if oid == der::oid(OID_ED25519) {
        Some(SignatureAlgorithm::Ed25519)
    } else if oid == der::oid(OID_EC_PUBLIC_KEY) {
        let curve = alg.get(1)?.raw;
        [
            SignatureAlgorithm::EcdsaP256Sha256,
            SignatureAlgorithm::EcdsaP384Sha384,
            SignatureAlgorithm::EcdsaP521Sha512,
        ]
        .into_iter()
        .find(|a| a.curve_oid().is_some_and(|c| der::oid(c) == curve))
    } else {
        None
    }
}

impl SoftwareSigner {
    /// Generates a fresh key; returns the signer and its unencrypted PKCS#8 DER.
    pub fn generate_key(spec: KeySpec) -> Result<(SoftwareSigner, Vec<u8>), SignError> {
        let failed = |_| SignError(format!("{} key generation failed", spec.name()));
        let rng = SystemRandom::new();
        let pkcs8 = match spec {
            KeySpec::EcdsaP256 | KeySpec::EcdsaP384 | KeySpec::EcdsaP521 => {
                let alg = spec
                    .signature_algorithm()
                    .ecdsa_signing()
                    .ok_or_else(|| SignError("not an ECDSA algorithm".into()))?;
                EcdsaKeyPair::generate_pkcs8(alg, &rng)
                    .map_err(failed)?
                    .as_ref()
                    .to_vec()
            }
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                let size = match spec {
                    KeySpec::Rsa2048 => KeySize::Rsa2048,
                    KeySpec::Rsa3072 => KeySize::Rsa3072,
                    _ => KeySize::Rsa4096,
                };
                let key = RsaKeyPair::generate(size).map_err(failed)?;
                let doc: aws_lc_rs::encoding::Pkcs8V1Der<'_> = key.as_der().map_err(failed)?;
                doc.as_ref().to_vec()
            }
            KeySpec::Ed25519 => Ed25519KeyPair::generate_pkcs8(&rng).map_err(failed)?.as_ref().to_vec(),
        };
        let signer = SoftwareSigner::from_pkcs8_any(&pkcs8)?;
        Ok((signer, pkcs8))
    }

    /// Generates a fresh key for `algorithm` (RSA: 3072 bits); returns the signer and its
    /// unencrypted PKCS#8 DER.
    pub fn generate(algorithm: SignatureAlgorithm) -> Result<(SoftwareSigner, Vec<u8>), SignError> {
        SoftwareSigner::generate_key(match algorithm {
            SignatureAlgorithm::EcdsaP256Sha256 => KeySpec::EcdsaP256,
            SignatureAlgorithm::EcdsaP384Sha384 => KeySpec::EcdsaP384,
            SignatureAlgorithm::EcdsaP521Sha512 => KeySpec::EcdsaP521,
            SignatureAlgorithm::RsaPkcs1Sha256 => KeySpec::Rsa3072,
            SignatureAlgorithm::Ed25519 => KeySpec::Ed25519,
        })
    }

    /// Loads an unencrypted PKCS#8 DER key that must be of the given algorithm.
    pub fn from_pkcs8(algorithm: SignatureAlgorithm, pkcs8: &[u8]) -> Result<SoftwareSigner, SignError> {
        let signer = SoftwareSigner::from_pkcs8_any(pkcs8)?;
        if signer.algorithm != algorithm {
            return Err(SignError(format!(
                "the key signs with {}, not {}",
                signer.algorithm.name(),
                algorithm.name()
            )));
        }
        Ok(signer)
    }

    /// Loads an unencrypted PKCS#8 DER key of any supported type (EC P-256/P-384/P-521, RSA,
    /// Ed25519 v1 or v2), taking the algorithm from the key.
    pub fn from_pkcs8_any(pkcs8: &[u8]) -> Result<SoftwareSigner, SignError> {
        let algorithm = pkcs8_algorithm(pkcs8)
            .ok_or_else(|| SignError("the PKCS#8 key is not ECDSA P-256/P-384/P-521, RSA or Ed25519".into()))?;
        let rejected =
            |e: aws_lc_rs::error::KeyRejected| SignError(format!("the {} key is invalid: {e}", algorithm.name()));
        let key = match algorithm.ecdsa_signing() {
            Some(alg) => SoftwareKey::Ecdsa(EcdsaKeyPair::from_pkcs8(alg, pkcs8).map_err(rejected)?),
            None if algorithm == SignatureAlgorithm::Ed25519 => {
                SoftwareKey::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(rejected)?)
            }
            None => SoftwareKey::Rsa(RsaKeyPair::from_pkcs8(pkcs8).map_err(rejected)?),
        };
        SoftwareSigner::new(key, algorithm)
    }

    /// Loads a PKCS#1 `RSAPrivateKey` (PEM label `RSA PRIVATE KEY`).
    pub fn from_rsa_pkcs1(der: &[u8]) -> Result<SoftwareSigner, SignError> {
        let key = RsaKeyPair::from_der(der).map_err(|e| SignError(format!("not a valid PKCS#1 RSA key: {e}")))?;
        SoftwareSigner::new(SoftwareKey::Rsa(key), SignatureAlgorithm::RsaPkcs1Sha256)
    }

    /// Loads a SEC1 `ECPrivateKey` (PEM label `EC PRIVATE KEY`) on P-256, P-384 or P-521.
    pub fn from_sec1(der: &[u8]) -> Result<SoftwareSigner, SignError> {
        [
            SignatureAlgorithm::EcdsaP256Sha256,
            SignatureAlgorithm::EcdsaP384Sha384,
            SignatureAlgorithm::EcdsaP521Sha512,
        ]
        .into_iter()
        .find_map(|algorithm| {
            let alg = algorithm.ecdsa_signing()?;
            let key = EcdsaKeyPair::from_private_key_der(alg, der).ok()?;
            Some((key, algorithm))
        })
        .ok_or_else(|| SignError("not a SEC1 EC key on P-256, P-384 or P-521".into()))
        .and_then(|(key, algorithm)| SoftwareSigner::new(SoftwareKey::Ecdsa(key), algorithm))
    }

    fn new(key: SoftwareKey, algorithm: SignatureAlgorithm) -> Result<SoftwareSigner, SignError> {
        let spki = match &key {
            // The EC SubjectPublicKeyInfo is built here (uncompressed point, named curve) so it
            // is byte-for-byte what certificates and the key policy expect.
            SoftwareKey::Ecdsa(k) => {
                let curve = algorithm
                    .curve_oid()
                    .ok_or_else(|| SignError("an ECDSA key without a curve".into()))?;
                let alg_id = der::seq(&[&der::oid(OID_EC_PUBLIC_KEY), &der::oid(curve)]);
                der::seq(&[&alg_id, &der::bit_string(k.public_key().as_ref())])
            }
            SoftwareKey::Rsa(k) => {
                let spki: aws_lc_rs::encoding::PublicKeyX509Der<'_> = k
                    .public_key()
                    .as_der()
                    .map_err(|_| SignError("cannot encode the RSA public key".into()))?;
                spki.as_ref().to_vec()
            }
            SoftwareKey::Ed25519(k) => der::seq(&[
                &der::seq(&[&der::oid(OID_ED25519)]),
                &der::bit_string(k.public_key().as_ref()),
            ]),
        };
        Ok(SoftwareSigner {
            key,
            algorithm,
            spki,
            rng: SystemRandom::new(),
        })
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
        match &self.key {
            SoftwareKey::Ecdsa(k) => k
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SignError("ECDSA signing failed".into())),
            SoftwareKey::Rsa(k) => {
                let mut signature = vec![0u8; k.public_modulus_len()];
                k.sign(&sig::RSA_PKCS1_SHA256, &self.rng, message, &mut signature)
                    .map_err(|_| SignError("RSA signing failed".into()))?;
                Ok(signature)
            }
            SoftwareKey::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key type signs what its own SubjectPublicKeyInfo verifies, through PKCS#8 and back,
    /// and names the certificate signature algorithm Fulcio uses for it.
    #[test]
    fn every_key_spec_round_trips_and_verifies() {
        let expected_oids: [(&str, &[u8]); 7] = [
            ("ecdsa-p256", &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
            ("ecdsa-p384", &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]),
            ("ecdsa-p521", &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04]),
            ("rsa-2048", &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]),
            ("rsa-3072", &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]),
            ("rsa-4096", &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]),
            ("ed25519", &[0x2b, 0x65, 0x70]),
        ];
        for (spec, (name, oid)) in KeySpec::ALL.into_iter().zip(expected_oids) {
            // RSA-4096 generation is slow in debug builds and adds nothing over 2048/3072 here.
            if spec == KeySpec::Rsa4096 {
                continue;
            }
            assert_eq!(spec.name(), name);
            assert_eq!(name.parse::<KeySpec>().unwrap(), spec);
            let (signer, pkcs8) = SoftwareSigner::generate_key(spec).unwrap();
            let again = SoftwareSigner::from_pkcs8(spec.signature_algorithm(), &pkcs8).unwrap();
            assert_eq!(again.public_key_spki(), signer.public_key_spki(), "{name}");
            let key = crate::keys::PublicKey::from_spki_der(signer.public_key_spki()).unwrap();
            let sig = again.sign(b"tbs").unwrap();
            let verifier = crate::cert::self_verifier(&again).unwrap();
            assert!(verifier.verify_sig(b"tbs", &sig).is_ok(), "{name}");
            assert!(verifier.verify_sig(b"tbS", &sig).is_err(), "{name}");
            let alg_id = spec.signature_algorithm().algorithm_identifier();
            let (seq, _) = der::read_tlv(&alg_id).unwrap();
            let items = der::read_all(seq.content).unwrap();
            assert_eq!(items[0].content, oid, "{name}");
            // RSA carries NULL parameters (RFC 4055); ECDSA and Ed25519 none (RFC 5758, 8410).
            assert_eq!(items.len(), if name.starts_with("rsa") { 2 } else { 1 }, "{name}");
            let hash = match key.key_type() {
                crate::keys::KeyType::Ed25519 => crate::keys::Hash::None,
                crate::keys::KeyType::P384 => crate::keys::Hash::Sha384,
                crate::keys::KeyType::P521 => crate::keys::Hash::Sha512,
                _ => crate::keys::Hash::Sha256,
            };
            assert!(key.verify(hash, b"tbs", &sig), "{name}");
        }
        assert!("rsa-1024".parse::<KeySpec>().unwrap_err().contains("ecdsa-p256"));
    }

    #[test]
    fn a_key_of_another_algorithm_is_refused() {
        let (_, pkcs8) = SoftwareSigner::generate_key(KeySpec::EcdsaP384).unwrap();
        let e = SoftwareSigner::from_pkcs8(SignatureAlgorithm::EcdsaP256Sha256, &pkcs8).unwrap_err();
        assert!(e.0.contains("P-384"), "{e}");
        assert!(SoftwareSigner::from_pkcs8_any(b"\x30\x03\x02\x01\x00").is_err());
        assert!(SoftwareSigner::from_sec1(&pkcs8[..10]).is_err());
    }
}
