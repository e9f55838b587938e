//! Fulcio's REST API.
//!
//! The handlers only decode and encode: a `signingCert` request (either version) is decoded into an
//! [`IssueRequest`] (token from the body or `Authorization: Bearer`, the key or CSR) and handed to
//! [`crate::issuance::issue`], which decides, issues and records.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keyless_ca::CertificateAuthority;
use keyless_config::{IssuerConfig, RateLimits};
use keyless_oidc::{IssuerHealth, OidcVerifier};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::issuance::IssueRequest;
use crate::protect::{RateLimiter, RequestId};
use crate::wire;

/// Bodies larger than this are refused before parsing (Fulcio's 4 MiB).
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// The trusted issuers and their verifier: swapped as a whole on reload, so a request sees one
/// consistent set from start to end.
pub struct Issuers {
    /// Token verification.
    pub oidc: OidcVerifier,
    /// Issuers as advertised by `/api/v2/configuration`.
    pub list: Vec<IssuerConfig>,
    /// Rate limits for issuers without their own.
    pub rate_limits: RateLimits,
}

/// How readiness reaches the CT log.
pub enum CtProbe {
    /// `ct_log: disabled`.
    Disabled,
    /// In this process: ready while it runs.
    Embedded,
    /// A remote RFC 6962 log: `get-sth` must answer.
    Remote(keyless_ctlog::RemoteLog),
}

/// What the handlers share.
pub struct AppState {
    /// The issuing CA.
    pub ca: Arc<CertificateAuthority>,
    /// The current issuers (replaced atomically by a configuration reload).
    pub issuers: std::sync::RwLock<Arc<Issuers>>,
    /// The chain as PEM (newline-terminated), issuing CA first, root last.
    pub chain_pem: Vec<String>,
    /// Where certificates are logged: a log URL, or `disabled`.
    pub ct_log: String,
    /// How `/readyz` checks the CT log.
    pub ct_probe: CtProbe,
    /// Per-identity and per-issuer token buckets.
    pub limiter: RateLimiter,
    /// The last readiness answer, reused for a second so probes cannot hammer the HSM.
    pub readiness: Mutex<Option<(Instant, StatusCode, Value)>>,
    /// The issuance record (`None` when `audit.enabled` is false).
    pub audit: Option<keyless_audit::store::AuditLog>,
    /// `health.token`: lets `/readyz` callers see causes.
    pub health_token: Option<keyless_config::Secret>,
    /// Issuances in progress (they outlive their requests, so they are bounded on their own).
    pub issuing: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The issuer set in force now.
    pub fn current_issuers(&self) -> Arc<Issuers> {
        self.issuers.read().expect("poisoned").clone()
    }
}

/// The API router. Extra routes (the development issuer) are merged by the caller.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/api/v2/signingCert",
            post(signing_cert_v2).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/signingCert",
            post(signing_cert_v1).fallback(method_not_allowed),
        )
        .route("/api/v2/trustBundle", get(trust_bundle).fallback(method_not_allowed))
        .route("/api/v2/configuration", get(configuration).fallback(method_not_allowed))
        .route("/api/v1/rootCert", get(root_cert).fallback(method_not_allowed))
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/readyz", get(readyz).fallback(method_not_allowed))
        .route_layer(axum::middleware::from_fn(crate::protect::observe))
        .fallback(not_found)
        // The limit is enforced on the declared length up front and while reading a body of
        // unknown length, always before any parsing.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
        .with_state(state)
}

/// Collapses a run of leading slashes to one before routing: sigstore-js builds
/// `${baseURL}/api/v2/signingCert`, so a base URL that ends in `/` asks for `//api/...`.
pub async fn collapse_leading_slashes(mut req: axum::extract::Request) -> axum::extract::Request {
    let uri = req.uri();
    if uri.path().starts_with("//") {
        let path = format!("/{}", uri.path().trim_start_matches('/'));
        let path_and_query = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = path_and_query.parse().ok();
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// Answers 413 at once when `Content-Length` is over the limit, without reading the body.
async fn refuse_declared_oversize(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return ApiError::TooLarge(MAX_BODY_BYTES).into_response();
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Liveness: the process serves requests.
async fn healthz(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"status": "SERVING", "ctLog": state.ct_log}))
}

/// Readiness: the signer signs and verifies a probe, the CA chain covers a new certificate, the
/// CT log answers, and issuers are configured. Per-issuer discovery health is reported but never
/// fails readiness: one IdP being down must not take the CA out of rotation for everyone else.
///
/// Anyone may ask whether each component is ready; only a caller presenting `health.token` as a
/// bearer token learns why one is not (causes name hosts and TLS errors). The causes are logged.
async fn readyz(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let authorized = match (&state.health_token, wire::bearer(&headers)) {
        (Some(want), Some(got)) => {
            aws_lc_rs::constant_time::verify_slices_are_equal(want.expose().as_bytes(), got.as_bytes()).is_ok()
        }
        _ => false,
    };
    let cached = state.readiness.lock().expect("poisoned").clone();
    let (status, body) = match cached {
        Some((at, status, body)) if at.elapsed() < Duration::from_secs(1) => (status, body),
        _ => {
            let (status, body) = readiness(&state).await;
            *state.readiness.lock().expect("poisoned") = Some((Instant::now(), status, body.clone()));
            (status, body)
        }
    };
    let body = if authorized { body } else { without_causes(body) };
    (status, Json(body)).into_response()
}

