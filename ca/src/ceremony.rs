//! CA certificates for `keyless ca init`: a self-signed root and an issuing intermediate with the
//! CA profile Sigstore verifiers expect (KU certSign+cRLSign, CA:TRUE, SKI/AKI, and codeSigning
//! EKU on the intermediate because Go chains EKUs).

use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

use crate::Error;
use crate::cert::{self, Tbs, ext};
use crate::serial::Serial;
use crate::signer::Signer;

/// Who the CA certificates name.
#[derive(Debug, Clone)]
pub struct CaNames {
    /// O= for both certificates.
    pub organization: String,
    /// CN= of the root.
    pub root_common_name: String,
    /// CN= of the intermediate.
    pub intermediate_common_name: String,
}

impl Default for CaNames {
    fn default() -> Self {
        CaNames {
            organization: "Keyless CA".into(),
            root_common_name: "Keyless CA Root".into(),
            intermediate_common_name: "Keyless CA Intermediate".into(),
        }
    }
}

fn start(now: SystemTime) -> Result<OffsetDateTime, Error> {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| Error::Setup("clock before 1970".into()))?
        .as_secs();
    OffsetDateTime::from_unix_timestamp(secs as i64).map_err(|e| Error::Setup(e.to_string()))
}

/// A self-signed root certificate (DER).
pub fn root_certificate(
    root: &dyn Signer,
    names: &CaNames,
    lifetime: Duration,
    now: SystemTime,
) -> Result<Vec<u8>, Error> {
    let name = cert::ca_name(&names.organization, &names.root_common_name);
    let key_bits = cert::spki_key_bits(root.public_key_spki()).ok_or_else(|| Error::Setup("bad root key".into()))?;
    let id = cert::key_identifier(&key_bits);
    let nb = start(now)?;
    let exts = vec![
        ext::key_usage_ca(),
        ext::basic_constraints_ca(Some(1)),
        ext::subject_key_identifier(&key_bits),
        ext::authority_key_identifier(&id),
    ];
    let serial = Serial::random()?;
    let tbs = Tbs {
        serial: serial.as_bytes(),
        algorithm: root.algorithm(),
        issuer: &name,
        not_before: nb,
        not_after: nb + lifetime,
        subject: &name,
        spki: root.public_key_spki(),
        extensions: &exts,
    }
    .encode();
    cert::sign(root, &cert::self_verifier(root)?, &tbs)
}

/// An issuing intermediate for `issuing_spki`, signed by the root. Its lifetime is clipped to the
/// root's.
pub fn intermediate_certificate(
    root: &dyn Signer,
    root_der: &[u8],
    issuing_spki: &[u8],
    names: &CaNames,
    lifetime: Duration,
    now: SystemTime,
) -> Result<Vec<u8>, Error> {
    let (_, root_cert) =
        x509_parser::parse_x509_certificate(root_der).map_err(|e| Error::Setup(format!("root does not parse: {e}")))?;
    if root_cert.public_key().raw != root.public_key_spki() {
        return Err(Error::Setup(
            "the root signer's key is not the root certificate's key".into(),
        ));
    }
    let root_bits = cert::spki_key_bits(root.public_key_spki()).ok_or_else(|| Error::Setup("bad root key".into()))?;
    let key_bits = cert::spki_key_bits(issuing_spki).ok_or_else(|| Error::Setup("bad issuing key".into()))?;
    let nb = start(now)?;
    let root_end = OffsetDateTime::from_unix_timestamp(root_cert.validity().not_after.timestamp())
        .map_err(|e| Error::Setup(e.to_string()))?;
    let na = (nb + lifetime).min(root_end);
    let exts = vec![
        ext::key_usage_ca(),
        ext::eku_code_signing(),
        ext::basic_constraints_ca(Some(0)),
        ext::subject_key_identifier(&key_bits),
        ext::authority_key_identifier(&cert::key_identifier(&root_bits)),
    ];
    let serial = Serial::random()?;
    let tbs = Tbs {
        serial: serial.as_bytes(),
        algorithm: root.algorithm(),
        issuer: root_cert.subject().as_raw(),
        not_before: nb,
        not_after: na,
        subject: &cert::ca_name(&names.organization, &names.intermediate_common_name),
        spki: issuing_spki,
        extensions: &exts,
    }
    .encode();
    cert::sign(root, &cert::self_verifier(root)?, &tbs)
}
