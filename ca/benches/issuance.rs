//! Issuance throughput: one full in-process issuance (exactly the server's core path) against the
//! bare cryptography it cannot avoid, measured in the same run, plus each sub-step on its own.
//!
//! ```text
//! cargo bench -p keyless-ca --bench issuance
//! ```
//!
//! Groups:
//! - `issuance/in-process`: `token::parse` + `token::verify` (RS256, 2048-bit issuer key) +
//!   `identity::principal` + `possession::prove` (P-256 PoP, DER) + `CertificateAuthority::issue`
//!   (P-256 issuing key, including its verification of its own signature);
//! - `issuance/bare-crypto`: the same four public-key operations with aws-lc-rs alone: RS256
//!   verify over the token's signing input (pre-parsed issuer key, as the server caches it),
//!   ECDSA P-256/SHA-256 verify of the PoP (key parsed per call, as it arrives per request),
//!   ECDSA P-256 sign of a real TBS, ECDSA P-256 verify of that signature (pre-parsed key);
//! - `steps/*` and `bare/*`: the sub-steps, to see where the difference goes.
//!
//! At the end the in-process / bare-crypto throughput ratio is printed (target: >= 70%).

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, KeyPair, ParsedPublicKey, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use criterion::{BatchSize, Criterion, Throughput};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyless_ca::ceremony::{self, CaNames};
use keyless_ca::pipeline::pem_encode;
use keyless_ca::possession::AlgorithmPolicy;
use keyless_ca::{
    CertificateAuthority, IssuerKeys, KeyRequest, SignatureAlgorithm, SoftwareSigner, identity, policy, possession,
    token,
};
use keyless_config::{IssuerConfig, IssuerKind};
use serde_json::json;

const ISSUER_URL: &str = "https://issuer.bench.example";
const EMAIL: &str = "bench@example.com";

/// Everything both paths need, built once.
struct Fixture {
    raw_token: String,
    /// The issuer key as `IssuerKeys` holds it (modulus and exponent), for the `jsonwebtoken` step.
    decoding_key: jsonwebtoken::DecodingKey,
    issuer: Arc<IssuerConfig>,
    keys: IssuerKeys,
    client_pem: Vec<u8>,
    client_point: Vec<u8>,
    proof: Vec<u8>,
    ca: CertificateAuthority,
    // Bare-crypto inputs.
    rsa_public: ParsedPublicKey,
    rsa_signing_input: Vec<u8>,
    rsa_signature: Vec<u8>,
    bare_ca_key: EcdsaKeyPair,
    bare_ca_verifier: ParsedPublicKey,
    tbs: Vec<u8>,
    rng: SystemRandom,
}

/// Drives `CertificateAuthority::issue`, which only ever waits on a CT log; none is configured here
/// (as in the HTTP target: CT disabled), so the future completes on its first poll.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("issuance waited on I/O although no CT log is configured"),
    }
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

fn pem_block(tag: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!("-----BEGIN {tag}-----\n{}\n-----END {tag}-----\n", lines.join("\n"))
}

