//! Black-box test harness for Keyless CA.
//!
//! - [`TestIssuer`]: a real OIDC issuer on loopback (discovery + JWKS over HTTP, RSA and EC keys)
//!   that mints tokens with whatever claims and headers a test wants;
//! - [`Keyless`]: the built `keyless` binary started as a subprocess on a free loopback port with a
//!   generated config, killed on drop;
//! - [`ClientKey`]: client key pairs and proofs of possession;
//! - [`inspect`]: certificate checks with parsers independent of the CA (RustCrypto `x509-cert`
//!   and the `openssl` command).

pub mod clients;
pub mod ct;
pub mod inspect;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// PEM-encodes DER with 64-column lines.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// One signing key of the test issuer.
pub struct IssuerKey {
    /// Key id published in the JWKS.
    pub kid: String,
    /// Algorithm.
    pub alg: Algorithm,
    /// Private key for minting.
    pub encoding: EncodingKey,
    /// Public JWK.
    pub jwk: Value,
    /// The RSA private key PEM (for the HS256-with-public-key attack test).
    pub public_pem: Option<String>,
}

impl IssuerKey {
    /// A fresh RSA-2048 key for RS256.
    pub fn rsa(kid: &str) -> IssuerKey {
        let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8: Pkcs8V1Der = kp.as_der().unwrap();
        let encoding = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).unwrap();
        let spki = kp.public_key().as_der().unwrap();
        IssuerKey::finish(kid, Algorithm::RS256, encoding, Some(pem("PUBLIC KEY", spki.as_ref())))
    }

    /// A fresh P-256 key for ES256.
    pub fn ec(kid: &str) -> IssuerKey {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
        IssuerKey::finish(kid, Algorithm::ES256, encoding, None)
    }

    fn finish(kid: &str, alg: Algorithm, encoding: EncodingKey, public_pem: Option<String>) -> IssuerKey {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        let jwk = serde_json::to_value(&jwk).unwrap();
        IssuerKey {
            kid: kid.to_string(),
            alg,
            encoding,
            jwk,
            public_pem,
        }
    }
}

/// A real OIDC issuer served over HTTP on 127.0.0.1.
/// A server on 127.0.0.1 that accepts connections, reads what arrives and never answers: an
/// IdP, CT log or peer that hangs. Its URL is `http://ADDR`; connections close when it is dropped.
pub struct HangingServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// Connections accepted so far.
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HangingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HangingServer {
    /// Starts listening.
    pub async fn start() -> HangingServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(tokio::spawn(async move {
                    use tokio::io::AsyncReadExt as _;
                    let mut buf = [0u8; 4096];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                    // Keep the socket open until the server is dropped.
                    std::future::pending::<()>().await;
                }));
            }
        });
        HangingServer { url, accepted, task }
    }
}

/// Writes the public key of a fresh P-256 key (nobody holds the private half any more) as
/// `PUBLIC KEY` PEM to `path`: a CT log key for configurations whose log never answers.
pub fn throwaway_log_key(path: &Path) {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let alg = &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).unwrap();
    std::fs::write(path, pem("PUBLIC KEY", pair.public_key().as_der().unwrap().as_ref())).unwrap();
}

