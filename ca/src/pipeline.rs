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
use crate::identity::Principal;
use crate::keys::{PublicKey, signature_oid_hash};
use crate::possession::ProvenKey;
use crate::profile;
use crate::signer::Signer;

/// A certificate as issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// DER bytes.
    pub der: Vec<u8>,
    /// Serial number, lower-case hex.
    pub serial_hex: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
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

/// An issuing CA: its signer, its verified chain and the leaf profile settings.
pub struct CertificateAuthority {
    signer: Arc<dyn Signer>,
    verifier: ParsedPublicKey,
    chain_der: Vec<Vec<u8>>,
    issuer_name: Vec<u8>,
    issuer_key_id: Option<Vec<u8>>,
    validity: Duration,
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
        check_chain(&certs, now)?;
        let issuer_key_id = certs[0].extensions().iter().find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        });
        let verifier = cert::self_verifier(signer.as_ref())?;
        // Self-test: the signer must produce signatures its own public key accepts.
        let probe = b"keyless self-test";
        let sig = signer
            .sign(probe)
            .map_err(|e| Error::Setup(format!("signer self-test failed: {e}")))?;
        verifier
            .verify_sig(probe, &sig)
            .map_err(|_| Error::Setup("signer self-test produced a signature that does not verify".into()))?;
        Ok(CertificateAuthority {
            issuer_name: certs[0].subject().as_raw().to_vec(),
            signer,
            verifier,
            issuer_key_id,
            chain_der,
            validity,
        })
    }

    /// The CA chain as DER, issuing CA first, root last.
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain_der
    }

    /// Leaf lifetime.
    pub fn validity(&self) -> Duration {
        self.validity
    }

    /// Builds, signs and verifies a leaf certificate for `principal` and `key`.
    pub fn issue(&self, principal: Principal, key: ProvenKey, now: SystemTime) -> Result<Issued, Error> {
        if let Some(name) = key.proven_for() {
            if name != principal.name() {
                return Err(Error::Possession("the proof was made for a different identity".into()));
            }
        }
        let serial = cert::random_serial()?;
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| Error::Signer("clock before 1970".into()))?
            .as_secs();
        let not_before = OffsetDateTime::from_unix_timestamp(secs as i64).map_err(|e| Error::Signer(e.to_string()))?;
        let not_after = not_before + self.validity;
        let extensions = self.leaf_extensions(&principal, &key);
        let tbs = Tbs {
            serial: &serial,
            algorithm: self.signer.algorithm(),
            issuer: &self.issuer_name,
            not_before,
            not_after,
            subject: &[0x30, 0x00],
            spki: key.public_key().spki_der(),
            extensions: &extensions,
        }
        .encode();
        let der = cert::sign(self.signer.as_ref(), &self.verifier, &tbs)?;
        Ok(Issued {
            der,
            serial_hex: hex(&serial),
            not_before,
            not_after,
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

fn hex(bytes: &[u8]) -> String {
    let s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let t = s.trim_start_matches('0');
    if t.is_empty() { "0".into() } else { t.to_string() }
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
        let can_sign = matches!(c.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign());
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
mod tests {
    use super::*;
    use crate::ceremony::{self, CaNames};
    use crate::signer::{SignError, SignatureAlgorithm, SoftwareSigner};
    use crate::token::VerifiedToken;
    use keyless_config::{IssuerConfig, IssuerKind};

    /// Wraps a real key but corrupts its signatures after `good` calls (a misbehaving HSM).
    struct FlakySigner {
        inner: SoftwareSigner,
        good: std::sync::atomic::AtomicUsize,
    }

    impl Signer for FlakySigner {
        fn algorithm(&self) -> SignatureAlgorithm {
            self.inner.algorithm()
        }
        fn public_key_spki(&self) -> &[u8] {
            self.inner.public_key_spki()
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
            let mut sig = self.inner.sign(message)?;
            if self.good.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                let n = sig.len();
                sig[n - 3] ^= 0x55;
            }
            Ok(sig)
        }
    }

    fn ca_with(signer: Arc<dyn Signer>, root: &SoftwareSigner) -> Result<CertificateAuthority, Error> {
        let now = SystemTime::now();
        let names = CaNames::default();
        let year = Duration::from_secs(365 * 86400);
        let root_der = ceremony::root_certificate(root, &names, year, now)?;
        let inter = ceremony::intermediate_certificate(root, &root_der, signer.public_key_spki(), &names, year, now)?;
        let chain = format!("{}{}", pem_encode(&inter), pem_encode(&root_der));
        CertificateAuthority::new(signer, &chain, Duration::from_secs(600), now)
    }

    fn principal_and_key() -> (Principal, ProvenKey) {
        let issuer = IssuerConfig {
            url: "https://issuer.example".into(),
            kind: IssuerKind::Email,
            client_id: "sigstore".into(),
            skip_email_verification: false,
            challenge_claim: None,
        };
        let claims = serde_json::json!({"email": "a@example.com", "email_verified": true, "sub": "a"});
        let token = VerifiedToken::unchecked_for_tests(issuer, claims.as_object().unwrap().clone());
        let principal = crate::identity::principal(&token).unwrap();
        let csr_key = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap().0;
        let sig = csr_key.sign(b"a@example.com").unwrap();
        let spki = csr_key.public_key_spki().to_vec();
        let key = crate::possession::prove(
            &principal,
            crate::KeyRequest::Signature {
                public_key: &spki,
                proof: &sig,
            },
        )
        .unwrap();
        (principal, key)
    }

    #[test]
    fn bad_signature_from_signer_is_refused_not_issued() {
        let root = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP384Sha384).unwrap().0;
        let inner = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap().0;
        // One good signature for the start-up self-test, then corrupted ones.
        let flaky = Arc::new(FlakySigner { inner, good: 1.into() });
        let ca = ca_with(flaky, &root).unwrap();
        let (principal, key) = principal_and_key();
        let err = ca.issue(principal, key, SystemTime::now()).unwrap_err();
        assert!(matches!(err, Error::Signer(_)), "{err}");
        assert!(err.client_detail().is_none(), "server faults carry no client detail");
    }

    #[test]
    fn signer_failing_self_test_refuses_start() {
        let root = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP384Sha384).unwrap().0;
        let inner = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap().0;
        let flaky = Arc::new(FlakySigner { inner, good: 0.into() });
        let err = ca_with(flaky, &root).unwrap_err();
        assert!(err.to_string().contains("self-test"), "{err}");
    }

    #[test]
    fn proof_for_another_identity_is_refused() {
        let root = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP384Sha384).unwrap().0;
        let signer = Arc::new(SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap().0);
        let ca = ca_with(signer, &root).unwrap();
        let (_, key) = principal_and_key();
        let issuer = IssuerConfig {
            url: "https://issuer.example".into(),
            kind: IssuerKind::Email,
            client_id: "sigstore".into(),
            skip_email_verification: false,
            challenge_claim: None,
        };
        let claims = serde_json::json!({"email": "b@example.com", "email_verified": true});
        let other = crate::identity::principal(&VerifiedToken::unchecked_for_tests(
            issuer,
            claims.as_object().unwrap().clone(),
        ))
        .unwrap();
        assert!(matches!(
            ca.issue(other, key, SystemTime::now()),
            Err(Error::Possession(_))
        ));
    }
}
