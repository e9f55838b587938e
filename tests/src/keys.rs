//! Client key pairs (ECDSA, RSA, Ed25519), proofs of possession and CSRs, made without the CA's
//! code.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::pem;

/// A client key pair that can prove possession.
pub enum ClientKey {
    /// ECDSA (P-256 or P-384), signing with the curve's default hash.
    Ec(EcdsaKeyPair),
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rsa(aws_lc_rs::rsa::KeyPair),
    /// Ed25519.
    Ed25519(Ed25519KeyPair),
}

impl ClientKey {
    /// P-256 with SHA-256.
    pub fn p256() -> ClientKey {
        ClientKey::ec(&signature::ECDSA_P256_SHA256_ASN1_SIGNING)
    }

    /// P-384 with SHA-384.
    pub fn p384() -> ClientKey {
        ClientKey::ec(&signature::ECDSA_P384_SHA384_ASN1_SIGNING)
    }

    fn ec(alg: &'static signature::EcdsaSigningAlgorithm) -> ClientKey {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).unwrap();
        ClientKey::Ec(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).unwrap())
    }

    /// RSA-2048.
    pub fn rsa2048() -> ClientKey {
        ClientKey::Rsa(aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap())
    }

    /// Ed25519.
    pub fn ed25519() -> ClientKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        ClientKey::Ed25519(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        match self {
            ClientKey::Ec(k) => k.public_key().as_der().unwrap().as_ref().to_vec(),
            ClientKey::Rsa(k) => k.public_key().as_der().unwrap().as_ref().to_vec(),
            ClientKey::Ed25519(k) => k.public_key().as_der().unwrap().as_ref().to_vec(),
        }
    }

    /// PEM SubjectPublicKeyInfo.
    pub fn spki_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki_der())
    }

    /// Signature over `message` as a Fulcio client sends it.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            ClientKey::Ec(k) => k.sign(&rng, message).unwrap().as_ref().to_vec(),
            ClientKey::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig).unwrap();
                sig
            }
            ClientKey::Ed25519(k) => k.sign(message).as_ref().to_vec(),
        }
    }

    /// A v2 `publicKeyRequest` proving possession for `name`.
    pub fn public_key_request(&self, name: &str) -> Value {
        json!({
            "publicKey": {"algorithm": "ECDSA", "content": self.spki_pem()},
            "proofOfPossession": STANDARD.encode(self.sign(name.as_bytes())),
        })
    }
}

/// A PEM CSR for a fresh P-256 key (made by rcgen, not by the CA's code).
pub fn p256_csr() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}