pub struct TestIssuer {
    /// The issuer URL (`iss`).
    pub url: String,
    /// RS256 key (kid `rsa-1`).
    pub rsa: IssuerKey,
    /// ES256 key (kid `ec-1`).
    pub ec: IssuerKey,
    jwks: Arc<RwLock<Value>>,
    jwks_fetches: Arc<std::sync::atomic::AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestIssuer {
    /// Starts an issuer at `http://127.0.0.1:PORT/<path>` publishing an RSA and an EC key.
    pub async fn start(path: &str) -> TestIssuer {
        TestIssuer::start_with(path, None).await
    }

    /// Like [`TestIssuer::start`], over HTTPS with a certificate for 127.0.0.1 issued by a private
    /// CA; returns the issuer and the CA's PEM.
    pub async fn start_tls(path: &str) -> (TestIssuer, String) {
        let pair = TestTls::new("Private IdP CA");
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![pair.cert_der.clone().into()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(pair.key_der.clone().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        (TestIssuer::start_with(path, Some(acceptor)).await, pair.ca_pem)
    }

    async fn start_with(path: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> TestIssuer {
        let rsa = IssuerKey::rsa("rsa-1");
        let ec = IssuerKey::ec("ec-1");
        let jwks = Arc::new(RwLock::new(json!({ "keys": [rsa.jwk, ec.jwk] })));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}{path}", listener.local_addr().unwrap());
        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        });
        let j = jwks.clone();
        let jwks_fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = jwks_fetches.clone();
        let app = Router::new()
            .route(
                &format!("{path}/.well-known/openid-configuration"),
                get(move || async move { Json(discovery) }),
            )
            .route(
                &format!("{path}/jwks"),
                get(move || async move {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Json(j.read().unwrap().clone())
                }),
            );
        let server = tokio::spawn(async move {
            match tls {
                None => axum::serve(listener, app).await.unwrap(),
                Some(acceptor) => axum::serve(
                    TlsListener {
                        tcp: listener,
                        acceptor,
                    },
                    app,
                )
                .await
                .unwrap(),
            }
        });
        TestIssuer {
            url,
            rsa,
            ec,
            jwks,
            jwks_fetches,
            server,
        }
    }

    /// Replaces the published key set (key rotation).
    pub fn publish(&self, keys: &[&IssuerKey]) {
        *self.jwks.write().unwrap() = json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    }

    /// How many times the JWKS has been fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Claims of a verified-email token from this issuer, valid for 10 minutes.
    pub fn email_claims(&self, email: &str) -> Value {
        email_claims(&self.url, email)
    }

    /// Claims shaped like a GitHub Actions token from this issuer.
    pub fn github_claims(&self) -> Value {
        github_claims(&self.url)
    }

    /// Signs `claims` with the RSA key (RS256, kid `rsa-1`).
    pub fn mint(&self, claims: &Value) -> String {
        mint_with(&self.rsa, claims)
    }
}

/// A TLS listener for axum: accepts TCP, completes the handshake, drops failed handshakes.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A private CA and a server certificate for 127.0.0.1 it issued.
pub struct TestTls {
    /// The CA certificate (what clients trust).
    pub ca_pem: String,
    /// The server certificate.
    pub cert_pem: String,
    /// The server certificate, DER.
    pub cert_der: Vec<u8>,
    /// The server key, PKCS#8 PEM.
    pub key_pem: String,
    /// The server key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl TestTls {
    /// A fresh CA named `ca_name` and a server certificate for 127.0.0.1.
    pub fn new(ca_name: &str) -> TestTls {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        TestTls {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }
}

/// Claims of a verified-email token from `iss`, valid for 10 minutes; `sub` differs from the email.
pub fn email_claims(iss: &str, email: &str) -> Value {
    let t = now();
    json!({"iss": iss, "aud": "sigstore", "sub": format!("user-{email}"), "email": email,
           "email_verified": true, "iat": t, "nbf": t, "exp": t + 600})
}

/// Claims shaped like a GitHub Actions token from `iss`, valid for 10 minutes.
pub fn github_claims(iss: &str) -> Value {
    let t = now();
    json!({
        "iss": iss, "aud": "sigstore", "iat": t, "nbf": t, "exp": t + 600,
        "sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
        "job_workflow_ref": "octo-org/octo-repo/.github/workflows/release.yml@refs/heads/main",
        "job_workflow_sha": "1111111111111111111111111111111111111111",
        "sha": "2222222222222222222222222222222222222222",
        "event_name": "push", "repository": "octo-org/octo-repo", "workflow": "Release",
        "ref": "refs/heads/main", "runner_environment": "github-hosted",
        "repository_id": "123456", "repository_owner": "octo-org", "repository_owner_id": "654321",
        "repository_visibility": "public",
        "workflow_ref": "octo-org/octo-repo/.github/workflows/release.yml@refs/heads/main",
        "workflow_sha": "3333333333333333333333333333333333333333",
        "run_id": "42", "run_attempt": "1",
    })
}

/// Signs `claims` with `key`, putting its kid in the header.
pub fn mint_with(key: &IssuerKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// A compact JWS with an arbitrary header and a given signature (for forged-token tests).
pub fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B;
    format!(
        "{}.{}.{}",
        B.encode(serde_json::to_vec(header).unwrap()),
        B.encode(serde_json::to_vec(claims).unwrap()),
        B.encode(signature)
    )
}

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

/// Runs `openssl` with `args`, panicking with its stderr on failure.
pub fn openssl(args: &[&str], dir: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/test.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Where the `keyless` binary is: `$KEYLESS_BIN`, or beside this test's target directory.
pub fn keyless_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KEYLESS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("keyless");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin keyless` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A running `keyless serve` subprocess.
pub struct Keyless {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// Environment the server runs with (e.g. SoftHSM's config and the PIN).
    env: Vec<(String, String)>,
    /// The SoftHSM token the CA key lives in, kept alive as long as the server.
    pub hsm: Option<SoftHsm>,
    /// The embedded CT log's base URL, when it runs.
    pub ct_url: Option<String>,
    /// The Prometheus endpoint, when `metrics_listen` is set.
    pub metrics_url: Option<String>,
    /// The server's working directory (config, data, logs).
    pub dir: tempfile::TempDir,
    child: Child,
    http: reqwest::Client,
}

impl Drop for Keyless {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- keyless server log ----\n{}", self.log());
        }
    }
}

/// The response to an API call.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// Raw body.
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// The error `message`.
    pub fn message(&self) -> String {
        self.json()["message"].as_str().unwrap_or_default().to_string()
    }

    /// The chain of a v2 success, PEM strings, leaf first.
    pub fn chain(&self) -> Vec<String> {
        assert_eq!(self.status, 200, "expected success, got {}: {}", self.status, self.body);
        self.json()["signedCertificateEmbeddedSct"]["chain"]["certificates"]
            .as_array()
            .expect("signedCertificateEmbeddedSct.chain.certificates")
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }
}

impl Keyless {
    /// Starts `keyless serve` with `config` (YAML) written into a fresh directory. `listen` and
    /// `data_dir` are filled in unless the config sets them.
    pub fn start(config: &str) -> Keyless {
        let dir = tempfile::tempdir().unwrap();
        Keyless::start_in(dir, config)
    }

    /// Starts a server whose CA key lives in `backend` (for PKCS#11, after `keyless ca init`).
    pub fn start_with_backend(backend: Backend, config: &str) -> Keyless {
        Keyless::start_with_backend_env(backend, config, &[])
    }

    /// Like [`Keyless::start_with_backend`] with extra environment variables for the server.
    pub fn start_with_backend_env(backend: Backend, config: &str, extra_env: &[(&str, &str)]) -> Keyless {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::File => Keyless::start_in(dir, config),
            Backend::Pkcs11(hsm) => {
                let config = format!("{config}{}", hsm.ca_yaml("keyless-issuing", "pki/chain.pem"));
                let text = format!("listen: 127.0.0.1:0\ndata_dir: ./data\n{config}");
                std::fs::write(dir.path().join("keyless.yaml"), &text).unwrap();
                let mut env = hsm.env();
                let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let out = run_keyless(&["ca", "init", "--config", "keyless.yaml"], dir.path(), &env_refs);
                assert!(
                    out.status.success(),
                    "ca init on SoftHSM failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                let mut ks = Keyless::start_full(dir, &text, env);
                ks.hsm = Some(hsm);
                ks
            }
        }
    }

    /// Like [`Keyless::start`] in an existing directory.
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Keyless {
        Keyless::start_full(dir, config, Vec::new())
    }

    /// Like [`Keyless::start_in`] with extra environment variables.
    pub fn start_full(dir: tempfile::TempDir, config: &str, env: Vec<(String, String)>) -> Keyless {
        let path = dir.path().join("keyless.yaml");
        let mut text = String::new();
        if !config.lines().any(|l| l.starts_with("listen:")) {
            text.push_str("listen: 127.0.0.1:0\n");
        }
        if !config.lines().any(|l| l.starts_with("data_dir:")) {
            text.push_str("data_dir: ./data\n");
        }
        text.push_str(config);
        std::fs::write(&path, text).unwrap();
        let log = std::fs::File::create(dir.path().join("keyless.log")).unwrap();
        let mut child = Command::new(keyless_bin())
            .args(["serve", "--config"])
            .arg(&path)
            .current_dir(dir.path())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KEYLESS_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let (url, ct_url, metrics_url) = match wait_for_listen(&mut child) {
            Some(urls) => urls,
            None => {
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.path().join("keyless.log")).unwrap_or_default();
                panic!("keyless did not start:\n{log}");
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Keyless {
            url,
            env,
            hsm: None,
            metrics_url,
            ct_url,
            dir,
            child,
            http,
        }
    }

    /// The Sigstore trusted root that `keyless trusted-root` prints for this server.
    pub fn trusted_root(&self) -> Value {
        self.trust_material(&[])
    }

    /// The `ClientTrustConfig` that `keyless trusted-root --client-config` prints, naming
    /// `rekor_url` as the (out-of-project) Rekor.
    pub fn client_trust_config(&self, rekor_url: &str) -> Value {
        self.trust_material(&["--client-config", "--rekor-url", rekor_url])
    }

    fn trust_material(&self, extra: &[&str]) -> Value {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut args = vec![
            "trusted-root",
            "--config",
            "keyless.yaml",
            "--ca-url",
            &self.url,
            "--ct-url",
            self.ct_url.as_deref().unwrap_or("http://unused"),
        ];
        args.extend_from_slice(extra);
        let out = run_keyless(&args, self.dir.path(), &env);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The Prometheus exposition text.
    pub async fn metrics(&self) -> String {
        let url = self.metrics_url.as_deref().expect("metrics_listen is set");
        self.http.get(url).send().await.unwrap().text().await.unwrap()
    }

    /// GETs `path` from the embedded CT log.
    pub async fn ct_get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.ct_url.as_deref().expect("the embedded CT log runs"));
        let resp = self.http.get(&url).send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "GET {url}: {status}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Kills the server with SIGKILL and starts it again in the same directory with the same
    /// configuration (new ports, same data).
    pub fn restart_after_kill9(&mut self) {
        self.kill9();
        self.respawn();
    }

    /// Sends SIGTERM, waits (30 s at most) for the graceful shutdown to finish, and starts the
    /// server again like [`Keyless::restart_after_kill9`]. Returns the exit status of the old one.
    pub fn restart_after_sigterm(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "keyless did not exit within 30 s of SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.respawn();
        status
    }

    fn respawn(&mut self) {
        let log = std::fs::File::options()
            .append(true)
            .open(self.dir.path().join("keyless.log"))
            .unwrap();
        let mut child = Command::new(keyless_bin())
            .args(["serve", "--config", "keyless.yaml"])
            .current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KEYLESS_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let Some((url, ct_url, metrics_url)) = wait_for_listen(&mut child) else {
            let _ = child.kill();
            panic!("keyless did not restart:\n{}", self.log());
        };
        self.child = child;
        self.url = url;
        self.ct_url = ct_url;
        self.metrics_url = metrics_url;
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. `USR1`) to the server with `kill`.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{name} failed");
    }

    /// Sends SIGKILL and waits for the process to die.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("keyless.log")).unwrap_or_default()
    }

    /// POSTs a JSON body (with optional bearer token) to `path`.
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>, bearer: Option<&str>) -> Reply {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        reply(req.send().await.unwrap()).await
    }

    /// POSTs a streamed body of unknown length, on a connection of its own (the server may close
    /// it mid-upload, which must not poison the shared connection pool).
    pub async fn post_stream(&self, path: &str, body: reqwest::Body) -> Result<Reply, reqwest::Error> {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await?;
        Ok(reply(resp).await)
    }

    /// Writes raw bytes to the server and returns what it answers (for requests a client library
    /// would not send, such as a declared length with a truncated body).
    pub async fn raw_exchange(&self, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.url.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 8192];
        let mut got = Vec::new();
        let read = async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        if String::from_utf8_lossy(&got).contains("\"details\"") {
                            break;
                        }
                    }
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
        String::from_utf8_lossy(&got).into_owned()
    }

    /// POSTs a v2 signingCert request.
    pub async fn sign_v2(&self, body: &Value, bearer: Option<&str>) -> Reply {
        self.post("/api/v2/signingCert", serde_json::to_vec(body).unwrap(), bearer)
            .await
    }

    /// Sends `bodies` as v2 signingCert requests from `clients` concurrent clients, each working
    /// through its share in order with `pause` between requests. Returns at once, so the caller can
    /// inject faults while the load runs; awaiting the handle gives every reply, in input order.
    pub fn sign_v2_concurrently(
        &self,
        bodies: Vec<Value>,
        clients: usize,
        pause: Duration,
    ) -> tokio::task::JoinHandle<Vec<Reply>> {
        let per_client = bodies.len().div_ceil(clients.max(1)).max(1);
        let tasks: Vec<_> = bodies
            .chunks(per_client)
            .map(|share| {
                let (http, url, share) = (self.http.clone(), self.url.clone(), share.to_vec());
                tokio::spawn(async move {
                    let mut replies = Vec::new();
                    for body in share {
                        let resp = http.post(format!("{url}/api/v2/signingCert")).json(&body).send();
                        replies.push(reply(resp.await.unwrap()).await);
                        tokio::time::sleep(pause).await;
                    }
                    replies
                })
            })
            .collect();
        tokio::spawn(async move {
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        })
    }

    /// GETs `path`.
    pub async fn get(&self, path: &str) -> Reply {
        reply(self.http.get(format!("{}{path}", self.url)).send().await.unwrap()).await
    }

    /// True if the server still answers `/healthz`.
    pub async fn healthy(&self) -> bool {
        let r = self.get("/healthz").await;
        r.status == 200 && r.json()["status"] == "SERVING"
    }
}

async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.text().await.unwrap();
    Reply {
        status,
        content_type,
        body,
    }
}

/// Waits for `keyless: listening on URL` (after `keyless: ct log listening on URL`, if any).
fn wait_for_listen(child: &mut Child) -> Option<(String, Option<String>, Option<String>)> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut ct, mut metrics) = (None, None);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("keyless: ct log listening on ") {
                ct = Some(url.trim().to_string());
            }
            if let Some(url) = line.strip_prefix("keyless: metrics listening on ") {
                metrics = Some(url.trim().to_string());
            }
            if let Some(url) = line.strip_prefix("keyless: listening on ") {
                let _ = tx.send((url.trim().to_string(), ct.clone(), metrics.clone()));
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).ok()
}

/// Runs `keyless <args>` to completion in `dir` (60 s at most) and returns its output.
pub fn run_keyless(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(keyless_bin());
    cmd.args(args).current_dir(dir).envs(env.iter().copied());
    run_with_timeout(&mut cmd, Duration::from_secs(60))
}

/// Runs `cmd` to completion with stdout and stderr captured; kills it and panics after `limit`.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    // Drain the pipes while waiting, so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut buf);
        buf
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Where the CA key of a test server lives.
pub enum Backend {
    /// The generated file CA.
    File,
    /// A fresh SoftHSM2 token.
    Pkcs11(SoftHsm),
}

impl Backend {
    /// A fresh SoftHSM2 token backend.
    pub fn softhsm() -> Backend {
        Backend::Pkcs11(SoftHsm::new())
    }
}

/// The SoftHSM2 PKCS#11 module installed by `softhsm2` (scripts/test.sh).
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of test tokens. Distinctive, so "the PIN is never logged" cannot pass or fail by
/// a chance match with a serial number or timestamp.
pub const HSM_PIN: &str = "test-pin-Qz7w";

/// A throwaway SoftHSM2 token in a temporary directory (never the system token directory).
pub struct SoftHsm {
    /// Holds `softhsm2.conf` and the token files.
    pub dir: tempfile::TempDir,
    /// The token label.
    pub label: String,
}

impl SoftHsm {
    /// Creates the token (label `keyless`, PIN [`HSM_PIN`]).
    pub fn new() -> SoftHsm {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let hsm = SoftHsm {
            dir,
            label: "keyless".into(),
        };
        hsm.util(&[
            "--init-token",
            "--free",
            "--label",
            "keyless",
            "--pin",
            HSM_PIN,
            "--so-pin",
            "8765",
        ]);
        hsm
    }

    /// `SOFTHSM2_CONF` for processes using this token.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    /// The environment a keyless process needs: the SoftHSM config and the PIN variable.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SOFTHSM2_CONF".into(), self.conf().display().to_string()),
            ("KEYLESS_HSM_PIN".into(), HSM_PIN.into()),
        ]
    }

    /// The `ca:` section for this token.
    pub fn ca_yaml(&self, key_label: &str, chain: &str) -> String {
        format!(
            "ca:\n  pkcs11: {{module: {SOFTHSM_MODULE}, token_label: {}, pin: env:KEYLESS_HSM_PIN, key_label: {key_label}, chain: {chain}}}\n",
            self.label
        )
    }

    /// Runs `softhsm2-util` against this token directory.
    pub fn util(&self, args: &[&str]) -> String {
        self.tool("softhsm2-util", &[], args)
    }

    /// Runs `pkcs11-tool` (OpenSC) logged in to this token.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let login = [
            "--module",
            SOFTHSM_MODULE,
            "--token-label",
            &self.label,
            "--login",
            "--pin",
            HSM_PIN,
        ];
        self.tool("pkcs11-tool", &login, args)
    }

    /// Runs `program` with this token's configuration; panics with its stderr unless it succeeds.
    fn tool(&self, program: &str, fixed: &[&str], args: &[&str]) -> String {
        let out = Command::new(program)
            .args(fixed)
            .args(args)
            .env("SOFTHSM2_CONF", self.conf())
            .output()
            .unwrap_or_else(|e| panic!("{program} is installed by scripts/test.sh: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        SoftHsm::new()
    }
}