fn fixture() -> Fixture {
    // The OIDC issuer: RSA-2048, RS256, published as a JWKS and parsed as the server parses it.
    let rsa = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
    let rsa_pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&rsa).expect("PKCS#8");
    let encoding_key =
        EncodingKey::from_rsa_pem(pem_block("PRIVATE KEY", rsa_pkcs8.as_ref()).as_bytes()).expect("RSA PEM");
    let mut jwk = Jwk::from_encoding_key(&encoding_key, Algorithm::RS256).expect("JWK");
    jwk.common.key_id = Some("bench-key".into());
    let jwks_json = serde_json::to_string(&json!({ "keys": [jwk] })).expect("JWKS JSON");
    let jwks: JwkSet = serde_json::from_str(&jwks_json).expect("JWKS parses");
    let keys = IssuerKeys::from_jwks(&jwks);
    let decoding_key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).expect("decoding key");
    assert_eq!(keys.len(), 1, "the issuer key must be usable");

    let now = now_unix();
    let claims = json!({
        "iss": ISSUER_URL, "aud": "sigstore", "sub": "bench-subject", "email": EMAIL, "email_verified": true,
        "iat": now, "nbf": now, "exp": now + 24 * 3600,
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("bench-key".into());
    let raw_token = jsonwebtoken::encode(&header, &claims, &encoding_key).expect("token");
    let issuer = Arc::new(IssuerConfig::new(ISSUER_URL, IssuerKind::Email(Default::default())));

    // The client: a P-256 key and a DER ECDSA-SHA256 signature over the email.
    let rng = SystemRandom::new();
    let client_pkcs8 = EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("P-256 key");
    let client = EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, client_pkcs8.as_ref()).expect("key");
    let client_spki = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(client.public_key()).expect("SPKI");
    let client_pem = pem_block("PUBLIC KEY", client_spki.as_ref()).into_bytes();
    let client_point = client.public_key().as_ref().to_vec();
    let proof = client.sign(&rng, EMAIL.as_bytes()).expect("PoP").as_ref().to_vec();

    // The CA, built in-process exactly as `keyless ca init` + start-up do.
    let start = SystemTime::now();
    let (root, _) = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP384Sha384).expect("root key");
    let (issuing, _) = SoftwareSigner::generate(SignatureAlgorithm::EcdsaP256Sha256).expect("issuing key");
    let names = CaNames::default();
    let year = Duration::from_secs(365 * 24 * 3600);
    let root_der = ceremony::root_certificate(&root, &names, 10 * year, start).expect("root certificate");
    let intermediate_der = ceremony::intermediate_certificate(
        &root,
        &root_der,
        keyless_ca::Signer::public_key_spki(&issuing),
        &names,
        5 * year,
        start,
    )
    .expect("intermediate certificate");
    let chain_pem = format!("{}{}", pem_encode(&intermediate_der), pem_encode(&root_der));
    let ca = CertificateAuthority::new(Arc::new(issuing), &chain_pem, Duration::from_secs(600), start).expect("CA");

    // Bare-crypto inputs: the token's signing input and signature, and a real leaf TBS.
    let (signing_input, sig_b64) = raw_token.rsplit_once('.').expect("compact JWS");
    let rsa_signing_input = signing_input.as_bytes().to_vec();
    let rsa_signature = URL_SAFE_NO_PAD.decode(sig_b64).expect("signature base64");
    let rsa_public =
        ParsedPublicKey::new(&sig::RSA_PKCS1_2048_8192_SHA256, rsa.public_key().as_ref()).expect("RSA public key");
    let fixture_leaf = {
        let unverified = token::parse(&raw_token).expect("parse");
        let verified = token::verify(unverified, issuer.clone(), &keys, now).expect("verify");
        let principal = identity::principal(&verified).expect("principal");
        let proven = possession::prove(
            &principal,
            KeyRequest::Signature {
                public_key: &client_pem,
                proof: &proof,
            },
            &AlgorithmPolicy::default(),
        )
        .expect("prove");
        let permitted = policy::permit(&verified, principal, |_| Ok::<(), ()>(())).expect("permit");
        block_on(ca.issue(permitted, proven, SystemTime::now())).expect("issue")
    };
    let (_, leaf) = x509_parser::parse_x509_certificate(&fixture_leaf.der).expect("leaf parses");
    let tbs = leaf.tbs_certificate.as_ref().to_vec();
    let bare_pkcs8 = EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("P-256 key");
    let bare_ca_key = EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, bare_pkcs8.as_ref()).expect("key");
    let bare_ca_verifier =
        ParsedPublicKey::new(&sig::ECDSA_P256_SHA256_ASN1, bare_ca_key.public_key().as_ref()).expect("verifier");

    Fixture {
        raw_token,
        decoding_key,
        issuer,
        keys,
        client_pem,
        client_point,
        proof,
        ca,
        rsa_public,
        rsa_signing_input,
        rsa_signature,
        bare_ca_key,
        bare_ca_verifier,
        tbs,
        rng,
    }
}

impl Fixture {
    /// One issuance exactly as the server's handler runs it (minus HTTP, JSON and the JWKS cache).
    fn issue_once(&self, now: i64) -> keyless_ca::Issued {
        let unverified = token::parse(&self.raw_token).expect("parse");
        let verified = token::verify(unverified, self.issuer.clone(), &self.keys, now).expect("verify");
        let principal = identity::principal(&verified).expect("principal");
        let proven = possession::prove(
            &principal,
            KeyRequest::Signature {
                public_key: &self.client_pem,
                proof: &self.proof,
            },
            &AlgorithmPolicy::default(),
        )
        .expect("prove");
        let permitted = policy::permit(&verified, principal, |_| Ok::<(), ()>(())).expect("permit");
        block_on(self.ca.issue(permitted, proven, SystemTime::now())).expect("issue")
    }

    fn bare_rs256_verify(&self) {
        self.rsa_public
            .verify_sig(&self.rsa_signing_input, &self.rsa_signature)
            .expect("RS256 verifies");
    }

    fn bare_pop_verify(&self) {
        UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_ASN1, &self.client_point)
            .verify(EMAIL.as_bytes(), &self.proof)
            .expect("PoP verifies");
    }

    fn bare_sign(&self) -> Vec<u8> {
        self.bare_ca_key
            .sign(&self.rng, &self.tbs)
            .expect("sign")
            .as_ref()
            .to_vec()
    }

    fn bare_self_verify(&self, signature: &[u8]) {
        self.bare_ca_verifier
            .verify_sig(&self.tbs, signature)
            .expect("own signature verifies");
    }

    /// The four public-key operations of one issuance, and nothing else.
    fn bare_once(&self) {
        self.bare_rs256_verify();
        self.bare_pop_verify();
        let signature = self.bare_sign();
        self.bare_self_verify(&signature);
        black_box(signature);
    }
}

/// Per-call (iterations, elapsed) of an `iter_custom` benchmark, to compute the ratio at the end.
#[derive(Default)]
struct Samples(Mutex<Vec<(u64, Duration)>>);

impl Samples {
    fn record(&self, iters: u64, elapsed: Duration) {
        self.0.lock().expect("samples").push((iters, elapsed));
    }

