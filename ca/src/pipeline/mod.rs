//! The certificate authority: checked at construction, then issues leaves.
//!
//! [`CertificateAuthority::new`] refuses a signer whose key is not the issuing certificate's key,
//! or a chain that does not verify to its root, so every backend passes the same checks.
//! [`CertificateAuthority::issue`] takes the two capabilities, a [`Principal`] (from a verified
//! token) and a [`ProvenKey`], and returns a certificate whose signature has been verified.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::ParsedPublicKey;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;

use crate::Error;
use crate::cert::{self, Tbs, ext};
use crate::ct::{self, CtLog, Sct};
use crate::identity::Principal;
use crate::keys::{PublicKey, signature_oid_hash};
use crate::policy::Permitted;
use crate::possession::{AlgorithmPolicy, ProvenKey};
use crate::profile;
use crate::serial::Serial;
use crate::signer::Signer;

/// A certificate as issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// DER bytes.
    pub der: Vec<u8>,
    /// Serial number.
    pub serial: Serial,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The embedded SCT (`None` when CT is disabled).
    pub sct: Option<Sct>,
    /// The precertificate's position in the CT log, when the log said.
    pub leaf_index: Option<u64>,
}

impl Issued {
    /// PEM text ending in a newline.
    pub fn pem(&self) -> String {
        pem_encode(&self.der)
    }
}

