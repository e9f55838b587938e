//! A real OIDC issuer on 127.0.0.1 for the OIDC adapter's tests: discovery and JWKS over HTTP (or
//! HTTPS behind a private CA), switchable between answering, 404, hanging and answering slowly,
//! with configurable redirects and a record of every path requested.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyless_config::{IssuerConfig, IssuerKind};
use serde_json::{Value, json};

/// An ES256 signing key of the test issuer.
pub struct Key {
    pub kid: String,
    encoding: EncodingKey,
    pub jwk: Value,
}

impl Key {
    pub fn new(kid: &str) -> Key {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        Key {
            kid: kid.to_string(),
            encoding,
            jwk: serde_json::to_value(&jwk).unwrap(),
        }
    }

    /// A valid email token from `iss`, signed with this key.
    pub fn token(&self, iss: &str) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims = json!({"iss": iss, "aud": "sigstore", "sub": "someone", "email": "someone@example.com",
                            "email_verified": true, "iat": now, "exp": now + 600});
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

/// How the issuer answers discovery and JWKS requests.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Up,
    NotFound,
    /// Accepts the request and never answers.
    Hang,
    /// Answers after this delay.
    Slow(Duration),
}

struct Shared {
    base: String,
    mode: Mutex<Mode>,
    keys: Mutex<Vec<Value>>,
    /// Path → absolute `Location`.
    redirects: Mutex<HashMap<String, String>>,
    requests: Mutex<Vec<String>>,
    /// The `Authorization` header of each request (`None` when absent), in order.
    authorizations: Mutex<Vec<(String, Option<String>)>>,
    /// When set, discovery and JWKS answer 401 without `Authorization: Bearer <this>`.
    required_bearer: Mutex<Option<String>>,
    /// `id_token_signing_alg_values_supported` (`None`: the member is absent).
    algorithms: Mutex<Option<Vec<String>>>,
    /// Overrides the `jwks_uri` the discovery document names.
    jwks_uri: Mutex<Option<String>>,
}

/// A real issuer on loopback. Every path `<prefix>/.well-known/openid-configuration` answers with
/// issuer `<base><prefix>` and `jwks_uri` `<base><prefix>/jwks`; every `…/jwks` path answers with
/// the published keys. Prefixes containing `junk` always get 404.
pub struct Idp {
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub base: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Idp {
    /// Plain HTTP, publishing `key`.
    pub async fn start(key: &Key) -> Idp {
        Idp::start_with(key, None).await
    }

    /// HTTPS with a certificate for 127.0.0.1 from a fresh private CA; returns the CA's PEM too.
    pub async fn start_tls(key: &Key) -> (Idp, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test IdP CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        (Idp::start_with(key, Some(acceptor)).await, ca_cert.pem())
    }

    async fn start_with(key: &Key, tls: Option<tokio_rustls::TlsAcceptor>) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            base: base.clone(),
            mode: Mutex::new(Mode::Up),
            keys: Mutex::new(vec![key.jwk.clone()]),
            redirects: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            authorizations: Mutex::new(Vec::new()),
            required_bearer: Mutex::new(None),
            algorithms: Mutex::new(Some(vec!["ES256".into()])),
            jwks_uri: Mutex::new(None),
        });
        let s = shared.clone();
        let app = axum::Router::new()
            .fallback(move |uri: Uri, headers: axum::http::HeaderMap| answer(s.clone(), uri, headers));
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
        Idp { base, shared, server }
    }

    /// The issuer URL for `prefix` (e.g. `/tenant`).
    pub fn issuer(&self, prefix: &str) -> String {
        format!("{}{prefix}", self.base)
    }

    /// Discovery and JWKS need `Authorization: Bearer <token>` from now on.
    pub fn require_bearer(&self, token: &str) {
        *self.shared.required_bearer.lock().unwrap() = Some(token.to_string());
    }

    /// The discovery document's `id_token_signing_alg_values_supported` (`None`: absent).
    pub fn advertise(&self, algorithms: Option<&[&str]>) {
        *self.shared.algorithms.lock().unwrap() = algorithms.map(|a| a.iter().map(|s| s.to_string()).collect());
    }

    /// The discovery document names this `jwks_uri` instead of the issuer's own.
    pub fn set_jwks_uri(&self, uri: &str) {
        *self.shared.jwks_uri.lock().unwrap() = Some(uri.to_string());
    }

    /// The `Authorization` headers requests for `path` carried, in order.
    pub fn authorizations(&self, path: &str) -> Vec<Option<String>> {
        self.shared
            .authorizations
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// Every `Authorization` header any request carried.
    pub fn all_authorizations(&self) -> Vec<String> {
        self.shared
            .authorizations
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, a)| a.clone())
            .collect()
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    pub fn publish(&self, keys: &[&Key]) {
        *self.shared.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// Answers `path` with a 302 to `location`.
    pub fn redirect(&self, path: &str, location: &str) {
        self.shared
            .redirects
            .lock()
            .unwrap()
            .insert(path.to_string(), location.to_string());
    }

    /// Discovery requests for the issuer at `prefix` so far.
    pub fn discoveries(&self, prefix: &str) -> usize {
        self.count(|p| p == format!("{prefix}/.well-known/openid-configuration"))
    }

    /// Discovery requests whose path contains `part`.
    pub fn discoveries_matching(&self, part: &str) -> usize {
        self.count(|p| p.contains(part) && p.ends_with("/.well-known/openid-configuration"))
    }

    /// Requests for exactly `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.count(|p| p == path)
    }

    fn count(&self, f: impl Fn(&str) -> bool) -> usize {
        self.shared.requests.lock().unwrap().iter().filter(|p| f(p)).count()
    }
}

