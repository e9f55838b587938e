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
use crate::policy::Permitted;
use crate::keys::{PublicKey, signature_oid_hash};
use crate::possession::ProvenKey;
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
        })
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

    /// Drives a future that never waits on I/O (the core's futures only wait on CT logs).
    pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

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

    /// Passes the policy gate with no rate limiter (the core's tests have none).
    pub(crate) fn permitted(token: &VerifiedToken) -> Permitted {
        let principal = crate::identity::principal(token).unwrap();
        crate::policy::permit(token, principal, |_| Ok::<(), ()>(())).unwrap()
    }

    fn principal_and_key() -> (Permitted, ProvenKey) {
        let issuer = IssuerConfig::new("https://issuer.example", IssuerKind::Email(Default::default()));
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
        (permitted(&token), key)
    }

    #[test]
    fn bad_signature_from_signer_is_refused_not_issued() {
        let root = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP384Sha384).unwrap().0;
        let inner = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap().0;
        // One good signature for the start-up self-test, then corrupted ones.
        let flaky = Arc::new(FlakySigner { inner, good: 1.into() });
        let ca = ca_with(flaky, &root).unwrap();
        let (principal, key) = principal_and_key();
        let err = block_on(ca.issue(principal, key, SystemTime::now())).unwrap_err();
        assert!(matches!(err, Error::Signer(_)), "{err}");
        assert!(err.client_detail().is_none(), "server faults carry no client detail");
    }

    #[test]
    fn a_leaf_never_outlives_its_ca_chain() {
        let root = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP384Sha384).unwrap().0;
        let signer = Arc::new(SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap().0);
        let ca = ca_with(signer, &root).unwrap();
        let (principal, key) = principal_and_key();
        let now = SystemTime::now();
        assert!(ca.prepare(&principal, &key, now).is_ok());
        assert!(ca.check_validity(now).is_ok());
        // The chain is valid for a year: a leaf starting 5 minutes before its end would outlive it.
        let late = now + Duration::from_secs(365 * 86400 - 300);
        let err = ca.prepare(&principal, &key, late).unwrap_err();
        assert!(matches!(err, Error::CaValidity(_)), "{err}");
        assert!(err.client_detail().is_none(), "a server fault, not the client's");
        assert!(ca.check_validity(late).is_err());
        // Nor may one start before the chain is valid.
        let early = now - Duration::from_secs(3600);
        assert!(matches!(ca.prepare(&principal, &key, early), Err(Error::CaValidity(_))));
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
        let issuer = IssuerConfig::new("https://issuer.example", IssuerKind::Email(Default::default()));
        let claims = serde_json::json!({"email": "b@example.com", "email_verified": true});
        let other = permitted(&VerifiedToken::unchecked_for_tests(
            issuer,
            claims.as_object().unwrap().clone(),
        ));
        assert!(matches!(
            block_on(ca.issue(other, key, SystemTime::now())),
            Err(Error::Possession(_))
        ));
    }

    /// An in-memory log: signs SCTs with its key, or misbehaves as told.
    struct TestLog {
        key: aws_lc_rs::signature::EcdsaKeyPair,
        mode: &'static str,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl TestLog {
        fn new(mode: &'static str) -> TestLog {
            use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &aws_lc_rs::rand::SystemRandom::new())
                    .unwrap();
            TestLog {
                key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap(),
                mode,
                calls: 0.into(),
            }
        }
        fn spki(&self) -> Vec<u8> {
            use aws_lc_rs::signature::KeyPair;
            let alg = crate::der::seq(&[
                &crate::der::oid(&[1, 2, 840, 10045, 2, 1]),
                &crate::der::oid(&[1, 2, 840, 10045, 3, 1, 7]),
            ]);
            crate::der::seq(&[&alg, &crate::der::bit_string(self.key.public_key().as_ref())])
        }
    }

    fn tbs_of(cert: &[u8]) -> Vec<u8> {
        let (c, _) = crate::der::read_tlv(cert).unwrap();
        crate::der::read_tlv(c.content).unwrap().0.raw.to_vec()
    }

    impl CtLog for TestLog {
        fn name(&self) -> &str {
            "test-log"
        }
        fn add_pre_chain<'a>(&'a self, chain: &'a [Vec<u8>]) -> ct::CtFuture<'a> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                if self.mode == "down" {
                    return Err(ct::CtError("connection refused".into()));
                }
                let tbs = crate::der::tbs_without_extension(&tbs_of(&chain[0]), &ct::oid_der(ct::POISON_OID))
                    .expect("poison present");
                let (_, issuer) = x509_parser::parse_x509_certificate(&chain[1]).unwrap();
                let ikh = crate::keys::sha256(issuer.public_key().raw);
                let data = ct::precert_signed_data(1_700_000_000_000, &ikh, &tbs, &[]);
                let mut signature = self
                    .key
                    .sign(&aws_lc_rs::rand::SystemRandom::new(), &data)
                    .unwrap()
                    .as_ref()
                    .to_vec();
                if self.mode == "bad-signature" {
                    signature[10] ^= 1;
                }
                Ok(ct::Logged {
                    sct: Sct {
                        log_id: crate::keys::sha256(&self.spki()),
                        timestamp: 1_700_000_000_000,
                        extensions: Vec::new(),
                        hash_algorithm: ct::HASH_SHA256,
                        signature_algorithm: ct::SIG_ECDSA,
                        signature,
                    },
                    leaf_index: None,
                })
            })
        }
    }

    fn ca_with_log(mode: &'static str) -> CertificateAuthority {
        let root = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP384Sha384).unwrap().0;
        let signer = Arc::new(SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap().0);
        let log = Arc::new(TestLog::new(mode));
        let spki = log.spki();
        ca_with(signer, &root).unwrap().with_ct_log(log, &spki).unwrap()
    }

    #[test]
    fn precert_and_final_tbs_match_and_sct_is_embedded() {
        let ca = ca_with_log("good");
        let (principal, key) = principal_and_key();
        let issued = block_on(ca.issue(principal, key, SystemTime::now())).unwrap();
        let sct = issued.sct.clone().expect("an SCT");
        assert_eq!(ca.ct.as_ref().unwrap().log.name(), "test-log");
        let final_tbs = tbs_of(&issued.der);
        let without_sct =
            crate::der::tbs_without_extension(&final_tbs, &ct::oid_der(ct::SCT_LIST_OID)).expect("SCT list present");
        // The log signed the precert TBS minus poison; the SCT verifies over the final TBS minus SCTs.
        let ikh = ca.issuer_key_hash;
        sct.verify_precert(&ca.ct.as_ref().unwrap().verifier, &ikh, &without_sct)
            .unwrap();
        assert!(
            issued
                .der
                .windows(sct.signature.len())
                .any(|w| w == sct.signature.as_slice())
        );
    }

    #[test]
    fn log_failures_release_nothing() {
        for mode in ["down", "bad-signature"] {
            let ca = ca_with_log(mode);
            let (principal, key) = principal_and_key();
            let err = block_on(ca.issue(principal, key, SystemTime::now())).unwrap_err();
            assert!(matches!(err, Error::CtLog { .. }), "{mode}: {err}");
            assert!(err.client_detail().is_none());
        }
    }

    #[test]
    fn bad_precertificate_signature_never_reaches_a_log_that_does_not_check_it() {
        let root = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP384Sha384).unwrap().0;
        let inner = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).unwrap().0;
        let flaky = Arc::new(FlakySigner { inner, good: 1.into() });
        let log = Arc::new(TestLog::new("good"));
        let spki = log.spki();
        let ca = ca_with(flaky, &root).unwrap().with_ct_log(log.clone(), &spki).unwrap();
        let (principal, key) = principal_and_key();
        let err = block_on(ca.issue(principal, key, SystemTime::now())).unwrap_err();
        assert!(matches!(err, Error::Signer(_)), "{err}");
        assert_eq!(
            log.calls.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing was sent to the log"
        );
    }
}
