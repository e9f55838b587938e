//! Proof of possession: the client shows it holds the private key, either by signing the
//! principal's name or by self-signing a CSR. [`ProvenKey`] can only be made here.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use keyless_config::ClientSigningAlgorithm;

use crate::Error;
use crate::identity::Principal;
use crate::keys::{Hash, KeyType, PublicKey, signature_oid_hash};

/// How the client presented its key.
#[derive(Debug, Clone, Copy)]
pub enum KeyRequest<'a> {
    /// A public key (PEM or DER SPKI) and a signature over the principal's name.
    Signature {
        /// PEM or DER SubjectPublicKeyInfo.
        public_key: &'a [u8],
        /// Signature over the UTF-8 bytes of the principal's name.
        proof: &'a [u8],
    },
    /// A PEM PKCS#10 CSR whose self-signature is the proof.
    Csr {
        /// PEM text.
        pem: &'a [u8],
    },
}

/// A key whose possession has been proven and which passed the key policy.
#[derive(Debug, Clone)]
pub struct ProvenKey {
    key: PublicKey,
    hash: Hash,
    /// The name the proof signed (`None` for a CSR, which signs itself).
    proven_for: Option<String>,
}

impl ProvenKey {
    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    /// The hash the proof used.
    pub fn hash(&self) -> Hash {
        self.hash
    }

    pub(crate) fn proven_for(&self) -> Option<&str> {
        self.proven_for.as_deref()
    }
}

/// The (key, hash) pairs clients may use: `client_signing_algorithms`, Fulcio's
/// `--client-signing-algorithms`. It applies to proofs of possession (whose hash is the key's
/// default) and CSRs (whose hash is the CSR's signature algorithm) alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlgorithmPolicy {
    allowed: Vec<ClientSigningAlgorithm>,
}

impl Default for AlgorithmPolicy {
    /// Fulcio's default: every key the key policy admits, with its default hash.
    fn default() -> Self {
        AlgorithmPolicy::new(&ClientSigningAlgorithm::FULCIO_DEFAULT)
    }
}

impl AlgorithmPolicy {
    /// Admits exactly `allowed`.
    pub fn new(allowed: &[ClientSigningAlgorithm]) -> AlgorithmPolicy {
        AlgorithmPolicy {
            allowed: allowed.to_vec(),
        }
    }

    /// The admitted algorithms.
    pub fn allowed(&self) -> &[ClientSigningAlgorithm] {
        &self.allowed
    }

    /// Refuses a (key, hash) pair that is not on the list, with Fulcio's message: `signing
    /// algorithm not permitted: <Go key type>, <Go hash name>`, then what was wrong in words.
    pub fn check(&self, key: KeyType, hash: Hash) -> Result<(), Error> {
        let algorithm = registry_algorithm(key, hash);
        if algorithm.is_some_and(|a| self.allowed.contains(&a)) {
            return Ok(());
        }
        let (go_key, go_hash) = go_names(key, hash);
        let used = match hash {
            Hash::None => key.name(),
            _ => format!("{} with {}", key.name(), hash.name()),
        };
        let why = match algorithm {
            Some(a) => format!("{used} ({a}) is not in client_signing_algorithms"),
            None => format!("{used} is not a known signing algorithm"),
        };
        let allowed: Vec<&str> = self.allowed.iter().map(|a| a.name()).collect();
        Err(Error::AlgorithmNotPermitted(format!(
            "{go_key}, {go_hash}: {why} (allowed: {})",
            allowed.join(", ")
        )))
    }
}

/// The registry entry for a (key, hash) pair; `None` for pairs the registry has no name for
/// (e.g. P-256 with SHA-384, RSA with SHA-512), which no list can admit.
fn registry_algorithm(key: KeyType, hash: Hash) -> Option<ClientSigningAlgorithm> {
    use ClientSigningAlgorithm as A;
    Some(match (key, hash) {
        (KeyType::P256, Hash::Sha256) => A::EcdsaP256Sha256,
        (KeyType::P384, Hash::Sha384) => A::EcdsaP384Sha384,
        (KeyType::P384, Hash::Sha256) => A::EcdsaP384Sha256,
        (KeyType::P521, Hash::Sha512) => A::EcdsaP521Sha512,
        (KeyType::P521, Hash::Sha256) => A::EcdsaP521Sha256,
        (KeyType::Rsa(2048), Hash::Sha256) => A::Rsa2048Pkcs1Sha256,
        (KeyType::Rsa(3072), Hash::Sha256) => A::Rsa3072Pkcs1Sha256,
        (KeyType::Rsa(4096), Hash::Sha256) => A::Rsa4096Pkcs1Sha256,
        (KeyType::Ed25519, Hash::None) => A::Ed25519,
        _ => return None,
    })
}

/// How Go prints the key type and hash, which Fulcio's message carries (`%T, %v`).
fn go_names(key: KeyType, hash: Hash) -> (&'static str, &'static str) {
    let key = match key {
        KeyType::P256 | KeyType::P384 | KeyType::P521 => "*ecdsa.PublicKey",
        KeyType::Rsa(_) => "*rsa.PublicKey",
        KeyType::Ed25519 => "ed25519.PublicKey",
    };
    let hash = match hash {
        Hash::None => "unknown hash value 0",
        other => other.name(),
    };
    (key, hash)
}