async fn answer(s: Arc<Shared>, uri: Uri, headers: axum::http::HeaderMap) -> Response {
    let path = uri.path().to_string();
    s.requests.lock().unwrap().push(path.clone());
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    s.authorizations
        .lock()
        .unwrap()
        .push((path.clone(), authorization.clone()));
    if let Some(location) = s.redirects.lock().unwrap().get(&path).cloned() {
        return (StatusCode::FOUND, [(header::LOCATION, location)]).into_response();
    }
    let mode = *s.mode.lock().unwrap();
    match mode {
        Mode::Up => {}
        Mode::NotFound => return StatusCode::NOT_FOUND.into_response(),
        Mode::Hang => std::future::pending::<()>().await,
        Mode::Slow(d) => tokio::time::sleep(d).await,
    }
    if path.contains("junk") {
        return StatusCode::NOT_FOUND.into_response();
    }
    let required = s.required_bearer.lock().unwrap().clone();
    if let Some(token) = required
        && authorization.as_deref() != Some(format!("Bearer {token}").as_str())
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if let Some(prefix) = path.strip_suffix("/.well-known/openid-configuration") {
        let issuer = format!("{}{prefix}", s.base);
        let jwks_uri = s
            .jwks_uri
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| format!("{issuer}/jwks"));
        let mut doc = json!({"issuer": issuer, "jwks_uri": jwks_uri});
        if let Some(algs) = s.algorithms.lock().unwrap().clone() {
            doc["id_token_signing_alg_values_supported"] = json!(algs);
        }
        return axum::Json(doc).into_response();
    }
    if path.ends_with("/jwks") {
        return axum::Json(json!({"keys": s.keys.lock().unwrap().clone()})).into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

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

/// An exact email issuer.
pub fn email(url: &str) -> IssuerConfig {
    IssuerConfig::new(url, IssuerKind::Email(Default::default()))
}

/// A meta-issuer pattern (`*` matches one path segment run).
pub fn pattern(url: &str) -> IssuerConfig {
    IssuerConfig {
        wildcard: true,
        ..IssuerConfig::new(url, IssuerKind::Email(Default::default()))
    }
}

/// Polls `cond` until it holds, failing the test after `within`.
pub async fn eventually(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
