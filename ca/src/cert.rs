//! Certificate assembly: the TBS structure, the X.509 extensions the profile uses, and signing with
//! verification of the returned signature before anything leaves the CA.

use aws_lc_rs::digest;
use aws_lc_rs::signature::ParsedPublicKey;
use time::OffsetDateTime;

use crate::Error;
use crate::der;
use crate::profile::extension;
use crate::signer::{SignatureAlgorithm, Signer};

/// Everything that goes into a TBSCertificate.
pub(crate) struct Tbs<'a> {
    pub(crate) serial: &'a [u8],
    pub(crate) algorithm: SignatureAlgorithm,
    pub(crate) issuer: &'a [u8],
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
    pub(crate) subject: &'a [u8],
    pub(crate) spki: &'a [u8],
    pub(crate) extensions: &'a [Vec<u8>],
}

impl Tbs<'_> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let version = der::context(0, true, &der::small_integer(2));
        let serial = der::unsigned_integer(self.serial);
        let alg = self.algorithm.algorithm_identifier();
        let validity = der::seq(&[&der::time(self.not_before), &der::time(self.not_after)]);
        let exts: Vec<&[u8]> = self.extensions.iter().map(Vec::as_slice).collect();
        let exts = der::context(3, true, &der::seq(&exts));
        der::seq(&[
            &version,
            &serial,
            &alg,
            self.issuer,
            &validity,
            self.subject,
            self.spki,
            &exts,
        ])
    }
}

/// Signs a TBS, checks the signature against `verifier` (the signer's own public key), and
/// assembles the certificate. A signature that does not verify is a signer fault: fail closed.
pub(crate) fn sign(signer: &dyn Signer, verifier: &ParsedPublicKey, tbs: &[u8]) -> Result<Vec<u8>, Error> {
    let signature = signer.sign(tbs).map_err(|e| Error::Signer(e.0))?;
    verifier
        .verify_sig(tbs, &signature)
        .map_err(|_| Error::Signer("the CA key returned a signature that does not verify".into()))?;
    let alg = signer.algorithm().algorithm_identifier();
    Ok(der::seq(&[tbs, &alg, &der::bit_string(&signature)]))
}

/// Signs a precertificate TBS for submission to a CT log, which verifies the signature itself.
pub(crate) fn sign_for_log(signer: &dyn Signer, tbs: &[u8]) -> Result<Vec<u8>, Error> {
    let signature = signer.sign(tbs).map_err(|e| Error::Signer(e.0))?;
    let alg = signer.algorithm().algorithm_identifier();
    Ok(der::seq(&[tbs, &alg, &der::bit_string(&signature)]))
}

/// A verifier for the signer's own key.
pub(crate) fn self_verifier(signer: &dyn Signer) -> Result<ParsedPublicKey, Error> {
    let point = spki_key_bits(signer.public_key_spki())
        .ok_or_else(|| Error::Setup("the signer's public key is not a valid SubjectPublicKeyInfo".into()))?;
    ParsedPublicKey::new(signer.algorithm().verification(), point).map_err(|_| {
        Error::Setup(format!(
            "the signer's public key is not a valid {} key",
            signer.algorithm().name()
        ))
    })
}

/// The subjectPublicKey BIT STRING contents of a DER SPKI.
pub(crate) fn spki_key_bits(spki: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, s) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).ok()?;
    Some(s.subject_public_key.data.to_vec())
}

/// RFC 5280 method 1 key identifier: SHA-1 of the subjectPublicKey bits.
pub(crate) fn key_identifier(key_bits: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, key_bits)
        .as_ref()
        .to_vec()
}

/// X.509 extensions used by the leaf and CA profiles.
pub(crate) mod ext {
    use super::*;

    /// KeyUsage digitalSignature (leaf).
    pub(crate) fn key_usage_digital_signature() -> Vec<u8> {
        extension(&[2, 5, 29, 15], true, &[der::BIT_STRING, 2, 7, 0x80])
    }

    /// KeyUsage keyCertSign + cRLSign (CA).
    pub(crate) fn key_usage_ca() -> Vec<u8> {
        extension(&[2, 5, 29, 15], true, &[der::BIT_STRING, 2, 1, 0x06])
    }

    /// ExtendedKeyUsage codeSigning.
    pub(crate) fn eku_code_signing() -> Vec<u8> {
        extension(
            &[2, 5, 29, 37],
            false,
            &der::seq(&[&der::oid(&[1, 3, 6, 1, 5, 5, 7, 3, 3])]),
        )
    }

    pub(crate) fn subject_key_identifier(key_bits: &[u8]) -> Vec<u8> {
        extension(&[2, 5, 29, 14], false, &der::octet_string(&key_identifier(key_bits)))
    }

    pub(crate) fn authority_key_identifier(key_id: &[u8]) -> Vec<u8> {
        extension(&[2, 5, 29, 35], false, &der::seq(&[&der::context(0, false, key_id)]))
    }

    /// BasicConstraints CA:TRUE, critical, with an optional path length.
    pub(crate) fn basic_constraints_ca(path_len: Option<u8>) -> Vec<u8> {
        let body = match path_len {
            Some(n) => der::seq(&[&der::boolean_true(), &der::small_integer(n)]),
            None => der::seq(&[&der::boolean_true()]),
        };
        extension(&[2, 5, 29, 19], true, &body)
    }

    /// SubjectAltName with one GeneralName; critical because leaf subjects are empty.
    pub(crate) fn subject_alt_name(general_name: &[u8]) -> Vec<u8> {
        extension(&[2, 5, 29, 17], true, &der::seq(&[general_name]))
    }
}

/// An X.501 Name with O and CN, as CA certificates carry.
pub(crate) fn ca_name(organization: &str, common_name: &str) -> Vec<u8> {
    let rdn = |arcs: &[u64], v: &str| der::wrap(der::SET, &[&der::seq(&[&der::oid(arcs), &der::utf8_string(v)])]);
    der::seq(&[&rdn(&[2, 5, 4, 10], organization), &rdn(&[2, 5, 4, 3], common_name)])
}