/// Checks the key policy, the proof for `principal`, then the algorithm allow-list (Fulcio's
/// order, so a client sees the same first error).
pub fn prove(principal: &Principal, request: KeyRequest<'_>, algorithms: &AlgorithmPolicy) -> Result<ProvenKey, Error> {
    match request {
        KeyRequest::Signature { public_key, proof } => {
            let key = PublicKey::from_pem_or_der(public_key)?;
            let hash = key.key_type().default_hash();
            if proof.is_empty() {
                return Err(Error::Possession("no proof of possession was sent".into()));
            }
            let Some(signed) = principal
                .challenges()
                .find(|name| key.verify(hash, name.as_bytes(), proof))
            else {
                let names: Vec<String> = principal.challenges().map(|n| format!("{n:?}")).collect();
                return Err(Error::Possession(format!(
                    "proofOfPossession is not a valid {} signature ({}) over {}",
                    key.key_type().name(),
                    hash_rule(key.key_type()),
                    names.join(" or ")
                )));
            };
            algorithms.check(key.key_type(), hash)?;
            Ok(ProvenKey {
                key,
                hash,
                proven_for: Some(signed.to_string()),
            })
        }
        KeyRequest::Csr { pem } => prove_csr(pem, algorithms),
    }
}

fn hash_rule(key: KeyType) -> &'static str {
    match key {
        KeyType::P256 => "ECDSA with SHA-256",
        KeyType::P384 => "ECDSA with SHA-384",
        KeyType::P521 => "ECDSA with SHA-512",
        KeyType::Rsa(_) => "PKCS#1 v1.5 with SHA-256",
        KeyType::Ed25519 => "pure Ed25519",
    }
}

/// Parses a PEM CSR, applies the key policy, verifies its self-signature and then checks the
/// algorithm allow-list. The CSR's subject, SANs and extensions are ignored: only the key is used.
pub fn prove_csr(pem_text: &[u8], algorithms: &AlgorithmPolicy) -> Result<ProvenKey, Error> {
    let block = pem::parse(pem_text).map_err(|e| Error::CsrParse(format!("not PEM: {e}")))?;
    if block.tag() != "CERTIFICATE REQUEST" && block.tag() != "NEW CERTIFICATE REQUEST" {
        return Err(Error::CsrParse(format!(
            "PEM block is {:?}, expected \"CERTIFICATE REQUEST\"",
            block.tag()
        )));
    }
    let (rest, csr) = X509CertificationRequest::from_der(block.contents())
        .map_err(|e| Error::CsrParse(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::CsrParse("trailing bytes after the request".into()));
    }
    let info = &csr.certification_request_info;
    let key = PublicKey::from_spki_der(info.subject_pki.raw)?;
    let alg = csr.signature_algorithm.algorithm.to_id_string();
    let hash = signature_oid_hash(&alg)
        .ok_or_else(|| Error::AlgorithmNotPermitted(format!("unrecognized CSR signature algorithm {alg}")))?;
    if !key.verify(hash, info.raw, &csr.signature_value.data) {
        return Err(Error::Possession(
            "the CSR's self-signature does not verify with its public key".into(),
        ));
    }
    algorithms.check(key.key_type(), hash)?;
    Ok(ProvenKey {
        key,
        hash,
        proven_for: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyless_config::ClientSigningAlgorithm as A;

    #[test]
    fn the_default_admits_each_key_with_its_default_hash_only() {
        let policy = AlgorithmPolicy::default();
        for key in [
            KeyType::P256,
            KeyType::P384,
            KeyType::P521,
            KeyType::Rsa(2048),
            KeyType::Rsa(3072),
            KeyType::Rsa(4096),
            KeyType::Ed25519,
        ] {
            assert!(policy.check(key, key.default_hash()).is_ok(), "{key:?}");
        }
        for (key, hash) in [
            (KeyType::P384, Hash::Sha256),
            (KeyType::P521, Hash::Sha256),
            (KeyType::P256, Hash::Sha384),
            (KeyType::Rsa(2048), Hash::Sha512),
        ] {
            assert!(policy.check(key, hash).is_err(), "{key:?} {hash:?}");
        }
    }

    #[test]
    fn a_restricted_list_refuses_with_fulcios_message() {
        let policy = AlgorithmPolicy::new(&[A::EcdsaP256Sha256, A::EcdsaP384Sha256]);
        assert!(policy.check(KeyType::P384, Hash::Sha256).is_ok());
        let e = policy.check(KeyType::P384, Hash::Sha384).unwrap_err();
        assert_eq!(e.fulcio_message(), "signing algorithm not permitted");
        assert_eq!(
            e.to_string(),
            "signing algorithm not permitted: *ecdsa.PublicKey, SHA-384: ECDSA P-384 with SHA-384 \
             (ecdsa-sha2-384-nistp384) is not in client_signing_algorithms (allowed: \
             ecdsa-sha2-256-nistp256, ecdsa-sha2-256-nistp384)"
        );
        let e = policy.check(KeyType::Ed25519, Hash::None).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "signing algorithm not permitted: ed25519.PublicKey, unknown hash value 0: Ed25519 (ed25519)"
            ),
            "{e}"
        );
        let e = policy.check(KeyType::Rsa(3072), Hash::Sha256).unwrap_err().to_string();
        assert!(e.starts_with("signing algorithm not permitted: *rsa.PublicKey, SHA-256: RSA-3072 with SHA-256 (rsa-sign-pkcs1-3072-sha256)"), "{e}");
        let e = policy.check(KeyType::P256, Hash::Sha512).unwrap_err().to_string();
        assert!(
            e.contains("ECDSA P-256 with SHA-512 is not a known signing algorithm"),
            "{e}"
        );
        // PSS and Ed25519ph are valid names that admit nothing.
        let nothing = AlgorithmPolicy::new(&[A::Rsa2048PssSha256, A::Ed25519Ph]);
        assert!(nothing.check(KeyType::Rsa(2048), Hash::Sha256).is_err());
        assert!(nothing.check(KeyType::Ed25519, Hash::None).is_err());
    }
}
