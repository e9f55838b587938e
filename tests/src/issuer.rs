//! A real OIDC issuer on loopback, its keys, and the tokens it mints.

use std::sync::{Arc, RwLock};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::{now, pem};

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
        IssuerKey::rsa_from_pkcs8(kid, pkcs8.as_ref()).unwrap()
    }

    /// An RS256 key from its PKCS#8 DER, so separate processes (the benchmark's issuer and its
    /// body writer) can share one key through a file.
    pub fn rsa_from_pkcs8(kid: &str, pkcs8: &[u8]) -> anyhow::Result<IssuerKey> {
        let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8).map_err(|e| anyhow::anyhow!("RSA PKCS#8 key: {e}"))?;
        let encoding = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8).as_bytes())?;
        let spki = kp
            .public_key()
            .as_der()
            .map_err(|e| anyhow::anyhow!("RSA public key: {e}"))?;
        Ok(IssuerKey::finish(
            kid,
            Algorithm::RS256,
            encoding,
            Some(pem("PUBLIC KEY", spki.as_ref())),
        ))
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
