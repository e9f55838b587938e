//! Proof of possession: the client shows it holds the private key, either by signing the
//! principal's name or by self-signing a CSR. [`ProvenKey`] can only be made here.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

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

/// (key type, hash) pairs a client may use; Fulcio's default `--client-signing-algorithms`.
fn permitted(key: KeyType, hash: Hash) -> bool {
    matches!(
        (key, hash),
        (KeyType::P256, Hash::Sha256)
            | (KeyType::P384, Hash::Sha384)
            | (KeyType::P521, Hash::Sha512)
            | (KeyType::Rsa(_), Hash::Sha256)
            | (KeyType::Ed25519, Hash::None)
    )
}

/// Checks the proof for `principal` and the key policy.
pub fn prove(principal: &Principal, request: KeyRequest<'_>) -> Result<ProvenKey, Error> {
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
            Ok(ProvenKey {
                key,
                hash,
                proven_for: Some(signed.to_string()),
            })
        }
        KeyRequest::Csr { pem } => prove_csr(pem),
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

/// Parses a PEM CSR, applies the key policy and the algorithm allow-list, and verifies its
/// self-signature. The CSR's subject, SANs and extensions are ignored: only the key is used.
pub fn prove_csr(pem_text: &[u8]) -> Result<ProvenKey, Error> {
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
    if !permitted(key.key_type(), hash) {
        return Err(Error::AlgorithmNotPermitted(format!(
            "{} with {} (allowed: P-256/SHA-256, P-384/SHA-384, P-521/SHA-512, RSA/SHA-256, Ed25519)",
            key.key_type().name(),
            hash.name()
        )));
    }
    if !key.verify(hash, info.raw, &csr.signature_value.data) {
        return Err(Error::Possession(
            "the CSR's self-signature does not verify with its public key".into(),
        ));
    }
    Ok(ProvenKey {
        key,
        hash,
        proven_for: None,
    })
}