/// PEM-encodes a DER certificate, ending in a newline.
pub fn pem_encode(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// A leaf whose every field is fixed but which nobody has signed yet.
#[derive(Debug)]
pub struct Prepared {
    serial: Serial,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    spki: Vec<u8>,
    extensions: Vec<Vec<u8>>,
    /// The SAN, as [`crate::identity::San::record_text`] writes it.
    san_text: String,
    /// The TBS without CT extensions: what the log will hold and the final certificate's TBS
    /// minus its SCT list.
    tbs: Vec<u8>,
}

impl Prepared {
    /// Serial number.
    pub fn serial(&self) -> &Serial {
        &self.serial
    }

    /// The DER TBSCertificate without CT extensions.
    pub fn tbs_der(&self) -> &[u8] {
        &self.tbs
    }

    /// Start of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// The SAN as the issuance record writes it ([`crate::identity::San::record_text`]).
    pub fn san_text(&self) -> &str {
        &self.san_text
    }

    /// End of validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
}

/// An issuing CA: its signer, its verified chain and the leaf profile settings.
pub struct CertificateAuthority {
    signer: Arc<dyn Signer>,
    verifier: ParsedPublicKey,
    chain_der: Vec<Vec<u8>>,
    issuer_name: Vec<u8>,
    issuer_key_id: Option<Vec<u8>>,
    /// SHA-256 of the issuing CA's SPKI: the `issuer_key_hash` of precertificate entries.
    issuer_key_hash: [u8; 32],
    validity: Duration,
    /// The latest notBefore and earliest notAfter of the chain (seconds): every leaf must fit.
    chain_valid: (i64, i64),
    ct: Option<CtBinding>,
    /// The client key and hash pairs admitted (`client_signing_algorithms`).
    client_algorithms: AlgorithmPolicy,
}

/// The configured CT log and the key its SCTs must verify with.
struct CtBinding {
    log: Arc<dyn CtLog>,
    verifier: ParsedPublicKey,
    log_id: [u8; 32],
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("chain_len", &self.chain_der.len())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Checks the signer against the chain (issuing CA first, root last) and the chain itself.
    pub fn new(signer: Arc<dyn Signer>, chain_pem: &str, validity: Duration, now: SystemTime) -> Result<Self, Error> {
        let chain_der = parse_pem_chain(chain_pem)?;
        let certs = chain_der
            .iter()
            .enumerate()
            .map(|(i, d)| {
                x509_parser::parse_x509_certificate(d)
                    .map(|(_, c)| c)
                    .map_err(|e| Error::Setup(format!("chain certificate {i} does not parse: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if certs[0].public_key().raw != signer.public_key_spki() {
            return Err(Error::Setup(
                "the signer's public key is not the issuing certificate's public key".into(),
            ));
        }
        // As Fulcio's file CA: the CA's own key passes the key policy clients' keys do.
        PublicKey::from_spki_der(signer.public_key_spki())
            .map_err(|e| Error::Setup(format!("the CA key is refused by the key policy: {e}")))?;
        check_chain(&certs, now)?;
        let chain_valid = certs.iter().fold((i64::MIN, i64::MAX), |(from, to), c| {
            let v = c.validity();
            (from.max(v.not_before.timestamp()), to.min(v.not_after.timestamp()))
        });
        let issuer_key_id = certs[0].extensions().iter().find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        });
        let verifier = cert::self_verifier(signer.as_ref())?;
        self_test(signer.as_ref(), &verifier).map_err(Error::Setup)?;
        Ok(CertificateAuthority {
            issuer_name: certs[0].subject().as_raw().to_vec(),
            issuer_key_hash: crate::keys::sha256(certs[0].public_key().raw),
            signer,
            verifier,
            issuer_key_id,
            chain_der,
            validity,
            chain_valid,
            ct: None,
            client_algorithms: AlgorithmPolicy::default(),
        })
    }

    /// Admits only `policy`'s client key and hash pairs (default: Fulcio's default list).
    pub fn with_client_algorithms(mut self, policy: AlgorithmPolicy) -> Self {
        self.client_algorithms = policy;
        self
    }

    /// The client key and hash pairs this CA admits; pass it to [`crate::possession::prove`].
    pub fn client_algorithms(&self) -> &AlgorithmPolicy {
        &self.client_algorithms
    }

    /// Signs and verifies a probe message now: the readiness check (blocks on an HSM).
    pub fn check_signer(&self) -> Result<(), String> {
        self_test(self.signer.as_ref(), &self.verifier)
    }

    /// Logs every certificate to `log` first; its SCTs must verify with `log_public_key_spki`
    /// (an ECDSA P-256 SubjectPublicKeyInfo, as RFC 6962 logs use).
    pub fn with_ct_log(mut self, log: Arc<dyn CtLog>, log_public_key_spki: &[u8]) -> Result<Self, Error> {
        let key = PublicKey::from_spki_der(log_public_key_spki)
            .map_err(|e| Error::Setup(format!("CT log public key: {e}")))?;
        if key.key_type() != crate::keys::KeyType::P256 {
            return Err(Error::Setup("CT log public key must be ECDSA P-256".into()));
        }
        self.ct = Some(CtBinding {
            log,
            verifier: ct::log_verifier(key.key_bits()).map_err(|e| Error::Setup(format!("CT log public key: {e}")))?,
            log_id: crate::keys::sha256(log_public_key_spki),
        });
        Ok(self)
    }

    /// The CT log's id, when one is configured.
    pub fn ct_log_id(&self) -> Option<[u8; 32]> {
        self.ct.as_ref().map(|c| c.log_id)
    }

    /// The CA chain as DER, issuing CA first, root last.
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain_der
    }

    /// True when signing may block (an HSM): run [`CertificateAuthority::issue`] off the async
    /// runtime's workers.
    pub fn signer_blocks(&self) -> bool {
        self.signer.blocking()
    }

    /// Leaf lifetime.
    pub fn validity(&self) -> Duration {
        self.validity
    }

    /// Whether a leaf issued at `now` fits in the chain's validity (readiness reports it).
    pub fn check_validity(&self, now: SystemTime) -> Result<(), String> {
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let end = secs.saturating_add(self.validity.as_secs() as i64);
        if secs < self.chain_valid.0 {
            Err("the CA chain is not valid yet".into())
        } else if end > self.chain_valid.1 {
            Err("the CA chain expires before a new certificate would".into())
        } else {
            Ok(())
        }
    }

    /// Issues a leaf for `principal` and `key`: [`CertificateAuthority::prepare`] then
    /// [`CertificateAuthority::complete`], for callers with nothing to record in between.
    pub async fn issue(&self, permitted: Permitted, key: ProvenKey, now: SystemTime) -> Result<Issued, Error> {
        let prepared = self.prepare(&permitted, &key, now)?;
        self.complete(prepared).await
    }

    /// Fixes everything about a leaf without signing anything: serial, validity and the TBS.
    /// Nothing has left the CA yet, so a caller can durably record its intent (serial and TBS
    /// hash) before [`CertificateAuthority::complete`] sends a precertificate to a CT log.
    ///
    /// Refuses (server fault) a leaf the CA chain cannot cover: a certificate that outlives its
    /// issuer fails verification in strict clients, so the CA stops issuing rather than
    /// shortening leaves silently.
    pub fn prepare(&self, permitted: &Permitted, key: &ProvenKey, now: SystemTime) -> Result<Prepared, Error> {
        let principal = permitted.principal();
        if let Some(name) = key.proven_for()
            && !principal.challenges().any(|c| c == name)
        {
            return Err(Error::Possession("the proof was made for a different identity".into()));
        }
        let serial = Serial::random()?;
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| Error::Signer("clock before 1970".into()))?
            .as_secs() as i64;
        let not_before = OffsetDateTime::from_unix_timestamp(secs).map_err(|e| Error::Signer(e.to_string()))?;
        let not_after = not_before + self.validity;
        if secs < self.chain_valid.0 || not_after.unix_timestamp() > self.chain_valid.1 {
            return Err(Error::CaValidity(format!(
                "a leaf valid from {not_before} to {not_after} is outside the CA chain's common validity ({} to {})",
                OffsetDateTime::from_unix_timestamp(self.chain_valid.0).map_or_else(|_| "?".into(), |t| t.to_string()),
                OffsetDateTime::from_unix_timestamp(self.chain_valid.1).map_or_else(|_| "?".into(), |t| t.to_string()),
            )));
        }
        let mut prepared = Prepared {
            serial,
            not_before,
            not_after,
            spki: key.public_key().spki_der().to_vec(),
            extensions: self.leaf_extensions(principal, key),
            san_text: principal.san().record_text(),
            tbs: Vec::new(),
        };
        prepared.tbs = self.tbs(&prepared, &prepared.extensions);
        Ok(prepared)
    }

    /// The leaf's TBSCertificate with `extensions` (the prepared ones, plus poison or SCT list).
    fn tbs(&self, leaf: &Prepared, extensions: &[Vec<u8>]) -> Vec<u8> {
        Tbs {
            serial: leaf.serial.as_bytes(),
            algorithm: self.signer.algorithm(),
            issuer: &self.issuer_name,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            subject: &[0x30, 0x00],
            spki: &leaf.spki,
            extensions,
        }
        .encode()
    }

    /// Signs what [`CertificateAuthority::prepare`] fixed: with a CT log, a precertificate is
    /// signed and logged first, the SCT is verified, and the final certificate embeds it; the two
    /// TBS differ only in that last extension. Every signature is verified before anything is
    /// returned.
    pub async fn complete(&self, prepared: Prepared) -> Result<Issued, Error> {
        let mut extensions = prepared.extensions.clone();
        let log_tbs = &prepared.tbs;
        let tbs = |extensions: &[Vec<u8>]| self.tbs(&prepared, extensions);
        let mut leaf_index = None;
        let sct = match &self.ct {
            None => None,
            Some(ct) => {
                extensions.push(profile::extension(ct::POISON_OID, true, &[crate::der::NULL, 0]));
                // A precertificate signature is verified before it leaves the CA, unless the log
                // itself verifies it against the issuing CA before accepting it (the embedded log
                // does), in which case checking twice would only cost time.
                let precert = if ct.log.verifies_precertificate_signature() {
                    cert::sign_for_log(self.signer.as_ref(), &tbs(&extensions))?
                } else {
                    cert::sign(self.signer.as_ref(), &self.verifier, &tbs(&extensions))?
                };
                extensions.pop();
                let mut chain = Vec::with_capacity(self.chain_der.len() + 1);
                chain.push(precert);
                chain.extend(self.chain_der.iter().cloned());
                let ct_err = |cause: String| Error::CtLog {
                    log: ct.log.name().to_string(),
                    cause,
                };
                let logged = ct.log.add_pre_chain(&chain).await.map_err(|e| ct_err(e.0))?;
                let sct = logged.sct;
                leaf_index = logged.leaf_index;
                if sct.log_id != ct.log_id {
                    return Err(ct_err("SCT is from a different log than the one configured".into()));
                }
                sct.verify_precert(&ct.verifier, &self.issuer_key_hash, log_tbs)
                    .map_err(|e| ct_err(e.0))?;
                extensions.push(profile::extension(
                    ct::SCT_LIST_OID,
                    false,
                    &ct::sct_list(std::slice::from_ref(&sct)),
                ));
                Some(sct)
            }
        };
        let der = if sct.is_some() {
            cert::sign(self.signer.as_ref(), &self.verifier, &tbs(&extensions))?
        } else {
            cert::sign(self.signer.as_ref(), &self.verifier, log_tbs)?
        };
        Ok(Issued {
            der,
            serial: prepared.serial,
            not_before: prepared.not_before,
            not_after: prepared.not_after,
            sct,
            leaf_index,
        })
    }

    /// The leaf profile, in Fulcio's extension order: KU, EKU, SKI, AKI, SAN, then the Sigstore
    /// extensions from the profile table.
    fn leaf_extensions(&self, principal: &Principal, key: &ProvenKey) -> Vec<Vec<u8>> {
        let mut exts = vec![
            ext::key_usage_digital_signature(),
            ext::eku_code_signing(),
            ext::subject_key_identifier(key.public_key().key_bits()),
        ];
        if let Some(id) = &self.issuer_key_id {
            exts.push(ext::authority_key_identifier(id));
        }
        exts.push(ext::subject_alt_name(&principal.san().general_name()));
        exts.extend(profile::render(principal.facts()));
        exts
    }
}

/// Splits a PEM chain into DER certificates; anything but CERTIFICATE blocks is refused.
pub fn parse_pem_chain(chain_pem: &str) -> Result<Vec<Vec<u8>>, Error> {
    let blocks = pem::parse_many(chain_pem).map_err(|e| Error::Setup(format!("chain is not PEM: {e}")))?;
    if blocks.is_empty() {
        return Err(Error::Setup("chain file holds no certificate".into()));
    }
    blocks
        .into_iter()
        .map(|b| {
            if b.tag() == "CERTIFICATE" {
                Ok(b.into_contents())
            } else {
                Err(Error::Setup(format!(
                    "chain holds a {:?} block; only CERTIFICATE is allowed",
                    b.tag()
                )))
            }
        })
        .collect()
}

/// The start-up chain check: each certificate is a CA signed by the next, the last is
/// self-signed, all are valid now, and the issuing CA allows code signing.
/// The signer must produce signatures its own public key accepts.
fn self_test(signer: &dyn Signer, verifier: &ParsedPublicKey) -> Result<(), String> {
    let probe = b"keyless self-test";
    let sig = signer
        .sign(probe)
        .map_err(|e| format!("signer self-test failed: {e}"))?;
    verifier
        .verify_sig(probe, &sig)
        .map_err(|_| "signer self-test produced a signature that does not verify".to_string())
}

fn check_chain(certs: &[X509Certificate<'_>], now: SystemTime) -> Result<(), Error> {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    for (i, c) in certs.iter().enumerate() {
        let parent = certs.get(i + 1).unwrap_or(c);
        let what = if i + 1 == certs.len() {
            "root".to_string()
        } else {
            format!("chain certificate {i}")
        };
        if c.issuer().as_raw() != parent.subject().as_raw() {
            return Err(Error::Setup(format!(
                "{what}: issuer name does not match the next certificate's subject"
            )));
        }
        let parent_key = PublicKey::from_spki_der(parent.public_key().raw)
            .map_err(|e| Error::Setup(format!("{what}: issuer key refused: {e}")))?;
        let alg = c.signature_algorithm.algorithm.to_id_string();
        let hash = signature_oid_hash(&alg)
            .ok_or_else(|| Error::Setup(format!("{what}: unsupported signature algorithm {alg}")))?;
        if !parent_key.verify(hash, c.tbs_certificate.as_ref(), &c.signature_value.data) {
            return Err(Error::Setup(format!(
                "{what}: signature does not verify with its issuer's key"
            )));
        }
        let is_ca = matches!(c.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        // A root without keyUsage may sign anything (RFC 5280 4.2.1.3; `openssl req -x509` makes
        // such roots and Fulcio accepts them); intermediates must say keyCertSign, as the
        // embedded CT log requires.
        let can_sign = match c.key_usage() {
            Ok(Some(ku)) => ku.value.key_cert_sign(),
            Ok(None) => i + 1 == certs.len(),
            Err(_) => false,
        };
        if !is_ca || !can_sign {
            return Err(Error::Setup(format!(
                "{what}: not a CA certificate (needs CA:TRUE and keyCertSign)"
            )));
        }
        let v = c.validity();
        if now < v.not_before.timestamp() || now > v.not_after.timestamp() {
            return Err(Error::Setup(format!(
                "{what}: not valid now (valid {} to {})",
                v.not_before, v.not_after
            )));
        }
    }
    if certs.len() > 1 {
        let code_signing = matches!(certs[0].extended_key_usage(), Ok(Some(e)) if e.value.code_signing);
        if !code_signing {
            return Err(Error::Setup(
                "issuing CA certificate lacks the codeSigning extended key usage".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
