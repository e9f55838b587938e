//! The pipeline against misbehaving signers and CT logs.

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
        &crate::possession::AlgorithmPolicy::default(),
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