/// `unavailable: cause` becomes `unavailable`, `using cached keys; …` becomes `stale`.
fn without_causes(mut body: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::String(s) => {
                if s.starts_with("unavailable") {
                    *s = "unavailable".into();
                } else if s.starts_with("using cached keys") {
                    *s = "stale".into();
                }
            }
            Value::Object(m) => m.values_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut body);
    body
}

async fn readiness(state: &AppState) -> (StatusCode, Value) {
    let ca = state.ca.clone();
    let signer = match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || ca.check_signer()),
    )
    .await
    {
        Ok(Ok(Ok(()))) => state.ca.check_validity(SystemTime::now()),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(e)) => Err(format!("signer check failed: {e}")),
        Err(_) => Err("signer did not answer within 5 s".to_string()),
    };
    let ct = match &state.ct_probe {
        CtProbe::Disabled => Ok("disabled"),
        CtProbe::Embedded => Ok("ok"),
        CtProbe::Remote(log) => match tokio::time::timeout(Duration::from_secs(3), log.probe()).await {
            Ok(Ok(_)) => Ok("ok"),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("{} did not answer get-sth within 3 s", state.ct_log)),
        },
    };
    let issuers = state.current_issuers();
    let config: Result<(), String> = if issuers.list.is_empty() {
        Err("no issuers are configured".into())
    } else {
        Ok(())
    };
    let per_issuer: serde_json::Map<String, Value> = issuers
        .oidc
        .health()
        .into_iter()
        .map(|(url, h)| {
            let text = match h {
                IssuerHealth::Ok => "ok".to_string(),
                IssuerHealth::NotFetched => "keys not fetched yet".to_string(),
                IssuerHealth::Stale(c) => format!("using cached keys; last fetch failed: {c}"),
                IssuerHealth::Failing(c) => format!("unavailable: {c}"),
            };
            (url, Value::String(text))
        })
        .collect();
    let record: Result<&str, String> = match &state.audit {
        None => Ok("disabled"),
        Some(a) if a.available() => Ok("ok"),
        Some(_) => Err("the issuance record cannot be written (see the log)".into()),
    };
    let ready = signer.is_ok() && ct.is_ok() && config.is_ok() && record.is_ok();
    if !ready {
        tracing::warn!(signer = ?signer.as_ref().err(), ct_log = ?ct.as_ref().err(), config = ?config.as_ref().err(), record = ?record.as_ref().err(), "not ready");
    }
    let text = |r: Result<&str, &String>| match r {
        Ok(s) => s.to_string(),
        Err(e) => format!("unavailable: {e}"),
    };
    let body = json!({
        "ready": ready,
        "signer": text(signer.as_ref().map(|()| "ok")),
        "ctLog": text(ct.as_ref().copied()),
        "config": text(config.as_ref().map(|()| "ok")),
        "record": text(record.as_ref().copied()),
        "issuers": per_issuer,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}



/// Decodes with `decode`, runs the issuance service, and records a refusal of a request that
/// could not be decoded (the service records every other outcome itself).
async fn signing<T>(
    state: &Arc<AppState>,
    request_id: Option<axum::Extension<RequestId>>,
    decode: impl FnOnce(String) -> Result<IssueRequest, ApiError>,
    encode: impl FnOnce(Vec<String>) -> T,
) -> Result<T, ApiError> {
    let id = request_id.map(|r| r.0.0).unwrap_or_default();
    let req = match decode(id.clone()) {
        Ok(req) => req,
        Err(e) => {
            crate::issuance::refuse_undecoded(state, &id, &e);
            return Err(e);
        }
    };
    crate::issuance::issue(state, req).await.map(encode)
}

async fn signing_cert_v2(
    State(state): State<Arc<AppState>>,
    request_id: Option<axum::Extension<RequestId>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    signing(
        &state,
        request_id,
        |request_id| wire::decode_v2(request_id, &headers, body),
        |chain| {
            let certificates: Vec<String> = chain.iter().map(|p| p.trim_end().to_string()).collect();
            Json(json!({ "signedCertificateEmbeddedSct": { "chain": { "certificates": certificates } } }))
        },
    )
    .await
}


async fn signing_cert_v1(
    State(state): State<Arc<AppState>>,
    request_id: Option<axum::Extension<RequestId>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    signing(
        &state,
        request_id,
        |request_id| wire::decode_v1(request_id, &headers, body),
        |chain| {
            let body = chain.iter().map(|p| p.trim_end()).collect::<Vec<_>>().join("\n");
            (
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
                body,
            )
                .into_response()
        },
    )
    .await
}


async fn trust_bundle(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "chains": [ { "certificates": state.chain_pem } ] }))
}

async fn root_cert(State(state): State<Arc<AppState>>) -> Response {
    let body = state
        .chain_pem
        .iter()
        .map(|p| format!("{p}\n"))
        .collect::<String>()
        .trim()
        .to_string();
    ([(header::CONTENT_TYPE, "application/pem-certificate-chain")], body).into_response()
}

async fn configuration(State(state): State<Arc<AppState>>) -> Json<Value> {
    let current = state.current_issuers();
    let issuers: Vec<Value> = current
        .list
        .iter()
        .map(|i| {
            let url_key = if i.wildcard { "wildcardIssuerUrl" } else { "issuerUrl" };
            json!({
                url_key: i.url,
                "audience": i.client_id,
                "challengeClaim": i.challenge_claim(),
                "spiffeTrustDomain": i.kind.spiffe_trust_domain().unwrap_or_default(),
                "issuerType": i.kind.as_str(),
                "subjectDomain": i.kind.subject_domain().unwrap_or_default(),
                "skipEmailVerification": i.kind.skip_email_verification(),
            })
        })
        .collect();
    Json(json!({ "issuers": issuers }))
}