    /// Median nanoseconds per iteration over the recorded calls (as criterion's median).
    fn median_ns(&self) -> Option<f64> {
        let samples = self.0.lock().expect("samples");
        let mut per_iter: Vec<f64> = samples
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, d)| d.as_nanos() as f64 / *n as f64)
            .collect();
        if per_iter.is_empty() {
            return None;
        }
        per_iter.sort_by(f64::total_cmp);
        Some(per_iter[per_iter.len() / 2])
    }
}

fn timed(samples: &Samples, iters: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let elapsed = start.elapsed();
    samples.record(iters, elapsed);
    elapsed
}

fn issuance(c: &mut Criterion, fx: &Fixture, in_process: &Samples, bare: &Samples) {
    let mut group = c.benchmark_group("issuance");
    group.throughput(Throughput::Elements(1));
    group.bench_function("in-process", |b| {
        b.iter_custom(|iters| {
            let now = now_unix();
            timed(in_process, iters, || {
                black_box(fx.issue_once(now));
            })
        })
    });
    group.bench_function("bare-crypto", |b| {
        b.iter_custom(|iters| timed(bare, iters, || fx.bare_once()))
    });
    group.finish();
}

fn steps(c: &mut Criterion, fx: &Fixture) {
    let now = now_unix();
    let verified = token::verify(
        token::parse(&fx.raw_token).expect("parse"),
        fx.issuer.clone(),
        &fx.keys,
        now,
    )
    .expect("verify");
    let principal = identity::principal(&verified).expect("principal");
    let request = KeyRequest::Signature {
        public_key: &fx.client_pem,
        proof: &fx.proof,
    };
    let proven = possession::prove(&principal, request, &AlgorithmPolicy::default()).expect("prove");

    let mut group = c.benchmark_group("steps");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("token::parse", |b| {
        b.iter(|| token::parse(black_box(&fx.raw_token)).expect("parse"))
    });
    group.bench_function("token::verify", |b| {
        b.iter_batched(
            || token::parse(&fx.raw_token).expect("parse"),
            |u| token::verify(u, fx.issuer.clone(), &fx.keys, now).expect("verify"),
            BatchSize::SmallInput,
        )
    });
    let (signing_input, signature) = fx.raw_token.rsplit_once('.').expect("compact JWS");
    group.bench_function("jsonwebtoken::crypto::verify (RS256)", |b| {
        b.iter(|| {
            let ok = jsonwebtoken::crypto::verify(
                black_box(signature),
                signing_input.as_bytes(),
                &fx.decoding_key,
                Algorithm::RS256,
            );
            assert!(ok.expect("verify runs"));
        })
    });
    group.bench_function("identity::principal", |b| {
        b.iter(|| identity::principal(black_box(&verified)).expect("principal"))
    });
    let policy = AlgorithmPolicy::default();
    group.bench_function("possession::prove", |b| {
        b.iter(|| possession::prove(black_box(&principal), request, &policy).expect("prove"))
    });
    group.bench_function("keys::PublicKey::from_pem_or_der", |b| {
        b.iter(|| keyless_ca::keys::PublicKey::from_pem_or_der(black_box(&fx.client_pem)).expect("key"))
    });
    group.bench_function("CertificateAuthority::issue", |b| {
        b.iter_batched(
            || {
                let permitted = policy::permit(&verified, principal.clone(), |_| Ok::<(), ()>(())).expect("permit");
                (permitted, proven.clone())
            },
            |(p, k)| block_on(fx.ca.issue(p, k, SystemTime::now())).expect("issue"),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("bare");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("rs256-verify", |b| b.iter(|| fx.bare_rs256_verify()));
    group.bench_function("p256-pop-verify", |b| b.iter(|| fx.bare_pop_verify()));
    group.bench_function("p256-sign", |b| b.iter(|| fx.bare_sign()));
    let signature = fx.bare_sign();
    group.bench_function("p256-self-verify", |b| b.iter(|| fx.bare_self_verify(&signature)));
    group.finish();
}

fn main() {
    let fx = fixture();
    let (in_process, bare) = (Samples::default(), Samples::default());
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6))
        .configure_from_args();
    issuance(&mut c, &fx, &in_process, &bare);
    steps(&mut c, &fx);
    c.final_summary();

    match (in_process.median_ns(), bare.median_ns()) {
        (Some(ip), Some(b)) => {
            let (ip_tput, bare_tput) = (1e9 / ip, 1e9 / b);
            eprintln!();
            eprintln!(
                "in-process issuance: {:>9.1} µs/cert  {:>8.0} certs/s (one core)",
                ip / 1e3,
                ip_tput
            );
            eprintln!(
                "bare crypto ceiling: {:>9.1} µs/cert  {:>8.0} certs/s (one core)",
                b / 1e3,
                bare_tput
            );
            eprintln!(
                "in-process / bare crypto throughput: {:.1}% (target >= 70%: {})",
                100.0 * ip_tput / bare_tput,
                if ip_tput / bare_tput >= 0.70 { "met" } else { "NOT met" }
            );
        }
        _ => eprintln!("(ratio not printed: run both issuance/in-process and issuance/bare-crypto)"),
    }
}
